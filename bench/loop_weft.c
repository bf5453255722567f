/* SPDX-License-Identifier: MIT */
/* bench/loop_weft.c: the `loop` suite's work done with weft's loop; one mode
 * per run, printing one line of figures (CPU is the whole process's user +
 * sys over the timed part, all threads):
 *   timer_start N   ns per weft_timer_start (N timers, random 1000..999999 ms)
 *   timer_stop N    ns per weft_timer_stop of those N, in start order
 *   timer_fire N    "total late_p50 late_p99 cpu": ms until N timers due over
 *                   0..10 ms have all fired, each timer's lateness (fire
 *                   time minus due time, CLOCK_MONOTONIC) in us, CPU in ms
 *   timer_sparse N  the same over 0..199 ms (a few timers per ms: how close
 *                   to its due time each one fires, not the backlog)
 *   pingpong N      "us cpu_us" per round trip thread B -> loop A -> loop B
 *                   (posts)
 *   offload N       "jobs/s cpu_us": N tiny pool jobs started from the loop,
 *                   each continued on the loop; CPU per job
 *   offload_rtt N   "p50 p99 cpu_us" us: one job at a time, loop -> pool ->
 *                   loop; CPU per round trip
 * A mode with "_nospin" appended runs with the loops' adaptive spin off
 * (spin_us -1): every wait for a post sleeps in epoll and is woken.
 * BENCH_POOL_THREADS=N (diagnostics) gives the offload modes' pool N
 * workers instead of one per CPU.
 * Timed work runs inside a loop callback, where programs start timers and
 * submit jobs (and where the loop's cached time is current). */
#define _POSIX_C_SOURCE 200809L
#include <weft.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static weft_loop_t *loop;
static long n;

#include "loop_rng.h"

static void *xmalloc(size_t size) {
  void *p = calloc(1, size);
  if (p == NULL)
    abort();
  return p;
}

static void check(int rc) {
  if (rc != 0) {
    fprintf(stderr, "loop_weft: %s\n", weft_error_message(rc));
    abort();
  }
}

/* Run `fn` once inside a loop callback, then the loop until it stops. */
static void run_in_loop(weft_loop_fn fn) {
  check(weft_loop_post(loop, fn, NULL));
  check(weft_loop_run(loop, WEFT_RUN_DEFAULT));
}

/* ---- timers ---- */

static weft_timer_t *timers;
static int64_t *timeouts;
static long fired;
static int64_t t0, t1; /* weft_clock_now_ns() */
static int64_t c0, c1; /* cpu_ns() */
static int64_t m0;     /* mono_ns() when the timers start */
static int64_t *late;  /* per timer: fire time - due time, ns */

static void no_op(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)status;
  (void)arg;
}

static void on_fire(weft_timer_t *t, int status, void *arg) {
  (void)t;
  long i = (long)(uintptr_t)arg;
  if (status != 0)
    return;
  late[i] = mono_ns() - (m0 + timeouts[i] * 1000000);
  if (++fired == n) {
    t1 = weft_clock_now_ns();
    c1 = cpu_ns();
    weft_loop_stop(loop);
  }
}

static void prepare_timers(weft_timer_fn fn, int64_t lo, int64_t span) {
  timers = xmalloc((size_t)n * sizeof *timers);
  timeouts = xmalloc((size_t)n * sizeof *timeouts);
  for (long i = 0; i < n; i++) {
    check(weft_timer_init(loop, &timers[i], fn, (void *)(uintptr_t)i));
    timeouts[i] = lo + (int64_t)(rng() % (uint64_t)span);
  }
}

static void timed_start(weft_loop_t *l, void *arg, int status) {
  (void)arg;
  (void)status;
  t0 = weft_clock_now_ns();
  for (long i = 0; i < n; i++)
    weft_timer_start(&timers[i], timeouts[i], 0);
  t1 = weft_clock_now_ns();
  weft_loop_stop(l);
}

