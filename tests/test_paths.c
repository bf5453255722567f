/* SPDX-License-Identifier: MIT */
/* tests/test_paths.c: the rarely taken paths the other suites leave
 * alone, each with its documented outcome: a pool shut down from its own
 * threads, a drain that runs out of time with blocking jobs running and
 * queued, an await in a job that times out, a job that returns
 * weft_follow(), a thread that cannot be started (through the fault seam,
 * lib/testing.h), each create failing on every allocation in turn (through
 * a failing allocator), and the allocator's copy when a block grows. */
#include "testutil.h"

#include "internal.h" /* the fault seam (lib/testing.h) */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t deadline_in_s(int s) {
  return weft_clock_now_ns() + (int64_t)s * 1000000000;
}

/* ---- a pool shut down from its own threads ---- */

static weft_pool_t *g_pool;

static weft_result_t job_shutdown_self(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  return weft_ok_int(weft_pool_shutdown(g_pool, WEFT_POOL_DRAIN, -1, NULL));
}

static void test_shutdown_from_own_threads(void) {
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 1;
  REQUIRE_EQ(weft_pool_create(&o, &g_pool), 0);
  weft_future_t *a, *b;
  REQUIRE_EQ(weft_pool_submit(g_pool, job_shutdown_self, NULL, NULL, &a), 0);
  REQUIRE_EQ(
      weft_pool_submit_blocking(g_pool, job_shutdown_self, NULL, NULL, &b), 0);
  EXPECT_ERR(weft_future_await(a, 10000), 0);
  EXPECT_ERR(weft_future_await(b, 10000), 0);
  EXPECT_ERR(weft_future_int(a), WEFT_EDEADLK);
  EXPECT_ERR(weft_future_int(b), WEFT_EDEADLK);
  weft_future_release(a);
  weft_future_release(b);
  EXPECT_ERR(weft_pool_shutdown(g_pool, WEFT_POOL_DRAIN, -1, NULL), 0);
}

/* ---- jobs: weft_follow() is refused, an await times out ---- */

static weft_result_t job_follow(weft_job_t *job, void *arg) {
  (void)job;
  return weft_follow(arg);
}

static weft_result_t job_await_never(weft_job_t *job, void *arg) {
  (void)job;
  return weft_ok_int(weft_future_await(arg, 20));
}

static void test_job_follow_and_await_timeout(void) {
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(NULL, &pool), 0);
  weft_promise_t *p;
  weft_future_t *f, *a, *b;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  /* The job's weft_follow() hands weft a handle: give it one. */
  REQUIRE_EQ(weft_future_retain(f), 0);
  REQUIRE_EQ(weft_pool_submit(pool, job_follow, f, NULL, &a), 0);
  REQUIRE_EQ(weft_pool_submit(pool, job_await_never, f, NULL, &b), 0);
  EXPECT_ERR(weft_future_await(a, 10000), 0);
  EXPECT_ERR(weft_future_error(a), WEFT_ENOTSUP);
  EXPECT_ERR(weft_future_await(b, 10000), 0);
  EXPECT_ERR(weft_future_int(b), WEFT_ETIMEDOUT);
  /* f was not cancelled by the job giving its handle back. */
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  weft_future_release(a);
  weft_future_release(b);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_error(f), WEFT_EBROKEN);
  weft_future_release(f);
}

/* ---- a drain that runs out of time ---- */

static _Atomic int ran_until_cancelled, dtor_runs, fn_runs;

static weft_result_t job_until_cancelled(weft_job_t *job, void *arg) {
  (void)arg;
  atomic_fetch_add(&fn_runs, 1);
  int64_t end = deadline_in_s(10);
  while (weft_job_is_cancelled(job) != 1 && weft_clock_now_ns() < end)
    sched_yield();
  atomic_fetch_add(&ran_until_cancelled, weft_job_is_cancelled(job) == 1);
  return weft_ok_int(1);
}

static void count_dtor(void *arg) {
  (void)arg;
  atomic_fetch_add(&dtor_runs, 1);
}

