#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/check-format.sh: checks that the C sources follow .clang-format
# (clang-format --dry-run -Werror), or applies it with --fix. The one list
# of covered files is below (covered_files); nothing else should apply the
# layout.
#
#   bash scripts/check-format.sh          exit 1 and list the files whose
#                                         layout differs; 0 when none does
#   bash scripts/check-format.sh --fix    rewrite those files in place
#   bash scripts/check-format.sh --list   print the covered files
# Environment: CLANG_FORMAT (default clang-format), WEFT_SKIP_FORMAT=1 to
# skip the check (exit 0) where clang-format cannot be installed.
#
# The layout was set with clang-format 14; other major versions may break
# some lines differently, so CI should run 14 (Debian 12: apt-get install
# clang-format; elsewhere clang-format-14).
set -euo pipefail
cd "$(dirname "$0")/.."

# C sources of the product, its tests, samples, benchmarks and tools.
# include/weft/version.h.in is left out: clang-format splits its
# @PROJECT_VERSION_MAJOR@ placeholders.
covered_files() {
  local dirs=(include lib pool loop runtime tests samples bench scripts)
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local pats=() d
    for d in "${dirs[@]}"; do pats+=("$d/*.c" "$d/*.h" "$d/*.cpp"); done
    git ls-files -- "${pats[@]}"
  else
    find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cpp' \) |
      LC_ALL=C sort
  fi
}

mode=check
case "${1:-}" in
  "") ;;
  --fix) mode=fix ;;
  --list) covered_files; exit 0 ;;
  -h | --help) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--fix | --list]" >&2; exit 2 ;;
esac

if [ "${WEFT_SKIP_FORMAT:-0}" = 1 ]; then
  echo "# skipped: WEFT_SKIP_FORMAT=1"
  exit 0
fi
cf=${CLANG_FORMAT:-clang-format}
if ! command -v "$cf" >/dev/null 2>&1; then
  echo "check-format: $cf not found. Install it (Debian/Ubuntu:" \
    "sudo apt-get install clang-format; the layout was set with version 14)," \
    "point CLANG_FORMAT at it, or set WEFT_SKIP_FORMAT=1 to skip this check." >&2
  exit 2
fi
ver=$("$cf" --version | sed -n 's/.*version \([0-9][0-9]*\).*/\1/p')
if [ "$ver" != 14 ]; then
  echo "# warning: $cf is version ${ver:-unknown}; the layout was set with 14," \
    "so a difference may come from the version" >&2
fi

mapfile -t files < <(covered_files)
if [ "$mode" = fix ]; then
  "$cf" -i --style=file "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
  exit 0
fi

bad=()
for f in "${files[@]}"; do
  "$cf" --dry-run -Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from .clang-format" \
    "(see: $cf --dry-run FILE; fix: bash scripts/check-format.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} files ok"
