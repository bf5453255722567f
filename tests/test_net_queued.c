/* SPDX-License-Identifier: MIT */
/* tests/test_net_queued.c: weft_socket_write_queued means the same on both
 * backends: writes the kernel takes at once, a peer that does not read,
 * and a write cancelled inside a ring send. */
#include "net_util.h"

#include <linux/sockios.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- weft_socket_write_queued means the same on both backends ---- */

/* A raw socket with a receive buffer of rcvbuf bytes (0: the default),
 * connected to a; set before the connect, so the window can use it. */
static int raw_connect_rcvbuf(const weft_addr_t *a, int rcvbuf) {
  int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE_EQ(fd >= 0, 1);
  if (rcvbuf > 0)
    REQUIRE_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf),
               0);
  REQUIRE_EQ(connect(fd, (const struct sockaddr *)&a->ss, a->len), 0);
  return fd;
}

/* Read n bytes from fd (bounded); the count read. */
static size_t raw_read_n(int fd, char *buf, size_t n) {
  size_t got = 0;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (got < n && weft_clock_now_ns() < end) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 100) != 1)
      continue;
    ssize_t k = read(fd, buf + got, n - got);
    if (k <= 0)
      break;
    got += (size_t)k;
  }
  return got;
}

enum { QW_N = 64, QW_LEN = 4096, QW_BIG = 1 << 20 };

typedef struct qw {
  long settled, fulfilled, len_ok;
  intptr_t len; /* of each write */
} qw_t;

static weft_result_t qw_done(void *arg, weft_future_t *f) {
  qw_t *q = arg;
  q->settled++;
  q->fulfilled += weft_future_state(f) == WEFT_FULFILLED;
  q->len_ok += weft_future_int(f) == q->len;
  return weft_ok_int(0);
}

/* 64 writes of 4 KiB that the kernel takes at once (socket buffers of
 * 1 MiB on both ends): once the loop has handed them over (by the first
 * write's settling, on either backend) every one has settled and nothing
 * is queued; the peer then reads every byte, in order. */
static void test_write_queued_taken(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int peer = raw_connect_rcvbuf(&addr, QW_BIG);
  weft_socket_t *s = accept_one(loop, ls);
  int big = QW_BIG;
  REQUIRE_EQ(setsockopt(weft_socket_fd(s), SOL_SOCKET, SO_SNDBUF, &big,
                        sizeof big),
             0);
  char *data = malloc((size_t)QW_N * QW_LEN),
       *got = malloc((size_t)QW_N * QW_LEN);
  REQUIRE_EQ(data != NULL, 1);
  REQUIRE_EQ(got != NULL, 1);
  fill((unsigned char *)data, (size_t)QW_N * QW_LEN, 14);
  qw_t q = {.len = QW_LEN};
  weft_future_t *first = NULL;
  for (int i = 0; i < QW_N; i++) {
    weft_future_t *w;
    REQUIRE_EQ(weft_socket_write(s, data + (size_t)i * QW_LEN, QW_LEN, &w), 0);
    if (i == 0) {
      first = w;
      weft_future_retain(first);
    }
    chain(loop, w, qw_done, &q);
  }
  /* before the loop turns: all of it (handed over at the next wait) */
  EXPECT_EQ(weft_socket_write_queued(s), (size_t)QW_N * QW_LEN);
  REQUIRE_EQ(weft_loop_run_until(loop, first, BOUND_MS), 0);
  weft_loop_run(loop, WEFT_RUN_NOWAIT); /* the continuations */
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  EXPECT_EQ(q.settled, QW_N);
  REQUIRE_EQ(drive(loop, &q.settled, QW_N, BOUND_MS), 1); /* (if not) */
  EXPECT_EQ(q.fulfilled, QW_N);
  EXPECT_EQ(q.len_ok, QW_N);
  EXPECT_EQ(raw_read_n(peer, got, (size_t)QW_N * QW_LEN),
            (size_t)QW_N * QW_LEN);
  EXPECT_EQ(memcmp(got, data, (size_t)QW_N * QW_LEN), 0);
  weft_future_release(first);
  raw_pair_end(loop, s, ls, peer);
  free(data);
  free(got);
}

