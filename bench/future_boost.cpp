// SPDX-License-Identifier: MIT
// bench/future_boost.cpp: the `future` suite's work done with boost::promise
// / boost::future (Boost.Thread, continuations enabled). One number per mode.
#define BOOST_THREAD_VERSION 4
#define BOOST_THREAD_PROVIDES_FUTURE_CONTINUATION
#include <boost/thread/future.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

static std::atomic<long> g_news{0}, g_bytes{0};
void *operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add((long)n, std::memory_order_relaxed);
  if (void *p = std::malloc(n))
    return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

static double now_ns() {
  return (double)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

static double settle(long n) {
  double t0 = now_ns();
  long sum = 0;
  for (long i = 0; i < n; i++) {
    boost::promise<long> p;
    boost::future<long> f = p.get_future();
    p.set_value(i);
    sum += f.get();
  }
  double t1 = now_ns();
  if (sum != n * (n - 1) / 2)
    std::abort();
  return (t1 - t0) / (double)n;
}

// A chain of n .then continuations (launch::sync: run on the settling
// thread, boost's cheapest policy) on a pending root, then settle the root.
static double chain(long n) {
  double t0 = now_ns();
  boost::promise<long> p;
  boost::future<long> f = p.get_future();
  for (long i = 0; i < n; i++)
    f = f.then(boost::launch::sync,
               [](boost::future<long> prev) { return prev.get() + 1; });
  p.set_value(0);
  long v = f.get();
  double t1 = now_ns();
  if (v != n)
    std::abort();
  return (t1 - t0) / (double)n;
}

// One-way handoff, measured as half a round trip: thread B is blocked in
// get() on future i when this thread sets it; B sets the answer this thread
// is blocked on. All promises are made before the clock starts.
static double handoff(long n) {
  std::vector<boost::promise<long>> there(n), back(n);
  std::vector<boost::future<long>> fthere, fback;
  for (long i = 0; i < n; i++) {
    fthere.push_back(there[i].get_future());
    fback.push_back(back[i].get_future());
  }
  std::thread t([&] {
    for (long i = 0; i < n; i++)
      back[i].set_value(fthere[i].get() + 1);
  });
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    there[i].set_value(i);
    if (fback[i].get() != i + 1)
      std::abort();
  }
  double t1 = now_ns();
  t.join();
  return (t1 - t0) / (double)n / 2;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? std::atol(argv[2]) : 1000000;
  if (!std::strcmp(mode, "settle"))
    std::printf("%.1f\n", settle(n));
  else if (!std::strcmp(mode, "chain")) {
    chain(n); // warm-up, as for weft
    std::printf("%.1f\n", chain(n));
  }
  else if (!std::strcmp(mode, "handoff"))
    std::printf("%.0f\n", handoff(n));
  else if (!std::strcmp(mode, "allocs")) {
    long a0 = g_news;
    {
      boost::promise<long> p;
      boost::future<long> f = p.get_future();
      p.set_value(1);
      (void)f.get();
    }
    std::printf("%ld\n", g_news - a0);
  } else if (!std::strcmp(mode, "bytes")) {
    boost::promise<long> p;
    boost::future<long> f = p.get_future();
    long b0 = g_bytes;
    boost::future<long> g = f.then(boost::launch::sync, [](boost::future<long> x) { return x.get(); });
    std::printf("%ld\n", g_bytes - b0);
    p.set_value(1);
    (void)g.get();
  } else
    return 2;
  return 0;
}
