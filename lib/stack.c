/* SPDX-License-Identifier: MIT */
/* lib/stack.c: fiber stacks (mapped with a guard page, recycled per thread)
 * and the report of a fiber stack overflow (lib/fiber.h). */
#define _GNU_SOURCE
#include "fiber.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* Freed stacks a thread keeps for its next fibers. */
#define CACHE_MAX 32
/* How far below a stack's guard page a fault still counts as its overflow
 * (a frame larger than a page can step over the guard). */
#define BELOW_GUARD ((uintptr_t)64 * 1024)

static size_t page_size(void) {
  static size_t page;
  if (page == 0)
    page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

/* ---- the per-thread cache ---- */

typedef struct cached {
  struct cached *next;
  size_t size;
} cached_t;

static _Thread_local struct {
  cached_t *head;
  unsigned n;
  bool keyed;
} tl_cache __attribute__((tls_model("initial-exec")));

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void unmap(char *lo, size_t size) {
  size_t page = page_size();
  munmap(lo - page, size + page);
}

/* A cached stack's record lies at its top, where the stack grows from. */
static cached_t *record_of(char *lo, size_t size) {
  return (cached_t *)(lo + size - sizeof(cached_t));
}

static char *lo_of(cached_t *c) {
  return (char *)c + sizeof(cached_t) - c->size;
}

static void cache_drain(void *unused) {
  (void)unused;
  while (tl_cache.head != NULL) {
    cached_t *c = tl_cache.head;
    tl_cache.head = c->next;
    unmap(lo_of(c), c->size);
  }
  tl_cache.n = 0;
}

static void cache_key_make(void) {
  pthread_key_create(&cache_key, cache_drain);
}

static int map_stack(size_t size, weft__stack_t *st) {
  size_t page = page_size();
  if (WEFT__FAULT("mmap"))
    return WEFT_ENOMEM;
  char *base = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1,
                    0);
  if (base == MAP_FAILED)
    return WEFT_ENOMEM;
  /* A guard region leaves the mapping whole (one kernel mapping per stack,
   * not two: vm.max_map_count bounds how many fibers can wait). */
  if (madvise(base, page, MADV_GUARD_INSTALL) != 0 &&
      mprotect(base, page, PROT_NONE) != 0) {
    munmap(base, size + page);
    return WEFT_ENOMEM;
  }
  st->lo = base + page;
  st->size = size;
  return 0;
}

int weft__stack_get(size_t size, weft__stack_t *st) {
  size_t page = page_size();
  size = (size + page - 1) & ~(page - 1);
  cached_t **pp = &tl_cache.head;
  for (cached_t *c = *pp; c != NULL; pp = &c->next, c = *pp) {
    if (c->size == size) {
      *pp = c->next;
      tl_cache.n--;
      st->lo = lo_of(c);
      st->size = size; /* (unpoisoned when it was put) */
      return 0;
    }
  }
  return map_stack(size, st);
}

void weft__stack_put(const weft__stack_t *st, const void *low) {
  /* ASan's shadow keeps the poison of frames that never returned (the
   * fiber's entry and its last switch, above `low`): cleared now, or the
   * next fiber here (or the next mapping at this address) trips on it.
   * Below, every frame returned and unpoisoned itself. */
  if (low != NULL) {
    const char *from = (const char *)low - 256; /* (the red zone below) */
    if (from < st->lo)
      from = st->lo;
    WEFT__UNPOISON((void *)from, (size_t)(st->lo + st->size - from));
  }
  if (tl_cache.n >= CACHE_MAX) {
    unmap(st->lo, st->size);
    return;
  }
  if (!tl_cache.keyed) {
    pthread_once(&cache_once, cache_key_make);
    pthread_setspecific(cache_key, &tl_cache);
    tl_cache.keyed = true;
  }
  cached_t *c = record_of(st->lo, st->size);
  c->size = st->size;
  c->next = tl_cache.head;
  tl_cache.head = c;
  tl_cache.n++;
}

