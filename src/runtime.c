/* runtime.c: creating, starting and destroying a runtime, and weft_run.
 *
 * Creation only records the configuration: workers, their deques and their
 * first fibers come at the first job (weft__runtime_start), so a runtime
 * that is made and dropped costs almost nothing. Destroy waits until every
 * submitted job has finished, found by a double collect of per-worker
 * submitted/completed counts that the parking path checks.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#define WEFT__DEFAULT_STACK (512 * 1024)
#define WEFT__DEFAULT_POOL 16
#define WEFT__DEFAULT_SPIN_US 1000

int weft_config_init(weft_config_t* cfg) {
  if (cfg == NULL)
    return -EINVAL;
  memset(cfg, 0, sizeof(*cfg));
  cfg->workers = 0;
  cfg->stack_size = WEFT__DEFAULT_STACK;
  cfg->fibers_per_worker = WEFT__DEFAULT_POOL;
  cfg->pin = 1;
  cfg->placement = WEFT_PLACEMENT_CORE;
  cfg->huge_stacks = 0;
  cfg->stack_prefault = WEFT_STACK_PREFAULT_NONE;
  cfg->idle_spin_us = WEFT__DEFAULT_SPIN_US;
  return 0;
}

int weft_config_preset(weft_config_t* cfg, weft_preset_t preset) {
  if (cfg == NULL)
    return -EINVAL;
  switch (preset) {
    case WEFT_PRESET_THROUGHPUT:
      /* Compute-bound jobs gain little from a core's second hardware
       * thread, which shares its execution units and L1/L2. */
      cfg->workers = 0;
      cfg->placement = WEFT_PLACEMENT_CORE;
      break;
    case WEFT_PRESET_LATENCY:
      /* A job handed to another worker (a steal, a resumed wait) finds its
       * data in the shared L3; no wake-up crosses a CCD or a socket. */
      cfg->workers = 0;
      cfg->placement = WEFT_PLACEMENT_CACHE;
      break;
    case WEFT_PRESET_BACKGROUND:
      /* Bound workers would fight the foreground threads on their cores;
       * unbound, the scheduler moves them out of the way. */
      cfg->workers = (unsigned)weft__topology_cores() / 4;
      if (cfg->workers == 0)
        cfg->workers = 1;
      cfg->placement = WEFT_PLACEMENT_NONE;
      break;
    default:
      return -EINVAL;
  }
  cfg->pin = 1;
  return 0;
}

static int config_check(const weft_config_t* cfg) {
  if (cfg->workers > WEFT__MAX_WORKERS)
    return -EINVAL;
  if ((unsigned)cfg->placement > WEFT_PLACEMENT_SPILL)
    return -EINVAL;
  if ((unsigned)cfg->stack_prefault > WEFT_STACK_PREFAULT_ALL)
    return -EINVAL;
  if (cfg->idle_spin_us > 1000000)
    return -EINVAL;
  /* A stack must hold the scheduling loop plus a job's frames. */
  if (cfg->stack_size < 16 * 1024 || cfg->stack_size > ((size_t)1 << 32))
    return -EINVAL;
  return 0;
}

bool weft__has_prefetchw;

/* CPUID once per process (a VM exit under a hypervisor): PREFETCHW is
 * leaf 0x80000001's ECX bit 8; the invariant TSC below. Written before any
 * worker starts (thread creation orders it before their reads); pthread_once
 * orders it for every creator. */
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static void cpu_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (__get_cpuid(0x80000001, &a, &b, &c, &d))
    weft__has_prefetchw = (c >> 8) & 1;
  /* Invariant TSC: leaf 0x80000007's EDX bit 8 (Intel and AMD). */
  if (__get_cpuid(0x80000007, &a, &b, &c, &d))
    weft__has_tsc = (d >> 8) & 1;
#endif
}

