/* SPDX-License-Identifier: MIT */
/* tests/test_abi.c: the public structs that may grow (options, allocator,
 * stats) keep their rules (docs/README.md, "Structs that grow"), their
 * sizes stay pinned, and every predicate returns bool. */
#include "testutil.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* A caller's options struct of any size: the real one, then more bytes. */
typedef struct {
  weft_pool_options_t o;
  unsigned char more[64];
} big_pool_options_t;

typedef struct {
  weft_loop_options_t o;
  unsigned char more[64];
} big_loop_options_t;

static void test_pool_options_size(void) {
  weft_pool_t *pool = NULL;
  big_pool_options_t b;
  memset(&b, 0, sizeof b);
  b.o.threads = 1;
  /* A caller of the first version: no reserved slots. */
  b.o.size = offsetof(weft_pool_options_t, reserved);
  REQUIRE_EQ(weft_pool_create(&b.o, &pool), 0);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  /* A caller of a later version whose new fields are zero: defaults. */
  b.o.size = sizeof b;
  REQUIRE_EQ(weft_pool_create(&b.o, &pool), 0);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
}

static void test_pool_options_unknown(void) {
  weft_pool_t *pool = NULL;
  big_pool_options_t b;
  memset(&b, 0, sizeof b);
  b.o.threads = 1;
  b.o.size = sizeof b;
  b.more[63] = 1; /* a later field this weft does not know */
  EXPECT_ERR(weft_pool_create(&b.o, &pool), WEFT_ENOTSUP);
  b.more[63] = 0;
  b.o.size = sizeof b.o;
  b.o.reserved[3] = &b;
  EXPECT_ERR(weft_pool_create(&b.o, &pool), WEFT_ENOTSUP);
  b.o.reserved[3] = NULL;
  b.o.size = 4097;
  EXPECT_ERR(weft_pool_create(&b.o, &pool), WEFT_EINVAL);
  b.o.size = 0; /* zero-initialised but for a field: size forgotten */
  EXPECT_ERR(weft_pool_create(&b.o, &pool), WEFT_EINVAL);
  EXPECT_TRUE(pool == NULL);
}

static void test_loop_options_size(void) {
  weft_loop_t *loop = NULL;
  big_loop_options_t b;
  memset(&b, 0, sizeof b);
  b.o.size = offsetof(weft_loop_options_t, reserved);
  REQUIRE_EQ(weft_loop_create(&b.o, &loop), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  b.o.size = sizeof b;
  REQUIRE_EQ(weft_loop_create(&b.o, &loop), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_loop_options_unknown(void) {
  weft_loop_t *loop = NULL;
  big_loop_options_t b;
  memset(&b, 0, sizeof b);
  b.o.size = sizeof b;
  b.more[0] = 1;
  EXPECT_ERR(weft_loop_create(&b.o, &loop), WEFT_ENOTSUP);
  b.more[0] = 0;
  b.o.size = sizeof b.o;
  b.o.reserved[0] = &b;
  EXPECT_ERR(weft_loop_create(&b.o, &loop), WEFT_ENOTSUP);
  b.o.reserved[0] = NULL;
  b.o.size = 4097;
  EXPECT_ERR(weft_loop_create(&b.o, &loop), WEFT_EINVAL);
  EXPECT_TRUE(loop == NULL);
}

static void *abi_alloc(void *ctx, size_t size) {
  (void)ctx;
  return malloc(size);
}

static void abi_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  (void)size;
  free(ptr);
}

static void test_allocator_reserved(void) {
  weft_allocator_t a = {abi_alloc, abi_release, NULL, {0}};
  a.reserved[1] = &a;
  EXPECT_ERR(weft_allocator_set(&a), WEFT_ENOTSUP);
  EXPECT_EQ(weft_allocator_set(NULL), 0);
}

/* A stats struct followed by a canary: the call fills the struct (its
 * reserved slots zero) and writes nothing past it. */
#define CANARY 0xa5

static void test_pool_stats_bounds(void) {
  weft_pool_t *pool = NULL;
  weft_pool_options_t o = {.size = sizeof o, .threads = 1};
  REQUIRE_EQ(weft_pool_create(&o, &pool), 0);
  struct {
    weft_pool_stats_t s;
    unsigned char after[32];
  } b;
  memset(&b, CANARY, sizeof b);
  EXPECT_EQ(weft_pool_stats(pool, &b.s), 0);
  EXPECT_EQ(b.s.threads, 1);
  EXPECT_EQ(b.s.reserved32, 0);
  for (size_t i = 0; i < 8; i++)
    EXPECT_EQ(b.s.reserved[i], 0);
  size_t spoiled = 0;
  for (size_t i = 0; i < sizeof b.after; i++)
    spoiled += b.after[i] != CANARY;
  EXPECT_EQ(spoiled, 0);
  memset(&b, CANARY, sizeof b);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, &b.s), 0);
  EXPECT_EQ(b.s.reserved[7], 0);
  EXPECT_EQ(b.after[0], CANARY);
}

