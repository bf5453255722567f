/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_timer.c: timers (order of equal deadlines, stop and
 * start inside callbacks, 100,000 random deadlines, ties, repeats, start
 * and stop pairs, 0 ms restarts, phase, INT64_MAX ms), sleep and timeout. */
#include "loop_util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- timers ---- */
typedef struct rec {
  int order[16];
  int n;
  weft_timer_t *victim; /* stopped by the first to fire */
  weft_timer_t *restart;
  int restarts;
} rec_t;

typedef struct tmr {
  weft_timer_t t;
  rec_t *rec;
  int id;
} tmr_t;

static void rec_fire(weft_timer_t *t, int status, void *arg) {
  tmr_t *m = arg;
  (void)t;
  if (status != 0)
    return;
  m->rec->order[m->rec->n++] = m->id;
  if (m->rec->victim != NULL) {
    weft_timer_stop(m->rec->victim);
    m->rec->victim = NULL;
  }
  if (m->rec->restart == t && m->rec->restarts > 0) {
    m->rec->restarts--;
    EXPECT_EQ(weft_timer_start(t, 0, 0), 0); /* restart from inside */
  }
}

static void run_until_idle(weft_loop_t *loop) {
  /* run until no timer is active, bounded */
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  weft_loop_stats_t st;
  do {
    weft_loop_run(loop, WEFT_RUN_ONCE);
    weft_loop_stats(loop, &st);
  } while (st.timers_active > 0 && weft_clock_now_ns() < end);
  EXPECT_EQ(st.timers_active, 0);
}

