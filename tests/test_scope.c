/* SPDX-License-Identifier: MIT */
/* tests/test_scope.c: scopes: fail fast, collect, deadline, limit, cancel
 * of waiting fibers, nested scopes, attached futures, close (from a fiber,
 * a plain thread, a loop thread) and concurrent spawn and cancel, with
 * fibers on a loop, a pool and a thread executor. */
#include "loop_util.h"

#include <stdlib.h>

/* A sleep no test waits out: only a cancel ends it. */
#define LONG_MS 600000

static weft_scope_t *new_scope(weft_scope_policy_t policy, int64_t deadline,
                               size_t limit) {
  weft_scope_options_t o = {sizeof o, policy, deadline, limit};
  weft_scope_t *s = NULL;
  REQUIRE_EQ(weft_scope_create(&o, &s), 0);
  return s;
}

static weft_pool_t *new_pool(unsigned threads) {
  weft_pool_options_t o = {sizeof o, threads, 0, 0, {0}};
  weft_pool_t *p = NULL;
  REQUIRE_EQ(weft_pool_create(&o, &p), 0);
  return p;
}

/* A future nobody settles, with two handles: with more than one handle
 * need it, a cancelled fiber's await does not cancel it (its other
 * awaiters see their own cancel, not it settling). never_end drops both. */
static weft_future_t *never_new(weft_promise_t **p) {
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_promise_create(p, &f), 0);
  weft_future_retain(f);
  return f;
}

static void never_end(weft_promise_t *p, weft_future_t *f) {
  weft_promise_release(p);
  weft_future_release(f);
  weft_future_release(f);
}

static int64_t ms_from_now(int64_t ms) {
  return weft_clock_now_ns() + ms * 1000000;
}

/* ---- children ---- */

/* What a child saw: the code its await returned, and whether it ended. */
typedef struct seen {
  weft_loop_t *loop;      /* sleep on it (NULL: await `never`) */
  weft_future_t *never;   /* a future nobody settles (never_new) */
  int started;            /* on the loop: the sleep began */
  _Atomic long *begun;    /* if set, counts children that began */
  _Atomic int await_rc;   /* what the long await returned */
  _Atomic int ended;      /* the function returned */
  _Atomic int spin_after; /* CPU work after the await (close must wait) */
} seen_t;

/* Wait (long) for a sleep on the loop or for `never`, note what ended the
 * wait, optionally keep busy a while, return its code. */
static weft_result_t sleeper(void *arg) {
  seen_t *c = arg;
  int rc;
  if (c->begun != NULL)
    atomic_fetch_add(c->begun, 1);
  if (c->loop != NULL) {
    weft_future_t *sl = NULL;
    rc = weft_loop_sleep(c->loop, LONG_MS, &sl);
    c->started = 1;
    if (rc == 0) {
      rc = weft_future_await(sl, WEFT_FOREVER);
      weft_future_release(sl);
    }
  } else {
    rc = weft_future_await(c->never, WEFT_FOREVER);
  }
  atomic_store(&c->await_rc, rc);
  for (volatile long i = 0; i < atomic_load(&c->spin_after); i++)
    ;
  atomic_store(&c->ended, 1);
  return rc != 0 ? weft_err(rc) : weft_ok_int(0);
}

static weft_result_t fail_now(void *arg) {
  (void)arg;
  return weft_err(-1234);
}

static weft_result_t return_int(void *arg) {
  intptr_t i = (intptr_t)arg;
  return i % 2 == 0 ? weft_ok_int(i) : weft_err((int)(-100 - i));
}

/* ---- fail fast ---- */

static void test_fail_fast_loop(void) {
  weft_loop_t *loop = new_loop();
  weft_executor_t *ex = weft_loop_executor(loop);
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, 0);
  seen_t c[4];
  memset(c, 0, sizeof c);
  for (int i = 0; i < 4; i++) {
    c[i].loop = loop;
    REQUIRE_EQ(weft_scope_spawn(s, ex, NULL, sleeper, &c[i], NULL, NULL), 0);
  }
  weft_future_t *bad = NULL, *join = NULL;
  REQUIRE_EQ(weft_scope_spawn(s, ex, NULL, fail_now, NULL, NULL, &bad), 0);
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_loop_run_until(loop, join, BOUND_MS), 0);
  EXPECT_ERR(weft_future_error(join), -1234);
  EXPECT_ERR(weft_future_error(bad), -1234);
  for (int i = 0; i < 4; i++) {
    EXPECT_ERR(atomic_load(&c[i].await_rc), WEFT_ECANCELED);
    EXPECT_EQ(atomic_load(&c[i].ended), 1);
    EXPECT_ERR(weft_future_error(weft_scope_child(s, (size_t)i)),
               WEFT_ECANCELED);
  }
  EXPECT_EQ(weft_scope_child_count(s), 5);
  /* cancelled by the failure: no more children */
  EXPECT_ERR(weft_scope_spawn(s, ex, NULL, fail_now, NULL, NULL, NULL),
             WEFT_ECANCELED);
  EXPECT_ERR(weft_scope_cancel(s), WEFT_EALREADY);
  weft_future_release(bad);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- collect ---- */

