/* SPDX-License-Identifier: MIT */
/* tests/test_fiber_load.c: fibers in numbers and at their limits: 100,000
 * fibers on one loop each awaiting a sleep (and the memory each takes
 * while it waits), fibers awaiting each other deep on a one-worker pool,
 * many fibers spawned from several threads onto one pool, a stack
 * overflow reported, and spawn under failing allocations and mappings. */
#include "fiber_util.h"

#include "internal.h" /* the fault seam (lib/testing.h) */

#include <fcntl.h>
#include <stdlib.h>

/* ================================================================ */
/* 100,000 fibers each awaiting a sleep                              */
/* ================================================================ */

/* TSan counts each fiber as a thread (8,128 at most, each new one costly
 * while the others live); under ASan each stack's shadow is cleared when
 * it is mapped (seconds per 10,000). */
enum { SLEEPERS = FT_TSAN ? 1000 : FT_ASAN ? 25000 : 100000 };
/* The whole run, spawns to the last stack unmapped; a hang fails, a slow
 * machine does not (mapping and unmapping 100,000 stacks takes seconds,
 * tens of them on a loaded VM). */
#define SLEEPERS_BOUND_MS (3 * BOUND_MS)
/* Bytes resident per waiting fiber that fail the test (the goal is 16 KiB;
 * this bound is generous so that only a real regression fails). */
#define RSS_PER_FIBER_MAX (64 * 1024)

static long rss_bytes(void) {
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0)
    return -1;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = 0;
  long size, resident;
  if (sscanf(buf, "%ld %ld", &size, &resident) != 2)
    return -1;
  return resident * sysconf(_SC_PAGESIZE);
}

static struct {
  weft_loop_t *loop;
  int64_t ms;
  unsigned char *ran;
  long started, done, bad;
  long rss_waiting, waiting_then;
} Z;

static weft_result_t fn_sleeper(void *arg) {
  size_t i = (uintptr_t)arg;
  Z.ran[i]++;
  weft_future_t *s;
  if (weft_loop_sleep(Z.loop, Z.ms, &s) != 0) {
    Z.bad++;
    return weft_err(WEFT_ENOMEM);
  }
  if (++Z.started == SLEEPERS) { /* the last to start: all others wait */
    Z.rss_waiting = rss_bytes();
    Z.waiting_then = Z.started - 1 - Z.done;
  }
  int rc = weft_future_await(s, WEFT_FOREVER);
  Z.bad += rc != 0 || weft_future_state(s) != WEFT_FULFILLED;
  weft_future_release(s);
  Z.done++;
  return weft_ok_int((intptr_t)i);
}

