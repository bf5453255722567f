/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_run.c: running the loop: posts from many threads (each
 * once, in order, few wake-ups), loop -> pool -> loop round trips on the
 * loop thread, await refused on the loop thread, the stall detector, run
 * modes, run_until with timeouts up to INT64_MAX ms, timeout_ms right
 * after run_until, and bad input. */
#include "loop_util.h"

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
  long started, finished, off_thread, not_fulfilled, wrong;
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
  rt.not_fulfilled += weft_future_state(src) != WEFT_FULFILLED;
  rt.wrong += weft_future_int(src) != i * 3;
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
      weft_future_then(f, weft_loop_executor(rt.loop), rt_cont, (void *)i, NULL,
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
  EXPECT_EQ(rt.not_fulfilled, 0);
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
  REQUIRE_EQ(
      weft_future_then(f, weft_loop_executor(loop), twice, NULL, NULL, &d), 0);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_ERR(weft_future_await(d, WEFT_FOREVER), WEFT_EDEADLK);
  EXPECT_ERR(weft_future_await(f, 5000), WEFT_EDEADLK);
  EXPECT_EQ(weft_clock_now_ns() - t0 < (int64_t)1000 * 1000000,
            1); /* at once */
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
  int64_t end = weft_clock_now_ns() + 50 * 1000000;
  while (weft_clock_now_ns() < end)
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
  EXPECT_STREQ(stall.kind, "post");
  EXPECT_EQ(stall.duration >= 50 * 1000000, 1);
  EXPECT_EQ(stall.cb == (void (*)(void))busy_50ms, 1);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.stalls, 1);
  /* a continuation on the loop executor is reported by its own function */
  weft_promise_t *p;
  weft_future_t *f, *d;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_then(f, weft_loop_executor(loop), slow_then, NULL,
                              NULL, &d),
             0);
  weft_promise_fulfil_int(p, 1);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(stall.reports, 2);
  EXPECT_STREQ(stall.kind, "task");
  EXPECT_EQ(stall.cb == (void (*)(void))slow_then, 1);
  weft_future_release(d);
  weft_future_release(f);
  weft_promise_release(p);
  EXPECT_EQ(weft_loop_set_stall_hook(loop, 0, NULL, NULL), 0); /* off */
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
  int64_t t0 = weft_clock_now_ns();
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(weft_clock_now_ns() - t0 < (int64_t)1000 * 1000000, 1);
  /* DEFAULT until another thread stops it */
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, stop_later, loop), 0);
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_DEFAULT), 0);
  pthread_join(th, NULL);
  /* run_until times out on a future nobody settles */
  until_t u = until_new();
  t0 = weft_clock_now_ns();
  EXPECT_ERR(weft_loop_run_until(loop, u.f, 30), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_clock_now_ns() - t0 >= 30 * 1000000, 1);
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
  EXPECT_EQ(weft_loop_backend_fd(loop) >= 0, 1);
  EXPECT_EQ(weft_loop_backend_timeout(loop), -1); /* nothing pending */
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(weft_loop_current() == NULL, 1);
}

/* ---- bad input ---- */
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
  const int64_t ms[] = {INT64_MAX, INT64_MAX / 1000000, INT64_MAX / 1000000 + 1,
                        (int64_t)1 << 50, (int64_t)1000000000};
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

/* ---- weft_loop_backend_timeout right after run_until returns ---- */
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
    EXPECT_EQ(weft_loop_backend_timeout(loop), -1); /* nothing pending */
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
    int64_t ms = weft_loop_backend_timeout(loop);
    EXPECT_TRUE(ms > 60000 - TM_SLACK_MS);
    EXPECT_TRUE(ms <= 60000);
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
    if (weft_loop_backend_timeout(loop) != -1)
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

static const test_case_t cases[] = {
    {"post from 4 threads, 100k each: once, in order, batched wake-ups",
     test_post_many_threads},
    {"loop -> pool -> loop, 100k round trips on the loop thread",
     test_loop_pool_loop},
    {"await on the loop thread refuses with EDEADLK", test_await_refused},
    {"stall detector", test_stall_detector},
    {"run modes", test_run_modes},
    {"bad input", test_bad_input},
    {"run_until with timeouts up to INT64_MAX ms",
     test_run_until_long_timeouts},
    {"timeout_ms right after run_until returns",
     test_timeout_ms_after_run_until},
    {NULL, NULL}};

const test_suite_t suite_reactor_run = {"reactor_run", cases};
