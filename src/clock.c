/* clock.c: a cheap clock for timing short spans.
 *
 * weft_parallel_for times runs of a few elements to decide whether a loop
 * is worth splitting (parallel.c), several reads per loop: the vDSO's
 * CLOCK_MONOTONIC costs ~30 ns here, the TSC ~12. Where the TSC is
 * invariant (CPUID says so: it ticks at one rate whatever the core's
 * frequency or sleep state, and the kernel keeps the CPUs' in step), a
 * span is timed in ticks and converted with a rate this file measures
 * once per process against CLOCK_MONOTONIC: anchored by the first span
 * taken, set by the first taken at least 1 ms later (the pair of reads
 * ~40 ns apart, so within 1e-4). Until then spans use CLOCK_MONOTONIC.
 */
#include "internal.h"

bool weft__has_tsc;

/* ns per tick: 0 while unknown, < 0 never (no invariant TSC, or a rate
 * that makes no sense). Relaxed: one value, nothing ordered by it. */
static _Atomic(double) tsc_ns;
static weft__spin_t cal_lock;
static uint64_t anchor_ns; /* under cal_lock */
static uint64_t anchor_tsc;

static double tsc_ns_slow(void) {
  double r = atomic_load_explicit(&tsc_ns, memory_order_relaxed);

  if (r != 0.0)
    return r > 0.0 ? r : 0.0;
#if defined(__x86_64__) || defined(__i386__)
  uint64_t ns;
  uint64_t tsc;
  if (!weft__has_tsc) {
    atomic_store_explicit(&tsc_ns, -1.0, memory_order_relaxed);
    return 0.0;
  }
  /* The pair bracketed by two TSC reads: a preemption between the reads
   * would pair a time with another moment's tick (and a 4 ms slice in a
   * 1 ms calibration, a rate 5x off). */
  {
    uint64_t t1 = __rdtsc();
    ns = weft__clock_ns();
    tsc = __rdtsc();
    if (tsc - t1 > 100000) /* ~30 us: not one pair */
      return 0.0;
    tsc = t1 + (tsc - t1) / 2;
  }
  weft__spin_lock(&cal_lock);
  r = atomic_load_explicit(&tsc_ns, memory_order_relaxed);
  if (r != 0.0) {
    /* Decided while we waited: our pair may predate the anchor. */
  } else if (anchor_ns == 0) {
    anchor_ns = ns;
    anchor_tsc = tsc;
  } else if ((int64_t)(ns - anchor_ns) >= 1000000) {
    /* Another CPU's anchor: the kernel keeps invariant TSCs in step.
     * Signed: a pair read before the anchor's (by a thread that then
     * waited for the lock) is negative here, not 2^64 - a little. */
    r = tsc > anchor_tsc ? (double)(ns - anchor_ns) / (double)(tsc - anchor_tsc)
                         : -1.0;
    /* A rate between 100 MHz and 20 GHz, else not a clock to trust. */
    if (r < 0.05 || r > 10.0)
      r = -1.0;
    atomic_store_explicit(&tsc_ns, r, memory_order_relaxed);
  }
  weft__spin_unlock(&cal_lock);
#else
  atomic_store_explicit(&tsc_ns, -1.0, memory_order_relaxed);
#endif
  return 0.0; /* this span still on CLOCK_MONOTONIC */
}

double weft__tsc_ns_get(void) {
  double r = atomic_load_explicit(&tsc_ns, memory_order_relaxed);
  return r > 0.0 ? r : (r < 0.0 ? 0.0 : tsc_ns_slow());
}
