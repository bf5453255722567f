/* SPDX-License-Identifier: MIT */
/* tests/test_retry.c: weft_retry_start: success at attempt k, attempts
 * running out, should_retry, the deadline during an attempt and before a
 * backoff, cancel during an attempt and during a backoff, synchronous
 * outcomes, the delays, a real connect from a loop, fibers, allocation and
 * timer failures, and many retries at once on a pool. */
#include "testutil.h"

#include "fiber.h"

#include <stdlib.h>
#include <string.h>

#define MS 1000000LL
enum { MAX_AT = 64 };

typedef struct ctx {
  weft_pool_t *pool;  /* attempts run as jobs there; NULL: outcome at once */
  unsigned ok_at;     /* the first attempt that succeeds (0: none) */
  unsigned hang_at;   /* this attempt returns a promise nobody settles */
  unsigned signal_at; /* fulfil `started` when this attempt starts */
  int err;            /* failing attempt n rejects with err - n + 1 */
  _Atomic int calls, dtor_runs, calls_after_dtor;
  int64_t at[MAX_AT]; /* when each attempt started */
  weft_promise_t *hang, *started, *dtor_done;
  weft_future_t *hang_f;
} ctx_t;

static _Atomic int values_freed;

static void value_free(void *p) {
  atomic_fetch_add(&values_freed, 1);
  free(p);
}

/* Wait (bounded) until *v reaches want: the retry's last reference may go
 * on its executor's thread just after the future settled. */
static bool reaches(_Atomic int *v, int want) {
  int64_t end = weft_clock_now_ns() + BOUND_MS * MS;
  while (atomic_load(v) < want && weft_clock_now_ns() < end)
    sched_yield();
  return atomic_load(v) == want;
}

/* The same for the counting allocator's live blocks reaching 0. */
static long live_settles(void) {
  int64_t end = weft_clock_now_ns() + BOUND_MS * MS;
  while (tu_alloc_live() != 0 && weft_clock_now_ns() < end)
    sched_yield();
  return tu_alloc_live();
}

static weft_result_t outcome(ctx_t *c, unsigned n) {
  if (c->ok_at == 0 || n < c->ok_at)
    return weft_err(c->err - (int)n + 1);
  int *v = malloc(sizeof *v);
  if (v == NULL)
    return weft_err(WEFT_ENOMEM);
  *v = (int)n * 100;
  return weft_ok(v, value_free);
}

typedef struct job_arg {
  ctx_t *c;
  unsigned n;
} job_arg_t;

static weft_result_t attempt_job(weft_job_t *job, void *arg) {
  (void)job;
  job_arg_t *a = arg;
  weft_result_t r = outcome(a->c, a->n);
  free(a);
  return r;
}

static weft_result_t attempt(void *arg, unsigned n) {
  ctx_t *c = arg;
  if (atomic_load(&c->dtor_runs) != 0)
    atomic_fetch_add(&c->calls_after_dtor, 1);
  atomic_fetch_add(&c->calls, 1);
  if (n < MAX_AT)
    c->at[n] = weft_clock_now_ns();
  weft_result_t r;
  if (n == c->hang_at) {
    weft_future_t *f;
    if (weft_promise_create(&c->hang, &f) != 0)
      return weft_err(WEFT_ENOMEM);
    weft_future_retain(f);
    c->hang_f = f;
    r = weft_follow(f);
  } else if (c->pool != NULL) {
    job_arg_t *a = malloc(sizeof *a);
    weft_future_t *f;
    if (a == NULL)
      return weft_err(WEFT_ENOMEM);
    *a = (job_arg_t){c, n};
    int rc = weft_pool_submit(c->pool, attempt_job, a, free, &f);
    if (rc != 0) {
      free(a);
      return weft_err(rc);
    }
    r = weft_follow(f);
  } else {
    r = outcome(c, n);
  }
  if (n == c->signal_at && c->started != NULL)
    weft_promise_fulfil_int(c->started, n);
  return r;
}

static void ctx_dtor(void *arg) {
  ctx_t *c = arg;
  atomic_fetch_add(&c->dtor_runs, 1);
  /* The dtor owns the dtor_done handle: the test wakes once the promise
   * is fulfilled, while this thread may still be inside the call. */
  if (c->dtor_done != NULL) {
    weft_promise_fulfil_int(c->dtor_done, 1);
    weft_promise_release(c->dtor_done);
  }
}

/* Promises the test awaits: `started` and `dtor_done` (which ctx_dtor
 * releases: every test that asks for it runs the dtor). */
static void ctx_signals(ctx_t *c, weft_future_t **started,
                        weft_future_t **dtor_done) {
  if (started != NULL)
    REQUIRE_EQ(weft_promise_create(&c->started, started), 0);
  if (dtor_done != NULL)
    REQUIRE_EQ(weft_promise_create(&c->dtor_done, dtor_done), 0);
}

static void ctx_end(ctx_t *c) {
  if (c->started != NULL)
    weft_promise_release(c->started);
  if (c->hang != NULL)
    weft_promise_release(c->hang);
  if (c->hang_f != NULL)
    weft_future_release(c->hang_f);
}

static void await_ok(weft_future_t *f) {
  REQUIRE_EQ(weft_future_await(f, BOUND_MS), 0);
}

