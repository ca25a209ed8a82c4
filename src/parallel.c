/* parallel.c: weft_parallel_for by recursive halving.
 *
 * A range job halves its range, spawning the upper half and going on with
 * the lower, when its own queue is empty (lazy binary splitting, see
 * pf_run) and the rest is worth a steal (by the time its elements took so
 * far), down to the grain. Thieves take the oldest entries of a deque,
 * which are the largest halves, so an idle worker gets a big piece in one
 * steal. Called from a job, the root range runs on the caller's fiber.
 */
#include <stdlib.h>

#include "internal.h"

/* Split only while the rest of a range is estimated to take at least this
 * long: below it a steal, the cache misses of moving the data and the
 * join cost more than the second worker saves. Measured on the tree
 * benchmark (bench_tree: a parallel-for per level of 1 to 729 nodes). */
#ifndef WEFT__PF_SPLIT_NS
#define WEFT__PF_SPLIT_NS 4000.0
#endif
/* The time between looks at the clock, once the elements' cost is known:
 * a clock read costs 20-30 ns here (1 us windows cost the trees ~5%). */
#ifndef WEFT__PF_WINDOW_NS
#define WEFT__PF_WINDOW_NS 2000.0
#endif
/* The shortest window whose time is taken as its elements' cost: below
 * it the clock's own cost would count for too much. */
#ifndef WEFT__PF_TRUST_NS
#define WEFT__PF_TRUST_NS 250
#endif
/* A window holds at most 1/WEFT__PF_REST_DIV of the rest, or
 * WEFT__PF_WHOLE elements: what runs before elements that turned
 * expensive (or a wrong hint) are seen. 1/4 or 16 elements gave the trees
 * a few percent more, and the review's cases up to 1.7x less. */
#ifndef WEFT__PF_REST_DIV
#define WEFT__PF_REST_DIV 8
#endif
#ifndef WEFT__PF_WHOLE
#define WEFT__PF_WHOLE 8
#endif
/* Range records in the pf_t (on the caller's stack); more come in chunks
 * from the heap. */
#define WEFT__PF_LOCAL 8

typedef struct pf_s pf_t;

typedef struct {
  pf_t* pf;
  size_t begin;
  size_t end;
  double ns_per; /* the splitter's measure of one element, ns (0: none) */
} pf_range_t;

/* Records [base, base + n) beyond the local ones; chunks double in size,
 * so a loop with k splits makes O(log k) of them. */
typedef struct pf_chunk_s {
  _Atomic(struct pf_chunk_s*) next;
  size_t base;
  size_t n;
  pf_range_t rec[];
} pf_chunk_t;

struct pf_s {
  weft_range_cb fn;
  void* arg;
  size_t grain; /* the largest call, or with `chosen` the smallest */
  bool chosen;  /* the caller passed grain 0 */
  weft_runtime_t* rt;
  weft_counter_t done;
  atomic_size_t next; /* records claimed */
  _Atomic(pf_chunk_t*) chunks;
  pf_range_t local[WEFT__PF_LOCAL];
};

/* Record k, or NULL (out of memory: the caller stops splitting). A chunk
 * is linked by CAS on its predecessor's `next` (or `chunks`): acq_rel, and
 * acquire on the loads, so a chunk's base and size come with its pointer;
 * a splitter that loses the race frees its own and follows the winner. */
static pf_range_t* pf_record(pf_t* pf, size_t k) {
  _Atomic(pf_chunk_t*)* link = &pf->chunks;
  size_t base = WEFT__PF_LOCAL;
  size_t n = WEFT__PF_LOCAL;

  if (k < WEFT__PF_LOCAL)
    return &pf->local[k];
  for (;;) {
    pf_chunk_t* c = atomic_load_explicit(link, memory_order_acquire);
    if (c == NULL) {
      pf_chunk_t* fresh = malloc(sizeof(*fresh) + n * sizeof(fresh->rec[0]));
      if (fresh == NULL)
        return NULL;
      atomic_init(&fresh->next, NULL);
      fresh->base = base;
      fresh->n = n;
      if (atomic_compare_exchange_strong_explicit(
              link, &c, fresh, memory_order_acq_rel, memory_order_acquire))
        c = fresh;
      else
        free(fresh); /* c is the winner's */
    }
    if (k < c->base + c->n)
      return &c->rec[k - c->base];
    base = c->base + c->n;
    n = c->n * 2;
    link = &c->next;
  }
}

