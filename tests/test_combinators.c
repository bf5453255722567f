/* SPDX-License-Identifier: MIT */
/* tests/test_combinators.c: all, all-settled, any, race and some(k of n),
 * including the cancellation of inputs they no longer need. */
#include "testutil.h"

#define N 4
typedef struct {
  weft_promise_t *p[N];
  weft_future_t *f[N];
} set_t;

static void make(set_t *s) {
  for (int i = 0; i < N; i++)
    REQUIRE_EQ(weft_promise_create(&s->p[i], &s->f[i]), 0);
}
static void drop_handles(set_t *s) { /* the combinator is now the consumer */
  for (int i = 0; i < N; i++)
    weft_future_release(s->f[i]);
}
static void done(set_t *s, weft_future_t *c) {
  weft_future_release(c);
  for (int i = 0; i < N; i++)
    weft_promise_release(s->p[i]);
}
static int cancelled(set_t *s, int i) {
  return weft_promise_is_cancelled(s->p[i]);
}

static void test_all(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  REQUIRE_EQ(weft_future_all(s.f, N, &c), 0);
  EXPECT_EQ(weft_future_input_count(c), N);
  EXPECT_TRUE(weft_future_input(c, 2) == s.f[2]);
  EXPECT_TRUE(weft_future_input(c, N) == NULL);
  drop_handles(&s);
  for (int i = N - 1; i >= 0; i--) {
    EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
    weft_promise_fulfil_int(s.p[i], i);
  }
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  size_t idx;
  EXPECT_EQ(weft_future_order(c, 0, &idx), 0);
  EXPECT_EQ(idx, N - 1);
  EXPECT_EQ(weft_future_int(weft_future_input(c, 2)), 2);
  done(&s, c);
}

static void test_all_fails_fast(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  weft_future_all(s.f, N, &c);
  drop_handles(&s);
  weft_promise_fulfil_int(s.p[0], 0);
  weft_promise_reject(s.p[1], WEFT_EIO);
  EXPECT_ERR(weft_future_error(c), WEFT_EIO);
  EXPECT_EQ(cancelled(&s, 0), 0);
  EXPECT_EQ(cancelled(&s, 2), 1);
  EXPECT_EQ(cancelled(&s, 3), 1);
  done(&s, c);
}

static void test_all_empty(void) {
  weft_future_t *c;
  REQUIRE_EQ(weft_future_all(NULL, 0, &c), 0);
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  weft_future_release(c);
  REQUIRE_EQ(weft_future_all_settled(NULL, 0, &c), 0);
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  weft_future_release(c);
}

static void test_all_settled(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  weft_future_all_settled(s.f, N, &c);
  drop_handles(&s);
  weft_promise_reject(s.p[0], WEFT_EIO);
  weft_future_cancel(weft_future_input(c, 1));
  weft_promise_fulfil_int(s.p[2], 2);
  EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
  weft_promise_release(s.p[3]);
  s.p[3] = NULL; /* broken: settles too */
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  EXPECT_ERR(weft_future_error(weft_future_input(c, 3)), WEFT_EBROKEN);
  size_t idx;
  EXPECT_EQ(weft_future_order(c, 3, &idx), 0);
  EXPECT_EQ(idx, 3);
  weft_future_release(c);
  for (int i = 0; i < 3; i++)
    weft_promise_release(s.p[i]);
}

static void test_any(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  weft_future_any(s.f, N, &c);
  drop_handles(&s);
  weft_promise_reject(s.p[0], WEFT_EIO);
  EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
  weft_promise_fulfil_int(s.p[2], 22);
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(c), 22);
  size_t idx;
  EXPECT_EQ(weft_future_order(c, 0, &idx), 0);
  EXPECT_EQ(idx, 2);
  EXPECT_EQ(cancelled(&s, 1), 1);
  EXPECT_EQ(cancelled(&s, 3), 1);
  done(&s, c);
}

static void test_any_all_fail(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  weft_future_any(s.f, N, &c);
  drop_handles(&s);
  for (int i = 0; i < N; i++)
    weft_promise_reject(s.p[i], WEFT_EIO);
  EXPECT_ERR(weft_future_error(c), WEFT_EALLFAILED);
  done(&s, c);
}

