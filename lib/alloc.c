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
 * class, in two lists of up to BATCH blocks; full lists move whole, in O(1),
 * to a per-class depot shared by all threads under a mutex, and a thread
 * whose lists are empty takes a whole list back from the depot. The mutex is
 * taken once per BATCH blocks. Blocks are carved from chunks (see below);
 * the depot is bounded, and beyond it blocks are abandoned to their chunk,
 * which goes back to free() with its last block. A thread's lists return to
 * the depot when it exits.
 *
 * The cache sits only in front of the default allocator: with a user
 * allocator set, every block goes to it and back (so its counts stay exact).
 * Under AddressSanitizer the cache is off (every block goes to malloc and
 * back), so ASan still reports a use after free or a leak of any block.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#ifdef WEFT__ASAN
#define CACHE_ON 0
#else
#define CACHE_ON 1
#endif

enum {
  CLASS_SHIFT = 4,                 /* 16-byte classes */
  CLASS_MAX = 256,                 /* larger blocks go straight to malloc */
  NCLASS = CLASS_MAX >> CLASS_SHIFT,
  BATCH = 64,                      /* blocks per list */
  DEPOT_MAX = 256                  /* lists per class in the depot */
};

typedef struct block {
  struct block *next;     /* within a list */
  struct block *next_list; /* in the depot, on a list's first block */
} block_t;

typedef struct list {
  block_t *head;
  unsigned count;
} list_t;

typedef struct tcache {
  list_t cur[NCLASS], spare[NCLASS];
  bool registered, dead;
} tcache_t;

static struct {
  pthread_mutex_t mu;
  block_t *lists[NCLASS]; /* full lists, linked by next_list */
  _Atomic unsigned nlists[NCLASS]; /* written under mu, peeked without */
} depot = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local tcache_t tl_cache
    __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static size_t class_size(unsigned c) { return (size_t)(c + 1) << CLASS_SHIFT; }

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
 * Measured on the loop offload benchmark (a million jobs in flight, 190 MB):
 * page faults were a third of the loop thread's time, glibc's
 * aligned_alloc() another 7%; with regions, 3.8M -> 6.0M jobs/s. (Asking
 * for transparent huge pages instead made runs bimodal on our VMs, 1.7M to
 * 9.6M jobs/s: the slow ones cleared fresh 2 MiB pages at 1.5 GB/s.)
 * A region lends its chunks out and takes them back on a free list; a
 * region none of whose chunks is lent out is unmapped unless it is the only
 * one left with chunks to lend (no map/unmap churn when load hovers at a
 * boundary). Memory stays mapped while any chunk of a region is lent: like
 * malloc arenas, a region is held by its longest-lived block. All of it
 * under one mutex, taken once per chunk (a chunk holds 60 to 1000 blocks).
 */
enum { REGION = 2u << 20, REGION_CHUNKS = REGION / CHUNK, POPULATE = 16 };

typedef struct region {
  struct region *prev, *next; /* on regions.avail while it can lend */
  char *base;
  chunk_t *free;  /* chunks given back */
  unsigned lent;  /* chunks out */
  unsigned fresh; /* chunks [fresh, REGION_CHUNKS) never lent yet */
} region_t;

