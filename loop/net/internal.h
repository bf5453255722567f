/* SPDX-License-Identifier: MIT */
/* loop/net/internal.h: private structures of the sockets module (TCP, Unix
 * stream, UDP on a loop; include/weft/net.h is its face). Never installed;
 * nothing outside loop/net/ includes it. How the module works and why:
 * docs/design/net.md.
 *
 * Files: addr.c (addresses), socket.c (socket memory, life and close, the
 * loop's hooks), op.c (an operation's future: cancel, reuse, sockets that
 * futures own), stream.c (stream reads and writes), complete.c (stream
 * reads and sends through the loop's completions), conn.c (listeners,
 * accept, connect), udp.c (datagrams), deadline.c (operations'
 * deadlines). */
#ifndef WEFT_NET_INTERNAL_H
#define WEFT_NET_INTERNAL_H

#include "../internal.h"

#include <errno.h>
#include <sys/types.h>
#include <weft/net.h>

enum { LINE = 64 };

enum { SK_LISTEN = 1, SK_STREAM = 2, SK_DGRAM = 3 };
enum {
  OP_ACCEPT = 1,
  OP_READ,
  OP_READ_EXACT,
  OP_CONNECT,
  OP_WRITE,
  OP_SHUTDOWN,
  OP_SEND,
  OP_RECV
};

typedef struct net_op net_op_t;

/* What an event and its operations touch comes first, in the first two
 * cache lines (a slab keeps each socket on a line boundary, and the loop
 * prefetches those two lines ahead of the event); the rest is rare. */
struct weft_socket {
  weft_io_t io; /* edge-triggered, both directions */
  weft_loop_t *loop;
  int fd;
  /* a recv's completion: its result (at most WEFT__CQ_BUF, or -errno)
   * and pool buffer (see cq_armed below) */
  int16_t cq_res, cq_buf;
  uint8_t kind;
  bool readable, writable; /* readiness since the last EAGAIN */
  bool hup;        /* the peer shut its side: reads go on until recv says so */
  bool connecting; /* a connect op owns the socket */
  bool closed;
  bool waiting_fd; /* listener: on loop->fd_waiters, retry timer armed */
  /* reads through the loop's completions (a stream on a loop that has
   * them: complete.c): a recv armed in the kernel (it holds the socket:
   * busy), or its completion waiting in the batch (cq_res, cq_buf); */
  /* writes through completions: a send queued or in the kernel for
   * wcq_op, the head of the write queue (NULL once that op is gone),
   * holding the socket; or its completion waiting (applied to the op
   * already: rc_done) */
  bool cq, cq_armed, cq_done, wcq_armed, wcq_done;
  unsigned busy;  /* processing frames on the stack; free when 0 */
  int rerr, werr; /* sticky errors of each direction */
  net_op_t *rhead, *rtail, *whead, *wtail;
  size_t wqueued;
  net_op_t *wcq_op;
  union {
    /* a stream's: kept when a cancel beat a completed syscall: NULL, or
     * bytes to give the next read */
    struct {
      char *spill;
      size_t spill_len, spill_off;
    };
    struct { /* a listener's: accepted fds nobody took */
      int *spare_fds;
      unsigned nspare, spare_cap;
    };
  };
  /* the timer of its operations' deadlines (deadline.c), NULL until the
   * first */
  struct net_deadline *dl;
  union {
    weft_timer_t retry; /* a listener's, out of fds */
    struct {
      weft__completion_t rc, wc; /* a stream's recv and send (complete.c) */
      /* a stream's place on the loop's flush list (net_loop.flush), or
       * NULL when not on it */
      struct weft_socket *flush_next;
    };
  };
  union {
    int64_t backoff_ms; /* a listener's */
    /* a stream's: the accept or connect future that owns it, or NULL (see
     * "sockets futures own") */
    net_op_t *owner;
  };
  struct weft_socket *waiter_next;
  struct sock_slab *slab; /* NULL: a block of its own */
};

