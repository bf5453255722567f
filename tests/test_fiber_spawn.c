/* SPDX-License-Identifier: MIT */
/* tests/test_fiber_spawn.c: weft_fiber_spawn and _opts: NULL arguments,
 * an executor that refuses (a thread executor shutting down), bad options
 * structs, stack sizes. On error fn never runs, arg and *out are
 * untouched. */
#include "fiber_util.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* ================================================================ */
/* Spawn: errors                                                     */
/* ================================================================ */

static _Atomic int err_runs;
static weft_result_t fn_count(void *arg) {
  (void)arg;
  atomic_fetch_add(&err_runs, 1);
  return weft_ok_int(1);
}

/* An executor that refuses every task with the code in `code`. */
typedef struct refuser {
  weft_executor_t base;
  int code;
} refuser_t;

static int refuse_submit(weft_executor_t *ex, weft_task_t *task) {
  (void)task;
  return ((refuser_t *)ex)->code;
}

static const weft_executor_ops_t refuse_ops = {.size = sizeof(
                                                   weft_executor_ops_t),
                                               .name = "refuser",
                                               .submit = refuse_submit};

/* Spawn that must fail with `want`: fn never runs, arg_dtor not called,
 * *out untouched. */
static void expect_spawn_fails(weft_executor_t *ex, weft_fiber_fn fn,
                               const weft_fiber_options_t *o, int want) {
  static _Atomic int dtors;
  atomic_store(&dtors, 0);
  atomic_store(&err_runs, 0);
  weft_future_t *sentinel = (weft_future_t *)&dtors, *out = sentinel;
  int rc = weft_fiber_spawn_opts(ex, o, fn, (void *)&dtors, ft_count_dtor,
                                 &out);
  EXPECT_ERR(rc, want);
  EXPECT_TRUE(out == sentinel);
  EXPECT_EQ(atomic_load(&dtors), 0);
  EXPECT_EQ(atomic_load(&err_runs), 0);
  if (o == NULL) { /* the same through weft_fiber_spawn */
    rc = weft_fiber_spawn(ex, fn, (void *)&dtors, ft_count_dtor, &out);
    EXPECT_ERR(rc, want);
    EXPECT_TRUE(out == sentinel);
    EXPECT_EQ(atomic_load(&dtors), 0);
    EXPECT_EQ(atomic_load(&err_runs), 0);
  }
}

/* out NULL, in a child (a write through it must not take the suite
 * down): exits 0 when both spawns said WEFT_EINVAL, ran nothing and left
 * arg alone. */
