/* SPDX-License-Identifier: MIT */
/* weft/sync.h: semaphore, mutex, one-shot event and bounded channel whose
 * waits are futures, for threads, callbacks and fibers alike. Guide:
 * docs/sync.md; design: docs/design/sync.md. */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <weft/common.h>
#include <weft/error.h>
#include <weft/future.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * Each call that may have to wait (acquire, lock, wait, send, recv) returns
 * a future instead of blocking: continue it with weft_future_then() /
 * weft_watch_start() on any executor, or wait for it with
 * weft_future_await(f, WEFT_FOREVER), which in a fiber suspends the fiber
 * and on a plain thread blocks the thread. Each such call has a form that
 * never waits and never allocates (the try_ calls; weft_event_is_set()).
 *
 * Waiters are served in the order they called (FIFO). A future handed out
 * settles exactly once. Cancelling a waiting future (weft_future_cancel())
 * takes it out of the queue and loses nothing: the grant (a permit, the
 * lock, a channel item, a channel slot) goes to the caller only if its
 * future is fulfilled with it; a grant whose future was cancelled first
 * stays in the object for the next waiter. So a fulfilled acquire owns a
 * permit (release it), a fulfilled lock owns the mutex (unlock it), a
 * fulfilled recv owns its item, and a cancelled one owns nothing.
 *
 * Life cycle: create, use from any number of threads, close once when no
 * other call on the object can run any more (as with weft_socket_close(),
 * close frees the object: a later call on it is undefined). Futures handed
 * out stay valid after the close (they are the caller's handles); the ones
 * still pending are rejected with WEFT_ECANCELED before close returns.
 */

typedef struct weft_semaphore weft_semaphore_t;
typedef struct weft_mutex weft_mutex_t;
typedef struct weft_event weft_event_t;
typedef struct weft_channel weft_channel_t;

/** The largest permit count a semaphore holds (and the largest capacity of
 * a channel). */
#define WEFT_SYNC_MAX ((size_t)1 << 30)

/* ------------------------------------------------------------------ */
/* Semaphore                                                            */
/* ------------------------------------------------------------------ */

/**
 * Create a counting semaphore holding `permits` permits.
 * On 0, *out is the caller's, to end with weft_semaphore_close().
 * Errors: WEFT_EINVAL (out NULL, permits > WEFT_SYNC_MAX), WEFT_ENOMEM.
 * *out untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_semaphore_create(size_t permits, weft_semaphore_t **out);

/**
 * Take one permit. *out is a future fulfilled (no value) once the caller
 * holds the permit: at once if a permit is free and nobody is queued,
 * else when a release hands one over, in FIFO order. Cancelling it while
 * queued takes it out of the queue; a permit is never lost to a cancel.
 * Closing the semaphore rejects it with WEFT_ECANCELED.
 * On 0, *out is one handle owned by the caller.
 * Errors: WEFT_EINVAL (s or out NULL), WEFT_ENOMEM. *out untouched and
 * nothing taken on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_semaphore_acquire(weft_semaphore_t *s,
                                       weft_future_t **out);

/**
 * Take one permit without waiting. Never allocates.
 * Returns 0 (the caller holds a permit), WEFT_EAGAIN (none free, or
 * acquires are queued: a try never passes a waiter), WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_semaphore_try_acquire(weft_semaphore_t *s);

/**
 * Give back `n` permits: queued acquires are fulfilled first, in FIFO
 * order, the rest become free. Never allocates.
 * Returns 0; WEFT_EINVAL (s NULL, n == 0, or the free count would exceed
 * WEFT_SYNC_MAX: nothing changes then).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_semaphore_release(weft_semaphore_t *s, size_t n);

/** Free permits now (a snapshot); 0 for NULL. Thread: any thread. */
WEFT_EXTERN size_t weft_semaphore_available(const weft_semaphore_t *s);

/**
 * End the semaphore: pending acquires are rejected with WEFT_ECANCELED
 * before this returns; it is freed. Permits held are forgotten.
 * Returns 0; WEFT_EINVAL (NULL).
 * Thread: any thread, once no other call on `s` can run.
 */
WEFT_EXTERN int weft_semaphore_close(weft_semaphore_t *s);

/* ------------------------------------------------------------------ */
/* Mutex                                                                */
/* ------------------------------------------------------------------ */
/*
 * A lock owned by whoever's lock future was fulfilled (or whose try_lock
 * returned 0), not by a thread: a fiber or a callback chain may lock on
 * one thread and unlock on another. Unlock hands the lock to the oldest
 * waiter directly (no barging), so no waiter starves.
 */

/**
 * Create an unlocked mutex. On 0, *out is the caller's, to end with
 * weft_mutex_close().
 * Errors: WEFT_EINVAL (out NULL), WEFT_ENOMEM. *out untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_mutex_create(weft_mutex_t **out);

/**
 * Lock. *out is a future fulfilled (no value) once the caller owns the
 * mutex: at once if it is unlocked and nobody waits, else when unlock
 * hands it over, FIFO. Cancelling it while queued takes it out of the
 * queue; a hand-off that loses to the cancel goes to the next waiter.
 * Closing the mutex rejects it with WEFT_ECANCELED.
 * On 0, *out is one handle owned by the caller.
 * Errors: WEFT_EINVAL (m or out NULL), WEFT_ENOMEM. *out untouched and
 * nothing locked on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_mutex_lock(weft_mutex_t *m, weft_future_t **out);

/**
 * Lock without waiting. Never allocates.
 * Returns 0 (the caller owns the mutex), WEFT_EBUSY (locked, or waiters
 * queued), WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_mutex_try_lock(weft_mutex_t *m);

/**
 * Unlock: the oldest waiter becomes the owner (its future is fulfilled),
 * or the mutex becomes unlocked. Never allocates.
 * Returns 0; WEFT_EINVAL (NULL); WEFT_EPERM (not locked: nothing changes).
 * Thread: any thread (the owner's, by contract: weft does not check who).
 */
WEFT_EXTERN int weft_mutex_unlock(weft_mutex_t *m);

/** True while the mutex is owned; false for NULL. A snapshot.
 * Thread: any thread. */
WEFT_EXTERN bool weft_mutex_is_locked(const weft_mutex_t *m);

/**
 * End the mutex: pending locks are rejected with WEFT_ECANCELED before
 * this returns; it is freed (locked or not).
 * Returns 0; WEFT_EINVAL (NULL).
 * Thread: any thread, once no other call on `m` can run.
 */
WEFT_EXTERN int weft_mutex_close(weft_mutex_t *m);

/* ------------------------------------------------------------------ */
/* One-shot event                                                       */
/* ------------------------------------------------------------------ */

/**
 * Create an event, not set. On 0, *out is the caller's, to end with
 * weft_event_close().
 * Errors: WEFT_EINVAL (out NULL), WEFT_ENOMEM. *out untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_event_create(weft_event_t **out);

/**
 * Wait for the event. *out is a future fulfilled (no value) when the event
 * is set: at once if it already is. Cancelling it takes it out of the
 * waiters. Closing the event rejects it with WEFT_ECANCELED.
 * On 0, *out is one handle owned by the caller.
 * Errors: WEFT_EINVAL (e or out NULL), WEFT_ENOMEM. *out untouched on
 * error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_event_wait(weft_event_t *e, weft_future_t **out);

/**
 * Set the event, once: every pending wait is fulfilled, and so is every
 * later one at once. Never allocates.
 * Returns 0; WEFT_EALREADY (set before: nothing changes); WEFT_EINVAL
 * (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_event_set(weft_event_t *e);

/** True once the event is set; false for NULL. Thread: any thread. */
WEFT_EXTERN bool weft_event_is_set(const weft_event_t *e);

/**
 * End the event: pending waits are rejected with WEFT_ECANCELED before
 * this returns; it is freed.
 * Returns 0; WEFT_EINVAL (NULL).
 * Thread: any thread, once no other call on `e` can run.
 */
WEFT_EXTERN int weft_event_close(weft_event_t *e);

/* ------------------------------------------------------------------ */
/* Bounded MPMC channel                                                 */
/* ------------------------------------------------------------------ */
/*
 * A queue of `void *` items (any value, NULL included) holding at most
 * `capacity` of them, for any number of senders and receivers. Items leave
 * in the order they entered. The try_ calls touch only the ring (no lock)
 * unless someone waits; the future forms queue the caller FIFO when the
 * channel is full (send) or empty (recv).
 *
 * Ownership: an item belongs to the channel from the moment its send
 * succeeds (try_send returned 0, or the send future was fulfilled) to the
 * moment a receiver gets it (try_recv returned 0, or the recv future was
 * fulfilled: weft_future_value() gives it, borrowed from the future for
 * the pointer's own sake only; weft does not free items). A send that
 * fails, is rejected or is cancelled never took the item: it is still the
 * sender's (keep the pointer, as the continuation's arg for instance, to
 * reuse or free it).
 *
 * End of sending: weft_channel_shutdown() ends the senders' side (as
 * weft_socket_shutdown() ends a stream's write direction): later sends
 * fail with WEFT_EPIPE, pending sends are rejected with WEFT_EPIPE (their
 * items stay the senders'), receivers still get every item in the channel
 * and then WEFT_EOF, pending and later recvs alike. weft_channel_close()
 * ends the object itself.
 */

/**
 * Create a channel holding at most `capacity` items. `item_dtor` (NULL:
 * none) is called on each item still in the channel when it is closed.
 * On 0, *out is the caller's, to end with weft_channel_close().
 * Errors: WEFT_EINVAL (out NULL, capacity 0 or > WEFT_SYNC_MAX),
 * WEFT_ENOMEM. *out untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_create(size_t capacity, weft_dtor_fn item_dtor,
                                    weft_channel_t **out);

/**
 * Put `item` in the channel without waiting. Never allocates. A try may
 * pass sends that are queued (it never waits behind them).
 * Returns 0 (the channel owns the item), WEFT_EAGAIN (full, or a queued
 * send's item is being moved in at this instant), WEFT_EPIPE (shut down),
 * WEFT_EINVAL (ch NULL). On error the caller keeps `item`.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_try_send(weft_channel_t *ch, void *item);

/**
 * Send `item`. *out is a future fulfilled (integer 0) when the item is
 * taken into the channel: at once if there is room and no send is queued,
 * else when a receiver makes room, FIFO among senders. (A queued send's
 * future is fulfilled first and its item is visible to receivers right
 * after, so that a cancel can never win once the item is in.) Rejected with WEFT_EPIPE when
 * the channel is shut down first, WEFT_ECANCELED when it is closed first;
 * cancelled, it leaves the queue. Whenever the future is not fulfilled the
 * item never entered the channel and is still the caller's.
 * On 0, *out is one handle owned by the caller.
 * Errors: WEFT_EINVAL (ch or out NULL), WEFT_EPIPE (shut down),
 * WEFT_ENOMEM. *out untouched and the item the caller's on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_send(weft_channel_t *ch, void *item,
                                  weft_future_t **out);

/**
 * Take the oldest item without waiting. Never allocates. A try may pass
 * recvs that are queued.
 * Returns 0 (*item is the caller's now), WEFT_EAGAIN (empty, or the oldest
 * item is being handed to a queued recv at this instant), WEFT_EOF (shut
 * down and empty: no item will ever come), WEFT_EINVAL (ch or item NULL).
 * *item untouched on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_try_recv(weft_channel_t *ch, void **item);

/**
 * Receive. *out is a future fulfilled with the oldest item as its pointer
 * value (weft_future_value(); no destructor: the item is the caller's):
 * at once if the channel holds one and no recv is queued, else when a
 * send brings one, FIFO among receivers. Rejected with WEFT_EOF once the
 * channel is shut down and empty, WEFT_ECANCELED when it is closed first;
 * cancelled, it leaves the queue, and an item never goes to a cancelled
 * recv (it stays in the channel for the next one).
 * On 0, *out is one handle owned by the caller.
 * Errors: WEFT_EINVAL (ch or out NULL), WEFT_ENOMEM. *out untouched and
 * nothing taken on error.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_recv(weft_channel_t *ch, weft_future_t **out);

/**
 * End sending (see "End of sending" above). Never allocates.
 * Returns 0; WEFT_EALREADY (shut down before: nothing changes);
 * WEFT_EINVAL (NULL).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_channel_shutdown(weft_channel_t *ch);

/** Items in the channel now (a snapshot); 0 for NULL. Thread: any thread. */
WEFT_EXTERN size_t weft_channel_count(const weft_channel_t *ch);

/**
 * End the channel: pending sends and recvs are rejected with
 * WEFT_ECANCELED before this returns (sends keep their items), items
 * still in it go to the item_dtor given at create (if any), and it is
 * freed. To hand the items to receivers first, shut down, let them drain
 * to WEFT_EOF, then close.
 * Returns 0; WEFT_EINVAL (NULL).
 * Thread: any thread, once no other call on `ch` can run.
 */
WEFT_EXTERN int weft_channel_close(weft_channel_t *ch);

WEFT_END_DECLS

#endif /* WEFT_SYNC_H */
