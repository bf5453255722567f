/* SPDX-License-Identifier: MIT */
/* tests/test_net_settle.c: how stream operations settle: a future settled
 * on return used from another thread, operations only a watch holds (on
 * the loop and on a pool worker), and a watch behind a timed-out await. */
#include "net_util.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A future an operation settled before returning it is a future like any
 * other: another thread can await it, cancel it (too late) and release it
 * (its op then goes back to the allocator, not to the loop's list). */
typedef struct settled_use {
  weft_future_t *f;
  intptr_t want;
  int await_rc, cancel_rc;
  intptr_t value;
} settled_use_t;

static void *use_settled(void *arg) {
  settled_use_t *u = arg;
  u->await_rc = weft_future_await(u->f, BOUND_MS);
  u->cancel_rc = weft_future_cancel(u->f);
  u->value = weft_future_int(u->f);
  weft_future_release(u->f);
  return NULL;
}

static void test_settled_on_return(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls, *srv, *cli;
  connected_pair(loop, &ls, &srv, &cli);
  enum { ROUNDS = 200 };
  long at_once = 0, reads_at_once = 0;
  long await_ok = 0, cancel_ok = 0, value_ok = 0;
  for (int i = 0; i < ROUNDS; i++) {
    char msg[16], got[16];
    memset(msg, 'a' + i % 26, sizeof msg);
    weft_future_t *w, *r;
    REQUIRE_EQ(weft_socket_write(cli, msg, sizeof msg, &w), 0);
    at_once += weft_future_state(w) == WEFT_FULFILLED;
    /* sent at the loop's next wait */
    REQUIRE_EQ(weft_loop_run_until(loop, w, BOUND_MS), 0);
    settled_use_t u = {.f = w};
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, use_settled, &u), 0);
    pthread_join(th, NULL);
    await_ok += u.await_rc == 0;
    cancel_ok += u.cancel_rc == WEFT_EALREADY;
    value_ok += u.value == (intptr_t)sizeof msg;
    /* the bytes arrive; once the loop has seen them, a read takes them at
     * once */
    struct pollfd pf = {.fd = weft_socket_fd(srv), .events = POLLIN};
    REQUIRE_EQ(poll(&pf, 1, BOUND_MS), 1);
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
    REQUIRE_EQ(weft_socket_read_exactly(srv, got, sizeof got, &r), 0);
    reads_at_once += weft_future_state(r) == WEFT_FULFILLED;
    REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
    EXPECT_EQ(weft_future_int(r), (intptr_t)sizeof got);
    EXPECT_EQ(memcmp(got, msg, sizeof msg), 0);
    weft_future_release(r);
  }
  EXPECT_EQ(at_once, 0);
  EXPECT_EQ(await_ok, ROUNDS);
  EXPECT_EQ(cancel_ok, ROUNDS);
  EXPECT_EQ(value_ok, ROUNDS);
  EXPECT_EQ(reads_at_once, ROUNDS);
  weft_socket_close(cli);
  weft_socket_close(srv);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* A read or write whose future only a watch holds (the handle went to the
 * watch) is settled without its guard and claim: no other thread can reach
 * it until the watch runs. The watch still runs once with the operation's
 * result, on the loop or on a pool worker; and a future someone still holds
 * a handle to stays cancellable from another thread. Reads of 1 byte to
 * 4 KiB and of 1 MiB (whose writes wait in the queue too). */
typedef struct watched {
  weft_promise_t *done; /* settled by the watch, on whichever thread */
  _Atomic int runs;
  int state;
  intptr_t value;
} watched_t;

static void on_watched(void *arg, weft_future_t *f) {
  watched_t *w = arg;
  weft_promise_t *done = w->done; /* w is the test's again once it is */
  w->state = (int)weft_future_state(f);
  w->value = w->state == WEFT_FULFILLED ? weft_future_int(f)
                                        : weft_future_error(f);
  atomic_fetch_add(&w->runs, 1);
  weft_promise_fulfil_int(done, 0);
  weft_promise_release(done);
}

static void watch_op(weft_future_t *f, weft_executor_t *ex, watched_t *w,
                     weft_future_t **done) {
  REQUIRE_EQ(weft_promise_create(&w->done, done), 0);
  REQUIRE_EQ(weft_future_watch(f, ex, on_watched, w, NULL), 0);
}

/* How many rounds' watches saw the state, the value and one run each. */
typedef struct tally {
  long state, value, runs;
} tally_t;

static void tally(tally_t *t, const watched_t *w, int state, intptr_t value) {
  t->state += w->state == state;
  t->value += w->value == value;
  t->runs += atomic_load(&w->runs) == 1;
}

