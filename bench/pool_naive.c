/* SPDX-License-Identifier: MIT */
/* bench/pool_naive.c: offload through the hand-rolled pool a C programmer
 * writes first: one mutex + condition variable queue, one worker per core;
 * one outside thread submits n small jobs, each job's completion callback
 * counts. Prints jobs/s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
  struct job *next;
  uintptr_t x;
  void (*done)(struct job *);
} job_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static job_t *head, *tail;
static int stop;
static atomic_long completed;
static long total;
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;

static void count_done(job_t *j) {
  free(j);
  if (atomic_fetch_add_explicit(&completed, 1, memory_order_acq_rel) + 1 ==
      total) { /* the last one wakes the submitter */
    pthread_mutex_lock(&done_mu);
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
  }
}

static void *worker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (head == NULL && !stop)
      pthread_cond_wait(&cv, &mu);
    if (head == NULL)
      break;
    job_t *j = head;
    head = j->next;
    if (head == NULL)
      tail = NULL;
    pthread_mutex_unlock(&mu);
    j->x *= 2654435761u;
    j->done(j);
    pthread_mutex_lock(&mu);
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  total = n;
  long nw = sysconf(_SC_NPROCESSORS_ONLN);
  pthread_t th[256];
  if (nw < 1 || nw > 256)
    nw = 2;
  for (long i = 0; i < nw; i++)
    pthread_create(&th[i], NULL, worker, NULL);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) {
    job_t *j = malloc(sizeof(*j));
    j->next = NULL;
    j->x = (uintptr_t)i;
    j->done = count_done;
    pthread_mutex_lock(&mu);
    if (tail)
      tail->next = j;
    else
      head = j;
    tail = j;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
  }
  pthread_mutex_lock(&done_mu); /* block until the last completion */
  while (atomic_load(&completed) < n)
    pthread_cond_wait(&done_cv, &done_mu);
  pthread_mutex_unlock(&done_mu);
  clock_gettime(CLOCK_MONOTONIC, &b);
  pthread_mutex_lock(&mu);
  stop = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (long i = 0; i < nw; i++)
    pthread_join(th[i], NULL);
  double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.0f\n", (double)n / s);
  return 0;
}
