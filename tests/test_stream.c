/* SPDX-License-Identifier: MIT */
/* tests/test_stream.c: the buffered reader and writer (weft/stream.h) over
 * real sockets (TCP on 127.0.0.1 and Unix) with plain peers: lines (LF,
 * CRLF, a lone CR), tiny pieces, many lines at once, the max, other
 * delimiters, exactly n and peek, end of stream and reset mid-line,
 * deadlines and cancels at every stage with nothing lost, destroy with a
 * wait pending, misuse, fibers, the writer's bound, flush and destroy, and
 * allocation failure. */
#include "net_util.h"

#include "internal.h" /* the fault seam */

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers ---- */

typedef struct pair {
  weft_loop_t *loop;
  weft_socket_t *ls, *s;
  int peer;
  weft_reader_t *r;
  weft_writer_t *w;
} pair_t;

static void pair_open(pair_t *p) {
  p->loop = new_loop();
  p->s = raw_pair(p->loop, &p->ls, &p->peer);
  REQUIRE_EQ(p->s != NULL, 1);
  p->r = NULL;
  p->w = NULL;
}

static void pair_reader(pair_t *p, size_t buffer_size) {
  weft_reader_options_t o = {.size = sizeof o, .buffer_size = buffer_size};
  REQUIRE_EQ(weft_reader_create(p->s, &o, &p->r), 0);
}

static void pair_close(pair_t *p) {
  if (p->r != NULL)
    EXPECT_EQ(weft_reader_close(p->r), 0);
  if (p->w != NULL)
    EXPECT_EQ(weft_writer_close(p->w), 0);
  weft_socket_close(p->s);
  weft_socket_close(p->ls);
  if (p->peer >= 0)
    close(p->peer);
  EXPECT_EQ(weft_loop_close(p->loop), 0);
}

static void put(int fd, const char *s) {
  size_t n = strlen(s);
  REQUIRE_EQ(write(fd, s, n), (ssize_t)n);
}

/* Run until f settles; its outcome. */
static int settle(weft_loop_t *loop, weft_future_t *f) {
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  return weft_future_error(f);
}

/* settle() without an allocation of its own (for allocation failure
 * tests): run the loop, woken every 5 ms, until f settles. */
static int settle_plain(weft_loop_t *loop, weft_future_t *f) {
  weft_timer_t t;
  REQUIRE_EQ(weft_timer_init(loop, &t, tick, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&t, 5, 5), 0);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (weft_future_state(f) == WEFT_PENDING && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  weft_timer_stop(&t);
  REQUIRE_EQ(weft_future_state(f) != WEFT_PENDING, 1);
  return weft_future_error(f);
}

/* The view a fulfilled reader future holds, as a C string in buf. */
static const char *view(weft_future_t *f, char *buf, size_t n) {
  const weft_bytes_t *b = weft_future_value(f);
  if (b == NULL || b->len >= n)
    return "(none)";
  memcpy(buf, b->data, b->len);
  buf[b->len] = '\0';
  return buf;
}

static const char *bytes_str(weft_bytes_t b, char *buf, size_t n) {
  if (b.len >= n)
    return "(long)";
  memcpy(buf, b.data, b.len);
  buf[b.len] = '\0';
  return buf;
}

/* Read a line through the future form, run until it settles: its outcome;
 * the line in buf. */
static int line_of(pair_t *p, size_t max, int64_t deadline, char *buf,
                   size_t n) {
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_line(p->r, max, deadline, &f), 0);
  int rc = settle(p->loop, f);
  buf[0] = '\0';
  if (rc == 0)
    view(f, buf, n);
  weft_future_release(f);
  return rc;
}

static int64_t ms_from_now(int64_t ms) {
  return weft_clock_now_ns() + ms * 1000000;
}

/* ---- lines ---- */

static void test_lines(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  weft_bytes_t b;
  char buf[256];
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), WEFT_EAGAIN);
  put(p.peer, "a\nbb\r\nc\rd\n\r\n\n\r\rx\n");
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "a");
  REQUIRE_EQ(weft_reader_try_line(p.r, 64, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "bb");
  REQUIRE_EQ(weft_reader_try_line(p.r, 64, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "c\rd"); /* a CR is data */
  REQUIRE_EQ(weft_reader_try_line(p.r, 64, &b), 0);
  EXPECT_EQ(b.len, 0u); /* "\r\n" */
  REQUIRE_EQ(weft_reader_try_line(p.r, 64, &b), 0);
  EXPECT_EQ(b.len, 0u); /* "\n" */
  REQUIRE_EQ(weft_reader_try_line(p.r, 64, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "\r\rx"); /* only \r\n ends */
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), WEFT_EAGAIN);
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_EQ(b.len, 0u);
  pair_close(&p);
}

/* A line of 300 bytes in 1-byte writes, the loop running between: the
 * wait stays pending until the "\n", then has the whole line. */
static void test_tiny_pieces(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 64); /* smaller than the line: the buffer grows */
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_line(p.r, 1000, 0, &f), 0);
  char want[301];
  for (int i = 0; i < 300; i++) {
    want[i] = (char)('a' + i % 26);
    REQUIRE_EQ(write(p.peer, &want[i], 1), 1);
    weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
    weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  }
  want[300] = '\0';
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  put(p.peer, "\n");
  EXPECT_ERR(settle(p.loop, f), 0);
  const weft_bytes_t *v = weft_future_value(f);
  REQUIRE_EQ(v != NULL, 1);
  EXPECT_EQ(v->len, 300u);
  EXPECT_EQ(memcmp(v->data, want, 300), 0);
  weft_future_release(f);
  pair_close(&p);
}

/* A peer thread writing n bytes (a socket may block when full). */
typedef struct feed {
  int fd;
  const char *p;
  size_t n;
  pthread_t t;
} feed_t;

static void *feed_run(void *arg) {
  feed_t *f = arg;
  size_t off = 0;
  while (off < f->n) {
    ssize_t k = write(f->fd, f->p + off, f->n - off);
    if (k <= 0)
      break;
    off += (size_t)k;
  }
  return NULL;
}

static void feed_start(feed_t *f, int fd, const char *p, size_t n) {
  f->fd = fd;
  f->p = p;
  f->n = n;
  REQUIRE_EQ(pthread_create(&f->t, NULL, feed_run, f), 0);
}

