/* SPDX-License-Identifier: MIT */
/* tests/test_net_errors.c: sockets when things go wrong: a peer that resets
 * during a large write or before a write, refused and timed-out connects,
 * and bad input (arguments, a listener used as a stream, the wrong
 * thread). */
#include "net_util.h"

#include <arpa/inet.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a peer resets during a large write ---- */

static void test_reset_during_write(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  size_t big = 64u << 20; /* far more than the kernel buffers hold */
  char *data = calloc(1, big);
  REQUIRE_EQ(data != NULL, 1);
  one_t o = {0}, o2 = {0};
  weft_future_t *w, *w2;
  REQUIRE_EQ(weft_socket_write(s, data, big, &w), 0);
  REQUIRE_EQ(weft_socket_write(s, data, 10, &w2), 0); /* queued behind it */
  chain(loop, w, keep_settled, &o);
  chain(loop, w2, keep_settled, &o2);
  EXPECT_TRUE(weft_socket_write_queued(s) > 0); /* the write is mid-way */
  EXPECT_EQ(o.n, 0);
  /* The peer aborts: SO_LINGER 0 makes close send a reset. */
  struct linger lg = {1, 0};
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(peer);
  EXPECT_TRUE(drive(loop, &o2.n, 1, BOUND_MS));
  REQUIRE_EQ(o.n, 1);
  int e = weft_future_error(o.f);
  EXPECT_TRUE(e == WEFT_ECONNRESET || e == WEFT_EPIPE);
  EXPECT_EQ(weft_future_error(o2.f), e); /* later writes: the same error */
  weft_future_t *r;
  char rb[8];
  REQUIRE_EQ(weft_socket_read(s, rb, sizeof rb, &r), 0); /* reads see it too */
  EXPECT_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_TRUE(weft_future_state(r) == WEFT_REJECTED);
  weft_future_release(r);
  weft_future_release(o.f);
  weft_future_release(o2.f);
  weft_socket_close(s);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
  free(data);
}

/* A write goes to the kernel at the loop's next wait: when the peer has
 * reset, it fails there (send's error), and every later write fails on
 * return (the socket
 * keeps its write error). */
