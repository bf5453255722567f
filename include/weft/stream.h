/* SPDX-License-Identifier: MIT */
/* weft/stream.h: a buffered reader (lines, delimited records, exactly n
 * bytes, peek) and a buffered writer (flush, a bound on queued bytes) over
 * a stream socket of weft/net.h, each wait with a deadline. Guide:
 * docs/streams.md; design: docs/design/streams.md. */
#ifndef WEFT_STREAM_H
#define WEFT_STREAM_H

#include <weft/common.h>
#include <weft/future.h>
#include <weft/net.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * A reader or writer belongs to its socket's loop and is used on that
 * loop's thread (in a callback, or in a fiber running there), like the
 * socket: every function here returns WEFT_EPERM elsewhere, except
 * weft_future_cancel() on the futures they return (any thread). The socket
 * stays the caller's: closing a reader or writer never closes it. Close a
 * writer before closing its socket (the writer's close hands its bytes
 * to the socket). A reader may be closed before or after the socket
 * (its pending wait then settles WEFT_ECANCELED), but after the socket's
 * close, weft_reader_close() is the only call it takes. While a reader exists,
 * read the socket only through it; while a writer exists, write it only
 * through it.
 *
 * Three forms of every wait, one for each way a program is written:
 * - try (weft_reader_try_line, ...): from what is buffered, now, never
 *   waiting: 0 with the result, or WEFT_EAGAIN when more bytes must come
 *   first. Costs no allocation: a loop drains a buffer of lines with it.
 * - future (weft_reader_read_line, ...): waits as long as it must (it may
 *   settle before it returns, when the buffer or the socket has what it
 *   wants): for callbacks (weft_future_watch on weft_loop_executor()).
 * - await (weft_reader_await_line, ...): for a fiber: try, and if it has
 *   to wait, the future form and weft_future_await(); returns the result.
 *
 * Deadlines. Every call that can wait takes deadline_ns: absolute, on
 * weft_clock_now_ns()'s clock, 0 for none (as in weft/net.h, "Deadlines").
 * Past it the wait settles WEFT_ETIMEDOUT by itself (at the loop's first
 * timer pass at or after it: timers count whole milliseconds; one timer
 * per reader or writer, armed only while a wait with a deadline is
 * pending), and nothing is lost:
 * bytes read and not consumed stay in the reader for the next call, bytes
 * written stay queued and go on in order. A cancel (weft_future_cancel(),
 * from any thread) keeps everything the same way.
 *
 * Views. A reader's result is a weft_bytes_t pointing into the reader's
 * buffer: valid until the next call on the same reader (any
 * weft_reader_* call but weft_reader_buffered()), the settle of a wait of
 * the reader that was pending when the view was made (the reader reads
 * and slides its buffer while a wait is pending), or its close,
 * whichever comes first. Copy what must live longer.
 */

/** A run of bytes: data[0..len). A reader's results point into its
 * buffer (see "Views" above). */
typedef struct weft_bytes {
  const char *data;
  size_t len;
} weft_bytes_t;

/* ------------------------------------------------------------------ */
/* Reader                                                               */
/* ------------------------------------------------------------------ */

typedef struct weft_reader weft_reader_t;

/** Options for weft_reader_create(). Zero-initialise and set `size`;
 * zero means the default. */
typedef struct weft_reader_options {
  size_t size;        /* sizeof(weft_reader_options_t) */
  size_t buffer_size; /* bytes the reader asks the socket for at once, and
                         its buffer's first size; 0: 16 KiB. The buffer
                         grows past it only when a call's max (or n) needs
                         more room, and only that far. */
  void *reserved[4];  /* zero */
} weft_reader_options_t;

