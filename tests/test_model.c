/* SPDX-License-Identifier: MIT */
/* tests/test_model.c: the "model" suite: model-based random testing of the
 * future semantics (tests/model.c) from 4 threads against a pool and a loop,
 * plus regression tests for what it found.
 *
 * Scale and replay (docs/testing.md, "Model-based testing and fuzzing"):
 *   WEFT_MODEL_STEPS=<n>  driver steps over all threads (default 1,000,000;
 *                         250,000 under ASan or TSan);
 *   WEFT_MODEL_SEED=<s>   run this seed (default: the time, printed first).
 * A failure prints the seed, the thread, round and step, and what differed
 * from the model; `WEFT_MODEL_SEED=<s> build/dev/tests/weft_tests model`
 * replays that thread's sequence of calls (the interleaving with the other
 * threads may differ, so rerun it a few times if it does not fail at once).
 */
#include "testutil.h"

#include "internal.h" /* WEFT__ASAN */
#include "model.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if WEFT__ASAN || defined(__SANITIZE_THREAD__)
#define MODEL_DEFAULT_STEPS 250000L
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MODEL_DEFAULT_STEPS 250000L
#endif
#endif
#ifndef MODEL_DEFAULT_STEPS
#define MODEL_DEFAULT_STEPS 1000000L
#endif

static void test_random_run(void) {
  model_cfg_t cfg = {0};
  const char *s = getenv("WEFT_MODEL_SEED");
  cfg.seed = s != NULL ? strtoull(s, NULL, 0)
                       : (uint64_t)time(NULL) ^ (uint64_t)weft_now_ns();
  const char *n = getenv("WEFT_MODEL_STEPS");
  cfg.steps = n != NULL ? strtol(n, NULL, 0) : MODEL_DEFAULT_STEPS;
  printf("\n  model: seed %" PRIu64 " (replay: WEFT_MODEL_SEED=%" PRIu64
         "), %ld steps asked\n",
         cfg.seed, cfg.seed, cfg.steps);
  fflush(stdout);
  model_result_t r;
  int64_t t0 = weft_now_ns();
  int rc = model_run(&cfg, &r);
  double secs = (double)(weft_now_ns() - t0) / 1e9;
  printf("  model: %ld steps, %ld rounds, %ld checks, %ld async outcomes "
         "pinned, %ld shared-promise races, %.1f s\n  model: ops",
         r.steps, r.rounds, r.checks, r.pinned_async, r.shared_races, secs);
  for (int o = 0; o < model_op_count(); o++)
    printf(" %s=%ld", model_op_name(o), r.ops[o]);
  printf("\n");
  printf("  model: %ld weft blocks alive after shutdown%s\n", r.live_blocks,
         r.live_blocks ? " (open leak; WEFT_MODEL_LEAKS=1 fails on it)" : "");
  if (rc != 0)
    printf("  model: FAILED: %s\n", r.msg);
  fflush(stdout);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT(r.steps >= cfg.steps * 9 / 10);
}

static const test_case_t cases[] = {
    {"random run against the model", test_random_run},
    {NULL, NULL}};
const test_suite_t suite_model = {"model", cases};
