/* runtime.c: creating, starting and destroying a runtime, and weft_run.
 *
 * Creation only records the configuration: workers, their deques and their
 * first fibers come at the first job (weft__runtime_start), so a runtime
 * that is made and dropped costs almost nothing. Destroy waits until every
 * submitted job has finished, found by a double collect of per-worker
 * submitted/completed counts that the parking path checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WEFT__DEFAULT_STACK (512 * 1024)
#define WEFT__DEFAULT_POOL 16

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
  /* A stack must hold the scheduling loop plus a job's frames. */
  if (cfg->stack_size < 16 * 1024 || cfg->stack_size > ((size_t)1 << 32))
    return -EINVAL;
  return 0;
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
  if (rt->workers == NULL)
    return;
  for (i = 0; i < rt->nworkers; i++) {
    weft__worker_t* w = &rt->workers[i];
    for (p = 0; p < WEFT__NPRIO; p++)
      weft__deque_destroy(&w->dq[p]);
  }
  free(rt->workers);
  rt->workers = NULL;
  weft__job_destroy_all(rt);
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

int weft__runtime_start(weft_runtime_t* rt) {
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
  err = weft__topology_plan_config(&rt->plan, &rt->cfg);
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
   * nothing is queued, running or suspended. */
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
  if (rt->bridge_stop != NULL)
    rt->bridge_stop(rt->bridge);
  if (rt->bridge_free != NULL)
    rt->bridge_free(rt->bridge);
  weft__fiber_destroy_all(rt);
  workers_free(rt);
  weft__topology_plan_free(&rt->plan);
  weft__idle_destroy(&rt->idle);
  pthread_mutex_destroy(&rt->start_lock);
  free(rt);
}

static void stop_and_join(weft_runtime_t* rt) {
  unsigned i;
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
  int err;

  if (main_fn == NULL)
    return -EINVAL;
  w = weft__worker_current();
  if (w != NULL)
    return -EDEADLK;
  err = weft_runtime_create(&rt, cfg);
  if (err != 0)
    return err;
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
    return err;
  }
  /* From here the first worker to find every job done stops the runtime. */
  atomic_store_explicit(&rt->want_quiet, 1, memory_order_seq_cst);
  weft__worker_run_here(&rt->workers[0]);
  stop_and_join(rt);
  runtime_free(rt);
  return 0;
}
