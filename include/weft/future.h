/* SPDX-License-Identifier: MIT */
/* weft/future.h: promises (write end), futures (read end), continuations,
 * cancellation, await and combinators. Life cycle: a promise/future pair
 * is created; each handle is released (the last release frees); a pending
 * future is cancelled, never closed. Design: docs/design/future.md. */
#ifndef WEFT_FUTURE_H
#define WEFT_FUTURE_H

#include <weft/common.h>
#include <weft/error.h>
#include <weft/executor.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * A promise and its future share one reference-counted allocation. The
 * promise settles it exactly once: fulfilled (a pointer with an optional
 * destructor, or an integer carried without allocation), rejected (a negative
 * WEFT_E* code) or cancelled. Once settled it never changes.
 *
 * Handles: every weft_future_t * or weft_promise_t * a weft call hands to
 * the caller is one reference the caller owns and gives back with the
 * matching release. Calls that take a future as input borrow it.
 *
 * Cancellation travels upstream. Cancelling a pending future settles it as
 * cancelled at once (waiters wake, continuations see WEFT_ECANCELED), runs
 * its producer's cancel hook once, and then asks what it waited on (the
 * source of a then, the inputs of a combinator) to cancel too, but only an
 * input that nothing else still needs. A future is needed while a caller
 * holds a handle to it or a pending then/combinator waits on it; releasing a
 * handle never cancels anything.
 */

typedef struct weft_promise weft_promise_t;

/** The states of a future. PENDING until it settles, then one of the rest. */
typedef enum weft_state {
  WEFT_PENDING = 0,
  WEFT_FULFILLED = 1,
  WEFT_REJECTED = 2,
  WEFT_CANCELLED = 3
} weft_state_t;

/** A producer's cancel hook: runs at most once, on the cancelling thread. */
typedef void (*weft_cancel_fn)(void *arg);

/* ------------------------------------------------------------------ */
/* Promises                                                             */
/* ------------------------------------------------------------------ */

/**
 * Create a pending promise/future pair in one allocation.
 *
 * On 0, *promise and *future are each one reference owned by the caller.
 * Errors: WEFT_EINVAL (an out pointer NULL), WEFT_ENOMEM. Outputs are
 * untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_create(weft_promise_t **promise,
                                    weft_future_t **future);

/**
 * Fulfil with a pointer value. On 0 the future owns `value` and calls
 * `dtor(value)` (if not NULL) once, when the last reference goes.
 * Errors: WEFT_EINVAL (promise NULL or already released), WEFT_EALREADY
 * (already fulfilled or rejected), WEFT_ECANCELED (the future was cancelled
 * first). On any error the caller keeps `value`.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_fulfil(weft_promise_t *promise, void *value,
                                    weft_dtor_fn dtor);

/**
 * Fulfil with an integer carried inside the future (no allocation).
 * Errors: as weft_promise_fulfil().
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_fulfil_int(weft_promise_t *promise,
                                        intptr_t value);

/**
 * Reject with `err`, a negative code (any WEFT_E* or another negative value
 * of the caller's own).
 * Errors: WEFT_EINVAL (promise NULL or released, or err >= 0),
 * WEFT_EALREADY, WEFT_ECANCELED, as for weft_promise_fulfil().
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_reject(weft_promise_t *promise, int err);

/**
 * Install the producer's cancel hook: `fn(arg)` runs once if the future is
 * cancelled while pending (on the cancelling thread, after the future
 * settled as cancelled), and never otherwise. The hook must not block.
 * Errors: WEFT_EINVAL (promise or fn NULL), WEFT_EBUSY (a hook is already
 * installed), WEFT_ECANCELED (already cancelled: `fn` is not called, the
 * producer should stop now), WEFT_EALREADY (already settled otherwise).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_on_cancel(weft_promise_t *promise,
                                       weft_cancel_fn fn, void *arg);

/**
 * Cancellation token: true if the future was cancelled; false if not
 * (including when it was settled otherwise) and for NULL. A running
 * producer polls it to stop early.
 * Thread: any thread.
 */
WEFT_EXTERN bool weft_promise_is_cancelled(const weft_promise_t *promise);

/**
 * Give back the promise reference. A promise released while its future is
 * pending rejects the future with WEFT_EBROKEN.
 * Returns 0, or WEFT_EINVAL for NULL or a second release of the same promise
 * (caught while the shared state is still alive).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_promise_release(weft_promise_t *promise);

/* ------------------------------------------------------------------ */
/* Futures                                                              */
/* ------------------------------------------------------------------ */

