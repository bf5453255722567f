/* SPDX-License-Identifier: MIT */
/* lib/alloc.c: the replaceable allocator behind weft__malloc/weft__free, and
 * the small-block cache in front of the default one (its memory comes from
 * region.c).
 *
 * Why a cache: weft's hot objects (a future pair, a then-state, a pool job,
 * a loop operation) are small, fixed-size, and typically made on one thread
 * and freed on another (a submitter allocates, a worker frees), which
 * glibc's malloc handles badly (docs/design/alloc.md). So blocks of up to
 * CLASS_MAX bytes are kept per thread, per 16-byte size class, in two
 * magazines (arrays) of up to MAG blocks; full magazines move
 * whole, in O(1), to a per-class depot shared by all threads under a mutex,
 * and a thread whose magazines are empty swaps one for a full one from the
 * depot. The mutex is taken once per MAG blocks. Blocks are carved from
 * chunks (region.c); the depot is bounded, and beyond it blocks are
 * abandoned to their chunk, which goes back to its region with its last
 * block. A thread's magazines return to the depot when it exits.
 *
 * The cache sits only in front of the default allocator: with a user
 * allocator set, every block goes to it and back (so its counts stay exact).
 *
 * Under AddressSanitizer the cache stays on, so the sanitizer runs check the
 * magazines and depot users run, with three changes that keep ASan's and
 * LeakSanitizer's reports: each block is its own malloc'd allocation of its
 * class size instead of a slice of a chunk (ASan puts redzones around it,
 * LSan tracks it; chunks and regions are not used); a block is poisoned
 * while it sits in a magazine or the depot, and handed out unpoisoned for
 * the size asked only (a use after free of a cached block, or a write past
 * the size asked, is reported); and a magazine slot is cleared when its
 * block is handed out, so that a block the user never frees is not
 * reachable from a stale slot: LSan reports it, while blocks still cached
 * at exit are reachable from their magazine and are not leaks. (The stack
 * ASan shows for a block is where it was first malloc'd, which for a
 * recycled block may be an earlier user's.)
 */
#define _GNU_SOURCE        /* MAP_ANONYMOUS */
#define WEFT__ALLOC_IMPL 1 /* the definitions below, not the fault sites */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum {
  CLASS_SHIFT = 4, /* 16-byte classes */
  CLASS_MAX = 256, /* larger blocks go straight to malloc */
  NCLASS = CLASS_MAX >> CLASS_SHIFT,
  MAG = 64,        /* blocks per magazine */
  DEPOT_MAX = 256, /* full magazines per class in the depot */
  EMPTY_MAX = 64,  /* empty magazines kept in the depot */
  PREFETCH = 2     /* blocks fetched ahead of allocation */
};

/* A magazine: an array of free blocks of one class. Blocks are handed out
 * from and taken back into the array, never linked through themselves: an
 * allocation reads no block (a block freed on another core is a cache miss
 * to read; with lists, every allocation waited for one), and the next
 * blocks can be fetched ahead. */
typedef struct mag {
  struct mag *next; /* in the depot */
  unsigned count;
  void *slot[MAG];
} mag_t;

/* Per thread, per class: two magazines (`spare` is always full or empty,
 * so a thread going back and forth across a magazine boundary does not hit
 * the depot each time) and the chunk being carved when both are empty and
 * the depot has no full one. */
typedef struct tcache {
  mag_t *cur[NCLASS], *spare[NCLASS]; /* NULL until needed */
  char *carve[NCLASS], *carve_end[NCLASS];
  unsigned char state; /* TC_NEW, TC_READY (registered), TC_DEAD (exited) */
} tcache_t;
enum { TC_NEW = 0, TC_READY = 1, TC_DEAD = 2 }; /* tcache_t.state */

static struct {
  pthread_mutex_t mu;
  mag_t *full[NCLASS];
  _Atomic unsigned nfull[NCLASS]; /* written under mu, peeked without */
  mag_t *empty;
  unsigned nempty;
} depot = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local tcache_t tl_cache
    __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static size_t class_size(unsigned c) { return (size_t)(c + 1) << CLASS_SHIFT; }

