/* SPDX-License-Identifier: MIT */
/* bench/stream_weft.c: stream.read_line.weft: the same lines read with a
 * weft_reader_t on the loop, the way a callback program does: every line
 * already buffered with weft_reader_try_line() (no allocation), then one
 * weft_reader_read_line() future, continued with weft_watch_start().
 * Usage: bench_stream_weft <lines>; prints ns per line. */
#include "stream_peer.h"

#include <weft.h>

typedef struct st {
  weft_reader_t *r;
  weft_executor_t *ex;
  weft_watch_t watch;
  long got;
  size_t bytes;
  int end;
} st_t;

static void pump(st_t *s);

static void take(st_t *s, weft_future_t *f) {
  int e = weft_future_error(f);
  if (e == 0) {
    const weft_bytes_t *b = weft_future_value(f);
    s->bytes += b->len;
    s->got++;
  } else {
    s->end = e;
  }
}

static void on_line(void *arg, weft_future_t *f) {
  st_t *s = arg;
  take(s, f);
  if (s->end == 0)
    pump(s);
}

static void pump(st_t *s) {
  for (;;) {
    weft_bytes_t b;
    int rc;
    while ((rc = weft_reader_try_line(s->r, 256, &b)) == 0) {
      s->bytes += b.len;
      s->got++;
    }
    if (rc != WEFT_EAGAIN) {
      s->end = rc;
      return;
    }
    weft_future_t *f;
    if (weft_reader_read_line(s->r, 256, 0, &f) != 0) {
      s->end = WEFT_ENOMEM;
      return;
    }
    if (weft_future_state(f) == WEFT_PENDING) {
      weft_watch_start(&s->watch, f, s->ex, on_line, s, NULL);
      return;
    }
    take(s, f);
    weft_future_release(f);
    if (s->end != 0)
      return;
  }
}

int main(int argc, char **argv) {
  long lines = argc > 1 ? atol(argv[1]) : 1000000;
  size_t bufsize = argc > 2 ? (size_t)atol(argv[2]) : 65536;
  sp_feed_t f = {.lines = lines};
  sp_path(f.path, sizeof f.path);
  weft_loop_t *loop;
  weft_addr_t addr;
  weft_socket_t *ls, *sock;
  weft_future_t *af;
  if (weft_loop_create(NULL, &loop) != 0 ||
      weft_addr_init_unix(f.path, &addr) != 0 ||
      weft_socket_listen(loop, &addr, 1, &ls) != 0 ||
      weft_socket_accept(ls, &af) != 0)
    return 1;
  sp_feed_start(&f);
  if (weft_loop_run_until(loop, af, 10000) != 0 ||
      weft_socket_take(af, &sock) != 0)
    return 1;
  weft_future_release(af);
  st_t s = {.ex = weft_loop_executor(loop)};
  weft_reader_options_t o = {.size = sizeof o, .buffer_size = bufsize};
  if (weft_reader_create(sock, &o, &s.r) != 0)
    return 1;
  int64_t t0 = sp_now_ns();
  pump(&s);
  while (s.end == 0)
    weft_loop_run(loop, WEFT_RUN_ONCE);
  int64_t t1 = sp_now_ns();
  pthread_join(f.t, NULL);
  weft_reader_close(s.r);
  weft_socket_close(sock);
  weft_socket_close(ls);
  weft_loop_close(loop);
  unlink(f.path);
  if (s.end != WEFT_EOF || s.got != lines ||
      s.bytes != (size_t)lines * (SP_LINE - 1)) {
    fprintf(stderr, "stream_weft: %ld lines, %zu bytes, end %d\n", s.got,
            s.bytes, s.end);
    return 1;
  }
  printf("%.2f\n", (double)(t1 - t0) / (double)lines);
  return 0;
}
