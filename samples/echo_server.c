/* SPDX-License-Identifier: MIT */
/* samples/echo_server.c: the smallest real weft server, written with
 * fibers: one fiber per connection reads and writes in order until the
 * client hangs up; a bad client ends only its own fiber. SIGINT/SIGTERM
 * stop accepting, close every connection and exit cleanly.
 *
 *   echo_server [PORT]        0..65535 (default 7000; 0 picks a free port)
 *   nc 127.0.0.1 7000         (type lines; they come back)
 *
 * It echoes bytes, not lines: whatever arrives (any length, NUL bytes
 * included) goes back unchanged, in reads of up to 16 KiB; there is no
 * line limit and no input it refuses. */
#include <weft.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static weft_runtime_t *rt;

/* Wait for f in the fiber and give it back: its integer value (a byte
 * count) when it fulfilled, its error (negative) when not. */
static intptr_t await_int(weft_future_t *f) {
  int rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0)
    rc = weft_future_error(f);
  intptr_t v = rc == 0 ? weft_future_int(f) : rc;
  weft_future_release(f);
  return v;
}

/* One connection, start to end. The buffer lives on the fiber's stack:
 * each write is awaited before the next read reuses it. At shutdown the
 * runtime cancels the fiber: its await returns WEFT_ECANCELED. */
static weft_result_t serve(void *arg) {
  weft_socket_t *sock = arg;
  char buf[16384];
  for (;;) {
    weft_future_t *f;
    if (weft_socket_read(sock, buf, sizeof buf, &f) != 0)
      break;
    intptr_t n = await_int(f);
    if (n <= 0) /* end of stream, a reset, or cancelled at shutdown */
      break;
    if (weft_socket_write(sock, buf, (size_t)n, &f) != 0 || await_int(f) < 0)
      break;
  }
  weft_socket_close(sock);
  return weft_ok_int(0);
}

/* A connection whose fiber never ran (shutdown came first). */
static void close_sock(void *sock) { weft_socket_close(sock); }

/* The main fiber: accept until SIGINT or SIGTERM, each connection in a
 * fiber of its own; then return, and main shuts the runtime down. */
static weft_result_t serve_all(void *arg) {
  weft_socket_t *listener = arg;
  weft_loop_t *loop = weft_runtime_loop(rt);
  weft_future_t *sigs[2] = {NULL, NULL}, *stop = NULL, *in[2];
  long served = 0;
  int rc = weft_signal_next(loop, SIGINT, &sigs[0]);
  if (rc == 0)
    rc = weft_signal_next(loop, SIGTERM, &sigs[1]);
  if (rc == 0)
    rc = weft_future_race(sigs, 2, &stop); /* the first of the two */
  for (int i = 0; i < 2; i++)
    if (sigs[i] != NULL)
      weft_future_release(sigs[i]); /* the race holds them */
  if (rc != 0) {
    weft_socket_close(listener);
    return weft_err(rc);
  }
  for (;;) {
    weft_future_t *a;
    size_t which;
    if (weft_socket_accept(listener, &a) != 0)
      break;
    in[0] = a, in[1] = stop;
    if (weft_future_await_first(in, 2, WEFT_FOREVER, &which) != 0 ||
        which == 1) { /* a signal: stop accepting */
      fprintf(stderr, "echo_server: signal %d, shutting down\n",
              (int)weft_future_int(stop));
      weft_future_release(a);
      break;
    }
    weft_socket_t *sock;
    if (weft_socket_take(a, &sock) == 0 &&
        weft_runtime_spawn(rt, NULL, serve, sock, close_sock, NULL) == 0)
      served++;
    else if (weft_future_error(a) != 0) { /* the listener itself failed */
      fprintf(stderr, "echo_server: accept: %s\n",
              weft_error_message(weft_future_error(a)));
      weft_future_release(a);
      break;
    }
    weft_future_release(a); /* (a refused socket closes with it) */
  }
  weft_future_release(stop);
  weft_socket_close(listener);
  return weft_ok_int(served);
}

static long parse_port(int argc, char **argv) {
  if (argc == 1)
    return 7000;
  char *end;
  errno = 0;
  long port = strtol(argv[1], &end, 10);
  if (argc > 2 || end == argv[1] || *end != 0 || errno == ERANGE || port < 0 ||
      port > 65535) {
    int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
    fprintf(help ? stdout : stderr,
            "usage: echo_server [PORT]   listen on 127.0.0.1:PORT, "
            "0..65535 (default 7000;\n"
            "                            0: any free port)\n"
            "Echoes bytes, not lines: whatever arrives (any length, NUL "
            "bytes included)\ngoes back unchanged.\n");
    exit(help ? 0 : 2);
  }
  return port;
}

int main(int argc, char **argv) {
  long port = parse_port(argc, argv);
  weft_addr_t addr;
  weft_socket_t *listener = NULL;
  weft_future_t *done = NULL;
  int rc = weft_runtime_create(NULL, &rt);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(weft_runtime_loop(rt), &addr, 128, &listener);
  if (rc == 0)
    rc = weft_socket_local_addr(listener, &addr);
  if (rc == 0)
    rc = weft_runtime_spawn(rt, NULL, serve_all, listener, NULL, &done);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", weft_error_message(rc));
    return 1;
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("echo_server: listening on %s\n", name);
  fflush(stdout);
  weft_runtime_run(rt, done, WEFT_FOREVER);
  printf("echo_server: served %ld connections\n", (long)weft_future_int(done));
  weft_future_release(done);
  /* no grace: every connection's fiber is cancelled and closes its socket */
  weft_runtime_shutdown(rt, 0);
  return 0;
}
