/* topology.c: where workers run and whom they steal from, from hwloc.
 *
 * A placement strategy lists the machine's PUs in the order workers take
 * them (worker i gets entry i, wrapping), and every worker's victims are
 * ordered by closeness: the same PU, the same core, a shared cache, the same
 * NUMA node, the same package, then the rest. Plans are made against the
 * process's machine (the CPUs it may run on), loaded once, or against one
 * WEFT_TOPOLOGY describes, which is never bound to. docs/topology.md
 * explains the strategies.
 */
#include <dirent.h>
#include <errno.h>
#include <hwloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "internal.h"

static pthread_once_t topo_once = PTHREAD_ONCE_INIT;
static hwloc_topology_t topo;
static int topo_inited; /* by topology_preinit */
static int topo_err;
/* 1 once a load started, 2 once it ended (well or not): a look that never
 * waits, where pthread_once would. Release stores at each step, pairing
 * with the acquire loads of weft__topology_loaded and the fork handler. */
static atomic_int topo_stage;

static void topo_fork_prepare(void);
static void topo_fork_done(void);

/* hwloc's first topology init in a process loads its plugins (PCI, OpenCL,
 * GL with X11, libxml2 with ICU): about 3 ms of dlopen, for devices and a
 * file format placement never uses (hwloc's built-in XML parser remains).
 * Only the environment can keep them out, and only at that first init, so
 * it happens here, at load time, while the program normally has one thread:
 * the variable is set just around the call, and never when the user set
 * it (or HWLOC_PLUGINS_PATH) already. The runtime loads the topology
 * itself later, lazily. */
__attribute__((constructor)) static void topology_preinit(void) {
  if (getenv("HWLOC_PLUGINS_BLACKLIST") != NULL ||
      getenv("HWLOC_PLUGINS_PATH") != NULL)
    return;
  if (setenv("HWLOC_PLUGINS_BLACKLIST",
             "hwloc_pci,hwloc_opencl,hwloc_gl,hwloc_xml_libxml,"
             "hwloc_cuda,hwloc_nvml,hwloc_rsmi,hwloc_levelzero",
             0) != 0)
    return;
  topo_inited = hwloc_topology_init(&topo) == 0;
  unsetenv("HWLOC_PLUGINS_BLACKLIST");
}

/* A runtime's first start may leave the load to a background thread
 * (runtime.c): a fork then must not copy a half-made topology, nor a
 * pthread_once the child would wait on forever. */
__attribute__((constructor)) static void topology_atfork(void) {
  pthread_atfork(topo_fork_prepare, topo_fork_done, topo_fork_done);
}

/* Only what placement needs: no I/O devices, no instruction caches, no L1
 * (private to a core, so it orders nothing); and, where hwloc can skip
 * them, no distance matrices, memory attributes or CPU kinds, which
 * placement never reads. Together a sixth of the load time here. */
static void topo_filter(hwloc_topology_t t) {
  hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_NONE);
  hwloc_topology_set_icache_types_filter(t, HWLOC_TYPE_FILTER_KEEP_NONE);
  hwloc_topology_set_type_filter(t, HWLOC_OBJ_L1CACHE,
                                 HWLOC_TYPE_FILTER_KEEP_NONE);
#if HWLOC_API_VERSION >= 0x00020800
  hwloc_topology_set_flags(
      t, hwloc_topology_get_flags(t) | HWLOC_TOPOLOGY_FLAG_NO_DISTANCES |
             HWLOC_TOPOLOGY_FLAG_NO_MEMATTRS | HWLOC_TOPOLOGY_FLAG_NO_CPUKINDS);
#endif
}

/* Keeps to the CPUs the process may run on (taskset, numactl, an MPI
 * launcher's binding: the union of its threads' affinities): binding a
 * worker outside them would undo the user's choice, and a default worker
 * count must count only them. hwloc already leaves out CPUs the cgroup
 * forbids. Returns 0, or -ENOMEM when hwloc failed and reset t. */