struct net_op {
  weft__loop_op_t base;
  net_op_t *next;
  weft_socket_t *sock; /* NULL once off the socket's queue */
  uint8_t kind;
  /* (two bits of one byte: the op stays three cache lines) */
  /* no other thread can reach its future (still inside the call that made it,
   * or only a watch holds it): no guard and a plain settle */
  bool unshared : 1;
  /* a write in the socket's completion send (wcq_op's, from send_enter to
   * weft__wcq_take) */
  bool wcq : 1;
  uint8_t shift;          /* the op's offset in its block (op_alloc) */
  uint8_t own;            /* OP_ACCEPT, OP_CONNECT: OWN_* (its socket) */
  _Atomic uint32_t guard; /* loop thread inside a syscall on buf */
  char *buf;
  size_t len, done;
  union {
    weft_addr_t *from;    /* OP_RECV */
    weft_socket_t *owned; /* OP_ACCEPT, OP_CONNECT: OWN_HELD's socket */
    /* the other kinds, and ACCEPT and CONNECT while queued: the deadline
     * (weft_clock_now_ns), 0 for none (deadline.c) */
    int64_t deadline;
  };
};

/* The socket of a fulfilled accept or connect: none yet, the future's,
 * the user's (weft_socket_take), closed while the future held it; ORPHAN:
 * the future's last handle went on another thread while the loop was
 * closing, and the op's memory waits for the loop's close of the socket
 * (owner_cut). */
enum { OWN_NONE = 0, OWN_HELD, OWN_TAKEN, OWN_CLOSED, OWN_ORPHAN };

/* OP_SEND carries its destination; the other ops stay small enough for the
 * allocator's per-thread cache. */
typedef struct send_op {
  net_op_t op;
  weft_addr_t to;
} send_op_t;

/* What the sockets keep in their loop (loop->slot). */
typedef struct net_loop {
  net_op_t *op_free; /* finished operations, for reuse */
  unsigned op_nfree;
  weft_socket_t *fd_waiters;    /* listeners waiting for a free fd */
  struct sock_slab *sock_slabs; /* socket memory, slabs with room first */
  weft_socket_t *close_socks;   /* freed during close, kept until its end */
  /* streams with writes to hand over before the loop's next wait, each
   * held; the last links to FLUSH_END */
  weft_socket_t *flush;
} __attribute__((may_alias)) net_loop_t;
#define FLUSH_END ((weft_socket_t *)(uintptr_t)1)
_Static_assert(sizeof(net_loop_t) <= WEFT__LOOP_SLOT,
               "net state fits the slot");

static inline net_loop_t *net_of(weft_loop_t *loop) {
  return (net_loop_t *)(void *)loop->slot;
}

/* The guard word: GUARD_IO while the loop thread is in a syscall on the
 * op's buffer, GUARD_CANCEL once a cancel hook ran. Both sides use RMWs on
 * this one word, so they are totally ordered: either the loop sees the
 * cancel and skips the syscall, or the canceller sees the syscall and waits
 * for it to end. */
enum { GUARD_IO = 1u, GUARD_CANCEL = 2u };

/* ---- socket.c ---- */
/* Wrap fd (closed on failure) in a registered socket. */
WEFT__HIDDEN int weft__sock_wrap(weft_loop_t *loop, int fd, uint8_t kind,
                                 weft_socket_t **out);
WEFT__HIDDEN void weft__sock_free(weft_socket_t *s);
WEFT__HIDDEN void weft__sock_dealloc(weft_loop_t *loop, weft_socket_t *s);
/* Close s (idempotent): its queues cancelled, its fd closed; its memory
 * goes once nothing holds it (busy). */
WEFT__HIDDEN void weft__sock_close(weft_socket_t *s);
/* An operation's memory, on a cache line of its own. */
WEFT__HIDDEN net_op_t *weft__op_alloc(size_t size);
WEFT__HIDDEN void weft__op_free_mem(net_op_t *op);
WEFT__HIDDEN int weft__new_fd(int family, int type);
WEFT__HIDDEN bool weft__addr_ok(const weft_addr_t *a);

static inline void sock_hold(weft_socket_t *s) { s->busy++; }
static inline void sock_drop(weft_socket_t *s) {
  if (__builtin_expect(--s->busy == 0 && s->closed, 0))
    weft__sock_free(s);
}

static inline int check_sock(const weft_socket_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(s->loop))
    return WEFT_EPERM;
  if (s->closed || s->loop->closing)
    return WEFT_ESHUTDOWN;
  return 0;
}

/* ---- op.c ---- */
WEFT__HIDDEN void weft__op_disarm(weft__loop_op_t *base);
WEFT__HIDDEN void weft__op_fini(weft__ext_t *e);
WEFT__HIDDEN void weft__op_cancel_hook(void *arg);
/* Publish the claimed accept or connect op that brings sock: the future
 * owns sock from now on. */