static void test_collect_pool(void) {
  weft_pool_t *pool = new_pool(2);
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 0);
  enum { N = 16 };
  for (intptr_t i = 0; i < N; i++)
    REQUIRE_EQ(weft_scope_spawn(s, weft_pool_executor(pool), NULL, return_int,
                                (void *)i, NULL, NULL),
               0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  REQUIRE_EQ(weft_scope_child_count(s), N);
  for (intptr_t i = 0; i < N; i++) {
    weft_future_t *f = weft_scope_child(s, (size_t)i);
    if (i % 2 == 0)
      EXPECT_EQ(weft_future_int(f), i);
    else
      EXPECT_ERR(weft_future_error(f), (int)(-100 - i));
  }
  EXPECT_TRUE(weft_scope_child(s, N) == NULL);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

/* ---- deadline ---- */

/* Deadlines in the tests: long enough for the children to start first
 * (a child the deadline finds not yet started never runs: checked too). */
#define DEADLINE_MS 100

/* A child that a deadline (or cancel) ended: it saw `want` in its await,
 * or it never ran at all. Returns 1 if it ran. */
static int ended_with(const seen_t *c, int want) {
  if (!atomic_load(&c->ended)) {
    EXPECT_EQ(atomic_load(&c->await_rc), 0);
    return 0;
  }
  EXPECT_ERR(atomic_load(&c->await_rc), want);
  return 1;
}

static void test_deadline_thread_executor(void) {
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_promise_t *p;
  seen_t c[4];
  memset(c, 0, sizeof c);
  c[0].never = never_new(&p);
  int64_t t0 = weft_clock_now_ns();
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, t0 + DEADLINE_MS * 1000000,
                              0);
  for (int i = 0; i < 4; i++) {
    c[i].never = c[0].never;
    REQUIRE_EQ(weft_scope_spawn(s, weft_thread_executor_get(te), NULL, sleeper,
                                &c[i], NULL, NULL),
               0);
  }
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  int64_t took_ms = (weft_clock_now_ns() - t0) / 1000000;
  EXPECT_ERR(weft_future_error(join), WEFT_ETIMEDOUT);
  int ran = 0;
  for (int i = 0; i < 4; i++)
    ran += ended_with(&c[i], WEFT_ETIMEDOUT);
  if (ran < 4)
    printf("\n    %d of 4 started before the deadline ", ran);
  /* never before the deadline; the bound is only against a hang */
  EXPECT_TRUE(took_ms >= DEADLINE_MS);
  EXPECT_TRUE(took_ms < BOUND_MS);
  EXPECT_ERR(weft_scope_spawn(s, weft_thread_executor_get(te), NULL, fail_now,
                              NULL, NULL, NULL),
             WEFT_ECANCELED);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  never_end(p, c[0].never);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

static void test_deadline_past(void) {
  weft_scope_options_t o = {sizeof o, WEFT_SCOPE_FAIL_FAST, 1, 0};
  weft_scope_t *s = NULL;
  REQUIRE_EQ(weft_scope_create(&o, &s), 0);
  EXPECT_ERR(weft_scope_spawn(s, weft_executor_inline(), NULL, fail_now, NULL,
                              NULL, NULL),
             WEFT_ECANCELED);
  EXPECT_ERR(weft_scope_cancel(s), WEFT_EALREADY);
  EXPECT_EQ(weft_scope_close(s), 0);
}

/* ---- limit ---- */

typedef struct lim {
  size_t limit, total;
  _Atomic long inside, max, begun;
  _Atomic int *runs; /* per child */
  _Atomic long dtors;
} lim_t;

typedef struct lim_arg {
  lim_t *l;
  size_t i;
} lim_arg_t;

static void lim_dtor(void *arg) {
  lim_arg_t *a = arg;
  atomic_fetch_add(&a->l->dtors, 1);
  free(a);
}

/* Stay inside until `limit` children are inside at once (or no more will
 * come), yielding meanwhile: the maximum reaches the limit whatever the
 * schedule, and any excess would show. */
static weft_result_t lim_child(void *arg) {
  lim_arg_t *a = arg;
  lim_t *l = a->l;
  atomic_fetch_add(&l->runs[a->i], 1);
  long in = atomic_fetch_add(&l->inside, 1) + 1;
  atomic_fetch_add(&l->begun, 1);
  long m = atomic_load(&l->max);
  while (in > m && !atomic_compare_exchange_weak(&l->max, &m, in))
    ;
  while (atomic_load(&l->max) < (long)l->limit &&
         atomic_load(&l->begun) < (long)l->total)
    if (weft_fiber_yield() != 0)
      break;
  weft_fiber_yield();
  atomic_fetch_sub(&l->inside, 1);
  free(a);
  return weft_ok_int(0);
}

static void run_limit(weft_executor_t *ex, size_t limit, size_t total) {
  lim_t l = {limit, total, 0, 0, 0, NULL, 0};
  l.runs = calloc(total, sizeof *l.runs);
  REQUIRE_EQ(l.runs != NULL, 1);
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, limit);
  for (size_t i = 0; i < total; i++) {
    lim_arg_t *a = malloc(sizeof *a);
    a->l = &l;
    a->i = i;
    REQUIRE_EQ(weft_scope_spawn(s, ex, NULL, lim_child, a, lim_dtor, NULL), 0);
  }
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  EXPECT_EQ(atomic_load(&l.max), (long)limit);
  EXPECT_EQ(atomic_load(&l.dtors), 0);
  long once = 0;
  for (size_t i = 0; i < total; i++)
    once += atomic_load(&l.runs[i]) == 1;
  EXPECT_EQ(once, (long)total);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  free(l.runs);
}

