/* peer_omp_suite.c: the OpenMP peer (impl=openmp) of bench_sci, bench_tree
 * and bench_sand: the same kernels (bench_kernels.h) on the same data, split
 * statically over the team, the idiomatic OpenMP loop. Built
 * with -fopenmp as a program of its own, so libgomp's threads never share a
 * process with weft's workers. Workloads and units as in those files:
 *   sincos_10k/100k/1m (elems/s), stencil3_64/128/256 (cells/s),
 *   neigh5_1024/4096 (cells/s), tree_d4b4/d6b3/d8b2 (nodes/s; one parallel
 *   region per run, an `omp for` with its barrier per level),
 *   sand_100k, sand_1m (frames/s; one parallel region per run, an
 *   `omp for` with its barrier per phase)
 * Every result is compared bit for bit with a serial run of the same
 * kernel; the program exits 1 on a mismatch.
 * THREADS (OpenMP threads, default 2); BENCH_ONLY=name prefix; FRAMES
 * (tree frames per run, default 1000).
 */
#define _GNU_SOURCE
#include <omp.h>

#include "bench_kernels.h"

typedef void (*range_cb)(size_t begin, size_t end, void* arg);

static double min2(double a, double b) {
  return a < b ? a : b;
}

/* Calls body over [0, n) cut into one contiguous range per thread: what
 * `omp for schedule(static)` does, with one call per thread as weft makes
 * one call per piece. */
static double time_omp(size_t n, void (*body)(size_t, size_t, void*),
                       void* arg) {
  uint64_t t0 = bk_now_ns();
#pragma omp parallel
  {
    size_t t = (size_t)omp_get_thread_num();
    size_t nt = (size_t)omp_get_num_threads();
    body(n * t / nt, n * (t + 1) / nt, arg);
  }
  return (double)(bk_now_ns() - t0) / 1e9;
}

/* ---- sincos ---------------------------------------------------------------
 */

static void bench_sincos(const char* name, size_t n) {
  double* in = bk_alloc(n * sizeof(double));
  double* os = bk_alloc(n * sizeof(double));
  double* oc = bk_alloc(n * sizeof(double));
  double* ss = bk_alloc(n * sizeof(double));
  double* sc = bk_alloc(n * sizeof(double));
  bk_sincos_t oa = {in, os, oc};
  bk_sincos_t sa = {in, ss, sc};
  double best = 1e18;
  int reps = n >= 1000000 ? 5 : 20;
  int rep;

  bk_sincos_init(in, n);
  bk_sincos_range(0, n, &sa);
  for (rep = 0; rep < reps; rep++)
    best = min2(best, time_omp(n, bk_sincos_range, &oa));
  bk_check(name, "openmp", os, ss, n * sizeof(double));
  bk_check(name, "openmp", oc, sc, n * sizeof(double));
  bk_line(name, "openmp", (double)n / best, "elems/s");
  free(in);
  free(os);
  free(oc);
  free(ss);
  free(sc);
}

/* ---- stencil3 and neigh5 --------------------------------------------------
 * As bench_sci.c: sweeps ping-pong between two grids; the OpenMP loop runs
 * over the same rows the weft parallel-for does. */

/* One sweep from in to out, with OpenMP (timed) or serially. */
static double sweep(int stencil, size_t size, const float* in, float* out,
                    int omp) {
  bk_stencil_t sa = {size, in, out};
  bk_neigh_t na = {size, in, out};
  size_t rows = stencil ? size * size : size;
  range_cb body = stencil ? bk_stencil_rows : bk_neigh_rows;
  void* arg = stencil ? (void*)&sa : (void*)&na;
  if (!omp) {
    body(0, rows, arg);
    return 0;
  }
  return time_omp(rows, body, arg);
}

static void bench_sweeps(const char* name, size_t size, int stencil) {
  size_t cells = stencil ? size * size * size : size * size;
  int sweeps = stencil ? (size >= 256 ? 4 : 10) : (size >= 4096 ? 4 : 10);
  float* o[2];
  float* r[2];
  double best = 1e18;
  int i;

  for (i = 0; i < 2; i++) {
    o[i] = bk_alloc(cells * sizeof(float));
    r[i] = bk_alloc(cells * sizeof(float));
  }
  bk_grid_fill(o[0], cells);
  memcpy(r[0], o[0], cells * sizeof(float));
  for (i = 0; i < sweeps; i++) {
    best = min2(best, sweep(stencil, size, o[i & 1], o[(i + 1) & 1], 1));
    sweep(stencil, size, r[i & 1], r[(i + 1) & 1], 0);
  }
  bk_check(name, "openmp", o[sweeps & 1], r[sweeps & 1], cells * sizeof(float));
  bk_line(name, "openmp", (double)cells / best, "cells/s");
  for (i = 0; i < 2; i++) {
    free(o[i]);
    free(r[i]);
  }
}

