/* SPDX-License-Identifier: MIT */
/* tests/test_fiber_await.c: weft_future_await in a fiber (timeouts,
 * timeout 0, a settled future, bad arguments), weft_fiber_yield, and
 * weft_future_await_first / _all in and out of a fiber. */
#include "fiber_util.h"

#include <stdint.h>
#include <stdlib.h>

/* A timed await may end this much early (clock granularity). */
#define EARLY_TOLERANCE_MS 2

/* ================================================================ */
/* Await in a fiber: timeouts, at once, bad arguments                */
/* ================================================================ */

typedef struct tmo {
  weft_loop_t *loop;
  weft_pool_t *aux;
  weft_promise_t *p;
  weft_future_t *f, *settled;
  int rc_timeout, rc_zero, rc_settled, rc_null, rc_bad, rc_late, rc_max;
  int64_t waited_ms;
  int posted_before_zero, posted_before_settled;
  int state_after_timeout;
  bool cancelled_after_timeout;
  int posted;
} tmo_t;

static void posted_count(weft_loop_t *loop, void *arg, int status) {
  (void)loop, (void)status;
  (*(int *)arg)++;
}

static weft_result_t fn_timeouts(void *arg) {
  tmo_t *t = arg;
  int64_t t0 = weft_clock_now_ns();
  t->rc_timeout = weft_future_await(t->f, 30);
  t->waited_ms = ft_ms_since(t0);
  t->state_after_timeout = weft_future_state(t->f);
  t->cancelled_after_timeout = weft_promise_is_cancelled(t->p);
  /* timeout 0 and a settled future: no suspension (a function posted
   * first has not run yet when the await returns) */
  weft_loop_post(t->loop, posted_count, &t->posted);
  t->rc_zero = weft_future_await(t->f, 0);
  t->posted_before_zero = t->posted;
  t->rc_settled = weft_future_await(t->settled, WEFT_FOREVER);
  t->posted_before_settled = t->posted;
  t->rc_null = weft_future_await(NULL, 10);
  t->rc_bad = weft_future_await(t->f, -2);
  /* the future was left alone: settled later, it is still awaited */
  weft_future_t *j;
  weft_pool_submit(t->aux, ft_job_fulfil, t->p, NULL, &j);
  t->p = NULL;
  t->rc_late = weft_future_await(t->f, INT64_MAX);
  weft_future_release(j);
  return weft_ok_int(weft_future_int(t->f));
}

static void test_await_timeout_in_fiber(void) {
  weft_loop_t *loop = new_loop();
  tmo_t t = {.loop = loop, .aux = ft_pool(1)};
  weft_promise_t *q;
  REQUIRE_EQ(weft_promise_create(&t.p, &t.f), 0);
  REQUIRE_EQ(weft_promise_create(&q, &t.settled), 0);
  weft_promise_fulfil_int(q, 3);
  weft_future_t *f;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_timeouts, &t, NULL, &f), 0);
  EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_ERR(t.rc_timeout, WEFT_ETIMEDOUT);
  EXPECT_TRUE(t.waited_ms >= 30 - EARLY_TOLERANCE_MS);
  EXPECT_EQ(t.state_after_timeout, WEFT_PENDING);
  EXPECT_TRUE(!t.cancelled_after_timeout);
  EXPECT_ERR(t.rc_zero, WEFT_ETIMEDOUT);
  EXPECT_EQ(t.posted_before_zero, 0);
  EXPECT_ERR(t.rc_settled, 0);
  EXPECT_EQ(t.posted_before_settled, 0);
  EXPECT_ERR(t.rc_null, WEFT_EINVAL);
  EXPECT_ERR(t.rc_bad, WEFT_EINVAL);
  EXPECT_ERR(t.rc_late, 0);
  EXPECT_EQ(weft_future_int(f), 7);
  EXPECT_EQ(t.posted, 1);
  weft_future_release(f);
  weft_future_release(t.f);
  weft_future_release(t.settled);
  weft_promise_release(q);
  ft_pool_end(t.aux);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

typedef struct tmo2 {
  weft_promise_t *p;
  weft_future_t *f;
  int rc;
  pthread_t before, after;
} tmo2_t;

static weft_result_t fn_timeout_only(void *arg) {
  tmo2_t *t = arg;
  t->before = ft_self();
  t->rc = weft_future_await(t->f, 10);
  t->after = ft_self();
  return weft_ok_int(0);
}

/* A timeout on a pool and on a thread executor (the alarm thread wakes the
 * fiber; it resumes on its executor): many at once. */
