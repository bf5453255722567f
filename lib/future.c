/* SPDX-License-Identifier: MIT */
/* lib/future.c: the promise/future shared state: claiming and settling,
 * reference counts and needs, cancel propagation, promises, and the
 * future handle's accessors. Continuations (then, watch, await) are in
 * then.c. */
#define _GNU_SOURCE
#include "internal.h"

/*
 * Ownership inside the core
 * -------------------------
 * refs counts memory: every handle, every node still on a list, and every
 * downstream state that keeps its source. needs counts who still wants the
 * outcome: every handle and every pending then/combinator registered on it.
 * When a downstream gives up its need and needs reaches 0 while the future
 * is pending, the future is cancelled (cancel travels upstream).
 *
 * A then-state races two parties for its source: the firing path (source
 * settled) and the cancel path (the then was cancelled). Whoever sets
 * F_CLAIMED first owns the source's need and reference; the loser touches
 * neither. The same holds with F_FCLAIMED for the future being followed.
 */

typedef weft__then_t then_state_t;

uint32_t weft__state(const struct weft_future *f) {
  return weft__core_state(f);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Claim the right to settle f as `target`, setting `flags` too. Returns 0,
 * or WEFT_ECANCELED / WEFT_EALREADY when another settle came first. */
static int claim_flags(struct weft_future *f, uint32_t target,
                       uint32_t flags) {
  uint32_t w = weft__word(f, memory_order_relaxed);
  for (;;) {
    uint32_t st = w & WEFT__ST_MASK;
    if (w & WEFT__BUSY) {
      if (st != WEFT_PENDING) /* another settle is being written */
        return st == WEFT_CANCELLED ? WEFT_ECANCELED : WEFT_EALREADY;
      cpu_relax(); /* a cancel hook is being installed: a few stores */
      w = weft__word(f, memory_order_relaxed);
      continue;
    }
    if (st != WEFT_PENDING)
      return st == WEFT_CANCELLED ? WEFT_ECANCELED : WEFT_EALREADY;
    uint32_t nw = (w & ~WEFT__ST_MASK) | WEFT__BUSY | target | flags;
    WEFT__PERTURB();
    if (atomic_compare_exchange_weak_explicit(&f->word, &w, nw,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return 0;
  }
}

int weft__claim(struct weft_future *f, uint32_t target) {
  return claim_flags(f, target, 0);
}

/* Make the claimed outcome visible, then run every continuation. `excl`:
 * the caller knows nothing else can write f's word until it is published,
 * so a plain store does (one locked instruction less per link). The same
 * holds for every embedded state (K_EXT): nothing sets flags on one once it
 * is shared (its hook went in before), and a claimed word turns every other
 * claim away unwritten (one less for every job and loop operation). */
static void publish_as(struct weft_future *f, bool excl) {
  uint32_t w = weft__word(f, memory_order_relaxed);
  if (excl || (w >> WEFT__KIND_SHIFT) == WEFT__K_EXT)
    atomic_store_explicit(&f->word, w & ~(uint32_t)WEFT__BUSY,
                          memory_order_release);
  else
    atomic_fetch_and_explicit(&f->word, ~(uint32_t)WEFT__BUSY,
                              memory_order_release);
  WEFT__PERTURB(); /* settled, list still open: an attach may land */
  weft_task_t *list =
      atomic_exchange_explicit(&f->head, WEFT__CLOSED, memory_order_acq_rel);
  if (list == NULL)
    return;
  /* The list is newest first; queue all of it in attach order, so that a
   * continuation awaiting a sibling finds the sibling queued. */
  weft_task_t *last = list;
  weft__defer_list(weft__task_list_reverse(list), last);
}

void weft__publish(struct weft_future *f) { publish_as(f, false); }

static int settle_int_as(struct weft_future *f, uint32_t state, intptr_t v,
                         int err, bool excl) {
  int rc = claim_flags(f, state, 0);
  if (rc != 0)
    return rc;
  if (state == WEFT_FULFILLED)
    f->val.i = v;
  else
    f->err = err;
  publish_as(f, excl);
  return 0;
}

int weft__settle_int(struct weft_future *f, uint32_t state, intptr_t v,
                     int err) {
  return settle_int_as(f, state, v, err, false);
}

static int settle_ptr(struct weft_future *f, void *v, weft_dtor_fn dtor,
                      bool excl) {
  int rc = claim_flags(f, WEFT_FULFILLED,
                       WEFT__F_PTR | (dtor != NULL ? WEFT__F_DTOR : 0));
  if (rc != 0)
    return rc;
  f->val.ptr = v;
  f->aux.dtor = dtor;
  publish_as(f, excl);
  return 0;
}

/* Settle dst exactly as the settled src: the value is shared, not copied;
 * when src owns it (has a destructor) dst gets `borrow_flag` and the caller
 * keeps src alive for as long as dst lives. */
int weft__mirror(struct weft_future *dst, struct weft_future *src,
                 bool borrow) {
  uint32_t w = weft__word(src, memory_order_acquire);
  uint32_t st = weft__visible_state(w);
  uint32_t flags = (borrow && st == WEFT_FULFILLED && (w & WEFT__F_DTOR))
                       ? WEFT__F_BORROWED
                       : 0;
  if (st == WEFT_FULFILLED)
    flags |= w & WEFT__F_PTR; /* a pointer stays one, an integer stays one */
  int rc = claim_flags(dst, st, flags);
  if (rc != 0)
    return rc;
  if (st == WEFT_FULFILLED)
    dst->val = src->val;
  else
    dst->err = st == WEFT_CANCELLED ? WEFT_ECANCELED : src->err;
  weft__publish(dst);
  return 0;
}

bool weft__attach(struct weft_future *f, weft_task_t *node) {
  /* Seen settled, its list may still be open while the settler publishes:
   * the caller runs node itself, so a continuation of a future the caller
   * saw settled runs on the caller's thread, not later on the settler's. */
  if (weft__visible_state(weft__word(f, memory_order_acquire)) != WEFT_PENDING)
    return false;
  weft_task_t *h = atomic_load_explicit(&f->head, memory_order_acquire);
  do {
    if (h == WEFT__CLOSED)
      return false;
    node->next = h;
    WEFT__PERTURB();
  } while (!atomic_compare_exchange_weak_explicit(
      &f->head, &h, node, memory_order_acq_rel, memory_order_acquire));
  return true;
}

/* ---- lifetime ---- */

WEFT__HOT void weft__destroy(struct weft_future *f) {
  uint32_t w = weft__word(f, memory_order_acquire);
  bool owns_value = (w & WEFT__ST_MASK) == WEFT_FULFILLED &&
                    (w & WEFT__F_DTOR) && !(w & WEFT__F_BORROWED);
  if (__builtin_expect(weft__kind(w) == WEFT__K_EXT, 1)) {
    /* (first: a loop operation or a pool job, the usual future) */
    weft__ext_t *e = (weft__ext_t *)f;
    if (owns_value)
      f->aux.dtor(f->val.ptr);
    e->fini(e); /* takes the memory */
    return;
  }
  switch (weft__kind(w)) {
  case WEFT__K_COMBINE:
    weft__combine_destroy(f);
    return;
  case WEFT__K_THEN: {
    then_state_t *t = (then_state_t *)f;
    if (owns_value)
      f->aux.dtor(f->val.ptr);
    if (w & WEFT__F_BORROWED)
      weft__unref(t->src);
    weft__free(t, sizeof(*t));
    return;
  }
  default:
    if (owns_value)
      f->aux.dtor(f->val.ptr);
    weft__free(f, sizeof(*f));
  }
}

void weft__ref(struct weft_future *f) { weft__core_ref(f); }

void weft__ref_need(struct weft_future *f) { weft__core_ref_need(f); }

void weft__unref(struct weft_future *f) { weft__core_unref(f); }

void weft__unref_need(struct weft_future *f) { weft__core_unref_need(f); }

struct weft_future *weft__take_upstream(struct weft_future *u) {
  WEFT__PERTURB();
  if (weft__needs_of(atomic_fetch_sub_explicit(&u->rn, WEFT__NEED,
                                               memory_order_acq_rel)) == 1 &&
      weft__state(u) == WEFT_PENDING)
    return u;
  weft__unref(u);
  return NULL;
}

void weft__drop_need(struct weft_future *f) {
  WEFT__PERTURB();
  if (weft__needs_of(atomic_fetch_sub_explicit(&f->rn, WEFT__NEED,
                                               memory_order_acq_rel)) == 1 &&
      weft__state(f) == WEFT_PENDING)
    weft__cancel_chain(f, false);
}

/* ---- cancellation ---- */

static struct weft_future *then_cancelled(then_state_t *t) {
  WEFT__PERTURB(); /* the source may fire first */
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_CLAIMED,
                                          memory_order_acq_rel);
  if (!(old & WEFT__F_CLAIMED)) {
    /* The source has not fired: fn never runs; we own src's need+ref. */
    if (t->arg_dtor != NULL)
      t->arg_dtor(t->base.val.ptr);
    return weft__take_upstream(t->src);
  }
  if (old & WEFT__F_FOLLOWING) {
    old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FCLAIMED,
                                   memory_order_acq_rel);
    if (!(old & WEFT__F_FCLAIMED))
      return weft__take_upstream(t->src);
  }
  return NULL;
}

/* After f was cancelled by us: run its hook, and return the upstream future
 * that must be cancelled next (with a reference for the caller), if any. */
static struct weft_future *after_cancel(struct weft_future *f) {
  uint32_t w = weft__word(f, memory_order_acquire);
  switch (weft__kind(w)) {
  case WEFT__K_PROMISE:
  case WEFT__K_EXT:
    if (w & WEFT__F_HOOK)
      f->aux.cancel(f->val.ptr);
    return NULL;
  case WEFT__K_THEN:
    return then_cancelled((then_state_t *)f);
  case WEFT__K_COMBINE:
    return weft__combine_cancelled(f);
  default:
    return NULL;
  }
}

/* Cancel f and, iteratively, each upstream future nothing else needs, so a
 * million-deep chain does not recurse. `owned`: the caller hands over a
 * reference on f. */
void weft__cancel_chain(struct weft_future *f, bool owned) {
  while (f != NULL) {
    struct weft_future *next = NULL;
    if (weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED) == 0)
      next = after_cancel(f);
    if (owned)
      weft__unref(f);
    f = next;
    owned = true;
  }
}

