/* SPDX-License-Identifier: MIT */
/* loop/net/conn.c: sockets that come from a call: listeners (accept, and
 * waiting out a shortage of fds), connect, and bound datagram sockets. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void listener_wait_fd(weft_socket_t *s);

static void do_accept(weft_socket_t *s, net_op_t *op) {
  int fd;
  if (s->nspare > 0) {
    fd = s->spare_fds[--s->nspare];
  } else {
    if (!s->readable || s->waiting_fd)
      return;
    /* A connection that died in the backlog (or was refused by a
     * filter) is skipped: the next one may be waiting, and no new edge
     * would come for it. */
    do
      fd = WEFT__SYS("accept4",
                     accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED ||
                      errno == EPROTO || errno == EPERM));
    if (fd < 0) {
      int e = errno;
      if (transient(e))
        s->readable = false;
      else if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
        listener_wait_fd(s);
      else
        s->rerr = io_err(e); /* the listener's own error: tell its owner */
      return;
    }
  }
  weft_socket_t *c;
  int rc = weft__sock_wrap(s->loop, fd, SK_STREAM, &c);
  if (rc != 0) { /* fd closed by weft__sock_wrap; the peer sees a reset */
    op_finish_int(s, op, 0, rc);
    return;
  }
  if (!op_claim(op)) {
    /* cancelled from another thread meanwhile: keep the connection (not its
     * wrapper) for the next */
    weft_io_stop(&c->io);
    weft__keep_fd(s, c->fd);
    weft__sock_dealloc(s->loop, c); /* (a slab slot) */
    op_drop(s, op);
    return;
  }
  weft__op_publish_owned(s, op, c);
}

/* Listeners and datagram sockets. */
void weft__run_other_reads(weft_socket_t *s) {
  while (s->rhead != NULL && !s->closed) {
    net_op_t *op = s->rhead;
    op_check_shared(op);
    size_t done = op->done;
    bool was_ready = s->readable;
    int err = s->rerr;
    if (s->kind == SK_LISTEN) {
      if (s->rerr != 0) {
        op_finish_int(s, op, 0, s->rerr);
        continue;
      }
      do_accept(s, op);
    } else {
      weft__do_recv(s, op);
    }
    if (s->rhead == op && op->done == done && s->readable == was_ready &&
        s->rerr == err)
      break; /* no progress: wait for readiness */
  }
}

static void retry_due(weft_timer_t *t, int status, void *arg) {
  (void)t;
  weft_socket_t *s = arg;
  if (status != 0 || s->closed)
    return;
  weft_loop_t *loop = s->loop;
  for (weft_socket_t **p = &net_of(loop)->fd_waiters; *p != NULL;
       p = &(*p)->waiter_next) {
    if (*p == s) {
      *p = s->waiter_next;
      break;
    }
  }
  s->waiting_fd = false;
  weft__sock_run(s);
  if (!s->waiting_fd)
    s->backoff_ms = 0;
}

static void listener_wait_fd(weft_socket_t *s) {
  s->backoff_ms = s->backoff_ms == 0     ? 5
                  : s->backoff_ms >= 250 ? 500
                                         : s->backoff_ms * 2;
  if (weft_timer_start(&s->retry, s->backoff_ms, 0) != 0)
    return; /* loop closing */
  s->waiting_fd = true;
  s->waiter_next = net_of(s->loop)->fd_waiters;
  net_of(s->loop)->fd_waiters = s;
}

/* A socket closed: an fd is free, so waiting listeners retry now. */
void weft__kick_fd_waiters(weft_loop_t *loop) {
  for (weft_socket_t *w = net_of(loop)->fd_waiters; w != NULL;
       w = w->waiter_next)
    (void)weft_timer_start(&w->retry, 0, 0);
}

void weft__do_connect(weft_socket_t *s, net_op_t *op) {
  if (!s->writable)
    return;
  int err = 0;
  socklen_t len = sizeof err;
  if (WEFT__SYS("getsockopt",
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len)) != 0)
    err = errno;
  if (err == EINPROGRESS || err == EALREADY || err == EINTR) {
    s->writable = false;
    return;
  }
  if (err == 0) {
    /* Still in progress looks like "writable" only after it finished. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (WEFT__SYS("getpeername",
                  getpeername(s->fd, (struct sockaddr *)&ss, &sl)) != 0) {
      if (errno == ENOTCONN) {
        s->writable = false;
        return;
      }
      err = errno;
    }
  }
  if (err != 0) {
    op_finish_int(s, op, 0, io_err(err));
    s->connecting = false;
    weft__sock_close(s); /* the half-open socket was the op's */
    return;
  }
  s->connecting = false;
  if (!op_claim(op)) { /* cancelled: the socket goes with it */
    op_drop(s, op);
    weft__sock_close(s);
    return;
  }
  weft__op_publish_owned(s, op, s);
}

