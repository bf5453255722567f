/* SPDX-License-Identifier: MIT */
/* samples/offload_demo.c: why CPU work belongs on the pool, measured. A loop
 * keeps a 10 ms heartbeat while requests arrive that each need ~40 ms of CPU
 * (an FNV-1a digest of 16 MB and a prime count). Phase 1 sends the work to a
 * weft pool and takes each result back on the loop thread; phase 2 does the
 * same work inline in the loop's callback. For each phase it prints how late
 * the heartbeat ran and what the stall detector caught, then checks that the
 * results agree. Phase 3 sends jobs through the TCP front end (below).
 *
 *   offload_demo [REQUESTS]    requests per phase, 2..10000 (default 30)
 *   offload_demo --serve PORT  only the TCP front end on 127.0.0.1:PORT
 *                              (0..65535; 0 picks a free port), until
 *                              SIGINT/SIGTERM; exits 0 then
 *   printf 'job 1\njob 2\n' | nc -N 127.0.0.1 PORT
 *
 * The front end's protocol: each line "job N" (0 <= N <= 2147483647) is
 * answered with "N <digest> <primes>" once the job is done. Any other line
 * gets one line "error: <what> (usage: job N, 0 <= N <= 2147483647)" and
 * the connection goes on: an empty line, another command, a missing,
 * non-decimal or out-of-range N, a line with a NUL byte, or a line longer
 * than 511 bytes before its newline (skipped up to the next newline). A
 * connection is not read while 64 of its requests are unanswered. A
 * client that shuts its side (nc -N) still gets every answer, its last
 * line counting without a newline, and then the server closes. */
#include <weft.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  HEARTBEAT_MS = 10,     /* the heartbeat's period */
  REQUEST_EVERY_MS = 50, /* a request arrives this often */
  STALL_MS = 20,         /* the stall detector's threshold */
  HASH_MB = 16,          /* each request digests this much memory... */
  PRIME_BASE = 1000000,  /* ...and counts the primes in a window from here */
  PRIME_SPAN = 100000,
  MAX_BEATS = 1 << 16
};
#define MS 1000000LL /* ns */

/* ---- the work one request needs (pure CPU, the same wherever it runs) ---- */

typedef struct answer {
  uint64_t digest; /* FNV-1a over the shared buffer, seeded per request */
  long primes;     /* primes in [lo, lo + PRIME_SPAN) */
  long lo;
} answer_t;

static unsigned char *buffer; /* HASH_MB of pseudo-random bytes, read-only */
static const size_t buffer_len = (size_t)HASH_MB << 20;

/* Returns 0, or WEFT_ECANCELED when `job` (NULL inline) was cancelled. */
static int do_request(int index, weft_job_t *job, answer_t *out) {
  uint64_t h = 14695981039346656037ull ^
               ((uint64_t)index * 0x9e3779b97f4a7c15ull);
  for (size_t at = 0; at < buffer_len; at += 1 << 20) { /* 1 MB at a time */
    if (job != NULL && weft_job_is_cancelled(job))
      return WEFT_ECANCELED;
    for (size_t i = at; i < at + (1 << 20); i++)
      h = (h ^ buffer[i]) * 1099511628211ull;
  }
  long lo = PRIME_BASE + (long)(index % 8) * PRIME_SPAN, count = 0;
  for (long n = lo; n < lo + PRIME_SPAN; n++) {
    int prime = n > 1;
    for (long d = 2; d * d <= n && prime; d++)
      prime = n % d != 0;
    count += prime;
  }
  *out = (answer_t){h, count, lo};
  return 0;
}

/* ---- the demo's state (all of it touched on the loop thread only) ---- */

typedef struct phase {
  const char *name;
  int offload; /* 1: pool, 0: inline */
  int sent, done, failed;
  answer_t *answers; /* by request index */
  int64_t *lateness; /* heartbeat lateness samples, ns */
  size_t beats;
  unsigned stalls;
  int64_t longest_stall;
  const char *stall_kind;
  int64_t started, ended;
} phase_t;

static struct {
  weft_loop_t *loop;
  weft_pool_t *pool;
  weft_timer_t heartbeat, requests;
  int64_t beat_due; /* when the heartbeat is next due, loop clock */
  int nreq;
  phase_t *phase; /* the phase running, NULL between phases */
  weft_promise_t *phase_done;
  weft_future_t **pending; /* offloaded requests' futures, by index */
  int off_loop;            /* continuations that ran off the loop thread */
  weft_signal_t sigint, sigterm;
  int interrupted; /* the signal that stopped us, or 0 */
} demo;

static void finish_one(phase_t *ph) {
  if (++ph->done < demo.nreq)
    return;
  ph->ended = weft_clock_now_ns();
  weft_timer_stop(&demo.heartbeat);
  weft_promise_fulfil_int(demo.phase_done, 0);
}

