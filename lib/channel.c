/* SPDX-License-Identifier: MIT */
/* lib/channel.c: the bounded MPMC channel: a ring of slots with sequence
 * numbers for the try_ calls, and waiter queues touched only when someone
 * waits. Design: docs/design/sync.md. */
#include "internal.h"

#include <weft/sync.h>

#include <sched.h>

/* Bits of the two positions (counts of items ever put in / taken out).
 * LOCK: a hand-off to a waiter is in flight at this position; the try_
 * calls back off (WEFT_EAGAIN) and the holder finishes it or undoes it.
 * SHUT (put side only): shut down. WAIT: the other side has waiters (on
 * put: recvs are queued; on take: sends are): whoever moves the position
 * drains. */
#define POS_LOCK ((size_t)1 << 63)
#define POS_SHUT ((size_t)1 << 62)
#define POS_WAIT ((size_t)1 << 61)
#define POS_MASK (POS_WAIT - 1)

typedef struct slot {
  /* 2 * pos: free for the put at pos; 2 * pos + 1: holds the item put at
   * pos (steps of two keep a ring of one slot unambiguous) */
  _Atomic size_t seq;
  void *item;
} slot_t;

struct weft_channel {
  weft__sync_t core;
  size_t cap;
  size_t mask; /* cap - 1 when cap is a power of two, else 0 */
  weft_dtor_fn item_dtor;
  slot_t *slots;
  weft__waitq_t sendq, recvq;
  char pad0[64];
  _Atomic size_t put; /* next position to fill */
  char pad1[64 - sizeof(size_t)];
  _Atomic size_t take; /* next position to empty */
  char pad2[64 - sizeof(size_t)];
};

static inline slot_t *slot_at(weft_channel_t *ch, size_t pos) {
  pos &= POS_MASK;
  return &ch->slots[ch->mask ? pos & ch->mask : pos % ch->cap];
}

/* A waiter sets WAIT on the position the other side moves, with a
 * read-modify-write, before it looks at the ring: a put (take) that claims
 * its position after that sees WAIT and drains once it has published; one
 * that claimed before is seen by the waiter's look, published or still in
 * flight (the waiter then waits the few instructions to the publish). *wake:
 * drain now. */
