/* SPDX-License-Identifier: MIT */
/* loop/fs/file.c: the file API (weft/fs.h): open and take, read and write
 * (at an offset or at the position weft keeps), sync, stat, close; and
 * what the loop's close does to files and pending opens. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the file's memory and fd ---- */

static void file_free(weft_file_t *file) {
  if (file->fd >= 0)
    close(file->fd);
  if (!file->close_given) /* never used: both its references */
    weft__fs_op_abandon(file->close_op);
  weft__free(file, sizeof *file);
}

void weft__fs_file_put(weft_file_t *file) {
  if (atomic_fetch_sub_explicit(&file->refs, 1, memory_order_acq_rel) == 1)
    file_free(file);
}

void weft__fs_flight_end(weft_file_t *file) {
  unsigned old = atomic_fetch_sub_explicit(&file->flights, 1,
                                           memory_order_acq_rel);
  if (old == (FLIGHTS_LCLOSE | 1) && file->fd >= 0) {
    close(file->fd); /* the loop closed the file: the last flight is out */
    file->fd = -1;
  }
}

static unsigned flights(weft_file_t *file) {
  return atomic_load_explicit(&file->flights, memory_order_acquire) &
         ~FLIGHTS_LCLOSE;
}

/* Start the close op; where it cannot fly, close here (a regular file's
 * close does not wait for the device). */
static void close_start(weft_file_t *file) {
  fs_op_t *c = file->close_op;
  c->fd = file->fd;
  if (weft__fs_op_start(c) == 0)
    return;
  c->res = close(file->fd) < 0 ? -errno : 0; /* (no flight to end) */
  weft__fs_close_landed(c);
}

void weft__fs_after_flight(weft_file_t *file) {
  if (file->closing && !file->by_loop && !file->close_op->flying &&
      !file->close_op->finished && flights(file) == 0)
    close_start(file);
}

void weft__fs_close_landed(fs_op_t *op) {
  weft_file_t *file = op->file;
  file->fd = -1;
  weft_future_t *f = fs_future(op);
  bool by_loop = file->by_loop;
  if (!op->finished) { /* (the loop's close may have settled it) */
    if (op->res < 0)
      (void)weft__settle_int(f, WEFT_REJECTED, 0, weft__fs_err(op->res));
    else
      (void)weft__settle_int(f, WEFT_FULFILLED, 0, 0);
    op->finished = true;
    weft__unref(f); /* the loop side's */
  }
  if (by_loop) /* the loop's close has the owner's reference */
    return;
  weft__lop_unlink(file->loop, &file->lop);
  weft__fs_file_put(file); /* the owner's */
}

/* ---- the position queue ---- */

void weft__fs_posq_next(weft_file_t *file) {
  fs_op_t *op = file->posq;
  if (op == NULL || file->closing)
    return;
  op->off = file->pos;
  int rc = weft__fs_op_start(op);
  if (rc != 0)
    weft__fs_op_fail(op, rc); /* (unlinks it, and comes back here) */
}

/* ---- the loop's close ---- */

/* Cancel every pending op of file; those in flight are finished on the
 * loop side now (their flights end by themselves). */
static void cancel_ops(weft_file_t *file) {
  while (file->ops != NULL) {
    fs_op_t *op = file->ops;
    weft__ref(fs_future(op)); /* (the cancel may finish it) */
    (void)weft_future_cancel(fs_future(op));
    weft__fs_op_finish(op); /* in flight: disarm left it */
    weft__unref(fs_future(op));
  }
}

static void file_lop_close(weft__lop_t *l) {
  weft_file_t *file = (weft_file_t *)l;
  file->closing = file->by_loop = true;
  atomic_store_explicit(&file->lclosed, true, memory_order_release);
  cancel_ops(file);
  fs_op_t *c = file->close_op;
  if (file->close_given && !c->finished) {
    /* waiting for flights that now end without the loop, or flying: it
     * may land without the loop too */
    (void)weft__settle_int(fs_future(c), WEFT_CANCELLED, 0, WEFT_ECANCELED);
    c->finished = true;
    weft__unref(fs_future(c)); /* the loop side's (c may be gone now) */
  }
  unsigned old = atomic_fetch_or_explicit(&file->flights, FLIGHTS_LCLOSE,
                                          memory_order_acq_rel);
  if (old == 0 && file->fd >= 0) {
    close(file->fd);
    file->fd = -1;
  }
}

/* At the end of the loop's close: the owner's reference, kept so far so
 * that the continuations close ran could still name the file, and so that
 * no flight ending on another thread meanwhile frees it. */
static void file_lop_release(weft__lop_t *l) {
  weft__fs_file_put((weft_file_t *)l);
}

static void path_lop_close(weft__lop_t *l) {
  fs_op_t *op = (fs_op_t *)((char *)l - offsetof(fs_op_t, lop));
  weft__ref(fs_future(op)); /* (the cancel may finish it) */
  (void)weft_future_cancel(fs_future(op));
  if (!op->finished) { /* in flight */
    op->finished = true;
    weft__unref(fs_future(op)); /* the loop side's */
  }
  weft__unref(fs_future(op));
}

