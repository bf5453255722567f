#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/callgrind_echo.sh [REV...]: the instructions weft's echo server
# (bench_net_weft, as in the net suite) spends per round trip, counted by
# valgrind --tool=callgrind, for each revision (default: the work tree), on
# the epoll backend and on the io_uring backend, with 1 and 100
# connections. Each figure is (Ir2 - Ir1) / (n2 - n1) from two runs of n1
# and n2 round trips of 64 bytes, so start-up and shutdown cancel out.
# Prints one line per figure, in the bench format:
#   callgrind.echo_c<conns>.<backend>.<rev>: <value> Ir/rt
# and, with two revisions BASE HEAD, for each figure the ratio head/base:
#   # ratio callgrind.echo_c<conns>.<backend> head/base (HEAD/BASE): <r>x
# Each REV is built in a temporary `git worktree` under the build folder,
# removed afterwards. Counts are user-space instructions only: the kernel's
# work (syscalls, io_uring's) is not in them. The loop's adaptive spin is
# counted when it spins (under valgrind it soon finds its CPU shared and
# backs off), and batch sizes at c100 follow timing: bench/README.md says
# how far repeated runs spread.
# Environment: CG_BUILD (build folder, default build/callgrind), CG_RT1 and
# CG_RT2 (round trips of the two runs, default 20000 and 40000), CG_CONNS
# (default "1 100"), CG_BACKENDS (default "epoll io_uring").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${CG_BUILD:-$root/build/callgrind}
rt1=${CG_RT1:-20000} rt2=${CG_RT2:-40000}
read -r -a conns <<<"${CG_CONNS:-1 100}"
read -r -a backends <<<"${CG_BACKENDS:-epoll io_uring}"

