/* SPDX-License-Identifier: MIT */
/* weft/loop.h: the event loop (reactor): fd watchers, timers, signals,
 * cross-thread posts and completions, run modes, and the stall detector.
 * Life cycle: a loop is created and closed (pending work cancelled, its
 * callbacks run with WEFT_ECANCELED, its fds closed, freed); a handle
 * (timer, watcher, signal handler) is started and stopped, and its memory
 * stays the caller's. Design: docs/design/loop.md. */
#ifndef WEFT_LOOP_H
#define WEFT_LOOP_H

#include <weft/common.h>
#include <weft/future.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * One loop per thread. The thread that creates a loop is its loop thread:
 * it runs it, starts and stops its timers, watchers and signal handlers,
 * and closes it. Any thread may post work to it (weft_loop_post(), or a
 * continuation sent to weft_loop_executor()), settle a future whose
 * continuation runs on it, and stop it. Posts travel through an intrusive
 * lock-free queue; the loop is woken with one eventfd write per batch (only
 * when it is about to sleep or sleeping), not one per item. Items posted by
 * one thread run in the order it posted them.
 *
 * Never block the loop: from its creation to its close the loop thread is
 * marked as running the loop's executor, so weft_future_await() there on a
 * pending future returns WEFT_EDEADLK at once instead of hanging (the loop
 * may be the only thing that could settle it). Drive the loop to a result
 * with weft_loop_run_until(). Send CPU work and blocking calls to the pool
 * and continue on the loop with weft_future_then(f, weft_loop_executor(l)).
 * The stall detector (off by default) reports every callback that ran
 * longer than a threshold.
 *
 * Callbacks receive a status: 0 normally, WEFT_ECANCELED once when the loop
 * closes with them still pending (timers, watchers, signal handlers, posted
 * functions): every callback that was armed runs exactly once more with the
 * error, so its owner can free what it holds. Likewise every operation
 * pending at close (a sleep, a socket read...) is cancelled, and its
 * continuations run once, seeing WEFT_ECANCELED, before close returns.
 *
 * Handles (weft_timer_t, weft_io_t, weft_signal_t) are embedded in the
 * user's own structures (no allocation to start or stop one); their fields
 * are private. A handle must stay alive while it is active. Their sizes are
 * part of the ABI and change only with the major version (docs/README.md,
 * "Structs that grow").
 */

typedef struct weft_loop weft_loop_t;

/** Run modes for weft_loop_run(). */
typedef enum weft_run_mode {
  WEFT_RUN_DEFAULT = 0, /* until weft_loop_stop() */
  /* one iteration; polls blocking only if no callback ran before the poll
   * (waits for something) */
  WEFT_RUN_ONCE = 1,
  WEFT_RUN_NOWAIT = 2 /* one iteration, never blocking */
} weft_run_mode_t;

/**
 * Loop options: zero-initialise, set `size` to sizeof(weft_loop_options_t),
 * then change what you need. Every field's zero is its default, and so will
 * be the zero of every field added later; weft reads no byte past `size`,
 * and the bytes it does not know (past its own sizeof, and the `reserved`
 * slots) must be zero. See docs/README.md, "Structs that grow".
 */
typedef struct weft_loop_options {
  size_t size;         /* sizeof(weft_loop_options_t) */
  unsigned max_events; /* events per poll; 0: 256 */
  /* Adaptive spin before sleeping, in microseconds; 0: 50; negative:
   * never. When work keeps arriving within this long of the loop running
   * out of it (a post, a continuation, an event on one of its fds), the
   * loop polls for the next piece for a while instead of sleeping in the
   * kernel. The spin adapts: it shrinks when work comes later or not at
   * all (an idle loop does not spin), it does not hold a CPU that a pool
   * worker or a peer on the same CPU needs, and it never outlasts the next
   * timer. Over 1,000,000 (one second) is WEFT_EINVAL. The rules: see
   * docs/design/loop.md. */
  int spin_us;
  void *reserved[3]; /* zero */
  /* Where the loop runs work that blocks a thread: file operations without
   * an io_uring (weft/fs.h) and name lookups (weft_dns_resolve()). Give it
   * weft_pool_blocking_executor(pool) (the pool must outlive the loop's use
   * of it: shut the pool down after closing the loop), or any executor
   * whose threads may block. NULL: the loop starts threads of its own for
   * it on first need (up to 4, started one at a time when none is idle,
   * kept until the loop closes; close does not wait for a call still
   * blocked in one of them, such as a slow lookup: that thread ends when
   * the call returns, freeing the request's memory then, so a program
   * that must know when every weft block is gone, to change allocators
   * say, gives the loop a pool's executor and shuts the pool down).
   * Either way the loop thread itself never blocks.
   * A caller whose `size` ends before this field gets NULL. */
  weft_executor_t *blocking;
} weft_loop_options_t;

