# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # out, here, reps, samples: run.sh's; cmd_*: read by collect
# bench/suites/future.sh: the future suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

suite_future() {
  build_weft
  local w=$out/bench/bench_future_weft impls=(weft)
  # Two binaries per C++ peer: the timed one with the library's own
  # operator new, and a counting one (-DPEER_COUNT_ALLOCS, a replaced
  # operator new) used only for the allocs/bytes figures.
  if build_cxx bench_future_std "$here/future_peer.cpp" &&
     build_cxx bench_future_std_count "$here/future_peer.cpp" -DPEER_COUNT_ALLOCS; then
    impls+=(std)
  else
    log "skipped: std (g++ not found: apt-get install g++)"
  fi
  if [ -f /usr/include/boost/thread/future.hpp ] &&
     build_cxx bench_future_boost "$here/future_peer.cpp" -DPEER_BOOST -lboost_thread &&
     build_cxx bench_future_boost_count "$here/future_peer.cpp" -DPEER_COUNT_ALLOCS \
       -DPEER_BOOST -lboost_thread; then
    impls+=(boost)
  else
    log "skipped: boost (boost/thread/future.hpp or libboost_thread not found: apt-get install libboost-thread-dev)"
  fi
  local has_std=0 has_boost=0 i
  [[ " ${impls[*]} " == *" std "* ]] && has_std=1
  [[ " ${impls[*]} " == *" boost "* ]] && has_boost=1
  local std=$out/bench_future_std boost=$out/bench_future_boost

  # settle: create + fulfil + read + release, 1,000,000 times
  cmd_weft=("$w" settle 1000000); cmd_std=("$std" settle 1000000)
  cmd_boost=("$boost" settle 1000000)
  collect settle "${impls[@]}"
  for i in "${impls[@]}"; do echo "future.settle.$i: $(med "settle.$i") ns/op"; done

  # chain: n thens on a pending root, at 1,000,000 and at 10,000 links, on a
  # thread whose stack is sized from n (boost's settle recurses per link)
  local chain_impls=(weft)
  ((has_boost)) && chain_impls+=(boost)
  cmd_weft=("$w" chain 1000000); cmd_boost=("$boost" chain 1000000)
  collect chain "${chain_impls[@]}"
  for i in "${chain_impls[@]}"; do echo "future.chain.$i: $(med "chain.$i") ns/then"; done
  cmd_weft=("$w" chain 10000); cmd_boost=("$boost" chain 10000)
  collect chain_10k "${chain_impls[@]}"
  for i in "${chain_impls[@]}"; do echo "future.chain_10k.$i: $(med "chain_10k.$i") ns/then"; done
  ((has_std)) && log "skipped: future.chain.std, future.chain_10k.std (std::future has no continuation)"

  # handoff: settle on one thread -> continuation/wake on another, one way
  cmd_weft=("$w" handoff 20000); cmd_std=("$std" handoff 20000)
  cmd_boost=("$boost" handoff 20000)
  collect handoff "${impls[@]}"
  for i in "${impls[@]}"; do echo "future.handoff.$i: $(med "handoff.$i") ns"; done

  # allocations and bytes (exact counts, no repetition needed; the peers'
  # counting binaries)
  echo "future.allocs.weft: $("$w" allocs) allocs/op"
  ((has_std)) && echo "future.allocs.std: $("${std}_count" allocs) allocs/op"
  ((has_boost)) && echo "future.allocs.boost: $("${boost}_count" allocs) allocs/op"
  echo "future.bytes.weft: $("$w" bytes) bytes"
  ((has_boost)) && echo "future.bytes.boost: $("${boost}_count" bytes) bytes"
  echo "future.bytes_pair.weft: $("$w" bytes_pair) bytes"
  ((has_std)) && echo "future.bytes_pair.std: $("${std}_count" bytes_pair) bytes"
  ((has_boost)) && echo "future.bytes_pair.boost: $("${boost}_count" bytes_pair) bytes"

  # peer/weft: above 1 means weft takes less time. The median of the
  # per-round ratios follows in brackets.
  local k
  for i in std boost; do
    [[ " ${impls[*]} " == *" $i "* ]] || continue
    for k in settle handoff; do
      log "ratio future.$k $i/weft: $(ratio2 "$(med $k.$i)" "$(med $k.weft)") (per round: $(paired $k.$i $k.weft))"
    done
  done
  if ((has_boost)); then
    for k in chain chain_10k; do
      log "ratio future.$k boost/weft: $(ratio2 "$(med $k.boost)" "$(med $k.weft)") (per round: $(paired $k.boost $k.weft))"
    done
  fi
  return 0
}
