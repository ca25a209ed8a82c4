/* loop.c: the bridge between weft's workers and one libuv loop thread.
 *
 * Fibers post operation records to a lock-free MPSC queue (a Treiber stack
 * the loop thread empties in one exchange) and wake the loop with one
 * uv_async_send, after a seq_cst fence (libuv 1.44's uv_async_send needs
 * it: it reads its own pending flag before writing the wake-up). The async
 * callback drains the queue and starts each operation; completions deliver
 * results and make the waiting fibers ready, collected into one batch that
 * a check handle publishes to the workers once per loop iteration.
 * Deadlines live in one min-heap driven by one uv_timer_t.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "sanitizer.h"

uint64_t weft_uv_deadline_in(uint64_t ms) {
  return uv_hrtime() + ms * 1000000u;
}

/* ---- the deadline heap -----------------------------------------------------
 */

static void heap_swap(weft__uv_heap_t* h, size_t i, size_t j) {
  weft__uv_op_t* t = h->v[i];
  h->v[i] = h->v[j];
  h->v[j] = t;
  h->v[i]->heap_index = i;
  h->v[j]->heap_index = j;
}

static void heap_up(weft__uv_heap_t* h, size_t i) {
  while (i > 0 && h->v[(i - 1) / 2]->deadline > h->v[i]->deadline) {
    heap_swap(h, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(weft__uv_heap_t* h, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1;
    size_t m = i;
    if (l < h->n && h->v[l]->deadline < h->v[m]->deadline)
      m = l;
    if (l + 1 < h->n && h->v[l + 1]->deadline < h->v[m]->deadline)
      m = l + 1;
    if (m == i)
      return;
    heap_swap(h, i, m);
    i = m;
  }
}

static int heap_push(weft__uv_heap_t* h, weft__uv_op_t* op) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 64;
    weft__uv_op_t** v = realloc(h->v, cap * sizeof(*v));
    if (v == NULL)
      return UV_ENOMEM;
    h->v = v;
    h->cap = cap;
  }
  op->heap_index = h->n;
  h->v[h->n++] = op;
  heap_up(h, op->heap_index);
  return 0;
}

static void heap_remove(weft__uv_heap_t* h, weft__uv_op_t* op) {
  size_t i = op->heap_index;
  if (i == SIZE_MAX)
    return;
  op->heap_index = SIZE_MAX;
  if (i == --h->n)
    return;
  h->v[i] = h->v[h->n];
  h->v[i]->heap_index = i;
  heap_down(h, i);
  heap_up(h, i);
}

static void on_timer(uv_timer_t* handle);

static void timer_arm(weft_uv_t* b) {
  uint64_t now;
  uint64_t ms;

  if (b->heap.n == 0) {
    uv_timer_stop(&b->timer);
    return;
  }
  now = uv_hrtime();
  ms = b->heap.v[0]->deadline > now
           ? (b->heap.v[0]->deadline - now + 999999) / 1000000
           : 0;
  /* The loop's clock may lag real time; refresh it so "ms from now"
   * means what it says. */
  uv_update_time(b->loop);
  uv_timer_start(&b->timer, on_timer, ms, 0);
}

/* ---- operations ------------------------------------------------------------
 */

void* weft__uv_op_new(weft_uv_t* b, size_t size, const weft__uv_ops_t* ops) {
  weft__uv_op_t* op = calloc(1, size);
  if (op == NULL)
    return NULL;
  op->ops = ops;
  op->bridge = b;
  op->heap_index = SIZE_MAX;
  atomic_init(&op->refs, 2);
  weft_counter_init(&op->done, 1);
  return op;
}

void weft__uv_op_release(weft__uv_op_t* op) {
  /* acq_rel: the last owner sees every write the other made before its
   * release; pairs with itself. */
  if (atomic_fetch_sub_explicit(&op->refs, 1, memory_order_acq_rel) == 1) {
    if (op->ops->free != NULL)
      op->ops->free(op);
    else
      free(op);
  }
}

