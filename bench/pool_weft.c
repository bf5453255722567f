/* SPDX-License-Identifier: MIT */
/* bench/pool_weft.c: the `pool` suite's work done with weft's pool; prints
 * one number per mode: fib, skynet, offload, offload_then, offload_inline,
 * idle_cpu. fib and skynet first run an untimed fib(WARM_FIB) on the pool,
 * as every peer does, so that the clock sees no thread start. */
#define _GNU_SOURCE
#include <weft.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static weft_pool_t *pool;

static weft_pool_t *start(unsigned threads) {
  weft_pool_options_t o = {sizeof(o), threads, 0, 0, {0}};
  weft_pool_t *p;
  if (weft_pool_create(&o, &p) != 0)
    abort();
  return p;
}

/* fib: one spawned task per call, both children spawned, no cutoff. */
static weft_result_t fib(weft_job_t *job, void *arg) {
  (void)job;
  intptr_t n = (intptr_t)arg;
  if (n < 2)
    return weft_ok_int(n);
  weft_future_t *a, *b;
  if (weft_pool_submit(pool, fib, (void *)(n - 1), NULL, &a) != 0 ||
      weft_pool_submit(pool, fib, (void *)(n - 2), NULL, &b) != 0)
    abort();
  weft_future_await(a, WEFT_FOREVER);
  weft_future_await(b, WEFT_FOREVER);
  intptr_t r = weft_future_int(a) + weft_future_int(b);
  weft_future_release(a);
  weft_future_release(b);
  return weft_ok_int(r);
}

static long fib_calls(long n) {
  return n < 2 ? 1 : 1 + fib_calls(n - 1) + fib_calls(n - 2);
}

/* skynet: each node spawns 10 children down to 1,000,000 leaves. */
static weft_result_t skynet(weft_job_t *job, void *arg) {
  (void)job;
  uintptr_t v = (uintptr_t)arg, num = v >> 8, size = 1;
  unsigned level = v & 0xff;
  for (unsigned i = 0; i < level; i++)
    size *= 10;
  if (level == 0)
    return weft_ok_int((intptr_t)num);
  weft_future_t *kids[10];
  size /= 10;
  for (int i = 0; i < 10; i++)
    if (weft_pool_submit(pool, skynet,
                         (void *)(((num + i * size) << 8) | (level - 1)), NULL,
                         &kids[i]) != 0)
      abort();
  intptr_t sum = 0;
  for (int i = 0; i < 10; i++) {
    weft_future_await(kids[i], WEFT_FOREVER);
    sum += weft_future_int(kids[i]);
    weft_future_release(kids[i]);
  }
  return weft_ok_int(sum);
}

/* offload: one outside thread runs n small jobs on the pool. In "offload"
 * and "offload_then" it submits a window of them, and each completion is
 * handed back to it through `drain`, an executor it drains once the window
 * is submitted (as libuv's loop runs every after_work_cb on its own
 * thread); each completion counts and submits the next job until n have
 * been. "offload_inline" submits all n at once and counts on the worker
 * that settles each job's future (weft_executor_inline()). */
static long completed;            /* counted on the submitting thread */
static atomic_long completed_any; /* offload_inline: counted on workers */
static long offload_n;            /* completions expected */
static weft_promise_t *all_done;  /* offload_inline: the last completion */
static weft_result_t small_job(weft_job_t *job, void *arg) {
  (void)job;
  uintptr_t x = (uintptr_t)arg;
  return weft_ok_int((intptr_t)(x * 2654435761u));
}
static long issued; /* jobs submitted so far */
static weft_executor_t *offload_ex;
static int offload_then; /* weft_future_then, not _watch */
static void submit_next(void);
static weft_result_t count_done(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  completed++;
  if (issued < offload_n)
    submit_next();
  return weft_ok_int(0);
}
static void count_watched(void *arg, weft_future_t *src) {
  (void)count_done(arg, src);
}
static void count_inline(void *arg, weft_future_t *src);
/* Submit job number `issued` with its continuation on offload_ex. */
static void submit_next(void) {
  weft_future_t *f, *c = NULL;
  int inl = offload_ex == weft_executor_inline();
  if (weft_pool_submit(pool, small_job, (void *)(uintptr_t)issued++, NULL,
                       &f) != 0 ||
      (offload_then
           ? weft_future_then(f, offload_ex, count_done, NULL, NULL, &c)
           : weft_future_watch(f, offload_ex,
                               inl ? count_inline : count_watched, NULL,
                               NULL)) != 0)
    abort();
  if (c != NULL) { /* then: both handles are ours; watch took f's */
    weft_future_release(f);
    weft_future_release(c);
  }
}
static void count_inline(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  if (atomic_fetch_add_explicit(&completed_any, 1, memory_order_acq_rel) + 1 ==
      offload_n)
    weft_promise_fulfil_int(all_done, 0);
}

/* drain: a queue of tasks for one owning thread. Any thread pushes onto a
 * lock-free stack and wakes the owner only when it sleeps; the owner takes
 * the whole stack at once and runs it in push order. */
static struct {
  weft_executor_t ex;
  _Atomic(weft_task_t *) head;
  atomic_int sleeping;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} drain;
static int drain_submit(weft_executor_t *ex, weft_task_t *t) {
  (void)ex;
  weft_task_t *h = atomic_load_explicit(&drain.head, memory_order_relaxed);
  do
    t->next = h;
  while (!atomic_compare_exchange_weak_explicit(
      &drain.head, &h, t, memory_order_seq_cst, memory_order_relaxed));
  if (atomic_load(&drain.sleeping)) { /* seq_cst pairs with the owner's */
    pthread_mutex_lock(&drain.mu);
    pthread_cond_signal(&drain.cv);
    pthread_mutex_unlock(&drain.mu);
  }
  return 0;
}
static const weft_executor_ops_t drain_ops = {.size = sizeof(drain_ops),
                                              .name = "drain",
                                              .submit = drain_submit};
