/* bench_jobs.c: the core's job-system benchmarks, the peers' workloads
 * (../shared/peers/README.md) measured the same way, one BENCH line each:
 *   spawn_empty   1M empty jobs from one spawning job, then wait (jobs/s)
 *   spawn_batch   the same through weft_spawn_batch (jobs/s)
 *   fib30         fib(30) with a job per call, no cut-off (ms)
 *   imbalanced    parallel-for over 1M elements, element i costs i % 1000
 *                 LCG steps (elems/s)
 *   imbalanced_tri  element i costs i * 2000 / 1M steps (elems/s)
 *   cold_wake_p50/p99  submit from an outside thread to a pool idle for
 *                 2 ms until the job starts; the submitter blocks (us)
 * THREADS (workers, default 2) as the peers; BENCH_ONLY=name runs one.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long env_long(const char* name, long dflt) {
  const char* s = getenv(name);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 10) : dflt;
}

static void bench_line(const char* name, double v, const char* unit) {
  printf("BENCH name=%s impl=weft value=%.3f unit=%s\n", name, v, unit);
  fflush(stdout);
}

/* BENCH_STATS=1: the runtime's counters on stderr after each workload. */
static void print_stats(weft_runtime_t* rt, const char* what) {
  static weft_stats_t last;
  weft_stats_t s;
  if (env_long("BENCH_STATS", 0) == 0)
    return;
  weft_stats(rt, &s);
  fprintf(stderr,
          "stats %s: jobs %llu steals %llu failed %llu parks %llu "
          "switches %llu fibers %llu\n",
          what, (unsigned long long)(s.jobs_run - last.jobs_run),
          (unsigned long long)(s.steals - last.steals),
          (unsigned long long)(s.failed_steals - last.failed_steals),
          (unsigned long long)(s.parks - last.parks),
          (unsigned long long)(s.fiber_switches - last.fiber_switches),
          (unsigned long long)s.fibers_created);
  last = s;
}

static int wanted(const char* name) {
  const char* only = getenv("BENCH_ONLY");
  return only == NULL || *only == '\0' || strstr(only, name) != NULL;
}

/* ---- spawn_empty / spawn_batch --------------------------------------------
 */

#define SPAWN_N 1000000

static atomic_long ran;

static void empty_job(void* arg) {
  (void)arg;
  atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
}

typedef struct {
  int batch;
  double seconds;
} spawn_arg_t;

static void spawner(void* arg) {
  spawn_arg_t* a = arg;
  weft_counter_t c;
  uint64_t t0;
  long i;

  weft_counter_init(&c, 0);
  atomic_store(&ran, 0);
  t0 = now_ns();
  if (!a->batch) {
    for (i = 0; i < SPAWN_N; i++)
      weft_spawn(NULL, empty_job, NULL, &c);
  } else {
    static weft_job_t jobs[1024];
    for (i = 0; i < 1024; i++) {
      jobs[i].fn = empty_job;
      jobs[i].arg = NULL;
    }
    for (i = 0; i < SPAWN_N; i += 1000)
      weft_spawn_batch(NULL, jobs, 1000, &c);
  }
  weft_counter_wait(&c, 0);
  a->seconds = (double)(now_ns() - t0) / 1e9;
  if (atomic_load(&ran) != SPAWN_N) {
    fprintf(stderr, "spawn: ran %ld of %d\n", atomic_load(&ran), SPAWN_N);
    exit(1);
  }
}

static void run_job_sync(weft_runtime_t* rt, weft_job_cb fn, void* arg) {
  weft_counter_t c;
  weft_counter_init(&c, 0);
  weft_spawn(rt, fn, arg, &c);
  weft_counter_wait(&c, 0);
}

static void bench_spawn(weft_runtime_t* rt, int batch) {
  double best = 1e18;
  int rep;
  for (rep = 0; rep < 5; rep++) {
    spawn_arg_t a = {batch, 0};
    run_job_sync(rt, spawner, &a);
    if (a.seconds < best)
      best = a.seconds;
  }
  bench_line(batch ? "spawn_batch" : "spawn_empty", SPAWN_N / best, "jobs/s");
}

/* ---- fib30 ----------------------------------------------------------------
 */

typedef struct {
  int n;
  long r;
} fib_t;

