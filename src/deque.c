/* The per-worker work-stealing deque: Chase and Lev's growable ring, with the
 * algorithm and every memory order of Lê, Pop, Cohen, Zappa Nardelli,
 * "Correct and Efficient Work-Stealing for Weak Memory Models", PPoPP 2013
 * (Fig. 1). Growth doubles the ring and keeps the old one until destroy, so a
 * thief holding a stale ring pointer never reads freed memory.
 */

#include "deque.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

/* ThreadSanitizer does not model standalone fences (gcc 12 says so with
 * -Wtsan), so the synchronization the paper gets from them is invisible to
 * it, and both gcc's and clang's TSan report false races on the items'
 * contents. Under TSan only, each fence is folded into the atomic
 * accesses around it: the seq_cst fences make the store and load they
 * separate seq_cst (the Dekker argument then runs on the single total order
 * of seq_cst operations), push's release fence becomes a release store of
 * bottom, and pop's relaxed stores of bottom after its fence become release.
 * Every other build uses the paper's orders exactly.
 */
#if defined(__SANITIZE_THREAD__)
#define DEQUE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEQUE_TSAN 1
#endif
#endif
#ifndef DEQUE_TSAN
#define DEQUE_TSAN 0
#endif

struct weft__deque_ring_s {
  size_t mask;               /* capacity - 1; the capacity is a power of 2 */
  weft__deque_ring_t* older; /* next on the retired list */
  /* Atomic because a thief holding a stale top may read a slot while the
   * owner reuses it; that thief's CAS then fails and drops what it read. */
  _Atomic(void*) slots[];
};


static weft__deque_ring_t* deque_ring_alloc(size_t capacity) {
  weft__deque_ring_t* r;

  if (capacity > (SIZE_MAX - sizeof(*r)) / sizeof(r->slots[0]))
    return NULL;
  /* Zeroed so that a slot this ring never received holds a defined value:
   * only a thief whose top is already stale reads one, and its CAS fails. */
  r = calloc(1, sizeof(*r) + capacity * sizeof(r->slots[0]));
  if (r == NULL)
    return NULL;
  r->mask = capacity - 1;
  r->older = NULL;
  return r;
}


/* Owner only. Replaces `old`, which holds items t..b-1, with a ring of at
 * least `need` slots and twice the old capacity, holding the same items at
 * the same indices. Returns the new ring, or NULL with nothing changed.
 * Slots below the real top may be copied when t is stale; those items are
 * already taken, and any thief reading them loses its CAS.
 */
static weft__deque_ring_t* deque_grow(weft__deque_t* d, weft__deque_ring_t* old,
                                      int64_t t, int64_t b, size_t need) {
  weft__deque_ring_t* r;
  size_t capacity;
  int64_t i;

  if (old->mask >= SIZE_MAX / 2)
    return NULL;
  capacity = (old->mask + 1) * 2;
  while (capacity < need) {
    if (capacity > SIZE_MAX / 2)
      return NULL;
    capacity *= 2;
  }
  r = deque_ring_alloc(capacity);
  if (r == NULL)
    return NULL;

  /* Relaxed: the owner stored these slots itself, and thieves only read. */
  for (i = t; i < b; i++) {
    void* item = atomic_load_explicit(&old->slots[(size_t)i & old->mask],
                                      memory_order_relaxed);
    atomic_store_explicit(&r->slots[(size_t)i & r->mask], item,
                          memory_order_relaxed);
  }
  old->older = d->retired;
  d->retired = old;
  /* Release pairs with the acquire load of ring in steal: a thief that sees
   * the new ring also sees the copies above. Without it the thief could read
   * a slot before its copy landed and return NULL for a CAS it won. */
  atomic_store_explicit(&d->ring, r, memory_order_release);
  return r;
}


/* Owner only. Makes the slots stored since the last publication visible to
 * thieves by moving bottom to `bottom`. The release fence pairs with the
 * acquire load of bottom in steal: a thief that sees the new bottom also
 * sees the slot stores and everything the caller wrote into the items before
 * pushing them. Without it the thief could read a slot's previous content
 * (an item already taken, now taken twice) or a job whose fields are not yet
 * written. A fence followed by a relaxed store rather than a release store,
 * as in the paper: the fence also covers every later relaxed store of bottom
 * by the owner (pop's), so a thief reading one of those is synchronized too.
 */