/**
 * Create a loop owned by the calling thread (its loop thread).
 * On 0 *out owns the loop; close it with weft_loop_close() on this thread.
 * Backend: epoll, plus an io_uring through which stream sockets read and
 * write, where the kernel has one (Linux 6.1 or later, io_uring not
 * disabled by sysctl or seccomp): the loop then waits in the ring. It
 * costs one more fd and a pool of 2 KiB read buffers: twice max_events of
 * them (at least 64), growing up to four times that when reads find none,
 * touched only as used (4 MiB at most for the default 256). Set
 * WEFT_IO_URING=0 in the environment for plain epoll. Which one a loop
 * has: weft_loop_stats().backend. Operations settle at the same points
 * either way (weft/net.h, "When operations settle"); on kernels from 6.12,
 * with 32 or more reads waiting, the ring's wait may gather completions
 * for up to 20 us before it returns (docs/design/net.md).
 * Errors: WEFT_EINVAL (out NULL, bad options: size below the first
 * version's struct or above 4096, a field out of range), WEFT_ENOTSUP (a
 * reserved slot or a byte past this weft's struct is not zero: a caller
 * built against a later weft asked for something this one cannot do),
 * WEFT_EBUSY (this thread already has a loop), WEFT_ENOMEM, WEFT_EMFILE / WEFT_ENFILE (no fd for
 * epoll or eventfd), or another code from the kernel. *out untouched then.
 * Thread: any thread; it becomes the loop thread.
 */
WEFT_EXTERN int weft_loop_create(const weft_loop_options_t *opts,
                                 weft_loop_t **out);

/**
 * Close the loop and free it. Everything still pending is finished, and
 * what depends on it runs once, before close returns:
 * - functions other threads posted that have not run yet are run with
 *   WEFT_ECANCELED; executor tasks other threads queued (continuations of
 *   futures settled there) run as usual;
 * - active timers, watchers and signal handlers have their callback run
 *   once with WEFT_ECANCELED;
 * - every pending operation of the loop is cancelled: sleeps, timeouts,
 *   signal futures, and each socket's reads, writes, accepts, connects and
 *   shutdowns. Its future settles as cancelled (WEFT_ECANCELED) and its
 *   continuations run exactly once, seeing it cancelled: those on this
 *   loop's executor (weft_future_then, weft_future_watch) run on this
 *   thread before close returns, inline ones at once, those on other
 *   executors are submitted to them. So a continuation that frees
 *   per-operation state frees it on close too;
 * - every socket of the loop is closed. Its handle stays valid until close
 *   returns, so a continuation may still name it: weft_socket_close()
 *   returns 0 and new operations on it fail with WEFT_ESHUTDOWN.
 * While close runs, on the loop thread (from the callbacks and
 * continuations it runs): new timers, watchers, signal handlers, sleeps,
 * timeouts and socket operations are refused with WEFT_ESHUTDOWN, and so
 * are posts; a task sent to the loop's executor (a then on an
 * already-settled future, say) is taken and run before close returns.
 * From any other thread, every post and submit after close began is
 * refused with WEFT_ESHUTDOWN: a then on the loop's executor whose source
 * settles there is rejected with it, its function never runs. Closes the
 * fds the loop owns (epoll, eventfd, signalfd, io_uring), never the
 * user's. The loop pointer is invalid afterwards: other threads must have
 * stopped using it (settle or cancel what they send to the loop, and shut
 * down the pools whose results come back to it, before closing it).
 * Returns 0; WEFT_EINVAL for NULL; WEFT_EPERM off the loop thread;
 * WEFT_EBUSY when called from inside one of the loop's callbacks.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_close(weft_loop_t *loop);

/**
 * Run the loop. Each iteration: due timers, posted work, then poll for fd
 * events (blocking unless there is more to do, a stop was asked for, or the
 * mode is NOWAIT) and dispatch them.
 * Returns 0 when stopped (DEFAULT) or after the iteration (ONCE, NOWAIT);
 * WEFT_EINVAL (NULL, bad mode), WEFT_EPERM (off the loop thread), WEFT_EBUSY
 * (the loop is already running: no nested runs), or a kernel error from the
 * poll.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_run(weft_loop_t *loop, weft_run_mode_t mode);

/**
 * Run the loop until `f` settles, then return. The caller keeps its handle
 * on f; read the result with the future accessors.
 * Any timeout_ms up to INT64_MAX means waiting that long (-1: no limit).
 * When it returns, nothing of its own is left queued on the loop:
 * weft_loop_backend_timeout() tells the time to the next timer (-1: none), as
 * for an idle loop.
 * Returns 0 once f has settled (whatever the outcome); WEFT_ETIMEDOUT when
 * `timeout_ms` (-1: none) passes first; WEFT_EINTR when weft_loop_stop() was
 * called first; WEFT_EINVAL (f NULL, timeout_ms below -1); WEFT_ENOMEM;
 * and the errors of weft_loop_run().
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_run_until(weft_loop_t *loop, weft_future_t *f,
                                    int64_t timeout_ms);

/**
 * Ask the loop to stop: weft_loop_run() returns after the current
 * iteration; a stop asked while the loop is not running ends the next run
 * after its first iteration.
 * Returns 0, WEFT_EINVAL for NULL.
 * Thread: any thread (wakes the loop if it sleeps).
 */
