/* SPDX-License-Identifier: MIT */
/* samples/chat_server.c: the chat server of the classic event-loop
 * tutorials, on weft. Clients connect over TCP and send lines; every line
 * goes to every other client. What a real one needs beyond the toy:
 *  - a write queue per client with a limit: a client that does not read is
 *    dropped, not allowed to grow the server's memory without bound;
 *  - an idle timeout that closes clients that stay silent;
 *  - a heartbeat (a repeating timer) that reports the room's state;
 *  - a graceful shutdown on SIGINT/SIGTERM: every client is told, its queued
 *    lines are flushed (for a bounded time), every socket is closed.
 * One bad client closes only its own connection.
 *
 *   chat_server [--port N] [--max-queue BYTES] [--idle-ms MS]
 *               [--heartbeat-ms MS] [--help]
 *   nc 127.0.0.1 7001      (in two terminals; type lines)
 *
 * Prints "chat_server: listening on 127.0.0.1:PORT" once ready.
 *
 * Lines: a line is at most 4,095 bytes before its newline (4,096 with it;
 * a '\r' before the newline is dropped). Every other client gets it as
 * "guestN: <line>"; lines from the server start with "* ". A line the
 * server will not relay is answered, to its sender only, with one line
 * "* error: <what>, not relayed" and the connection goes on: a longer line
 * (skipped up to its next newline) and a line with a NUL byte in it. */
#include <weft.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 4096 /* bytes of a line with its newline */

typedef struct client {
  weft_socket_t *sock;
  weft_reader_t *in;  /* lines in, each within the idle timeout */
  weft_writer_t *out; /* lines out, at most --max-queue bytes queued */
  struct client *prev, *next;
  int id;
  int closed;   /* left the room (socket closed) */
  int refs;     /* the room's, a pending read's, a pending flush's */
  int skipping; /* inside an over-long line: drop bytes to its newline */
  weft_watch_t reading, flushing; /* their continuations, no allocation */
} client_t;

static struct {
  weft_loop_t *loop;
  weft_executor_t *on_loop;
  weft_socket_t *listener;
  weft_watch_t accepting, signalled[2];
  client_t *clients;
  long online, next_id, lines, dropped_slow, dropped_idle;
  size_t max_queue;
  int64_t idle_ms;
  weft_timer_t heartbeat;
  int stopping;
  long flushing; /* clients still flushing at shutdown */
} chat;

static void client_leave(client_t *c, const char *why);

/* Queue text to c, or drop c if its queue would pass the limit. */
static void send_text(client_t *c, const char *text, size_t len) {
  if (c->closed)
    return;
  int rc = weft_writer_write(c->out, text, len);
  if (rc == WEFT_EAGAIN) {
    chat.dropped_slow++;
    client_leave(c, "slow reader, dropped");
  } else if (rc != 0) {
    client_leave(c, "write failed");
  }
}

static void client_put(client_t *c) {
  if (--c->refs == 0)
    free(c);
}

static void client_put_any(void *c) { client_put(c); }

