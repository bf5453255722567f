/* SPDX-License-Identifier: MIT */
/* tests/test_reactor.c: the loop: posts from many threads (each once, in
 * order, few wake-ups), loop -> pool -> loop round trips on the loop thread,
 * timers (order, stop/start inside callbacks, 100,000 random deadlines),
 * sleep, timeout, signals, await refusal, the stall detector, fd watchers,
 * run modes, close, the adaptive spin (and its quiet near a pool), and bad
 * input. Every wait is bounded by run_until's
 * timeout or a watchdog timer. */
#include "loop_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- posts from 4 threads: each once, per-producer order, batching ---- */
#define PRODUCERS 4
#define PER_PRODUCER 100000

static struct {
  weft_loop_t *loop;
  long next[PRODUCERS]; /* next sequence number expected, loop thread */
  long ran, out_of_order, bad_status;
  unsigned char *seen;
  until_t all;
} post_t;

static void post_item(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  uintptr_t v = (uintptr_t)arg;
  unsigned who = (unsigned)(v % PRODUCERS);
  long seq = (long)(v / PRODUCERS);
  if (status != 0)
    post_t.bad_status++;
  if (seq != post_t.next[who])
    post_t.out_of_order++;
  post_t.next[who] = seq + 1;
  post_t.seen[v]++;
  if (++post_t.ran == PRODUCERS * PER_PRODUCER)
    weft_promise_fulfil_int(post_t.all.p, 1);
}

static void *producer(void *arg) {
  uintptr_t who = (uintptr_t)arg;
  for (long i = 0; i < PER_PRODUCER; i++) {
    int rc;
    while ((rc = weft_loop_post(post_t.loop, post_item,
                                (void *)(i * PRODUCERS + who))) == WEFT_ENOMEM)
      sched_yield();
    if (rc != 0)
      abort();
  }
  return NULL;
}

static void test_post_many_threads(void) {
  memset(&post_t, 0, sizeof post_t);
  post_t.loop = new_loop();
  post_t.all = until_new();
  post_t.seen = calloc(PRODUCERS * PER_PRODUCER, 1);
  REQUIRE_EQ(post_t.seen != NULL, 1);
  pthread_t th[PRODUCERS];
  for (uintptr_t i = 0; i < PRODUCERS; i++)
    REQUIRE_EQ(pthread_create(&th[i], NULL, producer, (void *)i), 0);
  EXPECT_EQ(weft_loop_run_until(post_t.loop, post_t.all.f, BOUND_MS), 0);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(th[i], NULL);
  EXPECT_EQ(post_t.ran, PRODUCERS * PER_PRODUCER);
  long not_once = 0;
  for (long i = 0; i < PRODUCERS * PER_PRODUCER; i++)
    not_once += post_t.seen[i] != 1;
  EXPECT_EQ(not_once, 0);
  EXPECT_EQ(post_t.out_of_order, 0);
  EXPECT_EQ(post_t.bad_status, 0);
  weft_loop_stats_t st;
  EXPECT_EQ(weft_loop_stats(post_t.loop, &st), 0);
  EXPECT_EQ(st.posted >= (uint64_t)PRODUCERS * PER_PRODUCER, 1);
  /* one eventfd write per batch: far fewer wake-ups than items */
  EXPECT_EQ(st.wakeups * 10 < st.posted, 1);
  until_done(&post_t.all);
  free(post_t.seen);
  EXPECT_EQ(weft_loop_close(post_t.loop), 0);
}

/* ---- loop -> pool -> loop, 100,000 round trips ---- */
#define TRIPS 100000
#define IN_FLIGHT 1000

static struct {
  weft_loop_t *loop;
  weft_pool_t *pool;
  pthread_t loop_thread;
  long started, finished, off_thread, wrong;
  unsigned char *seen;
  until_t all;
} rt;

static weft_result_t rt_job(weft_job_t *job, void *arg) {
  (void)job;
  return weft_ok_int((intptr_t)arg * 3);
}

static void rt_start(void);

static weft_result_t rt_cont(void *arg, weft_future_t *src) {
  intptr_t i = (intptr_t)arg;
  if (!pthread_equal(pthread_self(), rt.loop_thread))
    rt.off_thread++;
  if (weft_future_state(src) != WEFT_FULFILLED || weft_future_int(src) != i * 3)
    rt.wrong++;
  rt.seen[i]++;
  if (++rt.finished == TRIPS)
    weft_promise_fulfil_int(rt.all.p, 1);
  rt_start();
  return weft_ok_int(0);
}

