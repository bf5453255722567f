/* SPDX-License-Identifier: MIT */
/* lib/fiber.h: what the fiber core (fiber.c, stack.c, switch.c), scopes
 * (scope.c) and the alarm thread (alarm.c) offer each other. Internal. */
#ifndef WEFT_LIB_FIBER_H
#define WEFT_LIB_FIBER_H

#include "internal.h"

#include <weft/fiber.h>

/* ---- alarms (alarm.c): a deadline service for any thread ----
 * One process-wide thread keeps a heap of armed alarms and runs each one's
 * fn on that thread when its deadline (weft_clock_now_ns) passes. The
 * thread starts with the first alarm and ends after a second with none.
 * The caller embeds the alarm and keeps it alive until fn has run or
 * disarm returned true. fn must be short and must not block. */
typedef struct weft__alarm weft__alarm_t;
struct weft__alarm {
  int64_t deadline;
  void (*fn)(weft__alarm_t *a);
  size_t slot; /* heap index while armed (alarm.c) */
};
static inline void weft__alarm_init(weft__alarm_t *a) { a->slot = (size_t)-1; }
/* Arm a (initialised, not armed now) for `deadline`. 0, or WEFT_ENOMEM / WEFT_EAGAIN
 * (no memory for the heap, no thread): then fn never runs. */
WEFT__HIDDEN int weft__alarm_arm(weft__alarm_t *a, int64_t deadline,
                                 void (*fn)(weft__alarm_t *a));
/* True when a was still armed and now never fires; false when fn has run
 * or is running (or was only initialised). */
WEFT__HIDDEN bool weft__alarm_disarm(weft__alarm_t *a);

/* ---- fibers (fiber.c) ---- */
typedef struct weft__fiber weft__fiber_t;

/* Create a fiber, not yet started, in scope `scope` (NULL: none). *out is
 * one handle on its future for the caller. The stack is taken when it
 * starts. Errors: WEFT_EINVAL, WEFT_ENOTSUP (opts), WEFT_ENOMEM; nothing
 * is created then. */
WEFT__HIDDEN int weft__fiber_create(weft_executor_t *ex,
                                    const weft_fiber_options_t *opts,
                                    weft_fiber_fn fn, void *arg,
                                    weft_dtor_fn arg_dtor, weft_scope_t *scope,
                                    weft__fiber_t **fb, weft_future_t **out);
/* Start a created fiber: submit its first run to its executor. On error
 * (the executor's submit error) nothing ran and the fiber is still only
 * created: start it again or discard it. */
WEFT__HIDDEN int weft__fiber_start(weft__fiber_t *fb);
/* End a created fiber that was never started: its future settles with
 * `err` (unless already settled), arg_dtor runs when `run_dtor`, the
 * scope's exit hook runs (if it has a scope), and the fiber is freed once
 * its future is. */
WEFT__HIDDEN void weft__fiber_discard(weft__fiber_t *fb, int err,
                                      bool run_dtor);
/* Cancel a fiber with `reason` (WEFT_ECANCELED, or WEFT_ETIMEDOUT for a
 * deadline): its awaits return `reason` from now on, and its future is
 * cancelled. */
WEFT__HIDDEN void weft__fiber_cancel(weft__fiber_t *fb, int reason);
/* The fiber's future (borrowed). */
WEFT__HIDDEN weft_future_t *weft__fiber_future(weft__fiber_t *fb);
/* The running fiber of this thread, or NULL; and its scope (NULL when
 * none or outside a fiber). */
WEFT__HIDDEN weft__fiber_t *weft__fiber_self(void);
WEFT__HIDDEN weft_scope_t *weft__fiber_scope(const weft__fiber_t *fb);

/* ---- scopes (scope.c): the hook the fiber core calls ----
 * Once per fiber created with scope s, on any thread, after the fiber has
 * ended: its function returned (or never ran) and its future is settled. */
WEFT__HIDDEN void weft__scope_fiber_exit(weft_scope_t *s, weft__fiber_t *fb);

#endif /* WEFT_LIB_FIBER_H */
