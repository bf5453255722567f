/* SPDX-License-Identifier: MIT */
/* loop/proc/process.c: child processes on a loop: posix_spawn (exec errors
 * come back as its return value), the exit status through a pidfd watched
 * by the loop, kill through the pidfd, and reaping on every path. */
#define _GNU_SOURCE
#include "../internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <weft/net.h>
#include <weft/process.h>

extern char **environ;

typedef struct exit_wait {
  weft_promise_t *promise;
  struct exit_wait *next;
} exit_wait_t;

/* A process lives until both its handle was closed and the loop is done
 * with it (the child reaped, or the loop closed). `busy` counts the
 * callbacks of ours on the stack, which may settle futures whose inline
 * continuations close the handle: the free then waits for them. */
struct weft_process {
  weft_loop_t *loop;
  weft_io_t io;    /* the pidfd, until reaped */
  weft__lop_t lop; /* on the loop's list: hears of its close */
  exit_wait_t *waiters;
  weft_socket_t *stdio[3];
  int pidfd;
  pid_t pid;
  weft_process_status_t status;
  unsigned busy;
  bool reaped, closed, loop_gone;
};

static int value_of(const weft_process_status_t *st) {
  return st->signal != 0 ? WEFT_PROCESS_SIGNALED + st->signal : st->code;
}

static void settle_waiters(weft_process_t *p) {
  int v = value_of(&p->status);
  while (p->waiters != NULL) {
    exit_wait_t *w = p->waiters;
    p->waiters = w->next;
    (void)weft_promise_fulfil_int(w->promise, v); /* lost to a cancel: fine */
    (void)weft_promise_release(w->promise);
    weft__free(w, sizeof *w);
  }
}

/* Reap the child if it has ended (block: wait until it does). True once
 * reaped; an ECHILD (someone else's waitpid(-1) took it) counts as reaped,
 * with code -1. */
static bool reap(weft_process_t *p, bool block) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc;
  do
    rc = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si,
                WEXITED | (block ? 0 : WNOHANG));
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != ECHILD)
    return false;
  if (rc == 0 && si.si_pid == 0)
    return false; /* not yet */
  if (rc < 0)
    p->status = (weft_process_status_t){-1, 0};
  else if (si.si_code == CLD_EXITED)
    p->status = (weft_process_status_t){si.si_status, 0};
  else
    p->status = (weft_process_status_t){-1, si.si_status};
  p->reaped = true;
  (void)weft_io_stop(&p->io);
  close(p->pidfd);
  p->pidfd = -1;
  settle_waiters(p);
  return true;
}

static void close_streams(weft_process_t *p) {
  for (int i = 0; i < 3; i++)
    if (p->stdio[i] != NULL) {
      (void)weft_socket_close(p->stdio[i]);
      p->stdio[i] = NULL;
    }
}

/* Free once the handle is closed, the loop is done and no callback of
 * ours is on the stack. */
static void maybe_free(weft_process_t *p) {
  if (p->closed && p->busy == 0 && (p->reaped || p->loop_gone)) {
    if (!p->loop_gone)
      weft__lop_unlink(p->loop, &p->lop);
    weft__free(p, sizeof *p);
  }
}

/* The loop closes: kill and reap a child still running, close the
 * streams not taken (the loop would), and stop touching the loop. */
static void loop_gone(weft_process_t *p) {
  if (p->loop_gone)
    return;
  p->busy++;
  weft__lop_unlink(p->loop, &p->lop); /* (off already when it called) */
  if (!p->reaped) {
    (void)syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
    (void)reap(p, true);
  }
  close_streams(p);
  p->loop_gone = true;
  p->busy--;
  maybe_free(p);
}

static void on_pidfd(weft_io_t *io, unsigned events, int status, void *arg) {
  (void)io;
  (void)events;
  weft_process_t *p = arg;
  if (status != 0) {
    loop_gone(p);
    return;
  }
  p->busy++;
  (void)reap(p, false);
  p->busy--;
  maybe_free(p);
}

static void on_loop_close(weft__lop_t *l) {
  loop_gone(
      (weft_process_t *)(void *)((char *)l - offsetof(weft_process_t, lop)));
}

/* ---- spawn ---- */

