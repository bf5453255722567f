/* SPDX-License-Identifier: MIT */
/* bench/stream_recv.c: stream.read_line.recv, the peer: lines read the way
 * a C programmer reads them by hand: blocking recv() into a 64 KiB buffer,
 * memchr for each "\n", the partial line moved to the front before the
 * next recv. Usage: bench_stream_recv <lines>; prints ns per line. */
#include "stream_peer.h"

#include <sys/un.h>

int main(int argc, char **argv) {
  long lines = argc > 1 ? atol(argv[1]) : 1000000;
  sp_feed_t f = {.lines = lines};
  sp_path(f.path, sizeof f.path);
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, f.path, strlen(f.path) + 1);
  if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(ls, 1) != 0)
    return 1;
  sp_feed_start(&f);
  int fd = accept(ls, NULL, NULL);
  if (fd < 0)
    return 1;
  enum { CAP = 65536 };
  static char buf[CAP];
  size_t have = 0, bytes = 0;
  long got = 0;
  int64_t t0 = sp_now_ns();
  for (;;) {
    ssize_t n = recv(fd, buf + have, CAP - have, 0);
    if (n <= 0)
      break;
    have += (size_t)n;
    char *p = buf, *end = buf + have, *q;
    while ((q = memchr(p, '\n', (size_t)(end - p))) != NULL) {
      bytes += (size_t)(q - p);
      got++;
      p = q + 1;
    }
    have = (size_t)(end - p);
    if (have > 0 && p != buf)
      memmove(buf, p, have);
  }
  int64_t t1 = sp_now_ns();
  pthread_join(f.t, NULL);
  close(fd);
  close(ls);
  unlink(f.path);
  if (got != lines || bytes != (size_t)lines * (SP_LINE - 1)) {
    fprintf(stderr, "stream_recv: %ld lines, %zu bytes\n", got, bytes);
    return 1;
  }
  printf("%.2f\n", (double)(t1 - t0) / (double)lines);
  return 0;
}