static void null_out_child(void *arg) {
  static _Atomic int d;
  (void)arg;
  atomic_store(&err_runs, 0);
  weft_loop_t *loop;
  if (weft_loop_create(NULL, &loop) != 0)
    _exit(10);
  int a = weft_fiber_spawn(weft_loop_executor(loop), fn_count, (void *)&d,
                           ft_count_dtor, NULL);
  int b = weft_fiber_spawn_opts(weft_executor_inline(), NULL, fn_count,
                                (void *)&d, ft_count_dtor, NULL);
  for (int i = 0; i < 3; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  weft_loop_close(loop);
  fprintf(stderr, "spawn %s, spawn_opts %s, runs %d, dtors %d\n",
          weft_error_name(a), weft_error_name(b), atomic_load(&err_runs),
          atomic_load(&d));
  _exit(a == WEFT_EINVAL && b == WEFT_EINVAL && atomic_load(&err_runs) == 0 &&
                atomic_load(&d) == 0
            ? 0
            : 1);
}

static void test_spawn_null_arguments(void) {
  weft_executor_t *in = weft_executor_inline();
  expect_spawn_fails(NULL, fn_count, NULL, WEFT_EINVAL);
  expect_spawn_fails(in, NULL, NULL, WEFT_EINVAL);
  static char out[4096];
  int st = ft_child(null_out_child, NULL, out, sizeof out);
  bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (!ok)
    fprintf(stderr, "\n--- child (out NULL) status %#x ---\n%.2000s\n", st,
            out);
  EXPECT_TRUE(ok);
}

/* The executor's submit error comes back as it is. */
static void test_spawn_executor_refuses(void) {
  refuser_t r = {{&refuse_ops}, WEFT_ESHUTDOWN};
  expect_spawn_fails(&r.base, fn_count, NULL, WEFT_ESHUTDOWN);
  r.code = WEFT_ENOMEM;
  expect_spawn_fails(&r.base, fn_count, NULL, WEFT_ENOMEM);
  r.code = WEFT_EAGAIN;
  expect_spawn_fails(&r.base, fn_count, NULL, WEFT_EAGAIN);
}

/* An executor with a hold op (weft/executor.h): runs tasks inline and
 * counts the holds weft takes for its fibers. */
typedef struct holder {
  weft_executor_t base;
  _Atomic int holds, calls;
  int refuse;
} holder_t;

static int holder_submit(weft_executor_t *ex, weft_task_t *task) {
  holder_t *h = (holder_t *)ex;
  return h->refuse ? h->refuse
                   : weft_executor_submit(weft_executor_inline(), task);
}

static void holder_hold(weft_executor_t *ex, int delta) {
  holder_t *h = (holder_t *)ex;
  atomic_fetch_add(&h->holds, delta);
  atomic_fetch_add(&h->calls, 1);
}

static const weft_executor_ops_t holder_ops = {.size = sizeof(
                                                   weft_executor_ops_t),
                                               .name = "holder",
                                               .submit = holder_submit,
                                               .hold = holder_hold};
/* The same, as a provider built before `hold` existed: its size stops
 * short of the field, so weft must not read it. */
static const weft_executor_ops_t holder_old_ops = {
    .size = offsetof(weft_executor_ops_t, hold),
    .name = "holder-old",
    .submit = holder_submit,
    .hold = holder_hold};

static weft_result_t fn_await_arg(void *arg) {
  return weft_future_await(arg, BOUND_MS) == 0 ? weft_ok_int(1)
                                               : weft_err(WEFT_EINVAL);
}

/* One hold per fiber from spawn until it ended; none left by a refused
 * spawn; none asked of an ops table too old to have the field. */
static void test_spawn_holds_executor(void) {
  enum { N = 50 };
  holder_t h = {{&holder_ops}, 0, 0, 0};
  weft_promise_t *p;
  weft_future_t *in, *f[N];
  REQUIRE_EQ(weft_promise_create(&p, &in), 0);
  for (int i = 0; i < N; i++)
    REQUIRE_EQ(weft_fiber_spawn(&h.base, fn_await_arg, in, NULL, &f[i]), 0);
  EXPECT_EQ(atomic_load(&h.holds), N);
  weft_promise_fulfil_int(p, 1);
  int done = 0;
  for (int i = 0; i < N; i++) {
    done += weft_future_int(f[i]) == 1;
    weft_future_release(f[i]);
  }
  EXPECT_EQ(done, N);
  EXPECT_EQ(atomic_load(&h.holds), 0);
  h.refuse = WEFT_ESHUTDOWN;
  weft_future_t *g = NULL;
  EXPECT_ERR(weft_fiber_spawn(&h.base, fn_await_arg, in, NULL, &g),
             WEFT_ESHUTDOWN);
  EXPECT_EQ(atomic_load(&h.holds), 0);
  holder_t old = {{&holder_old_ops}, 0, 0, 0};
  REQUIRE_EQ(weft_fiber_spawn(&old.base, fn_await_arg, in, NULL, &g), 0);
  EXPECT_EQ(weft_future_int(g), 1);
  weft_future_release(g);
  EXPECT_EQ(atomic_load(&old.calls), 0);
  weft_future_release(in);
  weft_promise_release(p);
}

static _Atomic int gate;
static weft_result_t then_hold(void *arg, weft_future_t *src) {
  (void)arg, (void)src;
  ft_wait_at_least(&gate, 1);
  return weft_ok_int(0);
}

static void *shutdown_thread(void *arg) {
  return (void *)(intptr_t)weft_thread_executor_shutdown(arg);
}

/* A thread executor that is shutting down refuses a spawn from another
 * thread with WEFT_ESHUTDOWN; the spawns it took before still run. */
static void test_spawn_thread_executor_shut_down(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t *p;
  weft_future_t *s, *held;
  REQUIRE_EQ(weft_promise_create(&p, &s), 0);
  weft_promise_fulfil_int(p, 0);
  atomic_store(&gate, 0);
  REQUIRE_EQ(weft_future_then(s, ex, then_hold, NULL, NULL, &held), 0);
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, shutdown_thread, te), 0);
  static _Atomic int dtors;
  atomic_store(&dtors, 0);
  atomic_store(&err_runs, 0);
  /* spawn until the shutdown has begun (the accepted ones wait queued) */
  int accepted = 0, cap = 1024, rc;
  weft_future_t **keep = malloc((size_t)cap * sizeof *keep), *out = NULL;
  REQUIRE_EQ(keep != NULL, 1);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while ((rc = weft_fiber_spawn(ex, fn_count, (void *)&dtors, ft_count_dtor,
                                &out)) == 0) {
    if (accepted == cap) {
      weft_future_t **more = realloc(keep, (size_t)cap * 2 * sizeof *keep);
      REQUIRE_EQ(more != NULL, 1);
      keep = more;
      cap *= 2;
    }
    keep[accepted++] = out;
    out = NULL;
    if (weft_clock_now_ns() > end)
      break;
    sched_yield();
  }
  EXPECT_ERR(rc, WEFT_ESHUTDOWN);
  EXPECT_TRUE(out == NULL);
  EXPECT_EQ(atomic_load(&dtors), 0);
  atomic_store(&gate, 1);
  void *ret;
  pthread_join(t, &ret);
  EXPECT_ERR((int)(intptr_t)ret, 0);
  EXPECT_EQ(atomic_load(&err_runs), accepted);
  for (int i = 0; i < accepted; i++) {
    EXPECT_EQ(weft_future_int(keep[i]), 1);
    weft_future_release(keep[i]);
  }
  free(keep);
  EXPECT_EQ(atomic_load(&dtors), 0); /* fn owned arg */
  weft_future_release(held);
  weft_future_release(s);
  weft_promise_release(p);
}

