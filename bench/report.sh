#!/usr/bin/env bash
# Runs weft's benchmark programs and the peers' (../shared/peers)
# interleaved, ROUNDS times, and writes docs/performance.md (machine, one
# table per family of workloads with medians and ratios to the best peer,
# the notes from bench/performance_notes.md), docs/performance.csv (every
# run's raw figures) and gnuplot plots as docs/perf_*.svg.
#   bench/report.sh [build-dir]             (`make bench-report`)
#   bench/report.sh --csv <bench-output     BENCH lines to CSV (`make bench`)
# ROUNDS (3), THREADS (2), DURATION (5 s per network run), PEERS,
# PEERS_BUILD, OUT (docs/), PROG_TIMEOUT (900 s per program run).
set -u

# name,impl,value,unit from "BENCH name=... impl=... value=... unit=..."
bench_fields='
  function bench_fields(   i, kv) {
    delete f
    for (i = 2; i <= NF; i++) {
      if (split($i, kv, "=") == 2)
        f[kv[1]] = kv[2]
    }
    return ("name" in f) && ("impl" in f) && ("value" in f)
  }'

if [ "${1:-}" = "--csv" ]; then
  awk "$bench_fields"'
    BEGIN { print "name,impl,value,unit" }
    /^BENCH / && bench_fields() {
      print f["name"] "," f["impl"] "," f["value"] "," f["unit"]
    }'
  exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$here/$build ;; esac
peers=${PEERS:-$here/../shared/peers}
pb=${PEERS_BUILD:-${TMPDIR:-/tmp}/weft-peers-build}
rounds=${ROUNDS:-3}
out_dir=${OUT:-$here/docs}
notes=$here/bench/performance_notes.md
limit=${PROG_TIMEOUT:-900}
export THREADS=${THREADS:-2} DURATION=${DURATION:-5}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
raw=$work/raw.tsv # round, program, name, impl, value, unit
log=$work/log
: >"$raw"
: >"$work/failed"

if [ ! -x "$build/bench/bench_jobs" ]; then
  echo "report: no $build/bench/bench_jobs; build first (make build)" >&2
  exit 1
fi
have_peers=0
if [ -d "$peers" ] && make -s -C "$peers" B="$pb" all >&2; then
  have_peers=1
  make -s -C "$peers" B="$pb" tokio >&2
else
  echo "report: the peers did not build; weft's figures only" >&2
fi

started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

# run ROUND LABEL CMD...: runs one program, keeps its BENCH lines. First
# bench_machine records the machine's phase (line_roundtrip) under the same
# label: on a shared VM it changes every few minutes (bench_machine.c).
run() {
  local round=$1 label=$2 status
  shift 2
  echo "report: round $round/$rounds: $label" >&2
  if [ -x "$build/bench/bench_machine" ]; then
    timeout 60 "$build/bench/bench_machine" 2>>"$log" | sed 's/^/PHASE /' \
      >"$work/out"
  else
    : >"$work/out"
  fi
  timeout "$limit" "$@" >>"$work/out" 2>>"$log"
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "report: $label exited with $status (round $round)" >&2
    echo "$label (round $round): exit status $status" >>"$work/failed"
  fi
  awk -v round="$round" -v prog="$label" "$bench_fields"'
    /^PHASE BENCH / { sub(/^PHASE /, "") }
    /^BENCH / && bench_fields() {
      printf "%s\t%s\t%s\t%s\t%s\t%s\n", round, prog, f["name"], f["impl"],
             f["value"], f["unit"]
    }' "$work/out" >>"$raw"
}

weft_prog() { # weft_prog ROUND NAME: build/bench/NAME if it exists
  [ -x "$build/bench/$2" ] && run "$1" "$2" "$build/bench/$2"
}

peer_prog() { # peer_prog ROUND NAME [ENV=...]: a peer binary if built
  local round=$1 name=$2
  shift 2
  [ "$have_peers" = 1 ] && [ -x "$pb/$name" ] &&
    run "$round" "$name" env "$@" "$pb/$name"
}

