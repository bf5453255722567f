// SPDX-License-Identifier: MIT
// bench/future_peer.cpp: the `future` suite's work done with a C++ peer,
// std::promise/std::future (default) or, with -DPEER_BOOST, boost::promise/
// boost::future (Boost.Thread with continuations). One number per mode.
//
// Two binaries per peer: the timed one (settle, handoff, chain) uses the
// library's own operator new; the one built with -DPEER_COUNT_ALLOCS
// replaces operator new to count, and only answers the counting modes
// (allocs, bytes, bytes_pair), so no timed figure pays for the count.
#ifdef PEER_BOOST
#define BOOST_THREAD_VERSION 4
#define BOOST_THREAD_PROVIDES_FUTURE_CONTINUATION
#include <boost/thread/future.hpp>
namespace peer = boost;
#else
#include <future>
namespace peer = std;
#endif

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#ifdef PEER_COUNT_ALLOCS

// Out of line, so that gcc does not inline free() into a delete of memory
// it knows came from operator new (-Wmismatched-new-delete).
static std::atomic<long> g_news{0}, g_bytes{0};
__attribute__((noinline)) void *operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add((long)n, std::memory_order_relaxed);
  if (void *p = std::malloc(n))
    return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void *p) noexcept {
  std::free(p);
}
__attribute__((noinline)) void operator delete(void *p, std::size_t) noexcept {
  std::free(p);
}

// Allocations (or bytes) of one create + fulfil + read + release.
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
// Bytes allocated by one .then on a pending future.
static long then_bytes() {
  boost::promise<long> p;
  boost::future<long> f = p.get_future();
  long b0 = g_bytes;
  boost::future<long> g = f.then(boost::launch::sync,
                                 [](boost::future<long> x) { return x.get(); });
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
  if (!std::strcmp(mode, "allocs"))
    std::printf("%ld\n", allocs_of_settle(false));
  else if (!std::strcmp(mode, "bytes_pair"))
    std::printf("%ld\n", allocs_of_settle(true));
#ifdef PEER_BOOST
  else if (!std::strcmp(mode, "bytes"))
    std::printf("%ld\n", then_bytes());
#endif
  else {
    std::fprintf(stderr, "%s: counting binary: allocs, bytes_pair%s only\n",
                 argv[0],
#ifdef PEER_BOOST
                 ", bytes"
#else
                 ""
#endif
    );
    return 2;
  }
  return 0;
}

#else // the timed binary

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
  if (sum != n * (n - 1) / 2) {
    std::fprintf(stderr, "settle: wrong sum %ld\n", sum);
    std::exit(1);
  }
  return (t1 - t0) / (double)n;
}

// One-way handoff, measured as half a round trip: thread B is blocked in
// get() on future i when this thread sets it; B sets the answer this thread
// is blocked on. All promises are made before the clock starts, and the
// first `warm` rounds (thread start-up, first touch of the pages, the
// futex paths) run before it too.
static double handoff(long n, long warm) {
  long total = warm + n;
  std::vector<peer::promise<long>> there(total), back(total);
  std::vector<peer::future<long>> fthere, fback;
  fthere.reserve(total);
  fback.reserve(total);
  for (long i = 0; i < total; i++) {
    fthere.push_back(there[i].get_future());
    fback.push_back(back[i].get_future());
  }
  std::thread t([&] {
    for (long i = 0; i < total; i++)
      back[i].set_value(fthere[i].get() + 1);
  });
  double t0 = 0;
  for (long i = 0; i < total; i++) {
    if (i == warm)
      t0 = now_ns();
    there[i].set_value(i);
    if (fback[i].get() != i + 1) {
      std::fprintf(stderr, "handoff: wrong answer in round %ld\n", i);
      std::exit(1);
    }
  }
  double t1 = now_ns();
  t.join();
  return (t1 - t0) / (double)n / 2;
}

#ifdef PEER_BOOST
// A chain of n .then continuations (launch::sync: run on the settling
// thread, boost's cheapest policy) on a pending root, then settle the root
// and read the end. Settling recurses once per link (each continuation
// settles the next future from inside the previous one's), hence the big
// stack of run_on_big_stack.
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
  if (v != n) {
    std::fprintf(stderr, "chain: end is %ld, not %ld\n", v, n);
    std::exit(1);
  }
  return (t1 - t0) / (double)n;
}

// Stack for an n-link chain: the default 8 MiB plus 512 bytes per link,
// several times the frames boost's recursion takes per link (bench/
// README.md), to leave room for other compilers and flags. Only the pages
// touched are backed. future_weft.c runs its chain on the same stack.
static size_t chain_stack_bytes(long n) {
  return ((size_t)8 << 20) + (size_t)n * 512;
}

struct chain_run {
  long n;
  double ns;
};

// A warm-up chain, then the timed ones, on the same thread: they find the
// stack pages and the malloc arena's memory already touched. Short chains
// are run again until 1,000,000 links in all have been timed, so that one
// interrupt does not decide a short run's figure (as in future_weft.c).
static void *chain_thread(void *arg) {
  chain_run *r = static_cast<chain_run *>(arg);
  long times = r->n < 1000000 ? 1000000 / r->n : 1;
  chain(r->n);
  r->ns = 0;
  for (long k = 0; k < times; k++)
    r->ns += chain(r->n) / (double)times;
  return nullptr;
}

static double chain_on_big_stack(long n) {
  chain_run r{n, 0};
  pthread_attr_t a;
  pthread_t t;
  if (pthread_attr_init(&a) != 0 ||
      pthread_attr_setstacksize(&a, chain_stack_bytes(n)) != 0 ||
      pthread_create(&t, &a, chain_thread, &r) != 0 ||
      pthread_join(t, nullptr) != 0) {
    std::fprintf(stderr, "chain: cannot run a thread with a %zu-byte stack\n",
                 chain_stack_bytes(n));
    std::exit(1);
  }
  pthread_attr_destroy(&a);
  return r.ns;
}
#endif

int main(int argc, char **argv) {
  if (argc < 2)
    return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? std::atol(argv[2]) : 1000000;
  if (n < 1)
    return 2;
  if (!std::strcmp(mode, "settle")) {
    settle(n / 10 + 1); // warm-up: first touch, malloc's first chunks
    std::printf("%.1f\n", settle(n));
  } else if (!std::strcmp(mode, "handoff")) {
    std::printf("%.0f\n", handoff(n, n / 10 + 1));
  }
#ifdef PEER_BOOST
  else if (!std::strcmp(mode, "chain"))
    std::printf("%.1f\n", chain_on_big_stack(n));
#endif
  else {
    std::fprintf(stderr,
                 "%s: timed binary: settle, handoff%s only (counts: "
                 "the -DPEER_COUNT_ALLOCS build)\n",
                 argv[0],
#ifdef PEER_BOOST
                 ", chain"
#else
                 ""
#endif
    );
    return 2;
  }
  return 0;
}

#endif // PEER_COUNT_ALLOCS
