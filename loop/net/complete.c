/* SPDX-License-Identifier: MIT */
/* loop/net/complete.c: stream reads and writes through the loop's
 * completions, where it has them: a read that has to wait arms a recv into
 * the loop's buffer pool, a write queues a send that the loop's next wait
 * hands over, with the op's guard up around that call as around a send(). */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>
#include <sys/uio.h>

/* The read queue has to wait and nothing is armed: arm a recv. Where the
 * backend has no room even after a submit, the socket reads by readiness
 * from now on (its registration gains the read side). */
__attribute__((noinline)) void weft__cq_arm(weft_socket_t *s) {
  weft_loop_t *loop = s->loop;
  if (weft__loop_recv(loop, &s->rc, s->fd)) {
    s->cq_armed = true;
    s->busy++; /* the kernel has it until the completion */
    return;
  }
  if (weft__io_modify(&s->io, WEFT_READABLE | WEFT_WRITABLE | WEFT__EDGE) ==
      0) {
    s->cq = false;
    s->io.priv_events = WEFT_READABLE | WEFT_WRITABLE | WEFT__HUP;
  } else if (s->rerr == 0) {
    s->rerr = WEFT_ENOMEM; /* no way left to wait for bytes */
  }
}

/* The socket of its recv's and of its send's completion object. */
static inline weft_socket_t *rc_sock(weft__completion_t *c) {
  return (weft_socket_t *)((char *)c - offsetof(weft_socket_t, rc));
}
static inline weft_socket_t *wc_sock(weft__completion_t *c) {
  return (weft_socket_t *)((char *)c - offsetof(weft_socket_t, wc));
}

/* A send's result res, as do_write takes send()'s: its bytes go to the
 * writes it carried (op->wcq, in queue order from wcq_op, each for
 * what wc_send_enter offered of it), which settle in weft__wcq_take. */
static void wcq_result(weft_socket_t *s, int res) {
  net_op_t *op = s->wcq_op;
  if (__builtin_expect(res > 0, 1)) {
    if (op == NULL)
      /* its write was cancelled (and left wqueued): what went, went */
      return;
    s->wqueued -= (size_t)res;
    size_t left = (size_t)res, room = WEFT__SEND_MAX;
    for (; op != NULL && op->wcq; op = op->next) {
      size_t want = op->len - op->done;
      if (want > room)
        want = room; /* (as wc_send_enter bounded it) */
      room -= want;
      size_t k = left < want ? left : want;
      op->done += k;
      left -= k;
      if (k < want)
        s->writable = false; /* the socket took less than offered */
    }
  } else if (res == -EAGAIN || res == -EWOULDBLOCK) {
    s->writable = false;
  } else if (res != 0 && res != -EINTR) { /* the stream is broken */
    write_broke(s, -res);
  }
}

/* The send's completion (complete_ops.done, loop thread): the result
 * goes to the writes it carried; their event settles them. */
static weft_io_t *wc_done(weft__completion_t *c, int res, int buf) {
  (void)buf;
  weft_socket_t *s = wc_sock(c);
  s->wcq_armed = false;
  if (__builtin_expect(s->closed, 0)) {
    sock_drop(s);
    return NULL;
  }
  s->busy--;
  s->wcq_done = true;
  int fe = WEFT__FAULT("cqe_send"); /* the kernel reports the send failed */
  wcq_result(s, fe != 0 ? -fe : res);
  return &s->io;
}

/* The recv's completion: its result and pool buffer wait on the socket
 * for its event (weft__cq_take). */
static weft_io_t *rc_done(weft__completion_t *c, int res, int bid) {
  weft_socket_t *s = rc_sock(c);
  s->cq_armed = false;
  if (__builtin_expect(s->closed, 0)) { /* cancelled by its close */
    if (bid >= 0)
      weft__loop_buf_put(s->loop, (unsigned)bid);
    sock_drop(s); /* the kernel's hold: the socket's memory goes now */
    return NULL;
  }
  s->busy--; /* not closed: it cannot reach 0 here */
  s->cq_done = true;
  int fe = WEFT__FAULT("cqe_recv"); /* the kernel reports the recv failed */
  if (fe != 0) {
    if (bid >= 0)
      weft__loop_buf_put(s->loop, (unsigned)bid);
    res = -fe;
    bid = -1;
  }
  s->cq_res = (int16_t)res; /* (a recv of at most WEFT__CQ_BUF) */
  s->cq_buf = (int16_t)bid;
  return &s->io;
}

/* A completion's bytes went nowhere (its socket is closing). */
void weft__cq_forget(weft_socket_t *s) {
  if (s->cq_done && s->cq_buf >= 0)
    weft__loop_buf_put(s->loop, (unsigned)s->cq_buf);
  s->cq_done = false;
}

/* The completion's event: its bytes go to the queued reads in order (as
 * do_read's would: each under its op's guard), the rest stay on the
 * socket; its error or end of stream becomes the read side's. */
