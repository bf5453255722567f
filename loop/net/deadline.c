/* SPDX-License-Identifier: MIT */
/* loop/net/deadline.c: deadlines of socket operations (net.h,
 * "Deadlines"): one timer per socket that settles each queued operation
 * past its deadline with WEFT_ETIMEDOUT; and the _deadline forms of the
 * calls.
 *
 * Lazy: the timer fires no later than the earliest deadline asked of it,
 * and an operation that finishes in time leaves it as it is (its finish
 * costs nothing more). When it fires it settles what is due and re-arms
 * for the earliest deadline still queued. So a socket whose operations
 * all take a deadline 5 s out touches the timer heap about once per 5 s,
 * not once per operation; an operation without a deadline never touches
 * any of this (docs/design/streams.md). */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

typedef struct net_deadline {
  weft_timer_t timer;
  weft_socket_t *sock; /* NULL while a connect is being started */
  int64_t due;         /* the deadline the armed timer serves */
} net_deadline_t;

static void dl_due(weft_timer_t *t, int status, void *arg);

/* ---- the timer ---- */

static net_deadline_t *dl_make(weft_loop_t *loop) {
  net_deadline_t *dl = weft__malloc(sizeof *dl);
  if (dl == NULL)
    return NULL;
  memset(dl, 0, sizeof *dl);
  (void)weft_timer_init(loop, &dl->timer, dl_due, dl);
  return dl;
}

/* Start (or move) dl's timer for `deadline`. Restarting an active timer
 * allocates nothing; starting a stopped one may (the heap). */
static int dl_start(net_deadline_t *dl, int64_t deadline) {
  int rc = weft__timer_start_at(&dl->timer, deadline);
  if (rc == 0)
    dl->due = deadline;
  return rc;
}

/* Have s's timer fire no later than `deadline` (> 0). 0, or WEFT_ENOMEM
 * (the timer, or a slot in the loop's heap, cannot be had: the timer is as
 * it was, or stopped with no deadline queued). */
static int dl_arm(weft_socket_t *s, int64_t deadline) {
  net_deadline_t *dl = s->dl;
  if (dl == NULL) {
    if ((dl = dl_make(s->loop)) == NULL)
      return WEFT_ENOMEM;
    dl->sock = s;
    s->dl = dl;
  }
  if (weft_timer_is_active(&dl->timer) && dl->due <= deadline)
    return 0;
  return dl_start(dl, deadline);
}

void weft__dl_stop(weft_socket_t *s) {
  if (s->dl != NULL)
    (void)weft_timer_stop(&s->dl->timer);
}

void weft__dl_free(weft_socket_t *s) {
  if (s->dl == NULL)
    return;
  (void)weft_timer_stop(&s->dl->timer);
  weft__free(s->dl, sizeof *s->dl);
  s->dl = NULL;
}

/* ---- settling what is due ---- */

/* A part of a write went: the bytes on the stream no longer frame what
 * the writer meant, so its write side fails (net.h, "Deadlines"). */
static void write_cut(weft_socket_t *s) {
  if (s->werr == 0)
    s->werr = WEFT_ETIMEDOUT;
}

void weft__dl_wcq_expired(weft_socket_t *s, net_op_t *op) {
  struct weft_future *f = op_future(op);
  if (op->done != 0 && op->done != op->len && weft__state(f) == WEFT_REJECTED &&
      f->err == WEFT_ETIMEDOUT)
    write_cut(s);
}

/* op (queued on s, its deadline passed) settles WEFT_ETIMEDOUT, leaving
 * what net.h promises. */
static void expire(weft_socket_t *s, net_op_t *op) {
  if (op->wcq) {
    /* Its bytes went to the kernel in a completion send whose result has
     * not been taken yet: the future settles now, the op stays queued as
     * a cancelled one until weft__wcq_take applies what the send did
     * (and weft__dl_wcq_expired cuts the write side if that was a part).
     * A cancel from another thread that won keeps its own outcome. */
    if (weft__settle_int(op_future(op), WEFT_REJECTED, 0, WEFT_ETIMEDOUT) == 0)
      atomic_fetch_or_explicit(&op->guard, GUARD_CANCEL, memory_order_acq_rel);
    return;
  }
  bool cut = op->kind == OP_WRITE && op->done != 0;
  uint8_t kind = op->kind;
  /* (a cancel from another thread that settled it first keeps its
   * outcome; its stop task then finds the op off the queue) */
  op_finish_int(s, op, 0, WEFT_ETIMEDOUT);
  if (cut)
    write_cut(s);
  if (kind == OP_CONNECT) { /* the half-open socket was the op's */
    s->connecting = false;
    weft__sock_close(s);
  }
}

/* After a write was cut: the writes and shutdowns queued behind it are
 * rejected now (none is in the kernel: a send in flight carried the cut
 * write first, or nothing), not at the socket's next event. */
static void reject_writes(weft_socket_t *s) {
  net_op_t *op;
  while (s->werr != 0 && (op = s->whead) != NULL && !op->wcq && !s->closed)
    op_finish_int(s, op, 0, s->werr);
}

/* The deadline of a queued op, 0 for none (an OP_RECV's word is `from`). */
static inline int64_t op_deadline(const net_op_t *op) {
  return op->kind == OP_RECV ? 0 : op->deadline;
}

/* The queued op of s with the earliest deadline at or before now (the
 * first in queue order among equals, reads before writes), or NULL; *next
 * gets the earliest deadline after now (0: none). */