WEFT_EXTERN int weft_loop_stop(weft_loop_t *loop);

/** A posted function: runs once on the loop thread; status 0 or, when the
 * loop closes before it ran, WEFT_ECANCELED. */
typedef void (*weft_loop_fn)(weft_loop_t *loop, void *arg, int status);

/**
 * Run `fn(loop, arg, 0)` on the loop thread, soon. Functions posted from
 * one thread run in the order they were posted. `arg` stays the caller's;
 * fn is its last user when it runs.
 * Errors: WEFT_EINVAL (NULL loop or fn), WEFT_ENOMEM, WEFT_ESHUTDOWN (the
 * loop's close has begun, on any thread, its own callbacks included: fn
 * will not run).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_loop_post(weft_loop_t *loop, weft_loop_fn fn, void *arg);

/**
 * The loop's executor, for weft_future_then() and weft_executor_submit():
 * tasks run on the loop thread, one producer's in its order. Once close
 * began, a submit from another thread is refused with WEFT_ESHUTDOWN; one
 * from the loop thread (during close: from a callback or continuation
 * close runs) is run before close returns. Borrowed: valid until the loop
 * is closed. NULL when loop is NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_executor_t *weft_loop_executor(weft_loop_t *loop);

/**
 * The loop of the calling thread, or NULL.
 * Thread: any thread.
 */
WEFT_EXTERN weft_loop_t *weft_loop_current(void);

/**
 * For embedding the loop in another event loop: an fd that becomes readable
 * when the loop has fd events or posted work (add it to the host loop, and
 * run weft_loop_run(WEFT_RUN_NOWAIT) when it fires), and the time until the
 * next timer is due, in ms, rounded up (-1: no timer; 0: something is ready
 * now), to use as the host's poll timeout. It is exact at any point between
 * runs, right after weft_loop_run() or weft_loop_run_until() returns
 * included. The fd stays the loop's; never close it.
 * weft_loop_backend_fd returns the fd, or WEFT_EINVAL for NULL; on a loop with an
 * io_uring, the first call also has the ring's completions wake that fd
 * (which costs a little per completion from then on), and may fail with
 * a code from the kernel. On such a loop, socket reads and writes queued
 * for the ring reach the kernel only when the loop runs, so the timeout is
 * 0 while any are queued: always poll with it.
 * weft_loop_backend_timeout returns the timeout, or WEFT_EINVAL for NULL.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_backend_fd(const weft_loop_t *loop);
WEFT_EXTERN int64_t weft_loop_backend_timeout(weft_loop_t *loop);

/** The loop's cached time (weft_clock_now_ns() taken at the start of the current
 * iteration, or at the last timer start between runs), in ns; what timer
 * deadlines are relative to. Returns WEFT_EINVAL for NULL.
 * Thread: the loop thread. */
