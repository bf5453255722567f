/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_close.c: the loop's close: everything pending finishes
 * with WEFT_ECANCELED, timers stopping each other, the continuations of
 * what it cancels run, and other threads' posts refused meanwhile. */
#include "loop_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- close finishes everything with WEFT_ECANCELED ---- */
static struct {
  int timer, io, sig, post, post_after;
  weft_loop_t *loop;
} closed;

static void close_timer(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)arg;
  if (status == WEFT_ECANCELED)
    closed.timer++;
}
static void close_io(weft_io_t *io, unsigned ev, int status, void *arg) {
  (void)io;
  (void)ev;
  (void)arg;
  if (status == WEFT_ECANCELED) {
    closed.io++;
    closed.post_after = weft_loop_post(closed.loop, quick, NULL);
  }
}
static void close_sig(weft_signal_t *s, int signum, int status, void *arg) {
  (void)s;
  (void)signum;
  (void)arg;
  if (status == WEFT_ECANCELED)
    closed.sig++;
}
static void close_post(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  if (status == WEFT_ECANCELED)
    closed.post++;
}
static void *post_from_thread(void *arg) {
  return (void *)(intptr_t)weft_loop_post(arg, close_post, NULL);
}

static void test_close_cancels_everything(void) {
  memset(&closed, 0, sizeof closed);
  weft_loop_t *loop = closed.loop = new_loop();
  weft_timer_t t[3];
  for (int i = 0; i < 3; i++) {
    REQUIRE_EQ(weft_timer_init(loop, &t[i], close_timer, NULL), 0);
    REQUIRE_EQ(weft_timer_start(&t[i], 100000, i), 0);
  }
  int fds[2];
  REQUIRE_EQ(pipe(fds), 0);
  weft_io_t io;
  REQUIRE_EQ(weft_io_start(loop, &io, fds[0], WEFT_READABLE, close_io, NULL),
             0);
  weft_signal_t s;
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, close_sig, NULL), 0);
  weft_future_t *sl, *sg, *cont;
  REQUIRE_EQ(weft_loop_sleep(loop, 100000, &sl), 0);
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR2, &sg), 0);
  /* a continuation queued to the loop from another thread, and a post */
  weft_promise_t *p;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  REQUIRE_EQ(weft_future_then(pf, weft_loop_executor(loop), twice, NULL, NULL,
                              &cont),
             0);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, post_from_thread, loop), 0);
  pthread_join(th, &res);
  EXPECT_EQ((int)(intptr_t)res, 0);
  weft_promise_fulfil_int(p, 5); /* the continuation is now queued */
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(closed.timer, 3);
  EXPECT_EQ(closed.io, 1);
  EXPECT_EQ(closed.sig, 1);
  EXPECT_EQ(closed.post, 1);
  EXPECT_ERR(closed.post_after, WEFT_ESHUTDOWN);
  EXPECT_EQ(weft_future_state(sl), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(sg), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(cont), WEFT_FULFILLED); /* ran, not lost */
  EXPECT_EQ(weft_future_int(cont), 10);
  weft_future_release(sl);
  weft_future_release(sg);
  weft_future_release(cont);
  weft_future_release(pf);
  weft_promise_release(p);
  close(fds[0]);
  close(fds[1]);
}

/* Close with many timers, where each cancelled callback stops its partner:
 * stop still works during close, so each pair sees exactly one call. */
enum { PAIRS = 1000 };
static weft_timer_t pair_timers[2 * PAIRS];
static int pair_calls[2 * PAIRS];
static void close_pair(weft_timer_t *t, int status, void *arg) {
  (void)arg;
  long i = t - pair_timers;
  if (status == WEFT_ECANCELED)
    pair_calls[i]++;
  EXPECT_EQ(weft_timer_stop(&pair_timers[i ^ 1]), 0);
  EXPECT_EQ(weft_timer_is_active(&pair_timers[i ^ 1]), 0);
}