static void test_limit_pool(void) {
  weft_pool_t *pool = new_pool(4);
  for (int r = 0; r < 20; r++)
    run_limit(weft_pool_executor(pool), 3, 200);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

static void test_limit_thread_executor(void) {
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  run_limit(weft_thread_executor_get(te), 1, 50);
  run_limit(weft_thread_executor_get(te), 4, 500);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* ---- cancel with waiting children ---- */

typedef struct counted {
  _Atomic int fn_runs, dtor_runs;
} counted_t;

static void counted_dtor(void *arg) {
  atomic_fetch_add(&((counted_t *)arg)->dtor_runs, 1);
}

static weft_result_t counted_fn(void *arg) {
  atomic_fetch_add(&((counted_t *)arg)->fn_runs, 1);
  return weft_ok_int(0);
}

static void test_cancel_waiting(void) {
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t *p;
  seen_t c;
  memset(&c, 0, sizeof c);
  c.never = never_new(&p);
  _Atomic long begun = 0;
  c.begun = &begun;
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 1);
  REQUIRE_EQ(weft_scope_spawn(s, ex, NULL, sleeper, &c, NULL, NULL), 0);
  tu_spin_until(&begun, 1); /* it runs (and awaits) */
  counted_t k[10];
  memset(k, 0, sizeof k);
  weft_future_t *fs[10];
  for (int i = 0; i < 10; i++)
    REQUIRE_EQ(weft_scope_spawn(s, ex, NULL, counted_fn, &k[i], counted_dtor,
                                &fs[i]),
               0);
  for (int i = 0; i < 10; i++)
    EXPECT_EQ(weft_future_state(fs[i]), WEFT_PENDING);
  EXPECT_EQ(weft_scope_cancel(s), 0);
  /* dropped at once, on the cancelling thread */
  for (int i = 0; i < 10; i++) {
    EXPECT_EQ(atomic_load(&k[i].dtor_runs), 1);
    EXPECT_EQ(weft_future_state(fs[i]), WEFT_CANCELLED);
  }
  EXPECT_EQ(weft_scope_close(s), 0);
  EXPECT_ERR(atomic_load(&c.await_rc), WEFT_ECANCELED);
  for (int i = 0; i < 10; i++) {
    EXPECT_EQ(atomic_load(&k[i].fn_runs), 0);
    EXPECT_EQ(atomic_load(&k[i].dtor_runs), 1);
    weft_future_release(fs[i]);
  }
  never_end(p, c.never);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* An executor that runs tasks inline until told to refuse them. */
typedef struct gate {
  weft_executor_t ex;
  _Atomic int refuse;
} gate_t;

static int gate_submit(weft_executor_t *ex, weft_task_t *task) {
  if (atomic_load(&((gate_t *)ex)->refuse))
    return WEFT_ESHUTDOWN;
  return weft_executor_submit(weft_executor_inline(), task);
}

static const weft_executor_ops_t gate_ops = {sizeof gate_ops, "gate",
                                             gate_submit, NULL, NULL};

/* A spawn the executor refuses returns its error and leaves nothing (no
 * child, no failure, arg untouched); fibers waiting their turn end with
 * that error when their turn comes, arg_dtor run, fn not. */
static void test_executor_refuses(void) {
  gate_t g = {{&gate_ops}, 1};
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 1);
  counted_t k = {0, 0};
  EXPECT_ERR(weft_scope_spawn(s, &g.ex, NULL, counted_fn, &k, counted_dtor,
                              NULL),
             WEFT_ESHUTDOWN);
  EXPECT_EQ(atomic_load(&k.fn_runs) + atomic_load(&k.dtor_runs), 0);
  EXPECT_EQ(weft_scope_child_count(s), 0);
  /* one running on the pool, three waiting on the gate */
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_promise_t *p;
  seen_t c;
  memset(&c, 0, sizeof c);
  c.never = never_new(&p);
  _Atomic long begun = 0;
  c.begun = &begun;
  REQUIRE_EQ(weft_scope_spawn(s, weft_thread_executor_get(te), NULL, sleeper,
                              &c, NULL, NULL),
             0);
  tu_spin_until(&begun, 1);
  counted_t w[3];
  memset(w, 0, sizeof w);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_scope_spawn(s, &g.ex, NULL, counted_fn, &w[i], counted_dtor,
                                NULL),
               0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  weft_promise_fulfil_int(p, 0); /* the sleeper ends: the queue's turn */
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  REQUIRE_EQ(weft_scope_child_count(s), 4);
  EXPECT_EQ(weft_future_error(weft_scope_child(s, 0)), 0);
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(atomic_load(&w[i].fn_runs), 0);
    EXPECT_EQ(atomic_load(&w[i].dtor_runs), 1);
    EXPECT_ERR(weft_future_error(weft_scope_child(s, (size_t)i + 1)),
               WEFT_ESHUTDOWN);
  }
  /* the gate opens: spawns run again (inline, at once) */
  atomic_store(&g.refuse, 0);
  EXPECT_EQ(
      weft_scope_spawn(s, &g.ex, NULL, counted_fn, &k, counted_dtor, NULL), 0);
  EXPECT_EQ(atomic_load(&k.fn_runs), 1);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  never_end(p, c.never);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* ---- nested scopes ---- */

typedef struct nest {
  weft_loop_t *loop;
  int64_t inner_deadline;
  seen_t kids[3];
  int ready; /* the inner scope's children are spawned */
  int join_rc, join_err, close_rc;
  _Atomic int done;
} nest_t;

/* A fiber of the outer scope: an inner scope with three sleepers, joined,
 * then closed. */
static weft_result_t nest_body(void *arg) {
  nest_t *n = arg;
  weft_scope_options_t o = {sizeof o, WEFT_SCOPE_FAIL_FAST, n->inner_deadline,
                            0};
  weft_scope_t *in = NULL;
  if (weft_scope_create(&o, &in) != 0)
    return weft_err(WEFT_ENOMEM);
  for (int i = 0; i < 3; i++) {
    n->kids[i].loop = n->loop;
    weft_scope_spawn(in, weft_loop_executor(n->loop), NULL, sleeper,
                     &n->kids[i], NULL, NULL);
  }
  n->ready = 1;
  weft_future_t *j = NULL;
  weft_scope_join(in, &j);
  n->join_rc = weft_future_await(j, WEFT_FOREVER);
  n->join_err = weft_future_error(j);
  weft_future_release(j);
  n->close_rc = weft_scope_close(in);
  atomic_store(&n->done, 1);
  return weft_ok_int(0);
}

static void run_nest(nest_t *n, int64_t outer_deadline, bool cancel_outer) {
  weft_loop_t *loop = new_loop();
  n->loop = loop;
  weft_scope_t *out = new_scope(WEFT_SCOPE_FAIL_FAST, outer_deadline, 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_scope_spawn(out, weft_loop_executor(loop), NULL, nest_body, n,
                              NULL, &f),
             0);
  if (cancel_outer) {
    /* once the inner scope has its children, cancel the outer one */
    run_until_n(loop, &n->ready, 1);
    run_until_n(loop, &n->kids[2].started, 1); /* (they start in order) */
    EXPECT_EQ(weft_scope_cancel(out), 0);
  }
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(out, &join), 0);
  EXPECT_EQ(weft_loop_run_until(loop, join, BOUND_MS), 0);
  EXPECT_EQ(atomic_load(&n->done), 1);
  EXPECT_EQ(n->close_rc, 0);
  weft_future_release(join);
  weft_future_release(f);
  EXPECT_EQ(weft_scope_close(out), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_nested_outer_deadline(void) {
  nest_t n;
  memset(&n, 0, sizeof n);
  /* the inner scope's own deadline is later: the outer one rules */
  n.inner_deadline = ms_from_now(LONG_MS);
  run_nest(&n, ms_from_now(DEADLINE_MS), false);
  EXPECT_ERR(n.join_rc, WEFT_ETIMEDOUT); /* the outer fiber's own await */
  for (int i = 0; i < 3; i++)
    ended_with(&n.kids[i], WEFT_ETIMEDOUT);
}

static void test_nested_outer_cancel(void) {
  nest_t n;
  memset(&n, 0, sizeof n);
  run_nest(&n, 0, true);
  EXPECT_ERR(n.join_rc, WEFT_ECANCELED);
  for (int i = 0; i < 3; i++) { /* they had started */
    EXPECT_EQ(atomic_load(&n.kids[i].ended), 1);
    EXPECT_ERR(atomic_load(&n.kids[i].await_rc), WEFT_ECANCELED);
  }
}

static void test_nested_inner_deadline(void) {
  nest_t n;
  memset(&n, 0, sizeof n);
  n.inner_deadline = ms_from_now(DEADLINE_MS);
  run_nest(&n, ms_from_now(LONG_MS), false);
  /* only the inner scope timed out: the outer fiber's await went on */
  EXPECT_EQ(n.join_rc, 0);
  EXPECT_ERR(n.join_err, WEFT_ETIMEDOUT);
  for (int i = 0; i < 3; i++)
    ended_with(&n.kids[i], WEFT_ETIMEDOUT);
}

/* ---- attached futures ---- */

typedef struct settler {
  weft_promise_t *p[3];
  int how[3]; /* 0: fulfil with i, else reject with it */
} settler_t;

static void *settle_all(void *arg) {
  settler_t *t = arg;
  for (int i = 0; i < 3; i++)
    if (t->p[i] != NULL) {
      if (t->how[i] == 0)
        weft_promise_fulfil_int(t->p[i], i);
      else
        weft_promise_reject(t->p[i], t->how[i]);
    }
  return NULL;
}

static void test_attach_collect(void) {
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 0);
  settler_t t = {{NULL}, {0, -7, 0}};
  weft_future_t *f[3];
  for (int i = 0; i < 3; i++) {
    REQUIRE_EQ(weft_promise_create(&t.p[i], &f[i]), 0);
    REQUIRE_EQ(weft_scope_attach(s, f[i]), 0);
    weft_future_release(f[i]); /* the scope holds its own */
  }
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, settle_all, &t), 0);
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  pthread_join(th, NULL);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(weft_scope_child(s, 0)), 0);
  EXPECT_ERR(weft_future_error(weft_scope_child(s, 1)), -7);
  EXPECT_EQ(weft_future_int(weft_scope_child(s, 2)), 2);
  for (int i = 0; i < 3; i++)
    weft_promise_release(t.p[i]);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
}

