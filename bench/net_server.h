/* SPDX-License-Identifier: MIT */
/* bench/net_server.h: what the peer echo servers of `bench/run.sh net`
 * (net_epoll.c, net_ev.c, net_uv.c, net_uring.c) share: the command line, the
 * measurement window and its output, and a listening socket.
 *
 * Usage of each: <server> <conns>. It listens on 127.0.0.1 port 0 and
 * prints "port N"; the window runs from the <conns>-th accept to the last
 * close; then it prints "cpu_us <window CPU> bytes <bytes echoed in the
 * window>" and exits 0. bench_net_weft (net_weft.c) does the same with
 * weft's own calls. */
#ifndef WEFT_BENCH_NET_SERVER_H
#define WEFT_BENCH_NET_SERVER_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>

static struct {
  long want, accepted, open;
  int measuring;
  unsigned long long bytes;
  long long cpu0;
} W;

static inline long long w_cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL +
         ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static inline void die(const char *what) {
  perror(what);
  exit(1);
}

/* Parse "<conns>" or exit 2 with the usage line. */
static inline void w_args(int argc, char **argv) {
  if (argc != 2 || (W.want = atol(argv[1])) <= 0) {
    fprintf(stderr, "usage: %s <conns>\n", argv[0]);
    exit(2);
  }
}

/* A connection was accepted: the window opens with the last one. */
static inline void w_accepted(void) {
  W.open++;
  if (++W.accepted == W.want) {
    W.measuring = 1;
    W.cpu0 = w_cpu_us();
  }
}

/* n bytes were echoed back. */
static inline void w_echoed(size_t n) {
  if (W.measuring)
    W.bytes += (unsigned long long)n;
}

/* A connection was closed: 1 when it was the last, with the window printed
 * (the server should stop then). */
static inline int w_closed(void) {
  if (--W.open != 0 || W.accepted < W.want)
    return 0;
  printf("cpu_us %lld bytes %llu\n", w_cpu_us() - W.cpu0, W.bytes);
  fflush(stdout);
  return 1;
}

/* A nonblocking TCP listener on 127.0.0.1, port printed. */
static inline int listen_local(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  struct sockaddr_in sin = {.sin_family = AF_INET};
  socklen_t len = sizeof sin;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)&sin, sizeof sin) || listen(fd, 1024) ||
      getsockname(fd, (struct sockaddr *)&sin, &len))
    die("listen");
  printf("port %d\n", ntohs(sin.sin_port));
  fflush(stdout);
  return fd;
}

/* The next pending connection of listener lfd, nonblocking with
 * TCP_NODELAY, or -1 when there is none now. */
static inline int accept_next(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK), one = 1;
    if (fd >= 0) {
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    if (errno == EAGAIN)
      return -1;
    if (errno != EINTR && errno != ECONNABORTED)
      die("accept4");
  }
}

#endif
