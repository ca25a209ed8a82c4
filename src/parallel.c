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
#include <time.h>

#include "internal.h"

/* Split only while the rest of a range is estimated to take at least this
 * long: below it a steal, the cache misses of moving the data and the
 * join cost more than the second worker saves. Measured on the tree
 * benchmark (bench_tree: a parallel-for per level of 1 to 729 nodes). */
#ifndef WEFT__PF_SPLIT_NS
#define WEFT__PF_SPLIT_NS 4000.0
#endif
/* With a chosen grain, the shortest piece run in one call: a look at the
 * queue between pieces is then at most this late. */
#ifndef WEFT__PF_PIECE_NS
#define WEFT__PF_PIECE_NS 500.0
#endif
/* The shortest run of elements whose time is taken as theirs: a clock
 * read costs 20-30 ns here, as much as a cheap element. */
#ifndef WEFT__PF_MEASURE_NS
#define WEFT__PF_MEASURE_NS 1000
#endif
/* Range records on the caller's stack; more come from the heap. */
#define WEFT__PF_LOCAL 16

typedef struct pf_s pf_t;

typedef struct {
  pf_t* pf;
  size_t begin;
  size_t end;
  double ns_per; /* the splitter's estimate of one element, ns */
} pf_range_t;

struct pf_s {
  weft_range_cb fn;
  void* arg;
  size_t grain; /* the largest piece, or with `chosen` the smallest */
  bool chosen;  /* the caller passed grain 0 */
  weft_runtime_t* rt;
  weft_counter_t done;
  atomic_size_t next; /* records claimed */
  size_t cap;
  _Atomic(pf_range_t*) heap; /* records WEFT__PF_LOCAL.., made on demand */
  pf_range_t local[WEFT__PF_LOCAL];
};

static uint64_t pf_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Record k, or NULL (k past the bound, or out of memory: the caller then
 * runs the rest itself). */