/* Hand out slot i of m (under ASan, clearing it: see the top). */
static inline void *mag_take(mag_t *m, unsigned i) {
  void *b = m->slot[i];
  if (WEFT__ASAN)
    m->slot[i] = NULL;
  return b;
}

/* Abandon a magazine's blocks: one atomic per run of blocks from the same
 * chunk (blocks freed in the order they were carved form such runs). */
static void mag_abandon(mag_t *m) {
  if (WEFT__ASAN) { /* each block is its own malloc'd allocation */
    for (unsigned i = 0; i < m->count; i++)
      free(mag_take(m, i));
    m->count = 0;
    return;
  }
  unsigned i = 0;
  while (i < m->count) {
    weft__chunk_t *ch = weft__chunk_of(m->slot[i]);
    unsigned n = 0;
    do
      n++;
    while (++i < m->count && weft__chunk_of(m->slot[i]) == ch);
    weft__chunk_drop(ch, n);
  }
  m->count = 0;
}

/* An empty magazine, from the depot or new; NULL without memory. */
static mag_t *mag_empty(void) {
  mag_t *m = NULL;
  pthread_mutex_lock(&depot.mu);
  if (depot.empty != NULL) {
    m = depot.empty;
    depot.empty = m->next;
    depot.nempty--;
  }
  pthread_mutex_unlock(&depot.mu);
  if (m == NULL) {
    m = malloc(sizeof *m);
    if (m != NULL)
      m->count = 0;
  }
  return m;
}

/* Under depot.mu: keep an empty magazine if the depot has room for it.
 * True if kept; else the caller frees it. */
static bool empty_keep_locked(mag_t *m) {
  if (depot.nempty >= EMPTY_MAX)
    return false;
  m->next = depot.empty;
  depot.empty = m;
  depot.nempty++;
  return true;
}

/* Keep an empty magazine in the depot, or free it. */
static void mag_keep(mag_t *m) {
  pthread_mutex_lock(&depot.mu);
  bool kept = empty_keep_locked(m);
  pthread_mutex_unlock(&depot.mu);
  if (!kept)
    free(m);
}

/* Give a full magazine to the depot; when the depot is full, abandon its
 * blocks instead and return it (empty) to the caller, else NULL. */
static mag_t *depot_put(unsigned c, mag_t *m) {
  pthread_mutex_lock(&depot.mu);
  unsigned n = atomic_load_explicit(&depot.nfull[c], memory_order_relaxed);
  if (n < DEPOT_MAX) {
    m->next = depot.full[c];
    depot.full[c] = m;
    atomic_store_explicit(&depot.nfull[c], n + 1, memory_order_relaxed);
    m = NULL;
  }
  pthread_mutex_unlock(&depot.mu);
  if (m != NULL)
    mag_abandon(m);
  return m;
}

/* Swap an empty magazine (or none) for a full one from the depot; NULL when
 * it has none. */
static mag_t *depot_swap(unsigned c, mag_t *empty) {
  if (atomic_load_explicit(&depot.nfull[c], memory_order_relaxed) == 0)
    return NULL; /* a peek; the mutex decides */
  mag_t *m = NULL;
  pthread_mutex_lock(&depot.mu);
  unsigned n = atomic_load_explicit(&depot.nfull[c], memory_order_relaxed);
  if (n > 0) {
    m = depot.full[c];
    depot.full[c] = m->next;
    atomic_store_explicit(&depot.nfull[c], n - 1, memory_order_relaxed);
    if (empty != NULL && empty_keep_locked(empty))
      empty = NULL;
  }
  pthread_mutex_unlock(&depot.mu);
  if (m != NULL)
    free(empty); /* NULL unless the depot kept enough empties */
  return m;
}

