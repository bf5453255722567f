/* SPDX-License-Identifier: MIT */
/* weft/fs.h: files on the loop: open, read, write, sync, stat and close,
 * every operation a future. Life cycle: a file is taken from an open
 * future, used on its loop's thread, and closed (pending operations
 * cancelled, then the fd closed, freed). Design: docs/design/fs.md. */
#ifndef WEFT_FS_H
#define WEFT_FS_H

#include <weft/common.h>
#include <weft/future.h>
#include <weft/loop.h>

#include <sys/stat.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * A weft_file_t belongs to one loop and is used on that loop's thread:
 * every function here must be called there, except weft_future_cancel()
 * on the futures they return (any thread). Each operation returns a
 * future; chain on it with weft_future_then(f, weft_loop_executor(loop),
 * ...), or await it in a fiber.
 *
 * Where the work happens. On a loop with an io_uring (weft_loop_stats()
 * .backend "io_uring") every operation is a ring request: reads the page
 * cache can serve complete inside the loop's next wait, others in the
 * kernel's own workers. Without one (an older kernel, WEFT_IO_URING=0 in
 * the environment), or when the ring's queue is full, the operation runs
 * on the loop's blocking executor (weft_loop_options_t.blocking, or the
 * loop's own threads). Either way the loop thread never blocks on a file,
 * and the futures settle on the loop thread, with the same results.
 *
 * Buffers. weft never lends the caller's memory to the kernel or to
 * another thread: a write copies its bytes before weft_file_write()
 * returns (the caller may reuse the buffer at once), and a read lands in
 * weft's own memory first and is copied into the caller's buffer on the
 * loop thread, in the step that fulfils the read's future. So a read's
 * buffer (and a stat's struct) is written only then: once the future has
 * settled, or once weft_future_cancel() on it has returned (on any thread;
 * a copy under way on the loop thread is waited for, it is a memcpy),
 * weft never touches it again, on both paths. A cancelled read wrote
 * nothing into the buffer unless the cancel came after the copy began;
 * then the cancel returns WEFT_EALREADY and the read reports its bytes.
 *
 * Cancellation. A cancelled operation's future settles at once as
 * cancelled (weft_future_cancel() returns 0). What was not handed over
 * yet never starts. A request already with the kernel or a blocking
 * thread cannot be called back: it finishes there and its result is
 * discarded (its memory freed then). A cancelled read or open loses
 * nothing (an fd such an open got is closed); a cancelled write may have
 * written its bytes, and a cancelled sync may have synced. The fd stays
 * open until every such request has ended, so a request never reaches a
 * file that later took the same fd number.
 *
 * Offsets. A read or write names its offset (pread/pwrite: the operations
 * of one file may run at once, in any order). WEFT_FILE_CURRENT instead
 * uses the file's own position, which weft keeps (0 at open): operations
 * at the current position run one at a time, in the order they were
 * called, each from where the one before it ended; a cancelled or failed
 * one does not move it. In a file opened with O_APPEND every write goes
 * to the end, whatever its offset (the kernel's rule).
 *
 * Errors. An operation that returns 0 settles exactly once: fulfilled, or
 * rejected with the kernel's error mapped to its WEFT_E code (a file that
 * is not there WEFT_ENOENT, WEFT_EACCES, WEFT_EISDIR, WEFT_ENOTDIR,
 * WEFT_EEXIST, WEFT_ENOSPC, WEFT_EDQUOT, WEFT_EFBIG, WEFT_EROFS,
 * WEFT_EIO, WEFT_EBADF for a read on a file not opened for reading or a
 * write on one not opened for writing, WEFT_EMFILE / WEFT_ENFILE,
 * WEFT_ENAMETOOLONG, WEFT_ELOOP, WEFT_ENOMEM; a code outside weft's list
 * is WEFT_EUNKNOWN), or cancelled (WEFT_ECANCELED). EINTR and EAGAIN never
 * reach the caller. A file removed while open stays readable and
 * writable through its handle (POSIX), and stat reports st_nlink 0.
 *
 * Who owns what. The file of an open future is the future's value, owned
 * by the future until the caller takes it with weft_file_take(); a future
 * released untaken closes its file. A taken file is the caller's to close
 * with weft_file_close(). weft_loop_close() closes every file of the loop
 * still open, taken or not, cancelling its operations (their
 * continuations run before it returns and may still name the file:
 * weft_file_close() then returns 0 and new operations fail with
 * WEFT_ESHUTDOWN); file pointers are invalid once it returns.
 */

typedef struct weft_file weft_file_t;

/** The `offset` of a read or write at the file's own position. */
#define WEFT_FILE_CURRENT ((int64_t)-1)

/** A read transfers at most this many bytes (a larger request reads this
 * many: a short read, which read(2) may give too). */
#define WEFT_FILE_READ_MAX ((size_t)1 << 20)

/**
 * Open `path` with open(2) `flags` (O_RDONLY, O_WRONLY or O_RDWR, with
 * O_CREAT, O_EXCL, O_TRUNC, O_APPEND, ...; O_CLOEXEC is always added) and,
 * with O_CREAT, the permission bits `mode`. The path is copied before the
 * call returns. On 0 *out is a future fulfilled with the file (take it with
 * weft_file_take()) or rejected with the kernel's error (see "Errors").
 * Errors (returned): WEFT_EINVAL (NULL loop, path or out; flags with
 * O_NONBLOCK, O_DIRECTORY or O_PATH, which a weft file does not take);
 * WEFT_EPERM off the loop thread; WEFT_ESHUTDOWN (the loop is closing);
 * WEFT_ENOMEM; WEFT_EAGAIN (no blocking thread could be started). *out
 * untouched on error; nothing leaks.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_open(weft_loop_t *loop, const char *path, int flags,
                               unsigned mode, weft_future_t **out);

/**
 * Take the file of a fulfilled weft_file_open() future: on 0 *out is the
 * file, now the caller's to close (weft_file_close()); releasing the
 * future no longer touches it. Take once, usually in the continuation.
 * Errors: WEFT_EINVAL (NULL, or f is not a future weft_file_open()
 * returned); WEFT_EPERM off the loop thread; WEFT_EPENDING (not settled);
 * the future's own error when it was rejected or cancelled;
 * WEFT_EALREADY (taken already); WEFT_ESHUTDOWN (the loop closed it
 * meanwhile). *out untouched on error.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_take(weft_future_t *f, weft_file_t **out);

/**
 * Read up to `n` bytes (at most WEFT_FILE_READ_MAX) at `offset` (or
 * WEFT_FILE_CURRENT) into buf. The future is fulfilled with the number of
 * bytes read (weft_future_int(); 0 at or past the end of the file) or
 * rejected (see "Errors"). buf is written only on the loop thread, in the
 * step that fulfils the future (see "Buffers"). n == 0 is fulfilled with 0
 * before the call returns.
 * Errors (returned): WEFT_EINVAL (NULL file or out, buf NULL with n > 0,
 * offset below -1); WEFT_EPERM off the loop thread; WEFT_ESHUTDOWN (the
 * file is closing or the loop is); WEFT_ENOMEM; WEFT_EAGAIN (no blocking
 * thread could be started). *out untouched on error.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_read(weft_file_t *file, void *buf, size_t n,
                               int64_t offset, weft_future_t **out);

/**
 * Write all `n` bytes of buf at `offset` (or WEFT_FILE_CURRENT). The bytes
 * are copied before the call returns. The future is fulfilled with n once
 * every byte is written (weft_future_int()), or rejected (see "Errors":
 * WEFT_ENOSPC, WEFT_EDQUOT, WEFT_EFBIG, ...; some bytes may have been
 * written then).
 * Errors (returned): as weft_file_read(), and WEFT_EINVAL for n above
 * INTPTR_MAX.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_write(weft_file_t *file, const void *buf, size_t n,
                                int64_t offset, weft_future_t **out);

/**
 * Flush the file's data and metadata to its device (fsync(2)); the future
 * is fulfilled with 0 or rejected (WEFT_EIO, WEFT_ENOSPC, ...).
 * Errors (returned): WEFT_EINVAL (NULL); WEFT_EPERM; WEFT_ESHUTDOWN;
 * WEFT_ENOMEM; WEFT_EAGAIN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_sync(weft_file_t *file, weft_future_t **out);

/**
 * As weft_file_sync(), but only the data and the metadata needed to read
 * it back (fdatasync(2)).
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_datasync(weft_file_t *file, weft_future_t **out);

/**
 * Fill *st with the file's status (fstat(2)). *st is written only on the
 * loop thread, in the step that fulfils the future (with 0), as a read's
 * buffer is. A file removed while open reports st_nlink 0.
 * Errors (returned): WEFT_EINVAL (NULL); WEFT_EPERM; WEFT_ESHUTDOWN;
 * WEFT_ENOMEM; WEFT_EAGAIN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_stat(weft_file_t *file, struct stat *st,
                               weft_future_t **out);

/**
 * Fill *st with the status of `path` (stat(2): symbolic links followed),
 * as weft_file_stat() does; the future rejects with WEFT_ENOENT when there
 * is nothing at path. The path is copied before the call returns.
 * Errors (returned): WEFT_EINVAL (NULL); WEFT_EPERM; WEFT_ESHUTDOWN;
 * WEFT_ENOMEM; WEFT_EAGAIN.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_fs_stat(weft_loop_t *loop, const char *path,
                             struct stat *st, weft_future_t **out);

/**
 * Close the file: its pending operations are cancelled (their futures
 * settle as cancelled before this returns, see "Cancellation"), and the fd
 * is closed once no request of the file is with the kernel or a blocking
 * thread any more. `out` may be NULL; otherwise *out is a future that
 * settles when the fd is closed: fulfilled with 0, or rejected with
 * close(2)'s error (WEFT_EIO: data written earlier may be lost). The file
 * pointer is invalid once this returns (except inside the loop's close,
 * see "Who owns what": a file that close already closed returns 0 and
 * nothing else happens; *out, if asked for, is then already fulfilled).
 * The memory for the close is set aside when the file is opened, so
 * closing cannot fail for want of it.
 * Errors (returned): WEFT_EINVAL (NULL file, or a file whose close is
 * already under way); WEFT_EPERM off the loop thread; WEFT_EALREADY
 * (inside the loop's close, a second close that asks for a future: the
 * first one has it). *out untouched on error.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_close(weft_file_t *file, weft_future_t **out);

/**
 * The file's descriptor, borrowed (for fcntl, flock, mmap...): it stays
 * the file's, so never close it, and an operation of your own on it
 * (read(2)) may block the loop. -1 for NULL.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_file_fd(const weft_file_t *file);

WEFT_END_DECLS

#endif /* WEFT_FS_H */
