/* SPDX-License-Identifier: MIT */
/* lib/retry.c: weft_retry_start, attempts on an executor with a backoff
 * timer and a deadline on the alarm thread (weft/retry.h). */
#include "fiber.h"

#include <pthread.h>
#include <string.h>

/*
 * One allocation holds the retry's future (an embedded state) and its
 * machinery. Every party that may still call back holds a reference on
 * it: the caller's handle, the queued task that starts an attempt, the
 * watch on the attempt in flight, each armed alarm. The mutex orders the
 * three ways a retry ends (an attempt's outcome, the deadline, a cancel):
 * the first to set `done` ends it, the others find it done and only give
 * their reference back. Nothing is called with the mutex held but the
 * alarm service (lock order: retry, then alarm).
 */
typedef struct retry {
  weft__ext_t ext; /* the retry's future */
  pthread_mutex_t mu;
  weft_executor_t *ex;
  weft_retry_fn fn;
  void *arg;
  weft_dtor_fn arg_dtor;
  unsigned max_attempts;
  weft_retry_jitter_t jitter;
  int64_t base_ns, max_ns, deadline; /* deadline 0: none */
  bool (*should_retry)(void *arg, unsigned attempt, int err);
  weft_task_t task;   /* starts the next attempt on ex */
  weft_watch_t watch; /* on the attempt in flight */
  weft__alarm_t backoff, timeout;
  uint64_t rng;
  /* under mu */
  weft_future_t *attempt; /* our handle on the attempt in flight */
  bool done, in_fn, backoff_armed, timeout_armed;
  /* written once before the future fulfils, read once it has */
  weft_future_t *won; /* a handle on the attempt that fulfilled us */
  _Atomic unsigned count;
} retry_t;

#define MS ((int64_t)1000000)
enum { DEFAULT_ATTEMPTS = 3 };
#define DEFAULT_BASE_MS ((int64_t)100)
#define DEFAULT_MAX_MS ((int64_t)30000)
/* The fields this weft reads (the first version's struct, which a caller
 * may pass without its reserved slots). */
#define POLICY_KNOWN offsetof(weft_retry_policy_t, reserved)

static retry_t *of_task(weft_task_t *t) {
  return (retry_t *)((char *)t - offsetof(retry_t, task));
}

static void retry_fini(weft__ext_t *e) {
  retry_t *r = (retry_t *)e;
  if (r->won != NULL)
    weft_future_release(r->won);
  weft__executor_hold(r->ex, -1); /* (may free a shut-down executor) */
  pthread_mutex_destroy(&r->mu);
  weft__free(r, sizeof *r);
}

static retry_t *as_retry(const weft_future_t *f) {
  if (f == NULL ||
      weft__kind(weft__word(f, memory_order_relaxed)) != WEFT__K_EXT ||
      ((const weft__ext_t *)f)->fini != retry_fini)
    return NULL;
  return (retry_t *)f;
}

static void unref(retry_t *r) { weft__unref(&r->ext.base); }

/* Arm an alarm (a fault seam of its own: the alarm service fails only
 * when its heap cannot grow or its thread cannot start). */
static int arm(weft__alarm_t *a, int64_t deadline,
               void (*fn)(weft__alarm_t *)) {
  int e = WEFT__FAULT("alarm");
  if (e != 0)
    return e == ENOMEM ? WEFT_ENOMEM : WEFT_EAGAIN;
  return weft__alarm_arm(a, deadline, fn);
}

/* ---- the end ---- */

/* End the retry once: settle its future (mirroring `ok`, an attempt that
 * fulfilled, whose handle we take over; or with `val`, a value fn
 * returned; or rejected with `err`; a cancel has settled it already), stop
 * the timers, cancel the attempt in flight, and free arg unless fn is
 * running (then the attempt task does, once fn returns). Returns false
 * when the retry had ended already: the caller keeps ok and val. */
