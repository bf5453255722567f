/* SPDX-License-Identifier: MIT */
/* tests/test_misuse.c: the misuse table (docs/misuse.md), one test per
 * row: each misuse weft detects returns its documented error and leaves
 * the object working (a timer still fires once, a watcher still sees its
 * fd, a loop still runs). Misuses weft cannot detect (a call through a
 * pointer whose object was freed) are listed as undefined in the table and
 * not run here. Every wait is bounded. */
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Run loop iterations until *counter reaches target or BOUND_MS pass. */
static bool drive(weft_loop_t *loop, const int *counter, int target) {
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (*counter < target && weft_clock_now_ns() < end)
    if (weft_loop_run(loop, WEFT_RUN_ONCE) != 0)
      return false;
  return *counter >= target;
}

/* Run fn(arg) on a new thread (one without a loop) and return its result. */
typedef struct thread_call {
  int (*fn)(void *);
  void *arg;
  int rc;
} thread_call_t;

static void *thread_call_main(void *p) {
  thread_call_t *c = p;
  c->rc = c->fn(c->arg);
  return NULL;
}

static int on_thread(int (*fn)(void *), void *arg) {
  thread_call_t c = {fn, arg, 12345};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, thread_call_main, &c), 0);
  pthread_join(th, NULL);
  return c.rc;
}

/* ================================================================ */
/* Timers                                                             */
/* ================================================================ */

typedef struct tcount {
  int fired, cancelled;
  int stop_self; /* stop the timer from its own callback */
} tcount_t;

static void tcount_fn(weft_timer_t *t, int status, void *arg) {
  tcount_t *c = arg;
  if (status == 0)
    c->fired++;
  else
    c->cancelled++;
  if (c->stop_self) {
    EXPECT_EQ(weft_timer_stop(t), 0);
    EXPECT_EQ(weft_timer_stop(t), 0);
  }
}

static void tother_fn(weft_timer_t *t, int status, void *arg) {
  (void)t, (void)status;
  ++*(int *)arg;
}

/* Starting an active timer restarts it (documented): one entry, one call. */
static void test_timer_start_active(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  tcount_t c = {0};
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.timers_active, 1);
  EXPECT_TRUE(drive(loop, &c.fired, 1));
  for (int i = 0; i < 3; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(c.fired, 1);
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

/* weft_timer_init on an active timer is refused: re-initialising would
 * zero the slot the loop's heap still points at. */
static void test_timer_init_active(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t[3];
  tcount_t c[3] = {{0}, {0}, {0}};
  int other = 0;
  for (int i = 0; i < 3; i++) {
    REQUIRE_EQ(weft_timer_init(loop, &t[i], tcount_fn, &c[i]), 0);
    REQUIRE_EQ(weft_timer_start(&t[i], 0, 0), 0);
  }
  EXPECT_ERR(weft_timer_init(loop, &t[1], tother_fn, &other), WEFT_EBUSY);
  EXPECT_EQ(weft_timer_is_active(&t[1]), 1);
  int total = 0;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (total < 3 && weft_clock_now_ns() < end) {
    weft_loop_run(loop, WEFT_RUN_ONCE);
    total = c[0].fired + c[1].fired + c[2].fired;
  }
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(c[i].fired, 1);
  EXPECT_EQ(other, 0);
  /* stopped: init again is allowed */
  EXPECT_EQ(weft_timer_init(loop, &t[1], tother_fn, &other), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(c[i].cancelled, 0);
}

typedef struct other_loop_arg {
  weft_timer_t *timer;
  weft_io_t *io;
  weft_signal_t *sig;
  int fd;
  int hits;
} other_loop_arg_t;

static int init_on_other_loop(void *p) {
  other_loop_arg_t *a = p;
  weft_loop_t *loop = NULL;
  if (weft_loop_create(NULL, &loop) != 0)
    return 999;
  int rc = weft_timer_init(loop, a->timer, tother_fn, &a->hits);
  weft_loop_close(loop);
  return rc;
}

/* A timer active on one loop, initialised on another loop (by that loop's
 * thread): refused, and the timer stays the first loop's. */
static void test_timer_init_active_other_loop(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  tcount_t c = {0};
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 0), 0);
  other_loop_arg_t a = {.timer = &t};
  EXPECT_ERR(on_thread(init_on_other_loop, &a), WEFT_EBUSY);
  EXPECT_TRUE(drive(loop, &c.fired, 1));
  EXPECT_EQ(a.hits, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

/* Stopping a timer never started, twice, or before init (zeroed). */
static void test_timer_stop_inactive(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  tcount_t c = {0};
  weft_timer_t zero;
  memset(&zero, 0, sizeof zero);
  EXPECT_ERR(weft_timer_stop(&zero), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&zero, 0, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_stop(NULL), WEFT_EINVAL);
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  EXPECT_EQ(weft_timer_stop(&t), 0);
  for (int i = 0; i < 3; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(c.fired, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

static int timer_calls_off_thread(void *p) {
  weft_timer_t *t = p;
  int bad = 0;
  bad += weft_timer_start(t, 0, 0) != WEFT_EPERM;
  bad += weft_timer_stop(t) != WEFT_EPERM;
  bad += weft_timer_init(t->priv_loop, t, tother_fn, NULL) != WEFT_EPERM;
  /* a thread with a loop of its own is just as foreign */
  weft_loop_t *mine = NULL;
  if (weft_loop_create(NULL, &mine) != 0)
    return 999;
  bad += weft_timer_start(t, 0, 0) != WEFT_EPERM;
  bad += weft_timer_stop(t) != WEFT_EPERM;
  weft_loop_close(mine);
  return bad;
}

static void test_timer_foreign_thread(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  tcount_t c = {0};
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_EQ(on_thread(timer_calls_off_thread, &t), 0);
  EXPECT_TRUE(drive(loop, &c.fired, 1));
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Stopping (twice) a repeating timer from its own callback. */
static void test_timer_stop_in_callback(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  tcount_t c = {.stop_self = 1};
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 1), 0);
  EXPECT_TRUE(drive(loop, &c.fired, 1));
  for (int i = 0; i < 5; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(c.fired, 1);
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

/* ================================================================ */
/* fd watchers                                                        */
/* ================================================================ */

typedef struct iocount {
  int ready, cancelled;
  int stop_self;
} iocount_t;

static void io_fn(weft_io_t *io, unsigned events, int status, void *arg) {
  iocount_t *c = arg;
  (void)events;
  if (status == 0)
    c->ready++;
  else
    c->cancelled++;
  if (c->stop_self) {
    EXPECT_EQ(weft_io_stop(io), 0);
    EXPECT_EQ(weft_io_stop(io), 0);
  }
}

static void io_other_fn(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)io, (void)events, (void)status;
  ++*(int *)arg;
}

static void test_io_start_active(void) {
  weft_loop_t *loop = new_loop();
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  weft_io_t io;
  iocount_t c = {0};
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c), 0);
  EXPECT_ERR(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, p[1], WEFT_WRITABLE, io_fn, &c),
             WEFT_EINVAL);
  weft_io_t io2;
  EXPECT_ERR(weft_io_start(loop, &io2, p[0], WEFT_READABLE, io_fn, &c),
             WEFT_EEXIST); /* one watcher per fd per loop */
  REQUIRE_EQ(write(p[1], "x", 1), 1);
  EXPECT_TRUE(drive(loop, &c.ready, 1));
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
  close(p[0]);
  close(p[1]);
}

static int io_start_on_other_loop(void *arg) {
  other_loop_arg_t *a = arg;
  weft_loop_t *loop = NULL;
  if (weft_loop_create(NULL, &loop) != 0)
    return 999;
  int rc = weft_io_start(loop, a->io, a->fd, WEFT_READABLE, io_other_fn,
                         &a->hits);
  weft_loop_close(loop);
  return rc;
}

/* An io watcher active on one loop, started on another (by that loop's
 * thread): refused; linking it into the second loop's list would cut
 * the first loop's list (and the second's close would cancel it). */
static void test_io_start_active_other_loop(void) {
  weft_loop_t *loop = new_loop();
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  weft_io_t io;
  iocount_t c = {0};
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c), 0);
  other_loop_arg_t a = {.io = &io, .fd = p[0]};
  EXPECT_ERR(on_thread(io_start_on_other_loop, &a), WEFT_EINVAL);
  EXPECT_EQ(a.hits, 0);
  EXPECT_EQ(c.cancelled, 0);
  REQUIRE_EQ(write(p[1], "x", 1), 1);
  EXPECT_TRUE(drive(loop, &c.ready, 1));
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 1);
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
  close(p[0]);
  close(p[1]);
}

