/* SPDX-License-Identifier: MIT */
/* bench/future_weft.c: the `future` suite's work done with weft; prints one
 * number per mode (settle, chain, handoff, allocs, bytes, bytes_pair). */
#define _GNU_SOURCE
#include <weft.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double settle(long n) {
  int64_t t0 = weft_now_ns();
  long sum = 0;
  for (long i = 0; i < n; i++) {
    weft_promise_t *p;
    weft_future_t *f;
    if (weft_promise_create(&p, &f) != 0)
      abort();
    weft_promise_fulfil_int(p, i);
    sum += (long)weft_future_int(f);
    weft_promise_release(p);
    weft_future_release(f);
  }
  int64_t t1 = weft_now_ns();
  if (sum != n * (n - 1) / 2)
    abort();
  return (double)(t1 - t0) / (double)n;
}

static weft_result_t add_one(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

/* n thens on a pending root (inline executor), then settle the root. */
static double chain(long n) {
  int64_t t0 = weft_now_ns();
  weft_promise_t *p;
  weft_future_t *root, *cur, *next;
  weft_promise_create(&p, &root);
  cur = root;
  weft_future_retain(root);
  for (long i = 0; i < n; i++) {
    if (weft_future_then(cur, weft_executor_inline(), add_one, NULL, &next) != 0)
      abort();
    weft_future_release(cur);
    cur = next;
  }
  weft_promise_fulfil_int(p, 0);
  int64_t t1 = weft_now_ns();
  if (weft_future_int(cur) != n)
    abort();
  weft_future_release(cur);
  weft_future_release(root);
  weft_promise_release(p);
  return (double)(t1 - t0) / (double)n;
}

/* One-way handoff, measured as half a round trip: settling future i here
 * runs its continuation on a dedicated thread (parked until then), which
 * settles the future this thread awaits. All promises and continuations are
 * made before the clock starts, as for the peers. */
static weft_result_t bounce(void *arg, weft_future_t *src) {
  weft_promise_fulfil_int(arg, weft_future_int(src) + 1);
  return weft_ok_int(0);
}

static double handoff(long n) {
  weft_thread_executor_t *te;
  if (weft_thread_executor_create(&te) != 0)
    abort();
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t **there = calloc((size_t)n, sizeof *there);
  weft_promise_t **back = calloc((size_t)n, sizeof *back);
  weft_future_t **fthere = calloc((size_t)n, sizeof *fthere);
  weft_future_t **fback = calloc((size_t)n, sizeof *fback);
  weft_future_t **cont = calloc((size_t)n, sizeof *cont);
  if (!there || !back || !fthere || !fback || !cont)
    abort();
  for (long i = 0; i < n; i++) {
    weft_promise_create(&there[i], &fthere[i]);
    weft_promise_create(&back[i], &fback[i]);
    weft_future_then(fthere[i], ex, bounce, back[i], &cont[i]);
  }
  int64_t t0 = weft_now_ns();
  for (long i = 0; i < n; i++) {
    weft_promise_fulfil_int(there[i], i);
    if (weft_future_await(fback[i], WEFT_FOREVER) != 0 ||
        weft_future_int(fback[i]) != i + 1)
      abort();
  }
  int64_t t1 = weft_now_ns();
  weft_thread_executor_destroy(te);
  for (long i = 0; i < n; i++) {
    weft_future_release(cont[i]);
    weft_future_release(fthere[i]);
    weft_future_release(fback[i]);
    weft_promise_release(there[i]);
    weft_promise_release(back[i]);
  }
  free(there), free(back), free(fthere), free(fback), free(cont);
  return (double)(t1 - t0) / (double)n / 2;
}

static _Atomic long n_allocs, n_bytes;
static void *count_alloc(void *ctx, size_t size) {
  (void)ctx;
  atomic_fetch_add(&n_allocs, 1);
  atomic_fetch_add(&n_bytes, (long)size);
  return malloc(size);
}
static void count_release(void *ctx, void *p, size_t size) {
  (void)ctx;
  (void)size;
  free(p);
}

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? atol(argv[2]) : 1000000;
  if (!strcmp(mode, "settle")) {
    printf("%.1f\n", settle(n));
  } else if (!strcmp(mode, "chain")) {
    chain(n); /* warm-up: the first chain pays the page faults of new memory */
    printf("%.1f\n", chain(n));
  } else if (!strcmp(mode, "handoff")) {
    printf("%.0f\n", handoff(n));
  } else {
    weft_allocator_t a = {count_alloc, count_release, NULL};
    weft_set_allocator(&a);
    weft_promise_t *p;
    weft_future_t *f, *g;
    weft_promise_create(&p, &f);
    long a1 = n_allocs, b1 = n_bytes;
    weft_future_then(f, weft_executor_inline(), add_one, NULL, &g);
    long b2 = n_bytes;
    weft_promise_fulfil_int(p, 1);
    weft_promise_release(p);
    weft_future_release(f);
    weft_future_release(g);
    if (!strcmp(mode, "allocs"))
      printf("%ld\n", a1); /* create + fulfil + release of one pair */
    else if (!strcmp(mode, "bytes"))
      printf("%ld\n", b2 - b1); /* a pending then with its continuation */
    else if (!strcmp(mode, "bytes_pair"))
      printf("%ld\n", b1);
    else
      return 2;
    weft_set_allocator(NULL);
  }
  return 0;
}