enum { SP_N = 32, SP_LEN = 64 * 1024, SP_BUF = 16 * 1024 };

/* Read from fd (nonblocking reads; the loop does not run) until the
 * kernel holds nothing more for it: from's send queue (SIOCOUTQ) and fd's
 * receive queue are empty. Bounded; the count read into buf. */
static size_t raw_drain(int fd, int from, char *buf, size_t cap) {
  size_t got = 0;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (weft_clock_now_ns() < end) {
    ssize_t k = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
    if (k > 0) {
      got += (size_t)k;
      continue;
    }
    int outq = -1, inq = -1;
    REQUIRE_EQ(ioctl(from, SIOCOUTQ, &outq), 0);
    REQUIRE_EQ(ioctl(fd, FIONREAD, &inq), 0);
    if (outq == 0 && inq == 0)
      break;
    struct pollfd pf = {fd, POLLIN, 0};
    (void)poll(&pf, 1, 10);
  }
  return got;
}

/* A peer that does not read (small socket buffers on both ends): what
 * the socket has no room for stays queued, and the figure is exactly the
 * bytes written less those the kernel took, which the peer then gets
 * without the loop running; one more write adds its length; once the
 * peer reads, every byte arrives in order and the figure falls to 0. */
static void test_write_queued_slow_peer(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int peer = raw_connect_rcvbuf(&addr, SP_BUF);
  weft_socket_t *s = accept_one(loop, ls);
  int sfd = weft_socket_fd(s), small = SP_BUF;
  REQUIRE_EQ(setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  size_t total = (size_t)SP_N * SP_LEN, extra = 1000;
  char *data = malloc(total + extra), *got = malloc(total + extra);
  REQUIRE_EQ(data != NULL, 1);
  REQUIRE_EQ(got != NULL, 1);
  fill((unsigned char *)data, total + extra, 15);
  qw_t q = {.len = SP_LEN};
  for (int i = 0; i < SP_N; i++) {
    weft_future_t *w;
    REQUIRE_EQ(weft_socket_write(s, data + (size_t)i * SP_LEN, SP_LEN, &w), 0);
    chain(loop, w, qw_done, &q);
  }
  for (int i = 0; i < 5; i++) /* the writes go to the kernel */
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  size_t queued = weft_socket_write_queued(s);
  EXPECT_TRUE(queued > 0);
  EXPECT_TRUE(queued < total);
  EXPECT_TRUE(q.settled < SP_N);
  size_t taken = raw_drain(peer, sfd, got, total + extra);
  EXPECT_EQ(taken, total - queued);
  EXPECT_EQ(memcmp(got, data, taken), 0);
  EXPECT_EQ(weft_socket_write_queued(s), queued); /* the loop did not run */
  weft_future_t *w;
  REQUIRE_EQ(weft_socket_write(s, data + total, extra, &w), 0);
  EXPECT_EQ(weft_socket_write_queued(s), queued + extra);
  /* the peer reads now: everything arrives, in order */
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while ((weft_future_state(w) == WEFT_PENDING || taken < total + extra) &&
         weft_clock_now_ns() < end) {
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
    ssize_t k = recv(peer, got + taken, total + extra - taken, MSG_DONTWAIT);
    if (k > 0)
      taken += (size_t)k;
    else
      sched_yield();
  }
  EXPECT_EQ(weft_future_state(w), WEFT_FULFILLED);
  EXPECT_EQ(taken, total + extra);
  EXPECT_EQ(memcmp(got, data, total + extra), 0);
  weft_loop_run(loop, WEFT_RUN_NOWAIT); /* the continuations */
  EXPECT_EQ(q.settled, SP_N);
  EXPECT_EQ(q.fulfilled, SP_N);
  EXPECT_EQ(q.len_ok, SP_N);
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  weft_future_release(w);
  raw_pair_end(loop, s, ls, peer);
  free(data);
  free(got);
}

/* A write cancelled on the loop thread while its bytes are in a ring send
 * the kernel has taken, whose result has not come yet (a loop of 2 events
 * takes one completion per wait, so s1's write settles, and its
 * continuation cancels s2's second write, before s2's send reports): the
 * writes around it still settle by what the kernel took, the stream holds
 * A, then all of B or none of it, then C, and nothing stays counted. On
 * epoll the loop's flush sends all three before the continuation runs,
 * and the cancel is too late: the same assertions hold. */
enum { CW_LEN = 1000 };

typedef struct cw {
  weft_future_t *victim;
  int rc;
  long ran;
} cw_t;

static weft_result_t cw_cancel(void *arg, weft_future_t *f) {
  (void)f;
  cw_t *c = arg;
  c->rc = weft_future_cancel(c->victim);
  c->ran++;
  return weft_ok_int(0);
}

static void test_write_queued_cancel_in_send(void) {
  weft_loop_options_t o = {.size = sizeof o, .max_events = 2};
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(&o, &loop), 0);
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int p1 = raw_connect(&addr);
  weft_socket_t *s1 = accept_one(loop, ls);
  int p2 = raw_connect(&addr);
  weft_socket_t *s2 = accept_one(loop, ls);
  static char abc[3][CW_LEN];
  for (int i = 0; i < 3; i++)
    memset(abc[i], 'A' + i, CW_LEN);
  cw_t c = {0};
  weft_future_t *x, *w[3];
  REQUIRE_EQ(weft_socket_write(s1, "x", 1, &x), 0);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_socket_write(s2, abc[i], CW_LEN, &w[i]), 0);
  c.victim = w[1];
  chain(loop, x, cw_cancel, &c);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(weft_loop_run_until(loop, w[i], BOUND_MS), 0);
  REQUIRE_EQ(drive(loop, &c.ran, 1, BOUND_MS), 1);
  weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_socket_write_queued(s2), 0u);
  EXPECT_EQ(weft_future_state(w[0]), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_state(w[2]), WEFT_FULFILLED);
  if (c.rc == 0)
    EXPECT_EQ(weft_future_state(w[1]), WEFT_CANCELLED);
  else
    EXPECT_ERR(c.rc, WEFT_EALREADY);
  weft_socket_close(s2); /* the peer reads to end of stream */
  static char got[4 * CW_LEN];
  size_t n = 0;
  for (;;) {
    struct pollfd pf = {p2, POLLIN, 0};
    if (poll(&pf, 1, BOUND_MS) != 1)
      break;
    ssize_t k = read(p2, got + n, sizeof got - n);
    if (k <= 0)
      break;
    n += (size_t)k;
  }
  bool b_went = n == 3 * CW_LEN;
  EXPECT_TRUE(n == 3 * CW_LEN || n == 2 * CW_LEN);
  if (c.rc != 0)
    EXPECT_TRUE(b_went); /* fulfilled: it was sent */
  EXPECT_EQ(memcmp(got, abc[0], CW_LEN), 0);
  if (b_went)
    EXPECT_EQ(memcmp(got + CW_LEN, abc[1], CW_LEN), 0);
  EXPECT_EQ(memcmp(got + n - CW_LEN, abc[2], CW_LEN), 0);
  for (int i = 0; i < 3; i++)
    weft_future_release(w[i]);
  close(p1);
  close(p2);
  weft_socket_close(s1);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"write_queued: writes the kernel takes at once are not queued",
     test_write_queued_taken},
    {"write_queued: a peer that does not read makes it grow",
     test_write_queued_slow_peer},
    {"write_queued: a write cancelled inside a ring send",
     test_write_queued_cancel_in_send},
    {NULL, NULL}};

const test_suite_t suite_net_queued = {"net_queued", cases};
