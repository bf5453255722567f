#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/compare.sh [--head REV] BASE [suite...]: the regression guard.
# Builds weft at commit BASE and the work tree (or commit REV with --head),
# each in its own build folder, runs the weft figures of the named suites
# (default: future pool loop net fiber stream sync; file needs its data
# file, run it with run.sh) with both builds, interleaved round by
# round (the build that goes first alternates), and prints a markdown table:
# for each figure the base and head medians, the median of the per-round
# ratios head/base, its 95% bootstrap interval, and a flag: "WORSE" when the
# head is worse by more than 5% and the interval is clear of 1 ("better" for
# the same the other way). Units ending in /s are better higher, the rest
# (ns, us, ms, allocs, bytes) lower. Exits 1 if a figure is flagged WORSE
# or a head run failed, 2 on a usage or build error.
#   bench/compare.sh --list [suite...]   prints the figure table
#   bench/compare.sh --check RUN_TXT     weft figures of a saved run.sh output
#                                        that the table lacks
# Environment: COMPARE_ROUNDS (default 9), COMPARE_BUILD (build folders,
# default build/compare), COMPARE_BASE_ENV / COMPARE_HEAD_ENV (assignments
# put before each run of that side, e.g. WEFT_IO_URING=0),
# COMPARE_BASE_CMAKE / COMPARE_HEAD_CMAKE (extra cmake arguments for that
# side's build), COMPARE_TIMEOUT (seconds per run, default 600),
# BENCH_NET_SECS (as run.sh), COMPARE_BOOT (bootstrap resamples, 2000).
# shellcheck disable=SC2034 # out, net_secs, net_pin0, net_pin1: net_once's
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=bench/common.sh
. "$here/common.sh" # usage_exit, median, net_once

