/* SPDX-License-Identifier: MIT */
/* tests/test_net_data.c: bytes through sockets on 127.0.0.1 (and ::1 when
 * the machine has it): 16 MiB echo in random-sized writes and reads, 1,000
 * concurrent connections, half-close, the end of stream in the same edge
 * as the last bytes, UDP, Unix sockets, a host that embeds the loop woken
 * by reads, and more reads waiting than the ring has buffers. */
#include "net_util.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- 16 MiB through one connection, random-sized writes and reads ---- */

#define BIG (16u << 20)

typedef struct bigc {
  weft_loop_t *loop;
  weft_socket_t *s;
  unsigned char *out, *in;
  size_t sent, got;
  uint64_t rng;
  long done, writes;
  long connect_failed, write_failed, read_failed;
} bigc_t;

static void big_write(bigc_t *b);
static void big_read(bigc_t *b);

static weft_result_t big_wrote(void *arg, weft_future_t *f) {
  bigc_t *b = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    b->write_failed++;
    return weft_ok_int(0);
  }
  b->sent += (size_t)weft_future_int(f);
  if (b->sent < BIG)
    big_write(b);
  return weft_ok_int(0);
}

static void big_write(bigc_t *b) {
  size_t n = 1 + rng_next(&b->rng) % 65536;
  if (n > BIG - b->sent)
    n = BIG - b->sent;
  weft_future_t *w;
  REQUIRE_EQ(weft_socket_write(b->s, b->out + b->sent, n, &w), 0);
  b->writes++;
  chain(b->loop, w, big_wrote, b);
}

static weft_result_t big_got(void *arg, weft_future_t *f) {
  bigc_t *b = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    b->read_failed++;
    return weft_ok_int(0);
  }
  b->got += (size_t)weft_future_int(f);
  if (b->got < BIG)
    big_read(b);
  else
    b->done = 1;
  return weft_ok_int(0);
}

static void big_read(bigc_t *b) {
  size_t n = 1 + rng_next(&b->rng) % 100000;
  if (n > BIG - b->got)
    n = BIG - b->got;
  weft_future_t *r;
  REQUIRE_EQ(weft_socket_read(b->s, b->in + b->got, n, &r), 0);
  chain(b->loop, r, big_got, b);
}

static weft_result_t big_connected(void *arg, weft_future_t *f) {
  bigc_t *b = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    b->connect_failed++;
    return weft_ok_int(0);
  }
  REQUIRE_EQ(weft_socket_take(f, &b->s), 0);
  big_write(b);
  big_read(b);
  return weft_ok_int(0);
}

static void echo_big_on(const char *ip) {
  weft_loop_t *loop = new_loop();
  srv_t v;
  srv_start(&v, loop, ip);
  bigc_t b = {0};
  b.loop = loop;
  b.rng = 0x9e3779b97f4a7c15u;
  b.out = malloc(BIG);
  b.in = malloc(BIG);
  REQUIRE_EQ(b.out != NULL, 1);
  REQUIRE_EQ(b.in != NULL, 1);
  fill(b.out, BIG, 7);
  weft_future_t *c;
  REQUIRE_EQ(weft_socket_connect(loop, &v.addr, &c), 0);
  chain(loop, c, big_connected, &b);
  EXPECT_TRUE(drive(loop, &b.done, 1, BOUND_MS));
  EXPECT_EQ(b.connect_failed, 0);
  EXPECT_EQ(b.write_failed, 0);
  EXPECT_EQ(b.read_failed, 0);
  EXPECT_EQ(b.got, BIG);
  EXPECT_EQ(memcmp(b.in, b.out, BIG), 0);
  EXPECT_TRUE(b.writes > 100); /* random sizes, so many writes */
  EXPECT_EQ(weft_socket_write_queued(b.s), 0);
  /* Our close is the server's end of stream: it closes its side. */
  weft_socket_close(b.s);
  EXPECT_TRUE(drive(loop, &v.closed, 1, BOUND_MS));
  EXPECT_EQ(v.accepted, 1);
  v.stopping = true;
  weft_socket_close(v.ls); /* cancels the pending accept */
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(v.listener_errors, 0);
  free(b.out);
  free(b.in);
}