static void deque_publish(weft__deque_t* d, int64_t bottom) {
#if DEQUE_TSAN
  atomic_store_explicit(&d->bottom, bottom, memory_order_release);
#else
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&d->bottom, bottom, memory_order_relaxed);
#endif
}


/* Owner only. Puts bottom back to `bottom` after pop found the deque empty
 * or raced for its last item. Relaxed as in the paper: pop's seq_cst fence,
 * sequenced before this store, acts as its release, so a thief reading this
 * value sees the slots below it.
 */
static void deque_restore(weft__deque_t* d, int64_t bottom) {
#if DEQUE_TSAN
  atomic_store_explicit(&d->bottom, bottom, memory_order_release);
#else
  atomic_store_explicit(&d->bottom, bottom, memory_order_relaxed);
#endif
}


int weft__deque_init(weft__deque_t* d, unsigned log2_capacity) {
  weft__deque_ring_t* r;

  assert(log2_capacity >= 1);
  if (log2_capacity >= sizeof(size_t) * CHAR_BIT - 1)
    return -ENOMEM;
  r = deque_ring_alloc((size_t)1 << log2_capacity);
  if (r == NULL)
    return -ENOMEM;

  atomic_init(&d->top, 0);
  atomic_init(&d->bottom, 0);
  atomic_init(&d->ring, r);
  d->retired = NULL;
  d->top_cache = 0;
  return 0;
}


void weft__deque_destroy(weft__deque_t* d) {
  weft__deque_ring_t* r;
  weft__deque_ring_t* older;

  free(atomic_load_explicit(&d->ring, memory_order_relaxed));
  for (r = d->retired; r != NULL; r = older) {
    older = r->older;
    free(r);
  }
  atomic_store_explicit(&d->ring, NULL, memory_order_relaxed);
  d->retired = NULL;
}


int weft__deque_push(weft__deque_t* d, void* item) {
  weft__deque_ring_t* r;
  int64_t b;
  int64_t t;

  assert(item != NULL);
  /* Relaxed: only the owner, this thread, writes bottom and ring. */
  b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  r = atomic_load_explicit(&d->ring, memory_order_relaxed);
  if ((uint64_t)(b - d->top_cache) > r->mask) {
    /* Acquire pairs with the seq_cst CAS on top in steal: a thief reads
     * slot t before its CAS moves top past t, and this makes that read
     * happen before the store below reuses the slot for item t + capacity.
     * Without it the thief could read the new item and return it for index
     * t: the new item would be taken twice and the old one lost. A cached
     * top was read the same way, and the slot we reuse lies below it. */
    t = atomic_load_explicit(&d->top, memory_order_acquire);
    d->top_cache = t;
    if ((uint64_t)(b - t) > r->mask) {
      r = deque_grow(d, r, t, b, (size_t)(b - t) + 1);
      if (r == NULL)
        return -ENOMEM;
    }
  }
  /* Relaxed: deque_publish orders it before the new bottom. */
  atomic_store_explicit(&r->slots[(size_t)b & r->mask], item,
                        memory_order_relaxed);
  deque_publish(d, b + 1);
  return 0;
}


int weft__deque_push_batch(weft__deque_t* d, void* const* items, size_t n) {
  weft__deque_ring_t* r;
  size_t used;
  size_t i;
  int64_t b;
  int64_t t;

  if (n == 0)
    return 0;
  /* The same loads as in weft__deque_push, for the same reasons. */
  b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  t = atomic_load_explicit(&d->top, memory_order_acquire);
  d->top_cache = t;
  r = atomic_load_explicit(&d->ring, memory_order_relaxed);

  used = (size_t)(b - t);
  if (n > SIZE_MAX - used)
    return -ENOMEM;
  if (used + n > r->mask + 1) {
    r = deque_grow(d, r, t, b, used + n);
    if (r == NULL)
      return -ENOMEM;
  }
  /* Relaxed: no thief looks at slots at or above the published bottom, and
   * the single deque_publish below releases them all at once. */
  for (i = 0; i < n; i++) {
    assert(items[i] != NULL);
    atomic_store_explicit(&r->slots[((size_t)b + i) & r->mask], items[i],
                          memory_order_relaxed);
  }
  deque_publish(d, b + (int64_t)n);
  return 0;
}


