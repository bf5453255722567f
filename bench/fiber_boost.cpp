// SPDX-License-Identifier: MIT
// bench/fiber_boost.cpp: the `fiber` suite's switch figure with
// Boost.Context's boost::context::fiber (libboost-context-dev), written as
// Boost's own documentation and performance test write it: a fiber that
// resumes its caller in a loop, and a loop here that resumes the fiber.
//   switch N   ns per suspend+resume pair: each `f = std::move(f).resume()`
//              switches into the fiber and the fiber's `resume()` of the
//              caller switches back.
// A tenth of N is run untimed first, on the same fiber; the loop is timed
// with the thread's CPU clock, as fiber_weft.c's.
#include <boost/context/fiber.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

namespace ctx = boost::context;

static long long cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
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
  long long t0 = cpu_ns();
  for (long i = 0; i < n; i++)
    f = std::move(f).resume();
  long long t1 = cpu_ns();
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
