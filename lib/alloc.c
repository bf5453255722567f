/* SPDX-License-Identifier: MIT */
/* lib/alloc.c: the replaceable allocator behind weft__malloc/weft__free, and
 * the small-block cache in front of the default one.
 *
 * Why a cache: weft's hot objects (a future pair, a then-state, a pool job,
 * a loop operation) are small, fixed-size, and typically made on one thread
 * and freed on another (a submitter allocates, a worker frees). glibc's
 * malloc handles that pattern badly: the freeing thread's frees land in the
 * allocating thread's arena under its lock, and both sides pay for
 * consolidation (measured: a third of the time of the pool offload benchmark).
 * So blocks of up to CLASS_MAX bytes are kept per thread, per 16-byte size
 * class, in two magazines (arrays) of up to MAG blocks; full magazines move
 * whole, in O(1), to a per-class depot shared by all threads under a mutex,
 * and a thread whose magazines are empty swaps one for a full one from the
 * depot. The mutex is taken once per MAG blocks. Blocks are carved from
 * chunks (see below); the depot is bounded, and beyond it blocks are
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
#define _GNU_SOURCE /* MAP_ANONYMOUS */
#define WEFT__ALLOC_IMPL 1 /* the definitions below, not the fault sites */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum {
  CLASS_SHIFT = 4,                 /* 16-byte classes */
  CLASS_MAX = 256,                 /* larger blocks go straight to malloc */
  NCLASS = CLASS_MAX >> CLASS_SHIFT,
  MAG = 64,                        /* blocks per magazine */
  DEPOT_MAX = 256,                 /* full magazines per class in the depot */
  EMPTY_MAX = 64,                  /* empty magazines kept in the depot */
  PREFETCH = 2                     /* blocks fetched ahead of allocation */
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

/* ---- chunks ----
 * Blocks are carved from 16 KiB chunks, each aligned to its size so a
 * block finds its chunk by masking. The chunk counts its blocks not yet
 * abandoned; a block is abandoned when the depot is full (or its thread has
 * exited), and the chunk goes back to its region (below) with its last
 * block. Before chunks, a burst of a million jobs in flight overflowed the
 * depot and glibc spent a fifth of the offload benchmarks consolidating
 * the single blocks it got back. */
struct region;
typedef struct chunk {
  _Atomic unsigned live;
  struct region *region; /* read only when the chunk goes back */
  struct chunk *next_free; /* on its region's free list */
} chunk_t;

enum { CHUNK = 16384, CHUNK_HEAD = 64 }; /* the counter alone on its line */

static chunk_t *chunk_of(const void *b) {
  return (chunk_t *)((uintptr_t)b & ~(uintptr_t)(CHUNK - 1));
}

/* ---- regions ----
 * Chunks come from 2 MiB regions mapped aligned to their size, and a region
 * fills its pages POPULATE chunks (256 KiB) at a time with one
 * madvise(MADV_POPULATE_WRITE) instead of a page fault per 4 KiB page.
 * A region lends its chunks out and takes them back on a free list. A
 * region none of whose chunks is lent out is idle: it stays mapped, with
 * its pages, so that the next burst reuses it instead of paying the kernel
 * for fresh memory again, and is unmapped once it has been idle for
 * decay_ns, a second (checked whenever a chunk goes back and by pool
 * workers before they sleep), except the last idle one; weft_alloc_trim() unmaps them all at
 * once. Memory stays mapped while any chunk of a region is lent: like
 * malloc arenas, a region is held by its longest-lived block. All of it
 * under one mutex, taken once per chunk (a chunk holds 60 to 1000 blocks).
 * Why, with the figures: docs/design/alloc.md.
 */
enum { REGION = 2u << 20, REGION_CHUNKS = REGION / CHUNK, POPULATE = 16 };
/* How long an idle region stays mapped (tests shorten it). */
static _Atomic int64_t decay_ns = 1000000000;

typedef struct region {
  struct region *prev, *next; /* on regions.avail while it can lend */
  struct region *idle_prev, *idle_next; /* on regions.idle while idle */
  char *base;
  chunk_t *free;  /* chunks given back */
  unsigned lent;  /* chunks out */
  unsigned fresh; /* chunks [fresh, REGION_CHUNKS) never lent yet */
  unsigned ready; /* chunks [0, ready) populated, or being populated */
  unsigned busy;  /* idle threads populating it: not to be unmapped */
  bool is_idle;   /* on regions.idle */
  int64_t idle_since; /* weft_now_ns() when it went idle */
} region_t;

