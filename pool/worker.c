/* SPDX-License-Identifier: MIT */
/* pool/worker.c: the CPU workers: finding work (own deque, own inbox,
 * stealing), running jobs, the worker thread's loop and its parking, and
 * await on a worker, which runs pool work while the awaited future is
 * pending. Submission, the life cycle and shutdown are in pool.c. */
#define _GNU_SOURCE
#include "internal.h"

#define SPIN_ROUNDS 64     /* steal rounds before a worker parks */
#define AWAIT_NEST_MAX 128 /* awaits on one worker's stack that take any work */

_Thread_local weft__worker_t *weft__tl_worker
    __attribute__((tls_model("initial-exec")));

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* ---- running jobs ---- */

bool weft__is_job(const weft_task_t *t) { return t->run == weft__job_run; }

/* Run a job unless it was cancelled first; true when fn ran. A job still
 * running when its pool began cancelling ends cancelled, whatever it
 * returns (pool.h): the flag is read after fn, on the thread that may have
 * shown it to the job, so a job that saw weft_job_is_cancelled() never keeps
 * its value. */
static inline bool job_start(weft_task_t *task) {
  weft__job_t *job = (weft__job_t *)((char *)task -
                                     offsetof(weft__job_t, task));
  uintptr_t expect = WEFT__JOB_QUEUED, running = WEFT__JOB_RUNNING;
  weft__worker_t *w = weft__tl_worker;
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

void weft__job_run(weft_task_t *task) { (void)job_start(task); }

/* Cancel a job that will never run (shutdown in cancel mode). */
static void job_discard(weft_task_t *task) {
  weft__job_t *job = (weft__job_t *)((char *)task -
                                     offsetof(weft__job_t, task));
  weft_future_cancel(&job->ext.base);
  weft__unref(&job->ext.base);
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

/* Take a whole inbox (any thread); returns the tasks newest first. The
 * peek is seq_cst (a plain load on x86): it is a parking worker's re-check,
 * see weft__ec_notify_one(). */
static weft_task_t *inbox_take(weft__worker_t *w) {
  if (atomic_load_explicit(&w->inbox, memory_order_seq_cst) == NULL)
    return NULL;
  WEFT__PERTURB();
  return atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
}

/* Move our inbox onto our deque (so thieves can share it). */
static weft_task_t *take_inbox(weft__worker_t *w, weft__worker_t *from) {
  /* Newest first, as pushed: one pass puts all but the oldest on our deque
   * newest first, so the owner pops them oldest first, and returns the
   * oldest to run now. One pass, not a reversal first: each node is a
   * cache miss on a block another core wrote (docs/design/pool.md). */
  weft_task_t *list = inbox_take(from);
  if (list == NULL)
    return NULL;
  while (list->next != NULL) {
    weft_task_t *next = list->next;
    if (weft__deque_push(&w->deque, list) != 0)
      (void)weft__inbox_push(w, list);
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
      weft__stat_inc(&w->steals);
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
    weft__stat_inc(&w->jobs_run);
}

/* Run t, telling the job in it (if any) whether it starts on an empty
 * deque (weft__job_t.claim), and noting where our deque's bottom was: a
 * task pushed above it while t runs is t's descendant unless an await in t
 * took other work (see await_own). */
static inline void run_marked(weft__worker_t *w, weft_task_t *t) {
  int64_t b = atomic_load_explicit(&w->deque.bottom, memory_order_relaxed);
  int64_t outer = w->frame_bottom;
  w->start_empty = b <=
                   atomic_load_explicit(&w->deque.top, memory_order_acquire);
  w->frame_bottom = b;
  run_task(w, t);
  w->frame_bottom = outer;
  w->start_empty = false;
}

void *weft__worker_main(void *arg) {
  weft__worker_t *w = arg;
  weft_pool_t *p = w->pool;
  weft__tl_worker = w;
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
    weft__stat_inc(&w->parks);
    weft__cpu_worker_stops();
    weft__ec_wait(&p->ec, epoch);
    weft__cpu_worker_runs();
    idle = true;
  }
  weft__cpu_worker_stops();
  weft_executor_leave(prev);
  weft__job_cache_free(w);
  weft__tl_worker = NULL;
  pthread_mutex_lock(&p->mu);
  p->exited++;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}
/* ---- await on a worker ---- */

/* f's claim word (weft__job_t.claim) if f is a job of p, else
 * WEFT__JOB_CANCELLED. */
static uintptr_t job_claim(weft_pool_t *p, weft_future_t *f) {
  struct weft_future *b = (struct weft_future *)f;
  uint32_t kind = atomic_load_explicit(&b->word, memory_order_relaxed) >>
                  WEFT__KIND_SHIFT;
  if (kind != WEFT__K_EXT || ((weft__ext_t *)b)->fini != weft__job_fini)
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
    (void)weft__inbox_push(w, t);
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
    weft__stat_inc(&w->steals);
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
static int await_own(weft__worker_t *w, weft_future_t *f, int64_t deadline_ns) {
  while (weft__state(f) == WEFT_PENDING) {
    if (deadline_ns >= 0 && weft_clock_now_ns() >= deadline_ns)
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
  weft_task_t task;      /* on the future's list */
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
    while (atomic_load_explicit(&aw->state, memory_order_acquire) == AW_FIRING)
      cpu_relax(); /* one epoch bump and one futex call */
  await_wake_put(aw);
}

/* Nothing to run and f pending: sleep on the event count as an idle worker
 * does (a submit may wake us for its job), until f settles (our own bit)
 * or the deadline. Sets *woke after a wait: the caller then hands the
 * search on if it finds work or leaves, as worker_main does (parking.c).
 * Returns 0, or WEFT_ENOMEM. */
static int await_park(weft__worker_t *w, weft_future_t *f, int64_t deadline_ns,
                      await_wake_t **awp, bool *woke) {
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
  weft__stat_inc(&w->parks);
  weft__cpu_worker_stops();
  weft__ec_wait_until(&p->ec, epoch, WEFT__EC_ANY | (*awp)->bits, deadline_ns);
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
    if (deadline_ns >= 0 && weft_clock_now_ns() >= deadline_ns) {
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

int weft__pool_ex_await(weft_executor_t *ex, weft_future_t *f,
                        int64_t deadline_ns) {
  weft_pool_t *p = (weft_pool_t *)((char *)ex -
                                   offsetof(weft_pool_t, executor));
  weft__worker_t *w = weft__tl_worker;
  if (w == NULL || w->pool != p)
    return WEFT_EAGAIN;
  if (w->await_depth >= AWAIT_NEST_MAX)
    return await_own(w, f, deadline_ns);
  w->await_depth++;
  int rc = await_help(w, f, deadline_ns);
  w->await_depth--;
  return rc;
}
