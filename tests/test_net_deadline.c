/* SPDX-License-Identifier: MIT */
/* tests/test_net_deadline.c: the _deadline forms of the socket calls
 * (net.h, "Deadlines"): each times out by itself against a silent peer, and
 * succeeds against one that answers; what a timeout leaves (bytes for the
 * next read, an intact stream after an unsent write, a failed write side
 * after a partial one, a closed half-open connect, a connection for the
 * next accept); passed deadlines; bad input; cancel, close and loop close
 * with deadlines pending; deadlines settling in their order; one timer per
 * socket; and a failed allocation of that timer. Real sockets on 127.0.0.1
 * and Unix paths; every wait bounded. */
#include "net_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { NS_MS = 1000000 };

static int64_t in_ms(int64_t ms) { return weft_clock_now_ns() + ms * NS_MS; }

/* When and how a future settled, seen by an inline watch (so at the
 * moment it settles), and in which order among the test's futures. */
typedef struct rec {
  int64_t at;
  int seq, state, err;
} rec_t;

static int g_seq;

static void record(void *arg, weft_future_t *f) {
  rec_t *r = arg;
  r->at = weft_clock_now_ns();
  r->seq = ++g_seq;
  r->state = weft_future_state(f);
  r->err = weft_future_error(f);
}

/* Watch f (the caller keeps its own handle). */
static void watch(weft_future_t *f, rec_t *r) {
  memset(r, 0, sizeof *r);
  REQUIRE_EQ(weft_future_retain(f), 0);
  REQUIRE_EQ(weft_future_watch(f, weft_executor_inline(), record, r, NULL), 0);
}

/* Run the loop until f settles; expect it timed out, not before d. */
static void expect_timeout(weft_loop_t *loop, weft_future_t *f, const rec_t *r,
                           int64_t d) {
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(f), WEFT_ETIMEDOUT);
  EXPECT_EQ(r->seq > 0, 1);
  EXPECT_TRUE(r->at >= d); /* never early */
}

/* Run the loop for ms (a sleep future), so that a timer due by then
 * would have fired: nothing the test waits for. */
static void run_for(weft_loop_t *loop, int64_t ms) {
  weft_future_t *z;
  REQUIRE_EQ(weft_loop_sleep(loop, ms, &z), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, z, BOUND_MS), 0);
  weft_future_release(z);
}

/* Read exactly n bytes from s (plain call), expect them to be `want`. */
static void expect_next_bytes(weft_loop_t *loop, weft_socket_t *s,
                              const char *want, size_t n) {
  char got[64] = {0};
  weft_future_t *r;
  REQUIRE_EQ(weft_socket_read_exactly(s, got, n, &r), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(r), (long)n);
  EXPECT_EQ(memcmp(got, want, n), 0);
  weft_future_release(r);
}

/* A Unix stream pair: a listener at a fresh path, a plain peer, and the
 * accepted end. */
static weft_socket_t *unix_pair(weft_loop_t *loop, weft_socket_t **ls,
                                int *peer, char *path, size_t n) {
  snprintf(path, n, "/tmp/weft-dl-%d-%d.sock", (int)getpid(), ++g_seq);
  unlink(path);
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_unix(path, &a), 0);
  REQUIRE_EQ(weft_socket_listen(loop, &a, 8, ls), 0);
  *peer = raw_connect(&a);
  return accept_one(loop, *ls);
}

/* ---- reads ---- */

/* A read times out by itself; bytes that come later go to the next read. */
static void read_times_out(bool unix_socket) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  char path[64];
  weft_socket_t *s = unix_socket
                         ? unix_pair(loop, &ls, &peer, path, sizeof path)
                         : raw_pair(loop, &ls, &peer);
  char buf[16];
  rec_t r;
  weft_future_t *f;
  int64_t d = in_ms(40);
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, sizeof buf, d, &f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  watch(f, &r);
  expect_timeout(loop, f, &r, d);
  weft_future_release(f);
  /* The peer answers late: the loop may take the bytes in before anyone
   * reads (a loop with completions has a recv out); either way the next
   * read gets them, all of them, in order. */
  REQUIRE_EQ(write(peer, "late!", 5), 5);
  run_for(loop, 10);
  expect_next_bytes(loop, s, "late!", 5);
  raw_pair_end(loop, s, ls, peer);
  if (unix_socket)
    unlink(path);
}

