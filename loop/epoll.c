/* SPDX-License-Identifier: MIT */
/* loop/epoll.c: the epoll backend. It only translates: registrations to
 * epoll_ctl, kernel events to weft__event_t. Level-triggered, or edge-triggered
 * for registrations with WEFT__EDGE (sockets). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint32_t to_epoll(unsigned events) {
  return ((events & WEFT_READABLE) ? EPOLLIN | EPOLLRDHUP : 0) |
         ((events & WEFT_WRITABLE) ? EPOLLOUT : 0) |
         ((events & WEFT__EDGE) ? EPOLLET : 0);
}

static int ep_init(weft__backend_t *b, unsigned max) {
  b->buf = weft__malloc(max * sizeof(struct epoll_event));
  if (b->buf == NULL)
    return WEFT_ENOMEM;
  b->fd = WEFT__SYS("epoll_create1", epoll_create1(EPOLL_CLOEXEC));
  if (b->fd < 0) {
    int rc = weft_error_from_errno(errno);
    weft__free(b->buf, max * sizeof(struct epoll_event));
    return rc;
  }
  b->max = max;
  return 0;
}

static void ep_fini(weft__backend_t *b) {
  close(b->fd);
  weft__free(b->buf, b->max * sizeof(struct epoll_event));
}

static int ep_ctl(weft__backend_t *b, int op, int fd, unsigned events,
                  void *data) {
  struct epoll_event ev = {0};
  ev.events = to_epoll(events);
  ev.data.ptr = data;
  return WEFT__SYS("epoll_ctl", epoll_ctl(b->fd, op, fd, &ev)) == 0
             ? 0
             : weft_error_from_errno(errno);
}

static int ep_add(weft__backend_t *b, int fd, unsigned events, void *data) {
  return ep_ctl(b, EPOLL_CTL_ADD, fd, events, data);
}

static int ep_modify(weft__backend_t *b, int fd, unsigned events, void *data) {
  return ep_ctl(b, EPOLL_CTL_MOD, fd, events, data);
}

static int ep_remove(weft__backend_t *b, int fd) {
  struct epoll_event ev = {0};
  return WEFT__SYS("epoll_ctl", epoll_ctl(b->fd, EPOLL_CTL_DEL, fd, &ev)) == 0
             ? 0
             : weft_error_from_errno(errno);
}

/* Kernels before 5.11 have no epoll_pwait2, and some seccomp filters refuse
 * it: remembered process-wide. */
static _Atomic bool no_pwait2;

/* Wait with a nanosecond timeout where the kernel can (epoll_pwait2), so a
 * timer fires when due rather than up to a millisecond late, as a timeout
 * rounded up to epoll_wait's milliseconds makes it. */
static int ep_wait(weft__backend_t *b, int64_t timeout_ns, int cap) {
  struct epoll_event *evs = b->buf;
#ifdef SYS_epoll_pwait2
  if (timeout_ns > 0 &&
      !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
    struct timespec ts = {(time_t)(timeout_ns / 1000000000),
                          (long)(timeout_ns % 1000000000)};
    int n = (int)WEFT__SYS("epoll_pwait2", syscall(SYS_epoll_pwait2, b->fd, evs,
                                                   cap, &ts, NULL, 0));
    if (n >= 0 || (errno != ENOSYS && errno != EPERM))
      return n; /* EPERM: a seccomp filter (older container runtimes) */
    atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
  }
#endif
  return WEFT__SYS("epoll_wait",
                   epoll_wait(b->fd, evs, cap,
                              timeout_ns < 0 ? -1
                                             : weft__ns_to_ms_up(timeout_ns)));
}

/* The kernel's events evs[0..n) as the loop's. */
static void translate(const struct epoll_event *evs, int n,
                      weft__event_t *out) {
  for (int i = 0; i < n; i++) {
    uint32_t e = evs[i].events;
    unsigned w = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI))
      w |= WEFT_READABLE;
    if (e & EPOLLOUT)
      w |= WEFT_WRITABLE;
    if (e & (EPOLLERR | EPOLLHUP)) /* let the owner's read/write find out */
      w |= WEFT_READABLE | WEFT_WRITABLE;
    if (e & (EPOLLRDHUP | EPOLLHUP))
      w |= WEFT__HUP;
    out[i].data = evs[i].data.ptr;
    out[i].events = w;
  }
}

WEFT__HOT static int ep_poll(weft__backend_t *b, int64_t timeout_ns,
                             weft__event_t *out, int cap) {
  if ((unsigned)cap > b->max)
    cap = (int)b->max;
  int n = ep_wait(b, timeout_ns, cap);
  if (n < 0)
    return errno == EINTR ? 0 : weft_error_from_errno(errno);
  translate(b->buf, n, out);
  return n;
}

const weft__backend_ops_t weft__epoll_backend = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .poll = ep_poll,
    .add = ep_add,
    .modify = ep_modify,
    .remove = ep_remove,
};