static int ring_put(weft_channel_t *ch, void *item, bool *wake) {
  size_t pos = atomic_load_explicit(&ch->put, memory_order_relaxed);
  for (;;) {
    if (pos & POS_SHUT)
      return WEFT_EPIPE;
    if (pos & POS_LOCK)
      return WEFT_EAGAIN;
    size_t p = pos & POS_MASK;
    slot_t *s = slot_at(ch, p);
    size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    intptr_t d = (intptr_t)(seq - 2 * p);
    if (d == 0) {
      /* acquire: after a hand-off undone at pos, see its holder's
       * accesses to the slot as done */
      if (atomic_compare_exchange_weak_explicit(&ch->put, &pos, pos + 1,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
        s->item = item;
        WEFT__PERTURB(); /* claimed, not yet published */
        atomic_store_explicit(&s->seq, 2 * p + 1, memory_order_release);
        *wake = (pos & POS_WAIT) != 0;
        return 0;
      }
    } else if (d < 0) {
      return WEFT_EAGAIN;
    } else {
      pos = atomic_load_explicit(&ch->put, memory_order_relaxed);
    }
  }
}

/* Empty at `pos`: end of channel if shut down with nothing put past it
 * and no send being handed in. */
static int ring_empty(weft_channel_t *ch, size_t pos) {
  size_t p = atomic_load_explicit(&ch->put, memory_order_seq_cst);
  if ((p & POS_SHUT) && !(p & POS_LOCK) && (p & POS_MASK) == pos)
    return WEFT_EOF;
  return WEFT_EAGAIN;
}

static int ring_take(weft_channel_t *ch, void **item, bool *wake) {
  size_t pos = atomic_load_explicit(&ch->take, memory_order_relaxed);
  for (;;) {
    if (pos & POS_LOCK)
      return WEFT_EAGAIN;
    size_t t = pos & POS_MASK;
    slot_t *s = slot_at(ch, t);
    size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    intptr_t d = (intptr_t)(seq - (2 * t + 1));
    if (d == 0) {
      /* acquire: after a hand-off undone at pos, see its holder's
       * accesses to the slot as done */
      if (atomic_compare_exchange_weak_explicit(&ch->take, &pos, pos + 1,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
        *item = s->item;
        WEFT__PERTURB(); /* claimed, slot not yet freed */
        atomic_store_explicit(&s->seq, 2 * (t + ch->cap), memory_order_release);
        *wake = (pos & POS_WAIT) != 0;
        return 0;
      }
    } else if (d < 0) {
      return ring_empty(ch, t);
    } else {
      pos = atomic_load_explicit(&ch->take, memory_order_relaxed);
    }
  }
}

/* Hand the oldest item to the oldest queued recv, or end-of-channel to all
 * of them. The lock held (dropped and taken again around the settle).
 * True if it did anything (look again). */
static bool drain_recv(weft_channel_t *ch) {
  if (!ch->recvq.head)
    return false;
  size_t pos = atomic_load_explicit(&ch->take, memory_order_acquire);
  if (pos & POS_LOCK)
    return false; /* its holder drains again when done */
  size_t t = pos & POS_MASK;
  slot_t *s = slot_at(ch, t);
  size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
  if (seq != 2 * t + 1) {
    if ((intptr_t)(seq - (2 * t + 1)) > 0)
      return true; /* taken meanwhile: look again */
    size_t p = atomic_load_explicit(&ch->put, memory_order_acquire);
    if ((p & POS_MASK) > t) { /* put at t, not yet published */
      sched_yield();
      return true;
    }
    if (ring_empty(ch, t) != WEFT_EOF)
      return false;
    pthread_mutex_unlock(&ch->core.mu);
    weft__waitq_reject_all(&ch->core, &ch->recvq, WEFT_EOF);
    pthread_mutex_lock(&ch->core.mu);
    return true;
  }
  if (!atomic_compare_exchange_strong_explicit(&ch->take, &pos, pos | POS_LOCK,
                                               memory_order_seq_cst,
                                               memory_order_relaxed))
    return true;
  weft__swait_t *w = weft__waitq_pop(&ch->recvq);
  pthread_mutex_unlock(&ch->core.mu);
  WEFT__PERTURB(); /* popped, not yet settled: a cancel may come first */
  /* The item moves only if the recv is fulfilled with it. */
  if (weft__swait_settled(w, weft_promise_fulfil(w->p, s->item, NULL))) {
    atomic_fetch_add_explicit(&ch->take, 1 - POS_LOCK, memory_order_acq_rel);
    atomic_store_explicit(&s->seq, 2 * (t + ch->cap), memory_order_release);
  } else {
    atomic_fetch_and_explicit(&ch->take, ~POS_LOCK, memory_order_acq_rel);
    weft__swait_lost(w);
  }
  pthread_mutex_lock(&ch->core.mu);
  return true;
}

/* Move the oldest queued send's item into a free slot. As drain_recv(). */
static bool drain_send(weft_channel_t *ch) {
  if (!ch->sendq.head)
    return false;
  size_t pos = atomic_load_explicit(&ch->put, memory_order_acquire);
  if (pos & (POS_LOCK | POS_SHUT))
    return false;
  size_t p = pos & POS_MASK;
  slot_t *s = slot_at(ch, p);
  size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
  if (seq != 2 * p) {
    if ((intptr_t)(seq - 2 * p) > 0)
      return true; /* put meanwhile: look again */
    size_t t = atomic_load_explicit(&ch->take, memory_order_acquire);
    if ((t & POS_MASK) + ch->cap > p) { /* taken, slot not yet freed */
      sched_yield();
      return true;
    }
    return false; /* full */
  }
  if (!atomic_compare_exchange_strong_explicit(&ch->put, &pos, pos | POS_LOCK,
                                               memory_order_seq_cst,
                                               memory_order_relaxed))
    return true;
  weft__swait_t *w = weft__waitq_pop(&ch->sendq);
  void *item = w->item;
  pthread_mutex_unlock(&ch->core.mu);
  WEFT__PERTURB();
  /* The item enters only if the send is fulfilled. */
  if (weft__swait_settled(w, weft_promise_fulfil_int(w->p, 0))) {
    s->item = item;
    /* SHUT may have been set meanwhile: keep it. */
    atomic_fetch_add_explicit(&ch->put, 1 - POS_LOCK, memory_order_acq_rel);
    atomic_store_explicit(&s->seq, 2 * p + 1, memory_order_release);
  } else {
    atomic_fetch_and_explicit(&ch->put, ~POS_LOCK, memory_order_acq_rel);
    weft__swait_lost(w);
  }
  pthread_mutex_lock(&ch->core.mu);
  return true;
}

static void drain(weft_channel_t *ch) {
  pthread_mutex_lock(&ch->core.mu);
  for (;;) {
    bool r = drain_recv(ch);
    bool s = drain_send(ch);
    if (!r && !s)
      break;
  }
  /* Nobody waits on a side any more: its try_ calls stop draining. */
  if (!ch->recvq.head &&
      (atomic_load_explicit(&ch->put, memory_order_relaxed) & POS_WAIT))
    atomic_fetch_and_explicit(&ch->put, ~POS_WAIT, memory_order_acq_rel);
  if (!ch->sendq.head &&
      (atomic_load_explicit(&ch->take, memory_order_relaxed) & POS_WAIT))
    atomic_fetch_and_explicit(&ch->take, ~POS_WAIT, memory_order_acq_rel);
  pthread_mutex_unlock(&ch->core.mu);
}

static void channel_free(weft__sync_t *core) {
  weft_channel_t *ch = (weft_channel_t *)core;
  weft__free(ch->slots, ch->cap * sizeof(slot_t));
  weft__free(ch, sizeof *ch);
}

int weft_channel_create(size_t capacity, weft_dtor_fn item_dtor,
                        weft_channel_t **out) {
  if (!out || capacity == 0 || capacity > WEFT_SYNC_MAX)
    return WEFT_EINVAL;
  weft_channel_t *ch = weft__malloc(sizeof *ch);
  if (!ch)
    return WEFT_ENOMEM;
  *ch = (weft_channel_t){.cap = capacity, .item_dtor = item_dtor};
  ch->mask = (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0;
  ch->slots = weft__malloc(capacity * sizeof(slot_t));
  if (!ch->slots || weft__sync_init(&ch->core, channel_free) != 0) {
    if (ch->slots)
      weft__free(ch->slots, capacity * sizeof(slot_t));
    weft__free(ch, sizeof *ch);
    return WEFT_ENOMEM;
  }
  for (size_t i = 0; i < capacity; i++) {
    atomic_init(&ch->slots[i].seq, 2 * i);
    ch->slots[i].item = NULL;
  }
  atomic_init(&ch->sendq.n, 0);
  atomic_init(&ch->recvq.n, 0);
  atomic_init(&ch->put, 0);
  atomic_init(&ch->take, 0);
  *out = ch;
  return 0;
}

int weft_channel_try_send(weft_channel_t *ch, void *item) {
  if (!ch)
    return WEFT_EINVAL;
  bool wake;
  int rc = ring_put(ch, item, &wake);
  if (rc == 0 && wake)
    drain(ch);
  return rc;
}

int weft_channel_try_recv(weft_channel_t *ch, void **item) {
  if (!ch || !item)
    return WEFT_EINVAL;
  bool wake;
  int rc = ring_take(ch, item, &wake);
  if (rc == 0 && wake)
    drain(ch);
  return rc;
}

/* Give back a waiter never queued and its future, for an error return. */
static void waiter_discard(weft__swait_t *w, weft_future_t *f) {
  weft__swait_free(w);
  weft_future_release(f);
}

int weft_channel_send(weft_channel_t *ch, void *item, weft_future_t **out) {
  if (!ch || !out)
    return WEFT_EINVAL;
  if (atomic_load_explicit(&ch->put, memory_order_acquire) & POS_SHUT)
    return WEFT_EPIPE;
  weft__swait_t *w;
  weft_future_t *f;
  int rc = weft__swait_new(&ch->core, item, &w, &f);
  if (rc != 0)
    return rc;
  if (atomic_load_explicit(&ch->sendq.n, memory_order_seq_cst) == 0) {
    rc = weft_channel_try_send(ch, item);
    if (rc == WEFT_EPIPE) {
      waiter_discard(w, f);
      return rc;
    }
    if (rc == 0) {
      weft_promise_fulfil_int(w->p, 0);
      weft__swait_free(w);
      *out = f;
      return 0;
    }
  }
  pthread_mutex_lock(&ch->core.mu);
  if (atomic_load_explicit(&ch->put, memory_order_relaxed) & POS_SHUT) {
    pthread_mutex_unlock(&ch->core.mu);
    waiter_discard(w, f);
    return WEFT_EPIPE;
  }
  weft__waitq_push(&ch->sendq, w);
  atomic_fetch_or_explicit(&ch->take, POS_WAIT, memory_order_acq_rel);
  pthread_mutex_unlock(&ch->core.mu);
  WEFT__PERTURB(); /* queued and announced, before the look at the ring */
  drain(ch);
  *out = f;
  return 0;
}

int weft_channel_recv(weft_channel_t *ch, weft_future_t **out) {
  if (!ch || !out)
    return WEFT_EINVAL;
  weft__swait_t *w;
  weft_future_t *f;
  int rc = weft__swait_new(&ch->core, NULL, &w, &f);
  if (rc != 0)
    return rc;
  if (atomic_load_explicit(&ch->recvq.n, memory_order_seq_cst) == 0) {
    void *item;
    rc = weft_channel_try_recv(ch, &item);
    if (rc == 0 || rc == WEFT_EOF) {
      if (rc == 0)
        weft_promise_fulfil(w->p, item, NULL);
      else
        weft_promise_reject(w->p, WEFT_EOF);
      weft__swait_free(w);
      *out = f;
      return 0;
    }
  }
  pthread_mutex_lock(&ch->core.mu);
  weft__waitq_push(&ch->recvq, w);
  atomic_fetch_or_explicit(&ch->put, POS_WAIT, memory_order_acq_rel);
  pthread_mutex_unlock(&ch->core.mu);
  WEFT__PERTURB(); /* queued and announced, before the look at the ring */
  drain(ch);
  *out = f;
  return 0;
}

int weft_channel_shutdown(weft_channel_t *ch) {
  if (!ch)
    return WEFT_EINVAL;
  pthread_mutex_lock(&ch->core.mu);
  size_t was = atomic_fetch_or_explicit(&ch->put, POS_SHUT,
                                        memory_order_seq_cst);
  pthread_mutex_unlock(&ch->core.mu);
  if (was & POS_SHUT)
    return WEFT_EALREADY;
  weft__waitq_reject_all(&ch->core, &ch->sendq, WEFT_EPIPE);
  drain(ch); /* queued recvs of an empty channel end now */
  return 0;
}

size_t weft_channel_count(const weft_channel_t *ch) {
  if (!ch)
    return 0;
  weft_channel_t *c = (weft_channel_t *)ch;
  size_t t = atomic_load_explicit(&c->take, memory_order_acquire) & POS_MASK;
  size_t p = atomic_load_explicit(&c->put, memory_order_acquire) & POS_MASK;
  return p > t ? p - t : 0;
}

int weft_channel_close(weft_channel_t *ch) {
  if (!ch)
    return WEFT_EINVAL;
  weft__waitq_reject_all(&ch->core, &ch->sendq, WEFT_ECANCELED);
  weft__waitq_reject_all(&ch->core, &ch->recvq, WEFT_ECANCELED);
  void *item;
  bool wake;
  while (ring_take(ch, &item, &wake) == 0)
    if (ch->item_dtor)
      ch->item_dtor(item);
  weft__sync_unref(&ch->core);
  return 0;
}