static void test_read_times_out_tcp(void) { read_times_out(false); }
static void test_read_times_out_unix(void) { read_times_out(true); }

/* read_exactly: the bytes that came are in buf; later ones go on. */
static void test_read_exactly_times_out(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char buf[8] = {0};
  rec_t r;
  weft_future_t *f;
  REQUIRE_EQ(write(peer, "abc", 3), 3);
  int64_t d = in_ms(40);
  REQUIRE_EQ(weft_socket_read_exactly_deadline(s, buf, sizeof buf, d, &f), 0);
  watch(f, &r);
  expect_timeout(loop, f, &r, d);
  EXPECT_EQ(memcmp(buf, "abc", 3), 0);
  weft_future_release(f);
  REQUIRE_EQ(write(peer, "defgh", 5), 5);
  expect_next_bytes(loop, s, "defgh", 5);
  raw_pair_end(loop, s, ls, peer);
}

/* ---- writes ---- */

/* A pattern the peer can check byte by byte. */
static char pat(size_t i) { return (char)('a' + i % 23); }

typedef struct drain {
  int fd;
  size_t want; /* bytes to read (SIZE_MAX: until end of stream) */
  size_t got, bad;
  char tail[8];   /* the last bytes read */
  size_t pat_len; /* bytes expected to follow pat() from the start */
} drain_t;

/* Thread body: read the peer's side, checking the pattern. */
static void *drain_thread(void *arg) {
  drain_t *d = arg;
  static __thread char b[65536];
  while (d->got < d->want) {
    struct pollfd p = {d->fd, POLLIN, 0};
    if (poll(&p, 1, BOUND_MS) != 1)
      break;
    ssize_t n = read(d->fd, b, sizeof b);
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++) {
      size_t at = d->got + (size_t)i;
      if (at < d->pat_len && b[i] != pat(at))
        d->bad++;
      memmove(d->tail, d->tail + 1, sizeof d->tail - 1);
      d->tail[sizeof d->tail - 1] = b[i];
    }
    d->got += (size_t)n;
  }
  return NULL;
}

enum { BIG = 32u << 20 }; /* far more than the kernel's buffers hold */

static char *big_buf(void) {
  char *p = malloc(BIG);
  REQUIRE_EQ(p != NULL, 1);
  for (size_t i = 0; i < BIG; i++)
    p[i] = pat(i);
  return p;
}

/* A write sent in part fails the write side: the writes and shutdown
 * queued behind it and every later write are rejected, reads go on. */
