/* SPDX-License-Identifier: MIT */
/* bench/pool_omp.c: fib and skynet with OpenMP tasks, the same shape as
 * weft's: every call a task, no cutoff. Built twice: gcc -fopenmp (libgomp)
 * and clang -fopenmp=libomp (LLVM's libomp). The thread count is argv[2]
 * through omp_set_num_threads, which overrides OMP_NUM_THREADS; the wait
 * policy is each runtime's default. Before the clock an untimed parallel
 * region runs fib(22), the warm-up every runtime runs, so the team's
 * threads exist and are ready. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fib(long n) {
  if (n < 2)
    return n;
  long a, b;
#pragma omp task shared(a)
  a = fib(n - 1);
#pragma omp task shared(b)
  b = fib(n - 2);
#pragma omp taskwait
  return a + b;
}

static long skynet(long num, int level) {
  if (level == 0)
    return num;
  long size = 1, sums[10];
  for (int i = 1; i < level; i++)
    size *= 10;
  for (int i = 0; i < 10; i++) {
#pragma omp task shared(sums) firstprivate(i)
    sums[i] = skynet(num + i * size, level - 1);
  }
#pragma omp taskwait
  long s = 0;
  for (int i = 0; i < 10; i++)
    s += sums[i];
  return s;
}

static long fib_calls(long n) {
  return n < 2 ? 1 : 1 + fib_calls(n - 1) + fib_calls(n - 2);
}

int main(int argc, char **argv) {
  if (argc < 3)
    return 2;
  omp_set_num_threads(atoi(argv[2]));
  long n = argc > 3 ? atol(argv[3]) : 32, r = 0, w = 0;
#pragma omp parallel
#pragma omp single
  w = fib(22);
  if (w != 17711)
    abort();
  double t0 = omp_get_wtime();
  int is_fib = !strcmp(argv[1], "fib");
#pragma omp parallel
#pragma omp single
  r = is_fib ? fib(n) : skynet(0, 6);
  double t = omp_get_wtime() - t0;
  if ((is_fib && n == 32 && r != 2178309) || (!is_fib && r != 499999500000L))
    abort();
  if (is_fib)
    printf("%.1f\n", t * 1e9 / (double)fib_calls(n));
  else
    printf("%.1f\n", t * 1e3);
  return 0;
}
