/* SPDX-License-Identifier: MIT */
/* loop/net/addr.c: socket addresses (weft_addr_t). */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

int weft_addr_init_ip(const char *ip, uint16_t port, weft_addr_t *out) {
  if (ip == NULL || out == NULL)
    return WEFT_EINVAL;
  weft_addr_t a;
  memset(&a, 0, sizeof a);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof *v4;
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof *v6;
  } else {
    return WEFT_EINVAL;
  }
  *out = a;
  return 0;
}

int weft_addr_init_unix(const char *path, weft_addr_t *out) {
  struct sockaddr_un un;
  if (path == NULL || out == NULL)
    return WEFT_EINVAL;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof un.sun_path)
    return WEFT_EINVAL;
  memset(out, 0, sizeof *out);
  struct sockaddr_un *u = (struct sockaddr_un *)&out->ss;
  u->sun_family = AF_UNIX;
  memcpy(u->sun_path, path, n + 1);
  out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

int weft_addr_port(const weft_addr_t *addr) {
  if (addr == NULL)
    return WEFT_EINVAL;
  if (addr->ss.ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)&addr->ss)->sin_port);
  if (addr->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)&addr->ss)->sin6_port);
  return WEFT_EINVAL;
}

int weft_addr_format(const weft_addr_t *addr, char *buf, size_t n) {
  if (addr == NULL || buf == NULL)
    return WEFT_EINVAL;
  char ip[INET6_ADDRSTRLEN];
  int w;
  switch (addr->ss.ss_family) {
  case AF_INET:
    inet_ntop(AF_INET, &((const struct sockaddr_in *)&addr->ss)->sin_addr, ip,
              sizeof ip);
    w = snprintf(buf, n, "%s:%d", ip, weft_addr_port(addr));
    break;
  case AF_INET6:
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addr->ss)->sin6_addr,
              ip, sizeof ip);
    w = snprintf(buf, n, "[%s]:%d", ip, weft_addr_port(addr));
    break;
  case AF_UNIX:
    w = snprintf(buf, n, "unix:%s",
                 ((const struct sockaddr_un *)&addr->ss)->sun_path);
    break;
  default:
    return WEFT_EINVAL;
  }
  return w < 0 || (size_t)w >= n ? WEFT_ERANGE : 0;
}

bool weft__addr_ok(const weft_addr_t *a) {
  if (a == NULL || a->len == 0 || a->len > sizeof a->ss)
    return false;
  int fam = a->ss.ss_family;
  return fam == AF_INET || fam == AF_INET6 || fam == AF_UNIX;
}