static void test_watched_ops(void) {
  weft_loop_t *loop = new_loop();
  weft_pool_options_t o = {sizeof o, 2, 0, 0, {0}};
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_socket_t *ls, *srv, *cli;
  connected_pair(loop, &ls, &srv, &cli);
  int small = 64 << 10; /* so that 1 MiB has to wait */
  REQUIRE_EQ(setsockopt(weft_socket_fd(cli), SOL_SOCKET, SO_SNDBUF, &small,
                        sizeof small),
             0);
  REQUIRE_EQ(setsockopt(weft_socket_fd(srv), SOL_SOCKET, SO_RCVBUF, &small,
                        sizeof small),
             0);
  enum { ROUNDS = 400, MIB = 1 << 20 };
  unsigned char *src = malloc(MIB), *dst = malloc(MIB);
  REQUIRE_EQ(src != NULL, 1);
  REQUIRE_EQ(dst != NULL, 1);
  uint64_t rng = 42;
  tally_t reads = {0}, writes = {0}, cancels = {0};
  long read_data_ok = 0, cancel_rc_ok = 0, watched_writes = 0;
  for (int i = 0; i < ROUNDS; i++) {
    size_t n = i % 8 == 7 ? MIB : 1 + (size_t)(rng_next(&rng) % 4096);
    weft_executor_t *ex = i % 2 ? weft_pool_executor(pool)
                                : weft_loop_executor(loop);
    watched_t rw = {0}, ww = {0};
    weft_future_t *r, *rdone, *w, *wdone = NULL;
    REQUIRE_EQ(weft_socket_read_exactly(srv, dst, n, &r), 0);
    REQUIRE_EQ(weft_future_state(r), WEFT_PENDING); /* nothing sent yet */
    if (i % 4 == 1) { /* a handle kept: a cancel from elsewhere still works */
      REQUIRE_EQ(weft_future_retain(r), 0);
      watch_op(r, ex, &rw, &rdone);
      xcancel_t x = {.f = r, .go = 1};
      pthread_t th;
      REQUIRE_EQ(pthread_create(&th, NULL, cancel_thread, &x), 0);
      pthread_join(th, NULL);
      REQUIRE_EQ(weft_loop_run_until(loop, rdone, BOUND_MS), 0);
      cancel_rc_ok += x.rc == 0;
      tally(&cancels, &rw, WEFT_CANCELLED, WEFT_ECANCELED);
      weft_future_release(r);
      weft_future_release(rdone);
      continue;
    }
    watch_op(r, ex, &rw, &rdone);
    fill(src, n, (uint64_t)i);
    REQUIRE_EQ(weft_socket_write(cli, src, n, &w), 0);
    if (weft_future_state(w) == WEFT_PENDING) {
      /* as every write: it waits for the loop */
      watch_op(w, weft_loop_executor(loop), &ww, &wdone);
      watched_writes++;
    } else {
      writes.state += weft_future_state(w) == WEFT_FULFILLED;
      writes.value += weft_future_int(w) == (intptr_t)n;
      weft_future_release(w);
    }
    REQUIRE_EQ(weft_loop_run_until(loop, rdone, BOUND_MS), 0);
    tally(&reads, &rw, WEFT_FULFILLED, (intptr_t)n);
    read_data_ok += memcmp(src, dst, n) == 0;
    weft_future_release(rdone);
    if (wdone != NULL) {
      REQUIRE_EQ(weft_loop_run_until(loop, wdone, BOUND_MS), 0);
      tally(&writes, &ww, WEFT_FULFILLED, (intptr_t)n);
      weft_future_release(wdone);
    }
  }
  EXPECT_EQ(cancel_rc_ok, ROUNDS / 4);
  EXPECT_EQ(cancels.state, ROUNDS / 4);
  EXPECT_EQ(cancels.value, ROUNDS / 4);
  EXPECT_EQ(cancels.runs, ROUNDS / 4);
  EXPECT_EQ(reads.state, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(reads.value, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(reads.runs, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(read_data_ok, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(writes.state, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(writes.value, ROUNDS - ROUNDS / 4);
  EXPECT_EQ(writes.runs, watched_writes); /* only watched writes run one */
  /* every write waits for the loop's next wait */
  EXPECT_EQ(watched_writes, ROUNDS - ROUNDS / 4);
  free(src);
  free(dst);
  weft_socket_close(cli);
  weft_socket_close(srv);
  weft_socket_close(ls);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* An await that timed out leaves its waiter on the future's list, and a
 * watch given the handle afterwards sits in front of it, in the op's room
 * for a watch. The op must stay shared then: its settle wakes the waiter
 * too, which frees it (LeakSanitizer would report it otherwise), and the
 * watch runs once with the read's result. */
static void *await_briefly(void *arg) {
  return (void *)(intptr_t)weft_future_await(arg, 1);
}

static void test_watch_after_await_timeout(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char b[8];
  weft_future_t *r, *rdone;
  REQUIRE_EQ(weft_socket_read(s, b, sizeof b, &r), 0);
  pthread_t th;
  void *res;
  REQUIRE_EQ(pthread_create(&th, NULL, await_briefly, r), 0);
  pthread_join(th, &res);
  EXPECT_EQ((int)(intptr_t)res, WEFT_ETIMEDOUT);
  watched_t w = {0};
  watch_op(r, weft_loop_executor(loop), &w, &rdone);
  REQUIRE_EQ(send(peer, "hi", 2, 0), 2);
  EXPECT_EQ(weft_loop_run_until(loop, rdone, BOUND_MS), 0);
  EXPECT_EQ(atomic_load(&w.runs), 1);
  EXPECT_EQ(w.state, WEFT_FULFILLED);
  EXPECT_EQ(w.value, 2);
  weft_future_release(rdone);
  raw_pair_end(loop, s, ls, peer);
}

static const test_case_t cases[] = {
    {"operations settled on return", test_settled_on_return},
    {"operations only a watch holds", test_watched_ops},
    {"a watch behind a timed-out await", test_watch_after_await_timeout},
    {NULL, NULL}};

const test_suite_t suite_net_settle = {"net_settle", cases};