/* A text of n lines of 1..120 bytes in *len bytes (malloc'd). */
static char *make_lines(int n, uint64_t seed, size_t *len) {
  char *all = malloc((size_t)n * 128);
  REQUIRE_EQ(all != NULL, 1);
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    size_t k = 1 + rng_next(&seed) % 120;
    for (size_t j = 0; j < k; j++)
      all[off + j] = (char)('A' + (i + j) % 50);
    off += k;
    all[off++] = '\n';
  }
  *len = off;
  return all;
}

/* 2,000 lines of 1..120 bytes written at once: each comes out whole, in
 * order, most of them from the buffer (try). */
static void test_many_lines(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  enum { N = 2000 };
  size_t len;
  char *all = make_lines(N, 7, &len);
  feed_t fd;
  feed_start(&fd, p.peer, all, len);
  size_t off = 0;
  long lines = 0, waits = 0;
  while (lines < N) {
    weft_bytes_t b;
    int rc = weft_reader_try_line(p.r, 200, &b);
    if (rc == WEFT_EAGAIN) {
      weft_future_t *f;
      REQUIRE_EQ(weft_reader_read_line(p.r, 200, 0, &f), 0);
      REQUIRE_EQ(settle(p.loop, f), 0);
      b = *(const weft_bytes_t *)weft_future_value(f);
      weft_future_release(f);
      waits++;
    } else {
      REQUIRE_EQ(rc, 0);
    }
    const char *nl = memchr(all + off, '\n', len - off);
    REQUIRE_EQ(nl != NULL, 1);
    size_t want = (size_t)(nl - (all + off));
    REQUIRE_EQ(b.len, want);
    EXPECT_EQ(memcmp(b.data, all + off, want), 0);
    off += want + 1;
    lines++;
  }
  EXPECT_EQ(off, len);
  EXPECT_TRUE(waits < N / 4); /* lines come many per socket read */
  pthread_join(fd.t, NULL);
  free(all);
  pair_close(&p);
}

/* Past the max: WEFT_EMSGSIZE, nothing consumed; consume, then go on. */
static void test_max(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 32);
  char big[101];
  memset(big, 'z', 100);
  big[100] = '\0';
  put(p.peer, big);
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_line(p.r, 50, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), WEFT_EMSGSIZE);
  weft_future_release(f);
  weft_bytes_t b;
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_TRUE(b.len >= 50);
  EXPECT_ERR(weft_reader_try_line(p.r, 50, &b), WEFT_EMSGSIZE);
  EXPECT_ERR(weft_reader_consume(p.r, 1000), WEFT_EINVAL);
  EXPECT_EQ(weft_reader_consume(p.r, 50), 0);
  put(p.peer, "\nnext\n");
  char buf[128];
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_EQ(strlen(buf), 50u);
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "next");
  /* a line of exactly max bytes (its "\n" included) fits */
  put(p.peer, "0123456789\n");
  EXPECT_ERR(line_of(&p, 11, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "0123456789");
  pair_close(&p);
}

/* Another delimiter; exactly n; peek. */
static void test_until_exactly_peek(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  char buf[128];
  put(p.peer, "k1=v1;k2=v2;");
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_until(p.r, ';', 64, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), 0);
  EXPECT_STREQ(view(f, buf, sizeof buf), "k1=v1;"); /* keeps its ';' */
  weft_future_release(f);
  weft_bytes_t b;
  REQUIRE_EQ(weft_reader_try_until(p.r, '=', 64, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "k2=");
  REQUIRE_EQ(weft_reader_try_exactly(p.r, 3, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "v2;");
  /* exactly: waits across pieces */
  REQUIRE_EQ(weft_reader_read_exactly(p.r, 8, 0, &f), 0);
  put(p.peer, "abc");
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  put(p.peer, "defghij");
  EXPECT_ERR(settle(p.loop, f), 0);
  EXPECT_STREQ(view(f, buf, sizeof buf), "abcdefgh");
  weft_future_release(f);
  /* peek: sees everything buffered (at least n), consumes nothing */
  put(p.peer, "kl");
  REQUIRE_EQ(weft_reader_peek(p.r, 4, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), 0);
  EXPECT_STREQ(view(f, buf, sizeof buf), "ijkl");
  weft_future_release(f);
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_EQ(b.len, 4u);
  REQUIRE_EQ(weft_reader_try_exactly(p.r, 4, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "ijkl");
  /* an exactly larger than the buffer grows it */
  weft_reader_close(p.r);
  pair_reader(&p, 16);
  static char blob[5000];
  fill((unsigned char *)blob, sizeof blob, 3);
  feed_t fd;
  feed_start(&fd, p.peer, blob, sizeof blob);
  REQUIRE_EQ(weft_reader_read_exactly(p.r, sizeof blob, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), 0);
  const weft_bytes_t *v = weft_future_value(f);
  EXPECT_EQ(v->len, sizeof blob);
  EXPECT_EQ(memcmp(v->data, blob, sizeof blob), 0);
  weft_future_release(f);
  pthread_join(fd.t, NULL);
  pair_close(&p);
}

/* End of stream mid-line: the rest stays buffered. */
static void test_eof_mid_line(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  put(p.peer, "abc\ndef");
  shutdown(p.peer, SHUT_WR);
  char buf[64];
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "abc");
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), WEFT_EOF);
  weft_bytes_t b;
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "def");
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), WEFT_EOF);
  EXPECT_ERR(weft_reader_try_exactly(p.r, 4, &b), WEFT_EOF);
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_exactly(p.r, 4, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), WEFT_EOF);
  weft_future_release(f);
  REQUIRE_EQ(weft_reader_try_exactly(p.r, 3, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "def");
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), WEFT_EOF);
  pair_close(&p);
}

/* A reset mid-line: the wait is rejected with it, the bytes stay. */
static void test_reset(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  put(p.peer, "partial");
  char buf[64];
  EXPECT_ERR(line_of(&p, 64, ms_from_now(20), buf, sizeof buf), WEFT_ETIMEDOUT);
  struct linger lg = {1, 0};
  setsockopt(p.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(p.peer);
  p.peer = -1;
  int rc = line_of(&p, 64, 0, buf, sizeof buf);
  EXPECT_TRUE(rc == WEFT_ECONNRESET || rc == WEFT_EOF);
  weft_bytes_t b;
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "partial");
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), rc);
  pair_close(&p);
}

/* The same over a Unix stream socket: a reader and a writer on one
 * connection, lines both ways. */
