#!/usr/bin/env bash
# Runs weft's benchmarks and the peers' (../shared/peers) interleaved,
# ROUNDS times (3), and prints per workload the median of each
# implementation and its ratio to weft's. Absolute times on a noisy machine
# mean little; ratios from interleaved runs do.
#   bench/compare.sh [build-dir]      (THREADS=2 as the peers)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
peers=${PEERS:-$here/../shared/peers}
pb=${PEERS_BUILD:-${TMPDIR:-/tmp}/weft-peers-build}
rounds=${ROUNDS:-3}
export THREADS=${THREADS:-2}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

make -s -C "$peers" B="$pb" all >&2 || exit 1
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  "$build/bench/bench_switch" >>"$out"
  "$pb/ctx_boost" >>"$out"
  "$build/bench/bench_jobs" >>"$out"
  "$pb/tbb" >>"$out"
  "$pb/omp" >>"$out" 2>/dev/null
  "$pb/go_jobs" >>"$out"
  "$pb/ref_wake" >>"$out"
done

# Lower is better for ns, ms and us; higher for rates.
awk '
  /^BENCH / {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    k = f["name"] SUBSEP f["impl"]
    n[k]++; v[k, n[k]] = f["value"]; unit[f["name"]] = f["unit"]
    names[f["name"]] = 1; impls[f["name"], f["impl"]] = 1
  }
  function median(k,   m, i, j, t, a) {
    m = n[k]
    for (i = 1; i <= m; i++) a[i] = v[k, i] + 0
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
      if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    printf "%-16s %-14s %14s %8s  %s\n", "workload", "impl", "median", "unit", "weft is"
    for (name in names) {
      wk = name SUBSEP "weft"
      w = (wk in n) ? median(wk) : 0
      for (ki in impls) {
        split(ki, p, SUBSEP); if (p[1] != name) continue
        m = median(name SUBSEP p[2])
        lower = (unit[name] ~ /^(ns|ms|us)$/)
        r = ""
        if (w > 0 && m > 0 && p[2] != "weft")
          r = sprintf("%.2fx %s", lower ? m / w : w / m, "as fast")
        printf "%-16s %-14s %14.3f %8s  %s\n", name, p[2], m, unit[name], r
      }
    }
  }' "$out" | sort
