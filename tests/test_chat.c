/* SPDX-License-Identifier: MIT */
/* tests/test_chat.c: the server samples, run as real processes and driven
 * by real clients on 127.0.0.1. chat_server: 50 clients each send lines and
 * every line reaches every other client exactly once (and never its
 * sender); a client that never reads is dropped while the others go on; a
 * silent client is closed by the idle timeout; SIGTERM tells every client
 * and exits cleanly; an over-long line or one with a NUL byte gets an error
 * line and the connection goes on. echo_server echoes. offload_demo
 * --serve answers every malformed line with an error line and keeps the
 * connection, and holds back a client that sends without reading. A bad
 * command line gets the usage and exit status 2. Each server stopped by
 * SIGINT with operations pending exits 0 and, in a sanitizer build, with
 * no LeakSanitizer report. Every wait is bounded (poll timeouts). */
#include "server_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef WEFT_CHAT_SERVER
#error "WEFT_CHAT_SERVER (the chat_server binary's path) must be defined"
#endif
#ifndef WEFT_OFFLOAD_DEMO
#error "WEFT_OFFLOAD_DEMO (the offload_demo binary's path) must be defined"
#endif

static server_t spawn(const char *max_queue, const char *idle_ms) {
  char *argv[] = {"chat_server",
                  "--port",
                  "0",
                  "--max-queue",
                  (char *)max_queue,
                  "--idle-ms",
                  (char *)idle_ms,
                  "--heartbeat-ms",
                  "100",
                  NULL};
  return spawn_argv(WEFT_CHAT_SERVER, argv);
}

static client_t *join(int port, int rcvbuf) {
  client_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->fd = dial(port, rcvbuf);
  char line[256];
  REQUIRE_EQ(read_line(c, line, sizeof line, WAIT_MS), 1);
  REQUIRE_EQ(sscanf(line, "* welcome guest%d", &c->id), 1);
  return c;
}

/* ---- 50 clients: every line to every other client exactly once ---- */

#define NC 50
#define NL 20

static void test_fanout(void) {
  server_t s = spawn("1048576", "60000");
  client_t *cs[NC];
  for (int i = 0; i < NC; i++)
    cs[i] = join(s.port, 0);
  for (int j = 0; j < NL; j++)
    for (int i = 0; i < NC; i++) {
      char msg[64];
      int n = snprintf(msg, sizeof msg, "from %d line %d\n", cs[i]->id, j);
      send_all(cs[i]->fd, msg, (size_t)n);
    }
  /* got[r][sender id][line]: how many times r saw it */
  static unsigned char got[NC][NC + 1][NL];
  memset(got, 0, sizeof got);
  long wrong = 0, own = 0;
  for (int r = 0; r < NC; r++) {
    int want = (NC - 1) * NL, have = 0;
    char line[256];
    while (have < want && read_line(cs[r], line, sizeof line, WAIT_MS)) {
      if (line[0] == '*')
        continue; /* joins and notices */
      int gid, from, k;
      if (sscanf(line, "guest%d: from %d line %d", &gid, &from, &k) != 3 ||
          gid != from || from < 1 || from > NC || k < 0 || k >= NL) {
        wrong++;
        continue;
      }
      if (from == cs[r]->id)
        own++;
      got[r][from][k]++;
      have++;
    }
    EXPECT_EQ(have, want);
  }
  long once = 0, bad = 0;
  for (int r = 0; r < NC; r++)
    for (int i = 0; i < NC; i++)
      for (int k = 0; k < NL; k++) {
        int from = cs[i]->id;
        if (from == cs[r]->id)
          continue;
        if (got[r][from][k] == 1)
          once++;
        else
          bad++;
      }
  EXPECT_EQ(once, (long)NC * (NC - 1) * NL);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(own, 0);
  for (int i = 0; i < NC; i++) {
    close(cs[i]->fd);
    free(cs[i]);
  }
  EXPECT_EQ(stop(&s), 0);
}

/* ---- a client that never reads is dropped; the others go on ---- */

