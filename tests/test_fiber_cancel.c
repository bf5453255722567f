/* SPDX-License-Identifier: MIT */
/* tests/test_fiber_cancel.c: cancelling fibers (include/weft/fiber.h,
 * "Cancel"): at every await point of a fiber (a sleep, a pool job, a
 * socket read on 127.0.0.1, a promise settled by another thread), from the
 * loop thread and from another thread; what the awaited future becomes;
 * cancel before start; cancel racing with a settle; CPU loops that poll
 * weft_fiber_is_cancelled; and fibers whose executor is gone (a loop
 * closed, a pool or thread executor shut down while they wait). */
#include "fiber_util.h"
#include "net_util.h"

#include <stdlib.h>

/* ================================================================ */
/* Cancel at every await point                                       */
/* ================================================================ */

enum { P_SLEEP, P_JOB, P_READ, P_PROMISE, POINTS };

typedef struct cx {
  weft_loop_t *loop;
  weft_pool_t *pool;
  weft_socket_t *sock;
  int target;     /* the await cancelled (POINTS: none) */
  bool shared;    /* the test holds a second handle on the target's future */
  _Atomic int at; /* the await the fiber is at (-1: none yet) */
  weft_future_t *held; /* that second handle */
  weft_promise_t *p;   /* await P_PROMISE's promise */
  weft_future_t *pf;   /* its future, handed to the fiber */
  _Atomic int job_release, job_started, job_saw_cancel, job_ended;
  int rc[POINTS];
  int state_after[POINTS];
  int64_t returned_ns[POINTS], took_ms[POINTS];
  int cleanups;
  char rbuf[16];
} cx_t;

/* A job that holds its worker until it is cancelled or released. */
static weft_result_t job_gated(weft_job_t *job, void *arg) {
  cx_t *c = arg;
  atomic_fetch_add(&c->job_started, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (!atomic_load(&c->job_release) && weft_clock_now_ns() < end) {
    if (weft_job_is_cancelled(job)) {
      atomic_fetch_add(&c->job_saw_cancel, 1);
      break;
    }
    sched_yield();
  }
  atomic_fetch_add(&c->job_ended, 1);
  return weft_ok_int(5);
}

/* Await i's future: one that ends soon (short), or one that does not end
 * by itself (long). */
static weft_future_t *make_op(cx_t *c, int i, bool lng) {
  weft_future_t *f = NULL;
  switch (i) {
  case P_SLEEP:
    weft_loop_sleep(c->loop, lng ? LONG_MS : 1, &f);
    break;
  case P_JOB:
    weft_pool_submit(c->pool, lng ? job_gated : ft_job_five, c, NULL, &f);
    break;
  case P_READ: /* short: the test wrote a byte beforehand */
    weft_socket_read(c->sock, c->rbuf, sizeof c->rbuf, &f);
    break;
  default: /* short: the settler thread fulfils it */
    f = c->pf;
    c->pf = NULL;
  }
  return f;
}

static weft_result_t fn_points(void *arg) {
  cx_t *c = arg;
  char *scratch = malloc(64); /* freed by the cleanup: a leak if it skips */
  for (int i = 0; i < POINTS; i++) {
    weft_future_t *f = make_op(c, i, i >= c->target);
    if (f == NULL) {
      c->rc[i] = 1; /* (no such code: the check fails) */
      continue;
    }
    if (c->shared && i == c->target) {
      weft_future_retain(f);
      c->held = f;
    }
    int64_t t0 = weft_clock_now_ns();
    atomic_store(&c->at, i);
    c->rc[i] = weft_future_await(f, WEFT_FOREVER);
    c->returned_ns[i] = weft_clock_now_ns();
    c->took_ms[i] = ft_ms_since(t0);
    c->state_after[i] = weft_future_state(f);
    weft_future_release(f);
  }
  free(scratch);
  c->cleanups++;
  return weft_ok_int(99);
}

typedef struct canceller {
  cx_t *c;
  weft_future_t *fiber;
  int rc;
  int state_after; /* the fiber's future right after the cancel */
  int64_t at_ns;
} canceller_t;

static void do_cancel(canceller_t *k) {
  k->at_ns = weft_clock_now_ns();
  k->rc = weft_future_cancel(k->fiber);
  k->state_after = weft_future_state(k->fiber);
}

/* From another thread: cancel as soon as the fiber reaches its target. */
static void *cancel_at_target(void *arg) {
  canceller_t *k = arg;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(&k->c->at) < k->c->target && weft_clock_now_ns() < end)
    sched_yield();
  do_cancel(k);
  return NULL;
}