case "${1:-}" in
  -h | --help) sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "usage: $0 [REV...]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null ||
  { echo "callgrind_echo: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
((rt2 > rt1 && rt1 > 0)) || { echo "callgrind_echo: need 0 < CG_RT1 < CG_RT2" >&2; exit 2; }
for r in "$@"; do
  git -C "$root" rev-parse --verify --quiet "$r^{commit}" >/dev/null ||
    { echo "callgrind_echo: $r is not a commit" >&2; exit 2; }
done
mkdir -p "$build"

# The client: <port> <conns> <round trips>. Blocking sockets; each round
# sends one 64-byte message on every connection, then reads every echo
# back and checks it, until the round trips are done; then closes them all
# (the server exits after the last close).
client=$build/cg_client
cat >"$build/cg_client.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum { MSG = 64 };

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 4)
    return 2;
  int port = atoi(argv[1]), nc = atoi(argv[2]);
  long n = atol(argv[3]);
  int *fd = calloc((size_t)nc, sizeof *fd);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 60}; /* a stuck server fails the run */
  for (int i = 0; i < nc; i++) {
    int one = 1;
    if ((fd[i] = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(fd[i], (struct sockaddr *)&a, sizeof a) != 0 ||
        setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(fd[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
      die("connect");
  }
  unsigned char out[MSG], in[MSG];
  for (long done = 0, round = 0; done < n; round++) {
    int k = n - done < nc ? (int)(n - done) : nc;
    for (int i = 0; i < k; i++) {
      memset(out, (int)((round + i) & 0xff), MSG);
      if (send(fd[i], out, MSG, MSG_NOSIGNAL) != MSG)
        die("send");
    }
    for (int i = 0; i < k; i++) {
      memset(out, (int)((round + i) & 0xff), MSG);
      for (size_t got = 0; got < MSG;) {
        ssize_t r = recv(fd[i], in + got, MSG - got, 0);
        if (r <= 0)
          die("recv");
        got += (size_t)r;
      }
      if (memcmp(in, out, MSG) != 0) {
        fprintf(stderr, "cg_client: echo mismatch\n");
        return 1;
      }
    }
    done += k;
  }
  for (int i = 0; i < nc; i++)
    close(fd[i]);
  return 0;
}
EOF
gcc -O2 -Wall -o "$client" "$build/cg_client.c" ||
  { echo "callgrind_echo: gcc failed on the client" >&2; exit 2; }

# Build bench_net_weft from source tree $1 in folder $2.
build_server() {
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_SAMPLES=OFF -DWEFT_BUILD_BENCH=ON >/dev/null &&
    cmake --build "$2" -j2 --target bench_net_weft >/dev/null
}

# Total Ir of one server run under callgrind: binary, backend, conns, rts.
run_ir() {
  local bin=$1 be=$2 nc=$3 n=$4 tmp port="" pid i
  tmp=$(mktemp -d "$build/run.XXXXXX")
  local envs=(env -u WEFT_IO_URING)
  [ "$be" = epoll ] && envs=(env WEFT_IO_URING=0)
  "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
    "$bin" "$nc" >"$tmp/server.txt" 2>"$tmp/valgrind.txt" &
  pid=$!
  for ((i = 0; i < 300; i++)); do # up to 30 s for the port line
    port=$(awk '$1 == "port" {print $2; exit}' "$tmp/server.txt")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    echo "callgrind_echo: $bin printed no port line" >&2; cat "$tmp/valgrind.txt" >&2
    rm -rf "$tmp"; return 1
  fi
  if ! timeout 900 "$client" "$port" "$nc" "$n"; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    echo "callgrind_echo: the client failed against $bin ($be, c$nc)" >&2
    rm -rf "$tmp"; return 1
  fi
  wait "$pid" || { echo "callgrind_echo: $bin exited with $? ($be, c$nc)" >&2; rm -rf "$tmp"; return 1; }
  awk '$1 == "summary:" {print $2}' "$tmp/cg.out"
  rm -rf "$tmp"
}

declare -A value
labels=()
measure() { # label, binary
  local label=$1 bin=$2 be nc a b
  labels+=("$label")
  for be in "${backends[@]}"; do
    if [ "$be" = io_uring ] && [ "$(env -u WEFT_IO_URING "$bin" backend)" != io_uring ]; then
      echo "# skipped: callgrind.echo.io_uring.$label (the loop has no ring here)"
      continue
    fi
    for nc in "${conns[@]}"; do
      a=$(run_ir "$bin" "$be" "$nc" "$rt1") || exit 1
      b=$(run_ir "$bin" "$be" "$nc" "$rt2") || exit 1
      value[$nc.$be.$label]=$(awk -v a="$a" -v b="$b" -v n1="$rt1" -v n2="$rt2" \
        'BEGIN {printf "%.0f", (b - a) / (n2 - n1)}')
      echo "callgrind.echo_c$nc.$be.$label: ${value[$nc.$be.$label]} Ir/rt"
    done
  done
}

echo "# callgrind Ir per echo round trip: (Ir($rt2) - Ir($rt1)) / $((rt2 - rt1)) round trips of 64 bytes"
if (($# == 0)); then
  label=$(git -C "$root" rev-parse --short=7 HEAD)
  git -C "$root" diff --quiet HEAD -- || label+=-dirty
  build_server "$root" "$build/worktree" || { echo "callgrind_echo: build failed" >&2; exit 2; }
  measure "$label" "$build/worktree/bench/bench_net_weft"
else
  for r in "$@"; do
    sha=$(git -C "$root" rev-parse --short=7 "$r^{commit}")
    src=$build/src-$sha
    git -C "$root" worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git -C "$root" worktree add --detach --quiet "$src" "$sha"
    if ! build_server "$src" "$build/build-$sha"; then
      git -C "$root" worktree remove --force "$src"
      echo "callgrind_echo: build of $sha failed" >&2; exit 2
    fi
    git -C "$root" worktree remove --force "$src"
    measure "$sha" "$build/build-$sha/bench/bench_net_weft"
  done
fi

if ((${#labels[@]} == 2)); then
  for be in "${backends[@]}"; do
    for nc in "${conns[@]}"; do
      base=${value[$nc.$be.${labels[0]}]:-} head=${value[$nc.$be.${labels[1]}]:-}
      if [ -z "$base" ] || [ -z "$head" ]; then continue; fi
      awk -v a="$base" -v b="$head" -v k="callgrind.echo_c$nc.$be" -v l="${labels[1]}/${labels[0]}" \
        'BEGIN {printf "# ratio %s head/base (%s): %.3fx\n", k, l, b / a}'
    done
  done
fi