WEFT_EXTERN int64_t weft_loop_now_ns(const weft_loop_t *loop);

/**
 * Loop statistics (each counter since creation). The struct's size is
 * fixed: new counters take `reserved` slots (zero from a weft that does not
 * know them), so weft never writes more than a caller's struct holds. See
 * docs/README.md, "Structs that grow".
 */
typedef struct weft_loop_stats {
  uint64_t iterations; /* loop iterations */
  uint64_t polls;      /* poll calls that could block */
  uint64_t posted;     /* items received from other threads */
  uint64_t wakeups;    /* eventfd writes made to wake this loop */
  uint64_t spins;      /* adaptive spins before sleeping (see spin_us) */
  uint64_t spin_hits;  /* of those, ended by work: a sleep avoided */
  uint64_t callbacks;  /* callbacks and tasks run */
  uint64_t timers_fired;
  uint64_t stalls; /* callbacks over the stall threshold */
  unsigned timers_active, watchers_active;
  const char *backend;  /* "io_uring" or "epoll" (see weft_loop_create) */
  uint64_t reserved[8]; /* zero */
} weft_loop_stats_t;

/**
 * Fill *stats (every byte of it, reserved ones zero). Returns 0,
 * WEFT_EINVAL for NULL arguments.
 * Thread: any thread (counters written by other threads are read relaxed).
 */
WEFT_EXTERN int weft_loop_stats(weft_loop_t *loop, weft_loop_stats_t *stats);

/* ------------------------------------------------------------------ */
/* Stall detector                                                       */
/* ------------------------------------------------------------------ */

/** What the stall detector reports. weft owns the struct and passes it by
 * pointer, so it may grow at its end: a caller reads only the fields it
 * knows. */
typedef struct weft_stall {
  const char *kind;       /* "timer", "io", "signal", "post", "task" */
  void (*callback)(void); /* the callback (cast: compare with your own) */
  int64_t duration_ns;    /* how long it ran */
  int64_t threshold_ns;
} weft_stall_t;

typedef void (*weft_stall_fn)(weft_loop_t *loop, const weft_stall_t *stall,
                              void *arg);

/**
 * Install (fn not NULL) or remove (fn NULL) the stall detector: after every
 * callback that ran longer than `threshold_us`, fn(loop, &stall, arg) runs
 * on the loop thread. Off by default; costs two clock reads per callback
 * when on.
 * Returns 0; WEFT_EINVAL (loop NULL, threshold_us <= 0 with fn set);
 * WEFT_EPERM off the loop thread.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_set_stall_hook(weft_loop_t *loop,
                                         int64_t threshold_us, weft_stall_fn fn,
                                         void *arg);

/* ------------------------------------------------------------------ */
/* Timers                                                               */
/* ------------------------------------------------------------------ */

typedef struct weft_timer weft_timer_t;

/** A timer callback: status 0 when due, WEFT_ECANCELED at loop close. */
typedef void (*weft_timer_fn)(weft_timer_t *timer, int status, void *arg);

/** A timer, embedded in the user's structure. Fields are private. */
struct weft_timer {
  int64_t priv_due;
  int64_t priv_repeat;
  weft_loop_t *priv_loop;
  weft_timer_fn priv_fn;
  void *priv_arg;
  uint64_t priv_seq;   /* start order */
  uint32_t priv_index; /* heap slot + 1; 0: inactive */
  uint32_t priv_flags;
};