/* The full run's settler: fulfils the promise once the fiber awaits it. */
static void *settle_at_promise(void *arg) {
  cx_t *c = arg;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(&c->at) < P_PROMISE && weft_clock_now_ns() < end)
    sched_yield();
  weft_promise_fulfil_int(c->p, 1);
  return NULL;
}

static void run_until_cleanup(weft_loop_t *loop, const int *cleanups) {
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  weft_timer_t wake;
  weft_timer_init(loop, &wake, tick, NULL);
  weft_timer_start(&wake, 5, 5);
  while (*cleanups == 0 && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  weft_timer_stop(&wake);
}

/* One round: cancel the fiber at await `target` (on the loop thread, or
 * from another thread when `threaded`) and check every await's outcome. */
static void points_round(weft_loop_t *loop, weft_pool_t *pool,
                         weft_socket_t *sock, int peer, int target, bool shared,
                         bool threaded) {
  static cx_t c;
  memset(&c, 0, sizeof c);
  c.loop = loop;
  c.pool = pool;
  c.sock = sock;
  c.target = target;
  c.shared = shared;
  atomic_store(&c.at, -1);
  REQUIRE_EQ(weft_promise_create(&c.p, &c.pf), 0);
  if (target > P_READ)
    REQUIRE_EQ(write(peer, "x", 1), 1);
  weft_future_t *f;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_points, &c, NULL, &f), 0);
  canceller_t k = {&c, f, 1, -1, 0};
  pthread_t t;
  bool thread = threaded && target < POINTS;
  if (thread)
    REQUIRE_EQ(pthread_create(&t, NULL, cancel_at_target, &k), 0);
  if (target == POINTS)
    REQUIRE_EQ(pthread_create(&t, NULL, settle_at_promise, &c), 0);
  if (target < POINTS && !threaded) {
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (atomic_load(&c.at) < target && weft_clock_now_ns() < end)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    REQUIRE_EQ(atomic_load(&c.at), target);
    do_cancel(&k); /* the fiber is suspended in await `target` */
  }
  run_until_cleanup(loop, &c.cleanups);
  if (thread || target == POINTS)
    pthread_join(t, NULL);
  EXPECT_EQ(c.cleanups, 1);
  for (int i = 0; i < POINTS; i++) {
    if (i < target) {
      EXPECT_ERR(c.rc[i], 0);
      EXPECT_EQ(c.state_after[i], WEFT_FULFILLED);
      continue;
    }
    EXPECT_ERR(c.rc[i], WEFT_ECANCELED);
    EXPECT_TRUE(c.returned_ns[i] - k.at_ns < (int64_t)AT_ONCE_MS * 1000000);
    if (i > target)
      EXPECT_TRUE(c.took_ms[i] < AT_ONCE_MS);
    EXPECT_EQ(c.state_after[i],
              shared && i == target ? WEFT_PENDING : WEFT_CANCELLED);
  }
  if (target == POINTS) {
    EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
    EXPECT_EQ(weft_future_int(f), 99);
  } else {
    EXPECT_ERR(k.rc, 0);
    EXPECT_EQ(k.state_after, WEFT_CANCELLED);        /* at once */
    EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED); /* 99 discarded */
    EXPECT_EQ(weft_future_int(f), 0);
  }
  if (target <= P_PROMISE)
    EXPECT_EQ(weft_promise_is_cancelled(c.p), !(shared && target == P_PROMISE));
  if (c.held != NULL) { /* still pending: nobody else cancelled it */
    EXPECT_EQ(weft_future_state(c.held), WEFT_PENDING);
    EXPECT_ERR(weft_future_cancel(c.held), 0);
    weft_future_release(c.held);
  }
  /* a gated job that started ended by seeing its cancel (it is never
   * released); wait for it before c is reused */
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(&c.job_ended) < atomic_load(&c.job_started) &&
         weft_clock_now_ns() < end)
    sched_yield();
  EXPECT_EQ(atomic_load(&c.job_saw_cancel), atomic_load(&c.job_started));
  if (c.pf != NULL)
    weft_future_release(c.pf);
  weft_promise_release(c.p);
  weft_future_release(f);
}

