#!/bin/bash
# SPDX-License-Identifier: MIT
# bench/ab_net.sh: compare echo servers (weft at two commits, a peer, an
# experiment) on the net suite's load, round by round.
#   bench/ab_net.sh <conns> <rounds> <server> <server>...
# A server is any program with the net suite's interface (net_server.h):
# "<server> <conns>" listens on 127.0.0.1, prints "port N", and after the
# last close "cpu_us <cpu> bytes <echoed>". Each round runs every server
# once, in the order given, with the suite's client, pinning and message
# size (BENCH_NET_SECS seconds each, default 1). Prints, for each server,
# the medians of its CPU per round trip and round trips per second, and the
# median of the per-round ratios of the first server's CPU to its own
# (above 1: it used less CPU than the first). Build the client first:
# bench/run.sh net (or BENCH_BUILD, as run.sh).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh disable=SC2034 # net_once reads these
. "$here/common.sh" # usage_exit, need_net_client, median, net_once
out=${BENCH_BUILD:-$(dirname "$here")/build/bench}
[ $# -ge 3 ] || usage_exit 3 14 "$0"
need_net_client ab_net
net_secs=${BENCH_NET_SECS:-1}
net_pin0=(); net_pin1=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  net_pin0=(taskset -c 0); net_pin1=(taskset -c 1)
fi
ulimit -Sn 4096 2>/dev/null || true
n=$1 rounds=$2
shift 2
declare -A cpu rps
for ((r = 0; r < rounds; r++)); do
  for ((k = 1; k <= $#; k++)); do
    v=$(net_once "${!k}" "$n") || exit 1
    rps[$k,$r]=${v% *}; cpu[$k,$r]=${v#* }
  done
done
for ((k = 1; k <= $#; k++)); do
  c=$(for ((r = 0; r < rounds; r++)); do echo "${cpu[$k,$r]}"; done | median)
  q=$(for ((r = 0; r < rounds; r++)); do echo "${rps[$k,$r]}"; done | median)
  p=$(for ((r = 0; r < rounds; r++)); do
        awk -v a="${cpu[1,$r]}" -v b="${cpu[$k,$r]}" 'BEGIN {print a / b}'
      done | median)
  printf 'c%s %s: cpu_us %.3f, rps %.0f, first/this cpu per round %.3f\n' \
    "$n" "${!k}" "$c" "$q" "$p"
done
