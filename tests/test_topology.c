/* test_topology.c: placement plans and steal orders on described machines
 * (hwloc synthetic strings and XML, where binding does nothing, so the
 * plan is what is checked), the placement strategies, presets, and
 * WEFT_PLACEMENT / WEFT_TOPOLOGY at runtime start. Built with its own copy
 * of src/topology.c, whose internals libweft does not export.
 */
#include <dirent.h>
#include <hwloc.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "internal.h"

/* 4 packages x 2 NUMA nodes x 16 cores x 2 PUs, no caches. */
#define T1 "pack:4 numa:2 core:16 pu:2"
/* 2 packages x 4 NUMA nodes x 2 L3 x 8 cores x 2 PUs. */
#define T2 "pack:2 numa:4 l3:2 core:8 pu:2"
/* Sub-NUMA clustering: 2 NUMA nodes under each L3. */
#define T3 "pack:2 l3:2 numa:2 core:4 pu:2"

/* A synthetic machine's shape: PUs per package, per NUMA node, per L3, per
 * core (0 where the level is missing), outermost first. Synthetic OS
 * indexes follow the tree, so a PU's place is arithmetic. */
typedef struct {
  int per[5];
} shape_t;

static const shape_t shape1 = {{64, 32, 0, 2, 1}};
static const shape_t shape2 = {{128, 32, 16, 2, 1}};
static const shape_t shape3 = {{32, 8, 16, 2, 1}}; /* NUMA inside the L3 */

/* How many levels PUs a and b share, outermost first (larger is nearer). A
 * NUMA node nested in an L3 (T3) ranks nearer than the L3 alone. */
static int closeness(const shape_t* s, int a, int b) {
  int order[5] = {0, 1, 2, 3, 4};
  int c = 0;
  int i;
  if (s->per[1] < s->per[2]) { /* NUMA below the L3: L3 is the outer one */
    order[1] = 2;
    order[2] = 1;
  }
  for (i = 0; i < 5; i++) {
    int per = s->per[order[i]];
    if (per == 0)
      continue;
    if (a / per != b / per)
      break;
    c++;
  }
  return c;
}

static void plan_ok(weft__plan_t* p, const char* desc, unsigned n,
                    weft_placement_t placement) {
  assert_int_equal(weft__topology_plan(p, desc, n, placement), 0);
  assert_int_equal(p->bind, desc == NULL && placement != WEFT_PLACEMENT_NONE);
}

/* Every worker's victims are every other worker once, in non-increasing
 * closeness, and the groups end exactly where closeness changes. */
static void check_steal_order(const weft__plan_t* p, const shape_t* s) {
  unsigned n = p->nworkers;
  unsigned char* seen = calloc(n, 1);
  unsigned i;
  unsigned k;

  assert_non_null(seen);
  for (i = 0; i < n; i++) {
    const unsigned* near = weft__plan_near(p, i);
    const unsigned* grp = weft__plan_groups(p, i);
    unsigned g = 0;
    memset(seen, 0, n);
    for (k = 0; k < n - 1; k++) {
      int c = closeness(s, p->pu_os_index[i], p->pu_os_index[near[k]]);
      assert_true(near[k] < n && near[k] != i && !seen[near[k]]);
      seen[near[k]] = 1;
      if (k + 1 < n - 1) {
        int next = closeness(s, p->pu_os_index[i], p->pu_os_index[near[k + 1]]);
        assert_true(next <= c);
        if (next != c)
          assert_int_equal(grp[g++], k + 1);
      } else {
        assert_int_equal(grp[g++], n - 1);
      }
    }
    assert_int_equal(p->ngroups[i], g);
    assert_true(g <= p->group_stride);
  }
  free(seen);
}

/* The PUs of worker i's victims in group g of worker i. */
static void group_range(const weft__plan_t* p, unsigned i, unsigned g,
                        unsigned* lo, unsigned* hi) {
  const unsigned* grp = weft__plan_groups(p, i);
  *lo = g == 0 ? 0 : grp[g - 1];
  *hi = grp[g];
}

static int victim_pu(const weft__plan_t* p, unsigned i, unsigned k) {
  return p->pu_os_index[p->near[(size_t)i * (p->nworkers - 1) + k]];
}

static void topology_core_256(void** state) {
  weft__plan_t p;
  unsigned i;
  unsigned k;
  (void)state;

  /* CORE: one worker per core, the first PU of each, in order. */
  plan_ok(&p, T1, 0, WEFT_PLACEMENT_CORE);
  assert_int_equal(p.nworkers, 128);
  assert_int_equal(p.placement, WEFT_PLACEMENT_CORE);
  for (i = 0; i < 128; i++) {
    assert_int_equal(p.pu_os_index[i], 2 * i);
    assert_int_equal(p.numa_os_index[i], (int)(2 * i / 32));
  }
  check_steal_order(&p, &shape1);
  /* Worker 0: the 15 other cores of its NUMA node, then the 16 of the
   * other node in its package, then the 96 of the other packages. */
  assert_int_equal(p.ngroups[0], 3);
  assert_int_equal(p.near_group[0], 15);
  assert_int_equal(p.near_group[1], 31);
  assert_int_equal(p.near_group[2], 127);
  for (k = 0; k < 15; k++)
    assert_true(victim_pu(&p, 0, k) < 32);
  for (k = 31; k < 127; k++)
    assert_true(victim_pu(&p, 0, k) >= 64);
  weft__topology_plan_free(&p);
  assert_null(p.near);

  plan_ok(&p, T2, 0, WEFT_PLACEMENT_CORE);
  assert_int_equal(p.nworkers, 128);
  for (i = 0; i < 128; i++)
    assert_int_equal(p.pu_os_index[i], 2 * i);
  check_steal_order(&p, &shape2);
  /* Same L3 (7), same NUMA node (8), same package (48), the other (64). */
  assert_int_equal(p.ngroups[0], 4);
  assert_int_equal(p.near_group[0], 7);
  assert_int_equal(p.near_group[1], 15);
  assert_int_equal(p.near_group[2], 63);
  assert_int_equal(p.near_group[3], 127);
  for (k = 0; k < 7; k++)
    assert_true(victim_pu(&p, 0, k) < 16);
  for (k = 63; k < 127; k++)
    assert_true(victim_pu(&p, 0, k) >= 128);
  weft__topology_plan_free(&p);
}