static int topo_restrict_to_binding(hwloc_topology_t t) {
  hwloc_const_cpuset_t all = hwloc_topology_get_topology_cpuset(t);
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  int err = 0;

  if (set == NULL)
    return 0; /* unrestricted, as if the binding were unknown */
  if (hwloc_get_cpubind(t, set, HWLOC_CPUBIND_PROCESS) == 0) {
    hwloc_bitmap_and(set, set, all);
    if (!hwloc_bitmap_iszero(set) && !hwloc_bitmap_isequal(set, all) &&
        hwloc_topology_restrict(t, set, 0) != 0 && errno == ENOMEM)
      err = -ENOMEM;
  }
  hwloc_bitmap_free(set);
  return err;
}

static void topo_load_once(void) {
  if (!topo_inited && hwloc_topology_init(&topo) != 0) {
    topo_err = -ENOMEM;
    return;
  }
  topo_filter(topo);
#if HWLOC_API_VERSION >= 0x00020100
  /* On Linux, sysfs tells cores, packages, caches and NUMA nodes; the x86
   * backend's CPUID walk adds nothing placement needs and a third of the
   * load time. */
  hwloc_topology_set_components(topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                "x86");
#endif
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    topo_err = -ENOSYS;
    return;
  }
  topo_err = topo_restrict_to_binding(topo);
  if (topo_err != 0)
    hwloc_topology_destroy(topo);
}

/* Held across a load, and by a fork from its prepare handler to its end:
 * a fork waits for a load under way, and no load starts during a fork
 * (looking at topo_stage alone left a window between the look and the
 * fork in which the placer could start one). */
static pthread_mutex_t topo_fork_lock = PTHREAD_MUTEX_INITIALIZER;

static void topo_load(void) {
  pthread_mutex_lock(&topo_fork_lock);
  atomic_store_explicit(&topo_stage, 1, memory_order_release);
  topo_load_once();
  atomic_store_explicit(&topo_stage, 2, memory_order_release);
  pthread_mutex_unlock(&topo_fork_lock);
}

static int topo_get(void) {
  pthread_once(&topo_once, topo_load);
  return topo_err;
}

static void topo_fork_prepare(void) {
  /* A load under way ends first; none starts until the fork is done. */
  pthread_mutex_lock(&topo_fork_lock);
}

static void topo_fork_done(void) {
  pthread_mutex_unlock(&topo_fork_lock);
}

bool weft__topology_loaded(void) {
  return atomic_load_explicit(&topo_stage, memory_order_acquire) == 2;
}

/* Whether the CPU list in `path` ("0-3,8,10-11") holds an allowed CPU
 * below `cpu`. -1 if unreadable. */
static int lower_sibling_allowed(const char* path, unsigned cpu,
                                 const cpu_set_t* allowed) {
  char buf[4096];
  FILE* f = fopen(path, "re");
  char* p = buf;
  size_t len;

  if (f == NULL)
    return -1;
  len = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  if (len == 0)
    return -1;
  buf[len] = '\0';
  while (*p != '\0' && *p != '\n') {
    char* end;
    unsigned long lo = strtoul(p, &end, 10);
    unsigned long hi = lo;
    unsigned long c;
    if (end == p)
      return -1;
    if (*end == '-') {
      p = end + 1;
      hi = strtoul(p, &end, 10);
      if (end == p || hi < lo)
        return -1;
    }
    for (c = lo; c <= hi && c < cpu; c++)
      if (c < CPU_SETSIZE && CPU_ISSET(c, allowed))
        return 1;
    p = end;
    if (*p == ',')
      p++;
  }
  return 0;
}

/* The CPUs any thread of the process may run on: what hwloc's
 * HWLOC_CPUBIND_PROCESS reads (topo_restrict_to_binding), the union of
 * every thread's affinity, not the calling thread's alone. */
