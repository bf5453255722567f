/* SPDX-License-Identifier: MIT */
/* lib/sync.c: waiter queues, and the semaphore, mutex and one-shot event
 * built on them (the channel is in channel.c). Design: docs/design/sync.md. */
#include "internal.h"

#include <weft/sync.h>

/* ---- objects and waiters ---- */

int weft__sync_init(weft__sync_t *s, void (*free_fn)(weft__sync_t *s)) {
  if (pthread_mutex_init(&s->mu, NULL) != 0)
    return WEFT_ENOMEM;
  atomic_init(&s->refs, 1);
  s->free_fn = free_fn;
  return 0;
}

void weft__sync_unref(weft__sync_t *s) {
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_destroy(&s->mu);
    s->free_fn(s);
  }
}

void weft__swait_free(weft__swait_t *w) {
  weft__sync_t *s = w->sync;
  weft_promise_release(w->p);
  weft__free(w, sizeof *w);
  weft__sync_unref(s);
}

static void waitq_remove(weft__waitq_t *q, weft__swait_t *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    q->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->next = w->prev = NULL;
  w->q = NULL;
  atomic_fetch_sub_explicit(&q->n, 1, memory_order_seq_cst);
}

void weft__waitq_push(weft__waitq_t *q, weft__swait_t *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
  w->q = q;
  atomic_fetch_add_explicit(&q->n, 1, memory_order_seq_cst);
}

weft__swait_t *weft__waitq_pop(weft__waitq_t *q) {
  weft__swait_t *w = q->head;
  if (w)
    waitq_remove(q, w);
  return w;
}

/* The cancel hook: out of the queue, or, if a grant is in flight to it,
 * leave the freeing to whichever of the two ends last. */
static void waiter_cancelled(void *arg) {
  weft__swait_t *w = arg;
  bool free_it = true;
  pthread_mutex_lock(&w->sync->mu);
  if (w->q) {
    waitq_remove(w->q, w);
  } else {
    w->hook_ran = true;
    free_it = w->lost;
  }
  pthread_mutex_unlock(&w->sync->mu);
  if (free_it)
    weft__swait_free(w);
}

int weft__swait_new(weft__sync_t *s, void *item, weft__swait_t **wp,
                    weft_future_t **f) {
  weft__swait_t *w = weft__malloc(sizeof *w);
  if (!w)
    return WEFT_ENOMEM;
  *w = (weft__swait_t){.sync = s, .item = item};
  int rc = weft_promise_create(&w->p, f);
  if (rc != 0) {
    weft__free(w, sizeof *w);
    return rc;
  }
  /* A fresh promise: the hook cannot be refused. */
  weft_promise_on_cancel(w->p, waiter_cancelled, w);
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  *wp = w;
  return 0;
}

bool weft__swait_settled(weft__swait_t *w, int rc) {
  if (rc == 0) {
    weft__swait_free(w);
    return true;
  }
  pthread_mutex_lock(&w->sync->mu);
  return false;
}

void weft__swait_lost(weft__swait_t *w) {
  w->lost = true;
  bool free_it = w->hook_ran;
  pthread_mutex_unlock(&w->sync->mu);
  if (free_it)
    weft__swait_free(w);
}

