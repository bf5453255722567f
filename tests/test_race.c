/* SPDX-License-Identifier: MIT */
/* tests/test_race.c: settle races between two threads, 100,000 rounds each,
 * counting that exactly one side wins and everything runs exactly once. */
#include "testutil.h"

#include <stdlib.h>

#define ROUNDS 100000

/* Two threads run `side(0|1, round)` together each round; side 0 also runs
 * `setup` before and `check` after both sides finished. */
typedef struct race {
  void (*setup)(long r);
  void (*side[2])(long r);
  void (*check)(long r);
  tu_rounds_t sync;
} race_t;

static void *side1_main(void *arg) {
  race_t *rc = arg;
  for (long r = 1; r <= ROUNDS; r++) {
    tu_meet(&rc->sync, r, 1);
    rc->side[1](r);
    atomic_store_explicit(&rc->sync.done, r, memory_order_release);
  }
  return NULL;
}

static void run_race(race_t *rc) {
  atomic_store(&rc->sync.arrived, 0);
  atomic_store(&rc->sync.done, 0);
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, side1_main, rc), 0);
  for (long r = 1; r <= ROUNDS; r++) {
    rc->setup(r);
    tu_meet(&rc->sync, r, 0);
    rc->side[0](r);
    tu_spin_until(&rc->sync.done, r);
    rc->check(r);
  }
  pthread_join(t, NULL);
}

/* ---- fulfil vs cancel ---- */
static weft_promise_t *P;
static weft_future_t *F;
static int fulfil_rc, cancel_rc;
static atomic_long hooks, dtors, fulfil_wins, cancel_wins, bad_rounds;

static void hook(void *arg) {
  (void)arg;
  atomic_fetch_add(&hooks, 1);
}
static void dtor(void *p) {
  atomic_fetch_add(&dtors, 1);
  free(p);
}

static void fc_setup(long r) {
  (void)r;
  weft_promise_create(&P, &F);
  weft_promise_on_cancel(P, hook, NULL);
}
static atomic_long lost_unseen; /* lost to a cancel, then read pending */
static void fc_fulfil(long r) {
  (void)r;
  void *v = malloc(8);
  fulfil_rc = weft_promise_fulfil(P, v, dtor);
  if (fulfil_rc != 0)
    free(v); /* lost: still ours */
  if (fulfil_rc == WEFT_ECANCELED && (weft_promise_is_cancelled(P) != 1 ||
                                      weft_future_state(F) != WEFT_CANCELLED))
    atomic_fetch_add(&lost_unseen, 1);
}
static void fc_cancel(long r) {
  (void)r;
  cancel_rc = weft_future_cancel(F);
}
static void fc_check(long r) {
  (void)r;
  int st = weft_future_state(F);
  bool ok =
      (fulfil_rc == 0 && cancel_rc == WEFT_EALREADY && st == WEFT_FULFILLED) ||
      (cancel_rc == 0 && fulfil_rc == WEFT_ECANCELED && st == WEFT_CANCELLED);
  if (!ok)
    atomic_fetch_add(&bad_rounds, 1);
  atomic_fetch_add(fulfil_rc == 0 ? &fulfil_wins : &cancel_wins, 1);
  weft_promise_release(P);
  weft_future_release(F);
}

