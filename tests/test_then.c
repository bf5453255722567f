/* SPDX-License-Identifier: MIT */
/* tests/test_then.c: continuations: settled and pending sources, what the
 * continuation sees and returns, flattening, executors and arg ownership. */
#include "testutil.h"

#include <stdlib.h>

static weft_result_t add_one(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

static weft_result_t echo_outcome(void *arg, weft_future_t *src) {
  (void)arg;
  int err = weft_future_error(src);
  return err ? weft_err(err) : weft_ok_int(weft_future_int(src));
}

static void test_on_settled_and_pending(void) {
  weft_promise_t *p;
  weft_future_t *f, *a, *b;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(
      weft_future_then(f, weft_executor_inline(), add_one, NULL, NULL, &a), 0);
  EXPECT_EQ(weft_future_state(a), WEFT_PENDING);
  weft_promise_fulfil_int(p, 41);
  EXPECT_EQ(weft_future_state(a), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(a), 42);
  /* on an already settled source, an inline continuation runs at once */
  REQUIRE_EQ(
      weft_future_then(a, weft_executor_inline(), add_one, NULL, NULL, &b), 0);
  EXPECT_EQ(weft_future_int(b), 43);
  weft_future_release(a);
  weft_future_release(b);
  weft_future_release(f);
  weft_promise_release(p);
}

static void test_sees_error_and_cancel(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), echo_outcome, NULL, NULL, &a);
  weft_promise_reject(p, WEFT_ECONNRESET);
  EXPECT_ERR(weft_future_error(a), WEFT_ECONNRESET);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);

  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), echo_outcome, NULL, NULL, &a);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_state(a), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(a), WEFT_ECANCELED);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
}

static atomic_int dtor_runs;
static void count_free(void *p) {
  atomic_fetch_add(&dtor_runs, 1);
  free(p);
}
static weft_result_t give_ptr(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  int *v = malloc(sizeof *v);
  *v = 99;
  return weft_ok(v, count_free);
}
static weft_result_t give_bad_err(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_err(3); /* not negative: becomes EINVAL */
}
static weft_result_t give_null_follow(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  return weft_follow(NULL);
}

static void test_results(void) {
  weft_promise_t *p;
  weft_future_t *f, *a, *b, *c;
  atomic_store(&dtor_runs, 0);
  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), give_ptr, NULL, NULL, &a);
  weft_future_then(f, weft_executor_inline(), give_bad_err, NULL, NULL, &b);
  weft_future_then(f, weft_executor_inline(), give_null_follow, NULL, NULL, &c);
  weft_promise_fulfil_int(p, 0);
  EXPECT_EQ(*(int *)weft_future_value(a), 99);
  EXPECT_ERR(weft_future_error(b), WEFT_EINVAL);
  EXPECT_ERR(weft_future_error(c), WEFT_EINVAL);
  weft_future_release(a);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  weft_future_release(b);
  weft_future_release(c);
  weft_future_release(f);
  weft_promise_release(p);
}

/* Flattening: the continuation returns a future settled later elsewhere. */
static weft_promise_t *inner_p;
static weft_future_t *inner_f;
static weft_result_t follow_inner(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  weft_future_retain(inner_f);
  return weft_follow(inner_f);
}
static void *fulfil_inner(void *arg) {
  (void)arg;
  int *v = malloc(sizeof *v);
  *v = 5;
  weft_promise_fulfil(inner_p, v, count_free);
  return NULL;
}

static void test_flatten_pending(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  atomic_store(&dtor_runs, 0);
  weft_promise_create(&p, &f);
  weft_promise_create(&inner_p, &inner_f);
  weft_future_then(f, weft_executor_inline(), follow_inner, NULL, NULL, &a);
  weft_promise_fulfil_int(p, 1);
  EXPECT_EQ(weft_future_state(a), WEFT_PENDING); /* follows inner now */
  pthread_t t;
  pthread_create(&t, NULL, fulfil_inner, NULL);
  EXPECT_EQ(weft_future_await(a, 10000), 0);
  pthread_join(t, NULL);
  EXPECT_EQ(weft_future_state(a), WEFT_FULFILLED);
  EXPECT_EQ(*(int *)weft_future_value(a), 5); /* shared with inner */
  weft_future_release(inner_f);
  weft_promise_release(inner_p);
  EXPECT_EQ(atomic_load(&dtor_runs), 0); /* a still borrows the value */
  weft_future_release(a);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  weft_future_release(f);
  weft_promise_release(p);
}

