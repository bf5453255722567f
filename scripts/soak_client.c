/* SPDX-License-Identifier: MIT */
/* scripts/soak_client.c: the client half of scripts/soak.sh. Plain sockets
 * and one epoll thread, no weft. It keeps N client slots busy for a given
 * time against echo_server or chat_server on 127.0.0.1; each slot runs one
 * session after another, each session a behaviour drawn from the slot's
 * own seeded generator:
 *
 *   normal  echo: requests of 1 B..32 KiB, each echoed before the next;
 *           chat: paced lines, then shutdown(SHUT_WR) and read to the end
 *   churn   connect, one small request or line, leave, reconnect at once
 *   half    send a burst without waiting, shutdown(SHUT_WR), read the rest
 *   reset   send, then SO_LINGER 0 and close at a random moment
 *   slow    a small receive buffer, read a little and sleep (the server's
 *           write queue backs up: echo must hold the client back, chat must
 *           drop it once --max-queue is passed)
 *   idle    connect and send nothing (echo: then one request, which must
 *           still be answered; chat: the server must close it after about
 *           --idle-ms)
 *
 * Every byte an echo client gets back is checked against what it sent;
 * every chat line is checked byte for byte (its body is a function of its
 * sender and number), per sender in order with no gap, never to its own
 * sender, and a sender that quit must have reached every client that saw
 * it join. Every few seconds one line of counters with the server's VmRSS
 * and open fds; at the end a verdict, exit status 1 if it failed.
 *
 *   soak_client --mode echo|chat --port P --pid SERVER_PID [--seconds S]
 *               [--clients N] [--seed X] [--report S] [--idle-ms MS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- counters ---- */

/* clang-format off */
enum {
  /* expected: caused by us or promised by the server */
  X_RESET,     /* resets we sent */
  X_SLOWDROP,  /* chat: a slow reader closed by the server */
  X_IDLEDROP,  /* chat: an idle client closed by the server */
  X_TAIL,      /* chat: a line cut short at the end of a dropped client */
  X_NCOUNT,
  /* unexpected */
  U_CONNECT = X_NCOUNT, /* connect failed */
  U_CORRUPT,  /* a byte or a line not as sent */
  U_LOST,     /* a gap, bytes missing at end of stream, or an incomplete
                 sender */
  U_ORDER,    /* a line out of order or twice */
  U_OWN,      /* chat: a client got its own line */
  U_CLOSED,   /* the server closed or reset a well-behaved client */
  U_STUCK,    /* no progress from the server for STUCK_MS */
  U_PROTO,    /* chat: an unexpected server line (bad welcome, error) */
  U_IDLE,     /* chat: idle timeout far too early or too late */
  N_COUNT
};
static const char *count_name[N_COUNT] = {
    "reset", "slowclosed", "idleclosed", "tail",  "connect", "corrupt", "lost",
    "order", "own",      "closed",   "stuck", "proto",   "idle"};
/* clang-format on */
static long counts[N_COUNT];

enum kind { K_NORMAL, K_CHURN, K_HALF, K_RESET, K_SLOW, K_IDLE, K_N };
static const char *kind_name[K_N] = {"normal", "churn", "half",
                                     "reset",  "slow",  "idle"};
static long sessions[K_N];
static long requests, lines_sent, lines_got;
static unsigned long long bytes_ok;

#define STUCK_MS 20000
static int chat; /* mode */
static int port, clients = 200, report_s = 5;
static long seconds = 60, idle_ms = 8000;
static pid_t server;
static uint64_t seed = 1;
static int ep;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mix(uint64_t x) { /* splitmix64's finaliser */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
static uint64_t rnd(uint64_t *s) { return mix(*s += 0x9e3779b97f4a7c15ull); }
static long range(uint64_t *s, long lo, long hi) { /* [lo, hi] */
  return lo + (long)(rnd(s) % (uint64_t)(hi - lo + 1));
}

static int first_error = 1;
static void unexpected(int what, const char *fmt, ...) {
  counts[what]++;
  if (counts[what] <= 5) { /* the first few of each, in full */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: UNEXPECTED %s: ", count_name[what]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  first_error = 0;
}

/* ---- the server's figures ---- */

static long server_rss_kib(void) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)server);
  FILE *f = fopen(path, "r");
  long kib = -1;
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0)
      kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

static long server_fds(void) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)server);
  DIR *d = opendir(path);
  long n = 0;
  if (d == NULL)
    return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static int server_alive(void) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)server);
  FILE *f = fopen(path, "r");
  int alive = 0;
  if (f == NULL)
    return 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "State:", 6) == 0)
      alive = strchr(line, 'Z') == NULL && strchr(line, 'X') == NULL;
  fclose(f);
  return alive;
}

/* ---- chat bookkeeping ---- */

/* One per guest id the server gave out, kept for the whole run. */
typedef struct sender {
  int kind;
  int final;         /* 1 once it has sent its last line */
  long sent;         /* lines sent; the last one's number is sent - 1 */
  long seen_join;    /* clients that saw it join (and must get every line) */
  int slow_reported; /* a well-behaved one dropped as slow, reported */
} sender_t;
static sender_t *senders;
static long n_senders;