static void test_attach_fail_fast(void) {
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, 0);
  settler_t t = {{NULL}, {-7, 0, 0}};
  weft_promise_t *p2;
  weft_future_t *f[2];
  REQUIRE_EQ(weft_promise_create(&t.p[0], &f[0]), 0);
  REQUIRE_EQ(weft_promise_create(&p2, &f[1]), 0);
  for (int i = 0; i < 2; i++)
    REQUIRE_EQ(weft_scope_attach(s, f[i]), 0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, settle_all, &t), 0);
  EXPECT_EQ(weft_future_await(join, BOUND_MS), 0);
  pthread_join(th, NULL);
  EXPECT_ERR(weft_future_error(join), -7);
  EXPECT_TRUE(weft_promise_is_cancelled(p2)); /* the sibling */
  /* cancelled now: an attach cancels the future and fails */
  weft_promise_t *p3;
  weft_future_t *f3;
  REQUIRE_EQ(weft_promise_create(&p3, &f3), 0);
  EXPECT_ERR(weft_scope_attach(s, f3), WEFT_ECANCELED);
  EXPECT_EQ(weft_future_state(f3), WEFT_CANCELLED);
  EXPECT_EQ(weft_scope_child_count(s), 2);
  weft_promise_release(t.p[0]);
  weft_promise_release(p2);
  weft_promise_release(p3);
  for (int i = 0; i < 2; i++)
    weft_future_release(f[i]);
  weft_future_release(f3);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
}