static void pf_job(void* arg);

/* The body's element cost as last measured on this worker: the loop's
 * estimate until its first window (one element) is measured. So a body
 * seen to be expensive splits before its first call, and one seen to be
 * cheap stays whole; a wrong hint (say, the same function on other work)
 * costs one element's time before the clock corrects it. */
static weft__pf_hint_t* pf_hint(weft__worker_t* w, weft_range_cb fn) {
  uintptr_t h = (uintptr_t)fn;
  return &w->pf_hints[(h >> 4 ^ h >> 9) % WEFT__PF_HINTS];
}

/* Remembers an element of pf's body as taking ns_per on this worker. */
static void pf_learn(const pf_t* pf, double ns_per) {
  weft__pf_hint_t* h = pf_hint(weft__worker_current(), pf->fn);
  h->fn = pf->fn;
  h->ns_per = ns_per;
}

/* How many elements the next window should hold: WEFT__PF_WINDOW_NS worth
 * by the estimate, else twice the last window; and never more than an
 * eighth of the rest (or WEFT__PF_WHOLE elements), so that elements
 * turning expensive run at most that before a look at the clock. */
static size_t pf_window(double ns_per, size_t last, size_t rest) {
  size_t want;
  size_t most = rest / WEFT__PF_REST_DIV > WEFT__PF_WHOLE
                    ? rest / WEFT__PF_REST_DIV
                    : WEFT__PF_WHOLE;
  if (ns_per <= 0.0)
    want = 2 * last;
  else if (ns_per * (double)rest <= WEFT__PF_WINDOW_NS)
    want = rest;
  else
    want = (size_t)(WEFT__PF_WINDOW_NS / ns_per) + 1;
  if (want > most)
    want = most;
  return want > 0 ? want : 1;
}

/* Runs [begin, end) of pf, splitting off upper halves for thieves.
 *
 * Lazy binary splitting (Tzannes, Caragea, Barua and Vishkin, PPoPP 2010):
 * a range splits off its upper half only while its own queue is empty,
 * that is, while no earlier half is still waiting to be stolen; otherwise
 * it runs the next elements itself and looks again. So a range splits
 * about as often as idle workers come for work.
 *
 * And only while the rest is worth it: a rest estimated under
 * WEFT__PF_SPLIT_NS stays here. The estimate is the time an element took
 * in the last window (a run of calls between two clock reads) that lasted
 * WEFT__PF_TRUST_NS; before there is one, the splitter's, else this
 * worker's last for the body. A window starts at one element and grows
 * (pf_window); a split closes it (the spawn, perhaps a wake-up, is not the
 * elements' time). With a chosen grain (the caller passed 0) a window is
 * one call; otherwise calls are `grain` long. The run's own figure is the
 * body's next hint. */