static struct {
  pthread_mutex_t mu;
  region_t *avail; /* regions with a chunk to lend */
  region_t *idle_first, *idle_last; /* idle regions, oldest first */
  size_t mapped, idle, maps; /* regions mapped now, idle now, ever mapped */
} regions = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void avail_remove(region_t *r) {
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    regions.avail = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void avail_add(region_t *r) {
  r->prev = NULL;
  r->next = regions.avail;
  if (r->next != NULL)
    r->next->prev = r;
  regions.avail = r;
}

static int64_t decay(void) {
  return atomic_load_explicit(&decay_ns, memory_order_relaxed);
}

void weft__alloc_set_decay(int64_t ns) {
  atomic_store_explicit(&decay_ns, ns, memory_order_relaxed);
}

/* Under regions.mu: r lends a chunk again (or is unmapped): not idle. */
static void idle_remove(region_t *r) {
  if (!r->is_idle)
    return;
  if (r->idle_prev != NULL)
    r->idle_prev->idle_next = r->idle_next;
  else
    regions.idle_first = r->idle_next;
  if (r->idle_next != NULL)
    r->idle_next->idle_prev = r->idle_prev;
  else
    regions.idle_last = r->idle_prev;
  r->idle_prev = r->idle_next = NULL;
  r->is_idle = false;
  regions.idle--;
}

/* Under regions.mu: r has nothing lent and nobody populating it; it joins
 * the idle list (newest last). */
static void idle_add(region_t *r, int64_t now) {
  if (r->is_idle || r->lent != 0 || r->busy != 0)
    return;
  r->is_idle = true;
  r->idle_since = now;
  r->idle_next = NULL;
  r->idle_prev = regions.idle_last;
  if (r->idle_prev != NULL)
    r->idle_prev->idle_next = r;
  else
    regions.idle_first = r;
  regions.idle_last = r;
  regions.idle++;
}

/* Under regions.mu: take off both lists the idle regions idle since before
 * `before` (all of them for INT64_MAX, else all but the newest) and return
 * them linked through `next`; the caller unmaps them outside the lock. */
static region_t *idle_take(int64_t before) {
  region_t *out = NULL;
  while (regions.idle_first != NULL && regions.idle_first->idle_since < before &&
         (before == INT64_MAX || regions.idle > 1)) {
    region_t *r = regions.idle_first;
    idle_remove(r);
    avail_remove(r);
    regions.mapped--;
    r->next = out;
    out = r;
  }
  return out;
}

static region_t *region_map(void) {
  region_t *r = malloc(sizeof *r);
  if (r == NULL)
    return NULL;
  /* map twice the size and trim, for the alignment chunk_of() needs */
  char *m = WEFT__SYS_PTR("mmap", MAP_FAILED,
                          mmap(NULL, 2 * (size_t)REGION, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (m == MAP_FAILED) {
    free(r);
    return NULL;
  }
  char *base = (char *)(((uintptr_t)m + REGION - 1) & ~(uintptr_t)(REGION - 1));
  if (base > m)
    munmap(m, (size_t)(base - m));
  munmap(base + REGION, (size_t)(m + REGION - base));
  *r = (region_t){.base = base};
  return r;
}

/* Unmap the regions idle_take() returned. Returns how many bytes. */
static size_t regions_unmap(region_t *r) {
  size_t bytes = 0;
  while (r != NULL) {
    region_t *next = r->next;
    munmap(r->base, REGION);
    free(r);
    bytes += REGION;
    r = next;
  }
  return bytes;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

void weft__prefault(void *p, size_t len) {
  uintptr_t page = 4096, lo = ((uintptr_t)p + page - 1) & ~(page - 1),
            hi = ((uintptr_t)p + len) & ~(page - 1);
  if (lo < hi)
    (void)WEFT__SYS("madvise", madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE));
}

/* Mark chunks [from, from + n) of r as populated and return n (up to
 * POPULATE, not past the region's end); the caller populates them. */
static unsigned claim_batch(region_t *r, unsigned from) {
  unsigned n = REGION_CHUNKS - from < POPULATE ? REGION_CHUNKS - from : POPULATE;
  r->ready = from + n;
  return n;
}

static chunk_t *chunk_get(void) {
  pthread_mutex_lock(&regions.mu);
  region_t *r = regions.avail;
  if (r == NULL) {
    pthread_mutex_unlock(&regions.mu); /* map outside the lock */
    region_t *nr = region_map();
    if (nr == NULL)
      return NULL;
    pthread_mutex_lock(&regions.mu);
    avail_add(nr);
    regions.mapped++;
    regions.maps++;
    r = regions.avail;
  }
  idle_remove(r);
  chunk_t *ch = r->free;
  unsigned populate = 0; /* chunks to populate from ch */
  if (ch != NULL) {
    r->free = ch->next_free;
  } else {
    if (r->fresh >= r->ready) /* nobody did it ahead of us */
      populate = claim_batch(r, r->fresh);
    ch = (chunk_t *)(r->base + (size_t)r->fresh++ * CHUNK);
  }
  if (++r->lent == REGION_CHUNKS)
    avail_remove(r);
  pthread_mutex_unlock(&regions.mu);
  if (populate) /* a hint: where refused, pages fault in one by one */
    weft__prefault(ch, (size_t)populate * CHUNK);
  ch->region = r;
  return ch;
}

/* Populate ahead: a thread with nothing to do (a pool worker about to
 * park) backs the next chunks of the region now lending, so a thread
 * allocating a burst (a loop submitting a million jobs) finds them backed
 * instead of stopping for the kernel. At most the rest of one 2 MiB region
 * is backed before it is used. A hint like the rest: the pages' contents do
 * not change, and a chunk handed out meanwhile is simply written. */
bool weft__alloc_idle(void) {
  char *at = NULL;
  unsigned n = 0;
  int64_t now = weft_now_ns();
  pthread_mutex_lock(&regions.mu);
  region_t *old = idle_take(now - decay());
  region_t *r = regions.avail; /* the region chunk_get() takes from */
  if (r != NULL && r->fresh > 0) { /* in use: someone is allocating */
    unsigned from = r->ready > r->fresh ? r->ready : r->fresh;
    if (from < REGION_CHUNKS) {
      at = r->base + (size_t)from * CHUNK;
      n = claim_batch(r, from);
      r->busy++; /* its last chunk may come back meanwhile: keep it mapped */
      idle_remove(r);
    }
  }
  pthread_mutex_unlock(&regions.mu);
  regions_unmap(old);
  if (at == NULL)
    return false;
  weft__prefault(at, (size_t)n * CHUNK);
  pthread_mutex_lock(&regions.mu);
  r->busy--;
  idle_add(r, now); /* if chunk_put() left that to us */
  pthread_mutex_unlock(&regions.mu);
  return true;
}

static void chunk_put(chunk_t *ch) {
  region_t *r = ch->region;
  region_t *old = NULL;
  pthread_mutex_lock(&regions.mu);
  ch->next_free = r->free;
  r->free = ch;
  if (r->lent-- == REGION_CHUNKS)
    avail_add(r);
  if (r->lent == 0) {
    int64_t now = weft_now_ns();
    idle_add(r, now);
    old = idle_take(now - decay());
  }
  pthread_mutex_unlock(&regions.mu);
  regions_unmap(old);
}

size_t weft_alloc_trim(void) {
  pthread_mutex_lock(&regions.mu);
  region_t *old = idle_take(INT64_MAX);
  pthread_mutex_unlock(&regions.mu);
  return regions_unmap(old);
}

void weft__alloc_regions(size_t *mapped, size_t *idle, size_t *maps) {
  pthread_mutex_lock(&regions.mu);
  *mapped = regions.mapped;
  *idle = regions.idle;
  *maps = regions.maps;
  pthread_mutex_unlock(&regions.mu);
}

/* A fresh chunk of class c; all its blocks count as live until carved
 * and then abandoned (or, never carved, given back at thread exit). */
static char *chunk_start(unsigned c, unsigned *n) {
  chunk_t *ch = chunk_get();
  if (ch == NULL)
    return NULL;
  *n = (unsigned)((CHUNK - CHUNK_HEAD) / class_size(c));
  atomic_init(&ch->live, *n);
  return (char *)ch + CHUNK_HEAD;
}

/* Give n blocks of chunk ch up for good. */
static void chunk_drop(chunk_t *ch, unsigned n) {
  if (atomic_fetch_sub_explicit(&ch->live, n, memory_order_acq_rel) == n)
    chunk_put(ch);
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
    chunk_t *ch = chunk_of(m->slot[i]);
    unsigned n = 0;
    do
      n++;
    while (++i < m->count && chunk_of(m->slot[i]) == ch);
    chunk_drop(ch, n);
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
      chunk_drop(chunk_of(tc->carve[c]),
                 (unsigned)((size_t)(tc->carve_end[c] - tc->carve[c]) /
                            class_size(c)));
    tc->carve[c] = tc->carve_end[c] = NULL;
  }
}

static void cache_key_init(void) {
  cache_key_ok = pthread_key_create(&cache_key, cache_exit) == 0;
}

/* The slow paths below are kept out of line (and marked cold), so that
 * the allocation and release fast paths need few registers: inlined, they
 * made every call save and restore five (~15 of ~40 instructions). */
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
    char *first = chunk_start(c, &n);
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
  char *b = chunk_start(c, &n);
  if (b != NULL)
    chunk_drop(chunk_of(b), n - 1);
  return b;
}

static SLOW void uncached_release(void *ptr) {
  if (WEFT__ASAN)
    free(ptr);
  else
    chunk_drop(chunk_of(ptr), 1);
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

static inline __attribute__((always_inline)) void
cache_release(void *ptr, size_t size) {
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

static weft_allocator_t g_alloc = {default_alloc, default_release, NULL,
                                   {0}};

int weft_set_allocator(const weft_allocator_t *a) {
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