static void noop_alarm(weft__alarm_t *a) { (void)a; }

/* The alarm service's heap exists before a test counts allocations. */
static void alarm_warm(void) {
  weft__alarm_t a;
  weft__alarm_init(&a);
  REQUIRE_EQ(weft__alarm_arm(&a, weft_clock_now_ns() + 60000 * MS, noop_alarm),
             0);
  EXPECT_TRUE(weft__alarm_disarm(&a));
}

static weft_retry_policy_t policy(unsigned attempts, int64_t base_ms,
                                  int64_t max_ms) {
  weft_retry_policy_t p;
  memset(&p, 0, sizeof p);
  p.size = sizeof p;
  p.max_attempts = attempts;
  p.base_delay_ms = base_ms;
  p.max_delay_ms = max_ms;
  p.jitter = WEFT_RETRY_JITTER_NONE;
  return p;
}

typedef struct env {
  weft_thread_executor_t *te;
  weft_pool_t *pool;
  weft_executor_t *ex;
} env_t;

static env_t env_new(void) {
  env_t e;
  weft_pool_options_t po = {sizeof po, 2, 0, 0, {0}};
  REQUIRE_EQ(weft_thread_executor_create(&e.te), 0);
  REQUIRE_EQ(weft_pool_create(&po, &e.pool), 0);
  e.ex = weft_thread_executor_get(e.te);
  return e;
}

static void env_end(env_t *e) {
  EXPECT_EQ(weft_pool_shutdown(e->pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  EXPECT_EQ(weft_thread_executor_shutdown(e->te), 0);
}

/* ---- outcomes ---- */

static void test_succeeds_at_k(void) {
  env_t e = env_new();
  for (unsigned k = 1; k <= 4; k++) {
    ctx_t c = {.pool = e.pool, .ok_at = k, .err = WEFT_ECONNREFUSED};
    weft_future_t *f, *dtor_done;
    ctx_signals(&c, NULL, &dtor_done);
    weft_retry_policy_t p = policy(5, 1, 10);
    int freed = atomic_load(&values_freed);
    REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
    await_ok(f);
    EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
    EXPECT_EQ(atomic_load(&c.calls), (int)k);
    EXPECT_EQ(weft_retry_attempt_count(f), k);
    int *v = weft_future_value(f);
    REQUIRE_EQ(v != NULL, 1);
    EXPECT_EQ(*v, (int)k * 100);
    /* the value is the winning attempt's, borrowed */
    weft_future_t *won = weft_retry_attempt(f);
    REQUIRE_EQ(won != NULL, 1);
    EXPECT_TRUE(weft_future_value(won) == v);
    await_ok(dtor_done);
    EXPECT_EQ(atomic_load(&c.dtor_runs), 1);
    EXPECT_EQ(atomic_load(&values_freed), freed);
    weft_future_release(f); /* the last hold on the value */
    EXPECT_TRUE(reaches(&values_freed, freed + 1));
    weft_future_release(dtor_done);
    ctx_end(&c);
  }
  env_end(&e);
}

static void test_runs_out(void) {
  env_t e = env_new();
  ctx_t c = {.pool = e.pool, .err = -1000};
  weft_future_t *f, *dtor_done;
  ctx_signals(&c, NULL, &dtor_done);
  weft_retry_policy_t p = policy(4, 1, 2);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), -1003); /* the fourth attempt's */
  EXPECT_EQ(atomic_load(&c.calls), 4);
  EXPECT_TRUE(weft_retry_attempt(f) == NULL);
  await_ok(dtor_done);
  EXPECT_EQ(atomic_load(&c.dtor_runs), 1);
  EXPECT_EQ(atomic_load(&c.calls_after_dtor), 0);
  weft_future_release(f);
  weft_future_release(dtor_done);
  ctx_end(&c);
  env_end(&e);
}

static _Atomic int asked;
static unsigned asked_attempt;
static int asked_err;
static void *asked_arg;

/* Retry connection refusals only. */
static bool refused_only(void *arg, unsigned attempt_no, int err) {
  atomic_fetch_add(&asked, 1);
  asked_arg = arg;
  asked_attempt = attempt_no;
  asked_err = err;
  return err == WEFT_ECONNREFUSED;
}

static void test_should_retry_stops(void) {
  env_t e = env_new();
  /* attempt 1: ECONNREFUSED (retried), attempt 2: ECONNREFUSED - 1 */
  ctx_t c = {.pool = e.pool, .err = WEFT_ECONNREFUSED};
  weft_future_t *f;
  weft_retry_policy_t p = policy(10, 1, 2);
  p.should_retry = refused_only;
  atomic_store(&asked, 0);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_ECONNREFUSED - 1);
  EXPECT_EQ(atomic_load(&c.calls), 2);
  EXPECT_EQ(atomic_load(&asked), 2);
  EXPECT_EQ(asked_attempt, 2);
  EXPECT_EQ(asked_err, WEFT_ECONNREFUSED - 1);
  EXPECT_TRUE(asked_arg == &c);
  weft_future_release(f);
  /* the default retries everything but WEFT_ECANCELED */
  ctx_t d = {.err = WEFT_ECANCELED};
  p.should_retry = NULL;
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &d, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_ECANCELED);
  EXPECT_EQ(weft_future_state(f), WEFT_REJECTED);
  EXPECT_EQ(atomic_load(&d.calls), 1);
  weft_future_release(f);
  ctx_end(&c);
  env_end(&e);
}

