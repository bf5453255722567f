/* SPDX-License-Identifier: MIT */
/* tests/fiber_util.h: what the fiber suites (test_fiber*.c) share: which
 * sanitizer the build has, pools, a counting arg_dtor, bounded spins and
 * a child process whose stderr is read back. Header-only (static inline). */
#ifndef WEFT_FIBER_UTIL_H
#define WEFT_FIBER_UTIL_H

#include "loop_util.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define FT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FT_TSAN 1
#endif
#endif
#ifndef FT_ASAN
#define FT_ASAN 0
#endif
#ifndef FT_TSAN
#define FT_TSAN 0
#endif

/* "At once": an await that must not wait for what it awaited (a 60 s sleep,
 * a gated job) ends well within this on a loaded 2-core machine. */
#define AT_ONCE_MS 5000
/* How long the operations that must not complete by themselves last. */
#define LONG_MS 60000

/* pthread_self() through a volatile pointer: glibc declares pthread_self
 * const, so a compiler may reuse a value read before an await after it,
 * though a fiber may have moved to another thread in between. */
static pthread_t (*volatile ft_self_fn)(void) = pthread_self;
static inline pthread_t ft_self(void) { return ft_self_fn(); }

static inline int64_t ft_ms_since(int64_t t0) {
  return (weft_clock_now_ns() - t0) / 1000000;
}

/* A pool of n CPU workers; ends the test if it cannot be created. */
static inline weft_pool_t *ft_pool(unsigned n) {
  weft_pool_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.threads = n;
  weft_pool_t *p = NULL;
  REQUIRE_EQ(weft_pool_create(&o, &p), 0);
  return p;
}

static inline void ft_pool_end(weft_pool_t *p) {
  EXPECT_ERR(weft_pool_shutdown(p, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

/* An arg_dtor that counts its runs in the _Atomic int it is given. */
static inline void ft_count_dtor(void *arg) {
  atomic_fetch_add((_Atomic int *)arg, 1);
}

/* Spin (yielding) until *v >= want or BOUND_MS pass; true if reached. */
static inline bool ft_wait_at_least(_Atomic int *v, int want) {
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (atomic_load(v) < want) {
    if (weft_clock_now_ns() > end)
      return false;
    sched_yield();
  }
  return true;
}

/* A pool job that fulfils the promise it is given with 7 from the worker
 * (another thread) and gives the promise back. */
static inline weft_result_t ft_job_fulfil(weft_job_t *job, void *arg) {
  (void)job;
  weft_promise_t *p = arg;
  int rc = weft_promise_fulfil_int(p, 7);
  weft_promise_release(p);
  return weft_ok_int(rc);
}

/* A pool job returning 5. */
static inline weft_result_t ft_job_five(weft_job_t *job, void *arg) {
  (void)job, (void)arg;
  return weft_ok_int(5);
}

/* Run fn(arg) in a forked child with its stderr piped back into out (NUL
 * terminated, at most cap - 1 bytes), bounded by BOUND_MS (then killed).
 * Returns the child's wait status. fn must end the child itself (_exit or
 * a crash); if it returns, the child exits 0. */
static inline int ft_child(void (*fn)(void *), void *arg, char *out,
                           size_t cap) {
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  fflush(NULL);
  pid_t pid = fork();
  REQUIRE_EQ(pid >= 0, 1);
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    fn(arg);
    _exit(0);
  }
  close(p[1]);
  size_t n = 0;
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  for (;;) {
    struct pollfd pf = {p[0], POLLIN, 0};
    int left = (int)((end - weft_clock_now_ns()) / 1000000);
    if (left <= 0 || poll(&pf, 1, left) <= 0)
      break;
    ssize_t k = read(p[0], out + n, cap - 1 - n);
    if (k <= 0)
      break;
    n += (size_t)k;
    if (n == cap - 1)
      break;
  }
  out[n] = 0;
  close(p[0]);
  kill(pid, SIGKILL); /* (gone already, unless it hung) */
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

#endif /* WEFT_FIBER_UTIL_H */
