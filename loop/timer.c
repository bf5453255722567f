/* SPDX-License-Identifier: MIT */
/* loop/timer.c: timers on a 4-ary min-heap of 16-byte (due, timer)
 * entries: O(log n) start and stop, equal deadlines in start order; the
 * sleep and timeout futures built on them.
 *
 * Start order without a sequence in every entry: a timer's deadline counts
 * from a start time that moves on by at least 1 ns per start while the
 * loop's cached time stands still (start_time), so timers started together
 * with one timeout get distinct deadlines in start order, and entries stay
 * 16 bytes (docs/design/loop.md). Exact ties left (two iterations' times
 * lining up to the nanosecond, or rescheduled repeats) compare the
 * sequence in the timers.
 * A repeat keeps the sequence of its start: it stays in start order
 * among timers due with it, and the sequence also tells which timers a
 * timer callback started (weft__timers_run). */
#include "internal.h"

#include <string.h>

#define NS_PER_MS ((int64_t)1000000)

/* ---- the heap ---- */

static inline bool before(const weft__heap_entry_t *a,
                          const weft__heap_entry_t *b) {
  /* Ties are rare (see loop->vnow): only they read the timers. */
  if (__builtin_expect(a->due != b->due, 1))
    return a->due < b->due;
  return a->timer->priv_seq < b->timer->priv_seq;
}

/* A start time for a timer started now: the cached time, or 1 ns after the
 * last one given while the cached time stands still. */
static int64_t start_time(weft_loop_t *loop) {
  int64_t v = loop->now > loop->vnow ? loop->now : loop->vnow + 1;
  loop->vnow = v;
  return v;
}

static inline void place(weft_loop_t *loop, uint32_t i, weft__heap_entry_t e) {
  loop->heap[i] = e;
  e.timer->priv_index = i + 1;
}

static void sift_up(weft_loop_t *loop, uint32_t i, weft__heap_entry_t e) {
  while (i > 0) {
    uint32_t parent = (i - 1) / 4;
    if (!before(&e, &loop->heap[parent]))
      break;
    place(loop, i, loop->heap[parent]);
    i = parent;
  }
  place(loop, i, e);
}

/* The earliest of the children c.. (c = 4i + 1 < n) of a node. A large heap
 * is out of cache: ask for all the grandchildren first, so the next level's
 * group is on its way while this one is compared. Only then: in a heap that
 * fits in cache the prefetches per level cost more than they save.
 * A full group of four is compared as a tournament (two pairs, then their
 * winners): three comparisons without a loop. */
enum { PREFETCH_FROM = 65536 }; /* entries: 1 MB, about a core's L2 */
static inline uint32_t earliest_child(const weft__heap_entry_t *h, uint32_t c,
                                      uint32_t n) {
  if (n > PREFETCH_FROM && 4 * c + 1 < n) {
    /* the grandchildren: 16 entries from 4c + 1, 256 bytes */
    const char *g = (const char *)&h[4 * c + 1];
    for (int k = 0; k < 5; k++)
      __builtin_prefetch(g + 64 * k - (k == 4)); /* the last byte too */
  }
  if (__builtin_expect(c + 4 <= n, 1)) { /* a full group: a tournament */
    uint32_t a = before(&h[c + 1], &h[c]) ? c + 1 : c;
    uint32_t b = before(&h[c + 3], &h[c + 2]) ? c + 3 : c + 2;
    return before(&h[b], &h[a]) ? b : a;
  }
  uint32_t best = c;
  for (uint32_t k = c + 1; k < n; k++)
    if (before(&h[k], &h[best]))
      best = k;
  return best;
}

static void sift_down(weft_loop_t *loop, uint32_t i, weft__heap_entry_t e) {
  uint32_t n = loop->heap_len;
  for (;;) {
    uint32_t c = 4 * i + 1;
    if (c >= n)
      break;
    uint32_t best = earliest_child(loop->heap, c, n);
    if (!before(&loop->heap[best], &e))
      break;
    place(loop, i, loop->heap[best]);
    i = best;
  }
  place(loop, i, e);
}

static void set_active(weft_loop_t *loop) {
  atomic_store_explicit(&loop->timers_active, loop->heap_len,
                        memory_order_relaxed);
}