static void test_sync_outcomes(void) {
  env_t e = env_new();
  /* weft_err at once counts as the attempt's failure; weft_ok ends it */
  ctx_t c = {.ok_at = 3, .err = WEFT_EIO};
  weft_future_t *f;
  weft_retry_policy_t p = policy(5, 1, 1);
  int freed = atomic_load(&values_freed);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), 0);
  EXPECT_EQ(*(int *)weft_future_value(f), 300);
  EXPECT_TRUE(weft_retry_attempt(f) == NULL); /* no attempt future */
  EXPECT_EQ(atomic_load(&c.calls), 3);
  weft_future_release(f);
  EXPECT_TRUE(reaches(&values_freed, freed + 1)); /* the retry owned it */
  /* the last synchronous error is the retry's */
  ctx_t d = {.err = WEFT_EIO};
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &d, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_EIO - 4);
  EXPECT_EQ(atomic_load(&d.calls), 5);
  weft_future_release(f);
  env_end(&e);
}

static _Atomic int null_calls;
static weft_result_t follow_null(void *arg, unsigned n) {
  (void)arg;
  (void)n;
  atomic_fetch_add(&null_calls, 1);
  return n == 1 ? weft_follow(NULL) : weft_ok_int(7);
}

static void test_follow_null_and_int(void) {
  weft_future_t *f;
  weft_retry_policy_t p = policy(2, 1, 1);
  REQUIRE_EQ(weft_retry_start(weft_executor_inline(), &p, follow_null, NULL,
                              NULL, &f),
             0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), 0);
  EXPECT_EQ(weft_future_int(f), 7);
  EXPECT_EQ(atomic_load(&null_calls), 2);
  weft_future_release(f);
}

/* ---- deadline ---- */

static void test_deadline_during_attempt(void) {
  env_t e = env_new();
  ctx_t c = {.pool = e.pool, .hang_at = 2, .err = WEFT_EIO};
  weft_future_t *f, *dtor_done;
  ctx_signals(&c, NULL, &dtor_done);
  weft_retry_policy_t p = policy(5, 1, 1);
  int64_t t0 = weft_clock_now_ns();
  p.deadline_ns = t0 + 100 * MS;
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
  await_ok(f);
  EXPECT_TRUE(weft_clock_now_ns() >= p.deadline_ns);
  EXPECT_EQ(weft_future_error(f), WEFT_ETIMEDOUT);
  EXPECT_EQ(atomic_load(&c.calls), 2);
  await_ok(dtor_done);
  /* the attempt in flight was cancelled */
  EXPECT_TRUE(weft_promise_is_cancelled(c.hang));
  EXPECT_EQ(atomic_load(&c.calls_after_dtor), 0);
  EXPECT_EQ(atomic_load(&c.dtor_runs), 1);
  weft_future_release(f);
  weft_future_release(dtor_done);
  ctx_end(&c);
  env_end(&e);
}

/* A backoff that would end past the deadline is not waited for: the retry
 * times out when the attempt fails, and no attempt starts after. */
static void test_deadline_before_backoff(void) {
  env_t e = env_new();
  ctx_t c = {.pool = e.pool, .err = WEFT_EIO};
  weft_future_t *f, *dtor_done;
  ctx_signals(&c, NULL, &dtor_done);
  weft_retry_policy_t p = policy(5, 20, 400);
  int64_t t0 = weft_clock_now_ns();
  p.deadline_ns = t0 + 250 * MS; /* attempts at 0, 20, 60, 140; not 300 */
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
  await_ok(f);
  int64_t t1 = weft_clock_now_ns();
  EXPECT_EQ(weft_future_error(f), WEFT_ETIMEDOUT);
  EXPECT_EQ(atomic_load(&c.calls), 4);
  EXPECT_TRUE(t1 < p.deadline_ns || t1 - c.at[4] < 100 * MS);
  await_ok(dtor_done);
  EXPECT_EQ(atomic_load(&c.calls_after_dtor), 0);
  weft_future_release(f);
  weft_future_release(dtor_done);
  ctx_end(&c);
  env_end(&e);
}

static void test_deadline_passed(void) {
  ctx_t c = {.err = WEFT_EIO};
  weft_future_t *f;
  weft_retry_policy_t p = policy(5, 1, 1);
  p.deadline_ns = weft_clock_now_ns() - 1;
  REQUIRE_EQ(weft_retry_start(weft_executor_inline(), &p, attempt, &c, ctx_dtor,
                              &f),
             0);
  EXPECT_EQ(weft_future_error(f), WEFT_ETIMEDOUT);
  EXPECT_EQ(atomic_load(&c.calls), 0);
  EXPECT_EQ(atomic_load(&c.dtor_runs), 1);
  EXPECT_EQ(weft_retry_attempt_count(f), 0);
  weft_future_release(f);
}

/* ---- cancel ---- */

