/* SPDX-License-Identifier: MIT */
/* tests/test_fiber_core.c: fibers (include/weft/fiber.h, all but scopes): in
 * and out of a fiber, what fn returns, and where a fiber runs after each
 * await (loop, thread executor, pool, inline). The other fiber suites:
 * test_fiber_await.c (await in a fiber, yield, await_first/all),
 * test_fiber_spawn.c (spawn's errors and options), test_fiber_cancel.c,
 * test_fiber_load.c (numbers, depth, overflow, allocation failure). */
#include "fiber_util.h"

#include <stdint.h>
#include <stdlib.h>

/* ================================================================ */
/* Inside and outside                                                */
/* ================================================================ */

typedef struct flags {
  int ran;
  bool running, cancelled;
  pthread_t thread;
} flags_t;

static weft_result_t fn_flags(void *arg) {
  flags_t *fl = arg;
  fl->ran++;
  fl->running = weft_fiber_is_running();
  fl->cancelled = weft_fiber_is_cancelled();
  fl->thread = ft_self();
  return weft_ok_int(41);
}

/* On the inline executor the fiber runs to its end inside spawn, on the
 * spawning thread. */
static void test_inline_runs_at_once(void) {
  flags_t fl = {0};
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_fiber_spawn(weft_executor_inline(), fn_flags, &fl, NULL, &f),
             0);
  EXPECT_EQ(fl.ran, 1);
  EXPECT_TRUE(fl.running);
  EXPECT_TRUE(!fl.cancelled);
  EXPECT_TRUE(pthread_equal(fl.thread, ft_self()));
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), 41);
  weft_future_release(f);
}

static void test_outside_a_fiber(void) {
  EXPECT_TRUE(!weft_fiber_is_running());
  EXPECT_TRUE(!weft_fiber_is_cancelled());
  EXPECT_ERR(weft_fiber_yield(), WEFT_EPERM);
}

static void posted_flags(weft_loop_t *loop, void *arg, int status) {
  (void)loop, (void)status;
  flags_t *fl = arg;
  fl->ran++;
  fl->running = weft_fiber_is_running();
  fl->cancelled = weft_fiber_is_cancelled();
}

static weft_result_t job_flags(weft_job_t *job, void *arg) {
  (void)job;
  flags_t *fl = arg;
  fl->ran++;
  fl->running = weft_fiber_is_running();
  return weft_ok_int(0);
}

static weft_result_t then_flags(void *arg, weft_future_t *src) {
  (void)src;
  flags_t *fl = arg;
  fl->ran++;
  fl->running = weft_fiber_is_running();
  return weft_ok_int(0);
}

/* A loop fiber sees itself in a fiber; a posted function, a continuation
 * and a pool job run on the same threads are not fibers. */
static void test_is_running_where(void) {
  weft_loop_t *loop = new_loop();
  flags_t in = {0}, post = {0}, job = {0}, cont = {0};
  weft_future_t *f, *j, *c;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_flags, &in, NULL, &f), 0);
  EXPECT_EQ(in.ran, 0); /* not before the loop runs it */
  REQUIRE_EQ(weft_loop_post(loop, posted_flags, &post), 0);
  REQUIRE_EQ(weft_future_then(f, weft_loop_executor(loop), then_flags, &cont,
                              NULL, &c),
             0);
  EXPECT_ERR(weft_loop_run_until(loop, c, BOUND_MS), 0);
  EXPECT_EQ(in.ran, 1);
  EXPECT_TRUE(in.running);
  EXPECT_TRUE(pthread_equal(in.thread, ft_self()));
  EXPECT_EQ(post.ran, 1);
  EXPECT_TRUE(!post.running);
  EXPECT_EQ(cont.ran, 1);
  EXPECT_TRUE(!cont.running);
  weft_future_release(c);
  weft_future_release(f);
  EXPECT_ERR(weft_loop_close(loop), 0);
  weft_pool_t *pool = ft_pool(1);
  REQUIRE_EQ(weft_pool_submit(pool, job_flags, &job, NULL, &j), 0);
  EXPECT_ERR(weft_future_await(j, BOUND_MS), 0);
  EXPECT_EQ(job.ran, 1);
  EXPECT_TRUE(!job.running);
  weft_future_release(j);
  ft_pool_end(pool);
}

/* ================================================================ */
/* What fn returns settles the future                                */
/* ================================================================ */

