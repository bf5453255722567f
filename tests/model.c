/* SPDX-License-Identifier: MIT */
/* tests/model.c: a reference model of weft's future semantics and a seeded
 * random driver that checks every observable outcome against it.
 *
 * The driver runs MODEL_THREADS threads. Each owns a small graph of futures
 * (promises fulfilled with ints or pointers, thens on the inline/pool/loop
 * executors, watches, all, all-settled, any, race, some, pool jobs, some of
 * which await a future on the worker) and issues random public calls on
 * it; pool workers and the loop thread settle and run continuations
 * concurrently. Every thread also shares two promises per round with the
 * next thread, which fulfils, rejects or cancels them while the owner does
 * the same: a settle racing a cancel.
 *
 * The model classifies each future, from the calls its thread made, as
 *   PEND  surely pending: only this thread's own later calls can settle it;
 *   NOW   surely settled now, with a known outcome;
 *   WILL  settling without further calls (a pool job, a continuation on
 *         another executor), with the outcome predicted when it can be;
 *   UNK   the contract allows either (a cancel that may be travelling
 *         upstream from a consumer settled on another thread, a promise
 *         shared with another thread).
 * and checks each return code and outcome: exact where the class is PEND or
 * NOW; for WILL and UNK, the observed outcome must be one the contract
 * allows, and is then pinned (NOW) for what follows. A cancel that returns 0
 * and leaves a pending input that nothing else needs must cancel it at once.
 * At the end of each round every promise is settled or released, every held
 * future must settle within 5 s, every continuation, watch and job must
 * have run (or had its arg_dtor run) exactly once, each seeing what its
 * source settled as; at the end of the run, after pool shutdown and loop
 * close, the counting allocator must show no block alive.
 *
 * Each thread's choices come from its own PRNG (seed mixed with the thread
 * number) or, for the fuzzer, from every 4th byte of the input, so a thread's
 * sequence of calls is the same on every replay; only the interleaving with
 * the other threads varies, and the model accepts every interleaving the
 * contract allows.
 */
#define _GNU_SOURCE
#include "model.h"

#include <weft.h>

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXN 24        /* nodes per thread graph */
#define MAXIN 4        /* inputs per combinator */
#define MAXEDGE 12     /* consumers remembered per node */
#define ROUND_STEPS 96 /* steps per round and thread */
#define NSHARED 2      /* promises each thread shares per round */
#define SETTLE_MS 5000 /* the bound for anything that must settle */
#define MAXOPS 32      /* settle calls recorded per shared promise */
#define OPS_CAP 24     /* each side stops calling at this many */

/* clang-format off */
enum op {
  OP_PROMISE, OP_THEN, OP_WATCH, OP_ALL, OP_ALL_SETTLED, OP_ANY, OP_RACE,
  OP_SOME, OP_JOB, OP_FULFIL, OP_REJECT, OP_CANCEL, OP_RELEASE,
  OP_RELEASE_PROMISE, OP_RETAIN, OP_AWAIT, OP_READ, OP_POST, OP_SHARED,
  OP_COUNT_
};
static const char *const op_names[OP_COUNT_] = {
    "promise", "then",   "watch",  "all",     "all_settled", "any",
    "race",    "some",   "job",    "fulfil",  "reject",      "cancel",
    "release", "release_promise", "retain", "await", "read", "post",
    "shared"};
/* clang-format on */
const char *model_op_name(int op) { return op_names[op]; }
int model_op_count(void) { return OP_COUNT_; }

enum cls { PEND, NOW, WILL, UNK };
enum kind { K_PROM, K_THEN, K_COMB, K_JOB };
enum ex { EX_INLINE, EX_POOL, EX_LOOP };
enum fnk { FN_MAP, FN_ERR, FN_FOLLOW };

typedef struct oc { /* an outcome: state and int value or error code */
  int st;
  intptr_t v;
} oc_t;

typedef struct cl {
  int cls;
  bool has; /* oc is the predicted/known outcome */
  oc_t oc;
  /* NOW: settled by this thread's own calls, so its inline * continuations
   * have run too (not just observed settled) */
  bool sync;
} cl_t;

struct world;

/* What a continuation, watch or job saw and did: written by weft's threads,
 * read by the driver once it settled. */
typedef struct cont {
  _Atomic int runs, dtors, bad_thread;
  _Atomic int saw_st;
  _Atomic intptr_t saw_v;
  int fnk, ex;
  intptr_t jobv;        /* job: its value; then FN_ERR: its code */
  int64_t await_ms;     /* an awaiting job: the await's timeout */
  int64_t await_ns;     /* when its await returned */
  const char *bad_name; /* the executor current where it should not be */
  bool job_err;
  weft_future_t *target; /* FN_FOLLOW: the handle handed to weft */
  bool is_watch;
  int src; /* a watch's source node */
  struct world *w;
} cont_t;

typedef struct edge {
  int node; /* consumer node, or -1 for a watch (needs its source until run) */
  /* a handle held by a follow's arg or an awaiting job: kept * until arg_dtor
   * or the job ends, even after a cancel */
  bool handle;
} edge_t;

typedef struct node {
  int kind;
  weft_future_t *f;
  weft_promise_t *p; /* K_PROM: NULL once released */
  int handles;       /* handles the driver holds */
  int reserved;      /* of which the shared-promise machinery keeps */
  bool known;        /* outcome observed or surely known: obs */
  bool async_known;  /* known from an observation, not this thread's call */
  oc_t obs;
  bool cancel_won;       /* a cancel on it returned 0 */
  bool unc_cancel;       /* a cancel may have travelled to it */
  bool broken_or_cancel; /* promise released while UNK */
  int shared;            /* index+1 into the thread's shared slots, or 0 */
  edge_t edge[MAXEDGE];
  int nedge;
  bool edge_overflow;
  /* K_THEN */
  int src, target, ex, fnk;
  cont_t *cont;
  /* K_COMB */
  int op, n, k, in[MAXIN];
  /* K_JOB */
  intptr_t jobv;
  bool job_err;
  int await_on;      /* an awaiting job: the node it awaits, else -1 */
  bool may_time_out; /* its target was surely pending when submitted */
} node_t;

typedef struct shared { /* a promise one thread shares with the next */
  weft_promise_t *p;
  weft_future_t *helper_f; /* the helper's handle, released by it */
  int owner_node;
  _Atomic int n_ops;
  struct {
    int op, rc;
    intptr_t v;
  } ops[MAXOPS];
} shared_t;

typedef struct chooser {
  uint64_t s;
  const uint8_t *d;
  size_t n, i;
  int stride;
  bool fuzz, exhausted;
} chooser_t;

typedef struct env env_t;

typedef struct world {
  env_t *env;
  int tid;
  chooser_t ch;
  node_t node[MAXN];
  int nnode;
  long round, step;
  cont_t *conts[MAXN * 3];
  int nconts;
  long posted;
  shared_t mine[NSHARED];
  model_result_t *res; /* per thread, summed at the end */
} world_t;

struct env {
  weft_pool_t *pool;
  weft_loop_t *loop;
  pthread_t loop_thread;
  pthread_barrier_t bar;
  _Atomic int failed;
  _Atomic long progress;
  _Atomic long posts_run, posts_bad;
  _Atomic long values_given; /* pointer values a fulfil took */
  long rounds;
  int stop; /* decided by one thread between two barriers */
  _Atomic int exhausted;
  uint64_t seed;
  bool fuzz;
  char msg[1024];
  pthread_mutex_t msg_mu;
  world_t w[MODEL_THREADS];
  /* the loop thread's start handshake */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int loop_ready;
  int watchdog_stop;
};

static _Atomic long g_values_freed; /* value_dtor calls */

/* ---- counting allocator ------------------------------------------------ */

static _Atomic long a_live, a_total, a_by_size[1025];
static void *count_alloc(void *ctx, size_t size) {
  (void)ctx;
  void *p = malloc(size);
  if (p != NULL) {
    atomic_fetch_add(&a_by_size[size < 1024 ? size : 1024], 1);
    atomic_fetch_add(&a_live, 1);
    atomic_fetch_add(&a_total, 1);
  }
  return p;
}
static void count_release(void *ctx, void *ptr, size_t size) {
  (void)ctx;
  atomic_fetch_sub(&a_by_size[size < 1024 ? size : 1024], 1);
  atomic_fetch_sub(&a_live, 1);
  free(ptr);
}

/* ---- choices ----------------------------------------------------------- */

