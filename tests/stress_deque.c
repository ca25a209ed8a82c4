/* Stress and semantics tests for the work-stealing deque (src/deque.c): the
 * sequential contract first (LIFO pop, FIFO steal, growth, batches, errors),
 * then one owner against several thieves, checking that every item is taken
 * exactly once and that a thief sees what the owner wrote into it.
 * Sizes: WEFT_STRESS_ITEMS (=1000000; 100000 under ASan/TSan or with
 * WEFT_VALGRIND=1) and WEFT_STRESS_THIEVES (=3).
 */

#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "deque.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRESS_SANITIZED 1
#endif
#endif
#ifndef STRESS_SANITIZED
#define STRESS_SANITIZED 0
#endif

#define STRESS_DEFAULT_ITEMS 1000000
#define STRESS_SMALL_ITEMS 100000
#define STRESS_DEFAULT_THIEVES 3
#define STRESS_MAX_THIEVES 64
#define STRESS_ROUNDS 3

/* The sequential tests' item i is the address of seq_pool[i]; NULL is never
 * an item, and INDEX(NULL) is far out of range, so it fails any check. */
#define SEQ_POOL_SIZE 16384
static char seq_pool[SEQ_POOL_SIZE];
#define ITEM(i) ((void*)&seq_pool[(i)])
#define INDEX(p) ((uintptr_t)(p) - (uintptr_t)seq_pool)


/* Reads a size from the environment; only called before any thread starts,
 * which is what makes getenv safe here. */
static size_t env_size(const char* name, size_t dflt, size_t max) {
  const char* s;
  char* end;
  unsigned long long v;

  s = getenv(name); /* NOLINT(concurrency-mt-unsafe): see above */
  if (s == NULL || *s == '\0')
    return dflt;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return dflt;
  return (size_t)v;
}


static size_t stress_default_items(void) {
  if (STRESS_SANITIZED || env_size("WEFT_VALGRIND", 0, 1) == 1)
    return STRESS_SMALL_ITEMS;
  return STRESS_DEFAULT_ITEMS;
}


static void deque_empty_returns_null(void** state) {
  weft__deque_t d;
  int lost;
  int i;

  (void)state;
  assert_int_equal(weft__deque_init(&d, 1), 0);
  assert_int_equal(weft__deque_size(&d), 0);
  /* Repeated pops of an empty deque must leave bottom where it was. */
  for (i = 0; i < 5; i++)
    assert_null(weft__deque_pop(&d));
  lost = 42;
  assert_null(weft__deque_steal(&d, &lost));
  assert_int_equal(lost, 0);
  assert_null(weft__deque_steal(&d, NULL));
  assert_int_equal(weft__deque_size(&d), 0);

  assert_int_equal(weft__deque_push(&d, ITEM(7)), 0);
  assert_int_equal(weft__deque_size(&d), 1);
  assert_ptr_equal(weft__deque_pop(&d), ITEM(7));
  assert_null(weft__deque_pop(&d));
  assert_int_equal(weft__deque_push(&d, ITEM(8)), 0);
  assert_ptr_equal(weft__deque_steal(&d, &lost), ITEM(8));
  assert_int_equal(lost, 0);
  assert_null(weft__deque_steal(&d, &lost));
  assert_null(weft__deque_pop(&d));
  weft__deque_destroy(&d);
}


static void deque_pop_lifo(void** state) {
  weft__deque_t d;
  uintptr_t i;

  (void)state;
  /* Two slots to start: 1000 items force nine growths. */
  assert_int_equal(weft__deque_init(&d, 1), 0);
  for (i = 1; i <= 1000; i++)
    assert_int_equal(weft__deque_push(&d, ITEM(i)), 0);
  assert_int_equal(weft__deque_size(&d), 1000);
  for (i = 1000; i >= 1; i--)
    assert_int_equal(INDEX(weft__deque_pop(&d)), i);
  assert_null(weft__deque_pop(&d));
  assert_int_equal(weft__deque_size(&d), 0);
  weft__deque_destroy(&d);
}


static void deque_steal_fifo(void** state) {
  weft__deque_t d;
  uintptr_t i;
  int lost;

  (void)state;
  assert_int_equal(weft__deque_init(&d, 1), 0);
  for (i = 1; i <= 1000; i++)
    assert_int_equal(weft__deque_push(&d, ITEM(i)), 0);
  for (i = 1; i <= 1000; i++) {
    lost = 42;
    assert_int_equal(INDEX(weft__deque_steal(&d, &lost)), i);
    assert_int_equal(lost, 0);
    assert_int_equal(weft__deque_size(&d), 1000 - i);
  }
  lost = 42;
  assert_null(weft__deque_steal(&d, &lost));
  assert_int_equal(lost, 0);
  assert_null(weft__deque_pop(&d));
  weft__deque_destroy(&d);
}


