/* SPDX-License-Identifier: MIT */
/* lib/alarm.c: one process-wide thread that fires deadlines for fibers and
 * scopes on executors that have no timers of their own (lib/fiber.h). */
#define _GNU_SOURCE
#include "fiber.h"

#include <pthread.h>

#define NO_SLOT ((size_t)-1)
/* How long the thread waits with no alarm before it ends. */
#define IDLE_NS ((int64_t)1000000000)

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_once_t once;
  weft__alarm_t **heap;
  size_t n, cap;
  int64_t until; /* when the thread wakes up next by itself */
  bool running;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER, .once = PTHREAD_ONCE_INIT};

/* Across fork the mutex is held, so the child gets it in a known state;
 * the thread did not come along: the child's next arm starts one. */
static void before_fork(void) { pthread_mutex_lock(&A.mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&A.mu); }
static void after_fork_child(void) {
  A.running = false;
  pthread_mutex_unlock(&A.mu);
}

static void init_once(void) {
  weft__cond_init(&A.cv);
  pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static void heap_set(size_t i, weft__alarm_t *a) {
  A.heap[i] = a;
  a->slot = i;
}

static void sift_up(size_t i) {
  weft__alarm_t *a = A.heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (A.heap[p]->deadline <= a->deadline)
      break;
    heap_set(i, A.heap[p]);
    i = p;
  }
  heap_set(i, a);
}

static void sift_down(size_t i) {
  weft__alarm_t *a = A.heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= A.n)
      break;
    if (c + 1 < A.n && A.heap[c + 1]->deadline < A.heap[c]->deadline)
      c++;
    if (a->deadline <= A.heap[c]->deadline)
      break;
    heap_set(i, A.heap[c]);
    i = c;
  }
  heap_set(i, a);
}

static void heap_remove(weft__alarm_t *a) {
  size_t i = a->slot;
  a->slot = NO_SLOT;
  weft__alarm_t *last = A.heap[--A.n];
  if (i == A.n)
    return;
  heap_set(i, last);
  if (i > 0 && A.heap[(i - 1) / 2]->deadline > last->deadline)
    sift_up(i);
  else
    sift_down(i);
}

static void *alarm_thread(void *unused) {
  (void)unused;
  pthread_mutex_lock(&A.mu);
  for (;;) {
    int64_t now = weft_clock_now_ns();
    if (A.n > 0 && A.heap[0]->deadline <= now) {
      weft__alarm_t *a = A.heap[0];
      heap_remove(a);
      pthread_mutex_unlock(&A.mu);
      a->fn(a);
      pthread_mutex_lock(&A.mu);
      continue;
    }
    A.until = A.n > 0 ? A.heap[0]->deadline : now + IDLE_NS;
    if (weft__cond_wait(&A.cv, &A.mu, A.until) == WEFT_ETIMEDOUT && A.n == 0)
      break;
  }
  A.running = false;
  pthread_mutex_unlock(&A.mu);
  return NULL;
}

static int start_thread(void) {
  pthread_attr_t at;
  pthread_t t;
  if (pthread_attr_init(&at) != 0)
    return WEFT_EAGAIN;
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  int rc = WEFT__FAULT("thread") ? -1
                                 : pthread_create(&t, &at, alarm_thread, NULL);
  pthread_attr_destroy(&at);
  if (rc != 0)
    return WEFT_EAGAIN;
  A.running = true;
  A.until = INT64_MIN; /* (it looks at the heap first) */
  return 0;
}

int weft__alarm_arm(weft__alarm_t *a, int64_t deadline,
                    void (*fn)(weft__alarm_t *a)) {
  pthread_once(&A.once, init_once);
  a->deadline = deadline;
  a->fn = fn;
  a->slot = NO_SLOT;
  pthread_mutex_lock(&A.mu);
  int rc = 0;
  if (A.n == A.cap) {
    size_t cap = A.cap ? A.cap * 2 : 64;
    void *h = weft__realloc(A.heap, A.cap * sizeof *A.heap,
                            cap * sizeof *A.heap);
    if (h == NULL)
      rc = WEFT_ENOMEM;
    else {
      A.heap = h;
      A.cap = cap;
    }
  }
  if (rc == 0 && !A.running)
    rc = start_thread();
  if (rc == 0) {
    A.n++;
    heap_set(A.n - 1, a);
    sift_up(A.n - 1);
    /* Wake the thread only for an alarm earlier than its own wake-up: a
     * later one (the usual timeout, armed and disarmed) costs no system
     * call; the thread finds it when it wakes. */
    if (deadline < A.until) {
      A.until = deadline;
      pthread_cond_signal(&A.cv);
    }
  }
  pthread_mutex_unlock(&A.mu);
  return rc;
}

bool weft__alarm_disarm(weft__alarm_t *a) {
  pthread_mutex_lock(&A.mu);
  bool armed = a->slot != NO_SLOT;
  if (armed)
    heap_remove(a);
  pthread_mutex_unlock(&A.mu);
  return armed;
}