static uint32_t pick(chooser_t *c, uint32_t n) {
  if (n <= 1)
    return 0;
  if (c->fuzz) {
    if (c->i >= c->n) {
      c->exhausted = true;
      return 0;
    }
    uint32_t b = c->d[c->i];
    c->i += (size_t)c->stride;
    return b % n;
  }
  /* splitmix64 */
  uint64_t z = (c->s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (uint32_t)(z % n);
}

/* ---- tracing: WEFT_MODEL_TRACE=<thread> prints that thread's calls ---- */

static int g_trace = -2;
static void trace(world_t *w, const char *fmt, ...) {
  if (g_trace == -2) {
    const char *t = getenv("WEFT_MODEL_TRACE");
    g_trace = t != NULL ? atoi(t) : -1;
  }
  if (g_trace != w->tid && g_trace != MODEL_THREADS)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[t%d r%ld s%ld] ", w->tid, w->round, w->step);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- failure ----------------------------------------------------------- */

static void fail(world_t *w, const char *fmt, ...) {
  env_t *e = w->env;
  pthread_mutex_lock(&e->msg_mu);
  if (!atomic_load(&e->failed)) {
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (e->fuzz)
      snprintf(e->msg, sizeof e->msg, "thread %d round %ld step %ld: %s",
               w->tid, w->round, w->step, what);
    else
      snprintf(e->msg, sizeof e->msg,
               "seed %llu thread %d round %ld step %ld: %s "
               "(replay: WEFT_MODEL_SEED=%llu)",
               (unsigned long long)e->seed, w->tid, w->round, w->step, what,
               (unsigned long long)e->seed);
    atomic_store(&e->failed, 1);
  }
  pthread_mutex_unlock(&e->msg_mu);
}

#define CHECK(w, cond, ...)                                                    \
  do {                                                                         \
    (w)->res->checks++;                                                        \
    if (!(cond))                                                               \
      fail((w), __VA_ARGS__);                                                  \
  } while (0)

static const char *stname(int st) {
  static const char *const n[] = {"PENDING", "FULFILLED", "REJECTED",
                                  "CANCELLED"};
  return st >= 0 && st <= 3 ? n[st] : "?";
}

/* ---- outcomes ---------------------------------------------------------- */

static oc_t read_oc(weft_future_t *f) {
  oc_t o;
  o.st = (int)weft_future_state(f);
  o.v = o.st == WEFT_FULFILLED ? weft_future_int(f)
                               : (intptr_t)weft_future_error(f);
  return o;
}
static oc_t mk(int st, intptr_t v) {
  oc_t o = {st, v};
  return o;
}
static bool oc_eq(oc_t a, oc_t b) { return a.st == b.st && a.v == b.v; }
static bool failed_oc(oc_t o) {
  return o.st == WEFT_REJECTED || o.st == WEFT_CANCELLED;
}

/* What a FN_MAP continuation returns for the source outcome it saw. */
static oc_t map_oc(oc_t s) {
  if (s.st == WEFT_FULFILLED)
    return mk(WEFT_FULFILLED, s.v + 1000);
  if (s.st == WEFT_REJECTED)
    return mk(WEFT_REJECTED, s.v - 1);
  return mk(WEFT_FULFILLED, -7);
}

/* ---- the model's classification ---------------------------------------- */

static cl_t cl_of(world_t *w, int i);

static cl_t cl_mk(int cls, bool has, oc_t oc) {
  cl_t c = {cls, has, oc, true};
  return c;
}

static cl_t cl_comb(world_t *w, node_t *x) {
  int n = x->n, fok = 0, ffail = 0, pend = 0, unk = 0, nowwill = 0;
  bool anyunknown_oc = false;
  for (int j = 0; j < n; j++) {
    cl_t c = cl_of(w, x->in[j]);
    if (c.cls == PEND)
      pend++;
    else if (c.cls == UNK)
      unk++;
    else {
      nowwill++;
      if (!c.has)
        anyunknown_oc = true;
      else if (c.oc.st == WEFT_FULFILLED)
        fok++;
      else
        ffail++;
    }
  }
  bool forced; /* the NOW/WILL inputs alone settle it */
  switch (x->op) {
  case OP_ALL:
    forced = nowwill == n || ffail > 0;
    break;
  case OP_ALL_SETTLED:
    forced = nowwill == n;
    break;
  case OP_ANY:
    forced = nowwill == n || fok > 0;
    break;
  case OP_RACE:
    forced = nowwill > 0;
    break;
  default:
    forced = nowwill == n || fok >= x->k || ffail > n - x->k;
    break;
  }
  if (forced)
    return cl_mk(WILL, false, mk(0, 0));
  /* not forced: pending for sure if the rest are surely pending and the
   * known outcomes cannot settle it either */
  if (unk == 0 && !anyunknown_oc)
    return cl_mk(PEND, false, mk(0, 0));
  return cl_mk(UNK, false, mk(0, 0));
}

static cl_t cl_of(world_t *w, int i) {
  node_t *x = &w->node[i];
  if (x->known) {
    cl_t c = cl_mk(NOW, true, x->obs);
    c.sync = !x->async_known;
    return c;
  }
  if (x->unc_cancel || x->shared || x->broken_or_cancel)
    return cl_mk(UNK, false, mk(0, 0));
  switch (x->kind) {
  case K_PROM:
    return cl_mk(PEND, false, mk(0, 0));
  case K_JOB:
    if (x->await_on >= 0 && x->may_time_out)
      return cl_mk(WILL, false, mk(0, 0));
    return cl_mk(WILL, true,
                 x->job_err ? mk(WEFT_REJECTED, x->jobv)
                            : mk(WEFT_FULFILLED, x->jobv));
  case K_COMB:
    return cl_comb(w, x);
  default: { /* K_THEN */
    cl_t s = cl_of(w, x->src);
    if (s.cls == PEND)
      return s;
    if (s.cls == UNK)
      return s;
    bool now = s.cls == NOW && s.sync && x->ex == EX_INLINE;
    if (x->fnk == FN_ERR)
      return cl_mk(now ? NOW : WILL, true, mk(WEFT_REJECTED, x->cont->jobv));
    if (x->fnk == FN_MAP) {
      if (!s.has)
        return cl_mk(WILL, false, mk(0, 0));
      return cl_mk(now ? NOW : WILL, true, map_oc(s.oc));
    }
    cl_t t = cl_of(w, x->target);
    if (t.cls == PEND || t.cls == UNK)
      return t;
    return cl_mk(now && t.cls == NOW && t.sync ? NOW : WILL, t.has, t.oc);
  }
  }
}

/* Is i surely needed (a driver handle, a watch, a consumer surely pending)?
 * `except` is a consumer not to count. */
static bool sure_needed(world_t *w, int i, int except) {
  node_t *x = &w->node[i];
  if (x->handles > 0)
    return true;
  for (int e = 0; e < x->nedge; e++) {
    int c = x->edge[e].node;
    if (c < 0)
      return true;
    if (c != except && cl_of(w, c).cls == PEND)
      return true;
  }
  return x->edge_overflow;
}

/* A consumer that is no longer surely pending may have dropped its need: an
 * input nothing surely needs may then have been cancelled. */
static void update_uncertain(world_t *w) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (int i = 0; i < w->nnode; i++) {
      node_t *x = &w->node[i];
      if (x->known || x->unc_cancel || x->nedge == 0 || sure_needed(w, i, -1))
        continue;
      if (cl_of(w, i).cls == NOW)
        continue;
      x->unc_cancel = true;
      changed = true;
    }
  }
}

/* ---- legality of an observed outcome ------------------------------------ */

static bool legal(world_t *w, int i, oc_t o, char *why, size_t whysz);
static void dump(world_t *w, int i, int depth);

/* A combinator's outcome against its inputs' outcomes (read live while the
 * driver holds it; else from the model, and unchecked when one is unknown)
 * and, for any and race, the winner weft_future_order() names. */
