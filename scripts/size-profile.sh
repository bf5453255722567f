#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/size-profile.sh: the size profile of the library's sources. Per
# directory: the number of functions and the median, 90th percentile and
# maximum function length (lines from the first line of the signature to
# the closing brace, both included; nearest-rank percentiles), with the
# longest function; then every file and every function over the limits.
#
#   bash scripts/size-profile.sh [--check] [--all] [DIR...]
#     DIR       directories to profile, each on its own (not recursive);
#               default: every directory under lib/, pool/ and loop/ that
#               holds .c files
#     --check   exit 1 if a file or a function is over its limit
#     --all     also print every function: length, file:line, name
# Environment: WEFT_MAX_FILE_LINES (700), WEFT_MAX_FN_LINES (70).
#
# Counted: the .c and .h files of each directory (inline functions in a
# header are functions too). A function is a brace block at file scope
# whose heading ends with ")" (optionally followed by all-caps attribute
# macros); comments, strings and preprocessor lines are skipped, and the
# branches of an #if are assumed to open as many braces as each other (the
# first branch counts).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0 all=0 dirs=()
for a in "$@"; do
  case "$a" in
    --check) check=1 ;;
    --all) all=1 ;;
    -h | --help) sed -n '3,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "usage: $0 [--check] [--all] [DIR...]" >&2; exit 2 ;;
    *) dirs+=("${a%/}") ;;
  esac
