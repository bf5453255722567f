/* SPDX-License-Identifier: MIT */
/* samples/timers.c: the four things a server uses timers for, on one loop:
 * a timeout on an operation (weft_loop_timeout), a retry after a growing
 * delay (weft_retry_start), a heartbeat (a repeating timer) and a periodic
 * cleanup that expires idle sessions (another repeating timer). The
 * heartbeat and the cleanup run for the whole program, around the rest.
 * Prints what happens, with the time since start; exits non-zero if an
 * outcome is wrong. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <weft.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum {
  HEARTBEAT_MS = 100, /* ping the live sessions */
  CLEANUP_MS = 50,    /* look for idle sessions this often... */
  IDLE_MS = 250,      /* ...and expire those idle longer than this */
  RUN_MS = 700        /* how long the program runs in all */
};
#define MS 1000000LL /* ns */

static weft_loop_t *loop;
static weft_pool_t *pool;
static int64_t t_start;
static int failures;

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("  [+%3lld ms] ", (long long)((weft_clock_now_ns() - t_start) / MS));
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

static void expect(int cond, const char *what) {
  printf("  %-60s %s\n", what, cond ? "ok" : "WRONG");
  failures += !cond;
}

static void sleep_ms(int ms) { /* in pool jobs only, never on the loop */
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Drive the loop until f settles (a safety limit of 10 s). */
static int run_until(weft_future_t *f) {
  int rc = weft_loop_run_until(loop, f, 10000);
  if (rc != 0)
    printf("  run_until: %s\n", weft_error_name(rc));
  return rc;
}

/* ---- 3 and 4: the heartbeat and the cleanup, over a session table ---- */

typedef struct session {
  const char *name;
  int live;          /* answers pings */
  int64_t last_seen; /* ns */
  int present;
  int64_t idle_at_expiry;
} session_t;

static session_t sessions[] = {{"alice", 1, 0, 1, 0}, {"bob", 1, 0, 1, 0},
                               {"carol", 1, 0, 1, 0}, {"dave", 0, 0, 1, 0},
                               {"erin", 0, 0, 1, 0},  {"frank", 0, 0, 1, 0}};
enum { NSESSIONS = sizeof sessions / sizeof sessions[0] };

static weft_timer_t heartbeat, cleanup;
static int beats, expired;

static void on_heartbeat(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)arg;
  if (status != 0)
    return;
  int pinged = 0;
  for (int i = 0; i < NSESSIONS; i++)
    if (sessions[i].present && sessions[i].live) { /* and it answers */
      sessions[i].last_seen = weft_loop_now_ns(loop);
      pinged++;
    }
  say("heartbeat %d: %d live sessions answered", ++beats, pinged);
}

static void on_cleanup(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)arg;
  if (status != 0)
    return;
  int64_t now = weft_loop_now_ns(loop);
  for (int i = 0; i < NSESSIONS; i++) {
    session_t *s = &sessions[i];
    if (!s->present || now - s->last_seen <= IDLE_MS * MS)
      continue;
    s->present = 0;
    s->idle_at_expiry = now - s->last_seen;
    expired++;
    say("cleanup: expired session \"%s\", idle %lld ms", s->name,
        (long long)(s->idle_at_expiry / MS));
  }
}

/* ---- 1. timeouts ---- */

static weft_result_t quick_lookup(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  sleep_ms(5);
  return weft_ok_int(42);
}

/* A slow lookup that listens for the cancel, and tells the loop when it
 * stopped (a post: the loop thread is where we report from). */
static weft_promise_t *slow_stopped;
static void on_slow_stopped(weft_loop_t *l, void *arg, int status) {
  (void)l;
  if (status == 0)
    weft_promise_fulfil_int(slow_stopped, (intptr_t)arg);
}
static weft_result_t slow_lookup(weft_job_t *job, void *arg) {
  (void)arg;
  int64_t t0 = weft_clock_now_ns();
  for (int ms = 0; ms < 2000; ms += 5) {
    if (weft_job_is_cancelled(job)) {
      weft_loop_post(loop, on_slow_stopped,
                     (void *)(intptr_t)((weft_clock_now_ns() - t0) / MS));
      return weft_err(WEFT_ECANCELED);
    }
    sleep_ms(5);
  }
  return weft_ok_int(7);
}

