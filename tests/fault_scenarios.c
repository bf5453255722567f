/* SPDX-License-Identifier: MIT */
/* tests/fault_scenarios.c: the scenarios the fault driver (test_fault.c)
 * runs under every fault. Together they call every public function of
 * weft (every WEFT_EXTERN of include/weft); each accepts, at every call, exactly the error
 * codes that call's header comment documents. */
#include "fault_scenarios.h"

#include <weft/dns.h>
#include <weft/fs.h>
#include <weft/net.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- futures, continuations, combinators, executors, errors ---- */

static weft_result_t add1(void *arg, weft_future_t *src) {
  (void)arg;
  return weft_ok_int(weft_future_int(src) + 1);
}

static weft_future_t *follow_target;
static weft_result_t follow_fn(void *arg, weft_future_t *src) {
  (void)arg;
  (void)src;
  weft_future_retain(follow_target);
  return weft_follow(follow_target);
}

static void count_arg(void *arg) { ++*(int *)arg; }
static void on_watch(void *arg, weft_future_t *f) {
  (void)f;
  ++*(int *)arg;
}

typedef struct counted_task {
  weft_task_t task;
  _Atomic int runs;
} counted_task_t;
static void counted_run(weft_task_t *t) {
  atomic_fetch_add(&((counted_task_t *)t)->runs, 1);
}

static void sc_futures(fx_t *x) {
  weft_promise_t *p[6] = {0};
  weft_future_t *f[6] = {0}, *o = NULL;
  int hooks = 0, dtors = 0, watches = 0, watching = 0;
  static int value = 7;
  for (int i = 0; i < 6; i++) {
    if (!FX(x, weft_promise_create(&p[i], &f[i]), WEFT_ENOMEM))
      goto out;
    fx_track(x, f[i]);
  }
  FX(x, weft_promise_on_cancel(p[3], count_arg, &hooks), WEFT_EINVAL);
  weft_executor_t *in = weft_executor_inline();
  if (FX(x, weft_future_then(f[0], in, add1, NULL, NULL, &o), WEFT_ENOMEM))
    fx_track(x, o);
  if (FX(x, weft_future_then(f[0], in, add1, &dtors, count_arg, &o),
         WEFT_ENOMEM))
    fx_track(x, o);
  follow_target = f[1];
  if (FX(x, weft_future_then(f[0], in, follow_fn, NULL, NULL, &o), WEFT_ENOMEM))
    fx_track(x, o);
  weft_future_retain(f[2]);
  if (FX(x, weft_future_watch(f[2], in, on_watch, &watches, NULL), WEFT_ENOMEM))
    watching = 1;
  else
    weft_future_release(f[2]);
  weft_future_t *comb[5] = {0};
  if (FX(x, weft_future_all(f, 2, &comb[0]), WEFT_ENOMEM))
    fx_track(x, comb[0]);
  if (FX(x, weft_future_all_settled(f, 4, &comb[1]), WEFT_ENOMEM))
    fx_track(x, comb[1]);
  if (FX(x, weft_future_any(f + 1, 2, &comb[2]), WEFT_ENOMEM))
    fx_track(x, comb[2]);
  if (FX(x, weft_future_race(f + 2, 2, &comb[3]), WEFT_ENOMEM))
    fx_track(x, comb[3]);
  if (FX(x, weft_future_some(f, 4, 2, &comb[4]), WEFT_ENOMEM))
    fx_track(x, comb[4]);

  FX(x, weft_promise_fulfil_int(p[0], 41));
  FX(x, weft_promise_fulfil(p[1], &value, NULL));
  FX(x, weft_promise_reject(p[2], WEFT_EIO));
  FX(x, weft_future_cancel(f[3]));
  if (weft_promise_is_cancelled(p[3]) != 1)
    fx_bad(x, __LINE__, "is_cancelled after cancel: %d",
           weft_promise_is_cancelled(p[3]));
  if (hooks != 1)
    fx_bad(x, __LINE__, "cancel hook ran %d times", hooks);
  if (weft_promise_fulfil_int(p[3], 1) != WEFT_ECANCELED)
    fx_bad(x, __LINE__, "fulfil after cancel");
  if (weft_promise_fulfil_int(p[0], 1) != WEFT_EALREADY)
    fx_bad(x, __LINE__, "second fulfil");
  if (weft_future_cancel(f[0]) != WEFT_EALREADY)
    fx_bad(x, __LINE__, "cancel of a settled future");
  if (weft_future_state(f[0]) != WEFT_FULFILLED ||
      weft_future_int(f[0]) != 41 || weft_future_error(f[2]) != WEFT_EIO ||
      weft_future_value(f[1]) != &value)
    fx_bad(x, __LINE__, "outcomes of settled futures");
  FX(x, weft_future_await(f[0], 0), WEFT_ENOMEM);
  int rc = weft_future_await(f[5], 1);
  if (rc != WEFT_ETIMEDOUT && rc != WEFT_ENOMEM)
    fx_bad(x, __LINE__, "await of a pending future: %s", weft_error_name(rc));
  if (watching && watches != 1)
    fx_bad(x, __LINE__, "watch ran %d times", watches);
  if (comb[3] != NULL) {
    size_t idx = 9;
    if (weft_future_input_count(comb[3]) != 2 ||
        weft_future_input(comb[3], 0) != f[2] ||
        weft_future_order(comb[3], 0, &idx) != 0 || idx != 0)
      fx_bad(x, __LINE__, "race inputs/order");
  }
  if (comb[2] != NULL && weft_future_int(comb[2]) != (intptr_t)&value)
    fx_bad(x, __LINE__, "any's value");

  /* executors and the error table */
  counted_task_t t = {{NULL, counted_run}, 0};
  FX(x, weft_executor_submit(in, &t.task));
  weft_executor_t *prev = weft_executor_enter(in);
  if (weft_executor_current() != in)
    fx_bad(x, __LINE__, "executor_current");
  weft_executor_leave(prev);
  if (atomic_load(&t.runs) != 1 || weft_clock_now_ns() <= 0 ||
      weft_cpu_count() < 1 ||
      strcmp(weft_error_name(WEFT_EPIPE), "WEFT_EPIPE") ||
      weft_error_message(WEFT_EOF) == NULL ||
      weft_error_from_errno(ECONNRESET) != WEFT_ECONNRESET)
    fx_bad(x, __LINE__, "executor / error table");
out:
  for (int i = 0; i < 6; i++)
    if (p[i] != NULL)
      FX(x, weft_promise_release(p[i]));
  if (dtors != 0 && dtors != 1)
    fx_bad(x, __LINE__, "then arg_dtor ran %d times", dtors);
}