static void test_slow_reader_dropped(void) {
  server_t s = spawn("65536", "60000");
  client_t *slow = join(s.port, 4096); /* small receive buffer, never read */
  client_t *talker = join(s.port, 0);
  client_t *watcher = join(s.port, 0);
  char big[4001];
  memset(big, 'x', sizeof big - 2);
  big[sizeof big - 2] = '\n';
  big[sizeof big - 1] = 0;
  bool dropped = false;
  char line[8192];
  int sent = 0, seen = 0;
  /* Lockstep: the talker sends a 4 KB line, the watcher reads it. The
   * slow client's kernel buffers fill, then its queue passes 64 KiB. */
  for (; sent < 5000 && !dropped; sent++) {
    send_all(talker->fd, big, sizeof big - 1);
    for (;;) {
      REQUIRE_EQ(read_line(watcher, line, sizeof line, WAIT_MS), 1);
      if (line[0] != '*') {
        seen++;
        break;
      }
      char want[64];
      snprintf(want, sizeof want, "* guest%d left (slow reader", slow->id);
      if (strncmp(line, want, strlen(want)) == 0)
        dropped = true;
    }
  }
  EXPECT_TRUE(dropped);
  EXPECT_EQ(seen, sent); /* the watcher missed nothing meanwhile */
  /* The slow client's connection was closed: draining it ends in EOF. */
  bool eof = false;
  for (;;) {
    struct pollfd pf = {slow->fd, POLLIN, 0};
    if (poll(&pf, 1, WAIT_MS) != 1)
      break;
    ssize_t r = read(slow->fd, slow->buf, sizeof slow->buf);
    if (r <= 0) {
      eof = true;
      break;
    }
  }
  EXPECT_TRUE(eof);
  client_t *all[] = {slow, talker, watcher};
  for (int i = 0; i < 3; i++) {
    close(all[i]->fd);
    free(all[i]);
  }
  EXPECT_EQ(stop(&s), 0);
}

/* ---- idle timeout, and the goodbye on SIGTERM ---- */

static void test_idle_and_shutdown(void) {
  server_t s = spawn("65536", "300");
  client_t *quiet = join(s.port, 0);
  client_t *chatty = join(s.port, 0);
  char line[256];
  /* chatty keeps talking (each line resets its timer); quiet says nothing
   * and is closed after ~300 ms. */
  bool quiet_closed = false;
  int64_t t0 = weft_clock_now_ns(), end = t0 + (int64_t)WAIT_MS * 1000000;
  while (!quiet_closed && weft_clock_now_ns() < end) {
    send_all(chatty->fd, "still here\n", 11);
    struct pollfd pf = {quiet->fd, POLLIN, 0};
    if (poll(&pf, 1, 50) == 1 &&
        read(quiet->fd, quiet->buf, sizeof quiet->buf) == 0)
      quiet_closed = true; /* (it reads chatty's lines until then) */
  }
  EXPECT_TRUE(quiet_closed);
  EXPECT_TRUE(weft_clock_now_ns() - t0 >=
              250 * 1000000LL); /* not before idle */
  /* SIGTERM: chatty gets the goodbye, then end of stream. */
  kill(s.pid, SIGTERM);
  bool bye = false;
  while (read_line(chatty, line, sizeof line, WAIT_MS))
    if (strcmp(line, "* server shutting down, bye") == 0)
      bye = true;
  EXPECT_TRUE(bye);
  EXPECT_EQ(stop(&s), 0);
  close(quiet->fd);
  close(chatty->fd);
  free(quiet);
  free(chatty);
}

/* ---- the echo_server sample: echoes, and exits cleanly on SIGTERM ---- */

static void test_echo_server_sample(void) {
  char *argv[] = {"echo_server", "0", NULL};
  server_t s = spawn_argv(WEFT_ECHO_SERVER, argv);
  client_t *c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = calloc(1, sizeof *c[i]);
    REQUIRE_EQ(c[i] != NULL, 1);
    c[i]->fd = dial(s.port, 0);
  }
  for (int round = 0; round < 100; round++)
    for (int i = 0; i < 3; i++) {
      char msg[64], line[64];
      int n = snprintf(msg, sizeof msg, "client %d round %d\n", i, round);
      send_all(c[i]->fd, msg, (size_t)n);
      REQUIRE_EQ(read_line(c[i], line, sizeof line, WAIT_MS), 1);
      EXPECT_EQ(strncmp(line, msg, (size_t)n - 1), 0);
    }
  close(c[0]->fd); /* one client leaves; the others go on */
  char line[64];
  send_all(c[1]->fd, "still\n", 6);
  EXPECT_TRUE(read_line(c[1], line, sizeof line, WAIT_MS));
  EXPECT_EQ(strcmp(line, "still"), 0);
  EXPECT_EQ(stop(&s), 0); /* SIGTERM: closes every connection, exit 0 */
  EXPECT_TRUE(!read_line(c[2], line, sizeof line, WAIT_MS)); /* EOF */
  for (int i = 0; i < 3; i++) {
    if (i > 0)
      close(c[i]->fd);
    free(c[i]);
  }
}

/* ---- chat_server's limits: over-long lines and NUL bytes ---- */