static weft_result_t follow_src(void *arg, weft_future_t *src) {
  (void)arg;
  weft_future_retain(src);
  return weft_follow(src);
}

static void test_flatten_settled(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  weft_promise_create(&p, &f);
  weft_promise_reject(p, WEFT_EPIPE);
  weft_future_then(f, weft_executor_inline(), follow_src, NULL, NULL, &a);
  EXPECT_ERR(weft_future_error(a), WEFT_EPIPE);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
}

/* Thread contract: inline runs on the settling thread, a thread executor
 * on its own thread. */
static pthread_t seen_thread;
static weft_result_t record_thread(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  seen_thread = pthread_self();
  return weft_ok_int(1);
}
static void *fulfil_arg(void *arg) {
  weft_promise_fulfil_int(arg, 1);
  return NULL;
}

static void test_inline_runs_on_settling_thread(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), record_thread, NULL, NULL, &a);
  pthread_t t;
  pthread_create(&t, NULL, fulfil_arg, p);
  pthread_join(t, NULL);
  EXPECT_TRUE(pthread_equal(seen_thread, t));
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
}

static pthread_t te_thread;
static weft_result_t note_te(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  te_thread = pthread_self();
  return weft_ok_int(0);
}

static void test_thread_executor_thread(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t *p;
  weft_future_t *f, *a, *b;
  /* learn the executor's thread */
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 0);
  weft_future_then(f, ex, note_te, NULL, NULL, &a);
  EXPECT_EQ(weft_future_await(a, 10000), 0);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
  for (int i = 0; i < 100; i++) {
    weft_promise_create(&p, &f);
    weft_future_then(f, ex, record_thread, NULL, NULL, &b);
    pthread_t t;
    pthread_create(&t, NULL, fulfil_arg, p);
    EXPECT_EQ(weft_future_await(b, 10000), 0);
    pthread_join(t, NULL);
    EXPECT_TRUE(pthread_equal(seen_thread, te_thread));
    EXPECT_TRUE(!pthread_equal(seen_thread, t));
    weft_future_release(b);
    weft_future_release(f);
    weft_promise_release(p);
  }
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* arg ownership: fn owns arg when it runs; arg_dtor runs when it never does */
static void free_arg(void *arg) {
  atomic_fetch_add(&dtor_runs, 1);
  free(arg);
}
static weft_result_t take_arg(void *arg, weft_future_t *src) {
  (void)src;
  free(arg);
  return weft_ok_int(0);
}

static void test_arg_dtor(void) {
  weft_promise_t *p;
  weft_future_t *f, *a;
  atomic_store(&dtor_runs, 0);
  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), take_arg, malloc(4), free_arg,
                   &a);
  EXPECT_EQ(weft_future_cancel(a), 0);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  weft_promise_fulfil_int(p, 1); /* fn must not run now */
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);

  weft_promise_create(&p, &f);
  weft_future_then(f, weft_executor_inline(), take_arg, malloc(4), free_arg,
                   &a);
  weft_promise_fulfil_int(p, 1);
  EXPECT_EQ(atomic_load(&dtor_runs), 1); /* fn ran and freed arg itself */
  EXPECT_EQ(weft_future_state(a), WEFT_FULFILLED);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
}

/* An executor that refuses: the derived future reports why. */
static int refuse(weft_executor_t *ex, weft_task_t *t) {
  (void)ex;
  (void)t;
  return WEFT_ESHUTDOWN;
}
static const weft_executor_ops_t refusing_ops = {
    .size = sizeof(weft_executor_ops_t), .name = "refusing", .submit = refuse};

static void test_executor_refuses(void) {
  weft_executor_t ex = {&refusing_ops};
  weft_promise_t *p;
  weft_future_t *f, *a;
  atomic_store(&dtor_runs, 0);
  weft_promise_create(&p, &f);
  weft_future_then(f, &ex, take_arg, malloc(4), free_arg, &a);
  weft_promise_fulfil_int(p, 1);
  EXPECT_ERR(weft_future_error(a), WEFT_ESHUTDOWN);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  weft_future_release(a);
  weft_future_release(f);
  weft_promise_release(p);
}

