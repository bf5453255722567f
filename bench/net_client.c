/* SPDX-License-Identifier: MIT */
/* bench/net_client.c: the one load generator for `bench/run.sh net`, shared
 * by every server. Opens <conns> connections to 127.0.0.1:<port> (all of
 * them before any traffic), then each connection does echo round trips of
 * <msgsize> bytes (send, wait for exactly those bytes back, verify, repeat)
 * for <seconds>. Prints "rps <round trips per second>".
 * Usage: net_client <port> <conns> <seconds> <msgsize> */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  size_t sent, got; /* of the current message */
  unsigned round;
  char *in; /* this connection's partial reply */
} conn_t;

static size_t msg;
static char *out;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "net_client: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void pattern(conn_t *c, char *p) {
  for (size_t i = 0; i < msg; i++)
    p[i] = (char)(c->round * 31 + (unsigned)c->fd * 7 + i);
}

/* Send what is left of the message; 0 when all sent or EAGAIN. */
static void pump_out(conn_t *c) {
  pattern(c, out);
  while (c->sent < msg) {
    ssize_t n = send(c->fd, out + c->sent, msg - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      die("send");
    }
    c->sent += (size_t)n;
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: net_client <port> <conns> <seconds> <msgsize>\n");
    return 2;
  }
  int port = atoi(argv[1]), nc = atoi(argv[2]);
  double secs = atof(argv[3]);
  msg = (size_t)atol(argv[4]);
  out = malloc(msg);
  conn_t *cs = calloc((size_t)nc, sizeof *cs);
  int ep = epoll_create1(0);
  if (!out || !cs || ep < 0)
    die("setup");
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* Phase 1: connect all (blocking connects, so each is done before the
   * next; the server may not have accepted them yet). */
  for (int i = 0; i < nc; i++) {
    int fd = -1;
    for (int attempt = 0; attempt < 50; attempt++) {
      fd = socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0)
        die("socket");
      if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
        break;
      close(fd);
      fd = -1;
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, NULL); /* backlog full: back off and retry */
    }
    if (fd < 0)
      die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
      die("fcntl");
    cs[i].fd = fd;
    if ((cs[i].in = malloc(msg)) == NULL)
      die("malloc");
    struct epoll_event ev = {EPOLLIN, {.ptr = &cs[i]}};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
      die("epoll_ctl");
  }
  /* Phase 2: round trips. */
  for (int i = 0; i < nc; i++)
    pump_out(&cs[i]);
  unsigned long long rts = 0;
  double t0 = now(), last = t0, end = t0 + secs;
  struct epoll_event evs[256];
  for (;;) {
    double t = now();
    if (t >= end)
      break;
    if (t - last > 5.0) {
      fprintf(stderr, "net_client: no progress for 5 s\n");
      return 1;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    if (n < 0 && errno != EINTR)
      die("epoll_wait");
    for (int k = 0; k < n; k++) {
      conn_t *c = evs[k].data.ptr;
      for (;;) {
        ssize_t r = recv(c->fd, c->in + c->got, msg - c->got, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
          break;
        if (r <= 0) {
          fprintf(stderr, "net_client: server closed a connection\n");
          return 1;
        }
        c->got += (size_t)r;
        if (c->got < msg)
          continue;
        pattern(c, out);
        if (memcmp(c->in, out, msg) != 0) {
          fprintf(stderr, "net_client: mismatch\n");
          return 1;
        }
        rts++;
        last = now();
        c->round++;
        c->sent = c->got = 0;
        pump_out(c);
        break;
      }
    }
  }
  double el = now() - t0;
  for (int i = 0; i < nc; i++)
    close(cs[i].fd);
  printf("rps %.0f\n", rts / el);
  return 0;
}