static void test_100k_sleepers(void) {
  weft_loop_t *loop = new_loop();
  memset(&Z, 0, sizeof Z);
  Z.loop = loop;
  Z.ms = FT_ASAN || FT_TSAN ? 5000 : 1000;
  Z.ran = calloc(SLEEPERS, 1);
  weft_future_t **f = calloc(SLEEPERS, sizeof *f);
  REQUIRE_EQ(Z.ran != NULL && f != NULL, 1);
  long rss0 = rss_bytes();
  int64_t t0 = weft_clock_now_ns();
  long spawned = 0;
  for (long i = 0; i < SLEEPERS; i++)
    spawned += weft_fiber_spawn(weft_loop_executor(loop), fn_sleeper,
                                (void *)(uintptr_t)i, NULL, &f[i]) == 0;
  REQUIRE_EQ(spawned, SLEEPERS);
  int64_t spawn_ms = ft_ms_since(t0);
  long *done = &Z.done;
  EXPECT_TRUE(drive(loop, done, SLEEPERS, SLEEPERS_BOUND_MS));
  int64_t ms = ft_ms_since(t0);
  EXPECT_EQ(Z.done, SLEEPERS);
  EXPECT_EQ(Z.bad, 0);
  long once = 0, right = 0;
  for (long i = 0; i < SLEEPERS; i++) {
    once += Z.ran[i] == 1;
    right += weft_future_state(f[i]) == WEFT_FULFILLED &&
             weft_future_int(f[i]) == i;
    weft_future_release(f[i]);
  }
  EXPECT_EQ(once, SLEEPERS);
  EXPECT_EQ(right, SLEEPERS);
  EXPECT_TRUE(ms < SLEEPERS_BOUND_MS);
  /* most were waiting when the last started (the sleep outlasts the
   * starts), so the figure is per waiting fiber */
  EXPECT_TRUE(Z.waiting_then >= SLEEPERS / 2);
  long per = Z.waiting_then > 0 ? (Z.rss_waiting - rss0) / Z.waiting_then : -1;
  printf("\n    %d fibers in %lld ms (spawns %lld ms, sleeps %lld ms); "
         "%ld waiting held %ld bytes resident each (goal 16384, bound %d%s) ",
         SLEEPERS, (long long)ms, (long long)spawn_ms, (long long)Z.ms,
         Z.waiting_then, per, RSS_PER_FIBER_MAX,
         FT_ASAN || FT_TSAN ? ", not checked under a sanitizer" : "");
  if (!FT_ASAN && !FT_TSAN) {
    EXPECT_TRUE(per > 0);
    EXPECT_TRUE(per <= RSS_PER_FIBER_MAX);
  }
  free(f);
  free(Z.ran);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* Fibers awaiting each other deep on a pool with one worker         */
/* ================================================================ */

typedef struct level {
  weft_pool_t *pool;
  int depth, max;
  int rc;
  struct level *next;
} level_t;

/* Level k spawns level k+1 on the same pool and awaits it; the deepest
 * awaits a job of that pool. Each adds 1 to what it awaited. */
static weft_result_t fn_level(void *arg) {
  level_t *l = arg;
  weft_future_t *f;
  if (l->depth == l->max)
    l->rc = weft_pool_submit(l->pool, ft_job_five, NULL, NULL, &f);
  else
    l->rc = weft_fiber_spawn(weft_pool_executor(l->pool), fn_level, l->next,
                             NULL, &f);
  if (l->rc != 0)
    return weft_err(l->rc);
  l->rc = weft_future_await(f, BOUND_MS);
  intptr_t v = weft_future_int(f);
  int err = weft_future_error(f);
  weft_future_release(f);
  if (l->rc != 0)
    return weft_err(l->rc);
  return err != 0 ? weft_err(err) : weft_ok_int(v + 1);
}

static void deep(int max, int rounds) {
  weft_pool_t *pool = ft_pool(1);
  level_t *lv = calloc((size_t)max + 1, sizeof *lv);
  REQUIRE_EQ(lv != NULL, 1);
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k <= max; k++)
      lv[k] = (level_t){pool, k, max, 1, k < max ? &lv[k + 1] : NULL};
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn(weft_pool_executor(pool), fn_level, &lv[0],
                                NULL, &f),
               0);
    EXPECT_ERR(weft_future_await(f, BOUND_MS), 0);
    EXPECT_ERR(weft_future_error(f), 0);
    EXPECT_EQ(weft_future_int(f), 5 + max + 1);
    int ok = 0, deadlk = 0;
    for (int k = 0; k <= max; k++) {
      ok += lv[k].rc == 0;
      deadlk += lv[k].rc == WEFT_EDEADLK;
    }
    EXPECT_EQ(ok, max + 1);
    EXPECT_EQ(deadlk, 0);
    weft_future_release(f);
  }
  free(lv);
  ft_pool_end(pool);
}

static void test_deep_10_one_worker(void) { deep(10, 200); }
/* past the 128 nested awaits a pool worker allows outside fibers */
static void test_deep_300_one_worker(void) { deep(300, 5); }

/* ================================================================ */
/* Many fibers spawned from several threads onto one pool            */
/* ================================================================ */

