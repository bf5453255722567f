/* SPDX-License-Identifier: MIT */
/* weft/error.h: the one list of weft error codes, with their names and messages. */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#include <weft/common.h>

WEFT_BEGIN_DECLS

/*
 * Every weft call that can fail returns 0 on success or one of these negative
 * codes; errno is never the channel. The values of the first group equal the
 * negated Linux errno of the same name, so `-errno` from a system call maps
 * onto them directly. The last group is weft's own.
 *
 * X(NAME, value, message)
 */
#define WEFT_ERRNO_MAP(X)                                                      \
  X(EPERM, -1, "operation not permitted")                                      \
  X(ENOENT, -2, "no such file or directory")                                   \
  X(EINTR, -4, "interrupted system call")                                      \
  X(EIO, -5, "i/o error")                                                      \
  X(EBADF, -9, "bad file descriptor")                                          \
  X(EAGAIN, -11, "resource temporarily unavailable")                           \
  X(ENOMEM, -12, "not enough memory")                                          \
  X(EACCES, -13, "permission denied")                                          \
  X(EBUSY, -16, "resource busy")                                               \
  X(EEXIST, -17, "already exists")                                             \
  X(ENOTDIR, -20, "not a directory")                                           \
  X(EISDIR, -21, "is a directory")                                             \
  X(EINVAL, -22, "invalid argument")                                           \
  X(ENFILE, -23, "too many open files in system")                              \
  X(EMFILE, -24, "too many open files")                                        \
  X(EFBIG, -27, "file too large")                                              \
  X(ENOSPC, -28, "no space left on device")                                    \
  X(ESPIPE, -29, "illegal seek")                                               \
  X(EROFS, -30, "read-only file system")                                       \
  X(EPIPE, -32, "broken pipe")                                                 \
  X(ERANGE, -34, "result out of range")                                        \
  X(EDEADLK, -35, "waiting here would deadlock")                               \
  X(ENAMETOOLONG, -36, "file name too long")                                   \
  X(ENOSYS, -38, "function not implemented")                                   \
  X(ELOOP, -40, "too many levels of symbolic links")                           \
  X(EOVERFLOW, -75, "value too large")                                         \
  X(EMSGSIZE, -90, "message too long")                                         \
  X(ENOTSUP, -95, "operation not supported")                                   \
  X(EADDRINUSE, -98, "address already in use")                                 \
  X(EADDRNOTAVAIL, -99, "address not available")                               \
  X(ENETUNREACH, -101, "network is unreachable")                               \
  X(ECONNABORTED, -103, "connection aborted")                                  \
  X(ECONNRESET, -104, "connection reset by peer")                              \
  X(ENOBUFS, -105, "no buffer space available")                                \
  X(ENOTCONN, -107, "socket is not connected")                                 \
  X(ESHUTDOWN, -108, "shut down")                                              \
  X(ETIMEDOUT, -110, "timed out")                                              \
  X(ECONNREFUSED, -111, "connection refused")                                  \
  X(EHOSTUNREACH, -113, "host is unreachable")                                 \
  X(EALREADY, -114, "already settled")                                         \
  X(EDQUOT, -122, "disk quota exceeded")                                       \
  X(ECANCELED, -125, "operation canceled")                                     \
  X(EBROKEN, -4001, "promise released without being settled")                  \
  X(EPENDING, -4002, "future is still pending")                                \
  X(EALLFAILED, -4003, "every input failed")                                   \
  X(ECYCLE, -4004, "future would follow itself")                               \
  X(EAI_NONAME, -4010, "unknown host or service")                              \
  X(EAI_AGAIN, -4011, "temporary failure in name resolution")                  \
  X(EAI_FAIL, -4012, "name resolution failed")                                 \
  X(EUNKNOWN, -4094, "unknown error")                                          \
  X(EOF, -4095, "end of stream")

/** The codes as an enum: WEFT_EINVAL, WEFT_ECANCELED, ... */
/* clang-format off */
enum weft_errno {
#define WEFT__ERR_ENUM(name, val, msg) WEFT_##name = (val),
  WEFT_ERRNO_MAP(WEFT__ERR_ENUM)
#undef WEFT__ERR_ENUM
  WEFT__ERR_LAST_ = 0
};
/* clang-format on */

/**
 * Human-readable message for an error code.
 *
 * Returns a static string; for 0 it returns "success", for a code not in the
 * list "unknown error". Never returns NULL, never allocates.
 * Errors: none.
 * Thread: any thread.
 */
WEFT_EXTERN const char *weft_error_message(int err);

/**
 * Symbolic name of an error code ("WEFT_ECANCELED").
 *
 * Returns a static string; for 0 "WEFT_OK", for a code not in the list
 * "WEFT_EUNKNOWN". Never returns NULL, never allocates.
 * Errors: none.
 * Thread: any thread.
 */
WEFT_EXTERN const char *weft_error_name(int err);

/**
 * Map a positive system errno value to a weft code.
 *
 * Returns -errnum when the code is in weft's list, WEFT_EUNKNOWN otherwise,
 * and 0 for 0.
 * Errors: none.
 * Thread: any thread.
 */
WEFT_EXTERN int weft_error_from_errno(int errnum);

WEFT_END_DECLS

#endif /* WEFT_ERROR_H */