static int process_affinity(cpu_set_t* allowed) {
  DIR* d;
  struct dirent* e;
  int err = 0;

  if (sched_getaffinity(0, sizeof(*allowed), allowed) != 0)
    return -1;
  d = opendir("/proc/self/task");
  if (d == NULL)
    return 0; /* no procfs: the calling thread's */
  while ((e = readdir(d)) != NULL) {
    cpu_set_t one;
    if (e->d_name[0] == '.')
      continue;
    if (sched_getaffinity((pid_t)atoi(e->d_name), sizeof(one), &one) != 0) {
      if (errno == ESRCH)
        continue; /* gone meanwhile */
      err = -1;
      break;
    }
    CPU_OR(allowed, allowed, &one);
  }
  closedir(d);
  return err;
}

/* The placement units the process's threads may run on, without hwloc:
 * each allowed PU (pus), or each core at its lowest allowed PU, in CPU
 * order. Returns how many there are, or 0 when they cannot be told; with
 * `cpus`, stores the first `max` and stops there (a sysfs read per CPU). */
static unsigned quick_units(bool pus, cpu_set_t* allowed, int* cpus,
                            unsigned max) {
  unsigned n = 0;
  unsigned c;

  if (process_affinity(allowed) != 0)
    return 0; /* more CPUs than a cpu_set_t holds: ask hwloc */
  for (c = 0; c < CPU_SETSIZE && (cpus == NULL || n < max); c++) {
    char path[96];
    int lower = 0;
    if (!CPU_ISSET(c, allowed))
      continue;
    if (pus) {
      if (cpus != NULL && n < max)
        cpus[n] = (int)c;
      n++;
      continue;
    }
    snprintf(path, sizeof(path),
             "/sys/devices/system/cpu/cpu%u/topology/core_cpus_list", c);
    lower = lower_sibling_allowed(path, c, allowed);
    if (lower < 0) {
      snprintf(path, sizeof(path),
               "/sys/devices/system/cpu/cpu%u/topology/thread_siblings_list",
               c);
      lower = lower_sibling_allowed(path, c, allowed);
    }
    if (lower < 0)
      return 0;
    if (lower == 0) {
      if (cpus != NULL && n < max)
        cpus[n] = (int)c;
      n++;
    }
  }
  return n;
}

unsigned weft__topology_quick_count(bool pus) {
  cpu_set_t allowed;
  return quick_units(pus, &allowed, NULL, 0);
}

int weft__topology_quick_cpus(weft_placement_t placement, int* cpus,
                              unsigned n) {
  cpu_set_t allowed;
  unsigned have;
  if (placement != WEFT_PLACEMENT_CORE && placement != WEFT_PLACEMENT_PU &&
      placement != WEFT_PLACEMENT_SPILL)
    return -EINVAL;
  have = quick_units(placement != WEFT_PLACEMENT_CORE, &allowed, cpus, n);
  return have >= n && n > 0 ? 0 : -ENOENT;
}

void* weft__topology_handle(void) {
  return topo_get() == 0 ? (void*)topo : NULL;
}

/* A described machine: an hwloc XML file when `desc` names a regular file,
 * else a synthetic description ("pack:2 core:8 pu:2"). Loaded afresh for
 * every plan, so one process can plan against several machines (tests do),
 * while the process's own topology stays loaded once. */
static int topo_load_described(const char* desc, hwloc_topology_t* out) {
  hwloc_topology_t t;
  struct stat st;
  int rc;

  if (hwloc_topology_init(&t) != 0)
    return -ENOMEM;
  topo_filter(t);
  if (stat(desc, &st) == 0 && S_ISREG(st.st_mode))
    rc = hwloc_topology_set_xml(t, desc);
  else
    rc = hwloc_topology_set_synthetic(t, desc);
  if (rc == 0)
    rc = hwloc_topology_load(t);
  if (rc != 0) {
    hwloc_topology_destroy(t);
    return -EBADMSG;
  }
  *out = t;
  return 0;
}