static void topology_pu_256(void** state) {
  weft__plan_t p;
  unsigned i;
  unsigned lo;
  unsigned hi;
  unsigned k;
  (void)state;

  plan_ok(&p, T2, 0, WEFT_PLACEMENT_PU);
  assert_int_equal(p.nworkers, 256);
  for (i = 0; i < 256; i++)
    assert_int_equal(p.pu_os_index[i], i);
  check_steal_order(&p, &shape2);
  /* Worker 0: its SMT sibling, then its L3, its NUMA node, its package,
   * and last the other package. */
  assert_int_equal(p.ngroups[0], 5);
  assert_int_equal(p.near[0], 1);
  group_range(&p, 0, 1, &lo, &hi);
  assert_int_equal(hi - lo, 14);
  for (k = lo; k < hi; k++)
    assert_true(victim_pu(&p, 0, k) >= 2 && victim_pu(&p, 0, k) < 16);
  group_range(&p, 0, 4, &lo, &hi);
  assert_int_equal(hi - lo, 128);
  for (k = lo; k < hi; k++)
    assert_true(victim_pu(&p, 0, k) >= 128);
  /* A worker in the middle: worker 77's sibling is worker 76. */
  assert_int_equal(p.near[77 * 255], 76);
  weft__topology_plan_free(&p);

  plan_ok(&p, T1, 0, WEFT_PLACEMENT_PU);
  assert_int_equal(p.nworkers, 256);
  check_steal_order(&p, &shape1);
  weft__topology_plan_free(&p);

  plan_ok(&p, T3, 0, WEFT_PLACEMENT_PU);
  assert_int_equal(p.nworkers, 64);
  check_steal_order(&p, &shape3);
  /* Under sub-NUMA clustering the NUMA node (8 PUs) comes before the rest
   * of the L3. */
  assert_int_equal(p.near_group[1], 7);
  assert_int_equal(p.near_group[2], 15);
  weft__topology_plan_free(&p);
}

static void topology_cache_domain(void** state) {
  weft__plan_t p;
  unsigned i;
  (void)state;

  /* T2's first L3 holds cores 0-7 (PUs 0-15): its cores by default. */
  plan_ok(&p, T2, 0, WEFT_PLACEMENT_CACHE);
  assert_int_equal(p.nworkers, 8);
  for (i = 0; i < 8; i++)
    assert_int_equal(p.pu_os_index[i], 2 * i);
  weft__topology_plan_free(&p);
  /* More workers: the SMT siblings, then round again. */
  plan_ok(&p, T2, 20, WEFT_PLACEMENT_CACHE);
  for (i = 0; i < 20; i++) {
    int want = i < 8 ? 2 * i : i < 16 ? 2 * (i - 8) + 1 : 2 * (i - 16);
    assert_int_equal(p.pu_os_index[i], want);
  }
  check_steal_order(&p, &shape2);
  weft__topology_plan_free(&p);

  /* No caches in T1: the domain is a NUMA node's 16 cores. */
  plan_ok(&p, T1, 0, WEFT_PLACEMENT_CACHE);
  assert_int_equal(p.nworkers, 16);
  for (i = 0; i < 16; i++) {
    assert_int_equal(p.pu_os_index[i], 2 * i);
    assert_int_equal(p.numa_os_index[i], 0);
  }
  weft__topology_plan_free(&p);

  /* T3: the L3 (two NUMA nodes), not the NUMA node, is the domain. */
  plan_ok(&p, T3, 0, WEFT_PLACEMENT_CACHE);
  assert_int_equal(p.nworkers, 8);
  for (i = 0; i < 8; i++)
    assert_int_equal(p.pu_os_index[i], 2 * i);
  weft__topology_plan_free(&p);
}

static void topology_spill_order(void** state) {
  weft__plan_t p;
  unsigned i;
  (void)state;

  /* A whole L3 domain (cores, then siblings) before the next. */
  plan_ok(&p, T2, 40, WEFT_PLACEMENT_SPILL);
  assert_int_equal(p.nworkers, 40);
  for (i = 0; i < 40; i++) {
    unsigned d = i / 16;
    unsigned r = i % 16;
    assert_int_equal(p.pu_os_index[i], 16 * d + (r < 8 ? 2 * r : 2 * r - 15));
  }
  check_steal_order(&p, &shape2);
  weft__topology_plan_free(&p);

  plan_ok(&p, T2, 0, WEFT_PLACEMENT_SPILL);
  assert_int_equal(p.nworkers, 256);
  for (i = 0; i < 256; i++) {
    unsigned r = i % 16;
    assert_int_equal(p.pu_os_index[i],
                     16 * (i / 16) + (r < 8 ? 2 * r : 2 * r - 15));
  }
  weft__topology_plan_free(&p);

  /* T1 has no caches: NUMA nodes are the domains. */
  plan_ok(&p, T1, 40, WEFT_PLACEMENT_SPILL);
  for (i = 0; i < 40; i++) {
    unsigned r = i % 32;
    assert_int_equal(p.pu_os_index[i],
                     32 * (i / 32) + (r < 16 ? 2 * r : 2 * r - 31));
  }
  weft__topology_plan_free(&p);
}

