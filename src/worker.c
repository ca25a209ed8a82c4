/* worker.c: the scheduling loop.
 *
 * A worker takes work in this order: queued high-priority work anywhere, a
 * slice offered to it in particular (its offer slot, parallel.c's team
 * split), then its own deque (LIFO), its mailbox, the injection queue (first,
 * every 61st tick, so outside work never starves), steals from victims nearest
 * first with a random start, low-priority work last; then it spins a little
 * and parks. Ready fibers and new jobs share the queues: a job runs on the
 * current fiber; a ready fiber is switched to.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WEFT__INJECT_EVERY 61
/* A worker out of work keeps looking before it parks: first
 * WEFT__SPIN_PAUSE_ROUNDS rounds after exponentially growing pause loops
 * (about 3 us in all here), then a round after each sched_yield (about
 * 0.7 us when nothing else wants the core) for up to w->spin_ns. Waking a
 * parked worker on this VM costs the waker ~10 us in the futex call and
 * the work 35-40 us before it starts on the other core; a spinning worker
 * takes it within a round, and the waker pays nothing (it sees a searcher).
 *
 * The spin adapts to the gaps between bursts of work (spin_adapt): a
 * worker woken soon after it parked spins twice that gap next time, up to
 * the runtime's idle_spin_us; one that slept longer halves its spin, down
 * to WEFT__SPIN_MIN_NS (which outlasts a cross-core wake-up, so a thread
 * that submits again as soon as it hears of the last job's end still
 * finds the worker awake). It stops early when a yield took longer than
 * WEFT__SPIN_CONTENDED_NS: another thread wants this core, which a spinner
 * would only delay, and a parked worker woken later gets the core back at
 * once where a yielding one waits for the other's slice. */
#ifndef WEFT__SPIN_PAUSE_ROUNDS
#define WEFT__SPIN_PAUSE_ROUNDS 6
#endif
#define WEFT__SPIN_MIN_NS 30000
#ifndef WEFT__SPIN_CONTENDED_NS
#define WEFT__SPIN_CONTENDED_NS 200000
#endif
/* Yielding rounds between checks for a waiting weft_runtime_destroy (which
 * a parking worker otherwise does): about every 25 us. */
#define WEFT__SPIN_QUIET_EVERY 32

/* initial-exec: a plain TLS load, not a __tls_get_addr call, in the shared
 * library (glibc keeps static TLS room for libraries like this one). */
static _Thread_local weft__worker_t* tls_worker
    __attribute__((tls_model("initial-exec")));

WEFT__NOINLINE weft__worker_t* weft__worker_current(void) {
  /* An empty asm keeps the compiler from proving anything about the TLS
   * slot across calls (the noinline alone is what matters). */
  __asm__ __volatile__("" ::: "memory");
  return tls_worker;
}

void weft__worker_set_current(weft__worker_t* w) {
  tls_worker = w;
}

static uint32_t next_rand(weft__worker_t* w) {
  /* xorshift64*: victim order only needs to be cheap and well spread. */
  uint64_t x = w->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  w->rng = x;
  return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}


/* Publishes tasks into rt from outside it (a plain thread, or a worker
 * of another runtime: a spawn, or a counter's decrement waking a fiber of
 * rt). Once published they may run, finish rt's last job, and let its
 * destroy go on while we still wake a worker: so we count ourselves in
 * rt->foreign, which runtime_free waits to see at zero. Relaxed
 * increment: it is sequenced before the publication, whose release the
 * destroyer's view of the last completion comes after. Release decrement:
 * pairs with runtime_free's acquire load, so our last touch of rt comes
 * before the free. */
void weft__inject_foreign(weft_runtime_t* rt, weft__task_t* first,
                          weft__task_t* last, size_t n, int prio, int pin) {
  atomic_fetch_add_explicit(&rt->foreign, 1, memory_order_relaxed);
  if (pin >= 0) {
    weft__inject_push(&rt->workers[pin].mailbox, first, last, n, prio);
    weft__idle_notify_worker(rt, (unsigned)pin);
  } else {
    weft__inject_push(&rt->inject, first, last, n, prio);
    weft__idle_notify(rt);
  }
  atomic_fetch_sub_explicit(&rt->foreign, 1, memory_order_release);
}

