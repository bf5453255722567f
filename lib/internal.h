/* SPDX-License-Identifier: MIT */
/* lib/internal.h: private layout of the shared state and helpers shared by
 * the core's files. Never installed, never included by a public header. */
#ifndef WEFT_LIB_INTERNAL_H
#define WEFT_LIB_INTERNAL_H

#include <weft.h>

#include <stdatomic.h>
#include <stdbool.h>

#define WEFT__HIDDEN __attribute__((visibility("hidden")))
/* The functions an operation's round trip runs through (a socket read
 * and write on a loop): kept together in .text.hot. */
#define WEFT__HOT __attribute__((hot))

/* A growable options struct (docs/README.md, "Structs that grow"): the
 * caller says its struct's `size`; weft reads the fields below `known` and
 * every byte from `known` (its reserved slots) to `size` must be zero.
 * Returns 0; WEFT_EINVAL (size below `min`, the first version's, or above
 * WEFT__STRUCT_MAX); WEFT_ENOTSUP (a byte this weft does not know is set:
 * a later weft's caller asks for what this one cannot do). */
#define WEFT__STRUCT_MAX 4096
static inline int weft__struct_check(const void *s, size_t size, size_t min,
                                     size_t known) {
  if (size < min || size > WEFT__STRUCT_MAX)
    return WEFT_EINVAL;
  for (size_t i = known; i < size; i++)
    if (((const unsigned char *)s)[i] != 0)
      return WEFT_ENOTSUP;
  return 0;
}

/* Fault injection and schedule perturbation seams (nothing outside
 * weft_testing). */
#include "testing.h"

/* AddressSanitizer: WEFT__ASAN is 1 in an ASan build. A free list of our
 * own (allocator magazines, socket slabs, recycled jobs and operations)
 * poisons a block while it sits free and unpoisons it when handed out, so
 * the sanitizer runs check the same recycling code users run. */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__ASAN 1
#endif
#endif
#ifdef WEFT__ASAN
#include <sanitizer/asan_interface.h>
#define WEFT__POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define WEFT__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define WEFT__ASAN 0
#define WEFT__POISON(p, n) ((void)(p), (void)(n))
#define WEFT__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Start a thread of weft's own with every signal blocked (signals belong
 * to the loop's signalfd or to the user's threads, never to ours).
 * Returns pthread_create's result. */
#include <pthread.h>
WEFT__HIDDEN int weft__thread_create(pthread_t *t, void *(*fn)(void *),
                                     void *arg);

/* ---- CPU demand (cpu.c) ----
 * The one channel between pool/ and loop/ (neither includes the other):
 * pool workers report when they run and when they park, and a thread that
 * wakes a parked worker notes it; a loop reads both before and during a
 * spin, so that the spin does not hold a CPU a worker needs (see
 * docs/design/loop.md). Relaxed and approximate by design: a stale reading
 * costs one spin too many or too few, never a lost wake-up. Any thread.
 * (Inline: a worker reports around every park, a producer on every wake;
 * the variables below are for these functions only.) */
WEFT__HIDDEN extern _Atomic int weft__cpu_running_workers;
WEFT__HIDDEN extern _Thread_local unsigned weft__cpu_tl_wakes
    __attribute__((tls_model("initial-exec")));
/* A pool worker of any pool starts running (thread start, back from a
 * park) or stops (parks, exits). */
static inline void weft__cpu_worker_runs(void) {
  atomic_fetch_add_explicit(&weft__cpu_running_workers, 1,
                            memory_order_relaxed);
}
static inline void weft__cpu_worker_stops(void) {
  atomic_fetch_sub_explicit(&weft__cpu_running_workers, 1,
                            memory_order_relaxed);
}
/* Pool workers not parked right now, across every pool in the process. */
static inline int weft__cpu_workers_running(void) {
  return atomic_load_explicit(&weft__cpu_running_workers, memory_order_relaxed);
}
/* This thread woke (or found waking) a parked pool worker: that worker is
 * about to need a CPU. */
