/* SPDX-License-Identifier: MIT */
/* lib/executor.c: the executor interface, the inline executor and its
 * per-thread trampoline, dedicated-thread executors, waiters and the clock. */
#define _GNU_SOURCE
#include "internal.h"

#include <signal.h>

#include <errno.h>
#include <time.h>

#define WEFT__TLS __attribute__((tls_model("initial-exec")))

int64_t weft_clock_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft__deadline_after_ms(int64_t timeout_ms) {
  if (timeout_ms < 0)
    return -1;
  int64_t now = weft_clock_now_ns();
  if (timeout_ms > (INT64_MAX - now) / 1000000)
    return INT64_MAX; /* past the clock's range: as good as never */
  return now + timeout_ms * 1000000;
}

int weft_executor_submit(weft_executor_t *ex, weft_task_t *task) {
  if (ex == NULL || ex->ops == NULL || ex->ops->submit == NULL ||
      task == NULL || task->run == NULL)
    return WEFT_EINVAL;
  return ex->ops->submit(ex, task);
}

/* ---- the calling thread's current executor ---- */

static _Thread_local weft_executor_t *tl_current WEFT__TLS;

weft_executor_t *weft_executor_enter(weft_executor_t *ex) {
  weft_executor_t *prev = tl_current;
  tl_current = ex;
  return prev;
}

void weft_executor_leave(weft_executor_t *previous) { tl_current = previous; }

weft_executor_t *weft_executor_current(void) { return tl_current; }

/* ---- inline executor: a FIFO trampoline per thread ---- */

static _Thread_local struct {
  weft_task_t *head;
  weft_task_t *tail;
  int draining;
} tl_tramp WEFT__TLS;

static weft_task_t *tramp_pop(void) {
  weft_task_t *t = tl_tramp.head;
  if (t != NULL) {
    tl_tramp.head = t->next;
    if (tl_tramp.head == NULL)
      tl_tramp.tail = NULL;
  }
  return t;
}

void weft__defer(weft_task_t *task) {
  task->next = NULL;
  weft__defer_list(task, task);
}

void weft__defer_list(weft_task_t *first, weft_task_t *last) {
  if (tl_tramp.tail != NULL)
    tl_tramp.tail->next = first;
  else
    tl_tramp.head = first;
  tl_tramp.tail = last;
  if (tl_tramp.draining)
    return;
  tl_tramp.draining = 1;
  weft_task_t *t;
  while ((t = tramp_pop()) != NULL)
    t->run(t);
  tl_tramp.draining = 0;
}

bool weft__trampoline_help(void) {
  weft_task_t *t = tramp_pop();
  if (t == NULL)
    return false;
  t->run(t);
  return true;
}

bool weft__trampoline_idle(void) { return tl_tramp.head == NULL; }

static int inline_submit(weft_executor_t *ex, weft_task_t *task) {
  (void)ex;
  weft__defer(task);
  return 0;
}

static const weft_executor_ops_t inline_ops = {sizeof(weft_executor_ops_t),
                                               "inline", inline_submit, NULL,
                                               NULL};
weft_executor_t weft__inline_executor = {&inline_ops};

weft_executor_t *weft_executor_inline(void) { return &weft__inline_executor; }

/* ---- waiters ---- */

int weft__cond_init(pthread_cond_t *cv) {
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0)
    return WEFT_ENOMEM;
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(cv, &attr);
  pthread_condattr_destroy(&attr);
  return rc == 0 ? 0 : WEFT_ENOMEM;
}

int weft__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                    int64_t deadline_ns) {
  if (deadline_ns < 0) {
    pthread_cond_wait(cv, mu);
    return 0;
  }
  if (weft_clock_now_ns() >= deadline_ns)
    return WEFT_ETIMEDOUT;
  struct timespec ts = {(time_t)(deadline_ns / 1000000000),
                        (long)(deadline_ns % 1000000000)};
  return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT ? WEFT_ETIMEDOUT : 0;
}