static void test_echo_16mib(void) { echo_big_on("127.0.0.1"); }

/* ---- 1,000 concurrent connections, each its own data ---- */

#define NCONN 1000
#define CMSG 1024

typedef struct cc {
  weft_loop_t *loop;
  weft_socket_t *s;
  int idx;
  unsigned char out[CMSG], in[CMSG];
  struct cc_counts *n;
} cc_t;

/* Connections finished (either way), and how many passed each check. */
typedef struct cc_counts {
  long done, connected, read_ok, read_len_ok, data_ok;
} cc_counts_t;

static weft_result_t cc_got(void *arg, weft_future_t *f) {
  cc_t *c = arg;
  c->n->read_ok += weft_future_state(f) == WEFT_FULFILLED;
  c->n->read_len_ok += weft_future_int(f) == CMSG;
  c->n->data_ok += memcmp(c->in, c->out, CMSG) == 0;
  c->n->done++;
  weft_socket_close(c->s);
  return weft_ok_int(0);
}

static weft_result_t cc_connected(void *arg, weft_future_t *f) {
  cc_t *c = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    c->n->done++;
    return weft_ok_int(0);
  }
  c->n->connected++;
  REQUIRE_EQ(weft_socket_take(f, &c->s), 0);
  weft_future_t *w, *r;
  REQUIRE_EQ(weft_socket_write(c->s, c->out, CMSG, &w), 0);
  weft_future_release(w); /* the read below proves it arrived */
  REQUIRE_EQ(weft_socket_read_exactly(c->s, c->in, CMSG, &r), 0);
  chain(c->loop, r, cc_got, c);
  return weft_ok_int(0);
}