/* The placement units: cores, or PUs where hwloc found no cores. */
static hwloc_obj_type_t core_type(hwloc_topology_t t) {
  return hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                         : HWLOC_OBJ_PU;
}

int weft__topology_cores(void) {
  int n;
  if (topo_get() != 0)
    return 1;
  n = hwloc_get_nbobjs_by_type(topo, core_type(topo));
  return n > 0 ? n : 1;
}

/* The cache domain of a core, which WEFT_PLACEMENT_CACHE keeps to and
 * WEFT_PLACEMENT_SPILL fills one at a time: its outermost data cache (the
 * L3 of a CCD or a package) if other cores share it. Without one, the
 * largest part of its package local to the same NUMA nodes: in hwloc 2
 * NUMA nodes are memory children, not ancestors, so locality is compared
 * by nodeset. */
static hwloc_obj_t cache_domain(hwloc_topology_t t, hwloc_obj_type_t ctype,
                                hwloc_obj_t core) {
  hwloc_obj_t llc = NULL;
  hwloc_obj_t o;

  for (o = core->parent; o != NULL; o = o->parent)
    if (hwloc_obj_type_is_dcache(o->type))
      llc = o;
  if (llc != NULL &&
      hwloc_get_nbobjs_inside_cpuset_by_type(t, llc->cpuset, ctype) > 1)
    return llc;
  o = core;
  while (o->type != HWLOC_OBJ_PACKAGE && o->parent != NULL &&
         hwloc_bitmap_isequal(o->parent->nodeset, core->nodeset))
    o = o->parent;
  return o;
}

/* The machine's PUs in logical order, each with its place in its core
 * (0 for the first PU, 1 for its SMT sibling...) and its cache domain's
 * number (domains numbered in logical order). */
typedef struct {
  hwloc_obj_t* pu;
  unsigned* rank;
  unsigned* domain;
  unsigned npus;
  unsigned ncores;
} pus_t;

static void pus_free(pus_t* p) {
  free(p->pu);
  free(p->rank);
  free(p->domain);
}

static int pus_get(hwloc_topology_t t, pus_t* p) {
  hwloc_obj_type_t ctype = core_type(t);
  hwloc_obj_t* domains;
  hwloc_obj_t core = NULL;
  unsigned ndomains = 0;
  unsigned d = 0;
  unsigned i;
  int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);

  memset(p, 0, sizeof(*p));
  if (n <= 0)
    return 0;
  p->npus = (unsigned)n;
  p->pu = calloc(p->npus, sizeof(*p->pu));
  p->rank = calloc(p->npus, sizeof(*p->rank));
  p->domain = calloc(p->npus, sizeof(*p->domain));
  domains = calloc(p->npus, sizeof(*domains));
  if (p->pu == NULL || p->rank == NULL || p->domain == NULL ||
      domains == NULL) {
    free(domains);
    pus_free(p);
    return -ENOMEM;
  }
  for (i = 0; i < p->npus; i++) {
    hwloc_obj_t pu = hwloc_get_obj_by_type(t, HWLOC_OBJ_PU, i);
    hwloc_obj_t c = hwloc_get_ancestor_obj_by_type(t, ctype, pu);
    if (c == NULL)
      c = pu;
    p->pu[i] = pu;
    /* A core's PUs are consecutive in logical order. */
    if (c == core) {
      p->rank[i] = p->rank[i - 1] + 1;
    } else {
      hwloc_obj_t dom = cache_domain(t, ctype, c);
      core = c;
      p->ncores++;
      for (d = 0; d < ndomains && domains[d] != dom; d++)
        ;
      if (d == ndomains)
        domains[ndomains++] = dom;
    }
    p->domain[i] = d;
  }
  free(domains);
  return 0;
}

/* Appends to order[] the PUs of domain `dom` (all domains if -1) a round at
 * a time: the first PU of every core, then the second PU of every core that
 * has one, and so on, so that SMT siblings are taken only once every core
 * has a worker. Returns the new length; *cores gets the round-0 count. */