/* Send a line to everyone except `from` (NULL: everyone). */
static void broadcast(client_t *from, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void broadcast(client_t *from, const char *fmt, ...) {
  char text[MAX_LINE + 64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  size_t len = n < 0                     ? 0
               : (size_t)n < sizeof text ? (size_t)n
                                         : sizeof text - 1;
  client_t *next;
  for (client_t *c = chat.clients; c != NULL; c = next) {
    next = c->next; /* send_text may drop c */
    if (c != from)
      send_text(c, text, len);
  }
}

/* Take c out of the room and close its socket. Its pending read (if any)
 * is cancelled; whoever drops the last reference frees c. Bytes queued for
 * it go unless it was flushed first. */
static void client_leave(client_t *c, const char *why) {
  if (c->closed)
    return;
  c->closed = 1;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    chat.clients = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  chat.online--;
  weft_reader_close(c->in);
  weft_writer_close(c->out);
  weft_socket_close(c->sock);
  fprintf(stderr, "chat_server: guest%d left (%s)\n", c->id, why);
  if (!chat.stopping)
    broadcast(NULL, "* guest%d left (%s)\n", c->id, why);
  client_put(c); /* the room's reference */
}

/* Tell c alone why its line went nowhere. */
static void refuse(client_t *c, const char *what) {
  char text[128];
  int n = snprintf(text, sizeof text, "* error: %s, not relayed\n", what);
  send_text(c, text, (size_t)n);
}

/* One outcome of c's reader: a line (rc 0), a line too long, or the end.
 * The line's bytes are the reader's, valid until its next call. */
static void take(client_t *c, int rc, const weft_bytes_t *line) {
  if (rc == WEFT_EMSGSIZE) { /* MAX_LINE bytes and no newline yet */
    if (!c->skipping)
      refuse(c, "line longer than 4095 bytes (skipped to its newline)");
    c->skipping = 1;
    weft_reader_consume(c->in, MAX_LINE); /* none of them is a newline */
  } else if (rc == 0 && c->skipping) {
    c->skipping = 0; /* the end of an over-long line: dropped */
  } else if (rc == 0 && memchr(line->data, 0, line->len) != NULL) {
    refuse(c, "NUL byte in the line"); /* "%.*s" would cut it there */
  } else if (rc == 0) {
    chat.lines++;
    broadcast(c, "guest%d: %.*s\n", c->id, (int)line->len, line->data);
  } else if (rc == WEFT_ETIMEDOUT) {
    chat.dropped_idle++;
    client_leave(c, "idle timeout");
  } else {
    client_leave(c, rc == WEFT_EOF ? "quit" : "error");
  }
}
_Static_assert(MAX_LINE == 4096, "take's message states MAX_LINE - 1");

static void client_read(client_t *c);

/* A line came (or the end): handle it and every whole line buffered
 * behind it, then wait for the next. */
static void on_line(void *arg, weft_future_t *f) {
  client_t *c = arg;
  int rc = weft_future_error(f);
  weft_bytes_t line;
  if (!c->closed)
    take(c, rc, rc == 0 ? weft_future_value(f) : NULL);
  while (!c->closed &&
         ((rc = weft_reader_try_line(c->in, MAX_LINE, &line)) == 0 ||
          rc == WEFT_EMSGSIZE))
    take(c, rc, &line);
  if (!c->closed)
    client_read(c);
  client_put(c); /* the read's reference */
}

static void client_read(client_t *c) {
  weft_future_t *f;
  int64_t idle_end = weft_clock_now_ns() + chat.idle_ms * 1000000;
  if (weft_reader_read_line(c->in, MAX_LINE, idle_end, &f) != 0) {
    client_leave(c, "read failed");
    return;
  }
  c->refs++;
  weft_watch_start(&c->reading, f, chat.on_loop, on_line, c, client_put_any);
}

static void accept_next(void);

/* A new client: into the room, told who it is, then read. */
static void join(weft_socket_t *s) {
  client_t *c = chat.stopping ? NULL : calloc(1, sizeof *c);
  const weft_reader_options_t ro = {.size = sizeof ro};
  const weft_writer_options_t wo = {.size = sizeof wo,
                                    .max_queued = chat.max_queue};
  if (c == NULL || weft_reader_create(s, &ro, &c->in) != 0 ||
      weft_writer_create(s, &wo, &c->out) != 0) {
    if (c != NULL && c->in != NULL)
      weft_reader_close(c->in);
    free(c); /* shutting down, or out of memory: refuse this one */
    weft_socket_close(s);
    return;
  }
  c->sock = s;
  c->refs = 2; /* in the room, and ours until the end of this block */
  c->id = (int)++chat.next_id;
  broadcast(NULL, "* guest%d joined\n", c->id);
  c->next = chat.clients;
  if (chat.clients != NULL)
    chat.clients->prev = c;
  chat.clients = c;
  chat.online++;
  char hello[64];
  int n = snprintf(hello, sizeof hello, "* welcome guest%d, %ld online\n",
                   c->id, chat.online);
  send_text(c, hello, (size_t)n);
  if (!c->closed) /* (the welcome may have dropped it) */
    client_read(c);
  client_put(c);
}

static void on_accept(void *arg, weft_future_t *f) {
  (void)arg;
  weft_socket_t *s;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    if (!chat.stopping)
      fprintf(stderr, "chat_server: accept: %s\n",
              weft_error_message(weft_future_error(f)));
    return;
  }
  if (weft_socket_take(f, &s) == 0) /* (not: closed by the loop's close) */
    join(s);
  accept_next();
}

static void accept_next(void) {
  weft_future_t *a;
  if (weft_socket_accept(chat.listener, &a) == 0)
    weft_watch_start(&chat.accepting, a, chat.on_loop, on_accept, NULL, NULL);
}

static void on_heartbeat(weft_timer_t *t, int status, void *arg) {
  (void)t, (void)arg;
  if (status == 0)
    fprintf(stderr,
            "chat_server: heartbeat: %ld online, %ld lines, dropped %ld slow "
            "and %ld idle\n",
            chat.online, chat.lines, chat.dropped_slow, chat.dropped_idle);
}

/* ---- graceful shutdown ---- */

static void flushed_one(void) {
  if (--chat.flushing == 0)
    weft_loop_stop(chat.loop);
}

/* c took its goodbye, or did not within the deadline, or went away. */
static void on_flushed(void *arg, weft_future_t *f) {
  client_t *c = arg;
  client_leave(c, weft_future_error(f) == WEFT_ETIMEDOUT
                      ? "server shutdown, flush timed out"
                      : "server shutdown");
  client_put(c); /* the flush's reference */
  flushed_one();
}

static void on_signal(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED || chat.stopping)
    return;
  fprintf(stderr, "chat_server: signal %d: shutting down\n",
          (int)weft_future_int(f));
  chat.stopping = 1;
  weft_socket_close(chat.listener);
  weft_timer_stop(&chat.heartbeat);
  /* Tell everyone, give each 2 s to take what is queued for it (the
   * goodbye included), and close. */
  broadcast(NULL, "* server shutting down, bye\n");
  int64_t flush_end = weft_clock_now_ns() + 2000 * (int64_t)1000000;
  chat.flushing = 1; /* ours, dropped below */
  client_t *next;
  for (client_t *c = chat.clients; c != NULL; c = next) {
    next = c->next; /* client_leave may free c */
    weft_future_t *fl;
    if (weft_writer_flush(c->out, flush_end, &fl) != 0) {
      client_leave(c, "server shutdown"); /* nothing left to flush */
      continue;
    }
    chat.flushing++;
    c->refs++;
    weft_watch_start(&c->flushing, fl, chat.on_loop, on_flushed, c,
                     client_put_any);
  }
  flushed_one();
}

