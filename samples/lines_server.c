/* SPDX-License-Identifier: MIT */
/* samples/lines_server.c: a line protocol on weft's toolkit. One fiber per
 * connection reads requests with a buffered reader and answers each within
 * a deadline of its own; CPU work goes to the pool, name lookups to the
 * blocking threads, and the loop never waits for either.
 *
 *   lines_server [--port P] [--idle-ms MS] [--request-ms MS] [--jobs N]
 *   printf 'PRIMES 1000000\nRESOLVE localhost\n' | nc 127.0.0.1 7002
 *
 * Requests, one per line (LF or CRLF; 1024 bytes at most, newline included):
 *   PRIMES N     how many primes are <= N (N <= 10^9), counted on the pool
 *   RESOLVE HOST the host's addresses
 *   ECHO TEXT    TEXT
 *   QUIT         BYE, and the server closes the connection
 * Each answer is one line, "OK ..." or "ERR reason". A request that is not
 * answered within --request-ms (default 1000) gets "ERR timed out" and
 * its work is cancelled; at most --jobs (default 4) PRIMES run at once, the
 * rest wait for a turn within their deadline. A client silent for --idle-ms
 * (default 10000) gets "ERR idle" and is closed; a client that does not
 * read its answers is closed when one cannot be queued in time. SIGINT or
 * SIGTERM: stop accepting, let requests in flight finish for up to a
 * second, then cancel the rest and exit. */
#include <weft.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LINE = 1024, REPLY = 1100 };

static struct {
  weft_runtime_t *rt;
  weft_semaphore_t *jobs; /* turns for PRIMES */
  long idle_ms, request_ms;
} srv = {.idle_ms = 10000, .request_ms = 1000};

static int64_t deadline_in(long ms) {
  return weft_clock_now_ns() + (int64_t)ms * 1000000;
}

/* Await f until the deadline; past it, cancel f. 0 when f fulfilled,
 * otherwise why not (WEFT_ETIMEDOUT, f's error, the fiber's cancel). */
static int await_by(weft_future_t *f, int64_t deadline_ns) {
  int64_t left = deadline_ns - weft_clock_now_ns();
  int rc = weft_future_await(f, left > 0 ? (left + 999999) / 1000000 : 0);
  if (rc == WEFT_ETIMEDOUT)
    weft_future_cancel(f);
  return rc != 0 ? rc : weft_future_error(f);
}

/* The CPU work: primes <= n by trial division, on a pool worker. It stops
 * early once its request gave up on it. */
static weft_result_t count_primes(weft_job_t *job, void *arg) {
  long n = (long)(intptr_t)arg, count = 0;
  for (long i = 2; i <= n; i++) {
    if ((i & 1023) == 0 && weft_job_is_cancelled(job))
      return weft_err(WEFT_ECANCELED);
    long d = 2;
    while (d * d <= i && i % d != 0)
      d++;
    count += d * d > i;
  }
  return weft_ok_int(count);
}

static int primes(const char *arg, int64_t deadline, char *out) {
  char *end;
  long n = strtol(arg, &end, 10);
  if (end == arg || *end != 0 || n < 0 || n > 1000000000)
    return snprintf(out, REPLY, "ERR PRIMES takes a number up to 10^9\n");
  weft_future_t *turn, *f;
  int rc = weft_semaphore_acquire(srv.jobs, &turn);
  if (rc == 0) {
    rc = await_by(turn, deadline); /* a timeout gives the turn back */
    weft_future_release(turn);
  }
  if (rc != 0)
    return rc;
  rc = weft_pool_submit(weft_runtime_pool(srv.rt), count_primes,
                        (void *)(intptr_t)n, NULL, &f);
  if (rc == 0) {
    rc = await_by(f, deadline);
    if (rc == 0)
      rc = snprintf(out, REPLY, "OK %ld\n", (long)weft_future_int(f));
    weft_future_release(f);
  }
  weft_semaphore_release(srv.jobs, 1);
  return rc;
}

