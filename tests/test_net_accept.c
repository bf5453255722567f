/* SPDX-License-Identifier: MIT */
/* tests/test_net_accept.c: listeners and the sockets their futures carry:
 * accept under a lowered fd limit, an accept that loses to a cancel (the
 * connection goes to the next accept; free slab slots poisoned), and
 * accept and connect futures that own their sockets until taken, also
 * across the loop's close. */
#include "net_util.h"
#include "internal.h" /* WEFT__ASAN */

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- accept under a lowered fd limit ---- */

static void test_accept_emfile(void) {
  weft_loop_t *loop = new_loop();
  srv_t v;
  srv_start(&v, loop, "127.0.0.1");
  enum { N = 12 };
  int peers[N];
  for (int i = 0; i < N; i++) /* complete in the kernel's backlog */
    peers[i] = raw_connect(&v.addr);
  /* Room for 3 more fds (the lowest free numbers): the 4th accept hits
   * EMFILE. */
  int limit = 0;
  for (int fd = 0, free_fds = 0; free_fds < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0)
      free_fds++;
    limit = fd + 1;
  }
  struct rlimit old, rl;
  getrlimit(RLIMIT_NOFILE, &old);
  rl = old;
  rl.rlim_cur = (rlim_t)limit;
  REQUIRE_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_TRUE(drive(loop, &v.accepted, 3, BOUND_MS));
  /* Stuck at the limit: the listener waits without spinning. */
  weft_loop_stats_t st0, st1;
  weft_loop_stats(loop, &st0);
  long never = 0;
  drive(loop, &never, 1, 200);
  weft_loop_stats(loop, &st1);
  EXPECT_EQ(v.accepted, 3);
  EXPECT_EQ(v.listener_errors, 0);
  EXPECT_TRUE(st1.iterations - st0.iterations < 200); /* ~20 watchdog ticks */
  /* Free fds: the peers of the accepted ones hang up, the server closes
   * those connections, and the listener takes the rest. */
  for (int i = 0; i < N; i++) {
    close(peers[i]);
    peers[i] = -1;
  }
  EXPECT_TRUE(drive(loop, &v.closed, N, BOUND_MS));
  EXPECT_EQ(v.accepted, N);
  EXPECT_EQ(v.listener_errors, 0);
  setrlimit(RLIMIT_NOFILE, &old);
  v.stopping = true;
  weft_socket_close(v.ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- an accept that loses to a cancel; free slots poisoned ---- */

typedef struct acr {
  weft_future_t *a; /* the accept the cancel races */
  int pipe[2];
  long fired;
} acr_t;

static void *acr_cancel(void *arg) {
  acr_t *r = arg;
  EXPECT_EQ(weft_future_cancel(r->a), 0);
  return NULL;
}

/* The first event of the batch (the listener's comes next): the accept is
 * cancelled from another thread now, after the connection arrived and
 * before the loop takes it, so the loop's accept4 finds its op cancelled. */
static void acr_fire(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)io, (void)events;
  acr_t *r = arg;
  char b;
  if (status != 0 || read(r->pipe[0], &b, 1) != 1)
    return;
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, acr_cancel, r), 0);
  pthread_join(t, NULL);
  r->fired++;
}

/* Many rounds of: an accept waiting, a connection arriving and a cancel
 * from another thread while the loop is about to take it. The cancel
 * wins; the connection is kept (never lost) and goes to the next accept;
 * the socket the loop wrapped it in goes back to its slab (not to the
 * general allocator, which would hand the slot out again while the slab
 * still counts it); freed slots and recycled operations are poisoned. */