static _Atomic int box_frees;
static void box_free(void *p) {
  atomic_fetch_add(&box_frees, 1);
  free(p);
}

typedef struct ret {
  int kind;
  void *made;
  weft_future_t *follow; /* handed to the fiber (kind 3) */
  weft_future_t *self;   /* the fiber's own future (kinds 4, 5) */
  int rc;
} ret_t;

static weft_result_t fn_returns(void *arg) {
  ret_t *r = arg;
  switch (r->kind) {
  case 0:
    r->made = malloc(16);
    return weft_ok(r->made, box_free);
  case 1:
    return weft_ok_int(-7);
  case 2:
    return weft_err(WEFT_EPIPE);
  case 3:
    return weft_follow(r->follow);
  case 4: /* follow its own future: a cycle */
    weft_future_retain(r->self);
    return weft_follow(r->self);
  case 5: /* await its own future: it settles only when fn returns */
    r->rc = weft_future_await(r->self, BOUND_MS);
    return weft_ok_int(0);
  case 6:
    return weft_follow(NULL);
  default:
    return weft_err(5); /* not negative: WEFT_EINVAL */
  }
}

/* Spawn fn_returns(r) on the loop, with r->self set, and run the loop until
 * the fiber's future settles. */
static weft_future_t *run_returns(weft_loop_t *loop, ret_t *r) {
  weft_future_t *f = NULL;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_returns, r, NULL, &f), 0);
  r->self = f;
  EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
  return f;
}