/* ---- open and take ---- */

static int fs_check(weft_loop_t *loop) {
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  if (loop->closing)
    return WEFT_ESHUTDOWN;
  return 0;
}

static weft_file_t *file_new(weft_loop_t *loop) {
  weft_file_t *file = weft__malloc(sizeof *file);
  if (file == NULL)
    return NULL;
  memset(file, 0, sizeof *file);
  file->lop.close = file_lop_close;
  file->lop.release = file_lop_release;
  file->loop = loop;
  file->fd = -1;
  atomic_init(&file->refs, 1);
  atomic_init(&file->flights, 0);
  atomic_init(&file->taken, false);
  atomic_init(&file->lclosed, false);
  file->close_op = weft__fs_op_new(loop, file, FS_CLOSE, 0);
  if (file->close_op == NULL) {
    weft__free(file, sizeof *file);
    return NULL;
  }
  return file;
}

int weft_file_open(weft_loop_t *loop, const char *path, int flags,
                   unsigned mode, weft_future_t **out) {
  if (loop == NULL || path == NULL || out == NULL ||
      (flags & (O_NONBLOCK | O_DIRECTORY | O_PATH)) != 0)
    return WEFT_EINVAL;
  int rc = fs_check(loop);
  if (rc != 0)
    return rc;
  size_t len = strlen(path) + 1;
  weft_file_t *file = file_new(loop);
  if (file == NULL)
    return WEFT_ENOMEM;
  fs_op_t *op = weft__fs_op_new(loop, file, FS_OPEN, len);
  if (op == NULL) {
    file_free(file);
    return WEFT_ENOMEM;
  }
  memcpy(op->mem, path, len);
  op->flags = flags | O_CLOEXEC;
  op->mode = mode;
  rc = weft__fs_op_start(op);
  if (rc != 0) {
    weft__fs_op_abandon(op);
    file_free(file);
    return rc;
  }
  op->lop.close = path_lop_close;
  weft__lop_link(loop, &op->lop);
  *out = fs_future(op);
  return 0;
}

int weft_file_take(weft_future_t *f, weft_file_t **out) {
  if (f == NULL || out == NULL)
    return WEFT_EINVAL;
  uint32_t w = atomic_load_explicit(&f->word, memory_order_acquire);
  if (weft__kind(w) != WEFT__K_EXT ||
      ((weft__ext_t *)f)->fini != weft__fs_op_fini ||
      ((fs_op_t *)f)->kind != FS_OPEN)
    return WEFT_EINVAL;
  fs_op_t *op = (fs_op_t *)f;
  if (!weft__loop_owned(op->base.loop))
    return WEFT_EPERM;
  int err = weft_future_error(f);
  if (err != 0)
    return err;
  weft_file_t *file = op->file;
  if (atomic_load_explicit(&file->taken, memory_order_relaxed))
    return WEFT_EALREADY;
  if (file->closing)
    return WEFT_ESHUTDOWN;
  atomic_store_explicit(&file->taken, true, memory_order_release);
  *out = file;
  return 0;
}

/* An untaken file whose future went on another thread: closed here. */
static void orphan_run(weft_task_t *t) {
  weft_file_t *file = (weft_file_t *)((char *)t -
                                      offsetof(weft_file_t, orphan_task));
  if (!file->closing)
    (void)weft_file_close(file, NULL);
  weft__fs_file_put(file); /* the value's */
}

void weft__fs_file_value_dtor(void *p) {
  weft_file_t *file = p;
  if (atomic_load_explicit(&file->taken, memory_order_acquire)) {
    weft__fs_file_put(file);
    return;
  }
  /* The loop's close closed it (the loop may be gone: not touched). */
  if (atomic_load_explicit(&file->lclosed, memory_order_acquire)) {
    weft__fs_file_put(file);
    return;
  }
  file->orphan_task.run = orphan_run;
  if (weft__loop_owned(file->loop)) {
    orphan_run(&file->orphan_task);
    return;
  }
  if (weft__loop_submit(file->loop, &file->orphan_task) != 0)
    weft__fs_file_put(file); /* the loop is closing: it closes the file */
}

/* ---- operations ---- */

static int op_check(weft_file_t *file) {
  if (file == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(file->loop))
    return WEFT_EPERM;
  if (file->closing || file->loop->closing)
    return WEFT_ESHUTDOWN;
  return 0;
}

/* Hand a new op of file out: on the file's list, started (or queued
 * behind the operations at the current position). */
static int op_launch(weft_file_t *file, fs_op_t *op, weft_future_t **out) {
  if (op->pos && file->posq != NULL) {
    file->posq_tail->qnext = op;
    file->posq_tail = op;
  } else {
    if (op->pos)
      op->off = file->pos;
    int rc = weft__fs_op_start(op);
    if (rc != 0) {
      weft__fs_op_abandon(op);
      return rc;
    }
    if (op->pos)
      file->posq = file->posq_tail = op;
  }
  op->next = file->ops;
  if (file->ops != NULL)
    file->ops->prev = op;
  file->ops = op;
  *out = fs_future(op);
  return 0;
}