static void test_timer_order_stop_start(void) {
  weft_loop_t *loop = new_loop();
  rec_t rec = {0};
  tmr_t m[6];
  for (int i = 0; i < 6; i++) {
    m[i].rec = &rec;
    m[i].id = i;
    REQUIRE_EQ(weft_timer_init(loop, &m[i].t, rec_fire, &m[i]), 0);
  }
  /* equal deadlines fire in start order: start 3, 1, 4, 0 all at 5 ms */
  EXPECT_EQ(weft_timer_start(&m[3].t, 5, 0), 0);
  EXPECT_EQ(weft_timer_start(&m[1].t, 5, 0), 0);
  EXPECT_EQ(weft_timer_start(&m[4].t, 5, 0), 0);
  EXPECT_EQ(weft_timer_start(&m[0].t, 5, 0), 0);
  /* 5 is due at the same time but is stopped by the first to fire */
  EXPECT_EQ(weft_timer_start(&m[5].t, 5, 0), 0);
  rec.victim = &m[5].t;
  /* 2 fires later and restarts itself twice from its own callback */
  EXPECT_EQ(weft_timer_start(&m[2].t, 8, 0), 0);
  rec.restart = &m[2].t;
  rec.restarts = 2;
  run_until_idle(loop);
  REQUIRE_EQ(rec.n, 7);
  int want[7] = {3, 1, 4, 0, 2, 2, 2};
  for (int i = 0; i < 7; i++)
    EXPECT_EQ(rec.order[i], want[i]);
  EXPECT_EQ(weft_timer_is_active(&m[5].t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

#define MANY 100000
static struct {
  int64_t last_due;
  long fired, out_of_order;
  unsigned char *seen;
  weft_timer_t *t;
  int64_t *due;
} many;

static void many_fire(weft_timer_t *t, int status, void *arg) {
  (void)t;
  long i = (long)(intptr_t)arg;
  if (status != 0)
    return;
  if (many.due[i] < many.last_due)
    many.out_of_order++;
  many.last_due = many.due[i];
  many.seen[i]++;
  many.fired++;
}

static void test_timer_many_random(void) {
  weft_loop_t *loop = new_loop();
  memset(&many, 0, sizeof many);
  many.t = calloc(MANY, sizeof *many.t);
  many.due = calloc(MANY, sizeof *many.due);
  many.seen = calloc(MANY, 1);
  REQUIRE_EQ(many.t != NULL, 1);
  REQUIRE_EQ(many.due != NULL, 1);
  REQUIRE_EQ(many.seen != NULL, 1);
  unsigned x = 12345;
  for (long i = 0; i < MANY; i++) {
    x = x * 1103515245u + 12345u;
    int64_t ms = (x >> 8) % 51;
    REQUIRE_EQ(
        weft_timer_init(loop, &many.t[i], many_fire, (void *)(intptr_t)i), 0);
    REQUIRE_EQ(weft_timer_start(&many.t[i], ms, 0), 0);
    many.due[i] = many.t[i].priv_due; /* cached now + ms, as the loop sees it */
  }
  /* stop every 10th: those must never fire */
  for (long i = 0; i < MANY; i += 10)
    EXPECT_EQ(weft_timer_stop(&many.t[i]), 0);
  run_until_idle(loop);
  long stopped_fired = 0, not_once = 0;
  for (long i = 0; i < MANY; i++) {
    if (i % 10 == 0)
      stopped_fired += many.seen[i] != 0;
    else
      not_once += many.seen[i] != 1;
  }
  EXPECT_EQ(many.fired, MANY - MANY / 10);
  EXPECT_EQ(not_once, 0);
  EXPECT_EQ(stopped_fired, 0);
  EXPECT_EQ(many.out_of_order, 0);
  free(many.t);
  free(many.due);
  free(many.seen);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Ties: timers started in one callback with a few dozen timeouts share
 * their deadlines exactly (the loop's time is cached). Random stops,
 * restarts and stops from inside callbacks must keep (deadline, start
 * order) and exactly-once. */
#define TIES 20000
static struct {
  weft_loop_t *loop;
  weft_timer_t *t;
  long *start_no; /* the test's own count at the timer's latest start */
  unsigned char *seen, *stopped;
  long starts, fired, out_of_order, stopped_fired, not_once;
  int64_t last_due;
  long last_no;
  unsigned x;
} ties;

static unsigned ties_rand(void) {
  ties.x = ties.x * 1103515245u + 12345u;
  return ties.x >> 8;
}

static void ties_start(long i) {
  REQUIRE_EQ(weft_timer_start(&ties.t[i], (int64_t)(ties_rand() % 40), 0), 0);
  ties.start_no[i] = ties.starts++;
  ties.stopped[i] = 0;
}

static void ties_fire(weft_timer_t *t, int status, void *arg) {
  long i = (long)(intptr_t)arg;
  if (status != 0)
    return;
  if (ties.stopped[i])
    ties.stopped_fired++;
  if (t->priv_due < ties.last_due ||
      (t->priv_due == ties.last_due && ties.start_no[i] < ties.last_no))
    ties.out_of_order++;
  ties.last_due = t->priv_due;
  ties.last_no = ties.start_no[i];
  ties.seen[i]++;
  ties.fired++;
  if (i % 97 == 0) { /* stop some timer that has not fired yet */
    long j = (long)(ties_rand() % TIES);
    if (!ties.seen[j] && weft_timer_is_active(&ties.t[j]) == 1) {
      EXPECT_EQ(weft_timer_stop(&ties.t[j]), 0);
      ties.stopped[j] = 1;
    }
  }
}

static void ties_setup(weft_loop_t *loop, void *arg, int status) {
  (void)arg;
  (void)status;
  for (long i = 0; i < TIES; i++) {
    REQUIRE_EQ(
        weft_timer_init(loop, &ties.t[i], ties_fire, (void *)(intptr_t)i), 0);
    ties_start(i);
  }
  for (long k = 0; k < TIES / 4; k++) { /* stop a quarter, at random */
    long i = (long)(ties_rand() % TIES);
    EXPECT_EQ(weft_timer_stop(&ties.t[i]), 0);
    ties.stopped[i] = 1;
  }
  for (long k = 0; k < TIES / 10; k++) /* restart some: new start order */
    ties_start((long)(ties_rand() % TIES));
}

static void test_timer_ties(void) {
  memset(&ties, 0, sizeof ties);
  ties.loop = new_loop();
  ties.x = 777;
  ties.t = calloc(TIES, sizeof *ties.t);
  ties.start_no = calloc(TIES, sizeof *ties.start_no);
  ties.seen = calloc(TIES, 1);
  ties.stopped = calloc(TIES, 1);
  REQUIRE_EQ(ties.t != NULL, 1);
  REQUIRE_EQ(ties.start_no != NULL, 1);
  REQUIRE_EQ(ties.seen != NULL, 1);
  REQUIRE_EQ(ties.stopped != NULL, 1);
  ties.last_due = INT64_MIN;
  REQUIRE_EQ(weft_loop_post(ties.loop, ties_setup, NULL), 0);
  run_until_idle(ties.loop);
  long expect = 0;
  for (long i = 0; i < TIES; i++) {
    if (ties.stopped[i])
      continue;
    expect++;
    ties.not_once += ties.seen[i] != 1;
  }
  EXPECT_EQ(ties.out_of_order, 0);
  EXPECT_EQ(ties.stopped_fired, 0);
  EXPECT_EQ(ties.not_once, 0);
  EXPECT_EQ(ties.fired, expect);
  EXPECT_EQ(expect > TIES / 2, 1);
  free(ties.t);
  free(ties.start_no);
  free(ties.seen);
  free(ties.stopped);
  EXPECT_EQ(weft_loop_close(ties.loop), 0);
}

static void count_fire(weft_timer_t *t, int status, void *arg) {
  int *n = arg;
  if (status == 0 && ++*n == 5)
    weft_timer_stop(t);
}

static void *try_timer_start(void *arg) {
  return (void *)(intptr_t)weft_timer_start(arg, 1, 0);
}

static void test_timer_repeat_and_errors(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  int n = 0;
  REQUIRE_EQ(weft_timer_init(loop, &t, count_fire, &n), 0);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_EQ(weft_timer_start(&t, 2, 2), 0); /* heartbeat every 2 ms */
  run_until_idle(loop);
  EXPECT_EQ(n, 5);
  EXPECT_EQ(weft_clock_now_ns() - t0 >= 10 * 1000000, 1);
  weft_timer_t raw;
  memset(&raw, 0, sizeof raw);
  EXPECT_ERR(weft_timer_start(&raw, 1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&t, -1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&t, 1, -1), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(NULL, 1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(NULL, &t, count_fire, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(loop, &t, NULL, NULL), WEFT_EINVAL);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, try_timer_start, &t), 0);
  pthread_join(th, &res);
  EXPECT_ERR((int)(intptr_t)res, WEFT_EPERM);
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- sleep and timeout ---- */
static void *cancel_from_thread(void *arg) {
  return (void *)(intptr_t)weft_future_cancel(arg);
}

static void test_sleep(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *s;
  int64_t t0 = weft_clock_now_ns();
  REQUIRE_EQ(weft_loop_sleep(loop, 20, &s), 0);
  EXPECT_EQ(weft_loop_run_until(loop, s, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(s), WEFT_FULFILLED);
  EXPECT_EQ(weft_clock_now_ns() - t0 >= 20 * 1000000, 1);
  weft_future_release(s);
  /* cancelled on the loop thread: the timer goes at once */
  REQUIRE_EQ(weft_loop_sleep(loop, 10000, &s), 0);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 1);
  EXPECT_EQ(weft_future_cancel(s), 0);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 0);
  EXPECT_EQ(weft_future_state(s), WEFT_CANCELLED);
  weft_future_release(s);
  /* cancelled from another thread: the loop disarms it */
  REQUIRE_EQ(weft_loop_sleep(loop, 10000, &s), 0);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, cancel_from_thread, s), 0);
  pthread_join(th, &res);
  EXPECT_EQ((int)(intptr_t)res, 0);
  EXPECT_EQ(weft_future_state(s), WEFT_CANCELLED);
  weft_loop_run(loop, WEFT_RUN_NOWAIT);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 0);
  weft_future_release(s);
  EXPECT_ERR(weft_loop_sleep(loop, -1, &s), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_sleep(NULL, 1, &s), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_sleep(loop, 1, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static int hook_ran;
static void on_cancel(void *arg) {
  (void)arg;
  hook_ran++;
}

static void test_timeout(void) {
  weft_loop_t *loop = new_loop();
  weft_loop_stats_t st;
  /* time runs out: ETIMEDOUT, and the input's producer sees the cancel */
  weft_promise_t *p;
  weft_future_t *in, *out;
  REQUIRE_EQ(weft_promise_create(&p, &in), 0);
  hook_ran = 0;
  REQUIRE_EQ(weft_promise_on_cancel(p, on_cancel, NULL), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, in, 10, &out), 0);
  weft_future_release(in);
  EXPECT_EQ(weft_loop_run_until(loop, out, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(out), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(out), WEFT_ETIMEDOUT);
  EXPECT_EQ(hook_ran, 1);
  EXPECT_EQ(weft_promise_is_cancelled(p), 1);
  weft_future_release(out);
  weft_promise_release(p);
  /* the input wins: its value, and the timer is stopped at once */
  REQUIRE_EQ(weft_promise_create(&p, &in), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, in, 10000, &out), 0);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 1);
  EXPECT_EQ(weft_promise_fulfil_int(p, 77), 0);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_EQ(weft_loop_run_until(loop, out, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(out), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(out), 77);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 0);
  EXPECT_EQ(weft_clock_now_ns() - t0 < (int64_t)5000 * 1000000, 1);
  weft_future_release(out);
  weft_future_release(in);
  weft_promise_release(p);
  EXPECT_ERR(weft_loop_timeout(loop, NULL, 1, &out), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void pair_timer(weft_timer_t *t, int status, void *arg) {
  (void)t;
  if (status == 0)
    (*(int *)arg)++;
}

/* Timers: start twice restarts (one call, at the later deadline), stop
 * twice, stop never started, start after stop. */
static void test_timer_start_stop_pairs(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  int n = 0;
  REQUIRE_EQ(weft_timer_init(loop, &t, pair_timer, &n), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0); /* never started */
  EXPECT_EQ(weft_timer_start(&t, 1, 0), 0);
  EXPECT_EQ(weft_timer_start(&t, 2, 0), 0); /* a restart */
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 1);
  run_until_n(loop, &n, 1);
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0); /* stop twice */
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(n, 1);                          /* the stopped start never fired */
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0); /* start after stop */
  run_until_n(loop, &n, 2);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* A timer that restarts itself at 0 ms from its own callback runs once
 * per iteration: a timer started by a timer callback waits for the next
 * iteration (it ran twice per RUN_ONCE: in the iteration's first timer
 * pass and again in the pass after the poll). */
enum { ZERO_ROUNDS = 2000 };
static void zero_again(weft_timer_t *t, int status, void *arg) {
  if (status != 0)
    return;
  (*(int *)arg)++;
  EXPECT_EQ(weft_timer_start(t, 0, 0), 0);
}

static void test_timer_zero_restart_next_iteration(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  int n = 0;
  REQUIRE_EQ(weft_timer_init(loop, &t, zero_again, &n), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 0), 0);
  long wrong = 0;
  for (int i = 1; i <= ZERO_ROUNDS; i++) {
    /* never blocks: the timer is always due */
    REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_ONCE), 0);
    if (n != i) {
      wrong++;
      n = i;
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* A repeating timer keeps its phase: every deadline is the first one plus
 * a whole number of periods. A callback that holds the loop for 3.5
 * periods makes one late call, then the missed beats are skipped (no
 * burst), and the beats after it are on the original phase again. */
enum { PHASE_PERIOD_MS = 10, PHASE_BEATS = 12, PHASE_BLOCK_AT = 3 };
#define PHASE_P ((int64_t)PHASE_PERIOD_MS * 1000000)
static struct {
  weft_loop_t *loop;
  int64_t first_due;             /* the deadline of the first beat */
  int64_t next[PHASE_BEATS + 1]; /* the deadline set for the next beat */
  int64_t at[PHASE_BEATS + 1];   /* the loop's time at each call */
  int calls;
  until_t done;
} ph;

static void phase_beat(weft_timer_t *t, int status, void *arg) {
  (void)arg;
  if (status != 0 || ph.calls >= PHASE_BEATS)
    return;
  int i = ph.calls++;
  ph.at[i] = weft_loop_now_ns(ph.loop);
  ph.next[i] = t->priv_due;  /* rescheduled before the callback runs */
  if (i == PHASE_BLOCK_AT) { /* the cause of lateness, not a sync */
    int64_t end = weft_clock_now_ns() + 7 * PHASE_P / 2;
    while (weft_clock_now_ns() < end)
      ;
  }
  if (ph.calls == PHASE_BEATS) {
    weft_timer_stop(t);
    weft_promise_fulfil_int(ph.done.p, 0);
  }
}

static void test_timer_repeat_keeps_phase(void) {
  memset(&ph, 0, sizeof ph);
  weft_loop_t *loop = ph.loop = new_loop();
  ph.done = until_new();
  weft_timer_t t;
  REQUIRE_EQ(weft_timer_init(loop, &t, phase_beat, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&t, PHASE_PERIOD_MS, PHASE_PERIOD_MS), 0);
  ph.first_due = t.priv_due;
  EXPECT_EQ(weft_loop_run_until(loop, ph.done.f, BOUND_MS), 0);
  REQUIRE_EQ(ph.calls, PHASE_BEATS);
  long off_phase = 0, not_after = 0, bursts = 0;
  int64_t due = ph.first_due; /* what call i was for */
  for (int i = 0; i < PHASE_BEATS; i++) {
    if ((ph.next[i] - ph.first_due) % PHASE_P != 0)
      off_phase++;
    if (ph.at[i] < due)
      not_after++; /* never before its deadline */
    /* the next beat lies after this call: none was already due, so no
     * catch-up call follows (a burst) */
    if (ph.next[i] <= ph.at[i])
      bursts++;
    due = ph.next[i];
  }
  EXPECT_EQ(off_phase, 0);
  EXPECT_EQ(not_after, 0);
  EXPECT_EQ(bursts, 0);
  /* calls vs periods: never more calls than beats that came due */
  int64_t periods = (ph.at[PHASE_BEATS - 1] - ph.first_due) / PHASE_P + 1;
  EXPECT_EQ(PHASE_BEATS <= periods, 1);
  /* and the block did skip beats: fewer calls than periods elapsed */
  EXPECT_EQ(PHASE_BEATS < periods, 1);
  until_done(&ph.done);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* INT64_MAX ms means "that long": the timer is armed and not due (the
 * ms -> ns conversion saturates instead of overflowing or firing at
 * once). Under UBSan this also checks for signed overflow. */
static void test_timer_huge_timeouts(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  int n = 0;
  REQUIRE_EQ(weft_timer_init(loop, &t, pair_timer, &n), 0);
  int64_t huge[] = {INT64_MAX, INT64_MAX / 1000000, INT64_MAX / 1000000 + 1,
                    INT64_MAX / 2};
  for (size_t k = 0; k < sizeof huge / sizeof *huge; k++) {
    EXPECT_EQ(weft_timer_start(&t, huge[k], huge[k]), 0);
    EXPECT_EQ(weft_timer_is_active(&t), 1);
    int64_t ms = weft_loop_backend_timeout(loop);
    EXPECT_EQ(ms == -1 || ms >= (int64_t)INT_MAX, 1); /* 24 days or more */
    REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
    EXPECT_EQ(n, 0);
    EXPECT_EQ(weft_timer_is_active(&t), 1);
  }
  EXPECT_EQ(weft_timer_stop(&t), 0);
  weft_future_t *s, *in, *to;
  weft_promise_t *p;
  REQUIRE_EQ(weft_loop_sleep(loop, INT64_MAX, &s), 0);
  REQUIRE_EQ(weft_promise_create(&p, &in), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, in, INT64_MAX, &to), 0);
  int64_t ms = weft_loop_backend_timeout(loop);
  EXPECT_EQ(ms == -1 || ms >= (int64_t)INT_MAX, 1);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(weft_future_state(s), WEFT_PENDING);
  EXPECT_EQ(weft_future_state(to), WEFT_PENDING);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 2);
  EXPECT_EQ(weft_future_cancel(s), 0);
  EXPECT_EQ(weft_promise_fulfil_int(p, 3), 0);
  EXPECT_EQ(weft_loop_run_until(loop, to, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(to), 3);
  weft_future_release(s);
  weft_future_release(to);
  weft_future_release(in);
  weft_promise_release(p);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"timers: equal deadlines in start order, stop/start inside callbacks",
     test_timer_order_stop_start},
    {"100k timers with random deadlines fire in deadline order",
     test_timer_many_random},
    {"20k tied timers: start order through stops and restarts",
     test_timer_ties},
    {"repeating timer, timer errors", test_timer_repeat_and_errors},
    {"sleep, cancelled sleep", test_sleep},
    {"timeout wins and loses", test_timeout},
    {"timers: start twice restarts, stop twice, restart",
     test_timer_start_stop_pairs},
    {"a timer restarting itself at 0 ms runs once per RUN_ONCE",
     test_timer_zero_restart_next_iteration},
    {"a repeating timer keeps its phase and skips missed beats",
     test_timer_repeat_keeps_phase},
    {"INT64_MAX ms timers, sleeps and timeouts are armed, not due",
     test_timer_huge_timeouts},
    {NULL, NULL}};

const test_suite_t suite_reactor_timer = {"reactor_timer", cases};
