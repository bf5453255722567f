/* SPDX-License-Identifier: MIT */
/* tests/test_fs_cancel.c: cancelling file operations at every stage (in
 * flight, queued behind the position, from another thread while the
 * result is copied), closing a file with operations pending, the loop's
 * close, a loop given a pool's blocking executor, allocation failures.
 * Runs on both paths, like the fs suite (fs_cancel.epoll). */
#include "fs_util.h"

#include <limits.h>

static char dir[64];

static weft_file_t *make_file(weft_loop_t *loop, const char *name,
                              size_t size) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0)
    return NULL;
  char block[4096];
  for (size_t i = 0; i < sizeof block; i++)
    block[i] = (char)('a' + i % 26);
  for (size_t done = 0; done < size; done += sizeof block)
    if (write(fd, block, sizeof block) != (ssize_t)sizeof block)
      break;
  close(fd);
  int err;
  return fs_open(loop, p, O_RDWR, &err);
}

static bool all_bytes(const unsigned char *b, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; i++)
    if (b[i] != v)
      return false;
  return true;
}

/* Cancel right after the start, on the loop thread: settled at once, and
 * the buffer is never written, also once the request has ended (the
 * file's close waits for that). */
static void test_cancel_in_flight(void) {
  fs_tmpdir(dir);
  weft_loop_t *loop = new_loop();
  weft_file_t *file = make_file(loop, "c", 1 << 16);
  REQUIRE_EQ(file != NULL, 1);
  enum { N = 64 };
  static unsigned char bufs[N][4096];
  memset(bufs, 0xEE, sizeof bufs);
  weft_future_t *f[N];
  for (int i = 0; i < N; i++) {
    REQUIRE_EQ(weft_file_read(file, bufs[i], 4096, (int64_t)i * 1024, &f[i]),
               0);
    EXPECT_EQ(weft_future_cancel(f[i]), 0);
    EXPECT_EQ(weft_future_state(f[i]), WEFT_CANCELLED);
  }
  EXPECT_EQ(fs_close(loop, file), 0); /* every request has ended */
  for (int i = 0; i < N; i++) {
    EXPECT_TRUE(all_bytes(bufs[i], 4096, 0xEE));
    weft_future_release(f[i]);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* Queued behind the position: a cancelled write never starts; the next
 * one starts where the first ended. */
static void test_cancel_queued_position(void) {
  fs_tmpdir(dir);
  weft_loop_t *loop = new_loop();
  weft_file_t *file = make_file(loop, "q", 0);
  REQUIRE_EQ(file != NULL, 1);
  weft_future_t *a, *b, *c;
  REQUIRE_EQ(weft_file_write(file, "AAA", 3, WEFT_FILE_CURRENT, &a), 0);
  REQUIRE_EQ(weft_file_write(file, "BBB", 3, WEFT_FILE_CURRENT, &b), 0);
  REQUIRE_EQ(weft_file_write(file, "CCC", 3, WEFT_FILE_CURRENT, &c), 0);
  EXPECT_EQ(weft_future_cancel(b), 0);
  int err;
  EXPECT_EQ(fs_wait_int(loop, c, &err), 3);
  EXPECT_EQ(fs_wait_int(loop, a, &err), 3);
  weft_future_release(b);
  char got[16] = {0};
  weft_future_t *r;
  REQUIRE_EQ(weft_file_read(file, got, sizeof got, 0, &r), 0);
  EXPECT_EQ(fs_wait_int(loop, r, &err), 6);
  EXPECT_EQ(memcmp(got, "AAACCC", 6), 0);
  EXPECT_EQ(fs_close(loop, file), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

enum { RACE_ROUNDS = 300 };
static unsigned char race_bufs[RACE_ROUNDS][4096];

typedef struct race {
  weft_future_t *_Atomic f;
  _Atomic long round;
  _Atomic long acked;
  int cancelled, already;
} race_t;

static void *canceller(void *arg) {
  race_t *r = arg;
  for (long i = 1; i <= RACE_ROUNDS; i++) {
    tu_spin_until(&r->round, i);
    int rc = weft_future_cancel(atomic_load(&r->f));
    /* From here on the buffer is ours again, whatever the loop does. */
    memset(race_bufs[i - 1], 0xAA, 4096);
    if (rc == 0)
      r->cancelled++;
    else
      r->already++;
    atomic_store(&r->acked, i);
  }
  return NULL;
}

/* A cancel from another thread races the copy into the buffer: once the
 * cancel returned nothing writes the buffer. The test overwrites each
 * round's buffer then, and finds its own bytes in every one once the
 * file's close has seen every request end. */
static void test_cancel_other_thread(void) {
  fs_tmpdir(dir);
  weft_loop_t *loop = new_loop();
  weft_file_t *file = make_file(loop, "t", 1 << 16);
  REQUIRE_EQ(file != NULL, 1);
  race_t r = {NULL, 0, 0, 0, 0};
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, canceller, &r), 0);
  weft_future_t *fs[RACE_ROUNDS];
  for (long i = 1; i <= RACE_ROUNDS; i++) {
    weft_future_t *f;
    REQUIRE_EQ(
        weft_file_read(file, race_bufs[i - 1], 4096, (i % 16) * 4096, &f), 0);
    fs[i - 1] = f;
    atomic_store(&r.f, f);
    atomic_store(&r.round, i);
    (void)weft_loop_run_until(loop, f, BOUND_MS);
    while (atomic_load(&r.acked) < i)
      weft_loop_run(loop, WEFT_RUN_NOWAIT);
  }
  pthread_join(th, NULL);
  EXPECT_EQ(fs_close(loop, file), 0);
  int bad = 0;
  for (int i = 0; i < RACE_ROUNDS; i++) {
    bad += !all_bytes(race_bufs[i], 4096, 0xAA);
    weft_future_release(fs[i]);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(r.cancelled + r.already, RACE_ROUNDS);
  EXPECT_EQ(weft_loop_close(loop), 0);
  fs_rmdir(dir);
}

/* Closing a file cancels what is pending; the close future settles once
 * the fd is closed; opens, stats and syncs cancelled at every stage leave
 * no fd behind. */
static void test_close_and_cancel_stages(void) {
  fs_tmpdir(dir);
  weft_pool_t *pool;
  weft_loop_t *loop = fs_pool_loop(&pool);
  int fds = count_fds();
  weft_file_t *file = make_file(loop, "s", 1 << 14);
  REQUIRE_EQ(file != NULL, 1);
  char buf[64];
  struct stat st;
  weft_future_t *r, *w, *s, *st_f, *cl;
  REQUIRE_EQ(weft_file_read(file, buf, sizeof buf, 0, &r), 0);
  REQUIRE_EQ(weft_file_write(file, "x", 1, WEFT_FILE_CURRENT, &w), 0);
  REQUIRE_EQ(weft_file_sync(file, &s), 0);
  REQUIRE_EQ(weft_file_stat(file, &st, &st_f), 0);
  REQUIRE_EQ(weft_file_close(file, &cl), 0);
  EXPECT_EQ(weft_future_state(r), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(w), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(s), WEFT_CANCELLED);
  EXPECT_EQ(weft_future_state(st_f), WEFT_CANCELLED);
  EXPECT_EQ(fs_settle(loop, cl), 0);
  EXPECT_EQ(count_fds(), fds);
  weft_future_release(r);
  weft_future_release(w);
  weft_future_release(s);
  weft_future_release(st_f);
  weft_future_release(cl);
  /* cancelled opens: before the result, and the close's future too */
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/s", dir);
  for (int i = 0; i < 50; i++) {
    weft_future_t *o;
    REQUIRE_EQ(weft_file_open(loop, p, O_RDONLY, 0, &o), 0);
    EXPECT_EQ(weft_future_cancel(o), 0);
    weft_future_release(o);
    REQUIRE_EQ(weft_fs_stat(loop, p, &st, &o), 0);
    EXPECT_EQ(weft_future_cancel(o), 0);
    weft_future_release(o);
  }
  int err;
  file = fs_open(loop, p, O_RDONLY, &err);
  REQUIRE_EQ(err, 0);
  REQUIRE_EQ(weft_file_close(file, &cl), 0);
  (void)weft_future_cancel(cl); /* the fd is closed all the same */
  weft_future_release(cl);
  /* the cancelled opens have all landed once a later open did on the
   * blocking path (FIFO); on the ring, drive the loop a while */
  for (int i = 0; i < 20 && count_fds() != fds; i++) {
    weft_future_t *z;
    REQUIRE_EQ(weft_loop_sleep(loop, 5, &z), 0);
    fs_settle(loop, z);
    weft_future_release(z);
  }
  EXPECT_EQ(count_fds(), fds);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  fs_rmdir(dir);
}

typedef struct seen {
  int runs, cancelled;
  weft_file_t *file;
  int close_rc;
} seen_t;

static void on_settled(void *arg, weft_future_t *f) {
  seen_t *s = arg;
  s->runs++;
  s->cancelled += weft_future_error(f) == WEFT_ECANCELED;
  if (s->file != NULL) { /* a continuation close runs may name the file */
    s->close_rc = weft_file_close(s->file, NULL);
    s->file = NULL;
  }
}

/* The loop's close with operations pending: each future is cancelled and
 * its continuation runs before close returns; files close; no fd left. */
static void test_loop_close_pending(void) {
  fs_tmpdir(dir);
  int fds = count_fds();
  weft_pool_t *pool;
  weft_loop_t *loop = fs_pool_loop(&pool);
  weft_file_t *file = make_file(loop, "l", 1 << 14);
  REQUIRE_EQ(file != NULL, 1);
  static char buf[8][512];
  seen_t seen = {0, 0, file, 1};
  for (int i = 0; i < 8; i++) {
    weft_future_t *f;
    REQUIRE_EQ(weft_file_read(file, buf[i], 512, WEFT_FILE_CURRENT, &f), 0);
    REQUIRE_EQ(weft_future_watch(f, weft_loop_executor(loop), on_settled, &seen,
                                 NULL),
               0);
  }
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/l", dir);
  weft_future_t *o, *d;
  REQUIRE_EQ(weft_file_open(loop, p, O_RDONLY, 0, &o), 0);
  struct stat st;
  REQUIRE_EQ(weft_fs_stat(loop, p, &st, &d), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  EXPECT_EQ(seen.runs, 8);
  EXPECT_TRUE(seen.cancelled >= 7); /* the first may have landed */
  EXPECT_EQ(seen.close_rc, 0);
  EXPECT_TRUE(weft_future_state(o) != WEFT_PENDING);
  EXPECT_TRUE(weft_future_state(d) != WEFT_PENDING);
  weft_future_release(o);
  weft_future_release(d);
  /* the requests close did not wait for have ended once the pool's
   * shutdown joined its threads; the last of them closed the fd */
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL), 0);
  EXPECT_EQ(count_fds(), fds);
  fs_rmdir(dir);
}

/* A loop given a pool's blocking executor runs its blocking file work
 * there (on the epoll path; on the ring, nothing blocks). */
static void test_pool_blocking_executor(void) {
  fs_tmpdir(dir);
  weft_pool_t *pool = NULL;
  weft_loop_t *loop = fs_pool_loop(&pool);
  weft_file_t *file = make_file(loop, "p", 1 << 14);
  REQUIRE_EQ(file != NULL, 1);
  int err;
  long total = 0;
  for (int i = 0; i < 100; i++) {
    char b[100];
    weft_future_t *f;
    REQUIRE_EQ(weft_file_read(file, b, sizeof b, i * 100, &f), 0);
    total += fs_wait_int(loop, f, &err);
    EXPECT_EQ(err, 0);
  }
  EXPECT_EQ(total, 100 * 100);
  EXPECT_EQ(fs_close(loop, file), 0);
  weft_loop_stats_t ls;
  weft_loop_stats(loop, &ls);
  bool ring = strcmp(ls.backend, "io_uring") == 0;
  EXPECT_EQ(weft_loop_close(loop), 0);
  weft_pool_stats_t ps;
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, &ps), 0);
  if (!ring) /* open, 100 reads, close */
    EXPECT_TRUE(ps.blocking_run >= 102);
  fs_rmdir(dir);
}

