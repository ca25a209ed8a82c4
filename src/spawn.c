/* spawn.c: submitting jobs, one or a batch, from any thread.
 *
 * From one of the runtime's jobs, new jobs go onto the worker's own deque
 * (other workers steal them); from anywhere else onto the injection queue,
 * or a pinned worker's mailbox. Every submission is counted (per worker, or
 * in one shared count for outside threads) before it is published, for
 * weft_runtime_destroy's quiescence check.
 */
#include <stdlib.h>

#include "internal.h"

#define WEFT__BATCH_CHUNK 128

static weft__counter_t* cast(weft_counter_t* c) {
  return (weft__counter_t*)(void*)c;
}

/* Resolves rt (NULL: the caller's runtime), starts it, and returns the
 * worker the caller runs on if it belongs to rt. */
static int prepare(weft_runtime_t** rtp, weft__worker_t** wp) {
  weft__worker_t* w = weft__worker_current();
  weft_runtime_t* rt = *rtp;
  int err;

  if (rt == NULL) {
    if (w == NULL)
      return -EINVAL;
    rt = w->rt;
  }
  /* On one of rt's workers, rt is running. */
  err = (w != NULL && w->rt == rt) ? 0 : weft__runtime_start(rt);
  if (err != 0)
    return err;
  if (atomic_load_explicit(&rt->stop, memory_order_acquire))
    return -ESHUTDOWN;
  *rtp = rt;
  *wp = (w != NULL && w->rt == rt) ? w : NULL;
  return 0;
}

static void count_submitted(weft_runtime_t* rt, weft__worker_t* w, size_t n) {
  /* Release: pairs with the acquire loads of weft__runtime_quiescent. A
   * worker's count has one writer, so a load and a store suffice. */
  if (w != NULL)
    atomic_store_explicit(
        &w->submitted,
        atomic_load_explicit(&w->submitted, memory_order_relaxed) + n,
        memory_order_release);
  else
    atomic_fetch_add_explicit(&rt->outside_submitted, n, memory_order_release);
}

/* One RMW on the counter; counted in the spawning worker's statistics. */
static void counter_inc(weft__worker_t* w, weft__counter_t* c, int64_t n) {
  weft__counter_inc(c, n);
  if (w != NULL)
    weft__stat_bump(&w->stats.counter_rmws);
}

/* One job; `stream`: it may go into a spawn stream (range.c). Inlined
 * into each caller: a call more cost spawn_empty 10-30% (20 ns a job). */
static inline __attribute__((always_inline)) int spawn_one(
    weft_runtime_t* rt, weft_job_cb fn, void* arg, weft_counter_t* counter,
    int prio, int pin, bool stream) {
  weft__worker_t* w;
  weft__job_t* j;
  int err;

  err = prepare(&rt, &w);
  if (err != 0)
    return err;
  if (pin >= (int)rt->nworkers)
    return -EINVAL;
  /* From outside into a pool that may be asleep: the wake-up costs far
   * more than the allocation and publication, so start it first; but not
   * for a job that waits in this thread's open batch (the loop thread's)
   * until the flush, which wakes the pool itself. */
  if (w == NULL && pin < 0 && !weft__batch_is_open(rt))
    weft__idle_wake_early(rt);
  if (stream && w != NULL && pin < 0 && prio == WEFT_PRIORITY_NORMAL) {
    weft__counter_t* c = counter != NULL ? cast(counter) : NULL;
    weft_job_t* sj = weft__stream_slot(w, c);
    if (sj != NULL) {
      /* A stream's job (range.c): counted before it is published, as
       * below. */
      sj->fn = fn;
      sj->arg = arg;
      if (c != NULL)
        counter_inc(w, c, 1);
      count_submitted(rt, w, 1);
      weft__stream_publish(w);
      /* As for a push on our own deque (weft__worker_ready). */
      if (weft__idle_may_notify(&rt->idle, rt->nworkers))
        weft__idle_notify(rt);
      return 0;
    }
  }
  j = weft__job_alloc(w);
  if (j == NULL)
    return -ENOMEM;
  j->task.kind = WEFT__TASK_JOB;
  j->task.prio = (uint8_t)prio;
  j->task.pin = (int16_t)pin;
  j->fn = fn;
  j->arg = arg;
  j->counter = counter != NULL ? cast(counter) : NULL;
  if (counter != NULL)
    counter_inc(w, j->counter, 1);
  count_submitted(rt, w, 1);
  weft__worker_ready(rt, w, &j->task);
  return 0;
}

