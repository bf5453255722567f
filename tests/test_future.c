/* SPDX-License-Identifier: MIT */
/* tests/test_future.c: every state transition of a promise/future pair,
 * double settle, abandoned promises, hooks, handles and bad arguments. */
#include "testutil.h"

#include <stdlib.h>

static atomic_int dtor_runs, hook_runs;
static void count_dtor(void *p) {
  atomic_fetch_add(&dtor_runs, 1);
  free(p);
}
static void count_hook(void *arg) {
  atomic_fetch_add(&hook_runs, 1);
  *(int *)arg += 1;
}

static void pair(weft_promise_t **p, weft_future_t **f) {
  REQUIRE_EQ(weft_promise_create(p, f), 0);
}

static void test_pending(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  EXPECT_ERR(weft_future_error(f), WEFT_EPENDING);
  EXPECT_TRUE(weft_future_value(f) == NULL);
  EXPECT_EQ(weft_future_int(f), 0);
  EXPECT_EQ(weft_promise_is_cancelled(p), 0);
  EXPECT_EQ(weft_future_release(f), 0);
  EXPECT_EQ(weft_promise_release(p), 0);
}

static void test_fulfil_ptr_dtor_once(void) {
  weft_promise_t *p;
  weft_future_t *f;
  atomic_store(&dtor_runs, 0);
  pair(&p, &f);
  int *v = malloc(sizeof *v);
  *v = 7;
  EXPECT_EQ(weft_promise_fulfil(p, v, count_dtor), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_error(f), 0);
  EXPECT_TRUE(weft_future_value(f) == v);
  EXPECT_EQ(*(int *)weft_future_value(f), 7);
  EXPECT_EQ(weft_future_retain(f), 0);
  EXPECT_EQ(weft_promise_release(p), 0);
  EXPECT_EQ(weft_future_release(f), 0);
  EXPECT_EQ(atomic_load(&dtor_runs), 0); /* one handle still held */
  EXPECT_EQ(weft_future_release(f), 0);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
}

static void test_fulfil_int(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_EQ(weft_promise_fulfil_int(p, -123456789), 0);
  EXPECT_EQ(weft_future_int(f), -123456789);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_promise_release(p);
  weft_future_release(f);
}

static void test_reject(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_ERR(weft_promise_reject(p, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_reject(p, 5), WEFT_EINVAL);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  EXPECT_EQ(weft_promise_reject(p, WEFT_EIO), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(f), WEFT_EIO);
  EXPECT_TRUE(weft_future_value(f) == NULL);
  weft_promise_release(p);
  weft_future_release(f);
}

static void test_double_settle(void) {
  weft_promise_t *p;
  weft_future_t *f;
  atomic_store(&dtor_runs, 0);
  pair(&p, &f);
  EXPECT_EQ(weft_promise_fulfil_int(p, 1), 0);
  int *v = malloc(sizeof *v);
  EXPECT_ERR(weft_promise_fulfil(p, v, count_dtor), WEFT_EALREADY);
  EXPECT_EQ(atomic_load(&dtor_runs), 0); /* the caller still owns v */
  free(v);
  EXPECT_ERR(weft_promise_fulfil_int(p, 2), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_reject(p, WEFT_EIO), WEFT_EALREADY);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  EXPECT_EQ(weft_future_int(f), 1);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_promise_release(p);
  weft_future_release(f);
}

static void test_settle_after_cancel(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  EXPECT_ERR(weft_future_error(f), WEFT_ECANCELED);
  EXPECT_EQ(weft_promise_is_cancelled(p), 1);
  EXPECT_ERR(weft_promise_fulfil_int(p, 1), WEFT_ECANCELED);
  EXPECT_ERR(weft_promise_reject(p, WEFT_EIO), WEFT_ECANCELED);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  weft_promise_release(p);
  weft_future_release(f);
}

static void test_abandoned(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_EQ(weft_promise_release(p), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(f), WEFT_EBROKEN);
  EXPECT_ERR(weft_promise_release(p), WEFT_EINVAL); /* double release */
  EXPECT_ERR(weft_promise_fulfil_int(p, 1), WEFT_EINVAL);
  weft_future_release(f);
}

static void test_settled_then_released_is_not_broken(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  weft_promise_fulfil_int(p, 3);
  weft_promise_release(p);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), 3);
  weft_future_release(f);
}

static void test_cancel_hook(void) {
  weft_promise_t *p;
  weft_future_t *f;
  int seen = 0;
  atomic_store(&hook_runs, 0);
  pair(&p, &f);
  EXPECT_EQ(weft_promise_on_cancel(p, count_hook, &seen), 0);
  EXPECT_ERR(weft_promise_on_cancel(p, count_hook, &seen), WEFT_EBUSY);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(atomic_load(&hook_runs), 1);
  EXPECT_ERR(weft_promise_on_cancel(p, count_hook, &seen), WEFT_ECANCELED);
  EXPECT_EQ(seen, 1);
  weft_promise_release(p);
  weft_future_release(f);

  /* a hook never runs when the future settles otherwise */
  pair(&p, &f);
  EXPECT_EQ(weft_promise_on_cancel(p, count_hook, &seen), 0);
  weft_promise_fulfil_int(p, 1);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_on_cancel(p, count_hook, &seen), WEFT_EALREADY);
  weft_promise_release(p);
  weft_future_release(f);
  EXPECT_EQ(seen, 1);
}