static sender_t *sender_of(long guest) {
  if (guest <= 0)
    return NULL;
  if (guest >= n_senders) {
    long n = n_senders ? n_senders : 1024;
    while (n <= guest)
      n *= 2;
    sender_t *s = realloc(senders, (size_t)n * sizeof *s);
    if (s == NULL) {
      perror("soak: realloc");
      exit(2);
    }
    memset(s + n_senders, 0, (size_t)(n - n_senders) * sizeof *s);
    senders = s, n_senders = n;
  }
  return &senders[guest];
}

/* What a receiver knows of one sender: a small open-addressing map. */
typedef struct track {
  long guest; /* 0: empty */
  long last;  /* number of the last line got, -1 none */
  int strict; /* saw it join: must get every line from number 0 */
} track_t;

typedef struct tmap {
  track_t *t;
  size_t cap, n;
} tmap_t;

static track_t *tmap_get(tmap_t *m, long guest, int add) {
  if (m->cap == 0 || (add && (m->n + 1) * 2 > m->cap)) {
    if (!add && m->cap == 0)
      return NULL;
    size_t cap = m->cap ? m->cap * 2 : 64;
    track_t *t = calloc(cap, sizeof *t);
    if (t == NULL) {
      perror("soak: calloc");
      exit(2);
    }
    for (size_t i = 0; i < m->cap; i++)
      if (m->t[i].guest != 0) {
        size_t j = (size_t)mix((uint64_t)m->t[i].guest) & (cap - 1);
        while (t[j].guest != 0)
          j = (j + 1) & (cap - 1);
        t[j] = m->t[i];
      }
    free(m->t);
    m->t = t, m->cap = cap;
  }
  size_t j = (size_t)mix((uint64_t)guest) & (m->cap - 1);
  while (m->t[j].guest != 0) {
    if (m->t[j].guest == guest)
      return &m->t[j];
    j = (j + 1) & (m->cap - 1);
  }
  if (!add)
    return NULL;
  m->t[j].guest = guest, m->t[j].last = -1, m->t[j].strict = 0;
  m->n++;
  return &m->t[j];
}

static void tmap_del(tmap_t *m, track_t *e) { /* backward-shift delete */
  size_t i = (size_t)(e - m->t), mask = m->cap - 1;
  for (size_t j = (i + 1) & mask; m->t[j].guest != 0; j = (j + 1) & mask) {
    size_t home = (size_t)mix((uint64_t)m->t[j].guest) & mask;
    /* move j to i if i lies cyclically in [home, j) */
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->t[i] = m->t[j];
      i = j;
    }
  }
  m->t[i].guest = 0;
  m->n--;
}

/* The body of line `seq` of guest g: printable, 0..200 bytes, one line in
 * twenty up to 2000. */
#define MAX_BODY 2000
static size_t body(long g, long seq, char *out) {
  uint64_t h = mix(seed ^ mix((uint64_t)g * 1000003u + (uint64_t)seq));
  size_t n = (size_t)(h % 20 == 0 ? (h >> 8) % (MAX_BODY + 1) : h % 201);
  for (size_t i = 0; i < n; i++) {
    if (i % 8 == 0)
      h = mix(h);
    out[i] = (char)(' ' + (h >> (8 * (i % 8))) % 95);
  }
  return n;
}

/* ---- connections ---- */

typedef struct conn {
  int fd, slot, kind;
  int state;
  int out_on;                      /* EPOLLOUT requested */
  int in_on;                       /* EPOLLIN requested */
  int64_t started, wake, progress; /* ms */
  int64_t rwake;                   /* slow: read again from then */
  int64_t shut_at;
  int64_t conn_at; /* connect() called: before the server's accept */
  uint64_t rng;
  /* echo */
  uint64_t sid;       /* the byte stream's id */
  uint64_t sent, got; /* bytes */
  uint64_t goal;      /* send up to here */
  long reqs;          /* requests left (normal, churn) */
  uint64_t cut;       /* reset: close once this much is sent */
  /* chat */
  long guest;
  long to_send, seq;
  char out[MAX_BODY + 32];
  size_t out_len, out_off;
  char in[8192];
  size_t in_len;
  tmap_t seen;
  int shut;  /* we sent our FIN */
  int stall; /* chat, slow: never reads (until the end) */
} conn_t;

enum { S_CONNECTING, S_RUN, S_DRAIN, S_SLEEP, S_DONE };

static conn_t *slots;
static uint64_t *slot_rng;
static int stopping; /* the run's time is up: no new sessions */
static long live;

static void set_events(conn_t *c, int in, int out) {
  if (c->fd < 0 || (in == c->in_on && out == c->out_on))
    return;
  struct epoll_event ev = {0};
  ev.events = (in ? EPOLLIN | EPOLLRDHUP : 0) | (out ? EPOLLOUT : 0);
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->in_on = in, c->out_on = out;
}

static void start_session(conn_t *c, int64_t now);

/* End c's session; abort: reset instead of a FIN. */
static void finish(conn_t *c, int abort_it) {
  if (c->fd >= 0) {
    if (abort_it) {
      struct linger l = {1, 0};
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd);
    c->fd = -1;
    live--;
  }
  if (c->guest > 0) {
    sender_t *s = sender_of(c->guest);
    s->final = 1;
  }
  free(c->seen.t);
  c->seen.t = NULL, c->seen.cap = c->seen.n = 0;
  c->state = S_SLEEP;
  c->wake = now_ms() + (c->kind == K_CHURN ? 0 : range(&c->rng, 0, 200));
}

