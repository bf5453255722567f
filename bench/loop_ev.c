/* SPDX-License-Identifier: MIT */
/* bench/loop_ev.c: the `loop` suite's timer work done with libev, the same
 * definitions as bench/loop_weft.c (timeouts in seconds = the same ms/1000):
 *   timer_start N / timer_stop N (ns each) / timer_fire N (ms total). */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n, fired;
static double t0, t1;
#include "loop_rng.h"

static void no_op(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
}

static void on_fire(struct ev_loop *l, ev_timer *w, int revents) {
  (void)w;
  (void)revents;
  if (++fired == n)
    t1 = ev_time();
  (void)l;
}

int main(int argc, char **argv) {
  if (argc < 3 || (n = atol(argv[2])) <= 0)
    return 2;
  const char *mode = argv[1];
  struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
  ev_timer *timers = calloc((size_t)n, sizeof *timers);
  if (timers == NULL)
    abort();
  int fire = !strcmp(mode, "timer_fire");
  for (long i = 0; i < n; i++) {
    double ms = fire ? (double)(rng() % 11) : (double)(1000 + rng() % (1000000 - 1000));
    ev_timer_init(&timers[i], fire ? on_fire : no_op, ms / 1000.0, 0.);
  }
  ev_now_update(loop);
  if (fire) {
    t0 = ev_time();
    for (long i = 0; i < n; i++)
      ev_timer_start(loop, &timers[i]);
    ev_run(loop, 0);
    if (fired != n)
      abort();
    printf("%.2f\n", (t1 - t0) * 1e3);
  } else {
    double a = ev_time();
    for (long i = 0; i < n; i++)
      ev_timer_start(loop, &timers[i]);
    double b = ev_time();
    for (long i = 0; i < n; i++)
      ev_timer_stop(loop, &timers[i]);
    double c = ev_time();
    printf("%.1f\n", (!strcmp(mode, "timer_start") ? b - a : c - b) * 1e9 / (double)n);
  }
  free(timers);
  return 0;
}