/* Growth while top is far from 0 and the live items wrap around the ring:
 * the copy must keep every item at its index. */
static void deque_grow_wrapped(void** state) {
  weft__deque_t d;
  uintptr_t next;
  uintptr_t oldest;
  uintptr_t i;

  (void)state;
  assert_int_equal(weft__deque_init(&d, 2), 0);
  next = 1;
  oldest = 1;
  /* Cycle through the 4 slots many times without growing. */
  for (i = 0; i < 1000; i++) {
    assert_int_equal(weft__deque_push(&d, ITEM(next++)), 0);
    assert_int_equal(weft__deque_push(&d, ITEM(next++)), 0);
    assert_int_equal(weft__deque_push(&d, ITEM(next++)), 0);
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), oldest++);
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), oldest++);
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), oldest++);
  }
  /* One left in, then grow from a wrapped position, several times over. */
  assert_int_equal(weft__deque_push(&d, ITEM(next++)), 0);
  for (i = 0; i < 5000; i++)
    assert_int_equal(weft__deque_push(&d, ITEM(next++)), 0);
  assert_int_equal(weft__deque_size(&d), next - oldest);
  /* Take half from each end. */
  for (i = 0; i < 2500; i++)
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), oldest++);
  while (next > oldest)
    assert_int_equal(INDEX(weft__deque_pop(&d)), --next);
  assert_null(weft__deque_pop(&d));
  assert_null(weft__deque_steal(&d, NULL));
  weft__deque_destroy(&d);
}


static void deque_push_batch_order(void** state) {
  void* items[300];
  weft__deque_t d;
  uintptr_t i;

  (void)state;
  for (i = 0; i < 300; i++)
    items[i] = ITEM(i + 1);
  assert_int_equal(weft__deque_init(&d, 1), 0);

  /* A batch larger than the ring: pops see it newest first. */
  assert_int_equal(weft__deque_push_batch(&d, items, 10), 0);
  assert_int_equal(weft__deque_size(&d), 10);
  for (i = 10; i >= 1; i--)
    assert_int_equal(INDEX(weft__deque_pop(&d)), i);
  assert_null(weft__deque_pop(&d));

  /* Steals see it oldest first. */
  assert_int_equal(weft__deque_push_batch(&d, items, 10), 0);
  for (i = 1; i <= 10; i++)
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), i);
  assert_null(weft__deque_steal(&d, NULL));

  /* Single pushes and batches interleave in push order, and a batch that
   * needs more than one doubling grows once, far enough. */
  assert_int_equal(weft__deque_push(&d, ITEM(1)), 0);
  assert_int_equal(weft__deque_push_batch(&d, items + 1, 3), 0);
  assert_int_equal(weft__deque_push(&d, ITEM(5)), 0);
  assert_int_equal(weft__deque_push_batch(&d, items + 5, 295), 0);
  assert_int_equal(weft__deque_push_batch(&d, items, 0), 0);
  assert_int_equal(weft__deque_size(&d), 300);
  for (i = 1; i <= 150; i++)
    assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), i);
  for (i = 300; i > 150; i--)
    assert_int_equal(INDEX(weft__deque_pop(&d)), i);
  assert_null(weft__deque_pop(&d));
  weft__deque_destroy(&d);
}


/* Requests too large to satisfy fail before allocating and change
 * nothing. */
static void deque_enomem(void** state) {
  void* items[1] = {ITEM(99)};
  weft__deque_t d;

  (void)state;
  assert_int_equal(weft__deque_init(&d, 63), -ENOMEM);
  assert_int_equal(weft__deque_init(&d, 62), -ENOMEM);

  assert_int_equal(weft__deque_init(&d, 1), 0);
  assert_int_equal(weft__deque_push(&d, ITEM(1)), 0);
  assert_int_equal(weft__deque_push(&d, ITEM(2)), 0);
  assert_int_equal(weft__deque_push(&d, ITEM(3)), 0);
  /* Neither call reads `items` beyond what it can hold: both fail on size
   * alone (overflow, then a ring too large to address). */
  assert_int_equal(weft__deque_push_batch(&d, items, SIZE_MAX), -ENOMEM);
  assert_int_equal(weft__deque_push_batch(&d, items, SIZE_MAX / 4), -ENOMEM);
  assert_int_equal(weft__deque_size(&d), 3);
  assert_int_equal(INDEX(weft__deque_steal(&d, NULL)), 1);
  assert_int_equal(INDEX(weft__deque_pop(&d)), 3);
  assert_int_equal(INDEX(weft__deque_pop(&d)), 2);
  assert_null(weft__deque_pop(&d));
  weft__deque_destroy(&d);
}


