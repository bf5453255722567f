/* SPDX-License-Identifier: MIT */
/* loop/uring.c: the io_uring completion backend. It completes stream reads
 * (into a pool of its own buffers) and sends inside the loop's one wait,
 * and watches one fd (the readiness backend's) for readability; the loop
 * core stacks it on epoll (backend.c). Why and with what figures:
 * docs/design/net.md.
 *
 * - A recv picks a buffer from the pool (provided buffers), never the
 *   caller's: the kernel holds no caller memory while a read waits.
 * - A send is queued with MSG_DONTWAIT and handed over at the next
 *   io_uring_enter, the only call in which the kernel reads the caller's
 *   buffer. Around that call the completion's send_enter and send_leave
 *   run (the caller raises its guards there, as around a send()); a send
 *   whose send_enter offers nothing becomes a no-op.
 * - Setup needs Linux 6.1 (single issuer, deferred task work, provided
 *   buffer rings). Where it fails (an older kernel, a seccomp filter,
 *   io_uring_disabled) or WEFT_IO_URING=0 is in the environment, init
 *   fails and the loop goes without.
 * Loop thread only. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Kernels from 6.12 can wait for a batch with a bound on the wait. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

/* user_data of the ring's own requests; anything else is a completion. */
enum { TAG_WATCH = 1, TAG_CANCEL = 2 };
enum {
  BATCH_ARMED = 32,
  BATCH_WAIT_US = 20,
  SQ_ENTRIES = 512,
  CQ_ENTRIES = 4096,
  BUF_GROUP = 0,
  /* buffers of the sends of one io_uring_enter (sends_enter): a send
   * carries at most SEND_IOV writes of its socket */
  SEND_IOV = 64,
  IOV_ARENA = 512,
};

struct weft__ring {
  int fd;
  unsigned sq_mask, sq_entries, cq_mask;
  _Atomic unsigned *sq_head, *sq_tail, *cq_head, *cq_tail;
  unsigned *sq_array;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  unsigned sq_local;  /* our tail: SQEs filled so far */
  unsigned sq_pushed; /* published to the kernel (to_submit = the difference) */
  void *sq_map;       /* both rings (IORING_FEAT_SINGLE_MMAP) */
  size_t sq_map_len, sqes_len;
  /* provided buffers */
  struct io_uring_buf_ring *br;
  size_t br_len;
  char *bufs;
  size_t bufs_len;
  unsigned nbufs;  /* room in the ring (a power of two) */
  unsigned nadded; /* buffers made so far (grown on demand, up to nbufs) */
  uint16_t br_tail;
  /* the watched fd */
  bool ep_armed; /* a poll on it is in the ring */
  bool evfd; /* the loop's eventfd gets completions (weft_loop_backend_fd) */
  bool min_wait;  /* IORING_FEAT_MIN_TIMEOUT: batched waits (ur_poll) */
  unsigned armed; /* recvs and sends in the ring */
  /* sends in the SQ not yet handed over (their buffers are the callers':
   * see ur_send) */
  struct pending_send {
    weft__completion_t *c; /* NULL once made a NOP */
    unsigned seq;          /* its place in the SQ (sq_local when filled) */
    bool guarded;          /* send_enter said go */
  } pend[SQ_ENTRIES];
  unsigned *npend; /* the backend's `sends` */
  /* a send of several writes is a sendmsg of these (read by the kernel in
   * the call that takes the send; reused once no send is pending) */
  struct msghdr msgs[IOV_ARENA / 2];
  struct iovec iov[IOV_ARENA];
  unsigned nmsg, niov;
};

static int sys_setup(unsigned entries, struct io_uring_params *p) {
  return (int)WEFT__SYS("io_uring_setup",
                        syscall(__NR_io_uring_setup, entries, p));
}

static int sys_enter(int fd, unsigned submit, unsigned wait, unsigned flags,
                     const void *arg, size_t argsz) {
  return (int)WEFT__SYS("io_uring_enter",
                        syscall(__NR_io_uring_enter, fd, submit, wait, flags,
                                arg, argsz));
}

static int sys_register(int fd, unsigned op, const void *arg, unsigned n) {
  int rc;
  do /* (a signal while the kernel waits for the ring to go quiet) */
    rc = (int)WEFT__SYS("io_uring_register",
                        syscall(__NR_io_uring_register, fd, op, arg, n));
  while (rc < 0 && errno == EINTR);
  return rc;
}