static void test_write_times_out_in_part(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char *data = big_buf();
  rec_t r;
  weft_future_t *w, *w2, *sh, *w3;
  /* (out far enough for the loop to send a part first, even on a loaded
   * machine) */
  int64_t d = in_ms(300);
  REQUIRE_EQ(weft_socket_write_deadline(s, data, BIG, d, &w), 0);
  REQUIRE_EQ(weft_socket_write(s, "tail", 4, &w2), 0);
  REQUIRE_EQ(weft_socket_shutdown(s, &sh), 0);
  watch(w, &r);
  expect_timeout(loop, w, &r, d); /* the peer never reads */
  EXPECT_EQ(weft_future_state(w2), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(w2), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_future_state(sh), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(sh), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  REQUIRE_EQ(weft_socket_write(s, "x", 1, &w3), 0);
  EXPECT_EQ(weft_future_state(w3), WEFT_REJECTED); /* on return */
  EXPECT_ERR(weft_future_error(w3), WEFT_ETIMEDOUT);
  REQUIRE_EQ(write(peer, "ok", 2), 2); /* reads go on */
  expect_next_bytes(loop, s, "ok", 2);
  /* The peer got a part of the buffer (then the end of stream). */
  weft_socket_close(s);
  drain_t dr = {peer, SIZE_MAX, 0, 0, {0}, BIG};
  drain_thread(&dr);
  EXPECT_TRUE(dr.got > 0 && dr.got < BIG);
  EXPECT_EQ(dr.bad, 0u);
  weft_future_release(w);
  weft_future_release(w2);
  weft_future_release(sh);
  weft_future_release(w3);
  free(data);
  close(peer);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Fill s's kernel buffer with plain send()s (the pattern); how many. */
static size_t fill_kernel(weft_socket_t *s) {
  static char chunk[65536];
  size_t sent = 0;
  for (;;) {
    for (size_t i = 0; i < sizeof chunk; i++)
      chunk[i] = pat(sent + i);
    ssize_t n = send(weft_socket_fd(s), chunk, sizeof chunk, MSG_DONTWAIT);
    if (n <= 0)
      break;
    sent += (size_t)n;
  }
  return sent;
}

/* Writes that time out with nothing sent, at the head of the queue and
 * behind a write under way, leave the stream intact: the peer reads what
 * the other writes sent, in order, and nothing of theirs. (On a Unix
 * stream: once its buffer is full, no room comes back until the peer
 * reads, where TCP may find some later.) */
static void test_write_times_out_unsent(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  char path[64];
  weft_socket_t *s = unix_pair(loop, &ls, &peer, path, sizeof path);
  size_t pre = fill_kernel(s);
  REQUIRE_EQ(pre > 0, 1);
  rec_t r1, r2;
  weft_future_t *w1, *big, *w2, *w3;
  char *data = big_buf();
  int64_t d1 = in_ms(40);
  REQUIRE_EQ(weft_socket_write_deadline(s, "XXXX", 4, d1, &w1), 0); /* head */
  watch(w1, &r1);
  expect_timeout(loop, w1, &r1, d1);
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  /* the rest of the pattern, then one behind it that times out */
  REQUIRE_EQ(weft_socket_write(s, data + pre, BIG - pre, &big), 0);
  int64_t d2 = in_ms(40);
  REQUIRE_EQ(weft_socket_write_deadline(s, "YYYY", 4, d2, &w2), 0);
  size_t queued = weft_socket_write_queued(s);
  watch(w2, &r2);
  expect_timeout(loop, w2, &r2, d2);
  EXPECT_EQ(weft_future_state(big), WEFT_PENDING);
  EXPECT_TRUE(weft_socket_write_queued(s) <= queued - 4);
  REQUIRE_EQ(weft_socket_write(s, "done", 4, &w3), 0);
  /* The peer reads it all: the pattern, then "done". */
  drain_t dr = {peer, BIG + 4, 0, 0, {0}, BIG};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, drain_thread, &dr), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, w3, BOUND_MS), 0);
  pthread_join(th, NULL);
  EXPECT_EQ(weft_future_state(big), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_state(w3), WEFT_FULFILLED);
  EXPECT_EQ(dr.got, (size_t)BIG + 4);
  EXPECT_EQ(dr.bad, 0u);
  EXPECT_EQ(memcmp(dr.tail + 4, "done", 4), 0);
  weft_future_release(w1);
  weft_future_release(big);
  weft_future_release(w2);
  weft_future_release(w3);
  free(data);
  raw_pair_end(loop, s, ls, peer);
  unlink(path);
}

/* A write whose bytes are in the kernel when its deadline passes: on a
 * loop with an io_uring, a send goes out early when the submission queue
 * fills (here: a recv for each of many reads queued behind it), and its
 * result comes only with the loop's next wait, after the timer pass. The
 * write settles at the deadline; the part it sent fails the write side
 * once that result comes. On epoll the timer pass comes before the write
 * is tried: it goes nowhere. Either way the peer sees what the outcome
 * says. */
enum { NFILL = 600 }; /* more than the ring's 512 submission entries */

