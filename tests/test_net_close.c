/* SPDX-License-Identifier: MIT */
/* tests/test_net_close.c: closing sockets and the loop under them: reads
 * waiting when their socket closes, a closed socket's fd reused at once,
 * the loop closed with sockets open, and every pending operation's
 * continuation run by the loop's close. */
#include "net_util.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_close_with_reads_waiting(void) {
  for (int close_loop_at_once = 0; close_loop_at_once < 2;
       close_loop_at_once++) {
    weft_loop_t *loop = new_loop();
    weft_socket_t *ls;
    weft_addr_t addr;
    listen_local(loop, &ls, &addr);
    enum { N = 16 };
    int peers[N];
    weft_future_t *r[N];
    char bufs[N][16];
    for (int i = 0; i < N; i++) {
      peers[i] = raw_connect(&addr);
      weft_socket_t *s = accept_one(loop, ls);
      REQUIRE_EQ(weft_socket_read(s, bufs[i], sizeof bufs[i], &r[i]), 0);
      weft_loop_run(loop, WEFT_RUN_NOWAIT); /* armed */
      EXPECT_EQ(weft_future_state(r[i]), WEFT_PENDING);
      EXPECT_EQ(weft_socket_close(s), 0);
      EXPECT_EQ(weft_future_state(r[i]), WEFT_CANCELLED);
      weft_future_release(r[i]);
      REQUIRE_EQ(write(peers[i], "late", 4), 4);
    }
    if (!close_loop_at_once) {
      /* the loop goes on: a new connection still reads */
      int peer = raw_connect(&addr);
      weft_socket_t *s = accept_one(loop, ls);
      weft_future_t *f;
      char b[8];
      REQUIRE_EQ(write(peer, "fresh", 5), 5);
      REQUIRE_EQ(weft_socket_read_exactly(s, b, 5, &f), 0);
      REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
      EXPECT_EQ(memcmp(b, "fresh", 5), 0);
      weft_future_release(f);
      weft_socket_close(s);
      close(peer);
    }
    for (int i = 0; i < N; i++)
      close(peers[i]);
    weft_socket_close(ls);
    EXPECT_EQ(weft_loop_close(loop), 0);
  }
}

/* A socket closed while its read is queued for the kernel (not yet
 * handed over): its fd number goes free at once, and the next fd opened
 * gets it. That fd's bytes are its own: nothing the closed socket had
 * queued may read them. */
