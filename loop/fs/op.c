/* SPDX-License-Identifier: MIT */
/* loop/fs/op.c: a file operation's future and its flight: to the ring
 * (a request its completion reports on the loop thread) or to the blocking
 * executor (a task that makes the syscall and sends the result back to
 * the loop), cancel from any thread, and the end of a flight whose loop
 * closed meanwhile.
 *
 * References of an op: the caller's handle, the loop side's (until the op
 * is finished there: settled and off its lists) and one per flight. A
 * flight never touches the caller's memory: the syscall works on op->mem,
 * and the loop thread copies into the caller's buffer when it settles. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void weft__fs_op_fini(weft__ext_t *e) {
  fs_op_t *op = (fs_op_t *)e;
  if (op->mem != NULL)
    weft__free(op->mem, op->mem_len);
  weft__free(op, sizeof *op);
}

/* The cancel hook (any thread; the future is cancelled already): wait out
 * a copy into the caller's memory under way on the loop thread, so that
 * when weft_future_cancel() returns the memory is the caller's again;
 * then finish the op on the loop thread (disarm). */
static void fs_cancel_hook(void *arg) {
  fs_op_t *op = arg;
  atomic_thread_fence(memory_order_seq_cst);
  while (atomic_load_explicit(&op->copying, memory_order_acquire))
    sched_yield(); /* a memcpy of at most WEFT_FILE_READ_MAX bytes */
  weft__loop_op_cancel(&op->base);
}

/* Loop thread, a cancel: an op not in flight is done; a flight's end
 * finishes the rest (its result discarded). A close op always runs: the
 * fd must be closed whatever its future became. */
static void fs_disarm(weft__loop_op_t *b) {
  fs_op_t *op = (fs_op_t *)b;
  if (op->finished || op->flying || op->kind == FS_CLOSE)
    return;
  weft__fs_op_finish(op);
}

fs_op_t *weft__fs_op_new(weft_loop_t *loop, weft_file_t *file, fs_kind_t kind,
                         size_t mem_len) {
  fs_op_t *op = weft__malloc(sizeof *op);
  if (op == NULL)
    return NULL;
  memset(op, 0, sizeof *op);
  if (mem_len != 0) {
    op->mem = weft__malloc(mem_len);
    if (op->mem == NULL) {
      weft__free(op, sizeof *op);
      return NULL;
    }
    op->mem_len = mem_len;
  }
  weft__loop_op_setup(&op->base, sizeof *op, loop, fs_disarm, weft__fs_op_fini,
                      fs_cancel_hook, op);
  op->file = file;
  op->kind = (uint8_t)kind;
  op->fd = file != NULL ? file->fd : -1;
  atomic_init(&op->copying, 0);
  return op;
}

void weft__fs_op_abandon(fs_op_t *op) { weft__fs_op_fini(&op->base.ext); }

/* Off the file's lists (loop thread). */
static void fs_unlink(fs_op_t *op) {
  weft_file_t *file = op->file;
  if (op->kind == FS_OPEN || op->kind == FS_STAT) {
    weft__lop_unlink(op->base.loop, &op->lop);
    return;
  }
  if (file == NULL || op->kind == FS_CLOSE)
    return;
  if (op->prev != NULL)
    op->prev->next = op->next;
  else if (file->ops == op)
    file->ops = op->next;
  if (op->next != NULL)
    op->next->prev = op->prev;
  op->prev = op->next = NULL;
  if (!op->pos)
    return;
  fs_op_t **p = &file->posq;
  fs_op_t *last = NULL;
  for (; *p != NULL && *p != op; p = &(*p)->qnext)
    last = *p;
  if (*p == NULL)
    return;
  bool head = p == &file->posq;
  *p = op->qnext;
  if (file->posq_tail == op)
    file->posq_tail = last;
  if (head)
    weft__fs_posq_next(file);
}

void weft__fs_op_finish(fs_op_t *op) {
  if (op->finished)
    return;
  op->finished = true;
  fs_unlink(op);
  weft__unref(fs_future(op)); /* the loop side's */
}

void weft__fs_op_fail(fs_op_t *op, int err) {
  (void)weft__settle_int(fs_future(op), WEFT_REJECTED, 0, err);
  weft__fs_op_finish(op);
}

/* ---- the flight ---- */

static void fs_deliver(weft_task_t *t) { /* loop thread */
  fs_op_t *op = (fs_op_t *)((char *)t - offsetof(fs_op_t, deliver));
  weft_loop_t *loop = op->base.loop;
  bool held = op->held;
  op->flying = op->held = false;
  weft__fs_op_landed(op);
  weft__unref(fs_future(op)); /* the flight's */
  if (held)
    weft__loop_put(loop);
}

static weft_io_t *fs_ring_done(weft__completion_t *c, int res, int buf) {
  (void)buf;
  fs_op_t *op = (fs_op_t *)((char *)c - offsetof(fs_op_t, comp));
  op->res = res;
  op->deliver.run = fs_deliver;
  weft__loop_push_local(op->base.loop, &op->deliver);
  return NULL;
}

