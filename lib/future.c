/* SPDX-License-Identifier: MIT */
/* lib/future.c: the promise/future shared state: claiming and settling,
 * reference counts and needs, cancel propagation, settling a promise, and
 * the continuations (then, following, watch). What a holder of a handle
 * calls without settling it (a new promise, its cancel hook, retain and
 * release, reading the outcome, await) is in handle.c. */
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

typedef struct then_state {
  struct weft_future base;
  weft_task_t node; /* on the source's list, then the executor's queue */
  weft_executor_t *ex;
  struct weft_future *src; /* the source, later the followed future */
  weft_dtor_fn arg_dtor;
} then_state_t;

#define THEN_OF(task)                                                          \
  ((then_state_t *)((char *)(task)-offsetof(then_state_t, node)))

uint32_t weft__state(const struct weft_future *f) {
  return weft__core_state(f);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Another settle came first: WEFT_ECANCELED or WEFT_EALREADY. The acquire
 * load pairs with the winner's claim (or publish), so what the winner
 * wrote before it claimed (a read's bytes in the caller's buffer) is
 * visible to the loser once it returns: after a cancel that lost, the
 * caller may reuse that buffer. */
static int claim_lost(struct weft_future *f, uint32_t st) {
  (void)weft__word(f, memory_order_acquire);
  return st == WEFT_CANCELLED ? WEFT_ECANCELED : WEFT_EALREADY;
}

/* Claim the right to settle f as `target`, setting `flags` too. Returns 0,
 * or WEFT_ECANCELED / WEFT_EALREADY when another settle came first. */
static int claim_flags(struct weft_future *f, uint32_t target, uint32_t flags) {
  uint32_t w = weft__word(f, memory_order_relaxed);
  for (;;) {
    uint32_t st = w & WEFT__ST_MASK;
    if (w & WEFT__BUSY) {
      if (st != WEFT_PENDING) /* another settle is being written */
        return claim_lost(f, st);
      cpu_relax(); /* a cancel hook is being installed: a few stores */
      w = weft__word(f, memory_order_relaxed);
      continue;
    }
    if (st != WEFT_PENDING)
      return claim_lost(f, st);
    uint32_t nw = (w & ~WEFT__ST_MASK) | WEFT__BUSY | target | flags;
    WEFT__PERTURB();
    /* (release: for a loser's claim_lost) */
    if (atomic_compare_exchange_weak_explicit(
            &f->word, &w, nw, memory_order_acq_rel, memory_order_relaxed))
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
  weft_task_t *list = atomic_exchange_explicit(&f->head, WEFT__CLOSED,
                                               memory_order_acq_rel);
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
  return weft__core_attach(f, node);
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

void weft__ref(struct weft_future *f) {
  atomic_fetch_add_explicit(&f->rn, WEFT__REF, memory_order_relaxed);
}

void weft__ref_need(struct weft_future *f) {
  atomic_fetch_add_explicit(&f->rn, WEFT__REF | WEFT__NEED,
                            memory_order_relaxed);
}

void weft__unref(struct weft_future *f) {
  /* Sole owner: nobody else can take a reference, so skip the RMW. */
  if (weft__refs_of(atomic_load_explicit(&f->rn, memory_order_acquire)) == 1 ||
      weft__refs_of(atomic_fetch_sub_explicit(&f->rn, WEFT__REF,
                                              memory_order_acq_rel)) == 1)
    weft__destroy(f);
}

void weft__unref_need(struct weft_future *f) {
  if (atomic_load_explicit(&f->rn, memory_order_acquire) ==
          (WEFT__REF | WEFT__NEED) ||
      weft__refs_of(atomic_fetch_sub_explicit(&f->rn, WEFT__REF | WEFT__NEED,
                                              memory_order_acq_rel)) == 1)
    weft__destroy(f);
}

/* Give up one need on u (which the caller keeps alive with `ref_owned`, a
 * reference it owns). Returns u, reference included, when u must now be
 * cancelled; otherwise drops that reference and returns NULL. */
static struct weft_future *take_upstream(struct weft_future *u) {
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
    return take_upstream(t->src);
  }
  if (old & WEFT__F_FOLLOWING) {
    WEFT__PERTURB(); /* the followed future may fire first */
    old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FCLAIMED,
                                   memory_order_acq_rel);
    if (!(old & WEFT__F_FCLAIMED))
      return take_upstream(t->src);
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

int weft_promise_fulfil(weft_promise_t *promise, void *value,
                        weft_dtor_fn dtor) {
  struct weft_future *f = weft__live_promise(promise);
  if (f == NULL)
    return WEFT_EINVAL;
  return settle_ptr(f, value, dtor, false);
}

int weft_promise_fulfil_int(weft_promise_t *promise, intptr_t value) {
  struct weft_future *f = weft__live_promise(promise);
  if (f == NULL)
    return WEFT_EINVAL;
  return weft__settle_int(f, WEFT_FULFILLED, value, 0);
}

int weft_promise_reject(weft_promise_t *promise, int err) {
  struct weft_future *f = weft__live_promise(promise);
  if (f == NULL || err >= 0)
    return WEFT_EINVAL;
  return weft__settle_int(f, WEFT_REJECTED, 0, err);
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

/* `excl` as for publish_as. */
static void settle_result_as(struct weft_future *f, const weft_result_t *r,
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
    (void)settle_int_as(f, WEFT_REJECTED, 0, r->err < 0 ? r->err : WEFT_EINVAL,
                        excl);
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
  settle_result_as(f, r, false);
}

/* ---- then ---- */

static void then_run(weft_task_t *node);
static void follow_fire(weft_task_t *node);

static void then_finish(then_state_t *t) {
  weft__unref_need(t->src); /* settled: its need no longer matters */
  weft__unref(&t->base);    /* the reference the list held */
}

/* The source settled (runs on the settling thread, in its trampoline). */
static void then_fire(weft_task_t *node) {
  then_state_t *t = THEN_OF(node);
  WEFT__PERTURB(); /* a cancel may claim first */
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_CLAIMED,
                                          memory_order_acq_rel);
  if (old & WEFT__F_CLAIMED) { /* cancelled first: src is not ours */
    weft__unref(&t->base);
    return;
  }
  /* src has settled; its need and reference are ours until then_finish. */
  if (t->ex == &weft__inline_executor) {
    then_run(node);
    return;
  }
  node->run = then_run;
  int rc = t->ex->ops->submit(t->ex, node);
  if (rc != 0) {
    if (t->arg_dtor != NULL)
      t->arg_dtor(t->base.val.ptr);
    (void)weft__settle_int(&t->base, WEFT_REJECTED, 0, rc);
    then_finish(t);
  }
}

/* True when t's derived future d following target would close a cycle
 * that nothing could ever settle: target is d, or a then-state already
 * following d. Only these: reading them needs no reference but the handle
 * the continuation gave us on target (a further link of a chain could be
 * freed under a walk). The caller set d's F_FOLLOWING first, and both it and
 * this load are seq_cst: of two thens closing a cycle at the same moment,
 * at least one sees the other. */
static bool follow_closes_cycle(then_state_t *t, struct weft_future *target) {
  if (target == &t->base)
    return true;
  uint32_t w = atomic_load_explicit(&target->word, memory_order_seq_cst);
  return weft__kind(w) == WEFT__K_THEN && (w & WEFT__F_FOLLOWING) &&
         weft__visible_state(w) == WEFT_PENDING &&
         ((then_state_t *)target)->src == &t->base;
}

static void then_follow(then_state_t *t, struct weft_future *target) {
  struct weft_future *old_src = t->src;
  t->src = target;
  /* Once F_FOLLOWING is set, a cancel of d may take the handle on target
   * and free it: our own reference keeps target readable until we return. */
  weft__ref(target);
  WEFT__PERTURB();
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FOLLOWING,
                                          memory_order_seq_cst);
  WEFT__PERTURB(); /* following: a cancel may take the handle on target */
  weft__unref_need(old_src);
  bool cycle = weft__visible_state(old) == WEFT_PENDING &&
               follow_closes_cycle(t, target);
  if (cycle || weft__visible_state(old) != WEFT_PENDING) {
    /* A cycle (Promises/A+ 2.3.1), or cancelled while fn ran: we do not
     * follow, and give back the handle on target unless a cancel took it. */
    old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FCLAIMED,
                                   memory_order_acq_rel);
    if (!(old & WEFT__F_FCLAIMED)) {
      if (cycle) /* settled first: target may be d itself */
        (void)weft__settle_int(&t->base, WEFT_REJECTED, 0, WEFT_ECYCLE);
      weft__cancel_chain(take_upstream(target), true);
    }
    weft__unref(&t->base);
    weft__unref(target);
    return;
  }
  t->node.run = follow_fire;
  if (!weft__attach(target, &t->node))
    follow_fire(&t->node);
  weft__unref(target);
}

/* The continuation, on its executor. */
static void then_run(weft_task_t *node) {
  then_state_t *t = THEN_OF(node);
  struct weft_future *d = &t->base;
  if (weft__state(d) != WEFT_PENDING) { /* cancelled while queued */
    if (t->arg_dtor != NULL)
      t->arg_dtor(d->val.ptr);
    then_finish(t);
    return;
  }
  weft_result_t r = d->aux.then(d->val.ptr, t->src);
  if (r.kind == WEFT__R_FOLLOW && r.u.future != NULL) {
    then_follow(t, r.u.future);
    return;
  }
  if (r.kind == WEFT__R_FOLLOW) /* weft_follow(NULL) */
    r = weft_err(WEFT_EINVAL);
  /* Exclusive: the fire's F_CLAIMED is set and only a cancel could write
   * the word now, which needs the claim this settle takes first. */
  settle_result_as(d, &r, true);
  then_finish(t);
}

/* The followed future settled. */
static void follow_fire(weft_task_t *node) {
  then_state_t *t = THEN_OF(node);
  struct weft_future *target = t->src;
  WEFT__PERTURB();
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FCLAIMED,
                                          memory_order_acq_rel);
  if (old & WEFT__F_FCLAIMED) { /* cancelled first: target is not ours */
    weft__unref(&t->base);
    return;
  }
  bool borrowed = weft__mirror(&t->base, target, true) == 0 &&
                  (weft__word(&t->base, memory_order_relaxed) &
                   WEFT__F_BORROWED);
  if (borrowed) /* keep the reference while the value is shared */
    atomic_fetch_sub_explicit(&target->rn, WEFT__NEED, memory_order_relaxed);
  else
    weft__unref_need(target);
  weft__unref(&t->base);
}

