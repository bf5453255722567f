/* SPDX-License-Identifier: MIT */
/* tests/test_runtime.c: weft_runtime_*: sizing, the loop thread, fibers that
 * offload and come back, graceful shutdown within and past its grace
 * period, misuse, and every allocation failing. */
#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static weft_result_t square(weft_job_t *job, void *arg) {
  (void)job;
  intptr_t v = (intptr_t)arg;
  return weft_ok_int(v * v);
}

typedef struct {
  weft_runtime_t *rt;
  pthread_t loop_thread;
  int on_loop, back_on_loop;
} main_ctx_t;

/* The main fiber: offload, come back to the loop, sleep on the loop. */
static weft_result_t main_fiber(void *arg) {
  main_ctx_t *m = arg;
  m->on_loop = pthread_equal(pthread_self(), m->loop_thread) &&
               weft_runtime_current() == m->rt;
  weft_future_t *f;
  intptr_t sum = 0;
  for (intptr_t i = 1; i <= 10; i++) {
    if (weft_pool_submit(weft_runtime_pool(m->rt), square, (void *)i, NULL,
                         &f) != 0)
      return weft_err(WEFT_ENOMEM);
    sum += tu_await_int(f);
  }
  m->back_on_loop = pthread_equal(pthread_self(), m->loop_thread);
  if (weft_loop_sleep(weft_runtime_loop(m->rt), 5, &f) != 0 ||
      tu_await_int(f) != 0)
    return weft_err(WEFT_EIO);
  return weft_ok_int(sum);
}

static void *current_elsewhere(void *arg) {
  *(weft_runtime_t **)arg = weft_runtime_current();
  return NULL;
}

static void test_run_main_fiber(void) {
  main_ctx_t m = {.loop_thread = pthread_self()};
  REQUIRE_EQ(weft_runtime_create(NULL, &m.rt), 0);
  EXPECT_TRUE(weft_runtime_current() == m.rt);
  EXPECT_TRUE(weft_loop_current() == weft_runtime_loop(m.rt));
  weft_runtime_t *other = m.rt;
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, current_elsewhere, &other), 0);
  pthread_join(t, NULL);
  EXPECT_TRUE(other == NULL);
  /* one CPU left to the loop thread */
  weft_pool_stats_t st;
  REQUIRE_EQ(weft_pool_stats(weft_runtime_pool(m.rt), &st), 0);
  unsigned cpus = weft_cpu_count();
  EXPECT_EQ(st.threads, cpus > 1 ? cpus - 1 : 1);
  weft_future_t *done;
  REQUIRE_EQ(weft_runtime_spawn(m.rt, NULL, main_fiber, &m, NULL, &done), 0);
  EXPECT_EQ(weft_runtime_run(m.rt, done, BOUND_MS), 0);
  EXPECT_EQ(weft_future_error(done), 0);
  EXPECT_EQ(weft_future_int(done), 385);
  EXPECT_TRUE(m.on_loop);
  EXPECT_TRUE(m.back_on_loop);
  weft_future_release(done);
  EXPECT_EQ(weft_runtime_shutdown(m.rt, 1000), 0);
  EXPECT_TRUE(weft_runtime_current() == NULL);
  EXPECT_TRUE(weft_loop_current() == NULL);
}

/* ---- shutdown ---- */

typedef struct {
  weft_runtime_t *rt;
  int64_t sleep_ms;
  _Atomic int finished, cancelled, refused;
} crowd_t;

/* Sleeps, then counts how its await ended; tries a spawn when woken. */
static weft_result_t sleeper(void *arg) {
  crowd_t *c = arg;
  weft_future_t *f;
  if (weft_loop_sleep(weft_runtime_loop(c->rt), c->sleep_ms, &f) != 0)
    return weft_err(WEFT_ENOMEM);
  intptr_t r = tu_await_int(f);
  if (r == 0)
    atomic_fetch_add(&c->finished, 1);
  else if (r == WEFT_ECANCELED)
    atomic_fetch_add(&c->cancelled, 1);
  /* shutdown has begun by now: spawns are refused */
  if (weft_runtime_spawn(c->rt, NULL, sleeper, c, NULL, NULL) == WEFT_ESHUTDOWN)
    atomic_fetch_add(&c->refused, 1);
  return weft_ok_int(0);
}

/* Every fiber ends within the grace period: they all finish, none is
 * cancelled, and shutdown returns 0. */