enum { SPAWNERS = 4, PER_SPAWNER = FT_TSAN ? 500 : 5000 };
static _Atomic int hits[SPAWNERS * PER_SPAWNER];

typedef struct spawner {
  weft_pool_t *pool, *aux;
  int id, spawned, right;
  tu_rounds_t *start;
} spawner_t;

static weft_result_t fn_hit(void *arg) {
  uintptr_t i = (uintptr_t)arg;
  atomic_fetch_add(&hits[i], 1);
  if (weft_fiber_yield() != 0)
    return weft_err(WEFT_EINVAL);
  return weft_ok_int((intptr_t)i);
}

static void *spawn_many(void *arg) {
  spawner_t *s = arg;
  weft_future_t **f = calloc(PER_SPAWNER, sizeof *f);
  if (f == NULL)
    return NULL;
  atomic_fetch_add(&s->start->arrived, 1);
  tu_spin_until(&s->start->arrived, SPAWNERS);
  for (int k = 0; k < PER_SPAWNER; k++) {
    uintptr_t i = (uintptr_t)(s->id * PER_SPAWNER + k);
    if (weft_fiber_spawn(weft_pool_executor(s->pool), fn_hit, (void *)i, NULL,
                         &f[k]) != 0) {
      f[k] = NULL;
      continue;
    }
    s->spawned++;
  }
  for (int k = 0; k < PER_SPAWNER; k++) {
    if (f[k] == NULL)
      continue;
    intptr_t want = s->id * PER_SPAWNER + k;
    s->right += weft_future_await(f[k], BOUND_MS) == 0 &&
                weft_future_int(f[k]) == want;
    weft_future_release(f[k]);
  }
  free(f);
  return NULL;
}

static void test_spawn_from_many_threads(void) {
  weft_pool_t *pool = ft_pool(2);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < SPAWNERS * PER_SPAWNER; i++)
      atomic_store(&hits[i], 0);
    tu_rounds_t start = {0, 0};
    spawner_t s[SPAWNERS];
    pthread_t t[SPAWNERS];
    for (int i = 0; i < SPAWNERS; i++) {
      s[i] = (spawner_t){pool, NULL, i, 0, 0, &start};
      REQUIRE_EQ(pthread_create(&t[i], NULL, spawn_many, &s[i]), 0);
    }
    int spawned = 0, right = 0;
    for (int i = 0; i < SPAWNERS; i++) {
      pthread_join(t[i], NULL);
      spawned += s[i].spawned;
      right += s[i].right;
    }
    int once = 0;
    for (int i = 0; i < SPAWNERS * PER_SPAWNER; i++)
      once += atomic_load(&hits[i]) == 1;
    EXPECT_EQ(spawned, SPAWNERS * PER_SPAWNER);
    EXPECT_EQ(right, SPAWNERS * PER_SPAWNER);
    EXPECT_EQ(once, SPAWNERS * PER_SPAWNER);
  }
  ft_pool_end(pool);
}

/* ================================================================ */
/* Stack overflow                                                    */
/* ================================================================ */

#define OVERFLOW_NAME "overflowing-fiber-42"
static volatile int recurse_limit = 1 << 30;

static int recurse(int d) {
  volatile char buf[512];
  buf[0] = (char)d;
  buf[sizeof buf - 1] = 1;
  if (d < recurse_limit)
    return recurse(d + 1) + buf[sizeof buf - 1];
  return buf[0];
}

static weft_result_t fn_overflow(void *arg) {
  (void)arg;
  return weft_ok_int(recurse(0));
}

/* The child: a fiber with the smallest stack recursing without bound, on
 * the inline executor (where = 0), a loop (1), a pool worker (2) or a
 * thread executor (3). */
