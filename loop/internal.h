/* SPDX-License-Identifier: MIT */
/* loop/internal.h: private structures of the event loop. Never installed,
 * never included by a public header. */
#ifndef WEFT_LOOP_INTERNAL_H
#define WEFT_LOOP_INTERNAL_H

#include "../lib/internal.h"

#include <limits.h>
#include <weft/loop.h>

#define WEFT__LOOP_TLS __attribute__((tls_model("initial-exec")))

/* ---- polling backend (one file per backend; epoll.c first) ---- */
/* Internal registration flag beside WEFT_READABLE/WEFT_WRITABLE: report
 * readiness edges only (sockets track their own readiness, so they are
 * registered once and never modified). */
enum { WEFT__EDGE = 0x100u };
/* Event bit of a ring completion for a socket (uring.c); a socket's
 * watcher asks for it beside READABLE/WRITABLE. */
enum { WEFT__RING = 0x200u };
/* Event bit: the peer will send no more (EPOLLRDHUP or EPOLLHUP). Edge-
 * triggered, this event may carry the end of stream together with the last
 * bytes and never come again; a socket's watcher asks for it so that a
 * short read does not take the readiness that the end still needs. */
enum { WEFT__HUP = 0x400u };
typedef struct weft__event {
  void *data;      /* what add() registered */
  unsigned events; /* WEFT_READABLE | WEFT_WRITABLE */
} weft__event_t;

typedef struct weft__backend {
  int fd; /* the epoll fd */
  unsigned max;
  void *buf; /* backend-specific event buffer of `max` entries */
  struct weft__ring *ring; /* uring.c; NULL: plain epoll */
} weft__backend_t;

typedef struct weft__backend_ops {
  const char *name;
  int (*init)(weft__backend_t *b, unsigned max_events);
  void (*fini)(weft__backend_t *b);
  int (*add)(weft__backend_t *b, int fd, unsigned events, void *data);
  int (*modify)(weft__backend_t *b, int fd, unsigned events, void *data);
  int (*remove)(weft__backend_t *b, int fd);
  /* Wait up to timeout_ns (-1: forever, 0: not at all; a backend with a
   * coarser clock rounds up, never waking early); fill out[0..n). Returns
   * n >= 0 (0 on EINTR or timeout) or a negative WEFT_E* code. */
  int (*poll)(weft__backend_t *b, int64_t timeout_ns, weft__event_t *out);
} weft__backend_ops_t;