static void test_unix(void) {
  weft_loop_t *loop = new_loop();
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-stream-%d.sock", (int)getpid());
  unlink(path);
  weft_addr_t ua;
  REQUIRE_EQ(weft_addr_init_unix(path, &ua), 0);
  weft_socket_t *ls;
  REQUIRE_EQ(weft_socket_listen(loop, &ua, 4, &ls), 0);
  int peer = raw_connect(&ua);
  REQUIRE_EQ(peer >= 0, 1);
  pair_t p = {.loop = loop, .ls = ls, .peer = peer};
  p.s = accept_one(loop, ls);
  pair_reader(&p, 0);
  REQUIRE_EQ(weft_writer_create(p.s, NULL, &p.w), 0);
  put(peer, "ping 1\nping 2\r\n");
  char buf[64];
  for (int i = 1; i <= 2; i++) {
    EXPECT_ERR(line_of(&p, 64, ms_from_now(BOUND_MS), buf, sizeof buf), 0);
    char want[16];
    snprintf(want, sizeof want, "ping %d", i);
    EXPECT_STREQ(buf, want);
    snprintf(want, sizeof want, "pong %d\n", i);
    EXPECT_EQ(weft_writer_write(p.w, want, strlen(want)), 0);
  }
  weft_future_t *f;
  REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(BOUND_MS), &f), 0);
  EXPECT_ERR(settle(loop, f), 0);
  weft_future_release(f);
  char got[32] = {0};
  size_t n = 0;
  while (n < 14) {
    ssize_t k = read(peer, got + n, sizeof got - 1 - n);
    REQUIRE_EQ(k > 0, 1);
    n += (size_t)k;
  }
  EXPECT_STREQ(got, "pong 1\npong 2\n");
  pair_close(&p);
  unlink(path);
}

/* ---- deadlines and cancels: nothing lost ---- */

static void test_deadline_stages(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  char buf[64];
  /* nothing buffered */
  int64_t t0 = weft_clock_now_ns();
  EXPECT_ERR(line_of(&p, 64, ms_from_now(30), buf, sizeof buf), WEFT_ETIMEDOUT);
  EXPECT_TRUE(weft_clock_now_ns() - t0 >= 29 * 1000000);
  /* a partial line buffered: it stays */
  put(p.peer, "abc");
  EXPECT_ERR(line_of(&p, 64, ms_from_now(30), buf, sizeof buf), WEFT_ETIMEDOUT);
  weft_bytes_t b;
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "abc");
  put(p.peer, "def\nghi");
  EXPECT_ERR(line_of(&p, 64, ms_from_now(BOUND_MS), buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "abcdef");
  /* a deadline passed already: what is at hand still comes */
  EXPECT_ERR(line_of(&p, 64, 1, buf, sizeof buf), WEFT_ETIMEDOUT);
  put(p.peer, "\n");
  int rc;
  do { /* the socket may not have it yet */
    rc = line_of(&p, 64, 1, buf, sizeof buf);
  } while (rc == WEFT_ETIMEDOUT);
  EXPECT_ERR(rc, 0);
  EXPECT_STREQ(buf, "ghi");
  /* exactly and peek time out the same way */
  put(p.peer, "12");
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_exactly(p.r, 4, ms_from_now(20), &f), 0);
  EXPECT_ERR(settle(p.loop, f), WEFT_ETIMEDOUT);
  weft_future_release(f);
  REQUIRE_EQ(weft_reader_peek(p.r, 3, ms_from_now(20), &f), 0);
  EXPECT_ERR(settle(p.loop, f), WEFT_ETIMEDOUT);
  weft_future_release(f);
  put(p.peer, "34");
  REQUIRE_EQ(weft_reader_read_exactly(p.r, 4, ms_from_now(BOUND_MS), &f), 0);
  EXPECT_ERR(settle(p.loop, f), 0);
  EXPECT_STREQ(view(f, buf, sizeof buf), "1234");
  weft_future_release(f);
  pair_close(&p);
}

/* Deadlines that expire as lines arrive, in every order: each line comes
 * out once, whole, in order. */
static void test_deadline_race(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 16);
  enum { N = 300 };
  int next = 0, timeouts = 0;
  char buf[64], want[64];
  for (int i = 0; i < N; i++) {
    while (next < i) { /* the lines sent whole before this round */
      snprintf(want, sizeof want, "line-%d", next++);
      EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
      EXPECT_STREQ(buf, want);
    }
    snprintf(buf, sizeof buf, "line-%d\n", i);
    /* the line in two pieces around the wait's start */
    REQUIRE_EQ(write(p.peer, buf, 3), 3);
    weft_future_t *f;
    /* odd rounds: passed already, the rest comes after the timeout; even
     * rounds: the rest races a deadline 0-1 ms away */
    int64_t d = i % 2 ? 1 : ms_from_now(i % 4 == 0);
    REQUIRE_EQ(weft_reader_read_line(p.r, 64, d, &f), 0);
    if (i % 2 == 0)
      put(p.peer, buf + 3);
    int rc = settle(p.loop, f);
    if (i % 2)
      put(p.peer, buf + 3);
    if (rc == 0) {
      snprintf(want, sizeof want, "line-%d", next++);
      EXPECT_STREQ(view(f, buf, sizeof buf), want);
    } else {
      EXPECT_ERR(rc, WEFT_ETIMEDOUT);
      timeouts++;
    }
    weft_future_release(f);
  }
  while (next < N) {
    snprintf(want, sizeof want, "line-%d", next++);
    EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
    EXPECT_STREQ(buf, want);
  }
  weft_bytes_t b;
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  EXPECT_EQ(b.len, 0u);
  EXPECT_TRUE(timeouts >= N / 2);
  printf("(%d of %d timed out) ", timeouts, N);
  pair_close(&p);
}

/* A cancel, on the loop thread and from another, with bytes arriving:
 * the next read gets everything. */
static void test_cancel(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_line(p.r, 64, 0, &f), 0);
  put(p.peer, "ab");
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  put(p.peer, "c\n");
  char buf[64];
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "abc");
  /* from another thread, racing the bytes */
  enum { N = 300 };
  int next = 0, cancelled = 0;
  char want[64];
  for (int i = 0; i < N; i++) {
    REQUIRE_EQ(weft_reader_read_line(p.r, 64, 0, &f), 0);
    xcancel_t x = {.f = f};
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, cancel_thread, &x), 0);
    snprintf(buf, sizeof buf, "x%d\n", i);
    atomic_store(&x.go, 1);
    put(p.peer, buf);
    weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
    pthread_join(t, NULL);
    int rc = settle(p.loop, f);
    if (rc == 0) {
      snprintf(want, sizeof want, "x%d", next++);
      EXPECT_STREQ(view(f, buf, sizeof buf), want);
    } else {
      EXPECT_ERR(rc, WEFT_ECANCELED);
      cancelled++;
    }
    weft_future_release(f);
    weft_loop_run(p.loop, WEFT_RUN_NOWAIT); /* the cancel's disarm */
  }
  while (next < N) {
    snprintf(want, sizeof want, "x%d", next++);
    EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
    EXPECT_STREQ(buf, want);
  }
  /* (which side wins each race is the scheduler's: the cancel that
   * surely wins is the first part's) */
  printf("(%d of %d cancelled) ", cancelled, N);
  pair_close(&p);
}