/**
 * Make a buffered reader over a connected stream socket (the socket is
 * still the caller's; see the model). On 0 *out is the reader, the
 * caller's to close with weft_reader_close().
 * Errors: WEFT_EINVAL (sock or out NULL, not a connected stream socket,
 * opts->size below sizeof its options struct or above 4096);
 * WEFT_ENOTSUP (a byte weft does not know is set: the reserved slots, or
 * past its struct in a newer caller's; docs/README.md); WEFT_EPERM (off
 * the loop thread); WEFT_ESHUTDOWN (socket closed, loop closing);
 * WEFT_ENOMEM. *out untouched on error; nothing leaks.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_create(weft_socket_t *sock,
                                   const weft_reader_options_t *opts,
                                   weft_reader_t **out);

/**
 * Close the reader (not its socket): its pending wait, if any, settles WEFT_ECANCELED
 * before this returns; its buffered bytes are dropped (peek first to keep
 * them); the socket stays open, the caller's. The reader's memory goes once
 * its socket read in flight, if any, has ended (at once, or on the loop's
 * next turn). Returns 0; WEFT_EINVAL (NULL); WEFT_EPERM (off the loop
 * thread). Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_close(weft_reader_t *r);

/**
 * The next line, from what is buffered: a run of bytes up to and
 * including "\n", of at most max bytes in all; *line gets it without its
 * "\n" or "\r\n" (a "\r" before the "\n" is the terminator's, a "\r"
 * elsewhere is data), and the whole line is consumed.
 * Returns 0; WEFT_EAGAIN (no whole line buffered: wait with
 * weft_reader_read_line() or weft_reader_await_line()); WEFT_EMSGSIZE (max
 * bytes are buffered and none is a "\n": nothing consumed; drop them with
 * weft_reader_consume() or close); WEFT_EOF (the stream ended and no whole
 * line is left: the rest stays, see weft_reader_buffered()); the stream's
 * error (WEFT_ECONNRESET, ...) likewise; WEFT_EINVAL (r or line NULL, max
 * 0); WEFT_EPERM (off the loop thread); WEFT_EBUSY (a wait of this reader
 * is pending). *line is untouched unless 0 is returned.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_try_line(weft_reader_t *r, size_t max,
                                     weft_bytes_t *line);

/**
 * As weft_reader_try_line() for any delimiter byte: *out gets the bytes up
 * to and including the first `delim` (at most max in all), consumed.
 * Returns and errors: as weft_reader_try_line(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_try_until(weft_reader_t *r, unsigned char delim,
                                      size_t max, weft_bytes_t *out);

/**
 * The next n bytes, from what is buffered, consumed.
 * Returns 0; WEFT_EAGAIN (fewer buffered); WEFT_EOF / the stream's error
 * (fewer buffered, and no more will come: they stay); WEFT_EINVAL (r or
 * out NULL, n 0); WEFT_EPERM; WEFT_EBUSY. Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_try_exactly(weft_reader_t *r, size_t n,
                                        weft_bytes_t *out);

/**
 * Every byte buffered now, nothing consumed: *out may be empty. Never
 * fails for a valid reader, including after WEFT_EOF or an error (what was
 * left before the end). Unlike every other call it does not end an
 * earlier result's view. Returns 0; WEFT_EINVAL (NULL); WEFT_EPERM.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_buffered(const weft_reader_t *r, weft_bytes_t *out);

/**
 * Drop the first n buffered bytes (after a peek, or a line past its max).
 * Returns 0; WEFT_EINVAL (NULL, n more than is buffered); WEFT_EPERM;
 * WEFT_EBUSY (a wait is pending). Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_consume(weft_reader_t *r, size_t n);

/**
 * Wait for the next line (as weft_reader_try_line()), reading the socket
 * as needed. *out is fulfilled with a pointer to a weft_bytes_t the future
 * holds (weft_future_value(): valid while the future is held) viewing the
 * line, consumed; the view is valid until the next call on r (see
 * "Views"). It settles before it
 * returns when a line is buffered, or the socket has bytes at hand that
 * complete one. One wait per reader at a time.
 * Rejected with: WEFT_ETIMEDOUT (deadline_ns passed), WEFT_ECANCELED (the
 * future was cancelled, the reader or the socket closed): in
 * both cases whatever was read stays buffered for the next call;
 * WEFT_EMSGSIZE, WEFT_EOF, the stream's error: as weft_reader_try_line();
 * WEFT_ENOMEM (the buffer could not grow toward max, or the socket read
 * could not start: nothing lost, the bytes stay buffered).
 * Errors (returned): WEFT_EINVAL (r or out NULL, max 0, deadline_ns < 0);
 * WEFT_EPERM (off the loop thread); WEFT_EBUSY (a wait of r is pending);
 * WEFT_ENOMEM. On error nothing was started, *out untouched.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_reader_read_line(weft_reader_t *r, size_t max,
                                      int64_t deadline_ns, weft_future_t **out);

/** weft_reader_read_line() for any delimiter byte (the segment keeps its
 * delimiter, as weft_reader_try_until()). Same outcomes and errors.
 * Thread: the loop thread. */