int weft_runtime_create(weft_runtime_t** out, const weft_config_t* cfg) {
  weft_runtime_t* rt;
  weft_config_t defaults;
  int err;

  if (out == NULL)
    return -EINVAL;
  *out = NULL;
  if (cfg == NULL) {
    weft_config_init(&defaults);
    cfg = &defaults;
  }
  err = config_check(cfg);
  if (err != 0)
    return err;
  pthread_once(&cpu_once, cpu_detect);
  if (posix_memalign((void**)&rt, WEFT__CACHE_LINE, sizeof(*rt)) != 0)
    return -ENOMEM;
  memset(rt, 0, sizeof(*rt));
  rt->cfg = *cfg;
  weft__inject_init(&rt->inject);
  atomic_init(&rt->state, WEFT__RT_NEW);
  atomic_init(&rt->stop, 0);
  atomic_init(&rt->want_quiet, 0);
  atomic_init(&rt->quiet, 0);
  atomic_init(&rt->fibers_lock.locked, 0);
  atomic_init(&rt->prov_lock.locked, 0);
  if (pthread_mutex_init(&rt->start_lock, NULL) != 0) {
    free(rt);
    return -ENOMEM;
  }
  *out = rt;
  return 0;
}

weft_runtime_t* weft_runtime_self(void) {
  weft__worker_t* w = weft__worker_current();
  return w != NULL ? w->rt : NULL;
}

static void workers_free(weft_runtime_t* rt) {
  unsigned i;
  int p;
  free(rt->prov_cpus); /* the threads are gone */
  rt->prov_cpus = NULL;
  rt->prov_none = false;
  if (rt->workers == NULL)
    return;
  for (i = 0; i < rt->nworkers; i++) {
    weft__worker_t* w = &rt->workers[i];
    weft__stream_close(w); /* every job ran: it only drops the block */
    for (p = 0; p < WEFT__NPRIO; p++)
      weft__deque_destroy(&w->dq[p]);
  }
  free(rt->workers);
  rt->workers = NULL;
  weft__job_destroy_all(rt);
  weft__range_pool_free(rt);
}

static int workers_alloc(weft_runtime_t* rt, unsigned n) {
  unsigned i;
  int p;
  int err;

  if (posix_memalign((void**)&rt->workers, WEFT__CACHE_LINE,
                     n * sizeof(*rt->workers)) != 0) {
    rt->workers = NULL;
    return -ENOMEM;
  }
  memset(rt->workers, 0, n * sizeof(*rt->workers));
  rt->nworkers = n;
  for (i = 0; i < n; i++) {
    weft__worker_t* w = &rt->workers[i];
    w->rt = rt;
    w->index = i;
    weft__inject_init(&w->mailbox);
    atomic_init(&w->parker.state, 0);
    atomic_init(&w->rslot.lock.locked, 0);
    atomic_init(&w->rslot.blk, NULL);
    atomic_init(&w->rslot.span, 0);
    atomic_init(&w->sslot.lock.locked, 0);
    atomic_init(&w->sslot.blk, NULL);
    atomic_init(&w->sslot.next, 0);
    atomic_init(&w->sslot.looked, (uint64_t)UINT32_MAX << 32);
    atomic_init(&w->sslot.end, 0);
    atomic_init(&w->offer, NULL);
    for (p = 0; p < WEFT__NPRIO; p++) {
      err = weft__deque_init(&w->dq[p], p == WEFT_PRIORITY_NORMAL ? 10 : 4);
      if (err != 0)
        return err;
    }
    w->current = weft__fiber_get(w);
    if (w->current == NULL)
      return -ENOMEM;
  }
  return 0;
}

/* The stack settings' environment overrides, read at the start like
 * WEFT_PLACEMENT (topology.c) and reported the same way: a bad value fails
 * the start with -EBADMSG and says why on stderr. */
static int stack_config_env(weft_config_t* cfg) {
  static const char* const prefault[] = {"none", "page", "all"};
  const char* s = getenv("WEFT_HUGE_STACKS");
  int i;

  if (s != NULL && *s != '\0') {
    if (strcmp(s, "0") != 0 && strcmp(s, "1") != 0) {
      fprintf(stderr, "weft: WEFT_HUGE_STACKS=\"%s\": expected 0 or 1\n", s);
      return -EBADMSG;
    }
    cfg->huge_stacks = *s == '1';
  }
  s = getenv("WEFT_STACK_PREFAULT");
  if (s != NULL && *s != '\0') {
    for (i = 0; i < 3 && strcmp(s, prefault[i]) != 0; i++)
      continue;
    if (i == 3) {
      fprintf(stderr,
              "weft: WEFT_STACK_PREFAULT=\"%s\": expected none, page or all\n",
              s);
      return -EBADMSG;
    }
    cfg->stack_prefault = (weft_stack_prefault_t)i;
  }
  return 0;
}

