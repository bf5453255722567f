/* SPDX-License-Identifier: MIT */
/* bench/future_weft.c: the `future` suite's work done with weft; prints one
 * number per mode (settle, chain, handoff, allocs, bytes, bytes_pair). */
#define _GNU_SOURCE
#include <weft.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double settle(long n) {
  int64_t t0 = weft_clock_now_ns();
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
  int64_t t1 = weft_clock_now_ns();
  if (sum != n * (n - 1) / 2) {
    fprintf(stderr, "settle: wrong sum %ld\n", sum);
    exit(1);
  }
  return (double)(t1 - t0) / (double)n;
}

static weft_result_t add_one(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

/* n thens on a pending root (inline executor), then settle the root and
 * read the end. The inline executor runs the continuations one after the
 * other from a trampoline, without recursion. */
static double chain(long n) {
  int64_t t0 = weft_clock_now_ns();
  weft_promise_t *p;
  weft_future_t *root, *cur, *next;
  if (weft_promise_create(&p, &root) != 0)
    abort();
  cur = root;
  weft_future_retain(root);
  for (long i = 0; i < n; i++) {
    if (weft_future_then(cur, weft_executor_inline(), add_one, NULL, NULL,
                         &next) != 0)
      abort();
    weft_future_release(cur);
    cur = next;
  }
  weft_promise_fulfil_int(p, 0);
  long v = (long)weft_future_int(cur);
  int64_t t1 = weft_clock_now_ns();
  if (v != n) {
    fprintf(stderr, "chain: end is %ld, not %ld\n", v, n);
    exit(1);
  }
  weft_future_release(cur);
  weft_future_release(root);
  weft_promise_release(p);
  return (double)(t1 - t0) / (double)n;
}

/* The stack of the thread the chain runs on: the size future_peer.cpp
 * gives boost's chain (which recurses once per link), so that both run on
 * the same kind of thread with the same warm-up. */
static size_t chain_stack_bytes(long n) {
  return ((size_t)8 << 20) + (size_t)n * 512;
}

struct chain_run {
  long n;
  double ns;
};

/* A warm-up chain, then the timed ones, on the same thread: they find this
 * thread's block cache and the pages of the first already there. Short
 * chains are run again until 1,000,000 links in all have been timed, so
 * that one interrupt does not decide a short run's figure. */
static void *chain_thread(void *arg) {
  struct chain_run *r = arg;
  long times = r->n < 1000000 ? 1000000 / r->n : 1;
  chain(r->n);
  r->ns = 0;
  for (long k = 0; k < times; k++)
    r->ns += chain(r->n) / (double)times;
  return NULL;
}

static double chain_on_big_stack(long n) {
  struct chain_run r = {n, 0};
  pthread_attr_t a;
  pthread_t t;
  if (pthread_attr_init(&a) != 0 ||
      pthread_attr_setstacksize(&a, chain_stack_bytes(n)) != 0 ||
      pthread_create(&t, &a, chain_thread, &r) != 0 ||
      pthread_join(t, NULL) != 0) {
    fprintf(stderr, "chain: cannot run a thread with a %zu-byte stack\n",
            chain_stack_bytes(n));
    exit(1);
  }
  pthread_attr_destroy(&a);
  return r.ns;
}

/* One-way handoff, measured as half a round trip: settling future i here
 * runs its continuation on a dedicated thread (parked until then), which
 * settles the future this thread awaits. All promises and continuations are
 * made before the clock starts, and the first `warm` rounds (thread
 * start-up, first touch, the wake paths) run before it too, as for the
 * peers. */
static weft_result_t bounce(void *arg, weft_future_t *src) {
  weft_promise_fulfil_int(arg, weft_future_int(src) + 1);
  return weft_ok_int(0);
}

static double handoff(long n, long warm) {
  long total = warm + n;
  weft_thread_executor_t *te;
  if (weft_thread_executor_create(&te) != 0)
    abort();
  weft_executor_t *ex = weft_thread_executor_get(te);
  weft_promise_t **there = calloc((size_t)total, sizeof *there);
  weft_promise_t **back = calloc((size_t)total, sizeof *back);
  weft_future_t **fthere = calloc((size_t)total, sizeof *fthere);
  weft_future_t **fback = calloc((size_t)total, sizeof *fback);
  weft_future_t **cont = calloc((size_t)total, sizeof *cont);
  if (!there || !back || !fthere || !fback || !cont)
    abort();
  for (long i = 0; i < total; i++) {
    if (weft_promise_create(&there[i], &fthere[i]) != 0 ||
        weft_promise_create(&back[i], &fback[i]) != 0 ||
        weft_future_then(fthere[i], ex, bounce, back[i], NULL, &cont[i]) != 0)
      abort();
  }
  int64_t t0 = 0;
  for (long i = 0; i < total; i++) {
    if (i == warm)
      t0 = weft_clock_now_ns();
    weft_promise_fulfil_int(there[i], i);
    if (weft_future_await(fback[i], WEFT_FOREVER) != 0 ||
        weft_future_int(fback[i]) != i + 1) {
      fprintf(stderr, "handoff: wrong answer in round %ld\n", i);
      exit(1);
    }
  }
  int64_t t1 = weft_clock_now_ns();
  weft_thread_executor_shutdown(te);
  for (long i = 0; i < total; i++) {
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
  if (n < 1)
    return 2;
  if (!strcmp(mode, "settle")) {
    settle(n / 10 + 1); /* warm-up: first touch, the block cache's first fill */
    printf("%.1f\n", settle(n));
  } else if (!strcmp(mode, "chain")) {
    printf("%.1f\n", chain_on_big_stack(n));
  } else if (!strcmp(mode, "handoff")) {
    printf("%.0f\n", handoff(n, n / 10 + 1));
  } else {
    /* Counting modes: every weft allocation goes to count_alloc while the
     * counting allocator is set (the timed modes never set it). */
    weft_allocator_t a = {count_alloc, count_release, NULL, {0}};
    weft_allocator_set(&a);
    /* one create + fulfil + read + release, as the peers' allocs/bytes_pair */
    weft_promise_t *p;
    weft_future_t *f, *g;
    if (weft_promise_create(&p, &f) != 0)
      abort();
    weft_promise_fulfil_int(p, 1);
    if (weft_future_int(f) != 1)
      abort();
    weft_promise_release(p);
    weft_future_release(f);
    long pair_allocs = n_allocs, pair_bytes = n_bytes;
    /* one then on a pending future: the bytes it adds */
    if (weft_promise_create(&p, &f) != 0)
      abort();
    long b0 = n_bytes;
    if (weft_future_then(f, weft_executor_inline(), add_one, NULL, NULL, &g) !=
        0)
      abort();
    long then_bytes = n_bytes - b0;
    weft_promise_fulfil_int(p, 1);
    weft_promise_release(p);
    weft_future_release(f);
    weft_future_release(g);
    weft_allocator_set(NULL);
    if (!strcmp(mode, "allocs"))
      printf("%ld\n", pair_allocs);
    else if (!strcmp(mode, "bytes"))
      printf("%ld\n", then_bytes);
    else if (!strcmp(mode, "bytes_pair"))
      printf("%ld\n", pair_bytes);
    else
      return 2;
  }
  return 0;
}
