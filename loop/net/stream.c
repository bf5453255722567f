/* SPDX-License-Identifier: MIT */
/* loop/net/stream.c: stream sockets: reads and writes, the socket's event,
 * and the calls that start them. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>
#include <sys/socket.h>

/* do_read when a cancel from another thread won the settle: the bytes
 * stay on the socket for the next read. */
__attribute__((noinline, cold)) void weft__read_lost(weft_socket_t *s,
                                                     net_op_t *op) {
  weft__spill_keep(s, op->buf, op->done, true);
  op_leave(op);
  op_drop(s, op);
}

/* do_read's rare first part: bytes a cancelled read kept. False when op
 * is settled or dropped. (Out of line: the usual read's code stays in
 * fewer cache lines.) */
static __attribute__((noinline, cold)) bool read_spill(weft_socket_t *s,
                                                       net_op_t *op) {
  size_t n = s->spill_len - s->spill_off;
  if (n > op->len - op->done)
    n = op->len - op->done;
  if (!op_enter(op)) {
    op_drop(s, op);
    return false;
  }
  memcpy(op->buf + op->done, s->spill + s->spill_off, n);
  op->done += n;
  s->spill_off += n;
  if (s->spill_off == s->spill_len) {
    weft__free(s->spill, s->spill_len);
    s->spill = NULL;
    s->spill_len = s->spill_off = 0;
  }
  bool more = op->kind != OP_READ && op->done != op->len;
  read_got(s, op);
  return more;
}

/* do_read after a recv that took nothing (n, errno e): end of stream,
 * readiness gone, or the stream's error. (Out of line, as read_spill.) */
static __attribute__((noinline, cold)) void
read_none(weft_socket_t *s, net_op_t *op, ssize_t n, int e) {
  if (n == 0) {
    s->rerr = WEFT_EOF;
  } else if (transient(e)) {
    s->readable = false;
    return;
  } else {
    read_broke(s, e);
  }
  if (op->kind == OP_READ_EXACT && op->done > 0 && s->rerr == WEFT_EOF)
    op_finish_int(s, op, 0, WEFT_EOF);
}

/* (The usual read runs straight through: the rare cases are the
 * unlikely branches and the out-of-line functions above.) */
static inline void do_read(weft_socket_t *s, net_op_t *op) {
  if (__builtin_expect(s->spill != NULL, 0) && !read_spill(s, op))
    return;
  if (__builtin_expect(s->rerr != 0, 0)) {
    op_finish_int(s, op, 0, s->rerr);
    return;
  }
  if (!s->readable)
    return;
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  size_t want = op->len - op->done;
  ssize_t n;
  do
    n = WEFT__SYS("recv", recv(s->fd, op->buf + op->done, want, 0));
  while (n < 0 && errno == EINTR);
  if (__builtin_expect(n <= 0, 0)) {
    int e = errno;
    op_leave(op);
    read_none(s, op, n, e);
    return;
  }
  if ((size_t)n < want && !s->hup)
    /* a short read on a stream drained it (but not the end of stream its last
     * edge carried) */
    s->readable = false;
  op->done += (size_t)n;
  read_got(s, op);
}

/* run_reads for a stream, the usual socket, in a function of its own:
 * its code stays short. */
WEFT__HOT __attribute__((noinline)) void
weft__run_stream_reads(weft_socket_t *s) {
  net_op_t *op;
  while ((op = s->rhead) != NULL && !s->closed) {
    op_check_shared(op);
    size_t done = op->done;
    bool was_ready = s->readable;
    int err = s->rerr;
    do_read(s, op);
    if (__builtin_expect(s->rhead == op, 0) && op->done == done &&
        s->readable == was_ready && s->rerr == err)
      break; /* no progress: wait for readiness */
  }
  cq_want(s);
}

static void do_write(weft_socket_t *s, net_op_t *op) {
  if (s->werr != 0) {
    op_finish_int(s, op, 0, s->werr);
    return;
  }
  if (!s->writable)
    return;
  if (op->kind == OP_SHUTDOWN) {
    int rc = WEFT__SYS("shutdown", shutdown(s->fd, SHUT_WR)) == 0
                 ? 0
                 : io_err(errno);
    op_finish_int(s, op, 0, rc);
    return;
  }
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  size_t want = op->len - op->done;
  ssize_t n;
  do
    n = WEFT__SYS("send", send(s->fd, op->buf + op->done, want, MSG_NOSIGNAL));
  while (n < 0 && errno == EINTR);
  op_leave(op);
  if (n >= 0) {
    op->done += (size_t)n;
    s->wqueued -= (size_t)n;
    if ((size_t)n < want)
      s->writable = false;
    if (op->done == op->len)
      op_finish_int(s, op, (intptr_t)op->len, 0);
    return;
  }
  if (transient(errno)) {
    s->writable = false;
    return;
  }
  write_broke(s, errno);
  op_finish_int(s, op, 0, s->werr);
}

