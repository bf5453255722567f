/* SPDX-License-Identifier: MIT */
/* weft/retry.h: run an operation again after a growing delay until it
 * succeeds, its attempts run out, it fails in a way not worth retrying, or
 * an overall deadline passes; one future for the whole. Guide:
 * docs/retries.md. */
#ifndef WEFT_RETRY_H
#define WEFT_RETRY_H

#include <weft/common.h>
#include <weft/executor.h>
#include <weft/future.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * weft_retry_start() calls the attempt function on the caller's executor
 * with attempt number 1, 2, ...; each call starts one attempt and returns
 * its future (weft_follow) or its outcome at once (weft_ok, weft_err). When
 * an attempt fails and the policy allows another, a backoff timer (weft's
 * own timer thread, so any executor works, a loop's or a pool's) waits the
 * next delay, then the next attempt starts on the executor again. The
 * retry's future settles once:
 *   - fulfilled like the first attempt that succeeds (its value, see
 *     weft_retry_start() for who owns it);
 *   - rejected with the last attempt's error when the attempts run out or
 *     should_retry() says no;
 *   - rejected with WEFT_ETIMEDOUT when the deadline passes during an
 *     attempt (the attempt is cancelled) or when the next attempt could not
 *     start before it (the retry does not wait for nothing);
 *   - cancelled when the caller cancels it: the attempt in flight is
 *     cancelled and the backoff timer stopped, and no attempt starts after.
 *
 * Delays: the n-th delay (after attempt n failed) is
 * min(max_delay_ms, base_delay_ms * 2^(n-1)), then jittered (see
 * weft_retry_jitter_t). A delay counts from the failure.
 */

/**
 * How a delay d is randomised. Full jitter is the default: with many
 * clients failing at once (a server restarts), it spreads their retries
 * widest and so gives the server the smallest bursts, at the price that a
 * delay may be close to zero. Equal jitter keeps at least half of every
 * delay (a floor between attempts, for a server that needs time to come
 * back). None gives the exact delays: tests, or a single client.
 */
typedef enum weft_retry_jitter {
  WEFT_RETRY_JITTER_FULL = 0,  /* uniform in [0, d] */
  WEFT_RETRY_JITTER_EQUAL = 1, /* d/2 + uniform in [0, d/2] */
  WEFT_RETRY_JITTER_NONE = 2   /* exactly d */
} weft_retry_jitter_t;

/** max_attempts for no limit: retry until success, deadline or cancel. */
#define WEFT_RETRY_UNLIMITED ((unsigned)-1)

/**
 * A retry policy: zero-initialise, set `size` to sizeof(weft_retry_policy_t)
 * and the fields you need; every zero is the default (docs/README.md,
 * "Structs that grow"). weft copies it: the caller's struct may go once
 * weft_retry_start() returns.
 */
typedef struct weft_retry_policy {
  size_t size;                /* sizeof(weft_retry_policy_t) */
  unsigned max_attempts;      /* attempts in all, the first included; 0: 3;
                            WEFT_RETRY_UNLIMITED: no limit */
  weft_retry_jitter_t jitter; /* 0: full jitter */
  int64_t base_delay_ms;      /* the first delay; 0: 100 ms */
  int64_t max_delay_ms;       /* no delay longer; 0: 30 s (or base_delay_ms if
                           that is longer); else at least base_delay_ms */
  int64_t deadline_ns;        /* on weft_clock_now_ns()'s clock; 0: none */
  /* Whether a failed attempt (number `attempt`, with `err`) is worth
   * another; called on the executor with the retry's arg, only while
   * attempts remain. NULL: every error but WEFT_ECANCELED. */
  bool (*should_retry)(void *arg, unsigned attempt, int err);
  void *reserved[4]; /* zero */
} weft_retry_policy_t;

/**
 * An attempt function: start attempt number `attempt` (1 for the first)
 * and return weft_follow(f) with its future (handing one handle to the
 * retry), or its outcome at once: weft_ok / weft_ok_int for a success,
 * weft_err(e) for a failure that counts as this attempt's (a start that
 * failed, say). weft_follow(NULL) counts as a failure with WEFT_EINVAL.
 * The retry cancels the attempt's future when it ends first (cancel,
 * deadline): return a future that is the attempt's own, not one shared.
 * Runs on the retry's executor, never twice at once for one retry.
 */
