/* inject.c: the multi-producer, multi-consumer queues that take work from
 * outside the workers: the runtime's injection queue (plain threads, yields)
 * and each worker's mailbox (pinned jobs and pinned ready fibers). One FIFO
 * per priority behind a spinlock; a batch of n tasks is linked first and
 * published with one lock round trip. The lengths let the hot path skip an
 * empty queue without touching the lock.
 */
#include "internal.h"

void weft__inject_init(weft__inject_t* q) {
  int p;
  atomic_init(&q->lock.locked, 0);
  for (p = 0; p < WEFT__NPRIO; p++) {
    q->q[p].head = NULL;
    q->q[p].tail = NULL;
    atomic_init(&q->len[p], 0);
  }
}

void weft__inject_push(weft__inject_t* q, weft__task_t* first,
                       weft__task_t* last, size_t n, int prio) {
  weft__tlist_t* l = &q->q[prio];

  last->next = NULL;
  weft__spin_lock(&q->lock);
  if (l->tail != NULL)
    l->tail->next = first;
  else
    l->head = first;
  l->tail = last;
  /* Relaxed: a hint for readers. The task itself is handed over by the
   * lock (release at unlock, acquire in the popper's lock); a reader that
   * sees the length but not yet the task just takes the lock and looks. */
  atomic_store_explicit(
      &q->len[prio],
      atomic_load_explicit(&q->len[prio], memory_order_relaxed) + n,
      memory_order_relaxed);
  weft__spin_unlock(&q->lock);
}

weft__task_t* weft__inject_pop(weft__inject_t* q, int max_prio) {
  weft__task_t* t = NULL;
  int p;

  if (weft__inject_empty(q, max_prio))
    return NULL;
  weft__spin_lock(&q->lock);
  for (p = 0; p <= max_prio; p++) {
    weft__tlist_t* l = &q->q[p];
    if (l->head == NULL)
      continue;
    t = l->head;
    l->head = t->next;
    if (l->head == NULL)
      l->tail = NULL;
    atomic_store_explicit(
        &q->len[p], atomic_load_explicit(&q->len[p], memory_order_relaxed) - 1,
        memory_order_relaxed);
    break;
  }
  weft__spin_unlock(&q->lock);
  return t;
}

size_t weft__inject_pop_many(weft__inject_t* q, int max_prio,
                             weft__task_t** out, size_t max) {
  size_t n = 0;
  int p;

  if (weft__inject_empty(q, max_prio))
    return 0;
  weft__spin_lock(&q->lock);
  for (p = 0; p <= max_prio && n == 0; p++) {
    weft__tlist_t* l = &q->q[p];
    while (n < max && l->head != NULL) {
      out[n++] = l->head;
      l->head = l->head->next;
    }
    if (l->head == NULL)
      l->tail = NULL;
    if (n != 0)
      atomic_store_explicit(
          &q->len[p],
          atomic_load_explicit(&q->len[p], memory_order_relaxed) - n,
          memory_order_relaxed);
  }
  weft__spin_unlock(&q->lock);
  return n;
}

/* ---- ready batches ----------------------------------------------------- */

static _Thread_local weft__batch_t* tls_batch
    __attribute__((tls_model("initial-exec")));

void weft__batch_open(weft__batch_t* b, weft_runtime_t* rt) {
  b->rt = rt;
  b->first = NULL;
  b->last = NULL;
  b->n = 0;
  b->njobs = 0;
  tls_batch = b;
}

static bool batch_add(weft_runtime_t* rt, weft__task_t* t, size_t job) {
  weft__batch_t* b = tls_batch;
  if (b == NULL || b->rt != rt || t->pin >= 0 ||
      t->prio != WEFT_PRIORITY_NORMAL)
    return false;
  t->next = NULL;
  if (b->last != NULL)
    b->last->next = t;
  else
    b->first = t;
  b->last = t;
  /* The batch's first job is counted as submitted at once, so the runtime
   * cannot look quiescent (and stop, in weft_run) while jobs wait in an
   * open batch; the flush counts the rest. Release as in the flush. */
  if (job != 0 && b->njobs++ == 0)
    atomic_fetch_add_explicit(&rt->outside_submitted, 1, memory_order_release);
  /* A long batch (a burst of submissions in one callback) goes out in
   * parts, so the workers start on it while the loop is still adding. */
  if (++b->n == WEFT__BATCH_MAX)
    weft__batch_flush(b);
  return true;
}

bool weft__batch_add(weft_runtime_t* rt, weft__task_t* t) {
  return batch_add(rt, t, 0);
}

bool weft__batch_add_job(weft_runtime_t* rt, weft__task_t* t) {
  return batch_add(rt, t, 1);
}

bool weft__batch_is_open(weft_runtime_t* rt) {
  return tls_batch != NULL && tls_batch->rt == rt;
}

void weft__batch_flush(weft__batch_t* b) {
  if (b->n == 0)
    return;
  /* Count the batch's other new jobs before anyone can run (and complete)
   * them. Release pairs with the acquire loads of weft__runtime_quiescent,
   * as in spawn.c's count_submitted: two RMWs per batch, not one per job. */
  if (b->njobs > 1)
    atomic_fetch_add_explicit(&b->rt->outside_submitted, b->njobs - 1,
                              memory_order_release);
  weft__inject_push(&b->rt->inject, b->first, b->last, b->n,
                    WEFT_PRIORITY_NORMAL);
  b->first = NULL;
  b->last = NULL;
  b->n = 0;
  b->njobs = 0;
  weft__idle_notify(b->rt);
}

void weft__batch_close(weft__batch_t* b) {
  weft__batch_flush(b);
  tls_batch = NULL;
}
