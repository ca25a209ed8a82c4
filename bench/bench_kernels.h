/* bench_kernels.h: what bench_sci.c, bench_tree.c, bench_sand.c and the
 * OpenMP peer (peer_omp_suite.c) share, so that weft, the serial loop and
 * OpenMP run the very same code on the very same data: the clock, the
 * knobs, the BENCH line, and every kernel written as "process this range".
 * Header-only (static inline) so each program builds from one .c file.
 */
#ifndef WEFT_BENCH_KERNELS_H_
#define WEFT_BENCH_KERNELS_H_

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- clock, knobs, output -------------------------------------------------
 */

static inline uint64_t bk_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline long bk_env_long(const char* name, long dflt) {
  const char* s = getenv(name);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 10) : dflt;
}

/* BENCH_ONLY selects workloads: a list of name prefixes separated by
 * spaces or commas; a workload runs when its name starts with one of them
 * (BENCH_ONLY=stencil3 runs every stencil3_*; "sincos_10k neigh5" two
 * groups). Unset or empty: everything. */
static inline int bk_wanted(const char* name) {
  const char* p = getenv("BENCH_ONLY");
  if (p == NULL || *p == '\0')
    return 1;
  while (*p != '\0') {
    size_t len = strcspn(p, " ,");
    if (len > 0 && strncmp(name, p, len) == 0)
      return 1;
    p += len;
    p += strspn(p, " ,");
  }
  return 0;
}

static inline void bk_line(const char* name, const char* impl, double v,
                           const char* unit) {
  printf("BENCH name=%s impl=%s value=%.3f unit=%s\n", name, impl, v, unit);
  fflush(stdout);
}

static inline void* bk_alloc(size_t bytes) {
  void* p = malloc(bytes);
  if (p == NULL) {
    fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
    exit(2);
  }
  return p;
}

/* Exits non-zero when an implementation's result differs from the serial
 * one. Every kernel computes each output element with the same
 * instructions whatever the split, so results must be bit-identical. */
static inline void bk_check(const char* name, const char* impl, const void* got,
                            const void* want, size_t bytes) {
  if (memcmp(got, want, bytes) != 0) {
    fprintf(stderr, "%s: %s result differs from the serial one\n", name, impl);
    exit(1);
  }
}

/* ---- sincos: out_s[i] = sin(in[i]), out_c[i] = cos(in[i]) -----------------
 */

typedef struct {
  const double* in;
  double* out_s;
  double* out_c;
} bk_sincos_t;

static inline void bk_sincos_init(double* in, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    in[i] = (double)i * 0.001;
}

static inline void bk_sincos_range(size_t b, size_t e, void* arg) {
  bk_sincos_t* a = arg;
  size_t i;
  for (i = b; i < e; i++) {
    a->out_s[i] = sin(a->in[i]);
    a->out_c[i] = cos(a->in[i]);
  }
}

/* ---- stencil3: a 3-point stencil along x over a g*g*g float grid ----------
 * out = 0.25 * left + 0.5 * centre + 0.25 * right; the two x-boundary cells
 * of each row are copied. The range is over the g*g rows (z * g + y). */

typedef struct {
  size_t g;
  const float* in;
  float* out;
} bk_stencil_t;

static inline void bk_grid_fill(float* grid, size_t cells) {
  size_t i;
  for (i = 0; i < cells; i++)
    grid[i] = (float)((i * 2654435761u) % 1000u) * 0.001f;
}

static inline void bk_stencil_rows(size_t b, size_t e, void* arg) {
  bk_stencil_t* a = arg;
  size_t g = a->g;
  size_t r;
  size_t x;
  for (r = b; r < e; r++) {
    const float* in = a->in + r * g;
    float* out = a->out + r * g;
    out[0] = in[0];
    for (x = 1; x + 1 < g; x++)
      out[x] = 0.25f * in[x - 1] + 0.5f * in[x] + 0.25f * in[x + 1];
    out[g - 1] = in[g - 1];
  }
}

/* ---- neigh5: 5-neighbour sum on an n*n float grid -------------------------
 * out = centre + up + down + left + right for interior cells; border cells
 * are copied. The range is over the rows. */

typedef struct {
  size_t n;
  const float* in;
  float* out;
} bk_neigh_t;