static void test_close_then_fd_reuse(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  char buf[16];
  weft_future_t *r;
  REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r),
             0); /* queued, no wait yet */
  int fd = weft_socket_fd(s);
  EXPECT_EQ(weft_socket_close(s), 0);
  EXPECT_EQ(weft_future_state(r), WEFT_CANCELLED);
  weft_future_release(r);
  int sv[2];
  REQUIRE_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  REQUIRE_EQ(dup2(sv[0], fd), fd); /* the closed socket's number, reused */
  REQUIRE_EQ(write(sv[1], "mine", 4), 4);
  for (int i = 0; i < 4; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  char got[8] = {0};
  EXPECT_EQ(read(fd, got, sizeof got), 4);
  EXPECT_EQ(memcmp(got, "mine", 4), 0);
  close(fd);
  close(sv[0]);
  close(sv[1]);
  close(peer);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- loop close with sockets open ---- */

static void test_loop_close_with_sockets(void) {
  int fds0 = count_fds();
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  weft_future_t *a, *r, *w;
  char buf[16];
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  REQUIRE_EQ(weft_socket_read(s, buf, sizeof buf, &r), 0);
  char *big = calloc(1, 32u << 20);
  REQUIRE_EQ(weft_socket_write(s, big, 32u << 20, &w), 0);
  weft_loop_run(loop, WEFT_RUN_NOWAIT);
  EXPECT_EQ(weft_loop_close(loop), 0); /* closes both sockets */
  EXPECT_EQ(weft_future_state(a), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(r), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(w), WEFT_CANCELLED);
  /* the loop's fds and both sockets are closed; the raw peer is open */
  EXPECT_EQ(count_fds(), fds0 + 1);
  weft_future_release(a);
  weft_future_release(r);
  weft_future_release(w);
  free(big);
  close(peer);
}

/* ==== loop close with operations pending: each continuation runs once ==== */

static struct {
  int read, read_inline, write, accept, dtor;
  int not_cancelled, not_ecanceled; /* continuations that saw otherwise */
  int close_rc, read_again;
} pc;

typedef struct pc_conn { /* a server's per-connection state */
  weft_socket_t *s;
  char buf[16];
} pc_conn_t;

static void pc_check(weft_future_t *f) {
  pc.not_cancelled += weft_future_state(f) != WEFT_CANCELLED;
  pc.not_ecanceled += weft_future_error(f) != WEFT_ECANCELED;
}
/* The read's continuation cleans up as a server does: closes the socket
 * (the loop closed it already: it stays valid until close returns) and
 * frees the connection. */
static weft_result_t pc_read_done(void *arg, weft_future_t *f) {
  pc_conn_t *c = arg;
  pc.read++;
  pc_check(f);
  weft_future_t *r = NULL;
  pc.read_again = weft_socket_read(c->s, c->buf, sizeof c->buf, &r);
  pc.close_rc = weft_socket_close(c->s);
  free(c);
  return weft_ok_int(0);
}
static weft_result_t pc_read_inline(void *arg, weft_future_t *f) {
  (void)arg;
  pc.read_inline++;
  pc_check(f);
  return weft_ok_int(0);
}
static weft_result_t pc_write_done(void *arg, weft_future_t *f) {
  free(arg);
  pc.write++;
  pc_check(f);
  return weft_ok_int(0);
}
static void pc_accept_done(void *arg, weft_future_t *f) {
  free(arg);
  pc.accept++;
  pc_check(f);
}
static void pc_dtor(void *arg) {
  free(arg);
  pc.dtor++;
}

static void test_close_runs_op_continuations(void) {
  memset(&pc, 0, sizeof pc);
  tu_alloc_install(0);
  weft_loop_t *loop = new_loop();
  weft_executor_t *lx = weft_loop_executor(loop);
  weft_socket_t *ls;
  int peer;
  weft_socket_t *s = raw_pair(loop, &ls, &peer);
  pc_conn_t *c = malloc(sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->s = s;
  weft_future_t *r, *rd, *ri, *w, *wd, *a;
  REQUIRE_EQ(weft_socket_read(s, c->buf, sizeof c->buf, &r), 0);
  REQUIRE_EQ(weft_future_then(r, lx, pc_read_done, c, NULL, &rd), 0);
  REQUIRE_EQ(weft_future_then(r, weft_executor_inline(), pc_read_inline, NULL,
                              NULL, &ri),
             0);
  size_t big = 32u << 20; /* far more than the kernel buffers hold */
  char *data = calloc(1, big);
  REQUIRE_EQ(data != NULL, 1);
  REQUIRE_EQ(weft_socket_write(s, data, big, &w), 0);
  REQUIRE_EQ(weft_future_then(w, lx, pc_write_done, malloc(8), NULL, &wd), 0);
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  REQUIRE_EQ(weft_future_watch(a, lx, pc_accept_done, malloc(8), pc_dtor), 0);
  EXPECT_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0); /* into the kernel */
  EXPECT_EQ(weft_future_state(r), WEFT_PENDING);
  EXPECT_EQ(weft_future_state(w), WEFT_PENDING);
  EXPECT_EQ(pc.accept, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(pc.read, 1);
  EXPECT_EQ(pc.read_inline, 1);
  EXPECT_EQ(pc.write, 1);
  EXPECT_EQ(pc.accept, 1);
  EXPECT_EQ(pc.dtor, 0); /* the watch ran: its arg was its own */
  EXPECT_EQ(pc.not_cancelled, 0);
  EXPECT_EQ(pc.not_ecanceled, 0);
  EXPECT_EQ(pc.close_rc, 0);
  EXPECT_ERR(pc.read_again, WEFT_ESHUTDOWN);
  EXPECT_EQ(weft_future_state(rd), WEFT_FULFILLED); /* ran, not rejected */
  EXPECT_EQ(weft_future_state(wd), WEFT_FULFILLED);
  weft_future_release(r);
  weft_future_release(rd);
  weft_future_release(ri);
  weft_future_release(w);
  weft_future_release(wd);
  free(data);
  close(peer);
  EXPECT_EQ(tu_alloc_live(), 0); /* nothing leaked */
  tu_alloc_restore();
}

static const test_case_t cases[] = {
    {"loop close with sockets open", test_loop_close_with_sockets},
    {"close sockets while reads wait", test_close_with_reads_waiting},
    {"a closed socket's fd reused at once", test_close_then_fd_reuse},
    {"loop close runs pending operations' continuations",
     test_close_runs_op_continuations},
    {NULL, NULL}};

const test_suite_t suite_net_close = {"net_close", cases};
