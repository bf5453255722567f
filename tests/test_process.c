/* SPDX-License-Identifier: MIT */
/* tests/test_process.c: child processes: exit codes and signals, stdio
 * streams, environment and cwd, exec failures, closed pipes, children that
 * outlive their handle or the loop, many children, allocation failure. */
#include "testutil.h"

#include "internal.h" /* the fault seam */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static weft_process_options_t sh(const char *script) {
  static char *argv[4];
  argv[0] = "sh";
  argv[1] = "-c";
  argv[2] = (char *)script;
  argv[3] = NULL;
  weft_process_options_t o = {.size = sizeof o,
                              .file = "/bin/sh",
                              .argv = argv};
  return o;
}

/* Wait for the child's end; returns the exit value. */
static int wait_exit(weft_loop_t *loop, weft_process_t *p) {
  weft_future_t *f;
  REQUIRE_EQ(weft_process_exit(p, &f), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_state(f), WEFT_FULFILLED);
  int v = (int)weft_future_int(f);
  weft_future_release(f);
  return v;
}

/* Read a stream to its end into buf (NUL-terminated); returns the length. */
static size_t read_all(weft_loop_t *loop, weft_socket_t *s, char *buf,
                       size_t cap) {
  size_t n = 0;
  for (;;) {
    weft_future_t *f;
    REQUIRE_EQ(weft_socket_read(s, buf + n, cap - 1 - n, &f), 0);
    REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
    int err = weft_future_error(f);
    size_t got = err == 0 ? (size_t)weft_future_int(f) : 0;
    weft_future_release(f);
    if (err != 0) {
      EXPECT_ERR(err, WEFT_EOF);
      break;
    }
    n += got;
    REQUIRE_EQ(n < cap - 1, 1);
  }
  buf[n] = '\0';
  return n;
}