static inline void weft__cpu_note_wake(void) { weft__cpu_tl_wakes++; }
/* How many times this thread did so, ever (wraps): a reader compares it
 * with what it saw last. */
static inline unsigned weft__cpu_wakes_here(void) { return weft__cpu_tl_wakes; }

/* CPUs this process may use: its affinity mask, capped by a cgroup v2
 * quota; at least 1 (cpu.c). */
WEFT__HIDDEN unsigned weft__cpu_count(void);
WEFT__HIDDEN unsigned weft__cgroup_cpus(const char *path);

/* Allocation: every internal allocation goes through these. */
WEFT__HIDDEN void *weft__malloc(size_t size);
WEFT__HIDDEN void weft__free(void *ptr, size_t size);
/* Grow or shrink a block; on failure NULL and the old block is untouched. */
WEFT__HIDDEN void *weft__realloc(void *ptr, size_t old_size, size_t new_size);
#if WEFT__TESTING && !defined(WEFT__ALLOC_IMPL)
/* Each call site is a fault site of its own ("alloc"). */
#define weft__malloc(size) (WEFT__FAULT("alloc") ? NULL : (weft__malloc)(size))
#define weft__realloc(ptr, old_size, new_size)                                 \
  (WEFT__FAULT("alloc") ? NULL : (weft__realloc)(ptr, old_size, new_size))
#endif
/* Ask the kernel to back the whole pages inside [p, p + len) now, in one
 * call, instead of one page fault per 4 KiB page on first write. A hint:
 * the contents are unchanged, and where it is refused (an old kernel, an
 * unusual mapping) the pages fault in later as usual. */
WEFT__HIDDEN void weft__prefault(void *p, size_t len);
/* For a thread with nothing to do: back the next pages the default
 * allocator will hand out (at most 256 KiB per call, never beyond the 2 MiB
 * region in use). True if it did some (time passed: look for work again),
 * false if there was nothing to do. */
WEFT__HIDDEN bool weft__alloc_idle(void);
/* The default allocator's memory (region.c), for its block cache
 * (alloc.c): blocks are carved from chunks of WEFT__CHUNK bytes aligned to
 * their size, whose first WEFT__CHUNK_HEAD bytes hold the chunk's count of
 * blocks not yet given up. */
enum { WEFT__CHUNK = 16384, WEFT__CHUNK_HEAD = 64 };
typedef struct weft__chunk weft__chunk_t;
/* The chunk a carved block lies in. */
static inline weft__chunk_t *weft__chunk_of(const void *b) {
  return (weft__chunk_t *)((uintptr_t)b & ~(uintptr_t)(WEFT__CHUNK - 1));
}
/* A fresh chunk for blocks of `block` bytes: its first block, and in *n
 * how many fit; all of them count as live until given up. NULL without
 * memory. */
WEFT__HIDDEN char *weft__chunk_start(size_t block, unsigned *n);
/* Give n blocks of ch up for good; the chunk goes back to its region with
 * its last. */
WEFT__HIDDEN void weft__chunk_drop(weft__chunk_t *ch, unsigned n);
/* For tests: the default allocator's regions mapped now, idle now (mapped,
 * nothing lent), and mapped since the process started. */
WEFT__HIDDEN void weft__alloc_regions(size_t *mapped, size_t *idle,
                                      size_t *maps);
/* For tests: how long an idle region stays mapped (default one second). */
WEFT__HIDDEN void weft__alloc_set_decay(int64_t ns);
/*
 * The state word. Bits 0-2 hold the state (or, while bit 3 BUSY is set, the
 * state being written); readers treat BUSY as pending. Flag bits above are
 * only ever set, never cleared, except BUSY. Bits 24-31 hold the kind, fixed
 * at creation. A K_EXT state gets no flags once shared (weft__ext_on_cancel
 * runs before), so whoever claimed it may clear BUSY with a plain store.
 */
