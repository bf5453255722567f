/* SPDX-License-Identifier: MIT */
/* loop/spin.c: the adaptive spin before sleeping
 * (weft_loop_options_t.spin_us). A loop that ran out of work waits for
 * work (a post; while it watches fds, also their events) by polling for up
 * to spin.ns instead of sleeping, when the last waits ended with work soon
 * enough (within spin.max_ns): the spin grows while work comes back that
 * quickly and shrinks, down to nothing, otherwise; spins that miss cost
 * credit, and the loop spins only with credit. The wake word stays AWAKE
 * while spinning, so producers skip the eventfd write too.
 *
 * It keeps quiet (no spin for a number of waits, longer each time in a
 * row) where a spin would take a CPU something else needs: after this
 * thread woke a parked pool worker, while pool workers run on every CPU
 * (the CPU-demand facility, lib/internal.h), when the kernel took the CPU
 * from the loop thread during a spin, and when hits keep coming later than
 * a sleep would cost. It does not spin while many sockets wait for reads.
 * Why each rule, with the figures: docs/design/loop.md. */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/resource.h>

enum {
  SPIN_FIRST_NS = 4000,    /* a spin's first length, doubling from there */
  SPIN_DEFAULT_NS = 50000, /* spin_us 0: this bound */
  SPIN_CHECKS = 16,        /* reads of the queue between backend polls */
  SPIN_QUIET = 16,         /* waits without a spin after a pool wake-up */
  SPIN_SHARED_MAX = 4,     /* doublings of the quiet for a shared CPU */
  SPIN_MISS = 4,           /* credit a spin without work costs */
  SPIN_CREDIT_MAX = 16,    /* credit is kept within +-this */
  SPIN_READERS_MAX = 4,    /* no spin with more sockets waiting to read */
  SPIN_CHEAP_NS = 10000,   /* a hit within this is cheaper than a sleep */
  SPIN_DEAR_HITS = 8,      /* dear hits in a row before keeping quiet */
  SPIN_DEAR_QUIET = 64,    /* waits without a spin after those */
  SPIN_DEAR_MAX = 6        /* doublings of that quiet */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Is a CPU free for a spin? Not while pool workers run on every CPU: they
 * would wait for it. */
static bool cpu_to_spare(const weft_loop_t *loop) {
  return weft__cpu_workers_running() < loop->spin.ncpu;
}

/* After a spin for fd events: was the CPU taken from this thread since the
 * last look (an involuntary context switch)? Then something else wants
 * it, perhaps the peer the loop waits for, and spinning delays it. One
 * system call per such spin, next to the polls it made. */
static bool cpu_shared(weft_loop_t *loop) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0)
    return false;
  bool taken = ru.ru_nivcsw != loop->spin.nivcsw;
  loop->spin.nivcsw = ru.ru_nivcsw;
  return taken;
}

void weft__spin_init(weft_loop_t *loop, int spin_us) {
  loop->spin.max_ns = spin_us < 0    ? 0
                      : spin_us == 0 ? SPIN_DEFAULT_NS
                                     : (int64_t)spin_us * 1000;
  loop->spin.ncpu = (int)weft__cpu_count();
  (void)cpu_shared(loop); /* its baseline: this thread's count so far */
}

/* What a spin met. */
enum { SPUN_NOTHING = 0, SPUN_POST, SPUN_EVENTS };

/* Spin until a post or a stop arrives, or `until` (run_until's future, or
 * NULL) settles, or (when `io`, the loop watching fds) the backend has
 * events, or `end` passes. The backend is asked between rounds of
 * SPIN_CHECKS reads of the queue, not at once: a poll that does not wait
 * is a system call but no sleep, and the round lets a batch of events
 * gather. On SPUN_EVENTS *n is the poll's result (the events are in
 * loop->events; negative: its error). */
static int spin_for_work(weft_loop_t *loop, int64_t end, bool io, int *n,
                         weft_future_t *until) {
  for (;;) {
    for (int k = 0; k < SPIN_CHECKS; k++) {
      if (atomic_load_explicit(&loop->inbox, memory_order_relaxed) != NULL ||
          atomic_load_explicit(&loop->stop, memory_order_relaxed))
        return SPUN_POST;
      cpu_relax();
    }
    /* run_until's future, settled on another thread, posts nothing */
    if (until != NULL && weft_future_state(until) != WEFT_PENDING)
      return SPUN_POST;
    if (io && (*n = weft__backend_wait(loop, 0)) != 0)
      return SPUN_EVENTS;
    if (weft_clock_now_ns() >= end || !cpu_to_spare(loop))
      return SPUN_NOTHING;
  }
}

/* Credit: a spin that ends without work costs SPIN_MISS, work met by a
 * spin (or work that came soon enough while not spinning) earns 1, within
 * +-SPIN_CREDIT_MAX. */
