/* SPDX-License-Identifier: MIT */
/* weft/fiber.h: async functions (fibers) that await in order on any
 * executor, and scopes that own the work started in them. Life cycle: a
 * fiber is spawned and runs until its function returns (its future
 * settles); a scope is created, children are spawned or attached into it,
 * and it is closed (what still runs is cancelled and waited for). Guide:
 * docs/async.md. Design: docs/design/fiber.md. */
#ifndef WEFT_FIBER_H
#define WEFT_FIBER_H

#include <weft/common.h>
#include <weft/error.h>
#include <weft/executor.h>
#include <weft/future.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * A fiber is a function running on a stack of its own, on an executor (a
 * loop's, a pool's, a dedicated thread's, or the inline executor). Inside a
 * fiber, weft_future_await() suspends the fiber instead of blocking the
 * thread: the thread goes on with other work, and the fiber resumes on its
 * executor when the future settles, the timeout passes or the fiber is
 * cancelled. So code in a fiber on a loop thread reads a socket, sleeps and
 * waits for pool jobs in order, and never gets WEFT_EDEADLK.
 *
 * Where a fiber runs after it resumes: on a loop or a dedicated thread, the
 * same thread every time; on a pool, any worker of that pool (a
 * thread-local read before an await may differ after it); on the inline
 * executor, the thread that woke it (the one that settled what it awaited).
 * A fiber whose executor refuses to take it back (a loop closed, a pool or
 * thread executor shut down while the fiber waited) resumes on the thread
 * that woke it, so that it still sees its await end, cleans up and
 * settles. Closing a loop cancels its own operations (sleeps, timers,
 * socket operations), so its fibers waiting on those resume inside
 * weft_loop_close().
 *
 * Cancel: cancelling a fiber's future settles it as cancelled at once and
 * makes the fiber's current await, and every later one, return
 * WEFT_ECANCELED at once (WEFT_ETIMEDOUT when the cancel came from a
 * scope's deadline). The future the fiber was awaiting is cancelled too
 * when one handle was all that needed it (no second handle, then or
 * combinator): weft takes that handle to be the fiber's, as it is when a
 * fiber awaits what it started. Nothing is unwound by force: the fiber keeps running, sees
 * the error, cleans up and returns; what it returns then is discarded.
 *
 * What a fiber may do: anything a callback may do on its executor (on a
 * loop: never block the thread: a blocking call in a fiber blocks every
 * fiber and callback of that loop). It may hold locals, buffers and handles
 * across an await: they live on its stack or heap and nothing else runs on
 * its stack. It must not hold a mutex or a spin lock across an await (on a
 * pool it may resume on another thread, and on any executor the thread runs
 * other work meanwhile), nor a weft_executor_enter() mark. The
 * floating-point environment (rounding mode, exception masks) and the
 * signal mask are the thread's, not the fiber's, on some platforms: a fiber
 * that changes either restores it before it awaits. On a pool, nothing
 * read from a thread-local before an await holds after it: errno and
 * pthread_self() included (the compiler may reuse what it read before the
 * await, as glibc declares them const: read them in another function).
 */

/** A fiber's function: runs once, on the fiber's stack; what it returns
 * settles the fiber's future as a continuation's result does
 * (weft_ok, weft_ok_int, weft_err; weft_follow waits for that future
 * inside the fiber and settles with its outcome). */
typedef weft_result_t (*weft_fiber_fn)(void *arg);

typedef struct weft_scope weft_scope_t;

/** The default stack size: 256 KiB of address space, of which only the
 * pages a fiber touches take memory. */
#define WEFT_FIBER_STACK_DEFAULT ((size_t)256 * 1024)
/** The smallest stack size accepted (smaller requests are raised to it). */
#define WEFT_FIBER_STACK_MIN ((size_t)16 * 1024)

/**
 * Options for weft_fiber_spawn_opts(). Zero-initialise, set `size` to
 * sizeof(weft_fiber_options_t), then set what you need; zero means the
 * default.
 */
typedef struct weft_fiber_options {
  size_t size;       /* sizeof(weft_fiber_options_t) */
  size_t stack_size; /* bytes of stack; 0: WEFT_FIBER_STACK_DEFAULT. Rounded
                        up to whole pages, at least WEFT_FIBER_STACK_MIN. One
                        guard page lies below it. */
  const char *name;  /* for diagnostics (a stack overflow report); borrowed:
                        a string that outlives the fiber, or NULL */
} weft_fiber_options_t;

/**
 * Spawn a fiber running `fn(arg)` on `ex`.
 *
 * The fiber starts when `ex` runs its first task (at once, on this thread,
 * for the inline executor). On 0, *out is one handle on the fiber's future,
 * owned by the caller, which settles with what fn returns. If the future is
 * cancelled before the fiber starts, fn never runs and `arg_dtor(arg)` (if
 * given) runs once instead; otherwise fn owns arg.
 * Errors: WEFT_EINVAL (ex, fn or out NULL), WEFT_ENOMEM (no memory for the
 * fiber or its stack, or the system refused the mapping), or the error of
 * ex's submit (WEFT_ESHUTDOWN, ...). On error fn never runs, arg is
 * untouched (arg_dtor is not called) and *out is untouched.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_fiber_spawn(weft_executor_t *ex, weft_fiber_fn fn,
                                 void *arg, weft_dtor_fn arg_dtor,
                                 weft_future_t **out);

/**
 * weft_fiber_spawn() with options (`opts` NULL: the defaults).
 * Errors: as weft_fiber_spawn(), and WEFT_EINVAL / WEFT_ENOTSUP for an
 * options struct whose size is wrong or that sets fields this weft does not
 * know.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_fiber_spawn_opts(weft_executor_t *ex,
                                      const weft_fiber_options_t *opts,
                                      weft_fiber_fn fn, void *arg,
                                      weft_dtor_fn arg_dtor,
                                      weft_future_t **out);

/**
 * True when called from inside a fiber.
 * Thread: any thread.
 */
WEFT_EXTERN bool weft_fiber_is_running(void);

/**
 * True when the calling fiber has been cancelled (its future cancelled, or
 * a scope it runs in cancelled or past its deadline): a CPU loop in a fiber
 * checks it to stop early. False outside a fiber.
 * Thread: any thread.
 */
WEFT_EXTERN bool weft_fiber_is_cancelled(void);

/**
 * Let the fiber's executor run other queued work, then continue: the fiber
 * is queued behind what its executor has queued now.
 * Returns 0; WEFT_ECANCELED (or WEFT_ETIMEDOUT) when the fiber is
 * cancelled (it does not yield then); WEFT_EPERM outside a fiber.
 * Thread: a fiber.
 */
WEFT_EXTERN int weft_fiber_yield(void);

/* ------------------------------------------------------------------ */
/* Awaiting several futures                                             */
/* ------------------------------------------------------------------ */

/**
 * Wait until the first of `n` futures settles, for at most `timeout_ms`
 * (as weft_future_await()), and say which: *index is the position of a
 * settled input (the first that settled, when it can tell). The inputs are
 * borrowed and none is cancelled: the caller decides what to do with the
 * others. In a fiber it suspends the fiber; elsewhere it waits as
 * weft_future_await() does.
 * Returns 0 and sets *index; WEFT_ETIMEDOUT; WEFT_ECANCELED (the calling
 * fiber was cancelled); WEFT_EINVAL (fs or index NULL, n 0, a NULL input,
 * timeout below -1); WEFT_ENOMEM; WEFT_EDEADLK as weft_future_await().
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_await_first(weft_future_t *const *fs, size_t n,
                                        int64_t timeout_ms, size_t *index);

/**
 * Wait until every one of `n` futures has settled, for at most
 * `timeout_ms` in all. Read each outcome with weft_future_error().
 * Returns 0; WEFT_ETIMEDOUT; WEFT_ECANCELED (the calling fiber was
 * cancelled); WEFT_EINVAL (fs NULL with n > 0, a NULL input, timeout below
 * -1); WEFT_ENOMEM; WEFT_EDEADLK as weft_future_await(). n = 0 returns 0.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_await_all(weft_future_t *const *fs, size_t n,
                                      int64_t timeout_ms);

/* ------------------------------------------------------------------ */
/* Scopes                                                               */
/* ------------------------------------------------------------------ */
/*
 * A scope owns the work started in it: fibers spawned into it and futures
 * attached to it. Its join future settles once every child has finished (a
 * fiber when its function has returned, a future when it has settled).
 * Closing a scope cancels what still runs and waits for it, so nothing
 * started in a scope outlives it.
 *
 * Cancel scopes: cancelling a scope (or its deadline passing) cancels every
 * child, and every scope created inside one of its fibers; awaits in those
 * fibers return WEFT_ECANCELED (WEFT_ETIMEDOUT for a deadline) at once.
 * So "this request has 2 seconds" is said once, on the scope.
 */

/** What a scope does when a child fails (is rejected or cancelled). */
typedef enum weft_scope_policy {
  /** The first failure cancels the other children; join rejects with it. */
  WEFT_SCOPE_FAIL_FAST = 0,
  /** Every child runs to its end; join fulfils once all have finished, and
   * each outcome is read through weft_scope_child(). */
  WEFT_SCOPE_COLLECT = 1
} weft_scope_policy_t;

/** Options for weft_scope_create(). Zero-initialise and set `size` to
 * sizeof(weft_scope_options_t); zero means the default. */
typedef struct weft_scope_options {
  size_t size;                /* sizeof(weft_scope_options_t) */
  weft_scope_policy_t policy; /* default WEFT_SCOPE_FAIL_FAST */
  int64_t deadline_ns;        /* on weft_clock_now_ns()'s clock; 0: none.
                                 When it passes, the scope is cancelled with
                                 WEFT_ETIMEDOUT. */
  size_t limit;               /* children running at once; 0: no limit.
                                 Fibers spawned past it wait their turn, in
                                 order. */
} weft_scope_options_t;

/**
 * Create a scope (`opts` NULL: fail fast, no deadline, no limit). Created
 * inside a fiber that runs in a scope, the new scope is that scope's child:
 * cancelling the outer one (or its deadline) cancels this one too, and this
 * one's deadline is at most the outer one's.
 * On 0, *out is owned by the caller; end it with weft_scope_close().
 * Errors: WEFT_EINVAL (out NULL, a bad policy, deadline below 0),
 * WEFT_ENOTSUP / WEFT_EINVAL for a bad options struct, WEFT_ENOMEM.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_create(const weft_scope_options_t *opts,
                                  weft_scope_t **out);

/**
 * Spawn a fiber into the scope (as weft_fiber_spawn_opts(), `opts` may be
 * NULL). Past the scope's limit it waits its turn (its future pending, its
 * stack not yet taken). `out` may be NULL: the scope keeps the fiber's
 * outcome either way (weft_scope_child()).
 * Errors: as weft_fiber_spawn_opts(); WEFT_EINVAL (s NULL);
 * WEFT_ECANCELED (the scope is cancelled or past its deadline: nothing is
 * started); WEFT_ESHUTDOWN (the scope is closed). On error fn never runs
 * and arg is untouched.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_spawn(weft_scope_t *s, weft_executor_t *ex,
                                 const weft_fiber_options_t *opts,
                                 weft_fiber_fn fn, void *arg,
                                 weft_dtor_fn arg_dtor, weft_future_t **out);

/**
 * Make a future a child of the scope: join waits for it, a fail-fast scope
 * counts its failure, and cancelling the scope cancels it. `f` is borrowed;
 * the scope takes a handle of its own.
 * Errors: WEFT_EINVAL (NULL), WEFT_ENOMEM, WEFT_ECANCELED (the scope is
 * cancelled: f is cancelled too, as if it had been a child), WEFT_ESHUTDOWN
 * (closed).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_attach(weft_scope_t *s, weft_future_t *f);

/**
 * Cancel the scope: every child is cancelled (fibers waiting their turn
 * end without running, their arg_dtor run), and so is every scope created
 * inside its fibers. Later spawns return WEFT_ECANCELED.
 * Returns 0; WEFT_EALREADY when already cancelled; WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_cancel(weft_scope_t *s);

/**
 * A future that settles once every child spawned or attached so far, and
 * any added before it settles, has finished. Fail fast: rejects with the
 * first failure (the code a child was rejected with, WEFT_ECANCELED for a
 * child cancelled, WEFT_ETIMEDOUT when the deadline passed), fulfils when
 * all fulfilled. Collect: fulfils; read each outcome with weft_scope_child().
 * A scope with no children fulfils at once. On 0, *out is one handle owned
 * by the caller.
 * Errors: WEFT_EINVAL (NULL), WEFT_ENOMEM.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_join(weft_scope_t *s, weft_future_t **out);

/**
 * Close the scope: cancel what still runs, wait for every child to finish
 * (in a fiber the fiber suspends; on another thread it blocks), then free
 * the scope. The handle is gone after the call whatever it returns.
 * Returns 0 once every child finished and the scope is freed;
 * WEFT_EDEADLK when waiting here could never end (on a loop thread outside
 * a fiber, or in a fiber of this very scope): the scope is then cancelled
 * and frees itself when its last child finishes; WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_scope_close(weft_scope_t *s);

/**
 * Number of children spawned or attached so far.
 * Thread: any thread.
 */
WEFT_EXTERN size_t weft_scope_child_count(const weft_scope_t *s);

/**
 * The i-th child's future (in the order they were spawned or attached),
 * borrowed: valid until the scope is closed. NULL when out of range.
 * Thread: any thread.
 */
WEFT_EXTERN weft_future_t *weft_scope_child(const weft_scope_t *s, size_t i);

WEFT_END_DECLS

#endif /* WEFT_FIBER_H */
