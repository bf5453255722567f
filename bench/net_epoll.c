/* SPDX-License-Identifier: MIT */
/* bench/net_epoll.c: plain epoll echo server for `bench/run.sh net`, the
 * floor: level-triggered, one recv into the connection's 64 KiB buffer,
 * then send at once; a short send keeps the rest and waits for EPOLLOUT
 * (no reading meanwhile). Usage and output: net_server.h. */
#include "net_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  size_t off, len; /* unsent rest of buf: [off, len) */
  char buf[65536];
} conn_t;

static int ep;

static void watch(conn_t *c, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &ev) != 0)
    die("epoll_ctl");
}

static void on_accept(int lfd) {
  int fd;
  while ((fd = accept_next(lfd)) >= 0) {
    conn_t *c = malloc(sizeof *c);
    if (c == NULL)
      die("malloc");
    c->fd = fd;
    c->off = c->len = 0;
    watch(c, EPOLLIN, EPOLL_CTL_ADD);
    w_accepted();
  }
}

/* Sends [off, len); returns 0 when the connection failed. */
static int flush(conn_t *c) {
  ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  if (n < 0)
    return errno == EAGAIN || errno == EINTR;
  w_echoed((size_t)n);
  c->off += (size_t)n;
  return 1;
}

/* One readiness event; returns 0 when the connection is over. */
static int on_event(conn_t *c) {
  if (c->off < c->len) { /* EPOLLOUT after a short write */
    if (!flush(c))
      return 0;
    if (c->off == c->len)
      watch(c, EPOLLIN, EPOLL_CTL_MOD);
    return 1;
  }
  ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
  if (r < 0)
    return errno == EAGAIN || errno == EINTR;
  if (r == 0)
    return 0;
  c->off = 0;
  c->len = (size_t)r;
  if (!flush(c))
    return 0;
  if (c->off < c->len)
    watch(c, EPOLLOUT, EPOLL_CTL_MOD);
  return 1;
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  int lfd = listen_local();
  if ((ep = epoll_create1(0)) < 0)
    die("epoll_create1");
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0)
    die("epoll_ctl");
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR)
      die("epoll_wait");
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c == NULL) {
        on_accept(lfd);
        continue;
      }
      if (on_event(c))
        continue;
      close(c->fd); /* end of stream or error; epoll forgets the fd */
      free(c);
      if (w_closed())
        return 0;
    }
  }
}