/* ns (>= 0) as whole milliseconds, rounded up and capped at INT_MAX. */
static inline int weft__ns_to_ms_up(int64_t ns) {
  int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

WEFT__HIDDEN extern const weft__backend_ops_t weft__epoll_backend;
/* epoll.c: the events ready now, at most cap (>= 1), into out. */
WEFT__HIDDEN int weft__epoll_harvest(weft__backend_t *b, weft__event_t *out,
                                     int cap);

/* uring.c: epoll plus an io_uring for stream socket reads and writes (see
 * there);
 * its init fails (and the loop takes plain epoll) where no ring can be
 * had. The calls below are for a backend with a ring, loop thread only. */
WEFT__HIDDEN extern const weft__backend_ops_t weft__uring_backend;
enum {
  WEFT__RING_BUF = 2048,          /* bytes in each provided buffer */
  WEFT__RING_SEND_MAX = 1u << 30, /* bytes one ring send takes at most */
};
/* Arm a recv of fd into a pool buffer; its completion goes to
 * weft__net_ring_cqe(tag, ...). False: no room in the ring. */
WEFT__HIDDEN bool weft__ring_recv(weft__backend_t *b, void *tag, int fd);
/* Queue a send of buf[0..len) on fd (at most WEFT__RING_SEND_MAX), its
 * completion to weft__net_ring_cqe(tag | 1, ...). The send is handed over
 * at the loop's next io_uring_enter, with MSG_DONTWAIT: the kernel reads
 * buf inside that call only. Around the call, weft__net_send_enter(tag,
 * iov, max) gives the buffers the send carries, buf's first (0: it was
 * cancelled, the send becomes a NOP) and, once the kernel took it,
 * weft__net_send_leave(tag). False: no room in the ring. */
WEFT__HIDDEN bool weft__ring_send(weft__backend_t *b, void *tag, int fd,
                                  const void *buf, size_t len);
/* Sends queued and not handed over yet; anything queued (recvs too). */
WEFT__HIDDEN bool weft__ring_sends(const weft__backend_t *b);
WEFT__HIDDEN bool weft__ring_queued(const weft__backend_t *b);
struct iovec;
WEFT__HIDDEN unsigned weft__net_send_enter(void *tag, struct iovec *iov,
                                          unsigned max);
WEFT__HIDDEN void weft__net_send_leave(void *tag);
/* Ask the kernel to end tag's recv (its completion still comes); hands
 * the SQ over at once, so the fd may be closed on return. */
WEFT__HIDDEN void weft__ring_cancel(weft__backend_t *b, void *tag);
/* Pool buffer bid (from a completion), and giving it back. */
WEFT__HIDDEN const char *weft__ring_buf(const weft__backend_t *b,
                                        unsigned bid);
WEFT__HIDDEN void weft__ring_buf_put(weft__backend_t *b, unsigned bid);
/* A recv found no pool buffer: add some (up to the ring's room). */
WEFT__HIDDEN void weft__ring_grow(weft__backend_t *b);
/* Have completions also signal eventfd fd (for an embedding host). */
WEFT__HIDDEN int weft__ring_notify_fd(weft__backend_t *b, int fd);
/* Wait for the recvs and sends still in the ring (all cancelled) to
 * report. */
WEFT__HIDDEN void weft__ring_drain(weft__backend_t *b);
/* net.c: a recv armed for socket tag completed (res; bid, the pool buffer
 * it filled, or -1), or a send (tag with its low bit set; bid -1):
 * the socket's watcher, for an event {io, WEFT__RING} in the batch, or
 * NULL when there is nothing to dispatch (the socket was closed). */
WEFT__HIDDEN struct weft_io *weft__net_ring_cqe(void *tag, int res, int bid);

/* ---- timers: 4-ary min-heap ordered by due (timer.c) ----
 * Deadlines count from a start time that moves on by at least 1 ns per
 * start (loop->vnow), so timers started together with one timeout do not
 * tie; an exact tie (two iterations' times lining up to the nanosecond)
 * falls back on the start sequence kept in the timers. 16-byte entries. */
typedef struct weft__heap_entry {
  int64_t due;
  weft_timer_t *timer;
} weft__heap_entry_t;

enum { WEFT__TIMER_INIT = 0x7e1f7000u }; /* priv_flags of an initialised timer */

/* ---- the adaptive spin before sleeping (spin.c) ---- */
/* Its state, loop thread only. */
typedef struct weft__spin {
  int64_t ns;     /* the next spin's length; 0: no spin */
  int64_t max_ns; /* spin_us in ns; 0: spinning is off */
  int credit;     /* spins are allowed while positive */
  int ncpu;       /* CPUs this process may use */
  unsigned pool_wakes_seen; /* weft__cpu_wakes_here() at the last wait */
  unsigned quiet;           /* waits left without a spin */
  long nivcsw;    /* the loop thread's involuntary switches, last seen */
  unsigned shared_streak; /* back-offs in a row for a shared CPU */
  unsigned dear;          /* spin hits in a row dearer than a sleep */
  unsigned dear_streak;   /* back-offs in a row for dear hits */
} weft__spin_t;

/* What the spin before one wait did; zeroed by the caller. */
typedef struct weft__spun {
  int64_t idle; /* when the loop ran out of work; 0: the spin found work */
  int n;        /* polled: the poll's result (events in loop->events) */
  bool spun;    /* it spun and found nothing */
  bool polled;  /* it polled the backend and found events */
} weft__spun_t;

/* ---- the loop ---- */
enum { WAKE_AWAKE = 0, WAKE_SLEEPING = 1, WAKE_SENT = 2 };

#define WEFT__INBOX_CLOSED ((weft_task_t *)(uintptr_t)1)

struct weft_loop {
  weft_executor_t executor;
  /* cross-thread side, one cache line */
  _Atomic(weft_task_t *) inbox;   /* Treiber stack, newest first */
  _Atomic uint32_t wake;          /* WAKE_* */
  _Atomic uint32_t producers;     /* threads inside post/submit right now */
  _Atomic bool stop;
  _Atomic uint64_t wakeups;
  char pad_[64];
  /* loop thread only. First what every event and socket operation
   * touches, together (two lines, not five) */
  weft__event_t *events;
  int nevents, ev_index; /* the batch being dispatched */
  weft_task_t *local_head, *local_tail; /* loop-thread submissions */
  struct net_op *op_free; /* finished socket operations, for reuse */
  unsigned op_nfree;
  unsigned readers; /* sockets with a read, accept or receive queued */
  weft_stall_fn stall_fn;
  _Atomic uint64_t callbacks; /* a statistic (see below) */
  /* in_close: weft_loop_close is running; closing: from the same moment,
   * new timers, watchers, signal handlers and socket operations are
   * refused (with WEFT_ESHUTDOWN) */
  bool running, closing, in_close;
  /* the rest */
  const weft__backend_ops_t *ops;
  weft__backend_t backend;
  int wake_fd;
  pthread_t thread;
  weft_executor_t *prev_executor;
  struct weft_loop *live_next; /* the list of live loops (loop.c) */
  int64_t now;
  weft__spin_t spin; /* the adaptive spin before sleeping (spin.c) */
  _Atomic uint64_t spins, spin_hits; /* statistics (spin.c) */
  /* timers */
  weft__heap_entry_t *heap;
  uint32_t heap_len, heap_cap;
  uint32_t heap_ready; /* entries backed by pages so far (timer.c) */
  int64_t vnow; /* the start time given to the last timer started */
  uint64_t timer_seq;
  /* timers started by the callbacks of the last timer pass: start
   * sequences [lo, hi), in iteration pass_iter (timer.c) */
  uint64_t timer_pass_lo, timer_pass_hi, timer_pass_iter;
  /* watchers and signals */
  weft_io_t *watchers;
  int sig_fd;
  weft_signal_t *signals;
  weft_signal_t *sig_iter_next; /* dispatch cursor, fixed up by stop */
  /* sockets: listeners waiting for a free fd (net.c) */
  unsigned wake_events; /* since the eventfd was last read */
  struct weft_socket *fd_waiters;
  struct sock_slab *sock_slabs; /* socket memory, slabs with room first */
  struct weft_socket *close_socks; /* freed during close, kept until its end */
  /* stall detector (and stall_fn above) */
  void *stall_arg;
  int64_t stall_threshold;
  /* statistics (written by the loop thread, read by any; and callbacks
   * above) */
  _Atomic uint64_t iterations, polls, posted, timers_fired, stalls;
  _Atomic unsigned timers_active, watchers_active;
};

/* What the loop's own fds (its eventfd, its signalfd) are registered with,
 * in every loop: an event's data is NULL (a watcher stopped during the
 * batch), one of these, or a weft_io_t of the user's or of a socket. A
 * mark is a weft_io_t nobody starts (priv_fn NULL), so the loop may treat
 * every non-NULL data as a watcher when it prefetches. */
WEFT__HIDDEN extern weft_io_t weft__wake_mark, weft__sig_mark;

/* The loop this thread runs (set by create, cleared by close). Inline:
 * every loop-thread call checks it, and a call into another unit was a
 * tenth of a timer start. */
WEFT__HIDDEN extern _Thread_local weft_loop_t *weft__tl_loop WEFT__LOOP_TLS;
/* Is `loop` a live loop of any thread (created, not yet closed)? Compares
 * addresses only, never reads *loop: for a handle that names a loop other
 * than the caller's (a misuse check, off the hot paths). */
WEFT__HIDDEN bool weft__loop_live(const weft_loop_t *loop);
static inline bool weft__loop_owned(const weft_loop_t *loop) {
  return loop != NULL && weft__tl_loop == loop;
}
/* Owner-only counter bump, readable from other threads. */
static inline void weft__loop_count(_Atomic uint64_t *c) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}
/* Report a callback that ran from t0 until now if it was too long. */
typedef void (*weft__anyfn)(void);
WEFT__HIDDEN void weft__loop_stall_check(weft_loop_t *loop, const char *kind,
                                         weft__anyfn cb, int64_t t0);
