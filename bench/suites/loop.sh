# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # out, here, reps, samples: run.sh's
# bench/suites/loop.sh: the loop suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

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
    progress loop.offload_rtt "$r" "$reps"
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
