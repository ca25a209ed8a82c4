/* weft: a work-stealing fiber job system.
 *
 * Jobs run on fibers pooled per worker thread. A job that waits on a counter
 * suspends its fiber; the worker picks up another fiber and keeps running
 * jobs, and the waiting fiber resumes on any worker once the counter reaches
 * its target (the Naughty Dog GDC 2015 model).
 *
 * Conventions (libuv's): functions return 0 or a non-negative count on
 * success and a negative errno on failure (see <weft/errno.h>);
 * weft_strerror() explains a code. "Any thread" means a worker's job or any
 * plain thread; "fiber only" functions return -EPERM elsewhere.
 */
#ifndef WEFT_H_
#define WEFT_H_

#include <stddef.h>
#include <stdint.h>

#include "weft/errno.h"
#include "weft/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) || defined(__CYGWIN__)
#define WEFT_EXTERN
#elif __GNUC__ >= 4
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

/* Number of fiber-local storage slots per job (see weft_fls_set). */
#define WEFT_FLS_SLOTS 16

typedef struct weft_runtime_s weft_runtime_t;

/* A job: runs once, on some worker's fiber. */
typedef void (*weft_job_cb)(void* arg);

/* A parallel-for body: processes the half-open range [begin, end). */
typedef void (*weft_range_cb)(size_t begin, size_t end, void* arg);

typedef struct weft_job_s {
  weft_job_cb fn;
  void* arg;
} weft_job_t;

/* Where workers run (docs/topology.md). Each strategy lists the PUs the
 * process may run on (its CPU affinity when weft first loads the
 * topology) in the order workers take them, worker i the i-th (wrapping when
 * there are more workers than PUs); steal order follows the hardware
 * hierarchy whatever the strategy. WEFT_PLACEMENT=none|core|pu|cache|spill
 * overrides the configured one. */
typedef enum {
  /* No binding; the OS places threads, and victims are tried in a flat
   * order. Default worker count: one per core. */
  WEFT_PLACEMENT_NONE = 0,
  /* One worker per physical core, SMT siblings used only once every core
   * has one. Default: one per core. */
  WEFT_PLACEMENT_CORE = 1,
  /* One worker per PU (hardware thread), in hwloc's order: SMT siblings
   * are adjacent. Default: one per PU. */
  WEFT_PLACEMENT_PU = 2,
  /* Keep to the first cache domain (the cores sharing the first
   * outermost cache, e.g. one CCD's L3; without shared caches, one NUMA
   * node's cores): its cores, then its SMT siblings. Default: one per core
   * of that domain. */
  WEFT_PLACEMENT_CACHE = 3,
  /* Fill the cache domains in order: all of the first's PUs (cores, then
   * SMT siblings), then the next's. Default: one per PU. */
  WEFT_PLACEMENT_SPILL = 4
} weft_placement_t;

/* Named configurations for weft_config_preset. */
typedef enum {
  WEFT_PRESET_THROUGHPUT = 0,
  WEFT_PRESET_LATENCY = 1,
  WEFT_PRESET_BACKGROUND = 2
} weft_preset_t;

/* Stack prefaulting. Stacks are bound to their worker's NUMA node where
 * hwloc can bind memory, so every page lands there whenever touched;
 * prefaulting moves the page faults out of the jobs, and where binding is
 * unavailable it makes the pinned worker the first toucher. */
typedef enum {
  /* Pages are faulted as the stack grows (the context set-up writes the
   * top page when the fiber is made). */
  WEFT_STACK_PREFAULT_NONE = 0,
  /* The top page, where the fiber starts (the whole top huge page on a huge
   * stack). The set-up writes that page anyway: today the same as NONE. */
  WEFT_STACK_PREFAULT_PAGE = 1,
  /* The whole stack: fault-free jobs, at the price of the whole stack's
   * memory for every fiber. */
  WEFT_STACK_PREFAULT_ALL = 2
} weft_stack_prefault_t;