static int order_log[8], order_n;
static weft_result_t log_order(void *arg, weft_future_t *src) {
  (void)src;
  order_log[order_n++] = (int)(intptr_t)arg;
  return weft_ok_int(0);
}

static void test_attach_order(void) {
  weft_promise_t *p;
  weft_future_t *f, *d[5];
  order_n = 0;
  weft_promise_create(&p, &f);
  for (int i = 0; i < 5; i++)
    weft_future_then(f, weft_executor_inline(), log_order, (void *)(intptr_t)i,
                     NULL, &d[i]);
  weft_promise_fulfil_int(p, 0);
  EXPECT_EQ(order_n, 5);
  for (int i = 0; i < 5; i++) {
    EXPECT_EQ(order_log[i], i);
    weft_future_release(d[i]);
  }
  weft_future_release(f);
  weft_promise_release(p);
}

static atomic_int drained;
static void count_task(weft_task_t *t) {
  atomic_fetch_add(&drained, 1);
  free(t);
}

static void test_thread_executor_drains(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  atomic_store(&drained, 0);
  for (int i = 0; i < 10000; i++) {
    weft_task_t *t = malloc(sizeof *t);
    t->run = count_task;
    EXPECT_EQ(weft_executor_submit(weft_thread_executor_get(te), t), 0);
  }
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
  EXPECT_EQ(atomic_load(&drained), 10000);
}

/* ---- watch: a continuation without a derived future ---- */
typedef struct {
  int runs;
  int state;
  intptr_t value;
  pthread_t thread;
} watch_log_t;

static void log_watch(void *arg, weft_future_t *f) {
  watch_log_t *l = arg;
  l->runs++;
  l->state = weft_future_state(f);
  l->value = weft_future_int(f);
  l->thread = pthread_self();
}

static void test_watch(void) {
  weft_promise_t *p;
  weft_future_t *f;
  watch_log_t a = {0}, b = {0}, c = {0};
  /* pending: runs once when settled; the caller's handle may go at once */
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_watch(f, weft_executor_inline(), log_watch, &a, NULL),
             0);
  /* the watch has our handle now: f lives on, and is not cancelled */
  EXPECT_EQ(a.runs, 0);
  EXPECT_EQ(weft_promise_is_cancelled(p), 0);
  weft_promise_fulfil_int(p, 7);
  EXPECT_EQ(a.runs, 1);
  EXPECT_EQ(a.state, WEFT_FULFILLED);
  EXPECT_EQ(a.value, 7);
  EXPECT_TRUE(pthread_equal(a.thread, pthread_self()));
  weft_promise_release(p);
  /* settled already: runs at once (inline); a cancelled source is seen */
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  EXPECT_EQ(weft_future_cancel(f), 0);
  REQUIRE_EQ(weft_future_watch(f, weft_executor_inline(), log_watch, &b, NULL),
             0);
  EXPECT_EQ(b.runs, 1);
  EXPECT_EQ(b.state, WEFT_CANCELLED);
  weft_promise_release(p);
  /* on a thread executor: on its thread, not the settling one */
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_watch(f, weft_thread_executor_get(te), log_watch, &c,
                               NULL),
             0);
  weft_promise_reject(p, WEFT_EPIPE);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0); /* drains: c ran by now */
  EXPECT_EQ(c.runs, 1);
  EXPECT_EQ(c.state, WEFT_REJECTED);
  EXPECT_TRUE(!pthread_equal(c.thread, pthread_self()));
  weft_promise_release(p);
}

static void take_watch_arg(void *arg, weft_future_t *f) {
  (void)f;
  free(arg);
}