static const char usage_text[] =
    "usage: chat_server [--port N] [--max-queue BYTES] [--idle-ms MS]\n"
    "                   [--heartbeat-ms MS] [--help]\n"
    "  --port N           listen on 127.0.0.1:N, 0..65535 (default 7001;\n"
    "                     0: any free port)\n"
    "  --max-queue BYTES  drop a client with more than this queued for it,\n"
    "                     8192..1073741824 (default 262144)\n"
    "  --idle-ms MS       close a client silent this long, 1..86400000\n"
    "                     (default 300000)\n"
    "  --heartbeat-ms MS  log the room's state this often, 1..86400000\n"
    "                     (default 10000)\n"
    "\n"
    "Each line a client sends (at most 4095 bytes before its newline; a "
    "'\\r'\nbefore it is dropped) goes to every other client as "
    "\"guestN: <line>\".\nLines from the server start with \"* \". A "
    "longer line (skipped up to its\nnewline) or a line with a NUL byte "
    "is not relayed: its sender alone gets\n\"* error: <what>, not "
    "relayed\" and the connection goes on.\n";

/* A decimal number in [lo, hi], the whole of s; 0 if it is one. */
static int number(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end != 0 || errno == ERANGE || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* The options, each a decimal number in its range: 0, or -1 for a bad
 * command line. */
static int options(int argc, char **argv, long *port, long *beat) {
  static const struct {
    const char *name;
    long lo, hi;
  } known[] = {{"--port", 0, 65535},
               {"--max-queue", MAX_LINE * 2, 1L << 30},
               {"--idle-ms", 1, 86400000},
               {"--heartbeat-ms", 1, 86400000}};
  long value[4] = {7001, 256 * 1024, 5 * 60 * 1000, 10000};
  for (int i = 1; i < argc; i += 2) {
    int k = 0;
    while (k < 4 && strcmp(argv[i], known[k].name) != 0)
      k++;
    if (k == 4)
      return -1;
    if (i + 1 == argc ||
        number(argv[i + 1], known[k].lo, known[k].hi, &value[k]) != 0) {
      fprintf(stderr, "chat_server: %s needs a number in %ld..%ld\n",
              known[k].name, known[k].lo, known[k].hi);
      return -1;
    }
  }
  *port = value[0];
  chat.max_queue = (size_t)value[1];
  chat.idle_ms = value[2];
  *beat = value[3];
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(usage_text, stdout);
    return 0;
  }
  long port, beat;
  if (options(argc, argv, &port, &beat) != 0) {
    fputs(usage_text, stderr);
    return 2;
  }
  weft_addr_t addr;
  int rc = weft_loop_create(NULL, &chat.loop);
  if (rc == 0)
    rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(chat.loop, &addr, 128, &chat.listener);
  if (rc == 0)
    rc = weft_socket_local_addr(chat.listener, &addr);
  if (rc != 0) {
    fprintf(stderr, "chat_server: %s\n", weft_error_message(rc));
    return 1;
  }
  chat.on_loop = weft_loop_executor(chat.loop);
  int sigs[] = {SIGINT, SIGTERM};
  for (int i = 0; i < 2; i++) {
    weft_future_t *s;
    if (weft_signal_next(chat.loop, sigs[i], &s) == 0)
      weft_watch_start(&chat.signalled[i], s, chat.on_loop, on_signal, NULL,
                       NULL);
  }
  weft_timer_init(chat.loop, &chat.heartbeat, on_heartbeat, NULL);
  weft_timer_start(&chat.heartbeat, beat, beat);
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("chat_server: listening on %s\n", name);
  fflush(stdout);
  accept_next();
  weft_loop_run(chat.loop, WEFT_RUN_DEFAULT);
  fprintf(stderr, "chat_server: closed; %ld lines relayed\n", chat.lines);
  weft_loop_close(chat.loop);
  return 0;
}