WEFT__HOT void weft__cq_take(weft_socket_t *s) {
  int res = s->cq_res;
  s->cq_done = false;
  if (__builtin_expect(res <= 0, 0)) {
    if (res == -ENOBUFS)
      weft__loop_buf_grow(s->loop);
    if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR || res == -ECANCELED)
      s->readable = true; /* no pool buffer: read the plain way */
    else if (s->rerr == 0 && res == 0)
      s->rerr = WEFT_EOF;
    else if (s->rerr == 0)
      read_broke(s, -res);
    return;
  }
  const char *data = weft__loop_buf(s->loop, (unsigned)s->cq_buf);
  size_t n = (size_t)res, off = 0;
  net_op_t *op;
  while (s->spill == NULL && off < n && (op = s->rhead) != NULL && !s->closed) {
    op_check_shared(op);
    if (!op_enter(op)) {
      op_drop(s, op);
      continue;
    }
    size_t k = op->len - op->done;
    if (k > n - off)
      k = n - off;
    memcpy(op->buf + op->done, data + off, k);
    op->done += k;
    off += k;
    read_got(s, op);
  }
  if (off < n && !s->closed)
    weft__spill_keep(s, data + off, n - off, false); /* nobody wants them yet */
  weft__loop_buf_put(s->loop, (unsigned)s->cq_buf);
  s->readable = n == WEFT__CQ_BUF; /* a full buffer: more may wait */
}

/* Queue op (the head of the write queue, the socket writable) as a
 * completion send. False: no room (the caller sends the plain way). The
 * send carries every write queued behind op by the time it is handed over
 * (wc_send_enter), so one wait sends what epoll's writes would. */
bool weft__wcq_arm(weft_socket_t *s, net_op_t *op) {
  if (!weft__loop_send(s->loop, &s->wc, s->fd, op->buf + op->done,
                       op->len - op->done))
    return false;
  s->wcq_op = op;
  s->wcq_armed = true;
  s->busy++; /* until its completion */
  return true;
}

/* The send is about to be handed to the kernel (loop thread):
 * its buffers go to iov[0..n), n <= max: the rest of wcq_op's, then
 * those of the writes queued behind it, up to WEFT__SEND_MAX bytes in
 * all. Each such write is marked op->wcq and its guard goes up, as
 * around a send(). 0 when wcq_op is gone or was cancelled (the send
 * becomes a NOP, whose completion runs the queue on). */
static unsigned wc_send_enter(weft__completion_t *c, struct iovec *iov,
                              unsigned max) {
  weft_socket_t *s = wc_sock(c);
  net_op_t *op = s->wcq_op;
  if (op == NULL || s->closed)
    return 0;
  op_check_shared(op);
  if (!op_enter(op)) {
    op_drop(s, op); /* cancelled from another thread (clears wcq_op) */
    return 0;
  }
  size_t room = WEFT__SEND_MAX;
  unsigned n = 0;
  for (;;) {
    size_t k = op->len - op->done;
    if (k > room)
      k = room;
    room -= k;
    iov[n].iov_base = op->buf + op->done;
    iov[n++].iov_len = k;
    op->wcq = true;
    net_op_t *next;
    for (;;) { /* the next write behind it that is still wanted */
      next = op->next;
      if (__builtin_expect(next == NULL, 1) || next->kind != OP_WRITE ||
          n == max || room == 0)
        return n;
      op_check_shared(next);
      if (op_enter(next))
        break;
      op_drop(s, next); /* cancelled from another thread */
    }
    op = next;
  }
}

/* The kernel took the send (its call ended): the guards come down. */
static void wc_send_leave(weft__completion_t *c) {
  weft_socket_t *s = wc_sock(c);
  for (net_op_t *op = s->wcq_op; op != NULL && op->wcq; op = op->next)
    op_leave(op);
}

/* The send's completion event (wc_done applied the result):
 * the writes it carried settle, from the head, while all sent (or the
 * stream failed); one cancelled meanwhile leaves the queue, what went of
 * it went. */
WEFT__HOT void weft__wcq_take(weft_socket_t *s) {
  s->wcq_done = false;
  s->wcq_op = NULL;
  bool stay = false; /* a write before it was not all sent */
  for (net_op_t *op = s->whead, *next; op != NULL && op->wcq; op = next) {
    next = op->next;
    op->wcq = false;
    WEFT__PERTURB();
    if (atomic_load_explicit(&op->guard, memory_order_acquire) & GUARD_CANCEL) {
      weft__dl_wcq_expired(s, op); /* (a deadline's, not a cancel's) */
      op_drop(s, op);
    } else if (stay)
      continue;
    else if (op->done == op->len)
      op_finish_int(s, op, (intptr_t)op->len, 0);
    else if (s->werr != 0)
      op_finish_int(s, op, 0, s->werr);
    else
      stay = true; /* the next send takes it on */
  }
}

const weft__completion_ops_t weft__sock_rc_ops = {rc_done, NULL, NULL};
const weft__completion_ops_t weft__sock_wc_ops = {wc_done, wc_send_enter,
                                                  wc_send_leave};