static void test_loop_stats_bounds(void) {
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(NULL, &loop), 0);
  struct {
    weft_loop_stats_t s;
    unsigned char after[32];
  } b;
  memset(&b, CANARY, sizeof b);
  EXPECT_EQ(weft_loop_stats(loop, &b.s), 0);
  EXPECT_TRUE(b.s.backend != NULL);
  for (size_t i = 0; i < 8; i++)
    EXPECT_EQ(b.s.reserved[i], 0);
  size_t spoiled = 0;
  for (size_t i = 0; i < sizeof b.after; i++)
    spoiled += b.after[i] != CANARY;
  EXPECT_EQ(spoiled, 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The sizes a caller compiles into its own memory. A change here is an ABI
 * break: grow into the reserved room instead. */
static void test_sizes_pinned(void) {
#if UINTPTR_MAX == UINT64_MAX
  EXPECT_EQ(sizeof(weft_pool_options_t), 56);
  EXPECT_EQ(sizeof(weft_loop_options_t), 40);
  EXPECT_EQ(sizeof(weft_allocator_t), 56);
  EXPECT_EQ(sizeof(weft_pool_stats_t), 120);
  EXPECT_EQ(sizeof(weft_loop_stats_t), 152);
  EXPECT_EQ(sizeof(weft_timer_t), 56);
  EXPECT_EQ(sizeof(weft_io_t), 48);
  EXPECT_EQ(sizeof(weft_signal_t), 48);
  EXPECT_EQ(sizeof(weft_result_t), 24);
  EXPECT_EQ(sizeof(weft_task_t), 16);
  EXPECT_EQ(sizeof(weft_watch_t), 64);
#endif
}

#define IS_BOOL(e) _Generic((e), bool : 1, default : 0)

static void test_predicates_bool(void) {
  EXPECT_EQ(IS_BOOL(weft_promise_is_cancelled(NULL)), 1);
  EXPECT_EQ(IS_BOOL(weft_job_is_cancelled(NULL)), 1);
  EXPECT_EQ(IS_BOOL(weft_timer_is_active(NULL)), 1);
  EXPECT_EQ(IS_BOOL(weft_watch_is_active(NULL)), 1);
  /* NULL reads as false, never as a non-zero error code. */
  EXPECT_EQ(weft_promise_is_cancelled(NULL), false);
  EXPECT_EQ(weft_job_is_cancelled(NULL), false);
  EXPECT_EQ(weft_timer_is_active(NULL), false);
}

static const test_case_t cases[] = {
    {"pool options of another size", test_pool_options_size},
    {"pool options unknown bytes", test_pool_options_unknown},
    {"loop options of another size", test_loop_options_size},
    {"loop options unknown bytes", test_loop_options_unknown},
    {"allocator reserved slots", test_allocator_reserved},
    {"pool stats write no further", test_pool_stats_bounds},
    {"loop stats write no further", test_loop_stats_bounds},
    {"sizes pinned", test_sizes_pinned},
    {"predicates are bool", test_predicates_bool},
    {NULL, NULL}};
const test_suite_t suite_abi = {"abi", cases};
