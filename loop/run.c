/* SPDX-License-Identifier: MIT */
/* loop/run.c: running a loop: the cross-thread queue with batched eventfd
 * wake-ups, posted functions, the loop's executor and the futures of loop
 * sources (both queue tasks on it), the stall detector, one iteration
 * (timers, tasks, the wait and its spin, events) and the run modes, stop,
 * and what a host embedding the loop polls. The spin policy is in
 * spin.c.
 *
 * Wake-ups. `wake` is AWAKE while the loop thread is running an iteration
 * (it looks at the queue before it next sleeps), SLEEPING from just before
 * a poll that may block (and whenever the loop is not running at all), and
 * SENT once a producer has written the eventfd. A producer pushes, then
 * writes the eventfd only if it moves SLEEPING to SENT: one write per batch,
 * none while the loop is busy. The loop stores SLEEPING and then re-reads
 * the queue (both sequentially consistent), so either it sees the item or
 * the producer sees SLEEPING: no lost wake-up.
 *
 * Close (loop.c) swaps the queue's head for a CLOSED marker, which refuses
 * every later push from another thread; producers still inside post/submit
 * are counted (`producers`) so close can wait for them. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <unistd.h>

/* ---- cross-thread queue ---- */

static void wake_if_sleeping(weft_loop_t *loop) {
  WEFT__PERTURB();
  uint32_t s = atomic_load_explicit(&loop->wake, memory_order_seq_cst);
  if (s != WAKE_SLEEPING ||
      !atomic_compare_exchange_strong_explicit(&loop->wake, &s, WAKE_SENT,
                                               memory_order_seq_cst,
                                               memory_order_relaxed))
    return;
  uint64_t one = 1;
  while (WEFT__SYS("write", write(loop->wake_fd, &one, sizeof one)) < 0 &&
         errno == EINTR)
    ;
  atomic_fetch_add_explicit(&loop->wakeups, 1, memory_order_relaxed);
}

/* Another thread's push: refused once close took the queue. */
static int inbox_push(weft_loop_t *loop, weft_task_t *task) {
  atomic_fetch_add_explicit(&loop->producers, 1, memory_order_seq_cst);
  weft_task_t *h = atomic_load_explicit(&loop->inbox, memory_order_relaxed);
  WEFT__PERTURB(); /* close may take the queue now */
  do {
    if (h == WEFT__INBOX_CLOSED) {
      atomic_fetch_sub_explicit(&loop->producers, 1, memory_order_release);
      return WEFT_ESHUTDOWN;
    }
    task->next = h;
    WEFT__PERTURB();
  } while (!atomic_compare_exchange_weak_explicit(
      &loop->inbox, &h, task, memory_order_seq_cst, memory_order_relaxed));
  WEFT__PERTURB(); /* queued, the loop not woken yet */
  wake_if_sleeping(loop);
  atomic_fetch_sub_explicit(&loop->producers, 1, memory_order_release);
  return 0;
}

/* On the loop thread a plain FIFO, taken during close too: a task queued
 * from a callback close runs (a cancelled operation's continuation) is run
 * by close before it returns. */
int weft__loop_submit(weft_loop_t *loop, weft_task_t *task) {
  if (weft__tl_loop == loop) {
    weft__loop_push_local(loop, task);
    return 0;
  }
  return inbox_push(loop, task);
}

/* Take the whole queue, oldest first (per producer: in posting order). */
static weft_task_t *inbox_take(weft_loop_t *loop, bool close) {
  if (!close &&
      atomic_load_explicit(&loop->inbox, memory_order_relaxed) == NULL)
    return NULL;
  WEFT__PERTURB();
  weft_task_t *list = atomic_exchange_explicit(
      &loop->inbox, close ? WEFT__INBOX_CLOSED : NULL, memory_order_acquire);
  return list == WEFT__INBOX_CLOSED ? NULL : weft__task_list_reverse(list);
}

/* ---- posted functions ---- */

typedef struct post_node {
  weft_task_t task;
  weft_loop_fn fn;
  void *arg;
  weft_loop_t *loop;
} post_node_t;