static void test_cancel_during_attempt(void) {
  env_t e = env_new();
  ctx_t c = {.pool = e.pool, .hang_at = 3, .signal_at = 3, .err = WEFT_EIO};
  weft_future_t *f, *started, *dtor_done;
  ctx_signals(&c, &started, &dtor_done);
  weft_retry_policy_t p = policy(10, 1, 1);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
  await_ok(started);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  await_ok(dtor_done);
  EXPECT_TRUE(weft_promise_is_cancelled(c.hang));
  EXPECT_EQ(atomic_load(&c.calls), 3);
  EXPECT_EQ(atomic_load(&c.calls_after_dtor), 0);
  EXPECT_EQ(weft_retry_attempt_count(f), 3);
  weft_future_release(f);
  weft_future_release(started);
  weft_future_release(dtor_done);
  ctx_end(&c);
  env_end(&e);
}

/* Cancelled in its backoff, the retry stops its timer: nothing runs later,
 * and once the handle goes, nothing of it is left (the counting allocator
 * sees every block freed, the timer's hold included). */
static void test_cancel_during_backoff(void) {
  weft_retry_policy_t p = policy(5, 100, 100);
  p.deadline_ns = weft_clock_now_ns() + 60000 * MS; /* the alarm thread up */
  ctx_t c = {.err = WEFT_EIO};
  weft_future_t *f, *never;
  weft_promise_t *pn;
  REQUIRE_EQ(weft_promise_create(&pn, &never), 0);
  alarm_warm();
  tu_alloc_install(0);
  /* inline: attempt 1 has failed and the backoff is armed on return */
  REQUIRE_EQ(weft_retry_start(weft_executor_inline(), &p, attempt, &c, ctx_dtor,
                              &f),
             0);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(atomic_load(&c.dtor_runs), 1); /* at once: fn was not running */
  weft_future_release(f);
  EXPECT_EQ(live_settles(), 0);
  tu_alloc_restore();
  /* past the time the backoff would have ended: still one attempt */
  EXPECT_EQ(weft_future_await(never, 300), WEFT_ETIMEDOUT);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  weft_promise_release(pn);
  weft_future_release(never);
}

static weft_result_t pass(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_error(src));
}

/* Releasing the handle cancels nothing; a then's cancel travels up to the
 * retry when the then held its only need. */
static void test_release_and_then_cancel(void) {
  env_t e = env_new();
  ctx_t c = {.pool = e.pool, .hang_at = 1, .signal_at = 1, .err = WEFT_EIO};
  weft_future_t *f, *started, *dtor_done;
  ctx_signals(&c, &started, &dtor_done);
  weft_retry_policy_t p = policy(3, 1, 1);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, ctx_dtor, &f), 0);
  weft_future_release(f);
  await_ok(started);
  EXPECT_TRUE(!weft_promise_is_cancelled(c.hang));
  /* the attempt's own cancel is its failure: not retried by default */
  weft_promise_reject(c.hang, WEFT_ECANCELED);
  await_ok(dtor_done);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  weft_future_release(started);
  weft_future_release(dtor_done);
  ctx_end(&c);

  ctx_t d = {.pool = e.pool, .hang_at = 2, .signal_at = 2, .err = WEFT_EIO};
  weft_future_t *t;
  ctx_signals(&d, &started, &dtor_done);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &d, ctx_dtor, &f), 0);
  REQUIRE_EQ(weft_future_then(f, e.ex, pass, NULL, NULL, &t), 0);
  weft_future_release(f);
  await_ok(started);
  EXPECT_EQ(weft_future_cancel(t), 0);
  await_ok(dtor_done);
  EXPECT_TRUE(weft_promise_is_cancelled(d.hang));
  EXPECT_EQ(atomic_load(&d.calls), 2);
  weft_future_release(t);
  weft_future_release(started);
  weft_future_release(dtor_done);
  ctx_end(&d);
  env_end(&e);
}

/* ---- delays ---- */

/* Six failing attempts: the gap before attempt n+1 is the n-th delay. */
static void run_delays(env_t *e, weft_retry_jitter_t j, ctx_t *c) {
  weft_retry_policy_t p = policy(6, 20, 80);
  p.jitter = j;
  weft_future_t *f;
  REQUIRE_EQ(weft_retry_start(e->ex, &p, attempt, c, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), c->err - 5);
  EXPECT_EQ(atomic_load(&c->calls), 6);
  weft_future_release(f);
}

/* Delays are never shorter than asked (timers do not fire early); a late
 * one is a slow machine, so the upper bound is generous. */
#define SLACK (1000 * MS)

