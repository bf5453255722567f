/* SPDX-License-Identifier: MIT */
/* loop/fs/internal.h: private structures of files on the loop. Never
 * installed, never included by a public header. */
#ifndef WEFT_FS_INTERNAL_H
#define WEFT_FS_INTERNAL_H

#include "../internal.h"

#include <weft/fs.h>

typedef enum fs_kind {
  FS_OPEN,
  FS_READ,
  FS_WRITE,
  FS_SYNC,
  FS_DATASYNC,
  FS_FSTAT,
  FS_STAT,
  FS_CLOSE
} fs_kind_t;

typedef struct fs_op fs_op_t;

/* flights: requests of the file with the kernel or a thread, and
 * FLIGHTS_LCLOSE once the loop's close wants the fd closed: whoever ends
 * the last flight then closes it (a thread, when the loop is gone). */
enum { FLIGHTS_LCLOSE = 1u << 30 };

struct weft_file {
  weft__lop_t lop; /* on the loop's list while open (first) */
  weft_loop_t *loop;
  int fd;
  /* memory: the owner's (until the fd is closed), the open future's
   * value's, and one per flight; the last frees */
  _Atomic unsigned refs;
  _Atomic unsigned flights;
  int64_t pos;               /* WEFT_FILE_CURRENT's position */
  fs_op_t *ops;              /* pending operations (loop thread) */
  fs_op_t *posq, *posq_tail; /* at the current position; the first runs */
  fs_op_t *close_op;         /* set aside at open, started by close */
  bool closing;              /* weft_file_close or the loop's close began */
  bool by_loop;              /* the loop's close closed it */
  bool close_given;          /* weft_file_close took close_op */
  _Atomic bool taken;        /* weft_file_take took it from the future */
  _Atomic bool lclosed;      /* by_loop, for a future released elsewhere */
  weft_task_t orphan_task;   /* an untaken future released off the loop */
};

struct fs_op {
  weft__loop_op_t base; /* the future (first) */
  weft__completion_t comp;
  weft_task_t work;     /* on the blocking executor */
  weft_task_t deliver;  /* back on the loop thread */
  weft__lop_t lop;      /* open and path stat: on the loop's list */
  fs_op_t *prev, *next; /* on the file's list */
  fs_op_t *qnext;       /* on the file's position queue */
  weft_file_t *file;    /* the file it works on; open: the one it makes */
  uint8_t kind;
  bool pos;      /* at the current position */
  bool flying;   /* with the kernel or a thread */
  bool held;     /* a blocking flight: holds the loop */
  bool ring;     /* the last flight went to the ring */
  bool finished; /* done on the loop side (unlinked, its reference gone) */
  _Atomic int copying; /* the loop thread copies into the user's memory */
  int fd;
  int res; /* the flight's result: >= 0, or -errno */
  void *user;
  size_t n, done;
  int64_t off;
  char *mem; /* weft's side of the transfer, or the path */
  size_t mem_len;
  int flags;
  unsigned mode;
};

static inline weft_future_t *fs_future(fs_op_t *op) {
  return &op->base.ext.base;
}

/* op.c */
/* A new op of `kind` on loop (and file, or NULL), with mem_len bytes of
 * weft's own memory: NULL when there is no memory. refs: the caller's
 * handle and the loop side's. */
WEFT__HIDDEN fs_op_t *weft__fs_op_new(weft_loop_t *loop, weft_file_t *file,
                                      fs_kind_t kind, size_t mem_len);
/* Free an op that was never handed out. */
WEFT__HIDDEN void weft__fs_op_abandon(fs_op_t *op);
/* Hand op to the ring or the blocking executor: 0, WEFT_ENOMEM or
 * WEFT_EAGAIN (nothing started). */
WEFT__HIDDEN int weft__fs_op_start(fs_op_t *op);
/* Done on the loop side: off its lists, its reference gone. */
WEFT__HIDDEN void weft__fs_op_finish(fs_op_t *op);
/* Reject a pending op with err (loop thread) and finish it. */
WEFT__HIDDEN void weft__fs_op_fail(fs_op_t *op, int err);
WEFT__HIDDEN void weft__fs_op_fini(weft__ext_t *e);
/* The syscall of op on a blocking thread: its result (>= 0 or -errno). */
WEFT__HIDDEN int weft__fs_op_syscall(fs_op_t *op);
/* The result of a flight on the loop thread (file.c): settle, continue,
 * or discard. */
WEFT__HIDDEN void weft__fs_op_landed(fs_op_t *op);
/* A flight of op ended off the loop, which took no more tasks: end it
 * without the loop (file.c). */
WEFT__HIDDEN void weft__fs_op_orphaned(fs_op_t *op);

/* A result's -errno as a weft code (WEFT_EIO for none). */
WEFT__HIDDEN int weft__fs_err(int res);

/* file.c */
/* One flight of file ended (any thread): closes the fd if the loop's close
 * left it to the last flight. */
WEFT__HIDDEN void weft__fs_flight_end(weft_file_t *file);
/* Loop thread, after a flight of file landed: a closing file whose last
 * flight is back starts its close. */
WEFT__HIDDEN void weft__fs_after_flight(weft_file_t *file);
/* The close op's flight landed (loop thread). */
WEFT__HIDDEN void weft__fs_close_landed(fs_op_t *op);
/* The value destructor of an open future: the future's reference on the
 * file goes; untaken, the file is closed. Any thread. */
WEFT__HIDDEN void weft__fs_file_value_dtor(void *file);
WEFT__HIDDEN void weft__fs_file_put(weft_file_t *file);
/* Start the next operation at the current position (loop thread). */
WEFT__HIDDEN void weft__fs_posq_next(weft_file_t *file);

#endif /* WEFT_FS_INTERNAL_H */