static void test_write_after_reset(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  struct linger lg = {1, 0};
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(peer);
  /* wait (bounded) until the reset reached s; poll leaves the error */
  struct pollfd pfd = {weft_socket_fd(s), POLLIN, 0};
  REQUIRE_EQ(poll(&pfd, 1, BOUND_MS), 1);
  weft_future_t *w, *w2;
  REQUIRE_EQ(weft_socket_write(s, "x", 1, &w), 0);
  EXPECT_EQ(weft_future_state(w), WEFT_PENDING); /* sent at the next wait */
  REQUIRE_EQ(weft_loop_run_until(loop, w, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(w), WEFT_REJECTED);
  int e = weft_future_error(w);
  EXPECT_TRUE(e == WEFT_ECONNRESET || e == WEFT_EPIPE);
  REQUIRE_EQ(weft_socket_write(s, "y", 1, &w2), 0);
  EXPECT_EQ(weft_future_state(w2), WEFT_REJECTED);
  EXPECT_EQ(weft_future_error(w2), e);
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  weft_future_release(w);
  weft_future_release(w2);
  weft_socket_close(s);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- connect errors ---- */

static void test_connect_refused(void) {
  weft_loop_t *loop = new_loop();
  /* A port nobody listens on: bind one, note it, close it. */
  struct sockaddr_in sin;
  close(raw_bound(&sin));
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", ntohs(sin.sin_port), &a), 0);
  int fds0 = count_fds();
  weft_future_t *c;
  REQUIRE_EQ(weft_socket_connect(loop, &a, &c), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, c, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(c), WEFT_ECONNREFUSED);
  weft_future_release(c);
  /* A Unix path with nothing there. */
  REQUIRE_EQ(weft_addr_init_unix("/nonexistent/weft-test.sock", &a), 0);
  REQUIRE_EQ(weft_socket_connect(loop, &a, &c), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, c, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(c), WEFT_ENOENT);
  weft_future_release(c);
  EXPECT_EQ(count_fds(), fds0); /* the failed sockets were closed */
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_connect_timeout(void) {
  weft_loop_t *loop = new_loop();
  /* A listener that never accepts, backlog 0, filled: further SYNs are
   * dropped, so a connect stays in progress until our timeout. */
  struct sockaddr_in sin;
  int lfd = raw_bound(&sin);
  REQUIRE_EQ(listen(lfd, 0), 0);
  int fill_fd[8], nfill = 0;
  for (; nfill < 8; nfill++) {
    fill_fd[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fill_fd[nfill], (struct sockaddr *)&sin, sizeof sin);
    struct pollfd p = {fill_fd[nfill], POLLOUT, 0};
    if (poll(&p, 1, 200) == 0) { /* this one hangs: the queue is full */
      nfill++;
      break;
    }
  }
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", ntohs(sin.sin_port), &a), 0);
  int fds0 = count_fds();
  weft_future_t *c, *t;
  REQUIRE_EQ(weft_socket_connect(loop, &a, &c), 0);
  REQUIRE_EQ(weft_loop_timeout(loop, c, 100, &t), 0);
  /* Only the timeout needs c now (a handle or a continuation would be a
   * need too, and the timeout cancels an input nobody else needs). */
  weft_future_release(c);
  int64_t t0 = weft_clock_now_ns();
  REQUIRE_EQ(weft_loop_run_until(loop, t, BOUND_MS), 0);
  int64_t ms = (weft_clock_now_ns() - t0) / 1000000;
  EXPECT_ERR(weft_future_error(t), WEFT_ETIMEDOUT);
  EXPECT_TRUE(ms >= 90);
  EXPECT_TRUE(ms < 5000);
  /* The connect was cancelled: its half-open socket is closed. */
  EXPECT_EQ(count_fds(), fds0);
  weft_future_release(t);
  for (int i = 0; i < nfill; i++)
    close(fill_fd[i]);
  close(lfd);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- bad input ---- */

typedef struct other {
  weft_loop_t *loop;
  weft_socket_t *s;
  int rc_listen, rc_read, rc_close;
} other_t;

static void *other_thread(void *arg) {
  other_t *o = arg;
  weft_addr_t a;
  weft_addr_init_ip("127.0.0.1", 0, &a);
  weft_socket_t *ls;
  weft_future_t *f;
  char b[4];
  o->rc_listen = weft_socket_listen(o->loop, &a, 1, &ls);
  o->rc_read = weft_socket_read(o->s, b, sizeof b, &f);
  o->rc_close = weft_socket_close(o->s);
  return NULL;
}

static void test_bad_input(void) {
  weft_addr_t a;
  char txt[64];
  EXPECT_ERR(weft_addr_init_ip("not-an-ip", 1, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_ip(NULL, 1, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_addr_init_unix("", &a), WEFT_EINVAL);
  char longp[200];
  memset(longp, 'x', sizeof longp - 1);
  longp[sizeof longp - 1] = 0;
  EXPECT_ERR(weft_addr_init_unix(longp, &a), WEFT_EINVAL);
  REQUIRE_EQ(weft_addr_init_ip("::1", 8080, &a), 0);
  EXPECT_EQ(weft_addr_format(&a, txt, sizeof txt), 0);
  EXPECT_EQ(strcmp(txt, "[::1]:8080"), 0);
  EXPECT_ERR(weft_addr_format(&a, txt, 4), WEFT_ERANGE);
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 80, &a), 0);
  EXPECT_EQ(weft_addr_format(&a, txt, sizeof txt), 0);
  EXPECT_EQ(strcmp(txt, "127.0.0.1:80"), 0);

  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_future_t *f;
  weft_addr_t bad = {0};
  EXPECT_ERR(weft_socket_listen(loop, &bad, 1, &ls), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_listen(NULL, &a, 1, &ls), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect(loop, NULL, &f), WEFT_EINVAL);
  /* Port 80 on loopback needs privileges we may have (root): use a port
   * in use instead for a reliable bind error. */
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  weft_socket_t *ls2;
  EXPECT_ERR(weft_socket_listen(loop, &addr, 1, &ls2), WEFT_EADDRINUSE);
  char b[4];
  EXPECT_ERR(weft_socket_read(ls, b, sizeof b, &f),
             WEFT_EINVAL); /* a listener */
  EXPECT_ERR(weft_socket_accept(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(ls, NULL), WEFT_EINVAL);
  int peer = raw_connect(&addr);
  weft_socket_t *s = accept_one(loop, ls);
  EXPECT_ERR(weft_socket_read(s, NULL, 4, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read(s, b, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write(s, NULL, 4, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept(s, &f), WEFT_EINVAL); /* not a listener */
  EXPECT_ERR(weft_socket_udp_send(s, b, 1, &addr, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_close(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_socket_write_queued(NULL), 0);
  EXPECT_EQ(weft_socket_fd(NULL), -1);
  EXPECT_TRUE(weft_socket_fd(s) >= 0);
  EXPECT_EQ(weft_socket_set_nodelay(s, true), 0);
  weft_addr_t pa;
  EXPECT_EQ(weft_socket_peer_addr(s, &pa), 0);
  EXPECT_EQ(weft_socket_peer_addr(ls, &pa), WEFT_ENOTCONN);
  other_t o = {loop, s, 0, 0, 0};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, other_thread, &o), 0);
  pthread_join(th, NULL);
  EXPECT_ERR(o.rc_listen, WEFT_EPERM);
  EXPECT_ERR(o.rc_read, WEFT_EPERM);
  EXPECT_ERR(o.rc_close, WEFT_EPERM);
  raw_pair_end(loop, s, ls, peer);
}

static const test_case_t cases[] = {
    {"peer resets during a large write", test_reset_during_write},
    {"a write to a reset peer fails on return", test_write_after_reset},
    {"connect refused", test_connect_refused},
    {"connect timeout", test_connect_timeout},
    {"bad input", test_bad_input},
    {NULL, NULL}};

const test_suite_t suite_net_errors = {"net_errors", cases};