int weft_future_then(weft_future_t *src, weft_executor_t *ex, weft_then_fn fn,
                     void *arg, weft_dtor_fn arg_dtor, weft_future_t **out) {
  if (src == NULL || ex == NULL || ex->ops == NULL || ex->ops->submit == NULL ||
      fn == NULL || out == NULL)
    return WEFT_EINVAL;
  then_state_t *t = weft__malloc(sizeof(*t));
  if (t == NULL)
    return WEFT_ENOMEM;
  /* refs: the caller's handle and the source's list; needs: the handle. */
  weft__state_init(&t->base, WEFT__K_THEN, 2, 1);
  t->base.aux.then = fn;
  t->base.val.ptr = arg;
  t->arg_dtor = arg_dtor;
  t->ex = ex;
  t->src = src;
  t->node.run = then_fire;
  weft__ref_need(src);
  *out = &t->base;
  if (!weft__attach(src, &t->node))
    weft__defer(&t->node);
  return 0;
}

/* ---- watch: a continuation without a derived future ---- */

typedef weft__watch_t watch_t;

/* Bits under a watch's executor pointer (executors are pointer-aligned). */
enum { W_DTOR = 1, W_CALLER = 2, W_BITS = 3 };

/* A weft_watch_t: the watch, and whether it is active (weft_watch_start
 * sets it, the run or the refusal clears it before the user's code). */
