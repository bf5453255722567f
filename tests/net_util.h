/* SPDX-License-Identifier: MIT */
/* tests/net_util.h: sockets for the net_* suites: test data, plain
 * (non-weft) peers, listeners and accepted pairs on 127.0.0.1, an echo
 * server built from futures, and a cancel from another thread; defined
 * once, in tests/net_util.c. Every wait is bounded by BOUND_MS. */
#ifndef WEFT_NET_UTIL_H
#define WEFT_NET_UTIL_H

#include "loop_util.h"

#include <netinet/in.h>
#include <sys/resource.h>

/* ---- data and descriptors ---- */
uint64_t rng_next(uint64_t *s);                       /* xorshift64 */
void fill(unsigned char *p, size_t n, uint64_t seed); /* n bytes from seed */
void raise_nofile(rlim_t want); /* RLIMIT_NOFILE to want (or the max) */

/* ---- plain peers ---- */
/* A raw TCP socket bound to 127.0.0.1 on a free port, its address in *sin. */
int raw_bound(struct sockaddr_in *sin);
/* A blocking raw socket connected to a. */
int raw_connect(const weft_addr_t *a);

/* ---- listeners and pairs ---- */
typedef struct one {
  long n;
  weft_future_t *f; /* a retained copy of the settled future */
} one_t;

/* A continuation that keeps its settled future in *(one_t *)arg. */
weft_result_t keep_settled(void *arg, weft_future_t *f);

/* The next connection accepted on ls, taken from its future. */
weft_socket_t *accept_one(weft_loop_t *loop, weft_socket_t *ls);
/* A listener on 127.0.0.1 (a free port) in *ls, its address in *addr. */
void listen_local(weft_loop_t *loop, weft_socket_t **ls, weft_addr_t *addr);
/* A listener on loop (in *ls), a plain socket connected to it (in *peer)
 * and, returned, its accepted end. */
weft_socket_t *raw_pair(weft_loop_t *loop, weft_socket_t **ls, int *peer);
/* Close what raw_pair gave (peer, s, ls), then the loop, which must close
 * cleanly. */
void raw_pair_end(weft_loop_t *loop, weft_socket_t *s, weft_socket_t *ls,
                  int peer);
/* A listener on loop and a connection to it through weft_socket_connect: its
 * accepted end in *srv, its connecting end in *cli. */
void connected_pair(weft_loop_t *loop, weft_socket_t **ls, weft_socket_t **srv,
                    weft_socket_t **cli);

/* ---- an echo server built from futures ---- */
typedef struct srv {
  weft_loop_t *loop;
  weft_socket_t *ls;
  weft_addr_t addr;
  long accepted, closed, listener_errors;
  bool stopping; /* set before closing ls: accept no more */
} srv_t;

/* Listen on ip (a free port, in v->addr) and echo every connection until
 * its end of stream; counts in *v. */
void srv_start(srv_t *v, weft_loop_t *loop, const char *ip);
/* Accept the next connection on v->ls (already listening). */
void srv_accept(srv_t *v);

/* ---- a cancel from another thread ---- */
typedef struct xcancel {
  weft_future_t *f;
  _Atomic int go;
  int rc;
  char *poison; /* if set: overwritten with 'X' the moment a cancel wins */
  size_t poison_len;
} xcancel_t;

/* Thread body: waits for go, cancels f, keeps the result in rc. */
void *cancel_thread(void *arg);

#endif /* WEFT_NET_UTIL_H */