done
if ((${#dirs[@]} == 0)); then
  mapfile -t dirs < <(find lib pool loop runtime -name '*.c' -printf '%h\n' | LC_ALL=C sort -u)
fi
max_file=${WEFT_MAX_FILE_LINES:-700}
max_fn=${WEFT_MAX_FN_LINES:-70}

# One line per function: dir <TAB> length <TAB> file:line <TAB> name
functions() { # file...
  awk '
    function reset_head() { head = ""; head_line = 0 }
    # the function name: the identifier before the first parameter list
    # (parentheses of __attribute__ and the like are skipped)
    function fn_name(h,   i, c, pd, pre, id) {
      pd = 0
      for (i = 1; i <= length(h); i++) {
        c = substr(h, i, 1)
        if (c == "(") {
          if (pd == 0) {
            pre = substr(h, 1, i - 1)
            if (match(pre, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)) {
              id = substr(pre, RSTART, RLENGTH)
              sub(/[ \t]+$/, "", id)
              if (id !~ /^(__attribute__|__attribute|__declspec|_Alignas|__typeof__|typeof)$/)
                return id
            }
          }
          pd++
        } else if (c == ")") pd--
      }
      return "?"
    }
    FNR == 1 {
      depth = 0; in_comment = 0; pp_cont = 0; infn = 0; nif = 0
      reset_head()
      dir = FILENAME; sub(/\/[^\/]*$/, "", dir)
    }
    {
      line = $0
      if (pp_cont) { # a preprocessor line continued with a backslash
        pp_cont = (line ~ /\\[ \t]*$/)
        next
      }
      if (!in_comment && line ~ /^[ \t]*#/) {
        pp_cont = (line ~ /\\[ \t]*$/)
        d = line; sub(/^[ \t]*#[ \t]*/, "", d)
        if (d ~ /^if/) { nif++; if_depth[nif] = depth; if_else[nif] = 0 }
        else if (d ~ /^(elif|else)/ && nif > 0) {
          if (!if_else[nif]) { if_else[nif] = 1; if_after[nif] = depth }
          depth = if_depth[nif]
        } else if (d ~ /^endif/ && nif > 0) {
          if (if_else[nif]) depth = if_after[nif]
          nif--
        }
        next
      }
      n = length(line)
      for (i = 1; i <= n; i++) {
        c = substr(line, i, 1)
        if (in_comment) {
          if (c == "*" && substr(line, i + 1, 1) == "/") { in_comment = 0; i++ }
          continue
        }
        if (c == "/" && substr(line, i + 1, 1) == "*") { in_comment = 1; i++; continue }
        if (c == "/" && substr(line, i + 1, 1) == "/") break
        if (c == "\"" || c == "\047") { # a string or character literal
          q = c
          for (i++; i <= n; i++) {
            c = substr(line, i, 1)
            if (c == "\\") { i++; continue }
            if (c == q) break
          }
          if (depth == 0) { if (head_line == 0) head_line = FNR; head = head q q }
          continue
        }
        if (c == "{") {
          if (depth == 0) {
            h = head; gsub(/[ \t]+/, " ", h)
            if (h ~ /\)( ?[A-Z_][A-Z0-9_]*)* ?$/) {
              infn = 1; fn_start = head_line; name = fn_name(h)
            }
          }
          depth++
          continue
        }
        if (c == "}") {
          if (depth > 0) depth--
          if (depth == 0) {
            if (infn)
              printf "%s\t%d\t%s:%d\t%s\n", dir, FNR - fn_start + 1, FILENAME, fn_start, name
            infn = 0
            reset_head()
          }
          continue
        }
        if (depth == 0) {
          if (c == ";") { reset_head(); continue }
          if (head_line == 0 && c !~ /[ \t]/) head_line = FNR
          if (head_line != 0) head = head c
        }
      }
      if (depth == 0 && head_line != 0) head = head " "
    }
  ' "$@"
}

sources() { # dir: its .c files, then its .h files, into files[]
  files=()
  local f
  for f in "$1"/*.c "$1"/*.h; do
    [ -e "$f" ] && files+=("$f")
  done
  [[ "${files[0]:-}" == *.c ]] || files=() # no .c file: not a source folder
}

over=0
report=$(
  for d in "${dirs[@]}"; do
    sources "$d"
    ((${#files[@]})) || { echo "size-profile: no .c files in $d" >&2; exit 2; }
    functions "${files[@]}"
  done
)
echo "# size profile: function length = lines from signature to closing brace;" \
  "limits: file $max_file lines, function $max_fn lines"
printf '%-12s %5s %6s %5s %6s %4s %4s  %s\n' dir files lines funcs median p90 max longest
for d in "${dirs[@]}"; do
  sources "$d"
  lines=$(cat "${files[@]}" | wc -l)
  grep -P "^\Q$d\E\t" <<<"$report" | LC_ALL=C sort -t$'\t' -k2,2n |
    awk -F'\t' -v dir="$d" -v nfiles="${#files[@]}" -v lines="$lines" '
      { len[NR] = $2; where[NR] = $3; name[NR] = $4 }
      function rank(p,   k) { k = int(p * NR); if (k < p * NR) k++; if (k < 1) k = 1; return len[k] }
      END {
        if (NR == 0) { printf "%-12s %5d %6d %5d\n", dir, nfiles, lines, 0; exit }
        printf "%-12s %5d %6d %5d %6d %4d %4d  %s (%s)\n", dir, nfiles, lines, NR,
          rank(0.5), rank(0.9), len[NR], name[NR], where[NR]
      }'
done

for d in "${dirs[@]}"; do
  sources "$d"
  for f in "${files[@]}"; do
    n=$(wc -l <"$f")
    if ((n > max_file)); then
      echo "over: file $f: $n lines (limit $max_file)"
      over=1
    fi
  done
done
while IFS=$'\t' read -r _ len where name; do
  [ -n "$len" ] || continue
  if ((len > max_fn)); then
    echo "over: function $name ($where): $len lines (limit $max_fn)"
    over=1
  fi
done < <(LC_ALL=C sort -t$'\t' -k2,2nr <<<"$report")
if ((all)); then
  echo "# every function: length file:line name"
  LC_ALL=C sort -t$'\t' -k2,2nr <<<"$report" | awk -F'\t' '{ printf "%5d %s %s\n", $2, $3, $4 }'
fi
if ((check && over)); then
  exit 1
fi
exit 0