typedef struct {
  weft__watch_dtor_t wd;
  _Atomic uintptr_t active;
} caller_watch_t;
_Static_assert(sizeof(caller_watch_t) <= sizeof(weft_watch_t),
               "weft_watch_t holds a caller's watch");

static size_t watch_size(const watch_t *w) {
  return (w->ex & W_DTOR) ? sizeof(weft__watch_dtor_t) : sizeof *w;
}

/* The room an F_WSLOT state keeps for a watch. */
static watch_t *watch_slot(struct weft_future *f) {
  return &((weft__ext_ws_t *)f)->slot;
}

static void watch_finish(watch_t *w) {
  struct weft_future *src = w->src;
  /* In the room only if src has one: past the end of a state without,
   * the address may be another block's, this watch's own included. */
  if (w != watch_slot(src) ||
      !(weft__word(src, memory_order_relaxed) & WEFT__F_WSLOT))
    weft__free(w, watch_size(w));
  weft__unref_need(src); /* the handle the caller gave the watch */
}

/* A caller's watch ends: its fields are read and the node handed back
 * before fn (or arg_dtor) begins, as weft_watch_start() promises. */
static void caller_watch_end(watch_t *w, bool run) {
  struct weft_future *src = w->src;
  weft_watch_fn fn = w->fn;
  void *arg = w->arg;
  weft_dtor_fn dtor = (w->ex & W_DTOR) ? ((weft__watch_dtor_t *)w)->arg_dtor
                                       : NULL;
  atomic_store_explicit(&((caller_watch_t *)w)->active, 0,
                        memory_order_release);
  if (run)
    fn(arg, src);
  else if (dtor != NULL)
    dtor(arg);
  weft__unref_need(src);
}