void weft__waitq_reject_all(weft__sync_t *s, weft__waitq_t *q, int err) {
  pthread_mutex_lock(&s->mu);
  weft__swait_t *w;
  while ((w = weft__waitq_pop(q)) != NULL) {
    pthread_mutex_unlock(&s->mu);
    WEFT__PERTURB(); /* popped, not yet settled: a cancel may come first */
    if (!weft__swait_settled(w, weft_promise_reject(w->p, err)))
      weft__swait_lost(w);
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
}

/* ---- semaphore (and the mutex: a semaphore of one permit) ---- */

struct weft_semaphore {
  weft__sync_t core;
  size_t count; /* free permits; under core.mu */
  size_t max;   /* WEFT_SYNC_MAX, or 1 for a mutex */
  weft__waitq_t q;
};

struct weft_mutex {
  struct weft_semaphore s;
};

static void sem_free(weft__sync_t *core) {
  weft__free(core, sizeof(struct weft_semaphore));
}

static int sem_make(size_t permits, size_t max, struct weft_semaphore **out) {
  struct weft_semaphore *s = weft__malloc(sizeof *s);
  if (!s)
    return WEFT_ENOMEM;
  *s = (struct weft_semaphore){.count = permits, .max = max};
  atomic_init(&s->q.n, 0);
  if (weft__sync_init(&s->core, sem_free) != 0) {
    weft__free(s, sizeof *s);
    return WEFT_ENOMEM;
  }
  *out = s;
  return 0;
}

/* Hand free permits to the queued acquires, oldest first. */
static void sem_grant(struct weft_semaphore *s) {
  pthread_mutex_lock(&s->core.mu);
  weft__swait_t *w;
  while (s->count > 0 && (w = weft__waitq_pop(&s->q)) != NULL) {
    s->count--;
    pthread_mutex_unlock(&s->core.mu);
    WEFT__PERTURB(); /* popped, not yet settled: a cancel may come first */
    if (!weft__swait_settled(w, weft_promise_fulfil_int(w->p, 0))) {
      s->count++;
      weft__swait_lost(w);
    }
    pthread_mutex_lock(&s->core.mu);
  }
  pthread_mutex_unlock(&s->core.mu);
}

static int sem_acquire(struct weft_semaphore *s, weft_future_t **out) {
  weft__swait_t *w;
  weft_future_t *f;
  int rc = weft__swait_new(&s->core, NULL, &w, &f);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&s->core.mu);
  bool now = s->count > 0 && s->q.head == NULL;
  if (now)
    s->count--;
  else
    weft__waitq_push(&s->q, w);
  pthread_mutex_unlock(&s->core.mu);
  if (now) {
    weft_promise_fulfil_int(w->p, 0);
    weft__swait_free(w);
  }
  *out = f;
  return 0;
}

static bool sem_try(struct weft_semaphore *s) {
  pthread_mutex_lock(&s->core.mu);
  bool ok = s->count > 0 && s->q.head == NULL;
  if (ok)
    s->count--;
  pthread_mutex_unlock(&s->core.mu);
  return ok;
}

static int sem_release(struct weft_semaphore *s, size_t n, int full_err) {
  pthread_mutex_lock(&s->core.mu);
  if (n > s->max - s->count) {
    pthread_mutex_unlock(&s->core.mu);
    return full_err;
  }
  s->count += n;
  pthread_mutex_unlock(&s->core.mu);
  sem_grant(s);
  return 0;
}

static void sem_close(struct weft_semaphore *s) {
  weft__waitq_reject_all(&s->core, &s->q, WEFT_ECANCELED);
  weft__sync_unref(&s->core);
}

int weft_semaphore_create(size_t permits, weft_semaphore_t **out) {
  if (!out || permits > WEFT_SYNC_MAX)
    return WEFT_EINVAL;
  return sem_make(permits, WEFT_SYNC_MAX, out);
}

int weft_semaphore_acquire(weft_semaphore_t *s, weft_future_t **out) {
  if (!s || !out)
    return WEFT_EINVAL;
  return sem_acquire(s, out);
}

int weft_semaphore_try_acquire(weft_semaphore_t *s) {
  if (!s)
    return WEFT_EINVAL;
  return sem_try(s) ? 0 : WEFT_EAGAIN;
}

int weft_semaphore_release(weft_semaphore_t *s, size_t n) {
  if (!s || n == 0)
    return WEFT_EINVAL;
  return sem_release(s, n, WEFT_EINVAL);
}

size_t weft_semaphore_available(const weft_semaphore_t *s) {
  if (!s)
    return 0;
  weft_semaphore_t *m = (weft_semaphore_t *)s;
  pthread_mutex_lock(&m->core.mu);
  size_t n = m->count;
  pthread_mutex_unlock(&m->core.mu);
  return n;
}

