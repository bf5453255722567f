/* SPDX-License-Identifier: MIT */
/* bench/net_uv.c: libuv echo server, the usual way: uv_listen/uv_accept,
 * uv_read_start with a 64 KiB buffer, a uv_write per read (the read buffer
 * travels with the write request and is freed in its callback).
 * Usage: net_uv <conns>; see net_common.h. */
#include "net_common.h"

#include <uv.h>

typedef struct wreq {
  uv_write_t req;
  uv_buf_t buf;
} wreq_t;

static uv_loop_t *L;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h, (void)hint;
  buf->base = malloc(65536);
  buf->len = 65536;
}

static void on_closed(uv_handle_t *h) {
  free(h);
  if (w_closed())
    uv_stop(L);
}

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  free(w->buf.base);
  free(w);
  (void)status; /* an error shows up on the read side */
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    w_echoed(n);
    wreq_t *w = malloc(sizeof *w);
    w->buf = uv_buf_init(buf->base, (unsigned)n);
    uv_write(&w->req, s, &w->buf, 1, on_written);
    return;
  }
  free(buf->base);
  if (n < 0)
    uv_close((uv_handle_t *)s, on_closed);
}

static void on_conn(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  uv_tcp_t *c = malloc(sizeof *c);
  uv_tcp_init(L, c);
  if (uv_accept(server, (uv_stream_t *)c) != 0) {
    uv_close((uv_handle_t *)c, (uv_close_cb)free);
    return;
  }
  uv_tcp_nodelay(c, 1);
  w_accepted();
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  L = uv_default_loop();
  uv_tcp_t server;
  uv_tcp_init(L, &server);
  uv_tcp_open(&server, w_listen());
  uv_listen((uv_stream_t *)&server, 1024, on_conn);
  uv_run(L, UV_RUN_DEFAULT);
  return 0;
}
