/* SPDX-License-Identifier: MIT */
/* samples/futures_demo.c: futures composed across threads, step by step:
 * CPU work on worker threads, a join, a race whose loser is cancelled, a
 * cancel that travels up a chain, an error, and an await that times out. */
#include <weft.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static weft_thread_executor_t *workers[2];
static int failures;

static void expect(int cond, const char *what) {
  printf("  %-52s %s\n", what, cond ? "ok" : "UNEXPECTED");
  if (!cond)
    failures++;
}

/* Which thread are we on? Each worker sets a label when it starts. */
static _Thread_local const char *thread_label = "main";
static weft_result_t set_label(void *arg, weft_future_t *src) {
  (void)src;
  thread_label = arg;
  return weft_ok_int(0);
}

/* CPU work: count primes below n (arg), on whichever worker runs it. */
static weft_result_t count_primes(void *arg, weft_future_t *src) {
  (void)src;
  intptr_t n = (intptr_t)arg, count = 0;
  for (intptr_t i = 2; i < n; i++) {
    int prime = 1;
    for (intptr_t d = 2; d * d <= i && prime; d++)
      prime = i % d != 0;
    count += prime;
  }
  printf("  primes below %-7ld: %-6ld (computed on %s)\n", (long)n, (long)count,
         thread_label);
  return weft_ok_int(count);
}

static void on_cancel(void *arg) {
  printf("  producer \"%s\" heard the cancel and stops\n", (const char *)arg);
}

static weft_result_t add_one(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

/* Start work on a worker: a settled trigger, then the job as a continuation. */
static weft_future_t *run_on(int worker, weft_then_fn fn, void *arg) {
  weft_promise_t *p;
  weft_future_t *trigger, *job;
  if (weft_promise_create(&p, &trigger) != 0)
    exit(1);
  weft_promise_fulfil_int(p, 0);
  weft_promise_release(p);
  if (weft_future_then(trigger, weft_thread_executor_get(workers[worker]), fn,
                       arg, NULL, &job) != 0)
    exit(1);
  weft_future_release(trigger);
  return job;
}

int main(void) {
  static const char *labels[2] = {"worker-1", "worker-2"};
  for (int i = 0; i < 2; i++) {
    if (weft_thread_executor_create(&workers[i]) != 0)
      return 1;
    weft_future_t *f = run_on(i, set_label, (void *)labels[i]);
    weft_future_await(f, WEFT_FOREVER);
    weft_future_release(f);
  }

  printf("1. CPU work on two threads, joined with all():\n");
  weft_future_t *jobs[2] = {run_on(0, count_primes, (void *)(intptr_t)200000),
                            run_on(1, count_primes, (void *)(intptr_t)100000)};
  weft_future_t *both;
  weft_future_all(jobs, 2, &both);
  expect(weft_future_await(both, 10000) == 0 &&
             weft_future_state(both) == WEFT_FULFILLED,
         "all() fulfilled once both jobs finished");
  expect(weft_future_int(jobs[0]) == 17984 && weft_future_int(jobs[1]) == 9592,
         "both counts are right");
  weft_future_release(both);
  weft_future_release(jobs[0]);
  weft_future_release(jobs[1]);

  printf("2. A race: the first to settle wins, the loser is cancelled:\n");
  weft_promise_t *slow_p, *fast_p;
  weft_future_t *in[2], *race;
  weft_promise_create(&slow_p, &in[0]);
  weft_promise_create(&fast_p, &in[1]);
  weft_promise_on_cancel(slow_p, on_cancel, "slow lookup");
  weft_future_race(in, 2, &race);
  weft_future_release(in[0]); /* the race is now their only consumer */
  weft_future_release(in[1]);
  weft_promise_fulfil_int(fast_p, 7);
  expect(weft_future_int(race) == 7, "race took the fast answer, 7");
  expect(weft_promise_is_cancelled(slow_p) == 1, "slow producer was cancelled");
  weft_future_release(race);
  weft_promise_release(slow_p);
  weft_promise_release(fast_p);

  printf("3. Cancel travels up a chain to the producer:\n");
  weft_promise_t *p;
  weft_future_t *root, *step1, *step2;
  weft_promise_create(&p, &root);
  weft_promise_on_cancel(p, on_cancel, "download");
  weft_future_then(root, weft_executor_inline(), add_one, NULL, NULL, &step1);
  weft_future_then(step1, weft_executor_inline(), add_one, NULL, NULL, &step2);
  weft_future_release(root);
  weft_future_release(step1);
  expect(weft_future_cancel(step2) == 0, "cancelled the end of the chain");
  expect(weft_promise_is_cancelled(p) == 1, "the root producer saw it");
  expect(weft_promise_fulfil_int(p, 1) == WEFT_ECANCELED,
         "a late fulfil reports that it lost");
  weft_future_release(step2);
  weft_promise_release(p);

  printf("4. Errors are codes with names:\n");
  weft_promise_create(&p, &root);
  weft_promise_reject(p, WEFT_ECONNREFUSED);
  weft_future_then(root, weft_executor_inline(), add_one, NULL, NULL, &step1);
  printf("  rejected with %s (%s)\n", weft_error_name(weft_future_error(root)),
         weft_error_message(weft_future_error(root)));
  expect(weft_future_error(root) == WEFT_ECONNREFUSED, "the error is kept");
  weft_future_release(step1);
  weft_future_release(root);
  weft_promise_release(p);

  printf("5. Await with a timeout never hangs:\n");
  weft_promise_create(&p, &root);
  int64_t t0 = weft_clock_now_ns();
  int rc = weft_future_await(root, 50);
  printf("  await(50 ms) on a future nobody settles: %s after %ld ms\n",
         weft_error_name(rc), (long)((weft_clock_now_ns() - t0) / 1000000));
  expect(rc == WEFT_ETIMEDOUT, "timed out");
  weft_promise_release(p); /* abandoning the promise breaks it */
  expect(weft_future_error(root) == WEFT_EBROKEN, "abandoned promise: EBROKEN");
  weft_future_release(root);

  for (int i = 0; i < 2; i++)
    weft_thread_executor_shutdown(workers[i]);
  printf(failures ? "%d unexpected outcomes\n" : "every outcome as expected\n",
         failures);
  return failures ? 1 : 0;
}
