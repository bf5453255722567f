/* SPDX-License-Identifier: MIT */
/* lib/scope.c: placeholder until the scopes land (w-scope replaces it). */
#include "fiber.h"

void weft__scope_fiber_exit(weft_scope_t *s, weft__fiber_t *fb) {
  (void)s;
  (void)fb;
}
