/* SPDX-License-Identifier: MIT */
/* tests/loop_util.c: the loop drivers declared in tests/loop_util.h. */
#include "loop_util.h"

void tick(weft_timer_t *t, int status, void *arg) {
  (void)t, (void)status, (void)arg; /* only wakes the poll */
}

bool drive(weft_loop_t *loop, const long *counter, long target, int64_t ms) {
  weft_timer_t watchdog;
  weft_timer_init(loop, &watchdog, tick, NULL);
  weft_timer_start(&watchdog, 10, 10);
  int64_t end = weft_clock_now_ns() + ms * 1000000;
  while (*counter < target && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  weft_timer_stop(&watchdog);
  return *counter >= target;
}

static void wd_fire(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)status;
  *(int *)arg = 1;
}

void run_until_n(weft_loop_t *loop, const int *n, int want) {
  weft_timer_t wd;
  int expired = 0;
  REQUIRE_EQ(weft_timer_init(loop, &wd, wd_fire, &expired), 0);
  REQUIRE_EQ(weft_timer_start(&wd, BOUND_MS, 0), 0);
  while (*n < want && !expired)
    if (weft_loop_run(loop, WEFT_RUN_ONCE) != 0)
      break;
  EXPECT_EQ(weft_timer_stop(&wd), 0);
  EXPECT_EQ(*n, want);
}

void chain(weft_loop_t *loop, weft_future_t *f, weft_then_fn fn, void *arg) {
  weft_future_t *g = NULL;
  int rc = weft_future_then(f, weft_loop_executor(loop), fn, arg, NULL, &g);
  REQUIRE_EQ(rc, 0);
  weft_future_release(f);
  weft_future_release(g);
}

until_t until_new(void) {
  until_t u;
  REQUIRE_EQ(weft_promise_create(&u.p, &u.f), 0);
  return u;
}

void until_done(until_t *u) {
  weft_promise_release(u->p);
  weft_future_release(u->f);
}

void quick(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)status;
  if (arg != NULL)
    (*(int *)arg)++;
}

weft_result_t twice(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) * 2);
}
