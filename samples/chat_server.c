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

/* A line, shared by every client it is queued to (refcounted). */
typedef struct line {
  long refs;
  size_t len;
  char text[];
} line_t;

typedef struct client {
  weft_socket_t *sock;
  struct client *prev, *next;
  int id;
  int closed;   /* left the room (socket closed) */
  int refs;     /* the room's, a pending read's, a pending flush's */
  int skipping; /* inside an over-long line: drop bytes to its newline */
  weft_timer_t idle;
  size_t have; /* bytes of a partial line in buf */
  char buf[MAX_LINE];
} client_t;

static struct {
  weft_loop_t *loop;
  weft_executor_t *on_loop;
  weft_socket_t *listener;
  client_t *clients;
  long online, next_id, lines, dropped_slow, dropped_idle;
  size_t max_queue;
  int64_t idle_ms;
  weft_timer_t heartbeat, shutdown_deadline;
  int stopping;
  long flushing; /* clients still flushing at shutdown */
} chat;

static void then(weft_future_t *f, weft_then_fn fn, void *arg,
                 weft_dtor_fn dtor) {
  weft_future_t *next;
  if (weft_future_then(f, chat.on_loop, fn, arg, dtor, &next) != 0) {
    fprintf(stderr, "chat_server: out of memory\n");
    exit(1);
  }
  weft_future_release(f);
  weft_future_release(next);
}

static void line_put(void *p) {
  line_t *l = p;
  if (--l->refs == 0)
    free(l);
}

static weft_result_t line_written(void *arg, weft_future_t *f) {
  (void)f; /* a failed write: the read side finds out and closes */
  line_put(arg);
  return weft_ok_int(0);
}

static void client_leave(client_t *c, const char *why);

/* Queue l to c, or drop c if its queue is over the limit. */
static void send_line(client_t *c, line_t *l) {
  if (c->closed)
    return;
  if (weft_socket_write_queued(c->sock) + l->len > chat.max_queue) {
    chat.dropped_slow++;
    client_leave(c, "slow reader, dropped");
    return;
  }
  weft_future_t *w;
  if (weft_socket_write(c->sock, l->text, l->len, &w) != 0) {
    client_leave(c, "write failed");
    return;
  }
  l->refs++;
  then(w, line_written, l, line_put);
}