static void test_drain_timeout_with_blocking_jobs(void) {
  atomic_store(&ran_until_cancelled, 0);
  atomic_store(&dtor_runs, 0);
  atomic_store(&fn_runs, 0);
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 1;
  o.blocking_max = 1;
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_future_t *a, *b;
  REQUIRE_EQ(weft_pool_submit_blocking(pool, job_until_cancelled, NULL,
                                       count_dtor, &a),
             0);
  /* Wait until the one blocking thread runs it, so the next one queues. */
  int64_t end = deadline_in_s(10);
  while (atomic_load(&fn_runs) == 0 && weft_clock_now_ns() < end)
    sched_yield();
  REQUIRE_EQ(atomic_load(&fn_runs), 1);
  REQUIRE_EQ(weft_pool_submit_blocking(pool, job_until_cancelled, NULL,
                                       count_dtor, &b),
             0);
  weft_pool_stats_t st;
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, 30, &st),
             WEFT_ETIMEDOUT);
  EXPECT_EQ(atomic_load(&ran_until_cancelled), 1);
  EXPECT_EQ(atomic_load(&fn_runs), 1);   /* b never ran ... */
  EXPECT_EQ(atomic_load(&dtor_runs), 1); /* ... its arg_dtor ran instead */
  EXPECT_EQ(weft_future_state(a), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(b), WEFT_CANCELLED);
  EXPECT_EQ(st.blocking_peak, 1);
  weft_future_release(a);
  weft_future_release(b);
}

/* A job running while a drain goes on may still spawn CPU jobs, but a
 * blocking submit is refused: shutdown has begun. */
static weft_result_t job_submit_blocking_until_refused(weft_job_t *job,
                                                       void *arg) {
  (void)job;
  weft_pool_t *pool = arg;
  int64_t end = deadline_in_s(10);
  for (;;) {
    weft_future_t *f;
    int rc = weft_pool_submit_blocking(pool, job_until_cancelled, NULL, NULL,
                                       &f);
    if (rc != 0 || weft_clock_now_ns() > end)
      return weft_ok_int(rc);
    /* accepted before shutdown began: cancel it, it is not what we test */
    weft_future_cancel(f);
    weft_future_release(f);
    sched_yield();
  }
}

static void test_blocking_submit_during_drain(void) {
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 1;
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_future_t *a;
  REQUIRE_EQ(weft_pool_submit(pool, job_submit_blocking_until_refused, pool,
                              NULL, &a),
             0);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  EXPECT_EQ(weft_future_state(a), WEFT_FULFILLED);
  EXPECT_ERR(weft_future_int(a), WEFT_ESHUTDOWN);
  weft_future_release(a);
}

/* ---- executors marked current on a thread that does not run them ---- */

/* The pool's and the loop's executors entered on a plain thread: await
 * there is an ordinary wait (the executor lets it block). */
static void *await_under_loop_executor(void *arg) {
  weft_loop_t *loop = ((void **)arg)[0];
  weft_future_t *f = ((void **)arg)[1];
  weft_executor_t *prev = weft_executor_enter(weft_loop_executor(loop));
  intptr_t rc = weft_future_await(f, 10);
  weft_executor_leave(prev);
  return (void *)rc;
}

static void test_await_under_foreign_executor(void) {
  weft_promise_t *p;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(NULL, &pool), 0);
  weft_executor_t *prev = weft_executor_enter(weft_pool_executor(pool));
  EXPECT_ERR(weft_future_await(f, 10), WEFT_ETIMEDOUT);
  weft_executor_leave(prev);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);

  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  void *args[2] = {loop, f};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, await_under_loop_executor, args), 0);
  void *ret;
  pthread_join(th, &ret);
  EXPECT_ERR((int)(intptr_t)ret, WEFT_ETIMEDOUT);
  /* On the loop thread itself the await is refused. */
  EXPECT_ERR(weft_future_await(f, 10), WEFT_EDEADLK);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  weft_future_release(f);
}

/* ---- a job that awaits a job of another pool ---- */

