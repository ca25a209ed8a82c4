/* bench_sand.c: a falling-sand particle simulation (issue 4, item 9). Each
 * frame updates the whole grid in two phases of row bands (even bands,
 * then odd ones) so that parallel updates never touch a common cell and the
 * result is deterministic (bench_kernels.h explains the scheme). A frame is
 * two weft_parallel_for calls from a frame job (impl=weft) or the same bands
 * in order (impl=serial); peer_omp_suite gives impl=openmp. One BENCH line
 * each:
 *   sand_100k   1000 x 1000 grid, 100k grains, 120 frames (frames/s)
 *   sand_1m     1M grains for 10 frames; a 1000 x 1000 grid would be full,
 *               so this grid is 1000 wide and 2000 tall (frames/s)
 * A frame scans every cell, so frames/s times the particle count gives
 * particle updates/s. Each run starts from the same grid (best of 3 runs);
 * the final weft and serial grids must be identical and keep every grain,
 * or the program exits 1.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix; GRAIN (bands per
 * parallel-for piece, default 0: weft chooses).
 */
#define _GNU_SOURCE
#include "bench_kernels.h"
#include "weft.h"

static size_t grain;

typedef struct {
  weft_runtime_t* rt;
  bk_sand_t* sim;
  unsigned frames;
  double seconds;
} frames_t;

static void frames_job(void* arg) {
  frames_t* f = arg;
  bk_sand_t* s = f->sim;
  uint64_t t0 = bk_now_ns();
  for (s->frame = 0; s->frame < f->frames; s->frame++) {
    for (s->phase = 0; s->phase < 2; s->phase++) {
      int err = weft_parallel_for(f->rt, 0, bk_sand_phase_bands(s, s->phase),
                                  grain, bk_sand_range, s);
      if (err != 0) {
        fprintf(stderr, "weft_parallel_for: %s\n", weft_strerror(err));
        exit(1);
      }
    }
  }
  f->seconds = (double)(bk_now_ns() - t0) / 1e9;
}

static double run_weft(weft_runtime_t* rt, bk_sand_t* s, unsigned frames) {
  frames_t f = {rt, s, frames, 0};
  weft_counter_t c;
  weft_counter_init(&c, 0);
  weft_spawn(rt, frames_job, &f, &c);
  weft_counter_wait(&c, 0);
  return f.seconds;
}

static double run_serial(bk_sand_t* s, unsigned frames) {
  uint64_t t0 = bk_now_ns();
  for (s->frame = 0; s->frame < frames; s->frame++)
    bk_sand_frame_serial(s);
  return (double)(bk_now_ns() - t0) / 1e9;
}

static void bench_sand(weft_runtime_t* rt, const char* name, size_t w, size_t h,
                       size_t particles, unsigned frames) {
  uint8_t* start = bk_alloc(w * h);
  uint8_t* gw = bk_alloc(w * h);
  uint8_t* gs = bk_alloc(w * h);
  bk_sand_t sw = {gw, w, h, 0, 0};
  bk_sand_t ss = {gs, w, h, 0, 0};
  double wbest = 1e18;
  double sbest = 1e18;
  int rep;

  bk_sand_init(start, w, h, particles);
  for (rep = 0; rep < 3; rep++) {
    double t;
    memcpy(gw, start, w * h);
    t = run_weft(rt, &sw, frames);
    if (t < wbest)
      wbest = t;
    memcpy(gs, start, w * h);
    t = run_serial(&ss, frames);
    if (t < sbest)
      sbest = t;
  }
  if (bk_sand_count(gs, w * h) != particles) {
    fprintf(stderr, "%s: the serial run lost grains\n", name);
    exit(1);
  }
  if (memcmp(gs, start, w * h) == 0) {
    fprintf(stderr, "%s: nothing moved\n", name);
    exit(1);
  }
  bk_check(name, "weft", gw, gs, w * h);
  bk_line(name, "weft", frames / wbest, "frames/s");
  bk_line(name, "serial", frames / sbest, "frames/s");
  free(start);
  free(gw);
  free(gs);
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  grain = (size_t)bk_env_long("GRAIN", 0);
  if (weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  if (bk_wanted("sand_100k"))
    bench_sand(rt, "sand_100k", 1000, 1000, 100000, 120);
  if (bk_wanted("sand_1m"))
    bench_sand(rt, "sand_1m", 1000, 2000, 1000000, 10);
  weft_runtime_destroy(rt);
  return 0;
}