static void pending_remove(weft_uv_t* b, weft__uv_op_t* op) {
  if (op->prev_pending != NULL)
    op->prev_pending->next_pending = op->next_pending;
  else if (b->pending == op)
    b->pending = op->next_pending;
  if (op->next_pending != NULL)
    op->next_pending->prev_pending = op->prev_pending;
  op->prev_pending = NULL;
  op->next_pending = NULL;
}

void weft__uv_op_finish(weft__uv_op_t* op, int64_t result) {
  weft_uv_t* b = op->bridge;

  if (op->state == WEFT__OP_FINISHED)
    return;
  op->state = WEFT__OP_FINISHED;
  op->result = result;
  pending_remove(b, op);
  heap_remove(&b->heap, op);
  if (op->fiber == NULL)
    return; /* nobody waits (an internal operation) */
  /* The woken fiber joins the batch the prepare and check handles publish.
   * Once the bridge is closing those handles are gone (bridge_close did the
   * last flush), so later results go straight to the workers. */
  if (b->batch.rt == NULL && !b->closing)
    weft__batch_open(&b->batch, b->rt);
  /* Release (inside the counter): the result is visible to the fiber. */
  weft_counter_add(&op->done, -1);
}

/* The waiter gives up: deliver `err` now and make the request end. */
static void op_abandon(weft__uv_op_t* op, int64_t err) {
  if (op->state == WEFT__OP_FINISHED)
    return;
  weft__uv_op_finish(op, err);
  if (op->ops->abort != NULL)
    op->ops->abort(op);
}

int weft__uv_current(weft_uv_t** out) {
  weft_runtime_t* rt = weft_runtime_self();
  if (rt == NULL || weft_worker_id() < 0)
    return UV_EPERM;
  if (rt->bridge == NULL)
    return UV_EINVAL;
  *out = rt->bridge;
  return 0;
}

weft_uv_t* weft_uv_self(void) {
  weft_runtime_t* rt = weft_runtime_self();
  return rt != NULL ? rt->bridge : NULL;
}

uv_loop_t* weft_uv_loop(weft_uv_t* b) {
  return b != NULL ? b->loop : NULL;
}

/* Posts op to the loop thread. Returns false if the bridge is stopped. */
bool weft__uv_op_post(weft_uv_t* b, weft__uv_op_t* op) {
  weft__uv_op_t* head;

  /* Announce ourselves before looking at the queue; weft_uv_stop closes
   * the queue, then waits for posters to leave before closing the async
   * handle, so our uv_async_send never touches a closed handle. seq_cst
   * pairs with stop's exchange of head and its loads of `posters`. */
  atomic_fetch_add_explicit(&b->posters, 1, memory_order_seq_cst);
  head = atomic_load_explicit(&b->head, memory_order_seq_cst);
  do {
    if (head == WEFT__UV_CLOSED) {
      atomic_fetch_sub_explicit(&b->posters, 1, memory_order_seq_cst);
      return false;
    }
    op->next = head;
    /* Release pairs with the loop's acquire exchange: it sees the op's
     * fields. */
  } while (!atomic_compare_exchange_weak_explicit(
      &b->head, &head, op, memory_order_release, memory_order_relaxed));
  /* Only the poster that found the queue empty may need to wake the loop:
   * a non-empty queue has not been drained yet (a drain empties it in one
   * exchange, and our CAS would then have failed), so whatever its first
   * poster arranged takes our op too. */
  if (head == NULL)
    weft__uv_wake(b);
  atomic_fetch_sub_explicit(&b->posters, 1, memory_order_seq_cst);
  return true;
}

void weft__uv_wake(weft_uv_t* b) {
  int polling;

  /* seq_cst fence, then `polling`: the Dekker pair of on_prepare's store
   * of `polling` and its loads of the queues. Either we see the loop about
   * to block and wake it, or it sees our push and does not block. A loop
   * that is awake drains the queues in its next prepare phase, so no
   * system call is needed then. The fence also serves libuv 1.44's
   * uv_async_send, which reads its pending flag before writing: a
   * concurrent drain either sees our push or lets the send through.
   * TSan does not model fences (gcc refuses them there): a seq_cst RMW on
   * `polling` stands in, which x86 orders the same way. */
#if WEFT__TSAN
  polling = atomic_fetch_add_explicit(&b->polling, 0, memory_order_seq_cst);
#else
  atomic_thread_fence(memory_order_seq_cst);
  polling = atomic_load_explicit(&b->polling, memory_order_relaxed);
#endif
  if (polling)
    uv_async_send(&b->async);
}

