/* SPDX-License-Identifier: MIT */
/* loop/net/reader.c: the buffered reader of weft/stream.h, over the
 * socket's public reads. One buffer; a socket read in flight only while a
 * wait is pending (into the buffer's free tail, buffer_size at most);
 * a wait is a loop op (its cancel reaches the loop thread without an
 * allocation); one timer per reader for the wait's deadline. Design:
 * docs/design/streams.md, "Reader". */
#include "internal.h"

#include <string.h>
#include <weft/fiber.h>
#include <weft/stream.h>
#include <weft/system.h>

enum { K_LINE = 1, K_UNTIL, K_EXACTLY, K_PEEK };
enum { CHUNK_DEFAULT = 16384 };

typedef struct rwait {
  weft__loop_op_t op;
  weft_reader_t *r; /* NULL once settled or detached */
  weft_bytes_t value;
} rwait_t;

struct weft_reader {
  weft_socket_t *sock;
  weft_loop_t *loop;
  char *buf;
  size_t cap, head, tail; /* the buffered bytes: buf[head..tail) */
  size_t chunk;
  /* no scan_delim in buf[head..head+scanned): a line that comes in tiny
   * pieces is searched once, not once per piece */
  size_t scanned;
  int scan_delim;
  int end; /* 0, or what ended the stream: WEFT_EOF, its error */
  bool destroyed;
  uint8_t kind; /* the pending wait's: K_* */
  unsigned char delim;
  size_t n; /* its max, or its n */
  int64_t deadline;
  rwait_t *wait; /* the pending wait, or NULL */
  weft_timer_t timer;
  /* the socket read in flight, or NULL; a watch holds it until its
   * callback, which may come after a cancel: two rooms, so a new read can
   * start before the last cancelled one's callback ran */
  weft_future_t *rd;
  weft_watch_t watch[2];
  unsigned nwatch;
};

static int check(const weft_reader_t *r) {
  if (r == NULL)
    return WEFT_EINVAL;
  return weft__loop_owned(r->loop) ? 0 : WEFT_EPERM;
}

/* What the ended read f brought: bytes at the tail, or the stream's end. */
static void account(weft_reader_t *r, weft_future_t *f) {
  int e = weft_future_error(f);
  if (e == 0)
    r->tail += (size_t)weft_future_int(f);
  else if (r->end == 0)
    r->end = e; /* WEFT_EOF, a reset, WEFT_ECANCELED for a close */
}

/* Take the result of the read in flight if it has settled. */
static void harvest(weft_reader_t *r) {
  weft_future_t *f = r->rd;
  if (f != NULL && weft_future_state(f) != WEFT_PENDING) {
    r->rd = NULL;
    account(r, f);
  }
}

/* Search the first max bytes for delim: 0 and *len (with the delimiter),
 * or why not. */
static int find(weft_reader_t *r, unsigned char delim, size_t max,
                size_t *len) {
  size_t avail = r->tail - r->head;
  size_t lim = avail < max ? avail : max;
  size_t from = r->scan_delim == delim ? r->scanned : 0;
  if (from < lim) {
    const char *p = r->buf + r->head;
    const char *q = memchr(p + from, delim, lim - from);
    if (q != NULL) {
      *len = (size_t)(q - p) + 1;
      return 0;
    }
    from = lim;
  }
  r->scan_delim = delim;
  r->scanned = from;
  if (lim == max)
    return WEFT_EMSGSIZE;
  return r->end != 0 ? r->end : WEFT_EAGAIN;
}

/* The result of a wait of kind from the buffer: 0 with *out and *take
 * (bytes to consume), or why not (WEFT_EAGAIN: more must come). */
static int attempt(weft_reader_t *r, uint8_t kind, unsigned char delim,
                   size_t n, weft_bytes_t *out, size_t *take) {
  const char *p = r->buf + r->head;
  size_t avail = r->tail - r->head, len;
  if (kind == K_LINE || kind == K_UNTIL) {
    int rc = find(r, kind == K_LINE ? '\n' : delim, n, &len);
    if (rc != 0)
      return rc;
    *take = len;
    if (kind == K_LINE)
      len -= len >= 2 && p[len - 2] == '\r' ? 2 : 1;
  } else if (avail < n) {
    return r->end != 0 ? r->end : WEFT_EAGAIN;
  } else {
    len = kind == K_EXACTLY ? n : avail;
    *take = kind == K_EXACTLY ? n : 0;
  }
  out->data = p;
  out->len = len;
  return 0;
}

static void consume(weft_reader_t *r, size_t n) {
  r->head += n;
  r->scanned = 0;
  if (r->head == r->tail && r->rd == NULL)
    r->head = r->tail = 0;
}

