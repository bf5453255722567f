/* SPDX-License-Identifier: MIT */
/* lib/combinators.c: all, all-settled, any, race and first-k-of-n. */
#include "internal.h"

enum comb_kind { C_ALL, C_ALL_SETTLED, C_ANY, C_RACE, C_SOME };

typedef struct comb comb_t;

typedef struct comb_input {
  weft_task_t node; /* on the input's list */
  comb_t *c;
  struct weft_future *f; /* referenced until the combinator is freed */
  uint32_t idx;
  _Atomic uint32_t dropped; /* our need on f given back */
} comb_input_t;

struct comb {
  struct weft_future base;
  uint32_t kind, n, k;
  _Atomic uint32_t ok, failed, counted;
  _Atomic uint32_t *order; /* n slots, UINT32_MAX until written */
  size_t size;
  comb_input_t in[];
};

#define UNSET UINT32_MAX

static comb_t *as_comb(const struct weft_future *f) {
  if (f == NULL ||
      weft__kind(atomic_load_explicit(&((struct weft_future *)f)->word,
                                      memory_order_relaxed)) != WEFT__K_COMBINE)
    return NULL;
  return (comb_t *)f;
}

static void drop_one(comb_input_t *in) {
  WEFT__PERTURB();
  if (atomic_exchange_explicit(&in->dropped, 1, memory_order_acq_rel) == 0)
    weft__drop_need(in->f);
}

/* The combinator settled or was cancelled: it needs none of its inputs. */
static void drop_all(comb_t *c) {
  for (uint32_t i = 0; i < c->n; i++)
    drop_one(&c->in[i]);
}

struct weft_future *weft__combine_cancelled(struct weft_future *f) {
  drop_all((comb_t *)f);
  return NULL;
}

void weft__combine_destroy(struct weft_future *f) {
  comb_t *c = (comb_t *)f;
  for (uint32_t i = 0; i < c->n; i++)
    weft__unref(c->in[i].f);
  weft__free(c, c->size);
}

/* Returns the input's position in the order (0: first counted). */
static uint32_t record(comb_t *c, uint32_t idx) {
  WEFT__PERTURB();
  uint32_t pos = atomic_fetch_add_explicit(&c->counted, 1,
                                           memory_order_relaxed);
  if (pos < c->n)
    atomic_store_explicit(&c->order[pos], idx, memory_order_release);
  return pos;
}

static void settle_done(comb_t *c, int err) {
  int rc = err == 0 ? weft__settle_int(&c->base, WEFT_FULFILLED, 0, 0)
                    : weft__settle_int(&c->base, WEFT_REJECTED, 0, err);
  if (rc == 0)
    drop_all(c);
}

static void mirror_done(comb_t *c, struct weft_future *f) {
  if (weft__mirror(&c->base, f, false) == 0)
    drop_all(c);
}

/* One input settled (on the thread that settled it). */
static void input_fire(weft_task_t *node) {
  comb_input_t *in = (comb_input_t *)node;
  comb_t *c = in->c;
  struct weft_future *f = in->f;
  bool ok = weft__state(f) == WEFT_FULFILLED;
  WEFT__PERTURB();
  switch (c->kind) {
  case C_ALL:
    record(c, in->idx);
    if (!ok)
      settle_done(c, weft_future_error(f));
    else if (atomic_fetch_add(&c->ok, 1) + 1 == c->n)
      settle_done(c, 0);
    break;
  case C_ALL_SETTLED:
    record(c, in->idx);
    if (atomic_fetch_add(&c->ok, 1) + 1 == c->n)
      settle_done(c, 0);
    break;
  case C_ANY:
    if (ok) { /* only the first counted mirrors: order(0) is the winner */
      if (record(c, in->idx) == 0)
        mirror_done(c, f);
    } else if (atomic_fetch_add(&c->failed, 1) + 1 == c->n) {
      settle_done(c, WEFT_EALLFAILED);
    }
    break;
  case C_RACE:
    if (record(c, in->idx) == 0)
      mirror_done(c, f);
    break;
  default: /* C_SOME */
    if (ok) {
      record(c, in->idx);
      if (atomic_fetch_add(&c->ok, 1) + 1 == c->k)
        settle_done(c, 0);
    } else if (atomic_fetch_add(&c->failed, 1) + 1 == c->n - c->k + 1) {
      settle_done(c, WEFT_EALLFAILED);
    }
  }
  drop_one(in);
  weft__unref(&c->base); /* the reference the input's list held */
}

