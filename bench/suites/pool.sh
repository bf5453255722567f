# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # out, here, reps, samples: run.sh's
# bench/suites/pool.sh: the pool suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

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
  local off=(weft)
  if [ -f /usr/include/uv.h ] && build_c bench_pool_libuv "$here/pool_uv.c" -luv; then
    off+=(libuv)
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  build_c bench_pool_naive "$here/pool_naive.c" && off+=(naive)

  for t in 1 "$n"; do
    cmd_weft=("$w" fib "$t" 32); cmd_tbb=("$out/bench_pool_tbb" fib "$t" 32)
    cmd_omp=("$out/bench_pool_omp" fib "$t" 32)
    collect "fib$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "fib.${t}t.$i: $(med fib$t.$i) ns/task"; done
    cmd_weft=("$w" skynet "$t"); cmd_tbb=("$out/bench_pool_tbb" skynet "$t")
    cmd_omp=("$out/bench_pool_omp" skynet "$t")
    collect "sky$t" "${fj[@]}"
    for i in "${fj[@]}"; do echo "skynet.${t}t.$i: $(med sky$t.$i) ms"; done
  done
  cmd_weft=("$w" offload "$n" 1000000); cmd_libuv=("$out/bench_pool_libuv" 1000000)
  cmd_naive=("$out/bench_pool_naive" 1000000)
  collect offload "${off[@]}"
  for i in "${off[@]}"; do echo "pool.offload.$i: $(med offload.$i) jobs/s"; done
  cmd_weft=("$w" offload_then "$n" 1000000)
  collect offthen weft
  echo "pool.offload_then.weft: $(med offthen.weft) jobs/s"
  echo "pool.idle_cpu.weft: $("$w" idle_cpu "$n") ms"

  log "ratio fib.${n}t scaling weft 1t/${n}t: $(ratio2 "$(med fib1.weft)" "$(med fib$n.weft)")"
  for i in tbb omp; do
    [[ " ${fj[*]} " == *" $i "* ]] || continue
    log "ratio fib.1t $i/weft: $(ratio2 "$(med fib1.$i)" "$(med fib1.weft)")"
    log "ratio fib.${n}t $i/weft: $(ratio2 "$(med fib$n.$i)" "$(med fib$n.weft)")"
    log "ratio skynet.1t $i/weft: $(ratio2 "$(med sky1.$i)" "$(med sky1.weft)")"
    log "ratio skynet.${n}t $i/weft: $(ratio2 "$(med sky$n.$i)" "$(med sky$n.weft)")"
  done
  for i in libuv naive; do
    [[ " ${off[*]} " == *" $i "* ]] || continue
    log "ratio pool.offload weft/$i: $(ratio2 "$(med offload.weft)" "$(med offload.$i)")"
  done
  return 0
}