/* Destroy with a wait pending: it settles cancelled; nothing leaks. */
static void test_destroy_pending(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  weft_future_t *f;
  REQUIRE_EQ(weft_reader_read_line(p.r, 64, ms_from_now(BOUND_MS), &f), 0);
  EXPECT_EQ(weft_reader_close(p.r), 0);
  p.r = NULL;
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  /* the socket is still the caller's: a new reader reads on */
  put(p.peer, "after\n");
  pair_reader(&p, 0);
  char buf[64];
  EXPECT_ERR(line_of(&p, 64, 0, buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "after");
  /* the socket closed under a wait: cancelled, then destroy */
  REQUIRE_EQ(weft_reader_read_line(p.r, 64, 0, &f), 0);
  weft_socket_close(p.s);
  p.s = NULL;
  EXPECT_ERR(settle(p.loop, f), WEFT_ECANCELED);
  weft_future_release(f);
  pair_close(&p);
}

typedef struct offthread {
  weft_reader_t *r;
  weft_writer_t *w;
  int rc[6];
} offthread_t;

static void *off_run(void *arg) {
  offthread_t *o = arg;
  weft_bytes_t b;
  weft_future_t *f;
  o->rc[0] = weft_reader_try_line(o->r, 64, &b);
  o->rc[1] = weft_reader_read_line(o->r, 64, 0, &f);
  o->rc[2] = weft_reader_close(o->r);
  o->rc[3] = weft_writer_write(o->w, "x", 1);
  o->rc[4] = weft_writer_flush(o->w, 0, &f);
  o->rc[5] = weft_writer_close(o->w);
  return NULL;
}

/* EBUSY, EINVAL, EPERM, EDEADLK. */
static void test_misuse(void) {
  pair_t p;
  pair_open(&p);
  pair_reader(&p, 0);
  REQUIRE_EQ(weft_writer_create(p.s, NULL, &p.w), 0);
  weft_reader_t *r2;
  weft_reader_options_t bad = {.size = 3};
  EXPECT_ERR(weft_reader_create(p.s, &bad, &r2), WEFT_EINVAL);
  weft_reader_options_t res = {.size = sizeof res, .reserved = {&bad}};
  EXPECT_ERR(weft_reader_create(p.s, &res, &r2), WEFT_ENOTSUP);
  /* a newer caller's larger struct: its zero tail is read as defaults,
   * a byte set in it is a request this weft cannot honour */
  struct {
    weft_reader_options_t o;
    char more[16];
  } rbig = {.o = {.size = sizeof rbig}};
  struct {
    weft_writer_options_t o;
    char more[16];
  } wbig = {.o = {.size = sizeof wbig}};
  weft_writer_t *w2;
  rbig.more[15] = 1;
  EXPECT_ERR(weft_reader_create(p.s, &rbig.o, &r2), WEFT_ENOTSUP);
  wbig.more[15] = 1;
  EXPECT_ERR(weft_writer_create(p.s, &wbig.o, &w2), WEFT_ENOTSUP);
  wbig.o.size = 5000;
  EXPECT_ERR(weft_writer_create(p.s, &wbig.o, &w2), WEFT_EINVAL);
  wbig.o.size = sizeof wbig;
  wbig.more[15] = 0;
  REQUIRE_EQ(weft_writer_create(p.s, &wbig.o, &w2), 0);
  EXPECT_EQ(weft_writer_close(w2), 0);
  rbig.more[15] = 0;
  REQUIRE_EQ(weft_reader_create(p.s, &rbig.o, &r2), 0);
  EXPECT_EQ(weft_reader_close(r2), 0);
  EXPECT_ERR(weft_reader_create(p.ls, NULL, &r2), WEFT_EINVAL);
  EXPECT_ERR(weft_reader_create(NULL, NULL, &r2), WEFT_EINVAL);
  weft_future_t *f, *g;
  weft_bytes_t b;
  EXPECT_ERR(weft_reader_read_line(p.r, 0, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_reader_read_line(p.r, 8, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_reader_try_line(p.r, 8, NULL), WEFT_EINVAL);
  REQUIRE_EQ(weft_reader_read_line(p.r, 64, 0, &f), 0);
  EXPECT_ERR(weft_reader_read_line(p.r, 64, 0, &g), WEFT_EBUSY);
  EXPECT_ERR(weft_reader_peek(p.r, 1, 0, &g), WEFT_EBUSY);
  EXPECT_ERR(weft_reader_try_line(p.r, 64, &b), WEFT_EBUSY);
  EXPECT_ERR(weft_reader_consume(p.r, 0), WEFT_EBUSY);
  EXPECT_EQ(weft_reader_buffered(p.r, &b), 0);
  /* outside a fiber, an await that would wait */
  EXPECT_ERR(weft_reader_await_line(p.r, 64, 0, &b), WEFT_EBUSY);
  weft_future_cancel(f);
  weft_future_release(f);
  EXPECT_ERR(weft_reader_await_line(p.r, 64, 0, &b), WEFT_EDEADLK);
  put(p.peer, "ready\n");
  weft_future_t *pk;
  REQUIRE_EQ(weft_reader_peek(p.r, 6, 0, &pk), 0);
  REQUIRE_EQ(settle(p.loop, pk), 0);
  weft_future_release(pk);
  char buf[64];
  EXPECT_ERR(weft_reader_await_line(p.r, 64, 0, &b), 0); /* buffered */
  EXPECT_STREQ(bytes_str(b, buf, sizeof buf), "ready");
  /* off the loop thread */
  offthread_t o = {.r = p.r, .w = p.w};
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, off_run, &o), 0);
  pthread_join(t, NULL);
  for (int i = 0; i < 6; i++)
    EXPECT_ERR(o.rc[i], WEFT_EPERM);
  /* writer misuse */
  EXPECT_ERR(weft_writer_write(p.w, NULL, 1), WEFT_EINVAL);
  EXPECT_ERR(weft_writer_write(p.w, NULL, 0), 0);
  EXPECT_ERR(weft_writer_flush(p.w, -1, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_writer_await_flush(p.w, 0), 0); /* nothing queued */
  EXPECT_EQ(weft_writer_write(p.w, "q", 1), 0);
  EXPECT_ERR(weft_writer_await_flush(p.w, 0), WEFT_EDEADLK);
  weft_writer_options_t wo = {.size = sizeof wo, .max_queued = 4};
  REQUIRE_EQ(weft_writer_create(p.s, &wo, &w2), 0);
  EXPECT_ERR(weft_writer_write(w2, "12345", 5), WEFT_EMSGSIZE);
  EXPECT_ERR(weft_writer_wait_room(w2, 5, 0, &f), WEFT_EMSGSIZE);
  EXPECT_EQ(weft_writer_close(w2), 0);
  pair_close(&p);
}

/* ---- the writer ---- */

/* The byte at offset k of a test stream. */
static char pat(size_t k) { return (char)('a' + (k * 7 + k / 251) % 26); }

static void pat_fill(char *b, size_t off, size_t n) {
  for (size_t i = 0; i < n; i++)
    b[i] = pat(off + i);
}

static bool pat_ok(const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != pat(i))
      return false;
  return true;
}

/* Run the loop (woken every 5 ms) until *flag is set or BOUND_MS pass. */
static void run_until_flag(weft_loop_t *loop, _Atomic int *flag) {
  weft_timer_t t;
  REQUIRE_EQ(weft_timer_init(loop, &t, tick, NULL), 0);
  REQUIRE_EQ(weft_timer_start(&t, 5, 5), 0);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (!atomic_load(flag) && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  weft_timer_stop(&t);
  EXPECT_TRUE(atomic_load(flag));
}

/* A peer thread reading want bytes (from when go is set). */
typedef struct drain {
  int fd;
  char *buf;
  size_t got, want;
  _Atomic int go, done;
  pthread_t t;
} drain_t;

static void *drain_run(void *arg) {
  drain_t *d = arg;
  while (!atomic_load(&d->go))
    sched_yield();
  while (d->got < d->want) {
    ssize_t k = read(d->fd, d->buf + d->got, d->want - d->got);
    if (k <= 0)
      break;
    d->got += (size_t)k;
  }
  atomic_store(&d->done, 1);
  return NULL;
}

static void drain_start(drain_t *d, int fd, size_t want, bool go) {
  d->fd = fd;
  d->buf = malloc(want + 1);
  REQUIRE_EQ(d->buf != NULL, 1);
  d->got = 0;
  d->want = want;
  atomic_store(&d->done, 0);
  atomic_store(&d->go, go ? 1 : 0);
  REQUIRE_EQ(pthread_create(&d->t, NULL, drain_run, d), 0);
}

/* Join the drain: it got exactly the pattern's want bytes. */
static void drain_check(drain_t *d) {
  pthread_join(d->t, NULL);
  EXPECT_EQ(d->got, d->want);
  EXPECT_TRUE(pat_ok(d->buf, d->got));
  free(d->buf);
}

/* Write the pattern from *off in pieces of n until the writer is full and
 * stays so with the loop run (the kernel's buffers full too). */
static void fill_stuck(weft_loop_t *loop, weft_writer_t *w, size_t *off,
                       size_t n) {
  char *b = malloc(n);
  REQUIRE_EQ(b != NULL, 1);
  for (int stuck = 0; stuck < 20;) {
    pat_fill(b, *off, n);
    int rc = weft_writer_write(w, b, n);
    if (rc == 0) {
      *off += n;
      stuck = 0;
      continue;
    }
    REQUIRE_EQ(rc, WEFT_EAGAIN);
    size_t q = weft_writer_queued(w);
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
    stuck += weft_writer_queued(w) == q;
  }
  free(b);
}

/* A pair over a Unix stream socket with a small send buffer: a peer that
 * does not read stops the writer after a few KiB, the same every run (a
 * Unix socket's buffer does not grow as TCP's does). */
static void pair_open_unix(pair_t *p) {
  p->loop = new_loop();
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-stream-w%d.sock", (int)getpid());
  unlink(path);
  weft_addr_t ua;
  REQUIRE_EQ(weft_addr_init_unix(path, &ua), 0);
  REQUIRE_EQ(weft_socket_listen(p->loop, &ua, 4, &p->ls), 0);
  p->peer = raw_connect(&ua);
  p->s = accept_one(p->loop, p->ls);
  unlink(path);
  p->r = NULL;
  p->w = NULL;
  int small = 16384;
  setsockopt(weft_socket_fd(p->s), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
}

/* A writer (max_queued 0: the default) over a Unix pair whose peer does
 * not read, written in `piece`-byte writes until the kernel takes no
 * more; *off counts the bytes written. */
static void pair_stuck_writer(pair_t *p, size_t max_queued, size_t piece,
                              size_t *off) {
  pair_open_unix(p);
  weft_writer_options_t o = {.size = sizeof o, .max_queued = max_queued};
  REQUIRE_EQ(weft_writer_create(p->s, &o, &p->w), 0);
  *off = 0;
  fill_stuck(p->loop, p->w, off, piece);
}

/* Writes, then a flush: the peer gets every byte in order. */
static void test_write_flush(void) {
  pair_t p;
  pair_open(&p);
  REQUIRE_EQ(weft_writer_create(p.s, NULL, &p.w), 0);
  enum { N = 3000 };
  size_t off = 0;
  char b[200];
  for (int i = 0; i < N; i++) {
    size_t n = 1 + (size_t)i % 150;
    pat_fill(b, off, n);
    REQUIRE_EQ(weft_writer_write(p.w, b, n), 0);
    off += n;
    if (i % 500 == 0)
      weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  }
  drain_t d;
  drain_start(&d, p.peer, off, true);
  weft_future_t *f;
  REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(BOUND_MS), &f), 0);
  EXPECT_ERR(settle(p.loop, f), 0);
  weft_future_release(f);
  EXPECT_EQ(weft_writer_queued(p.w), 0u);
  drain_check(&d);
  /* nothing queued: a flush settles at once */
  REQUIRE_EQ(weft_writer_flush(p.w, 0, &f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_future_release(f);
  pair_close(&p);
}

/* The bound: EAGAIN past it, EMSGSIZE above it; room and flush waits
 * time out against a peer that does not read and settle once it does. */
static void test_bound_room_flush(void) {
  pair_t p;
  size_t off;
  pair_stuck_writer(&p, 65536, 4000, &off);
  size_t q = weft_writer_queued(p.w);
  EXPECT_TRUE(q > 65536 - 4000);
  char b[8];
  EXPECT_ERR(weft_writer_write(p.w, b, 65537), WEFT_EMSGSIZE);
  weft_future_t *room, *room2, *fl, *late;
  REQUIRE_EQ(weft_writer_wait_room(p.w, 30000, 0, &room), 0);
  REQUIRE_EQ(weft_writer_wait_room(p.w, 1, ms_from_now(20), &room2), 0);
  REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(40), &fl), 0);
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_future_state(room), WEFT_PENDING);
  /* waits are served in order: room2 would fit sooner, but waits */
  EXPECT_ERR(settle(p.loop, room2), WEFT_ETIMEDOUT);
  EXPECT_ERR(settle(p.loop, fl), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_writer_queued(p.w), q); /* nothing dropped */
  EXPECT_EQ(weft_future_state(room), WEFT_PENDING);
  weft_future_release(room2);
  weft_future_release(fl);
  /* the peer reads: room comes */
  drain_t d;
  size_t total = off + 30000;
  drain_start(&d, p.peer, total, true);
  EXPECT_ERR(settle(p.loop, room), 0);
  weft_future_release(room);
  char *more = malloc(30000);
  pat_fill(more, off, 30000);
  EXPECT_EQ(weft_writer_write(p.w, more, 30000), 0);
  free(more);
  REQUIRE_EQ(weft_writer_flush(p.w, 0, &late), 0);
  EXPECT_ERR(settle(p.loop, late), 0);
  weft_future_release(late);
  drain_check(&d);
  pair_close(&p);
}

