/* SPDX-License-Identifier: MIT */
/* loop/net/writer.c: the buffered writer of weft/stream.h, over the
 * socket's public writes. Two buffers: one in a socket write, the other
 * filling; a task on the loop's queue hands the filling one to the socket
 * when the code that wrote returns to the loop, and each write's end hands
 * over the next. Waits (flush, room) are loop ops in one FIFO list, with
 * one timer for the earliest deadline. Design: docs/design/streams.md,
 * "Writer". */
#include "internal.h"

#include <string.h>
#include <weft/fiber.h>
#include <weft/stream.h>
#include <weft/system.h>

enum { CHUNK_DEFAULT = 16384 };
#define MAX_QUEUED_DEFAULT ((size_t)1 << 20)

typedef struct wwait {
  weft__loop_op_t op;
  weft_writer_t *w; /* NULL once settled or detached */
  struct wwait *prev, *next;
  uint64_t target; /* flush: the written total the kernel must take */
  size_t room;     /* room: the write's size (0 for a flush) */
  bool is_room;
  int64_t deadline;
} wwait_t;

typedef struct wbuf {
  char *p;
  size_t cap, len;
  weft_future_t *f; /* its socket write, or NULL */
  weft_watch_t watch;
} wbuf_t;

struct weft_writer {
  weft_socket_t *sock;
  weft_loop_t *loop;
  size_t chunk, max;
  wbuf_t b[2];
  unsigned fill;     /* the buffer writes go to */
  unsigned inflight; /* socket writes in flight (2 only after a destroy) */
  uint64_t written, taken; /* totals: copied in, taken by the kernel */
  int err;                 /* the stream's error, sticky */
  bool scheduled, destroyed;
  unsigned busy; /* callbacks and calls under way: the memory stays */
  wwait_t *head, *tail;
  weft_timer_t timer; /* the earliest wait's deadline */
  weft_timer_t retry; /* a socket write refused for memory: again soon */
  int64_t armed;      /* the timer's deadline, 0: stopped */
  weft_task_t task;
};

static int check(const weft_writer_t *w) {
  if (w == NULL)
    return WEFT_EINVAL;
  return weft__loop_owned(w->loop) ? 0 : WEFT_EPERM;
}

/* ---- waits ---- */

static void unlink_wait(weft_writer_t *w, wwait_t *x) {
  if (x->prev != NULL)
    x->prev->next = x->next;
  else
    w->head = x->next;
  if (x->next != NULL)
    x->next->prev = x->prev;
  else
    w->tail = x->prev;
  x->w = NULL;
}

/* Settle x (unlinked; rc 0: fulfilled with 0) and drop the writer's
 * reference. */
static void settle_one(wwait_t *x, int rc) {
  struct weft_future *f = &x->op.ext.base;
  uint32_t st = rc == 0                ? WEFT_FULFILLED
                : rc == WEFT_ECANCELED ? WEFT_CANCELLED
                                       : WEFT_REJECTED;
  (void)weft__settle_int(f, st, 0, rc);
  weft__unref(f);
}

static void wait_settle(weft_writer_t *w, wwait_t *x, int rc) {
  unlink_wait(w, x);
  settle_one(x, rc);
}

/* Waits taken off the writer's list, settled after the scan: a settle may
 * run a continuation at once (weft_executor_inline) that cancels, adds or
 * settles other waits, which then no longer share this chain. */
typedef struct {
  wwait_t *head, *tail;
} chain_t;

static void chain_take(weft_writer_t *w, chain_t *c, wwait_t *x) {
  unlink_wait(w, x);
  x->prev = NULL;
  x->next = NULL;
  if (c->tail != NULL)
    c->tail->next = x;
  else
    c->head = x;
  c->tail = x;
}

static void chain_settle(chain_t *c, int rc) {
  for (wwait_t *x = c->head, *next; x != NULL; x = next) {
    next = x->next;
    settle_one(x, rc);
  }
}

/* Arm the timer for the earliest deadline of the waits (or stop it).
 * Whenever a wait has a deadline the timer is active (a wait's start
 * fails if it cannot start it, and deadline_due takes its slot back at
 * once), so this only moves it, which allocates nothing. */