static void test_spawn_bad_options(void) {
  weft_executor_t *in = weft_executor_inline();
  struct {
    weft_fiber_options_t o;
    unsigned char later[24];
  } big;
  memset(&big, 0, sizeof big);
  weft_fiber_options_t *o = &big.o;
  o->size = 0;
  expect_spawn_fails(in, fn_count, o, WEFT_EINVAL);
  o->size = sizeof *o - 1;
  expect_spawn_fails(in, fn_count, o, WEFT_EINVAL);
  o->size = 1u << 20;
  expect_spawn_fails(in, fn_count, o, WEFT_EINVAL);
  o->size = sizeof big;
  big.later[5] = 1;
  expect_spawn_fails(in, fn_count, o, WEFT_ENOTSUP);
  /* a later weft's struct with nothing set past ours: accepted */
  big.later[5] = 0;
  weft_future_t *f;
  atomic_store(&err_runs, 0);
  REQUIRE_EQ(weft_fiber_spawn_opts(in, o, fn_count, NULL, NULL, &f), 0);
  EXPECT_EQ(weft_future_int(f), 1);
  weft_future_release(f);
  EXPECT_EQ(atomic_load(&err_runs), 1);
}

typedef struct deep {
  size_t bytes;
  int ok;
} deep_t;

/* Touch `bytes` of stack below this frame. */
static int touch_stack(size_t bytes) {
  volatile char buf[1024];
  buf[0] = 1;
  buf[sizeof buf - 1] = 1;
  if (bytes <= sizeof buf)
    return buf[0];
  return touch_stack(bytes - sizeof buf) + buf[sizeof buf - 1];
}

static weft_result_t fn_use_stack(void *arg) {
  deep_t *d = arg;
  d->ok = touch_stack(d->bytes) > 0;
  return weft_ok_int(0);
}

/* Stack sizes: NULL options and zero mean the default; tiny and unaligned
 * requests are raised to whole pages of at least the minimum; a fiber can
 * use most of what it asked for. */
static void test_spawn_stack_sizes(void) {
  weft_executor_t *in = weft_executor_inline();
  static const size_t asked[] = {0, 1, 5000, WEFT_FIBER_STACK_MIN + 1,
                                 1024 * 1024};
  static const size_t use[] = {WEFT_FIBER_STACK_DEFAULT / 2,
                               WEFT_FIBER_STACK_MIN / 2,
                               WEFT_FIBER_STACK_MIN / 2,
                               WEFT_FIBER_STACK_MIN / 2, 768 * 1024};
  for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
    weft_fiber_options_t o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.stack_size = asked[i];
    o.name = "stack-size test";
    deep_t d = {use[i], 0};
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn_opts(in, &o, fn_use_stack, &d, NULL, &f), 0);
    EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
    EXPECT_EQ(d.ok, 1);
    weft_future_release(f);
  }
  deep_t d = {WEFT_FIBER_STACK_DEFAULT / 2, 0};
  weft_future_t *f;
  REQUIRE_EQ(weft_fiber_spawn_opts(in, NULL, fn_use_stack, &d, NULL, &f), 0);
  EXPECT_EQ(d.ok, 1);
  weft_future_release(f);
}

static const test_case_t cases[] = {
    {"spawn: NULL arguments", test_spawn_null_arguments},
    {"spawn: executor's submit error", test_spawn_executor_refuses},
    {"spawn: thread executor shutting down: ESHUTDOWN",
     test_spawn_thread_executor_shut_down},
    {"spawn: bad options", test_spawn_bad_options},
    {"spawn: stack sizes", test_spawn_stack_sizes},
    {"spawn: a hold per fiber on an executor with the hold op",
     test_spawn_holds_executor},
    {NULL, NULL}};

const test_suite_t suite_fiber_spawn = {"fiber_spawn", cases};
