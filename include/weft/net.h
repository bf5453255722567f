/* SPDX-License-Identifier: MIT */
/* weft/net.h: sockets on the loop (TCP, Unix stream, UDP), every operation
 * a future. Life cycle: a socket is made by listen, udp_bind, or taken from
 * an accept or connect future; shutdown ends a stream's write side (queued
 * writes first); close ends the socket (pending operations cancelled, fd
 * closed, freed). Design: docs/design/net.md. */
#ifndef WEFT_NET_H
#define WEFT_NET_H

#include <weft/common.h>
#include <weft/future.h>
#include <weft/loop.h>

#include <sys/socket.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * A weft_socket_t belongs to one loop and is used on that loop's thread:
 * every function here must be called there, except weft_future_cancel() on
 * the futures they return (any thread). Each operation returns a future;
 * chain on it with weft_future_then(f, weft_loop_executor(loop), ...), so a
 * connection reads as a story: accept, read, write, read, ..., close.
 *
 * Buffers. A read or write borrows the caller's buffer: the caller keeps it
 * alive and untouched (a write's) or unread (a read's) until the operation's
 * future settles, or until weft_future_cancel() on it returns, whichever
 * comes first. From then on weft never touches the buffer again. Writes
 * are not copied; on a loop with an io_uring, a stream read's bytes land in
 * a buffer of the loop's pool first and are copied into the caller's (the
 * kernel never holds a caller's read buffer).
 *
 * Cancellation. Cancelling an operation on the loop thread removes it from
 * the reactor before the cancel returns. From another thread, the cancel
 * makes the operation inert before it returns (a syscall on the buffer that
 * is already under way on the loop thread is waited for; one that has not
 * started never starts) and the loop removes it on its next turn. Either
 * way, when the future says cancelled nothing was lost: bytes that a
 * cancelled read had already received, or a connection a cancelled accept
 * had already taken, are kept for the next read or accept. A cancelled
 * write may have sent a prefix of its buffer (bytes cannot be unsent); the
 * stream then carries that prefix. An operation that completed first
 * reports its result (the cancel returns WEFT_EALREADY).
 *
 * When operations settle. The same on every loop, with or without an
 * io_uring: a read or accept settles before it returns when the loop has
 * already seen what it wants (bytes or a connection the socket holds),
 * else later on the loop thread; a write of at least one byte to a stream
 * that has not failed never settles before it returns: the loop hands it
 * to the kernel, with every other write queued by then, when it next waits
 * for events, and it settles then; close and a cancel on the loop thread
 * settle what they end before they return.
 *
 * Errors and ownership. Errors of one connection settle that connection's
 * futures only: a reset, a broken pipe or end of stream rejects the
 * operation that met it and every later one on that socket (with the same
 * code) until the owner closes it; no other socket is touched. An error on
 * a listening socket rejects that listener's accept futures; running out of
 * file descriptors (EMFILE/ENFILE) is not an error of the listener: pending
 * accepts stay pending, the listener stops taking connections (they wait in
 * the kernel's backlog, not dropped) and retries with a backoff (5 ms
 * doubling to 500 ms, and at once whenever a weft socket of the loop is
 * closed), without a busy loop. SIGPIPE never fires: writes use
 * MSG_NOSIGNAL and a peer that went away rejects with WEFT_EPIPE or
 * WEFT_ECONNRESET. EINTR and EAGAIN never reach the caller.
 *
 * Who owns what. Whoever owns a socket closes it with weft_socket_close()
 * (which cancels its pending operations). A socket from weft_socket_listen() or
 * weft_socket_udp_bind() is the caller's at once. A socket from weft_socket_accept() or
 * weft_socket_connect() is the value of its fulfilled future, and the future owns
 * it until the caller takes it with weft_socket_take(): from then on it is
 * the caller's. A future released unread (its last handle gone, and every
 * then or combinator that held it done, without a take) closes its socket
 * as weft_socket_close() would, so the peer sees the connection end; the
 * close runs on the loop thread (a release on another thread hands it to
 * the loop). weft_future_value() reads the socket without taking it:
 * borrowed, valid while the future is held and the socket open (closing it
 * through that pointer is allowed). weft_loop_close() closes every socket
 * of the loop that is still open, taken or not, cancelling its operations
 * (their continuations run before it returns, and may still name the
 * socket: see there); socket pointers are invalid afterwards, and a future
 * released after that has nothing left to close.
 */