static void pf_run(pf_t* pf, size_t begin, size_t end, double ns_per) {
  double total_ns = 0.0; /* the elements' time, for the hint */
  size_t total = 0;
  bool can_split = true;
  uint64_t t0;
  size_t win = 0; /* elements run in the window since t0 */
  size_t want = 1;
  double tk = weft__tsc_ns_get(); /* the clock of this run's spans */

  if (ns_per > 0.0) {
    want = pf_window(ns_per, 0, end - begin); /* the splitter's figure */
  } else {
    /* A hint decides the first split, but the first window is one
     * element: the same function may be doing dearer work this time, and
     * a window sized by a cheap hint could hold all of a small loop. */
    weft__pf_hint_t* h = pf_hint(weft__worker_current(), pf->fn);
    if (h->fn == pf->fn)
      ns_per = h->ns_per;
    want = 1;
  }
  t0 = weft__span_now(tk);
  while (end - begin > pf->grain) {
    size_t n;
    /* Our queue is the deque, and a spawn stream the body may have
     * opened (our halves never go to one: weft__spawn_piece). */
    if (can_split &&
        (ns_per <= 0.0 ||
         (double)(end - begin) * ns_per >= WEFT__PF_SPLIT_NS) &&
        weft__worker_own_empty(weft__worker_current())) {
      size_t mid = begin + (end - begin) / 2;
      uint64_t now = weft__span_now(tk);
      /* Relaxed: the index is only a claim; the record is handed to the
       * job by the spawn's publication. */
      pf_range_t* half = pf_record(
          pf, atomic_fetch_add_explicit(&pf->next, 1, memory_order_relaxed));
      total_ns += weft__span_ns(t0, now, tk);
      total += win;
      if (half != NULL) {
        half->pf = pf;
        half->begin = mid;
        half->end = end;
        half->ns_per = ns_per;
      }
      if (half == NULL ||
          weft__spawn_piece(pf->rt, pf_job, half, &pf->done) != 0) {
        can_split = false; /* the rest runs here, still in grains */
      } else {
        /* The spawn's look for a sleeper to wake is unfenced and can miss
         * one going to sleep; the half is worth a steal, and we are about
         * to be busy for a while: look again with the fence. */
        weft__idle_notify(pf->rt);
        end = mid;
      }
      t0 = weft__span_now(tk);
      win = 0;
      want = pf_window(ns_per, want / 2, end - begin);
      continue;
    }
    n = pf->chosen ? want - win : pf->grain;
    if (pf->chosen && n < pf->grain)
      n = pf->grain; /* the chosen grain is the smallest call */
    if (n > end - begin)
      n = end - begin;
    pf->fn(begin, begin + n, pf->arg);
    begin += n;
    win += n;
    if (win >= want) {
      uint64_t now = weft__span_now(tk);
      double took = weft__span_ns(t0, now, tk);
      total_ns += took;
      total += win;
      if (took >= WEFT__PF_TRUST_NS)
        ns_per = took / (double)win;
      else if (ns_per * (double)win > WEFT__PF_TRUST_NS)
        /* Too short to trust, but a bound: a higher estimate (a hint, or
         * the splitter's figure, from dearer elements) would keep every
         * window this short, and never be corrected. */
        ns_per = WEFT__PF_TRUST_NS / (double)win;
      want = pf_window(ns_per, win, end - begin);
      t0 = now;
      win = 0;
    }
  }
  if (begin < end) {
    pf->fn(begin, end, pf->arg);
    win += end - begin;
  }
  total_ns += weft__span_ns(t0, weft__span_now(tk), tk);
  total += win;
  pf_learn(pf, total_ns / (double)total);
}

static void pf_job(void* arg) {
  pf_range_t* r = arg;
  pf_run(r->pf, r->begin, r->end, r->ns_per);
}

/* ---- the team split ------------------------------------------------------
 *
 * A loop called from a job, whose body this worker has measured (a hint),
 * worth at least WEFT__PF_TEAM_NS: cut into one contiguous slice per
 * worker, as OpenMP's static schedule does, and slice k offered to worker
 * k directly (its offer slot, which an idle worker reads at every look for
 * work) instead of waiting for a thief to find a half. The same worker
 * gets the same part of every such loop over the same range: in a
 * hierarchy walked level by level, the part whose inputs it wrote the
 * level before (bench_tree). Each slice runs as pf_run, so an uneven
 * slice is still split for thieves. A slice whose worker has not taken it
 * by the time ours is done, we take back and run; then we wait for the
 * taken ones spinning a little (they are about as long as ours) rather
 * than suspending, which would let the fiber move to the worker that
 * finishes last, away from its data. */
#ifndef WEFT__PF_TEAM_NS
#define WEFT__PF_TEAM_NS 1500.0
#endif
/* The most workers a loop is offered to: each offer and take-back costs a
 * cache line from that worker. */
#define WEFT__PF_TEAM_MAX 8
/* How long past our own slice's time the join spins before it suspends. */
#ifndef WEFT__PF_JOIN_NS
#define WEFT__PF_JOIN_NS 4000
#endif
/* The most of our own slice's time the join spins for: that time is wall
 * time, and a slice that blocked or suspended (I/O, a sleep, a wait) took
 * long without being work the others are about to finish. */
#ifndef WEFT__PF_JOIN_MAX_NS
#define WEFT__PF_JOIN_MAX_NS 50000.0
#endif

/* The shortest slice worth waking a parked worker for. */
#ifndef WEFT__PF_WAKE_NS
#define WEFT__PF_WAKE_NS 50000.0
#endif

typedef struct {
  weft__offer_t offer; /* first: the worker's slot holds &offer */
  pf_t* pf;
  size_t begin;
  size_t end;
  bool out; /* in k's slot, or taken from there by k */
} pf_slice_t;

static weft__counter_t* pf_done(pf_t* pf) {
  return (weft__counter_t*)(void*)&pf->done;
}