static void test_io_stop_inactive(void) {
  weft_loop_t *loop = new_loop();
  weft_io_t io;
  memset(&io, 0, sizeof io);
  EXPECT_EQ(weft_io_stop(&io), 0); /* zeroed, never started */
  EXPECT_ERR(weft_io_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(&io, WEFT_READABLE), WEFT_EINVAL);
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  iocount_t c = {0};
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c), 0);
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_ERR(weft_io_modify(&io, WEFT_READABLE), WEFT_EINVAL);
  REQUIRE_EQ(write(p[1], "x", 1), 1);
  for (int i = 0; i < 3; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(c.ready, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
  close(p[0]);
  close(p[1]);
}

static int io_calls_off_thread(void *p) {
  weft_io_t *io = p;
  int bad = 0;
  bad += weft_io_stop(io) != WEFT_EPERM;
  bad += weft_io_modify(io, WEFT_READABLE | WEFT_WRITABLE) != WEFT_EPERM;
  bad += weft_io_start(io->priv_loop, io, io->priv_fd, WEFT_READABLE,
                       io_other_fn, NULL) != WEFT_EPERM;
  return bad;
}

static void test_io_foreign_thread(void) {
  weft_loop_t *loop = new_loop();
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  weft_io_t io;
  iocount_t c = {0};
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c), 0);
  EXPECT_EQ(on_thread(io_calls_off_thread, &io), 0);
  REQUIRE_EQ(write(p[1], "x", 1), 1);
  EXPECT_TRUE(drive(loop, &c.ready, 1));
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 1);
  close(p[0]);
  close(p[1]);
}

static void test_io_stop_in_callback(void) {
  weft_loop_t *loop = new_loop();
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  weft_io_t io;
  iocount_t c = {.stop_self = 1};
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_fn, &c), 0);
  REQUIRE_EQ(write(p[1], "x", 1), 1); /* stays readable: level-triggered */
  EXPECT_TRUE(drive(loop, &c.ready, 1));
  for (int i = 0; i < 5; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(c.ready, 1);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
  close(p[0]);
  close(p[1]);
}

/* ================================================================ */
/* Signals                                                            */
/* ================================================================ */

typedef struct sigcount {
  int got, cancelled;
  int stop_self;
} sigcount_t;

static void sig_fn(weft_signal_t *s, int signum, int status, void *arg) {
  sigcount_t *c = arg;
  (void)signum;
  if (status == 0)
    c->got++;
  else
    c->cancelled++;
  if (c->stop_self) {
    EXPECT_EQ(weft_signal_stop(s), 0);
    EXPECT_EQ(weft_signal_stop(s), 0);
  }
}

static void sig_other_fn(weft_signal_t *s, int signum, int status, void *arg) {
  (void)s, (void)signum, (void)status;
  ++*(int *)arg;
}

static void test_signal_start_active(void) {
  weft_loop_t *loop = new_loop();
  weft_signal_t s;
  sigcount_t c = {0};
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, sig_fn, &c), 0);
  EXPECT_ERR(weft_signal_start(loop, &s, SIGUSR1, sig_fn, &c), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, SIGUSR2, sig_fn, &c), WEFT_EINVAL);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_TRUE(drive(loop, &c.got, 1));
  EXPECT_EQ(c.got, 1);
  EXPECT_EQ(weft_signal_stop(&s), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

static int signal_start_on_other_loop(void *arg) {
  other_loop_arg_t *a = arg;
  weft_loop_t *loop = NULL;
  if (weft_loop_create(NULL, &loop) != 0)
    return 999;
  int rc = weft_signal_start(loop, a->sig, SIGUSR2, sig_other_fn, &a->hits);
  weft_loop_close(loop);
  return rc;
}

static void test_signal_start_active_other_loop(void) {
  weft_loop_t *loop = new_loop();
  weft_signal_t s;
  sigcount_t c = {0};
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, sig_fn, &c), 0);
  other_loop_arg_t a = {.sig = &s};
  EXPECT_ERR(on_thread(signal_start_on_other_loop, &a), WEFT_EINVAL);
  EXPECT_EQ(a.hits, 0);
  EXPECT_EQ(c.cancelled, 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_TRUE(drive(loop, &c.got, 1));
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 1);
}

static int signal_calls_off_thread(void *p) {
  weft_signal_t *s = p;
  int bad = 0;
  bad += weft_signal_stop(s) != WEFT_EPERM;
  bad += weft_signal_start(s->priv_loop, s, SIGUSR1, sig_other_fn, NULL) !=
         WEFT_EPERM;
  return bad;
}

static void test_signal_stop_inactive_and_foreign(void) {
  weft_loop_t *loop = new_loop();
  weft_signal_t s;
  memset(&s, 0, sizeof s);
  EXPECT_EQ(weft_signal_stop(&s), 0);
  EXPECT_ERR(weft_signal_stop(NULL), WEFT_EINVAL);
  sigcount_t c = {0};
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, sig_fn, &c), 0);
  EXPECT_EQ(on_thread(signal_calls_off_thread, &s), 0);
  EXPECT_EQ(weft_signal_stop(&s), 0);
  EXPECT_EQ(weft_signal_stop(&s), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.cancelled, 0);
}

static void test_signal_stop_in_callback(void) {
  weft_loop_t *loop = new_loop();
  weft_signal_t s;
  sigcount_t c = {.stop_self = 1};
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, sig_fn, &c), 0);
  REQUIRE_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
  EXPECT_TRUE(drive(loop, &c.got, 1));
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.got, 1);
  EXPECT_EQ(c.cancelled, 0);
}

/* ================================================================ */
/* Loops                                                              */
/* ================================================================ */

static int loop_calls_off_thread(void *p) {
  weft_loop_t *loop = p;
  int bad = 0;
  bad += weft_loop_close(loop) != WEFT_EPERM;
  bad += weft_loop_run(loop, WEFT_RUN_NOWAIT) != WEFT_EPERM;
  bad += weft_loop_run(loop, WEFT_RUN_DEFAULT) != WEFT_EPERM;
  weft_future_t *f = NULL;
  weft_promise_t *pr = NULL;
  if (weft_promise_create(&pr, &f) != 0)
    return 999;
  bad += weft_loop_run_until(loop, f, 0) != WEFT_EPERM;
  weft_promise_release(pr);
  weft_future_release(f);
  bad += weft_loop_sleep(loop, 0, &f) != WEFT_EPERM;
  bad += weft_loop_set_stall_hook(loop, 0, NULL, NULL) != WEFT_EPERM;
  /* a thread with its own loop: still foreign */
  weft_loop_t *mine = NULL;
  if (weft_loop_create(NULL, &mine) != 0)
    return 999;
  bad += weft_loop_close(loop) != WEFT_EPERM;
  bad += weft_loop_run(loop, WEFT_RUN_NOWAIT) != WEFT_EPERM;
  weft_loop_close(mine);
  return bad;
}

