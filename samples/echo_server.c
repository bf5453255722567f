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

typedef struct conn {
  weft_socket_t *sock;
  struct conn *prev, *next; /* open connections, for shutdown */
} conn_t;

static struct {
  weft_loop_t *loop;
  weft_socket_t *listener;
  conn_t *conns;
  long open, served;
  int stopping;
} srv;

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
 * each write is awaited before the next read reuses it. */
static weft_result_t serve(void *arg) {
  conn_t *c = arg;
  char buf[16384];
  for (;;) {
    weft_future_t *f;
    if (weft_socket_read(c->sock, buf, sizeof buf, &f) != 0)
      break;
    intptr_t n = await_int(f);
    if (n <= 0) /* end of stream, a reset, or closed at shutdown */
      break;
    if (weft_socket_write(c->sock, buf, (size_t)n, &f) != 0 || await_int(f) < 0)
      break;
  }
  if (c->sock != NULL) /* (NULL: shutdown closed it) */
    weft_socket_close(c->sock);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv.conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  free(c);
  if (--srv.open == 0 && srv.stopping)
    weft_loop_stop(srv.loop);
  return weft_ok_int(0);
}

/* Accept until the listener closes; each connection gets its fiber. */
static weft_result_t accept_all(void *arg) {
  (void)arg;
  for (;;) {
    weft_future_t *a;
    if (weft_socket_accept(srv.listener, &a) != 0)
      break;
    if (weft_future_await(a, WEFT_FOREVER) != 0 || weft_future_error(a) != 0) {
      if (!srv.stopping) /* the listener itself failed */
        fprintf(stderr, "echo_server: accept: %s\n",
                weft_error_message(weft_future_error(a)));
      weft_future_release(a);
      break;
    }
    conn_t *c = calloc(1, sizeof *c);
    weft_future_t *done;
    if (c == NULL || weft_socket_take(a, &c->sock) != 0) {
      free(c); /* refuse this one only: a is released unread, closing it */
    } else if (weft_fiber_spawn(weft_loop_executor(srv.loop), serve, c, NULL,
                                &done) != 0) {
      weft_socket_close(c->sock);
      free(c);
    } else {
      weft_future_release(done); /* serve cleans up after itself */
      c->next = srv.conns;
      if (srv.conns != NULL)
        srv.conns->prev = c;
      srv.conns = c;
      srv.open++;
      srv.served++;
    }
    weft_future_release(a);
  }
  return weft_ok_int(0);
}

/* The first SIGINT or SIGTERM: stop accepting, close every connection
 * (which ends its fiber's await), stop the loop once the last is gone. */
static weft_result_t on_signals(void *arg) {
  weft_future_t **sigs = arg;
  size_t which;
  if (weft_future_await_first(sigs, 2, WEFT_FOREVER, &which) != 0 ||
      weft_future_state(sigs[which]) != WEFT_FULFILLED)
    return weft_ok_int(0); /* (the loop closed first) */
  fprintf(stderr, "echo_server: signal %d, shutting down\n",
          (int)weft_future_int(sigs[which]));
  srv.stopping = 1;
  weft_socket_close(srv.listener); /* the accept fiber's await ends */
  for (conn_t *c = srv.conns; c != NULL; c = c->next)
    weft_socket_close(c->sock), c->sock = NULL;
  if (srv.open == 0)
    weft_loop_stop(srv.loop);
  return weft_ok_int(0);
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
  weft_future_t *sigs[2] = {NULL, NULL}, *fibers[2] = {NULL, NULL};
  int rc = weft_loop_create(NULL, &srv.loop);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(srv.loop, &addr, 128, &srv.listener);
  if (rc == 0)
    rc = weft_socket_local_addr(srv.listener, &addr);
  if (rc == 0)
    rc = weft_signal_next(srv.loop, SIGINT, &sigs[0]);
  if (rc == 0)
    rc = weft_signal_next(srv.loop, SIGTERM, &sigs[1]);
  weft_executor_t *on_loop = weft_loop_executor(srv.loop);
  if (rc == 0)
    rc = weft_fiber_spawn(on_loop, on_signals, sigs, NULL, &fibers[0]);
  if (rc == 0)
    rc = weft_fiber_spawn(on_loop, accept_all, NULL, NULL, &fibers[1]);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", weft_error_message(rc));
    return 1;
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("echo_server: listening on %s\n", name);
  fflush(stdout);
  weft_loop_run(srv.loop, WEFT_RUN_DEFAULT);
  printf("echo_server: served %ld connections\n", srv.served);
  weft_loop_close(srv.loop); /* the other signal's future is cancelled */
  for (int i = 0; i < 2; i++) {
    weft_future_release(fibers[i]);
    weft_future_release(sigs[i]);
  }
  return 0;
}