static void test_await_timeout_pool_and_thread(void) {
  weft_pool_t *pool = ft_pool(2);
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *exs[2] = {weft_pool_executor(pool),
                             weft_thread_executor_get(te)};
  enum { N = 100 };
  static tmo2_t t[N];
  weft_future_t *f[N];
  for (int e = 0; e < 2; e++) {
    for (int i = 0; i < N; i++) {
      t[i] = (tmo2_t){0};
      REQUIRE_EQ(weft_promise_create(&t[i].p, &t[i].f), 0);
      REQUIRE_EQ(weft_fiber_spawn(exs[e], fn_timeout_only, &t[i], NULL, &f[i]),
                 0);
    }
    int timed_out = 0, pending = 0, same = 0;
    for (int i = 0; i < N; i++) {
      EXPECT_ERR(weft_future_await(f[i], BOUND_MS), 0);
      timed_out += t[i].rc == WEFT_ETIMEDOUT;
      pending += weft_future_state(t[i].f) == WEFT_PENDING;
      same += pthread_equal(t[i].before, t[i].after) != 0;
      weft_future_release(f[i]);
      weft_future_release(t[i].f);
      weft_promise_release(t[i].p);
    }
    EXPECT_EQ(timed_out, N);
    EXPECT_EQ(pending, N);
    if (e == 1)
      EXPECT_EQ(same, N); /* (a pool fiber may resume on the other worker) */
  }
  ft_pool_end(pool);
  EXPECT_ERR(weft_thread_executor_shutdown(te), 0);
}

/* ================================================================ */
/* Yield                                                             */
/* ================================================================ */

typedef struct ylog {
  char log[64];
  _Atomic int n;
} ylog_t;

typedef struct yarg {
  ylog_t *log;
  char id;
  int bad;
} yarg_t;

static weft_result_t fn_yield_log(void *arg) {
  yarg_t *y = arg;
  for (int i = 0; i < 5; i++) {
    y->log->log[atomic_fetch_add(&y->log->n, 1)] = y->id;
    if (weft_fiber_yield() != 0)
      y->bad++;
  }
  return weft_ok_int(0);
}

static _Atomic int gate;
static weft_result_t then_hold(void *arg, weft_future_t *src) {
  (void)arg, (void)src;
  ft_wait_at_least(&gate, 1);
  return weft_ok_int(0);
}

/* Two fibers on one loop (and on one thread executor, held until both
 * are queued) take turns: each yield queues the fiber behind the other. */
static void yield_turns(weft_executor_t *ex, weft_loop_t *loop) {
  ylog_t log = {{0}, 0};
  yarg_t a = {&log, 'A', 0}, b = {&log, 'B', 0};
  weft_promise_t *p;
  weft_future_t *fa, *fb, *s, *held = NULL;
  REQUIRE_EQ(weft_promise_create(&p, &s), 0);
  weft_promise_fulfil_int(p, 0);
  atomic_store(&gate, 0);
  if (loop == NULL)
    REQUIRE_EQ(weft_future_then(s, ex, then_hold, NULL, NULL, &held), 0);
  REQUIRE_EQ(weft_fiber_spawn(ex, fn_yield_log, &a, NULL, &fa), 0);
  REQUIRE_EQ(weft_fiber_spawn(ex, fn_yield_log, &b, NULL, &fb), 0);
  atomic_store(&gate, 1);
  if (loop != NULL) {
    EXPECT_ERR(weft_loop_run_until(loop, fa, BOUND_MS), 0);
    EXPECT_ERR(weft_loop_run_until(loop, fb, BOUND_MS), 0);
  } else {
    EXPECT_ERR(weft_future_await(fa, BOUND_MS), 0);
    EXPECT_ERR(weft_future_await(fb, BOUND_MS), 0);
    EXPECT_ERR(weft_future_await(held, BOUND_MS), 0);
    weft_future_release(held);
  }
  EXPECT_STREQ(log.log, "ABABABABAB");
  EXPECT_EQ(a.bad + b.bad, 0);
  weft_future_release(fa);
  weft_future_release(fb);
  weft_future_release(s);
  weft_promise_release(p);
}

static void test_yield_takes_turns(void) {
  weft_loop_t *loop = new_loop();
  for (int i = 0; i < 20; i++)
    yield_turns(weft_loop_executor(loop), loop);
  EXPECT_ERR(weft_loop_close(loop), 0);
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  for (int i = 0; i < 20; i++)
    yield_turns(weft_thread_executor_get(te), NULL);
  EXPECT_ERR(weft_thread_executor_shutdown(te), 0);
}

typedef struct ypost {
  weft_loop_t *loop;
  int posted, before, after, rc;
} ypost_t;

static weft_result_t fn_yield_post(void *arg) {
  ypost_t *y = arg;
  weft_loop_post(y->loop, posted_count, &y->posted);
  y->before = y->posted;
  y->rc = weft_fiber_yield();
  y->after = y->posted;
  return weft_ok_int(0);
}