/* Closing, running a loop from another thread: WEFT_EPERM, loop intact. */
static void test_loop_foreign_thread(void) {
  weft_loop_t *loop = new_loop();
  EXPECT_EQ(on_thread(loop_calls_off_thread, loop), 0);
  weft_timer_t t;
  tcount_t c = {0};
  REQUIRE_EQ(weft_timer_init(loop, &t, tcount_fn, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_TRUE(drive(loop, &c.fired, 1));
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Close twice, and calls of the loop thread on its closed loop: the
 * thread's loop is compared by address (never read), so they return
 * WEFT_EPERM as long as the thread has not created another loop. */
static void test_loop_close_twice(void) {
  weft_loop_t *loop = new_loop();
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_ERR(weft_loop_close(loop), WEFT_EPERM);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), WEFT_EPERM);
  weft_timer_t t;
  EXPECT_ERR(weft_timer_init(loop, &t, tother_fn, NULL), WEFT_EPERM);
  weft_io_t io;
  EXPECT_ERR(weft_io_start(loop, &io, 0, WEFT_READABLE, io_other_fn, NULL),
             WEFT_EPERM);
  weft_signal_t s;
  EXPECT_ERR(weft_signal_start(loop, &s, SIGUSR1, sig_other_fn, NULL),
             WEFT_EPERM);
  weft_future_t *f = NULL;
  EXPECT_ERR(weft_loop_sleep(loop, 0, &f), WEFT_EPERM);
  weft_addr_t addr;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &addr), 0);
  weft_socket_t *sock = NULL;
  EXPECT_ERR(weft_socket_listen(loop, &addr, 0, &sock), WEFT_EPERM);
  EXPECT_ERR(weft_socket_connect(loop, &addr, &f), WEFT_EPERM);
  EXPECT_TRUE(weft_loop_current() == NULL);
  EXPECT_ERR(weft_loop_close(NULL), WEFT_EINVAL);
}

typedef struct in_cb {
  weft_loop_t *loop;
  int calls;
  int close_rc, run_rc, until_rc;
} in_cb_t;

static void close_in_cb(weft_timer_t *t, int status, void *arg) {
  (void)t;
  in_cb_t *c = arg;
  if (status != 0)
    return;
  c->calls++;
  c->close_rc = weft_loop_close(c->loop);
  c->run_rc = weft_loop_run(c->loop, WEFT_RUN_NOWAIT);
  weft_promise_t *pr;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  c->until_rc = weft_loop_run_until(c->loop, f, 0);
  weft_promise_release(pr);
  weft_future_release(f);
}

/* Closing or running a loop from one of its own callbacks: WEFT_EBUSY. */
static void test_loop_close_in_callback(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  in_cb_t c = {.loop = loop};
  REQUIRE_EQ(weft_timer_init(loop, &t, close_in_cb, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 0, 0), 0);
  EXPECT_TRUE(drive(loop, &c.calls, 1));
  EXPECT_ERR(c.close_rc, WEFT_EBUSY);
  EXPECT_ERR(c.run_rc, WEFT_EBUSY);
  EXPECT_ERR(c.until_rc, WEFT_EBUSY);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Posting to a closing loop: from a callback close runs and from another
 * thread while close runs, WEFT_ESHUTDOWN; the function never runs. */
typedef struct closing_post {
  weft_loop_t *loop;
  int own_rc, other_rc, submit_rc;
  int ran;
} closing_post_t;

static void never_fn(weft_loop_t *loop, void *arg, int status) {
  (void)loop, (void)status;
  ++((closing_post_t *)arg)->ran;
}

static int post_from_other(void *p) {
  closing_post_t *c = p;
  return weft_loop_post(c->loop, never_fn, c);
}

static void never_task(weft_task_t *t) {
  (void)t;
  abort();
}

static int submit_from_other(void *p) {
  weft_task_t *t = p;
  closing_post_t *c = (closing_post_t *)t->next;
  return weft_executor_submit(weft_loop_executor(c->loop), t);
}

static void post_at_close(weft_timer_t *t, int status, void *arg) {
  (void)t;
  closing_post_t *c = arg;
  if (status != WEFT_ECANCELED)
    return;
  c->own_rc = weft_loop_post(c->loop, never_fn, c);
  c->other_rc = on_thread(post_from_other, c);
  static weft_task_t task;
  task.run = never_task;
  task.next = (weft_task_t *)(void *)c;
  c->submit_rc = on_thread(submit_from_other, &task);
}

static void test_post_to_closing_loop(void) {
  weft_loop_t *loop = new_loop();
  weft_timer_t t;
  closing_post_t c = {.loop = loop};
  REQUIRE_EQ(weft_timer_init(loop, &t, post_at_close, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 100000, 0), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_ERR(c.own_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c.other_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c.submit_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(c.ran, 0);
}

/* At loop close every active handle's callback runs once with
 * WEFT_ECANCELED: restarting it there is refused (WEFT_ESHUTDOWN), a
 * stop is a no-op. */
typedef struct at_close {
  int pipe_fd;
  int timer_rc, timer_stop, io_rc, io_stop, sig_rc, sig_stop, calls;
} at_close_t;

static void timer_at_close(weft_timer_t *t, int status, void *arg) {
  at_close_t *c = arg;
  if (status != WEFT_ECANCELED)
    return;
  c->calls++;
  c->timer_rc = weft_timer_start(t, 0, 0);
  c->timer_stop = weft_timer_stop(t);
}

static void io_at_close(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)events;
  at_close_t *c = arg;
  if (status != WEFT_ECANCELED)
    return;
  c->calls++;
  c->io_rc = weft_io_start(io->priv_loop, io, c->pipe_fd, WEFT_READABLE,
                           io_at_close, c);
  c->io_stop = weft_io_stop(io);
}

static void sig_at_close(weft_signal_t *s, int signum, int status, void *arg) {
  (void)signum;
  at_close_t *c = arg;
  if (status != WEFT_ECANCELED)
    return;
  c->calls++;
  c->sig_rc = weft_signal_start(s->priv_loop, s, SIGUSR1, sig_at_close, c);
  c->sig_stop = weft_signal_stop(s);
}

static void test_restart_in_close_callback(void) {
  weft_loop_t *loop = new_loop();
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  at_close_t c = {.pipe_fd = p[0]};
  weft_timer_t t;
  weft_io_t io;
  weft_signal_t s;
  REQUIRE_EQ(weft_timer_init(loop, &t, timer_at_close, &c), 0);
  REQUIRE_EQ(weft_timer_start(&t, 100000, 0), 0);
  REQUIRE_EQ(weft_io_start(loop, &io, p[0], WEFT_READABLE, io_at_close, &c), 0);
  REQUIRE_EQ(weft_signal_start(loop, &s, SIGUSR1, sig_at_close, &c), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(c.calls, 3);
  EXPECT_ERR(c.timer_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c.io_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c.sig_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(c.timer_stop, 0);
  EXPECT_EQ(c.io_stop, 0);
  EXPECT_EQ(c.sig_stop, 0);
  close(p[0]);
  close(p[1]);
}

/* ================================================================ */
/* Sockets                                                            */
/* ================================================================ */

typedef struct pair {
  weft_socket_t *listener, *a, *b; /* a: accepted, b: connected */
  weft_future_t *fa, *fb;
} pair_t;

static void make_pair(weft_loop_t *loop, pair_t *p) {
  weft_addr_t addr;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &addr), 0);
  REQUIRE_EQ(weft_socket_listen(loop, &addr, 0, &p->listener), 0);
  REQUIRE_EQ(weft_socket_local_addr(p->listener, &addr), 0);
  REQUIRE_EQ(weft_socket_accept(p->listener, &p->fa), 0);
  REQUIRE_EQ(weft_socket_connect(loop, &addr, &p->fb), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, p->fa, BOUND_MS), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, p->fb, BOUND_MS), 0);
  REQUIRE_EQ(weft_socket_take(p->fa, &p->a), 0);
  REQUIRE_EQ(weft_socket_take(p->fb, &p->b), 0);
}

static void drop_pair(pair_t *p) {
  weft_future_release(p->fa);
  weft_future_release(p->fb);
}