static void heap_remove(weft_loop_t *loop, weft_timer_t *t) {
  uint32_t i = t->priv_index - 1;
  t->priv_index = 0;
  weft__heap_entry_t last = loop->heap[--loop->heap_len];
  if (i < loop->heap_len) {
    /* The children are read next unless the entry rises: ask for them now,
     * while the parent is on its way (two misses at once, not in turn). */
    if (4 * i + 1 < loop->heap_len) {
      __builtin_prefetch(&loop->heap[4 * i + 1]);
      __builtin_prefetch(&loop->heap[4 * i + 4]);
    }
    if (i > 0 && before(&last, &loop->heap[(i - 1) / 4]))
      sift_up(loop, i, last);
    else
      sift_down(loop, i, last);
  }
  set_active(loop);
}

/* Remove the earliest timer, bottom-up: the hole at the root follows the
 * earliest child down to a leaf, and the last entry goes in there and
 * rises. The last entry belongs near the bottom, so this saves the
 * comparison with it on every level of the way down. */
static void heap_pop(weft_loop_t *loop) {
  weft__heap_entry_t *h = loop->heap;
  h[0].timer->priv_index = 0;
  uint32_t n = --loop->heap_len;
  if (n > 0) {
    /* Each entry moved up must tell its timer its new slot; the timers are
     * out of cache in a large heap, so ask for them on the way down and
     * write the slots once at the end (a 4-ary heap of 2^32 entries is
     * 16 levels deep). */
    uint32_t path[17], depth = 0, i = 0;
    for (;;) {
      uint32_t c = 4 * i + 1;
      if (c >= n)
        break;
      uint32_t best = earliest_child(h, c, n);
      __builtin_prefetch(h[best].timer, 1);
      h[i] = h[best];
      path[depth++] = i;
      i = best;
    }
    for (uint32_t d = 0; d < depth; d++)
      h[path[d]].timer->priv_index = path[d] + 1;
    sift_up(loop, i, h[n]);
    __builtin_prefetch(h[0].timer, 1); /* the next to fire */
  }
  set_active(loop);
}

static int heap_reserve(weft_loop_t *loop) {
  if (loop->heap_len < loop->heap_cap)
    return 0;
  uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
  if (cap <= loop->heap_cap) /* 2^32 timers */
    return WEFT_ENOMEM;
  weft__heap_entry_t *h = weft__realloc(loop->heap, loop->heap_cap * sizeof *h,
                                        cap * sizeof *h);
  if (h == NULL)
    return WEFT_ENOMEM;
  loop->heap = h;
  loop->heap_cap = cap;
  return 0;
}

/* A heap of many timers grows into fresh pages: back them PREFAULT bytes at
 * a time with one call as the heap first reaches them, instead of a page
 * fault every 256 starts. heap_ready is how far the heap has been backed,
 * so a heap that shrinks and grows again does not ask twice. */
enum {
  PREFAULT = 64 * 1024,
  PREFAULT_ENTRIES = PREFAULT / sizeof(weft__heap_entry_t)
};

/* (t->priv_seq is set: a tie reads it on the way up) */
static void heap_insert(weft_loop_t *loop, weft_timer_t *t, int64_t due) {
  if (loop->heap_len >= loop->heap_ready) {
    uint32_t left = loop->heap_cap - loop->heap_len;
    weft__prefault(loop->heap + loop->heap_len,
                   (left < PREFAULT_ENTRIES ? left : PREFAULT_ENTRIES) *
                       sizeof(weft__heap_entry_t));
    loop->heap_ready = loop->heap_len + PREFAULT_ENTRIES;
  }
  weft__heap_entry_t e = {due, t};
  t->priv_due = due;
  sift_up(loop, loop->heap_len++, e);
  set_active(loop);
}

/* ---- timers ---- */

/* Is t started, on loop or on another live loop? A handle never
 * initialised may hold anything: its fields only say where to look, and
 * only loop's own heap (or the list of live loops) decides. */
static bool timer_in_use(const weft_loop_t *loop, const weft_timer_t *t) {
  if (t->priv_flags != WEFT__TIMER_INIT || t->priv_index == 0)
    return false;
  if (t->priv_loop != loop)
    return t->priv_loop != NULL && weft__loop_live(t->priv_loop);
  return t->priv_index <= loop->heap_len &&
         loop->heap[t->priv_index - 1].timer == t;
}