int weft__uv_op_await_begin(weft__uv_op_t* op, uint64_t deadline) {
  weft_uv_job_t self = weft_uv_job_self();

  op->deadline = deadline;
  op->fiber = self.fiber_;
  op->gen = self.gen_;
  if (!weft__uv_op_post(op->bridge, op)) {
    /* The loop never saw it: both references are ours. */
    atomic_store_explicit(&op->refs, 1, memory_order_relaxed);
    weft__uv_op_release(op);
    return UV_ECANCELED;
  }
  return 0;
}

int64_t weft__uv_op_await_end(weft__uv_op_t* op) {
  int64_t result;

  weft_counter_wait(&op->done, 0);
  result = op->result;
  weft__uv_op_release(op);
  return result;
}

int64_t weft__uv_op_await(weft__uv_op_t* op, uint64_t deadline) {
  int err = weft__uv_op_await_begin(op, deadline);
  return err != 0 ? err : weft__uv_op_await_end(op);
}

/* ---- the loop side ------------------------------------------------------- */

static void op_start(weft_uv_t* b, weft__uv_op_t* op) {
  op->state = WEFT__OP_STARTED;
  if (b->closing && op->fiber != NULL) {
    /* Stopping (bridge_close may run in the middle of on_async's list):
     * a waiter's operation never starts; it gets UV_ECANCELED, as if
     * started and abandoned. Internal operations still run. */
    weft__uv_op_finish(op, UV_ECANCELED);
    weft__uv_op_release(op);
    return;
  }
  if (op->fiber != NULL) {
    op->next_pending = b->pending;
    op->prev_pending = NULL;
    if (b->pending != NULL)
      b->pending->prev_pending = op;
    b->pending = op;
  }
  if (op->deadline != 0) {
    if (op->deadline <= uv_hrtime()) {
      /* Already late: never start it. */
      weft__uv_op_finish(op, UV_ETIMEDOUT);
      weft__uv_op_release(op);
      return;
    }
    if (heap_push(&b->heap, op) != 0) {
      weft__uv_op_finish(op, UV_ENOMEM);
      weft__uv_op_release(op);
      return;
    }
  }
  op->ops->start(op, b->loop);
}

/* Takes everything posted so far, oldest first. */
static weft__uv_op_t* drain(weft_uv_t* b, weft__uv_op_t* replace) {
  weft__uv_op_t* list;
  weft__uv_op_t* fifo = NULL;

  /* Acquire pairs with the posters' release CAS. seq_cst for the closing
   * exchange: with the later load of `posters` it forms the Dekker pair
   * with a poster's increment of `posters` and its load of head
   * (weft__uv_op_post, weft__uv_submit_done): one of the two sees the other. */
  /* Only this thread writes WEFT__UV_CLOSED: a relaxed look is exact, and
   * a closed queue must stay closed. */
  if (atomic_load_explicit(&b->head, memory_order_relaxed) == WEFT__UV_CLOSED)
    return NULL;
  list = atomic_exchange_explicit(&b->head, replace, memory_order_seq_cst);
  while (list != NULL) {
    weft__uv_op_t* next = list->next;
    list->next = fifo;
    fifo = list;
    list = next;
  }
  return fifo;
}

/* Starts every posted op and reports every finished submission. */
static void run_posted(weft_uv_t* b) {
  weft__uv_op_t* op = drain(b, NULL);

  while (op != NULL) {
    weft__uv_op_t* next = op->next;
    op_start(b, op);
    op = next;
  }
  if (!b->closing)
    timer_arm(b);
  weft__uv_submit_drain(b);
}

static void on_async(uv_async_t* handle) {
  run_posted(handle->data);
}