static void test_returns_value_kinds(void) {
  weft_loop_t *loop = new_loop();
  atomic_store(&box_frees, 0);
  ret_t r = {.kind = 0};
  weft_future_t *f = run_returns(loop, &r);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_TRUE(weft_future_value(f) == r.made && r.made != NULL);
  EXPECT_EQ(atomic_load(&box_frees), 0); /* the future owns it */
  weft_future_release(f);
  EXPECT_EQ(atomic_load(&box_frees), 1);

  r = (ret_t){.kind = 1};
  f = run_returns(loop, &r);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_EQ(weft_future_int(f), -7);
  weft_future_release(f);

  r = (ret_t){.kind = 2};
  f = run_returns(loop, &r);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_ERR(weft_future_error(f), WEFT_EPIPE);
  weft_future_release(f);

  r = (ret_t){.kind = 7};
  f = run_returns(loop, &r);
  EXPECT_ERR(weft_future_error(f), WEFT_EINVAL);
  weft_future_release(f);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static void test_returns_self(void) {
  weft_loop_t *loop = new_loop();
  ret_t r = {.kind = 4};
  weft_future_t *f = run_returns(loop, &r);
  EXPECT_ERR(weft_future_error(f), WEFT_ECYCLE);
  weft_future_release(f);

  r = (ret_t){.kind = 5};
  f = run_returns(loop, &r);
  EXPECT_ERR(r.rc, WEFT_EDEADLK);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_future_release(f);

  r = (ret_t){.kind = 6};
  f = run_returns(loop, &r);
  EXPECT_ERR(weft_future_error(f), WEFT_EINVAL);
  weft_future_release(f);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* weft_follow of a pending future: the fiber's future stays pending until
 * that one settles, then settles as it did (value, dtor once; rejection). */
static void test_returns_follow_pending(void) {
  weft_loop_t *loop = new_loop();
  atomic_store(&box_frees, 0);
  weft_promise_t *p;
  ret_t r = {.kind = 3};
  REQUIRE_EQ(weft_promise_create(&p, &r.follow), 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_returns, &r, NULL, &f), 0);
  for (int i = 0; i < 5; i++)
    EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  void *v = malloc(8);
  REQUIRE_EQ(weft_promise_fulfil(p, v, box_free), 0);
  weft_promise_release(p);
  EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  EXPECT_TRUE(weft_future_value(f) == v);
  weft_future_release(f);
  EXPECT_EQ(atomic_load(&box_frees), 1);

  r = (ret_t){.kind = 3};
  REQUIRE_EQ(weft_promise_create(&p, &r.follow), 0);
  REQUIRE_EQ(
      weft_fiber_spawn(weft_loop_executor(loop), fn_returns, &r, NULL, &f), 0);
  EXPECT_ERR(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  REQUIRE_EQ(weft_promise_reject(p, -1234), 0);
  weft_promise_release(p);
  EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_EQ(weft_future_error(f), -1234);
  weft_future_release(f);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

/* ================================================================ */
/* Where a fiber runs after each await                               */
/* ================================================================ */

enum { HOPS = 6 };

typedef struct hop {
  weft_pool_t *aux;  /* settles from another thread */
  weft_loop_t *loop; /* set: also await a loop sleep (loop fibers) */
  pthread_t seen[HOPS + 1];
  int n, rc[HOPS], bad;
} hop_t;

static void hop_saw(hop_t *h, int rc) {
  h->rc[h->n] = rc;
  h->seen[++h->n] = ft_self();
}

/* Awaits in turn: a promise settled on another thread, a pool job, a
 * timeout, a yield, an already settled future, and a loop sleep (loop
 * fibers only), recording its thread after each. */
static weft_result_t fn_hop(void *arg) {
  hop_t *h = arg;
  h->seen[0] = ft_self();
  weft_promise_t *p;
  weft_future_t *f, *j;
  if (weft_promise_create(&p, &f) != 0)
    return weft_err(WEFT_ENOMEM);
  if (weft_pool_submit(h->aux, ft_job_fulfil, p, NULL, &j) != 0)
    return weft_err(WEFT_ENOMEM); /* (the test fails on the count) */
  hop_saw(h, weft_future_await(f, BOUND_MS));
  weft_future_release(j);
  weft_future_release(f);
  if (weft_pool_submit(h->aux, ft_job_five, NULL, NULL, &j) != 0)
    return weft_err(WEFT_ENOMEM);
  int rc = weft_future_await(j, BOUND_MS);
  hop_saw(h, rc == 0 ? weft_future_int(j) - 5 : rc);
  weft_future_release(j);
  weft_promise_create(&p, &f);
  hop_saw(h, weft_future_await(f, 5) == WEFT_ETIMEDOUT ? 0 : -1);
  weft_future_release(f);
  weft_promise_release(p);
  hop_saw(h, weft_fiber_yield());
  weft_promise_create(&p, &f);
  weft_promise_fulfil_int(p, 1);
  hop_saw(h, weft_future_await(f, BOUND_MS));
  weft_future_release(f);
  weft_promise_release(p);
  if (h->loop != NULL && weft_loop_sleep(h->loop, 1, &f) == 0) {
    hop_saw(h, weft_future_await(f, BOUND_MS));
    weft_future_release(f);
  } else {
    hop_saw(h, 0);
  }
  return weft_ok_int(h->n);
}

static void expect_hops(const hop_t *h, weft_future_t *f) {
  EXPECT_EQ(weft_future_int(f), HOPS);
  for (int i = 0; i < HOPS; i++)
    EXPECT_ERR(h->rc[i], 0);
}

/* On a loop: every resume is on the loop thread. */
static void test_resume_loop_thread(void) {
  weft_loop_t *loop = new_loop();
  weft_pool_t *aux = ft_pool(2);
  for (int round = 0; round < 20; round++) {
    hop_t h = {.aux = aux, .loop = loop};
    weft_future_t *f;
    REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fn_hop, &h, NULL, &f),
               0);
    EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
    expect_hops(&h, f);
    int same = 0;
    for (int i = 0; i <= HOPS; i++)
      same += pthread_equal(h.seen[i], ft_self()) != 0;
    EXPECT_EQ(same, HOPS + 1);
    weft_future_release(f);
  }
  ft_pool_end(aux);
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static weft_result_t then_thread(void *arg, weft_future_t *src) {
  (void)src;
  *(pthread_t *)arg = ft_self();
  return weft_ok_int(0);
}

/* The thread a task on ex runs on (ex runs all its tasks on one). */
static pthread_t thread_of(weft_executor_t *ex) {
  weft_promise_t *p;
  weft_future_t *s, *g;
  pthread_t t = ft_self();
  REQUIRE_EQ(weft_promise_create(&p, &s), 0);
  weft_promise_fulfil_int(p, 0);
  REQUIRE_EQ(weft_future_then(s, ex, then_thread, &t, NULL, &g), 0);
  EXPECT_ERR(weft_future_await(g, BOUND_MS), 0);
  weft_future_release(g);
  weft_future_release(s);
  weft_promise_release(p);
  return t;
}

/* On a dedicated thread: every resume is on that thread. Several fibers at
 * once, so that they interleave on it. */
static void test_resume_thread_executor(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_executor_t *ex = weft_thread_executor_get(te);
  pthread_t tt = thread_of(ex);
  EXPECT_TRUE(!pthread_equal(tt, ft_self()));
  weft_pool_t *aux = ft_pool(2);
  enum { N = 16 };
  static hop_t h[N];
  weft_future_t *f[N];
  for (int round = 0; round < 10; round++) {
    for (int i = 0; i < N; i++) {
      h[i] = (hop_t){.aux = aux};
      REQUIRE_EQ(weft_fiber_spawn(ex, fn_hop, &h[i], NULL, &f[i]), 0);
    }
    int same = 0;
    for (int i = 0; i < N; i++) {
      EXPECT_ERR(weft_future_await(f[i], BOUND_MS), 0);
      expect_hops(&h[i], f[i]);
      for (int k = 0; k <= HOPS; k++)
        same += pthread_equal(h[i].seen[k], tt) != 0;
      weft_future_release(f[i]);
    }
    EXPECT_EQ(same, N * (HOPS + 1));
  }
  ft_pool_end(aux);
  EXPECT_ERR(weft_thread_executor_shutdown(te), 0);
}

/* The two workers of a two-worker pool: two jobs that wait for each other
 * run on two different workers at once. */
static _Atomic int meet;
static weft_result_t job_meet(weft_job_t *job, void *arg) {
  (void)job;
  *(pthread_t *)arg = ft_self();
  atomic_fetch_add(&meet, 1);
  return weft_ok_int(ft_wait_at_least(&meet, 2));
}

/* On a pool: every resume is on one of the pool's workers. */
static void test_resume_pool_worker(void) {
  weft_pool_t *pool = ft_pool(2), *aux = ft_pool(2);
  pthread_t w[2];
  weft_future_t *j[2];
  atomic_store(&meet, 0);
  for (int i = 0; i < 2; i++)
    REQUIRE_EQ(weft_pool_submit(pool, job_meet, &w[i], NULL, &j[i]), 0);
  for (int i = 0; i < 2; i++) {
    EXPECT_ERR(weft_future_await(j[i], BOUND_MS), 0);
    REQUIRE_EQ(weft_future_int(j[i]), 1);
    weft_future_release(j[i]);
  }
  EXPECT_TRUE(!pthread_equal(w[0], w[1]));
  enum { N = 64 };
  static hop_t h[N];
  weft_future_t *f[N];
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < N; i++) {
      h[i] = (hop_t){.aux = aux};
      REQUIRE_EQ(weft_fiber_spawn(weft_pool_executor(pool), fn_hop, &h[i], NULL,
                                  &f[i]),
                 0);
    }
    int on_worker = 0;
    for (int i = 0; i < N; i++) {
      EXPECT_ERR(weft_future_await(f[i], BOUND_MS), 0);
      expect_hops(&h[i], f[i]);
      for (int k = 0; k <= HOPS; k++)
        on_worker += pthread_equal(h[i].seen[k], w[0]) ||
                     pthread_equal(h[i].seen[k], w[1]);
      weft_future_release(f[i]);
    }
    EXPECT_EQ(on_worker, N * (HOPS + 1));
  }
  ft_pool_end(aux);
  ft_pool_end(pool);
}