static void test_thousand_connections(void) {
  raise_nofile(4 * NCONN);
  weft_loop_t *loop = new_loop();
  srv_t v;
  srv_start(&v, loop, "127.0.0.1");
  cc_t *cs = calloc(NCONN, sizeof *cs);
  REQUIRE_EQ(cs != NULL, 1);
  cc_counts_t n = {0};
  int fds0 = count_fds();
  for (int i = 0; i < NCONN; i++) {
    cs[i].loop = loop;
    cs[i].idx = i;
    cs[i].n = &n;
    fill(cs[i].out, CMSG, (uint64_t)i + 100);
    weft_future_t *c;
    REQUIRE_EQ(weft_socket_connect(loop, &v.addr, &c), 0);
    chain(loop, c, cc_connected, &cs[i]);
  }
  EXPECT_TRUE(drive(loop, &n.done, NCONN, BOUND_MS));
  EXPECT_EQ(n.connected, NCONN);
  EXPECT_EQ(n.read_ok, NCONN);
  EXPECT_EQ(n.read_len_ok, NCONN);
  EXPECT_EQ(n.data_ok, NCONN);
  EXPECT_TRUE(drive(loop, &v.closed, NCONN, BOUND_MS));
  EXPECT_EQ(v.accepted, NCONN);
  EXPECT_EQ(count_fds(), fds0); /* every socket of both sides closed */
  v.stopping = true;
  weft_socket_close(v.ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
  free(cs);
}

/* ---- half-close: the peer shuts down its write side ---- */

static void test_half_close(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls, *srv, *cli;
  connected_pair(loop, &ls, &srv, &cli);

  weft_future_t *w, *sd, *r1, *r2;
  REQUIRE_EQ(weft_socket_write(cli, "hello", 5, &w), 0);
  REQUIRE_EQ(weft_socket_shutdown(cli, &sd), 0);
  char buf[16];
  REQUIRE_EQ(weft_socket_read_exactly(srv, buf, 5, &r1), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r1, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(r1), 5);
  EXPECT_EQ(memcmp(buf, "hello", 5), 0);
  REQUIRE_EQ(weft_socket_read(srv, buf, sizeof buf, &r2), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r2, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(r2), WEFT_EOF); /* end of stream, not a crash */
  EXPECT_EQ(weft_future_state(sd), WEFT_FULFILLED);
  /* The other direction still works: the server answers, then closes. */
  weft_future_t *w2, *r3, *r4;
  REQUIRE_EQ(weft_socket_write(srv, "bye", 3, &w2), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, w2, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(w2), 3);
  weft_socket_close(srv);
  char got[8];
  REQUIRE_EQ(weft_socket_read_exactly(cli, got, 3, &r3), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r3, BOUND_MS), 0);
  EXPECT_EQ(memcmp(got, "bye", 3), 0);
  REQUIRE_EQ(weft_socket_read(cli, got, sizeof got, &r4), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r4, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(r4), WEFT_EOF);
  /* read_exactly that meets the end part-way says so */
  weft_future_t *r5;
  REQUIRE_EQ(weft_socket_read_exactly(cli, got, 3, &r5), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r5, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(r5), WEFT_EOF);
  weft_future_t *fs[] = {w, sd, r1, r2, w2, r3, r4, r5};
  for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
    weft_future_release(fs[i]);
  weft_socket_close(cli);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- bytes and the end of stream in one edge ---- */
/* A read waits; the peer sends "abc" and at once shuts its side. On epoll
 * both can come as one edge-triggered event: the first read takes 3 bytes
 * (a short read), and the second must still see the end of stream instead
 * of waiting for an event that never comes again. */
#define EDGE_EOF_TRIALS 20
#define EDGE_EOF_WAIT_MS 2000
static void test_bytes_then_eof_one_edge(void) {
  weft_loop_t *loop = new_loop();
  int failed = 0;
  for (int trial = 0; trial < EDGE_EOF_TRIALS && !failed; trial++) {
    weft_socket_t *ls;
    int peer;
    weft_socket_t *s = raw_pair(loop, &ls, &peer);
    char buf[64];
    weft_future_t *r1, *r2;
    REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r1), 0);
    weft_loop_run(loop, WEFT_RUN_NOWAIT); /* armed: nothing to read yet */
    EXPECT_EQ(weft_future_state(r1), WEFT_PENDING);
    REQUIRE_EQ(write(peer, "abc", 3), 3);
    REQUIRE_EQ(shutdown(peer, SHUT_WR), 0);
    REQUIRE_EQ(weft_loop_run_until(loop, r1, EDGE_EOF_WAIT_MS), 0);
    EXPECT_EQ(weft_future_int(r1), 3);
    REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r2), 0);
    int rc = weft_loop_run_until(loop, r2, EDGE_EOF_WAIT_MS);
    failed += rc != 0;
    EXPECT_ERR(rc, 0);
    EXPECT_ERR(weft_future_error(r2), WEFT_EOF);
    if (failed)
      printf("\n    trial %d: the end of stream never came ", trial);
    weft_future_release(r1);
    weft_future_release(r2);
    close(peer);
    weft_socket_close(s);
    weft_socket_close(ls);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- UDP ---- */