/**
 * Take one more handle on `f`; give it back with weft_future_release().
 * Only a caller that holds a handle may retain.
 * Errors: WEFT_EINVAL (NULL, or nothing holds `f` any more: no handle and
 * no pending then or combinator; a retain without a handle while such a
 * consumer still holds `f` is not caught).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_retain(weft_future_t *f);

/**
 * Give back one handle. The shared state (and a fulfilled value, through its
 * destructor) is freed when the last handle and every internal user are gone.
 * Releasing never cancels.
 * Errors: WEFT_EINVAL (NULL, or more releases than handles, caught while the
 * state is still alive and no pending then or combinator holds it: the
 * extra release would otherwise take that consumer's hold).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_release(weft_future_t *f);

/**
 * Current state. A future that is being settled on another thread reads as
 * pending until the settle is complete. Returns WEFT_PENDING for NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_state_t weft_future_state(const weft_future_t *f);

/**
 * Outcome code: 0 when fulfilled, the rejection code when rejected,
 * WEFT_ECANCELED when cancelled, WEFT_EPENDING while pending, WEFT_EINVAL
 * for NULL.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_error(const weft_future_t *f);

/**
 * The fulfilled pointer value, borrowed: valid while the caller holds a
 * handle. NULL when not fulfilled (or fulfilled with NULL or an integer).
 * Thread: any thread.
 */
WEFT_EXTERN void *weft_future_value(const weft_future_t *f);

/**
 * The fulfilled integer value (what weft_promise_fulfil_int stored, or the
 * pointer's bits for a pointer value); 0 when not fulfilled.
 * Thread: any thread.
 */
WEFT_EXTERN intptr_t weft_future_int(const weft_future_t *f);

/**
 * Cancel a pending future: it settles as cancelled at once, its producer's
 * cancel hook runs once, its continuations and waiters see WEFT_ECANCELED,
 * and the request goes upstream to inputs nothing else needs.
 * Returns 0 when this call cancelled it; WEFT_EALREADY when it had already
 * settled (including by an earlier cancel): nothing changes then, and what
 * the settling side wrote before it settled (a read's bytes in the
 * caller's buffer, say) is visible to the caller once this returns.
 * Errors: WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_cancel(weft_future_t *f);

/**
 * Wait until `f` settles, for at most `timeout_ms` milliseconds
 * (WEFT_FOREVER: no limit; 0: just check; any value up to INT64_MAX is a
 * wait that long).
 *
 * In a fiber (weft/fiber.h) it suspends the fiber, not the thread, and
 * returns as below, or WEFT_ECANCELED (WEFT_ETIMEDOUT for a scope's
 * deadline) once the fiber is cancelled; WEFT_EDEADLK only when f is the
 * fiber's own future. The rest of this comment is about awaits outside a
 * fiber.
 *
 * It never hangs silently: on a thread running an executor's work (a pool
 * worker, a loop, a dedicated thread) the executor is asked first and either
 * makes progress while waiting or refuses with WEFT_EDEADLK. A pool worker
 * runs any queued job of its pool while it waits (its own deque first,
 * then the other workers' deques and the jobs submitted from outside) and
 * sleeps only when there is none; past 128 nested awaits on one worker it
 * runs only the awaiting job's own descendants (weft/pool.h, "Await from
 * a job" and "Nesting").
 * Returns 0 once settled (read the outcome with weft_future_error()),
 * WEFT_ETIMEDOUT when time ran out, WEFT_EDEADLK when waiting here could
 * never end (on a pool worker: f is a job running below the await on the
 * same worker's stack, or, nested past the limit, f is no running job of
 * that pool), WEFT_EINVAL (NULL, or timeout below -1),
 * WEFT_ENOMEM.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_await(weft_future_t *f, int64_t timeout_ms);

/* ------------------------------------------------------------------ */
/* Continuations                                                        */
/* ------------------------------------------------------------------ */

/**
 * What a continuation or a job returns: a value, an error, or a future to
 * follow. Build it only with the four constructors below (weft_ok,
 * weft_ok_int, weft_err, weft_follow). They are the one exception to
 * weft_<noun>_<verb> names: each is the whole return expression of a
 * continuation (`return weft_err(WEFT_EPIPE);`), where a longer name would
 * bury the outcome; they are static inline, so no symbol is exported; and
 * their type, weft_result_t, is the noun they would carry. The layout is
 * fixed: new kinds of result fit in `kind` without growing the struct.
 */
typedef struct weft_result {
  int kind; /* WEFT__R_* below; use the constructors */
  int err;
  union {
    void *ptr;
    intptr_t i;
    weft_future_t *future;
  } u;
  weft_dtor_fn dtor;
} weft_result_t;

enum { WEFT__R_PTR = 0, WEFT__R_INT = 1, WEFT__R_ERR = 2, WEFT__R_FOLLOW = 3 };

/** Fulfil the derived future with `ptr`; it owns ptr (and calls dtor). */
static inline weft_result_t weft_ok(void *ptr, weft_dtor_fn dtor) {
  weft_result_t r = {WEFT__R_PTR, 0, {0}, dtor};
  r.u.ptr = ptr;
  return r;
}