/* On the inline executor: the fiber runs inside spawn up to its first
 * await, and resumes on the thread that settles what it awaited, inside
 * that settle. */
typedef struct waker {
  weft_promise_t *p;
  weft_future_t *fiber;
  pthread_t self;
  int state_after; /* the fiber's future, right after the fulfil */
} waker_t;

static void *wake_thread(void *arg) {
  waker_t *w = arg;
  w->self = ft_self();
  weft_promise_fulfil_int(w->p, 9);
  w->state_after = weft_future_state(w->fiber);
  return NULL;
}

typedef struct inl {
  weft_future_t *f;
  pthread_t before, after;
  int rc, yield_rc;
} inl_t;

static weft_result_t fn_inline_await(void *arg) {
  inl_t *s = arg;
  s->before = ft_self();
  s->yield_rc = weft_fiber_yield();
  s->rc = weft_future_await(s->f, BOUND_MS);
  s->after = ft_self();
  return weft_ok_int(weft_future_int(s->f));
}

static void test_inline_resumes_on_waker(void) {
  for (int round = 0; round < 200; round++) {
    waker_t w = {0};
    inl_t s = {0};
    REQUIRE_EQ(weft_promise_create(&w.p, &s.f), 0);
    REQUIRE_EQ(weft_fiber_spawn(weft_executor_inline(), fn_inline_await, &s,
                                NULL, &w.fiber),
               0);
    EXPECT_ERR(s.yield_rc, 0);
    EXPECT_TRUE(pthread_equal(s.before, ft_self()));
    EXPECT_EQ(weft_future_state(w.fiber), WEFT_PENDING);
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, wake_thread, &w), 0);
    pthread_join(t, NULL);
    EXPECT_EQ(w.state_after, WEFT_FULFILLED);
    EXPECT_ERR(s.rc, 0);
    EXPECT_TRUE(pthread_equal(s.after, w.self));
    EXPECT_EQ(weft_future_int(w.fiber), 9);
    weft_future_release(w.fiber);
    weft_future_release(s.f);
    weft_promise_release(w.p);
  }
}

