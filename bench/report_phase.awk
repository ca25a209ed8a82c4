# report_phase.awk: the report's table of the machine's phase per round,
# from raw.tsv's line_roundtrip rows (bench_machine, run before every
# program by report.sh). Fields: round, program, name, impl, value, unit.
$3 == "line_roundtrip" {
  r = $1
  v = $5 + 0
  if (!(r in n))
    rounds[++nr] = r
  n[r]++
  if (!(r in lo) || v < lo[r])
    lo[r] = v
  if (!(r in hi) || v > hi[r])
    hi[r] = v
  if (v < 95)
    smt[r]++
  else if (v < 250)
    l3[r]++
  else
    far[r]++
}
END {
  if (nr == 0)
    exit
  print "The machine's phase (`bench_machine`: a cache line's round trip"
  print "between the first two CPUs, measured before every program). On this"
  print "kind of VM it sits at one of three levels and moves every few"
  print "minutes: under 95 ns the two vCPUs seem to share a core (two threads"
  print "of compute run no faster than one), at 95-250 ns they share an L3,"
  print "over 250 ns they do not (cross-core traffic costs ~4x). Each"
  print "program's own figure is in performance.csv, under its name."
  print ""
  print "| round | round trip, ns (min-max) | programs run at < 95 / 95-250 / > 250 ns |"
  print "|---|---|---|"
  for (i = 1; i <= nr; i++) {
    r = rounds[i]
    printf "| %s | %.0f-%.0f | %d / %d / %d |\n", r, lo[r], hi[r], smt[r] + 0,
           l3[r] + 0, far[r] + 0
  }
}
