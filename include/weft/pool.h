/* SPDX-License-Identifier: MIT */
/* weft/pool.h: the work-stealing pool for CPU jobs and the elastic pool for
 * blocking jobs; every job returns a future. Life cycle: a pool is created
 * and shut down (no new jobs; the queued ones run or are cancelled; the
 * threads are joined and the pool freed). Design: docs/design/pool.md. */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <weft/common.h>
#include <weft/future.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * CPU workers, one per usable CPU by default (the process's affinity mask
 * and a cgroup v2 CPU quota both count), each own a work-stealing deque: a
 * job submitted from inside a job goes on the submitting worker's deque
 * (LIFO for the owner, stolen FIFO by idle workers from random victims); a
 * job submitted from any other thread goes into a worker's lock-free inbox.
 * Idle workers spin briefly, then park on an event count: no lost wake-ups,
 * one worker woken per submit that finds sleepers (a woken worker that
 * finds work wakes one more while others sleep and none searches), no CPU
 * used while idle.
 *
 * Blocking jobs run on a separate, elastic set of threads (created on
 * demand up to a maximum, each exiting after an idle keep-alive), so a job
 * stuck in read() never holds a CPU worker.
 *
 * Await from a job: weft_future_await() on a CPU worker runs pool work
 * while it waits, so it never sleeps while the pool has a CPU job queued
 * that could settle what it awaits: first jobs from the worker's own deque
 * and inbox (newest first: the job's own children, most likely what it
 * waits for); then, when the awaited future is a job another worker runs,
 * jobs from that worker's deque (its descendants: leapfrogging); then any
 * queued job, stolen from the other workers' deques and inboxes, where
 * jobs submitted from outside the pool wait. A job stolen after the
 * awaited future settled goes on the worker's own deque instead, to run
 * after the awaiting job resumes. With nothing to run the worker sleeps as
 * an idle worker does: a submit wakes it for its job, the settle of the
 * awaited future wakes it, and so does the timeout.
 *
 * Nesting: a job an await runs runs on the awaiting job's stack, and the
 * awaiting job resumes only when that job returns, even if its own future
 * settled meanwhile; the jobs it runs may await in turn. An await for a
 * job running below it on the same worker's stack (or for the awaiting
 * job's own future) could never end: once nothing else is left to run it
 * returns WEFT_EDEADLK. Do not await, inside a job, a future that only the
 * rest of another job (after its own await) would settle, such as a
 * promise it fulfils later: if that job is below on the same stack,
 * neither can go on, and only the await's timeout ends it. To bound the
 * stack, at most 128 awaits that take any work nest on one worker. An
 * await nested deeper runs only its own job's descendants (the jobs it
 * spawned, and theirs) from the worker's deque; when they run out it
 * blocks until the future settles if that future is a job of this pool
 * running elsewhere, and otherwise returns WEFT_EDEADLK.
 * A worker's stack (the thread default) thus holds at most 128 levels of
 * unrelated jobs plus the fork-join depth of the jobs' own spawns.

 */

typedef struct weft_pool weft_pool_t;
typedef struct weft_job weft_job_t;

/**
 * A job: runs once on a pool thread with its argument; returns what its
 * future becomes (weft_ok, weft_ok_int or weft_err; weft_follow is not
 * supported and rejects with WEFT_ENOTSUP). `job` is valid during the call
 * only, for weft_job_is_cancelled().
 */
typedef weft_result_t (*weft_job_fn)(weft_job_t *job, void *arg);

/**
 * Pool options: zero-initialise, set `size` to sizeof(weft_pool_options_t),
 * then change what you need. Every field's zero is its default, and so will
 * be the zero of every field added later: a caller built against an older
 * weft passes a smaller `size`, and the fields past it read as zero. weft
 * reads no byte past `size`; the bytes it does not know (past its own
 * sizeof, and the `reserved` slots) must be zero. See docs/README.md,
 * "Structs that grow".
 */
typedef struct weft_pool_options {
  size_t size;                    /* sizeof(weft_pool_options_t) */
  unsigned threads;               /* CPU workers; 0: weft_cpu_count() */
  unsigned blocking_max;          /* blocking threads at most; 0: 64 */
  unsigned blocking_keepalive_ms; /* idle blocking thread exits; 0: 10000 */
  void *reserved[4];              /* zero */
} weft_pool_options_t;

/**
 * Start a pool.
 *
 * `opts` may be NULL (all defaults). On 0, *out owns the pool; end it with
 * weft_pool_shutdown().
 * Errors: WEFT_EINVAL (out NULL, opts->size below the first version's
 * struct or above 4096, or above 1024 threads), WEFT_ENOTSUP (a reserved
 * slot or a byte past this weft's struct is not zero: a caller built
 * against a later weft asked for something this one cannot do),
 * WEFT_ENOMEM, WEFT_EAGAIN (a thread could not be started; nothing is left
 * running). *out is untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_pool_create(const weft_pool_options_t *opts,
                                 weft_pool_t **out);

/**
 * Run `fn(job, arg)` on a CPU worker; *out receives its future.
 *
 * From inside a job of this pool the job goes on the worker's own deque;
 * from any other thread into a worker's inbox. If the future is cancelled
 * before the job starts, fn never runs and `arg_dtor(arg)` (if given) runs
 * exactly once instead; once fn starts it owns arg. A job that returns
 * weft_err(e) rejects its future with e.
 * Errors: WEFT_EINVAL (pool, fn or out NULL), WEFT_ESHUTDOWN (shutdown has
 * begun), WEFT_ENOMEM. On error fn never runs and arg is untouched.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_pool_submit(weft_pool_t *pool, weft_job_fn fn, void *arg,
                                 weft_dtor_fn arg_dtor, weft_future_t **out);

/**
 * As weft_pool_submit(), for a job that blocks (slow I/O, a DNS lookup, a
 * library that sleeps): it runs on the blocking threads, never on a CPU
 * worker. A new blocking thread is started when none is idle and fewer than
 * blocking_max are alive; otherwise the job waits in FIFO order.
 * Errors: as weft_pool_submit(), and WEFT_EAGAIN when no blocking thread
 * is alive and none could be started (the job is not queued: nothing would
 * run it).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_pool_submit_blocking(weft_pool_t *pool, weft_job_fn fn,
                                          void *arg, weft_dtor_fn arg_dtor,
                                          weft_future_t **out);

/**
 * True if the job's future was cancelled or the pool is shutting down in
 * CANCEL mode (the job should stop early); false otherwise and for NULL.
 * Thread: the thread running the job.
 */