static void rt_start(void) {
  if (rt.started == TRIPS)
    return;
  intptr_t i = rt.started++;
  weft_future_t *f, *c;
  if (weft_pool_submit(rt.pool, rt_job, (void *)i, NULL, &f) != 0 ||
      weft_future_then(f, weft_loop_executor(rt.loop), rt_cont, (void *)i,
                       &c) != 0)
    abort();
  weft_future_release(f);
  weft_future_release(c);
}

static void rt_kick(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  if (status == 0)
    for (int k = 0; k < IN_FLIGHT; k++)
      rt_start();
}

static void test_loop_pool_loop(void) {
  memset(&rt, 0, sizeof rt);
  rt.loop = new_loop();
  rt.loop_thread = pthread_self();
  weft_pool_options_t o = {sizeof o, 2, 0, 0, {0}};
  REQUIRE_EQ(weft_pool_create(&o, &rt.pool), 0);
  rt.seen = calloc(TRIPS, 1);
  rt.all = until_new();
  REQUIRE_EQ(weft_loop_post(rt.loop, rt_kick, NULL), 0);
  EXPECT_EQ(weft_loop_run_until(rt.loop, rt.all.f, BOUND_MS), 0);
  EXPECT_EQ(rt.finished, TRIPS);
  EXPECT_EQ(rt.off_thread, 0);
  EXPECT_EQ(rt.wrong, 0);
  long not_once = 0;
  for (long i = 0; i < TRIPS; i++)
    not_once += rt.seen[i] != 1;
  EXPECT_EQ(not_once, 0);
  EXPECT_EQ(weft_pool_shutdown(rt.pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  until_done(&rt.all);
  free(rt.seen);
  EXPECT_EQ(weft_loop_close(rt.loop), 0);
}

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
  int64_t end = weft_now_ns() + (int64_t)BOUND_MS * 1000000;
  weft_loop_stats_t st;
  do {
    weft_loop_run(loop, WEFT_RUN_ONCE);
    weft_loop_stats(loop, &st);
  } while (st.timers_active > 0 && weft_now_ns() < end);
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
  EXPECT_EQ(weft_timer_active(&m[5].t), 0);
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
  REQUIRE_EQ(many.t != NULL && many.due != NULL && many.seen != NULL, 1);
  unsigned x = 12345;
  for (long i = 0; i < MANY; i++) {
    x = x * 1103515245u + 12345u;
    int64_t ms = (x >> 8) % 51;
    REQUIRE_EQ(weft_timer_init(loop, &many.t[i], many_fire, (void *)(intptr_t)i), 0);
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
    if (!ties.seen[j] && weft_timer_active(&ties.t[j]) == 1) {
      EXPECT_EQ(weft_timer_stop(&ties.t[j]), 0);
      ties.stopped[j] = 1;
    }
  }
}

static void ties_setup(weft_loop_t *loop, void *arg, int status) {
  (void)arg;
  (void)status;
  for (long i = 0; i < TIES; i++) {
    REQUIRE_EQ(weft_timer_init(loop, &ties.t[i], ties_fire, (void *)(intptr_t)i), 0);
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
  REQUIRE_EQ(ties.t && ties.start_no && ties.seen && ties.stopped, 1);
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
  int64_t t0 = weft_now_ns();
  EXPECT_EQ(weft_timer_start(&t, 2, 2), 0); /* heartbeat every 2 ms */
  run_until_idle(loop);
  EXPECT_EQ(n, 5);
  EXPECT_EQ(weft_now_ns() - t0 >= 10 * 1000000, 1);
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
  EXPECT_EQ(weft_timer_active(&t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- sleep and timeout ---- */
static void *cancel_from_thread(void *arg) {
  return (void *)(intptr_t)weft_future_cancel(arg);
}

static void test_sleep(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *s;
  int64_t t0 = weft_now_ns();
  REQUIRE_EQ(weft_loop_sleep(loop, 20, &s), 0);
  EXPECT_EQ(weft_loop_run_until(loop, s, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(s), WEFT_FULFILLED);
  EXPECT_EQ(weft_now_ns() - t0 >= 20 * 1000000, 1);
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
  int64_t t0 = weft_now_ns();
  EXPECT_EQ(weft_loop_run_until(loop, out, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(out), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(out), 77);
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 0);
  EXPECT_EQ(weft_now_ns() - t0 < (int64_t)5000 * 1000000, 1);
  weft_future_release(out);
  weft_future_release(in);
  weft_promise_release(p);
  EXPECT_ERR(weft_loop_timeout(loop, NULL, 1, &out), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

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
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR1, &f), 0);
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
  EXPECT_ERR(weft_signal_start(loop, &s, SIGKILL, on_signal, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, 0, on_signal, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- await refuses on the loop thread; run_until is the way ---- */
static void fulfil_later(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  if (status == 0)
    weft_promise_fulfil_int(arg, 21);
}

static void test_await_refused(void) {
  weft_loop_t *loop = new_loop();
  weft_promise_t *p;
  weft_future_t *f, *d;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_then(f, weft_loop_executor(loop), twice, NULL, &d), 0);
  int64_t t0 = weft_now_ns();
  EXPECT_ERR(weft_future_await(d, WEFT_FOREVER), WEFT_EDEADLK);
  EXPECT_ERR(weft_future_await(f, 5000), WEFT_EDEADLK);
  EXPECT_EQ(weft_now_ns() - t0 < (int64_t)1000 * 1000000, 1); /* at once */
  REQUIRE_EQ(weft_loop_post(loop, fulfil_later, p), 0);
  EXPECT_EQ(weft_loop_run_until(loop, d, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(d), 42);
  EXPECT_EQ(weft_future_await(d, 0), 0); /* settled: fine */
  weft_future_release(d);
  weft_future_release(f);
  weft_promise_release(p);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- stall detector ---- */
static struct {
  int reports;
  const char *kind;
  int64_t duration;
  void (*cb)(void);
} stall;

static void on_stall(weft_loop_t *loop, const weft_stall_t *s, void *arg) {
  (void)loop;
  (void)arg;
  stall.reports++;
  stall.kind = s->kind;
  stall.duration = s->duration_ns;
  stall.cb = s->callback;
}

static void busy_50ms(weft_loop_t *loop, void *arg, int status) {
  (void)loop;
  (void)arg;
  (void)status;
  int64_t end = weft_now_ns() + 50 * 1000000;
  while (weft_now_ns() < end)
    ;
}

static weft_result_t slow_then(void *arg, weft_future_t *src) {
  (void)src;
  busy_50ms(NULL, arg, 0);
  return weft_ok_int(0);
}

static void test_stall_detector(void) {
  weft_loop_t *loop = new_loop();
  memset(&stall, 0, sizeof stall);
  EXPECT_ERR(weft_loop_set_stall_hook(loop, 0, on_stall, NULL), WEFT_EINVAL);
  REQUIRE_EQ(weft_loop_set_stall_hook(loop, 20000, on_stall, NULL), 0);
  int n = 0;
  for (int i = 0; i < 1000; i++)
    REQUIRE_EQ(weft_loop_post(loop, quick, &n), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(n, 1000);
  EXPECT_EQ(stall.reports, 0);
  REQUIRE_EQ(weft_loop_post(loop, busy_50ms, NULL), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(stall.reports, 1);
  EXPECT_EQ(stall.kind != NULL && strcmp(stall.kind, "post") == 0, 1);
  EXPECT_EQ(stall.duration >= 50 * 1000000, 1);
  EXPECT_EQ(stall.cb == (void (*)(void))busy_50ms, 1);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.stalls, 1);
  /* a continuation on the loop executor is reported by its own function */
  weft_promise_t *p;
  weft_future_t *f, *d;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_then(f, weft_loop_executor(loop), slow_then, NULL, &d), 0);
  weft_promise_fulfil_int(p, 1);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(stall.reports, 2);
  EXPECT_EQ(stall.kind != NULL && strcmp(stall.kind, "task") == 0, 1);
  EXPECT_EQ(stall.cb == (void (*)(void))slow_then, 1);
  weft_future_release(d);
  weft_future_release(f);
  weft_promise_release(p);
  EXPECT_EQ(weft_loop_set_stall_hook(loop, 0, NULL, NULL), 0); /* off */
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- fd watchers ---- */
static void on_readable(weft_io_t *io, unsigned events, int status, void *arg) {
  int *got = arg;
  if (status != 0)
    return;
  if (events & WEFT_READABLE) {
    char c;
    if (read(io->priv_fd, &c, 1) == 1)
      *got = c;
    weft_io_stop(io); /* stop inside its own callback */
  }
}

static void *write_pipe(void *arg) {
  int fd = (int)(intptr_t)arg;
  char c = 'x';
  return (void *)(intptr_t)write(fd, &c, 1);
}

static void on_writable(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)io;
  if (status == 0 && (events & WEFT_WRITABLE))
    (*(int *)arg)++;
}

static void test_fd_watchers(void) {
  weft_loop_t *loop = new_loop();
  int fds[2];
  REQUIRE_EQ(pipe(fds), 0);
  weft_io_t rd, wr, dup;
  memset(&rd, 0, sizeof rd);
  int got = 0, writable = 0;
  REQUIRE_EQ(weft_io_start(loop, &rd, fds[0], WEFT_READABLE, on_readable, &got), 0);
  EXPECT_ERR(weft_io_start(loop, &dup, fds[0], WEFT_READABLE, on_readable, &got),
             WEFT_EEXIST);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(got, 0); /* nothing written yet */
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, write_pipe, (void *)(intptr_t)fds[1]), 0);
  int64_t end = weft_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (got == 0 && weft_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  pthread_join(th, NULL);
  EXPECT_EQ(got, 'x');
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 0);
  EXPECT_EQ(weft_io_stop(&rd), 0); /* already stopped: no-op */
  REQUIRE_EQ(weft_io_start(loop, &wr, fds[1], WEFT_READABLE, on_writable, &writable), 0);
  EXPECT_EQ(weft_io_modify(&wr, WEFT_WRITABLE), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_ONCE), 0);
  EXPECT_EQ(writable, 1);
  EXPECT_ERR(weft_io_modify(&wr, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(&wr, 8), WEFT_EINVAL);
  EXPECT_EQ(weft_io_stop(&wr), 0);
  EXPECT_ERR(weft_io_start(loop, &wr, -1, WEFT_READABLE, on_writable, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &wr, fds[1], 0, on_writable, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(NULL, &wr, fds[1], 1, on_writable, NULL), WEFT_EINVAL);
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- run modes ---- */
static void *stop_later(void *arg) {
  weft_loop_t *loop = arg;
  /* wait until the loop has iterated at least once, then stop it */
  weft_loop_stats_t st;
  do {
    sched_yield();
    weft_loop_stats(loop, &st);
  } while (st.iterations == 0);
  return (void *)(intptr_t)weft_loop_stop(loop);
}

static void *run_elsewhere(void *arg) {
  return (void *)(intptr_t)weft_loop_run(arg, WEFT_RUN_NOWAIT);
}

static void nested_run(weft_loop_t *loop, void *arg, int status) {
  (void)status;
  *(int *)arg = weft_loop_run(loop, WEFT_RUN_NOWAIT);
}

static void test_run_modes(void) {
  weft_loop_t *loop = new_loop();
  int64_t t0 = weft_now_ns();
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(weft_now_ns() - t0 < (int64_t)1000 * 1000000, 1);
  /* DEFAULT until another thread stops it */
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, stop_later, loop), 0);
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_DEFAULT), 0);
  pthread_join(th, NULL);
  /* run_until times out on a future nobody settles */
  until_t u = until_new();
  t0 = weft_now_ns();
  EXPECT_ERR(weft_loop_run_until(loop, u.f, 30), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_now_ns() - t0 >= 30 * 1000000, 1);
  /* stop ends run_until with EINTR */
  REQUIRE_EQ(weft_loop_stop(loop), 0);
  EXPECT_ERR(weft_loop_run_until(loop, u.f, BOUND_MS), WEFT_EINTR);
  until_done(&u);
  /* wrong thread, nested run, bad mode */
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, run_elsewhere, loop), 0);
  pthread_join(th, &res);
  EXPECT_ERR((int)(intptr_t)res, WEFT_EPERM);
  int nested = 0;
  REQUIRE_EQ(weft_loop_post(loop, nested_run, &nested), 0);
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_ERR(nested, WEFT_EBUSY);
  EXPECT_ERR(weft_loop_run(loop, (weft_run_mode_t)7), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run(NULL, WEFT_RUN_NOWAIT), WEFT_EINVAL);
  /* one loop per thread */
  weft_loop_t *second;
  EXPECT_ERR(weft_loop_create(NULL, &second), WEFT_EBUSY);
  EXPECT_EQ(weft_loop_current() == loop, 1);
  EXPECT_EQ(weft_loop_fd(loop) >= 0, 1);
  EXPECT_EQ(weft_loop_timeout_ms(loop), -1); /* nothing pending */
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(weft_loop_current() == NULL, 1);
}

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
  REQUIRE_EQ(weft_io_start(loop, &io, fds[0], WEFT_READABLE, close_io, NULL), 0);
  weft_signal_t s;
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, close_sig, NULL), 0);
  weft_future_t *sl, *sg, *cont;
  REQUIRE_EQ(weft_loop_sleep(loop, 100000, &sl), 0);
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR2, &sg), 0);
  /* a continuation queued to the loop from another thread, and a post */
  weft_promise_t *p;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  REQUIRE_EQ(weft_future_then(pf, weft_loop_executor(loop), twice, NULL, &cont), 0);
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
  EXPECT_EQ(weft_timer_active(&pair_timers[i ^ 1]), 0);
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