static void test_watch_refused_and_errors(void) {
  weft_executor_t ex = {&refusing_ops};
  weft_promise_t *p;
  weft_future_t *f;
  atomic_store(&dtor_runs, 0);
  weft_promise_create(&p, &f);
  /* each watch takes a handle: retain one per watch, keep our own */
  REQUIRE_EQ(weft_future_retain(f), 0);
  REQUIRE_EQ(weft_future_retain(f), 0);
  /* the executor refuses at settle time: fn never runs, arg_dtor does */
  REQUIRE_EQ(weft_future_watch(f, &ex, take_watch_arg, malloc(4), free_arg), 0);
  /* fn runs and owns arg: arg_dtor does not run */
  REQUIRE_EQ(weft_future_watch(f, weft_executor_inline(), take_watch_arg,
                               malloc(4), free_arg),
             0);
  weft_promise_fulfil_int(p, 1);
  EXPECT_EQ(atomic_load(&dtor_runs), 1);
  EXPECT_ERR(weft_future_watch(NULL, weft_executor_inline(), take_watch_arg,
                               NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, NULL, take_watch_arg, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_watch(f, weft_executor_inline(), NULL, NULL, NULL),
             WEFT_EINVAL);
  weft_future_release(f);
  weft_promise_release(p);
}

/* ---- weft_watch_start: the caller's node, no allocation ---- */

/* A chain of `left` steps through one node: each step's function sees the
 * node free again and starts it on the next future, as a connection's
 * read -> write -> read chain does. */
typedef struct {
  weft_watch_t node;
  weft_promise_t *p;
  int left, runs, was_active;
  weft_executor_t *ex;
} chain_t;

static void chain_step(void *arg, weft_future_t *f) {
  chain_t *c = arg;
  c->runs++;
  c->was_active += weft_watch_is_active(&c->node);
  if (weft_future_int(f) != c->runs || --c->left == 0)
    return;
  weft_promise_t *p;
  weft_future_t *g;
  if (weft_promise_create(&p, &g) != 0)
    return;
  if (weft_watch_start(&c->node, g, c->ex, chain_step, c, NULL) != 0) {
    weft_future_release(g);
    weft_promise_release(p);
    return;
  }
  weft_promise_release(c->p);
  c->p = p;
  weft_promise_fulfil_int(p, c->runs + 1);
}

static void test_watch_start_chain(void) {
  chain_t c = {.left = 1000, .ex = weft_executor_inline()};
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&c.p, &f), 0);
  EXPECT_TRUE(!weft_watch_is_active(&c.node)); /* zeroed: inactive */
  REQUIRE_EQ(weft_watch_start(&c.node, f, c.ex, chain_step, &c, NULL), 0);
  EXPECT_TRUE(weft_watch_is_active(&c.node));
  /* the watch holds the interest: f is not cancelled for want of a handle */
  EXPECT_TRUE(!weft_promise_is_cancelled(c.p));
  weft_promise_fulfil_int(c.p, 1);
  EXPECT_EQ(c.runs, 1000);
  EXPECT_EQ(c.was_active, 0); /* the node is the caller's once fn begins */
  EXPECT_TRUE(!weft_watch_is_active(&c.node));
  weft_promise_release(c.p);
}

/* The same chain hopping to a thread executor: every step once, and the
 * node reused from the executor's thread. */
static void test_watch_start_threads(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  chain_t c = {.left = 2000, .ex = weft_thread_executor_get(te)};
  weft_future_t *f;
  REQUIRE_EQ(weft_promise_create(&c.p, &f), 0);
  REQUIRE_EQ(weft_watch_start(&c.node, f, c.ex, chain_step, &c, NULL), 0);
  weft_promise_fulfil_int(c.p, 1);
  /* each step settles the next promise on the executor's thread, so the
   * chain ends there; shutdown drains it */
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (weft_watch_is_active(&c.node) && weft_clock_now_ns() < end)
    sched_yield();
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
  EXPECT_EQ(c.runs, 2000);
  EXPECT_EQ(c.was_active, 0);
  weft_promise_release(c.p);
}

static void count_watch(void *arg, weft_future_t *f) {
  (void)f;
  ++*(int *)arg;
}

/* No allocation at all: with every allocation failing it still starts,
 * runs once, and (refused by its executor) runs arg_dtor instead. */
