/* SPDX-License-Identifier: MIT */
/* weft/executor.h: the executor interface (where continuations run), plus the
 * inline and dedicated-thread executors. Life cycle: a dedicated thread is
 * created and shut down (queued tasks run first); the inline executor is
 * static. */
#ifndef WEFT_EXECUTOR_H
#define WEFT_EXECUTOR_H

#include <weft/common.h>
#include <weft/system.h>

WEFT_BEGIN_DECLS

typedef struct weft_future weft_future_t;
typedef struct weft_executor weft_executor_t;
typedef struct weft_task weft_task_t;

/** The function a task runs. It owns the task from then on. */
typedef void (*weft_task_fn)(weft_task_t *task);

/**
 * An intrusive unit of work. The submitter owns the memory and keeps it alive
 * until `run` has been called; an executor only links tasks through `next`
 * (which it may overwrite) and calls `run` exactly once per accepted submit.
 */
struct weft_task {
  weft_task_t *next;
  weft_task_fn run;
};

/**
 * Operations an executor provides. `size` is sizeof(weft_executor_ops_t) as
 * the provider compiled it, so the table can grow without breaking providers.
 */
typedef struct weft_executor_ops {
  size_t size;
  /** Short name for diagnostics ("inline", "thread", "pool", "loop"). */
  const char *name;
  /**
   * Accept `task` and call task->run(task) exactly once, later or at once,
   * on a thread the executor chooses. Return 0 when accepted, or a negative
   * WEFT_E* code (WEFT_ESHUTDOWN, WEFT_ENOMEM, ...) when not, in which case
   * `run` is never called and the caller keeps the task.
   */
  int (*submit)(weft_executor_t *ex, weft_task_t *task);
  /**
   * Optional (may be NULL). Called by weft_future_await() on a thread that
   * is currently running this executor's work (see weft_executor_enter()),
   * when `f` is still pending. The executor makes progress on its own work
   * while it waits (a pool helps, a single thread drains its queue) or refuses
   * (a loop that alone could settle `f` returns WEFT_EDEADLK). `deadline_ns`
   * is on weft_clock_now_ns()'s clock, or -1 for none. Return 0 once `f` has
   * settled, WEFT_ETIMEDOUT at the deadline, WEFT_EAGAIN to let weft block
   * the thread in the ordinary way, or another negative code to end the
   * await with it.
   */
  int (*await)(weft_executor_t *ex, weft_future_t *f, int64_t deadline_ns);
  /**
   * Optional (may be NULL; read only when `size` covers it). weft calls it
   * with +1 when a fiber (weft/fiber.h) is spawned on this executor and
   * with -1 once that fiber has ended, from any thread. An executor that
   * provides it keeps the memory its submit reads alive while holds
   * remain, also after it is shut down (its submit refusing meanwhile), so
   * that a fiber that wakes after the shutdown is refused (and resumes on
   * the thread that woke it) instead of reaching freed memory. Every
   * executor of weft's provides it. Without it, an executor must outlive
   * every fiber spawned on it.
   */
  void (*hold)(weft_executor_t *ex, int delta);
} weft_executor_ops_t;

/** An executor is anything whose first member is a pointer to its ops. */
struct weft_executor {
  const weft_executor_ops_t *ops;
};

/**
 * Submit a task to an executor.
 *
 * On 0 the executor owns the scheduling of `task` and calls task->run once.
 * Errors: WEFT_EINVAL (NULL argument, task->run NULL, or ops without submit),
 * or whatever the executor's submit returns (the task is not run then).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_executor_submit(weft_executor_t *ex, weft_task_t *task);

/**
 * The inline executor: runs each task on the thread that submits it, before
 * submit returns, except that a task submitted while the same thread is
 * already running an inline task is queued and runs as soon as that task
 * returns (a trampoline, so that a million-deep chain does not grow the
 * stack). Never fails. The returned pointer is static; never free it.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *weft_executor_inline(void);

/**
 * Mark the calling thread as running `ex`'s work until the matching
 * weft_executor_leave(); weft_future_await() on this thread then asks `ex`'s
 * await operation first. Calls nest; pass NULL to mark "no executor".
 * Returns the executor that was current before, to be handed to leave.
 * Thread: any thread (it affects only the calling thread).
 */
WEFT_EXTERN weft_executor_t *weft_executor_enter(weft_executor_t *ex);

/**
 * Restore the executor that weft_executor_enter() returned.
 * Thread: the thread that called the matching enter.
 */
WEFT_EXTERN void weft_executor_leave(weft_executor_t *previous);

/**
 * The executor the calling thread is currently running, or NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *weft_executor_current(void);

/** Opaque dedicated-thread executor. */
typedef struct weft_thread_executor weft_thread_executor_t;

/**
 * Start a dedicated thread that runs submitted tasks one at a time, in the
 * order they were submitted (FIFO across all submitters).
 *
 * On success *out owns the executor; end it with
 * weft_thread_executor_shutdown(). Awaiting on that thread a future that
 * depends on a task still queued there does not deadlock: the executor runs
 * queued tasks while it waits.
 * Errors: WEFT_EINVAL (out NULL), WEFT_ENOMEM, WEFT_EAGAIN (no thread could
 * be started). *out is untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_thread_executor_create(weft_thread_executor_t **out);

/**
 * The executor interface of a dedicated thread, for weft_future_then() and
 * weft_executor_submit(). Borrowed: valid until the executor is shut down.
 * Returns NULL when `te` is NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *
weft_thread_executor_get(weft_thread_executor_t *te);

/**
 * Shut the dedicated thread down and free the executor.
 *
 * Runs every task already submitted (draining the queue), then refuses new
 * submits with WEFT_ESHUTDOWN, joins the thread and frees (a shutdown in
 * weft's words: no new work, the queued work finishes, then the object
 * ends). A task that
 * submits to this executor while it drains is still run.
 * Returns 0; WEFT_EINVAL when `te` is NULL; WEFT_EDEADLK when called from
 * the executor's own thread (nothing is changed then).
 * Thread: any thread except the executor's own.
 */
WEFT_EXTERN int weft_thread_executor_shutdown(weft_thread_executor_t *te);

WEFT_END_DECLS

#endif /* WEFT_EXECUTOR_H */
