/* SPDX-License-Identifier: MIT */
#ifndef WEFT_PROCESS_H
#define WEFT_PROCESS_H
/*
 * weft/process.h: child processes on a loop; the exit status as a future.
 *
 *   char *argv[] = {"sh", "-c", "echo hi; exit 3", NULL};
 *   weft_process_options_t o = {.size = sizeof o, .file = "sh", .argv = argv};
 *   o.stdio[1].mode = WEFT_STDIO_SOCKET;        // read the child's stdout
 *   weft_process_t *p;
 *   weft_future_t *done;
 *   weft_process_spawn(loop, &o, &p);           // ENOENT etc. reported here
 *   weft_socket_t *out = weft_process_stdio_take(p, 1);
 *   ... weft_socket_read(out, ...) until WEFT_EOF ...
 *   weft_process_exit(p, &done);                // fulfilled with 3
 *
 * The exit status arrives through a pidfd watched by the loop (Linux 5.3 or
 * later: pidfd_open and waitid(P_PIDFD); pidfd_send_signal for kill). On a
 * kernel without them weft_process_spawn() fails with WEFT_ENOSYS and
 * leaves no child behind. weft installs no SIGCHLD handler; a program's own
 * waitpid(-1, ...) must not reap weft's children.
 *
 * No zombie is left on any path: the loop reaps the child when it exits,
 * whether the handle is still open or was closed before; and when the loop
 * closes with children still running, it kills each (SIGKILL) and reaps it
 * (a wait of a few microseconds per child) before weft_loop_close()
 * returns. Kill yourself, with a gentler signal, first if the child should
 * end cleanly.
 *
 * Exit status: a future from weft_process_exit() is fulfilled with an int
 * (weft_future_int): the exit code (0..255) when the child exited, or
 * WEFT_PROCESS_SIGNALED + the signal number when a signal ended it.
 * weft_process_status() reads the same as two fields.
 */
#include <weft/common.h>
#include <weft/future.h>
#include <weft/loop.h>
#include <weft/net.h>

WEFT_BEGIN_DECLS

typedef struct weft_process weft_process_t;

/** What a child's fd 0, 1 or 2 is. */
typedef enum weft_stdio_mode {
  WEFT_STDIO_INHERIT = 0, /* the parent's same fd (the default) */
  WEFT_STDIO_NULL = 1,    /* /dev/null */
  WEFT_STDIO_SOCKET = 2,  /* a stream socket pair: the parent's end is a
                             weft_socket_t (weft_process_stdio_take) */
  WEFT_STDIO_FD = 3       /* the caller's fd `fd`; it stays the caller's */
} weft_stdio_mode_t;

typedef struct weft_stdio {
  int mode; /* weft_stdio_mode_t */
  int fd;   /* WEFT_STDIO_FD only; otherwise 0 */
} weft_stdio_t;

/**
 * Spawn options: zero-initialise, set `size` to
 * sizeof(weft_process_options_t), then `file` and what you need. Every
 * field's zero is its default (see docs/README.md, "Structs that grow").
 * The strings and arrays are read during weft_process_spawn() only.
 */
typedef struct weft_process_options {
  size_t size;           /* sizeof(weft_process_options_t) */
  const char *file;      /* the program; without a '/' it is searched in PATH */
  char *const *argv;     /* NULL-terminated; NULL: {file, NULL} */
  char *const *envp;     /* NULL-terminated "K=V"; NULL: the parent's environ */
  const char *cwd;       /* the child's working directory; NULL: the parent's */
  weft_stdio_t stdio[3]; /* the child's stdin, stdout, stderr */
  void *reserved[4];     /* zero */
} weft_process_options_t;

/** Added to the signal number in an exit future's value. */
#define WEFT_PROCESS_SIGNALED 256

/** How a child ended. */
typedef struct weft_process_status {
  int code;   /* exit code 0..255; -1 when a signal ended the child */
  int signal; /* the signal that ended it; 0 when it exited */
} weft_process_status_t;

