#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/fuzz.sh <seconds> [libFuzzer options...]: builds the libFuzzer
# target tests/fuzz/fuzz_model.c (clang, -fsanitize=fuzzer,address,undefined,
# the library instrumented for coverage) in build/fuzz and runs it for the
# given time on 1 job, keeping its corpus in build/fuzz/corpus.
# A failing input is written as build/fuzz/crash-<sha1>; reproduce it with
#   build/fuzz/tests/fuzz/fuzz_model build/fuzz/crash-<sha1>
# (the interleaving of the 4 driver threads varies: run it a few times).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
dir=build/fuzz
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
  -DWEFT_BUILD_FUZZ=ON -DWEFT_SANITIZE=address,undefined \
  -DWEFT_BUILD_SAMPLES=OFF -DWEFT_BUILD_BENCH=OFF \
  -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
cmake --build "$dir" -j"${WEFT_JOBS:-2}" --target fuzz_model >/dev/null
mkdir -p "$dir/corpus"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
exec "$dir/tests/fuzz/fuzz_model" -max_total_time="$secs" -timeout=60 \
  -rss_limit_mb=4096 -max_len=4096 -len_control=0 -print_final_stats=1 \
  -artifact_prefix="$dir/" "$@" "$dir/corpus"
