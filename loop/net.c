/* SPDX-License-Identifier: MIT */
/* loop/net.c: sockets on the loop (TCP, Unix stream, UDP), each operation a
 * future.
 *
 * A socket is registered once, edge-triggered, for both directions, and
 * never modified: it keeps its own readiness flags (set by an event, cleared
 * by EAGAIN or a short transfer on a stream), so an echo round trip costs a
 * read and a write and no epoll_ctl. Operations queue per direction (reads
 * and accepts on one list, writes, connects and shutdowns on the other) and
 * run in order while the direction is ready; a new operation on a ready,
 * idle direction is tried at once.
 *
 * On a loop with an io_uring (uring.c), a stream socket is registered for
 * its write side only: a read that has to wait arms a recv in the ring
 * (into the loop's buffer pool; ring_arm, ring_take), and a write queues a
 * send that the loop's next wait hands over (wring_arm, wring_take), with
 * the op's guard up around that call as around a send().
 *
 * Cross-thread cancel: the canceller settles the future first, then (in the
 * cancel hook) marks the op's guard word cancelled and, if the loop is inside
 * a syscall on the op's buffer at that moment, waits for it to end; the loop
 * marks the guard around every such syscall and skips ops marked cancelled.
 * If a syscall completed but the cancel won the settle, what it took (bytes,
 * a connection) is kept on the socket for the next operation. */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

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
  /* a recv's completion: its result (at most WEFT__RING_BUF, or -errno)
   * and pool buffer (see ring_armed below) */
  int16_t ring_res, ring_bid;
  uint8_t kind;
  bool readable, writable; /* readiness since the last EAGAIN */
  bool hup; /* the peer shut its side: reads go on until recv says so */
  bool connecting;         /* a connect op owns the socket */
  bool closed;
  bool waiting_fd; /* listener: on loop->fd_waiters, retry timer armed */
  /* reads through the loop's ring (uring.c; a stream on a loop that has
   * one): a recv armed in the kernel (it holds the socket: busy), or its
   * completion waiting in the batch (ring_res, ring_bid); */
  /* writes through the ring: a send queued or in the kernel for
   * wring_op, the head of the write queue (NULL once that op is gone),
   * holding the socket; or its completion waiting (applied to the op
   * already: weft__net_ring_cqe) */
  bool ring, ring_armed, ring_done, wring_armed, wring_done;
  unsigned busy;   /* processing frames on the stack; free when 0 */
  int rerr, werr;  /* sticky errors of each direction */
  net_op_t *rhead, *rtail, *whead, *wtail;
  size_t wqueued;
  net_op_t *wring_op;
  /* kept when a cancel beat a completed syscall: NULL, or bytes to give
   * the next read */
  char *spill;
  size_t spill_len, spill_off;
  int *spare_fds; /* listener: accepted fds nobody took */
  unsigned nspare, spare_cap;
  /* listener out of fds */
  weft_timer_t retry;
  union {
    int64_t backoff_ms; /* a listener's */
    net_op_t *owner;    /* a stream's: the accept or connect future that
                           owns it, or NULL (see "sockets futures own") */
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
  bool unshared : 1; /* no other thread can reach its future (still inside
                        the call that made it, or only a watch holds it):
                        no guard and a plain settle */
  bool wring : 1;    /* a write in the socket's ring send (wring_op's, from
                        weft__net_send_enter to wring_take) */
  uint8_t shift; /* the op's offset in its block (op_alloc) */
  uint8_t own;   /* OP_ACCEPT, OP_CONNECT: OWN_* (its socket) */
  _Atomic uint32_t guard; /* loop thread inside a syscall on buf */
  char *buf;
  size_t len, done;
  union {
    weft_addr_t *from;     /* OP_RECV */
    weft_socket_t *owned;  /* OP_ACCEPT, OP_CONNECT: OWN_HELD's socket */
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

/* ---- addresses ---- */

int weft_addr_ip(const char *ip, uint16_t port, weft_addr_t *out) {
  if (ip == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_addr_t a;
  memset(&a, 0, sizeof a);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof *v4;
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof *v6;
  } else {
    return WEFT_EINVAL;
  }
  *out = a;
  return 0;
}

int weft_addr_unix(const char *path, weft_addr_t *out) {
  struct sockaddr_un un;
  if (path == NULL || out == NULL)
    return WEFT_EINVAL;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof un.sun_path)
    return WEFT_EINVAL;
  memset(out, 0, sizeof *out);
  struct sockaddr_un *u = (struct sockaddr_un *)&out->ss;
  u->sun_family = AF_UNIX;
  memcpy(u->sun_path, path, n + 1);
  out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

int weft_addr_port(const weft_addr_t *addr) {
  if (addr == NULL)
    return WEFT_EINVAL;
  if (addr->ss.ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)&addr->ss)->sin_port);
  if (addr->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)&addr->ss)->sin6_port);
  return WEFT_EINVAL;
}

int weft_addr_format(const weft_addr_t *addr, char *buf, size_t n) {
  if (addr == NULL || buf == NULL)
    return WEFT_EINVAL;
  char ip[INET6_ADDRSTRLEN];
  int w;
  switch (addr->ss.ss_family) {
  case AF_INET:
    inet_ntop(AF_INET, &((const struct sockaddr_in *)&addr->ss)->sin_addr, ip,
              sizeof ip);
    w = snprintf(buf, n, "%s:%d", ip, weft_addr_port(addr));
    break;
  case AF_INET6:
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addr->ss)->sin6_addr,
              ip, sizeof ip);
    w = snprintf(buf, n, "[%s]:%d", ip, weft_addr_port(addr));
    break;
  case AF_UNIX:
    w = snprintf(buf, n, "unix:%s",
                 ((const struct sockaddr_un *)&addr->ss)->sun_path);
    break;
  default:
    return WEFT_EINVAL;
  }
  return w < 0 || (size_t)w >= n ? WEFT_ERANGE : 0;
}

static bool addr_ok(const weft_addr_t *a) {
  if (a == NULL || a->len == 0 || a->len > sizeof a->ss)
    return false;
  int fam = a->ss.ss_family;
  return fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX;
}

/* ---- socket life ---- */

static void sock_event(weft_io_t *io, unsigned events, int status, void *arg);
static void sock_close(weft_socket_t *s);