/* The next line of c that is not a server notice ("* ..."), or "" at EOF
 * or timeout. */
static void next_message(client_t *c, char *out, size_t cap) {
  while (read_line(c, out, cap, WAIT_MS))
    if (out[0] != '*')
      return;
  out[0] = 0;
}

/* The next "* error: ..." line c gets, or "" at EOF or timeout. */
static void next_error(client_t *c, char *out, size_t cap) {
  while (read_line(c, out, cap, WAIT_MS))
    if (strncmp(out, "* error:", 8) == 0)
      return;
  out[0] = 0;
}

static void test_chat_line_limits(void) {
  server_t s = spawn("1048576", "60000");
  client_t *talker = join(s.port, 0);
  client_t *watcher = join(s.port, 0);
  static char big[10 * 1024 + 64], line[16384], want[8192];
  /* The longest line, 4095 bytes and its newline, goes through whole. */
  memset(big, 'a', 4095);
  big[4095] = '\n';
  send_all(talker->fd, big, 4096);
  next_message(watcher, line, sizeof line);
  int n = snprintf(want, sizeof want, "guest%d: ", talker->id);
  memset(want + n, 'a', 4095);
  want[n + 4095] = 0;
  EXPECT_EQ(strcmp(line, want), 0);
  EXPECT_EQ(strlen(line), strlen(want));
  /* 10 KiB without a newline: an error line to the talker, nothing of it
   * relayed, and the next line goes through. */
  memset(big, 'x', 10 * 1024);
  send_all(talker->fd, big, 10 * 1024);
  send_all(talker->fd, "\nafter the long line\n", 21);
  next_error(talker, line, sizeof line);
  EXPECT_EQ(strcmp(line, "* error: line longer than 4095 bytes (skipped to "
                         "its newline), not relayed"),
            0);
  next_message(watcher, line, sizeof line);
  snprintf(want, sizeof want, "guest%d: after the long line", talker->id);
  EXPECT_EQ(strcmp(line, want), 0);
  /* A NUL byte: an error line, nothing relayed, the next line goes on. */
  send_all(talker->fd, "a\0b\nafter the NUL\n", 18);
  next_error(talker, line, sizeof line);
  EXPECT_EQ(strcmp(line, "* error: NUL byte in the line, not relayed"), 0);
  next_message(watcher, line, sizeof line);
  snprintf(want, sizeof want, "guest%d: after the NUL", talker->id);
  EXPECT_EQ(strcmp(line, want), 0);
  close(talker->fd);
  close(watcher->fd);
  free(talker);
  free(watcher);
  EXPECT_EQ(stop(&s), 0);
}

/* ---- offload_demo --serve: malformed lines ---- */

static server_t spawn_offload(void) {
  char *argv[] = {"offload_demo", "--serve", "0", NULL};
  return spawn_argv(WEFT_OFFLOAD_DEMO, argv);
}

#define OD_USAGE " (usage: job N, 0 <= N <= 2147483647)"

/* Send `bad` (len bytes) and then "job k\n"; collect every line before
 * the answer to job k into got (joined by '|'); false if k's answer never
 * came. */
static bool offload_round(client_t *c, const char *bad, size_t len, long k,
                          char *got, size_t cap) {
  char job[32], line[1024], prefix[32];
  int pn = snprintf(prefix, sizeof prefix, "%ld ", k);
  got[0] = 0;
  if (!send_some(c->fd, bad, len) ||
      !send_some(c->fd, job, (size_t)snprintf(job, sizeof job, "job %ld\n", k)))
    return false;
  while (read_line(c, line, sizeof line, WAIT_MS)) {
    if (strncmp(line, prefix, (size_t)pn) == 0)
      return true;
    size_t at = strlen(got);
    snprintf(got + at, cap - at, "%s%s", at > 0 ? "|" : "", line);
  }
  return false;
}