static void overflow_child(void *arg) {
  int where = *(int *)arg;
  weft_fiber_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.stack_size = WEFT_FIBER_STACK_MIN;
  o.name = OVERFLOW_NAME;
  weft_future_t *f;
  if (where == 0) {
    weft_fiber_spawn_opts(weft_executor_inline(), &o, fn_overflow, NULL, NULL,
                          &f);
  } else if (where == 1) {
    weft_loop_t *loop;
    if (weft_loop_create(NULL, &loop) == 0 &&
        weft_fiber_spawn_opts(weft_loop_executor(loop), &o, fn_overflow, NULL,
                              NULL, &f) == 0)
      weft_loop_run_until(loop, f, BOUND_MS);
  } else if (where == 3) {
    weft_thread_executor_t *te;
    if (weft_thread_executor_create(&te) == 0 &&
        weft_fiber_spawn_opts(weft_thread_executor_get(te), &o, fn_overflow,
                              NULL, NULL, &f) == 0)
      weft_future_await(f, BOUND_MS);
  } else {
    weft_pool_t *pool;
    if (weft_pool_create(NULL, &pool) == 0 &&
        weft_fiber_spawn_opts(weft_pool_executor(pool), &o, fn_overflow, NULL,
                              NULL, &f) == 0)
      weft_future_await(f, BOUND_MS);
  }
  fprintf(stderr, "the overflowing fiber returned\n");
  _exit(20);
}

static void expect_overflow(int where) {
  static char out[1 << 16];
  int st = ft_child(overflow_child, &where, out, sizeof out);
  bool died = WIFSIGNALED(st) ||
              (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 20);
  bool ours = strstr(out, "fiber stack overflow") != NULL &&
              strstr(out, OVERFLOW_NAME) != NULL;
  bool asans = FT_ASAN && strstr(out, "stack-overflow") != NULL;
  if (!died || !(ours || asans))
    fprintf(stderr, "\n--- child (where %d) status %#x ---\n%.3000s\n", where,
            st, out);
  EXPECT_TRUE(died);
  EXPECT_TRUE(ours || asans);
  if (!FT_ASAN && WIFSIGNALED(st))
    EXPECT_TRUE(WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS);
}

static void test_stack_overflow_reported(void) {
  expect_overflow(0);
  expect_overflow(1);
  if (FT_TSAN) /* (threads started after a fork: TSan refuses) */
    return;
  expect_overflow(2);
  expect_overflow(3);
}

/* ================================================================ */
/* Spawn when allocations or mappings fail                           */
/* ================================================================ */

static _Atomic int runs, dtors;

typedef struct lp {
  weft_loop_t *loop;
} lp_t;

static weft_result_t fn_sleep_once(void *arg) {
  lp_t *l = arg;
  atomic_fetch_add(&runs, 1);
  weft_future_t *s;
  int rc = weft_loop_sleep(l->loop, 1, &s);
  if (rc != 0)
    return weft_err(rc);
  rc = weft_future_await(s, BOUND_MS);
  weft_future_release(s);
  return rc != 0 ? weft_err(rc) : weft_ok_int(1);
}

static void lp_dtor(void *arg) {
  (void)arg;
  atomic_fetch_add(&dtors, 1);
}

static weft_result_t fn_hit_nothing(void *arg) {
  (void)arg;
  atomic_fetch_add(&runs, 1);
  return weft_ok_int(1);
}

/* Run the loop until f settles, without allocating; false after
 * BOUND_MS. */
