/* SPDX-License-Identifier: MIT */
/* lib/scope.c: scopes: fibers spawned and futures attached into a scope,
 * join, cancel, deadline, limit and close (include/weft/fiber.h; design:
 * docs/design/fiber.md, "Scopes"). */
#define _GNU_SOURCE
#include "fiber.h"

#include <stddef.h>
#include <string.h>

/* A child's state. A fiber past the limit is K_WAITING until it is picked
 * (K_STARTED) or dropped by a cancel (K_DROPPING: discarded, never run). */
enum { K_ATTACHED, K_WAITING, K_STARTED, K_DROPPING };

typedef struct kid {
  weft_future_t *f;  /* the scope's own handle, given back when it is freed */
  weft__fiber_t *fb; /* NULL for an attached future */
  int state;
} kid_t;

/* A join caller's promise, settled once nothing is pending. */
typedef struct joiner {
  weft_promise_t *p;
  struct joiner *next;
} joiner_t;

/* An attached future's node on its list. */
typedef struct att {
  weft_task_t task;
  weft_scope_t *s;
  weft_future_t *f;
} att_t;

struct weft_scope {
  pthread_mutex_t mu;
  /* The user's handle, one per unfinished child, one per inner scope, the
   * armed alarm's, and short holds (a cancel walking inner scopes). */
  _Atomic uint32_t refs;
  weft_scope_policy_t policy;
  int64_t deadline; /* effective (at most the parent's); 0: none */
  size_t limit;
  bool armed; /* the alarm was armed (it holds a reference until it ran or
                 was disarmed) */
  weft__alarm_t alarm;
  weft_scope_t *parent; /* the scope of the fiber it was made in */
  /* What the cancel that marked this scope drops next (see scope_cancel) */
  weft_scope_t *c_inner; /* its inner scopes, each with a reference */
  weft_scope_t *cascade; /* the next on the parent's c_inner list */
  bool c_marked;         /* marked by the parent's cancel (not earlier) */
  kid_t *c_kids;
  size_t c_n;
  /* under parent->mu: the parent's list of inner scopes */
  weft_scope_t *prev, *next;
  /* under mu */
  weft_scope_t *inner;
  kid_t *kids;
  size_t n, cap, reserved; /* reserved: slots promised to spawns starting */
  size_t pending;          /* children not finished */
  size_t running;          /* fibers started (or being dropped), not ended */
  size_t waiting;          /* fibers waiting their turn */
  size_t scan;             /* no waiting fiber below this index */
  int reason;              /* 0, or why the scope was cancelled */
  int failure;             /* fail fast: the first failure */
  bool closed;
  joiner_t *joiners;
  weft_promise_t *done_p; /* close waits on done_f; settled at the end */
  weft_future_t *done_f;
};

/* A fiber whose start failed in spawn: the caller gets the error, so its
 * exit (which the discard runs on this thread) is no child failure. */
static _Thread_local weft__fiber_t *tl_unborn;
/* The scope whose waiting fibers this thread is starting (see pump). */
static _Thread_local weft_scope_t *tl_pumping;

/* ---- references ---- */

