// SPDX-License-Identifier: MIT
// bench/pool_tbb.cpp: fib and skynet with oneTBB task_group, the same shape
// as weft's (every call a task, both children spawned, no cutoff). Before the
// clock an untimed fib(22), the warm-up every runtime runs, starts the
// workers and the arena.
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_group.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static long fib(long n) {
  if (n < 2)
    return n;
  long a = 0, b = 0;
  tbb::task_group g;
  g.run([&] { a = fib(n - 1); });
  g.run([&] { b = fib(n - 2); });
  g.wait();
  return a + b;
}

static long skynet(long num, int level) {
  if (level == 0)
    return num;
  long size = 1;
  for (int i = 1; i < level; i++)
    size *= 10;
  long sums[10];
  tbb::task_group g;
  for (int i = 0; i < 10; i++)
    g.run([&, i] { sums[i] = skynet(num + i * size, level - 1); });
  g.wait();
  long s = 0;
  for (long v : sums)
    s += v;
  return s;
}

static long fib_calls(long n) {
  return n < 2 ? 1 : 1 + fib_calls(n - 1) + fib_calls(n - 2);
}

static double now_ns() {
  return (double)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int main(int argc, char **argv) {
  if (argc < 3)
    return 2;
  int threads = std::atoi(argv[2]);
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, threads);
  {
    long w = 0;
    tbb::task_group g;
    g.run([&] { w = fib(22); });
    g.wait();
    if (w != 17711)
      std::abort();
  }
  double t0 = now_ns();
  if (!std::strcmp(argv[1], "fib")) {
    long n = argc > 3 ? std::atol(argv[3]) : 32;
    long r = 0;
    tbb::task_group g; // run the root as a task too, like weft and OpenMP
    g.run([&] { r = fib(n); });
    g.wait();
    if (n == 32 && r != 2178309)
      std::abort();
    std::printf("%.1f\n", (now_ns() - t0) / (double)fib_calls(n));
  } else if (!std::strcmp(argv[1], "skynet")) {
    long r = 0;
    tbb::task_group g;
    g.run([&] { r = skynet(0, 6); });
    g.wait();
    if (r != 499999500000L)
      std::abort();
    std::printf("%.1f\n", (now_ns() - t0) / 1e6);
  } else
    return 2;
  return 0;
}
