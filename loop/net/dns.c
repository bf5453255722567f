/* SPDX-License-Identifier: MIT */
/* loop/net/dns.c: name lookups (weft/dns.h): getaddrinfo() on the loop's
 * blocking executor, the result settled on the loop thread. A cancel
 * settles at once; the lookup cannot be called back, so its thread
 * discards and frees the result when getaddrinfo returns.
 *
 * References of an op: the caller's handle, the loop side's (until it is
 * settled or cancelled and off the loop's list) and the flight's (the
 * blocking task, then the task that brings the result back). */
#define _GNU_SOURCE
#include "../internal.h"

#include <weft/dns.h>

#include <errno.h>
#include <netdb.h>
#include <string.h>

typedef struct dns_op {
  weft__loop_op_t base; /* the future (first) */
  weft_task_t work, deliver;
  weft__lop_t lop; /* on the loop's list until finished */
  bool finished;
  int family;
  bool addrconfig;
  int res;                /* 0 or a weft code */
  weft_addr_list_t *list; /* the flight's result */
  const char *host, *service;
  /* the strings follow */
} dns_op_t;

static size_t list_size(size_t count) {
  return sizeof(weft_addr_list_t) + count * sizeof(weft_addr_t);
}

static void list_free(void *p) {
  weft_addr_list_t *l = p;
  weft__free(l, list_size(l->count));
}

static void dns_fini(weft__ext_t *e) {
  dns_op_t *op = (dns_op_t *)e;
  weft__free(op, op->base.size);
}

static void dns_finish(dns_op_t *op) {
  if (op->finished)
    return;
  op->finished = true;
  weft__lop_unlink(op->base.loop, &op->lop);
  weft__unref(&op->base.ext.base); /* the loop side's */
}

static void dns_disarm(weft__loop_op_t *b) { dns_finish((dns_op_t *)b); }

static int eai_error(int rc) {
  switch (rc) {
  case EAI_AGAIN:
    return WEFT_EAI_AGAIN;
  case EAI_FAIL:
    return WEFT_EAI_FAIL;
  case EAI_MEMORY:
    return WEFT_ENOMEM;
  case EAI_SYSTEM: {
    int e = weft_error_from_errno(errno);
    return e == 0 ? WEFT_EAI_FAIL : e;
  }
  case EAI_FAMILY:
  case EAI_BADFLAGS:
  case EAI_SOCKTYPE:
    return WEFT_EINVAL;
  default: /* EAI_NONAME, EAI_NODATA, EAI_ADDRFAMILY, EAI_SERVICE */
    return WEFT_EAI_NONAME;
  }
}

/* Does a carry an address the list keeps: one that fits a weft_addr_t
 * and is not a repeat of an entry before it in res? */
static bool kept(const struct addrinfo *res, const struct addrinfo *a) {
  if (a->ai_addrlen > sizeof(struct sockaddr_storage))
    return false;
  for (const struct addrinfo *b = res; b != a; b = b->ai_next)
    if (b->ai_addrlen == a->ai_addrlen &&
        memcmp(b->ai_addr, a->ai_addr, a->ai_addrlen) == 0)
      return false;
  return true;
}

/* The addresses of res, without repeats: 0, or a weft code. */
static int list_make(const struct addrinfo *res, weft_addr_list_t **out) {
  size_t n = 0;
  for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
    n += kept(res, a);
  if (n == 0)
    return WEFT_EAI_NONAME;
  weft_addr_list_t *l = weft__malloc(list_size(n));
  if (l == NULL)
    return WEFT_ENOMEM;
  memset(l, 0, list_size(n));
  for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
    if (kept(res, a)) {
      l->addrs[l->count].len = a->ai_addrlen;
      memcpy(&l->addrs[l->count].ss, a->ai_addr, a->ai_addrlen);
      l->count++;
    }
  *out = l;
  return 0;
}

static void dns_deliver(weft_task_t *t) { /* loop thread */
  dns_op_t *op = (dns_op_t *)((char *)t - offsetof(dns_op_t, deliver));
  weft_loop_t *loop = op->base.loop;
  weft_future_t *f = &op->base.ext.base;
  if (op->res != 0)
    (void)weft__settle_int(f, WEFT_REJECTED, 0, op->res);
  else if (weft__claim(f, WEFT_FULFILLED) == 0) {
    weft__ext_value_ptr(f, op->list, list_free);
    weft__publish(f);
  } else {
    list_free(op->list); /* cancelled meanwhile */
  }
  dns_finish(op);
  weft__unref(f); /* the flight's */
  weft__loop_put(loop);
}

