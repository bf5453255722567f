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

/* ---- the switch (switch.c) ----
 * WEFT__SWITCH_ASM: 1 where a routine of our own switches (x86-64,
 * aarch64), unless WEFT_FIBER_UCONTEXT asks for the portable one. */
#if !defined(WEFT_FIBER_UCONTEXT) &&                                           \
    (defined(__x86_64__) || defined(__aarch64__))
#define WEFT__SWITCH_ASM 1
typedef struct weft__ctx {
  void *sp;
} weft__ctx_t;
#else
#define WEFT__SWITCH_ASM 0
#include <ucontext.h>
typedef struct weft__ctx {
  ucontext_t uc;
} weft__ctx_t;
#endif
/* Make c a context that runs entry(arg) on the stack [lo, lo + size) when
 * first switched to. entry must never return. */
WEFT__HIDDEN void weft__ctx_make(weft__ctx_t *c, void *lo, size_t size,
                                 void (*entry)(void *), void *arg);
/* Save the running context in from and run to. Returns when something
 * switches back to from. (Inline over the routine: each return after a
 * switch lands where the return predictor does not expect, so one call
 * level less is one mispredicted return less per switch.) */
#if WEFT__SWITCH_ASM
/* Returns 0 when switched back to, so that a switch can be a tail call
 * (weft_fiber_yield): the resumed context then returns straight to its
 * caller's caller, with no return the predictor has not seen a call for. */
WEFT__HIDDEN int weft__switch_asm(void **save_sp, void *load_sp);
static inline void weft__ctx_swap(weft__ctx_t *from, const weft__ctx_t *to) {
  (void)weft__switch_asm(&from->sp, to->sp);
}
#else
WEFT__HIDDEN void weft__ctx_swap(weft__ctx_t *from, const weft__ctx_t *to);
#endif

/* ---- stacks (stack.c) ----
 * A stack is a private anonymous mapping: one guard page at its low end
 * (a guard region where the kernel has them, else PROT_NONE), then `size`
 * bytes. Each thread keeps a few freed stacks for the next fiber. */
typedef struct weft__stack {
  char *lo;    /* lowest usable byte (just above the guard page) */
  size_t size; /* usable bytes, whole pages */
} weft__stack_t;
/* A stack of at least `size` bytes (rounded up to pages). WEFT_ENOMEM when
 * the system refuses. */
WEFT__HIDDEN int weft__stack_get(size_t size, weft__stack_t *st);
/* Give a stack back (to this thread's cache, or to the system). `low`:
 * the lowest address a fiber's frames still on it may have left poisoned
 * for ASan (its stack pointer when it last switched out; st->lo: unknown,
 * all of it), or NULL when no fiber ran on it. */
WEFT__HIDDEN void weft__stack_put(const weft__stack_t *st, const void *low);
/* Prepare the calling thread to report a fiber stack overflow (an
 * alternate signal stack, the process-wide handler). Idempotent; cheap
 * after the first call on a thread. */
WEFT__HIDDEN void weft__stack_thread_ready(void);
/* True when a fault at addr is an overflow of st: in its guard page or
 * just below it. */
WEFT__HIDDEN bool weft__stack_in_guard(const weft__stack_t *st,
                                       const void *addr);
/* Describe the running fiber for an overflow report: its name (or NULL),
 * its function and the address it was spawned from (fiber.c). Called from
 * the signal handler: reads only the thread's current fiber. */
WEFT__HIDDEN bool weft__fiber_overflow_info(const void *addr, const char **name,
                                            void **fn, void **site);

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
/* weft_future_await() in a fiber (handle.c calls it): suspend fb until f
 * settles, the timeout passes or fb is cancelled. */
WEFT__HIDDEN int weft__fiber_await(weft__fiber_t *fb, struct weft_future *f,
                                   int64_t timeout_ms);
/* Suspend fb until f settles, whether or not fb is (or gets) cancelled:
 * a scope's close waits so, as the cleanup of a cancelled fiber. Returns
 * 0 once f settled; WEFT_ENOMEM; WEFT_EDEADLK when f is fb's own future. */
WEFT__HIDDEN int weft__fiber_await_shielded(weft__fiber_t *fb,
                                            struct weft_future *f);
/* Record where a fiber was spawned from (for the overflow report). */
WEFT__HIDDEN void weft__fiber_set_site(weft__fiber_t *fb, void *site);
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