/* (No stall hook is the usual case: its code stays out of the way.) */
static inline int64_t weft__loop_cb_begin(weft_loop_t *loop) {
  weft__loop_count(&loop->callbacks);
  return __builtin_expect(loop->stall_fn != NULL, 0) ? weft_now_ns() : 0;
}
static inline void weft__loop_cb_end(weft_loop_t *loop, const char *kind,
                                     weft__anyfn cb, int64_t t0) {
  if (__builtin_expect(loop->stall_fn != NULL && t0 != 0, 0))
    weft__loop_stall_check(loop, kind, cb, t0);
}
/* Queue a task from any thread: from another thread refused with
 * WEFT_ESHUTDOWN once close began; on the loop thread always taken (close
 * runs what its callbacks queue). */
WEFT__HIDDEN int weft__loop_submit(weft_loop_t *loop, weft_task_t *task);

/* Close and run need the loop thread, outside any run or close: 0, or
 * WEFT_EINVAL (NULL), WEFT_EPERM (another thread), WEFT_EBUSY. */
static inline int weft__loop_check_idle(const weft_loop_t *loop) {
  if (loop == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->running || loop->in_close)
    return WEFT_EBUSY;
  return 0;
}
/* The loop's executor (run.c, with the queue its submit pushes on). */
WEFT__HIDDEN extern const weft_executor_ops_t weft__loop_executor_ops;
/* For close (run.c): run what other threads queued and refuse the rest
 * from now on; run the loop thread's own queue until it stays empty. */
