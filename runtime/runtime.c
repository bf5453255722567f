/* SPDX-License-Identifier: MIT */
/* runtime/runtime.c: a loop, a CPU pool and blocking threads in one call
 * (include/weft/runtime.h). It joins the loop and the pool through their
 * public headers only, as a user's program would; neither knows it. */
#include "../lib/internal.h"

#include <weft/runtime.h>
#include <weft/system.h>

#include <pthread.h>
#include <stddef.h>
#include <string.h>

/* A fiber of weft_runtime_spawn(): on the runtime's list until it ends. */
typedef struct rec {
  weft_watch_t w; /* holds the fiber's handle until it has ended */
  weft_future_t *f;
  bool cancelled; /* shutdown cancelled it (under mu) */
  struct rec *prev, *next;
  weft_runtime_t *rt;
} rec_t;

struct weft_runtime {
  weft_loop_t *loop;
  weft_pool_t *pool;
  pthread_mutex_t mu;
  rec_t *live; /* under mu */
  size_t nlive;
  bool closing;
  weft_promise_t *idle; /* settled when nlive reaches 0 while closing */
};

static _Thread_local weft_runtime_t *tl_rt;

/* The caller's loop options, with the pool's blocking threads as the
 * loop's blocking executor unless the caller named one. Options of a size
 * this weft does not read as its own go to weft_loop_create() as they are,
 * for it to judge. */
static const weft_loop_options_t *loop_options(const weft_loop_options_t *in,
                                               weft_pool_t *pool,
                                               weft_loop_options_t *lo) {
  if (in != NULL && (in->size > sizeof *lo ||
                     in->size < offsetof(weft_loop_options_t, blocking)))
    return in;
  memset(lo, 0, sizeof *lo);
  if (in != NULL)
    memcpy(lo, in, in->size);
  lo->size = sizeof *lo;
  if (lo->blocking == NULL)
    lo->blocking = weft_pool_blocking_executor(pool);
  return lo;
}

int weft_runtime_create(const weft_runtime_options_t *opts,
                        weft_runtime_t **out) {
  weft_runtime_options_t o = {0};
  if (out == NULL)
    return WEFT_EINVAL;
  if (opts != NULL) {
    size_t known = offsetof(weft_runtime_options_t, reserved);
    int rc = weft__struct_check(opts, opts->size, sizeof o, known);
    if (rc != 0)
      return rc;
    o = *opts;
  }
  if (o.cpu_threads > 1024)
    return WEFT_EINVAL;
  unsigned cpus = weft_cpu_count();
  weft_pool_options_t po = {.size = sizeof po,
                            .threads = o.cpu_threads != 0 ? o.cpu_threads
                                       : cpus > 1         ? cpus - 1
                                                          : 1,
                            .blocking_max = o.blocking_max};
  weft_runtime_t *rt = weft__malloc(sizeof *rt);
  if (rt == NULL)
    return WEFT_ENOMEM;
  *rt = (weft_runtime_t){0};
  if (pthread_mutex_init(&rt->mu, NULL) != 0) {
    weft__free(rt, sizeof *rt);
    return WEFT_ENOMEM;
  }
  int rc = weft_pool_create(&po, &rt->pool);
  weft_loop_options_t lo;
  if (rc == 0 && (rc = weft_loop_create(loop_options(o.loop, rt->pool, &lo),
                                        &rt->loop)) != 0)
    weft_pool_shutdown(rt->pool, WEFT_POOL_CANCEL, 0, NULL);
  if (rc != 0) {
    pthread_mutex_destroy(&rt->mu);
    weft__free(rt, sizeof *rt);
    return rc;
  }
  tl_rt = rt;
  *out = rt;
  return 0;
}

weft_loop_t *weft_runtime_loop(weft_runtime_t *rt) {
  return rt != NULL ? rt->loop : NULL;
}

weft_pool_t *weft_runtime_pool(weft_runtime_t *rt) {
  return rt != NULL ? rt->pool : NULL;
}

weft_runtime_t *weft_runtime_current(void) { return tl_rt; }

/* A fiber ended (on the thread that settled it): off the list. */
static void rec_done(void *arg, weft_future_t *f) {
  (void)f;
  rec_t *r = arg;
  weft_runtime_t *rt = r->rt;
  weft_promise_t *idle = NULL;
  pthread_mutex_lock(&rt->mu);
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    rt->live = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  if (--rt->nlive == 0 && rt->closing)
    idle = rt->idle;
  pthread_mutex_unlock(&rt->mu);
  weft__free(r, sizeof *r);
  if (idle != NULL)
    weft_promise_fulfil_int(idle, 0);
}

