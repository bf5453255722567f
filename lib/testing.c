/* SPDX-License-Identifier: MIT */
/* lib/testing.c: the runtime of the test seams (lib/testing.h): which call
 * to fail, the sites reached, and the seeded perturbation streams. Built
 * only into weft_testing. */
#define _GNU_SOURCE /* nanosleep */
#include "internal.h"

#if WEFT__TESTING
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int weft__fault_on;
_Atomic int weft__perturb_on;
_Atomic int weft__pause_on;

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
static _Atomic unsigned g_epoch;    /* bumped by every weft__perturb(true) */
static _Atomic unsigned g_arrivals; /* threads seeded in this epoch */
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

/* Each seed gives every point its own weight (by file and line): a quarter
 * of the points are quiet, a quarter hot, so that different seeds stretch
 * different windows, not the same ones a little each. */
static unsigned site_weight(const char *file, int line) {
  uint64_t z = atomic_load_explicit(&g_seed, memory_order_relaxed) ^
               ((uint64_t)(uintptr_t)file * 0x9e3779b97f4a7c15u) ^
               (uint64_t)line;
  z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9u;
  switch ((z >> 29) & 3) {
  case 0:
    return 1; /* quiet */
  case 3:
    return 16; /* hot */
  default:
    return 4;
  }
}

static void stall_ns(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

/* Per point, of 4096 draws, with weight w (4 for most points): w / 4
 * stall 0.1-1 ms (as a preemption does), 6 w sleep 1-64 us (another thread
 * runs a while), 60 w yield the CPU. At w = 4: 0.02 %, 0.6 %, 6 %, about
 * 0.4 us a point on average; at w = 16 four times that. */
void weft__perturb_point(const char *file, int line) {
  unsigned e = atomic_load_explicit(&g_epoch, memory_order_acquire);
  if (tl_rng.epoch != e) { /* first point of this thread in this run */
    tl_rng.epoch = e;
    tl_rng.s = atomic_load(&g_seed) ^
               ((uint64_t)(atomic_fetch_add(&g_arrivals, 1) + 1) << 40);
  }
  atomic_fetch_add_explicit(&g_points, 1, memory_order_relaxed);
  uint64_t r = next();
  unsigned w = site_weight(file, line);
  unsigned pick = (unsigned)(r & 4095);
  if (pick >= 66 * w)
    return;
  atomic_fetch_add_explicit(&g_delays, 1, memory_order_relaxed);
  if (pick < w / 4)
    stall_ns((long)(100000 + ((r >> 12) % 900000)));
  else if (pick < 6 * w)
    stall_ns((long)(1000 + ((r >> 12) % 63000)));
  else
    sched_yield();
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

uint64_t weft__perturb_seed(void) { return atomic_load(&g_seed); }

bool weft__perturb_from_env(const char *who) {
  const char *v = getenv("WEFT_PERTURB");
  if (v == NULL || *v == '\0' || strcmp(v, "off") == 0)
    return false;
  uint64_t seed;
  if (strcmp(v, "random") == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
           ((uint64_t)getpid() << 32);
  } else {
    char *end;
    errno = 0;
    seed = strtoull(v, &end, 0);
    if (errno != 0 || *end != '\0') {
      fprintf(stderr,
              "%s: WEFT_PERTURB=%s is not a seed (a number or "
              "\"random\"): perturbation stays off\n",
              who, v);
      return false;
    }
  }
  weft__perturb(true, seed);
  fprintf(stderr, "%s: schedule perturbation on, WEFT_PERTURB=%#llx\n", who,
          (unsigned long long)seed);
  return true;
}

#if defined(WEFT__PERTURB_ENV)
/* A build with WEFT_PERTURB=ON: every program linked with the library
 * (samples included) runs perturbed when the variable is set. */
__attribute__((constructor)) static void perturb_ctor(void) {
  (void)weft__perturb_from_env("weft");
}
#endif

void weft__perturb_stats(unsigned long *points, unsigned long *delays) {
  *points = atomic_load(&g_points);
  *delays = atomic_load(&g_delays);
}

/* ---- pause points ---- */

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  const char *name; /* armed point, NULL: none */
  bool held;        /* a thread waits at it */
} g_pause = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, false};

void weft__pause_point(const char *name) {
  pthread_mutex_lock(&g_pause.mu);
  if (g_pause.name != NULL && !g_pause.held &&
      strcmp(g_pause.name, name) == 0) {
    g_pause.held = true;
    pthread_cond_broadcast(&g_pause.cv);
    while (g_pause.held)
      pthread_cond_wait(&g_pause.cv, &g_pause.mu);
  }
  pthread_mutex_unlock(&g_pause.mu);
}

void weft__pause_arm(const char *name) {
  pthread_mutex_lock(&g_pause.mu);
  g_pause.name = name;
  g_pause.held = false;
  pthread_mutex_unlock(&g_pause.mu);
  atomic_store(&weft__pause_on, 1);
}

bool weft__pause_wait(int64_t timeout_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)(timeout_ms / 1000);
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&g_pause.mu);
  int rc = 0;
  while (!g_pause.held && rc == 0)
    rc = pthread_cond_timedwait(&g_pause.cv, &g_pause.mu, &ts);
  bool held = g_pause.held;
  pthread_mutex_unlock(&g_pause.mu);
  return held;
}

void weft__pause_release(void) {
  atomic_store(&weft__pause_on, 0);
  pthread_mutex_lock(&g_pause.mu);
  g_pause.name = NULL;
  g_pause.held = false; /* the held thread returns */
  pthread_cond_broadcast(&g_pause.cv);
  pthread_mutex_unlock(&g_pause.mu);
}

#else
/* ISO C wants a translation unit to declare something. */
typedef int weft__testing_unused_t;
#endif
