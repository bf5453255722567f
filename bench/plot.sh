#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/plot.sh RUN_TXT DIR: draws a saved bench/run.sh output (lines
# "<suite>.<case>.<impl>: <value> <unit>") as SVG bar charts in DIR, one
# chart per case family, weft beside each peer, with gnuplot. The family of
# a figure comes from the rules below (first match on the figure's name
# without its implementation; a figure no rule matches goes to a chart of
# its suite), so new rows and implementations need no change here. A family
# whose figures mix rates (.../s), counts (allocs, bytes) and times gets one
# chart per kind; a chart whose values span more than 30x has a log scale.
# Writes DIR/<chart>.svg and DIR/charts.txt ("<file>\t<title>" per chart,
# for bench/report.sh), removing the charts the previous charts.txt listed.
# Without gnuplot it prints a "# skipped: plots" line and exits 0.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
run=$1 dir=$2
[ -r "$run" ] || { echo "plot.sh: cannot read $run" >&2; exit 2; }
if ! command -v gnuplot >/dev/null; then
  echo "# skipped: plots (gnuplot not found: apt-get install gnuplot-nox)"
  exit 0
fi
mkdir -p "$dir"

# Case families: a regular expression on the figure name without the
# implementation, the chart's file name, its title. First match wins.
rules() {
  cat <<'EOF'
^future\.(allocs|bytes)	future-memory	futures: allocations and bytes
^future\.	futures	futures: time per operation
^(fib|skynet)\.	fork-join	fork-join at 1 and N threads
^(pool|loop)\.offload_rtt	offload-rtt	offload: one job's round trip
^(pool|loop)\.offload	offload	offload: many small jobs
^pool\.	pool-other	pool
^loop\.timer\.	timers	timers
^loop\.post_pingpong	wake	cross-thread wake (round trip)
^net\.echo\.c[0-9]+\.rps	echo-rps	echo: round trips per second by connections
^net\.echo\.c[0-9]+\.cpu	echo-cpu	echo: server CPU per round trip by connections
^fiber\.switch	fiber-switch	fibers: a suspend+resume pair
^fiber\.	fiber	fibers: spawn and memory
EOF
}

# Fixed colours for the implementations seen so far (weft always the same);
# any other takes the next colour of the spare list.
colours() {
  cat <<'EOF'
weft #d62728
weft_fiber #ff9896
std #1f77b4
boost #ff7f0e
tbb #2ca02c
omp #9467bd
omp_llvm #8c564b
libuv #1f77b4
libuv_default #aec7e8
libev #2ca02c
eventfd #7f7f7f
naive #bcbd22
epoll #7f7f7f
uring #17becf
EOF
}
spare="#e377c2 #bcbd22 #17becf #98df8a #ff9896 #c5b0d5 #c49c94 #f7b6d2 #dbdb8d #9edae5"

# Old charts first: the set of charts follows the run, not the union of runs.
if [ -f "$dir/charts.txt" ]; then
  cut -f1 "$dir/charts.txt" | while read -r f; do
    case $f in *.svg) rm -f "$dir/$f" ;; esac
  done
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rules >"$tmp/rules"
colours >"$tmp/colours"