static inline void bk_neigh_rows(size_t b, size_t e, void* arg) {
  bk_neigh_t* a = arg;
  size_t n = a->n;
  size_t y;
  size_t x;
  for (y = b; y < e; y++) {
    const float* in = a->in + y * n;
    float* out = a->out + y * n;
    if (y == 0 || y + 1 == n) {
      memcpy(out, in, n * sizeof(*in));
      continue;
    }
    out[0] = in[0];
    for (x = 1; x + 1 < n; x++)
      out[x] = in[x] + in[x - n] + in[x + n] + in[x - 1] + in[x + 1];
    out[n - 1] = in[n - 1];
  }
}

/* ---- transform hierarchy --------------------------------------------------
 * A complete tree of the given depth (root at depth 0, leaves at depth
 * `depth`, so depth + 1 levels) and branching, stored level by level: level
 * l holds branching^l nodes from off[l]; node j of level l has parent
 * off[l-1] + j / branching. Each node has a 4x4 local matrix (row-major);
 * a frame computes world = parent_world * local, level by level. */

#define BK_TREE_MAX_LEVELS 16

typedef struct {
  float m[16];
} bk_mat4_t;

typedef struct {
  unsigned depth;
  unsigned branching;
  size_t nodes;
  size_t off[BK_TREE_MAX_LEVELS + 1]; /* off[levels] = nodes */
  bk_mat4_t* local;
  bk_mat4_t* world;
} bk_tree_t;

static inline void bk_mat4_mul(bk_mat4_t* r, const bk_mat4_t* a,
                               const bk_mat4_t* b) {
  int i;
  int j;
  for (i = 0; i < 4; i++)
    for (j = 0; j < 4; j++)
      r->m[i * 4 + j] = a->m[i * 4 + 0] * b->m[0 * 4 + j] +
                        a->m[i * 4 + 1] * b->m[1 * 4 + j] +
                        a->m[i * 4 + 2] * b->m[2 * 4 + j] +
                        a->m[i * 4 + 3] * b->m[3 * 4 + j];
}

static inline void bk_tree_init(bk_tree_t* t, unsigned depth,
                                unsigned branching) {
  size_t count = 1;
  size_t i;
  unsigned l;
  t->depth = depth;
  t->branching = branching;
  t->nodes = 0;
  for (l = 0; l <= depth; l++) {
    t->off[l] = t->nodes;
    t->nodes += count;
    count *= branching;
  }
  t->off[depth + 1] = t->nodes;
  t->local = bk_alloc(t->nodes * sizeof(bk_mat4_t));
  t->world = bk_alloc(t->nodes * sizeof(bk_mat4_t));
  /* A small rotation about z, a scale near 1 and a translation: products
   * over eight levels stay well inside float range. */
  for (i = 0; i < t->nodes; i++) {
    float a = (float)(i % 17) * 0.05f;
    float s = 1.0f + (float)(i % 5) * 0.01f;
    float c = cosf(a) * s;
    float n = sinf(a) * s;
    bk_mat4_t* m = &t->local[i];
    memset(m, 0, sizeof(*m));
    m->m[0] = c;
    m->m[1] = -n;
    m->m[4] = n;
    m->m[5] = c;
    m->m[10] = s;
    m->m[3] = (float)(i % 7) * 0.5f;
    m->m[7] = (float)(i % 3) * 0.25f;
    m->m[11] = 1.0f;
    m->m[15] = 1.0f;
  }
}

static inline void bk_tree_free(bk_tree_t* t) {
  free(t->local);
  free(t->world);
}

typedef struct {
  bk_tree_t* tree;
  unsigned level;
} bk_level_t;

/* Nodes [b, e) of one level (indices within the level). */
static inline void bk_tree_level_range(size_t b, size_t e, void* arg) {
  bk_level_t* a = arg;
  bk_tree_t* t = a->tree;
  size_t off = t->off[a->level];
  size_t j;
  if (a->level == 0) {
    t->world[0] = t->local[0];
    return;
  }
  for (j = b; j < e; j++) {
    size_t parent = t->off[a->level - 1] + j / t->branching;
    bk_mat4_mul(&t->world[off + j], &t->world[parent], &t->local[off + j]);
  }
}

static inline size_t bk_tree_level_size(const bk_tree_t* t, unsigned level) {
  return t->off[level + 1] - t->off[level];
}