/* What a continuation sees of a socket closed under it. */
typedef struct after_close {
  weft_socket_t *sock, *listener;
  int ran, status;
  int read_rc, write_rc, shut_rc, accept_rc, close1, close2;
} after_close_t;

static weft_result_t use_closed(void *arg, weft_future_t *f) {
  after_close_t *c = arg;
  c->ran++;
  c->status = weft_future_error(f);
  char buf[8];
  weft_future_t *g = NULL;
  c->read_rc = weft_socket_read(c->sock, buf, sizeof buf, &g);
  c->write_rc = weft_socket_write(c->sock, "x", 1, &g);
  c->shut_rc = weft_socket_shutdown(c->sock, &g);
  c->accept_rc = c->listener != NULL ? weft_socket_accept(c->listener, &g)
                                     : WEFT_ESHUTDOWN;
  c->close1 = weft_socket_close(c->sock);
  c->close2 = weft_socket_close(c->sock);
  return weft_ok_int(0);
}

static void check_after_close(const after_close_t *c) {
  EXPECT_EQ(c->ran, 1);
  EXPECT_ERR(c->status, WEFT_ECANCELED);
  EXPECT_ERR(c->read_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c->write_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c->shut_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(c->accept_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(c->close1, 0);
  EXPECT_EQ(c->close2, 0);
}

/* A socket closed by its owner, named again from a continuation that the
 * close runs (the socket lives until close returns): every operation is
 * WEFT_ESHUTDOWN, a second close is 0. */
static void test_socket_use_after_close(void) {
  weft_loop_t *loop = new_loop();
  pair_t p;
  make_pair(loop, &p);
  char buf[8];
  weft_future_t *r, *d;
  REQUIRE_EQ(weft_socket_read(p.a, buf, sizeof buf, &r), 0);
  after_close_t c = {.sock = p.a};
  REQUIRE_EQ(
      weft_future_then(r, weft_executor_inline(), use_closed, &c, NULL, &d), 0);
  EXPECT_EQ(weft_socket_close(p.a), 0);
  check_after_close(&c);
  weft_future_release(r);
  weft_future_release(d);
  /* a listener, from its pending accept's continuation */
  REQUIRE_EQ(weft_socket_accept(p.listener, &r), 0);
  after_close_t cl = {.sock = p.listener, .listener = p.listener};
  REQUIRE_EQ(weft_future_then(r, weft_executor_inline(), use_closed, &cl, NULL,
                              &d),
             0);
  EXPECT_EQ(weft_socket_close(p.listener), 0);
  EXPECT_EQ(cl.ran, 1);
  EXPECT_ERR(cl.status, WEFT_ECANCELED);
  EXPECT_ERR(cl.accept_rc, WEFT_ESHUTDOWN);
  EXPECT_ERR(cl.read_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(cl.close1, 0);
  EXPECT_EQ(cl.close2, 0);
  weft_future_release(r);
  weft_future_release(d);
  EXPECT_EQ(weft_socket_close(p.b), 0);
  drop_pair(&p);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The same at loop close (the loop closes the sockets). */
static void test_socket_use_after_loop_close(void) {
  weft_loop_t *loop = new_loop();
  pair_t p;
  make_pair(loop, &p);
  char buf[8];
  weft_future_t *r, *d;
  REQUIRE_EQ(weft_socket_read(p.a, buf, sizeof buf, &r), 0);
  after_close_t c = {.sock = p.a, .listener = p.listener};
  REQUIRE_EQ(
      weft_future_then(r, weft_executor_inline(), use_closed, &c, NULL, &d), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  check_after_close(&c);
  weft_future_release(r);
  weft_future_release(d);
  drop_pair(&p);
}

/* A socket closed from the inline continuation of its own read that
 * completed (not cancelled): the socket lives until that continuation
 * returns; operations in it are WEFT_ESHUTDOWN, a second close is 0. */
typedef struct own_close {
  weft_socket_t *sock;
  int ran, status, close1, close2, read_rc;
} own_close_t;

static weft_result_t close_in_own(void *arg, weft_future_t *f) {
  own_close_t *c = arg;
  c->ran++;
  c->status = weft_future_error(f);
  c->close1 = weft_socket_close(c->sock);
  char buf[4];
  weft_future_t *g = NULL;
  c->read_rc = weft_socket_read(c->sock, buf, sizeof buf, &g);
  c->close2 = weft_socket_close(c->sock);
  return weft_ok_int(0);
}

static void test_socket_close_in_own_continuation(void) {
  weft_loop_t *loop = new_loop();
  pair_t p;
  make_pair(loop, &p);
  char buf[4];
  weft_future_t *r, *d, *w;
  own_close_t c = {.sock = p.a};
  REQUIRE_EQ(weft_socket_read(p.a, buf, sizeof buf, &r), 0);
  REQUIRE_EQ(weft_future_then(r, weft_executor_inline(), close_in_own, &c, NULL,
                              &d),
             0);
  REQUIRE_EQ(weft_socket_write(p.b, "ab", 2, &w), 0);
  EXPECT_EQ(weft_loop_run_until(loop, d, BOUND_MS), 0);
  EXPECT_EQ(c.ran, 1);
  EXPECT_EQ(c.status, 0);
  EXPECT_EQ(weft_future_int(r), 2);
  EXPECT_EQ(c.close1, 0);
  EXPECT_ERR(c.read_rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(c.close2, 0);
  weft_future_release(r);
  weft_future_release(d);
  weft_future_release(w);
  EXPECT_EQ(weft_socket_close(p.b), 0);
  EXPECT_EQ(weft_socket_close(p.listener), 0);
  drop_pair(&p);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Take after the socket was closed through the borrowed pointer, take
 * twice, take of a pending future, take of a non-socket future. */
static void test_socket_take_misuse(void) {
  weft_loop_t *loop = new_loop();
  weft_addr_t addr;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &addr), 0);
  weft_socket_t *l, *s = NULL;
  REQUIRE_EQ(weft_socket_listen(loop, &addr, 0, &l), 0);
  REQUIRE_EQ(weft_socket_local_addr(l, &addr), 0);
  weft_future_t *fa, *fb;
  REQUIRE_EQ(weft_socket_accept(l, &fa), 0);
  EXPECT_ERR(weft_socket_take(fa, &s), WEFT_EPENDING);
  REQUIRE_EQ(weft_socket_connect(loop, &addr, &fb), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, fa, BOUND_MS), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, fb, BOUND_MS), 0);
  EXPECT_EQ(weft_socket_take(fb, &s), 0);
  weft_socket_t *s2 = NULL;
  EXPECT_ERR(weft_socket_take(fb, &s2), WEFT_EALREADY);
  EXPECT_TRUE(s2 == NULL);
  EXPECT_EQ(weft_socket_close(weft_future_value(fa)), 0);
  EXPECT_ERR(weft_socket_take(fa, &s2), WEFT_ESHUTDOWN);
  weft_promise_t *pr;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&pr, &pf), 0);
  EXPECT_ERR(weft_socket_take(pf, &s2), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_take(NULL, &s2), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_take(fa, NULL), WEFT_EINVAL);
  weft_promise_release(pr);
  weft_future_release(pf);
  EXPECT_EQ(weft_socket_close(s), 0);
  EXPECT_EQ(weft_socket_close(l), 0);
  weft_future_release(fa);
  weft_future_release(fb);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static int socket_calls_off_thread(void *arg) {
  pair_t *p = arg;
  int bad = 0;
  char buf[4];
  weft_future_t *f = NULL;
  weft_socket_t *s = NULL;
  bad += weft_socket_read(p->a, buf, sizeof buf, &f) != WEFT_EPERM;
  bad += weft_socket_read_exactly(p->a, buf, sizeof buf, &f) != WEFT_EPERM;
  bad += weft_socket_write(p->a, "x", 1, &f) != WEFT_EPERM;
  bad += weft_socket_shutdown(p->a, &f) != WEFT_EPERM;
  bad += weft_socket_accept(p->listener, &f) != WEFT_EPERM;
  bad += weft_socket_close(p->a) != WEFT_EPERM;
  bad += weft_socket_close(p->listener) != WEFT_EPERM;
  bad += weft_socket_take(p->fa, &s) != WEFT_EPERM;
  bad += weft_socket_set_nodelay(p->a, true) != WEFT_EPERM;
  return bad;
}

static void test_socket_foreign_thread(void) {
  weft_loop_t *loop = new_loop();
  pair_t p;
  make_pair(loop, &p);
  EXPECT_EQ(on_thread(socket_calls_off_thread, &p), 0);
  /* still working: a byte goes through */
  weft_future_t *w, *r;
  char buf[4];
  REQUIRE_EQ(weft_socket_write(p.a, "z", 1, &w), 0);
  REQUIRE_EQ(weft_socket_read(p.b, buf, sizeof buf, &r), 0);
  EXPECT_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(r), 1);
  EXPECT_EQ(weft_loop_run_until(loop, w, BOUND_MS), 0);
  weft_future_release(w);
  weft_future_release(r);
  EXPECT_EQ(weft_socket_close(p.a), 0);
  EXPECT_EQ(weft_socket_close(p.b), 0);
  EXPECT_EQ(weft_socket_close(p.listener), 0);
  drop_pair(&p);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* Futures and promises                                               */
/* ================================================================ */

static void test_future_release_twice(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_EQ(weft_future_retain(f), 0);
  EXPECT_EQ(weft_future_release(f), 0);
  EXPECT_EQ(weft_future_release(f), 0);
  /* the promise keeps the state alive: the extra release is caught */
  EXPECT_ERR(weft_future_release(f), WEFT_EINVAL);
  EXPECT_ERR(weft_future_retain(f), WEFT_EINVAL);
  EXPECT_EQ(weft_promise_fulfil_int(pr, 7), 0);
  EXPECT_EQ(weft_promise_release(pr), 0);
  EXPECT_ERR(weft_future_release(NULL), WEFT_EINVAL);
}

static void test_promise_release_twice(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_EQ(weft_promise_release(pr), 0);
  EXPECT_ERR(weft_future_error(f), WEFT_EBROKEN);
  EXPECT_ERR(weft_promise_release(pr), WEFT_EINVAL);
  /* a released promise settles nothing */
  EXPECT_ERR(weft_promise_fulfil_int(pr, 1), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_reject(pr, WEFT_EIO), WEFT_EINVAL);
  EXPECT_ERR(weft_future_error(f), WEFT_EBROKEN);
  EXPECT_EQ(weft_future_release(f), 0);
  EXPECT_ERR(weft_promise_release(NULL), WEFT_EINVAL);
}

static int dtor_calls;
static void count_dtor(void *p) {
  (void)p;
  dtor_calls++;
}

static void test_promise_settle_twice(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  static int v1, v2;
  dtor_calls = 0;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_EQ(weft_promise_fulfil(pr, &v1, count_dtor), 0);
  EXPECT_ERR(weft_promise_fulfil(pr, &v2, count_dtor), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_fulfil_int(pr, 3), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_reject(pr, WEFT_EIO), WEFT_EALREADY);
  EXPECT_TRUE(weft_future_value(f) == &v1);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  weft_promise_release(pr);
  weft_future_release(f);
  EXPECT_EQ(dtor_calls, 1); /* v1's only: v2 stayed the caller's */

  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_EQ(weft_promise_reject(pr, WEFT_EIO), 0);
  EXPECT_ERR(weft_promise_reject(pr, WEFT_EIO), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_fulfil_int(pr, 3), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_reject(pr, 5), WEFT_EINVAL); /* err >= 0 */
  EXPECT_ERR(weft_future_error(f), WEFT_EIO);
  weft_promise_release(pr);
  weft_future_release(f);

  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_ERR(weft_future_cancel(f), WEFT_EALREADY);
  EXPECT_ERR(weft_promise_fulfil_int(pr, 3), WEFT_ECANCELED);
  EXPECT_ERR(weft_promise_reject(pr, WEFT_EIO), WEFT_ECANCELED);
  weft_promise_release(pr);
  weft_future_release(f);
}

/* ================================================================ */
/* Pools and executors                                                */
/* ================================================================ */

typedef struct gate {
  _Atomic int open, entered;
} gate_t;

/* Holds its worker until the gate opens or its shutdown cancels it. */
static weft_result_t gate_job(weft_job_t *job, void *arg) {
  gate_t *g = arg;
  atomic_fetch_add(&g->entered, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (!atomic_load(&g->open) && weft_job_is_cancelled(job) != 1 &&
         weft_clock_now_ns() < end)
    sched_yield();
  return weft_ok_int(0);
}

/* Holds its thread until the gate opens, cancelled or not: it keeps the
 * pool alive (shutdown waits for it) while the test still calls it. */
static weft_result_t hold_job(weft_job_t *job, void *arg) {
  (void)job;
  gate_t *g = arg;
  atomic_fetch_add(&g->entered, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (!atomic_load(&g->open) && weft_clock_now_ns() < end)
    sched_yield();
  return weft_ok_int(0);
}

static _Atomic int nop_runs;
static weft_result_t nop_job(weft_job_t *job, void *arg) {
  (void)job, (void)arg;
  atomic_fetch_add(&nop_runs, 1);
  return weft_ok_int(0);
}

typedef struct shut_arg {
  weft_pool_t *pool;
  weft_pool_mode_t mode;
} shut_arg_t;

static int shutdown_on_thread(void *p) {
  shut_arg_t *a = p;
  return weft_pool_shutdown(a->pool, a->mode, WEFT_FOREVER, NULL);
}

static void *shutdown_thread(void *p) {
  shut_arg_t *a = p;
  (void)weft_pool_shutdown(a->pool, a->mode, WEFT_FOREVER, NULL);
  return NULL;
}

static _Atomic int exec_runs;
static void count_task(weft_task_t *t) {
  (void)t;
  atomic_fetch_add(&exec_runs, 1);
}

/* Submits (jobs, blocking jobs, executor tasks) while shutdown runs, from
 * another thread: accepted until shutdown begins, then WEFT_ESHUTDOWN;
 * everything accepted ran exactly once. */
static void test_pool_submit_during_shutdown(void) {
  weft_pool_options_t o = {.size = sizeof o, .threads = 2};
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  gate_t g = {0};
  weft_future_t *gf;
  REQUIRE_EQ(weft_pool_submit(pool, gate_job, &g, NULL, &gf), 0);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(&g.entered) == 0 && weft_clock_now_ns() < end)
    sched_yield();
  REQUIRE_EQ(atomic_load(&g.entered), 1);
  atomic_store(&nop_runs, 0);
  atomic_store(&exec_runs, 0);
  shut_arg_t a = {pool, WEFT_POOL_DRAIN};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, shutdown_thread, &a), 0);
  /* submit until refused: the gate job holds the pool alive meanwhile */
  enum { MAX = 1 << 16 };
  static weft_future_t *fs[MAX];
  static weft_task_t tasks[MAX];
  int n = 0, rc = 0, ntasks = 0;
  weft_executor_t *ex = weft_pool_executor(pool);
  while (n < MAX && weft_clock_now_ns() < end) {
    rc = weft_pool_submit(pool, nop_job, NULL, NULL, &fs[n]);
    if (rc != 0)
      break;
    n++;
    tasks[ntasks].run = count_task;
    if (weft_executor_submit(ex, &tasks[ntasks]) == 0)
      ntasks++;
  }
  EXPECT_ERR(rc, WEFT_ESHUTDOWN);
  weft_future_t *f = NULL;
  EXPECT_ERR(weft_pool_submit(pool, nop_job, NULL, NULL, &f), WEFT_ESHUTDOWN);
  EXPECT_ERR(weft_pool_submit_blocking(pool, nop_job, NULL, NULL, &f),
             WEFT_ESHUTDOWN);
  static weft_task_t late;
  late.run = count_task;
  EXPECT_ERR(weft_executor_submit(ex, &late), WEFT_ESHUTDOWN);
  EXPECT_TRUE(f == NULL);
  atomic_store(&g.open, 1);
  pthread_join(th, NULL);
  EXPECT_EQ(atomic_load(&nop_runs), n);
  EXPECT_EQ(atomic_load(&exec_runs), ntasks);
  for (int i = 0; i < n; i++) {
    EXPECT_EQ(weft_future_state(fs[i]), WEFT_FULFILLED);
    weft_future_release(fs[i]);
  }
  weft_future_release(gf);
}

static int arg_dtor_runs;
static void arg_dtor(void *p) {
  (void)p;
  arg_dtor_runs++;
}

/* Shutdown with jobs queued: DRAIN runs each, CANCEL cancels each (its
 * arg_dtor once); a shutdown from the pool's own job is WEFT_EDEADLK. */
typedef struct self_shut {
  weft_pool_t *pool;
  int rc;
} self_shut_t;

static weft_result_t shut_self_job(weft_job_t *job, void *arg) {
  (void)job;
  self_shut_t *s = arg;
  s->rc = weft_pool_shutdown(s->pool, WEFT_POOL_DRAIN, 0, NULL);
  return weft_ok_int(0);
}

static void test_pool_shutdown_with_jobs(void) {
  for (int mode = 0; mode < 2; mode++) {
    weft_pool_options_t o = {.size = sizeof o, .threads = 1};
    weft_pool_t *pool;
    REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
    self_shut_t ss = {pool, 0};
    weft_future_t *sf;
    REQUIRE_EQ(weft_pool_submit(pool, shut_self_job, &ss, NULL, &sf), 0);
    REQUIRE_EQ(weft_future_await(sf, BOUND_MS), 0);
    EXPECT_ERR(ss.rc, WEFT_EDEADLK);
    weft_future_release(sf);
    gate_t g = {0};
    weft_future_t *gf;
    REQUIRE_EQ(weft_pool_submit(pool, gate_job, &g, NULL, &gf), 0);
    enum { N = 100 };
    weft_future_t *fs[N];
    atomic_store(&nop_runs, 0);
    arg_dtor_runs = 0;
    for (int i = 0; i < N; i++)
      REQUIRE_EQ(weft_pool_submit(pool, nop_job, NULL, arg_dtor, &fs[i]), 0);
    atomic_store(&g.open, mode == WEFT_POOL_DRAIN);
    shut_arg_t a = {pool, (weft_pool_mode_t)mode};
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (atomic_load(&g.entered) == 0 && weft_clock_now_ns() < end)
      sched_yield();
    if (mode == WEFT_POOL_CANCEL) {
      /* the gate job is running: shutdown tells it (it returns) and
       * cancels the rest */
      pthread_t th;
      REQUIRE_EQ(pthread_create(&th, NULL, shutdown_thread, &a), 0);
      int64_t end2 = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
      while (weft_future_state(fs[N - 1]) == WEFT_PENDING &&
             weft_clock_now_ns() < end2)
        sched_yield();
      atomic_store(&g.open, 1);
      pthread_join(th, NULL);
    } else {
      EXPECT_EQ(on_thread(shutdown_on_thread, &a), 0);
    }
    for (int i = 0; i < N; i++) {
      EXPECT_EQ(weft_future_state(fs[i]),
                mode == WEFT_POOL_DRAIN ? WEFT_FULFILLED : WEFT_CANCELLED);
      weft_future_release(fs[i]);
    }
    EXPECT_EQ(atomic_load(&nop_runs), mode == WEFT_POOL_DRAIN ? N : 0);
    EXPECT_EQ(arg_dtor_runs, mode == WEFT_POOL_DRAIN ? 0 : N);
    weft_future_release(gf);
  }
}

/* A running job submits while shutdown runs: in DRAIN mode it is accepted
 * and runs (jobs spawned by queued jobs drain too); in CANCEL mode it is
 * refused with WEFT_ESHUTDOWN. Blocking jobs queued behind a busy
 * blocking thread are cancelled (arg_dtor once each) by CANCEL. */
typedef struct spawner {
  weft_pool_t *pool;
  int cancel_mode;
  gate_t gate;
  int rc;
} spawner_t;

static weft_result_t spawn_job(weft_job_t *job, void *arg) {
  spawner_t *sp = arg;
  atomic_fetch_add(&sp->gate.entered, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  /* CANCEL: told, and held until the test's own submits are done (so no
   * worker leaves while one is under way: see the report in
   * docs/misuse.md on submits racing the end of a shutdown) */
  while (weft_clock_now_ns() < end &&
         !(atomic_load(&sp->gate.open) != 0 &&
           (!sp->cancel_mode || weft_job_is_cancelled(job) == 1)))
    sched_yield();
  weft_future_t *f = NULL;
  sp->rc = weft_pool_submit(sp->pool, nop_job, NULL, NULL, &f);
  if (sp->rc == 0)
    weft_future_release(f);
  return weft_ok_int(0);
}

static void test_pool_spawn_during_shutdown(void) {
  for (int mode = 0; mode < 2; mode++) {
    weft_pool_options_t o = {.size = sizeof o, .threads = 2, .blocking_max = 1};
    weft_pool_t *pool;
    REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
    spawner_t sp = {.pool = pool, .cancel_mode = mode, .rc = 12345};
    weft_future_t *sf;
    REQUIRE_EQ(weft_pool_submit(pool, spawn_job, &sp, NULL, &sf), 0);
    gate_t bg = {0};
    weft_future_t *bgf;
    REQUIRE_EQ(weft_pool_submit_blocking(pool, hold_job, &bg, NULL, &bgf), 0);
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (
        (atomic_load(&sp.gate.entered) == 0 || atomic_load(&bg.entered) == 0) &&
        weft_clock_now_ns() < end)
      sched_yield();
    REQUIRE_EQ(atomic_load(&bg.entered), 1);
    enum { NB = 20 };
    weft_future_t *bf[NB];
    arg_dtor_runs = 0;
    atomic_store(&nop_runs, 0);
    for (int i = 0; i < NB; i++)
      REQUIRE_EQ(
          weft_pool_submit_blocking(pool, nop_job, NULL, arg_dtor, &bf[i]), 0);
    /* the spawner holds a CPU worker (so the pool) until its gate opens
     * below; in CANCEL mode the blocking hold job holds the blocking side
     * until the queued blocking jobs are cancelled */
    if (mode == WEFT_POOL_DRAIN)
      atomic_store(&bg.open, 1);
    shut_arg_t a = {pool, (weft_pool_mode_t)mode};
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, shutdown_thread, &a), 0);
    /* wait until shutdown has begun (a submit is refused) */
    weft_future_t *f = NULL;
    int accepted = 0;
    while (weft_clock_now_ns() < end) {
      if (weft_pool_submit(pool, nop_job, NULL, NULL, &f) != 0)
        break;
      weft_future_release(f);
      accepted++;
    }
    atomic_store(&sp.gate.open, 1);
    if (mode == WEFT_POOL_CANCEL) {
      while (weft_future_state(bf[NB - 1]) == WEFT_PENDING &&
             weft_clock_now_ns() < end)
        sched_yield();
      atomic_store(&bg.open, 1);
    }
    pthread_join(th, NULL);
    if (mode == WEFT_POOL_DRAIN) {
      EXPECT_EQ(sp.rc, 0);
      EXPECT_EQ(atomic_load(&nop_runs), accepted + 1 + NB);
      EXPECT_EQ(arg_dtor_runs, 0);
    } else {
      EXPECT_ERR(sp.rc, WEFT_ESHUTDOWN);
      EXPECT_EQ(arg_dtor_runs, NB);
      EXPECT_EQ(weft_future_state(sf), WEFT_CANCELLED);
    }
    for (int i = 0; i < NB; i++) {
      EXPECT_EQ(weft_future_state(bf[i]),
                mode == WEFT_POOL_DRAIN ? WEFT_FULFILLED : WEFT_CANCELLED);
      weft_future_release(bf[i]);
    }
    weft_future_release(sf);
    weft_future_release(bgf);
  }
}