int weft_timer_init(weft_loop_t *loop, weft_timer_t *t, weft_timer_fn fn,
                    void *arg) {
  if (loop == NULL || t == NULL || fn == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (timer_in_use(loop, t)) /* zeroing it would corrupt a heap */
    return WEFT_EBUSY;
  memset(t, 0, sizeof *t);
  t->priv_loop = loop;
  t->priv_fn = fn;
  t->priv_arg = arg;
  t->priv_flags = WEFT__TIMER_INIT;
  return 0;
}

static int64_t add_ms(int64_t base, int64_t ms) {
  /* (no division on this path: it is most of a timer start's cost) */
  if (ms > INT64_MAX / NS_PER_MS || ms * NS_PER_MS > INT64_MAX - base)
    return INT64_MAX; /* far future: never */
  return base + ms * NS_PER_MS;
}

int weft_timer_start(weft_timer_t *t, int64_t timeout_ms, int64_t repeat_ms) {
  if (t == NULL || t->priv_flags != WEFT__TIMER_INIT || timeout_ms < 0 ||
      repeat_ms < 0)
    return WEFT_EINVAL;
  weft_loop_t *loop = t->priv_loop;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  if (t->priv_index != 0)
    heap_remove(loop, t);
  else if (heap_reserve(loop) != 0)
    return WEFT_ENOMEM;
  if (!loop->running) /* between runs the cached time may be old */
    loop->now = weft_clock_now_ns();
  t->priv_repeat = repeat_ms > INT64_MAX / NS_PER_MS ? INT64_MAX
                                                     : repeat_ms * NS_PER_MS;
  t->priv_seq = loop->timer_seq++;
  heap_insert(loop, t, add_ms(start_time(loop), timeout_ms));
  return 0;
}

int weft__timer_start_at(weft_timer_t *t, int64_t deadline) {
  const weft_loop_t *loop = t->priv_loop;
  int64_t now = loop->running ? loop->now : weft_clock_now_ns();
  int64_t ms = 0;
  if (deadline > now)
    ms = (deadline - now) / NS_PER_MS + ((deadline - now) % NS_PER_MS != 0);
  return weft_timer_start(t, ms, 0);
}

int weft_timer_stop(weft_timer_t *t) {
  if (t == NULL || t->priv_flags != WEFT__TIMER_INIT)
    return WEFT_EINVAL;
  if (!weft__loop_owned(t->priv_loop))
    return WEFT_EPERM;
  if (t->priv_index != 0)
    heap_remove(t->priv_loop, t);
  return 0;
}

bool weft_timer_is_active(const weft_timer_t *t) {
  if (t == NULL)
    return false;
  return t->priv_flags == WEFT__TIMER_INIT && t->priv_index != 0;
}

/* The next deadline of a repeating timer that was due at `due`: on its
 * phase (due + k * period), the first one after now. A loop late by a
 * period or more skips the beats it missed rather than calling back in a
 * burst; no drift either way. */
static int64_t next_beat(int64_t due, int64_t period, int64_t now) {
  int64_t next = due > INT64_MAX - period ? INT64_MAX : due + period;
  if (__builtin_expect(next > now, 1))
    return next;
  /* period <= now - due here, so now + period cannot overflow (now is a
   * monotonic time, far below INT64_MAX / 2) */
  return now + (period - (now - due) % period);
}

void weft__timers_run(weft_loop_t *loop) {
  /* A timer started by a timer callback waits for the next iteration:
   * those started in this pass (seq >= limit), and in the iteration's
   * second pass (after the poll) those its first pass started (seq in
   * [lo, hi)). So a callback that restarts its timer with 0 runs once per
   * iteration, and cannot spin here. A pass stops at the first such
   * timer: it is due no earlier than when it was started, so what is
   * behind it waits at most one iteration. */
  uint64_t limit = loop->timer_seq, lo = limit, hi = limit;
  uint64_t iter = atomic_load_explicit(&loop->iterations, memory_order_relaxed);
  if (loop->timer_pass_iter == iter) {
    lo = loop->timer_pass_lo;
    hi = loop->timer_pass_hi;
  }
  while (loop->heap_len > 0) {
    weft__heap_entry_t *top = &loop->heap[0];
    if (top->due > loop->now)
      break;
    weft_timer_t *t = top->timer;
    if (__builtin_expect(t->priv_seq >= lo, 0) &&
        (t->priv_seq >= limit || t->priv_seq < hi))
      break;
    heap_pop(loop);
    if (t->priv_repeat > 0) /* rescheduled before the callback runs; */
      heap_insert(loop, t,  /* cannot fail: one slot was just freed */
                  next_beat(t->priv_due, t->priv_repeat, loop->now));
    weft__loop_count(&loop->timers_fired);
    weft_timer_fn fn = t->priv_fn;
    int64_t t0 = weft__loop_cb_begin(loop);
    fn(t, 0, t->priv_arg); /* may free t */
    weft__loop_cb_end(loop, "timer", (weft__anyfn)fn, t0);
  }
  loop->timer_pass_iter = iter;
  loop->timer_pass_lo = limit;
  loop->timer_pass_hi = loop->timer_seq;
}

int64_t weft__timers_next(const weft_loop_t *loop) {
  return loop->heap_len > 0 ? loop->heap[0].due : -1;
}

void weft__timers_close(weft_loop_t *loop) {
  while (loop->heap_len > 0) {
    /* the last entry: removing it leaves the heap as it is, so closing
     * with n timers is O(n), and a callback may still stop another timer */
    weft_timer_t *t = loop->heap[loop->heap_len - 1].timer;
    heap_remove(loop, t);
    weft_timer_fn fn = t->priv_fn;
    weft__loop_count(&loop->callbacks);
    fn(t, WEFT_ECANCELED, t->priv_arg);
  }
}

/* ---- sleep: a future on a timer ---- */

typedef struct sleep_op {
  weft__loop_op_t op; /* the future; its source is the timer */
  weft_timer_t timer;
  int err; /* 0: fulfil when due; else reject with it */
} sleep_op_t;

static void sleep_due(weft_timer_t *t, int status, void *arg) {
  (void)t;
  sleep_op_t *op = arg;
  struct weft_future *f = &op->op.ext.base;
  if (status != 0)
    (void)weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED);
  else if (op->err != 0)
    (void)weft__settle_int(f, WEFT_REJECTED, 0, op->err);
  else
    (void)weft__settle_int(f, WEFT_FULFILLED, 0, 0);
  weft__unref(f); /* the timer's reference */
}

