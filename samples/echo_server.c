/* SPDX-License-Identifier: MIT */
/* samples/echo_server.c: the smallest real weft server. One future chain per
 * connection: accept -> read -> write -> read -> ... until the client hangs
 * up; a bad client closes only its own connection. SIGINT/SIGTERM stop
 * accepting, close every connection and exit cleanly.
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
  char buf[16384];
} conn_t;

static struct {
  weft_loop_t *loop;
  weft_executor_t *on_loop; /* continuations run on the loop thread */
  weft_socket_t *listener;
  conn_t *conns;
  long open, served;
  int stopping;
} srv;

/* Run fn(arg, f) on the loop once f settles; the watch takes our handle. */
static void watch(weft_future_t *f, weft_watch_fn fn, void *arg) {
  if (weft_future_watch(f, srv.on_loop, fn, arg, NULL) != 0) {
    fprintf(stderr, "echo_server: out of memory\n");
    exit(1);
  }
}

/* c's operation ended with err. WEFT_ECANCELED while c->sock is still set
 * means the loop is closing and closed the socket itself. */
static void conn_close(conn_t *c, int err) {
  if (c->sock != NULL && err != WEFT_ECANCELED)
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
}

static void conn_read(conn_t *c);

static void on_written(void *arg, weft_future_t *f) {
  conn_t *c = arg;
  if (weft_future_state(f) == WEFT_FULFILLED)
    conn_read(c);
  else
    conn_close(c, weft_future_error(f)); /* reset or closed while writing */
}

static void on_read(void *arg, weft_future_t *f) {
  conn_t *c = arg;
  weft_future_t *w;
  if (weft_future_state(f) == WEFT_FULFILLED &&
      weft_socket_write(c->sock, c->buf, (size_t)weft_future_int(f), &w) == 0) {
    /* A write to an idle socket is tried at once, so w is often settled
     * already: then the buffer is free now and the next read can start
     * without a continuation (no allocation, no trip through the queue). */
    if (weft_future_state(w) == WEFT_FULFILLED) {
      weft_future_release(w);
      conn_read(c);
      return;
    }
    watch(w, on_written, c); /* the buffer is busy until w settles */
    return;
  }
  /* end of stream, reset, or shutting down */
  conn_close(c, weft_future_error(f));
}

static void conn_read(conn_t *c) {
  weft_future_t *r;
  if (weft_socket_read(c->sock, c->buf, sizeof c->buf, &r) != 0) {
    conn_close(c, 0);
    return;
  }
  watch(r, on_read, c);
}

static void accept_next(void);

static void on_accept(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    if (!srv.stopping) /* the listener itself failed: its owner decides */
      fprintf(stderr, "echo_server: accept: %s\n",
              weft_error_message(weft_future_error(f)));
    return;
  }
  conn_t *c = malloc(sizeof *c);
  if (c == NULL) {
    /* refuse this one only: the future, released unread, closes it */
  } else if (weft_socket_take(f, &c->sock) != 0) {
    free(c); /* (closed by the loop's close) */
  } else {
    c->prev = NULL;
    c->next = srv.conns;
    if (srv.conns != NULL)
      srv.conns->prev = c;
    srv.conns = c;
    srv.open++;
    srv.served++;
    conn_read(c);
  }
  accept_next();
}

static void accept_next(void) {
  weft_future_t *a;
  if (weft_socket_accept(srv.listener, &a) == 0)
    watch(a, on_accept, NULL);
}

static void on_signal(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED || srv.stopping)
    return;
  fprintf(stderr, "echo_server: signal %d, shutting down\n",
          (int)weft_future_int(f));
  srv.stopping = 1;
  weft_socket_close(srv.listener); /* cancels the pending accept */
  /* Closing a connection cancels its read; its continuation frees it. */
  for (conn_t *c = srv.conns; c != NULL; c = c->next)
    weft_socket_close(c->sock), c->sock = NULL;
  if (srv.open == 0)
    weft_loop_stop(srv.loop);
}

int main(int argc, char **argv) {
  long port = 7000;
  if (argc > 1) {
    char *end;
    errno = 0;
    port = strtol(argv[1], &end, 10);
    if (argc > 2 || end == argv[1] || *end != 0 || errno == ERANGE ||
        port < 0 || port > 65535) {
      int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
      fprintf(help ? stdout : stderr,
              "usage: echo_server [PORT]   listen on 127.0.0.1:PORT, "
              "0..65535 (default 7000;\n"
              "                            0: any free port)\n"
              "Echoes bytes, not lines: whatever arrives (any length, NUL "
              "bytes included)\ngoes back unchanged.\n");
      return help ? 0 : 2;
    }
  }
  weft_addr_t addr;
  int rc = weft_loop_create(NULL, &srv.loop);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(srv.loop, &addr, 128, &srv.listener);
  if (rc == 0)
    rc = weft_socket_local_addr(srv.listener, &addr);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", weft_error_message(rc));
    return 1;
  }
  srv.on_loop = weft_loop_executor(srv.loop);
  int sigs[] = {SIGINT, SIGTERM};
  for (int i = 0; i < 2; i++) {
    weft_future_t *s;
    if (weft_signal_next(srv.loop, sigs[i], &s) == 0)
      watch(s, on_signal, NULL);
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("echo_server: listening on %s\n", name);
  fflush(stdout);
  accept_next();
  weft_loop_run(srv.loop, WEFT_RUN_DEFAULT);
  printf("echo_server: served %ld connections\n", srv.served);
  weft_loop_close(srv.loop); /* cancels the other signal future */
  return 0;
}