WEFT__HIDDEN void weft__op_publish_owned(weft_socket_t *s, net_op_t *op,
                                         weft_socket_t *sock);
/* Loop thread: s (linked to its owning future) is closing. */
WEFT__HIDDEN void weft__owner_cut(weft_socket_t *s);
/* Keep bytes a cancelled read took (front: before the spill's) or a
 * connection a cancelled accept took, for the next operation. */
WEFT__HIDDEN void weft__spill_keep(weft_socket_t *s, const char *data, size_t n,
                                   bool front);
WEFT__HIDDEN void weft__keep_fd(weft_socket_t *s, int fd);

/* May a buffered reader or writer (reader.c, writer.c) be made over s?
 * 0; WEFT_EPERM (off its loop's thread), WEFT_ESHUTDOWN (closed, or the
 * loop closing), WEFT_EINVAL (not a connected stream socket). */
static inline int weft__sock_streamable(const weft_socket_t *s) {
  if (!weft__loop_owned(s->loop))
    return WEFT_EPERM;
  if (s->closed || s->loop->closing)
    return WEFT_ESHUTDOWN;
  return s->kind != SK_STREAM || s->connecting ? WEFT_EINVAL : 0;
}
WEFT__HIDDEN void weft__op_unlink_inner(net_op_t **head, net_op_t **tail,
                                        net_op_t *op);

/* ---- deadline.c ---- */
/* The socket is closing: its deadline timer stops. */
WEFT__HIDDEN void weft__dl_stop(weft_socket_t *s);
/* The socket's memory goes: its deadline timer too. */
WEFT__HIDDEN void weft__dl_free(weft_socket_t *s);
/* A write that left its queue as a cancelled one after a completion send
 * (weft__wcq_take): if its deadline settled it while that send, which
 * sent op->done of its bytes, was out, and that was a part, the write
 * side fails. */
WEFT__HIDDEN void weft__dl_wcq_expired(weft_socket_t *s, net_op_t *op);

/* ---- stream.c, complete.c, conn.c, udp.c ---- */
WEFT__HIDDEN void weft__sock_event(weft_io_t *io, unsigned events, int status,
                                   void *arg);
WEFT__HIDDEN void weft__sock_run(weft_socket_t *s);
WEFT__HIDDEN void weft__run_stream_reads(weft_socket_t *s);
WEFT__HIDDEN void weft__run_other_reads(weft_socket_t *s);
WEFT__HIDDEN void weft__run_writes(weft_socket_t *s);
WEFT__HIDDEN void weft__read_lost(weft_socket_t *s, net_op_t *op);
WEFT__HIDDEN void weft__do_recv(weft_socket_t *s, net_op_t *op);
WEFT__HIDDEN void weft__do_send(weft_socket_t *s, net_op_t *op);
WEFT__HIDDEN void weft__do_connect(weft_socket_t *s, net_op_t *op);
/* A socket closed: an fd is free, so waiting listeners retry now. */
WEFT__HIDDEN void weft__kick_fd_waiters(weft_loop_t *loop);
/* Check and start an operation of kind on s (a want_kind socket). */
WEFT__HIDDEN int weft__op_start(weft_socket_t *s, uint8_t kind,
                                uint8_t want_kind, void *buf, size_t len,
                                weft_future_t **out);
/* complete.c */
WEFT__HIDDEN extern const weft__completion_ops_t weft__sock_rc_ops,
    weft__sock_wc_ops;
WEFT__HIDDEN void weft__cq_arm(weft_socket_t *s);
WEFT__HIDDEN void weft__cq_take(weft_socket_t *s);
WEFT__HIDDEN void weft__cq_forget(weft_socket_t *s);
WEFT__HIDDEN bool weft__wcq_arm(weft_socket_t *s, net_op_t *op);
WEFT__HIDDEN void weft__wcq_take(weft_socket_t *s);

/* ---- hot helpers, inline in every file that runs operations ---- */

static inline net_op_t **queue_head(weft_socket_t *s, net_op_t *op) {
  return op->kind <= OP_READ_EXACT || op->kind == OP_RECV ? &s->rhead
                                                          : &s->whead;
}

