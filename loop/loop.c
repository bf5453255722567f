/* SPDX-License-Identifier: MIT */
/* loop/loop.c: the loop's life cycle (create, close, the list of live
 * loops) and statistics. Running, the loop's executor, the futures of loop
 * sources and the stall detector are in run.c, the spin before sleeping in
 * spin.c, timers in timer.c, watchers and signals in io.c; the backend
 * (epoll.c) only translates kernel events.
 *
 * Close. The queue's head is swapped for a CLOSED marker, which refuses
 * every later push from another thread (nothing takes the marker off
 * again); producers still inside post/submit are counted and close waits
 * for them before it frees what they touch. On the loop thread, close
 * keeps taking executor tasks: the continuations of what it cancels are
 * queued there and close runs them until none is left
 * (weft__loop_close_drain). */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

_Thread_local weft_loop_t *weft__tl_loop WEFT__LOOP_TLS;
weft_io_t weft__wake_mark, weft__sig_mark;

weft_loop_t *weft_loop_current(void) { return weft__tl_loop; }

/* ---- life cycle ---- */

/* Every live loop, so that a handle naming another loop can be told from
 * an uninitialised one (weft__loop_live). Changed at create and close. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static weft_loop_t *live_head;

bool weft__loop_live(const weft_loop_t *loop) {
  bool found = false;
  pthread_mutex_lock(&live_mu);
  for (const weft_loop_t *l = live_head; l != NULL && !found; l = l->live_next)
    found = l == loop;
  pthread_mutex_unlock(&live_mu);
  return found;
}

static void live_unlink(weft_loop_t *loop) {
  pthread_mutex_lock(&live_mu);
  for (weft_loop_t **p = &live_head; *p != NULL; p = &(*p)->live_next)
    if (*p == loop) {
      *p = loop->live_next;
      break;
    }
  pthread_mutex_unlock(&live_mu);
}

/* Options into the loop's settings: 0, WEFT_EINVAL (out of range) or
 * WEFT_ENOTSUP (unknown bytes: past our struct, or in the reserved slots,
 * which sit between spin_us and the fields appended after them). */
static int read_options(const weft_loop_options_t *opts, unsigned *max,
                        int *spin_us, weft_executor_t **blocking) {
  *max = 256;
  *spin_us = 0;
  *blocking = NULL;
  if (opts == NULL)
    return 0;
  size_t res = offsetof(weft_loop_options_t, reserved);
  size_t res_end = offsetof(weft_loop_options_t, blocking);
  int rc = weft__struct_check(opts, opts->size,
                              offsetof(weft_loop_options_t, spin_us),
                              sizeof(weft_loop_options_t));
  if (rc != 0)
    return rc;
  for (size_t i = res; i < res_end && i < opts->size; i++)
    if (((const unsigned char *)opts)[i] != 0)
      return WEFT_ENOTSUP;
  if (opts->max_events > 65536)
    return WEFT_EINVAL;
  if (opts->max_events != 0)
    *max = opts->max_events;
  if (opts->size >= res) {
    if (opts->spin_us > 1000000)
      return WEFT_EINVAL;
    *spin_us = opts->spin_us;
  }
  if (opts->size >= sizeof(weft_loop_options_t))
    *blocking = opts->blocking;
  return 0;
}

