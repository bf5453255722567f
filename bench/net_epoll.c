/* SPDX-License-Identifier: MIT */
/* bench/net_epoll.c: plain epoll echo server (level-triggered; read, then
 * write at once; a short write keeps the rest and waits for EPOLLOUT).
 * Usage: net_epoll <conns>; see net_common.h. */
#include "net_common.h"

#include <errno.h>
#include <sys/epoll.h>

typedef struct conn {
  int fd;
  size_t off, len; /* unsent rest of buf */
  char buf[65536];
} conn_t;

int main(int argc, char **argv) {
  w_args(argc, argv);
  int lfd = w_listen(), ep = epoll_create1(0);
  struct epoll_event ev = {EPOLLIN, {.ptr = NULL}}, evs[256];
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c == NULL) { /* the listener */
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          w_nodelay(fd);
          c = malloc(sizeof *c);
          c->fd = fd;
          c->off = c->len = 0;
          struct epoll_event e = {EPOLLIN, {.ptr = c}};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
          w_accepted();
        }
        continue;
      }
      if (c->len > c->off) { /* EPOLLOUT after a short write */
        ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (w > 0 && (c->off += (size_t)w) == c->len) {
          c->off = c->len = 0;
          struct epoll_event e = {EPOLLIN, {.ptr = c}};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        }
        if (w >= 0 || errno == EAGAIN)
          continue;
      } else {
        ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (r < 0 && errno == EAGAIN)
          continue;
        if (r > 0) {
          w_echoed(r);
          ssize_t w = send(c->fd, c->buf, (size_t)r, MSG_NOSIGNAL);
          if (w == r)
            continue;
          if (w >= 0 || errno == EAGAIN) {
            c->off = w > 0 ? (size_t)w : 0;
            c->len = (size_t)r;
            struct epoll_event e = {EPOLLOUT, {.ptr = c}};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            continue;
          }
        }
      }
      close(c->fd); /* end of stream or error: epoll forgets it */
      free(c);
      if (w_closed())
        return 0;
    }
  }
}
