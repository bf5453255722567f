/* SPDX-License-Identifier: MIT */
/* pool/pool.c: CPU workers with work-stealing deques, outside submission
 * through per-worker inboxes, parking, await help, jobs as futures, and
 * shutdown. The blocking-job threads live in blocking.c. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

#define SPIN_ROUNDS 64    /* steal rounds before a worker parks */
#define DEQUE_INITIAL 256 /* grows on demand */
#define AWAIT_NEST_MAX 128 /* awaits on one worker's stack that take any work */

static _Thread_local weft__worker_t *tl_worker
    __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned tl_cursor
    __attribute__((tls_model("initial-exec")));

static inline void stat_inc(_Atomic uint64_t *c) { /* owner-only counter */
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* ---- jobs ---- */

static void job_run(weft_task_t *task);

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

bool weft__is_job(const weft_task_t *t) { return t->run == job_run; }

/* Run a job unless it was cancelled first; true when fn ran. A job still
 * running when its pool began cancelling ends cancelled, whatever it
 * returns (pool.h): the flag is read after fn, on the thread that may have
 * shown it to the job, so a job that saw weft_job_cancelled() never keeps
 * its value. */
static inline bool job_start(weft_task_t *task) {
  weft__job_t *job = (weft__job_t *)((char *)task - offsetof(weft__job_t, task));
  uintptr_t expect = WEFT__JOB_QUEUED, running = WEFT__JOB_RUNNING;
  weft__worker_t *w = tl_worker;
  bool ran = false;
  if (w != NULL && w->start_empty) { /* see weft__job_t.claim */
    w->start_empty = false;          /* not for jobs nested in this one */
    running |= (uintptr_t)w;
  }
  WEFT__PERTURB(); /* a cancel may claim the job first */
  if (atomic_compare_exchange_strong_explicit(&job->claim, &expect, running,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    weft__frame_t fr = {job, NULL};
    if (w != NULL) {
      fr.outer = w->frames;
      w->frames = &fr;
    }
    weft_result_t r = job->fn((weft_job_t *)job, job->arg);
    if (w != NULL)
      w->frames = fr.outer;
    if (atomic_load_explicit(&weft__job_pool(job)->cancelling,
                             memory_order_relaxed))
      weft_future_cancel(&job->ext.base); /* r then loses, and is freed */
    weft__settle_result(&job->ext.base, &r);
    ran = true;
  }
  weft__unref(&job->ext.base); /* the queue's reference */
  return ran;
}

static void job_run(weft_task_t *task) { (void)job_start(task); }

/* Cancel a job that will never run (shutdown in cancel mode). */
static void job_discard(weft_task_t *task) {
  weft__job_t *job = (weft__job_t *)((char *)task - offsetof(weft__job_t, task));
  weft_future_cancel(&job->ext.base);
  weft__unref(&job->ext.base);
}

int weft_job_cancelled(const weft_job_t *j) {
  const weft__job_t *job = (const weft__job_t *)j;
  if (job == NULL)
    return WEFT_EINVAL;
  return weft__state(&job->ext.base) == WEFT_CANCELLED ||
         atomic_load_explicit(&weft__job_pool(job)->cancelling,
                              memory_order_relaxed);
}

/* Job blocks (without an argument destructor) freed on a worker of their
 * pool are kept for its next spawns (fork-join frees and allocates one per
 * task); the rest go back to the allocator. */
#define CACHE_MAX 512

static void job_fini(weft__ext_t *e) {
  weft__job_t *job = (weft__job_t *)e;
  weft__worker_t *w = tl_worker;
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
  weft__worker_t *w = tl_worker;
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

static void cache_free(weft__worker_t *w) {
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
  weft__ext_init(&job->ext, job_fini, 2, 1);
  weft__ext_on_cancel(&job->ext, job_on_cancel, job);
  job->task.run = job_run;
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
static void job_abandon(weft__job_t *job) { job_fini(&job->ext); }

/* ---- where a task goes ---- */

/* What a closed inbox holds: shutdown's last drain leaves it, so an outside
 * submit that passed its stopping check too late is refused, not lost. */
static weft_task_t inbox_closed;

/* Push t; false (nothing pushed) once shutdown closed the inbox, which only
 * an outside submit can meet: workers have left by then. */
static bool inbox_push(weft__worker_t *w, weft_task_t *t) {
  weft_task_t *h = atomic_load_explicit(&w->inbox, memory_order_relaxed);
  WEFT__PERTURB();
  do {
    if (h == &inbox_closed)
      return false;
    t->next = h;
  } while (!atomic_compare_exchange_weak_explicit(
      &w->inbox, &h, t, memory_order_seq_cst, memory_order_relaxed));
  /* seq_cst: the publication weft__ec_notify_one() relies on, in place of a
   * fence (one full barrier per outside submit instead of two) */
  return true;
}

/* Take a whole inbox (any thread); returns the tasks newest first. The
 * peek is seq_cst (a plain load on x86): it is a parking worker's re-check,
 * see weft__ec_notify_one(). */
static weft_task_t *inbox_take(weft__worker_t *w) {
  if (atomic_load_explicit(&w->inbox, memory_order_seq_cst) == NULL)
    return NULL;
  WEFT__PERTURB();
  return atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
}

static int pool_enqueue(weft_pool_t *p, weft_task_t *t) {
  weft__worker_t *w = tl_worker;
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
    (void)inbox_push(w, t);
    weft__ec_notify_one(&p->ec);
    return 0;
  }
  if (atomic_load_explicit(&p->stopping, memory_order_acquire))
    return WEFT_ESHUTDOWN;
  WEFT__PERTURB(); /* shutdown may begin and drain here */
  if (!inbox_push(&p->workers[tl_cursor++ % p->nworkers], t))
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

/* ---- finding work ---- */

static inline uint64_t next_rand(weft__worker_t *w) {
  uint64_t x = w->rng; /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  w->rng = x;
  return x;
}

/* Move our inbox onto our deque (so thieves can share it). */
static weft_task_t *take_inbox(weft__worker_t *w, weft__worker_t *from) {
  /* Newest first, as pushed: one pass puts all but the oldest on our deque
   * newest first, so the owner pops them oldest first, and returns the
   * oldest to run now. (Reversing the list first walked every node twice,
   * each a cache miss on a node written by another core: a sixth of the
   * outside-offload benchmark.) */
  weft_task_t *list = inbox_take(from);
  if (list == NULL)
    return NULL;
  while (list->next != NULL) {
    weft_task_t *next = list->next;
    if (weft__deque_push(&w->deque, list) != 0)
      (void)inbox_push(w, list);
    list = next;
  }
  return list;
}

static weft_task_t *try_steal(weft__worker_t *w, bool full_scan) {
  weft_pool_t *p = w->pool;
  unsigned n = p->nworkers;
  if (n < 2)
    return NULL;
  unsigned start = (unsigned)(next_rand(w) % n);
  unsigned tries = full_scan ? n : (n < 4 ? n : 4);
  for (unsigned k = 0; k < tries; k++) {
    weft__worker_t *v = &p->workers[(start + k) % n];
    if (v == w)
      continue;
    weft_task_t *t;
    do
      t = weft__deque_steal(&v->deque);
    while (t == WEFT__STEAL_ABORT);
    if (t == NULL)
      t = take_inbox(w, v);
    if (t != NULL) {
      stat_inc(&w->steals);
      return t;
    }
  }
  return NULL;
}

static weft_task_t *find_work(weft__worker_t *w, bool full_scan) {
  weft_task_t *t = weft__deque_take(&w->deque);
  if (t == NULL)
    t = take_inbox(w, w);
  if (t == NULL)
    t = try_steal(w, full_scan);
  return t;
}

bool weft__run_or_discard(weft_pool_t *p, weft_task_t *t) {
  if (!weft__is_job(t)) {
    t->run(t);
    return true;
  }
  if (atomic_load_explicit(&p->cancelling, memory_order_relaxed)) {
    job_discard(t);
    return false;
  }
  return job_start(t);
}

static void run_task(weft__worker_t *w, weft_task_t *t) {
  if (weft__run_or_discard(w->pool, t))
    stat_inc(&w->jobs_run);
}

/* Run t, telling the job in it (if any) whether it starts on an empty
 * deque (weft__job_t.claim), and noting where our deque's bottom was: a
 * task pushed above it while t runs is t's descendant unless an await in t
 * took other work (see await_own). */
static void run_marked(weft__worker_t *w, weft_task_t *t) {
  int64_t b = atomic_load_explicit(&w->deque.bottom, memory_order_relaxed);
  int64_t outer = w->frame_bottom;
  w->start_empty =
      b <= atomic_load_explicit(&w->deque.top, memory_order_acquire);
  w->frame_bottom = b;
  run_task(w, t);
  w->frame_bottom = outer;
  w->start_empty = false;
}

static void *worker_main(void *arg) {
  weft__worker_t *w = arg;
  weft_pool_t *p = w->pool;
  tl_worker = w;
  weft_executor_t *prev = weft_executor_enter(&p->executor);
  weft__cpu_worker_runs();
  /* Searched or waited since the last task ran: the next task found hands
   * the search on first (weft__ec_handoff). */
  bool idle = false;
  for (;;) {
    weft_task_t *t = find_work(w, false);
    if (t == NULL) { /* search a while, counted, before sleeping */
      atomic_fetch_add_explicit(&p->ec.searching, 1, memory_order_seq_cst);
      for (int i = 0; t == NULL && i < SPIN_ROUNDS; i++) {
        cpu_relax();
        t = find_work(w, false);
      }
      atomic_fetch_sub_explicit(&p->ec.searching, 1, memory_order_seq_cst);
      WEFT__PERTURB();
      idle = true; /* searched: a producer may have left its wake to us */
    }
    if (t != NULL) {
      if (idle)
        weft__ec_handoff(&p->ec);
      idle = false;
      run_marked(w, t);
      continue;
    }
    /* before sleeping, back the pages a submitter will allocate next */
    if (weft__alloc_idle())
      continue;
    uint32_t epoch = weft__ec_prepare(&p->ec);
    WEFT__PERTURB(); /* announced, before the re-check */
    t = find_work(w, true);
    if (t != NULL) {
      weft__ec_cancel(&p->ec);
      weft__ec_handoff(&p->ec);
      idle = false;
      run_marked(w, t);
      continue;
    }
    if (atomic_load_explicit(&p->stopping, memory_order_acquire)) {
      weft__ec_cancel(&p->ec);
      break; /* nothing left anywhere we can see */
    }
    stat_inc(&w->parks);
    weft__cpu_worker_stops();
    weft__ec_wait(&p->ec, epoch);
    weft__cpu_worker_runs();
    idle = true;
  }
  weft__cpu_worker_stops();
  weft_executor_leave(prev);
  cache_free(w);
  tl_worker = NULL;
  pthread_mutex_lock(&p->mu);
  p->exited++;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ---- the pool as an executor ---- */

static int pool_ex_submit(weft_executor_t *ex, weft_task_t *task) {
  weft_pool_t *p = (weft_pool_t *)((char *)ex - offsetof(weft_pool_t, executor));
  return pool_enqueue(p, task);
}

/* f's claim word (weft__job_t.claim) if f is a job of p, else
 * WEFT__JOB_CANCELLED. */
static uintptr_t job_claim(weft_pool_t *p, weft_future_t *f) {
  struct weft_future *b = (struct weft_future *)f;
  uint32_t kind = atomic_load_explicit(&b->word, memory_order_relaxed) >>
                  WEFT__KIND_SHIFT;
  if (kind != WEFT__K_EXT || ((weft__ext_t *)b)->fini != job_fini)
    return WEFT__JOB_CANCELLED;
  weft__job_t *job = (weft__job_t *)b;
  if (weft__job_pool(job) != p)
    return WEFT__JOB_CANCELLED;
  return atomic_load_explicit(&job->claim, memory_order_acquire);
}

/* The worker running f, if f is a job of p that it started on an empty
 * deque (weft__job_t.claim); else NULL. */
static weft__worker_t *job_runner(weft_pool_t *p, weft_future_t *f) {
  uintptr_t c = job_claim(p, f);
  return (c & 3) == WEFT__JOB_RUNNING ? (weft__worker_t *)(c & ~(uintptr_t)3)
                                      : NULL;
}

/* Is f a job of p that some thread is running? */
static bool job_running(weft_pool_t *p, weft_future_t *f) {
  return (job_claim(p, f) & 3) == WEFT__JOB_RUNNING;
}

/* Put a task taken elsewhere on our own deque: we run it later. */
static void keep(weft__worker_t *w, weft_task_t *t) {
  if (weft__deque_push(&w->deque, t) != 0)
    (void)inbox_push(w, t);
}

/* Take a task from the deque of `runner`, the worker running the awaited
 * job (leapfrogging: while that job runs, its deque holds its
 * descendants). NULL when there is none, or when f settled meanwhile: the
 * task, maybe of the runner's next job, then goes on our own deque rather
 * than into this frame. */
static weft_task_t *leapfrog(weft__worker_t *w, weft__worker_t *runner,
                             weft_future_t *f) {
  weft_task_t *t;
  do
    t = weft__deque_steal(&runner->deque);
  while (t == WEFT__STEAL_ABORT);
  if (t != NULL && weft__state(f) != WEFT_PENDING) {
    keep(w, t);
    return NULL;
  }
  if (t != NULL)
    stat_inc(&w->steals);
  return t;
}

/* Is f a job running lower on w's own stack (or the awaiting job itself)?
 * It resumes only when every job above it returns, so an await for it on
 * top of it can never end. Walked only when an await has nothing to run. */
static bool below_on_stack(const weft__worker_t *w, const weft_future_t *f) {
  for (const weft__frame_t *fr = w->frames; fr != NULL; fr = fr->outer)
    if (&fr->job->ext.base == f)
      return true;
  return false;
}

/* Past AWAIT_NEST_MAX awaits on this stack: run only the awaiting task's
 * own descendants, the tasks above the deque bottom it started at (the
 * awaits nested in them are past the limit too, so they take nothing
 * else). Then block (WEFT_EAGAIN) if f is a job running somewhere, whose
 * runner makes progress; else refuse (pool.h). */
static int await_own(weft__worker_t *w, weft_future_t *f,
                     int64_t deadline_ns) {
  while (weft__state(f) == WEFT_PENDING) {
    if (deadline_ns >= 0 && weft_now_ns() >= deadline_ns)
      return WEFT_ETIMEDOUT;
    weft_task_t *t = NULL;
    if (atomic_load_explicit(&w->deque.bottom, memory_order_relaxed) >
        w->frame_bottom)
      t = weft__deque_take(&w->deque);
    if (t == NULL)
      break;
    run_marked(w, t);
  }
  if (weft__state(f) != WEFT_PENDING)
    return 0;
  return job_running(w->pool, f) && !below_on_stack(w, f) ? WEFT_EAGAIN
                                                          : WEFT_EDEADLK;
}

/* Wakes a worker parked in an await when the awaited future settles.
 * Attached to the future, it may outlive the await (a timeout): `state`
 * keeps it from touching the pool once the await has left. */
enum { AW_OFF = 0, AW_ARMED = 1, AW_FIRING = 2 };
typedef struct await_wake {
  weft_task_t task; /* on the future's list */
  _Atomic uint32_t refs; /* the awaiter's and the list's */
  _Atomic int state;
  weft__eventcount_t *ec;
  uint32_t bits;
} await_wake_t;

static void await_wake_put(await_wake_t *aw) {
  if (atomic_fetch_sub_explicit(&aw->refs, 1, memory_order_acq_rel) == 1)
    weft__free(aw, sizeof(*aw));
}

static void await_wake_fire(weft_task_t *task) {
  await_wake_t *aw = (await_wake_t *)task;
  int armed = AW_ARMED;
  WEFT__PERTURB(); /* the await may be leaving */
  if (atomic_compare_exchange_strong_explicit(&aw->state, &armed, AW_FIRING,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    weft__ec_wake_bits(aw->ec, aw->bits);
    atomic_store_explicit(&aw->state, AW_OFF, memory_order_release);
  }
  await_wake_put(aw);
}

/* The await is leaving: after this, the wake never touches the pool. */
static void await_wake_drop(await_wake_t *aw) {
  int armed = AW_ARMED;
  if (!atomic_compare_exchange_strong_explicit(&aw->state, &armed, AW_OFF,
                                               memory_order_acq_rel,
                                               memory_order_acquire))
    while (atomic_load_explicit(&aw->state, memory_order_acquire) ==
           AW_FIRING)
      cpu_relax(); /* one epoch bump and one futex call */
  await_wake_put(aw);
}

/* Nothing to run and f pending: sleep on the event count as an idle worker
 * does (a submit may wake us for its job), until f settles (our own bit)
 * or the deadline. Sets *woke after a wait: the caller then hands the
 * search on if it finds work or leaves, as worker_main does (parking.c).
 * Returns 0, or WEFT_ENOMEM. */
static int await_park(weft__worker_t *w, weft_future_t *f,
                      int64_t deadline_ns, await_wake_t **awp, bool *woke) {
  weft_pool_t *p = w->pool;
  if (*awp == NULL) {
    await_wake_t *aw = weft__malloc(sizeof(*aw));
    if (aw == NULL)
      return WEFT_ENOMEM;
    aw->task.run = await_wake_fire;
    atomic_init(&aw->refs, 2);
    atomic_init(&aw->state, AW_ARMED);
    aw->ec = &p->ec;
    aw->bits = weft__ec_worker_bit(w->index);
    if (!weft__attach(f, &aw->task)) { /* settled already */
      weft__free(aw, sizeof(*aw));
      return 0;
    }
    *awp = aw;
  }
  uint32_t epoch = weft__ec_prepare(&p->ec);
  WEFT__PERTURB();
  weft_task_t *t = NULL;
  if (weft__state(f) != WEFT_PENDING || (t = find_work(w, true)) != NULL) {
    weft__ec_cancel(&p->ec);
    weft__ec_handoff(&p->ec); /* we cleared `waking`: see parking.c */
    if (t != NULL)
      run_marked(w, t);
    return 0;
  }
  stat_inc(&w->parks);
  weft__cpu_worker_stops();
  weft__ec_wait_until(&p->ec, epoch, WEFT__EC_ANY | (*awp)->bits,
                      deadline_ns);
  weft__cpu_worker_runs();
  *woke = true;
  return 0;
}

/* Await on a worker (pool.h): run any pool work while f is pending: our
 * own deque and inbox first (our children), then the awaited job's
 * descendants on its runner's deque, then what any worker has queued or
 * was submitted from outside; sleep as an idle worker only when there is
 * none. */
static int await_help(weft__worker_t *w, weft_future_t *f,
                      int64_t deadline_ns) {
  weft__worker_t *runner = NULL;
  await_wake_t *aw = NULL;
  int idle = 0, rc = 0;
  /* Back from a wait: hand the search on before running a task or leaving,
   * not when we search on and park again (two awaiters would wake each
   * other in turn). */
  bool woke = false;
  while (weft__state(f) == WEFT_PENDING) {
    if (deadline_ns >= 0 && weft_now_ns() >= deadline_ns) {
      rc = WEFT_ETIMEDOUT;
      break;
    }
    weft_task_t *t = weft__deque_take(&w->deque);
    if (t == NULL)
      t = take_inbox(w, w);
    if (t == NULL && runner == NULL)
      runner = job_runner(w->pool, f);
    if (t == NULL && runner != NULL && runner != w)
      t = leapfrog(w, runner, f);
    if (t == NULL && (t = try_steal(w, false)) != NULL &&
        weft__state(f) != WEFT_PENDING) {
      keep(w, t); /* done meanwhile: run t after this frame, not in it */
      break;
    }
    if (t != NULL) {
      if (woke)
        weft__ec_handoff(&w->pool->ec);
      woke = false;
      idle = 0;
      run_marked(w, t);
      continue;
    }
    if (++idle <= SPIN_ROUNDS) {
      cpu_relax();
      continue;
    }
    if (below_on_stack(w, f)) {
      rc = WEFT_EDEADLK; /* f waits for us to return: sleeping never ends */
      break;
    }
    idle = 0;
    woke = false; /* searched, found nothing: parking again ends the chain */
    if ((rc = await_park(w, f, deadline_ns, &aw, &woke)) != 0)
      break;
  }
  if (woke)
    weft__ec_handoff(&w->pool->ec);
  if (aw != NULL)
    await_wake_drop(aw);
  return rc;
}

static int pool_ex_await(weft_executor_t *ex, weft_future_t *f,
                         int64_t deadline_ns) {
  weft_pool_t *p = (weft_pool_t *)((char *)ex - offsetof(weft_pool_t, executor));
  weft__worker_t *w = tl_worker;
  if (w == NULL || w->pool != p)
    return WEFT_EAGAIN;
  if (w->await_depth >= AWAIT_NEST_MAX)
    return await_own(w, f, deadline_ns);
  w->await_depth++;
  int rc = await_help(w, f, deadline_ns);
  w->await_depth--;
  return rc;
}

static const weft_executor_ops_t pool_ops = {
    sizeof(weft_executor_ops_t), "pool", pool_ex_submit, pool_ex_await};

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
  weft__free(p, sizeof(*p));
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
    if (opts->size < offsetof(weft_pool_options_t, reserved) ||
        opts->threads > 1024)
      return WEFT_EINVAL;
    o.threads = opts->threads;
    o.blocking_max = opts->blocking_max;
    o.blocking_keepalive_ms = opts->blocking_keepalive_ms;
  }
  weft_pool_t *p = weft__malloc(sizeof(*p));
  if (p == NULL)
    return WEFT_ENOMEM;
  memset(p, 0, sizeof(*p));
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
    if (weft__thread_create(&p->workers[started].thread, worker_main,
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
  if ((tl_worker != NULL && tl_worker->pool == p) || weft__blocking_own(p))
    return WEFT_EDEADLK;
  int64_t deadline = weft__deadline_after_ms(timeout_ms);
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
    list = weft__task_list_reverse(
        atomic_exchange_explicit(&w->inbox, &inbox_closed, memory_order_acq_rel));
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