/* ---- adaptive spin: posts that come back quickly are met by a spin ---- */
#include <pthread.h>
#include <time.h>
enum { SPIN_ROUNDS = 20000 };
static struct {
  weft_loop_t *a, *b;
  int spin_us;
  long rounds, errors;
  until_t b_done, all_done; /* B's last round; B's loop closed */
  weft_loop_stats_t b_stats;
} sp;

static void sp_on_b(weft_loop_t *l, void *arg, int status);
static void sp_on_a(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  if (status != 0 || weft_loop_post(sp.b, sp_on_b, NULL) != 0)
    sp.errors++;
}
static void sp_on_b(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  if (status != 0)
    sp.errors++;
  else if (++sp.rounds == SPIN_ROUNDS)
    weft_promise_fulfil_int(sp.b_done.p, 0);
  else if (weft_loop_post(sp.a, sp_on_a, NULL) != 0)
    sp.errors++;
}
static void *sp_thread_b(void *arg) {
  (void)arg;
  weft_loop_options_t o = {.size = sizeof o, .spin_us = sp.spin_us};
  if (weft_loop_create(&o, &sp.b) != 0) {
    sp.errors++;
  } else {
    if (weft_loop_post(sp.a, sp_on_a, NULL) != 0 ||
        weft_loop_run_until(sp.b, sp.b_done.f, BOUND_MS) != 0)
      sp.errors++;
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
  EXPECT_EQ(sp.errors, 0);
  EXPECT_EQ(sp.rounds, SPIN_ROUNDS);
  weft_loop_stats(sp.a, a_stats);
}

static void test_adaptive_spin(void) {
  weft_loop_stats_t a;
  /* off: every wait for the other side sleeps, none is met by a spin */
  spin_pingpong(-1, &a);
  EXPECT_EQ(a.spins + a.spin_hits, 0);
  EXPECT_EQ(sp.b_stats.spins + sp.b_stats.spin_hits, 0);
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
  int rounds, errors;
  until_t done;
} qt;
static weft_result_t qt_job(weft_job_t *job, void *arg) {
  (void)job;
  return weft_ok_int((intptr_t)arg + 1);
}
static void qt_back(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED)
    qt.errors++;
  if (++qt.rounds == QUIET_ROUNDS)
    weft_promise_fulfil_int(qt.done.p, 0);
  else if (weft_timer_start(&qt.timer, 1, 0) != 0)
    qt.errors++;
}
static void qt_tick(weft_timer_t *t, int status, void *arg) {
  (void)t;
  weft_loop_t *loop = arg;
  weft_future_t *f;
  if (status != 0)
    return;
  if (weft_pool_submit(qt.pool, qt_job, (void *)(intptr_t)qt.rounds, NULL,
                       &f) != 0 ||
      weft_future_watch(f, weft_loop_executor(loop), qt_back, NULL, NULL) != 0)
    qt.errors++;
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
  EXPECT_EQ(qt.errors, 0);
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

static void *close_elsewhere(void *arg) {
  return (void *)(intptr_t)weft_loop_close(arg);
}

static void test_bad_input(void) {
  EXPECT_ERR(weft_loop_create(NULL, NULL), WEFT_EINVAL);
  weft_loop_options_t o = {0};
  weft_loop_t *loop;
  EXPECT_ERR(weft_loop_create(&o, &loop), WEFT_EINVAL); /* size not set */
  o.size = sizeof o;
  o.max_events = 16;
  REQUIRE_EQ(weft_loop_create(&o, &loop), 0);
  EXPECT_ERR(weft_loop_post(NULL, quick, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_post(loop, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_close(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(loop, NULL, 1), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stats(loop, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_loop_executor(NULL) == NULL, 1);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, close_elsewhere, loop), 0);
  pthread_join(th, &res);
  EXPECT_ERR((int)(intptr_t)res, WEFT_EPERM);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ==== close, run_until and timeout_ms ==== */

/* ---- close runs the continuations of what it cancels ---- */
static struct {
  weft_loop_t *loop;
  int sleep_then, sleep_watch, sig_then, timeout_then, chained, dtor, bad;
  int sleep_rc, post_rc;
} cc;

static weft_result_t cc_cancelled(void *arg, weft_future_t *src) {
  (*(int *)arg)++;
  if (weft_future_error(src) != WEFT_ECANCELED)
    cc.bad++;
  return weft_ok_int(1);
}
static weft_result_t cc_settled(void *arg, weft_future_t *src) {
  (*(int *)arg)++; /* a timeout of a cancelled sleep: settled, any error */
  if (weft_future_state(src) == WEFT_PENDING || weft_future_error(src) == 0)
    cc.bad++;
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
  if (weft_future_error(src) != WEFT_ECANCELED)
    cc.bad++;
  weft_future_t *f = NULL;
  cc.sleep_rc = weft_loop_sleep(cc.loop, 1, &f); /* refused during close */
  cc.post_rc = weft_loop_post(cc.loop, quick, NULL); /* refused too */
  weft_future_t *d;
  /* a continuation queued on the loop during close runs before it returns */
  if (weft_future_then(src, weft_loop_executor(cc.loop), cc_chain, NULL,
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
  REQUIRE_EQ(weft_future_then(s1, lx, cc_cancelled, &cc.sleep_then, &d1), 0);
  REQUIRE_EQ(weft_loop_sleep(loop, 100000, &s2), 0);
  REQUIRE_EQ(weft_future_watch(s2, lx, cc_watch, malloc(32), cc_dtor), 0);
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR2, &sg), 0);
  REQUIRE_EQ(weft_future_then(sg, lx, cc_cancelled, &cc.sig_then, &d3), 0);
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, pf, 100000, &t), 0);
  REQUIRE_EQ(weft_future_then(t, lx, cc_settled, &cc.timeout_then, &d4), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  /* each continuation ran once, on the loop, before close returned */
  EXPECT_EQ(cc.sleep_then, 1);
  EXPECT_EQ(cc.sleep_watch, 1);
  EXPECT_EQ(cc.sig_then, 1);
  EXPECT_EQ(cc.timeout_then, 1);
  EXPECT_EQ(cc.chained, 1);
  EXPECT_EQ(cc.dtor, 0); /* the watch ran: its arg was its own */
  EXPECT_EQ(cc.bad, 0);
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
    REQUIRE_EQ(weft_future_then(f, weft_loop_executor(cp.loop), cp_then,
                                NULL, &d), 0);
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
    REQUIRE_EQ(pthread_create(&th[i], NULL, cp_poster, i == 0 ? &cp : NULL),
               0);
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

/* ---- run_until with timeouts up to INT64_MAX ms ---- */
static void fulfil_due(weft_timer_t *t, int status, void *arg) {
  (void)t;
  if (status == 0)
    weft_promise_fulfil_int(arg, 7);
}
static void count_stall(weft_loop_t *loop, const weft_stall_t *s, void *arg) {
  (void)loop;
  (void)s;
  (*(int *)arg)++;
}

static void test_run_until_long_timeouts(void) {
  weft_loop_t *loop = new_loop();
  const int64_t ms[] = {INT64_MAX, INT64_MAX / 1000000,
                        INT64_MAX / 1000000 + 1, (int64_t)1 << 50,
                        (int64_t)1000000000};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    weft_timer_t t;
    REQUIRE_EQ(weft_timer_init(loop, &t, fulfil_due, p), 0);
    REQUIRE_EQ(weft_timer_start(&t, 1, 0), 0);
    EXPECT_EQ(weft_loop_run_until(loop, f, ms[i]), 0); /* waits, settles */
    EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
    weft_timer_stop(&t);
    weft_future_release(f);
    weft_promise_release(p);
  }
  /* a stall threshold that large reports nothing */
  int stalls = 0, ran = 0;
  REQUIRE_EQ(weft_loop_set_stall_hook(loop, INT64_MAX, count_stall, &stalls),
             0);
  REQUIRE_EQ(weft_loop_post(loop, quick, &ran), 0);
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(stalls, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- weft_loop_timeout_ms right after run_until returns ---- */
enum { TM_ROUNDS = 200 };
/* how much of a 60 s timer a slow machine may have used up by the check */
enum { TM_SLACK_MS = 5000 };
static struct {
  weft_promise_t *p[TM_ROUNDS];
  tu_rounds_t r;
} tm;

static void *tm_fulfiller(void *arg) {
  (void)arg;
  for (long i = 0; i < TM_ROUNDS; i++) {
    tu_meet(&tm.r, i + 1, 1);
    weft_promise_fulfil_int(tm.p[i], 1);
  }
  return NULL;
}

static void test_timeout_ms_after_run_until(void) {
  weft_loop_t *loop = new_loop();
  /* f settled by a timer's callback, on the loop thread */
  for (int round = 0; round < 3; round++) {
    weft_promise_t *p;
    weft_future_t *f;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    weft_timer_t t;
    REQUIRE_EQ(weft_timer_init(loop, &t, fulfil_due, p), 0);
    REQUIRE_EQ(weft_timer_start(&t, 1, 0), 0);
    EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
    EXPECT_EQ(weft_loop_timeout_ms(loop), -1); /* nothing pending */
    weft_future_release(f);
    weft_promise_release(p);
  }
  /* a timer pending: its due time */
  weft_timer_t far;
  REQUIRE_EQ(weft_timer_init(loop, &far, tick, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&far, 60000, 0), 0);
  {
    weft_promise_t *p;
    weft_future_t *f;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    weft_timer_t t;
    REQUIRE_EQ(weft_timer_init(loop, &t, fulfil_due, p), 0);
    REQUIRE_EQ(weft_timer_start(&t, 1, 0), 0);
    EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
    int64_t ms = weft_loop_timeout_ms(loop);
    EXPECT_TRUE(ms > 60000 - TM_SLACK_MS && ms <= 60000);
    weft_future_release(f);
    weft_promise_release(p);
  }
  weft_timer_stop(&far);
  /* f settled on another thread, before or while the loop sleeps: the
   * loop wakes, and leaves nothing of its own behind */
  weft_future_t *f[TM_ROUNDS];
  memset(&tm.r, 0, sizeof tm.r);
  for (int i = 0; i < TM_ROUNDS; i++)
    REQUIRE_EQ(weft_promise_create(&tm.p[i], &f[i]), 0);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, tm_fulfiller, NULL), 0);
  int bad = 0, late = 0;
  for (long i = 0; i < TM_ROUNDS; i++) {
    tu_meet(&tm.r, i + 1, 0);
    if (weft_loop_run_until(loop, f[i], BOUND_MS) != 0)
      late++;
    if (weft_loop_timeout_ms(loop) != -1)
      bad++;
  }
  pthread_join(th, NULL);
  EXPECT_EQ(late, 0);
  EXPECT_EQ(bad, 0);
  for (int i = 0; i < TM_ROUNDS; i++) {
    weft_future_release(f[i]);
    weft_promise_release(tm.p[i]);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ==== timers, watchers and signals: start/stop pairs, 0 ms restarts,
 * repeat phase, huge timeouts (issue 19, items 13, 15, 16, 6/17) ==== */

#include <limits.h>

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
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR2, &f), 0);
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

/* weft_loop_signal futures: cancel twice (here and from another thread),
 * cancel after the signal came; each leaves the handler list intact. */
static void *cancel_twice(void *arg) {
  int r1 = weft_future_cancel(arg);
  int r2 = weft_future_cancel(arg);
  return (void *)(intptr_t)(r1 == 0 && r2 == WEFT_EALREADY);
}

static void test_signal_future_pairs(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f1, *f2, *f3, *f4;
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR1, &f1), 0);
  EXPECT_EQ(weft_future_cancel(f1), 0);
  EXPECT_ERR(weft_future_cancel(f1), WEFT_EALREADY);
  EXPECT_EQ(weft_future_state(f1), WEFT_CANCELLED);
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR1, &f2), 0);
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR1, &f3), 0);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, cancel_twice, f3), 0);
  pthread_join(th, &res);
  EXPECT_EQ((int)(intptr_t)res, 1);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0); /* f3's disarm */
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f2, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f2), SIGUSR1);
  EXPECT_ERR(weft_future_cancel(f2), WEFT_EALREADY); /* after it fired */
  EXPECT_EQ(weft_future_state(f3), WEFT_CANCELLED);
  REQUIRE_EQ(weft_loop_signal(loop, SIGUSR1, &f4), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f4, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f4), SIGUSR1);
  weft_future_release(f1);
  weft_future_release(f2);
  weft_future_release(f3);
  weft_future_release(f4);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void pair_io(weft_io_t *io, unsigned events, int status, void *arg) {
  if (status != 0 || !(events & WEFT_READABLE))
    return;
  char c;
  if (read(io->priv_fd, &c, 1) == 1)
    (*(int *)arg)++;
}