void* weft__deque_pop(weft__deque_t* d) {
  weft__deque_ring_t* r;
  void* item;
  int64_t b;
  int64_t t;

  /* Relaxed: only the owner, this thread, writes bottom and ring. */
  b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
  /* Empty for sure when bottom <= top: top only grows and only the owner
   * adds items, so skip the fence (the scheduler's idle path pops a lot of
   * empty deques). A stale top only sends us down the full path. */
  if (b < atomic_load_explicit(&d->top, memory_order_relaxed))
    return NULL;
  r = atomic_load_explicit(&d->ring, memory_order_relaxed);

  /* Claim item b, then look at top. The seq_cst fence pairs with the one in
   * steal (Dekker's pattern): either this load of top sees a thief's CAS, or
   * that thief's load of bottom sees this claim and the thief backs off.
   * Without it the store can wait in the store buffer (x86 does exactly
   * this) while top is read stale, and the owner and a thief both take the
   * last item. */
#if DEQUE_TSAN
  atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
  t = atomic_load_explicit(&d->top, memory_order_seq_cst);
#else
  atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
  atomic_thread_fence(memory_order_seq_cst);
  t = atomic_load_explicit(&d->top, memory_order_relaxed);
#endif

  if (t > b) {
    /* Empty: top == b + 1. Undo the claim so that bottom == top again. */
    deque_restore(d, b + 1);
    return NULL;
  }

  /* Relaxed: this thread stored the slot, and no one else writes it. */
  item = atomic_load_explicit(&r->slots[(size_t)b & r->mask],
                              memory_order_relaxed);
  if (t == b) {
    /* The last item, which thieves may be after too: whoever moves top
     * first takes it. seq_cst as in the paper, since this CAS takes part in
     * the Dekker argument above; nothing read by a failed CAS is used. */
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed)) {
      item = NULL;
    }
    /* Either way top is now b + 1: leave the deque empty. */
    deque_restore(d, b + 1);
  }
  return item;
}


void* weft__deque_steal(weft__deque_t* d, int* lost) {
  weft__deque_ring_t* r;
  void* item;
  int64_t t;
  int64_t b;

  if (lost != NULL)
    *lost = 0;

#if DEQUE_TSAN
  t = atomic_load_explicit(&d->top, memory_order_seq_cst);
  b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
#else
  /* Acquire pairs with the release half of the CAS that stored t (another
   * steal, or pop taking the last item). The race with pop does not need it
   * (the fence below carries that); it is the order Lê et al. prove correct,
   * kept rather than re-proving a weaker one, and free on x86. */
  t = atomic_load_explicit(&d->top, memory_order_acquire);
  /* Pairs with the seq_cst fence in pop; see there. */
  atomic_thread_fence(memory_order_seq_cst);
  /* Acquire pairs with the release fence in deque_publish (and, for the
   * bottom stores pop makes, with pop's seq_cst fence): once bottom > t is
   * seen, slot t and the item's contents are visible. Without it the thief
   * could read the slot's previous content or a half-written job. */
  b = atomic_load_explicit(&d->bottom, memory_order_acquire);
#endif
  if (t >= b)
    return NULL;

  /* Acquire (the paper says consume, which compilers implement as acquire)
   * pairs with the release store in deque_grow: see there. */
  r = atomic_load_explicit(&d->ring, memory_order_acquire);
  /* Relaxed: trusted only if the CAS below succeeds. With a stale t the
   * owner may be reusing this slot; top has then moved and the CAS fails. */
  item = atomic_load_explicit(&r->slots[(size_t)t & r->mask],
                              memory_order_relaxed);
  /* seq_cst as in the paper: it decides the race with other thieves and
   * with pop for the last item. A failed CAS's read is not used. */
  if (!atomic_compare_exchange_strong_explicit(
          &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed)) {
    if (lost != NULL)
      *lost = 1;
    return NULL;
  }
  return item;
}


size_t weft__deque_size(const weft__deque_t* d) {
  int64_t b;
  int64_t t;

  /* Relaxed: an estimate by contract, and the two loads are no snapshot
   * anyway; a pop in progress can even make bottom < top for a moment,
   * hence the clamp. */
  b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  t = atomic_load_explicit(&d->top, memory_order_relaxed);
  return b > t ? (size_t)(b - t) : 0;
}
