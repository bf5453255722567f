/* SPDX-License-Identifier: MIT */
/* tests/testutil.h: assertions that print both values, the suite registry,
 * a counting allocator that can fail the N-th allocation, a two-thread
 * round handshake for race tests, and the loop every loop test starts
 * from. */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

#define _GNU_SOURCE
#include <CUnit/CUnit.h>
#include <weft.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Assert a == b (integers), printing both expressions and values; a fatal
 * check ends the test. */
#define TU_CHECK_EQ(a, b, fatal)                                               \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    char m_[512];                                                              \
    snprintf(m_, sizeof m_, "%s == %s (got %lld, expected %lld)", #a, #b, a_,  \
             b_);                                                              \
    CU_assertImplementation(a_ == b_, __LINE__, m_, __FILE__, "", fatal);      \
  } while (0)

#define EXPECT_EQ(a, b) TU_CHECK_EQ(a, b, CU_FALSE)
#define REQUIRE_EQ(a, b) TU_CHECK_EQ(a, b, CU_TRUE)

/* Assert an error code, printing both names. */
#define EXPECT_ERR(a, b)                                                       \
  do {                                                                         \
    int a_ = (a), b_ = (b);                                                    \
    char m_[512];                                                              \
    snprintf(m_, sizeof m_, "%s == %s (got %s, expected %s)", #a, #b,          \
             weft_error_name(a_), weft_error_name(b_));                        \
    CU_assertImplementation(a_ == b_, __LINE__, m_, __FILE__, "", CU_FALSE);   \
  } while (0)

#define EXPECT_TRUE(c) EXPECT_EQ(!!(c), 1)

/* Assert that string a (which may be NULL) equals b, printing both. */
#define EXPECT_STREQ(a, b)                                                     \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    char m_[512];                                                              \
    snprintf(m_, sizeof m_, "%s == %s (got \"%s\", expected \"%s\")", #a, #b,  \
             a_ ? a_ : "(null)", b_);                                          \
    CU_assertImplementation(a_ != NULL && strcmp(a_, b_) == 0, __LINE__, m_,   \
                            __FILE__, "", CU_FALSE);                           \
  } while (0)

typedef struct test_case {
  const char *name;
  void (*fn)(void);
} test_case_t;

/* Each test_<suite>.c defines one of these, listed in runner.c. */
typedef struct test_suite {
  const char *name;
  const test_case_t *cases;
} test_suite_t;

/* ---- counting allocator (tests/runner.c) ---- */
void tu_alloc_install(long fail_at); /* fail the fail_at-th alloc; 0: never */
void tu_alloc_restore(void);
long tu_alloc_count(void); /* allocations attempted since install */
long tu_alloc_live(void);  /* blocks alive now */
long tu_alloc_live_bytes(void);
long tu_alloc_peak_bytes(void);
/* Is the byte at p poisoned by AddressSanitizer (a free block of one of
 * weft's free lists)? Always false outside an ASan build. */
bool tu_poisoned(const void *p);

/* ---- two-thread rounds: both sides start round r together ---- */
typedef struct tu_rounds {
  _Atomic long arrived; /* 2 per round once both sides are there */
  _Atomic long done;    /* last round side 1 finished */
} tu_rounds_t;

static inline void tu_spin_until(_Atomic long *v, long want) {
  int spins = 0;
  while (atomic_load_explicit(v, memory_order_acquire) < want)
    if (++spins > 64) {
      sched_yield();
      spins = 0;
    }
}

/* Meet the other side for round r, then wait a small pseudo-random time so
 * that the two sides' actions overlap in every order across rounds. */
static inline void tu_meet(tu_rounds_t *s, long r, int side) {
  atomic_fetch_add_explicit(&s->arrived, 1, memory_order_acq_rel);
  tu_spin_until(&s->arrived, 2 * r);
  unsigned x = (unsigned)(r * 2654435761u) >> (side ? 20 : 24);
  for (volatile unsigned i = 0; i < (x & 127); i++)
    ;
}

/* ---- loops ---- */

/* No test waits longer than this for anything; a wait that runs out is a
 * failure (a hang), never a result. */
#define BOUND_MS 30000

/* A loop with default options on the calling thread; ends the test if it
 * cannot be created. */
static inline weft_loop_t *new_loop(void) {
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  return loop;
}

/* ---- a gate: tasks that reach it wait there until it opens ---- */
typedef struct tu_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open, entered;
} tu_gate_t;
#define TU_GATE_INIT                                                           \
  { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 }

/* Count this thread in, then wait until g opens. */
static inline void tu_gate_pass(tu_gate_t *g) {
  pthread_mutex_lock(&g->mu);
  g->entered++;
  pthread_cond_broadcast(&g->cv);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

/* Wait until n threads have reached g. */
static inline void tu_gate_wait(tu_gate_t *g, int n) {
  pthread_mutex_lock(&g->mu);
  while (g->entered < n)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static inline void tu_gate_open(tu_gate_t *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* A task that passes a gate (run: tu_gate_run). */
typedef struct tu_gate_task {
  weft_task_t task;
  tu_gate_t *g;
} tu_gate_task_t;

static inline void tu_gate_run(weft_task_t *t) {
  tu_gate_pass(((tu_gate_task_t *)(void *)t)->g);
}

/* Open fds of this process (read from /proc/self/fd), or -1. */
int count_fds(void);

/* In a fiber: await f and release it; its integer value when it
 * fulfilled, else its error (negative), or await's own error. */
static inline intptr_t tu_await_int(weft_future_t *f) {
  int rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0)
    rc = weft_future_error(f);
  intptr_t v = rc == 0 ? weft_future_int(f) : rc;
  weft_future_release(f);
  return v;
}

#endif /* WEFT_TESTUTIL_H */
