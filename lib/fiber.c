/* SPDX-License-Identifier: MIT */
/* lib/fiber.c: fibers: spawn, run on an executor, await by suspending,
 * cancel (include/weft/fiber.h; design: docs/design/fiber.md). */
#define _GNU_SOURCE
#include "fiber.h"

#include <stddef.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(WEFT__TSAN)
#define WEFT__TSAN 1
#endif
#if WEFT__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef WEFT__TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* The wake word: an await's sequence number times 4, plus its phase. Only
 * the one who moves it from WAIT to FIRED (the awaited future settling,
 * the alarm, a cancel) resumes the fiber, so a fiber is resumed once per
 * await whoever races. */
enum { W_RUN = 0, W_WAIT = 1, W_FIRED = 2 };
#define WAKE(seq, phase) ((uint64_t)(seq) << 2 | (phase))

/* What woke the fiber, read by the await after it resumes. */
enum { WOKE_SETTLED = 0, WOKE_CANCEL = 1 };

/* What the fiber asks of its resumer when it switches out. */
enum { PARK_AWAIT, PARK_YIELD, PARK_EXIT };

/* One await's attachment: on the awaited future's list and, with a
 * timeout, in the alarm heap. Refs: the list's, the alarm's while armed,
 * the fiber's until it has resumed; each node holds a fiber reference. */
typedef struct fnode {
  weft_task_t task;
  weft__alarm_t alarm;
  struct weft__fiber *fb;
  uint64_t seq;
  _Atomic uint32_t refs;
  bool embedded;
} fnode_t;

struct weft__fiber {
  weft__ext_t ext; /* the fiber's future; its references keep the fiber */
  weft_task_t run; /* start or resume on ex */
  weft_executor_t *ex;
  weft__ctx_t ctx;   /* the fiber's own context while it is switched out */
  weft__ctx_t *back; /* the resumer's context while the fiber runs */
  _Atomic uint64_t wake;
  _Atomic int reason; /* 0, or the code its awaits return once cancelled */
  int woke;           /* WOKE_* or a negative code, set by the waker */
  bool shielded;      /* the await being parked ignores a cancel */
  int park;           /* PARK_* */
  uint64_t seq;
  /* the await being parked */
  struct weft_future *await_f;
  int64_t await_deadline;
  fnode_t *node;
  fnode_t node0;
  _Atomic bool node0_busy;
  /* the function and where it came from */
  weft_fiber_fn fn;
  void *arg;
  weft_dtor_fn arg_dtor;
  const char *name;
  void *site;
  weft_scope_t *scope;
  struct weft_future *followed; /* a weft_follow()ed future it borrows */
  size_t stack_want;
  weft__stack_t stack;
  bool started, done;
#if WEFT__ASAN
  void *asan_fake;
  const void *asan_back_lo;
  size_t asan_back_size;
#endif
#ifdef WEFT__TSAN
  void *tsan_self, *tsan_back;
#endif
};

#define FIBER_OF_RUN(t)                                                        \
  ((weft__fiber_t *)((char *)(t)-offsetof(weft__fiber_t, run)))

static _Thread_local weft__fiber_t *tl_self
    __attribute__((tls_model("initial-exec")));

static void fiber_run(weft_task_t *t);

/* ---- life of the struct ---- */

static void fiber_fini(weft__ext_t *e) {
  weft__fiber_t *fb = (weft__fiber_t *)e;
  if (fb->followed != NULL)
    weft__unref_need(fb->followed);
  weft__free(fb, sizeof *fb);
}

static void fiber_unref(weft__fiber_t *fb) { weft__unref(&fb->ext.base); }

/* ---- waking ---- */

/* Queue the fiber's resume on its executor; an executor that refuses (it
 * shut down) leaves the thread that woke the fiber to run it, so the fiber
 * can still see its await fail, clean up and settle. */
