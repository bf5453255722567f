# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # out, here, reps, samples: run.sh's; cmd_*: read by collect
# bench/suites/sync.sh: the sync suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

suite_sync() {
  build_weft
  cmake --build "$out" -j2 --target bench_sync_weft >/dev/null
  build_c bench_sync_mutex "$here/sync_mutex.c" ||
    { log "skipped: sync.channel.mutex (gcc failed)"; return 0; }
  local n=${SYNC_ITEMS:-5000000}
  cmd_weft=("$out/bench/bench_sync_weft" "$n")
  cmd_mutex=("$out/bench_sync_mutex" "$n")
  collect channel weft mutex
  local i
  for i in weft mutex; do echo "sync.channel.$i: $(med "channel.$i") items/s"; done
  # weft/mutex: the issue's goal is at least 2x
  log "ratio sync.channel weft/mutex: $(ratio2 "$(med channel.weft)" "$(med channel.mutex)") (per round: $(paired channel.weft channel.mutex); goal >= 2x)"
  return 0
}