static void test_offload_bad_lines(void) {
  server_t s = spawn_offload();
  client_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->fd = dial(s.port, 0);
  static char longline[10 * 1024 + 1];
  memset(longline, 'j', 10 * 1024);
  longline[10 * 1024] = '\n';
  static const struct {
    const char *in;
    size_t len;
    const char *error;
  } cases[] = {
      {"job\n", 4, "error: missing job number" OD_USAGE},
      {"job -1\n", 7, "error: job number out of range" OD_USAGE},
      {"job abc\n", 8, "error: job number is not a decimal integer" OD_USAGE},
      {"job 12abc\n", 10,
       "error: job number is not a decimal integer" OD_USAGE},
      {"\n", 1, "error: empty line" OD_USAGE},
      {"job 99999999999999999999\n", 25,
       "error: job number out of range" OD_USAGE},
      {"job 2147483648\n", 15, "error: job number out of range" OD_USAGE},
      {"jobs 1\n", 7, "error: unknown command" OD_USAGE},
      {"job 1\0002\n", 8, "error: NUL byte in the line" OD_USAGE},
      {longline, sizeof longline,
       "error: line longer than 511 bytes, skipped to its newline" OD_USAGE},
  };
  char got[4096];
  int k = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++, k++) {
    bool answered = offload_round(c, cases[i].in, cases[i].len, k, got,
                                  sizeof got);
    if (!answered || strcmp(got, cases[i].error) != 0)
      fprintf(stderr, "case %zu: answered %d, lines before: \"%s\"\n", i,
              answered, got);
    EXPECT_TRUE(answered); /* the connection goes on */
    EXPECT_EQ(strcmp(got, cases[i].error), 0);
  }
  /* Valid forms: the largest N, blanks around, a '\r' before the newline. */
  EXPECT_TRUE(offload_round(c, "", 0, 2147483647, got, sizeof got));
  EXPECT_EQ(strcmp(got, ""), 0);
  EXPECT_TRUE(send_some(c->fd, " job\t 7 \r\n", 10));
  EXPECT_TRUE(read_line(c, got, sizeof got, WAIT_MS));
  EXPECT_EQ(strncmp(got, "7 ", 2), 0);
  close(c->fd);
  free(c);
  EXPECT_EQ(stop_with(&s, SIGINT), 0);
}

/* A client that shuts its side at once (printf 'job 1\njob 2' | nc -N):
 * both requests are answered, the last without a newline, then the
 * server closes. On both of the loop's backends (the end of stream may
 * come in the same event as the bytes). */
static void offload_half_close_on(const char *uring) {
  char *argv[] = {"offload_demo", "--serve", "0", NULL};
  setenv("WEFT_IO_URING", uring, 1);
  server_t s = spawn_argv(WEFT_OFFLOAD_DEMO, argv);
  unsetenv("WEFT_IO_URING");
  for (int round = 0; round < 10; round++) {
    client_t *c = calloc(1, sizeof *c);
    REQUIRE_EQ(c != NULL, 1);
    c->fd = dial(s.port, 0);
    send_all(c->fd, "job 1\njob 2", 11);
    REQUIRE_EQ(shutdown(c->fd, SHUT_WR), 0);
    char a[256] = "", b[256] = "", more[256];
    bool got_a = read_line(c, a, sizeof a, WAIT_MS);
    bool got_b = got_a && read_line(c, b, sizeof b, WAIT_MS);
    if (!got_a || !got_b)
      fprintf(stderr, "WEFT_IO_URING=%s round %d: \"%s\" \"%s\"\n", uring,
              round, a, b);
    EXPECT_TRUE(got_a);
    EXPECT_TRUE(got_b);
    EXPECT_TRUE((a[0] == '1' && b[0] == '2') || (a[0] == '2' && b[0] == '1'));
    EXPECT_EQ(c->have, 0);
    struct pollfd pf = {c->fd, POLLIN, 0}; /* then the server closes */
    EXPECT_EQ(poll(&pf, 1, WAIT_MS), 1);
    EXPECT_EQ(read(c->fd, more, sizeof more), 0);
    close(c->fd);
    free(c);
  }
  EXPECT_EQ(stop_with(&s, SIGINT), 0);
}

static void test_offload_half_close(void) {
  offload_half_close_on("1");
  offload_half_close_on("0");
}

/* A client that sends malformed lines without reading the replies: the
 * server stops reading it (TCP holds the client back) instead of queueing
 * replies without bound; once the client reads, every line has its reply
 * and the connection still serves jobs. */
#define OD_FLOOD_LIMIT (64L << 20) /* bytes a server that never stops takes */
#define OD_STALL_MS 1000           /* no progress this long: held back */