static void test_accept_loses_to_cancel(void) {
  enum { ROUNDS = 300 };
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  acr_t r = {0};
  REQUIRE_EQ(pipe2(r.pipe, O_NONBLOCK | O_CLOEXEC), 0);
  weft_io_t io;
  REQUIRE_EQ(weft_io_start(loop, &io, r.pipe[0], WEFT_READABLE, acr_fire, &r),
             0);
  long cancelled = 0, matched = 0, same_slot = 0, slots_poisoned = 0;
  weft_socket_t *first = NULL;
  for (int i = 0; i < ROUNDS; i++) {
    REQUIRE_EQ(weft_socket_accept(ls, &r.a), 0);
    REQUIRE_EQ(weft_future_state(r.a), WEFT_PENDING);
    REQUIRE_EQ(write(r.pipe[1], "x", 1), 1); /* ready first */
    int peer = raw_connect(&addr);           /* then the listener */
    long fired = r.fired;
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (r.fired == fired && weft_clock_now_ns() < end)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    REQUIRE_EQ(r.fired, fired + 1);
    cancelled += weft_future_state(r.a) == WEFT_CANCELLED;
    weft_future_release(r.a);
    /* The connection went to nobody yet: the next accept gets it. */
    one_t o = {0};
    weft_future_t *b;
    REQUIRE_EQ(weft_socket_accept(ls, &b), 0);
    chain(loop, b, keep_settled, &o);
    REQUIRE_EQ(drive(loop, &o.n, 1, BOUND_MS), 1);
    REQUIRE_EQ(weft_future_state(o.f), WEFT_FULFILLED);
    weft_socket_t *s = weft_future_value(o.f);
    /* The lost connection's socket went back to its slab, whose free list
     * is a stack: this one has the same slot every round. */
    if (first == NULL)
      first = s;
    same_slot += s == first;
    struct sockaddr_in mine;
    socklen_t ml = sizeof mine;
    weft_addr_t theirs;
    REQUIRE_EQ(getsockname(peer, (struct sockaddr *)&mine, &ml), 0);
    REQUIRE_EQ(weft_socket_peer_addr(s, &theirs), 0);
    matched += weft_addr_port(&theirs) == ntohs(mine.sin_port);
    EXPECT_EQ(weft_socket_close(s), 0);
    slots_poisoned += tu_poisoned(s); /* a free slot of its slab */
    weft_future_release(o.f);
    close(peer);
  }
  EXPECT_EQ(cancelled, ROUNDS);
  EXPECT_EQ(matched, ROUNDS); /* each connection accepted once, in order */
  EXPECT_EQ(same_slot, ROUNDS);
  EXPECT_EQ(slots_poisoned, WEFT__ASAN ? ROUNDS : 0);
  /* A finished operation released on the loop thread is recycled, and
   * poisoned until it is handed out again. */
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  EXPECT_EQ(weft_future_cancel(a), 0);
  weft_future_release(a);
  EXPECT_EQ(tu_poisoned(a), WEFT__ASAN);
  weft_io_stop(&io);
  close(r.pipe[0]);
  close(r.pipe[1]);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* ---- a future that carries a socket owns it ---- */

enum { EOF_WAIT_MS = 5000 }; /* how long a peer may wait for its EOF */

/* Run the loop until fd (a plain socket) reads end of stream; false if
 * it did not within ms, or bytes came instead. */
static bool peer_sees_eof(weft_loop_t *loop, int fd, int64_t ms) {
  int64_t end = weft_clock_now_ns() + ms * 1000000;
  do {
    if (loop != NULL)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1) == 1) {
      char b;
      return read(fd, &b, 1) == 0;
    }
  } while (weft_clock_now_ns() < end);
  return false;
}

/* An accept on ls with a plain socket connected to it (*peer): the
 * fulfilled future. */
static weft_future_t *accepted(weft_loop_t *loop, weft_socket_t *ls,
                               const weft_addr_t *addr, int *peer) {
  weft_future_t *a;
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  *peer = raw_connect(addr);
  REQUIRE_EQ(weft_loop_run_until(loop, a, BOUND_MS), 0);
  REQUIRE_EQ(weft_future_state(a), WEFT_FULFILLED);
  return a;
}

static weft_result_t follow_src(void *arg, weft_future_t *f) {
  (void)arg;
  weft_future_retain(f);
  return weft_follow(f);
}