static void test_delays_grow(void) {
  env_t e = env_new();
  static const int64_t want[] = {20, 40, 80, 80, 80}; /* ms, capped at 80 */
  ctx_t c = {.pool = e.pool, .err = WEFT_EIO};
  run_delays(&e, WEFT_RETRY_JITTER_NONE, &c);
  for (int n = 1; n <= 5; n++) {
    int64_t gap = c.at[n + 1] - c.at[n];
    EXPECT_TRUE(gap >= want[n - 1] * MS);
    EXPECT_TRUE(gap < want[n - 1] * MS + SLACK);
  }
  /* equal jitter keeps at least half of each delay */
  ctx_t d = {.pool = e.pool, .err = WEFT_EIO};
  run_delays(&e, WEFT_RETRY_JITTER_EQUAL, &d);
  for (int n = 1; n <= 5; n++) {
    int64_t gap = d.at[n + 1] - d.at[n];
    EXPECT_TRUE(gap >= want[n - 1] * MS / 2);
    EXPECT_TRUE(gap < want[n - 1] * MS + SLACK);
  }
  /* full jitter: anywhere up to the delay */
  ctx_t g = {.pool = e.pool, .err = WEFT_EIO};
  run_delays(&e, WEFT_RETRY_JITTER_FULL, &g);
  for (int n = 1; n <= 5; n++)
    EXPECT_TRUE(g.at[n + 1] - g.at[n] < want[n - 1] * MS + SLACK);
  env_end(&e);
}

/* Many attempts with a tiny cap: delays stay at the cap (no overflow of
 * the doubling), and the retry keeps going until its limit. */
static void test_delays_capped(void) {
  env_t e = env_new();
  ctx_t c = {.err = WEFT_EIO};
  weft_retry_policy_t p = policy(60, 1, 2);
  weft_future_t *f;
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(atomic_load(&c.calls), 60);
  for (int n = 40; n < 59; n++) {
    EXPECT_TRUE(c.at[n + 1] - c.at[n] >= 2 * MS);
    EXPECT_TRUE(c.at[n + 1] - c.at[n] < 2 * MS + SLACK);
  }
  weft_future_release(f);
  env_end(&e);
}

/* ---- a real connect from a loop ---- */

typedef struct conn {
  weft_loop_t *loop;
  weft_addr_t addr;
  weft_socket_t *listener;
  unsigned listen_at; /* the listener appears before this attempt */
  unsigned calls, refused;
} conn_t;

static weft_result_t connect_attempt(void *arg, unsigned n) {
  conn_t *c = arg;
  c->calls++;
  if (n == c->listen_at &&
      weft_socket_listen(c->loop, &c->addr, 0, &c->listener) != 0)
    return weft_err(WEFT_EIO);
  weft_future_t *f;
  int rc = weft_socket_connect(c->loop, &c->addr, &f);
  return rc != 0 ? weft_err(rc) : weft_follow(f);
}

static bool count_refused(void *arg, unsigned n, int err) {
  (void)n;
  conn_t *c = arg;
  c->refused += err == WEFT_ECONNREFUSED;
  return err == WEFT_ECONNREFUSED;
}

/* A port nobody listens on now (one the kernel just gave and took back). */
static void closed_port(weft_loop_t *loop, weft_addr_t *addr) {
  weft_socket_t *l;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, addr), 0);
  REQUIRE_EQ(weft_socket_listen(loop, addr, 0, &l), 0);
  REQUIRE_EQ(weft_socket_local_addr(l, addr), 0);
  REQUIRE_EQ(weft_socket_close(l), 0);
}

/* The peer end, accepted, closes both sockets. */
static void accept_and_close(conn_t *c, weft_socket_t *s) {
  weft_future_t *a;
  weft_socket_t *peer;
  REQUIRE_EQ(weft_socket_accept(c->listener, &a), 0);
  REQUIRE_EQ(weft_loop_run_until(c->loop, a, BOUND_MS), 0);
  EXPECT_EQ(weft_socket_take(a, &peer), 0);
  weft_future_release(a);
  weft_socket_close(peer);
  weft_socket_close(s);
  weft_socket_close(c->listener);
}

static void test_loop_connect(void) {
  weft_loop_t *loop = new_loop();
  conn_t c = {.loop = loop, .listen_at = 3};
  closed_port(loop, &c.addr);
  weft_retry_policy_t p = policy(10, 5, 20);
  p.should_retry = count_refused;
  p.deadline_ns = weft_clock_now_ns() + BOUND_MS * MS;
  weft_future_t *f;
  REQUIRE_EQ(weft_retry_start(weft_loop_executor(loop), &p, connect_attempt, &c,
                              NULL, &f),
             0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_error(f), 0);
  EXPECT_EQ(c.calls, 3);
  EXPECT_EQ(c.refused, 2);
  /* the socket is the winning connect's to hand over */
  weft_socket_t *s = NULL;
  EXPECT_ERR(weft_socket_take(f, &s), WEFT_EINVAL);
  EXPECT_TRUE(weft_future_value(f) != NULL);
  REQUIRE_EQ(weft_socket_take(weft_retry_attempt(f), &s), 0);
  weft_future_release(f);
  accept_and_close(&c, s);
  weft_loop_close(loop);
}

/* The same from a fiber on the loop: start, await, take. */
static weft_result_t connect_fiber(void *arg) {
  conn_t *c = arg;
  weft_retry_policy_t p = policy(10, 5, 20);
  p.should_retry = count_refused;
  weft_future_t *f;
  int rc = weft_retry_start(weft_loop_executor(c->loop), &p, connect_attempt, c,
                            NULL, &f);
  if (rc != 0)
    return weft_err(rc);
  if ((rc = weft_future_await(f, WEFT_FOREVER)) == 0)
    rc = weft_future_error(f);
  weft_socket_t *s = NULL;
  if (rc == 0)
    rc = weft_socket_take(weft_retry_attempt(f), &s);
  weft_future_release(f);
  return rc != 0 ? weft_err(rc) : weft_ok(s, NULL);
}