static void test_write_timeout_in_kernel(void) {
  raise_nofile(4 * NFILL);
  weft_loop_t *loop = new_loop();
  weft_loop_stats_t st;
  REQUIRE_EQ(weft_loop_stats(loop, &st), 0);
  bool ring = strcmp(st.backend, "io_uring") == 0;
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_addr_t addr;
  REQUIRE_EQ(weft_socket_local_addr(ls, &addr), 0);
  static weft_socket_t *socks[NFILL];
  static int peers[NFILL];
  static weft_future_t *reads[NFILL];
  static char rbuf[NFILL][4];
  for (int i = 0; i < NFILL; i++) {
    peers[i] = raw_connect(&addr);
    socks[i] = accept_one(loop, ls);
  }
  char *data = big_buf();
  rec_t r;
  weft_future_t *w, *w2;
  REQUIRE_EQ(weft_socket_write_deadline(s, data, BIG, 1, &w), 0);
  watch(w, &r);
  for (int i = 0; i < NFILL; i++) /* fills the ring: out goes the send */
    REQUIRE_EQ(weft_socket_read(socks[i], rbuf[i], 4, &reads[i]), 0);
  expect_timeout(loop, w, &r, 1);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0); /* the send's result */
  EXPECT_EQ(weft_socket_write_queued(s), 0u);
  REQUIRE_EQ(weft_socket_write(s, "more", 4, &w2), 0);
  bool cut = weft_future_state(w2) == WEFT_REJECTED;
  EXPECT_EQ(cut, ring);
  if (cut)
    EXPECT_ERR(weft_future_error(w2), WEFT_ETIMEDOUT);
  else
    REQUIRE_EQ(weft_loop_run_until(loop, w2, BOUND_MS), 0);
  weft_socket_close(s);
  drain_t dr = {peer, SIZE_MAX, 0, 0, {0}, cut ? BIG : 0};
  drain_thread(&dr);
  if (cut) { /* a part of the buffer, nothing after it */
    EXPECT_TRUE(dr.got > 0 && dr.got < BIG);
    EXPECT_EQ(dr.bad, 0u);
  } else { /* none of it: only "more" */
    EXPECT_EQ(dr.got, 4u);
    EXPECT_EQ(memcmp(dr.tail + 4, "more", 4), 0);
  }
  for (int i = 0; i < NFILL; i++) {
    weft_future_release(reads[i]);
    weft_socket_close(socks[i]);
    close(peers[i]);
  }
  weft_future_release(w);
  weft_future_release(w2);
  free(data);
  close(peer);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- connect and accept ---- */

/* A raw listener whose backlog is full: a connect to it stays in
 * progress. Its fd in *lfd, the connections that fill it in fill[]. */
static void full_listener(weft_addr_t *a, int *lfd, int *fill, int *nfill) {
  struct sockaddr_in sin;
  *lfd = raw_bound(&sin);
  REQUIRE_EQ(listen(*lfd, 0), 0);
  for (*nfill = 0; *nfill < 8;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    fill[(*nfill)++] = fd;
    connect(fd, (struct sockaddr *)&sin, sizeof sin);
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 200) == 0) /* this one hangs: the queue is full */
      break;
  }
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", ntohs(sin.sin_port), a), 0);
}

/* A connect past its deadline is rejected and its socket closed. */
static void test_connect_times_out(void) {
  weft_loop_t *loop = new_loop();
  weft_addr_t a;
  int lfd, fill[8], nfill;
  full_listener(&a, &lfd, fill, &nfill);
  int fds0 = count_fds();
  rec_t r;
  weft_future_t *c;
  int64_t d = in_ms(100);
  REQUIRE_EQ(weft_socket_connect_deadline(loop, &a, d, &c), 0);
  EXPECT_EQ(weft_future_state(c), WEFT_PENDING);
  watch(c, &r);
  expect_timeout(loop, c, &r, d);
  EXPECT_EQ(count_fds(), fds0); /* the half-open socket is closed */
  weft_socket_t *s;
  EXPECT_ERR(weft_socket_take(c, &s), WEFT_ETIMEDOUT);
  weft_future_release(c);
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  close(lfd);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* An accept past its deadline; the connection that comes later goes to
 * the next accept. */
static void test_accept_times_out(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  rec_t r;
  weft_future_t *a;
  int64_t d = in_ms(40);
  REQUIRE_EQ(weft_socket_accept_deadline(ls, d, &a), 0);
  watch(a, &r);
  expect_timeout(loop, a, &r, d);
  weft_future_release(a);
  int peer = raw_connect(&addr);
  weft_socket_t *s = accept_one(loop, ls);
  REQUIRE_EQ(write(peer, "hi", 2), 2);
  expect_next_bytes(loop, s, "hi", 2);
  raw_pair_end(loop, s, ls, peer);
}

/* ---- in time ---- */

/* Every form succeeds when the other side answers before its deadline. */
static void test_in_time(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int64_t d = in_ms(BOUND_MS);
  weft_future_t *a, *c, *f;
  REQUIRE_EQ(weft_socket_accept_deadline(ls, d, &a), 0);
  REQUIRE_EQ(weft_socket_connect_deadline(loop, &addr, d, &c), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, a, BOUND_MS), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, c, BOUND_MS), 0);
  weft_socket_t *srv, *cli;
  REQUIRE_EQ(weft_socket_take(a, &srv), 0);
  REQUIRE_EQ(weft_socket_take(c, &cli), 0);
  weft_future_release(a);
  weft_future_release(c);
  REQUIRE_EQ(weft_socket_write_deadline(cli, "ping!", 5, d, &f), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), 5);
  weft_future_release(f);
  char buf[8] = {0};
  REQUIRE_EQ(weft_socket_read_exactly_deadline(srv, buf, 2, d, &f), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), 2);
  weft_future_release(f);
  REQUIRE_EQ(weft_socket_read_deadline(srv, buf + 2, 6, d, &f), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), 3);
  EXPECT_EQ(memcmp(buf, "ping!", 5), 0);
  weft_future_release(f);
  weft_socket_close(srv);
  weft_socket_close(cli);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- passed deadlines ---- */