static void topology_wrap(void** state) {
  weft__plan_t p;
  unsigned i;
  (void)state;

  /* CORE past its 128 cores takes the siblings, past 256 PUs wraps. */
  plan_ok(&p, T1, 300, WEFT_PLACEMENT_CORE);
  assert_int_equal(p.nworkers, 300);
  for (i = 0; i < 300; i++) {
    unsigned j = i % 256;
    assert_int_equal(p.pu_os_index[i], j < 128 ? 2 * j : 2 * (j - 128) + 1);
  }
  check_steal_order(&p, &shape1);
  /* Worker 0 shares its PU with worker 256, its core with worker 128. */
  assert_int_equal(p.near[0], 256);
  assert_int_equal(p.near_group[0], 1);
  assert_int_equal(p.near[1], 128);
  assert_int_equal(p.near_group[1], 2);
  weft__topology_plan_free(&p);

  plan_ok(&p, T2, 300, WEFT_PLACEMENT_PU);
  for (i = 0; i < 300; i++)
    assert_int_equal(p.pu_os_index[i], i % 256);
  weft__topology_plan_free(&p);

  /* More workers than a one-PU machine has: all on PU 0, one group. */
  plan_ok(&p, "pu:1", 3, WEFT_PLACEMENT_CORE);
  for (i = 0; i < 3; i++)
    assert_int_equal(p.pu_os_index[i], 0);
  assert_int_equal(p.ngroups[0], 1);
  weft__topology_plan_free(&p);
}

static void topology_none(void** state) {
  weft__plan_t p;
  unsigned i;
  unsigned k;
  (void)state;

  /* One worker per core, unbound, every victim in one flat group. */
  plan_ok(&p, T2, 0, WEFT_PLACEMENT_NONE);
  assert_int_equal(p.nworkers, 128);
  assert_int_equal(p.placement, WEFT_PLACEMENT_NONE);
  for (i = 0; i < 128; i++) {
    assert_int_equal(p.pu_os_index[i], -1);
    assert_int_equal(p.ngroups[i], 1);
    for (k = 0; k < 127; k++)
      assert_int_equal(p.near[i * 127 + k], k < i ? k : k + 1);
  }
  weft__topology_plan_free(&p);

  plan_ok(&p, NULL, 3, WEFT_PLACEMENT_NONE);
  assert_int_equal(p.nworkers, 3);
  assert_int_equal(p.pu_os_index[2], -1);
  weft__topology_plan_free(&p);

  plan_ok(&p, NULL, 1, WEFT_PLACEMENT_CORE);
  assert_int_equal(p.nworkers, 1);
  assert_int_equal(p.ngroups[0], 0);
  weft__topology_plan_free(&p);
}

static void topology_bad_desc(void** state) {
  weft__plan_t p;
  char path[] = "/tmp/weft-topo-XXXXXX";
  int fd;
  (void)state;

  memset(&p, 0xff, sizeof(p));
  assert_int_equal(weft__topology_plan(&p, "pack:banana", 0, 1), -EBADMSG);
  assert_null(p.near);
  assert_null(p.pu_os_index);
  assert_int_equal(p.nworkers, 0);
  /* A path that names no file is read as a synthetic string. */
  assert_int_equal(
      weft__topology_plan(&p, "/nonexistent/topo.xml", 0, WEFT_PLACEMENT_CORE),
      -EBADMSG);
  /* A file that is not hwloc XML. */
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "<nonsense>", 10), 10);
  close(fd);
  assert_int_equal(weft__topology_plan(&p, path, 0, WEFT_PLACEMENT_CORE),
                   -EBADMSG);
  unlink(path);
}

static void topology_xml(void** state) {
  weft__plan_t a;
  weft__plan_t b;
  hwloc_topology_t t;
  char path[] = "/tmp/weft-topo-XXXXXX";
  size_t nn;
  unsigned i;
  int fd;
  (void)state;

  fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(hwloc_topology_init(&t), 0);
  assert_int_equal(hwloc_topology_set_synthetic(t, T2), 0);
  assert_int_equal(hwloc_topology_load(t), 0);
  assert_int_equal(hwloc_topology_export_xml(t, path, 0), 0);
  hwloc_topology_destroy(t);

  /* The same machine from XML plans exactly as from its description. */
  plan_ok(&a, T2, 0, WEFT_PLACEMENT_SPILL);
  plan_ok(&b, path, 0, WEFT_PLACEMENT_SPILL);
  unlink(path);
  assert_int_equal(a.nworkers, b.nworkers);
  nn = (size_t)a.nworkers * (a.nworkers - 1);
  assert_memory_equal(a.pu_os_index, b.pu_os_index, a.nworkers * sizeof(int));
  assert_memory_equal(a.numa_os_index, b.numa_os_index,
                      a.nworkers * sizeof(int));
  assert_memory_equal(a.near, b.near, nn * sizeof(unsigned));
  assert_memory_equal(a.ngroups, b.ngroups, a.nworkers * sizeof(unsigned));
  for (i = 0; i < a.nworkers; i++)
    assert_memory_equal(weft__plan_groups(&a, i), weft__plan_groups(&b, i),
                        a.ngroups[i] * sizeof(unsigned));
  weft__topology_plan_free(&a);
  weft__topology_plan_free(&b);
}

