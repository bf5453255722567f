/* SPDX-License-Identifier: MIT */
/* scripts/switch_check.c: checks lib/switch.c on its own (built by
 * scripts/check-switch.sh for the host and, under qemu, for aarch64; with
 * -DWEFT_FIBER_UCONTEXT for the portable path). Contexts on mmap'd and
 * malloc'd stacks pass control round a ring many times; each keeps values
 * in the callee-saved integer and floating-point registers across every
 * switch and checks them after, and checks its stack's alignment.
 * "--bench N" times N switch pairs between two contexts instead. */
#define _GNU_SOURCE
#include "fiber.h"

#include <fenv.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { RING = 5, STACK = 64 * 1024 };

static weft__ctx_t main_ctx, ring[RING];
static long rounds;
static volatile uint64_t seed = 0x9e3779b97f4a7c15u; /* opaque to -O2 */
static long failures;

static void fail(const char *what, int who, long round) {
  if (failures++ < 10)
    fprintf(stderr, "FAIL: %s (context %d, round %ld)\n", what, who, round);
}

/* Switch from context `who` (RING = main) to the next one in the ring. */
static void pass_on(int who) {
  weft__ctx_t *from = who == RING ? &main_ctx : &ring[who];
  weft__ctx_t *to = who == RING       ? &ring[0]
                    : who == RING - 1 ? &main_ctx
                                      : &ring[who + 1];
  weft__ctx_swap(from, to);
}

/* The calling convention's callee-saved registers, each loaded with a value
 * of this context and round before the switch and compared after. */
static void regs_across_switch(int who, long round) {
  uint64_t p = seed ^ ((uint64_t)who << 56) ^ (uint64_t)round;
#if defined(__aarch64__)
  register uint64_t r19 __asm__("x19") = p + 19, r20 __asm__("x20") = p + 20,
                        r21 __asm__("x21") = p + 21,
                        r22 __asm__("x22") = p + 22,
                        r23 __asm__("x23") = p + 23,
                        r24 __asm__("x24") = p + 24,
                        r25 __asm__("x25") = p + 25,
                        r26 __asm__("x26") = p + 26,
                        r27 __asm__("x27") = p + 27,
                        r28 __asm__("x28") = p + 28;
  double q = (double)(p >> 12);
  register double d8 __asm__("d8") = q + 8, d9 __asm__("d9") = q + 9,
                     d10 __asm__("d10") = q + 10, d11 __asm__("d11") = q + 11,
                     d12 __asm__("d12") = q + 12, d13 __asm__("d13") = q + 13,
                     d14 __asm__("d14") = q + 14, d15 __asm__("d15") = q + 15;
#define XREGS                                                                  \
  "+r"(r19), "+r"(r20), "+r"(r21), "+r"(r22), "+r"(r23), "+r"(r24), "+r"(r25), \
      "+r"(r26), "+r"(r27), "+r"(r28)
#define DREGS                                                                  \
  "+w"(d8), "+w"(d9), "+w"(d10), "+w"(d11), "+w"(d12), "+w"(d13), "+w"(d14),   \
      "+w"(d15)
  __asm__ volatile("" : XREGS);
  __asm__ volatile("" : DREGS);
  pass_on(who);
  __asm__ volatile("" : XREGS);
  __asm__ volatile("" : DREGS);
#undef XREGS
#undef DREGS
  uint64_t x[] = {r19, r20, r21, r22, r23, r24, r25, r26, r27, r28};
  double d[] = {d8, d9, d10, d11, d12, d13, d14, d15};
  for (int i = 0; i < 10; i++)
    if (x[i] != p + 19 + (uint64_t)i)
      fail("x19-x28 changed", who, round);
  for (int i = 0; i < 8; i++)
    if (d[i] != q + 8 + i)
      fail("d8-d15 changed", who, round);
#elif defined(__x86_64__)
  register uint64_t rbx __asm__("rbx") = p + 1;
  register uint64_t r12 __asm__("r12") = p + 2;
  register uint64_t r13 __asm__("r13") = p + 3;
  register uint64_t r14 __asm__("r14") = p + 4;
  register uint64_t r15 __asm__("r15") = p + 5;
  __asm__ volatile("" : "+r"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15));
  uint64_t want[] = {rbx, r12, r13, r14, r15};
  __asm__ volatile("" : "+r"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15));
  pass_on(who);
  __asm__ volatile("" : "+r"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15));
  uint64_t got[] = {rbx, r12, r13, r14, r15};
  if (memcmp(want, got, sizeof want) != 0)
    fail("rbx/r12-r15 changed", who, round);
#else
  (void)p;
  pass_on(who);
#endif
}

/* Many locals live across a switch, as -O2 code keeps them (in callee-saved
 * registers while there are enough, then on the stack). The empty asm
 * makes them opaque, so the compiler cannot recompute them after the
 * switch; the expected values come from a fresh read of seed. */
#if defined(__x86_64__)
#define FREG "+x"
#elif defined(__aarch64__)
#define FREG "+w"
#else
#define FREG "+g"
#endif
static uint64_t mix(uint64_t p, int n) {
  return (p ^ (uint64_t)n) * (2u * n + 1);
}
static double fmix(uint64_t p, int n) {
  return (double)(p >> 11) * 0.5 + n * 1.25;
}

