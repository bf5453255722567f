// SPDX-License-Identifier: MIT
// bench/future_peer.cpp: the `future` suite's work done with a C++ peer,
// std::promise/std::future (default) or, with -DPEER_BOOST, boost::promise/
// boost::future (Boost.Thread with continuations). One number per mode.
#ifdef PEER_BOOST
#define BOOST_THREAD_VERSION 4
#define BOOST_THREAD_PROVIDES_FUTURE_CONTINUATION
#include <boost/thread/future.hpp>
namespace peer = boost;
#else
#include <future>
namespace peer = std;
#endif

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
    peer::promise<long> p;
    peer::future<long> f = p.get_future();
    p.set_value(i);
    sum += f.get();
  }
  double t1 = now_ns();
  if (sum != n * (n - 1) / 2)
    std::abort();
  return (t1 - t0) / (double)n;
}

// One-way handoff, measured as half a round trip: thread B is blocked in
// get() on future i when this thread sets it; B sets the answer this thread
// is blocked on. All promises are made before the clock starts.
static double handoff(long n) {
  std::vector<peer::promise<long>> there(n), back(n);
  std::vector<peer::future<long>> fthere, fback;
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

static long allocs_of_settle(bool bytes) {
  long a0 = g_news, b0 = g_bytes;
  {
    peer::promise<long> p;
    peer::future<long> f = p.get_future();
    p.set_value(1);
    (void)f.get();
  }
  return bytes ? g_bytes - b0 : g_news - a0;
}

#ifdef PEER_BOOST
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

// Bytes allocated by one .then on a pending future.
static long then_bytes() {
  boost::promise<long> p;
  boost::future<long> f = p.get_future();
  long b0 = g_bytes;
  boost::future<long> g =
      f.then(boost::launch::sync, [](boost::future<long> x) { return x.get(); });
  long b = g_bytes - b0;
  p.set_value(1);
  (void)g.get();
  return b;
}
#endif

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? std::atol(argv[2]) : 1000000;
  if (!std::strcmp(mode, "settle"))
    std::printf("%.1f\n", settle(n));
  else if (!std::strcmp(mode, "handoff"))
    std::printf("%.0f\n", handoff(n));
  else if (!std::strcmp(mode, "allocs"))
    std::printf("%ld\n", allocs_of_settle(false));
  else if (!std::strcmp(mode, "bytes_pair"))
    std::printf("%ld\n", allocs_of_settle(true));
#ifdef PEER_BOOST
  else if (!std::strcmp(mode, "chain")) {
    chain(n); // warm-up, as for weft: the first chain pays new pages
    std::printf("%.1f\n", chain(n));
  } else if (!std::strcmp(mode, "bytes"))
    std::printf("%ld\n", then_bytes());
#endif
  else
    return 2;
  return 0;
}
