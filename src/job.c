/* job.c: job records. Each worker allocates from and frees to its own list
 * with no atomics, whoever allocated the record: a job spawned on one worker
 * and stolen by another is freed by the thief. Lists are balanced through a
 * runtime-wide stack of batches: a worker holding too many free records
 * gives a batch back, and a worker that runs out takes a batch before it
 * allocates a new chunk. Chunks belong to the runtime and are freed at
 * destroy. Plain threads use malloc.
 */
#include <stdlib.h>

#include "internal.h"

#define WEFT__JOB_BATCH 256

typedef struct chunk_s {
  struct chunk_s* next;
  weft__job_t jobs[WEFT__JOB_BATCH];
} chunk_t;

/* A batch in the shared stack: its first record's `arg` links the next
 * batch; records within it are linked through task.next. */
static weft__job_t* refill(weft__worker_t* w) {
  weft_runtime_t* rt = w->rt;
  weft__jobpool_t* p = &w->jobs;
  weft__job_t* batch = NULL;
  chunk_t* c;
  int i;

  if (atomic_load_explicit(&rt->job_batches, memory_order_relaxed) != NULL) {
    weft__spin_lock(&rt->jobs_lock);
    batch = atomic_load_explicit(&rt->job_batches, memory_order_relaxed);
    if (batch != NULL)
      atomic_store_explicit(&rt->job_batches, batch->arg, memory_order_relaxed);
    weft__spin_unlock(&rt->jobs_lock);
  }
  if (batch == NULL) {
    c = malloc(sizeof(*c));
    if (c == NULL)
      return NULL;
    for (i = 0; i < WEFT__JOB_BATCH - 1; i++)
      c->jobs[i].task.next = &c->jobs[i + 1].task;
    c->jobs[WEFT__JOB_BATCH - 1].task.next = NULL;
    for (i = 0; i < WEFT__JOB_BATCH; i++)
      c->jobs[i].owner = 0; /* from a slab, not malloc */
    weft__spin_lock(&rt->jobs_lock);
    c->next = rt->job_chunks;
    rt->job_chunks = c;
    weft__spin_unlock(&rt->jobs_lock);
    batch = &c->jobs[0];
  }
  p->local = batch->task.next;
  p->nlocal = WEFT__JOB_BATCH - 1;
  return batch;
}

weft__job_t* weft__job_alloc(weft__worker_t* w) {
  weft__job_t* j;

  if (w == NULL) {
    j = malloc(sizeof(*j));
    if (j != NULL)
      j->owner = WEFT__JOB_MALLOC;
    return j;
  }
  if (WEFT__LIKELY(w->jobs.local != NULL)) {
    j = (weft__job_t*)w->jobs.local;
    w->jobs.local = j->task.next;
    w->jobs.nlocal--;
    /* Records come back from the workers that ran them: fetch the next
     * one's line while this one is filled in. */
    __builtin_prefetch(w->jobs.local, 1);
    return j;
  }
  return refill(w);
}

void weft__job_free(weft_runtime_t* rt, weft__worker_t* w, weft__job_t* j) {
  weft__jobpool_t* p;
  weft__job_t* batch;
  weft__task_t* t;
  unsigned i;

  if (j->owner < 0) {
    if (j->owner == WEFT__JOB_MALLOC)
      free(j);
    return; /* WEFT__JOB_EMBEDDED: the caller's memory */
  }
  if (w == NULL || w->rt != rt) {
    /* Not on one of rt's workers (a failed batch from outside cannot hold
     * slab records, but be safe): hand it over as a batch of one. */
    j->task.next = NULL;
    batch = j;
    goto give;
  }
  p = &w->jobs;
  j->task.next = p->local;
  p->local = &j->task;
  if (++p->nlocal < 2 * WEFT__JOB_BATCH)
    return;
  /* Too many: give the newest batch back to the runtime. */
  batch = (weft__job_t*)p->local;
  t = p->local;
  for (i = 1; i < WEFT__JOB_BATCH; i++)
    t = t->next;
  p->local = t->next;
  t->next = NULL;
  p->nlocal -= WEFT__JOB_BATCH;
give:
  weft__spin_lock(&rt->jobs_lock);
  batch->arg = atomic_load_explicit(&rt->job_batches, memory_order_relaxed);
  atomic_store_explicit(&rt->job_batches, batch, memory_order_relaxed);
  weft__spin_unlock(&rt->jobs_lock);
}

void weft__job_destroy_all(weft_runtime_t* rt) {
  chunk_t* c = rt->job_chunks;
  while (c != NULL) {
    chunk_t* next = c->next;
    free(c);
    c = next;
  }
  rt->job_chunks = NULL;
  atomic_store_explicit(&rt->job_batches, NULL, memory_order_relaxed);
}