static struct {
  pthread_mutex_t mu;
  region_t *avail; /* regions with a chunk to lend */
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

static region_t *region_map(void) {
  region_t *r = malloc(sizeof *r);
  if (r == NULL)
    return NULL;
  /* map twice the size and trim, for the alignment chunk_of() needs */
  char *m = mmap(NULL, 2 * (size_t)REGION, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

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
    r = regions.avail;
  }
  chunk_t *ch = r->free;
  bool populate = false;
  if (ch != NULL) {
    r->free = ch->next_free;
  } else {
    populate = r->fresh % POPULATE == 0;
    ch = (chunk_t *)(r->base + (size_t)r->fresh++ * CHUNK);
  }
  if (++r->lent == REGION_CHUNKS)
    avail_remove(r);
  pthread_mutex_unlock(&regions.mu);
  if (populate) /* a hint: where refused, pages fault in one by one */
    (void)madvise(ch, (size_t)POPULATE * CHUNK, MADV_POPULATE_WRITE);
  ch->region = r;
  return ch;
}

static void chunk_put(chunk_t *ch) {
  region_t *r = ch->region, *unmap = NULL;
  pthread_mutex_lock(&regions.mu);
  ch->next_free = r->free;
  r->free = ch;
  if (r->lent-- == REGION_CHUNKS)
    avail_add(r);
  if (r->lent == 0 && (r->prev != NULL || r->next != NULL)) {
    avail_remove(r); /* empty, and another region can lend */
    unmap = r;
  }
  pthread_mutex_unlock(&regions.mu);
  if (unmap != NULL) {
    munmap(unmap->base, REGION);
    free(unmap);
  }
}

static void list_abandon(block_t *b);
static void depot_put(unsigned c, list_t *l);

/* A new chunk: one list of at most BATCH of its blocks in *l, the rest in
 * full lists to the depot (a thread list never holds more than BATCH: it
 * moves on only when it holds exactly that). False without memory. */
static bool chunk_carve(unsigned c, list_t *l) {
  char *m = (char *)chunk_get();
  if (m == NULL)
    return false;
  size_t size = class_size(c);
  unsigned n = (unsigned)((CHUNK - CHUNK_HEAD) / size);
  atomic_init(&((chunk_t *)m)->live, n);
  list_t cur = {NULL, 0};
  for (unsigned i = n; i-- > 0;) {
    block_t *b = (block_t *)(m + CHUNK_HEAD + i * size);
    b->next = cur.head;
    cur.head = b;
    if (++cur.count == BATCH && i > 0)
      depot_put(c, &cur); /* a full list, more to come: empties cur */
  }
  *l = cur;
  return true;
}

static void block_abandon(block_t *b) {
  chunk_t *ch = chunk_of(b);
  if (atomic_fetch_sub_explicit(&ch->live, 1, memory_order_acq_rel) == 1)
    chunk_put(ch);
}

/* Abandon a list: one atomic per run of blocks from the same chunk (a list
 * freed in the order it was allocated is mostly such runs). */
static void list_abandon(block_t *b) {
  while (b != NULL) {
    chunk_t *ch = chunk_of(b);
    unsigned n = 0;
    do {
      b = b->next;
      n++;
    } while (b != NULL && chunk_of(b) == ch);
    if (atomic_fetch_sub_explicit(&ch->live, n, memory_order_acq_rel) == n)
      chunk_put(ch);
  }
}

/* Give a full list to the depot (or abandon it when the depot is full). */
static void depot_put(unsigned c, list_t *l) {
  block_t *head = l->head;
  l->head = NULL;
  l->count = 0;
  pthread_mutex_lock(&depot.mu);
  unsigned n = atomic_load_explicit(&depot.nlists[c], memory_order_relaxed);
  if (n < DEPOT_MAX) {
    head->next_list = depot.lists[c];
    depot.lists[c] = head;
    atomic_store_explicit(&depot.nlists[c], n + 1, memory_order_relaxed);
    head = NULL;
  }
  pthread_mutex_unlock(&depot.mu);
  list_abandon(head);
}

static bool depot_take(unsigned c, list_t *l) {
  if (atomic_load_explicit(&depot.nlists[c], memory_order_relaxed) == 0)
    return false; /* a peek; the mutex decides */
  block_t *head = NULL;
  pthread_mutex_lock(&depot.mu);
  unsigned n = atomic_load_explicit(&depot.nlists[c], memory_order_relaxed);
  if (n > 0) {
    head = depot.lists[c];
    depot.lists[c] = head->next_list;
    atomic_store_explicit(&depot.nlists[c], n - 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&depot.mu);
  if (head == NULL)
    return false;
  l->head = head;
  l->count = BATCH;
  return true;
}

static void cache_exit(void *arg) { /* thread exit: lists to the depot */
  tcache_t *tc = arg;
  tc->dead = true;
  for (unsigned c = 0; c < NCLASS; c++) {
    list_t *ls[2] = {&tc->cur[c], &tc->spare[c]};
    for (int i = 0; i < 2; i++) {
      if (ls[i]->count == BATCH)
        depot_put(c, ls[i]);
      list_abandon(ls[i]->head);
      ls[i]->head = NULL;
      ls[i]->count = 0;
    }
  }
}

static void cache_key_init(void) {
  cache_key_ok = pthread_key_create(&cache_key, cache_exit) == 0;
}

/* The calling thread's cache, or NULL when it cannot have one. */
static tcache_t *my_cache(void) {
  tcache_t *tc = &tl_cache;
  if (__builtin_expect(tc->registered, 1))
    return tc->dead ? NULL : tc;
  pthread_once(&cache_once, cache_key_init);
  if (!cache_key_ok || pthread_setspecific(cache_key, tc) != 0)
    return NULL;
  tc->registered = true;
  return tc;
}

static void *cache_alloc(size_t size) {
  unsigned c = (unsigned)((size - 1) >> CLASS_SHIFT);
  tcache_t *tc = my_cache();
  if (tc == NULL) { /* a thread past its cache's exit: a chunk of its own */
    list_t one;
    if (!chunk_carve(c, &one))
      return NULL;
    block_t *b = one.head;
    list_abandon(b->next);
    return b;
  }
  list_t *l = &tc->cur[c];
  if (l->head == NULL) {
    if (tc->spare[c].head != NULL) {
      *l = tc->spare[c];
      tc->spare[c].head = NULL;
      tc->spare[c].count = 0;
    } else if (!depot_take(c, l) && !chunk_carve(c, l)) {
      return NULL;
    }
  }
  block_t *b = l->head;
  l->head = b->next;
  l->count--;
  /* Blocks often come back from another thread (a job allocated here, freed
   * by a worker): start bringing in the next one, or its `next` is a cache
   * miss on the following allocation (measured: 85% of the allocator's time
   * in the outside-offload benchmark). */
  __builtin_prefetch(l->head, 1);
  return b;
}

static void cache_release(void *ptr, size_t size) {
  unsigned c = (unsigned)((size - 1) >> CLASS_SHIFT);
  tcache_t *tc = my_cache();
  if (tc == NULL) {
    block_abandon(ptr);
    return;
  }
  list_t *l = &tc->cur[c];
  if (l->count == BATCH) {
    if (tc->spare[c].count == BATCH)
      depot_put(c, &tc->spare[c]);
    tc->spare[c] = *l;
    l->head = NULL;
    l->count = 0;
  }
  block_t *b = ptr;
  b->next = l->head;
  l->head = b;
  l->count++;
}

static void *default_alloc(void *ctx, size_t size) {
  (void)ctx;
  if (CACHE_ON && size - 1 < CLASS_MAX) /* size 0 wraps to malloc */
    return cache_alloc(size);
  return malloc(size);
}

static void default_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  if (CACHE_ON && size - 1 < CLASS_MAX)
    cache_release(ptr, size);
  else
    free(ptr);
}

static weft_allocator_t g_alloc = {default_alloc, default_release, NULL};

int weft_set_allocator(const weft_allocator_t *a) {
  if (a == NULL) {
    g_alloc.alloc = default_alloc;
    g_alloc.release = default_release;
    g_alloc.ctx = NULL;
    return 0;
  }
  if (a->alloc == NULL || a->release == NULL)
    return WEFT_EINVAL;
  g_alloc = *a;
  return 0;
}

void *weft__malloc(size_t size) { return g_alloc.alloc(g_alloc.ctx, size); }

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
  if (ptr != NULL)
    g_alloc.release(g_alloc.ctx, ptr, size);
}
