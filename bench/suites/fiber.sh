# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # out, here, reps, samples: run.sh's; cmd_*: read by collect
# bench/suites/fiber.sh: the fiber suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

suite_fiber() {
  build_weft
  cmake --build "$out" -j2 --target bench_fiber_weft >/dev/null
  local w=$out/bench/bench_fiber_weft impls=(weft) i
  if [ -f /usr/include/boost/context/fiber.hpp ] &&
     build_cxx bench_fiber_boost "$here/fiber_boost.cpp" -lboost_context; then
    impls+=(boost)
  else
    log "skipped: fiber.switch.boost (boost/context/fiber.hpp or libboost_context not found: apt-get install libboost-context-dev)"
  fi

  # switch: a suspend+resume pair, 5,000,000 of them
  cmd_weft=("$w" switch 5000000); cmd_boost=("$out/bench_fiber_boost" switch 5000000)
  collect switch "${impls[@]}"
  for i in "${impls[@]}"; do echo "fiber.switch.$i: $(med "switch.$i") ns"; done
  cmd_weft=("$w" switch_queued 5000000)
  collect switch_queued weft
  echo "fiber.switch_queued.weft: $(med switch_queued.weft) ns"

  # spawn: spawn + run + settle + release of an empty fiber
  cmd_weft=("$w" spawn 1000000)
  collect spawn weft
  echo "fiber.spawn.weft: $(med spawn.weft) ns"

  # rss: 100,000 fibers awaiting a 5 s sleep on one loop. The figure moves
  # by a few bytes from run to run, and each run maps and unmaps 100,000
  # stacks (seconds on these VMs): at most 3 runs.
  local saved=$reps
  reps=$((reps < 3 ? reps : 3))
  cmd_weft=("$w" rss 100000 5000)
  collect rss weft
  reps=$saved
  echo "fiber.rss_per_waiting.weft: $(med rss.weft) bytes"

  if [[ " ${impls[*]} " == *" boost "* ]]; then
    log "ratio fiber.switch weft/boost: $(ratio2 "$(med switch.weft)" "$(med switch.boost)") (per round: $(paired switch.weft switch.boost)) (goal: at most 1.50x)"
  fi
  log "goal fiber.spawn.weft: at most 150 ns; fiber.rss_per_waiting.weft: at most 16384 bytes"
  return 0
}