void weft__worker_ready(weft_runtime_t* rt, weft__worker_t* w,
                        weft__task_t* t) {
  int prio = t->prio;
  int pin = t->pin;

  if (w == NULL && weft__batch_add(rt, t))
    return; /* published with the batch, by weft__batch_flush */
  if (w == NULL || w->rt != rt) {
    weft__inject_foreign(rt, t, t, 1, prio, pin);
    return;
  }
  /* Once published, t may run and be freed at once: use the copies. */
  if (pin >= 0) {
    weft__inject_push(&rt->workers[pin].mailbox, t, t, 1, prio);
    if (w != &rt->workers[pin])
      weft__idle_notify_worker(rt, (unsigned)pin);
    return;
  }
  /* Counted before the push (and uncounted if it fails), as in
   * inject_take: a thief subtracts once it has the task, so counting after
   * would let the count read below what the deques hold, and a worker
   * trusting level_busy would pass over a queued task (helper-17). */
  if (prio != WEFT_PRIORITY_NORMAL)
    atomic_fetch_add_explicit(&rt->dq_prio_len[prio], 1, memory_order_relaxed);
  if (weft__deque_push(&w->dq[prio], t) == 0) {
    /* Our own deque: we run whatever nobody steals, so a wake-up only adds
     * parallelism and may be missed once in a while. Look without the
     * fence first: while every worker is awake or one is searching (the
     * steady state of a stream of spawns), there is nobody to wake. A
     * worker parking this very moment is seen by the next push. */
    if (!weft__idle_may_notify(&rt->idle, rt->nworkers))
      return;
  } else {
    if (prio != WEFT_PRIORITY_NORMAL)
      atomic_fetch_sub_explicit(&rt->dq_prio_len[prio], 1,
                                memory_order_relaxed);
    weft__inject_push(&rt->inject, t, t, 1, prio);
  }
  weft__idle_notify(rt);
}

/* After a steal from v: if v still holds plenty, take up to half of it
 * (at most WEFT__STEAL_BATCH), one CAS each, into our own deque, so a
 * stream of small jobs costs one search, not one per job. Each take is a
 * single-item steal: moving top by k at once would race with v's pop. The
 * stolen tasks keep their priority level. */
#define WEFT__STEAL_BATCH 32
static void steal_more(weft__worker_t* w, weft__worker_t* v, int prio) {
  size_t n = weft__deque_size(&v->dq[prio]) / 2;
  weft__task_t* t;

  if (n > WEFT__STEAL_BATCH)
    n = WEFT__STEAL_BATCH;
  while (n-- > 0) {
    t = weft__deque_steal(&v->dq[prio], NULL);
    if (t == NULL)
      break;
    if (weft__deque_push(&w->dq[prio], t) != 0) {
      weft__worker_ready(w->rt, NULL, t); /* to the injection queue */
      break;
    }
    weft__stat_bump(&w->stats.steals);
  }
}

/* The first steal of a worker whose placement waits for hwloc (the first
 * runtime in a process, for ~10 ms: runtime.c): from now on two workers
 * are busy at once, so each gets a CPU of its own until the placer binds
 * it. Left to the OS, two spinning workers could share one CPU for
 * milliseconds (each counts as cache-hot, so the idle CPU's balancing
 * leaves it): sincos_10k, over within the wait, ran at the serial speed
 * in 4 runs of 25. At the first steal, not at the start: the binding
 * costs ~35 us a worker here (sysfs reads, once per runtime, and the
 * migration), which a runtime that runs one job need not pay. Under the
 * placer's lock: once it is done (place_done), nobody binds here. */