/* Thread executor: destroy from its own thread is WEFT_EDEADLK; tasks
 * submitted before destroy all run. */
typedef struct te_self {
  weft_task_t task;
  weft_thread_executor_t *te;
  int rc;
  _Atomic int done;
} te_self_t;

static void te_destroy_self(weft_task_t *t) {
  te_self_t *s = (te_self_t *)t;
  s->rc = weft_thread_executor_shutdown(s->te);
  atomic_store(&s->done, 1);
}

static void test_thread_executor_misuse(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  te_self_t s = {.te = te};
  s.task.run = te_destroy_self;
  REQUIRE_EQ(weft_executor_submit(weft_thread_executor_get(te), &s.task), 0);
  enum { N = 1000 };
  static weft_task_t tasks[N];
  atomic_store(&exec_runs, 0);
  for (int i = 0; i < N; i++) {
    tasks[i].run = count_task;
    REQUIRE_EQ(weft_executor_submit(weft_thread_executor_get(te), &tasks[i]),
               0);
  }
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
  EXPECT_EQ(atomic_load(&s.done), 1);
  EXPECT_ERR(s.rc, WEFT_EDEADLK);
  EXPECT_EQ(atomic_load(&exec_runs), N);
  EXPECT_ERR(weft_thread_executor_shutdown(NULL), WEFT_EINVAL);
}

