/* submit.c: weft_uv_submit, a work-stealing replacement for uv_queue_work
 * whose work may itself spawn jobs and await I/O.
 *
 * A submission is one small record from a pool the loop thread owns (it
 * both takes and returns records, so the pool needs no atomics). The record
 * embeds the job, which the loop's open batch publishes to the workers.
 * When the job returns, it pushes the record onto its worker's own outbox, a
 * Treiber stack no other worker writes, so completions from different
 * workers never contend for a cache line; only a push that finds its outbox
 * empty may wake the loop, and only if the loop may be blocked in poll. The
 * loop drains every outbox and calls after_cb.
 *
 * Records live in slabs freed only with the bridge: a job that finishes
 * after the bridge stopped may still push its record, and nothing has to
 * know when it does.
 */
#include <stdlib.h>

#include "bridge.h"

enum {
  SUBMIT_FREE = 0,    /* in the loop's free list */
  SUBMIT_OUTSTANDING, /* job queued or running, after_cb not called yet */
  SUBMIT_CANCELLED    /* after_cb reported UV_ECANCELED; the job may run */
};

/* One cache line: the loop fills a record while a worker may be pushing
 * the one next to it, and a million of them in flight are 64 MB to fault
 * in, not 88. job.fn and job.arg are the user's; job.aux is the state
 * (loop thread only); job.task.next links the record in an outbox, in the
 * loop's ready list or in the free list. */
struct weft__uv_submit_s {
  _Alignas(WEFT__CACHE_LINE) weft__job_t job;
  weft_uv_after_cb after_cb;
};
_Static_assert(sizeof(weft__uv_submit_t) == WEFT__CACHE_LINE,
               "a submit record is one cache line");

struct weft__uv_slab_s {
  weft__uv_slab_t* next;
  size_t n;
  weft__uv_submit_t rec[]; /* from the next cache line */
};

/* Slabs double from SLAB_MIN records up to SLAB_MAX (1.4 MiB), so a burst
 * of a million submissions makes a few dozen of them. (Transparent huge
 * pages were tried: on this VM a fresh huge page is now and then cleared
 * so slowly that a whole burst ran 3x slower.) */
#define SLAB_MIN 64
#define SLAB_MAX 16384

static weft__uv_submit_t* rec_next(weft__uv_submit_t* s) {
  return (weft__uv_submit_t*)s->job.task.next;
}

static void rec_set_next(weft__uv_submit_t* s, weft__uv_submit_t* next) {
  /* The task comes first in the job, and the job first in the record. */
  s->job.task.next = (weft__task_t*)(void*)next;
}

/* ---- the pool (loop thread) ------------------------------------------------
 */

static weft__uv_submit_t* rec_get(weft_uv_t* b) {
  weft__uv_submit_t* s = b->submit_free;
  weft__uv_slab_t* slab;
  size_t n;
  size_t i;

  if (s != NULL) {
    b->submit_free = rec_next(s);
    return s;
  }
  n = b->submit_slabs != NULL ? 2 * b->submit_slabs->n : SLAB_MIN;
  if (n > SLAB_MAX)
    n = SLAB_MAX;
  if (posix_memalign((void**)&slab, WEFT__CACHE_LINE,
                     sizeof(*slab) + n * sizeof(slab->rec[0])) != 0)
    return NULL;
  slab->n = n;
  slab->next = b->submit_slabs;
  b->submit_slabs = slab;
  for (i = n - 1; i >= 1; i--) {
    slab->rec[i].job.aux = SUBMIT_FREE;
    rec_set_next(&slab->rec[i], b->submit_free);
    b->submit_free = &slab->rec[i];
  }
  return &slab->rec[0];
}

static void rec_put(weft_uv_t* b, weft__uv_submit_t* s) {
  s->job.aux = SUBMIT_FREE;
  rec_set_next(s, b->submit_free);
  b->submit_free = s;
}

/* ---- the worker side --------------------------------------------------------
 */

/* rt->embedded_done: the worker that ran a record's job hands it back. */
void weft__uv_submit_done(void* bridge, weft__job_t* j, weft__worker_t* w) {
  weft_uv_t* b = bridge;
  weft__uv_submit_t* s = (weft__uv_submit_t*)(void*)j;
  /* One outbox per worker (outboxes_init); the test only guards. */
  weft__uv_outbox_t* box = &b->outboxes[w->index < b->noutboxes ? w->index : 0];
  weft__task_t* head;

  /* Any outbox would be correct (pushes are CASes); the worker's own is
   * uncontended. Release pairs with the loop's acquire exchange in
   * weft__uv_submit_drain: it sees the record (and whatever fn wrote) once
   * it sees the push. */
  head = atomic_load_explicit(&box->head, memory_order_relaxed);
  do {
    s->job.task.next = head;
  } while (!atomic_compare_exchange_weak_explicit(
      &box->head, &head, &s->job.task, memory_order_release,
      memory_order_relaxed));
  /* The record is the loop's now: do not touch it again. */
  if (head != NULL)
    return; /* not drained since the push that found it empty: that push
             * woke the loop (or the loop is closing), and its drain takes
             * our record too (the exchange takes the whole stack) */
  /* Announce ourselves before looking at the closed queue: bridge_close
   * marks the queue closed, then waits until no poster is left before it
   * closes the async handle. seq_cst pairs with its exchange and its load
   * of `posters` (Dekker: one of us sees the other). */
  atomic_fetch_add_explicit(&b->posters, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&b->head, memory_order_seq_cst) != WEFT__UV_CLOSED)
    weft__uv_wake(b);
  atomic_fetch_sub_explicit(&b->posters, 1, memory_order_seq_cst);
}