/* Work queued on the loop before the yield runs before the fiber goes on. */
static void test_yield_runs_queued_work(void) {
  weft_loop_t *loop = new_loop();
  for (int round = 0; round < 50; round++) {
    ypost_t y = {.loop = loop};
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_yield_post, &y,
                                NULL, &f),
               0);
    EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
    EXPECT_ERR(y.rc, 0);
    EXPECT_EQ(y.before, 0);
    EXPECT_EQ(y.after, 1);
    weft_future_release(f);
  }
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* await_first / await_all                                           */
/* ================================================================ */

static void *fulfil_thread(void *arg) {
  weft_promise_fulfil_int(arg, 11);
  return NULL;
}

static void test_await_first_outside(void) {
  for (int round = 0; round < 100; round++) {
    weft_promise_t *p[3];
    weft_future_t *f[3];
    for (int i = 0; i < 3; i++)
      REQUIRE_EQ(weft_promise_create(&p[i], &f[i]), 0);
    size_t idx = 99;
    EXPECT_ERR(weft_future_await_first(f, 3, 0, &idx), WEFT_ETIMEDOUT);
    EXPECT_ERR(weft_future_await_first(f, 3, 5, &idx), WEFT_ETIMEDOUT);
    EXPECT_EQ(idx, 99);
    int which = round % 3;
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, fulfil_thread, p[which]), 0);
    EXPECT_ERR(weft_future_await_first(f, 3, BOUND_MS, &idx), 0);
    EXPECT_EQ(idx, which);
    pthread_join(t, NULL);
    for (int i = 0; i < 3; i++) {
      EXPECT_TRUE(!weft_promise_is_cancelled(p[i]));
      EXPECT_EQ(weft_future_state(f[i]),
                i == which ? WEFT_FULFILLED : WEFT_PENDING);
    }
    /* already settled: at once */
    EXPECT_ERR(weft_future_await_first(f, 3, 0, &idx), 0);
    EXPECT_EQ(idx, which);
    for (int i = 0; i < 3; i++) {
      weft_future_release(f[i]);
      weft_promise_release(p[i]);
    }
  }
}

static void test_await_many_bad_arguments(void) {
  weft_promise_t *p;
  weft_future_t *f[2];
  REQUIRE_EQ(weft_promise_create(&p, &f[0]), 0);
  f[1] = NULL;
  size_t idx = 7;
  EXPECT_ERR(weft_future_await_first(NULL, 1, 0, &idx), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_first(f, 1, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_first(f, 0, 0, &idx), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_first(f, 2, 0, &idx), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_first(f, 1, -2, &idx), WEFT_EINVAL);
  EXPECT_EQ(idx, 7);
  EXPECT_ERR(weft_future_await_all(NULL, 1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_all(f, 2, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_all(f, 1, -2), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await_all(NULL, 0, 0), 0);
  EXPECT_ERR(weft_future_await_all(f, 0, WEFT_FOREVER), 0);
  EXPECT_TRUE(!weft_promise_is_cancelled(p));
  weft_future_release(f[0]);
  weft_promise_release(p);
}

static void test_await_all_outside(void) {
  for (int round = 0; round < 100; round++) {
    weft_promise_t *p[3];
    weft_future_t *f[3];
    for (int i = 0; i < 3; i++)
      REQUIRE_EQ(weft_promise_create(&p[i], &f[i]), 0);
    weft_promise_reject(p[0], WEFT_EPIPE);
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, fulfil_thread, p[1]), 0);
    EXPECT_ERR(weft_future_await_all(f, 3, 5), WEFT_ETIMEDOUT);
    pthread_join(t, NULL);
    EXPECT_TRUE(!weft_promise_is_cancelled(p[2]));
    REQUIRE_EQ(pthread_create(&t, NULL, fulfil_thread, p[2]), 0);
    EXPECT_ERR(weft_future_await_all(f, 3, BOUND_MS), 0);
    pthread_join(t, NULL);
    EXPECT_ERR(weft_future_error(f[0]), WEFT_EPIPE);
    EXPECT_EQ(weft_future_int(f[1]), 11);
    EXPECT_EQ(weft_future_int(f[2]), 11);
    for (int i = 0; i < 3; i++) {
      weft_future_release(f[i]);
      weft_promise_release(p[i]);
    }
  }
}

typedef struct many {
  weft_loop_t *loop;
  weft_pool_t *aux;
  int rc_first, rc_all, rc_first_tmo, rc_all_tmo;
  size_t idx;
  int states[3];
  bool cancelled_after_timeout;
  int all_states[3];
} many_t;

/* In a loop fiber: the first of a long sleep, a short sleep and a pending
 * promise is the short sleep, and nothing is cancelled; then all of two
 * sleeps and a pool job. */
static weft_result_t fn_many(void *arg) {
  many_t *m = arg;
  weft_future_t *f[3];
  weft_promise_t *p;
  weft_loop_sleep(m->loop, LONG_MS, &f[0]);
  weft_loop_sleep(m->loop, 5, &f[1]);
  weft_promise_create(&p, &f[2]);
  m->rc_first = weft_future_await_first(f, 3, BOUND_MS, &m->idx);
  for (int i = 0; i < 3; i++)
    m->states[i] = weft_future_state(f[i]);
  size_t other = 9;
  weft_future_t *rest[2] = {f[0], f[2]};
  m->rc_first_tmo = weft_future_await_first(rest, 2, 5, &other);
  m->rc_all_tmo = weft_future_await_all(f, 3, 5);
  m->cancelled_after_timeout = weft_promise_is_cancelled(p) ||
                               weft_future_state(f[0]) != WEFT_PENDING;
  weft_future_cancel(f[0]);
  for (int i = 0; i < 3; i++)
    weft_future_release(f[i]);
  weft_promise_release(p);

  weft_loop_sleep(m->loop, 3, &f[0]);
  weft_loop_sleep(m->loop, 1, &f[1]);
  weft_pool_submit(m->aux, ft_job_five, NULL, NULL, &f[2]);
  m->rc_all = weft_future_await_all(f, 3, BOUND_MS);
  for (int i = 0; i < 3; i++) {
    m->all_states[i] = weft_future_state(f[i]);
    weft_future_release(f[i]);
  }
  return weft_ok_int(0);
}

static void test_await_many_in_fiber(void) {
  weft_loop_t *loop = new_loop();
  many_t m = {.loop = loop, .aux = ft_pool(1)};
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_many, &m, NULL, &f),
             0);
  EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_ERR(m.rc_first, 0);
  EXPECT_EQ(m.idx, 1);
  EXPECT_EQ(m.states[0], WEFT_PENDING);
  EXPECT_EQ(m.states[1], WEFT_FULFILLED);
  EXPECT_EQ(m.states[2], WEFT_PENDING);
  EXPECT_ERR(m.rc_first_tmo, WEFT_ETIMEDOUT);
  EXPECT_ERR(m.rc_all_tmo, WEFT_ETIMEDOUT);
  EXPECT_TRUE(!m.cancelled_after_timeout);
  EXPECT_ERR(m.rc_all, 0);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(m.all_states[i], WEFT_FULFILLED);
  weft_future_release(f);
  ft_pool_end(m.aux);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* Outside a fiber, in a loop callback, waiting for what only that loop
 * settles could never end: WEFT_EDEADLK, as weft_future_await says. */