static unsigned add_rounds(const pus_t* p, int dom, hwloc_obj_t* order,
                           unsigned len, unsigned* cores) {
  unsigned r;
  unsigned i;
  unsigned start = len;
  unsigned before;

  *cores = 0;
  for (r = 0;; r++) {
    before = len;
    for (i = 0; i < p->npus; i++)
      if (p->rank[i] == r && (dom < 0 || p->domain[i] == (unsigned)dom))
        order[len++] = p->pu[i];
    if (r == 0)
      *cores = len - start;
    if (len == before)
      return len;
  }
}

/* The PUs workers take, in order, for `placement`, and how many workers
 * the strategy makes by default. Returns the list's length. */
static unsigned placement_order(const pus_t* p, weft_placement_t placement,
                                hwloc_obj_t* order, unsigned* dflt) {
  unsigned len = 0;
  unsigned cores;
  unsigned i;

  switch (placement) {
    case WEFT_PLACEMENT_PU:
      for (i = 0; i < p->npus; i++)
        order[len++] = p->pu[i];
      *dflt = len;
      break;
    case WEFT_PLACEMENT_CACHE:
      len = add_rounds(p, 0, order, 0, dflt);
      break;
    case WEFT_PLACEMENT_SPILL:
      /* A whole domain, SMT siblings included, before the next, so that a
       * given number of workers spans as few L3s as it can. Every PU is in
       * one of the first npus domains. */
      for (i = 0; len < p->npus && i < p->npus; i++)
        len = add_rounds(p, (int)i, order, len, &cores);
      *dflt = len;
      break;
    default: /* WEFT_PLACEMENT_CORE */
      len = add_rounds(p, -1, order, 0, dflt);
      break;
  }
  return len;
}

/* How near PUs a and b are, in [0, 2 * ndepth): first whether they have
 * the same local NUMA nodes, then the depth of their common ancestor (PU,
 * core, L2, L3, a group, the package, the machine: deeper is nearer;
 * ndepth is the topology's depth, above any object's). The depth alone
 * orders NUMA nodes wherever hwloc hangs one off each CPU-side object (a
 * group it makes if need be); the nodesets keep victims that share local
 * memory first where memory is attached unevenly. */
static unsigned nearness(hwloc_topology_t t, int ndepth, hwloc_obj_t a,
                         hwloc_obj_t b) {
  hwloc_obj_t c = a == b ? a : hwloc_get_common_ancestor_obj(t, a, b);
  int same_numa = hwloc_bitmap_isequal(a->nodeset, b->nodeset);
  return (unsigned)(same_numa * ndepth + (c != NULL ? c->depth : 0));
}

void weft__topology_plan_free(weft__plan_t* plan) {
  free(plan->pu_os_index);
  free(plan->numa_os_index);
  free(plan->near);
  free(plan->near_group);
  free(plan->ngroups);
  memset(plan, 0, sizeof(*plan));
}