WEFT__HOT void weft__watch_run(weft_task_t *node) { /* on the executor */
  watch_t *w = (watch_t *)node;
  if (w->ex & W_CALLER) {
    caller_watch_end(w, true);
    return;
  }
  w->fn(w->arg, w->src);
  watch_finish(w);
}

/* The source settled (on the settling thread, in its trampoline). Nothing
 * can cancel a watch, so nothing races this. */
void weft__watch_fire(weft_task_t *node) {
  watch_t *w = (watch_t *)node;
  weft_executor_t *ex = (weft_executor_t *)(w->ex & ~(uintptr_t)W_BITS);
  if (ex == &weft__inline_executor) {
    weft__watch_run(node);
    return;
  }
  node->run = weft__watch_run;
  if (ex->ops->submit(ex, node) != 0) {
    if (w->ex & W_CALLER) {
      caller_watch_end(w, false);
      return;
    }
    if (w->ex & W_DTOR)
      ((weft__watch_dtor_t *)w)->arg_dtor(w->arg);
    watch_finish(w);
  }
}

/* Fill w and attach it to f: the caller's handle is the watch's now. */
static void watch_attach(watch_t *w, weft_future_t *f, weft_executor_t *ex,
                         uintptr_t bits, weft_watch_fn fn, void *arg,
                         weft_dtor_fn arg_dtor) {
  w->node.run = weft__watch_fire;
  w->ex = (uintptr_t)ex | bits | (arg_dtor != NULL ? W_DTOR : 0);
  w->src = f;
  w->fn = fn;
  w->arg = arg;
  if (arg_dtor != NULL)
    ((weft__watch_dtor_t *)w)->arg_dtor = arg_dtor;
  if (!weft__attach(f, &w->node))
    weft__defer(&w->node);
}

static bool ex_valid(const weft_executor_t *ex) {
  return ex != NULL && ex->ops != NULL && ex->ops->submit != NULL;
}

WEFT__HOT int weft_future_watch(weft_future_t *f, weft_executor_t *ex,
                                weft_watch_fn fn, void *arg,
                                weft_dtor_fn arg_dtor) {
  if (f == NULL || !ex_valid(ex) || fn == NULL)
    return WEFT_EINVAL;
  watch_t *w;
  /* The caller's handle is the only one (needs is 1): take the state's
   * room if it has some (see weft__ext_ws_t); nobody else can come. */
  if (arg_dtor == NULL &&
      (weft__word(f, memory_order_relaxed) & WEFT__F_WSLOT) &&
      weft__needs_of(atomic_load_explicit(&f->rn, memory_order_relaxed)) == 1)
    w = watch_slot(f);
  else if ((w = weft__malloc(arg_dtor != NULL ? sizeof(weft__watch_dtor_t)
                                              : sizeof *w)) == NULL)
    return WEFT_ENOMEM;
  watch_attach(w, f, ex, 0, fn, arg, arg_dtor);
  return 0;
}

int weft_watch_start(weft_watch_t *node, weft_future_t *f, weft_executor_t *ex,
                     weft_watch_fn fn, void *arg, weft_dtor_fn arg_dtor) {
  if (node == NULL || f == NULL || !ex_valid(ex) || fn == NULL)
    return WEFT_EINVAL;
  caller_watch_t *cw = (caller_watch_t *)(void *)node;
  if (atomic_load_explicit(&cw->active, memory_order_acquire) != 0)
    return WEFT_EBUSY;
  atomic_store_explicit(&cw->active, 1, memory_order_relaxed);
  watch_attach(&cw->wd.w, f, ex, W_CALLER, fn, arg, arg_dtor);
  return 0;
}

bool weft_watch_is_active(const weft_watch_t *node) {
  return node != NULL &&
         atomic_load_explicit(
             &((const caller_watch_t *)(const void *)node)->active,
             memory_order_acquire) != 0;
}

/* For diagnostics (the loop's stall detector): the user's function behind a
 * queued task: a continuation's fn, else the task's own run function. */
void (*weft__task_callback(const weft_task_t *t))(void) {
  if (t->run == then_run)
    return (void (*)(void))THEN_OF(t)->base.aux.then;
  return (void (*)(void))t->run;
}
