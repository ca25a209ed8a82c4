/* fiber.c: fibers, their pools and the switches between them.
 *
 * A fiber runs the scheduling loop and, inside it, jobs. A job that returns
 * without waiting costs no switch at all. A job that waits suspends its
 * fiber: the worker switches to a pooled fiber that goes on scheduling. The
 * fiber being left is still on its stack during the switch, so whatever must
 * happen to it (register it as a waiter, queue it again, pool it) is a
 * "post-switch" action run by the fiber switched to, once the switch is
 * complete: no other worker can resume a fiber that has not switched out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifdef NDEBUG
void weft__fiber_set(weft__fiber_t* f, int from, int to) {
  (void)from;
  /* Relaxed: the state documents and checks the protocol; the hand-offs
   * themselves are ordered by the queues and the waiter lists. */
  atomic_store_explicit(&f->state, to, memory_order_relaxed);
}
#else
void weft__fiber_set(weft__fiber_t* f, int from, int to) {
  int old = atomic_exchange_explicit(&f->state, to, memory_order_relaxed);
  if (old != from) {
    fprintf(stderr, "weft: fiber %u in state %d, expected %d (to %d)\n", f->id,
            old, from, to);
    abort();
  }
}
#endif


/* Puts a stack of worker w's on w's NUMA node: bound where hwloc binds
 * memory (from any thread: the policy belongs to the mapping), and
 * prefaulted only on w's own thread (`own`), which is pinned there, so
 * that it is the first toucher. */
static bool stack_bind(const weft__plan_t* plan, weft__stack_t* s,
                       unsigned worker) {
  return !s->bound && plan->bind && plan->pu_os_index != NULL &&
         weft__stack_bind(s, plan->pu_os_index[worker]) > 0;
}

static bool stack_localize(weft__worker_t* w, weft__stack_t* s, bool own) {
  weft_runtime_t* rt = w->rt;
  bool bound = stack_bind(weft__runtime_plan(rt), s, w->index);

  if (own)
    weft__stack_prefault(s, (int)rt->cfg.stack_prefault);
  return bound; /* newly bound: the caller counts it */
}

/* A fiber for worker w. Called on w's thread, or (w's first fiber) by the
 * thread starting the runtime: then w localizes it when it starts. */
static weft__fiber_t* fiber_create(weft__worker_t* w) {
  weft_runtime_t* rt = w->rt;
  weft__fiber_t* f = aligned_alloc(WEFT__CACHE_LINE, sizeof(*f));
  weft__plan_t* placed;
  bool bound;

  if (f == NULL)
    return NULL;
  memset(f, 0, sizeof(*f));
  if (weft__stack_alloc(&f->stack, rt->cfg.stack_size, rt->cfg.huge_stacks) !=
      0) {
    free(f);
    return NULL;
  }
  /* Before the context set-up writes the top page, so that the page goes
   * where the binding says. */
  placed = atomic_load_explicit(&rt->placed, memory_order_acquire);
  bound = stack_localize(w, &f->stack, weft__worker_current() == w);
  if (weft__ctx_init(&f->ctx, f->stack.lo, f->stack.size, weft__fiber_entry) !=
      0) {
    weft__stack_free(&f->stack);
    free(f);
    return NULL;
  }
  switch (f->stack.backing) {
    case WEFT__STACK_HUGETLB:
      weft__stat_bump(&w->stats.stacks_hugetlb);
      break;
    case WEFT__STACK_THP:
      weft__stat_bump(&w->stats.stacks_thp);
      break;
    default:
      weft__stat_bump(&w->stats.stacks_normal);
      break;
  }
  f->task.kind = WEFT__TASK_FIBER;
  f->task.pin = -1;
  f->task.prio = WEFT_PRIORITY_NORMAL;
  f->rt = rt;
  f->home = w->index;
  atomic_init(&f->state, WEFT__FIBER_FREE);
  weft__spin_lock(&rt->fibers_lock);
  f->id = (uint32_t)atomic_fetch_add_explicit(&rt->fibers_created, 1,
                                              memory_order_relaxed);
  f->all_next = rt->all_fibers;
  rt->all_fibers = f;
  /* A placement published after we looked: the placer publishes before it
   * walks the fibers under this lock, so it either finds this one in the
   * list or left it to us (acquire, as in weft__runtime_plan). */
  if (placed == NULL && (placed = atomic_load_explicit(
                             &rt->placed, memory_order_acquire)) != NULL)
    bound = stack_bind(placed, &f->stack, w->index) || bound;
  weft__spin_unlock(&rt->fibers_lock);
  if (bound)
    weft__stat_bump(&w->stats.stacks_bound);
  return f;
}