static weft_result_t job_seven(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  return weft_ok_int(7);
}

static weft_result_t job_await_other(weft_job_t *job, void *arg) {
  (void)job;
  weft_future_t *f;
  int rc = weft_pool_submit(arg, job_seven, NULL, NULL, &f);
  if (rc != 0)
    return weft_err(rc);
  rc = weft_future_await(f, 10000);
  intptr_t v = weft_future_int(f);
  weft_future_release(f);
  return rc != 0 ? weft_err(rc) : weft_ok_int(v);
}

static void test_job_awaits_other_pool(void) {
  weft_pool_t *a, *b;
  REQUIRE_EQ(weft_pool_create(NULL, &a), 0);
  REQUIRE_EQ(weft_pool_create(NULL, &b), 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_pool_submit(a, job_await_other, b, NULL, &f), 0);
  EXPECT_ERR(weft_future_await(f, 10000), 0);
  EXPECT_ERR(weft_future_error(f), 0);
  EXPECT_EQ(weft_future_int(f), 7);
  weft_future_release(f);
  EXPECT_ERR(weft_pool_shutdown(a, WEFT_POOL_DRAIN, -1, NULL), 0);
  EXPECT_ERR(weft_pool_shutdown(b, WEFT_POOL_DRAIN, -1, NULL), 0);
}

/* ---- a submit from a running job once CANCEL began ---- */

static weft_result_t job_submit_after_cancel(weft_job_t *job, void *arg) {
  (void)arg;
  atomic_fetch_add(&fn_runs, 1);
  int64_t end = deadline_in_s(10);
  while (weft_job_is_cancelled(job) != 1 && weft_clock_now_ns() < end)
    sched_yield();
  weft_future_t *f = NULL;
  int rc = weft_pool_submit(g_pool, job_seven, NULL, NULL, &f);
  if (f != NULL)
    weft_future_release(f);
  atomic_store(&dtor_runs, rc); /* (the result is discarded: cancelled) */
  return weft_ok_int(rc);
}

static void test_submit_from_job_while_cancelling(void) {
  atomic_store(&fn_runs, 0);
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 1;
  REQUIRE_EQ(weft_pool_create(&o, &g_pool), 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_pool_submit(g_pool, job_submit_after_cancel, NULL, NULL, &f),
             0);
  int64_t end = deadline_in_s(10);
  while (atomic_load(&fn_runs) == 0 && weft_clock_now_ns() < end)
    sched_yield();
  REQUIRE_EQ(atomic_load(&fn_runs), 1);
  EXPECT_ERR(weft_pool_shutdown(g_pool, WEFT_POOL_CANCEL, -1, NULL), 0);
  EXPECT_ERR(atomic_load(&dtor_runs), WEFT_ESHUTDOWN);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
}

/* ---- two handlers of one signal, each stopping the other ---- */

static int sig_calls;
static weft_signal_t sig_pair[2];

static void on_sig_stop_other(weft_signal_t *sig, int signum, int status,
                              void *arg) {
  (void)signum;
  (void)arg;
  if (status != 0)
    return;
  sig_calls++;
  weft_signal_stop(sig == &sig_pair[0] ? &sig_pair[1] : &sig_pair[0]);
  weft_signal_stop(sig);
}

