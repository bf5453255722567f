/* SPDX-License-Identifier: MIT */
/* tests/runner.c: runs one CUnit suite by name (or all), exits non-zero on
 * any failure; also the counting allocator used by the suites.
 * Usage: weft_tests [suite [part of a test's name]]; a group name (the part
 * before '_', e.g. net or reactor) runs every suite of the group. */
#include "testutil.h"

#include "internal.h" /* WEFT__ASAN and, under it, the sanitizer's API */

#include <CUnit/Basic.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

extern const test_suite_t suite_error, suite_future, suite_then, suite_cancel,
    suite_combinators, suite_await, suite_race, suite_chain, suite_alloc,
    suite_cache, suite_pool, suite_reactor_run, suite_reactor_timer,
    suite_reactor_signal, suite_reactor_io, suite_reactor_close,
    suite_reactor_spin, suite_net_data, suite_net_errors, suite_net_accept,
    suite_net_cancel, suite_net_settle, suite_net_close, suite_net_queued,
    suite_net_spin, suite_chat, suite_lines, suite_api, suite_paths,
    suite_fault, suite_misuse, suite_stress, suite_model, suite_abi;
extern const test_suite_t suite_fiber_core, suite_fiber_await,
    suite_fiber_spawn, suite_fiber_cancel, suite_fiber_load, suite_scope;
extern const test_suite_t suite_runtime;
extern const test_suite_t suite_blocking, suite_fs, suite_fs_cancel, suite_dns;
extern const test_suite_t suite_stream;
extern const test_suite_t suite_net_deadline;
extern const test_suite_t suite_sync;
extern const test_suite_t suite_retry;
extern const test_suite_t suite_process;

/* clang-format off */
static const test_suite_t *const suites[] = {
    &suite_error,  &suite_future, &suite_then,  &suite_cancel, &suite_combinators,
    &suite_await,  &suite_race,   &suite_chain, &suite_alloc, &suite_cache, &suite_pool,
    &suite_reactor_run, &suite_reactor_timer, &suite_reactor_signal,
    &suite_reactor_io, &suite_reactor_close, &suite_reactor_spin,
    &suite_net_data, &suite_net_errors, &suite_net_accept, &suite_net_cancel,
    &suite_net_settle, &suite_net_close, &suite_net_queued, &suite_net_spin,
    &suite_net_deadline,
    &suite_api, &suite_paths, &suite_fault,
    &suite_misuse, &suite_stress, &suite_model, &suite_abi,
    &suite_fiber_core, &suite_fiber_await, &suite_fiber_spawn, &suite_fiber_cancel,
    &suite_fiber_load, &suite_scope, &suite_runtime
    , &suite_blocking, &suite_fs, &suite_fs_cancel, &suite_dns
    , &suite_stream, &suite_sync
    , &suite_retry, &suite_process
#ifdef WEFT_HAVE_CHAT
    , &suite_chat, &suite_lines
#endif
};
/* clang-format on */

/* ---- counting allocator ---- */
static _Atomic long n_allocs, n_live, live_bytes, peak_bytes, fail_at_n;

static void *tu_alloc(void *ctx, size_t size) {
  (void)ctx;
  long n = atomic_fetch_add(&n_allocs, 1) + 1;
  if (n == atomic_load(&fail_at_n))
    return NULL;
  void *p = malloc(size);
  if (p != NULL) {
    atomic_fetch_add(&n_live, 1);
    long b = atomic_fetch_add(&live_bytes, (long)size) + (long)size;
    long peak = atomic_load(&peak_bytes);
    while (b > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, b))
      ;
  }
  return p;
}

static void tu_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  atomic_fetch_sub(&n_live, 1);
  atomic_fetch_sub(&live_bytes, (long)size);
  free(ptr);
}

void tu_alloc_install(long fail_at) {
  atomic_store(&n_allocs, 0);
  atomic_store(&n_live, 0);
  atomic_store(&live_bytes, 0);
  atomic_store(&peak_bytes, 0);
  atomic_store(&fail_at_n, fail_at);
  weft_allocator_t a = {tu_alloc, tu_release, NULL, {0}};
  weft_allocator_set(&a);
}

void tu_alloc_restore(void) { weft_allocator_set(NULL); }
long tu_alloc_count(void) { return atomic_load(&n_allocs); }
long tu_alloc_live(void) { return atomic_load(&n_live); }
long tu_alloc_live_bytes(void) { return atomic_load(&live_bytes); }
long tu_alloc_peak_bytes(void) { return atomic_load(&peak_bytes); }

int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

bool tu_poisoned(const void *p) {
#if WEFT__ASAN
  return __asan_address_is_poisoned(p) != 0;
#else
  (void)p;
  return false;
#endif
}

/* Does `want` name suite s, or the group s belongs to (the part of its name
 * before '_': "net" names net_data, net_close, ...)? */
static bool wanted(const test_suite_t *s, const char *want) {
  size_t n = strlen(want);
  return strcmp(s->name, want) == 0 ||
         (strncmp(s->name, want, n) == 0 && s->name[n] == '_');
}

/* The suite's tests, or those whose name contains `only` (non-NULL). */
static int add_suite(const test_suite_t *s, const char *only) {
  CU_pSuite cs = CU_add_suite(s->name, NULL, NULL);
  if (cs == NULL)
    return -1;
  for (const test_case_t *c = s->cases; c->name != NULL; c++)
    if ((only == NULL || strstr(c->name, only) != NULL) &&
        CU_add_test(cs, c->name, c->fn) == NULL)
      return -1;
  return 0;
}

int main(int argc, char **argv) {
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  size_t n = sizeof(suites) / sizeof(suites[0]), added = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc > 1 && !wanted(suites[i], argv[1]))
      continue;
    if (add_suite(suites[i], argc > 2 ? argv[2] : NULL) != 0)
      return 2;
    added++;
  }
  if (added == 0) {
    fprintf(stderr, "no suite named %s\n", argc > 1 ? argv[1] : "(none)");
    CU_cleanup_registry();
    return 2;
  }
  /* WEFT_PERTURB=<seed>|random: any suite runs with schedule perturbation
   * (lib/testing.h); a WEFT_PERTURB=ON library may have turned it on. */
  if (!atomic_load(&weft__perturb_on))
    (void)weft__perturb_from_env("weft_tests");
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() +
                    CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