/* On the worker that took the slice. */
static void pf_slice_run(weft__offer_t* o) {
  pf_slice_t* sl = (pf_slice_t*)(void*)o;
  pf_t* pf = sl->pf;
  pf_run(pf, sl->begin, sl->end, 0.0); /* see pf_team */
  /* Our last touch of sl and pf: at zero the owner may return. */
  weft__counter_sub(pf_done(pf), 1);
}

/* Waits for the slices others took: spins while they are likely about to
 * end (up to WEFT__PF_JOIN_NS past `own_ns`, our slice's time) and while
 * nobody has work to steal; then, or if our own queue holds pieces of the
 * loop, the counter's wait (which runs those, or suspends). */
static void pf_join(pf_t* pf, double own_ns, double tk) {
  weft__counter_t* c = pf_done(pf);
  weft__worker_t* w = weft__worker_current();
  uint64_t t0;
  unsigned i;

  weft__worker_dec_flush(w);
  if (!weft__counter_above(c, 0) || !weft__worker_own_empty(w))
    return;
  if (own_ns > WEFT__PF_JOIN_MAX_NS)
    own_ns = WEFT__PF_JOIN_MAX_NS;
  t0 = weft__span_now(tk);
  for (i = 1; weft__counter_above(c, 0); i++) {
    weft__cpu_relax();
    if (i % 64 == 0 && (weft__span_ns(t0, weft__span_now(tk), tk) >
                            own_ns + WEFT__PF_JOIN_NS ||
                        weft__idle_work_visible(pf->rt, w, true)))
      break;
  }
}

/* Slice k of p of n elements from begin: n / p each, the first n % p one
 * more (no n * k, which overflows for n > SIZE_MAX / p). */
static size_t pf_cut(size_t begin, size_t n, unsigned p, unsigned k) {
  size_t r = n % p;
  return begin + n / p * k + (k < r ? k : r);
}

/* The team split of [begin, end) on worker w, if the loop qualifies;
 * false: it does not, nothing ran. The caller waits for pf->done. */
static bool pf_team(pf_t* pf, weft__worker_t* w, size_t begin, size_t end) {
  weft_runtime_t* rt = pf->rt;
  unsigned p = rt->nworkers;
  pf_slice_t sl[WEFT__PF_TEAM_MAX];
  const weft__pf_hint_t* h = pf_hint(w, pf->fn);
  size_t n = end - begin;
  unsigned me = w->index;
  unsigned k;
  int64_t mine = 0;
  double tk = weft__tsc_ns_get();
  double own_ns;
  size_t own;
  uint64_t t0;

  /* A range no longer than a given grain is one call, as in pf_run. */
  if (p < 2 || p > WEFT__PF_TEAM_MAX || n < p ||
      (!pf->chosen && n <= pf->grain) || h->fn != pf->fn ||
      h->ns_per * (double)n < WEFT__PF_TEAM_NS)
    return false;
  /* Every other slice counted up front, with no RMW: nobody sees the
   * counter before the first offer. The ones we run are taken off at the
   * end, in one decrement. */
  weft_counter_init(&pf->done, (int64_t)p - 1);
  for (k = 0; k < p; k++) {
    if (k == me)
      continue;
    sl[k].pf = pf;
    sl[k].begin = pf_cut(begin, n, p, k);
    sl[k].end = pf_cut(begin, n, p, k + 1);
    sl[k].offer.run = pf_slice_run;
    sl[k].out = weft__worker_offer(&rt->workers[k], &sl[k].offer);
    /* Single writer: we are w until pf_run below. */
    if (sl[k].out)
      weft__stat_bump(&w->stats.offers_made);
  }
  /* A parked worker never looks at its slot, and nobody else takes from
   * it. Our own slice, if it splits, wakes a sleeper at its first split
   * (pf_run's fenced notify), and a woken worker takes its offer before
   * anything but high-priority work, then chains the wake-up while work
   * is visible. Two cases wake nobody that way:
   * - a slice that cannot split (no longer than the grain: a loop of as
   *   many elements as workers, say): we wake the workers we offered to,
   *   if a slice outlasts a wake-up (~40 us here before the worker runs;
   *   a shorter one we take back sooner) and any of them is parked;
   * - our own queue holds work, so pf_run does not split (as the lazy
   *   split never did then): one fenced notify, whose worker takes its
   *   offer and, the queued work being visible, wakes the next.
   * Waking them always, before our own slice, cost the caller a futex
   * call (~10 us here) for nothing in the common case. A parking worker
   * re-checks after its seq_cst decrement of `unparked`, and counts its
   * offer slot (weft__idle_work_visible): it sees our offer, or we see
   * it parked. */
  own = pf_cut(begin, n, p, me + 1) - pf_cut(begin, n, p, me);
  if (own <= pf->grain &&
      h->ns_per * (double)n / (double)p >= WEFT__PF_WAKE_NS) {
    /* A seq_cst RMW that changes nothing: it and a parking worker's
     * decrement of `unparked` are ordered, so either we read the worker
     * parked, or its re-check sees our offer (TSan takes no fences). */
    if (atomic_fetch_add_explicit(&rt->idle.unparked, 0, memory_order_seq_cst) <
        p)
      for (k = 0; k < p; k++)
        if (k != me && sl[k].out)
          weft__idle_notify_worker(rt, k);
  } else if (!weft__worker_own_empty(w)) {
    weft__idle_notify(rt);
  }
  /* Every slice starts as a loop of its own does: the hint decides its
   * first split, but its first window is one element, in case the body
   * is dearer this time (the same fn on other work): a window sized by a
   * stale hint could hold a whole slice, and never split for the parked
   * workers. A slice we take back runs with the figure our own slice
   * left in the hint. */
  t0 = weft__span_now(tk);
  pf_run(pf, pf_cut(begin, n, p, me), pf_cut(begin, n, p, me + 1), 0.0);
  own_ns = weft__span_ns(t0, weft__span_now(tk), tk);
  for (k = 0; k < p; k++) {
    if (k == me)
      continue;
    if (sl[k].out && !weft__worker_reclaim(&rt->workers[k], &sl[k].offer))
      continue; /* k runs it */
    pf_run(pf, sl[k].begin, sl[k].end, 0.0);
    mine++;
  }
  if (mine > 0)
    weft__counter_sub(pf_done(pf), mine);
  pf_join(pf, own_ns, tk);
  /* The slices must outlive their runs: wait here, in their frame. */
  weft_counter_wait(&pf->done, 0);
  return true;
}

