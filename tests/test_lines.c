/* SPDX-License-Identifier: MIT */
/* tests/test_lines.c: samples/lines_server as a real process driven by
 * plain clients on 127.0.0.1: every request's answer, LF and CRLF; a
 * request past its deadline answered "ERR timed out" with the connection
 * and the server going on; concurrent clients with fewer job turns than
 * requests each get the right answer; a silent client told "ERR idle" and
 * closed; an over-long line refused and the next one served; a client that
 * leaves mid-line; SIGTERM with work in flight exits 0 (and, in a sanitizer
 * build, without a leak report). Every wait is bounded. */
#include "server_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef WEFT_LINES_SERVER
#error "WEFT_LINES_SERVER (the lines_server binary's path) must be defined"
#endif

static server_t start(const char *idle_ms, const char *request_ms,
                      const char *jobs) {
  char *argv[] = {"lines_server",
                  "--port",
                  "0",
                  "--idle-ms",
                  (char *)idle_ms,
                  "--request-ms",
                  (char *)request_ms,
                  "--jobs",
                  (char *)jobs,
                  NULL};
  return spawn_argv(WEFT_LINES_SERVER, argv);
}

static client_t *connect_to(const server_t *s) {
  client_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->fd = dial(s->port, 0);
  return c;
}

static void hang_up(client_t *c) {
  close(c->fd);
  free(c);
}

/* Send one request, read one answer; "" when none came. */
static void ask(client_t *c, const char *req, char *out, size_t cap) {
  send_all(c->fd, req, strlen(req));
  if (!read_line(c, out, cap, WAIT_MS))
    out[0] = 0;
}

static void expect_answer(client_t *c, const char *req, const char *want) {
  char got[1200];
  ask(c, req, got, sizeof got);
  if (strcmp(got, want) != 0)
    fprintf(stderr, "%s -> \"%s\", want \"%s\"\n", req, got, want);
  EXPECT_TRUE(strcmp(got, want) == 0); /* (both printed above) */
}

static void test_requests(void) {
  server_t s = start("10000", "5000", "2");
  client_t *c = connect_to(&s);
  expect_answer(c, "ECHO hello there\n", "OK hello there");
  expect_answer(c, "ECHO crlf\r\n", "OK crlf");
  expect_answer(c, "PRIMES 100\n", "OK 25");
  expect_answer(c, "PRIMES 1\r\n", "OK 0");
  expect_answer(c, "PRIMES ten\n", "ERR PRIMES takes a number up to 10^9");
  expect_answer(c, "PRIMES 2000000000\n",
                "ERR PRIMES takes a number up to 10^9");
  expect_answer(c, "RESOLVE 127.0.0.1\n", "OK 127.0.0.1");
  expect_answer(c, "RESOLVE name.invalid\n", "ERR unknown host or service");
  expect_answer(c, "HELLO\n", "ERR unknown request");
  expect_answer(c, "\n", "ERR unknown request");
  /* pipelined: three requests in one write, three answers in order */
  send_all(c->fd, "ECHO 1\nPRIMES 10\nECHO 3\n", 24);
  char got[64];
  const char *want[] = {"OK 1", "OK 4", "OK 3"};
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(read_line(c, got, sizeof got, WAIT_MS), 1);
    EXPECT_STREQ(got, want[i]);
  }
  expect_answer(c, "QUIT\n", "BYE");
  EXPECT_EQ(read_line(c, got, sizeof got, WAIT_MS), 0); /* closed */
  hang_up(c);
  EXPECT_EQ(stop(&s), 0);
}

/* The work outlives the request's deadline: the answer comes at the
 * deadline, the job is cancelled (the next requests are answered at once,
 * on the same connection and on another one), and nothing is stuck. */
static void test_request_deadline(void) {
  server_t s = start("10000", "300", "1");
  client_t *c = connect_to(&s), *d = connect_to(&s);
  int64_t t0 = weft_clock_now_ns();
  expect_answer(c, "PRIMES 1000000000\n", "ERR timed out");
  int64_t ms = (weft_clock_now_ns() - t0) / 1000000;
  EXPECT_TRUE(ms >= 290 && ms < WAIT_MS);
  expect_answer(c, "ECHO still here\n", "OK still here");
  /* with one turn only, these wait for nothing if the first job let go */
  expect_answer(d, "PRIMES 1000\n", "OK 168");
  expect_answer(c, "PRIMES 1000\n", "OK 168");
  hang_up(c);
  hang_up(d);
  EXPECT_EQ(stop(&s), 0);
}