enum {
  WEFT__ST_MASK = 0x7u,
  WEFT__BUSY = 0x8u,
  WEFT__F_PROMISE_GONE = 0x10u, /* promise handle released */
  WEFT__F_HOOK = 0x20u,         /* cancel hook installed (promise kind) */
  WEFT__F_CLAIMED = 0x40u,      /* then: producer side claimed */
  WEFT__F_FOLLOWING = 0x80u,    /* then: now following another future */
  WEFT__F_FCLAIMED = 0x100u,    /* then: the followed future's need claimed */
  WEFT__F_BORROWED = 0x200u,    /* value borrowed from the future in src */
  WEFT__F_DTOR = 0x400u,        /* fulfilled value owns a destructor */
  WEFT__F_WSLOT = 0x800u,       /* ext: a weft__ext_ws_t (room for a watch) */
  WEFT__F_PTR = 0x1000u,        /* fulfilled with a pointer (not an integer) */
  WEFT__KIND_SHIFT = 24
};

enum {
  WEFT__K_PROMISE = 1,
  WEFT__K_THEN = 2,
  WEFT__K_COMBINE = 3,
  WEFT__K_EXT = 4 /* a promise-like state embedded in a larger object */
};

typedef union weft__fnslot {
  weft_dtor_fn dtor;     /* fulfilled: value destructor */
  weft_cancel_fn cancel; /* pending promise: cancel hook */
  weft_then_fn then;     /* pending then: the continuation */
} weft__fnslot_t;

/* The shared state. weft_future_t and weft_promise_t both point at it. */
struct weft_future {
  /* Low 32 bits: memory references. High 32: needs (handles + pending
   * downstream users). One word, so a handle is taken or given back with
   * one atomic operation. */
  _Atomic uint64_t rn;
  _Atomic uint32_t word;       /* state, flags and kind */
  int32_t err;                 /* rejection code */
  _Atomic(weft_task_t *) head; /* continuations; WEFT__CLOSED once settled */
  union {
    void *ptr;
    intptr_t i;
  } val;              /* fulfilled value; pending: hook or then argument */
  weft__fnslot_t aux; /* see weft__fnslot_t */
};

#define WEFT__CLOSED ((weft_task_t *)(uintptr_t)1)

#define WEFT__REF ((uint64_t)1)
#define WEFT__NEED ((uint64_t)1 << 32)
static inline uint32_t weft__refs_of(uint64_t rn) { return (uint32_t)rn; }
static inline uint32_t weft__needs_of(uint64_t rn) {
  return (uint32_t)(rn >> 32);
}

static inline uint32_t weft__kind(uint32_t w) { return w >> WEFT__KIND_SHIFT; }

/*
 * A promise-like state at the start of a larger allocation (a pool job, a
 * loop operation): one allocation holds the future and its producer. It
 * behaves as a promise (cancel hook in aux/val). When the last reference
 * goes, fini takes the memory (to free or recycle it): the owner knows the
 * size, so the state does not carry it.
 */
typedef struct weft__ext {
  struct weft_future base;
  void (*fini)(struct weft__ext *e);
} weft__ext_t;

/* A watch (weft_future_watch): a continuation without a derived future.
 * 48 bytes; one with an arg_dtor (rare) is allocated with the trailing
 * field (weft__watch_dtor_t), and bit 0 of `ex` says so (a watch per job in
 * flight: docs/design/future.md). */
typedef struct weft__watch {
  weft_task_t node; /* on the source's list, then the executor's queue */
  uintptr_t ex;     /* the executor; bit 0: a weft__watch_dtor_t */
  struct weft_future *src;
  weft_watch_fn fn;
  void *arg;
} weft__watch_t;
typedef struct weft__watch_dtor {
  weft__watch_t w;
  weft_dtor_fn arg_dtor;
} weft__watch_dtor_t;

