/* SPDX-License-Identifier: MIT */
/* loop/fs/land.c: where a flight's result lands: on the loop thread the
 * op settles (a read's bytes copied into the caller's buffer in that
 * step), a write goes on with what is left, the position moves, a closing
 * file closes once its last flight is back; off the loop, after its close,
 * the result is discarded and the fd closed by the last flight out. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void stat_from_statx(struct stat *st, const struct statx *x) {
  memset(st, 0, sizeof *st);
  st->st_dev = makedev(x->stx_dev_major, x->stx_dev_minor);
  st->st_ino = x->stx_ino;
  st->st_mode = x->stx_mode;
  st->st_nlink = x->stx_nlink;
  st->st_uid = x->stx_uid;
  st->st_gid = x->stx_gid;
  st->st_rdev = makedev(x->stx_rdev_major, x->stx_rdev_minor);
  st->st_size = (off_t)x->stx_size;
  st->st_blksize = (blksize_t)x->stx_blksize;
  st->st_blocks = (blkcnt_t)x->stx_blocks;
  st->st_atim.tv_sec = x->stx_atime.tv_sec;
  st->st_atim.tv_nsec = x->stx_atime.tv_nsec;
  st->st_mtim.tv_sec = x->stx_mtime.tv_sec;
  st->st_mtim.tv_nsec = x->stx_mtime.tv_nsec;
  st->st_ctim.tv_sec = x->stx_ctime.tv_sec;
  st->st_ctim.tv_nsec = x->stx_ctime.tv_nsec;
}

/* Copy the result into the caller's memory (a read's bytes, a stat) and
 * fulfil. The copy happens only while the future is pending, and a cancel
 * on another thread waits for it to end (copying, see fs_cancel_hook): so
 * the caller's memory is never written after a cancel returned. */
#if defined(__SANITIZE_THREAD__) /* GCC's TSan rejects an inlined fence */
__attribute__((noinline))
#endif
static void
fs_fulfil(fs_op_t *op, intptr_t v) {
  weft_future_t *f = fs_future(op);
  atomic_store_explicit(&op->copying, 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_seq_cst);
  WEFT__PERTURB(); /* copy announced, before the look at the future */
  if (weft_future_state(f) == WEFT_PENDING) {
    if (op->kind == FS_READ && v > 0)
      memcpy(op->user, op->mem, (size_t)v);
    else if ((op->kind == FS_FSTAT || op->kind == FS_STAT) && op->ring)
      stat_from_statx(op->user, (const struct statx *)(void *)op->mem);
    else if (op->kind == FS_FSTAT || op->kind == FS_STAT)
      memcpy(op->user, op->mem, sizeof(struct stat));
  }
  /* (cancelled first: the settle fails and the result is discarded) */
  (void)weft__settle_int(f, WEFT_FULFILLED,
                         op->kind == FS_READ || op->kind == FS_WRITE ? v : 0,
                         0);
  atomic_store_explicit(&op->copying, 0, memory_order_release);
}

int weft__fs_err(int res) {
  int e = weft_error_from_errno(-res);
  return e == 0 ? WEFT_EIO : e;
}

/* The open's fd becomes the file the future carries (or is closed when
 * the future was cancelled meanwhile). op->file holds one reference: the
 * owner's from now on. */
static void fs_open_landed(fs_op_t *op) {
  weft_file_t *file = op->file;
  weft_future_t *f = fs_future(op);
  if (op->res < 0) {
    (void)weft__settle_int(f, WEFT_REJECTED, 0, weft__fs_err(op->res));
    weft__fs_file_put(file); /* never opened: the last reference */
    return;
  }
  file->fd = op->res;
  if (op->base.loop->closing) /* landed inside the loop's close */
    (void)weft__settle_int(f, WEFT_CANCELLED, 0, WEFT_ECANCELED);
  if (op->base.loop->closing || weft__claim(f, WEFT_FULFILLED) != 0) {
    close(file->fd); /* cancelled: nobody will see this fd */
    file->fd = -1;
    weft__fs_file_put(file);
    return;
  }
  weft__lop_link(op->base.loop, &file->lop);
  atomic_fetch_add_explicit(&file->refs, 1, memory_order_relaxed);
  weft__ext_value_ptr(f, file, weft__fs_file_value_dtor);
  weft__publish(f);
}

/* A ring write lands a chunk at a time: true when it flew again. */
static bool fs_write_more(fs_op_t *op) {
  op->done += (size_t)op->res;
  if (op->done >= op->n)
    return false;
  if (op->res == 0) {
    op->res = -EIO; /* the kernel took nothing: do not spin */
    return false;
  }
  int rc = weft__fs_op_start(op);
  if (rc == 0)
    return true;
  op->res = rc; /* already a weft code */
  return false;
}

void weft__fs_op_landed(fs_op_t *op) {
  weft_file_t *file = op->file;
  if (op->kind == FS_OPEN) {
    fs_open_landed(op);
    weft__fs_op_finish(op);
    return;
  }
  if (op->kind == FS_CLOSE)
    file->fd = -1; /* closed by the flight: the loop's close must not */
  if (file != NULL)
    weft__fs_flight_end(file);
  if (op->kind == FS_CLOSE) {
    weft__fs_file_put(file); /* the flight's */
    weft__fs_close_landed(op);
    return;
  }
  weft_future_t *f = fs_future(op);
  bool pending = weft_future_state(f) == WEFT_PENDING && !op->finished;
  if (pending && op->kind == FS_WRITE && op->ring && op->res >= 0 &&
      fs_write_more(op)) {
    weft__fs_file_put(file);
    return;
  }
  if (pending && op->res < 0) {
    (void)weft__settle_int(f, WEFT_REJECTED, 0, weft__fs_err(op->res));
  } else if (pending) {
    intptr_t v = op->kind == FS_WRITE ? (intptr_t)op->n : op->res;
    if (op->pos)
      file->pos += v;
    fs_fulfil(op, v);
  }
  weft__fs_op_finish(op);
  if (file != NULL) {
    weft__fs_after_flight(file);
    weft__fs_file_put(file);
  }
}

void weft__fs_op_orphaned(fs_op_t *op) {
  weft_loop_t *loop = op->base.loop;
  weft_file_t *file = op->file;
  if (op->kind == FS_OPEN) {
    if (op->res >= 0)
      close(op->res);
    weft__fs_file_put(file);
  } else if (file != NULL) {
    if (op->kind == FS_CLOSE)
      file->fd = -1; /* it closed it: no other flight of the file is left */
    weft__fs_flight_end(file);
    weft__fs_file_put(file); /* (the owner's: the loop's close puts it) */
  }
  weft__unref(fs_future(op)); /* the flight's */
  weft__loop_put(loop);
}
