/* SPDX-License-Identifier: MIT */
/* bench/sync_mutex.c: the `sync` suite's peer: the same two threads and N
 * items through a bounded queue of 1,024 built from a pthread mutex and
 * two condition variables, as a C programmer writes one: a ring under the
 * lock, a wait only when full or empty, and a signal only on the
 * empty -> non-empty and full -> non-full transitions, and only when the
 * other side is waiting. Prints items/s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CAP 1024

static struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  void *ring[CAP];
  size_t head, count;
  int waiting_recv, waiting_send;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
       PTHREAD_COND_INITIALIZER};
static long n_items;

static void q_send(void *it) {
  pthread_mutex_lock(&q.mu);
  while (q.count == CAP) {
    q.waiting_send++;
    pthread_cond_wait(&q.not_full, &q.mu);
    q.waiting_send--;
  }
  q.ring[(q.head + q.count) % CAP] = it;
  int wake = q.count++ == 0 && q.waiting_recv;
  pthread_mutex_unlock(&q.mu);
  if (wake)
    pthread_cond_signal(&q.not_empty);
}

static void *q_recv(void) {
  pthread_mutex_lock(&q.mu);
  while (q.count == 0) {
    q.waiting_recv++;
    pthread_cond_wait(&q.not_empty, &q.mu);
    q.waiting_recv--;
  }
  void *it = q.ring[q.head];
  q.head = (q.head + 1) % CAP;
  int wake = q.count-- == CAP && q.waiting_send;
  pthread_mutex_unlock(&q.mu);
  if (wake)
    pthread_cond_signal(&q.not_full);
  return it;
}

static void *producer(void *arg) {
  (void)arg;
  for (long i = 1; i <= n_items; i++)
    q_send((void *)(uintptr_t)i);
  return NULL;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  n_items = argc > 1 ? atol(argv[1]) : 5000000;
  int64_t t0 = now_ns();
  pthread_t t;
  if (pthread_create(&t, NULL, producer, NULL) != 0)
    return 1;
  long sum = 0;
  for (long i = 0; i < n_items; i++)
    sum += (long)(uintptr_t)q_recv();
  pthread_join(t, NULL);
  int64_t t1 = now_ns();
  if (sum != n_items * (n_items + 1) / 2) {
    fprintf(stderr, "sync_mutex: wrong sum %ld\n", sum);
    return 1;
  }
  printf("%.0f\n", (double)n_items * 1e9 / (double)(t1 - t0));
  return 0;
}
