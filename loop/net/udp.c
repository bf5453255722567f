/* SPDX-License-Identifier: MIT */
/* loop/net/udp.c: datagram sockets. */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>
#include <sys/socket.h>

void weft__do_recv(weft_socket_t *s, net_op_t *op) {
  if (!s->readable)
    return;
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  ssize_t n;
  do
    n = WEFT__SYS("recvfrom", recvfrom(s->fd, op->buf, op->len, 0,
                                       (struct sockaddr *)&ss, &sl));
  while (n < 0 && errno == EINTR);
  if (n >= 0) {
    if (op->from != NULL) {
      memset(op->from, 0, sizeof *op->from);
      memcpy(&op->from->ss, &ss, sl);
      op->from->len = sl;
    }
    if (!op_claim(op)) { /* the datagram is lost to the cancel: say so */
      op_leave(op);
      op_drop(s, op);
      return;
    }
    op_leave(op);
    op_publish(s, op, (intptr_t)n);
    return;
  }
  op_leave(op);
  if (transient(errno))
    s->readable = false;
  else
    op_finish_int(s, op, 0, io_err(errno)); /* ICMP errors: this op only */
}

void weft__do_send(weft_socket_t *s, net_op_t *op) {
  if (!s->writable)
    return;
  if (!op_enter(op)) {
    op_drop(s, op);
    return;
  }
  ssize_t n;
  do
    n = WEFT__SYS("sendto",
                  sendto(s->fd, op->buf, op->len, MSG_NOSIGNAL,
                         (const struct sockaddr *)&((send_op_t *)op)->to.ss,
                         ((send_op_t *)op)->to.len));
  while (n < 0 && errno == EINTR);
  op_leave(op);
  if (n >= 0)
    op_finish_int(s, op, (intptr_t)op->len, 0);
  else if (transient(errno))
    s->writable = false;
  else
    op_finish_int(s, op, 0, io_err(errno));
}

int weft_socket_udp_recv(weft_socket_t *sock, void *buf, size_t len,
                         weft_addr_t *from, weft_future_t **out) {
  int rc = check_sock(sock);
  if (rc != 0)
    return rc;
  if (out == NULL || buf == NULL || len == 0 || sock->kind != SK_DGRAM)
    return WEFT_EINVAL;
  net_op_t *op = op_new(sock, OP_RECV, buf, len);
  if (op == NULL)
    return WEFT_ENOMEM;
  op->from = from;
  *out = op_queue(sock, op);
  return 0;
}

int weft_socket_udp_send(weft_socket_t *sock, const void *buf, size_t len,
                         const weft_addr_t *to, weft_future_t **out) {
  int rc = check_sock(sock);
  if (rc != 0)
    return rc;
  if (out == NULL || (buf == NULL && len != 0) || !weft__addr_ok(to) ||
      sock->kind != SK_DGRAM)
    return WEFT_EINVAL;
  net_op_t *op = op_new(sock, OP_SEND, (void *)buf, len);
  if (op == NULL)
    return WEFT_ENOMEM;
  ((send_op_t *)op)->to = *to;
  *out = op_queue(sock, op);
  return 0;
}