static bool comb_legal(world_t *w, node_t *x, oc_t o, char *why, size_t wz) {
  int n = x->n, fok = 0, ffail = 0, settled = 0;
  bool live = x->handles > 0;
  oc_t in[MAXIN];
  for (int j = 0; j < n; j++) {
    if (!live && !w->node[x->in[j]].known)
      return true;
    in[j] = live ? read_oc(weft_future_input(x->f, (size_t)j))
                 : w->node[x->in[j]].obs;
    if (in[j].st == WEFT_FULFILLED)
      fok++;
    else if (in[j].st != WEFT_PENDING)
      ffail++;
    if (in[j].st != WEFT_PENDING)
      settled++;
  }
  size_t w0 = 0;
  int orc = 0;
  if (live) {
    orc = weft_future_order(x->f, 0, &w0);
  } else { /* no order to read: some input must match */
    for (w0 = 0; w0 < (size_t)n && !oc_eq(in[w0], o); w0++)
      ;
    if (w0 == (size_t)n)
      w0 = 0;
  }
  switch (x->op) {
  case OP_ALL:
    if (o.st == WEFT_FULFILLED)
      return o.v == 0 && fok == n;
    if (o.st == WEFT_REJECTED) {
      for (int j = 0; j < n; j++)
        if (failed_oc(in[j]) && in[j].v == o.v)
          return true;
      snprintf(why, wz, "all rejected with %ld: no input failed so", (long)o.v);
      return false;
    }
    break;
  case OP_ALL_SETTLED:
    if (o.st == WEFT_FULFILLED)
      return o.v == 0 && settled == n;
    break;
  case OP_ANY:
  case OP_RACE:
    if (o.st == WEFT_REJECTED && x->op == OP_ANY)
      return o.v == WEFT_EALLFAILED && ffail == n;
    if (orc != 0 || w0 >= (size_t)n) {
      snprintf(why, wz, "%s settled %s but order(0) = %s", op_names[x->op],
               stname(o.st), weft_error_name(orc));
      return false;
    }
    if (oc_eq(in[w0], o))
      return true;
    snprintf(why, wz,
             "%s settled %s/%ld but its winner order(0) = input %zu settled "
             "%s/%ld",
             op_names[x->op], stname(o.st), (long)o.v, w0, stname(in[w0].st),
             (long)in[w0].v);
    return false;
  default: /* some */
    if (o.st == WEFT_FULFILLED)
      return o.v == 0 && fok >= x->k;
    if (o.st == WEFT_REJECTED)
      return o.v == WEFT_EALLFAILED && ffail > n - x->k;
  }
  return false;
}

static bool legal(world_t *w, int i, oc_t o, char *why, size_t wz) {
  node_t *x = &w->node[i];
  why[0] = 0;
  if (x->known)
    return oc_eq(o, x->obs);
  cl_t c = cl_of(w, i);
  if (o.st == WEFT_PENDING)
    return c.cls != NOW;
  if (c.cls == PEND)
    return false;
  if (o.st == WEFT_CANCELLED && o.v == WEFT_ECANCELED &&
      (x->cancel_won || x->unc_cancel))
    return true;
  if (x->shared)
    return true; /* checked when the round's races are reconciled */
  if (x->broken_or_cancel)
    return oc_eq(o, mk(WEFT_REJECTED, WEFT_EBROKEN)) ||
           oc_eq(o, mk(WEFT_CANCELLED, WEFT_ECANCELED));
  switch (x->kind) {
  case K_PROM:
    return false;
  case K_JOB:
    if (x->await_on >= 0 && x->may_time_out &&
        oc_eq(o, mk(WEFT_FULFILLED, WEFT_ETIMEDOUT)))
      return true;
    if (x->await_on >= 0 && o.v == WEFT_ETIMEDOUT) {
      snprintf(why, wz,
               "its await of node %d timed out; the target then "
               "read %s, and reads %s %ld ms later",
               x->await_on, stname(atomic_load(&x->cont->saw_st)),
               w->node[x->await_on].handles > 0
                   ? stname(weft_future_state(w->node[x->await_on].f))
                   : "(unheld)",
               (long)((weft_clock_now_ns() - x->cont->await_ns) / 1000000));
      dump(w, x->await_on, 1);
      return false;
    }
    return oc_eq(o, x->job_err ? mk(WEFT_REJECTED, x->jobv)
                               : mk(WEFT_FULFILLED, x->jobv));
  case K_COMB:
    return comb_legal(w, x, o, why, wz);
  default: { /* K_THEN: what fn returned for what it saw */
    cont_t *k = x->cont;
    if (atomic_load(&k->runs) != 1) {
      snprintf(why, wz, "then settled %s but fn ran %d times", stname(o.st),
               atomic_load(&k->runs));
      return false;
    }
    oc_t saw = mk(atomic_load(&k->saw_st), atomic_load(&k->saw_v));
    if (x->fnk == FN_MAP)
      return oc_eq(o, map_oc(saw));
    if (x->fnk == FN_ERR)
      return oc_eq(o, mk(WEFT_REJECTED, k->jobv));
    char sub[256];
    return legal(w, x->target, o, sub, sizeof sub);
  }
  }
}

/* Observed o on node i (settled): check and pin it. */
static void pin(world_t *w, int i, oc_t o, const char *where) {
  char why[512];
  node_t *x = &w->node[i];
  if (o.st == WEFT_PENDING)
    return;
  w->res->checks++;
  if (!legal(w, i, o, why, sizeof why)) {
    fail(w,
         "%s: node %d (%s) settled %s/%ld, which the model does not allow"
         "%s%s%s",
         where, i,
         x->kind == K_PROM   ? "promise"
         : x->kind == K_THEN ? "then"
         : x->kind == K_JOB  ? "job"
                             : op_names[x->op],
         stname(o.st), (long)o.v, why[0] ? " (" : "", why, why[0] ? ")" : "");
    return;
  }
  if (!x->known && !x->shared) {
    if (cl_of(w, i).cls != NOW)
      w->res->pinned_async++;
    x->known = true;
    x->async_known = true;
    x->obs = o;
  }
}

/* ---- continuations -------------------------------------------------------- */

static bool on_right_thread(cont_t *k) {
  env_t *e = k->w->env;
  if (k->ex == EX_POOL)
    return weft_executor_current() == weft_pool_executor(e->pool);
  if (k->ex == EX_LOOP)
    return weft_loop_current() == e->loop;
  return true;
}

static void see(cont_t *k, weft_future_t *src) {
  oc_t o = read_oc(src);
  atomic_store(&k->saw_st, o.st);
  atomic_store(&k->saw_v, o.v);
  if (!on_right_thread(k)) {
    weft_executor_t *cur = weft_executor_current();
    k->bad_name = cur != NULL ? cur->ops->name : NULL;
    atomic_fetch_add(&k->bad_thread, 1);
  }
}

static weft_result_t then_fn(void *arg, weft_future_t *src) {
  cont_t *k = arg;
  see(k, src);
  oc_t s = mk(atomic_load(&k->saw_st), atomic_load(&k->saw_v));
  oc_t m = map_oc(s);
  weft_result_t r = k->fnk == FN_ERR         ? weft_err((int)k->jobv)
                    : k->fnk == FN_FOLLOW    ? weft_follow(k->target)
                    : m.st == WEFT_FULFILLED ? weft_ok_int(m.v)
                                             : weft_err((int)m.v);
  atomic_fetch_add(&k->runs, 1); /* last: the driver may free k after it */
  return r;
}

static void cont_dtor(void *arg) {
  cont_t *k = arg;
  if (k->target != NULL) /* a follow's or an awaiting job's handle */
    weft_future_release(k->target);
  atomic_fetch_add(&k->dtors, 1); /* last: the driver may free k after it */
}

static void watch_fn(void *arg, weft_future_t *f) {
  cont_t *k = arg;
  see(k, f);
  atomic_fetch_add(&k->runs, 1);
}

/* A job returns its value or error; an awaiting job awaits its target on
 * the worker (which runs other jobs meanwhile) and returns await's code. */
static weft_result_t job_fn(weft_job_t *job, void *arg) {
  cont_t *k = arg;
  (void)job;
  weft_result_t r = k->job_err ? weft_err((int)k->jobv) : weft_ok_int(k->jobv);
  if (k->target != NULL) {
    int rc = weft_future_await(k->target, k->await_ms);
    see(k, k->target); /* (pending, when it timed out) */
    k->await_ns = weft_clock_now_ns();
    weft_future_release(k->target);
    r = weft_ok_int(rc);
  }
  atomic_fetch_add(&k->runs, 1); /* last: the driver may free k after it */
  return r;
}

static void value_dtor(void *v) {
  atomic_fetch_add(&g_values_freed, 1);
  free(v);
}

static void post_fn(weft_loop_t *loop, void *arg, int status) {
  env_t *e = arg;
  if (status != 0 || loop != e->loop || weft_loop_current() != loop)
    atomic_fetch_add(&e->posts_bad, 1);
  atomic_fetch_add(&e->posts_run, 1);
}

static cont_t *new_cont(world_t *w, int fnk, int ex) {
  cont_t *k = calloc(1, sizeof *k);
  if (k == NULL)
    abort();
  k->fnk = fnk;
  k->ex = ex;
  k->w = w;
  w->conts[w->nconts++] = k;
  return k;
}