/* Echo: the expected bytes of stream sid from offset off. */
static void expect_bytes(uint64_t sid, uint64_t off, unsigned char *out,
                         size_t n) {
  uint64_t w = 0;
  for (size_t i = 0; i < n; i++, off++) {
    if (i == 0 || off % 8 == 0)
      w = mix(sid ^ (off / 8) * 0x100000001b3ull);
    out[i] = (unsigned char)(w >> (8 * (off % 8)));
  }
}

/* ---- echo ---- */

static void echo_next_request(conn_t *c) {
  long n = c->kind == K_CHURN
               ? range(&c->rng, 1, 100)
               : (rnd(&c->rng) % 4 == 0 ? range(&c->rng, 1, 32768)
                                        : range(&c->rng, 1, 2048));
  c->goal = c->sent + (uint64_t)n;
}

static void echo_start(conn_t *c) {
  c->sid = rnd(&c->rng);
  c->sent = c->got = c->goal = 0;
  switch (c->kind) {
  case K_NORMAL:
  case K_CHURN:
    c->reqs = c->kind == K_CHURN ? 1 : range(&c->rng, 1, 200);
    echo_next_request(c);
    break;
  case K_HALF:
    c->goal = (uint64_t)range(&c->rng, 1, 256 * 1024);
    break;
  case K_RESET:
    c->goal = (uint64_t)range(&c->rng, 1, 512 * 1024);
    c->cut = (uint64_t)range(&c->rng, 0, (long)c->goal);
    break;
  case K_SLOW:
    c->goal = (uint64_t)range(&c->rng, 256 * 1024, 1024 * 1024);
    break;
  case K_IDLE:
    c->goal = 0;
    c->reqs = 1;
    c->wake = now_ms() + range(&c->rng, 2000, 20000);
    break;
  }
}

/* Read what the echo server sent back and check it. 0: go on. */
static int echo_read(conn_t *c, int64_t now) {
  static unsigned char buf[65536], want[65536];
  int slow = c->kind == K_SLOW && !stopping; /* at the end: drain */
  size_t cap = slow ? 4096 : sizeof buf;
  for (;;) {
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return 0;
    if (n <= 0) {
      int err = n < 0 ? errno : 0;
      if (n == 0 && c->shut && c->got == c->sent) { /* the clean end */
        sessions[c->kind]++;
        requests++;
        finish(c, 0);
        return 1;
      }
      if (c->got < c->sent)
        unexpected(U_LOST,
                   "echo slot %d (%s): %s with %" PRIu64 " of %" PRIu64
                   " bytes back",
                   c->slot, kind_name[c->kind], err ? strerror(err) : "EOF",
                   c->got, c->sent);
      else
        unexpected(U_CLOSED, "echo slot %d (%s): server %s", c->slot,
                   kind_name[c->kind], err ? strerror(err) : "closed");
      finish(c, 1);
      return 1;
    }
    if (c->got + (uint64_t)n > c->sent) {
      unexpected(U_CORRUPT, "echo slot %d: %zd bytes more than sent", c->slot,
                 n);
      finish(c, 1);
      return 1;
    }
    expect_bytes(c->sid, c->got, want, (size_t)n);
    if (memcmp(buf, want, (size_t)n) != 0) {
      size_t i = 0;
      while (buf[i] == want[i])
        i++;
      unexpected(U_CORRUPT, "echo slot %d: byte %" PRIu64 " differs", c->slot,
                 c->got + i);
      finish(c, 1);
      return 1;
    }
    c->got += (uint64_t)n;
    bytes_ok += (uint64_t)n;
    c->progress = now;
    if (slow) { /* a little, then sleep */
      c->rwake = now + 20;
      return 0;
    }
  }
}

static int echo_write(conn_t *c, int64_t now) {
  static unsigned char buf[65536];
  while (c->sent < c->goal) {
    if (c->kind == K_RESET && c->sent >= c->cut) {
      counts[X_RESET]++;
      sessions[K_RESET]++;
      finish(c, 1);
      return 1;
    }
    size_t n = c->goal - c->sent < sizeof buf ? c->goal - c->sent : sizeof buf;
    if (c->kind == K_RESET && c->cut - c->sent < n)
      n = c->cut - c->sent;
    expect_bytes(c->sid, c->sent, buf, n);
    ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN)
      return 0;
    if (w < 0) {
      unexpected(U_CLOSED, "echo slot %d (%s): send: %s", c->slot,
                 kind_name[c->kind], strerror(errno));
      finish(c, 1);
      return 1;
    }
    c->sent += (uint64_t)w;
    c->progress = now;
  }
  if (c->kind == K_RESET && c->sent >= c->cut) {
    counts[X_RESET]++;
    sessions[K_RESET]++;
    finish(c, 1);
    return 1;
  }
  return 0;
}

