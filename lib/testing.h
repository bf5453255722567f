/* SPDX-License-Identifier: MIT */
/* lib/testing.h: the test seams, fault injection at every system call and
 * allocation and schedule perturbation at the atomic operations of the
 * lock-free paths. Compiled in only where WEFT__TESTING is 1 (the
 * weft_testing library the suites link); elsewhere every macro is the plain
 * call and costs nothing. Never installed. */
#ifndef WEFT_LIB_TESTING_H
#define WEFT_LIB_TESTING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef WEFT__TESTING
#define WEFT__TESTING 0
#endif

#if WEFT__TESTING

/* One place in the library that can be made to fail. Each use of a fault
 * macro defines one of these in the section weft_fsite, so a driver can list
 * every site that exists and every site it reached. 32 bytes and 32-aligned:
 * the section is read as an array, and a compiler may raise the alignment of
 * a 32-byte static to 32 on its own. */
typedef struct __attribute__((aligned(32))) weft__fsite {
  const char *file;
  const char *call; /* "recv", "alloc", "futex", ... */
  int line;
  _Atomic unsigned reached; /* calls seen while the seam was on */
  _Atomic unsigned failed;  /* calls made to fail */
  unsigned pad;
} weft__fsite_t;

WEFT__HIDDEN extern _Atomic int weft__fault_on;
/* The slow path: counts the call and returns the errno to fail it with, or 0
 * to let it through. */
WEFT__HIDDEN int weft__fault_hit(weft__fsite_t *site);

#define WEFT__FSITE_DEF(name)                                                  \
  static weft__fsite_t weft__fsite_                                            \
      __attribute__((section("weft_fsite"),                                    \
                     used)) = {__FILE__, name, __LINE__, 0, 0, 0}

/* The errno to fail this call with (0: make it). */
#define WEFT__FAULT(name)                                                      \
  __extension__({                                                              \
    WEFT__FSITE_DEF(name);                                                     \
    __builtin_expect(                                                          \
        atomic_load_explicit(&weft__fault_on, memory_order_relaxed), 0)        \
        ? weft__fault_hit(&weft__fsite_)                                       \
        : 0;                                                                   \
  })

/* Schedule perturbation: at an atomic operation of a lock-free path, maybe
 * yield, sleep a few microseconds or stall up to a millisecond (seeded, per
 * thread; the odds are in testing.c), so rare interleavings happen often. */
WEFT__HIDDEN extern _Atomic int weft__perturb_on;
WEFT__HIDDEN void weft__perturb_point(const char *file, int line);
#define WEFT__PERTURB()                                                        \
  (__builtin_expect(                                                           \
       atomic_load_explicit(&weft__perturb_on, memory_order_relaxed), 0)       \
       ? weft__perturb_point(__FILE__, __LINE__)                               \
       : (void)0)

/* A named point where a test can hold the first thread that passes
 * (weft__pause_arm): the test then runs its side of one exact interleaving
 * and lets the thread go. For windows too narrow to hit by perturbation. */
WEFT__HIDDEN extern _Atomic int weft__pause_on;
WEFT__HIDDEN void weft__pause_point(const char *name);
#define WEFT__PAUSE(name)                                                      \
  (__builtin_expect(                                                           \
       atomic_load_explicit(&weft__pause_on, memory_order_relaxed), 0)         \
       ? weft__pause_point(name)                                               \
       : (void)0)

#else /* !WEFT__TESTING */

#define WEFT__FAULT(name) 0
#define WEFT__PERTURB() ((void)0)
#define WEFT__PAUSE(name) ((void)0)

#endif

/* A system call that reports failure as -1 and errno. */
#define WEFT__SYS(name, call)                                                  \
  __extension__({                                                              \
    int weft__fe_ = WEFT__FAULT(name);                                         \
    weft__fe_ != 0 ? (errno = weft__fe_, -1) : (call);                         \
  })
/* One that returns a pointer, and MAP_FAILED (or NULL) with errno. */
#define WEFT__SYS_PTR(name, fail, call)                                        \
  __extension__({                                                              \
    int weft__fe_ = WEFT__FAULT(name);                                         \
    weft__fe_ != 0 ? (errno = weft__fe_, (void *)(fail)) : (void *)(call);     \
  })
/* One that returns its error number (pthread_create). */
#define WEFT__SYS_RET(name, call)                                              \
  __extension__({                                                              \
    int weft__fe_ = WEFT__FAULT(name);                                         \
    weft__fe_ != 0 ? weft__fe_ : (call);                                       \
  })

#if WEFT__TESTING
/* ---- the driver's side (tests only) ---- */

/* Fail matching calls: those whose site's call name equals `call` ("alloc",
 * "recv", ...; NULL: every site), counted from this arming on; the n-th
 * (n >= 1) fails with `err`, and with `persistent` every later one too.
 * Calls on every thread count. Turns the seam on. */
WEFT__HIDDEN void weft__fault_arm(const char *call, unsigned long n, int err,
                                  bool persistent);
/* Stop failing; counting of sites reached goes on until weft__fault_off. */
WEFT__HIDDEN void weft__fault_disarm(void);
/* Turn the seam on (count sites reached, nothing fails yet) or off. */
WEFT__HIDDEN void weft__fault_record(bool on);
/* Calls that failed since the last arm. */
WEFT__HIDDEN unsigned long weft__fault_fired(void);
/* Calls matching the armed name since the last arm. */
WEFT__HIDDEN unsigned long weft__fault_seen(void);
/* The sites of the linked library: [*first, *first + count). */
WEFT__HIDDEN size_t weft__fault_sites(weft__fsite_t **first);

/* Perturbation on with a seed (each thread derives its own stream from the
 * seed and its order of arrival), or off. */
WEFT__HIDDEN void weft__perturb(bool on, uint64_t seed);
/* The seed of the last weft__perturb(true, ...). */
WEFT__HIDDEN uint64_t weft__perturb_seed(void);
/* WEFT_PERTURB=<seed> (decimal or 0x hex) or WEFT_PERTURB=random (a seed
 * from the clock) in the environment: perturbation on with that seed,
 * printed to stderr after `who`; returns true then. Unset, empty or "off":
 * false, nothing changes. With the same seed each thread draws the same stream,
 * but which thread is which follows their order of arrival: a replay
 * stretches the same windows, it does not repeat one schedule. */
WEFT__HIDDEN bool weft__perturb_from_env(const char *who);
/* Points passed and delays made since the last weft__perturb(true, ...). */
WEFT__HIDDEN void weft__perturb_stats(unsigned long *points,
                                      unsigned long *delays);

/* Hold the first thread that reaches WEFT__PAUSE(name) from now on (one
 * point armed at a time; the name is compared, not the pointer). */
WEFT__HIDDEN void weft__pause_arm(const char *name);
/* Wait up to timeout_ms for a thread to be held there; true if one is. */
WEFT__HIDDEN bool weft__pause_wait(int64_t timeout_ms);
/* Let the held thread (if any) go on, and disarm. */
WEFT__HIDDEN void weft__pause_release(void);
#endif

#endif
