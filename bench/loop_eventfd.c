/* SPDX-License-Identifier: MIT */
/* bench/loop_eventfd.c: the floor for a cross-thread round trip: two threads
 * and two eventfds, each side blocking in read() until the other writes.
 * Mode pingpong N prints us per round trip. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int to_a, to_b;
static long n;

static void put(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) != sizeof one)
    abort();
}
static void get(int fd) {
  uint64_t v;
  if (read(fd, &v, sizeof v) != sizeof v)
    abort();
}

static void *side_a(void *arg) {
  (void)arg;
  for (long i = 0; i < n; i++) {
    get(to_a);
    put(to_b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "pingpong") || (n = atol(argv[2])) <= 0)
    return 2;
  to_a = eventfd(0, EFD_CLOEXEC);
  to_b = eventfd(0, EFD_CLOEXEC);
  pthread_t a;
  pthread_create(&a, NULL, side_a, NULL);
  struct timespec s, e;
  clock_gettime(CLOCK_MONOTONIC, &s);
  for (long i = 0; i < n; i++) {
    put(to_a);
    get(to_b);
  }
  clock_gettime(CLOCK_MONOTONIC, &e);
  pthread_join(a, NULL);
  double us = ((double)(e.tv_sec - s.tv_sec) * 1e9 + (double)(e.tv_nsec - s.tv_nsec)) / 1e3;
  printf("%.2f\n", us / (double)n);
  return 0;
}