static int resolve(const char *host, int64_t deadline, char *out) {
  weft_future_t *f;
  int rc = weft_dns_resolve(weft_runtime_loop(srv.rt), host, NULL, NULL, &f);
  if (rc != 0)
    return rc;
  if ((rc = await_by(f, deadline)) == 0) {
    const weft_addr_list_t *list = weft_future_value(f);
    int len = snprintf(out, REPLY, "OK");
    for (size_t i = 0; i < list->count && len < REPLY - 64; i++) {
      out[len++] = ' ';
      weft_addr_format(&list->addrs[i], out + len, (size_t)(REPLY - len));
      len += (int)strlen(out + len);
      if (len > 2 && out[len - 2] == ':' && out[len - 1] == '0')
        len -= 2; /* no service: drop the ":0" */
    }
    rc = len + snprintf(out + len, (size_t)(REPLY - len), "\n");
  }
  weft_future_release(f);
  return rc;
}

/* Answer one request into out: its length, or the request's error (a
 * WEFT_E code, negative) for the caller to report. */
static int answer(char *line, char *out) {
  int64_t deadline = deadline_in(srv.request_ms);
  char *arg = strchr(line, ' ');
  if (arg != NULL)
    *arg++ = 0;
  if (strcmp(line, "PRIMES") == 0 && arg != NULL)
    return primes(arg, deadline, out);
  if (strcmp(line, "RESOLVE") == 0 && arg != NULL)
    return resolve(arg, deadline, out);
  if (strcmp(line, "ECHO") == 0)
    return snprintf(out, REPLY, "OK %s\n", arg != NULL ? arg : "");
  if (strcmp(line, "QUIT") == 0 && arg == NULL)
    return snprintf(out, REPLY, "BYE\n");
  return snprintf(out, REPLY, "ERR unknown request\n");
}

/* A line over MAX_LINE: drop it up to and including its end. */
static int skip_line(weft_reader_t *r, int64_t deadline) {
  weft_bytes_t tail;
  int rc;
  do
    weft_reader_consume(r, MAX_LINE); /* none of them is a newline */
  while ((rc = weft_reader_await_line(r, MAX_LINE, deadline, &tail)) ==
         WEFT_EMSGSIZE);
  return rc;
}

/* One connection, start to end. */
static weft_result_t serve(void *arg) {
  weft_socket_t *sock = arg;
  weft_reader_t *r = NULL;
  weft_writer_t *w = NULL;
  char line[MAX_LINE + 1], out[REPLY];
  int rc = weft_reader_create(sock, NULL, &r);
  if (rc == 0)
    rc = weft_writer_create(sock, NULL, &w);
  while (rc == 0) {
    weft_bytes_t in;
    int n;
    rc = weft_reader_await_line(r, MAX_LINE, deadline_in(srv.idle_ms), &in);
    if (rc == WEFT_EMSGSIZE &&
        (rc = skip_line(r, deadline_in(srv.idle_ms))) == 0)
      n = snprintf(out, REPLY, "ERR line too long\n");
    else if (rc == WEFT_ETIMEDOUT)
      n = snprintf(out, REPLY, "ERR idle\n");
    else if (rc != 0)
      break; /* the client left, or shutdown cancelled us */
    else {
      memcpy(line, in.data, in.len);
      line[in.len] = 0;
      n = answer(line, out);
    }
    if (n < 0) /* the request failed: say why */
      n = snprintf(out, REPLY, "ERR %s\n", weft_error_message(n));
    if (weft_writer_await_write(w, out, (size_t)n,
                                deadline_in(srv.request_ms)) != 0 ||
        rc != 0 || strcmp(out, "BYE\n") == 0)
      break;
  }
  if (w != NULL) { /* what is queued goes before the close, in time */
    weft_writer_await_flush(w, deadline_in(srv.request_ms));
    weft_writer_close(w);
  }
  if (r != NULL)
    weft_reader_close(r);
  weft_socket_close(sock);
  return weft_ok_int(0);
}

/* A connection whose fiber never ran (shutdown came first). */
static void close_sock(void *sock) { weft_socket_close(sock); }

/* The main fiber: accept until SIGINT or SIGTERM, each connection in a
 * fiber of its own; then return, and main shuts the runtime down. */