# One round: each weft program next to the peers of the same workloads, so
# that both see the same minutes of a shared machine.
for r in $(seq "$rounds"); do
  weft_prog "$r" bench_switch
  peer_prog "$r" ctx_boost
  peer_prog "$r" ctx_ucontext
  weft_prog "$r" bench_jobs
  peer_prog "$r" tbb
  peer_prog "$r" omp
  peer_prog "$r" go_jobs
  peer_prog "$r" tokio_peer REPS=3
  peer_prog "$r" ref_wake
  # The kernels OpenMP runs too, group by group, weft's then OpenMP's a
  # few seconds apart: whole programs a minute apart met different phases
  # of the machine (sincos_10k ran at serial speed in some rounds, for one
  # and not the other).
  for g in sincos:bench_sci stencil3:bench_sci neigh5:bench_sci \
    tree:bench_tree sand:bench_sand; do
    p=$build/bench/${g#*:}
    [ -x "$p" ] && run "$r" "${g#*:}" env BENCH_ONLY="${g%%:*}" "$p"
    p=$build/bench/peer_omp_suite
    [ -x "$p" ] && run "$r" peer_omp_suite env BENCH_ONLY="${g%%:*}" "$p"
  done
  for b in "$build"/bench/bench_* "$build"/bench/peer_*; do
    if [ ! -f "$b" ] || [ ! -x "$b" ]; then continue; fi
    case ${b##*/} in
    bench_switch | bench_jobs | bench_uv | bench_machine) continue ;;
    bench_sci | bench_tree | bench_sand | peer_omp_suite) continue ;;
    esac
    run "$r" "${b##*/}" "$b"
  done
  weft_prog "$r" bench_uv
  peer_prog "$r" uv_queue_work ITEMS=1000000
  peer_prog "$r" go_idle
  run "$r" bench_io.sh bash "$here/bench/bench_io.sh" "$build"
  [ "$have_peers" = 1 ] && run "$r" "peers run.sh io" bash "$peers/run.sh" io
done
finished=$(date -u '+%Y-%m-%d %H:%M UTC')
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)

if [ ! -s "$raw" ]; then
  echo "report: no BENCH lines; see the errors above" >&2
  exit 1
fi

mkdir -p "$out_dir"
{
  echo "round,program,name,impl,value,unit"
  tr '\t' ',' <"$raw"
} >"$out_dir/performance.csv"

# ---- medians ---------------------------------------------------------------
# med.tsv: name, impl, median, unit, runs, section, order (first seen).
# A name's section is its family when it is one of the core's workloads,
# else the weft program that printed it, else "peers".
awk -F'\t' '
  function family(name) {
    if (name ~ /^(ctxswitch|roundtrip_)/) return "1 Fiber switch and round trip"
    if (name ~ /^spawn_/) return "2 Spawning"
    if (name ~ /^(dispatch_|cold_wake_)/) return "3 Latency"
    if (name ~ /^(steal_fib_|imbalanced|fib30$)/) return "4 Work stealing"
    if (name ~ /^(offload_small|echo_roundtrips|http_hello)$/)
      return "8 The libuv bridge"
    return ""
  }
  $3 == "line_roundtrip" { next } # the phase table has these
  {
    k = $3 SUBSEP $4
    if (!(k in n)) { keys[++nk] = k; unit[k] = $6 }
    n[k]++; v[k, n[k]] = $5 + 0
    if (!($3 in order)) order[$3] = ++no
    if ($4 == "weft" && !($3 in wprog)) wprog[$3] = $2
  }
  function median(k,   m, i, j, t, a) {
    m = n[k]
    for (i = 1; i <= m; i++) a[i] = v[k, i]
    for (i = 1; i <= m; i++)
      for (j = i + 1; j <= m; j++)
        if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (i = 1; i <= nk; i++) {
      split(keys[i], p, SUBSEP)
      s = family(p[1])
      if (s == "") s = (p[1] in wprog) ? "5 " wprog[p[1]] : "9 peers only"
      printf "%s\t%s\t%.6g\t%s\t%d\t%s\t%d\n", p[1], p[2], median(keys[i]),
             unit[keys[i]], n[keys[i]], s, order[p[1]]
    }
  }' "$raw" >"$work/med.tsv"