/* Runtime configuration. Always start from weft_config_init(). */
typedef struct weft_config_s {
  /* Worker threads (=0: as many as `placement` makes by default, one per
   * physical core for WEFT_PLACEMENT_CORE, discovered with hwloc). */
  unsigned workers;
  /* Usable bytes of each fiber stack, rounded up to pages (=512 KiB). A
   * guard region below each stack catches overflow. */
  size_t stack_size;
  /* Idle fibers each worker keeps in its pool for reuse (=16); fibers beyond
   * that go to a shared pool. Stacks are never mapped per job. */
  unsigned fibers_per_worker;
  /* Bind each worker to its PU as `placement` says (=1). 0 means
   * WEFT_PLACEMENT_NONE whatever `placement` holds. */
  int pin;
  /* How workers are placed and, with workers = 0, how many there are
   * (=WEFT_PLACEMENT_CORE). */
  weft_placement_t placement;
  /* Back fiber stacks with huge pages (=0; WEFT_HUGE_STACKS=1 or 0
   * overrides): reserved hugetlb pages while any are free, else transparent
   * huge pages, else normal pages (the stats count each; a THP stack's
   * pages may still be small when the kernel has no free huge page). A
   * huge stack is stack_size rounded up to whole huge pages (2 MiB on
   * x86-64), and costs that much memory once touched. */
  int huge_stacks;
  /* How much of each new stack its worker faults in before the stack's
   * first use (=WEFT_STACK_PREFAULT_NONE; WEFT_STACK_PREFAULT=none|page|all
   * overrides). */
  weft_stack_prefault_t stack_prefault;
  /* The longest an idle worker keeps looking for work before it sleeps, in
   * microseconds (=1000, at most 1000000). Waking a sleeping worker costs
   * its waker a system call and the new work tens of microseconds on a
   * virtual machine; a worker spinning (it yields its core to any thread
   * that wants it) takes new work in about one. Each worker spins about
   * twice as long as its recent idle gaps, between 30 us and this bound,
   * so a pool fed every few hundred microseconds stays awake and one fed
   * every few milliseconds sleeps after 30 us. 0: sleep after a few
   * hundred nanoseconds of pausing. */
  unsigned idle_spin_us;
} weft_config_t;

/* Job priorities: a worker takes queued high-priority work before normal,
 * and normal before low. */
typedef enum {
  WEFT_PRIORITY_HIGH = 0,
  WEFT_PRIORITY_NORMAL = 1,
  WEFT_PRIORITY_LOW = 2
} weft_priority_t;

/* Options for weft_spawn_ex. */
typedef struct weft_spawn_opts_s {
  weft_priority_t priority; /* (=WEFT_PRIORITY_NORMAL) */
  int worker; /* Run only on this worker, 0..workers-1 (=-1: any worker). A
               * pinned job that waits also resumes on its worker. */
} weft_spawn_opts_t;

/* A counter: a 64-bit value that jobs decrement when they finish and that
 * weft_counter_wait() waits on. Place it anywhere (stack, heap, static);
 * initialize it with weft_counter_init(). It must outlive every job spawned
 * on it and every wait on it. */
typedef struct weft_counter_s {
  _Alignas(16) uint64_t opaque_[4];
} weft_counter_t;

/* Per-worker statistics (monotonic counts since the runtime started). */
typedef struct weft_worker_stats_s {
  uint64_t jobs_run;       /* jobs this worker ran to completion */
  uint64_t steals;         /* tasks taken from another worker's deque */
  uint64_t failed_steals;  /* steal attempts that found nothing or lost */
  uint64_t parks;          /* times the worker went to sleep */
  uint64_t fiber_switches; /* context switches between fibers */
  uint64_t fibers_in_pool; /* idle fibers in this worker's pool now */
  /* Atomic read-modify-writes this worker made on counters for spawns and
   * job ends, CAS retries included (a run of jobs finishing on one counter
   * shares one decrement). */
  uint64_t counter_rmws;
  /* Stacks this worker's fibers got, by backing (see huge_stacks), and how
   * many of them are bound to the worker's NUMA node. */
  uint64_t stacks_hugetlb;
  uint64_t stacks_thp;
  uint64_t stacks_normal;
  uint64_t stacks_bound;
  /* weft_parallel_for's team split: slices of a loop this worker offered
   * to another in particular, and slices offered to this one that it ran
   * (not counted in jobs_run); the offerer ran the others itself. */
  uint64_t offers_made;
  uint64_t offers_taken;
} weft_worker_stats_t;

/* Runtime-wide statistics: the sum over workers, plus shared state. */
typedef struct weft_stats_s {
  unsigned workers; /* worker threads (0 until the first job) */
  uint64_t jobs_run;
  uint64_t steals;
  uint64_t failed_steals;
  uint64_t parks;
  uint64_t fiber_switches;
  uint64_t fibers_in_pool; /* idle fibers, per-worker pools + shared */
  uint64_t fibers_created; /* fibers (stacks) created in all */
  uint64_t counter_rmws;   /* summed over workers (see above) */
  uint64_t stacks_hugetlb; /* stacks by backing, summed over workers */
  uint64_t stacks_thp;
  uint64_t stacks_normal;
  uint64_t stacks_bound; /* stacks bound to their worker's NUMA node */
  /* Workers bound to their planned PU. The first runtime in a process
   * starts its workers unbound while hwloc loads in the background (about
   * 1-2 ms), and binds them, and the stacks made so far, after: `placing`
   * is 1 until then (docs/topology.md). */
  unsigned workers_pinned;
  unsigned placing;
  uint64_t offers_made; /* summed over workers (see above) */
  uint64_t offers_taken;
} weft_stats_t;