static void test_signal_handler_stops_next(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  sig_calls = 0;
  memset(sig_pair, 0, sizeof sig_pair);
  REQUIRE_EQ(weft_signal_start(loop, &sig_pair[0], SIGUSR1, on_sig_stop_other,
                               NULL),
             0);
  REQUIRE_EQ(weft_signal_start(loop, &sig_pair[1], SIGUSR1, on_sig_stop_other,
                               NULL),
             0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  int64_t end = deadline_in_s(10);
  while (sig_calls == 0 && weft_clock_now_ns() < end)
    EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(sig_calls, 1); /* the one stopped first never ran */
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ---- the cgroup v2 CPU quota (lib/cpu.c) ---- */

static unsigned quota_of(const char *text) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-cpu-max-%d", (int)getpid());
  FILE *fp = fopen(path, "w");
  if (fp == NULL)
    return 9999;
  fputs(text, fp);
  fclose(fp);
  unsigned n = weft__cgroup_cpus(path);
  unlink(path);
  return n;
}

static void test_cgroup_quota(void) {
  EXPECT_EQ(quota_of("max 100000\n"), 0);    /* no quota */
  EXPECT_EQ(quota_of("200000 100000\n"), 2); /* two CPUs */
  EXPECT_EQ(quota_of("150000 100000\n"), 2); /* rounded up */
  EXPECT_EQ(quota_of("50000 100000\n"), 1);
  EXPECT_EQ(quota_of("0 100000\n"), 0); /* nonsense: ignored */
  EXPECT_EQ(quota_of("100000 0\n"), 0);
  EXPECT_EQ(quota_of("garbage"), 0);
  EXPECT_EQ(weft__cgroup_cpus("/nonexistent/cpu.max"), 0);
  unsigned n = weft_cpu_count();
  EXPECT_TRUE(n >= 1);
}

/* ---- allocations on a thread past its cache's exit ---- */

/* A thread-specific destructor that runs after weft's own (glibc runs them
 * in key order; this key is made after weft's) still allocates and frees
 * weft objects: its blocks bypass the thread's cache, which is gone. */
static pthread_key_t late_key;
static _Atomic int late_rc = 1;

static void late_dtor(void *arg) {
  (void)arg;
  int rc = 0;
  for (int i = 0; i < 3 && rc == 0; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    if ((rc = weft_promise_create(&p, &f)) != 0)
      break;
    if (weft_promise_fulfil_int(p, i) != 0 || weft_future_int(f) != i)
      rc = -1000;
    weft_promise_release(p);
    weft_future_release(f);
  }
  atomic_store(&late_rc, rc);
}

static void *late_thread(void *arg) {
  (void)arg;
  weft_promise_t *p; /* this thread's cache is made here */
  weft_future_t *f;
  if (weft_promise_create(&p, &f) == 0) {
    weft_promise_release(p);
    weft_future_release(f);
  }
  pthread_setspecific(late_key, &late_key);
  return NULL;
}

static void test_alloc_after_thread_cache_exit(void) {
  weft_promise_t *p; /* weft's key exists before ours */
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  weft_promise_release(p);
  weft_future_release(f);
  REQUIRE_EQ(pthread_key_create(&late_key, late_dtor), 0);
  atomic_store(&late_rc, 1);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, late_thread, NULL), 0);
  pthread_join(th, NULL);
  EXPECT_ERR(atomic_load(&late_rc), 0);
  pthread_key_delete(late_key);
}

/* ---- socket queues: a cancel in the middle, a short read_exactly ---- */

static int net_pair(weft_loop_t *loop, weft_socket_t **ls, weft_socket_t **srv,
                    weft_socket_t **cli) {
  weft_addr_t a;
  weft_future_t *af, *cf;
  int rc;
  if ((rc = weft_addr_init_ip("127.0.0.1", 0, &a)) != 0 ||
      (rc = weft_socket_listen(loop, &a, 0, ls)) != 0 ||
      (rc = weft_socket_local_addr(*ls, &a)) != 0 ||
      (rc = weft_socket_accept(*ls, &af)) != 0)
    return rc;
  if ((rc = weft_socket_connect(loop, &a, &cf)) == 0 &&
      (rc = weft_loop_run_until(loop, af, 10000)) == 0 &&
      (rc = weft_loop_run_until(loop, cf, 10000)) == 0 &&
      (rc = weft_socket_take(af, srv)) == 0)
    rc = weft_socket_take(cf, cli);
  weft_future_release(af);
  weft_future_release(cf);
  return rc;
}