static void spin_credit_add(weft_loop_t *loop, int d) {
  int c = loop->spin.credit + d;
  loop->spin.credit = c > SPIN_CREDIT_MAX    ? SPIN_CREDIT_MAX
                      : c < -SPIN_CREDIT_MAX ? -SPIN_CREDIT_MAX
                                             : c;
}

/* Keep quiet for `base` waits, doubled for each back-off in a row counted
 * in *streak (up to `max` doublings), never shortening a quiet period
 * already running, and start the spin again from nothing. */
static void spin_back_off(weft_loop_t *loop, unsigned base, unsigned *streak,
                          unsigned max) {
  unsigned q = base << *streak;
  if (loop->spin.quiet < q)
    loop->spin.quiet = q;
  if (*streak < max)
    (*streak)++;
  loop->spin.ns = 0;
}

/* A spin hit after `ns` of spinning: dearer than a sleep (SPIN_CHEAP_NS)
 * SPIN_DEAR_HITS times in a row, the loop backs off; a cheap hit ends the
 * streak. */
static void spin_cost(weft_loop_t *loop, int64_t ns) {
  if (ns <= SPIN_CHEAP_NS) {
    loop->spin.dear = 0;
    loop->spin.dear_streak = 0;
    return;
  }
  if (++loop->spin.dear < SPIN_DEAR_HITS)
    return;
  loop->spin.dear = 0;
  spin_back_off(loop, SPIN_DEAR_QUIET, &loop->spin.dear_streak, SPIN_DEAR_MAX);
}

/* May the loop spin before this wait? Counts down the quiet period, and
 * starts one when this thread woke a pool worker since the last wait (that
 * worker needs a CPU, and a loop feeding a pool does it again soon). On
 * one CPU only fd events are worth a spin: a post would come from a
 * thread the spin keeps off the CPU. */
static bool spin_allowed(weft_loop_t *loop, bool io) {
  unsigned wakes = weft__cpu_wakes_here();
  if (wakes != loop->spin.pool_wakes_seen) {
    loop->spin.pool_wakes_seen = wakes;
    if (loop->spin.quiet < SPIN_QUIET)
      loop->spin.quiet = SPIN_QUIET;
  } else if (loop->spin.quiet > 0) {
    loop->spin.quiet--;
  }
  return loop->spin.ns != 0 && loop->spin.credit > 0 && loop->spin.quiet == 0 &&
         cpu_to_spare(loop) && (loop->spin.ncpu >= 2 || io) &&
         loop->readers <= SPIN_READERS_MAX;
}

WEFT__HOT int64_t weft__spin_wait(weft_loop_t *loop, int64_t timeout,
                                  weft_future_t *until, weft__spun_t *out) {
  bool io = atomic_load_explicit(&loop->watchers_active,
                                 memory_order_relaxed) != 0;
  if (!spin_allowed(loop, io)) {
    out->idle = loop->now; /* not spinning: the iteration's start will do */
    return timeout;
  }
  int64_t idle = weft_clock_now_ns();
  int64_t spin = timeout > 0 && timeout < loop->spin.ns ? timeout
                                                        : loop->spin.ns;
  weft__loop_count(&loop->spins);
  int met = spin_for_work(loop, idle + spin, io, &out->n, until);
  if (io) { /* a spin that polled fds: one more system call */
    if (cpu_shared(loop)) {
      spin_back_off(loop, SPIN_QUIET, &loop->spin.shared_streak,
                    SPIN_SHARED_MAX);
      spin_credit_add(loop, -SPIN_MISS);
    } else {
      loop->spin.shared_streak = 0;
    }
  }
  if (met != SPUN_NOTHING) {
    weft__loop_count(&loop->spin_hits);
    spin_credit_add(loop, 1);
    spin_cost(loop, weft_clock_now_ns() - idle);
    out->polled = met == SPUN_EVENTS;
    /* no sleep: the work runs in this iteration, and the spin * stays as it
     * is (idle stays 0) */
    return 0;
  }
  out->idle = idle;
  out->spun = true;
  if (timeout > 0 && (timeout -= spin) <= 0)
    timeout = 0; /* the spin used up the wait */
  return timeout;
}

WEFT__HOT void weft__spin_adapt(weft_loop_t *loop, const weft__spun_t *s,
                                bool by_work) {
  bool soon = by_work && loop->now - s->idle <= loop->spin.max_ns;
  if (s->spun)
    spin_credit_add(loop, -SPIN_MISS);
  else if (soon)
    spin_credit_add(loop, 1);
  if (soon) {
    int64_t ns = loop->spin.ns ? 2 * loop->spin.ns : SPIN_FIRST_NS;
    loop->spin.ns = ns < loop->spin.max_ns ? ns : loop->spin.max_ns;
  } else if (loop->spin.ns > 0) {
    loop->spin.ns /= 2;
    if (loop->spin.ns < SPIN_FIRST_NS)
      loop->spin.ns = 0;
  }
}