/* A deadline already passed: what is at hand settles on return, the rest
 * times out at the loop's next timer pass. */
static void test_passed_deadline(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int peer = raw_connect(&addr);
  weft_future_t *f;
  REQUIRE_EQ(weft_socket_accept_deadline(ls, 1, &f), 0); /* one waits */
  REQUIRE_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_socket_t *s;
  REQUIRE_EQ(weft_socket_take(f, &s), 0);
  weft_future_release(f);
  REQUIRE_EQ(write(peer, "0123456789", 10), 10);
  expect_next_bytes(loop, s, "0123", 4); /* the loop has seen the rest */
  char buf[16] = {0};
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, sizeof buf, 1, &f), 0);
  REQUIRE_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), 6);
  EXPECT_EQ(memcmp(buf, "456789", 6), 0);
  weft_future_release(f);
  /* nothing at hand: pending on return, timed out at the next pass */
  rec_t r;
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, sizeof buf, 1, &f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  watch(f, &r);
  expect_timeout(loop, f, &r, 1);
  weft_future_release(f);
  REQUIRE_EQ(weft_socket_accept_deadline(ls, 1, &f), 0);
  watch(f, &r);
  expect_timeout(loop, f, &r, 1);
  weft_future_release(f);
  /* a write goes to the kernel at the loop's next wait: the timer pass
   * may come first (it does here, from outside the loop) or not; either
   * way the stream is what the outcome says */
  REQUIRE_EQ(weft_socket_write_deadline(s, "gone", 4, 1, &f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  bool sent = weft_future_state(f) == WEFT_FULFILLED;
  if (!sent)
    EXPECT_ERR(weft_future_error(f), WEFT_ETIMEDOUT);
  weft_future_release(f);
  REQUIRE_EQ(weft_socket_write(s, "kept", 4, &f), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), 4);
  weft_future_release(f);
  char got[8];
  size_t n = sent ? 8 : 4;
  for (size_t k = 0; k < n;) {
    ssize_t m = read(peer, got + k, n - k);
    REQUIRE_EQ(m > 0, 1);
    k += (size_t)m;
  }
  EXPECT_EQ(memcmp(got, sent ? "gonekept" : "kept", n), 0);
  raw_pair_end(loop, s, ls, peer);
}

/* ---- bad input ---- */