/* An embedded state with room for one watch after it (F_WSLOT): a watch
 * (without arg_dtor) given the only handle of such a future takes the room
 * instead of an allocation. Only then: with one handle there is one
 * caller, and once the watch has that handle no other watch can come (no
 * handle is left). */
typedef struct weft__ext_ws {
  weft__ext_t ext;
  weft__watch_t slot;
} weft__ext_ws_t;

/* (Inline: every job and loop operation starts with these.) */
static inline void weft__state_init(struct weft_future *f, unsigned kind,
                                    uint32_t refs, uint32_t needs) {
  atomic_init(&f->rn, (uint64_t)refs | (uint64_t)needs << 32);
  atomic_init(&f->word, (uint32_t)kind << WEFT__KIND_SHIFT);
  f->err = 0;
  atomic_init(&f->head, NULL);
  f->val.ptr = NULL;
  f->aux.dtor = NULL;
}

/* Initialise e as a pending state with `refs` references and `needs`
 * needs, whose memory fini takes when the last reference goes. */
static inline void weft__ext_init(weft__ext_t *e, void (*fini)(weft__ext_t *e),
                                  uint32_t refs, uint32_t needs) {
  weft__state_init(&e->base, WEFT__K_EXT, refs, needs);
  e->fini = fini;
}

/* Install the producer's cancel hook before the state is shared: a plain
 * store, no locked instruction on every job's and loop operation's way in. */
static inline void weft__ext_on_cancel(weft__ext_t *e, weft_cancel_fn fn,
                                       void *arg) {
  e->base.aux.cancel = fn;
  e->base.val.ptr = arg;
  atomic_store_explicit(
      &e->base.word,
      atomic_load_explicit(&e->base.word, memory_order_relaxed) | WEFT__F_HOOK,
      memory_order_relaxed);
}
/* Write a claimed (or still unshared) embedded state's value as a pointer,
 * with its destructor (NULL: none), before it is published, as settle_ptr
 * does for a promise: weft_future_value() returns only a value so marked
 * (an integer or no value reads as NULL), and a value with a destructor is
 * owned (a follower borrows it). The destructor takes aux, the cancel
 * hook's slot, which a claimed state no longer needs. A plain store:
 * nothing else writes the word of a claimed K_EXT state. */
static inline void weft__ext_value_ptr(struct weft_future *f, void *p,
                                       weft_dtor_fn dtor) {
  f->val.ptr = p;
  f->aux.dtor = dtor;
  atomic_store_explicit(&f->word,
                        atomic_load_explicit(&f->word, memory_order_relaxed) |
                            WEFT__F_PTR | (dtor != NULL ? WEFT__F_DTOR : 0),
                        memory_order_relaxed);
}
/* Settle f with what a job or continuation returned (by pointer, not a
 * 24-byte copy the callee just stored: docs/design/future.md). A value
 * that loses the race is destroyed. weft_follow() results are not
 * supported here: they reject with WEFT_ENOTSUP (and the followed handle
 * is released). */
WEFT__HIDDEN void weft__settle_result(struct weft_future *f,
                                      const weft_result_t *r);

/* ---- the state's reads and attach, inline for future.c and handle.c ----
 * (Inline: both files run them on every call, as they did when they were
 * one file; the other folders call weft__state and weft__attach.) */
static inline uint32_t weft__word(const struct weft_future *f,
                                  memory_order mo) {
  return atomic_load_explicit(&((struct weft_future *)f)->word, mo);
}
/* A claimed settle shows once published, but a claimed cancel at once: it
 * has no value to write, and a settle that lost to it (WEFT_ECANCELED) must
 * not then read the future pending. */
static inline uint32_t weft__visible_state(uint32_t w) {
  uint32_t st = w & WEFT__ST_MASK;
  return ((w & WEFT__BUSY) && st != WEFT_CANCELLED) ? WEFT_PENDING : st;
}
static inline uint32_t weft__core_state(const struct weft_future *f) {
  return weft__visible_state(weft__word(f, memory_order_acquire));
}
/* The state behind a promise handle still held, or NULL (NULL handle, or
 * released). */