static WEFT__NOINLINE void provisional_bind(weft__worker_t* w) {
  weft_runtime_t* rt = w->rt;

  w->prov_pending = false;
  /* weft_run's caller is worker 0: its thread goes back to the caller,
   * whose mask is not ours to narrow for good. */
  if (rt->run_mode && w->index == 0)
    return;
  weft__spin_lock(&rt->prov_lock);
  if (!rt->place_done && rt->prov_cpus == NULL && !rt->prov_none) {
    /* Once per runtime, by the first thief. */
    rt->prov_cpus = malloc(rt->nworkers * sizeof(*rt->prov_cpus));
    if (rt->prov_cpus != NULL &&
        weft__topology_quick_cpus(rt->place_later, rt->prov_cpus,
                                  rt->nworkers) != 0) {
      free(rt->prov_cpus);
      rt->prov_cpus = NULL;
    }
    rt->prov_none = rt->prov_cpus == NULL;
  }
  if (!rt->place_done && rt->prov_cpus != NULL &&
      sched_getaffinity(0, sizeof(w->prov_prev), &w->prov_prev) == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(rt->prov_cpus[w->index], &one);
    w->prov_bound = sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  weft__spin_unlock(&rt->prov_lock);
}

/* Steals one task of priority `prio` from the victims, nearest first. */
static weft__task_t* steal(weft__worker_t* w, int prio) {
  weft_runtime_t* rt = w->rt;
  unsigned n = rt->nworkers;
  const weft__plan_t* plan;
  const unsigned* near;
  const unsigned* grp;
  unsigned g;
  unsigned lo = 0;

  if (n < 2)
    return NULL;
  plan = weft__runtime_plan(rt);
  near = weft__plan_near(plan, w->index);
  grp = weft__plan_groups(plan, w->index);
  for (g = 0; g < plan->ngroups[w->index]; g++) {
    unsigned hi = grp[g];
    unsigned len = hi - lo;
    unsigned start = next_rand(w) % len;
    unsigned i;
    for (i = 0; i < len; i++) {
      weft__worker_t* v = &rt->workers[near[lo + (start + i) % len]];
      weft__task_t* t;
      int lost = 0;
      if (weft__deque_size(&v->dq[prio]) == 0) {
        /* Nothing queued: the unstarted half of the batch range it runs,
         * if any (ranges are normal priority). */
        if (prio == WEFT_PRIORITY_NORMAL &&
            (t = weft__range_steal(v)) != NULL) {
          weft__stat_bump(&w->stats.steals);
          if (WEFT__UNLIKELY(w->prov_pending))
            provisional_bind(w);
          return t;
        }
        continue;
      }
      t = weft__deque_steal(&v->dq[prio], &lost);
      if (t != NULL) {
        steal_more(w, v, prio);
        weft__stat_bump(&w->stats.steals);
        if (prio != WEFT_PRIORITY_NORMAL)
          atomic_fetch_sub_explicit(&rt->dq_prio_len[prio], 1,
                                    memory_order_relaxed);
        if (WEFT__UNLIKELY(w->prov_pending))
          provisional_bind(w);
        return t;
      }
      weft__stat_bump(&w->stats.failed_steals);
    }
    lo = hi;
  }
  return NULL;
}

/* Takes work from the injection queue: one task to run now and, when the
 * queue is long, a fair share more into our own deque (where others can
 * steal it), so a stream of outside submissions costs one lock round trip
 * per batch rather than per task (Go's globrunqget). */
#define WEFT__INJECT_BATCH 64
static weft__task_t* inject_take(weft__worker_t* w, int prio) {
  weft_runtime_t* rt = w->rt;
  weft__task_t* got[WEFT__INJECT_BATCH];
  size_t len =
      atomic_load_explicit(&rt->inject.len[prio], memory_order_relaxed);
  size_t want = len / rt->nworkers + 1;
  size_t n;
  size_t i;

  if (want > WEFT__INJECT_BATCH)
    want = WEFT__INJECT_BATCH;
  if (want <= 1 || prio != WEFT_PRIORITY_NORMAL)
    return weft__inject_pop(&rt->inject, prio);
  n = weft__inject_pop_many(&rt->inject, prio, got, want);
  if (n == 0)
    return NULL;
  /* got[0] runs now; keep the rest in order: the deque pops LIFO, so push
   * the oldest last. */
  for (i = n - 1; i >= 1; i--) {
    /* Read before the push: once published, a thief may run and free it. */
    int p = got[i]->prio;
    if (p != WEFT_PRIORITY_NORMAL)
      atomic_fetch_add_explicit(&rt->dq_prio_len[p], 1, memory_order_relaxed);
    if (weft__deque_push(&w->dq[p], got[i]) != 0) {
      if (p != WEFT_PRIORITY_NORMAL)
        atomic_fetch_sub_explicit(&rt->dq_prio_len[p], 1, memory_order_relaxed);
      weft__inject_push(&rt->inject, got[i], got[i], 1, p);
    }
  }
  if (n > 1)
    weft__idle_notify(rt);
  return got[0];
}

/* `own`: look at w's own normal-priority deque and stream too. Only w
 * fills those, so once a look found them empty they stay empty until w
 * runs something or applies its held-back counter decrement (which may
 * ready a fiber there): the searching rounds after that skip them, and a
 * just-woken worker goes straight to where its work was published, with
 * fewer cold lines on the way. The other levels are looked at whenever
 * level_busy says some deque holds their work: that count is a relaxed
 * hint, so it is no proof that our own deque of that level is empty. */
static weft__task_t* take_level(weft__worker_t* w, int prio, bool stealing,
                                bool own) {
  weft_runtime_t* rt = w->rt;
  weft__task_t* t = NULL;

  if (own || prio != WEFT_PRIORITY_NORMAL) {
    t = weft__deque_pop(&w->dq[prio]);
    if (t != NULL && prio != WEFT_PRIORITY_NORMAL)
      atomic_fetch_sub_explicit(&rt->dq_prio_len[prio], 1,
                                memory_order_relaxed);
    if (t == NULL && w->sblk != NULL && prio == WEFT_PRIORITY_NORMAL)
      t = weft__stream_take(w);
  }
  if (t == NULL)
    t = weft__inject_pop(&w->mailbox, prio);
  if (t == NULL)
    t = inject_take(w, prio);
  if (t == NULL && stealing)
    t = steal(w, prio);
  return t;
}

static bool level_busy(weft_runtime_t* rt, weft__worker_t* w, int prio) {
  return atomic_load_explicit(&rt->dq_prio_len[prio], memory_order_relaxed) ||
         atomic_load_explicit(&rt->inject.len[prio], memory_order_relaxed) ||
         atomic_load_explicit(&w->mailbox.len[prio], memory_order_relaxed);
}

bool weft__worker_offer(weft__worker_t* k, weft__offer_t* o) {
  weft__offer_t* none = NULL;
  o->task.kind = WEFT__TASK_OFFER;
  o->task.prio = WEFT_PRIORITY_NORMAL;
  o->task.pin = -1;
  o->task.next = NULL;
  /* Release: o and what it points to, written before, come with it; pairs
   * with the acquire exchange in take_offer. Relaxed on failure: we only
   * learn that the slot is taken. */
  return atomic_compare_exchange_strong_explicit(
      &k->offer, &none, o, memory_order_release, memory_order_relaxed);
}

bool weft__worker_reclaim(weft__worker_t* k, weft__offer_t* o) {
  weft__offer_t* want = o;
  /* Relaxed: o is ours again, as we left it; if k took it instead, its
   * run is waited for through o's own counter, not through this slot. The
   * CAS and take_offer's exchange decide who runs o: exactly one wins. */
  return atomic_compare_exchange_strong_explicit(
      &k->offer, &want, NULL, memory_order_relaxed, memory_order_relaxed);
}

/* Work offered to w in particular: at every look, after high-priority
 * work, one load of a line of w's own while there is none. */
static weft__task_t* take_offer(weft__worker_t* w) {
  if (WEFT__LIKELY(atomic_load_explicit(&w->offer, memory_order_relaxed) ==
                   NULL))
    return NULL;
  /* Acquire: pairs with the release CAS in weft__worker_offer. */
  return (weft__task_t*)atomic_exchange_explicit(&w->offer, NULL,
                                                 memory_order_acquire);
}

/* Runs an offer on w's fiber, as run_job runs a job (but it counts no
 * completion: see weft__offer_t). */
static void run_offer(weft__worker_t* w, weft__offer_t* o) {
  weft__fiber_t* f = w->current;
  weft__stat_bump(&w->stats.offers_taken);
  weft__job_begin(f, -1, WEFT_PRIORITY_NORMAL);
  o->run(o);
  weft__job_reset(f);
}

/* One look through every source, in priority order. */
static weft__task_t* find_once(weft__worker_t* w, bool stealing, bool own) {
  weft_runtime_t* rt = w->rt;
  weft__task_t* t;

  if (level_busy(rt, w, WEFT_PRIORITY_HIGH)) {
    t = take_level(w, WEFT_PRIORITY_HIGH, stealing, own);
    if (t != NULL)
      return t;
  }
  t = take_offer(w);
  if (t != NULL)
    return t;
  if (++w->tick % WEFT__INJECT_EVERY == 0) {
    t = weft__inject_pop(&rt->inject, WEFT_PRIORITY_NORMAL);
    if (t != NULL)
      return t;
  }
  t = take_level(w, WEFT_PRIORITY_NORMAL, stealing, own);
  if (t != NULL)
    return t;
  if (level_busy(rt, w, WEFT_PRIORITY_LOW))
    t = take_level(w, WEFT_PRIORITY_LOW, stealing, own);
  return t;
}

/* The spin's floor and bound for w's runtime. */
static uint64_t spin_floor(weft__worker_t* w) {
  uint64_t cap = (uint64_t)w->rt->cfg.idle_spin_us * 1000;
  return cap < WEFT__SPIN_MIN_NS ? cap : WEFT__SPIN_MIN_NS;
}

/* After a park: `gap` is the time from the first yielding round to the
 * wake-up. Work that came back within the bound would have been caught by
 * a spin of that length: cover twice it next time. Longer gaps were worth
 * parking for: spin less. */
static void spin_adapt(weft__worker_t* w, uint64_t gap) {
  uint64_t cap = (uint64_t)w->rt->cfg.idle_spin_us * 1000;
  uint64_t floor = spin_floor(w);

  if (gap < cap) {
    if (2 * gap > w->spin_ns)
      w->spin_ns = 2 * gap < cap ? 2 * gap : cap;
  } else {
    w->spin_ns = w->spin_ns / 2 > floor ? w->spin_ns / 2 : floor;
  }
}

static weft__task_t* find_task(weft__worker_t* w) {
  weft_runtime_t* rt = w->rt;
  weft__task_t* t;
  unsigned round;

  t = find_once(w, false, true);
  if (t != NULL)
    return t;
  /* Nothing to run: whoever waits for our finished jobs hears now (which
   * may ready a waiting fiber onto our own deque: round 0 looks there). */
  weft__worker_dec_flush(w);
  for (bool own = true;; own = false) {
    uint64_t idle_from = 0; /* the first yielding round */
    for (round = 0;; round++) {
      bool searching = weft__idle_start_search(rt, w);
      uint64_t now;
      t = find_once(w, searching, own && round == 0);
      if (t != NULL) {
        /* The last searcher to find work wakes another, which searches in
         * turn: work fans out one wake-up at a time. Only if there is more
         * to find: a wake-up costs the waker a syscall (an IPI on a VM),
         * which a lone job's start latency should not pay. */
        if (weft__idle_end_search(rt, w) &&
            weft__idle_work_visible(rt, w, true))
          weft__idle_notify(rt);
        return t;
      }
      if (atomic_load_explicit(&rt->stop, memory_order_acquire)) {
        weft__idle_end_search(rt, w);
        return NULL;
      }
      if (round < WEFT__SPIN_PAUSE_ROUNDS) {
        /* Watching the offer slot, a line of our own: an offer is meant
         * for us, and its offerer is counting the time. */
        for (unsigned i = 0; i < (1u << round); i++) {
          weft__cpu_relax();
          if (atomic_load_explicit(&w->offer, memory_order_relaxed) != NULL)
            break;
        }
        continue;
      }
      now = weft__clock_ns();
      if (idle_from == 0)
        idle_from = now;
      if (now - idle_from >= w->spin_ns)
        break;
      if ((round - WEFT__SPIN_PAUSE_ROUNDS) % WEFT__SPIN_QUIET_EVERY ==
          WEFT__SPIN_QUIET_EVERY - 1)
        weft__idle_check_quiet(rt);
      /* Give the core away while waiting: a thread we share it with (the
       * libuv loop thread, another process) may be the one about to make
       * work. */
      sched_yield();
      if (weft__clock_ns() - now >= WEFT__SPIN_CONTENDED_NS)
        break; /* another thread wants the core */
    }
    weft__idle_park(rt, w);
    w = weft__worker_current();
    spin_adapt(w, weft__clock_ns() - idle_from);
  }
}

static void run_job(weft__worker_t* w, weft__job_t* j) {
  weft__fiber_t* f = w->current;
  weft_job_cb fn = j->fn;
  void* arg = j->arg;
  weft__counter_t* c = j->counter;
  bool embedded = j->owner == WEFT__JOB_EMBEDDED;
  bool malloced = j->owner == WEFT__JOB_MALLOC;

  weft__job_begin(f, j->task.pin, j->task.prio);
  /* A slab record goes back to our list now, for the job's own spawns to
   * reuse while it is warm. A plain thread's (malloc) record is freed
   * after the job: glibc's free of another thread's chunk took ~0.8 us of
   * a cold wake-up's start (p50 here). */
  if (!malloced)
    weft__job_free(w->rt, w, j); /* not an embedded one: the caller's */
  fn(arg);
  if (malloced)
    free(j);
  /* The job may have waited and resumed on another worker. */
  w = weft__worker_current();
  if (WEFT__UNLIKELY(embedded))
    w->rt->embedded_done(w->rt->bridge, j, w); /* the record is theirs now */
  weft__job_end(w, f, c);
}

/* The counter a task's jobs decrement, if it is a job or a range. */
static weft__counter_t* task_counter(weft__task_t* t) {
  if (t->kind == WEFT__TASK_JOB)
    return ((weft__job_t*)t)->counter;
  if (t->kind == WEFT__TASK_RANGE)
    return weft__range_counter((weft__range_t*)t);
  return NULL;
}

weft__worker_t* weft__worker_help(weft__worker_t* w, weft__counter_t* c,
                                  int64_t target) {
  weft__fiber_t* f = w->current;

  /* The caller waits until c is at most target <= 0: every job counted on
   * c must finish first, so running one of them here, on the waiting
   * fiber's stack, delays nothing and saves two switches (TBB's waiting
   * thread does the same). Only our own newest deque entry is taken, and
   * only while at least half the stack is free. */
  /* A pinned job must stay on its worker: a helped job that waits could
   * carry the whole stack elsewhere. */
  if (f->task.pin >= 0)
    return w;
  /* Our own cached decrements of c count as done (they are applied
   * before the caller looks again). */
  while (weft__counter_above(c, target + (w->dec_c == c ? w->dec_n : 0))) {
    weft__task_t* t;
    weft__job_t* j;
    weft_job_t sj;
    void* fls[WEFT_FLS_SLOTS];
    uint8_t fls_used;
    int16_t pin;
    uint8_t prio;
    uint64_t gen;

    if ((size_t)((char*)__builtin_frame_address(0) - f->stack.lo) <
        f->stack.size / 2)
      break;
    /* Queued high-priority work goes first: suspend instead. */
    if (level_busy(w->rt, w, WEFT_PRIORITY_HIGH))
      break;
    /* A job of our spawn stream on c first (the oldest unstarted one:
     * the owner takes from the bottom, as thieves do, range.c). */
    if (w->sblk != NULL && weft__stream_claim(w, c, &sj)) {
      t = NULL;
    } else {
      t = weft__deque_pop(&w->dq[WEFT_PRIORITY_NORMAL]);
      if (t == NULL)
        break;
      if (task_counter(t) != c) {
        if (weft__deque_push(&w->dq[WEFT_PRIORITY_NORMAL], t) != 0)
          weft__worker_ready(w->rt, NULL, t); /* cannot fail */
        break;
      }
    }
    j = (weft__job_t*)t;
    /* The inner job gets empty fiber-local slots; ours come back after. */
    fls_used = f->fls_used;
    if (fls_used) {
      memcpy(fls, f->fls, sizeof(fls));
      memset(f->fls, 0, sizeof(f->fls));
      f->fls_used = 0;
    }
    pin = f->task.pin;
    prio = f->task.prio;
    gen = f->gen;
    if (t == NULL) {
      weft__job_begin(f, -1, WEFT_PRIORITY_NORMAL);
      sj.fn(sj.arg);
      weft__job_end(weft__worker_current(), f, c);
    } else if (t->kind == WEFT__TASK_JOB) {
      run_job(w, j);
    } else {
      /* A range of c's batch: it needs the worker's slot, so the range
       * this fiber is in (if any) is given away first, as it would be if
       * we suspended; to the injection queue, so that it does not cover
       * c's other tasks on our deque. */
      if (f->range != NULL)
        weft__range_give_away(w, f, true);
      weft__range_run(w, (weft__range_t*)t);
    }
    f->task.pin = pin;
    f->task.prio = prio;
    f->gen = gen;
    if (fls_used) {
      memcpy(f->fls, fls, sizeof(fls));
      f->fls_used = 1;
    }
    w = weft__worker_current();
  }
  return w;
}

void weft__worker_loop(void) {
  for (;;) {
    weft__worker_t* w = weft__worker_current();
    weft__task_t* t = find_task(w);
    if (w->dec_n != 0 && (t == NULL || task_counter(t) != w->dec_c))
      weft__worker_dec_flush(w);
    if (t == NULL) {
      /* Stopping: leave for good, back to the thread's own stack. */
      weft__ctx_exit(&w->current->ctx, &w->native, NULL);
    } else if (t->kind == WEFT__TASK_JOB) {
      run_job(w, (weft__job_t*)t);
    } else if (t->kind == WEFT__TASK_RANGE) {
      weft__range_run(w, (weft__range_t*)t);
    } else if (t->kind == WEFT__TASK_OFFER) {
      run_offer(w, (weft__offer_t*)t);
    } else {
      weft__fiber_resume(w, (weft__fiber_t*)t);
    }
  }
}

void weft__worker_run_here(weft__worker_t* w) {
  weft__fiber_t* f;
  weft__post_t post;

  weft__worker_set_current(w);
  weft__stack_thread_init(&w->altstack);
  /* Bound now if the start's plan is final, else by the placer. */
  if (w->rt->plan.bind && weft__topology_pin_self(&w->rt->plan, w->index) == 0)
    atomic_fetch_add_explicit(&w->rt->workers_pinned, 1, memory_order_relaxed);
  w->rng = 0x9E3779B97F4A7C15ull * (w->index + 1);
  w->spin_ns = spin_floor(w);
  weft__ctx_init_thread(&w->native);
  f = w->current; /* made by weft__runtime_start */
  post.op = WEFT__POST_START;
  post.fiber = NULL;
  weft__ctx_switch(&w->native, &f->ctx, &post);
  /* Back on the thread's stack: the runtime stopped. */
  w->current = NULL;
  weft__stack_thread_exit(&w->altstack);
  weft__worker_set_current(NULL);
}

void* weft__worker_main(void* arg) {
  weft__worker_run_here(arg);
  return NULL;
}
