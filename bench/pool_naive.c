/* SPDX-License-Identifier: MIT */
/* bench/pool_naive.c: offload through the hand-rolled pool a C programmer
 * writes first: one mutex + condition variable queue, one worker per core;
 * one outside thread runs n small jobs on it. By default it submits a
 * window of them (argv[2], 65536 if absent), each finished job is handed
 * back to it on a second mutex + condition variable queue, and that thread,
 * once the window is submitted, drains it, counts, and submits the next job
 * in the finished one's memory (the hop libuv's after_work_cb makes to its
 * loop, and its recycled requests); `inline` as argv[2] submits all n at
 * once and counts on the worker instead. Prints jobs/s.
 * Usage: bench_pool_naive N [WINDOW | inline] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* the completion queue back to the submitter, and its count */
static pthread_mutex_t back_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t back_cv = PTHREAD_COND_INITIALIZER;
static job_t *back;
static int back_waiting;
static long back_counted, issued;

static void submit(job_t *j) {
  j->next = NULL;
  j->x = (uintptr_t)issued++;
  pthread_mutex_lock(&mu);
  if (tail)
    tail->next = j;
  else
    head = j;
  tail = j;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

static void hand_back(job_t *j) {
  pthread_mutex_lock(&back_mu);
  j->next = back;
  back = j;
  if (back_waiting)
    pthread_cond_signal(&back_cv);
  pthread_mutex_unlock(&back_mu);
}

static void drain_back(long n) {
  pthread_mutex_lock(&back_mu);
  while (back_counted < n) {
    while (back == NULL) {
      back_waiting = 1;
      pthread_cond_wait(&back_cv, &back_mu);
      back_waiting = 0;
    }
    job_t *j = back;
    back = NULL;
    pthread_mutex_unlock(&back_mu);
    while (j != NULL) {
      job_t *next = j->next;
      back_counted++;
      if (issued < n)
        submit(j); /* recycle it for the next job */
      else
        free(j);
      j = next;
    }
    pthread_mutex_lock(&back_mu);
  }
  pthread_mutex_unlock(&back_mu);
}

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
  int use_inline = argc > 2 && !strcmp(argv[2], "inline");
  long window = use_inline ? n : argc > 2 ? atol(argv[2]) : 65536;
  if (n < 1 || window < 1)
    return 2;
  total = n;
  long nw = sysconf(_SC_NPROCESSORS_ONLN);
  pthread_t th[256];
  if (nw < 1 || nw > 256)
    nw = 2;
  for (long i = 0; i < nw; i++)
    pthread_create(&th[i], NULL, worker, NULL);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  while (issued < n && issued < window) {
    job_t *j = malloc(sizeof(*j));
    if (j == NULL)
      abort();
    j->done = use_inline ? count_done : hand_back;
    submit(j);
  }
  if (use_inline) {
    pthread_mutex_lock(&done_mu); /* block until the last completion */
    while (atomic_load(&completed) < n)
      pthread_cond_wait(&done_cv, &done_mu);
    pthread_mutex_unlock(&done_mu);
  } else {
    drain_back(n);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  pthread_mutex_lock(&mu);
  stop = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (long i = 0; i < nw; i++)
    pthread_join(th[i], NULL);
  if ((use_inline ? atomic_load(&completed) : back_counted) != n) {
    fprintf(stderr, "pool_naive: lost completions\n");
    return 1;
  }
  double s = (double)(b.tv_sec - a.tv_sec) +
             (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  printf("%.0f\n", (double)n / s);
  return 0;
}