/* ---- overflow report ---- */

static struct sigaction old_segv, old_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static _Thread_local bool tl_alt_ready
    __attribute__((tls_model("initial-exec")));
static pthread_key_t alt_key;

static void put_str(char *buf, size_t *n, size_t cap, const char *s) {
  while (*s != '\0' && *n + 1 < cap)
    buf[(*n)++] = *s++;
}

static void put_ptr(char *buf, size_t *n, size_t cap, const void *p) {
  char hex[2 + 16 + 1] = "0x";
  uintptr_t v = (uintptr_t)p;
  for (int i = 0; i < 16; i++)
    hex[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  hex[18] = '\0';
  put_str(buf, n, cap, hex);
}

/* An address, then (symbol) where the dynamic symbol table knows it, or
 * (file+0xoffset) for addr2line where it does not. */
static void put_code(char *buf, size_t *n, size_t cap, void *p) {
  Dl_info di;
  put_ptr(buf, n, cap, p);
  if (dladdr(p, &di) == 0)
    return;
  put_str(buf, n, cap, " (");
  if (di.dli_sname != NULL) {
    put_str(buf, n, cap, di.dli_sname);
  } else if (di.dli_fname != NULL) {
    put_str(buf, n, cap, di.dli_fname);
    put_str(buf, n, cap, "+");
    put_ptr(buf, n, cap, (void *)((char *)p - (char *)di.dli_fbase));
  }
  put_str(buf, n, cap, ")");
}

static void report(const char *name, void *fn, void *site) {
  char buf[512];
  size_t n = 0;
  put_str(buf, &n, sizeof buf, "weft: fiber stack overflow in fiber \"");
  put_str(buf, &n, sizeof buf, name != NULL ? name : "(unnamed)");
  put_str(buf, &n, sizeof buf, "\", function ");
  put_code(buf, &n, sizeof buf, fn);
  put_str(buf, &n, sizeof buf, ", spawned from ");
  put_code(buf, &n, sizeof buf, site);
  put_str(buf, &n, sizeof buf, "\n");
  ssize_t w = write(2, buf, n);
  (void)w;
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  const char *name;
  void *fn, *site;
  if (weft__fiber_overflow_info(si->si_addr, &name, &fn, &site)) {
    report(name, fn, site);
    signal(sig, SIG_DFL); /* the access repeats and ends the process */
    return;
  }
  struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
  if (old->sa_flags & SA_SIGINFO)
    old->sa_sigaction(sig, si, uc);
  else if (old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)
    signal(sig, SIG_DFL);
  else
    old->sa_handler(sig);
}

static void alt_free(void *p) {
  stack_t off = {.ss_flags = SS_DISABLE};
  sigaltstack(&off, NULL);
  munmap(p, (size_t)SIGSTKSZ * 4);
}

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old_segv);
  sigaction(SIGBUS, &sa, &old_bus);
  pthread_key_create(&alt_key, alt_free);
}

void weft__stack_thread_ready(void) {
  if (tl_alt_ready)
    return;
  tl_alt_ready = true;
  pthread_once(&handler_once, install_handler);
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
    return; /* the thread has one (ASan's, the application's) */
  size_t size = (size_t)SIGSTKSZ * 4;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return; /* no report then, but the fault still ends the process */
  stack_t alt = {.ss_sp = p, .ss_size = size, .ss_flags = 0};
  if (sigaltstack(&alt, NULL) != 0) {
    munmap(p, size);
    return;
  }
  pthread_setspecific(alt_key, p);
}

bool weft__stack_in_guard(const weft__stack_t *st, const void *addr) {
  uintptr_t a = (uintptr_t)addr, guard = (uintptr_t)st->lo - page_size();
  return a < (uintptr_t)st->lo && a + BELOW_GUARD >= guard;
}