static void locals_across_switch(int who, long round) {
  uint64_t p = seed ^ ((uint64_t)who << 48) ^ (uint64_t)round;
  uint64_t a = mix(p, 0), b = mix(p, 1), c = mix(p, 2), d = mix(p, 3),
           e = mix(p, 4), f = mix(p, 5), g = mix(p, 6), h = mix(p, 7),
           i = mix(p, 8), j = mix(p, 9), k = mix(p, 10), l = mix(p, 11);
  double fa = fmix(p, 0), fb = fmix(p, 1), fc = fmix(p, 2), fd = fmix(p, 3),
         fe = fmix(p, 4), ff = fmix(p, 5), fg = fmix(p, 6), fh = fmix(p, 7);
  __asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(f));
  __asm__ volatile("" : "+r"(g), "+r"(h), "+r"(i), "+r"(j), "+r"(k), "+r"(l));
  __asm__ volatile(""
                   : FREG(fa), FREG(fb), FREG(fc), FREG(fd), FREG(fe), FREG(ff),
                     FREG(fg), FREG(fh));
  pass_on(who);
  uint64_t q = seed ^ ((uint64_t)who << 48) ^ (uint64_t)round;
  uint64_t x[] = {a, b, c, d, e, f, g, h, i, j, k, l};
  double y[] = {fa, fb, fc, fd, fe, ff, fg, fh};
  for (int n = 0; n < 12; n++)
    if (x[n] != mix(q, n))
      fail("integer locals changed", who, round);
  for (int n = 0; n < 8; n++)
    if (y[n] != fmix(q, n))
      fail("double locals changed", who, round);
}

/* The ABI's stack alignment where a function starts: with frame pointers
 * the frame address is 16-aligned on both x86-64 and aarch64. */
static void check_alignment(int who) {
  if (((uintptr_t)__builtin_frame_address(0) & 15) != 0)
    fail("stack not 16-aligned", who, -1);
  char buf[64]; /* printf of a double uses aligned vector stores */
  snprintf(buf, sizeof buf, "%.3f %Lf", 1.5, (long double)2.5);
  if (strcmp(buf, "1.500 2.500000") != 0)
    fail("snprintf in a context", who, -1);
}

static void ring_entry(void *arg) {
  int who = (int)(intptr_t)arg;
  check_alignment(who);
  for (long r = 0;; r++) {
    regs_across_switch(who, r);
    locals_across_switch(who, r);
  }
}

/* Whether the rounding mode is part of a context (x86-64's MXCSR and x87
 * control word, ucontext) or of the thread (AAPCS64's FPCR): a context sets
 * FE_UPWARD and switches away; main reports what it sees. Not a failure
 * either way; the fiber docs say which holds. */
static weft__ctx_t fenv_ctx;
static int fenv_seen_inside;

static void fenv_entry(void *arg) {
  (void)arg;
  fesetround(FE_UPWARD);
  weft__ctx_swap(&fenv_ctx, &main_ctx);
  fenv_seen_inside = fegetround();
  fesetround(FE_TONEAREST);
  weft__ctx_swap(&fenv_ctx, &main_ctx);
}

static const char *fenv_scope(void) {
  void *lo = malloc(STACK);
  weft__ctx_make(&fenv_ctx, lo, STACK, fenv_entry, NULL);
  weft__ctx_swap(&main_ctx, &fenv_ctx);
  int seen_outside = fegetround();
  fesetround(FE_TONEAREST);
  weft__ctx_swap(&main_ctx, &fenv_ctx);
  free(lo);
  if (seen_outside == FE_TONEAREST && fenv_seen_inside == FE_UPWARD)
    return "per context";
  if (seen_outside == FE_UPWARD)
    return "per thread";
  return "unexpected";
}

static void *stack_alloc(int i) {
  if (i % 2 == 0)
    return malloc(STACK);
  char *m = mmap(NULL, STACK + 4096, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  mprotect(m, 4096, PROT_NONE); /* a guard page below, as lib/stack.c has */
  return m + 4096;
}

static int run_ring(void) {
  for (int i = 0; i < RING; i++) {
    void *lo = stack_alloc(i);
    if (lo == NULL)
      return 2;
    /* odd sizes and bases: make must align the top itself */
    weft__ctx_make(&ring[i], (char *)lo + i, STACK - 3 * i, ring_entry,
                   (void *)(intptr_t)i);
  }
  for (long r = 0; r < rounds; r++) {
    regs_across_switch(RING, r);
    locals_across_switch(RING, r);
  }
  long switches = rounds * 2 * (RING + 1);
  const char *fenv = fenv_scope();
  printf("%s %s: %ld switches round %d contexts, %ld failures; rounding "
         "mode %s\n",
#if defined(__aarch64__)
         "aarch64",
#elif defined(__x86_64__)
         "x86-64",
#else
         "other",
#endif
         WEFT__SWITCH_ASM ? "asm" : "ucontext", switches, RING + 1, failures,
         fenv);
  return failures == 0 ? 0 : 1;
}

/* ---- --bench: a switch pair (there and back) ---- */
static weft__ctx_t bench_ctx;

static void bench_entry(void *arg) {
  (void)arg;
  for (;;)
    weft__ctx_swap(&bench_ctx, &main_ctx);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int run_bench(long n) {
  void *lo = malloc(STACK);
  weft__ctx_make(&bench_ctx, lo, STACK, bench_entry, NULL);
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
      weft__ctx_swap(&main_ctx, &bench_ctx);
    double ns = (double)(now_ns() - t0) / (double)n;
    best = ns < best ? ns : best;
  }
  printf("%s: best of 5, %.2f ns per switch pair\n",
         WEFT__SWITCH_ASM ? "asm" : "ucontext", best);
  free(lo);
  return 0;
}

/* CHECK_IN_DSO: the checks live in a shared object (marked for branch
 * protection, which a whole executable with unmarked start files cannot
 * be) and a small main calls check_main. */
#ifdef CHECK_IN_DSO
#define main check_main
int check_main(int argc, char **argv);
#endif

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--bench") == 0)
    return run_bench(atol(argv[2]));
  rounds = argc == 2 ? atol(argv[1]) : 100000;
  return run_ring();
}
