/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_spin.c: the adaptive spin: posts that come back
 * quickly are met by a spin, an idle loop does not spin, and a loop
 * feeding a pool keeps quiet. */
#include "loop_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- adaptive spin: posts that come back quickly are met by a spin ---- */
enum { SPIN_ROUNDS = 20000 };
static struct {
  weft_loop_t *a, *b;
  int spin_us;
  long rounds;
  long bad_status;          /* a post that ran with a status other than 0 */
  long refused;             /* a create, post or run_until that failed */
  until_t b_done, all_done; /* B's last round; B's loop closed */
  weft_loop_stats_t b_stats;
} sp;

static void sp_on_b(weft_loop_t *l, void *arg, int status);
static void sp_on_a(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  if (status != 0)
    sp.bad_status++;
  else if (weft_loop_post(sp.b, sp_on_b, NULL) != 0)
    sp.refused++;
}
static void sp_on_b(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  if (status != 0)
    sp.bad_status++;
  else if (++sp.rounds == SPIN_ROUNDS)
    weft_promise_fulfil_int(sp.b_done.p, 0);
  else if (weft_loop_post(sp.a, sp_on_a, NULL) != 0)
    sp.refused++;
}
static void *sp_thread_b(void *arg) {
  (void)arg;
  weft_loop_options_t o = {.size = sizeof o, .spin_us = sp.spin_us};
  if (weft_loop_create(&o, &sp.b) != 0) {
    sp.refused++;
  } else {
    if (weft_loop_post(sp.a, sp_on_a, NULL) != 0)
      sp.refused++;
    else if (weft_loop_run_until(sp.b, sp.b_done.f, BOUND_MS) != 0)
      sp.refused++;
    weft_loop_stats(sp.b, &sp.b_stats);
    weft_loop_close(sp.b);
  }
  weft_promise_fulfil_int(sp.all_done.p, 0); /* wakes A's run_until */
  return NULL;
}

static int64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A ping-pong of SPIN_ROUNDS round trips between loop A (here) and loop B
 * (a second thread), both with spin_us; A's and B's stats out. */
static void spin_pingpong(int spin_us, weft_loop_stats_t *a_stats) {
  memset(&sp, 0, sizeof sp);
  sp.spin_us = spin_us;
  weft_loop_options_t o = {.size = sizeof o, .spin_us = spin_us};
  REQUIRE_EQ(weft_loop_create(&o, &sp.a), 0);
  sp.b_done = until_new();
  sp.all_done = until_new();
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, sp_thread_b, NULL), 0);
  EXPECT_EQ(weft_loop_run_until(sp.a, sp.all_done.f, BOUND_MS), 0);
  pthread_join(th, NULL);
  EXPECT_EQ(sp.bad_status, 0);
  EXPECT_EQ(sp.refused, 0);
  EXPECT_EQ(sp.rounds, SPIN_ROUNDS);
  weft_loop_stats(sp.a, a_stats);
}

static void test_adaptive_spin(void) {
  weft_loop_stats_t a;
  /* off: every wait for the other side sleeps, none is met by a spin */
  spin_pingpong(-1, &a);
  EXPECT_EQ(a.spins, 0);
  EXPECT_EQ(a.spin_hits, 0);
  EXPECT_EQ(sp.b_stats.spins, 0);
  EXPECT_EQ(sp.b_stats.spin_hits, 0);
  EXPECT_EQ(weft_loop_close(sp.a), 0);
  until_done(&sp.b_done);
  until_done(&sp.all_done);
  /* on (the default bound): replies that come back quickly are spun for */
  spin_pingpong(0, &a);
  EXPECT_EQ(a.spin_hits + sp.b_stats.spin_hits > 0, 1);
  EXPECT_EQ(a.spin_hits <= a.spins, 1);
  /* and the loop, trained to spin, still does not spin while idle: a
   * 200 ms sleep costs it far less than 200 ms of CPU */
  weft_future_t *sl;
  REQUIRE_EQ(weft_loop_sleep(sp.a, 200, &sl), 0);
  int64_t c0 = thread_cpu_ns();
  EXPECT_EQ(weft_loop_run_until(sp.a, sl, BOUND_MS), 0);
  int64_t used = thread_cpu_ns() - c0;
  EXPECT_EQ(used < 20 * 1000000, 1);
  weft_future_release(sl);
  EXPECT_EQ(weft_loop_close(sp.a), 0);
  until_done(&sp.b_done);
  until_done(&sp.all_done);
  /* bad bound */
  weft_loop_options_t o = {.size = sizeof o, .spin_us = 1000001};
  weft_loop_t *loop;
  EXPECT_ERR(weft_loop_create(&o, &loop), WEFT_EINVAL);
}

/* A loop feeding a pool keeps quiet: every job wakes a parked worker (the
 * loop waits 1 ms between jobs, so the workers are asleep by then), and
 * the loop does not spin for the completions that come back quickly. */
enum { QUIET_ROUNDS = 100 };
static struct {
  weft_pool_t *pool;
  weft_timer_t timer;
  int rounds;
  int not_fulfilled; /* a job that did not succeed */
  int refused;       /* a timer start, submit or watch that failed */
  until_t done;
} qt;
static weft_result_t qt_job(weft_job_t *job, void *arg) {
  (void)job;
  return weft_ok_int((intptr_t)arg + 1);
}
static void qt_back(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED)
    qt.not_fulfilled++;
  if (++qt.rounds == QUIET_ROUNDS)
    weft_promise_fulfil_int(qt.done.p, 0);
  else if (weft_timer_start(&qt.timer, 1, 0) != 0)
    qt.refused++;
}
static void qt_tick(weft_timer_t *t, int status, void *arg) {
  (void)t;
  weft_loop_t *loop = arg;
  weft_future_t *f;
  if (status != 0)
    return;
  if (weft_pool_submit(qt.pool, qt_job, (void *)(intptr_t)qt.rounds, NULL,
                       &f) != 0)
    qt.refused++;
  else if (weft_future_watch(f, weft_loop_executor(loop), qt_back, NULL,
                             NULL) != 0)
    qt.refused++;
}

static void test_spin_quiet_near_pool(void) {
  memset(&qt, 0, sizeof qt);
  weft_loop_t *loop = new_loop(); /* default options: the spin is on */
  REQUIRE_EQ(weft_pool_create(NULL, &qt.pool), 0);
  qt.done = until_new();
  REQUIRE_EQ(weft_timer_init(loop, &qt.timer, qt_tick, loop), 0);
  REQUIRE_EQ(weft_timer_start(&qt.timer, 1, 0), 0);
  EXPECT_EQ(weft_loop_run_until(loop, qt.done.f, BOUND_MS), 0);
  EXPECT_EQ(qt.rounds, QUIET_ROUNDS);
  EXPECT_EQ(qt.not_fulfilled, 0);
  EXPECT_EQ(qt.refused, 0);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  weft_pool_stats_t ps;
  weft_pool_stats(qt.pool, &ps);
  if (ps.parks >= QUIET_ROUNDS / 2) /* the workers did sleep between jobs */
    EXPECT_EQ(st.spins <= QUIET_ROUNDS / 10, 1);
  EXPECT_EQ(weft_pool_shutdown(qt.pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  until_done(&qt.done);
}

static const test_case_t cases[] = {{"adaptive spin", test_adaptive_spin},
                                    {"adaptive spin keeps quiet near a pool",
                                     test_spin_quiet_near_pool},
                                    {NULL, NULL}};

const test_suite_t suite_reactor_spin = {"reactor_spin", cases};
