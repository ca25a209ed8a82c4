/* test_util.h: shared helpers for weft's cmocka tests: sizes that shrink
 * under sanitizers and Valgrind, worker counts to sweep, and teardown checks.
 */
#ifndef WEFT_TEST_UTIL_H_
#define WEFT_TEST_UTIL_H_

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "weft.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

/* Scales a stress size: WEFT_TEST_SCALE (percent) wins; sanitizers and
 * Valgrind (WEFT_VALGRIND=1) run a tenth. */
static inline long test_size(long n) {
  const char* s = getenv("WEFT_TEST_SCALE");
  if (s != NULL && *s != '\0')
    return n * strtol(s, NULL, 10) / 100 > 0 ? n * strtol(s, NULL, 10) / 100
                                             : 1;
  s = getenv("WEFT_VALGRIND");
  if (TEST_SANITIZED || (s != NULL && *s == '1'))
    return n / 10 > 0 ? n / 10 : 1;
  return n;
}

/* cmocka's assertions longjmp, which must not happen on a worker thread or
 * a fiber stack: jobs CHECK, and the test asserts no CHECK failed. */
static atomic_int test_failures __attribute__((unused));
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      atomic_fetch_add(&test_failures, 1);                                     \
    }                                                                          \
  } while (0)
#define ASSERT_NO_CHECK_FAILED() \
  assert_int_equal(atomic_load(&test_failures), 0)

static const unsigned test_worker_counts[] = {1, 2, 4, 8};
#define TEST_NWORKER_COUNTS \
  (sizeof(test_worker_counts) / sizeof(test_worker_counts[0]))

static inline weft_runtime_t* test_runtime(unsigned workers) {
  weft_config_t cfg;
  weft_runtime_t* rt = NULL;
  assert_int_equal(weft_config_init(&cfg), 0);
  cfg.workers = workers;
  assert_int_equal(weft_runtime_create(&rt, &cfg), 0);
  return rt;
}

static inline void test_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* At teardown every fiber but each worker's current one is back in a pool
 * (post-switch actions are done once the jobs are). Polls briefly: the
 * figures are racy snapshots. */
static inline void test_assert_no_live_fibers(weft_runtime_t* rt) {
  weft_stats_t s;
  int i;
  for (i = 0; i < 1000; i++) {
    assert_true(weft_stats(rt, &s) >= 0);
    if (s.workers == 0 || s.fibers_created - s.fibers_in_pool == s.workers)
      return;
    test_sleep_ms(1);
  }
  assert_int_equal(s.fibers_created - s.fibers_in_pool, s.workers);
}

/* Whether mbind works here (many containers filter it out): binding
 * stacks to a node is checked only where it can happen. */
static inline bool test_mbind_works(void) {
  size_t len = 4096;
  unsigned long mask = 1; /* node 0, which every machine has */
  void* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  long rc;
  if (p == MAP_FAILED)
    return false;
  rc = syscall(SYS_mbind, p, len, 1 /* MPOL_PREFERRED */, &mask,
               sizeof(mask) * 8, 0);
  munmap(p, len);
  return rc == 0;
}

#endif /* WEFT_TEST_UTIL_H_ */
