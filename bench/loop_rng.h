/* SPDX-License-Identifier: MIT */
/* bench/loop_rng.h: the `loop` suite's pseudo-random timeouts (xorshift64,
 * fixed seed), one definition so every implementation gets the same ones. */
#ifndef WEFT_BENCH_LOOP_RNG_H
#define WEFT_BENCH_LOOP_RNG_H
#include <stdint.h>

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

#endif
