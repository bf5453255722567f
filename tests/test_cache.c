/* SPDX-License-Identifier: MIT */
/* tests/test_cache.c: the default allocator's small-block cache (per-thread
 * magazines, a shared depot, chunks in mapped regions) under the pattern it
 * exists for: blocks made on one thread and freed on another, threads that
 * exit holding cached blocks. Every block carries a pattern naming its
 * owner; a block handed out twice while alive, or written by the cache
 * while alive, breaks the pattern of one of its two owners. */
#include "testutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* lib/internal.h: the allocator every weft object comes from (hidden in
 * the shared library; the tests link the objects statically). */
void *weft__malloc(size_t size);
void weft__free(void *ptr, size_t size);

enum { THREADS = 4, OPS = 50000, LIVE = 512, BOX = 1024 };

/* Sizes across every class, with each edge around 16, 48, 112 and 256 (257
 * and up bypass the cache) */
static const size_t sizes[] = {1,   8,   15,  16,  17,  31,  32,  33,  48,
                               49,  64,  100, 112, 113, 128, 160, 200, 255,
                               256, 257, 300, 24,  40,  56,  72,  96};
#define NSIZES (sizeof sizes / sizeof sizes[0])

typedef struct blk {
  void *p;
  size_t size;
  uint64_t tag;
} blk_t;

static uint8_t byte_of(uint64_t tag, size_t i) {
  uint64_t x = tag * 0x9E3779B97F4A7C15u + i;
  return (uint8_t)(x ^ (x >> 29));
}

static void fill(blk_t *b) {
  uint8_t *m = b->p;
  for (size_t i = 0; i < b->size; i++)
    m[i] = byte_of(b->tag, i);
}

static bool intact(const blk_t *b) {
  const uint8_t *m = b->p;
  for (size_t i = 0; i < b->size; i++)
    if (m[i] != byte_of(b->tag, i))
      return false;
  return true;
}

static _Atomic long made, freed, broken;

static bool make(blk_t *b, size_t size, uint64_t tag) {
  b->p = weft__malloc(size);
  if (b->p == NULL)
    return false;
  b->size = size;
  b->tag = tag;
  fill(b);
  atomic_fetch_add(&made, 1);
  return true;
}

static void unmake(const blk_t *b) {
  if (!intact(b))
    atomic_fetch_add(&broken, 1);
  weft__free(b->p, b->size);
  atomic_fetch_add(&freed, 1);
}

/* A mailbox per thread: other threads leave blocks for it to free. */
typedef struct box {
  pthread_mutex_t mu;
  blk_t items[BOX];
  int n;
} box_t;

static box_t boxes[THREADS];

static bool post(int to, const blk_t *b) {
  box_t *x = &boxes[to];
  pthread_mutex_lock(&x->mu);
  bool ok = x->n < BOX;
  if (ok)
    x->items[x->n++] = *b;
  pthread_mutex_unlock(&x->mu);
  return ok;
}

static void drain(int me) {
  box_t *x = &boxes[me];
  blk_t got[BOX];
  pthread_mutex_lock(&x->mu);
  int n = x->n;
  memcpy(got, x->items, (size_t)n * sizeof *got);
  x->n = 0;
  pthread_mutex_unlock(&x->mu);
  for (int i = 0; i < n; i++)
    unmake(&got[i]);
}

static _Atomic int finished;

static void *churn(void *arg) {
  int me = (int)(intptr_t)arg;
  blk_t live[LIVE];
  int nlive = 0;
  uint64_t rng = 0x2545F4914F6CDD1Du * (uint64_t)(me + 1);
  for (long op = 0; op < OPS; op++) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    blk_t b;
    if (!make(&b, sizes[rng % NSIZES], ((uint64_t)me << 48) | (uint64_t)op)) {
      atomic_fetch_add(&broken, 1); /* the default allocator had no memory */
      break;
    }
    /* half go to the next thread, to be freed there */
    bool posted = (rng >> 8) % 2 == 0 && post((me + 1) % THREADS, &b);
    if (!posted && nlive < LIVE)
      live[nlive++] = b;
    else if (!posted)
      unmake(&b);
    if (nlive == LIVE || (rng >> 16) % 64 == 0) { /* free a random half */
      for (int i = 0; i < nlive;) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if (rng % 2) {
          unmake(&live[i]);
          live[i] = live[--nlive];
        } else {
          i++;
        }
      }
    }
    if (op % 64 == 0)
      drain(me);
  }
  for (int i = 0; i < nlive; i++)
    unmake(&live[i]);
  /* keep emptying our box until every thread stopped posting to it */
  atomic_fetch_add(&finished, 1);
  while (atomic_load(&finished) < THREADS) {
    drain(me);
    sched_yield();
  }
  drain(me);
  return NULL;
}