static void post_run(weft_task_t *t) {
  post_node_t *n = (post_node_t *)t;
  weft_loop_t *loop = n->loop;
  weft_loop_fn fn = n->fn;
  void *arg = n->arg;
  weft__free(n, sizeof *n);
  fn(loop, arg, loop->in_close ? WEFT_ECANCELED : 0);
}

int weft_loop_post(weft_loop_t *loop, weft_loop_fn fn, void *arg) {
  if (loop == NULL || fn == NULL)
    return WEFT_EINVAL;
  post_node_t *n = weft__malloc(sizeof *n);
  if (n == NULL)
    return WEFT_ENOMEM;
  n->task.run = post_run;
  n->fn = fn;
  n->arg = arg;
  n->loop = loop;
  int rc;
  if (weft__tl_loop == loop) { /* a post from close's callbacks: refused */
    rc = WEFT_ESHUTDOWN;
    if (!loop->in_close) {
      weft__loop_push_local(loop, &n->task);
      rc = 0;
    }
  } else {
    rc = inbox_push(loop, &n->task);
  }
  if (rc != 0)
    weft__free(n, sizeof *n);
  return rc;
}

/* run_one with a stall hook set. */
static __attribute__((noinline)) void run_one_timed(weft_loop_t *loop,
                                                    weft_task_t *t) {
  bool post = t->run == post_run; /* the node is gone after run: read now */
  weft__anyfn cb = post ? (weft__anyfn)((post_node_t *)t)->fn
                        : weft__task_callback(t);
  int64_t t0 = weft__loop_cb_begin(loop);
  t->run(t);
  weft__loop_cb_end(loop, post ? "post" : "task", cb, t0);
}

static inline void run_one(weft_loop_t *loop, weft_task_t *t) {
  if (__builtin_expect(loop->stall_fn != NULL, 0)) {
    run_one_timed(loop, t);
    return;
  }
  weft__loop_count(&loop->callbacks);
  t->run(t);
}

/* The loop thread's own submissions, a snapshot: ones they add wait. */
static void run_local(weft_loop_t *loop) {
  weft_task_t *t = loop->local_head;
  loop->local_head = loop->local_tail = NULL;
  while (t != NULL) {
    weft_task_t *next = t->next;
    run_one(loop, t);
    t = next;
  }
}

static void run_tasks(weft_loop_t *loop) {
  weft_task_t *list = inbox_take(loop, false);
  uint64_t n = 0;
  while (list != NULL) {
    weft_task_t *next = list->next;
    run_one(loop, list);
    list = next;
    n++;
  }
  if (n != 0)
    atomic_store_explicit(
        &loop->posted,
        atomic_load_explicit(&loop->posted, memory_order_relaxed) + n,
        memory_order_relaxed);
  run_local(loop);
}

/* The loop thread's queue until it stays empty: the continuations of what
 * close cancels, and what they queue in turn. (Not run_tasks: its
 * inbox_take would take the marker off the queue, letting other threads
 * in again.) */
void weft__loop_close_drain(weft_loop_t *loop) {
  while (loop->local_head != NULL)
    run_local(loop);
}

void weft__loop_close_inbox(weft_loop_t *loop) {
  weft_task_t *list = inbox_take(loop, true);
  while (list != NULL) {
    weft_task_t *next = list->next;
    run_one(loop, list);
    list = next;
  }
}

/* ---- futures owned by loop sources ---- */

static void op_stop_task(weft_task_t *task) { /* on the loop thread */
  weft__loop_op_t *op =
      (weft__loop_op_t *)((char *)task - offsetof(weft__loop_op_t, stop_task));
  op->disarm(op);
  weft__unref(&op->ext.base); /* the task's reference */
}

void weft__loop_op_cancel(weft__loop_op_t *op) { /* any thread */
  if (weft__loop_owned(op->loop)) {
    op->disarm(op);
    return;
  }
  weft__ref(&op->ext.base);
  op->stop_task.run = op_stop_task;
  if (weft__loop_submit(op->loop, &op->stop_task) != 0)
    weft__unref(&op->ext.base); /* closing: close disarms it */
}

static void op_cancelled(void *arg) { weft__loop_op_cancel(arg); }

static void loop_op_fini(weft__ext_t *e) {
  weft__loop_op_t *op = (weft__loop_op_t *)e;
  weft__free(op, op->size);
}