/* Advance an echo session; called on events and on its timer. */
static void echo_step(conn_t *c, int64_t now, int readable) {
  if (readable && echo_read(c, now))
    return;
  if (c->kind == K_IDLE && now < c->wake) { /* doing nothing */
    set_events(c, 1, 0);
    return;
  }
  if (c->kind == K_IDLE && c->goal == 0)
    echo_next_request(c), c->progress = now;
  if (echo_write(c, now))
    return;
  if (c->sent == c->goal && c->got == c->sent) {
    switch (c->kind) {
    case K_NORMAL:
    case K_CHURN:
    case K_IDLE:
      requests++;
      if (--c->reqs > 0 && !stopping) {
        echo_next_request(c);
        if (echo_write(c, now))
          return;
      } else {
        sessions[c->kind]++;
        finish(c, 0);
        return;
      }
      break;
    default:
      break;
    }
  }
  if ((c->kind == K_HALF || c->kind == K_SLOW) && c->sent == c->goal &&
      !c->shut) {
    shutdown(c->fd, SHUT_WR);
    c->shut = 1;
    c->shut_at = now;
  }
  int in = !(c->kind == K_SLOW && !stopping && now < c->rwake);
  set_events(c, in, c->sent < c->goal);
}

/* ---- chat ---- */

static void chat_queue_line(conn_t *c) {
  char b[MAX_BODY];
  size_t n = body(c->guest, c->seq, b);
  int k = snprintf(c->out, sizeof c->out, "%ld %.*s\n", c->seq, (int)n, b);
  c->out_len = (size_t)k, c->out_off = 0;
  sender_t *s = sender_of(c->guest);
  s->sent = ++c->seq;
  lines_sent++;
}

/* The guest's own number from "* welcome guestN, K online". */
static int chat_welcome(conn_t *c, const char *l, size_t n) {
  long g;
  if (n < 16 || sscanf(l, "* welcome guest%ld,", &g) != 1 || g <= 0) {
    unexpected(U_PROTO, "chat slot %d: first line not a welcome: %.*s", c->slot,
               (int)n, l);
    return -1;
  }
  c->guest = g;
  sender_t *s = sender_of(g);
  s->kind = c->kind, s->final = 0, s->sent = 0, s->seen_join = 0;
  c->seq = 0;
  switch (c->kind) {
  case K_NORMAL:
    c->to_send = range(&c->rng, 3, 30);
    break;
  case K_CHURN:
    c->to_send = 1;
    break;
  case K_HALF:
  case K_RESET:
    c->to_send = range(&c->rng, 1, 40);
    break;
  case K_SLOW:
    c->to_send = 1000000; /* one a second until dropped */
    /* A stalled one is dropped once the server's socket buffer (up to
     * tcp_wmem's maximum, 4 MiB by default) and then its queue are full:
     * it stays until then, or the end of the run. */
    c->stall = rnd(&c->rng) % 2 == 0; /* or reads a trickle */
    break;
  case K_IDLE:
    c->to_send = 0;
    break;
  }
  if (c->kind == K_RESET)
    c->cut = (uint64_t)range(&c->rng, 0, c->to_send);
  c->wake = now_ms() + (c->kind == K_HALF ? 0 : range(&c->rng, 0, 1000));
  return 0;
}

/* A sender left: check this receiver got all it had to. */
static void chat_left(conn_t *c, long g, const char *why) {
  sender_t *s = sender_of(g);
  track_t *t = tmap_get(&c->seen, g, 0);
  if (strcmp(why, "quit") == 0 && s->final && t != NULL &&
      (t->strict || t->last >= 0) && t->last != s->sent - 1)
    unexpected(U_LOST,
               "chat: guest%ld quit after %ld lines, guest%ld got "
               "up to %ld",
               g, s->sent, c->guest, t->last + 1);
  if (strcmp(why, "slow reader, dropped") == 0 && s->kind != K_SLOW &&
      !s->slow_reported++) /* (counted once, not by each witness) */
    unexpected(U_CLOSED, "chat: guest%ld (%s) dropped as a slow reader", g,
               kind_name[s->kind]);
  if (t != NULL)
    tmap_del(&c->seen, t);
}