static void test_shutdown_within_grace(void) {
  crowd_t c = {.sleep_ms = 20};
  REQUIRE_EQ(weft_runtime_create(NULL, &c.rt), 0);
  for (int i = 0; i < 500; i++)
    REQUIRE_EQ(weft_runtime_spawn(c.rt, NULL, sleeper, &c, NULL, NULL), 0);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_EQ(weft_runtime_shutdown(c.rt, BOUND_MS), 0);
  EXPECT_TRUE(weft_clock_now_ns() - t0 >= 20 * 1000000LL);
  EXPECT_EQ(atomic_load(&c.finished), 500);
  EXPECT_EQ(atomic_load(&c.cancelled), 0);
  EXPECT_EQ(atomic_load(&c.refused), 500);
}

/* Past the grace period the rest are cancelled: their awaits return
 * WEFT_ECANCELED, shutdown returns WEFT_ETIMEDOUT, and it took about the
 * grace period, not the sleeps' length. */
static void test_shutdown_past_grace(void) {
  crowd_t c = {.sleep_ms = 60 * 1000};
  REQUIRE_EQ(weft_runtime_create(NULL, &c.rt), 0);
  for (int i = 0; i < 100; i++)
    REQUIRE_EQ(weft_runtime_spawn(c.rt, NULL, sleeper, &c, NULL, NULL), 0);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_ERR(weft_runtime_shutdown(c.rt, 50), WEFT_ETIMEDOUT);
  int64_t took = weft_clock_now_ns() - t0;
  EXPECT_TRUE(took >= 50 * 1000000LL);
  EXPECT_TRUE(took < (int64_t)BOUND_MS * 1000000LL);
  EXPECT_EQ(atomic_load(&c.finished), 0);
  EXPECT_EQ(atomic_load(&c.cancelled), 100);
  EXPECT_EQ(atomic_load(&c.refused), 100);
}

static weft_result_t spin_job(weft_job_t *job, void *arg) {
  (void)arg;
  while (!weft_job_is_cancelled(job))
    sched_yield();
  return weft_ok_int(0);
}

