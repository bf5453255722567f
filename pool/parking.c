/* SPDX-License-Identifier: MIT */
/* pool/parking.c: an event count on a futex, where idle workers sleep.
 * A sleeper announces itself (waiters++), re-checks for work, then sleeps
 * on the epoch it read; a producer that published work and sees a waiter
 * bumps the epoch and wakes one. Either the sleeper's re-check sees the
 * work or the producer sees the sleeper: no lost wake-up. */
#define _GNU_SOURCE
#include "internal.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

uint32_t weft__ec_prepare(weft__eventcount_t *ec) {
  atomic_fetch_add_explicit(&ec->waiters, 1, memory_order_seq_cst);
  return atomic_load_explicit(&ec->epoch, memory_order_seq_cst);
}

void weft__ec_cancel(weft__eventcount_t *ec) {
  atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
}

void weft__ec_wait(weft__eventcount_t *ec, uint32_t epoch) {
  while (atomic_load_explicit(&ec->epoch, memory_order_acquire) == epoch) {
    futex_wait(&ec->epoch, epoch);
  }
  atomic_fetch_sub_explicit(&ec->waiters, 1, memory_order_relaxed);
}

void weft__ec_notify_one(weft__eventcount_t *ec) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&ec->waiters, memory_order_seq_cst) == 0 ||
      atomic_load_explicit(&ec->searching, memory_order_seq_cst) > 0)
    return;
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_release);
  futex_wake(&ec->epoch, 1);
}

void weft__ec_notify_all(weft__eventcount_t *ec) {
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_seq_cst);
  futex_wake(&ec->epoch, 1 << 30);
}

void weft__ec_notify_if_sleepers(weft__eventcount_t *ec) {
  if (atomic_load_explicit(&ec->waiters, memory_order_relaxed) == 0 ||
      atomic_load_explicit(&ec->searching, memory_order_relaxed) > 0)
    return;
  atomic_fetch_add_explicit(&ec->epoch, 1, memory_order_release);
  futex_wake(&ec->epoch, 1);
}