/** Fulfil the derived future with an integer. */
static inline weft_result_t weft_ok_int(intptr_t v) {
  weft_result_t r = {WEFT__R_INT, 0, {0}, 0};
  r.u.i = v;
  return r;
}

/** Reject the derived future with a negative code (>= 0 becomes EINVAL). */
static inline weft_result_t weft_err(int err) {
  weft_result_t r = {WEFT__R_ERR, err < 0 ? err : WEFT_EINVAL, {0}, 0};
  return r;
}

/**
 * Settle the derived future as `f` settles (flattening). Hands one handle on
 * `f` to weft: retain first when returning a future you keep using (the
 * source itself included). NULL rejects with WEFT_EINVAL.
 *
 * A future cannot follow itself (Promises/A+ 2.3.1): when `f` is the derived
 * future of this very continuation, or a future already following it (the
 * derived future of another then whose continuation returned
 * weft_follow(derived)), the derived future is rejected with WEFT_ECYCLE at
 * once and the handle on `f` is given back. A longer cycle (through three
 * or more thens, or through a combinator) is not detected: its futures stay
 * pending until one of them is cancelled.
 */
static inline weft_result_t weft_follow(weft_future_t *f) {
  weft_result_t r = {WEFT__R_FOLLOW, 0, {0}, 0};
  r.u.future = f;
  return r;
}

/**
 * A continuation: runs once with the settled source (borrowed for the call;
 * retain it to keep it) and the caller's `arg`.
 */
typedef weft_result_t (*weft_then_fn)(void *arg, weft_future_t *src);

/**
 * Run `fn(arg, src)` on `ex` once `src` settles, whatever the outcome, and
 * settle the returned future with what fn returns (following a returned
 * future until it settles). Like weft_pool_submit() and weft_future_watch(),
 * it takes `arg_dtor` (NULL when arg needs no freeing), so an argument is
 * freed even when fn never runs.
 *
 * `fn` runs on `ex`, never on the settling thread unless `ex` is
 * weft_executor_inline(). If the derived future is cancelled before fn
 * starts, fn never runs and `arg_dtor(arg)` (if given) runs once instead;
 * otherwise fn owns arg. If `ex` refuses the task when src settles, the
 * derived future is rejected with the executor's error and arg_dtor runs.
 * If fn returns weft_follow() of the derived future itself (or of a future
 * already following it), the derived future is rejected with WEFT_ECYCLE
 * (see weft_follow()).
 * On 0, *out is one handle owned by the caller; the caller keeps its own
 * handle on src.
 * Errors: WEFT_EINVAL (src, ex, fn or out NULL), WEFT_ENOMEM. On error fn
 * never runs and arg is untouched (arg_dtor is not called).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_then(weft_future_t *src, weft_executor_t *ex,
                                 weft_then_fn fn, void *arg,
                                 weft_dtor_fn arg_dtor, weft_future_t **out);

/** A watcher callback: runs once with the settled future (borrowed for the
 * call; retain it to keep it) and the caller's `arg`. */
typedef void (*weft_watch_fn)(void *arg, weft_future_t *f);

/**
 * Run `fn(arg, f)` on `ex` once `f` settles, whatever the outcome: a
 * continuation with no derived future, for code that would release that
 * future unread (a server's read -> write -> read chain). weft_future_then()
 * is the default; watch exists because that derived future costs its
 * allocation and settling on every step of such a chain. It costs one small
 * allocation and no atomic operation on f besides attaching to it: none of
 * a derived future's settling, no reference taken or released.
 *
 * The watch takes over the caller's handle on f (retain first to keep
 * one) and holds it, and with it the interest in f, until fn has returned:
 * f is not cancelled for want of a handle meanwhile. A watch cannot be
 * cancelled; cancel f itself to stop the operation (fn then sees f
 * cancelled). `fn` runs on `ex`, never on the settling thread unless `ex`
 * is weft_executor_inline(). If `ex` refuses the task when f settles (a
 * closed loop, say), fn never runs and `arg_dtor(arg)` (if given) runs
 * once instead, on the settling thread; otherwise fn owns arg.
 * Errors: WEFT_EINVAL (f, ex or fn NULL), WEFT_ENOMEM. On error fn never
 * runs, arg is untouched (arg_dtor is not called) and the caller keeps its
 * handle on f.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_watch(weft_future_t *f, weft_executor_t *ex,
                                  weft_watch_fn fn, void *arg,
                                  weft_dtor_fn arg_dtor);

/**
 * Room for one watch in the caller's memory (a connection's struct, say),
 * for weft_watch_start(): a continuation that needs no allocation, so it
 * cannot fail for memory. Zero-initialise it (or `= {0}`) before its first
 * start; weft_watch_start() makes it active, and it is the caller's again,
 * free to start anew or to free, once the watch's function (or its
 * arg_dtor) has begun. Opaque; its size is fixed.
 */
