/* SPDX-License-Identifier: MIT */
/* bench/loop_eventfd.c: the floor for a cross-thread round trip: two threads
 * and two eventfds, each side blocking in read() until the other writes.
 * Mode pingpong N prints "us cpu_us" per round trip (CPU: the process's
 * user + sys, both threads). */
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
#include "loop_rng.h"

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
  int64_t c0 = cpu_ns(), s = mono_ns();
  for (long i = 0; i < n; i++) {
    put(to_a);
    get(to_b);
  }
  int64_t e = mono_ns(), c1 = cpu_ns();
  pthread_join(a, NULL);
  printf("%.2f %.2f\n", (double)(e - s) / 1e3 / (double)n,
         (double)(c1 - c0) / 1e3 / (double)n);
  return 0;
}