int weft_future_cancel(weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  if (weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED) != 0)
    return WEFT_EALREADY;
  weft__cancel_chain(after_cancel(f), true);
  return 0;
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

static struct weft_future *live_promise(const weft_promise_t *p) {
  struct weft_future *f = (struct weft_future *)p;
  if (f == NULL || (weft__word(f, memory_order_relaxed) & WEFT__F_PROMISE_GONE))
    return NULL;
  return f;
}

int weft_promise_fulfil(weft_promise_t *promise, void *value,
                        weft_dtor_fn dtor) {
  struct weft_future *f = live_promise(promise);
  if (f == NULL)
    return WEFT_EINVAL;
  return settle_ptr(f, value, dtor, false);
}

int weft_promise_fulfil_int(weft_promise_t *promise, intptr_t value) {
  struct weft_future *f = live_promise(promise);
  if (f == NULL)
    return WEFT_EINVAL;
  return weft__settle_int(f, WEFT_FULFILLED, value, 0);
}

int weft_promise_reject(weft_promise_t *promise, int err) {
  struct weft_future *f = live_promise(promise);
  if (f == NULL || err >= 0)
    return WEFT_EINVAL;
  return weft__settle_int(f, WEFT_REJECTED, 0, err);
}

int weft_promise_on_cancel(weft_promise_t *promise, weft_cancel_fn fn,
                           void *arg) {
  struct weft_future *f = live_promise(promise);
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

int weft_promise_is_cancelled(const weft_promise_t *promise) {
  if (promise == NULL)
    return WEFT_EINVAL;
  return weft__state((const struct weft_future *)promise) == WEFT_CANCELLED;
}

int weft_promise_release(weft_promise_t *promise) {
  struct weft_future *f = (struct weft_future *)promise;
  if (f == NULL)
    return WEFT_EINVAL;
  WEFT__PERTURB();
  uint32_t old = atomic_fetch_or_explicit(&f->word, WEFT__F_PROMISE_GONE,
                                          memory_order_acq_rel);
  if (old & WEFT__F_PROMISE_GONE)
    return WEFT_EINVAL;
  if (weft__visible_state(old) == WEFT_PENDING)
    (void)weft__settle_int(f, WEFT_REJECTED, 0, WEFT_EBROKEN);
  weft__unref(f);
  return 0;
}

/* ---- states embedded in larger objects ---- */

void weft__settle_result_as(struct weft_future *f, const weft_result_t *r,
                            bool excl) {
  switch (r->kind) {
  case WEFT__R_PTR:
    if (settle_ptr(f, r->u.ptr, r->dtor, excl) != 0 && r->dtor != NULL)
      r->dtor(r->u.ptr);
    return;
  case WEFT__R_INT:
    (void)settle_int_as(f, WEFT_FULFILLED, r->u.i, 0, excl);
    return;
  case WEFT__R_ERR:
    (void)settle_int_as(f, WEFT_REJECTED, 0,
                        r->err < 0 ? r->err : WEFT_EINVAL, excl);
    return;
  case WEFT__R_FOLLOW:
    if (r->u.future != NULL)
      weft_future_release(r->u.future);
    (void)settle_int_as(f, WEFT_REJECTED, 0, WEFT_ENOTSUP, excl);
    return;
  default:
    (void)settle_int_as(f, WEFT_REJECTED, 0, WEFT_EINVAL, excl);
  }
}

void weft__settle_result(struct weft_future *f, const weft_result_t *r) {
  weft__settle_result_as(f, r, false);
}

/* ---- future handles and accessors ---- */

int weft_future_retain(weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  uint64_t v = atomic_load_explicit(&f->rn, memory_order_relaxed);
  do {
    if (weft__needs_of(v) == 0)
      return WEFT_EINVAL;
  } while (!atomic_compare_exchange_weak_explicit(
      &f->rn, &v, v + (WEFT__REF | WEFT__NEED), memory_order_relaxed,
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
  return (weft_state_t)weft__state(f);
}

int weft_future_error(const weft_future_t *f) {
  if (f == NULL)
    return WEFT_EINVAL;
  switch (weft__state(f)) {
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
  if (f == NULL || weft__state(f) != WEFT_FULFILLED)
    return 0;
  return f->val.i;
}