/* The concurrent tests. Items point into an array of payloads; the owner
 * writes each payload just before pushing it and whoever takes it checks the
 * value, so a missing happens-before shows as a wrong value (or a TSan
 * report). */

typedef struct {
  uint64_t value;
} stress_item_t;

typedef struct {
  weft__deque_t deque;
  stress_item_t* items;
  _Atomic unsigned* taken; /* times item i was returned, to be exactly 1 */
  size_t n;
  uint64_t round;
  _Atomic int done;     /* the owner has drained the deque and stopped */
  _Atomic size_t bad;   /* items returned with a wrong index or payload */
  _Atomic size_t total; /* items returned, by anyone */
  size_t popped;        /* items the owner popped; owner only */
} stress_run_t;

typedef struct {
  stress_run_t* run;
  pthread_t thread;
  size_t stolen;
  size_t lost;
} stress_thief_t;


static uint64_t stress_value(size_t i, uint64_t round) {
  return (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15) + round;
}


static uint64_t xorshift64(uint64_t* s) {
  uint64_t x = *s;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}


/* Called from any thread with an item the deque returned. */
static void stress_take(stress_run_t* run, void* p) {
  uintptr_t offset;
  size_t i;

  offset = (uintptr_t)p - (uintptr_t)run->items;
  i = (size_t)(offset / sizeof(stress_item_t));
  if ((uintptr_t)p < (uintptr_t)run->items ||
      offset % sizeof(stress_item_t) != 0 || i >= run->n ||
      run->items[i].value != stress_value(i, run->round)) {
    atomic_fetch_add(&run->bad, 1);
    return;
  }
  atomic_fetch_add_explicit(&run->taken[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&run->total, 1, memory_order_relaxed);
}


static void* stress_thief_main(void* arg) {
  stress_thief_t* th = arg;
  stress_run_t* run = th->run;
  unsigned idle = 0;
  void* p;
  int lost;

  for (;;) {
    p = weft__deque_steal(&run->deque, &lost);
    if (p != NULL) {
      stress_take(run, p);
      th->stolen++;
      idle = 0;
      continue;
    }
    if (lost) {
      th->lost++;
      continue;
    }
    /* The owner sets done only once its deque is empty for good, so an
     * empty steal after seeing it means there is nothing left to take. */
    if (atomic_load(&run->done))
      break;
    /* Oversubscribed (more threads than cores, or valgrind's one-at-a-time
     * scheduler): let the owner run. */
    if (++idle % 64 == 0)
      sched_yield();
  }
  return NULL;
}


/* Owner side of one round: `stress_owner_fn` produces every item through the
 * deque and pops some; the round ends when the owner has drained the deque.
 */
typedef void (*stress_owner_fn)(stress_run_t* run, uint64_t* rng);


static void stress_pop_some(stress_run_t* run, unsigned count) {
  void* p;

  while (count-- > 0) {
    p = weft__deque_pop(&run->deque);
    if (p == NULL)
      return;
    stress_take(run, p);
    run->popped++;
  }
}


static void stress_publish(stress_run_t* run, size_t i) {
  run->items[i].value = stress_value(i, run->round);
}


/* Single pushes, batches of up to 16 and bursts of pops, interleaved at
 * random, with pushes ahead on average so the ring grows under the thieves.
 */
static void stress_owner_mixed(stress_run_t* run, uint64_t* rng) {
  void* batch[16];
  size_t next = 0;
  size_t k;
  size_t j;
  uint64_t r;

  while (next < run->n) {
    r = xorshift64(rng);
    switch (r % 8) {
      case 0:
      case 1:
      case 2:
        stress_publish(run, next);
        assert_int_equal(weft__deque_push(&run->deque, &run->items[next]), 0);
        next++;
        break;
      case 3:
      case 4:
        k = 1 + (size_t)((r >> 8) % 16);
        if (k > run->n - next)
          k = run->n - next;
        for (j = 0; j < k; j++) {
          stress_publish(run, next + j);
          batch[j] = &run->items[next + j];
        }
        assert_int_equal(weft__deque_push_batch(&run->deque, batch, k), 0);
        next += k;
        break;
      default:
        stress_pop_some(run, 1 + (unsigned)((r >> 8) % 4));
        break;
    }
  }
}


/* One or two items in, then pop until empty: nearly every pop is a pop of
 * the last item, racing the thieves' steals for it. */
static void stress_owner_last_item(stress_run_t* run, uint64_t* rng) {
  void* batch[2];
  size_t next = 0;
  unsigned iteration = 0;
  uint64_t r;

  while (next < run->n) {
    r = xorshift64(rng);
    stress_publish(run, next);
    if ((r & 1) == 0 || next + 1 == run->n) {
      assert_int_equal(weft__deque_push(&run->deque, &run->items[next]), 0);
      next++;
    } else {
      stress_publish(run, next + 1);
      batch[0] = &run->items[next];
      batch[1] = &run->items[next + 1];
      assert_int_equal(weft__deque_push_batch(&run->deque, batch, 2), 0);
      next += 2;
    }
    /* Now and then give the thieves the items uncontested: under valgrind,
     * which runs one thread at a time, they would otherwise never find any. */
    if (++iteration % 256 == 0)
      sched_yield();
    stress_pop_some(run, 2);
  }
}


static void stress_rounds(unsigned log2_capacity, stress_owner_fn owner) {
  stress_thief_t thieves[STRESS_MAX_THIEVES];
  stress_run_t run;
  size_t nthieves;
  size_t stolen;
  size_t lost;
  size_t wrong;
  size_t first_wrong;
  size_t i;
  uint64_t rng;
  int round;

  nthieves = env_size("WEFT_STRESS_THIEVES", STRESS_DEFAULT_THIEVES,
                      STRESS_MAX_THIEVES);
  run.n = env_size("WEFT_STRESS_ITEMS", stress_default_items(), SIZE_MAX / 64);
  run.items = malloc(run.n * sizeof(run.items[0]) + 1);
  run.taken = malloc(run.n * sizeof(run.taken[0]) + 1);
  assert_non_null(run.items);
  assert_non_null(run.taken);

  for (round = 1; round <= STRESS_ROUNDS; round++) {
    assert_int_equal(weft__deque_init(&run.deque, log2_capacity), 0);
    run.round = (uint64_t)round;
    for (i = 0; i < run.n; i++) {
      run.items[i].value = 0;
      atomic_init(&run.taken[i], 0);
    }
    atomic_init(&run.done, 0);
    atomic_init(&run.bad, 0);
    atomic_init(&run.total, 0);
    run.popped = 0;

    for (i = 0; i < nthieves; i++) {
      thieves[i].run = &run;
      thieves[i].stolen = 0;
      thieves[i].lost = 0;
      assert_int_equal(pthread_create(&thieves[i].thread, NULL,
                                      stress_thief_main, &thieves[i]),
                       0);
    }

    rng = UINT64_C(0x2545F4914F6CDD1D) * (uint64_t)round;
    owner(&run, &rng);
    stress_pop_some(&run, UINT_MAX);
    assert_null(weft__deque_pop(&run.deque));
    atomic_store(&run.done, 1);

    stolen = 0;
    lost = 0;
    for (i = 0; i < nthieves; i++) {
      assert_int_equal(pthread_join(thieves[i].thread, NULL), 0);
      stolen += thieves[i].stolen;
      lost += thieves[i].lost;
    }
    assert_int_equal(weft__deque_size(&run.deque), 0);
    assert_null(weft__deque_steal(&run.deque, NULL));
    weft__deque_destroy(&run.deque);

    wrong = 0;
    first_wrong = 0;
    for (i = 0; i < run.n; i++) {
      if (atomic_load_explicit(&run.taken[i], memory_order_relaxed) != 1) {
        if (wrong++ == 0)
          first_wrong = i;
      }
    }
    print_message(
        "round %d: items=%zu thieves=%zu popped=%zu stolen=%zu "
        "lost_races=%zu\n",
        round, run.n, nthieves, run.popped, stolen, lost);
    if (wrong != 0) {
      print_error(
          "%zu items not taken exactly once; first: item %zu, "
          "taken %u times\n",
          wrong, first_wrong, atomic_load(&run.taken[first_wrong]));
    }
    assert_int_equal(atomic_load(&run.bad), 0);
    assert_int_equal(wrong, 0);
    assert_int_equal(atomic_load(&run.total), run.n);
    assert_int_equal(run.popped + stolen, run.n);
  }

  free(run.items);
  free((void*)run.taken);
}


static void deque_steal_concurrent_mixed(void** state) {
  (void)state;
  stress_rounds(2, stress_owner_mixed);
}


static void deque_steal_concurrent_last_item(void** state) {
  (void)state;
  stress_rounds(1, stress_owner_last_item);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(deque_empty_returns_null),
      cmocka_unit_test(deque_pop_lifo),
      cmocka_unit_test(deque_steal_fifo),
      cmocka_unit_test(deque_grow_wrapped),
      cmocka_unit_test(deque_push_batch_order),
      cmocka_unit_test(deque_enomem),
      cmocka_unit_test(deque_steal_concurrent_mixed),
      cmocka_unit_test(deque_steal_concurrent_last_item),
  };

  return cmocka_run_group_tests_name("deque", tests, NULL, NULL);
}