static void test_fiber_connect(void) {
  weft_loop_t *loop = new_loop();
  conn_t c = {.loop = loop, .listen_at = 2};
  closed_port(loop, &c.addr);
  weft_future_t *fb;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), connect_fiber, &c, NULL,
                              &fb),
             0);
  REQUIRE_EQ(weft_loop_run_until(loop, fb, BOUND_MS), 0);
  EXPECT_EQ(weft_future_error(fb), 0);
  EXPECT_EQ(c.calls, 2);
  EXPECT_EQ(c.refused, 1);
  weft_socket_t *s = weft_future_value(fb);
  weft_future_release(fb);
  REQUIRE_EQ(s != NULL, 1);
  accept_and_close(&c, s);
  weft_loop_close(loop);
}

/* ---- failures of weft's own ---- */

/* Every allocation failing in turn: the start returns WEFT_ENOMEM with
 * nothing run or freed, or the retry runs to its end; nothing is left. */
static bool alloc_round(long n) {
  tu_alloc_install(n);
  ctx_t c = {.ok_at = 3, .err = WEFT_EIO};
  weft_retry_policy_t p = policy(5, 1, 1);
  p.deadline_ns = weft_clock_now_ns() + BOUND_MS * MS;
  weft_future_t *f = NULL;
  int rc = weft_retry_start(weft_executor_inline(), &p, attempt, &c, ctx_dtor,
                            &f);
  if (rc != 0) {
    EXPECT_ERR(rc, WEFT_ENOMEM);
    EXPECT_TRUE(f == NULL);
    EXPECT_EQ(atomic_load(&c.calls), 0);
    EXPECT_EQ(atomic_load(&c.dtor_runs), 0);
  } else {
    while ((rc = weft_future_await(f, BOUND_MS)) == WEFT_ENOMEM)
      ;
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(weft_future_error(f), 0);
    EXPECT_EQ(atomic_load(&c.calls), 3);
    EXPECT_EQ(atomic_load(&c.dtor_runs), 1);
    weft_future_release(f);
  }
  long tried = tu_alloc_count();
  EXPECT_EQ(live_settles(), 0);
  tu_alloc_restore();
  return tried >= n;
}

static void test_alloc_failures(void) {
  alarm_warm();
  long n = 1;
  while (alloc_round(n) && n < 100)
    n++;
  EXPECT_TRUE(n >= 2 && n < 100);
}

/* The alarm service refusing: a backoff that cannot be set rejects the
 * retry with that error; so does a deadline that cannot be set, and the
 * attempt in flight is cancelled. */
static void test_timer_failures(void) {
  env_t e = env_new();
  ctx_t c = {.err = WEFT_EIO};
  weft_retry_policy_t p = policy(5, 1, 1);
  weft_future_t *f, *dtor_done;
  weft__fault_arm("alarm", 1, ENOMEM, false);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, NULL, &f), 0);
  await_ok(f);
  weft__fault_disarm();
  EXPECT_EQ(weft_future_error(f), WEFT_ENOMEM);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  weft_future_release(f);

  ctx_t d = {.pool = e.pool, .hang_at = 1, .err = WEFT_EIO};
  ctx_signals(&d, NULL, &dtor_done);
  p.deadline_ns = weft_clock_now_ns() + BOUND_MS * MS;
  weft__fault_arm("alarm", 1, EAGAIN, false);
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &d, ctx_dtor, &f), 0);
  weft__fault_disarm();
  weft__fault_record(false);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_EAGAIN);
  await_ok(dtor_done);
  EXPECT_TRUE(atomic_load(&d.calls) <= 1);
  EXPECT_EQ(atomic_load(&d.calls_after_dtor), 0);
  if (d.hang != NULL)
    EXPECT_TRUE(weft_promise_is_cancelled(d.hang));
  weft_future_release(f);
  weft_future_release(dtor_done);
  ctx_end(&d);
  env_end(&e);
}

/* The executor shut down while the retry runs: in an attempt (its
 * outcome cannot come back) and in a backoff (the next attempt cannot
 * start); the retry rejects with WEFT_ESHUTDOWN either way. */
static void test_executor_shut_down(void) {
  weft_thread_executor_t *te;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  ctx_t c = {.hang_at = 1, .signal_at = 1, .err = WEFT_EIO};
  weft_future_t *f, *started, *dtor_done;
  ctx_signals(&c, &started, &dtor_done);
  weft_retry_policy_t p = policy(5, 1, 1);
  REQUIRE_EQ(weft_retry_start(weft_thread_executor_get(te), &p, attempt, &c,
                              ctx_dtor, &f),
             0);
  await_ok(started);
  REQUIRE_EQ(weft_thread_executor_shutdown(te), 0);
  weft_promise_reject(c.hang, WEFT_EIO);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_ESHUTDOWN);
  await_ok(dtor_done);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  weft_future_release(f);
  weft_future_release(started);
  weft_future_release(dtor_done);
  ctx_end(&c);

  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  ctx_t d = {.signal_at = 1, .err = WEFT_EIO};
  ctx_signals(&d, &started, &dtor_done);
  p = policy(5, 200, 200);
  REQUIRE_EQ(weft_retry_start(weft_thread_executor_get(te), &p, attempt, &d,
                              ctx_dtor, &f),
             0);
  await_ok(started);
  REQUIRE_EQ(weft_thread_executor_shutdown(te), 0); /* within the backoff */
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_ESHUTDOWN);
  await_ok(dtor_done);
  EXPECT_EQ(atomic_load(&d.calls), 1);
  weft_future_release(f);
  weft_future_release(started);
  weft_future_release(dtor_done);
  ctx_end(&d);
}