static inline struct weft_future *weft__live_promise(const weft_promise_t *p) {
  struct weft_future *f = (struct weft_future *)p;
  if (f == NULL || (weft__word(f, memory_order_relaxed) & WEFT__F_PROMISE_GONE))
    return NULL;
  return f;
}
/* Put node on f's list; false when f is settled (the caller runs node
 * itself: a continuation of a future the caller saw settled runs on the
 * caller's thread, not later on the settler's). */
static inline bool weft__core_attach(struct weft_future *f, weft_task_t *node) {
  /* Seen settled, its list may still be open while the settler publishes */
  if (weft__core_state(f) != WEFT_PENDING)
    return false;
  weft_task_t *h = atomic_load_explicit(&f->head, memory_order_acquire);
  do {
    if (h == WEFT__CLOSED)
      return false;
    node->next = h;
    WEFT__PERTURB();
  } while (!atomic_compare_exchange_weak_explicit(
      &f->head, &h, node, memory_order_acq_rel, memory_order_acquire));
  return true;
}
/* Free f (its last reference went): its value's destructor, its kind's
 * own memory (future.c). */
WEFT__HIDDEN void weft__destroy(struct weft_future *f);

/* The executor's hold op, where it has one (weft/executor.h): while held,
 * the memory its submit reads stays, also after a shutdown. A caller that
 * may submit later holds it (+1) and gives it back (-1) last: that may
 * free a shut-down executor. */
static inline void weft__executor_hold(weft_executor_t *ex, int delta) {
  const weft_executor_ops_t *ops = ex->ops;
  if (ops->size >= offsetof(weft_executor_ops_t, hold) + sizeof ops->hold &&
      ops->hold != NULL)
    ops->hold(ex, delta);
}

/* The inline executor (what weft_executor_inline() returns) and its
 * per-thread trampoline (executor.c). */
WEFT__HIDDEN extern weft_executor_t weft__inline_executor;
WEFT__HIDDEN void weft__defer(weft_task_t *task);
/* Queue the chain first..last (linked through next, last->next NULL) in
 * order, then drain unless this thread is already draining. */
WEFT__HIDDEN void weft__defer_list(weft_task_t *first, weft_task_t *last);

/* Shared-state primitives (future.c). */
WEFT__HIDDEN int weft__claim(struct weft_future *f, uint32_t target);
WEFT__HIDDEN void weft__publish(struct weft_future *f);
/* Settle f as `state` (its value or error written already) when no other
 * thread can reach f: either its maker has not handed it out yet (nothing
 * is attached, nobody can cancel it), or weft__watched_in_slot(f) said so.
 * Plain stores, no claim and no read-modify-write; one of the maker's
 * references goes, which must not be the last. Returns the attached node
 * (NULL if none; at most one, as weft__watched_in_slot requires), which
 * the caller runs: weft__defer_list(h, h), or, for a watch on the caller's
 * own executor (weft__watch_on), queued there with run set to
 * weft__watch_run. */
static inline weft_task_t *weft__settle_unshared_take(struct weft_future *f,
                                                      uint32_t state) {
  uint32_t w = atomic_load_explicit(&f->word, memory_order_relaxed);
  atomic_store_explicit(&f->word, (w & ~(uint32_t)WEFT__ST_MASK) | state,
                        memory_order_relaxed);
  weft_task_t *h = atomic_load_explicit(&f->head, memory_order_relaxed);
  atomic_store_explicit(&f->head, WEFT__CLOSED, memory_order_relaxed);
  atomic_store_explicit(
      &f->rn, atomic_load_explicit(&f->rn, memory_order_relaxed) - WEFT__REF,
      memory_order_relaxed);
  return h;
}
/* A watch's first run function (future.c): a node whose run it is, is a
 * weft_future_watch continuation. */
