/* SPDX-License-Identifier: MIT */
/* bench/net_ev.c: libev echo server for `bench/run.sh net`, the usual way:
 * one ev_io read watcher per connection whose callback reads into the
 * connection's 64 KiB buffer and writes it back at once; only a short write
 * starts the write watcher (and stops reading until the rest is out).
 * Usage and output: net_server.h. */
#include "net_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
  ev_io r, w;
  size_t off, len; /* unsent rest of buf: [off, len) */
  char buf[65536];
} conn_t;

static struct ev_loop *L;

static void conn_close(conn_t *c) {
  ev_io_stop(L, &c->r);
  ev_io_stop(L, &c->w);
  close(c->r.fd);
  free(c);
  if (w_closed())
    ev_break(L, EVBREAK_ALL);
}

/* Sends [off, len); returns 0 when the connection failed. */
static int flush(conn_t *c) {
  ssize_t n = send(c->r.fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  if (n < 0)
    return errno == EAGAIN || errno == EINTR;
  w_echoed((size_t)n);
  c->off += (size_t)n;
  return 1;
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents) {
  conn_t *c = (conn_t *)((char *)w - offsetof(conn_t, w));
  (void)revents;
  if (!flush(c)) {
    conn_close(c);
  } else if (c->off == c->len) {
    ev_io_stop(loop, &c->w);
    ev_io_start(loop, &c->r);
  }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents) {
  conn_t *c = (conn_t *)w; /* r is the first member */
  (void)revents;
  ssize_t r = recv(w->fd, c->buf, sizeof c->buf, 0);
  if (r < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (r <= 0) {
    conn_close(c);
    return;
  }
  c->off = 0;
  c->len = (size_t)r;
  if (!flush(c)) {
    conn_close(c);
  } else if (c->off < c->len) {
    ev_io_stop(loop, &c->r);
    ev_io_start(loop, &c->w);
  }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  int fd;
  while ((fd = accept_next(w->fd)) >= 0) {
    conn_t *c = malloc(sizeof *c);
    if (c == NULL)
      die("malloc");
    ev_io_init(&c->r, on_read, fd, EV_READ);
    ev_io_init(&c->w, on_write, fd, EV_WRITE);
    ev_io_start(loop, &c->r);
    w_accepted();
  }
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if ((L = ev_default_loop(EVFLAG_AUTO)) == NULL)
    die("ev_default_loop");
  ev_io lw;
  ev_io_init(&lw, on_accept, listen_local(), EV_READ);
  ev_io_start(L, &lw);
  ev_run(L, 0);
  return 0;
}