static void resume_later(weft__fiber_t *fb) {
  fb->run.run = fiber_run;
  if (fb->ex->ops->submit(fb->ex, &fb->run) != 0)
    weft__defer(&fb->run);
}

/* Move await `seq` from WAIT to FIRED with `woke`; only the winner
 * resumes the fiber. */
static bool fire(weft__fiber_t *fb, uint64_t seq, int woke, bool resume) {
  uint64_t w = WAKE(seq, W_WAIT);
  if (!atomic_compare_exchange_strong_explicit(&fb->wake, &w,
                                               WAKE(seq, W_FIRED),
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    return false;
  fb->woke = woke;
  if (resume)
    resume_later(fb);
  return true;
}

static void node_put(fnode_t *n) {
  if (atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1)
    return;
  weft__fiber_t *fb = n->fb;
  if (n->embedded)
    atomic_store_explicit(&fb->node0_busy, false, memory_order_release);
  else
    weft__free(n, sizeof *n);
  fiber_unref(fb);
}

/* The awaited future settled (on the settling thread). */
static void node_settled(weft_task_t *t) {
  fnode_t *n = (fnode_t *)t;
  fire(n->fb, n->seq, WOKE_SETTLED, true);
  node_put(n);
}

static void node_alarm(weft__alarm_t *a) {
  fnode_t *n = (fnode_t *)((char *)a - offsetof(fnode_t, alarm));
  fire(n->fb, n->seq, WEFT_ETIMEDOUT, true);
  node_put(n);
}

static fnode_t *node_get(weft__fiber_t *fb) {
  fnode_t *n;
  /* Only the fiber takes node0 (a load and a store, no locked operation);
   * whoever drops its last reference gives it back (release). */
  if (!atomic_load_explicit(&fb->node0_busy, memory_order_acquire)) {
    atomic_store_explicit(&fb->node0_busy, true, memory_order_relaxed);
    n = &fb->node0;
    n->embedded = true;
  } else {
    n = weft__malloc(sizeof *n);
    if (n == NULL)
      return NULL;
    n->embedded = false;
  }
  n->task.run = node_settled;
  n->fb = fb;
  n->seq = fb->seq;
  weft__alarm_init(&n->alarm);
  weft__ref(&fb->ext.base);
  return n;
}

/* The cancel hook of the fiber's future (on the cancelling thread, which
 * holds a reference). */
/* Give fb's awaits `reason` from now on (the first reason stays), then
 * wake the await it is parked in, if any. seq_cst: park_await stores WAIT
 * and then reads reason; one of the two sees the other. */
static void cancel_and_wake(weft__fiber_t *fb, int reason) {
  int none = 0;
  atomic_compare_exchange_strong_explicit(&fb->reason, &none, reason,
                                          memory_order_seq_cst,
                                          memory_order_seq_cst);
  WEFT__PERTURB(); /* reason set, before the look at the wake word */
  uint64_t w = atomic_load_explicit(&fb->wake, memory_order_seq_cst);
  if ((w & 3) == W_WAIT)
    fire(fb, w >> 2, WOKE_CANCEL, true);
}

static void on_cancel(void *arg) { cancel_and_wake(arg, WEFT_ECANCELED); }

void weft__fiber_cancel(weft__fiber_t *fb, int reason) {
  int none = 0;
  atomic_compare_exchange_strong_explicit(&fb->reason, &none, reason,
                                          memory_order_seq_cst,
                                          memory_order_seq_cst);
  /* The future first: a fiber woken before it is cancelled could settle
   * it with a value. (Cancelled already: the hook ran before; wake an
   * await parked since.) */
  weft_future_cancel(&fb->ext.base);
  cancel_and_wake(fb, reason);
}

/* ---- switching (with the sanitizers told) ---- */

/* Into the fiber, from its resumer's stack; returns when it switches out. */
static void switch_in(weft__fiber_t *fb) {
  weft__ctx_t here;
  fb->back = &here;
  weft__fiber_t *outer = tl_self;
  tl_self = fb;
#ifdef WEFT__TSAN
  fb->tsan_back = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(fb->tsan_self, 0);
#endif
#if WEFT__ASAN
  void *fake = NULL;
  __sanitizer_start_switch_fiber(&fake, fb->stack.lo, fb->stack.size);
#endif
  weft__ctx_swap(&here, &fb->ctx);
#if WEFT__ASAN
  __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
  tl_self = outer;
}

/* On the fiber's stack, just after it gained control. */
static void arrived(weft__fiber_t *fb) {
#if WEFT__ASAN
  __sanitizer_finish_switch_fiber(fb->asan_fake, &fb->asan_back_lo,
                                  &fb->asan_back_size);
#else
  (void)fb;
#endif
}

/* Out of the fiber, back to its resumer, which acts on fb->park. */
static void switch_out(weft__fiber_t *fb, int park) {
  fb->park = park;
#ifdef WEFT__TSAN
  __tsan_switch_to_fiber(fb->tsan_back, 0);
#endif
#if WEFT__ASAN
  __sanitizer_start_switch_fiber(park == PARK_EXIT ? NULL : &fb->asan_fake,
                                 fb->asan_back_lo, fb->asan_back_size);
#endif
  weft__ctx_swap(&fb->ctx, fb->back);
  arrived(fb);
}

/* ---- parking: the resumer's side of a switch out ---- */

/* Attach the await (the fiber's context is saved now, so a waker may
 * resume it on another thread at once). True: resume it here at once.
 * Once the node is on f's list and the alarm armed, a waker may resume
 * the fiber and it may end: nothing here reads fb after that. */
static bool park_await(weft__fiber_t *fb) {
  uint64_t seq = fb->seq;
  struct weft_future *f = fb->await_f;
  int64_t deadline = fb->await_deadline;
  fnode_t *n = node_get(fb);
  if (n == NULL) {
    fb->woke = WEFT_ENOMEM;
    return true;
  }
  bool timed = deadline >= 0;
  /* the list's; with a timeout, the alarm's and the fiber's (which
   * disarms the alarm when it resumes) */
  atomic_init(&n->refs, timed ? 3u : 1u);
  fb->node = timed ? n : NULL; /* what the fiber puts back when it resumes */
  /* (seq_cst, and reason read after: a cancel hook writes reason, then
   * reads the wake word; one of the two sees the other) */
  atomic_store_explicit(&fb->wake, WAKE(seq, W_WAIT), memory_order_seq_cst);
  WEFT__PERTURB(); /* waiting, before the look at reason */
  int woke = WOKE_SETTLED;
  if (!fb->shielded &&
      atomic_load_explicit(&fb->reason, memory_order_seq_cst) != 0) {
    woke = WOKE_CANCEL;
  } else if (weft__core_attach(f, &n->task)) {
    WEFT__PERTURB(); /* attached: a waker may resume the fiber before the
                      * alarm is armed */
    if (!timed || weft__alarm_arm(&n->alarm, deadline, node_alarm) == 0)
      return false;
    bool mine = fire(fb, seq, WEFT_ENOMEM, false); /* no alarm to time it */
    node_put(n);                                   /* the alarm's */
    return mine;
  }
  bool mine = fire(fb, seq, woke, false);
  if (timed)
    node_put(n); /* the alarm's: never armed */
  node_put(n);   /* the list's: never attached */
  return mine;
}

/* ---- the run task: start, resume, finish ---- */

static void fiber_entry(void *arg);

/* Give back a stack no frame of the fiber ever used (if it has one). */
static void drop_stack(weft__fiber_t *fb) {
  if (fb->stack.lo != NULL) {
    weft__stack_put(&fb->stack, NULL);
    fb->stack.lo = NULL;
  }
}

/* False when the fiber ends without running (cancelled first, no stack). */
static bool start(weft__fiber_t *fb) {
  fb->started = true;
  int err = atomic_load_explicit(&fb->reason, memory_order_acquire);
  if (err == 0 && fb->stack.lo == NULL)
    err = weft__stack_get(fb->stack_want, &fb->stack);
  if (err != 0) {
    drop_stack(fb);
    if (fb->arg_dtor != NULL)
      fb->arg_dtor(fb->arg);
    weft_result_t r = weft_err(err);
    weft__settle_result(&fb->ext.base, &r);
    return false;
  }
  weft__ctx_make(&fb->ctx, fb->stack.lo, fb->stack.size, fiber_entry, fb);
#ifdef WEFT__TSAN
  fb->tsan_self = __tsan_create_fiber(0);
#endif
  return true;
}

/* Where the ended fiber's stack pointer was at its last switch: only the
 * frames above it never returned. */
static const void *exit_sp(const weft__fiber_t *fb) {
#if WEFT__SWITCH_ASM
  return fb->ctx.sp;
#else
  return fb->stack.lo;
#endif
}

static void finish(weft__fiber_t *fb, bool ran) {
  if (ran) {
    weft__stack_put(&fb->stack, exit_sp(fb));
#ifdef WEFT__TSAN
    __tsan_destroy_fiber(fb->tsan_self);
#endif
  }
  if (fb->scope != NULL)
    weft__scope_fiber_exit(fb->scope, fb);
  /* (may free a shut-down executor: the last touch) */
  weft__executor_hold(fb->ex, -1);
  fiber_unref(fb); /* the running reference */
}

static void fiber_run(weft_task_t *t) {
  weft__fiber_t *fb = FIBER_OF_RUN(t);
  /* (every thread a fiber runs on: a pool's fiber resumes on any worker) */
  weft__stack_thread_ready();
  if (!fb->started) {
    if (!start(fb)) {
      finish(fb, false);
      return;
    }
  }
  for (;;) {
    switch_in(fb);
    switch (fb->park) {
    case PARK_EXIT:
      finish(fb, true);
      return;
    case PARK_YIELD:
      /* On the inline executor with nothing else queued, the fiber's turn
       * comes at once: skip the queue. */
      if (fb->ex == &weft__inline_executor && weft__trampoline_idle())
        continue;
      resume_later(fb);
      return;
    default:
      if (!park_await(fb))
        return;
    }
  }
}

/* ---- the fiber's own side ---- */

static void settle_followed(weft__fiber_t *fb, weft_future_t *g);

static void fiber_entry(void *arg) {
  weft__fiber_t *fb = arg;
  arrived(fb);
  weft_result_t r = fb->fn(fb->arg);
  if (r.kind == WEFT__R_FOLLOW)
    settle_followed(fb, r.u.future);
  else
    weft__settle_result(&fb->ext.base, &r);
  fb->done = true;
  switch_out(fb, PARK_EXIT);
  __builtin_unreachable();
}

/* Settle with the outcome of g (which fn handed over), waiting for it on
 * the fiber; a fulfilled value is borrowed from g, kept until the fiber's
 * future is freed. */
static void settle_followed(weft__fiber_t *fb, weft_future_t *g) {
  if (g == NULL || g == &fb->ext.base) {
    weft_result_t r = weft_err(g == NULL ? WEFT_EINVAL : WEFT_ECYCLE);
    weft__settle_result(&fb->ext.base, &r);
    if (g != NULL)
      weft_future_release(g);
    return;
  }
  int rc = weft_future_await(g, WEFT_FOREVER);
  if (rc != 0) {
    weft_result_t r = weft_err(rc);
    weft__settle_result(&fb->ext.base, &r);
    weft_future_release(g);
    return;
  }
  if (weft__mirror(&fb->ext.base, g, true) == 0)
    fb->followed = g; /* its handle: given back (as a need) in fini */
  else
    weft_future_release(g);
}

static void cancel_awaited(struct weft_future *f) {
  /* Only the fiber's handle needs it: nobody else waits for its outcome. */
  if (weft__needs_of(atomic_load_explicit(&f->rn, memory_order_acquire)) == 1)
    weft_future_cancel(f);
}

int weft__fiber_await(weft__fiber_t *fb, struct weft_future *f,
                      int64_t timeout_ms) {
  int reason = atomic_load_explicit(&fb->reason, memory_order_acquire);
  if (reason != 0) {
    cancel_awaited(f);
    return reason;
  }
  if (weft__core_state(f) != WEFT_PENDING)
    return 0;
  if (timeout_ms == 0)
    return WEFT_ETIMEDOUT;
  if (f == &fb->ext.base)
    return WEFT_EDEADLK; /* its own future settles only when it returns */
  fb->seq++;
  fb->await_f = f;
  fb->await_deadline = weft__deadline_after_ms(timeout_ms);
  switch_out(fb, PARK_AWAIT);
  fnode_t *n = fb->node;
  fb->node = NULL;
  int woke = fb->woke;
  if (n != NULL) { /* (a timed await's) */
    if (weft__alarm_disarm(&n->alarm))
      node_put(n); /* the alarm's */
    node_put(n);   /* the fiber's */
  }
  if (woke == WOKE_SETTLED)
    return 0;
  if (woke == WOKE_CANCEL) {
    cancel_awaited(f);
    return atomic_load_explicit(&fb->reason, memory_order_acquire);
  }
  return woke;
}

int weft__fiber_await_shielded(weft__fiber_t *fb, struct weft_future *f) {
  if (f == &fb->ext.base)
    return WEFT_EDEADLK;
  int rc = 0;
  /* A cancel still wakes the fiber (once per cancel): it parks again. */
  while (rc == 0 && weft__core_state(f) == WEFT_PENDING) {
    fb->seq++;
    fb->await_f = f;
    fb->await_deadline = -1;
    fb->shielded = true;
    switch_out(fb, PARK_AWAIT);
    fb->shielded = false;
    if (fb->node != NULL)
      node_put(fb->node); /* the fiber's */
    fb->node = NULL;
    if (fb->woke < 0)
      rc = fb->woke;
  }
  return rc;
}

int weft_fiber_yield(void) {
  weft__fiber_t *fb = tl_self;
  if (fb == NULL)
    return WEFT_EPERM;
  int reason = atomic_load_explicit(&fb->reason, memory_order_acquire);
  if (reason != 0)
    return reason;
#if WEFT__SWITCH_ASM && !WEFT__ASAN && !defined(WEFT__TSAN)
  /* (no sanitizer to tell after the switch: leave by a tail call) */
  fb->park = PARK_YIELD;
  return weft__switch_asm(&fb->ctx.sp, fb->back->sp);
#else
  switch_out(fb, PARK_YIELD);
  return 0;
#endif
}

bool weft_fiber_is_running(void) { return tl_self != NULL; }

bool weft_fiber_is_cancelled(void) {
  weft__fiber_t *fb = tl_self;
  return fb != NULL &&
         atomic_load_explicit(&fb->reason, memory_order_acquire) != 0;
}

weft__fiber_t *weft__fiber_self(void) { return tl_self; }

weft_scope_t *weft__fiber_scope(const weft__fiber_t *fb) {
  return fb != NULL ? fb->scope : NULL;
}

weft_future_t *weft__fiber_future(weft__fiber_t *fb) { return &fb->ext.base; }

bool weft__fiber_overflow_info(const void *addr, const char **name, void **fn,
                               void **site) {
  weft__fiber_t *fb = tl_self;
  if (fb == NULL || !weft__stack_in_guard(&fb->stack, addr))
    return false;
  *name = fb->name;
  *fn = (void *)(uintptr_t)fb->fn;
  *site = fb->site;
  return true;
}

/* ---- spawning ---- */

int weft__fiber_create(weft_executor_t *ex, const weft_fiber_options_t *opts,
                       weft_fiber_fn fn, void *arg, weft_dtor_fn arg_dtor,
                       weft_scope_t *scope, weft__fiber_t **out_fb,
                       weft_future_t **out) {
  if (ex == NULL || ex->ops == NULL || ex->ops->submit == NULL || fn == NULL ||
      out == NULL)
    return WEFT_EINVAL;
  size_t stack = WEFT_FIBER_STACK_DEFAULT;
  const char *name = NULL;
  if (opts != NULL) {
    int rc = weft__struct_check(opts, opts->size, sizeof *opts, sizeof *opts);
    if (rc != 0)
      return rc;
    if (opts->stack_size != 0)
      stack = opts->stack_size < WEFT_FIBER_STACK_MIN ? WEFT_FIBER_STACK_MIN
                                                      : opts->stack_size;
    name = opts->name;
  }
  weft__fiber_t *fb = weft__malloc(sizeof *fb);
  if (fb == NULL)
    return WEFT_ENOMEM;
  memset(fb, 0, sizeof *fb);
  /* references: the caller's handle and the running fiber's */
  weft__ext_init(&fb->ext, fiber_fini, 2, 1);
  weft__ext_on_cancel(&fb->ext, on_cancel, fb);
  fb->run.run = fiber_run;
  fb->ex = ex;
  fb->fn = fn;
  fb->arg = arg;
  fb->arg_dtor = arg_dtor;
  fb->name = name;
  fb->scope = scope;
  fb->stack_want = stack;
  weft__executor_hold(ex, 1);
  *out_fb = fb;
  *out = &fb->ext.base;
  return 0;
}

int weft__fiber_start(weft__fiber_t *fb) {
  fb->run.run = fiber_run;
  return fb->ex->ops->submit(fb->ex, &fb->run);
}

void weft__fiber_discard(weft__fiber_t *fb, int err, bool run_dtor) {
  if (run_dtor && fb->arg_dtor != NULL)
    fb->arg_dtor(fb->arg);
  weft_result_t r = weft_err(err);
  weft__settle_result(&fb->ext.base, &r);
  finish(fb, false);
}

static int spawn(weft_executor_t *ex, const weft_fiber_options_t *opts,
                 weft_fiber_fn fn, void *arg, weft_dtor_fn arg_dtor,
                 weft_future_t **out, void *site) {
  weft__fiber_t *fb;
  weft_future_t *f;
  if (out == NULL)
    return WEFT_EINVAL;
  int rc = weft__fiber_create(ex, opts, fn, arg, arg_dtor, NULL, &fb, &f);
  if (rc != 0)
    return rc;
  fb->site = site;
  /* The stack now, so that no memory is an error the caller sees. */
  rc = weft__stack_get(fb->stack_want, &fb->stack);
  if (rc == 0)
    rc = weft__fiber_start(fb);
  if (rc != 0) {
    drop_stack(fb);
    fb->arg_dtor = NULL; /* the caller keeps arg */
    weft__fiber_discard(fb, rc, false);
    weft_future_release(f);
    return rc;
  }
  *out = f;
  return 0;
}

int weft_fiber_spawn(weft_executor_t *ex, weft_fiber_fn fn, void *arg,
                     weft_dtor_fn arg_dtor, weft_future_t **out) {
  return spawn(ex, NULL, fn, arg, arg_dtor, out, __builtin_return_address(0));
}

int weft_fiber_spawn_opts(weft_executor_t *ex, const weft_fiber_options_t *opts,
                          weft_fiber_fn fn, void *arg, weft_dtor_fn arg_dtor,
                          weft_future_t **out) {
  return spawn(ex, opts, fn, arg, arg_dtor, out, __builtin_return_address(0));
}

void weft__fiber_set_site(weft__fiber_t *fb, void *site) { fb->site = site; }