/** A socket address: IPv4, IPv6 or Unix path. Plain data; copy freely. */
typedef struct weft_addr {
  socklen_t len;
  struct sockaddr_storage ss;
} weft_addr_t;

/**
 * Fill *out from a numeric IPv4 ("127.0.0.1") or IPv6 ("::1") address and a
 * port (0: any free port, for listening). No name lookup: resolve names with
 * getaddrinfo() in a blocking job (weft_pool_submit_blocking()), never on
 * the loop. Returns 0; WEFT_EINVAL (NULL, or not a numeric address).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_addr_init_ip(const char *ip, uint16_t port,
                                  weft_addr_t *out);

/** Fill *out with a Unix socket path. Returns 0; WEFT_EINVAL (NULL, empty
 * or too long for sun_path). Thread: any thread. */
WEFT_EXTERN int weft_addr_init_unix(const char *path, weft_addr_t *out);

/** The port of an IPv4/IPv6 address (host order), or WEFT_EINVAL (NULL or
 * not an IP address). Thread: any thread. */
WEFT_EXTERN int weft_addr_port(const weft_addr_t *addr);

/**
 * Write "1.2.3.4:80", "[::1]:80" or "unix:/path" into buf (always
 * terminated when n > 0). Returns 0; WEFT_EINVAL (NULL, unknown family);
 * WEFT_ERANGE (n too small; buf holds a truncated string).
 * Thread: any thread.
 */
WEFT_EXTERN int weft_addr_format(const weft_addr_t *addr, char *buf, size_t n);

typedef struct weft_socket weft_socket_t;

/* ------------------------------------------------------------------ */
/* Stream sockets: TCP (IPv4, IPv6) and Unix                            */
/* ------------------------------------------------------------------ */