# The weft figures, one per line: suite, figure name, unit, which field of
# the program's output line, program (in the build's bench/ folder; "net" is
# an echo run of bench_net_weft with the suite's client, fields rps and
# cpu_us), then its arguments. "@N" stands for nproc. Rows with the same
# program and arguments share one run per round. Keep in step with
# bench/suites/*.sh (the same programs, modes and sizes): `--check` lists the
# weft figures of a run.sh output that are missing here.
figure_table() {
  cat <<'EOF'
future future.settle.weft           ns/op     1 bench_future_weft settle 1000000
future future.chain.weft            ns/then   1 bench_future_weft chain 1000000
future future.chain_10k.weft        ns/then   1 bench_future_weft chain 10000
future future.handoff.weft          ns        1 bench_future_weft handoff 20000
future future.allocs.weft           allocs/op 1 bench_future_weft allocs
future future.bytes.weft            bytes     1 bench_future_weft bytes
future future.bytes_pair.weft       bytes     1 bench_future_weft bytes_pair
pool   fib.1t.weft                  ns/task   1 bench_pool_weft fib 1 32
pool   skynet.1t.weft               ms        1 bench_pool_weft skynet 1
pool   fib.@Nt.weft                 ns/task   1 bench_pool_weft fib @N 32
pool   skynet.@Nt.weft              ms        1 bench_pool_weft skynet @N
pool   pool.offload.weft            jobs/s    1 bench_pool_weft offload @N 1000000 65536
pool   pool.offload_inline.weft     jobs/s    1 bench_pool_weft offload_inline @N 1000000
pool   pool.offload_then.weft       jobs/s    1 bench_pool_weft offload_then @N 1000000 65536
pool   pool.idle_cpu.weft           ms        1 bench_pool_weft idle_cpu @N
loop   loop.timer.start.weft        ns        1 bench_loop_weft timer_start 1000000
loop   loop.timer.stop.weft         ns        1 bench_loop_weft timer_stop 1000000
loop   loop.timer.fire.weft         ms        1 bench_loop_weft timer_fire 100000
loop   loop.timer.fire_late_p50.weft us       2 bench_loop_weft timer_fire 100000
loop   loop.timer.fire_late_p99.weft us       3 bench_loop_weft timer_fire 100000
loop   loop.timer.fire_cpu.weft     ms        4 bench_loop_weft timer_fire 100000
loop   loop.timer.sparse_late_p50.weft us     2 bench_loop_weft timer_sparse 1000
loop   loop.timer.sparse_late_p99.weft us     3 bench_loop_weft timer_sparse 1000
loop   loop.timer.sparse_cpu.weft   ms        4 bench_loop_weft timer_sparse 1000
loop   loop.post_pingpong.weft      us        1 bench_loop_weft pingpong 20000
loop   loop.post_pingpong_cpu.weft  us        2 bench_loop_weft pingpong 20000
loop   loop.post_pingpong_nospin.weft us      1 bench_loop_weft pingpong_nospin 20000
loop   loop.post_pingpong_nospin_cpu.weft us  2 bench_loop_weft pingpong_nospin 20000
loop   loop.offload.weft            jobs/s    1 bench_loop_weft offload 1000000
loop   loop.offload_cpu.weft        us        2 bench_loop_weft offload 1000000
loop   loop.offload_then.weft       jobs/s    1 bench_loop_weft offload_then 1000000
loop   loop.offload_then_cpu.weft   us        2 bench_loop_weft offload_then 1000000
loop   loop.offload_rtt_p50.weft    us        1 bench_loop_weft offload_rtt 20000
loop   loop.offload_rtt_p99.weft    us        2 bench_loop_weft offload_rtt 20000
loop   loop.offload_rtt_cpu.weft    us        3 bench_loop_weft offload_rtt 20000
loop   loop.offload_rtt_nospin_p50.weft us    1 bench_loop_weft offload_rtt_nospin 20000
loop   loop.offload_rtt_nospin_p99.weft us    2 bench_loop_weft offload_rtt_nospin 20000
loop   loop.offload_rtt_nospin_cpu.weft us    3 bench_loop_weft offload_rtt_nospin 20000
net    net.echo.c1.rps.weft         rt/s      1 net 1
net    net.echo.c1.cpu_us.weft      us        2 net 1
net    net.echo.c100.rps.weft       rt/s      1 net 100
net    net.echo.c100.cpu_us.weft    us        2 net 100
net    net.echo.c1000.rps.weft      rt/s      1 net 1000
net    net.echo.c1000.cpu_us.weft   us        2 net 1000
fiber  fiber.switch.weft            ns        1 bench_fiber_weft switch 5000000
fiber  fiber.switch_queued.weft     ns        1 bench_fiber_weft switch_queued 5000000
fiber  fiber.spawn.weft             ns        1 bench_fiber_weft spawn 1000000
fiber  fiber.rss_per_waiting.weft   bytes     1 bench_fiber_weft rss 100000 5000
stream stream.read_line.weft        ns/line   1 bench_stream_weft 4000000
sync   sync.channel.weft            items/s   1 bench_sync_weft 5000000
EOF
}
all_suites=(future pool loop net fiber stream sync)
ncpu=$(nproc)

# The table with @N expanded, only the named suites' rows.
table_rows() { # suite...
  figure_table | sed "s/@N/$ncpu/g" | awk -v want=" $* " 'index(want, " " $1 " ")'
}

better_of() { case $1 in */s) echo higher ;; *) echo lower ;; esac; }

