/* SPDX-License-Identifier: MIT */
/* loop/internal.h: private structures of the event loop. Never installed,
 * never included by a public header. */
#ifndef WEFT_LOOP_INTERNAL_H
#define WEFT_LOOP_INTERNAL_H

#include "../lib/internal.h"

#include <limits.h>
#include <weft/loop.h>

#define WEFT__LOOP_TLS __attribute__((tls_model("initial-exec")))

/* ---- backends (epoll.c, uring.c; stacked by backend.c) ----
 * Every loop has a readiness backend (epoll): registrations and level- or
 * edge-triggered events. A loop may also have a completion backend
 * (io_uring): reads and sends the kernel completes inside the loop's wait.
 * Both implement weft__backend_ops_t; each fills in its own half and leaves
 * the other NULL. The loop core (backend.c) stacks them: the completion
 * backend waits, with the readiness backend's fd as one more thing it
 * watches, and the core then harvests the readiness events. Nothing but
 * the core calls a backend. */
/* Internal registration flag beside WEFT_READABLE/WEFT_WRITABLE: report
 * readiness edges only (sockets track their own readiness, so they are
 * registered once and never modified). */
enum { WEFT__EDGE = 0x100u };
/* Event bit: a completion backend reported on a weft__completion_t that
 * belongs to the watcher; a watcher asks for it beside READABLE/WRITABLE. */
enum { WEFT__DONE = 0x200u };
/* Event bit: the peer will send no more (EPOLLRDHUP or EPOLLHUP). Edge-
 * triggered, this event may carry the end of stream together with the last
 * bytes and never come again; a socket's watcher asks for it so that a
 * short read does not take the readiness that the end still needs. */
enum { WEFT__HUP = 0x400u };
typedef struct weft__event {
  void *data;      /* what add() registered, or a completion's watcher */
  unsigned events; /* WEFT_READABLE | WEFT_WRITABLE | WEFT__HUP | WEFT__DONE */
} weft__event_t;

typedef struct weft__backend {
  int fd;           /* readiness: the epoll fd */
  unsigned max;     /* events one wait returns at most */
  void *buf;        /* backend-specific state or event buffer */
  int watch_fd;     /* completion: the fd to watch (the readiness backend's) */
  bool watch_ready; /* completion: set by poll when watch_fd is readable */
  unsigned sends;   /* completion: sends queued, not handed over yet */
} weft__backend_t;

/* A completion object, embedded in its caller's structure: the kernel's
 * result of one recv or send comes back to it. */
typedef struct weft__completion weft__completion_t;
struct iovec;
typedef struct weft__completion_ops {
  /* The kernel finished c's operation: res (bytes, or -errno) and, for a
   * recv, the pool buffer it filled (else -1). Returns the watcher to
   * dispatch with WEFT__DONE in this batch, or NULL. */
  weft_io_t *(*done)(weft__completion_t *c, int res, int buf);
  /* A send is about to be handed to the kernel: fill iov[0..n), n <= max,
   * with what it carries; 0 when it is void (it becomes a no-op, whose
   * completion still comes, with res 0). */
  unsigned (*send_enter)(weft__completion_t *c, struct iovec *iov,
                         unsigned max);
  /* The kernel has taken the send: it holds none of the caller's memory. */
  void (*send_leave)(weft__completion_t *c);
} weft__completion_ops_t;
struct weft__completion {
  const weft__completion_ops_t *ops;
};

enum {
  WEFT__CQ_BUF = 2048,       /* bytes in each pool buffer of recvs */
  WEFT__SEND_MAX = 1u << 30, /* bytes one send takes at most */
};

/* A file request for a completion backend (loop/fs). The memory it names
 * (buf, path, the statx buffer) stays alive until its completion. */
enum {
  WEFT__FREQ_READ,
  WEFT__FREQ_WRITE,
  WEFT__FREQ_FSYNC,
  WEFT__FREQ_FDATASYNC,
  WEFT__FREQ_OPEN,  /* path, flags, mode */
  WEFT__FREQ_CLOSE, /* fd */
  WEFT__FREQ_STATX  /* fd (path "") or path (fd -1), into stx */
};
typedef struct weft__file_req {
  int kind; /* WEFT__FREQ_* */
  int fd;
  void *buf;
  unsigned len;
  uint64_t off;
  const char *path;
  int flags;
  unsigned mode;
  void *stx; /* a struct statx */
} weft__file_req_t;