/**
 * Listen on addr: TCP for an IP address (with SO_REUSEADDR; port 0 picks a
 * free port, see weft_socket_local_addr()), a Unix stream socket for a path (an
 * existing file at the path is an error: WEFT_EADDRINUSE; remove it
 * yourself). backlog <= 0 means SOMAXCONN. On 0 *out is the listener,
 * owned by the caller (weft_socket_close()).
 * Errors: WEFT_EINVAL (NULL, unknown family); WEFT_EPERM off the loop
 * thread; WEFT_ESHUTDOWN (loop closing); WEFT_ENOMEM; WEFT_EMFILE /
 * WEFT_ENFILE; WEFT_EADDRINUSE, WEFT_EACCES, WEFT_EADDRNOTAVAIL and other
 * codes from bind/listen. *out untouched on error; nothing leaks.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_listen(weft_loop_t *loop, const weft_addr_t *addr,
                                   int backlog, weft_socket_t **out);

/**
 * Accept the next connection: *out is fulfilled with a weft_socket_t *,
 * which the future owns until weft_socket_take(). Several accepts may be
 * pending; connections go to them in order. Rejected with a listener error
 * (see the model above; never with EMFILE, EAGAIN or ECONNABORTED, which
 * are retried inside). Cancel it to stop waiting.
 * Errors (returned): WEFT_EINVAL (NULL, not a listener); WEFT_EPERM;
 * WEFT_ESHUTDOWN; WEFT_ENOMEM. Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_accept(weft_socket_t *listener,
                                   weft_future_t **out);

/**
 * Connect a stream socket to addr (TCP or Unix). *out is fulfilled with the
 * connected weft_socket_t * (the future's until weft_socket_take()), or
 * rejected with the reason:
 * WEFT_ECONNREFUSED, WEFT_ETIMEDOUT (the kernel's), WEFT_ENETUNREACH,
 * WEFT_ENOENT (no such Unix path), ... For your own time limit use
 * weft_socket_connect_deadline(); a cancel (or that deadline) closes the
 * half-open socket.
 * Errors (returned): WEFT_EINVAL; WEFT_EPERM; WEFT_ESHUTDOWN; WEFT_ENOMEM;
 * WEFT_EMFILE / WEFT_ENFILE (no fd for the socket).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_connect(weft_loop_t *loop, const weft_addr_t *addr,
                                    weft_future_t **out);

/**
 * Take the socket of a fulfilled weft_socket_accept() or weft_socket_connect() future:
 * on 0 *out is the socket, now the caller's to close (weft_socket_close()),
 * and releasing the future no longer touches it. Until then the future
 * owns it (see "Who owns what" above). Take once, right after the future
 * settles, usually in its continuation.
 * Errors: WEFT_EINVAL (NULL, or f is not a future weft_socket_accept() or
 * weft_socket_connect() returned: a future derived from one does not own the
 * socket); WEFT_EPERM off the loop thread; WEFT_EPENDING (not settled);
 * the future's own error when it was rejected or cancelled
 * (WEFT_ECANCELED, ...); WEFT_EALREADY (taken already); WEFT_ESHUTDOWN
 * (the socket was closed meanwhile: through weft_future_value()'s pointer,
 * or by the loop's close). *out untouched on error.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_take(weft_future_t *f, weft_socket_t **out);

/**
 * Read some bytes (1..len) into buf: *out is fulfilled with the count
 * (weft_future_int()). At end of stream (the peer shut down its write side
 * or closed) it is rejected with WEFT_EOF; after a reset with
 * WEFT_ECONNRESET. Reads queue in order; the buffer rule is in the model.
 * Errors (returned): WEFT_EINVAL (NULL, len 0, not a connected stream);
 * WEFT_EPERM; WEFT_ESHUTDOWN (socket closed or loop closing); WEFT_ENOMEM.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_read(weft_socket_t *sock, void *buf, size_t len,
                                 weft_future_t **out);

/**
 * Read exactly len bytes into buf: fulfilled with len, or rejected with
 * WEFT_EOF if the stream ends first (the bytes that did arrive are in buf;
 * how many is not reported), or another connection error.
 * Errors (returned): as weft_socket_read(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_read_exactly(weft_socket_t *sock, void *buf,
                                         size_t len, weft_future_t **out);

/**
 * Write all len bytes of buf: fulfilled with len once the kernel has taken
 * every byte (partial writes continue inside), or rejected with WEFT_EPIPE /
 * WEFT_ECONNRESET when the peer went away. Writes queue in order and are
 * sent in that order. A write is handed to the kernel when the loop next
 * waits for events, together with every other write queued by then (see
 * "When operations settle" above): its future settles then, never on
 * return. The kernel reads buf only while the loop thread is in that
 * system call, and a cancel from another thread waits for the call to end
 * (a write cancelled then may have been sent, in part or whole).
 * A write of 0 bytes (buf still not NULL) is no error: it is fulfilled
 * with 0 in its turn among the queued writes (at once when nothing is
 * queued), and on a stream that failed a write is rejected on return.
 * Errors (returned): as weft_socket_read(), but for len 0. Thread: the loop
 * thread.
 */
WEFT_EXTERN int weft_socket_write(weft_socket_t *sock, const void *buf,
                                  size_t len, weft_future_t **out);

/**
 * Bytes of the socket's weft_socket_write()s that the kernel has not taken yet:
 * each write counts the rest of its buffer from the call until the kernel
 * takes those bytes; a write that fails or is cancelled stops counting
 * when it settles (one cancelled on the loop thread while its bytes are
 * in the kernel: when that send's result comes). weft offers queued
 * writes to the kernel when the loop next waits and whenever the socket
 * has room, and the kernel takes what the socket buffer holds: between
 * weft_socket_write() and the loop's next wait the write counts in full; after,
 * what the socket had no room for, 0 for a peer that keeps up, growing
 * with every write to a peer that does not read.
 * For a per-connection limit on a slow reader. 0 for NULL.
 * Thread: the loop thread.
 */
WEFT_EXTERN size_t weft_socket_write_queued(const weft_socket_t *sock);