/* The process's own machine, counted by a topology of the test's own:
 * the PUs the process may run on, and the cores they are in. */
static void this_machine(int* cores, int* pus) {
  hwloc_topology_t t;
  hwloc_bitmap_t set;
  hwloc_obj_t core = NULL;
  assert_int_equal(hwloc_topology_init(&t), 0);
  assert_int_equal(hwloc_topology_load(t), 0);
  set = hwloc_bitmap_alloc();
  assert_non_null(set);
  if (hwloc_get_cpubind(t, set, HWLOC_CPUBIND_PROCESS) != 0)
    hwloc_bitmap_copy(set, hwloc_topology_get_topology_cpuset(t));
  hwloc_bitmap_and(set, set, hwloc_topology_get_topology_cpuset(t));
  *pus = hwloc_get_nbobjs_inside_cpuset_by_type(t, set, HWLOC_OBJ_PU);
  *cores = 0;
  while ((core = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_CORE, core)) != NULL)
    if (hwloc_bitmap_intersects(core->cpuset, set))
      (*cores)++;
  if (*cores <= 0)
    *cores = *pus;
  hwloc_bitmap_free(set);
  hwloc_topology_destroy(t);
}

/* ---- placement after the start --------------------------------------- */

/* The first runtime in a process starts unbound while hwloc loads in the
 * background, then binds its workers and the stacks made so far. These
 * run in children forked before anything in this process loaded libweft's
 * topology (they come first), each the first runtime of its process. */

typedef struct {
  cpu_set_t set;
  int worker;
} affinity_t;

static void affinity_job(void* arg) {
  affinity_t* a = arg;
  a->worker = weft_worker_id();
  CHECK(sched_getaffinity(0, sizeof(a->set), &a->set) == 0);
}

/* Worker i's affinity, from a job pinned to it. */
static void worker_affinity(weft_runtime_t* rt, int i, affinity_t* a) {
  weft_spawn_opts_t o = {WEFT_PRIORITY_NORMAL, i};
  weft_counter_t c;
  weft_counter_init(&c, 0);
  CHECK(weft_spawn_ex(rt, affinity_job, a, &c, &o) == 0);
  CHECK(weft_counter_wait(&c, 0) == 0);
  CHECK(a->worker == i);
}

/* Polls until the placer is done (it waits ~10 ms, then loads). */
static bool placed(weft_runtime_t* rt, weft_stats_t* s) {
  int i;
  for (i = 0; i < 5000; i++) {
    if (weft_stats(rt, s) < 0)
      return false;
    if (!s->placing)
      return true;
    test_sleep_ms(1);
  }
  return false;
}

/* A child whose check needs the placer still waiting (it waits 10 ms) and
 * found it done (a slow or loaded machine: Valgrind on two busy cores)
 * exits with this, and runs again. */
#define PREMISE_MISSED 100

/* Exits 0, or the number of the check that failed. */
static void placed_later_child(int cores) {
  weft_runtime_t* rt;
  weft_stats_t s;
  affinity_t a[64];
  cpu_set_t all;
  int i;
  int j;

  if (sched_getaffinity(0, sizeof(all), &all) != 0)
    _exit(1);
  if (weft_runtime_create(&rt, NULL) != 0)
    _exit(2);
  worker_affinity(rt, 0, &a[0]);
  if (weft_stats(rt, &s) < 0 || (int)s.workers != cores || s.workers > 64)
    _exit(3); /* the default count, told without hwloc, is hwloc's */
  /* Unbound for now, having started before the load; a placer already
   * binding (placing is cleared only after it bound every worker) is a
   * missed premise too. */
  if (!s.placing || s.workers_pinned != 0)
    _exit(PREMISE_MISSED);
  if (!CPU_EQUAL(&a[0].set, &all))
    _exit(5);
  if (!placed(rt, &s))
    _exit(6);
  /* Every worker bound to a CPU of its own (one per core), from outside
   * its thread; and every stack made so far bound to its node. */
  if (s.workers_pinned != s.workers)
    _exit(7);
  for (i = 0; i < (int)s.workers; i++) {
    worker_affinity(rt, i, &a[i]);
    if (CPU_COUNT(&a[i].set) != 1)
      _exit(8);
    for (j = 0; j < i; j++)
      if (CPU_EQUAL(&a[i].set, &a[j].set))
        _exit(9);
  }
  if (weft_stats(rt, &s) < 0 ||
      (test_mbind_works() && s.stacks_bound != s.fibers_created))
    _exit(10);
  if (weft_runtime_destroy(rt) != 0 || atomic_load(&test_failures) != 0)
    _exit(11);
  _exit(0);
}

/* A worker that steals before the placer is done binds itself to a CPU
 * of its own meanwhile (two busy workers could otherwise share one). Two
 * jobs that meet at a spin barrier: one of them was stolen. */
typedef struct {
  atomic_int arrived;
  int parent;
  int worker[2];
  cpu_set_t set[2];
  unsigned placing[2];
  unsigned pinned[2];
} meet_t;

static void meet_job(void* arg) {
  meet_t* m = arg;
  weft_stats_t s;
  int k = atomic_fetch_add(&m->arrived, 1);
  long spins;
  for (spins = 0; atomic_load(&m->arrived) < 2 && spins < 2000000000L; spins++)
    ;
  m->worker[k] = weft_worker_id();
  CHECK(sched_getaffinity(0, sizeof(m->set[k]), &m->set[k]) == 0);
  CHECK(weft_stats(weft_runtime_self(), &s) >= 0);
  m->placing[k] = s.placing;
  m->pinned[k] = s.workers_pinned;
}

