/* SPDX-License-Identifier: MIT */
/* bench/net_ev.c: libev echo server, the usual way: an ev_io read watcher
 * per connection that reads and writes at once; a write watcher only after
 * a short write. Usage: net_ev <conns>; see net_common.h. */
#include "net_common.h"

#include <errno.h>
#include <ev.h>

typedef struct conn {
  ev_io r, w;
  size_t off, len;
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

static void on_write(struct ev_loop *l, ev_io *w, int revents) {
  (void)l, (void)revents;
  conn_t *c = (conn_t *)((char *)w - offsetof(conn_t, w));
  ssize_t n = send(w->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN) {
    conn_close(c);
    return;
  }
  if (n > 0 && (c->off += (size_t)n) == c->len) {
    ev_io_stop(L, &c->w);
    ev_io_start(L, &c->r);
  }
}

static void on_read(struct ev_loop *l, ev_io *w, int revents) {
  (void)l, (void)revents;
  conn_t *c = (conn_t *)w;
  ssize_t r = recv(w->fd, c->buf, sizeof c->buf, 0);
  if (r < 0 && errno == EAGAIN)
    return;
  if (r <= 0) {
    conn_close(c);
    return;
  }
  w_echoed(r);
  ssize_t n = send(w->fd, c->buf, (size_t)r, MSG_NOSIGNAL);
  if (n == r)
    return;
  if (n < 0 && errno != EAGAIN) {
    conn_close(c);
    return;
  }
  c->off = n > 0 ? (size_t)n : 0;
  c->len = (size_t)r;
  ev_io_stop(L, &c->r);
  ev_io_start(L, &c->w);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents) {
  (void)l, (void)revents;
  int fd;
  while ((fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
    w_nodelay(fd);
    conn_t *c = malloc(sizeof *c);
    ev_io_init(&c->r, on_read, fd, EV_READ);
    ev_io_init(&c->w, on_write, fd, EV_WRITE);
    ev_io_start(L, &c->r);
    w_accepted();
  }
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  L = ev_default_loop(EVBACKEND_EPOLL);
  ev_io lw;
  ev_io_init(&lw, on_accept, w_listen(), EV_READ);
  ev_io_start(L, &lw);
  ev_run(L, 0);
  return 0;
}
