/* SPDX-License-Identifier: MIT */
/* weft/alloc.h: the replaceable allocator every weft allocation goes
 * through. Life cycle: the process has one allocator; set it while no weft
 * memory is alive; trim hands idle memory of the default one back. */
#ifndef WEFT_ALLOC_H
#define WEFT_ALLOC_H

#include <weft/common.h>

WEFT_BEGIN_DECLS

/**
 * A user-supplied allocator. `alloc` returns memory aligned for any object
 * type, or NULL on failure (weft then returns WEFT_ENOMEM from the call that
 * needed it, and leaks nothing). `release` receives the pointer and the size
 * that was asked for. `ctx` is passed to both untouched.
 * `reserved` is room to grow without changing the struct's size: leave it
 * zero (initialise the struct with `{alloc, release, ctx}` or `{0}`); a
 * later weft gives a slot a meaning whose zero is today's behaviour.
 */
typedef struct weft_allocator {
  void *(*alloc)(void *ctx, size_t size);
  void (*release)(void *ctx, void *ptr, size_t size);
  void *ctx;
  void *reserved[4];
} weft_allocator_t;

/**
 * Replace the allocator used by every weft allocation in the process.
 *
 * `a` is copied; NULL restores the default. The default serves small
 * blocks (futures, jobs, continuations, loop operations) from per-thread
 * caches of fixed-size blocks carved from regions weft maps itself; a
 * region none of whose blocks is in use goes back to the system after
 * about a second idle, or at once with weft_allocator_trim(). Larger blocks use
 * malloc/free. Under AddressSanitizer every block is its own malloc'd
 * allocation, so ASan and LeakSanitizer report misuse as with malloc/free.
 * The caller must make this call while no memory allocated by weft is alive
 * (before the first weft object is made, or after the last is freed): weft
 * does not track which allocator made a block, so a block made by one and
 * freed by another is a bug in the caller.
 * Returns 0; WEFT_EINVAL when `a` is not NULL and either function is NULL;
 * WEFT_ENOTSUP when a reserved slot is not zero (a caller built against a
 * later weft asked for something this one cannot do). Nothing changes on
 * error.
 * Thread: any thread, but no other weft call may run concurrently.
 * Design: docs/design/alloc.md.
 */
WEFT_EXTERN int weft_allocator_set(const weft_allocator_t *a);

/**
 * Return to the system, now, every region of the default allocator none of
 * whose blocks is in use (the ones it keeps for about a second for the next
 * burst), as malloc_trim() does for malloc. Blocks in use and the caches of
 * free blocks are untouched, so a region holding a cached free block stays.
 * Useful after a burst when the process will sit idle, since idle regions
 * are otherwise returned only when weft allocates or frees again.
 * Returns the number of bytes unmapped (0 with a user allocator set, under
 * AddressSanitizer, or when nothing is idle). Never fails.
 * Thread: any thread, concurrently with any weft call.
 */
WEFT_EXTERN size_t weft_allocator_trim(void);

WEFT_END_DECLS

#endif /* WEFT_ALLOC_H */