/* ---- graph helpers ----------------------------------------------------- */

static int pick_held(world_t *w) {
  int c[MAXN], n = 0;
  for (int i = 0; i < w->nnode; i++)
    if (w->node[i].handles > 0)
      c[n++] = i;
  return n ? c[pick(&w->ch, (uint32_t)n)] : -1;
}

static int pick_promise(world_t *w) {
  int c[MAXN], n = 0;
  for (int i = 0; i < w->nnode; i++)
    if (w->node[i].kind == K_PROM && w->node[i].p != NULL)
      c[n++] = i;
  return n ? c[pick(&w->ch, (uint32_t)n)] : -1;
}

static void add_edge_h(world_t *w, int i, int consumer, bool handle) {
  node_t *x = &w->node[i];
  if (x->nedge < MAXEDGE) {
    x->edge[x->nedge].node = consumer;
    x->edge[x->nedge++].handle = handle;
  } else {
    x->edge_overflow = true;
  }
}
static void add_edge(world_t *w, int i, int consumer) {
  add_edge_h(w, i, consumer, false);
}

static weft_executor_t *exec_of(world_t *w, int ex) {
  if (ex == EX_POOL)
    return weft_pool_executor(w->env->pool);
  if (ex == EX_LOOP)
    return weft_loop_executor(w->env->loop);
  return weft_executor_inline();
}

static node_t *new_node(world_t *w, int kind) {
  node_t *x = &w->node[w->nnode++];
  memset(x, 0, sizeof *x);
  x->kind = kind;
  x->src = x->target = -1;
  return x;
}

/* A cancel on i returned 0: it is cancelled, and each input it waited on
 * that nothing else needs and that was surely pending is cancelled now. */
static void cascade(world_t *w, int i) {
  node_t *x = &w->node[i];
  int in[MAXIN + 2], n = 0;
  if (x->kind == K_THEN) {
    in[n++] = x->src;
  } else if (x->kind == K_COMB) {
    for (int j = 0; j < x->n; j++)
      in[n++] = x->in[j];
  }
  for (int j = 0; j < n; j++) {
    int c = in[j];
    node_t *y = &w->node[c];
    if (y->known || cl_of(w, c).cls != PEND || sure_needed(w, c, i))
      continue;
    /* Every other consumer must have dropped its need by now: one this
     * thread settled has; one seen settled by another thread's call may
     * still be dropping it there (its settle shows before the drop). */
    bool others_settled = true;
    for (int e = 0; e < y->nedge; e++) {
      int k = y->edge[e].node;
      if (k == i && !y->edge[e].handle)
        continue;
      cl_t ck = k < 0 ? cl_mk(PEND, false, mk(0, 0)) : cl_of(w, k);
      if (ck.cls != NOW || !ck.sync || y->edge[e].handle)
        others_settled = false;
    }
    if (!others_settled) {
      y->unc_cancel = true;
      continue;
    }
    y->known = true;
    y->obs = mk(WEFT_CANCELLED, WEFT_ECANCELED);
    if (y->kind == K_PROM && y->p != NULL)
      CHECK(w, weft_promise_is_cancelled(y->p) == 1,
            "cancel of node %d did not reach its input %d, which nothing "
            "else needed (is_cancelled = %d)",
            i, c, weft_promise_is_cancelled(y->p));
    cascade(w, c);
  }
}

/* ---- operations ---------------------------------------------------------- */

static void op_promise(world_t *w) {
  if (w->nnode >= MAXN)
    return;
  node_t *x = new_node(w, K_PROM);
  int rc = weft_promise_create(&x->p, &x->f);
  CHECK(w, rc == 0, "promise_create: %s", weft_error_name(rc));
  if (rc != 0) {
    w->nnode--;
    return;
  }
  x->handles = 1;
  trace(w, "promise -> %d", w->nnode - 1);
}

static void op_then(world_t *w) {
  int s = pick_held(w);
  if (s < 0 || w->nnode >= MAXN || w->nconts >= MAXN * 3)
    return;
  int ex = (int)pick(&w->ch, 3), fnk = (int)pick(&w->ch, 3);
  int t = fnk == FN_FOLLOW ? pick_held(w) : -1;
  if (fnk == FN_FOLLOW && t < 0)
    fnk = FN_MAP;
  cont_t *k = new_cont(w, fnk, ex);
  k->jobv = -2000 - (intptr_t)pick(&w->ch, 50);
  if (fnk == FN_FOLLOW) {
    CHECK(w, weft_future_retain(w->node[t].f) == 0, "retain for follow");
    k->target = w->node[t].f;
  }
  int di = w->nnode;
  node_t *x = new_node(w, K_THEN);
  x->src = s;
  x->target = t;
  x->ex = ex;
  x->fnk = fnk;
  x->cont = k;
  int rc = weft_future_then(w->node[s].f, exec_of(w, ex), then_fn, k, cont_dtor,
                            &x->f);
  CHECK(w, rc == 0, "then: %s", weft_error_name(rc));
  if (rc != 0) {
    w->nnode--;
    return;
  }
  x->handles = 1;
  trace(w, "then(%d, ex %d, fn %d, target %d) -> %d", s, ex, fnk, t, di);
  add_edge(w, s, di);
  if (t >= 0)
    add_edge_h(w, t, di, true);
  /* an inline continuation of a settled source has run by now */
  if (cl_of(w, di).cls == NOW || (ex == EX_INLINE && cl_of(w, s).cls == NOW))
    CHECK(w, atomic_load(&k->runs) == 1,
          "inline then on a settled source: fn ran %d times",
          atomic_load(&k->runs));
}

static void op_watch(world_t *w) {
  int s = pick_held(w);
  if (s < 0 || w->nconts >= MAXN * 3 - 1)
    return;
  int ex = (int)pick(&w->ch, 3);
  node_t *x = &w->node[s];
  bool keep = pick(&w->ch, 2) == 0 || x->handles <= x->reserved;
  cont_t *k = new_cont(w, FN_MAP, ex);
  k->is_watch = true;
  k->src = s;
  if (keep)
    CHECK(w, weft_future_retain(x->f) == 0, "retain for watch");
  int rc = weft_future_watch(x->f, exec_of(w, ex), watch_fn, k, cont_dtor);
  CHECK(w, rc == 0, "watch: %s", weft_error_name(rc));
  if (rc != 0)
    return;
  if (!keep)
    x->handles--;
  trace(w, "watch(%d, ex %d, keep %d)", s, ex, keep);
  add_edge(w, s, -1);
}

static void op_comb(world_t *w, int op) {
  if (w->nnode >= MAXN)
    return;
  int n = 1 + (int)pick(&w->ch, MAXIN);
  weft_future_t *fs[MAXIN];
  int idx[MAXIN];
  for (int j = 0; j < n; j++) {
    idx[j] = pick_held(w);
    if (idx[j] < 0)
      return;
    fs[j] = w->node[idx[j]].f;
  }
  int k = op == OP_SOME ? 1 + (int)pick(&w->ch, (uint32_t)n) : 0;
  int ci = w->nnode;
  node_t *x = new_node(w, K_COMB);
  x->op = op;
  x->n = n;
  x->k = k;
  memcpy(x->in, idx, sizeof idx);
  int rc;
  switch (op) {
  case OP_ALL:
    rc = weft_future_all(fs, (size_t)n, &x->f);
    break;
  case OP_ALL_SETTLED:
    rc = weft_future_all_settled(fs, (size_t)n, &x->f);
    break;
  case OP_ANY:
    rc = weft_future_any(fs, (size_t)n, &x->f);
    break;
  case OP_RACE:
    rc = weft_future_race(fs, (size_t)n, &x->f);
    break;
  default:
    rc = weft_future_some(fs, (size_t)n, (size_t)k, &x->f);
    break;
  }
  CHECK(w, rc == 0, "%s: %s", op_names[op], weft_error_name(rc));
  if (rc != 0) {
    w->nnode--;
    return;
  }
  x->handles = 1;
  trace(w, "%s(%d: %d %d %d %d, k %d) -> %d", op_names[op], n, idx[0],
        n > 1 ? idx[1] : -1, n > 2 ? idx[2] : -1, n > 3 ? idx[3] : -1, k, ci);
  CHECK(w, weft_future_input_count(x->f) == (size_t)n, "ninputs");
  for (int j = 0; j < n; j++) {
    CHECK(w, weft_future_input(x->f, (size_t)j) == fs[j], "input %d", j);
    bool dup = false;
    for (int m = 0; m < j; m++)
      dup |= idx[m] == idx[j];
    if (!dup)
      add_edge(w, idx[j], ci);
  }
}