static int check_opts(const weft_process_options_t *o) {
  int rc = weft__struct_check(o, o->size, sizeof *o,
                              offsetof(weft_process_options_t, reserved));
  if (rc != 0)
    return rc;
  if (o->file == NULL || o->file[0] == '\0')
    return WEFT_EINVAL;
  for (int i = 0; i < 3; i++) {
    int m = o->stdio[i].mode, fd = o->stdio[i].fd;
    if (m < WEFT_STDIO_INHERIT || m > WEFT_STDIO_FD)
      return WEFT_EINVAL;
    if (m == WEFT_STDIO_FD ? fd < 0 : fd != 0)
      return WEFT_EINVAL;
  }
  return 0;
}

/* What the parent holds for one spawn: the child's ends, closed after. */
typedef struct spawn_ctx {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int child[3]; /* fds the parent closes after the spawn, or -1 */
} spawn_ctx_t;

/* An fd the child dups onto its `i`, moved out of 0..2 (an earlier dup2
 * of the child's could overwrite it) into a temporary fd of ours. */
static int child_fd(spawn_ctx_t *c, int i, int fd, bool own) {
  if (fd < 3 && fd != i) {
    int tmp = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (tmp < 0) {
      int err = weft_error_from_errno(errno);
      if (own)
        close(fd);
      return err;
    }
    if (own)
      close(fd);
    fd = tmp;
    own = true;
  }
  if (own)
    c->child[i] = fd;
  int rc = posix_spawn_file_actions_adddup2(&c->fa, fd, i);
  return rc != 0 ? weft_error_from_errno(rc) : 0;
}

static int stdio_socket(weft_process_t *p, spawn_ctx_t *c, int i) {
  int sv[2];
  if (WEFT__SYS("socketpair",
                socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) < 0)
    return weft_error_from_errno(errno);
  int rc = weft__socket_adopt(p->loop, sv[0], &p->stdio[i]);
  if (rc != 0) {
    close(sv[1]);
    return rc;
  }
  return child_fd(c, i, sv[1], true);
}

