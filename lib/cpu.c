/* SPDX-License-Identifier: MIT */
/* lib/cpu.c: how many CPUs this process may use (affinity and cgroup), and
 * the CPU demand the pool reports to the loop (lib/internal.h): the pool
 * sizes itself by the first (weft_cpu_count), a loop decides with both
 * whether it may spin. */
#define _GNU_SOURCE
#include "internal.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

_Atomic int weft__cpu_running_workers;
_Thread_local unsigned weft__cpu_tl_wakes
    __attribute__((tls_model("initial-exec")));

/* CPUs a cgroup v2 cpu.max file at `path` allows, rounded up: it holds
 * "max <period>" (no quota: 0) or "<quota> <period>". 0 when unreadable. */
unsigned weft__cgroup_cpus(const char *path) {
  FILE *fp = fopen(path, "r");
  if (fp == NULL)
    return 0;
  char quota[32];
  long period = 0;
  unsigned n = 0;
  if (fscanf(fp, "%31s %ld", quota, &period) == 2 && period > 0 &&
      quota[0] != 'm') {
    long q = atol(quota);
    if (q > 0)
      n = (unsigned)((q + period - 1) / period);
  }
  fclose(fp);
  return n;
}

unsigned weft__cpu_count(void) {
  cpu_set_t set;
  unsigned n = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    n = (unsigned)CPU_COUNT(&set);
  if (n == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (unsigned)c : 1;
  }
  unsigned q = weft__cgroup_cpus("/sys/fs/cgroup/cpu.max");
  if (q > 0 && q < n)
    n = q;
  return n > 0 ? n : 1;
}
