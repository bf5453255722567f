# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # out, here, reps: run.sh's; cmd_*: read by collect
# bench/suites/stream.sh: the stream suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

suite_stream() {
  build_weft
  cmake --build "$out" -j2 --target bench_stream_weft >/dev/null
  build_c bench_stream_recv "$here/stream_recv.c" ||
    { log "skipped: stream.read_line.recv (gcc failed)"; return 0; }
  # read_line: 4,000,000 lines of 64 bytes through a Unix stream socket,
  # written by a thread in 64 KiB writes; ns per line on the reading side
  local lines=4000000
  cmd_weft=("$out/bench/bench_stream_weft" "$lines")
  cmd_recv=("$out/bench_stream_recv" "$lines")
  collect read_line weft recv
  echo "stream.read_line.weft: $(med read_line.weft) ns/line"
  echo "stream.read_line.recv: $(med read_line.recv) ns/line"
  log "ratio stream.read_line weft/recv = $(ratio2 "$(med read_line.weft)" "$(med read_line.recv)" | tr -d x) (goal <= 1.2) (per round: $(paired read_line.weft read_line.recv))"
  return 0
}