/* The placer: the first runtime in a process starts before hwloc's
 * topology is loaded (a millisecond or two here, more than the rest of a
 * start), unbound and in a flat steal order. A detached thread loads it,
 * plans the placement asked for, binds every worker's thread from there,
 * publishes the plan (steal order, stacks made from then on) and binds the
 * stacks made so far. It waits WEFT__PLACE_DELAY_MS first: a load that
 * overlaps the start slows it down as much as doing it in line (measured:
 * +1.2 ms on a first create, job and destroy, even with the placer at
 * SCHED_IDLE), and a runtime gone by then needs no load at all. The load
 * needs no runtime, so a runtime destroyed meanwhile does not wait for it:
 * it only waits for a placement under way, which the request's lock holds
 * off while its threads exist. */
#define WEFT__PLACE_DELAY_MS 10

typedef struct weft__placer_s {
  pthread_mutex_t lock;
  pthread_cond_t stopped; /* signalled when rt goes */
  int refs;               /* the runtime's and the thread's; under lock */
  weft_runtime_t* rt;     /* NULL once the runtime is stopping */
} placer_t;

/* Placers still running, which the library's destructor waits for: a
 * thread left inside hwloc at exit is a leak report waiting to happen. */
static atomic_int placers_running;

/* A child of fork() has none of the parent's threads, so none of its
 * placers: without this the child's exit() would wait for them forever. */
static void placers_fork_child(void) {
  atomic_store_explicit(&placers_running, 0, memory_order_relaxed);
}

__attribute__((constructor)) static void placers_atfork(void) {
  pthread_atfork(NULL, NULL, placers_fork_child);
}

__attribute__((destructor)) static void placers_wait(void) {
  /* Acquire pairs with the release decrement at each placer's end. */
  while (atomic_load_explicit(&placers_running, memory_order_acquire) != 0)
    sched_yield();
}

static void placer_drop(placer_t* p) {
  int refs;
  pthread_mutex_lock(&p->lock);
  refs = --p->refs;
  pthread_mutex_unlock(&p->lock);
  if (refs == 0) {
    pthread_cond_destroy(&p->stopped);
    pthread_mutex_destroy(&p->lock);
    free(p);
  }
}

static void place(weft_runtime_t* rt) {
  weft__plan_t* plan = malloc(sizeof(*plan));
  unsigned i;

  if (plan != NULL &&
      weft__topology_plan(plan, NULL, rt->nworkers, rt->place_later) != 0) {
    free(plan);
    plan = NULL; /* no hwloc: the start's plan stays, as it would */
  }
  if (plan != NULL && plan->nworkers != rt->nworkers) {
    weft__topology_plan_free(plan);
    free(plan);
    plan = NULL;
  }
  /* No worker binds itself provisionally from here on (worker.c): the
   * lock waits for a bind under way, and after it nobody writes the
   * workers' prov_ fields, which we read below without it. */
  weft__spin_lock(&rt->prov_lock);
  rt->place_done = true;
  weft__spin_unlock(&rt->prov_lock);
  for (i = 0; i < rt->nworkers; i++) {
    weft__worker_t* w = &rt->workers[i];
    bool run0 = rt->run_mode && i == 0;
    pthread_t t = run0 ? rt->run_thread : w->thread;
    if (!w->thread_started && !run0)
      continue;
    if (plan != NULL && plan->bind &&
        weft__topology_pin_thread(plan, i, t) == 0)
      atomic_fetch_add_explicit(&rt->workers_pinned, 1, memory_order_relaxed);
    else if (w->prov_bound)
      /* No binding plan after all, or it failed here: back to what it
       * had, as the start's unbound plan would run. */
      pthread_setaffinity_np(t, sizeof(w->prov_prev), &w->prov_prev);
    w->prov_bound = false;
  }
  if (plan == NULL)
    return;
  /* Release: pairs with the acquire in weft__runtime_plan. */
  atomic_store_explicit(&rt->placed, plan, memory_order_release);
  atomic_fetch_add_explicit(&rt->stacks_bound_late,
                            weft__fiber_bind_all(rt, plan),
                            memory_order_relaxed);
}

