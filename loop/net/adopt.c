/* SPDX-License-Identifier: MIT */
/* loop/net/adopt.c: wrap an fd made elsewhere (a socketpair end for a
 * child's stdio, loop/proc/) as a stream weft_socket_t. */
#include "internal.h"

#include <fcntl.h>
#include <unistd.h>

int weft__socket_adopt(weft_loop_t *loop, int fd, weft_socket_t **out) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    int err = weft_error_from_errno(errno);
    close(fd);
    return err;
  }
  return weft__sock_wrap(loop, fd, SK_STREAM, out);
}