/* ---- a dedicated-thread executor ---- */

static void sc_thread_executor(fx_t *x) {
  weft_thread_executor_t *te = NULL;
  weft_promise_t *p = NULL;
  weft_future_t *f = NULL, *d = NULL;
  counted_task_t t = {{NULL, counted_run}, 0};
  if (!FX(x, weft_thread_executor_create(&te), WEFT_ENOMEM, WEFT_EAGAIN))
    return;
  weft_executor_t *ex = weft_thread_executor_get(te);
  bool submitted = FX(x, weft_executor_submit(ex, &t.task), WEFT_ENOMEM);
  if (FX(x, weft_promise_create(&p, &f), WEFT_ENOMEM)) {
    fx_track(x, f);
    if (FX(x, weft_future_then(f, ex, add1, NULL, NULL, &d), WEFT_ENOMEM))
      fx_track(x, d);
    FX(x, weft_promise_fulfil_int(p, 1));
    if (d != NULL && FX_AWAIT(x, d))
      FX_OUT(x, d, WEFT_ENOMEM);
    FX(x, weft_promise_release(p));
  }
  FX(x, weft_thread_executor_shutdown(te));
  if (atomic_load(&t.runs) != (submitted ? 1 : 0))
    fx_bad(x, __LINE__, "task ran %d times", atomic_load(&t.runs));
}

/* ---- the pool ---- */

static _Atomic int job_runs, job_dtors;
static void count_dtor(void *arg) {
  (void)arg;
  atomic_fetch_add(&job_dtors, 1);
}
static weft_result_t job_fn(weft_job_t *job, void *arg) {
  atomic_fetch_add(&job_runs, 1);
  (void)weft_job_is_cancelled(job);
  return weft_ok_int((intptr_t)arg);
}

/* A CPU job that awaits a blocking job: the worker finds nothing of its
 * own to run meanwhile and parks. The blocking job ends once that park
 * shows in the pool's counters (or after a bound, when the await failed
 * before parking). */
static weft_pool_t *nest_pool;
static _Atomic uint64_t park_base;
static weft_result_t wait_park_fn(weft_job_t *job, void *arg) {
  (void)job;
  (void)arg;
  weft_pool_stats_t st;
  int64_t end = weft_clock_now_ns() + (int64_t)2000 * 1000 * 1000;
  while (weft_clock_now_ns() < end && (weft_pool_stats(nest_pool, &st) != 0 ||
                                       st.parks <= atomic_load(&park_base)))
    sched_yield();
  return weft_ok_int(1);
}
static weft_result_t nest_fn(weft_job_t *job, void *arg) {
  (void)job;
  fx_t *x = arg;
  weft_future_t *f = NULL;
  weft_pool_stats_t st;
  if (weft_pool_stats(nest_pool, &st) == 0)
    atomic_store(&park_base, st.parks);
  int rc = weft_pool_submit_blocking(nest_pool, wait_park_fn, NULL, count_dtor,
                                     &f);
  if (rc != 0)
    return weft_err(rc);
  rc = weft_future_await(f, FX_WAIT_MS);
  if (rc == 0)
    rc = weft_future_error(f);
  if (rc == WEFT_ETIMEDOUT)
    fx_bad(x, __LINE__, "hang: await from a job");
  weft_future_release(f);
  return rc == 0 ? weft_ok_int(2) : weft_err(rc);
}