static void* placer_main(void* arg) {
  placer_t* p = arg;
  struct timespec until;
  bool wanted;

  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_nsec += WEFT__PLACE_DELAY_MS * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  pthread_mutex_lock(&p->lock);
  while (p->rt != NULL &&
         pthread_cond_timedwait(&p->stopped, &p->lock, &until) != ETIMEDOUT)
    ;
  wanted = p->rt != NULL;
  pthread_mutex_unlock(&p->lock);
  if (wanted)
    weft__topology_handle(); /* the load: no runtime needed, nor held */
  pthread_mutex_lock(&p->lock);
  if (p->rt != NULL) {
    place(p->rt);
    /* Release: pairs with the acquire in weft_stats, which then sees the
     * placement's counts. */
    atomic_store_explicit(&p->rt->placing, 0, memory_order_release);
  }
  pthread_mutex_unlock(&p->lock);
  placer_drop(p);
  atomic_fetch_sub_explicit(&placers_running, 1, memory_order_release);
  return NULL;
}

static int cond_init_monotonic(pthread_cond_t* c) {
  pthread_condattr_t attr;
  int err = pthread_condattr_init(&attr);
  if (err != 0)
    return err;
  err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if (err == 0)
    err = pthread_cond_init(c, &attr);
  pthread_condattr_destroy(&attr);
  return err;
}

static void placer_start(weft_runtime_t* rt) {
  placer_t* p = malloc(sizeof(*p));
  pthread_attr_t attr;
  pthread_t t;
  bool started = false;

  atomic_store_explicit(&rt->placing, 1, memory_order_relaxed);
  if (p != NULL && cond_init_monotonic(&p->stopped) == 0 &&
      pthread_mutex_init(&p->lock, NULL) == 0) {
    p->refs = 2;
    p->rt = rt;
    rt->placer = p;
    atomic_fetch_add_explicit(&placers_running, 1, memory_order_relaxed);
    if (pthread_attr_init(&attr) == 0) {
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      started = pthread_create(&t, &attr, placer_main, p) == 0;
      pthread_attr_destroy(&attr);
    }
    if (!started) {
      atomic_fetch_sub_explicit(&placers_running, 1, memory_order_relaxed);
      p->refs = 1;
    }
  } else {
    free(p);
  }
  if (!started) {
    place(rt); /* no thread to spare: place now */
    atomic_store_explicit(&rt->placing, 0, memory_order_release);
  }
}

/* The runtime is stopping: a placement under way ends first (its threads
 * still exist), and none starts after. */
static void placer_stop(weft_runtime_t* rt) {
  placer_t* p = rt->placer;
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->lock);
  p->rt = NULL;
  pthread_cond_signal(&p->stopped);
  pthread_mutex_unlock(&p->lock);
  placer_drop(p);
  rt->placer = NULL;
  atomic_store_explicit(&rt->placing, 0, memory_order_relaxed);
}

