/* SPDX-License-Identifier: MIT */
/* tests/test_blocking.c: the pool's blocking threads as an executor
 * (weft_pool_blocking_executor), counted under load, and its refusals. */
#include "testutil.h"

#include <stdlib.h>

enum { SUBMITTERS = 4, PER_SUBMITTER = 20000 };

typedef struct counted_task {
  weft_task_t task;
  _Atomic int *ran;
  weft_executor_t *expect; /* the executor its thread must be running */
  _Atomic int *wrong;
} counted_task_t;

static void counted_run(weft_task_t *t) {
  counted_task_t *ct = (counted_task_t *)t;
  if (weft_executor_current() != ct->expect)
    atomic_fetch_add(ct->wrong, 1);
  atomic_fetch_add(ct->ran, 1);
}

typedef struct submitter {
  weft_executor_t *ex;
  counted_task_t *tasks;
  _Atomic int *ran;
  _Atomic int *wrong;
  int refused;
} submitter_t;

static void *submit_main(void *arg) {
  submitter_t *s = arg;
  for (int i = 0; i < PER_SUBMITTER; i++) {
    counted_task_t *ct = &s->tasks[i];
    ct->task.run = counted_run;
    ct->ran = &s->ran[i];
    ct->expect = s->ex;
    ct->wrong = s->wrong;
    if (weft_executor_submit(s->ex, &ct->task) != 0)
      s->refused++;
  }
  return NULL;
}

/* 80,000 tasks from four threads on 8 blocking threads: each ran exactly
 * once, on a blocking thread (which runs the blocking executor), and the
 * pool's statistics count them as blocking work, not CPU jobs. */
static void test_every_task_once(void) {
  weft_pool_options_t o = {sizeof o, 1, 8, 0, {0}};
  weft_pool_t *pool = NULL;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_executor_t *ex = weft_pool_blocking_executor(pool);
  REQUIRE_EQ(ex != NULL, 1);
  EXPECT_TRUE(ex != weft_pool_executor(pool));
  _Atomic int wrong = 0;
  submitter_t s[SUBMITTERS];
  pthread_t th[SUBMITTERS];
  for (int k = 0; k < SUBMITTERS; k++) {
    s[k].ex = ex;
    s[k].tasks = calloc(PER_SUBMITTER, sizeof(counted_task_t));
    s[k].ran = calloc(PER_SUBMITTER, sizeof(_Atomic int));
    s[k].wrong = &wrong;
    s[k].refused = 0;
    REQUIRE_EQ(s[k].tasks != NULL && s[k].ran != NULL, 1);
    REQUIRE_EQ(pthread_create(&th[k], NULL, submit_main, &s[k]), 0);
  }
  for (int k = 0; k < SUBMITTERS; k++)
    pthread_join(th[k], NULL);
  weft_pool_stats_t st;
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, &st), 0);
  int not_once = 0;
  for (int k = 0; k < SUBMITTERS; k++) {
    EXPECT_EQ(s[k].refused, 0);
    for (int i = 0; i < PER_SUBMITTER; i++)
      not_once += atomic_load(&s[k].ran[i]) != 1;
    free(s[k].tasks);
    free((void *)s[k].ran);
  }
  EXPECT_EQ(not_once, 0);
  EXPECT_EQ(atomic_load(&wrong), 0);
  EXPECT_EQ(st.blocking_run, SUBMITTERS * PER_SUBMITTER);
  EXPECT_EQ(st.jobs_run, 0);
  EXPECT_TRUE(st.blocking_peak >= 1 && st.blocking_peak <= 8);
}

/* A task may block its thread: while two tasks block on a gate, a third
 * starts a third thread (blocking_max 3) and CPU jobs still run. */
