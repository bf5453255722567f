/* SPDX-License-Identifier: MIT */
/* lib/alloc.c: the replaceable allocator behind weft__malloc/weft__free. */
#include "internal.h"

#include <stdlib.h>

static void *default_alloc(void *ctx, size_t size) {
  (void)ctx;
  return malloc(size);
}

static void default_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  (void)size;
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

void weft__free(void *ptr, size_t size) {
  if (ptr != NULL)
    g_alloc.release(g_alloc.ctx, ptr, size);
}