void weft__loop_op_init(weft__loop_op_t *op, size_t size, weft_loop_t *loop,
                        void (*disarm)(weft__loop_op_t *op)) {
  weft__loop_op_setup(op, size, loop, disarm, loop_op_fini, op_cancelled, op);
}

/* ---- the loop's executor ---- */

static int loop_ex_submit(weft_executor_t *ex, weft_task_t *task) {
  return weft__loop_submit((weft_loop_t *)ex, task);
}

/* Await on the loop thread would block the loop: refuse at once. */
static int loop_ex_await(weft_executor_t *ex, weft_future_t *f,
                         int64_t deadline_ns) {
  (void)f;
  (void)deadline_ns;
  return weft__tl_loop == (weft_loop_t *)ex ? WEFT_EDEADLK : WEFT_EAGAIN;
}

void weft__loop_put(weft_loop_t *loop) {
  if (atomic_fetch_sub_explicit(&loop->holds, 1, memory_order_acq_rel) == 1)
    weft__free(loop, sizeof *loop);
}

static void loop_ex_hold(weft_executor_t *ex, int delta) {
  weft_loop_t *loop = (weft_loop_t *)ex;
  if (delta > 0)
    atomic_fetch_add_explicit(&loop->holds, 1, memory_order_relaxed);
  else
    weft__loop_put(loop);
}

const weft_executor_ops_t weft__loop_executor_ops = {
    sizeof(weft_executor_ops_t), "loop", loop_ex_submit, loop_ex_await,
    loop_ex_hold};

weft_executor_t *weft_loop_executor(weft_loop_t *loop) {
  return loop == NULL ? NULL : &loop->executor;
}

/* ---- stall detector ---- */

void weft__loop_stall_check(weft_loop_t *loop, const char *kind, weft__anyfn cb,
                            int64_t t0) {
  int64_t d = weft_clock_now_ns() - t0;
  if (d <= loop->stall_threshold)
    return;
  weft__loop_count(&loop->stalls);
  weft_stall_t s = {kind, cb, d, loop->stall_threshold};
  loop->stall_fn(loop, &s, loop->stall_arg);
}

int weft_loop_set_stall_hook(weft_loop_t *loop, int64_t threshold_us,
                             weft_stall_fn fn, void *arg) {
  if (loop == NULL || (fn != NULL && threshold_us <= 0))
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  loop->stall_threshold = threshold_us > INT64_MAX / 1000 ? INT64_MAX
                                                          : threshold_us * 1000;
  loop->stall_arg = arg;
  loop->stall_fn = fn;
  return 0;
}

/* ---- running ---- */

/* The eventfd is edge-triggered, so its counter need not be read for the
 * next write to wake us; read it only now and then, long before it could
 * reach its maximum (2^64 - 2, where a write would fail). */
static void drain_wake_fd(weft_loop_t *loop) {
  if (++loop->wake_events < (1u << 20))
    return;
  loop->wake_events = 0;
  uint64_t v;
  while (WEFT__SYS("read", read(loop->wake_fd, &v, sizeof v)) < 0 &&
         errno == EINTR)
    ;
}

/* Nanoseconds until `due` (0 when past). */
static int64_t ns_until(int64_t due) {
  int64_t d = due - weft_clock_now_ns();
  return d > 0 ? d : 0;
}

/* With many ready fds each one's state is cold. While event i runs, start
 * loading the watcher of event i + 4 and, through the watcher of event
 * i + 2 (asked for two events ago), the socket operation it will run. */
enum { PREFETCH_WATCHER = 4, PREFETCH_OP = 2 };

/* A socket's hot fields span its first two cache lines. */
static void prefetch_watcher(const void *io) {
  __builtin_prefetch(io);
  __builtin_prefetch((const char *)io + 64);
}

static void prefetch_ahead(const weft_loop_t *loop, int i, int n) {
  if (i + 1 >= n)
    return; /* the last event: nothing lies ahead */
  if (i + PREFETCH_WATCHER < n &&
      loop->events[i + PREFETCH_WATCHER].data != NULL)
    prefetch_watcher(loop->events[i + PREFETCH_WATCHER].data);
  if (loop->module == NULL)
    return;
  if (i + PREFETCH_OP < n && loop->events[i + PREFETCH_OP].data != NULL)
    loop->module->prefetch(loop->events[i + PREFETCH_OP].data, PREFETCH_OP);
  if (loop->events[i + 1].data != NULL)
    loop->module->prefetch(loop->events[i + 1].data, 1);
}

