#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/check_exports.sh: fail if libweft.so exports any symbol whose name
# does not start with weft_ (everything else must have hidden visibility).
# Only defined dynamic symbols count; the linker-made _init/_fini and
# __bss_start/_edata/_end markers are not code of ours and are ignored.
set -eu
lib=${1:?usage: check_exports.sh path/to/libweft.so}
syms=$(nm -D --defined-only "$lib" | awk '{print $NF}')
[ -n "$syms" ] || { echo "no exported symbols found in $lib"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -v -E '^(weft_|_init$|_fini$|__bss_start$|_edata$|_end$)' || true)
if [ -n "$bad" ]; then
  echo "symbols exported without the weft_ prefix:"; printf '  %s\n' $bad; exit 1
fi
echo "$(printf '%s\n' "$syms" | grep -c '^weft_') exported symbols, all weft_"