/* The blocking thread: the lookup, unless cancelled before it starts; a
 * result nobody wants any more is freed here. */
static void dns_work(weft_task_t *t) {
  dns_op_t *op = (dns_op_t *)((char *)t - offsetof(dns_op_t, work));
  weft_future_t *f = &op->base.ext.base;
  weft_loop_t *loop = op->base.loop;
  if (weft_future_state(f) == WEFT_PENDING) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = op->family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = op->addrconfig ? AI_ADDRCONFIG : 0;
    int rc = getaddrinfo(op->host, op->service, &hints, &res);
    op->res = rc != 0 ? eai_error(rc) : list_make(res, &op->list);
    if (res != NULL)
      freeaddrinfo(res);
  } else {
    op->res = WEFT_ECANCELED;
  }
  if (weft_future_state(f) == WEFT_PENDING) {
    op->deliver.run = dns_deliver;
    if (weft__loop_submit(loop, &op->deliver) == 0)
      return;
  }
  if (op->res == 0) /* cancelled (or the loop is closing): discarded */
    list_free(op->list);
  weft__unref(f); /* the flight's */
  weft__loop_put(loop);
}

static void dns_lop_close(weft__lop_t *l) {
  dns_op_t *op = (dns_op_t *)((char *)l - offsetof(dns_op_t, lop));
  weft__ref(&op->base.ext.base); /* (the cancel may finish it) */
  (void)weft_future_cancel(&op->base.ext.base);
  dns_finish(op);
  weft__unref(&op->base.ext.base);
}

static void dns_cancel_hook(void *arg) { weft__loop_op_cancel(arg); }

static int dns_check(weft_loop_t *loop, const char *host,
                     const weft_dns_options_t *opts, weft_future_t **out) {
  if (loop == NULL || out == NULL || host == NULL || host[0] == '\0')
    return WEFT_EINVAL;
  if (opts != NULL) {
    int rc = weft__struct_check(opts, opts->size,
                                offsetof(weft_dns_options_t, reserved),
                                offsetof(weft_dns_options_t, reserved));
    if (rc != 0)
      return rc;
    if (opts->family != 0 && opts->family != AF_INET &&
        opts->family != AF_INET6)
      return WEFT_EINVAL;
  }
  if (!weft__loop_owned(loop))
    return WEFT_EPERM;
  return loop->closing ? WEFT_ESHUTDOWN : 0;
}

int weft_dns_resolve(weft_loop_t *loop, const char *host, const char *service,
                     const weft_dns_options_t *opts, weft_future_t **out) {
  int rc = dns_check(loop, host, opts, out);
  if (rc != 0)
    return rc;
  weft_executor_t *ex;
  rc = weft__loop_blocking(loop, &ex);
  if (rc != 0)
    return rc;
  size_t hl = strlen(host) + 1, sl = service != NULL ? strlen(service) + 1 : 0;
  size_t size = sizeof(dns_op_t) + hl + sl;
  dns_op_t *op = weft__malloc(size);
  if (op == NULL)
    return WEFT_ENOMEM;
  memset(op, 0, sizeof *op);
  char *s = (char *)(op + 1);
  memcpy(s, host, hl);
  op->host = s;
  if (service != NULL)
    op->service = memcpy(s + hl, service, sl);
  op->family = opts != NULL ? opts->family : 0;
  op->addrconfig = opts != NULL && opts->addrconfig;
  /* refs: the handle, the loop side's, the flight's */
  weft__loop_op_setup(&op->base, size, loop, dns_disarm, dns_fini,
                      dns_cancel_hook, &op->base);
  weft__ref(&op->base.ext.base);
  atomic_fetch_add_explicit(&loop->holds, 1, memory_order_relaxed);
  op->work.run = dns_work;
  rc = weft_executor_submit(ex, &op->work);
  if (rc != 0) {
    weft__loop_put(loop);
    weft__free(op, size);
    return rc;
  }
  op->lop.close = dns_lop_close;
  weft__lop_link(loop, &op->lop);
  *out = &op->base.ext.base;
  return 0;
}