typedef struct dl {
  weft_future_t *sleep;
  int rc_first, rc_all, rc_await, ran;
} dl_t;

static void posted_deadlock(weft_loop_t *loop, void *arg, int status) {
  (void)loop, (void)status;
  dl_t *d = arg;
  size_t idx;
  d->rc_await = weft_future_await(d->sleep, BOUND_MS);
  d->rc_first = weft_future_await_first(&d->sleep, 1, BOUND_MS, &idx);
  d->rc_all = weft_future_await_all(&d->sleep, 1, BOUND_MS);
  d->ran++;
}

static void test_await_many_deadlock_on_loop(void) {
  weft_loop_t *loop = new_loop();
  dl_t d = {0};
  REQUIRE_EQ(weft_loop_sleep(loop, LONG_MS, &d.sleep), 0);
  REQUIRE_EQ(weft_loop_post(loop, posted_deadlock, &d), 0);
  run_until_n(loop, &d.ran, 1);
  EXPECT_ERR(d.rc_await, WEFT_EDEADLK);
  EXPECT_ERR(d.rc_first, WEFT_EDEADLK);
  EXPECT_ERR(d.rc_all, WEFT_EDEADLK);
  EXPECT_EQ(weft_future_state(d.sleep), WEFT_PENDING);
  weft_future_cancel(d.sleep);
  weft_future_release(d.sleep);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"await: timeout, 0, settled, bad args, INT64_MAX in a loop fiber",
     test_await_timeout_in_fiber},
    {"await: timeout on a pool and a thread executor",
     test_await_timeout_pool_and_thread},
    {"yield: two fibers take turns (loop, thread)", test_yield_takes_turns},
    {"yield: queued work runs first", test_yield_runs_queued_work},
    {"await_first: outside a fiber", test_await_first_outside},
    {"await_first/all: bad arguments", test_await_many_bad_arguments},
    {"await_all: outside a fiber", test_await_all_outside},
    {"await_first/all: in a loop fiber", test_await_many_in_fiber},
    {"await_first/all: WEFT_EDEADLK in a loop callback",
     test_await_many_deadlock_on_loop},
    {NULL, NULL}};

const test_suite_t suite_fiber_await = {"fiber_await", cases};