static void rearm(weft_writer_t *w) {
  int64_t d = 0;
  for (wwait_t *x = w->head; x != NULL; x = x->next)
    if (x->deadline != 0 && (d == 0 || x->deadline < d))
      d = x->deadline;
  if (d == w->armed)
    return;
  w->armed = d;
  if (d == 0)
    weft_timer_stop(&w->timer);
  else
    (void)weft__timer_start_at(&w->timer, d);
}

/* Settle the waits that are due: flushes whose bytes went, room waits in
 * their order while they fit; all of them with the stream's error. */
static void waits_run(weft_writer_t *w) {
  bool room_blocked = false;
  chain_t c = {NULL, NULL};
  int rc = w->err;
  for (wwait_t *x = w->head, *next; x != NULL; x = next) {
    next = x->next;
    if (rc != 0) {
      chain_take(w, &c, x);
    } else if (!x->is_room) {
      if (w->taken >= x->target)
        chain_take(w, &c, x);
    } else if (!room_blocked) {
      if (w->written - w->taken + x->room <= w->max)
        chain_take(w, &c, x);
      else
        room_blocked = true;
    }
  }
  chain_settle(&c, rc);
  if (!w->destroyed)
    rearm(w);
}

/* A callback or call that may settle waits holds the writer's memory: a
 * continuation run at once may close the writer meanwhile. */
static void maybe_free(weft_writer_t *w);
static void enter(weft_writer_t *w) { w->busy++; }
static void leave(weft_writer_t *w) {
  if (--w->busy == 0 && w->destroyed)
    maybe_free(w);
}

static void wait_disarm(weft__loop_op_t *op) { /* a cancel, loop thread */
  wwait_t *x = (wwait_t *)op;
  weft_writer_t *w = x->w;
  if (w == NULL)
    return;
  unlink_wait(w, x);
  weft__unref(&op->ext.base);
  rearm(w);
}

static void deadline_due(weft_timer_t *t, int status, void *arg) {
  weft_writer_t *w = arg;
  w->armed = 0;
  if (status != 0)
    return;
  /* Take the timer's slot in the loop's heap back (just freed: no
   * allocation) before a continuation can fill it. */
  (void)weft_timer_start(t, INT64_MAX, 0);
  w->armed = INT64_MAX;
  int64_t now = weft_clock_now_ns();
  chain_t c = {NULL, NULL};
  for (wwait_t *x = w->head, *next; x != NULL; x = next) {
    next = x->next;
    if (x->deadline != 0 && x->deadline <= now)
      chain_take(w, &c, x);
  }
  enter(w);
  chain_settle(&c, WEFT_ETIMEDOUT);
  if (!w->destroyed)
    rearm(w);
  leave(w);
}

/* ---- socket writes ---- */

static void writer_free(weft_writer_t *w) {
  for (int i = 0; i < 2; i++)
    if (w->b[i].p != NULL)
      weft__free(w->b[i].p, w->b[i].cap);
  weft__free(w, sizeof *w);
}

static void maybe_free(weft_writer_t *w) {
  if (w->destroyed && w->inflight == 0 && !w->scheduled && w->busy == 0)
    writer_free(w);
}

/* The stream failed: bytes not taken are dropped, waits rejected. */
static void fail(weft_writer_t *w, int e) {
  if (w->err == 0)
    w->err = e;
  for (int i = 0; i < 2; i++)
    if (w->b[i].f == NULL)
      w->b[i].len = 0;
  weft_timer_stop(&w->retry);
  waits_run(w);
}

static void write_end(weft_writer_t *w, weft_future_t *f);
static void write_done(void *arg, weft_future_t *f) { write_end(arg, f); }
static void write_refused(void *arg) { write_end(arg, NULL); }

/* Hand buffer i to the socket: 0, or the socket's refusal. */
static int send_buf(weft_writer_t *w, unsigned i) {
  wbuf_t *b = &w->b[i];
  weft_future_t *f;
  int rc = weft_socket_write(w->sock, b->p, b->len, &f);
  if (rc != 0)
    return rc;
  b->f = f;
  w->inflight++;
  if (i == w->fill)
    w->fill ^= 1u;
  (void)weft_watch_start(&b->watch, f, weft_loop_executor(w->loop), write_done,
                         w, write_refused);
  return 0;
}