WEFT_EXTERN bool weft_job_is_cancelled(const weft_job_t *job);

/**
 * The pool as an executor: weft_future_then(f, weft_pool_executor(pool),
 * ...) runs the continuation on a CPU worker. Borrowed; valid until
 * shutdown. NULL for NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *weft_pool_executor(weft_pool_t *pool);

/**
 * The pool's blocking threads as an executor: a task submitted to it runs
 * on a blocking thread, as a weft_pool_submit_blocking() job does (same
 * queue, same FIFO order, a thread started on demand up to blocking_max),
 * so a task may block (read a file, call getaddrinfo) without holding a CPU
 * worker. Give it to weft_loop_options_t.blocking so that a loop's file
 * operations and name lookups run here. A submit is refused with
 * WEFT_ESHUTDOWN once shutdown has begun, or WEFT_EAGAIN when no blocking
 * thread is alive and none could be started (the task is not queued).
 * Every accepted task runs exactly once: a task has no cancel, so even a
 * CANCEL shutdown runs the tasks still queued (on the thread that shuts
 * down), while it cancels queued jobs. A weft_future_await() inside such a
 * task blocks its thread. Tasks that ran count in
 * weft_pool_stats_t.blocking_run. Borrowed; valid until shutdown (a fiber
 * spawned on it keeps its memory alive, as with weft_pool_executor()).
 * NULL for NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *weft_pool_blocking_executor(weft_pool_t *pool);

/**
 * Cheap counters, summed over workers when read. The struct's size is fixed:
 * new counters take `reserved` slots (zero from a weft that does not know
 * them), so weft never writes more than a caller's struct holds. See
 * docs/README.md, "Structs that grow".
 */
typedef struct weft_pool_stats {
  uint64_t jobs_run;       /* CPU jobs whose function ran, executor tasks */
  uint64_t blocking_run;   /* blocking jobs whose function ran, tasks */
  uint64_t steals;         /* jobs taken from another worker's deque */
  uint64_t parks;          /* times a worker went to sleep */
  uint64_t cancelled;      /* jobs cancelled before they started */
  unsigned threads;        /* CPU workers */
  unsigned blocking_alive; /* blocking threads alive now */
  unsigned blocking_peak;  /* most blocking threads alive at once */
  unsigned reserved32;     /* zero */
  uint64_t reserved[8];    /* zero */
} weft_pool_stats_t;

/**
 * Read the counters into *stats (every byte of it written, reserved ones
 * zero).
 * Errors: WEFT_EINVAL (NULL argument).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_pool_stats(weft_pool_t *pool, weft_pool_stats_t *stats);

/** How shutdown treats queued jobs. */
typedef enum weft_pool_mode {
  WEFT_POOL_DRAIN = 0, /* run every queued job, then stop */
  WEFT_POOL_CANCEL = 1 /* cancel every queued job, tell running ones */
} weft_pool_mode_t;

/**
 * Stop the pool, join every thread it started and free it.
 *
 * From the first moment, submits fail with WEFT_ESHUTDOWN. A submit from
 * another thread that overlaps that moment is either refused so or accepted,
 * and an accepted job is run (DRAIN) or cancelled (CANCEL) before shutdown
 * returns. Every call on the pool must return before shutdown does: shutdown
 * frees the pool. In DRAIN mode the queued jobs (and the jobs they spawn) run; if they have not finished by
 * `timeout_ms` (WEFT_FOREVER: no limit; any value up to INT64_MAX is a
 * wait that long), shutdown switches to CANCEL. In CANCEL mode every job
 * not yet started is cancelled (its future settles as cancelled, its
 * arg_dtor runs), and every running job is told: weft_job_is_cancelled()
 * returns true from then on, and its future ends cancelled when the job
 * returns, whatever it returns (a value it returns is destroyed). Running
 * jobs cannot be interrupted: shutdown waits for them to return, then
 * joins and frees.
 * `final` (may be NULL) receives the last statistics.
 * Returns 0 when everything queued ran (DRAIN) or was cancelled as asked
 * (CANCEL); WEFT_ETIMEDOUT when a DRAIN ran out of time and had to cancel;
 * WEFT_EINVAL (pool NULL, bad mode, timeout below -1; nothing changes);
 * WEFT_EDEADLK when called from one of the pool's own threads (nothing
 * changes).
 * Thread: any thread but the pool's own.
 */
WEFT_EXTERN int weft_pool_shutdown(weft_pool_t *pool, weft_pool_mode_t mode,
                                   int64_t timeout_ms,
                                   weft_pool_stats_t *final);

WEFT_END_DECLS

#endif /* WEFT_POOL_H */