/* weft_config_init: fills `cfg` with the defaults. Returns 0, or -EINVAL
 * when cfg is NULL. Any thread. */
WEFT_EXTERN int weft_config_init(weft_config_t* cfg);

/* weft_config_preset: sets `cfg`'s workers, placement and pin for a kind
 * of work, leaving its other fields alone (docs/topology.md says why):
 *   THROUGHPUT  one worker per physical core (WEFT_PLACEMENT_CORE);
 *   LATENCY     one per core of the first cache domain (_CACHE), so
 *               hand-offs and steals stay within one L3;
 *   BACKGROUND  a quarter of the cores (at least one), unbound (_NONE), so
 *               the OS fits them around the foreground threads.
 * Returns 0, or -EINVAL (NULL cfg or unknown preset). Any thread. */
WEFT_EXTERN int weft_config_preset(weft_config_t* cfg, weft_preset_t preset);

/* weft_runtime_create: creates a runtime. `cfg` may be NULL for defaults.
 * Worker threads start lazily, on the first job, so creation is cheap.
 * Returns 0 and stores the runtime in *rt, or -EINVAL (bad config),
 * -ENOMEM. Any thread. The start reads WEFT_PLACEMENT and WEFT_TOPOLOGY: a
 * bad value makes it, and so the first submission (or weft_run), fail with
 * -EBADMSG. */
WEFT_EXTERN int weft_runtime_create(weft_runtime_t** rt,
                                    const weft_config_t* cfg);

/* weft_runtime_destroy: waits until every submitted job (and every job they
 * spawned) has finished, stops and joins the workers and frees every stack.
 * Returns 0, -EINVAL (NULL), or -EDEADLK when called from one of the
 * runtime's own jobs. Must not race with spawns from other threads. A job
 * blocked forever on a counter makes destroy wait forever. */
WEFT_EXTERN int weft_runtime_destroy(weft_runtime_t* rt);

/* weft_runtime_self: the runtime whose worker runs the caller, or NULL on a
 * plain thread. */
WEFT_EXTERN weft_runtime_t* weft_runtime_self(void);

/* weft_run: creates a runtime from `cfg` (NULL for defaults), turns the
 * calling thread into worker 0, runs main_fn(arg) as a job and returns when
 * it and every job it (transitively) spawned are done; then destroys the
 * runtime. Inside, weft_runtime_self() gives the runtime, and the thread is
 * bound like any worker; it returns with the CPU mask it had. Returns 0 or
 * -EINVAL, -ENOMEM, -EDEADLK (called from a job). */
WEFT_EXTERN int weft_run(const weft_config_t* cfg, weft_job_cb main_fn,
                         void* arg);

/* weft_counter_init: sets the counter's value and clears its waiters.
 * Values are limited to +-(2^46 - 1). Returns 0, -EINVAL (NULL) or -ERANGE.
 * Never on a counter that has waiters. */
WEFT_EXTERN int weft_counter_init(weft_counter_t* c, int64_t value);

/* weft_counter_value: the counter's current value (a snapshot). */
WEFT_EXTERN int64_t weft_counter_value(const weft_counter_t* c);

/* weft_counter_add: adds `delta` (may be negative) and wakes every waiter
 * whose target is now reached. Returns 0, -EINVAL or -ERANGE (|delta| too
 * large). Any thread. */
WEFT_EXTERN int weft_counter_add(weft_counter_t* c, int64_t delta);

/* weft_counter_wait: returns 0 once the counter's value is at most
 * `target`. In a job it suspends the job's fiber (the worker keeps running
 * other jobs) and the job may resume on another worker; on a plain thread it
 * blocks the thread. With target <= 0, a job first runs, on its own stack,
 * the not-yet-started jobs counted on this counter that sit on top of its
 * worker's deque (they must finish before the wait can return), as TBB
 * does; each gets its own empty fiber-local slots. Once it returns, weft no
 * longer touches the counter on account of the decrements it has seen, so
 * the counter may be freed. Returns -EINVAL for a NULL counter. */
WEFT_EXTERN int weft_counter_wait(weft_counter_t* c, int64_t target);

