// SPDX-License-Identifier: MIT
// bench/fiber_boost.cpp: the `fiber` suite's switch figure with
// Boost.Context's boost::context::fiber (libboost-context-dev), written as
// Boost's own documentation and performance test write it: a fiber that
// resumes its caller in a loop, and a loop here that resumes the fiber.
//   switch N   ns per suspend+resume pair: each `f = std::move(f).resume()`
//              switches into the fiber and the fiber's `resume()` of the
//              caller switches back.
// A tenth of N is run untimed first, on the same fiber.
#include <boost/context/fiber.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace ctx = boost::context;

static long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static double switch_pair(long n) {
  bool stop = false;
  long turns = 0;
  ctx::fiber f{[&stop, &turns](ctx::fiber &&caller) {
    while (!stop) {
      ++turns;
      caller = std::move(caller).resume();
    }
    return std::move(caller);
  }};
  for (long i = 0; i < n / 10; i++)
    f = std::move(f).resume();
  long long t0 = now_ns();
  for (long i = 0; i < n; i++)
    f = std::move(f).resume();
  long long t1 = now_ns();
  stop = true;
  f = std::move(f).resume(); // the fiber returns: f is empty again
  if (f || turns != n / 10 + n) {
    std::fprintf(stderr, "switch: %ld turns, not %ld\n", turns, n / 10 + n);
    std::exit(1);
  }
  return double(t1 - t0) / double(n);
}

int main(int argc, char **argv) {
  long n = argc == 3 ? std::atol(argv[2]) : 0;
  if (n > 0 && std::strcmp(argv[1], "switch") == 0) {
    std::printf("%.1f\n", switch_pair(n));
    return 0;
  }
  std::fprintf(stderr, "usage: %s switch N\n", argv[0]);
  return 2;
}