/* The pid is gone: not our child any more (reaped). */
static void expect_reaped(int pid) {
  errno = 0;
  EXPECT_EQ(waitpid(pid, NULL, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

static void test_exit_codes(void) {
  weft_loop_t *loop = new_loop();
  const char *scripts[] = {"exit 0", "exit 42", "exit 255"};
  int want[] = {0, 42, 255};
  for (int i = 0; i < 3; i++) {
    weft_process_options_t o = sh(scripts[i]);
    weft_process_t *p;
    REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
    EXPECT_TRUE(weft_process_pid(p) > 0);
    EXPECT_EQ(wait_exit(loop, p), want[i]);
    weft_process_status_t st;
    REQUIRE_EQ(weft_process_status(p, &st), 0);
    EXPECT_EQ(st.code, want[i]);
    EXPECT_EQ(st.signal, 0);
    /* a second future after the end is fulfilled at once */
    weft_future_t *f;
    REQUIRE_EQ(weft_process_exit(p, &f), 0);
    EXPECT_EQ(weft_future_int(f), want[i]);
    weft_future_release(f);
    EXPECT_ERR(weft_process_kill(p, SIGTERM), WEFT_EALREADY);
    int pid = weft_process_pid(p);
    EXPECT_EQ(weft_process_close(p), 0);
    expect_reaped(pid);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_killed(void) {
  weft_loop_t *loop = new_loop();
  int sigs[] = {SIGTERM, SIGKILL};
  for (int i = 0; i < 2; i++) {
    char *argv[] = {"sleep", "1000", NULL};
    weft_process_options_t o = {.size = sizeof o,
                                .file = "sleep",
                                .argv = argv};
    weft_process_t *p;
    REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
    weft_process_status_t st;
    EXPECT_ERR(weft_process_status(p, &st), WEFT_EPENDING);
    EXPECT_EQ(weft_process_kill(p, 0), 0);
    EXPECT_EQ(weft_process_kill(p, sigs[i]), 0);
    EXPECT_EQ(wait_exit(loop, p), WEFT_PROCESS_SIGNALED + sigs[i]);
    REQUIRE_EQ(weft_process_status(p, &st), 0);
    EXPECT_EQ(st.code, -1);
    EXPECT_EQ(st.signal, sigs[i]);
    EXPECT_EQ(weft_process_close(p), 0);
  }
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_stdout_stderr(void) {
  weft_loop_t *loop = new_loop();
  weft_process_options_t o = sh("echo out; echo err >&2; exit 3");
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  o.stdio[2].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  weft_socket_t *out = weft_process_stdio_take(p, 1);
  weft_socket_t *err = weft_process_stdio_take(p, 2);
  REQUIRE_EQ(out != NULL && err != NULL, 1);
  EXPECT_TRUE(weft_process_stdio_take(p, 1) == NULL); /* taken */
  EXPECT_TRUE(weft_process_stdio_take(p, 0) == NULL); /* inherited */
  EXPECT_TRUE(weft_process_stdio_take(p, 3) == NULL);
  char buf[256];
  read_all(loop, out, buf, sizeof buf);
  EXPECT_STREQ(buf, "out\n");
  read_all(loop, err, buf, sizeof buf);
  EXPECT_STREQ(buf, "err\n");
  EXPECT_EQ(wait_exit(loop, p), 3);
  weft_socket_close(out);
  weft_socket_close(err);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_stdin_echo(void) {
  weft_loop_t *loop = new_loop();
  char *argv[] = {"cat", NULL};
  weft_process_options_t o = {.size = sizeof o, .file = "cat", .argv = argv};
  o.stdio[0].mode = WEFT_STDIO_SOCKET;
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  weft_socket_t *in = weft_process_stdio_take(p, 0);
  weft_socket_t *out = weft_process_stdio_take(p, 1);
  static char msg[100000];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (char)('a' + i % 26);
  weft_future_t *w;
  REQUIRE_EQ(weft_socket_write(in, msg, sizeof msg, &w), 0);
  /* read while the write goes on: cat blocks once its output is full */
  static char got[sizeof msg + 16];
  size_t n = 0;
  bool closed = false;
  while (n < sizeof msg) {
    weft_future_t *r;
    REQUIRE_EQ(weft_socket_read(out, got + n, sizeof got - n, &r), 0);
    REQUIRE_EQ(weft_loop_run_until(loop, r, BOUND_MS), 0);
    REQUIRE_EQ(weft_future_error(r), 0);
    n += (size_t)weft_future_int(r);
    weft_future_release(r);
    if (!closed && weft_future_state(w) == WEFT_FULFILLED) {
      weft_socket_close(in); /* cat sees the end of its input */
      closed = true;
    }
  }
  REQUIRE_EQ(weft_loop_run_until(loop, w, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(w), (long)sizeof msg);
  weft_future_release(w);
  if (!closed)
    weft_socket_close(in);
  char tail[16];
  EXPECT_EQ(read_all(loop, out, tail, sizeof tail), 0);
  EXPECT_EQ(n, sizeof msg);
  EXPECT_EQ(memcmp(got, msg, sizeof msg), 0);
  EXPECT_EQ(wait_exit(loop, p), 0);
  weft_socket_close(out);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_env_cwd(void) {
  weft_loop_t *loop = new_loop();
  weft_process_options_t o = sh("printf '%s:%s' \"$WEFT_X\" \"$(pwd)\"");
  char *envp[] = {"WEFT_X=hello", "PATH=/usr/bin:/bin", NULL};
  o.envp = envp;
  o.cwd = "/tmp";
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  char buf[256];
  read_all(loop, weft_process_stdio_take(p, 1), buf, sizeof buf);
  EXPECT_STREQ(buf, "hello:/tmp");
  EXPECT_EQ(wait_exit(loop, p), 0);
  EXPECT_EQ(weft_process_close(p), 0); /* closes nothing: stdout taken */
  EXPECT_EQ(weft_loop_close(loop), 0); /* closes the taken stream */
}

static void test_stdio_null_and_fd(void) {
  weft_loop_t *loop = new_loop();
  int pfd[2];
  REQUIRE_EQ(pipe2(pfd, O_CLOEXEC), 0);
  weft_process_options_t o = sh("read x; echo \"[$x]\"");
  o.stdio[0].mode = WEFT_STDIO_NULL;
  o.stdio[1].mode = WEFT_STDIO_FD;
  o.stdio[1].fd = pfd[1];
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  close(pfd[1]);
  EXPECT_EQ(wait_exit(loop, p), 0); /* read hits the end of /dev/null */
  char buf[16] = {0};
  EXPECT_EQ(read(pfd[0], buf, sizeof buf), 3);
  EXPECT_STREQ(buf, "[]\n");
  close(pfd[0]);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_exec_failures(void) {
  weft_loop_t *loop = new_loop();
  int fds = count_fds();
  weft_process_options_t o = {.size = sizeof o, .file = "/no/such/prog"};
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p = (weft_process_t *)&o; /* untouched on error */
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_ENOENT);
  EXPECT_TRUE(p == (weft_process_t *)&o);
  o.file = "no-such-program-in-path-weft";
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_ENOENT);
  o.file = "/etc/passwd"; /* not executable */
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_EACCES);
  o.file = "/bin/sh";
  o.cwd = "/no/such/dir";
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_ENOENT);
  EXPECT_EQ(count_fds(), fds);
  /* no child left: nothing to wait for */
  errno = 0;
  EXPECT_EQ(waitpid(-1, NULL, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_misuse(void) {
  weft_loop_t *loop = new_loop();
  weft_process_options_t o = sh("exit 0");
  weft_process_t *p = NULL;
  EXPECT_ERR(weft_process_spawn(NULL, &o, &p), WEFT_EINVAL);
  EXPECT_ERR(weft_process_spawn(loop, NULL, &p), WEFT_EINVAL);
  EXPECT_ERR(weft_process_spawn(loop, &o, NULL), WEFT_EINVAL);
  o.size = 8;
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_EINVAL);
  o = sh("exit 0");
  o.reserved[0] = &o;
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_ENOTSUP);
  o = sh("exit 0");
  o.stdio[0].mode = 9;
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_EINVAL);
  o = sh("exit 0");
  o.stdio[0].mode = WEFT_STDIO_FD;
  o.stdio[0].fd = -1;
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_EINVAL);
  o = sh("exit 0");
  o.file = "";
  EXPECT_ERR(weft_process_spawn(loop, &o, &p), WEFT_EINVAL);
  EXPECT_TRUE(p == NULL);
  EXPECT_ERR(weft_process_exit(NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_process_kill(NULL, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_process_close(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_process_pid(NULL), -1);
  o = sh("exit 0");
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  EXPECT_ERR(weft_process_kill(p, -1), WEFT_EINVAL);
  EXPECT_ERR(weft_process_kill(p, 100000), WEFT_EINVAL);
  EXPECT_EQ(wait_exit(loop, p), 0);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The child closes its stdin while we write a lot: the write fails with
 * EPIPE (or a reset), and no SIGPIPE ends the test. */
static void test_closed_stdin(void) {
  weft_loop_t *loop = new_loop();
  weft_process_options_t o = sh("exec 0<&-; exit 7");
  o.stdio[0].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  EXPECT_EQ(wait_exit(loop, p), 7);
  weft_socket_t *in = weft_process_stdio_take(p, 0);
  static char big[1 << 20];
  weft_future_t *w;
  REQUIRE_EQ(weft_socket_write(in, big, sizeof big, &w), 0);
  REQUIRE_EQ(weft_loop_run_until(loop, w, BOUND_MS), 0);
  int err = weft_future_error(w);
  EXPECT_TRUE(err == WEFT_EPIPE || err == WEFT_ECONNRESET);
  weft_future_release(w);
  weft_socket_close(in);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The handle is closed while the child runs: the loop reaps it later. The
 * child waits for a line on a pipe of ours, so we choose when it ends. */
static void test_outlives_handle(void) {
  weft_loop_t *loop = new_loop();
  int pfd[2];
  REQUIRE_EQ(pipe2(pfd, O_CLOEXEC), 0);
  weft_process_options_t o = sh("read x; exit 5");
  o.stdio[0].mode = WEFT_STDIO_FD;
  o.stdio[0].fd = pfd[0];
  o.stdio[1].mode = WEFT_STDIO_SOCKET; /* closed by weft_process_close */
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  close(pfd[0]);
  int pid = weft_process_pid(p);
  weft_future_t *f;
  REQUIRE_EQ(weft_process_exit(p, &f), 0);
  EXPECT_EQ(weft_process_close(p), 0);
  EXPECT_EQ(waitpid(pid, NULL, WNOHANG), 0); /* running, still ours */
  REQUIRE_EQ(write(pfd[1], "\n", 1), 1);
  close(pfd[1]);
  /* the future made before the close still settles */
  REQUIRE_EQ(weft_loop_run_until(loop, f, BOUND_MS), 0);
  EXPECT_EQ(weft_future_int(f), 5);
  weft_future_release(f);
  expect_reaped(pid);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* The loop closes with children running (one handle open, one closed):
 * both are killed and reaped; the open handle is then closed. */
static void test_loop_close_running(void) {
  weft_loop_t *loop = new_loop();
  char *argv[] = {"sleep", "1000", NULL};
  weft_process_options_t o = {.size = sizeof o, .file = "sleep", .argv = argv};
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  weft_process_t *a, *b;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &a), 0);
  REQUIRE_EQ(weft_process_spawn(loop, &o, &b), 0);
  int pa = weft_process_pid(a), pb = weft_process_pid(b);
  weft_future_t *fa;
  REQUIRE_EQ(weft_process_exit(a, &fa), 0);
  EXPECT_EQ(weft_process_close(b), 0);
  EXPECT_EQ(weft_loop_close(loop), 0);
  expect_reaped(pa);
  expect_reaped(pb);
  EXPECT_EQ(weft_future_int(fa), WEFT_PROCESS_SIGNALED + SIGKILL);
  weft_future_release(fa);
  weft_process_status_t st;
  REQUIRE_EQ(weft_process_status(a, &st), 0);
  EXPECT_EQ(st.signal, SIGKILL);
  EXPECT_TRUE(weft_process_stdio_take(a, 1) == NULL);
  EXPECT_ERR(weft_process_kill(a, SIGTERM), WEFT_EALREADY);
  EXPECT_EQ(weft_process_close(a), 0);
}

/* A reaped child whose handle stays open across the loop's close (its
 * stream not taken: the close ends it). */
static void test_loop_close_reaped(void) {
  weft_loop_t *loop = new_loop();
  weft_process_options_t o = sh("exit 9");
  o.stdio[1].mode = WEFT_STDIO_SOCKET;
  weft_process_t *p;
  REQUIRE_EQ(weft_process_spawn(loop, &o, &p), 0);
  EXPECT_EQ(wait_exit(loop, p), 9);
  /* an open handle holds no timer: the loop's wait stays unbounded */
  weft_loop_stats_t ls;
  REQUIRE_EQ(weft_loop_stats(loop, &ls), 0);
  EXPECT_EQ(ls.timers_active, 0u);
  EXPECT_EQ(weft_loop_close(loop), 0);
  weft_process_status_t st;
  REQUIRE_EQ(weft_process_status(p, &st), 0);
  EXPECT_EQ(st.code, 9);
  EXPECT_EQ(weft_process_close(p), 0);
}

static void test_many(void) {
  weft_loop_t *loop = new_loop();
  enum { N = 200, AT_ONCE = 20 };
  int ended = 0, sum = 0;
  for (int round = 0; round < N / AT_ONCE; round++) {
    weft_process_t *p[AT_ONCE];
    weft_future_t *f[AT_ONCE];
    for (int i = 0; i < AT_ONCE; i++) {
      char script[32];
      snprintf(script, sizeof script, "exit %d", i);
      weft_process_options_t o = sh(script);
      REQUIRE_EQ(weft_process_spawn(loop, &o, &p[i]), 0);
      REQUIRE_EQ(weft_process_exit(p[i], &f[i]), 0);
      if (i % 2)
        EXPECT_EQ(weft_process_close(p[i]), 0); /* the loop reaps it */
    }
    for (int i = 0; i < AT_ONCE; i++) {
      REQUIRE_EQ(weft_loop_run_until(loop, f[i], BOUND_MS), 0);
      ended += weft_future_state(f[i]) == WEFT_FULFILLED;
      sum += (int)weft_future_int(f[i]);
      weft_future_release(f[i]);
      if (i % 2 == 0)
        EXPECT_EQ(weft_process_close(p[i]), 0);
    }
  }
  EXPECT_EQ(ended, N);
  EXPECT_EQ(sum, N / AT_ONCE * (AT_ONCE * (AT_ONCE - 1) / 2));
  errno = 0;
  EXPECT_EQ(waitpid(-1, NULL, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_EQ(weft_loop_close(loop), 0);
}

/* Every allocation of a spawn, its streams and an exit future failing in
 * turn: an error, and no fd, child or memory left. */
/* Every system call and allocation of a spawn failing in turn (the n-th
 * fault seam reached): the spawn's error, or a child that runs as usual;
 * never a leaked descriptor or a child left unreaped. */
static void test_calls_failing(void) {
  weft_loop_t *loop = new_loop();
  int fds = count_fds();
  int failed = 0;
  bool done = false;
  for (unsigned long n = 1; n < 200 && !done; n++) {
    weft_process_options_t o = sh("exit 5");
    for (int i = 0; i < 3; i++)
      o.stdio[i].mode = WEFT_STDIO_SOCKET;
    weft_process_t *p = NULL;
    weft__fault_arm(NULL, n, EMFILE, false);
    int rc = weft_process_spawn(loop, &o, &p);
    done = weft__fault_fired() == 0;
    weft__fault_disarm();
    weft__fault_record(false);
    if (rc != 0) {
      EXPECT_TRUE(rc == WEFT_EMFILE || rc == WEFT_ENOMEM);
      EXPECT_EQ(p == NULL, 1);
      failed++;
    } else {
      EXPECT_EQ(wait_exit(loop, p), 5);
      EXPECT_EQ(weft_process_close(p), 0);
    }
    weft_loop_run(loop, WEFT_RUN_NOWAIT); /* sockets closed go */
    errno = 0;
    EXPECT_EQ(waitpid(-1, NULL, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
    EXPECT_EQ(count_fds(), fds);
  }
  EXPECT_TRUE(done);
  EXPECT_TRUE(failed >= 6); /* 3 socketpairs, spawn, pidfd_open, watch */
  EXPECT_EQ(weft_loop_close(loop), 0);
}

static void test_no_memory(void) {
  int fds = count_fds();
  bool done = false;
  for (long n = 1; n < 200 && !done; n++) {
    tu_alloc_install(n);
    weft_loop_t *loop;
    int rc = weft_loop_create(NULL, &loop);
    if (rc != 0) {
      EXPECT_ERR(rc, WEFT_ENOMEM);
      tu_alloc_restore();
      continue;
    }
    weft_process_options_t o = sh("exit 4");
    o.stdio[0].mode = WEFT_STDIO_SOCKET;
    o.stdio[1].mode = WEFT_STDIO_SOCKET;
    weft_process_t *p;
    rc = weft_process_spawn(loop, &o, &p);
    if (rc == 0) {
      weft_future_t *f;
      rc = weft_process_exit(p, &f);
      if (rc == 0) {
        rc = weft_loop_run_until(loop, f, BOUND_MS);
        if (rc == 0) {
          EXPECT_EQ(weft_future_int(f), 4);
          done = tu_alloc_count() < n;
        } else {
          EXPECT_ERR(rc, WEFT_ENOMEM);
        }
        weft_future_release(f);
      } else {
        EXPECT_ERR(rc, WEFT_ENOMEM);
      }
      EXPECT_EQ(weft_process_close(p), 0);
    } else {
      EXPECT_ERR(rc, WEFT_ENOMEM);
    }
    EXPECT_EQ(weft_loop_close(loop), 0);
    weft_allocator_trim();
    EXPECT_EQ(tu_alloc_live(), 0);
    tu_alloc_restore();
    errno = 0;
    EXPECT_EQ(waitpid(-1, NULL, WNOHANG), -1);
    EXPECT_EQ(count_fds(), fds);
  }
  EXPECT_TRUE(done);
}

static const test_case_t cases[] = {
    {"exit codes 0, 42, 255", test_exit_codes},
    {"killed by SIGTERM and SIGKILL", test_killed},
    {"stdout and stderr read to the end", test_stdout_stderr},
    {"stdin written then closed, cat echoes it", test_stdin_echo},
    {"environment and cwd reach the child", test_env_cwd},
    {"stdio from /dev/null and a caller's fd", test_stdio_null_and_fd},
    {"exec failures are spawn errors", test_exec_failures},
    {"misuse", test_misuse},
    {"a child that closed stdin: EPIPE, no SIGPIPE", test_closed_stdin},
    {"a child outlives its handle and is reaped", test_outlives_handle},
    {"loop close kills and reaps running children", test_loop_close_running},
    {"a reaped child's handle outlives the loop", test_loop_close_reaped},
    {"many children in a row", test_many},
    {"every system call failing", test_calls_failing},
    {"every allocation failing", test_no_memory},
    {NULL, NULL}};
const test_suite_t suite_process = {"process", cases};