static void chat_line(conn_t *c, const char *l, size_t n) { /* l[n] == 0 */
  lines_got++;
  if (c->guest == 0) {
    if (chat_welcome(c, l, n) != 0)
      finish(c, 1);
    return;
  }
  long g, seq;
  int off;
  if (n >= 2 && l[0] == '*' && l[1] == ' ') {
    char why[64];
    if (sscanf(l, "* guest%ld joined%n", &g, &off) == 1 && (size_t)off == n) {
      track_t *t = tmap_get(&c->seen, g, 1);
      t->strict = 1, t->last = -1;
      sender_of(g)->seen_join++;
      return;
    }
    if (sscanf(l, "* guest%ld left (%63[^)])%n", &g, why, &off) == 2 &&
        (size_t)off == n) {
      chat_left(c, g, why);
      return;
    }
    unexpected(U_PROTO, "chat guest%ld: %.*s", c->guest, (int)n, l);
    return;
  }
  if (sscanf(l, "guest%ld: %ld %n", &g, &seq, &off) != 2 || seq < 0) {
    unexpected(U_CORRUPT, "chat guest%ld: bad line: %.*s", c->guest, (int)n, l);
    return;
  }
  /* "%ld %n" skipped every space after the number, the body's own
   * leading ones too: find the single separator instead. */
  const char *p = (const char *)memchr(l, ':', n) + 2;
  while (p < l + n && *p != ' ')
    p++;
  if (p == l + n) {
    unexpected(U_CORRUPT, "chat guest%ld: no body: %.*s", c->guest, (int)n, l);
    return;
  }
  p++;
  char b[MAX_BODY];
  size_t bn = body(g, seq, b);
  if (g == c->guest) {
    unexpected(U_OWN, "chat guest%ld got its own line %ld", g, seq);
    return;
  }
  if ((size_t)(l + n - p) != bn || memcmp(p, b, bn) != 0) {
    unexpected(U_CORRUPT, "chat guest%ld: line %ld of guest%ld differs",
               c->guest, seq, g);
    return;
  }
  bytes_ok += n + 1;
  track_t *t = tmap_get(&c->seen, g, 1);
  if (seq <= t->last)
    unexpected(U_ORDER, "chat guest%ld: line %ld of guest%ld after %ld",
               c->guest, seq, g, t->last);
  else if (seq != t->last + 1 && (t->strict || t->last >= 0))
    unexpected(U_LOST, "chat guest%ld: line %ld of guest%ld after %ld",
               c->guest, seq, g, t->last);
  t->last = seq;
}

/* Read and split lines. 1: the session is over. */
static int chat_read(conn_t *c, int64_t now) {
  for (;;) {
    size_t cap = sizeof c->in - c->in_len;
    int slow = c->kind == K_SLOW && !stopping; /* at the end: drain */
    if (slow && cap > 256)
      cap = 256;
    ssize_t n = recv(c->fd, c->in + c->in_len, cap, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return 0;
    if (n <= 0) {
      int err = n < 0 ? errno : 0;
      int dropped = c->kind == K_SLOW || c->kind == K_IDLE;
      if (c->in_len > 0) {
        if (dropped || c->shut)
          counts[X_TAIL]++; /* its queue went with it */
        else
          unexpected(U_CORRUPT, "chat guest%ld: a cut line at the end",
                     c->guest);
      }
      if (c->kind == K_IDLE) {
        /* The server's timer counts from its loop's cached time, which
         * may be some way behind the accept when the loop is busy. */
        int64_t t = now - c->conn_at;
        if (t < idle_ms - 1000 || t > idle_ms + 5000)
          unexpected(U_IDLE,
                     "chat guest%ld: closed after %" PRId64
                     " ms with --idle-ms %ld",
                     c->guest, t, idle_ms);
        counts[X_IDLEDROP]++;
      } else if (c->kind == K_SLOW && !c->shut)
        counts[X_SLOWDROP]++;
      else if (!c->shut)
        unexpected(U_CLOSED, "chat guest%ld (%s): server %s after %ld lines",
                   c->guest, kind_name[c->kind], err ? strerror(err) : "closed",
                   c->seq);
      sessions[c->kind]++;
      finish(c, 0);
      return 1;
    }
    c->progress = now;
    c->in_len += (size_t)n;
    size_t start = 0;
    for (size_t i = 0; i < c->in_len; i++)
      if (c->in[i] == '\n') {
        c->in[i] = 0; /* (for sscanf) */
        chat_line(c, c->in + start, i - start);
        if (c->fd < 0)
          return 1;
        start = i + 1;
      }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len == sizeof c->in) {
      unexpected(U_CORRUPT, "chat guest%ld: no newline in %zu bytes", c->guest,
                 sizeof c->in);
      finish(c, 1);
      return 1;
    }
    if (slow) {
      c->rwake = now + 500;
      return 0;
    }
  }
}

static void chat_step(conn_t *c, int64_t now, int readable) {
  if (readable && chat_read(c, now))
    return;
  if (c->guest == 0) { /* waiting for the welcome */
    set_events(c, 1, 0);
    return;
  }
  for (;;) {
    if (c->out_off < c->out_len) {
      ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                       MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0 && errno == EAGAIN)
        break;
      if (w < 0) {
        if (c->kind != K_SLOW)
          unexpected(U_CLOSED, "chat guest%ld (%s): send: %s", c->guest,
                     kind_name[c->kind], strerror(errno));
        else
          counts[X_SLOWDROP]++; /* (a stalled one finds out so) */
        sessions[c->kind]++;
        finish(c, 1);
        return;
      }
      c->out_off += (size_t)w;
      c->progress = now;
      continue;
    }
    if (c->shut)
      break;
    if (c->kind == K_RESET && c->seq >= (long)c->cut) {
      counts[X_RESET]++;
      sessions[K_RESET]++;
      finish(c, 1);
      return;
    }
    if (c->seq >= c->to_send || (stopping && c->kind != K_IDLE)) {
      if (c->kind == K_IDLE)
        break; /* waits for the server's idle timeout */
      shutdown(c->fd, SHUT_WR);
      c->shut = 1;
      c->shut_at = now;
      sender_of(c->guest)->final = 1;
      break;
    }
    if (now < c->wake)
      break;
    chat_queue_line(c);
    if (c->kind == K_SLOW)
      c->wake = now + 1000;
    else if (c->kind != K_HALF)
      c->wake = now + range(&c->rng, 1000, idle_ms / 3);
  }
  if (c->kind == K_SLOW && !c->stall && !c->shut &&
      now >= c->started + 150000) {
    sessions[K_SLOW]++; /* not dropped yet: enough */
    finish(c, 1);
    return;
  }
  int in = !(c->kind == K_SLOW && !stopping && (c->stall || now < c->rwake));
  set_events(c, in, c->out_off < c->out_len);
}

