/* bridge.h: the libuv bridge's private declarations, one section per file.
 *
 * An operation is a heap record shared by the fiber that waits for it and
 * the loop thread that runs it (two references). The fiber posts it to the
 * bridge's lock-free MPSC queue and waits on the counter inside it; the loop
 * thread starts the libuv request, and the first of {the callback, the
 * deadline, a cancellation, the bridge stopping} delivers the result. The
 * record outlives an abandoned wait until libuv is done with it.
 */
#ifndef WEFT_BRIDGE_H_
#define WEFT_BRIDGE_H_

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "weft_uv.h"

typedef struct weft__uv_op_s weft__uv_op_t;

/* What a kind of operation does on the loop thread. */
typedef struct weft__uv_ops_s {
  /* Starts the libuv request. On failure it calls weft__uv_op_finish and
   * weft__uv_op_release itself. */
  void (*start)(weft__uv_op_t* op, uv_loop_t* loop);
  /* The waiter gave up (deadline, cancel, stop): make the request end soon.
   * The request's callback still runs and releases the loop's reference.
   * NULL: the request ends by itself soon enough. */
  void (*abort)(weft__uv_op_t* op);
  /* Frees the record once both sides are done with it (any thread).
   * NULL: free(). */
  void (*free)(weft__uv_op_t* op);
} weft__uv_ops_t;

enum {
  WEFT__OP_QUEUED = 0, /* posted, not yet started by the loop thread */
  WEFT__OP_STARTED,    /* libuv request in flight, result not delivered */
  WEFT__OP_FINISHED    /* result delivered (the request may still run) */
};

struct weft__uv_op_s {
  weft__uv_op_t* next;         /* in the MPSC queue */
  weft__uv_op_t* prev_pending; /* loop thread: ops not yet finished */
  weft__uv_op_t* next_pending;
  const weft__uv_ops_t* ops;
  weft_uv_t* bridge;
  weft_counter_t done; /* 1 until the result is delivered */
  atomic_int refs;
  int state; /* loop thread only */
  int64_t result;
  uint64_t deadline; /* 0: none */
  size_t heap_index; /* in the deadline heap, or SIZE_MAX */
  void* fiber;       /* the waiting fiber and its job, for cancel */
  uint64_t gen;
};

/* A loop-side object the bridge must close when it stops (a connection,
 * a listener): families register them. Loop thread only. */
typedef struct weft__uv_resource_s {
  struct weft__uv_resource_s* next;
  struct weft__uv_resource_s* prev;
  void (*close)(struct weft__uv_resource_s* res);
} weft__uv_resource_t;

/* The deadline heap: a binary min-heap of ops by deadline, driven by one
 * uv_timer_t (loop thread only). */
typedef struct weft__uv_heap_s {
  weft__uv_op_t** v;
  size_t n;
  size_t cap;
} weft__uv_heap_t;

/* submit.c: a submission record, a slab of them, and a worker's outbox of
 * finished ones (a Treiber stack; only the loop thread takes from it). */
typedef struct weft__uv_submit_s weft__uv_submit_t;
typedef struct weft__uv_slab_s weft__uv_slab_t;
typedef struct weft__uv_donelog_s weft__uv_donelog_t;
#define WEFT__UV_SKIP 16
typedef struct weft__uv_outbox_s {
  WEFT__ALIGNED _Atomic(weft__task_t*) head;
  /* The worker's last pushes (worker only): each push links the one
   * WEFT__UV_SKIP back, so the loop can fetch ahead along the stack. */
  weft__uv_submit_t* recent[WEFT__UV_SKIP];
  unsigned nrecent;
} weft__uv_outbox_t;

