/* test_fiber.c: fiber-local storage across waits and workers, yield,
 * worker ids, and deep stacks.
 */
#include <string.h>

#include "test_util.h"

typedef struct {
  weft_counter_t gate;
  atomic_int migrated;
  atomic_int bad;
} fls_state_t;

typedef struct {
  fls_state_t* st;
  int home;
  int id;
} fls_job_t;

static void fls_waiter(void* arg) {
  fls_job_t* j = arg;
  void* v = (void*)1;
  unsigned s;

  /* A new job starts with empty slots. */
  for (s = 0; s < WEFT_FLS_SLOTS; s++) {
    CHECK(weft_fls_get(s, &v) == 0);
    CHECK(v == NULL);
  }
  CHECK(weft_fls_set(WEFT_FLS_SLOTS, j) == -EINVAL);
  CHECK(weft_fls_get(0, NULL) == -EINVAL);
  for (s = 0; s < WEFT_FLS_SLOTS; s++)
    CHECK(weft_fls_set(s, (char*)j + s) == 0);
  j->home = weft_worker_id();
  CHECK(weft_counter_wait(&j->st->gate, 0) == 0);
  if (weft_worker_id() != j->home)
    atomic_fetch_add(&j->st->migrated, 1);
  for (s = 0; s < WEFT_FLS_SLOTS; s++) {
    CHECK(weft_fls_get(s, &v) == 0);
    if (v != (char*)j + s)
      atomic_fetch_add(&j->st->bad, 1);
  }
}

static void open_gate(void* arg) {
  fls_state_t* st = arg;
  weft_counter_add(&st->gate, -1);
}

/* Unpinned waiters: they resume wherever the wake puts them; the slots
 * must follow the fiber. Counts migrations to show they happen. */
typedef struct {
  fls_state_t st;
  fls_job_t jobs[64];
} unpinned_t;

static void spread_waiters(void* arg) {
  unpinned_t* u = arg;
  weft_counter_t c;
  int i;
  weft_counter_init(&c, 0);
  for (i = 0; i < 64; i++) {
    u->jobs[i].st = &u->st;
    weft_spawn(NULL, fls_waiter, &u->jobs[i], &c);
  }
  weft_counter_wait(&c, 0);
}