static void points(bool threaded, int rounds) {
  weft_loop_t *loop = new_loop();
  weft_pool_t *pool = ft_pool(2);
  weft_socket_t *ls, *sock;
  int peer;
  sock = raw_pair(loop, &ls, &peer);
  for (int r = 0; r < rounds; r++)
    for (int target = 0; target <= POINTS; target++)
      for (int shared = 0; shared < (target < POINTS ? 2 : 1); shared++)
        points_round(loop, pool, sock, peer, target, shared, threaded);
  close(peer);
  weft_socket_close(sock);
  weft_socket_close(ls);
  ft_pool_end(pool);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static void test_cancel_each_point_loop_thread(void) { points(false, 5); }
static void test_cancel_each_point_other_thread(void) { points(true, 40); }

/* ================================================================ */
/* Cancel before start                                               */
/* ================================================================ */

static _Atomic int runs, dtors;

static weft_result_t fn_run_count(void *arg) {
  (void)arg;
  atomic_fetch_add(&runs, 1);
  return weft_ok_int(1);
}

/* On a loop: spawned, cancelled before the loop ran it: fn never runs,
 * arg_dtor runs once. */
static void test_cancel_before_start_loop(void) {
  weft_loop_t *loop = new_loop();
  atomic_store(&runs, 0);
  atomic_store(&dtors, 0);
  enum { N = 100 };
  for (int i = 0; i < N; i++) {
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_run_count,
                                (void *)&dtors, ft_count_dtor, &f),
               0);
    EXPECT_ERR(weft_future_cancel(f), 0);
    EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
    weft_future_release(f);
  }
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(&dtors) < N && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  for (int i = 0; i < 10; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_EQ(atomic_load(&dtors), N);
  EXPECT_EQ(atomic_load(&runs), 0);
}

/* On a pool whose one worker is held: the same, then a race: cancel from
 * another thread right after spawn, while the worker is free: fn runs or
 * arg_dtor runs, exactly one of them, once. */
static _Atomic int hold;
static weft_result_t job_hold(weft_job_t *job, void *arg) {
  (void)job, (void)arg;
  ft_wait_at_least(&hold, 1);
  return weft_ok_int(0);
}

static void *cancel_now(void *arg) {
  weft_future_cancel(arg);
  return NULL;
}

static void test_cancel_before_start_pool(void) {
  weft_pool_t *pool = ft_pool(1);
  atomic_store(&runs, 0);
  atomic_store(&dtors, 0);
  atomic_store(&hold, 0);
  weft_future_t *h, *f;
  REQUIRE_EQ(weft_pool_submit(pool, job_hold, NULL, NULL, &h), 0);
  enum { N = 100 };
  for (int i = 0; i < N; i++) {
    REQUIRE_EQ(weft_fiber_spawn(weft_pool_executor(pool), fn_run_count,
                                (void *)&dtors, ft_count_dtor, &f),
               0);
    EXPECT_ERR(weft_future_cancel(f), 0);
    weft_future_release(f);
  }
  atomic_store(&hold, 1);
  EXPECT_ERR(weft_future_await(h, BOUND_MS), 0);
  weft_future_release(h);
  ft_pool_end(pool);
  EXPECT_EQ(atomic_load(&dtors), N);
  EXPECT_EQ(atomic_load(&runs), 0);

  pool = ft_pool(2);
  atomic_store(&runs, 0);
  atomic_store(&dtors, 0);
  enum { RACES = 2000 };
  int cancelled = 0;
  for (int i = 0; i < RACES; i++) {
    REQUIRE_EQ(weft_fiber_spawn(weft_pool_executor(pool), fn_run_count,
                                (void *)&dtors, ft_count_dtor, &f),
               0);
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, cancel_now, f), 0);
    pthread_join(t, NULL);
    EXPECT_ERR(weft_future_await(f, BOUND_MS), 0);
    cancelled += weft_future_state(f) == WEFT_CANCELLED;
    weft_future_release(f);
  }
  ft_pool_end(pool);
  EXPECT_EQ(atomic_load(&runs) + atomic_load(&dtors), RACES);
  EXPECT_TRUE(atomic_load(&dtors) <= cancelled);
  printf("\n    %d of %d cancelled, %d before they started ", cancelled, RACES,
         atomic_load(&dtors));
}