/* The backends (backend.c) and the wake-up eventfd in epoll. */
static int open_backend(weft_loop_t *loop, unsigned max) {
  int rc = weft__backend_open(loop, max);
  if (rc != 0)
    return rc;
  loop->wake_fd = WEFT__SYS("eventfd", eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (loop->wake_fd < 0) {
    rc = weft_error_from_errno(errno);
    goto fail_backend;
  }
  /* Edge-triggered: every write is reported once, so a wake-up costs the
   * loop no read() (see drain_wake_fd in run.c). */
  rc = loop->ops->add(&loop->backend, loop->wake_fd, WEFT_READABLE | WEFT__EDGE,
                      &weft__wake_mark);
  if (rc != 0)
    goto fail_wake;
  return 0;
fail_wake:
  close(loop->wake_fd);
fail_backend:
  weft__backend_close(loop);
  return rc;
}

int weft_loop_create(const weft_loop_options_t *opts, weft_loop_t **out) {
  unsigned max;
  int spin_us;
  weft_executor_t *blocking;
  if (out == NULL)
    return WEFT_EINVAL;
  int rc = read_options(opts, &max, &spin_us, &blocking);
  if (rc != 0)
    return rc;
  if (weft__tl_loop != NULL)
    return WEFT_EBUSY;
  weft_loop_t *loop = weft__malloc(sizeof *loop);
  if (loop == NULL)
    return WEFT_ENOMEM;
  memset(loop, 0, sizeof *loop);
  atomic_init(&loop->holds, 1);
  loop->executor.ops = &weft__loop_executor_ops;
  loop->blocking = blocking;
  loop->wake_fd = loop->sig_fd = -1;
  weft__spin_init(loop, spin_us);
  rc = WEFT_ENOMEM;
  loop->events = weft__malloc(max * sizeof(weft__event_t));
  if (loop->events == NULL)
    goto fail;
  rc = open_backend(loop, max);
  if (rc != 0)
    goto fail_events;
  atomic_init(&loop->wake, WAKE_SLEEPING); /* not running: posts wake it */
  loop->now = weft_clock_now_ns();
  loop->thread = pthread_self();
  weft__tl_loop = loop;
  loop->prev_executor = weft_executor_enter(&loop->executor);
  pthread_mutex_lock(&live_mu);
  loop->live_next = live_head;
  live_head = loop;
  pthread_mutex_unlock(&live_mu);
  *out = loop;
  return 0;
fail_events:
  weft__free(loop->events, max * sizeof(weft__event_t));
fail:
  weft__free(loop, sizeof *loop);
  return rc;
}
static void wait_producers(weft_loop_t *loop) {
  while (atomic_load_explicit(&loop->producers, memory_order_acquire) != 0)
    sched_yield();
}

int weft_loop_close(weft_loop_t *loop) {
  int rc = weft__loop_check_idle(loop);
  if (rc != 0)
    return rc;
  loop->in_close = true;
  loop->closing = true; /* new timers, watchers and operations are refused */
  /* What other threads queued runs (posted functions with ECANCELED,
   * continuations normally, so their futures settle); the marker refuses
   * the rest from now on. Then the loop thread's own queue; then each kind
   * of source is cancelled in turn, and the continuations of what that
   * settled run before the next: no future of the loop's waits forever,
   * no continuation is lost. */
  weft__loop_close_inbox(loop);
  weft__loop_close_drain(loop);
  weft__timers_close(loop);
  weft__loop_close_drain(loop);
  weft__io_close(loop); /* and every socket, with its operations */
  weft__loop_close_drain(loop);
  weft__lops_close(loop); /* files, lookups */
  weft__signal_close(loop);
  weft__loop_close_drain(loop);
  if (loop->cops != NULL) { /* completions of closed handles, to report */
    loop->cops->drain(&loop->cbackend);
    weft__loop_close_drain(loop);
  }
  if (loop->module != NULL)
    loop->module->close(loop);
  weft__lops_release(loop);
  if (loop->own_blocking != NULL)
    weft__lthreads_close(loop->own_blocking);
  WEFT__PERTURB();
  wait_producers(loop);
  loop->ops->remove(&loop->backend, loop->wake_fd);
  close(loop->wake_fd);
  weft__backend_close(loop);
  weft__free(loop->events, loop->backend.max * sizeof(weft__event_t));
  weft__free(loop->heap, loop->heap_cap * sizeof(weft__heap_entry_t));
  weft_executor_leave(loop->prev_executor);
  weft__tl_loop = NULL;
  live_unlink(loop);
  weft__loop_put(loop);
  return 0;
}

/* ---- time, statistics ---- */

int64_t weft_loop_now_ns(const weft_loop_t *loop) {
  return loop == NULL ? WEFT_EINVAL : loop->now;
}

int weft_loop_stats(weft_loop_t *loop, weft_loop_stats_t *s) {
  if (loop == NULL || s == NULL)
    return WEFT_EINVAL;
  memset(s, 0, sizeof *s);
#define RD(x) atomic_load_explicit(&loop->x, memory_order_relaxed)
  s->iterations = RD(iterations);
  s->polls = RD(polls);
  s->posted = RD(posted);
  s->wakeups = RD(wakeups);
  s->spins = RD(spins);
  s->spin_hits = RD(spin_hits);
  s->callbacks = RD(callbacks);
  s->timers_fired = RD(timers_fired);
  s->stalls = RD(stalls);
  s->timers_active = RD(timers_active);
  s->watchers_active = RD(watchers_active);
#undef RD
  s->backend = loop->cops != NULL ? loop->cops->name : loop->ops->name;
  return 0;
}
