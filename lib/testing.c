/* SPDX-License-Identifier: MIT */
/* lib/testing.c: the runtime of the test seams (lib/testing.h): which call
 * to fail, the sites reached, and the seeded perturbation streams. Built
 * only into weft_testing. */
#define _GNU_SOURCE /* nanosleep */
#include "internal.h"

#if WEFT__TESTING
#include <sched.h>
#include <string.h>
#include <time.h>

_Atomic int weft__fault_on;
_Atomic int weft__perturb_on;

/* Every field atomic: library threads read them while the driver arms. */
static struct {
  _Atomic(const char *) call; /* NULL: every site */
  _Atomic unsigned long n;
  _Atomic int err;
  _Atomic bool persistent;
  _Atomic bool armed;
  _Atomic unsigned long seen;
  _Atomic unsigned long fired;
} g_fault;

/* The linker defines these for a section whose name is an identifier. */
extern weft__fsite_t __start_weft_fsite[] __attribute__((weak));
extern weft__fsite_t __stop_weft_fsite[] __attribute__((weak));

int weft__fault_hit(weft__fsite_t *site) {
  atomic_fetch_add_explicit(&site->reached, 1, memory_order_relaxed);
  if (!atomic_load_explicit(&g_fault.armed, memory_order_acquire))
    return 0;
  const char *call = atomic_load_explicit(&g_fault.call, memory_order_relaxed);
  if (call != NULL && strcmp(call, site->call) != 0)
    return 0;
  unsigned long k =
      atomic_fetch_add_explicit(&g_fault.seen, 1, memory_order_relaxed) + 1;
  unsigned long n = atomic_load_explicit(&g_fault.n, memory_order_relaxed);
  if (k == n || (k > n && atomic_load_explicit(&g_fault.persistent,
                                               memory_order_relaxed))) {
    atomic_fetch_add_explicit(&site->failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_fault.fired, 1, memory_order_relaxed);
    return atomic_load_explicit(&g_fault.err, memory_order_relaxed);
  }
  return 0;
}

void weft__fault_arm(const char *call, unsigned long n, int err,
                     bool persistent) {
  atomic_store(&g_fault.armed, false);
  atomic_store(&g_fault.call, call);
  atomic_store(&g_fault.n, n);
  atomic_store(&g_fault.err, err);
  atomic_store(&g_fault.persistent, persistent);
  atomic_store(&g_fault.seen, 0);
  atomic_store(&g_fault.fired, 0);
  atomic_store(&g_fault.armed, true);
  atomic_store(&weft__fault_on, 1);
}

void weft__fault_disarm(void) { atomic_store(&g_fault.armed, false); }

void weft__fault_record(bool on) {
  if (!on)
    weft__fault_disarm();
  atomic_store(&weft__fault_on, on);
}

unsigned long weft__fault_fired(void) { return atomic_load(&g_fault.fired); }
unsigned long weft__fault_seen(void) { return atomic_load(&g_fault.seen); }

size_t weft__fault_sites(weft__fsite_t **first) {
  *first = __start_weft_fsite;
  if (__start_weft_fsite == NULL || __stop_weft_fsite == NULL)
    return 0;
  return (size_t)(__stop_weft_fsite - __start_weft_fsite);
}

/* ---- perturbation ---- */

static _Atomic uint64_t g_seed;
static _Atomic unsigned g_epoch;     /* bumped by every weft__perturb(true) */
static _Atomic unsigned g_arrivals;  /* threads seeded in this epoch */
static _Atomic unsigned long g_points, g_delays;

static _Thread_local struct {
  uint64_t s;
  unsigned epoch;
} tl_rng;

static uint64_t next(void) { /* splitmix64 */
  uint64_t z = (tl_rng.s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

void weft__perturb_point(const char *file, int line) {
  (void)file;
  (void)line;
  unsigned e = atomic_load_explicit(&g_epoch, memory_order_acquire);
  if (tl_rng.epoch != e) { /* first point of this thread in this run */
    tl_rng.epoch = e;
    tl_rng.s = atomic_load(&g_seed) ^
               ((uint64_t)(atomic_fetch_add(&g_arrivals, 1) + 1) << 40);
  }
  atomic_fetch_add_explicit(&g_points, 1, memory_order_relaxed);
  uint64_t r = next();
  unsigned pick = (unsigned)(r & 63);
  if (pick < 6) { /* about 1 in 10: let another thread run here */
    atomic_fetch_add_explicit(&g_delays, 1, memory_order_relaxed);
    sched_yield();
  } else if (pick == 6) { /* 1 in 64: stall long enough to be preempted */
    atomic_fetch_add_explicit(&g_delays, 1, memory_order_relaxed);
    struct timespec ts = {0, (long)(1000 + ((r >> 8) % 50000))};
    nanosleep(&ts, NULL);
  }
}

void weft__perturb(bool on, uint64_t seed) {
  if (on) {
    atomic_store(&g_seed, seed);
    atomic_store(&g_arrivals, 0);
    atomic_store(&g_points, 0);
    atomic_store(&g_delays, 0);
    atomic_fetch_add_explicit(&g_epoch, 1, memory_order_release);
  }
  atomic_store_explicit(&weft__perturb_on, on, memory_order_release);
}

void weft__perturb_stats(unsigned long *points, unsigned long *delays) {
  *points = atomic_load(&g_points);
  *delays = atomic_load(&g_delays);
}

#else
/* ISO C wants a translation unit to declare something. */
typedef int weft__testing_unused_t;
#endif