static inline void op_unlink(weft_socket_t *s, net_op_t *op) {
  net_op_t **head = queue_head(s, op);
  net_op_t **tail = head == &s->rhead ? &s->rtail : &s->wtail;
  if (__builtin_expect(*head == op, 1)) { /* ops finish in order */
    if ((*head = op->next) == NULL)
      *tail = NULL;
  } else {
    weft__op_unlink_inner(head, tail, op);
  }
  if (s->rhead == NULL && head == &s->rhead)
    s->loop->readers--; /* the read queue is empty now */
  if (op->kind == OP_WRITE)
    s->wqueued -= op->len - op->done;
  if (op == s->wcq_op)
    s->wcq_op = NULL; /* its send, if still to come, goes nowhere */
  op->next = NULL;
  op->sock = NULL;
}

static inline struct weft_future *op_future(net_op_t *op) {
  return &op->base.ext.base;
}

/* The operation leaves its queue (its source reference goes) and settles. */
static inline void op_finish_int(weft_socket_t *s, net_op_t *op, intptr_t v,
                                 int err) {
  op_unlink(s, op);
  struct weft_future *f = op_future(op);
  uint32_t st = err == 0 ? WEFT_FULFILLED : WEFT_REJECTED;
  if (op->unshared) { /* done before its maker returned: also the unref */
    if (err == 0)
      f->val.i = v;
    else
      f->err = err;
    weft__loop_settle_unshared(s->loop, f, st);
    return;
  }
  (void)weft__settle_int(f, st, v, err);
  weft__unref(f);
}

/* Loop thread, before a syscall on op's buffer: false if it was cancelled. */
static inline bool op_enter(net_op_t *op) {
  if (op->unshared) /* nobody can cancel it yet */
    return true;
  WEFT__PERTURB(); /* a cancel may come first */
  uint32_t old = atomic_fetch_or_explicit(&op->guard, GUARD_IO,
                                          memory_order_acq_rel);
  return (old & GUARD_CANCEL) == 0;
}

static inline void op_leave(net_op_t *op) {
  WEFT__PERTURB(); /* a canceller waits out the call */
  if (!op->unshared)
    atomic_fetch_and_explicit(&op->guard, ~(uint32_t)GUARD_IO,
                              memory_order_release);
}

/* A cancelled op still queued: drop it (its future says cancelled). */
static inline void op_drop(weft_socket_t *s, net_op_t *op) {
  op_unlink(s, op);
  weft__unref(op_future(op));
}

/* Claim the op's future for a result while the guard is up; false when a
 * cancel won (the caller keeps what the syscall took). Publish after
 * op_leave with op_publish. */
static inline bool op_claim(net_op_t *op) {
  return op->unshared || weft__claim(op_future(op), WEFT_FULFILLED) == 0;
}

/* The claimed op, its value written and off its queue, settles fulfilled
 * (and its queue's reference goes). */
static inline void op_fulfil(weft_socket_t *s, net_op_t *op) {
  struct weft_future *f = op_future(op);
  if (op->unshared) {
    weft__loop_settle_unshared(s->loop, f, WEFT_FULFILLED);
    return;
  }
  weft__publish(f);
  weft__unref(f);
}

/* The claimed op, its value written, leaves its queue and settles. */
static inline void op_publish_value(weft_socket_t *s, net_op_t *op) {
  op_unlink(s, op);
  op_fulfil(s, op);
}

static inline void op_publish(weft_socket_t *s, net_op_t *op, intptr_t v) {
  op_future(op)->val.i = v;
  op_publish_value(s, op);
}