# ---- plots -----------------------------------------------------------------
plots=""
if command -v gnuplot >/dev/null; then
  # Scaling: spawn_parallel_<n>w over n, one line per implementation.
  awk -F'\t' '$1 ~ /^spawn_parallel_[0-9]+w$/ {
      w = $1; gsub(/[^0-9]/, "", w)
      print $2 "\t" w "\t" $3 / 1e6
    }' "$work/med.tsv" | sort -k1,1 -k2,2n >"$work/scaling.dat"
  if [ -s "$work/scaling.dat" ]; then
    impls=$(cut -f1 "$work/scaling.dat" | sort -u)
    {
      echo "set terminal svg size 720,440 dynamic noenhanced font 'sans,12'"
      echo "set output '$out_dir/perf_scaling.svg'"
      echo "set title 'spawn_parallel: every worker spawns its share of 1M empty jobs'"
      echo "set xlabel 'workers'; set ylabel 'M jobs/s (higher is better)'"
      echo "set key left top; set grid; set xtics 1; set yrange [0:*]"
      printf "plot "
      sep=""
      for i in $impls; do
        printf "%s'%s' using 2:3 with linespoints lw 2 title '%s'" "$sep" \
          "$work/scaling_$i.dat" "$i"
        awk -F'\t' -v i="$i" '$1 == i' "$work/scaling.dat" >"$work/scaling_$i.dat"
        sep=", "
      done
      if grep -q '^weft' "$work/scaling.dat"; then
        awk -F'\t' '$1 == "weft" && $2 == 1 { one = $3 }
          $1 == "weft" { print $2 "\t" one * $2 }' "$work/scaling.dat" \
          >"$work/ideal.dat"
        printf "%s'%s' using 1:2 with lines dt 2 lc rgb 'gray' title 'weft 1 worker x n'" \
          "$sep" "$work/ideal.dat"
      fi
      echo
    } >"$work/scaling.gp"
    gnuplot "$work/scaling.gp" && plots="$plots perf_scaling.svg"
  fi

  # Latency percentiles: dispatch batches and cold wake, log scale.
  awk -F'\t' '$1 ~ /^(cold_wake_p(50|99)|dispatch_p(50|99)_.*)$/ {
      row[$1] = 1; col[$2] = 1; val[$1, $2] = $3
    }
    END {
      nc = 0
      if ("weft" in col) cols[++nc] = "weft"
      for (c in col) if (c != "weft") cols[++nc] = c
      printf "workload"
      for (j = 1; j <= nc; j++) printf "\t%s", cols[j]
      print ""
      split("cold_wake_p50 cold_wake_p99 dispatch_p50_100 dispatch_p99_100 " \
            "dispatch_p50_10k dispatch_p99_10k dispatch_p50_1M " \
            "dispatch_p99_1M", rows, " ")
      for (i = 1; i in rows; i++) {
        if (!(rows[i] in row)) continue
        label = rows[i]; gsub(/_/, " ", label)
        printf "\"%s\"", label
        for (j = 1; j <= nc; j++)
          printf "\t%s", ((rows[i], cols[j]) in val) ? val[rows[i], cols[j]] : "-"
        print ""
      }
    }' "$work/med.tsv" >"$work/latency.dat"
  if [ "$(wc -l <"$work/latency.dat")" -gt 1 ]; then
    ncol=$(head -1 "$work/latency.dat" | awk -F'\t' '{print NF}')
    cat >"$work/latency.gp" <<EOF
set terminal svg size 860,460 dynamic noenhanced font 'sans,12'
set output '$out_dir/perf_latency.svg'
set title 'Latency percentiles: submit to job start (lower is better)'
set ylabel 'microseconds (log scale)'
set logscale y
set yrange [0.5:*]
set grid ytics
set key left top
set datafile separator tab
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by 30 right
set bmargin 7
plot for [i=2:$ncol] '$work/latency.dat' using i:xtic(1) title columnheader(i)
EOF
    gnuplot "$work/latency.gp" && plots="$plots perf_latency.svg"
  fi
else
  echo "report: gnuplot not installed (apt-get install gnuplot-nox); no plots" >&2
fi