static void on_lost_cancelled(void *arg) {
  (void)arg;
  say("  the lookup's producer heard the cancel");
}

/* Start `job` on the blocking threads with a timeout; returns the timeout's
 * future. Our own handle on the job goes at once: the timeout is then the
 * only one that needs it, so when time runs out the job is cancelled. */
static weft_future_t *with_timeout(weft_job_fn job, int64_t ms) {
  weft_future_t *f, *t;
  if (weft_pool_submit_blocking(pool, job, NULL, NULL, &f) != 0)
    exit(1);
  if (weft_loop_timeout(loop, f, ms, &t) != 0)
    exit(1);
  weft_future_release(f);
  return t;
}

static void timeouts(void) {
  printf("1. timeouts: weft_loop_timeout() on three lookups\n");

  say("lookup \"quick\" (a 5 ms job), 100 ms timeout");
  weft_future_t *t = with_timeout(quick_lookup, 100);
  run_until(t);
  say("  %s: %ld", weft_error_name(weft_future_error(t)),
      (long)weft_future_int(t));
  expect(weft_future_error(t) == 0 && weft_future_int(t) == 42,
         "the quick lookup answered in time");
  weft_future_release(t);

  weft_future_t *stopped;
  weft_promise_create(&slow_stopped, &stopped);
  say("lookup \"slow\" (a 2 s job), 100 ms timeout");
  t = with_timeout(slow_lookup, 100);
  int64_t t0 = weft_loop_now_ns(loop); /* what the 100 ms count from */
  run_until(t);
  int64_t waited = weft_clock_now_ns() - t0;
  say("  %s after %lld ms", weft_error_name(weft_future_error(t)),
      (long long)(waited / MS));
  expect(weft_future_error(t) == WEFT_ETIMEDOUT && waited >= 100 * MS,
         "the slow lookup timed out, not before 100 ms");
  weft_future_release(t);
  run_until(stopped); /* the job's post arrives */
  say("  the job saw the cancel and stopped after %ld ms of its 2000",
      (long)weft_future_int(stopped));
  expect(weft_future_state(stopped) == WEFT_FULFILLED &&
             weft_future_int(stopped) < 1000,
         "the timed-out job was cancelled and stopped early");
  weft_future_release(stopped);
  weft_promise_release(slow_stopped);

  say("lookup \"lost\" (a promise nobody settles), 50 ms timeout");
  weft_promise_t *p;
  weft_future_t *f;
  weft_promise_create(&p, &f);
  weft_promise_on_cancel(p, on_lost_cancelled, NULL);
  weft_loop_timeout(loop, f, 50, &t);
  weft_future_release(f);
  run_until(t);
  say("  %s", weft_error_name(weft_future_error(t)));
  expect(weft_future_error(t) == WEFT_ETIMEDOUT &&
             weft_promise_is_cancelled(p) == 1,
         "the lost lookup timed out and its producer was told");
  weft_future_release(t);
  weft_promise_release(p);
}

/* ---- 2. retry with backoff ---- */

static int64_t tried_at[8];

/* The backend refuses the first two connections (it is still starting). */
static weft_result_t connect_job(weft_job_t *job, void *arg) {
  (void)job;
  sleep_ms(2);
  return (intptr_t)arg < 3 ? weft_err(WEFT_ECONNREFUSED) : weft_ok_int(7);
}

/* One attempt: the connect, on the blocking threads. */
static weft_result_t connect_attempt(void *arg, unsigned attempt) {
  (void)arg;
  weft_future_t *job;
  tried_at[attempt] = weft_clock_now_ns();
  int err = weft_pool_submit_blocking(pool, connect_job,
                                      (void *)(intptr_t)attempt, NULL, &job);
  return err != 0 ? weft_err(err) : weft_follow(job);
}

