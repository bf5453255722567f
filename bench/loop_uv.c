/* SPDX-License-Identifier: MIT */
/* bench/loop_uv.c: the `loop` suite's work done with libuv, the same
 * definitions and the same output lines as bench/loop_weft.c, one mode per
 * run: timer_start N / timer_stop N / timer_fire N / timer_sparse N
 * (uv_timer_start, ms) /
 * pingpong N (uv_async_send both ways) / offload N / offload_rtt N
 * (uv_queue_work; the threadpool's size is UV_THREADPOOL_SIZE's, default 4).
 * Requests are the caller's memory, as libuv intends: offload's N in-flight
 * requests are one array allocated inside the clock (weft allocates its
 * jobs inside it too), offload_rtt reuses one. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
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
static uint64_t t0, t1; /* uv_hrtime() */
static int64_t c0, c1;  /* cpu_ns() */
static int64_t m0;      /* mono_ns() when the timers start */
static int64_t *late;   /* per timer: fire time - due time, ns */

static void no_op(uv_timer_t *t) { (void)t; }
static void on_fire(uv_timer_t *t) {
  long i = t - timers;
  late[i] = mono_ns() - (m0 + (int64_t)timeouts[i] * 1000000);
  if (++fired == n) {
    t1 = uv_hrtime();
    c1 = cpu_ns();
  }
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
static void a_cb(uv_async_t *h) {
  (void)h;
  uv_async_send(&b_async);
}
static void b_cb(uv_async_t *h) {
  if (atomic_fetch_add(&rounds, 1) + 1 == n) {
    t1 = uv_hrtime();
    c1 = cpu_ns();
    uv_close((uv_handle_t *)h, NULL);
    uv_async_send(&a_async); /* let the loop see the end */
    return;
  }
  uv_async_send(&a_async);
}
static void *thread_b(void *arg) {
  (void)arg;
  c0 = cpu_ns();
  t0 = uv_hrtime();
  uv_async_send(&a_async);
  uv_run(&b_loop, UV_RUN_DEFAULT);
  return NULL;
}

/* offload */
static long done;
static int64_t *rtt;
static uv_work_t *reqs, one_req;
static void work(uv_work_t *req) {
  uintptr_t x = (uintptr_t)req->data;
  req->data = (void *)(x * 2654435761u);
}
static void after(uv_work_t *req, int status) {
  (void)req;
  (void)status;
  if (++done == n) {
    t1 = uv_hrtime();
    c1 = cpu_ns();
  }
}
static void warm_done(uv_work_t *req, int status) {
  (void)req;
  (void)status;
}
/* One job through the threadpool before the clock: libuv starts its
 * threads at the first uv_queue_work, weft's pool at its creation. */
static void warm_up(void) {
  if (uv_queue_work(loop, &one_req, work, warm_done) != 0)
    abort();
  uv_run(loop, UV_RUN_DEFAULT);
}
/* offload: n requests in flight at once. The requests' memory is inside
 * the clock, as weft's jobs' is (one allocation for all, the cheapest way
 * to have n requests in flight), or with `prefaulted` allocated and
 * written before it: libuv's cost with its memory already paid for. */
static void offload(bool prefaulted) {
  if (prefaulted && (reqs = calloc((size_t)n, sizeof *reqs)) == NULL)
    abort();
  for (long i = 0; prefaulted && i < n; i++)
    reqs[i].data = (void *)(uintptr_t)i;
  warm_up();
  c0 = cpu_ns();
  t0 = uv_hrtime();
  if (!prefaulted && (reqs = calloc((size_t)n, sizeof *reqs)) == NULL)
    abort();
  for (long i = 0; i < n; i++) {
    if (!prefaulted)
      reqs[i].data = (void *)(uintptr_t)i;
    if (uv_queue_work(loop, &reqs[i], work, after) != 0)
      abort();
  }
  uv_run(loop, UV_RUN_DEFAULT);
  if (done != n)
    abort();
  printf("%.0f %.3f\n", (double)n / ((double)(t1 - t0) / 1e9),
         (double)(c1 - c0) / 1e3 / (double)n);
  free(reqs);
}

static uint64_t sent_at;
static void queue_one(void);
static void after_rtt(uv_work_t *req, int status) {
  (void)req;
  (void)status;
  rtt[done++] = (int64_t)(uv_hrtime() - sent_at);
  if (done < n)
    queue_one();
  else
    c1 = cpu_ns();
}
static void queue_one(void) {
  one_req.data = (void *)(uintptr_t)done;
  sent_at = uv_hrtime();
  if (uv_queue_work(loop, &one_req, work, after_rtt) != 0)
    abort();
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
  } else if (!strcmp(mode, "timer_fire") || !strcmp(mode, "timer_sparse")) {
    prepare(0, !strcmp(mode, "timer_fire") ? 11 : 200);
    late = calloc((size_t)n, sizeof *late);
    if (late == NULL)
      abort();
    uv_update_time(loop); /* due times count from now, not from prepare's */
    c0 = cpu_ns();
    t0 = uv_hrtime();
    m0 = mono_ns();
    for (long i = 0; i < n; i++)
      uv_timer_start(&timers[i], on_fire, timeouts[i], 0);
    uv_run(loop, UV_RUN_DEFAULT);
    if (fired != n)
      abort();
    int64_t p50 = percentile(late, n, 50), p99 = percentile(late, n, 99);
    printf("%.2f %.1f %.1f %.2f\n", (double)(t1 - t0) / 1e6, (double)p50 / 1e3,
           (double)p99 / 1e3, (double)(c1 - c0) / 1e6);
    free(late);
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
    if (atomic_load(&rounds) != n)
      abort();
    printf("%.2f %.2f\n", (double)(t1 - t0) / 1e3 / (double)n,
           (double)(c1 - c0) / 1e3 / (double)n);
  } else if (!strcmp(mode, "offload") || !strcmp(mode, "offload_prefaulted")) {
    offload(!strcmp(mode, "offload_prefaulted"));
  } else if (!strcmp(mode, "offload_rtt")) {
    rtt = calloc((size_t)n, sizeof *rtt);
    if (rtt == NULL)
      abort();
    warm_up();
    c0 = cpu_ns();
    queue_one();
    uv_run(loop, UV_RUN_DEFAULT);
    if (done != n)
      abort();
    int64_t p50 = percentile(rtt, n, 50), p99 = percentile(rtt, n, 99);
    printf("%.1f %.1f %.2f\n", (double)p50 / 1e3, (double)p99 / 1e3,
           (double)(c1 - c0) / 1e3 / (double)n);
  } else {
    return 2;
  }
  free(timers);
  free(timeouts);
  free(rtt);
  return 0;
}
