# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2154 # out, here, reps, samples: run.sh's
# bench/suites/net.sh: the net suite, sourced by bench/run.sh (see
# bench/README.md for what each figure measures).

suite_net() {
  build_weft
  cmake --build "$out" -j2 --target bench_net_weft >/dev/null 2>&1 || true
  cmake --build "$out" -j2 --target bench_net_weft_fiber >/dev/null 2>&1 || true
  local impls=() i n v hard cur
  declare -A bin
  if [ -x "$out/bench/bench_net_weft" ]; then
    impls+=(weft); bin[weft]=$out/bench/bench_net_weft
    log "weft's loop: $("${bin[weft]}" backend) (WEFT_IO_URING=0 in the environment: epoll)"
  else
    log "skipped: weft (bench_net_weft not built)"
  fi
  # weft's fiber-per-connection server: weft too, not a peer
  if [ -x "$out/bench/bench_net_weft_fiber" ]; then
    impls+=(weft_fiber); bin[weft_fiber]=$out/bench/bench_net_weft_fiber
  else
    log "skipped: weft_fiber (bench_net_weft_fiber not built)"
  fi
  if [ -f /usr/include/uv.h ] && build_c bench_net_libuv "$here/net_uv.c" -luv; then
    impls+=(libuv); bin[libuv]=$out/bench_net_libuv
  else
    log "skipped: libuv (uv.h or libuv not found: apt-get install libuv1-dev)"
  fi
  if [ -f /usr/include/ev.h ] && build_c bench_net_libev "$here/net_ev.c" -lev; then
    impls+=(libev); bin[libev]=$out/bench_net_libev
  else
    log "skipped: libev (ev.h or libev not found: apt-get install libev-dev)"
  fi
  build_c bench_net_epoll "$here/net_epoll.c" || { echo "net: gcc failed on net_epoll.c" >&2; return 1; }
  impls+=(epoll); bin[epoll]=$out/bench_net_epoll
  if [ -f /usr/include/liburing.h ] && build_c bench_net_uring "$here/net_uring.c" -luring; then
    impls+=(uring); bin[uring]=$out/bench_net_uring
  else
    log "skipped: uring (liburing.h or liburing not found: apt-get install liburing-dev)"
  fi
  build_c bench_net_client "$here/net_client.c" || { echo "net: gcc failed on net_client.c" >&2; return 1; }
  net_secs=${BENCH_NET_SECS:-1}
  net_pin0=(); net_pin1=()
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    net_pin0=(taskset -c 0); net_pin1=(taskset -c 1)
  fi

  # 1000 connections: 1000+ fds in the server and in the client.
  local ns=(1 100 1000)
  hard=$(ulimit -Hn); cur=$(ulimit -Sn)
  if [ "$cur" != unlimited ] && [ "$cur" -lt 4096 ]; then
    if [ "$hard" = unlimited ] || [ "$hard" -ge 4096 ]; then
      ulimit -Sn 4096 2>/dev/null || true
    else
      ulimit -Sn "$hard" 2>/dev/null || true
    fi
  fi
  cur=$(ulimit -Sn)
  if [ "$cur" != unlimited ] && [ "$cur" -lt 2100 ]; then
    log "skipped: net.echo.c1000 (open-file limit $cur, hard limit $hard: needs 2100)"
    ns=(1 100)
  fi

  for n in "${ns[@]}"; do
    for ((r = 0; r < reps; r++)); do
      progress "net.echo.c$n" "$r" "$reps"
      local k m=${#impls[@]}
      for ((k = 0; k < m; k++)); do # who goes first moves on each round
        i=${impls[(r + k) % m]}
        # A run that fails (on a loaded machine a server may echo nothing
        # in the client's window) is run once more before the suite fails.
        v=$(net_once "${bin[$i]}" "$n") ||
          { echo "net: $i c$n failed: running it again" >&2; v=$(net_once "${bin[$i]}" "$n"); } ||
          return 1
        samples[nrps$n.$i]+="${v% *} "
        samples[ncpu$n.$i]+="${v#* } "
      done
    done
    for i in "${impls[@]}"; do
      printf 'net.echo.c%s.rps.%s: %.0f rt/s\n' "$n" "$i" "$(med nrps$n.$i)"
      printf 'net.echo.c%s.cpu_us.%s: %.3f us\n' "$n" "$i" "$(med ncpu$n.$i)"
    done
    if [ -n "${bin[weft]:-}" ] && [ -n "${bin[weft_fiber]:-}" ]; then
      log "ratio net.echo.c$n.cpu_us weft_fiber/weft: $(ratio2 "$(med ncpu$n.weft_fiber)" "$(med ncpu$n.weft)") (per round: $(paired ncpu$n.weft_fiber ncpu$n.weft)) (goal: at most 1.15x); rps weft_fiber/weft: $(ratio2 "$(med nrps$n.weft_fiber)" "$(med nrps$n.weft)")"
    fi
    if [ -n "${bin[weft]:-}" ]; then
      # against the best peer (epoll-based and the io_uring floor apart),
      # then against each; per round: the median of the per-round ratios
      local peers=() bc br
      for i in "${impls[@]}"; do [[ $i != weft* ]] && peers+=("$i"); done
      if [ ${#peers[@]} -gt 0 ]; then
        bc=$(best ncpu$n lower "${peers[@]}")
        br=$(best nrps$n higher "${peers[@]}")
        log "ratio net.echo.c$n.cpu_us best peer ($bc)/weft: $(ratio2 "$(med ncpu$n.$bc)" "$(med ncpu$n.weft)") (per round: $(paired ncpu$n.$bc ncpu$n.weft))"
        log "ratio net.echo.c$n.rps weft/best peer ($br): $(ratio2 "$(med nrps$n.weft)" "$(med nrps$n.$br)") (per round: $(paired nrps$n.weft nrps$n.$br))"
      fi
      [ -n "${bin[uring]:-}" ] &&
        log "ratio net.echo.c$n.cpu_us weft/uring: $(ratio2 "$(med ncpu$n.weft)" "$(med ncpu$n.uring)") (per round: $(paired ncpu$n.weft ncpu$n.uring)) (goal at c100, c1000: at most 1.10x)"
      for i in libev libuv epoll; do
        [ -n "${bin[$i]:-}" ] || continue
        log "ratio net.echo.c$n.cpu_us $i/weft: $(ratio2 "$(med ncpu$n.$i)" "$(med ncpu$n.weft)") (per round: $(paired ncpu$n.$i ncpu$n.weft)); rps weft/$i: $(ratio2 "$(med nrps$n.weft)" "$(med nrps$n.$i)")"
      done
    fi
  done
  return 0
}
