/* SPDX-License-Identifier: MIT */
/* weft/dns.h: name lookups as futures: a host and a service resolved to a
 * list of socket addresses, on the loop's blocking executor, cancellable.
 * Life cycle: a lookup's result belongs to its future and goes with it.
 * Design: docs/design/fs.md ("Name lookups"). */
#ifndef WEFT_DNS_H
#define WEFT_DNS_H

#include <weft/common.h>
#include <weft/future.h>
#include <weft/loop.h>
#include <weft/net.h>

WEFT_BEGIN_DECLS

/*
 * Model
 * -----
 * weft_dns_resolve() runs getaddrinfo() (so /etc/hosts, /etc/nsswitch.conf
 * and the resolver's own timeouts and retries apply) on the loop's blocking
 * executor (weft_loop_options_t.blocking, or the loop's own threads), never
 * on the loop thread, and settles its future on the loop thread.
 *
 * getaddrinfo() cannot be interrupted. A cancel (from any thread) settles
 * the future at once as cancelled; the lookup goes on in its thread, and
 * when it returns its result is discarded and freed there. Likewise at the
 * loop's close: pending lookups are cancelled, and close does not wait for
 * them. A lookup that has not started when it is cancelled never starts.
 */

/**
 * A lookup's result: `count` addresses (at least one), in the order
 * getaddrinfo() gave them (the system's preference, RFC 6724), each with
 * the port of the service, without repeats. Owned by the future that
 * carries it: read it through weft_future_value() while you hold the
 * future; it is freed with the future's last handle. Copy the addresses
 * (plain data) to keep them longer.
 */
typedef struct weft_addr_list {
  size_t count;
  weft_addr_t addrs[];
} weft_addr_list_t;

/** What to look up: zero-initialise, set `size` to
 * sizeof(weft_dns_options_t), change what you need. Zero is each field's
 * default; the rules of docs/README.md, "Structs that grow", apply. */
typedef struct weft_dns_options {
  size_t size; /* sizeof(weft_dns_options_t) */
  /* AF_INET, AF_INET6, or 0 (AF_UNSPEC): both */
  int family;
  /* Only addresses of families the host has configured (AI_ADDRCONFIG);
   * off by default, so "localhost" gives ::1 on a host without IPv6
   * routes too. */
  bool addrconfig;
  void *reserved[4]; /* zero */
} weft_dns_options_t;

/**
 * Resolve `host` (a name, or a numeric IPv4 / IPv6 address) and `service`
 * (a port number such as "443", a service name from /etc/services such as
 * "https", or NULL for port 0) to stream socket addresses. `opts` may be
 * NULL (defaults). host and service are copied before the call returns.
 * On 0 *out is a future fulfilled with a weft_addr_list_t * (the future
 * owns it, see there) or rejected with:
 * WEFT_EAI_NONAME (no such host or service, or the host has no address
 * of the family asked for), WEFT_EAI_AGAIN (a temporary failure: the
 * name server did not answer, or answered "try again"; retrying later
 * may succeed), WEFT_EAI_FAIL (a permanent failure of the name server),
 * WEFT_ENOMEM, or another system error mapped to its WEFT_E code. It is
 * cancelled (WEFT_ECANCELED) by weft_future_cancel() and by the loop's
 * close (see the model above).
 * Errors (returned): WEFT_EINVAL (NULL loop or out, host NULL or empty,
 * opts->family other than 0, AF_INET or AF_INET6, a bad opts->size);
 * WEFT_ENOTSUP (a reserved slot or a byte past this weft's struct is not
 * zero); WEFT_EPERM off the loop thread; WEFT_ESHUTDOWN (the loop is
 * closing); WEFT_ENOMEM; WEFT_EAGAIN (no blocking thread could be
 * started). *out untouched on error; nothing leaks.
 * Thread: the loop thread.
 */
WEFT_EXTERN int weft_dns_resolve(weft_loop_t *loop, const char *host,
                                 const char *service,
                                 const weft_dns_options_t *opts,
                                 weft_future_t **out);

WEFT_END_DECLS

#endif /* WEFT_DNS_H */
