/* SPDX-License-Identifier: MIT */
/* bench/loop_rng.h: what every `loop` suite program shares, one definition
 * so all implementations are measured alike: the pseudo-random timeouts
 * (xorshift64, fixed seed), the clock lateness is read on
 * (CLOCK_MONOTONIC), the process CPU clock (getrusage user+sys, all threads)
 * and the percentile of a sample. */
#ifndef WEFT_BENCH_LOOP_RNG_H
#define WEFT_BENCH_LOOP_RNG_H
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static uint64_t rng_state = 88172645463325252ull;
static inline uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static inline int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU time (user + system) of the whole process so far, in ns. */
static inline int64_t cpu_ns(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    abort();
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static inline int cmp_s64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of v[0..count), sorting v. */
static inline int64_t percentile(int64_t *v, long count, int p) {
  qsort(v, (size_t)count, sizeof *v, cmp_s64);
  long i = (long)((int64_t)count * p / 100);
  return v[i < count ? i : count - 1];
}

#endif