int weft_spawn_ex(weft_runtime_t* rt, weft_job_cb fn, void* arg,
                  weft_counter_t* counter, const weft_spawn_opts_t* opts) {
  int prio = WEFT_PRIORITY_NORMAL;
  int pin = -1;

  if (fn == NULL)
    return -EINVAL;
  if (opts != NULL) {
    if ((unsigned)opts->priority > WEFT_PRIORITY_LOW || opts->worker < -1)
      return -EINVAL;
    prio = (int)opts->priority;
    pin = opts->worker;
  }
  return spawn_one(rt, fn, arg, counter, prio, pin, true);
}

int weft_spawn(weft_runtime_t* rt, weft_job_cb fn, void* arg,
               weft_counter_t* counter) {
  if (fn == NULL)
    return -EINVAL;
  return spawn_one(rt, fn, arg, counter, WEFT_PRIORITY_NORMAL, -1, true);
}

int weft__spawn_piece(weft_runtime_t* rt, weft_job_cb fn, void* arg,
                      weft_counter_t* counter) {
  return spawn_one(rt, fn, arg, counter, WEFT_PRIORITY_NORMAL, -1, false);
}

int weft_spawn_batch(weft_runtime_t* rt, const weft_job_t* jobs, size_t n,
                     weft_counter_t* counter) {
  weft__task_t* chunk[WEFT__BATCH_CHUNK];
  weft__task_t* list;
  weft__task_t* last;
  weft__worker_t* w;
  size_t ntasks;
  size_t i;
  size_t m;
  int err;

  if (jobs == NULL && n != 0)
    return -EINVAL;
  for (i = 0; i < n; i++)
    if (jobs[i].fn == NULL)
      return -EINVAL;
  err = prepare(&rt, &w);
  if (err != 0 || n == 0)
    return err;
  if (w == NULL)
    weft__idle_wake_early(rt); /* as in weft_spawn_ex */
  /* The jobs go out as a few range tasks (range.c), made before anything
   * is counted, so that a failure submits nothing. */
  err = weft__range_make(rt, jobs, n, counter != NULL ? cast(counter) : NULL,
                         &list, &last, &ntasks);
  if (err != 0)
    return err;
  if (counter != NULL)
    counter_inc(w, cast(counter), (int64_t)n);
  count_submitted(rt, w, n);

  if (w == NULL) {
    weft__inject_foreign(rt, list, last, ntasks, WEFT_PRIORITY_NORMAL, -1);
    return 0;
  }
  if (ntasks == 1) {
    weft__worker_ready(rt, w, list);
    /* A batch is worth a fenced wake-up (the push's own look at the
     * sleepers has none): the spawner may block before it runs it. */
    weft__idle_notify(rt);
    return 0;
  }
  while (list != NULL) {
    for (m = 0; m < WEFT__BATCH_CHUNK && list != NULL; m++) {
      chunk[m] = list;
      list = list->next;
    }
    /* One release store of the deque's bottom publishes the chunk; if the
     * deque cannot grow, the injection queue takes it instead. */
    if (weft__deque_push_batch(&w->dq[WEFT_PRIORITY_NORMAL],
                               (void* const*)chunk, m) != 0) {
      for (i = 0; i + 1 < m; i++)
        chunk[i]->next = chunk[i + 1];
      chunk[m - 1]->next = NULL;
      weft__inject_push(&rt->inject, chunk[0], chunk[m - 1], m,
                        WEFT_PRIORITY_NORMAL);
    }
  }
  weft__idle_notify(rt);
  return 0;
}

int weft__spawn_embedded(weft_runtime_t* rt, weft__job_t* j, weft_job_cb fn,
                         void* arg) {
  int err = weft__runtime_start(rt);
  if (err != 0)
    return err;
  if (atomic_load_explicit(&rt->stop, memory_order_acquire))
    return -ESHUTDOWN;
  j->task.kind = WEFT__TASK_JOB;
  j->task.prio = WEFT_PRIORITY_NORMAL;
  j->task.pin = -1;
  j->fn = fn;
  j->arg = arg;
  j->counter = NULL;
  j->owner = WEFT__JOB_EMBEDDED;
  if (weft__batch_add_job(rt, &j->task))
    return 0; /* counted and published by the batch's flush */
  count_submitted(rt, NULL, 1);
  weft__worker_ready(rt, NULL, &j->task);
  return 0;
}