/* Phase 1: the job runs on a pool worker... */
static weft_result_t request_job(weft_job_t *job, void *arg) {
  answer_t *a = malloc(sizeof *a);
  if (a == NULL)
    return weft_err(WEFT_ENOMEM);
  int rc = do_request((int)(intptr_t)arg, job, a);
  if (rc != 0) {
    free(a);
    return weft_err(rc);
  }
  return weft_ok(a, free); /* the job's future owns the answer */
}

/* ...and its result comes back here, on the loop thread. */
static weft_result_t on_answer(void *arg, weft_future_t *job) {
  int index = (int)(intptr_t)arg;
  phase_t *ph = demo.phase;
  if (weft_loop_current() != demo.loop)
    demo.off_loop++;
  if (weft_future_error(job) != 0) {
    printf("  request %2d failed: %s\n", index,
           weft_error_name(weft_future_error(job)));
    ph->failed++;
  } else {
    ph->answers[index] = *(const answer_t *)weft_future_value(job);
  }
  finish_one(ph);
  return weft_ok_int(0);
}

static void on_request(weft_timer_t *t, int status, void *arg) {
  (void)arg;
  phase_t *ph = demo.phase;
  if (status != 0 || ph == NULL)
    return;
  int index = ph->sent++;
  if (ph->sent == demo.nreq)
    weft_timer_stop(t); /* that was the last one */
  if (!ph->offload) {   /* phase 2: the loop does the work itself */
    do_request(index, NULL, &ph->answers[index]);
    finish_one(ph);
    return;
  }
  weft_future_t *job, *back;
  if (weft_pool_submit(demo.pool, request_job, (void *)(intptr_t)index, NULL,
                       &job) != 0) {
    ph->failed++;
    finish_one(ph);
    return;
  }
  int rc = weft_future_then(job, weft_loop_executor(demo.loop), on_answer,
                            (void *)(intptr_t)index, NULL, &back);
  weft_future_release(job); /* `back` keeps it; cancelling back cancels it */
  if (rc != 0) {
    ph->failed++;
    finish_one(ph);
    return;
  }
  demo.pending[index] = back;
}

/* A repeating timer keeps its phase and skips the beats a late loop
 * missed (no burst); track its due time the same way. */
static void on_heartbeat(weft_timer_t *t, int status, void *arg) {
  (void)t;
  (void)arg;
  phase_t *ph = demo.phase;
  if (status != 0 || ph == NULL)
    return;
  int64_t late = weft_clock_now_ns() - demo.beat_due,
          now = weft_loop_now_ns(demo.loop);
  if (ph->beats < MAX_BEATS)
    ph->lateness[ph->beats++] = late > 0 ? late : 0;
  demo.beat_due += HEARTBEAT_MS * MS;
  if (demo.beat_due <= now)
    demo.beat_due = now + HEARTBEAT_MS * MS -
                    (now - demo.beat_due) % (HEARTBEAT_MS * MS);
}

static void on_stall(weft_loop_t *loop, const weft_stall_t *s, void *arg) {
  (void)loop;
  (void)arg;
  phase_t *ph = demo.phase;
  if (ph == NULL)
    return;
  ph->stalls++;
  if (s->duration_ns > ph->longest_stall) {
    ph->longest_stall = s->duration_ns;
    ph->stall_kind = s->kind;
  }
}

static void on_signal(weft_signal_t *sig, int signum, int status, void *arg) {
  (void)sig;
  (void)arg;
  if (status != 0)
    return; /* WEFT_ECANCELED: the loop is closing */
  demo.interrupted = signum;
  weft_loop_stop(demo.loop);
}