static inline bool transient(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

static inline int io_err(int e) {
  int rc = weft_error_from_errno(e);
  return rc == 0 ? WEFT_EIO : rc;
}

/* A stream's read side failed with errno e: its sticky error, which a
 * reset makes the write side's too. */
static inline void read_broke(weft_socket_t *s, int e) {
  s->rerr = io_err(e);
  if (s->rerr == WEFT_ECONNRESET && s->werr == 0)
    s->werr = s->rerr;
}

/* The same for the write side. */
static inline void write_broke(weft_socket_t *s, int e) {
  s->werr = io_err(e);
  if (s->werr == WEFT_ECONNRESET && s->rerr == 0)
    s->rerr = s->werr;
}

/* A stream read would wait for readiness, doing nothing now (do_read's
 * first three tests): the usual case for a read started right after the
 * last one took everything there was. */
static inline bool stream_read_waits(const weft_socket_t *s) {
  return s->kind == SK_STREAM && s->spill == NULL && s->rerr == 0 &&
         !s->readable;
}

/* op_publish for the op at the head of the read queue (where a read
 * finishes): the unlink needs none of op_unlink's tests. */
static inline void read_publish(weft_socket_t *s, net_op_t *op, intptr_t v) {
  op_future(op)->val.i = v;
  if (__builtin_expect((s->rhead = op->next) == NULL, 1)) {
    s->rtail = NULL;
    s->loop->readers--; /* the read queue is empty now */
  }
  op->next = NULL;
  op->sock = NULL;
  op_fulfil(s, op);
}

/* A stream read (its guard up) took bytes, op->done in all: it settles
 * if that is all it wants. */
static inline void read_got(weft_socket_t *s, net_op_t *op) {
  if (op->kind != OP_READ && op->done != op->len) {
    op_leave(op); /* read_exactly: more to come */
    return;
  }
  if (__builtin_expect(!op_claim(op), 0)) {
    weft__read_lost(s, op);
    return;
  }
  op_leave(op);
  read_publish(s, op, (intptr_t)op->done);
}

/* An op about to run whose future only a watch holds now (the usual way
 * to wait for a loop operation: the watch took the only handle, and sits
 * in the op's room for it) is as good as unshared, and stays so until it
 * settles: its syscall needs no guard, its settle no locked instruction
 * (five fewer per operation). */
static inline void op_check_shared(net_op_t *op) {
  if (!op->unshared && weft__watched_in_slot(op_future(op)))
    op->unshared = true;
}

static inline void cq_want(weft_socket_t *s) {
  if (s->cq && !s->cq_armed && !s->cq_done && !s->closed && s->rhead != NULL &&
      stream_read_waits(s))
    weft__cq_arm(s);
}

static inline void run_reads(weft_socket_t *s) {
  if (s->kind == SK_STREAM)
    weft__run_stream_reads(s);
  else
    weft__run_other_reads(s);
}

/* Append op to the queue head..tail. */
static inline void op_link(net_op_t **head, net_op_t **tail, net_op_t *op) {
  if (*tail != NULL)
    (*tail)->next = op;
  else
    *head = op;
  *tail = op;
}

/* (Inlined into each operation's call, with start_op and op_queue: their
 * calls cost as much as their work.) */
static inline __attribute__((always_inline)) net_op_t *
op_new(weft_socket_t *s, uint8_t kind, void *buf, size_t len) {
  weft_loop_t *loop = s->loop;
  size_t size = kind == OP_SEND ? sizeof(send_op_t) : sizeof(net_op_t);
  net_op_t *op = NULL;
  if (size == sizeof(net_op_t) && net_of(loop)->op_free != NULL) {
    op = net_of(loop)->op_free;
    WEFT__UNPOISON(op, sizeof *op);
    net_of(loop)->op_free = op->next;
    net_of(loop)->op_nfree--;
  } else if ((op = weft__op_alloc(size)) == NULL) {
    return NULL;
  }
  weft__loop_op_setup(&op->base, size, loop, weft__op_disarm, weft__op_fini,
                      weft__op_cancel_hook, op);
  op->next = NULL;
  op->sock = s;
  op->kind = kind;
  op->unshared = true; /* until op_queue returns its future */
  op->own = OWN_NONE;
  atomic_init(&op->guard, 0);
  op->buf = buf;
  op->len = len;
  op->done = 0;
  op->from = NULL;
  op->wcq = false;
  return op;
}

/* Queue op and try it at once if its direction is ready and idle. */
static inline __attribute__((always_inline)) weft_future_t *
op_queue(weft_socket_t *s, net_op_t *op) {
  net_op_t **head = queue_head(s, op);
  net_op_t **tail = head == &s->rhead ? &s->rtail : &s->wtail;
  bool idle = *head == NULL;
  op_link(head, tail, op);
  if (idle && head == &s->rhead)
    s->loop->readers++; /* see SPIN_READERS_MAX in spin.c */
  if (idle && !(head == &s->rhead && stream_read_waits(s))) {
    sock_hold(s);
    if (head == &s->rhead)
      run_reads(s);
    else
      weft__run_writes(s);
    sock_drop(s);
  } else if (head == &s->rhead) {
    cq_want(s);
  }
  /* Still alive (the caller's handle), and from here any thread may get
   * hold of its future. */
  op->unshared = false;
  return op_future(op);
}

#endif /* WEFT_NET_INTERNAL_H */