/* ---- sessions ---- */

static int pick_kind(uint64_t *r) {
  static const int w_echo[K_N] = {35, 20, 15, 15, 5, 10};
  static const int w_chat[K_N] = {40, 15, 15, 15, 5, 10};
  const int *w = chat ? w_chat : w_echo;
  long x = range(r, 0, 99);
  for (int k = 0; k < K_N; k++)
    if ((x -= w[k]) < 0)
      return k;
  return K_NORMAL;
}

static void start_session(conn_t *c, int64_t now) {
  int slot = c->slot;
  tmap_t keep = {0};
  memset(c, 0, sizeof *c);
  c->seen = keep;
  c->slot = slot;
  c->rng = mix(slot_rng[slot]++ ^ seed);
  c->kind = pick_kind(&c->rng);
  c->started = c->progress = c->conn_at = now;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    unexpected(U_CONNECT, "socket: %s", strerror(errno));
    c->fd = -1, c->state = S_SLEEP, c->wake = now + 1000;
    return;
  }
  if (c->kind == K_SLOW) {
    int sz = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  }
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = fd;
  live++;
  struct epoll_event ev = {0};
  ev.events = EPOLLOUT;
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  c->out_on = 1, c->in_on = 0;
  c->state = S_CONNECTING;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 &&
      errno != EINPROGRESS) {
    unexpected(U_CONNECT, "connect: %s", strerror(errno));
    finish(c, 0);
    c->wake = now + 1000;
  }
}

static void on_connected(conn_t *c, int64_t now) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    unexpected(U_CONNECT, "connect: %s", strerror(err));
    finish(c, 0);
    c->wake = now + 1000;
    return;
  }
  c->state = S_RUN;
  c->started = c->progress = now;
  if (chat)
    set_events(c, 1, 0);
  else {
    echo_start(c);
    echo_step(c, now, 0);
  }
}

static void step(conn_t *c, int64_t now, int readable) {
  if (chat)
    chat_step(c, now, readable);
  else
    echo_step(c, now, readable);
}

/* Is c waiting on the server (so silence means it is stuck)? */
static int waiting(const conn_t *c, int64_t now) {
  if (c->state != S_RUN && c->state != S_CONNECTING)
    return 0;
  if (c->state == S_CONNECTING)
    return 1;
  if (chat)
    return c->guest == 0 || c->out_off < c->out_len;
  if (c->kind == K_IDLE && now < c->wake)
    return 0;
  return c->got < c->sent || (c->shut && c->got == c->sent);
}

/* ---- report and verdict ---- */

#define MAX_SAMPLES 100000
static long rss_at[MAX_SAMPLES];
static int64_t rss_t[MAX_SAMPLES];
static int n_rss;

static long unexpected_total(void) {
  long n = 0;
  for (int i = X_NCOUNT; i < N_COUNT; i++)
    n += counts[i];
  return n;
}

static void report(int64_t t0, int64_t now) {
  long rss = server_rss_kib(), fds = server_fds();
  if (n_rss < MAX_SAMPLES)
    rss_t[n_rss] = now - t0, rss_at[n_rss++] = rss;
  long done = 0;
  for (int k = 0; k < K_N; k++)
    done += sessions[k];
  printf("[%4" PRId64 "s] %s live=%ld sessions=%ld ", (now - t0) / 1000,
         chat ? "chat" : "echo", live, done);
  if (chat)
    printf("lines sent=%ld got=%ld ", lines_sent, lines_got);
  else
    printf("requests=%ld ", requests);
  printf("verified=%.1fMiB | expected:", (double)bytes_ok / 1048576.0);
  for (int i = 0; i < X_NCOUNT; i++)
    printf(" %s=%ld", count_name[i], counts[i]);
  printf(" | unexpected=%ld", unexpected_total());
  for (int i = X_NCOUNT; i < N_COUNT; i++)
    if (counts[i])
      printf(" %s=%ld", count_name[i], counts[i]);
  printf(" | server rss=%.1fMiB fds=%ld\n", rss / 1024.0, fds);
  fflush(stdout);
}

/* One round trip on a fresh connection (echo: 1 KiB; chat: a line from
 * one new client to another). 0: the server answered correctly. */
static int blocking_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Read one line (up to \n) into b; its length, -1 on error. */
static long read_line(int fd, char *b, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = recv(fd, b + n, 1, 0);
    if (r <= 0)
      return -1;
    if (b[n] == '\n') {
      b[n] = 0;
      return (long)n;
    }
    n++;
  }
  return -1;
}

