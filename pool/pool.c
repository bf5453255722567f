/* SPDX-License-Identifier: MIT */
/* pool/pool.c: the pool's jobs (futures with their producer in one
 * allocation, and a per-worker cache of their blocks), submission through
 * the submitter's deque or a worker's inbox, the life cycle and shutdown.
 * The workers are in worker.c, the blocking-job threads in blocking.c. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

#define DEQUE_INITIAL 256 /* grows on demand */

static _Thread_local unsigned tl_cursor
    __attribute__((tls_model("initial-exec")));

/* ---- jobs ---- */

static void job_on_cancel(void *arg) {
  weft__job_t *job = arg;
  uintptr_t expect = WEFT__JOB_QUEUED;
  WEFT__PERTURB();
  if (atomic_compare_exchange_strong_explicit(&job->claim, &expect,
                                              WEFT__JOB_CANCELLED,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    if (job->pool & WEFT__JOB_DTOR)
      job->arg_dtor(job->arg);
    atomic_fetch_add_explicit(&weft__job_pool(job)->cancelled, 1,
                              memory_order_relaxed);
  }
}

bool weft_job_is_cancelled(const weft_job_t *j) {
  const weft__job_t *job = (const weft__job_t *)j;
  if (job == NULL)
    return false;
  return weft__state(&job->ext.base) == WEFT_CANCELLED ||
         atomic_load_explicit(&weft__job_pool(job)->cancelling,
                              memory_order_relaxed);
}

/* Job blocks (without an argument destructor) freed on a worker of their
 * pool are kept for its next spawns (fork-join frees and allocates one per
 * task); the rest go back to the allocator. */
#define CACHE_MAX 512

void weft__job_fini(weft__ext_t *e) {
  weft__job_t *job = (weft__job_t *)e;
  weft__worker_t *w = weft__tl_worker;
  if (job->pool & WEFT__JOB_DTOR) {
    weft__free(job, sizeof(*job));
    return;
  }
  if (w != NULL && w->pool == weft__job_pool(job) &&
      w->cache_count < CACHE_MAX) {
    *(void **)job = w->cache;
    WEFT__POISON(job, WEFT__JOB_SHORT); /* free: any use is a sanitizer error */
    w->cache = job;
    w->cache_count++;
    return;
  }
  weft__free(job, WEFT__JOB_SHORT);
}

static weft__job_t *job_alloc(weft_pool_t *pool, bool dtor) {
  weft__worker_t *w = weft__tl_worker;
  if (dtor)
    return weft__malloc(sizeof(weft__job_t));
  if (w != NULL && w->pool == pool && w->cache != NULL) {
    weft__job_t *job = w->cache;
    WEFT__UNPOISON(job, WEFT__JOB_SHORT);
    w->cache = *(void **)job;
    w->cache_count--;
    return job;
  }
  return weft__malloc(WEFT__JOB_SHORT);
}

void weft__job_cache_free(weft__worker_t *w) {
  while (w->cache != NULL) {
    WEFT__UNPOISON(w->cache, WEFT__JOB_SHORT);
    void *next = *(void **)w->cache;
    weft__free(w->cache, WEFT__JOB_SHORT);
    w->cache = next;
  }
  w->cache_count = 0;
}

static int job_new(weft_pool_t *pool, weft_job_fn fn, void *arg,
                   weft_dtor_fn arg_dtor, weft__job_t **out) {
  if (pool == NULL || fn == NULL)
    return WEFT_EINVAL;
  weft__job_t *job = job_alloc(pool, arg_dtor != NULL);
  if (job == NULL)
    return WEFT_ENOMEM;
  /* refs: the caller's handle and the queue; needs: the handle */
  weft__ext_init(&job->ext, weft__job_fini, 2, 1);
  weft__ext_on_cancel(&job->ext, job_on_cancel, job);
  job->task.run = weft__job_run;
  job->fn = fn;
  job->arg = arg;
  job->pool = (uintptr_t)pool;
  if (arg_dtor != NULL) {
    job->pool |= WEFT__JOB_DTOR;
    job->arg_dtor = arg_dtor;
  }
  atomic_init(&job->claim, WEFT__JOB_QUEUED);
  *out = job;
  return 0;
}

/* Undo job_new() when the job could not be queued: arg is untouched. */
static void job_abandon(weft__job_t *job) { weft__job_fini(&job->ext); }

/* ---- where a task goes ---- */

/* What a closed inbox holds: shutdown's last drain leaves it, so an outside
 * submit that passed its stopping check too late is refused, not lost. */
weft_task_t weft__inbox_closed;

static int pool_enqueue(weft_pool_t *p, weft_task_t *t) {
  weft__worker_t *w = weft__tl_worker;
  if (w != NULL && w->pool == p) {
    if (atomic_load_explicit(&p->cancelling, memory_order_relaxed))
      return WEFT_ESHUTDOWN;
    if (weft__deque_push(&w->deque, t) == 0) {
      /* This worker runs its own deque in the end, so a sleeper missed here
       * costs parallelism, never progress: skip the fence. */
      weft__ec_notify_if_sleepers(&p->ec);
      return 0;
    }
    /* the deque could not grow: fall back to our inbox (no allocation) */
    (void)weft__inbox_push(w, t);
    weft__ec_notify_one(&p->ec);
    return 0;
  }
  if (atomic_load_explicit(&p->stopping, memory_order_acquire))
    return WEFT_ESHUTDOWN;
  WEFT__PERTURB(); /* shutdown may begin and drain here */
  if (!weft__inbox_push(&p->workers[tl_cursor++ % p->nworkers], t))
    return WEFT_ESHUTDOWN;
  WEFT__PERTURB(); /* between publishing and looking for a sleeper */
  weft__ec_notify_one(&p->ec);
  return 0;
}

static int submit_job(weft_pool_t *pool, weft_job_fn fn, void *arg,
                      weft_dtor_fn arg_dtor, weft_future_t **out,
                      bool blocking) {
  if (out == NULL)
    return WEFT_EINVAL;
  weft__job_t *job;
  int rc = job_new(pool, fn, arg, arg_dtor, &job);
  if (rc != 0)
    return rc;
  rc = blocking ? weft__blocking_enqueue(pool, &job->task)
                : pool_enqueue(pool, &job->task);
  if (rc != 0) {
    job_abandon(job);
    return rc;
  }
  *out = &job->ext.base;
  return 0;
}

int weft_pool_submit(weft_pool_t *pool, weft_job_fn fn, void *arg,
                     weft_dtor_fn arg_dtor, weft_future_t **out) {
  return submit_job(pool, fn, arg, arg_dtor, out, false);
}

int weft_pool_submit_blocking(weft_pool_t *pool, weft_job_fn fn, void *arg,
                              weft_dtor_fn arg_dtor, weft_future_t **out) {
  return submit_job(pool, fn, arg, arg_dtor, out, true);
}

/* ---- the pool as an executor ---- */

static int pool_ex_submit(weft_executor_t *ex, weft_task_t *task) {
  weft_pool_t *p = (weft_pool_t *)((char *)ex -
                                   offsetof(weft_pool_t, executor));
  return pool_enqueue(p, task);
}

static void pool_put(weft_pool_t *p) {
  if (atomic_fetch_sub_explicit(&p->holds, 1, memory_order_acq_rel) == 1)
    weft__free(p, sizeof(*p));
}

static void pool_ex_hold(weft_executor_t *ex, int delta) {
  weft_pool_t *p = (weft_pool_t *)((char *)ex -
                                   offsetof(weft_pool_t, executor));
  if (delta > 0)
    atomic_fetch_add_explicit(&p->holds, 1, memory_order_relaxed);
  else
    pool_put(p);
}

static const weft_executor_ops_t pool_ops = {sizeof(weft_executor_ops_t),
                                             "pool", pool_ex_submit,
                                             weft__pool_ex_await, pool_ex_hold};

weft_executor_t *weft_pool_executor(weft_pool_t *pool) {
  return pool == NULL ? NULL : &pool->executor;
}

/* ---- life cycle ---- */

static void free_pool(weft_pool_t *p, unsigned deques) {
  for (unsigned i = 0; i < deques; i++)
    weft__deque_destroy(&p->workers[i].deque);
  weft__blocking_fini(p);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  weft__free(p->workers, p->nworkers * sizeof(weft__worker_t));
  pool_put(p);
}

static int join_started(weft_pool_t *p, unsigned started) {
  atomic_store_explicit(&p->stopping, true, memory_order_release);
  weft__ec_notify_all(&p->ec);
  for (unsigned i = 0; i < started; i++)
    pthread_join(p->workers[i].thread, NULL);
  return 0;
}

unsigned weft_cpu_count(void) { return weft__cpu_count(); }

int weft_pool_create(const weft_pool_options_t *opts, weft_pool_t **out) {
  weft_pool_options_t o = {sizeof(o), 0, 0, 0, {0}};
  if (out == NULL)
    return WEFT_EINVAL;
  if (opts != NULL) {
    size_t known = offsetof(weft_pool_options_t, reserved);
    int rc = weft__struct_check(opts, opts->size, known, known);
    if (rc != 0)
      return rc;
    if (opts->threads > 1024)
      return WEFT_EINVAL;
    o.threads = opts->threads;
    o.blocking_max = opts->blocking_max;
    o.blocking_keepalive_ms = opts->blocking_keepalive_ms;
  }
  weft_pool_t *p = weft__malloc(sizeof(*p));
  if (p == NULL)
    return WEFT_ENOMEM;
  memset(p, 0, sizeof(*p));
  atomic_init(&p->holds, 1);
  p->executor.ops = &pool_ops;
  p->nworkers = o.threads ? o.threads : weft_cpu_count();
  p->workers = weft__malloc(p->nworkers * sizeof(weft__worker_t));
  if (p->workers == NULL) {
    weft__free(p, sizeof(*p));
    return WEFT_ENOMEM;
  }
  memset(p->workers, 0, p->nworkers * sizeof(weft__worker_t));
  int rc = WEFT_ENOMEM;
  if (pthread_mutex_init(&p->mu, NULL) != 0)
    goto fail_mu;
  if (weft__cond_init(&p->cv) != 0)
    goto fail_cv;
  if (weft__blocking_init(p, o.blocking_max ? o.blocking_max : 64,
                          o.blocking_keepalive_ms ? o.blocking_keepalive_ms
                                                  : 10000) != 0)
    goto fail_blocking;
  unsigned deques = 0;
  for (; deques < p->nworkers; deques++) {
    weft__worker_t *w = &p->workers[deques];
    w->pool = p;
    w->index = deques;
    w->rng = 0x9E3779B97F4A7C15ull * (deques + 1);
    if (weft__deque_init(&w->deque, DEQUE_INITIAL) != 0)
      goto fail_deques;
  }
  unsigned started = 0;
  for (; started < p->nworkers; started++)
    if (weft__thread_create(&p->workers[started].thread, weft__worker_main,
                            &p->workers[started]) != 0) {
      rc = WEFT_EAGAIN;
      join_started(p, started);
      goto fail_deques;
    }
  *out = p;
  return 0;
fail_deques:
  for (unsigned i = 0; i < deques; i++)
    weft__deque_destroy(&p->workers[i].deque);
  weft__blocking_fini(p);
fail_blocking:
  pthread_cond_destroy(&p->cv);
fail_cv:
  pthread_mutex_destroy(&p->mu);
fail_mu:
  weft__free(p->workers, p->nworkers * sizeof(weft__worker_t));
  weft__free(p, sizeof(*p));
  return rc;
}

int weft_pool_stats(weft_pool_t *p, weft_pool_stats_t *s) {
  if (p == NULL || s == NULL)
    return WEFT_EINVAL;
  memset(s, 0, sizeof(*s));
  for (unsigned i = 0; i < p->nworkers; i++) {
    weft__worker_t *w = &p->workers[i];
    s->jobs_run += atomic_load_explicit(&w->jobs_run, memory_order_relaxed);
    s->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
    s->parks += atomic_load_explicit(&w->parks, memory_order_relaxed);
  }
  s->cancelled = atomic_load_explicit(&p->cancelled, memory_order_relaxed);
  s->threads = p->nworkers;
  weft__blocking_stats(p, s);
  return 0;
}

static bool wait_exited(weft_pool_t *p, int64_t deadline) {
  bool all = true;
  pthread_mutex_lock(&p->mu);
  while (p->exited < p->nworkers)
    if (weft__cond_wait(&p->cv, &p->mu, deadline) == WEFT_ETIMEDOUT &&
        p->exited < p->nworkers) {
      all = false;
      break;
    }
  pthread_mutex_unlock(&p->mu);
  return all;
}

int weft_pool_shutdown(weft_pool_t *p, weft_pool_mode_t mode,
                       int64_t timeout_ms, weft_pool_stats_t *final) {
  if (p == NULL || (mode != WEFT_POOL_DRAIN && mode != WEFT_POOL_CANCEL) ||
      timeout_ms < -1)
    return WEFT_EINVAL;
  if ((weft__tl_worker != NULL && weft__tl_worker->pool == p) ||
      weft__blocking_own(p))
    return WEFT_EDEADLK;
  /* The timeout is a drain's; a cancel waits for running jobs however
   * long they take (they cannot be interrupted) and is no timeout. */
  int64_t deadline = mode == WEFT_POOL_CANCEL
                         ? -1
                         : weft__deadline_after_ms(timeout_ms);
  int rc = 0;
  if (mode == WEFT_POOL_CANCEL)
    atomic_store_explicit(&p->cancelling, true, memory_order_release);
  atomic_store_explicit(&p->stopping, true, memory_order_release);
  weft__ec_notify_all(&p->ec);
  if (!wait_exited(p, deadline)) { /* drain ran out of time: cancel */
    rc = WEFT_ETIMEDOUT;
    atomic_store_explicit(&p->cancelling, true, memory_order_release);
    weft__ec_notify_all(&p->ec);
    wait_exited(p, -1);
  }
  for (unsigned i = 0; i < p->nworkers; i++)
    pthread_join(p->workers[i].thread, NULL);
  /* A submit that passed its stopping check just before shutdown began can
   * land after the workers left: run (or cancel) it here, never lose it.
   * Closing each inbox as it is taken refuses any later one. */
  for (unsigned i = 0; i < p->nworkers; i++) {
    weft__worker_t *w = &p->workers[i];
    weft_task_t *t, *list;
    while ((t = weft__deque_take(&w->deque)) != NULL)
      weft__run_or_discard(p, t);
    list = weft__task_list_reverse(atomic_exchange_explicit(
        &w->inbox, &weft__inbox_closed, memory_order_acq_rel));
    for (t = list; t != NULL; t = list) {
      list = t->next;
      weft__run_or_discard(p, t);
    }
  }
  if (weft__blocking_stop(p, deadline) != 0)
    rc = WEFT_ETIMEDOUT;
  if (final != NULL)
    weft_pool_stats(p, final);
  free_pool(p, p->nworkers);
  return rc;
}
