/* SPDX-License-Identifier: MIT */
/* tests/test_chain.c: a 1,000,000-deep then chain settles without stack
 * overflow, frees memory as it goes, and cancels from its end. */
#include "testutil.h"

#define DEPTH 1000000

static long live_at_middle;
static weft_result_t step(void *arg, weft_future_t *src) {
  if (arg != NULL) /* the probe in the middle of the chain */
    live_at_middle = tu_alloc_live();
  return weft_ok_int(weft_future_int(src) + 1);
}

static weft_future_t *build(weft_future_t *root, int depth) {
  weft_future_t *cur = root, *next;
  weft_future_retain(root);
  for (int i = 0; i < depth; i++) {
    void *probe = i == depth / 2 ? (void *)1 : NULL;
    if (weft_future_then(cur, weft_executor_inline(), step, probe, NULL,
                         &next) != 0)
      return NULL;
    weft_future_release(cur);
    cur = next;
  }
  return cur;
}

static void test_deep_chain_pending_root(void) {
  tu_alloc_install(0);
  weft_promise_t *p;
  weft_future_t *root, *end;
  weft_promise_create(&p, &root);
  end = build(root, DEPTH);
  REQUIRE_EQ(end != NULL, 1);
  weft_future_release(root);
  long live_before = tu_alloc_live();
  EXPECT_EQ(live_before, DEPTH + 1);
  live_at_middle = -1;
  weft_promise_fulfil_int(p, 0);
  EXPECT_EQ(weft_future_int(end), DEPTH);
  /* halfway down, the first half is already freed */
  EXPECT_TRUE(live_at_middle > 0);
  EXPECT_TRUE(live_at_middle < live_before * 6 / 10);
  printf("\n    live blocks: %ld pending, %ld at the middle, %ld at the end ",
         live_before, live_at_middle, tu_alloc_live());
  EXPECT_EQ(tu_alloc_live(), 2); /* root (its promise is held) and end */
  weft_promise_release(p);
  EXPECT_EQ(tu_alloc_live(), 1);
  weft_future_release(end);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static void test_deep_chain_settled_root(void) {
  tu_alloc_install(0);
  weft_promise_t *p;
  weft_future_t *root, *end;
  weft_promise_create(&p, &root);
  weft_promise_fulfil_int(p, 5);
  weft_promise_release(p);
  end = build(root, DEPTH);
  REQUIRE_EQ(end != NULL, 1);
  weft_future_release(root);
  EXPECT_EQ(weft_future_int(end), DEPTH + 5);
  EXPECT_TRUE(tu_alloc_peak_bytes() < 4096); /* never more than a few alive */
  weft_future_release(end);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static int hook_runs;
static void hook(void *arg) {
  (void)arg;
  hook_runs++;
}

static void test_deep_chain_cancel_from_end(void) {
  tu_alloc_install(0);
  weft_promise_t *p;
  weft_future_t *root, *end;
  weft_promise_create(&p, &root);
  weft_promise_on_cancel(p, hook, NULL);
  end = build(root, DEPTH);
  REQUIRE_EQ(end != NULL, 1);
  weft_future_release(root);
  hook_runs = 0;
  EXPECT_EQ(weft_future_cancel(end), 0);
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(weft_promise_is_cancelled(p), 1);
  weft_promise_release(p);
  weft_future_release(end);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static const test_case_t cases[] = {
    {"1,000,000 thens on a pending root", test_deep_chain_pending_root},
    {"1,000,000 thens on a settled root", test_deep_chain_settled_root},
    {"cancel a 1,000,000 chain from its end", test_deep_chain_cancel_from_end},
    {NULL, NULL}};
const test_suite_t suite_chain = {"chain", cases};