/**
 * Prepare a timer on `loop` with its callback. Does not start it. The
 * handle need not be zeroed first; a started one is not initialised again
 * (stop it first, on its own loop's thread).
 * Returns 0; WEFT_EINVAL (NULL loop, timer or fn); WEFT_EPERM off the loop
 * thread; WEFT_EBUSY (the timer is started, on this loop or on another:
 * it keeps running unchanged).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_timer_init(weft_loop_t *loop, weft_timer_t *timer,
                                weft_timer_fn fn, void *arg);

/**
 * Start (or restart) the timer: first due `timeout_ms` after the loop's
 * cached time, then every `repeat_ms` (0: one-shot) until stopped. Timers
 * due at the same time fire in the order they were started: timers started
 * while the cached time stands still count as started 1 ns apart, so a
 * deadline may be later than the cached time + timeout by as many
 * nanoseconds as timers were started before it in that iteration. O(log n).
 * A repeating timer keeps its phase: each deadline is the previous one +
 * repeat_ms, however late the call before it ran; when the loop was late
 * by a whole period or more, the beats it missed are skipped (the next
 * deadline is the first on the phase after the loop's time), never made
 * up in a burst of calls. Timeouts up to INT64_MAX ms mean that long
 * (a deadline beyond the clock's range is never reached). May be called
 * from any loop callback, including the timer's own; a timer started or
 * restarted by a timer callback runs no earlier than the loop's next
 * iteration, even with timeout_ms 0 (so a timer that restarts itself
 * with 0 runs once per iteration).
 * Returns 0; WEFT_EINVAL (timer not initialised, timeout_ms or repeat_ms
 * negative); WEFT_EPERM off the loop thread; WEFT_ENOMEM (the heap could not
 * grow: the timer is left stopped); WEFT_ESHUTDOWN (the loop is closing).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_timer_start(weft_timer_t *timer, int64_t timeout_ms,
                                 int64_t repeat_ms);

/**
 * Stop the timer; its callback will not run (for this start). Stopping a
 * stopped timer is a no-op. O(log n). May be called from any loop callback.
 * Returns 0; WEFT_EINVAL (NULL or not initialised); WEFT_EPERM off the loop
 * thread.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_timer_stop(weft_timer_t *timer);

/** True if the timer is started; false if not, and for NULL.
 * Thread: the loop thread. */
WEFT_EXTERN bool weft_timer_is_active(const weft_timer_t *timer);

/**
 * A future fulfilled (with the integer 0) `ms` after the loop's cached time
 * (any ms up to INT64_MAX; started by a timer callback, no earlier than the
 * next iteration). The future form of a one-shot timer: a weft_timer_t has
 * no allocation and can repeat; this composes with other futures. Cancelling it stops its timer (from any thread). On 0
 * *out is one handle owned by the caller. If the loop closes first the
 * future is cancelled.
 * Errors: WEFT_EINVAL (NULL, ms negative), WEFT_ENOMEM, WEFT_ESHUTDOWN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_sleep(weft_loop_t *loop, int64_t ms,
                                weft_future_t **out);

/**
 * A future that settles as `f` settles, unless `ms` (up to INT64_MAX)
 * pass first: then it rejects with WEFT_ETIMEDOUT and cancels `f` (as
 * weft_future_cancel() would from below: f is cancelled if nothing else
 * needs it, so release your own handle on f once you made the timeout).
 * When f settles first the timer is stopped. Cancelling the result
 * cancels f and stops the timer.
 * The caller keeps its handle on f; on 0 *out is one handle.
 * Errors: WEFT_EINVAL (NULL, ms negative), WEFT_ENOMEM, WEFT_ESHUTDOWN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_loop_timeout(weft_loop_t *loop, weft_future_t *f,
                                  int64_t ms, weft_future_t **out);

/* ------------------------------------------------------------------ */
/* fd watchers                                                          */
/* ------------------------------------------------------------------ */

enum { WEFT_READABLE = 1, WEFT_WRITABLE = 2 };

typedef struct weft_io weft_io_t;

/**
 * A watcher callback: `events` is what is ready (WEFT_READABLE and/or
 * WEFT_WRITABLE; a hang-up or an fd error reports both, so a read or write
 * finds out what happened); status is 0, or WEFT_ECANCELED (events 0) when
 * the loop closes with the watcher active.
 */
typedef void (*weft_io_fn)(weft_io_t *io, unsigned events, int status,
                           void *arg);

/** A watcher on a user's fd, embedded in the user's structure. Private. */
struct weft_io {
  weft_loop_t *priv_loop;
  weft_io_fn priv_fn;
  void *priv_arg;
  int priv_fd;
  unsigned priv_events;
  weft_io_t *priv_prev, *priv_next;
};