int weft__topology_plan(weft__plan_t* plan, const char* desc, unsigned n,
                        weft_placement_t placement) {
  hwloc_topology_t t = NULL;
  hwloc_topology_t described = NULL;
  hwloc_obj_t* order = NULL;
  hwloc_obj_t* unit = NULL;
  unsigned* key = NULL;
  unsigned* count = NULL;
  pus_t p;
  unsigned len = 0;
  unsigned dflt = 1;
  unsigned nkeys = 1;
  int ndepth = 0;
  unsigned nv;
  unsigned i;
  unsigned j;
  unsigned k;
  int err;

  memset(plan, 0, sizeof(*plan));
  memset(&p, 0, sizeof(p));
  if (desc != NULL) {
    err = topo_load_described(desc, &described);
    if (err != 0)
      return err;
    t = described;
  } else if (placement != WEFT_PLACEMENT_NONE || n == 0) {
    /* Without hwloc the runtime still works: unbound, in a flat order. */
    if (topo_get() == 0)
      t = topo;
  }

  if (t != NULL) {
    err = pus_get(t, &p);
    if (err != 0)
      goto out;
    if (placement == WEFT_PLACEMENT_NONE) {
      dflt = p.ncores;
    } else if (p.npus > 0) {
      order = calloc(p.npus, sizeof(*order));
      if (order == NULL) {
        err = -ENOMEM;
        goto out;
      }
      len = placement_order(&p, placement, order, &dflt);
    }
  }
  if (n == 0)
    n = dflt > 0 ? dflt : 1;
  if (n > WEFT__MAX_WORKERS)
    n = WEFT__MAX_WORKERS;

  nv = n > 1 ? n - 1 : 1;
  plan->nworkers = n;
  plan->placement = len > 0 ? placement : WEFT_PLACEMENT_NONE;
  plan->bind = len > 0 && described == NULL;
  plan->pu_os_index = calloc(n, sizeof(*plan->pu_os_index));
  plan->numa_os_index = calloc(n, sizeof(*plan->numa_os_index));
  plan->near = calloc((size_t)n * nv, sizeof(*plan->near));
  plan->ngroups = calloc(n, sizeof(*plan->ngroups));
  if (len > 0) {
    ndepth = hwloc_topology_get_depth(t);
    nkeys = 2 * (unsigned)ndepth;
  }
  /* A worker has at most one group per nearness value. */
  plan->group_stride = nkeys < nv ? nkeys : nv;
  plan->near_group =
      calloc((size_t)n * plan->group_stride, sizeof(*plan->near_group));
  unit = calloc(n, sizeof(*unit));
  key = calloc(n, sizeof(*key));
  count = calloc(nkeys, sizeof(*count));
  if (plan->pu_os_index == NULL || plan->numa_os_index == NULL ||
      plan->near == NULL || plan->near_group == NULL || plan->ngroups == NULL ||
      unit == NULL || key == NULL || count == NULL) {
    err = -ENOMEM;
    goto out;
  }

  for (i = 0; i < n; i++) {
    unit[i] = len > 0 ? order[i % len] : NULL;
    plan->pu_os_index[i] = unit[i] != NULL ? (int)unit[i]->os_index : -1;
    plan->numa_os_index[i] =
        unit[i] != NULL ? hwloc_bitmap_first(unit[i]->nodeset) : -1;
  }

  /* Victims sorted nearest first, by worker within a group: a counting
   * sort on the few nearness values, since a 4096-worker plan would spend
   * seconds in comparison sorts. count[k] turns from the size of group k
   * into its next free slot. */
  for (i = 0; i < n; i++) {
    unsigned* near = plan->near + (size_t)i * nv;
    unsigned* grp = plan->near_group + (size_t)i * plan->group_stride;
    unsigned end = 0;
    memset(count, 0, nkeys * sizeof(*count));
    for (j = 0; j < n; j++) {
      key[j] = unit[i] != NULL ? nearness(t, ndepth, unit[i], unit[j]) : 0;
      if (j != i)
        count[key[j]]++;
    }
    for (k = nkeys; k-- > 0;) {
      if (count[k] == 0)
        continue;
      end += count[k];
      grp[plan->ngroups[i]++] = end;
      count[k] = end - count[k]; /* where the group starts */
    }
    for (j = 0; j < n; j++)
      if (j != i)
        near[count[key[j]]++] = j;
  }
  err = 0;

out:
  if (err != 0)
    weft__topology_plan_free(plan);
  free(unit);
  free(key);
  free(count);
  free(order);
  pus_free(&p);
  if (described != NULL)
    hwloc_topology_destroy(described);
  return err;
}