static void ring_unmap(struct weft__ring *r) {
  if (r->bufs != NULL)
    munmap(r->bufs, r->bufs_len);
  if (r->br != NULL)
    munmap(r->br, r->br_len);
  if (r->sqes != NULL)
    munmap(r->sqes, r->sqes_len);
  if (r->sq_map != NULL)
    munmap(r->sq_map, r->sq_map_len);
}

static void *map(size_t len, int fd, off_t off) {
  void *p = WEFT__SYS_PTR("mmap", MAP_FAILED,
                          mmap(NULL, len, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_POPULATE, fd, off));
  return p == MAP_FAILED ? NULL : p;
}

static void *anon(size_t len) {
  void *p = WEFT__SYS_PTR("mmap", MAP_FAILED,
                          mmap(NULL, len, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  return p == MAP_FAILED ? NULL : p;
}

/* A buffer goes (back) into the pool; visible to the kernel at the next
 * publish (buf_publish). */
static void buf_add(struct weft__ring *r, unsigned bid) {
  struct io_uring_buf *b = &r->br->bufs[r->br_tail & (r->nbufs - 1)];
  b->addr = (uint64_t)(uintptr_t)(r->bufs + (size_t)bid * WEFT__CQ_BUF);
  b->len = WEFT__CQ_BUF;
  b->bid = (uint16_t)bid;
  r->br_tail++;
}

static void buf_publish(struct weft__ring *r) {
  atomic_store_explicit((_Atomic uint16_t *)&r->br->tail, r->br_tail,
                        memory_order_release);
}

/* n more buffers into the pool (as far as the ring has room). */
static void grow(struct weft__ring *r, unsigned n) {
  if (n > r->nbufs - r->nadded)
    n = r->nbufs - r->nadded;
  for (unsigned i = 0; i < n; i++)
    buf_add(r, r->nadded++);
  buf_publish(r);
}

static int ring_setup(struct weft__ring *r, unsigned nbufs, unsigned first) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  p.cq_entries = CQ_ENTRIES;
  r->fd = sys_setup(SQ_ENTRIES, &p);
  if (r->fd < 0)
    return WEFT_ENOSYS;
  if (!(p.features & IORING_FEAT_EXT_ARG) ||
      !(p.features & IORING_FEAT_NODROP) ||
      !(p.features & IORING_FEAT_SINGLE_MMAP))
    return WEFT_ENOSYS;
  size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  if (cq_len > r->sq_map_len)
    r->sq_map_len = cq_len;
  r->sq_map = map(r->sq_map_len, r->fd, IORING_OFF_SQ_RING);
  if (r->sq_map == NULL)
    return WEFT_ENOMEM;
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = map(r->sqes_len, r->fd, IORING_OFF_SQES);
  if (r->sqes == NULL)
    return WEFT_ENOMEM;
  char *sq = r->sq_map, *cq = r->sq_map;
  r->sq_head = (_Atomic unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (_Atomic unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_entries = p.sq_entries;
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (_Atomic unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (_Atomic unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->min_wait = (p.features & IORING_FEAT_MIN_TIMEOUT) != 0;
  r->sq_local = r->sq_pushed = atomic_load_explicit(r->sq_tail,
                                                    memory_order_relaxed);
  /* provided buffers: the ring of descriptors and the buffers behind it
   * (anonymous memory: pages cost only once the kernel writes them) */
  r->nbufs = nbufs;
  r->br_len = nbufs * sizeof(struct io_uring_buf);
  r->br = anon(r->br_len);
  r->bufs_len = (size_t)nbufs * WEFT__CQ_BUF;
  r->bufs = anon(r->bufs_len);
  if (r->br == NULL || r->bufs == NULL)
    return WEFT_ENOMEM;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)r->br;
  reg.ring_entries = nbufs;
  reg.bgid = BUF_GROUP;
  if (sys_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0)
    return WEFT_ENOSYS;
  grow(r, first);
  return 0;
}

/* Did the user turn the ring off (WEFT_IO_URING=0)? */
static bool ring_refused(void) {
  const char *v = getenv("WEFT_IO_URING");
  return v != NULL && strcmp(v, "0") == 0;
}

static int ur_init(weft__backend_t *b, unsigned max) {
  if (ring_refused())
    return WEFT_ENOSYS;
  struct weft__ring *r = weft__malloc(sizeof *r);
  if (r == NULL)
    return WEFT_ENOMEM;
  memset(r, 0, sizeof *r);
  r->fd = -1;
  /* To start, a buffer per event of a full batch (of the loop's: twice
   * ours) and as many again for recvs that complete while the batch runs;
   * a recv that finds none fails with ENOBUFS (its caller reads the plain
   * way) and the pool grows by as many again, up to four times that.
   * Powers of two, at most 2^15. */
  unsigned first = 64;
  while (first < 4 * max && first < 8192)
    first *= 2;
  int rc = ring_setup(r, 4 * first, first);
  if (rc != 0) {
    ring_unmap(r);
    if (r->fd >= 0)
      close(r->fd);
    weft__free(r, sizeof *r);
    return rc;
  }
  b->max = max;
  b->buf = r;
  b->sends = 0;
  r->npend = &b->sends;
  b->watch_ready = false;
  return 0;
}

/* Push the SQEs filled so far to the kernel's view of the tail. */
static void sq_publish(struct weft__ring *r) {
  if (r->sq_pushed != r->sq_local) {
    atomic_store_explicit(r->sq_tail, r->sq_local, memory_order_release);
    r->sq_pushed = r->sq_local;
  }
}

/* Sends about to be handed over: each carries the writes its socket has
 * queued by now (a sendmsg when there are several), their ops' guards go
 * up (a cancel from another thread now waits for the call to end), and a
 * send cancelled meanwhile becomes a NOP. */
static void sends_enter(struct weft__ring *r) {
  for (unsigned i = 0; i < *r->npend; i++) {
    struct pending_send *p = &r->pend[i];
    if (p->guarded || p->c == NULL)
      continue;
    struct iovec one, *iov = &one;
    unsigned max = IOV_ARENA - r->niov;
    if (max > SEND_IOV)
      max = SEND_IOV;
    if (max >= 2)
      iov = &r->iov[r->niov];
    else
      max = 1;       /* the arena is full: this send carries one write */
    WEFT__PERTURB(); /* a cancel may come before the guard goes up */
    unsigned n = p->c->ops->send_enter(p->c, iov, max);
    struct io_uring_sqe *sqe = &r->sqes[p->seq & r->sq_mask];
    if (__builtin_expect(n == 1, 1)) {
      p->guarded = true;
      sqe->addr = (uint64_t)(uintptr_t)iov[0].iov_base;
      sqe->len = (unsigned)iov[0].iov_len;
      continue;
    }
    if (n > 1) {
      struct msghdr *m = &r->msgs[r->nmsg++];
      memset(m, 0, sizeof *m);
      m->msg_iov = iov;
      m->msg_iovlen = n;
      r->niov += n;
      sqe->opcode = IORING_OP_SENDMSG;
      sqe->addr = (uint64_t)(uintptr_t)m;
      sqe->len = 1;
      p->guarded = true;
      continue;
    }
    /* a NOP with the send's user_data: its completion (res 0) tells the
     * socket the send is over, and runs its queue on */
    sqe->opcode = IORING_OP_NOP;
    sqe->flags = 0;
    sqe->msg_flags = 0;
    sqe->fd = -1;
    sqe->addr = 0;
    sqe->len = 0;
    p->c = NULL;
  }
}

/* After the call: a send it took has ended (MSG_DONTWAIT: the kernel
 * completed it inside the call, and holds nothing of the caller's), so
 * its guard comes down; one it did not take (the call failed first)
 * stays for the next. */
static void sends_leave(struct weft__ring *r) {
  unsigned head = atomic_load_explicit(r->sq_head, memory_order_acquire);
  unsigned keep = 0;
  for (unsigned i = 0; i < *r->npend; i++) {
    struct pending_send p = r->pend[i];
    if (p.c != NULL && (int)(head - p.seq) <= 0) {
      r->pend[keep++] = p; /* not taken yet */
      continue;
    }
    WEFT__PERTURB();
    if (p.c != NULL)
      p.c->ops->send_leave(p.c);
  }
  *r->npend = keep;
  if (keep == 0)
    r->nmsg = r->niov = 0; /* no send names the arena now */
}

/* Submit what is queued (and wait as asked); 0 or a negative errno. */
static int ring_submit(struct weft__ring *r, unsigned flags, unsigned wait,
                       const void *arg, size_t argsz) {
  if (*r->npend != 0)
    sends_enter(r);
  sq_publish(r);
  unsigned head = atomic_load_explicit(r->sq_head, memory_order_acquire);
  unsigned n = r->sq_local - head;
  WEFT__PERTURB(); /* guards up, the kernel not called yet */
  int rc = sys_enter(r->fd, n, wait, flags, arg, argsz);
  int e = errno;
  if (*r->npend != 0)
    sends_leave(r);
  return rc < 0 ? -e : 0;
}

static struct io_uring_sqe *sqe_get(struct weft__ring *r) {
  unsigned head = atomic_load_explicit(r->sq_head, memory_order_acquire);
  if (r->sq_local - head >= r->sq_entries) {
    (void)ring_submit(r, 0, 0, NULL, 0); /* full: hand them over first */
    head = atomic_load_explicit(r->sq_head, memory_order_acquire);
    if (r->sq_local - head >= r->sq_entries)
      return NULL;
  }
  unsigned i = r->sq_local & r->sq_mask;
  struct io_uring_sqe *sqe = &r->sqes[i];
  memset(sqe, 0, sizeof *sqe);
  r->sq_array[i] = i;
  r->sq_local++;
  return sqe;
}

/* After the last loop-thread use (all sockets closed): let every recv in
 * the kernel end before the buffers go. */
static void ur_fini(weft__backend_t *b) {
  struct weft__ring *r = b->buf;
  if (r->armed != 0) {
    struct io_uring_sqe *sqe = sqe_get(r);
    if (sqe != NULL) {
      sqe->opcode = IORING_OP_ASYNC_CANCEL;
      sqe->fd = -1;
      sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
      sqe->user_data = TAG_CANCEL;
    }
  }
  (void)ring_submit(r, IORING_ENTER_GETEVENTS, 0, NULL, 0);
  close(r->fd); /* the kernel ends what is left before the ring goes */
  ring_unmap(r);
  weft__free(r, sizeof *r);
  b->buf = NULL;
}

/* One kernel completion: the watched fd's poll (*watch set), a cancel's
 * (nothing), or a recv's or send's, handed to its completion object: the
 * watcher it names, for an event of the batch, or NULL. */
static weft_io_t *cqe_take(struct weft__ring *r, const struct io_uring_cqe *e,
                           bool *watch) {
  if (e->user_data == TAG_WATCH) {
    *watch = true;
    r->ep_armed = false;
    return NULL;
  }
  if (e->user_data == TAG_CANCEL)
    return NULL;
  r->armed--;
  weft__completion_t *c = (weft__completion_t *)(uintptr_t)e->user_data;
  return c->ops->done(c, e->res,
                      e->flags & IORING_CQE_F_BUFFER
                          ? (int)(e->flags >> IORING_CQE_BUFFER_SHIFT)
                          : -1);
}

static unsigned cq_ready(struct weft__ring *r) {
  return atomic_load_explicit(r->cq_tail, memory_order_acquire) -
         atomic_load_explicit(r->cq_head, memory_order_relaxed);
}

/* Arm the one-shot poll on the watched fd if it is not in the ring; no
 * room for it: report the fd as ready, so the core looks at it anyway. */
static void watch_arm(weft__backend_t *b, struct weft__ring *r) {
  if (r->ep_armed)
    return;
  struct io_uring_sqe *sqe = sqe_get(r);
  if (sqe == NULL) {
    b->watch_ready = true;
    return;
  }
  sqe->opcode = IORING_OP_POLL_ADD;
  sqe->fd = b->watch_fd;
  sqe->poll32_events = POLLIN;
  sqe->user_data = TAG_WATCH;
  r->ep_armed = true;
}

/* With many reads waiting (BATCH_ARMED), wait for a batch of a quarter of
 * them (at most cap), but for at most BATCH_WAIT_US: one wake-up for many
 * reads, for at most that much more latency (docs/design/net.md). */
static unsigned batch_wait(const struct weft__ring *r, int cap,
                           struct io_uring_getevents_arg *arg,
                           unsigned *flags) {
  if (!r->min_wait || r->armed < BATCH_ARMED)
    return 1;
  arg->pad = BATCH_WAIT_US; /* min_wait_usec */
  *flags |= IORING_ENTER_EXT_ARG;
  return r->armed / 4 < (unsigned)cap ? r->armed / 4 : (unsigned)cap;
}

/* Hand over what is queued and wait up to timeout_ns for a completion. */
static int ur_enter(struct weft__ring *r, int64_t timeout_ns, int cap) {
  struct __kernel_timespec ts;
  struct io_uring_getevents_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.sigmask_sz = _NSIG / 8;
  unsigned flags = IORING_ENTER_GETEVENTS;
  if (timeout_ns > 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    arg.ts = (uint64_t)(uintptr_t)&ts;
    flags |= IORING_ENTER_EXT_ARG;
  }
  unsigned wait = timeout_ns != 0 ? batch_wait(r, cap, &arg, &flags) : 0;
  int rc = ring_submit(r, flags, wait,
                       flags & IORING_ENTER_EXT_ARG ? &arg : NULL,
                       flags & IORING_ENTER_EXT_ARG ? sizeof arg : 0);
  if (rc != 0 && rc != -EINTR && rc != -ETIME && rc != -EBUSY && rc != -EAGAIN)
    return weft_error_from_errno(-rc);
  return 0;
}

WEFT__HOT static int ur_poll(weft__backend_t *b, int64_t timeout_ns,
                             weft__event_t *out, int cap) {
  struct weft__ring *r = b->buf;
  watch_arm(b, r);
  if (b->watch_ready || cq_ready(r) != 0 || !r->ep_armed)
    timeout_ns = 0;
  int rc = ur_enter(r, timeout_ns, cap);
  if (rc != 0)
    return rc;
  int n = 0;
  bool watch = false;
  unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
  unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
  while (head != tail && n < cap) {
    weft_io_t *io = cqe_take(r, &r->cqes[head++ & r->cq_mask], &watch);
    if (io != NULL) {
      out[n].data = io;
      out[n].events = WEFT__DONE;
      n++;
    }
  }
  atomic_store_explicit(r->cq_head, head, memory_order_release);
  if (watch)
    b->watch_ready = true;
  return n;
}

static bool ur_send(weft__backend_t *b, weft__completion_t *c, int fd,
                    const void *buf, size_t len) {
  struct weft__ring *r = b->buf;
  struct io_uring_sqe *sqe = sqe_get(r);
  if (sqe == NULL)
    return false;
  sqe->opcode = IORING_OP_SEND;
  sqe->fd = fd;
  sqe->addr = (uint64_t)(uintptr_t)buf;
  sqe->len = len > WEFT__SEND_MAX ? WEFT__SEND_MAX : (unsigned)len;
  /* MSG_DONTWAIT: a socket that cannot take it now fails the send with
   * EAGAIN inside the call, never keeps it (and the buffer) for later */
  sqe->msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT;
  sqe->user_data = (uint64_t)(uintptr_t)c;
  struct pending_send *p = &r->pend[(*r->npend)++];
  p->c = c;
  p->seq = r->sq_local - 1;
  p->guarded = false;
  r->armed++;
  return true;
}

static bool ur_queued(const weft__backend_t *b) {
  const struct weft__ring *r = b->buf;
  return r->sq_local != atomic_load_explicit(r->sq_head, memory_order_acquire);
}

static bool ur_recv(weft__backend_t *b, weft__completion_t *c, int fd) {
  struct weft__ring *r = b->buf;
  struct io_uring_sqe *sqe = sqe_get(r);
  if (sqe == NULL)
    return false;
  sqe->opcode = IORING_OP_RECV;
  sqe->fd = fd;
  sqe->len = WEFT__CQ_BUF;
  sqe->flags = IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUF_GROUP;
  sqe->user_data = (uint64_t)(uintptr_t)c;
  r->armed++;
  return true;
}

/* A file request (loop/fs): read or write at an explicit offset, sync,
 * open, close or statx. The kernel completes what the page cache serves
 * inside the next wait, and punts the rest to its own workers. */
static bool ur_file(weft__backend_t *b, weft__completion_t *c,
                    const weft__file_req_t *q) {
  struct weft__ring *r = b->buf;
  struct io_uring_sqe *sqe = sqe_get(r);
  if (sqe == NULL)
    return false;
  static const uint8_t opcodes[] = {[WEFT__FREQ_READ] = IORING_OP_READ,
                                    [WEFT__FREQ_WRITE] = IORING_OP_WRITE,
                                    [WEFT__FREQ_FSYNC] = IORING_OP_FSYNC,
                                    [WEFT__FREQ_FDATASYNC] = IORING_OP_FSYNC,
                                    [WEFT__FREQ_OPEN] = IORING_OP_OPENAT,
                                    [WEFT__FREQ_CLOSE] = IORING_OP_CLOSE,
                                    [WEFT__FREQ_STATX] = IORING_OP_STATX};
  sqe->opcode = opcodes[q->kind];
  sqe->fd = q->fd;
  sqe->user_data = (uint64_t)(uintptr_t)c;
  switch (q->kind) {
  case WEFT__FREQ_READ:
  case WEFT__FREQ_WRITE:
    sqe->addr = (uint64_t)(uintptr_t)q->buf;
    sqe->len = q->len;
    sqe->off = q->off;
    break;
  case WEFT__FREQ_FDATASYNC:
    sqe->fsync_flags = IORING_FSYNC_DATASYNC;
    break;
  case WEFT__FREQ_OPEN:
    sqe->fd = AT_FDCWD;
    sqe->addr = (uint64_t)(uintptr_t)q->path;
    sqe->len = q->mode;
    sqe->open_flags = (uint32_t)q->flags;
    break;
  case WEFT__FREQ_STATX:
    sqe->fd = q->fd >= 0 ? q->fd : AT_FDCWD;
    sqe->addr = (uint64_t)(uintptr_t)(q->fd >= 0 ? "" : q->path);
    sqe->len = STATX_BASIC_STATS;
    sqe->off = (uint64_t)(uintptr_t)q->stx;
    sqe->statx_flags = q->fd >= 0 ? AT_EMPTY_PATH : 0;
    break;
  default:
    break;
  }
  r->armed++;
  return true;
}

static void ur_cancel(weft__backend_t *b, weft__completion_t *c) {
  struct weft__ring *r = b->buf;
  struct io_uring_sqe *sqe = sqe_get(r); /* (full: it submitted, retried) */
  if (sqe == NULL)
    return; /* the recv ends when the ring goes (loop close) */
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = (uint64_t)(uintptr_t)c;
  sqe->user_data = TAG_CANCEL;
  /* Hand both over now: the caller closes the fd next, and a recv still
   * in the SQ names the fd by number, which the next socket may get. */
  (void)ring_submit(r, 0, 0, NULL, 0);
}

static void ur_grow(weft__backend_t *b) {
  struct weft__ring *r = b->buf;
  grow(r, r->nbufs / 4);
}

static const char *ur_buf_get(const weft__backend_t *b, unsigned bid) {
  const struct weft__ring *r = b->buf;
  return r->bufs + (size_t)bid * WEFT__CQ_BUF;
}

static void ur_buf_put(weft__backend_t *b, unsigned bid) {
  buf_add(b->buf, bid);
  buf_publish(b->buf);
}

static int ur_notify_fd(weft__backend_t *b, int fd) {
  struct weft__ring *r = b->buf;
  if (r->evfd)
    return 0;
  if (sys_register(r->fd, IORING_REGISTER_EVENTFD, &fd, 1) != 0)
    return weft_error_from_errno(errno);
  r->evfd = true;
  return 0;
}

/* Complete what the kernel finished (for loop close: recvs cancelled at
 * their handles' close report here, and free what they hold). */
static void ur_drain(weft__backend_t *b) {
  struct weft__ring *r = b->buf;
  for (int i = 0; i < 1000 && r->armed != 0; i++) {
    struct __kernel_timespec ts = {0, 1000000};
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.sigmask_sz = _NSIG / 8;
    arg.ts = (uint64_t)(uintptr_t)&ts;
    (void)ring_submit(r, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, 1, &arg,
                      sizeof arg);
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    unsigned tail = atomic_load_explicit(r->cq_tail, memory_order_acquire);
    bool watch = false; /* (the loop is closing: nobody harvests) */
    for (; head != tail; head++)
      (void)cqe_take(r, &r->cqes[head & r->cq_mask], &watch);
    atomic_store_explicit(r->cq_head, head, memory_order_release);
  }
}

const weft__backend_ops_t weft__uring_backend = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .poll = ur_poll,
    .recv = ur_recv,
    .send = ur_send,
    .file = ur_file,
    .cancel = ur_cancel,
    .queued = ur_queued,
    .buf_get = ur_buf_get,
    .buf_put = ur_buf_put,
    .grow = ur_grow,
    .notify_fd = ur_notify_fd,
    .drain = ur_drain,
};
