/* SPDX-License-Identifier: MIT */
/* bench/fiber_weft.c: the `fiber` suite's work done with weft; prints one
 * number per mode:
 *   switch N          ns per suspend+resume pair: one fiber on the inline
 *                     executor calling weft_fiber_yield() N times
 *   switch_queued N   ns per suspend+resume pair: two fibers on the inline
 *                     executor taking turns through its queue, N yields each
 *   spawn N           ns per spawn + run + settle + release of an empty
 *                     fiber on the inline executor (stacks recycled)
 *   rss N MS          resident bytes per fiber: N fibers on one loop, each
 *                     awaiting a weft_loop_sleep of MS ms
 * Each timed mode runs a tenth of its work untimed first, in the same
 * process and thread, and is timed with the thread's CPU clock: the work
 * never sleeps, and on a shared machine a run that is preempted is not
 * charged for the time other processes ran. */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The calling thread's CPU time (fibers run on it: their time is its). */
static int64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", what, weft_error_message(rc));
    exit(1);
  }
}

/* ---- switch: one fiber, alone on its thread's inline executor ---- */

struct yields {
  long warm, n;
  int64_t t0, t1;
};

static weft_result_t yielder(void *arg) {
  struct yields *y = arg;
  for (long i = 0; i < y->warm; i++)
    check(weft_fiber_yield(), "yield");
  y->t0 = cpu_ns();
  for (long i = 0; i < y->n; i++)
    check(weft_fiber_yield(), "yield");
  y->t1 = cpu_ns();
  return weft_ok_int(0);
}

/* Each yield switches out of the fiber to the inline executor's trampoline
 * and back into the fiber: one suspend and one resume. */
static double switch_pair(long n) {
  struct yields y = {n / 10, n, 0, 0};
  weft_future_t *f;
  check(weft_fiber_spawn(weft_executor_inline(), yielder, &y, NULL, &f),
        "spawn");
  if (weft_future_state(f) != WEFT_FULFILLED) {
    fprintf(stderr, "switch: the fiber did not finish\n");
    exit(1);
  }
  weft_future_release(f);
  return (double)(y.t1 - y.t0) / (double)n;
}

/* ---- switch_queued: two fibers taking turns through the queue ---- */

struct turns {
  long warm, n;
  int64_t t0, t1;
  long done; /* yields made by the other fiber, to check they alternate */
};

static weft_result_t timed_turns(void *arg) {
  struct turns *t = arg;
  for (long i = 0; i < t->warm; i++)
    check(weft_fiber_yield(), "yield");
  long before = t->done;
  t->t0 = cpu_ns();
  for (long i = 0; i < t->n; i++)
    check(weft_fiber_yield(), "yield");
  t->t1 = cpu_ns();
  if (t->done - before != t->n) {
    fprintf(stderr, "switch_queued: %ld turns of the other fiber, not %ld\n",
            t->done - before, t->n);
    exit(1);
  }
  return weft_ok_int(0);
}

static weft_result_t other_turns(void *arg) {
  struct turns *t = arg;
  for (long i = 0; i < t->warm + t->n; i++) {
    t->done++;
    check(weft_fiber_yield(), "yield");
  }
  return weft_ok_int(0);
}

/* Spawned from a fiber, the two start only once it returns (the inline
 * executor queues what is submitted while it runs a task), so from the
 * first yield on each resume goes through the queue. */
static weft_result_t start_both(void *arg) {
  weft_future_t *a, *b;
  check(weft_fiber_spawn(weft_executor_inline(), timed_turns, arg, NULL, &a),
        "spawn");
  check(weft_fiber_spawn(weft_executor_inline(), other_turns, arg, NULL, &b),
        "spawn");
  weft_future_release(a);
  weft_future_release(b);
  return weft_ok_int(0);
}

/* Per pair: one fiber switches out to the trampoline, which switches into
 * the other; in [t0, t1) each of the two makes n yields. */
static double switch_queued(long n) {
  struct turns t = {n / 10, n, 0, 0, 0};
  weft_future_t *f;
  check(weft_fiber_spawn(weft_executor_inline(), start_both, &t, NULL, &f),
        "spawn");
  weft_future_release(f);
  if (t.t1 == 0) {
    fprintf(stderr, "switch_queued: the fibers did not finish\n");
    exit(1);
  }
  return (double)(t.t1 - t.t0) / (double)(2 * n);
}

/* ---- spawn ---- */

static long ran;

static weft_result_t empty(void *arg) {
  (void)arg;
  ran++;
  return weft_ok_int(0);
}