if [ "${1:-}" = --list ]; then
  shift
  [ $# -eq 0 ] && set -- "${all_suites[@]}"
  table_rows "$@" | while read -r s fig unit field prog args; do
    printf '%-32s %-10s %-6s field %s: %s %s\n' "$fig" "$unit" "$(better_of "$unit")" \
      "$field" "$prog" "$args"
  done
  exit 0
fi
if [ "${1:-}" = --check ]; then
  [ $# -eq 2 ] || usage_exit 3 22 "$0"
  known=$(table_rows "${all_suites[@]}" | awk '{print $2}')
  missing=$(awk -F: '/^[a-z]/ && $1 ~ /\.weft$/ {print $1}' "$2" |
    grep -vxF -f <(echo "$known") || true)
  if [ -n "$missing" ]; then
    echo "compare.sh: weft figures of $2 missing from the table:"
    awk '{print "  " $0}' <<<"$missing"
    exit 1
  fi
  echo "compare.sh: every weft figure of $2 is in the table"
  exit 0
fi

head_rev=""
if [ "${1:-}" = --head ]; then
  [ -n "${2:-}" ] || usage_exit 3 22 "$0"
  head_rev=$2; shift 2
fi
[ $# -ge 1 ] || usage_exit 3 22 "$0"
base_rev=$1; shift
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=("${all_suites[@]}")
for s in "${suites[@]}"; do
  [[ " ${all_suites[*]} " == *" $s "* ]] ||
    { echo "compare.sh: unknown suite '$s' (known: ${all_suites[*]})" >&2; exit 2; }
done
rounds=${COMPARE_ROUNDS:-9}
boot=${COMPARE_BOOT:-2000}
tmo=${COMPARE_TIMEOUT:-600}
cmp=${COMPARE_BUILD:-$root/build/compare}
mkdir -p "$cmp"
rows=$(table_rows "${suites[@]}")
progs=$(awk '{print ($5 == "net") ? "bench_net_weft" : $5}' <<<"$rows" | sort -u)
notes=() # lines printed under the table

sha_of() {
  git -C "$root" rev-parse --verify --quiet "$1^{commit}" ||
    { echo "compare.sh: '$1' is not a commit" >&2; exit 2; }
}

# Extracts commit $1 into $cmp/src-<sha> once (git archive: no worktree to
# clean up) and prints the folder.
extract() {
  local sha=$1 d=$cmp/src-${1:0:12}
  if [ ! -f "$d/.complete" ]; then
    rm -rf "$d"; mkdir -p "$d"
    git -C "$root" archive --format=tar "$sha" | tar -x -C "$d"
    touch "$d/.complete"
  fi
  echo "$d"
}

# Configures and builds source $1 in $2 with extra cmake arguments $3; prints
# the bench programs (of $progs) that built. Output goes to $2/compare.log.
build_tree() {
  local src=$1 b=$2 extra=$3 p
  mkdir -p "$b"
  # shellcheck disable=SC2086 # extra: cmake arguments, split on purpose
  cmake -S "$src" -B "$b" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_SAMPLES=OFF -DWEFT_BUILD_BENCH=ON $extra >"$b/compare.log" 2>&1 || return 0
  for p in $progs; do
    cmake --build "$b" -j2 --target "$p" >>"$b/compare.log" 2>&1 && echo "$p"
  done
  return 0
}

declare -A bin   # bin[side.program]: the program's path
declare -A label # label[side]
# Builds one side: $1 side (base|head), $2 revision or "" (the work tree),
# $3 extra cmake arguments. A commit's bench programs are built from the
# work tree's bench/ sources against the commit's library (so both sides run
# the same benchmark code, new modes included); a program that does not
# build that way is built from the commit's own bench/ sources.
build_side() {
  local side=$1 rev=$2 extra=$3 sha src srcw p ok own=() tag=""
  # other cmake arguments, other build folders (no reconfiguring back and forth)
  [ -n "$extra" ] && tag=-$(printf '%s' "$extra" | md5sum | cut -c1-8)
  if [ -z "$rev" ]; then
    label[$side]="$(git -C "$root" describe --always --dirty) (work tree)"
    echo "# building $side: the work tree in $cmp/worktree$tag" >&2
    for p in $(build_tree "$root" "$cmp/worktree$tag" "$extra"); do
      bin[$side.$p]=$cmp/worktree$tag/bench/$p
    done
  else
    sha=$(sha_of "$rev")
    label[$side]=$(git -C "$root" rev-parse --short "$sha")
    src=$(extract "$sha")
    srcw=$src+wtbench
    echo "# building $side: ${label[$side]} with the work tree's bench sources in $cmp/build-${sha:0:12}$tag+wtbench" >&2
    rm -rf "$srcw"; cp -a "$src" "$srcw"
    rm -rf "$srcw/bench"; cp -a "$here" "$srcw/bench"
    for p in $(build_tree "$srcw" "$cmp/build-${sha:0:12}$tag+wtbench" "$extra"); do
      bin[$side.$p]=$cmp/build-${sha:0:12}$tag+wtbench/bench/$p
    done
    for p in $progs; do
      [ -n "${bin[$side.$p]:-}" ] || own+=("$p")
    done
    if [ ${#own[@]} -gt 0 ]; then
      echo "# building $side: ${label[$side]} with its own bench sources for ${own[*]}" >&2
      ok=$(progs="${own[*]}" build_tree "$src" "$cmp/build-${sha:0:12}$tag" "$extra")
      for p in $ok; do
        bin[$side.$p]=$cmp/build-${sha:0:12}$tag/bench/$p
        notes+=("$side ${label[$side]}: $p built from its own bench sources (the work tree's do not build against it)")
      done
    fi
  fi
  for p in $progs; do
    [ -n "${bin[$side.$p]:-}" ] ||
      notes+=("$side ${label[$side]}: $p does not build (see $cmp/*/compare.log): its figures are n/a")
  done
  return 0
}

build_side base "$base_rev" "${COMPARE_BASE_CMAKE:-}"
build_side head "$head_rev" "${COMPARE_HEAD_CMAKE:-}"
[ -n "${COMPARE_BASE_CMAKE:-}" ] && notes+=("base cmake: $COMPARE_BASE_CMAKE")
[ -n "${COMPARE_HEAD_CMAKE:-}" ] && notes+=("head cmake: $COMPARE_HEAD_CMAKE")
[ -n "${COMPARE_BASE_ENV:-}" ] && notes+=("base runs with: $COMPARE_BASE_ENV")
[ -n "${COMPARE_HEAD_ENV:-}" ] && notes+=("head runs with: $COMPARE_HEAD_ENV")

# The net suite's load: the work tree's client for both sides, pinned as in
# the suite, open-file limit raised for 1000 connections.
if [[ " ${suites[*]} " == *" net "* ]]; then
  gcc -O2 -DNDEBUG -pthread "$here/net_client.c" -o "$cmp/bench_net_client" ||
    { echo "compare.sh: gcc failed on net_client.c" >&2; exit 2; }
  out=$cmp # net_once's client folder
  net_secs=${BENCH_NET_SECS:-1}
  pin0=(); net_pin1=()
  if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null; then
    pin0=(taskset -c 0); net_pin1=(taskset -c 1)
  fi
  ulimit -Sn 4096 2>/dev/null || true
fi

prog_of() { [ "$1" = net ] && echo bench_net_weft || echo "$1"; }

# One run of a table row's command for one side; prints its output line
# (space-separated fields) or returns 1.
run_one() { # side, program, args...
  local side=$1 prog=$2 b envs o; shift 2
  b=${bin[$side.$(prog_of "$prog")]:-}
  [ -n "$b" ] || return 1
  envs=COMPARE_${side^^}_ENV
  # shellcheck disable=SC2206 # VAR=value words, split on purpose
  local -a pre=(env ${!envs:-} timeout "$tmo")
  if [ "$prog" = net ]; then
    net_pin0=("${pre[@]}" "${pin0[@]}") # the server carries the side's environment
    net_once "$b" "$1"
  else
    o=$("${pre[@]}" "$b" "$@") || return 1
    head -n 1 <<<"$o"
  fi
}

# Runs: one per distinct command per side per round, in res[side|cmd|round].
declare -A res
mapfile -t cmds < <(awk '{c = $5; for (i = 6; i <= NF; i++) c = c " " $i; if (!seen[c]++) print c}' <<<"$rows")
failed=0
for ((r = 0; r < rounds; r++)); do
  for c in "${cmds[@]}"; do
    printf '# compare %s: round %d of %d\n' "$c" "$((r + 1))" "$rounds" >&2
    if ((r % 2 == 0)); then order=(base head); else order=(head base); fi
    for side in "${order[@]}"; do
      res[$side\|$c\|$r]=NA
      [ -n "${bin[$side.$(prog_of "${c%% *}")]:-}" ] || continue # n/a: not built
      # shellcheck disable=SC2086 # c: a program and its arguments
      if v=$(run_one "$side" $c) && [ -n "$v" ]; then
        res[$side\|$c\|$r]=$v
      else
        echo "compare.sh: $side: '$c' failed in round $((r + 1))" >&2
        [ "$side" = head ] && failed=1
      fi
    done
  done
done

# stats DIR "<base values>" "<head values>": base median, head median,
# median of the per-round ratios head/base, its bootstrap interval (2.5th
# and 97.5th percentiles of the medians of COMPARE_BOOT resamples of the
# ratios, fixed seed), and the flag. "NA" values are left out (a round
# with either side NA gives no ratio).
stats() {
  awk -v dir="$1" -v bs="$2" -v hs="$3" -v B="$boot" '
  function med(a, n,   i, j, t, c) {
    for (i = 1; i <= n; i++) c[i] = a[i]
    for (i = 2; i <= n; i++) { t = c[i]; for (j = i - 1; j >= 1 && c[j] > t; j--) c[j + 1] = c[j]; c[j + 1] = t }
    return (n % 2) ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2
  }
  function g(x) { return (x >= 10000 || x <= -10000) ? sprintf("%.0f", x) : sprintf("%.4g", x) }
  BEGIN {
    nb = split(bs, b, " "); nh = split(hs, h, " ")
    for (i = 1; i <= nb; i++) {
      if (b[i] != "NA") bv[++kb] = b[i]
      if (h[i] != "NA") hv[++kh] = h[i]
      if (b[i] != "NA" && h[i] != "NA") {
        if (b[i] + 0 == 0) { if (h[i] + 0 == 0) rt[++n] = 1 } else rt[++n] = h[i] / b[i]
      }
    }
    bm = kb ? g(med(bv, kb)) : "n/a"; hm = kh ? g(med(hv, kh)) : "n/a"
    if (n == 0) { print bm, hm, "n/a", "n/a", "n/a", "-"; exit }
    m = med(rt, n)
    srand(21)
    for (k = 1; k <= B; k++) {
      for (i = 1; i <= n; i++) s[i] = rt[1 + int(rand() * n)]
      bm_[k] = med(s, n)
    }
    for (k = 2; k <= B; k++) { t = bm_[k]; for (j = k - 1; j >= 1 && bm_[j] > t; j--) bm_[j + 1] = bm_[j]; bm_[j + 1] = t }
    lo = bm_[int(0.025 * B) + 1]; hi = bm_[int(0.975 * B)]
    worse = (dir == "lower") ? (m > 1.05 && lo > 1) : (m < 0.95 && hi < 1)
    better = (dir == "lower") ? (m < 0.95 && hi < 1) : (m > 1.05 && lo > 1)
    print bm, hm, sprintf("%.3f", m), sprintf("%.3f", lo), sprintf("%.3f", hi), worse ? "**WORSE**" : better ? "better" : ""
  }'
}

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
echo "compare.sh: base ${label[base]}, head ${label[head]}; $rounds rounds interleaved (order alternating); $ncpu CPUs${cpu:+, $cpu}, Linux $(uname -r)"
echo
echo "| figure | unit | better | base | head | head/base | 95% interval | flag |"
echo "|---|---|---|---|---|---|---|---|"
worse=0
while read -r s fig unit field prog args; do
  c="$prog${args:+ $args}"
  bs="" hs=""
  for ((r = 0; r < rounds; r++)); do
    for side in base head; do
      v=${res[$side\|$c\|$r]}
      [ "$v" != NA ] && v=$(awk -v f="$field" '{print (NF >= f) ? $f : "NA"}' <<<"$v")
      if [ "$side" = base ]; then bs+="$v "; else hs+="$v "; fi
    done
  done
  dir=$(better_of "$unit")
  read -r bm hm m lo hi flag < <(stats "$dir" "$bs" "$hs")
  [ "$flag" = "**WORSE**" ] && worse=1
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$fig" "$unit" "$dir" "$bm" "$hm" \
    "$m" "$([ "$lo" = n/a ] && echo n/a || echo "[$lo, $hi]")" "${flag/-/}"
done <<<"$rows"
echo
echo "head/base: the median of the per-round ratios; interval: 95% percentile bootstrap of that median ($boot resamples); flag: worse (or better) by more than 5% with the interval clear of 1."
for n in "${notes[@]}"; do echo "- $n"; done
((failed)) && echo "compare.sh: a head run failed (see above)" >&2
((worse || failed)) && exit 1
exit 0
