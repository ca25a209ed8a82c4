/* bench_tree.c: a transform hierarchy (issue 4, item 6). Each node of a
 * complete tree holds a 4x4 float local matrix; a frame computes every
 * node's world = parent_world * local, one weft_parallel_for per level with
 * a wait between levels, from a frame job (impl=weft), and with a plain
 * serial loop (impl=serial); peer_omp_suite gives impl=openmp. Depth counts
 * the levels below the root (depth 4 has 5 levels). One BENCH line each:
 *   tree_d4b4   depth 4, branching 4: 341 nodes (nodes/s)
 *   tree_d6b3   depth 6, branching 3: 1093 nodes (nodes/s)
 *   tree_d8b2   depth 8, branching 2: 511 nodes (nodes/s)
 * nodes/s = nodes * frames / time, the best of 5 runs of FRAMES frames; a
 * frame takes nodes / value seconds. The world matrices of weft and serial
 * are compared bit for bit; the program exits 1 on a mismatch.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix; FRAMES (frames per
 * run, default 1000); GRAIN (nodes per parallel-for piece, default 0: weft
 * chooses).
 */
#define _GNU_SOURCE
#include "bench_kernels.h"
#include "weft.h"

static size_t grain;

typedef struct {
  weft_runtime_t* rt;
  bk_tree_t* tree;
  long frames;
  double seconds;
} frames_t;

static void frames_job(void* arg) {
  frames_t* f = arg;
  bk_tree_t* t = f->tree;
  uint64_t t0 = bk_now_ns();
  long frame;
  unsigned l;
  for (frame = 0; frame < f->frames; frame++) {
    for (l = 0; l <= t->depth; l++) {
      bk_level_t lv = {t, l};
      int err = weft_parallel_for(f->rt, 0, bk_tree_level_size(t, l), grain,
                                  bk_tree_level_range, &lv);
      if (err != 0) {
        fprintf(stderr, "weft_parallel_for: %s\n", weft_strerror(err));
        exit(1);
      }
    }
  }
  f->seconds = (double)(bk_now_ns() - t0) / 1e9;
}

static double run_weft(weft_runtime_t* rt, bk_tree_t* t, long frames) {
  frames_t f = {rt, t, frames, 0};
  weft_counter_t c;
  weft_counter_init(&c, 0);
  weft_spawn(rt, frames_job, &f, &c);
  weft_counter_wait(&c, 0);
  return f.seconds;
}

static double run_serial(bk_tree_t* t, long frames) {
  uint64_t t0 = bk_now_ns();
  long frame;
  unsigned l;
  for (frame = 0; frame < frames; frame++) {
    for (l = 0; l <= t->depth; l++) {
      bk_level_t lv = {t, l};
      bk_tree_level_range(0, bk_tree_level_size(t, l), &lv);
    }
  }
  return (double)(bk_now_ns() - t0) / 1e9;
}

static void bench_tree(weft_runtime_t* rt, const char* name, unsigned depth,
                       unsigned branching, long frames) {
  bk_tree_t tw;
  bk_tree_t ts;
  double wbest = 1e18;
  double sbest = 1e18;
  int rep;

  bk_tree_init(&tw, depth, branching);
  bk_tree_init(&ts, depth, branching);
  memset(tw.world, 0, tw.nodes * sizeof(bk_mat4_t));
  memset(ts.world, 0xff, ts.nodes * sizeof(bk_mat4_t));
  for (rep = 0; rep < 5; rep++) {
    double s = run_weft(rt, &tw, frames);
    if (s < wbest)
      wbest = s;
    s = run_serial(&ts, frames);
    if (s < sbest)
      sbest = s;
  }
  bk_check(name, "weft", tw.world, ts.world, tw.nodes * sizeof(bk_mat4_t));
  bk_line(name, "weft", (double)tw.nodes * (double)frames / wbest, "nodes/s");
  bk_line(name, "serial", (double)ts.nodes * (double)frames / sbest, "nodes/s");
  bk_tree_free(&tw);
  bk_tree_free(&ts);
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  long frames = bk_env_long("FRAMES", 1000);

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  grain = (size_t)bk_env_long("GRAIN", 0);
  if (frames < 1 || weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  if (bk_wanted("tree_d4b4"))
    bench_tree(rt, "tree_d4b4", 4, 4, frames);
  if (bk_wanted("tree_d6b3"))
    bench_tree(rt, "tree_d6b3", 6, 3, frames);
  if (bk_wanted("tree_d8b2"))
    bench_tree(rt, "tree_d8b2", 8, 2, frames);
  weft_runtime_destroy(rt);
  return 0;
}
