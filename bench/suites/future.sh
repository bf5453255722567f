# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # out, here, reps, samples: run.sh's
# bench/suites/future.sh: the future suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

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
