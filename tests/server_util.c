/* SPDX-License-Identifier: MIT */
/* tests/server_util.c: see server_util.h. */
#include "server_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

server_t spawn_to(const char *path, char *const argv[], int err_fd) {
  server_t s = {-1, 0, -1};
  int p[2];
  REQUIRE_EQ(pipe(p), 0);
  /* The test's environment, with our ASAN_OPTIONS (built before the fork:
   * the child only calls async-signal-safe functions before execve). */
  static char *env[512];
  size_t n = 0;
  for (char **e = environ; *e != NULL && n < 510; e++)
    if (strncmp(*e, "ASAN_OPTIONS=", 13) != 0)
      env[n++] = *e;
  env[n++] = "ASAN_OPTIONS=detect_leaks=1:exitcode=23"; /* LSAN_EXIT */
  env[n] = NULL;
  s.pid = fork();
  REQUIRE_EQ(s.pid >= 0, 1);
  if (s.pid == 0) {
    dup2(p[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (err_fd >= 0)
      dup2(err_fd, 2);
    else if (devnull >= 0)
      dup2(devnull, 2); /* its log (heartbeats, departures) */
    close(p[0]);
    close(p[1]);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that ends early ends it */
    execve(path, argv, env);
    _exit(127);
  }
  close(p[1]);
  char buf[1024];
  size_t have = 0;
  char *ready = NULL;
  struct pollfd pf = {p[0], POLLIN, 0};
  while (have < sizeof buf - 1 && poll(&pf, 1, WAIT_MS) == 1) {
    ssize_t n = read(p[0], buf + have, sizeof buf - 1 - have);
    if (n <= 0)
      break;
    have += (size_t)n;
    buf[have] = 0;
    ready = strstr(buf, "listening on 127.0.0.1:");
    if (ready != NULL && strchr(ready, '\n') != NULL)
      break;
  }
  s.out = p[0];
  if (ready == NULL) { /* not a server that came up: do not leave it */
    kill(s.pid, SIGKILL);
    waitpid(s.pid, NULL, 0);
    close(s.out);
  }
  REQUIRE_EQ(ready != NULL, 1);
  s.port = atoi(ready + strlen("listening on 127.0.0.1:"));
  REQUIRE_EQ(s.port > 0, 1);
  return s;
}

server_t spawn_argv(const char *path, char *const argv[]) {
  return spawn_to(path, argv, -1);
}

/* Send sig and wait (bounded); returns the exit status, -2 if a signal
 * killed it, or -1 if it did not end. */
int stop_with(server_t *s, int sig) {
  kill(s->pid, sig);
  int rc = -1;
  for (int i = 0; i < WAIT_MS / 10 && rc == -1; i++) {
    int st;
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == s->pid) {
      if (!WIFEXITED(st))
        fprintf(stderr, "server killed by signal %d\n", WTERMSIG(st));
      rc = WIFEXITED(st) ? WEXITSTATUS(st) : -2;
      break;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* polling a child's exit, not synchronisation */
  }
  if (rc == -1) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
  }
  close(s->out);
  return rc;
}

int stop(server_t *s) { return stop_with(s, SIGTERM); }

int dial(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE_EQ(fd >= 0, 1);
  if (rcvbuf > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE_EQ(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
  return fd;
}

/* Read one line (without '\n') into out; false on EOF, error or timeout. */
bool read_line(client_t *c, char *out, size_t cap, int ms) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->have);
    if (nl != NULL) {
      size_t n = (size_t)(nl - c->buf);
      size_t k = n < cap - 1 ? n : cap - 1;
      memcpy(out, c->buf, k);
      out[k] = 0;
      memmove(c->buf, nl + 1, c->have - n - 1);
      c->have -= n + 1;
      return true;
    }
    if (c->have == sizeof c->buf)
      return false;
    struct pollfd pf = {c->fd, POLLIN, 0};
    if (poll(&pf, 1, ms) != 1)
      return false;
    ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
    if (r <= 0)
      return false;
    c->have += (size_t)r;
  }
}

/* Write all n bytes; false if the connection broke (never a SIGPIPE). */
bool send_some(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

void send_all(int fd, const char *p, size_t n) {
  REQUIRE_EQ(send_some(fd, p, n), 1);
}