/* fd watchers: starting an active watcher again (another fd or the same)
 * is refused and leaves it watching its fd; stop twice, stop never
 * started and start after stop work. */
static void test_io_start_stop_pairs(void) {
  weft_loop_t *loop = new_loop();
  int p1[2], p2[2];
  REQUIRE_EQ(pipe(p1), 0);
  REQUIRE_EQ(pipe(p2), 0);
  weft_io_t io;
  memset(&io, 0, sizeof io);
  EXPECT_EQ(weft_io_stop(&io), 0); /* never started: a no-op */
  int n = 0;
  REQUIRE_EQ(weft_io_start(loop, &io, p1[0], WEFT_READABLE, pair_io, &n), 0);
  int r2 = weft_io_start(loop, &io, p2[0], WEFT_READABLE, pair_io, &n);
  int r1 = weft_io_start(loop, &io, p1[0], WEFT_READABLE, pair_io, &n);
  EXPECT_ERR(r2, WEFT_EINVAL);
  EXPECT_ERR(r1, WEFT_EINVAL);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 1);
  EXPECT_EQ(io.priv_fd, p1[0]);
  if (r2 == 0) { /* the first fd stays registered for a relinked io */
    close(p1[0]);
    close(p1[1]);
    close(p2[0]);
    close(p2[1]);
    EXPECT_EQ(weft_loop_close(loop), 0);
    return;
  }
  REQUIRE_EQ(write(p1[1], "x", 1), 1);
  run_until_n(loop, &n, 1);
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_EQ(weft_io_stop(&io), 0); /* stop twice */
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 0);
  /* start after stop, on the other fd */
  REQUIRE_EQ(weft_io_start(loop, &io, p2[0], WEFT_READABLE, pair_io, &n), 0);
  REQUIRE_EQ(write(p2[1], "y", 1), 1);
  run_until_n(loop, &n, 2);
  EXPECT_EQ(weft_io_stop(&io), 0);
  close(p1[0]);
  close(p1[1]);
  close(p2[0]);
  close(p2[1]);
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
  EXPECT_EQ(weft_timer_active(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0); /* stop twice */
  EXPECT_EQ(weft_timer_active(&t), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(n, 1); /* the stopped start never fired */
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
  int64_t first_due;  /* the deadline of the first beat */
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
  ph.next[i] = t->priv_due; /* rescheduled before the callback runs */
  if (i == PHASE_BLOCK_AT) { /* the cause of lateness, not a sync */
    int64_t end = weft_now_ns() + 7 * PHASE_P / 2;
    while (weft_now_ns() < end)
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
    EXPECT_EQ(weft_timer_active(&t), 1);
    int64_t ms = weft_loop_timeout_ms(loop);
    EXPECT_EQ(ms == -1 || ms >= (int64_t)INT_MAX, 1); /* 24 days or more */
    REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
    EXPECT_EQ(n, 0);
    EXPECT_EQ(weft_timer_active(&t), 1);
  }
  EXPECT_EQ(weft_timer_stop(&t), 0);
  weft_future_t *s, *in, *to;
  weft_promise_t *p;
  REQUIRE_EQ(weft_loop_sleep(loop, INT64_MAX, &s), 0);
  REQUIRE_EQ(weft_promise_create(&p, &in), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, in, INT64_MAX, &to), 0);
  int64_t ms = weft_loop_timeout_ms(loop);
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
    {"post from 4 threads, 100k each: once, in order, batched wake-ups",
     test_post_many_threads},
    {"loop -> pool -> loop, 100k round trips on the loop thread",
     test_loop_pool_loop},
    {"timers: equal deadlines in start order, stop/start inside callbacks",
     test_timer_order_stop_start},
    {"100k timers with random deadlines fire in deadline order",
     test_timer_many_random},
    {"20k tied timers: start order through stops and restarts",
     test_timer_ties},
    {"repeating timer, timer errors", test_timer_repeat_and_errors},
    {"sleep, cancelled sleep", test_sleep},
    {"timeout wins and loses", test_timeout},
    {"signals as a future and as callbacks", test_signals},
    {"await on the loop thread refuses with EDEADLK", test_await_refused},
    {"stall detector", test_stall_detector},
    {"fd watchers", test_fd_watchers},
    {"run modes", test_run_modes},
    {"close cancels everything", test_close_cancels_everything},
    {"close: timers stopped by other timers' callbacks",
     test_close_timers_stop_each_other},
    {"adaptive spin", test_adaptive_spin},
    {"adaptive spin keeps quiet near a pool", test_spin_quiet_near_pool},
    {"bad input", test_bad_input},
    {"close runs the continuations of what it cancels",
     test_close_runs_continuations},
    {"close refuses other threads' posts and continuations",
     test_close_refuses_other_threads},
    {"run_until with timeouts up to INT64_MAX ms",
     test_run_until_long_timeouts},
    {"timeout_ms right after run_until returns",
     test_timeout_ms_after_run_until},
    /* issue 19: start/stop pairs, 0 ms restarts, repeat phase, huge ms */
    {"signal handlers: start twice refused, stop twice, restart",
     test_signal_start_stop_pairs},
    {"signal futures: cancel twice, after firing, from another thread",
     test_signal_future_pairs},
    {"fd watchers: start twice refused, stop twice, restart",
     test_io_start_stop_pairs},
    {"timers: start twice restarts, stop twice, restart",
     test_timer_start_stop_pairs},
    {"a timer restarting itself at 0 ms runs once per RUN_ONCE",
     test_timer_zero_restart_next_iteration},
    {"a repeating timer keeps its phase and skips missed beats",
     test_timer_repeat_keeps_phase},
    {"INT64_MAX ms timers, sleeps and timeouts are armed, not due",
     test_timer_huge_timeouts},
    {NULL, NULL}};
const test_suite_t suite_reactor = {"reactor", cases};