static int check_loop(weft_loop_t *loop, const weft_addr_t *addr,
                      weft_socket_t **out_sock, weft_future_t **out_fut) {
  if (loop == NULL || !weft__addr_ok(addr) ||
      (out_sock == NULL && out_fut == NULL))
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  return loop->closing ? WEFT_ESHUTDOWN : 0;
}

static int bind_new(weft_loop_t *loop, const weft_addr_t *addr, int type,
                    int backlog, uint8_t kind, weft_socket_t **out) {
  int fd = weft__new_fd(addr->ss.ss_family, type);
  if (fd < 0)
    return fd;
  int one = 1;
  if (addr->ss.ss_family != AF_UNIX && type == SOCK_STREAM)
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (WEFT__SYS("bind",
                bind(fd, (const struct sockaddr *)&addr->ss, addr->len)) != 0 ||
      (type == SOCK_STREAM &&
       WEFT__SYS("listen", listen(fd, backlog <= 0 ? SOMAXCONN : backlog)) !=
           0)) {
    int rc = io_err(errno);
    close(fd);
    return rc;
  }
  weft_socket_t *s;
  int rc = weft__sock_wrap(loop, fd, kind, &s);
  if (rc != 0)
    return rc;
  if (kind == SK_LISTEN)
    weft_timer_init(loop, &s->retry, retry_due, s);
  *out = s;
  return 0;
}

int weft_socket_listen(weft_loop_t *loop, const weft_addr_t *addr, int backlog,
                       weft_socket_t **out) {
  int rc = check_loop(loop, addr, out, NULL);
  return rc != 0 ? rc
                 : bind_new(loop, addr, SOCK_STREAM, backlog, SK_LISTEN, out);
}

int weft_socket_accept(weft_socket_t *listener, weft_future_t **out) {
  return weft__op_start(listener, OP_ACCEPT, SK_LISTEN, NULL, 0, out);
}

int weft_socket_connect(weft_loop_t *loop, const weft_addr_t *addr,
                        weft_future_t **out) {
  int rc = check_loop(loop, addr, NULL, out);
  if (rc != 0)
    return rc;
  int fd = weft__new_fd(addr->ss.ss_family, SOCK_STREAM);
  if (fd < 0)
    return fd;
  int cr;
  do
    cr = WEFT__SYS("connect",
                   connect(fd, (const struct sockaddr *)&addr->ss, addr->len));
  while (cr != 0 && errno == EINTR);
  int cerr = cr == 0 ? 0 : errno;
  weft_socket_t *s;
  rc = weft__sock_wrap(loop, fd, SK_STREAM, &s);
  if (rc != 0)
    return rc;
  net_op_t *op = op_new(s, OP_CONNECT, NULL, 0);
  if (op == NULL) {
    weft__sock_close(s);
    return WEFT_ENOMEM;
  }
  s->connecting = true;
  if (cerr == EINPROGRESS || cerr == EAGAIN) {
    s->writable = false; /* wait for the kernel's event */
  } else if (cerr != 0) {
    /* Refused at once (a Unix path with no listener, say): a rejection,
     * like any other connection outcome. */
    op->sock = NULL;
    op->unshared = false;
    s->connecting = false;
    weft__sock_close(s);
    struct weft_future *f = op_future(op);
    (void)weft__settle_int(f, WEFT_REJECTED, 0, io_err(cerr));
    weft__unref(f);
    *out = f;
    return 0;
  }
  *out = op_queue(s, op);
  return 0;
}

int weft_socket_udp_bind(weft_loop_t *loop, const weft_addr_t *addr,
                         weft_socket_t **out) {
  int rc = check_loop(loop, addr, out, NULL);
  if (rc == 0 && addr->ss.ss_family == AF_UNIX)
    rc = WEFT_EINVAL;
  return rc != 0 ? rc : bind_new(loop, addr, SOCK_DGRAM, 0, SK_DGRAM, out);
}