static bool waits_on_awaiting_job(world_t *w, int i) {
  node_t *x = &w->node[i];
  switch (x->kind) {
  case K_JOB:
    return x->await_on >= 0;
  case K_THEN:
    return waits_on_awaiting_job(w, x->src) ||
           (x->target >= 0 && waits_on_awaiting_job(w, x->target));
  case K_COMB:
    for (int j = 0; j < x->n; j++)
      if (waits_on_awaiting_job(w, x->in[j]))
        return true;
    return false;
  default:
    return false;
  }
}

static void op_job(world_t *w) {
  if (w->nnode >= MAXN || w->nconts >= MAXN * 3)
    return;
  cont_t *k = new_cont(w, FN_MAP, EX_POOL);
  k->job_err = pick(&w->ch, 4) == 0;
  k->jobv = k->job_err ? -3000 - (intptr_t)pick(&w->ch, 100)
                       : (intptr_t)pick(&w->ch, 100000);
  node_t *x = new_node(w, K_JOB);
  x->jobv = k->jobv;
  x->job_err = k->job_err;
  x->cont = k;
  x->await_on = -1;
  bool blocking = pick(&w->ch, 8) == 0;
  int t = !blocking && pick(&w->ch, 4) == 0 ? pick_held(w) : -1;
  /* Not a future an awaiting job settles: that job may be below this one
   * on the worker's stack, where the await can only fail (pool.h,
   * "Nesting"). */
  if (t >= 0 && waits_on_awaiting_job(w, t))
    t = -1;
  if (t >= 0) { /* an awaiting job */
    cl_t c = cl_of(w, t);
    x->await_on = t;
    x->may_time_out = c.cls != NOW && c.cls != WILL;
    k->await_ms = x->may_time_out ? (int64_t)pick(&w->ch, 3) : SETTLE_MS;
    CHECK(w, weft_future_retain(w->node[t].f) == 0, "retain for a job");
    k->target = w->node[t].f;
    x->job_err = k->job_err = false;
    x->jobv = k->jobv = 0;
  }
  int rc = blocking
               ? weft_pool_submit_blocking(w->env->pool, job_fn, k, cont_dtor,
                                           &x->f)
               : weft_pool_submit(w->env->pool, job_fn, k, cont_dtor, &x->f);
  CHECK(w, rc == 0, "pool submit: %s", weft_error_name(rc));
  if (rc != 0) {
    w->nnode--;
    return;
  }
  x->handles = 1;
  if (t >= 0)
    add_edge_h(w, t, w->nnode - 1, true);
  trace(w, "job(%ld%s, await %d) -> %d", (long)k->jobv,
        blocking ? ", blocking" : "", t, w->nnode - 1);
}

/* fulfil (reject = false) or reject promise node i; expectation by class. */
static void settle_promise(world_t *w, int i, bool reject) {
  node_t *x = &w->node[i];
  intptr_t v = reject ? -1000 - (intptr_t)pick(&w->ch, 100)
                      : (intptr_t)pick(&w->ch, 100000);
  cl_t c = cl_of(w, i);
  /* now and then a pointer value: its dtor must run once, when the last
   * reference goes, and never when the fulfil failed */
  void *ptr = NULL;
  if (!reject && pick(&w->ch, 4) == 0) {
    if ((ptr = malloc(16)) == NULL)
      abort();
    v = (intptr_t)ptr;
  }
  int rc = reject        ? weft_promise_reject(x->p, (int)v)
           : ptr != NULL ? weft_promise_fulfil(x->p, ptr, value_dtor)
                         : weft_promise_fulfil_int(x->p, v);
  if (ptr != NULL) {
    if (rc == 0)
      atomic_fetch_add(&w->env->values_given, 1);
    else
      free(ptr); /* on error the caller keeps the value */
  }
  oc_t won = mk(reject ? WEFT_REJECTED : WEFT_FULFILLED, v);
  trace(w, "%s(%d, %ld) = %s (class %d)", reject ? "reject" : "fulfil", i,
        (long)v, weft_error_name(rc), c.cls);
  if (x->shared) {
    shared_t *s = &w->mine[x->shared - 1];
    int n = atomic_fetch_add(&s->n_ops, 1);
    if (n < MAXOPS) {
      s->ops[n].op = reject ? OP_REJECT : OP_FULFIL;
      s->ops[n].rc = rc;
      s->ops[n].v = v;
    }
    return;
  }
  if (c.cls == PEND) {
    CHECK(w, rc == 0, "%s of pending promise %d: %s",
          reject ? "reject" : "fulfil", i, weft_error_name(rc));
    x->known = true;
    x->obs = won;
  } else if (c.cls == NOW) {
    int want = c.oc.st == WEFT_CANCELLED ? WEFT_ECANCELED : WEFT_EALREADY;
    CHECK(w, rc == want, "%s of settled (%s) promise %d: %s, want %s",
          reject ? "reject" : "fulfil", stname(c.oc.st), i, weft_error_name(rc),
          weft_error_name(want));
  } else {
    CHECK(w, rc == 0 || rc == WEFT_ECANCELED,
          "%s of promise %d that may have been cancelled: %s",
          reject ? "reject" : "fulfil", i, weft_error_name(rc));
    x->known = true;
    x->async_known = rc != 0;
    x->obs = rc == 0 ? won : mk(WEFT_CANCELLED, WEFT_ECANCELED);
    if (rc != 0)
      CHECK(w, weft_promise_is_cancelled(x->p) == 1,
            "is_cancelled after "
            "ECANCELED");
  }
}

static void op_cancel(world_t *w, int i) {
  node_t *x = &w->node[i];
  cl_t c = cl_of(w, i);
  int rc = weft_future_cancel(x->f);
  trace(w, "cancel(%d) = %s (class %d)", i, weft_error_name(rc), c.cls);
  if (x->shared) {
    shared_t *s = &w->mine[x->shared - 1];
    int n = atomic_fetch_add(&s->n_ops, 1);
    if (n < MAXOPS) {
      s->ops[n].op = OP_CANCEL;
      s->ops[n].rc = rc;
    }
    return;
  }
  if (c.cls == PEND) {
    CHECK(w, rc == 0, "cancel of pending node %d: %s", i, weft_error_name(rc));
  } else if (c.cls == NOW) {
    CHECK(w, rc == WEFT_EALREADY, "cancel of settled node %d: %s", i,
          weft_error_name(rc));
    pin(w, i, read_oc(x->f), "after cancel");
    return;
  } else {
    CHECK(w, rc == 0 || rc == WEFT_EALREADY, "cancel of node %d: %s", i,
          weft_error_name(rc));
  }
  if (rc == 0) {
    oc_t o = read_oc(x->f);
    CHECK(w, oc_eq(o, mk(WEFT_CANCELLED, WEFT_ECANCELED)),
          "node %d cancelled (0) but reads %s/%ld", i, stname(o.st), (long)o.v);
    x->cancel_won = true;
    x->known = true;
    x->obs = mk(WEFT_CANCELLED, WEFT_ECANCELED);
    cascade(w, i);
  } else if (rc == WEFT_EALREADY) {
    /* a settle in progress on another thread reads pending until done */
    int arc = weft_future_await(x->f, SETTLE_MS);
    oc_t o = read_oc(x->f);
    CHECK(w, arc == 0 && o.st != WEFT_PENDING,
          "cancel said EALREADY, node %d still pending after %d ms", i,
          SETTLE_MS);
    pin(w, i, o, "after cancel EALREADY");
  }
}

static void op_release_promise(world_t *w, int i) {
  node_t *x = &w->node[i];
  cl_t c = cl_of(w, i);
  int rc = weft_promise_release(x->p);
  trace(w, "promise_release(%d) (class %d)", i, c.cls);
  CHECK(w, rc == 0, "promise_release: %s", weft_error_name(rc));
  x->p = NULL;
  if (c.cls == PEND) {
    x->known = true;
    x->obs = mk(WEFT_REJECTED, WEFT_EBROKEN);
  } else if (c.cls == UNK && !x->shared) {
    x->broken_or_cancel = true;
  }
}