static void test_cross_thread_churn(void) {
  atomic_store(&made, 0);
  atomic_store(&freed, 0);
  atomic_store(&broken, 0);
  atomic_store(&finished, 0);
  for (int i = 0; i < THREADS; i++) {
    pthread_mutex_init(&boxes[i].mu, NULL);
    boxes[i].n = 0;
  }
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    REQUIRE_EQ(pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < THREADS; i++) { /* posted after the owner's last look */
    drain(i);
    pthread_mutex_destroy(&boxes[i].mu);
  }
  long n_broken = atomic_load(&broken), n_made = atomic_load(&made),
       n_freed = atomic_load(&freed);
  EXPECT_EQ(n_broken, 0);
  EXPECT_EQ(n_made, (long)THREADS * OPS);
  EXPECT_EQ(n_freed, n_made);
}

/* ---- threads that exit with blocks cached, and blocks outliving them ---- */

enum { SHORT_THREADS = 50, PER_THREAD = 300 };

typedef struct brief {
  blk_t given[PER_THREAD / 3]; /* made by main, freed by the thread */
  blk_t left[PER_THREAD / 2];  /* made by the thread, freed by main after */
  int nleft;
  int index;
} brief_t;

static void *short_lived(void *arg) {
  brief_t *br = arg;
  blk_t mine[PER_THREAD];
  int n = 0;
  for (int i = 0; i < PER_THREAD; i++)
    if (make(&mine[n], sizes[(size_t)(i + br->index) % NSIZES],
             ((uint64_t)(100 + br->index) << 48) | (uint64_t)i))
      n++;
  for (int i = 0; i < PER_THREAD / 3; i++)
    unmake(&br->given[i]); /* main's blocks into this thread's cache */
  br->nleft = 0;
  for (int i = 0; i < n; i++) {
    if (i % 2 == 0 && br->nleft < PER_THREAD / 2)
      br->left[br->nleft++] = mine[i];
    else
      unmake(&mine[i]); /* stays cached here until the thread exits */
  }
  return NULL;
}

static void test_thread_exit(void) {
  atomic_store(&made, 0);
  atomic_store(&freed, 0);
  atomic_store(&broken, 0);
  static brief_t br;
  for (int t = 0; t < SHORT_THREADS; t++) {
    br.index = t;
    for (int i = 0; i < PER_THREAD / 3; i++)
      REQUIRE_EQ(make(&br.given[i], sizes[(size_t)i % NSIZES],
                      ((uint64_t)(200 + t) << 48) | (uint64_t)i),
                 true);
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, short_lived, &br), 0);
    pthread_join(th, NULL);
    /* the thread is gone; its blocks are still ours to read and free */
    for (int i = 0; i < br.nleft; i++)
      unmake(&br.left[i]);
    EXPECT_EQ(br.nleft, PER_THREAD / 2);
  }
  long n_broken = atomic_load(&broken), n_made = atomic_load(&made),
       n_freed = atomic_load(&freed);
  EXPECT_EQ(n_broken, 0);
  EXPECT_EQ(n_freed, n_made);
  EXPECT_EQ(n_made, (long)SHORT_THREADS * (PER_THREAD + PER_THREAD / 3));
}

static const test_case_t cases[] = {
    {"cross-thread churn, every block intact and freed once",
     test_cross_thread_churn},
    {"threads exiting with cached blocks", test_thread_exit},
    {NULL, NULL}};
const test_suite_t suite_cache = {"cache", cases};