static void timed_stop(weft_loop_t *l, void *arg, int status) {
  (void)arg;
  (void)status;
  for (long i = 0; i < n; i++)
    check(weft_timer_start(&timers[i], timeouts[i], 0));
  t0 = weft_clock_now_ns();
  for (long i = 0; i < n; i++)
    weft_timer_stop(&timers[i]);
  t1 = weft_clock_now_ns();
  weft_loop_stop(l);
}

static void start_firing(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  (void)status;
  c0 = cpu_ns();
  t0 = weft_clock_now_ns();
  m0 = mono_ns();
  for (long i = 0; i < n; i++)
    weft_timer_start(&timers[i], timeouts[i], 0);
}

static weft_loop_options_t lopts = {.size = sizeof lopts};

/* ---- pingpong: B posts to A, A posts back to B, B starts the next ---- */

static weft_loop_t *loop_b;
static long rounds;

static void on_b(weft_loop_t *l, void *arg, int status);
static void on_a(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  (void)status;
  check(weft_loop_post(loop_b, on_b, NULL));
}
static void on_b(weft_loop_t *l, void *arg, int status) {
  (void)arg;
  (void)status;
  if (++rounds == n) {
    t1 = weft_clock_now_ns();
    c1 = cpu_ns();
    weft_loop_stop(l);
    return;
  }
  check(weft_loop_post(loop, on_a, NULL));
}

static void *thread_b(void *arg) {
  (void)arg;
  check(weft_loop_create(&lopts, &loop_b));
  c0 = cpu_ns();
  t0 = weft_clock_now_ns();
  check(weft_loop_post(loop, on_a, NULL));
  check(weft_loop_run(loop_b, WEFT_RUN_DEFAULT));
  weft_loop_stop(loop); /* A has nothing left to send us */
  check(weft_loop_close(loop_b));
  return NULL;
}

/* ---- offload: loop -> pool -> loop ---- */

static weft_pool_t *pool;
static long done;
static int64_t *rtt;

static weft_result_t tiny_job(weft_job_t *job, void *arg) {
  (void)job;
  uintptr_t x = (uintptr_t)arg;
  return weft_ok_int((intptr_t)(x * 2654435761u));
}

static weft_result_t count_done(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  if (++done == n) {
    t1 = weft_clock_now_ns();
    c1 = cpu_ns();
    weft_loop_stop(loop);
  }
  return weft_ok_int(0);
}

static void count_watched(void *arg, weft_future_t *src) {
  (void)count_done(arg, src);
}

/* offload: each continuation a weft_future_watch (nobody reads a derived
 * future here); offload_then: a weft_future_then. */
static int use_then;
static int64_t t_sub; /* when the last job was submitted */
static void submit_all(weft_loop_t *l, void *arg, int status) {
  (void)arg;
  (void)status;
  weft_executor_t *ex = weft_loop_executor(l);
  c0 = cpu_ns();
  t0 = weft_clock_now_ns();
  for (long i = 0; i < n; i++) {
    weft_future_t *f, *c;
    check(weft_pool_submit(pool, tiny_job, (void *)(uintptr_t)i, NULL, &f));
    if (use_then) {
      check(weft_future_then(f, ex, count_done, NULL, NULL, &c));
      weft_future_release(c);
      weft_future_release(f);
    } else {
      check(weft_future_watch(f, ex, count_watched, NULL, NULL)); /* takes f */
    }
  }
  t_sub = weft_clock_now_ns();
}

static int64_t sent_at;
static void submit_one(void);
static weft_result_t one_back(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  rtt[done] = weft_clock_now_ns() - sent_at;
  if (++done == n) {
    c1 = cpu_ns();
    weft_loop_stop(loop);
  } else {
    submit_one();
  }
  return weft_ok_int(0);
}
static void submit_one(void) {
  weft_future_t *f, *c;
  sent_at = weft_clock_now_ns();
  check(weft_pool_submit(pool, tiny_job, (void *)(uintptr_t)done, NULL, &f));
  check(
      weft_future_then(f, weft_loop_executor(loop), one_back, NULL, NULL, &c));
  weft_future_release(f);
  weft_future_release(c);
}
static void start_rtt(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  (void)status;
  c0 = cpu_ns();
  submit_one();
}

