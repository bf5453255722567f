# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # run.sh's globals; cmd_* read by name
# bench/suites/loop.sh: the loop suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

# loop_collect <key> "<col>..." <impl>...: like collect, for programs that
# print several figures on one line: the k-th goes to samples[<col k>.<impl>].
loop_collect() {
  local key=$1 cols; read -r -a cols <<<"$2"; shift 2
  local -a impls=("$@") vals
  local r k j n=$#
  for ((r = 0; r < reps; r++)); do
    progress "$suite_name.$key" "$r" "$reps"
    for ((k = 0; k < n; k++)); do
      local impl=${impls[(r + k) % n]}
      local cmdvar="cmd_${impl}[@]"
      read -r -a vals < <("${!cmdvar}")
      [ "${#vals[@]}" -eq "${#cols[@]}" ] ||
        { echo "loop: $impl $key printed '${vals[*]}'" >&2; return 1; }
      for ((j = 0; j < ${#cols[@]}; j++)); do
        samples[${cols[j]}.$impl]+="${vals[j]} "
      done
    done
  done
}
# a/b, or "n/a" unless both are above zero (a timer that fires early has
# a negative lateness, and a ratio of signed figures means nothing).
loop_ratio() {
  awk -v a="$1" -v b="$2" \
    'BEGIN {if (a > 0 && b > 0) printf "%.2fx", a/b; else print "n/a"}'
}
loop_has() { local x=$1; shift; [[ " $* " == *" $x "* ]]; }

suite_loop() {
  build_weft
  local w=$out/bench/bench_loop_weft np
  np=$(nproc)
  local tm=(weft) pp=(weft) of=(weft)
  if [ -f /usr/include/uv.h ] && build_c bench_loop_libuv "$here/loop_uv.c" -luv; then
    tm+=(libuv); pp+=(libuv); of+=(libuv libuv_default4)
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  if [ -f /usr/include/ev.h ] && build_c bench_loop_libev "$here/loop_ev.c" -lev; then
    tm+=(libev)
  else
    log "skipped: libev (ev.h or libev not found: apt-get install libev-dev)"
  fi
  build_c bench_loop_eventfd "$here/loop_eventfd.c" && pp+=(eventfd)
  local uv=$out/bench_loop_libuv ev=$out/bench_loop_libev i m

  for m in start stop; do
    cmd_weft=("$w" "timer_$m" 1000000); cmd_libuv=("$uv" "timer_$m" 1000000)
    cmd_libev=("$ev" "timer_$m" 1000000)
    collect "t$m" "${tm[@]}"
    for i in "${tm[@]}"; do echo "loop.timer.$m.$i: $(med "t$m.$i") ns"; done
  done
  cmd_weft=("$w" timer_fire 100000); cmd_libuv=("$uv" timer_fire 100000)
  cmd_libev=("$ev" timer_fire 100000)
  loop_collect tfire "tfire tlate50 tlate99 tcpu" "${tm[@]}"
  for i in "${tm[@]}"; do
    echo "loop.timer.fire.$i: $(med "tfire.$i") ms"
    echo "loop.timer.fire_late_p50.$i: $(med "tlate50.$i") us"
    echo "loop.timer.fire_late_p99.$i: $(med "tlate99.$i") us"
    echo "loop.timer.fire_cpu.$i: $(med "tcpu.$i") ms"
  done
  cmd_weft=("$w" timer_sparse 1000); cmd_libuv=("$uv" timer_sparse 1000)
  cmd_libev=("$ev" timer_sparse 1000)
  loop_collect tsparse "tsptotal tsplate50 tsplate99 tspcpu" "${tm[@]}"
  for i in "${tm[@]}"; do
    echo "loop.timer.sparse_late_p50.$i: $(med "tsplate50.$i") us"
    echo "loop.timer.sparse_late_p99.$i: $(med "tsplate99.$i") us"
    echo "loop.timer.sparse_cpu.$i: $(med "tspcpu.$i") ms"
  done

  cmd_weft=("$w" pingpong 20000); cmd_libuv=("$uv" pingpong 20000)
  cmd_eventfd=("$out/bench_loop_eventfd" pingpong 20000)
  loop_collect ping "ping pingcpu" "${pp[@]}"
  for i in "${pp[@]}"; do
    echo "loop.post_pingpong.$i: $(med "ping.$i") us"
    echo "loop.post_pingpong_cpu.$i: $(med "pingcpu.$i") us"
  done
  cmd_weft=("$w" pingpong_nospin 20000) # the same, every wait a sleep
  loop_collect pingns "pingns pingnscpu" weft
  echo "loop.post_pingpong_nospin.weft: $(med pingns.weft) us"
  echo "loop.post_pingpong_nospin_cpu.weft: $(med pingnscpu.weft) us"

  # libuv: its threadpool sized to the CPUs (the main row) and at its
  # default of 4 threads (libuv_default4).
  cmd_weft=("$w" offload 1000000)
  cmd_libuv=(env UV_THREADPOOL_SIZE="$np" "$uv" offload 1000000)
  cmd_libuv_default4=(env -u UV_THREADPOOL_SIZE "$uv" offload 1000000)
  loop_collect loff "loff loffcpu" "${of[@]}"
  for i in "${of[@]}"; do
    echo "loop.offload.$i: $(med "loff.$i") jobs/s"
    echo "loop.offload_cpu.$i: $(med "loffcpu.$i") us"
  done
  if loop_has libuv "${of[@]}"; then
    cmd_libuv=(env UV_THREADPOOL_SIZE="$np" "$uv" offload_prefaulted 1000000)
    loop_collect loffp "loffp loffpcpu" libuv
    echo "loop.offload_prefaulted.libuv: $(med loffp.libuv) jobs/s"
    echo "loop.offload_prefaulted_cpu.libuv: $(med loffpcpu.libuv) us"
  fi
  cmd_weft=("$w" offload_then 1000000)
  loop_collect lofft "lofft lofftcpu" weft
  echo "loop.offload_then.weft: $(med lofft.weft) jobs/s"
  echo "loop.offload_then_cpu.weft: $(med lofftcpu.weft) us"
  cmd_weft=("$w" offload_rtt 20000)
  cmd_libuv=(env UV_THREADPOOL_SIZE="$np" "$uv" offload_rtt 20000)
  cmd_libuv_default4=(env -u UV_THREADPOOL_SIZE "$uv" offload_rtt 20000)
  loop_collect rtt "rtt50 rtt99 rttcpu" "${of[@]}"
  for i in "${of[@]}"; do
    echo "loop.offload_rtt_p50.$i: $(med "rtt50.$i") us"
    echo "loop.offload_rtt_p99.$i: $(med "rtt99.$i") us"
    echo "loop.offload_rtt_cpu.$i: $(med "rttcpu.$i") us"
  done
  cmd_weft=("$w" offload_rtt_nospin 20000) # the loop's spin off
  loop_collect rttns "rttns50 rttns99 rttnscpu" weft
  echo "loop.offload_rtt_nospin_p50.weft: $(med rttns50.weft) us"
  echo "loop.offload_rtt_nospin_p99.weft: $(med rttns99.weft) us"
  echo "loop.offload_rtt_nospin_cpu.weft: $(med rttnscpu.weft) us"

  # Ratios: peer/weft for lower-is-better figures and weft/peer for
  # jobs/s, so above 1x weft is ahead; against the eventfd floor weft/floor.
  for i in libev libuv; do
    loop_has $i "${tm[@]}" || continue
    for m in start stop fire; do
      log "ratio loop.timer.$m $i/weft: $(ratio2 "$(med t$m.$i)" "$(med t$m.weft)")"
    done
    for m in late50:fire_late_p50 late99:fire_late_p99 cpu:fire_cpu \
      splate50:sparse_late_p50 splate99:sparse_late_p99 spcpu:sparse_cpu; do
      log "ratio loop.timer.${m#*:} $i/weft: $(loop_ratio "$(med "t${m%%:*}.$i")" "$(med "t${m%%:*}.weft")")"
    done
  done
  if loop_has eventfd "${pp[@]}"; then
    for m in ping:post_pingpong pingcpu:post_pingpong_cpu; do
      log "ratio loop.${m#*:} weft/eventfd: $(ratio2 "$(med "${m%%:*}.weft")" "$(med "${m%%:*}.eventfd")")"
    done
    log "ratio loop.post_pingpong_nospin weft/eventfd: $(ratio2 "$(med pingns.weft)" "$(med ping.eventfd)")"
    log "ratio loop.post_pingpong_nospin_cpu weft/eventfd: $(ratio2 "$(med pingnscpu.weft)" "$(med pingcpu.eventfd)")"
  fi
  if loop_has libuv "${pp[@]}"; then
    log "ratio loop.post_pingpong libuv/weft: $(ratio2 "$(med ping.libuv)" "$(med ping.weft)")"
    log "ratio loop.post_pingpong_cpu libuv/weft: $(ratio2 "$(med pingcpu.libuv)" "$(med pingcpu.weft)")"
  fi
  for i in libuv libuv_default4; do
    loop_has $i "${of[@]}" || continue
    log "ratio loop.offload weft/$i: $(ratio2 "$(med loff.weft)" "$(med "loff.$i")")"
    log "ratio loop.offload_cpu $i/weft: $(ratio2 "$(med "loffcpu.$i")" "$(med loffcpu.weft)")"
    log "ratio loop.offload_rtt_p50 $i/weft: $(ratio2 "$(med "rtt50.$i")" "$(med rtt50.weft)")"
    log "ratio loop.offload_rtt_p99 $i/weft: $(ratio2 "$(med "rtt99.$i")" "$(med rtt99.weft)")"
    log "ratio loop.offload_rtt_cpu $i/weft: $(ratio2 "$(med "rttcpu.$i")" "$(med rttcpu.weft)")"
  done
  return 0
}
