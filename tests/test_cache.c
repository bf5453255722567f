/* SPDX-License-Identifier: MIT */
/* tests/test_cache.c: the default allocator's small-block cache (per-thread
 * magazines, a shared depot, chunks in mapped regions) under the pattern it
 * exists for: blocks made on one thread and freed on another, threads that
 * exit holding cached blocks. Every block carries a pattern naming its
 * owner; a block handed out twice while alive, or written by the cache
 * while alive, breaks the pattern of one of its two owners. */
#include "testutil.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* weft__malloc/weft__free, the allocator every weft object comes from
 * (hidden in the shared library; the tests link the objects statically),
 * and WEFT__ASAN. */
#include "internal.h"
#if WEFT__ASAN
#include <sanitizer/lsan_interface.h>
#endif

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
  memset(boxes, 0, sizeof boxes); /* no stale pointers to cached blocks */
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
  memset(&br, 0, sizeof br); /* no stale pointers to cached blocks */
  long n_broken = atomic_load(&broken), n_made = atomic_load(&made),
       n_freed = atomic_load(&freed);
  EXPECT_EQ(n_broken, 0);
  EXPECT_EQ(n_freed, n_made);
  EXPECT_EQ(n_made, (long)SHORT_THREADS * (PER_THREAD + PER_THREAD / 3));
}

/* ---- the cache under AddressSanitizer ----
 * The cache is on in every build. Under ASan a block sitting in a
 * magazine or the depot is poisoned, and a block handed out is addressable
 * for the size asked only; a block the user never frees is still reported
 * by LeakSanitizer. In any build, a block freed is the next one handed out
 * on that thread (a magazine is a stack). */

enum { ASKED = 40, NMANY = 64 * 3 + 5 }; /* ASKED: in the 48-byte class */

static void *free_on_thread(void *arg) {
  void **bs = arg;
  for (int i = 0; i < NMANY; i++)
    weft__free(bs[i], ASKED);
  return NULL;
}

static void test_cached_blocks_poisoned(void) {
  char *b = weft__malloc(ASKED);
  REQUIRE_EQ(b != NULL, 1);
  memset(b, 0x5a, ASKED);
  weft__free(b, ASKED);
  EXPECT_EQ(tu_poisoned(b), WEFT__ASAN);
  EXPECT_EQ(tu_poisoned(b + ASKED - 1), WEFT__ASAN);
  char *again = weft__malloc(ASKED);
  EXPECT_TRUE(again == b); /* recycled by the cache, not by malloc */
  long bad = 0;
  for (int i = 0; i < ASKED; i++)
    bad += tu_poisoned(again + i);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(tu_poisoned(again + ASKED), WEFT__ASAN); /* past the size asked */
  weft__free(again, ASKED);

  /* Through full magazines, the depot and another thread: freed there,
   * every block is poisoned; handed out here again, none is. */
  static void *bs[NMANY];
  for (int i = 0; i < NMANY; i++) {
    bs[i] = weft__malloc(ASKED);
    REQUIRE_EQ(bs[i] != NULL, 1);
    memset(bs[i], i, ASKED);
  }
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, free_on_thread, bs), 0);
  pthread_join(t, NULL);
  long not_poisoned = 0, first_poisoned = 0, last_poisoned = 0, reused = 0;
  for (int i = 0; i < NMANY; i++)
    not_poisoned += !tu_poisoned(bs[i]);
  EXPECT_EQ(not_poisoned, WEFT__ASAN ? 0 : NMANY);
  static void *got[NMANY];
  for (int i = 0; i < NMANY; i++) {
    got[i] = weft__malloc(ASKED);
    REQUIRE_EQ(got[i] != NULL, 1);
    first_poisoned += tu_poisoned(got[i]);
    last_poisoned += tu_poisoned((char *)got[i] + ASKED - 1);
    for (int j = 0; j < NMANY; j++)
      reused += got[i] == bs[j];
  }
  EXPECT_EQ(first_poisoned, 0);
  EXPECT_EQ(last_poisoned, 0);
  /* the exiting thread's full magazines went to the depot, and came back */
  EXPECT_TRUE(reused >= 64);
  for (int i = 0; i < NMANY; i++)
    weft__free(got[i], ASKED);
  /* no stale pointers to cached blocks here (the next test leaks one) */
  memset(bs, 0, sizeof bs);
  memset(got, 0, sizeof got);
}

#if WEFT__ASAN
/* Leak one block with no pointer to it left in memory, so that only the
 * cache could still reach it: made on a thread that is gone by the check
 * (its stack and registers are not scanned), kept inverted (not an
 * address); the tests before cleared their copies. */
