/* range.c: weft_spawn_batch's jobs, and spawn streams, run in ranges.
 *
 * A batch is copied into blocks of up to WEFT__BLOCK_JOBS jobs, and each
 * block is queued as one range task instead of one task per job. A worker
 * running a range keeps its unstarted jobs [next, end) in its slot, where
 * it claims them one by one from the bottom while thieves halve them from
 * the top (both by CAS on one word): every unstarted job can be stolen
 * while the job before it runs, however long that job takes or however it
 * blocks. Each job still gets the full job contract (its own generation,
 * fiber-local slots, pin and priority reset, its counter decrement, its
 * completion count). Before a fiber in a range suspends, the rest of its
 * range goes back to the deque and the worker's slot is free for the next
 * fiber.
 *
 * A range record is never allocated: a block holds one per job, and the
 * range starting at job i uses record i. Ranges never overlap, and a range
 * record is read before its first job is claimed, so record i is free
 * whenever a new range may start at i. Blocks are reference counted: every
 * queued or running range holds its block.
 *
 * A run of weft_spawn calls on one counter fills a block the same way, one
 * job at a time (a spawn stream, at the end of this file), and thieves
 * take ranges of it.
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
  uint32_t cap; /* jobs it has room for */
  weft_runtime_t* rt;
  weft__counter_t* counter;
  weft__range_t* ranges;              /* one per job, after the jobs */
  struct weft__jobblock_s* next_free; /* in rt's pool */
  weft_job_t jobs[];
};

static uint64_t span_pack(uint32_t next, uint32_t end) {
  return (uint64_t)end << 32 | next;
}

static bool span_visible(_Atomic uint64_t* span);
static bool stream_visible(weft__sslot_t* slot);

/* Full-size blocks are kept for reuse, up to WEFT__BLOCK_POOL per runtime:
 * a batch of a thousand jobs is a 48 KiB block, and returning each to
 * malloc had it trim and refault the heap's top, with a TLB shootdown on
 * every other core (page faults were a third of spawn_batch's time; with
 * the pool it ran 1.4-2.5x, one worker or two; 4 blocks kept did as well
 * as 64). The lock is taken once per block, not per job. */
#define WEFT__BLOCK_POOL 16

/* The bytes of a block for k jobs after its header: jobs, then records. */
static size_t block_body_size(size_t k) {
  return k * (sizeof(weft_job_t) + sizeof(weft__range_t));
}

static void block_drop(weft__jobblock_t* b) {
  weft_runtime_t* rt = b->rt;
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (b->cap == WEFT__BLOCK_JOBS) {
    /* The lock orders our last use before the next owner's first. */
    weft__spin_lock(&rt->blocks_lock);
    if (rt->nblocks_free < WEFT__BLOCK_POOL) {
      b->next_free = rt->blocks_free;
      rt->blocks_free = b;
      rt->nblocks_free++;
      /* ASan: a use of a pooled block's jobs or records is a use after
       * free, as it would be after free(). */
      weft__asan_poison(b->jobs, block_body_size(WEFT__BLOCK_JOBS));
      b = NULL;
    }
    weft__spin_unlock(&rt->blocks_lock);
  }
  free(b);
}

void weft__range_pool_free(weft_runtime_t* rt) {
  while (rt->blocks_free != NULL) {
    weft__jobblock_t* b = rt->blocks_free;
    rt->blocks_free = b->next_free;
    free(b);
  }
  rt->nblocks_free = 0;
}

/* The range task for jobs [begin, end) of b, in record `begin`. The caller
 * holds a reference to b. */
static weft__range_t* range_at(weft__jobblock_t* b, uint32_t begin,
                               uint32_t end) {
  weft__range_t* r = &b->ranges[begin];
  r->task.kind = WEFT__TASK_RANGE;
  r->task.prio = WEFT_PRIORITY_NORMAL;
  r->task.pin = -1;
  r->task.next = NULL;
  r->blk = b;
  r->begin = begin;
  r->end = end;
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return r;
}

/* A block for k jobs of rt counted on c, with no holder yet. One for more
 * than half a full block is made full-size, so that it can be pooled. */