# ---- the markdown ------------------------------------------------------------
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
ncpu=$(nproc 2>/dev/null)
tpc=$(lscpu 2>/dev/null | sed -n 's/^Thread(s) per core: *//p' | head -1)
hyp=$(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor: *//p' | head -1)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")
kernel=$(uname -srm)
cc=$(gcc --version 2>/dev/null | head -1)
versions=$(dpkg-query -W -f='${Package} ${Version}\n' libtbb-dev libuv1-dev \
  libboost-context-dev libhwloc-dev golang-go wrk 2>/dev/null |
  awk '{printf "%s%s %s", sep, $1, $2; sep = ", "}')
gov=$(go version 2>/dev/null | awk '{print $3}')
rustv=$(rustc --version 2>/dev/null | awk '{print $2}')
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null)
# The report's own outputs (rewritten by earlier runs) do not count.
dirty=$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null |
  grep -v -E ' docs/(performance\.(md|csv)|perf_[a-z_]+\.svg)$' |
  grep -q . && echo " (with uncommitted changes)")

md=$work/performance.md
{
  cat <<EOF
# Performance

Generated by \`make bench-report\` (\`bench/report.sh\`): weft's benchmark
programs (\`build/bench/bench_*\`, \`bench/bench_io.sh\`) and the peers of
\`../shared/peers\` run interleaved, $rounds round(s), $THREADS workers
(\`THREADS=$THREADS\`) everywhere, ${DURATION} s per network run. Each
figure is the median over the rounds of each program's own result (best of
several runs for rates, a percentile or median for latencies; see each
program's header). Do not edit this file: the notes at the end come from
\`bench/performance_notes.md\`, the raw figures of every round are in
[performance.csv](performance.csv).

## Machine

| | |
|---|---|
| CPU | ${cpu:-?}, ${ncpu:-?} logical CPUs (${tpc:-?} per core)${hyp:+, $hyp guest} |
| memory | $mem |
| system | ${os:-?}, $kernel |
| compiler | ${cc:-?} |
| peers' packages | ${versions:-?}${gov:+; $gov}${rustv:+; rustc $rustv} |
| weft | commit ${commit:-?}$dirty, build \`${build##*/}\` |
| run | $started to $finished; load average ${load_start:-?} before, ${load_end:-?} after |

EOF
  awk -F'\t' -f "$here/bench/report_phase.awk" "$raw"
  cat <<EOF

## Results

"better" says which direction wins: lower for times (ns, µs, ms) and
sizes, higher for rates (per second). "weft vs best peer" is the best
peer's median over weft's for times and weft's over the best peer's for
rates, so above 1.00x weft is ahead, whatever the unit. A blank cell:
that implementation has no such workload (or did not build).
EOF
  awk -F'\t' '
    function nice(impl) {
      if (impl in disp) return disp[impl]
      return impl
    }
    function fmt(x, u,   a) {
      a = x < 0 ? -x : x
      if (u ~ /\/s$/) {
        if (a >= 1e9) return sprintf("%.2f G", x / 1e9)
        if (a >= 1e6) return sprintf("%.2f M", x / 1e6)
        if (a >= 1e4) return sprintf("%.1f k", x / 1e3)
      }
      if (a >= 100) return sprintf("%.0f", x)
      if (a >= 10) return sprintf("%.1f", x)
      return sprintf("%.2f", x)
    }
    function rank(impl) { return (impl in pref) ? pref[impl] : 50 }
    BEGIN {
      split("weft onetbb openmp go tokio libuv uv_queue_work boost.context " \
            "ucontext condvar condvar_interleaved serial", o, " ")
      for (i = 1; i in o; i++) pref[o[i]] = i
      disp["onetbb"] = "oneTBB"; disp["openmp"] = "OpenMP"; disp["go"] = "Go"
      disp["tokio"] = "Tokio"; disp["condvar"] = "condvar (OS floor)"
      disp["condvar_interleaved"] = "condvar, interleaved with weft"
    }
    {
      name[NR] = $1; impl[NR] = $2; med[$1, $2] = $3; unit[$1] = $4
      sec[$1] = $6; ord[$1] = $7; has[$6, $2] = 1; secs[$6] = 1
    }
    END {
      # sections in their numbered order, workloads in first-seen order
      ns = 0
      for (s in secs) sl[++ns] = s
      for (i = 1; i <= ns; i++) for (j = i + 1; j <= ns; j++)
        if (sl[j] < sl[i]) { t = sl[i]; sl[i] = sl[j]; sl[j] = t }
      for (si = 1; si <= ns; si++) {
        s = sl[si]; title = s; sub(/^[0-9] /, "", title)
        if (s ~ /^5 /) title = "`" title "`"
        if (s ~ /^9 /) title = "Peers only (no weft figure)"
        # columns: implementations present in this section
        nc = 0; delete cols
        for (k in has) {
          split(k, p, SUBSEP)
          if (p[1] == s) cols[++nc] = p[2]
        }
        for (i = 1; i <= nc; i++) for (j = i + 1; j <= nc; j++)
          if (rank(cols[j]) < rank(cols[i]) || \
              (rank(cols[j]) == rank(cols[i]) && cols[j] < cols[i])) {
            t = cols[i]; cols[i] = cols[j]; cols[j] = t
          }
        # rows
        nr = 0; delete rows; delete seen
        for (i = 1; i <= NR; i++)
          if (sec[name[i]] == s && !(name[i] in seen)) {
            seen[name[i]] = 1; rows[++nr] = name[i]
          }
        for (i = 1; i <= nr; i++) for (j = i + 1; j <= nr; j++)
          if (ord[rows[j]] < ord[rows[i]]) {
            t = rows[i]; rows[i] = rows[j]; rows[j] = t
          }
        printf "\n### %s\n\n| workload | unit | better |", title
        for (j = 1; j <= nc; j++) printf " %s |", nice(cols[j])
        printf " best peer | weft vs best peer |\n|---|---|---|"
        for (j = 1; j <= nc; j++) printf "---|"
        print "---|---|"
        for (i = 1; i <= nr; i++) {
          w = rows[i]; u = unit[w]; higher = (u ~ /\/s$/)
          printf "| %s | %s | %s |", w, (u == "us" ? "µs" : u), \
                 (higher ? "higher" : "lower")
          best = ""; bv = 0
          for (j = 1; j <= nc; j++) {
            c = cols[j]
            if ((w, c) in med) {
              printf " %s |", fmt(med[w, c], u)
              if (c != "weft" && (best == "" || \
                  (higher ? med[w, c] > bv : med[w, c] < bv))) {
                best = c; bv = med[w, c]
              }
            } else printf " |"
          }
          if (best == "") { print " | (no peer) |"; continue }
          if (!((w, "weft") in med) || med[w, "weft"] <= 0 || bv <= 0) {
            printf " %s | |\n", nice(best); continue
          }
          r = higher ? med[w, "weft"] / bv : bv / med[w, "weft"]
          printf " %s | %.2fx %s |\n", nice(best), r, \
                 (r >= 1 ? "(ahead)" : "(behind)")
        }
      }
    }' "$work/med.tsv"
  # Issue 4's targets, checked against this run's medians, and round by
  # round (each round's weft figure against the same round's reference,
  # which on this machine often moves more than weft's own).
  awk -F'\t' '
    FNR == NR { med[$1, $2] = $3; next }
    {
      # raw.tsv: round, program, name, impl, value, unit
      rv[$1, $3, $4] = $5; rounds[$1] = 1
      if ($4 != "weft" && $4 != "serial") {
        if (!(($1, $3) in rmax) || $5 > rmax[$1, $3]) rmax[$1, $3] = $5
        if (!(($1, $3) in rmin) || $5 < rmin[$1, $3]) rmin[$1, $3] = $5
      }
    }
    function best(name, higher,   k, p, b, found) {
      found = 0
      for (k in med) {
        split(k, p, SUBSEP)
        if (p[1] != name || p[2] == "weft" || p[2] == "serial") continue
        if (!found || (higher ? med[k] > b : med[k] < b)) { b = med[k]; bi = p[2] }
        found = 1
      }
      return found ? b : 0
    }
    # Rounds in which weft met the target: against refimpl of refname in
    # the same round ("best": the best peer there).
    function per_round(name, refname, refimpl, want, higher,   r, w, ref, n, k) {
      n = 0; k = 0
      for (r in rounds) {
        if (!((r, name, "weft") in rv)) continue
        if (refimpl == "best")
          ref = higher ? rmax[r, refname] : rmin[r, refname]
        else if ((r, refname, refimpl) in rv)
          ref = rv[r, refname, refimpl]
        else
          continue
        if (ref == "" || ref <= 0) continue
        w = rv[r, name, "weft"]
        n++
        if (higher ? w >= ref * want : w <= ref * want) k++
      }
      return n ? k " of " n : ""
    }
    function row(what, name, ref, want, higher, refn, refi,   w, r) {
      if (!((name, "weft") in med) || ref <= 0) return
      w = med[name, "weft"]
      r = higher ? w / ref : ref / w
      printf "| %s | %.2fx (%s) | %s | %s |\n", what, r, refname, \
             ((higher ? r >= want : w <= ref * want) ? "met" : "not met"), \
             per_round(name, refn, refi, want, higher)
      n++
    }
    END {
      print "\n### Issue 4 targets, this run\n"
      print "| target | weft, this run (medians) | | rounds met |"
      print "|---|---|---|---|"
      b = best("spawn_empty", 1); refname = "vs " bi " spawn_empty"
      row("spawn_empty >= 1.5x the best peer", "spawn_empty", b, 1.5, 1,
          "spawn_empty", "best")
      row("spawn_batch >= 3x the best peer spawn_empty", "spawn_batch", b, 3,
          1, "spawn_empty", "best")
      # The floor twice: measured by bench_jobs try by try between the
      # tries of weft (the same minutes), and by the program of the peers
      # (other minutes of this run).
      refname = "vs condvar interleaved"
      if (("cold_wake_p50", "condvar_interleaved") in med)
        row("cold_wake_p50 within 1.1x the OS floor, interleaved",
            "cold_wake_p50", med["cold_wake_p50", "condvar_interleaved"],
            1.1, 0, "cold_wake_p50", "condvar_interleaved")
      if (("cold_wake_p99", "condvar_interleaved") in med)
        row("cold_wake_p99 within 1.1x the OS floor, interleaved",
            "cold_wake_p99", med["cold_wake_p99", "condvar_interleaved"],
            1.1, 0, "cold_wake_p99", "condvar_interleaved")
      refname = "vs condvar of the peers"
      if (("cold_wake_p50", "condvar") in med)
        row("cold_wake_p50 within 1.1x the floor of the peers (other minutes)",
            "cold_wake_p50", med["cold_wake_p50", "condvar"], 1.1, 0,
            "cold_wake_p50", "condvar")
      if (("cold_wake_p99", "condvar") in med)
        row("cold_wake_p99 within 1.1x the floor of the peers (other minutes)",
            "cold_wake_p99", med["cold_wake_p99", "condvar"], 1.1, 0,
            "cold_wake_p99", "condvar")
      if (("startup_first_process_us", "weft") in med) {
        w = med["startup_first_process_us", "weft"]
        k = 0; m = 0
        for (r in rounds)
          if ((r, "startup_first_process_us", "weft") in rv) {
            m++
            if (rv[r, "startup_first_process_us", "weft"] < 1000) k++
          }
        printf "| first runtime in a process: create + job + destroy < 1 ms | %.0f us | %s | %s |\n", \
               w, (w < 1000 ? "met" : "not met"), (m ? k " of " m : "")
      }
      b = best("imbalanced", 1); refname = "vs " bi
      row("imbalanced >= 0.98x the best peer", "imbalanced", b, 0.98, 1,
          "imbalanced", "best")
      b = best("imbalanced_tri", 1); refname = "vs " bi
      row("imbalanced_tri >= 0.98x the best peer", "imbalanced_tri", b, 0.98,
          1, "imbalanced_tri", "best")
    }' "$work/med.tsv" "$raw"
  if [ -s "$work/failed" ]; then
    printf '\nRuns that failed (their figures are missing from the medians):\n\n'
    sed 's/^/- /' "$work/failed"
  fi
  if [ -n "$plots" ]; then
    printf '\n## Plots\n'
    for p in $plots; do
      case $p in
      perf_scaling.svg) t="Parallel spawning over the number of workers" ;;
      perf_latency.svg) t="Dispatch and cold wake-up percentiles" ;;
      *) t=$p ;;
      esac
      printf '\n%s:\n\n![%s](%s)\n' "$t" "$t" "$p"
    done
  fi
  if [ -f "$notes" ]; then
    printf '\n'
    cat "$notes"
  fi
} >"$md"
cp "$md" "$out_dir/performance.md"
echo "report: wrote $out_dir/performance.md, performance.csv${plots:+ and$plots}" >&2