/* 12 clients, 2 job turns: each client's 5 requests all answered right. */
static void test_many_clients(void) {
  enum { NCLI = 12, NREQ = 5 };
  server_t s = start("10000", "10000", "2");
  client_t *c[NCLI];
  for (int i = 0; i < NCLI; i++)
    c[i] = connect_to(&s);
  for (int r = 0; r < NREQ; r++)
    for (int i = 0; i < NCLI; i++)
      send_all(c[i]->fd, "PRIMES 20000\n", 13);
  int right = 0;
  for (int i = 0; i < NCLI; i++)
    for (int r = 0; r < NREQ; r++) {
      char got[64];
      right += read_line(c[i], got, sizeof got, WAIT_MS) &&
               strcmp(got, "OK 2262") == 0;
    }
  EXPECT_EQ(right, NCLI * NREQ);
  for (int i = 0; i < NCLI; i++)
    hang_up(c[i]);
  EXPECT_EQ(stop(&s), 0);
}

/* A silent client is told and closed; one that talks is kept. */
static void test_idle(void) {
  server_t s = start("200", "1000", "1");
  client_t *c = connect_to(&s);
  char got[64];
  EXPECT_EQ(read_line(c, got, sizeof got, WAIT_MS), 1);
  EXPECT_STREQ(got, "ERR idle");
  EXPECT_EQ(read_line(c, got, sizeof got, WAIT_MS), 0); /* closed */
  hang_up(c);
  EXPECT_EQ(stop(&s), 0);
}

/* A line past 1024 bytes is refused as a whole, in any number of pieces;
 * the next line is served. A client that leaves mid-line ends only its own
 * connection. */
static void test_long_line_and_mid_line(void) {
  server_t s = start("10000", "1000", "1");
  client_t *c = connect_to(&s);
  char big[5000];
  memset(big, 'x', sizeof big);
  send_all(c->fd, "ECHO ", 5);
  for (int i = 0; i < 4; i++)
    send_all(c->fd, big, sizeof big);
  expect_answer(c, "\n", "ERR line too long");
  expect_answer(c, "ECHO after\n", "OK after");
  /* the longest line: "ECHO " and 1018 bytes, 1024 with its newline */
  char req[1100] = "ECHO ", want[1100] = "OK ";
  memset(req + 5, 'y', 1018);
  memcpy(req + 5 + 1018, "\n", 2);
  memset(want + 3, 'y', 1018);
  want[3 + 1018] = 0;
  expect_answer(c, req, want);
  req[5 + 1018] = 'y'; /* one more: too long */
  memcpy(req + 5 + 1019, "\n", 2);
  expect_answer(c, req, "ERR line too long");
  client_t *d = connect_to(&s);
  send_all(d->fd, "ECHO never ends", 15);
  hang_up(d);
  expect_answer(c, "ECHO still\n", "OK still");
  hang_up(c);
  EXPECT_EQ(stop(&s), 0);
}

/* SIGTERM while a job runs and a client is idle: exit 0 in bounded time. */
static void test_sigterm_in_flight(void) {
  server_t s = start("60000", "60000", "1");
  client_t *c = connect_to(&s), *d = connect_to(&s);
  expect_answer(d, "ECHO up\n", "OK up");
  send_all(c->fd, "PRIMES 1000000000\n", 18);
  int64_t t0 = weft_clock_now_ns();
  EXPECT_EQ(stop_with(&s, SIGTERM), 0);
  EXPECT_TRUE((weft_clock_now_ns() - t0) / 1000000 < WAIT_MS);
  hang_up(c);
  hang_up(d);
}

static const test_case_t cases[] = {
    {"every request's answer", test_requests},
    {"a request past its deadline", test_request_deadline},
    {"12 clients, 2 job turns", test_many_clients},
    {"a silent client", test_idle},
    {"an over-long line, a client gone mid-line", test_long_line_and_mid_line},
    {"SIGTERM with work in flight", test_sigterm_in_flight},
    {NULL, NULL},
};

const test_suite_t suite_lines = {"lines", cases};