static weft__jobblock_t* block_new(weft_runtime_t* rt, size_t k,
                                   weft__counter_t* c) {
  weft__jobblock_t* b = NULL;
  if (k > WEFT__BLOCK_JOBS / 2) {
    k = WEFT__BLOCK_JOBS;
    weft__spin_lock(&rt->blocks_lock);
    b = rt->blocks_free;
    if (b != NULL) {
      rt->blocks_free = b->next_free;
      rt->nblocks_free--;
      weft__asan_unpoison(b->jobs, block_body_size(WEFT__BLOCK_JOBS));
    }
    weft__spin_unlock(&rt->blocks_lock);
  }
  if (b == NULL) {
    b = malloc(sizeof(*b) + block_body_size(k));
    if (b == NULL)
      return NULL;
  }
  atomic_init(&b->refs, 0);
  b->cap = (uint32_t)k;
  b->rt = rt;
  b->counter = c;
  b->ranges = (weft__range_t*)(void*)(b->jobs + k);
  return b;
}

int weft__range_make(weft_runtime_t* rt, const weft_job_t* jobs, size_t n,
                     weft__counter_t* c, weft__task_t** first,
                     weft__task_t** last, size_t* ntasks) {
  size_t nblk = (n + WEFT__BLOCK_JOBS - 1) / WEFT__BLOCK_JOBS;
  weft__task_t* head = NULL;
  weft__task_t** tail = &head;
  weft__jobblock_t* b = NULL;
  size_t i;

  for (i = 0; i < nblk; i++) {
    size_t k = i + 1 < nblk ? WEFT__BLOCK_JOBS : n - i * WEFT__BLOCK_JOBS;
    b = block_new(rt, k, c);
    if (b == NULL) {
      while (head != NULL) {
        weft__range_t* r = (weft__range_t*)(void*)head;
        head = head->next;
        free(r->blk);
      }
      return -ENOMEM;
    }
    memcpy(b->jobs, jobs + i * WEFT__BLOCK_JOBS, k * sizeof(b->jobs[0]));
    *tail = &range_at(b, 0, (uint32_t)k)->task;
    tail = &(*tail)->next;
  }
  *first = head;
  *last = &b->ranges[0].task;
  *ntasks = nblk;
  return 0;
}

weft__counter_t* weft__range_counter(const weft__range_t* r) {
  return r->blk->counter;
}

void weft__range_run(weft__worker_t* w, weft__range_t* r) {
  weft__fiber_t* f = w->current;
  weft__rslot_t* slot = &w->rslot;
  weft__jobblock_t* b = r->blk;
  uint32_t begin = r->begin;
  uint32_t end = r->end;
  weft__frange_t fr;

  /* r is read: from here a thief may reuse it. Under the lock: a thief
   * that sees blk may take a reference while we still hold ours. */
  weft__spin_lock(&slot->lock);
  atomic_store_explicit(&slot->span, span_pack(begin, end),
                        memory_order_relaxed);
  atomic_store_explicit(&slot->blk, b, memory_order_relaxed);
  weft__spin_unlock(&slot->lock);
  fr.slot = slot;
  fr.blk = b;
  f->range = &fr;
  /* Jobs others could take: let a sleeper come for them (the fence in the
   * notify pairs with the one a worker makes before it parks, which then
   * sees the slot: weft__range_visible). */
  if (end - begin >= 2)
    weft__idle_notify(w->rt);
  /* A fiber migrates only by suspending, which gives the range away and
   * clears fr.slot: while fr.slot is set we are on its worker. */
  while ((slot = fr.slot) != NULL) {
    uint64_t s = atomic_load_explicit(&slot->span, memory_order_relaxed);
    uint32_t next = (uint32_t)s;
    weft_job_t* j;

    if (next >= (uint32_t)(s >> 32))
      break;
    /* Relaxed: the CAS only decides who runs job `next` (against thieves
     * shrinking the top); the jobs' contents came with the block. */
    if (!atomic_compare_exchange_weak_explicit(
            &slot->span, &s, span_pack(next + 1, (uint32_t)(s >> 32)),
            memory_order_relaxed, memory_order_relaxed))
      continue;
    j = &b->jobs[next];
    weft__job_begin(f, -1, WEFT_PRIORITY_NORMAL);
    j->fn(j->arg);
    w = weft__worker_current();
    weft__job_end(w, f, b->counter);
  }
  if (fr.slot != NULL) {
    weft__spin_lock(&fr.slot->lock);
    atomic_store_explicit(&fr.slot->blk, NULL, memory_order_relaxed);
    atomic_store_explicit(&fr.slot->span, 0, memory_order_relaxed);
    weft__spin_unlock(&fr.slot->lock);
  }
  f->range = NULL;
  block_drop(b);
}