static void on_timer(uv_timer_t* handle) {
  weft_uv_t* b = handle->data;
  uint64_t now = uv_hrtime();

  while (b->heap.n > 0 && b->heap.v[0]->deadline <= now)
    op_abandon(b->heap.v[0], UV_ETIMEDOUT);
  timer_arm(b);
}

/* Publishes the fibers made ready since the last flush. Runs in the check
 * phase (after I/O callbacks) and the prepare phase (after timers and close
 * callbacks, before the loop blocks in poll): no completion waits for the
 * next poll to return. */
static void batch_flush(weft_uv_t* b) {
  if (b->batch.rt != NULL)
    weft__batch_close(&b->batch);
  b->batch.rt = NULL;
}

static void on_check(uv_check_t* handle) {
  weft_uv_t* b = handle->data;
  /* Awake again: posters leave their ops for the next prepare phase.
   * Relaxed: a poster that still reads 1 only sends a needless wake-up;
   * the store of 1 in on_prepare is the one that must not be missed. */
  atomic_store_explicit(&b->polling, 0, memory_order_relaxed);
  batch_flush(b);
}

/* Before the loop may block in poll: take what was posted while it was
 * awake (posters did not wake it), publish the ready fibers, then declare
 * that posters must wake it from now on. */
static void on_prepare(uv_prepare_t* handle) {
  weft_uv_t* b = handle->data;

  run_posted(b);
  batch_flush(b);
  if (b->closing)
    return; /* an after_cb stopped the bridge */
  /* seq_cst store, then seq_cst loads of the queues: the Dekker pair of
   * weft__uv_wake. An op pushed before our store became visible makes us
   * wake ourselves instead of blocking on it. */
  atomic_store_explicit(&b->polling, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&b->head, memory_order_seq_cst) != NULL ||
      weft__uv_submit_posted(b))
    uv_async_send(&b->async);
}

/* ---- cancellation
 * ------------------------------------------------------------ */

weft_uv_job_t weft_uv_job_self(void) {
  weft__worker_t* w = weft__worker_current();
  weft_uv_job_t j = {NULL, 0};
  if (w != NULL && w->current != NULL) {
    j.fiber_ = w->current;
    j.gen_ = w->current->gen;
  }
  return j;
}

typedef struct {
  weft__uv_op_t op;
  weft_uv_job_t target;
} cancel_op_t;

static void cancel_start(weft__uv_op_t* op, uv_loop_t* loop) {
  cancel_op_t* c = (cancel_op_t*)op;
  weft__uv_op_t* p;
  (void)loop;

  for (p = op->bridge->pending; p != NULL; p = p->next_pending) {
    if (p->fiber == c->target.fiber_ && p->gen == c->target.gen_) {
      op_abandon(p, UV_ECANCELED);
      break;
    }
  }
  weft__uv_op_finish(op, 0);
  weft__uv_op_release(op);
}

static const weft__uv_ops_t cancel_ops = {.start = cancel_start};

int weft_uv_cancel(weft_uv_t* b, weft_uv_job_t job) {
  cancel_op_t* c;
  if (b == NULL || job.fiber_ == NULL)
    return UV_EINVAL;
  c = weft__uv_op_new(b, sizeof(*c), &cancel_ops);
  if (c == NULL)
    return UV_ENOMEM;
  c->target = job;
  /* Nobody waits on a cancel request: one reference, the loop's. */
  atomic_store_explicit(&c->op.refs, 1, memory_order_relaxed);
  if (!weft__uv_op_post(b, &c->op))
    free(c);
  return 0;
}

/* ---- resources ---------------------------------------------------------- */

void weft__uv_resource_add(weft_uv_t* b, weft__uv_resource_t* res) {
  res->prev = NULL;
  res->next = b->resources;
  if (b->resources != NULL)
    b->resources->prev = res;
  b->resources = res;
}

void weft__uv_resource_remove(weft_uv_t* b, weft__uv_resource_t* res) {
  if (res->prev != NULL)
    res->prev->next = res->next;
  else if (b->resources == res)
    b->resources = res->next;
  if (res->next != NULL)
    res->next->prev = res->prev;
  res->next = NULL;
  res->prev = NULL;
}