# One pass over the run: for each chart, a data file (a row per case, a
# column per implementation, "?" where one has no figure) and a gnuplot
# script; the list of charts in $tmp/charts.
awk -v tmp="$tmp" -v spare="$spare" -F'\t' '
FILENAME == tmp "/rules" { nr++; re[nr] = $1; cid[nr] = $2; ctitle[nr] = $3; next }
FILENAME == tmp "/colours" { split($0, a, " "); col[a[1]] = a[2]; next }
function kind(u) { return (u ~ /\/s$/) ? "rate" : (u ~ /^(allocs|bytes)/) ? "count" : "time" }
{
  if (!match($0, /^[a-z][A-Za-z0-9_.]*: /)) next
  name = substr($0, 1, RLENGTH - 2); rest = substr($0, RLENGTH + 1)
  split(rest, f, " "); v = f[1]; u = f[2]
  if (v !~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) next
  n = split(name, p, "."); impl = p[n]; c = substr(name, 1, length(name) - length(impl) - 1)
  if (c == "") next
  fam = ""
  for (i = 1; i <= nr; i++) if (c ~ re[i]) { fam = cid[i]; title[fam] = ctitle[i]; break }
  if (fam == "") { fam = p[1] "-other"; title[fam] = p[1] }
  if (!(fam in seenf)) { seenf[fam] = 1; fams[++nf] = fam }
  k = kind(u); fk[fam, k] = 1
  key = fam SUBSEP k
  if (!((key, c) in seenc)) { seenc[key, c] = 1; ncase[key]++; cases[key, ncase[key]] = c; unit[key, c] = u }
  if (!(impl in seeni)) { seeni[impl] = 1; impls[++ni] = impl }
  val[c, impl] = v
}
function label(key, j,   n, m, k, i, a, b, s, all, lo, hi, ok) {
  # the case name without the components every case of the chart shares
  n = ncase[key]
  all = split(cases[key, j], a, ".")
  lo = 0
  for (;;) {
    ok = 1
    for (i = 1; i <= n; i++) { m = split(cases[key, i], b, "."); if (m <= lo + 1 || b[lo + 1] != a[lo + 1]) ok = 0 }
    if (!ok) break
    lo++
  }
  hi = 0
  for (;;) {
    ok = 1
    for (i = 1; i <= n; i++) { m = split(cases[key, i], b, "."); if (m <= lo + hi + 1 || b[m - hi] != a[all - hi]) ok = 0 }
    if (!ok) break
    hi++
  }
  s = ""
  for (i = lo + 1; i <= all - hi; i++) s = s (s == "" ? "" : ".") a[i]
  return s == "" ? cases[key, j] : s
}
END {
  # implementations: weft first, then in order of first appearance
  no = 0
  if ("weft" in seeni) order[++no] = "weft"
  for (i = 1; i <= ni; i++) if (impls[i] != "weft") order[++no] = impls[i]
  ns = split(spare, sp, " "); nsp = 0
  for (i = 1; i <= no; i++) if (!(order[i] in col)) col[order[i]] = sp[(nsp++ % ns) + 1]
  for (q = 1; q <= nf; q++) {
    fam = fams[q]; nk = 0
    for (k in kinds) delete kinds[k]
    split("time rate count", kl, " ")
    for (t = 1; t <= 3; t++) if ((fam, kl[t]) in fk) kinds[++nk] = kl[t]
    for (t = 1; t <= nk; t++) {
      key = fam SUBSEP kinds[t]
      id = (nk > 1) ? fam "-" kinds[t] : fam
      # the columns: implementations with a figure in this chart
      nc = 0; mixed = 0; u0 = unit[key, cases[key, 1]]
      for (i = 1; i <= no; i++) {
        has = 0
        for (j = 1; j <= ncase[key]; j++) if ((cases[key, j], order[i]) in val) has = 1
        if (has) cols[++nc] = order[i]
      }
      for (j = 1; j <= ncase[key]; j++) if (unit[key, cases[key, j]] != u0) mixed = 1
      dat = tmp "/" id ".dat"
      hdr = "case"; for (i = 1; i <= nc; i++) hdr = hdr " " cols[i]
      print hdr > dat
      lo = 0; hi = 0
      for (j = 1; j <= ncase[key]; j++) {
        c = cases[key, j]; l = label(key, j)
        if (mixed) l = l " (" unit[key, c] ")"
        line = "\"" l "\""
        for (i = 1; i <= nc; i++) {
          if ((c, cols[i]) in val) {
            x = val[c, cols[i]] + 0; line = line " " val[c, cols[i]]
            if (x > 0 && (lo == 0 || x < lo)) lo = x
            if (x > hi) hi = x
          } else line = line " ?"
        }
        print line > dat
      }
      close(dat)
      better = (kinds[t] == "rate") ? "higher is better" : "lower is better"
      ttl = title[fam] (mixed ? "" : " (" u0 ")") ", " better
      gp = tmp "/" id ".gp"
      print "set terminal svg size 760,420 dynamic noenhanced font \"sans,11\" background \"#ffffff\"" > gp
      print "set output \"" id ".svg\"" > gp
      print "set title \"" ttl "\"" > gp
      print "set datafile missing \"?\"" > gp
      print "set key autotitle columnhead" > gp # the first line names the columns, for every plot
      print "set style data histograms" > gp
      print "set style histogram clustered gap 1" > gp
      print "set style fill solid 0.85 border -1" > gp
      print "set boxwidth 0.9" > gp
      print "set key outside right top" > gp
      print "set grid ytics" > gp
      print "set xtics nomirror" > gp
      print "set ytics nomirror" > gp
      if (lo > 0 && hi / lo > 30) print "set logscale y" > gp
      else print "set yrange [0:*]" > gp
      print "set offsets 0, 0, graph 0.15, 0" > gp # room for the value labels
      if (hi >= 10000) print "set format y \"%.1s%c\"" > gp
      print "set ylabel \"" (mixed ? "value (unit under each group)" : u0) (lo > 0 && hi / lo > 30 ? ", log scale" : "") "\"" > gp
      # value labels over each bar: bar i of n in a cluster is at
      # x = cluster + (i - (n + 1) / 2) / (n + gap)
      pl = "plot"
      for (i = 1; i <= nc; i++)
        pl = pl (i > 1 ? "," : "") " \"" id ".dat\" using " (i + 1) ":xtic(1) title columnheader(" (i + 1) ") lc rgb \"" col[cols[i]] "\""
      for (i = 1; i <= nc; i++)
        pl = pl ", \"" id ".dat\" using ($0 + (" i " - (" nc " + 1) / 2.0) / (" nc " + 1)):" (i + 1) ":($" (i + 1) " >= 10000 ? gprintf(\"%.2s%c\", $" (i + 1) ") : sprintf(\"%.3g\", $" (i + 1) ")) with labels rotate by 90 left offset 0,0.4 font \",8\" notitle"
      print pl > gp
      close(gp)
      print id "\t" ttl > (tmp "/charts")
    }
  }
}' "$tmp/rules" "$tmp/colours" "$run"

[ -s "$tmp/charts" ] || { echo "plot.sh: no figures in $run" >&2; exit 1; }
: >"$dir/charts.txt"
while IFS=$'\t' read -r id title; do
  (cd "$tmp" && gnuplot "$id.gp" 2>"$id.err") ||
    { echo "plot.sh: gnuplot failed on $id:" >&2; cat "$tmp/$id.err" >&2; exit 1; }
  mv "$tmp/$id.svg" "$dir/$id.svg"
  printf '%s.svg\t%s\n' "$id" "$title" >>"$dir/charts.txt"
done <"$tmp/charts"
echo "# plots: $(wc -l <"$dir/charts.txt") charts in $dir ($(cut -f1 "$dir/charts.txt" | tr '\n' ' '))"