static void socket_queue_paths(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  weft_socket_t *ls, *srv, *cli;
  REQUIRE_EQ(net_pair(loop, &ls, &srv, &cli), 0);
  /* Three reads queued; the middle one is cancelled: the others get the
   * bytes in order, the cancelled one nothing. */
  char b1[4] = {0}, b2[4] = {0}, b3[4] = {0};
  weft_future_t *r1, *r2, *r3, *w;
  REQUIRE_EQ(weft_socket_read_exactly(srv, b1, 2, &r1), 0);
  REQUIRE_EQ(weft_socket_read(srv, b2, 2, &r2), 0);
  REQUIRE_EQ(weft_socket_read_exactly(srv, b3, 2, &r3), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_ERR(weft_future_cancel(r2), 0);
  REQUIRE_EQ(weft_socket_write(cli, "abcd", 4, &w), 0);
  EXPECT_ERR(weft_loop_run_until(loop, r3, 10000), 0);
  EXPECT_EQ(weft_future_int(r1), 2);
  EXPECT_EQ(weft_future_int(r3), 2);
  EXPECT_EQ(memcmp(b1, "ab", 2), 0);
  EXPECT_EQ(memcmp(b3, "cd", 2), 0);
  EXPECT_EQ(b2[0], 0);
  EXPECT_EQ(weft_future_state(r2), WEFT_CANCELLED);
  weft_future_release(r1);
  weft_future_release(r2);
  weft_future_release(r3);
  weft_future_release(w);
  /* A read_exactly the stream ends under: WEFT_EOF, the bytes that came
   * are in its buffer. */
  char big[8] = {0};
  weft_future_t *rx, *sd;
  REQUIRE_EQ(weft_socket_read_exactly(srv, big, 8, &rx), 0);
  REQUIRE_EQ(weft_socket_write(cli, "xyz", 3, &w), 0);
  REQUIRE_EQ(weft_socket_shutdown(cli, &sd), 0);
  EXPECT_ERR(weft_loop_run_until(loop, rx, 10000), 0);
  EXPECT_EQ(weft_future_state(rx), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(rx), WEFT_EOF);
  EXPECT_EQ(memcmp(big, "xyz", 3), 0);
  EXPECT_ERR(weft_loop_run_until(loop, sd, 10000), 0);
  EXPECT_ERR(weft_future_error(sd), 0);
  weft_future_release(rx);
  weft_future_release(sd);
  weft_future_release(w);
  EXPECT_ERR(weft_socket_close(cli), 0);
  EXPECT_ERR(weft_socket_close(srv), 0);
  EXPECT_ERR(weft_socket_close(ls), 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* On the loop's default backend, then on plain epoll. */
static void test_socket_queue_paths(void) {
  socket_queue_paths();
  const char *old = getenv("WEFT_IO_URING");
  setenv("WEFT_IO_URING", "0", 1);
  socket_queue_paths();
  if (old != NULL)
    setenv("WEFT_IO_URING", old, 1);
  else
    unsetenv("WEFT_IO_URING");
}

/* ---- past the await nesting limit, descendants still run ---- */

/* One worker; each job spawns the next and awaits it, 160 deep. Past the
 * 128 nested awaits (pool.h, "Nesting") an await runs only the awaiting
 * job's own descendants: the child it spawned is one, so the chain still
 * completes, on one stack. */
#define DESC_DEPTH 160
static weft_pool_t *desc_pool;

static weft_result_t job_desc(weft_job_t *job, void *arg) {
  (void)job;
  intptr_t d = (intptr_t)arg;
  if (d == DESC_DEPTH)
    return weft_ok_int(d);
  weft_future_t *f;
  int rc = weft_pool_submit(desc_pool, job_desc, (void *)(d + 1), NULL, &f);
  if (rc != 0)
    return weft_err(rc);
  rc = weft_future_await(f, 10000);
  intptr_t v = rc == 0 && weft_future_error(f) == 0 ? weft_future_int(f) : rc;
  weft_future_release(f);
  return rc != 0 ? weft_err(rc) : weft_ok_int(v);
}

static void test_nested_awaits_run_descendants(void) {
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 1;
  REQUIRE_EQ(weft_pool_create(&o, &desc_pool), 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_pool_submit(desc_pool, job_desc, (void *)0, NULL, &f), 0);
  EXPECT_ERR(weft_future_await(f, 20000), 0);
  EXPECT_ERR(weft_future_error(f), 0);
  EXPECT_EQ(weft_future_int(f), DESC_DEPTH);
  weft_future_release(f);
  weft_pool_stats_t st;
  EXPECT_ERR(weft_pool_shutdown(desc_pool, WEFT_POOL_DRAIN, -1, &st), 0);
  EXPECT_EQ(st.jobs_run, DESC_DEPTH + 1);
}

/* ---- threads that cannot be started (fault seam) ---- */

static weft_result_t job_count(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  atomic_fetch_add(&fn_runs, 1);
  return weft_ok_int(7);
}

static void test_thread_start_failures(void) {
  /* A pool whose second worker cannot start: WEFT_EAGAIN, nothing left. */
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 2;
  weft_pool_t *pool = NULL;
  weft__fault_arm("pthread_create", 2, EAGAIN, false);
  EXPECT_ERR(weft_pool_create(&o, &pool), WEFT_EAGAIN);
  EXPECT_EQ(weft__fault_fired(), 1);
  weft__fault_disarm();
  weft__fault_record(false);
  EXPECT_TRUE(pool == NULL);

  weft_thread_executor_t *te = NULL;
  weft__fault_arm("pthread_create", 1, EAGAIN, false);
  EXPECT_ERR(weft_thread_executor_create(&te), WEFT_EAGAIN);
  weft__fault_disarm();
  weft__fault_record(false);
  EXPECT_TRUE(te == NULL);

  /* A blocking job with no blocking thread alive and none startable. */
  o.threads = 1;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  atomic_store(&fn_runs, 0);
  atomic_store(&dtor_runs, 0);
  weft_future_t *f = NULL;
  weft__fault_arm("pthread_create", 1, EAGAIN, true);
  EXPECT_ERR(weft_pool_submit_blocking(pool, job_count, NULL, count_dtor, &f),
             WEFT_EAGAIN);
  weft__fault_disarm();
  weft__fault_record(false);
  EXPECT_TRUE(f == NULL);
  EXPECT_EQ(atomic_load(&dtor_runs), 0); /* arg untouched */
  /* The next one starts its thread and runs. */
  REQUIRE_EQ(weft_pool_submit_blocking(pool, job_count, NULL, count_dtor, &f),
             0);
  EXPECT_ERR(weft_future_await(f, 10000), 0);
  EXPECT_EQ(weft_future_int(f), 7);
  weft_future_release(f);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  EXPECT_EQ(atomic_load(&fn_runs), 1);
}

/* ---- every allocation of a create failing in turn ---- */

/* Call `make` with the n-th allocation failing, n = 1, 2, ... until a run
 * makes fewer than n allocations (nothing failed): each run must end in 0
 * (a transparent fallback, such as a loop without its io_uring) or
 * WEFT_ENOMEM, with nothing left allocated. */
typedef int (*make_fn)(void);

static int make_pool(void) {
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = 2;
  weft_pool_t *pool;
  int rc = weft_pool_create(&o, &pool);
  if (rc == 0)
    rc = weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL) == 0 ? 0 : -1000;
  return rc;
}

static int make_te(void) {
  weft_thread_executor_t *te;
  int rc = weft_thread_executor_create(&te);
  if (rc == 0)
    rc = weft_thread_executor_shutdown(te) == 0 ? 0 : -1000;
  return rc;
}

static int make_loop(void) {
  weft_loop_t *loop;
  int rc = weft_loop_create(NULL, &loop);
  if (rc == 0)
    rc = weft_loop_close(loop) == 0 ? 0 : -1000;
  return rc;
}

/* A loop's own operations: sleep, signal future, run_until, post. */
static void post_count(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)status;
  (*(int *)arg)++;
}

static int make_loop_ops(void) {
  weft_loop_t *loop;
  int rc = weft_loop_create(NULL, &loop);
  if (rc != 0)
    return rc;
  weft_future_t *s = NULL, *g = NULL, *t = NULL;
  int posted = 0;
  if ((rc = weft_loop_sleep(loop, 0, &s)) == 0 &&
      (rc = weft_loop_timeout(loop, s, 100000, &t)) == 0 &&
      (rc = weft_signal_next(loop, SIGUSR2, &g)) == 0 &&
      (rc = weft_loop_post(loop, post_count, &posted)) == 0)
    rc = weft_loop_run_until(loop, s, 10000);
  if (rc == 0 && (weft_future_state(s) != WEFT_FULFILLED || posted != 1 ||
                  weft_future_state(t) != WEFT_FULFILLED))
    rc = -1000;
  if (t != NULL)
    weft_future_release(t);
  if (s != NULL)
    weft_future_release(s);
  if (g != NULL) {
    weft_future_cancel(g);
    weft_future_release(g);
  }
  if (weft_loop_close(loop) != 0)
    rc = -1000;
  return rc;
}

static void each_alloc_fails(const char *what, make_fn make) {
  int rc = 0, enomem = 0;
  long n;
  for (n = 1; n < 1000; n++) {
    tu_alloc_install(n);
    rc = make();
    long made = tu_alloc_count(), live = tu_alloc_live();
    tu_alloc_restore();
    if (rc != 0 && rc != WEFT_ENOMEM)
      fprintf(stderr, "%s, allocation %ld failing: %s\n", what, n,
              weft_error_name(rc));
    EXPECT_TRUE(rc == 0 || rc == WEFT_ENOMEM);
    EXPECT_EQ(live, 0);
    enomem += rc == WEFT_ENOMEM;
    if (made < n)
      break; /* nothing failed this time */
  }
  EXPECT_ERR(rc, 0);     /* it succeeded in the end */
  EXPECT_TRUE(n < 1000); /* and the sweep ended */
  EXPECT_TRUE(enomem > 0);
}

static void test_creates_on_failing_allocator(void) {
  each_alloc_fails("pool", make_pool);
  each_alloc_fails("thread executor", make_te);
  each_alloc_fails("loop", make_loop);
  each_alloc_fails("loop operations", make_loop_ops);
}

/* ---- a block that grows under a custom allocator ---- */

static void test_timer_heap_grows_custom_allocator(void) {
  tu_alloc_install(0);
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  enum { N = 300 };
  static weft_future_t *s[N];
  for (int i = 0; i < N; i++)
    REQUIRE_EQ(weft_loop_sleep(loop, N - i, &s[i]), 0);
  /* The heap grew (copied into new blocks) and kept every deadline: the
   * sleeps end in order of their deadline. */
  EXPECT_ERR(weft_loop_run_until(loop, s[N - 1], 10000), 0);
  EXPECT_EQ(weft_future_state(s[N - 1]), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_state(s[0]), WEFT_PENDING);
  for (int i = 0; i < N; i++)
    weft_future_release(s[i]);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static const test_case_t cases[] = {
    {"shutdown from the pool's own threads", test_shutdown_from_own_threads},
    {"job: follow refused, await times out", test_job_follow_and_await_timeout},
    {"drain timeout with blocking jobs", test_drain_timeout_with_blocking_jobs},
    {"blocking submit during a drain", test_blocking_submit_during_drain},
    {"await under a foreign executor", test_await_under_foreign_executor},
    {"job awaits a job of another pool", test_job_awaits_other_pool},
    {"submit from a job while cancelling",
     test_submit_from_job_while_cancelling},
    {"signal handler stops the next", test_signal_handler_stops_next},
    {"socket queue paths", test_socket_queue_paths},
    {"nested awaits past the limit run descendants",
     test_nested_awaits_run_descendants},
    {"cgroup CPU quota", test_cgroup_quota},
    {"allocation after the thread cache's exit",
     test_alloc_after_thread_cache_exit},
    {"threads that cannot start", test_thread_start_failures},
    {"creates on a failing allocator", test_creates_on_failing_allocator},
    {"timer heap grows, custom allocator",
     test_timer_heap_grows_custom_allocator},
    {NULL, NULL}};
const test_suite_t suite_paths = {"paths", cases};
