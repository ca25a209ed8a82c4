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
 * A burst of submissions from one callback finds its pool empty: before it
 * grows the pool it takes back the records already finished, noting each
 * one's after_cb and arg in the done log (16 bytes instead of a 64-byte
 * record kept until the loop can report it). A million submissions in one
 * go then fault in a fraction of the memory.
 *
 * Records live in slabs freed only with the bridge: a job that finishes
 * after the bridge stopped may still push its record, and nothing has to
 * know when it does.
 */
#include <stdlib.h>
#include <string.h>

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
  /* Set with the push: the record its worker pushed WEFT__UV_SKIP pushes
   * earlier, further down the same outbox unless the loop took it since.
   * Only ever prefetched: walking a stack that other cores wrote is one
   * cache miss after another, and this lets several overlap. */
  weft__uv_submit_t* skip;
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

/* The done log: chunks of (after_cb, arg), 64 KiB each (under malloc's mmap
 * threshold, so a freed chunk comes back warm). */
#define DONE_CHUNK 4096

typedef struct {
  weft_uv_after_cb cb;
  void* arg;
} done_t;

struct weft__uv_donelog_s {
  weft__uv_donelog_t* next;
  done_t e[DONE_CHUNK];
};

static weft__uv_submit_t* rec_next(weft__uv_submit_t* s) {
  return (weft__uv_submit_t*)s->job.task.next;
}

static void rec_set_next(weft__uv_submit_t* s, weft__uv_submit_t* next) {
  /* The task comes first in the job, and the job first in the record. */
  s->job.task.next = (weft__task_t*)(void*)next;
}

/* ---- the pool (loop thread) ------------------------------------------------
 */

static void rec_put(weft_uv_t* b, weft__uv_submit_t* s) {
  s->job.aux = SUBMIT_FREE;
  rec_set_next(s, b->submit_free);
  b->submit_free = s;
}

/* ---- the done log (loop thread) ---------------------------------------------
 */

static bool done_push(weft_uv_t* b, weft_uv_after_cb cb, void* arg) {
  weft__uv_donelog_t* c = b->done_tail;

  if (c == NULL || b->done_w == DONE_CHUNK) {
    c = b->done_spare;
    b->done_spare = NULL;
    if (c == NULL && (c = malloc(sizeof(*c))) == NULL)
      return false;
    c->next = NULL;
    if (b->done_tail != NULL)
      b->done_tail->next = c;
    else
      b->done_head = c;
    b->done_tail = c;
    b->done_w = 0;
  }
  c->e[b->done_w].cb = cb;
  c->e[b->done_w].arg = arg;
  b->done_w++;
  b->done_n++;
  return true;
}

static bool done_pop(weft_uv_t* b, done_t* d) {
  weft__uv_donelog_t* c = b->done_head;

  if (b->done_n == 0)
    return false;
  if (b->done_r == DONE_CHUNK) {
    /* Finished with the head chunk; one is kept for the next burst. */
    b->done_head = c->next;
    if (b->done_spare == NULL)
      b->done_spare = c;
    else
      free(c);
    c = b->done_head;
    b->done_r = 0;
  }
  *d = c->e[b->done_r++];
  if (--b->done_n == 0) {
    /* Empty: restart the tail chunk instead of growing a chain. */
    b->done_r = 0;
    b->done_w = 0;
  }
  return true;
}

/* Takes back the records of finished submissions, logging their after_cb
 * for the next drain. Returns how many came back. They join the pool in
 * the order their outbox held them, so each record's skip link still
 * points WEFT__UV_SKIP records ahead when rec_get pops them. */
static size_t rec_reclaim(weft_uv_t* b) {
  weft__uv_submit_t* s;
  weft__uv_submit_t* next;
  weft__uv_submit_t* first;
  weft__uv_submit_t** tail;
  size_t n = 0;
  unsigned i;

  for (i = 0; i < b->noutboxes; i++) {
    if (atomic_load_explicit(&b->outboxes[i].head, memory_order_relaxed) ==
        NULL)
      continue;
    /* Acquire pairs with the release CAS in weft__uv_submit_done, as in
     * weft__uv_submit_drain. */
    s = (weft__uv_submit_t*)(void*)atomic_exchange_explicit(
        &b->outboxes[i].head, NULL, memory_order_acquire);
    first = NULL;
    tail = &first;
    for (; s != NULL; s = next) {
      next = rec_next(s);
      if (s->skip != NULL)
        __builtin_prefetch(s->skip, 1);
      if (s->job.aux != SUBMIT_OUTSTANDING)
        continue; /* cancelled by a stop: never reused */
      if (!done_push(b, s->after_cb, s->job.arg)) {
        /* No memory for the log: the drain reports the rest from their
         * records, as usual. */
        for (; s != NULL; s = next) {
          next = rec_next(s);
          rec_set_next(s, b->submit_ready);
          b->submit_ready = s;
        }
        break;
      }
      s->job.aux = SUBMIT_FREE;
      *tail = s;
      tail = (weft__uv_submit_t**)(void*)&s->job.task.next;
      n++;
    }
    *tail = b->submit_free;
    b->submit_free = first;
  }
  return n;
}

static weft__uv_submit_t* rec_get(weft_uv_t* b) {
  weft__uv_submit_t* s = b->submit_free;
  weft__uv_slab_t* slab;
  size_t n;
  size_t i;

  if (s == NULL && rec_reclaim(b) >= SLAB_MIN)
    s = b->submit_free; /* enough came back: no need to grow yet */
  if (s != NULL) {
    b->submit_free = rec_next(s);
    if (s->skip != NULL)
      __builtin_prefetch(s->skip, 1);
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
    slab->rec[i].skip = NULL;
    rec_set_next(&slab->rec[i], b->submit_free);
    b->submit_free = &slab->rec[i];
  }
  slab->rec[0].skip = NULL;
  return &slab->rec[0];
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
  s->skip = box->recent[box->nrecent % WEFT__UV_SKIP];
  box->recent[box->nrecent++ % WEFT__UV_SKIP] = s;
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

/* Calls after_cb for each logged submission, then for each ready record.
 * Both live in the bridge, not on this stack: an after_cb that stops the
 * bridge makes weft__uv_submit_close finish the rest with status 0 first,
 * and one that submits may log more, which this loop reports too. */
static void ready_run(weft_uv_t* b) {
  weft__uv_submit_t* s;
  weft_uv_after_cb cb;
  void* arg;
  done_t d;

  for (;;) {
    if (done_pop(b, &d)) {
      b->submit_outstanding--;
      d.cb(d.arg, 0);
      continue;
    }
    if ((s = b->submit_ready) == NULL)
      break;
    b->submit_ready = rec_next(s);
    if (s->skip != NULL)
      __builtin_prefetch(s->skip, 1);
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
  if (b->done_n != 0 || b->submit_ready != NULL)
    return true; /* taken back by a submit after this iteration's drain */
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
  while (b->done_head != NULL) {
    weft__uv_donelog_t* next = b->done_head->next;
    free(b->done_head);
    b->done_head = next;
  }
  free(b->done_spare);
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
  memset(b->outboxes, 0, n * sizeof(b->outboxes[0])); /* recent[], nrecent */
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
  /* Past our prepare phase (a host's prepare callback that runs after ours,
   * or code outside uv_run): the loop may block in poll before its check
   * phase publishes this batch. Have it come straight back; after the
   * first, uv_async_send is one plain load until the loop runs. Only this
   * thread writes `polling`: a relaxed load is exact. */
  if (atomic_load_explicit(&b->polling, memory_order_relaxed))
    uv_async_send(&b->async);
  return 0;
}