WEFT_EXTERN int weft_reader_read_until(weft_reader_t *r, unsigned char delim,
                                       size_t max, int64_t deadline_ns,
                                       weft_future_t **out);

/** Wait for exactly n bytes (as weft_reader_try_exactly()); the future's
 * value as weft_reader_read_line()'s. Rejected with WEFT_EOF when the
 * stream ends first (the bytes stay buffered), and otherwise as
 * weft_reader_read_line(). Errors (returned): as there, with n 0 for max
 * 0. Thread: the loop thread. */
WEFT_EXTERN int weft_reader_read_exactly(weft_reader_t *r, size_t n,
                                         int64_t deadline_ns,
                                         weft_future_t **out);

/** Wait until at least n bytes are buffered and see them all, nothing
 * consumed: the future's value (as weft_reader_read_line()'s) views every
 * buffered byte (n or more). Outcomes and errors as
 * weft_reader_read_exactly(). Thread: the loop thread. */
WEFT_EXTERN int weft_reader_peek(weft_reader_t *r, size_t n,
                                 int64_t deadline_ns, weft_future_t **out);

/**
 * In a fiber: the next line, waiting (the fiber suspended, the loop free)
 * as long as it must. Returns 0 with *line (as weft_reader_try_line());
 * otherwise what weft_reader_read_line() rejects with (*line untouched,
 * bytes kept), or returns; and WEFT_ECANCELED / WEFT_ETIMEDOUT when the
 * fiber itself is cancelled while it waits (its scope's deadline), the
 * read cancelled with nothing lost; WEFT_EDEADLK when it would have to
 * wait outside a fiber (on the loop thread itself: nothing consumed).
 * Thread: a fiber on the loop thread (or the loop thread, for a line
 * already buffered).
 */
WEFT_EXTERN int weft_reader_await_line(weft_reader_t *r, size_t max,
                                       int64_t deadline_ns, weft_bytes_t *line);

/** weft_reader_await_line() for any delimiter (as weft_reader_read_until()).
 * Thread: as weft_reader_await_line(). */
WEFT_EXTERN int weft_reader_await_until(weft_reader_t *r, unsigned char delim,
                                        size_t max, int64_t deadline_ns,
                                        weft_bytes_t *out);

/** weft_reader_await_line() for exactly n bytes (as
 * weft_reader_read_exactly()). Thread: as weft_reader_await_line(). */
WEFT_EXTERN int weft_reader_await_exactly(weft_reader_t *r, size_t n,
                                          int64_t deadline_ns,
                                          weft_bytes_t *out);

/** weft_reader_await_line() for a peek of at least n bytes (as
 * weft_reader_peek(): nothing consumed). Thread: as
 * weft_reader_await_line(). */
WEFT_EXTERN int weft_reader_await_peek(weft_reader_t *r, size_t n,
                                       int64_t deadline_ns, weft_bytes_t *out);

/* ------------------------------------------------------------------ */
/* Writer                                                               */
/* ------------------------------------------------------------------ */

typedef struct weft_writer weft_writer_t;

/** Options for weft_writer_create(). Zero-initialise and set `size`;
 * zero means the default. */
typedef struct weft_writer_options {
  size_t size;        /* sizeof(weft_writer_options_t) */
  size_t buffer_size; /* the first size of each of the writer's two
                         buffers (one in a socket write, one filling);
                         0: 16 KiB. The filling one grows, doubling up to
                         what max_queued allows, when more is written
                         while the other is in flight, and goes back to
                         this size once sent. */
  size_t max_queued;  /* the bound: bytes written and not yet taken by the
                         kernel; 0: 1 MiB */
  void *reserved[4];  /* zero */
} weft_writer_options_t;