unsigned weft__fiber_bind_all(weft_runtime_t* rt, const weft__plan_t* plan) {
  weft__fiber_t* f;
  unsigned n = 0;

  /* One stack per hold of the lock: a bind is an mbind that may migrate
   * pages (tens to hundreds of microseconds), and workers making or pooling
   * fibers wait on this lock. Walking on without it is safe: the list only
   * grows at its head (fibers made after the plan was published bind
   * themselves, see fiber_create) and nothing leaves it before destroy,
   * which waits for us. */
  weft__spin_lock(&rt->fibers_lock);
  f = rt->all_fibers;
  while (f != NULL) {
    weft__fiber_t* next;
    n += stack_bind(plan, &f->stack, f->home);
    next = f->all_next;
    weft__spin_unlock(&rt->fibers_lock);
    weft__spin_lock(&rt->fibers_lock);
    f = next;
  }
  weft__spin_unlock(&rt->fibers_lock);
  return n;
}

weft__fiber_t* weft__fiber_get(weft__worker_t* w) {
  weft_runtime_t* rt = w->rt;
  weft__fiber_t* f = w->pool;

  if (f != NULL) {
    w->pool = f->pool_next;
    w->npool--;
  } else if (atomic_load_explicit(&rt->shared_pool, memory_order_relaxed) !=
             NULL) {
    /* The unlocked load is a hint; the lock hands the fiber over. */
    weft__spin_lock(&rt->fibers_lock);
    f = atomic_load_explicit(&rt->shared_pool, memory_order_relaxed);
    if (f != NULL) {
      atomic_store_explicit(&rt->shared_pool, f->pool_next,
                            memory_order_relaxed);
      rt->nshared--;
    }
    weft__spin_unlock(&rt->fibers_lock);
  }
  if (f == NULL)
    f = fiber_create(w);
  if (f != NULL) {
    weft__fiber_set(f, WEFT__FIBER_FREE, WEFT__FIBER_RUNNING);
    atomic_store_explicit(&w->stats.fibers_in_pool, w->npool,
                          memory_order_relaxed);
  }
  return f;
}

/* Called only after f has switched out (post-switch), on the worker that
 * now runs: f's next user switches to it, so it must be fully off its
 * stack before it is visible in the shared pool. */
void weft__fiber_release(weft__worker_t* w, weft__fiber_t* f) {
  weft_runtime_t* rt = w->rt;

  weft__fiber_set(f, WEFT__FIBER_SUSPENDING, WEFT__FIBER_FREE);
  if (w->npool < rt->cfg.fibers_per_worker) {
    f->pool_next = w->pool;
    w->pool = f;
    w->npool++;
    atomic_store_explicit(&w->stats.fibers_in_pool, w->npool,
                          memory_order_relaxed);
    return;
  }
  weft__spin_lock(&rt->fibers_lock);
  f->pool_next = atomic_load_explicit(&rt->shared_pool, memory_order_relaxed);
  atomic_store_explicit(&rt->shared_pool, f, memory_order_relaxed);
  rt->nshared++;
  weft__spin_unlock(&rt->fibers_lock);
}

void weft__fiber_destroy_all(weft_runtime_t* rt) {
  weft__fiber_t* f = rt->all_fibers;
  while (f != NULL) {
    weft__fiber_t* next = f->all_next;
    weft__ctx_destroy(&f->ctx);
    weft__stack_free(&f->stack);
    free(f);
    f = next;
  }
  rt->all_fibers = NULL;
  atomic_store_explicit(&rt->shared_pool, NULL, memory_order_relaxed);
  rt->nshared = 0;
}

void weft__fiber_post(void* arg) {
  weft__post_t* post = arg;
  weft__worker_t* w;
  weft__fiber_t* f;
  weft__counter_t* c;
  bool bound;

  if (post == NULL)
    return;
  w = weft__worker_current();
  f = post->fiber;
  switch (post->op) {
    case WEFT__POST_WAIT:
      /* `post` lives on f's stack: once f is on the waiter list it may be
       * resumed elsewhere and its stack reused, so read it first. */
      c = post->counter;
      f->waiter.target = post->target;
      f->waiter.fiber = f;
      weft__fiber_set(f, WEFT__FIBER_SUSPENDING, WEFT__FIBER_WAITING);
      if (!weft__counter_enqueue(c, &f->waiter)) {
        weft__fiber_set(f, WEFT__FIBER_WAITING, WEFT__FIBER_READY);
        weft__worker_ready(w->rt, w, &f->task);
      }
      break;
    case WEFT__POST_YIELD:
      weft__fiber_set(f, WEFT__FIBER_SUSPENDING, WEFT__FIBER_READY);
      if (f->task.pin >= 0) {
        /* A pinned job stays on its worker (this one): behind what its
         * mailbox holds, and nobody else needs waking. */
        weft__inject_push(&w->rt->workers[f->task.pin].mailbox, &f->task,
                          &f->task, 1, f->task.prio);
        break;
      }
      /* Behind everything queued from outside: a yield lets others run. */
      weft__inject_push(&w->rt->inject, &f->task, &f->task, 1, f->task.prio);
      weft__idle_notify(w->rt);
      break;
    case WEFT__POST_RELEASE:
      weft__fiber_release(w, f);
      break;
    case WEFT__POST_START:
      /* The worker's first fiber, made before its thread ran: the thread
       * is now pinned, and this fiber runs on the stack it localizes.
       * Under the lock: the placer may be binding it right now. */
      weft__spin_lock(&w->rt->fibers_lock);
      f = w->current;
      bound = stack_localize(w, &f->stack, false);
      weft__spin_unlock(&w->rt->fibers_lock);
      if (bound)
        weft__stat_bump(&w->stats.stacks_bound);
      weft__stack_prefault(&f->stack, (int)w->rt->cfg.stack_prefault);
      break;
    default:
      break;
  }
}

