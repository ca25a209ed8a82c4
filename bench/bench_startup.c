/* bench_startup.c: startup and teardown, each phase timed on its own
 * (issue 4, item 8). One cycle, from the main thread: weft_runtime_create,
 * spawn one job and wait for it (the workers start lazily, here), then
 * weft_runtime_destroy. One BENCH line each (impl=weft, us):
 *   startup_first_process_us  the whole first cycle in a fresh process,
 *                 which alone pays one-time costs (hwloc, first touches):
 *                 the median over FIRSTS (default 15) runs of this program
 *                 re-executed, as one sample swings by 3x here
 *   startup_create_us     p50 of weft_runtime_create
 *   startup_first_job_us  p50 of spawn + wait of the first job
 *   startup_destroy_us    p50 of weft_runtime_destroy
 *   startup_total_us      p50 of the cycle's total (not the sum of the p50s)
 * The p50s are over REPS cycles after the first. Every job must have run,
 * or the program exits 1.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix (selects lines);
 * REPS (default 200); FIRSTS (default 15). Runtimes that live under 10 ms,
 * as these do, start unbound and are never placed (docs/topology.md): the
 * later cycles include no pinning.
 */
#define _GNU_SOURCE
#include <unistd.h>

#include "bench_kernels.h"
#include "weft.h"

static void first_job(void* arg) {
  *(int*)arg = 1;
}

typedef struct {
  double create;
  double first_job;
  double destroy;
  double total;
} cycle_t;

static cycle_t cycle(const weft_config_t* cfg) {
  weft_runtime_t* rt;
  weft_counter_t c;
  cycle_t r;
  int ran = 0;
  int err;
  uint64_t t0 = bk_now_ns();
  uint64_t t1;
  uint64_t t2;
  uint64_t t3;

  err = weft_runtime_create(&rt, cfg);
  t1 = bk_now_ns();
  if (err == 0) {
    weft_counter_init(&c, 0);
    err = weft_spawn(rt, first_job, &ran, &c);
  }
  if (err != 0) {
    fprintf(stderr, "startup: %s\n", weft_strerror(err));
    exit(1);
  }
  weft_counter_wait(&c, 0);
  t2 = bk_now_ns();
  err = weft_runtime_destroy(rt);
  t3 = bk_now_ns();
  if (err != 0 || ran != 1) {
    fprintf(stderr, "startup: the job did not run (%d)\n", err);
    exit(1);
  }
  r.create = (double)(t1 - t0) / 1e3;
  r.first_job = (double)(t2 - t1) / 1e3;
  r.destroy = (double)(t3 - t2) / 1e3;
  r.total = (double)(t3 - t0) / 1e3;
  return r;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return (x > y) - (x < y);
}

static double p50(double* v, size_t n) {
  qsort(v, n, sizeof(*v), cmp_double);
  return v[n / 2];
}

/* Every cycle is run whatever BENCH_ONLY says (the phases come together);
 * it selects the lines printed. */
static void report(const char* name, double* v, size_t n) {
  if (bk_wanted(name))
    bk_line(name, "weft", p50(v, n), "us");
}

/* The first cycle of FIRSTS fresh processes (this program, re-executed
 * with BENCH_STARTUP_CHILD set: it prints its first cycle's total). */
static double first_process_p50(void) {
  long n = bk_env_long("FIRSTS", 15);
  double* v = bk_alloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  double r;
  long i;
  long got = 0;

  char self[4096];
  char cmd[4200];
  ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);

  if (len <= 0) {
    fprintf(stderr, "startup: cannot find this program\n");
    exit(1);
  }
  self[len] = '\0';
  snprintf(cmd, sizeof(cmd), "BENCH_STARTUP_CHILD=1 '%s'", self);
  for (i = 0; i < n; i++) {
    FILE* f = popen(cmd, "r");
    double t;
    if (f == NULL)
      break;
    if (fscanf(f, "%lf", &t) == 1)
      v[got++] = t;
    if (pclose(f) != 0)
      got = got > 0 ? got - 1 : 0;
  }
  if (got == 0) {
    fprintf(stderr, "startup: no fresh process ran\n");
    exit(1);
  }
  r = p50(v, (size_t)got);
  free(v);
  return r;
}

int main(void) {
  weft_config_t cfg;
  cycle_t first;
  double* create;
  double* job;
  double* destroy;
  double* total;
  long reps = bk_env_long("REPS", 200);
  long i;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  if (getenv("BENCH_STARTUP_CHILD") != NULL) {
    printf("%.3f\n", cycle(&cfg).total);
    return 0;
  }
  if (reps < 1)
    return 1;
  if (!bk_wanted("startup_first_process_us") &&
      !bk_wanted("startup_create_us") && !bk_wanted("startup_first_job_us") &&
      !bk_wanted("startup_destroy_us") && !bk_wanted("startup_total_us"))
    return 0;
  create = bk_alloc((size_t)reps * sizeof(double));
  job = bk_alloc((size_t)reps * sizeof(double));
  destroy = bk_alloc((size_t)reps * sizeof(double));
  total = bk_alloc((size_t)reps * sizeof(double));
  first.total = bk_wanted("startup_first_process_us") ? first_process_p50() : 0;
  cycle(&cfg); /* this process's first: not counted below */
  for (i = 0; i < reps; i++) {
    cycle_t c = cycle(&cfg);
    create[i] = c.create;
    job[i] = c.first_job;
    destroy[i] = c.destroy;
    total[i] = c.total;
  }
  report("startup_first_process_us", &first.total, 1);
  report("startup_create_us", create, (size_t)reps);
  report("startup_first_job_us", job, (size_t)reps);
  report("startup_destroy_us", destroy, (size_t)reps);
  report("startup_total_us", total, (size_t)reps);
  free(create);
  free(job);
  free(destroy);
  free(total);
  return 0;
}
