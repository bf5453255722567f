#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/run.sh [suite...]: builds what it needs and prints one line per
# figure, "<suite>.<case>.<impl>: <value> <unit>", weft and its peers side by
# side in one run. Each figure is the median of BENCH_REPS (default 9) runs,
# interleaved across implementations. Peers that are not installed are
# skipped with a "# skipped:" line. Suites: future, pool, loop, net, fiber,
# file, stream, sync.
# bench/run.sh --plot DIR [suite...] also saves the output in DIR/run.txt
# and draws it as SVG charts there (bench/plot.sh, needs gnuplot).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${BENCH_BUILD:-$root/build/bench}
reps=${BENCH_REPS:-9}
all_suites=(future pool loop net fiber file stream sync)
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
  g++ -O2 -DNDEBUG -std=c++17 -pthread "$src" -o "$out/$name" "$@" 2>/dev/null
}

build_c() { # name, source, extra flags...: a C peer, gcc -O2 -DNDEBUG
  local name=$1 src=$2; shift 2
  local h fresh=1 # rebuilt when the source or a bench header is newer
  for h in "$src" "$here"/*.h; do [ "$out/$name" -nt "$h" ] || fresh=0; done
  [ "$fresh" = 1 ] && return 0
  gcc -O2 -DNDEBUG -pthread "$src" -o "$out/$name" "$@" 2>/dev/null
}

declare -A samples
# A progress line on stderr (the figures go to stdout): which case, which
# round of how many. On a terminal it rewrites one line; otherwise (a log
# file) it prints a line per round.
progress() { # case, round (0-based), rounds
  if [ -t 2 ]; then
    printf '\r\033[K# %s: round %d of %d' "$1" "$(($2 + 1))" "$3" >&2
    [ "$(($2 + 1))" -eq "$3" ] && printf '\r\033[K' >&2
  else
    printf '# %s: round %d of %d\n' "$1" "$(($2 + 1))" "$3" >&2
  fi
  return 0
}

# collect <key> <impl>...: runs the command in array cmd_<impl> of every
# implementation once per round, BENCH_REPS rounds, and appends each value
# to samples[<key>.<impl>]. The implementation that goes first moves on by
# one each round, so none always runs on a machine the others just warmed
# (or left busy).
collect() {
  local key=$1; shift
  local -a impls=("$@")
  local r k n=$#
  for ((r = 0; r < reps; r++)); do
    progress "$suite_name.$key" "$r" "$reps"
    for ((k = 0; k < n; k++)); do
      local impl=${impls[(r + k) % n]}
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
# best <key> higher|lower <impl>...: the implementation whose median of
# samples[<key>.<impl>] is best (the highest or the lowest).
best() {
  local key=$1 dir=$2 i b="" bv="" v; shift 2
  for i in "$@"; do
    v=$(med "$key.$i")
    if [ -z "$b" ] || awk -v v="$v" -v bv="$bv" -v d="$dir" \
      'BEGIN {exit !((d == "higher") ? v > bv : v < bv)}'; then
      b=$i; bv=$v
    fi
  done
  echo "$b"
}

for s in "${all_suites[@]}"; do
  # shellcheck source=/dev/null
  . "$here/suites/$s.sh"
done

plot_dir=""
if [ "${1:-}" = --plot ]; then
  [ -n "${2:-}" ] || { echo "bench/run.sh: --plot needs a folder" >&2; exit 2; }
  plot_dir=$2; shift 2
fi
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=("${all_suites[@]}")
for s in "${suites[@]}"; do
  if ! declare -F "suite_$s" >/dev/null; then
    echo "bench/run.sh: unknown suite '$s' (known: ${all_suites[*]})" >&2
    exit 2
  fi
done
mkdir -p "$out"
# (before --plot's output lands in the tree: a run into docs/bench would
# otherwise call its own commit dirty)
commit=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
run_all() {
  log "weft bench at $commit, $(nproc) cores, $reps interleaved runs per figure, medians"
  log "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')"
  for suite_name in "${suites[@]}"; do log "suite $suite_name"; "suite_$suite_name"; done
}
if [ -n "$plot_dir" ]; then
  mkdir -p "$plot_dir"
  run_all | tee "$plot_dir/run.txt"
  bash "$here/plot.sh" "$plot_dir/run.txt" "$plot_dir"
else
  run_all
fi
