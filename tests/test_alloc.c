/* SPDX-License-Identifier: MIT */
/* tests/test_alloc.c: fail the N-th allocation for every N a scenario
 * reaches; every call must report WEFT_ENOMEM, nothing may leak or crash. */
#include "testutil.h"

static void watched(void *arg, weft_future_t *f) {
  (void)arg;
  (void)f;
}

static weft_result_t add_one(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

static weft_future_t *follow_target;
static weft_result_t follow(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  weft_future_retain(follow_target);
  return weft_follow(follow_target);
}

typedef int (*combine_fn)(weft_future_t *const *, size_t, weft_future_t **);

static int enomem;
static int chk(int rc) {
  if (rc == WEFT_ENOMEM)
    enomem++;
  return rc;
}

static void release_all(weft_future_t **fs, int n) {
  for (int i = 0; i < n; i++)
    if (fs[i] != NULL)
      weft_future_release(fs[i]);
}

/* A watch takes a handle: give it one of its own; take it back on error. */
static void watch_kept(weft_future_t *f, weft_executor_t *ex) {
  weft_future_retain(f);
  if (chk(weft_future_watch(f, ex, watched, NULL, NULL)) != 0)
    weft_future_release(f);
}

/* Touches every allocating call of the core. Returns how many calls
 * reported WEFT_ENOMEM. */
static int scenario(void) {
  enomem = 0;
  weft_promise_t *p = NULL, *q = NULL;
  weft_future_t *f = NULL, *g = NULL, *fs[10] = {0};
  weft_thread_executor_t *te = NULL;
  if (chk(weft_promise_create(&p, &f)) != 0)
    goto out;
  if (chk(weft_promise_create(&q, &g)) != 0)
    goto out;
  follow_target = g;
  chk(weft_future_then(f, weft_executor_inline(), add_one, NULL, NULL, &fs[0]));
  chk(weft_future_then(f, weft_executor_inline(), follow, NULL, NULL, &fs[1]));
  if (chk(weft_thread_executor_create(&te)) == 0) {
    chk(weft_future_then(f, weft_thread_executor_get(te), add_one, NULL, NULL,
                         &fs[2]));
    watch_kept(f, weft_thread_executor_get(te));
  }
  watch_kept(g, weft_executor_inline());
  weft_future_t *in[2] = {f, g};
  chk(weft_future_all(in, 2, &fs[3]));
  chk(weft_future_all_settled(in, 2, &fs[4]));
  chk(weft_future_any(in, 2, &fs[5]));
  chk(weft_future_race(in, 2, &fs[6]));
  chk(weft_future_some(in, 2, 1, &fs[7]));
  int rc = chk(weft_future_await(f, 1)); /* pending: needs a waiter */
  if (rc != WEFT_ETIMEDOUT && rc != WEFT_ENOMEM)
    enomem += 1000; /* wrong outcome: make the test fail */
  weft_promise_fulfil_int(p, 1);
  weft_promise_fulfil_int(q, 2);
  if (fs[0] != NULL && weft_future_int(fs[0]) != 2)
    enomem += 1000;
  if (fs[1] != NULL && weft_future_int(fs[1]) != 2)
    enomem += 1000;
out:
  if (te != NULL)
    weft_thread_executor_shutdown(te); /* drains fs[2]'s continuation */
  release_all(fs, 10);
  if (f != NULL)
    weft_future_release(f);
  if (g != NULL)
    weft_future_release(g);
  if (p != NULL)
    weft_promise_release(p);
  if (q != NULL)
    weft_promise_release(q);
  return enomem;
}

static void test_every_allocation_fails_cleanly(void) {
  tu_alloc_install(0);
  EXPECT_EQ(scenario(), 0);
  long k = tu_alloc_count();
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
  EXPECT_TRUE(k >= 10);
  long bad = 0;
  for (long n = 1; n <= k; n++) {
    tu_alloc_install(n);
    int e = scenario();
    long live = tu_alloc_live();
    tu_alloc_restore();
    if (e != 1 || live != 0) {
      bad++;
      printf("\n    failing allocation %ld: %d calls said ENOMEM, %ld blocks "
             "leaked",
             n, e, live);
    }
  }
  EXPECT_EQ(bad, 0);
  printf("\n    %ld allocation points, each failed once: all clean ", k);
}

static void test_allocator_restore(void) {
  weft_allocator_t bad = {NULL, NULL, NULL, {0}};
  EXPECT_ERR(weft_allocator_set(&bad), WEFT_EINVAL);
  EXPECT_EQ(weft_allocator_set(NULL), 0);
  weft_promise_t *p;
  weft_future_t *f;
  EXPECT_EQ(weft_promise_create(&p, &f), 0);
  weft_promise_release(p);
  weft_future_release(f);
}

static const test_case_t cases[] = {
    {"every allocation fails cleanly", test_every_allocation_fails_cleanly},
    {"allocator restore", test_allocator_restore},
    {NULL, NULL}};
const test_suite_t suite_alloc = {"alloc", cases};
