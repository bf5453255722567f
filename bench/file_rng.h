/* SPDX-License-Identifier: MIT */
/* bench/file_rng.h: the random 4 KiB offsets both file.read_4k programs
 * read, the same sequence for the same seed (xorshift64). */
#ifndef WEFT_BENCH_FILE_RNG_H
#define WEFT_BENCH_FILE_RNG_H

#include <stdint.h>

#define FILE_BLOCK 4096

typedef struct file_rng {
  uint64_t s;
  uint64_t blocks; /* 4 KiB blocks in the file */
} file_rng_t;

static inline int64_t file_rng_next(file_rng_t *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return (int64_t)(r->s % r->blocks) * FILE_BLOCK;
}

#endif
