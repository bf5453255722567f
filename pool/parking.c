/* SPDX-License-Identifier: MIT */
/* pool/parking.c: an event count on a futex, where idle workers sleep.
 * A sleeper announces itself (waiters++), re-checks for work, then sleeps
 * on the epoch it read; a producer that published work and sees a waiter
 * bumps the epoch and wakes one. Either the sleeper's re-check sees the
 * work or the producer sees the sleeper: no lost wake-up.
 *
 * One wake-up in flight at a time: a producer that wakes a sleeper sets
 * `waking`; until a worker comes back from its wait (or cancels it, or
 * announces a new wait) other producers skip the futex call. Without this,
 * every submit in the microseconds a woken thread takes to run makes its own
 * futex_wake system call. Not lost: whoever clears `waking` searches for
 * work afterwards (after a seq_cst read-modify-write), so it sees what a skipping producer
 * published before its own fence; and `waking` is always cleared, since the
 * producer that set it then bumps the epoch, which sends at least one
 * sleeper back (or every worker is awake and will search anyway). A
 * sleeper reads the epoch before it clears `waking`, so no sleeper misses
 * the bump of a wake-up set after its clear.
 *
 * A search that finds work ends with the first task it finds: what a
 * skipping producer published may be another task, in another worker's
 * inbox. So a worker that stops searching, or leaves a wait, to run
 * something hands the search on (weft__ec_handoff): it wakes one more
 * sleeper when no other worker is searching. The chain ends at a worker
 * that finds nothing and parks after its re-check. */
#define _GNU_SOURCE
#include "internal.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleep while *addr == val, until woken by a wake whose bitset meets
 * `bits`, or the monotonic deadline (-1: none). */
static void futex_wait(_Atomic uint32_t *addr, uint32_t val, uint32_t bits,
                       int64_t deadline_ns) {
  struct timespec ts, *tp = NULL;
  if (deadline_ns >= 0) {
    ts.tv_sec = (time_t)(deadline_ns / 1000000000);
    ts.tv_nsec = (long)(deadline_ns % 1000000000);
    tp = &ts; /* absolute, CLOCK_MONOTONIC (FUTEX_WAIT_BITSET's clock) */
  }
  /* A fault here is a spurious wake-up: the caller looks again. */
  (void)WEFT__SYS("futex",
                  syscall(SYS_futex, (uint32_t *)addr,
                          FUTEX_WAIT_BITSET_PRIVATE, val, tp, NULL, bits));
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* A worker that is about to search again ends any wake-up in flight. */
static void clear_waking(weft__eventcount_t *ec) {
  /* an unconditional seq_cst read-modify-write: also the full fence */
  atomic_exchange_explicit(&ec->waking, 0, memory_order_seq_cst);
}

uint32_t weft__ec_prepare(weft__eventcount_t *ec) {
  atomic_fetch_add_explicit(&ec->waiters, 1, memory_order_seq_cst);
  WEFT__PERTURB();
  /* The epoch before the clear: a wake that marks itself in flight after
   * our clear bumps an epoch we have already read, so it reaches us. Read
   * after the clear, its bump could pass unseen and leave the mark set
   * over our sleep, and every later producer would skip its wake. */
  uint32_t epoch = atomic_load_explicit(&ec->epoch, memory_order_seq_cst);
  WEFT__PERTURB();
  WEFT__PAUSE("ec_prepare");
  clear_waking(ec);
  return epoch;
}

void weft__ec_cancel(weft__eventcount_t *ec) {
  atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
  WEFT__PERTURB(); /* uncounted, `waking` not cleared yet */
  clear_waking(ec);
}

void weft__ec_wait_until(weft__eventcount_t *ec, uint32_t epoch, uint32_t bits,
                         int64_t deadline_ns) {
  while (atomic_load_explicit(&ec->epoch, memory_order_acquire) == epoch) {
    if (deadline_ns >= 0 && weft_clock_now_ns() >= deadline_ns)
      break;
    WEFT__PERTURB(); /* the epoch may move before the futex looks */
    futex_wait(&ec->epoch, epoch, bits, deadline_ns);
  }
  WEFT__PERTURB(); /* woken, still counted as a waiter */
  atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
  WEFT__PERTURB(); /* uncounted, `waking` not cleared yet */
  clear_waking(ec);
}

void weft__ec_wait(weft__eventcount_t *ec, uint32_t epoch) {
  weft__ec_wait_until(ec, epoch, WEFT__EC_ANY, -1);
}

void weft__ec_wake_bits(weft__eventcount_t *ec, uint32_t bits) {
  /* seq_cst: a sleeper whose epoch load sees this also sees what the
   * caller did before (the settle it reports) */
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_seq_cst);
  syscall(SYS_futex, (uint32_t *)&ec->epoch, FUTEX_WAKE_BITSET_PRIVATE, 1 << 30,
          NULL, NULL, bits);
}

void weft__ec_wake_one(weft__eventcount_t *ec) {
  uint32_t idle = 0;
  weft__cpu_note_wake(); /* the loop keeps its spin off this CPU a while */
  WEFT__PERTURB();       /* a sleeper seen, no wake-up marked yet */
  if (atomic_load_explicit(&ec->waking, memory_order_relaxed) != 0 ||
      !atomic_compare_exchange_strong_explicit(
          &ec->waking, &idle, 1, memory_order_seq_cst, memory_order_relaxed))
    return;        /* a wake-up is already on its way */
  WEFT__PERTURB(); /* `waking` set, no epoch bump yet */
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_release);
  futex_wake(&ec->epoch, 1);
}

void weft__ec_notify_one(weft__eventcount_t *ec) {
  /* No fence: the work was published with a seq_cst read-modify-write and
   * these loads are seq_cst, as are a sleeper's announcement (waiters++)
   * and its re-check of the inboxes; in their single total order either
   * the re-check sees the work or this load sees the sleeper. */
  WEFT__PERTURB();
  if (atomic_load_explicit(&ec->waiters, memory_order_seq_cst) == 0 ||
      atomic_load_explicit(&ec->searching, memory_order_seq_cst) > 0)
    return;
  weft__ec_wake_one(ec);
}

void weft__ec_handoff(weft__eventcount_t *ec) {
  /* seq_cst, after the caller's seq_cst clear of `waking` or decrement of
   * `searching`: a producer that skipped its wake read one of those before
   * it changed, so its work is published before these loads; a sleeper
   * these loads miss announced itself later and its re-check sees it. */
  WEFT__PERTURB();
  if (atomic_load_explicit(&ec->waiters, memory_order_seq_cst) == 0 ||
      atomic_load_explicit(&ec->searching, memory_order_seq_cst) > 0)
    return;
  weft__ec_wake_one(ec);
}

void weft__ec_notify_all(weft__eventcount_t *ec) {
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_seq_cst);
  futex_wake(&ec->epoch, 1 << 30);
}