/* On a failure: node i and what it waits on, as the model sees them. */
static void dump(world_t *w, int i, int depth) {
  static const char *const kn[] = {"promise", "then", "comb", "job"};
  node_t *x = &w->node[i];
  cl_t c = cl_of(w, i);
  oc_t o = x->handles > 0 ? read_oc(x->f) : mk(-1, 0);
  fprintf(stderr,
          "  model: %*snode %d %s%s class %d known %d async %d unc %d "
          "handles %d live %s ex %d fn %d await_on %d runs %d dtors %d\n",
          2 * depth, "", i, kn[x->kind],
          x->kind == K_COMB ? op_names[x->op] : "", c.cls, x->known,
          x->async_known, x->unc_cancel, x->handles,
          o.st < 0 ? "?" : stname(o.st), x->ex, x->fnk, x->await_on,
          x->cont ? atomic_load(&x->cont->runs) : -1,
          x->cont ? atomic_load(&x->cont->dtors) : -1);
  if (depth > 4)
    return;
  if (x->kind == K_THEN) {
    dump(w, x->src, depth + 1);
    if (x->target >= 0)
      dump(w, x->target, depth + 1);
  } else if (x->kind == K_COMB) {
    for (int j = 0; j < x->n; j++)
      dump(w, x->in[j], depth + 1);
  } else if (x->kind == K_JOB && x->await_on >= 0) {
    dump(w, x->await_on, depth + 1);
  }
}

static void op_await(world_t *w, int i) {
  node_t *x = &w->node[i];
  cl_t c = cl_of(w, i);
  int64_t t;
  if (c.cls == PEND)
    t = (int64_t)pick(&w->ch, 2); /* 0 or 1 ms */
  else if (c.cls == WILL)
    t = SETTLE_MS;
  else
    t = (int64_t)pick(&w->ch, 2);
  int rc = weft_future_await(x->f, t);
  oc_t o = read_oc(x->f);
  trace(w, "await(%d, %ld) = %s: %s/%ld (class %d)", i, (long)t,
        weft_error_name(rc), stname(o.st), (long)o.v, c.cls);
  if (c.cls == PEND) {
    CHECK(w, rc == WEFT_ETIMEDOUT && o.st == WEFT_PENDING,
          "await(%ld ms) of surely pending node %d: %s, state %s", (long)t, i,
          weft_error_name(rc), stname(o.st));
    return;
  }
  if (c.cls == NOW || c.cls == WILL) {
    CHECK(w, rc == 0, "await(%ld ms) of %s node %d: %s", (long)t,
          c.cls == NOW ? "settled" : "settling", i, weft_error_name(rc));
    if (rc != 0)
      dump(w, i, 0);
  } else
    CHECK(w, rc == 0 || rc == WEFT_ETIMEDOUT, "await of node %d: %s", i,
          weft_error_name(rc));
  if (rc == 0) {
    CHECK(w, o.st != WEFT_PENDING, "await returned 0, node %d pending", i);
    pin(w, i, o, "after await");
  } else {
    CHECK(w, o.st == WEFT_PENDING || c.cls == UNK,
          "await timed out, node %d settled", i);
  }
}

static void op_read(world_t *w, int i) {
  node_t *x = &w->node[i];
  cl_t c = cl_of(w, i);
  oc_t o = read_oc(x->f);
  trace(w, "read(%d): %s/%ld (class %d)", i, stname(o.st), (long)o.v, c.cls);
  if (c.cls == PEND)
    CHECK(w, o.st == WEFT_PENDING, "surely pending node %d reads %s/%ld", i,
          stname(o.st), (long)o.v);
  else if (c.cls == NOW && c.has)
    CHECK(w, oc_eq(o, c.oc), "settled node %d reads %s/%ld, model %s/%ld", i,
          stname(o.st), (long)o.v, stname(c.oc.st), (long)c.oc.v);
  pin(w, i, o, "read");
  if (x->kind == K_PROM && x->p != NULL && !x->shared) {
    int ic = weft_promise_is_cancelled(x->p);
    if (c.cls == NOW)
      CHECK(w, ic == (c.oc.st == WEFT_CANCELLED), "is_cancelled %d", ic);
  }
}

static void op_post(world_t *w) {
  int rc = weft_loop_post(w->env->loop, post_fn, w->env);
  CHECK(w, rc == 0, "loop_post: %s", weft_error_name(rc));
  if (rc == 0)
    w->posted++;
}

/* The helper's side of the shared promises of thread (tid-1). */
static void op_shared_helper(world_t *w) {
  env_t *e = w->env;
  world_t *o = &e->w[(w->tid + MODEL_THREADS - 1) % MODEL_THREADS];
  shared_t *s = &o->mine[pick(&w->ch, NSHARED)];
  if (s->p == NULL || atomic_load(&s->n_ops) >= OPS_CAP)
    return;
  int what = (int)pick(&w->ch, 3), rc;
  intptr_t v = 0;
  if (what == 0) {
    v = (intptr_t)pick(&w->ch, 1000);
    rc = weft_promise_fulfil_int(s->p, v);
  } else if (what == 1) {
    v = -1500 - (intptr_t)pick(&w->ch, 100);
    rc = weft_promise_reject(s->p, (int)v);
  } else {
    rc = weft_future_cancel(s->helper_f);
  }
  int n = atomic_fetch_add(&s->n_ops, 1);
  if (n < MAXOPS) {
    s->ops[n].op = what == 0 ? OP_FULFIL : what == 1 ? OP_REJECT : OP_CANCEL;
    s->ops[n].rc = rc;
    s->ops[n].v = v;
  }
}

static bool shared_capped(world_t *w, int i) {
  node_t *x = &w->node[i];
  return x->shared && atomic_load(&w->mine[x->shared - 1].n_ops) >= OPS_CAP;
}

static void step(world_t *w) {
  /* clang-format off */
  static const uint8_t weights[OP_COUNT_] = {
      [OP_PROMISE] = 10, [OP_THEN] = 10, [OP_WATCH] = 3, [OP_ALL] = 3,
      [OP_ALL_SETTLED] = 2, [OP_ANY] = 3, [OP_RACE] = 3, [OP_SOME] = 3,
      [OP_JOB] = 6, [OP_FULFIL] = 10, [OP_REJECT] = 4, [OP_CANCEL] = 8,
      [OP_RELEASE] = 6, [OP_RELEASE_PROMISE] = 3, [OP_RETAIN] = 2,
      [OP_AWAIT] = 6, [OP_READ] = 5, [OP_POST] = 2, [OP_SHARED] = 3};
  /* clang-format on */
  /* WEFT_MODEL_OFF=op,op,...: never issue these. Every driver thread may
   * parse it first; they store the same mask. */
  static _Atomic int off_init;
  static _Atomic uint32_t off_mask;
  if (!atomic_load(&off_init)) {
    const char *e = getenv("WEFT_MODEL_OFF");
    uint32_t m = 0;
    for (int i = 0; e != NULL && i < OP_COUNT_; i++) {
      const char *p = strstr(e, op_names[i]);
      size_t l = strlen(op_names[i]);
      while (p != NULL &&
             ((p != e && p[-1] != ',') || (p[l] != 0 && p[l] != ',')))
        p = strstr(p + 1, op_names[i]);
      if (p != NULL)
        m |= 1u << i;
    }
    atomic_store(&off_mask, m);
    atomic_store(&off_init, 1);
  }
  uint32_t off = atomic_load_explicit(&off_mask, memory_order_relaxed);
  uint32_t total = 0;
  for (int i = 0; i < OP_COUNT_; i++)
    total += off & (1u << i) ? 0 : weights[i];
  uint32_t r = pick(&w->ch, total);
  int op = 0;
  while (r >= (off & (1u << op) ? 0u : weights[op]))
    r -= off & (1u << op) ? 0u : weights[op], op++;
  int i;
  switch (op) {
  case OP_PROMISE:
    op_promise(w);
    break;
  case OP_THEN:
    op_then(w);
    break;
  case OP_WATCH:
    op_watch(w);
    break;
  case OP_ALL:
  case OP_ALL_SETTLED:
  case OP_ANY:
  case OP_RACE:
  case OP_SOME:
    op_comb(w, op);
    break;
  case OP_JOB:
    op_job(w);
    break;
  case OP_FULFIL:
  case OP_REJECT:
    if ((i = pick_promise(w)) >= 0 && !shared_capped(w, i))
      settle_promise(w, i, op == OP_REJECT);
    break;
  case OP_CANCEL:
    if ((i = pick_held(w)) >= 0 && !shared_capped(w, i))
      op_cancel(w, i);
    break;
  case OP_RELEASE:
    if ((i = pick_held(w)) >= 0 && w->node[i].handles > w->node[i].reserved) {
      int rc = weft_future_release(w->node[i].f);
      trace(w, "release(%d)", i);
      CHECK(w, rc == 0, "release: %s", weft_error_name(rc));
      w->node[i].handles--;
    }
    break;
  case OP_RELEASE_PROMISE:
    if ((i = pick_promise(w)) >= 0 && !w->node[i].shared)
      op_release_promise(w, i);
    break;
  case OP_RETAIN:
    if ((i = pick_held(w)) >= 0) {
      int rc = weft_future_retain(w->node[i].f);
      trace(w, "retain(%d)", i);
      CHECK(w, rc == 0, "retain: %s", weft_error_name(rc));
      w->node[i].handles++;
    }
    break;
  case OP_AWAIT:
    if ((i = pick_held(w)) >= 0)
      op_await(w, i);
    break;
  case OP_READ:
    if ((i = pick_held(w)) >= 0)
      op_read(w, i);
    break;
  case OP_POST:
    op_post(w);
    break;
  default:
    op_shared_helper(w);
    break;
  }
  w->res->ops[op]++;
  update_uncertain(w);
}