int weft_semaphore_close(weft_semaphore_t *s) {
  if (!s)
    return WEFT_EINVAL;
  sem_close(s);
  return 0;
}

int weft_mutex_create(weft_mutex_t **out) {
  if (!out)
    return WEFT_EINVAL;
  struct weft_semaphore *s;
  int rc = sem_make(1, 1, &s);
  if (rc == 0)
    *out = (weft_mutex_t *)s; /* its first and only member */
  return rc;
}

int weft_mutex_lock(weft_mutex_t *m, weft_future_t **out) {
  if (!m || !out)
    return WEFT_EINVAL;
  return sem_acquire(&m->s, out);
}

int weft_mutex_try_lock(weft_mutex_t *m) {
  if (!m)
    return WEFT_EINVAL;
  return sem_try(&m->s) ? 0 : WEFT_EBUSY;
}

int weft_mutex_unlock(weft_mutex_t *m) {
  if (!m)
    return WEFT_EINVAL;
  return sem_release(&m->s, 1, WEFT_EPERM);
}

bool weft_mutex_is_locked(const weft_mutex_t *m) {
  return m && weft_semaphore_available(&m->s) == 0;
}

int weft_mutex_close(weft_mutex_t *m) {
  if (!m)
    return WEFT_EINVAL;
  sem_close(&m->s);
  return 0;
}

/* ---- one-shot event ---- */

struct weft_event {
  weft__sync_t core;
  _Atomic bool set;
  weft__waitq_t q;
};

static void event_free(weft__sync_t *core) {
  weft__free(core, sizeof(struct weft_event));
}

int weft_event_create(weft_event_t **out) {
  if (!out)
    return WEFT_EINVAL;
  weft_event_t *e = weft__malloc(sizeof *e);
  if (!e)
    return WEFT_ENOMEM;
  *e = (weft_event_t){.q = {0}};
  atomic_init(&e->set, false);
  atomic_init(&e->q.n, 0);
  if (weft__sync_init(&e->core, event_free) != 0) {
    weft__free(e, sizeof *e);
    return WEFT_ENOMEM;
  }
  *out = e;
  return 0;
}

int weft_event_wait(weft_event_t *e, weft_future_t **out) {
  if (!e || !out)
    return WEFT_EINVAL;
  weft__swait_t *w;
  weft_future_t *f;
  int rc = weft__swait_new(&e->core, NULL, &w, &f);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&e->core.mu);
  bool now = atomic_load_explicit(&e->set, memory_order_relaxed);
  if (!now)
    weft__waitq_push(&e->q, w);
  pthread_mutex_unlock(&e->core.mu);
  if (now) {
    weft_promise_fulfil_int(w->p, 0);
    weft__swait_free(w);
  }
  *out = f;
  return 0;
}

int weft_event_set(weft_event_t *e) {
  if (!e)
    return WEFT_EINVAL;
  pthread_mutex_lock(&e->core.mu);
  bool was = atomic_exchange_explicit(&e->set, true, memory_order_release);
  weft__swait_t *w;
  while (!was && (w = weft__waitq_pop(&e->q)) != NULL) {
    pthread_mutex_unlock(&e->core.mu);
    WEFT__PERTURB();
    if (!weft__swait_settled(w, weft_promise_fulfil_int(w->p, 0)))
      weft__swait_lost(w);
    pthread_mutex_lock(&e->core.mu);
  }
  pthread_mutex_unlock(&e->core.mu);
  return was ? WEFT_EALREADY : 0;
}

bool weft_event_is_set(const weft_event_t *e) {
  return e && atomic_load_explicit(&e->set, memory_order_acquire);
}

int weft_event_close(weft_event_t *e) {
  if (!e)
    return WEFT_EINVAL;
  weft__waitq_reject_all(&e->core, &e->q, WEFT_ECANCELED);
  weft__sync_unref(&e->core);
  return 0;
}