/* A continuation run at once (weft_executor_inline) on a timed-out wait
 * starts a timer when the loop's timer heap is full and memory has run
 * out: the writer's timer took its slot back first, so the continuation's
 * start fails (its own error to handle) and the other wait's deadline is
 * still kept. */
typedef struct fill_timer {
  weft_timer_t *t;
  int rc;
} fill_timer_t;

static void fill_last_slot(void *arg, weft_future_t *f) {
  (void)f;
  fill_timer_t *c = arg;
  weft__fault_arm("alloc", 1, ENOMEM, false); /* the next one fails */
  c->rc = weft_timer_start(c->t, 600000, 0);
  weft__fault_disarm();
}

static void test_deadline_heap_full(void) {
  pair_t p;
  size_t off;
  pair_stuck_writer(&p, 65536, 4000, &off);
  size_t q = weft_writer_queued(p.w);
  weft_future_t *a, *b;
  REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(20), &a), 0);
  REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(60), &b), 0);
  /* the loop's timer heap, full: the next start needs memory */
  enum { T = 2048 };
  static weft_timer_t ts[T];
  int n = 0, rc;
  for (;; n++) {
    REQUIRE_EQ(n < T, 1);
    REQUIRE_EQ(weft_timer_init(p.loop, &ts[n], tick, NULL), 0);
    weft__fault_arm("alloc", 1, ENOMEM, false);
    rc = weft_timer_start(&ts[n], 600000, 0);
    weft__fault_disarm();
    if (rc != 0)
      break;
  }
  weft__fault_record(false);
  REQUIRE_EQ(rc, WEFT_ENOMEM);
  fill_timer_t c = {&ts[n], 1};
  weft_watch_t watch = {0};
  REQUIRE_EQ(weft_future_retain(a), 0); /* the watch's handle */
  REQUIRE_EQ(weft_watch_start(&watch, a, weft_executor_inline(), fill_last_slot,
                              &c, NULL),
             0);
  /* (plain runs: the writer's timer wakes the loop at a's deadline) */
  while (weft_future_state(a) == WEFT_PENDING)
    weft_loop_run(p.loop, WEFT_RUN_ONCE);
  weft__fault_record(false);
  EXPECT_ERR(weft_future_error(a), WEFT_ETIMEDOUT);
  EXPECT_ERR(c.rc, WEFT_ENOMEM);
  for (int i = 0; i < n; i++) /* room for settle_plain's own timer */
    weft_timer_stop(&ts[i]);
  EXPECT_ERR(settle_plain(p.loop, b), WEFT_ETIMEDOUT);
  EXPECT_EQ(weft_writer_queued(p.w), q); /* nothing dropped */
  weft_future_release(a);
  weft_future_release(b);
  pair_close(&p);
}