/* Hand the filling buffer over if nothing is in flight. */
static void send_next(weft_writer_t *w) {
  if (w->err != 0 || w->inflight != 0 || w->b[w->fill].len == 0 || w->destroyed)
    return;
  int rc = send_buf(w, w->fill);
  if (rc == WEFT_ENOMEM && weft_timer_start(&w->retry, 1, 0) == 0)
    return; /* nothing lost: the retry hands it over */
  if (rc != 0)
    fail(w, rc == WEFT_ESHUTDOWN ? WEFT_ECANCELED : rc);
}

static void write_end(weft_writer_t *w, weft_future_t *f) {
  unsigned i = w->b[0].f == f ? 0 : 1;
  if (f == NULL) /* refused at the loop's close: the writes went with it */
    i = w->b[0].f != NULL ? 0 : 1;
  wbuf_t *b = &w->b[i];
  int e = f != NULL ? weft_future_error(f) : WEFT_ECANCELED;
  b->f = NULL;
  w->inflight--;
  if (e == 0)
    w->taken += b->len;
  b->len = 0;
  if (b->cap > w->chunk) { /* a burst grew it: give the memory back */
    weft__free(b->p, b->cap);
    b->p = NULL;
    b->cap = 0;
  }
  if (w->destroyed) {
    maybe_free(w);
    return;
  }
  enter(w);
  if (e != 0)
    fail(w, e);
  if (!w->destroyed) {
    send_next(w);
    waits_run(w);
  }
  leave(w);
}

static void task_run(weft_task_t *t) {
  weft_writer_t *w = (weft_writer_t *)(void *)((char *)t -
                                               offsetof(weft_writer_t, task));
  w->scheduled = false;
  enter(w);
  send_next(w);
  leave(w);
}

static void retry_due(weft_timer_t *t, int status, void *arg) {
  (void)t;
  weft_writer_t *w = arg;
  if (status == 0) {
    enter(w);
    send_next(w);
    leave(w);
  }
}

/* ---- the calls ---- */

int weft_writer_create(weft_socket_t *sock, const weft_writer_options_t *opts,
                       weft_writer_t **out) {
  if (sock == NULL || out == NULL)
    return WEFT_EINVAL;
  int rc = opts == NULL
               ? 0
               : weft__struct_check(opts, opts->size, sizeof *opts,
                                    offsetof(weft_writer_options_t, reserved));
  if (rc != 0)
    return rc;
  rc = weft__sock_streamable(sock);
  if (rc != 0)
    return rc;
  weft_writer_t *w = weft__malloc(sizeof *w);
  if (w == NULL)
    return WEFT_ENOMEM;
  memset(w, 0, sizeof *w);
  w->sock = sock;
  w->loop = sock->loop;
  w->chunk = opts != NULL && opts->buffer_size != 0 ? opts->buffer_size
                                                    : CHUNK_DEFAULT;
  w->max = opts != NULL && opts->max_queued != 0 ? opts->max_queued
                                                 : MAX_QUEUED_DEFAULT;
  w->task.run = task_run;
  (void)weft_timer_init(w->loop, &w->timer, deadline_due, w);
  (void)weft_timer_init(w->loop, &w->retry, retry_due, w);
  *out = w;
  return 0;
}

int weft_writer_close(weft_writer_t *w) {
  int rc = check(w);
  if (rc != 0)
    return rc;
  /* Hand every byte to the socket now: after this the writer never
   * touches the socket again, so the owner may close it at once. */
  wbuf_t *b = &w->b[w->fill];
  if (w->err == 0 && b->len > 0 && b->f == NULL) {
    rc = send_buf(w, w->fill);
    if (rc == WEFT_ENOMEM)
      return rc; /* nothing changed: the writer is still the caller's */
    if (rc != 0)
      fail(w, rc == WEFT_ESHUTDOWN ? WEFT_ECANCELED : rc);
  }
  while (w->head != NULL)
    wait_settle(w, w->head, WEFT_ECANCELED);
  weft_timer_stop(&w->timer);
  weft_timer_stop(&w->retry);
  w->destroyed = true;
  maybe_free(w);
  return 0;
}