static int setup_stdio(weft_process_t *p, spawn_ctx_t *c,
                       const weft_process_options_t *o) {
  for (int i = 0; i < 3; i++) {
    int rc = 0;
    switch (o->stdio[i].mode) {
    case WEFT_STDIO_NULL:
      rc = posix_spawn_file_actions_addopen(&c->fa, i, "/dev/null", O_RDWR, 0);
      rc = rc != 0 ? weft_error_from_errno(rc) : 0;
      break;
    case WEFT_STDIO_FD:
      rc = child_fd(c, i, o->stdio[i].fd, false);
      break;
    case WEFT_STDIO_SOCKET:
      rc = stdio_socket(p, c, i);
      break;
    default:
      break;
    }
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int ctx_init(spawn_ctx_t *c, const weft_process_options_t *o) {
  c->child[0] = c->child[1] = c->child[2] = -1;
  int rc = posix_spawn_file_actions_init(&c->fa);
  if (rc != 0)
    return weft_error_from_errno(rc);
  rc = posix_spawnattr_init(&c->attr);
  if (rc != 0) {
    posix_spawn_file_actions_destroy(&c->fa);
    return weft_error_from_errno(rc);
  }
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  rc = posix_spawnattr_setsigdefault(&c->attr, &all);
  if (rc == 0)
    rc = posix_spawnattr_setsigmask(&c->attr, &none);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&c->attr, POSIX_SPAWN_SETSIGDEF |
                                                POSIX_SPAWN_SETSIGMASK);
  if (rc == 0 && o->cwd != NULL)
    rc = posix_spawn_file_actions_addchdir_np(&c->fa, o->cwd);
  return rc != 0 ? weft_error_from_errno(rc) : 0;
}

static void ctx_fini(spawn_ctx_t *c) {
  for (int i = 0; i < 3; i++)
    if (c->child[i] >= 0)
      close(c->child[i]);
  posix_spawn_file_actions_destroy(&c->fa);
  posix_spawnattr_destroy(&c->attr);
}

/* Kill and reap a child we cannot watch. */
static void abandon(pid_t pid) {
  (void)kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

/* Start the child and its pidfd watcher. */
static int start_child(weft_process_t *p, spawn_ctx_t *c,
                       const weft_process_options_t *o) {
  char *argv0[] = {(char *)o->file, NULL};
  char *const *argv = o->argv != NULL ? o->argv : argv0;
  char *const *envp = o->envp != NULL ? o->envp : environ;
  pid_t pid;
  int rc = WEFT__SYS_RET("posix_spawn", posix_spawnp(&pid, o->file, &c->fa,
                                                     &c->attr, argv, envp));
  if (rc != 0)
    return weft_error_from_errno(rc);
  int fd = (int)WEFT__SYS("pidfd_open", syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    rc = weft_error_from_errno(errno);
    abandon(pid);
    return rc;
  }
  rc = weft_io_start(p->loop, &p->io, fd, WEFT_READABLE, on_pidfd, p);
  if (rc != 0) {
    close(fd);
    abandon(pid);
    return rc;
  }
  p->pid = pid;
  p->pidfd = fd;
  return 0;
}

int weft_process_spawn(weft_loop_t *loop, const weft_process_options_t *opts,
                       weft_process_t **out) {
  if (loop == NULL || opts == NULL || out == NULL)
    return WEFT_EINVAL;
  int rc = check_opts(opts);
  if (rc != 0)
    return rc;
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  weft_process_t *p = weft__malloc(sizeof *p);
  if (p == NULL)
    return WEFT_ENOMEM;
  memset(p, 0, sizeof *p);
  p->loop = loop;
  p->pidfd = -1;
  p->lop.close = on_loop_close;
  weft__lop_link(loop, &p->lop);
  spawn_ctx_t c;
  rc = ctx_init(&c, opts);
  if (rc == 0)
    rc = setup_stdio(p, &c, opts);
  if (rc == 0)
    rc = start_child(p, &c, opts);
  ctx_fini(&c);
  if (rc != 0) {
    close_streams(p);
    weft__lop_unlink(loop, &p->lop);
    weft__free(p, sizeof *p);
    return rc;
  }
  *out = p;
  return 0;
}

/* ---- the handle ---- */

weft_socket_t *weft_process_stdio_take(weft_process_t *p, int i) {
  if (p == NULL || i < 0 || i > 2 || p->loop_gone || !weft__loop_owned(p->loop))
    return NULL;
  weft_socket_t *s = p->stdio[i];
  p->stdio[i] = NULL;
  return s;
}

int weft_process_exit(weft_process_t *p, weft_future_t **out) {
  if (p == NULL || out == NULL)
    return WEFT_EINVAL;
  if (!p->loop_gone && !weft__loop_owned(p->loop))
    return WEFT_EPERM;
  weft_promise_t *pr;
  weft_future_t *f;
  int rc = weft_promise_create(&pr, &f);
  if (rc != 0)
    return rc;
  if (p->reaped) {
    (void)weft_promise_fulfil_int(pr, value_of(&p->status));
    (void)weft_promise_release(pr);
    *out = f;
    return 0;
  }
  exit_wait_t *w = weft__malloc(sizeof *w);
  if (w == NULL) {
    (void)weft_promise_release(pr);
    (void)weft_future_release(f);
    return WEFT_ENOMEM;
  }
  w->promise = pr;
  w->next = p->waiters;
  p->waiters = w;
  *out = f;
  return 0;
}

int weft_process_status(const weft_process_t *p, weft_process_status_t *out) {
  if (p == NULL || out == NULL)
    return WEFT_EINVAL;
  if (!p->reaped)
    return WEFT_EPENDING;
  *out = p->status;
  return 0;
}

int weft_process_kill(weft_process_t *p, int signum) {
  if (p == NULL || signum < 0 || signum >= NSIG)
    return WEFT_EINVAL;
  if (p->loop_gone)
    return WEFT_EALREADY;
  if (!weft__loop_owned(p->loop))
    return WEFT_EPERM;
  if (p->reaped)
    return WEFT_EALREADY;
  if (syscall(SYS_pidfd_send_signal, p->pidfd, signum, NULL, 0) < 0)
    return weft_error_from_errno(errno);
  return 0;
}

int weft_process_pid(const weft_process_t *p) {
  return p == NULL ? -1 : (int)p->pid;
}

int weft_process_close(weft_process_t *p) {
  if (p == NULL)
    return WEFT_EINVAL;
  if (!p->loop_gone && !weft__loop_owned(p->loop))
    return WEFT_EPERM;
  p->closed = true;
  if (!p->loop_gone)
    close_streams(p);
  maybe_free(p);
  return 0;
}