static int new_fd(int family, int type) {
  int fd = WEFT__SYS("socket",
                     socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  return fd < 0 ? weft_err_from_errno(errno) : fd;
}

/* ---- socket memory ----
 *
 * Sockets of a loop come from slabs of SLAB_SOCKS, so the state of a
 * thousand connections sits in a few dozen pages instead of one page each
 * (between the users' buffers): dispatching a batch of ready sockets then
 * misses in the cache, not also in the TLB (measured with 1000 echo
 * connections: the stall on reaching each socket fell by two thirds). The
 * slabs with a free slot are kept at the front of the loop's list; an
 * empty slab is freed unless it is the only one. Under AddressSanitizer
 * the slabs stay on (the sanitizer checks the code users run): a free slot
 * is poisoned until handed out again, so a use after close is reported.
 * Finished operations are kept for reuse, poisoned the same way (op_fini). */
enum { SLAB_SOCKS = 32, SOCK_CELL = 256, LINE = 64 };

/* A socket on its own four cache lines. */
typedef union sock_cell {
  weft_socket_t s;
  char lines[SOCK_CELL];
} sock_cell_t;
_Static_assert(sizeof(weft_socket_t) <= SOCK_CELL, "socket outgrew its cell");

typedef struct sock_slab {
  sock_cell_t cells[SLAB_SOCKS]; /* first: the slab is line-aligned */
  struct sock_slab *prev, *next; /* loop->sock_slabs */
  weft_socket_t *free;           /* linked through waiter_next */
  void *mem;                     /* the block the slab was aligned in */
  unsigned live;
} sock_slab_t;

/* A slab's block: room to put the slab on a line boundary (sl->mem). */
enum { SLAB_BLOCK = sizeof(sock_slab_t) + LINE - 1 };

static void slab_unlink(weft_loop_t *loop, sock_slab_t *sl) {
  if (sl->prev != NULL)
    sl->prev->next = sl->next;
  else
    loop->sock_slabs = sl->next;
  if (sl->next != NULL)
    sl->next->prev = sl->prev;
  sl->prev = sl->next = NULL;
}

static void slab_push_front(weft_loop_t *loop, sock_slab_t *sl) {
  sl->prev = NULL;
  sl->next = loop->sock_slabs;
  if (sl->next != NULL)
    sl->next->prev = sl;
  loop->sock_slabs = sl;
}

static void slab_push_back(weft_loop_t *loop, sock_slab_t *sl) {
  sock_slab_t *last = loop->sock_slabs;
  if (last == NULL) {
    slab_push_front(loop, sl);
    return;
  }
  while (last->next != NULL)
    last = last->next;
  last->next = sl;
  sl->prev = last;
  sl->next = NULL;
}

static weft_socket_t *sock_alloc(weft_loop_t *loop) {
  sock_slab_t *sl = loop->sock_slabs;
  if (sl == NULL || sl->free == NULL) {
    void *mem = weft__malloc(SLAB_BLOCK);
    if (mem == NULL)
      return NULL;
    sl = (sock_slab_t *)(((uintptr_t)mem + LINE - 1) & ~(uintptr_t)(LINE - 1));
    sl->mem = mem;
    sl->free = NULL;
    sl->live = 0;
    for (unsigned i = SLAB_SOCKS; i-- > 0;) {
      sl->cells[i].s.waiter_next = sl->free;
      sl->free = &sl->cells[i].s;
      WEFT__POISON(&sl->cells[i], SOCK_CELL);
    }
    slab_push_front(loop, sl);
  }
  weft_socket_t *s = sl->free;
  WEFT__UNPOISON(s, SOCK_CELL);
  sl->free = s->waiter_next;
  sl->live++;
  if (sl->free == NULL && sl->next != NULL) { /* full: to the back */
    slab_unlink(loop, sl);
    slab_push_back(loop, sl);
  }
  memset(s, 0, sizeof *s);
  s->slab = sl;
  return s;
}

static void sock_dealloc(weft_loop_t *loop, weft_socket_t *s) {
  sock_slab_t *sl = s->slab;
  if (sl == NULL) {
    weft__free(s, sizeof *s);
    return;
  }
  bool was_full = sl->free == NULL;
  s->waiter_next = sl->free;
  sl->free = s;
  WEFT__POISON(s, SOCK_CELL); /* until sock_alloc hands it out again */
  sl->live--;
  if (sl->live == 0 && (sl->prev != NULL || sl->next != NULL)) {
    slab_unlink(loop, sl); /* empty and not the only one */
    weft__free(sl->mem, SLAB_BLOCK);
  } else if (was_full && sl->prev != NULL) { /* has room: to the front */
    slab_unlink(loop, sl);
    slab_push_front(loop, sl);
  }
}

/* An operation starts on a cache line, so its three lines are three
 * lines (at 16 bytes, a 192-byte op spans four, and the prefetch ahead of
 * its event, which asks for three, left one to miss). */
static net_op_t *op_alloc(size_t size) {
  char *mem = weft__malloc(size + LINE);
  if (mem == NULL)
    return NULL;
  net_op_t *op =
      (net_op_t *)(((uintptr_t)mem + LINE - 1) & ~(uintptr_t)(LINE - 1));
  op->shift = (uint8_t)((char *)op - mem);
  return op;
}

static void op_free_mem(net_op_t *op) {
  weft__free((char *)op - op->shift, op->base.size + LINE);
}

/* At loop close, after every socket was closed and freed. */
void weft__net_close(weft_loop_t *loop) {
  while (loop->close_socks != NULL) {
    weft_socket_t *s = loop->close_socks;
    loop->close_socks = s->waiter_next;
    sock_dealloc(loop, s);
  }
  while (loop->op_free != NULL) {
    net_op_t *op = loop->op_free;
    WEFT__UNPOISON(op, sizeof *op);
    loop->op_free = op->next;
    op_free_mem(op);
  }
  loop->op_nfree = 0;
  while (loop->sock_slabs != NULL) {
    sock_slab_t *sl = loop->sock_slabs;
    slab_unlink(loop, sl);
    /* live is 0: sockets never outlive close */
    weft__free(sl->mem, SLAB_BLOCK);
  }
}

/* Wrap fd (closed on failure) in a registered socket. */
static int sock_wrap(weft_loop_t *loop, int fd, uint8_t kind,
                     weft_socket_t **out) {
  weft_socket_t *s = sock_alloc(loop);
  if (s == NULL) {
    close(fd);
    return WEFT_ENOMEM;
  }
  s->loop = loop;
  s->fd = fd;
  s->kind = kind;
  /* Optimistic: the first operation tries its syscall; EAGAIN clears. */
  s->readable = s->writable = true;
  /* A stream on a loop with a ring reads through the ring: epoll watches
   * only its write side (and errors), so a byte that arrives wakes one of
   * the two, not both. */
  s->ring = kind == SK_STREAM && loop->backend.ring != NULL;
  int rc = weft__io_start(loop, &s->io, fd,
                          (s->ring ? 0 : WEFT_READABLE) | WEFT_WRITABLE |
                              WEFT__EDGE,
                          sock_event, s);
  if (rc != 0) {
    close(fd);
    sock_dealloc(loop, s);
    return rc;
  }
  s->io.priv_events |= s->ring ? WEFT__RING : WEFT__HUP;
  *out = s;
  return 0;
}

static void sock_free(weft_socket_t *s) {
  if (s->spill != NULL)
    weft__free(s->spill, s->spill_len);
  for (unsigned i = 0; i < s->nspare; i++)
    close(s->spare_fds[i]);
  if (s->spare_fds != NULL)
    weft__free(s->spare_fds, s->spare_cap * sizeof(int));
  s->spill = NULL;
  s->spare_fds = NULL;
  s->nspare = 0;
  weft_loop_t *loop = s->loop;
  if (loop->in_close) { /* the continuations close runs may still name it */
    s->waiter_next = loop->close_socks; /* (closed: no other list has it) */
    loop->close_socks = s;
    return;
  }
  sock_dealloc(loop, s);
}

static inline void sock_hold(weft_socket_t *s) { s->busy++; }
static inline void sock_drop(weft_socket_t *s) {
  if (__builtin_expect(--s->busy == 0 && s->closed, 0))
    sock_free(s);
}

static int check_sock(const weft_socket_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(s->loop))
    return WEFT_EPERM;
  if (s->closed || s->loop->closing)
    return WEFT_ESHUTDOWN;
  return 0;
}

