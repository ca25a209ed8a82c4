/* parallel.c: weft_parallel_for by recursive halving.
 *
 * A range job halves its range, spawning the upper half and going on with
 * the lower, when its deque is empty (lazy binary splitting, see pf_job),
 * down to the grain. Thieves take the oldest entries of a deque, which are
 * the largest halves, so an idle worker gets a big piece in one steal.
 * Range records come from one array sized for the worst case, claimed with
 * an atomic index.
 */
#include <stdlib.h>

#include "internal.h"

typedef struct pf_s pf_t;

typedef struct {
  pf_t* pf;
  size_t begin;
  size_t end;
} pf_range_t;

struct pf_s {
  weft_range_cb fn;
  void* arg;
  size_t grain;
  weft_runtime_t* rt;
  weft_counter_t done;
  pf_range_t* ranges;
  atomic_size_t next;
  size_t cap;
};

/* Lazy binary splitting (Tzannes, Caragea, Barua and Vishkin, PPoPP 2010):
 * a range job splits off its upper half only while its own queue is empty,
 * that is, while no earlier half is still waiting to be stolen; otherwise
 * it runs the next `grain` elements itself and looks again. So a range
 * splits about as often as idle workers come for work, and a small or
 * cheap loop runs in a few calls instead of one job per grain. */
static void pf_job(void* arg) {
  pf_range_t* r = arg;
  pf_t* pf = r->pf;
  size_t begin = r->begin;
  size_t end = r->end;
  size_t grain = pf->grain;

  while (end - begin > grain) {
    weft__worker_t* w = weft__worker_current();
    /* Our deque and spawn stream both: after 16 splits our halves go to
     * the stream (range.c), and a look at the deque alone would split at
     * every element. */
    if (weft__worker_own_empty(w)) {
      size_t mid = begin + (end - begin) / 2;
      /* Relaxed: the slot index is only a claim; the record is handed to
       * the job by the spawn's publication. */
      size_t k = atomic_fetch_add_explicit(&pf->next, 1, memory_order_relaxed);
      pf_range_t* half = &pf->ranges[k];
      half->pf = pf;
      half->begin = mid;
      half->end = end;
      if (weft_spawn(pf->rt, pf_job, half, &pf->done) != 0)
        break; /* cannot split further: do the whole rest here */
      end = mid;
    } else {
      pf->fn(begin, begin + grain, pf->arg);
      begin += grain;
    }
  }
  pf->fn(begin, end, pf->arg);
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
  /* Halving to pieces of at most `grain` makes fewer than 2n/grain + 1
   * ranges; the root is one more. */
  pf.cap = 2 * (n / grain) + 3;
  pf.ranges = malloc(pf.cap * sizeof(*pf.ranges));
  if (pf.ranges == NULL)
    return -ENOMEM;
  atomic_init(&pf.next, 1);
  weft_counter_init(&pf.done, 0);
  pf.ranges[0].pf = &pf;
  pf.ranges[0].begin = begin;
  pf.ranges[0].end = end;
  err = weft_spawn(rt, pf_job, &pf.ranges[0], &pf.done);
  if (err == 0)
    weft_counter_wait(&pf.done, 0);
  free(pf.ranges);
  return err;
}