static void udp_on(const char *ip) {
  weft_loop_t *loop = new_loop();
  weft_addr_t any, aa, ba;
  REQUIRE_EQ(weft_addr_init_ip(ip, 0, &any), 0);
  weft_socket_t *a, *b;
  int rc = weft_socket_udp_bind(loop, &any, &a);
  if (rc == WEFT_EADDRNOTAVAIL || rc == WEFT_EUNKNOWN) { /* no IPv6 here */
    weft_loop_close(loop);
    return;
  }
  REQUIRE_EQ(rc, 0);
  REQUIRE_EQ(weft_socket_udp_bind(loop, &any, &b), 0);
  weft_socket_local_addr(a, &aa);
  weft_socket_local_addr(b, &ba);
  char in[64];
  weft_addr_t from;
  weft_future_t *r, *s;
  REQUIRE_EQ(weft_socket_udp_recv(b, in, sizeof in, &from, &r), 0);
  REQUIRE_EQ(weft_socket_udp_send(a, "ping", 4, &ba, &s), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(s), 4);
  EXPECT_EQ(weft_future_int(r), 4);
  EXPECT_EQ(memcmp(in, "ping", 4), 0);
  EXPECT_EQ(weft_addr_port(&from), weft_addr_port(&aa));
  weft_future_release(r);
  weft_future_release(s);
  /* and back to whoever sent it */
  REQUIRE_EQ(weft_socket_udp_recv(a, in, 2, NULL, &r), 0); /* truncates */
  REQUIRE_EQ(weft_socket_udp_send(b, "pong", 4, &from, &s), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(r), 2);
  EXPECT_EQ(memcmp(in, "po", 2), 0);
  weft_future_release(r);
  weft_future_release(s);
  weft_socket_close(a);
  weft_socket_close(b);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_udp(void) {
  udp_on("127.0.0.1");
  udp_on("::1");
}

/* ---- Unix stream sockets and IPv6 ---- */

static void test_unix_and_ipv6(void) {
  weft_loop_t *loop = new_loop();
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-test-%d.sock", (int)getpid());
  unlink(path);
  weft_addr_t ua;
  REQUIRE_EQ(weft_addr_init_unix(path, &ua), 0);
  srv_t v = {0};
  v.loop = loop;
  REQUIRE_EQ(weft_socket_listen(loop, &ua, 16, &v.ls), 0);
  srv_accept(&v);
  weft_socket_t *tmp;
  EXPECT_ERR(weft_socket_listen(loop, &ua, 16, &tmp), WEFT_EADDRINUSE);
  weft_future_t *c, *w, *r;
  REQUIRE_EQ(weft_socket_connect(loop, &ua, &c), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, c, BOUND_MS), 0);
  REQUIRE_EQ(weft_future_state(c), WEFT_FULFILLED);
  weft_socket_t *s;
  REQUIRE_EQ(weft_socket_take(c, &s), 0);
  char got[5];
  REQUIRE_EQ(weft_socket_write(s, "unix!", 5, &w), 0);
  REQUIRE_EQ(weft_socket_read_exactly(s, got, 5, &r), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(memcmp(got, "unix!", 5), 0);
  EXPECT_EQ(weft_socket_set_nodelay(s, true) != 0, 1); /* not TCP */
  weft_future_release(c);
  weft_future_release(w);
  weft_future_release(r);
  weft_socket_close(s);
  EXPECT_TRUE(drive(loop, &v.closed, 1, BOUND_MS));
  v.stopping = true;
  weft_socket_close(v.ls);
  unlink(path);
  /* IPv6 loopback, when the machine has it */
  weft_addr_t a6;
  REQUIRE_EQ(weft_addr_init_ip("::1", 0, &a6), 0);
  int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
  bool have6 = fd6 >= 0 &&
               bind(fd6, (const struct sockaddr *)&a6.ss, a6.len) == 0;
  if (fd6 >= 0)
    close(fd6);
  EXPECT_EQ(weft_loop_close(loop), 0);
  if (have6)
    echo_big_on("::1");
}

/* ---- reads through the loop's io_uring (plain epoll runs them too) ---- */

/* A host that embeds the loop waits on weft_loop_backend_fd() alone, for as long
 * as weft_loop_backend_timeout() says: a read the kernel completes must make
 * that fd readable (with a ring, completions signal it), and a read or
 * write still queued for the ring must keep the timeout at 0 until the
 * loop has run. A poll that times out here is the hang a host would see. */
static bool host_waits(weft_loop_t *loop, int fd, weft_future_t *f) {
  for (int wakes = 0; wakes < 64 && weft_future_state(f) == WEFT_PENDING;
       wakes++) {
    int64_t ms = weft_loop_backend_timeout(loop);
    int t = ms < 0 || ms > 5000 ? 5000 : (int)ms;
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, t);
    if (n == 0 && t == 5000)
      return false; /* nothing woke the host */
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  }
  return weft_future_state(f) != WEFT_PENDING;
}