/* Called by the loop for the next event of a batch while it dispatches
 * this one: if io is a socket, start loading its first queued operation
 * (all of its lines: the future's header and the op's fields), so the
 * dispatch does not stall on it. A hint only: touches nothing. */
WEFT__HOT void weft__net_prefetch(weft_io_t *io) {
  if (io->priv_fn != sock_event)
    return;
  weft_socket_t *s = (weft_socket_t *)io;
  net_op_t *op = s->rhead != NULL ? s->rhead : s->whead;
  if (op != NULL) { /* its three lines (op_alloc) */
    __builtin_prefetch(op, 1);
    __builtin_prefetch((char *)op + LINE, 1);
    __builtin_prefetch((char *)op + 2 * LINE, 1);
  }
}

/* The same, one event later (the op is in cache by then): start loading
 * the first line of the buffer a queued read receives into, which the
 * kernel's copy would otherwise miss on, one connection after another. */
WEFT__HOT void weft__net_prefetch_buf(weft_io_t *io) {
  if (io->priv_fn != sock_event)
    return;
  weft_socket_t *s = (weft_socket_t *)io;
  net_op_t *op = s->rhead;
  if (op != NULL && op->buf != NULL)
    __builtin_prefetch(op->buf + op->done, 1);
}

/* ---- operations ---- */

static net_op_t **queue_head(weft_socket_t *s, net_op_t *op) {
  return op->kind <= OP_READ_EXACT || op->kind == OP_RECV ? &s->rhead
                                                          : &s->whead;
}

/* Unlink op from the middle of a queue (a cancelled op). */
static void op_unlink_inner(net_op_t **head, net_op_t **tail, net_op_t *op) {
  net_op_t *prev = NULL;
  for (net_op_t *o = *head; o != NULL; prev = o, o = o->next) {
    if (o != op)
      continue;
    if (prev != NULL)
      prev->next = o->next;
    else
      *head = o->next;
    if (*tail == o)
      *tail = prev;
    return;
  }
}

static void op_unlink(weft_socket_t *s, net_op_t *op) {
  net_op_t **head = queue_head(s, op);
  net_op_t **tail = head == &s->rhead ? &s->rtail : &s->wtail;
  if (__builtin_expect(*head == op, 1)) { /* ops finish in order */
    if ((*head = op->next) == NULL)
      *tail = NULL;
  } else {
    op_unlink_inner(head, tail, op);
  }
  if (s->rhead == NULL && head == &s->rhead)
    s->loop->readers--; /* the read queue is empty now */
  if (op->kind == OP_WRITE)
    s->wqueued -= op->len - op->done;
  if (op == s->wring_op)
    s->wring_op = NULL; /* its send, if still to come, goes nowhere */
  op->next = NULL;
  op->sock = NULL;
}

static struct weft_future *op_future(net_op_t *op) { return &op->base.ext.base; }