/* ---- rounds ---------------------------------------------------------------- */

static void make_shared(world_t *w) {
  for (int s = 0; s < NSHARED; s++) {
    shared_t *sh = &w->mine[s];
    memset(sh, 0, sizeof *sh);
    if (w->nnode >= MAXN)
      continue;
    int i = w->nnode;
    op_promise(w);
    if (w->nnode == i)
      continue;
    node_t *x = &w->node[i];
    x->shared = s + 1;
    x->handles += 2; /* the owner's and the helper's, kept to the end */
    x->reserved = 2;
    weft_future_retain(x->f);
    weft_future_retain(x->f);
    (void)0;
    sh->helper_f = x->f;
    sh->p = x->p;
    sh->owner_node = i;
  }
}

/* After the helper is done: exactly one settle call won, the losers' codes
 * match the winner, and the future settled as the winner said. */
static void reconcile_shared(world_t *w) {
  for (int s = 0; s < NSHARED; s++) {
    shared_t *sh = &w->mine[s];
    if (sh->p == NULL)
      continue;
    node_t *x = &w->node[sh->owner_node];
    int n = atomic_load(&sh->n_ops);
    if (n > MAXOPS)
      n = MAXOPS;
    int winners = 0, win = -1;
    for (int j = 0; j < n; j++)
      if (sh->ops[j].rc == 0) {
        winners++;
        win = j;
      }
    if (n > 1)
      w->res->shared_races++;
    CHECK(w, winners <= 1, "shared promise %d: %d settle calls returned 0",
          sh->owner_node, winners);
    oc_t o = read_oc(x->f);
    if (win < 0) {
      CHECK(w, n == 0 && o.st == WEFT_PENDING,
            "shared promise %d: no call won but it is %s", sh->owner_node,
            stname(o.st));
    } else {
      int wop = sh->ops[win].op;
      oc_t want = wop == OP_CANCEL   ? mk(WEFT_CANCELLED, WEFT_ECANCELED)
                  : wop == OP_REJECT ? mk(WEFT_REJECTED, sh->ops[win].v)
                                     : mk(WEFT_FULFILLED, sh->ops[win].v);
      CHECK(w, oc_eq(o, want), "shared promise %d: %s won but it reads %s/%ld",
            sh->owner_node, op_names[wop], stname(o.st), (long)o.v);
      for (int j = 0; j < n; j++) {
        if (j == win)
          continue;
        int lose = sh->ops[j].op == OP_CANCEL || wop != OP_CANCEL
                       ? WEFT_EALREADY
                       : WEFT_ECANCELED;
        CHECK(w, sh->ops[j].rc == lose,
              "shared promise %d: %s won, a losing %s returned %s, want %s",
              sh->owner_node, op_names[wop], op_names[sh->ops[j].op],
              weft_error_name(sh->ops[j].rc), weft_error_name(lose));
      }
      CHECK(w, weft_promise_is_cancelled(sh->p) == (wop == OP_CANCEL ? 1 : 0),
            "shared promise %d: is_cancelled", sh->owner_node);
    }
    weft_future_release(sh->helper_f);
    x->handles--;
    x->reserved = 0;
    x->shared = 0;
    if (o.st != WEFT_PENDING) {
      x->known = true;
      x->async_known = true;
      x->obs = o;
    }
  }
}

/* A bounded poll that leaves the CPU to the threads it waits for (a
 * yield-only spin of 4 drivers on 2 CPUs starved the pool workers). */
static void poll_pause(int *n) {
  if (++*n < 64) {
    sched_yield();
  } else {
    struct timespec ts = {0, 50 * 1000};
    nanosleep(&ts, NULL);
  }
}

static bool wait_counts(world_t *w) {
  int64_t end = weft_clock_now_ns() + (int64_t)SETTLE_MS * 1000000;
  int n = 0;
  for (;;) {
    bool all = true;
    for (int j = 0; j < w->nconts; j++) {
      cont_t *k = w->conts[j];
      if (atomic_load(&k->runs) + atomic_load(&k->dtors) == 0)
        all = false;
    }
    if (all)
      return true;
    if (weft_clock_now_ns() > end)
      return false;
    poll_pause(&n);
  }
}

/* Settle or release every promise, then everything must settle. */
static void finish_round(world_t *w) {
  for (int i = 0; i < w->nnode && !atomic_load(&w->env->failed); i++) {
    node_t *x = &w->node[i];
    if (x->kind != K_PROM || x->p == NULL)
      continue;
    switch (pick(&w->ch, 4)) {
    case 0:
      settle_promise(w, i, false);
      break;
    case 1:
      settle_promise(w, i, true);
      break;
    case 2:
      if (x->handles > 0) {
        op_cancel(w, i);
        break;
      }
      /* fall through */
    default:
      break;
    }
    update_uncertain(w);
  }
  for (int i = 0; i < w->nnode; i++) {
    node_t *x = &w->node[i];
    if (x->kind == K_PROM && x->p != NULL && !x->shared)
      op_release_promise(w, i);
  }
  update_uncertain(w);
  for (int i = 0; i < w->nnode && !atomic_load(&w->env->failed); i++) {
    node_t *x = &w->node[i];
    if (x->handles == 0)
      continue;
    int rc = weft_future_await(x->f, SETTLE_MS);
    CHECK(w, rc == 0, "end of round: node %d not settled within %d ms: %s", i,
          SETTLE_MS, weft_error_name(rc));
    if (rc != 0)
      dump(w, i, 0);
    pin(w, i, read_oc(x->f), "end of round");
  }
  if (atomic_load(&w->env->failed))
    return;
  CHECK(w, wait_counts(w),
        "end of round: a continuation, watch or job neither ran nor had "
        "its arg_dtor run within %d ms",
        SETTLE_MS);
  /* exactly once, on the right executor, seeing the source's outcome */
  for (int i = 0; i < w->nnode; i++) {
    node_t *x = &w->node[i];
    if (x->kind != K_THEN && x->kind != K_JOB)
      continue;
    cont_t *k = x->cont;
    int r = atomic_load(&k->runs), d = atomic_load(&k->dtors);
    CHECK(w, r + d == 1, "node %d: fn ran %d times, arg_dtor %d times", i, r,
          d);
    CHECK(w, atomic_load(&k->bad_thread) == 0,
          "node %d (%s, executor %d, fn %d): ran on the wrong executor "
          "(current executor: %s)",
          i, x->kind == K_JOB ? "job" : "then", k->ex, k->fnk,
          k->bad_name ? k->bad_name : "none");
    if (x->known && x->obs.st != WEFT_CANCELLED)
      CHECK(w, r == 1, "node %d settled %s without its fn", i,
            stname(x->obs.st));
    if (x->kind == K_JOB && x->await_on >= 0 && r == 1 &&
        atomic_load(&k->saw_st) != WEFT_PENDING)
      pin(w, x->await_on, mk(atomic_load(&k->saw_st), atomic_load(&k->saw_v)),
          "what an awaiting job saw");
    if (x->kind == K_THEN && r == 1) {
      oc_t saw = mk(atomic_load(&k->saw_st), atomic_load(&k->saw_v));
      CHECK(w, saw.st != WEFT_PENDING, "node %d: fn saw its source pending", i);
      pin(w, x->src, saw, "what a continuation saw");
    }
  }
}