/* Run the drained tasks on the calling (owning) thread until *count == n. */
static void drain_until(const long *count, long n) {
  while (*count < n) {
    weft_task_t *t = atomic_exchange(&drain.head, NULL), *rev = NULL;
    if (t == NULL) {
      pthread_mutex_lock(&drain.mu);
      atomic_store(&drain.sleeping, 1);
      while (atomic_load(&drain.head) == NULL)
        pthread_cond_wait(&drain.cv, &drain.mu);
      atomic_store(&drain.sleeping, 0);
      pthread_mutex_unlock(&drain.mu);
      continue;
    }
    while (t != NULL) { /* the stack is newest first: reverse it */
      weft_task_t *next = t->next;
      t->next = rev;
      rev = t;
      t = next;
    }
    while (rev != NULL) {
      weft_task_t *next = rev->next;
      rev->run(rev);
      rev = next;
    }
  }
}

/* The untimed warm-up every runtime runs before its clock starts. */
#define WARM_FIB 22
static void warm_up(void) {
  weft_future_t *f;
  if (weft_pool_submit(pool, fib, (void *)(intptr_t)WARM_FIB, NULL, &f) != 0 ||
      weft_future_await(f, WEFT_FOREVER) != 0 || weft_future_int(f) != 17711)
    abort();
  weft_future_release(f);
}

static double cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec * 1e3 + ru.ru_utime.tv_usec / 1e3 +
         ru.ru_stime.tv_sec * 1e3 + ru.ru_stime.tv_usec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 3)
    return 2;
  const char *mode = argv[1];
  unsigned threads = (unsigned)atoi(argv[2]);
  pool = start(threads);
  weft_future_t *f;
  if (!strcmp(mode, "fib")) {
    warm_up();
    long n = argc > 3 ? atol(argv[3]) : 32;
    int64_t t0 = weft_clock_now_ns();
    weft_pool_submit(pool, fib, (void *)(intptr_t)n, NULL, &f);
    weft_future_await(f, WEFT_FOREVER);
    int64_t t1 = weft_clock_now_ns();
    if (weft_future_int(f) != 2178309 && n == 32)
      abort();
    printf("%.1f\n", (double)(t1 - t0) / (double)fib_calls(n));
    weft_future_release(f);
  } else if (!strcmp(mode, "skynet")) {
    warm_up();
    int64_t t0 = weft_clock_now_ns();
    weft_pool_submit(pool, skynet, (void *)(uintptr_t)6, NULL, &f);
    weft_future_await(f, WEFT_FOREVER);
    int64_t t1 = weft_clock_now_ns();
    if (weft_future_int(f) != 499999500000)
      abort();
    printf("%.1f\n", (double)(t1 - t0) / 1e6);
    weft_future_release(f);
  } else if (!strcmp(mode, "offload") || !strcmp(mode, "offload_then") ||
             !strcmp(mode, "offload_inline")) {
    /* offload, offload_inline: the continuation is a weft_future_watch
     * (nobody reads a derived future here); offload_then: a
     * weft_future_then, its derived future released unread */
    int use_inline = !strcmp(mode, "offload_inline");
    long n = argc > 3 ? atol(argv[3]) : 1000000;
    long window = use_inline ? n : argc > 4 ? atol(argv[4]) : 65536;
    weft_future_t *done = NULL;
    if (n < 1 || window < 1)
      return 2;
    offload_n = n;
    offload_then = !strcmp(mode, "offload_then");
    drain.ex.ops = &drain_ops;
    pthread_mutex_init(&drain.mu, NULL);
    pthread_cond_init(&drain.cv, NULL);
    offload_ex = use_inline ? weft_executor_inline() : &drain.ex;
    if (use_inline && weft_promise_create(&all_done, &done) != 0)
      abort();
    int64_t t0 = weft_clock_now_ns();
    while (issued < n && issued < window)
      submit_next();
    /* the submitting thread then runs the completions handed back to it
     * (each submitting the next job), as libuv's loop runs after_work;
     * inline, it blocks until the last completion has run on a worker */
    if (use_inline) {
      if (weft_future_await(done, WEFT_FOREVER) != 0 ||
          atomic_load(&completed_any) != n)
        abort();
    } else {
      drain_until(&completed, n);
    }
    int64_t t1 = weft_clock_now_ns();
    if (use_inline) {
      weft_future_release(done);
      weft_promise_release(all_done);
    }
    if ((use_inline ? atomic_load(&completed_any) : completed) != n) {
      fprintf(stderr, "pool_weft: %s: %ld of %ld completions\n", mode,
              use_inline ? atomic_load(&completed_any) : completed, n);
      return 1;
    }
    printf("%.0f\n", (double)n / ((double)(t1 - t0) / 1e9));
    if (getenv("BENCH_VERBOSE")) {
      weft_pool_stats_t st;
      weft_pool_stats(pool, &st);
      fprintf(stderr, "# offload: %llu run, %llu steals, %llu parks\n",
              (unsigned long long)st.jobs_run, (unsigned long long)st.steals,
              (unsigned long long)st.parks);
    }
  } else if (!strcmp(mode, "idle_cpu")) {
    struct timespec settle = {0, 100000000}, idle = {2, 0};
    nanosleep(&settle, NULL); /* let the workers park */
    double c0 = cpu_ms();
    nanosleep(&idle, NULL); /* the measurement itself: 2 s of idleness */
    printf("%.1f\n", cpu_ms() - c0);
  } else {
    return 2;
  }
  weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL);
  return 0;
}
