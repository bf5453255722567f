/* SPDX-License-Identifier: MIT */
/* bench/pool_uv.c: offload with libuv's thread pool: the loop thread queues
 * n small jobs with uv_queue_work; each after_work_cb (back on the loop)
 * counts a completion. The requests live in one array of `window` uv_work_t
 * allocated before the clock: each after_work_cb that still has jobs to
 * issue queues its own request again with the next job, as libuv programs
 * recycle their requests. The pool's size is libuv's own business
 * (UV_THREADPOOL_SIZE, read at the first uv_queue_work, which is why one
 * untimed job runs before the clock: the pool's threads then exist and are
 * parked, as weft's and naive's are). Prints jobs/s.
 * Usage: bench_pool_libuv N [WINDOW] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

static long done, issued, total;

static void work(uv_work_t *req) {
  uintptr_t x = (uintptr_t)req->data;
  req->data = (void *)(x * 2654435761u);
}

static void warm_after(uv_work_t *req, int status) {
  (void)req;
  if (status != 0)
    abort();
}

static void after(uv_work_t *req, int status) {
  if (status != 0) {
    fprintf(stderr, "pool_uv: after_work status %s\n", uv_strerror(status));
    exit(1);
  }
  done++;
  if (issued < total) { /* recycle this request for the next job */
    req->data = (void *)(uintptr_t)issued++;
    if (uv_queue_work(req->loop, req, work, after) != 0)
      abort();
  }
}

int main(int argc, char **argv) {
  total = argc > 1 ? atol(argv[1]) : 1000000;
  long window = argc > 2 ? atol(argv[2]) : 65536;
  if (window < 1 || total < 1)
    return 2;
  if (window > total)
    window = total;
  uv_work_t *reqs = calloc((size_t)window, sizeof(*reqs));
  if (reqs == NULL)
    abort();
  uv_loop_t *loop = uv_default_loop();
  uv_work_t warm = {0};
  if (uv_queue_work(loop, &warm, work, warm_after) != 0 ||
      uv_run(loop, UV_RUN_DEFAULT) != 0)
    abort();
  uint64_t t0 = uv_hrtime();
  for (issued = 0; issued < window; issued++) {
    reqs[issued].data = (void *)(uintptr_t)issued;
    if (uv_queue_work(loop, &reqs[issued], work, after) != 0)
      abort();
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  if (done != total) {
    fprintf(stderr, "pool_uv: %ld of %ld completions\n", done, total);
    return 1;
  }
  printf("%.0f\n", (double)total / ((double)(t1 - t0) / 1e9));
  free(reqs);
  return 0;
}