static void sc_pool(fx_t *x) {
  weft_pool_options_t o = {sizeof o, 1, 2, 50, {0}};
  weft_pool_t *pool = NULL;
  atomic_store(&job_runs, 0);
  atomic_store(&job_dtors, 0);
  int accepted = 0;
  if (!FX(x, weft_pool_create(&o, &pool), WEFT_ENOMEM, WEFT_EAGAIN))
    return;
  nest_pool = pool;
  weft_future_t *f[8] = {0}, *d = NULL, *nf = NULL;
  if (FX(x, weft_pool_submit(pool, nest_fn, x, NULL, &nf), WEFT_ENOMEM)) {
    fx_track(x, nf);
    if (FX_AWAIT(x, nf))
      FX_OUT(x, nf, WEFT_ENOMEM, WEFT_EAGAIN);
  }
  for (int i = 0; i < 6; i++)
    if (FX(x, weft_pool_submit(pool, job_fn, (void *)(intptr_t)i, NULL, &f[i]),
           WEFT_ENOMEM)) {
      fx_track(x, f[i]);
      accepted++;
    }
  for (int i = 6; i < 8; i++)
    if (FX(x,
           weft_pool_submit_blocking(pool, job_fn, (void *)(intptr_t)i, NULL,
                                     &f[i]),
           WEFT_ENOMEM, WEFT_EAGAIN)) {
      fx_track(x, f[i]);
      accepted++;
    }
  if (f[0] != NULL &&
      FX(x,
         weft_future_then(f[0], weft_pool_executor(pool), add1, NULL, NULL, &d),
         WEFT_ENOMEM)) {
    fx_track(x, d);
    if (FX_AWAIT(x, d))
      FX_OUT(x, d, WEFT_ENOMEM);
  }
  for (int i = 0; i < 8; i++)
    if (f[i] != NULL && FX_AWAIT(x, f[i]))
      FX_OUT(x, f[i]);
  weft_pool_stats_t st;
  FX(x, weft_pool_stats(pool, &st));
  FX(x, weft_pool_shutdown(pool, WEFT_POOL_DRAIN, FX_WAIT_MS, &st));
  int ran = 0;
  for (int i = 0; i < 8; i++)
    if (f[i] != NULL && weft_future_state(f[i]) == WEFT_FULFILLED)
      ran++;
  if (atomic_load(&job_runs) != ran)
    fx_bad(x, __LINE__, "%d jobs ran, %d futures fulfilled",
           atomic_load(&job_runs), ran);
  (void)accepted;
}

/* ---- the loop: posts, stop, timers, sleeps, timeouts, fds, signals ---- */

typedef struct loop_ctx {
  weft_loop_t *loop;
  int posts, posts_cancelled, timer_fires, timer_cancelled, rep_fires, io_fires,
      sig_fires, stalls;
  weft_timer_t once, rep, late;
  weft_io_t io;
  weft_signal_t sig;
  int pipefd[2];
  fx_t *x;
} loop_ctx_t;

static void posted(weft_loop_t *l, void *arg, int status) {
  (void)l;
  loop_ctx_t *c = arg;
  if (status == 0)
    c->posts++;
  else
    c->posts_cancelled++;
}
static void timer_cb(weft_timer_t *t, int status, void *arg) {
  loop_ctx_t *c = arg;
  if (status != 0) {
    c->timer_cancelled += t == &c->late;
    return;
  }
  if (t == &c->rep && ++c->rep_fires == 2)
    weft_timer_stop(t);
  else if (t != &c->rep)
    c->timer_fires++;
}
static void io_cb(weft_io_t *io, unsigned events, int status, void *arg) {
  loop_ctx_t *c = arg;
  (void)events;
  if (status != 0)
    return;
  char b;
  if (read(c->pipefd[0], &b, 1) == 1)
    c->io_fires++;
  weft_io_stop(io);
}
static void sig_cb(weft_signal_t *s, int signum, int status, void *arg) {
  loop_ctx_t *c = arg;
  if (status == 0 && signum == SIGUSR1) {
    c->sig_fires++;
    weft_signal_stop(s);
  }
}
static void stall_cb(weft_loop_t *l, const weft_stall_t *s, void *arg) {
  (void)l;
  (void)s;
  ((loop_ctx_t *)arg)->stalls++;
}
static void *poster(void *arg) {
  loop_ctx_t *c = arg;
  int rc = weft_loop_post(c->loop, posted, c);
  if (rc != 0 && rc != WEFT_ENOMEM)
    fx_bad(c->x, __LINE__, "post from another thread: %s", weft_error_name(rc));
  weft_loop_stop(c->loop);
  return NULL;
}

