/* job.c: job records. Each worker allocates from its own slab with no
 * atomics; a record freed on another worker goes back to its owner through a
 * lock-free list the owner empties in one exchange (mimalloc's local/thread
 * free lists). Plain threads use malloc.
 */
#include <stdlib.h>

#include "internal.h"

#define WEFT__JOB_CHUNK 256

typedef struct chunk_s {
  struct chunk_s* next;
  weft__job_t jobs[WEFT__JOB_CHUNK];
} chunk_t;

static weft__job_t* jobpool_refill(weft__worker_t* w) {
  weft__jobpool_t* p = &w->jobs;
  chunk_t* c;
  int i;

  /* Acquire pairs with the release CAS in weft__job_free: the records'
   * last uses on other workers happen before we hand them out again. The
   * whole list is taken at once, so pushers can never see ABA. */
  p->local = atomic_exchange_explicit(&p->remote, NULL, memory_order_acquire);
  if (p->local != NULL) {
    weft__job_t* j = (weft__job_t*)p->local;
    p->local = j->task.next;
    return j;
  }
  c = malloc(sizeof(*c));
  if (c == NULL)
    return NULL;
  c->next = p->chunks;
  p->chunks = c;
  for (i = 1; i < WEFT__JOB_CHUNK - 1; i++)
    c->jobs[i].task.next = &c->jobs[i + 1].task;
  c->jobs[WEFT__JOB_CHUNK - 1].task.next = NULL;
  p->local = &c->jobs[1].task;
  for (i = 0; i < WEFT__JOB_CHUNK; i++)
    c->jobs[i].owner = (int32_t)w->index;
  return &c->jobs[0];
}

weft__job_t* weft__job_alloc(weft__worker_t* w) {
  weft__job_t* j;

  if (w == NULL) {
    j = malloc(sizeof(*j));
    if (j != NULL)
      j->owner = -1;
    return j;
  }
  if (WEFT__LIKELY(w->jobs.local != NULL)) {
    j = (weft__job_t*)w->jobs.local;
    w->jobs.local = j->task.next;
    return j;
  }
  return jobpool_refill(w);
}

void weft__job_free(weft_runtime_t* rt, weft__worker_t* w, weft__job_t* j) {
  weft__jobpool_t* p;
  weft__task_t* head;

  if (j->owner < 0) {
    free(j);
    return;
  }
  p = &rt->workers[j->owner].jobs;
  if (w != NULL && (int32_t)w->index == j->owner) {
    j->task.next = p->local;
    p->local = &j->task;
    return;
  }
  head = atomic_load_explicit(&p->remote, memory_order_relaxed);
  do {
    j->task.next = head;
    /* Release pairs with the acquire exchange in jobpool_refill. */
  } while (!atomic_compare_exchange_weak_explicit(
      &p->remote, &head, &j->task, memory_order_release,
      memory_order_relaxed));
}

void weft__jobpool_destroy(weft__jobpool_t* p) {
  chunk_t* c = p->chunks;
  while (c != NULL) {
    chunk_t* next = c->next;
    free(c);
    c = next;
  }
  p->chunks = NULL;
  p->local = NULL;
  atomic_store_explicit(&p->remote, NULL, memory_order_relaxed);
}