static void test_embedded_read(void) {
  weft_loop_t *loop = new_loop();
  int fd = weft_loop_backend_fd(loop);
  REQUIRE_EQ(fd >= 0, 1);
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  for (int round = 0; round < 20; round++) {
    char buf[32], msg[32];
    int len = snprintf(msg, sizeof msg, "round %d", round);
    weft_future_t *r, *w;
    REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r), 0);
    if (round % 2) { /* the bytes come while the host waits */
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
      EXPECT_EQ(weft_future_state(r), WEFT_PENDING);
    }
    REQUIRE_EQ(write(peer, msg, (size_t)len), len);
    EXPECT_TRUE(host_waits(loop, fd, r));
    REQUIRE_EQ(weft_future_state(r), WEFT_FULFILLED);
    EXPECT_EQ(weft_future_int(r), len);
    EXPECT_EQ(memcmp(buf, msg, (size_t)len), 0);
    weft_future_release(r);
    /* and back: the write reaches the peer with no other wake-up */
    REQUIRE_EQ(weft_socket_write(s, msg, (size_t)len, &w), 0);
    EXPECT_TRUE(host_waits(loop, fd, w));
    EXPECT_EQ(weft_future_state(w), WEFT_FULFILLED);
    weft_future_release(w);
    char back[32];
    EXPECT_EQ(read(peer, back, sizeof back), len);
  }
  raw_pair_end(loop, s, ls, peer);
}

/* 200 reads waiting at once on a loop with small batches (16 events: the
 * ring has 64 buffers), then all their bytes come: the kernel completes
 * more reads than there are buffers before the loop gives any back, so
 * some find none; they must read the plain way, each its own bytes. */
enum { FEW_CONNS = 200, FEW_LEN = 40 };

typedef struct few {
  long done, fulfilled, len_ok;
  char buf[FEW_CONNS][64];
} few_t;

static weft_result_t few_got(void *arg, weft_future_t *f) {
  few_t *w = arg;
  w->fulfilled += weft_future_state(f) == WEFT_FULFILLED;
  w->len_ok += weft_future_int(f) == FEW_LEN;
  w->done++;
  return weft_ok_int(0);
}

static void test_reads_with_few_buffers(void) {
  raise_nofile(4096);
  weft_loop_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.max_events = 16;
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(&o, &loop), 0);
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  static few_t w;
  memset(&w, 0, sizeof w);
  weft_socket_t *socks[FEW_CONNS];
  int peers[FEW_CONNS];
  for (int i = 0; i < FEW_CONNS; i++) {
    peers[i] = raw_connect(&addr);
    socks[i] = accept_one(loop, ls);
  }
  for (int i = 0; i < FEW_CONNS; i++) {
    weft_future_t *r;
    REQUIRE_EQ(weft_socket_read_exactly(socks[i], w.buf[i], FEW_LEN, &r), 0);
    chain(loop, r, few_got, &w);
  }
  weft_loop_run(loop, WEFT_RUN_NOWAIT); /* all waiting (in the kernel) */
  EXPECT_EQ(w.done, 0);
  for (int i = 0; i < FEW_CONNS; i++) {
    char msg[FEW_LEN];
    memset(msg, 'a' + i % 26, sizeof msg);
    memcpy(msg, &i, sizeof i);
    REQUIRE_EQ(write(peers[i], msg, sizeof msg), (ssize_t)sizeof msg);
  }
  EXPECT_TRUE(drive(loop, &w.done, FEW_CONNS, BOUND_MS));
  EXPECT_EQ(w.fulfilled, FEW_CONNS);
  EXPECT_EQ(w.len_ok, FEW_CONNS);
  for (int i = 0; i < FEW_CONNS; i++) {
    int id;
    memcpy(&id, w.buf[i], sizeof id);
    EXPECT_EQ(id, i);
    EXPECT_EQ(w.buf[i][FEW_LEN - 1], 'a' + i % 26);
    close(peers[i]);
    weft_socket_close(socks[i]);
  }
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"echo 16 MiB in random-sized writes", test_echo_16mib},
    {"1,000 concurrent connections", test_thousand_connections},
    {"half-close", test_half_close},
    {"UDP round trip", test_udp},
    {"Unix sockets and IPv6", test_unix_and_ipv6},
    {"a read wakes an embedding host", test_embedded_read},
    {"200 reads at once, few ring buffers", test_reads_with_few_buffers},
    {"bytes and the end of stream in one edge: EOF, not a hang",
     test_bytes_then_eof_one_edge},
    {NULL, NULL}};

const test_suite_t suite_net_data = {"net_data", cases};