static void sc_loop(fx_t *x) {
  loop_ctx_t c;
  memset(&c, 0, sizeof c);
  c.x = x;
  c.pipefd[0] = c.pipefd[1] = -1;
  weft_loop_t *l;
  if (!fx_loop(x, &l))
    return;
  c.loop = l;
  int posts_ok = 0, io_on = 0, sig_on = 0, once_on = 0;
  if (weft_loop_current() != l || weft_loop_executor(l) == NULL)
    fx_bad(x, __LINE__, "loop_current / executor");
  int fd = weft_loop_backend_fd(l);
  if (fd < 0)
    FX(x, fd, WEFT_ENOMEM); /* "may fail with a code from the kernel" */
  (void)weft_loop_backend_timeout(l);
  (void)weft_loop_now_ns(l);
  weft_loop_stats_t st;
  FX(x, weft_loop_stats(l, &st));
  FX(x, weft_loop_set_stall_hook(l, 10 * 1000 * 1000, stall_cb, &c));
  if (FX(x, weft_loop_post(l, posted, &c), WEFT_ENOMEM))
    posts_ok++;
  FX(x, weft_loop_run(l, WEFT_RUN_NOWAIT));
  pthread_t th;
  if (pthread_create(&th, NULL, poster, &c) == 0) {
    pthread_join(th, NULL);
    FX(x, weft_loop_run(l, WEFT_RUN_DEFAULT)); /* until the stop */
  }
  FX(x, weft_loop_run(l, WEFT_RUN_NOWAIT));

  FX(x, weft_timer_init(l, &c.once, timer_cb, &c));
  FX(x, weft_timer_init(l, &c.rep, timer_cb, &c));
  FX(x, weft_timer_init(l, &c.late, timer_cb, &c));
  once_on = FX(x, weft_timer_start(&c.once, 1, 0), WEFT_ENOMEM);
  if (once_on && weft_timer_is_active(&c.once) != 1)
    fx_bad(x, __LINE__, "timer_active");
  FX(x, weft_timer_start(&c.rep, 1, 1), WEFT_ENOMEM);
  bool late_on = FX(x, weft_timer_start(&c.late, 60000, 0), WEFT_ENOMEM);
  weft_future_t *sl = NULL, *to = NULL, *sf = NULL, *all = NULL;
  weft_promise_t *p = NULL;
  weft_future_t *pf = NULL;
  if (FX(x, weft_loop_sleep(l, 10, &sl), WEFT_ENOMEM))
    fx_track(x, sl);
  if (FX(x, weft_promise_create(&p, &pf), WEFT_ENOMEM)) {
    fx_track(x, pf);
    if (FX(x, weft_loop_timeout(l, pf, 2, &to), WEFT_ENOMEM))
      fx_track(x, to);
  }
  if (pipe(c.pipefd) == 0 && write(c.pipefd[1], "x", 1) == 1 &&
      FX(x, weft_io_start(l, &c.io, c.pipefd[0], WEFT_WRITABLE, io_cb, &c),
         WEFT_ENOMEM)) {
    io_on = 1;
    if (!FX(x, weft_io_modify(&c.io, WEFT_READABLE), WEFT_ENOMEM))
      FX(x, weft_io_stop(&c.io)), io_on = 0;
  }
  sig_on = FX(x, weft_signal_start(l, &c.sig, SIGUSR1, sig_cb, &c), WEFT_ENOMEM,
              WEFT_EMFILE, WEFT_ENFILE);
  if (FX(x, weft_signal_next(l, SIGUSR2, &sf), WEFT_ENOMEM, WEFT_EMFILE,
         WEFT_ENFILE))
    fx_track(x, sf);
  if (sig_on)
    raise(SIGUSR1);
  if (sf != NULL)
    raise(SIGUSR2);
  weft_future_t *w[3] = {sl, to, sf};
  weft_future_t *ws[3];
  int nw = 0;
  for (int i = 0; i < 3; i++)
    if (w[i] != NULL)
      ws[nw++] = w[i];
  if (nw > 0 &&
      FX(x, weft_future_all_settled(ws, (size_t)nw, &all), WEFT_ENOMEM)) {
    fx_track(x, all);
    if (FX_RUN(x, l, all)) {
      if (sl != NULL)
        FX_OUT(x, sl);
      if (to != NULL && weft_future_error(to) != WEFT_ETIMEDOUT)
        fx_bad(x, __LINE__, "timeout: %s",
               weft_error_name(weft_future_error(to)));
      if (sf != NULL && FX_OUT(x, sf) && weft_future_int(sf) != SIGUSR2)
        fx_bad(x, __LINE__, "signal future value");
      if (sl != NULL && once_on && c.timer_fires != 1)
        fx_bad(x, __LINE__, "1 ms timer fired %d times before a 10 ms sleep",
               c.timer_fires);
      if (sl != NULL && io_on && c.io_fires != 1)
        fx_bad(x, __LINE__, "readable pipe seen %d times", c.io_fires);
      if (sl != NULL && sig_on && sf != NULL && c.sig_fires != 1)
        fx_bad(x, __LINE__, "SIGUSR1 handler ran %d times", c.sig_fires);
    }
  }
  if (sig_on)
    FX(x, weft_signal_stop(&c.sig));
  FX(x, weft_timer_stop(&c.rep));
  if (io_on)
    FX(x, weft_io_stop(&c.io));
  FX(x, weft_promise_fulfil_int(p, 0), WEFT_ECANCELED, WEFT_EINVAL);
  fx_loop_close(x, l);
  if (posts_ok + 1 < c.posts || c.posts_cancelled != 0)
    fx_bad(x, __LINE__, "posts ran %d (+%d cancelled), %d accepted", c.posts,
           c.posts_cancelled, posts_ok);
  if (late_on && c.timer_cancelled != 1)
    fx_bad(x, __LINE__, "active timer cancelled %d times at close",
           c.timer_cancelled);
  if (p != NULL)
    FX(x, weft_promise_release(p));
  if (c.pipefd[0] >= 0) {
    close(c.pipefd[0]);
    close(c.pipefd[1]);
  }
}

