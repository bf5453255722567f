/* SPDX-License-Identifier: MIT */
/* bench/loop_ev.c: the `loop` suite's timer work done with libev, the same
 * definitions and output lines as bench/loop_weft.c (timeouts in seconds =
 * the same ms/1000, ev_timer on the default loop, epoll backend):
 *   timer_start N / timer_stop N (ns each) / timer_fire N, timer_sparse N
 *   ("total late_p50 late_p99 cpu": ms, us, us, ms). */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n, fired;
static double t0, t1; /* ev_time() */
#include "loop_rng.h"

static ev_timer *timers;
static int64_t *timeouts; /* ms */
static int64_t *late;     /* per timer: fire time - due time, ns */
static int64_t m0, c0, c1;

static void no_op(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
}

static void on_fire(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)revents;
  long i = w - timers;
  late[i] = mono_ns() - (m0 + timeouts[i] * 1000000);
  if (++fired == n) {
    t1 = ev_time();
    c1 = cpu_ns();
  }
}

int main(int argc, char **argv) {
  if (argc < 3 || (n = atol(argv[2])) <= 0)
    return 2;
  const char *mode = argv[1];
  struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
  timers = calloc((size_t)n, sizeof *timers);
  timeouts = calloc((size_t)n, sizeof *timeouts);
  late = calloc((size_t)n, sizeof *late);
  if (timers == NULL || timeouts == NULL || late == NULL)
    abort();
  int sparse = !strcmp(mode, "timer_sparse");
  int fire = sparse || !strcmp(mode, "timer_fire");
  uint64_t lo = fire ? 0 : 1000;
  uint64_t span = sparse ? 200 : fire ? 11 : 1000000 - 1000;
  for (long i = 0; i < n; i++) {
    timeouts[i] = (int64_t)(lo + rng() % span);
    ev_timer_init(&timers[i], fire ? on_fire : no_op,
                  (double)timeouts[i] / 1000.0, 0.);
  }
  ev_now_update(loop);
  if (fire) {
    c0 = cpu_ns();
    t0 = ev_time();
    m0 = mono_ns();
    for (long i = 0; i < n; i++)
      ev_timer_start(loop, &timers[i]);
    ev_run(loop, 0);
    if (fired != n)
      abort();
    int64_t p50 = percentile(late, n, 50), p99 = percentile(late, n, 99);
    printf("%.2f %.1f %.1f %.2f\n", (t1 - t0) * 1e3, (double)p50 / 1e3,
           (double)p99 / 1e3, (double)(c1 - c0) / 1e6);
  } else {
    double a = ev_time();
    for (long i = 0; i < n; i++)
      ev_timer_start(loop, &timers[i]);
    double b = ev_time();
    for (long i = 0; i < n; i++)
      ev_timer_stop(loop, &timers[i]);
    double c = ev_time();
    double s = !strcmp(mode, "timer_start") ? b - a : c - b;
    printf("%.1f\n", s * 1e9 / (double)n);
  }
  free(timers);
  free(timeouts);
  free(late);
  return 0;
}