static void sleep_disarm(weft__loop_op_t *base) {
  sleep_op_t *op = (sleep_op_t *)base;
  if (op->timer.priv_index != 0) {
    weft_timer_stop(&op->timer);
    weft__unref(&base->ext.base);
  }
}

static int sleep_start(weft_loop_t *loop, int64_t ms, int err,
                       weft_future_t **out) {
  if (loop == NULL || out == NULL || ms < 0)
    return WEFT_EINVAL;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  sleep_op_t *op = weft__malloc(sizeof *op);
  if (op == NULL)
    return WEFT_ENOMEM;
  weft__loop_op_init(&op->op, sizeof *op, loop, sleep_disarm);
  op->err = err;
  weft_timer_init(loop, &op->timer, sleep_due, op);
  int rc = weft_timer_start(&op->timer, ms, 0);
  if (rc != 0) {
    weft__free(op, sizeof *op);
    return rc;
  }
  *out = &op->op.ext.base;
  return 0;
}

int weft_loop_sleep(weft_loop_t *loop, int64_t ms, weft_future_t **out) {
  return sleep_start(loop, ms, 0, out);
}

/* timeout = race(f, a sleep that rejects with WEFT_ETIMEDOUT): the race
 * cancels whichever input it no longer needs, so the loser is cancelled
 * (f, if nothing else needs it) or disarmed (the timer). */
int weft_loop_timeout(weft_loop_t *loop, weft_future_t *f, int64_t ms,
                      weft_future_t **out) {
  if (f == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_future_t *timer;
  int rc = sleep_start(loop, ms, WEFT_ETIMEDOUT, &timer);
  if (rc != 0)
    return rc;
  weft_future_t *in[2] = {f, timer};
  rc = weft_future_race(in, 2, out);
  if (rc != 0)
    weft_future_cancel(timer);
  weft_future_release(timer);
  return rc;
}