typedef struct weft__backend_ops {
  const char *name;
  int (*init)(weft__backend_t *b, unsigned max_events);
  /* After the last loop-thread use: ends what is still in the kernel. */
  void (*fini)(weft__backend_t *b);
  /* Wait up to timeout_ns (-1: forever, 0: not at all; a backend with a
   * coarser clock rounds up, never waking early); fill out[0..n), n <= cap.
   * Returns n >= 0 (0 on EINTR or timeout) or a negative WEFT_E* code. */
  int (*poll)(weft__backend_t *b, int64_t timeout_ns, weft__event_t *out,
              int cap);
  /* Readiness (NULL in a completion backend). */
  int (*add)(weft__backend_t *b, int fd, unsigned events, void *data);
  int (*modify)(weft__backend_t *b, int fd, unsigned events, void *data);
  int (*remove)(weft__backend_t *b, int fd);
  /* Completions (NULL in a readiness backend). Submit a recv of fd into a
   * pool buffer, or a send of buf[0..len) (at most WEFT__SEND_MAX) with
   * MSG_DONTWAIT, handed to the kernel at the next wait, which is the only
   * call in which the kernel reads buf: false when there is no room. */
  bool (*recv)(weft__backend_t *b, weft__completion_t *c, int fd);
  bool (*send)(weft__backend_t *b, weft__completion_t *c, int fd,
               const void *buf, size_t len);
  /* A file request (loop/fs): false when the ring has no room. Its
   * completion's done() gets the result (buf -1) and returns NULL. */
  bool (*file)(weft__backend_t *b, weft__completion_t *c,
               const struct weft__file_req *q);
  /* Ask the kernel to end c's recv (its completion still comes); hands
   * the request over at once, so the fd may be closed on return. */
  void (*cancel)(weft__backend_t *b, weft__completion_t *c);
  /* Is anything queued for the next wait? (Sends: b->sends.) */
  bool (*queued)(const weft__backend_t *b);
  /* Pool buffer `buf` of a completion, and giving it back; a recv found
   * no pool buffer: add some. */
  const char *(*buf_get)(const weft__backend_t *b, unsigned buf);
  void (*buf_put)(weft__backend_t *b, unsigned buf);
  void (*grow)(weft__backend_t *b);
  /* Have completions also signal eventfd fd (for an embedding host). */
  int (*notify_fd)(weft__backend_t *b, int fd);
  /* Wait (bounded) for what is still in the kernel, all of it cancelled,
   * to report through its completions. */
  void (*drain)(weft__backend_t *b);
} weft__backend_ops_t;

