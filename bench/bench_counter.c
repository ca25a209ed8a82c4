/* bench_counter.c: counter contention (issue 4, item 10). N empty jobs
 * (default 1M) finish on one counter, or on sharded counters under a
 * parent; each runs from a root job, best of 5. Lines (impl=weft):
 *   counter_flat        the root spawns all N jobs (weft_spawn_batch, 1024
 *                       at a time) on one counter and waits (jobs/s)
 *   counter_group64     the root spawns N/64 group jobs on a parent counter;
 *                       each spawns its 64 jobs in one batch on a counter of
 *                       its own and waits on it (jobs/s)
 *   counter_perworker   the root spawns one shard job pinned to each
 *                       worker; each spawns N/workers jobs (1024 at a time)
 *                       on its own counter and waits (jobs/s)
 *   counter_single      the root spawns all N jobs one weft_spawn each on one
 *                       counter and waits (jobs/s)
 *   <name>_rmw          atomic read-modify-writes on counters per job,
 *                       measured: the runtime's counter_rmws statistic
 *                       (spawn increments and job-end decrements, CAS
 *                       retries included) over the runs (rmw/job). The plain
 *                       design (one increment per spawn or batch, one
 *                       decrement per job) would take 2 for counter_single
 *                       and 1 + 1/1024 for counter_flat; workers now apply a
 *                       run of job ends on one counter as one decrement.
 * Every job sets its own flag (a plain store, no atomic, so the only RMWs
 * on shared lines are the counters'); all N flags are checked after each
 * run, and the program exits 1 if any job did not run.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix; JOBS (N).
 */
#define _GNU_SOURCE
#include "bench_kernels.h"
#include "weft.h"

#define BATCH 1024
#define GROUP 64

static uint8_t* flags;
static size_t njobs;
static unsigned nworkers;

static void leaf_job(void* arg) {
  *(uint8_t*)arg = 1;
}

/* Spawns jobs for flags [b, e) in batches of up to BATCH on c. */
static void spawn_leaves(size_t b, size_t e, weft_counter_t* c) {
  weft_job_t jobs[BATCH];
  while (b < e) {
    size_t n = e - b < BATCH ? e - b : BATCH;
    size_t k;
    int err;
    for (k = 0; k < n; k++) {
      jobs[k].fn = leaf_job;
      jobs[k].arg = &flags[b + k];
    }
    err = weft_spawn_batch(NULL, jobs, n, c);
    if (err != 0) {
      fprintf(stderr, "weft_spawn_batch: %s\n", weft_strerror(err));
      exit(1);
    }
    b += n;
  }
}

static void flat_root(void* arg) {
  weft_counter_t c;
  (void)arg;
  weft_counter_init(&c, 0);
  spawn_leaves(0, njobs, &c);
  weft_counter_wait(&c, 0);
}

typedef struct {
  size_t begin;
  size_t end;
} part_t;

static void part_job(void* arg) {
  part_t* p = arg;
  weft_counter_t c;
  weft_counter_init(&c, 0);
  spawn_leaves(p->begin, p->end, &c);
  weft_counter_wait(&c, 0);
}

/* The root of group64 (parts of GROUP jobs) and perworker (one part per
 * worker, pinned). */
typedef struct {
  part_t* parts;
  size_t nparts;
  int pinned;
} sharded_t;

static void sharded_root(void* arg) {
  sharded_t* s = arg;
  weft_counter_t parent;
  weft_job_t jobs[BATCH];
  size_t i = 0;
  weft_counter_init(&parent, 0);
  if (s->pinned) {
    for (i = 0; i < s->nparts; i++) {
      weft_spawn_opts_t opts = {WEFT_PRIORITY_NORMAL, (int)i};
      if (weft_spawn_ex(NULL, part_job, &s->parts[i], &parent, &opts) != 0)
        exit(1);
    }
  }
  while (i < s->nparts) {
    size_t n = s->nparts - i < BATCH ? s->nparts - i : BATCH;
    size_t k;
    for (k = 0; k < n; k++) {
      jobs[k].fn = part_job;
      jobs[k].arg = &s->parts[i + k];
    }
    if (weft_spawn_batch(NULL, jobs, n, &parent) != 0)
      exit(1);
    i += n;
  }
  weft_counter_wait(&parent, 0);
}

