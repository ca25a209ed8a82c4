/* bench_stacks.c: fiber stacks on huge pages against normal ones (issue 5).
 * FIBERS jobs (default 512) each hold a fiber of their own, all suspended
 * at once, so their stacks are distinct; every job then takes ROUNDS turns
 * (default 20), each a weft_yield to the next fiber after touching its
 * stack:
 *   stack_switch_<b>     one cache line per turn: a context switch to a
 *                        different stack every time (ns per turn)
 *   stack_touch64k_<b>   64 KiB per turn, one write per cache line: the
 *                        working set is FIBERS x 64 KiB of distinct stacks,
 *                        beyond a 4 KiB-page TLB's reach (ns per turn)
 *   stack_faults_<b>     page faults per fiber while the fibers are made
 *                        and first touch 64 KiB (getrusage)
 *   stack_rss_<b>        resident KiB per fiber then (VmRSS): the price,
 *                        a whole huge page per huge stack (FIBERS x 2 MiB,
 *                        1 GiB by default, during the huge runs)
 * <b> is huge (huge_stacks = 1: hugetlb pages if reserved, else THP; the
 * backing the stats report goes to stderr) or normal. `bench_stacks huge`
 * or `bench_stacks normal` runs one of them (bench_stacks.sh does, under
 * perf stat). THREADS sets the workers (2). Turns are the best of 3 runs.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "weft.h"

#define TOUCH_MAX (64 * 1024)
#define LINE 64

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long env_long(const char* name, long dflt) {
  const char* s = getenv(name);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 10) : dflt;
}

static void bench_line(const char* name, const char* backing, double v,
                       const char* unit) {
  printf("BENCH name=%s_%s impl=weft value=%.3f unit=%s\n", name, backing, v,
         unit);
  fflush(stdout);
}

static long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/* The process's resident memory (KiB), or 0 if unknown. */
static long rss_kb(void) {
  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  long v = 0;
  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, "VmRSS:", 6) == 0) {
      v = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

typedef struct {
  weft_counter_t ready; /* jobs that touched their stack once */
  weft_counter_t gate;  /* 1 until the timed part starts */
  size_t touch;         /* bytes touched per turn */
  long rounds;
  atomic_uint sink;
} run_t;

static void fiber_job(void* arg) {
  run_t* r = arg;
  volatile unsigned char buf[TOUCH_MAX];
  unsigned sum = 0;
  size_t i;
  long k;

  /* Faults in the stack before the timed part. */
  for (i = 0; i < r->touch; i += LINE)
    buf[i] = (unsigned char)i;
  weft_counter_add(&r->ready, -1);
  weft_counter_wait(&r->gate, 0);
  for (k = 0; k < r->rounds; k++) {
    for (i = 0; i < r->touch; i += LINE)
      buf[i] = (unsigned char)(buf[i] + 1);
    sum += buf[0];
    weft_yield();
  }
  atomic_fetch_add_explicit(&r->sink, sum, memory_order_relaxed);
}

/* One run; returns ns per turn, and per fiber the faults and resident
 * KiB its set-up took in *faults and *rss. */
static double run_once(int huge, size_t touch, long fibers, long rounds,
                       double* faults, double* rss, weft_stats_t* st) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t done;
  run_t r;
  long f0;
  long r0;
  uint64_t t0;
  uint64_t t1;
  long i;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)env_long("THREADS", 2);
  cfg.huge_stacks = huge;
  /* Room for every fiber in the pools: no stack is unmapped and remade. */
  cfg.fibers_per_worker = (unsigned)fibers + 16;
  if (weft_runtime_create(&rt, &cfg) != 0) {
    fprintf(stderr, "bench_stacks: runtime_create failed\n");
    exit(1);
  }
  memset(&r, 0, sizeof(r));
  weft_counter_init(&r.ready, fibers);
  weft_counter_init(&r.gate, 1);
  weft_counter_init(&done, 0);
  r.touch = touch;
  r.rounds = rounds;
  f0 = minor_faults();
  r0 = rss_kb();
  for (i = 0; i < fibers; i++)
    if (weft_spawn(rt, fiber_job, &r, &done) != 0) {
      fprintf(stderr, "bench_stacks: spawn failed\n");
      exit(1);
    }
  weft_counter_wait(&r.ready, 0);
  *faults = (double)(minor_faults() - f0) / (double)fibers;
  *rss = (double)(rss_kb() - r0) / (double)fibers;
  t0 = now_ns();
  weft_counter_add(&r.gate, -1);
  weft_counter_wait(&done, 0);
  t1 = now_ns();
  weft_stats(rt, st);
  weft_runtime_destroy(rt);
  return (double)(t1 - t0) / ((double)fibers * (double)rounds);
}

static void bench(int huge) {
  const char* b = huge ? "huge" : "normal";
  long fibers = env_long("FIBERS", 512);
  long rounds = env_long("ROUNDS", 20);
  double best_switch = 0;
  double best_touch = 0;
  double faults = 0;
  double rss = 0;
  double f;
  double m;
  weft_stats_t st;
  int k;

  for (k = 0; k < 3; k++) {
    double v = run_once(huge, LINE, fibers, rounds, &f, &m, &st);
    /* The faults that count are those of the 64 KiB run, below. */
    if (k == 0 || v < best_switch)
      best_switch = v;
    v = run_once(huge, TOUCH_MAX, fibers, rounds, &f, &m, &st);
    if (k == 0 || v < best_touch)
      best_touch = v;
    if (k == 0 || f < faults)
      faults = f;
    if (k == 0 || m < rss)
      rss = m;
  }
  fprintf(stderr,
          "bench_stacks %s: %ld fibers, stacks hugetlb %llu thp %llu normal "
          "%llu bound %llu\n",
          b, fibers, (unsigned long long)st.stacks_hugetlb,
          (unsigned long long)st.stacks_thp,
          (unsigned long long)st.stacks_normal,
          (unsigned long long)st.stacks_bound);
  bench_line("stack_switch", b, best_switch, "ns");
  bench_line("stack_touch64k", b, best_touch, "ns");
  bench_line("stack_faults", b, faults, "faults");
  bench_line("stack_rss", b, rss, "KiB");
}

int main(int argc, char** argv) {
  const char* only = argc > 1 ? argv[1] : "";
  if (strcmp(only, "huge") != 0)
    bench(0);
  if (strcmp(only, "normal") != 0)
    bench(1);
  return 0;
}
