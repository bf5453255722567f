# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # out, here, reps, samples: run.sh's
# bench/suites/pool.sh: the pool suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

# Compile pool_omp.c with clang against LLVM's libomp, cached like build_c;
# returns 1 when clang or libomp is missing.
build_omp_llvm() {
  command -v clang >/dev/null || return 1
  local name=bench_pool_omp_llvm
  [ "$out/$name" -nt "$here/pool_omp.c" ] && return 0
  clang -O2 -DNDEBUG -pthread "$here/pool_omp.c" -o "$out/$name" \
    -fopenmp=libomp 2>/dev/null
}

suite_pool() {
  build_weft
  local w=$out/bench/bench_pool_weft n
  n=$(nproc)
  local fj=(weft)
  if [ -f /usr/include/oneapi/tbb/task_group.h ] &&
     build_cxx bench_pool_tbb "$here/pool_tbb.cpp" -ltbb; then
    fj+=(tbb)
  else
    log "skipped: tbb (oneapi/tbb/task_group.h or libtbb not found: apt-get install libtbb-dev)"
  fi
  if build_c bench_pool_omp "$here/pool_omp.c" -fopenmp; then
    fj+=(omp)
  else
    log "skipped: omp (gcc -fopenmp failed: apt-get install gcc)"
  fi
  if build_omp_llvm; then
    fj+=(omp_llvm)
  else
    log "skipped: omp_llvm (clang -fopenmp=libomp failed: apt-get install clang libomp-dev)"
  fi
  local off=(weft)
  if [ -f /usr/include/uv.h ] && build_c bench_pool_libuv "$here/pool_uv.c" -luv; then
    off+=(libuv libuv_default4)
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  build_c bench_pool_naive "$here/pool_naive.c" && off+=(naive)

  # Both OpenMP runtimes run with their defaults, whatever the caller's
  # environment says: the thread count comes from the command line
  # (omp_set_num_threads), the wait policy is each runtime's own.
  local omp_env=(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT -u OMP_DYNAMIC
    -u OMP_WAIT_POLICY -u OMP_PROC_BIND -u OMP_PLACES -u GOMP_SPINCOUNT
    -u KMP_BLOCKTIME -u KMP_AFFINITY -u KMP_LIBRARY)
  for t in 1 "$n"; do
    cmd_weft=("$w" fib "$t" 32); cmd_tbb=("$out/bench_pool_tbb" fib "$t" 32)
    cmd_omp=("${omp_env[@]}" "$out/bench_pool_omp" fib "$t" 32)
    cmd_omp_llvm=("${omp_env[@]}" "$out/bench_pool_omp_llvm" fib "$t" 32)
    collect "fib$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "fib.${t}t.$i: $(med fib$t.$i) ns/task"; done
    cmd_weft=("$w" skynet "$t"); cmd_tbb=("$out/bench_pool_tbb" skynet "$t")
    cmd_omp=("${omp_env[@]}" "$out/bench_pool_omp" skynet "$t")
    cmd_omp_llvm=("${omp_env[@]}" "$out/bench_pool_omp_llvm" skynet "$t")
    collect "sky$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "skynet.${t}t.$i: $(med sky$t.$i) ms"; done
  done
  # pool.offload: 1,000,000 jobs, at most `win` in flight, completions back
  # on the submitting thread. libuv: one pool thread per CPU like weft and
  # naive (the main row), and its default of 4 threads as its own row.
  local win=65536
  cmd_weft=("$w" offload "$n" 1000000 "$win")
  cmd_libuv=(env UV_THREADPOOL_SIZE="$n" "$out/bench_pool_libuv" 1000000 "$win")
  cmd_libuv_default4=(env -u UV_THREADPOOL_SIZE "$out/bench_pool_libuv"
    1000000 "$win")
  cmd_naive=("$out/bench_pool_naive" 1000000 "$win")
  collect offload "${off[@]}"
  for i in "${off[@]}"; do echo "pool.offload.$i: $(med offload.$i) jobs/s"; done
  local offi=(weft)
  [[ " ${off[*]} " == *" naive "* ]] && offi+=(naive)
  cmd_weft=("$w" offload_inline "$n" 1000000)
  cmd_naive=("$out/bench_pool_naive" 1000000 inline)
  collect offinl "${offi[@]}"
  for i in "${offi[@]}"; do echo "pool.offload_inline.$i: $(med offinl.$i) jobs/s"; done
  cmd_weft=("$w" offload_then "$n" 1000000 "$win")
  collect offthen weft
  echo "pool.offload_then.weft: $(med offthen.weft) jobs/s"
  echo "pool.idle_cpu.weft: $("$w" idle_cpu "$n") ms"

  log "ratio fib.${n}t scaling weft 1t/${n}t: $(ratio2 "$(med fib1.weft)" "$(med fib$n.weft)")"
  for i in tbb omp omp_llvm; do
    [[ " ${fj[*]} " == *" $i "* ]] || continue
    log "ratio fib.1t $i/weft: $(ratio2 "$(med fib1.$i)" "$(med fib1.weft)")"
    log "ratio fib.${n}t $i/weft: $(ratio2 "$(med fib$n.$i)" "$(med fib$n.weft)")"
    log "ratio skynet.1t $i/weft: $(ratio2 "$(med sky1.$i)" "$(med sky1.weft)")"
    log "ratio skynet.${n}t $i/weft: $(ratio2 "$(med sky$n.$i)" "$(med sky$n.weft)")"
  done
  if [[ " ${fj[*]} " == *" omp_llvm "* && " ${fj[*]} " == *" omp "* ]]; then
    log "ratio fib.${n}t omp_llvm/omp: $(ratio2 "$(med fib$n.omp_llvm)" "$(med fib$n.omp)")"
    log "ratio skynet.${n}t omp_llvm/omp: $(ratio2 "$(med sky$n.omp_llvm)" "$(med sky$n.omp)")"
  fi
  for i in libuv libuv_default4 naive; do
    [[ " ${off[*]} " == *" $i "* ]] || continue
    log "ratio pool.offload weft/$i: $(ratio2 "$(med offload.weft)" "$(med offload.$i)")"
  done
  [[ " ${offi[*]} " == *" naive "* ]] &&
    log "ratio pool.offload_inline weft/naive: $(ratio2 "$(med offinl.weft)" "$(med offinl.naive)")"
  return 0
}
