/* SPDX-License-Identifier: MIT */
/* lib/region.c: the default allocator's memory (alloc.c carves blocks from
 * it): 16 KiB chunks, each aligned to its size so a block finds its chunk
 * by masking, lent by 2 MiB regions weft maps itself.
 *
 * A chunk counts its blocks not yet abandoned; a block is abandoned when
 * the depot is full (or its thread has exited), and the chunk goes back to
 * its region with its last block.
 *
 * A region fills its pages POPULATE chunks (256 KiB) at a time with one
 * madvise(MADV_POPULATE_WRITE) instead of a page fault per 4 KiB page,
 * lends its chunks out and takes them back on a free list. A region none of
 * whose chunks is lent out is idle: it stays mapped, with its pages, so
 * that the next burst reuses it, and is unmapped once it has been idle for
 * decay_ns, a second (checked whenever a chunk goes back and by pool
 * workers before they sleep), except the last idle one; weft_allocator_trim()
 * unmaps them all at once. Memory stays mapped while any chunk of a region
 * is lent: like malloc arenas, a region is held by its longest-lived block.
 * All of it under one mutex, taken once per chunk (a chunk holds 60 to 1000
 * blocks). Why, with the figures: docs/design/alloc.md. */
#define _GNU_SOURCE /* MAP_ANONYMOUS */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

struct region;
struct weft__chunk {
  _Atomic unsigned live;
  struct region *region;         /* read only when the chunk goes back */
  struct weft__chunk *next_free; /* on its region's free list */
};
typedef weft__chunk_t chunk_t;
_Static_assert(sizeof(chunk_t) <= WEFT__CHUNK_HEAD, "a chunk's header fits");

enum { CHUNK = WEFT__CHUNK, CHUNK_HEAD = WEFT__CHUNK_HEAD };

enum { REGION = 2u << 20, REGION_CHUNKS = REGION / CHUNK, POPULATE = 16 };
/* How long an idle region stays mapped (tests shorten it). */
static _Atomic int64_t decay_ns = 1000000000;

typedef struct region {
  struct region *prev, *next;           /* on regions.avail while it can lend */
  struct region *idle_prev, *idle_next; /* on regions.idle while idle */
  char *base;
  chunk_t *free;      /* chunks given back */
  unsigned lent;      /* chunks out */
  unsigned fresh;     /* chunks [fresh, REGION_CHUNKS) never lent yet */
  unsigned ready;     /* chunks [0, ready) populated, or being populated */
  unsigned busy;      /* idle threads populating it: not to be unmapped */
  bool is_idle;       /* on regions.idle */
  int64_t idle_since; /* weft_clock_now_ns() when it went idle */
} region_t;

static struct {
  pthread_mutex_t mu;
  region_t *avail;                  /* regions with a chunk to lend */
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
  while (regions.idle_first != NULL &&
         regions.idle_first->idle_since < before &&
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
    (void)WEFT__SYS("madvise",
                    madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE));
}

/* Mark chunks [from, from + n) of r as populated and return n (up to
 * POPULATE, not past the region's end); the caller populates them. */
static unsigned claim_batch(region_t *r, unsigned from) {
  unsigned n = REGION_CHUNKS - from < POPULATE ? REGION_CHUNKS - from
                                               : POPULATE;
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
  int64_t now = weft_clock_now_ns();
  pthread_mutex_lock(&regions.mu);
  region_t *old = idle_take(now - decay());
  region_t *r = regions.avail;     /* the region chunk_get() takes from */
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
    int64_t now = weft_clock_now_ns();
    idle_add(r, now);
    old = idle_take(now - decay());
  }
  pthread_mutex_unlock(&regions.mu);
  regions_unmap(old);
}

size_t weft_allocator_trim(void) {
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

char *weft__chunk_start(size_t block, unsigned *n) {
  chunk_t *ch = chunk_get();
  if (ch == NULL)
    return NULL;
  *n = (unsigned)((CHUNK - CHUNK_HEAD) / block);
  atomic_init(&ch->live, *n);
  return (char *)ch + CHUNK_HEAD;
}

void weft__chunk_drop(weft__chunk_t *ch, unsigned n) {
  if (atomic_fetch_sub_explicit(&ch->live, n, memory_order_acq_rel) == n)
    chunk_put(ch);
}
