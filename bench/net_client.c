/* SPDX-License-Identifier: MIT */
/* bench/net_client.c: the one load generator of `bench/run.sh net`, shared
 * by every echo server. Single thread, epoll, nonblocking sockets.
 * Phase 1 opens all <conns> connections to 127.0.0.1:<port> (nonblocking
 * connect, writable + SO_ERROR; a failed connect is retried a few times).
 * Phase 2, once all are connected: each connection sends <msgsize> bytes
 * (a pattern of its own, new every round), reads exactly <msgsize> bytes
 * back, checks them, counts a round trip and sends the next message, for
 * <seconds>. Prints "rps <round trips per second>". Any error, or 5 s
 * without progress, exits 1 with a message on stderr.
 * Usage: net_client <port> <conns> <seconds> <msgsize> */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { TRIES = 5, STALL_S = 5 };
enum { WAITING, CONNECTING, CONNECTED };

typedef struct conn {
  int fd, state, tries;
  unsigned idx, round;
  double retry_at;
  size_t sent, got; /* of the current message */
  uint32_t want;    /* epoll interest */
  unsigned char *out, *in;
} conn_t;

static size_t msg;
static int ep;
static struct sockaddr_in sin_srv;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "net_client: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "net_client: %s\n", what);
  exit(1);
}

static void interest(conn_t *c, uint32_t want, int op) {
  if (op == EPOLL_CTL_MOD && c->want == want)
    return;
  struct epoll_event ev = {.events = want, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &ev) != 0)
    die("epoll_ctl");
  c->want = want;
}

/* Phase 1: start (or restart) a nonblocking connect. */
static void start_connect(conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0)
    die("socket");
  c->tries++;
  c->state = CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&sin_srv, sizeof sin_srv) != 0 &&
      errno != EINPROGRESS) {
    if (c->tries >= TRIES)
      die("connect");
    close(c->fd); /* refused or out of resources: back off, retry */
    c->state = WAITING;
    c->retry_at = now() + 0.05 * c->tries;
    return;
  }
  interest(c, EPOLLOUT, EPOLL_CTL_ADD); /* connected or in progress */
}

/* Phase 1: the socket became writable; did the connect work? */
static int finish_connect(conn_t *c) {
  int err = 0, one = 1;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    die("getsockopt(SO_ERROR)");
  if (err != 0) {
    errno = err;
    if (c->tries >= TRIES)
      die("connect (after retries)");
    close(c->fd); /* also removes it from the epoll set */
    c->state = WAITING;
    c->retry_at = now() + 0.05 * c->tries;
    return 0;
  }
  if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    die("setsockopt(TCP_NODELAY)");
  c->state = CONNECTED;
  interest(c, EPOLLIN, EPOLL_CTL_MOD);
  return 1;
}

/* The message of this connection's current round. */
static void fill(conn_t *c) {
  uint32_t x = c->idx * 2654435761u ^ (c->round + 1) * 40503u;
  for (size_t i = 0; i < msg; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    c->out[i] = (unsigned char)x;
  }
}

/* Send what is left of the message; wait for EPOLLOUT if the kernel took
 * only part of it. */
static void pump_out(conn_t *c) {
  while (c->sent < msg) {
    ssize_t n = send(c->fd, c->out + c->sent, msg - c->sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n < 0)
      die("send");
    c->sent += (size_t)n;
  }
  interest(c, c->sent < msg ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
}

/* Read what the server sent back; returns 1 per completed round trip. */
static int pump_in(conn_t *c) {
  ssize_t n = recv(c->fd, c->in + c->got, msg - c->got, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return 0;
  if (n < 0)
    die("recv");
  if (n == 0)
    fail("server closed a connection");
  if ((c->got += (size_t)n) < msg)
    return 0;
  if (c->sent < msg || memcmp(c->in, c->out, msg) != 0)
    fail("mismatch");
  c->round++;
  c->sent = c->got = 0;
  fill(c);
  pump_out(c);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: net_client <port> <conns> <seconds> <msgsize>\n");
    return 2;
  }
  long port = atol(argv[1]), nc = atol(argv[2]);
  double secs = atof(argv[3]);
  msg = (size_t)atol(argv[4]);
  if (port <= 0 || port > 65535 || nc <= 0 || !(secs > 0) || atol(argv[4]) <= 0)
    fail(
        "bad arguments (usage: net_client <port> <conns> <seconds> <msgsize>)");
  sin_srv.sin_family = AF_INET;
  sin_srv.sin_port = htons((uint16_t)port);
  sin_srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  conn_t *cs = calloc((size_t)nc, sizeof *cs);
  if (cs == NULL || (ep = epoll_create1(0)) < 0)
    die("setup");
  enum { MAXEV = 256 };
  struct epoll_event evs[MAXEV];

  /* Phase 1: every connection, before any traffic. */
  long done = 0;
  double last = now();
  for (long i = 0; i < nc; i++) {
    cs[i].idx = (unsigned)i;
    cs[i].out = malloc(msg);
    cs[i].in = malloc(msg);
    if (cs[i].out == NULL || cs[i].in == NULL)
      die("malloc");
    start_connect(&cs[i]);
  }
  while (done < nc) {
    int n = epoll_wait(ep, evs, MAXEV, 10);
    if (n < 0 && errno != EINTR)
      die("epoll_wait");
    for (int k = 0; k < n; k++) {
      conn_t *c = evs[k].data.ptr;
      if (c->state == CONNECTING && finish_connect(c))
        done++, last = now();
    }
    double t = now();
    for (long i = 0; i < nc; i++)
      if (cs[i].state == WAITING && t >= cs[i].retry_at)
        start_connect(&cs[i]);
    if (t - last > STALL_S) {
      fprintf(stderr, "net_client: only %ld of %ld connections after 5 s\n",
              done, nc);
      return 1;
    }
  }

  /* Phase 2: round trips for <seconds>. */
  unsigned long long rts = 0;
  double t0 = now(), end = t0 + secs, t = t0;
  last = t0;
  for (long i = 0; i < nc; i++) {
    fill(&cs[i]);
    pump_out(&cs[i]);
  }
  while (t < end) {
    int n = epoll_wait(ep, evs, MAXEV, 100);
    if (n < 0 && errno != EINTR)
      die("epoll_wait");
    unsigned long long before = rts;
    for (int k = 0; k < n; k++) {
      conn_t *c = evs[k].data.ptr;
      if (evs[k].events & EPOLLOUT)
        pump_out(c);
      if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        rts += (unsigned long long)pump_in(c);
    }
    t = now();
    if (rts != before)
      last = t;
    else if (t - last > STALL_S)
      fail("no progress for 5 s");
  }
  if (rts == 0)
    fail("no round trip completed");
  for (long i = 0; i < nc; i++)
    close(cs[i].fd);
  printf("rps %.0f\n", (double)rts / (t - t0));
  return 0;
}
