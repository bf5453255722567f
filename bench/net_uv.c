/* SPDX-License-Identifier: MIT */
/* bench/net_uv.c: libuv echo server for `bench/run.sh net`, the usual way:
 * uv_tcp_bind (libuv sets SO_REUSEADDR) + uv_listen, uv_accept,
 * uv_read_start, and per read uv_try_write first (no request, nothing
 * queued: the common case), with a uv_write of the rest (a request of its
 * own) only when the socket took less than all of it. The
 * alloc callback hands out the connection's 64 KiB buffer, as the other
 * servers use one: if libuv could not write everything at once, reading
 * stops until the write queue drains, so the buffer is never reused while
 * libuv still needs it (a malloc per read instead costs brk churn in glibc
 * that the other servers don't pay). Usage and output: net_server.h (libuv
 * binds its own listener). */
#include "net_server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <uv.h>

typedef struct conn {
  uv_tcp_t tcp; /* first: the handle is the connection */
  int paused;   /* reading stopped until the write queue drains */
  char buf[65536];
} conn_t;

typedef struct wreq {
  uv_write_t req;
  uv_buf_t buf;
} wreq_t;

static uv_loop_t *L;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "net_uv: %s: %s\n", what, uv_strerror(rc));
    exit(1);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  *buf = uv_buf_init(((conn_t *)h)->buf, sizeof((conn_t *)h)->buf);
}

static void on_closed(uv_handle_t *h) {
  free(h);
  if (w_closed())
    uv_stop(L);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = (conn_t *)req->handle;
  if (status == 0)
    w_echoed(w->buf.len);
  free(w);
  /* An error shows up on the read side too; a closing handle gets here
   * with UV_ECANCELED. */
  if (status == 0 && c->paused && !uv_is_closing((uv_handle_t *)c) &&
      uv_stream_get_write_queue_size((uv_stream_t *)c) == 0) {
    c->paused = 0;
    uv_read_start((uv_stream_t *)c, on_alloc, on_read);
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    int sent = uv_try_write(s, &b, 1);
    if (sent == n) {
      w_echoed((size_t)n);
      return;
    }
    if (sent < 0 && sent != UV_EAGAIN) {
      uv_close((uv_handle_t *)s, on_closed);
      return;
    }
    if (sent > 0) {
      w_echoed((size_t)sent);
      b = uv_buf_init(buf->base + sent, (unsigned)(n - sent));
    }
    wreq_t *w = malloc(sizeof *w);
    if (w == NULL) {
      fprintf(stderr, "net_uv: out of memory\n");
      exit(1);
    }
    w->buf = b;
    if (uv_write(&w->req, s, &w->buf, 1, on_written) != 0) {
      free(w);
      uv_close((uv_handle_t *)s, on_closed);
    } else if (uv_stream_get_write_queue_size(s) > 0) {
      ((conn_t *)s)->paused = 1; /* partial write: stop reading */
      uv_read_stop(s);
    }
    return;
  }
  if (n < 0) /* UV_EOF or an error */
    uv_close((uv_handle_t *)s, on_closed);
}

static void on_conn(uv_stream_t *server, int status) {
  check(status, "listen");
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    fprintf(stderr, "net_uv: out of memory\n");
    exit(1);
  }
  check(uv_tcp_init(L, &c->tcp), "uv_tcp_init");
  check(uv_accept(server, (uv_stream_t *)c), "uv_accept");
  uv_tcp_nodelay(&c->tcp, 1);
  w_accepted();
  check(uv_read_start((uv_stream_t *)c, on_alloc, on_read), "uv_read_start");
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  signal(SIGPIPE, SIG_IGN); /* libuv leaves SIGPIPE alone */
  L = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in sin;
  int len = sizeof sin;
  check(uv_tcp_init(L, &server), "uv_tcp_init");
  check(uv_ip4_addr("127.0.0.1", 0, &sin), "uv_ip4_addr");
  check(uv_tcp_bind(&server, (struct sockaddr *)&sin, 0), "uv_tcp_bind");
  check(uv_listen((uv_stream_t *)&server, 1024, on_conn), "uv_listen");
  check(uv_tcp_getsockname(&server, (struct sockaddr *)&sin, &len),
        "uv_tcp_getsockname");
  printf("port %d\n", ntohs(sin.sin_port));
  fflush(stdout);
  uv_run(L, UV_RUN_DEFAULT);
  return 0;
}