int main(int argc, char **argv) {
  if (argc < 3 || (n = atol(argv[2])) <= 0) {
    fprintf(stderr,
            "usage: %s timer_start|timer_stop|timer_fire|"
            "timer_sparse|pingpong|offload|offload_rtt N\n",
            argv[0]);
    return 2;
  }
  char mode[64];
  snprintf(mode, sizeof mode, "%s", argv[1]);
  char *nospin = strstr(mode, "_nospin");
  if (nospin != NULL) {
    *nospin = '\0';
    lopts.spin_us = -1;
  }
  check(weft_loop_create(&lopts, &loop));
  if (!strcmp(mode, "timer_start") || !strcmp(mode, "timer_stop")) {
    prepare_timers(no_op, 1000, 1000000 - 1000);
    run_in_loop(!strcmp(mode, "timer_start") ? timed_start : timed_stop);
    printf("%.1f\n", (double)(t1 - t0) / (double)n);
  } else if (!strcmp(mode, "timer_fire") || !strcmp(mode, "timer_sparse")) {
    prepare_timers(on_fire, 0, !strcmp(mode, "timer_fire") ? 11 : 200);
    late = xmalloc((size_t)n * sizeof *late);
    run_in_loop(start_firing);
    if (fired != n)
      abort();
    int64_t p50 = percentile(late, n, 50), p99 = percentile(late, n, 99);
    printf("%.2f %.1f %.1f %.2f\n", (double)(t1 - t0) / 1e6, (double)p50 / 1e3,
           (double)p99 / 1e3, (double)(c1 - c0) / 1e6);
    free(late);
  } else if (!strcmp(mode, "pingpong")) {
    pthread_t b;
    if (pthread_create(&b, NULL, thread_b, NULL) != 0)
      abort();
    check(weft_loop_run(loop, WEFT_RUN_DEFAULT)); /* until B stops us */
    pthread_join(b, NULL);
    if (rounds != n)
      abort();
    printf("%.2f %.2f\n", (double)(t1 - t0) / 1e3 / (double)n,
           (double)(c1 - c0) / 1e3 / (double)n);
  } else if (!strcmp(mode, "offload") || !strcmp(mode, "offload_then") ||
             !strcmp(mode, "offload_rtt")) {
    weft_pool_options_t po = {.size = sizeof po};
    if (getenv("BENCH_POOL_THREADS"))
      po.threads = (unsigned)atoi(getenv("BENCH_POOL_THREADS"));
    check(weft_pool_create(&po, &pool));
    use_then = !strcmp(mode, "offload_then");
    if (strcmp(mode, "offload_rtt") != 0) {
      run_in_loop(submit_all);
      if (done != n)
        abort();
      printf("%.0f %.3f\n", (double)n / ((double)(t1 - t0) / 1e9),
             (double)(c1 - c0) / 1e3 / (double)n);
      if (getenv("BENCH_VERBOSE")) {
        weft_pool_stats_t ps;
        weft_loop_stats_t ls;
        weft_pool_stats(pool, &ps);
        weft_loop_stats(loop, &ls);
        fprintf(stderr,
                "# offload: submitting %.1f ms of %.1f; %llu steals, %llu "
                "parks; loop %llu iterations, %llu polls, %llu wakeups\n",
                (double)(t_sub - t0) / 1e6, (double)(t1 - t0) / 1e6,
                (unsigned long long)ps.steals, (unsigned long long)ps.parks,
                (unsigned long long)ls.iterations, (unsigned long long)ls.polls,
                (unsigned long long)ls.wakeups);
      }
    } else {
      rtt = xmalloc((size_t)n * sizeof *rtt);
      run_in_loop(start_rtt);
      if (done != n)
        abort();
      int64_t p50 = percentile(rtt, n, 50), p99 = percentile(rtt, n, 99);
      printf("%.1f %.1f %.2f\n", (double)p50 / 1e3, (double)p99 / 1e3,
             (double)(c1 - c0) / 1e3 / (double)n);
    }
    check(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL));
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  check(weft_loop_close(loop)); /* timer_start's timers end cancelled */
  free(timers);
  free(timeouts);
  free(rtt);
  return 0;
}