static void cache_exit(void *arg) { /* thread exit: magazines to the depot */
  tcache_t *tc = arg;
  tc->state = TC_DEAD;
  for (unsigned c = 0; c < NCLASS; c++) {
    mag_t *ms[2] = {tc->cur[c], tc->spare[c]};
    tc->cur[c] = tc->spare[c] = NULL;
    for (int i = 0; i < 2; i++) {
      mag_t *m = ms[i];
      if (m == NULL)
        continue;
      if (m->count == MAG)
        m = depot_put(c, m);
      else
        mag_abandon(m);
      if (m != NULL)
        mag_keep(m);
    }
    if (tc->carve[c] != tc->carve_end[c]) /* blocks never carved */
      weft__chunk_drop(weft__chunk_of(tc->carve[c]),
                       (unsigned)((size_t)(tc->carve_end[c] - tc->carve[c]) /
                                  class_size(c)));
    tc->carve[c] = tc->carve_end[c] = NULL;
  }
}

static void cache_key_init(void) {
  cache_key_ok = pthread_key_create(&cache_key, cache_exit) == 0;
}

/* The slow paths below are kept out of line (and marked cold), so that
 * the allocation and release fast paths need few registers (inlined, they
 * cost every call register saves: docs/design/alloc.md). */
#define SLOW __attribute__((noinline, cold))

static SLOW tcache_t *my_cache_register(tcache_t *tc) {
  pthread_once(&cache_once, cache_key_init);
  if (!cache_key_ok || pthread_setspecific(cache_key, tc) != 0)
    return NULL;
  tc->state = TC_READY;
  return tc;
}

/* The calling thread's cache, or NULL when it cannot have one. */
static inline tcache_t *my_cache(void) {
  tcache_t *tc = &tl_cache;
  if (__builtin_expect(tc->state == TC_READY, 1))
    return tc;
  return tc->state == TC_DEAD ? NULL : my_cache_register(tc);
}

/* Under ASan, a new block: its own allocation, poisoned until handed out
 * (cache_alloc's caller unpoisons the size asked). */
static SLOW void *asan_block(unsigned c) {
  void *b = malloc(class_size(c));
  if (b != NULL)
    WEFT__POISON(b, class_size(c));
  return b;
}

/* Both magazines empty: a full one from the depot, else carve. */
static SLOW void *cache_refill(tcache_t *tc, unsigned c) {
  mag_t *m = depot_swap(c, tc->cur[c]);
  if (m != NULL) {
    tc->cur[c] = m;
    for (unsigned k = 1; k <= PREFETCH; k++)
      __builtin_prefetch(m->slot[MAG - k], 1);
    m->count--;
    return mag_take(m, m->count);
  }
  size_t size = class_size(c);
  if (WEFT__ASAN)
    return asan_block(c);
  if (tc->carve[c] == tc->carve_end[c]) {
    unsigned n;
    char *first = weft__chunk_start(class_size(c), &n);
    if (first == NULL)
      return NULL;
    tc->carve[c] = first;
    tc->carve_end[c] = first + (size_t)n * size;
  }
  void *b = tc->carve[c];
  tc->carve[c] += size;
  return b;
}

/* A thread past its cache's exit: a chunk of its own per block. */
static SLOW void *uncached_alloc(unsigned c) {
  if (WEFT__ASAN)
    return asan_block(c);
  unsigned n;
  char *b = weft__chunk_start(class_size(c), &n);
  if (b != NULL)
    weft__chunk_drop(weft__chunk_of(b), n - 1);
  return b;
}

static SLOW void uncached_release(void *ptr) {
  if (WEFT__ASAN)
    free(ptr);
  else
    weft__chunk_drop(weft__chunk_of(ptr), 1);
}

static inline __attribute__((always_inline)) void *cache_alloc(size_t size) {
  unsigned c = (unsigned)((size - 1) >> CLASS_SHIFT);
  tcache_t *tc = my_cache();
  if (__builtin_expect(tc == NULL, 0))
    return uncached_alloc(c);
  mag_t *m = tc->cur[c];
  if (__builtin_expect(m == NULL || m->count == 0, 0)) {
    mag_t *s = tc->spare[c];
    if (s == NULL || s->count == 0)
      return cache_refill(tc, c);
    tc->spare[c] = m; /* empty (or none) */
    tc->cur[c] = m = s;
  }
  m->count--;
  void *b = mag_take(m, m->count);
  /* Blocks often come back from another core (a job allocated here, freed
   * by a worker): fetch the ones after this for writing now. (A prefetch
   * is no access: under ASan, where the block is still poisoned, it is not
   * checked.) */
  if (m->count >= PREFETCH)
    __builtin_prefetch(m->slot[m->count - PREFETCH], 1);
  return b;
}

