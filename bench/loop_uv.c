/* SPDX-License-Identifier: MIT */
/* bench/loop_uv.c: the `loop` suite's work done with libuv, the same
 * definitions as bench/loop_weft.c; one mode per run, one figure printed
 * (offload_rtt: "p50 p99"):
 *   timer_start N / timer_stop N / timer_fire N / pingpong N (uv_async_send
 *   both ways) / offload N / offload_rtt N (uv_queue_work). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static long n;
#include "loop_rng.h"

static uv_loop_t *loop;
static uv_timer_t *timers;
static uint64_t *timeouts;
static long fired;
static uint64_t t0, t1;

static void no_op(uv_timer_t *t) { (void)t; }
static void on_fire(uv_timer_t *t) {
  (void)t;
  if (++fired == n)
    t1 = uv_hrtime();
}

static void prepare(uint64_t lo, uint64_t span) {
  timers = calloc((size_t)n, sizeof *timers);
  timeouts = calloc((size_t)n, sizeof *timeouts);
  if (!timers || !timeouts)
    abort();
  for (long i = 0; i < n; i++) {
    uv_timer_init(loop, &timers[i]);
    timeouts[i] = lo + rng() % span;
  }
}

/* pingpong: thread B's loop and ours signal each other with uv_async. */
static uv_async_t a_async, b_async;
static uv_loop_t b_loop;
static _Atomic long rounds;
static void a_cb(uv_async_t *h) { (void)h; uv_async_send(&b_async); }
static void b_cb(uv_async_t *h) {
  if (atomic_fetch_add(&rounds, 1) + 1 == n) {
    t1 = uv_hrtime();
    uv_close((uv_handle_t *)h, NULL);
    uv_async_send(&a_async); /* let the loop see the end */
    return;
  }
  uv_async_send(&a_async);
}
static void *thread_b(void *arg) {
  (void)arg;
  t0 = uv_hrtime();
  uv_async_send(&a_async);
  uv_run(&b_loop, UV_RUN_DEFAULT);
  return NULL;
}

/* offload */
static long done;
static uint64_t *rtt;
static void work(uv_work_t *req) {
  uintptr_t x = (uintptr_t)req->data;
  req->data = (void *)(x * 2654435761u);
}
static void after(uv_work_t *req, int status) {
  (void)status;
  free(req);
  if (++done == n)
    t1 = uv_hrtime();
}
static uint64_t sent_at;
static void queue_one(void);
static void after_rtt(uv_work_t *req, int status) {
  (void)status;
  free(req);
  rtt[done++] = uv_hrtime() - sent_at;
  if (done < n)
    queue_one();
}
static void queue_one(void) {
  uv_work_t *req = malloc(sizeof *req);
  if (req == NULL)
    abort();
  req->data = (void *)(uintptr_t)done;
  sent_at = uv_hrtime();
  if (uv_queue_work(loop, req, work, after_rtt) != 0)
    abort();
}
static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 3 || (n = atol(argv[2])) <= 0)
    return 2;
  const char *mode = argv[1];
  loop = uv_default_loop();
  uv_update_time(loop);
  if (!strcmp(mode, "timer_start") || !strcmp(mode, "timer_stop")) {
    prepare(1000, 1000000 - 1000);
    uint64_t a = uv_hrtime();
    for (long i = 0; i < n; i++)
      uv_timer_start(&timers[i], no_op, timeouts[i], 0);
    uint64_t b = uv_hrtime();
    for (long i = 0; i < n; i++)
      uv_timer_stop(&timers[i]);
    uint64_t c = uv_hrtime();
    printf("%.1f\n",
           (double)(!strcmp(mode, "timer_start") ? b - a : c - b) / (double)n);
  } else if (!strcmp(mode, "timer_fire")) {
    prepare(0, 11);
    uv_update_time(loop); /* due times count from now, not from before prepare */
    t0 = uv_hrtime();
    for (long i = 0; i < n; i++)
      uv_timer_start(&timers[i], on_fire, timeouts[i], 0);
    uv_run(loop, UV_RUN_DEFAULT);
    if (fired != n)
      abort();
    printf("%.2f\n", (double)(t1 - t0) / 1e6);
  } else if (!strcmp(mode, "pingpong")) {
    uv_loop_init(&b_loop);
    uv_async_init(loop, &a_async, a_cb);
    uv_async_init(&b_loop, &b_async, b_cb);
    pthread_t b;
    pthread_create(&b, NULL, thread_b, NULL);
    while (atomic_load(&rounds) < n) /* B sends once more at the end */
      uv_run(loop, UV_RUN_ONCE);
    pthread_join(b, NULL);
    uv_close((uv_handle_t *)&a_async, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(&b_loop);
    printf("%.2f\n", (double)(t1 - t0) / 1e3 / (double)n);
  } else if (!strcmp(mode, "offload")) {
    t0 = uv_hrtime();
    for (long i = 0; i < n; i++) {
      uv_work_t *req = malloc(sizeof *req);
      if (req == NULL)
        abort();
      req->data = (void *)(uintptr_t)i;
      if (uv_queue_work(loop, req, work, after) != 0)
        abort();
    }
    uv_run(loop, UV_RUN_DEFAULT);
    if (done != n)
      abort();
    printf("%.0f\n", (double)n / ((double)(t1 - t0) / 1e9));
  } else if (!strcmp(mode, "offload_rtt")) {
    rtt = calloc((size_t)n, sizeof *rtt);
    queue_one();
    uv_run(loop, UV_RUN_DEFAULT);
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_u64);
    printf("%.1f %.1f\n", (double)rtt[n / 2] / 1e3, (double)rtt[n * 99 / 100] / 1e3);
  } else {
    return 2;
  }
  free(timers);
  free(timeouts);
  free(rtt);
  return 0;
}