/* A fiber that spawns a fiber on the inline executor: the inner one runs
 * at once on top of the outer one, parks, and resumes inside the outer
 * one's fulfil; the outer one then goes on awaiting on its loop. */
typedef struct nest {
  weft_loop_t *loop;
  weft_promise_t *p;
  weft_future_t *pf;
  int inner_ran, inner_rc, inner_done_at_fulfil, outer_rc;
  bool inner_in_fiber;
} nest_t;

static weft_result_t fn_inner(void *arg) {
  nest_t *n = arg;
  n->inner_ran++;
  n->inner_in_fiber = weft_fiber_is_running();
  n->inner_rc = weft_future_await(n->pf, BOUND_MS);
  return weft_ok_int(weft_future_int(n->pf));
}

static weft_result_t fn_outer(void *arg) {
  nest_t *n = arg;
  weft_future_t *inner, *s;
  if (weft_fiber_spawn(weft_executor_inline(), fn_inner, n, NULL, &inner) != 0)
    return weft_err(WEFT_ENOMEM);
  int ran_before = n->inner_ran;
  weft_promise_fulfil_int(n->p, 6);
  n->inner_done_at_fulfil = weft_future_state(inner) == WEFT_FULFILLED;
  intptr_t v = weft_future_int(inner);
  weft_future_release(inner);
  if (weft_loop_sleep(n->loop, 1, &s) != 0)
    return weft_err(WEFT_ENOMEM);
  n->outer_rc = weft_future_await(s, BOUND_MS);
  weft_future_release(s);
  return weft_ok_int(v * 10 + ran_before);
}

static void test_fiber_in_fiber_inline(void) {
  weft_loop_t *loop = new_loop();
  for (int round = 0; round < 20; round++) {
    nest_t n = {.loop = loop};
    REQUIRE_EQ(weft_promise_create(&n.p, &n.pf), 0);
    weft_future_t *f;
    REQUIRE_EQ(
        weft_fiber_spawn(weft_loop_executor(loop), fn_outer, &n, NULL, &f), 0);
    EXPECT_ERR(weft_loop_run_until(loop, f, BOUND_MS), 0);
    EXPECT_EQ(weft_future_int(f), 61); /* inner's 6, inner ran in spawn */
    EXPECT_EQ(n.inner_ran, 1);
    EXPECT_TRUE(n.inner_in_fiber);
    EXPECT_ERR(n.inner_rc, 0);
    EXPECT_EQ(n.inner_done_at_fulfil, 1);
    EXPECT_ERR(n.outer_rc, 0);
    weft_future_release(f);
    weft_future_release(n.pf);
    weft_promise_release(n.p);
  }
  EXPECT_ERR(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"inline: runs to its end inside spawn", test_inline_runs_at_once},
    {"outside a fiber: not running, not cancelled, yield EPERM",
     test_outside_a_fiber},
    {"is_running: fiber yes; post, then, job no", test_is_running_where},
    {"returns: ok ptr+dtor, ok_int, err, err(>=0)", test_returns_value_kinds},
    {"returns: follow self ECYCLE, await self EDEADLK, follow NULL",
     test_returns_self},
    {"returns: follow a pending future (value, rejection)",
     test_returns_follow_pending},
    {"resume: loop fiber on the loop thread", test_resume_loop_thread},
    {"resume: thread executor fiber on its thread",
     test_resume_thread_executor},
    {"resume: pool fiber on the pool's workers", test_resume_pool_worker},
    {"resume: inline fiber on the waking thread", test_inline_resumes_on_waker},
    {"inline fiber inside a loop fiber", test_fiber_in_fiber_inline},
    {NULL, NULL}};

const test_suite_t suite_fiber_core = {"fiber_core", cases};