static weft_result_t then_hold_thread(void *arg, weft_future_t *src) {
  (void)arg, (void)src;
  ft_wait_at_least(&hold, 1);
  return weft_ok_int(0);
}

/* On a thread executor: the same as on the loop. */
static void test_cancel_before_start_thread(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  atomic_store(&runs, 0);
  atomic_store(&dtors, 0);
  atomic_store(&hold, 0);
  weft_promise_t *p;
  weft_future_t *s, *g, *f;
  REQUIRE_EQ(weft_promise_create(&p, &s), 0);
  weft_promise_fulfil_int(p, 0);
  /* hold the thread so that the fibers wait in its queue */
  REQUIRE_EQ(weft_future_then(s, ex, then_hold_thread, NULL, NULL, &g), 0);
  enum { N = 100 };
  for (int i = 0; i < N; i++) {
    REQUIRE_EQ(weft_fiber_spawn(ex, fn_run_count, (void *)&dtors, ft_count_dtor,
                                &f),
               0);
    EXPECT_ERR(weft_future_cancel(f), 0);
    weft_future_release(f);
  }
  atomic_store(&hold, 1);
  EXPECT_ERR(weft_thread_executor_shutdown(te), 0);
  EXPECT_EQ(atomic_load(&dtors), N);
  EXPECT_EQ(atomic_load(&runs), 0);
  weft_future_release(g);
  weft_future_release(s);
  weft_promise_release(p);
}

/* ================================================================ */
/* Cancel racing with the settle of what the fiber awaits            */
/* ================================================================ */

typedef struct race {
  weft_promise_t *p;
  weft_future_t *f;
  _Atomic int at, cleanups;
  tu_rounds_t meet;
  int rc, f_state, fulfil_rc;
} race_t;

static weft_result_t fn_await_promise(void *arg) {
  race_t *r = arg;
  atomic_store(&r->at, 1);
  r->rc = weft_future_await(r->f, WEFT_FOREVER);
  r->f_state = weft_future_state(r->f);
  weft_future_release(r->f);
  atomic_fetch_add(&r->cleanups, 1);
  return weft_ok_int(1);
}

static void *fulfil_side(void *arg) {
  race_t *r = arg;
  tu_meet(&r->meet, 1, 1);
  r->fulfil_rc = weft_promise_fulfil_int(r->p, 3);
  return NULL;
}

/* A pool fiber awaits a promise (its handle the only one); one thread
 * fulfils the promise while another cancels the fiber. Whoever wins, the
 * fiber's cleanup runs once and the outcomes agree: the await saw the
 * value or WEFT_ECANCELED, the promise was cancelled only if the await
 * was, and the fiber's future is cancelled exactly when the cancel said
 * so. */
