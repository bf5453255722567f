/* SPDX-License-Identifier: MIT */
/* samples/shutdown_server.c: graceful shutdown with fibers and a scope.
 * A line server: each request "MS" is work that takes MS milliseconds
 * (a sleep standing in for a database call or an offloaded job), answered
 * "done MS". On SIGINT or SIGTERM it stops accepting, lets the requests
 * in flight finish within a grace period, cancels what is still running
 * then, and exits with every fiber ended and every future settled.
 *
 *   shutdown_server [PORT [GRACE_MS]]   (defaults 7001 and 2000; port 0
 *                                        picks a free one)
 *   printf '300\n' | nc 127.0.0.1 7001  -> done 300
 *
 * Every connection is a fiber in one scope (collect: a client that fails
 * ends only its own fiber). Shutdown is four steps in one fiber:
 * close the listener, tell the connections (idle ones leave at once, busy
 * ones after their answer), wait for the scope's join at most GRACE_MS,
 * then cancel the scope and close it (it waits for every fiber to end). */
#include <weft.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
  weft_loop_t *loop;
  weft_socket_t *listener;
  weft_promise_t *stop_p;
  weft_future_t *stop; /* settles when shutdown begins */
  long grace_ms;
} srv;

/* Await f, give it back; its integer value, or its error (negative). */
static intptr_t await_int(weft_future_t *f) {
  int rc = weft_future_await(f, WEFT_FOREVER);
  if (rc == 0)
    rc = weft_future_error(f);
  intptr_t v = rc == 0 ? weft_future_int(f) : rc;
  weft_future_release(f);
  return v;
}

/* Answer one request line; false when the connection should end. */
static bool answer(weft_socket_t *sock, const char *line) {
  char *end;
  long ms = strtol(line, &end, 10);
  char reply[64];
  weft_future_t *f;
  if (end == line || ms < 0 || ms > 60000) {
    snprintf(reply, sizeof reply, "error: send a number of ms\n");
  } else {
    fprintf(stderr, "shutdown_server: working %ld ms\n", ms);
    /* The work; a cancel (the grace period is over) ends it here. */
    if (weft_loop_sleep(srv.loop, ms, &f) != 0 || await_int(f) < 0)
      return false;
    snprintf(reply, sizeof reply, "done %ld\n", ms);
  }
  return weft_socket_write(sock, reply, strlen(reply), &f) == 0 &&
         await_int(f) >= 0;
}

/* One connection: read lines, answer each, until the client leaves or
 * shutdown begins (an idle connection leaves at once, a busy one after
 * the answer it is working on). */
static weft_result_t serve(void *arg) {
  weft_socket_t *sock = arg;
  weft_reader_t *in = NULL;
  char line[512];
  bool go = weft_reader_create(sock, NULL, &in) == 0;
  while (go && weft_future_state(srv.stop) == WEFT_PENDING) {
    weft_future_t *r, *either[2];
    size_t which;
    if (weft_reader_read_line(in, sizeof line, 0, &r) != 0)
      break;
    either[0] = r, either[1] = srv.stop;
    go = weft_future_await_first(either, 2, WEFT_FOREVER, &which) == 0 &&
         which == 0 && weft_future_error(r) == 0;
    if (go) { /* a line; a longer one than 511 bytes ends this client */
      const weft_bytes_t *l = weft_future_value(r);
      memcpy(line, l->data, l->len);
      line[l->len] = 0;
    }
    weft_future_cancel(r); /* idle at shutdown: the read stops here */
    weft_future_release(r);
    go = go && answer(sock, line);
  }
  if (in != NULL)
    weft_reader_close(in);
  weft_socket_close(sock);
  return weft_ok_int(0);
}

static void close_socket(void *sock) { weft_socket_close(sock); }

/* Accept until a signal comes; then shut down in order. */
static weft_result_t run(void *arg) {
  weft_future_t **sigs = arg; /* SIGINT, SIGTERM */
  weft_scope_t *conns;
  weft_scope_options_t o = {.size = sizeof o, .policy = WEFT_SCOPE_COLLECT};
  if (weft_scope_create(&o, &conns) != 0)
    return weft_err(WEFT_ENOMEM);
  for (;;) {
    weft_future_t *a;
    if (weft_socket_accept(srv.listener, &a) != 0)
      break;
    weft_future_t *w[3] = {a, sigs[0], sigs[1]};
    size_t which;
    weft_socket_t *sock;
    if (weft_future_await_first(w, 3, WEFT_FOREVER, &which) != 0 ||
        which != 0) {
      weft_future_cancel(a);
      weft_future_release(a);
      break;
    }
    if (weft_socket_take(a, &sock) == 0 &&
        weft_scope_spawn(conns, weft_loop_executor(srv.loop), NULL, serve, sock,
                         close_socket, NULL) != 0)
      weft_socket_close(sock);
    weft_future_release(a);
  }
  fprintf(stderr, "shutdown_server: shutting down, grace %ld ms\n",
          srv.grace_ms);
  weft_socket_close(srv.listener);
  weft_promise_fulfil_int(srv.stop_p, 1);
  weft_future_t *all;
  if (weft_scope_join(conns, &all) == 0) {
    if (weft_future_await(all, srv.grace_ms) == WEFT_ETIMEDOUT) {
      fprintf(stderr, "shutdown_server: grace period over, cancelling\n");
      weft_scope_cancel(conns);
    }
    weft_future_release(all);
  }
  weft_scope_close(conns); /* waits until every connection's fiber ended */
  fprintf(stderr, "shutdown_server: every connection closed\n");
  weft_loop_stop(srv.loop);
  return weft_ok_int(0);
}

static long number(const char *s, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return end == s || *end != 0 || errno == ERANGE || v < 0 || v > max ? -1 : v;
}

int main(int argc, char **argv) {
  long port = argc > 1 ? number(argv[1], 65535) : 7001;
  srv.grace_ms = argc > 2 ? number(argv[2], 3600000) : 2000;
  if (argc > 3 || port < 0 || srv.grace_ms < 0) {
    fprintf(stderr, "usage: shutdown_server [PORT [GRACE_MS]]\n");
    return 2;
  }
  weft_addr_t addr;
  weft_future_t *sigs[2] = {NULL, NULL}, *main_f = NULL;
  int rc = weft_loop_create(NULL, &srv.loop);
  if (rc == 0)
    rc = weft_promise_create(&srv.stop_p, &srv.stop);
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
  if (rc == 0)
    rc = weft_fiber_spawn(weft_loop_executor(srv.loop), run, sigs, NULL,
                          &main_f);
  if (rc != 0) {
    fprintf(stderr, "shutdown_server: %s\n", weft_error_message(rc));
    return 1;
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("shutdown_server: listening on %s\n", name);
  fflush(stdout);
  weft_loop_run(srv.loop, WEFT_RUN_DEFAULT);
  weft_loop_close(srv.loop); /* the other signal's future is cancelled */
  int ok = weft_future_state(main_f) == WEFT_FULFILLED;
  weft_future_release(main_f);
  weft_future_release(sigs[0]);
  weft_future_release(sigs[1]);
  weft_future_release(srv.stop);
  weft_promise_release(srv.stop_p);
  printf("shutdown_server: %s\n", ok ? "clean exit" : "shutdown failed");
  return ok ? 0 : 1;
}