static void test_fulfil_vs_cancel(void) {
  atomic_store(&hooks, 0);
  atomic_store(&dtors, 0);
  atomic_store(&fulfil_wins, 0);
  atomic_store(&cancel_wins, 0);
  atomic_store(&bad_rounds, 0);
  atomic_store(&lost_unseen, 0);
  race_t rc = {fc_setup, {fc_fulfil, fc_cancel}, fc_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  EXPECT_EQ(atomic_load(&lost_unseen), 0);
  EXPECT_EQ(atomic_load(&fulfil_wins) + atomic_load(&cancel_wins), ROUNDS);
  EXPECT_EQ(atomic_load(&hooks), atomic_load(&cancel_wins));
  EXPECT_EQ(atomic_load(&dtors), atomic_load(&fulfil_wins));
  printf("\n    fulfil won %ld, cancel won %ld of %d rounds ",
         atomic_load(&fulfil_wins), atomic_load(&cancel_wins), ROUNDS);
}

/* ---- then vs settle ---- */
static weft_future_t *D;
static atomic_long runs, total_runs;

static weft_result_t count_run(void *arg, weft_future_t *src) {
  (void)arg;
  atomic_fetch_add(&runs, 1);
  return weft_ok_int(weft_future_int(src) + 1);
}
static void ts_setup(long r) {
  (void)r;
  atomic_store(&runs, 0);
  weft_promise_create(&P, &F);
}
static void ts_settle(long r) { weft_promise_fulfil_int(P, (intptr_t)r); }
static void ts_then(long r) {
  (void)r;
  weft_future_then(F, weft_executor_inline(), count_run, NULL, NULL, &D);
}
static void ts_check(long r) {
  if (atomic_load(&runs) != 1 || weft_future_int(D) != r + 1)
    atomic_fetch_add(&bad_rounds, 1);
  atomic_fetch_add(&total_runs, atomic_load(&runs));
  weft_future_release(D);
  weft_promise_release(P);
  weft_future_release(F);
}

static void test_then_vs_settle(void) {
  atomic_store(&bad_rounds, 0);
  atomic_store(&total_runs, 0);
  race_t rc = {ts_setup, {ts_settle, ts_then}, ts_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  EXPECT_EQ(atomic_load(&total_runs), ROUNDS);
}

/* ---- watch vs settle, the caller's handle released in the race ---- */
static atomic_long seen_value;
static void count_watch(void *arg, weft_future_t *f) {
  (void)arg;
  atomic_fetch_add(&runs, 1);
  atomic_store(&seen_value, (long)weft_future_int(f));
}
static void ws_setup(long r) {
  (void)r;
  atomic_store(&runs, 0);
  atomic_store(&seen_value, -1);
  weft_promise_create(&P, &F);
}
static void ws_watch(long r) {
  (void)r;
  /* the watch takes our handle: it alone keeps F now */
  weft_future_watch(F, weft_executor_inline(), count_watch, NULL, NULL);
}
static void ws_check(long r) {
  if (atomic_load(&runs) != 1 || atomic_load(&seen_value) != r)
    atomic_fetch_add(&bad_rounds, 1);
  atomic_fetch_add(&total_runs, atomic_load(&runs));
  weft_promise_release(P);
}

static void test_watch_vs_settle(void) {
  atomic_store(&bad_rounds, 0);
  atomic_store(&total_runs, 0);
  race_t rc = {ws_setup, {ts_settle, ws_watch}, ws_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  EXPECT_EQ(atomic_load(&total_runs), ROUNDS);
}

/* ---- cancel a then vs its source settling: fn or arg_dtor, once ---- */
static atomic_long fn_runs, arg_dtors;
static weft_result_t take(void *arg, weft_future_t *src) {
  (void)src;
  atomic_fetch_add(&fn_runs, 1);
  free(arg);
  return weft_ok_int(0);
}
static void arg_free(void *arg) {
  atomic_fetch_add(&arg_dtors, 1);
  free(arg);
}
static void ct_setup(long r) {
  (void)r;
  weft_promise_create(&P, &F);
  weft_future_then(F, weft_executor_inline(), take, malloc(8), arg_free, &D);
  weft_future_release(F); /* D is the only consumer: cancel goes upstream */
}
static void ct_settle(long r) { weft_promise_fulfil_int(P, (intptr_t)r); }
static void ct_cancel(long r) {
  (void)r;
  weft_future_cancel(D);
}
static void ct_check(long r) {
  (void)r;
  /* D settled exactly one way: fulfilled by fn, or cancelled */
  int st = weft_future_state(D);
  if (st != WEFT_FULFILLED && st != WEFT_CANCELLED)
    atomic_fetch_add(&bad_rounds, 1);
  weft_future_release(D);
  weft_promise_release(P);
}

static void test_cancel_then_vs_settle(void) {
  atomic_store(&bad_rounds, 0);
  atomic_store(&fn_runs, 0);
  atomic_store(&arg_dtors, 0);
  race_t rc = {ct_setup, {ct_settle, ct_cancel}, ct_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&fn_runs) + atomic_load(&arg_dtors), ROUNDS);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  printf("\n    fn ran %ld, arg destroyed unrun %ld ", atomic_load(&fn_runs),
         atomic_load(&arg_dtors));
}

/* ---- an inline then on a future seen settled, while its settler publishes
 * (the state is visible before the continuation list closes) ---- */
static void ss_then(long r) {
  (void)r;
  while (weft_future_state(F) == WEFT_PENDING)
    ; /* seen settled: from here fn must run before then returns */
  weft_future_then(F, weft_executor_inline(), count_run, NULL, NULL, &D);
  if (atomic_load(&runs) != 1)
    atomic_fetch_add(&bad_rounds, 1);
}

static void test_then_on_seen_settled(void) {
  atomic_store(&bad_rounds, 0);
  atomic_store(&total_runs, 0);
  race_t rc = {ts_setup, {ts_settle, ss_then}, ts_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  EXPECT_EQ(atomic_load(&total_runs), ROUNDS);
}

/* ---- a cancel of d while d's continuation starts following a future
 * whose only handle it returned (settled, so nothing else keeps it) ---- */
static _Atomic long follow_started;

static weft_result_t follow_settled(void *arg, weft_future_t *src) {
  (void)arg;
  weft_promise_t *q;
  weft_future_t *qf;
  if (weft_promise_create(&q, &qf) != 0)
    return weft_err(WEFT_ENOMEM);
  weft_promise_fulfil_int(q, weft_future_int(src));
  weft_promise_release(q); /* qf's handle is all that keeps it */
  atomic_fetch_add(&follow_started, 1);
  return weft_follow(qf);
}
static void fo_setup(long r) {
  (void)r;
  weft_promise_create(&P, &F);
  weft_future_then(F, weft_executor_inline(), follow_settled, NULL, NULL, &D);
}
static void fo_settle(long r) { weft_promise_fulfil_int(P, (intptr_t)r); }
static void fo_cancel(long r) {
  while (atomic_load(&follow_started) < r)
    ; /* fn is returning its follow */
  weft_future_cancel(D);
}
static void fo_check(long r) {
  int st = weft_future_state(D); /* cancelled, or the followed value */
  if (st != WEFT_CANCELLED &&
      !(st == WEFT_FULFILLED && weft_future_int(D) == r))
    atomic_fetch_add(&bad_rounds, 1);
  weft_future_release(D);
  weft_promise_release(P);
  weft_future_release(F);
}

/* malloc and free themselves: a block freed early is freed for the
 * sanitizers too, not kept in weft's cache */
static void *plain_alloc(void *ctx, size_t n) {
  (void)ctx;
  return malloc(n);
}
static void plain_release(void *ctx, void *p, size_t n) {
  (void)ctx;
  (void)n;
  free(p);
}

static void test_cancel_vs_follow(void) {
  weft_allocator_t plain = {plain_alloc, plain_release, NULL, {0}};
  REQUIRE_EQ(weft_allocator_set(&plain), 0);
  atomic_store(&bad_rounds, 0);
  atomic_store(&follow_started, 0);
  race_t rc = {fo_setup, {fo_settle, fo_cancel}, fo_check, {0}};
  run_race(&rc);
  EXPECT_EQ(atomic_load(&bad_rounds), 0);
  weft_allocator_set(NULL);
}

static const test_case_t cases[] = {
    {"fulfil vs cancel, 100k rounds", test_fulfil_vs_cancel},
    {"then vs settle, 100k rounds", test_then_vs_settle},
    {"cancel then vs source settle, 100k rounds", test_cancel_then_vs_settle},
    {"watch vs settle, 100k rounds", test_watch_vs_settle},
    {"inline then on a future seen settled runs at once, 100k rounds",
     test_then_on_seen_settled},
    {"cancel while the continuation starts to follow, 100k rounds",
     test_cancel_vs_follow},
    {NULL, NULL}};
const test_suite_t suite_race = {"race", cases};
