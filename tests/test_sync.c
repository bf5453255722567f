/* SPDX-License-Identifier: MIT */
/* tests/test_sync.c: semaphore, mutex, event and channel: every call's
 * errors, FIFO order, cancel while queued and racing a hand-off, shutdown
 * and close with waiters of both kinds, threads and fibers counting every
 * item exactly once, and every allocation failing. */
#include "testutil.h"

#include "internal.h" /* weft__perturb: schedule perturbation */

#include <stdlib.h>

#define IT(i) ((void *)(uintptr_t)(i))

/* Wait (bounded) and give the outcome: 0 fulfilled, else the error. */
static int outcome(weft_future_t *f) {
  int rc = weft_future_await(f, BOUND_MS);
  return rc != 0 ? rc : weft_future_error(f);
}

static weft_state_t state_of(weft_future_t *f) { return weft_future_state(f); }

/* ---- semaphore ---- */

static void test_semaphore_errors(void) {
  weft_semaphore_t *s = (weft_semaphore_t *)1;
  weft_future_t *f = (weft_future_t *)1;
  EXPECT_ERR(weft_semaphore_create(1, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_create(WEFT_SYNC_MAX + 1, &s), WEFT_EINVAL);
  EXPECT_TRUE(s == (weft_semaphore_t *)1);
  EXPECT_ERR(weft_semaphore_acquire(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_try_acquire(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_release(NULL, 1), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_close(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_semaphore_available(NULL), 0);
  REQUIRE_EQ(weft_semaphore_create(2, &s), 0);
  EXPECT_ERR(weft_semaphore_acquire(s, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_release(s, 0), WEFT_EINVAL);
  EXPECT_ERR(weft_semaphore_release(s, WEFT_SYNC_MAX), WEFT_EINVAL);
  EXPECT_EQ(weft_semaphore_available(s), 2);
  EXPECT_TRUE(f == (weft_future_t *)1);
  EXPECT_EQ(weft_semaphore_try_acquire(s), 0);
  EXPECT_EQ(weft_semaphore_try_acquire(s), 0);
  EXPECT_ERR(weft_semaphore_try_acquire(s), WEFT_EAGAIN);
  EXPECT_EQ(weft_semaphore_release(s, 2), 0);
  EXPECT_EQ(weft_semaphore_available(s), 2);
  EXPECT_EQ(weft_semaphore_close(s), 0);
}

/* Queued acquires are served oldest first; a try never passes them; a
 * cancelled one leaves the queue and its turn goes to the next. */
static void test_semaphore_fifo_cancel(void) {
  weft_semaphore_t *s;
  REQUIRE_EQ(weft_semaphore_create(1, &s), 0);
  weft_future_t *f[4];
  for (int i = 0; i < 4; i++)
    REQUIRE_EQ(weft_semaphore_acquire(s, &f[i]), 0);
  EXPECT_EQ(state_of(f[0]), WEFT_FULFILLED);
  for (int i = 1; i < 4; i++)
    EXPECT_EQ(state_of(f[i]), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(f[1]), 0);
  EXPECT_EQ(weft_semaphore_release(s, 1), 0); /* f[0]'s permit -> f[2] */
  EXPECT_EQ(state_of(f[2]), WEFT_FULFILLED);
  EXPECT_EQ(state_of(f[3]), WEFT_PENDING);
  EXPECT_EQ(weft_semaphore_release(s, 2), 0); /* -> f[3], one left free */
  EXPECT_EQ(state_of(f[3]), WEFT_FULFILLED);
  EXPECT_EQ(weft_semaphore_available(s), 1);
  EXPECT_ERR(weft_future_error(f[1]), WEFT_ECANCELED);
  for (int i = 0; i < 4; i++)
    weft_future_release(f[i]);
  /* close rejects what still waits */
  REQUIRE_EQ(weft_semaphore_try_acquire(s), 0);
  weft_future_t *g;
  REQUIRE_EQ(weft_semaphore_acquire(s, &g), 0);
  EXPECT_EQ(weft_semaphore_close(s), 0);
  EXPECT_ERR(weft_future_error(g), WEFT_ECANCELED);
  weft_future_release(g);
}

/* A release racing a cancel: the permit is either the acquire's (fulfilled)
 * or free again, never lost nor given twice. */
typedef struct {
  tu_rounds_t r;
  long rounds;
  weft_semaphore_t *s;
  weft_mutex_t *m;
  weft_channel_t *ch;
  int mode;
} race_t;

static void *race_other(void *arg) {
  race_t *x = arg;
  for (long r = 1; r <= x->rounds; r++) {
    tu_meet(&x->r, r, 1);
    void *it;
    if (x->mode == 0)
      weft_semaphore_release(x->s, 1);
    else if (x->mode == 1)
      weft_mutex_unlock(x->m);
    else if (x->mode == 2)
      weft_channel_try_send(x->ch, IT(r));
    else
      EXPECT_EQ(weft_channel_try_recv(x->ch, &it), 0);
    atomic_store(&x->r.done, r);
  }
  return NULL;
}

static void run_race(int mode) {
  race_t x = {.rounds = 3000, .mode = mode};
  REQUIRE_EQ(weft_semaphore_create(0, &x.s), 0);
  REQUIRE_EQ(weft_mutex_create(&x.m), 0);
  REQUIRE_EQ(weft_channel_create(1, NULL, &x.ch), 0);
  REQUIRE_EQ(weft_mutex_try_lock(x.m), 0);
  pthread_t t;
  REQUIRE_EQ(pthread_create(&t, NULL, race_other, &x), 0);
  /* stalls between a waiter's pop and its settle let the cancel land in
   * the hand-off too, not only before or after it */
  weft__perturb(true, 0x5c0000u + (uint64_t)mode);
  long won = 0;
  for (long r = 1; r <= x.rounds; r++) {
    weft_future_t *f;
    void *it = NULL;
    if (mode == 0)
      REQUIRE_EQ(weft_semaphore_acquire(x.s, &f), 0);
    else if (mode == 1)
      REQUIRE_EQ(weft_mutex_lock(x.m, &f), 0);
    else if (mode == 2)
      REQUIRE_EQ(weft_channel_recv(x.ch, &f), 0);
    else {
      REQUIRE_EQ(weft_channel_try_send(x.ch, IT(1000000)), 0);
      REQUIRE_EQ(weft_channel_send(x.ch, IT(r), &f), 0);
    }
    tu_meet(&x.r, r, 0);
    weft_future_cancel(f);
    tu_spin_until(&x.r.done, r);
    bool got = state_of(f) == WEFT_FULFILLED;
    won += got;
    if (mode == 0) {
      EXPECT_EQ(weft_semaphore_available(x.s), got ? 0 : 1);
      if (!got)
        EXPECT_EQ(weft_semaphore_try_acquire(x.s), 0);
    } else if (mode == 1) {
      EXPECT_EQ(weft_mutex_is_locked(x.m), got); /* f owns it, or nobody */
      if (!got)
        EXPECT_EQ(weft_mutex_try_lock(x.m), 0);
    } else if (mode == 2) {
      EXPECT_EQ(weft_channel_count(x.ch), got ? 0 : 1);
      if (got)
        EXPECT_TRUE(weft_future_value(f) == IT(r));
      else
        EXPECT_EQ(weft_channel_try_recv(x.ch, &it), 0);
      if (!got)
        EXPECT_TRUE(it == IT(r));
    } else {
      EXPECT_EQ(weft_channel_count(x.ch), got ? 1 : 0);
      if (got) {
        EXPECT_EQ(weft_channel_try_recv(x.ch, &it), 0);
        EXPECT_TRUE(it == IT(r));
      }
    }
    weft_future_release(f);
  }
  pthread_join(t, NULL);
  weft__perturb(false, 0);
  EXPECT_TRUE(won <= x.rounds);
  weft_semaphore_close(x.s);
  weft_mutex_close(x.m);
  weft_channel_close(x.ch);
}

static void test_race_semaphore(void) { run_race(0); }
static void test_race_mutex(void) { run_race(1); }
static void test_race_recv(void) { run_race(2); }
static void test_race_send(void) { run_race(3); }

/* ---- mutex ---- */

static void test_mutex(void) {
  weft_mutex_t *m = (weft_mutex_t *)1;
  weft_future_t *f[3];
  EXPECT_ERR(weft_mutex_create(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_mutex_lock(NULL, &f[0]), WEFT_EINVAL);
  EXPECT_ERR(weft_mutex_try_lock(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_mutex_unlock(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_mutex_close(NULL), WEFT_EINVAL);
  EXPECT_TRUE(!weft_mutex_is_locked(NULL));
  REQUIRE_EQ(weft_mutex_create(&m), 0);
  EXPECT_ERR(weft_mutex_lock(m, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_mutex_unlock(m), WEFT_EPERM);
  EXPECT_TRUE(!weft_mutex_is_locked(m));
  EXPECT_EQ(weft_mutex_try_lock(m), 0);
  EXPECT_ERR(weft_mutex_try_lock(m), WEFT_EBUSY);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_mutex_lock(m, &f[i]), 0);
  EXPECT_EQ(weft_future_cancel(f[0]), 0);
  EXPECT_EQ(weft_mutex_unlock(m), 0); /* hands over to f[1] */
  EXPECT_EQ(state_of(f[1]), WEFT_FULFILLED);
  EXPECT_EQ(state_of(f[2]), WEFT_PENDING);
  EXPECT_ERR(weft_mutex_try_lock(m), WEFT_EBUSY);
  EXPECT_EQ(weft_mutex_unlock(m), 0); /* -> f[2] */
  EXPECT_EQ(state_of(f[2]), WEFT_FULFILLED);
  EXPECT_EQ(weft_mutex_unlock(m), 0);
  EXPECT_TRUE(!weft_mutex_is_locked(m));
  for (int i = 0; i < 3; i++)
    weft_future_release(f[i]);
  REQUIRE_EQ(weft_mutex_lock(m, &f[0]), 0);
  REQUIRE_EQ(weft_mutex_lock(m, &f[1]), 0);
  EXPECT_EQ(weft_mutex_close(m), 0);
  EXPECT_EQ(state_of(f[0]), WEFT_FULFILLED);
  EXPECT_ERR(weft_future_error(f[1]), WEFT_ECANCELED);
  weft_future_release(f[0]);
  weft_future_release(f[1]);
}

/* ---- event ---- */

static void test_event(void) {
  weft_event_t *e = (weft_event_t *)1;
  weft_future_t *f[3];
  EXPECT_ERR(weft_event_create(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_event_wait(NULL, &f[0]), WEFT_EINVAL);
  EXPECT_ERR(weft_event_set(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_event_close(NULL), WEFT_EINVAL);
  EXPECT_TRUE(!weft_event_is_set(NULL));
  REQUIRE_EQ(weft_event_create(&e), 0);
  EXPECT_ERR(weft_event_wait(e, NULL), WEFT_EINVAL);
  REQUIRE_EQ(weft_event_wait(e, &f[0]), 0);
  REQUIRE_EQ(weft_event_wait(e, &f[1]), 0);
  EXPECT_EQ(weft_future_cancel(f[1]), 0);
  EXPECT_TRUE(!weft_event_is_set(e));
  EXPECT_EQ(state_of(f[0]), WEFT_PENDING);
  EXPECT_EQ(weft_event_set(e), 0);
  EXPECT_ERR(weft_event_set(e), WEFT_EALREADY);
  EXPECT_TRUE(weft_event_is_set(e));
  EXPECT_EQ(state_of(f[0]), WEFT_FULFILLED);
  EXPECT_EQ(state_of(f[1]), WEFT_CANCELLED);
  REQUIRE_EQ(weft_event_wait(e, &f[2]), 0);
  EXPECT_EQ(state_of(f[2]), WEFT_FULFILLED);
  for (int i = 0; i < 3; i++)
    weft_future_release(f[i]);
  EXPECT_EQ(weft_event_close(e), 0);
  REQUIRE_EQ(weft_event_create(&e), 0);
  REQUIRE_EQ(weft_event_wait(e, &f[0]), 0);
  EXPECT_EQ(weft_event_close(e), 0);
  EXPECT_ERR(weft_future_error(f[0]), WEFT_ECANCELED);
  weft_future_release(f[0]);
}

/* ---- channel ---- */

static void test_channel_errors(void) {
  weft_channel_t *ch = (weft_channel_t *)1;
  weft_future_t *f = (weft_future_t *)1;
  void *it = IT(77);
  EXPECT_ERR(weft_channel_create(1, NULL, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_create(0, NULL, &ch), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_create(WEFT_SYNC_MAX + 1, NULL, &ch), WEFT_EINVAL);
  EXPECT_TRUE(ch == (weft_channel_t *)1);
  EXPECT_ERR(weft_channel_try_send(NULL, it), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_send(NULL, it, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_try_recv(NULL, &it), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_recv(NULL, &f), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_shutdown(NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_close(NULL), WEFT_EINVAL);
  EXPECT_EQ(weft_channel_count(NULL), 0);
  REQUIRE_EQ(weft_channel_create(3, NULL, &ch), 0);
  EXPECT_ERR(weft_channel_send(ch, it, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_recv(ch, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_try_recv(ch, NULL), WEFT_EINVAL);
  EXPECT_ERR(weft_channel_try_recv(ch, &it), WEFT_EAGAIN);
  EXPECT_TRUE(it == IT(77) && f == (weft_future_t *)1);
  EXPECT_EQ(weft_channel_count(ch), 0);
  EXPECT_EQ(weft_channel_close(ch), 0);
}

/* Items leave in order, through a capacity that is not a power of two,
 * over many laps; full and empty are told. */
static void test_channel_order(void) {
  weft_channel_t *ch;
  REQUIRE_EQ(weft_channel_create(3, NULL, &ch), 0);
  uintptr_t next_in = 0, next_out = 0;
  for (int lap = 0; lap < 50; lap++) {
    while (weft_channel_try_send(ch, IT(next_in)) == 0)
      next_in++;
    EXPECT_EQ(weft_channel_count(ch), 3);
    EXPECT_ERR(weft_channel_try_send(ch, IT(0)), WEFT_EAGAIN);
    for (int i = 0; i < 2; i++) {
      void *it;
      REQUIRE_EQ(weft_channel_try_recv(ch, &it), 0);
      EXPECT_EQ((uintptr_t)it, next_out++);
    }
  }
  void *it;
  while (weft_channel_try_recv(ch, &it) == 0)
    EXPECT_EQ((uintptr_t)it, next_out++);
  EXPECT_EQ(next_out, next_in);
  EXPECT_EQ(weft_channel_close(ch), 0);
}

/* Queued sends enter in order as room appears; a cancelled one never
 * enters; queued recvs get items in order; a cancelled one gets none. */
static void test_channel_waiters(void) {
  weft_channel_t *ch;
  REQUIRE_EQ(weft_channel_create(1, NULL, &ch), 0);
  weft_future_t *s[4], *r[4];
  for (int i = 0; i < 4; i++)
    REQUIRE_EQ(weft_channel_send(ch, IT(i + 1), &s[i]), 0);
  EXPECT_EQ(state_of(s[0]), WEFT_FULFILLED);
  EXPECT_EQ(state_of(s[1]), WEFT_PENDING);
  EXPECT_EQ(weft_future_cancel(s[2]), 0);
  void *it;
  for (int want = 1; want <= 4; want++) {
    if (want == 3)
      continue;
    REQUIRE_EQ(weft_channel_try_recv(ch, &it), 0);
    EXPECT_EQ((uintptr_t)it, want);
  }
  EXPECT_EQ(state_of(s[3]), WEFT_FULFILLED);
  EXPECT_ERR(weft_channel_try_recv(ch, &it), WEFT_EAGAIN);
  for (int i = 0; i < 4; i++) {
    weft_future_release(s[i]);
    REQUIRE_EQ(weft_channel_recv(ch, &r[i]), 0);
  }
  EXPECT_EQ(weft_future_cancel(r[1]), 0);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_channel_try_send(ch, IT(10 + i)), 0);
  EXPECT_TRUE(weft_future_value(r[0]) == IT(10));
  EXPECT_TRUE(weft_future_value(r[2]) == IT(11));
  EXPECT_TRUE(weft_future_value(r[3]) == IT(12));
  EXPECT_ERR(weft_future_error(r[1]), WEFT_ECANCELED);
  for (int i = 0; i < 4; i++)
    weft_future_release(r[i]);
  EXPECT_EQ(weft_channel_count(ch), 0);
  EXPECT_EQ(weft_channel_close(ch), 0);
}

static _Atomic int dtor_calls;
static void count_dtor(void *p) {
  (void)p;
  atomic_fetch_add(&dtor_calls, 1);
}

/* Shutdown: pending sends fail with EPIPE (items stay theirs), receivers
 * drain the rest then see EOF; close: waiters cancelled, items to dtor. */
static void test_channel_shutdown_close(void) {
  weft_channel_t *ch;
  REQUIRE_EQ(weft_channel_create(2, NULL, &ch), 0);
  weft_future_t *s[3], *r[3];
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_channel_send(ch, IT(i + 1), &s[i]), 0);
  EXPECT_EQ(weft_channel_shutdown(ch), 0);
  EXPECT_ERR(weft_channel_shutdown(ch), WEFT_EALREADY);
  EXPECT_ERR(weft_future_error(s[2]), WEFT_EPIPE);
  EXPECT_ERR(weft_channel_try_send(ch, IT(9)), WEFT_EPIPE);
  weft_future_t *g = (weft_future_t *)1;
  EXPECT_ERR(weft_channel_send(ch, IT(9), &g), WEFT_EPIPE);
  EXPECT_TRUE(g == (weft_future_t *)1);
  void *it;
  REQUIRE_EQ(weft_channel_try_recv(ch, &it), 0);
  EXPECT_TRUE(it == IT(1));
  REQUIRE_EQ(weft_channel_recv(ch, &r[0]), 0);
  EXPECT_TRUE(weft_future_value(r[0]) == IT(2));
  REQUIRE_EQ(weft_channel_recv(ch, &r[1]), 0);
  EXPECT_ERR(weft_future_error(r[1]), WEFT_EOF);
  EXPECT_ERR(weft_channel_try_recv(ch, &it), WEFT_EOF);
  for (int i = 0; i < 3; i++)
    weft_future_release(s[i]);
  weft_future_release(r[0]);
  weft_future_release(r[1]);
  EXPECT_EQ(weft_channel_close(ch), 0);
  /* queued recvs of an empty channel end at shutdown */
  REQUIRE_EQ(weft_channel_create(2, NULL, &ch), 0);
  for (int i = 0; i < 2; i++)
    REQUIRE_EQ(weft_channel_recv(ch, &r[i]), 0);
  EXPECT_EQ(weft_channel_shutdown(ch), 0);
  for (int i = 0; i < 2; i++) {
    EXPECT_ERR(weft_future_error(r[i]), WEFT_EOF);
    weft_future_release(r[i]);
  }
  EXPECT_EQ(weft_channel_close(ch), 0);
  /* close with recvs queued, then with sends queued and items inside */
  REQUIRE_EQ(weft_channel_create(2, count_dtor, &ch), 0);
  REQUIRE_EQ(weft_channel_recv(ch, &r[0]), 0);
  EXPECT_EQ(weft_channel_close(ch), 0);
  EXPECT_ERR(weft_future_error(r[0]), WEFT_ECANCELED);
  weft_future_release(r[0]);
  REQUIRE_EQ(weft_channel_create(2, count_dtor, &ch), 0);
  atomic_store(&dtor_calls, 0);
  for (int i = 0; i < 3; i++)
    REQUIRE_EQ(weft_channel_send(ch, IT(i + 1), &s[i]), 0);
  EXPECT_EQ(weft_channel_close(ch), 0);
  EXPECT_EQ(atomic_load(&dtor_calls), 2);
  EXPECT_EQ(state_of(s[1]), WEFT_FULFILLED);
  EXPECT_ERR(weft_future_error(s[2]), WEFT_ECANCELED);
  for (int i = 0; i < 3; i++)
    weft_future_release(s[i]);
}

/* ---- threads: every item received exactly once ---- */

enum { ST_PROD = 3, ST_CONS = 3, ST_ITEMS = 20000 };

typedef struct {
  weft_channel_t *ch;
  _Atomic int sent[ST_PROD * ST_ITEMS];
  _Atomic int got[ST_PROD * ST_ITEMS];
  _Atomic long received;
  _Atomic int next_prod;
  bool cancels;
} stress_t;

/* Send with the try form, else the future (cancelled now and then: then
 * the item is still ours and goes again). False once shut down. */
static bool stress_send(stress_t *st, long id, unsigned *seed) {
  for (;;) {
    int rc = weft_channel_try_send(st->ch, IT(id + 1));
    if (rc == 0)
      return true;
    if (rc == WEFT_EPIPE)
      return false;
    weft_future_t *f;
    rc = weft_channel_send(st->ch, IT(id + 1), &f);
    if (rc != 0) {
      EXPECT_ERR(rc, WEFT_EPIPE);
      return false;
    }
    if (st->cancels && rand_r(seed) % 4 == 0)
      weft_future_cancel(f);
    rc = outcome(f);
    weft_future_release(f);
    if (rc == 0)
      return true;
    if (rc == WEFT_EPIPE)
      return false;
    EXPECT_ERR(rc, WEFT_ECANCELED);
  }
}

static void *stress_producer(void *arg) {
  stress_t *st = arg;
  int p = atomic_fetch_add(&st->next_prod, 1);
  unsigned seed = (unsigned)p * 7919u + 1;
  for (long i = 0; i < ST_ITEMS; i++) {
    long id = p * ST_ITEMS + i;
    if (!stress_send(st, id, &seed))
      break;
    atomic_store(&st->sent[id], 1);
  }
  return NULL;
}

static void stress_got(stress_t *st, void *it) {
  long id = (long)(uintptr_t)it - 1;
  if (id < 0 || id >= ST_PROD * ST_ITEMS) {
    EXPECT_TRUE(0);
    return;
  }
  atomic_fetch_add(&st->got[id], 1);
  atomic_fetch_add(&st->received, 1);
}

static void *stress_consumer(void *arg) {
  stress_t *st = arg;
  unsigned seed = (unsigned)(uintptr_t)&seed;
  for (;;) {
    void *it;
    int rc = weft_channel_try_recv(st->ch, &it);
    if (rc == 0) {
      stress_got(st, it);
      continue;
    }
    if (rc == WEFT_EOF)
      return NULL;
    weft_future_t *f;
    rc = weft_channel_recv(st->ch, &f);
    if (rc != 0) {
      EXPECT_ERR(rc, 0);
      return NULL;
    }
    if (st->cancels && rand_r(&seed) % 4 == 0)
      weft_future_cancel(f);
    rc = outcome(f);
    if (rc == 0)
      stress_got(st, weft_future_value(f));
    weft_future_release(f);
    if (rc == WEFT_EOF)
      return NULL;
    if (rc != 0)
      EXPECT_ERR(rc, WEFT_ECANCELED);
  }
}

static void run_stress(bool cancels, bool shutdown_early) {
  stress_t *st = calloc(1, sizeof *st);
  REQUIRE_EQ(st != NULL, 1);
  st->cancels = cancels;
  REQUIRE_EQ(weft_channel_create(7, NULL, &st->ch), 0);
  weft__perturb(cancels, 0x5c1000u + shutdown_early);
  pthread_t tp[ST_PROD], tc[ST_CONS];
  for (int i = 0; i < ST_CONS; i++)
    REQUIRE_EQ(pthread_create(&tc[i], NULL, stress_consumer, st), 0);
  for (int i = 0; i < ST_PROD; i++)
    REQUIRE_EQ(pthread_create(&tp[i], NULL, stress_producer, st), 0);
  if (shutdown_early) {
    tu_spin_until(&st->received, ST_PROD * ST_ITEMS / 3);
    EXPECT_EQ(weft_channel_shutdown(st->ch), 0);
  }
  for (int i = 0; i < ST_PROD; i++)
    pthread_join(tp[i], NULL);
  if (!shutdown_early)
    EXPECT_EQ(weft_channel_shutdown(st->ch), 0);
  for (int i = 0; i < ST_CONS; i++)
    pthread_join(tc[i], NULL);
  weft__perturb(false, 0);
  long sent = 0, bad = 0;
  for (long i = 0; i < ST_PROD * ST_ITEMS; i++) {
    sent += atomic_load(&st->sent[i]);
    bad += atomic_load(&st->got[i]) != atomic_load(&st->sent[i]);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(atomic_load(&st->received), sent);
  if (!shutdown_early)
    EXPECT_EQ(sent, ST_PROD * ST_ITEMS);
  EXPECT_EQ(weft_channel_count(st->ch), 0);
  EXPECT_EQ(weft_channel_close(st->ch), 0);
  free(st);
}

static void test_stress_plain(void) { run_stress(false, false); }
static void test_stress_cancels(void) { run_stress(true, false); }
static void test_stress_shutdown(void) { run_stress(true, true); }

/* Threads sharing a semaphore of 2 and a mutex: never more than 2 inside,
 * never 2 in the lock, every round counted. */
typedef struct {
  weft_semaphore_t *s;
  weft_mutex_t *m;
  _Atomic int inside, peak;
  long counter; /* under m */
} guard_t;

static void *guard_thread(void *arg) {
  guard_t *g = arg;
  for (int i = 0; i < 2000; i++) {
    weft_future_t *f;
    if (weft_semaphore_try_acquire(g->s) != 0) {
      if (weft_semaphore_acquire(g->s, &f) != 0) {
        EXPECT_TRUE(0);
        return NULL;
      }
      EXPECT_EQ(outcome(f), 0);
      weft_future_release(f);
    }
    int in = atomic_fetch_add(&g->inside, 1) + 1;
    if (in > atomic_load(&g->peak))
      atomic_store(&g->peak, in);
    if (weft_mutex_lock(g->m, &f) != 0) {
      EXPECT_TRUE(0);
      return NULL;
    }
    EXPECT_EQ(outcome(f), 0);
    weft_future_release(f);
    g->counter++;
    EXPECT_EQ(weft_mutex_unlock(g->m), 0);
    atomic_fetch_sub(&g->inside, 1);
    EXPECT_EQ(weft_semaphore_release(g->s, 1), 0);
  }
  return NULL;
}

static void test_threads_semaphore_mutex(void) {
  guard_t g = {0};
  REQUIRE_EQ(weft_semaphore_create(2, &g.s), 0);
  REQUIRE_EQ(weft_mutex_create(&g.m), 0);
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    REQUIRE_EQ(pthread_create(&t[i], NULL, guard_thread, &g), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  EXPECT_EQ(g.counter, 4 * 2000);
  EXPECT_TRUE(atomic_load(&g.peak) <= 2);
  EXPECT_EQ(weft_semaphore_available(g.s), 2);
  weft_semaphore_close(g.s);
  weft_mutex_close(g.m);
}

/* ---- fibers on a pool ---- */

typedef struct {
  weft_mutex_t *m;
  weft_channel_t *ch;
  weft_event_t *go;
  long counter;
  long sum;
} fib_t;

static weft_result_t fib_locker(void *arg) {
  fib_t *x = arg;
  weft_future_t *f;
  if (weft_event_wait(x->go, &f) != 0)
    return weft_err(WEFT_ENOMEM);
  weft_future_await(f, WEFT_FOREVER);
  weft_future_release(f);
  for (int i = 0; i < 500; i++) {
    if (weft_mutex_lock(x->m, &f) != 0)
      return weft_err(WEFT_ENOMEM);
    int rc = weft_future_await(f, WEFT_FOREVER);
    weft_future_release(f);
    if (rc != 0)
      return weft_err(rc);
    long v = x->counter;
    sched_yield();
    x->counter = v + 1;
    weft_mutex_unlock(x->m);
  }
  return weft_ok_int(0);
}

static weft_result_t fib_producer(void *arg) {
  fib_t *x = arg;
  for (uintptr_t i = 1; i <= 3000; i++) {
    weft_future_t *f;
    if (weft_channel_send(x->ch, IT(i), &f) != 0)
      return weft_err(WEFT_ENOMEM);
    weft_future_await(f, WEFT_FOREVER);
    int rc = weft_future_error(f);
    weft_future_release(f);
    if (rc != 0)
      return weft_err(rc);
  }
  weft_channel_shutdown(x->ch);
  return weft_ok_int(0);
}

static weft_result_t fib_consumer(void *arg) {
  fib_t *x = arg;
  for (;;) {
    weft_future_t *f;
    if (weft_channel_recv(x->ch, &f) != 0)
      return weft_err(WEFT_ENOMEM);
    weft_future_await(f, WEFT_FOREVER);
    int rc = weft_future_error(f);
    if (rc == 0)
      x->sum += (long)(uintptr_t)weft_future_value(f);
    weft_future_release(f);
    if (rc == WEFT_EOF)
      return weft_ok_int(0);
    if (rc != 0)
      return weft_err(rc);
  }
}

static void test_fibers(void) {
  weft_pool_t *pool;
  weft_pool_options_t po = {.size = sizeof po, .threads = 2};
  REQUIRE_EQ(weft_pool_create(&po, &pool), 0);
  weft_executor_t *ex = weft_pool_executor(pool);
  fib_t x = {0};
  REQUIRE_EQ(weft_mutex_create(&x.m), 0);
  REQUIRE_EQ(weft_channel_create(4, NULL, &x.ch), 0);
  REQUIRE_EQ(weft_event_create(&x.go), 0);
  weft_future_t *f[6];
  for (int i = 0; i < 4; i++)
    REQUIRE_EQ(weft_fiber_spawn(ex, fib_locker, &x, NULL, &f[i]), 0);
  REQUIRE_EQ(weft_fiber_spawn(ex, fib_consumer, &x, NULL, &f[4]), 0);
  REQUIRE_EQ(weft_fiber_spawn(ex, fib_producer, &x, NULL, &f[5]), 0);
  EXPECT_EQ(weft_event_set(x.go), 0);
  for (int i = 0; i < 6; i++) {
    EXPECT_EQ(outcome(f[i]), 0);
    weft_future_release(f[i]);
  }
  EXPECT_EQ(x.counter, 4 * 500);
  EXPECT_EQ(x.sum, 3000L * 3001 / 2);
  weft_mutex_close(x.m);
  weft_channel_close(x.ch);
  weft_event_close(x.go);
  EXPECT_EQ(weft_pool_shutdown(pool, WEFT_POOL_DRAIN, BOUND_MS, NULL), 0);
}

/* ---- every allocation failing ---- */

/* Run op with the n-th allocation failing, for n = 1, 2, ... until it
 * succeeds: each failure is WEFT_ENOMEM and leaves the state as before. */
typedef int (*nomem_op)(void *ctx, weft_future_t **f);

static int op_acquire(void *c, weft_future_t **f) {
  return weft_semaphore_acquire(c, f);
}
static int op_lock(void *c, weft_future_t **f) { return weft_mutex_lock(c, f); }
static int op_wait(void *c, weft_future_t **f) { return weft_event_wait(c, f); }
static int op_send(void *c, weft_future_t **f) {
  return weft_channel_send(c, IT(5), f);
}
static int op_recv(void *c, weft_future_t **f) {
  return weft_channel_recv(c, f);
}

static void nomem_loop(nomem_op op, void *ctx, size_t (*probe)(void *),
                       size_t want) {
  bool done = false;
  for (long n = 1; n < 50 && !done; n++) {
    tu_alloc_install(n);
    weft_future_t *f = (weft_future_t *)1;
    int rc = op(ctx, &f);
    if (rc == 0) {
      done = true;
      weft_future_release(f);
    } else {
      EXPECT_ERR(rc, WEFT_ENOMEM);
      EXPECT_TRUE(f == (weft_future_t *)1);
      EXPECT_EQ(probe(ctx), want);
      weft_allocator_trim();
      EXPECT_EQ(tu_alloc_live(), 0); /* nothing kept */
    }
    tu_alloc_restore();
  }
  EXPECT_TRUE(done);
}

static size_t probe_sem(void *c) { return weft_semaphore_available(c); }
static size_t probe_mutex(void *c) { return weft_mutex_is_locked(c); }
static size_t probe_event(void *c) { return weft_event_is_set(c); }
static size_t probe_ch(void *c) { return weft_channel_count(c); }

static void test_no_memory(void) {
  bool created = false;
  for (long n = 1; n < 20 && !created; n++) {
    tu_alloc_install(n);
    weft_semaphore_t *s = NULL;
    weft_mutex_t *m = NULL;
    weft_event_t *e = NULL;
    weft_channel_t *ch = NULL;
    int r1 = weft_semaphore_create(1, &s), r2 = weft_mutex_create(&m);
    int r3 = weft_event_create(&e), r4 = weft_channel_create(4, NULL, &ch);
    created = !r1 && !r2 && !r3 && !r4;
    EXPECT_TRUE((r1 == 0) == (s != NULL) && (r1 == 0 || r1 == WEFT_ENOMEM));
    EXPECT_TRUE((r2 == 0) == (m != NULL) && (r2 == 0 || r2 == WEFT_ENOMEM));
    EXPECT_TRUE((r3 == 0) == (e != NULL) && (r3 == 0 || r3 == WEFT_ENOMEM));
    EXPECT_TRUE((r4 == 0) == (ch != NULL) && (r4 == 0 || r4 == WEFT_ENOMEM));
    weft_semaphore_close(s);
    weft_mutex_close(m);
    weft_event_close(e);
    weft_channel_close(ch);
    weft_allocator_trim();
    EXPECT_EQ(tu_alloc_live(), 0);
    tu_alloc_restore();
  }
  EXPECT_TRUE(created);
  weft_semaphore_t *s;
  weft_mutex_t *m;
  weft_event_t *e;
  weft_channel_t *ch;
  REQUIRE_EQ(weft_semaphore_create(1, &s), 0);
  REQUIRE_EQ(weft_mutex_create(&m), 0);
  REQUIRE_EQ(weft_event_create(&e), 0);
  REQUIRE_EQ(weft_channel_create(1, NULL, &ch), 0);
  nomem_loop(op_acquire, s, probe_sem, 1); /* would take it at once */
  nomem_loop(op_acquire, s, probe_sem, 0); /* would queue */
  nomem_loop(op_lock, m, probe_mutex, 0);
  nomem_loop(op_lock, m, probe_mutex, 1);
  nomem_loop(op_wait, e, probe_event, 0);
  nomem_loop(op_recv, ch, probe_ch, 0); /* would queue: the last one */
  void *it;
  EXPECT_ERR(weft_channel_try_recv(ch, &it), WEFT_EAGAIN);
  EXPECT_EQ(weft_channel_try_send(ch, IT(5)), 0); /* to the queued recv */
  EXPECT_EQ(weft_channel_count(ch), 0);
  nomem_loop(op_send, ch, probe_ch, 0); /* enters at once */
  nomem_loop(op_send, ch, probe_ch, 1); /* would queue */
  nomem_loop(op_recv, ch, probe_ch, 1); /* would take at once */
  weft_semaphore_close(s);
  weft_mutex_close(m);
  weft_event_close(e);
  weft_channel_close(ch);
}

static const test_case_t cases[] = {
    {"semaphore: errors", test_semaphore_errors},
    {"semaphore: FIFO, cancel, close", test_semaphore_fifo_cancel},
    {"semaphore: release races cancel", test_race_semaphore},
    {"mutex: errors, hand-off, cancel, close", test_mutex},
    {"mutex: unlock races cancel", test_race_mutex},
    {"event: errors, wait, set, cancel, close", test_event},
    {"channel: errors", test_channel_errors},
    {"channel: order over many laps", test_channel_order},
    {"channel: queued sends and recvs, cancel", test_channel_waiters},
    {"channel: shutdown and close with waiters", test_channel_shutdown_close},
    {"channel: send races recv cancel", test_race_recv},
    {"channel: recv races send cancel", test_race_send},
    {"threads: semaphore and mutex", test_threads_semaphore_mutex},
    {"threads: channel, every item once", test_stress_plain},
    {"threads: channel with cancels", test_stress_cancels},
    {"threads: channel shut down midway", test_stress_shutdown},
    {"fibers on a pool", test_fibers},
    {"every allocation failing", test_no_memory},
    {NULL, NULL}};
const test_suite_t suite_sync = {"sync", cases};