/* A continuation run at once on a timed-out wait cancels and drops the
 * next due wait and closes the writer: the writer's scan and its memory
 * outlive the continuation (ASan sees any use after free). */
typedef struct close_in_settle {
  weft_writer_t **w;
  weft_future_t *next;
} close_in_settle_t;

static void close_in_settle(void *arg, weft_future_t *f) {
  (void)f;
  close_in_settle_t *c = arg;
  EXPECT_TRUE(weft_future_cancel(c->next) >= 0);
  weft_future_release(c->next);
  c->next = NULL;
  EXPECT_EQ(weft_writer_close(*c->w), 0);
  *c->w = NULL;
}

static void test_close_in_settle(void) {
  pair_t p;
  size_t off;
  pair_stuck_writer(&p, 0, 7000, &off);
  weft_future_t *a, *b, *last;
  int64_t due = ms_from_now(20);
  REQUIRE_EQ(weft_writer_flush(p.w, due, &a), 0);
  REQUIRE_EQ(weft_writer_flush(p.w, due, &b), 0);
  REQUIRE_EQ(weft_writer_flush(p.w, 0, &last), 0);
  close_in_settle_t c = {&p.w, b};
  weft_watch_t watch = {0};
  REQUIRE_EQ(weft_future_retain(a), 0); /* the watch's handle */
  REQUIRE_EQ(weft_watch_start(&watch, a, weft_executor_inline(),
                              close_in_settle, &c, NULL),
             0);
  EXPECT_ERR(settle(p.loop, a), WEFT_ETIMEDOUT);
  EXPECT_EQ(p.w == NULL, 1);
  EXPECT_EQ(c.next == NULL, 1);
  EXPECT_EQ(weft_future_state(last), WEFT_CANCELLED);
  weft_future_release(a);
  weft_future_release(last);
  /* the bytes queued still go */
  drain_t d;
  drain_start(&d, p.peer, off, true);
  run_until_flag(p.loop, &d.done);
  drain_check(&d);
  pair_close(&p);
}

/* Between runs the loop's cached time stands still. A wait started then
 * counts its deadline from the clock, not from that stale time: it times
 * out near its deadline, not as late as the loop was idle. */
