/* SPDX-License-Identifier: MIT */
/* tests/test_await.c: await returns when settled, times out on time, and
 * never hangs on a thread whose own queue would settle the future. */
#include "testutil.h"

#include "../lib/internal.h"

#include <stdint.h>

/* A timed wait may end this much early (clock granularity) or late
 * (a loaded 2-core machine) without being wrong. */
#define EARLY_TOLERANCE_MS 2
#define LATE_TOLERANCE_MS 2000

static void test_settled_returns_at_once(void) {
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 1);
  EXPECT_ERR(weft_future_await(f, 0), 0);
  EXPECT_ERR(weft_future_await(f, WEFT_FOREVER), 0);
  weft_future_release(f);
  weft_promise_release(p);
}

static void test_timeout(void) {
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  EXPECT_ERR(weft_future_await(f, 0), WEFT_ETIMEDOUT);
  EXPECT_ERR(weft_future_await(f, -2), WEFT_EINVAL);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_ERR(weft_future_await(f, 100), WEFT_ETIMEDOUT);
  int64_t ms = (weft_clock_now_ns() - t0) / 1000000;
  EXPECT_TRUE(ms >= 100 - EARLY_TOLERANCE_MS);
  EXPECT_TRUE(ms <= 100 + LATE_TOLERANCE_MS);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  /* the timed-out waiter is still on the list: settling must be safe */
  weft_promise_fulfil_int(p, 2);
  EXPECT_ERR(weft_future_await(f, 0), 0);
  weft_future_release(f);
  weft_promise_release(p);
}

static void *fulfil_later(void *arg) {
  weft_promise_fulfil_int(arg, 77);
  return NULL;
}

static void test_woken_by_other_thread(void) {
  for (int i = 0; i < 200; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    weft_promise_create(&p, &f);
    pthread_t t;
    pthread_create(&t, NULL, fulfil_later, p);
    EXPECT_ERR(weft_future_await(f, 20000), 0);
    EXPECT_EQ(weft_future_int(f), 77);
    pthread_join(t, NULL);
    weft_future_release(f);
    weft_promise_release(p);
  }
}

/* Any timeout up to INT64_MAX ms is a wait that long, never an overflow
 * into "already expired". The fulfilling thread waits until the awaiting
 * thread's waiter is on the future's list (white-box), so the await is
 * really waiting when the promise is fulfilled. */
static void *fulfil_when_awaited(void *arg) {
  weft_promise_t *p = arg;
  weft_future_t *f = (weft_future_t *)p; /* one allocation for both */
  int64_t deadline = weft_clock_now_ns() + (int64_t)LATE_TOLERANCE_MS * 1000000;
  while (atomic_load(&f->head) == NULL && weft_clock_now_ns() < deadline)
    sched_yield();
  weft_promise_fulfil_int(p, 3);
  return NULL;
}

static void test_timeout_up_to_int64_max(void) {
  static const int64_t timeouts[] = {INT64_MAX, INT64_MAX - 1, INT64_MAX / 1000,
                                     INT64_MAX / 1000000 + 1, 9223372036854LL};
  for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    pthread_t t;
    pthread_create(&t, NULL, fulfil_when_awaited, p);
    EXPECT_ERR(weft_future_await(f, timeouts[i]), 0);
    EXPECT_EQ(weft_future_int(f), 3);
    pthread_join(t, NULL);
    weft_future_release(f);
    weft_promise_release(p);
  }
}

/* On a dedicated thread: job A awaits a future that only job B, queued
 * behind A on the same thread, can settle. */
static weft_future_t *b_result;
static weft_result_t job_a(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_ok_int(weft_future_await(b_result, 20000));
}
static weft_result_t job_b(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_ok_int(5);
}

static void test_thread_executor_helps(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t *p;
  weft_future_t *trigger, *a;
  weft_promise_create(&p, &trigger);
  weft_future_then(trigger, ex, job_a, NULL, NULL, &a);
  weft_future_then(trigger, ex, job_b, NULL, NULL, &b_result);
  weft_promise_fulfil_int(p, 0); /* queues A, then B */
  EXPECT_ERR(weft_future_await(a, 20000), 0);
  EXPECT_ERR((int)weft_future_int(a), 0); /* A's await returned 0 */
  EXPECT_EQ(weft_future_int(b_result), 5);
  weft_future_release(a);
  weft_future_release(b_result);
  weft_future_release(trigger);
  weft_promise_release(p);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* Inline: a continuation awaits a sibling queued behind it on this thread's
 * trampoline. */
static weft_future_t *sibling;
static weft_result_t await_sibling(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_ok_int(weft_future_await(sibling, 20000));
}
static weft_result_t sibling_fn(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) * 3);
}

static void test_inline_helps(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), await_sibling, NULL, NULL, &a);
  weft_future_then(f, weft_executor_inline(), sibling_fn, NULL, NULL, &sibling);
  weft_promise_fulfil_int(p, 4);
  EXPECT_EQ(weft_future_state(a), WEFT_FULFILLED);
  EXPECT_ERR((int)weft_future_int(a), 0);
  EXPECT_EQ(weft_future_int(sibling), 12);
  weft_future_release(a);
  weft_future_release(sibling);
  weft_future_release(f);
  weft_promise_release(p);
}

/* An executor whose await refuses, as a loop will. */
static int never_submit(weft_executor_t *ex, weft_task_t *t) {
  (void)ex;
  (void)t;
  return WEFT_ESHUTDOWN;
}
static int refuse_await(weft_executor_t *ex, weft_future_t *f, int64_t d) {
  (void)ex;
  (void)f;
  (void)d;
  return WEFT_EDEADLK;
}
static const weft_executor_ops_t refusing = {.size = sizeof(
                                                 weft_executor_ops_t),
                                             .name = "refusing",
                                             .submit = never_submit,
                                             .await = refuse_await};

static void test_executor_refuses_await(void) {
  weft_executor_t ex = {&refusing};
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  weft_executor_t *prev = weft_executor_enter(&ex);
  EXPECT_TRUE(weft_executor_current() == &ex);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_ERR(weft_future_await(f, WEFT_FOREVER), WEFT_EDEADLK);
  EXPECT_TRUE(weft_clock_now_ns() - t0 < (int64_t)LATE_TOLERANCE_MS * 1000000);
  weft_executor_leave(prev);
  EXPECT_TRUE(weft_executor_current() == prev);
  weft_future_release(f);
  weft_promise_release(p);
}

static weft_result_t destroy_self(void *arg, weft_future_t *src) {
  (void)src;
  return weft_ok_int(weft_thread_executor_shutdown(arg));
}

static void test_destroy_from_own_thread(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_promise_t *p;
  weft_future_t *f, *a;
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 0);
  weft_future_then(f, weft_thread_executor_get(te), destroy_self, te, NULL, &a);
  EXPECT_ERR(weft_future_await(a, 20000), 0);
  EXPECT_ERR((int)weft_future_int(a), WEFT_EDEADLK);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

static const test_case_t cases[] = {
    {"settled returns at once", test_settled_returns_at_once},
    {"timeout", test_timeout},
    {"woken by another thread", test_woken_by_other_thread},
    {"timeout up to INT64_MAX ms", test_timeout_up_to_int64_max},
    {"thread executor helps", test_thread_executor_helps},
    {"inline trampoline helps", test_inline_helps},
    {"executor refuses await", test_executor_refuses_await},
    {"destroy from own thread", test_destroy_from_own_thread},
    {NULL, NULL}};
const test_suite_t suite_await = {"await", cases};