/* How long the iteration's wait may block (ns, -1: no bound; 0: not at
 * all): until the next timer or `cap`, unless there is more to do now. */
static int64_t wait_bound(weft_loop_t *loop, bool block, int64_t cap,
                          weft_future_t *until, bool once, uint64_t ran) {
  if (!block || loop->local_head != NULL || loop->flush_wanted ||
      atomic_load_explicit(&loop->stop, memory_order_relaxed) ||
      (until != NULL && weft_future_state(until) != WEFT_PENDING) ||
      (once &&
       atomic_load_explicit(&loop->callbacks, memory_order_relaxed) != ran))
    return 0;
  int64_t due = weft__timers_next(loop);
  if (cap >= 0 && (due < 0 || cap < due))
    due = cap;
  return due < 0 ? -1 : ns_until(due);
}

/* Poll the backend, waiting up to `timeout` ns; a wait that may block
 * first tells producers the loop sleeps, then looks once more. (Not
 * inlined under GCC's TSan, which rejects an inlined atomic_thread_fence,
 * -Wtsan; elsewhere iterate inlines it.) */
#if defined(__SANITIZE_THREAD__)
__attribute__((noinline))
#endif
static int
wait_events(weft_loop_t *loop, int64_t timeout, weft_future_t *until) {
  if (timeout != 0) {
    atomic_store_explicit(&loop->wake, WAKE_SLEEPING, memory_order_seq_cst);
    WEFT__PERTURB(); /* asleep by the word, before the re-check */
    if (atomic_load_explicit(&loop->inbox, memory_order_seq_cst) != NULL ||
        atomic_load_explicit(&loop->stop, memory_order_seq_cst))
      timeout = 0;
    WEFT__PERTURB();     /* asleep by the word, not yet in the poll */
    if (until != NULL) { /* settled elsewhere (see until_wake) */
      atomic_thread_fence(memory_order_seq_cst);
      if (weft_future_state(until) != WEFT_PENDING)
        timeout = 0;
    }
    weft__loop_count(&loop->polls);
  }
  int n = weft__backend_wait(loop, timeout);
  atomic_store_explicit(&loop->wake, WAKE_AWAKE, memory_order_seq_cst);
  return n;
}

/* One iteration. `block`: the poll may wait (until the next timer, or
 * `cap`, an absolute deadline, -1 for none), unless `until` (run_until's
 * future, or NULL) settled during the iteration's callbacks, or `once` and
 * callbacks already ran (RUN_ONCE: something happened, return). */
WEFT__HOT static int iterate(weft_loop_t *loop, bool block, int64_t cap,
                             weft_future_t *until, bool once) {
  atomic_store_explicit(&loop->wake, WAKE_AWAKE, memory_order_relaxed);
  weft__loop_count(&loop->iterations);
  uint64_t ran = atomic_load_explicit(&loop->callbacks, memory_order_relaxed);
  loop->now = weft_clock_now_ns();
  weft__timers_run(loop);
  run_tasks(loop);
  if (__builtin_expect(loop->flush_wanted, 0)) {
    loop->flush_wanted = false;
    loop->module->flush(loop);
    run_local(loop); /* what the flush settled */
  }
  int64_t timeout = wait_bound(loop, block, cap, until, once, ran);
  weft__spun_t spun = {0, 0, false, false};
  /* (Sends waiting for the completion backend are work for now: the wait
   * that hands them over returns with their completions, so no spin.) */
  if (timeout != 0 && loop->spin.max_ns > 0 && !weft__loop_sends(loop))
    timeout = weft__spin_wait(loop, timeout, until, &spun);
  int n = spun.polled ? spun.n : wait_events(loop, timeout, until);
  if (n < 0)
    return n;
  loop->now = weft_clock_now_ns();
  if (spun.idle != 0)
    weft__spin_adapt(loop, &spun,
                     n > 0 || atomic_load_explicit(
                                  &loop->inbox, memory_order_relaxed) != NULL);
  loop->nevents = n;
  for (int i = 0; i < n && i < PREFETCH_WATCHER; i++)
    if (loop->events[i].data != NULL)
      prefetch_watcher(loop->events[i].data);
  for (loop->ev_index = 0; loop->ev_index < n; loop->ev_index++) {
    weft__event_t *e = &loop->events[loop->ev_index];
    prefetch_ahead(loop, loop->ev_index, n);
    if (e->data == NULL) /* its watcher was stopped during this batch */
      continue;
    if (e->data == &weft__wake_mark)
      drain_wake_fd(loop);
    else if (e->data == &weft__sig_mark)
      weft__signal_dispatch(loop);
    else
      weft__io_dispatch(loop, e->data, e->events);
    /* Continuations an event settled run now, while the socket, its op
     * and the continuation are still in cache: with a thousand ready
     * connections, running them after the whole batch finds each cold. */
    if (loop->local_head != NULL)
      run_local(loop);
  }
  loop->nevents = 0;
  weft__timers_run(loop); /* due while we polled (RUN_ONCE sees them) */
  return 0;
}
static int enter_run(weft_loop_t *loop) {
  int rc = weft__loop_check_idle(loop);
  if (rc == 0)
    loop->running = true;
  return rc;
}