void weft__run_writes(weft_socket_t *s) {
  while (s->whead != NULL && !s->closed && !s->wcq_armed) {
    net_op_t *op = s->whead;
    op_check_shared(op);
    size_t done = op->done;
    bool was_ready = s->writable;
    if (op->kind == OP_CONNECT)
      weft__do_connect(s, op);
    else if (s->kind == SK_DGRAM)
      weft__do_send(s, op);
    else if (s->cq && op->kind == OP_WRITE && s->werr == 0 && s->writable &&
             op->done < op->len && weft__wcq_arm(s, op))
      break; /* sent at the loop's next wait */
    else
      do_write(s, op);
    if (s->whead == op && op->done == done && s->writable == was_ready)
      break;
  }
}

WEFT__HOT void weft__sock_run(weft_socket_t *s) {
  sock_hold(s);
  if (s->whead != NULL)  /* (checked here: an empty queue is the usual */
    weft__run_writes(s); /* case, and the calls are not cheap) */
  if (s->rhead != NULL)
    run_reads(s);
  sock_drop(s);
}

WEFT__HOT void weft__sock_event(weft_io_t *io, unsigned events, int status,
                                void *arg) {
  (void)io;
  weft_socket_t *s = arg;
  if (status != 0) { /* the loop is closing: it is unlinked already */
    weft__sock_close(s);
    return;
  }
  if (events & WEFT__DONE) {
    sock_hold(s);
    if (s->wcq_done)
      weft__wcq_take(s);
    if (s->cq_done && !s->closed)
      weft__cq_take(s);
    bool closed = s->closed; /* a continuation closed it: the drop frees */
    sock_drop(s);
    if (closed)
      return;
  }
  if ((events & WEFT_READABLE) && !s->cq)
    s->readable = true;
  if (events & WEFT__HUP)
    s->hup = true;
  if (events & WEFT_WRITABLE)
    s->writable = true;
  weft__sock_run(s);
}

/* A write that settles on return (write_queue: zero bytes, or a stream
 * that failed), tried before it is queued. Still unshared: nothing is
 * attached, nobody can cancel it. True when it
 * settled (all sent, or the socket failed); false when it must queue for
 * the rest (op->done says what went) or for readiness. */
WEFT__HOT static bool write_now(weft_socket_t *s, net_op_t *op) {
  int err = s->werr;
  if (err == 0) {
    if (!s->writable)
      return false;
    ssize_t n;
    do
      n = WEFT__SYS("send", send(s->fd, op->buf, op->len, MSG_NOSIGNAL));
    while (n < 0 && errno == EINTR);
    if (n >= 0 && (size_t)n < op->len) {
      op->done = (size_t)n;
      s->writable = false;
      return false;
    }
    if (n < 0 && transient(errno)) {
      s->writable = false;
      return false;
    }
    if (n < 0) {
      write_broke(s, errno);
      err = s->werr;
    }
  }
  if (err == 0)
    op_future(op)->val.i = (intptr_t)op->len;
  else
    op_future(op)->err = err;
  op->sock = NULL; /* never queued: its queue reference goes too */
  (void)weft__settle_unshared_take(op_future(op),
                                   err == 0 ? WEFT_FULFILLED : WEFT_REJECTED);
  return true;
}

/* Put s on the loop's flush list (held), for the loop to run its writes
 * before it next waits (net_flush in socket.c). */
static void flush_soon(weft_socket_t *s) {
  if (s->flush_next != NULL)
    return;
  net_loop_t *nl = net_of(s->loop);
  s->flush_next = nl->flush != NULL ? nl->flush : FLUSH_END;
  nl->flush = s;
  sock_hold(s);
  s->loop->flush_wanted = true;
}