static void test_close_timers_stop_each_other(void) {
  weft_loop_t *loop = new_loop();
  memset(pair_calls, 0, sizeof pair_calls);
  for (long i = 0; i < 2 * PAIRS; i++) {
    REQUIRE_EQ(weft_timer_init(loop, &pair_timers[i], close_pair, NULL), 0);
    REQUIRE_EQ(weft_timer_start(&pair_timers[i], 100000 + (i * 7919) % 5000, 0),
               0);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
  int total = 0;
  for (long i = 0; i < PAIRS; i++) {
    EXPECT_EQ(pair_calls[2 * i] + pair_calls[2 * i + 1], 1);
    total += pair_calls[2 * i] + pair_calls[2 * i + 1];
  }
  EXPECT_EQ(total, PAIRS);
}

/* ---- close runs the continuations of what it cancels ---- */
static struct {
  weft_loop_t *loop;
  int sleep_then, sleep_watch, sig_then, timeout_then, chained, dtor;
  int not_ecanceled;                     /* sleeps' and the signal's */
  int timeout_pending, timeout_no_error; /* the timeout's */
  int sleep_rc, post_rc;
} cc;

static weft_result_t cc_cancelled(void *arg, weft_future_t *src) {
  (*(int *)arg)++;
  cc.not_ecanceled += weft_future_error(src) != WEFT_ECANCELED;
  return weft_ok_int(1);
}
static weft_result_t cc_settled(void *arg, weft_future_t *src) {
  (*(int *)arg)++; /* a timeout of a cancelled sleep: settled, any error */
  cc.timeout_pending += weft_future_state(src) == WEFT_PENDING;
  cc.timeout_no_error += weft_future_error(src) == 0;
  return weft_ok_int(1);
}
static weft_result_t cc_chain(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  cc.chained++;
  return weft_ok_int(0);
}
static void cc_watch(void *arg, weft_future_t *src) {
  free(arg); /* the operation's own state, freed by its continuation */
  cc.sleep_watch++;
  cc.not_ecanceled += weft_future_error(src) != WEFT_ECANCELED;
  weft_future_t *f = NULL;
  cc.sleep_rc = weft_loop_sleep(cc.loop, 1, &f);     /* refused during close */
  cc.post_rc = weft_loop_post(cc.loop, quick, NULL); /* refused too */
  weft_future_t *d;
  /* a continuation queued on the loop during close runs before it returns */
  if (weft_future_then(src, weft_loop_executor(cc.loop), cc_chain, NULL, NULL,
                       &d) == 0)
    weft_future_release(d);
}
static void cc_dtor(void *arg) {
  free(arg);
  cc.dtor++;
}

static void test_close_runs_continuations(void) {
  memset(&cc, 0, sizeof cc);
  tu_alloc_install(0);
  weft_loop_t *loop = cc.loop = new_loop();
  weft_executor_t *lx = weft_loop_executor(loop);
  weft_future_t *s1, *s2, *sg, *pf, *t, *d1, *d3, *d4;
  weft_promise_t *p;
  REQUIRE_EQ(weft_loop_sleep(loop, 100000, &s1), 0);
  REQUIRE_EQ(weft_future_then(s1, lx, cc_cancelled, &cc.sleep_then, NULL, &d1),
             0);
  REQUIRE_EQ(weft_loop_sleep(loop, 100000, &s2), 0);
  REQUIRE_EQ(weft_future_watch(s2, lx, cc_watch, malloc(32), cc_dtor), 0);
  REQUIRE_EQ(weft_signal_next(loop, SIGUSR2, &sg), 0);
  REQUIRE_EQ(weft_future_then(sg, lx, cc_cancelled, &cc.sig_then, NULL, &d3),
             0);
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, pf, 100000, &t), 0);
  REQUIRE_EQ(weft_future_then(t, lx, cc_settled, &cc.timeout_then, NULL, &d4),
             0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  /* each continuation ran once, on the loop, before close returned */
  EXPECT_EQ(cc.sleep_then, 1);
  EXPECT_EQ(cc.sleep_watch, 1);
  EXPECT_EQ(cc.sig_then, 1);
  EXPECT_EQ(cc.timeout_then, 1);
  EXPECT_EQ(cc.chained, 1);
  EXPECT_EQ(cc.dtor, 0); /* the watch ran: its arg was its own */
  EXPECT_EQ(cc.not_ecanceled, 0);
  EXPECT_EQ(cc.timeout_pending, 0);
  EXPECT_EQ(cc.timeout_no_error, 0);
  EXPECT_ERR(cc.sleep_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(cc.post_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(weft_future_state(d1), WEFT_FULFILLED); /* not rejected */
  EXPECT_EQ(weft_future_state(d3), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_state(d4), WEFT_FULFILLED);
  weft_future_t *all[] = {s1, d1, sg, d3, pf, t, d4};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    weft_future_release(all[i]);
  weft_promise_release(p);
  EXPECT_EQ(tu_alloc_live(), 0); /* nothing leaked */
  tu_alloc_restore();
}

/* ---- posts from other threads while a close-time callback runs ---- */
enum { CP_THREADS = 4, CP_BEFORE = 1000, CP_LATE = 2000 };
static struct {
  weft_loop_t *loop;
  _Atomic int in_cb; /* the close-time callback has begun */
  _Atomic long accepted, late_accepted, refused, other, ran;
  _Atomic long late_ran; /* ran when the callback began */
  _Atomic long finished, then_ran;
  int then_state, then_err;
} cp;

static void cp_post(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
  atomic_fetch_add(&cp.ran, 1);
}
static weft_result_t cp_then(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  atomic_fetch_add(&cp.then_ran, 1);
  return weft_ok_int(0);
}

static void *cp_poster(void *arg) {
  long before = 0, late = 0;
  for (;;) {
    int is_late = atomic_load(&cp.in_cb);
    if (!is_late && before >= CP_BEFORE) {
      sched_yield(); /* enough queued before close: wait for it */
      continue;
    }
    int rc = weft_loop_post(cp.loop, cp_post, NULL);
    if (rc == 0) {
      atomic_fetch_add(&cp.accepted, 1);
      if (is_late)
        atomic_fetch_add(&cp.late_accepted, 1);
    } else if (rc == WEFT_ESHUTDOWN) {
      atomic_fetch_add(&cp.refused, 1);
    } else {
      atomic_fetch_add(&cp.other, 1);
    }
    if (is_late ? ++late >= CP_LATE : (++before, 0))
      break;
  }
  if (arg != NULL) { /* one thread: a then on the loop's executor */
    weft_promise_t *p;
    weft_future_t *f, *d;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    REQUIRE_EQ(weft_future_then(f, weft_loop_executor(cp.loop), cp_then, NULL,
                                NULL, &d),
               0);
    weft_promise_fulfil_int(p, 1); /* the loop refuses its task */
    cp.then_state = weft_future_state(d);
    cp.then_err = weft_future_error(d);
    weft_future_release(d);
    weft_future_release(f);
    weft_promise_release(p);
  }
  atomic_fetch_add(&cp.finished, 1);
  return NULL;
}

/* Close-time callback: holds close open until every poster is done. */
static void cp_hold(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)arg;
  if (status != WEFT_ECANCELED)
    return;
  atomic_store(&cp.late_ran, atomic_load(&cp.ran));
  atomic_store(&cp.in_cb, 1);
  tu_spin_until(&cp.finished, CP_THREADS); /* each stops after CP_LATE */
}

static void test_close_refuses_other_threads(void) {
  memset(&cp, 0, sizeof cp);
  weft_loop_t *loop = cp.loop = new_loop();
  weft_timer_t hold;
  REQUIRE_EQ(weft_timer_init(loop, &hold, cp_hold, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&hold, 100000, 0), 0);
  pthread_t th[CP_THREADS];
  for (int i = 0; i < CP_THREADS; i++)
    REQUIRE_EQ(pthread_create(&th[i], NULL, cp_poster, i == 0 ? &cp : NULL), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  for (int i = 0; i < CP_THREADS; i++)
    pthread_join(th[i], NULL);
  /* after close began (the callback ran), nothing was accepted */
  long late_accepted = atomic_load(&cp.late_accepted);
  long refused = atomic_load(&cp.refused), other = atomic_load(&cp.other);
  long accepted = atomic_load(&cp.accepted), ran = atomic_load(&cp.ran);
  long ran_before_cb = atomic_load(&cp.late_ran);
  long then_ran = atomic_load(&cp.then_ran);
  EXPECT_EQ(late_accepted, 0);
  EXPECT_TRUE(refused >= (long)CP_THREADS * CP_LATE);
  EXPECT_EQ(other, 0);
  /* what was accepted ran once, all of it before the callback */
  EXPECT_EQ(ran, accepted);
  EXPECT_EQ(ran_before_cb, accepted);
  EXPECT_EQ(then_ran, 0);
  EXPECT_EQ(cp.then_state, WEFT_REJECTED);
  EXPECT_ERR(cp.then_err, WEFT_ESHUTDOWN);
}

static const test_case_t cases[] = {
    {"close cancels everything", test_close_cancels_everything},
    {"close: timers stopped by other timers' callbacks",
     test_close_timers_stop_each_other},
    {"close runs the continuations of what it cancels",
     test_close_runs_continuations},
    {"close refuses other threads' posts and continuations",
     test_close_refuses_other_threads},
    {NULL, NULL}};

const test_suite_t suite_reactor_close = {"reactor_close", cases};
