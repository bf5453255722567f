/* SPDX-License-Identifier: MIT */
/* pool/internal.h: private structures of the work-stealing pool. Never
 * installed, never included by a public header. */
#ifndef WEFT_POOL_INTERNAL_H
#define WEFT_POOL_INTERNAL_H

#include "../lib/internal.h"

#include <weft/pool.h>

/* ---- Chase-Lev deque (deque.c), orderings after Le et al., PPoPP 2013 ---- */
typedef struct weft__ring {
  size_t mask;
  struct weft__ring *retired; /* older rings, freed with the deque */
  _Atomic(weft_task_t *) slot[];
} weft__ring_t;

typedef struct weft__deque {
  _Atomic int64_t top;
  char pad_[56];
  _Atomic int64_t bottom;
  _Atomic(weft__ring_t *) ring;
} weft__deque_t;

#define WEFT__STEAL_ABORT ((weft_task_t *)(uintptr_t)1)

WEFT__HIDDEN int weft__deque_init(weft__deque_t *d, size_t capacity);
WEFT__HIDDEN void weft__deque_destroy(weft__deque_t *d);
/* A bigger ring holding old's tasks [t, b), or NULL (no memory). */
WEFT__HIDDEN weft__ring_t *weft__deque_grow(weft__deque_t *d, weft__ring_t *old,
                                            int64_t t, int64_t b);
/* Push and take run once or twice per job: inline here, not a call into
 * deque.c. */
/* Owner only. Returns 0 or WEFT_ENOMEM (the ring could not grow). */
static inline int weft__deque_push(weft__deque_t *d, weft_task_t *t) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  int64_t top = atomic_load_explicit(&d->top, memory_order_acquire);
  weft__ring_t *r = atomic_load_explicit(&d->ring, memory_order_relaxed);
  if (b - top > (int64_t)r->mask) {
    r = weft__deque_grow(d, r, top, b);
    if (r == NULL)
      return WEFT_ENOMEM;
  }
  atomic_store_explicit(&r->slot[b & (int64_t)r->mask], t,
                        memory_order_relaxed);
  /* release: a thief that sees the new bottom sees the task (the paper's
   * release fence, expressed on the store so that TSan understands it) */
  WEFT__PERTURB();
  atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
  return 0;
}

/* Owner only: newest task, or NULL. (Not inlined under GCC's TSan, which
 * rejects an inlined atomic_thread_fence, -Wtsan; out of line the fence is
 * accepted. TSan does not model the fence either way.) */
