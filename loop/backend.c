/* SPDX-License-Identifier: MIT */
/* loop/backend.c: the loop core's side of its backends. A loop always has
 * the readiness backend (epoll); where the kernel allows, a completion
 * backend (io_uring) is stacked on it: the completion backend's wait also
 * watches the epoll fd, and when that is readable the core harvests epoll's
 * events without waiting. So watchers, listeners and signals stay
 * level- or edge-triggered on epoll, and stream reads and sends complete
 * inside the one wait. Loop thread only. */
#define _GNU_SOURCE
#include "internal.h"

int weft__backend_open(weft_loop_t *loop, unsigned max) {
  loop->ops = &weft__epoll_backend;
  int rc = loop->ops->init(&loop->backend, max);
  if (rc != 0)
    return rc;
  /* The completions take at most half a batch (cbackend.max, the cap of
   * their polls), so readiness events always find room beside them. */
  loop->cbackend.watch_fd = loop->backend.fd;
  if (weft__uring_backend.init(&loop->cbackend, max / 2 > 0 ? max / 2 : 1) == 0)
    loop->cops = &weft__uring_backend;
  return 0;
}

void weft__backend_close(weft_loop_t *loop) {
  if (loop->cops != NULL)
    loop->cops->fini(&loop->cbackend);
  loop->cops = NULL;
  loop->ops->fini(&loop->backend);
}

int weft__backend_harvest(weft_loop_t *loop, int n) {
  int max = (int)loop->backend.max;
  loop->cbackend.watch_ready = false;
  if (n >= max) {
    loop->watch_again = true; /* no room in this batch: the next looks */
    return n;
  }
  int k = loop->ops->poll(&loop->backend, 0, loop->events + n, max - n);
  if (k < 0)
    return k;
  loop->watch_again = k > 0; /* an fd may still be ready: look again */
  return n + k;
}
