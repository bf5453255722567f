/* SPDX-License-Identifier: MIT */
/* tests/fs_util.h: helpers of the fs and dns suites: a scratch directory,
 * settling a future on the loop, counting open fds. */
#ifndef WEFT_FS_UTIL_H
#define WEFT_FS_UTIL_H

#include "testutil.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Run the loop until f settles (bounded); its error (0: fulfilled). */
static inline int fs_settle(weft_loop_t *loop, weft_future_t *f) {
  int rc = weft_loop_run_until(loop, f, BOUND_MS);
  if (rc != 0)
    return rc;
  return weft_future_error(f);
}

/* Settle, read the integer, release. */
static inline long fs_wait_int(weft_loop_t *loop, weft_future_t *f, int *err) {
  *err = fs_settle(loop, f);
  long v = (long)weft_future_int(f);
  weft_future_release(f);
  return v;
}

/* Open path and take the file; NULL (and *err) when that failed. */
static inline weft_file_t *fs_open(weft_loop_t *loop, const char *path,
                                   int flags, int *err) {
  weft_future_t *f = NULL;
  weft_file_t *file = NULL;
  *err = weft_file_open(loop, path, flags, 0600, &f);
  if (*err != 0)
    return NULL;
  *err = fs_settle(loop, f);
  if (*err == 0)
    *err = weft_file_take(f, &file);
  weft_future_release(f);
  return file;
}

/* Close the file and wait for its fd to be closed. */
static inline int fs_close(weft_loop_t *loop, weft_file_t *file) {
  weft_future_t *f = NULL;
  int rc = weft_file_close(file, &f);
  if (rc != 0)
    return rc;
  rc = fs_settle(loop, f);
  weft_future_release(f);
  return rc;
}

/* A fresh scratch directory (path in dir, 64 bytes). */
static inline void fs_tmpdir(char *dir) {
  snprintf(dir, 64, "/tmp/weft-fs-XXXXXX");
  if (mkdtemp(dir) == NULL)
    dir[0] = '\0';
}

static inline void fs_rmdir(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
}

/* A loop whose blocking work runs on a pool's blocking threads, for tests
 * that close the loop with requests still in flight: the pool's shutdown
 * joins the threads that end them (the loop's own threads would end them
 * by themselves, after the test, racing the next test's allocator). */
static inline weft_loop_t *fs_pool_loop(weft_pool_t **pool) {
  weft_pool_options_t po = {sizeof po, 1, 4, 0, {0}};
  REQUIRE_EQ(weft_pool_create(&po, pool), 0);
  weft_loop_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.size = sizeof lo;
  lo.blocking = weft_pool_blocking_executor(*pool);
  weft_loop_t *loop = NULL;
  REQUIRE_EQ(weft_loop_create(&lo, &loop), 0);
  return loop;
}

#endif /* WEFT_FS_UTIL_H */
