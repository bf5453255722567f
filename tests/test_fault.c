/* SPDX-License-Identifier: MIT */
/* tests/test_fault.c: the SQLite-style fault driver. Each scenario of
 * fault_scenarios.c runs once clean with the seam recording which fault
 * sites (lib/testing.h) it reaches; then, for each call it reached and each
 * errno that call can really return (the table below), it runs again with
 * the N-th such call failing, once and (for exhausted resources)
 * persistently, for N = 1, 2, ... until a run completes without the fault
 * firing. Every run must end with each call's documented error or a
 * transparent retry, every future settled, no block left (a counting
 * allocator per run; LSan in the ASan build), and within its time bound
 * (a watchdog aborts a run stuck past it, naming scenario, call, N and
 * errno). Loop scenarios run on both backends. The summary names every
 * fault site the driver never reached or never made fail.
 *
 * The whole sweep runs in every build (a few seconds under gcc, well under
 * a minute under ASan or TSan). WEFT_FAULT_SCENARIO=<name> runs one
 * scenario only. */
#include "fault_scenarios.h"

#include "internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the errno table ----
 * Which errnos each call is failed with, and why the kernel can return
 * them there, which of them also persistently (an exhausted resource
 * stays exhausted), and which the library must hide entirely.
 * Left out on purpose: EAGAIN on a recv/accept/send of an edge-triggered
 * socket that was ready (the kernel never says so, and the lost edge
 * would hang legitimately), EINTR where the call never sleeps. */
typedef struct errtab {
  const char *call;
  int errs[6];
  unsigned persist; /* bit i: errs[i] also persistent */
  /* bit i: errs[i] must be invisible (retried, ignored, or the loop
   * falls back to epoll): as many steps end with an error as in the
   * clean run. */
  unsigned transparent;
} errtab_t;

static const errtab_t errtab[] = {
    /* weft__malloc/realloc: the allocator is out of memory. */
    {"alloc", {ENOMEM}, 1, 0},
    /* regions and ring maps: no memory, or the map count limit. */
    {"mmap", {ENOMEM}, 1, 0},
    /* MADV_POPULATE_WRITE: no memory to back it, or a signal came. */
    {"madvise", {ENOMEM, EINTR}, 0, 3},
    /* thread limit (RLIMIT_NPROC, threads-max). */
    {"pthread_create", {EAGAIN}, 1, 0},
    /* FUTEX_WAIT: the word changed first, or a signal: spurious wake. */
    {"futex", {EAGAIN, EINTR}, 0, 3},
    {"epoll_create1", {EMFILE, ENFILE, ENOMEM}, 1 | 4, 0},
    /* EPOLL_CTL_ADD/MOD/DEL: no memory for the item, or max_user_watches. */
    {"epoll_ctl", {ENOMEM, ENOSPC}, 1, 0},
    {"epoll_pwait2", {EINTR}, 0, 1},
    {"epoll_wait", {EINTR}, 0, 1},
    {"eventfd", {EMFILE, ENFILE, ENOMEM}, 1, 0},
    {"signalfd", {EMFILE, ENOMEM}, 1, 0},
    /* eventfd write: EAGAIN when the counter is full (the loop is awake
     * anyway); read of the eventfd or signalfd: nothing left (EAGAIN). */
    {"write", {EINTR, EAGAIN}, 0, 3},
    {"read", {EINTR, EAGAIN}, 0, 3},
    {"socket", {EMFILE, ENFILE, ENOBUFS, ENOMEM}, 1 | 8, 0},
    /* port 0 with every ephemeral port taken. */
    {"bind", {EADDRINUSE}, 0, 0},
    {"listen", {EADDRINUSE}, 0, 0},
    /* non-blocking connect: refused at once (loopback), no local port. */
    {"connect", {ECONNREFUSED, EADDRNOTAVAIL, EINTR}, 0, 4},
    /* SO_ERROR never fails in practice: ENOMEM only drives the branch
     * that makes a failed getsockopt the connect's error. */
    {"getsockopt", {ENOMEM}, 0, 0},
    /* (ENOTCONN only before the connect completed, which the loop asks
     * only after the socket reported writable: not injected.) ENOBUFS
     * drives the branch that makes a failed getpeername the connect's
     * error. */
    {"getpeername", {ENOBUFS}, 0, 0},
    /* (Never EINTR: a non-blocking accept does not sleep.) A connection
     * reset in the backlog (ECONNABORTED), out of fds or memory. */
    {"accept4", {ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM}, 2 | 16, 0},
    {"recv", {EINTR, ECONNRESET, ETIMEDOUT}, 0, 1},
    {"recvfrom", {EINTR, ECONNREFUSED, ENOMEM}, 0, 1},
    {"send", {EINTR, EPIPE, ECONNRESET, ENOBUFS}, 0, 1},
    {"sendto", {EINTR, ECONNREFUSED, ENOBUFS}, 0, 1},
    {"shutdown", {ENOTCONN}, 0, 0},
    /* TCP_NODELAY: EOPNOTSUPP is what a non-TCP socket answers. */
    {"setsockopt", {EOPNOTSUPP, ENOMEM}, 0, 0},
    /* no ring here (ENOSYS, EPERM by sysctl/seccomp), no memory/fd. */
    {"io_uring_setup", {ENOMEM, EMFILE, ENOSYS, EPERM}, 1 | 2, 15},
    /* a signal, no memory for the submission (EAGAIN), CQ overflow. */
    {"io_uring_enter", {EINTR, EAGAIN, EBUSY}, 0, 7},
    {"io_uring_register", {ENOMEM, EBUSY, EINTR}, 1, 4},
    /* a recv/send completion whose result the kernel reports failed. */
    /* (Not ENOBUFS: the ring says so only for a recv that took no bytes,
     * and the fault rewrites completions that carry some.) */
    {"cqe_recv", {ECONNRESET, ETIMEDOUT}, 0, 0},
    {"cqe_send", {EPIPE, ECONNRESET}, 0, 0},
};