static bool retry_after(void *arg, unsigned attempt, int err) {
  (void)arg;
  say("attempt %u: %s, retrying", attempt, weft_error_name(err));
  return true;
}

/* The whole retry is one future: five attempts at most, 20 ms after the
 * first failure, doubling (no jitter: one client, and exact delays to
 * check). */
static void retries(void) {
  printf("2. retry with backoff: connect is refused twice, then accepted\n");
  weft_retry_policy_t p = {.size = sizeof p,
                           .max_attempts = 5,
                           .jitter = WEFT_RETRY_JITTER_NONE,
                           .base_delay_ms = 20,
                           .should_retry = retry_after};
  weft_future_t *conn;
  if (weft_retry_start(weft_loop_executor(loop), &p, connect_attempt, NULL,
                       NULL, &conn) != 0)
    exit(1);
  run_until(conn);
  unsigned n = weft_retry_attempt_count(conn);
  say("attempt %u: %s (fd %ld)", n, weft_error_name(weft_future_error(conn)),
      (long)weft_future_int(conn));
  expect(weft_future_error(conn) == 0 && weft_future_int(conn) == 7 && n == 3,
         "connected on the third attempt");
  expect(tried_at[2] - tried_at[1] >= 20 * MS &&
             tried_at[3] - tried_at[2] >= 40 * MS,
         "waited 20 ms, then 40 ms, between attempts");
  weft_future_release(conn);
}

int main(void) {
  weft_pool_options_t po = {sizeof po, 1, 4, 0, {0}};
  if (weft_loop_create(NULL, &loop) != 0 || weft_pool_create(&po, &pool) != 0)
    return 1;
  t_start = weft_clock_now_ns();
  for (int i = 0; i < NSESSIONS;
       i++) /* silent ones: seen 30, 120, 210 ms ago */
    sessions[i].last_seen = t_start -
                            (sessions[i].live ? 0 : (i - 3) * 90 + 30) * MS;
  weft_timer_init(loop, &heartbeat, on_heartbeat, NULL);
  weft_timer_init(loop, &cleanup, on_cleanup, NULL);
  weft_timer_start(&heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  weft_timer_start(&cleanup, CLEANUP_MS, CLEANUP_MS);
  printf("a %d ms heartbeat and a %d ms cleanup (expiring sessions idle over "
         "%d ms) run throughout\n",
         HEARTBEAT_MS, CLEANUP_MS, IDLE_MS);

  timeouts();
  retries();

  printf("3./4. heartbeat and cleanup, until %d ms\n", RUN_MS);
  int64_t left = RUN_MS - (weft_clock_now_ns() - t_start) / MS;
  weft_future_t *rest;
  if (weft_loop_sleep(loop, left > 0 ? left : 0, &rest) != 0)
    return 1;
  run_until(rest);
  weft_future_release(rest);
  weft_timer_stop(&heartbeat);
  weft_timer_stop(&cleanup);
  int live = 0, early = 0;
  for (int i = 0; i < NSESSIONS; i++) {
    live += sessions[i].present && sessions[i].live;
    early += !sessions[i].present && sessions[i].idle_at_expiry <= IDLE_MS * MS;
  }
  /* Timers never fire early; late ones (a slow machine) mean fewer beats. */
  expect(beats >= 4 && beats <= RUN_MS / HEARTBEAT_MS,
         "the heartbeat beat every 100 ms (4 to 7 beats)");
  expect(expired == 3 && live == 3 && early == 0,
         "the 3 silent sessions expired, the 3 live ones stayed");

  weft_pool_shutdown(pool, WEFT_POOL_DRAIN, WEFT_FOREVER, NULL);
  weft_loop_close(loop);
  printf(failures ? "%d outcomes wrong\n" : "every outcome as expected\n",
         failures);
  return failures ? 1 : 0;
}
