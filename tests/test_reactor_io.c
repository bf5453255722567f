/* SPDX-License-Identifier: MIT */
/* tests/test_reactor_io.c: fd watchers: readable and writable, stop inside
 * a callback, modify, start/stop pairs, bad input. */
#include "loop_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fd watchers ---- */
static void on_readable(weft_io_t *io, unsigned events, int status, void *arg) {
  int *got = arg;
  if (status != 0)
    return;
  if (events & WEFT_READABLE) {
    char c;
    if (read(io->priv_fd, &c, 1) == 1)
      *got = c;
    weft_io_stop(io); /* stop inside its own callback */
  }
}

static void *write_pipe(void *arg) {
  int fd = (int)(intptr_t)arg;
  char c = 'x';
  return (void *)(intptr_t)write(fd, &c, 1);
}

static void on_writable(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)io;
  if (status == 0 && (events & WEFT_WRITABLE))
    (*(int *)arg)++;
}

static void test_fd_watchers(void) {
  weft_loop_t *loop = new_loop();
  int fds[2];
  REQUIRE_EQ(pipe(fds), 0);
  weft_io_t rd, wr, dup;
  memset(&rd, 0, sizeof rd);
  int got = 0, writable = 0;
  REQUIRE_EQ(weft_io_start(loop, &rd, fds[0], WEFT_READABLE, on_readable, &got),
             0);
  EXPECT_ERR(weft_io_start(loop, &dup, fds[0], WEFT_READABLE, on_readable,
                           &got),
             WEFT_EEXIST);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_NOWAIT), 0);
  EXPECT_EQ(got, 0); /* nothing written yet */
  pthread_t th;
  REQUIRE_EQ(pthread_create(&th, NULL, write_pipe, (void *)(intptr_t)fds[1]),
             0);
  int64_t end = weft_clock_now_ns() + (int64_t)BOUND_MS * 1000000;
  while (got == 0 && weft_clock_now_ns() < end)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  pthread_join(th, NULL);
  EXPECT_EQ(got, 'x');
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 0);
  EXPECT_EQ(weft_io_stop(&rd), 0); /* already stopped: no-op */
  REQUIRE_EQ(weft_io_start(loop, &wr, fds[1], WEFT_READABLE, on_writable,
                           &writable),
             0);
  EXPECT_EQ(weft_io_modify(&wr, WEFT_WRITABLE), 0);
  REQUIRE_EQ(weft_loop_run(loop, WEFT_RUN_ONCE), 0);
  EXPECT_EQ(writable, 1);
  EXPECT_ERR(weft_io_modify(&wr, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_io_modify(&wr, 8), WEFT_EINVAL);
  EXPECT_EQ(weft_io_stop(&wr), 0);
  EXPECT_ERR(weft_io_start(loop, &wr, -1, WEFT_READABLE, on_writable, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(loop, &wr, fds[1], 0, on_writable, NULL),
             WEFT_EINVAL);
  EXPECT_ERR(weft_io_start(NULL, &wr, fds[1], 1, on_writable, NULL),
             WEFT_EINVAL);
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void pair_io(weft_io_t *io, unsigned events, int status, void *arg) {
  if (status != 0 || !(events & WEFT_READABLE))
    return;
  char c;
  if (read(io->priv_fd, &c, 1) == 1)
    (*(int *)arg)++;
}

/* fd watchers: starting an active watcher again (another fd or the same)
 * is refused and leaves it watching its fd; stop twice, stop never
 * started and start after stop work. */
static void test_io_start_stop_pairs(void) {
  weft_loop_t *loop = new_loop();
  int p1[2], p2[2];
  REQUIRE_EQ(pipe(p1), 0);
  REQUIRE_EQ(pipe(p2), 0);
  weft_io_t io;
  memset(&io, 0, sizeof io);
  EXPECT_EQ(weft_io_stop(&io), 0); /* never started: a no-op */
  int n = 0;
  REQUIRE_EQ(weft_io_start(loop, &io, p1[0], WEFT_READABLE, pair_io, &n), 0);
  int r2 = weft_io_start(loop, &io, p2[0], WEFT_READABLE, pair_io, &n);
  int r1 = weft_io_start(loop, &io, p1[0], WEFT_READABLE, pair_io, &n);
  EXPECT_ERR(r2, WEFT_EINVAL);
  EXPECT_ERR(r1, WEFT_EINVAL);
  weft_loop_stats_t st;
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 1);
  EXPECT_EQ(io.priv_fd, p1[0]);
  if (r2 == 0) { /* the first fd stays registered for a relinked io */
    close(p1[0]);
    close(p1[1]);
    close(p2[0]);
    close(p2[1]);
    EXPECT_EQ(weft_loop_close(loop), 0);
    return;
  }
  REQUIRE_EQ(write(p1[1], "x", 1), 1);
  run_until_n(loop, &n, 1);
  EXPECT_EQ(weft_io_stop(&io), 0);
  EXPECT_EQ(weft_io_stop(&io), 0); /* stop twice */
  weft_loop_stats(loop, &st);
  EXPECT_EQ(st.watchers_active, 0);
  /* start after stop, on the other fd */
  REQUIRE_EQ(weft_io_start(loop, &io, p2[0], WEFT_READABLE, pair_io, &n), 0);
  REQUIRE_EQ(write(p2[1], "y", 1), 1);
  run_until_n(loop, &n, 2);
  EXPECT_EQ(weft_io_stop(&io), 0);
  close(p1[0]);
  close(p1[1]);
  close(p2[0]);
  close(p2[1]);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static const test_case_t cases[] = {
    {"fd watchers", test_fd_watchers},
    {"fd watchers: start twice refused, stop twice, restart",
     test_io_start_stop_pairs},
    {NULL, NULL}};

const test_suite_t suite_reactor_io = {"reactor_io", cases};