/* On the inline executor the fiber runs inside the spawn call, returns and
 * settles its future; the stack goes back to this thread's cache and the
 * next spawn takes it again. */
static void spawn_many(long n) {
  for (long i = 0; i < n; i++) {
    weft_future_t *f;
    check(weft_fiber_spawn(weft_executor_inline(), empty, NULL, NULL, &f),
          "spawn");
    weft_future_release(f);
  }
}

static double spawn(long n) {
  spawn_many(n / 10);
  ran = 0;
  int64_t t0 = cpu_ns();
  spawn_many(n);
  int64_t t1 = cpu_ns();
  if (ran != n) {
    fprintf(stderr, "spawn: %ld fibers ran, not %ld\n", ran, n);
    exit(1);
  }
  return (double)(t1 - t0) / (double)n;
}

/* ---- rss: many fibers waiting on the loop's timers ---- */

static long vm_rss_bytes(void) {
  FILE *fp = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (fp == NULL)
    return -1;
  while (fgets(line, sizeof line, fp) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  fclose(fp);
  return kb * 1024;
}

static struct {
  weft_loop_t *loop;
  int64_t ms;
  long n, waiting, ended, cancelled;
  long rss0, rss1;
  weft_future_t **fibers;
} R;

static weft_result_t sleeper(void *arg) {
  (void)arg;
  weft_future_t *s;
  check(weft_loop_sleep(R.loop, R.ms, &s), "sleep");
  R.waiting++;
  int rc = weft_future_await(s, WEFT_FOREVER);
  weft_future_release(s);
  if (rc == WEFT_ECANCELED)
    R.cancelled++;
  if (++R.ended == R.n)
    weft_loop_stop(R.loop);
  return weft_ok_int(0);
}

/* Posted after the spawns; posted again until every fiber has reached its
 * await (the sleeps are seconds long: none ends before). */
static void measure(weft_loop_t *loop, void *arg, int status) {
  if (status != 0 || R.ended != 0) {
    fprintf(stderr, "rss: %ld of %ld fibers waiting\n", R.waiting, R.n);
    exit(1);
  }
  if (R.waiting < R.n) {
    check(weft_loop_post(loop, measure, arg), "post");
    return;
  }
  R.rss1 = vm_rss_bytes();
  /* Done: end the waits now rather than after the sleep. */
  for (long i = 0; i < R.n; i++)
    weft_future_cancel(R.fibers[i]);
}

static double rss(long n, int64_t ms) {
  R.n = n;
  R.ms = ms;
  R.fibers = calloc((size_t)n, sizeof *R.fibers);
  if (R.fibers == NULL)
    abort();
  memset(R.fibers, 0xff, (size_t)n * sizeof *R.fibers); /* resident now */
  check(weft_loop_create(NULL, &R.loop), "loop");
  weft_executor_t *ex = weft_loop_executor(R.loop);
  R.rss0 = vm_rss_bytes();
  for (long i = 0; i < n; i++)
    check(weft_fiber_spawn(ex, sleeper, NULL, NULL, &R.fibers[i]), "spawn");
  check(weft_loop_post(R.loop, measure, NULL), "post");
  check(weft_loop_run(R.loop, WEFT_RUN_DEFAULT), "run");
  if (R.ended != n || R.rss1 <= 0) {
    fprintf(stderr, "rss: %ld of %ld fibers ended\n", R.ended, n);
    exit(1);
  }
  for (long i = 0; i < n; i++)
    weft_future_release(R.fibers[i]);
  check(weft_loop_close(R.loop), "loop close");
  free(R.fibers);
  return (double)(R.rss1 - R.rss0) / (double)n;
}

int main(int argc, char **argv) {
  long n = argc >= 3 ? atol(argv[2]) : 0;
  if (argc == 3 && n > 0 && strcmp(argv[1], "switch") == 0)
    printf("%.1f\n", switch_pair(n));
  else if (argc == 3 && n > 0 && strcmp(argv[1], "switch_queued") == 0)
    printf("%.1f\n", switch_queued(n));
  else if (argc == 3 && n > 0 && strcmp(argv[1], "spawn") == 0)
    printf("%.1f\n", spawn(n));
  else if (argc == 4 && n > 0 && strcmp(argv[1], "rss") == 0 &&
           atol(argv[3]) > 0)
    printf("%.0f\n", rss(n, atol(argv[3])));
  else {
    fprintf(stderr, "usage: %s switch|switch_queued|spawn N | rss N SLEEP_MS\n",
            argv[0]);
    return 2;
  }
  return 0;
}
