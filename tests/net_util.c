/* SPDX-License-Identifier: MIT */
/* tests/net_util.c: the socket helpers declared in tests/net_util.h. */
#include "net_util.h"

#include <arpa/inet.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

void fill(unsigned char *p, size_t n, uint64_t seed) {
  uint64_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++)
    p[i] = (unsigned char)(rng_next(&s) >> 24);
}

void raise_nofile(rlim_t want) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---- an echo server built from futures ---- */

typedef struct econn {
  srv_t *srv;
  weft_socket_t *s;
  char buf[16384];
} econn_t;

static void econn_read(econn_t *c);

static void econn_end(econn_t *c) {
  weft_socket_close(c->s);
  c->srv->closed++;
  free(c);
}

static weft_result_t econn_written(void *arg, weft_future_t *f) {
  econn_t *c = arg;
  if (weft_future_state(f) == WEFT_FULFILLED)
    econn_read(c);
  else
    econn_end(c);
  return weft_ok_int(0);
}

static weft_result_t econn_got(void *arg, weft_future_t *f) {
  econn_t *c = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) { /* EOF, reset, cancel */
    econn_end(c);
    return weft_ok_int(0);
  }
  weft_future_t *w;
  if (weft_socket_write(c->s, c->buf, (size_t)weft_future_int(f), &w) != 0) {
    econn_end(c);
    return weft_ok_int(0);
  }
  chain(c->srv->loop, w, econn_written, c);
  return weft_ok_int(0);
}

static void econn_read(econn_t *c) {
  weft_future_t *r;
  if (weft_socket_read(c->s, c->buf, sizeof c->buf, &r) != 0) {
    econn_end(c);
    return;
  }
  chain(c->srv->loop, r, econn_got, c);
}

static weft_result_t srv_accepted(void *arg, weft_future_t *f) {
  srv_t *v = arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    if (weft_future_error(f) != WEFT_ECANCELED)
      v->listener_errors++;
    return weft_ok_int(0);
  }
  econn_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->srv = v;
  REQUIRE_EQ(weft_socket_take(f, &c->s), 0);
  v->accepted++;
  econn_read(c);
  if (!v->stopping)
    srv_accept(v);
  return weft_ok_int(0);
}

void srv_accept(srv_t *v) {
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept(v->ls, &a), 0);
  chain(v->loop, a, srv_accepted, v);
}

void srv_start(srv_t *v, weft_loop_t *loop, const char *ip) {
  memset(v, 0, sizeof *v);
  v->loop = loop;
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip(ip, 0, &a), 0);
  REQUIRE_EQ(weft_socket_listen(loop, &a, 1024, &v->ls), 0);
  REQUIRE_EQ(weft_socket_local_addr(v->ls, &v->addr), 0);
  REQUIRE_EQ(weft_addr_port(&v->addr) > 0, 1);
  srv_accept(v);
}

/* ---- plain peers, listeners and pairs ---- */

int raw_bound(struct sockaddr_in *sin) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE_EQ(fd >= 0, 1);
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE_EQ(bind(fd, (struct sockaddr *)sin, sizeof *sin), 0);
  socklen_t sl = sizeof *sin;
  REQUIRE_EQ(getsockname(fd, (struct sockaddr *)sin, &sl), 0);
  return fd;
}

int raw_connect(const weft_addr_t *a) {
  int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE_EQ(fd >= 0, 1);
  REQUIRE_EQ(connect(fd, (const struct sockaddr *)&a->ss, a->len), 0);
  return fd;
}

weft_result_t keep_settled(void *arg, weft_future_t *f) {
  one_t *o = arg;
  weft_future_retain(f);
  o->f = f;
  o->n++;
  return weft_ok_int(0);
}

weft_socket_t *accept_one(weft_loop_t *loop, weft_socket_t *ls) {
  one_t o = {0};
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  chain(loop, a, keep_settled, &o);
  REQUIRE_EQ(drive(loop, &o.n, 1, BOUND_MS), 1);
  REQUIRE_EQ(weft_future_state(o.f), WEFT_FULFILLED);
  weft_socket_t *s;
  REQUIRE_EQ(weft_socket_take(o.f, &s), 0);
  weft_future_release(o.f);
  return s;
}

void listen_local(weft_loop_t *loop, weft_socket_t **ls, weft_addr_t *addr) {
  weft_addr_t a;
  REQUIRE_EQ(weft_addr_init_ip("127.0.0.1", 0, &a), 0);
  REQUIRE_EQ(weft_socket_listen(loop, &a, 64, ls), 0);
  REQUIRE_EQ(weft_socket_local_addr(*ls, addr), 0);
}

weft_socket_t *raw_pair(weft_loop_t *loop, weft_socket_t **ls, int *peer) {
  weft_addr_t addr;
  listen_local(loop, ls, &addr);
  *peer = raw_connect(&addr);
  return accept_one(loop, *ls);
}

void raw_pair_end(weft_loop_t *loop, weft_socket_t *s, weft_socket_t *ls,
                  int peer) {
  close(peer);
  weft_socket_close(s);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

void connected_pair(weft_loop_t *loop, weft_socket_t **ls, weft_socket_t **srv,
                    weft_socket_t **cli) {
  weft_addr_t addr;
  listen_local(loop, ls, &addr);
  weft_future_t *cf;
  REQUIRE_EQ(weft_socket_connect(loop, &addr, &cf), 0);
  *srv = accept_one(loop, *ls);
  REQUIRE_EQ(weft_loop_run_until(loop, cf, BOUND_MS), 0);
  REQUIRE_EQ(weft_future_state(cf), WEFT_FULFILLED);
  REQUIRE_EQ(weft_socket_take(cf, cli), 0);
  weft_future_release(cf);
}

void *cancel_thread(void *arg) {
  xcancel_t *x = arg;
  while (!atomic_load(&x->go))
    sched_yield();
  x->rc = weft_future_cancel(x->f);
  if (x->rc == 0 && x->poison != NULL)
    memset(x->poison, 'X', x->poison_len); /* the buffer is ours again */
  return NULL;
}