/* An executor that refuses every task. */
static int refuse(weft_executor_t *ex, weft_task_t *t) {
  (void)ex;
  (void)t;
  return WEFT_ESHUTDOWN;
}
static const weft_executor_ops_t refusing_ops = {sizeof refusing_ops,
                                                 "refusing", refuse, NULL,
                                                 NULL};

static void test_bad_arguments(void) {
  ctx_t c = {.err = WEFT_EIO};
  weft_executor_t *in = weft_executor_inline();
  weft_future_t *f = (weft_future_t *)&c; /* must stay untouched */
  weft_retry_policy_t p = policy(3, 10, 20);
  EXPECT_ERR(weft_retry_start(NULL, &p, attempt, &c, ctx_dtor, &f),
             WEFT_EINVAL);
  EXPECT_ERR(weft_retry_start(in, &p, NULL, &c, ctx_dtor, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_retry_start(in, &p, attempt, &c, ctx_dtor, NULL),
             WEFT_EINVAL);
  weft_retry_policy_t q = p;
  q.size = 8;
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_EINVAL);
  q = p;
  q.base_delay_ms = -1;
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_EINVAL);
  q = p;
  q.max_delay_ms = 5; /* below base */
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_EINVAL);
  q = p;
  q.jitter = (weft_retry_jitter_t)7;
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_EINVAL);
  q = p;
  q.deadline_ns = -5;
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_EINVAL);
  q = p;
  q.reserved[2] = &c;
  EXPECT_ERR(weft_retry_start(in, &q, attempt, &c, ctx_dtor, &f), WEFT_ENOTSUP);
  weft_executor_t refusing = {&refusing_ops};
  EXPECT_ERR(weft_retry_start(&refusing, &p, attempt, &c, ctx_dtor, &f),
             WEFT_ESHUTDOWN);
  p.deadline_ns = weft_clock_now_ns() + 60000 * MS;
  EXPECT_ERR(weft_retry_start(&refusing, &p, attempt, &c, ctx_dtor, &f),
             WEFT_ESHUTDOWN);
  EXPECT_TRUE(f == (weft_future_t *)&c);
  EXPECT_EQ(atomic_load(&c.calls), 0);
  EXPECT_EQ(atomic_load(&c.dtor_runs), 0);
  /* accessors on other futures */
  EXPECT_TRUE(weft_retry_attempt(NULL) == NULL);
  EXPECT_EQ(weft_retry_attempt_count(NULL), 0);
  weft_promise_t *pr;
  REQUIRE_EQ(weft_promise_create(&pr, &f), 0);
  EXPECT_TRUE(weft_retry_attempt(f) == NULL);
  EXPECT_EQ(weft_retry_attempt_count(f), 0);
  weft_promise_release(pr);
  weft_future_release(f);
  /* NULL policy: the defaults (3 attempts) */
  REQUIRE_EQ(weft_retry_start(in, NULL, attempt, &c, NULL, &f), 0);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(atomic_load(&c.calls), 1);
  weft_future_release(f);
}

/* A policy struct that grows: a caller of the first version (no reserved
 * slots) and one of a later, larger version with a zero tail are read;
 * a byte set past what this weft knows is refused. The size is pinned. */
typedef struct {
  weft_retry_policy_t p;
  unsigned char more[32];
} big_policy_t;

static void test_policy_struct(void) {
  EXPECT_EQ(sizeof(weft_retry_policy_t), 48 + 4 * sizeof(void *));
  big_policy_t b;
  memset(&b, 0, sizeof b);
  b.p.max_attempts = 1;
  weft_future_t *f;
  ctx_t c = {.err = WEFT_EIO};
  weft_executor_t *in = weft_executor_inline();
  b.p.size = offsetof(weft_retry_policy_t, reserved);
  REQUIRE_EQ(weft_retry_start(in, &b.p, attempt, &c, NULL, &f), 0);
  EXPECT_EQ(weft_future_error(f), WEFT_EIO);
  weft_future_release(f);
  b.p.size = sizeof b;
  REQUIRE_EQ(weft_retry_start(in, &b.p, attempt, &c, NULL, &f), 0);
  weft_future_release(f);
  b.more[31] = 1;
  EXPECT_ERR(weft_retry_start(in, &b.p, attempt, &c, NULL, &f), WEFT_ENOTSUP);
  b.p.size = 4097;
  EXPECT_ERR(weft_retry_start(in, &b.p, attempt, &c, NULL, &f), WEFT_EINVAL);
  EXPECT_EQ(atomic_load(&c.calls), 2);
}