/* A pool job that runs past the grace period is told to stop. */
static void test_shutdown_cancels_jobs(void) {
  weft_runtime_t *rt;
  REQUIRE_EQ(weft_runtime_create(NULL, &rt), 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_pool_submit(weft_runtime_pool(rt), spin_job, NULL, NULL, &f),
             0);
  EXPECT_ERR(weft_runtime_shutdown(rt, 20), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
}

/* ---- misuse ---- */

typedef struct {
  weft_runtime_t *rt;
  int rc;
} call_t;

static void *shutdown_elsewhere(void *arg) {
  call_t *c = arg;
  c->rc = weft_runtime_shutdown(c->rt, 0);
  return NULL;
}

static weft_result_t shutdown_inside(void *arg) {
  call_t *c = arg;
  c->rc = weft_runtime_shutdown(c->rt, 0);
  return weft_ok_int(0);
}

/* The loop's blocking work (a name lookup) runs on the pool's blocking
 * threads, and so does it when the caller brings loop options of the first
 * version's size. */
static void test_blocking_on_pool(void) {
  weft_loop_options_t lo = {.size = offsetof(weft_loop_options_t, blocking)};
  const weft_runtime_options_t with = {.size = sizeof with, .loop = &lo};
  const weft_runtime_options_t *opts[] = {NULL, &with};
  for (size_t i = 0; i < 2; i++) {
    weft_runtime_t *rt = NULL;
    REQUIRE_EQ(weft_runtime_create(opts[i], &rt), 0);
    weft_pool_stats_t st;
    weft_pool_stats(weft_runtime_pool(rt), &st);
    uint64_t before = st.blocking_run;
    weft_future_t *f = NULL;
    REQUIRE_EQ(weft_dns_resolve(weft_runtime_loop(rt), "127.0.0.1", "80", NULL,
                                &f),
               0);
    EXPECT_EQ(weft_runtime_run(rt, f, BOUND_MS), 0);
    EXPECT_EQ(weft_future_error(f), 0);
    weft_future_release(f);
    /* the task counts once its function has returned, which may be just
     * after the loop saw the result */
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    do
      weft_pool_stats(weft_runtime_pool(rt), &st);
    while (st.blocking_run == before && weft_clock_now_ns() < end &&
           sched_yield() == 0);
    EXPECT_TRUE(st.blocking_run > before);
    EXPECT_EQ(weft_runtime_shutdown(rt, BOUND_MS), 0);
  }
}

/* Shutdown with a file left open and a lookup just started, no grace:
 * the pool runs the queued lookup, the loop closes the file; nothing
 * leaks (the sanitizer builds check). */
static void test_shutdown_with_blocking_work(void) {
  char path[] = "/tmp/weft-runtime-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE_EQ(fd >= 0, 1);
  close(fd);
  weft_runtime_t *rt = NULL;
  REQUIRE_EQ(weft_runtime_create(NULL, &rt), 0);
  weft_loop_t *loop = weft_runtime_loop(rt);
  weft_future_t *f = NULL, *g = NULL;
  REQUIRE_EQ(weft_file_open(loop, path, O_RDWR, 0, &f), 0);
  EXPECT_EQ(weft_runtime_run(rt, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_error(f), 0);
  REQUIRE_EQ(weft_dns_resolve(loop, "127.0.0.1", "80", NULL, &g), 0);
  int rc = weft_runtime_shutdown(rt, 0);
  EXPECT_TRUE(rc == 0 || rc == WEFT_ETIMEDOUT);
  EXPECT_TRUE(weft_future_state(g) != WEFT_PENDING);
  weft_future_release(f);
  weft_future_release(g);
  unlink(path);
}

static void test_misuse(void) {
  weft_runtime_t *rt = NULL;
  weft_runtime_options_t o = {.size = sizeof o};
  EXPECT_ERR(weft_runtime_create(NULL, NULL), WEFT_EINVAL);
  o.size = 3;
  EXPECT_ERR(weft_runtime_create(&o, &rt), WEFT_EINVAL);
  o.size = sizeof o;
  o.reserved[1] = &o;
  EXPECT_ERR(weft_runtime_create(&o, &rt), WEFT_ENOTSUP);
  o.reserved[1] = NULL;
  o.cpu_threads = 5000;
  EXPECT_ERR(weft_runtime_create(&o, &rt), WEFT_EINVAL);
  EXPECT_TRUE(rt == NULL);
  o.cpu_threads = 1;
  REQUIRE_EQ(weft_runtime_create(&o, &rt), 0);
  weft_runtime_t *second = NULL;
  EXPECT_ERR(weft_runtime_create(NULL, &second), WEFT_EBUSY); /* one loop */
  EXPECT_TRUE(second == NULL);
  EXPECT_TRUE(weft_runtime_loop(NULL) == NULL);
  EXPECT_TRUE(weft_runtime_pool(NULL) == NULL);
  EXPECT_ERR(weft_runtime_spawn(NULL, NULL, shutdown_inside, NULL, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_runtime_spawn(rt, NULL, NULL, NULL, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_runtime_run(NULL, NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_runtime_shutdown(NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_runtime_shutdown(rt, -2), WEFT_EINVAL);
  /* from another thread, and from inside one of its fibers: refused */
  call_t c = {rt, 0};
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, shutdown_elsewhere, &c), 0);
  pthread_join(t, NULL);
  EXPECT_ERR(c.rc, WEFT_EPERM);
  weft_future_t *f;
  REQUIRE_EQ(weft_runtime_spawn(rt, NULL, shutdown_inside, &c, NULL, &f), 0);
  EXPECT_EQ(weft_runtime_run(rt, f, BOUND_MS), 0);
  EXPECT_ERR(c.rc, WEFT_EBUSY);
  weft_future_release(f);
  EXPECT_EQ(weft_runtime_shutdown(rt, 0), 0);
}

/* Every allocation of create, spawn and shutdown failing in turn: each
 * call reports it, and nothing is left allocated or running. */
static void test_no_memory(void) {
  int done = 0;
  for (long n = 1; n < 400 && !done; n++) {
    tu_alloc_install(n);
    weft_runtime_t *rt;
    int rc = weft_runtime_create(NULL, &rt);
    if (rc == 0) {
      weft_future_t *f;
      crowd_t c = {.rt = rt, .sleep_ms = 1};
      rc = weft_runtime_spawn(rt, NULL, sleeper, &c, NULL, &f);
      if (rc == 0) {
        weft_runtime_run(rt, f, BOUND_MS);
        weft_future_release(f);
      } else {
        EXPECT_ERR(rc, WEFT_ENOMEM);
      }
      weft_runtime_shutdown(rt, BOUND_MS);
      done = rc == 0 && tu_alloc_count() < n;
    } else {
      EXPECT_TRUE(rc == WEFT_ENOMEM || rc == WEFT_EAGAIN);
    }
    weft_allocator_trim();
    EXPECT_EQ(tu_alloc_live(), 0);
    tu_alloc_restore();
  }
  EXPECT_TRUE(done);
}

static const test_case_t cases[] = {
    {"shutdown with blocking work", test_shutdown_with_blocking_work},
    {"blocking work on the pool", test_blocking_on_pool},
    {"main fiber offloads and comes back", test_run_main_fiber},
    {"shutdown: every fiber ends within the grace period",
     test_shutdown_within_grace},
    {"shutdown: past the grace period the rest are cancelled",
     test_shutdown_past_grace},
    {"shutdown: a job past the grace period is told",
     test_shutdown_cancels_jobs},
    {"misuse", test_misuse},
    {"every allocation failing", test_no_memory},
    {NULL, NULL}};
const test_suite_t suite_runtime = {"runtime", cases};