static void waiter_wake(weft_task_t *task) {
  weft__waiter_t *w = (weft__waiter_t *)task;
  pthread_mutex_lock(w->mu);
  atomic_store_explicit(&w->done, 1, memory_order_release);
  pthread_cond_broadcast(w->cv);
  pthread_mutex_unlock(w->mu);
  weft__waiter_put(w);
}

weft__waiter_t *weft__waiter_new(pthread_mutex_t *mu, pthread_cond_t *cv) {
  weft__waiter_t *w = weft__malloc(sizeof(*w));
  if (w == NULL)
    return NULL;
  w->task.next = NULL;
  w->task.run = waiter_wake;
  atomic_init(&w->refs, 2);
  atomic_init(&w->done, 0);
  if (mu == NULL) {
    if (pthread_mutex_init(&w->own_mu, NULL) != 0)
      goto fail_mu;
    if (weft__cond_init(&w->own_cv) != 0)
      goto fail_cv;
    mu = &w->own_mu;
    cv = &w->own_cv;
  }
  w->mu = mu;
  w->cv = cv;
  w->owner_put = NULL;
  w->owner = NULL;
  return w;
fail_cv:
  pthread_mutex_destroy(&w->own_mu);
fail_mu:
  weft__free(w, sizeof(*w));
  return NULL;
}

void weft__waiter_put(weft__waiter_t *w) {
  WEFT__PERTURB();
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (w->mu == &w->own_mu) {
    pthread_cond_destroy(&w->own_cv);
    pthread_mutex_destroy(&w->own_mu);
  }
  if (w->owner_put != NULL)
    w->owner_put(w->owner);
  weft__free(w, sizeof(*w));
}

/* ---- dedicated-thread executor ---- */

struct weft_thread_executor {
  weft_executor_t base;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  weft_task_t *head;
  weft_task_t *tail;
  bool stopping;
  pthread_t thread;
  /* 1 for the owner, 1 per await waiter still on a future's list (a waiter
   * that timed out still signals te->cv when its future settles), 1 per
   * fiber spawned on it and not yet ended (its submit reads te). */
  _Atomic uint32_t refs;
};

static void te_free(weft_thread_executor_t *te) {
  pthread_cond_destroy(&te->cv);
  pthread_mutex_destroy(&te->mu);
  weft__free(te, sizeof(*te));
}

static void te_put(void *arg) {
  weft_thread_executor_t *te = arg;
  WEFT__PERTURB();
  if (atomic_fetch_sub_explicit(&te->refs, 1, memory_order_acq_rel) == 1)
    te_free(te);
}

static weft_task_t *te_pop(weft_thread_executor_t *te) {
  weft_task_t *t = te->head;
  if (t != NULL) {
    te->head = t->next;
    if (te->head == NULL)
      te->tail = NULL;
  }
  return t;
}

/* With te->mu held: run the oldest queued task (unlocked while it runs).
 * Returns false when the queue is empty. */
static bool te_run_one(weft_thread_executor_t *te) {
  weft_task_t *t = te_pop(te);
  if (t == NULL)
    return false;
  pthread_mutex_unlock(&te->mu);
  t->run(t);
  pthread_mutex_lock(&te->mu);
  return true;
}

/* The executor whose thread this is (set by te_main): not te->thread,
 * whose id glibc hands to the next thread created once te's is joined. */
static _Thread_local weft_thread_executor_t *tl_te WEFT__TLS;

static bool te_on_own_thread(weft_thread_executor_t *te) { return tl_te == te; }

static int te_submit(weft_executor_t *ex, weft_task_t *task) {
  weft_thread_executor_t *te = (weft_thread_executor_t *)ex;
  pthread_mutex_lock(&te->mu);
  if (te->stopping && !te_on_own_thread(te)) {
    pthread_mutex_unlock(&te->mu);
    return WEFT_ESHUTDOWN;
  }
  task->next = NULL;
  bool was_empty = te->head == NULL;
  if (te->tail != NULL)
    te->tail->next = task;
  else
    te->head = task;
  te->tail = task;
  if (was_empty)
    pthread_cond_broadcast(&te->cv);
  pthread_mutex_unlock(&te->mu);
  return 0;
}