/* ---- close ---- */

typedef struct closer {
  weft_pool_t *pool;
  weft_promise_t *never_p;
  seen_t kids[4];
  _Atomic long begun; /* children that began */
  bool await_first;   /* await `never` (until cancelled) before closing */
  int await_rc;
  int close_rc;
  int ended_at_close; /* children ended when close returned */
  _Atomic int done;
} closer_t;

/* On the loop: a scope of four sleepers on the pool, each busy for a while
 * after its cancel; close must wait for all of them. */
static weft_result_t close_body(void *arg) {
  closer_t *c = arg;
  weft_scope_t *s = NULL;
  if (weft_scope_create(NULL, &s) != 0)
    return weft_err(WEFT_ENOMEM);
  for (int i = 0; i < 4; i++) {
    c->kids[i].never = c->kids[0].never;
    c->kids[i].begun = &c->begun;
    atomic_store(&c->kids[i].spin_after, 20000000);
    weft_scope_spawn(s, weft_pool_executor(c->pool), NULL, sleeper, &c->kids[i],
                     NULL, NULL);
  }
  while (atomic_load(&c->begun) < 4) /* all four run */
    if (weft_fiber_yield() != 0)
      break;
  if (c->await_first)
    c->await_rc = weft_future_await(c->kids[0].never, WEFT_FOREVER);
  c->close_rc = weft_scope_close(s);
  for (int i = 0; i < 4; i++)
    c->ended_at_close += atomic_load(&c->kids[i].ended);
  atomic_store(&c->done, 1);
  return weft_ok_int(0);
}

