/* SPDX-License-Identifier: MIT */
/* bench/net_common.h: what every peer echo server of `bench/run.sh net`
 * shares: the listening socket (127.0.0.1, port 0, SO_REUSEADDR, backlog
 * 1024, "port N" on stdout) and the measurement window (from the <conns>-th
 * accept to the last close: getrusage CPU and bytes echoed, printed as
 * "cpu_us C bytes B"). Header-only, so each peer stays one file to build. */
#ifndef NET_COMMON_H
#define NET_COMMON_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static struct {
  long want, accepted, open;
  int measuring;
  unsigned long long bytes;
  double cpu0;
} W;

static inline double w_cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static inline void w_args(int argc, char **argv) {
  if (argc != 2 || (W.want = atol(argv[1])) <= 0) {
    fprintf(stderr, "usage: %s <conns>\n", argv[0]);
    exit(2);
  }
}

/* A bound, listening, nonblocking socket; prints its port. */
static inline int w_listen(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t sl = sizeof sin;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
      listen(fd, 1024) != 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &sl) != 0) {
    perror("listen");
    exit(1);
  }
  printf("port %d\n", ntohs(sin.sin_port));
  fflush(stdout);
  return fd;
}

static inline void w_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Call after each accept. */
static inline void w_accepted(void) {
  W.open++;
  if (++W.accepted == W.want) {
    W.measuring = 1;
    W.cpu0 = w_cpu_us();
  }
}

static inline void w_echoed(long n) {
  if (W.measuring)
    W.bytes += (unsigned long long)n;
}

/* Call after each close; returns 1 when the run is over (result printed). */
static inline int w_closed(void) {
  if (--W.open == 0 && W.accepted >= W.want) {
    printf("cpu_us %.0f bytes %llu\n", w_cpu_us() - W.cpu0, W.bytes);
    fflush(stdout);
    return 1;
  }
  return 0;
}
#endif
