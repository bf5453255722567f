/* SPDX-License-Identifier: MIT */
/* tests/test_api.c: the public functions' documented argument and thread
 * checks, one header at a time: NULL and out-of-range arguments give the
 * documented error, loop-thread functions called from another thread give
 * WEFT_EPERM, and loop functions called while the loop closes give
 * WEFT_ESHUTDOWN. Each check is one call and its documented result. */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- error.h ---- */

/* Every errno in the list maps onto its code; weft's own codes are not
 * errno values and map to WEFT_EUNKNOWN. */
static void test_errno_map_each(void) {
  static const int codes[] = {
#define X(name, val, msg) WEFT_##name,
      WEFT_ERRNO_MAP(X)
#undef X
  };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    int c = codes[i];
    if (c > -4000)
      EXPECT_ERR(weft_error_from_errno(-c), c);
    else
      EXPECT_ERR(weft_error_from_errno(-c), WEFT_EUNKNOWN);
    EXPECT_TRUE(weft_error_message(c) != NULL);
  }
}

/* ---- alloc.h ---- */

static void *a_alloc(void *ctx, size_t n) {
  (void)ctx;
  (void)n;
  return NULL;
}
static void a_release(void *ctx, void *p, size_t n) {
  (void)ctx;
  (void)p;
  (void)n;
}

static void test_set_allocator_args(void) {
  weft_allocator_t a = {NULL, a_release, NULL, {0}};
  EXPECT_ERR(weft_allocator_set(&a), WEFT_EINVAL);
  a.alloc = a_alloc;
  a.release = NULL;
  EXPECT_ERR(weft_allocator_set(&a), WEFT_EINVAL);
  /* Neither call changed the allocator: a promise still gets memory. */
  weft_promise_t *p;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(f), 0);
  EXPECT_ERR(weft_allocator_set(NULL), 0);
}

/* ---- executor.h ---- */

static _Atomic int task_runs;
static void count_task(weft_task_t *t) {
  (void)t;
  atomic_fetch_add(&task_runs, 1);
}

static const weft_executor_ops_t no_submit_ops = {
    .size = sizeof(weft_executor_ops_t), .name = "none"};

static void test_executor_submit_args(void) {
  weft_task_t t = {NULL, count_task};
  weft_executor_t no_ops = {NULL};
  weft_executor_t no_submit = {&no_submit_ops};
  EXPECT_ERR(weft_executor_submit(NULL, &t), WEFT_EINVAL);
  EXPECT_ERR(weft_executor_submit(&no_ops, &t), WEFT_EINVAL);
  EXPECT_ERR(weft_executor_submit(&no_submit, &t), WEFT_EINVAL);
  EXPECT_ERR(weft_executor_submit(weft_executor_inline(), NULL), WEFT_EINVAL);
  weft_task_t no_run = {NULL, NULL};
  EXPECT_ERR(weft_executor_submit(weft_executor_inline(), &no_run),
             WEFT_EINVAL);
  EXPECT_EQ(atomic_load(&task_runs), 0);
  /* The inline executor runs the task before submit returns. */
  EXPECT_ERR(weft_executor_submit(weft_executor_inline(), &t), 0);
  EXPECT_EQ(atomic_load(&task_runs), 1);
  atomic_store(&task_runs, 0);
}

