/* SPDX-License-Identifier: MIT */
/* tests/loop_util.h: driving a loop in tests (until a counter reaches a
 * target, until a test-made future settles), shared by the reactor_* and
 * net_* suites; defined once, in tests/loop_util.c. */
#ifndef WEFT_LOOP_UTIL_H
#define WEFT_LOOP_UTIL_H

#include "testutil.h"

/* A timer callback that does nothing: a repeating timer with it only
 * wakes the loop's poll. */
void tick(weft_timer_t *t, int status, void *arg);

/* Run the loop (RUN_ONCE, woken every 10 ms) until *counter >= target or
 * ms pass; true if the target was reached. */
bool drive(weft_loop_t *loop, const long *counter, long target, int64_t ms);

/* Run RUN_ONCE iterations until *n reaches want, bounded by a BOUND_MS
 * watchdog timer; expects *n == want afterwards. */
void run_until_n(weft_loop_t *loop, const int *n, int want);

/* Chain fn on f on the loop and drop both handles (releasing never
 * cancels: the continuation still runs). */
void chain(weft_loop_t *loop, weft_future_t *f, weft_then_fn fn, void *arg);

/* A future the test fulfils itself, to run the loop until a condition. */
typedef struct until {
  weft_promise_t *p;
  weft_future_t *f;
} until_t;

until_t until_new(void);
void until_done(until_t *u);

/* A post callback that counts its runs in *(int *)arg (if arg is set). */
void quick(weft_loop_t *loop, void *arg, int status);

/* A continuation: the source's integer times two. */
weft_result_t twice(void *arg, weft_future_t *src);

#endif /* WEFT_LOOP_UTIL_H */