static void meet_parent(void* arg) {
  meet_t* m = arg;
  weft_counter_t c;
  m->parent = weft_worker_id();
  weft_counter_init(&c, 0);
  CHECK(weft_spawn(NULL, meet_job, m, &c) == 0);
  CHECK(weft_spawn(NULL, meet_job, m, &c) == 0);
  CHECK(weft_counter_wait(&c, 0) == 0);
}

/* Exits 0, or the number of the check that failed. */
static void provisional_child(int cores) {
  weft_runtime_t* rt;
  weft_counter_t c;
  weft_stats_t s;
  meet_t m;
  int k;

  if (cores < 2)
    _exit(0); /* nobody to steal */
  memset(&m, 0, sizeof(m));
  if (weft_runtime_create(&rt, NULL) != 0)
    _exit(1);
  weft_counter_init(&c, 0);
  if (weft_spawn(rt, meet_parent, &m, &c) != 0 || weft_counter_wait(&c, 0) != 0)
    _exit(2);
  if (atomic_load(&m.arrived) != 2 || m.worker[0] == m.worker[1])
    _exit(3);
  for (k = 0; k < 2; k++) {
    if (m.worker[k] == m.parent)
      continue; /* its worker popped it: no steal there */
    if (!m.placing[k] || m.pinned[k] != 0)
      _exit(PREMISE_MISSED); /* the plan had bound it already */
    /* The thief: on one CPU, before the placer bound anything. */
    if (CPU_COUNT(&m.set[k]) != 1)
      _exit(4);
  }
  /* The placer's binding replaces it. */
  if (!placed(rt, &s) || s.workers_pinned != s.workers)
    _exit(6);
  if (weft_runtime_destroy(rt) != 0 || atomic_load(&test_failures) != 0)
    _exit(7);
  _exit(0);
}

/* weft_run over within the wait, with steals on both workers: the
 * caller's thread (worker 0) comes back with the mask it had. */
static void run_meet_main(void* arg) {
  meet_t* m = arg;
  weft_stats_t s;
  meet_parent(m);
  /* A second round, so that each worker steals at least once. */
  atomic_store(&m->arrived, 0);
  meet_parent(m);
  if (weft_stats(weft_runtime_self(), &s) >= 0 &&
      (!s.placing || s.workers_pinned != 0))
    m->parent = -2; /* the placer came first */
}

static void run_mask_child(int cores) {
  cpu_set_t before;
  cpu_set_t after;
  meet_t m;

  if (cores < 2)
    _exit(0);
  memset(&m, 0, sizeof(m));
  if (sched_getaffinity(0, sizeof(before), &before) != 0)
    _exit(1);
  if (weft_run(NULL, run_meet_main, &m) != 0)
    _exit(2);
  if (m.parent == -2)
    _exit(PREMISE_MISSED);
  if (sched_getaffinity(0, sizeof(after), &after) != 0)
    _exit(3);
  if (!CPU_EQUAL(&before, &after))
    _exit(4);
  _exit(atomic_load(&test_failures) != 0 ? 5 : 0);
}

/* A runtime gone before the placer's delay: nothing waits for hwloc, and
 * the next runtime (the topology still unloaded) defers again. */
static void placed_never_child(void) {
  weft_runtime_t* rt;
  weft_stats_t s;
  affinity_t a;
  int k;

  for (k = 0; k < 2; k++) {
    if (weft_runtime_create(&rt, NULL) != 0)
      _exit(1);
    worker_affinity(rt, 0, &a);
    if (weft_stats(rt, &s) < 0)
      _exit(2);
    if (!s.placing)
      _exit(PREMISE_MISSED);
    if (weft_runtime_destroy(rt) != 0)
      _exit(3);
  }
  /* Later runtimes, once it is loaded, are placed at their start: each
   * worker binds itself as its thread starts, which for the second may
   * come after the first ran our job. */
  if (weft_runtime_create(&rt, NULL) != 0)
    _exit(4);
  worker_affinity(rt, 0, &a);
  if (!placed(rt, &s))
    _exit(5);
  for (k = 0; k < 5000 && s.workers_pinned != s.workers; k++) {
    test_sleep_ms(1);
    weft_stats(rt, &s);
  }
  if (s.workers_pinned != s.workers)
    _exit(11);
  if (weft_runtime_destroy(rt) != 0)
    _exit(6);
  if (weft_runtime_create(&rt, NULL) != 0)
    _exit(7);
  worker_affinity(rt, 0, &a);
  if (weft_stats(rt, &s) < 0 || s.placing || CPU_COUNT(&a.set) != 1)
    _exit(8);
  /* Each worker binds itself as its thread starts. */
  for (k = 0; k < 5000 && s.workers_pinned != s.workers; k++) {
    test_sleep_ms(1);
    weft_stats(rt, &s);
  }
  if (s.workers_pinned != s.workers)
    _exit(10);
  if (weft_runtime_destroy(rt) != 0 || atomic_load(&test_failures) != 0)
    _exit(9);
  _exit(0);
}

/* weft_run: worker 0 is the caller's thread, bound from the placer too. */
static void run_placed_main(void* arg) {
  weft_stats_t s;
  int* status = arg;
  cpu_set_t set;
  *status = 1;
  if (!placed(weft_runtime_self(), &s) || s.workers_pinned != s.workers)
    return;
  *status = 2;
  /* Polling never suspended us: still on the calling thread. */
  if (sched_getaffinity(0, sizeof(set), &set) != 0 || CPU_COUNT(&set) != 1)
    return;
  *status = 0;
}