static void test_bad_input(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_addr_t addr;
  REQUIRE_EQ(weft_socket_local_addr(ls, &addr), 0);
  static char sentinel;
  char buf[8];
  weft_future_t *f = (weft_future_t *)(void *)&sentinel; /* stays so */
  weft_future_t *const mark = f;
  EXPECT_ERR(weft_socket_read_deadline(s, buf, 8, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_exactly_deadline(s, buf, 8, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write_deadline(s, "x", 1, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept_deadline(ls, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect_deadline(loop, &addr, -1, &f), WEFT_EINVAL);
  /* the plain forms' bad input */
  EXPECT_ERR(weft_socket_read_deadline(NULL, buf, 8, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_deadline(s, NULL, 8, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_deadline(s, buf, 0, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_deadline(s, buf, 8, 1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_read_deadline(ls, buf, 8, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_write_deadline(ls, "x", 1, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_accept_deadline(s, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect_deadline(NULL, &addr, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect_deadline(loop, NULL, 1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_socket_connect_deadline(loop, &addr, 1, NULL), WEFT_EINVAL);
  EXPECT_TRUE(f == mark);
  /* Nothing was started: no connection came, no byte was taken or sent. */
  struct pollfd p = {peer, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  REQUIRE_EQ(write(peer, "abc", 3), 3);
  expect_next_bytes(loop, s, "abc", 3);
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept_deadline(ls, 1, &a), 0);
  EXPECT_ERR(weft_future_error(a), WEFT_EPENDING); /* none waits */
  EXPECT_EQ(weft_future_cancel(a), 0);
  weft_future_release(a);
  raw_pair_end(loop, s, ls, peer);
}

/* ---- cancel, close, loop close ---- */

/* A cancel before the deadline works as without one: the deadline then
 * does nothing, and the next read gets the bytes. */
static void test_cancel_before_deadline(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char buf[8];
  rec_t r, ra;
  weft_future_t *f, *a;
  int64_t d = in_ms(200); /* (out far enough to cancel before it) */
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, sizeof buf, d, &f), 0);
  REQUIRE_EQ(weft_socket_accept_deadline(ls, d, &a), 0);
  watch(f, &r);
  watch(a, &ra);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_cancel(a), 0);
  EXPECT_EQ(r.state, WEFT_CANCELLED);
  EXPECT_EQ(ra.state, WEFT_CANCELLED);
  int seq = g_seq;
  run_for(loop, 250);    /* past both deadlines */
  EXPECT_EQ(g_seq, seq); /* nothing more settled */
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  weft_future_release(a);
  REQUIRE_EQ(write(peer, "xyz", 3), 3);
  expect_next_bytes(loop, s, "xyz", 3);
  raw_pair_end(loop, s, ls, peer);
}

/* Closing a socket, or the loop, with deadlines pending cancels the
 * operations; the timer never fires for them. */
static void test_close_with_deadlines(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char *data = big_buf();
  char buf[8];
  rec_t r[4];
  weft_future_t *f[4];
  /* (far enough out for a loaded machine to close before them) */
  int64_t d = in_ms(300);
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, 8, d, &f[0]), 0);
  REQUIRE_EQ(weft_socket_write_deadline(s, data, BIG, d, &f[1]), 0);
  REQUIRE_EQ(weft_socket_accept_deadline(ls, d, &f[2]), 0);
  for (int i = 0; i < 3; i++)
    watch(f[i], &r[i]);
  weft_loop_run(loop, WEFT_RUN_NOWAIT); /* the write under way */
  weft_socket_close(s);
  weft_socket_close(ls);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(r[i].state, WEFT_CANCELLED);
  int seq = g_seq;
  run_for(loop, 350); /* past the deadlines */
  EXPECT_EQ(g_seq, seq);
  for (int i = 0; i < 3; i++)
    weft_future_release(f[i]);
  close(peer);
  /* the loop's close */
  s = raw_pair(loop, &ls, &peer);
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, 8, in_ms(BOUND_MS), &f[3]), 0);
  watch(f[3], &r[3]);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(r[3].state, WEFT_CANCELLED);
  weft_future_release(f[3]);
  close(peer);
  free(data);
}

/* ---- order ---- */

/* Reads queued with deadlines in the reverse of their order (and one
 * without a deadline among them) time out in deadline order; the one
 * without still gets the bytes. The same for writes queued behind a
 * write that waits. */
enum { NORD = 6 };

static void test_deadline_order(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  char path[64];
  weft_socket_t *s = unix_pair(loop, &ls, &peer, path, sizeof path);
  char buf[NORD + 1][4];
  rec_t r[NORD];
  weft_future_t *f[NORD], *plain;
  int64_t d[NORD];
  for (int i = 0; i < NORD; i++) {
    d[i] = in_ms(20 + 15 * (NORD - i));
    REQUIRE_EQ(weft_socket_read_deadline(s, buf[i], 4, d[i], &f[i]), 0);
    watch(f[i], &r[i]);
    if (i == NORD / 2)
      REQUIRE_EQ(weft_socket_read(s, buf[NORD], 4, &plain), 0);
  }
  REQUIRE_EQ(weft_loop_run_until(loop, f[0], BOUND_MS), 0);
  for (int i = 0; i < NORD; i++) {
    EXPECT_ERR(r[i].err, WEFT_ETIMEDOUT);
    EXPECT_EQ(r[i].seq - r[NORD - 1].seq, NORD - 1 - i); /* deadline order */
    EXPECT_TRUE(r[i].at >= d[i]);
    weft_future_release(f[i]);
  }
  EXPECT_EQ(weft_future_state(plain), WEFT_PENDING);
  REQUIRE_EQ(write(peer, "z", 1), 1);
  REQUIRE_EQ(weft_loop_run_until(loop, plain, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(plain), 1);
  weft_future_release(plain);
  /* writes behind one that waits (the peer reads nothing) */
  size_t pre = fill_kernel(s);
  REQUIRE_EQ(pre > 0, 1);
  weft_future_t *head;
  REQUIRE_EQ(weft_socket_write(s, "head", 4, &head), 0);
  for (int i = 0; i < NORD; i++) {
    d[i] = in_ms(20 + 15 * (NORD - i));
    REQUIRE_EQ(weft_socket_write_deadline(s, "w", 1, d[i], &f[i]), 0);
    watch(f[i], &r[i]);
  }
  REQUIRE_EQ(weft_loop_run_until(loop, f[0], BOUND_MS), 0);
  for (int i = 0; i < NORD; i++) {
    EXPECT_ERR(r[i].err, WEFT_ETIMEDOUT);
    EXPECT_EQ(r[i].seq - r[NORD - 1].seq, NORD - 1 - i);
    weft_future_release(f[i]);
  }
  EXPECT_EQ(weft_future_state(head), WEFT_PENDING);
  EXPECT_EQ(weft_socket_write_queued(s), 4u);
  weft_future_release(head);
  raw_pair_end(loop, s, ls, peer);
  unlink(path);
}

/* ---- the timer ---- */

static unsigned timers_active(weft_loop_t *loop) {
  weft_loop_stats_t st;
  REQUIRE_EQ(weft_loop_stats(loop, &st), 0);
  return st.timers_active;
}

/* No deadline, no timer; then one timer per socket, however many
 * operations take a deadline on it. */
static void test_one_timer_per_socket(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls, *s2;
  int peer, peer2;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_addr_t addr;
  REQUIRE_EQ(weft_socket_local_addr(ls, &addr), 0);
  peer2 = raw_connect(&addr);
  s2 = accept_one(loop, ls);
  unsigned t0 = timers_active(loop);
  char buf[4][4];
  weft_future_t *f[4];
  REQUIRE_EQ(weft_socket_read_deadline(s, buf[0], 4, 0, &f[0]), 0);
  EXPECT_EQ(timers_active(loop), t0);
  for (int i = 1; i < 3; i++)
    REQUIRE_EQ(
        weft_socket_read_deadline(s, buf[i], 4, in_ms(BOUND_MS - i), &f[i]), 0);
  EXPECT_EQ(timers_active(loop), t0 + 1);
  REQUIRE_EQ(weft_socket_read_deadline(s2, buf[3], 4, in_ms(BOUND_MS), &f[3]),
             0);
  EXPECT_EQ(timers_active(loop), t0 + 2);
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(weft_future_cancel(f[i]), 0);
    weft_future_release(f[i]);
  }
  weft_socket_close(s2); /* its timer goes with it */
  EXPECT_EQ(timers_active(loop), t0 + 1);
  close(peer);
  close(peer2);
  weft_socket_close(s);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The first deadline on a socket allocates its timer: when that fails the
 * call returns WEFT_ENOMEM, *out untouched, and nothing was started. */
static void test_timer_enomem(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_addr_t addr;
  REQUIRE_EQ(weft_socket_local_addr(ls, &addr), 0);
  char buf[8];
  weft_future_t *f = NULL;
  int64_t d = in_ms(BOUND_MS);
  for (int form = 0; form < 5; form++) {
    tu_alloc_install(1);
    int rc = form == 0   ? weft_socket_read_deadline(s, buf, 8, d, &f)
             : form == 1 ? weft_socket_read_exactly_deadline(s, buf, 8, d, &f)
             : form == 2 ? weft_socket_write_deadline(s, "x", 1, d, &f)
             : form == 3 ? weft_socket_accept_deadline(ls, d, &f)
                         : weft_socket_connect_deadline(loop, &addr, d, &f);
    long tries = tu_alloc_count(), live = tu_alloc_live();
    tu_alloc_restore();
    EXPECT_ERR(rc, WEFT_ENOMEM);
    EXPECT_EQ(tries, 1);
    EXPECT_EQ(live, 0);
    EXPECT_TRUE(f == NULL);
  }
  /* nothing started: no connection waits, no byte was sent or taken */
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept_deadline(ls, 1, &a), 0);
  EXPECT_ERR(weft_future_error(a), WEFT_EPENDING);
  EXPECT_EQ(weft_future_cancel(a), 0);
  weft_future_release(a);
  struct pollfd p = {peer, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  REQUIRE_EQ(write(peer, "abc", 3), 3);
  expect_next_bytes(loop, s, "abc", 3);
  raw_pair_end(loop, s, ls, peer);
}

/* A socket whose timer exists but is stopped (its deadlines done) needs a
 * slot in the loop's timer heap for its next deadline: with the heap full
 * (64 entries, its first size) and its growth failing, the call returns
 * WEFT_ENOMEM and starts nothing. The same for a connect, whose timer is
 * made, then started, before its socket. */
enum { HEAP0 = 64 };

static void test_timer_heap_enomem(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_addr_t addr;
  REQUIRE_EQ(weft_socket_local_addr(ls, &addr), 0);
  char buf[8];
  rec_t r;
  weft_future_t *f = NULL;
  int64_t d = in_ms(1);
  REQUIRE_EQ(weft_socket_read_deadline(s, buf, 8, d, &f), 0);
  watch(f, &r);
  expect_timeout(loop, f, &r, d); /* s's timer now stopped */
  weft_future_release(f);
  f = NULL;
  static weft_timer_t fill[HEAP0];
  int n = 0;
  while (timers_active(loop) < HEAP0) {
    REQUIRE_EQ(weft_timer_init(loop, &fill[n], tick, NULL), 0);
    REQUIRE_EQ(weft_timer_start(&fill[n++], BOUND_MS, 0), 0);
  }
  REQUIRE_EQ(timers_active(loop), HEAP0);
  for (int form = 0; form < 2; form++) {
    tu_alloc_install(form == 0 ? 1 : 2); /* the heap's growth */
    int rc = form == 0
                 ? weft_socket_read_deadline(s, buf, 8, in_ms(BOUND_MS), &f)
                 : weft_socket_connect_deadline(loop, &addr, in_ms(BOUND_MS),
                                                &f);
    long tries = tu_alloc_count(), live = tu_alloc_live();
    tu_alloc_restore();
    EXPECT_ERR(rc, WEFT_ENOMEM);
    EXPECT_EQ(tries, form == 0 ? 1 : 2);
    EXPECT_EQ(live, 0);
    EXPECT_TRUE(f == NULL);
  }
  EXPECT_EQ(timers_active(loop), HEAP0);
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept_deadline(ls, 0, &a), 0);
  EXPECT_ERR(weft_future_error(a), WEFT_EPENDING); /* no connect came */
  EXPECT_EQ(weft_future_cancel(a), 0);
  weft_future_release(a);
  REQUIRE_EQ(write(peer, "abc", 3), 3); /* and no read was started */
  expect_next_bytes(loop, s, "abc", 3);
  for (int i = 0; i < n; i++)
    weft_timer_stop(&fill[i]);
  raw_pair_end(loop, s, ls, peer);
}

static const test_case_t cases[] = {
    {"read times out (TCP)", test_read_times_out_tcp},
    {"read times out (Unix)", test_read_times_out_unix},
    {"read_exactly times out, keeps its bytes", test_read_exactly_times_out},
    {"write sent in part fails the write side", test_write_times_out_in_part},
    {"write unsent leaves the stream intact", test_write_times_out_unsent},
    {"write timed out while in the kernel", test_write_timeout_in_kernel},
    {"connect times out, socket closed", test_connect_times_out},
    {"accept times out, next accept gets it", test_accept_times_out},
    {"every form in time", test_in_time},
    {"passed deadline", test_passed_deadline},
    {"bad input", test_bad_input},
    {"cancel before the deadline", test_cancel_before_deadline},
    {"close with deadlines pending", test_close_with_deadlines},
    {"deadline order", test_deadline_order},
    {"one timer per socket", test_one_timer_per_socket},
    {"timer ENOMEM", test_timer_enomem},
    {"timer heap ENOMEM", test_timer_heap_enomem},
    {NULL, NULL}};

const test_suite_t suite_net_deadline = {"net_deadline", cases};