weft__task_t* weft__range_steal(weft__worker_t* v) {
  weft__rslot_t* slot = &v->rslot;
  weft__range_t* r = NULL;
  weft__jobblock_t* b;

  if (!weft__range_visible(v))
    return NULL;
  if (!span_visible(&slot->span))
    return weft__stream_steal(v);
  weft__spin_lock(&slot->lock);
  b = atomic_load_explicit(&slot->blk, memory_order_relaxed);
  if (b != NULL) {
    uint64_t s = atomic_load_explicit(&slot->span, memory_order_relaxed);
    for (;;) {
      uint32_t next = (uint32_t)s;
      uint32_t end = (uint32_t)(s >> 32);
      uint32_t mid = next + (end - next) / 2; /* one left: take it */
      if (next >= end)
        break;
      /* Relaxed, as the owner's claim: only the indexes change hands. */
      if (atomic_compare_exchange_weak_explicit(
              &slot->span, &s, span_pack(next, mid), memory_order_relaxed,
              memory_order_relaxed)) {
        r = range_at(b, mid, end); /* the owner's hold keeps b alive */
        break;
      }
    }
  }
  weft__spin_unlock(&slot->lock);
  return r != NULL ? &r->task : NULL;
}

static bool span_visible(_Atomic uint64_t* span) {
  /* Relaxed: a hint, or (in weft__idle_work_visible) ordered by the
   * fences on either side of the park/notify race. */
  uint64_t s = atomic_load_explicit(span, memory_order_relaxed);
  return (uint32_t)s < (uint32_t)(s >> 32);
}

bool weft__range_visible(weft__worker_t* v) {
  return span_visible(&v->rslot.span) || stream_visible(&v->sslot);
}

void weft__range_give_away(weft__worker_t* w, weft__fiber_t* f,
                           bool to_inject) {
  weft__frange_t* fr = f->range;
  weft__rslot_t* slot = fr->slot;
  uint64_t s;

  f->range = NULL;
  if (slot == NULL)
    return;
  /* Take the rest whole; under the lock no thief is halving it. */
  weft__spin_lock(&slot->lock);
  s = atomic_exchange_explicit(&slot->span, 0, memory_order_relaxed);
  atomic_store_explicit(&slot->blk, NULL, memory_order_relaxed);
  weft__spin_unlock(&slot->lock);
  fr->slot = NULL;
  if ((uint32_t)s < (uint32_t)(s >> 32)) {
    weft__task_t* t =
        &range_at(fr->blk, (uint32_t)s, (uint32_t)(s >> 32))->task;
    if (to_inject) {
      /* Not on top of our deque, where it would hide the rest of the batch
       * the caller helps with (help then stops and the fiber suspends);
       * in the injection queue every worker sees it. The notify is fenced
       * (the push's own look at the sleepers is not), because this worker
       * will not be back for it soon. */
      weft__inject_push(&w->rt->inject, t, t, 1, WEFT_PRIORITY_NORMAL);
      weft__idle_notify(w->rt);
    } else {
      weft__worker_ready(w->rt, w, t);
    }
  }
}