static int op_simple(weft_file_t *file, fs_kind_t kind, size_t mem, void *user,
                     weft_future_t **out) {
  int rc = op_check(file);
  if (rc != 0)
    return rc;
  if (out == NULL)
    return WEFT_EINVAL;
  fs_op_t *op = weft__fs_op_new(file->loop, file, kind, mem);
  if (op == NULL)
    return WEFT_ENOMEM;
  op->user = user;
  return op_launch(file, op, out);
}

/* An op settled before it is handed out (a read of 0 bytes). */
static int op_done_now(weft_file_t *file, intptr_t v, weft_future_t **out) {
  fs_op_t *op = weft__fs_op_new(file->loop, file, FS_READ, 0);
  if (op == NULL)
    return WEFT_ENOMEM;
  (void)weft__settle_int(fs_future(op), WEFT_FULFILLED, v, 0);
  op->finished = true;
  weft__unref(fs_future(op)); /* the loop side's */
  *out = fs_future(op);
  return 0;
}

static int rw_check(weft_file_t *file, const void *buf, size_t n,
                    int64_t offset, weft_future_t **out) {
  if (file == NULL || out == NULL || (buf == NULL && n > 0) || offset < -1 ||
      n > INTPTR_MAX)
    return WEFT_EINVAL;
  return op_check(file);
}

int weft_file_read(weft_file_t *file, void *buf, size_t n, int64_t offset,
                   weft_future_t **out) {
  int rc = rw_check(file, buf, n, offset, out);
  if (rc != 0)
    return rc;
  if (n == 0)
    return op_done_now(file, 0, out);
  if (n > WEFT_FILE_READ_MAX)
    n = WEFT_FILE_READ_MAX;
  fs_op_t *op = weft__fs_op_new(file->loop, file, FS_READ, n);
  if (op == NULL)
    return WEFT_ENOMEM;
  op->user = buf;
  op->n = n;
  op->off = offset;
  op->pos = offset == WEFT_FILE_CURRENT;
  return op_launch(file, op, out);
}

int weft_file_write(weft_file_t *file, const void *buf, size_t n,
                    int64_t offset, weft_future_t **out) {
  int rc = rw_check(file, buf, n, offset, out);
  if (rc != 0)
    return rc;
  if (n == 0)
    return op_done_now(file, 0, out);
  fs_op_t *op = weft__fs_op_new(file->loop, file, FS_WRITE, n);
  if (op == NULL)
    return WEFT_ENOMEM;
  memcpy(op->mem, buf, n);
  op->n = n;
  op->off = offset;
  op->pos = offset == WEFT_FILE_CURRENT;
  return op_launch(file, op, out);
}

int weft_file_sync(weft_file_t *file, weft_future_t **out) {
  return op_simple(file, FS_SYNC, 0, NULL, out);
}

int weft_file_datasync(weft_file_t *file, weft_future_t **out) {
  return op_simple(file, FS_DATASYNC, 0, NULL, out);
}

int weft_file_stat(weft_file_t *file, struct stat *st, weft_future_t **out) {
  if (st == NULL)
    return WEFT_EINVAL;
  return op_simple(file, FS_FSTAT, sizeof(struct statx), st, out);
}

int weft_fs_stat(weft_loop_t *loop, const char *path, struct stat *st,
                 weft_future_t **out) {
  if (loop == NULL || path == NULL || st == NULL || out == NULL)
    return WEFT_EINVAL;
  int rc = fs_check(loop);
  if (rc != 0)
    return rc;
  size_t len = strlen(path) + 1;
  fs_op_t *op = weft__fs_op_new(loop, NULL, FS_STAT,
                                sizeof(struct statx) + len);
  if (op == NULL)
    return WEFT_ENOMEM;
  memcpy(op->mem + sizeof(struct statx), path, len);
  op->user = st;
  rc = weft__fs_op_start(op);
  if (rc != 0) {
    weft__fs_op_abandon(op);
    return rc;
  }
  op->lop.close = path_lop_close;
  weft__lop_link(loop, &op->lop);
  *out = fs_future(op);
  return 0;
}

int weft_file_close(weft_file_t *file, weft_future_t **out) {
  if (file == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_owned(file->loop))
    return WEFT_EPERM;
  fs_op_t *c = file->close_op;
  if (file->closing && !file->by_loop)
    return WEFT_EINVAL; /* closed already (a use after free, caught) */
  if (file->by_loop) {
    if (out != NULL && !file->close_given) {
      file->close_given = true;
      (void)weft__settle_int(fs_future(c), WEFT_FULFILLED, 0, 0);
      c->finished = true;
      weft__unref(fs_future(c));
      *out = fs_future(c);
    } else if (out != NULL) {
      return WEFT_EALREADY;
    }
    return 0;
  }
  file->closing = true;
  file->close_given = true;
  cancel_ops(file);
  if (out != NULL)
    *out = fs_future(c);
  else
    weft_future_release(fs_future(c));
  weft__fs_after_flight(file);
  return 0;
}

int weft_file_fd(const weft_file_t *file) {
  return file == NULL ? -1 : file->fd;
}