static line_t *line_new(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* Sized to its text: a slow reader's queue holds up to --max-queue bytes
 * of lines, and that must be what they cost. */
static line_t *line_new(const char *fmt, ...) {
  char text[MAX_LINE + 64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  size_t len = n < 0                     ? 0
               : (size_t)n < sizeof text ? (size_t)n
                                         : sizeof text - 1;
  line_t *l = malloc(sizeof *l + len);
  if (l == NULL)
    return NULL;
  memcpy(l->text, text, len);
  l->len = len;
  l->refs = 1; /* the sender's, dropped after the fan-out */
  return l;
}

/* Send l to everyone except `from` (NULL: everyone). */
static void broadcast(client_t *from, line_t *l) {
  if (l == NULL)
    return;
  client_t *next;
  for (client_t *c = chat.clients; c != NULL; c = next) {
    next = c->next; /* send_line may drop c */
    if (c != from)
      send_line(c, l);
  }
  line_put(l);
}

static void client_put(client_t *c) {
  if (--c->refs == 0)
    free(c);
}

static void client_put_any(void *c) { client_put(c); }

/* Take c out of the room and close its socket. Its pending read (if any)
 * is cancelled by the close; whoever drops the last reference frees c. */
static void client_leave(client_t *c, const char *why) {
  if (c->closed)
    return;
  c->closed = 1;
  weft_timer_stop(&c->idle);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    chat.clients = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  chat.online--;
  if (c->sock != NULL)
    weft_socket_close(c->sock);
  fprintf(stderr, "chat_server: guest%d left (%s)\n", c->id, why);
  if (!chat.stopping)
    broadcast(NULL, line_new("* guest%d left (%s)\n", c->id, why));
  client_put(c); /* the room's reference */
}

static void client_read(client_t *c);

static void handle_read(client_t *c, weft_future_t *f);

/* Split what arrived into lines and send each to everyone else. */
static weft_result_t on_read(void *arg, weft_future_t *f) {
  client_t *c = arg;
  if (!c->closed)
    handle_read(c, f);
  client_put(c); /* the read's reference */
  return weft_ok_int(0);
}

/* Tell c alone why its line went nowhere. */
static void refuse(client_t *c, const char *what) {
  line_t *l = line_new("* error: %s, not relayed\n", what);
  if (l != NULL) {
    send_line(c, l);
    line_put(l);
  }
}

/* One complete line of c, n bytes without its newline. */
static void handle_line(client_t *c, const char *s, size_t n) {
  if (n > 0 && s[n - 1] == '\r')
    n--;
  if (memchr(s, 0, n) != NULL) { /* "%.*s" would cut it there */
    refuse(c, "NUL byte in the line");
    return;
  }
  chat.lines++;
  broadcast(c, line_new("guest%d: %.*s\n", c->id, (int)n, s));
}

static void handle_read(client_t *c, weft_future_t *f) {
  if (weft_future_state(f) != WEFT_FULFILLED) {
    int err = weft_future_error(f);
    if (err == WEFT_ECANCELED)
      /* only the loop's close cancels an open client's read, and it closed
       * the socket itself */
      c->sock = NULL;
    client_leave(c, err == WEFT_EOF ? "quit" : "error");
    return;
  }
  c->have += (size_t)weft_future_int(f);
  weft_timer_start(&c->idle, chat.idle_ms, 0); /* it spoke: reset */
  size_t start = 0;
  for (size_t i = 0; i < c->have && !c->closed; i++) {
    if (c->buf[i] != '\n')
      continue;
    if (c->skipping)
      c->skipping = 0; /* the end of an over-long line: dropped */
    else
      handle_line(c, c->buf + start, i - start);
    start = i + 1;
  }
  if (c->closed)
    return;
  if (c->skipping)
    start = c->have; /* still inside an over-long line */
  memmove(c->buf, c->buf + start, c->have - start);
  c->have -= start;
  if (c->have == sizeof c->buf) { /* no newline in MAX_LINE bytes */
    refuse(c, "line longer than 4095 bytes (skipped to its newline)");
    c->skipping = 1;
    c->have = 0;
  }
  if (!c->closed) /* (refuse may drop a slow reader) */
    client_read(c);
}
_Static_assert(MAX_LINE == 4096, "handle_read's message states MAX_LINE - 1");

static void client_read(client_t *c) {
  weft_future_t *r;
  if (weft_socket_read(c->sock, c->buf + c->have, sizeof c->buf - c->have,
                       &r) != 0) {
    client_leave(c, "read failed");
    return;
  }
  c->refs++;
  then(r, on_read, c, client_put_any); /* the dtor: if on_read never runs */
}

static void on_idle(weft_timer_t *t, int status, void *arg) {
  (void)t;
  client_t *c = arg;
  if (status != 0 || c->closed)
    return;
  chat.dropped_idle++;
  client_leave(c, "idle timeout");
}

static void accept_next(void);

static weft_result_t on_accept(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED) {
    if (!chat.stopping)
      fprintf(stderr, "chat_server: accept: %s\n",
              weft_error_message(weft_future_error(f)));
    return weft_ok_int(0);
  }
  weft_socket_t *s;
  if (weft_socket_take(f, &s) != 0) { /* (closed by the loop's close) */
    accept_next();
    return weft_ok_int(0);
  }
  client_t *c = chat.stopping ? NULL : calloc(1, sizeof *c);
  if (c == NULL) { /* shutting down, or out of memory: refuse this one */
    weft_socket_close(s);
  } else {
    c->sock = s;
    c->refs = 2; /* in the room, and ours until the end of this block */
    c->id = (int)++chat.next_id;
    weft_timer_init(chat.loop, &c->idle, on_idle, c);
    weft_timer_start(&c->idle, chat.idle_ms, 0);
    broadcast(NULL, line_new("* guest%d joined\n", c->id));
    c->next = chat.clients;
    if (chat.clients != NULL)
      chat.clients->prev = c;
    chat.clients = c;
    chat.online++;
    line_t *hello = line_new("* welcome guest%d, %ld online\n", c->id,
                             chat.online);
    if (hello != NULL) {
      send_line(c, hello);
      line_put(hello);
    }
    if (!c->closed) /* (the welcome may have dropped it) */
      client_read(c);
    client_put(c);
  }
  accept_next();
  return weft_ok_int(0);
}

static void accept_next(void) {
  weft_future_t *a;
  if (weft_socket_accept(chat.listener, &a) == 0)
    then(a, on_accept, NULL, NULL);
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

static weft_result_t on_flushed(void *arg, weft_future_t *f) {
  (void)f; /* flushed, or the client went away: either way, done */
  client_t *c = arg;
  client_leave(c, "server shutdown");
  client_put(c); /* the flush's reference */
  flushed_one();
  return weft_ok_int(0);
}

static void on_deadline(weft_timer_t *t, int status, void *arg) {
  (void)t, (void)arg;
  if (status != 0)
    return;
  /* Clients that did not take their goodbye in time are closed now; the
   * close cancels their flush, whose continuation counts them. */
  client_t *next;
  for (client_t *c = chat.clients; c != NULL; c = next) {
    next = c->next;
    client_leave(c, "server shutdown, flush timed out");
  }
}

static weft_result_t on_signal(void *arg, weft_future_t *f) {
  (void)arg;
  if (weft_future_state(f) != WEFT_FULFILLED || chat.stopping)
    return weft_ok_int(0);
  fprintf(stderr, "chat_server: signal %d: shutting down\n",
          (int)weft_future_int(f));
  chat.stopping = 1;
  weft_socket_close(chat.listener);
  weft_timer_stop(&chat.heartbeat);
  /* Tell everyone, then shut down each write side once its queue (the
   * goodbye included) is flushed, and close. */
  broadcast(NULL, line_new("* server shutting down, bye\n"));
  chat.flushing = 1; /* ours, dropped below */
  client_t *next;
  for (client_t *c = chat.clients; c != NULL; c = next) {
    next = c->next; /* client_leave may free c */
    weft_future_t *sd;
    if (weft_socket_shutdown(c->sock, &sd) != 0) {
      client_leave(c, "server shutdown"); /* nothing left to flush */
      continue;
    }
    chat.flushing++;
    c->refs++;
    then(sd, on_flushed, c, client_put_any);
  }
  weft_timer_init(chat.loop, &chat.shutdown_deadline, on_deadline, NULL);
  weft_timer_start(&chat.shutdown_deadline, 2000, 0);
  flushed_one();
  return weft_ok_int(0);
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
      then(s, on_signal, NULL, NULL);
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