void weft__uv_resources_close(weft_uv_t* b) {
  while (b->resources != NULL) {
    weft__uv_resource_t* res = b->resources;
    weft__uv_resource_remove(b, res);
    res->close(res);
  }
}

/* ---- stopping --------------------------------------------------------------
 */

static void on_handle_closed(uv_handle_t* handle) {
  weft_uv_t* b = handle->data;
  b->open_handles--;
}

/* Loop thread: cancel everything and close the bridge's handles. */
static void bridge_close(weft_uv_t* b) {
  weft__uv_op_t* op;

  if (b->closing)
    return;
  b->closing = 1;
  /* Close the queue; then wait until no poster is between its check of
   * the queue and its uv_async_send (see op_post). */
  op = drain(b, WEFT__UV_CLOSED);
  while (atomic_load_explicit(&b->posters, memory_order_seq_cst) != 0)
    uv_sleep(0);
  /* Posted but never started: run them so that cancels, submits and
   * waiters all settle, then abandon everything pending. */
  while (op != NULL) {
    weft__uv_op_t* next = op->next;
    op_start(b, op);
    op = next;
  }
  while (b->pending != NULL)
    op_abandon(b->pending, UV_ECANCELED);
  weft__uv_resources_close(b);
  weft__uv_submit_close(b);
  batch_flush(b);
  uv_close((uv_handle_t*)&b->async, on_handle_closed);
  uv_close((uv_handle_t*)&b->timer, on_handle_closed);
  uv_close((uv_handle_t*)&b->check, on_handle_closed);
  uv_close((uv_handle_t*)&b->prepare, on_handle_closed);
}

static void stop_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft_uv_t* b = op->bridge;
  (void)loop;
  weft__uv_op_release(op);
  bridge_close(b);
}

static const weft__uv_ops_t stop_ops = {.start = stop_start};

static void loop_thread(void* arg) {
  weft_uv_t* b = arg;
  uv_run(b->loop, UV_RUN_DEFAULT);
  /* Every handle is closed (the async handle was the last ref'd one). */
  uv_loop_close(b->loop);
}

int weft_uv_stop(weft_uv_t* b) {
  weft__uv_op_t* op;
  uv_thread_t self = uv_thread_self();

  if (b == NULL)
    return UV_EINVAL;
  if (atomic_exchange_explicit(&b->stopped, 1, memory_order_acq_rel))
    return 0;
  if (!b->owned) {
    if (!uv_thread_equal(&self, &b->loop_thread_id)) {
      atomic_store_explicit(&b->stopped, 0, memory_order_release);
      return UV_EINVAL;
    }
    bridge_close(b);
    return 0;
  }
  if (uv_thread_equal(&self, &b->loop_thread_id)) {
    atomic_store_explicit(&b->stopped, 0, memory_order_release);
    return UV_EINVAL;
  }
  /* Ask the loop thread to close down; it may already have (CLOSED). */
  op = weft__uv_op_new(b, sizeof(*op), &stop_ops);
  if (op == NULL) {
    atomic_store_explicit(&b->stopped, 0, memory_order_release);
    return UV_ENOMEM;
  }
  atomic_store_explicit(&op->refs, 1, memory_order_relaxed);
  if (!weft__uv_op_post(b, op))
    free(op);
  uv_thread_join(&b->thread);
  return 0;
}

/* Runtime destroy, first step: stop (owned mode). */
static void bridge_stop(void* arg) {
  weft_uv_t* b = arg;
  if (b->owned)
    weft_uv_stop(b);
}

/* Runtime destroy, last step: every worker is gone. */
static void bridge_free(void* arg) {
  weft_uv_t* b = arg;

  b->rt->bridge = NULL;
  if (!b->owned && (!atomic_load_explicit(&b->stopped, memory_order_acquire) ||
                    b->open_handles != 0)) {
    /* Embedded and still attached: its handles live in the host's loop,
     * which only the host's thread may touch. Leave the memory to them. */
    fprintf(stderr,
            "weft: runtime destroyed with its libuv bridge still attached; "
            "call weft_uv_stop on the loop thread first (bridge leaked)\n");
    return;
  }
  weft__uv_submit_free(b);
  free(b->heap.v);
  free(b);
}