static void end_round(world_t *w) {
  for (int i = 0; i < w->nnode; i++) {
    node_t *x = &w->node[i];
    while (x->handles > 0) {
      weft_future_release(x->f);
      x->handles--;
    }
  }
  /* watches: ran (or arg_dtor) exactly once, after everything settled.
   * After a failed check the round stopped before that was known: a job or
   * continuation may still run and use its record, so leave them. */
  if (!atomic_load(&w->env->failed))
    for (int j = 0; j < w->nconts; j++)
      free(w->conts[j]);
  w->nconts = 0;
  w->nnode = 0;
}

static void check_watches(world_t *w) {
  for (int j = 0; j < w->nconts; j++) {
    cont_t *k = w->conts[j];
    if (!k->is_watch)
      continue;
    int r = atomic_load(&k->runs), d = atomic_load(&k->dtors);
    CHECK(w, r + d == 1 && r == 1, "watch on node %d: fn %d, arg_dtor %d",
          k->src, r, d);
    CHECK(w, atomic_load(&k->bad_thread) == 0, "watch on the wrong executor");
    if (r == 1)
      pin(w, k->src, mk(atomic_load(&k->saw_st), atomic_load(&k->saw_v)),
          "what a watch saw");
  }
}

static void *driver(void *arg) {
  world_t *w = arg;
  env_t *e = w->env;
  for (w->round = 0; w->round < e->rounds; w->round++) {
    make_shared(w);
    pthread_barrier_wait(&e->bar);
    for (w->step = 0; w->step < ROUND_STEPS; w->step++) {
      if (atomic_load(&e->failed) || (w->ch.fuzz && w->ch.exhausted))
        break;
      step(w);
      w->res->steps++;
      atomic_fetch_add_explicit(&e->progress, 1, memory_order_relaxed);
    }
    pthread_barrier_wait(&e->bar); /* helpers are done with shared ones */
    reconcile_shared(w);
    update_uncertain(w);
    if (!atomic_load(&e->failed))
      finish_round(w);
    if (!atomic_load(&e->failed))
      check_watches(w);
    end_round(w);
    w->res->rounds++;
    if (w->ch.fuzz && w->ch.exhausted)
      atomic_store(&e->exhausted, 1);
    if (pthread_barrier_wait(&e->bar) == PTHREAD_BARRIER_SERIAL_THREAD)
      e->stop = atomic_load(&e->failed) || atomic_load(&e->exhausted);
    pthread_barrier_wait(&e->bar);
    if (e->stop)
      break;
  }
  return NULL;
}

/* ---- the loop thread and the watchdog ------------------------------------ */

static void *loop_main(void *arg) {
  env_t *e = arg;
  int rc = weft_loop_create(NULL, &e->loop);
  pthread_mutex_lock(&e->mu);
  e->loop_ready = rc == 0 ? 1 : -1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  if (rc != 0)
    return NULL;
  weft_loop_run(e->loop, WEFT_RUN_DEFAULT);
  weft_loop_close(e->loop);
  return NULL;
}

static void *watchdog(void *arg) {
  env_t *e = arg;
  long last = -1;
  int still = 0;
  pthread_mutex_lock(&e->mu);
  while (!e->watchdog_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    long p = atomic_load(&e->progress);
    still = p == last ? still + 1 : 0;
    last = p;
    if (still > 600) { /* 60 s without a step: a hang */
      fprintf(stderr,
              "model: no progress for 60 s: hang (seed %llu; "
              "replay: WEFT_MODEL_SEED=%llu)\n",
              (unsigned long long)e->seed, (unsigned long long)e->seed);
      abort();
    }
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

int model_run(const model_cfg_t *cfg, model_result_t *res) {
  memset(res, 0, sizeof *res);
  env_t *e = calloc(1, sizeof *e);
  if (e == NULL)
    return -1;
  e->seed = cfg->seed;
  e->fuzz = cfg->data != NULL;
  long per = cfg->steps / MODEL_THREADS;
  e->rounds = e->fuzz ? 1000000 : (per + ROUND_STEPS - 1) / ROUND_STEPS;
  if (e->rounds < 1)
    e->rounds = 1;
  pthread_mutex_init(&e->msg_mu, NULL);
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  pthread_barrier_init(&e->bar, NULL, MODEL_THREADS);

  atomic_store(&a_live, 0);
  atomic_store(&a_total, 0);
  atomic_store(&g_values_freed, 0);
  for (int z = 0; z <= 1024; z++)
    atomic_store(&a_by_size[z], 0);
  weft_allocator_t a = {count_alloc, count_release, NULL, {0}};
  weft_allocator_set(&a);

  weft_pool_options_t po = {.size = sizeof po, .threads = 2, .blocking_max = 2};
  int rc = weft_pool_create(&po, &e->pool);
  pthread_t lt, wd;
  if (rc == 0)
    rc = pthread_create(&lt, NULL, loop_main, e);
  if (rc == 0) {
    pthread_mutex_lock(&e->mu);
    while (e->loop_ready == 0)
      pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    rc = e->loop_ready == 1 ? 0 : -1;
  }
  if (rc != 0) {
    snprintf(res->msg, sizeof res->msg, "setup failed: %d", rc);
    res->failed = 1;
    return -1;
  }
  pthread_create(&wd, NULL, watchdog, e);

  pthread_t th[MODEL_THREADS];
  model_result_t part[MODEL_THREADS];
  memset(part, 0, sizeof part);
  for (int t = 0; t < MODEL_THREADS; t++) {
    world_t *w = &e->w[t];
    w->env = e;
    w->tid = t;
    w->res = &part[t];
    w->ch.s = cfg->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(t + 1));
    if (e->fuzz) {
      w->ch.fuzz = true;
      w->ch.d = cfg->data;
      w->ch.n = cfg->size;
      w->ch.i = (size_t)t;
      w->ch.stride = MODEL_THREADS;
    }
    pthread_create(&th[t], NULL, driver, w);
  }
  long posted = 0;
  for (int t = 0; t < MODEL_THREADS; t++) {
    pthread_join(th[t], NULL);
    posted += e->w[t].posted;
  }
  /* posts run before the loop stops: wait for them, bounded */
  int64_t end = weft_clock_now_ns() + (int64_t)SETTLE_MS * 1000000;
  int n = 0;
  while (atomic_load(&e->posts_run) < posted && weft_clock_now_ns() < end)
    poll_pause(&n);
  weft_loop_stop(e->loop);
  pthread_join(lt, NULL);
  weft_pool_stats_t st;
  int src = weft_pool_shutdown(e->pool, WEFT_POOL_DRAIN, SETTLE_MS, &st);
  pthread_mutex_lock(&e->mu);
  e->watchdog_stop = 1;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
  pthread_join(wd, NULL);

  for (int t = 0; t < MODEL_THREADS; t++) {
    res->steps += part[t].steps;
    res->checks += part[t].checks;
    res->pinned_async += part[t].pinned_async;
    res->shared_races += part[t].shared_races;
    for (int o = 0; o < OP_COUNT_; o++)
      res->ops[o] += part[t].ops[o];
    if (part[t].rounds > res->rounds)
      res->rounds = part[t].rounds;
  }
  if (!atomic_load(&e->failed)) {
    world_t *w0 = &e->w[0];
    if (atomic_load(&e->posts_run) != posted || atomic_load(&e->posts_bad) != 0)
      fail(w0, "posts: %ld posted, %ld ran, %ld wrong", posted,
           atomic_load(&e->posts_run), atomic_load(&e->posts_bad));
    else if (atomic_load(&e->values_given) != atomic_load(&g_values_freed))
      fail(w0, "pointer values: %ld given to fulfils, %ld destroyed",
           atomic_load(&e->values_given), atomic_load(&g_values_freed));
    else if (src != 0)
      fail(w0, "pool shutdown (drain) returned %s", weft_error_name(src));
    else if (atomic_load(&a_live) != 0)
      fail(w0, "%ld weft blocks still alive after shutdown (a leak)",
           atomic_load(&a_live));
  }
  weft_allocator_set(NULL);
  res->live_blocks = atomic_load(&a_live);
  for (int z = 0; z <= 1024 && res->live_blocks != 0 && !cfg->quiet; z++)
    if (atomic_load(&a_by_size[z]) != 0)
      fprintf(stderr, "  model: %ld blocks of %d bytes alive\n",
              atomic_load(&a_by_size[z]), z);
  res->failed = atomic_load(&e->failed);
  snprintf(res->msg, sizeof res->msg, "%s", e->msg);
  pthread_barrier_destroy(&e->bar);
  pthread_mutex_destroy(&e->msg_mu);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  free(e);
  return res->failed ? -1 : 0;
}
