/* SPDX-License-Identifier: MIT */
/* tests/test_fs.c: files on the loop (weft/fs.h): every operation's
 * success and error paths, the current position, removal while open,
 * ownership of an open future's file. The suite runs on the io_uring
 * path where the kernel has one and once more with WEFT_IO_URING=0
 * (fs.epoll): the blocking path. Cancels and closes: test_fs_cancel.c. */
#include "fs_util.h"

#include <errno.h>
#include <limits.h>

static char dir[64];

static void path_in(char *out, const char *name) {
  snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static void setup(void) { fs_tmpdir(dir); }

static void test_round_trip(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "a");
  int err;
  weft_file_t *file = fs_open(loop, p, O_RDWR | O_CREAT | O_TRUNC, &err);
  REQUIRE_EQ(err, 0);
  EXPECT_TRUE(weft_file_fd(file) >= 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_write(file, "hello world", 11, 0, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 11);
  EXPECT_EQ(err, 0);
  char buf[16] = {0};
  REQUIRE_EQ(weft_file_read(file, buf, sizeof buf, 6, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 5);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(memcmp(buf, "world", 5), 0);
  REQUIRE_EQ(weft_file_read(file, buf, sizeof buf, 11, &f), 0); /* at end */
  EXPECT_EQ(fs_wait_int(loop, f, &err), 0);
  EXPECT_EQ(err, 0);
  REQUIRE_EQ(weft_file_read(file, buf, 0, 0, &f), 0); /* n == 0: at once */
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  weft_future_release(f);
  struct stat st;
  memset(&st, 0, sizeof st);
  REQUIRE_EQ(weft_file_stat(file, &st, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 0);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(st.st_size, 11);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_nlink, 1);
  struct stat st2;
  REQUIRE_EQ(weft_fs_stat(loop, p, &st2, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 0);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(st2.st_ino, st.st_ino);
  EXPECT_EQ(st2.st_size, 11);
  REQUIRE_EQ(weft_file_sync(file, &f), 0);
  fs_wait_int(loop, f, &err);
  EXPECT_EQ(err, 0);
  REQUIRE_EQ(weft_file_datasync(file, &f), 0);
  fs_wait_int(loop, f, &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* Errors from the kernel settle the future with their WEFT_ code. */
static void test_errors(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  int err;
  path_in(p, "missing");
  EXPECT_TRUE(fs_open(loop, p, O_RDONLY, &err) == NULL);
  EXPECT_ERR(err, WEFT_ENOENT);
  EXPECT_TRUE(fs_open(loop, dir, O_WRONLY, &err) == NULL);
  EXPECT_ERR(err, WEFT_EISDIR);
  path_in(p, "x");
  weft_file_t *file = fs_open(loop, p, O_WRONLY | O_CREAT, &err);
  REQUIRE_EQ(err, 0);
  EXPECT_TRUE(fs_open(loop, p, O_WRONLY | O_CREAT | O_EXCL, &err) == NULL);
  EXPECT_ERR(err, WEFT_EEXIST);
  char pnd[PATH_MAX];
  snprintf(pnd, sizeof pnd, "%s/x/y", dir);
  EXPECT_TRUE(fs_open(loop, pnd, O_RDONLY, &err) == NULL);
  EXPECT_ERR(err, WEFT_ENOTDIR);
  char buf[8];
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_read(file, buf, sizeof buf, 0, &f), 0); /* write-only */
  fs_wait_int(loop, f, &err);
  EXPECT_ERR(err, WEFT_EBADF);
  EXPECT_EQ(fs_close(loop, file), 0);
  file = fs_open(loop, p, O_RDONLY, &err);
  REQUIRE_EQ(err, 0);
  REQUIRE_EQ(weft_file_write(file, "z", 1, 0, &f), 0); /* read-only */
  fs_wait_int(loop, f, &err);
  EXPECT_ERR(err, WEFT_EBADF);
  EXPECT_EQ(fs_close(loop, file), 0);
  /* a device that is always full */
  file = fs_open(loop, "/dev/full", O_WRONLY, &err);
  if (file != NULL) {
    REQUIRE_EQ(weft_file_write(file, "z", 1, 0, &f), 0);
    fs_wait_int(loop, f, &err);
    EXPECT_ERR(err, WEFT_ENOSPC);
    EXPECT_EQ(fs_close(loop, file), 0);
  }
  struct stat st;
  path_in(p, "missing");
  REQUIRE_EQ(weft_fs_stat(loop, p, &st, &f), 0);
  fs_wait_int(loop, f, &err);
  EXPECT_ERR(err, WEFT_ENOENT);
  char longp[PATH_MAX + 64];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  EXPECT_TRUE(fs_open(loop, longp, O_RDONLY, &err) == NULL);
  EXPECT_ERR(err, WEFT_ENAMETOOLONG);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* Removed while open: still readable and writable through the handle;
 * stat says no links; path operations see nothing. */
static void test_removed_while_open(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "gone");
  int err;
  weft_file_t *file = fs_open(loop, p, O_RDWR | O_CREAT, &err);
  REQUIRE_EQ(err, 0);
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_write(file, "abc", 3, 0, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 3);
  REQUIRE_EQ(unlink(p), 0);
  REQUIRE_EQ(weft_file_write(file, "def", 3, 3, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 3);
  EXPECT_EQ(err, 0);
  char buf[8] = {0};
  REQUIRE_EQ(weft_file_read(file, buf, 6, 0, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 6);
  EXPECT_EQ(memcmp(buf, "abcdef", 6), 0);
  struct stat st;
  REQUIRE_EQ(weft_file_stat(file, &st, &f), 0);
  fs_wait_int(loop, f, &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(st.st_nlink, 0);
  EXPECT_EQ(st.st_size, 6);
  REQUIRE_EQ(weft_fs_stat(loop, p, &st, &f), 0);
  fs_wait_int(loop, f, &err);
  EXPECT_ERR(err, WEFT_ENOENT);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* WEFT_FILE_CURRENT: in call order, each from where the last ended. */
static void test_current_position(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "pos");
  int err;
  weft_file_t *file = fs_open(loop, p, O_RDWR | O_CREAT, &err);
  REQUIRE_EQ(err, 0);
  weft_future_t *w[3];
  REQUIRE_EQ(weft_file_write(file, "abc", 3, WEFT_FILE_CURRENT, &w[0]), 0);
  REQUIRE_EQ(weft_file_write(file, "defg", 4, WEFT_FILE_CURRENT, &w[1]), 0);
  REQUIRE_EQ(weft_file_write(file, "h", 1, WEFT_FILE_CURRENT, &w[2]), 0);
  EXPECT_EQ(fs_wait_int(loop, w[2], &err), 1);
  EXPECT_EQ(fs_wait_int(loop, w[0], &err), 3);
  EXPECT_EQ(fs_wait_int(loop, w[1], &err), 4);
  char all[16] = {0};
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_read(file, all, sizeof all, 0, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 8);
  EXPECT_EQ(memcmp(all, "abcdefgh", 8), 0);
  /* the position is at 8: a read there finds the end */
  char b[3][4];
  REQUIRE_EQ(weft_file_read(file, b[0], 4, WEFT_FILE_CURRENT, &f), 0);
  EXPECT_EQ(fs_wait_int(loop, f, &err), 0);
  EXPECT_EQ(fs_close(loop, file), 0);
  file = fs_open(loop, p, O_RDONLY, &err); /* a new file starts at 0 */
  REQUIRE_EQ(err, 0);
  weft_future_t *r[3];
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_file_read(file, b[i], 3, WEFT_FILE_CURRENT, &r[i]), 0);
  EXPECT_EQ(fs_wait_int(loop, r[1], &err), 3);
  EXPECT_EQ(fs_wait_int(loop, r[0], &err), 3);
  EXPECT_EQ(fs_wait_int(loop, r[2], &err), 2);
  EXPECT_EQ(memcmp(b[0], "abc", 3), 0);
  EXPECT_EQ(memcmp(b[1], "def", 3), 0);
  EXPECT_EQ(memcmp(b[2], "gh", 2), 0);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* 3 MiB written in one call (the ring writes it in pieces), read back: a
 * read asks for at most WEFT_FILE_READ_MAX. */
static void test_large(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "big");
  int err;
  weft_file_t *file = fs_open(loop, p, O_RDWR | O_CREAT, &err);
  REQUIRE_EQ(err, 0);
  size_t n = 3u << 20;
  unsigned char *src = malloc(n), *dst = malloc(n);
  REQUIRE_EQ(src != NULL && dst != NULL, 1);
  for (size_t i = 0; i < n; i++)
    src[i] = (unsigned char)(i * 7 + (i >> 12));
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_write(file, src, n, 0, &f), 0);
  memset(src, 0, 16); /* copied before the call returned */
  EXPECT_EQ(fs_wait_int(loop, f, &err), (long)n);
  for (size_t i = 0; i < 16; i++) /* what the memset took */
    src[i] = (unsigned char)(i * 7);
  size_t got = 0;
  while (got < n) {
    REQUIRE_EQ(weft_file_read(file, dst + got, n - got, (int64_t)got, &f), 0);
    long r = fs_wait_int(loop, f, &err);
    REQUIRE_EQ(err, 0);
    REQUIRE_EQ(r > 0 && (size_t)r <= WEFT_FILE_READ_MAX, 1);
    got += (size_t)r;
  }
  EXPECT_EQ(memcmp(src, dst, n), 0);
  free(src);
  free(dst);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* An open future released untaken closes its file; take's refusals. */
static void test_ownership(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "own");
  int fds = count_fds();
  weft_future_t *f = NULL;
  REQUIRE_EQ(weft_file_open(loop, p, O_RDWR | O_CREAT, 0600, &f), 0);
  weft_file_t *file = NULL;
  EXPECT_ERR(weft_file_take(f, &file), WEFT_EPENDING);
  REQUIRE_EQ(fs_settle(loop, f), 0);
  EXPECT_TRUE(weft_future_value(f) != NULL);
  weft_future_release(f); /* untaken: the file closes */
  weft_future_t *s = NULL;
  REQUIRE_EQ(weft_loop_sleep(loop, 1, &s), 0);
  fs_settle(loop, s);
  weft_future_release(s);
  EXPECT_EQ(count_fds(), fds);
  REQUIRE_EQ(weft_file_open(loop, p, O_RDONLY, 0, &f), 0);
  REQUIRE_EQ(fs_settle(loop, f), 0);
  REQUIRE_EQ(weft_file_take(f, &file), 0);
  weft_file_t *again = NULL;
  EXPECT_ERR(weft_file_take(f, &again), WEFT_EALREADY);
  EXPECT_TRUE(again == NULL);
  weft_future_t *g = NULL;
  REQUIRE_EQ(weft_loop_sleep(loop, 0, &g), 0);
  EXPECT_ERR(weft_file_take(g, &again), WEFT_EINVAL); /* not an open */
  EXPECT_ERR(weft_file_take(NULL, &again), WEFT_EINVAL);
  weft_future_release(g);
  weft_future_release(f); /* taken: the file stays open */
  EXPECT_EQ(count_fds(), fds + 1);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(count_fds(), fds);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

typedef struct other_call {
  weft_loop_t *loop;
  weft_file_t *file;
  int rc[6];
} other_call_t;

static void *call_from_other(void *arg) {
  other_call_t *c = arg;
  weft_future_t *f = NULL;
  char buf[4];
  struct stat st;
  c->rc[0] = weft_file_open(c->loop, "/tmp", O_RDONLY, 0, &f);
  c->rc[1] = weft_file_read(c->file, buf, 4, 0, &f);
  c->rc[2] = weft_file_write(c->file, buf, 4, 0, &f);
  c->rc[3] = weft_file_stat(c->file, &st, &f);
  c->rc[4] = weft_file_close(c->file, NULL);
  c->rc[5] = weft_fs_stat(c->loop, "/tmp", &st, &f);
  return NULL;
}

/* Bad arguments: WEFT_EINVAL, *out untouched; another thread: EPERM. */
static void test_misuse(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "m");
  int err;
  weft_file_t *file = fs_open(loop, p, O_RDWR | O_CREAT, &err);
  REQUIRE_EQ(err, 0);
  weft_future_t *f = (weft_future_t *)&err, *keep = f;
  char buf[4];
  struct stat st;
  EXPECT_ERR(weft_file_open(NULL, p, O_RDONLY, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_open(loop, NULL, O_RDONLY, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_open(loop, p, O_RDONLY, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_file_open(loop, p, O_RDONLY | O_NONBLOCK, 0, &f),
             WEFT_EINVAL);
  EXPECT_ERR(weft_file_read(NULL, buf, 4, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_read(file, NULL, 4, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_read(file, buf, 4, -2, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_read(file, buf, 4, 0, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_file_write(NULL, buf, 4, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_write(file, NULL, 4, 0, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_sync(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_sync(file, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_file_datasync(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_stat(file, NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_fs_stat(loop, NULL, &st, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_fs_stat(NULL, p, &st, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_file_close(NULL, NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_file_fd(NULL), -1);
  EXPECT_TRUE(f == keep);
  other_call_t c = {loop, file, {0}};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, call_from_other, &c), 0);
  pthread_join(th, NULL);
  for (int i = 0; i < 6; i++)
    EXPECT_ERR(c.rc[i], WEFT_EPERM);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

typedef struct fiber_job {
  weft_loop_t *loop;
  const char *path;
  char got[16];
  long n;
  int err;
} fiber_job_t;

/* The fiber style of docs/files.md: each call awaited in order. */
static weft_result_t fiber_body(void *arg) {
  fiber_job_t *j = arg;
  weft_future_t *f;
  weft_file_t *file;
  j->err = weft_file_open(j->loop, j->path, O_RDWR | O_CREAT, 0600, &f);
  if (j->err != 0)
    return weft_err(j->err);
  weft_future_await(f, WEFT_FOREVER);
  j->err = weft_file_take(f, &file);
  weft_future_release(f);
  if (j->err != 0)
    return weft_err(j->err);
  intptr_t w = -1;
  if (weft_file_write(file, "fiber", 5, WEFT_FILE_CURRENT, &f) == 0)
    w = tu_await_int(f);
  if (w == 5 && weft_file_read(file, j->got, sizeof j->got, 0, &f) == 0)
    j->n = (long)tu_await_int(f);
  if (weft_file_close(file, &f) == 0)
    j->err = (int)tu_await_int(f);
  return weft_ok_int(0);
}

static void test_fiber(void) {
  setup();
  weft_loop_t *loop = new_loop();
  char p[PATH_MAX];
  path_in(p, "fiber");
  fiber_job_t j = {loop, p, {0}, 0, 1};
  weft_future_t *done = NULL;
  REQUIRE_EQ(weft_fiber_spawn(weft_loop_executor(loop), fiber_body, &j, NULL,
                              &done),
             0);
  EXPECT_EQ(fs_settle(loop, done), 0);
  weft_future_release(done);
  EXPECT_EQ(j.err, 0);
  EXPECT_EQ(j.n, 5);
  EXPECT_EQ(memcmp(j.got, "fiber", 5), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

static const test_case_t cases[] = {
    {"from a fiber: open, write, read, close awaited", test_fiber},
    {"open, write, read, stat, sync, close", test_round_trip},
    {"kernel errors map to WEFT_ codes", test_errors},
    {"a file removed while open", test_removed_while_open},
    {"reads and writes at the current position", test_current_position},
    {"3 MiB write, reads of at most READ_MAX", test_large},
    {"an untaken open future closes its file; take", test_ownership},
    {"misuse: NULL, another thread", test_misuse},
    {NULL, NULL}};
const test_suite_t suite_fs = {"fs", cases};
