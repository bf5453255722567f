# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # the pins and net_secs: the caller's
# bench/common.sh: helpers sourced by run.sh and ab_net.sh. net_once needs
# $out (where bench_net_client is), net_secs, and the arrays net_pin0 and
# net_pin1 (commands that pin the server and the client, or empty).

# For a tool's usage: print its header, lines $1 to $2 of script $3
# without the comment marks, on stderr, and exit 2.
usage_exit() { sed -n "$1,$2p" "$3" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# For the net tools: exit 2 unless $out holds the suite's client ($1: the
# tool's name, for the message).
need_net_client() {
  [ -x "$out/bench_net_client" ] ||
    { echo "$1: $out/bench_net_client missing: run bench/run.sh net first" >&2; exit 2; }
}

# The median of the numbers on stdin (exit 1 when there are none).
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) exit 1; m=int((NR+1)/2); print (NR%2)?v[m]:(v[m]+v[m+1])/2}'; }

# One echo run of the net suite: "<server> <conns>" (on core 0) prints its
# port, the shared client (on core 1) runs its round trips, the server exits
# after the last close and prints its window. Prints "<rps> <cpu_us per round
# trip>"; any failure or timeout prints why on stderr and returns 1.
net_msg=64
net_once() { # server-binary, conns
  local srv=$1 n=$2 tmp port="" pid i rc client res
  tmp=$(mktemp)
  "${net_pin0[@]}" "$srv" "$n" >"$tmp" &
  pid=$!
  for ((i = 0; i < 100; i++)); do # up to 10 s for the port line
    port=$(awk '$1 == "port" {print $2; exit}' "$tmp")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$tmp"
    echo "net: $srv $n printed no port line" >&2; return 1
  fi
  rc=0
  client=$("${net_pin1[@]}" "$out/bench_net_client" "$port" "$n" "$net_secs" "$net_msg") || rc=$?
  for ((i = 0; i < 100; i++)); do # up to 10 s for the server to finish
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$tmp"
    echo "net: $srv $n still running 10 s after the client (client exit $rc): killed" >&2
    return 1
  fi
  wait "$pid" || { echo "net: $srv $n exited with status $?" >&2; rc=1; }
  if [ "$rc" -ne 0 ] || [[ "$client" != "rps "* ]]; then
    rm -f "$tmp"; echo "net: client against $srv $n failed (exit $rc)" >&2; return 1
  fi
  res=$(awk -v rps="${client#rps }" -v msg="$net_msg" \
    '$1 == "cpu_us" && $4 > 0 {printf "%s %.4f\n", rps, $2 / ($4 / msg)}' "$tmp")
  rm -f "$tmp"
  [ -n "$res" ] || { echo "net: $srv $n printed no cpu_us line (or echoed nothing)" >&2; return 1; }
  echo "$res"
}