static bool end(retry_t *r, int err, weft_future_t *ok,
                const weft_result_t *val) {
  pthread_mutex_lock(&r->mu);
  if (r->done) {
    pthread_mutex_unlock(&r->mu);
    return false;
  }
  r->done = true;
  weft_future_t *att = r->attempt;
  r->attempt = NULL;
  bool b = r->backoff_armed, t = r->timeout_armed, dtor = !r->in_fn;
  r->backoff_armed = r->timeout_armed = false;
  int drop = 0;
  /* An alarm disarmed here never runs: its reference is ours to give
   * back. One that is running finds the retry done and gives its own. */
  if (b && weft__alarm_disarm(&r->backoff))
    drop++;
  if (t && weft__alarm_disarm(&r->timeout))
    drop++;
  pthread_mutex_unlock(&r->mu);
  if (ok != NULL) {
    r->won = ok;
    (void)weft__mirror(&r->ext.base, ok, true);
  } else if (val != NULL) {
    weft__settle_result(&r->ext.base, val); /* (destroys a value it loses) */
  } else {
    (void)weft__settle_int(&r->ext.base, WEFT_REJECTED, 0, err);
  }
  if (att != NULL) {
    weft_future_cancel(att); /* (its watch sees it and gives back its own) */
    weft_future_release(att);
  }
  if (dtor && r->arg_dtor != NULL)
    r->arg_dtor(r->arg);
  while (drop-- > 0)
    unref(r);
  return true;
}

static void on_cancel(void *arg) { (void)end(arg, WEFT_ECANCELED, NULL, NULL); }

static void on_timeout(weft__alarm_t *a) {
  retry_t *r = (retry_t *)((char *)a - offsetof(retry_t, timeout));
  pthread_mutex_lock(&r->mu);
  r->timeout_armed = false;
  pthread_mutex_unlock(&r->mu);
  (void)end(r, WEFT_ETIMEDOUT, NULL, NULL);
  unref(r); /* the alarm's */
}

/* ---- delays ---- */

