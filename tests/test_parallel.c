/* test_parallel.c: weft_parallel_for covers every index exactly once, from
 * a plain thread and from a job, with automatic and explicit grains.
 */
#include <string.h>

#include "test_util.h"

typedef struct {
  atomic_uchar* hits;
  size_t grain;
  atomic_int too_big;
} pf_arg_t;

static void body(size_t begin, size_t end, void* arg) {
  pf_arg_t* a = arg;
  size_t i;
  if (a->grain != 0 && end - begin > a->grain)
    atomic_fetch_add(&a->too_big, 1);
  for (i = begin; i < end; i++)
    atomic_fetch_add_explicit(&a->hits[i], 1, memory_order_relaxed);
}

static void check_range(weft_runtime_t* rt, size_t begin, size_t end,
                        size_t grain) {
  pf_arg_t a;
  size_t i;
  a.hits = calloc(end + 1, 1);
  a.grain = grain;
  atomic_init(&a.too_big, 0);
  assert_non_null(a.hits);
  assert_int_equal(weft_parallel_for(rt, begin, end, grain, body, &a), 0);
  for (i = 0; i <= end; i++)
    assert_int_equal(a.hits[i], (i >= begin && i < end) ? 1 : 0);
  assert_int_equal(atomic_load(&a.too_big), 0);
  free(a.hits);
}

static void parallel_for_outside(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    check_range(rt, 0, 0, 0);
    check_range(rt, 3, 4, 0);
    check_range(rt, 0, (size_t)test_size(1000000), 0);
    check_range(rt, 17, 10017, 1);
    check_range(rt, 5, 100000, 333);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
}

static void nested(void* arg) {
  pf_arg_t* a = arg;
  CHECK(weft_parallel_for(NULL, 0, 50000, 0, body, a) == 0);
}

static void parallel_for_from_job(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    pf_arg_t a;
    weft_counter_t c;
    size_t i;
    a.hits = calloc(50000, 1);
    a.grain = 0;
    atomic_init(&a.too_big, 0);
    weft_counter_init(&c, 0);
    assert_int_equal(weft_spawn(rt, nested, &a, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    for (i = 0; i < 50000; i++)
      assert_int_equal(a.hits[i], 1);
    free(a.hits);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* Lazy splitting splits only while the splitting job's own queue is
 * empty, so a loop makes about as many pieces as idle workers come for:
 * far fewer jobs than a grain of 1 would allow. Its halves may go to the
 * job's spawn stream (after 16 in a row), which must count as its queue
 * too: counting only the deque, every element became a job. */
static void parallel_for_splits_lazily(void** state) {
  static const unsigned workers[] = {1, 2, 4};
  size_t k;
  (void)state;
  for (k = 0; k < 3; k++) {
    weft_runtime_t* rt = test_runtime(workers[k]);
    size_t n = 200000;
    weft_stats_t before;
    weft_stats_t after;
    check_range(rt, 0, 10, 1); /* started, so the stats count */
    assert_true(weft_stats(rt, &before) >= 0);
    check_range(rt, 0, n, 1);
    assert_true(weft_stats(rt, &after) >= 0);
    /* ~20-150 here; one job per element was ~12000 (the stream bug). */
    if (after.jobs_run - before.jobs_run > n / 100)
      fail_msg("%u workers: %llu jobs for %zu elements", workers[k],
               (unsigned long long)(after.jobs_run - before.jobs_run), n);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parallel_for_outside),
      cmocka_unit_test(parallel_for_from_job),
      cmocka_unit_test(parallel_for_splits_lazily),
  };
  return cmocka_run_group_tests_name("parallel", tests, NULL, NULL);
}
