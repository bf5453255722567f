/* SPDX-License-Identifier: MIT */
/* loop/net/socket.c: socket memory (slabs), wrapping an fd, close, the
 * calls any socket takes, and the hooks the loop calls (prefetch, close). */
#define _GNU_SOURCE
#include "internal.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int weft__new_fd(int family, int type) {
  int fd = WEFT__SYS("socket",
                     socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  return fd < 0 ? weft_error_from_errno(errno) : fd;
}

/* ---- socket memory ----
 *
 * Sockets of a loop come from slabs of SLAB_SOCKS, so the state of a
 * thousand connections sits in a few dozen pages instead of one page each
 * (docs/design/net.md). The slabs with a free slot are kept at the front
 * of the loop's list; an empty slab is freed unless it is the only one.
 * Under AddressSanitizer the slabs stay on: a free slot is poisoned until
 * handed out again, so a use after close is reported. Finished operations
 * are kept for reuse, poisoned the same way (weft__op_fini). */
enum { SLAB_SOCKS = 32, SOCK_CELL = 256 };

/* A socket on its own four cache lines. */
typedef union sock_cell {
  weft_socket_t s;
  char lines[SOCK_CELL];
} sock_cell_t;
_Static_assert(sizeof(weft_socket_t) <= SOCK_CELL, "socket outgrew its cell");

typedef struct sock_slab {
  sock_cell_t cells[SLAB_SOCKS]; /* first: the slab is line-aligned */
  struct sock_slab *prev, *next; /* net_of(loop)->sock_slabs */
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
    net_of(loop)->sock_slabs = sl->next;
  if (sl->next != NULL)
    sl->next->prev = sl->prev;
  sl->prev = sl->next = NULL;
}

static void slab_push_front(weft_loop_t *loop, sock_slab_t *sl) {
  sl->prev = NULL;
  sl->next = net_of(loop)->sock_slabs;
  if (sl->next != NULL)
    sl->next->prev = sl;
  net_of(loop)->sock_slabs = sl;
}

