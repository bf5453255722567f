/* SPDX-License-Identifier: MIT */
/* loop/blocking.c: the loop's own threads for blocking work (file
 * operations without an io_uring, name lookups), used when the loop was
 * given no `blocking` executor. Why not one weft_thread_executor: a lookup
 * that waits seconds for a resolver would hold every file read queued
 * behind it, and a thread executor's shutdown joins its thread, so the
 * loop's close would wait for that lookup. Here up to WEFT__LTHREADS_MAX
 * threads share one FIFO queue (a new one starts when none is idle), and
 * close leaves a thread still inside a call to end by itself. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

struct weft__lthreads {
  weft_executor_t ex;
  pthread_mutex_t mu;
  pthread_cond_t work; /* a task was queued, or stop */
  pthread_cond_t gone; /* (with stop) a thread left idleness or exited */
  weft_task_t *head, *tail;
  unsigned alive, idle, busy; /* busy: inside a task */
  unsigned refs; /* the loop's, until close, and one per thread alive */
  bool stop;
};

static void lthreads_free(weft__lthreads_t *t) {
  pthread_cond_destroy(&t->gone);
  pthread_cond_destroy(&t->work);
  pthread_mutex_destroy(&t->mu);
  weft__free(t, sizeof *t);
}

/* With t->mu held: drop a reference; true when it was the last. */
static bool lthreads_unref(weft__lthreads_t *t) { return --t->refs == 0; }

static void *lthread_main(void *arg) {
  weft__lthreads_t *t = arg;
  pthread_mutex_lock(&t->mu);
  for (;;) {
    weft_task_t *task = t->head;
    if (task != NULL) {
      t->head = task->next;
      if (t->head == NULL)
        t->tail = NULL;
      t->busy++;
      if (t->stop)
        pthread_cond_broadcast(&t->gone);
      pthread_mutex_unlock(&t->mu);
      task->run(task);
      pthread_mutex_lock(&t->mu);
      t->busy--;
      continue;
    }
    if (t->stop)
      break;
    t->idle++;
    while (t->head == NULL && !t->stop)
      pthread_cond_wait(&t->work, &t->mu);
    t->idle--;
  }
  t->alive--;
  bool last = lthreads_unref(t);
  pthread_cond_broadcast(&t->gone);
  pthread_mutex_unlock(&t->mu);
  if (last)
    lthreads_free(t);
  return NULL;
}

/* With t->mu held: start one more thread (detached: close never joins a
 * thread that may be blocked in a call). */
static int lthreads_spawn(weft__lthreads_t *t) {
  pthread_t th;
  if (weft__thread_create(&th, lthread_main, t) != 0)
    return WEFT_EAGAIN;
  pthread_detach(th);
  t->alive++;
  t->refs++;
  return 0;
}

static int lthreads_submit(weft_executor_t *ex, weft_task_t *task) {
  weft__lthreads_t *t = (weft__lthreads_t *)ex;
  pthread_mutex_lock(&t->mu);
  if (t->stop) {
    pthread_mutex_unlock(&t->mu);
    return WEFT_ESHUTDOWN;
  }
  if (t->idle == 0 && t->alive < WEFT__LTHREADS_MAX) {
    int rc = lthreads_spawn(t);
    if (rc != 0 && t->alive == 0) { /* nobody would ever run it */
      pthread_mutex_unlock(&t->mu);
      return rc;
    }
  }
  task->next = NULL;
  if (t->tail != NULL)
    t->tail->next = task;
  else
    t->head = task;
  t->tail = task;
  pthread_cond_signal(&t->work);
  pthread_mutex_unlock(&t->mu);
  return 0;
}

static const weft_executor_ops_t lthreads_ops = {sizeof(weft_executor_ops_t),
                                                 "loop-blocking",
                                                 lthreads_submit, NULL, NULL};

int weft__lthreads_create(weft__lthreads_t **out) {
  weft__lthreads_t *t = weft__malloc(sizeof *t);
  if (t == NULL)
    return WEFT_ENOMEM;
  memset(t, 0, sizeof *t);
  t->ex.ops = &lthreads_ops;
  t->refs = 1;
  if (pthread_mutex_init(&t->mu, NULL) != 0)
    goto fail_mu;
  if (weft__cond_init(&t->work) != 0)
    goto fail_work;
  if (weft__cond_init(&t->gone) != 0)
    goto fail_gone;
  *out = t;
  return 0;
fail_gone:
  pthread_cond_destroy(&t->work);
fail_work:
  pthread_mutex_destroy(&t->mu);
fail_mu:
  weft__free(t, sizeof *t);
  return WEFT_ENOMEM;
}

weft_executor_t *weft__lthreads_executor(weft__lthreads_t *t) { return &t->ex; }

void weft__lthreads_close(weft__lthreads_t *t) {
  pthread_mutex_lock(&t->mu);
  t->stop = true;
  pthread_cond_broadcast(&t->work);
  /* Idle threads wake, run what is queued and exit; a thread inside a task
   * is not waited for (it may be blocked in a call for long). */
  while (t->alive > t->busy)
    pthread_cond_wait(&t->gone, &t->mu);
  bool last = lthreads_unref(t);
  pthread_mutex_unlock(&t->mu);
  if (last)
    lthreads_free(t);
}

int weft__loop_blocking(weft_loop_t *loop, weft_executor_t **out) {
  if (loop->blocking != NULL) {
    *out = loop->blocking;
    return 0;
  }
  if (loop->own_blocking == NULL) {
    int rc = weft__lthreads_create(&loop->own_blocking);
    if (rc != 0)
      return rc;
  }
  *out = weft__lthreads_executor(loop->own_blocking);
  return 0;
}

void weft__lops_close(weft_loop_t *loop) {
  while (loop->lops != NULL) {
    weft__lop_t *l = loop->lops;
    weft__lop_unlink(loop, l);
    bool keep = l->release != NULL; /* (close may free one that is not) */
    l->close(l);
    if (keep) {
      l->next = loop->lops_dead;
      loop->lops_dead = l;
    }
    weft__loop_close_drain(loop);
  }
}

void weft__lops_release(weft_loop_t *loop) {
  while (loop->lops_dead != NULL) {
    weft__lop_t *l = loop->lops_dead;
    loop->lops_dead = l->next;
    l->release(l);
  }
}