static const errtab_t *errs_of(const char *call) {
  for (size_t i = 0; i < sizeof errtab / sizeof errtab[0]; i++)
    if (strcmp(errtab[i].call, call) == 0)
      return &errtab[i];
  return NULL;
}

/* ---- the scenario helpers (fault_scenarios.h) ---- */

void fx_bad(fx_t *x, int line, const char *fmt, ...) {
  if (x->bad++ == 0) {
    char m[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (line > 0)
      snprintf(x->why, sizeof x->why, "fault_scenarios.c:%d: %s", line, m);
    else /* the driver's own checks after the run */
      snprintf(x->why, sizeof x->why, "after the run: %s", m);
  }
}

/* Is rc among the allowed codes of ap (ended by 1)? A kernel call's own
 * errno may also come back, as the documented "code from the kernel";
 * EINTR and EAGAIN never may (retried inside). */
static bool allowed_code(const fx_t *x, int rc, va_list ap) {
  for (int a = va_arg(ap, int); a != 1; a = va_arg(ap, int))
    if (a == rc)
      return true;
  return x->err != 0 && strcmp(x->call, "alloc") != 0 &&
         rc == weft_error_from_errno(x->err) && x->err != EINTR &&
         x->err != EAGAIN;
}

bool fx_rc(fx_t *x, int line, const char *text, int rc, ...) {
  if (rc == 0)
    return true;
  va_list ap;
  va_start(ap, rc);
  bool ok = allowed_code(x, rc, ap);
  va_end(ap);
  if (ok)
    x->documented++;
  else
    fx_bad(x, line, "%s: returned %s", text, weft_error_name(rc));
  return false;
}

bool fx_out(fx_t *x, int line, const char *text, weft_future_t *f, ...) {
  int e = weft_future_error(f);
  if (e == 0)
    return true;
  va_list ap;
  va_start(ap, f);
  bool ok = e != WEFT_EPENDING && allowed_code(x, e, ap);
  va_end(ap);
  if (e == WEFT_EPENDING)
    fx_bad(x, line, "%s: still pending", text);
  else if (ok)
    x->documented++;
  else
    fx_bad(x, line, "%s: settled with %s", text, weft_error_name(e));
  return false;
}

weft_future_t *fx_track(fx_t *x, weft_future_t *f) {
  if (x->nfuts < FX_MAX_FUTS)
    x->futs[x->nfuts++] = f;
  else
    fx_bad(x, 0, "more than %d futures tracked", FX_MAX_FUTS);
  return f;
}

bool fx_run_until(fx_t *x, weft_loop_t *loop, weft_future_t *f, int line) {
  int rc = weft_loop_run_until(loop, f, FX_WAIT_MS);
  if (rc == WEFT_ETIMEDOUT) {
    fx_bad(x, line, "hang: future pending after %d ms", FX_WAIT_MS);
    return false;
  }
  return fx_rc(x, line, "weft_loop_run_until", rc, WEFT_ENOMEM, 1);
}

bool fx_await(fx_t *x, weft_future_t *f, int line) {
  int rc = weft_future_await(f, FX_WAIT_MS);
  if (rc == WEFT_ETIMEDOUT) {
    fx_bad(x, line, "hang: future pending after %d ms", FX_WAIT_MS);
    return false;
  }
  return fx_rc(x, line, "weft_future_await", rc, WEFT_ENOMEM, 1);
}

bool fx_loop(fx_t *x, weft_loop_t **out) {
  weft_loop_options_t o = {.size = sizeof o};
  return FX(x, weft_loop_create(&o, out), WEFT_ENOMEM, WEFT_EMFILE,
            WEFT_ENFILE);
}

void fx_loop_close(fx_t *x, weft_loop_t *loop) { FX(x, weft_loop_close(loop)); }

/* ---- the driver ---- */

static struct {
  _Atomic int64_t started_ns; /* 0: no run under way */
  char what[256];
  pthread_t th;
  _Atomic bool stop;
} g_dog;

static void *watchdog(void *arg) {
  (void)arg;
  const int64_t limit = (int64_t)4 * FX_WAIT_MS * 1000000;
  while (!atomic_load(&g_dog.stop)) {
    int64_t t0 = atomic_load(&g_dog.started_ns);
    if (t0 != 0 && weft_clock_now_ns() - t0 > limit) {
      fprintf(stderr, "\nfault: HANG (no return in %d ms): %s\n",
              4 * FX_WAIT_MS, g_dog.what);
      abort();
    }
    /* A poll, not synchronisation: only the time a stuck run is found. */
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static bool g_have_ring;
static unsigned long g_runs, g_fired_runs, g_bad_runs;
static int g_clean_documented; /* of the scenario's clean run */

static const char *backend_name(const fx_scenario_t *s, bool ring) {
  return !s->loop ? "-" : ring ? "io_uring" : "epoll";
}

/* One run. Returns the faults fired. */
static unsigned long run_once(const fx_scenario_t *s, bool ring,
                              const char *call, unsigned long n, int err,
                              bool persistent, bool transparent) {
  fx_t x;
  memset(&x, 0, sizeof x);
  x.scen = s->name;
  x.call = call;
  x.n = n;
  x.err = err;
  x.persistent = persistent;
  x.ring = ring;
  snprintf(g_dog.what, sizeof g_dog.what,
           "scenario %s backend %s call %s N %lu errno %s%s", s->name,
           backend_name(s, ring), call ? call : "(none)", n,
           err ? weft_error_name(-err) : "-", persistent ? " persistent" : "");
  if (s->loop) {
    if (ring)
      unsetenv("WEFT_IO_URING");
    else
      setenv("WEFT_IO_URING", "0", 1);
  }
  if (!s->default_alloc)
    tu_alloc_install(0);
  atomic_store(&g_dog.started_ns, weft_clock_now_ns());
  if (call != NULL)
    weft__fault_arm(call, n, err, persistent);
  s->run(&x);
  weft__fault_disarm();
  unsigned long fired = call != NULL ? weft__fault_fired() : 0;
  atomic_store(&g_dog.started_ns, 0);
  for (int i = 0; i < x.nfuts; i++) {
    if (weft_future_state(x.futs[i]) == WEFT_PENDING)
      fx_bad(&x, 0, "future #%d (of %d tracked) never settled", i, x.nfuts);
    weft_future_release(x.futs[i]);
  }
  if (!s->default_alloc) {
    long live = tu_alloc_live();
    tu_alloc_restore();
    if (live != 0)
      fx_bad(&x, 0, "%ld blocks leaked", live);
  }
  if (call == NULL)
    g_clean_documented = x.documented;
  else if (transparent && fired && x.documented != g_clean_documented &&
           x.bad == 0)
    fx_bad(&x, 0,
           "a fault the library must hide changed the outcome: "
           "%d steps ended with an error, %d in the clean run",
           x.documented, g_clean_documented);
  g_runs++;
  if (fired)
    g_fired_runs++;
  if (x.bad) {
    char m[900];
    snprintf(m, sizeof m, "%s: %s", g_dog.what, x.why);
    if (g_bad_runs++ < 40)
      fprintf(stderr, "\nfault: BREAK %s\n", m);
    CU_assertImplementation(CU_FALSE, __LINE__, m, __FILE__, "", CU_FALSE);
  }
  return fired;
}

/* The distinct calls whose sites a clean run of s reaches. */
static int calls_reached(const fx_scenario_t *s, bool ring, const char **calls,
                         int max) {
  weft__fsite_t *first;
  size_t ns = weft__fault_sites(&first);
  unsigned *before = calloc(ns ? ns : 1, sizeof *before);
  for (size_t i = 0; i < ns; i++)
    before[i] = atomic_load(&first[i].reached);
  weft__fault_record(true);
  run_once(s, ring, NULL, 0, 0, false, false);
  int nc = 0;
  for (size_t i = 0; i < ns; i++) {
    if (atomic_load(&first[i].reached) == before[i])
      continue;
    int k = 0;
    while (k < nc && strcmp(calls[k], first[i].call) != 0)
      k++;
    if (k == nc && nc < max)
      calls[nc++] = first[i].call;
  }
  free(before);
  return nc;
}

static void sweep(const fx_scenario_t *s, bool ring) {
  const char *calls[64];
  int nc = calls_reached(s, ring, calls, 64);
  for (int c = 0; c < nc; c++) {
    if (s->default_alloc && strcmp(calls[c], "alloc") == 0)
      continue; /* tens of thousands of N: the other scenarios cover it */
    const errtab_t *t = errs_of(calls[c]);
    if (t == NULL) {
      CU_assertImplementation(CU_FALSE, __LINE__, calls[c], __FILE__,
                              "fault call missing from the errno table",
                              CU_FALSE);
      continue;
    }
    for (int e = 0; e < 6 && t->errs[e] != 0; e++)
      for (int pers = 0; pers < 2; pers++) {
        if (pers && !(t->persist & (1u << e)))
          continue;
        for (unsigned long n = 1; n < 100000; n++)
          if (run_once(s, ring, calls[c], n, t->errs[e], pers,
                       (t->transparent >> e) & 1) == 0)
            break;
      }
  }
}

static void test_fault_sweep(void) {
  /* Is there a ring here at all? */
  {
    unsetenv("WEFT_IO_URING");
    weft_loop_t *l;
    weft_loop_options_t o = {.size = sizeof o};
    weft_loop_stats_t st;
    if (weft_loop_create(&o, &l) == 0) {
      weft_loop_stats(l, &st);
      g_have_ring = strcmp(st.backend, "io_uring") == 0;
      weft_loop_close(l);
    }
  }
  /* The one public call the scenarios leave to tu_alloc_install. */
  weft_allocator_t half = {NULL, NULL, NULL, {0}};
  EXPECT_EQ(weft_allocator_set(&half), WEFT_EINVAL);
  pthread_create(&g_dog.th, NULL, watchdog, NULL);
  const char *only = getenv("WEFT_FAULT_SCENARIO");
  for (int i = 0; i < fx_nscenarios; i++) {
    const fx_scenario_t *s = &fx_scenarios[i];
    if (only != NULL && strcmp(only, s->name) != 0)
      continue;
    int64_t t0 = weft_clock_now_ns();
    unsigned long r0 = g_runs;
    if (s->loop && g_have_ring)
      sweep(s, true);
    sweep(s, false);
    printf("\n  fault: scenario %-16s %6lu runs %6.2f s", s->name, g_runs - r0,
           (double)(weft_clock_now_ns() - t0) / 1e9);
  }
  unsetenv("WEFT_IO_URING");
  weft__fault_record(false);
  atomic_store(&g_dog.stop, true);
  pthread_join(g_dog.th, NULL);

  weft__fsite_t *first;
  size_t ns = weft__fault_sites(&first), reached = 0, failed = 0;
  size_t lib = 0;
  for (size_t i = 0; i < ns; i++) {
    if (strstr(first[i].file, "/tests/") != NULL)
      continue; /* the suites' own weft__malloc calls */
    lib++;
    reached += atomic_load(&first[i].reached) != 0;
    failed += atomic_load(&first[i].failed) != 0;
  }
  printf("\n  fault: %zu sites, %zu reached, %zu made to fail; %lu runs, "
         "%lu with a fault fired, %lu broke (io_uring %s)\n",
         lib, reached, failed, g_runs, g_fired_runs, g_bad_runs,
         g_have_ring ? "and epoll" : "absent: epoll only");
  for (size_t i = 0; i < ns; i++)
    if (atomic_load(&first[i].failed) == 0 &&
        strstr(first[i].file, "/tests/") == NULL)
      printf("  fault: %s %s:%d %s\n",
             atomic_load(&first[i].reached) ? "never failed" : "unreached   ",
             first[i].file, first[i].line, first[i].call);
  EXPECT_EQ(g_bad_runs, 0);
}

/* A watch whose block the allocator places right where its source's
 * watch room would be, had the source one (found by the sweep under
 * TSan, whose allocator puts blocks of one size class back to back
 * without headers): the watch must still be freed. The allocator here
 * places the second block at exactly that address. */
enum { ADJ_FAR = 1024 };
static _Alignas(64) unsigned char adj_arena[4096];
static size_t adj_next;
static size_t adj_first; /* size of the first block */
static long adj_live, adj_count;
static void *adj_alloc(void *ctx, size_t n) {
  (void)ctx;
  size_t at = adj_count == 0   ? 0
              : adj_count == 1 ? offsetof(weft__ext_ws_t, slot)
                               : adj_next;
  if (adj_count == 0) {
    adj_next = ADJ_FAR;
    adj_first = n;
  }
  if (at >= ADJ_FAR)
    adj_next += (n + 63) & ~(size_t)63;
  if (adj_next > sizeof adj_arena)
    return NULL;
  adj_count++;
  adj_live++;
  return adj_arena + at;
}
static void adj_release(void *ctx, void *p, size_t n) {
  (void)ctx;
  (void)p;
  (void)n;
  adj_live--;
}
static void adj_watched(void *arg, weft_future_t *f) {
  (void)f;
  ++*(int *)arg;
}

static void test_watch_next_to_source(void) {
  weft_allocator_t a = {adj_alloc, adj_release, NULL, {0}};
  adj_live = adj_count = 0;
  REQUIRE_EQ(weft_allocator_set(&a), 0);
  weft_promise_t *p = NULL;
  weft_future_t *f = NULL;
  int ran = 0;
  REQUIRE_EQ(weft_promise_create(&p, &f), 0);
  REQUIRE_EQ(adj_count, 1); /* the pair: one block at the arena's start */
  REQUIRE_EQ(adj_first <= offsetof(weft__ext_ws_t, slot), 1); /* no overlap */
  EXPECT_EQ(weft_future_watch(f, weft_executor_inline(), adj_watched, &ran,
                              NULL),
            0); /* takes the handle; its block is the second */
  EXPECT_EQ(adj_count, 2);
  EXPECT_EQ(weft_promise_reject(p, WEFT_EIO), 0);
  EXPECT_EQ(weft_promise_release(p), 0);
  EXPECT_EQ(ran, 1);
  EXPECT_EQ(adj_live, 0);
  weft_allocator_set(NULL);
}

static const test_case_t cases[] = {
    {"a watch next to its source is freed", test_watch_next_to_source},
    {"every fault at every reached site", test_fault_sweep},
    {NULL, NULL},
};

const test_suite_t suite_fault = {"fault", cases};