/* ---- spawn streams -------------------------------------------------------
 *
 * Jobs [next, end) of the open block w->sblk sit in w->sslot. Only the
 * owner appends, with a release store of `end` (no RMW: a spawn costs no
 * more than a deque push); anyone takes from the bottom by CAS on `next`:
 * a thief (or the owner looking for work) half of the jobs in one CAS,
 * run as a range, the owner waiting on the stream's counter one job at a
 * time. So a stream of n spawns costs a thief O(log n) CASes, not a
 * steal, a push and a fenced pop per job, and the jobs lie in one array.
 * Indices are never reused within a block, so a range record made at one
 * stays its range's. blk, and next with it, change only under the lock,
 * which thieves hold too: a stale `next` from an older block cannot pass
 * a CAS on a newer one.
 */

/* Jobs [*next, *end) of slot; false when there are none. Acquire on end:
 * pairs with stream_publish's release, so the jobs below it are seen. */
static bool stream_span(weft__sslot_t* slot, uint32_t* next, uint32_t* end) {
  *next = atomic_load_explicit(&slot->next, memory_order_relaxed);
  *end = atomic_load_explicit(&slot->end, memory_order_acquire);
  return *next < *end;
}

/* The bottom half (at least one job) of a spawn stream's unstarted jobs,
 * as a range task; NULL if it has none. */
static weft__task_t* stream_split(weft__sslot_t* slot) {
  weft__range_t* r = NULL;
  weft__jobblock_t* b;
  uint32_t next;
  uint32_t end;

  weft__spin_lock(&slot->lock);
  b = atomic_load_explicit(&slot->blk, memory_order_relaxed);
  while (b != NULL && stream_span(slot, &next, &end)) {
    uint32_t mid = next + (end - next + 1) / 2;
    /* Relaxed: the CAS only decides who runs [next, mid) (against the
     * owner's single claims); the jobs came with the load of end. */
    if (atomic_compare_exchange_weak_explicit(&slot->next, &next, mid,
                                              memory_order_relaxed,
                                              memory_order_relaxed)) {
      r = range_at(b, next, mid); /* the slot's hold keeps b alive */
      break;
    }
  }
  weft__spin_unlock(&slot->lock);
  return r != NULL ? &r->task : NULL;
}

static bool stream_visible(weft__sslot_t* slot) {
  /* Relaxed: a hint, or ordered by the park/notify fences. No block, no
   * look at end's line (a thief checks every victim this way). */
  return atomic_load_explicit(&slot->blk, memory_order_relaxed) != NULL &&
         atomic_load_explicit(&slot->next, memory_order_relaxed) <
             atomic_load_explicit(&slot->end, memory_order_relaxed);
}

weft_job_t* weft__stream_reserve(weft__worker_t* w, weft__counter_t* c) {
  weft__jobblock_t* b = w->sblk;
  weft__sslot_t* slot = &w->sslot;

  if (b != NULL && b->counter == c) {
    /* Relaxed: only we write end. */
    uint32_t end = atomic_load_explicit(&slot->end, memory_order_relaxed);
    if (end < WEFT__BLOCK_JOBS)
      return &b->jobs[end];
  } else if (b != NULL) {
    /* Another counter: a stream of its own only after as many in a row
     * (weft__stream_slot counted them while no block was open). */
    if (w->stream_c != c) {
      w->stream_c = c;
      w->stream_n = 0;
    }
    if (++w->stream_n < WEFT__STREAM_AFTER)
      return NULL;
  }
  weft__stream_close(w);
  b = block_new(w->rt, WEFT__BLOCK_JOBS, c);
  if (b == NULL)
    return NULL;            /* the plain way, then */
  atomic_init(&b->refs, 1); /* the slot's hold, dropped by stream_close */
  weft__spin_lock(&slot->lock);
  atomic_store_explicit(&slot->next, 0, memory_order_relaxed);
  /* No look yet at this block (an old block's last look at job 0 would
   * let the first small look here steal at once). */
  atomic_store_explicit(&slot->looked, (uint64_t)UINT32_MAX << 32,
                        memory_order_relaxed);
  atomic_store_explicit(&slot->end, 0, memory_order_relaxed);
  atomic_store_explicit(&slot->blk, b, memory_order_relaxed);
  weft__spin_unlock(&slot->lock);
  w->sblk = b;
  w->sblk_c = c;
  w->sjobs = b->jobs;
  return &b->jobs[0];
}