/* ---- TCP on 127.0.0.1 ---- */

/* What a connection's futures may settle with besides success. */
#define CONN_ERRS WEFT_EOF, WEFT_ECONNRESET, WEFT_EPIPE, WEFT_ECANCELED

static void sc_tcp(fx_t *x) {
  weft_loop_t *l;
  if (!fx_loop(x, &l))
    return;
  weft_addr_t a, la, pa, ua;
  weft_socket_t *ls = NULL, *cs = NULL, *ss = NULL;
  char txt[64], rbuf[64], rbuf2[64], rbuf3[8];
  FX(x, weft_addr_init_ip("127.0.0.1", 0, &a));
  FX(x, weft_addr_init_unix("/tmp/weft-fault.sock", &ua));
  FX(x, weft_addr_format(&ua, txt, sizeof txt));
  if (!FX(x, weft_socket_listen(l, &a, 16, &ls), WEFT_ENOMEM, WEFT_EMFILE,
          WEFT_ENFILE))
    goto out;
  if (!FX(x, weft_socket_local_addr(ls, &la), WEFT_ENOMEM))
    goto out;
  if (weft_addr_port(&la) <= 0 || weft_addr_format(&la, txt, sizeof txt) != 0)
    fx_bad(x, __LINE__, "listener address");
  weft_future_t *fa = NULL, *fc = NULL, *fa2 = NULL, *fat = NULL;
  if (!FX(x, weft_socket_accept(ls, &fa), WEFT_ENOMEM))
    goto out;
  fx_track(x, fa);
  if (!FX(x, weft_socket_connect(l, &la, &fc), WEFT_ENOMEM, WEFT_EMFILE,
          WEFT_ENFILE))
    goto out;
  fx_track(x, fc);
  /* The connect may fail as the kernel reports (ECONNREFUSED, ...); the
   * accept then waits (the loop's close cancels it). */
  if (!FX_RUN(x, l, fc) ||
      !FX_OUT(x, fc, WEFT_ECONNREFUSED, WEFT_EADDRNOTAVAIL, WEFT_ENOMEM))
    goto out;
  /* Out of fds or memory for good, an accept stays pending (net.h): give
   * it a while under such a fault, all the time otherwise. */
  bool starved = x->persistent && x->call != NULL &&
                 strcmp(x->call, "accept4") == 0;
  if (starved) {
    if (!FX(x, weft_loop_timeout(l, fa, 100, &fat), WEFT_ENOMEM))
      goto out;
    fx_track(x, fat);
    /* (fulfilled: a call before the N-th took the connection) */
    if (!FX_RUN(x, l, fat) || weft_future_error(fat) == WEFT_ETIMEDOUT)
      goto out;
  }
  if (!FX_RUN(x, l, fa) || !FX_OUT(x, fa, WEFT_ENOMEM))
    goto out;
  if (!FX(x, weft_socket_take(fc, &cs)) || !FX(x, weft_socket_take(fa, &ss)))
    goto out;
  if (weft_socket_take(fa, &ss) != WEFT_EALREADY)
    fx_bad(x, __LINE__, "second take");
  FX(x, weft_socket_peer_addr(cs, &pa), WEFT_ENOTCONN);
  if (weft_socket_fd(cs) < 0)
    fx_bad(x, __LINE__, "socket_fd");
  FX(x, weft_socket_set_nodelay(cs, true), WEFT_ENOTSUP);
  /* A second accept left pending: the close cancels it. */
  if (FX(x, weft_socket_accept(ls, &fa2), WEFT_ENOMEM))
    fx_track(x, fa2);

  /* Each exchange: a write on one side, a read on the other. A side
   * whose operation fails closes, so the other side's read ends (EOF or
   * reset) instead of waiting for bytes that never come. */
  weft_future_t *w1 = NULL, *r1 = NULL, *sh = NULL, *r2 = NULL, *w2 = NULL,
                *r3 = NULL;
  /* 5 bytes first: on the ring the recv takes all 11, and the 6 nobody
   * asked for yet wait on the socket for the next read. */
  if (!FX(x, weft_socket_read_exactly(ss, rbuf, 5, &r1), WEFT_ENOMEM))
    goto out;
  fx_track(x, r1);
  if (!FX(x, weft_socket_write(cs, "hello world", 11, &w1), WEFT_ENOMEM))
    goto out;
  fx_track(x, w1);
  (void)weft_socket_write_queued(cs);
  if (!FX_RUN(x, l, w1))
    goto out;
  if (!FX_OUT(x, w1, CONN_ERRS, WEFT_ENOMEM)) {
    FX(x, weft_socket_close(cs));
    cs = NULL;
  }
  if (!FX_RUN(x, l, r1))
    goto out;
  if (!FX_OUT(x, r1, CONN_ERRS, WEFT_ENOMEM) || cs == NULL)
    goto out;
  weft_future_t *r1b = NULL;
  if (!FX(x, weft_socket_read_exactly(ss, rbuf + 5, 6, &r1b), WEFT_ENOMEM))
    goto out;
  fx_track(x, r1b);
  if (!FX_RUN(x, l, r1b) || !FX_OUT(x, r1b, CONN_ERRS, WEFT_ENOMEM))
    goto out;
  if (memcmp(rbuf, "hello world", 11) != 0)
    fx_bad(x, __LINE__, "bytes read differ from those written");
  if (!FX(x, weft_socket_read(ss, rbuf2, sizeof rbuf2, &r2), WEFT_ENOMEM))
    goto out;
  fx_track(x, r2);
  if (!FX(x, weft_socket_shutdown(cs, &sh), WEFT_ENOMEM))
    goto out;
  fx_track(x, sh);
  if (!FX_RUN(x, l, sh))
    goto out;
  if (!FX_OUT(x, sh, CONN_ERRS, WEFT_ENOTCONN, WEFT_ENOMEM)) {
    FX(x, weft_socket_close(cs));
    cs = NULL;
  }
  if (!FX_RUN(x, l, r2))
    goto out;
  if (FX_OUT(x, r2, CONN_ERRS, WEFT_ENOMEM))
    fx_bad(x, __LINE__, "read after the peer's shutdown got %ld bytes",
           (long)weft_future_int(r2));
  if (cs == NULL)
    goto out;
  if (!FX(x, weft_socket_read(cs, rbuf3, sizeof rbuf3, &r3), WEFT_ENOMEM))
    goto out;
  fx_track(x, r3);
  if (!FX(x, weft_socket_write(ss, "!", 1, &w2), WEFT_ENOMEM))
    goto out;
  fx_track(x, w2);
  if (!FX_RUN(x, l, w2))
    goto out;
  if (!FX_OUT(x, w2, CONN_ERRS, WEFT_ENOMEM)) {
    FX(x, weft_socket_close(ss));
    ss = NULL;
  }
  if (!FX_RUN(x, l, r3) || !FX_OUT(x, r3, CONN_ERRS, WEFT_ENOMEM) || ss == NULL)
    goto out;
  /* A write larger than the socket takes at once: the rest goes out as
   * the reader makes room. */
  {
    enum { BIG = 256 * 1024 };
    static char big[BIG], bigin[BIG];
    int sz = 4096;
    (void)setsockopt(weft_socket_fd(ss), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    weft_future_t *bw = NULL, *br = NULL;
    if (!FX(x, weft_socket_read_exactly(cs, bigin, BIG, &br), WEFT_ENOMEM))
      goto out;
    fx_track(x, br);
    if (!FX(x, weft_socket_write(ss, big, BIG, &bw), WEFT_ENOMEM))
      goto out;
    fx_track(x, bw);
    /* Whichever ends first: a side that failed closes, so the other
     * (a write the reader stopped draining, a read the writer stopped
     * feeding) ends too. */
    weft_future_t *first = NULL;
    if (!FX(x, weft_future_race((weft_future_t *[]){bw, br}, 2, &first),
            WEFT_ENOMEM))
      goto out;
    fx_track(x, first);
    if (!FX_RUN(x, l, first))
      goto out;
    for (int k = 0; k < 2; k++) {
      weft_future_t *f = weft_future_state(bw) != WEFT_PENDING ? bw : br;
      if (k == 1)
        f = f == bw ? br : bw;
      weft_socket_t **side = f == bw ? &ss : &cs;
      if ((k == 1 && !FX_RUN(x, l, f)) ||
          (!FX_OUT(x, f, CONN_ERRS, WEFT_ENOMEM) && *side != NULL)) {
        FX(x, weft_socket_close(*side));
        *side = NULL;
      }
    }
    if (ss == NULL || cs == NULL || weft_future_state(br) != WEFT_FULFILLED)
      goto out;
  }
  /* A reset: the server's side closes with SO_LINGER 0; the client's next
   * read is rejected with ECONNRESET (or EOF), never left pending. */
  weft_future_t *r4 = NULL;
  struct linger lg = {1, 0};
  (void)setsockopt(weft_socket_fd(ss), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  FX(x, weft_socket_close(ss));
  ss = NULL;
  if (FX(x, weft_socket_read(cs, rbuf3, sizeof rbuf3, &r4), WEFT_ENOMEM,
         WEFT_ECONNRESET, WEFT_EOF)) {
    fx_track(x, r4);
    if (FX_RUN(x, l, r4))
      if (FX_OUT(x, r4, CONN_ERRS, WEFT_ENOMEM))
        fx_bad(x, __LINE__, "read of a reset connection fulfilled");
  }
out:
  if (cs != NULL)
    FX(x, weft_socket_close(cs));
  if (ss != NULL)
    FX(x, weft_socket_close(ss));
  (void)ls; /* left to the loop's close */
  fx_loop_close(x, l);
}

/* ---- UDP on 127.0.0.1 ---- */

static void sc_udp(fx_t *x) {
  weft_loop_t *l;
  if (!fx_loop(x, &l))
    return;
  weft_addr_t a, ba, from;
  weft_socket_t *u1 = NULL, *u2 = NULL;
  char buf[32], buf2[32];
  FX(x, weft_addr_init_ip("127.0.0.1", 0, &a));
  if (!FX(x, weft_socket_udp_bind(l, &a, &u1), WEFT_ENOMEM, WEFT_EMFILE,
          WEFT_ENFILE))
    goto out;
  if (!FX(x, weft_socket_udp_bind(l, &a, &u2), WEFT_ENOMEM, WEFT_EMFILE,
          WEFT_ENFILE))
    goto out;
  if (!FX(x, weft_socket_local_addr(u2, &ba), WEFT_ENOMEM))
    goto out;
  weft_future_t *s = NULL, *r = NULL, *r2 = NULL, *both = NULL;
  if (!FX(x, weft_socket_udp_recv(u2, buf, sizeof buf, &from, &r), WEFT_ENOMEM))
    goto out;
  fx_track(x, r);
  if (FX(x, weft_socket_udp_recv(u1, buf2, sizeof buf2, NULL, &r2),
         WEFT_ENOMEM))
    fx_track(x, r2); /* never gets a datagram: cancelled by the close */
  if (!FX(x, weft_socket_udp_send(u1, "dgram", 5, &ba, &s), WEFT_ENOMEM))
    goto out;
  fx_track(x, s);
  if (!FX_RUN(x, l, s))
    goto out;
  /* A datagram the kernel refused to send never arrives: wait for the
   * receive only after a send that worked. */
  if (!FX_OUT(x, s, WEFT_ENOMEM, WEFT_ENOBUFS, WEFT_ECONNREFUSED))
    goto out;
  (void)both;
  if (FX_RUN(x, l, r) && FX_OUT(x, r, WEFT_ENOMEM, WEFT_ECONNREFUSED) &&
      (weft_future_int(r) != 5 || memcmp(buf, "dgram", 5) != 0))
    fx_bad(x, __LINE__, "datagram received differs");
out:
  if (u1 != NULL)
    FX(x, weft_socket_close(u1));
  (void)u2; /* left to the loop's close */
  fx_loop_close(x, l);
}

/* ---- weft's own allocator: enough small blocks to map regions ---- */

enum { REGION_PAIRS = 100000 };

static void sc_regions(fx_t *x) {
  static weft_promise_t *p[REGION_PAIRS];
  static weft_future_t *f[REGION_PAIRS];
  int n = 0;
  for (; n < REGION_PAIRS; n++)
    if (!FX(x, weft_promise_create(&p[n], &f[n]), WEFT_ENOMEM))
      break;
  for (int i = 0; i < n; i++) {
    weft_promise_release(p[i]);
    weft_future_release(f[i]);
  }
}

/* ---- files and name lookups (weft/fs.h, weft/dns.h) ---- */

/* The loop's blocking work on a pool's blocking threads, whose shutdown
 * joins what the loop's close leaves running. Every file call of fs.h,
 * then a lookup of a numeric host (no network). */
static void files_ops(fx_t *x, weft_loop_t *l, weft_file_t *file) {
  char buf[8];
  struct stat st;
  weft_future_t *f;
  if (FX(x, weft_file_write(file, "abcdef", 6, 0, &f), WEFT_ENOMEM,
         WEFT_EAGAIN) &&
      FX_RUN(x, l, fx_track(x, f)))
    FX_OUT(x, f, WEFT_ENOMEM);
  if (FX(x, weft_file_read(file, buf, sizeof buf, WEFT_FILE_CURRENT, &f),
         WEFT_ENOMEM, WEFT_EAGAIN) &&
      FX_RUN(x, l, fx_track(x, f)))
    FX_OUT(x, f, WEFT_ENOMEM);
  if (FX(x, weft_file_stat(file, &st, &f), WEFT_ENOMEM, WEFT_EAGAIN) &&
      FX_RUN(x, l, fx_track(x, f)))
    FX_OUT(x, f, WEFT_ENOMEM);
  if (FX(x, weft_file_sync(file, &f), WEFT_ENOMEM, WEFT_EAGAIN) &&
      FX_RUN(x, l, fx_track(x, f)))
    FX_OUT(x, f, WEFT_ENOMEM);
  if (FX(x, weft_file_datasync(file, &f), WEFT_ENOMEM, WEFT_EAGAIN))
    fx_track(x, f); /* left pending: the close cancels it */
  (void)weft_file_fd(file);
  if (FX(x, weft_file_close(file, &f)) && FX_RUN(x, l, fx_track(x, f)))
    FX_OUT(x, f);
}

static void files_tick(weft_timer_t *t, int status, void *arg) {
  (void)t, (void)status, (void)arg;
}

static void sc_files(fx_t *x) {
  weft_pool_options_t po = {sizeof po, 1, 4, 0, {0}};
  weft_pool_t *pool;
  if (!FX(x, weft_pool_create(&po, &pool), WEFT_ENOMEM, WEFT_EAGAIN))
    return;
  weft_loop_options_t o = {.size = sizeof o};
  o.blocking = weft_pool_blocking_executor(pool);
  weft_loop_t *l;
  if (FX(x, weft_loop_create(&o, &l), WEFT_ENOMEM, WEFT_EMFILE, WEFT_ENFILE)) {
    /* Results come back from the pool's threads through the loop's
     * eventfd; the injected EAGAIN of its write (which the kernel gives
     * only when the counter is full, the loop then woken anyway) would
     * lose that wake-up: a ticking timer stands for the full counter. */
    weft_timer_t tick;
    bool ticking = FX(x, weft_timer_init(l, &tick, files_tick, NULL)) &&
                   FX(x, weft_timer_start(&tick, 1, 1), WEFT_ENOMEM);
    char path[64];
    snprintf(path, sizeof path, "/tmp/weft-fault-%d", (int)getpid());
    weft_future_t *f;
    weft_file_t *file = NULL;
    if (FX(x, weft_file_open(l, path, O_RDWR | O_CREAT, 0600, &f), WEFT_ENOMEM,
           WEFT_EAGAIN) &&
        FX_RUN(x, l, fx_track(x, f)) && FX_OUT(x, f, WEFT_ENOMEM))
      FX(x, weft_file_take(f, &file));
    if (file != NULL)
      files_ops(x, l, file);
    struct stat st; /* (no file there when the open failed) */
    if (FX(x, weft_fs_stat(l, path, &st, &f), WEFT_ENOMEM, WEFT_EAGAIN) &&
        FX_RUN(x, l, fx_track(x, f)))
      FX_OUT(x, f, WEFT_ENOMEM, WEFT_ENOENT);
    if (FX(x, weft_dns_resolve(l, "127.0.0.1", "80", NULL, &f), WEFT_ENOMEM,
           WEFT_EAGAIN) &&
        FX_RUN(x, l, fx_track(x, f)))
      FX_OUT(x, f, WEFT_ENOMEM);
    if (FX(x, weft_dns_resolve(l, "::1", NULL, NULL, &f), WEFT_ENOMEM,
           WEFT_EAGAIN))
      fx_track(x, f); /* the loop's close settles it */
    unlink(path);
    if (ticking)
      FX(x, weft_timer_stop(&tick));
    fx_loop_close(x, l);
  }
  FX(x, weft_pool_shutdown(pool, WEFT_POOL_DRAIN, -1, NULL));
}

const fx_scenario_t fx_scenarios[] = {
    {"futures", sc_futures, false, false},
    {"thread_executor", sc_thread_executor, false, false},
    {"pool", sc_pool, false, false},
    {"loop", sc_loop, true, false},
    {"tcp", sc_tcp, true, false},
    {"udp", sc_udp, true, false},
    {"files", sc_files, true, false},
    {"regions", sc_regions, false, true},
};
const int fx_nscenarios = (int)(sizeof fx_scenarios / sizeof fx_scenarios[0]);
