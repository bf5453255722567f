/* SPDX-License-Identifier: MIT */
/* weft/alloc.h: the replaceable allocator every weft allocation goes through. */
#ifndef WEFT_ALLOC_H
#define WEFT_ALLOC_H

#include <weft/common.h>

WEFT_BEGIN_DECLS

/**
 * A user-supplied allocator. `alloc` returns memory aligned for any object
 * type, or NULL on failure (weft then returns WEFT_ENOMEM from the call that
 * needed it, and leaks nothing). `release` receives the pointer and the size
 * that was asked for. `ctx` is passed to both untouched.
 */
typedef struct weft_allocator {
  void *(*alloc)(void *ctx, size_t size);
  void (*release)(void *ctx, void *ptr, size_t size);
  void *ctx;
} weft_allocator_t;

/**
 * Replace the allocator used by every weft allocation in the process.
 *
 * `a` is copied; NULL restores the default. The default serves blocks over
 * 256 bytes with malloc/free; smaller ones (futures, jobs, continuations,
 * loop operations) come from per-thread caches of fixed-size blocks carved
 * from 2 MiB regions that weft maps itself and fills 256 KiB at a time
 * (pool workers with nothing to run fill the rest of the region in use
 * before they sleep, so a burst of submissions seldom waits for the
 * kernel: at most one region is backed ahead of use). A
 * region none of whose blocks is in use stays mapped for the next burst
 * and goes back to the system after about a second of that (checked when
 * blocks go back to regions and when pool workers go to sleep; the newest
 * such region is kept; weft_alloc_trim() returns them at once); like a
 * malloc arena, a region is held by its longest-lived block. The shared cache keeps at most 16,384 free blocks
 * per 16-byte size class (each thread at most 128 more), beyond which free
 * blocks go back to their region. Under
 * AddressSanitizer the caches stay on, but each small block is its own
 * malloc'd allocation (no regions), poisoned while it sits free in a cache:
 * ASan reports a use of a freed block and LeakSanitizer a block never freed,
 * as with malloc/free. The caller must
 * make this call while no memory allocated by weft is alive (before the first
 * weft object is made, or after the last is freed): weft does not track which
 * allocator made a block, so a block made by one and freed by another is a bug
 * in the caller.
 * Returns 0, or WEFT_EINVAL when `a` is not NULL and either function is NULL.
 * Thread: any thread, but no other weft call may run concurrently.
 */
WEFT_EXTERN int weft_set_allocator(const weft_allocator_t *a);

/**
 * Return to the system, now, every region of the default allocator none of
 * whose blocks is in use (the ones it keeps for about a second for the next
 * burst; see weft_set_allocator), as malloc_trim() does for malloc. Blocks
 * in use and the per-thread and shared caches of free blocks are untouched,
 * so a region holding a cached free block stays. Useful after a burst when
 * the process will sit idle, since idle regions are otherwise returned only
 * when weft allocates or frees again.
 * Returns the number of bytes unmapped (0 with a user allocator set, under
 * AddressSanitizer, or when nothing is idle). Never fails.
 * Thread: any thread, concurrently with any weft call.
 */
WEFT_EXTERN size_t weft_alloc_trim(void);

WEFT_END_DECLS

#endif /* WEFT_ALLOC_H */