/* Leaving run: from now on a post must wake us (or an embedding host). */
static void leave_run(weft_loop_t *loop) {
  loop->running = false;
  atomic_store_explicit(&loop->wake, WAKE_SLEEPING, memory_order_seq_cst);
  WEFT__PERTURB();
  if (loop->local_head != NULL ||
      atomic_load_explicit(&loop->inbox, memory_order_seq_cst) != NULL)
    wake_if_sleeping(loop);
}

int weft_loop_run(weft_loop_t *loop, weft_run_mode_t mode) {
  if (mode != WEFT_RUN_DEFAULT && mode != WEFT_RUN_ONCE &&
      mode != WEFT_RUN_NOWAIT)
    return WEFT_EINVAL;
  int rc = enter_run(loop);
  if (rc != 0)
    return rc;
  for (;;) {
    rc = iterate(loop, mode != WEFT_RUN_NOWAIT, -1, NULL,
                 mode == WEFT_RUN_ONCE);
    if (rc != 0 || mode != WEFT_RUN_DEFAULT)
      break;
    if (atomic_exchange_explicit(&loop->stop, false, memory_order_acq_rel))
      break;
  }
  leave_run(loop);
  return rc;
}

/* run_until's waker, a continuation of f on the inline executor: it runs
 * where f settles. On the loop thread it has nothing to do (the loop looks
 * at f after every callback and before it sleeps); on another it wakes the
 * loop if it sleeps. It queues no task, so none of run_until's own is left
 * behind when it returns (weft_loop_backend_timeout would say 0 for it). The
 * waker may run after run_until returned (f settled late): it touches the
 * loop only while run_until has not retired it (state), and the state
 * lives until both let go of it (refs). */
enum { UNTIL_IDLE = 0, UNTIL_WAKING, UNTIL_RETIRED };
typedef struct until_waker {
  weft_loop_t *loop;
  _Atomic uint32_t state, refs;
} until_waker_t;

static void until_unref(void *arg) {
  until_waker_t *w = arg;
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
    weft__free(w, sizeof *w);
}

static weft_result_t until_wake(void *arg, weft_future_t *src) {
  (void)src;
  until_waker_t *w = arg;
  uint32_t idle = UNTIL_IDLE;
  WEFT__PERTURB();
  if (!weft__loop_owned(w->loop) &&
      atomic_compare_exchange_strong_explicit(&w->state, &idle, UNTIL_WAKING,
                                              memory_order_acq_rel,
                                              memory_order_acquire)) {
    /* f's settle before the look at the loop's wake word; the loop stores
     * SLEEPING before it looks at f (iterate): one of the two sees the
     * other */
    atomic_thread_fence(memory_order_seq_cst);
    wake_if_sleeping(w->loop);
    atomic_store_explicit(&w->state, UNTIL_IDLE, memory_order_release);
  }
  until_unref(w);
  return weft_ok_int(0);
}