static void test_cancel_races_settle(void) {
  weft_pool_t *pool = ft_pool(2);
  enum { ROUNDS = FT_TSAN ? 500 : 2000 };
  int saw_value = 0, saw_cancel = 0, bad = 0;
  for (int i = 0; i < ROUNDS; i++) {
    static race_t r;
    memset(&r, 0, sizeof r);
    weft_future_t *fiber;
    REQUIRE_EQ(weft_promise_create(&r.p, &r.f), 0);
    REQUIRE_EQ(weft_fiber_spawn(weft_pool_executor(pool), fn_await_promise, &r,
                                NULL, &fiber),
               0);
    REQUIRE_EQ(ft_wait_at_least(&r.at, 1), 1);
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, fulfil_side, &r), 0);
    tu_meet(&r.meet, 1, 0);
    int crc = weft_future_cancel(fiber);
    pthread_join(t, NULL);
    REQUIRE_EQ(ft_wait_at_least(&r.cleanups, 1), 1);
    EXPECT_ERR(weft_future_await(fiber, BOUND_MS), 0);
    int fstate = weft_future_state(fiber);
    bool ok = atomic_load(&r.cleanups) == 1 &&
              (crc == 0 ? fstate == WEFT_CANCELLED
                        : crc == WEFT_EALREADY && fstate == WEFT_FULFILLED);
    if (r.rc == 0)
      ok = ok && r.f_state == WEFT_FULFILLED && r.fulfil_rc == 0;
    else
      ok = ok && r.rc == WEFT_ECANCELED && crc == 0 &&
           (r.f_state == WEFT_CANCELLED) == (r.fulfil_rc == WEFT_ECANCELED);
    if (!ok && bad++ < 5)
      printf("\n    round %d: cancel %s, await %s, promise %d, fulfil %s, "
             "fiber %d",
             i, weft_error_name(crc), weft_error_name(r.rc), r.f_state,
             weft_error_name(r.fulfil_rc), fstate);
    saw_value += r.rc == 0;
    saw_cancel += r.rc == WEFT_ECANCELED;
    weft_future_release(fiber);
    weft_promise_release(r.p);
  }
  ft_pool_end(pool);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(saw_value + saw_cancel, ROUNDS);
  printf("\n    the await saw the value %d times, the cancel %d times ",
         saw_value, saw_cancel);
}

/* ================================================================ */
/* weft_fiber_is_cancelled in a CPU loop; what comes after a cancel  */
/* ================================================================ */

typedef struct spin {
  _Atomic int started, cleanups;
  long iterations;
  int yield_rc, settled_rc, cancelled_before;
} spin_t;

static weft_result_t fn_spin(void *arg) {
  spin_t *s = arg;
  s->cancelled_before = weft_fiber_is_cancelled();
  atomic_store(&s->started, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (!weft_fiber_is_cancelled() && weft_clock_now_ns() < end)
    s->iterations++;
  s->yield_rc = weft_fiber_yield();
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 1);
  s->settled_rc = weft_future_await(f, 0); /* even a settled one */
  weft_future_release(f);
  weft_promise_release(p);
  atomic_fetch_add(&s->cleanups, 1);
  return weft_ok_int(0);
}

static void test_cancel_cpu_loop(void) {
  weft_pool_t *pool = ft_pool(2);
  for (int i = 0; i < 200; i++) {
    static spin_t s;
    memset(&s, 0, sizeof s);
    weft_future_t *f;
    REQUIRE_EQ(
        weft_fiber_spawn(weft_pool_executor(pool), fn_spin, &s, NULL, &f), 0);
    REQUIRE_EQ(ft_wait_at_least(&s.started, 1), 1);
    EXPECT_ERR(weft_future_cancel(f), 0);
    REQUIRE_EQ(ft_wait_at_least(&s.cleanups, 1), 1);
    EXPECT_EQ(s.cancelled_before, 0);
    EXPECT_ERR(s.yield_rc, WEFT_ECANCELED);
    EXPECT_ERR(s.settled_rc, WEFT_ECANCELED);
    EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
    weft_future_release(f);
  }
  ft_pool_end(pool);
}

typedef struct self {
  weft_future_t *self;
  weft_loop_t *loop;
  int cancel_rc, cancelled, await_rc, posted, posted_at_yield, yield_rc;
  int64_t took_ms;
  bool promise_cancelled;
} self_t;

static void posted_inc(weft_loop_t *loop, void *arg, int status) {
  (void)loop, (void)status;
  (*(int *)arg)++;
}

/* A fiber cancels its own future: is_cancelled turns true, a yield does
 * not yield, a timed await (alarm armed) returns at once and cancels
 * what it awaited. */