/* cur is full or missing: make room, or say there is none (no memory). */
static SLOW mag_t *cache_room(tcache_t *tc, unsigned c) {
  mag_t *m = tc->cur[c], *s = tc->spare[c];
  if (m != NULL && s != NULL && s->count == 0) {
    tc->cur[c] = s; /* spare is empty: swap */
    tc->spare[c] = m;
    return s;
  }
  mag_t *e = NULL;
  if (m != NULL) { /* full */
    if (s != NULL) /* full too: to the depot */
      e = depot_put(c, s);
    tc->spare[c] = m;
    tc->cur[c] = NULL;
  }
  if (e == NULL)
    e = mag_empty();
  tc->cur[c] = e;
  return e;
}

static inline __attribute__((always_inline)) void cache_release(void *ptr,
                                                                size_t size) {
  unsigned c = (unsigned)((size - 1) >> CLASS_SHIFT);
  tcache_t *tc = my_cache();
  if (__builtin_expect(tc == NULL, 0)) {
    uncached_release(ptr);
    return;
  }
  mag_t *m = tc->cur[c];
  if (__builtin_expect(m == NULL || m->count == MAG, 0)) {
    m = cache_room(tc, c);
    if (m == NULL) { /* no memory for a magazine: give the block up */
      uncached_release(ptr);
      return;
    }
  }
  WEFT__POISON(ptr, class_size(c)); /* until handed out again */
  m->slot[m->count++] = ptr;
}

/* (Always inlined where called by name: weft__malloc and weft__free call
 * them directly, not through g_alloc, one call frame less per block.) */
static inline __attribute__((always_inline)) void *default_alloc(void *ctx,
                                                                 size_t size) {
  (void)ctx;
  if (size - 1 < CLASS_MAX) { /* size 0 wraps to malloc */
    void *b = cache_alloc(size);
    if (WEFT__ASAN && b != NULL) /* the size asked; the rest stays poisoned */
      WEFT__UNPOISON(b, size);
    return b;
  }
  return malloc(size);
}

static inline __attribute__((always_inline)) void
default_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  if (size - 1 < CLASS_MAX)
    cache_release(ptr, size);
  else
    free(ptr);
}

static weft_allocator_t g_alloc = {default_alloc, default_release, NULL, {0}};

int weft_allocator_set(const weft_allocator_t *a) {
  if (a == NULL) {
    g_alloc.alloc = default_alloc;
    g_alloc.release = default_release;
    g_alloc.ctx = NULL;
    return 0;
  }
  if (a->alloc == NULL || a->release == NULL)
    return WEFT_EINVAL;
  for (size_t i = 0; i < sizeof a->reserved / sizeof a->reserved[0]; i++)
    if (a->reserved[i] != NULL)
      return WEFT_ENOTSUP;
  g_alloc = *a;
  return 0;
}

void *weft__malloc(size_t size) {
  if (__builtin_expect(g_alloc.alloc == default_alloc, 1))
    return default_alloc(NULL, size);
  return g_alloc.alloc(g_alloc.ctx, size);
}

void *weft__realloc(void *ptr, size_t old_size, size_t new_size) {
  if (g_alloc.alloc == default_alloc && old_size > CLASS_MAX &&
      new_size > CLASS_MAX) /* plain malloc blocks: let libc move pages */
    return realloc(ptr, new_size);
  void *p = weft__malloc(new_size);
  if (p == NULL)
    return NULL;
  if (ptr != NULL) {
    memcpy(p, ptr, old_size < new_size ? old_size : new_size);
    weft__free(ptr, old_size);
  }
  return p;
}

void weft__free(void *ptr, size_t size) {
  if (ptr == NULL)
    return;
  if (__builtin_expect(g_alloc.release == default_release, 1))
    default_release(NULL, ptr, size);
  else
    g_alloc.release(g_alloc.ctx, ptr, size);
}
