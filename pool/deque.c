/* SPDX-License-Identifier: MIT */
/* pool/deque.c: the growable Chase-Lev work-stealing deque. The owner pushes
 * and takes at the bottom; thieves steal at the top. */
#include "internal.h"

static weft__ring_t *ring_new(size_t capacity) {
  weft__ring_t *r = weft__malloc(sizeof(*r) +
                                 capacity * sizeof(_Atomic(weft_task_t *)));
  if (r == NULL)
    return NULL;
  r->mask = capacity - 1;
  r->retired = NULL;
  return r;
}

static void ring_free(weft__ring_t *r) {
  weft__free(r, sizeof(*r) + (r->mask + 1) * sizeof(_Atomic(weft_task_t *)));
}

int weft__deque_init(weft__deque_t *d, size_t capacity) {
  weft__ring_t *r = ring_new(capacity);
  if (r == NULL)
    return WEFT_ENOMEM;
  atomic_init(&d->top, 0);
  atomic_init(&d->bottom, 0);
  atomic_init(&d->ring, r);
  return 0;
}

void weft__deque_destroy(weft__deque_t *d) {
  weft__ring_t *r = atomic_load_explicit(&d->ring, memory_order_relaxed);
  while (r != NULL) {
    weft__ring_t *older = r->retired;
    ring_free(r);
    r = older;
  }
}

/* Double the ring. The old ring stays readable for thieves that loaded it;
 * it is freed with the deque (memory stays within twice the peak). */
weft__ring_t *weft__deque_grow(weft__deque_t *d, weft__ring_t *old, int64_t t,
                               int64_t b) {
  weft__ring_t *r = ring_new((old->mask + 1) * 2);
  if (r == NULL)
    return NULL;
  for (int64_t i = t; i < b; i++)
    atomic_store_explicit(
        &r->slot[i & (int64_t)r->mask],
        atomic_load_explicit(&old->slot[i & (int64_t)old->mask],
                             memory_order_relaxed),
        memory_order_relaxed);
  r->retired = old;
  atomic_store_explicit(&d->ring, r, memory_order_release);
  return r;
}

weft_task_t *weft__deque_steal(weft__deque_t *d) {
  int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
  WEFT__PERTURB();
  atomic_thread_fence(memory_order_seq_cst);
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
  if (t >= b)
    return NULL;
  weft__ring_t *r = atomic_load_explicit(&d->ring, memory_order_acquire);
  weft_task_t *x = atomic_load_explicit(&r->slot[t & (int64_t)r->mask],
                                        memory_order_relaxed);
  WEFT__PERTURB(); /* the owner may take x first */
  if (!atomic_compare_exchange_strong_explicit(
          &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
    return WEFT__STEAL_ABORT;
  return x;
}