WEFT__HIDDEN void weft__watch_fire(weft_task_t *node);
/* A watch's run function on its executor: calls the user's function, then
 * gives back the watch's handle and memory. */
WEFT__HIDDEN void weft__watch_run(weft_task_t *node);
/* True when node is a watch not yet fired that runs on ex (and has no
 * arg_dtor): its owner may queue it on ex itself, run set to
 * weft__watch_run, instead of going through weft__watch_fire. */
static inline bool weft__watch_on(const weft_task_t *node,
                                  const weft_executor_t *ex) {
  return node->run == weft__watch_fire &&
         ((const weft__watch_t *)node)->ex == (uintptr_t)ex;
}
/* True when the only handle of f (a pending F_WSLOT state) went to a
 * watch in its room, and that watch is all that is attached: nobody can
 * cancel f, attach to it or take a reference (weft_future_watch takes the
 * room only from the only handle, and then no handle is left). Until the
 * watch runs, after the settle, no other thread can reach f, so its
 * producer may treat it as unshared (weft__settle_unshared_take). A node
 * attached before the watch (a waiter an await left when it timed out)
 * keeps f shared. For producers on one thread (a loop's operations). */
static inline bool weft__watched_in_slot(struct weft_future *f) {
  weft_task_t *slot = &((weft__ext_ws_t *)f)->slot.node;
  /* (acquire: the node's fields, written before its attach) */
  return atomic_load_explicit(&f->head, memory_order_acquire) == slot &&
         slot->next == NULL;
}
WEFT__HIDDEN int weft__settle_int(struct weft_future *f, uint32_t state,
                                  intptr_t v, int err);
WEFT__HIDDEN int weft__mirror(struct weft_future *dst, struct weft_future *src,
                              bool borrow);
WEFT__HIDDEN bool weft__attach(struct weft_future *f, weft_task_t *node);
WEFT__HIDDEN void weft__ref(struct weft_future *f);
WEFT__HIDDEN void weft__unref(struct weft_future *f);
/* Give back a need and its reference in one step (the future has settled,
 * so the need no longer decides anything). */
WEFT__HIDDEN void weft__unref_need(struct weft_future *f);
/* Take a need and a reference in one step (a downstream registers). */
WEFT__HIDDEN void weft__ref_need(struct weft_future *f);
WEFT__HIDDEN void weft__drop_need(struct weft_future *f);
WEFT__HIDDEN void weft__cancel_chain(struct weft_future *f, bool owned);
WEFT__HIDDEN uint32_t weft__state(const struct weft_future *f);

/* The user's function behind a queued task, for diagnostics (future.c). */
WEFT__HIDDEN void (*weft__task_callback(const weft_task_t *t))(void);

/* Combinators (combinators.c). */
WEFT__HIDDEN struct weft_future *weft__combine_cancelled(struct weft_future *f);
WEFT__HIDDEN void weft__combine_destroy(struct weft_future *f);

/* Reverse a task list linked through next (Treiber stacks are newest
 * first; their consumers want oldest first). Returns the new head. */
static inline weft_task_t *weft__task_list_reverse(weft_task_t *list) {
  weft_task_t *fwd = NULL;
  while (list != NULL) {
    weft_task_t *next = list->next;
    list->next = fwd;
    fwd = list;
    list = next;
  }
  return fwd;
}

/* True when this thread's trampoline has nothing queued. */
WEFT__HIDDEN bool weft__trampoline_idle(void);
/* Run one queued trampoline task of this thread; false when none. */
WEFT__HIDDEN bool weft__trampoline_help(void);

/* A waiter: a continuation node that wakes a blocked thread. Heap-allocated
 * and reference-counted (the waiting thread and the future's list each hold
 * one), because a waiter that times out leaves its node on the list. */