typedef weft_result_t (*weft_retry_fn)(void *arg, unsigned attempt);

/**
 * Start a retry: call `fn(arg, attempt)` on `ex` for attempt 1 (submitted,
 * not called before this returns), then as the policy says (see "Model"
 * above); `policy` NULL means every default.
 *
 * On 0, *out is one handle on the retry's future, owned by the caller.
 * When an attempt's future fulfils, the retry's future fulfils with the
 * same value: weft_future_value() / weft_future_int() read it, borrowed
 * from that attempt's future, which the retry's future keeps alive (and
 * which still owns the value: its destructor runs once both are gone). To
 * take a value that only its own future hands over (a connected socket:
 * weft_socket_take()), pass weft_retry_attempt(*out). A weft_ok() value
 * returned by fn is owned by the retry's future, as a then's is.
 *
 * Cancelling *out cancels the attempt in flight and stops the backoff
 * timer; no attempt starts afterwards (one whose fn has begun finishes,
 * and what it returns is cancelled or freed). Releasing *out cancels nothing: the
 * retry runs to its end. The deadline cancels the attempt in flight and
 * settles WEFT_ETIMEDOUT. The executor may be shut down while the retry
 * runs (weft's executors stay readable for it: the `hold` op of
 * weft_executor_ops_t; an executor without one must outlive the retry's
 * future): if it refuses the next attempt, the future rejects with the
 * executor's error (WEFT_ESHUTDOWN, ...); if a timer
 * (the deadline's, set once the first attempt is queued, or a backoff's)
 * cannot be set, with WEFT_ENOMEM or WEFT_EAGAIN (weft's timer thread could
 * not start), the attempt in flight cancelled.
 *
 * `arg_dtor(arg)` (if not NULL) runs exactly once, once the retry has
 * ended and fn will not run again (after the last call to fn returned), on
 * the thread that ends it: the executor's, weft's timer thread or the
 * thread that cancels (or the caller's, when it ends inside this call; or
 * the one that settled the last attempt, when the executor refused to take
 * its outcome). It may run after the future settled: a cancel settles the
 * future at once, while fn may still be running.
 *
 * A deadline that has already passed settles *out with WEFT_ETIMEDOUT
 * before this returns, with no attempt (arg_dtor has run then).
 * Errors: WEFT_EINVAL (ex, fn or out NULL; policy->size below the first
 * version's struct or above 4096; a delay below 0; max_delay_ms not 0 and
 * below base_delay_ms; jitter not one of weft_retry_jitter_t; deadline_ns
 * below 0), WEFT_ENOTSUP (a reserved slot or an unknown byte past the
 * struct set), WEFT_ENOMEM, or the executor's submit error
 * (WEFT_ESHUTDOWN, ...).
 * On error nothing was started, fn never runs, *out is untouched and arg
 * is not freed (arg_dtor is not called).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_retry_start(weft_executor_t *ex,
                                 const weft_retry_policy_t *policy,
                                 weft_retry_fn fn, void *arg,
                                 weft_dtor_fn arg_dtor, weft_future_t **out);

/**
 * The attempt future whose success fulfilled the retry future `f`,
 * borrowed: valid while the caller holds `f`. NULL when `f` is NULL, not a
 * retry's future, not fulfilled, or fulfilled by a weft_ok() that fn
 * returned (no attempt future).
 * Thread: any thread.
 */
WEFT_EXTERN weft_future_t *weft_retry_attempt(const weft_future_t *f);

/**
 * How many attempts the retry of future `f` has started so far (calls of
 * fn that began); final once `f` has settled. 0 for
 * NULL or a future that is not a retry's.
 * Thread: any thread.
 */
WEFT_EXTERN unsigned weft_retry_attempt_count(const weft_future_t *f);

WEFT_END_DECLS

#endif /* WEFT_RETRY_H */