static void test_offload_backpressure(void) {
  server_t s = spawn_offload();
  client_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->fd = dial(s.port, 4096);
  int small = 4096;
  setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
  static char chunk[64 * 1024];
  for (size_t i = 0; i < sizeof chunk; i += 64) { /* "nope...\n" x 1024 */
    memset(chunk + i, 'n', 63);
    chunk[i + 63] = '\n';
  }
  long sent = 0;
  size_t off = 0;
  while (sent < OD_FLOOD_LIMIT) {
    ssize_t w = write(c->fd, chunk + off, sizeof chunk - off);
    if (w > 0) {
      sent += w;
      off = (off + (size_t)w) % sizeof chunk;
      continue;
    }
    REQUIRE_EQ(errno == EAGAIN || errno == EWOULDBLOCK, 1);
    struct pollfd pf = {c->fd, POLLOUT, 0};
    if (poll(&pf, 1, OD_STALL_MS) == 0)
      break; /* the server stopped reading us */
  }
  EXPECT_TRUE(sent < OD_FLOOD_LIMIT);
  /* Finish the last line, then read every reply. The newline may not fit
   * until the server reads again, which it does only once we read its
   * replies: offer it between reads (a blocking send here could wait for
   * a server that waits for us). A bound on the time without progress. */
  long lines = sent / 64 + (sent % 64 != 0);
  bool need_nl = sent % 64 != 0;
  char line[256];
  long replies = 0;
  int64_t stuck_at = weft_clock_now_ns() + (int64_t)WAIT_MS * 1000000;
  while (replies < lines) {
    if (need_nl && send(c->fd, "\n", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
      need_nl = false;
    if (read_line(c, line, sizeof line, need_nl ? 10 : WAIT_MS)) {
      replies += strcmp(line, "error: unknown command" OD_USAGE) == 0;
      stuck_at = weft_clock_now_ns() + (int64_t)WAIT_MS * 1000000;
    } else if (!need_nl || weft_clock_now_ns() > stuck_at) {
      break;
    }
  }
  EXPECT_EQ(need_nl, 0);
  EXPECT_EQ(replies, lines);
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
  char got[256];
  EXPECT_TRUE(offload_round(c, "", 0, 3, got, sizeof got));
  close(c->fd);
  free(c);
  EXPECT_EQ(stop_with(&s, SIGINT), 0);
}

/* ---- a bad command line: the usage and exit 2, never a server ---- */

#define BAD_ARGS_MS 5000 /* a sample that does not refuse runs forever */

/* Run path with argv, wait at most BAD_ARGS_MS; the exit status (-1 if it
 * was still running, then killed), its stderr into err. */
static int run_briefly(const char *path, char *const argv[], char *err,
                       size_t cap) {
  FILE *f = tmpfile();
  REQUIRE_EQ(f != NULL, 1);
  int devnull = open("/dev/null", O_WRONLY);
  pid_t pid = fork();
  REQUIRE_EQ(pid >= 0, 1);
  if (pid == 0) {
    dup2(devnull, 1);
    dup2(fileno(f), 2);
    execv(path, argv);
    _exit(127);
  }
  close(devnull);
  int rc = -1, st;
  for (int i = 0; i < BAD_ARGS_MS / 10; i++) {
    if (waitpid(pid, &st, WNOHANG) == pid) {
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : -2;
      break;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* polling a child's exit, not synchronisation */
  }
  if (rc == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  rewind(f);
  size_t n = fread(err, 1, cap - 1, f);
  err[n] = 0;
  fclose(f);
  return rc;
}

static void test_bad_command_lines(void) {
  static const struct {
    const char *path;
    char *argv[8];
  } runs[] = {
      {WEFT_ECHO_SERVER, {"echo_server", "abc", NULL}},
      {WEFT_ECHO_SERVER, {"echo_server", "65536", NULL}},
      {WEFT_ECHO_SERVER, {"echo_server", "0", "extra", NULL}},
      {WEFT_CHAT_SERVER, {"chat_server", "--port", "x", NULL}},
      {WEFT_CHAT_SERVER,
       {"chat_server", "--port", "0", "--idle-ms", "-5", NULL}},
      {WEFT_CHAT_SERVER,
       {"chat_server", "--port", "0", "--max-queue", "99999999999999999999",
        NULL}},
      {WEFT_CHAT_SERVER, {"chat_server", "--port", "0", "--bogus", "1", NULL}},
      {WEFT_CHAT_SERVER, {"chat_server", "--port", NULL}},
      {WEFT_OFFLOAD_DEMO, {"offload_demo", "--serve", "x", NULL}},
      {WEFT_OFFLOAD_DEMO, {"offload_demo", "--serve", "70000", NULL}},
      {WEFT_OFFLOAD_DEMO, {"offload_demo", "8x", NULL}},
  };
  char err[4096];
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
    int rc = run_briefly(runs[i].path, runs[i].argv, err, sizeof err);
    if (rc != 2 || strstr(err, "usage:") == NULL)
      fprintf(stderr, "run %zu (%s %s): status %d, stderr \"%s\"\n", i,
              runs[i].argv[0], runs[i].argv[1], rc, err);
    EXPECT_EQ(rc, 2);
    EXPECT_TRUE(strstr(err, "usage:") != NULL);
  }
  /* --help: the usage with the protocol's limits, on stdout, status 0. */
  char *help[] = {"chat_server", "--help", NULL};
  EXPECT_EQ(run_briefly(WEFT_CHAT_SERVER, help, err, sizeof err), 0);
}

/* ---- SIGINT with operations pending: exit 0, nothing leaked ---- */

/* Stop s with sig (0: none, it is ending); expect exit status 0 and, in its stderr (err_fd, a
 * temporary file), no report of a leak or another sanitizer error. */
static void expect_clean_exit_sig(server_t *s, FILE *err, int sig) {
  EXPECT_EQ(stop_with(s, sig), 0);
  static char log[65536];
  rewind(err);
  size_t n = fread(log, 1, sizeof log - 1, err);
  log[n] = 0;
  bool clean = strstr(log, "LeakSanitizer") == NULL &&
               strstr(log, "Sanitizer:") == NULL &&
               strstr(log, "runtime error") == NULL;
  if (!clean)
    fprintf(stderr, "%s\n", log);
  EXPECT_TRUE(clean);
  fclose(err);
}

static void expect_clean_exit(server_t *s, FILE *err) {
  expect_clean_exit_sig(s, err, SIGINT);
}

static void test_offload_sigint_clean(void) {
  FILE *err = tmpfile();
  REQUIRE_EQ(err != NULL, 1);
  char *argv[] = {"offload_demo", "--serve", "0", NULL};
  server_t s = spawn_to(WEFT_OFFLOAD_DEMO, argv, fileno(err));
  int idle = dial(s.port, 0), midline = dial(s.port, 0);
  int busy = dial(s.port, 0);
  client_t *sync = calloc(1, sizeof *sync);
  REQUIRE_EQ(sync != NULL, 1);
  sync->fd = dial(s.port, 0);
  send_all(midline, "job 1", 5);               /* no newline yet */
  send_all(busy, "job 2\njob 3\njob 4\n", 18); /* jobs in flight */
  /* A reply on a fourth connection: the server is reading its clients. */
  char line[256];
  send_all(sync->fd, "\n", 1);
  EXPECT_TRUE(read_line(sync, line, sizeof line, WAIT_MS));
  expect_clean_exit(&s, err);
  close(idle);
  close(midline);
  close(busy);
  close(sync->fd);
  free(sync);
}

static void test_chat_sigint_clean(void) {
  FILE *err = tmpfile();
  REQUIRE_EQ(err != NULL, 1);
  char *argv[] = {"chat_server", "--port",         "0",   "--max-queue",
                  "1048576",     "--heartbeat-ms", "100", NULL};
  server_t s = spawn_to(WEFT_CHAT_SERVER, argv, fileno(err));
  client_t *idle = join(s.port, 0), *midline = join(s.port, 0);
  client_t *slow = join(s.port, 4096); /* never reads: writes pending */
  client_t *talker = join(s.port, 0);
  send_all(midline->fd, "half a line", 11);
  static char big[4001];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\n';
  char line[8192];
  for (int i = 0; i < 40; i++) /* 160 KB queued for the slow client */
    send_all(talker->fd, big, sizeof big);
  for (int i = 0; i < 40; i++) {
    /* once idle has them all, so has slow's queue */
    next_message(idle, line, sizeof line);
    EXPECT_EQ(strlen(line) > 4000, 1);
  }
  expect_clean_exit(&s, err);
  client_t *all[] = {idle, midline, slow, talker};
  for (int i = 0; i < 4; i++) {
    close(all[i]->fd);
    free(all[i]);
  }
}

static void test_echo_sigint_clean(void) {
  FILE *err = tmpfile();
  REQUIRE_EQ(err != NULL, 1);
  char *argv[] = {"echo_server", "0", NULL};
  server_t s = spawn_to(WEFT_ECHO_SERVER, argv, fileno(err));
  int idle = dial(s.port, 0);
  client_t *c = calloc(1, sizeof *c);
  REQUIRE_EQ(c != NULL, 1);
  c->fd = dial(s.port, 0);
  char line[64];
  send_all(c->fd, "ping\n", 5);
  EXPECT_TRUE(read_line(c, line, sizeof line, WAIT_MS));
  send_all(c->fd, "half", 4);
  expect_clean_exit(&s, err);
  close(idle);
  close(c->fd);
  free(c);
}

/* ---- shutdown_server: requests in flight finish within the grace ---- */

/* Wait (bounded) until the server's log (err) holds `what`. */
static bool log_has(FILE *err, const char *what) {
  static char log[65536];
  for (int i = 0; i < WAIT_MS / 10; i++) {
    rewind(err);
    size_t n = fread(log, 1, sizeof log - 1, err);
    log[n] = 0;
    if (strstr(log, what) != NULL)
      return true;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* polling a log file, not synchronisation */
  }
  return false;
}

/* SIGINT with a short request and a long one in flight, and a client
 * idle: the short one is answered, the long one is cancelled when the
 * grace period ends (its connection closes unanswered), the idle one is
 * closed at once, and the server exits 0 with nothing leaked. */
static void test_shutdown_server_grace(void) {
  FILE *err = tmpfile();
  REQUIRE_EQ(err != NULL, 1);
  char *argv[] = {"shutdown_server", "0", "1500", NULL};
  server_t s = spawn_to(WEFT_SHUTDOWN_SERVER, argv, fileno(err));
  client_t *c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = calloc(1, sizeof *c[i]);
    REQUIRE_EQ(c[i] != NULL, 1);
    c[i]->fd = dial(s.port, 0);
  }
  char line[64];
  send_all(c[0]->fd, "0\n", 2); /* served before shutdown */
  EXPECT_TRUE(read_line(c[0], line, sizeof line, WAIT_MS));
  EXPECT_EQ(strcmp(line, "done 0"), 0);
  send_all(c[0]->fd, "400\n", 4);
  send_all(c[1]->fd, "60000\n", 6);
  EXPECT_TRUE(log_has(err, "working 400 ms"));
  EXPECT_TRUE(log_has(err, "working 60000 ms"));
  kill(s.pid, SIGINT);
  EXPECT_TRUE(log_has(err, "grace period over"));
  EXPECT_TRUE(read_line(c[0], line, sizeof line, WAIT_MS));
  EXPECT_EQ(strcmp(line, "done 400"), 0); /* in flight: answered */
  EXPECT_TRUE(!read_line(c[1], line, sizeof line, WAIT_MS)); /* cut */
  EXPECT_TRUE(!read_line(c[2], line, sizeof line, WAIT_MS)); /* idle */
  EXPECT_TRUE(log_has(err, "every connection closed"));
  expect_clean_exit_sig(&s, err, 0); /* (signal 0: only wait for the exit) */
  for (int i = 0; i < 3; i++) {
    close(c[i]->fd);
    free(c[i]);
  }
}

/* ---- a burst from one client: the clients that read keep up ---- */

#define BURST_LINES 256
#define BURST_LEN 4000 /* bytes of each line, with its newline */

/* One client sends 1 MiB of lines at once while three others read as
 * fast as they can: every reader gets every line, and none is dropped as a
 * slow reader (the server's queue for a reader that keeps up stays far
 * below the default --max-queue of 256 KiB, on either backend). */
static void test_burst_readers_kept(void) {
  char *argv[] = {"chat_server", "--port",         "0",   "--idle-ms",
                  "60000",       "--heartbeat-ms", "100", NULL};
  server_t s = spawn_argv(WEFT_CHAT_SERVER, argv);
  enum { NR = 3 };
  client_t *talker = join(s.port, 0), *rd[NR];
  for (int i = 0; i < NR; i++)
    rd[i] = join(s.port, 0);
  size_t total = (size_t)BURST_LINES * BURST_LEN, off = 0;
  char *burst = malloc(total);
  REQUIRE_EQ(burst != NULL, 1);
  for (int k = 0; k < BURST_LINES; k++) {
    char *l = burst + (size_t)k * BURST_LEN;
    memset(l, 'a' + k % 26, BURST_LEN - 1);
    l[BURST_LEN - 1] = '\n';
  }
  REQUIRE_EQ(fcntl(talker->fd, F_SETFL, O_NONBLOCK), 0);
  int lines[NR] = {0}, dropped = 0, wrong = 0, stuck = 0;
  char line[8192];
  while (off < total || lines[0] + lines[1] + lines[2] < NR * BURST_LINES) {
    struct pollfd pf[NR + 1];
    for (int i = 0; i < NR; i++)
      pf[i] = (struct pollfd){rd[i]->fd, POLLIN, 0};
    pf[NR] = (struct pollfd){talker->fd, off < total ? POLLOUT : 0, 0};
    if (poll(pf, NR + 1, WAIT_MS) <= 0) {
      stuck = 1;
      break;
    }
    if (off < total && (pf[NR].revents & POLLOUT)) {
      ssize_t w = send(talker->fd, burst + off, total - off, MSG_NOSIGNAL);
      if (w > 0)
        off += (size_t)w;
    }
    for (int i = 0; i < NR; i++) {
      if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      ssize_t r = read(rd[i]->fd, rd[i]->buf + rd[i]->have,
                       sizeof rd[i]->buf - rd[i]->have);
      if (r <= 0) {
        stuck = 1; /* closed on us */
        goto out;
      }
      rd[i]->have += (size_t)r;
      while (read_line(rd[i], line, sizeof line, 0)) {
        if (strstr(line, "slow reader") != NULL)
          dropped++;
        else if (line[0] != '*' &&
                 (strlen(line) < BURST_LEN - 1 ||
                  line[strlen(line) - 1] != 'a' + lines[i] % 26))
          wrong++;
        if (line[0] != '*')
          lines[i]++;
      }
    }
  }
out:
  EXPECT_EQ(stuck, 0);
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(wrong, 0);
  for (int i = 0; i < NR; i++)
    EXPECT_EQ(lines[i], BURST_LINES);
  close(talker->fd);
  free(talker);
  for (int i = 0; i < NR; i++) {
    close(rd[i]->fd);
    free(rd[i]);
  }
  free(burst);
  EXPECT_EQ(stop(&s), 0);
}

/* ---- a slow reader's queue costs about --max-queue, not 4 KiB a line ----
 * Short lines queued to a client that never reads: the server's memory
 * grows by about what the queue holds (plus the writes' bookkeeping) until
 * the client is dropped, whatever the lines' length. Skipped under a
 * sanitizer, whose quarantine and redzones are most of the RSS. */

static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kib = -1;
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0)
      kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHAT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CHAT_SANITIZED 1
#endif
#endif

static void test_slow_reader_memory(void) {
  server_t s = spawn("262144", "60000"); /* the default queue limit */
  client_t *slow = join(s.port, 4096);   /* never reads */
  client_t *talker = join(s.port, 0);
  long base = rss_kib(s.pid), peak = base;
  REQUIRE_EQ(base > 0, 1);
  static char block[65536]; /* 32768 one-byte lines */
  for (size_t i = 0; i < sizeof block; i += 2)
    block[i] = 'x', block[i + 1] = '\n';
  char want[64], line[256];
  snprintf(want, sizeof want, "* guest%d left (slow reader", slow->id);
  bool dropped = false;
  /* The slow client's kernel buffers take a few MB, then its queue grows
   * to 256 KiB (about 24,000 of these lines) and it is dropped. */
  for (int b = 0; b < 2000 && !dropped; b++) {
    send_all(talker->fd, block, sizeof block);
    long r = rss_kib(s.pid);
    if (r > peak)
      peak = r;
    struct pollfd pf = {talker->fd, POLLIN, 0};
    while (!dropped && poll(&pf, 1, 0) == 1 &&
           read_line(talker, line, sizeof line, WAIT_MS))
      dropped = strncmp(line, want, strlen(want)) == 0;
  }
  EXPECT_TRUE(dropped);
#ifndef CHAT_SANITIZED
  /* 4 KiB a line would be about 100 MiB here. */
  if (peak - base >= 32 * 1024)
    fprintf(stderr, "chat_server grew by %ld KiB for a 256 KiB queue\n",
            peak - base);
  EXPECT_EQ(peak - base < 32 * 1024, 1);
#endif
  close(slow->fd);
  close(talker->fd);
  free(slow);
  free(talker);
  EXPECT_EQ(stop(&s), 0);
}

static const test_case_t cases[] = {
    {"echo_server sample", test_echo_server_sample},
    {"shutdown_server: in flight answered, the rest cut at the grace",
     test_shutdown_server_grace},
    {"50 clients, every line to every other once", test_fanout},
    {"a client that never reads is dropped", test_slow_reader_dropped},
    {"a 1 MiB burst from one client drops no reader", test_burst_readers_kept},
    {"idle timeout and graceful shutdown", test_idle_and_shutdown},
    {"chat: long lines and NUL bytes get an error line", test_chat_line_limits},
    {"offload_demo: each malformed line gets an error line",
     test_offload_bad_lines},
    {"offload_demo: a client that does not read is held back",
     test_offload_backpressure},
    {"a bad command line gets the usage and exit 2", test_bad_command_lines},
    {"offload_demo: SIGINT with work pending, exit 0, no leak",
     test_offload_sigint_clean},
    {"chat_server: SIGINT with work pending, exit 0, no leak",
     test_chat_sigint_clean},
    {"echo_server: SIGINT with work pending, exit 0, no leak",
     test_echo_sigint_clean},
    {"offload_demo: a client that shuts its side gets every answer",
     test_offload_half_close},
    {"chat: a slow reader costs about --max-queue of memory",
     test_slow_reader_memory},
    {NULL, NULL}};

const test_suite_t suite_chat = {"chat", cases};