static uint64_t next_random(retry_t *r) { /* splitmix64 */
  uint64_t z = (r->rng += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* The delay after attempt n failed: base * 2^(n-1), at most max, jittered. */
static int64_t delay_after(retry_t *r, unsigned n) {
  int64_t d = r->base_ns;
  for (unsigned i = 1; i < n && d < r->max_ns; i++)
    d = d > r->max_ns / 2 ? r->max_ns : d * 2;
  if (d > r->max_ns)
    d = r->max_ns;
  switch (r->jitter) {
  case WEFT_RETRY_JITTER_FULL:
    return (int64_t)(next_random(r) % ((uint64_t)d + 1));
  case WEFT_RETRY_JITTER_EQUAL:
    return d - d / 2 + (int64_t)(next_random(r) % ((uint64_t)(d / 2) + 1));
  default:
    return d;
  }
}

/* ---- attempts ---- */

static void on_backoff(weft__alarm_t *a);

/* Attempt n failed with err (we hold a reference, which goes on to the
 * backoff alarm or is given back). Arm the backoff, or end. */
static void failed(retry_t *r, unsigned n, int err) {
  bool again = n < r->max_attempts &&
               (r->should_retry != NULL ? r->should_retry(r->arg, n, err)
                                        : err != WEFT_ECANCELED);
  if (!again) {
    (void)end(r, err, NULL, NULL);
    unref(r);
    return;
  }
  int64_t now = weft_clock_now_ns(), d = delay_after(r, n);
  int64_t at = d > INT64_MAX - now ? INT64_MAX : now + d;
  if (r->deadline != 0 && at >= r->deadline) { /* no attempt in time */
    (void)end(r, WEFT_ETIMEDOUT, NULL, NULL);
    unref(r);
    return;
  }
  pthread_mutex_lock(&r->mu);
  int rc = 0;
  if (!r->done) {
    rc = arm(&r->backoff, at, on_backoff);
    r->backoff_armed = rc == 0;
  }
  bool armed = r->backoff_armed;
  pthread_mutex_unlock(&r->mu);
  if (rc != 0)
    (void)end(r, rc, NULL, NULL);
  if (!armed)
    unref(r);
}

/* The attempt in flight settled (on ex; the watch holds a reference and
 * its own handle on f). */
static void on_attempt(void *arg, weft_future_t *f) {
  retry_t *r = arg;
  pthread_mutex_lock(&r->mu);
  bool mine = !r->done && r->attempt == f;
  if (mine)
    r->attempt = NULL; /* its handle is ours now */
  pthread_mutex_unlock(&r->mu);
  if (!mine) {
    unref(r);
    return;
  }
  if (weft_future_state(f) == WEFT_FULFILLED) {
    if (!end(r, 0, f, NULL))
      weft_future_release(f);
    unref(r);
    return;
  }
  int err = weft_future_error(f);
  weft_future_release(f);
  failed(r, atomic_load_explicit(&r->count, memory_order_relaxed), err);
}

/* The executor refused to run on_attempt (it was shut down meanwhile). */
static void on_attempt_refused(void *arg) {
  retry_t *r = arg;
  (void)end(r, WEFT_ESHUTDOWN, NULL, NULL);
  unref(r); /* the watch's */
}

/* Follow attempt n's future f (one handle from fn). */
static void follow(retry_t *r, weft_future_t *f) {
  (void)weft_future_retain(f); /* one for the watch, one to cancel it */
  pthread_mutex_lock(&r->mu);
  bool done = r->done;
  if (!done)
    r->attempt = f;
  pthread_mutex_unlock(&r->mu);
  if (done) {
    weft_future_release(f);
    weft_future_cancel(f);
    weft_future_release(f);
    unref(r);
    return;
  }
  /* Cannot fail: the watch of the last attempt has begun (it started
   * this one, or armed the backoff that did), and the arguments are set. */
  (void)weft_watch_start(&r->watch, f, r->ex, on_attempt, r,
                         on_attempt_refused);
}

/* Drop what fn returned after the retry ended meanwhile. */
static void discard(const weft_result_t *res) {
  if (res->kind == WEFT__R_FOLLOW && res->u.future != NULL) {
    weft_future_cancel(res->u.future);
    weft_future_release(res->u.future);
  } else if (res->kind == WEFT__R_PTR && res->dtor != NULL) {
    res->dtor(res->u.ptr);
  }
}

/* fn returned res for attempt n, the retry still running. */
static void attempt_returned(retry_t *r, unsigned n, const weft_result_t *res) {
  switch (res->kind) {
  case WEFT__R_FOLLOW:
    if (res->u.future != NULL) {
      follow(r, res->u.future);
      return;
    }
    failed(r, n, WEFT_EINVAL);
    return;
  case WEFT__R_ERR:
    failed(r, n, res->err < 0 ? res->err : WEFT_EINVAL);
    return;
  default: /* a value at once */
    if (!end(r, 0, NULL, res))
      discard(res);
    unref(r);
  }
}

/* The task: start the next attempt on ex (it holds a reference). */
static void attempt_run(weft_task_t *task) {
  retry_t *r = of_task(task);
  pthread_mutex_lock(&r->mu);
  /* (a cancel settles the future before its hook takes the mutex) */
  bool go = !r->done && weft__core_state(&r->ext.base) == WEFT_PENDING;
  unsigned n = 0;
  if (go) { /* counted here, so the count is final once the future settled */
    r->in_fn = true;
    n = atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed) + 1;
  }
  pthread_mutex_unlock(&r->mu);
  if (!go) {
    unref(r);
    return;
  }
  weft_result_t res = r->fn(r->arg, n);
  pthread_mutex_lock(&r->mu);
  r->in_fn = false;
  bool done = r->done;
  pthread_mutex_unlock(&r->mu);
  if (done) { /* it ended while fn ran, and left arg to us */
    discard(&res);
    if (r->arg_dtor != NULL)
      r->arg_dtor(r->arg);
    unref(r);
    return;
  }
  attempt_returned(r, n, &res);
}

static void on_backoff(weft__alarm_t *a) {
  retry_t *r = (retry_t *)((char *)a - offsetof(retry_t, backoff));
  pthread_mutex_lock(&r->mu);
  r->backoff_armed = false;
  bool done = r->done;
  pthread_mutex_unlock(&r->mu);
  if (!done) {
    /* The task's own reference: it may run and end the retry before the
     * submit returns, and the submit still reads the executor, which the
     * retry keeps (hold) until its last reference goes. */
    weft__ref(&r->ext.base);
    int rc = weft_executor_submit(r->ex, &r->task);
    if (rc != 0) {
      (void)end(r, rc, NULL, NULL);
      unref(r); /* the task's */
    }
  }
  unref(r); /* the alarm's */
}

/* ---- starting ---- */

/* Read and check the policy into r (NULL: every default). */
static int policy_read(retry_t *r, const weft_retry_policy_t *policy) {
  weft_retry_policy_t p = {0};
  if (policy != NULL) {
    int rc = weft__struct_check(policy, policy->size, POLICY_KNOWN,
                                POLICY_KNOWN);
    if (rc != 0)
      return rc;
    memcpy(&p, policy, POLICY_KNOWN);
  }
  if (p.base_delay_ms < 0 || p.max_delay_ms < 0 || p.deadline_ns < 0 ||
      (p.max_delay_ms != 0 && p.max_delay_ms < p.base_delay_ms) ||
      (unsigned)p.jitter > WEFT_RETRY_JITTER_NONE)
    return WEFT_EINVAL;
  int64_t base = p.base_delay_ms != 0 ? p.base_delay_ms : DEFAULT_BASE_MS;
  int64_t max = p.max_delay_ms;
  if (max == 0)
    max = base > DEFAULT_MAX_MS ? base : DEFAULT_MAX_MS;
  /* in ns, capped where the product would overflow (292 years) */
  r->base_ns = base > INT64_MAX / MS ? INT64_MAX : base * MS;
  r->max_ns = max > INT64_MAX / MS ? INT64_MAX : max * MS;
  r->max_attempts = p.max_attempts != 0 ? p.max_attempts : DEFAULT_ATTEMPTS;
  r->jitter = p.jitter;
  r->deadline = p.deadline_ns;
  r->should_retry = p.should_retry;
  return 0;
}

static retry_t *retry_new(weft_executor_t *ex, weft_retry_fn fn, void *arg,
                          weft_dtor_fn arg_dtor) {
  retry_t *r = weft__malloc(sizeof *r);
  if (r == NULL)
    return NULL;
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  r->ex = ex;
  r->fn = fn;
  r->arg = arg;
  r->arg_dtor = arg_dtor;
  r->task.run = attempt_run;
  weft__alarm_init(&r->backoff);
  weft__alarm_init(&r->timeout);
  r->rng = (uint64_t)weft_clock_now_ns() ^ (uint64_t)(uintptr_t)r;
  atomic_init(&r->count, 0);
  /* references: the caller's handle and the first attempt's task */
  weft__ext_init(&r->ext, retry_fini, 2, 1);
  weft__ext_on_cancel(&r->ext, on_cancel, r);
  return r;
}

int weft_retry_start(weft_executor_t *ex, const weft_retry_policy_t *policy,
                     weft_retry_fn fn, void *arg, weft_dtor_fn arg_dtor,
                     weft_future_t **out) {
  if (ex == NULL || fn == NULL || out == NULL)
    return WEFT_EINVAL;
  retry_t probe;
  int rc = policy_read(&probe, policy);
  if (rc != 0)
    return rc;
  retry_t *r = retry_new(ex, fn, arg, arg_dtor);
  if (r == NULL)
    return WEFT_ENOMEM;
  (void)policy_read(r, policy);
  if (r->deadline != 0 && r->deadline <= weft_clock_now_ns()) {
    weft__executor_hold(ex, 1); /* (given back with the rest) */
    (void)end(r, WEFT_ETIMEDOUT, NULL, NULL);
    unref(r); /* the task's: it never runs */
    *out = &r->ext.base;
    return 0;
  }
  if (r->deadline != 0) /* armed below, if the task goes in */
    weft__ref(&r->ext.base);
  weft__executor_hold(ex, 1);
  rc = weft_executor_submit(ex, &r->task);
  if (rc != 0) { /* nothing ran, nothing is shared */
    weft__executor_hold(ex, -1);
    pthread_mutex_destroy(&r->mu);
    weft__free(r, sizeof *r);
    return rc;
  }
  *out = &r->ext.base;
  if (r->deadline != 0) {
    pthread_mutex_lock(&r->mu);
    rc = r->done ? 0 : arm(&r->timeout, r->deadline, on_timeout);
    bool armed = r->timeout_armed = !r->done && rc == 0;
    pthread_mutex_unlock(&r->mu);
    if (rc != 0)
      (void)end(r, rc, NULL, NULL);
    if (!armed)
      unref(r);
  }
  return 0;
}

weft_future_t *weft_retry_attempt(const weft_future_t *f) {
  retry_t *r = as_retry(f);
  if (r == NULL || weft_future_state(f) != WEFT_FULFILLED)
    return NULL;
  return r->won;
}

unsigned weft_retry_attempt_count(const weft_future_t *f) {
  retry_t *r = as_retry(f);
  return r == NULL ? 0 : atomic_load_explicit(&r->count, memory_order_relaxed);
}