static void test_close_from_fiber(void) {
  weft_loop_t *loop = new_loop();
  closer_t c;
  memset(&c, 0, sizeof c);
  c.pool = new_pool(2);
  c.kids[0].never = never_new(&c.never_p);
  weft_future_t *f = NULL;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), close_body, &c, NULL, &f), 0);
  EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(c.close_rc, 0);
  EXPECT_EQ(c.ended_at_close, 4);
  weft_future_release(f);
  never_end(c.never_p, c.kids[0].never);
  EXPECT_EQ(weft_pool_shutdown(c.pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The same close, in a fiber cancelled first (its scope cancelled, and
 * with it the inner scope): the close is its cleanup and still waits for
 * the children. */
static void test_close_from_cancelled_fiber(void) {
  weft_loop_t *loop = new_loop();
  closer_t c;
  memset(&c, 0, sizeof c);
  c.pool = new_pool(2);
  c.await_first = true;
  c.kids[0].never = never_new(&c.never_p);
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, 0);
  REQUIRE_EQ(weft_scope_spawn(s, weft_loop_executor(loop), NULL, close_body, &c,
                              NULL, NULL),
             0);
  /* (the body yields until its four children run, then awaits) */
  int64_t end = ms_from_now(BOUND_MS);
  while (atomic_load(&c.begun) < 4 && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  REQUIRE_EQ(atomic_load(&c.begun), 4);
  EXPECT_EQ(weft_scope_cancel(s), 0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_loop_run_until(loop, join, BOUND_MS), 0);
  EXPECT_EQ(atomic_load(&c.done), 1);
  EXPECT_ERR(c.await_rc, WEFT_ECANCELED);
  EXPECT_EQ(c.close_rc, 0);
  EXPECT_EQ(c.ended_at_close, 4);
  for (int i = 0; i < 4; i++) /* its inner scope: cancelled with it */
    EXPECT_ERR(atomic_load(&c.kids[i].await_rc), WEFT_ECANCELED);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
  never_end(c.never_p, c.kids[0].never);
  EXPECT_EQ(weft_pool_shutdown(c.pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_close_from_thread(void) {
  weft_pool_t *pool = new_pool(2);
  weft_promise_t *p;
  seen_t c[4];
  memset(c, 0, sizeof c);
  c[0].never = never_new(&p);
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 2);
  for (int i = 0; i < 4; i++) {
    c[i].never = c[0].never;
    atomic_store(&c[i].spin_after, 1000000);
    REQUIRE_EQ(weft_scope_spawn(s, weft_pool_executor(pool), NULL, sleeper,
                                &c[i], NULL, NULL),
               0);
  }
  EXPECT_EQ(weft_scope_close(s), 0);
  /* the two that ran ended; the two waiting never ran */
  int ended = 0;
  for (int i = 0; i < 4; i++)
    ended += atomic_load(&c[i].ended);
  EXPECT_TRUE(ended <= 2);
  for (int i = 0; i < 4; i++)
    if (atomic_load(&c[i].ended))
      EXPECT_ERR(atomic_load(&c[i].await_rc), WEFT_ECANCELED);
  never_end(p, c[0].never);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

static void test_close_edeadlk_on_loop(void) {
  tu_alloc_install(0);
  weft_loop_t *loop = new_loop();
  seen_t c;
  memset(&c, 0, sizeof c);
  c.loop = loop;
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_scope_spawn(s, weft_loop_executor(loop), NULL, sleeper, &c,
                              NULL, &f),
             0);
  run_until_n(loop, &c.started, 1); /* the child sleeps now */
  EXPECT_TRUE(weft_loop_current() == loop && !weft_fiber_is_running());
  /* it would wait for the loop it blocks: refused, the scope cancelled */
  EXPECT_ERR(weft_scope_close(s), WEFT_EDEADLK);
  EXPECT_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  int64_t end = ms_from_now(BOUND_MS);
  while (!atomic_load(&c.ended) && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  EXPECT_EQ(atomic_load(&c.ended), 1);
  EXPECT_ERR(atomic_load(&c.await_rc), WEFT_ECANCELED);
  weft_future_release(f);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(tu_alloc_live(), 0); /* the scope freed itself */
  tu_alloc_restore();
}

/* Closing its own scope from a fiber: refused, the scope cancelled (the
 * fiber with it), freed once the fiber returns. */
static weft_result_t close_own(void *arg) {
  weft_scope_t *s = arg;
  int rc = weft_scope_close(s);
  EXPECT_TRUE(weft_fiber_is_cancelled());
  return rc == WEFT_EDEADLK ? weft_ok_int(1) : weft_err(rc);
}

static void test_close_own_fiber(void) {
  tu_alloc_install(0);
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_scope_t *s = new_scope(WEFT_SCOPE_COLLECT, 0, 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_scope_spawn(s, weft_thread_executor_get(te), NULL, close_own,
                              s, NULL, &f),
             0);
  EXPECT_EQ(weft_future_await(f, BOUND_MS), 0);
  /* cancelled by its own close: the outcome it returned is discarded */
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
}

/* ---- concurrent spawn and cancel ---- */

typedef struct race {
  long iters;
  weft_pool_t *pool;
  weft_scope_t *_Atomic s;
  _Atomic long go, done; /* the round the other side may start, has ended */
  counted_t k;
  _Atomic int ok_spawns, refused;
} race_t;

static void spawn_some(race_t *r, weft_scope_t *s, int n) {
  for (int i = 0; i < n; i++) {
    int rc = weft_scope_spawn(s, weft_pool_executor(r->pool), NULL, counted_fn,
                              &r->k, counted_dtor, NULL);
    if (rc == 0)
      atomic_fetch_add(&r->ok_spawns, 1);
    else if (rc == WEFT_ECANCELED)
      atomic_fetch_add(&r->refused, 1);
    else
      EXPECT_ERR(rc, 0);
  }
}

/* The other thread: spawns three, then cancels, at a point that moves
 * across rounds against the main thread's five spawns. */
static void *race_side(void *arg) {
  race_t *r = arg;
  for (long it = 1; it <= r->iters; it++) {
    tu_spin_until(&r->go, it);
    weft_scope_t *s = atomic_load(&r->s);
    unsigned x = (unsigned)(it * 2654435761u) >> 22;
    for (volatile unsigned i = 0; i < (x & 255); i++)
      ;
    spawn_some(r, s, 3);
    weft_scope_cancel(s);
    atomic_store(&r->done, it);
  }
  return NULL;
}

static void test_concurrent_spawn_cancel(void) {
  race_t r;
  memset(&r, 0, sizeof r);
  r.iters = 2000;
  r.pool = new_pool(2);
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, race_side, &r), 0);
  long it;
  for (it = 1; it <= r.iters; it++) {
    atomic_store(&r.s, new_scope(WEFT_SCOPE_COLLECT, 0, (size_t)(it % 3)));
    atomic_store(&r.go, it);
    /* sometimes before the other side's cancel, sometimes after */
    unsigned x = (unsigned)(it * 40503u) >> 3;
    for (volatile unsigned i = 0; i < (x & 2047); i++)
      ;
    spawn_some(&r, atomic_load(&r.s), 5);
    tu_spin_until(&r.done, it);
    EXPECT_EQ(weft_scope_close(atomic_load(&r.s)), 0);
    /* every child accepted ran or was dropped, once; none refused did */
    int ran = atomic_load(&r.k.fn_runs), dropped = atomic_load(&r.k.dtor_runs);
    if (ran + dropped != atomic_load(&r.ok_spawns)) {
      EXPECT_EQ(ran + dropped, atomic_load(&r.ok_spawns));
      break;
    }
  }
  if (it <= r.iters) { /* let the other side finish */
    for (it++; it <= r.iters; it++) {
      atomic_store(&r.s, new_scope(WEFT_SCOPE_COLLECT, 0, 0));
      atomic_store(&r.go, it);
      tu_spin_until(&r.done, it);
      weft_scope_close(atomic_load(&r.s));
    }
  }
  pthread_join(th, NULL);
  long all = atomic_load(&r.k.fn_runs) + atomic_load(&r.k.dtor_runs) +
             atomic_load(&r.refused);
  EXPECT_EQ(all, 8 * r.iters);
  printf("\n    ran %d, dropped %d, refused %d ", atomic_load(&r.k.fn_runs),
         atomic_load(&r.k.dtor_runs), atomic_load(&r.refused));
  EXPECT_EQ(weft_pool_shutdown(r.pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

/* ---- arguments, options, empty scopes, memory ---- */

static void test_args_and_options(void) {
  weft_scope_t *s = NULL;
  EXPECT_ERR(weft_scope_create(NULL, NULL), WEFT_EINVAL);
  weft_scope_options_t o = {sizeof o, (weft_scope_policy_t)7, 0, 0};
  EXPECT_ERR(weft_scope_create(&o, &s), WEFT_EINVAL);
  o.policy = WEFT_SCOPE_COLLECT;
  o.deadline_ns = -1;
  EXPECT_ERR(weft_scope_create(&o, &s), WEFT_EINVAL);
  o.deadline_ns = 0;
  o.size = 4;
  EXPECT_ERR(weft_scope_create(&o, &s), WEFT_EINVAL);
  struct {
    weft_scope_options_t o;
    long later;
  } big = {{sizeof big, WEFT_SCOPE_COLLECT, 0, 0}, 1};
  EXPECT_ERR(weft_scope_create(&big.o, &s), WEFT_ENOTSUP);
  EXPECT_TRUE(s == NULL);
  EXPECT_ERR(weft_scope_spawn(NULL, weft_executor_inline(), NULL, fail_now,
                              NULL, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_scope_attach(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_scope_cancel(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_scope_join(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_scope_close(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_scope_child_count(NULL), 0);
  EXPECT_TRUE(weft_scope_child(NULL, 0) == NULL);

  REQUIRE_EQ(weft_scope_create(NULL, &s), 0);
  EXPECT_ERR(weft_scope_spawn(s, NULL, NULL, fail_now, NULL, NULL, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_scope_spawn(s, weft_executor_inline(), NULL, NULL, NULL, NULL,
                              NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_scope_attach(s, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_scope_child_count(s), 0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED); /* no children */
  weft_future_release(join);
  EXPECT_EQ(weft_scope_cancel(s), 0);
  EXPECT_ERR(weft_scope_cancel(s), WEFT_EALREADY);
  counted_t k = {0, 0};
  EXPECT_ERR(weft_scope_spawn(s, weft_executor_inline(), NULL, counted_fn, &k,
                              counted_dtor, NULL),
             WEFT_ECANCELED);
  EXPECT_EQ(atomic_load(&k.fn_runs) + atomic_load(&k.dtor_runs), 0);
  REQUIRE_EQ(weft_scope_join(s, &join), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(s), 0);
}

/* Join counts the children added before it settles; a join after the
 * children ended settles at once with the scope's outcome. */
static void test_join_late_children(void) {
  weft_scope_t *s = new_scope(WEFT_SCOPE_FAIL_FAST, 0, 0);
  weft_promise_t *p1, *p2;
  weft_future_t *f1, *f2, *j1, *j2;
  REQUIRE_EQ(weft_promise_create(&p1, &f1), 0);
  REQUIRE_EQ(weft_promise_create(&p2, &f2), 0);
  REQUIRE_EQ(weft_scope_attach(s, f1), 0);
  REQUIRE_EQ(weft_scope_join(s, &j1), 0);
  REQUIRE_EQ(weft_scope_attach(s, f2), 0);
  weft_promise_fulfil_int(p1, 1);
  EXPECT_EQ(weft_future_state(j1), WEFT_PENDING);
  weft_promise_reject(p2, -9);
  EXPECT_ERR(weft_future_error(j1), -9);
  REQUIRE_EQ(weft_scope_join(s, &j2), 0);
  EXPECT_ERR(weft_future_error(j2), -9);
  weft_promise_release(p1);
  weft_promise_release(p2);
  weft_future_release(f1);
  weft_future_release(f2);
  weft_future_release(j1);
  weft_future_release(j2);
  EXPECT_EQ(weft_scope_close(s), 0);
}

/* Children spawning siblings: a join made before counts them all. */
typedef struct tree {
  weft_scope_t *s;
  weft_executor_t *ex;
  int ran;
} tree_t;

static weft_result_t tree_node(void *arg) {
  tree_t *t = arg;
  int me = ++t->ran; /* (one loop thread) */
  weft_fiber_yield();
  if (me <= 3) /* the first three add two each: 7 in all */
    for (int i = 0; i < 2; i++)
      if (weft_scope_spawn(t->s, t->ex, NULL, tree_node, t, NULL, NULL) != 0)
        return weft_err(WEFT_EINVAL);
  return weft_ok_int(me);
}

static void test_children_spawn_siblings(void) {
  weft_loop_t *loop = new_loop();
  tree_t t = {new_scope(WEFT_SCOPE_FAIL_FAST, 0, 2), weft_loop_executor(loop),
              0};
  REQUIRE_EQ(weft_scope_spawn(t.s, t.ex, NULL, tree_node, &t, NULL, NULL), 0);
  weft_future_t *join = NULL;
  REQUIRE_EQ(weft_scope_join(t.s, &join), 0);
  EXPECT_EQ(weft_loop_run_until(loop, join, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(join), WEFT_FULFILLED);
  EXPECT_EQ(t.ran, 7);
  EXPECT_EQ(weft_scope_child_count(t.s), 7);
  weft_future_release(join);
  EXPECT_EQ(weft_scope_close(t.s), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Spawn, attach and join with the N-th allocation failing, for every N:
 * each call returns 0 or WEFT_ENOMEM, and nothing is left. */
static int fault_round(long n) {
  tu_alloc_install(n);
  counted_t k = {0, 0};
  weft_scope_t *s = NULL;
  int rc = weft_scope_create(NULL, &s), oks = 0;
  if (rc != 0) {
    EXPECT_ERR(rc, WEFT_ENOMEM);
    goto out;
  }
  weft_promise_t *p = NULL;
  weft_future_t *f = NULL, *j = NULL;
  for (int i = 0; i < 3; i++) {
    rc = weft_scope_spawn(s, weft_executor_inline(), NULL, counted_fn, &k,
                          counted_dtor, NULL);
    oks += rc == 0;
    if (rc != 0)
      EXPECT_ERR(rc, WEFT_ENOMEM);
  }
  if (weft_promise_create(&p, &f) == 0) {
    rc = weft_scope_attach(s, f);
    if (rc != 0)
      EXPECT_ERR(rc, WEFT_ENOMEM);
  }
  rc = weft_scope_join(s, &j);
  if (rc != 0)
    EXPECT_ERR(rc, WEFT_ENOMEM);
  if (p != NULL) {
    weft_promise_fulfil_int(p, 0);
    weft_promise_release(p);
    weft_future_release(f);
  }
  if (j != NULL) {
    EXPECT_EQ(weft_future_state(j), WEFT_FULFILLED);
    weft_future_release(j);
  }
  EXPECT_EQ(weft_scope_close(s), 0);
  /* a child whose stack or start failed ended without running */
  EXPECT_EQ(atomic_load(&k.fn_runs) + atomic_load(&k.dtor_runs), oks);
out:;
  long tried = tu_alloc_count();
  EXPECT_EQ(tu_alloc_live(), 0);
  tu_alloc_restore();
  return tried >= n;
}

static void test_alloc_failures(void) {
  long n = 1;
  while (fault_round(n) && n < 200)
    n++;
  EXPECT_TRUE(n > 5 && n < 200);
}

const test_suite_t suite_scope = {
    "scope",
    (const test_case_t[]){
        {"fail_fast_loop", test_fail_fast_loop},
        {"collect_pool", test_collect_pool},
        {"deadline_thread_executor", test_deadline_thread_executor},
        {"deadline_past", test_deadline_past},
        {"limit_pool", test_limit_pool},
        {"limit_thread_executor", test_limit_thread_executor},
        {"cancel_waiting", test_cancel_waiting},
        {"executor_refuses", test_executor_refuses},
        {"nested_outer_deadline", test_nested_outer_deadline},
        {"nested_outer_cancel", test_nested_outer_cancel},
        {"nested_inner_deadline", test_nested_inner_deadline},
        {"attach_collect", test_attach_collect},
        {"attach_fail_fast", test_attach_fail_fast},
        {"close_from_fiber", test_close_from_fiber},
        {"close_from_cancelled_fiber", test_close_from_cancelled_fiber},
        {"close_from_thread", test_close_from_thread},
        {"close_edeadlk_on_loop", test_close_edeadlk_on_loop},
        {"close_own_fiber", test_close_own_fiber},
        {"concurrent_spawn_cancel", test_concurrent_spawn_cancel},
        {"args_and_options", test_args_and_options},
        {"join_late_children", test_join_late_children},
        {"children_spawn_siblings", test_children_spawn_siblings},
        {"alloc_failures", test_alloc_failures},
        {NULL, NULL}}};