/**
 * Watch `fd` (level-triggered) for `events` (a non-empty mask of
 * WEFT_READABLE | WEFT_WRITABLE) and call fn while it is ready. The fd stays
 * the caller's: the loop never closes it; stop the watcher before closing
 * the fd. One watcher per fd per loop. The handle need not be zeroed
 * before its first start; an active one is not started again (stop it
 * first, or change its events with weft_io_modify()).
 * Returns 0; WEFT_EINVAL (NULL loop, io or fn, fd < 0, empty or unknown
 * mask, io already active on this loop or on another loop: it stays as it
 * was); WEFT_EPERM off the loop thread;
 * WEFT_EEXIST (the fd is already watched by this loop); WEFT_EBADF /
 * other kernel errors from epoll_ctl (io is left stopped); WEFT_ESHUTDOWN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_io_start(weft_loop_t *loop, weft_io_t *io, int fd,
                              unsigned events, weft_io_fn fn, void *arg);

/**
 * Change the events of an active watcher (a non-empty mask).
 * Returns 0; WEFT_EINVAL (NULL, inactive, bad mask); WEFT_EPERM off the loop
 * thread; kernel errors from epoll_ctl (the watcher keeps its old mask).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_io_modify(weft_io_t *io, unsigned events);

/**
 * Stop watching; fn is not called again (not even with WEFT_ECANCELED).
 * May be called from any loop callback, the watcher's own included.
 * Stopping an inactive watcher (stopped, or zero-initialised and never
 * started) is a no-op.
 * Returns 0; WEFT_EINVAL for NULL; WEFT_EPERM off the loop thread.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_io_stop(weft_io_t *io);

/* ------------------------------------------------------------------ */
/* Signals                                                              */
/* ------------------------------------------------------------------ */

typedef struct weft_signal weft_signal_t;

/** A signal callback: signum delivered (status 0), or WEFT_ECANCELED at
 * loop close (signum 0). */
typedef void (*weft_signal_fn)(weft_signal_t *sig, int signum, int status,
                               void *arg);

/** A signal handler, embedded in the user's structure. Private. */
struct weft_signal {
  weft_loop_t *priv_loop;
  weft_signal_fn priv_fn;
  void *priv_arg;
  int priv_signum;
  int priv_active;
  weft_signal_t *priv_prev, *priv_next;
};

/**
 * Deliver `signum` (SIGINT, SIGTERM, SIGHUP, ...) to fn on the loop thread,
 * through a signalfd, each time it arrives, until stopped. The signal is
 * blocked in the loop thread; weft's own threads (pool workers) block every
 * signal; block it in your other threads too (or before creating them), or
 * the kernel may deliver it to one of them the ordinary way. Several
 * handlers may watch one signal; each runs. Stopping the last handler of a
 * signal leaves it blocked (a pending one is discarded, not delivered).
 * The handle need not be zeroed before its first start; an active one is
 * not started again (stop it first; then it may be started on any signal).
 * Returns 0; WEFT_EINVAL (NULL, fn NULL, signum invalid or SIGKILL/SIGSTOP,
 * sig already active on this loop or on another loop: it stays as it
 * was); WEFT_EPERM off the loop thread;
 * WEFT_ENOMEM/WEFT_EMFILE (no signalfd); WEFT_ESHUTDOWN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_signal_start(weft_loop_t *loop, weft_signal_t *sig,
                                  int signum, weft_signal_fn fn, void *arg);

/**
 * Stop a handler; fn is not called again. No-op when inactive (stopped, or
 * zero-initialised and never started).
 * Returns 0; WEFT_EINVAL for NULL; WEFT_EPERM off the loop thread.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_signal_stop(weft_signal_t *sig);

/**
 * A future fulfilled with the integer `signum` the next time it arrives
 * (same delivery rules as weft_signal_start()). Cancelling it (from any
 * thread) stops watching; the loop's close cancels it.
 * Why both this and weft_signal_start(): a handler is for every arrival,
 * with no allocation per signal; this future is for one arrival that
 * composes with other futures (weft_future_race() with a read, or
 * weft_loop_timeout()), as weft_loop_sleep() is to a timer.
 * Errors: WEFT_EINVAL, WEFT_ENOMEM, WEFT_EMFILE, WEFT_ESHUTDOWN, WEFT_EPERM.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_signal_next(weft_loop_t *loop, int signum,
                                 weft_future_t **out);

WEFT_END_DECLS

#endif /* WEFT_LOOP_H */