/**
 * Shut down the write side once every write queued before it is done: the
 * peer then reads end of stream; reads on this side go on (shutdown in
 * weft's words: no new work, the queued work finishes, then it ends; here
 * what ends is the write direction, not the socket). *out is
 * fulfilled with 0, or rejected with the connection's error.
 * Errors (returned): as weft_socket_read(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_shutdown(weft_socket_t *sock, weft_future_t **out);

/* ------------------------------------------------------------------ */
/* Deadlines                                                            */
/* ------------------------------------------------------------------ */
/*
 * The _deadline forms below start the same operation as the plain call, with a
 * deadline of its own: deadline_ns is absolute, on weft_clock_now_ns()'s clock
 * (as weft_scope_options_t.deadline_ns; one second from now is
 * weft_clock_now_ns() + 1000000000), 0 for none. An operation still pending
 * when its deadline passes is settled by the loop, rejected with
 * WEFT_ETIMEDOUT, at the loop's first timer pass at or after the deadline
 * (timers count whole milliseconds: at most 1 ms late, plus whatever keeps the
 * loop thread busy): no wrapper future, no handle to give up, and a read or
 * accept has left the socket's queue when its continuations run (a read they
 * start gets the bytes that come next). A deadline that has passed already
 * leaves no time to wait: the operation still does what it can at once (a read
 * that finds bytes at hand, an accept that finds a connection waiting settle
 * on return, as in "When operations settle") and otherwise settles
 * WEFT_ETIMEDOUT at the loop's next timer pass. A write goes to the kernel
 * only when the loop next waits, so one whose deadline has passed may time out
 * having sent nothing, or be sent, depending on where in the loop's turn the
 * call was made (whether that timer pass or that wait comes first): give a
 * write some milliseconds. The deadline is the operation's alone: the socket,
 * and the operations queued before and after it, go on as if it had been
 * cancelled, except for a write that was sent in part (below). A cancel before
 * the deadline works as without one. Cost: one timer per socket, made with its
 * first deadline and kept until it closes; an operation that finishes in time
 * leaves it alone (the timer, when it fires, settles what is due and re-arms
 * for the next deadline still queued), and an operation without a deadline
 * never touches it.
 *
 * What a timeout leaves behind, on every loop (with or without io_uring):
 * - read: nothing was read (a read settles with the first bytes); bytes that
 *   come later go to the next read.
 * - read_exactly: the bytes that came are in buf (how many is not reported, as
 *   for WEFT_EOF); what comes later goes to the next read.
 * - write: the peer may have received a prefix of buf. If none of it was sent
 *   (it waited behind other writes, or for room in a full socket buffer), or
 *   all of it, the stream is intact and later writes go on in order. If part
 *   of it was sent, the bytes on the stream no longer frame what the writer
 *   meant: the write side fails with WEFT_ETIMEDOUT, so every write and
 *   shutdown queued after it, and every later one, is rejected with
 *   WEFT_ETIMEDOUT (reads go on). Either way weft_socket_write_queued() stops
 *   counting the write when it settles (one whose bytes are in the kernel at
 *   that moment, on a loop with io_uring: when that send's result comes, as
 *   for a cancel).
 * - connect: the half-open socket is closed, as on a cancel.
 * - accept: a connection that comes later waits for the next accept.
 *
 * Errors (returned) of every _deadline form: those of its plain form, and
 * WEFT_EINVAL for deadline_ns < 0; WEFT_ENOMEM also when the socket's
 * deadline timer cannot be had (the first deadline on a socket allocates
 * it; a later one may need room in the loop's timer heap). On error
 * nothing was started (*out untouched).
 * Thread: the loop thread.
 */

/** weft_socket_read() with a deadline (see "Deadlines" above). */
WEFT_EXTERN int weft_socket_read_deadline(weft_socket_t *sock, void *buf,
                                          size_t len, int64_t deadline_ns,
                                          weft_future_t **out);

/** weft_socket_read_exactly() with a deadline (see "Deadlines" above). */
WEFT_EXTERN int weft_socket_read_exactly_deadline(weft_socket_t *sock,
                                                  void *buf, size_t len,
                                                  int64_t deadline_ns,
                                                  weft_future_t **out);