/* ---- starting
 * ----------------------------------------------------------------- */

static int bridge_new(weft_runtime_t* rt, weft_uv_t** out) {
  weft_uv_t* b;

  if (rt == NULL || rt->bridge != NULL)
    return UV_EINVAL;
  if (posix_memalign((void**)&b, WEFT__CACHE_LINE, sizeof(*b)) != 0)
    return UV_ENOMEM;
  memset(b, 0, sizeof(*b));
  b->rt = rt;
  atomic_init(&b->head, NULL);
  atomic_init(&b->posters, 0);
  atomic_init(&b->polling, 1); /* wake the loop until it shows it is up */
  atomic_init(&b->stopped, 0);
  *out = b;
  return 0;
}

/* A write to a peer that has gone raises SIGPIPE, whose default action
 * kills the process; fibers should get UV_EPIPE instead. Ignore it unless
 * the program chose its own handler. */
static void sigpipe_ignore(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO)) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* On the loop's thread (or before its thread starts). */
static int handles_init(weft_uv_t* b) {
  int err;

  sigpipe_ignore();
  err = uv_async_init(b->loop, &b->async, on_async);
  if (err != 0)
    return err;
  b->async.data = b;
  uv_timer_init(b->loop, &b->timer);
  b->timer.data = b;
  uv_check_init(b->loop, &b->check);
  b->check.data = b;
  uv_check_start(&b->check, on_check);
  uv_prepare_init(b->loop, &b->prepare);
  b->prepare.data = b;
  uv_prepare_start(&b->prepare, on_prepare);
  b->open_handles = 4;
  /* The timer and the check never keep a loop alive; the async handle
   * keeps our own loop running until weft_uv_stop closes it. */
  uv_unref((uv_handle_t*)&b->timer);
  uv_unref((uv_handle_t*)&b->check);
  uv_unref((uv_handle_t*)&b->prepare);
  if (!b->owned)
    uv_unref((uv_handle_t*)&b->async);
  return 0;
}

static void publish(weft_uv_t* b) {
  b->rt->bridge = b;
  b->rt->bridge_stop = bridge_stop;
  b->rt->bridge_free = bridge_free;
  b->rt->embedded_done = weft__uv_submit_done;
}

int weft_uv_start(weft_runtime_t* rt, weft_uv_t** out) {
  weft_uv_t* b;
  int err;

  if (out == NULL)
    return UV_EINVAL;
  err = bridge_new(rt, &b);
  if (err != 0)
    return err;
  b->owned = true;
  b->loop = &b->own_loop;
  err = uv_loop_init(b->loop);
  if (err != 0) {
    free(b);
    return err;
  }
  err = handles_init(b);
  if (err == 0)
    err = uv_thread_create(&b->thread, loop_thread, b);
  if (err != 0) {
    if (b->open_handles != 0) {
      uv_close((uv_handle_t*)&b->async, NULL);
      uv_close((uv_handle_t*)&b->timer, NULL);
      uv_close((uv_handle_t*)&b->check, NULL);
      uv_close((uv_handle_t*)&b->prepare, NULL);
      uv_run(b->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(b->loop);
    free(b);
    return err;
  }
  b->loop_thread_id = b->thread;
  publish(b);
  *out = b;
  return 0;
}

int weft_uv_attach(weft_runtime_t* rt, uv_loop_t* loop, weft_uv_t** out) {
  weft_uv_t* b;
  int err;

  if (loop == NULL || out == NULL)
    return UV_EINVAL;
  err = bridge_new(rt, &b);
  if (err != 0)
    return err;
  b->owned = false;
  b->loop = loop;
  b->loop_thread_id = uv_thread_self();
  err = handles_init(b);
  if (err != 0) {
    free(b);
    return err;
  }
  publish(b);
  *out = b;
  return 0;
}
