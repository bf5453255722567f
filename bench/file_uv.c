/* SPDX-License-Identifier: MIT */
/* bench/file_uv.c: file.read_4k.libuv: the same random 4 KiB reads with
 * uv_fs_read(), `inflight` requests outstanding, each callback starting
 * the next on its own uv_fs_t, as libuv's users write it. libuv runs file
 * requests on its thread pool (UV_THREADPOOL_SIZE, default 4). Prints
 * reads/s. Usage: bench_file_libuv <path> <reads> <inflight> */
#define _GNU_SOURCE
#include "file_rng.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <uv.h>

typedef struct slot {
  uv_fs_t req;
  uv_buf_t buf;
} slot_t;

static uv_file fd;
static file_rng_t rng;
static long started, done_n, total;
static int err;

static void start(slot_t *s);

static void on_read(uv_fs_t *req) {
  slot_t *s = (slot_t *)req;
  if (req->result != FILE_BLOCK)
    err = 1;
  uv_fs_req_cleanup(req);
  done_n++;
  if (started < total)
    start(s);
}

static void start(slot_t *s) {
  started++;
  if (uv_fs_read(uv_default_loop(), &s->req, fd, &s->buf, 1,
                 file_rng_next(&rng), on_read) != 0) {
    fprintf(stderr, "file_uv: read failed\n");
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4)
    return 2;
  total = atol(argv[2]);
  int inflight = atoi(argv[3]);
  struct stat st;
  if (stat(argv[1], &st) != 0)
    return 1;
  rng.s = 0x9E3779B97F4A7C15ull;
  rng.blocks = (uint64_t)st.st_size / FILE_BLOCK;
  uv_fs_t open_req;
  fd = uv_fs_open(uv_default_loop(), &open_req, argv[1], O_RDONLY, 0, NULL);
  uv_fs_req_cleanup(&open_req);
  if (fd < 0)
    return 1;
  slot_t *slots = malloc((size_t)inflight * sizeof *slots);
  char *bufs = malloc((size_t)inflight * FILE_BLOCK);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < inflight; i++) {
    slots[i].buf = uv_buf_init(bufs + (size_t)i * FILE_BLOCK, FILE_BLOCK);
    start(&slots[i]);
  }
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  if (err || done_n != total)
    return 1;
  printf("%.0f\n", (double)total * 1e9 / (double)(t1 - t0));
  uv_fs_t close_req;
  uv_fs_close(uv_default_loop(), &close_req, fd, NULL);
  uv_fs_req_cleanup(&close_req);
  uv_loop_close(uv_default_loop());
  free(slots);
  free(bufs);
  return 0;
}