static int placement_parse(const char* s, weft_placement_t* out) {
  static const char* const names[] = {"none", "core", "pu", "cache", "spill"};
  unsigned i;
  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcasecmp(s, names[i]) == 0) {
      *out = (weft_placement_t)i;
      return 0;
    }
  return -EBADMSG;
}

int weft__topology_plan_config(weft__plan_t* plan, const weft_config_t* cfg) {
  return weft__topology_plan_start(plan, cfg, NULL);
}

int weft__topology_plan_start(weft__plan_t* plan, const weft_config_t* cfg,
                              weft_placement_t* later) {
  weft_placement_t placement = cfg->pin ? cfg->placement : WEFT_PLACEMENT_NONE;
  const char* s = getenv("WEFT_PLACEMENT");
  const char* desc = getenv("WEFT_TOPOLOGY");
  unsigned n = cfg->workers;
  int err;

  /* Read at every start, so a process can change them between runtimes
   * (never while one starts: getenv races with setenv). The start is the
   * first place that can report a bad value, and its error code cannot say
   * which variable held it: stderr does. */
  if (s != NULL && *s != '\0' && placement_parse(s, &placement) != 0) {
    memset(plan, 0, sizeof(*plan));
    fprintf(stderr,
            "weft: WEFT_PLACEMENT=\"%s\": expected none, core, pu, cache or "
            "spill\n",
            s);
    return -EBADMSG;
  }
  if (desc != NULL && *desc == '\0')
    desc = NULL;
  if (later != NULL)
    *later = WEFT_PLACEMENT_NONE;
  /* hwloc's first load takes a millisecond or two here, more than the rest
   * of a start: while the process has none, start in a flat order, unbound
   * (the caller places the workers once a background load is done). The
   * default count comes from the affinity mask and sysfs, as hwloc's
   * would; the cache strategy's needs hwloc's cache domains. */
  if (later != NULL && desc == NULL && !weft__topology_loaded()) {
    if (n == 0 && placement == WEFT_PLACEMENT_NONE)
      n = weft__topology_quick_count(false);
    else if (n == 0 && placement == WEFT_PLACEMENT_CORE)
      n = weft__topology_quick_count(false);
    else if (n == 0 && (placement == WEFT_PLACEMENT_PU ||
                        placement == WEFT_PLACEMENT_SPILL))
      n = weft__topology_quick_count(true);
    if (n != 0) {
      err = weft__topology_plan(plan, NULL, n, WEFT_PLACEMENT_NONE);
      if (err == 0)
        *later = placement;
      return err;
    }
    n = cfg->workers;
  }
  err = weft__topology_plan(plan, desc, n, placement);
  if (err == -EBADMSG)
    fprintf(stderr,
            "weft: WEFT_TOPOLOGY=\"%s\": neither an hwloc XML file nor a "
            "valid hwloc synthetic description\n",
            desc);
  return err;
}

/* Binds `thread` (self: the calling one) to worker's PU. */
static int pin(const weft__plan_t* plan, unsigned worker, bool self,
               pthread_t thread) {
  hwloc_obj_t pu;
  int rc;
  if (!plan->bind || plan->pu_os_index == NULL || plan->pu_os_index[worker] < 0)
    return -EINVAL;
  if (topo_get() != 0)
    return topo_err;
  pu = hwloc_get_pu_obj_by_os_index(topo, (unsigned)plan->pu_os_index[worker]);
  if (pu == NULL)
    return -EINVAL;
  rc = self ? hwloc_set_cpubind(topo, pu->cpuset, HWLOC_CPUBIND_THREAD)
            : hwloc_set_thread_cpubind(topo, thread, pu->cpuset,
                                       HWLOC_CPUBIND_THREAD);
  return rc != 0 ? -errno : 0;
}

int weft__topology_pin_thread(const weft__plan_t* plan, unsigned worker,
                              pthread_t thread) {
  return pin(plan, worker, false, thread);
}

int weft__topology_pin_self(const weft__plan_t* plan, unsigned worker) {
  return pin(plan, worker, true, pthread_self());
}
