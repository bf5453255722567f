#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/run.sh [suite...]: builds what it needs and prints one line per
# figure, "<suite>.<case>.<impl>: <value> <unit>", weft and its peers side by
# side in one run. Each figure is the median of BENCH_REPS (default 9) runs,
# interleaved across implementations. Peers that are not installed are
# skipped with a "# skipped:" line. Suites: future, pool, loop, net.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${BENCH_BUILD:-$root/build/bench}
reps=${BENCH_REPS:-9}
all_suites=(future pool loop net)
# shellcheck source=bench/common.sh
. "$here/common.sh" # median, net_once

log() { echo "# $*"; }
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }

build_weft() {
  [ -n "${weft_built:-}" ] && return
  cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_SAMPLES=OFF -DWEFT_BUILD_BENCH=ON >/dev/null
  cmake --build "$out" -j2 --target bench_future_weft bench_pool_weft \
    bench_loop_weft >/dev/null
  weft_built=1
}

# Compile a C++ peer with its usual flags; prints nothing, returns 1 if the
# compiler or the library is missing (the caller prints the skip line).
build_cxx() { # name, source, extra flags...
  local name=$1 src=$2; shift 2
  command -v g++ >/dev/null || return 1
  local h fresh=1 # rebuilt when the source or a bench header is newer
  for h in "$src" "$here"/*.h; do [ "$out/$name" -nt "$h" ] || fresh=0; done
  [ "$fresh" = 1 ] && return 0
  g++ -O2 -std=c++17 -pthread "$src" -o "$out/$name" "$@" 2>/dev/null
}

build_c() { # name, source, extra flags...: a C peer, gcc -O2
  local name=$1 src=$2; shift 2
  local h fresh=1 # rebuilt when the source or a bench header is newer
  for h in "$src" "$here"/*.h; do [ "$out/$name" -nt "$h" ] || fresh=0; done
  [ "$fresh" = 1 ] && return 0
  gcc -O2 -pthread "$src" -o "$out/$name" "$@" 2>/dev/null
}

# run_reps <var-prefix> "<impl> <cmd...>"...: runs every command once per
# rep, interleaved, and stores the values in arrays named <prefix>_<impl>.
declare -A samples
collect() { # key, impls..., where cmd_<impl> holds the command
  local key=$1; shift
  for ((r = 0; r < reps; r++)); do
    for impl in "$@"; do
      local cmdvar="cmd_${impl}[@]"
      samples[$key.$impl]+="$("${!cmdvar}") "
    done
  done
}
med() { printf '%s\n' ${samples[$1]} | median; }
# The median of the per-round ratios of two sample lists taken in the same
# rounds (a/b round by round): each ratio compares runs made next to each
# other, so a change of the machine's speed during the suite moves it less
# than it moves the ratio of the two medians.
paired() {
  local -a a=(${samples[$1]}) b=(${samples[$2]})
  local k
  for ((k = 0; k < ${#a[@]} && k < ${#b[@]}; k++)); do
    awk -v x="${a[k]}" -v y="${b[k]}" 'BEGIN {printf "%.6f\n", x / y}'
  done | median | awk '{printf "%.2fx", $1}'
}

suite_future() {
  build_weft
  local w=$out/bench/bench_future_weft impls=(weft)
  if build_cxx bench_future_std "$here/future_peer.cpp"; then
    impls+=(std)
  else
    log "skipped: std (g++ not found: apt-get install g++)"
  fi
  if [ -f /usr/include/boost/thread/future.hpp ] &&
     build_cxx bench_future_boost "$here/future_peer.cpp" -DPEER_BOOST -lboost_thread; then
    impls+=(boost)
  else
    log "skipped: boost (boost/thread/future.hpp or libboost_thread not found: apt-get install libboost-thread-dev)"
  fi
  local has_std=0 has_boost=0
  [[ " ${impls[*]} " == *" std "* ]] && has_std=1
  [[ " ${impls[*]} " == *" boost "* ]] && has_boost=1

  # settle: create + fulfil + read + release, 1,000,000 times
  cmd_weft=("$w" settle 1000000); cmd_std=("$out/bench_future_std" settle 1000000)
  cmd_boost=("$out/bench_future_boost" settle 1000000)
  collect settle "${impls[@]}"
  for i in "${impls[@]}"; do echo "future.settle.$i: $(med settle.$i) ns/op"; done

  # chain: 1,000,000 thens on a pending root (boost: 10,000, deeper overflows its stack)
  cmd_weft=("$w" chain 1000000); cmd_boost=("$out/bench_future_boost" chain 10000)
  local chain_impls=(weft)
  ((has_boost)) && chain_impls+=(boost)
  collect chain "${chain_impls[@]}"
  for i in "${chain_impls[@]}"; do echo "future.chain.$i: $(med chain.$i) ns/then"; done
  ((has_std)) && log "skipped: future.chain.std (std::future has no continuation)"
  ((has_boost)) && log "future.chain.boost is a 10,000-long chain: 100,000 overflows boost's stack"

  # handoff: settle on one thread -> continuation/wake on another, one way
  cmd_weft=("$w" handoff 20000); cmd_std=("$out/bench_future_std" handoff 20000)
  cmd_boost=("$out/bench_future_boost" handoff 20000)
  collect handoff "${impls[@]}"
  for i in "${impls[@]}"; do echo "future.handoff.$i: $(med handoff.$i) ns"; done

  # allocations and bytes (exact counts, no repetition needed)
  echo "future.allocs.weft: $("$w" allocs) allocs/op"
  ((has_std)) && echo "future.allocs.std: $("$out/bench_future_std" allocs) allocs/op"
  ((has_boost)) && echo "future.allocs.boost: $("$out/bench_future_boost" allocs) allocs/op"
  echo "future.bytes.weft: $("$w" bytes) bytes"
  ((has_boost)) && echo "future.bytes.boost: $("$out/bench_future_boost" bytes) bytes"
  echo "future.bytes_pair.weft: $("$w" bytes_pair) bytes"
  ((has_std)) && echo "future.bytes_pair.std: $("$out/bench_future_std" bytes_pair) bytes"

  for i in std boost; do
    [[ " ${impls[*]} " == *" $i "* ]] || continue
    log "ratio future.settle $i/weft: $(ratio2 "$(med settle.$i)" "$(med settle.weft)")"
    log "ratio future.handoff $i/weft: $(ratio2 "$(med handoff.$i)" "$(med handoff.weft)")"
  done
  ((has_boost)) && log "ratio future.chain boost/weft: $(ratio2 "$(med chain.boost)" "$(med chain.weft)")"
  return 0
}

suite_pool() {
  build_weft
  local w=$out/bench/bench_pool_weft n
  n=$(nproc)
  local fj=(weft)
  if [ -f /usr/include/oneapi/tbb/task_group.h ] &&
     build_cxx bench_pool_tbb "$here/pool_tbb.cpp" -ltbb; then
    fj+=(tbb)
  else
    log "skipped: tbb (oneapi/tbb/task_group.h or libtbb not found: apt-get install libtbb-dev)"
  fi
  if build_c bench_pool_omp "$here/pool_omp.c" -fopenmp; then
    fj+=(omp)
  else
    log "skipped: omp (gcc -fopenmp failed: apt-get install gcc)"
  fi
  local off=(weft)
  if [ -f /usr/include/uv.h ] && build_c bench_pool_libuv "$here/pool_uv.c" -luv; then
    off+=(libuv)
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  build_c bench_pool_naive "$here/pool_naive.c" && off+=(naive)

  for t in 1 "$n"; do
    cmd_weft=("$w" fib "$t" 32); cmd_tbb=("$out/bench_pool_tbb" fib "$t" 32)
    cmd_omp=("$out/bench_pool_omp" fib "$t" 32)
    collect "fib$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "fib.${t}t.$i: $(med fib$t.$i) ns/task"; done
    cmd_weft=("$w" skynet "$t"); cmd_tbb=("$out/bench_pool_tbb" skynet "$t")
    cmd_omp=("$out/bench_pool_omp" skynet "$t")
    collect "sky$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "skynet.${t}t.$i: $(med sky$t.$i) ms"; done
  done
  cmd_weft=("$w" offload "$n" 1000000); cmd_libuv=("$out/bench_pool_libuv" 1000000)
  cmd_naive=("$out/bench_pool_naive" 1000000)
  collect offload "${off[@]}"
  for i in "${off[@]}"; do echo "pool.offload.$i: $(med offload.$i) jobs/s"; done
  cmd_weft=("$w" offload_then "$n" 1000000)
  collect offthen weft
  echo "pool.offload_then.weft: $(med offthen.weft) jobs/s"
  echo "pool.idle_cpu.weft: $("$w" idle_cpu "$n") ms"

  log "ratio fib.${n}t scaling weft 1t/${n}t: $(ratio2 "$(med fib1.weft)" "$(med fib$n.weft)")"
  for i in tbb omp; do
    [[ " ${fj[*]} " == *" $i "* ]] || continue
    log "ratio fib.1t $i/weft: $(ratio2 "$(med fib1.$i)" "$(med fib1.weft)")"
    log "ratio fib.${n}t $i/weft: $(ratio2 "$(med fib$n.$i)" "$(med fib$n.weft)")"
    log "ratio skynet.1t $i/weft: $(ratio2 "$(med sky1.$i)" "$(med sky1.weft)")"
    log "ratio skynet.${n}t $i/weft: $(ratio2 "$(med sky$n.$i)" "$(med sky$n.weft)")"
  done
  for i in libuv naive; do
    [[ " ${off[*]} " == *" $i "* ]] || continue
    log "ratio pool.offload weft/$i: $(ratio2 "$(med offload.weft)" "$(med offload.$i)")"
  done
  return 0
}

suite_loop() {
  build_weft
  local w=$out/bench/bench_loop_weft
  local tm=(weft) pp=(weft) of=(weft)
  if [ -f /usr/include/uv.h ] && build_c bench_loop_libuv "$here/loop_uv.c" -luv; then
    tm+=(libuv); pp+=(libuv); of+=(libuv)
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  if [ -f /usr/include/ev.h ] && build_c bench_loop_libev "$here/loop_ev.c" -lev; then
    tm+=(libev)
  else
    log "skipped: libev (ev.h or libev not found: apt-get install libev-dev)"
  fi
  build_c bench_loop_eventfd "$here/loop_eventfd.c" && pp+=(eventfd)
  local uv=$out/bench_loop_libuv ev=$out/bench_loop_libev

  for m in start stop; do
    cmd_weft=("$w" timer_$m 1000000); cmd_libuv=("$uv" timer_$m 1000000)
    cmd_libev=("$ev" timer_$m 1000000)
    collect "t$m" "${tm[@]}"
    for i in "${tm[@]}"; do echo "loop.timer.$m.$i: $(med t$m.$i) ns"; done
  done
  cmd_weft=("$w" timer_fire 100000); cmd_libuv=("$uv" timer_fire 100000)
  cmd_libev=("$ev" timer_fire 100000)
  collect tfire "${tm[@]}"
  for i in "${tm[@]}"; do echo "loop.timer.fire.$i: $(med tfire.$i) ms"; done

  cmd_weft=("$w" pingpong 20000); cmd_libuv=("$uv" pingpong 20000)
  cmd_eventfd=("$out/bench_loop_eventfd" pingpong 20000)
  collect ping "${pp[@]}"
  for i in "${pp[@]}"; do echo "loop.post_pingpong.$i: $(med ping.$i) us"; done
  cmd_weft=("$w" pingpong_nospin 20000) # the same, every wait a sleep
  collect pingns weft
  echo "loop.post_pingpong_nospin.weft: $(med pingns.weft) us"

  cmd_weft=("$w" offload 1000000); cmd_libuv=("$uv" offload 1000000)
  collect loff "${of[@]}"
  for i in "${of[@]}"; do echo "loop.offload.$i: $(med loff.$i) jobs/s"; done
  cmd_weft=("$w" offload_then 1000000)
  collect lofft weft
  echo "loop.offload_then.weft: $(med lofft.weft) jobs/s"
  for ((r = 0; r < reps; r++)); do
    for i in "${of[@]}"; do
      local cmd=("$w")
      [ "$i" = libuv ] && cmd=("$uv")
      read -r p50 p99 < <("${cmd[@]}" offload_rtt 20000)
      samples[rtt50.$i]+="$p50 "
      samples[rtt99.$i]+="$p99 "
    done
  done
  for i in "${of[@]}"; do
    echo "loop.offload_rtt_p50.$i: $(med rtt50.$i) us"
    echo "loop.offload_rtt_p99.$i: $(med rtt99.$i) us"
  done

  for i in libev libuv; do
    [[ " ${tm[*]} " == *" $i "* ]] || continue
    for m in start stop fire; do
      log "ratio loop.timer.$m $i/weft: $(ratio2 "$(med t$m.$i)" "$(med t$m.weft)")"
    done
  done
  [[ " ${pp[*]} " == *" eventfd "* ]] &&
    log "ratio loop.post_pingpong weft/eventfd: $(ratio2 "$(med ping.weft)" "$(med ping.eventfd)")" &&
    log "ratio loop.post_pingpong_nospin weft/eventfd: $(ratio2 "$(med pingns.weft)" "$(med ping.eventfd)")"
  if [[ " ${of[*]} " == *" libuv "* ]]; then
    log "ratio loop.offload weft/libuv: $(ratio2 "$(med loff.weft)" "$(med loff.libuv)")"
    log "ratio loop.offload_rtt_p50 libuv/weft: $(ratio2 "$(med rtt50.libuv)" "$(med rtt50.weft)")"
  fi
  return 0
}

suite_net() {
  build_weft
  cmake --build "$out" -j2 --target bench_net_weft >/dev/null 2>&1 || true
  local impls=() i n v hard cur
  declare -A bin
  if [ -x "$out/bench/bench_net_weft" ]; then
    impls+=(weft); bin[weft]=$out/bench/bench_net_weft
    log "weft's loop: $("${bin[weft]}" backend) (WEFT_IO_URING=0 in the environment: epoll)"
  else
    log "skipped: weft (bench_net_weft not built)"
  fi
  if [ -f /usr/include/uv.h ] && build_c bench_net_libuv "$here/net_uv.c" -luv; then
    impls+=(libuv); bin[libuv]=$out/bench_net_libuv
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  if [ -f /usr/include/ev.h ] && build_c bench_net_libev "$here/net_ev.c" -lev; then
    impls+=(libev); bin[libev]=$out/bench_net_libev
  else
    log "skipped: libev (ev.h or libev not found: apt-get install libev-dev)"
  fi
  build_c bench_net_epoll "$here/net_epoll.c" || { echo "net: gcc failed on net_epoll.c" >&2; return 1; }
  impls+=(epoll); bin[epoll]=$out/bench_net_epoll
  build_c bench_net_client "$here/net_client.c" || { echo "net: gcc failed on net_client.c" >&2; return 1; }
  net_secs=${BENCH_NET_SECS:-1}
  net_pin0=(); net_pin1=()
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    net_pin0=(taskset -c 0); net_pin1=(taskset -c 1)
  fi

  # 1000 connections: 1000+ fds in the server and in the client.
  local ns=(1 100 1000)
  hard=$(ulimit -Hn); cur=$(ulimit -Sn)
  if [ "$cur" != unlimited ] && [ "$cur" -lt 4096 ]; then
    if [ "$hard" = unlimited ] || [ "$hard" -ge 4096 ]; then
      ulimit -Sn 4096 2>/dev/null || true
    else
      ulimit -Sn "$hard" 2>/dev/null || true
    fi
  fi
  cur=$(ulimit -Sn)
  if [ "$cur" != unlimited ] && [ "$cur" -lt 2100 ]; then
    log "skipped: net.echo.c1000 (open-file limit $cur, hard limit $hard: needs 2100)"
    ns=(1 100)
  fi

  for n in "${ns[@]}"; do
    for ((r = 0; r < reps; r++)); do
      for i in "${impls[@]}"; do
        v=$(net_once "${bin[$i]}" "$n") || return 1
        samples[nrps$n.$i]+="${v% *} "
        samples[ncpu$n.$i]+="${v#* } "
      done
    done
    for i in "${impls[@]}"; do
      printf 'net.echo.c%s.rps.%s: %.0f rt/s\n' "$n" "$i" "$(med nrps$n.$i)"
      printf 'net.echo.c%s.cpu_us.%s: %.3f us\n' "$n" "$i" "$(med ncpu$n.$i)"
    done
    if [ -n "${bin[weft]:-}" ]; then
      [ -n "${bin[libev]:-}" ] &&
        log "ratio net.echo.c$n.cpu_us libev/weft: $(ratio2 "$(med ncpu$n.libev)" "$(med ncpu$n.weft)") (per round: $(paired ncpu$n.libev ncpu$n.weft))"
      [ -n "${bin[libuv]:-}" ] &&
        log "ratio net.echo.c$n.rps weft/libuv: $(ratio2 "$(med nrps$n.weft)" "$(med nrps$n.libuv)") (per round: $(paired nrps$n.weft nrps$n.libuv))"
    fi
  done
  return 0
}

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=("${all_suites[@]}")
for s in "${suites[@]}"; do
  if ! declare -F "suite_$s" >/dev/null; then
    echo "bench/run.sh: unknown suite '$s' (known: ${all_suites[*]})" >&2
    exit 2
  fi
done
mkdir -p "$out"
log "weft bench, $(nproc) cores, $reps interleaved runs per figure, medians"
for s in "${suites[@]}"; do "suite_$s"; done
