/* range.c: weft_spawn_batch's jobs, run in ranges.
 *
 * A batch is copied into blocks of up to WEFT__BLOCK_JOBS jobs, and each
 * block is queued as one range task instead of one task per job. A worker
 * runs a range's jobs one after another on its current fiber, each with
 * the full job contract (its own generation, fiber-local slots, pin and
 * priority reset, its counter decrement, its completion count), and splits
 * off the upper half of what is left whenever its own deque is empty (lazy
 * binary splitting, as in parallel.c), so idle workers find work about as
 * soon as they look for it. A job that blocks would hold up every job
 * behind it in the range, which may be the very job it waits for: before
 * a fiber in a range suspends, weft__fiber_suspend hands the jobs that
 * have not started back to the deque as a range of their own.
 *
 * Blocks are reference counted: every queued range and every running one
 * holds its block. The first range of a block is embedded in it; ranges
 * split off later are allocated, and freed by whoever runs them.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct weft__jobblock_s {
  /* Ranges queued or running on this block. A holder adds one for each
   * range it makes (relaxed: it holds one itself, so the count cannot
   * reach zero meanwhile; the range's publication orders the rest). The
   * last to drop its hold frees the block: acq_rel, so that every other
   * holder's use happens before the free. */
  atomic_uint refs;
  weft__counter_t* counter;
  weft__range_t root; /* the block's first range */
  weft_job_t jobs[];
};

static void block_drop(weft__jobblock_t* b) {
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
    free(b);
}

/* A queued range for jobs [begin, end) of b, or NULL without memory. */
static weft__range_t* range_new(weft__jobblock_t* b, uint32_t begin,
                                uint32_t end) {
  weft__range_t* r = malloc(sizeof(*r));
  if (r == NULL)
    return NULL;
  r->task.kind = WEFT__TASK_RANGE;
  r->task.prio = WEFT_PRIORITY_NORMAL;
  r->task.pin = -1;
  r->blk = b;
  r->begin = begin;
  r->end = end;
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return r;
}

int weft__range_make(const weft_job_t* jobs, size_t n, weft__counter_t* c,
                     weft__task_t** first, weft__task_t** last,
                     size_t* ntasks) {
  size_t nblk = (n + WEFT__BLOCK_JOBS - 1) / WEFT__BLOCK_JOBS;
  weft__task_t* head = NULL;
  weft__task_t** tail = &head;
  weft__jobblock_t* b = NULL;
  size_t i;

  for (i = 0; i < nblk; i++) {
    size_t k = i + 1 < nblk ? WEFT__BLOCK_JOBS : n - i * WEFT__BLOCK_JOBS;
    b = malloc(sizeof(*b) + k * sizeof(b->jobs[0]));
    if (b == NULL) {
      while (head != NULL) {
        weft__range_t* r = (weft__range_t*)(void*)head;
        head = head->next;
        free(r->blk);
      }
      return -ENOMEM;
    }
    atomic_init(&b->refs, 1);
    b->counter = c;
    memcpy(b->jobs, jobs + i * WEFT__BLOCK_JOBS, k * sizeof(b->jobs[0]));
    b->root.task.kind = WEFT__TASK_RANGE;
    b->root.task.prio = WEFT_PRIORITY_NORMAL;
    b->root.task.pin = -1;
    b->root.task.next = NULL;
    b->root.blk = b;
    b->root.begin = 0;
    b->root.end = (uint32_t)k;
    *tail = &b->root.task;
    tail = &b->root.task.next;
  }
  *first = head;
  *last = &b->root.task;
  *ntasks = nblk;
  return 0;
}

weft__counter_t* weft__range_counter(const weft__range_t* r) {
  return r->blk->counter;
}

/* Splits the upper half off fr onto w's deque; false if it cannot. */
static bool split(weft__worker_t* w, weft__frange_t* fr) {
  uint32_t mid = fr->next + (fr->end - fr->next) / 2;
  weft__range_t* r = range_new(fr->blk, mid, fr->end);

  if (r == NULL)
    return false;
  fr->end = mid;
  weft__worker_ready(w->rt, w, &r->task);
  return true;
}

void weft__range_run(weft__worker_t* w, weft__range_t* r) {
  weft__fiber_t* f = w->current;
  weft__frange_t fr;

  fr.blk = r->blk;
  fr.next = r->begin;
  fr.end = r->end;
  if (r != &fr.blk->root)
    free(r);
  f->range = &fr;
  while (fr.next < fr.end) {
    weft_job_t* j;
    /* Racy size, read by the owner: an empty deque means no half of ours
     * is left for a thief, so offer one. */
    if (fr.end - fr.next >= 2 &&
        weft__deque_size(&w->dq[WEFT_PRIORITY_NORMAL]) == 0)
      split(w, &fr);
    j = &fr.blk->jobs[fr.next++];
    weft__job_begin(f, -1, WEFT_PRIORITY_NORMAL);
    j->fn(j->arg);
    /* The job may have waited (giving the rest of the range away) and
     * resumed on another worker. */
    w = weft__worker_current();
    weft__job_end(w, f, fr.blk->counter);
  }
  f->range = NULL;
  block_drop(fr.blk);
}

void weft__range_give_away(weft__worker_t* w, weft__fiber_t* f) {
  weft__frange_t* fr = f->range;
  weft__range_t* r;

  if (fr->next < fr->end) {
    r = range_new(fr->blk, fr->next, fr->end);
    if (r == NULL)
      return; /* no memory: they wait for us, and we try at the next block */
    fr->end = fr->next;
    weft__worker_ready(w->rt, w, &r->task);
  }
  f->range = NULL;
}