static void count_switch(weft__worker_t* w) {
  weft__stat_bump(&w->stats.fiber_switches);
}

void weft__fiber_suspend(weft__worker_t* w, weft__post_t* post) {
  weft__fiber_t* self = w->current;
  weft__fiber_t* next;
  void* arg;

  next = weft__fiber_get(w);
  if (next == NULL) {
    /* No fiber to switch to (out of memory): degrade to blocking this
     * worker's thread for a counter, and to a no-op for a yield. */
    if (post->op == WEFT__POST_WAIT) {
      weft_counter_t* c = (weft_counter_t*)(void*)post->counter;
      /* Our range and deque must not wait for us: the range goes where
       * every worker sees it, and the fenced notify makes sure a sleeper
       * sees it and our deque (our pushes' looks had no fence). With one
       * worker nobody can: the wait may then never end. */
      if (self->range != NULL)
        weft__range_give_away(w, self, true);
      weft__idle_notify(w->rt);
      w->current = NULL;
      weft_counter_wait(c, post->target);
      w = weft__worker_current();
      w->current = self;
    }
    return;
  }
  /* Batch jobs this fiber's range holds must not wait for it. */
  if (self->range != NULL)
    weft__range_give_away(w, self, false);
  weft__fiber_set(self, WEFT__FIBER_RUNNING, WEFT__FIBER_SUSPENDING);
  w->current = next;
  count_switch(w);
  arg = weft__ctx_switch(&self->ctx, &next->ctx, post);
  /* Resumed, maybe on another worker: whoever switched to us set
   * w->current; the worker must be re-read by our callers. */
  weft__fiber_post(arg);
}

void weft__fiber_resume(weft__worker_t* w, weft__fiber_t* f) {
  weft__fiber_t* self = w->current;
  weft__post_t post;
  void* arg;

  post.op = WEFT__POST_RELEASE;
  post.fiber = self;
  weft__fiber_set(self, WEFT__FIBER_RUNNING, WEFT__FIBER_SUSPENDING);
  weft__fiber_set(f, WEFT__FIBER_READY, WEFT__FIBER_RUNNING);
  w->current = f;
  count_switch(w);
  arg = weft__ctx_switch(&self->ctx, &f->ctx, &post);
  weft__fiber_post(arg);
}

void weft__fiber_entry(void* arg) {
  weft__fiber_post(arg);
  weft__worker_loop();
  fprintf(stderr, "weft: worker loop returned\n");
  abort();
}

/* ---- the fiber-level API ----------------------------------------------- */

/* The fiber running the caller, or NULL on a plain thread. */
static weft__fiber_t* self_fiber(void) {
  weft__worker_t* w = weft__worker_current();
  return w != NULL ? w->current : NULL;
}

int weft_yield(void) {
  weft__worker_t* w = weft__worker_current();
  weft__post_t post;

  if (w == NULL || w->current == NULL)
    return -EPERM;
  post.op = WEFT__POST_YIELD;
  post.fiber = w->current;
  weft__fiber_suspend(w, &post);
  return 0;
}

int weft_worker_id(void) {
  weft__worker_t* w = weft__worker_current();
  return w != NULL ? (int)w->index : -EPERM;
}

int weft_fls_set(unsigned slot, void* value) {
  weft__fiber_t* f = self_fiber();
  if (f == NULL)
    return -EPERM;
  if (slot >= WEFT_FLS_SLOTS)
    return -EINVAL;
  f->fls[slot] = value;
  f->fls_used = 1;
  return 0;
}

int weft_fls_get(unsigned slot, void** value) {
  weft__fiber_t* f = self_fiber();
  if (f == NULL)
    return -EPERM;
  if (slot >= WEFT_FLS_SLOTS || value == NULL)
    return -EINVAL;
  *value = f->fls[slot];
  return 0;
}
