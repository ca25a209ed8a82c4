/* stats.c: reading the per-worker counters. Each is written by its worker
 * alone (relaxed); readers get a racy but untorn snapshot.
 */
#include <string.h>

#include "internal.h"

static uint64_t rd(atomic_uint_fast64_t* a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}

static void worker_read(weft__worker_t* w, weft_worker_stats_t* s) {
  s->jobs_run = rd(&w->stats.jobs_run);
  s->steals = rd(&w->stats.steals);
  s->failed_steals = rd(&w->stats.failed_steals);
  s->parks = rd(&w->stats.parks);
  s->fiber_switches = rd(&w->stats.fiber_switches);
  s->fibers_in_pool = rd(&w->stats.fibers_in_pool);
  s->counter_rmws = rd(&w->stats.counter_rmws);
  s->stacks_hugetlb = rd(&w->stats.stacks_hugetlb);
  s->stacks_thp = rd(&w->stats.stacks_thp);
  s->stacks_normal = rd(&w->stats.stacks_normal);
  s->stacks_bound = rd(&w->stats.stacks_bound);
  s->offers_made = rd(&w->stats.offers_made);
  s->offers_taken = rd(&w->stats.offers_taken);
}

static bool started(weft_runtime_t* rt) {
  /* Acquire pairs with the release in weft__runtime_start. */
  return atomic_load_explicit(&rt->state, memory_order_acquire) != WEFT__RT_NEW;
}

int weft_stats(weft_runtime_t* rt, weft_stats_t* s) {
  weft_worker_stats_t ws;
  unsigned i;

  if (rt == NULL || s == NULL)
    return -EINVAL;
  memset(s, 0, sizeof(*s));
  if (!started(rt))
    return 0;
  s->workers = rt->nworkers;
  /* First, acquire: pairs with the placer's release, so that a reader
   * that sees it done sees what it bound. */
  s->placing = atomic_load_explicit(&rt->placing, memory_order_acquire);
  for (i = 0; i < rt->nworkers; i++) {
    worker_read(&rt->workers[i], &ws);
    s->jobs_run += ws.jobs_run;
    s->steals += ws.steals;
    s->failed_steals += ws.failed_steals;
    s->parks += ws.parks;
    s->fiber_switches += ws.fiber_switches;
    s->fibers_in_pool += ws.fibers_in_pool;
    s->counter_rmws += ws.counter_rmws;
    s->stacks_hugetlb += ws.stacks_hugetlb;
    s->stacks_thp += ws.stacks_thp;
    s->stacks_normal += ws.stacks_normal;
    s->stacks_bound += ws.stacks_bound;
    s->offers_made += ws.offers_made;
    s->offers_taken += ws.offers_taken;
  }
  weft__spin_lock(&rt->fibers_lock);
  s->fibers_in_pool += rt->nshared;
  weft__spin_unlock(&rt->fibers_lock);
  s->fibers_created = rd(&rt->fibers_created);
  s->stacks_bound += rd(&rt->stacks_bound_late);
  s->workers_pinned =
      atomic_load_explicit(&rt->workers_pinned, memory_order_relaxed);
  return (int)rt->nworkers;
}

int weft_worker_stats(weft_runtime_t* rt, unsigned worker,
                      weft_worker_stats_t* s) {
  if (rt == NULL || s == NULL || !started(rt) || worker >= rt->nworkers)
    return -EINVAL;
  worker_read(&rt->workers[worker], s);
  return 0;
}
