/* SPDX-License-Identifier: MIT */
/* weft/system.h: what weft reads from the system: the clock of every
 * deadline and the CPUs the process may use. */
#ifndef WEFT_SYSTEM_H
#define WEFT_SYSTEM_H

#include <weft/common.h>

WEFT_BEGIN_DECLS

/**
 * Monotonic clock in nanoseconds (CLOCK_MONOTONIC), the clock of every weft
 * deadline. weft_loop_now_ns() is the same clock as the loop cached it.
 * Never fails.
 * Thread: any thread.
 */
WEFT_EXTERN int64_t weft_clock_now_ns(void);

/**
 * The number of CPUs this process may use: the affinity mask, capped by a
 * cgroup v2 CPU quota (cpu.max) when one is set; at least 1. A pool made
 * with threads = 0 starts this many CPU workers.
 * Never fails.
 * Thread: any thread.
 */
WEFT_EXTERN unsigned weft_cpu_count(void);

WEFT_END_DECLS

#endif /* WEFT_SYSTEM_H */
