/* SPDX-License-Identifier: MIT */
/* bench/pool_uv.c: offload with libuv's thread pool: the loop thread queues
 * n small jobs with uv_queue_work; each after_work callback (back on the
 * loop) counts a completion. Prints jobs/s. */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

static long done, total;

static void work(uv_work_t *req) {
  uintptr_t x = (uintptr_t)req->data;
  req->data = (void *)(x * 2654435761u);
}

static void after(uv_work_t *req, int status) {
  (void)status;
  done++;
  free(req);
}

int main(int argc, char **argv) {
  total = argc > 1 ? atol(argv[1]) : 1000000;
  uv_loop_t *loop = uv_default_loop();
  uint64_t t0 = uv_hrtime();
  for (long i = 0; i < total; i++) {
    uv_work_t *req = malloc(sizeof(*req));
    req->data = (void *)(uintptr_t)i;
    if (uv_queue_work(loop, req, work, after) != 0)
      abort();
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  if (done != total)
    abort();
  printf("%.0f\n", (double)total / ((double)(t1 - t0) / 1e9));
  return 0;
}