/** weft_socket_write() with a deadline (see "Deadlines" above). */
WEFT_EXTERN int weft_socket_write_deadline(weft_socket_t *sock, const void *buf,
                                           size_t len, int64_t deadline_ns,
                                           weft_future_t **out);

/** weft_socket_connect() with a deadline (see "Deadlines" above): past it
 * the connect is rejected with WEFT_ETIMEDOUT and its socket closed. A
 * connect refused at once is rejected with that reason, whatever the
 * deadline. */
WEFT_EXTERN int weft_socket_connect_deadline(weft_loop_t *loop,
                                             const weft_addr_t *addr,
                                             int64_t deadline_ns,
                                             weft_future_t **out);

/** weft_socket_accept() with a deadline (see "Deadlines" above). */
WEFT_EXTERN int weft_socket_accept_deadline(weft_socket_t *listener,
                                            int64_t deadline_ns,
                                            weft_future_t **out);

/* ------------------------------------------------------------------ */
/* UDP                                                                  */
/* ------------------------------------------------------------------ */

/**
 * A UDP socket bound to addr (IPv4 or IPv6; port 0 picks one). The caller
 * owns *out. Errors: as weft_socket_listen(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_udp_bind(weft_loop_t *loop, const weft_addr_t *addr,
                                     weft_socket_t **out);

/**
 * Send one datagram of len bytes (0 allowed) to `to` (copied): fulfilled
 * with len, or rejected with the kernel's reason (WEFT_ECONNREFUSED when an
 * earlier datagram to that peer drew an ICMP refusal; WEFT_EMSGSIZE for a
 * datagram too long for the socket; a code weft has no name for comes as
 * WEFT_EUNKNOWN).
 * Errors (returned): WEFT_EINVAL (NULL, not a UDP socket); WEFT_EPERM;
 * WEFT_ESHUTDOWN; WEFT_ENOMEM. Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_udp_send(weft_socket_t *sock, const void *buf,
                                     size_t len, const weft_addr_t *to,
                                     weft_future_t **out);

/**
 * Receive one datagram into buf: fulfilled with its length (a datagram
 * longer than len is truncated to len, the rest discarded); the sender's
 * address goes to *from when from is not NULL (same lifetime rule as buf).
 * Errors (returned): as weft_socket_udp_send(). Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_udp_recv(weft_socket_t *sock, void *buf, size_t len,
                                     weft_addr_t *from, weft_future_t **out);

/* ------------------------------------------------------------------ */
/* Any socket                                                           */
/* ------------------------------------------------------------------ */

/** The local address (after port 0, the port that was bound). Returns 0;
 * WEFT_EINVAL; kernel errors. Thread: the loop thread. */
WEFT_EXTERN int weft_socket_local_addr(const weft_socket_t *sock,
                                       weft_addr_t *out);

/** The peer's address of a connected stream. Returns 0; WEFT_EINVAL;
 * WEFT_ENOTCONN. Thread: the loop thread. */
WEFT_EXTERN int weft_socket_peer_addr(const weft_socket_t *sock,
                                      weft_addr_t *out);

/** The socket's fd, for setsockopt() and the like; the socket still owns
 * it (never close it yourself). -1 for NULL. Thread: the loop thread. */
WEFT_EXTERN int weft_socket_fd(const weft_socket_t *sock);

/** TCP_NODELAY on (true) or off (false) for a TCP stream. Returns 0;
 * WEFT_EINVAL; kernel errors (WEFT_ENOTSUP for a Unix socket). Thread: the
 * loop thread. */
WEFT_EXTERN int weft_socket_set_nodelay(weft_socket_t *sock, bool on);

/**
 * Close the socket: every pending operation on it settles as cancelled
 * (WEFT_ECANCELED) before this returns, the fd is closed and the socket
 * freed (later, if called from inside one of its own operations' inline
 * continuations). Queued writes not yet sent are dropped: to send them
 * first, close after the last write's future settles (or after
 * weft_socket_shutdown()). Returns 0; WEFT_EINVAL (NULL); WEFT_EPERM off the loop
 * thread. Thread: the loop thread.
 */
WEFT_EXTERN int weft_socket_close(weft_socket_t *sock);

WEFT_END_DECLS

#endif /* WEFT_NET_H */