static void test_tasks_may_block(void) {
  weft_pool_options_t o = {sizeof o, 1, 3, 0, {0}};
  weft_pool_t *pool = NULL;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_executor_t *ex = weft_pool_blocking_executor(pool);
  tu_gate_t g = TU_GATE_INIT;
  tu_gate_task_t t[3];
  for (int i = 0; i < 3; i++) {
    t[i].task.run = tu_gate_run;
    t[i].g = &g;
    REQUIRE_EQ(weft_executor_submit(ex, &t[i].task), 0);
  }
  tu_gate_wait(&g, 3); /* all three at once: three threads */
  weft_pool_stats_t st;
  EXPECT_EQ(weft_pool_stats(pool, &st), 0);
  EXPECT_EQ(st.blocking_alive, 3);
  tu_gate_open(&g);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, &st), 0);
  EXPECT_EQ(st.blocking_run, 3);
}

/* Refusals: NULL pool; after shutdown began (a task submitted by a task
 * that runs during a CANCEL shutdown is refused, the queued one still
 * ran). */
static void resubmit_run(weft_task_t *t);
typedef struct resubmit {
  weft_task_t task, second;
  weft_executor_t *ex;
  tu_gate_t *g;
  int rc;
  _Atomic int second_ran;
} resubmit_t;

static void second_run(weft_task_t *t) {
  resubmit_t *r = (resubmit_t *)((char *)t - offsetof(resubmit_t, second));
  atomic_fetch_add(&r->second_ran, 1);
}

static void resubmit_run(weft_task_t *t) {
  resubmit_t *r = (resubmit_t *)t;
  tu_gate_pass(r->g);
  r->second.run = second_run;
  r->rc = weft_executor_submit(r->ex, &r->second);
}

typedef struct shut_arg {
  weft_pool_t *pool;
  int rc;
} shut_arg_t;

static void *shut_main(void *arg) {
  shut_arg_t *a = arg;
  a->rc = weft_pool_shutdown(a->pool, WEFT_POOL_CANCEL, -1, NULL);
  return NULL;
}

static weft_result_t noop_job(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  return weft_ok_int(0);
}

static void test_refusals(void) {
  EXPECT_TRUE(weft_pool_blocking_executor(NULL) == NULL);
  weft_pool_options_t o = {sizeof o, 1, 1, 0, {0}};
  weft_pool_t *pool = NULL;
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  weft_executor_t *ex = weft_pool_blocking_executor(pool);
  EXPECT_STREQ(ex->ops->name, "blocking");
  tu_gate_t g = TU_GATE_INIT;
  resubmit_t r;
  memset(&r, 0, sizeof r);
  r.task.run = resubmit_run;
  r.ex = ex;
  r.g = &g;
  counted_task_t queued;
  _Atomic int queued_ran = 0, wrong = 0;
  queued.task.run = counted_run;
  queued.ran = &queued_ran;
  queued.expect = NULL; /* may run on the shutting-down thread */
  queued.wrong = &wrong;
  REQUIRE_EQ(weft_executor_submit(ex, &r.task), 0);
  tu_gate_wait(&g, 1);
  REQUIRE_EQ(weft_executor_submit(ex, &queued.task), 0); /* behind r */
  shut_arg_t a = {pool, 1};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, shut_main, &a), 0);
  /* Shutdown has begun once a probe job is refused; then let r go on. */
  for (;;) {
    weft_future_t *probe = NULL;
    int rc = weft_pool_submit(pool, noop_job, NULL, NULL, &probe);
    if (rc == WEFT_ESHUTDOWN)
      break;
    REQUIRE_EQ(rc, 0);
    weft_future_release(probe);
    sched_yield();
  }
  counted_task_t late = queued;
  EXPECT_ERR(weft_executor_submit(ex, &late.task), WEFT_ESHUTDOWN);
  tu_gate_open(&g);
  pthread_join(th, NULL);
  EXPECT_EQ(a.rc, 0);
  EXPECT_ERR(r.rc, WEFT_ESHUTDOWN);
  EXPECT_EQ(atomic_load(&r.second_ran), 0);
  EXPECT_EQ(atomic_load(&queued_ran), 1); /* ran, though CANCEL */
}

static const test_case_t cases[] = {
    {"80,000 tasks from 4 threads, each once, on blocking threads",
     test_every_task_once},
    {"tasks may block; a thread per blocked task up to the maximum",
     test_tasks_may_block},
    {"refusals: NULL, after shutdown began", test_refusals},
    {NULL, NULL}};
const test_suite_t suite_blocking = {"blocking", cases};
