/* SPDX-License-Identifier: MIT */
/* bench/file_weft.c: file.read_4k.weft: random 4 KiB reads of a file with
 * weft_file_read(), `inflight` of them outstanding at all times, each
 * completion (a watch on the loop) starting the next. Prints reads/s.
 * Usage: bench_file_weft <path> <reads> <inflight> */
#define _GNU_SOURCE
#include "file_rng.h"

#include <weft.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct bench {
  weft_loop_t *loop;
  weft_file_t *file;
  file_rng_t rng;
  long started, done, total;
  int err;
  char (*bufs)[FILE_BLOCK];
} bench_t;

typedef struct slot {
  bench_t *b;
  char *buf;
} slot_t;

static void start(slot_t *s);

static void on_read(void *arg, weft_future_t *f) {
  slot_t *s = arg;
  bench_t *b = s->b;
  if (weft_future_error(f) != 0 || weft_future_int(f) != FILE_BLOCK)
    b->err = 1;
  b->done++;
  if (b->started < b->total)
    start(s);
  else if (b->done == b->total)
    weft_loop_stop(b->loop);
}

static void start(slot_t *s) {
  bench_t *b = s->b;
  weft_future_t *f;
  b->started++;
  if (weft_file_read(b->file, s->buf, FILE_BLOCK, file_rng_next(&b->rng), &f) !=
          0 ||
      weft_future_watch(f, weft_loop_executor(b->loop), on_read, s, NULL) !=
          0) {
    fprintf(stderr, "file_weft: read failed\n");
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4)
    return 2;
  bench_t b = {0};
  b.total = atol(argv[2]);
  int inflight = atoi(argv[3]);
  struct stat st;
  if (stat(argv[1], &st) != 0)
    return 1;
  b.rng.s = 0x9E3779B97F4A7C15ull;
  b.rng.blocks = (uint64_t)st.st_size / FILE_BLOCK;
  if (weft_loop_create(NULL, &b.loop) != 0)
    return 1;
  weft_future_t *o;
  if (weft_file_open(b.loop, argv[1], O_RDONLY, 0, &o) != 0 ||
      weft_loop_run_until(b.loop, o, -1) != 0 ||
      weft_file_take(o, &b.file) != 0)
    return 1;
  weft_future_release(o);
  b.bufs = malloc((size_t)inflight * FILE_BLOCK);
  slot_t *slots = malloc((size_t)inflight * sizeof *slots);
  int64_t t0 = weft_clock_now_ns();
  for (int i = 0; i < inflight; i++) {
    slots[i].b = &b;
    slots[i].buf = b.bufs[i];
    start(&slots[i]);
  }
  weft_loop_run(b.loop, WEFT_RUN_DEFAULT);
  int64_t t1 = weft_clock_now_ns();
  if (b.err || b.done != b.total)
    return 1;
  printf("%.0f\n", (double)b.total * 1e9 / (double)(t1 - t0));
  weft_future_t *c;
  weft_file_close(b.file, &c);
  weft_loop_run_until(b.loop, c, -1);
  weft_future_release(c);
  weft_loop_close(b.loop);
  free(slots);
  free(b.bufs);
  return 0;
}