static void test_deadline_after_idle(void) {
  enum { IDLE_MS = 300, LATE_MS = 200 };
  pair_t p;
  size_t off;
  pair_stuck_writer(&p, 0, 7000, &off);
  pair_reader(&p, 0);
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  int64_t idle_end = ms_from_now(IDLE_MS);
  while (weft_clock_now_ns() < idle_end) /* the loop idle, not run */
    ;
  int64_t deadline = ms_from_now(20);
  weft_future_t *rf, *wf;
  REQUIRE_EQ(weft_reader_read_line(p.r, 64, deadline, &rf), 0);
  REQUIRE_EQ(weft_writer_flush(p.w, deadline, &wf), 0);
  EXPECT_ERR(settle(p.loop, rf), WEFT_ETIMEDOUT);
  int64_t late_r = weft_clock_now_ns() - deadline;
  EXPECT_ERR(settle(p.loop, wf), WEFT_ETIMEDOUT);
  int64_t late_w = weft_clock_now_ns() - deadline;
  EXPECT_TRUE(late_r >= 0 && late_r < LATE_MS * 1000000LL);
  EXPECT_TRUE(late_w >= 0 && late_w < LATE_MS * 1000000LL);
  weft_future_release(rf);
  weft_future_release(wf);
  pair_close(&p);
}

/* Destroy with bytes queued: they all go, in order. */
static void test_destroy_delivers(void) {
  pair_t p;
  size_t off;
  pair_stuck_writer(&p, 0, 7000, &off);
  char b[100];
  pat_fill(b, off, sizeof b);
  weft_future_t *fl;
  REQUIRE_EQ(weft_writer_flush(p.w, 0, &fl), 0);
  EXPECT_EQ(weft_writer_close(p.w), 0);
  p.w = NULL;
  EXPECT_EQ(weft_future_state(fl), WEFT_CANCELLED);
  weft_future_release(fl);
  drain_t d;
  drain_start(&d, p.peer, off, true);
  run_until_flag(p.loop, &d.done);
  drain_check(&d);
  /* a writer destroyed and its socket closed at once: no use after free */
  weft_writer_t *w2;
  REQUIRE_EQ(weft_writer_create(p.s, NULL, &w2), 0);
  EXPECT_EQ(weft_writer_write(w2, b, sizeof b), 0);
  EXPECT_EQ(weft_writer_close(w2), 0);
  weft_socket_close(p.s);
  p.s = NULL;
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  pair_close(&p);
}

/* A peer that goes away: the stream's error, on writes and waits. */
static void test_writer_peer_gone(void) {
  pair_t p;
  pair_open(&p);
  REQUIRE_EQ(weft_writer_create(p.s, NULL, &p.w), 0);
  struct linger lg = {1, 0};
  setsockopt(p.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(p.peer);
  p.peer = -1;
  int rc = 0;
  weft_future_t *f;
  for (int i = 0; i < 1000 && rc == 0; i++) {
    rc = weft_writer_write(p.w, "data", 4);
    if (rc != 0)
      break;
    REQUIRE_EQ(weft_writer_flush(p.w, ms_from_now(BOUND_MS), &f), 0);
    rc = settle(p.loop, f);
    weft_future_release(f);
  }
  EXPECT_TRUE(rc == WEFT_EPIPE || rc == WEFT_ECONNRESET);
  EXPECT_ERR(weft_writer_write(p.w, "x", 1), rc);
  EXPECT_EQ(weft_writer_queued(p.w), 0u);
  REQUIRE_EQ(weft_writer_wait_room(p.w, 1, 0, &f), 0);
  EXPECT_ERR(settle(p.loop, f), rc);
  weft_future_release(f);
  pair_close(&p);
}

/* ---- fibers ---- */

typedef struct echo {
  weft_socket_t *s;
  int lines, timeouts, end;
  int cancel_rc;
  char kept[64];
} echo_t;

/* A line server: each line back as "re: <line>", a deadline per request,
 * until end of stream. */
static weft_result_t echo_fiber(void *arg) {
  echo_t *e = arg;
  weft_reader_t *r;
  weft_writer_t *w;
  if (weft_reader_create(e->s, NULL, &r) != 0)
    return weft_err(WEFT_ENOMEM);
  if (weft_writer_create(e->s, NULL, &w) != 0) {
    weft_reader_close(r);
    return weft_err(WEFT_ENOMEM);
  }
  for (;;) {
    weft_bytes_t line;
    int rc = weft_reader_await_line(r, 256, weft_clock_now_ns() + 30000000,
                                    &line);
    if (rc == WEFT_ETIMEDOUT) {
      e->timeouts++;
      continue;
    }
    if (rc != 0) {
      e->end = rc;
      break;
    }
    e->lines++;
    if (weft_writer_await_write(w, "re: ", 4, 0) != 0 ||
        weft_writer_await_write(w, line.data, line.len, 0) != 0 ||
        weft_writer_await_write(w, "\n", 1, 0) != 0)
      break;
    if (e->lines % 2 == 0 && weft_writer_await_flush(w, 0) != 0)
      break;
  }
  weft_writer_await_flush(w, 0);
  weft_writer_close(w);
  weft_reader_close(r);
  return weft_ok_int(0);
}

static void test_fiber_lines(void) {
  pair_t p;
  pair_open(&p);
  echo_t e = {.s = p.s};
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(p.loop), echo_fiber, &e, NULL,
                              &f),
             0);
  put(p.peer, "one\r\ntw");
  /* a request that stalls past its deadline, then completes */
  weft_future_t *nap;
  REQUIRE_EQ(weft_loop_sleep(p.loop, 80, &nap), 0);
  settle(p.loop, nap);
  weft_future_release(nap);
  put(p.peer, "o\nthree\n");
  shutdown(p.peer, SHUT_WR);
  EXPECT_ERR(settle(p.loop, f), 0);
  weft_future_release(f);
  EXPECT_EQ(e.lines, 3);
  EXPECT_TRUE(e.timeouts >= 1);
  EXPECT_ERR(e.end, WEFT_EOF);
  char got[128] = {0};
  size_t n = 0;
  ssize_t k;
  while (n < sizeof got - 1 &&
         (k = read(p.peer, got + n, sizeof got - 1 - n)) > 0) {
    n += (size_t)k;
    if (strstr(got, "re: three\n") != NULL)
      break;
  }
  EXPECT_STREQ(got, "re: one\nre: two\nre: three\n");
  pair_close(&p);
}