static weft_result_t accept_all(void *arg) {
  weft_socket_t *listener = arg;
  weft_loop_t *loop = weft_runtime_loop(srv.rt);
  weft_future_t *sigs[2] = {NULL, NULL}, *stop = NULL, *in[2];
  int rc = weft_signal_next(loop, SIGINT, &sigs[0]);
  if (rc == 0)
    rc = weft_signal_next(loop, SIGTERM, &sigs[1]);
  if (rc == 0)
    rc = weft_future_race(sigs, 2, &stop);
  for (int i = 0; i < 2; i++)
    if (sigs[i] != NULL)
      weft_future_release(sigs[i]); /* the race holds them */
  while (rc == 0) {
    weft_future_t *a;
    size_t which;
    weft_socket_t *sock;
    if ((rc = weft_socket_accept(listener, &a)) != 0)
      break;
    in[0] = a, in[1] = stop;
    rc = weft_future_await_first(in, 2, WEFT_FOREVER, &which);
    if (rc == 0 && which == 1) /* a signal: stop accepting */
      rc = WEFT_ECANCELED;
    else if (rc == 0 && weft_socket_take(a, &sock) == 0)
      weft_runtime_spawn(srv.rt, NULL, serve, sock, close_sock, NULL);
    else if (rc == 0) /* the listener failed; a closed client does not */
      rc = weft_future_error(a) == WEFT_ECONNABORTED ? 0 : weft_future_error(a);
    weft_future_release(a);
  }
  if (stop != NULL)
    weft_future_release(stop);
  weft_socket_close(listener);
  return rc == WEFT_ECANCELED ? weft_ok_int(0) : weft_err(rc);
}

/* --name value: the value, or exit 2 with the usage. */
static long option(int argc, char **argv, int *i, long lo, long hi) {
  char *end;
  errno = 0;
  long v = *i + 1 < argc ? strtol(argv[*i + 1], &end, 10) : -1;
  if (*i + 1 >= argc || end == argv[*i + 1] || *end != 0 || errno != 0 ||
      v < lo || v > hi) {
    fprintf(stderr, "usage: lines_server [--port P] [--idle-ms MS] "
                    "[--request-ms MS] [--jobs N]\n");
    exit(2);
  }
  *i += 1;
  return v;
}

int main(int argc, char **argv) {
  long port = 7002, jobs = 4;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0)
      port = option(argc, argv, &i, 0, 65535);
    else if (strcmp(argv[i], "--idle-ms") == 0)
      srv.idle_ms = option(argc, argv, &i, 1, 86400000);
    else if (strcmp(argv[i], "--request-ms") == 0)
      srv.request_ms = option(argc, argv, &i, 1, 86400000);
    else if (strcmp(argv[i], "--jobs") == 0)
      jobs = option(argc, argv, &i, 1, 1024);
    else
      option(argc, argv, &(int){argc}, 0, 0); /* the usage */
  }
  weft_addr_t addr;
  weft_socket_t *listener = NULL;
  weft_future_t *done = NULL;
  int rc = weft_runtime_create(NULL, &srv.rt);
  if (rc == 0)
    rc = weft_semaphore_create((unsigned)jobs, &srv.jobs);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(weft_runtime_loop(srv.rt), &addr, 128, &listener);
  if (rc == 0)
    rc = weft_socket_local_addr(listener, &addr);
  if (rc == 0)
    rc = weft_runtime_spawn(srv.rt, NULL, accept_all, listener, NULL, &done);
  if (rc != 0) {
    fprintf(stderr, "lines_server: %s\n", weft_error_message(rc));
    return 1;
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("lines_server: listening on %s\n", name);
  fflush(stdout);
  weft_runtime_run(srv.rt, done, WEFT_FOREVER);
  rc = weft_future_error(done);
  weft_future_release(done);
  if (rc != 0)
    fprintf(stderr, "lines_server: %s\n", weft_error_message(rc));
  /* requests in flight get a second; then they are cancelled */
  weft_runtime_shutdown(srv.rt, 1000);
  weft_semaphore_close(srv.jobs);
  return rc != 0;
}