/* Queue a write (op_queue for OP_WRITE). On a healthy stream, a write of
 * some bytes waits for the loop's next wait, on both kinds of loop (the
 * contract in net.h): with completions its send is handed over in that
 * wait's own call; without, the loop's flush runs the writes just before
 * it. Either way every write a pass queued on a socket goes together. A
 * zero-length write, and any write on a stream that failed, settles at
 * once (write_now). */
static int write_queue(weft_socket_t *s, net_op_t *op, weft_future_t **out) {
  if (__builtin_expect(op->len != 0 && s->werr == 0, 1)) {
    s->wqueued += op->len;
    if (s->cq) {
      *out = op_queue(s, op);
      return 0;
    }
    if (s->whead == NULL && s->writable)
      flush_soon(s);
    op_link(&s->whead, &s->wtail, op);
  } else if (!(s->whead == NULL && write_now(s, op))) {
    op_link(&s->whead, &s->wtail, op); /* behind others, or must wait */
    s->wqueued += op->len - op->done;
  }
  op->unshared = false; /* (see op_queue) */
  *out = op_future(op);
  return 0;
}

static inline __attribute__((always_inline)) int
start_op(weft_socket_t *s, uint8_t kind, uint8_t want_kind, void *buf,
         size_t len, weft_future_t **out) {
  int rc = check_sock(s);
  if (rc != 0)
    return rc;
  if (out == NULL || s->kind != want_kind || s->connecting)
    return WEFT_EINVAL;
  bool data = kind == OP_READ || kind == OP_READ_EXACT || kind == OP_WRITE;
  if (data && (buf == NULL || (kind != OP_WRITE && len == 0)))
    return WEFT_EINVAL;
  net_op_t *op = op_new(s, kind, buf, len);
  if (op == NULL)
    return WEFT_ENOMEM;
  if (kind == OP_WRITE)
    return write_queue(s, op, out);
  *out = op_queue(s, op);
  return 0;
}

/* start_op, out of line, for the calls of other files. */
int weft__op_start(weft_socket_t *s, uint8_t kind, uint8_t want_kind, void *buf,
                   size_t len, weft_future_t **out) {
  return start_op(s, kind, want_kind, buf, len, out);
}

/* The usual weft_socket_read and weft_socket_write find a free op at hand, and make no
 * call before their last (so no frame to set up); anything else (an
 * error to report, an allocation, a read to try now) takes start_op. */
static inline bool op_at_hand(const weft_socket_t *s, const void *buf,
                              weft_future_t **out) {
  return check_sock(s) == 0 && out != NULL && buf != NULL &&
         s->kind == SK_STREAM && !s->connecting &&
         net_of(s->loop)->op_free != NULL;
}

static __attribute__((noinline)) int
read_start(weft_socket_t *s, void *buf, size_t len, weft_future_t **out) {
  return start_op(s, OP_READ, SK_STREAM, buf, len, out);
}

WEFT__HOT int weft_socket_read(weft_socket_t *sock, void *buf, size_t len,
                               weft_future_t **out) {
  if (!op_at_hand(sock, buf, out) || len == 0 || sock->rhead != NULL ||
      !stream_read_waits(sock))
    return read_start(sock, buf, len, out);
  net_op_t *op = op_new(sock, OP_READ, buf, len);
  sock->rhead = sock->rtail = op; /* to wait for readiness */
  sock->loop->readers++;
  cq_want(sock);
  op->unshared = false;
  *out = op_future(op);
  return 0;
}

int weft_socket_read_exactly(weft_socket_t *sock, void *buf, size_t len,
                             weft_future_t **out) {
  return start_op(sock, OP_READ_EXACT, SK_STREAM, buf, len, out);
}

static __attribute__((noinline)) int write_start(weft_socket_t *s,
                                                 const void *buf, size_t len,
                                                 weft_future_t **out) {
  return start_op(s, OP_WRITE, SK_STREAM, (void *)buf, len, out);
}

WEFT__HOT int weft_socket_write(weft_socket_t *sock, const void *buf,
                                size_t len, weft_future_t **out) {
  if (!op_at_hand(sock, buf, out))
    return write_start(sock, buf, len, out);
  return write_queue(sock, op_new(sock, OP_WRITE, (void *)buf, len), out);
}

int weft_socket_shutdown(weft_socket_t *sock, weft_future_t **out) {
  return start_op(sock, OP_SHUTDOWN, SK_STREAM, NULL, 0, out);
}
