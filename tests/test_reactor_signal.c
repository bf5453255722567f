/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_signal.c: signals as futures and as callbacks, and
 * their start/stop and cancel pairs. */
#include "loop_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- signals ---- */
static int sig_seen;
static void on_signal(weft_signal_t *s, int signum, int status, void *arg) {
  (void)s;
  until_t *u = arg;
  if (status == 0 && signum == SIGUSR2 && ++sig_seen == 2)
    weft_promise_fulfil_int(u->p, 1);
}

static void test_signals(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f;
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR1, &f), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), SIGUSR1);
  weft_future_release(f);
  /* the callback form, twice */
  weft_signal_t s;
  until_t u = until_new();
  sig_seen = 0;
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR2, on_signal, &u), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR2), 0);
  while (sig_seen < 1 && weft_loop_run(loop, WEFT_RUN_ONCE) == 0)
    ;
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR2), 0);
  EXPECT_EQ(weft_loop_run_until(loop, u.f, BOUND_MS), 0);
  EXPECT_EQ(sig_seen, 2);
  EXPECT_EQ(weft_signal_stop(&s), 0);
  until_done(&u);
  EXPECT_ERR(weft_signal_start(loop, &s, SIGKILL, on_signal, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, 0, on_signal, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static int pair_sig_total;
static void pair_sig(weft_signal_t *s, int signum, int status, void *arg) {
  (void)s;
  (void)signum;
  if (status == 0) {
    (*(int *)arg)++;
    pair_sig_total++;
  }
}

/* Signal handlers: starting an active handler again is refused (it linked
 * the handler to itself, and the next start spun forever), whether it is
 * the newest handler or an older one; stop twice, stop never started and
 * start after stop work, and delivery still reaches each handler once. */
static void test_signal_start_stop_pairs(void) {
  weft_loop_t *loop = new_loop();
  weft_signal_t a, b, z;
  memset(&z, 0, sizeof z);
  EXPECT_EQ(weft_signal_stop(&z), 0); /* never started: a no-op */
  int na = 0, nb = 0;
  REQUIRE_EQ(weft_signal_start(loop, &a, SIGUSR1, pair_sig, &na), 0);
  REQUIRE_EQ(weft_signal_start(loop, &b, SIGUSR1, pair_sig, &nb), 0);
  /* b is the newest (a self-link), a an older one (a cycle): the return
   * code is checked before anything walks the handler list again, so a
   * broken list fails here instead of spinning */
  int rb = weft_signal_start(loop, &b, SIGUSR1, pair_sig, &nb);
  EXPECT_ERR(rb, WEFT_EINVAL);
  if (rb != WEFT_EINVAL) {
    EXPECT_EQ(weft_loop_close(loop), 0); /* close does not walk in circles */
    return;
  }
  int ra = weft_signal_start(loop, &a, SIGUSR2, pair_sig, &na);
  EXPECT_ERR(ra, WEFT_EINVAL);
  if (ra != WEFT_EINVAL) {
    EXPECT_EQ(weft_loop_close(loop), 0);
    return;
  }
  pair_sig_total = 0;
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  run_until_n(loop, &pair_sig_total, 2);
  EXPECT_EQ(na, 1);
  EXPECT_EQ(nb, 1);
  /* stop twice */
  EXPECT_EQ(weft_signal_stop(&a), 0);
  EXPECT_EQ(weft_signal_stop(&a), 0);
  /* a later start (here a future's) finds an intact list */
  weft_future_t *f;
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR2, &f), 0);
  /* start after stop, on another signal */
  REQUIRE_EQ(weft_signal_start(loop, &a, SIGUSR2, pair_sig, &na), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR2), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), SIGUSR2);
  run_until_n(loop, &na, 2);
  EXPECT_EQ(nb, 1); /* SIGUSR1's handler saw nothing more */
  weft_future_release(f);
  EXPECT_EQ(weft_signal_stop(&b), 0);
  EXPECT_EQ(weft_signal_stop(&a), 0);
  EXPECT_EQ(weft_signal_stop(&b), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* weft_signal_next futures: cancel twice (here and from another thread),
 * cancel after the signal came; each leaves the handler list intact. */
typedef struct twice_rc {
  weft_future_t *f;
  int first, second; /* the two cancels' results */
} twice_rc_t;

static void *cancel_twice(void *arg) {
  twice_rc_t *t = arg;
  t->first = weft_future_cancel(t->f);
  t->second = weft_future_cancel(t->f);
  return NULL;
}

static void test_signal_future_pairs(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f1, *f2, *f3, *f4;
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR1, &f1), 0);
  EXPECT_EQ(weft_future_cancel(f1), 0);
  EXPECT_ERR(weft_future_cancel(f1), WEFT_EALREADY);
  EXPECT_EQ(weft_future_state(f1), WEFT_CANCELLED);
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR1, &f2), 0);
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR1, &f3), 0);
  pthread_t th;
  twice_rc_t tw = {.f = f3};
  REQUIRE_EQ(pthread_create(&th, NULL, cancel_twice, &tw), 0);
  pthread_join(th, NULL);
  EXPECT_EQ(tw.first, 0);
  EXPECT_ERR(tw.second, WEFT_EALREADY);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0); /* f3's disarm */
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f2, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f2), SIGUSR1);
  EXPECT_ERR(weft_future_cancel(f2), WEFT_EALREADY); /* after it fired */
  EXPECT_EQ(weft_future_state(f3), WEFT_CANCELLED);
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR1, &f4), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f4, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f4), SIGUSR1);
  weft_future_release(f1);
  weft_future_release(f2);
  weft_future_release(f3);
  weft_future_release(f4);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"signals as a future and as callbacks", test_signals},
    {"signal handlers: start twice refused, stop twice, restart",
     test_signal_start_stop_pairs},
    {"signal futures: cancel twice, after firing, from another thread",
     test_signal_future_pairs},
    {NULL, NULL}};

const test_suite_t suite_reactor_signal = {"reactor_signal", cases};
