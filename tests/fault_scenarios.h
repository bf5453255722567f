/* SPDX-License-Identifier: MIT */
/* tests/fault_scenarios.h: what the fault driver (test_fault.c) and its
 * scenarios (fault_scenarios.c) share. A scenario makes public calls; each
 * return code goes through FX() with the codes the header documents for
 * that call, each future it holds through fx_track() (checked settled at
 * the end) and each settled outcome through FX_OUT(). A documented error
 * ends the scenario early (it cleans up and returns); anything else is a
 * "bad" the driver reports with the scenario, call, N and errno. */
#ifndef WEFT_TESTS_FAULT_SCENARIOS_H
#define WEFT_TESTS_FAULT_SCENARIOS_H

#include "testutil.h"

#include <stdbool.h>

enum { FX_MAX_FUTS = 64, FX_WAIT_MS = 5000 };

typedef struct fx {
  const char *scen; /* scenario name */
  const char *call; /* armed call name, NULL for the clean run */
  unsigned long n;  /* armed N */
  int err;          /* armed errno (positive), 0 for the clean run */
  bool persistent;
  bool ring; /* loop scenarios: the io_uring backend wanted */
  weft_future_t *futs[FX_MAX_FUTS];
  int nfuts;
  int bad;        /* contract breaks seen */
  int documented; /* documented errors that ended a step */
  char why[512];  /* the first break */
} fx_t;

/* Record a contract break (first one kept in why). */
void fx_bad(fx_t *x, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* FX(x, expr, allowed codes...): rc of `expr` is true when 0; a code from
 * the allowed ones (or the injected errno, except EINTR/EAGAIN, which are
 * retried inside) is a documented failure (false); anything else is a
 * break (false). The list ends with the sentinel 1 the macro adds. */
bool fx_rc(fx_t *x, int line, const char *text, int rc, ...);
#define FX(x, ...) fx_rc((x), __LINE__, #__VA_ARGS__, __VA_ARGS__, 1)

/* FX_OUT(x, f, allowed codes...): the settled outcome of f: true when
 * fulfilled; an allowed code (or the injected errno as above) is false;
 * pending or anything else is a break. */
bool fx_out(fx_t *x, int line, const char *text, weft_future_t *f, ...);
#define FX_OUT(x, ...) fx_out((x), __LINE__, #__VA_ARGS__, __VA_ARGS__, 1)

/* Hand the scenario's handle on f to the driver: at the end of the run it
 * must be settled; the driver releases it. Returns f. */
weft_future_t *fx_track(fx_t *x, weft_future_t *f);

/* weft_loop_run_until bounded by FX_WAIT_MS: a timeout is a hang (a break).
 * Returns true when f settled. */
bool fx_run_until(fx_t *x, weft_loop_t *loop, weft_future_t *f, int line);
#define FX_RUN(x, loop, f) fx_run_until((x), (loop), (f), __LINE__)
/* weft_future_await bounded likewise. */
bool fx_await(fx_t *x, weft_future_t *f, int line);
#define FX_AWAIT(x, f) fx_await((x), (f), __LINE__)

/* A loop on the backend the run asks for; false (and documented) when
 * weft_loop_create fails as documented. */
bool fx_loop(fx_t *x, weft_loop_t **out);
void fx_loop_close(fx_t *x, weft_loop_t *loop);

typedef struct fx_scenario {
  const char *name;
  void (*run)(fx_t *x);
  bool loop; /* run on both backends */
  /* runs with weft's own allocator (regions): no counting allocator, LSan
   * checks leaks */
  bool default_alloc;
} fx_scenario_t;

extern const fx_scenario_t fx_scenarios[];
extern const int fx_nscenarios;

#endif