/* The callback of a socket read (or its refusal, at a loop's close). */
static void read_end(weft_reader_t *r, weft_future_t *f);
static void progress(weft_reader_t *r);
static void read_free(weft_reader_t *r) {
  if (r->buf != NULL)
    weft__free(r->buf, r->cap);
  weft__free(r, sizeof *r);
}

static void read_done(void *arg, weft_future_t *f) { read_end(arg, f); }

static void read_refused(void *arg) { read_end(arg, NULL); }

static void read_end(weft_reader_t *r, weft_future_t *f) {
  r->nwatch--;
  if (r->rd != NULL && (r->rd == f || f == NULL)) {
    r->rd = NULL; /* refused: the loop is closing, the read went with it */
    if (f != NULL)
      account(r, f);
    else if (r->end == 0)
      r->end = WEFT_ECANCELED;
  }
  if (r->destroyed) {
    if (r->nwatch == 0)
      read_free(r);
    return;
  }
  if (r->wait != NULL && f != NULL)
    progress(r);
}

/* Stop the pending read: bytes it took stay (now, or for the next read,
 * as the socket keeps those a cancel raced with). */
static void read_stop(weft_reader_t *r) {
  harvest(r);
  if (r->rd != NULL) {
    weft_future_t *f = r->rd;
    r->rd = NULL;
    (void)weft_future_cancel(f); /* the loop thread: it leaves at once */
  }
}

/* The wait leaves the reader (it has settled or is about to). */
static void detach(weft_reader_t *r) {
  rwait_t *w = r->wait;
  r->wait = NULL;
  w->r = NULL;
  weft_timer_stop(&r->timer);
  read_stop(r);
}

/* Settle the pending wait: rc 0 with *out, consuming take bytes (unless a
 * cancel won the settle: then nothing is consumed). */
static void wait_end(weft_reader_t *r, int rc, const weft_bytes_t *out,
                     size_t take) {
  rwait_t *w = r->wait;
  struct weft_future *f = &w->op.ext.base;
  if (rc == 0 && weft__claim(f, WEFT_FULFILLED) == 0) {
    w->value = *out;
    weft__ext_value_ptr(f, &w->value, NULL);
    consume(r, take);
    detach(r); /* before the publish: an inline continuation may call r */
    weft__publish(f);
  } else {
    detach(r);
    if (rc != 0)
      (void)weft__settle_int(
          f, rc == WEFT_ECANCELED ? WEFT_CANCELLED : WEFT_REJECTED, 0, rc);
  }
  weft__unref(f); /* the reader's reference */
}

/* The wait's cancel, on the loop thread (at once, or through the loop's
 * queue from another thread). */
static void wait_disarm(weft__loop_op_t *op) {
  rwait_t *w = (rwait_t *)op;
  if (w->r == NULL)
    return;
  detach(w->r);
  weft__unref(&op->ext.base);
}

/* Make room at the tail for a read toward a wait that needs `need` bytes
 * buffered in all: slide the bytes to the front when little is left, grow
 * (doubling, up to need) when the buffer is full. */
static int make_room(weft_reader_t *r, size_t need) {
  size_t avail = r->tail - r->head;
  if (r->head > 0 && (avail <= 512 || r->cap - r->tail < r->chunk / 2 ||
                      r->cap - r->head < need)) {
    memmove(r->buf, r->buf + r->head, avail);
    r->head = 0;
    r->tail = avail;
  }
  if (r->tail < r->cap)
    return 0;
  size_t cap = r->cap * 2 < need ? r->cap * 2 : need;
  if (cap <= r->cap)
    cap = r->cap + 1;
  char *b = weft__realloc(r->buf, r->cap, cap);
  if (b == NULL)
    return WEFT_ENOMEM;
  r->buf = b;
  r->cap = cap;
  return 0;
}

/* Start a socket read into the tail: 0 pending (a watch on it), 1 ended
 * at once (taken), or the socket's error. */
static int read_start(weft_reader_t *r) {
  weft_future_t *f;
  int rc = weft_socket_read(r->sock, r->buf + r->tail, r->cap - r->tail, &f);
  if (rc != 0)
    return rc;
  if (weft_future_state(f) != WEFT_PENDING) {
    account(r, f);
    weft_future_release(f);
    return 1;
  }
  weft_watch_t *w = weft_watch_is_active(&r->watch[0]) ? &r->watch[1]
                                                       : &r->watch[0];
  (void)weft_watch_start(w, f, weft_loop_executor(r->loop), read_done, r,
                         read_refused);
  r->nwatch++;
  r->rd = f;
  return 0;
}

