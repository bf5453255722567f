#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/soak.sh [SECONDS] [CLIENTS]: the soak (not part of CI). Builds
# echo_server and chat_server (RelWithDebInfo, in build/soak) and
# scripts/soak_client.c, then for each server: starts it on 127.0.0.1, runs
# CLIENTS concurrent clients against it for SECONDS (default 60, 200) with
# requests, resets, half-closes, slow readers, idle clients and reconnect
# churn mixed in, prints counters and the server's RSS and fds every few
# seconds, then a verdict; finally stops the server with SIGTERM, which must
# exit 0. Exit status 1 if any verdict failed.
#
# Environment: SOAK_SEED (default 1), SOAK_SERVERS ("echo chat"),
# SOAK_REPORT (seconds between reports, 5), SOAK_DIR (build/soak),
# WEFT_IO_URING=0 for the epoll backend (passed through to the servers).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
clients=${2:-200}
seed=${SOAK_SEED:-1}
servers=${SOAK_SERVERS:-echo chat}
report=${SOAK_REPORT:-5}
dir=${SOAK_DIR:-$root/build/soak}
idle_ms=15000     # chat: idle clients must be closed after this
max_queue=65536   # chat: slow readers dropped past this

# One fd per client here and one in the server, plus a margin.
need=$((clients + 256))
if [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
fi
if [ "$(ulimit -n)" -lt "$need" ]; then
  echo "soak: $clients clients need $need fds, the limit is $(ulimit -n)" >&2
  exit 2
fi

echo "== building (RelWithDebInfo, $dir)"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DWEFT_BUILD_BENCH=OFF -DWEFT_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir" -j2 --target echo_server chat_server >/dev/null
cc -O2 -pthread -std=c11 -Wall -Wextra -o "$dir/soak_client" \
  "$root/scripts/soak_client.c"
bin=$(dirname "$(find "$dir" -name echo_server -type f -perm -u+x | head -1)")

failed=0
pid=""
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true; }
trap cleanup EXIT

for s in $servers; do
  log="$dir/${s}_server.log"
  out="$dir/${s}_server.out"
  case $s in
    echo) args=(0) ;;
    chat) args=(--port 0 --idle-ms "$idle_ms" --max-queue "$max_queue"
                --heartbeat-ms 5000) ;;
    *) echo "soak: unknown server $s" >&2; exit 2 ;;
  esac
  backend=default
  [ -n "${WEFT_IO_URING:-}" ] && backend="WEFT_IO_URING=$WEFT_IO_URING"
  echo "== ${s}_server ${args[*]} (backend: $backend), log $log"
  "$bin/${s}_server" "${args[@]}" >"$out" 2>"$log" &
  pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "soak: ${s}_server did not start" >&2
    failed=1
    continue
  fi
  rc=0
  "$dir/soak_client" --mode "$s" --port "$port" --pid "$pid" \
    --seconds "$secs" --clients "$clients" --seed "$seed" \
    --report "$report" --idle-ms "$idle_ms" || rc=$?
  [ "$rc" -eq 0 ] || failed=1
  # A clean stop: SIGTERM, exit status 0 within 10 s.
  if kill -TERM "$pid" 2>/dev/null; then
    status=0
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  SIGTERM: still running after 10 s: FAIL"
      kill -KILL "$pid"
      failed=1
    else
      wait "$pid" || status=$?
      echo "  SIGTERM: exit status $status: $([ "$status" -eq 0 ] && echo ok || echo FAIL)"
      [ "$status" -eq 0 ] || failed=1
    fi
  else
    echo "  ${s}_server was gone before SIGTERM: FAIL"
    failed=1
  fi
  pid=""
done
[ "$failed" -eq 0 ] && echo "== soak: PASS" || echo "== soak: FAIL"
exit "$failed"