static void test_race(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  weft_future_race(s.f, N, &c);
  drop_handles(&s);
  weft_promise_reject(s.p[3], WEFT_ETIMEDOUT);
  EXPECT_ERR(weft_future_error(c), WEFT_ETIMEDOUT);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(cancelled(&s, i), 1);
  size_t idx;
  EXPECT_EQ(weft_future_order(c, 0, &idx), 0);
  EXPECT_EQ(idx, 3);
  done(&s, c);

  make(&s);
  weft_future_race(s.f, N, &c);
  drop_handles(&s);
  weft_promise_fulfil_int(s.p[1], 11);
  EXPECT_EQ(weft_future_int(c), 11);
  done(&s, c);
}

static void test_some(void) {
  set_t s;
  weft_future_t *c;
  make(&s);
  REQUIRE_EQ(weft_future_some(s.f, N, 2, &c), 0);
  drop_handles(&s);
  weft_promise_fulfil_int(s.p[3], 3);
  weft_promise_reject(s.p[0], WEFT_EIO);
  EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
  weft_promise_fulfil_int(s.p[1], 1);
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  size_t idx;
  EXPECT_EQ(weft_future_order(c, 0, &idx), 0);
  EXPECT_EQ(idx, 3);
  EXPECT_EQ(weft_future_order(c, 1, &idx), 0);
  EXPECT_EQ(idx, 1);
  EXPECT_ERR(weft_future_order(c, 2, &idx), WEFT_EPENDING);
  EXPECT_EQ(cancelled(&s, 2), 1);
  done(&s, c);

  make(&s); /* 3 of 4 becomes impossible after 2 failures */
  weft_future_some(s.f, N, 3, &c);
  drop_handles(&s);
  weft_promise_reject(s.p[0], WEFT_EIO);
  EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
  weft_promise_reject(s.p[1], WEFT_EIO);
  EXPECT_ERR(weft_future_error(c), WEFT_EALLFAILED);
  EXPECT_EQ(cancelled(&s, 2), 1);
  EXPECT_EQ(cancelled(&s, 3), 1);
  done(&s, c);
}

static void test_settled_inputs_and_repeats(void) {
  weft_promise_t *p;
  weft_future_t *f, *c;
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 9);
  weft_future_t *in[3] = {f, f, f};
  REQUIRE_EQ(weft_future_all(in, 3, &c), 0);
  EXPECT_EQ(weft_future_state(c), WEFT_FULFILLED);
  weft_future_release(c);
  REQUIRE_EQ(weft_future_any(in, 3, &c), 0);
  EXPECT_EQ(weft_future_int(c), 9);
  weft_future_release(c);
  weft_future_release(f);
  weft_promise_release(p);
}

static void test_bad_args(void) {
  set_t s;
  weft_future_t *c = NULL;
  make(&s);
  EXPECT_ERR(weft_future_any(s.f, 0, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_future_race(s.f, 0, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_future_some(s.f, N, 0, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_future_some(s.f, N, N + 1, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_future_all(NULL, 2, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_future_all(s.f, N, NULL), WEFT_EINVAL);
  weft_future_t *holes[2] = {s.f[0], NULL};
  EXPECT_ERR(weft_future_all(holes, 2, &c), WEFT_EINVAL);
  EXPECT_TRUE(c == NULL);
  size_t idx;
  EXPECT_ERR(weft_future_order(s.f[0], 0, &idx), WEFT_EINVAL);
  EXPECT_EQ(weft_future_input_count(s.f[0]), 0);
  EXPECT_EQ(weft_promise_is_cancelled(s.p[0]), 0); /* nothing changed */
  for (int i = 0; i < N; i++) {
    weft_future_release(s.f[i]);
    weft_promise_release(s.p[i]);
  }
}

static const test_case_t cases[] = {
    {"all", test_all},
    {"all fails fast and cancels the rest", test_all_fails_fast},
    {"all of nothing", test_all_empty},
    {"all settled", test_all_settled},
    {"any", test_any},
    {"any: all fail", test_any_all_fail},
    {"race", test_race},
    {"some k of n", test_some},
    {"settled and repeated inputs", test_settled_inputs_and_repeats},
    {"bad arguments", test_bad_args},
    {NULL, NULL}};
const test_suite_t suite_combinators = {"combinators", cases};