static void scope_ref(weft_scope_t *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Take a reference unless the scope is already on its way out. */
static bool scope_tryref(weft_scope_t *s) {
  uint32_t r = atomic_load_explicit(&s->refs, memory_order_relaxed);
  while (r != 0)
    if (atomic_compare_exchange_weak_explicit(
            &s->refs, &r, r + 1, memory_order_relaxed, memory_order_relaxed))
      return true;
  return false;
}

static void scope_free(weft_scope_t *s) {
  weft_scope_t *p = s->parent;
  if (p != NULL) {
    pthread_mutex_lock(&p->mu);
    if (s->prev != NULL)
      s->prev->next = s->next;
    else
      p->inner = s->next;
    if (s->next != NULL)
      s->next->prev = s->prev;
    pthread_mutex_unlock(&p->mu);
  }
  for (size_t i = 0; i < s->n; i++)
    weft_future_release(s->kids[i].f);
  if (s->kids != NULL)
    weft__free(s->kids, s->cap * sizeof *s->kids);
  if (s->done_p != NULL)
    weft_promise_release(s->done_p);
  weft_future_release(s->done_f);
  pthread_mutex_destroy(&s->mu);
  weft__free(s, sizeof *s);
  if (p != NULL &&
      atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
    scope_free(p);
}

static void scope_unref(weft_scope_t *s) {
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    scope_free(s);
}

/* ---- cancel ---- */

/* Cancel one child (outside the lock: cancelling runs continuations, and a
 * fiber on the inline executor may run here). */
static void drop_kid(const kid_t *k, int reason) {
  if (k->fb == NULL) {
    weft_future_cancel(k->f);
    return;
  }
  weft__fiber_cancel(k->fb, reason);
  if (k->state == K_DROPPING) /* waiting: it never runs, arg_dtor does */
    weft__fiber_discard(k->fb, reason, true);
}

/* Under mu, once reason is set: the waiting fibers become K_DROPPING
 * (counted as running, as their exits will count them), and the inner
 * scopes still alive go on a list, each with a reference. */
static weft_scope_t *mark_cancelled(weft_scope_t *s) {
  for (size_t i = s->scan; s->waiting > 0 && i < s->n; i++)
    if (s->kids[i].state == K_WAITING) {
      s->kids[i].state = K_DROPPING;
      s->waiting--;
      s->running++;
    }
  weft_scope_t *list = NULL;
  for (weft_scope_t *in = s->inner; in != NULL; in = in->next)
    if (scope_tryref(in)) {
      in->cascade = list;
      list = in;
    }
  return list;
}

/* A cancel's first half, under each mutex in turn: s and every scope
 * nested in it take `reason` (so spawns are refused and a close there
 * finds it cancelled) and note what to drop. False when s was cancelled
 * already. */
static bool mark_tree(weft_scope_t *s, int reason) {
  pthread_mutex_lock(&s->mu);
  if (s->reason != 0) {
    pthread_mutex_unlock(&s->mu);
    return false;
  }
  s->reason = reason;
  if (s->policy == WEFT_SCOPE_FAIL_FAST && s->failure == 0 && s->pending > 0)
    s->failure = reason;
  s->c_inner = mark_cancelled(s);
  /* No spawn or attach grows the array once reason is set: these stay. */
  s->c_kids = s->kids;
  s->c_n = s->n;
  pthread_mutex_unlock(&s->mu);
  for (weft_scope_t *in = s->c_inner; in != NULL; in = in->cascade)
    in->c_marked = mark_tree(in, reason);
  return true;
}

/* The second half, outside the mutexes: s's own children, then the inner
 * scopes'. In that order, a fiber of s is cancelled before anything it
 * awaits in an inner scope can settle, so its await reports the cancel. */
static void drop_tree(weft_scope_t *s, int reason) {
  if (s->armed && weft__alarm_disarm(&s->alarm))
    scope_unref(s); /* the alarm's (the caller holds another) */
  for (size_t i = 0; i < s->c_n; i++)
    drop_kid(&s->c_kids[i], reason);
  weft_scope_t *in = s->c_inner;
  while (in != NULL) {
    weft_scope_t *next = in->cascade;
    if (in->c_marked)
      drop_tree(in, reason);
    scope_unref(in);
    in = next;
  }
}

/* Cancel s with `reason`: its children, its waiting fibers (discarded) and
 * its inner scopes. The caller holds a reference. 0, or WEFT_EALREADY. */
static int scope_cancel(weft_scope_t *s, int reason) {
  if (!mark_tree(s, reason))
    return WEFT_EALREADY;
  drop_tree(s, reason);
  return 0;
}

static void on_alarm(weft__alarm_t *a) {
  weft_scope_t *s = (weft_scope_t *)((char *)a - offsetof(weft_scope_t, alarm));
  scope_cancel(s, WEFT_ETIMEDOUT);
  scope_unref(s); /* the alarm's */
}

int weft_scope_cancel(weft_scope_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  return scope_cancel(s, WEFT_ECANCELED);
}

/* ---- children ending ---- */

/* Under mu: the next waiting fiber to start, marked started, or NULL. */
static weft__fiber_t *pick(weft_scope_t *s) {
  if (s->reason != 0 || s->waiting == 0 || s->running >= s->limit)
    return NULL;
  while (s->kids[s->scan].state != K_WAITING)
    s->scan++;
  kid_t *k = &s->kids[s->scan++];
  k->state = K_STARTED;
  s->waiting--;
  s->running++;
  return k->fb;
}

/* Start waiting fibers while the limit allows. A start that fails (the
 * executor shut down) ends that fiber with the submit error, and its exit
 * comes back here: one loop per scope per thread does the starting, so a
 * long queue of failing starts does not recurse. */
static void pump(weft_scope_t *s) {
  if (tl_pumping == s)
    return;
  weft_scope_t *outer = tl_pumping;
  tl_pumping = s;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    weft__fiber_t *fb = pick(s);
    pthread_mutex_unlock(&s->mu);
    if (fb == NULL)
      break;
    int rc = weft__fiber_start(fb);
    if (rc != 0)
      weft__fiber_discard(fb, rc, true);
  }
  tl_pumping = outer;
}

static void settle_joiners(joiner_t *j, int code) {
  while (j != NULL) {
    joiner_t *next = j->next;
    if (code != 0)
      weft_promise_reject(j->p, code);
    else
      weft_promise_fulfil_int(j->p, 0);
    weft_promise_release(j->p);
    weft__free(j, sizeof *j);
    j = next;
  }
}

/* A child finished with outcome err (0 for a spawn that never was). */
static void child_done(weft_scope_t *s, int err, bool fiber) {
  pthread_mutex_lock(&s->mu);
  s->pending--;
  if (fiber)
    s->running--;
  bool fail = err != 0 && s->policy == WEFT_SCOPE_FAIL_FAST && s->failure == 0;
  if (fail)
    s->failure = err;
  bool cancel = fail && s->reason == 0;
  bool more = s->waiting > 0 && s->reason == 0 && !cancel;
  joiner_t *joiners = NULL;
  weft_promise_t *done = NULL;
  int code = s->policy == WEFT_SCOPE_FAIL_FAST ? s->failure : 0;
  if (s->pending == 0) {
    joiners = s->joiners;
    s->joiners = NULL;
    if (s->closed) {
      done = s->done_p;
      s->done_p = NULL;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (cancel)
    scope_cancel(s, WEFT_ECANCELED);
  if (more)
    pump(s);
  settle_joiners(joiners, code);
  if (done != NULL) {
    weft_promise_fulfil_int(done, 0);
    weft_promise_release(done);
  }
  scope_unref(s); /* the child's */
}

void weft__scope_fiber_exit(weft_scope_t *s, weft__fiber_t *fb) {
  int err = fb == tl_unborn ? 0 : weft_future_error(weft__fiber_future(fb));
  child_done(s, err, true);
}

static void att_run(weft_task_t *t) {
  att_t *a = (att_t *)t;
  weft_scope_t *s = a->s;
  int err = weft_future_error(a->f);
  weft__free(a, sizeof *a);
  child_done(s, err, false);
}

/* ---- adding children ---- */

/* Under mu: may a child be added now, and is there room for one more
 * (beyond the slots promised)? *expired: the deadline passed unnoticed. */
static int admit(weft_scope_t *s, bool *expired) {
  *expired = false;
  if (s->closed)
    return WEFT_ESHUTDOWN;
  if (s->reason != 0)
    return WEFT_ECANCELED;
  if (s->deadline != 0 && weft_clock_now_ns() >= s->deadline) {
    *expired = true; /* the alarm is on its way: cancel now */
    return WEFT_ECANCELED;
  }
  if (s->n + s->reserved < s->cap)
    return 0;
  size_t cap = s->cap != 0 ? s->cap * 2 : 8;
  kid_t *k = weft__realloc(s->kids, s->cap * sizeof *k, cap * sizeof *k);
  if (k == NULL)
    return WEFT_ENOMEM;
  s->kids = k;
  s->cap = cap;
  return 0;
}

static void append(weft_scope_t *s, weft_future_t *f, weft__fiber_t *fb,
                   int state) {
  kid_t *k = &s->kids[s->n++];
  k->f = f;
  k->fb = fb;
  k->state = state;
}

/* The spawn of a fiber under the limit: start it, then list it (a
 * cancel that came in between cancels it here). */
static int start_now(weft_scope_t *s, weft__fiber_t *fb, weft_future_t *f) {
  int rc = weft__fiber_start(fb);
  if (rc != 0) {
    tl_unborn = fb;
    weft__fiber_discard(fb, rc, false);
    tl_unborn = NULL;
    weft_future_release(f);
    pthread_mutex_lock(&s->mu);
    s->reserved--;
    pthread_mutex_unlock(&s->mu);
    return rc;
  }
  pthread_mutex_lock(&s->mu);
  s->reserved--;
  append(s, f, fb, K_STARTED);
  int reason = s->reason;
  pthread_mutex_unlock(&s->mu);
  if (reason != 0)
    weft__fiber_cancel(fb, reason);
  return 0;
}

int weft_scope_spawn(weft_scope_t *s, weft_executor_t *ex,
                     const weft_fiber_options_t *opts, weft_fiber_fn fn,
                     void *arg, weft_dtor_fn arg_dtor, weft_future_t **out) {
  if (s == NULL)
    return WEFT_EINVAL;
  weft__fiber_t *fb = NULL;
  weft_future_t *f = NULL;
  bool expired;
  pthread_mutex_lock(&s->mu);
  int rc = admit(s, &expired);
  if (rc == 0) /* (only memory is taken: no callback runs under the lock) */
    rc = weft__fiber_create(ex, opts, fn, arg, arg_dtor, s, &fb, &f);
  if (rc != 0) {
    pthread_mutex_unlock(&s->mu);
    if (expired)
      scope_cancel(s, WEFT_ETIMEDOUT);
    return rc;
  }
  weft__fiber_set_site(fb, __builtin_return_address(0));
  s->pending++;
  scope_ref(s); /* the child's */
  if (out != NULL)
    weft_future_retain(f);
  if (s->limit != 0 && (s->running >= s->limit || s->waiting > 0)) {
    append(s, f, fb, K_WAITING);
    s->waiting++;
    pthread_mutex_unlock(&s->mu);
  } else {
    s->running++;
    s->reserved++;
    pthread_mutex_unlock(&s->mu);
    rc = start_now(s, fb, f);
  }
  if (out != NULL) {
    if (rc == 0)
      *out = f;
    else
      weft_future_release(f);
  }
  return rc;
}

int weft_scope_attach(weft_scope_t *s, weft_future_t *f) {
  if (s == NULL || f == NULL)
    return WEFT_EINVAL;
  att_t *a = weft__malloc(sizeof *a);
  if (a == NULL)
    return WEFT_ENOMEM;
  bool expired;
  pthread_mutex_lock(&s->mu);
  int rc = admit(s, &expired);
  if (rc == 0)
    rc = weft_future_retain(f);
  if (rc != 0) {
    pthread_mutex_unlock(&s->mu);
    weft__free(a, sizeof *a);
    if (expired)
      scope_cancel(s, WEFT_ETIMEDOUT);
    if (rc == WEFT_ECANCELED)
      weft_future_cancel(f); /* as the child it would have been */
    return rc;
  }
  append(s, f, NULL, K_ATTACHED);
  s->pending++;
  scope_ref(s); /* the child's */
  pthread_mutex_unlock(&s->mu);
  a->task.run = att_run;
  a->s = s;
  a->f = f;
  if (!weft__attach(f, &a->task))
    weft__defer(&a->task);
  return 0;
}

/* ---- create, join, close ---- */

static int read_options(const weft_scope_options_t *opts,
                        weft_scope_options_t *o) {
  memset(o, 0, sizeof *o);
  if (opts == NULL)
    return 0;
  int rc = weft__struct_check(opts, opts->size, sizeof *opts, sizeof *opts);
  if (rc != 0)
    return rc;
  *o = *opts;
  if ((o->policy != WEFT_SCOPE_FAIL_FAST && o->policy != WEFT_SCOPE_COLLECT) ||
      o->deadline_ns < 0)
    return WEFT_EINVAL;
  return 0;
}

/* The deadline a scope made in a fiber of p gets: at most p's. True when
 * it needs an alarm of its own (p's cancel brings p's deadline); a deadline
 * already past cancels it at once. */
static bool own_deadline(weft_scope_t *s, const weft_scope_t *p) {
  bool own = s->deadline != 0;
  if (p != NULL && p->deadline != 0 && (!own || p->deadline <= s->deadline)) {
    s->deadline = p->deadline;
    own = false;
  }
  if (own && s->deadline <= weft_clock_now_ns()) {
    s->reason = WEFT_ETIMEDOUT;
    own = false;
  }
  return own;
}

/* s becomes p's inner scope: cancelled with it (now, if p is cancelled). */
static void link_inner(weft_scope_t *s, weft_scope_t *p) {
  scope_ref(p);
  s->parent = p;
  pthread_mutex_lock(&p->mu);
  s->next = p->inner;
  if (p->inner != NULL)
    p->inner->prev = s;
  p->inner = s;
  int reason = p->reason;
  pthread_mutex_unlock(&p->mu);
  if (reason != 0)
    scope_cancel(s, reason);
}

static weft_scope_t *scope_new(const weft_scope_options_t *o) {
  weft_scope_t *s = weft__malloc(sizeof *s);
  if (s == NULL)
    return NULL;
  memset(s, 0, sizeof *s);
  if (weft_promise_create(&s->done_p, &s->done_f) != 0) {
    weft__free(s, sizeof *s);
    return NULL;
  }
  pthread_mutex_init(&s->mu, NULL);
  atomic_init(&s->refs, 1);
  s->policy = o->policy;
  s->deadline = o->deadline_ns;
  s->limit = o->limit;
  weft__alarm_init(&s->alarm);
  return s;
}

int weft_scope_create(const weft_scope_options_t *opts, weft_scope_t **out) {
  weft_scope_options_t o;
  if (out == NULL)
    return WEFT_EINVAL;
  int rc = read_options(opts, &o);
  if (rc != 0)
    return rc;
  weft_scope_t *s = scope_new(&o);
  if (s == NULL)
    return WEFT_ENOMEM;
  weft_scope_t *p = weft__fiber_scope(weft__fiber_self());
  if (own_deadline(s, p)) {
    atomic_init(&s->refs, 2); /* and the alarm's */
    s->armed = true;
    rc = weft__alarm_arm(&s->alarm, s->deadline, on_alarm);
    if (rc != 0) {
      s->armed = false;
      atomic_init(&s->refs, 1);
      scope_unref(s);
      return rc;
    }
  }
  if (p != NULL)
    link_inner(s, p);
  *out = s;
  return 0;
}

int weft_scope_join(weft_scope_t *s, weft_future_t **out) {
  if (s == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_promise_t *p;
  weft_future_t *f;
  int rc = weft_promise_create(&p, &f);
  if (rc != 0)
    return rc;
  joiner_t *j = weft__malloc(sizeof *j);
  if (j == NULL) {
    weft_promise_release(p);
    weft_future_release(f);
    return WEFT_ENOMEM;
  }
  j->p = p;
  pthread_mutex_lock(&s->mu);
  bool now = s->pending == 0;
  int code = s->policy == WEFT_SCOPE_FAIL_FAST ? s->failure : 0;
  j->next = now ? NULL : s->joiners;
  if (!now)
    s->joiners = j;
  pthread_mutex_unlock(&s->mu);
  if (now)
    settle_joiners(j, code);
  *out = f;
  return 0;
}

/* Is the calling fiber in s, or in a scope nested in s? */
static bool in_own_fiber(const weft_scope_t *s) {
  for (weft_scope_t *sc = weft__fiber_scope(weft__fiber_self()); sc != NULL;
       sc = sc->parent)
    if (sc == s)
      return true;
  return false;
}

int weft_scope_close(weft_scope_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  pthread_mutex_lock(&s->mu);
  s->closed = true;
  pthread_mutex_unlock(&s->mu);
  scope_cancel(s, WEFT_ECANCELED);
  int rc = 0;
  if (in_own_fiber(s)) {
    rc = WEFT_EDEADLK; /* it waits for the caller: it frees itself later */
  } else {
    pthread_mutex_lock(&s->mu);
    bool busy = s->pending > 0;
    pthread_mutex_unlock(&s->mu);
    weft__fiber_t *fb = weft__fiber_self();
    if (busy) /* (a cancelled fiber still waits: this is its cleanup) */
      rc = fb != NULL ? weft__fiber_await_shielded(fb, s->done_f)
                      : weft_future_await(s->done_f, WEFT_FOREVER);
  }
  scope_unref(s); /* the user's */
  return rc;
}

size_t weft_scope_child_count(const weft_scope_t *s) {
  if (s == NULL)
    return 0;
  weft_scope_t *m = (weft_scope_t *)s;
  pthread_mutex_lock(&m->mu);
  size_t n = m->n;
  pthread_mutex_unlock(&m->mu);
  return n;
}

weft_future_t *weft_scope_child(const weft_scope_t *s, size_t i) {
  if (s == NULL)
    return NULL;
  weft_scope_t *m = (weft_scope_t *)s;
  pthread_mutex_lock(&m->mu);
  weft_future_t *f = i < m->n ? m->kids[i].f : NULL;
  pthread_mutex_unlock(&m->mu);
  return f;
}