static void placed_run_child(void) {
  int status = -1;
  cpu_set_t before;
  cpu_set_t after;
  if (sched_getaffinity(0, sizeof(before), &before) != 0)
    _exit(19);
  if (weft_run(NULL, run_placed_main, &status) != 0)
    _exit(20);
  if (status != 0)
    _exit(status < 0 ? 21 : 21 + status);
  /* Bound inside, it comes back with the mask it had. */
  if (sched_getaffinity(0, sizeof(after), &after) != 0 ||
      !CPU_EQUAL(&before, &after))
    _exit(25);
  _exit(0);
}

static void fork_child(void (*child)(int), int arg, const char* name) {
  int status;
  int attempt;
  for (attempt = 0; attempt < 5; attempt++) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
      child(arg);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != PREMISE_MISSED)
      break;
  }
  if (WEXITSTATUS(status) == PREMISE_MISSED)
    fail_msg("%s: the placer ran before the check, 5 times", name);
  if (WEXITSTATUS(status) != 0)
    fail_msg("%s: check %d failed", name, WEXITSTATUS(status));
}

static void never_child(int arg) {
  (void)arg;
  placed_never_child();
}

static void run_child(int arg) {
  (void)arg;
  placed_run_child();
}

/* A fork while the placer runs (it waits 10 ms first): the child has no
 * placer thread, so its exit() (the library destructor) must not wait for
 * one. */
static void fork_exit_child(void) {
  weft_runtime_t* rt;
  weft_stats_t s;
  affinity_t a;
  int status;
  int k;
  pid_t pid;

  if (weft_runtime_create(&rt, NULL) != 0 || weft_stats(rt, &s) < 0)
    _exit(1);
  worker_affinity(rt, 0, &a);
  if (weft_stats(rt, &s) < 0)
    _exit(2);
  if (!s.placing)
    _exit(PREMISE_MISSED); /* the placer has not run yet: the case */
  pid = fork();
  if (pid < 0)
    _exit(3);
  if (pid == 0)
    exit(0); /* destructors run */
  for (k = 0; k < 5000 && waitpid(pid, &status, WNOHANG) != pid; k++)
    test_sleep_ms(1);
  if (k == 5000) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    _exit(4); /* the grandchild hung in exit() */
  }
  if (weft_runtime_destroy(rt) != 0)
    _exit(5);
  _exit(0);
}

/* The first runtime's default count, told without hwloc, is hwloc's even
 * when the starting thread may run on fewer CPUs than the process (hwloc
 * keeps to the process's binding: the union of its threads'). */
static void* idle_thread(void* arg) {
  (void)arg;
  pause();
  return NULL;
}

static void narrow_starter_child(int cores) {
  weft_runtime_t* rt;
  weft_stats_t s;
  affinity_t a;
  cpu_set_t one;
  pthread_t t;

  if (pthread_create(&t, NULL, idle_thread, NULL) != 0)
    _exit(1);
  CPU_ZERO(&one);
  CPU_SET(0, &one);
  if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one) != 0)
    _exit(2);
  if (weft_runtime_create(&rt, NULL) != 0)
    _exit(3);
  worker_affinity(rt, 0, &a);
  if (weft_stats(rt, &s) < 0 || (int)s.workers != cores)
    _exit(4);
  if (!placed(rt, &s) || s.workers_pinned != s.workers)
    _exit(5);
  if (weft_runtime_destroy(rt) != 0)
    _exit(6);
  _exit(0);
}

static void fork_exit(int arg) {
  (void)arg;
  fork_exit_child();
}

static bool can_bind_threads(void) {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 &&
         sched_setaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2;
}

static void topology_placed_after_start(void** state) {
  int cores;
  int pus;
  (void)state;
  if (!can_bind_threads())
    skip();
  this_machine(&cores, &pus);
  fork_child(placed_later_child, cores, "placed_later_child");
  fork_child(provisional_child, cores, "provisional_child");
  fork_child(run_mask_child, cores, "run_mask_child");
  fork_child(never_child, 0, "placed_never_child");
  fork_child(run_child, 0, "placed_run_child");
  /* Under ASan, LeakSanitizer's own check at exit hangs now and then in
   * a child forked from a process with threads (6 of 30 runs here; none
   * of 30 with detect_leaks=0), so the grandchild's exit() is checked by
   * the release, TSan and Valgrind runs only. */
  if (!TEST_ASAN)
    fork_child(fork_exit, 0, "fork_exit_child");
  fork_child(narrow_starter_child, cores, "narrow_starter_child");
}

/* The default counts without hwloc match hwloc's. */
static void topology_quick_count(void** state) {
  int cores;
  int pus;
  (void)state;
  this_machine(&cores, &pus);
  assert_int_equal(weft__topology_quick_count(false), cores);
  assert_int_equal(weft__topology_quick_count(true), pus);
}

/* In a child bound to one CPU, every thread of it (as by taskset -a -c:
 * sanitizers run threads of their own): weft plans that CPU alone,
 * whatever the placement. Exits 0, or the number of the check that
 * failed. */