/* ================================================================ */
/* NULL arguments, zero sizes, negative timeouts                       */
/* ================================================================ */

static void test_bad_arguments(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f = NULL;
  weft_promise_t *pr = NULL;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  /* loop */
  EXPECT_ERR(weft_loop_run(NULL, WEFT_RUN_NOWAIT), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run(loop, (weft_run_mode_t)7), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(loop, NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(loop, f, -2), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_run_until(NULL, f, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_post(NULL, never_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_post(loop, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stop(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_backend_fd(NULL), WEFT_EINVAL);
  EXPECT_ERR((int)weft_loop_backend_timeout(NULL), WEFT_EINVAL);
  EXPECT_ERR((int)weft_loop_now_ns(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_stats(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_set_stall_hook(NULL, 1, NULL, NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_loop_executor(NULL) == NULL);
  weft_loop_options_t lo = {.size = 1};
  weft_loop_t *l2 = NULL;
  EXPECT_ERR(weft_loop_create(&lo, &l2), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_create(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_create(NULL, &l2), WEFT_EBUSY); /* one per thread */
  /* timers, sleeps, timeouts */
  weft_timer_t t;
  EXPECT_ERR(weft_timer_init(NULL, &t, tother_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(loop, NULL, tother_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_init(loop, &t, NULL, NULL), WEFT_EINVAL);
  int hits = 0;
  REQUIRE_EQ(weft_timer_init(loop, &t, tother_fn, &hits), 0);
  EXPECT_ERR(weft_timer_start(&t, -1, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_timer_start(&t, 0, -1), WEFT_EINVAL);
  EXPECT_EQ(weft_timer_is_active(&t), 0);
  EXPECT_EQ(weft_timer_is_active(NULL), false);
  weft_future_t *g = NULL;
  EXPECT_ERR(weft_loop_sleep(loop, -1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_sleep(loop, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_timeout(loop, f, -1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_loop_timeout(loop, NULL, 0, &g), WEFT_EINVAL);
  EXPECT_TRUE(g == NULL);
  /* watchers and signals */
  weft_io_t io;
  EXPECT_ERR(weft_io_start(loop, &io, -1, WEFT_READABLE, io_other_fn, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, 0, 0, io_other_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, 0, 8, io_other_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &io, 0, WEFT_READABLE, NULL, NULL),
             WEFT_EINVAL);
  weft_signal_t s;
  EXPECT_ERR(weft_signal_start(loop, &s, 0, sig_other_fn, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, SIGKILL, sig_other_fn, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, SIGSTOP, sig_other_fn, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_start(loop, &s, 4096, sig_other_fn, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_signal_next(loop, SIGKILL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_signal_next(loop, SIGUSR1, NULL), WEFT_EINVAL);
  /* sockets: zero sizes, NULL buffers */
  pair_t p;
  make_pair(loop, &p);
  char buf[4];
  EXPECT_ERR(weft_socket_read(p.a, buf, 0, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(p.a, NULL, 4, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(p.a, buf, 4, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(NULL, buf, 4, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_exactly(p.a, buf, 0, &g), WEFT_EINVAL);
  /* a write of 0 bytes is no error: it settles with 0 in its turn */
  REQUIRE_EQ(weft_socket_write(p.a, buf, 0, &g), 0);
  EXPECT_EQ(weft_loop_run_until(loop, g, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(g), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(g), 0);
  weft_future_release(g);
  g = NULL;
  EXPECT_ERR(weft_socket_write(p.a, NULL, 1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(NULL, buf, 1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_shutdown(NULL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_shutdown(p.a, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(p.a, &g), WEFT_EINVAL); /* not a listener */
  EXPECT_ERR(weft_socket_read(p.listener, buf, 4, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(p.listener, buf, 1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_close(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_listen(loop, NULL, 0, &p.a), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect(loop, NULL, &g), WEFT_EINVAL);
  EXPECT_EQ(weft_socket_fd(NULL), -1);
  EXPECT_TRUE(g == NULL);
  weft_socket_close(p.a);
  weft_socket_close(p.b);
  weft_socket_close(p.listener);
  drop_pair(&p);
  /* futures */
  EXPECT_ERR(weft_promise_create(NULL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await(NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_future_await(f, -2), WEFT_EINVAL);
  /* a pending future awaited on the loop thread: never a hang */
  EXPECT_ERR(weft_future_await(f, WEFT_FOREVER), WEFT_EDEADLK);
  EXPECT_ERR(weft_future_cancel(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_future_then(f, NULL, NULL, NULL, NULL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_future_all(NULL, 1, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_fulfil(NULL, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_reject(pr, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_promise_on_cancel(pr, NULL, NULL), WEFT_EINVAL);
  /* pools and executors */
  weft_pool_options_t po = {.size = 1};
  weft_pool_t *pool = NULL;
  EXPECT_ERR(weft_pool_create(&po, &pool), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_create(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_submit(NULL, nop_job, NULL, NULL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_submit_blocking(NULL, nop_job, NULL, NULL, &g),
             WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(NULL, WEFT_POOL_DRAIN, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_stats(NULL, NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_pool_executor(NULL) == NULL);
  EXPECT_EQ(weft_job_is_cancelled(NULL), false);
  po.size = sizeof po;
  po.threads = 1;
  REQUIRE_EQ(weft_pool_create(&po, &pool), 0);
  EXPECT_ERR(weft_pool_submit(pool, NULL, NULL, NULL, &g), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_submit(pool, nop_job, NULL, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(pool, (weft_pool_mode_t)9, 0, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -2, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL), 0);
  EXPECT_ERR(weft_executor_submit(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_thread_executor_create(NULL), WEFT_EINVAL);
  EXPECT_TRUE(weft_thread_executor_get(NULL) == NULL);
  EXPECT_TRUE(g == NULL);
  weft_promise_release(pr);
  weft_future_release(f);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* Undefined rows: what ASan reports (ASan builds only)               */
/* ================================================================ */

#if defined(__SANITIZE_ADDRESS__)
#define MISUSE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MISUSE_ASAN 1
#endif
#endif

#ifdef MISUSE_ASAN
/* Each runs one call through a pointer whose object is gone. */
static void ub_future_after_release(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  if (weft_promise_create(&pr, &f) != 0)
    _exit(3);
  weft_promise_fulfil_int(pr, 1);
  weft_promise_release(pr);
  weft_future_release(f);
  (void)weft_future_state(f);
}

static void ub_cancel_after_release(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  if (weft_promise_create(&pr, &f) != 0)
    _exit(3);
  weft_promise_release(pr);
  weft_future_release(f);
  (void)weft_future_cancel(f);
}

static void ub_promise_after_release(void) {
  weft_promise_t *pr;
  weft_future_t *f;
  if (weft_promise_create(&pr, &f) != 0)
    _exit(3);
  weft_future_release(f);
  weft_promise_release(pr);
  (void)weft_promise_fulfil_int(pr, 1);
}

static void ub_socket_after_close(void) {
  weft_loop_t *loop = NULL;
  if (weft_loop_create(NULL, &loop) != 0)
    _exit(3);
  weft_addr_t addr;
  weft_socket_t *l;
  weft_addr_init_ip("127.0.0.1", 0, &addr);
  if (weft_socket_listen(loop, &addr, 0, &l) != 0)
    _exit(3);
  weft_socket_close(l);
  weft_future_t *f;
  (void)weft_socket_accept(l, &f);
}

static void ub_post_after_close(void) {
  weft_loop_t *loop = NULL;
  if (weft_loop_create(NULL, &loop) != 0)
    _exit(3);
  weft_loop_close(loop);
  (void)weft_loop_post(loop, never_fn, NULL);
}

static void ub_pool_after_shutdown(void) {
  weft_pool_options_t o = {.size = sizeof o, .threads = 1};
  weft_pool_t *pool;
  if (weft_pool_create(&o, &pool) != 0)
    _exit(3);
  weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL);
  weft_future_t *f;
  (void)weft_pool_submit(pool, nop_job, NULL, NULL, &f);
}

static void ub_pool_shutdown_twice(void) {
  weft_pool_options_t o = {.size = sizeof o, .threads = 1};
  weft_pool_t *pool;
  if (weft_pool_create(&o, &pool) != 0)
    _exit(3);
  weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL);
  (void)weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL);
}

static void ub_executor_after_destroy(void) {
  weft_thread_executor_t *te;
  if (weft_thread_executor_create(&te) != 0)
    _exit(3);
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_thread_executor_shutdown(te);
  static weft_task_t t;
  t.run = count_task;
  (void)weft_executor_submit(ex, &t);
}

/* Run fn in a child; its stderr must carry an AddressSanitizer report
 * naming `kind`, and it must not exit 0. Bounded: the child is killed
 * after BOUND_MS. */
static void expect_asan(void (*fn)(void), const char *kind) {
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  fflush(NULL);
  pid_t pid = fork();
  REQUIRE_EQ(pid >= 0, 1);
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    fn();
    _exit(0); /* not caught */
  }
  close(p[1]);
  static char out[1 << 16];
  size_t n = 0;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  for (;;) {
    struct pollfd pf = {p[0], POLLIN, 0};
    int left = (int)((end - weft_clock_now_ns()) / 1000000);
    if (left <= 0 || poll(&pf, 1, left) <= 0)
      break;
    ssize_t k = read(p[0], out + n, sizeof out - 1 - n);
    if (k <= 0)
      break;
    n += (size_t)k;
  }
  out[n] = 0;
  close(p[0]);
  kill(pid, SIGKILL); /* (gone already, unless it hung) */
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(!(WIFEXITED(st) && WEXITSTATUS(st) == 0));
  bool found = strstr(out, "ERROR: AddressSanitizer") != NULL &&
               strstr(out, kind) != NULL;
  if (!found)
    fprintf(stderr, "\n--- child report (expected %s) ---\n%.2000s\n", kind,
            out);
  EXPECT_TRUE(found);
}
#endif

/* The undefined rows of docs/misuse.md, under ASan: each is reported (the
 * free lists poison what they hold: use-after-poison; memory given back to
 * malloc: heap-use-after-free). Elsewhere this test checks nothing. */
static void test_undefined_under_asan(void) {
#ifdef MISUSE_ASAN
  expect_asan(ub_future_after_release, "use-after-poison");
  expect_asan(ub_cancel_after_release, "use-after-poison");
  expect_asan(ub_promise_after_release, "use-after-poison");
  expect_asan(ub_socket_after_close, "use-after-poison");
  expect_asan(ub_post_after_close, "heap-use-after-free");
  expect_asan(ub_pool_after_shutdown, "heap-use-after-free");
  expect_asan(ub_pool_shutdown_twice, "heap-use-after-free");
  expect_asan(ub_executor_after_destroy, "use-after-poison");
#endif
}

static const test_case_t cases[] = {
    {"timer: start while active restarts it", test_timer_start_active},
    {"timer: init while active is WEFT_EBUSY", test_timer_init_active},
    {"timer: init while active on another loop is WEFT_EBUSY",
     test_timer_init_active_other_loop},
    {"timer: stop never started, twice, zeroed", test_timer_stop_inactive},
    {"timer: start/stop/init off the loop thread is WEFT_EPERM",
     test_timer_foreign_thread},
    {"timer: stop (twice) in its own callback", test_timer_stop_in_callback},
    {"io: start while active is WEFT_EINVAL", test_io_start_active},
    {"io: start while active on another loop is WEFT_EINVAL",
     test_io_start_active_other_loop},
    {"io: stop never started, twice; modify inactive", test_io_stop_inactive},
    {"io: stop/modify/start off the loop thread is WEFT_EPERM",
     test_io_foreign_thread},
    {"io: stop (twice) in its own callback", test_io_stop_in_callback},
    {"signal: start while active is WEFT_EINVAL", test_signal_start_active},
    {"signal: start while active on another loop is WEFT_EINVAL",
     test_signal_start_active_other_loop},
    {"signal: stop inactive, twice, off the loop thread",
     test_signal_stop_inactive_and_foreign},
    {"signal: stop (twice) in its own callback", test_signal_stop_in_callback},
    {"handles restarted from their close callbacks: WEFT_ESHUTDOWN",
     test_restart_in_close_callback},
    {"loop: close/run from another thread is WEFT_EPERM",
     test_loop_foreign_thread},
    {"loop: close twice, calls after close are WEFT_EPERM",
     test_loop_close_twice},
    {"loop: close/run from its own callback is WEFT_EBUSY",
     test_loop_close_in_callback},
    {"loop: post/submit to a closing loop is WEFT_ESHUTDOWN",
     test_post_to_closing_loop},
    {"socket: use and close again after close", test_socket_use_after_close},
    {"socket: use and close again during loop close",
     test_socket_use_after_loop_close},
    {"socket: closed (twice) in its own read's continuation",
     test_socket_close_in_own_continuation},
    {"socket: take after close, twice, pending, not a socket",
     test_socket_take_misuse},
    {"socket: calls off the loop thread are WEFT_EPERM",
     test_socket_foreign_thread},
    {"future: release and retain past the last handle",
     test_future_release_twice},
    {"promise: release twice, settle after release",
     test_promise_release_twice},
    {"promise: fulfil/reject twice, after cancel", test_promise_settle_twice},
    {"pool: submit/executor during shutdown is WEFT_ESHUTDOWN",
     test_pool_submit_during_shutdown},
    {"pool: shutdown with jobs queued, from its own job",
     test_pool_shutdown_with_jobs},
    {"pool: jobs and blocking jobs during DRAIN and CANCEL shutdown",
     test_pool_spawn_during_shutdown},
    {"thread executor: destroy from itself, tasks queued",
     test_thread_executor_misuse},
    {"NULL arguments, zero sizes, negative timeouts", test_bad_arguments},
    {"undefined rows are reported by ASan (ASan builds)",
     test_undefined_under_asan},
    {NULL, NULL}};
const test_suite_t suite_misuse = {"misuse", cases};
