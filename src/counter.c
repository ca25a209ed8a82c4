/* counter.c: atomic counters and waiting for them.
 *
 * The value is one atomic; waiters (suspended fibers or blocked threads)
 * sit on a list behind a small lock that only waiting and waking touch. A
 * decrement is one fetch_sub plus one load of the list head, so jobs that
 * nobody waits on never take the lock. The lost wake-up (a waiter
 * registering just after the value reached its target) is closed by a
 * Dekker pair: the waiter publishes itself then re-reads the value, the
 * decrementer writes the value then reads the list, all seq_cst.
 */
#include "internal.h"

static weft__counter_t* cast(weft_counter_t* c) {
  return (weft__counter_t*)(void*)c;
}

int weft_counter_init(weft_counter_t* c, int64_t value) {
  weft__counter_t* k;
  if (c == NULL)
    return -EINVAL;
  k = cast(c);
  atomic_init(&k->value, value);
  atomic_init(&k->waiters, NULL);
  atomic_init(&k->lock.locked, 0);
  return 0;
}

int64_t weft_counter_value(const weft_counter_t* c) {
  if (c == NULL)
    return 0;
  return atomic_load_explicit(&cast((weft_counter_t*)c)->value,
                              memory_order_acquire);
}

/* Takes every waiter whose target the value now meets off the list and
 * wakes it. */
static void wake_waiters(weft__counter_t* c) {
  weft__waiter_t* ready = NULL;
  weft__waiter_t** link;
  weft__waiter_t* wt;
  int64_t v;

  weft__spin_lock(&c->lock);
  v = atomic_load_explicit(&c->value, memory_order_seq_cst);
  link = (weft__waiter_t**)&c->waiters;
  for (wt = atomic_load_explicit(&c->waiters, memory_order_relaxed);
       wt != NULL;) {
    weft__waiter_t* next = wt->next;
    if (v <= wt->target) {
      *link = next;
      wt->next = ready;
      ready = wt;
    } else {
      link = &wt->next;
    }
    wt = next;
  }
  weft__spin_unlock(&c->lock);

  while (ready != NULL) {
    wt = ready;
    ready = wt->next;
    if (wt->fiber != NULL) {
      weft__fiber_t* f = wt->fiber;
      weft__fiber_set(f, WEFT__FIBER_WAITING, WEFT__FIBER_READY);
      weft__worker_ready(f->rt, weft__worker_current(), &f->task);
    } else {
      /* Release pairs with the waiting thread's acquire load: the job
       * results published before the decrement are visible to it. After
       * this store the waiter may return and its stack frame vanish, so
       * only the futex syscall (no memory access) may follow. */
      atomic_store_explicit(&wt->futex, 1, memory_order_release);
      weft__futex_wake(&wt->futex, 1);
    }
  }
}

void weft__counter_sub(weft__counter_t* c, int64_t n) {
  /* seq_cst RMW then seq_cst load: the decrementer's half of the Dekker
   * pair with weft__counter_enqueue / thread_wait (store list, load value).
   * It also releases the job's writes to whoever waits on the value. */
  atomic_fetch_sub_explicit(&c->value, n, memory_order_seq_cst);
  if (atomic_load_explicit(&c->waiters, memory_order_seq_cst) != NULL)
    wake_waiters(c);
}

int weft_counter_add(weft_counter_t* c, int64_t delta) {
  if (c == NULL)
    return -EINVAL;
  weft__counter_sub(cast(c), -delta);
  return 0;
}

/* Puts wt on the list unless the target is already met. Returns whether it
 * was queued. */
static bool enqueue(weft__counter_t* c, weft__waiter_t* wt) {
  weft__spin_lock(&c->lock);
  wt->next = atomic_load_explicit(&c->waiters, memory_order_relaxed);
  /* The waiter's half of the Dekker pair (see weft__counter_sub). */
  atomic_store_explicit(&c->waiters, wt, memory_order_seq_cst);
  if (atomic_load_explicit(&c->value, memory_order_seq_cst) <= wt->target) {
    /* Reached meanwhile: we are still at the head (the lock is held). */
    atomic_store_explicit(&c->waiters, wt->next, memory_order_relaxed);
    weft__spin_unlock(&c->lock);
    return false;
  }
  weft__spin_unlock(&c->lock);
  return true;
}

bool weft__counter_enqueue(weft__counter_t* c, weft__waiter_t* wt) {
  return enqueue(c, wt);
}

static int thread_wait(weft__counter_t* c, int64_t target) {
  weft__waiter_t wt;

  wt.target = target;
  wt.fiber = NULL;
  atomic_init(&wt.futex, 0);
  if (!enqueue(c, &wt))
    return 0;
  /* Acquire pairs with the release store in wake_waiters. */
  while (atomic_load_explicit(&wt.futex, memory_order_acquire) == 0)
    weft__futex_wait(&wt.futex, 0);
  return 0;
}

int weft_counter_wait(weft_counter_t* counter, int64_t target) {
  weft__counter_t* c;
  weft__worker_t* w;
  weft__post_t post;

  if (counter == NULL)
    return -EINVAL;
  c = cast(counter);
  /* Acquire pairs with the seq_cst decrement: the finished jobs' writes are
   * visible when we return without waiting. */
  if (atomic_load_explicit(&c->value, memory_order_acquire) <= target)
    return 0;
  w = weft__worker_current();
  if (w == NULL || w->current == NULL)
    return thread_wait(c, target);
  post.op = WEFT__POST_WAIT;
  post.fiber = w->current;
  post.counter = c;
  post.target = target;
  weft__fiber_suspend(w, &post);
  return 0;
}
