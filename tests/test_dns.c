/* SPDX-License-Identifier: MIT */
/* tests/test_dns.c: name lookups (weft/dns.h) without the network:
 * numeric hosts, "localhost", a name from /etc/hosts, a service name, a
 * name that cannot resolve (.invalid, bounded), cancel before and during
 * the lookup, the loop's close, misuse and allocation failures. */
#include "fs_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static const weft_addr_list_t *resolve(weft_loop_t *loop, const char *host,
                                       const char *service, int family,
                                       weft_future_t **f, int *err) {
  weft_dns_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.family = family;
  *err = weft_dns_resolve(loop, host, service, &o, f);
  if (*err != 0)
    return NULL;
  *err = fs_settle(loop, *f);
  return *err == 0 ? weft_future_value(*f) : NULL;
}

static void test_numeric(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f = NULL;
  int err;
  const weft_addr_list_t *l = resolve(loop, "127.0.0.1", "8080", 0, &f, &err);
  REQUIRE_EQ(err, 0);
  REQUIRE_EQ(l->count, 1);
  EXPECT_EQ(l->addrs[0].ss.ss_family, AF_INET);
  EXPECT_EQ(weft_addr_port(&l->addrs[0]), 8080);
  char s[64];
  EXPECT_EQ(weft_addr_format(&l->addrs[0], s, sizeof s), 0);
  EXPECT_STREQ(s, "127.0.0.1:8080");
  weft_future_release(f);
  l = resolve(loop, "::1", NULL, 0, &f, &err);
  REQUIRE_EQ(err, 0);
  REQUIRE_EQ(l->count, 1);
  EXPECT_EQ(l->addrs[0].ss.ss_family, AF_INET6);
  EXPECT_EQ(weft_addr_port(&l->addrs[0]), 0);
  weft_future_release(f);
  /* a numeric IPv4 host asked for as IPv6 only: no such address */
  EXPECT_TRUE(resolve(loop, "127.0.0.1", "80", AF_INET6, &f, &err) == NULL);
  EXPECT_ERR(err, WEFT_EAI_NONAME);
  weft_future_release(f);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_names(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f = NULL;
  int err;
  const weft_addr_list_t *l = resolve(loop, "localhost", "http", 0, &f, &err);
  REQUIRE_EQ(err, 0);
  EXPECT_TRUE(l->count >= 1);
  for (size_t i = 0; i < l->count; i++) {
    EXPECT_EQ(weft_addr_port(&l->addrs[i]), 80);
    for (size_t j = 0; j < i; j++) /* no repeats */
      EXPECT_TRUE(memcmp(&l->addrs[i], &l->addrs[j], sizeof l->addrs[i]) != 0);
  }
  weft_future_release(f);
  l = resolve(loop, "localhost", "443", AF_INET, &f, &err);
  REQUIRE_EQ(err, 0);
  for (size_t i = 0; i < l->count; i++)
    EXPECT_EQ(l->addrs[i].ss.ss_family, AF_INET);
  weft_future_release(f);
  /* a service that does not exist */
  EXPECT_TRUE(resolve(loop, "127.0.0.1", "no-such-service-xyz", 0, &f, &err) ==
              NULL);
  EXPECT_ERR(err, WEFT_EAI_NONAME);
  weft_future_release(f);
  /* a name that cannot resolve: no such host, or, without a reachable
   * name server, a temporary failure (bounded by BOUND_MS either way) */
  EXPECT_TRUE(resolve(loop, "no-such-host.invalid", "80", 0, &f, &err) == NULL);
  EXPECT_TRUE(err == WEFT_EAI_NONAME || err == WEFT_EAI_AGAIN);
  weft_future_release(f);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Cancelled before the lookup starts (its one thread is held by a gate):
 * settled at once; the lookup never runs. During the lookup: settled at
 * once; the result is freed when getaddrinfo returns (ASan checks). */
static void test_cancel(void) {
  weft_thread_executor_t *te = NULL;
  REQUIRE_EQ(weft_thread_executor_create(&te), 0);
  weft_loop_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.size = sizeof lo;
  lo.blocking = weft_thread_executor_get(te);
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(&lo, &loop), 0);
  tu_gate_t g = TU_GATE_INIT;
  tu_gate_task_t gt = {{NULL, tu_gate_run}, &g};
  REQUIRE_EQ(weft_executor_submit(lo.blocking, &gt.task), 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_dns_resolve(loop, "localhost", "80", NULL, &f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(f), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_CANCELLED);
  weft_future_release(f);
  tu_gate_open(&g);
  /* during the lookup (some of these land mid-getaddrinfo) */
  for (int i = 0; i < 200; i++) {
    REQUIRE_EQ(weft_dns_resolve(loop, "localhost", "80", NULL, &f), 0);
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
    int rc = weft_future_cancel(f);
    EXPECT_TRUE(rc == 0 || rc == WEFT_EALREADY);
    EXPECT_TRUE(weft_future_state(f) != WEFT_PENDING);
    weft_future_release(f);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(weft_thread_executor_shutdown(te), 0);
}

/* From another thread, while the lookup runs: settled when cancel returns. */
static void *cancel_main(void *arg) {
  weft_future_cancel(arg);
  return NULL;
}

static void test_cancel_other_thread(void) {
  weft_pool_t *pool;
  weft_loop_t *loop = fs_pool_loop(&pool);
  for (int i = 0; i < 50; i++) {
    weft_future_t *f = NULL;
    REQUIRE_EQ(weft_dns_resolve(loop, "localhost", NULL, NULL, &f), 0);
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, cancel_main, f), 0);
    pthread_join(th, NULL);
    EXPECT_TRUE(weft_future_state(f) != WEFT_PENDING);
    weft_future_release(f);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
}

static void on_done(void *arg, weft_future_t *f) {
  int *n = arg;
  n[0]++;
  int e = weft_future_error(f);
  /* (a lookup whose result was already on its way to the loop when close
   * began is delivered: close runs what other threads queued) */
  n[1] += e == WEFT_ECANCELED || e == 0;
}

/* The loop's close settles pending lookups (cancelled, or delivered when
 * the result was already queued) and runs their continuations; it does
 * not wait for the lookups themselves. */
static void test_loop_close(void) {
  weft_pool_t *pool;
  weft_loop_t *loop = fs_pool_loop(&pool);
  int n[2] = {0, 0};
  for (int i = 0; i < 10; i++) {
    weft_future_t *f = NULL;
    REQUIRE_EQ(weft_dns_resolve(loop, "localhost", "80", NULL, &f), 0);
    REQUIRE_EQ(weft_future_watch(f, weft_loop_executor(loop), on_done, n, NULL),
               0);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(n[0], 10);
  EXPECT_EQ(n[1], 10);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
}

static void *from_other(void *arg) {
  weft_future_t *f = NULL;
  return (void *)(intptr_t)weft_dns_resolve(arg, "localhost", NULL, NULL, &f);
}

static void test_misuse(void) {
  weft_loop_t *loop = new_loop();
  weft_future_t *f = (weft_future_t *)&f, *keep = f;
  EXPECT_ERR(weft_dns_resolve(NULL, "localhost", NULL, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_dns_resolve(loop, NULL, NULL, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_dns_resolve(loop, "", NULL, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_dns_resolve(loop, "localhost", NULL, NULL, NULL),
             WEFT_EINVAL);
  weft_dns_options_t o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.family = AF_UNIX;
  EXPECT_ERR(weft_dns_resolve(loop, "localhost", NULL, &o, &f), WEFT_EINVAL);
  o.family = 0;
  o.reserved[1] = &o;
  EXPECT_ERR(weft_dns_resolve(loop, "localhost", NULL, &o, &f), WEFT_ENOTSUP);
  o.reserved[1] = NULL;
  o.size = 4;
  EXPECT_ERR(weft_dns_resolve(loop, "localhost", NULL, &o, &f), WEFT_EINVAL);
  EXPECT_TRUE(f == keep);
  pthread_t th;
  void *rc;
  REQUIRE_EQ(pthread_create(&th, NULL, from_other, loop), 0);
  pthread_join(th, &rc);
  EXPECT_ERR((int)(intptr_t)rc, WEFT_EPERM);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Each allocation fails in turn, the result's on the blocking thread too:
 * the call returns WEFT_ENOMEM or the future rejects with it; no leak. */
static void test_alloc_failures(void) {
  long total = 0;
  int enomem = 0;
  for (long k = 0; k == 0 || k <= total; k++) {
    tu_alloc_install(k);
    weft_loop_t *loop = NULL;
    int rc = weft_loop_create(NULL, &loop);
    if (rc == 0) {
      weft_future_t *f = NULL;
      rc = weft_dns_resolve(loop, "127.0.0.1", "80", NULL, &f);
      if (rc == 0) {
        rc = fs_settle(loop, f);
        weft_future_release(f);
      }
      EXPECT_EQ(weft_loop_close(loop), 0);
    }
    EXPECT_TRUE(rc == 0 || rc == WEFT_ENOMEM);
    enomem += rc == WEFT_ENOMEM;
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (tu_alloc_live() != 0 && weft_clock_now_ns() < end)
      sched_yield(); /* a lookup's thread ends by itself after close */
    if (k == 0)
      total = tu_alloc_count();
    EXPECT_EQ(tu_alloc_live(), 0);
    tu_alloc_restore();
  }
  EXPECT_TRUE(enomem > 0);
}

static const test_case_t cases[] = {
    {"numeric hosts", test_numeric},
    {"localhost, services, a name that cannot resolve", test_names},
    {"cancel before and during the lookup", test_cancel},
    {"cancel from another thread", test_cancel_other_thread},
    {"loop close cancels pending lookups", test_loop_close},
    {"misuse: NULL, bad options, another thread", test_misuse},
    {"allocation failures: ENOMEM, no leak", test_alloc_failures},
    {NULL, NULL}};
const test_suite_t suite_dns = {"dns", cases};
