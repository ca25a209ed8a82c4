/* lock.c: a test-and-test-and-set spinlock for the short critical sections
 * of the injection queue, mailboxes, the idle set and counter waiter lists.
 * It yields the CPU after a while: on a 2-core machine the holder may have
 * been preempted, and spinning against it only delays it.
 */
#include <sched.h>

#include "internal.h"

void weft__spin_lock(weft__spin_t* s) {
  unsigned spins = 0;
  for (;;) {
    /* Acquire pairs with the release store in weft__spin_unlock. */
    if (!atomic_exchange_explicit(&s->locked, 1, memory_order_acquire))
      return;
    while (atomic_load_explicit(&s->locked, memory_order_relaxed)) {
      if (++spins < 64)
        weft__cpu_relax();
      else
        sched_yield();
    }
  }
}