struct weft_uv_s {
  weft_runtime_t* rt;
  uv_loop_t* loop;
  uv_loop_t own_loop;
  bool owned;
  uv_thread_t thread;
  uv_thread_t loop_thread_id; /* the thread running the loop */
  uv_async_t async;
  uv_timer_t timer;
  uv_check_t check;
  uv_prepare_t prepare;
  int open_handles; /* closed in weft__uv_bridge_close */
  /* submit.c: per-worker outboxes. Set once, then read by every worker
   * finishing a submission: a line the loop thread does not write. */
  WEFT__ALIGNED weft__uv_outbox_t* outboxes;
  unsigned noutboxes;
  /* MPSC queue: a Treiber stack the loop thread empties in one exchange
   * (and reverses into FIFO order). WEFT__UV_CLOSED once stopped. */
  WEFT__ALIGNED _Atomic(weft__uv_op_t*) head;
  atomic_int posters; /* threads between checking head and async_send */
  /* 1 from the loop's prepare phase until its check phase: it may be
   * blocked in poll, and a post must wake it (weft__uv_wake); 0 while it
   * runs callbacks and will drain the queues in its next prepare. */
  atomic_int polling;
  WEFT__ALIGNED weft__uv_op_t* pending; /* loop thread only */
  weft__uv_heap_t heap;
  weft__uv_resource_t* resources; /* loop thread only */
  weft__batch_t batch;
  /* submit.c: the loop thread's own state. */
  weft__uv_submit_t* submit_free;
  /* Finished submissions whose records went back to the pool before their
   * after_cb ran: a FIFO of (after_cb, arg) in chunks. */
  weft__uv_donelog_t* done_head; /* read from here, at done_r */
  weft__uv_donelog_t* done_tail; /* appended to here, at done_w */
  weft__uv_donelog_t* done_spare;
  unsigned done_r;
  unsigned done_w;
  size_t done_n;
  weft__uv_submit_t* submit_ready;
  weft__uv_slab_t* submit_slabs;
  size_t submit_outstanding;
  atomic_int stopped; /* weft_uv_stop ran */
  int closing;        /* loop thread: no more starts */
  uv_mutex_t stop_lock;
  uv_cond_t stop_cond;
};

/* The head value of a stopped bridge's queue: posts fail with ECANCELED. */
#define WEFT__UV_CLOSED ((weft__uv_op_t*)(uintptr_t)1)

/* ---- loop.c: the bridge and the operation protocol ------------------------
 */

/* The bridge of the calling fiber's runtime: 0 and *out, or UV_EPERM (not
 * on a fiber), UV_EINVAL (no bridge). */
int weft__uv_current(weft_uv_t** out);
/* A zeroed operation of `size` bytes (the op first) with two references.
 * NULL when out of memory. Fiber side. */
void* weft__uv_op_new(weft_uv_t* b, size_t size, const weft__uv_ops_t* ops);
/* Posts op to the loop thread; false if the bridge is stopped (the op was
 * not posted). Any thread. */
bool weft__uv_op_post(weft_uv_t* b, weft__uv_op_t* op);
/* Wakes the loop thread if it may be blocked in poll, after a push that
 * found its queue empty (any thread, counted in `posters`). */
void weft__uv_wake(weft_uv_t* b);
/* Posts op, suspends until its result, drops the fiber's reference and
 * returns the result. Fiber side. */
int64_t weft__uv_op_await(weft__uv_op_t* op, uint64_t deadline);
/* weft__uv_op_await in two steps, for a caller with something to do between
 * posting and suspending. Begin returns 0, or UV_ECANCELED when the bridge
 * is stopped (the op is freed then; do not call end). Fiber side. */
int weft__uv_op_await_begin(weft__uv_op_t* op, uint64_t deadline);
int64_t weft__uv_op_await_end(weft__uv_op_t* op);
/* Delivers a result unless one was delivered already (deadline, cancel,
 * stop); wakes the fiber. Loop thread. */
void weft__uv_op_finish(weft__uv_op_t* op, int64_t result);
/* Drops a reference; the last one frees the op. Either side. */
void weft__uv_op_release(weft__uv_op_t* op);
/* Whether the op still wants its result (not timed out or cancelled). */
static inline bool weft__uv_op_live(const weft__uv_op_t* op) {
  return op->state != WEFT__OP_FINISHED;
}

void weft__uv_resource_add(weft_uv_t* b, weft__uv_resource_t* res);
void weft__uv_resource_remove(weft_uv_t* b, weft__uv_resource_t* res);
/* Closes every registered resource (bridge stop). */
void weft__uv_resources_close(weft_uv_t* b);

/* ---- submit.c -------------------------------------------------------------
 */

/* Calls after_cb for every finished submission (loop thread). */
void weft__uv_submit_drain(weft_uv_t* b);
/* Bridge stopping: finished submissions get status 0, the rest
 * UV_ECANCELED (loop thread). */
void weft__uv_submit_close(weft_uv_t* b);
/* Whether any outbox holds a record (seq_cst loads: see on_prepare). */
bool weft__uv_submit_posted(weft_uv_t* b);
/* Frees the records (every worker is gone). */
void weft__uv_submit_free(weft_uv_t* b);
/* rt->embedded_done: a submission's job returned on worker w. */
void weft__uv_submit_done(void* bridge, weft__job_t* j, weft__worker_t* w);

#endif /* WEFT_BRIDGE_H_ */