WEFT__HIDDEN void weft__loop_close_inbox(weft_loop_t *loop);
WEFT__HIDDEN void weft__loop_close_drain(weft_loop_t *loop);

/* Queue a task on the loop thread: a plain FIFO. */
static inline void weft__loop_push_local(weft_loop_t *loop, weft_task_t *t) {
  t->next = NULL;
  if (loop->local_tail != NULL)
    loop->local_tail->next = t;
  else
    loop->local_head = t;
  loop->local_tail = t;
}

/* weft__settle_unshared_take for a future of loop, on its thread, and
 * run what was attached: a watch that runs on this loop goes straight onto
 * the loop's queue, where weft__watch_fire would have put it through the
 * trampoline and the executor's submit (three calls fewer per operation);
 * anything else goes to weft__defer_list. */
static inline void weft__loop_settle_unshared(weft_loop_t *loop,
                                              struct weft_future *f,
                                              uint32_t state) {
  weft_task_t *h = weft__settle_unshared_take(f, state);
  if (h == NULL)
    return;
  if (__builtin_expect(weft__watch_on(h, &loop->executor), 1)) {
    h->run = weft__watch_run;
    weft__loop_push_local(loop, h);
    return;
  }
  weft__defer_list(h, h);
}

/* A future owned by a loop source (a sleep's timer, a signal handler): one
 * allocation holds the future and the source. refs: the caller's handle and
 * the armed source. A cancel on the loop thread disarms at once; from
 * another thread it sends stop_task to the loop (with its own reference). */
typedef struct weft__loop_op {
  weft__ext_t ext;
  weft__watch_t wslot; /* a weft__ext_ws_t: room for the usual watch */
  weft_task_t stop_task;
  weft_loop_t *loop;
  size_t size; /* of the whole op, freed when the last reference goes */
  /* Loop thread: stop the source if still armed, and drop its reference. */
  void (*disarm)(struct weft__loop_op *op);
} weft__loop_op_t;
_Static_assert(offsetof(weft__loop_op_t, wslot) ==
                   offsetof(weft__ext_ws_t, slot),
               "a loop op is a weft__ext_ws_t");

/* Initialise op (`size` bytes, the op first) as a pending future of loop. */
WEFT__HIDDEN void weft__loop_op_init(weft__loop_op_t *op, size_t size,
                                     weft_loop_t *loop,
                                     void (*disarm)(weft__loop_op_t *op));