static void binding_child(int cpu) {
  cpu_set_t set;
  weft__plan_t p;
  struct dirent* e;
  DIR* d;

  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  d = opendir("/proc/self/task");
  if (d == NULL)
    _exit(1);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.' &&
        sched_setaffinity((pid_t)atoi(e->d_name), sizeof(set), &set) != 0)
      _exit(1);
  closedir(d);
  if (weft__topology_plan(&p, NULL, 0, WEFT_PLACEMENT_CORE) != 0 ||
      p.nworkers != 1 || p.pu_os_index[0] != cpu || !p.bind)
    _exit(2);
  weft__topology_plan_free(&p);
  if (weft__topology_plan(&p, NULL, 0, WEFT_PLACEMENT_SPILL) != 0 ||
      p.nworkers != 1 || p.pu_os_index[0] != cpu)
    _exit(3);
  weft__topology_plan_free(&p);
  /* More workers than allowed PUs share them: none goes elsewhere. */
  if (weft__topology_plan(&p, NULL, 3, WEFT_PLACEMENT_PU) != 0 ||
      p.pu_os_index[1] != cpu || p.pu_os_index[2] != cpu)
    _exit(4);
  weft__topology_plan_free(&p);
  if (weft__topology_cores() != 1)
    _exit(5);
  if (weft__topology_quick_count(false) != 1 ||
      weft__topology_quick_count(true) != 1)
    _exit(6);
  _exit(0);
}

/* Plans keep to the process's CPU binding. Runs first: the process's
 * topology is loaded (and restricted) once, and the child must be the one
 * to load it. */
static void topology_keeps_to_binding(void** state) {
  cpu_set_t set;
  int cpu = -1;
  int status;
  pid_t pid;
  int c;
  (void)state;

  assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
  if (CPU_COUNT(&set) < 2)
    skip(); /* bound to one CPU already: nothing to restrict */
  for (c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set))
      cpu = c; /* the last: not where an unrestricted plan starts */
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    binding_child(cpu);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0)
    fail_msg("binding_child: check %d failed", WEXITSTATUS(status));
}

static void topology_this_machine(void** state) {
  weft__plan_t p;
  int cores;
  int pus;
  unsigned i;
  unsigned j;
  (void)state;

  this_machine(&cores, &pus);
  plan_ok(&p, NULL, 0, WEFT_PLACEMENT_CORE);
  assert_int_equal(p.nworkers, cores);
  for (i = 0; i < p.nworkers; i++) {
    assert_true(p.pu_os_index[i] >= 0);
    for (j = 0; j < i; j++)
      assert_int_not_equal(p.pu_os_index[i], p.pu_os_index[j]);
  }
  weft__topology_plan_free(&p);
  plan_ok(&p, NULL, 0, WEFT_PLACEMENT_PU);
  assert_int_equal(p.nworkers, pus);
  weft__topology_plan_free(&p);
}

static void topology_env_placement(void** state) {
  weft_config_t cfg;
  weft__plan_t p;
  (void)state;

  weft_config_init(&cfg);
  assert_int_equal(cfg.placement, WEFT_PLACEMENT_CORE);
  assert_int_equal(setenv("WEFT_TOPOLOGY", T1, 1), 0);
  assert_int_equal(weft__topology_plan_config(&p, &cfg), 0);
  assert_int_equal(p.nworkers, 128);
  assert_int_equal(p.placement, WEFT_PLACEMENT_CORE);
  assert_false(p.bind); /* a described machine is never bound to */
  weft__topology_plan_free(&p);

  /* pin = 0 means no placement... */
  cfg.pin = 0;
  assert_int_equal(weft__topology_plan_config(&p, &cfg), 0);
  assert_int_equal(p.placement, WEFT_PLACEMENT_NONE);
  assert_int_equal(p.pu_os_index[0], -1);
  weft__topology_plan_free(&p);
  /* ...unless WEFT_PLACEMENT says otherwise; any case. */
  assert_int_equal(setenv("WEFT_PLACEMENT", "PU", 1), 0);
  assert_int_equal(weft__topology_plan_config(&p, &cfg), 0);
  assert_int_equal(p.placement, WEFT_PLACEMENT_PU);
  assert_int_equal(p.nworkers, 256);
  weft__topology_plan_free(&p);
  assert_int_equal(setenv("WEFT_PLACEMENT", "cache", 1), 0);
  cfg.workers = 5;
  assert_int_equal(weft__topology_plan_config(&p, &cfg), 0);
  assert_int_equal(p.placement, WEFT_PLACEMENT_CACHE);
  assert_int_equal(p.nworkers, 5);
  weft__topology_plan_free(&p);

  assert_int_equal(setenv("WEFT_PLACEMENT", "diagonal", 1), 0);
  assert_int_equal(weft__topology_plan_config(&p, &cfg), -EBADMSG);
  assert_null(p.near);
  /* Empty means unset. */
  assert_int_equal(setenv("WEFT_PLACEMENT", "", 1), 0);
  assert_int_equal(setenv("WEFT_TOPOLOGY", "", 1), 0);
  cfg.pin = 1;
  assert_int_equal(weft__topology_plan_config(&p, &cfg), 0);
  assert_int_equal(p.placement, WEFT_PLACEMENT_CORE);
  assert_true(p.bind);
  weft__topology_plan_free(&p);
  unsetenv("WEFT_PLACEMENT");
  unsetenv("WEFT_TOPOLOGY");
}

static void count_job(void* arg) {
  atomic_fetch_add((atomic_int*)arg, 1);
}

static void count_range(size_t begin, size_t end, void* arg) {
  atomic_fetch_add((atomic_int*)arg, (int)(end - begin));
}

static void run_main(void* arg) {
  CHECK(weft_parallel_for(NULL, 0, 1000, 10, count_range, arg) == 0);
}

