/* SPDX-License-Identifier: MIT */
/* loop/io.c: watchers on users' fds, and signals through a signalfd (as
 * callbacks and as futures). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* ---- fd watchers ---- */

static bool good_mask(unsigned events) {
  return events != 0 &&
         (events & ~(unsigned)(WEFT_READABLE | WEFT_WRITABLE)) == 0;
}

static void count_watchers(weft_loop_t *loop, int delta) {
  unsigned n = atomic_load_explicit(&loop->watchers_active,
                                    memory_order_relaxed);
  atomic_store_explicit(&loop->watchers_active, n + (unsigned)delta,
                        memory_order_relaxed);
}

/* Is io active, on loop or on another live loop? A handle never started
 * may hold anything, so its fields only say where to look: loop's list
 * (long, with many sockets) is walked only for a handle that claims to be
 * active on this loop, that is, practically only for a second start; one
 * that claims another loop is believed if that loop is alive (its list is
 * another thread's to read). */
static bool io_linked(const weft_loop_t *loop, const weft_io_t *io) {
  if (io->priv_events == 0 || io->priv_loop == NULL)
    return false;
  if (io->priv_loop != loop) /* active on another loop (stop clears events) */
    return weft__loop_live(io->priv_loop);
  for (const weft_io_t *w = loop->watchers; w != NULL; w = w->priv_next)
    if (w == io)
      return true;
  return false;
}

int weft_io_start(weft_loop_t *loop, weft_io_t *io, int fd, unsigned events,
                  weft_io_fn fn, void *arg) {
  if (loop == NULL || io == NULL || fn == NULL || fd < 0 || !good_mask(events))
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (io_linked(loop, io)) /* linking it again would corrupt the list */
    return WEFT_EINVAL;
  return weft__io_start(loop, io, fd, events, fn, arg);
}

int weft__io_start(weft_loop_t *loop, weft_io_t *io, int fd, unsigned events,
                   weft_io_fn fn, void *arg) {
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  int rc = loop->ops->add(&loop->backend, fd, events, io);
  if (rc != 0)
    return rc;
  io->priv_loop = loop;
  io->priv_fn = fn;
  io->priv_arg = arg;
  io->priv_fd = fd;
  io->priv_events = events & (WEFT_READABLE | WEFT_WRITABLE);
  io->priv_prev = NULL;
  io->priv_next = loop->watchers;
  if (loop->watchers != NULL)
    loop->watchers->priv_prev = io;
  loop->watchers = io;
  count_watchers(loop, 1);
  return 0;
}

static bool io_active(const weft_io_t *io) {
  return io->priv_loop != NULL && io->priv_events != 0;
}

int weft_io_modify(weft_io_t *io, unsigned events) {
  if (io == NULL || !io_active(io) || !good_mask(events))
    return WEFT_EINVAL;
  weft_loop_t *loop = io->priv_loop;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  int rc = weft__io_modify(io, events);
  if (rc == 0)
    io->priv_events = events;
  return rc;
}

static void io_unlink(weft_loop_t *loop, weft_io_t *io) {
  /* The fd may be closed already (epoll then forgot it): ignore errors. */
  (void)loop->ops->remove(&loop->backend, io->priv_fd);
  if (io->priv_prev != NULL)
    io->priv_prev->priv_next = io->priv_next;
  else
    loop->watchers = io->priv_next;
  if (io->priv_next != NULL)
    io->priv_next->priv_prev = io->priv_prev;
  io->priv_prev = io->priv_next = NULL;
  io->priv_events = 0;
  count_watchers(loop, -1);
  /* Events of this batch not yet dispatched must not reach it. */
  for (int i = loop->ev_index + 1; i < loop->nevents; i++)
    if (loop->events[i].data == io)
      loop->events[i].data = NULL;
}

int weft_io_stop(weft_io_t *io) {
  if (io == NULL)
    return WEFT_EINVAL;
  if (!io_active(io))
    return 0;
  if (!weft__loop_owned(io->priv_loop))
    return WEFT_EPERM;
  io_unlink(io->priv_loop, io);
  return 0;
}

void weft__io_close(weft_loop_t *loop) {
  while (loop->watchers != NULL) {
    weft_io_t *io = loop->watchers;
    io_unlink(loop, io);
    weft__loop_count(&loop->callbacks);
    io->priv_fn(io, 0, WEFT_ECANCELED, io->priv_arg);
  }
}

/* ---- signals ---- */