static void test_watch_start_no_memory(void) {
  weft_executor_t refusing = {&refusing_ops};
  weft_promise_t *p;
  weft_future_t *f;
  weft_watch_t a = {0}, b = {0};
  int runs = 0;
  atomic_store(&dtor_runs, 0);
  tu_alloc_install(0); /* weft's blocks from here on come from the counter */
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_future_retain(f), 0);
  void *arg = malloc(4);
  /* the same allocator, its count reset, failing its first allocation */
  tu_alloc_install(1);
  long before = tu_alloc_count();
  EXPECT_EQ(weft_watch_start(&a, f, weft_executor_inline(), count_watch, &runs,
                             NULL),
            0);
  EXPECT_EQ(weft_watch_start(&b, f, &refusing, take_watch_arg, arg, free_arg),
            0);
  EXPECT_EQ(tu_alloc_count(), before); /* nothing asked of the allocator */
  weft_promise_fulfil_int(p, 3);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(atomic_load(&dtor_runs), 1); /* refused: arg_dtor, not fn */
  EXPECT_TRUE(!weft_watch_is_active(&a) && !weft_watch_is_active(&b));
  weft_promise_release(p);
  tu_alloc_restore();
}

static void test_watch_start_errors(void) {
  weft_promise_t *p;
  weft_future_t *f;
  weft_watch_t w = {0};
  int runs = 0;
  weft_executor_t *in = weft_executor_inline();
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  EXPECT_ERR(weft_watch_start(NULL, f, in, count_watch, &runs, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_watch_start(&w, NULL, in, count_watch, &runs, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_watch_start(&w, f, NULL, count_watch, &runs, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_watch_start(&w, f, in, NULL, &runs, NULL), WEFT_EINVAL);
  EXPECT_TRUE(!weft_watch_is_active(NULL));
  REQUIRE_EQ(weft_future_retain(f), 0);
  REQUIRE_EQ(weft_watch_start(&w, f, in, count_watch, &runs, NULL), 0);
  /* active: a second start is refused and the caller keeps its handle */
  EXPECT_ERR(weft_watch_start(&w, f, in, count_watch, &runs, NULL), WEFT_EBUSY);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  weft_promise_fulfil_int(p, 1);
  EXPECT_EQ(runs, 1);
  /* inactive again: it starts on a settled future and runs at once */
  REQUIRE_EQ(weft_watch_start(&w, f, in, count_watch, &runs, NULL), 0);
  EXPECT_EQ(runs, 2);
  weft_promise_release(p);
}

/* ---- a continuation following its own derived future (a cycle) ---- */

/* Follows the future *arg names when it runs (the derived future of its
 * own then, or another then's), as a user who kept those handles would. */
static weft_result_t follow_named(void *arg, weft_future_t *src) {
  (void)src;
  weft_future_t *target = *(weft_future_t *volatile *)arg;
  weft_future_retain(target);
  return weft_follow(target);
}

/* d follows d: rejected with WEFT_ECYCLE at once, nothing leaks (the
 * counting allocator sees every block of the core come back). */
static void test_follow_self(void) {
  weft_executor_t *exs[2] = {weft_executor_inline(), NULL};
  for (int e = 0; e < 2; e++) {
    tu_alloc_install(0);
    weft_thread_executor_t *te = NULL;
    if (e == 1) {
      REQUIRE_EQ(weft_thread_executor_create(&te), 0);
      exs[1] = weft_thread_executor_get(te);
    }
    weft_promise_t *p;
    weft_future_t *f, *d;
    REQUIRE_EQ(weft_promise_create(&p, &f), 0);
    REQUIRE_EQ(weft_future_then(f, exs[e], follow_named, &d, NULL, &d), 0);
    weft_promise_fulfil_int(p, 1);
    EXPECT_EQ(weft_future_await(d, 5000), 0);
    EXPECT_EQ(weft_future_state(d), WEFT_REJECTED);
    EXPECT_ERR(weft_future_error(d), WEFT_ECYCLE);
    weft_future_release(d);
    weft_future_release(f);
    weft_promise_release(p);
    if (te != NULL)
      EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
    EXPECT_EQ(tu_alloc_live(), 0);
    tu_alloc_restore();
  }
}

/* a follows b's derived future, then b's continuation follows a: the
 * second follow closes the cycle and is rejected; a follows b into it. */
static void test_follow_mutual(void) {
  tu_alloc_install(0);
  weft_promise_t *p, *q;
  weft_future_t *f, *g, *a, *b;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(weft_promise_create(&q, &g), 0);
  REQUIRE_EQ(weft_future_then(f, weft_executor_inline(), follow_named, &b, NULL,
                              &a),
             0);
  REQUIRE_EQ(weft_future_then(g, weft_executor_inline(), follow_named, &a, NULL,
                              &b),
             0);
  weft_promise_fulfil_int(p, 1); /* a follows b */
  EXPECT_EQ(weft_future_state(a), WEFT_PENDING);
  weft_promise_fulfil_int(q, 1); /* b would follow a */
  EXPECT_ERR(weft_future_error(b), WEFT_ECYCLE);
  EXPECT_ERR(weft_future_error(a), WEFT_ECYCLE);
  weft_future_release(a);
  weft_future_release(b);
  weft_future_release(f);
  weft_future_release(g);
  weft_promise_release(p);
  weft_promise_release(q);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

/* The two follows of a mutual cycle made at the same moment on two
 * threads: each round, at least one sees the other, both futures end
 * WEFT_ECYCLE (none stays pending), and nothing leaks. */
enum { CYCLE_ROUNDS = 2000 };
static tu_rounds_t cyc_rounds;
static weft_promise_t *cyc_q[CYCLE_ROUNDS + 1];

static void *settle_q_rounds(void *arg) {
  (void)arg;
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    tu_meet(&cyc_rounds, r, 1);
    weft_promise_fulfil_int(cyc_q[r], 1);
    atomic_store_explicit(&cyc_rounds.done, r, memory_order_release);
  }
  return NULL;
}

static void test_follow_mutual_race(void) {
  tu_alloc_install(0);
  atomic_store(&cyc_rounds.arrived, 0);
  atomic_store(&cyc_rounds.done, 0);
  static weft_promise_t *ps[CYCLE_ROUNDS + 1];
  static weft_future_t *fs[CYCLE_ROUNDS + 1], *gs[CYCLE_ROUNDS + 1],
      *as[CYCLE_ROUNDS + 1], *bs[CYCLE_ROUNDS + 1];
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    REQUIRE_EQ(weft_promise_create(&ps[r], &fs[r]), 0);
    REQUIRE_EQ(weft_promise_create(&cyc_q[r], &gs[r]), 0);
    REQUIRE_EQ(weft_future_then(fs[r], weft_executor_inline(), follow_named,
                                &bs[r], NULL, &as[r]),
               0);
    REQUIRE_EQ(weft_future_then(gs[r], weft_executor_inline(), follow_named,
                                &as[r], NULL, &bs[r]),
               0);
  }
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, settle_q_rounds, NULL), 0);
  long pending = 0, wrong = 0;
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    tu_meet(&cyc_rounds, r, 0);
    weft_promise_fulfil_int(ps[r], 1);
    tu_spin_until(&cyc_rounds.done, r);
    weft_future_t *both[2] = {as[r], bs[r]};
    for (int i = 0; i < 2; i++) {
      if (weft_future_state(both[i]) == WEFT_PENDING)
        pending++;
      else if (weft_future_error(both[i]) != WEFT_ECYCLE)
        wrong++;
    }
  }
  pthread_join(t, NULL);
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    /* a cycle left pending would hold itself: cancel it, so the count of
     * pending futures fails the test rather than a leak */
    weft_future_cancel(as[r]);
    weft_future_t *all[4] = {as[r], bs[r], fs[r], gs[r]};
    for (int i = 0; i < 4; i++)
      weft_future_release(all[i]);
    weft_promise_release(ps[r]);
    weft_promise_release(cyc_q[r]);
  }
  EXPECT_EQ(pending, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

/* A self-follow racing a cancel of the derived future: it ends rejected
 * (WEFT_ECYCLE) or cancelled, once, and nothing leaks. */
static tu_rounds_t cc_rounds;
static weft_future_t *cc_d[CYCLE_ROUNDS + 1];

static void *cancel_rounds(void *arg) {
  (void)arg;
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    tu_meet(&cc_rounds, r, 1);
    weft_future_cancel(cc_d[r]);
    atomic_store_explicit(&cc_rounds.done, r, memory_order_release);
  }
  return NULL;
}