static void topology_runtime_described(void** state) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t c;
  weft_stats_t s;
  atomic_int n = 0;
  int i;
  (void)state;

  /* Workers = 0 counts the described machine's cores, not this one's. */
  assert_int_equal(setenv("WEFT_TOPOLOGY", "pack:1 core:3 pu:1", 1), 0);
  rt = test_runtime(0);
  weft_counter_init(&c, 0);
  for (i = 0; i < 1000; i++)
    assert_int_equal(weft_spawn(rt, count_job, &n, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(atomic_load(&n), 1000);
  assert_int_equal(weft_stats(rt, &s), 3);
  assert_int_equal(s.workers, 3);
  test_assert_no_live_fibers(rt);
  assert_int_equal(weft_runtime_destroy(rt), 0);

  /* A fresh plan per start: another machine in the same process. */
  assert_int_equal(setenv("WEFT_TOPOLOGY", "pack:2 core:2 pu:2", 1), 0);
  weft_config_init(&cfg);
  cfg.placement = WEFT_PLACEMENT_PU;
  atomic_store(&n, 0);
  assert_int_equal(weft_runtime_create(&rt, &cfg), 0);
  assert_int_equal(weft_parallel_for(rt, 0, 5000, 7, count_range, &n), 0);
  assert_int_equal(atomic_load(&n), 5000);
  assert_int_equal(weft_stats(rt, &s), 8);
  assert_int_equal(weft_runtime_destroy(rt), 0);

  atomic_store(&n, 0);
  assert_int_equal(weft_run(&cfg, run_main, &n), 0);
  assert_int_equal(atomic_load(&n), 1000);
  ASSERT_NO_CHECK_FAILED();
  unsetenv("WEFT_TOPOLOGY");
}

static void topology_runtime_bad_env(void** state) {
  weft_runtime_t* rt;
  weft_counter_t c;
  atomic_int n = 0;
  (void)state;

  assert_int_equal(setenv("WEFT_TOPOLOGY", "pack:banana", 1), 0);
  rt = test_runtime(2); /* creation is lazy: nothing read yet */
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, count_job, &n, &c), -EBADMSG);
  assert_int_equal(weft_counter_value(&c), 0);
  assert_string_equal(weft_err_name(-EBADMSG), "EBADMSG");
  assert_non_null(strstr(weft_strerror(-EBADMSG), "WEFT_"));
  assert_int_equal(weft_run(NULL, count_job, &n), -EBADMSG);
  /* The start failed cleanly and is tried again at the next job. */
  unsetenv("WEFT_TOPOLOGY");
  assert_int_equal(weft_spawn(rt, count_job, &n, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(atomic_load(&n), 1);
  assert_int_equal(weft_runtime_destroy(rt), 0);

  assert_int_equal(setenv("WEFT_PLACEMENT", "diagonal", 1), 0);
  rt = test_runtime(2);
  assert_int_equal(weft_spawn(rt, count_job, &n, &c), -EBADMSG);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  unsetenv("WEFT_PLACEMENT");
}

static void topology_presets(void** state) {
  weft_config_t cfg;
  weft_runtime_t* rt = NULL;
  int cores;
  int pus;
  (void)state;

  this_machine(&cores, &pus);
  weft_config_init(&cfg);
  cfg.pin = 0;
  cfg.stack_size = 64 * 1024;
  assert_int_equal(weft_config_preset(&cfg, WEFT_PRESET_THROUGHPUT), 0);
  assert_int_equal(cfg.workers, 0);
  assert_int_equal(cfg.placement, WEFT_PLACEMENT_CORE);
  assert_int_equal(cfg.pin, 1);
  assert_int_equal(cfg.stack_size, 64 * 1024); /* left alone */
  assert_int_equal(weft_config_preset(&cfg, WEFT_PRESET_LATENCY), 0);
  assert_int_equal(cfg.workers, 0);
  assert_int_equal(cfg.placement, WEFT_PLACEMENT_CACHE);
  assert_int_equal(weft_config_preset(&cfg, WEFT_PRESET_BACKGROUND), 0);
  assert_int_equal(cfg.workers, cores / 4 > 0 ? cores / 4 : 1);
  assert_int_equal(cfg.placement, WEFT_PLACEMENT_NONE);
  assert_int_equal(weft_config_preset(NULL, WEFT_PRESET_LATENCY), -EINVAL);
  assert_int_equal(weft_config_preset(&cfg, (weft_preset_t)3), -EINVAL);

  weft_config_init(&cfg);
  cfg.placement = (weft_placement_t)5;
  assert_int_equal(weft_runtime_create(&rt, &cfg), -EINVAL);
  assert_null(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(topology_placed_after_start),
      cmocka_unit_test(topology_keeps_to_binding),
      cmocka_unit_test(topology_quick_count),
      cmocka_unit_test(topology_core_256),
      cmocka_unit_test(topology_pu_256),
      cmocka_unit_test(topology_cache_domain),
      cmocka_unit_test(topology_spill_order),
      cmocka_unit_test(topology_wrap),
      cmocka_unit_test(topology_none),
      cmocka_unit_test(topology_bad_desc),
      cmocka_unit_test(topology_xml),
      cmocka_unit_test(topology_this_machine),
      cmocka_unit_test(topology_env_placement),
      cmocka_unit_test(topology_runtime_described),
      cmocka_unit_test(topology_runtime_bad_env),
      cmocka_unit_test(topology_presets),
  };
  /* The environment these tests set must not leak in from outside. */
  unsetenv("WEFT_PLACEMENT");
  unsetenv("WEFT_TOPOLOGY");
  return cmocka_run_group_tests_name("topology", tests, NULL, NULL);
}