#if defined(__SANITIZE_THREAD__)
__attribute__((noinline, unused)) static weft_task_t *
weft__deque_take(weft__deque_t *d) {
#else
static inline weft_task_t *weft__deque_take(weft__deque_t *d) {
#endif
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
  weft__ring_t *r = atomic_load_explicit(&d->ring, memory_order_relaxed);
  atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
  WEFT__PERTURB(); /* a thief may take the last task now */
  atomic_thread_fence(memory_order_seq_cst);
  int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
  if (t > b) { /* empty */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    return NULL;
  }
  weft_task_t *x = atomic_load_explicit(&r->slot[b & (int64_t)r->mask],
                                        memory_order_relaxed);
  if (t == b) { /* last one: race the thieves for it */
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
      x = NULL;
    atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
  }
  return x;
}

/* Any thread: oldest task, NULL when empty, WEFT__STEAL_ABORT on a lost race. */
WEFT__HIDDEN weft_task_t *weft__deque_steal(weft__deque_t *d);

/* ---- event count (parking.c): no lost wake-ups, wake one ---- */
/* Every outside submit reads `waiters` (and `searching` only when a worker
 * sleeps), while searching workers write `searching` around every job they
 * look for: the two live on different cache lines, and apart from the
 * pool's read-mostly fields (padding, since the pool's memory may come from
 * a user allocator without alignment). */
typedef struct weft__eventcount {
  char pad0[64];
  _Atomic uint32_t epoch;
  _Atomic uint32_t waiters;
  char pad1[64];
  _Atomic uint32_t searching; /* awake workers looking for work */
  _Atomic uint32_t waking;    /* a wake-up is in flight (see parking.c) */
  char pad2[64];
} weft__eventcount_t;

WEFT__HIDDEN uint32_t weft__ec_prepare(weft__eventcount_t *ec);
WEFT__HIDDEN void weft__ec_cancel(weft__eventcount_t *ec);
/* Every sleeper waits with WEFT__EC_ANY in its futex bitset, which the
 * ordinary wakes (any bitset) reach; a worker parked inside an await adds
 * its own bit, weft__ec_worker_bit(), so that the settle of what it awaits
 * wakes it and no idle worker (weft__ec_wake_bits). */
enum { WEFT__EC_ANY = 1 };
static inline uint32_t weft__ec_worker_bit(unsigned index) {
  return 2u << (index % 31);
}
WEFT__HIDDEN void weft__ec_wait(weft__eventcount_t *ec, uint32_t epoch);
/* As weft__ec_wait, with the sleeper's futex bitset and a monotonic
 * deadline (-1: none); returns at the deadline too. */
WEFT__HIDDEN void weft__ec_wait_until(weft__eventcount_t *ec, uint32_t epoch,
                                      uint32_t bits, int64_t deadline_ns);
/* Bump the epoch and wake every sleeper whose bitset meets `bits`. */
WEFT__HIDDEN void weft__ec_wake_bits(weft__eventcount_t *ec, uint32_t bits);
/* After publishing work with a seq_cst read-modify-write (inbox_push):
 * wake one sleeper if there is any and no awake worker is already
 * searching (it will find the work before it sleeps: a searcher stops
 * searching before its last re-check, which reads the inboxes seq_cst). */
WEFT__HIDDEN void weft__ec_notify_one(weft__eventcount_t *ec);
WEFT__HIDDEN void weft__ec_notify_all(weft__eventcount_t *ec);
/* By a worker that cleared `waking` (returned from a wait, or cancelled
 * one) or stopped searching, and now runs something instead of searching
 * on: wake one sleeper if there is any and nobody searches, so that work
 * a producer published without a wake-up (it saw the wake or the search
 * in flight) is not left to wait for this worker (see parking.c). */
WEFT__HIDDEN void weft__ec_handoff(weft__eventcount_t *ec);
/* Wake one sleeper unless a wake-up is already on its way. */
WEFT__HIDDEN void weft__ec_wake_one(weft__eventcount_t *ec);
/* As notify_one without the fence: may miss a sleeper that is just going to
 * sleep. Only for work its publisher will run itself if nobody else does.
 * (Inline: a spawn from inside a job calls it every time.) */
static inline void weft__ec_notify_if_sleepers(weft__eventcount_t *ec) {
  if (atomic_load_explicit(&ec->waiters, memory_order_relaxed) == 0 ||
      atomic_load_explicit(&ec->searching, memory_order_relaxed) > 0)
    return;
  weft__ec_wake_one(ec);
}

/* ---- jobs (pool.c makes them, worker.c runs them) ---- */
enum { WEFT__JOB_QUEUED = 0, WEFT__JOB_RUNNING = 1, WEFT__JOB_CANCELLED = 2 };

typedef struct weft__job {
  weft__ext_t ext; /* the job's future: one allocation for both */
  weft_task_t task;
  weft_job_fn fn;
  void *arg;
  uintptr_t pool; /* the pool; bit 0 (WEFT__JOB_DTOR): arg_dtor follows */
  /* QUEUED -> RUNNING or CANCELLED, in the low two bits. A job that starts
   * on an empty deque also has the worker running it above them: what that
   * deque holds while it runs are its descendants, which an awaiter may
   * take (see weft__pool_ex_await). One word with the claim. */
  _Atomic uintptr_t claim;
  /* Only in a job given an argument destructor: without one a job is
   * WEFT__JOB_SHORT (96) bytes, with one 104 (docs/design/pool.md). */
  weft_dtor_fn arg_dtor;
} weft__job_t;
enum { WEFT__JOB_SHORT = offsetof(weft__job_t, arg_dtor), WEFT__JOB_DTOR = 1 };
static inline struct weft_pool *weft__job_pool(const weft__job_t *job) {
  return (struct weft_pool *)(job->pool & ~(uintptr_t)WEFT__JOB_DTOR);
}

/* The run function of a queued job (worker.c): runs it unless cancelled
 * first. */
WEFT__HIDDEN void weft__job_run(weft_task_t *task);
/* A job's fini (pool.c): its block goes to the freeing worker's cache or
 * back to the allocator. Also how await tells a job from other futures. */
WEFT__HIDDEN void weft__job_fini(weft__ext_t *e);
WEFT__HIDDEN bool weft__is_job(const weft_task_t *t);
/* Run a task, or cancel it if it is a job and the pool is cancelling
 * (worker.c).
 * True when it ran: a task, or a job whose function ran (not one cancelled
 * before it started). */
WEFT__HIDDEN bool weft__run_or_discard(struct weft_pool *p, weft_task_t *t);

/* ---- CPU workers (worker.c) ---- */
/* A job running on a worker's stack, on the C stack of its job_start. */
typedef struct weft__frame {
  const weft__job_t *job;
  const struct weft__frame *outer; /* the job it runs on top of, or NULL */
} weft__frame_t;

typedef struct weft__worker {
  weft__deque_t deque;
  _Atomic(weft_task_t *) inbox; /* outside submissions, newest first */
  struct weft_pool *pool;
  pthread_t thread;
  unsigned index;
  uint64_t rng;
  _Atomic uint64_t jobs_run, steals, parks; /* written by the owner only */
  bool start_empty;     /* the task being started found our deque empty */
  unsigned await_depth; /* awaits in progress on this worker's stack */
  int64_t frame_bottom; /* deque bottom when the running task started */
  const weft__frame_t *frames; /* jobs running on this stack, innermost first */
  void *cache;                 /* recycled job blocks, owner only */
  unsigned cache_count;
  char pad_[64]; /* keep workers' lines apart */
} weft__worker_t;
_Static_assert(_Alignof(weft__worker_t) >= 4,
               "a worker pointer leaves weft__job_t.claim two low bits");

/* The worker this thread is (worker.c sets it for the thread's life), or
 * NULL on any other thread. */
WEFT__HIDDEN extern _Thread_local weft__worker_t *weft__tl_worker
    __attribute__((tls_model("initial-exec")));
/* A worker thread's body (worker.c). */
WEFT__HIDDEN void *weft__worker_main(void *arg);
/* The pool executor's await (worker.c): on one of the pool's workers, run
 * pool work while f is pending; elsewhere WEFT_EAGAIN (block). */
WEFT__HIDDEN int weft__pool_ex_await(weft_executor_t *ex, weft_future_t *f,
                                     int64_t deadline_ns);
/* Free a worker's cached job blocks, at its exit (pool.c). */
WEFT__HIDDEN void weft__job_cache_free(weft__worker_t *w);

/* Owner-only counter bump, readable from other threads. */
static inline void weft__stat_inc(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* What a closed inbox holds (pool.c): shutdown's last drain leaves it. */
WEFT__HIDDEN extern weft_task_t weft__inbox_closed;
/* Push t on worker w's inbox; false (nothing pushed) once shutdown closed
 * it, which only an outside submit can meet: workers have left by then.
 * (Inline: every outside submit and every inbox a worker takes over.) */
static inline bool weft__inbox_push(weft__worker_t *w, weft_task_t *t) {
  weft_task_t *h = atomic_load_explicit(&w->inbox, memory_order_relaxed);
  WEFT__PERTURB();
  do {
    if (h == &weft__inbox_closed)
      return false;
    t->next = h;
  } while (!atomic_compare_exchange_weak_explicit(
      &w->inbox, &h, t, memory_order_seq_cst, memory_order_relaxed));
  /* seq_cst: the publication weft__ec_notify_one() relies on, in place of a
   * fence (one full barrier per outside submit instead of two) */
  return true;
}

/* ---- blocking threads (blocking.c) ---- */
typedef struct weft__bthread {
  pthread_t thread;
  struct weft__bthread *next;
} weft__bthread_t;

typedef struct weft__blocking {
  pthread_mutex_t mu;
  pthread_cond_t work; /* a job was queued, or stop */
  pthread_cond_t gone; /* a thread exited */
  weft_task_t *head, *tail;
  unsigned max, keepalive_ms, alive, idle, peak;
  bool stop;
  weft__bthread_t *zombies; /* exited, not yet joined */
  uint64_t run;
} weft__blocking_t;

struct weft_pool {
  weft_executor_t executor;
  weft_executor_t blocking_executor; /* tasks on the blocking threads */
  weft__worker_t *workers;
  unsigned nworkers;
  weft__eventcount_t ec;
  _Atomic bool stopping, cancelling;
  _Atomic uint64_t cancelled;
  pthread_mutex_t mu; /* guards exited */
  pthread_cond_t cv;
  unsigned exited;
  weft__blocking_t blocking;
  /* 1 for the owner, 1 per fiber spawned on the pool and not yet ended:
   * p itself is freed at the last (a late submit reads p->stopping). */
  _Atomic uint32_t holds;
};
_Static_assert(_Alignof(struct weft_pool) >= 2,
               "a pool pointer leaves weft__job_t.pool a low bit");

WEFT__HIDDEN int weft__blocking_init(struct weft_pool *p, unsigned max,
                                     unsigned keepalive_ms);
WEFT__HIDDEN void weft__blocking_fini(struct weft_pool *p);
WEFT__HIDDEN int weft__blocking_enqueue(struct weft_pool *p, weft_task_t *t);
/* Stop: drain (or cancel, when the pool is cancelling) the queue, wait for
 * every blocking thread to exit and join it. A drain still running at the
 * deadline is cancelled; returns WEFT_ETIMEDOUT then, else 0. */
WEFT__HIDDEN int weft__blocking_stop(struct weft_pool *p, int64_t deadline);
WEFT__HIDDEN void weft__blocking_stats(struct weft_pool *p,
                                       weft_pool_stats_t *s);
/* Is the calling thread one of p's blocking threads? */
WEFT__HIDDEN bool weft__blocking_own(struct weft_pool *p);

#endif /* WEFT_POOL_INTERNAL_H */