typedef struct weft_watch {
  void *opaque_[8];
} weft_watch_t;

/**
 * Continue f and drop the handle, in one call that cannot fail for memory:
 * run `fn(arg, f)` on `ex` once `f` settles, exactly as weft_future_watch()
 * does (it takes over the caller's handle on f, holds the interest in f
 * until fn has returned, and runs arg_dtor(arg) instead of fn when `ex`
 * refuses the task), using `w` instead of an allocation. This is the call
 * for a callback chain (read -> handle -> write -> read): with the node in
 * the connection's struct, no step of the chain has an error path but the
 * operation's own.
 *
 * weft reads and writes `w` until fn (or arg_dtor) begins, and never after:
 * fn may start `w` again at once, for the connection's next step.
 * Returns 0. Errors: WEFT_EINVAL (w, f, ex or fn NULL); WEFT_EBUSY (w is
 * still active: its function has not begun). On error nothing is started
 * and the caller keeps its handle on f; arg is untouched.
 * Thread: any thread; a given `w` from one thread at a time.
 */
WEFT_EXTERN int weft_watch_start(weft_watch_t *w, weft_future_t *f,
                                 weft_executor_t *ex, weft_watch_fn fn,
                                 void *arg, weft_dtor_fn arg_dtor);

/**
 * True from a successful weft_watch_start() on `w` until its function (or
 * arg_dtor) begins; false for NULL and for a zeroed `w`.
 * Thread: any thread.
 */
WEFT_EXTERN bool weft_watch_is_active(const weft_watch_t *w);

/* ------------------------------------------------------------------ */
/* Combinators                                                          */
/* ------------------------------------------------------------------ */
/*
 * Each takes `n` borrowed inputs (the combinator holds its own handles until
 * it is freed) and gives back one handle in *out. Inputs may repeat. When a
 * combinator settles, it no longer needs its remaining inputs and cancels
 * those nothing else needs. Cancelling a combinator cancels the inputs
 * nothing else needs. Errors for all: WEFT_EINVAL (out NULL, inputs NULL
 * with n > 0, a NULL input, or n beyond the bounds given), WEFT_ENOMEM;
 * *out untouched on error. Each is named after the combinator it builds
 * (all, any, race, ...: the usual names), with future as its noun.
 * Thread: any thread.
 */

/** Fulfils (no value) when every input fulfils; rejects with the first
 * failure's code (a cancelled input counts as WEFT_ECANCELED). n = 0
 * fulfils at once. */
WEFT_EXTERN int weft_future_all(weft_future_t *const *inputs, size_t n,
                                weft_future_t **out);

/** Fulfils (no value) when every input has settled; never rejects. */
WEFT_EXTERN int weft_future_all_settled(weft_future_t *const *inputs, size_t n,
                                        weft_future_t **out);

/** First success: fulfils with the first input to fulfil (its value, read
 * through weft_future_value/int); rejects with WEFT_EALLFAILED when every
 * input failed. n must be at least 1. */
WEFT_EXTERN int weft_future_any(weft_future_t *const *inputs, size_t n,
                                weft_future_t **out);

/** First settled: settles exactly like the first input to settle (its value,
 * its error, or cancelled when the winner was cancelled). n must be at
 * least 1. */
WEFT_EXTERN int weft_future_race(weft_future_t *const *inputs, size_t n,
                                 weft_future_t **out);

/** First k successes of n: fulfils (no value) when k inputs have fulfilled;
 * rejects with WEFT_EALLFAILED as soon as that can no longer happen.
 * 1 <= k <= n. */
WEFT_EXTERN int weft_future_some(weft_future_t *const *inputs, size_t n,
                                 size_t k, weft_future_t **out);

/**
 * Number of inputs of a combinator future (0 for any other future or NULL).
 * Thread: any thread.
 */
WEFT_EXTERN size_t weft_future_input_count(const weft_future_t *f);

/**
 * The i-th input of a combinator, borrowed (valid while the caller holds the
 * combinator). NULL when out of range or not a combinator.
 * Thread: any thread.
 */
WEFT_EXTERN weft_future_t *weft_future_input(const weft_future_t *f, size_t i);

/**
 * Index of the k-th input to settle among those the combinator counted
 * (k = 0 is the winner of any/race; for some, the k-th success).
 * Returns 0 and sets *index; WEFT_EPENDING when fewer than k+1 inputs have
 * been counted; WEFT_EINVAL (NULL, not a combinator, or k not below the
 * number of inputs).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_future_order(const weft_future_t *f, size_t k,
                                  size_t *index);

WEFT_END_DECLS

#endif /* WEFT_FUTURE_H */