static bool run_until_settled(weft_loop_t *loop, weft_future_t *f) {
  weft_timer_t wake;
  weft_timer_init(loop, &wake, tick, NULL);
  weft_timer_start(&wake, 1, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (weft_future_state(f) == WEFT_PENDING && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  weft_timer_stop(&wake);
  return weft_future_state(f) != WEFT_PENDING;
}

/* The n-th allocation from spawn on fails, for every n until none does:
 * spawn returns WEFT_ENOMEM with nothing run, arg untouched and *out
 * untouched, or 0 and the fiber settles (fulfilled, or rejected with
 * WEFT_ENOMEM from inside); no block is left. */
static void test_spawn_allocation_fails(void) {
  tu_alloc_install(0);
  weft_loop_t *loop = new_loop();
  lp_t l = {loop};
  int spawn_enomem = 0, bad = 0;
  long n;
  for (n = 1; n < 200; n++) {
    atomic_store(&runs, 0);
    atomic_store(&dtors, 0);
    weft_future_t *sentinel = (weft_future_t *)&l, *f = sentinel;
    weft__fault_arm("alloc", (unsigned long)n, ENOMEM, false);
    int rc = weft_fiber_spawn(weft_loop_executor(loop), fn_sleep_once, &l,
                              lp_dtor, &f);
    int outcome = 0;
    if (rc == 0) {
      if (!run_until_settled(loop, f)) /* (run_until would allocate) */
        bad++;
      outcome = weft_future_error(f);
      weft_future_release(f);
    }
    unsigned long fired = weft__fault_fired();
    weft__fault_disarm();
    weft__fault_record(false);
    if (rc == WEFT_ENOMEM) {
      spawn_enomem++;
      bad += f != sentinel || atomic_load(&runs) != 0 ||
             atomic_load(&dtors) != 0;
    } else if (rc != 0 || (outcome != 0 && outcome != WEFT_ENOMEM) ||
               atomic_load(&dtors) != 0) {
      bad++;
      printf("\n    allocation %ld failing: spawn %s, fiber %s", n,
             weft_error_name(rc), weft_error_name(outcome));
    }
    if (fired == 0)
      break;
  }
  EXPECT_TRUE(n < 200);
  EXPECT_TRUE(spawn_enomem > 0);
  EXPECT_EQ(bad, 0);
  EXPECT_ERR(weft_loop_close(loop), 0);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
  printf("\n    %ld allocation points, spawn said ENOMEM at %d ", n - 1,
         spawn_enomem);
}

/* The stack's mapping refused: spawn returns WEFT_ENOMEM, arg untouched
 * (arg_dtor not run), *out untouched; the next spawn works. A size no
 * cached stack has, so that spawn maps one. */
static void test_spawn_mapping_fails(void) {
  weft_fiber_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.stack_size = 3 * 64 * 1024 + 12345;
  atomic_store(&runs, 0);
  atomic_store(&dtors, 0);
  weft_future_t *sentinel = (weft_future_t *)&o, *f = sentinel;
  weft__fault_arm("mmap", 1, ENOMEM, true);
  int rc = weft_fiber_spawn_opts(weft_executor_inline(), &o, fn_hit_nothing,
                                 (void *)&dtors, ft_count_dtor, &f);
  weft__fault_disarm();
  weft__fault_record(false);
  EXPECT_ERR(rc, WEFT_ENOMEM);
  EXPECT_TRUE(f == sentinel);
  EXPECT_EQ(atomic_load(&dtors), 0);
  EXPECT_EQ(atomic_load(&runs), 0);
  REQUIRE_EQ(weft_fiber_spawn_opts(weft_executor_inline(), &o, fn_hit_nothing,
                                   (void *)&dtors, ft_count_dtor, &f),
             0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(atomic_load(&runs), 1);
  EXPECT_EQ(atomic_load(&dtors), 0);
  weft_future_release(f);
}

static const test_case_t cases[] = {
    {"100,000 fibers on one loop each await a sleep", test_100k_sleepers},
    {"10 deep on a pool with one worker", test_deep_10_one_worker},
    {"300 deep on a pool with one worker", test_deep_300_one_worker},
    {"spawned from several threads onto one pool",
     test_spawn_from_many_threads},
    {"stack overflow: the child dies naming the fiber",
     test_stack_overflow_reported},
    {"spawn: each allocation failing", test_spawn_allocation_fails},
    {"spawn: the stack's mapping failing", test_spawn_mapping_fails},
    {NULL, NULL}};

const test_suite_t suite_fiber_load = {"fiber_load", cases};