static int combine(weft_future_t *const *inputs, size_t n, size_t k,
                   enum comb_kind kind, weft_future_t **out) {
  if (out == NULL || (n > 0 && inputs == NULL) || n >= UINT32_MAX / 2)
    return WEFT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (inputs[i] == NULL)
      return WEFT_EINVAL;
  size_t size = sizeof(comb_t) + n * sizeof(comb_input_t) +
                n * sizeof(_Atomic uint32_t);
  comb_t *c = weft__malloc(size);
  if (c == NULL)
    return WEFT_ENOMEM;
  /* refs: the caller's handle and one per input list; needs: the handle. */
  weft__state_init(&c->base, WEFT__K_COMBINE, (uint32_t)n + 1, 1);
  c->kind = kind;
  c->n = (uint32_t)n;
  c->k = (uint32_t)k;
  atomic_init(&c->ok, 0);
  atomic_init(&c->failed, 0);
  atomic_init(&c->counted, 0);
  c->order = (_Atomic uint32_t *)(void *)&c->in[n];
  c->size = size;
  for (size_t i = 0; i < n; i++) {
    comb_input_t *in = &c->in[i];
    in->node.run = input_fire;
    in->c = c;
    in->f = inputs[i];
    in->idx = (uint32_t)i;
    atomic_init(&in->dropped, 0);
    atomic_init(&c->order[i], UNSET);
    weft__ref_need(in->f);
  }
  *out = &c->base;
  if (n == 0)
    (void)weft__settle_int(&c->base, WEFT_FULFILLED, 0, 0);
  for (size_t i = 0; i < n; i++)
    if (!weft__attach(c->in[i].f, &c->in[i].node))
      weft__defer(&c->in[i].node);
  return 0;
}

int weft_future_all(weft_future_t *const *inputs, size_t n,
                    weft_future_t **out) {
  return combine(inputs, n, n, C_ALL, out);
}

int weft_future_all_settled(weft_future_t *const *inputs, size_t n,
                            weft_future_t **out) {
  return combine(inputs, n, n, C_ALL_SETTLED, out);
}

int weft_future_any(weft_future_t *const *inputs, size_t n,
                    weft_future_t **out) {
  if (n == 0)
    return WEFT_EINVAL;
  return combine(inputs, n, 1, C_ANY, out);
}

int weft_future_race(weft_future_t *const *inputs, size_t n,
                     weft_future_t **out) {
  if (n == 0)
    return WEFT_EINVAL;
  return combine(inputs, n, 1, C_RACE, out);
}

int weft_future_some(weft_future_t *const *inputs, size_t n, size_t k,
                     weft_future_t **out) {
  if (k == 0 || k > n)
    return WEFT_EINVAL;
  return combine(inputs, n, k, C_SOME, out);
}

size_t weft_future_input_count(const weft_future_t *f) {
  comb_t *c = as_comb(f);
  return c == NULL ? 0 : c->n;
}

weft_future_t *weft_future_input(const weft_future_t *f, size_t i) {
  comb_t *c = as_comb(f);
  return (c == NULL || i >= c->n) ? NULL : c->in[i].f;
}

int weft_future_order(const weft_future_t *f, size_t k, size_t *index) {
  comb_t *c = as_comb(f);
  if (c == NULL || index == NULL || k >= c->n)
    return WEFT_EINVAL;
  uint32_t v = atomic_load_explicit(&c->order[k], memory_order_acquire);
  if (v == UNSET)
    return WEFT_EPENDING;
  *index = v;
  return 0;
}

/* ---- awaiting several (weft/fiber.h) ---- */

static int check_inputs(weft_future_t *const *fs, size_t n,
                        int64_t timeout_ms) {
  if ((fs == NULL && n > 0) || timeout_ms < -1)
    return WEFT_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (fs[i] == NULL)
      return WEFT_EINVAL;
  return 0;
}

int weft_future_await_first(weft_future_t *const *fs, size_t n,
                            int64_t timeout_ms, size_t *index) {
  int rc = check_inputs(fs, n, timeout_ms);
  if (rc != 0 || n == 0 || index == NULL)
    return WEFT_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (weft__core_state(fs[i]) != WEFT_PENDING) {
      *index = i;
      return 0;
    }
  }
  /* A race holds its own handles, so it cancels none of the caller's
   * inputs, and nor does cancelling it. */
  weft_future_t *r;
  rc = weft_future_race(fs, n, &r);
  if (rc != 0)
    return rc;
  rc = weft_future_await(r, timeout_ms);
  if (rc == 0 && weft_future_order(r, 0, index) != 0)
    rc = WEFT_EPENDING; /* (settled as cancelled before any input) */
  weft_future_release(r);
  return rc == WEFT_EPENDING ? WEFT_ECANCELED : rc;
}

int weft_future_await_all(weft_future_t *const *fs, size_t n,
                          int64_t timeout_ms) {
  int rc = check_inputs(fs, n, timeout_ms);
  if (rc != 0)
    return rc;
  size_t i = 0;
  while (i < n && weft__core_state(fs[i]) != WEFT_PENDING)
    i++;
  if (i == n)
    return 0;
  weft_future_t *r;
  rc = weft_future_all_settled(fs + i, n - i, &r);
  if (rc != 0)
    return rc;
  rc = weft_future_await(r, timeout_ms);
  weft_future_release(r);
  return rc;
}