/* ns (>= 0) as whole milliseconds, rounded up and capped at INT_MAX. */
static inline int weft__ns_to_ms_up(int64_t ns) {
  int64_t ms = ns / 1000000 + (ns % 1000000 != 0);
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

WEFT__HIDDEN extern const weft__backend_ops_t weft__epoll_backend;
/* Setup fails (and the loop goes without) where no ring can be had. */
WEFT__HIDDEN extern const weft__backend_ops_t weft__uring_backend;

/* ---- timers: 4-ary min-heap ordered by due (timer.c) ----
 * Deadlines count from a start time that moves on by at least 1 ns per
 * start (loop->vnow), so timers started together with one timeout do not
 * tie; an exact tie (two iterations' times lining up to the nanosecond)
 * falls back on the start sequence kept in the timers. 16-byte entries. */
typedef struct weft__heap_entry {
  int64_t due;
  weft_timer_t *timer;
} weft__heap_entry_t;

/* priv_flags of an initialised timer */
enum { WEFT__TIMER_INIT = 0x7e1f7000u };

/* ---- the adaptive spin before sleeping (spin.c) ---- */
/* Its state, loop thread only. */
typedef struct weft__spin {
  int64_t ns;               /* the next spin's length; 0: no spin */
  int64_t max_ns;           /* spin_us in ns; 0: spinning is off */
  int credit;               /* spins are allowed while positive */
  int ncpu;                 /* CPUs this process may use */
  unsigned pool_wakes_seen; /* weft__cpu_wakes_here() at the last wait */
  unsigned quiet;           /* waits left without a spin */
  long nivcsw; /* the loop thread's involuntary switches, last seen */
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
/* Bytes a module keeps in the loop (loop->slot). */
enum { WEFT__LOOP_SLOT = 48 };

/* What a module built on the loop (sockets) asks of it: hooks the loop
 * calls once the module set loop->module (on its first handle). */
typedef struct weft__loop_module {
  /* A hint for the watcher of an event dispatched `ahead` (2 or 1) events
   * from now: start loading what its dispatch will touch. Touches
   * nothing. */
  void (*prefetch)(weft_io_t *io, int ahead);
  /* At loop close, after every watcher was stopped and the completion
   * backend drained: free what the slot holds. */
  void (*close)(weft_loop_t *loop);
  /* Called once per iteration, before the loop waits, when the module set
   * loop->flush_wanted (which the loop clears first): hand the kernel
   * what was queued for this moment (sockets: writes). */
  void (*flush)(weft_loop_t *loop);
} weft__loop_module_t;
enum { WAKE_AWAKE = 0, WAKE_SLEEPING = 1, WAKE_SENT = 2 };

#define WEFT__INBOX_CLOSED ((weft_task_t *)(uintptr_t)1)

struct weft_loop {
  weft_executor_t executor;
  /* cross-thread side, one cache line */
  _Atomic(weft_task_t *) inbox; /* Treiber stack, newest first */
  _Atomic uint32_t wake;        /* WAKE_* */
  _Atomic uint32_t producers;   /* threads inside post/submit right now */
  _Atomic bool stop;
  _Atomic uint64_t wakeups;
  char pad_[64];
  /* loop thread only. First what every event and socket operation
   * touches, together (two lines, not five) */
  weft__event_t *events;
  int nevents, ev_index;                /* the batch being dispatched */
  weft_task_t *local_head, *local_tail; /* loop-thread submissions */
  /* the module on the loop (sockets) and its state (WEFT__LOOP_SLOT
   * bytes, kept here among what every event touches) */
  const struct weft__loop_module *module;
  _Alignas(8) unsigned char slot[WEFT__LOOP_SLOT];
  unsigned readers; /* handles with a read queued (the spin policy) */
  weft_stall_fn stall_fn;
  _Atomic uint64_t callbacks; /* a statistic (see below) */
  /* in_close: weft_loop_close is running; closing: from the same moment,
   * new timers, watchers, signal handlers and socket operations are
   * refused (with WEFT_ESHUTDOWN) */
  bool running, closing, in_close;
  bool flush_wanted; /* call module->flush before the next wait */
  /* the rest */
  const weft__backend_ops_t *ops; /* readiness: epoll */
  weft__backend_t backend;
  const weft__backend_ops_t *cops; /* completions: io_uring, or NULL */
  weft__backend_t cbackend;
  bool watch_again; /* the last harvest found events: look again first */
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
  int64_t vnow;        /* the start time given to the last timer started */
  uint64_t timer_seq;
  /* timers started by the callbacks of the last timer pass: start
   * sequences [lo, hi), in iteration pass_iter (timer.c) */
  uint64_t timer_pass_lo, timer_pass_hi, timer_pass_iter;
  /* watchers and signals */
  weft_io_t *watchers;
  int sig_fd;
  weft_signal_t *signals;
  weft_signal_t *sig_iter_next; /* dispatch cursor, fixed up by stop */
  unsigned wake_events;         /* since the eventfd was last read */
  /* stall detector (and stall_fn above) */
  void *stall_arg;
  int64_t stall_threshold;
  /* statistics (written by the loop thread, read by any; and callbacks
   * above) */
  _Atomic uint64_t iterations, polls, posted, timers_fired, stalls;
  _Atomic unsigned timers_active, watchers_active;
  /* 1 until close, 1 per fiber spawned on the loop and not yet ended: the
   * struct is freed at the last (a late submit finds the queue closed) */
  _Atomic uint32_t holds;
  /* blocking work (files without io_uring, name lookups): the user's
   * executor, or NULL and then the loop's own threads, made on first need */
  weft_executor_t *blocking;
  struct weft__lthreads *own_blocking;
  /* files and the operations that went to the ring or a blocking thread
   * (loop/fs, name lookups), while they are open or pending: close ends
   * them (weft__lops_close) */
  struct weft__lop *lops, *lops_dead;
};
/* Give back one hold on the loop's memory (run.c). */
WEFT__HIDDEN void weft__loop_put(weft_loop_t *loop);

/* What the loop's own fds (its eventfd, its signalfd) are registered with,
 * in every loop: an event's data is NULL (a watcher stopped during the
 * batch), one of these, or a weft_io_t of the user's or of a socket. A
 * mark is a weft_io_t nobody starts (priv_fn NULL), so the loop may treat
 * every non-NULL data as a watcher when it prefetches. */
WEFT__HIDDEN extern weft_io_t weft__wake_mark, weft__sig_mark;

/* The loop this thread runs (set by create, cleared by close). Inline:
 * every loop-thread call checks it, and a call into another unit would
 * cost a hot path such as a timer start a visible share. */
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
  return __builtin_expect(loop->stall_fn != NULL, 0) ? weft_clock_now_ns() : 0;
}
static inline void weft__loop_cb_end(weft_loop_t *loop, const char *kind,
                                     weft__anyfn cb, int64_t t0) {
  if (__builtin_expect(loop->stall_fn != NULL && t0 != 0, 0))
    weft__loop_stall_check(loop, kind, cb, t0);
}
/* Wrap a connected stream fd of the caller's (made non-blocking here) as a
 * socket of the loop; the fd is closed on failure (loop/net/adopt.c). */
WEFT__HIDDEN int weft__socket_adopt(weft_loop_t *loop, int fd,
                                    struct weft_socket **out);
/* Queue a task from any thread: from another thread refused with
 * WEFT_ESHUTDOWN once close began; on the loop thread always taken (close
 * runs what its callbacks queue). */
WEFT__HIDDEN int weft__loop_submit(weft_loop_t *loop, weft_task_t *task);

/* Where the loop sends work that blocks a thread (the options' `blocking`
 * executor, else the loop's own threads, started here on first use): 0
 * and *out, or WEFT_ENOMEM / WEFT_EAGAIN (no thread could be started). The
 * executor takes tasks from any thread until the loop's close returns.
 * Loop thread only. */
WEFT__HIDDEN int weft__loop_blocking(weft_loop_t *loop, weft_executor_t **out);
/* The loop's own blocking threads (blocking.c): an elastic set of up to
 * WEFT__LTHREADS_MAX threads sharing one FIFO queue. Close refuses new
 * tasks, lets the threads run what is queued, waits for the idle ones to
 * exit and leaves those still inside a task to end by themselves (the
 * last one out frees the set). */
enum { WEFT__LTHREADS_MAX = 4 };
typedef struct weft__lthreads weft__lthreads_t;
WEFT__HIDDEN int weft__lthreads_create(weft__lthreads_t **out);
WEFT__HIDDEN weft_executor_t *weft__lthreads_executor(weft__lthreads_t *t);
WEFT__HIDDEN void weft__lthreads_close(weft__lthreads_t *t);

/* Something the loop's close must end: a file, or an operation whose
 * future is pending (loop/fs, loop/net/dns.c). Loop thread only. */
typedef struct weft__lop {
  struct weft__lop *prev, *next;
  /* The loop is closing: settle, cancel or close; the link is already
   * off the list. */
  void (*close)(struct weft__lop *l);
  /* NULL, or called at the very end of the loop's close (what close's
   * continuations could still name stays until then). */
  void (*release)(struct weft__lop *l);
} weft__lop_t;
static inline void weft__lop_link(weft_loop_t *loop, weft__lop_t *l) {
  l->prev = NULL;
  l->next = loop->lops;
  if (loop->lops != NULL)
    loop->lops->prev = l;
  loop->lops = l;
}
static inline void weft__lop_unlink(weft_loop_t *loop, weft__lop_t *l) {
  if (l->prev != NULL)
    l->prev->next = l->next;
  else if (loop->lops == l)
    loop->lops = l->next;
  if (l->next != NULL)
    l->next->prev = l->prev;
  l->prev = l->next = NULL;
}
/* At close: end every listed one, running what that settles after each;
 * at its very end, release them. */
WEFT__HIDDEN void weft__lops_close(weft_loop_t *loop);
WEFT__HIDDEN void weft__lops_release(weft_loop_t *loop);

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
/* Start (or move) t to fire once `deadline` (absolute, weft_clock_now_ns()
 * ns) has passed: whole ms from the loop's time (its cached time while it
 * runs, the clock between runs), rounded up, so never before it. Returns
 * what weft_timer_start() returns; moving an active timer allocates
 * nothing. Loop thread. */
WEFT__HIDDEN int weft__timer_start_at(weft_timer_t *t, int64_t deadline);

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
/* weft_io_modify() without the public mask check (events may carry
 * WEFT__EDGE); priv_events is the caller's to set. */
static inline int weft__io_modify(weft_io_t *io, unsigned events) {
  weft_loop_t *loop = io->priv_loop;
  return loop->ops->modify(&loop->backend, io->priv_fd, events, io);
}
WEFT__HIDDEN void weft__signal_dispatch(weft_loop_t *loop);
WEFT__HIDDEN void weft__signal_close(weft_loop_t *loop);

/* backend.c: the loop core's side of the backends. */
/* Set up the backends (a ring where one can be had) for batches of max
 * events; tear them down. */
WEFT__HIDDEN int weft__backend_open(weft_loop_t *loop, unsigned max);
WEFT__HIDDEN void weft__backend_close(weft_loop_t *loop);
/* The readiness events after n completions in loop->events (the
 * completion backend saw the readiness fd readable, or the last harvest
 * found some): n plus their number, or a negative WEFT_E* code. */
WEFT__HIDDEN int weft__backend_harvest(weft_loop_t *loop, int n);
/* Wait up to timeout_ns for events and completions, into loop->events;
 * returns their number or a negative WEFT_E* code. (Inline: the loop's
 * wait and its spin's polls come here.) */
static inline int weft__backend_wait(weft_loop_t *loop, int64_t timeout_ns) {
  int max = (int)loop->backend.max;
  if (loop->cops == NULL)
    return loop->ops->poll(&loop->backend, timeout_ns, loop->events, max);
  bool again = loop->watch_again;
  int n = loop->cops->poll(&loop->cbackend, again ? 0 : timeout_ns,
                           loop->events, (int)loop->cbackend.max);
  if (n < 0 || (!loop->cbackend.watch_ready && !again))
    return n;
  return weft__backend_harvest(loop, n);
}
/* Completions, for a module on the loop: does the loop have them? */
static inline bool weft__loop_completes(const weft_loop_t *loop) {
  return loop->cops != NULL;
}
/* The completion entries of weft__backend_ops_t, for a loop that has
 * them (weft__loop_completes); loop thread only. */
static inline bool weft__loop_recv(weft_loop_t *loop, weft__completion_t *c,
                                   int fd) {
  return loop->cops->recv(&loop->cbackend, c, fd);
}
static inline bool weft__loop_send(weft_loop_t *loop, weft__completion_t *c,
                                   int fd, const void *buf, size_t len) {
  return loop->cops->send(&loop->cbackend, c, fd, buf, len);
}
static inline void weft__loop_cancel(weft_loop_t *loop, weft__completion_t *c) {
  loop->cops->cancel(&loop->cbackend, c);
}
static inline const char *weft__loop_buf(weft_loop_t *loop, unsigned buf) {
  return loop->cops->buf_get(&loop->cbackend, buf);
}
static inline void weft__loop_buf_put(weft_loop_t *loop, unsigned buf) {
  loop->cops->buf_put(&loop->cbackend, buf);
}
static inline void weft__loop_buf_grow(weft_loop_t *loop) {
  loop->cops->grow(&loop->cbackend);
}
/* Has the completion backend anything queued for its next wait? */
static inline bool weft__loop_queued(const weft_loop_t *loop) {
  return loop->cops != NULL && loop->cops->queued(&loop->cbackend);
}
/* ...sends, in particular (they are work for now: no spin before them). */
static inline bool weft__loop_sends(const weft_loop_t *loop) {
  return loop->cbackend.sends != 0;
}

#endif /* WEFT_LOOP_INTERNAL_H */
