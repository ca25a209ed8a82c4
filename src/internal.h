/* internal.h: the core's private declarations, one section per source file
 * (libuv's habit). Never installed.
 *
 * Threads: workers run a scheduling loop on pooled fibers; plain threads may
 * spawn and block on counters. See docs/design.md for the whole picture.
 */
#ifndef WEFT_INTERNAL_H_
#define WEFT_INTERNAL_H_

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h> /* __rdtsc */
#endif

#include "weft.h"
#include "context.h"
#include "deque.h"

#define WEFT__CACHE_LINE 64
#define WEFT__ALIGNED _Alignas(WEFT__CACHE_LINE)
#define WEFT__NOINLINE __attribute__((noinline))
#define WEFT__LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT__NPRIO 3

#if defined(__x86_64__) || defined(__i386__)
#define weft__cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define weft__cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define weft__cpu_relax() ((void)0)
#endif

/* Whether the CPU has PREFETCHW (set once, before the first runtime's
 * workers start: runtime.c). */
extern bool weft__has_prefetchw;

/* Brings p's line into our cache for writing, invalidating other copies
 * early: a hint, for lines another core last touched. */
static inline void weft__prefetch_w(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  /* Not __builtin_prefetch(p, 1): without -mprfchw it is a read prefetch,
   * which leaves the line shared (no gain measured). Older CPUs may lack
   * the instruction, hence the check. */
  if (weft__has_prefetchw)
    __asm__ __volatile__("prefetchw %0" ::"m"(*(const char*)p));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

typedef struct weft__worker_s weft__worker_t;
typedef struct weft__fiber_s weft__fiber_t;
typedef struct weft__plan_s weft__plan_t;

/* ---- task: the common head of everything a queue holds ---------------- */

enum {
  WEFT__TASK_JOB = 1,
  WEFT__TASK_FIBER = 2,
  WEFT__TASK_RANGE = 3,
  WEFT__TASK_OFFER = 4 /* only ever in a worker's offer slot */
};

/* Queues hold tasks: new jobs and ready fibers share them. `next` links a
 * task into the injection queue, a mailbox or a free list. */
typedef struct weft__task_s {
  struct weft__task_s* next;
  uint8_t kind;
  uint8_t prio;
  int16_t pin; /* worker index, or -1 */
} weft__task_t;

/* A FIFO of tasks linked through `next`, guarded by the owner's lock. */
typedef struct weft__tlist_s {
  weft__task_t* head;
  weft__task_t* tail;
} weft__tlist_t;

/* CLOCK_MONOTONIC in nanoseconds (a vDSO call, ~20 ns here). */
static inline uint64_t weft__clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- clock.c: short spans on the TSC ----------------------------------- */

/* Whether the CPU has an invariant TSC (runtime.c's CPUID, once). */
extern bool weft__has_tsc;
/* ns per TSC tick, or 0: time this span with weft__clock_ns. Read once
 * per span; both ends of a span then use the same clock. */
double weft__tsc_ns_get(void);
/* A span's end or start on the clock weft__tsc_ns_get chose. */
static inline uint64_t weft__span_now(double tsc_ns) {
#if defined(__x86_64__) || defined(__i386__)
  if (tsc_ns > 0.0)
    return __rdtsc();
#endif
  (void)tsc_ns;
  return weft__clock_ns();
}
/* The span from..to in ns. A fiber that moved between the reads may see
 * another CPU's TSC a little behind: no span, not a huge one. */
static inline double weft__span_ns(uint64_t from, uint64_t to, double tsc_ns) {
  if (to <= from)
    return 0.0;
  return tsc_ns > 0.0 ? (double)(to - from) * tsc_ns : (double)(to - from);
}

/* ---- lock.c: a small spinlock for short critical sections ------------- */

typedef struct weft__spin_s {
  atomic_int locked;
} weft__spin_t;

void weft__spin_lock(weft__spin_t* s);
static inline void weft__spin_unlock(weft__spin_t* s) {
  /* Release pairs with the acquire exchange in weft__spin_lock: the next
   * holder sees every write made inside the critical section. */
  atomic_store_explicit(&s->locked, 0, memory_order_release);
}

/* ---- job.c: job records and their per-worker allocator ---------------- */

typedef struct weft__counter_s weft__counter_t;

typedef struct weft__job_s {
  weft__task_t task;
  weft_job_cb fn;
  void* arg;
  weft__counter_t* counter;
  int32_t owner; /* 0: from the runtime's slabs, or one of: */
  uint32_t aux;  /* the embedder's (the bridge keeps its submit state) */
} weft__job_t;

#define WEFT__JOB_MALLOC (-1)   /* malloc'd by a plain thread */
#define WEFT__JOB_EMBEDDED (-2) /* inside a caller's record, never freed */

/* Submits a job record the caller embeds in its own memory (the bridge's
 * submit records), from a thread that is not one of rt's workers: no
 * allocation. When fn returns, the worker hands the record to
 * rt->embedded_done, which owns it from then on; until then it must stay
 * valid and its task, fn, arg, counter and owner fields untouched. */
int weft__spawn_embedded(weft_runtime_t* rt, weft__job_t* j, weft_job_cb fn,
                         void* arg);
/* weft_spawn for a piece of a parallel loop (parallel.c): never into a
 * spawn stream, whose thieves wait for a run of jobs, where a loop's few
 * halves should go at once. */
int weft__spawn_piece(weft_runtime_t* rt, weft_job_cb fn, void* arg,
                      weft_counter_t* counter);

/* A worker's free job records (owner only). */
typedef struct weft__jobpool_s {
  weft__task_t* local;
  unsigned nlocal;
} weft__jobpool_t;

weft__job_t* weft__job_alloc(weft__worker_t* w);
void weft__job_free(weft_runtime_t* rt, weft__worker_t* w, weft__job_t* j);
void weft__job_destroy_all(weft_runtime_t* rt);

/* ---- stack.c: guarded fiber stacks and the overflow reporter ---------- */

/* What backs a stack's pages. */
enum { WEFT__STACK_NORMAL = 0, WEFT__STACK_THP, WEFT__STACK_HUGETLB };

typedef struct weft__stack_s {
  char* map; /* whole mapping, guard included */
  size_t map_size;
  char* lo;        /* lowest usable byte (just above the guard) */
  size_t size;     /* usable bytes */
  uint8_t backing; /* WEFT__STACK_* */
  bool bound;      /* memory-bound to a NUMA node set */
} weft__stack_t;

/* Maps a stack of at least `size` usable bytes; `huge` asks for huge pages
 * (hugetlb, else THP, else normal: s->backing says which). */
int weft__stack_alloc(weft__stack_t* s, size_t size, int huge);
void weft__stack_free(weft__stack_t* s);
size_t weft__stack_guard_size(void);
/* Binds the stack's memory to the NUMA nodes local to the PU with OS index
 * `pu`, moving pages already touched. Returns 1 (bound), 0 (hwloc cannot
 * bind memory here) or a negative errno. Any thread. */
int weft__stack_bind(weft__stack_t* s, int pu);
/* Faults in the stack's pages as `mode` (weft_stack_prefault_t) says,
 * keeping their contents. On the thread that should first touch them. */
void weft__stack_prefault(weft__stack_t* s, int mode);
/* Installs the process-wide SIGSEGV reporter (once). */
int weft__stack_install_handler(void);
/* Gives the calling thread an alternate signal stack; the saved old one is
 * restored by weft__stack_thread_exit. */
typedef struct weft__altstack_s {
  void* mem;
  size_t size;
  int installed;
} weft__altstack_t;
int weft__stack_thread_init(weft__altstack_t* a);
void weft__stack_thread_exit(weft__altstack_t* a);

/* ---- counter.c --------------------------------------------------------- */

/* A waiter parked on a counter: a suspended fiber or a blocked thread. It
 * is on the counter's list only while the counter's lock says so. */
typedef struct weft__waiter_s {
  struct weft__waiter_s* next;
  int64_t target;
  weft__fiber_t* fiber; /* NULL: a thread, woken through `futex` */
  atomic_uint futex;
} weft__waiter_t;

/* The counter's state is one word, so that a decrement learns from its own
 * atomic operation whether anyone waits, and registers itself as a waker in
 * that same operation: bits 0-15 count wakers in flight, bit 16 says the
 * waiter list is not empty, bits 17-63 hold the signed value. A waiter
 * returns only when no waker is in flight, so a counter on a stack may
 * vanish as soon as a wait on it returns. */
struct weft__counter_s {
  atomic_llong state;
  _Atomic(weft__waiter_t*) waiters; /* under lock */
  weft__spin_t lock;
};

#define WEFT__CTR_WAKERS_MASK ((int64_t)0xffff)
#define WEFT__CTR_WAITERS ((int64_t)1 << 16)
#define WEFT__CTR_ONE ((int64_t)1 << 17)
#define WEFT__CTR_MAX (((int64_t)1 << 46) - 1)

/* Adds n to the counter's value (the job path: n = 1 at spawn). */
static inline void weft__counter_inc(weft__counter_t* c, int64_t n) {
  /* Relaxed: the increment is sequenced before the job's publication,
   * whose release orders it before the job's decrement. */
  atomic_fetch_add_explicit(&c->state, n * WEFT__CTR_ONE, memory_order_relaxed);
}

_Static_assert(sizeof(weft__counter_t) <= sizeof(weft_counter_t),
               "weft_counter_t too small");
_Static_assert(_Alignof(weft__counter_t) <= _Alignof(weft_counter_t),
               "weft_counter_t misaligned");

/* Subtracts n; returns the CAS attempts it took (for the statistics). */
int weft__counter_sub(weft__counter_t* c, int64_t n);
bool weft__counter_above(weft__counter_t* c, int64_t target);
/* Registers a suspended fiber's waiter (post-switch). Returns false when
 * the target was already reached: the caller must make the fiber ready. */
bool weft__counter_enqueue(weft__counter_t* c, weft__waiter_t* wt);

/* ---- fiber.c ----------------------------------------------------------- */

/* Fiber states, by where the fiber lives in each:
 *   FREE       in a pool (a worker's or the shared one), not running;
 *   RUNNING    on exactly one worker;
 *   SUSPENDING switched out, its post-switch action not yet done;
 *   WAITING    on a counter's waiter list (or, yielding, skipped);
 *   READY      in a queue (deque, injection queue, mailbox).
 * Only one party moves a fiber out of each state (weft__fiber_set). */
enum {
  WEFT__FIBER_FREE = 0,
  WEFT__FIBER_RUNNING,
  WEFT__FIBER_SUSPENDING,
  WEFT__FIBER_WAITING,
  WEFT__FIBER_READY
};

/* Cache-line aligned (and so sized): fibers of different workers are
 * written at every job they run, and must not share a line. */
struct weft__fiber_s {
  WEFT__ALIGNED weft__task_t task; /* first: a ready fiber is a task */
  weft__ctx_t ctx;
  weft__stack_t stack;
  atomic_int state;
  uint32_t id;
  uint32_t home;    /* the worker that made it: its stack's node is home's */
  int16_t pin;      /* the job's pinned worker, or -1 */
  uint8_t prio;     /* the job's priority */
  uint8_t fls_used; /* some FLS slot was set during this job */
  void* fls[WEFT_FLS_SLOTS];
  weft__waiter_t waiter;
  /* The running job's generation: (fiber, gen) names a job. gen_last is
   * the last one handed out, so a gen is never given twice, even after
   * help ran a nested job here and gave the outer job its own back. */
  uint64_t gen;
  uint64_t gen_last;
  /* The batch range this fiber is running (range.c), whose unstarted jobs
   * go back to the queues before it blocks; NULL outside a range. */
  struct weft__frange_s* range;
  weft__fiber_t* pool_next; /* in a pool */
  weft__fiber_t* all_next;  /* the runtime's list of every fiber */
  weft_runtime_t* rt;
};

/* What the fiber switched to must do for the fiber switched from, once
 * that one is fully off its stack. Lives on the suspending fiber's stack,
 * which stays put while the fiber is suspended. */
typedef struct weft__post_s {
  int op;
  weft__fiber_t* fiber;
  weft__counter_t* counter;
  int64_t target;
} weft__post_t;

enum {
  WEFT__POST_NONE = 0,
  WEFT__POST_WAIT,    /* register fiber as a waiter on counter */
  WEFT__POST_YIELD,   /* make fiber ready again at the back of the line */
  WEFT__POST_RELEASE, /* return fiber to the pool */
  WEFT__POST_START    /* a worker's first switch from its native stack */
};

void weft__fiber_set(weft__fiber_t* f, int from, int to);
weft__fiber_t* weft__fiber_get(weft__worker_t* w);
void weft__fiber_release(weft__worker_t* w, weft__fiber_t* f);
void weft__fiber_destroy_all(weft_runtime_t* rt);
/* Binds the stacks of every fiber made so far to their home worker's node
 * by `plan` (the placer's, just published). Returns how many it bound. */
unsigned weft__fiber_bind_all(weft_runtime_t* rt, const weft__plan_t* plan);
/* Suspends the calling fiber with `post` done by whoever runs next. */
void weft__fiber_suspend(weft__worker_t* w, weft__post_t* post);
void weft__fiber_post(void* arg);
/* Switches from the current fiber to ready fiber `f`; returns when the
 * calling fiber is resumed. */
void weft__fiber_resume(weft__worker_t* w, weft__fiber_t* f);
void weft__fiber_entry(void* arg);

/* ---- inject.c: multi-producer queues from outside, and mailboxes ------ */

typedef struct weft__inject_s {
  weft__spin_t lock;
  weft__tlist_t q[WEFT__NPRIO];
  /* Tasks queued, per priority: readers check emptiness without the lock.
   * Written under the lock; read relaxed as a hint, with the park protocol
   * (seq_cst fence) providing the no-lost-wake-up guarantee. */
  atomic_size_t len[WEFT__NPRIO];
} weft__inject_t;

void weft__inject_init(weft__inject_t* q);
void weft__inject_push(weft__inject_t* q, weft__task_t* first,
                       weft__task_t* last, size_t n, int prio);
weft__task_t* weft__inject_pop(weft__inject_t* q, int max_prio);
/* Pops up to `max` tasks of one priority level (the highest non-empty one
 * up to max_prio) into out[]; returns how many. */
size_t weft__inject_pop_many(weft__inject_t* q, int max_prio,
                             weft__task_t** out, size_t max);
static inline bool weft__inject_empty(weft__inject_t* q, int max_prio) {
  for (int p = 0; p <= max_prio; p++)
    if (atomic_load_explicit(&q->len[p], memory_order_relaxed) != 0)
      return false;
  return true;
}

/* A batch of ready tasks collected on a thread that is not a worker (the
 * libuv loop thread) and published with one lock round trip and one
 * wake-up: while a batch is open on the calling thread, weft__worker_ready
 * from that thread appends to it. */
typedef struct weft__batch_s {
  weft_runtime_t* rt;
  weft__task_t* first;
  weft__task_t* last;
  size_t n;
  size_t njobs; /* of them, new jobs not yet counted as submitted */
} weft__batch_t;

/* Tasks a batch collects before it publishes them without waiting for
 * weft__batch_close. */
#define WEFT__BATCH_MAX 256

void weft__batch_open(weft__batch_t* b, weft_runtime_t* rt);
void weft__batch_flush(weft__batch_t* b);
void weft__batch_close(weft__batch_t* b);
/* Appends t if a batch for rt is open on this thread. */
bool weft__batch_add(weft_runtime_t* rt, weft__task_t* t);
/* The same for a new job, which the batch counts as submitted when it
 * publishes it (one RMW per batch). */
bool weft__batch_add_job(weft_runtime_t* rt, weft__task_t* t);
/* Whether a batch for rt is open on this thread (so a task made ready here
 * waits for its flush). */
bool weft__batch_is_open(weft_runtime_t* rt);

/* ---- park.c: per-worker parker and the idle-worker set ---------------- */

typedef struct weft__parker_s {
  atomic_uint state; /* EMPTY, PARKED, NOTIFIED; also the futex word */
} weft__parker_t;

void weft__parker_park(weft__parker_t* p);
void weft__parker_unpark(weft__parker_t* p);

void weft__futex_wait(atomic_uint* addr, unsigned expected);
void weft__futex_wake(atomic_uint* addr, int n);

/* The idle set (Tokio's design): how many workers are searching for work
 * and how many are awake, plus a stack of sleeping workers. */
typedef struct weft__idle_s {
  /* Each on a line of its own: a thief toggles `searching` at every steal,
   * while `unparked` changes only when a worker parks or wakes, and a
   * spawner reads it first on every spawn (weft__idle_may_notify). */
  WEFT__ALIGNED atomic_uint searching;
  WEFT__ALIGNED atomic_uint unparked;
  weft__spin_t lock;
  unsigned nsleepers;
  unsigned* sleepers;
} weft__idle_t;

int weft__idle_init(weft__idle_t* idle, unsigned nworkers);
void weft__idle_destroy(weft__idle_t* idle);
/* After publishing work anyone may take: wakes one sleeper unless a worker
 * is already searching (which will find the work and chain the wake-up). */
void weft__idle_notify(weft_runtime_t* rt);
/* Before publishing work from outside the pool: if every worker may be
 * asleep, start waking one now, so that its wake-up (the OS's ~10 us)
 * overlaps the submission's own work. Only a hint: the weft__idle_notify
 * after publishing is what guarantees the work is seen. */
void weft__idle_wake_early(weft_runtime_t* rt);
/* Whether weft__idle_notify might find a worker to wake: a look without
 * the fence (relaxed loads, possibly stale), for publishers that can live
 * with a wake-up missed now and then (pushes to one's own deque). */
static inline bool weft__idle_may_notify(weft__idle_t* idle,
                                         unsigned nworkers) {
  return atomic_load_explicit(&idle->unparked, memory_order_relaxed) <
             nworkers &&
         atomic_load_explicit(&idle->searching, memory_order_relaxed) == 0;
}
/* Wakes worker k specifically (pinned work for it). */
void weft__idle_notify_worker(weft_runtime_t* rt, unsigned k);
void weft__idle_notify_all(weft_runtime_t* rt);
bool weft__idle_start_search(weft_runtime_t* rt, weft__worker_t* w);
/* Returns true if w was the last searcher: then it must notify another
 * worker if it found work (the chained wake-up). */
bool weft__idle_end_search(weft_runtime_t* rt, weft__worker_t* w);
/* Whether w could find work: its mailbox, and with `everywhere` the
 * injection queue and every deque. Racy hints. */
bool weft__idle_work_visible(weft_runtime_t* rt, weft__worker_t* w,
                             bool everywhere);
/* For a spinning worker: a waiting weft_runtime_destroy's check, which a
 * parking worker makes in weft__idle_park. */
void weft__idle_check_quiet(weft_runtime_t* rt);
/* Parks worker w (it has spun already: worker.c) until woken. */
void weft__idle_park(weft_runtime_t* rt, weft__worker_t* w);

/* ---- topology.c: hwloc placement ---------------------------------------*/

/* The most workers a runtime has: explicit counts above it are refused,
 * default counts are capped to it. */
#define WEFT__MAX_WORKERS 4096

/* Where each worker goes and whom it steals from, nearest first. */
struct weft__plan_s {
  unsigned nworkers;
  weft_placement_t placement; /* as planned (NONE when hwloc failed) */
  /* Whether threads (or memory) may be bound by this plan: false for
   * WEFT_PLACEMENT_NONE and for a described machine (WEFT_TOPOLOGY), whose
   * OS indexes name nothing on this one. */
  bool bind;
  int* pu_os_index;   /* per worker: the OS index of its PU, or -1 */
  int* numa_os_index; /* per worker: its first local NUMA node, or -1 */
  unsigned* near;     /* per worker: nworkers-1 victims, nearest first */
  /* Per worker, group_stride entries: the ends of its equal-distance
   * groups in `near`, ngroups[i] of them (at most two per topology level,
   * so far fewer than the victims). */
  unsigned* near_group;
  unsigned group_stride;
  unsigned* ngroups;
};

/* Worker i's victims nearest first, and the ends of their groups. */
static inline const unsigned* weft__plan_near(const weft__plan_t* p,
                                              unsigned i) {
  return p->near + (size_t)i * (p->nworkers > 1 ? p->nworkers - 1 : 1);
}
static inline const unsigned* weft__plan_groups(const weft__plan_t* p,
                                                unsigned i) {
  return p->near_group + (size_t)i * p->group_stride;
}

/* The process's loaded hwloc topology (a hwloc_topology_t), loading it on
 * first use, or NULL if hwloc failed. For placement-related code outside
 * topology.c (memory binding). */
void* weft__topology_handle(void);
/* Cores (or PUs if that is all hwloc knows) of the machine. */
int weft__topology_cores(void);
/* Plans `nworkers` workers (0: the placement's default count) on the
 * process's machine (desc NULL) or on the machine `desc` describes: the
 * path of an hwloc XML file, or an hwloc synthetic description. Fills
 * *plan. Returns 0, -EBADMSG (desc describes no machine), -ENOMEM. */
int weft__topology_plan(weft__plan_t* plan, const char* desc, unsigned nworkers,
                        weft_placement_t placement);
/* The runtime's plan: cfg's workers, placement and pin, overridden by
 * WEFT_PLACEMENT, on the machine WEFT_TOPOLOGY describes if set. Returns
 * as weft__topology_plan, and -EBADMSG for a bad WEFT_PLACEMENT. */
int weft__topology_plan_config(weft__plan_t* plan, const weft_config_t* cfg);
/* The same for a runtime's start: while the process has no topology
 * loaded, and the worker count is known without it, a flat unbound plan
 * right away, and *later says which placement to plan once hwloc is loaded
 * (WEFT_PLACEMENT_NONE: the plan is final). */
int weft__topology_plan_start(weft__plan_t* plan, const weft_config_t* cfg,
                              weft_placement_t* later);
void weft__topology_plan_free(weft__plan_t* plan);
/* Whether the process's topology is loaded (never waits for a load). */
bool weft__topology_loaded(void);
/* The cores (pus: the PUs) the process's threads may run on, from their
 * affinities and sysfs, without hwloc; 0 when they cannot be told. */
unsigned weft__topology_quick_count(bool pus);
/* For a start whose placement comes later: a CPU of its own for each of n
 * workers, as the quick count sees the machine (each core's lowest
 * allowed PU for `core`, each PU for `pu` and `spill`). 0, or -ENOENT
 * (fewer units than workers, or none told), -EINVAL (another placement).
 * A sysfs read per CPU up to the n-th unit. */
int weft__topology_quick_cpus(weft_placement_t placement, int* cpus,
                              unsigned n);
/* Binds the calling thread to the worker's PU (plan->bind only). */
int weft__topology_pin_self(const weft__plan_t* plan, unsigned worker);
/* Binds another thread of the process to the worker's PU. */
int weft__topology_pin_thread(const weft__plan_t* plan, unsigned worker,
                              pthread_t thread);

/* ---- worker.c ---------------------------------------------------------- */

/* Adds one to a statistic that has a single writer (its worker, or the
 * thread starting the runtime before the worker's thread exists): a
 * relaxed load and store, no RMW; readers get a racy but untorn value. */
static inline void weft__stat_bump(atomic_uint_fast64_t* a) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

typedef struct weft__wstats_s {
  atomic_uint_fast64_t jobs_run;
  atomic_uint_fast64_t steals;
  atomic_uint_fast64_t failed_steals;
  atomic_uint_fast64_t offers_made;
  atomic_uint_fast64_t offers_taken;
  atomic_uint_fast64_t parks;
  atomic_uint_fast64_t fiber_switches;
  atomic_uint_fast64_t fibers_in_pool;
  atomic_uint_fast64_t counter_rmws;
  atomic_uint_fast64_t stacks_hugetlb; /* by backing (fiber.c) */
  atomic_uint_fast64_t stacks_thp;
  atomic_uint_fast64_t stacks_normal;
  atomic_uint_fast64_t stacks_bound;
} weft__wstats_t;

/* The batch range a worker is running (range.c): jobs [next, end) of
 * blk, packed in span (end << 32 | next). The owner claims jobs from the
 * bottom, thieves halve it from the top, both by CAS on span; blk changes
 * only under lock, so a thief holding the lock may take a reference. */
typedef struct weft__rslot_s {
  weft__spin_t lock;
  _Atomic(struct weft__jobblock_s*) blk;
  _Atomic uint64_t span;
} weft__rslot_t;

/* A worker's spawn stream (range.c): jobs [next, end) of blk. Only the
 * owner appends (a release store of end); anyone takes from the bottom by
 * CAS on next, thieves under the lock, which is also held wherever blk
 * changes. end has a line of its own: the owner writes it at every spawn,
 * thieves only read it. looked is the oldest job a thief saw and left
 * alone (too few yet) and when, written by thieves only. */
typedef struct weft__sslot_s {
  weft__spin_t lock;
  _Atomic(struct weft__jobblock_s*) blk;
  _Atomic uint32_t next;
  _Atomic uint64_t looked; /* next << 32 | when, for thieves */
  WEFT__ALIGNED _Atomic uint32_t end;
} weft__sslot_t;

/* The last measured time of one element of a parallel-for body. */
#define WEFT__PF_HINTS 8
typedef struct weft__pf_hint_s {
  weft_range_cb fn;
  double ns_per;
} weft__pf_hint_t;

struct weft__worker_s {
  /* Owner-side hot fields. */
  weft_runtime_t* rt;
  unsigned index;
  weft__fiber_t* current; /* the fiber running on this worker */
  weft__fiber_t* pool;    /* idle fibers, owner only */
  unsigned npool;
  uint32_t tick;
  uint64_t rng;
  bool searching;
  /* How long this worker spins for work before it parks (worker.c). */
  uint64_t spin_ns;
  weft__jobpool_t jobs;
  /* A spawn stream (range.c): the open block of weft_spawn's jobs in
   * sslot, and the counter of the last spawns with their number in a row,
   * which decides when to open one. */
  struct weft__jobblock_s* sblk;
  weft__counter_t* sblk_c; /* sblk's counter, and its jobs (for inline */
  weft_job_t* sjobs;       /* spawns: weft__stream_slot) */
  weft__counter_t* stream_c;
  uint32_t stream_n;
  /* Decrements of counter dec_c by jobs this worker finished, not applied
   * yet: a run of jobs on one counter costs it one RMW, not one each.
   * Applied before the worker runs anything else, looks for work, parks,
   * or a fiber here waits (weft__worker_dec_flush). */
  weft__counter_t* dec_c;
  int64_t dec_n;
  /* What an element of recent parallel-for bodies cost (parallel.c), by
   * body; owner only. */
  weft__pf_hint_t pf_hints[WEFT__PF_HINTS];
  weft__ctx_t native; /* the thread's own stack */
  weft__deque_t dq[WEFT__NPRIO];
  /* Jobs submitted from this worker / finished on it. Single writer (this
   * worker), read by weft_runtime_destroy's quiescence check. */
  WEFT__ALIGNED atomic_uint_fast64_t submitted;
  atomic_uint_fast64_t completed;
  /* Pinned work for this worker, from anyone. */
  WEFT__ALIGNED weft__inject_t mailbox;
  WEFT__ALIGNED weft__parker_t parker;
  bool sleeping; /* in the idle set's sleeper stack; under its lock */
  weft__wstats_t stats;
  weft__altstack_t altstack;
  WEFT__ALIGNED weft__rslot_t rslot;
  /* The spawn stream's unstarted jobs (range.c). */
  WEFT__ALIGNED weft__sslot_t sslot;
  /* Work offered to this worker in particular (weft__worker_offer); its
   * own line: the worker reads it at every look for work. */
  WEFT__ALIGNED _Atomic(struct weft__offer_s*) offer;
  pthread_t thread;
  bool thread_started;
  /* Provisional binding (worker.c): pending until the first steal while
   * placement waits for hwloc (owner only); then, under the runtime's
   * prov_lock, whether this thread is bound and what it had before. */
  bool prov_pending;
  bool prov_bound;
  cpu_set_t prov_prev;
};

/* A piece of work one worker offers another (parallel.c's team split):
 * the offerer's memory, run by the worker that takes it from its slot, or
 * taken back by the offerer. It is no job: the offerer's job is running
 * until the piece is done, so the pieces need no count of their own for
 * weft_runtime_destroy's quiescence check. */
typedef struct weft__offer_s {
  weft__task_t task; /* kind WEFT__TASK_OFFER */
  /* Runs on the taker's fiber, as a job would; its last touch of o and
   * of what o belongs to is the end of its own wait (a counter's
   * decrement). */
  void (*run)(struct weft__offer_s* o);
} weft__offer_t;

/* Puts o in worker k's offer slot: false if the slot holds another offer
 * (then o stays the caller's). */
bool weft__worker_offer(weft__worker_t* k, weft__offer_t* o);
/* Takes o back out of k's slot: true if k had not taken it (the caller
 * runs it now), false if k took it (k runs it, or has). */
bool weft__worker_reclaim(weft__worker_t* k, weft__offer_t* o);

/* The worker running the calling code, or NULL. noinline: a fiber can
 * migrate between workers, and an inlined TLS address cached in a
 * callee-saved register across a switch would name the old worker. */
WEFT__NOINLINE weft__worker_t* weft__worker_current(void);
void weft__worker_set_current(weft__worker_t* w);
/* Runs the scheduling loop on the calling fiber until the runtime stops. */
void weft__worker_loop(void);
void* weft__worker_main(void* arg);
/* Runs worker w's loop on the calling thread (weft_run's worker 0). */
void weft__worker_run_here(weft__worker_t* w);
/* Runs jobs counted on c from the top of w's deque on the calling fiber
 * while c is above target (<= 0). Returns the worker now running. */
weft__worker_t* weft__worker_help(weft__worker_t* w, weft__counter_t* c,
                                  int64_t target);
/* Applies w's cached counter decrements (see weft__worker_t.dec_c). */
static inline void weft__worker_dec_flush(weft__worker_t* w) {
  if (w->dec_n != 0) {
    weft__counter_t* c = w->dec_c;
    int64_t n = w->dec_n;
    int rmws;
    w->dec_c = NULL;
    w->dec_n = 0;
    rmws = weft__counter_sub(c, n);
    /* Relaxed, single writer: a statistic (see stats.c). */
    atomic_store_explicit(
        &w->stats.counter_rmws,
        atomic_load_explicit(&w->stats.counter_rmws, memory_order_relaxed) +
            (uint64_t)rmws,
        memory_order_relaxed);
  }
}
/* Finished jobs a worker holds back before it applies their decrement. */
#define WEFT__DEC_MAX 64

/* A job about to run on fiber f takes the fiber's job state afresh. */
static inline void weft__job_begin(weft__fiber_t* f, int16_t pin,
                                   uint8_t prio) {
  f->task.pin = pin;
  f->task.prio = prio;
  f->gen = ++f->gen_last;
}
/* A job (or an offer) that ran on fiber f returned: clear what it left on
 * the fiber. */
static inline void weft__job_reset(weft__fiber_t* f) {
  if (f->fls_used) {
    for (unsigned i = 0; i < WEFT_FLS_SLOTS; i++)
      f->fls[i] = NULL;
    f->fls_used = 0;
  }
  f->task.pin = -1;
  f->task.prio = WEFT_PRIORITY_NORMAL;
}
/* A job that ran on fiber f, now on worker w, returned: clear what it left
 * on the fiber, count its decrement of c (held back, see dec_c) and its
 * completion. */
static inline void weft__job_end(weft__worker_t* w, weft__fiber_t* f,
                                 weft__counter_t* c) {
  weft__job_reset(f);
  if (c != NULL) {
    /* Cached: the next job on the same counter (the common fan-out) adds
     * to the same decrement; anything else applies it first. At most
     * WEFT__DEC_MAX are held back, so a waiter for a value above zero
     * hears of progress in runs, never much later. */
    if (w->dec_c != c || w->dec_n >= WEFT__DEC_MAX)
      weft__worker_dec_flush(w);
    w->dec_c = c;
    w->dec_n++;
  }
  /* Single writer (this worker): no RMW. Relaxed for the statistic;
   * release for `completed`, pairing with the acquire loads of
   * weft__runtime_quiescent: the job's own submissions (made before) are
   * seen with its completion. */
  atomic_store_explicit(
      &w->stats.jobs_run,
      atomic_load_explicit(&w->stats.jobs_run, memory_order_relaxed) + 1,
      memory_order_relaxed);
  atomic_store_explicit(
      &w->completed,
      atomic_load_explicit(&w->completed, memory_order_relaxed) + 1,
      memory_order_release);
}
/* Makes a task runnable from worker `w` (NULL: not on a worker). */
void weft__worker_ready(weft_runtime_t* rt, weft__worker_t* w, weft__task_t* t);
/* Publishes n tasks (first..last, linked) into rt's injection queue, or
 * worker pin's mailbox (pin >= 0), from outside rt, and wakes a worker;
 * counted in rt->foreign meanwhile (see worker.c). */
void weft__inject_foreign(weft_runtime_t* rt, weft__task_t* first,
                          weft__task_t* last, size_t n, int prio, int pin);

/* ---- range.c: weft_spawn_batch's jobs, run in ranges ------------------- */

/* A batch's jobs are copied into blocks of up to WEFT__BLOCK_JOBS. */
#define WEFT__BLOCK_JOBS 1024
typedef struct weft__jobblock_s weft__jobblock_t;

/* A queued run of a block's jobs [begin, end). */
typedef struct weft__range_s {
  weft__task_t task; /* kind WEFT__TASK_RANGE */
  weft__jobblock_t* blk;
  uint32_t begin;
  uint32_t end;
} weft__range_t;

/* A fiber's hold on the range it runs: the slot of the worker it started
 * on, or NULL once the rest was given away. */
typedef struct weft__frange_s {
  weft__rslot_t* slot;
  weft__jobblock_t* blk;
} weft__frange_t;

/* Copies n >= 1 jobs (every fn checked) into blocks whose range tasks
 * (*ntasks of them, linked through task.next from *first to *last) run
 * them, decrementing c (or NULL) once per job. 0 or -ENOMEM. */
int weft__range_make(weft_runtime_t* rt, const weft_job_t* jobs, size_t n,
                     weft__counter_t* c, weft__task_t** first,
                     weft__task_t** last, size_t* ntasks);
/* Frees the blocks rt keeps for reuse (its workers are gone). */
void weft__range_pool_free(weft_runtime_t* rt);
/* Runs a range task on w's current fiber. */
void weft__range_run(weft__worker_t* w, weft__range_t* r);
/* The counter a range task's jobs decrement. */
weft__counter_t* weft__range_counter(const weft__range_t* r);
/* Takes the upper half of the range victim v is running (else the lower
 * half of its spawn stream), as a range task for the caller to run; NULL
 * if there is none. */
weft__task_t* weft__range_steal(weft__worker_t* v);
/* Whether v's running range or spawn stream has jobs nobody has started
 * (a racy look). */
bool weft__range_visible(weft__worker_t* v);
/* Fiber f on worker w is about to block, or to help with another range:
 * the jobs of its range that have not started go back to w's deque (or to
 * the injection queue, to_inject), and w's slot is free again. */
void weft__range_give_away(weft__worker_t* w, weft__fiber_t* f, bool to_inject);

/* How many jobs ahead of the next a spawn stream prefetches (a line holds
 * four). 8 to 128 did as well here. */
#define WEFT__STREAM_PREFETCH 32

/* A spawn stream: after WEFT__STREAM_AFTER plain weft_spawn calls in a
 * row on one counter, with no wait between, a worker's further spawns on
 * it go into an open block (sslot) instead of one record and one deque
 * entry each. A thief takes half of the unstarted jobs in one CAS, and
 * runs them as a range. */
#define WEFT__STREAM_AFTER 16
/* The slot for the next job of a stream on counter c, or NULL (spawn it
 * the plain way). Fill it in, count it, then weft__stream_publish. */
weft_job_t* weft__stream_reserve(weft__worker_t* w, weft__counter_t* c);
/* weft__stream_reserve's common case inline: no stream open, and this
 * spawn does not open one (fib-like code pays a few loads and stores). */
static inline weft_job_t* weft__stream_slot(weft__worker_t* w,
                                            weft__counter_t* c) {
  if (WEFT__LIKELY(w->sblk == NULL)) {
    if (w->stream_c != c) {
      w->stream_c = c;
      w->stream_n = 1;
      return NULL;
    }
    if (++w->stream_n < WEFT__STREAM_AFTER)
      return NULL;
  } else if (w->sblk_c == c) {
    /* The open stream's next slot, if the block has one. Relaxed: only we
     * write end. */
    uint32_t end = atomic_load_explicit(&w->sslot.end, memory_order_relaxed);
    if (WEFT__LIKELY(end < WEFT__BLOCK_JOBS)) {
      /* The job lines a few spawns ahead, for writing: a pooled block's
       * lines are likely still in the cache of the thief that ran its
       * jobs, and a store waiting for one holds up every later store
       * (spawn_empty, in phases where this host made a line's round trip
       * between our vCPUs 450 ns: 15M jobs/s without, 42M with). */
      if (end + WEFT__STREAM_PREFETCH < WEFT__BLOCK_JOBS)
        weft__prefetch_w(&w->sjobs[end + WEFT__STREAM_PREFETCH]);
      return &w->sjobs[end];
    }
  }
  return weft__stream_reserve(w, c);
}
/* Makes the job weft__stream_reserve gave visible. */
static inline void weft__stream_publish(weft__worker_t* w) {
  uint32_t end = atomic_load_explicit(&w->sslot.end, memory_order_relaxed);
  /* Release: the job was written before; pairs with the acquire load of
   * end in stream_span (range.c). */
  atomic_store_explicit(&w->sslot.end, end + 1, memory_order_release);
}
/* The bottom half of w's own stream, as a range task; NULL if empty. */
weft__task_t* weft__stream_take(weft__worker_t* w);
/* The same from victim v's stream, for a thief. */
weft__task_t* weft__stream_steal(weft__worker_t* v);
/* Claims the oldest unstarted job of w's stream if it counts on c:
 * copies it to *job and returns true. */
bool weft__stream_claim(weft__worker_t* w, weft__counter_t* c, weft_job_t* job);
/* Gives the stream's unstarted jobs to the deque and closes its block. */
void weft__stream_close(weft__worker_t* w);
/* Whether w's own normal-priority work (its deque and its spawn stream)
 * is empty: a racy look, for the owner (lazy splitting, spinning). */
static inline bool weft__worker_own_empty(weft__worker_t* w) {
  return weft__deque_size(&w->dq[WEFT_PRIORITY_NORMAL]) == 0 &&
         (w->sblk == NULL ||
          atomic_load_explicit(&w->sslot.next, memory_order_relaxed) >=
              atomic_load_explicit(&w->sslot.end, memory_order_relaxed));
}

/* ---- runtime.c --------------------------------------------------------- */

enum { WEFT__RT_NEW = 0, WEFT__RT_RUNNING, WEFT__RT_STOPPING };

struct weft_runtime_s {
  weft_config_t cfg;
  unsigned nworkers;
  weft__worker_t* workers;
  weft__plan_t plan;
  /* The plan made by the placer thread, once published (NULL until then,
   * or for good when the start plan was final): see runtime.c. */
  _Atomic(weft__plan_t*) placed;
  weft__idle_t idle;
  weft__inject_t inject;
  /* High/low priority tasks queued in deques, so the hot path checks the
   * other levels only when they hold something (relaxed hints). */
  WEFT__ALIGNED atomic_size_t dq_prio_len[WEFT__NPRIO];
  /* Bumped for every job submitted from outside (the libuv loop thread
   * submits millions), read only by quiescence checks: a line of its own,
   * so those bumps never take `stop` and `state` away from the workers. */
  WEFT__ALIGNED atomic_uint_fast64_t outside_submitted;
  WEFT__ALIGNED atomic_int state;
  atomic_int stop; /* workers leave their loops once set */
  pthread_mutex_t start_lock;
  /* Placement after the start (runtime.c): the thread that loads hwloc,
   * plans `place_later` and binds the workers and their stacks. */
  struct weft__placer_s* placer;
  weft_placement_t place_later;
  /* A worker that steals before the placer is done binds itself to a CPU
   * of its own meanwhile (worker.c), under prov_lock; the placer sets
   * place_done under it before it binds, so no provisional bind comes
   * after (and undoes) the plan's. */
  weft__spin_t prov_lock;
  bool place_done;            /* under prov_lock, as the two below */
  int* prov_cpus;             /* worker i's CPU, made by the first thief */
  bool prov_none;             /* none could be told */
  pthread_t run_thread;       /* weft_run's caller, worker 0 */
  atomic_uint placing;        /* 1 while the placer works */
  atomic_uint workers_pinned; /* bound to their planned PU */
  atomic_uint_fast64_t stacks_bound_late; /* by the placer */
  /* Fibers: every one ever made (for destroy), plus the shared pool. */
  weft__spin_t fibers_lock;
  weft__fiber_t* all_fibers;
  /* Atomic only so an unlocked emptiness check is well defined; written
   * under fibers_lock. */
  _Atomic(weft__fiber_t*) shared_pool;
  unsigned nshared;
  atomic_uint_fast64_t fibers_created;
  /* Full-size job blocks kept for reuse (range.c). */
  weft__spin_t blocks_lock;
  struct weft__jobblock_s* blocks_free;
  unsigned nblocks_free;
  /* Job record slabs (job.c): every chunk, and free batches. */
  weft__spin_t jobs_lock;
  void* job_chunks;
  /* Atomic only so an unlocked emptiness check is well defined. */
  _Atomic(weft__job_t*) job_batches;
  /* Threads outside the runtime (plain threads, other runtimes' workers)
   * between publishing a task here and their last touch of rt, such as a
   * counter's decrement waking one of our fibers (worker.c). */
  atomic_uint foreign;
  /* Quiescence: destroy/weft_run sleep on `quiet` until every job is done. */
  atomic_int want_quiet;
  atomic_uint quiet;
  bool run_mode; /* weft_run: worker 0 is the calling thread */
  /* The libuv bridge, if any (bridge/). Destroy stops it first (so the
   * fibers blocked in I/O finish) and frees it after the workers are gone
   * (jobs may still look it up until then). */
  void* bridge;
  void (*bridge_stop)(void* bridge);
  void (*bridge_free)(void* bridge);
  /* Called on the worker when an embedded job's fn returns (set with
   * `bridge`, before the first embedded job is published). */
  void (*embedded_done)(void* bridge, weft__job_t* j, weft__worker_t* w);
};

/* The plan workers go by: the placer's once published, else the start's.
 * Acquire pairs with the placer's release store: its contents come with
 * the pointer. */
static inline const weft__plan_t* weft__runtime_plan(weft_runtime_t* rt) {
  const weft__plan_t* p =
      atomic_load_explicit(&rt->placed, memory_order_acquire);
  return p != NULL ? p : &rt->plan;
}

/* Starts the workers on first use. Returns 0 or a negative errno. */
int weft__runtime_start(weft_runtime_t* rt);
/* True once every submitted job has completed (double collect). */
bool weft__runtime_quiescent(weft_runtime_t* rt);
/* Called by a worker about to park while someone waits for quiescence. */
void weft__runtime_check_quiet(weft_runtime_t* rt);

#endif /* WEFT_INTERNAL_H_ */
