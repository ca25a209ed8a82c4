/* park.c: putting idle workers to sleep and waking them.
 *
 * Each worker has a parker: a futex word with states EMPTY, PARKED and
 * NOTIFIED (Rust's thread parker), so an unpark that comes before the park
 * is never lost. Above it sits the idle set, after Tokio's: counts of
 * searching and awake workers, and a stack of sleepers. A submitter wakes
 * one sleeper only when no worker is searching, since a searcher will find
 * the new work and, when it does, wake the next (the chained wake-up): no
 * thundering herd, no polling timeouts.
 */
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

enum { PARK_EMPTY = 0, PARK_PARKED = 1, PARK_NOTIFIED = 2 };

#if defined(__SANITIZE_THREAD__)
#define PARK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PARK_TSAN 1
#endif
#endif

void weft__futex_wait(atomic_uint* addr, unsigned expected) {
#ifdef PARK_TSAN
  /* TSan defers an asynchronous signal until the thread that got it enters
   * a function TSan intercepts; a raw futex syscall is not one, so a
   * SIGTERM landing on a parked worker would wait forever. Under TSan
   * only, wake every 10 ms and pass through an intercepted call (callers
   * treat any return as possibly spurious). */
  struct timespec ts = {0, 10 * 1000 * 1000};
  struct timespec zero = {0, 0};
  syscall(SYS_futex, (void*)addr, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
  nanosleep(&zero, NULL);
#else
  syscall(SYS_futex, (void*)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#endif
}

void weft__futex_wake(atomic_uint* addr, int n) {
  syscall(SYS_futex, (void*)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void weft__parker_park(weft__parker_t* p) {
  unsigned s = PARK_NOTIFIED;

  /* Acquire (both here and below) pairs with the release exchange in
   * weft__parker_unpark: whatever the waker published before unparking is
   * visible once we consume its token. */
  if (atomic_compare_exchange_strong_explicit(&p->state, &s, PARK_EMPTY,
                                              memory_order_acquire,
                                              memory_order_relaxed))
    return;
  s = PARK_EMPTY;
  if (!atomic_compare_exchange_strong_explicit(&p->state, &s, PARK_PARKED,
                                               memory_order_acquire,
                                               memory_order_relaxed)) {
    /* Only NOTIFIED can have been stored meanwhile: consume it. Acquire
     * (an exchange rather than a store and a fence, which TSan cannot see)
     * pairs with the release exchange in weft__parker_unpark. */
    atomic_exchange_explicit(&p->state, PARK_EMPTY, memory_order_acquire);
    return;
  }
  for (;;) {
    weft__futex_wait(&p->state, PARK_PARKED);
    s = PARK_NOTIFIED;
    if (atomic_compare_exchange_strong_explicit(&p->state, &s, PARK_EMPTY,
                                                memory_order_acquire,
                                                memory_order_relaxed))
      return;
    /* Spurious wake-up: still PARKED. */
  }
}

void weft__parker_unpark(weft__parker_t* p) {
  /* Release pairs with the acquire CASes in weft__parker_park. */
  if (atomic_exchange_explicit(&p->state, PARK_NOTIFIED,
                               memory_order_release) == PARK_PARKED)
    weft__futex_wake(&p->state, 1);
}

/* ---- the idle set ------------------------------------------------------ */

int weft__idle_init(weft__idle_t* idle, unsigned nworkers) {
  idle->sleepers = calloc(nworkers, sizeof(*idle->sleepers));
  if (idle->sleepers == NULL)
    return -ENOMEM;
  idle->nsleepers = 0;
  atomic_init(&idle->searching, 0);
  atomic_init(&idle->unparked, nworkers);
  atomic_init(&idle->lock.locked, 0);
  return 0;
}

void weft__idle_destroy(weft__idle_t* idle) {
  free(idle->sleepers);
  idle->sleepers = NULL;
}

/* Pops a sleeper and marks it awake and searching. Under the lock. */
static weft__worker_t* pop_sleeper(weft_runtime_t* rt) {
  weft__idle_t* idle = &rt->idle;
  weft__worker_t* w;

  if (idle->nsleepers == 0)
    return NULL;
  w = &rt->workers[idle->sleepers[--idle->nsleepers]];
  w->sleeping = false;
  w->searching = true;
  atomic_fetch_add_explicit(&idle->unparked, 1, memory_order_seq_cst);
  atomic_fetch_add_explicit(&idle->searching, 1, memory_order_seq_cst);
  return w;
}

void weft__idle_wake_early(weft_runtime_t* rt) {
  weft__idle_t* idle = &rt->idle;

  /* Relaxed: a hint. A stale read only wakes a worker early for nothing
   * (it searches, then parks again) or leaves the wake-up to the notify
   * that follows the publication, as without this call. */
  if (atomic_load_explicit(&idle->searching, memory_order_relaxed) == 0 &&
      atomic_load_explicit(&idle->unparked, memory_order_relaxed) <
          rt->nworkers)
    weft__idle_notify(rt);
}

void weft__idle_notify(weft_runtime_t* rt) {
  weft__idle_t* idle = &rt->idle;
  weft__worker_t* w;

  /* The submitter published its task before this fence; a worker going to
   * sleep decrements `searching`/`unparked` (seq_cst) before it re-checks
   * the queues. Either we see it still searching or awake, or it sees our
   * task: the fence pairs with the seq_cst RMWs in idle_park. */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&idle->searching, memory_order_seq_cst) != 0)
    return;
  if (atomic_load_explicit(&idle->unparked, memory_order_seq_cst) >=
      rt->nworkers)
    return;
  weft__spin_lock(&idle->lock);
  /* Re-check under the lock: another notifier may have woken a searcher. */
  if (atomic_load_explicit(&idle->searching, memory_order_seq_cst) != 0) {
    weft__spin_unlock(&idle->lock);
    return;
  }
  w = pop_sleeper(rt);
  weft__spin_unlock(&idle->lock);
  if (w != NULL)
    weft__parker_unpark(&w->parker);
}

void weft__idle_notify_worker(weft_runtime_t* rt, unsigned k) {
  weft__idle_t* idle = &rt->idle;
  weft__worker_t* w = &rt->workers[k];
  unsigned i;
  bool wake = false;

  /* Pairs as in weft__idle_notify; here with the sleeper's re-check of its
   * own mailbox after it has put itself on the stack (under the lock). */
  atomic_thread_fence(memory_order_seq_cst);
  weft__spin_lock(&idle->lock);
  if (w->sleeping) {
    for (i = 0; i < idle->nsleepers; i++) {
      if (idle->sleepers[i] == k) {
        idle->sleepers[i] = idle->sleepers[--idle->nsleepers];
        break;
      }
    }
    w->sleeping = false;
    w->searching = true;
    atomic_fetch_add_explicit(&idle->unparked, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&idle->searching, 1, memory_order_seq_cst);
    wake = true;
  }
  weft__spin_unlock(&idle->lock);
  if (wake)
    weft__parker_unpark(&w->parker);
}

void weft__idle_notify_all(weft_runtime_t* rt) {
  weft__idle_t* idle = &rt->idle;
  weft__worker_t* w;

  for (;;) {
    weft__spin_lock(&idle->lock);
    w = pop_sleeper(rt);
    weft__spin_unlock(&idle->lock);
    if (w == NULL)
      break;
    weft__parker_unpark(&w->parker);
  }
}

bool weft__idle_start_search(weft_runtime_t* rt, weft__worker_t* w) {
  weft__idle_t* idle = &rt->idle;
  unsigned s;

  if (w->searching)
    return true;
  /* At most half the awake workers search at once (Tokio's rule): more
   * thieves only add contention on the victims' deques. */
  s = atomic_load_explicit(&idle->searching, memory_order_seq_cst);
  if (2 * s >= atomic_load_explicit(&idle->unparked, memory_order_seq_cst))
    return false;
  atomic_fetch_add_explicit(&idle->searching, 1, memory_order_seq_cst);
  w->searching = true;
  return true;
}

bool weft__idle_end_search(weft_runtime_t* rt, weft__worker_t* w) {
  if (!w->searching)
    return false;
  w->searching = false;
  return atomic_fetch_sub_explicit(&rt->idle.searching, 1,
                                   memory_order_seq_cst) == 1;
}

/* Is there work worker w could take? Used for the last re-check before
 * sleeping; all loads are hints made safe by the seq_cst fence before it. */
bool weft__idle_work_visible(weft_runtime_t* rt, weft__worker_t* w,
                             bool everywhere) {
  unsigned i;
  int p;

  if (!weft__inject_empty(&w->mailbox, WEFT__NPRIO - 1) ||
      atomic_load_explicit(&w->offer, memory_order_relaxed) != NULL)
    return true;
  if (!everywhere)
    return false;
  if (!weft__inject_empty(&rt->inject, WEFT__NPRIO - 1))
    return true;
  for (i = 0; i < rt->nworkers; i++) {
    for (p = 0; p < WEFT__NPRIO; p++)
      if (weft__deque_size(&rt->workers[i].dq[p]) != 0)
        return true;
    if (weft__range_visible(&rt->workers[i]))
      return true; /* unstarted batch jobs others may steal */
  }
  return false;
}

void weft__idle_check_quiet(weft_runtime_t* rt) {
  /* As in weft__idle_park: the fence pairs with the seq_cst store of
   * want_quiet in wait_quiet (runtime.c); either the destroyer's collect
   * sees our last completion, or we see want_quiet and collect. */
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&rt->want_quiet, memory_order_acquire))
    weft__runtime_check_quiet(rt);
}