/**
 * Make a buffered writer over a connected stream socket (still the
 * caller's; see the model). Bytes written are copied into the writer's
 * buffer; the writes of one callback (or of a fiber until it next waits)
 * go to the socket together, in one weft_socket_write() of contiguous
 * bytes, when that code returns to the loop, and the kernel takes them at
 * the loop's next wait. While one such socket write is in flight, later
 * writes gather in the writer's second buffer and go together, in one
 * weft_socket_write(), when it ends. A socket write the writer cannot
 * start for want of memory is tried again 1 ms later (nothing lost).
 * Errors: as weft_reader_create(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_writer_create(weft_socket_t *sock,
                                   const weft_writer_options_t *opts,
                                   weft_writer_t **out);

/**
 * Close the writer (not its socket): its pending waits settle WEFT_ECANCELED before this
 * returns. Bytes already written are not dropped: they go on to the socket
 * in order, and the writer's memory goes once the kernel took them (or the
 * stream failed, or the socket was closed). Every byte is handed to the
 * socket before this returns, so after it the writer never touches the
 * socket: closing the socket at once is allowed (its queued writes, and
 * with them these bytes, are then dropped, as weft_socket_close() says).
 * To know when they went, flush first. Returns 0; WEFT_EINVAL (NULL);
 * WEFT_EPERM; WEFT_ENOMEM (the bytes could not be handed to the socket:
 * nothing changed, the writer is still the caller's).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_writer_close(weft_writer_t *w);

/**
 * Copy len bytes into the writer, all or nothing, to be sent after what
 * was written before. Returns 0 (len 0: nothing to do); WEFT_EAGAIN (no
 * room: weft_writer_queued() + len would pass max_queued; nothing copied:
 * wait with weft_writer_wait_room() or use weft_writer_await_write());
 * WEFT_EMSGSIZE (len above max_queued: it can never fit); the stream's
 * error once a write of the writer failed (WEFT_EPIPE, WEFT_ECONNRESET,
 * WEFT_ECANCELED when the socket was closed, ...); WEFT_EINVAL (w NULL, or
 * data NULL with len > 0); WEFT_EPERM; WEFT_ENOMEM (nothing copied).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_writer_write(weft_writer_t *w, const void *data,
                                  size_t len);

/**
 * Bytes written and not yet taken by the kernel (what max_queued bounds).
 * 0 for NULL, and once the stream failed (its bytes were dropped).
 * Thread: the loop thread.
 */
WEFT_EXTERN size_t weft_writer_queued(const weft_writer_t *w);

/**
 * Backpressure: *out is fulfilled with 0 once a write of n bytes would be
 * taken (weft_writer_queued() + n <= max_queued), at once if it would now.
 * Room waits are served in the order they were made (a later, smaller one
 * waits for an earlier one). Rejected with
 * WEFT_ETIMEDOUT (deadline_ns passed: nothing changes), WEFT_ECANCELED
 * (cancelled, or the writer closed), or the stream's error.
 * Errors (returned): WEFT_EINVAL (w or out NULL, deadline_ns < 0);
 * WEFT_EMSGSIZE (n above max_queued); WEFT_EPERM; WEFT_ENOMEM.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_writer_wait_room(weft_writer_t *w, size_t n,
                                      int64_t deadline_ns, weft_future_t **out);

/**
 * *out is fulfilled with 0 once the kernel has taken every byte written
 * before this call (at once when there is none). Rejected with
 * WEFT_ETIMEDOUT (deadline_ns passed: the bytes stay queued and go on),
 * WEFT_ECANCELED (cancelled, or the writer closed), or the stream's
 * error (WEFT_EPIPE, WEFT_ECONNRESET, ...).
 * Errors (returned): WEFT_EINVAL (w or out NULL, deadline_ns < 0);
 * WEFT_EPERM; WEFT_ENOMEM. Thread: the loop thread.
 */
WEFT_EXTERN int weft_writer_flush(weft_writer_t *w, int64_t deadline_ns,
                                  weft_future_t **out);

/**
 * In a fiber: weft_writer_write(), waiting for room first when there is
 * none (the fiber suspended). Returns 0 (copied); the errors of
 * weft_writer_write() but WEFT_EAGAIN; WEFT_ETIMEDOUT (deadline_ns passed
 * before there was room: nothing copied); WEFT_ECANCELED / WEFT_ETIMEDOUT
 * when the fiber is cancelled meanwhile; WEFT_EDEADLK when it would have to
 * wait outside a fiber. Thread: a fiber on the loop thread (or the loop
 * thread, when there is room).
 */
WEFT_EXTERN int weft_writer_await_write(weft_writer_t *w, const void *data,
                                        size_t len, int64_t deadline_ns);

/**
 * In a fiber: weft_writer_flush() and wait for it. Returns 0 (all taken);
 * its rejections; WEFT_ECANCELED / WEFT_ETIMEDOUT when the fiber is
 * cancelled meanwhile; WEFT_EDEADLK outside a fiber with bytes queued.
 * Thread: as weft_writer_await_write().
 */
WEFT_EXTERN int weft_writer_await_flush(weft_writer_t *w, int64_t deadline_ns);

WEFT_END_DECLS

#endif /* WEFT_STREAM_H */
