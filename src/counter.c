/* counter.c: atomic counters and waiting for them.
 *
 * A counter is one atomic word holding the value, a "has waiters" bit and a
 * count of wakers in flight (see internal.h). Waiters (suspended fibers or
 * blocked threads) sit on a list behind a small lock. A decrement is one
 * CAS: when the bit is clear it never touches the counter again, so jobs
 * nobody waits on cost no more; when set, the same CAS registers it as a
 * waker, and it wakes whoever the new value satisfies. The lost wake-up (a
 * waiter registering just as the value reaches its target) cannot happen:
 * setting the bit and reading the value is one atomic operation, ordered
 * against every decrement. A waiter returns only once no waker is in
 * flight, so the counter's memory may be reused right after.
 */
#include <sched.h>

#include "internal.h"

static weft__counter_t* cast(weft_counter_t* c) {
  return (weft__counter_t*)(void*)c;
}

static int64_t value_of(int64_t state) {
  /* Arithmetic shift: the value is signed (gcc and clang shift signed
   * integers arithmetically). */
  return state >> 17;
}

int weft_counter_init(weft_counter_t* c, int64_t value) {
  weft__counter_t* k;
  if (c == NULL)
    return -EINVAL;
  if (value > WEFT__CTR_MAX || value < -WEFT__CTR_MAX)
    return -ERANGE;
  k = cast(c);
  atomic_init(&k->state, value * WEFT__CTR_ONE);
  atomic_init(&k->waiters, NULL);
  atomic_init(&k->lock.locked, 0);
  return 0;
}

int64_t weft_counter_value(const weft_counter_t* c) {
  if (c == NULL)
    return 0;
  return value_of(atomic_load_explicit(&cast((weft_counter_t*)c)->state,
                                       memory_order_acquire));
}

/* Waits until no waker is in flight: after this, nothing inside weft will
 * touch the counter on account of the decrements seen so far. Wakers hold
 * their registration only for a short critical section. */
static void quiesce(weft__counter_t* c) {
  unsigned spins = 0;
  /* Acquire pairs with the release in waker_done. */
  while (atomic_load_explicit(&c->state, memory_order_acquire) &
         WEFT__CTR_WAKERS_MASK) {
    if (++spins < 128)
      weft__cpu_relax();
    else
      sched_yield();
  }
}

static void waker_done(weft__counter_t* c) {
  /* Release: our last access to the counter; pairs with the acquire loads
   * in quiesce(). */
  atomic_fetch_sub_explicit(&c->state, 1, memory_order_release);
}

/* A registered waker: takes every waiter the value now satisfies off the
 * list, unregisters, then wakes them (they may free the counter once all
 * wakers are gone, so waking comes after our last access). */
static void wake_waiters(weft__counter_t* c) {
  weft__waiter_t* ready = NULL;
  weft__waiter_t** link;
  weft__waiter_t* wt;
  int64_t v;

  weft__spin_lock(&c->lock);
  v = value_of(atomic_load_explicit(&c->state, memory_order_seq_cst));
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
  if (atomic_load_explicit(&c->waiters, memory_order_relaxed) == NULL)
    atomic_fetch_and_explicit(&c->state, ~WEFT__CTR_WAITERS,
                              memory_order_relaxed);
  weft__spin_unlock(&c->lock);
  waker_done(c);

  while (ready != NULL) {
    wt = ready;
    ready = wt->next;
    if (wt->fiber != NULL) {
      weft__fiber_t* f = wt->fiber;
      weft__fiber_set(f, WEFT__FIBER_WAITING, WEFT__FIBER_READY);
      weft__worker_ready(f->rt, weft__worker_current(), &f->task);
    } else {
      /* Release pairs with the waiting thread's acquire load. After this
       * store the waiter may return and its frame vanish, so only the
       * futex syscall (no memory access) may follow. */
      atomic_store_explicit(&wt->futex, 1, memory_order_release);
      weft__futex_wake(&wt->futex, 1);
    }
  }
}