/* ---- the loop side ----------------------------------------------------------
 */

/* Calls after_cb for each ready record. The ready list lives in the bridge,
 * not on this stack: an after_cb that stops the bridge makes
 * weft__uv_submit_close finish the rest with status 0 first. */
static void ready_run(weft_uv_t* b) {
  weft__uv_submit_t* s;
  weft_uv_after_cb cb;
  void* arg;

  while ((s = b->submit_ready) != NULL) {
    b->submit_ready = rec_next(s);
    if (s->job.aux != SUBMIT_OUTSTANDING)
      continue; /* cancelled by a stop: reported, and never reused */
    cb = s->after_cb;
    arg = s->job.arg;
    b->submit_outstanding--;
    rec_put(b, s); /* a submit inside cb may reuse it at once */
    cb(arg, 0);
  }
}

/* Takes each outbox whole and runs it, newest first: one pass over records
 * that other cores wrote (completion order is unspecified anyway, as with
 * uv_queue_work's several threads). */
void weft__uv_submit_drain(weft_uv_t* b) {
  unsigned i;

  ready_run(b); /* left by an after_cb that stopped the bridge */
  for (i = 0; i < b->noutboxes; i++) {
    if (atomic_load_explicit(&b->outboxes[i].head, memory_order_relaxed) ==
        NULL)
      continue;
    /* Acquire pairs with the release CAS in weft__uv_submit_done. */
    b->submit_ready = (weft__uv_submit_t*)(void*)atomic_exchange_explicit(
        &b->outboxes[i].head, NULL, memory_order_acquire);
    ready_run(b);
  }
}

bool weft__uv_submit_posted(weft_uv_t* b) {
  unsigned i;
  for (i = 0; i < b->noutboxes; i++)
    if (atomic_load_explicit(&b->outboxes[i].head, memory_order_seq_cst) !=
        NULL)
      return true;
  return false;
}

void weft__uv_submit_close(weft_uv_t* b) {
  weft__uv_slab_t* slab;
  size_t i;

  weft__uv_submit_drain(b);
  /* Every job still queued or running: report it cancelled now. Its
   * record stays where it is (the job will push it to an outbox nobody
   * drains); the slabs go with the bridge. */
  for (slab = b->submit_slabs; slab != NULL && b->submit_outstanding > 0;
       slab = slab->next) {
    for (i = 0; i < slab->n; i++) {
      weft__uv_submit_t* s = &slab->rec[i];
      if (s->job.aux != SUBMIT_OUTSTANDING)
        continue;
      s->job.aux = SUBMIT_CANCELLED;
      b->submit_outstanding--;
      s->after_cb(s->job.arg, UV_ECANCELED);
    }
  }
}

void weft__uv_submit_free(weft_uv_t* b) {
  while (b->submit_slabs != NULL) {
    weft__uv_slab_t* next = b->submit_slabs->next;
    free(b->submit_slabs);
    b->submit_slabs = next;
  }
  free(b->outboxes);
  b->outboxes = NULL;
}

static int outboxes_init(weft_uv_t* b) {
  unsigned n;
  unsigned i;
  int err = weft__runtime_start(b->rt);

  if (err != 0)
    return err == -ENOMEM ? UV_ENOMEM : UV_ECANCELED;
  n = b->rt->nworkers > 0 ? b->rt->nworkers : 1;
  if (posix_memalign((void**)&b->outboxes, WEFT__CACHE_LINE,
                     n * sizeof(b->outboxes[0])) != 0)
    return UV_ENOMEM;
  for (i = 0; i < n; i++)
    atomic_init(&b->outboxes[i].head, NULL);
  b->noutboxes = n;
  return 0;
}

int weft_uv_submit(weft_uv_t* b, weft_job_cb fn, void* arg,
                   weft_uv_after_cb after_cb) {
  weft__uv_submit_t* s;
  uv_thread_t self;
  int err;

  if (b == NULL || fn == NULL || after_cb == NULL)
    return UV_EINVAL;
  self = uv_thread_self();
  if (!uv_thread_equal(&self, &b->loop_thread_id))
    return UV_EPERM; /* the pool and the batch are the loop thread's */
  if (b->closing)
    return UV_ECANCELED;
  if (b->noutboxes == 0 && (err = outboxes_init(b)) != 0)
    return err;
  s = rec_get(b);
  if (s == NULL)
    return UV_ENOMEM;
  s->after_cb = after_cb;
  s->job.aux = SUBMIT_OUTSTANDING;
  /* Submissions made in one loop iteration go out in one batch. */
  if (b->batch.rt == NULL)
    weft__batch_open(&b->batch, b->rt);
  err = weft__spawn_embedded(b->rt, &s->job, fn, arg);
  if (err != 0) {
    rec_put(b, s);
    return err == -ENOMEM ? UV_ENOMEM : UV_ECANCELED;
  }
  b->submit_outstanding++;
  return 0;
}