/* ---- transform hierarchy --------------------------------------------------
 */

static void bench_tree(const char* name, unsigned depth, unsigned branching,
                       long frames) {
  bk_tree_t to;
  bk_tree_t ts;
  double best = 1e18;
  unsigned l;
  int rep;

  bk_tree_init(&to, depth, branching);
  bk_tree_init(&ts, depth, branching);
  memset(to.world, 0, to.nodes * sizeof(bk_mat4_t));
  for (l = 0; l <= depth; l++) {
    bk_level_t lv = {&ts, l};
    bk_tree_level_range(0, bk_tree_level_size(&ts, l), &lv);
  }
  for (rep = 0; rep < 5; rep++) {
    uint64_t t0 = bk_now_ns();
#pragma omp parallel private(l)
    {
      long frame;
      for (frame = 0; frame < frames; frame++) {
        for (l = 0; l <= depth; l++) {
          bk_level_t lv = {&to, l};
          long j;
#pragma omp for schedule(static)
          for (j = 0; j < (long)bk_tree_level_size(&to, l); j++)
            bk_tree_level_range((size_t)j, (size_t)j + 1, &lv);
        }
      }
    }
    best = min2(best, (double)(bk_now_ns() - t0) / 1e9);
  }
  bk_check(name, "openmp", to.world, ts.world, to.nodes * sizeof(bk_mat4_t));
  bk_line(name, "openmp", (double)to.nodes * (double)frames / best, "nodes/s");
  bk_tree_free(&to);
  bk_tree_free(&ts);
}

/* ---- falling sand ---------------------------------------------------------
 */

static void bench_sand(const char* name, size_t w, size_t h, size_t particles,
                       unsigned frames) {
  uint8_t* start = bk_alloc(w * h);
  uint8_t* go = bk_alloc(w * h);
  uint8_t* gs = bk_alloc(w * h);
  bk_sand_t so = {go, w, h, 0, 0};
  bk_sand_t ss = {gs, w, h, 0, 0};
  double best = 1e18;
  int rep;

  bk_sand_init(start, w, h, particles);
  memcpy(gs, start, w * h);
  for (ss.frame = 0; ss.frame < frames; ss.frame++)
    bk_sand_frame_serial(&ss);
  for (rep = 0; rep < 3; rep++) {
    uint64_t t0;
    memcpy(go, start, w * h);
    t0 = bk_now_ns();
#pragma omp parallel
    {
      unsigned frame;
      unsigned phase;
      for (frame = 0; frame < frames; frame++) {
        for (phase = 0; phase < 2; phase++) {
          long n = (long)bk_sand_phase_bands(&so, phase);
          long i;
#pragma omp for schedule(static)
          for (i = 0; i < n; i++)
            bk_sand_band(&so, 2 * (size_t)i + phase, frame);
        }
      }
    }
    best = min2(best, (double)(bk_now_ns() - t0) / 1e9);
  }
  if (bk_sand_count(gs, w * h) != particles) {
    fprintf(stderr, "%s: the serial run lost grains\n", name);
    exit(1);
  }
  bk_check(name, "openmp", go, gs, w * h);
  bk_line(name, "openmp", frames / best, "frames/s");
  free(start);
  free(go);
  free(gs);
}

int main(void) {
  long frames = bk_env_long("FRAMES", 1000);

  omp_set_num_threads((int)bk_env_long("THREADS", 2));
  if (frames < 1)
    return 1;
  if (bk_wanted("sincos_10k"))
    bench_sincos("sincos_10k", 10000);
  if (bk_wanted("sincos_100k"))
    bench_sincos("sincos_100k", 100000);
  if (bk_wanted("sincos_1m"))
    bench_sincos("sincos_1m", 1000000);
  if (bk_wanted("stencil3_64"))
    bench_sweeps("stencil3_64", 64, 1);
  if (bk_wanted("stencil3_128"))
    bench_sweeps("stencil3_128", 128, 1);
  if (bk_wanted("stencil3_256"))
    bench_sweeps("stencil3_256", 256, 1);
  if (bk_wanted("neigh5_1024"))
    bench_sweeps("neigh5_1024", 1024, 0);
  if (bk_wanted("neigh5_4096"))
    bench_sweeps("neigh5_4096", 4096, 0);
  if (bk_wanted("tree_d4b4"))
    bench_tree("tree_d4b4", 4, 4, frames);
  if (bk_wanted("tree_d6b3"))
    bench_tree("tree_d6b3", 6, 3, frames);
  if (bk_wanted("tree_d8b2"))
    bench_tree("tree_d8b2", 8, 2, frames);
  if (bk_wanted("sand_100k"))
    bench_sand("sand_100k", 1000, 1000, 100000, 120);
  if (bk_wanted("sand_1m"))
    bench_sand("sand_1m", 1000, 2000, 1000000, 10);
  return 0;
}