/* The same with its own fini (which takes the memory) and cancel hook
 * (which ends with weft__loop_op_cancel). Inline: sockets make one per
 * operation. */
static inline void weft__loop_op_setup(weft__loop_op_t *op, size_t size,
                                       weft_loop_t *loop,
                                       void (*disarm)(weft__loop_op_t *op),
                                       void (*fini)(weft__ext_t *e),
                                       weft_cancel_fn hook, void *hook_arg) {
  weft__ext_init(&op->ext, fini, 2, 1);
  op->size = size;
  /* weft__ext_on_cancel, and the room for a watch, in one store */
  op->ext.base.aux.cancel = hook;
  op->ext.base.val.ptr = hook_arg;
  atomic_store_explicit(&op->ext.base.word,
                        (uint32_t)WEFT__K_EXT << WEFT__KIND_SHIFT |
                            WEFT__F_HOOK | WEFT__F_WSLOT,
                        memory_order_relaxed);
  op->loop = loop;
  op->disarm = disarm;
}

/* The default cancel hook of a loop op (disarm here or send stop_task);
 * an op with its own hook calls it after its own work. */
WEFT__HIDDEN void weft__loop_op_cancel(weft__loop_op_t *op);

/* spin.c (loop thread only). Set the spin's bound from spin_us (0: the
 * default, negative: off) at create. */
WEFT__HIDDEN void weft__spin_init(weft_loop_t *loop, int spin_us);
/* Before a wait of up to `timeout` ns (-1: none, never 0), with the spin
 * on (spin.max_ns > 0): spin for work if the policy allows, until a post,
 * a stop, `until` (run_until's future, or NULL) settling, or, while the
 * loop watches fds, their events. Fills *out and returns what is left of
 * the wait (0 when the spin found work or used the wait up). */
WEFT__HIDDEN int64_t weft__spin_wait(weft_loop_t *loop, int64_t timeout,
                                     weft_future_t *until, weft__spun_t *out);
/* After that wait ended at loop->now (out->idle != 0), `by_work` if a post
 * or an fd event ended it: lengthen or shorten the next spin. */
WEFT__HIDDEN void weft__spin_adapt(weft_loop_t *loop, const weft__spun_t *s,
                                   bool by_work);

/* timer.c */
WEFT__HIDDEN void weft__timers_run(weft_loop_t *loop);
WEFT__HIDDEN int64_t weft__timers_next(const weft_loop_t *loop); /* -1: none */
WEFT__HIDDEN void weft__timers_close(weft_loop_t *loop);

/* io.c */
/* weft_io_start() without the public mask check: events may carry
 * WEFT__EDGE; priv_events keeps only the READABLE/WRITABLE part. */
WEFT__HIDDEN int weft__io_start(weft_loop_t *loop, weft_io_t *io, int fd,
                                unsigned events, weft_io_fn fn, void *arg);
/* Run a watcher's callback for a batch's event. (Inline: once per event.) */
static inline void weft__io_dispatch(weft_loop_t *loop, weft_io_t *io,
                                     unsigned events) {
  events &= io->priv_events;
  if (events == 0)
    return;
  weft_io_fn fn = io->priv_fn;
  int64_t t0 = weft__loop_cb_begin(loop);
  fn(io, events, 0, io->priv_arg);
  weft__loop_cb_end(loop, "io", (weft__anyfn)fn, t0);
}
WEFT__HIDDEN void weft__io_close(weft_loop_t *loop);
/* net.c: prefetch hint for a watcher whose event is dispatched next. */
WEFT__HIDDEN void weft__net_prefetch(weft_io_t *io);
WEFT__HIDDEN void weft__net_prefetch_buf(weft_io_t *io);
/* net.c: free the socket slabs (every socket is gone by then). */
WEFT__HIDDEN void weft__net_close(weft_loop_t *loop);
WEFT__HIDDEN void weft__signal_dispatch(weft_loop_t *loop);
WEFT__HIDDEN void weft__signal_close(weft_loop_t *loop);

#endif /* WEFT_LOOP_INTERNAL_H */
