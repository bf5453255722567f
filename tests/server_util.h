/* SPDX-License-Identifier: MIT */
/* tests/server_util.h: the sample servers as real processes, for the
 * suites that drive them (chat, lines): start one and learn its port, stop
 * it with a signal and read its exit status, and plain blocking clients
 * that read lines. Every wait is bounded (WAIT_MS). Defined in
 * tests/server_util.c. */
#ifndef WEFT_SERVER_UTIL_H
#define WEFT_SERVER_UTIL_H

#include "testutil.h"

#include <stdbool.h>
#include <sys/types.h>

#define WAIT_MS 20000
/* In a sanitizer build a server that leaks exits with this status. */
#define LSAN_EXIT 23

typedef struct server {
  pid_t pid;
  int port;
  int out; /* its stdout, kept open so its last words are not a SIGPIPE */
} server_t;

/* Start a server sample; its stderr goes to err_fd (-1: /dev/null). It is
 * ready once a line of its stdout says "listening on 127.0.0.1:PORT". */
server_t spawn_to(const char *path, char *const argv[], int err_fd);
server_t spawn_argv(const char *path, char *const argv[]);
/* Send sig and wait (bounded); returns the exit status, -2 if a signal
 * killed it, or -1 if it did not end (then it is killed). */
int stop_with(server_t *s, int sig);
int stop(server_t *s); /* SIGTERM */

typedef struct client {
  int fd;
  int id;
  char buf[65536];
  size_t have;
} client_t;

/* A blocking TCP socket connected to 127.0.0.1:port (rcvbuf > 0: its
 * SO_RCVBUF). */
int dial(int port, int rcvbuf);
/* Read one line (without '\n') into out; false on EOF, error or timeout. */
bool read_line(client_t *c, char *out, size_t cap, int ms);
/* Write all n bytes; false if the connection broke (never a SIGPIPE). */
bool send_some(int fd, const char *p, size_t n);
void send_all(int fd, const char *p, size_t n);

#endif /* WEFT_SERVER_UTIL_H */