/* Serve the pending wait from the buffer, reading the socket as needed. */
static void progress(weft_reader_t *r) {
  for (;;) {
    weft_bytes_t out;
    size_t take = 0;
    int rc = attempt(r, r->kind, r->delim, r->n, &out, &take);
    if (rc != WEFT_EAGAIN) {
      wait_end(r, rc, &out, take);
      return;
    }
    if (r->rd != NULL || r->nwatch == 2)
      return; /* a read's callback comes and calls again */
    rc = make_room(r, r->n);
    if (rc == 0)
      rc = read_start(r);
    if (rc == 0)
      return;
    if (rc < 0) {
      wait_end(r, rc == WEFT_ESHUTDOWN ? WEFT_ECANCELED : rc, NULL, 0);
      return;
    }
  }
}

static void deadline_due(weft_timer_t *t, int status, void *arg) {
  weft_reader_t *r = arg;
  if (status != 0 || r->wait == NULL)
    return; /* the loop's close: its reads' cancels settle the wait */
  if (weft_clock_now_ns() < r->deadline) {
    (void)weft__timer_start_at(t, r->deadline);
    return;
  }
  harvest(r);
  weft_bytes_t out;
  size_t take = 0;
  int rc = attempt(r, r->kind, r->delim, r->n, &out, &take);
  wait_end(r, rc == WEFT_EAGAIN ? WEFT_ETIMEDOUT : rc, &out, take);
}

int weft_reader_create(weft_socket_t *sock, const weft_reader_options_t *opts,
                       weft_reader_t **out) {
  if (sock == NULL || out == NULL)
    return WEFT_EINVAL;
  int rc = opts == NULL
               ? 0
               : weft__struct_check(opts, opts->size, sizeof *opts,
                                    offsetof(weft_reader_options_t, reserved));
  if (rc != 0)
    return rc;
  rc = weft__sock_streamable(sock);
  if (rc != 0)
    return rc;
  size_t chunk = opts != NULL && opts->buffer_size != 0 ? opts->buffer_size
                                                        : CHUNK_DEFAULT;
  weft_reader_t *r = weft__malloc(sizeof *r);
  char *buf = r != NULL ? weft__malloc(chunk) : NULL;
  if (buf == NULL) {
    if (r != NULL)
      weft__free(r, sizeof *r);
    return WEFT_ENOMEM;
  }
  memset(r, 0, sizeof *r);
  r->sock = sock;
  r->loop = sock->loop;
  r->buf = buf;
  r->cap = r->chunk = chunk;
  r->scan_delim = -1;
  (void)weft_timer_init(r->loop, &r->timer, deadline_due, r);
  *out = r;
  return 0;
}

int weft_reader_close(weft_reader_t *r) {
  int rc = check(r);
  if (rc != 0)
    return rc;
  if (r->wait != NULL)
    wait_end(r, WEFT_ECANCELED, NULL, 0);
  r->destroyed = true;
  if (r->nwatch == 0)
    read_free(r);
  return 0;
}

/* The try forms: from the buffer only, no allocation. */
static int try_take(weft_reader_t *r, uint8_t kind, unsigned char delim,
                    size_t n, weft_bytes_t *out) {
  if (r == NULL || out == NULL || n == 0)
    return WEFT_EINVAL;
  if (!weft__loop_owned(r->loop))
    return WEFT_EPERM;
  if (r->wait != NULL)
    return WEFT_EBUSY;
  size_t take = 0;
  int rc = attempt(r, kind, delim, n, out, &take);
  if (rc == 0)
    consume(r, take);
  return rc;
}

static __attribute__((noinline)) int try_line_slow(weft_reader_t *r, size_t max,
                                                   weft_bytes_t *line) {
  return try_take(r, K_LINE, '\n', max, line);
}

/* The common case first (a whole line buffered, nothing scanned before):
 * one memchr and a few stores; everything else in try_line_slow. */
int weft_reader_try_line(weft_reader_t *r, size_t max, weft_bytes_t *line) {
  if (__builtin_expect(r == NULL || line == NULL || r->scanned != 0 ||
                           r->wait != NULL || !weft__loop_owned(r->loop),
                       0))
    return try_line_slow(r, max, line);
  const char *p = r->buf + r->head;
  size_t avail = r->tail - r->head;
  const char *q = memchr(p, '\n', avail < max ? avail : max);
  if (__builtin_expect(q == NULL, 0))
    return try_line_slow(r, max, line);
  size_t len = (size_t)(q - p);
  line->data = p;
  line->len = len - (len > 0 && q[-1] == '\r');
  r->head += len + 1;
  if (r->head == r->tail && r->rd == NULL)
    r->head = r->tail = 0;
  return 0;
}

int weft_reader_try_until(weft_reader_t *r, unsigned char delim, size_t max,
                          weft_bytes_t *out) {
  return try_take(r, K_UNTIL, delim, max, out);
}