/* Room for len more bytes in the filling buffer. */
static int grow(weft_writer_t *w, size_t len) {
  wbuf_t *b = &w->b[w->fill];
  if (b->cap - b->len >= len)
    return 0;
  size_t cap = b->cap != 0 ? b->cap : w->chunk;
  while (cap < b->len + len)
    cap *= 2;
  char *p = weft__realloc(b->p, b->cap, cap);
  if (p == NULL)
    return WEFT_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int weft_writer_write(weft_writer_t *w, const void *data, size_t len) {
  if (w == NULL || (data == NULL && len > 0))
    return WEFT_EINVAL;
  if (!weft__loop_owned(w->loop))
    return WEFT_EPERM;
  if (w->err != 0)
    return w->err;
  if (len == 0)
    return 0;
  if (len > w->max)
    return WEFT_EMSGSIZE;
  if (w->written - w->taken + len > w->max)
    return WEFT_EAGAIN;
  int rc = grow(w, len);
  if (rc != 0)
    return rc;
  wbuf_t *b = &w->b[w->fill];
  memcpy(b->p + b->len, data, len);
  b->len += len;
  w->written += len;
  if (!w->scheduled && w->inflight == 0) {
    w->scheduled = true; /* on the loop thread: a queue push, no memory */
    (void)weft_executor_submit(weft_loop_executor(w->loop), &w->task);
  }
  return 0;
}

size_t weft_writer_queued(const weft_writer_t *w) {
  return w == NULL || w->err != 0 ? 0 : (size_t)(w->written - w->taken);
}

/* A wait: settled at once when it can be, else queued. */
static int wait_start(weft_writer_t *w, bool is_room, size_t n,
                      int64_t deadline_ns, weft_future_t **out) {
  if (w == NULL || out == NULL || deadline_ns < 0)
    return WEFT_EINVAL;
  if (!weft__loop_owned(w->loop))
    return WEFT_EPERM;
  if (is_room && n > w->max)
    return WEFT_EMSGSIZE;
  wwait_t *x = weft__malloc(sizeof *x);
  if (x == NULL)
    return WEFT_ENOMEM;
  weft__loop_op_init(&x->op, sizeof *x, w->loop, wait_disarm);
  x->w = w;
  x->is_room = is_room;
  x->room = n;
  x->target = w->written;
  x->deadline = deadline_ns;
  x->next = NULL;
  x->prev = w->tail;
  if (w->tail != NULL)
    w->tail->next = x;
  else
    w->head = x;
  w->tail = x;
  if (deadline_ns != 0 && (w->armed == 0 || deadline_ns < w->armed)) {
    int rc = weft__timer_start_at(&w->timer, deadline_ns);
    if (rc != 0) {
      unlink_wait(w, x);
      weft__free(x, sizeof *x);
      return rc;
    }
    w->armed = deadline_ns;
  }
  *out = &x->op.ext.base;
  enter(w);
  waits_run(w);
  leave(w);
  return 0;
}

int weft_writer_wait_room(weft_writer_t *w, size_t n, int64_t deadline_ns,
                          weft_future_t **out) {
  return wait_start(w, true, n, deadline_ns, out);
}

int weft_writer_flush(weft_writer_t *w, int64_t deadline_ns,
                      weft_future_t **out) {
  return wait_start(w, false, 0, deadline_ns, out);
}

/* Await f in a fiber: its outcome, or the fiber's cancel (f cancelled). */
static int await_one(weft_future_t *f) {
  int rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0)
    rc = weft_future_error(f);
  else
    (void)weft_future_cancel(f);
  weft_future_release(f);
  return rc;
}

int weft_writer_await_write(weft_writer_t *w, const void *data, size_t len,
                            int64_t deadline_ns) {
  if (deadline_ns < 0)
    return WEFT_EINVAL;
  for (;;) {
    int rc = weft_writer_write(w, data, len);
    if (rc != WEFT_EAGAIN)
      return rc;
    if (!weft_fiber_is_running())
      return WEFT_EDEADLK;
    weft_future_t *f;
    rc = weft_writer_wait_room(w, len, deadline_ns, &f);
    if (rc == 0)
      rc = await_one(f);
    if (rc != 0)
      return rc;
  }
}

int weft_writer_await_flush(weft_writer_t *w, int64_t deadline_ns) {
  int rc = check(w);
  if (rc != 0 || deadline_ns < 0)
    return rc != 0 ? rc : WEFT_EINVAL;
  if (w->err != 0 || w->taken == w->written)
    return w->err;
  if (!weft_fiber_is_running())
    return WEFT_EDEADLK;
  weft_future_t *f;
  rc = weft_writer_flush(w, deadline_ns, &f);
  return rc != 0 ? rc : await_one(f);
}