static uintptr_t hidden;
static void *leak_one(void *arg) {
  (void)arg;
  void *b = weft__malloc(ASKED);
  if (b != NULL)
    memset(b, 0, ASKED);
  weft__free(weft__malloc(ASKED), ASKED); /* into the slot b left */
  hidden = ~(uintptr_t)b;
  return NULL;
}
/* LeakSanitizer's verdict now, its report kept out of the test's output. */
static int leak_check_quiet(void) {
  fflush(stderr);
  int saved = dup(2), null = open("/dev/null", O_WRONLY);
  if (saved >= 0 && null >= 0)
    dup2(null, 2);
  int leaked = __lsan_do_recoverable_leak_check();
  if (saved >= 0) {
    dup2(saved, 2);
    close(saved);
  }
  if (null >= 0)
    close(null);
  return leaked;
}
#endif

static void test_leak_still_reported(void) {
#if WEFT__ASAN
  const char *opts = getenv("ASAN_OPTIONS");
  if (opts != NULL && strstr(opts, "detect_leaks=0") != NULL) {
    printf("\n    LeakSanitizer off (detect_leaks=0): not checked ");
    return;
  }
  EXPECT_EQ(leak_check_quiet(), 0); /* cached blocks are not leaks */
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, leak_one, NULL), 0);
  pthread_join(t, NULL);
  REQUIRE_EQ(hidden != ~(uintptr_t)0, 1);
  EXPECT_EQ(leak_check_quiet(), 1); /* a block the user dropped is one */
  weft__free((void *)~hidden, ASKED);
  EXPECT_EQ(leak_check_quiet(), 0);
#else
  printf("\n    (LeakSanitizer checks in the ASan build) ");
#endif
}

/* Regions (not used under ASan): a burst of blocks, freed, leaves its
 * regions mapped for the next burst, until they decay or are trimmed. */
enum { BURST = 200000, BURST_SIZE = 64 }; /* 12.8 MB: about 7 regions */

static void **burst_alloc(void) {
  void **v = malloc(BURST * sizeof *v);
  EXPECT_TRUE(v != NULL);
  for (int i = 0; i < BURST; i++) {
    v[i] = weft__malloc(BURST_SIZE);
    EXPECT_TRUE(v[i] != NULL);
    memset(v[i], 0x5a, BURST_SIZE);
  }
  return v;
}

static void burst_free(void **v) {
  for (int i = 0; i < BURST; i++)
    weft__free(v[i], BURST_SIZE);
  free(v);
}

static void test_burst_reuses_regions(void) {
  size_t mapped, idle, maps0, maps1, maps2;
  weft_allocator_trim();
  burst_free(burst_alloc());
  weft__alloc_regions(&mapped, &idle, &maps0);
  if (WEFT__ASAN) {
    EXPECT_EQ(maps0, 0);
    EXPECT_EQ(weft_allocator_trim(), 0);
    return;
  }
  EXPECT_TRUE(idle >= 5);    /* the burst's regions, minus the cached blocks' */
  burst_free(burst_alloc()); /* within the decay: on the same regions */
  weft__alloc_regions(&mapped, &idle, &maps1);
  EXPECT_EQ(maps1 - maps0, 0);
  size_t bytes = weft_allocator_trim();
  EXPECT_EQ(bytes, idle * ((size_t)2 << 20));
  weft__alloc_regions(&mapped, &idle, &maps2);
  EXPECT_EQ(idle, 0);
  EXPECT_EQ(weft_allocator_trim(), 0);
  burst_free(burst_alloc()); /* trimmed: it maps again */
  weft__alloc_regions(&mapped, &idle, &maps2);
  EXPECT_TRUE(maps2 - maps1 >= 5);
  weft_allocator_trim();
}

static void test_idle_regions_decay(void) {
  if (WEFT__ASAN)
    return;
  size_t mapped, idle, maps;
  weft__alloc_set_decay(0); /* idle for any time at all is too long */
  burst_free(burst_alloc());
  weft__alloc_regions(&mapped, &idle, &maps);
  weft__alloc_set_decay(1000000000);
  EXPECT_EQ(idle, 1); /* the newest stays for the next chunk */
  weft_allocator_trim();
}

static const test_case_t cases[] = {
    {"a burst's regions serve the next burst, until trimmed",
     test_burst_reuses_regions},
    {"idle regions are unmapped once idle too long", test_idle_regions_decay},
    {"cross-thread churn, every block intact and freed once",
     test_cross_thread_churn},
    {"threads exiting with cached blocks", test_thread_exit},
    {"cached blocks poisoned until handed out (ASan), reused",
     test_cached_blocks_poisoned},
    {"a dropped block is still a leak (LSan)", test_leak_still_reported},
    {NULL, NULL}};
const test_suite_t suite_cache = {"cache", cases};