static int probe(void) {
  char b[2048];
  if (!chat) {
    int fd = blocking_connect();
    if (fd < 0)
      return -1;
    unsigned char want[1024], got[1024];
    expect_bytes(seed, 0, want, sizeof want);
    size_t n = 0;
    int ok = send(fd, want, sizeof want, MSG_NOSIGNAL) == (ssize_t)sizeof want;
    while (ok && n < sizeof got) {
      ssize_t r = recv(fd, got + n, sizeof got - n, 0);
      ok = r > 0;
      n += ok ? (size_t)r : 0;
    }
    close(fd);
    return ok && memcmp(want, got, sizeof got) == 0 ? 0 : -1;
  }
  int a = blocking_connect(), c = -1, ok = 0;
  if (a >= 0 && read_line(a, b, sizeof b) > 0 &&
      strncmp(b, "* welcome guest", 15) == 0 && (c = blocking_connect()) >= 0 &&
      read_line(c, b, sizeof b) > 0 && read_line(a, b, sizeof b) > 0 &&
      strstr(b, " joined") != NULL) {
    const char *msg = "soak probe\n";
    if (send(a, msg, strlen(msg), MSG_NOSIGNAL) == (ssize_t)strlen(msg) &&
        read_line(c, b, sizeof b) > 0) {
      const char *p = strchr(b, ':');
      ok = p != NULL && strcmp(p, ": soak probe") == 0;
    }
  }
  if (c >= 0)
    close(c);
  if (a >= 0)
    close(a);
  return ok ? 0 : -1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: soak_client --mode echo|chat --port P --pid SERVER_PID\n"
          "                   [--seconds S] [--clients N] [--seed X]\n"
          "                   [--report S] [--idle-ms MS]\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (i + 1 == argc)
      usage();
    const char *k = argv[i], *v = argv[++i];
    if (strcmp(k, "--mode") == 0)
      chat = strcmp(v, "chat") == 0;
    else if (strcmp(k, "--port") == 0)
      port = atoi(v);
    else if (strcmp(k, "--pid") == 0)
      server = (pid_t)atoi(v);
    else if (strcmp(k, "--seconds") == 0)
      seconds = atol(v);
    else if (strcmp(k, "--clients") == 0)
      clients = atoi(v);
    else if (strcmp(k, "--seed") == 0)
      seed = strtoull(v, NULL, 0);
    else if (strcmp(k, "--report") == 0)
      report_s = atoi(v);
    else if (strcmp(k, "--idle-ms") == 0)
      idle_ms = atol(v);
    else
      usage();
  }
  if (port <= 0 || server <= 0 || clients <= 0 || seconds <= 0 || report_s <= 0)
    usage();
  signal(SIGPIPE, SIG_IGN);
  ep = epoll_create1(EPOLL_CLOEXEC);
  slots = calloc((size_t)clients, sizeof *slots);
  slot_rng = calloc((size_t)clients, sizeof *slot_rng);
  if (slots == NULL || slot_rng == NULL)
    return 2;
  long base_fds = server_fds(), base_rss = server_rss_kib();
  printf("soak %s: %d clients for %ld s, seed %" PRIu64
         ", server pid %d: rss=%.1fMiB fds=%ld at the start\n",
         chat ? "chat" : "echo", clients, seconds, seed, (int)server,
         base_rss / 1024.0, base_fds);
  fflush(stdout);
  int64_t t0 = now_ms(), end = t0 + seconds * 1000;
  int64_t next_report = t0 + report_s * 1000;
  for (int i = 0; i < clients; i++) {
    slots[i].slot = i;
    slot_rng[i] = mix(seed + (uint64_t)i);
    slots[i].fd = -1;
    slots[i].state = S_SLEEP;
    slots[i].wake = t0 + i * 5; /* ramp up over a second */
  }
  int64_t drain_end = 0;
  struct epoll_event evs[256];
  for (;;) {
    int64_t now = now_ms();
    if (!stopping && now >= end) {
      /* every session ends: the echo ones at their next request, the chat
       * ones with a FIN */
      stopping = 1;
      drain_end = now + 30000;
      printf("soak: time is up, %ld clients finishing\n", live);
      fflush(stdout);
    }
    if (stopping && (live == 0 || now >= drain_end))
      break;
    if (!server_alive()) {
      printf("soak: the server (pid %d) is gone\n", (int)server);
      break;
    }
    int n = epoll_wait(ep, evs, 256, 10);
    now = now_ms();
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->fd < 0)
        continue;
      if (c->state == S_CONNECTING) {
        on_connected(c, now);
        continue;
      }
      step(c, now,
           (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
    }
    for (int i = 0; i < clients; i++) {
      conn_t *c = &slots[i];
      if (c->state == S_SLEEP) {
        if (!stopping && now >= c->wake)
          start_session(c, now);
        continue;
      }
      if (c->fd < 0)
        continue;
      if (stopping && chat && c->kind == K_IDLE && c->state == S_RUN) {
        sessions[K_IDLE]++; /* no point waiting for its timeout */
        finish(c, 0);
        continue;
      }
      if (c->state == S_RUN && chat && c->kind == K_IDLE &&
          now - c->conn_at > idle_ms + 5000) {
        unexpected(U_IDLE,
                   "chat guest%ld: still open %" PRId64
                   " ms after connecting, --idle-ms %ld",
                   c->guest, now - c->conn_at, idle_ms);
        finish(c, 1);
        continue;
      }
      if (c->state == S_RUN && c->shut && now - c->shut_at > STUCK_MS) {
        unexpected(U_STUCK,
                   "%s slot %d (%s, guest%ld): no end of stream "
                   "%d s after our FIN",
                   chat ? "chat" : "echo", c->slot, kind_name[c->kind],
                   c->guest, STUCK_MS / 1000);
        finish(c, 1);
        continue;
      }
      if (waiting(c, now) && now - c->progress > STUCK_MS) {
        unexpected(U_STUCK,
                   "%s slot %d (%s, guest%ld): nothing from the "
                   "server for %d s (sent %" PRIu64 " got %" PRIu64 ")",
                   chat ? "chat" : "echo", c->slot, kind_name[c->kind],
                   c->guest, STUCK_MS / 1000, c->sent, c->got);
        finish(c, 1);
        continue;
      }
      if (c->state == S_RUN &&
          (now >= c->wake || (c->rwake != 0 && now >= c->rwake)))
        step(c, now, 0);
      if (c->state == S_RUN && stopping && !chat && c->kind == K_IDLE &&
          c->wake > now)
        c->wake = now; /* the idle ones do their request now */
    }
    if (now >= next_report) {
      report(t0, now);
      next_report += report_s * 1000;
    }
  }
  int64_t t_end = now_ms();
  report(t0, t_end);
  if (live > 0) {
    unexpected(U_STUCK, "%ld clients did not finish within 30 s of the end",
               live);
    for (int i = 0; i < clients; i++)
      if (slots[i].fd >= 0)
        finish(&slots[i], 1);
  }

  /* ---- verdict ---- */
  int ok = 1;
  int alive = server_alive();
  /* fds: back to where they started once every client has gone */
  long fds = -1;
  for (int i = 0; i < 100 && alive; i++) { /* up to 10 s for the closes */
    fds = server_fds();
    if (fds <= base_fds)
      break;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
  }
  int answers = alive && probe() == 0;
  long fds_after = -1;
  for (int i = 0; i < 50 && alive; i++) {
    fds_after = server_fds();
    if (fds_after <= base_fds)
      break;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
  }
  /* RSS: the max over the second half within 10% or 2 MiB of the max over
   * the first half after warm-up (the first 20% of the run, at least one
   * sample). */
  int64_t run = (end - t0), warm = run / 5, mid = warm + (run - warm) / 2;
  long max1 = 0, max2 = 0, max_all = 0;
  for (int i = 0; i < n_rss; i++) {
    if (rss_at[i] > max_all)
      max_all = rss_at[i];
    if (rss_t[i] < warm)
      continue;
    if (rss_t[i] < mid) {
      if (rss_at[i] > max1)
        max1 = rss_at[i];
    } else if (rss_t[i] <= run && rss_at[i] > max2)
      max2 = rss_at[i];
  }
  long slack = max1 / 10 > 2048 ? max1 / 10 : 2048;
  int flat = max1 > 0 && max2 > 0 && max2 <= max1 + slack;
  long done = 0;
  for (int k = 0; k < K_N; k++)
    done += sessions[k];
  printf("soak %s verdict:\n", chat ? "chat" : "echo");
  printf("  sessions %ld (", done);
  for (int k = 0; k < K_N; k++)
    printf("%s%s %ld", k ? ", " : "", kind_name[k], sessions[k]);
  printf(")\n");
  if (chat)
    printf("  lines sent %ld, lines received %ld, %.1f MiB verified\n",
           lines_sent, lines_got, (double)bytes_ok / 1048576.0);
  else
    printf("  requests %ld, %.1f MiB echoed and verified\n", requests,
           (double)bytes_ok / 1048576.0);
  printf("  expected:");
  for (int i = 0; i < X_NCOUNT; i++)
    printf(" %s=%ld", count_name[i], counts[i]);
  printf("\n");
  long u = unexpected_total();
  printf("  nothing lost or unexpected: %s (%ld", u == 0 ? "yes" : "NO", u);
  for (int i = X_NCOUNT; i < N_COUNT; i++)
    if (counts[i])
      printf(", %s=%ld", count_name[i], counts[i]);
  printf(")\n");
  ok &= u == 0;
  printf("  RSS flat: %s (max %.1f MiB in [%" PRId64 "s,%" PRId64
         "s), %.1f MiB in [%" PRId64 "s,%" PRId64 "s]; limit %.1f MiB; "
         "%.1f MiB at start, %.1f MiB max)\n",
         flat ? "yes" : "NO", max1 / 1024.0, warm / 1000, mid / 1000,
         max2 / 1024.0, mid / 1000, run / 1000, (max1 + slack) / 1024.0,
         base_rss / 1024.0, max_all / 1024.0);
  ok &= flat;
  printf("  server up and answering: %s\n", !alive ? "NO (gone)"
                                            : answers
                                                ? "yes"
                                                : "NO (no correct answer)");
  ok &= alive && answers;
  printf("  fds back to baseline (%ld): %s (%ld after the clients left, "
         "%ld after the probe)\n",
         base_fds, fds <= base_fds && fds_after <= base_fds ? "yes" : "NO", fds,
         fds_after);
  ok &= fds >= 0 && fds <= base_fds && fds_after <= base_fds;
  printf("  verdict: %s\n", ok ? "PASS" : "FAIL");
  (void)first_error;
  return ok ? 0 : 1;
}