weft__task_t* weft__stream_take(weft__worker_t* w) {
  if (w->sblk == NULL || !stream_visible(&w->sslot))
    return NULL;
  return stream_split(&w->sslot);
}

/* A thief leaves a stream alone while it holds fewer than
 * WEFT__STREAM_STEAL_MIN unstarted jobs, unless the oldest of them has
 * waited WEFT__STREAM_STALE_US since a thief first saw it there. Taking
 * the newest job or two at every look, a thief about as fast as the
 * spawner cost it misses on end and on the counter at every spawn or two
 * (spawn_empty: 2.5M steals for 5M jobs, at a quarter of the rate, when
 * the host made a cache line's round trip between our two vCPUs cost
 * 450 ns instead of 115). The wait bounds how long a job can sit in a
 * stream whose owner is busy with something else (or spins until the job
 * starts), however slowly it spawns. */
#define WEFT__STREAM_STEAL_MIN 64
#define WEFT__STREAM_STALE_US 2 /* in units of 1.024 us: 1-3 us */

weft__task_t* weft__stream_steal(weft__worker_t* v) {
  weft__sslot_t* slot = &v->sslot;
  uint32_t next;
  uint32_t end;

  if (atomic_load_explicit(&slot->blk, memory_order_relaxed) == NULL)
    return NULL;
  /* Relaxed: a hint; stream_split looks again with acquire. */
  next = atomic_load_explicit(&slot->next, memory_order_relaxed);
  end = atomic_load_explicit(&slot->end, memory_order_relaxed);
  if (next >= end)
    return NULL;
  if (end - next < WEFT__STREAM_STEAL_MIN) {
    /* looked: the oldest unstarted job some thief saw, and when (in ~us,
     * wrapping), in one word so that a look reads a pair one thief wrote.
     * Relaxed: a heuristic's memory; a lost update costs one more look. */
    uint64_t l = atomic_load_explicit(&slot->looked, memory_order_relaxed);
    uint32_t now = (uint32_t)(weft__clock_ns() >> 10);
    if ((uint32_t)(l >> 32) != next) {
      atomic_store_explicit(&slot->looked, (uint64_t)next << 32 | now,
                            memory_order_relaxed);
      return NULL;
    }
    if (now - (uint32_t)l < WEFT__STREAM_STALE_US)
      return NULL;
  }
  return stream_split(slot);
}

bool weft__stream_claim(weft__worker_t* w, weft__counter_t* c,
                        weft_job_t* job) {
  weft__jobblock_t* b = w->sblk;
  weft__sslot_t* slot = &w->sslot;
  uint32_t next;
  uint32_t end;

  if (b == NULL || b->counter != c)
    return false;
  /* No lock: only we replace b (and reset next). */
  while (stream_span(slot, &next, &end)) {
    if (atomic_compare_exchange_weak_explicit(&slot->next, &next, next + 1,
                                              memory_order_relaxed,
                                              memory_order_relaxed)) {
      *job = b->jobs[next];
      return true;
    }
  }
  return false;
}

void weft__stream_close(weft__worker_t* w) {
  weft__jobblock_t* b = w->sblk;
  weft__sslot_t* slot = &w->sslot;
  uint32_t next;
  uint32_t end;

  if (b == NULL)
    return;
  /* Under the lock no thief takes any; the rest is ours. */
  weft__spin_lock(&slot->lock);
  next = atomic_load_explicit(&slot->next, memory_order_relaxed);
  end = atomic_load_explicit(&slot->end, memory_order_relaxed);
  atomic_store_explicit(&slot->next, end, memory_order_relaxed);
  atomic_store_explicit(&slot->blk, NULL, memory_order_relaxed);
  weft__spin_unlock(&slot->lock);
  w->sblk = NULL;
  w->sblk_c = NULL;
  w->sjobs = NULL;
  /* The jobs nobody started yet go on as one range (it holds b). */
  if (next < end)
    weft__worker_ready(w->rt, w, &range_at(b, next, end)->task);
  block_drop(b);
}