static void fiber_fls_survives_migration(void** state) {
  size_t k;
  (void)state;
  for (k = 1; k < TEST_NWORKER_COUNTS; k++) {
    unsigned n = test_worker_counts[k];
    weft_runtime_t* rt = test_runtime(n);
    int migrated = 0;
    int round;
    for (round = 0; round < 200 && migrated == 0; round++) {
      unpinned_t* u = calloc(1, sizeof(*u));
      weft_counter_t c;
      weft_spawn_opts_t o = {WEFT_PRIORITY_NORMAL, (int)(round % n)};
      weft_counter_init(&u->st.gate, 1);
      weft_counter_init(&c, 0);
      assert_int_equal(weft_spawn(rt, spread_waiters, u, &c), 0);
      test_sleep_ms(1);
      assert_int_equal(weft_spawn_ex(rt, open_gate, &u->st, &c, &o), 0);
      assert_int_equal(weft_counter_wait(&c, 0), 0);
      assert_int_equal(atomic_load(&u->st.bad), 0);
      migrated += atomic_load(&u->st.migrated);
      free(u);
    }
    /* Over many rounds, some fiber resumed on another worker. */
    assert_true(migrated > 0);
    test_assert_no_live_fibers(rt);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* A waiting job may run its own children inline (helping): each child
 * still sees empty slots, and the parent's slots survive. */
static void fls_child(void* arg) {
  void* v = (void*)1;
  CHECK(weft_fls_get(3, &v) == 0);
  CHECK(v == NULL);
  CHECK(weft_fls_set(3, arg) == 0);
}

static void fls_parent(void* arg) {
  weft_counter_t c;
  void* v = NULL;
  int i;
  (void)arg;
  CHECK(weft_fls_set(3, &c) == 0);
  weft_counter_init(&c, 0);
  for (i = 0; i < 100; i++)
    CHECK(weft_spawn(NULL, fls_child, &v, &c) == 0);
  CHECK(weft_counter_wait(&c, 0) == 0);
  CHECK(weft_fls_get(3, &v) == 0);
  CHECK(v == &c);
}

static void fiber_fls_with_helping(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_runtime_t* rt = test_runtime(test_worker_counts[k]);
    weft_counter_t c;
    int i;
    weft_counter_init(&c, 0);
    for (i = 0; i < 20; i++)
      assert_int_equal(weft_spawn(rt, fls_parent, NULL, &c), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* ---- yield --------------------------------------------------------------- */

typedef struct {
  atomic_int turn;
  int trace[40];
  atomic_int n;
} pingpong_t;

typedef struct {
  pingpong_t* pp;
  int who;
} player_t;

static void player(void* arg) {
  player_t* p = arg;
  int i;
  for (i = 0; i < 20; i++) {
    int at = atomic_fetch_add(&p->pp->n, 1);
    if (at < 40)
      p->pp->trace[at] = p->who;
    CHECK(weft_yield() == 0);
  }
}

static void fiber_yield_interleaves(void** state) {
  weft_runtime_t* rt = test_runtime(1);
  weft_counter_t c;
  pingpong_t pp;
  player_t a = {&pp, 0};
  player_t b = {&pp, 1};
  int i;
  int switches = 0;
  (void)state;

  memset(&pp, 0, sizeof(pp));
  weft_counter_init(&c, 0);
  assert_int_equal(
      weft_spawn_batch(rt, (weft_job_t[]){{player, &a}, {player, &b}}, 2, &c),
      0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(atomic_load(&pp.n), 40);
  /* On one worker, yielding hands the CPU to the other job. */
  for (i = 1; i < 40; i++)
    switches += pp.trace[i] != pp.trace[i - 1];
  assert_true(switches >= 30);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- worker ids and deep stacks --------------------------------------------
 */

static void id_job(void* arg) {
  atomic_int* seen = arg;
  int id = weft_worker_id();
  CHECK(id >= 0 && id < 8);
  if (id >= 0 && id < 8)
    atomic_fetch_or(seen, 1 << id);
}

static void fiber_worker_ids(void** state) {
  weft_runtime_t* rt = test_runtime(4);
  weft_counter_t c;
  atomic_int seen = 0;
  int i;
  (void)state;
  weft_counter_init(&c, 0);
  for (i = 0; i < 4; i++) {
    weft_spawn_opts_t o = {WEFT_PRIORITY_NORMAL, i};
    assert_int_equal(weft_spawn_ex(rt, id_job, &seen, &c, &o), 0);
  }
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(atomic_load(&seen), 0xf);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

static int deep(int n, volatile int* prev) {
  volatile int frame[256]; /* 1 KiB a level */
  frame[0] = n;
  frame[255] = prev != NULL ? prev[0] : 0;
  if (n == 0)
    return frame[0] + frame[255];
  return deep(n - 1, frame) + frame[0];
}

static void deep_job(void* arg) {
  int* out = arg;
  *out = deep(300, NULL); /* ~300 KiB of a 512 KiB stack */
}

static void fiber_deep_stack(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  weft_counter_t c;
  int out = 0;
  (void)state;
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, deep_job, &out, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(out, 300 * 301 / 2 + 1);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fiber_fls_survives_migration),
      cmocka_unit_test(fiber_fls_with_helping),
      cmocka_unit_test(fiber_yield_interleaves),
      cmocka_unit_test(fiber_worker_ids),
      cmocka_unit_test(fiber_deep_stack),
  };
  return cmocka_run_group_tests_name("fiber", tests, NULL, NULL);
}