/* Await on the executor's own thread: run queued tasks until f settles. */
static int te_await(weft_executor_t *ex, weft_future_t *f,
                    int64_t deadline_ns) {
  weft_thread_executor_t *te = (weft_thread_executor_t *)ex;
  if (!te_on_own_thread(te))
    return WEFT_EAGAIN;
  weft__waiter_t *w = weft__waiter_new(&te->mu, &te->cv);
  if (w == NULL)
    return WEFT_ENOMEM;
  atomic_fetch_add_explicit(&te->refs, 1, memory_order_relaxed);
  w->owner_put = te_put;
  w->owner = te;
  if (!weft__attach(f, &w->task)) {
    weft__waiter_put(w);
    weft__waiter_put(w);
    return 0;
  }
  int rc = 0;
  pthread_mutex_lock(&te->mu);
  while (!atomic_load_explicit(&w->done, memory_order_acquire)) {
    if (te_run_one(te))
      continue;
    if (weft__cond_wait(&te->cv, &te->mu, deadline_ns) == WEFT_ETIMEDOUT &&
        !atomic_load_explicit(&w->done, memory_order_acquire)) {
      rc = WEFT_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&te->mu);
  weft__waiter_put(w);
  return rc;
}

static void te_hold(weft_executor_t *ex, int delta) {
  weft_thread_executor_t *te = (weft_thread_executor_t *)ex;
  if (delta > 0)
    atomic_fetch_add_explicit(&te->refs, 1, memory_order_relaxed);
  else
    te_put(te);
}

static const weft_executor_ops_t te_ops = {sizeof(weft_executor_ops_t),
                                           "thread", te_submit, te_await,
                                           te_hold};

static void *te_main(void *arg) {
  weft_thread_executor_t *te = arg;
  tl_te = te;
  weft_executor_t *prev = weft_executor_enter(&te->base);
  pthread_mutex_lock(&te->mu);
  for (;;) {
    if (te_run_one(te))
      continue;
    if (te->stopping)
      break;
    pthread_cond_wait(&te->cv, &te->mu);
  }
  pthread_mutex_unlock(&te->mu);
  weft_executor_leave(prev);
  return NULL;
}

int weft_thread_executor_create(weft_thread_executor_t **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  weft_thread_executor_t *te = weft__malloc(sizeof(*te));
  if (te == NULL)
    return WEFT_ENOMEM;
  te->base.ops = &te_ops;
  te->head = te->tail = NULL;
  te->stopping = false;
  atomic_init(&te->refs, 1);
  int rc = WEFT_ENOMEM;
  if (pthread_mutex_init(&te->mu, NULL) != 0)
    goto fail_mu;
  if (weft__cond_init(&te->cv) != 0)
    goto fail_cv;
  if (weft__thread_create(&te->thread, te_main, te) != 0) {
    rc = WEFT_EAGAIN;
    goto fail_thread;
  }
  *out = te;
  return 0;
fail_thread:
  pthread_cond_destroy(&te->cv);
fail_cv:
  pthread_mutex_destroy(&te->mu);
fail_mu:
  weft__free(te, sizeof(*te));
  return rc;
}

weft_executor_t *weft_thread_executor_get(weft_thread_executor_t *te) {
  return te == NULL ? NULL : &te->base;
}

int weft_thread_executor_shutdown(weft_thread_executor_t *te) {
  if (te == NULL)
    return WEFT_EINVAL;
  if (te_on_own_thread(te))
    return WEFT_EDEADLK;
  pthread_mutex_lock(&te->mu);
  te->stopping = true;
  pthread_cond_broadcast(&te->cv);
  pthread_mutex_unlock(&te->mu);
  pthread_join(te->thread, NULL);
  te_put(te);
  return 0;
}

int weft__thread_create(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  /* (a fault's signal is delivered to the faulting thread whatever its
   * mask, by force when blocked: leave it open to the handlers, a fiber
   * stack overflow report among them) */
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = WEFT__SYS_RET("pthread_create", pthread_create(t, NULL, fn, arg));
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}
