/* SPDX-License-Identifier: MIT */
/* lib/then.c: continuations on a future: then (a derived future, which may
 * follow a future the continuation returns), watch (no derived future),
 * and await (block until settled). The shared state, settling, cancel
 * propagation and promises are in future.c. */
#define _GNU_SOURCE
#include "internal.h"

typedef weft__then_t then_state_t;
#define THEN_OF(task) ((then_state_t *)((char *)(task)-offsetof(then_state_t, node)))

/* ---- then ---- */

static void then_run(weft_task_t *node);
static void follow_fire(weft_task_t *node);

static void then_finish(then_state_t *t) {
  weft__core_unref_need(t->src); /* settled: its need no longer matters */
  weft__core_unref(&t->base);    /* the reference the list held */
}

/* The source settled (runs on the settling thread, in its trampoline). */
static void then_fire(weft_task_t *node) {
  then_state_t *t = THEN_OF(node);
  WEFT__PERTURB(); /* a cancel may claim first */
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_CLAIMED,
                                          memory_order_acq_rel);
  if (old & WEFT__F_CLAIMED) { /* cancelled first: src is not ours */
    weft__core_unref(&t->base);
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
  weft__core_ref(target);
  WEFT__PERTURB();
  uint32_t old = atomic_fetch_or_explicit(&t->base.word, WEFT__F_FOLLOWING,
                                          memory_order_seq_cst);
  WEFT__PERTURB(); /* following: a cancel may take the handle on target */
  weft__core_unref_need(old_src);
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
      weft__cancel_chain(weft__take_upstream(target), true);
    }
    weft__core_unref(&t->base);
    weft__core_unref(target);
    return;
  }
  t->node.run = follow_fire;
  if (!weft__attach(target, &t->node))
    follow_fire(&t->node);
  weft__core_unref(target);
}

/* The continuation, on its executor. */
static void then_run(weft_task_t *node) {
  then_state_t *t = THEN_OF(node);
  struct weft_future *d = &t->base;
  if (weft__core_state(d) != WEFT_PENDING) { /* cancelled while queued */
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
  weft__settle_result_as(d, &r, true);
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
    weft__core_unref(&t->base);
    return;
  }
  bool borrowed = weft__mirror(&t->base, target, true) == 0 &&
                  (weft__word(&t->base, memory_order_relaxed) & WEFT__F_BORROWED);
  if (borrowed) /* keep the reference while the value is shared */
    atomic_fetch_sub_explicit(&target->rn, WEFT__NEED, memory_order_relaxed);
  else
    weft__core_unref_need(target);
  weft__core_unref(&t->base);
}

int weft_future_then_dtor(weft_future_t *src, weft_executor_t *ex,
                          weft_then_fn fn, void *arg, weft_dtor_fn arg_dtor,
                          weft_future_t **out) {
  if (src == NULL || ex == NULL || ex->ops == NULL ||
      ex->ops->submit == NULL || fn == NULL || out == NULL)
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
  weft__core_ref_need(src);
  *out = &t->base;
  if (!weft__attach(src, &t->node))
    weft__defer(&t->node);
  return 0;
}

/* ---- watch: a continuation without a derived future ---- */

typedef weft__watch_t watch_t;

static size_t watch_size(const watch_t *w) {
  return (w->ex & 1) ? sizeof(weft__watch_dtor_t) : sizeof *w;
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
  weft__core_unref_need(src); /* the handle the caller gave the watch */
}

WEFT__HOT void weft__watch_run(weft_task_t *node) { /* on the executor */
  watch_t *w = (watch_t *)node;
  w->fn(w->arg, w->src);
  watch_finish(w);
}

/* The source settled (on the settling thread, in its trampoline). Nothing
 * can cancel a watch, so nothing races this. */
void weft__watch_fire(weft_task_t *node) {
  watch_t *w = (watch_t *)node;
  weft_executor_t *ex = (weft_executor_t *)(w->ex & ~(uintptr_t)1);
  if (ex == &weft__inline_executor) {
    weft__watch_run(node);
    return;
  }
  node->run = weft__watch_run;
  if (ex->ops->submit(ex, node) != 0) {
    if (w->ex & 1)
      ((weft__watch_dtor_t *)w)->arg_dtor(w->arg);
    watch_finish(w);
  }
}

WEFT__HOT int weft_future_watch(weft_future_t *f, weft_executor_t *ex,
                      weft_watch_fn fn, void *arg, weft_dtor_fn arg_dtor) {
  if (f == NULL || ex == NULL || ex->ops == NULL || ex->ops->submit == NULL ||
      fn == NULL)
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
  w->node.run = weft__watch_fire;
  w->ex = (uintptr_t)ex | (arg_dtor != NULL);
  w->src = f;
  w->fn = fn;
  w->arg = arg;
  if (arg_dtor != NULL)
    ((weft__watch_dtor_t *)w)->arg_dtor = arg_dtor;
  /* the caller's handle (a reference and a need) is the watch's now */
  if (!weft__attach(f, &w->node))
    weft__defer(&w->node);
  return 0;
}

int weft_future_then(weft_future_t *src, weft_executor_t *ex,
                     weft_then_fn fn, void *arg, weft_future_t **out) {
  return weft_future_then_dtor(src, ex, fn, arg, NULL, out);
}

/* ---- await ---- */

int weft_future_await(weft_future_t *f, int64_t timeout_ms) {
  if (f == NULL || timeout_ms < -1)
    return WEFT_EINVAL;
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
  if (!weft__attach(f, &w->task)) {
    weft__waiter_put(w);
    weft__waiter_put(w);
    return 0;
  }
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

/* For diagnostics (the loop's stall detector): the user's function behind a
 * queued task: a continuation's fn, else the task's own run function. */
void (*weft__task_callback(const weft_task_t *t))(void) {
  if (t->run == then_run)
    return (void (*)(void))THEN_OF(t)->base.aux.then;
  return (void (*)(void))t->run;
}