/* The operation leaves its queue (its source reference goes) and settles. */
static void op_finish_int(weft_socket_t *s, net_op_t *op, intptr_t v,
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

/* The guard word: GUARD_IO while the loop thread is in a syscall on the
 * op's buffer, GUARD_CANCEL once a cancel hook ran. Both sides use RMWs on
 * this one word, so they are totally ordered: either the loop sees the
 * cancel and skips the syscall, or the canceller sees the syscall and waits
 * for it to end. */
enum { GUARD_IO = 1u, GUARD_CANCEL = 2u };

/* Loop thread, before a syscall on op's buffer: false if it was cancelled. */
static bool op_enter(net_op_t *op) {
  if (op->unshared) /* nobody can cancel it yet */
    return true;
  WEFT__PERTURB(); /* a cancel may come first */
  uint32_t old =
      atomic_fetch_or_explicit(&op->guard, GUARD_IO, memory_order_acq_rel);
  return (old & GUARD_CANCEL) == 0;
}

static void op_leave(net_op_t *op) {
  WEFT__PERTURB(); /* a canceller waits out the call */
  if (!op->unshared)
    atomic_fetch_and_explicit(&op->guard, ~(uint32_t)GUARD_IO,
                              memory_order_release);
}

/* A cancelled op still queued: drop it (its future says cancelled). */
static void op_drop(weft_socket_t *s, net_op_t *op) {
  op_unlink(s, op);
  weft__unref(op_future(op));
}

/* Claim the op's future for a result while the guard is up; false when a
 * cancel won (the caller keeps what the syscall took). Publish after
 * op_leave with op_publish. */
static bool op_claim(net_op_t *op) {
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
static void op_publish_value(weft_socket_t *s, net_op_t *op) {
  op_unlink(s, op);
  op_fulfil(s, op);
}

static void op_publish(weft_socket_t *s, net_op_t *op, intptr_t v) {
  op_future(op)->val.i = v;
  op_publish_value(s, op);
}

/* ---- sockets futures own ----
 *
 * A fulfilled accept or connect future owns its socket until the user
 * takes it (weft_socket_take): op->owned and s->owner link the two. The
 * link is cut when the socket is taken, or closed (by its user through the
 * borrowed pointer, or by the loop's close: owner_cut), or when the
 * future's last reference goes (op_fini), which closes the socket. That
 * last reference may go on any thread, and closing is the loop thread's:
 * elsewhere op_fini hands the op to the loop (owner_post). owner_mu orders
 * such a thread against the loop cutting the link, and the link keeps the
 * loop alive: the loop cuts every link (closing every socket) before it
 * frees itself. s->owner is the loop thread's alone; op->owned and op->own
 * are the loop thread's while the future has a handle, and under owner_mu
 * once the loop may meet op_fini of another thread. */
static pthread_mutex_t owner_mu = PTHREAD_MUTEX_INITIALIZER;

/* The value's destructor does nothing: op_fini closes the socket (the op
 * knows whether it still owns it). Having one makes the value owned, so a
 * future that follows this one borrows it and keeps this one alive. */
static void owned_value(void *sock) { (void)sock; }

/* Publish the claimed accept or connect op that brings sock: the future
 * owns sock from now on. */
static void op_publish_owned(weft_socket_t *s, net_op_t *op,
                             weft_socket_t *sock) {
  op->owned = sock;
  op->own = OWN_HELD;
  sock->owner = op;
  weft__ext_value_ptr(op_future(op), sock, owned_value);
  op_publish_value(s, op);
}

/* Loop thread: s (linked) is closing. An op that was orphaned goes now. */
static __attribute__((noinline, cold)) void owner_cut(weft_socket_t *s) {
  pthread_mutex_lock(&owner_mu);
  net_op_t *op = s->owner;
  bool orphan = op->own == OWN_ORPHAN;
  op->owned = NULL;
  op->own = OWN_CLOSED;
  s->owner = NULL;
  pthread_mutex_unlock(&owner_mu);
  if (orphan)
    op_free_mem(op);
}

/* `front`: the bytes came before what the spill holds (a cancelled read's,
 * which it may have taken from the spill), else after. */
static void spill_keep(weft_socket_t *s, const char *data, size_t n,
                       bool front) {
  /* Rare (a cross-thread cancel racing a read): add to the spill. */
  size_t have = s->spill_len - s->spill_off;
  char *b = weft__malloc(have + n);
  if (b == NULL) {
    s->rerr = WEFT_ENOMEM; /* cannot keep the bytes: the stream is broken */
    return;
  }
  if (have != 0)
    memcpy(front ? b + n : b, s->spill + s->spill_off, have);
  memcpy(front ? b : b + have, data, n);
  if (s->spill != NULL)
    weft__free(s->spill, s->spill_len);
  s->spill = b;
  s->spill_len = have + n;
  s->spill_off = 0;
}

static void keep_fd(weft_socket_t *s, int fd) {
  if (s->nspare == s->spare_cap) {
    unsigned cap = s->spare_cap ? s->spare_cap * 2 : 4;
    int *p = weft__realloc(s->spare_fds, s->spare_cap * sizeof(int),
                           cap * sizeof(int));
    if (p == NULL) {
      close(fd); /* the peer sees a reset; nothing else to do */
      return;
    }
    s->spare_fds = p;
    s->spare_cap = cap;
  }
  s->spare_fds[s->nspare++] = fd;
}

static bool transient(int e) { return e == EAGAIN || e == EWOULDBLOCK; }

static int io_err(int e) {
  int rc = weft_err_from_errno(e);
  return rc == 0 ? WEFT_EIO : rc;
}

/* A stream's read side failed with errno e: its sticky error, which a
 * reset makes the write side's too. */
static void read_broke(weft_socket_t *s, int e) {
  s->rerr = io_err(e);
  if (s->rerr == WEFT_ECONNRESET && s->werr == 0)
    s->werr = s->rerr;
}

/* The same for the write side. */
static void write_broke(weft_socket_t *s, int e) {
  s->werr = io_err(e);
  if (s->werr == WEFT_ECONNRESET && s->rerr == 0)
    s->rerr = s->werr;
}

/* ---- reads ---- */

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
      fd = WEFT__SYS("accept4", accept4(s->fd, NULL, NULL,
                                        SOCK_NONBLOCK | SOCK_CLOEXEC));
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
  int rc = sock_wrap(s->loop, fd, SK_STREAM, &c);
  if (rc != 0) { /* fd closed by sock_wrap; the peer sees a reset */
    op_finish_int(s, op, 0, rc);
    return;
  }
  if (!op_claim(op)) { /* cancelled from another thread meanwhile: keep
                           the connection (not its wrapper) for the next */
    weft_io_stop(&c->io);
    keep_fd(s, c->fd);
    sock_dealloc(s->loop, c); /* (a slab slot) */
    op_drop(s, op);
    return;
  }
  op_publish_owned(s, op, c);
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

/* do_read when a cancel from another thread won the settle: the bytes
 * stay on the socket for the next read. */
static __attribute__((noinline, cold)) void read_lost(weft_socket_t *s,
                                                      net_op_t *op) {
  spill_keep(s, op->buf, op->done, true);
  op_leave(op);
  op_drop(s, op);
}

/* A stream read (its guard up) took bytes, op->done in all: it settles
 * if that is all it wants. */
static inline void read_got(weft_socket_t *s, net_op_t *op) {
  if (op->kind != OP_READ && op->done != op->len) {
    op_leave(op); /* read_exactly: more to come */
    return;
  }
  if (__builtin_expect(!op_claim(op), 0)) {
    read_lost(s, op);
    return;
  }
  op_leave(op);
  read_publish(s, op, (intptr_t)op->done);
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
static __attribute__((noinline, cold)) void read_none(weft_socket_t *s,
                                                      net_op_t *op, ssize_t n,
                                                      int e) {
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
    s->readable = false; /* a short read on a stream drained it (but not
                            the end of stream its last edge carried) */
  op->done += (size_t)n;
  read_got(s, op);
}

static void do_recv(weft_socket_t *s, net_op_t *op) {
  if (!s->readable)
    return;
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  ssize_t n;
  do
    n = WEFT__SYS("recvfrom", recvfrom(s->fd, op->buf, op->len, 0,
                                       (struct sockaddr *)&ss, &sl));
  while (n < 0 && errno == EINTR);
  if (n >= 0) {
    if (op->from != NULL) {
      memset(op->from, 0, sizeof *op->from);
      memcpy(&op->from->ss, &ss, sl);
      op->from->len = sl;
    }
    if (!op_claim(op)) { /* the datagram is lost to the cancel: say so */
      op_leave(op);
      op_drop(s, op);
      return;
    }
    op_leave(op);
    op_publish(s, op, (intptr_t)n);
    return;
  }
  op_leave(op);
  if (transient(errno))
    s->readable = false;
  else
    op_finish_int(s, op, 0, io_err(errno)); /* ICMP errors: this op only */
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

/* ---- reads through the loop's ring (uring.c) ---- */

/* The read queue has to wait and nothing is armed: arm a recv. Where the
 * ring has no room even after a submit, the socket reads the epoll way
 * from now on (its registration gains the read side). */
static __attribute__((noinline)) void ring_arm(weft_socket_t *s) {
  weft_loop_t *loop = s->loop;
  if (weft__ring_recv(&loop->backend, s, s->fd)) {
    s->ring_armed = true;
    s->busy++; /* the kernel has it until the completion */
    return;
  }
  if (loop->ops->modify(&loop->backend, s->fd,
                        WEFT_READABLE | WEFT_WRITABLE | WEFT__EDGE,
                        &s->io) == 0) {
    s->ring = false;
    s->io.priv_events = WEFT_READABLE | WEFT_WRITABLE | WEFT__HUP;
  } else if (s->rerr == 0) {
    s->rerr = WEFT_ENOMEM; /* no way left to wait for bytes */
  }
}

static inline void ring_want(weft_socket_t *s) {
  if (s->ring && !s->ring_armed && !s->ring_done && !s->closed &&
      s->rhead != NULL && stream_read_waits(s))
    ring_arm(s);
}

/* A send's result res, as do_write takes send()'s: its bytes go to the
 * writes it carried (op->wring, in queue order from wring_op, each for
 * what weft__net_send_enter offered of it), which settle in wring_take. */
static void wring_result(weft_socket_t *s, int res) {
  net_op_t *op = s->wring_op;
  if (__builtin_expect(res > 0, 1)) {
    if (op == NULL)
      return; /* its write was cancelled (and left wqueued): what went,
                 went */
    s->wqueued -= (size_t)res;
    size_t left = (size_t)res, room = WEFT__RING_SEND_MAX;
    for (; op != NULL && op->wring; op = op->next) {
      size_t want = op->len - op->done;
      if (want > room)
        want = room; /* (as weft__net_send_enter bounded it) */
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

/* A completion for s (from the kernel's wait, loop thread). */
weft_io_t *weft__net_ring_cqe(void *tag, int res, int bid) {
  if ((uintptr_t)tag & 1) { /* a send */
    weft_socket_t *s = (weft_socket_t *)((uintptr_t)tag - 1);
    s->wring_armed = false;
    if (__builtin_expect(s->closed, 0)) {
      sock_drop(s);
      return NULL;
    }
    s->busy--;
    s->wring_done = true;
    int fe = WEFT__FAULT("cqe_send"); /* the ring reports the send failed */
    wring_result(s, fe != 0 ? -fe : res);
    return &s->io;
  }
  weft_socket_t *s = tag;
  s->ring_armed = false;
  if (__builtin_expect(s->closed, 0)) { /* cancelled by its close */
    if (bid >= 0)
      weft__ring_buf_put(&s->loop->backend, (unsigned)bid);
    sock_drop(s); /* the kernel's hold: the socket's memory goes now */
    return NULL;
  }
  s->busy--; /* not closed: it cannot reach 0 here */
  s->ring_done = true;
  int fe = WEFT__FAULT("cqe_recv"); /* the ring reports the recv failed */
  if (fe != 0) {
    if (bid >= 0)
      weft__ring_buf_put(&s->loop->backend, (unsigned)bid);
    res = -fe;
    bid = -1;
  }
  s->ring_res = (int16_t)res; /* (a recv of at most WEFT__RING_BUF) */
  s->ring_bid = (int16_t)bid;
  return &s->io;
}

/* A completion's bytes went nowhere (its socket is closing). */
static void ring_forget(weft_socket_t *s) {
  if (s->ring_done && s->ring_bid >= 0)
    weft__ring_buf_put(&s->loop->backend, (unsigned)s->ring_bid);
  s->ring_done = false;
}

/* The completion's event: its bytes go to the queued reads in order (as
 * do_read's would: each under its op's guard), the rest stay on the
 * socket; its error or end of stream becomes the read side's. */
WEFT__HOT static void ring_take(weft_socket_t *s) {
  int res = s->ring_res;
  s->ring_done = false;
  if (__builtin_expect(res <= 0, 0)) {
    if (res == -ENOBUFS)
      weft__ring_grow(&s->loop->backend);
    if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR ||
        res == -ECANCELED)
      s->readable = true; /* no pool buffer: read the plain way */
    else if (s->rerr == 0 && res == 0)
      s->rerr = WEFT_EOF;
    else if (s->rerr == 0)
      read_broke(s, -res);
    return;
  }
  const char *data = weft__ring_buf(&s->loop->backend, (unsigned)s->ring_bid);
  size_t n = (size_t)res, off = 0;
  net_op_t *op;
  while (s->spill == NULL && off < n && (op = s->rhead) != NULL &&
         !s->closed) {
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
    spill_keep(s, data + off, n - off, false); /* nobody wants them yet */
  weft__ring_buf_put(&s->loop->backend, (unsigned)s->ring_bid);
  s->readable = n == WEFT__RING_BUF; /* a full buffer: more may wait */
}

/* Queue op (the head of the write queue, the socket writable) as a ring
 * send. False: no room in the ring (the caller sends the plain way). The
 * send carries every write queued behind op by the time it is handed over
 * (weft__net_send_enter), so one wait sends what epoll's writes would. */
static bool wring_arm(weft_socket_t *s, net_op_t *op) {
  if (!weft__ring_send(&s->loop->backend, s, s->fd, op->buf + op->done,
                       op->len - op->done))
    return false;
  s->wring_op = op;
  s->wring_armed = true;
  s->busy++; /* until its completion */
  return true;
}

/* The send is about to be handed to the kernel (uring.c, loop thread):
 * its buffers go to iov[0..n), n <= max: the rest of wring_op's, then
 * those of the writes queued behind it, up to WEFT__RING_SEND_MAX bytes in
 * all. Each such write is marked op->wring and its guard goes up, as
 * around a send(). 0 when wring_op is gone or was cancelled (the send
 * becomes a NOP, whose completion runs the queue on). */
unsigned weft__net_send_enter(void *tag, struct iovec *iov, unsigned max) {
  weft_socket_t *s = tag;
  net_op_t *op = s->wring_op;
  if (op == NULL || s->closed)
    return 0;
  op_check_shared(op);
  if (!op_enter(op)) {
    op_drop(s, op); /* cancelled from another thread (clears wring_op) */
    return 0;
  }
  size_t room = WEFT__RING_SEND_MAX;
  unsigned n = 0;
  for (;;) {
    size_t k = op->len - op->done;
    if (k > room)
      k = room;
    room -= k;
    iov[n].iov_base = op->buf + op->done;
    iov[n++].iov_len = k;
    op->wring = true;
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
void weft__net_send_leave(void *tag) {
  weft_socket_t *s = tag;
  for (net_op_t *op = s->wring_op; op != NULL && op->wring; op = op->next)
    op_leave(op);
}

/* The send's completion event (weft__net_ring_cqe applied the result):
 * the writes it carried settle, from the head, while all sent (or the
 * stream failed); one cancelled meanwhile leaves the queue, what went of
 * it went. */
WEFT__HOT static void wring_take(weft_socket_t *s) {
  s->wring_done = false;
  s->wring_op = NULL;
  bool stay = false; /* a write before it was not all sent */
  for (net_op_t *op = s->whead, *next; op != NULL && op->wring; op = next) {
    next = op->next;
    op->wring = false;
    WEFT__PERTURB();
    if (atomic_load_explicit(&op->guard, memory_order_acquire) &
        GUARD_CANCEL)
      op_drop(s, op);
    else if (stay)
      continue;
    else if (op->done == op->len)
      op_finish_int(s, op, (intptr_t)op->len, 0);
    else if (s->werr != 0)
      op_finish_int(s, op, 0, s->werr);
    else
      stay = true; /* the next send takes it on */
  }
}

/* run_reads for a stream, the usual socket, in a function of its own:
 * its code stays short. */
WEFT__HOT static __attribute__((noinline)) void
run_stream_reads(weft_socket_t *s) {
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
  ring_want(s);
}

/* Listeners and datagram sockets. */
static void run_other_reads(weft_socket_t *s) {
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
      do_recv(s, op);
    }
    if (s->rhead == op && op->done == done && s->readable == was_ready &&
        s->rerr == err)
      break; /* no progress: wait for readiness */
  }
}

static inline void run_reads(weft_socket_t *s) {
  if (s->kind == SK_STREAM)
    run_stream_reads(s);
  else
    run_other_reads(s);
}

/* ---- writes ---- */

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
    n = WEFT__SYS("send",
                  send(s->fd, op->buf + op->done, want, MSG_NOSIGNAL));
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

static void do_send(weft_socket_t *s, net_op_t *op) {
  if (!s->writable)
    return;
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  ssize_t n;
  do
    n = WEFT__SYS("sendto",
                  sendto(s->fd, op->buf, op->len, MSG_NOSIGNAL,
                         (const struct sockaddr *)&((send_op_t *)op)->to.ss,
                         ((send_op_t *)op)->to.len));
  while (n < 0 && errno == EINTR);
  op_leave(op);
  if (n >= 0)
    op_finish_int(s, op, (intptr_t)op->len, 0);
  else if (transient(errno))
    s->writable = false;
  else
    op_finish_int(s, op, 0, io_err(errno));
}

static void do_connect(weft_socket_t *s, net_op_t *op) {
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
    sock_close(s); /* the half-open socket was the op's */
    return;
  }
  s->connecting = false;
  if (!op_claim(op)) { /* cancelled: the socket goes with it */
    op_drop(s, op);
    sock_close(s);
    return;
  }
  op_publish_owned(s, op, s);
}

static void run_writes(weft_socket_t *s) {
  while (s->whead != NULL && !s->closed && !s->wring_armed) {
    net_op_t *op = s->whead;
    op_check_shared(op);
    size_t done = op->done;
    bool was_ready = s->writable;
    if (op->kind == OP_CONNECT)
      do_connect(s, op);
    else if (s->kind == SK_DGRAM)
      do_send(s, op);
    else if (s->ring && op->kind == OP_WRITE && s->werr == 0 &&
             s->writable && op->done < op->len && wring_arm(s, op))
      break; /* the ring sends it at the loop's next wait */
    else
      do_write(s, op);
    if (s->whead == op && op->done == done && s->writable == was_ready)
      break;
  }
}

WEFT__HOT static void sock_run(weft_socket_t *s) {
  sock_hold(s);
  if (s->whead != NULL) /* (checked here: an empty queue is the usual */
    run_writes(s);      /* case, and the calls are not cheap) */
  if (s->rhead != NULL)
    run_reads(s);
  sock_drop(s);
}

WEFT__HOT static void sock_event(weft_io_t *io, unsigned events, int status,
                                void *arg) {
  (void)io;
  weft_socket_t *s = arg;
  if (status != 0) { /* the loop is closing: it is unlinked already */
    sock_close(s);
    return;
  }
  if (events & WEFT__RING) {
    sock_hold(s);
    if (s->wring_done)
      wring_take(s);
    if (s->ring_done && !s->closed)
      ring_take(s);
    bool closed = s->closed; /* a continuation closed it: the drop frees */
    sock_drop(s);
    if (closed)
      return;
  }
  if ((events & WEFT_READABLE) && !s->ring)
    s->readable = true;
  if (events & WEFT__HUP)
    s->hup = true;
  if (events & WEFT_WRITABLE)
    s->writable = true;
  sock_run(s);
}

/* ---- listeners out of fds ---- */

static void retry_due(weft_timer_t *t, int status, void *arg) {
  (void)t;
  weft_socket_t *s = arg;
  if (status != 0 || s->closed)
    return;
  weft_loop_t *loop = s->loop;
  for (weft_socket_t **p = &loop->fd_waiters; *p != NULL;
       p = &(*p)->waiter_next) {
    if (*p == s) {
      *p = s->waiter_next;
      break;
    }
  }
  s->waiting_fd = false;
  sock_run(s);
  if (!s->waiting_fd)
    s->backoff_ms = 0;
}

static void listener_wait_fd(weft_socket_t *s) {
  s->backoff_ms = s->backoff_ms == 0 ? 5
                  : s->backoff_ms >= 250 ? 500
                                         : s->backoff_ms * 2;
  if (weft_timer_start(&s->retry, s->backoff_ms, 0) != 0)
    return; /* loop closing */
  s->waiting_fd = true;
  s->waiter_next = s->loop->fd_waiters;
  s->loop->fd_waiters = s;
}

/* A socket closed: an fd is free, so waiting listeners retry now. */
static void kick_fd_waiters(weft_loop_t *loop) {
  for (weft_socket_t *w = loop->fd_waiters; w != NULL; w = w->waiter_next)
    (void)weft_timer_start(&w->retry, 0, 0);
}

/* ---- close ---- */

static void cancel_queue(weft_socket_t *s, net_op_t **head) {
  while (*head != NULL) {
    net_op_t *op = *head;
    op_unlink(s, op);
    struct weft_future *f = op_future(op);
    (void)weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED);
    weft__unref(f);
  }
}

static void sock_close(weft_socket_t *s) {
  if (s->closed)
    return;
  s->closed = true;
  if (s->kind == SK_STREAM && s->owner != NULL)
    owner_cut(s); /* its future no longer owns it */
  weft_loop_t *loop = s->loop;
  weft_io_stop(&s->io); /* no-op when the loop's close unlinked it */
  if (s->kind == SK_LISTEN) {
    weft_timer_stop(&s->retry);
    for (weft_socket_t **p = &loop->fd_waiters; *p != NULL;
         p = &(*p)->waiter_next) {
      if (*p == s) {
        *p = s->waiter_next;
        break;
      }
    }
  }
  if (s->ring_armed) /* its completion frees the socket (it holds it) */
    weft__ring_cancel(&loop->backend, s);
  ring_forget(s);
  close(s->fd);
  sock_hold(s);
  cancel_queue(s, &s->rhead);
  cancel_queue(s, &s->whead);
  if (!loop->in_close)
    kick_fd_waiters(loop);
  sock_drop(s);
}

int weft_socket_close(weft_socket_t *sock) {
  if (sock == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(sock->loop))
    return WEFT_EPERM;
  if (sock->connecting)
    return WEFT_EINVAL; /* its connect future owns it; cancel that */
  sock_close(sock);
  return 0;
}

/* ---- starting operations ---- */

static void op_disarm(weft__loop_op_t *base) { /* loop thread */
  net_op_t *op = (net_op_t *)base;
  weft_socket_t *s = op->sock;
  if (s == NULL)
    return; /* finished or dropped already */
  if (op->wring)
    return; /* the kernel had its bytes (a ring send): the send's
               completion says how many went, then wring_take drops it */
  op_unlink(s, op);
  weft__unref(op_future(op)); /* the queue's reference */
  if (op->kind == OP_CONNECT) {
    s->connecting = false;
    sock_close(s);
  }
}

/* The cancel hook: make the op inert before returning (see the top). */
static void op_cancel_hook(void *arg) {
  net_op_t *op = arg;
  WEFT__PERTURB();
  uint32_t old =
      atomic_fetch_or_explicit(&op->guard, GUARD_CANCEL, memory_order_acq_rel);
  if (old & GUARD_IO) /* only ever from another thread: the loop is in a */
    while (atomic_load_explicit(&op->guard, memory_order_acquire) & GUARD_IO)
      sched_yield(); /* nonblocking syscall on the buffer; it ends soon */
  weft__loop_op_cancel(&op->base);
}

/* The posted end of an owning future (owner_fini): close its socket if
 * nothing else did meanwhile. */
static void owner_task(weft_task_t *t) {
  net_op_t *op = (net_op_t *)((char *)t - offsetof(weft__loop_op_t, stop_task));
  if (op->own == OWN_HELD)
    sock_close(op->owned); /* (cuts the link) */
  op_free_mem(op);
}

/* op_fini of an accept or connect that was fulfilled: the future's last
 * reference went. If it still owns its socket, the socket closes: here on
 * the loop thread; from another thread the op goes to the loop, which
 * closes it (owner_task), or, when the loop is closing already and takes
 * no more tasks, which closes it in any case and frees the op with it
 * (owner_cut). True when the op's memory is op_fini's to take. */
static __attribute__((noinline)) bool owner_fini(net_op_t *op) {
  weft_loop_t *loop = op->base.loop;
  if (weft__tl_loop == loop) {
    if (op->own == OWN_HELD)
      sock_close(op->owned);
    return true;
  }
  pthread_mutex_lock(&owner_mu);
  bool mine = true;
  if (op->own == OWN_HELD) { /* the loop is alive: it has not cut yet */
    op->base.stop_task.run = owner_task;
    if (weft__loop_submit(loop, &op->base.stop_task) != 0)
      op->own = OWN_ORPHAN; /* closing: owner_cut frees the op */
    mine = false;
  }
  pthread_mutex_unlock(&owner_mu);
  return mine;
}

/* Operations kept per loop for reuse: enough for a burst of reads and
 * writes finishing in one batch of events; more go back to the allocator. */
enum { OP_FREE_MAX = 256 };

/* The last reference to an op went. Where that is the op's loop thread
 * (the usual case: the continuation that took the result let go of it)
 * and the loop is not closing, the op goes on the loop's list for the next
 * operation of any of its sockets: taking it back costs a few loads, and
 * its memory is still in the cache. Anywhere else it goes back to the
 * allocator. Comparing the loop pointers reads nothing of a loop that may
 * be gone; if it is this thread's loop, it is alive. */
WEFT__HOT static void op_fini(weft__ext_t *e) {
  net_op_t *op = (net_op_t *)e;
  weft_loop_t *loop = op->base.loop;
  if (__builtin_expect(op->kind == OP_ACCEPT || op->kind == OP_CONNECT, 0) &&
      !owner_fini(op))
    return; /* the loop frees it */
  if (op->base.size == sizeof(net_op_t) && weft__tl_loop == loop &&
      !loop->in_close && loop->op_nfree < OP_FREE_MAX) {
    op->next = loop->op_free;
    loop->op_free = op;
    loop->op_nfree++;
    WEFT__POISON(op, sizeof *op); /* until op_new hands it out again */
    return;
  }
  op_free_mem(op);
}

/* (Inlined into each operation's call, with start_op and op_queue: their
 * calls cost as much as their work.) */
static inline __attribute__((always_inline)) net_op_t *
op_new(weft_socket_t *s, uint8_t kind, void *buf, size_t len) {
  weft_loop_t *loop = s->loop;
  size_t size = kind == OP_SEND ? sizeof(send_op_t) : sizeof(net_op_t);
  net_op_t *op = NULL;
  if (size == sizeof(net_op_t) && loop->op_free != NULL) {
    op = loop->op_free;
    WEFT__UNPOISON(op, sizeof *op);
    loop->op_free = op->next;
    loop->op_nfree--;
  } else if ((op = op_alloc(size)) == NULL) {
    return NULL;
  }
  weft__loop_op_setup(&op->base, size, loop, op_disarm, op_fini,
                      op_cancel_hook, op);
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
  op->wring = false;
  return op;
}

/* A write to an idle stream, tried before it is queued (the usual case:
 * the socket takes it all, and the write never touches the queue). Still
 * unshared: nothing is attached, nobody can cancel it. True when it
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

/* Append op to the queue head..tail. */
static inline void op_link(net_op_t **head, net_op_t **tail, net_op_t *op) {
  if (*tail != NULL)
    (*tail)->next = op;
  else
    *head = op;
  *tail = op;
}

/* Queue op and try it at once if its direction is ready and idle. */
static inline __attribute__((always_inline)) weft_future_t *
op_queue(weft_socket_t *s, net_op_t *op) {
  net_op_t **head = queue_head(s, op);
  net_op_t **tail = head == &s->rhead ? &s->rtail : &s->wtail;
  bool idle = *head == NULL;
  op_link(head, tail, op);
  if (idle && head == &s->rhead)
    s->loop->readers++; /* see SPIN_READERS_MAX in loop.c */
  if (idle && !(head == &s->rhead && stream_read_waits(s))) {
    sock_hold(s);
    if (head == &s->rhead)
      run_reads(s);
    else
      run_writes(s);
    sock_drop(s);
  } else if (head == &s->rhead) {
    ring_want(s);
  }
  /* Still alive (the caller's handle), and from here any thread may get
   * hold of its future. */
  op->unshared = false;
  return op_future(op);
}

/* Queue a write (op_queue for OP_WRITE). With a ring it is queued and
 * sent at the loop's next wait (run_writes, wring_arm); on plain epoll, on
 * an idle stream it is tried first (write_now), and in the usual case
 * never queued. */
static int write_queue(weft_socket_t *s, net_op_t *op, weft_future_t **out) {
  if (s->ring && op->len != 0) { /* the ring sends it (run_writes) */
    s->wqueued += op->len;
    *out = op_queue(s, op);
    return 0;
  }
  if (!(s->whead == NULL && write_now(s, op))) {
    /* behind others, or write_now sent what the socket took: wait */
    op_link(&s->whead, &s->wtail, op);
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

/* The usual weft_read and weft_write find a free op at hand, and make no
 * call before their last (so no frame to set up); anything else (an
 * error to report, an allocation, a read to try now) takes start_op. */
static inline bool op_at_hand(const weft_socket_t *s, const void *buf,
                              weft_future_t **out) {
  return check_sock(s) == 0 && out != NULL && buf != NULL &&
         s->kind == SK_STREAM && !s->connecting && s->loop->op_free != NULL;
}

static __attribute__((noinline)) int read_start(weft_socket_t *s, void *buf,
                                                size_t len,
                                                weft_future_t **out) {
  return start_op(s, OP_READ, SK_STREAM, buf, len, out);
}

WEFT__HOT int weft_read(weft_socket_t *sock, void *buf, size_t len,
                        weft_future_t **out) {
  if (!op_at_hand(sock, buf, out) || len == 0 || sock->rhead != NULL ||
      !stream_read_waits(sock))
    return read_start(sock, buf, len, out);
  net_op_t *op = op_new(sock, OP_READ, buf, len);
  sock->rhead = sock->rtail = op; /* to wait for readiness */
  sock->loop->readers++;
  ring_want(sock);
  op->unshared = false;
  *out = op_future(op);
  return 0;
}

int weft_read_exactly(weft_socket_t *sock, void *buf, size_t len,
                      weft_future_t **out) {
  return start_op(sock, OP_READ_EXACT, SK_STREAM, buf, len, out);
}

static __attribute__((noinline)) int write_start(weft_socket_t *s,
                                                 const void *buf, size_t len,
                                                 weft_future_t **out) {
  return start_op(s, OP_WRITE, SK_STREAM, (void *)buf, len, out);
}

WEFT__HOT int weft_write(weft_socket_t *sock, const void *buf, size_t len,
                         weft_future_t **out) {
  if (!op_at_hand(sock, buf, out))
    return write_start(sock, buf, len, out);
  return write_queue(sock, op_new(sock, OP_WRITE, (void *)buf, len), out);
}

int weft_shutdown(weft_socket_t *sock, weft_future_t **out) {
  return start_op(sock, OP_SHUTDOWN, SK_STREAM, NULL, 0, out);
}

int weft_accept(weft_socket_t *listener, weft_future_t **out) {
  return start_op(listener, OP_ACCEPT, SK_LISTEN, NULL, 0, out);
}

int weft_socket_take(weft_future_t *f, weft_socket_t **out) {
  if (f == NULL || out == NULL)
    return WEFT_EINVAL;
  struct weft_future *st = f;
  uint32_t w = atomic_load_explicit(&st->word, memory_order_acquire);
  if (weft__kind(w) != WEFT__K_EXT || ((weft__ext_t *)st)->fini != op_fini)
    return WEFT_EINVAL;
  net_op_t *op = (net_op_t *)st;
  if (op->kind != OP_ACCEPT && op->kind != OP_CONNECT)
    return WEFT_EINVAL;
  if (!weft__loop_owned(op->base.loop))
    return WEFT_EPERM;
  int err = weft_future_error(f);
  if (err != 0)
    return err; /* pending, rejected or cancelled */
  switch (op->own) {
  case OWN_HELD:
    break;
  case OWN_TAKEN:
    return WEFT_EALREADY;
  default:
    return WEFT_ESHUTDOWN; /* closed through the borrowed pointer */
  }
  /* (The caller's handle keeps op_fini away: no lock needed.) */
  weft_socket_t *s = op->owned;
  op->owned = NULL;
  op->own = OWN_TAKEN;
  s->owner = NULL;
  *out = s;
  return 0;
}

size_t weft_socket_write_queued(const weft_socket_t *sock) {
  return sock == NULL ? 0 : sock->wqueued;
}

int weft_udp_recv(weft_socket_t *sock, void *buf, size_t len, weft_addr_t *from,
                  weft_future_t **out) {
  int rc = check_sock(sock);
  if (rc != 0)
    return rc;
  if (out == NULL || buf == NULL || len == 0 || sock->kind != SK_DGRAM)
    return WEFT_EINVAL;
  net_op_t *op = op_new(sock, OP_RECV, buf, len);
  if (op == NULL)
    return WEFT_ENOMEM;
  op->from = from;
  *out = op_queue(sock, op);
  return 0;
}

int weft_udp_send(weft_socket_t *sock, const void *buf, size_t len,
                  const weft_addr_t *to, weft_future_t **out) {
  int rc = check_sock(sock);
  if (rc != 0)
    return rc;
  if (out == NULL || (buf == NULL && len != 0) || !addr_ok(to) ||
      sock->kind != SK_DGRAM)
    return WEFT_EINVAL;
  net_op_t *op = op_new(sock, OP_SEND, (void *)buf, len);
  if (op == NULL)
    return WEFT_ENOMEM;
  ((send_op_t *)op)->to = *to;
  *out = op_queue(sock, op);
  return 0;
}

/* ---- creating sockets ---- */

static int check_loop(weft_loop_t *loop, const weft_addr_t *addr,
                      weft_socket_t **out_sock, weft_future_t **out_fut) {
  if (loop == NULL || !addr_ok(addr) || (out_sock == NULL && out_fut == NULL))
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  return loop->closing ? WEFT_ESHUTDOWN : 0;
}

static int bind_new(weft_loop_t *loop, const weft_addr_t *addr, int type,
                    int backlog, uint8_t kind, weft_socket_t **out) {
  int fd = new_fd(addr->ss.ss_family, type);
  if (fd < 0)
    return fd;
  int one = 1;
  if (addr->ss.ss_family != AF_UNIX && type == SOCK_STREAM)
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (WEFT__SYS("bind",
                bind(fd, (const struct sockaddr *)&addr->ss, addr->len)) != 0 ||
      (type == SOCK_STREAM &&
       WEFT__SYS("listen",
                 listen(fd, backlog <= 0 ? SOMAXCONN : backlog)) != 0)) {
    int rc = io_err(errno);
    close(fd);
    return rc;
  }
  weft_socket_t *s;
  int rc = sock_wrap(loop, fd, kind, &s);
  if (rc != 0)
    return rc;
  if (kind == SK_LISTEN)
    weft_timer_init(loop, &s->retry, retry_due, s);
  *out = s;
  return 0;
}

int weft_listen(weft_loop_t *loop, const weft_addr_t *addr, int backlog,
                weft_socket_t **out) {
  int rc = check_loop(loop, addr, out, NULL);
  return rc != 0 ? rc : bind_new(loop, addr, SOCK_STREAM, backlog, SK_LISTEN, out);
}

int weft_udp_bind(weft_loop_t *loop, const weft_addr_t *addr,
                  weft_socket_t **out) {
  int rc = check_loop(loop, addr, out, NULL);
  if (rc == 0 && addr->ss.ss_family == AF_UNIX)
    rc = WEFT_EINVAL;
  return rc != 0 ? rc : bind_new(loop, addr, SOCK_DGRAM, 0, SK_DGRAM, out);
}

int weft_connect(weft_loop_t *loop, const weft_addr_t *addr,
                 weft_future_t **out) {
  int rc = check_loop(loop, addr, NULL, out);
  if (rc != 0)
    return rc;
  int fd = new_fd(addr->ss.ss_family, SOCK_STREAM);
  if (fd < 0)
    return fd;
  int cr;
  do
    cr = WEFT__SYS("connect",
                   connect(fd, (const struct sockaddr *)&addr->ss, addr->len));
  while (cr != 0 && errno == EINTR);
  int cerr = cr == 0 ? 0 : errno;
  weft_socket_t *s;
  rc = sock_wrap(loop, fd, SK_STREAM, &s);
  if (rc != 0)
    return rc;
  net_op_t *op = op_new(s, OP_CONNECT, NULL, 0);
  if (op == NULL) {
    sock_close(s);
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
    sock_close(s);
    struct weft_future *f = op_future(op);
    (void)weft__settle_int(f, WEFT_REJECTED, 0, io_err(cerr));
    weft__unref(f);
    *out = f;
    return 0;
  }
  *out = op_queue(s, op);
  return 0;
}

/* ---- any socket ---- */

static int check_any(const weft_socket_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(s->loop))
    return WEFT_EPERM;
  return s->closed ? WEFT_EINVAL : 0;
}

/* weft_socket_local/peer: one of getsockname/getpeername into *out. */
static int sock_name(const weft_socket_t *sock, weft_addr_t *out,
                     int (*get)(int, struct sockaddr *, socklen_t *)) {
  int rc = check_any(sock);
  if (rc != 0 || out == NULL)
    return rc != 0 ? rc : WEFT_EINVAL;
  memset(out, 0, sizeof *out);
  out->len = sizeof out->ss;
  if (get(sock->fd, (struct sockaddr *)&out->ss, &out->len) != 0)
    return io_err(errno);
  return 0;
}

int weft_socket_local(const weft_socket_t *sock, weft_addr_t *out) {
  return sock_name(sock, out, getsockname);
}

int weft_socket_peer(const weft_socket_t *sock, weft_addr_t *out) {
  return sock_name(sock, out, getpeername);
}

int weft_socket_fd(const weft_socket_t *sock) {
  return sock == NULL || sock->closed ? -1 : sock->fd;
}

int weft_socket_nodelay(weft_socket_t *sock, int on) {
  int rc = check_any(sock);
  if (rc != 0)
    return rc;
  if (sock->kind != SK_STREAM)
    return WEFT_EINVAL;
  int v = on ? 1 : 0;
  return WEFT__SYS("setsockopt", setsockopt(sock->fd, IPPROTO_TCP,
                                            TCP_NODELAY, &v, sizeof v)) == 0
             ? 0
             : io_err(errno);
}

_Static_assert(sizeof(net_op_t) + LINE <= 256,
               "socket ops fit the allocator's small-block cache");
_Static_assert(sizeof(net_op_t) <= 3 * LINE,
               "an op is three lines (weft__net_prefetch)");
