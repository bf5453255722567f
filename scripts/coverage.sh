#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/coverage.sh: line and branch coverage of the library by the whole
# test suite (docs/testing.md, "Coverage"). Builds weft with gcov
# instrumentation (gcc --coverage, -O0, NDEBUG as in a release build;
# counters updated atomically, as the library's threads share them) in its
# own folder, runs every ctest entry there, then prints line and branch
# coverage of lib/, pool/ and loop/ and their total, and every public
# function (WEFT_EXTERN in include/weft/*.h) that no test called.
#
#   bash scripts/coverage.sh [--html] [--no-build] [--files]
#     --html      also write an annotated report, build/coverage/html/index.html
#     --no-build  report the counters of the last run without rebuilding or
#                 rerunning the tests
#     --files     also print the figures of each file
# Environment: WEFT_COVERAGE_DIR (default build/coverage), WEFT_JOBS (2),
# WEFT_COVERAGE_TESTS (a ctest -R regex: run only those entries).
#
# Counted: every source of the library; lib/testing.c is left out, as it is
# the test seam (compiled to nothing in the shipped library), not library
# code. Branches: gcovr's --exclude-unreachable-branches drops the branches
# gcc generates on lines without code; nothing else is excluded.
# Exit status: 0 when the tests passed (whatever the figures), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${WEFT_COVERAGE_DIR:-$root/build/coverage}
jobs=${WEFT_JOBS:-2}
html=0 build=1 files=0
for a in "$@"; do
  case $a in
    --html) html=1 ;;
    --no-build) build=0 ;;
    --files) files=1 ;;
    *) echo "usage: $0 [--html] [--no-build] [--files]" >&2; exit 2 ;;
  esac
done

need=()
for pkg in cmake make gcc libcunit1-dev gcovr python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "== installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

tests_ok=1
if ((build)); then
  echo "== coverage build ($dir)"
  cmake -S "$root" -B "$dir" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_C_FLAGS="--coverage -fprofile-update=atomic -O0 -g -DNDEBUG" \
    -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage \
    -DWEFT_BUILD_BENCH=OFF -DWEFT_BUILD_TESTS=ON -DWEFT_BUILD_SAMPLES=ON >/dev/null
  cmake --build "$dir" -j"$jobs" >/dev/null
  # Counters of an earlier run would add to this one's.
  find "$dir" -name '*.gcda' -delete
  echo "== coverage tests"
  t0=$SECONDS
  # weft.exports is left out: the gcov runtime linked into libweft.so
  # exports its own symbols.
  args=(--test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs"
    -E "^weft\.exports\$")
  [ -n "${WEFT_COVERAGE_TESTS:-}" ] && args+=(-R "$WEFT_COVERAGE_TESTS")
  ctest "${args[@]}" || tests_ok=0
  echo "== coverage tests: $([ $tests_ok = 1 ] && echo ok || echo FAILED) ($((SECONDS - t0)) s)"
fi

json=$dir/coverage.json
objs=$dir/CMakeFiles
gcovr_args=(-r "$root" --object-directory "$dir"
  --filter "$root/lib/" --filter "$root/pool/" --filter "$root/loop/"
  --exclude "$root/lib/testing.c" --exclude-unreachable-branches)
# The shared and the testing library compile the same sources: one report
# per source, counters added.
gcovr "${gcovr_args[@]}" --json "$json" "$objs/weft_objects.dir" "$objs/weft_testing.dir"
# The suites (weft_tests) link weft_testing alone: its counters tell which
# public functions a suite called (the samples' ctest entries use libweft).
gcovr "${gcovr_args[@]}" --json "$dir/coverage-suites.json" "$objs/weft_testing.dir"
if ((html)); then
  mkdir -p "$dir/html"
  gcovr "${gcovr_args[@]}" --html-details "$dir/html/index.html" \
    "$objs/weft_objects.dir" "$objs/weft_testing.dir"
  echo "== html report: $dir/html/index.html"
fi

python3 - "$json" "$root" "$files" "$dir/coverage-suites.json" <<'EOF'
import json, os, re, sys
path, root, per_file, suites = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
data = json.load(open(path))
dirs = ["lib", "pool", "loop"]
tot = {d: [0, 0, 0, 0] for d in dirs + ["total"]}  # lines hit/all, branches
called = {}
rows = []
for f in data["files"]:
    name = f["file"]
    d = name.split("/", 1)[0]
    if d not in dirs:
        continue
    c = [0, 0, 0, 0]
    for ln in f["lines"]:
        if ln.get("gcovr/noncode"):
            continue
        c[1] += 1
        c[0] += ln["count"] > 0
        for b in ln["branches"]:
            c[3] += 1
            c[2] += b["count"] > 0
    for fn in f.get("functions", []):
        called[fn["name"]] = called.get(fn["name"], 0) + fn["execution_count"]
    rows.append((name, c))
    for k in (d, "total"):
        tot[k] = [a + b for a, b in zip(tot[k], c)]

def pct(a, b):
    return "%6.2f%%" % (100.0 * a / b) if b else "   n/a "

def line(label, c):
    print("%-22s lines %s (%5d/%5d)  branches %s (%5d/%5d)"
          % (label, pct(c[0], c[1]), c[0], c[1], pct(c[2], c[3]), c[2], c[3]))

if per_file:
    print("== coverage per file")
    for name, c in sorted(rows):
        line(name, c)
print("== coverage per directory (goal: lines >= 95%, branches >= 85%)")
for k in dirs + ["total"]:
    line(k + ("/" if k != "total" else ""), tot[k])

# Public functions: every WEFT_EXTERN declaration in the public headers.
public = []
inc = os.path.join(root, "include", "weft")
for h in sorted(os.listdir(inc)):
    if not (h.endswith(".h") or h.endswith(".h.in")):
        continue
    text = open(os.path.join(inc, h)).read()
    for m in re.finditer(r"WEFT_EXTERN\b[^;{(]*?\b(weft_\w+)\s*\(", text):
        public.append((m.group(1), h))
by_suites = {}
for f in json.load(open(suites))["files"]:
    for fn in f.get("functions", []):
        by_suites[fn["name"]] = by_suites.get(fn["name"], 0) + fn["execution_count"]
uncalled = [(n, h) for n, h in public if called.get(n, 0) == 0]
print("== public functions called by no test: %d of %d" % (len(uncalled), len(public)))
for n, h in uncalled:
    print("   %-40s %s%s" % (n, h, "" if n in called else " (no counters: not built?)"))
only = [(n, h) for n, h in public if called.get(n, 0) and not by_suites.get(n, 0)]
print("== of the others, called only by a sample, by no suite: %d" % len(only))
for n, h in only:
    print("   %-40s %s" % (n, h))
EOF
[ $tests_ok = 1 ] || { echo "== some tests FAILED"; exit 1; }