/* A fiber cancelled while it awaits a line: the read is cancelled with
 * nothing lost. */
static weft_result_t wait_fiber(void *arg) {
  echo_t *e = arg;
  weft_reader_t *r;
  if (weft_reader_create(e->s, NULL, &r) != 0)
    return weft_err(WEFT_ENOMEM);
  weft_bytes_t line;
  e->cancel_rc = weft_reader_await_line(r, 64, 0, &line);
  weft_bytes_t b;
  weft_reader_buffered(r, &b);
  if (b.len < sizeof e->kept)
    memcpy(e->kept, b.data, b.len);
  weft_reader_close(r);
  return weft_ok_int(0);
}

static void test_fiber_cancel(void) {
  pair_t p;
  pair_open(&p);
  echo_t e = {.s = p.s};
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(p.loop), wait_fiber, &e, NULL,
                              &f),
             0);
  put(p.peer, "half");
  for (int i = 0; i < 5; i++)
    weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_future_cancel(f), 0);
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  weft_loop_run(p.loop, WEFT_RUN_NOWAIT);
  weft_future_release(f);
  EXPECT_ERR(e.cancel_rc, WEFT_ECANCELED);
  EXPECT_STREQ(e.kept, "half");
  pair_close(&p);
}

/* ---- allocation failure ---- */

/* Fail each allocation in turn of a reader's life: the error comes back
 * and the line is still whole afterwards. */
static void test_reader_nomem(void) {
  const char *text = "0123456789abcdef-longer than the first buffer\nrest\n";
  int ok = 0, nomem = 0;
  for (long n = 1; n < 60 && ok < 3; n++) {
    pair_t p;
    pair_open(&p);
    put(p.peer, text);
    tu_alloc_install(n);
    weft_reader_options_t o = {.size = sizeof o, .buffer_size = 16};
    int rc = weft_reader_create(p.s, &o, &p.r);
    weft_future_t *f = NULL;
    if (rc == 0)
      rc = weft_reader_read_line(p.r, 100, ms_from_now(BOUND_MS), &f);
    if (f != NULL) {
      rc = settle_plain(p.loop, f);
      weft_future_release(f);
    }
    long used = tu_alloc_count();
    tu_alloc_restore();
    if (rc != 0) {
      EXPECT_ERR(rc, WEFT_ENOMEM);
      nomem++;
      if (p.r == NULL)
        pair_reader(&p, 16);
      char buf[128];
      EXPECT_ERR(line_of(&p, 100, 0, buf, sizeof buf), 0);
      EXPECT_STREQ(buf, "0123456789abcdef-longer than the first buffer");
    }
    char buf[128];
    EXPECT_ERR(line_of(&p, 100, 0, buf, sizeof buf), 0);
    EXPECT_STREQ(buf, "rest");
    ok += used < n;
    pair_close(&p);
  }
  EXPECT_TRUE(ok > 0);
  EXPECT_TRUE(nomem >= 3); /* create, the wait, the buffer's growth */
}

/* The same for a writer: writes and waits that fail lose nothing. */
static void test_writer_nomem(void) {
  int ok = 0, nomem = 0;
  for (long n = 1; n < 60 && ok < 3; n++) {
    pair_t p;
    pair_open(&p);
    enum { A = 100, B = 40000 };
    static char data[A + B];
    pat_fill(data, 0, sizeof data);
    tu_alloc_install(n);
    size_t sent = 0;
    int rc = weft_writer_create(p.s, NULL, &p.w);
    if (rc == 0 && (rc = weft_writer_write(p.w, data, A)) == 0)
      sent = A;
    if (rc == 0 && (rc = weft_writer_write(p.w, data + A, B)) == 0)
      sent = A + B;
    weft_future_t *f = NULL;
    if (rc == 0)
      rc = weft_writer_flush(p.w, 0, &f);
    EXPECT_TRUE(rc == 0 || rc == WEFT_ENOMEM);
    nomem += rc == WEFT_ENOMEM;
    EXPECT_EQ(weft_writer_queued(p.w), p.w != NULL ? sent : 0u);
    drain_t d;
    drain_start(&d, p.peer, A + B, true);
    if (f != NULL) {
      EXPECT_ERR(settle_plain(p.loop, f), 0);
      weft_future_release(f);
    }
    long used = tu_alloc_count();
    tu_alloc_restore();
    if (p.w == NULL)
      REQUIRE_EQ(weft_writer_create(p.s, NULL, &p.w), 0);
    if (sent < A + B)
      REQUIRE_EQ(weft_writer_write(p.w, data + sent, A + B - sent), 0);
    REQUIRE_EQ(weft_writer_flush(p.w, 0, &f), 0);
    EXPECT_ERR(settle(p.loop, f), 0);
    weft_future_release(f);
    drain_check(&d);
    ok += used < n;
    pair_close(&p);
  }
  EXPECT_TRUE(ok > 0);
  EXPECT_TRUE(nomem >= 3); /* create, the write's buffer, the flush */
}

static const test_case_t cases[] = {
    {"lines: LF, CRLF, a lone CR is data", test_lines},
    {"a line in 1-byte pieces", test_tiny_pieces},
    {"many lines in one write", test_many_lines},
    {"past the max, then consume", test_max},
    {"until, exactly, peek", test_until_exactly_peek},
    {"end of stream mid-line", test_eof_mid_line},
    {"reset mid-line", test_reset},
    {"a Unix stream socket, lines both ways", test_unix},
    {"deadline at every stage", test_deadline_stages},
    {"deadlines racing lines", test_deadline_race},
    {"cancel, here and from another thread", test_cancel},
    {"destroy with a wait pending", test_destroy_pending},
    {"misuse: EBUSY, EPERM, EDEADLK", test_misuse},
    {"writer: writes and a flush", test_write_flush},
    {"writer: the bound, room and flush deadlines", test_bound_room_flush},
    {"reader and writer: deadlines after the loop sat idle",
     test_deadline_after_idle},
    {"writer: deadlines kept with the timer heap full",
     test_deadline_heap_full},
    {"writer: closed by a continuation run at once", test_close_in_settle},
    {"writer: destroy delivers what is queued", test_destroy_delivers},
    {"writer: the peer goes away", test_writer_peer_gone},
    {"fiber: lines with a deadline per request", test_fiber_lines},
    {"fiber: cancelled while it waits", test_fiber_cancel},
    {"allocation failure: reader", test_reader_nomem},
    {"allocation failure: writer", test_writer_nomem},
    {NULL, NULL}};

const test_suite_t suite_stream = {"stream", cases};
