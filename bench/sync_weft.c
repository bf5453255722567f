/* SPDX-License-Identifier: MIT */
/* bench/sync_weft.c: the `sync` suite's channel case with weft: one
 * producer thread and one consumer thread pass N items through a
 * weft_channel_t of capacity 1,024, as a user writes it (the try_ call,
 * else the future form and weft_future_await); prints items/s. */
#define _GNU_SOURCE
#include <weft.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static weft_channel_t *ch;
static long n_items;

static void *producer(void *arg) {
  (void)arg;
  for (long i = 1; i <= n_items; i++) {
    void *it = (void *)(uintptr_t)i;
    if (weft_channel_try_send(ch, it) == 0)
      continue;
    weft_future_t *f;
    if (weft_channel_send(ch, it, &f) != 0 ||
        weft_future_await(f, WEFT_FOREVER) != 0 || weft_future_error(f) != 0)
      abort();
    weft_future_release(f);
  }
  return NULL;
}

static long consume(void) {
  long sum = 0;
  for (long i = 0; i < n_items; i++) {
    void *it;
    if (weft_channel_try_recv(ch, &it) != 0) {
      weft_future_t *f;
      if (weft_channel_recv(ch, &f) != 0 ||
          weft_future_await(f, WEFT_FOREVER) != 0 || weft_future_error(f) != 0)
        abort();
      it = weft_future_value(f);
      weft_future_release(f);
    }
    sum += (long)(uintptr_t)it;
  }
  return sum;
}

int main(int argc, char **argv) {
  n_items = argc > 1 ? atol(argv[1]) : 5000000;
  if (weft_channel_create(1024, NULL, &ch) != 0)
    return 1;
  int64_t t0 = weft_clock_now_ns();
  pthread_t t;
  if (pthread_create(&t, NULL, producer, NULL) != 0)
    return 1;
  long sum = consume();
  pthread_join(t, NULL);
  int64_t t1 = weft_clock_now_ns();
  if (sum != n_items * (n_items + 1) / 2) {
    fprintf(stderr, "sync_weft: wrong sum %ld\n", sum);
    return 1;
  }
  weft_channel_close(ch);
  printf("%.0f\n", (double)n_items * 1e9 / (double)(t1 - t0));
  return 0;
}