int weft__runtime_start(weft_runtime_t* rt) {
  weft_placement_t later = WEFT_PLACEMENT_NONE;
  unsigned n;
  unsigned i;
  int err = 0;

  /* Acquire pairs with the release store below: a thread that sees
   * RUNNING sees the workers, deques and plan. */
  if (WEFT__LIKELY(atomic_load_explicit(&rt->state, memory_order_acquire) !=
                   WEFT__RT_NEW))
    return 0;
  pthread_mutex_lock(&rt->start_lock);
  if (atomic_load_explicit(&rt->state, memory_order_relaxed) != WEFT__RT_NEW)
    goto out;
  /* The plan comes first: with workers = 0 it says how many there are. */
  err = weft__topology_plan_start(&rt->plan, &rt->cfg, &later);
  n = rt->plan.nworkers;
  if (err == 0)
    err = stack_config_env(&rt->cfg);
  if (err == 0)
    err = weft__stack_install_handler();
  if (err == 0)
    err = weft__idle_init(&rt->idle, n);
  if (err == 0)
    err = workers_alloc(rt, n);
  if (err != 0)
    goto fail;
  if (later != WEFT_PLACEMENT_NONE) {
    /* Before the threads start: they read it at their first steal. */
    rt->place_later = later;
    for (i = 0; i < n; i++)
      rt->workers[i].prov_pending = true;
  }
  /* In weft_run the calling thread becomes worker 0 itself. */
  for (i = rt->run_mode ? 1 : 0; i < n; i++) {
    weft__worker_t* w = &rt->workers[i];
    if (pthread_create(&w->thread, NULL, weft__worker_main, w) != 0) {
      err = -EAGAIN;
      break;
    }
    w->thread_started = true;
  }
  if (err != 0) {
    /* Stop the threads that did start; they found no work yet. */
    atomic_store_explicit(&rt->stop, 1, memory_order_release);
    weft__idle_notify_all(rt);
    for (i = 0; i < n; i++)
      if (rt->workers[i].thread_started)
        pthread_join(rt->workers[i].thread, NULL);
    goto fail;
  }
  if (later != WEFT_PLACEMENT_NONE) {
    if (rt->run_mode)
      rt->run_thread = pthread_self(); /* weft_run's caller, worker 0 */
    placer_start(rt);
  }
  atomic_store_explicit(&rt->state, WEFT__RT_RUNNING, memory_order_release);
out:
  pthread_mutex_unlock(&rt->start_lock);
  return err;

fail:
  weft__fiber_destroy_all(rt);
  workers_free(rt);
  weft__topology_plan_free(&rt->plan);
  weft__idle_destroy(&rt->idle);
  rt->nworkers = 0;
  atomic_store_explicit(&rt->stop, 0, memory_order_relaxed);
  pthread_mutex_unlock(&rt->start_lock);
  return err;
}

bool weft__runtime_quiescent(weft_runtime_t* rt) {
  uint64_t done = 0;
  uint64_t submitted;
  unsigned i;

  /* Completions first, then submissions. A job's submissions happen before
   * its completion (release in run_job, acquire here), so every job whose
   * completion we count has its children counted below; equal sums mean
   * nothing is queued, running or suspended. The first fence serves
   * wait_quiet, which stores want_quiet and then collects: C11 orders that
   * store before these loads only through a seq_cst fence (x86 and ARMv8
   * would do without), the other half of the fence a worker runs before
   * it loads want_quiet. */
  atomic_thread_fence(memory_order_seq_cst);
  for (i = 0; i < rt->nworkers; i++)
    done +=
        atomic_load_explicit(&rt->workers[i].completed, memory_order_acquire);
  atomic_thread_fence(memory_order_seq_cst);
  submitted =
      atomic_load_explicit(&rt->outside_submitted, memory_order_acquire);
  for (i = 0; i < rt->nworkers; i++)
    submitted +=
        atomic_load_explicit(&rt->workers[i].submitted, memory_order_acquire);
  return done == submitted;
}

void weft__runtime_check_quiet(weft_runtime_t* rt) {
  if (!weft__runtime_quiescent(rt))
    return;
  if (rt->run_mode) {
    atomic_store_explicit(&rt->stop, 1, memory_order_release);
    weft__idle_notify_all(rt);
  }
  /* Release pairs with the acquire load in wait_quiet. */
  atomic_store_explicit(&rt->quiet, 1, memory_order_release);
  weft__futex_wake(&rt->quiet, 1);
}