static void test_follow_self_cancel_race(void) {
  tu_alloc_install(0);
  atomic_store(&cc_rounds.arrived, 0);
  atomic_store(&cc_rounds.done, 0);
  static weft_promise_t *ps[CYCLE_ROUNDS + 1];
  static weft_future_t *fs[CYCLE_ROUNDS + 1];
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    REQUIRE_EQ(weft_promise_create(&ps[r], &fs[r]), 0);
    REQUIRE_EQ(weft_future_then(fs[r], weft_executor_inline(), follow_named,
                                &cc_d[r], NULL, &cc_d[r]),
               0);
  }
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, cancel_rounds, NULL), 0);
  long bad = 0;
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    tu_meet(&cc_rounds, r, 0);
    weft_promise_fulfil_int(ps[r], 1);
    tu_spin_until(&cc_rounds.done, r);
    int err = weft_future_error(cc_d[r]);
    if (err != WEFT_ECYCLE && err != WEFT_ECANCELED)
      bad++;
  }
  pthread_join(t, NULL);
  for (long r = 1; r <= CYCLE_ROUNDS; r++) {
    weft_future_release(cc_d[r]);
    weft_future_release(fs[r]);
    weft_promise_release(ps[r]);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

/* A longer cycle (a -> b -> c -> a) is not detected: its futures stay
 * pending, and a cancel of one of them settles all three, leak-free. */
static void test_follow_long_cycle_cancel(void) {
  tu_alloc_install(0);
  weft_promise_t *p[3];
  weft_future_t *f[3], *d[3];
  for (int i = 0; i < 3; i++) {
    REQUIRE_EQ(weft_promise_create(&p[i], &f[i]), 0);
    REQUIRE_EQ(weft_future_then(f[i], weft_executor_inline(), follow_named,
                                &d[(i + 1) % 3], NULL, &d[i]),
               0);
  }
  for (int i = 0; i < 3; i++)
    weft_promise_fulfil_int(p[i], 1);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(weft_future_state(d[i]), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(d[0]), 0);
  for (int i = 0; i < 3; i++)
    EXPECT_ERR(weft_future_error(d[i]), WEFT_ECANCELED);
  for (int i = 0; i < 3; i++) {
    weft_future_release(d[i]);
    weft_future_release(f[i]);
    weft_promise_release(p[i]);
  }
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

static void test_bad_args(void) {
  weft_promise_t *p;
  weft_future_t *f, *a = NULL;
  weft_promise_create(&p, &f);
  EXPECT_ERR(weft_future_then(NULL, weft_executor_inline(), add_one, NULL, NULL,
                              &a),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_then(f, NULL, add_one, NULL, NULL, &a), WEFT_EINVAL);
  EXPECT_ERR(weft_future_then(f, weft_executor_inline(), NULL, NULL, NULL, &a),
             WEFT_EINVAL);
  EXPECT_ERR(weft_future_then(f, weft_executor_inline(), add_one, NULL, NULL,
                              NULL),
             WEFT_EINVAL);
  EXPECT_TRUE(a == NULL);
  weft_future_release(f);
  weft_promise_release(p);
}

static const test_case_t cases[] = {
    {"on settled and pending", test_on_settled_and_pending},
    {"sees error and cancel", test_sees_error_and_cancel},
    {"ok, err, follow results", test_results},
    {"flatten a pending future", test_flatten_pending},
    {"flatten a settled future", test_flatten_settled},
    {"inline runs on settling thread", test_inline_runs_on_settling_thread},
    {"thread executor runs on its thread", test_thread_executor_thread},
    {"arg destructor", test_arg_dtor},
    {"executor refuses", test_executor_refuses},
    {"attach order", test_attach_order},
    {"thread executor drains", test_thread_executor_drains},
    {"watch: once, after settling, on its executor", test_watch},
    {"watch: refused executor, arg ownership, errors",
     test_watch_refused_and_errors},
    {"watch_start: a chain through one node", test_watch_start_chain},
    {"watch_start: a chain across threads", test_watch_start_threads},
    {"watch_start: no allocation, refused executor",
     test_watch_start_no_memory},
    {"watch_start: errors and EBUSY", test_watch_start_errors},
    {"follow its own derived future: WEFT_ECYCLE, no leak", test_follow_self},
    {"follow a future following it: WEFT_ECYCLE", test_follow_mutual},
    {"mutual follows at once: both WEFT_ECYCLE", test_follow_mutual_race},
    {"self-follow racing a cancel", test_follow_self_cancel_race},
    {"longer follow cycle: pending until cancelled",
     test_follow_long_cycle_cancel},
    {"bad arguments", test_bad_args},
    {NULL, NULL}};
const test_suite_t suite_then = {"then", cases};