int weft__counter_sub(weft__counter_t* c, int64_t n) {
  long long s = atomic_load_explicit(&c->state, memory_order_relaxed);
  long long ns;
  int attempts = 0;

  /* seq_cst (release for the job's writes, which waiters acquire; total
   * order with the waiters' fetch_or). With waiters present the same CAS
   * registers us as a waker. */
  do {
    attempts++;
    ns = s - n * WEFT__CTR_ONE;
    if (s & WEFT__CTR_WAITERS)
      ns += 1;
  } while (!atomic_compare_exchange_weak_explicit(
      &c->state, &s, ns, memory_order_seq_cst, memory_order_relaxed));
  if (s & WEFT__CTR_WAITERS)
    wake_waiters(c);
  return attempts;
}

int weft_counter_add(weft_counter_t* c, int64_t delta) {
  if (c == NULL)
    return -EINVAL;
  if (delta > WEFT__CTR_MAX || delta < -WEFT__CTR_MAX)
    return -ERANGE;
  weft__counter_sub(cast(c), -delta);
  return 0;
}

/* Puts wt on the list unless the target is already met. Returns whether it
 * was queued. */
static bool enqueue(weft__counter_t* c, weft__waiter_t* wt) {
  int64_t s;

  weft__spin_lock(&c->lock);
  wt->next = atomic_load_explicit(&c->waiters, memory_order_relaxed);
  atomic_store_explicit(&c->waiters, wt, memory_order_relaxed);
  /* One RMW sets the bit and reads the value: every decrement is ordered
   * before it (we see its value) or after it (it sees the bit). */
  s = atomic_fetch_or_explicit(&c->state, WEFT__CTR_WAITERS,
                               memory_order_seq_cst);
  if (value_of(s) <= wt->target) {
    /* Reached meanwhile: we are still at the head (the lock is held). */
    atomic_store_explicit(&c->waiters, wt->next, memory_order_relaxed);
    if (wt->next == NULL)
      atomic_fetch_and_explicit(&c->state, ~WEFT__CTR_WAITERS,
                                memory_order_relaxed);
    weft__spin_unlock(&c->lock);
    return false;
  }
  weft__spin_unlock(&c->lock);
  return true;
}

bool weft__counter_above(weft__counter_t* c, int64_t target) {
  /* Acquire pairs with the seq_cst decrements (their jobs' writes). */
  return value_of(atomic_load_explicit(&c->state, memory_order_acquire)) >
         target;
}

bool weft__counter_enqueue(weft__counter_t* c, weft__waiter_t* wt) {
  return enqueue(c, wt);
}

static void thread_wait(weft__counter_t* c, int64_t target) {
  weft__waiter_t wt;

  wt.target = target;
  wt.fiber = NULL;
  atomic_init(&wt.futex, 0);
  if (!enqueue(c, &wt))
    return;
  /* Acquire pairs with the release store in wake_waiters. */
  while (atomic_load_explicit(&wt.futex, memory_order_acquire) == 0)
    weft__futex_wait(&wt.futex, 0);
}

int weft_counter_wait(weft_counter_t* counter, int64_t target) {
  weft__counter_t* c;
  weft__worker_t* w;
  weft__post_t post;

  if (counter == NULL)
    return -EINVAL;
  c = cast(counter);
  /* Acquire pairs with the seq_cst decrements: the finished jobs' writes
   * are visible when we return without waiting. */
  if (value_of(atomic_load_explicit(&c->state, memory_order_acquire)) >
      target) {
    w = weft__worker_current();
    if (w == NULL || w->current == NULL) {
      thread_wait(c, target);
    } else {
      /* A spawner that waits after a few spawns is no stream (range.c). */
      w->stream_n = 0;
      if (target <= 0)
        w = weft__worker_help(w, c, target);
      /* Decrements this worker holds back (of c or another counter) are
       * applied before anything here sleeps. */
      weft__worker_dec_flush(w);
      if (weft__counter_above(c, target)) {
        post.op = WEFT__POST_WAIT;
        post.fiber = w->current;
        post.counter = c;
        post.target = target;
        weft__fiber_suspend(w, &post);
      }
    }
  }
  quiesce(c);
  return 0;
}