static net_op_t *earliest_due(weft_socket_t *s, int64_t now, int64_t *next) {
  net_op_t *best = NULL;
  *next = 0;
  for (int q = 0; q < 2; q++) {
    for (net_op_t *op = q == 0 ? s->rhead : s->whead; op != NULL;
         op = op->next) {
      int64_t d = op_deadline(op);
      if (d == 0)
        continue;
      if (d <= now) {
        if (best == NULL || d < best->deadline)
          best = op;
      } else if (*next == 0 || d < *next) {
        *next = d;
      }
    }
  }
  return best;
}

/* The timer: settle what is due, in deadline order, each from a fresh look
 * at the queues (a continuation it ran may have changed them), then re-arm
 * for what is left. Before any continuation runs, the timer takes its slot
 * in the loop's heap back (just freed: no allocation), so a deadline
 * queued meanwhile, and the re-arm, cannot fail. */
static void dl_due(weft_timer_t *t, int status, void *arg) {
  net_deadline_t *dl = arg;
  weft_socket_t *s = dl->sock;
  if (status != 0 || s == NULL || s->closed) /* the loop's close ends ops */
    return;
  dl->due = INT64_MAX;
  (void)weft_timer_start(t, INT64_MAX, 0); /* never due, until moved */
  int64_t now = s->loop->now, next;
  sock_hold(s);
  net_op_t *op;
  while ((op = earliest_due(s, now, &next)) != NULL && !s->closed) {
    op->deadline = 0; /* seen once (an op left queued by expire) */
    expire(s, op);
  }
  if (!s->closed) {
    if (next != 0)
      (void)dl_start(dl, next); /* (active: no allocation) */
    else
      (void)weft_timer_stop(t);
    reject_writes(s);
  }
  sock_drop(s);
}

/* ---- the calls ---- */

/* The checks of the plain call for s (a want_kind socket), then the
 * deadline's timer: so a failure leaves nothing started. */
static int check_deadline(weft_socket_t *s, int64_t deadline,
                          uint8_t want_kind) {
  if (deadline < 0)
    return WEFT_EINVAL;
  int rc = check_sock(s);
  if (rc != 0 || deadline == 0)
    return rc;
  if (s->kind != want_kind || s->connecting)
    return WEFT_EINVAL;
  return dl_arm(s, deadline);
}

/* The op behind a future just made, if it is still queued on its socket
 * (not settled on the spot). */
static net_op_t *queued_op(weft_future_t *f) {
  net_op_t *op = (net_op_t *)(void *)f;
  return op->sock != NULL ? op : NULL;
}

static void set_deadline(weft_future_t *f, int64_t deadline) {
  net_op_t *op = queued_op(f);
  if (op != NULL && deadline != 0)
    op->deadline = deadline;
}

int weft_socket_read_deadline(weft_socket_t *sock, void *buf, size_t len,
                              int64_t deadline_ns, weft_future_t **out) {
  if (buf == NULL || len == 0 || out == NULL)
    return WEFT_EINVAL;
  int rc = check_deadline(sock, deadline_ns, SK_STREAM);
  if (rc == 0)
    rc = weft_socket_read(sock, buf, len, out);
  if (rc == 0)
    set_deadline(*out, deadline_ns);
  return rc;
}

int weft_socket_read_exactly_deadline(weft_socket_t *sock, void *buf,
                                      size_t len, int64_t deadline_ns,
                                      weft_future_t **out) {
  if (buf == NULL || len == 0 || out == NULL)
    return WEFT_EINVAL;
  int rc = check_deadline(sock, deadline_ns, SK_STREAM);
  if (rc == 0)
    rc = weft_socket_read_exactly(sock, buf, len, out);
  if (rc == 0)
    set_deadline(*out, deadline_ns);
  return rc;
}

int weft_socket_write_deadline(weft_socket_t *sock, const void *buf, size_t len,
                               int64_t deadline_ns, weft_future_t **out) {
  if (buf == NULL || out == NULL)
    return WEFT_EINVAL;
  int rc = check_deadline(sock, deadline_ns, SK_STREAM);
  if (rc == 0)
    rc = weft_socket_write(sock, buf, len, out);
  if (rc == 0)
    set_deadline(*out, deadline_ns);
  return rc;
}

int weft_socket_accept_deadline(weft_socket_t *listener, int64_t deadline_ns,
                                weft_future_t **out) {
  if (out == NULL)
    return WEFT_EINVAL;
  int rc = check_deadline(listener, deadline_ns, SK_LISTEN);
  if (rc == 0)
    rc = weft_socket_accept(listener, out);
  if (rc == 0)
    set_deadline(*out, deadline_ns);
  return rc;
}

/* The socket does not exist before the call: its timer is made and
 * started first (so its failure starts nothing), and handed to the socket
 * once the connect is under way. */
int weft_socket_connect_deadline(weft_loop_t *loop, const weft_addr_t *addr,
                                 int64_t deadline_ns, weft_future_t **out) {
  if (deadline_ns < 0 || loop == NULL || !weft__addr_ok(addr) || out == NULL)
    return WEFT_EINVAL;
  if (deadline_ns == 0)
    return weft_socket_connect(loop, addr, out);
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  net_deadline_t *dl = dl_make(loop);
  if (dl == NULL)
    return WEFT_ENOMEM;
  weft_future_t *f;
  int rc = dl_start(dl, deadline_ns);
  if (rc == 0)
    rc = weft_socket_connect(loop, addr, &f);
  net_op_t *op = rc == 0 ? queued_op(f) : NULL;
  if (op == NULL) { /* failed, or settled on the spot (refused at once) */
    (void)weft_timer_stop(&dl->timer);
    weft__free(dl, sizeof *dl);
    if (rc != 0)
      return rc;
  } else {
    dl->sock = op->sock;
    op->sock->dl = dl;
    op->deadline = deadline_ns;
  }
  *out = f;
  return 0;
}