static int signal_mask_update(weft_loop_t *loop, int extra) {
  sigset_t set;
  sigemptyset(&set);
  for (weft_signal_t *s = loop->signals; s != NULL; s = s->priv_next)
    sigaddset(&set, s->priv_signum);
  if (extra > 0)
    sigaddset(&set, extra);
  if (loop->sig_fd < 0) {
    int fd = WEFT__SYS("signalfd",
                       signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (fd < 0)
      return weft_error_from_errno(errno);
    int rc = loop->ops->add(&loop->backend, fd, WEFT_READABLE, &weft__sig_mark);
    if (rc != 0) {
      close(fd);
      return rc;
    }
    loop->sig_fd = fd;
    return 0;
  }
  return signalfd(loop->sig_fd, &set, 0) < 0 ? weft_error_from_errno(errno) : 0;
}

/* Is sig one of loop's active handlers? The list is walked (a loop has
 * few handlers) rather than trusting the fields of a handle that may
 * never have been initialised. */
/* Is sig active, on loop (in its list) or on another live loop? As for a
 * watcher (io_linked), a handle never started may hold anything: a claim
 * to another loop is believed only if that loop is alive, and stop clears
 * priv_active. */
static bool signal_linked(const weft_loop_t *loop, const weft_signal_t *sig) {
  if (sig->priv_active == 1 && sig->priv_loop != loop && sig->priv_loop != NULL)
    return weft__loop_live(sig->priv_loop);
  for (const weft_signal_t *s = loop->signals; s != NULL; s = s->priv_next)
    if (s == sig)
      return true;
  return false;
}

int weft_signal_start(weft_loop_t *loop, weft_signal_t *sig, int signum,
                      weft_signal_fn fn, void *arg) {
  if (loop == NULL || sig == NULL || fn == NULL || signum <= 0 ||
      signum >= NSIG || signum == SIGKILL || signum == SIGSTOP)
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  /* linking an active handler again would close the list into a loop
   * (every later walk of it would spin) */
  if (signal_linked(loop, sig))
    return WEFT_EINVAL;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  sigset_t one, old;
  sigemptyset(&one);
  sigaddset(&one, signum);
  int rc = pthread_sigmask(SIG_BLOCK, &one, &old);
  if (rc != 0)
    return weft_error_from_errno(rc);
  rc = signal_mask_update(loop, signum);
  if (rc != 0) {
    if (!sigismember(&old, signum)) /* leave the mask as we found it */
      pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    return rc;
  }
  sig->priv_loop = loop;
  sig->priv_fn = fn;
  sig->priv_arg = arg;
  sig->priv_signum = signum;
  sig->priv_active = 1;
  sig->priv_prev = NULL;
  sig->priv_next = loop->signals;
  if (loop->signals != NULL)
    loop->signals->priv_prev = sig;
  loop->signals = sig;
  return 0;
}

static void signal_unlink(weft_loop_t *loop, weft_signal_t *sig) {
  if (loop->sig_iter_next == sig)
    loop->sig_iter_next = sig->priv_next;
  if (sig->priv_prev != NULL)
    sig->priv_prev->priv_next = sig->priv_next;
  else
    loop->signals = sig->priv_next;
  if (sig->priv_next != NULL)
    sig->priv_next->priv_prev = sig->priv_prev;
  sig->priv_prev = sig->priv_next = NULL;
  sig->priv_active = 0;
}

int weft_signal_stop(weft_signal_t *sig) {
  if (sig == NULL)
    return WEFT_EINVAL;
  if (!sig->priv_active)
    return 0;
  weft_loop_t *loop = sig->priv_loop;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  signal_unlink(loop, sig);
  (void)signal_mask_update(loop, 0); /* shrinking the mask cannot fail */
  return 0;
}

void weft__signal_dispatch(weft_loop_t *loop) {
  struct signalfd_siginfo si;
  for (;;) {
    ssize_t n = WEFT__SYS("read", read(loop->sig_fd, &si, sizeof si));
    if (n != (ssize_t)sizeof si) {
      if (n < 0 && errno == EINTR)
        continue;
      return; /* EAGAIN: all read */
    }
    int signum = (int)si.ssi_signo;
    for (weft_signal_t *s = loop->signals; s != NULL; s = loop->sig_iter_next) {
      loop->sig_iter_next = s->priv_next; /* stop() fixes it up */
      if (s->priv_signum != signum)
        continue;
      weft_signal_fn fn = s->priv_fn;
      int64_t t0 = weft__loop_cb_begin(loop);
      fn(s, signum, 0, s->priv_arg);
      weft__loop_cb_end(loop, "signal", (weft__anyfn)fn, t0);
    }
    loop->sig_iter_next = NULL;
  }
}

void weft__signal_close(weft_loop_t *loop) {
  while (loop->signals != NULL) {
    weft_signal_t *s = loop->signals;
    signal_unlink(loop, s);
    weft__loop_count(&loop->callbacks);
    s->priv_fn(s, 0, WEFT_ECANCELED, s->priv_arg);
  }
  if (loop->sig_fd >= 0) {
    (void)loop->ops->remove(&loop->backend, loop->sig_fd);
    close(loop->sig_fd);
    loop->sig_fd = -1;
  }
}

/* ---- a signal as a future ---- */

typedef struct signal_op {
  weft__loop_op_t op; /* the future; its source is the handler */
  weft_signal_t sig;
} signal_op_t;

static void signal_op_fire(weft_signal_t *sig, int signum, int status,
                           void *arg) {
  signal_op_t *op = arg;
  struct weft_future *f = &op->op.ext.base;
  if (status == 0) {
    weft_signal_stop(sig);
    (void)weft__settle_int(f, WEFT_FULFILLED, signum, 0);
  } else { /* close: the handler is already unlinked */
    (void)weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED);
  }
  weft__unref(f); /* the handler's reference */
}

static void signal_op_disarm(weft__loop_op_t *base) {
  signal_op_t *op = (signal_op_t *)base;
  if (op->sig.priv_active) {
    weft_signal_stop(&op->sig);
    weft__unref(&base->ext.base);
  }
}

int weft_signal_next(weft_loop_t *loop, int signum, weft_future_t **out) {
  if (loop == NULL || out == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  signal_op_t *op = weft__malloc(sizeof *op);
  if (op == NULL)
    return WEFT_ENOMEM;
  weft__loop_op_init(&op->op, sizeof *op, loop, signal_op_disarm);
  op->sig.priv_active = 0;
  int rc = weft_signal_start(loop, &op->sig, signum, signal_op_fire, op);
  if (rc != 0) {
    weft__free(op, sizeof *op);
    return rc;
  }
  *out = &op->op.ext.base;
  return 0;
}