int weft_parallel_for(weft_runtime_t* rt, size_t begin, size_t end,
                      size_t grain, weft_range_cb fn, void* arg) {
  weft__worker_t* w = weft__worker_current();
  pf_chunk_t* c;
  pf_t pf;
  size_t n;
  int err;

  if (fn == NULL || end < begin)
    return -EINVAL;
  if (rt == NULL) {
    if (w == NULL)
      return -EINVAL;
    rt = w->rt;
  }
  if (begin == end)
    return 0;
  err = weft__runtime_start(rt);
  if (err != 0)
    return err;
  n = end - begin;
  pf.chosen = grain == 0;
  if (grain == 0) {
    /* Enough pieces (256 per worker) for imbalanced bodies to even out,
     * few enough that splitting costs nothing next to the work. */
    grain = n / ((size_t)rt->nworkers * 256);
    if (grain == 0)
      grain = 1;
  }
  pf.fn = fn;
  pf.arg = arg;
  pf.grain = grain;
  pf.rt = rt;
  atomic_init(&pf.next, 0);
  atomic_init(&pf.chunks, NULL);
  weft_counter_init(&pf.done, 0);
  if (w != NULL && w->current != NULL && w->rt == rt) {
    /* From a job: the root is ours to run, with no spawn or wake-up, so a
     * loop too small to split costs a few calls. */
    if (!pf_team(&pf, w, begin, end))
      pf_run(&pf, begin, end, 0.0);
  } else {
    pf_range_t* root = pf_record(&pf, 0);
    atomic_store_explicit(&pf.next, 1, memory_order_relaxed);
    root->pf = &pf;
    root->begin = begin;
    root->end = end;
    root->ns_per = 0.0;
    err = weft_spawn(rt, pf_job, root, &pf.done);
  }
  if (err == 0)
    err = weft_counter_wait(&pf.done, 0);
  /* Relaxed: the wait's acquire ordered every job, and so every CAS of
   * the chunk links, before these loads. */
  c = atomic_load_explicit(&pf.chunks, memory_order_relaxed);
  while (c != NULL) {
    pf_chunk_t* next = atomic_load_explicit(&c->next, memory_order_relaxed);
    free(c);
    c = next;
  }
  return err;
}
