/* SPDX-License-Identifier: MIT */
/* bench/net_weft.c: weft's echo server for `bench/run.sh net`, written the
 * way the echo_server sample is: one future chain per connection (read some
 * bytes, write them all, read again), each continuation a weft_future_watch
 * on the loop. (A write never settles on return: weft/net.h, "When
 * operations settle"; the loop sends it, with every write queued by then,
 * just before it waits.)
 * Usage: bench_net_weft <conns> (or `bench_net_weft backend`: print the
 * loop's backend, io_uring or epoll, and exit). Listens on 127.0.0.1
 * port 0 and prints "port N"; the measurement window runs from the
 * <conns>-th accept to the last close; then prints "cpu_us <window CPU>
 * bytes <bytes echoed in the window>" and exits. Same CLI and output as net_epoll.c, net_uv.c and
 * net_ev.c. */
#define _GNU_SOURCE
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static struct {
  weft_loop_t *loop;
  weft_executor_t *ex;
  weft_socket_t *ls;
  long want, accepted, open;
  int measuring;
  unsigned long long bytes;
  double cpu0;
} S;

typedef struct conn {
  weft_socket_t *s;
  char buf[65536];
} conn_t;

static double cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void conn_end(conn_t *c) {
  weft_socket_close(c->s);
  free(c);
  if (--S.open == 0 && S.accepted == S.want) {
    printf("cpu_us %.0f bytes %llu\n", cpu_us() - S.cpu0, S.bytes);
    fflush(stdout);
    weft_loop_stop(S.loop);
  }
}

static void conn_read(conn_t *c);

static void watch(weft_future_t *f, weft_watch_fn fn, void *arg) {
  if (weft_future_watch(f, S.ex, fn, arg, NULL) != 0)
    abort(); /* on 0 the watch has our handle on f */
}

static void on_written(void *arg, weft_future_t *f) {
  conn_t *c = arg;
  if (weft_future_state(f) == WEFT_FULFILLED)
    conn_read(c);
  else
    conn_end(c);
}

static void on_read(void *arg, weft_future_t *f) {
  conn_t *c = arg;
  weft_future_t *w;
  size_t n = (size_t)weft_future_int(f); /* 0 unless fulfilled */
  if (weft_future_state(f) != WEFT_FULFILLED ||
      weft_socket_write(c->s, c->buf, n, &w) != 0) {
    conn_end(c); /* end of stream, reset: this connection only */
    return;
  }
  if (S.measuring)
    S.bytes += n;
  if (weft_future_state(w) == WEFT_FULFILLED) { /* sent at once */
    weft_future_release(w);
    conn_read(c);
    return;
  }
  watch(w, on_written, c);
}

static void conn_read(conn_t *c) {
  weft_future_t *r;
  if (weft_socket_read(c->s, c->buf, sizeof c->buf, &r) != 0) {
    conn_end(c);
    return;
  }
  watch(r, on_read, c);
}

static void accept_next(void);

static void on_accept(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    fprintf(stderr, "accept: %s\n", weft_error_message(weft_future_error(f)));
    exit(1);
  }
  conn_t *c = malloc(sizeof *c);
  if (c == NULL)
    abort();
  if (weft_socket_take(f, &c->s) != 0)
    abort();
  weft_socket_set_nodelay(c->s, true);
  S.open++;
  if (++S.accepted == S.want) {
    S.measuring = 1;
    S.cpu0 = cpu_us();
  } else {
    accept_next();
  }
  conn_read(c);
}

static void accept_next(void) {
  weft_future_t *a;
  if (weft_socket_accept(S.ls, &a) != 0)
    abort();
  watch(a, on_accept, NULL);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "backend") == 0) { /* for run.sh's log */
    weft_loop_stats_t st;
    if (weft_loop_create(NULL, &S.loop) != 0 ||
        weft_loop_stats(S.loop, &st) != 0)
      return 1;
    printf("%s\n", st.backend);
    weft_loop_close(S.loop);
    return 0;
  }
  if (argc != 2 || (S.want = atol(argv[1])) <= 0) {
    fprintf(stderr, "usage: %s <conns>\n", argv[0]);
    return 2;
  }
  weft_addr_t a;
  int rc = weft_loop_create(NULL, &S.loop);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", 0, &a);
  if (rc == 0)
    rc = weft_socket_listen(S.loop, &a, 1024, &S.ls);
  if (rc == 0)
    rc = weft_socket_local_addr(S.ls, &a);
  if (rc != 0) {
    fprintf(stderr, "listen: %s\n", weft_error_message(rc));
    return 1;
  }
  S.ex = weft_loop_executor(S.loop);
  printf("port %d\n", weft_addr_port(&a));
  fflush(stdout);
  accept_next();
  weft_loop_run(S.loop, WEFT_RUN_DEFAULT);
  weft_socket_close(S.ls);
  weft_loop_close(S.loop);
  return 0;
}
