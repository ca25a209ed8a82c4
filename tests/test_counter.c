/* test_counter.c: counters and waiting: nested waits on one worker (only
 * fibers make them possible), fib with a job per call, waits from plain
 * threads, many waiters with different targets, and the lost wake-up race.
 */
#include <pthread.h>
#include <string.h>

#include "test_util.h"

/* ---- recursion: a job spawns children and waits, 10 levels deep -------- */

typedef struct {
  int depth;
  atomic_long* nodes;
} tree_t;

static void tree_job(void* arg) {
  tree_t* t = arg;
  tree_t kids[3];
  weft_counter_t c;
  int i;

  atomic_fetch_add(t->nodes, 1);
  if (t->depth == 0)
    return;
  weft_counter_init(&c, 0);
  for (i = 0; i < (t->depth > 7 ? 2 : 1) + 1; i++) {
    kids[i].depth = t->depth - 1;
    kids[i].nodes = t->nodes;
    CHECK(weft_spawn(NULL, tree_job, &kids[i], &c) == 0);
  }
  CHECK(weft_counter_wait(&c, 0) == 0);
  CHECK(weft_counter_value(&c) == 0);
}

/* Nodes in the tree above: branching 3 for depth > 7, else 2. */
static long tree_nodes(int depth) {
  if (depth == 0)
    return 1;
  return 1 + (depth > 7 ? 3 : 2) * tree_nodes(depth - 1);
}