static void test_thread_executor_args(void) {
  EXPECT_ERR(weft_thread_executor_create(NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_thread_executor_get(NULL) == NULL);
  EXPECT_ERR(weft_thread_executor_shutdown(NULL), WEFT_EINVAL);
}

/* A then whose executor has no submit, or no ops, is refused. */
static weft_result_t then_int(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_ok_int(1);
}
static void watch_nop(void *arg, weft_future_t *f) {
  (void)arg;
  (void)f;
}

static void test_then_watch_bad_executor(void) {
  weft_promise_t *p;
  weft_future_t *f, *g = NULL;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  weft_executor_t no_ops = {NULL};
  weft_executor_t no_submit = {&no_submit_ops};
  EXPECT_ERR(weft_future_then(f, &no_ops, then_int, NULL, NULL, &g),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_then(f, &no_submit, then_int, NULL, NULL, &g),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, &no_ops, watch_nop, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, &no_submit, watch_nop, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(NULL, weft_executor_inline(), watch_nop, NULL,
                               NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, NULL, watch_nop, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, weft_executor_inline(), NULL, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_TRUE(g == NULL);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(f), 0);
}

/* ---- future.h ---- */

/* A handle given back while the promise keeps the state alive: a retain or
 * a further release through the stale pointer is caught. */
static void test_retain_release_without_handle(void) {
  weft_promise_t *p;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  EXPECT_ERR(weft_future_retain(f), 0);
  EXPECT_ERR(weft_future_release(f), 0);
  EXPECT_ERR(weft_future_release(f), 0); /* the last handle */
  EXPECT_ERR(weft_future_retain(f), WEFT_EINVAL);
  EXPECT_ERR(weft_future_release(f), WEFT_EINVAL);
  /* The promise still settles and is released normally. */
  EXPECT_ERR(weft_promise_fulfil_int(p, 3), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
}

static void test_combinator_accessors_args(void) {
  weft_promise_t *p;
  weft_future_t *f, *c;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  size_t idx = 99;
  /* not a combinator */
  EXPECT_EQ(weft_future_input_count(f), 0);
  EXPECT_TRUE(weft_future_input(f, 0) == NULL);
  EXPECT_ERR(weft_future_order(f, 0, &idx), WEFT_EINVAL);
  EXPECT_EQ(weft_future_input_count(NULL), 0);
  EXPECT_TRUE(weft_future_input(NULL, 0) == NULL);
  EXPECT_ERR(weft_future_order(NULL, 0, &idx), WEFT_EINVAL);
  REQUIRE_EQ(weft_future_race(&f, 1, &c), 0);
  EXPECT_EQ(weft_future_input_count(c), 1);
  EXPECT_TRUE(weft_future_input(c, 0) == f);
  EXPECT_TRUE(weft_future_input(c, 1) == NULL);
  EXPECT_ERR(weft_future_order(c, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_order(c, 1, &idx), WEFT_EINVAL);
  EXPECT_ERR(weft_future_order(c, 0, &idx), WEFT_EPENDING);
  EXPECT_ERR(weft_promise_fulfil_int(p, 1), 0);
  EXPECT_ERR(weft_future_order(c, 0, &idx), 0);
  EXPECT_EQ(idx, 0);
  /* n beyond the bounds given */
  weft_future_t *g = NULL;
  EXPECT_ERR(weft_future_some(&f, 1, 2, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_some(&f, 1, 0, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_any(&f, 0, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_race(&f, 0, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_all(NULL, 1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_all(&f, 1, NULL), WEFT_EINVAL);
  EXPECT_TRUE(g == NULL);
  EXPECT_ERR(weft_future_release(c), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(f), 0);
}

/* ---- the dedicated-thread executor's await ---- */

typedef struct te_await_job {
  weft_task_t task;
  weft_future_t *f;
  int rc;
  weft_promise_t *done_p;
} te_await_job_t;

static void te_await_run(weft_task_t *t) {
  te_await_job_t *j = (te_await_job_t *)t;
  j->rc = weft_future_await(j->f, 20);
  weft_promise_fulfil_int(j->done_p, 1);
}

/* An await on the executor's own thread that runs out of time returns
 * WEFT_ETIMEDOUT; the same executor marked current on another thread
 * lets the ordinary wait run, which times out too. */
static void test_thread_executor_await_timeout(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_promise_t *p, *dp;
  weft_future_t *f, *df;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_promise_create(&dp, &df), 0);
  te_await_job_t j = {{NULL, te_await_run}, f, 1, dp};
  REQUIRE_EQ(weft_executor_submit(weft_thread_executor_get(te), &j.task), 0);
  EXPECT_ERR(weft_future_await(df, 10000), 0);
  EXPECT_ERR(j.rc, WEFT_ETIMEDOUT);

  weft_executor_t *prev = weft_executor_enter(weft_thread_executor_get(te));
  EXPECT_TRUE(weft_executor_current() == weft_thread_executor_get(te));
  EXPECT_ERR(weft_future_await(f, 10), WEFT_ETIMEDOUT);
  weft_executor_leave(prev);

  EXPECT_ERR(weft_thread_executor_shutdown(te), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(f), 0);
  EXPECT_ERR(weft_promise_release(dp), 0);
  EXPECT_ERR(weft_future_release(df), 0);
}

/* A submit from another thread after destroy began is refused with
 * WEFT_ESHUTDOWN; the tasks accepted before it all run. */
typedef struct te_block {
  weft_task_t task;
  _Atomic int started, release;
} te_block_t;

static void te_block_run(weft_task_t *t) {
  te_block_t *b = (te_block_t *)t;
  atomic_store(&b->started, 1);
  int64_t end = weft_clock_now_ns() + 10000000000;
  while (!atomic_load(&b->release) && weft_clock_now_ns() < end)
    sched_yield();
}

static void *te_destroy_thread(void *arg) {
  return (void *)(intptr_t)weft_thread_executor_shutdown(arg);
}

static void test_thread_executor_submit_while_stopping(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  te_block_t b = {{NULL, te_block_run}, 0, 0};
  REQUIRE_EQ(weft_executor_submit(ex, &b.task), 0);
  int64_t end = weft_clock_now_ns() + 10000000000;
  while (!atomic_load(&b.started) && weft_clock_now_ns() < end)
    sched_yield();
  REQUIRE_EQ(atomic_load(&b.started), 1);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, te_destroy_thread, te), 0);
  /* Submit until destroy has begun: each accepted task is counted. */
  enum { MAXT = 100000 };
  static weft_task_t tasks[MAXT];
  int accepted = 0, rc = 0;
  while (accepted < MAXT && weft_clock_now_ns() < end) {
    tasks[accepted] = (weft_task_t){NULL, count_task};
    if ((rc = weft_executor_submit(ex, &tasks[accepted])) != 0)
      break;
    accepted++;
    sched_yield();
  }
  EXPECT_ERR(rc, WEFT_ESHUTDOWN);
  atomic_store(&b.release, 1);
  void *ret;
  pthread_join(th, &ret);
  EXPECT_EQ((intptr_t)ret, 0);
  EXPECT_EQ(atomic_load(&task_runs), accepted);
  atomic_store(&task_runs, 0);
}

/* ---- pool.h ---- */

static void test_pool_args(void) {
  weft_pool_t *pool = NULL;
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  EXPECT_ERR(weft_pool_create(&o, NULL), WEFT_EINVAL);
  o.size = 4;
  EXPECT_ERR(weft_pool_create(&o, &pool), WEFT_EINVAL);
  o.size = sizeof o;
  o.threads = 1025;
  EXPECT_ERR(weft_pool_create(&o, &pool), WEFT_EINVAL);
  EXPECT_TRUE(pool == NULL);
  o.threads = 1;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_pool_stats_t st;
  EXPECT_ERR(weft_pool_stats(NULL, &st), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_stats(pool, NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_pool_executor(NULL) == NULL);
  EXPECT_EQ(weft_job_is_cancelled(NULL), false);
  EXPECT_ERR(weft_pool_shutdown(NULL, WEFT_POOL_DRAIN, -1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(pool, (weft_pool_mode_t)7, -1, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -2, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, &st), 0);
  EXPECT_EQ(st.threads, 1);
}

/* ---- loop.h and net.h: NULL and bad arguments ---- */

static void timer_nop(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)status;
  (void)arg;
}
static void io_nop(weft_io_t *io, unsigned ev, int status, void *arg) {
  (void)io;
  (void)ev;
  (void)status;
  (void)arg;
}
static void sig_nop(weft_signal_t *s, int signum, int status, void *arg) {
  (void)s;
  (void)signum;
  (void)status;
  (void)arg;
}
static void post_nop(weft_loop_t *l, void *arg, int status) {
  (void)l;
  (void)arg;
  (void)status;
}
static void stall_nop(weft_loop_t *l, const weft_stall_t *s, void *arg) {
  (void)l;
  (void)s;
  (void)arg;
}

static void test_loop_args(void) {
  weft_loop_t *loop;
  weft_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.spin_us = 1000001;
  EXPECT_ERR(weft_loop_create(&o, &loop), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_create(NULL, NULL), WEFT_EINVAL);
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  weft_loop_t *second;
  EXPECT_ERR(weft_loop_create(NULL, &second), WEFT_EBUSY);
  EXPECT_TRUE(weft_loop_current() == loop);

  EXPECT_ERR(weft_loop_run(NULL, WEFT_RUN_NOWAIT), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run(loop, (weft_run_mode_t)9), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(loop, NULL, 0), WEFT_EINVAL);
  o.spin_us = 0;
  o.max_events = 65537;
  EXPECT_ERR(weft_loop_create(&o, &second), WEFT_EINVAL);
  o.max_events = 0;
  o.size = 4;
  EXPECT_ERR(weft_loop_create(&o, &second), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_post(NULL, post_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_post(loop, NULL, NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_loop_executor(NULL) == NULL);
  EXPECT_ERR(weft_loop_backend_fd(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_backend_timeout(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_now_ns(NULL), WEFT_EINVAL);
  weft_loop_stats_t st;
  EXPECT_ERR(weft_loop_stats(NULL, &st), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stats(loop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_set_stall_hook(NULL, 10, stall_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_set_stall_hook(loop, 0, stall_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_set_stall_hook(loop, 0, NULL, NULL), 0);

  /* A post queued on the loop thread makes the host timeout 0. */
  REQUIRE_EQ(weft_loop_post(loop, post_nop, NULL), 0);
  EXPECT_EQ(weft_loop_backend_timeout(loop), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(weft_loop_backend_timeout(loop), -1);

  weft_timer_t t;
  memset(&t, 0, sizeof t);
  EXPECT_ERR(weft_timer_init(NULL, &t, timer_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(loop, NULL, timer_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(loop, &t, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&t, 1, 0), WEFT_EINVAL); /* not initialised */
  EXPECT_ERR(weft_timer_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_stop(&t), WEFT_EINVAL);
  EXPECT_EQ(weft_timer_is_active(NULL), false);
  EXPECT_EQ(weft_timer_is_active(&t), 0); /* zeroed, never initialised */
  REQUIRE_EQ(weft_timer_init(loop, &t, timer_nop, NULL), 0);
  EXPECT_ERR(weft_timer_start(&t, -1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&t, 1, -1), WEFT_EINVAL);
  EXPECT_EQ(weft_timer_is_active(&t), 0);

  weft_future_t *f = NULL;
  EXPECT_ERR(weft_loop_sleep(NULL, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_sleep(loop, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_sleep(loop, 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_timeout(loop, NULL, 1, &f), WEFT_EINVAL);
  weft_promise_t *tp;
  weft_future_t *tf;
  REQUIRE_EQ(weft_promise_create(&tp, &tf), 0);
  EXPECT_ERR(weft_loop_timeout(loop, tf, 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_timeout(loop, tf, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(loop, tf, -2), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_release(tp), 0);
  EXPECT_ERR(weft_future_release(tf), 0);
  EXPECT_ERR(weft_signal_next(NULL, SIGUSR1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_next(loop, SIGUSR1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_next(loop, SIGKILL, &f), WEFT_EINVAL);
  EXPECT_TRUE(f == NULL);

  weft_io_t io;
  memset(&io, 0, sizeof io);
  int fds[2];
  REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  EXPECT_ERR(weft_io_start(NULL, &io, fds[0], WEFT_READABLE, io_nop, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, -1, WEFT_READABLE, io_nop, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, fds[0], 0, io_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, fds[0], 8, io_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, fds[0], WEFT_READABLE, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(NULL, WEFT_READABLE), WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(&io, WEFT_READABLE), WEFT_EINVAL); /* inactive */
  EXPECT_ERR(weft_io_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_stop(&io), 0); /* never started: no-op */
  REQUIRE_EQ(weft_io_start(loop, &io, fds[0], WEFT_READABLE, io_nop, NULL), 0);
  EXPECT_ERR(weft_io_modify(&io, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(&io, WEFT_READABLE | WEFT_WRITABLE), 0);
  EXPECT_ERR(weft_io_stop(&io), 0);

  weft_signal_t sig;
  memset(&sig, 0, sizeof sig);
  EXPECT_ERR(weft_signal_start(NULL, &sig, SIGUSR1, sig_nop, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, NULL, SIGUSR1, sig_nop, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &sig, SIGUSR1, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &sig, 0, sig_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &sig, NSIG, sig_nop, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &sig, SIGSTOP, sig_nop, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_stop(&sig), 0); /* never started: no-op */

  EXPECT_ERR(weft_loop_close(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_close(loop), 0);
  close(fds[0]);
  close(fds[1]);
}

static void test_addr_args(void) {
  weft_addr_t a;
  char buf[128], longpath[200];
  EXPECT_ERR(weft_addr_init_ip(NULL, 1, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_ip("127.0.0.1", 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_ip("localhost", 1, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_unix(NULL, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_unix("/x", NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_unix("", &a), WEFT_EINVAL);
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = '\0';
  EXPECT_ERR(weft_addr_init_unix(longpath, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_port(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_format(NULL, buf, sizeof buf), WEFT_EINVAL);

  REQUIRE_EQ(weft_addr_init_unix("/tmp/weft-api.sock", &a), 0);
  EXPECT_ERR(weft_addr_port(&a), WEFT_EINVAL); /* not an IP address */
  EXPECT_ERR(weft_addr_format(&a, NULL, sizeof buf), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_format(&a, buf, sizeof buf), 0);
  EXPECT_EQ(strcmp(buf, "unix:/tmp/weft-api.sock"), 0);
  EXPECT_ERR(weft_addr_format(&a, buf, 6), WEFT_ERANGE);
  EXPECT_EQ(strcmp(buf, "unix:"), 0); /* truncated, terminated */

  REQUIRE_EQ(weft_addr_init_ip("::1", 8080, &a), 0);
  EXPECT_EQ(weft_addr_port(&a), 8080);
  EXPECT_ERR(weft_addr_format(&a, buf, sizeof buf), 0);
  EXPECT_EQ(strcmp(buf, "[::1]:8080"), 0);

  memset(&a, 0, sizeof a);
  a.ss.ss_family = AF_APPLETALK; /* unknown family */
  a.len = sizeof a.ss;
  EXPECT_ERR(weft_addr_format(&a, buf, sizeof buf), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_port(&a), WEFT_EINVAL);
}

static void test_socket_args(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  weft_addr_t a, un;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &a), 0);
  REQUIRE_EQ(weft_addr_init_unix("/tmp/weft-api-none.sock", &un), 0);
  weft_socket_t *s = NULL, *l = NULL;
  weft_future_t *f = NULL;
  char buf[8];

  EXPECT_ERR(weft_socket_listen(NULL, &a, 0, &s), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_listen(loop, NULL, 0, &s), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_listen(loop, &a, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_bind(loop, &un, &s),
             WEFT_EINVAL); /* UDP is IP only */
  EXPECT_ERR(weft_socket_connect(loop, &a, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(NULL, buf, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(NULL, buf, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_shutdown(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_take(NULL, &s), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_local_addr(NULL, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_peer_addr(NULL, &a), WEFT_EINVAL);
  EXPECT_EQ(weft_socket_fd(NULL), -1);
  EXPECT_ERR(weft_socket_set_nodelay(NULL, true), WEFT_EINVAL);
  EXPECT_EQ(weft_socket_write_queued(NULL), 0);
  EXPECT_ERR(weft_socket_close(NULL), WEFT_EINVAL);
  EXPECT_TRUE(s == NULL);
  EXPECT_TRUE(f == NULL);

  /* A listener is no stream and no UDP socket. */
  REQUIRE_EQ(weft_socket_listen(loop, &a, 0, &l), 0);
  weft_addr_t la;
  REQUIRE_EQ(weft_socket_local_addr(l, &la), 0);
  EXPECT_ERR(weft_socket_local_addr(l, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_peer_addr(l, &la), WEFT_ENOTCONN);
  EXPECT_ERR(weft_socket_read(l, buf, sizeof buf, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(l, buf, sizeof buf, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_send(l, buf, 1, &la, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_recv(l, buf, sizeof buf, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_set_nodelay(l, true), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(l, NULL), WEFT_EINVAL);
  EXPECT_TRUE(f == NULL);

  /* A UDP socket is no stream and no listener. */
  weft_socket_t *u;
  REQUIRE_EQ(weft_socket_udp_bind(loop, &a, &u), 0);
  EXPECT_ERR(weft_socket_accept(u, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(u, buf, sizeof buf, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_set_nodelay(u, true), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_recv(u, buf, 0, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_recv(u, NULL, 1, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_recv(u, buf, 1, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_send(u, NULL, 1, &la, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_send(u, buf, 1, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_send(u, buf, 1, &la, NULL), WEFT_EINVAL);
  EXPECT_TRUE(f == NULL);

  /* A future that is not a socket operation's owns no socket. */
  weft_promise_t *p;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  EXPECT_ERR(weft_socket_take(pf, &s), WEFT_EINVAL);
  weft_future_t *sl;
  REQUIRE_EQ(weft_loop_sleep(loop, 0, &sl), 0);
  EXPECT_ERR(weft_socket_take(sl, &s), WEFT_EINVAL);
  /* An accept's future: take before it settles is WEFT_EPENDING. */
  REQUIRE_EQ(weft_socket_accept(l, &f), 0);
  EXPECT_ERR(weft_socket_take(f, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_take(f, &s), WEFT_EPENDING);
  EXPECT_ERR(weft_future_cancel(f), 0);
  EXPECT_ERR(weft_socket_take(f, &s), WEFT_ECANCELED);
  EXPECT_TRUE(s == NULL);
  EXPECT_ERR(weft_future_release(f), 0);
  EXPECT_ERR(weft_future_release(sl), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(pf), 0);
  EXPECT_ERR(weft_socket_close(u), 0);
  EXPECT_ERR(weft_socket_close(l), 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ---- a connected stream's operations: argument checks ---- */

/* A connected pair on loop: the accepted end in *srv, the connecting end
 * in *cli; the listener in *ls. */
static int stream_pair(weft_loop_t *loop, const weft_addr_t *addr,
                       weft_socket_t **ls, weft_socket_t **srv,
                       weft_socket_t **cli) {
  weft_addr_t la;
  weft_future_t *af, *cf;
  int rc;
  if ((rc = weft_socket_listen(loop, addr, 0, ls)) != 0 ||
      (rc = weft_socket_local_addr(*ls, &la)) != 0 ||
      (rc = weft_socket_accept(*ls, &af)) != 0)
    return rc;
  if ((rc = weft_socket_connect(loop, &la, &cf)) == 0 &&
      (rc = weft_loop_run_until(loop, af, 10000)) == 0 &&
      (rc = weft_loop_run_until(loop, cf, 10000)) == 0 &&
      (rc = weft_socket_take(af, srv)) == 0)
    rc = weft_socket_take(cf, cli);
  weft_future_release(af);
  weft_future_release(cf);
  return rc;
}

static void test_stream_op_args(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &a), 0);
  weft_socket_t *ls, *srv, *cli;
  REQUIRE_EQ(stream_pair(loop, &a, &ls, &srv, &cli), 0);
  char buf[8] = "abcdefg";
  weft_future_t *f = NULL;
  EXPECT_ERR(weft_socket_read(cli, buf, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(cli, NULL, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(cli, buf, 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_exactly(cli, buf, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_exactly(cli, NULL, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_exactly(NULL, buf, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(cli, NULL, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(cli, buf, 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_shutdown(cli, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(cli, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_recv(cli, buf, 1, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_udp_send(cli, buf, 1, &a, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_take(NULL, &cli), WEFT_EINVAL);
  EXPECT_TRUE(f == NULL);
  /* What is allowed on it. */
  EXPECT_ERR(weft_socket_set_nodelay(cli, true), 0);
  EXPECT_ERR(weft_socket_set_nodelay(cli, false), 0);
  weft_addr_t pa;
  EXPECT_ERR(weft_socket_peer_addr(cli, &pa), 0);
  EXPECT_ERR(weft_socket_peer_addr(cli, NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_socket_fd(cli) >= 0);
  /* read_exactly sees the bytes of two writes. */
  weft_future_t *w1, *w2, *r;
  char in[8] = {0};
  REQUIRE_EQ(weft_socket_write(cli, buf, 3, &w1), 0);
  REQUIRE_EQ(weft_socket_write(cli, buf + 3, 4, &w2), 0);
  REQUIRE_EQ(weft_socket_read_exactly(srv, in, 7, &r), 0);
  EXPECT_ERR(weft_loop_run_until(loop, r, 10000), 0);
  EXPECT_EQ(weft_future_int(r), 7);
  EXPECT_EQ(memcmp(in, "abcdefg", 7), 0);
  EXPECT_ERR(weft_loop_run_until(loop, w2, 10000), 0);
  EXPECT_EQ(weft_future_int(w1), 3);
  EXPECT_EQ(weft_future_int(w2), 4);
  weft_future_release(w1);
  weft_future_release(w2);
  weft_future_release(r);
  EXPECT_ERR(weft_socket_close(cli), 0);
  EXPECT_ERR(weft_socket_close(srv), 0);
  EXPECT_ERR(weft_socket_close(ls), 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* Unix stream sockets: TCP_NODELAY is refused with WEFT_ENOTSUP, an
 * existing file at the path is WEFT_EADDRINUSE, a path with no listener
 * rejects the connect with WEFT_ENOENT or WEFT_ECONNREFUSED. */
static void test_unix_stream(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-api-%d.sock", (int)getpid());
  unlink(path);
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_unix(path, &a), 0);
  weft_socket_t *ls, *srv, *cli, *again = NULL;
  REQUIRE_EQ(stream_pair(loop, &a, &ls, &srv, &cli), 0);
  EXPECT_ERR(weft_socket_set_nodelay(cli, true), WEFT_ENOTSUP);
  EXPECT_ERR(weft_socket_listen(loop, &a, 0, &again), WEFT_EADDRINUSE);
  EXPECT_TRUE(again == NULL);
  weft_addr_t pa;
  EXPECT_ERR(weft_socket_peer_addr(srv, &pa), 0);
  EXPECT_ERR(weft_socket_close(cli), 0);
  EXPECT_ERR(weft_socket_close(srv), 0);
  EXPECT_ERR(weft_socket_close(ls), 0);
  weft_future_t *cf;
  REQUIRE_EQ(weft_socket_connect(loop, &a, &cf),
             0); /* file left, no listener */
  EXPECT_ERR(weft_loop_run_until(loop, cf, 10000), 0);
  EXPECT_EQ(weft_future_state(cf), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(cf), WEFT_ECONNREFUSED);
  weft_future_release(cf);
  unlink(path);
  REQUIRE_EQ(weft_socket_connect(loop, &a, &cf), 0);
  EXPECT_ERR(weft_loop_run_until(loop, cf, 10000), 0);
  EXPECT_ERR(weft_future_error(cf), WEFT_ENOENT);
  weft_future_release(cf);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ---- loop-thread functions from another thread: WEFT_EPERM ---- */

typedef struct off_thread {
  weft_loop_t *loop;
  weft_timer_t *timer;
  weft_io_t *io;
  weft_signal_t *sig;
  weft_socket_t *listener, *udp;
  weft_future_t *settled;
  int fd;
  int fails; /* checks that did not give WEFT_EPERM */
  int count;
} off_thread_t;

/* Off the test's thread, where CUnit's checks may not run: a condition that
 * must hold, named on stderr and counted in fails when it does not. */
#define THREAD_CHECK(o, cond)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s: false\n", #cond);                                   \
      (o)->fails++;                                                            \
    }                                                                          \
  } while (0)

#define OFF_EPERM(o, call)                                                     \
  do {                                                                         \
    (o)->count++;                                                              \
    int rc_ = (call);                                                          \
    if (rc_ != WEFT_EPERM) {                                                   \
      fprintf(stderr, "%s: got %s\n", #call, weft_error_name(rc_));            \
      (o)->fails++;                                                            \
    }                                                                          \
  } while (0)

static void *off_thread_main(void *arg) {
  off_thread_t *o = arg;
  weft_loop_t *l = o->loop;
  weft_future_t *f = NULL;
  weft_socket_t *s = NULL;
  weft_timer_t t2;
  weft_io_t io2;
  weft_signal_t sig2;
  memset(&io2, 0, sizeof io2);
  memset(&sig2, 0, sizeof sig2);
  weft_addr_t a;
  weft_addr_init_ip("127.0.0.1", 0, &a);
  char buf[4];
  OFF_EPERM(o, weft_loop_run(l, WEFT_RUN_NOWAIT));
  OFF_EPERM(o, weft_loop_run_until(l, o->settled, 0));
  OFF_EPERM(o, weft_loop_close(l));
  OFF_EPERM(o, weft_loop_set_stall_hook(l, 10, stall_nop, NULL));
  OFF_EPERM(o, weft_timer_init(l, &t2, timer_nop, NULL));
  OFF_EPERM(o, weft_timer_start(o->timer, 1, 0));
  OFF_EPERM(o, weft_timer_stop(o->timer));
  OFF_EPERM(o, weft_io_start(l, &io2, o->fd, WEFT_READABLE, io_nop, NULL));
  OFF_EPERM(o, weft_io_modify(o->io, WEFT_WRITABLE));
  OFF_EPERM(o, weft_io_stop(o->io));
  OFF_EPERM(o, weft_signal_start(l, &sig2, SIGUSR2, sig_nop, NULL));
  OFF_EPERM(o, weft_signal_stop(o->sig));
  OFF_EPERM(o, weft_signal_next(l, SIGUSR2, &f));
  OFF_EPERM(o, weft_loop_sleep(l, 1, &f));
  OFF_EPERM(o, weft_loop_timeout(l, o->settled, 1, &f));
  OFF_EPERM(o, weft_socket_listen(l, &a, 0, &s));
  OFF_EPERM(o, weft_socket_udp_bind(l, &a, &s));
  OFF_EPERM(o, weft_socket_connect(l, &a, &f));
  OFF_EPERM(o, weft_socket_accept(o->listener, &f));
  OFF_EPERM(o, weft_socket_udp_recv(o->udp, buf, sizeof buf, NULL, &f));
  OFF_EPERM(o, weft_socket_udp_send(o->udp, buf, 1, &a, &f));
  OFF_EPERM(o, weft_socket_local_addr(o->listener, &a));
  OFF_EPERM(o, weft_socket_set_nodelay(o->listener, true));
  OFF_EPERM(o, weft_socket_close(o->listener));
  THREAD_CHECK(o, f == NULL);
  THREAD_CHECK(o, s == NULL);
  /* What any thread may do still works. */
  THREAD_CHECK(o, weft_loop_post(l, post_nop, NULL) == 0);
  THREAD_CHECK(o, weft_loop_stop(l) == 0);
  return NULL;
}

static void test_loop_calls_off_thread(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  weft_timer_t t;
  REQUIRE_EQ(weft_timer_init(loop, &t, timer_nop, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&t, 100000, 0), 0);
  int fds[2];
  REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  weft_io_t io;
  memset(&io, 0, sizeof io);
  REQUIRE_EQ(weft_io_start(loop, &io, fds[0], WEFT_READABLE, io_nop, NULL), 0);
  weft_signal_t sig;
  memset(&sig, 0, sizeof sig);
  REQUIRE_EQ(weft_signal_start(loop, &sig, SIGUSR1, sig_nop, NULL), 0);
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &a), 0);
  weft_socket_t *l, *u;
  REQUIRE_EQ(weft_socket_listen(loop, &a, 0, &l), 0);
  REQUIRE_EQ(weft_socket_udp_bind(loop, &a, &u), 0);
  weft_promise_t *p;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&p, &pf), 0);
  REQUIRE_EQ(weft_promise_fulfil_int(p, 0), 0);

  off_thread_t o = {loop, &t, &io, &sig, l, u, pf, fds[1], 0, 0};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, off_thread_main, &o), 0);
  pthread_join(th, NULL);
  EXPECT_EQ(weft_loop_backend_timeout(loop),
            0); /* the thread's post is queued */
  EXPECT_EQ(o.fails, 0);
  EXPECT_EQ(o.count, 24);
  /* Nothing changed: the handles are still active. */
  EXPECT_EQ(weft_timer_is_active(&t), 1);
  EXPECT_ERR(weft_socket_local_addr(l, &a), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_ERR(weft_signal_stop(&sig), 0);
  EXPECT_ERR(weft_io_stop(&io), 0);
  EXPECT_ERR(weft_socket_close(u), 0);
  EXPECT_ERR(weft_socket_close(l), 0);
  EXPECT_ERR(weft_promise_release(p), 0);
  EXPECT_ERR(weft_future_release(pf), 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
  close(fds[0]);
  close(fds[1]);
}

/* ---- while the loop closes: WEFT_ESHUTDOWN ---- */

typedef struct closing {
  int fd;
  int fails, count, ran;
} closing_t;

#define CLOSING_ESHUTDOWN(c, call)                                             \
  do {                                                                         \
    (c)->count++;                                                              \
    int rc_ = (call);                                                          \
    if (rc_ != WEFT_ESHUTDOWN) {                                               \
      fprintf(stderr, "%s: got %s\n", #call, weft_error_name(rc_));            \
      (c)->fails++;                                                            \
    }                                                                          \
  } while (0)

static void on_close_timer(weft_timer_t *t, int status, void *arg) {
  closing_t *c = arg;
  if (status != WEFT_ECANCELED)
    return;
  c->ran++;
  weft_loop_t *l = weft_loop_current();
  weft_timer_t t2;
  weft_io_t io;
  weft_signal_t sig;
  memset(&io, 0, sizeof io);
  memset(&sig, 0, sizeof sig);
  weft_future_t *f = NULL;
  weft_socket_t *s = NULL;
  weft_addr_t a;
  weft_addr_init_ip("127.0.0.1", 0, &a);
  THREAD_CHECK(c, weft_timer_init(l, &t2, timer_nop, NULL) == 0);
  CLOSING_ESHUTDOWN(c, weft_timer_start(&t2, 1, 0));
  CLOSING_ESHUTDOWN(c, weft_timer_start(t, 1, 0));
  CLOSING_ESHUTDOWN(c,
                    weft_io_start(l, &io, c->fd, WEFT_READABLE, io_nop, NULL));
  CLOSING_ESHUTDOWN(c, weft_signal_start(l, &sig, SIGUSR2, sig_nop, NULL));
  CLOSING_ESHUTDOWN(c, weft_signal_next(l, SIGUSR2, &f));
  CLOSING_ESHUTDOWN(c, weft_loop_sleep(l, 1, &f));
  CLOSING_ESHUTDOWN(c, weft_loop_post(l, post_nop, NULL));
  CLOSING_ESHUTDOWN(c, weft_socket_listen(l, &a, 0, &s));
  CLOSING_ESHUTDOWN(c, weft_socket_udp_bind(l, &a, &s));
  CLOSING_ESHUTDOWN(c, weft_socket_connect(l, &a, &f));
  THREAD_CHECK(c, f == NULL);
  THREAD_CHECK(c, s == NULL);
  /* And close from inside one of its callbacks is refused. */
  THREAD_CHECK(c, weft_loop_close(l) == WEFT_EBUSY);
}

static void test_calls_while_closing(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  int fds[2];
  REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  closing_t c = {fds[0], 0, 0, 0};
  weft_timer_t t;
  REQUIRE_EQ(weft_timer_init(loop, &t, on_close_timer, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 100000, 0), 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_EQ(c.ran, 1);
  EXPECT_EQ(c.count, 10);
  EXPECT_EQ(c.fails, 0);
  close(fds[0]);
  close(fds[1]);
}

/* ---- the stall detector names a plain executor task ---- */

static struct {
  int reports;
  const char *kind;
  void (*cb)(void);
} task_stall;

static void on_task_stall(weft_loop_t *l, const weft_stall_t *s, void *arg) {
  (void)l;
  (void)arg;
  task_stall.reports++;
  task_stall.kind = s->kind;
  task_stall.cb = s->callback;
}

static void slow_task(weft_task_t *t) {
  (void)t;
  int64_t end = weft_clock_now_ns() + 3000000; /* 3 ms of work */
  while (weft_clock_now_ns() < end)
    ;
}

static void test_stall_names_task(void) {
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  memset(&task_stall, 0, sizeof task_stall);
  REQUIRE_EQ(weft_loop_set_stall_hook(loop, 1000, on_task_stall, NULL), 0);
  weft_task_t t = {NULL, slow_task};
  REQUIRE_EQ(weft_executor_submit(weft_loop_executor(loop), &t), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(task_stall.reports, 1);
  EXPECT_STREQ(task_stall.kind, "task");
  EXPECT_TRUE(task_stall.cb == (void (*)(void))slow_task);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"errno map, each code", test_errno_map_each},
    {"set_allocator arguments", test_set_allocator_args},
    {"executor_submit arguments", test_executor_submit_args},
    {"thread executor arguments", test_thread_executor_args},
    {"then/watch on a bad executor", test_then_watch_bad_executor},
    {"retain/release without a handle", test_retain_release_without_handle},
    {"combinator accessors", test_combinator_accessors_args},
    {"thread executor await timeout", test_thread_executor_await_timeout},
    {"thread executor submit while stopping",
     test_thread_executor_submit_while_stopping},
    {"pool arguments", test_pool_args},
    {"loop arguments", test_loop_args},
    {"address arguments", test_addr_args},
    {"socket arguments", test_socket_args},
    {"stream operation arguments", test_stream_op_args},
    {"unix stream sockets", test_unix_stream},
    {"loop calls off the loop thread", test_loop_calls_off_thread},
    {"loop calls while it closes", test_calls_while_closing},
    {"stall detector names a task", test_stall_names_task},
    {NULL, NULL}};
const test_suite_t suite_api = {"api", cases};
