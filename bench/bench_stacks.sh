#!/usr/bin/env bash
# bench_stacks.sh [BUILD]: bench/bench_stacks, then, where perf can count
# them, the dTLB load misses of its huge and normal runs, as BENCH lines
# (stack_dtlb_misses_<b>, misses per fiber turn of the 64 KiB workload and
# the switch one together, over the whole run including set-up).
# Virtual machines without a PMU report the event as <not supported>:
# then only a note goes to stderr.
set -euo pipefail
build=${1:-build}
bin="$build/bench/bench_stacks"
[ -x "$bin" ] || { echo "bench_stacks.sh: no $bin" >&2; exit 1; }

"$bin"

if ! command -v perf >/dev/null 2>&1; then
  echo "bench_stacks.sh: no perf, no dTLB figures" >&2
  exit 0
fi
fibers=${FIBERS:-512}
rounds=${ROUNDS:-20}
for b in normal huge; do
  # -x,: "count,unit,event,..."; the program's own BENCH lines go to
  # /dev/null, perf's report (on stderr) to the pipe.
  out=$(perf stat -x, -e dTLB-load-misses "$bin" "$b" 2>&1 >/dev/null |
    grep 'dTLB-load-misses' || true)
  count=${out%%,*}
  case "$count" in
    '' | '<not supported>' | '<not counted>')
      echo "bench_stacks.sh: perf cannot count dTLB-load-misses here" \
        "(${count:-no output}); no dTLB figures" >&2
      exit 0
      ;;
  esac
  # bench_stacks runs each workload 3 times: 6 runs of fibers x rounds turns.
  awk -v c="$count" -v b="$b" -v n="$((6 * fibers * rounds))" 'BEGIN {
    printf "BENCH name=stack_dtlb_misses_%s impl=weft value=%.3f unit=misses\n",
      b, c / n }'
done
