/* SPDX-License-Identifier: MIT */
/* tests/test_net_cancel.c: cancelling stream operations: a read cancelled
 * on the loop thread (its buffer freed at once, so ASan sees any later
 * touch), and reads and writes cancelled from another thread while the
 * loop runs them: no byte lost, none sent from a buffer given back. */
#include "net_util.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- cancel a read in flight, then reuse (here: free) its buffer ---- */

static void test_cancel_read(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char *buf = malloc(64);
  REQUIRE_EQ(buf != NULL, 1);
  weft_future_t *r;
  REQUIRE_EQ(weft_socket_read(s, buf, 64, &r), 0);
  weft_loop_run(loop, WEFT_RUN_NOWAIT); /* it is armed and waiting */
  EXPECT_EQ(weft_future_state(r), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(r), 0);
  EXPECT_EQ(weft_future_state(r), WEFT_CANCELLED);
  free(buf); /* ASan reports any later write into it */
  weft_future_release(r);
  REQUIRE_EQ(write(peer, "abcdef", 6), 6);
  weft_loop_run(loop, WEFT_RUN_NOWAIT);
  /* Nothing was lost: the next read gets the bytes. */
  char got[16];
  REQUIRE_EQ(weft_socket_read_exactly(s, got, 6, &r), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(r), 6);
  EXPECT_EQ(memcmp(got, "abcdef", 6), 0);
  weft_future_release(r);
  /* Cancel a queued write the same way: never sent. */
  raw_pair_end(loop, s, ls, peer);
}

/* Cancel from another thread while the loop runs: after the cancel returns
 * the buffer is the caller's (freed here), and no byte is lost, whichever
 * side won. Many rounds, with data arriving at the same time. */
static void test_cancel_read_cross_thread(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  long received = 0, sent = 0, cancelled = 0;
  char expect_next = 0;
  for (int round = 0; round < 300; round++) {
    char *buf = malloc(4);
    REQUIRE_EQ(buf != NULL, 1);
    xcancel_t x = {0};
    REQUIRE_EQ(weft_socket_read(s, buf, 4, &x.f), 0);
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, cancel_thread, &x), 0);
    char b = (char)(sent & 0x7f);
    switch (round % 3) {
    case 0: /* cancel first, data after: the next read must get it */
      atomic_store(&x.go, 1);
      pthread_join(th, NULL);
      REQUIRE_EQ(write(peer, &b, 1), 1);
      break;
    case 1: /* cancel and data at the same time, loop running */
      atomic_store(&x.go, 1);
      REQUIRE_EQ(write(peer, &b, 1), 1);
      weft_loop_run_until(loop, x.f, BOUND_MS);
      pthread_join(th, NULL);
      break;
    default: /* data first, the loop reads, then the cancel loses */
      REQUIRE_EQ(write(peer, &b, 1), 1);
      weft_loop_run_until(loop, x.f, BOUND_MS);
      atomic_store(&x.go, 1);
      pthread_join(th, NULL);
      break;
    }
    sent++;
    if (weft_future_state(x.f) == WEFT_FULFILLED) {
      long n = weft_future_int(x.f);
      for (long i = 0; i < n; i++) {
        EXPECT_EQ(buf[i], expect_next);
        expect_next = (char)((expect_next + 1) & 0x7f);
      }
      received += n;
      EXPECT_ERR(x.rc, WEFT_EALREADY);
    } else {
      EXPECT_EQ(weft_future_state(x.f), WEFT_CANCELLED);
      EXPECT_EQ(x.rc, 0);
      cancelled++;
    }
    free(buf);
    weft_future_release(x.f);
  }
  /* Whatever the cancels interrupted is still there, in order. */
  while (received < sent) {
    char buf[64];
    weft_future_t *r;
    REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r), 0);
    REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
    REQUIRE_EQ(weft_future_state(r), WEFT_FULFILLED);
    long n = weft_future_int(r);
    for (long i = 0; i < n; i++) {
      EXPECT_EQ(buf[i], expect_next);
      expect_next = (char)((expect_next + 1) & 0x7f);
    }
    received += n;
    weft_future_release(r);
  }
  EXPECT_EQ(received, sent);
  EXPECT_TRUE(cancelled > 0);
  raw_pair_end(loop, s, ls, peer);
}

/* Cancel writes from another thread while the loop hands them to the
 * kernel (just before or inside the loop's wait, under the op's guard): once a cancel returns 0 the buffer
 * is the caller's again, and the cancelling thread overwrites it at once
 * with 'X'; the peer must never see an 'X'. A cancel that lost finds its write
 * fulfilled, and every fulfilled write's bytes arrive. */
enum { XW_ROUNDS = 600, XW_LEN = 8 };

static void test_cancel_write_cross_thread(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  static char bufs[XW_ROUNDS][XW_LEN];
  weft_future_t *fs[XW_ROUNDS];
  long cancelled = 0, lost = 0;
  for (int round = 0; round < XW_ROUNDS; round++) {
    memset(bufs[round], 'a' + round % 26, XW_LEN);
    xcancel_t x = {0};
    x.poison = bufs[round];
    x.poison_len = XW_LEN;
    REQUIRE_EQ(weft_socket_write(s, bufs[round], XW_LEN, &x.f), 0);
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, cancel_thread, &x), 0);
    switch (round % 3) {
    case 0: /* cancel before the loop runs */
      atomic_store(&x.go, 1);
      pthread_join(th, NULL);
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
      break;
    case 1: /* cancel while the loop hands it over */
      atomic_store(&x.go, 1);
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
      pthread_join(th, NULL);
      break;
    default: /* cancel after */
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
      atomic_store(&x.go, 1);
      pthread_join(th, NULL);
      break;
    }
    if (x.rc == 0) {
      EXPECT_EQ(weft_future_state(x.f), WEFT_CANCELLED);
      cancelled++;
    } else {
      EXPECT_ERR(x.rc, WEFT_EALREADY);
      lost++;
    }
    fs[round] = x.f;
  }
  /* everything settles; once the loop has run the last cancel's removal,
   * nothing is left queued */
  for (int round = 0; round < XW_ROUNDS; round++) {
    EXPECT_EQ(weft_loop_run_until(loop, fs[round], BOUND_MS), 0);
    EXPECT_TRUE(weft_future_state(fs[round]) == WEFT_FULFILLED ||
                weft_future_state(fs[round]) == WEFT_CANCELLED);
  }
  weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  weft_socket_close(s);
  long got = 0, poisoned = 0, fulfilled = 0;
  for (int round = 0; round < XW_ROUNDS; round++) {
    fulfilled += weft_future_state(fs[round]) == WEFT_FULFILLED;
    weft_future_release(fs[round]);
  }
  char b[4096];
  ssize_t n;
  while ((n = read(peer, b, sizeof b)) > 0) {
    for (ssize_t i = 0; i < n; i++)
      poisoned += b[i] == 'X';
    got += n;
  }
  EXPECT_EQ(poisoned, 0);
  EXPECT_TRUE(got >= fulfilled * XW_LEN);
  EXPECT_TRUE(got <= (long)XW_ROUNDS * XW_LEN);
  EXPECT_EQ(cancelled + lost, XW_ROUNDS);
  /* both ends of the race were met */
  EXPECT_TRUE(cancelled > 0);
  EXPECT_TRUE(lost > 0);
  close(peer);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"cancel a read, free its buffer", test_cancel_read},
    {"cancel reads from another thread", test_cancel_read_cross_thread},
    {"cancel writes from another thread", test_cancel_write_cross_thread},
    {NULL, NULL}};

const test_suite_t suite_net_cancel = {"net_cancel", cases};
