/* SPDX-License-Identifier: MIT */
/* bench/net_uring.c: plain liburing echo server for `bench/run.sh net`, the
 * io_uring floor: one ring set up for a single thread (SINGLE_ISSUER,
 * DEFER_TASKRUN: completions are run only when this thread waits), one
 * multishot accept straight into the ring's file table (direct descriptors:
 * no file reference taken per operation), one multishot recv per
 * connection reading into a ring of provided buffers, a send straight from
 * the buffer the bytes came in, the buffer handed back when the send
 * completes, and one io_uring_submit_and_wait() per batch of completions.
 * A short send sends the rest from the same buffer. Accepted sockets inherit
 * TCP_NODELAY from the listener (a direct descriptor has no fd for
 * setsockopt). Usage and output: net_server.h. */
#include "net_server.h"

#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
  ENTRIES = 4096, /* submission queue; completions: 4x */
  NBUF = 4096,    /* provided buffers (a power of two) */
  BUF = 2048,     /* bytes each: messages are 64 */
  BGID = 1,       /* their group */
  MAXFD = 1 << 14 /* direct descriptors: the most connections */
};

enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

/* user_data: the op in bits 0-7, the direct descriptor in 8-31, the buffer id in 32-47,
 * the send's offset in 48-63 (a message is at most BUF bytes). */
static uint64_t ud(unsigned op, int fd, unsigned bid, unsigned off) {
  return op | (uint64_t)fd << 8 | (uint64_t)bid << 32 | (uint64_t)off << 48;
}

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned short sent_len[NBUF]; /* bytes the buffer's send must send */

static struct io_uring_sqe *sqe_get(void) {
  struct io_uring_sqe *sqe;
  while ((sqe = io_uring_get_sqe(&ring)) == NULL)
    io_uring_submit(&ring); /* full: hand the batch over, take a slot */
  return sqe;
}

static void arm_accept(int lfd) {
  struct io_uring_sqe *sqe = sqe_get();
  io_uring_prep_multishot_accept_direct(sqe, lfd, NULL, NULL, 0);
  io_uring_sqe_set_data64(sqe, ud(OP_ACCEPT, lfd, 0, 0));
}

static void arm_recv(int fd) {
  struct io_uring_sqe *sqe = sqe_get();
  io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT | IOSQE_FIXED_FILE;
  sqe->buf_group = BGID;
  io_uring_sqe_set_data64(sqe, ud(OP_RECV, fd, 0, 0));
}

static void send_from(int fd, unsigned bid, unsigned off) {
  struct io_uring_sqe *sqe = sqe_get();
  io_uring_prep_send(sqe, fd, bufs + (size_t)bid * BUF + off,
                     sent_len[bid] - off, MSG_NOSIGNAL);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, ud(OP_SEND, fd, bid, off));
}

static void buf_return(unsigned bid) {
  io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF, BUF, (unsigned short)bid,
                        io_uring_buf_ring_mask(NBUF), 0);
  io_uring_buf_ring_advance(br, 1);
}

/* Connections whose multishot recv is still armed or whose send is in
 * flight: a connection is closed once its recv ended and no send is out. */
static unsigned char recv_on[MAXFD];
static unsigned sends_out[MAXFD];

/* Returns 1 when the last connection closed (the run is over). */
static int maybe_close(int fd) {
  if (recv_on[fd] || sends_out[fd] != 0)
    return 0;
  struct io_uring_sqe *sqe = sqe_get();
  io_uring_prep_close_direct(sqe, (unsigned)fd);
  io_uring_sqe_set_data64(sqe, 0); /* no completion wanted */
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  return w_closed();
}

int main(int argc, char **argv) {
  w_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  int lfd = listen_local(), one = 1;
  if (setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    die("setsockopt");

  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_CQSIZE;
  p.cq_entries = 4 * ENTRIES;
  int rc = io_uring_queue_init_params(ENTRIES, &ring, &p);
  if (rc == -EINVAL) { /* a kernel before 6.1: the plain ring */
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 4 * ENTRIES;
    rc = io_uring_queue_init_params(ENTRIES, &ring, &p);
  }
  if (rc < 0) {
    errno = -rc;
    die("io_uring_queue_init_params");
  }
  /* the buffer ring by hand: liburing 2.3 (Debian 12) has no
   * io_uring_setup_buf_ring() */
  struct rlimit rl; /* the table counts against the open-file limit */
  unsigned nfiles = MAXFD;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < nfiles + 64)
    nfiles = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
  if ((rc = io_uring_register_files_sparse(&ring, nfiles)) < 0) {
    errno = -rc;
    die("io_uring_register_files_sparse");
  }
  br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED)
    die("mmap");
  io_uring_buf_ring_init(br);
  struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br,
                                 .ring_entries = NBUF,
                                 .bgid = BGID};
  if ((rc = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
    errno = -rc;
    die("io_uring_register_buf_ring");
  }
  if ((bufs = aligned_alloc(4096, (size_t)NBUF * BUF)) == NULL)
    die("aligned_alloc");
  for (unsigned i = 0; i < NBUF; i++)
    io_uring_buf_ring_add(br, bufs + (size_t)i * BUF, BUF, (unsigned short)i,
                          io_uring_buf_ring_mask(NBUF), (int)i);
  io_uring_buf_ring_advance(br, NBUF);
  arm_accept(lfd);

  for (;;) {
    rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EBUSY) {
      errno = -rc;
      die("io_uring_submit_and_wait");
    }
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int done = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      seen++;
      uint64_t d = cqe->user_data;
      int fd = (int)(d >> 8 & 0xffffff), res = cqe->res;
      unsigned bid = (unsigned)(d >> 32 & 0xffff), off = (unsigned)(d >> 48);
      bool more = cqe->flags & IORING_CQE_F_MORE;
      switch (d & 0xff) {
      case 0: /* a close that failed */
        errno = -res;
        die("close");
        break;
      case OP_ACCEPT:
        if (res >= 0) {
          recv_on[res] = 1;
          arm_recv(res);
          w_accepted();
        } else if (res != -ECONNABORTED &&
                   res != -EINTR) { /* -ENFILE: table full */
          errno = -res;
          die("accept");
        }
        if (!more)
          arm_accept(lfd);
        break;
      case OP_RECV:
        if (res > 0) {
          bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
          sent_len[bid] = (unsigned short)res;
          sends_out[fd]++;
          send_from(fd, bid, 0);
          if (!more)
            arm_recv(fd); /* the kernel ended the multishot: again */
        } else if (res == -ENOBUFS) {
          arm_recv(fd);     /* every buffer in use: they come back with sends */
        } else if (!more) { /* end of stream or an error */
          recv_on[fd] = 0;
          done |= maybe_close(fd);
        }
        break;
      case OP_SEND:
        if (res > 0)
          w_echoed((size_t)res);
        if (res > 0 && off + (unsigned)res < sent_len[bid]) {
          send_from(fd, bid, off + (unsigned)res); /* a short send */
          break;
        }
        buf_return(bid);
        sends_out[fd]--;
        done |= maybe_close(fd);
        break;
      }
    }
    io_uring_cq_advance(&ring, seen);
    if (done)
      return 0;
  }
}
