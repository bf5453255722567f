#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/test.sh: the one test command (README, .ci/run). Installs what the
# tests need when it is missing, then builds and tests weft five ways:
# gcc, clang (warnings as errors), ASan+UBSan, TSan, and a consumer project
# built against the installed library (find_package and pkg-config).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
top=${WEFT_TEST_DIR:-$root/build/test}
jobs=${WEFT_JOBS:-2}

need=()
for pkg in cmake make gcc clang clang-format pkg-config libcunit1-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "== installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

failed=()
step() { # name, command...
  local name=$1; shift
  echo "== $name"
  local t0=$SECONDS
  if "$@"; then echo "== $name: ok ($((SECONDS - t0)) s)"
  else echo "== $name: FAILED"; failed+=("$name"); fi
}

configure_build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -DWEFT_BUILD_BENCH=OFF "$@" >/dev/null &&
    cmake --build "$dir" -j"$jobs" >/dev/null
}

run_ctest() { # dir
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1"
  ctest --test-dir "$1" --output-on-failure --timeout 900
}

# TSan needs a mapping layout it knows: disable ASLR for it when the kernel
# randomises more than TSan supports.
tsan_ctest() {
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
  if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ]; then
    setarch "$(uname -m)" -R ctest --test-dir "$1" --output-on-failure --timeout 900
  else
    run_ctest "$1"
  fi
}

consumer() {
  local prefix=$top/prefix moved=$top/moved
  rm -rf "$prefix" "$moved"
  cmake --install "$top/gcc" --prefix "$prefix" >/dev/null || return 1
  cmake -S "$root/tests/consumer" -B "$top/consumer" \
    -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
    cmake --build "$top/consumer" >/dev/null &&
    LD_LIBRARY_PATH="$prefix/lib" "$top/consumer/consumer" || return 1
  local libdir
  libdir=$(dirname "$(find "$prefix" -name weft.pc | head -n1)")/..
  # pkg-config, then again after moving the tree (the .pc is relocatable).
  for p in "$prefix" "$moved"; do
    [ "$p" = "$moved" ] && mv "$prefix" "$moved" && libdir=${libdir/$prefix/$moved}
    PKG_CONFIG_PATH="$libdir/pkgconfig" sh -c \
      'cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags weft) "$0" -o "$1" $(pkg-config --libs weft)' \
      "$root/tests/consumer/main.c" "$top/consumer/consumer_pc" || return 1
    LD_LIBRARY_PATH="$libdir" "$top/consumer/consumer_pc" || return 1
  done
}

step "format" bash "$root/scripts/check-format.sh"
step "sizes" bash "$root/scripts/size-profile.sh" --check
step "gcc build" configure_build "$top/gcc" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo
step "gcc tests" run_ctest "$top/gcc"
step "clang build" configure_build "$top/clang" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo
step "asan+ubsan build" configure_build "$top/asan" -DCMAKE_BUILD_TYPE=Debug -DWEFT_SANITIZE=address,undefined
step "asan+ubsan tests" run_ctest "$top/asan"
step "tsan build" configure_build "$top/tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_SANITIZE=thread
step "tsan tests" tsan_ctest "$top/tsan"
# The portable switch (what platforms without a routine of ours get), and
# the routines alone (aarch64 under qemu where its tools are installed).
step "ucontext build" configure_build "$top/ucontext" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_BUILD_SAMPLES=OFF -DWEFT_FIBER_UCONTEXT=ON
step "ucontext fiber tests" ctest --test-dir "$top/ucontext" --output-on-failure --timeout 900 -R '^weft\.(fiber_|scope)'
step "switch alone" bash "$root/scripts/check-switch.sh"
step "installed consumer (find_package, pkg-config, relocated)" consumer

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all test steps passed"
