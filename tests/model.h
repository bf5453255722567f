/* SPDX-License-Identifier: MIT */
/* tests/model.h: model-based random testing of the future semantics: a
 * reference model of future.h/pool.h and a driver that checks weft against
 * it from several threads (tests/test_model.c, tests/fuzz/fuzz_model.c). */
#ifndef WEFT_TESTS_MODEL_H
#define WEFT_TESTS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_THREADS 4

typedef struct model_cfg {
  uint64_t seed;       /* PRNG seed (ignored when data is set) */
  long steps;          /* total driver steps over all threads (PRNG mode) */
  const uint8_t *data; /* fuzz mode: the choices come from these bytes */
  size_t size;
  int quiet; /* 1: print nothing unless a check fails */
} model_cfg_t;

typedef struct model_result {
  long steps;        /* driver steps run over all threads */
  long rounds;       /* rounds completed (all threads) */
  long checks;       /* observable outcomes compared with the model */
  long ops[20];      /* steps per operation (model.c's op list) */
  long pinned_async; /* asynchronous outcomes observed and checked */
  long shared_races; /* settle-vs-cancel races on shared promises */
  long live_blocks;  /* weft blocks alive after shutdown (leaked) */
  int failed;        /* 1 when a check failed */
  char msg[1024];    /* the first failure: thread, round, step, what */
} model_result_t;

/* Run the driver: MODEL_THREADS threads, one pool (2 workers), one loop on
 * its own thread, all through a counting allocator. Returns 0 or -1 (see
 * res->msg). Bounded in time: a step that makes no progress for 60 s prints
 * the seed and aborts. */
int model_run(const model_cfg_t *cfg, model_result_t *res);

/* The names of the operations counted in model_result_t.ops. */
const char *model_op_name(int op);
int model_op_count(void);

#endif /* WEFT_TESTS_MODEL_H */
