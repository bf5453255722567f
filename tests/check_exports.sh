#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/check_exports.sh: fail if libweft.so exports any symbol whose name
# does not start with weft_ (everything else must have hidden visibility),
# or if the weft_ symbols it exports are not exactly the functions the
# public headers declare with WEFT_EXTERN (a renamed function must leave no
# old name behind, and every declared one must exist).
# Only defined dynamic symbols count; the linker-made _init/_fini and
# __bss_start/_edata/_end markers are not code of ours and are ignored.
# The lists are split into words on purpose (one symbol a line).
# shellcheck disable=SC2086
set -eu
lib=${1:?usage: check_exports.sh path/to/libweft.so}
inc=$(dirname "$0")/../include
syms=$(nm -D --defined-only "$lib" | awk '{print $NF}')
[ -n "$syms" ] || { echo "no exported symbols found in $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v -E '^(weft_|_init$|_fini$|__bss_start$|_edata$|_end$)' || true)
if [ -n "$bad" ]; then
  echo "symbols exported without the weft_ prefix:"; printf '  %s\n' $bad; exit 1
fi
exported=$(printf '%s\n' "$syms" | grep '^weft_' | sort -u)
# (a declaration may span lines: the headers are read as one line)
declared=$(cat "$inc"/weft/*.h "$inc"/weft/*.h.in | tr '\n' ' ' |
  grep -o 'WEFT_EXTERN[^;(]*(' | grep -o 'weft_[a-z0-9_]*($' | tr -d '(' |
  sort -u)
extra=$(printf '%s\n' "$exported" | grep -vxF "$declared" || true)
missing=$(printf '%s\n' "$declared" | grep -vxF "$exported" || true)
if [ -n "$extra" ] || [ -n "$missing" ]; then
  [ -z "$extra" ] || { echo "exported but declared in no public header:"; printf '  %s\n' $extra; }
  [ -z "$missing" ] || { echo "declared WEFT_EXTERN but not exported:"; printf '  %s\n' $missing; }
  exit 1
fi
echo "$(printf '%s\n' "$exported" | wc -l) exported symbols, all weft_, as the headers declare"
