/* SPDX-License-Identifier: MIT */
/* lib/handle.c: what a holder of a future or promise handle calls without
 * settling it: a new promise pair, the promise's cancel hook and query,
 * retaining and releasing a future, reading its outcome, and await. The
 * state they read and the settling are in future.c. */
#define _GNU_SOURCE
#include "fiber.h"

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* ---- promises ---- */

int weft_promise_create(weft_promise_t **promise, weft_future_t **future) {
  if (promise == NULL || future == NULL)
    return WEFT_EINVAL;
  struct weft_future *f = weft__malloc(sizeof(*f));
  if (f == NULL)
    return WEFT_ENOMEM;
  weft__state_init(f, WEFT__K_PROMISE, 2, 1);
  *promise = (weft_promise_t *)f;
  *future = f;
  return 0;
}

int weft_promise_on_cancel(weft_promise_t *promise, weft_cancel_fn fn,
                           void *arg) {
  struct weft_future *f = weft__live_promise(promise);
  if (f == NULL || fn == NULL)
    return WEFT_EINVAL;
  uint32_t w = weft__word(f, memory_order_relaxed);
  for (;;) {
    uint32_t st = w & WEFT__ST_MASK;
    if (st != WEFT_PENDING || (w & WEFT__BUSY)) {
      if (st == WEFT_PENDING) { /* another hook install in progress */
        cpu_relax();
        w = weft__word(f, memory_order_relaxed);
        continue;
      }
      return st == WEFT_CANCELLED ? WEFT_ECANCELED : WEFT_EALREADY;
    }
    if (w & WEFT__F_HOOK)
      return WEFT_EBUSY;
    WEFT__PERTURB();
    if (atomic_compare_exchange_weak_explicit(&f->word, &w, w | WEFT__BUSY,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      break;
  }
  f->aux.cancel = fn;
  f->val.ptr = arg;
  atomic_fetch_xor_explicit(&f->word, WEFT__BUSY | WEFT__F_HOOK,
                            memory_order_release);
  return 0;
}

bool weft_promise_is_cancelled(const weft_promise_t *promise) {
  if (promise == NULL)
    return false;
  return weft__core_state((const struct weft_future *)promise) ==
         WEFT_CANCELLED;
}

/* ---- future handles and accessors ---- */

int weft_future_retain(weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  uint64_t v = atomic_load_explicit(&f->rn, memory_order_relaxed);
  do {
    if (weft__needs_of(v) == 0)
      return WEFT_EINVAL;
  } while (!atomic_compare_exchange_weak_explicit(&f->rn, &v,
                                                  v + (WEFT__REF | WEFT__NEED),
                                                  memory_order_relaxed,
                                                  memory_order_relaxed));
  return 0;
}

WEFT__HOT int weft_future_release(weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  uint64_t v = atomic_load_explicit(&f->rn, memory_order_acquire);
  if (weft__refs_of(v) == 1) {
    /* Last reference of any kind: it must be this handle. */
    if (weft__needs_of(v) == 0)
      return WEFT_EINVAL;
    weft__destroy(f);
    return 0;
  }
  WEFT__PERTURB();
  v = atomic_fetch_sub_explicit(&f->rn, WEFT__REF | WEFT__NEED,
                                memory_order_acq_rel);
  if (weft__needs_of(v) == 0) { /* more releases than handles */
    atomic_fetch_add_explicit(&f->rn, WEFT__REF | WEFT__NEED,
                              memory_order_relaxed);
    return WEFT_EINVAL;
  }
  if (weft__refs_of(v) == 1)
    weft__destroy(f);
  return 0;
}

WEFT__HOT weft_state_t weft_future_state(const weft_future_t *f) {
  if (f == NULL)
    return WEFT_PENDING;
  return (weft_state_t)weft__core_state(f);
}

int weft_future_error(const weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  switch (weft__core_state(f)) {
  case WEFT_FULFILLED:
    return 0;
  case WEFT_REJECTED:
    return f->err;
  case WEFT_CANCELLED:
    return WEFT_ECANCELED;
  default:
    return WEFT_EPENDING;
  }
}

void *weft_future_value(const weft_future_t *f) {
  if (f == NULL)
    return NULL;
  uint32_t w = weft__word(f, memory_order_acquire);
  /* only a pointer value: an integer's bits are not a pointer to borrow */
  if (weft__visible_state(w) != WEFT_FULFILLED || !(w & WEFT__F_PTR))
    return NULL;
  return f->val.ptr;
}

WEFT__HOT intptr_t weft_future_int(const weft_future_t *f) {
  if (f == NULL || weft__core_state(f) != WEFT_FULFILLED)
    return 0;
  return f->val.i;
}

/* ---- await ---- */

int weft_future_await(weft_future_t *f, int64_t timeout_ms) {
  if (f == NULL || timeout_ms < -1)
    return WEFT_EINVAL;
  weft__fiber_t *fb = weft__fiber_self();
  if (fb != NULL) /* suspend the fiber, not the thread */
    return weft__fiber_await(fb, f, timeout_ms);
  /* Inline continuations queued on this thread may be what settles f. */
  while (weft__core_state(f) == WEFT_PENDING && weft__trampoline_help())
    ;
  if (weft__core_state(f) != WEFT_PENDING)
    return 0;
  if (timeout_ms == 0)
    return WEFT_ETIMEDOUT;
  int64_t deadline = weft__deadline_after_ms(timeout_ms);
  weft_executor_t *cur = weft_executor_current();
  if (cur != NULL && cur->ops != NULL && cur->ops->await != NULL) {
    int rc = cur->ops->await(cur, f, deadline);
    if (rc != WEFT_EAGAIN)
      return rc;
  }
  weft__waiter_t *w = weft__waiter_new(NULL, NULL);
  if (w == NULL)
    return WEFT_ENOMEM;
  if (!weft__core_attach(f, &w->task)) {
    weft__waiter_put(w);
    weft__waiter_put(w);
    return 0;
  }
  WEFT__PERTURB(); /* attached, not waiting yet: the settle may come first */
  int rc = 0;
  pthread_mutex_lock(w->mu);
  while (!atomic_load_explicit(&w->done, memory_order_acquire)) {
    if (weft__cond_wait(w->cv, w->mu, deadline) == WEFT_ETIMEDOUT &&
        !atomic_load_explicit(&w->done, memory_order_acquire)) {
      rc = WEFT_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(w->mu);
  weft__waiter_put(w);
  return rc;
}