static void test_handles(void) {
  weft_promise_t *p;
  weft_future_t *f;
  pair(&p, &f);
  EXPECT_EQ(weft_future_retain(f), 0);
  EXPECT_EQ(weft_future_release(f), 0);
  weft_promise_release(p); /* state stays alive through f */
  EXPECT_EQ(weft_future_release(f), 0);
}

static void test_null_arguments(void) {
  weft_promise_t *p;
  weft_future_t *f;
  EXPECT_ERR(weft_promise_create(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_create(&p, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_fulfil(NULL, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_fulfil_int(NULL, 1), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_reject(NULL, WEFT_EIO), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_on_cancel(NULL, count_hook, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_promise_is_cancelled(NULL), false);
  EXPECT_ERR(weft_promise_release(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_retain(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_release(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_cancel(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await(NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_future_error(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_future_state(NULL), WEFT_PENDING);
  EXPECT_TRUE(weft_future_value(NULL) == NULL);
  EXPECT_EQ(weft_future_int(NULL), 0);
  pair(&p, &f);
  EXPECT_ERR(weft_promise_on_cancel(p, NULL, NULL), WEFT_EINVAL);
  weft_promise_release(p);
  weft_future_release(f);
  weft_allocator_t bad = {NULL, NULL, NULL, {0}};
  EXPECT_ERR(weft_allocator_set(&bad), WEFT_EINVAL);
  EXPECT_ERR(weft_executor_submit(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_thread_executor_create(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_thread_executor_shutdown(NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_thread_executor_get(NULL) == NULL);
}

static void test_version(void) {
  EXPECT_EQ(weft_version_hex(), WEFT_VERSION_HEX);
  EXPECT_TRUE(weft_version_string() != NULL);
  EXPECT_EQ(WEFT_VERSION_HEX >> 16, WEFT_VERSION_MAJOR);
}

/* weft_future_value() is a pointer only when one was fulfilled: an integer
 * reads as NULL there (and as itself through weft_future_int), however it
 * travelled: directly, through a then, a followed future or a combinator. */
static weft_result_t pass_int(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src));
}
static weft_result_t follow_arg(void *arg, weft_future_t *src) {
  (void)src;
  weft_future_retain(arg);
  return weft_follow(arg);
}

static void expect_int_only(weft_future_t *f, intptr_t v) {
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), v);
  EXPECT_TRUE(weft_future_value(f) == NULL);
}

static void test_value_of_int_is_null(void) {
  weft_promise_t *p, *q;
  weft_future_t *f, *g, *t, *fl, *any, *race;
  pair(&p, &f);
  pair(&q, &g);
  REQUIRE_EQ(
      weft_future_then(f, weft_executor_inline(), pass_int, NULL, NULL, &t), 0);
  REQUIRE_EQ(
      weft_future_then(g, weft_executor_inline(), follow_arg, f, NULL, &fl), 0);
  REQUIRE_EQ(weft_future_any(&f, 1, &any), 0);
  REQUIRE_EQ(weft_future_race(&f, 1, &race), 0);
  EXPECT_EQ(weft_promise_fulfil_int(q, 0), 0); /* fl now follows f */
  EXPECT_EQ(weft_promise_fulfil_int(p, 0x1234), 0);
  expect_int_only(f, 0x1234);
  expect_int_only(t, 0x1234);
  expect_int_only(fl, 0x1234);
  expect_int_only(any, 0x1234);
  expect_int_only(race, 0x1234);
  weft_future_t *fs[] = {t, fl, any, race, f, g};
  for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
    weft_future_release(fs[i]);
  weft_promise_release(p);
  weft_promise_release(q);

  /* a pointer stays a pointer the same ways; its bits read as an integer */
  static int cell = 5;
  pair(&p, &f);
  REQUIRE_EQ(weft_future_race(&f, 1, &race), 0);
  EXPECT_EQ(weft_promise_fulfil(p, &cell, NULL), 0);
  EXPECT_TRUE(weft_future_value(f) == &cell);
  EXPECT_TRUE(weft_future_value(race) == &cell);
  EXPECT_EQ(weft_future_int(race), (intptr_t)&cell);
  weft_future_release(race);
  weft_future_release(f);
  weft_promise_release(p);
}

static const test_case_t cases[] = {
    {"pending", test_pending},
    {"fulfil ptr, dtor once", test_fulfil_ptr_dtor_once},
    {"fulfil int", test_fulfil_int},
    {"value of an integer is NULL", test_value_of_int_is_null},
    {"reject", test_reject},
    {"double settle", test_double_settle},
    {"settle after cancel", test_settle_after_cancel},
    {"abandoned promise", test_abandoned},
    {"settled then released", test_settled_then_released_is_not_broken},
    {"cancel hook", test_cancel_hook},
    {"handles", test_handles},
    {"NULL arguments", test_null_arguments},
    {"version", test_version},
    {NULL, NULL}};
const test_suite_t suite_future = {"future", cases};
