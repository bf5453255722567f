/* SPDX-License-Identifier: MIT */
/* bench/net_weft_fiber.c: weft's echo server for `bench/run.sh net` written
 * with fibers: an accept fiber on the loop spawns one fiber per connection,
 * on the loop, and each connection's fiber reads some bytes, writes them
 * all and reads again, awaiting each step with weft_future_await (the
 * fiber suspends; the loop goes on with the other connections). The same
 * work as net_weft.c's future chain, written in order.
 * Usage: bench_net_weft_fiber <conns>. Listens on 127.0.0.1 port 0 and
 * prints "port N"; the measurement window runs from the <conns>-th accept
 * to the last close; then prints "cpu_us <window CPU> bytes <bytes echoed
 * in the window>" and exits. Same CLI and output as net_weft.c. */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static struct {
  weft_loop_t *loop;
  weft_executor_t *ex;
  long want, accepted, open;
  int measuring;
  unsigned long long bytes;
  double cpu0;
} S;

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* Await f and give it back: its outcome code (0 when fulfilled), with the
 * integer it was fulfilled with in *value. */
static int await_int(weft_future_t *f, intptr_t *value) {
  int rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0)
    rc = weft_future_error(f);
  *value = weft_future_int(f);
  weft_future_release(f);
  return rc;
}

/* One connection: read, write back, until the peer goes away. */
static weft_result_t serve(void *arg) {
  weft_socket_t *s = arg;
  char buf[65536];
  for (;;) {
    weft_future_t *f;
    intptr_t n;
    if (weft_socket_read(s, buf, sizeof buf, &f) != 0 || await_int(f, &n) != 0)
      break; /* end of stream, reset */
    if (weft_socket_write(s, buf, (size_t)n, &f) != 0 || await_int(f, &n) != 0)
      break;
    if (S.measuring)
      S.bytes += (unsigned long long)n;
  }
  weft_socket_close(s);
  if (--S.open == 0 && S.accepted == S.want) {
    printf("cpu_us %.0f bytes %llu\n", cpu_us() - S.cpu0, S.bytes);
    fflush(stdout);
    weft_loop_stop(S.loop);
  }
  return weft_ok_int(0);
}

static void close_socket(void *arg) { weft_socket_close(arg); }

/* Accept the <conns> connections the client makes, a fiber for each. */
static weft_result_t accept_all(void *arg) {
  weft_socket_t *ls = arg;
  while (S.accepted < S.want) {
    weft_future_t *a, *conn;
    weft_socket_t *s;
    int rc = weft_socket_accept(ls, &a);
    if (rc == 0) {
      weft_future_await(a, WEFT_FOREVER);
      rc = weft_socket_take(a, &s);
      weft_future_release(a);
    }
    if (rc != 0) {
      fprintf(stderr, "accept: %s\n", weft_error_message(rc));
      exit(1);
    }
    weft_socket_set_nodelay(s, true);
    S.open++;
    if (++S.accepted == S.want) {
      S.measuring = 1;
      S.cpu0 = cpu_us();
    }
    rc = weft_fiber_spawn(S.ex, serve, s, close_socket, &conn);
    if (rc != 0) {
      fprintf(stderr, "spawn: %s\n", weft_error_message(rc));
      exit(1);
    }
    weft_future_release(conn); /* releasing never cancels */
  }
  return weft_ok_int(0);
}

int main(int argc, char **argv) {
  if (argc != 2 || (S.want = atol(argv[1])) <= 0) {
    fprintf(stderr, "usage: %s <conns>\n", argv[0]);
    return 2;
  }
  weft_addr_t a;
  weft_socket_t *ls = NULL;
  weft_future_t *acceptor = NULL;
  int rc = weft_loop_create(NULL, &S.loop);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", 0, &a);
  if (rc == 0)
    rc = weft_socket_listen(S.loop, &a, 1024, &ls);
  if (rc == 0)
    rc = weft_socket_local_addr(ls, &a);
  if (rc != 0) {
    fprintf(stderr, "listen: %s\n", weft_error_message(rc));
    return 1;
  }
  S.ex = weft_loop_executor(S.loop);
  printf("port %d\n", weft_addr_port(&a));
  fflush(stdout);
  rc = weft_fiber_spawn(S.ex, accept_all, ls, NULL, &acceptor);
  if (rc != 0) {
    fprintf(stderr, "spawn: %s\n", weft_error_message(rc));
    return 1;
  }
  weft_loop_run(S.loop, WEFT_RUN_DEFAULT);
  weft_future_release(acceptor);
  weft_socket_close(ls);
  weft_loop_close(S.loop);
  return 0;
}