/* Blocks the calling (non-worker) thread until every job is done. */
static void wait_quiet(weft_runtime_t* rt) {
  /* seq_cst store then the collect: pairs with the fence a parking worker
   * runs before it loads want_quiet (idle_park), so either it checks for
   * us, or we see its last completion. */
  atomic_store_explicit(&rt->want_quiet, 1, memory_order_seq_cst);
  while (!weft__runtime_quiescent(rt) &&
         atomic_load_explicit(&rt->quiet, memory_order_acquire) == 0)
    weft__futex_wait(&rt->quiet, 0);
}

static void runtime_free(weft_runtime_t* rt) {
  /* Acquire pairs with ready_foreign's release decrement: a thread that
   * woke one of our fibers from outside may still be waking a worker after
   * that fiber's job, the last, finished. Briefly: a notify's length. */
  while (atomic_load_explicit(&rt->foreign, memory_order_acquire) != 0)
    sched_yield();
  if (rt->bridge_stop != NULL)
    rt->bridge_stop(rt->bridge);
  if (rt->bridge_free != NULL)
    rt->bridge_free(rt->bridge);
  weft__fiber_destroy_all(rt);
  workers_free(rt);
  weft__topology_plan_free(&rt->plan);
  if (rt->placed != NULL) {
    weft__topology_plan_free(rt->placed);
    free(rt->placed);
  }
  weft__idle_destroy(&rt->idle);
  pthread_mutex_destroy(&rt->start_lock);
  free(rt);
}

static void stop_and_join(weft_runtime_t* rt) {
  unsigned i;
  placer_stop(rt); /* it binds worker threads: they must still exist */
  atomic_store_explicit(&rt->stop, 1, memory_order_seq_cst);
  weft__idle_notify_all(rt);
  for (i = 0; i < rt->nworkers; i++)
    if (rt->workers[i].thread_started)
      pthread_join(rt->workers[i].thread, NULL);
}

int weft_runtime_destroy(weft_runtime_t* rt) {
  weft__worker_t* w;

  if (rt == NULL)
    return -EINVAL;
  w = weft__worker_current();
  if (w != NULL && w->rt == rt)
    return -EDEADLK;
  /* From a job of another runtime: the decrements our worker holds back
   * may be what rt's last jobs wait for, and this thread is about to
   * block. */
  if (w != NULL)
    weft__worker_dec_flush(w);
  /* A bridge first: it cancels the I/O fibers wait on, so they finish. */
  if (rt->bridge_stop != NULL)
    rt->bridge_stop(rt->bridge);
  if (atomic_load_explicit(&rt->state, memory_order_acquire) ==
      WEFT__RT_RUNNING) {
    wait_quiet(rt);
    stop_and_join(rt);
  }
  runtime_free(rt);
  return 0;
}

int weft_run(const weft_config_t* cfg, weft_job_cb main_fn, void* arg) {
  weft_runtime_t* rt;
  weft__worker_t* w;
  cpu_set_t mask;
  bool have_mask;
  int err;

  if (main_fn == NULL)
    return -EINVAL;
  w = weft__worker_current();
  if (w != NULL)
    return -EDEADLK;
  err = weft_runtime_create(&rt, cfg);
  if (err != 0)
    return err;
  /* The calling thread is worker 0, bound to its PU by the plan (at the
   * start, or by the placer): it goes back to the caller as it came. */
  have_mask = sched_getaffinity(0, sizeof(mask), &mask) == 0;
  rt->run_mode = true;
  err = weft__runtime_start(rt);
  if (err == 0)
    err = weft_spawn(rt, main_fn, arg, NULL);
  if (err != 0) {
    if (atomic_load_explicit(&rt->state, memory_order_relaxed) ==
        WEFT__RT_RUNNING) {
      stop_and_join(rt);
      /* Worker 0 never ran: its first fiber is freed with the rest. */
    }
    runtime_free(rt);
    if (have_mask)
      sched_setaffinity(0, sizeof(mask), &mask);
    return err;
  }
  /* From here the first worker to find every job done stops the runtime. */
  atomic_store_explicit(&rt->want_quiet, 1, memory_order_seq_cst);
  weft__worker_run_here(&rt->workers[0]);
  stop_and_join(rt);
  runtime_free(rt);
  if (have_mask)
    sched_setaffinity(0, sizeof(mask), &mask);
  return 0;
}
