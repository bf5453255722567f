/* SPDX-License-Identifier: MIT */
/* tests/test_model.c: the "model" suite: model-based random testing of the
 * future semantics (tests/model.c) from 4 threads against a pool and a loop,
 * plus regression tests for what it found.
 *
 * Scale and replay (docs/testing.md, "Model-based testing and fuzzing"):
 *   WEFT_MODEL_STEPS=<n>  driver steps over all threads (default 1,000,000;
 *                         in every build: about 5 s in gcc, 10 s under
 *                         ASan or TSan);
 *   WEFT_MODEL_SEED=<s>   run this seed (default: the time, printed first).
 * A failure prints the seed, the thread, round and step, and what differed
 * from the model; `WEFT_MODEL_SEED=<s> build/dev/tests/weft_tests model`
 * replays that thread's sequence of calls (the interleaving with the other
 * threads may differ, so rerun it a few times if it does not fail at once).
 */
#include "testutil.h"

#include "model.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the same in every build: about 5 s in gcc, 10 s under ASan or TSan */
#define MODEL_DEFAULT_STEPS 1000000L
static void test_random_run(void) {
  model_cfg_t cfg = {0};
  const char *s = getenv("WEFT_MODEL_SEED");
  cfg.seed = s != NULL ? strtoull(s, NULL, 0)
                       : (uint64_t)time(NULL) ^ (uint64_t)weft_clock_now_ns();
  const char *n = getenv("WEFT_MODEL_STEPS");
  cfg.steps = n != NULL ? strtol(n, NULL, 0) : MODEL_DEFAULT_STEPS;
  printf("\n  model: seed %" PRIu64 " (replay: WEFT_MODEL_SEED=%" PRIu64
         "), %ld steps asked\n",
         cfg.seed, cfg.seed, cfg.steps);
  fflush(stdout);
  model_result_t r;
  int64_t t0 = weft_clock_now_ns();
  int rc = model_run(&cfg, &r);
  double secs = (double)(weft_clock_now_ns() - t0) / 1e9;
  printf("  model: %ld steps, %ld rounds, %ld checks, %ld async outcomes "
         "pinned, %ld shared-promise races, %.1f s\n  model: ops",
         r.steps, r.rounds, r.checks, r.pinned_async, r.shared_races, secs);
  for (int o = 0; o < model_op_count(); o++)
    printf(" %s=%ld", model_op_name(o), r.ops[o]);
  printf("\n");
  printf("  model: %ld weft blocks alive after shutdown\n", r.live_blocks);
  if (rc != 0)
    printf("  model: FAILED: %s\n", r.msg);
  fflush(stdout);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT(r.steps >= cfg.steps * 9 / 10);
}

/* ---- regressions found by the model ---- */

#define ORDER_ROUNDS 200000

typedef struct order_race {
  tu_rounds_t r;
  _Atomic(weft_promise_t *) slot;
} order_race_t;

static void *order_side(void *arg) {
  order_race_t *o = arg;
  for (long r = 1; r <= ORDER_ROUNDS; r++) {
    tu_meet(&o->r, r, 1);
    weft_promise_t *p;
    while ((p = atomic_load(&o->slot)) == NULL)
      ;
    atomic_store(&o->slot, NULL);
    weft_promise_fulfil_int(p, 2);
    atomic_fetch_add(&o->r.done, 1);
  }
  return NULL;
}

/* any and race settle like the input weft_future_order(f, 0) names, even
 * when two inputs settle at once on two threads (the model saw any fulfil
 * with one input's value while order(0) named the other). */
static void test_order_names_the_winner(void) {
  order_race_t o;
  memset(&o, 0, sizeof o);
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, order_side, &o), 0);
  long wrong = 0, bad_order = 0;
  for (long r = 1; r <= ORDER_ROUNDS; r++) {
    weft_promise_t *p[2];
    weft_future_t *f[2], *c;
    for (int i = 0; i < 2; i++)
      REQUIRE_EQ(weft_promise_create(&p[i], &f[i]), 0);
    int rc = (r & 1) ? weft_future_any(f, 2, &c) : weft_future_race(f, 2, &c);
    REQUIRE_EQ(rc, 0);
    atomic_store(&o.slot, p[1]);
    tu_meet(&o.r, r, 0);
    weft_promise_fulfil_int(p[0], 1);
    tu_spin_until(&o.r.done, r);
    size_t w = 9;
    EXPECT_EQ(weft_future_order(c, 0, &w), 0);
    bad_order += w > 1;
    wrong += weft_future_int(c) != (intptr_t)w + 1;
    weft_future_release(c);
    for (int i = 0; i < 2; i++) {
      weft_future_release(f[i]);
      weft_promise_release(p[i]);
    }
  }
  pthread_join(t, NULL);
  EXPECT_EQ(bad_order, 0);
  EXPECT_EQ(wrong, 0);
}

static void watch_count(void *arg, weft_future_t *f) {
  (void)f;
  (*(int *)arg)++;
}
static void watch_dtor_unused(void *arg) { (void)arg; }

/* A watch with an arg_dtor is a block of its own; finishing it must free it
 * even when the user's allocator put it right after its source's state,
 * where a watch room would be (the model saw 56-byte blocks left alive
 * after every run with malloc behind weft_allocator_set). */
static void test_watch_block_freed(void) {
  tu_alloc_install(0);
  int ran = 0;
  for (int i = 0; i < 1000; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    REQUIRE_EQ(weft_future_watch(f, weft_executor_inline(), watch_count, &ran,
                                 watch_dtor_unused),
               0);
    EXPECT_EQ(weft_promise_fulfil_int(p, i), 0);
    EXPECT_EQ(weft_promise_release(p), 0);
  }
  EXPECT_EQ(ran, 1000);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static const test_case_t cases[] = {
    {"watch block freed", test_watch_block_freed},
    {"random run against the model", test_random_run},
    {"any/race: order(0) is the winner", test_order_names_the_winner},
    {NULL, NULL}};
const test_suite_t suite_model = {"model", cases};
