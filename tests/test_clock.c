/* test_clock.c: the TSC span clock (src/clock.c): calibrated within the
 * first milliseconds of use, it agrees with CLOCK_MONOTONIC; without an
 * invariant TSC spans stay on CLOCK_MONOTONIC (checked in a child); a
 * span's arithmetic never runs backwards. Built with its own copies of clock.c
 * and lock.c, whose internals libweft does not export.
 */
#include <cpuid.h>
#include <sys/wait.h>

#include "test_util.h"
#include "internal.h"

static bool cpu_has_tsc(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  return __get_cpuid(0x80000007, &a, &b, &c, &d) && ((d >> 8) & 1);
#else
  return false;
#endif
}

/* Calls weft__tsc_ns_get as pf_run would until it gives a rate (or 50 ms
 * pass): the rate, or 0. */
static double settle(void) {
  uint64_t t0 = weft__clock_ns();
  double r;
  while ((r = weft__tsc_ns_get()) == 0.0 &&
         weft__clock_ns() - t0 < 50 * 1000000ull)
    usleep(100);
  return r;
}

static void spans_agree_with_monotonic(void** state) {
  double tk;
  int i;
  (void)state;
  weft__has_tsc = cpu_has_tsc();
  if (!weft__has_tsc)
    skip();
  /* The first call anchors, and the span still uses the monotonic
   * clock. */
  assert_true(weft__tsc_ns_get() == 0.0);
  tk = settle();
  assert_true(tk > 0.0);
  for (i = 0; i < 5; i++) {
    uint64_t m0 = weft__clock_ns();
    uint64_t s0 = weft__span_now(tk);
    double span;
    double mono;
    usleep(5000);
    span = weft__span_ns(s0, weft__span_now(tk), tk);
    mono = (double)(weft__clock_ns() - m0);
    /* Within 1% (the reads are ~40 ns apart; the rate is within 1e-4,
     * but a preemption between the paired reads can cost more). */
    if (span > 0.99 * mono && span < 1.01 * mono)
      return;
    print_message("span %.0f ns, monotonic %.0f ns\n", span, mono);
  }
  fail_msg("the TSC span never agreed with CLOCK_MONOTONIC");
}

/* Without an invariant TSC, spans stay on CLOCK_MONOTONIC for good. In a
 * child: the clock's choice is made once per process. */
static void no_tsc_stays_monotonic(void** state) {
  pid_t pid;
  int status;
  (void)state;
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    uint64_t t0 = weft__clock_ns();
    weft__has_tsc = false;
    while (weft__clock_ns() - t0 < 3 * 1000000ull) {
      if (weft__tsc_ns_get() != 0.0)
        _exit(1);
      usleep(100);
    }
    _exit(weft__span_now(0.0) >= t0 ? 0 : 2);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static void spans_never_run_backwards(void** state) {
  (void)state;
  assert_true(weft__span_ns(100, 90, 0.4) == 0.0);
  assert_true(weft__span_ns(100, 100, 0.4) == 0.0);
  assert_true(weft__span_ns(100, 110, 0.5) == 5.0);
  assert_true(weft__span_ns(100, 110, 0.0) == 10.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First: its child must start with the clock not yet chosen. */
      cmocka_unit_test(no_tsc_stays_monotonic),
      cmocka_unit_test(spans_agree_with_monotonic),
      cmocka_unit_test(spans_never_run_backwards),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
