/* SPDX-License-Identifier: MIT */
/* loop/net/op.c: an operation's future: unlinking, cancel from any thread,
 * reuse of finished operations, sockets that accept and connect futures
 * own, and what a cancelled operation leaves for the next. */
#define _GNU_SOURCE
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* Unlink op from the middle of a queue (a cancelled op). */
void weft__op_unlink_inner(net_op_t **head, net_op_t **tail, net_op_t *op) {
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

/* ---- sockets futures own ----
 *
 * A fulfilled accept or connect future owns its socket until the user
 * takes it (weft_socket_take): op->owned and s->owner link the two. The
 * link is cut when the socket is taken, or closed (by its user through the
 * borrowed pointer, or by the loop's close: weft__owner_cut), or when the
 * future's last reference goes (weft__op_fini), which closes the socket. That
 * last reference may go on any thread, and closing is the loop thread's:
 * elsewhere weft__op_fini hands the op to the loop (owner_post). owner_mu orders
 * such a thread against the loop cutting the link, and the link keeps the
 * loop alive: the loop cuts every link (closing every socket) before it
 * frees itself. s->owner is the loop thread's alone; op->owned and op->own
 * are the loop thread's while the future has a handle, and under owner_mu
 * once the loop may meet weft__op_fini of another thread. */
static pthread_mutex_t owner_mu = PTHREAD_MUTEX_INITIALIZER;

/* The value's destructor does nothing: weft__op_fini closes the socket (the op
 * knows whether it still owns it). Having one makes the value owned, so a
 * future that follows this one borrows it and keeps this one alive. */
static void owned_value(void *sock) { (void)sock; }

/* Publish the claimed accept or connect op that brings sock: the future
 * owns sock from now on. */
void weft__op_publish_owned(weft_socket_t *s, net_op_t *op,
                            weft_socket_t *sock) {
  op->owned = sock;
  op->own = OWN_HELD;
  sock->owner = op;
  weft__ext_value_ptr(op_future(op), sock, owned_value);
  op_publish_value(s, op);
}

/* Loop thread: s (linked) is closing. An op that was orphaned goes now. */
__attribute__((noinline, cold)) void weft__owner_cut(weft_socket_t *s) {
  pthread_mutex_lock(&owner_mu);
  net_op_t *op = s->owner;
  bool orphan = op->own == OWN_ORPHAN;
  op->owned = NULL;
  op->own = OWN_CLOSED;
  s->owner = NULL;
  pthread_mutex_unlock(&owner_mu);
  if (orphan)
    weft__op_free_mem(op);
}

/* `front`: the bytes came before what the spill holds (a cancelled read's,
 * which it may have taken from the spill), else after. */
void weft__spill_keep(weft_socket_t *s, const char *data, size_t n,
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

void weft__keep_fd(weft_socket_t *s, int fd) {
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

void weft__op_disarm(weft__loop_op_t *base) { /* loop thread */
  net_op_t *op = (net_op_t *)base;
  weft_socket_t *s = op->sock;
  if (s == NULL)
    return; /* finished or dropped already */
  if (op->wcq)
    /* the kernel had its bytes (a completion send): the send's completion
     * says how many went, then weft__wcq_take drops it */
    return;
  op_unlink(s, op);
  weft__unref(op_future(op)); /* the queue's reference */
  if (op->kind == OP_CONNECT) {
    s->connecting = false;
    weft__sock_close(s);
  }
}

/* The cancel hook: make the op inert before returning (see the top). */
void weft__op_cancel_hook(void *arg) {
  net_op_t *op = arg;
  WEFT__PERTURB();
  uint32_t old = atomic_fetch_or_explicit(&op->guard, GUARD_CANCEL,
                                          memory_order_acq_rel);
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
    weft__sock_close(op->owned); /* (cuts the link) */
  weft__op_free_mem(op);
}

/* weft__op_fini of an accept or connect that was fulfilled: the future's last
 * reference went. If it still owns its socket, the socket closes: here on
 * the loop thread; from another thread the op goes to the loop, which
 * closes it (owner_task), or, when the loop is closing already and takes
 * no more tasks, which closes it in any case and frees the op with it
 * (weft__owner_cut). True when the op's memory is weft__op_fini's to take. */
static __attribute__((noinline)) bool owner_fini(net_op_t *op) {
  weft_loop_t *loop = op->base.loop;
  if (weft__tl_loop == loop) {
    if (op->own == OWN_HELD)
      weft__sock_close(op->owned);
    return true;
  }
  pthread_mutex_lock(&owner_mu);
  bool mine = true;
  if (op->own == OWN_HELD) { /* the loop is alive: it has not cut yet */
    op->base.stop_task.run = owner_task;
    if (weft__loop_submit(loop, &op->base.stop_task) != 0)
      op->own = OWN_ORPHAN; /* closing: weft__owner_cut frees the op */
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
WEFT__HOT void weft__op_fini(weft__ext_t *e) {
  net_op_t *op = (net_op_t *)e;
  weft_loop_t *loop = op->base.loop;
  if (__builtin_expect(op->kind == OP_ACCEPT || op->kind == OP_CONNECT, 0) &&
      !owner_fini(op))
    return; /* the loop frees it */
  if (op->base.size == sizeof(net_op_t) && weft__tl_loop == loop &&
      !loop->in_close && net_of(loop)->op_nfree < OP_FREE_MAX) {
    op->next = net_of(loop)->op_free;
    net_of(loop)->op_free = op;
    net_of(loop)->op_nfree++;
    WEFT__POISON(op, sizeof *op); /* until op_new hands it out again */
    return;
  }
  weft__op_free_mem(op);
}

int weft_socket_take(weft_future_t *f, weft_socket_t **out) {
  if (f == NULL || out == NULL)
    return WEFT_EINVAL;
  struct weft_future *st = f;
  uint32_t w = atomic_load_explicit(&st->word, memory_order_acquire);
  if (weft__kind(w) != WEFT__K_EXT ||
      ((weft__ext_t *)st)->fini != weft__op_fini)
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
  /* (The caller's handle keeps weft__op_fini away: no lock needed.) */
  weft_socket_t *s = op->owned;
  op->owned = NULL;
  op->own = OWN_TAKEN;
  s->owner = NULL;
  *out = s;
  return 0;
}
