/* bench_sci.c: scientific kernels (issue 4, item 5), each through
 * weft_parallel_for (impl=weft) and a plain serial loop (impl=serial); the
 * OpenMP figures come from peer_omp_suite. One BENCH line each:
 *   sincos_10k, sincos_100k, sincos_1m  sin and cos of every element of a
 *                 double array into two arrays (elems/s)
 *   stencil3_64, stencil3_128, stencil3_256  one sweep of a 3-point stencil
 *                 along x over a grid^3 float grid (cells/s)
 *   neigh5_1024, neigh5_4096  one sweep of a 5-neighbour sum over an n*n
 *                 float grid (cells/s)
 * Each figure is the best of a few repetitions (sweeps ping-pong between two
 * grids). The weft and serial results are compared bit for bit; the program
 * exits 1 on a mismatch. Kernels: bench_kernels.h.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix runs only those;
 * GRAIN (parallel-for grain, default 0: weft chooses).
 */
#define _GNU_SOURCE
#include "bench_kernels.h"
#include "weft.h"

typedef struct {
  weft_runtime_t* rt;
  size_t n;
  weft_range_cb body;
  void* arg;
} pf_call_t;

/* One timed parallel-for, run from a job (as a frame job would). */
typedef struct {
  pf_call_t* call;
  double seconds;
} timed_t;

static size_t grain;

static void timed_job(void* arg) {
  timed_t* t = arg;
  uint64_t t0 = bk_now_ns();
  int err = weft_parallel_for(t->call->rt, 0, t->call->n, grain, t->call->body,
                              t->call->arg);
  t->seconds = (double)(bk_now_ns() - t0) / 1e9;
  if (err != 0) {
    fprintf(stderr, "weft_parallel_for: %s\n", weft_strerror(err));
    exit(1);
  }
}

static double time_weft(pf_call_t* call) {
  timed_t t = {call, 0};
  weft_counter_t c;
  weft_counter_init(&c, 0);
  weft_spawn(call->rt, timed_job, &t, &c);
  weft_counter_wait(&c, 0);
  return t.seconds;
}

static double time_serial(pf_call_t* call) {
  uint64_t t0 = bk_now_ns();
  call->body(0, call->n, call->arg);
  return (double)(bk_now_ns() - t0) / 1e9;
}

static double min2(double a, double b) {
  return a < b ? a : b;
}

/* ---- sincos ---------------------------------------------------------------
 */

static void bench_sincos(weft_runtime_t* rt, const char* name, size_t n) {
  double* in = bk_alloc(n * sizeof(double));
  double* ws = bk_alloc(n * sizeof(double));
  double* wc = bk_alloc(n * sizeof(double));
  double* ss = bk_alloc(n * sizeof(double));
  double* sc = bk_alloc(n * sizeof(double));
  bk_sincos_t wa = {in, ws, wc};
  bk_sincos_t sa = {in, ss, sc};
  pf_call_t wcall = {rt, n, bk_sincos_range, &wa};
  pf_call_t scall = {rt, n, bk_sincos_range, &sa};
  double wbest = 1e18;
  double sbest = 1e18;
  int reps = n >= 1000000 ? 5 : 20;
  int rep;

  bk_sincos_init(in, n);
  for (rep = 0; rep < reps; rep++) {
    wbest = min2(wbest, time_weft(&wcall));
    sbest = min2(sbest, time_serial(&scall));
  }
  bk_check(name, "weft", ws, ss, n * sizeof(double));
  bk_check(name, "weft", wc, sc, n * sizeof(double));
  bk_line(name, "weft", (double)n / wbest, "elems/s");
  bk_line(name, "serial", (double)n / sbest, "elems/s");
  free(in);
  free(ws);
  free(wc);
  free(ss);
  free(sc);
}

/* ---- stencil3 and neigh5: sweeps ping-ponging between two grids -----------
 */

typedef struct {
  const char* name;
  size_t cells;
  size_t rows;
  int sweeps;
  void (*set)(void* arg, const float* in, float* out);
  weft_range_cb body;
  void* arg;
} sweep_t;

static void stencil_set(void* arg, const float* in, float* out) {
  bk_stencil_t* a = arg;
  a->in = in;
  a->out = out;
}

static void neigh_set(void* arg, const float* in, float* out) {
  bk_neigh_t* a = arg;
  a->in = in;
  a->out = out;
}

/* Runs s->sweeps sweeps from the same start with each implementation and
 * reports the best sweep of each; the final grids must agree. */
static void bench_sweeps(weft_runtime_t* rt, sweep_t* s) {
  float* w[2];
  float* r[2];
  pf_call_t call = {rt, s->rows, s->body, s->arg};
  double wbest = 1e18;
  double sbest = 1e18;
  int i;

  for (i = 0; i < 2; i++) {
    w[i] = bk_alloc(s->cells * sizeof(float));
    r[i] = bk_alloc(s->cells * sizeof(float));
  }
  bk_grid_fill(w[0], s->cells);
  memcpy(r[0], w[0], s->cells * sizeof(float));
  for (i = 0; i < s->sweeps; i++) {
    s->set(s->arg, w[i & 1], w[(i + 1) & 1]);
    wbest = min2(wbest, time_weft(&call));
    s->set(s->arg, r[i & 1], r[(i + 1) & 1]);
    sbest = min2(sbest, time_serial(&call));
  }
  bk_check(s->name, "weft", w[s->sweeps & 1], r[s->sweeps & 1],
           s->cells * sizeof(float));
  bk_line(s->name, "weft", (double)s->cells / wbest, "cells/s");
  bk_line(s->name, "serial", (double)s->cells / sbest, "cells/s");
  for (i = 0; i < 2; i++) {
    free(w[i]);
    free(r[i]);
  }
}

static void bench_stencil(weft_runtime_t* rt, const char* name, size_t g) {
  bk_stencil_t a = {g, NULL, NULL};
  sweep_t s = {name,        g * g * g,       g * g, g >= 256 ? 4 : 10,
               stencil_set, bk_stencil_rows, &a};
  bench_sweeps(rt, &s);
}

static void bench_neigh(weft_runtime_t* rt, const char* name, size_t n) {
  bk_neigh_t a = {n, NULL, NULL};
  sweep_t s = {name,      n * n,         n, n >= 4096 ? 4 : 10,
               neigh_set, bk_neigh_rows, &a};
  bench_sweeps(rt, &s);
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  grain = (size_t)bk_env_long("GRAIN", 0);
  if (weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  if (bk_wanted("sincos_10k"))
    bench_sincos(rt, "sincos_10k", 10000);
  if (bk_wanted("sincos_100k"))
    bench_sincos(rt, "sincos_100k", 100000);
  if (bk_wanted("sincos_1m"))
    bench_sincos(rt, "sincos_1m", 1000000);
  if (bk_wanted("stencil3_64"))
    bench_stencil(rt, "stencil3_64", 64);
  if (bk_wanted("stencil3_128"))
    bench_stencil(rt, "stencil3_128", 128);
  if (bk_wanted("stencil3_256"))
    bench_stencil(rt, "stencil3_256", 256);
  if (bk_wanted("neigh5_1024"))
    bench_neigh(rt, "neigh5_1024", 1024);
  if (bk_wanted("neigh5_4096"))
    bench_neigh(rt, "neigh5_4096", 4096);
  weft_runtime_destroy(rt);
  return 0;
}