static const weft__completion_ops_t fs_comp_ops = {fs_ring_done, NULL, NULL};

/* The blocking thread's task: the syscall (unless the op was cancelled
 * before it started), then the result back to the loop. */
static void fs_work(weft_task_t *t) {
  fs_op_t *op = (fs_op_t *)((char *)t - offsetof(fs_op_t, work));
  if (op->kind != FS_CLOSE &&
      weft_future_state(fs_future(op)) == WEFT_CANCELLED)
    op->res = -ECANCELED;
  else
    op->res = weft__fs_op_syscall(op);
  op->deliver.run = fs_deliver;
  if (weft__loop_submit(op->base.loop, &op->deliver) != 0)
    weft__fs_op_orphaned(op); /* the loop is closing: it cancelled op */
}

static bool fs_ring_start(fs_op_t *op) {
  weft_loop_t *loop = op->base.loop;
  if (loop->cops == NULL || loop->cops->file == NULL)
    return false;
  static const int kinds[] = {
      [FS_OPEN] = WEFT__FREQ_OPEN,          [FS_READ] = WEFT__FREQ_READ,
      [FS_WRITE] = WEFT__FREQ_WRITE,        [FS_SYNC] = WEFT__FREQ_FSYNC,
      [FS_DATASYNC] = WEFT__FREQ_FDATASYNC, [FS_FSTAT] = WEFT__FREQ_STATX,
      [FS_STAT] = WEFT__FREQ_STATX,         [FS_CLOSE] = WEFT__FREQ_CLOSE};
  weft__file_req_t q = {kinds[op->kind], op->fd, NULL, 0, 0, NULL, 0, 0, NULL};
  size_t left = op->n - op->done;
  switch (op->kind) {
  case FS_READ:
  case FS_WRITE:
    q.buf = op->mem + op->done;
    q.len = left > (1u << 30) ? 1u << 30 : (unsigned)left;
    q.off = (uint64_t)op->off + op->done;
    break;
  case FS_OPEN:
    q.path = op->mem;
    q.flags = op->flags;
    q.mode = op->mode;
    break;
  case FS_STAT:
    q.path = op->mem + sizeof(struct statx);
    q.fd = -1;
    /* fallthrough */
  case FS_FSTAT:
    q.stx = op->mem;
    break;
  default:
    break;
  }
  op->comp.ops = &fs_comp_ops;
  return loop->cops->file(&loop->cbackend, &op->comp, &q);
}

int weft__fs_op_start(fs_op_t *op) {
  weft_loop_t *loop = op->base.loop;
  weft__ref(fs_future(op)); /* the flight's */
  op->ring = fs_ring_start(op);
  if (!op->ring) {
    weft_executor_t *ex;
    int rc = weft__loop_blocking(loop, &ex);
    if (rc == 0) {
      atomic_fetch_add_explicit(&loop->holds, 1, memory_order_relaxed);
      op->work.run = fs_work;
      rc = weft_executor_submit(ex, &op->work);
      if (rc != 0)
        weft__loop_put(loop);
    }
    if (rc != 0) {
      weft__unref(fs_future(op));
      return rc;
    }
    op->held = true;
  }
  op->flying = true;
  if (op->kind != FS_OPEN && op->file != NULL) {
    atomic_fetch_add_explicit(&op->file->flights, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&op->file->refs, 1, memory_order_relaxed);
  }
  return 0;
}

/* ---- the syscalls of the blocking path ---- */

static int fs_rw(fs_op_t *op) {
  while (op->done < op->n) {
    ssize_t r;
    size_t left = op->n - op->done;
    if (op->kind == FS_READ)
      r = pread(op->fd, op->mem, left, op->off);
    else
      r = pwrite(op->fd, op->mem + op->done, left, op->off + (int64_t)op->done);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -errno;
    if (op->kind == FS_READ)
      return (int)r; /* a read reports what it found */
    op->done += (size_t)r;
  }
  return 0;
}

int weft__fs_op_syscall(fs_op_t *op) {
  int r;
  switch (op->kind) {
  case FS_READ:
  case FS_WRITE:
    return fs_rw(op);
  case FS_SYNC:
    r = fsync(op->fd);
    break;
  case FS_DATASYNC:
    r = fdatasync(op->fd);
    break;
  case FS_OPEN:
    do
      r = open(op->mem, op->flags, (mode_t)op->mode);
    while (r < 0 && errno == EINTR);
    break;
  case FS_CLOSE:
    r = close(op->fd);
    if (r < 0 && errno == EINTR)
      r = 0; /* Linux: the fd is closed all the same */
    break;
  case FS_FSTAT:
    r = fstat(op->fd, (struct stat *)(void *)op->mem);
    break;
  default: /* FS_STAT */
    r = stat(op->mem + sizeof(struct statx), (struct stat *)(void *)op->mem);
    break;
  }
  return r < 0 ? -errno : r;
}
