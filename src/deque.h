/* Per-worker work-stealing deque (Chase-Lev, with the C11 memory orders of
 * Lê, Pop, Cohen, Zappa Nardelli, "Correct and Efficient Work-Stealing for
 * Weak Memory Models", PPoPP 2013). The owning worker pushes and pops at the
 * bottom; any thread steals from the top. Private to weft.
 */

#ifndef WEFT_DEQUE_H_
#define WEFT_DEQUE_H_

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifndef WEFT__CACHE_LINE
#define WEFT__CACHE_LINE 64
#endif

typedef struct weft__deque_ring_s weft__deque_ring_t;
typedef struct weft__deque_s weft__deque_t;

/* Defined here because it is embedded in the worker struct. The three
 * shared fields sit on separate cache lines: top is written by every thief's
 * CAS, bottom by every owner push and pop, and ring is read by everyone but
 * written only on growth; sharing a line would make each write invalidate
 * the others' reads. Memory holding this struct must honour its 64-byte
 * alignment (automatic, static or aligned_alloc storage; malloc is not
 * enough).
 */
struct weft__deque_s {
  /* Index of the oldest item. Only ever increases, by a CAS: thieves race
   * each other on it, and the owner joins the race for the last item. */
  _Alignas(WEFT__CACHE_LINE) _Atomic int64_t top;

  /* One past the newest item. Written only by the owner; signed because pop
   * decrements it below top transiently when the deque is empty. */
  _Alignas(WEFT__CACHE_LINE) _Atomic int64_t bottom;

  /* The current ring. Written by the owner when it grows. */
  _Alignas(WEFT__CACHE_LINE) _Atomic(weft__deque_ring_t*) ring;
  /* Rings replaced by growth, newest first. Owner only, and written only
   * when `ring` is. A thief that loaded one before the swap may still read
   * it, so they live until destroy. */
  weft__deque_ring_t* retired;
  /* The owner's last acquired view of top (owner only). top only grows, so
   * while bottom - top_cache fits in the ring, the ring has room and push
   * need not read the line thieves are writing. */
  int64_t top_cache;
};

/* weft__deque_init: prepares `d` with a ring of 2^log2_capacity slots
 * (log2_capacity >= 1); it grows on demand. Returns 0 or -ENOMEM. The caller
 * owns the storage of `d`; nothing may use `d` concurrently with init.
 */
int weft__deque_init(weft__deque_t* d, unsigned log2_capacity);

/* weft__deque_destroy: frees the current and all retired rings. Items still
 * in the deque are dropped (they are the caller's). No concurrent users.
 */
void weft__deque_destroy(weft__deque_t* d);

/* weft__deque_push: owner only. Pushes `item` (never NULL) at the bottom,
 * doubling the ring when it is full. Returns 0, or -ENOMEM with the item not
 * pushed and the deque unchanged. Never blocks.
 */
int weft__deque_push(weft__deque_t* d, void* item);

/* weft__deque_push_batch: owner only. Pushes items[0..n-1] at the bottom in
 * that order (items[n-1] is popped first, items[0] stolen first) and makes
 * them visible to thieves at once, with a single publication of bottom.
 * Grows as needed. Returns 0, or -ENOMEM with nothing pushed.
 */
int weft__deque_push_batch(weft__deque_t* d, void* const* items, size_t n);

/* weft__deque_pop: owner only. Returns the most recently pushed item (LIFO),
 * or NULL when the deque is empty or a thief won the race for the last item.
 * Never blocks.
 */
void* weft__deque_pop(weft__deque_t* d);

/* weft__deque_steal: any thread. Returns the oldest item (FIFO), or NULL.
 * When `lost` is not NULL it is set to 1 if a concurrent steal or pop won
 * the race (the deque may still hold items: retry later, ideally after
 * trying other victims) and to 0 otherwise (NULL then means the deque looked
 * empty). Lock-free: never blocks, but one thief may lose repeatedly.
 */
void* weft__deque_steal(weft__deque_t* d, int* lost);

/* weft__deque_size: any thread. A racy estimate of the number of items,
 * never negative; fit for victim choice and emptiness hints only. Exact when
 * called by the owner with no thieves running.
 */
size_t weft__deque_size(const weft__deque_t* d);

#endif /* WEFT_DEQUE_H_ */