int weft_reader_try_exactly(weft_reader_t *r, size_t n, weft_bytes_t *out) {
  return try_take(r, K_EXACTLY, 0, n, out);
}

int weft_reader_buffered(const weft_reader_t *r, weft_bytes_t *out) {
  int rc = out == NULL ? WEFT_EINVAL : check(r);
  if (rc != 0)
    return rc;
  out->data = r->buf + r->head;
  out->len = r->tail - r->head;
  return 0;
}

int weft_reader_consume(weft_reader_t *r, size_t n) {
  int rc = check(r);
  if (rc != 0)
    return rc;
  if (n > r->tail - r->head)
    return WEFT_EINVAL;
  if (r->wait != NULL)
    return WEFT_EBUSY;
  consume(r, n);
  return 0;
}

/* The future forms: a wait as a loop op, served at once when it can be. */
static int wait_start(weft_reader_t *r, uint8_t kind, unsigned char delim,
                      size_t n, int64_t deadline_ns, weft_future_t **out) {
  if (r == NULL || out == NULL || n == 0 || deadline_ns < 0)
    return WEFT_EINVAL;
  if (!weft__loop_owned(r->loop))
    return WEFT_EPERM;
  if (r->wait != NULL)
    return WEFT_EBUSY;
  rwait_t *w = weft__malloc(sizeof *w);
  if (w == NULL)
    return WEFT_ENOMEM;
  weft__loop_op_init(&w->op, sizeof *w, r->loop, wait_disarm);
  w->r = r;
  r->wait = w;
  r->kind = kind;
  r->delim = delim;
  r->n = n;
  r->deadline = deadline_ns;
  progress(r);
  if (r->wait == w && deadline_ns != 0) {
    int rc = weft__timer_start_at(&r->timer, deadline_ns);
    if (rc != 0) { /* nothing was handed out: undo (the read keeps bytes) */
      detach(r);
      weft__free(w, sizeof *w);
      return rc;
    }
  }
  *out = &w->op.ext.base;
  return 0;
}

int weft_reader_read_line(weft_reader_t *r, size_t max, int64_t deadline_ns,
                          weft_future_t **out) {
  return wait_start(r, K_LINE, '\n', max, deadline_ns, out);
}

int weft_reader_read_until(weft_reader_t *r, unsigned char delim, size_t max,
                           int64_t deadline_ns, weft_future_t **out) {
  return wait_start(r, K_UNTIL, delim, max, deadline_ns, out);
}

int weft_reader_read_exactly(weft_reader_t *r, size_t n, int64_t deadline_ns,
                             weft_future_t **out) {
  return wait_start(r, K_EXACTLY, 0, n, deadline_ns, out);
}

int weft_reader_peek(weft_reader_t *r, size_t n, int64_t deadline_ns,
                     weft_future_t **out) {
  return wait_start(r, K_PEEK, 0, n, deadline_ns, out);
}

/* The await forms: try, then in a fiber the future form and an await. */
static int await_take(weft_reader_t *r, uint8_t kind, unsigned char delim,
                      size_t n, int64_t deadline_ns, weft_bytes_t *out) {
  if (deadline_ns < 0)
    return WEFT_EINVAL;
  int rc = try_take(r, kind, delim, n, out);
  if (rc != WEFT_EAGAIN)
    return rc;
  if (!weft_fiber_is_running())
    return WEFT_EDEADLK;
  weft_future_t *f;
  rc = wait_start(r, kind, delim, n, deadline_ns, &f);
  if (rc != 0)
    return rc;
  rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0) {
    rc = weft_future_error(f);
    if (rc == 0)
      *out = *(const weft_bytes_t *)weft_future_value(f);
  } else {
    (void)weft_future_cancel(f); /* the fiber's cancel: the bytes stay */
  }
  weft_future_release(f);
  return rc;
}

int weft_reader_await_line(weft_reader_t *r, size_t max, int64_t deadline_ns,
                           weft_bytes_t *line) {
  return await_take(r, K_LINE, '\n', max, deadline_ns, line);
}

int weft_reader_await_until(weft_reader_t *r, unsigned char delim, size_t max,
                            int64_t deadline_ns, weft_bytes_t *out) {
  return await_take(r, K_UNTIL, delim, max, deadline_ns, out);
}

int weft_reader_await_exactly(weft_reader_t *r, size_t n, int64_t deadline_ns,
                              weft_bytes_t *out) {
  return await_take(r, K_EXACTLY, 0, n, deadline_ns, out);
}

int weft_reader_await_peek(weft_reader_t *r, size_t n, int64_t deadline_ns,
                           weft_bytes_t *out) {
  return await_take(r, K_PEEK, 0, n, deadline_ns, out);
}
