/* SPDX-License-Identifier: MIT */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H
/*
 * weft/runtime.h: a loop, a CPU pool and blocking threads in one call.
 *
 * A program that wants "an event loop, with CPU work and blocking calls
 * sent to threads and the results coming back to the loop" creates one
 * runtime, spawns its main fiber into it, runs it until that fiber ends,
 * and shuts it down:
 *
 *   weft_runtime_t *rt;
 *   weft_future_t *done;
 *   weft_runtime_create(NULL, &rt);          // this thread is the loop's
 *   weft_runtime_spawn(rt, NULL, serve, cfg, NULL, &done);
 *   weft_runtime_run(rt, done, WEFT_FOREVER);
 *   weft_future_release(done);
 *   weft_runtime_shutdown(rt, 2000);          // 2 s of grace, then cancel
 *
 * Sizing. The loop runs on the thread that creates the runtime. The CPU
 * pool gets one worker per CPU but one (at least one), so that CPU work
 * offloaded from the loop never preempts the loop itself: a loop sharing
 * its CPU with a busy worker waits for the scheduler's time slice (several
 * milliseconds) whenever the worker holds the CPU. Blocking jobs (files
 * without io_uring, DNS, weft_pool_submit_blocking) run on a separate,
 * elastic set of threads that sleep while they wait, so they need no CPU
 * of their own. When to size by hand: docs/runtime.md.
 */
#include <weft/common.h>
#include <weft/fiber.h>
#include <weft/future.h>
#include <weft/loop.h>
#include <weft/pool.h>

WEFT_BEGIN_DECLS

typedef struct weft_runtime weft_runtime_t;

/**
 * Runtime options: zero-initialise, set `size` to
 * sizeof(weft_runtime_options_t), then change what you need. Every field's
 * zero is its default (see docs/README.md, "Structs that grow").
 */
typedef struct weft_runtime_options {
  size_t size;           /* sizeof(weft_runtime_options_t) */
  unsigned cpu_threads;  /* CPU workers; 0: weft_cpu_count() - 1, at least 1 */
  unsigned blocking_max; /* blocking threads at most; 0: 64 */
  const weft_loop_options_t *loop; /* the loop's options; NULL: defaults */
  void *reserved[4];               /* zero */
} weft_runtime_options_t;

/**
 * Start a runtime: a loop owned by the calling thread (which becomes its
 * loop thread, as with weft_loop_create()), and a pool with the CPU workers
 * and blocking threads above. The loop hands its blocking work (files
 * without io_uring, DNS) to the pool's blocking threads, unless
 * opts->loop names an executor of its own in `blocking`.
 * On 0, *out owns the runtime; end it with weft_runtime_shutdown() on this
 * thread.
 * Errors: WEFT_EINVAL (out NULL, opts->size below the first version's
 * struct or above 4096, more than 1024 CPU threads); WEFT_ENOTSUP (a
 * reserved slot or a byte past this weft's struct is not zero); the errors
 * of weft_pool_create() and weft_loop_create() (WEFT_EBUSY: this thread
 * has a loop already). *out untouched on error; nothing is left running.
 * Thread: any thread; it becomes the loop thread.
 */
WEFT_EXTERN int weft_runtime_create(const weft_runtime_options_t *opts,
                                    weft_runtime_t **out);

/** The runtime's loop (borrowed, valid until shutdown); NULL for NULL.
 * Thread: any thread. */
WEFT_EXTERN weft_loop_t *weft_runtime_loop(weft_runtime_t *rt);

/** The runtime's pool (borrowed, valid until shutdown): submit CPU jobs
 * with weft_pool_submit(), blocking ones with weft_pool_submit_blocking().
 * NULL for NULL. Thread: any thread. */
WEFT_EXTERN weft_pool_t *weft_runtime_pool(weft_runtime_t *rt);

/** The runtime whose loop runs on the calling thread, or NULL.
 * Thread: any thread. */
WEFT_EXTERN weft_runtime_t *weft_runtime_current(void);

/**
 * Spawn a fiber on the runtime's loop (weft_fiber_spawn_opts() on the
 * loop's executor; `opts` may be NULL). The runtime keeps track of it:
 * weft_runtime_shutdown() gives it the grace period to end and cancels it
 * after. `out` may be NULL when the caller does not want the fiber's
 * future; otherwise *out is one handle owned by the caller.
 * Errors: as weft_fiber_spawn_opts(); WEFT_EINVAL (rt NULL);
 * WEFT_ESHUTDOWN (shutdown has begun). On error fn never runs and arg is
 * untouched.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_runtime_spawn(weft_runtime_t *rt,
                                   const weft_fiber_options_t *opts,
                                   weft_fiber_fn fn, void *arg,
                                   weft_dtor_fn arg_dtor, weft_future_t **out);

/**
 * Run the loop until `f` settles (weft_loop_run_until()). The caller keeps
 * its handle on f.
 * Returns 0 once f settled; WEFT_ETIMEDOUT when timeout_ms (WEFT_FOREVER:
 * none) passed first; WEFT_EINTR when weft_loop_stop() was called first;
 * WEFT_EINVAL (NULL, timeout below -1); WEFT_EPERM off the loop thread;
 * the errors of weft_loop_run_until().
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_runtime_run(weft_runtime_t *rt, weft_future_t *f,
                                 int64_t timeout_ms);

/**
 * Shut the runtime down and free it, in order:
 * 1. new spawns are refused (WEFT_ESHUTDOWN); the loop runs until every
 *    fiber of weft_runtime_spawn() has ended, for at most `grace_ms`
 *    (WEFT_FOREVER: no limit; 0: no grace);
 * 2. the fibers still running are cancelled (their awaits return
 *    WEFT_ECANCELED) and the loop runs until they have ended;
 * 3. the pool shuts down: its jobs get what is left of the grace period
 *    to run (WEFT_POOL_DRAIN), and are cancelled after it, or at once when
 *    nothing is left (WEFT_POOL_CANCEL; see weft_pool_shutdown());
 * 4. the loop closes (weft_loop_close(): what is still pending on it
 *    settles as cancelled, and its continuations run).
 * A fiber that never awaits and never checks weft_fiber_is_cancelled()
 * keeps step 2 waiting: cancellation in weft is a request.
 * Returns 0 when everything ended within the grace period;
 * WEFT_ETIMEDOUT when a fiber or a pool job had to be cancelled (the
 * runtime is shut down and freed all the same; a job told to stop that
 * was running with no grace left at all is not counted); WEFT_EINVAL (rt NULL, grace_ms below -1:
 * nothing changes); WEFT_EPERM off the loop thread; WEFT_EBUSY from inside
 * one of the loop's callbacks or fibers (nothing changes).
 * Thread: the loop thread, outside the loop's callbacks.
 */
WEFT_EXTERN int weft_runtime_shutdown(weft_runtime_t *rt, int64_t grace_ms);

WEFT_END_DECLS

#endif /* WEFT_RUNTIME_H */