int weft_runtime_spawn(weft_runtime_t *rt, const weft_fiber_options_t *opts,
                       weft_fiber_fn fn, void *arg, weft_dtor_fn arg_dtor,
                       weft_future_t **out) {
  if (rt == NULL || fn == NULL)
    return WEFT_EINVAL;
  rec_t *r = weft__malloc(sizeof *r);
  if (r == NULL)
    return WEFT_ENOMEM;
  *r = (rec_t){.rt = rt};
  pthread_mutex_lock(&rt->mu);
  int rc = rt->closing ? WEFT_ESHUTDOWN
                       : weft_fiber_spawn_opts(weft_loop_executor(rt->loop),
                                               opts, fn, arg, arg_dtor, &r->f);
  if (rc == 0) {
    r->next = rt->live;
    if (rt->live != NULL)
      rt->live->prev = r;
    rt->live = r;
    rt->nlive++;
    if (out != NULL) {
      weft_future_retain(r->f);
      *out = r->f;
    }
  }
  pthread_mutex_unlock(&rt->mu);
  if (rc != 0) {
    weft__free(r, sizeof *r);
    return rc;
  }
  /* Outside mu: the watch runs at once if the fiber has ended already. */
  weft_watch_start(&r->w, r->f, weft_executor_inline(), rec_done, r, NULL);
  return 0;
}

int weft_runtime_run(weft_runtime_t *rt, weft_future_t *f, int64_t timeout_ms) {
  if (rt == NULL)
    return WEFT_EINVAL;
  return weft_loop_run_until(rt->loop, f, timeout_ms);
}

/* Cancel every fiber still on the list (outside mu: a cancel may end one,
 * and its watch takes mu). */
static void cancel_live(weft_runtime_t *rt) {
  for (;;) {
    weft_future_t *f = NULL;
    pthread_mutex_lock(&rt->mu);
    for (rec_t *r = rt->live; r != NULL && f == NULL; r = r->next)
      if (!r->cancelled) {
        r->cancelled = true;
        f = r->f;
        weft_future_retain(f);
      }
    pthread_mutex_unlock(&rt->mu);
    if (f == NULL)
      return;
    weft_future_cancel(f);
    weft_future_release(f);
  }
}

/* Milliseconds left until `end` (ns; INT64_MAX: forever), at least 0. */
static int64_t ms_left(int64_t end) {
  if (end == INT64_MAX)
    return WEFT_FOREVER;
  int64_t left = end - weft_clock_now_ns();
  return left > 0 ? (left + 999999) / 1000000 : 0;
}

int weft_runtime_shutdown(weft_runtime_t *rt, int64_t grace_ms) {
  if (rt == NULL || grace_ms < -1)
    return WEFT_EINVAL;
  if (weft_loop_current() != rt->loop)
    return WEFT_EPERM;
  if (weft_fiber_is_running())
    return WEFT_EBUSY;
  /* One turn of the loop: refused with WEFT_EBUSY inside its callbacks. */
  int rc = weft_loop_run(rt->loop, WEFT_RUN_NOWAIT);
  if (rc == WEFT_EBUSY)
    return rc;
  int64_t end = grace_ms == WEFT_FOREVER ? INT64_MAX
                : grace_ms > (INT64_MAX - weft_clock_now_ns()) / 1000000
                    ? INT64_MAX
                    : weft_clock_now_ns() + grace_ms * 1000000;
  weft_future_t *idle_f = NULL;
  weft_promise_t *idle = NULL;
  int out = 0;
  if (weft_promise_create(&idle, &idle_f) != 0)
    idle = NULL; /* no memory: wait by turning the loop instead */
  pthread_mutex_lock(&rt->mu);
  rt->closing = true;
  rt->idle = idle;
  bool busy = rt->nlive > 0;
  pthread_mutex_unlock(&rt->mu);
  if (busy && idle != NULL)
    weft_loop_run_until(rt->loop, idle_f, ms_left(end));
  for (bool cancelled = false;;) {
    pthread_mutex_lock(&rt->mu);
    busy = rt->nlive > 0;
    pthread_mutex_unlock(&rt->mu);
    if (!busy)
      break;
    if (!cancelled) { /* the grace period is over: cancel, then wait */
      out = WEFT_ETIMEDOUT;
      cancelled = true;
      cancel_live(rt);
    }
    if (idle != NULL)
      weft_loop_run_until(rt->loop, idle_f, WEFT_FOREVER);
    else
      weft_loop_run(rt->loop, WEFT_RUN_ONCE);
  }
  /* The pool's queued jobs get what is left of the grace period; with
   * none left they are cancelled (a drain with no time could not even
   * wait for idle workers to exit). */
  int64_t left = ms_left(end);
  weft_pool_stats_t before, after;
  weft_pool_stats(rt->pool, &before);
  if (weft_pool_shutdown(rt->pool,
                         left == 0 ? WEFT_POOL_CANCEL : WEFT_POOL_DRAIN, left,
                         &after) == WEFT_ETIMEDOUT ||
      after.cancelled > before.cancelled)
    out = WEFT_ETIMEDOUT;
  weft_loop_close(rt->loop);
  if (idle_f != NULL) {
    weft_future_release(idle_f);
    weft_promise_release(idle);
  }
  if (tl_rt == rt)
    tl_rt = NULL;
  pthread_mutex_destroy(&rt->mu);
  weft__free(rt, sizeof *rt);
  return out;
}