static pf_range_t* pf_record(pf_t* pf, size_t k) {
  pf_range_t* heap;
  pf_range_t* fresh;
  if (k < WEFT__PF_LOCAL)
    return &pf->local[k];
  if (k >= pf->cap)
    return NULL;
  /* Acquire pairs with the release of the CAS below: records of a heap
   * another splitter made are ours to write only after its malloc. */
  heap = atomic_load_explicit(&pf->heap, memory_order_acquire);
  if (heap == NULL) {
    fresh = malloc((pf->cap - WEFT__PF_LOCAL) * sizeof(*fresh));
    if (fresh == NULL)
      return NULL;
    if (atomic_compare_exchange_strong_explicit(&pf->heap, &heap, fresh,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
      heap = fresh;
    else
      free(fresh); /* another splitter's heap won; heap holds it */
  }
  return &heap[k - WEFT__PF_LOCAL];
}

static void pf_job(void* arg);

/* The body's element cost as last measured on this worker (0: none). A
 * hint only: a wrong one costs what no hint would, as the first
 * measurement corrects it. So a loop whose body was seen to be expensive
 * splits before its first piece, and one seen to be cheap runs whole. */
static weft__pf_hint_t* pf_hint(weft__worker_t* w, weft_range_cb fn) {
  uintptr_t h = (uintptr_t)fn;
  return &w->pf_hints[(h >> 4 ^ h >> 9) % WEFT__PF_HINTS];
}

/* How many elements to run in one call: the grain, and with a chosen
 * grain at least WEFT__PF_PIECE_NS worth of elements. */
static size_t pf_piece(const pf_t* pf, double ns_per) {
  if (pf->chosen && ns_per * (double)pf->grain < WEFT__PF_PIECE_NS)
    return (size_t)(WEFT__PF_PIECE_NS / ns_per) + 1;
  return pf->grain;
}

/* Remembers an element of pf's body as taking ns_per on this worker. */
static void pf_learn(const pf_t* pf, double ns_per) {
  weft__pf_hint_t* h = pf_hint(weft__worker_current(), pf->fn);
  h->fn = pf->fn;
  h->ns_per = ns_per;
}

/* Runs [begin, end) of pf, splitting off upper halves for thieves.
 *
 * Lazy binary splitting (Tzannes, Caragea, Barua and Vishkin, PPoPP 2010):
 * a range splits off its upper half only while its own queue is empty,
 * that is, while no earlier half is still waiting to be stolen; otherwise
 * it runs the next piece itself and looks again. So a range splits about
 * as often as idle workers come for work.
 *
 * And only while the rest is worth it: ns_per is the time an element takes
 * and a rest under WEFT__PF_SPLIT_NS stays here. It starts as the
 * splitter's figure, or this worker's last for the body; then it is ours,
 * measured after 1, 2, 4, ... elements (so the clock costs nothing next to
 * the work) once they took WEFT__PF_MEASURE_NS, and counted afresh after
 * each split (a spawn, perhaps a wake-up, is not the elements' time). The
 * run's last figure is the body's next hint. With a chosen grain (the
 * caller passed 0) a call runs about WEFT__PF_PIECE_NS of elements: a cheap
 * loop costs a few calls, not one per element, and one that turns
 * expensive splits a piece later. */
static void pf_run(pf_t* pf, size_t begin, size_t end, double ns_per) {
  uint64_t t0;
  size_t ran = 0;   /* elements run since t0 */
  size_t check = 1; /* measure when ran reaches it */
  size_t piece;

  if (ns_per <= 0.0) {
    weft__pf_hint_t* h = pf_hint(weft__worker_current(), pf->fn);
    if (h->fn == pf->fn)
      ns_per = h->ns_per;
  }
  piece = ns_per > 0.0 ? pf_piece(pf, ns_per) : pf->grain;
  t0 = pf_now();
  while (end - begin > pf->grain) {
    /* Unknown cost (0): run a piece and measure it first. Our queue is
     * the deque and the spawn stream both: after 16 splits our halves go
     * to the stream (range.c). */
    if ((double)(end - begin) * ns_per >= WEFT__PF_SPLIT_NS &&
        weft__worker_own_empty(weft__worker_current())) {
      size_t mid = begin + (end - begin) / 2;
      /* Relaxed: the index is only a claim; the record is handed to the
       * job by the spawn's publication. */
      pf_range_t* half = pf_record(
          pf, atomic_fetch_add_explicit(&pf->next, 1, memory_order_relaxed));
      if (half == NULL)
        break; /* cannot split further: do the whole rest here */
      half->pf = pf;
      half->begin = mid;
      half->end = end;
      half->ns_per = ns_per;
      if (weft_spawn(pf->rt, pf_job, half, &pf->done) != 0)
        break;
      /* The spawn's look for a sleeper to wake is unfenced and can miss
       * one going to sleep; the half is worth a steal, and we are about
       * to be busy for a while: look again with the fence. */
      weft__idle_notify(pf->rt);
      end = mid;
      t0 = pf_now();
      ran = 0;
      check = 1;
      continue;
    }
    if (piece > end - begin)
      piece = end - begin;
    pf->fn(begin, begin + piece, pf->arg);
    begin += piece;
    ran += piece;
    if (ran >= check) {
      uint64_t took = pf_now() - t0;
      check = 2 * ran;
      if (took >= WEFT__PF_MEASURE_NS) {
        ns_per = (double)took / (double)ran;
        piece = pf_piece(pf, ns_per);
      } else if (pf->chosen && piece < ran) {
        piece = ran; /* too short to tell from the clock's own cost */
      }
    }
  }
  if (begin < end) {
    pf->fn(begin, end, pf->arg);
    ran += end - begin;
  }
  if (ran > 0)
    pf_learn(pf, (double)(pf_now() - t0) / (double)ran);
}

static void pf_job(void* arg) {
  pf_range_t* r = arg;
  pf_run(r->pf, r->begin, r->end, r->ns_per);
}

int weft_parallel_for(weft_runtime_t* rt, size_t begin, size_t end,
                      size_t grain, weft_range_cb fn, void* arg) {
  weft__worker_t* w = weft__worker_current();
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
  /* Each split makes a record for an upper half of more than grain / 2
   * elements, disjoint from every other record's: fewer than 2n/grain
   * records, and one more for a root spawned from a plain thread. */
  pf.cap = 2 * (n / grain) + 3;
  atomic_init(&pf.next, 0);
  atomic_init(&pf.heap, NULL);
  weft_counter_init(&pf.done, 0);
  if (w != NULL && w->current != NULL && w->rt == rt) {
    /* From a job: the root is ours to run, with no spawn or wake-up, so a
     * loop too small to split costs a call. */
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
   * the heap pointer, before this load. */
  free(atomic_load_explicit(&pf.heap, memory_order_relaxed));
  return err;
}