static void slab_push_back(weft_loop_t *loop, sock_slab_t *sl) {
  sock_slab_t *last = net_of(loop)->sock_slabs;
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
  sock_slab_t *sl = net_of(loop)->sock_slabs;
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

void weft__sock_dealloc(weft_loop_t *loop, weft_socket_t *s) {
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
net_op_t *weft__op_alloc(size_t size) {
  char *mem = weft__malloc(size + LINE);
  if (mem == NULL)
    return NULL;
  net_op_t *op = (net_op_t *)(((uintptr_t)mem + LINE - 1) &
                              ~(uintptr_t)(LINE - 1));
  op->shift = (uint8_t)((char *)op - mem);
  return op;
}

void weft__op_free_mem(net_op_t *op) {
  weft__free((char *)op - op->shift, op->base.size + LINE);
}

/* The loop's flush hook: run the writes of the streams on the flush list
 * (see write_queue in stream.c). */
static void net_flush(weft_loop_t *loop) {
  weft_socket_t *s = net_of(loop)->flush;
  net_of(loop)->flush = NULL;
  while (s != NULL && s != FLUSH_END) {
    weft_socket_t *next = s->flush_next;
    s->flush_next = NULL;
    if (s->whead != NULL && !s->closed)
      weft__run_writes(s);
    sock_drop(s); /* flush_soon's hold */
    s = next;
  }
}

/* The loop's close hook: after every socket was closed. */
static void net_close(weft_loop_t *loop) {
  net_flush(loop); /* only drops what it holds: every socket is closed */
  while (net_of(loop)->close_socks != NULL) {
    weft_socket_t *s = net_of(loop)->close_socks;
    net_of(loop)->close_socks = s->waiter_next;
    weft__sock_dealloc(loop, s);
  }
  while (net_of(loop)->op_free != NULL) {
    net_op_t *op = net_of(loop)->op_free;
    WEFT__UNPOISON(op, sizeof *op);
    net_of(loop)->op_free = op->next;
    weft__op_free_mem(op);
  }
  net_of(loop)->op_nfree = 0;
  while (net_of(loop)->sock_slabs != NULL) {
    sock_slab_t *sl = net_of(loop)->sock_slabs;
    slab_unlink(loop, sl);
    /* live is 0: sockets never outlive close */
    weft__free(sl->mem, SLAB_BLOCK);
  }
}

static void net_prefetch(weft_io_t *io, int ahead);
static const weft__loop_module_t net_module = {net_prefetch, net_close,
                                               net_flush};

/* Wrap fd (closed on failure) in a registered socket. */
int weft__sock_wrap(weft_loop_t *loop, int fd, uint8_t kind,
                    weft_socket_t **out) {
  if (loop->module == NULL) /* before any allocation: close frees it */
    loop->module = &net_module;
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
  /* A stream on a loop with completions reads through them: readiness
   * is watched for its write side only (and errors), so a byte that
   * arrives wakes one of the two, not both. */
  s->cq = kind == SK_STREAM && weft__loop_completes(loop);
  int rc = weft__io_start(loop, &s->io, fd,
                          (s->cq ? 0 : WEFT_READABLE) | WEFT_WRITABLE |
                              WEFT__EDGE,
                          weft__sock_event, s);
  if (rc != 0) {
    close(fd);
    weft__sock_dealloc(loop, s);
    return rc;
  }
  s->io.priv_events |= s->cq ? WEFT__DONE : WEFT__HUP;
  if (s->cq) {
    s->rc.ops = &weft__sock_rc_ops;
    s->wc.ops = &weft__sock_wc_ops;
  }
  *out = s;
  return 0;
}

void weft__sock_free(weft_socket_t *s) {
  if (s->kind != SK_LISTEN) {
    if (s->spill != NULL)
      weft__free(s->spill, s->spill_len);
    s->spill = NULL;
  } else {
    for (unsigned i = 0; i < s->nspare; i++)
      close(s->spare_fds[i]);
    if (s->spare_fds != NULL)
      weft__free(s->spare_fds, s->spare_cap * sizeof(int));
    s->spare_fds = NULL;
    s->nspare = 0;
  }
  weft__dl_free(s);
  weft_loop_t *loop = s->loop;
  if (loop->in_close) { /* the continuations close runs may still name it */
    s->waiter_next =
        net_of(loop)->close_socks; /* (closed: no other list has it) */
    net_of(loop)->close_socks = s;
    return;
  }
  weft__sock_dealloc(loop, s);
}

/* The loop's prefetch hook, for the watcher of an event `ahead` events
 * from now. Two events ahead: if it is a socket, start loading its first
 * queued operation (all of its lines: the future's header and the op's
 * fields). One event ahead (the op is in cache by then): the first line of
 * the buffer a queued read receives into, which the kernel's copy would
 * otherwise miss on, one connection after another. Touches nothing. */
WEFT__HOT static void net_prefetch(weft_io_t *io, int ahead) {
  if (io->priv_fn != weft__sock_event)
    return;
  weft_socket_t *s = (weft_socket_t *)io;
  if (ahead == 1) {
    net_op_t *op = s->rhead;
    if (op != NULL && op->buf != NULL)
      __builtin_prefetch(op->buf + op->done, 1);
    return;
  }
  net_op_t *op = s->rhead != NULL ? s->rhead : s->whead;
  if (op != NULL) { /* its three lines (weft__op_alloc) */
    __builtin_prefetch(op, 1);
    __builtin_prefetch((char *)op + LINE, 1);
    __builtin_prefetch((char *)op + 2 * LINE, 1);
  }
}

static void cancel_queue(weft_socket_t *s, net_op_t **head) {
  while (*head != NULL) {
    net_op_t *op = *head;
    op_unlink(s, op);
    struct weft_future *f = op_future(op);
    (void)weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED);
    weft__unref(f);
  }
}

void weft__sock_close(weft_socket_t *s) {
  if (s->closed)
    return;
  s->closed = true;
  if (s->kind == SK_STREAM && s->owner != NULL)
    weft__owner_cut(s); /* its future no longer owns it */
  weft_loop_t *loop = s->loop;
  weft_io_stop(&s->io); /* no-op when the loop's close unlinked it */
  if (s->kind == SK_LISTEN) {
    weft_timer_stop(&s->retry);
    for (weft_socket_t **p = &net_of(loop)->fd_waiters; *p != NULL;
         p = &(*p)->waiter_next) {
      if (*p == s) {
        *p = s->waiter_next;
        break;
      }
    }
  }
  weft__dl_stop(s);
  if (s->cq_armed) /* its completion frees the socket (it holds it) */
    weft__loop_cancel(loop, &s->rc);
  weft__cq_forget(s);
  close(s->fd);
  sock_hold(s);
  cancel_queue(s, &s->rhead);
  cancel_queue(s, &s->whead);
  if (!loop->in_close)
    weft__kick_fd_waiters(loop);
  sock_drop(s);
}

int weft_socket_close(weft_socket_t *sock) {
  if (sock == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(sock->loop))
    return WEFT_EPERM;
  if (sock->connecting)
    return WEFT_EINVAL; /* its connect future owns it; cancel that */
  weft__sock_close(sock);
  return 0;
}

size_t weft_socket_write_queued(const weft_socket_t *sock) {
  return sock == NULL ? 0 : sock->wqueued;
}

static int check_any(const weft_socket_t *s) {
  if (s == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(s->loop))
    return WEFT_EPERM;
  return s->closed ? WEFT_EINVAL : 0;
}

/* weft_socket_local_addr/peer: one of getsockname/getpeername into *out. */
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

int weft_socket_local_addr(const weft_socket_t *sock, weft_addr_t *out) {
  return sock_name(sock, out, getsockname);
}

int weft_socket_peer_addr(const weft_socket_t *sock, weft_addr_t *out) {
  return sock_name(sock, out, getpeername);
}

int weft_socket_fd(const weft_socket_t *sock) {
  return sock == NULL || sock->closed ? -1 : sock->fd;
}

int weft_socket_set_nodelay(weft_socket_t *sock, bool on) {
  int rc = check_any(sock);
  if (rc != 0)
    return rc;
  if (sock->kind != SK_STREAM)
    return WEFT_EINVAL;
  int v = on ? 1 : 0;
  return WEFT__SYS("setsockopt", setsockopt(sock->fd, IPPROTO_TCP, TCP_NODELAY,
                                            &v, sizeof v)) == 0
             ? 0
             : io_err(errno);
}