static void *release_thread(void *arg) {
  EXPECT_EQ(weft_future_release(arg), 0);
  return NULL;
}

static void release_elsewhere(weft_future_t *f) {
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, release_thread, f), 0);
  pthread_join(t, NULL);
}

/* Released unread: on the loop thread, from another thread, through a
 * then; taken: stays open; connect futures the same. */
static void test_socket_futures_own_sockets(void) {
  weft_loop_t *loop = new_loop();
  weft_socket_t *ls;
  weft_addr_t addr;
  listen_local(loop, &ls, &addr);
  int peer;
  /* released unread on the loop thread: closed at once */
  weft_socket_t *s = NULL;
  weft_future_t *a = accepted(loop, ls, &addr, &peer);
  EXPECT_EQ(weft_future_value(a) != NULL, 1);
  EXPECT_EQ(weft_future_release(a), 0);
  EXPECT_EQ(peer_sees_eof(NULL, peer, EOF_WAIT_MS), 1);
  close(peer);
  /* released unread on another thread: the loop closes it */
  a = accepted(loop, ls, &addr, &peer);
  release_elsewhere(a);
  EXPECT_EQ(peer_sees_eof(loop, peer, EOF_WAIT_MS), 1);
  close(peer);
  /* a then's source: closed when the then is done with it */
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  one_t o = {0};
  chain(loop, a, keep_settled, &o);
  peer = raw_connect(&addr);
  REQUIRE_EQ(drive(loop, &o.n, 1, BOUND_MS), 1);
  weft_future_release(o.f); /* the last handle */
  EXPECT_EQ(peer_sees_eof(loop, peer, EOF_WAIT_MS), 1);
  close(peer);
  /* followed: the follower borrows the socket and keeps it open */
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  weft_future_t *d;
  REQUIRE_EQ(weft_future_then(a, weft_loop_executor(loop), follow_src, NULL,
                              NULL, &d),
             0);
  weft_future_release(a);
  peer = raw_connect(&addr);
  REQUIRE_EQ(weft_loop_run_until(loop, d, BOUND_MS), 0);
  REQUIRE_EQ(weft_future_state(d), WEFT_FULFILLED);
  EXPECT_EQ(weft_socket_fd(weft_future_value(d)) >= 0, 1); /* still open */
  struct pollfd pd = {peer, POLLIN, 0};
  EXPECT_EQ(poll(&pd, 1, 0), 0);
  EXPECT_ERR(weft_socket_take(d, &s), WEFT_EINVAL); /* not the owner */
  weft_future_release(d);
  EXPECT_EQ(peer_sees_eof(loop, peer, EOF_WAIT_MS), 1);
  close(peer);
  /* taken: the caller's, open after the release, until it closes it */
  a = accepted(loop, ls, &addr, &peer);
  EXPECT_EQ(weft_socket_take(a, &s), 0);
  EXPECT_EQ(s, weft_future_value(a));
  EXPECT_ERR(weft_socket_take(a, &s), WEFT_EALREADY);
  EXPECT_EQ(weft_future_release(a), 0);
  for (int i = 0; i < 8; i++)
    weft_loop_run(loop, WEFT_RUN_NOWAIT);
  REQUIRE_EQ(write(peer, "hi", 2), 2);
  char got[2];
  weft_future_t *r;
  REQUIRE_EQ(weft_socket_read_exactly(s, got, 2, &r), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(r), WEFT_FULFILLED);
  weft_future_release(r);
  struct pollfd p = {peer, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0); /* no EOF */
  EXPECT_EQ(weft_socket_close(s), 0);
  EXPECT_EQ(peer_sees_eof(NULL, peer, EOF_WAIT_MS), 1);
  close(peer);
  /* closed through the borrowed pointer: nothing left to take or close */
  a = accepted(loop, ls, &addr, &peer);
  EXPECT_EQ(weft_socket_close(weft_future_value(a)), 0);
  EXPECT_ERR(weft_socket_take(a, &s), WEFT_ESHUTDOWN);
  EXPECT_EQ(weft_future_release(a), 0);
  close(peer);
  /* connect futures: released unread, the server's end reads EOF */
  weft_future_t *cf;
  for (int way = 0; way < 2; way++) {
    REQUIRE_EQ(weft_socket_connect(loop, &addr, &cf), 0);
    weft_socket_t *srv = accept_one(loop, ls);
    REQUIRE_EQ(weft_loop_run_until(loop, cf, BOUND_MS), 0);
    REQUIRE_EQ(weft_future_state(cf), WEFT_FULFILLED);
    if (way == 0)
      weft_future_release(cf);
    else
      release_elsewhere(cf);
    char b;
    REQUIRE_EQ(weft_socket_read(srv, &b, 1, &r), 0);
    REQUIRE_EQ(weft_loop_run_until(loop, r, EOF_WAIT_MS), 0);
    EXPECT_ERR(weft_future_error(r), WEFT_EOF);
    weft_future_release(r);
    weft_socket_close(srv);
  }
  /* take's errors */
  REQUIRE_EQ(weft_socket_accept(ls, &a), 0);
  EXPECT_ERR(weft_socket_take(a, &s), WEFT_EPENDING);
  EXPECT_EQ(weft_future_cancel(a), 0);
  EXPECT_ERR(weft_socket_take(a, &s), WEFT_ECANCELED);
  weft_future_release(a);
  EXPECT_ERR(weft_socket_take(NULL, &s), WEFT_EINVAL);
  weft_promise_t *pr;
  weft_future_t *pf;
  REQUIRE_EQ(weft_promise_create(&pr, &pf), 0);
  EXPECT_EQ(weft_promise_fulfil(pr, ls, NULL), 0);
  EXPECT_ERR(weft_socket_take(pf, &s), WEFT_EINVAL); /* not a socket's */
  weft_promise_release(pr);
  weft_future_release(pf);
  weft_socket_close(ls);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The loop's close closes a socket its future still owns; the future,
 * released afterwards (on any thread), touches nothing of it. One released
 * on another thread while close runs (its queue no longer takes tasks) is
 * closed by close itself. LeakSanitizer and ASan watch. */
typedef struct late {
  weft_future_t *f;
  long ran;
} late_t;

static void late_release(weft_timer_t *t, int status, void *arg) {
  (void)t;
  late_t *l = arg;
  if (status == 0)
    return;
  release_elsewhere(l->f); /* inside close, before the sockets close */
  l->ran++;
}

static void test_socket_futures_and_loop_close(void) {
  for (int way = 0; way < 3; way++) {
    weft_loop_t *loop = new_loop();
    weft_socket_t *ls;
    weft_addr_t addr;
    listen_local(loop, &ls, &addr);
    int peer;
    weft_future_t *a = accepted(loop, ls, &addr, &peer);
    late_t l = {a, 0};
    weft_timer_t t;
    weft_timer_init(loop, &t, late_release, &l);
    if (way == 2)
      REQUIRE_EQ(weft_timer_start(&t, 1000000, 0), 0);
    EXPECT_EQ(weft_loop_close(loop), 0);
    EXPECT_EQ(peer_sees_eof(NULL, peer, EOF_WAIT_MS), 1);
    if (way == 0)
      EXPECT_EQ(weft_future_release(a), 0);
    else if (way == 1)
      release_elsewhere(a);
    else
      EXPECT_EQ(l.ran, 1);
    close(peer);
  }
}

static const test_case_t cases[] = {
    {"accept under a lowered fd limit", test_accept_emfile},
    {"an accept that loses to a cancel; free slots poisoned",
     test_accept_loses_to_cancel},
    {"accept and connect futures own their sockets",
     test_socket_futures_own_sockets},
    {"socket futures released after or during loop close",
     test_socket_futures_and_loop_close},
    {NULL, NULL}};

const test_suite_t suite_net_accept = {"net_accept", cases};