typedef struct {
  weft_job_cb fn;
  void* arg;
  double seconds;
} timed_t;

static void timed_job(void* arg) {
  timed_t* t = arg;
  uint64_t t0 = bk_now_ns();
  t->fn(t->arg);
  t->seconds = (double)(bk_now_ns() - t0) / 1e9;
}

static void single_root(void* arg) {
  weft_counter_t c;
  size_t i;
  (void)arg;
  weft_counter_init(&c, 0);
  for (i = 0; i < njobs; i++)
    if (weft_spawn(NULL, leaf_job, &flags[i], &c) != 0)
      exit(1);
  weft_counter_wait(&c, 0);
}

#define REPS 5

static void bench_variant(weft_runtime_t* rt, const char* name,
                          weft_job_cb root, void* arg) {
  char line[64];
  double best = 1e18;
  weft_stats_t s0;
  weft_stats_t s1;
  int rep;
  size_t i;

  weft_stats(rt, &s0);
  for (rep = 0; rep < REPS; rep++) {
    timed_t t = {root, arg, 0};
    weft_counter_t c;
    memset(flags, 0, njobs);
    weft_counter_init(&c, 0);
    weft_spawn(rt, timed_job, &t, &c);
    weft_counter_wait(&c, 0);
    for (i = 0; i < njobs; i++) {
      if (flags[i] != 1) {
        fprintf(stderr, "%s: job %zu did not run\n", name, i);
        exit(1);
      }
    }
    if (t.seconds < best)
      best = t.seconds;
  }
  weft_stats(rt, &s1);
  bk_line(name, "weft", (double)njobs / best, "jobs/s");
  snprintf(line, sizeof(line), "%s_rmw", name);
  /* The timing job's own spawn and end are in the count too (2 per run):
   * noise at 1M jobs. */
  bk_line(line, "weft",
          (double)(s1.counter_rmws - s0.counter_rmws) / ((double)njobs * REPS),
          "rmw/job");
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  nworkers = cfg.workers;
  njobs = (size_t)bk_env_long("JOBS", 1000000);
  if (nworkers < 1 || njobs < GROUP || njobs % GROUP != 0) {
    fprintf(stderr, "THREADS >= 1; JOBS a multiple of %d\n", GROUP);
    return 1;
  }
  if (weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  flags = bk_alloc(njobs);

  if (bk_wanted("counter_single"))
    bench_variant(rt, "counter_single", single_root, NULL);
  if (bk_wanted("counter_flat"))
    bench_variant(rt, "counter_flat", flat_root, NULL);
  if (bk_wanted("counter_group64")) {
    size_t ng = njobs / GROUP;
    part_t* parts = bk_alloc(ng * sizeof(part_t));
    sharded_t s = {parts, ng, 0};
    size_t i;
    for (i = 0; i < ng; i++) {
      parts[i].begin = i * GROUP;
      parts[i].end = (i + 1) * GROUP;
    }
    bench_variant(rt, "counter_group64", sharded_root, &s);
    free(parts);
  }
  if (bk_wanted("counter_perworker")) {
    part_t* parts = bk_alloc(nworkers * sizeof(part_t));
    sharded_t s = {parts, nworkers, 1};
    unsigned w;
    for (w = 0; w < nworkers; w++) {
      parts[w].begin = njobs * w / nworkers;
      parts[w].end = njobs * (w + 1) / nworkers;
    }
    bench_variant(rt, "counter_perworker", sharded_root, &s);
    free(parts);
  }
  weft_runtime_destroy(rt);
  free(flags);
  return 0;
}
