# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154,SC2034 # out, here, reps, samples: run.sh's; cmd_*: read by collect
# bench/suites/file.sh: the file suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

# The 256 MiB file both programs read, made once under the bench folder.
file_make() {
  local f=$out/file_read_4k.dat
  if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != 268435456 ]; then
    head -c 268435456 /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
  fi
  echo "$f"
}

suite_file() {
  build_weft
  cmake --build "$out" -j2 --target bench_file_weft >/dev/null
  local w=$out/bench/bench_file_weft impls=(weft) i f
  if pkg-config --exists libuv &&
     build_c bench_file_libuv "$here/file_uv.c" $(pkg-config --cflags --libs libuv); then
    impls+=(libuv)
  else
    log "skipped: file.read_4k.libuv (libuv not found: apt-get install libuv1-dev)"
  fi
  f=$(file_make)
  cat "$f" >/dev/null # page cache warm for both
  # read_4k: 200,000 random 4 KiB reads (the same offsets for both), 64 in
  # flight; weft on its loop's io_uring where the kernel has one, libuv on
  # its thread pool (uv_fs_read)
  local n=${FILE_READS:-200000} q=64
  cmd_weft=("$w" "$f" "$n" "$q"); cmd_libuv=("$out/bench_file_libuv" "$f" "$n" "$q")
  collect read_4k "${impls[@]}"
  for i in "${impls[@]}"; do echo "file.read_4k.$i: $(med "read_4k.$i") reads/s"; done
  if [[ " ${impls[*]} " == *" libuv "* ]]; then
    echo "# ratio file.read_4k weft/libuv: $(paired read_4k.weft read_4k.libuv) (goal: at least 1.00x)"
  fi
  # the same without the ring: weft's blocking path against libuv's pool
  cmd_weft_epoll=(env WEFT_IO_URING=0 "$w" "$f" "$n" "$q")
  collect read_4k "weft_epoll"
  echo "file.read_4k.weft_epoll: $(med read_4k.weft_epoll) reads/s"
  if [[ " ${impls[*]} " == *" libuv "* ]]; then
    echo "# ratio file.read_4k weft_epoll/libuv: $(paired read_4k.weft_epoll read_4k.libuv)"
  fi
}