void weft__idle_park(weft_runtime_t* rt, weft__worker_t* w) {
  weft__idle_t* idle = &rt->idle;
  bool last_searcher;
  bool everywhere;
  bool cancel = false;
  unsigned i;

  weft__spin_lock(&idle->lock);
  last_searcher = false;
  if (w->searching) {
    w->searching = false;
    last_searcher = atomic_fetch_sub_explicit(&idle->searching, 1,
                                              memory_order_seq_cst) == 1;
  }
  atomic_fetch_sub_explicit(&idle->unparked, 1, memory_order_seq_cst);
  idle->sleepers[idle->nsleepers++] = w->index;
  w->sleeping = true;
  weft__spin_unlock(&idle->lock);

  /* Pairs with the fence in weft__idle_notify: a submitter that saw us
   * awake skipped the wake-up, so we must see its work now. Only the last
   * searcher, or any worker once nobody searches, needs to look everywhere
   * (others leave it to the searcher still looking, which will end its
   * search as the last one and look itself); every worker looks at its own
   * mailbox, which nobody else can take from. A worker refused the search
   * (another was searching) that parks after that searcher found its work
   * must look too: submitters counted it awake and woke nobody, and it
   * never looked at other workers' queues (it did not steal). */
  atomic_thread_fence(memory_order_seq_cst);
  everywhere = last_searcher || atomic_load_explicit(&idle->searching,
                                                     memory_order_seq_cst) == 0;
  if (weft__idle_work_visible(rt, w, everywhere) ||
      atomic_load_explicit(&rt->stop, memory_order_acquire)) {
    weft__spin_lock(&idle->lock);
    if (w->sleeping) {
      for (i = 0; i < idle->nsleepers; i++) {
        if (idle->sleepers[i] == w->index) {
          idle->sleepers[i] = idle->sleepers[--idle->nsleepers];
          break;
        }
      }
      w->sleeping = false;
      atomic_fetch_add_explicit(&idle->unparked, 1, memory_order_seq_cst);
      cancel = true;
    }
    weft__spin_unlock(&idle->lock);
    /* If someone else already took us off the stack, their unpark token is
     * on its way: park consumes it without sleeping. */
    if (cancel)
      return;
  }
  if (atomic_load_explicit(&rt->want_quiet, memory_order_acquire))
    weft__runtime_check_quiet(rt);
  atomic_fetch_add_explicit(&w->stats.parks, 1, memory_order_relaxed);
  weft__parker_park(&w->parker);
}