/* weft_spawn: submits fn(arg) as a job. If `counter` is not NULL it is
 * incremented now and decremented when the job returns. From a job the new
 * job goes to the worker's own deque (other workers steal it); from any
 * other thread to the runtime's injection queue. `rt` may be NULL inside a
 * job (the current runtime). Returns 0, -EINVAL, -ENOMEM, -ESHUTDOWN. */
WEFT_EXTERN int weft_spawn(weft_runtime_t* rt, weft_job_cb fn, void* arg,
                           weft_counter_t* counter);

/* weft_spawn_batch: submits n jobs with one publication; the counter is
 * incremented by n at once. The array is copied: it may be reused as soon
 * as the call returns. A worker runs a batch's jobs one after another
 * while idle workers take the ones not yet started, so each is still a
 * job of its own (they may run side by side and wait for each other).
 * Returns 0 or -EINVAL (any fn NULL: nothing is submitted), -ENOMEM,
 * -ESHUTDOWN. Any thread. */
WEFT_EXTERN int weft_spawn_batch(weft_runtime_t* rt, const weft_job_t* jobs,
                                 size_t n, weft_counter_t* counter);

/* weft_spawn_ex: weft_spawn with options (priority, pinned worker); opts
 * may be NULL. Returns 0, -EINVAL (bad priority or worker index; the worker
 * count is fixed once the runtime starts), -ENOMEM, -ESHUTDOWN. */
WEFT_EXTERN int weft_spawn_ex(weft_runtime_t* rt, weft_job_cb fn, void* arg,
                              weft_counter_t* counter,
                              const weft_spawn_opts_t* opts);

/* weft_yield: lets other ready work run before the calling job continues.
 * Returns 0, or -EPERM off a weft fiber. Fiber only; suspends. */
WEFT_EXTERN int weft_yield(void);

/* weft_worker_id: the index of the worker running the caller
 * (0..workers-1), or -EPERM on a plain thread. It may change after any call
 * that suspends. */
WEFT_EXTERN int weft_worker_id(void);

/* weft_fls_set / weft_fls_get: fiber-local storage. Each job has
 * WEFT_FLS_SLOTS pointer slots, NULL when the job starts; they follow the
 * job's fiber across suspensions and workers. Return 0, -EINVAL (slot out
 * of range, NULL out), or -EPERM off a weft fiber. */
WEFT_EXTERN int weft_fls_set(unsigned slot, void* value);
WEFT_EXTERN int weft_fls_get(unsigned slot, void** value);

/* weft_parallel_for: calls fn on subranges covering [begin, end) in
 * parallel and returns when all are done. `grain` is the largest range
 * given to one call (=0: weft chooses, by the size, the worker count and
 * the time elements take). Ranges are split in halves so that idle workers
 * steal the largest pieces, and only while the rest is worth a steal (a
 * few microseconds, by the time elements took so far or took last time in
 * the same fn): a small or cheap loop runs in the caller's fiber in a few
 * calls. From a job, on a runtime of 2-8 workers, a loop of at least as
 * many elements as workers that fn's last measured time per element on
 * this worker puts at >= 1.5 us is first cut into one contiguous slice
 * per worker, slice k offered to worker k (and taken back and run by the
 * caller if worker k has not taken it when the caller's own slice is
 * done), so the same worker gets the same part of each such loop; a range
 * no longer than a given grain stays one call. From a job it runs there
 * and waits for pieces others run (after a sliced loop, spinning briefly
 * first), suspending; from a plain thread it blocks. Returns 0, -EINVAL,
 * -ENOMEM, -ESHUTDOWN. */
WEFT_EXTERN int weft_parallel_for(weft_runtime_t* rt, size_t begin, size_t end,
                                  size_t grain, weft_range_cb fn, void* arg);

/* weft_stats: fills `s` with totals. Returns the worker count, or -EINVAL.
 * Any thread; the figures are a racy snapshot. */
WEFT_EXTERN int weft_stats(weft_runtime_t* rt, weft_stats_t* s);

/* weft_worker_stats: one worker's figures. Returns 0, or -EINVAL (worker
 * out of range, including before the runtime started). */
WEFT_EXTERN int weft_worker_stats(weft_runtime_t* rt, unsigned worker,
                                  weft_worker_stats_t* s);

/* weft_strerror: a message for an error code (negative errno); never NULL.
 * weft_err_name: its name ("EINVAL"), or "UNKNOWN". */
WEFT_EXTERN const char* weft_strerror(int err);
WEFT_EXTERN const char* weft_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H_ */