#include <pthread.h>
typedef struct weft__waiter {
  weft_task_t task;
  _Atomic uint32_t refs;
  _Atomic int done;
  pthread_mutex_t *mu; /* own_mu, or an executor's */
  pthread_cond_t *cv;
  pthread_mutex_t own_mu;
  pthread_cond_t own_cv;
  void (*owner_put)(void *owner); /* run when the waiter is freed */
  void *owner;
} weft__waiter_t;

/* NULL mu/cv: use the waiter's own. Returns NULL on allocation failure. */
WEFT__HIDDEN weft__waiter_t *weft__waiter_new(pthread_mutex_t *mu,
                                              pthread_cond_t *cv);
WEFT__HIDDEN void weft__waiter_put(weft__waiter_t *w);
/* The monotonic deadline (weft_clock_now_ns) timeout_ms from now: -1 for a
 * negative timeout (none), INT64_MAX where the sum would overflow, so that
 * any timeout up to INT64_MAX ms is a wait that long (executor.c). */
WEFT__HIDDEN int64_t weft__deadline_after_ms(int64_t timeout_ms);
/* Wait on cv (with mu held) until the deadline (-1: none). Returns 0 when
 * signalled or spuriously woken, WEFT_ETIMEDOUT at the deadline. */
WEFT__HIDDEN int weft__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                                 int64_t deadline_ns);
WEFT__HIDDEN int weft__cond_init(pthread_cond_t *cv);

/* ---- Waiter queues of the sync primitives (sync.c, channel.c) ----
 * An object (weft__sync_t first in it) keeps its lock and a count of
 * references: one for its owner and one per waiter still alive, so a
 * cancel hook that runs late finds the object. A waiter is a promise plus
 * a node in a FIFO queue. A grant is settled outside the lock: pop the
 * waiter under the lock, settle it unlocked, and if the settle lost to a
 * cancel, take the lock again, call weft__swait_lost() and give the grant
 * back. Whoever of the cancel hook and the granter comes last frees the
 * node. */
typedef struct weft__sync {
  pthread_mutex_t mu;
  _Atomic size_t refs;
  void (*free_fn)(struct weft__sync *s);
} weft__sync_t;
typedef struct weft__swait weft__swait_t;
typedef struct weft__waitq {
  weft__swait_t *head, *tail;
  _Atomic size_t n;
} weft__waitq_t;
struct weft__swait {
  weft__swait_t *next, *prev;
  weft__sync_t *sync;
  weft__waitq_t *q; /* the queue it is in; NULL once out */
  weft_promise_t *p;
  void *item;
  bool hook_ran, lost;
};
WEFT__HIDDEN int weft__sync_init(weft__sync_t *s,
                                 void (*free_fn)(weft__sync_t *s));
WEFT__HIDDEN void weft__sync_unref(weft__sync_t *s);
/* A waiter with its promise and cancel hook, its future in *f. */
WEFT__HIDDEN int weft__swait_new(weft__sync_t *s, void *item, weft__swait_t **w,
                                 weft_future_t **f);
/* Free a waiter that was never queued nor settled by a cancel. */
WEFT__HIDDEN void weft__swait_free(weft__swait_t *w);
/* Queue ops; the lock held. */
WEFT__HIDDEN void weft__waitq_push(weft__waitq_t *q, weft__swait_t *w);
WEFT__HIDDEN weft__swait_t *weft__waitq_pop(weft__waitq_t *q);
/* After settling a popped waiter (rc: what the settle returned): true if
 * the settle won (w is freed); false if a cancel came first: the lock is
 * then taken, the caller gives the grant back and calls
 * weft__swait_lost(), which unlocks (and frees w if its hook is done). */
WEFT__HIDDEN bool weft__swait_settled(weft__swait_t *w, int rc);
WEFT__HIDDEN void weft__swait_lost(weft__swait_t *w);
/* Reject every waiter of q with err (the lock not held). */
WEFT__HIDDEN void weft__waitq_reject_all(weft__sync_t *s, weft__waitq_t *q,
                                         int err);

#endif /* WEFT_LIB_INTERNAL_H */
