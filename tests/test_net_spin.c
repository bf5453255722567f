/* SPDX-License-Identifier: MIT */
/* tests/test_net_spin.c: the loop's adaptive spin meets socket events:
 * off, on, one CPU shared with the peer, and many sockets waiting. */
#include "net_util.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the adaptive spin meets socket events ---- */

/* A peer thread does IOSPIN_ROUNDS rounds of one-byte round trips through
 * the echo server on the loop, on `conns` connections at once (a byte to
 * each, then each answer; blocking sockets, each wait bounded), then
 * closes them. */
enum { IOSPIN_ROUNDS = 4000, IOSPIN_CONNS_MAX = 16 };
typedef struct iospin {
  weft_addr_t addr;
  int cpu; /* pin the peer here, or -1 */
  int conns;
  long rounds;
  long io_errors;   /* a connect, write, poll or read that failed */
  long wrong_bytes; /* an answer that was not the byte sent */
} iospin_t;

static bool iospin_ok(const iospin_t *p) {
  return p->io_errors == 0 && p->wrong_bytes == 0;
}

static void *iospin_peer(void *arg) {
  iospin_t *p = arg;
  if (p->cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  int fds[IOSPIN_CONNS_MAX], n = 0;
  for (; n < p->conns; n++) {
    fds[n] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[n] < 0 || connect(fds[n], (const struct sockaddr *)&p->addr.ss,
                              p->addr.len) != 0) {
      p->io_errors++;
      n += fds[n] >= 0;
      break;
    }
  }
  for (long i = 0; i < IOSPIN_ROUNDS && iospin_ok(p); i++) {
    unsigned char b = (unsigned char)(i * 7 + 1);
    for (int k = 0; k < n; k++)
      if (write(fds[k], &b, 1) != 1)
        p->io_errors++;
    for (int k = 0; k < n && iospin_ok(p); k++) {
      unsigned char r = 0;
      struct pollfd pf = {.fd = fds[k], .events = POLLIN};
      if (poll(&pf, 1, BOUND_MS) != 1 || read(fds[k], &r, 1) != 1)
        p->io_errors++;
      else if (r != b)
        p->wrong_bytes++;
    }
    p->rounds += iospin_ok(p);
  }
  for (int k = 0; k < n; k++)
    close(fds[k]);
  return NULL;
}

/* Echo IOSPIN_ROUNDS rounds on `conns` connections to a loop with
 * spin_us; the loop thread pinned to loop_cpu (before the loop is
 * created) and the peer to peer_cpu, or -1; the loop's statistics out. */
static void iospin_run(int spin_us, int loop_cpu, int peer_cpu, int conns,
                       weft_loop_stats_t *st) {
  cpu_set_t old;
  REQUIRE_EQ(pthread_getaffinity_np(pthread_self(), sizeof old, &old), 0);
  if (loop_cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(loop_cpu, &set);
    REQUIRE_EQ(pthread_setaffinity_np(pthread_self(), sizeof set, &set), 0);
  }
  weft_loop_options_t o = {.size = sizeof o, .spin_us = spin_us};
  weft_loop_t *loop;
  REQUIRE_EQ(weft_loop_create(&o, &loop), 0);
  srv_t v;
  srv_start(&v, loop, "127.0.0.1");
  iospin_t p = {.addr = v.addr, .cpu = peer_cpu, .conns = conns};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, iospin_peer, &p), 0);
  EXPECT_TRUE(drive(loop, &v.closed, conns, BOUND_MS));
  pthread_join(th, NULL);
  EXPECT_EQ(p.io_errors, 0);
  EXPECT_EQ(p.wrong_bytes, 0);
  EXPECT_EQ(p.rounds, IOSPIN_ROUNDS);
  EXPECT_EQ(v.accepted, conns);
  weft_loop_stats(loop, st);
  v.stopping = true;
  weft_socket_close(v.ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
  REQUIRE_EQ(pthread_setaffinity_np(pthread_self(), sizeof old, &old), 0);
}

static void test_spin_for_sockets(void) {
  weft_loop_stats_t st;
  /* off: never */
  iospin_run(-1, -1, -1, 1, &st);
  EXPECT_EQ(st.spins, 0);
  EXPECT_EQ(st.spin_hits, 0);
  /* on (a bound long enough for a slow machine): requests that come back
   * soon after the loop ran out of work are met by a spin, which polls the
   * sockets: no sleep, no wake-up */
  iospin_run(1000000, -1, -1, 1, &st);
  EXPECT_TRUE(st.spin_hits > 0);
  EXPECT_TRUE(st.spin_hits <= st.spins);
  /* a loop allowed one CPU still spins for its sockets (their peer is on
   * another CPU), though never for posts */
  cpu_set_t have;
  REQUIRE_EQ(pthread_getaffinity_np(pthread_self(), sizeof have, &have), 0);
  int a = -1, b = -1;
  for (int c = 0; c < CPU_SETSIZE && b < 0; c++)
    if (CPU_ISSET(c, &have)) {
      if (a < 0)
        a = c;
      else
        b = c;
    }
  if (b >= 0) {
    iospin_run(1000000, a, b, 1, &st);
    EXPECT_TRUE(st.spin_hits > 0);
  }
  /* ... but hardly at all when its peer shares that CPU: each spin would
   * keep the peer from answering until the scheduler steps in */
  iospin_run(1000000, a, a, 1, &st);
  EXPECT_TRUE(st.spins < IOSPIN_ROUNDS / 8);
  /* ... nor while many sockets wait for reads (here 8, and the peer on
   * another CPU): their events come in batches, which a sleep gathers and
   * a spin would only take one or two at a time, for more CPU per event.
   * Spins only while connections come and go: fewer than one in 8 rounds */
  if (b >= 0) {
    iospin_run(1000000, a, b, 8, &st);
    EXPECT_TRUE(st.spins < IOSPIN_ROUNDS / 8);
  }
}

static const test_case_t cases[] = {
    {"the adaptive spin polls sockets", test_spin_for_sockets}, {NULL, NULL}};

const test_suite_t suite_net_spin = {"net_spin", cases};