/* Posted, so the timers start from a freshly read loop clock. */
static void start_phase(weft_loop_t *loop, void *arg, int status) {
  phase_t *ph = arg;
  if (status != 0)
    return;
  demo.phase = ph;
  ph->started = weft_clock_now_ns();
  demo.beat_due = weft_loop_now_ns(loop) + HEARTBEAT_MS * MS;
  weft_timer_start(&demo.heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  weft_timer_start(&demo.requests, 0, REQUEST_EVERY_MS);
}

/* ---- the TCP front end: "job N" lines in, answers out ---- */

/* A client sends lines "job N" (0 <= N <= FE_JOB_MAX, decimal; a '\r'
 * before the newline and spaces around the words are allowed); each job
 * runs on the pool and its answer, "N <digest> <primes>", is written back
 * from the loop thread (answers come back in completion order). Any other
 * line is answered at once with one line "error: <what> (usage: ...)" and
 * the connection goes on: an empty line, an unknown command, a missing,
 * non-decimal or out-of-range number, a line with a NUL byte, and a line
 * longer than FE_LINE - 1 bytes before its newline (its bytes are skipped
 * up to the next newline). A connection with FE_MAX_INFLIGHT requests not
 * yet answered is not read until some are: a client that sends without
 * reading is held back by TCP, not buffered. One connection's errors
 * close only that connection; a closed connection's jobs still finish,
 * and their answers are dropped. */
enum {
  FE_LINE = 512,        /* a line and its newline fit in this */
  FE_JOB_MAX = INT_MAX, /* the largest job number */
  FE_MAX_INFLIGHT = 64, /* requests per connection not yet answered */
  FE_ANSWER = 160,      /* an answer line fits in this */
  /* answers queued that the client has not taken: no reading past it */
  FE_MAX_QUEUED = FE_MAX_INFLIGHT * FE_ANSWER
};
#define FE_USAGE "usage: job N, 0 <= N <= 2147483647"
_Static_assert(FE_JOB_MAX == 2147483647, "FE_USAGE states FE_JOB_MAX");

typedef struct fe_conn {
  weft_socket_t *sock;
  weft_reader_t *in;           /* lines in */
  weft_writer_t *out;          /* answers out, queued in its buffer */
  struct fe_conn *prev, *next; /* the open connections, for the shutdown */
  int refs;     /* the room's, the pending read's, one per job in flight */
  int inflight; /* requests (jobs and error replies) not yet answered */
  int closed;
  int reading;  /* a read is pending */
  int ended;    /* the client shut its side: answer what it sent, close */
  int skipping; /* inside an over-long line: drop bytes to the newline */
  weft_watch_t got_line, room, flushed;
} fe_conn_t;

/* A job in flight, and the continuation that answers it. */
typedef struct fe_job {
  fe_conn_t *conn;
  int index;
  weft_watch_t answered;
} fe_job_t;

static struct {
  weft_socket_t *listener;
  weft_watch_t accepted;
  fe_conn_t *conns;
  long served, answered, refused;
} fe;

static void fe_put(fe_conn_t *c) {
  if (--c->refs == 0)
    free(c);
}

static void fe_put_any(void *c) { fe_put(c); }

static void fe_close(fe_conn_t *c) {
  if (c->closed)
    return;
  c->closed = 1;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    fe.conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  weft_reader_close(c->in);
  weft_writer_close(c->out); /* what is queued still goes */
  weft_socket_close(c->sock);
  fe_put(c); /* the room's reference */
}

static void fe_read(fe_conn_t *c);

static void fe_flushed(void *arg, weft_future_t *f) {
  (void)f; /* taken by the client, or it went away: either way, done */
  fe_close(arg);
  fe_put(arg);
}

/* The last answer to a client that sends no more is queued: close once
 * the client has taken it. */
static void fe_finish(fe_conn_t *c) {
  weft_future_t *f;
  if (weft_writer_flush(c->out, 0, &f) != 0) {
    fe_close(c);
    return;
  }
  c->refs++;
  weft_watch_start(&c->flushed, f, weft_loop_executor(demo.loop), fe_flushed, c,
                   fe_put_any);
}

/* May c's next line be taken? Not past its limit of requests in flight,
 * nor while the client leaves FE_MAX_QUEUED bytes of answers untaken: a
 * client that sends without reading is held back by TCP, not buffered. */
static bool fe_may_read(const fe_conn_t *c) {
  return !c->closed && !c->ended && c->inflight < FE_MAX_INFLIGHT &&
         weft_writer_queued(c->out) + FE_ANSWER <= FE_MAX_QUEUED;
}

static void fe_room(void *arg, weft_future_t *f);

/* Read on when c may; wait for the client to take answers when that is
 * what holds it back. */
static void fe_resume(fe_conn_t *c) {
  weft_future_t *room;
  if (c->reading || fe_may_read(c)) {
    if (!c->reading)
      fe_read(c);
  } else if (!c->closed && !c->ended && c->inflight < FE_MAX_INFLIGHT &&
             weft_writer_wait_room(c->out, FE_MAX_QUEUED - FE_ANSWER, 0,
                                   &room) == 0) {
    c->reading = 1; /* (waiting for room, then reading) */
    c->refs++;
    weft_watch_start(&c->room, room, weft_loop_executor(demo.loop), fe_room, c,
                     fe_put_any);
  }
}

static void fe_room(void *arg, weft_future_t *f) {
  fe_conn_t *c = arg;
  c->reading = 0;
  if (weft_future_error(f) != 0)
    fe_close(c); /* the client went away */
  else
    fe_resume(c);
  fe_put(c);
}

/* A request is answered: it leaves c's count, and c may read on. */
static void fe_reply(fe_conn_t *c, const char *text, int n) {
  if (c->closed)
    return;
  if (n >= FE_ANSWER)
    n = FE_ANSWER - 1; /* snprintf cut it: send what it wrote */
  c->inflight--;
  if (weft_writer_write(c->out, text, (size_t)n) != 0)
    fe_close(c); /* the client went away */
  else if (c->ended && c->inflight == 0)
    fe_finish(c);
  else
    fe_resume(c);
}

/* Answer one bad line: "error: <what> (usage: ...)". */
static void fe_refuse(fe_conn_t *c, const char *what) {
  char out[FE_ANSWER];
  fe.refused++;
  c->inflight++;
  fe_reply(c, out,
           snprintf(out, sizeof out, "error: %s (" FE_USAGE ")\n", what));
}

/* Back on the loop thread with the job's answer (or its failure, or the
 * loop's close: then fe_job_drop runs instead). */
static void fe_answered(void *arg, weft_future_t *job) {
  fe_job_t *j = arg;
  char out[FE_ANSWER];
  int n;
  if (weft_future_state(job) == WEFT_FULFILLED) {
    const answer_t *a = weft_future_value(job);
    fe.answered++;
    n = snprintf(out, sizeof out, "%d %016llx %ld\n", j->index,
                 (unsigned long long)a->digest, a->primes);
  } else {
    n = snprintf(out, sizeof out, "error: job %d failed: %s\n", j->index,
                 weft_error_name(weft_future_error(job)));
  }
  fe_reply(j->conn, out, n); /* nobody to tell when it closed */
  fe_put(j->conn);
  free(j);
}

static void fe_job_drop(void *p) {
  fe_job_t *j = p;
  fe_put(j->conn);
  free(j);
}

static void fe_job(fe_conn_t *c, int index) {
  fe_job_t *j = malloc(sizeof *j);
  weft_future_t *job;
  char out[FE_ANSWER];
  int rc = j == NULL ? WEFT_ENOMEM
                     : weft_pool_submit(demo.pool, request_job,
                                        (void *)(intptr_t)index, NULL, &job);
  c->inflight++;
  if (rc != 0) {
    free(j);
    fe_reply(c, out,
             snprintf(out, sizeof out, "error: job %d not run: %s\n", index,
                      weft_error_name(rc)));
    return;
  }
  *j = (fe_job_t){.conn = c, .index = index};
  c->refs++;
  weft_watch_start(&j->answered, job, weft_loop_executor(demo.loop),
                   fe_answered, j, fe_job_drop);
}

static const char *skip_blanks(const char *p) {
  while (*p == ' ' || *p == '\t')
    p++;
  return p;
}

/* One line, its newline (and a '\r' before it) not included. */
static void fe_line(fe_conn_t *c, const char *line, size_t n) {
  char s[FE_LINE];
  if (memchr(line, 0, n) != NULL) {
    fe_refuse(c, "NUL byte in the line");
    return;
  }
  memcpy(s, line, n);
  s[n] = 0;
  const char *p = skip_blanks(s);
  if (*p == 0) {
    fe_refuse(c, "empty line");
    return;
  }
  if (strncmp(p, "job", 3) != 0 || (p[3] != 0 && p[3] != ' ' && p[3] != '\t')) {
    fe_refuse(c, "unknown command");
    return;
  }
  p = skip_blanks(p + 3);
  if (*p == 0) {
    fe_refuse(c, "missing job number");
    return;
  }
  /* strtoll, not sscanf("%d"): an overflow is reported (ERANGE), not
   * undefined, and the end pointer shows what followed the digits. */
  int sign = *p == '-' || *p == '+';
  char *end;
  errno = 0;
  long long v = strtoll(p, &end, 10);
  if (!isdigit((unsigned char)p[sign]) || *skip_blanks(end) != 0) {
    fe_refuse(c, "job number is not a decimal integer");
    return;
  }
  if (errno == ERANGE || v < 0 || v > FE_JOB_MAX) {
    fe_refuse(c, "job number out of range");
    return;
  }
  fe_job(c, (int)v);
}

/* One outcome of c's reader: a line (rc 0), a line too long, the end. */
static void fe_take(fe_conn_t *c, int rc, const weft_bytes_t *line) {
  weft_bytes_t rest;
  if (rc == WEFT_EMSGSIZE) { /* FE_LINE bytes and no newline yet */
    if (!c->skipping)
      fe_refuse(c, "line longer than 511 bytes, skipped to its newline");
    c->skipping = 1;
    weft_reader_consume(c->in, FE_LINE); /* none of them is a newline */
  } else if (rc == 0 && c->skipping) {
    c->skipping = 0; /* the end of an over-long line: dropped */
  } else if (rc == 0) {
    fe_line(c, line->data, line->len);
  } else if (rc == WEFT_EOF) {
    /* The client shut its side (printf 'job 1' | nc -N): its requests, a
     * last line without a newline too, are still answered, then the
     * connection closes. */
    c->ended = 1;
    weft_reader_buffered(c->in, &rest);
    if (rest.len > 0 && !c->skipping)
      fe_line(c, rest.data, rest.len); /* (less than FE_LINE bytes) */
    if (!c->closed && c->inflight == 0)
      fe_finish(c);
  } else {
    fe_close(c); /* an error; jobs in flight still finish */
  }
}
_Static_assert(FE_LINE == 512, "fe_take's message states FE_LINE - 1");

/* A line came (or the end): it and every whole line behind it, while c
 * is below its limit of requests in flight; then read on. */
static void fe_got(void *arg, weft_future_t *f) {
  fe_conn_t *c = arg;
  weft_bytes_t line;
  int rc = weft_future_error(f);
  c->reading = 0;
  if (!c->closed)
    fe_take(c, rc, rc == 0 ? weft_future_value(f) : NULL);
  while (fe_may_read(c) &&
         ((rc = weft_reader_try_line(c->in, FE_LINE, &line)) == 0 ||
          rc == WEFT_EMSGSIZE))
    fe_take(c, rc, &line);
  fe_resume(c);
  fe_put(c); /* the read's reference */
}

static void fe_read(fe_conn_t *c) {
  weft_future_t *r;
  if (weft_reader_read_line(c->in, FE_LINE, 0, &r) != 0) {
    fe_close(c);
    return;
  }
  c->reading = 1;
  c->refs++;
  weft_watch_start(&c->got_line, r, weft_loop_executor(demo.loop), fe_got, c,
                   fe_put_any);
}

static void fe_accept(void);

static void fe_accepted(void *arg, weft_future_t *f) {
  (void)arg;
  weft_socket_t *s;
  if (weft_future_state(f) != WEFT_FULFILLED)
    return; /* the listener was closed */
  fe_conn_t *c = fe.listener != NULL ? calloc(1, sizeof *c) : NULL;
  if (c == NULL || weft_socket_take(f, &s) != 0) {
    free(c); /* stopping, or out of memory: refuse this one (the future,
                released unread, closes it) */
  } else if (weft_reader_create(s, NULL, &c->in) != 0 ||
             weft_writer_create(
                 s,
                 &(weft_writer_options_t){.size = sizeof(weft_writer_options_t),
                                          .max_queued = 2 * FE_MAX_QUEUED},
                 &c->out) != 0) {
    if (c->in != NULL)
      weft_reader_close(c->in);
    weft_socket_close(s);
    free(c);
  } else {
    c->sock = s;
    c->refs = 1;
    c->next = fe.conns;
    if (fe.conns != NULL)
      fe.conns->prev = c;
    fe.conns = c;
    fe.served++;
    fe_read(c);
  }
  fe_accept();
}

static void fe_accept(void) {
  weft_future_t *a;
  if (fe.listener != NULL && weft_socket_accept(fe.listener, &a) == 0)
    weft_watch_start(&fe.accepted, a, weft_loop_executor(demo.loop),
                     fe_accepted, NULL, NULL);
}

/* Stop serving: close the listener (its accept is cancelled) and every
 * open connection (their reads are cancelled, and each continuation frees
 * what it owns), so no socket is left for the loop's close. Jobs in flight
 * still finish; their answers are dropped. */
static void fe_stop(void) {
  if (fe.listener != NULL)
    weft_socket_close(fe.listener);
  fe.listener = NULL;
  while (fe.conns != NULL)
    fe_close(fe.conns);
}

static int fe_start(int port, weft_addr_t *bound) {
  weft_addr_t addr;
  int rc = weft_addr_init_ip("127.0.0.1", (uint16_t)port, &addr);
  if (rc == 0)
    rc = weft_socket_listen(demo.loop, &addr, 128, &fe.listener);
  if (rc == 0)
    rc = weft_socket_local_addr(fe.listener, bound);
  if (rc == 0)
    fe_accept();
  return rc;
}

/* One answer line "N <digest> <primes>" of the front end; 0 if it is one.
 * Numbers through strtol/strtoull with their end pointers and ranges. */
static int parse_answer(const char *line, int n, int *index,
                        unsigned long long *digest, long *primes) {
  char *end;
  errno = 0;
  long i = strtol(line, &end, 10);
  if (end == line || *end != ' ' || errno == ERANGE || i < 0 || i >= n)
    return -1;
  line = end + 1;
  *digest = strtoull(line, &end, 16);
  if (end == line || *end != ' ' || errno == ERANGE)
    return -1;
  line = end + 1;
  *primes = strtol(line, &end, 10);
  if (end == line || *end != '\n' || errno == ERANGE)
    return -1;
  *index = (int)i;
  return 0;
}

/* Phase 3: this program is also the client: it sends `n` jobs over one
 * connection, then a malformed line, and checks every answer against phase
 * 1's and that the bad line got its error line. */
static int fe_selftest(const phase_t *ref, int n) {
  weft_addr_t addr;
  int rc = fe_start(0, &addr);
  if (rc != 0)
    return rc;
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("\nphase 3: the same jobs through the TCP front end on %s\n", name);
  weft_future_t *cf, *w = NULL, *r;
  if ((rc = weft_socket_connect(demo.loop, &addr, &cf)) != 0)
    return rc;
  rc = weft_loop_run_until(demo.loop, cf, 10000);
  if (rc != 0 || weft_future_state(cf) != WEFT_FULFILLED) {
    weft_future_release(cf);
    return rc != 0 ? rc : weft_future_error(cf);
  }
  weft_socket_t *s;
  rc = weft_socket_take(cf, &s);
  weft_future_release(cf);
  if (rc != 0)
    return rc;
  char req[64 * 16], ans[4096];
  size_t len = 0, have = 0;
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(req + len, sizeof req - len, "job %d\n", i);
  len += (size_t)snprintf(req + len, sizeof req - len, "job -1\n");
  rc = weft_socket_write(s, req, len,
                         &w); /* req lives until w settles, below */
  int got = 0, agree = 0, errors = 0;
  int64_t t0 = weft_clock_now_ns();
  while (rc == 0 && (got < n || errors < 1)) {
    if ((rc = weft_socket_read(s, ans + have, sizeof ans - 1 - have, &r)) != 0)
      break;
    rc = weft_loop_run_until(demo.loop, r, 120000);
    if (rc == 0 && weft_future_state(r) != WEFT_FULFILLED)
      rc = weft_future_error(r);
    if (rc == 0)
      have += (size_t)weft_future_int(r);
    weft_future_release(r);
    ans[have] = 0;
    char *line = ans, *nl;
    while ((nl = strchr(line, '\n')) != NULL) {
      int index;
      unsigned long long digest;
      long primes;
      if (strncmp(line, "error: job number out of range", 30) == 0) {
        errors++;
      } else if (parse_answer(line, n, &index, &digest, &primes) == 0) {
        got++;
        agree += ref->answers[index].digest == digest &&
                 ref->answers[index].primes == primes;
      }
      line = nl + 1;
    }
    have -= (size_t)(line - ans);
    memmove(ans, line, have);
  }
  if (w != NULL) {
    weft_loop_run_until(demo.loop, w, 10000);
    weft_future_release(w);
  }
  weft_socket_close(s);
  fe_stop();
  printf("  %d of %d answers back in %.0f ms, %d agree with phase 1; "
         "\"job -1\" answered with %d error line%s\n",
         got, n, (double)(weft_clock_now_ns() - t0) / 1e6, agree, errors,
         errors == 1 ? "" : "s");
  if (rc != 0)
    return rc;
  return got == n && agree == n && errors == 1 ? 0 : WEFT_EIO;
}

/* --serve PORT: only the front end, until SIGINT/SIGTERM.
 *   printf 'job 1\njob 2\n' | nc -N 127.0.0.1 PORT */
static int fe_serve(int port) {
  weft_addr_t addr;
  int rc = fe_start(port, &addr);
  if (rc != 0) {
    fprintf(stderr, "listen: %s\n", weft_error_message(rc));
    return 1;
  }
  char name[64];
  weft_addr_format(&addr, name, sizeof name);
  printf("offload_demo: listening on %s (send lines \"job N\", "
         "0 <= N <= %d)\n",
         name, FE_JOB_MAX);
  fflush(stdout);
  weft_loop_run(demo.loop, WEFT_RUN_DEFAULT); /* until a signal stops it */
  fe_stop();
  printf("offload_demo: %ld connections, %ld answers, %ld lines refused\n",
         fe.served, fe.answered, fe.refused);
  return 0;
}

/* ---- reporting ---- */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

typedef struct summary {
  double median, p99, worst; /* ms */
} summary_t;

static summary_t summarise(phase_t *ph) {
  summary_t s = {0, 0, 0};
  size_t n = ph->beats;
  if (n == 0)
    return s;
  qsort(ph->lateness, n, sizeof *ph->lateness, cmp_i64);
  size_t p99 = n * 99 / 100 < n ? n * 99 / 100 : n - 1;
  s.median = (double)ph->lateness[n / 2] / 1e6;
  s.p99 = (double)ph->lateness[p99] / 1e6;
  s.worst = (double)ph->lateness[n - 1] / 1e6;
  return s;
}

static int run_phase(phase_t *ph) {
  weft_future_t *done;
  if (weft_promise_create(&demo.phase_done, &done) != 0)
    return WEFT_ENOMEM;
  printf("\n%s\n", ph->name);
  int rc = weft_loop_post(demo.loop, start_phase, ph);
  if (rc == 0) /* a request takes ~40 ms; allow a slow (sanitized) build */
    rc = weft_loop_run_until(demo.loop, done, 120000);
  demo.phase = NULL;
  weft_future_release(done);
  weft_promise_release(demo.phase_done);
  if (rc != 0)
    return rc;
  for (int i = 0; i < demo.nreq && i < 3; i++)
    printf("  request %2d: digest %016llx, %ld primes in [%ld, %ld)\n", i,
           (unsigned long long)ph->answers[i].digest, ph->answers[i].primes,
           ph->answers[i].lo, ph->answers[i].lo + PRIME_SPAN);
  if (demo.nreq > 3)
    printf("  ... %d requests in %.0f ms\n", demo.nreq,
           (double)(ph->ended - ph->started) / 1e6);
  summary_t s = summarise(ph);
  printf("  heartbeat (%zu beats): late by median %.2f ms, p99 %.2f ms, "
         "worst %.2f ms\n",
         ph->beats, s.median, s.p99, s.worst);
  printf("  stall detector (> %d ms): %u callbacks caught", STALL_MS,
         ph->stalls);
  if (ph->stalls > 0)
    printf(", longest a \"%s\" callback of %.1f ms", ph->stall_kind,
           (double)ph->longest_stall / 1e6);
  printf("\n");
  return 0;
}

/* Stop early (a signal): cancel what is still out on the pool. */
static void cancel_pending(void) {
  int cancelled = 0;
  for (int i = 0; i < demo.nreq; i++) {
    if (demo.pending[i] == NULL)
      continue;
    cancelled += weft_future_cancel(demo.pending[i]) == 0;
    weft_future_release(demo.pending[i]);
    demo.pending[i] = NULL;
  }
  if (cancelled > 0)
    printf("  cancelled %d request%s still on the pool\n", cancelled,
           cancelled == 1 ? "" : "s");
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n, size);
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* A decimal number in [lo, hi], the whole of s; 0 if it is one. */
static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end != 0 || errno == ERANGE || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* The usage (on a bad command line, to stderr) or the help (--help). */
static int usage(FILE *to, const char *argv0) {
  fprintf(to,
          "usage: %s [REQUESTS]     requests per phase, 2..10000 (default "
          "30)\n"
          "       %s --serve PORT   only the TCP front end on 127.0.0.1:PORT "
          "(0: any free port)\n"
          "       %s --help         this, and the front end's protocol\n",
          argv0, argv0, argv0);
  if (to == stderr)
    return 2;
  fprintf(to,
          "\n"
          "The front end reads lines \"job N\", 0 <= N <= %d, and answers "
          "each\nwith \"N <digest> <primes>\" when the job is done. Any "
          "other line (empty,\nanother command, N missing, not decimal or "
          "out of range, a NUL byte in\nthe line, longer than %d bytes "
          "before its newline) gets one line\n\"error: <what> (usage: ...)\" "
          "and the connection goes on. A connection is\nnot read while %d of "
          "its requests are unanswered. A client that shuts its side "
          "(nc -N) still\ngets every answer, then the server closes.\n",
          FE_JOB_MAX, FE_LINE - 1, FE_MAX_INFLIGHT);
  return 0;
}

int main(int argc, char **argv) {
  long serve = -1, nreq = 30;
  if (argc > 1 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout, argv[0]);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "--serve") == 0) {
    if (argc != 3 || parse_long(argv[2], 0, 65535, &serve) != 0)
      return usage(stderr, argv[0]);
  } else if (argc > 2 ||
             (argc == 2 && parse_long(argv[1], 2, 10000, &nreq) != 0)) {
    return usage(stderr, argv[0]);
  }
  demo.nreq = (int)nreq;
  buffer = xcalloc(buffer_len, 1);
  uint64_t x = 88172645463325252ull; /* xorshift64: fixed, reproducible */
  for (size_t i = 0; i < buffer_len; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buffer[i] = (unsigned char)(x >> 32);
  }
  demo.pending = xcalloc((size_t)demo.nreq, sizeof *demo.pending);
  phase_t phases[2] = {
      {.name = "phase 1: offloaded: work on the pool, results back on the "
               "loop thread",
       .offload = 1},
      {.name = "phase 2: inline: the same work in the loop's own callback",
       .offload = 0}};
  for (int p = 0; p < 2; p++) {
    phases[p].answers = xcalloc((size_t)demo.nreq, sizeof(answer_t));
    phases[p].lateness = xcalloc(MAX_BEATS, sizeof(int64_t));
  }

  /* The loop belongs to this thread. One CPU is left to it: the workers
   * take the others (at least one). */
  unsigned cpus = weft_cpu_count(), workers = cpus > 1 ? cpus - 1 : 1;
  weft_pool_options_t po = {sizeof po, workers, 0, 0, {0}};
  int rc;
  if ((rc = weft_loop_create(NULL, &demo.loop)) != 0 ||
      (rc = weft_pool_create(&po, &demo.pool)) != 0) {
    fprintf(stderr, "setup: %s\n", weft_error_message(rc));
    return 1;
  }
  if ((rc = weft_signal_start(demo.loop, &demo.sigint, SIGINT, on_signal,
                              NULL)) != 0 ||
      (rc = weft_signal_start(demo.loop, &demo.sigterm, SIGTERM, on_signal,
                              NULL)) != 0)
    fprintf(stderr, "signals: %s (Ctrl-C will not stop cleanly)\n",
            weft_error_message(rc));
  weft_loop_set_stall_hook(demo.loop, STALL_MS * 1000, on_stall, NULL);
  weft_timer_init(demo.loop, &demo.heartbeat, on_heartbeat, NULL);
  weft_timer_init(demo.loop, &demo.requests, on_request, NULL);
  printf("%d requests per phase, one every %d ms, each an FNV-1a digest of "
         "%d MB\nand a prime count over %d numbers; a %d ms heartbeat; "
         "%u pool worker%s, %u CPU%s\n",
         demo.nreq, REQUEST_EVERY_MS, HASH_MB, PRIME_SPAN, HEARTBEAT_MS,
         workers, workers == 1 ? "" : "s", cpus, cpus == 1 ? "" : "s");

  int completed = 0;
  if (serve >= 0) {
    rc = fe_serve((int)serve);
    completed = -1;
  }
  for (int p = 0; p < 2 && serve < 0; p++) {
    rc = run_phase(&phases[p]);
    if (rc != 0)
      break;
    completed++;
    for (int i = 0; i < demo.nreq; i++) { /* all settled: drop the handles */
      if (demo.pending[i] != NULL)
        weft_future_release(demo.pending[i]);
      demo.pending[i] = NULL;
    }
  }
  int fe_rc = completed == 2
                  ? fe_selftest(&phases[0], demo.nreq < 8 ? demo.nreq : 8)
                  : 0;

  /* Shut down in order: the front end's sockets, pending work, the loop's
   * handles, the pool (its last completions reach the loop's queue), then
   * the loop, which runs what is still queued for it. */
  if (demo.interrupted)
    printf("\nstopped by signal %d\n", demo.interrupted);
  else if (rc != 0)
    printf("\nstopped: %s\n", weft_error_name(rc));
  fe_stop();
  cancel_pending();
  weft_timer_stop(&demo.heartbeat);
  weft_timer_stop(&demo.requests);
  weft_signal_stop(&demo.sigint);
  weft_signal_stop(&demo.sigterm);
  weft_pool_stats_t ps;
  weft_pool_shutdown(demo.pool, WEFT_POOL_CANCEL, WEFT_FOREVER, &ps);
  weft_loop_stats_t ls;
  weft_loop_stats(demo.loop, &ls);
  weft_loop_close(demo.loop);
  printf("\npool: %llu jobs run, %llu cancelled; loop: %llu iterations, "
         "%llu items from other threads, %llu wake-ups\n",
         (unsigned long long)ps.jobs_run, (unsigned long long)ps.cancelled,
         (unsigned long long)ls.iterations, (unsigned long long)ls.posted,
         (unsigned long long)ls.wakeups);

  int failures = 0;
  if (completed == 2) {
    int mismatched = 0;
    for (int i = 0; i < demo.nreq; i++)
      mismatched += memcmp(&phases[0].answers[i], &phases[1].answers[i],
                           sizeof(answer_t)) != 0;
    summary_t off = summarise(&phases[0]), in = summarise(&phases[1]);
    printf("\n                       offloaded     inline\n");
    printf("heartbeat late, median %6.2f ms  %6.2f ms\n", off.median,
           in.median);
    printf("heartbeat late, p99    %6.2f ms  %6.2f ms\n", off.p99, in.p99);
    printf("heartbeat late, worst  %6.2f ms  %6.2f ms\n", off.worst, in.worst);
    printf("stalls caught          %6u     %6u\n", phases[0].stalls,
           phases[1].stalls);
    printf("results: %d of %d requests agree between the phases\n",
           demo.nreq - mismatched, demo.nreq);
    /* pi(1,100,000) - pi(1,000,000) = 85714 - 78498 */
    if (mismatched || phases[0].failed || phases[1].failed ||
        phases[0].answers[0].primes != 7216) {
      printf("WRONG: results differ or a request failed\n");
      failures++;
    }
    if (off.worst >= in.worst || off.p99 >= in.p99) {
      printf("WRONG: offloading did not keep the heartbeat more punctual\n");
      failures++;
    }
    if (phases[0].stalls >= phases[1].stalls) {
      printf("WRONG: the stall detector should catch the inline handlers, "
             "not the offloaded ones\n");
      failures++;
    }
  } else if (!demo.interrupted) {
    failures++;
  }
  if (fe_rc != 0) {
    printf("WRONG: the TCP front end: %s\n", weft_error_name(fe_rc));
    failures++;
  }
  if (serve >= 0)
    failures = rc;
  if (demo.off_loop) {
    printf("WRONG: %d continuations ran off the loop thread\n", demo.off_loop);
    failures++;
  }
  for (int p = 0; p < 2; p++) {
    free(phases[p].answers);
    free(phases[p].lateness);
  }
  free(demo.pending);
  free(buffer);
  if (serve >= 0) /* a server's normal end is a signal */
    return failures != 0 ? 1 : 0;
  if (demo.interrupted)
    return 128 + demo.interrupted;
  printf(failures ? "%d outcomes wrong\n" : "every outcome as expected\n",
         failures);
  return failures ? 1 : 0;
}