static void fib_job(void* arg) {
  fib_t* f = arg;
  fib_t a;
  fib_t b;
  weft_counter_t c;
  if (f->n < 2) {
    f->r = f->n;
    return;
  }
  a.n = f->n - 1;
  b.n = f->n - 2;
  weft_counter_init(&c, 0);
  weft_spawn(NULL, fib_job, &a, &c);
  weft_spawn(NULL, fib_job, &b, &c);
  weft_counter_wait(&c, 0);
  f->r = a.r + b.r;
}

static void bench_fib(weft_runtime_t* rt) {
  double best = 1e18;
  int rep;
  for (rep = 0; rep < 3; rep++) {
    fib_t f = {30, 0};
    uint64_t t0 = now_ns();
    run_job_sync(rt, fib_job, &f);
    double ms = (double)(now_ns() - t0) / 1e6;
    if (f.r != 832040)
      exit(1);
    if (ms < best)
      best = ms;
  }
  bench_line("fib30", best, "ms");
}

/* ---- imbalanced parallel-for (the peers' LCG units) ------------------------
 */

#define IMB_N 1000000
static uint64_t* imb_out;

static uint64_t lcg(uint64_t x, unsigned w) {
  unsigned k;
  for (k = 0; k < w; k++)
    x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x;
}

static void imb_body(size_t b, size_t e, void* arg) {
  size_t i;
  (void)arg;
  for (i = b; i < e; i++)
    imb_out[i] = lcg(i, (unsigned)(i % 1000));
}

static void tri_body(size_t b, size_t e, void* arg) {
  size_t i;
  (void)arg;
  for (i = b; i < e; i++)
    imb_out[i] = lcg(i, (unsigned)(i * 2000 / IMB_N));
}

static void bench_imbalanced(weft_runtime_t* rt, const char* name,
                             weft_range_cb body) {
  double best = 1e18;
  int rep;
  for (rep = 0; rep < 3; rep++) {
    uint64_t t0 = now_ns();
    weft_parallel_for(rt, 0, IMB_N, 0, body, NULL);
    double s = (double)(now_ns() - t0) / 1e9;
    if (s < best)
      best = s;
  }
  bench_line(name, IMB_N / best, "elems/s");
}

/* ---- cold wake -------------------------------------------------------------
 */

typedef struct {
  pthread_mutex_t m;
  pthread_cond_t cv;
  uint64_t started;
} wake_t;

static void wake_job(void* arg) {
  wake_t* w = arg;
  uint64_t t = now_ns();
  pthread_mutex_lock(&w->m);
  w->started = t;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->m);
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return (x > y) - (x < y);
}

static void bench_cold_wake(weft_runtime_t* rt) {
  enum { ROUNDS = 300 };
  static double lat[ROUNDS];
  wake_t w;
  int i;
  pthread_mutex_init(&w.m, NULL);
  pthread_cond_init(&w.cv, NULL);
  for (i = 0; i < ROUNDS; i++) {
    uint64_t t0;
    usleep(2000);
    pthread_mutex_lock(&w.m);
    w.started = 0;
    t0 = now_ns();
    weft_spawn(rt, wake_job, &w, NULL);
    while (w.started == 0)
      pthread_cond_wait(&w.cv, &w.m);
    lat[i] = (double)(w.started - t0) / 1e3;
    pthread_mutex_unlock(&w.m);
  }
  qsort(lat, ROUNDS, sizeof(lat[0]), cmp_double);
  bench_line("cold_wake_p50", lat[ROUNDS / 2], "us");
  bench_line("cold_wake_p99", lat[ROUNDS * 99 / 100], "us");
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)env_long("THREADS", 2);
  cfg.pin = (int)env_long("WEFT_PIN", 1);
  if (weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  imb_out = calloc(IMB_N, sizeof(*imb_out));
  if (wanted("spawn_empty")) {
    bench_spawn(rt, 0);
    print_stats(rt, "spawn_empty");
  }
  if (wanted("spawn_batch")) {
    bench_spawn(rt, 1);
    print_stats(rt, "spawn_batch");
  }
  if (wanted("fib30")) {
    bench_fib(rt);
    print_stats(rt, "fib30");
  }
  if (wanted("imbalanced")) {
    bench_imbalanced(rt, "imbalanced", imb_body);
    print_stats(rt, "imbalanced");
  }
  if (wanted("imbalanced_tri")) {
    bench_imbalanced(rt, "imbalanced_tri", tri_body);
    print_stats(rt, "imbalanced_tri");
  }
  if (wanted("cold_wake")) {
    bench_cold_wake(rt);
    print_stats(rt, "cold_wake");
  }
  weft_runtime_destroy(rt);
  free(imb_out);
  return 0;
}
