#!/bin/bash
# SPDX-License-Identifier: MIT
# bench/pair_net.sh: compare two echo servers at the same moment.
#   bench/pair_net.sh <conns> <runs> <server A> <server B>
# Each run starts A and B together, both pinned to core 0, and one client
# for each (the suite's client, message size and <conns>), both on core 1,
# for BENCH_NET_SECS seconds (default 3). Both servers then live through
# the same machine state, which on these VMs changes from minute to minute
# (a run at 8 us per round trip, the next at 12): one run's B/A, the ratio
# of their CPU per round trip, moves by about 1% where ab_net.sh's ratios
# of runs made one after the other move by 2-5%. Prints each run's CPU per
# round trip and B/A, then the median B/A (below 1: B used less CPU).
# The load differs from the suite's (two servers share a core and its
# caches), so use it to tell which of two builds costs less, not for the
# suite's figures; and not for a server that spins while idle (weft with
# a few connections): its spin takes the core from the other one.
# Build the client first: bench/run.sh net (or BENCH_BUILD, as run.sh).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/common.sh
. "$here/common.sh" # usage_exit, need_net_client, median
out=${BENCH_BUILD:-$(dirname "$here")/build/bench}
[ $# -eq 4 ] || usage_exit 3 17 "$0"
need_net_client pair_net
n=$1 runs=$2 a=$3 b=$4
secs=${BENCH_NET_SECS:-3}
ulimit -Sn 8192 2>/dev/null || ulimit -Sn 4096 2>/dev/null || true
pin0=(); pin1=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin0=(taskset -c 0); pin1=(taskset -c 1)
fi

port_of() { awk '$1 == "port" {print $2; exit}' "$1"; }
cpu_of() { awk -v msg=64 '$1 == "cpu_us" && $4 > 0 {printf "%.4f", $2 / ($4 / msg)}' "$1"; }

ratios=$(mktemp)
trap 'rm -f "$ratios"' EXIT
for ((r = 0; r < runs; r++)); do
  ta=$(mktemp); tb=$(mktemp)
  "${pin0[@]}" "$a" "$n" >"$ta" & pa=$!
  "${pin0[@]}" "$b" "$n" >"$tb" & pb=$!
  pta="" ptb=""
  for ((i = 0; i < 100; i++)); do # up to 10 s for both port lines
    pta=$(port_of "$ta"); ptb=$(port_of "$tb")
    [ -n "$pta" ] && [ -n "$ptb" ] && break
    sleep 0.1
  done
  if [ -z "$pta" ] || [ -z "$ptb" ]; then
    kill "$pa" "$pb" 2>/dev/null; wait 2>/dev/null; rm -f "$ta" "$tb"
    echo "pair_net: a server printed no port line" >&2; exit 1
  fi
  "${pin1[@]}" "$out/bench_net_client" "$pta" "$n" "$secs" 64 >/dev/null & ca=$!
  "${pin1[@]}" "$out/bench_net_client" "$ptb" "$n" "$secs" 64 >/dev/null & cb=$!
  ok=1
  for p in "$ca" "$cb" "$pa" "$pb"; do wait "$p" || ok=0; done
  xa=$(cpu_of "$ta"); xb=$(cpu_of "$tb")
  rm -f "$ta" "$tb"
  if [ "$ok" -ne 1 ] || [ -z "$xa" ] || [ -z "$xb" ]; then
    echo "pair_net: run $r failed" >&2; exit 1
  fi
  q=$(awk -v a="$xa" -v b="$xb" 'BEGIN {printf "%.4f", b / a}')
  echo "run $r: A $xa us, B $xb us, B/A $q"
  echo "$q" >>"$ratios"
done
echo "c$n median B/A: $(median <"$ratios")"