/* No attempt limit: it goes on until the deadline. */
static void test_unlimited_until_deadline(void) {
  env_t e = env_new();
  ctx_t c = {.err = WEFT_EIO};
  weft_retry_policy_t p = policy(WEFT_RETRY_UNLIMITED, 1, 1);
  p.deadline_ns = weft_clock_now_ns() + 100 * MS;
  weft_future_t *f;
  REQUIRE_EQ(weft_retry_start(e.ex, &p, attempt, &c, NULL, &f), 0);
  await_ok(f);
  EXPECT_EQ(weft_future_error(f), WEFT_ETIMEDOUT);
  EXPECT_TRUE(atomic_load(&c.calls) > 3);
  EXPECT_EQ(weft_retry_attempt_count(f), (unsigned)atomic_load(&c.calls));
  weft_future_release(f);
  env_end(&e);
}

/* ---- many at once ---- */

enum { MANY = 2000 };

typedef struct many {
  _Atomic int runs[6]; /* per attempt number */
  _Atomic int dtor_runs, after_dtor;
  unsigned ok_at;
} many_t;

static weft_result_t many_attempt(void *arg, unsigned n) {
  many_t *m = arg;
  if (atomic_load(&m->dtor_runs) != 0)
    atomic_fetch_add(&m->after_dtor, 1);
  if (n < 6)
    atomic_fetch_add(&m->runs[n], 1);
  return n < m->ok_at ? weft_err(WEFT_EAGAIN) : weft_ok_int((intptr_t)n);
}

static void many_dtor(void *arg) {
  atomic_fetch_add(&((many_t *)arg)->dtor_runs, 1);
}

/* Retries on a pool, a quarter cancelled while they run: every attempt
 * ran exactly once up to the one that succeeded, every arg was freed
 * once, no attempt ran after its arg was freed. */
static void test_many_on_pool(void) {
  weft_pool_options_t po = {sizeof po, 2, 0, 0, {0}};
  weft_pool_t *pool;
  REQUIRE_EQ(weft_pool_create(&po, &pool), 0);
  many_t *m = calloc(MANY, sizeof *m);
  weft_future_t **f = calloc(MANY, sizeof *f);
  REQUIRE_EQ(m != NULL && f != NULL, 1);
  weft_retry_policy_t p = policy(5, 1, 1);
  p.jitter = WEFT_RETRY_JITTER_FULL;
  for (int i = 0; i < MANY; i++) {
    m[i].ok_at = 1 + (unsigned)(i % 4);
    REQUIRE_EQ(weft_retry_start(weft_pool_executor(pool), &p, many_attempt,
                                &m[i], many_dtor, &f[i]),
               0);
    if (i % 4 == 3 && i > 8)
      weft_future_cancel(f[i - 7]);
  }
  int cancelled = 0;
  for (int i = 0; i < MANY; i++) {
    await_ok(f[i]);
    bool ok = weft_future_state(f[i]) == WEFT_FULFILLED;
    cancelled += !ok;
    if (ok) {
      EXPECT_EQ(weft_future_int(f[i]), (intptr_t)m[i].ok_at);
      for (unsigned n = 1; n <= m[i].ok_at; n++)
        EXPECT_EQ(atomic_load(&m[i].runs[n]), 1);
    } else {
      EXPECT_EQ(weft_future_state(f[i]), WEFT_CANCELLED);
    }
    weft_future_release(f[i]);
  }
  /* every arg_dtor has run once the pool has drained */
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
  for (int i = 0; i < MANY; i++) {
    EXPECT_EQ(atomic_load(&m[i].dtor_runs), 1);
    EXPECT_EQ(atomic_load(&m[i].after_dtor), 0);
    for (unsigned n = 1; n < 6; n++)
      EXPECT_TRUE(atomic_load(&m[i].runs[n]) <= 1);
  }
  EXPECT_TRUE(cancelled <= MANY / 4);
  free(m);
  free(f);
}

const test_suite_t suite_retry = {
    "retry", (const test_case_t[]){
                 {"succeeds_at_k", test_succeeds_at_k},
                 {"runs_out", test_runs_out},
                 {"should_retry_stops", test_should_retry_stops},
                 {"sync_outcomes", test_sync_outcomes},
                 {"follow_null_and_int", test_follow_null_and_int},
                 {"deadline_during_attempt", test_deadline_during_attempt},
                 {"deadline_before_backoff", test_deadline_before_backoff},
                 {"deadline_passed", test_deadline_passed},
                 {"cancel_during_attempt", test_cancel_during_attempt},
                 {"cancel_during_backoff", test_cancel_during_backoff},
                 {"release_and_then_cancel", test_release_and_then_cancel},
                 {"delays_grow", test_delays_grow},
                 {"delays_capped", test_delays_capped},
                 {"loop_connect", test_loop_connect},
                 {"fiber_connect", test_fiber_connect},
                 {"alloc_failures", test_alloc_failures},
                 {"timer_failures", test_timer_failures},
                 {"executor_shut_down", test_executor_shut_down},
                 {"bad_arguments", test_bad_arguments},
                 {"policy_struct", test_policy_struct},
                 {"unlimited_until_deadline", test_unlimited_until_deadline},
                 {"many_on_pool", test_many_on_pool},
                 {NULL, NULL}}};