static void counter_nested_one_worker(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    atomic_long nodes = 0;
    tree_t root = {10, &nodes};
    weft_counter_t c;
    weft_counter_init(&c, 0);
    assert_int_equal(weft_spawn(rt, tree_job, &root, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(atomic_load(&nodes), tree_nodes(10));
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* Each level spawns the next with no counter and waits on its own gate,
 * which only the deepest level opens: with one worker, every level must be
 * suspended at once. No job to help with, so only fibers make it work. */
typedef struct {
  int depth;
  weft_counter_t* gates;
  atomic_int* reached;
} chain_t;

static void chain_job(void* arg) {
  chain_t* c = arg;
  chain_t* next;
  int i;

  atomic_fetch_add(c->reached, 1);
  if (c->depth == 10) {
    for (i = 9; i >= 0; i--)
      weft_counter_add(&c->gates[i], -1);
    free(c);
    return;
  }
  next = malloc(sizeof(*next));
  *next = *c;
  next->depth = c->depth + 1;
  CHECK(weft_spawn(NULL, chain_job, next, NULL) == 0);
  CHECK(weft_counter_wait(&c->gates[c->depth], 0) == 0);
  free(c);
}

static void counter_suspends_one_worker(void** state) {
  weft_runtime_t* rt = test_runtime(1);
  weft_counter_t gates[10];
  atomic_int reached = 0;
  weft_worker_stats_t ws;
  chain_t* root = malloc(sizeof(*root));
  int i;
  (void)state;

  for (i = 0; i < 10; i++)
    weft_counter_init(&gates[i], 1);
  root->depth = 0;
  root->gates = gates;
  root->reached = &reached;
  assert_int_equal(weft_spawn(rt, chain_job, root, NULL), 0);
  assert_int_equal(weft_counter_wait(&gates[0], 0), 0);
  /* Ten levels were suspended at once on the only worker. */
  assert_int_equal(weft_worker_stats(rt, 0, &ws), 0);
  assert_true(ws.fiber_switches >= 10);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  assert_int_equal(atomic_load(&reached), 11);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- fib(25), a job per call ------------------------------------------- */

typedef struct {
  int n;
  long result;
} fib_t;

static void fib_job(void* arg) {
  fib_t* f = arg;
  fib_t a;
  fib_t b;
  weft_counter_t c;

  if (f->n < 2) {
    f->result = f->n;
    return;
  }
  a.n = f->n - 1;
  b.n = f->n - 2;
  weft_counter_init(&c, 0);
  weft_spawn(NULL, fib_job, &a, &c);
  weft_spawn(NULL, fib_job, &b, &c);
  weft_counter_wait(&c, 0);
  f->result = a.result + b.result;
}

static void counter_fib25(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    fib_t f = {TEST_SANITIZED ? 20 : 25, 0};
    weft_counter_t c;
    weft_counter_init(&c, 0);
    assert_int_equal(weft_spawn(rt, fib_job, &f, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(f.result, TEST_SANITIZED ? 6765 : 75025);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
}

/* ---- targets: a wait returns once the value is at most the target ------ */

typedef struct {
  weft_counter_t* gate;
  weft_counter_t* progress;
  atomic_int* order;
  int step;
} stepper_t;

static void counter_targets(void** state) {
  weft_counter_t c;
  (void)state;
  weft_counter_init(&c, 5);
  assert_int_equal(weft_counter_value(&c), 5);
  assert_int_equal(weft_counter_wait(&c, 5), 0); /* already there */
  assert_int_equal(weft_counter_wait(&c, 9), 0);
  assert_int_equal(weft_counter_add(&c, -3), 0);
  assert_int_equal(weft_counter_wait(&c, 2), 0);
  assert_int_equal(weft_counter_value(&c), 2);
}

/* Fibers waiting for different targets wake in the order the counter
 * passes them. */
typedef struct {
  weft_counter_t* c;
  int64_t target;
  atomic_int* seq;
  int woke_at;
} waiter_t;

static void wait_job(void* arg) {
  waiter_t* w = arg;
  CHECK(weft_counter_wait(w->c, w->target) == 0);
  CHECK(weft_counter_value(w->c) <= w->target);
  w->woke_at = atomic_fetch_add(w->seq, 1);
}

static void counter_many_targets(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    weft_counter_t c;
    weft_counter_t done;
    waiter_t w[8];
    atomic_int seq = 0;
    int i;
    weft_counter_init(&c, 8);
    weft_counter_init(&done, 0);
    for (i = 0; i < 8; i++) {
      w[i].c = &c;
      w[i].target = i; /* wakes when the value is at most i */
      w[i].seq = &seq;
      w[i].woke_at = -1;
      assert_int_equal(weft_spawn(rt, wait_job, &w[i], &done), 0);
    }
    test_sleep_ms(5); /* let them suspend: not needed for correctness */
    for (i = 7; i >= 0; i--) {
      assert_int_equal(weft_counter_add(&c, -1), 0);
      /* Waiter i is now released; wait for it before the next step so the
       * wake order is deterministic. */
      assert_int_equal(weft_counter_wait(&done, i), 0);
    }
    for (i = 0; i < 8; i++)
      assert_int_equal(w[i].woke_at, 7 - i);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* ---- the lost wake-up race ---------------------------------------------- */

typedef struct {
  weft_counter_t c;
  weft_counter_t done;
} race_t;

static void race_decrement(void* arg) {
  race_t* r = arg;
  weft_counter_add(&r->c, -1);
}

static void race_wait(void* arg) {
  race_t* r = arg;
  weft_counter_wait(&r->c, 0);
  CHECK(weft_counter_value(&r->c) == 0);
}

static void counter_lost_wakeup(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    long rounds = test_size(20000);
    long i;
    for (i = 0; i < rounds; i++) {
      race_t r;
      weft_counter_init(&r.c, 1);
      weft_counter_init(&r.done, 0);
      /* Waiter and decrementer race; the waiter must always wake. */
      weft_spawn(rt, race_wait, &r, &r.done);
      weft_spawn(rt, race_decrement, &r, &r.done);
      assert_int_equal(weft_counter_wait(&r.done, 0), 0);
    }
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* ---- plain threads wait too -------------------------------------------- */

typedef struct {
  weft_counter_t* c;
  atomic_int* woke;
} thr_t;

static void* thread_waiter(void* arg) {
  thr_t* t = arg;
  weft_counter_wait(t->c, 0);
  atomic_fetch_add(t->woke, 1);
  return NULL;
}

static void release_job(void* arg) {
  weft_counter_t* c = arg;
  weft_counter_add(c, -1);
}

static void counter_thread_waiters(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  weft_counter_t c;
  atomic_int woke = 0;
  pthread_t th[4];
  thr_t t = {&c, &woke};
  int i;
  (void)state;

  weft_counter_init(&c, 1);
  for (i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&th[i], NULL, thread_waiter, &t), 0);
  test_sleep_ms(10);
  assert_int_equal(atomic_load(&woke), 0);
  /* A job's decrement wakes blocked plain threads. */
  assert_int_equal(weft_spawn(rt, release_job, &c, NULL), 0);
  for (i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&woke), 4);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

/* A fiber waiting on a counter that a plain thread releases. */
static void fiber_waits_for_thread(void* arg) {
  weft_counter_t* c = arg;
  CHECK(weft_counter_wait(c, 0) == 0);
}

static void counter_released_by_thread(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    weft_counter_t gate;
    weft_counter_t done;
    int i;
    weft_counter_init(&gate, 1);
    weft_counter_init(&done, 0);
    for (i = 0; i < 100; i++)
      weft_spawn(rt, fiber_waits_for_thread, &gate, &done);
    test_sleep_ms(2);
    assert_int_equal(weft_counter_value(&done), 100);
    assert_int_equal(weft_counter_add(&gate, -1), 0);
    assert_int_equal(weft_counter_wait(&done, 0), 0);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* A fiber of runtime A waits on a counter that a job of runtime B
 * releases, and A is destroyed as soon as its job is done while B lives
 * on. B's worker, having readied the fiber into A, may still be waking one
 * of A's workers when that fiber's job, A's last, ends: destroy must wait
 * for it (TSan saw the race; ASan can see the use after free). */
static void release_later(void* arg) {
  struct timespec t0;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do /* let the fiber on A get to its wait first, mostly */
    clock_gettime(CLOCK_MONOTONIC, &t);
  while ((t.tv_sec - t0.tv_sec) * 1000000000L + t.tv_nsec - t0.tv_nsec < 20000);
  CHECK(weft_counter_add(arg, -1) == 0);
}

static void counter_released_by_other_runtime(void** state) {
  weft_runtime_t* b = test_runtime(1);
  long i;
  (void)state;
  for (i = 0; i < test_size(300); i++) {
    weft_runtime_t* a = test_runtime(1 + (unsigned)(i & 1));
    weft_counter_t gate;
    weft_counter_t done;
    weft_counter_t rel;
    weft_counter_init(&gate, 1);
    weft_counter_init(&done, 0);
    weft_counter_init(&rel, 0);
    assert_int_equal(weft_spawn(a, fiber_waits_for_thread, &gate, &done), 0);
    assert_int_equal(weft_spawn(b, release_later, &gate, &rel), 0);
    assert_int_equal(weft_counter_wait(&done, 0), 0);
    assert_int_equal(weft_runtime_destroy(a), 0);
    assert_int_equal(weft_counter_wait(&rel, 0), 0);
  }
  assert_int_equal(weft_runtime_destroy(b), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- workers apply a run of job ends on one counter as one decrement --- */

typedef struct {
  int n;
  atomic_int ran;
  int64_t seen_at_half; /* the value when a wait for <= n/2 returned */
} fan_t;

static void fan_leaf(void* arg) {
  fan_t* f = arg;
  atomic_fetch_add(&f->ran, 1);
}

static void fan_root(void* arg) {
  fan_t* f = arg;
  weft_counter_t c;
  int i;

  weft_counter_init(&c, 0);
  for (i = 0; i < f->n; i++)
    CHECK(weft_spawn(NULL, fan_leaf, f, &c) == 0);
  /* A target above zero: no inline help, the fiber suspends and the one
   * worker runs the leaves. Held-back decrements must still reach the
   * waiter while leaves remain (at most 64 are held back). */
  CHECK(weft_counter_wait(&c, f->n / 2) == 0);
  f->seen_at_half = weft_counter_value(&c);
  CHECK(f->seen_at_half <= f->n / 2);
  CHECK(weft_counter_wait(&c, 0) == 0);
  CHECK(weft_counter_value(&c) == 0);
}

static void counter_batched_decrements(void** state) {
  weft_runtime_t* rt = test_runtime(1);
  weft_stats_t s0;
  weft_stats_t s1;
  weft_counter_t c;
  fan_t f;
  uint64_t rmws;
  (void)state;

  memset(&f, 0, sizeof(f));
  f.n = 10000;
  weft_counter_init(&c, 0);
  assert_int_equal(weft_stats(rt, &s0), 0); /* not started yet */
  assert_int_equal(weft_spawn(rt, fan_root, &f, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(atomic_load(&f.ran), f.n);
  /* Some leaves were still to run when the first wait returned. */
  assert_true(f.seen_at_half > 0);
  assert_int_equal(weft_stats(rt, &s1), 1);
  rmws = s1.counter_rmws - s0.counter_rmws;
  /* One worker: n increments, then the leaves' ends in runs of up to 64,
   * plus the root's own end: far from the plain design's 2 per job. */
  assert_true(rmws >= (uint64_t)f.n);
  assert_true(rmws <= (uint64_t)f.n + (uint64_t)f.n / 64 + 8);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(counter_targets),
      cmocka_unit_test(counter_nested_one_worker),
      cmocka_unit_test(counter_suspends_one_worker),
      cmocka_unit_test(counter_fib25),
      cmocka_unit_test(counter_many_targets),
      cmocka_unit_test(counter_lost_wakeup),
      cmocka_unit_test(counter_thread_waiters),
      cmocka_unit_test(counter_released_by_thread),
      cmocka_unit_test(counter_released_by_other_runtime),
      cmocka_unit_test(counter_batched_decrements),
  };
  return cmocka_run_group_tests_name("counter", tests, NULL, NULL);
}
