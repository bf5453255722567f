/* SPDX-License-Identifier: MIT */
/* bench/stream_peer.h: the writing side of the stream suite, shared by
 * stream_weft.c and stream_recv.c: a thread that connects to a Unix stream
 * socket and writes `lines` lines of 64 bytes (63 + "\n") in 64 KiB
 * writes, then closes. Header-only: each reader includes it once. */
#ifndef BENCH_STREAM_PEER_H
#define BENCH_STREAM_PEER_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { SP_LINE = 64, SP_BLOCK = 65536 };

typedef struct sp_feed {
  char path[108];
  long lines;
  pthread_t t;
} sp_feed_t;

static void *sp_feed_run(void *arg) {
  sp_feed_t *f = arg;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, f->path, strlen(f->path) + 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("stream bench: connect");
    exit(1);
  }
  static char block[SP_BLOCK];
  for (size_t i = 0; i < SP_BLOCK; i++) /* lines of "a..." + "\n" */
    block[i] = (i + 1) % SP_LINE == 0 ? '\n' : (char)('a' + i % 26);
  long per = SP_BLOCK / SP_LINE, left = f->lines;
  while (left > 0) {
    size_t n = (size_t)(left < per ? left : per) * SP_LINE, off = 0;
    while (off < n) {
      ssize_t k = write(fd, block + off, n - off);
      if (k <= 0) {
        perror("stream bench: write");
        exit(1);
      }
      off += (size_t)k;
    }
    left -= (long)(n / SP_LINE);
  }
  close(fd);
  return NULL;
}

/* A fresh socket path for this process. */
static void sp_path(char *out, size_t n) {
  snprintf(out, n, "/tmp/weft-bench-stream-%d.sock", (int)getpid());
  unlink(out);
}

static void sp_feed_start(sp_feed_t *f) {
  if (pthread_create(&f->t, NULL, sp_feed_run, f) != 0)
    exit(1);
}

static int64_t sp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