/* One run of open, read, write, stat and close on a new loop under the
 * counting allocator: each call returns WEFT_ENOMEM (nothing started) or
 * works. Counts the ENOMEMs into *enomem. */
static void alloc_run(const char *p, int *enomem) {
  weft_loop_t *loop = NULL;
  int rc = weft_loop_create(NULL, &loop);
  if (rc != 0) {
    EXPECT_ERR(rc, WEFT_ENOMEM);
    return;
  }
  weft_future_t *f = NULL;
  rc = weft_file_open(loop, p, O_RDWR, 0, &f);
  weft_file_t *file = NULL;
  if (rc == 0 && (rc = fs_settle(loop, f)) == 0)
    rc = weft_file_take(f, &file);
  if (f != NULL)
    weft_future_release(f);
  EXPECT_TRUE(rc == 0 || rc == WEFT_ENOMEM);
  *enomem += rc == WEFT_ENOMEM;
  if (file != NULL) {
    char b[10];
    struct stat st;
    weft_future_t *g[3] = {NULL, NULL, NULL};
    int r[3];
    r[0] = weft_file_read(file, b, 10, 0, &g[0]);
    r[1] = weft_file_write(file, "ab", 2, 0, &g[1]);
    r[2] = weft_file_stat(file, &st, &g[2]);
    for (int i = 0; i < 3; i++) {
      EXPECT_TRUE(r[i] == 0 || r[i] == WEFT_ENOMEM);
      *enomem += r[i] == WEFT_ENOMEM;
      if (r[i] == 0) {
        fs_settle(loop, g[i]);
        weft_future_release(g[i]);
      }
    }
    rc = fs_close(loop, file); /* (run_until itself may lack memory) */
    EXPECT_TRUE(rc == 0 || rc == WEFT_ENOMEM);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Every allocation of a loop's life with files fails in turn: ENOMEM
 * comes back, nothing leaks (the counting allocator's live blocks are
 * back to none), no fd stays open. */
static void test_alloc_failures(void) {
  fs_tmpdir(dir);
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/f", dir);
  int fd = open(p, O_RDWR | O_CREAT, 0600);
  REQUIRE_EQ(fd >= 0, 1);
  REQUIRE_EQ(write(fd, "0123456789", 10), 10);
  close(fd);
  int fds = count_fds();
  int enomem = 0;
  tu_alloc_install(0);
  alloc_run(p, &enomem);
  long total = tu_alloc_count();
  tu_alloc_restore();
  EXPECT_EQ(enomem, 0);
  for (long k = 1; k <= total; k++) {
    tu_alloc_install(k);
    alloc_run(p, &enomem);
    /* A blocking thread may still end a request the loop's close did not
     * wait for (a close whose run_until lacked memory): it frees its op
     * soon, through this allocator. */
    int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
    while (tu_alloc_live() != 0 && weft_clock_now_ns() < end)
      sched_yield();
    long live = tu_alloc_live();
    tu_alloc_restore();
    if (live != 0)
      fprintf(stderr, "allocation %ld of %ld failed: %ld blocks left\n", k,
              total, live);
    EXPECT_EQ(live, 0);
    EXPECT_EQ(count_fds(), fds);
  }
  EXPECT_TRUE(enomem > 0);
  fs_rmdir(dir);
}

static const test_case_t cases[] = {
    {"cancel in flight: at once, buffer untouched", test_cancel_in_flight},
    {"cancel queued at the position: never starts",
     test_cancel_queued_position},
    {"cancel from another thread races the copy", test_cancel_other_thread},
    {"close cancels pending; cancelled opens leave no fd",
     test_close_and_cancel_stages},
    {"loop close with operations pending", test_loop_close_pending},
    {"a pool's blocking executor runs the blocking work",
     test_pool_blocking_executor},
    {"allocation failures: ENOMEM, no leak", test_alloc_failures},
    {NULL, NULL}};
const test_suite_t suite_fs_cancel = {"fs_cancel", cases};
