/* SPDX-License-Identifier: MIT */
/* tests/test_cancel.c: cancel settles at once, runs the hook once, and
 * travels upstream only to what nothing else still needs. */
#include "testutil.h"

static int hooks;
static void hook(void *arg) {
  (void)arg;
  hooks++;
}

static weft_result_t pass(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src));
}

static void then(weft_future_t *src, weft_future_t **out) {
  REQUIRE_EQ(
      weft_future_then(src, weft_executor_inline(), pass, NULL, NULL, out), 0);
}

static void test_three_level_chain(void) {
  weft_promise_t *p;
  weft_future_t *root, *a, *b, *c;
  hooks = 0;
  weft_promise_create(&p, &root);
  weft_promise_on_cancel(p, hook, NULL);
  then(root, &a);
  then(a, &b);
  then(b, &c);
  weft_future_release(root);
  weft_future_release(a);
  weft_future_release(b);
  EXPECT_EQ(weft_future_cancel(c), 0);
  EXPECT_EQ(weft_future_state(c), WEFT_CANCELLED);
  EXPECT_EQ(hooks, 1);
  EXPECT_EQ(weft_promise_is_cancelled(p), 1);
  EXPECT_ERR(weft_promise_fulfil_int(p, 1), WEFT_ECANCELED);
  weft_future_release(c);
  weft_promise_release(p);
}

/* root -> a -> a2 and root -> b -> b2: cancelling the a-branch must leave
 * root alone while b still needs it. */
static void test_shared_input_not_cancelled(void) {
  weft_promise_t *p;
  weft_future_t *root, *a, *a2, *b, *b2;
  hooks = 0;
  weft_promise_create(&p, &root);
  weft_promise_on_cancel(p, hook, NULL);
  then(root, &a);
  then(a, &a2);
  then(root, &b);
  then(b, &b2);
  weft_future_release(root);
  weft_future_release(a);
  weft_future_release(b);
  EXPECT_EQ(weft_future_cancel(a2), 0);
  EXPECT_EQ(hooks, 0);
  EXPECT_EQ(weft_promise_is_cancelled(p), 0);
  EXPECT_EQ(weft_future_state(b2), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(b2), 0); /* now nothing needs root */
  EXPECT_EQ(hooks, 1);
  EXPECT_EQ(weft_promise_is_cancelled(p), 1);
  weft_future_release(a2);
  weft_future_release(b2);
  weft_promise_release(p);
}

static void test_shared_input_still_fulfils(void) {
  weft_promise_t *p;
  weft_future_t *root, *a, *b;
  weft_promise_create(&p, &root);
  then(root, &a);
  then(root, &b);
  weft_future_release(root);
  weft_future_cancel(a);
  EXPECT_EQ(weft_promise_fulfil_int(p, 8), 0);
  EXPECT_EQ(weft_future_int(b), 8);
  EXPECT_EQ(weft_future_state(a), WEFT_CANCELLED);
  weft_future_release(a);
  weft_future_release(b);
  weft_promise_release(p);
}

static void test_handle_is_a_need(void) {
  weft_promise_t *p;
  weft_future_t *root, *a;
  weft_promise_create(&p, &root);
  then(root, &a);
  EXPECT_EQ(weft_future_cancel(a), 0);
  EXPECT_EQ(weft_future_state(root), WEFT_PENDING); /* we still hold root */
  weft_future_release(root); /* releasing never cancels */
  EXPECT_EQ(weft_promise_is_cancelled(p), 0);
  weft_future_release(a);
  weft_promise_release(p);
}

static void test_cancel_while_following(void);

static weft_promise_t *inner_p;
static weft_future_t *inner_f;
static weft_result_t follow_inner(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_follow(inner_f); /* hands over our handle */
}

static void test_cancel_while_following(void) {
  weft_promise_t *p;
  weft_future_t *root, *a;
  hooks = 0;
  weft_promise_create(&p, &root);
  weft_promise_create(&inner_p, &inner_f);
  weft_promise_on_cancel(inner_p, hook, NULL);
  weft_future_then(root, weft_executor_inline(), follow_inner, NULL, NULL, &a);
  weft_promise_fulfil_int(p, 1);
  EXPECT_EQ(weft_future_state(a), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(a), 0);
  EXPECT_EQ(hooks, 1); /* the followed future was needed by a alone */
  EXPECT_EQ(weft_promise_is_cancelled(inner_p), 1);
  weft_future_release(a);
  weft_future_release(root);
  weft_promise_release(p);
  weft_promise_release(inner_p);
}

static void *await_thread(void *arg) {
  return (void *)(intptr_t)weft_future_await(arg, 20000);
}

static void test_cancel_wakes_waiters(void) {
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  pthread_t t[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&t[i], NULL, await_thread, f);
  EXPECT_EQ(weft_future_cancel(f), 0);
  for (int i = 0; i < 3; i++) {
    void *rc;
    pthread_join(t[i], &rc);
    EXPECT_ERR((int)(intptr_t)rc, 0);
  }
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  weft_promise_release(p);
}

static void test_combinator_cancel_shared(void) {
  weft_promise_t *p[3];
  weft_future_t *in[3], *all, *other;
  hooks = 0;
  for (int i = 0; i < 3; i++) {
    weft_promise_create(&p[i], &in[i]);
    weft_promise_on_cancel(p[i], hook, NULL);
  }
  weft_future_all(in, 3, &all);
  then(in[2], &other); /* in[2] is also needed elsewhere */
  for (int i = 0; i < 3; i++)
    weft_future_release(in[i]);
  EXPECT_EQ(weft_future_cancel(all), 0);
  EXPECT_EQ(hooks, 2);
  EXPECT_EQ(weft_promise_is_cancelled(p[0]), 1);
  EXPECT_EQ(weft_promise_is_cancelled(p[1]), 1);
  EXPECT_EQ(weft_promise_is_cancelled(p[2]), 0);
  weft_promise_fulfil_int(p[2], 4);
  EXPECT_EQ(weft_future_int(other), 4);
  weft_future_release(all);
  weft_future_release(other);
  for (int i = 0; i < 3; i++)
    weft_promise_release(p[i]);
}

static const test_case_t cases[] = {
    {"three-level chain", test_three_level_chain},
    {"shared input not cancelled", test_shared_input_not_cancelled},
    {"shared input still fulfils", test_shared_input_still_fulfils},
    {"a handle is a need", test_handle_is_a_need},
    {"cancel while following", test_cancel_while_following},
    {"cancel wakes waiters", test_cancel_wakes_waiters},
    {"combinator cancel spares shared input", test_combinator_cancel_shared},
    {NULL, NULL}};
const test_suite_t suite_cancel = {"cancel", cases};
