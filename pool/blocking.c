/* SPDX-License-Identifier: MIT */
/* pool/blocking.c: the elastic set of threads for blocking jobs: started on
 * demand up to a maximum, each leaving after an idle keep-alive. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

static _Thread_local struct weft_pool *tl_blocking_pool;

bool weft__blocking_own(struct weft_pool *p) { return tl_blocking_pool == p; }

int weft__blocking_init(struct weft_pool *p, unsigned max,
                        unsigned keepalive_ms) {
  weft__blocking_t *b = &p->blocking;
  memset(b, 0, sizeof(*b));
  b->max = max;
  b->keepalive_ms = keepalive_ms;
  if (pthread_mutex_init(&b->mu, NULL) != 0)
    return WEFT_ENOMEM;
  if (weft__cond_init(&b->work) != 0)
    goto fail_work;
  if (weft__cond_init(&b->gone) != 0)
    goto fail_gone;
  return 0;
fail_gone:
  pthread_cond_destroy(&b->work);
fail_work:
  pthread_mutex_destroy(&b->mu);
  return WEFT_ENOMEM;
}

void weft__blocking_fini(struct weft_pool *p) {
  weft__blocking_t *b = &p->blocking;
  pthread_cond_destroy(&b->gone);
  pthread_cond_destroy(&b->work);
  pthread_mutex_destroy(&b->mu);
}

/* With b->mu held: join and free threads that have exited. Their last act
 * under the lock was to list themselves, so join returns promptly. */
static void reap(weft__blocking_t *b) {
  while (b->zombies != NULL) {
    weft__bthread_t *z = b->zombies;
    b->zombies = z->next;
    pthread_join(z->thread, NULL);
    weft__free(z, sizeof(*z));
  }
}

static void *blocking_main(void *arg) {
  weft__bthread_t *self = arg;
  struct weft_pool *p = (struct weft_pool *)self->next; /* see spawn() */
  weft__blocking_t *b = &p->blocking;
  tl_blocking_pool = p;
  weft_executor_t *prev = weft_executor_enter(&p->blocking_executor);
  pthread_mutex_lock(&b->mu);
  for (;;) {
    weft_task_t *t = b->head;
    if (t != NULL) {
      b->head = t->next;
      if (b->head == NULL)
        b->tail = NULL;
      pthread_mutex_unlock(&b->mu);
      bool ran = weft__run_or_discard(p, t);
      pthread_mutex_lock(&b->mu);
      b->run += ran;
      continue;
    }
    if (b->stop)
      break;
    b->idle++;
    int64_t deadline = weft__deadline_after_ms(b->keepalive_ms);
    int rc = 0;
    while (b->head == NULL && !b->stop && rc == 0)
      rc = weft__cond_wait(&b->work, &b->mu, deadline);
    b->idle--;
    if (rc == WEFT_ETIMEDOUT && b->head == NULL)
      break; /* idle for the whole keep-alive */
  }
  b->alive--;
  self->next = b->zombies;
  b->zombies = self;
  pthread_cond_broadcast(&b->gone);
  pthread_mutex_unlock(&b->mu);
  weft_executor_leave(prev);
  return NULL;
}

/* With b->mu held: start one more thread. */
static int spawn(struct weft_pool *p) {
  weft__blocking_t *b = &p->blocking;
  weft__bthread_t *t = weft__malloc(sizeof(*t));
  if (t == NULL)
    return WEFT_ENOMEM;
  t->next = (weft__bthread_t *)(void *)p; /* the pool, until it exits */
  if (weft__thread_create(&t->thread, blocking_main, t) != 0) {
    weft__free(t, sizeof(*t));
    return WEFT_EAGAIN;
  }
  b->alive++;
  if (b->alive > b->peak)
    b->peak = b->alive;
  return 0;
}

int weft__blocking_enqueue(struct weft_pool *p, weft_task_t *task) {
  weft__blocking_t *b = &p->blocking;
  pthread_mutex_lock(&b->mu);
  if (b->stop || atomic_load_explicit(&p->stopping, memory_order_acquire)) {
    pthread_mutex_unlock(&b->mu);
    return WEFT_ESHUTDOWN;
  }
  reap(b);
  if (b->idle == 0 && b->alive < b->max) {
    int rc = spawn(p);
    if (rc != 0 && b->alive == 0) { /* nobody would ever run it */
      pthread_mutex_unlock(&b->mu);
      return rc;
    }
  }
  task->next = NULL;
  if (b->tail != NULL)
    b->tail->next = task;
  else
    b->head = task;
  b->tail = task;
  pthread_cond_signal(&b->work);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

/* With b->mu held, in cancel mode: cancel every queued job. */
static void discard_queue(struct weft_pool *p) {
  weft__blocking_t *b = &p->blocking;
  weft_task_t *list = b->head;
  b->head = b->tail = NULL;
  pthread_mutex_unlock(&b->mu);
  while (list != NULL) {
    weft_task_t *next = list->next;
    weft__run_or_discard(p, list);
    list = next;
  }
  pthread_mutex_lock(&b->mu);
}

int weft__blocking_stop(struct weft_pool *p, int64_t deadline) {
  weft__blocking_t *b = &p->blocking;
  int rc = 0;
  pthread_mutex_lock(&b->mu);
  b->stop = true;
  pthread_cond_broadcast(&b->work);
  if (atomic_load_explicit(&p->cancelling, memory_order_acquire))
    discard_queue(p);
  while (b->alive > 0) {
    if (weft__cond_wait(&b->gone, &b->mu, deadline) == WEFT_ETIMEDOUT &&
        rc == 0 && b->alive > 0) {
      rc = WEFT_ETIMEDOUT; /* drain too slow: cancel the rest, then wait */
      atomic_store_explicit(&p->cancelling, true, memory_order_release);
      discard_queue(p);
      deadline = -1;
    }
  }
  reap(b);
  pthread_mutex_unlock(&b->mu);
  return rc;
}

void weft__blocking_stats(struct weft_pool *p, weft_pool_stats_t *s) {
  weft__blocking_t *b = &p->blocking;
  pthread_mutex_lock(&b->mu);
  s->blocking_run = b->run;
  s->blocking_alive = b->alive;
  s->blocking_peak = b->peak;
  pthread_mutex_unlock(&b->mu);
}