static weft_result_t fn_cancel_self(void *arg) {
  self_t *s = arg;
  s->cancel_rc = weft_future_cancel(s->self);
  s->cancelled = weft_fiber_is_cancelled();
  weft_loop_post(s->loop, posted_inc, &s->posted);
  s->yield_rc = weft_fiber_yield();
  s->posted_at_yield = s->posted;
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  int64_t t0 = weft_clock_now_ns();
  s->await_rc = weft_future_await(f, LONG_MS);
  s->took_ms = ft_ms_since(t0);
  s->promise_cancelled = weft_promise_is_cancelled(p);
  weft_future_release(f);
  weft_promise_release(p);
  return weft_ok_int(1);
}

static void test_cancel_self(void) {
  weft_loop_t *loop = new_loop();
  self_t s = {.loop = loop};
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_cancel_self, &s,
                              NULL, &f),
             0);
  s.self = f;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (s.posted == 0 && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_ERR(s.cancel_rc, 0);
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_ERR(s.yield_rc, WEFT_ECANCELED);
  EXPECT_EQ(s.posted_at_yield, 0);
  EXPECT_ERR(s.await_rc, WEFT_ECANCELED);
  EXPECT_TRUE(s.took_ms < AT_ONCE_MS);
  EXPECT_TRUE(s.promise_cancelled);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* A fiber waiting with a timeout (its alarm armed) is cancelled from the
 * loop thread: the await ends at once with WEFT_ECANCELED, and what it
 * awaited is cancelled when the fiber's handle was its only one. */
typedef struct timed {
  weft_promise_t *p;
  weft_future_t *f;
  _Atomic int at;
  int rc, cleanups;
} timed_t;

static weft_result_t fn_timed(void *arg) {
  timed_t *t = arg;
  weft_future_t *mine = t->f; /* the test gave the fiber a handle */
  atomic_store(&t->at, 1);
  t->rc = weft_future_await(mine, LONG_MS);
  weft_future_release(mine);
  t->cleanups++;
  return weft_ok_int(0);
}

static weft_result_t then_nothing(void *arg, weft_future_t *src) {
  (void)arg, (void)src;
  return weft_ok_int(0);
}

/* Who else needs the awaited future: 0 nobody (it is cancelled with the
 * fiber), 1 a handle of the test's, 2 a pending then, 3 a combinator the
 * test holds (none of those three: it stays pending). */
static void test_cancel_timed_await(void) {
  weft_loop_t *loop = new_loop();
  for (int i = 0; i < 80; i++) {
    int other = i % 4;
    timed_t t = {0};
    REQUIRE_EQ(weft_promise_create(&t.p, &t.f), 0);
    weft_future_t *keep = NULL, *g = NULL;
    if (other == 1) {
      weft_future_retain(t.f);
      keep = t.f;
    } else if (other == 2) {
      REQUIRE_EQ(weft_future_then(t.f, weft_loop_executor(loop), then_nothing,
                                  NULL, NULL, &g),
                 0);
    } else if (other == 3) {
      REQUIRE_EQ(weft_future_all(&t.f, 1, &g), 0);
    }
    weft_future_t *f;
    REQUIRE_EQ(
        weft_fiber_spawn(weft_loop_executor(loop), fn_timed, &t, NULL, &f), 0);
    while (atomic_load(&t.at) == 0)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    int64_t t0 = weft_clock_now_ns();
    EXPECT_ERR(weft_future_cancel(f), 0);
    run_until_cleanup(loop, &t.cleanups);
    EXPECT_TRUE(ft_ms_since(t0) < AT_ONCE_MS);
    EXPECT_EQ(t.cleanups, 1);
    EXPECT_ERR(t.rc, WEFT_ECANCELED);
    EXPECT_EQ(weft_promise_is_cancelled(t.p), other == 0);
    weft_future_release(f);
    if (keep != NULL)
      weft_future_release(keep);
    if (g != NULL) {
      weft_future_cancel(g);
      weft_future_release(g);
    }
    weft_promise_release(t.p);
  }
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* A fiber cancelled in await_first / await_all: WEFT_ECANCELED at once,
 * and none of the inputs (borrowed, the test's) is cancelled. */
typedef struct many {
  weft_future_t *in[2];
  _Atomic int at;
  int rc_first, rc_all, cleanups;
  size_t idx;
} many_t;

static weft_result_t fn_many_cancelled(void *arg) {
  many_t *m = arg;
  atomic_store(&m->at, 1);
  m->rc_first = weft_future_await_first(m->in, 2, WEFT_FOREVER, &m->idx);
  m->rc_all = weft_future_await_all(m->in, 2, WEFT_FOREVER);
  m->cleanups++;
  return weft_ok_int(0);
}

static void test_cancel_in_await_many(void) {
  weft_loop_t *loop = new_loop();
  for (int i = 0; i < 50; i++) {
    many_t m = {.idx = 77};
    weft_promise_t *p[2];
    for (int k = 0; k < 2; k++)
      REQUIRE_EQ(weft_promise_create(&p[k], &m.in[k]), 0);
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_many_cancelled, &m,
                                NULL, &f),
               0);
    while (atomic_load(&m.at) == 0)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    EXPECT_ERR(weft_future_cancel(f), 0);
    run_until_cleanup(loop, &m.cleanups);
    EXPECT_EQ(m.cleanups, 1);
    EXPECT_ERR(m.rc_first, WEFT_ECANCELED);
    EXPECT_EQ(m.idx, 77);
    EXPECT_ERR(m.rc_all, WEFT_ECANCELED);
    for (int k = 0; k < 2; k++) {
      EXPECT_TRUE(!weft_promise_is_cancelled(p[k]));
      weft_future_release(m.in[k]);
      weft_promise_release(p[k]);
    }
    weft_future_release(f);
  }
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* The executor is gone while a fiber waits                          */
/* ================================================================ */

typedef struct gone {
  weft_future_t *f;
  int rc, err, cleanups;
  pthread_t after;
} gone_t;

static weft_result_t fn_wait_gone(void *arg) {
  gone_t *g = arg;
  g->rc = weft_future_await(g->f, WEFT_FOREVER);
  g->err = weft_future_error(g->f);
  g->after = ft_self();
  g->cleanups++;
  return weft_ok_int(1);
}

/* Closing a loop cancels its sleeps: a fiber waiting on one resumes
 * inside weft_loop_close(), sees the sleep cancelled and settles. */
static void test_loop_close_resumes_fiber(void) {
  weft_loop_t *loop = new_loop();
  gone_t g = {0};
  REQUIRE_EQ(weft_loop_sleep(loop, LONG_MS, &g.f), 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_wait_gone, &g, NULL,
                              &f),
             0);
  for (int i = 0; i < 3; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(g.cleanups, 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_EQ(g.cleanups, 1);
  EXPECT_ERR(g.rc, 0);
  EXPECT_ERR(g.err, WEFT_ECANCELED);
  EXPECT_TRUE(pthread_equal(g.after, ft_self()));
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_future_release(f);
  weft_future_release(g.f);
}

/* Fulfil the promise from a thread started after the shutdown (glibc
 * hands it the joined executor thread's id): it must be no executor's. */
typedef struct late_waker {
  weft_promise_t *p;
  pthread_t self;
} late_waker_t;

static void *late_wake(void *arg) {
  late_waker_t *w = arg;
  w->self = pthread_self();
  weft_promise_fulfil_int(w->p, 4);
  return NULL;
}

/* A fiber waits on a promise; its executor goes (kind 0: loop closed, 1:
 * pool shut down, 2 and 3: thread executor shut down); then this thread
 * (kind 3: a thread started after the shutdown) fulfils the promise: the
 * fiber resumes on the fulfilling thread, cleans up and settles.
 * Returns 0 when all of that held, else says what did not on stderr. */
static int gone_run(int kind) {
  weft_loop_t *loop = NULL;
  weft_pool_t *pool = NULL;
  weft_thread_executor_t *te = NULL;
  weft_executor_t *ex;
  if (kind == 0 && weft_loop_create(NULL, &loop) == 0)
    ex = weft_loop_executor(loop);
  else if (kind == 1 && weft_pool_create(NULL, &pool) == 0)
    ex = weft_pool_executor(pool);
  else if ((kind == 2 || kind == 3) && weft_thread_executor_create(&te) == 0)
    ex = weft_thread_executor_get(te);
  else
    return 10;
  gone_t g = {0};
  weft_promise_t *p;
  weft_future_t *f;
  if (weft_promise_create(&p, &g.f) != 0)
    return 11;
  if (weft_fiber_spawn(ex, fn_wait_gone, &g, NULL, &f) != 0)
    return 12;
  /* it reaches its await: the loop runs its start; a shutdown runs every
   * queued task (its start) first */
  if (loop != NULL) {
    for (int i = 0; i < 3; i++)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    weft_loop_close(loop);
  } else if (pool != NULL) {
    weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL);
  } else {
    weft_thread_executor_shutdown(te);
  }
  int bad = 0;
  if (g.cleanups != 0) {
    fprintf(stderr, "kind %d: the fiber ended before its promise settled\n",
            kind);
    bad = 13;
  }
  pthread_t waker = ft_self();
  if (kind == 3) {
    late_waker_t w = {p, waker};
    pthread_t t;
    if (pthread_create(&t, NULL, late_wake, &w) != 0)
      return 15;
    pthread_join(t, NULL);
    waker = w.self;
  } else {
    weft_promise_fulfil_int(p, 4);
  }
  if (g.cleanups != 1 || g.rc != 0 || g.err != 0 ||
      !pthread_equal(g.after, waker) ||
      weft_future_state(f) != WEFT_FULFILLED) {
    fprintf(stderr,
            "kind %d: cleanups %d, await %s, outcome %s, on this thread %d, "
            "fiber state %d\n",
            kind, g.cleanups, weft_error_name(g.rc), weft_error_name(g.err),
            pthread_equal(g.after, waker) != 0, weft_future_state(f));
    bad = 14;
  }
  weft_future_release(f);
  weft_future_release(g.f);
  weft_promise_release(p);
  return bad;
}

/* In a child, so that a use after free there does not take the suite down
 * (TSan: in the process; it refuses threads started after a fork and
 * reports the alarm thread's reset in a forked child). */
static void gone_child(void *arg) {
  int rc = gone_run(*(int *)arg);
  fflush(stderr);
  _exit(rc);
}

static void expect_gone(int kind) {
  if (FT_TSAN) {
    EXPECT_EQ(gone_run(kind), 0);
    return;
  }
  static char out[1 << 15];
  int st = ft_child(gone_child, &kind, out, sizeof out);
  bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (!ok)
    fprintf(stderr, "\n--- child (executor kind %d) status %#x ---\n%.3000s\n",
            kind, st, out);
  EXPECT_TRUE(ok);
}

static void test_executor_gone_resumes_on_waker(void) {
  for (int kind = 0; kind < 4; kind++)
    expect_gone(kind);
}

static const test_case_t cases[] = {
    {"each await point, cancelled on the loop thread",
     test_cancel_each_point_loop_thread},
    {"each await point, cancelled from another thread",
     test_cancel_each_point_other_thread},
    {"before start on a loop: fn never runs, arg_dtor once",
     test_cancel_before_start_loop},
    {"before start on a pool; cancel racing the start",
     test_cancel_before_start_pool},
    {"before start on a thread executor", test_cancel_before_start_thread},
    {"cancel races the settle of the awaited future", test_cancel_races_settle},
    {"CPU loop polls is_cancelled; later yield and await",
     test_cancel_cpu_loop},
    {"a fiber cancels itself", test_cancel_self},
    {"a timed await is cancelled at once; who else needs its future",
     test_cancel_timed_await},
    {"cancelled in await_first / await_all: inputs untouched",
     test_cancel_in_await_many},
    {"loop close resumes a fiber waiting on a sleep",
     test_loop_close_resumes_fiber},
    {"executor gone: the fiber resumes on the waking thread",
     test_executor_gone_resumes_on_waker},
    {NULL, NULL}};

const test_suite_t suite_fiber_cancel = {"fiber_cancel", cases};