/**
 * Start a child running `opts->file` with opts' argv, environment, working
 * directory and stdio. The child starts with every signal at its default
 * disposition and none blocked, and gets no fd of the parent's but its
 * three stdio ones (weft's and the library's fds are close-on-exec; the
 * caller's own fds must be too). The exec happens in the child before this
 * call returns (posix_spawn), so its failure is this call's error, never an
 * exit code.
 * On 0, *out owns the process: end it with weft_process_close() (the child
 * keeps running). Each WEFT_STDIO_SOCKET stream is ready for reads and
 * writes (weft_process_stdio_take()).
 * Errors (*out untouched, no child left running or unreaped, no fd
 * leaked): WEFT_EINVAL (loop, opts, out or file NULL, file empty,
 * opts->size below the first version's struct or above 4096, a mode out of
 * range, a negative fd with WEFT_STDIO_FD, a non-zero fd with another
 * mode); WEFT_ENOTSUP (a reserved slot or a byte past this weft's struct
 * is not zero); WEFT_EPERM off the loop thread; WEFT_ESHUTDOWN (the loop
 * is closing); WEFT_ENOMEM; WEFT_EMFILE / WEFT_ENFILE; WEFT_ENOSYS (no
 * pidfd support in the kernel); what exec or chdir reported in the child:
 * WEFT_ENOENT (no such program, or no such cwd), WEFT_EACCES (not
 * executable, or cwd not searchable), or another code from the kernel.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_process_spawn(weft_loop_t *loop,
                                   const weft_process_options_t *opts,
                                   weft_process_t **out);

/**
 * Take the parent's end of stdio stream `i` (0 stdin, 1 stdout, 2 stderr)
 * spawned with WEFT_STDIO_SOCKET: from then on it is the caller's, to read
 * (1, 2), write (0), shut down or close (weft_socket_close(): closing
 * stdin is how the child sees end of input). A stream not taken is closed
 * by weft_process_close(). A write after the child closed its end fails
 * with WEFT_EPIPE (no SIGPIPE).
 * Returns the socket; NULL when proc is NULL, i is out of range, the
 * stream was not a socket, it was taken already, or the loop has closed.
 * Thread: the loop thread.
 */
WEFT_EXTERN weft_socket_t *weft_process_stdio_take(weft_process_t *proc, int i);

/**
 * A future for the child's end: fulfilled with the exit value (see the top
 * of this header) once the loop reaped it, at once if it already has. Each
 * call gives a new future; cancelling it does not touch the child (kill
 * does). It still settles after weft_process_close(), when the child ends.
 * On 0, *out is the caller's (weft_future_release()).
 * Errors: WEFT_EINVAL (proc or out NULL); WEFT_EPERM off the loop thread
 * while the loop is open; WEFT_ENOMEM. *out untouched then.
 * Thread: the loop thread (any thread once the loop closed).
 */
WEFT_EXTERN int weft_process_exit(weft_process_t *proc, weft_future_t **out);

/**
 * How the child ended, once reaped.
 * Returns 0 and fills *out; WEFT_EINVAL (NULL); WEFT_EPENDING (the child
 * runs, or has not been reaped yet: *out untouched).
 * Thread: the loop thread (or any thread once the loop closed).
 */
WEFT_EXTERN int weft_process_status(const weft_process_t *proc,
                                    weft_process_status_t *out);

/**
 * Send signal `signum` to the child (through its pidfd, so never to
 * another process that reused the pid); 0 only checks that it can be sent.
 * Returns 0; WEFT_EINVAL (proc NULL, signum not a valid signal);
 * WEFT_EPERM off the loop thread; WEFT_EALREADY (the child was reaped).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_process_kill(weft_process_t *proc, int signum);

/**
 * The child's process id (reused by the system once the child is reaped;
 * use weft_process_kill() rather than kill(2)). -1 for NULL.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_process_pid(const weft_process_t *proc);

/**
 * Give up the handle. Streams not taken are closed; a child still running
 * goes on, and the loop reaps it when it exits (the exit futures already
 * made settle then) or kills and reaps it when the loop closes. A handle
 * may be closed after its loop closed (then it only frees memory, on any
 * thread).
 * Returns 0; WEFT_EINVAL for NULL; WEFT_EPERM off the loop thread while the
 * loop is open.
 * Thread: the loop thread (any thread once the loop closed).
 */
WEFT_EXTERN int weft_process_close(weft_process_t *proc);

WEFT_END_DECLS

#endif /* WEFT_PROCESS_H */