/* ---- falling sand ---------------------------------------------------------
 * A w*h grid of bytes, row 0 at the top: 0 is empty, otherwise a grain of
 * sand marked with the parity (1 or 2) of the last frame that processed it.
 * A grain moves one cell per frame: down if free, else down-left or
 * down-right (which one is tried first alternates with x + y + frame). The
 * bottom row is the floor.
 *
 * Determinism under parallelism: the rows are cut into bands of BK_BAND
 * rows. A frame runs two phases, even bands then odd bands; within a band
 * rows go bottom-up, cells left to right. A band touches its own rows and
 * the first row of the band below, so two bands of one phase never touch a
 * common cell, and the result is the same whichever order the bands of a
 * phase run in: the serial loop, weft and OpenMP produce identical grids.
 * A grain already marked with this frame's parity (it moved into the next
 * band) is not moved twice. */

#define BK_BAND 8

typedef struct {
  uint8_t* grid;
  size_t w;
  size_t h;
  unsigned frame;
  unsigned phase; /* 0: even bands, 1: odd bands */
} bk_sand_t;

static inline size_t bk_sand_bands(const bk_sand_t* s) {
  return (s->h + BK_BAND - 1) / BK_BAND;
}

/* Bands of a phase: band index = 2 * i + phase. */
static inline size_t bk_sand_phase_bands(const bk_sand_t* s, unsigned phase) {
  size_t n = bk_sand_bands(s);
  return phase == 0 ? (n + 1) / 2 : n / 2;
}

/* One band in the given frame (s->frame and s->phase are not read). */
static inline void bk_sand_band(const bk_sand_t* s, size_t band,
                                unsigned frame) {
  uint8_t mark = (uint8_t)(1 + (frame & 1));
  size_t w = s->w;
  size_t top = band * BK_BAND;
  size_t y = top + BK_BAND > s->h ? s->h : top + BK_BAND;
  uint8_t* g = s->grid;
  while (y-- > top) {
    uint8_t* row = g + y * w;
    uint8_t* below = row + w;
    size_t x;
    for (x = 0; x < w; x++) {
      int left_first;
      if (row[x] == 0 || row[x] == mark)
        continue;
      row[x] = 0;
      if (y + 1 == s->h) {
        row[x] = mark;
        continue;
      }
      if (below[x] == 0) {
        below[x] = mark;
        continue;
      }
      left_first = ((x + y + frame) & 1) == 0;
      if (left_first && x > 0 && below[x - 1] == 0) {
        below[x - 1] = mark;
      } else if (x + 1 < w && below[x + 1] == 0) {
        below[x + 1] = mark;
      } else if (!left_first && x > 0 && below[x - 1] == 0) {
        below[x - 1] = mark;
      } else {
        row[x] = mark;
      }
    }
  }
}

/* Bands [b, e) of the current phase (indices within the phase). */
static inline void bk_sand_range(size_t b, size_t e, void* arg) {
  bk_sand_t* s = arg;
  size_t i;
  for (i = b; i < e; i++)
    bk_sand_band(s, 2 * i + s->phase, s->frame);
}

/* Places `particles` grains at distinct pseudo-random cells (an LCG), all
 * marked 2 so that frame 0 (mark 1) moves every one of them. */
static inline void bk_sand_init(uint8_t* grid, size_t w, size_t h,
                                size_t particles) {
  uint64_t x = 88172645463325252ull;
  size_t placed = 0;
  memset(grid, 0, w * h);
  while (placed < particles) {
    size_t cell;
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    cell = (size_t)((x >> 17) % (w * h));
    if (grid[cell] == 0) {
      grid[cell] = 2;
      placed++;
    }
  }
}

static inline size_t bk_sand_count(const uint8_t* grid, size_t cells) {
  size_t i;
  size_t n = 0;
  for (i = 0; i < cells; i++)
    n += grid[i] != 0;
  return n;
}

/* The serial reference: the same phases, the bands in order. */
static inline void bk_sand_frame_serial(bk_sand_t* s) {
  for (s->phase = 0; s->phase < 2; s->phase++)
    bk_sand_range(0, bk_sand_phase_bands(s, s->phase), s);
}

#endif /* WEFT_BENCH_KERNELS_H_ */