/* From now on the waker leaves the loop alone (waits out one in flight). */
static void until_retire(until_waker_t *w) {
  uint32_t idle = UNTIL_IDLE;
  while (!atomic_compare_exchange_weak_explicit(&w->state, &idle, UNTIL_RETIRED,
                                                memory_order_acq_rel,
                                                memory_order_relaxed)) {
    idle = UNTIL_IDLE;
    sched_yield(); /* another thread is inside wake_if_sleeping: short */
  }
  until_unref(w);
}

int weft_loop_run_until(weft_loop_t *loop, weft_future_t *f,
                        int64_t timeout_ms) {
  if (f == NULL || timeout_ms < -1)
    return WEFT_EINVAL;
  int rc = enter_run(loop);
  if (rc != 0)
    return rc;
  if (weft_future_state(f) != WEFT_PENDING) {
    leave_run(loop);
    return 0;
  }
  until_waker_t *w = weft__malloc(sizeof *w);
  if (w == NULL) {
    leave_run(loop);
    return WEFT_ENOMEM;
  }
  w->loop = loop;
  atomic_init(&w->state, UNTIL_IDLE);
  atomic_init(&w->refs, 2); /* ours and the waker's */
  weft_future_t *d;
  rc = weft_future_then(f, weft_executor_inline(), until_wake, w, until_unref,
                        &d);
  if (rc != 0) {
    weft__free(w, sizeof *w);
    leave_run(loop);
    return rc;
  }
  /* past the clock's range (INT64_MAX): no deadline at all */
  int64_t deadline = weft__deadline_after_ms(timeout_ms);
  if (deadline == INT64_MAX)
    deadline = -1;
  while (weft_future_state(f) == WEFT_PENDING) {
    if (atomic_exchange_explicit(&loop->stop, false, memory_order_acq_rel)) {
      rc = WEFT_EINTR;
      break;
    }
    if (deadline >= 0 && weft_clock_now_ns() >= deadline) {
      rc = WEFT_ETIMEDOUT;
      break;
    }
    rc = iterate(loop, true, deadline, f, false);
    if (rc != 0)
      break;
  }
  until_retire(w);
  weft_future_cancel(d); /* f stays the caller's: only our waker goes */
  weft_future_release(d);
  leave_run(loop);
  return rc;
}

int weft_loop_stop(weft_loop_t *loop) {
  if (loop == NULL)
    return WEFT_EINVAL;
  if (weft__tl_loop == loop) {
    atomic_store_explicit(&loop->stop, true, memory_order_relaxed);
    return 0;
  }
  atomic_fetch_add_explicit(&loop->producers, 1, memory_order_seq_cst);
  atomic_store_explicit(&loop->stop, true, memory_order_seq_cst);
  WEFT__PERTURB();
  wake_if_sleeping(loop);
  atomic_fetch_sub_explicit(&loop->producers, 1, memory_order_release);
  return 0;
}

/* ---- embedding ---- */

int weft_loop_backend_fd(const weft_loop_t *loop) {
  if (loop == NULL)
    return WEFT_EINVAL;
  /* A host polls the epoll fd; completions must show there too: they
   * signal the loop's eventfd (in the epoll set) from now on. */
  if (loop->cops != NULL && weft__loop_owned(loop)) {
    weft_loop_t *l = (weft_loop_t *)loop;
    int rc = l->cops->notify_fd(&l->cbackend, l->wake_fd);
    if (rc != 0)
      return rc;
  }
  return loop->backend.fd;
}

int64_t weft_loop_backend_timeout(weft_loop_t *loop) {
  if (loop == NULL)
    return WEFT_EINVAL;
  if (loop->local_head != NULL || loop->flush_wanted ||
      atomic_load_explicit(&loop->inbox, memory_order_relaxed) != NULL)
    return 0;
  /* reads and writes queued for completion reach the kernel only when the
   * loop runs: until then nothing would wake the host for them */
  if (weft__loop_queued(loop))
    return 0;
  int64_t due = weft__timers_next(loop);
  if (due < 0)
    return -1;
  int64_t ns = ns_until(due); /* in ms, rounded up: never early */
  return ns / 1000000 + (ns % 1000000 != 0);
}
