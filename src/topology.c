/* topology.c: where workers run and whom they steal from, from hwloc.
 *
 * The machine's topology is discovered once per process (it takes a few
 * milliseconds) and kept. A plan puts worker i on core i (wrapping when
 * there are more workers than cores) and orders every worker's victims by
 * closeness: workers whose cores share a deeper hwloc ancestor (a cache, a
 * NUMA-bearing group, a package) come first. Binding a thread does nothing
 * on a synthetic topology, so tests check plans, not affinity.
 */
#include <hwloc.h>
#include <stdlib.h>

#include "internal.h"

static pthread_once_t topo_once = PTHREAD_ONCE_INIT;
static hwloc_topology_t topo;
static int topo_inited; /* by topology_preinit */
static int topo_err;

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

static void topo_load(void) {
  if (!topo_inited && hwloc_topology_init(&topo) != 0) {
    topo_err = -ENOMEM;
    return;
  }
  /* Only what placement needs: no I/O devices, no instruction caches. */
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_NONE);
  hwloc_topology_set_icache_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_NONE);
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
  }
}

static int topo_get(void) {
  pthread_once(&topo_once, topo_load);
  return topo_err;
}

void* weft__topology_handle(void) {
  return topo_get() == 0 ? (void*)topo : NULL;
}

/* The placement units: cores, or PUs where hwloc found no cores. */
static hwloc_obj_type_t unit_type(void) {
  return hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE
                                                            : HWLOC_OBJ_PU;
}

int weft__topology_cores(void) {
  int n;
  if (topo_get() != 0)
    return 1;
  n = hwloc_get_nbobjs_by_type(topo, unit_type());
  return n > 0 ? n : 1;
}

typedef struct {
  unsigned worker;
  int depth; /* depth of the common ancestor: larger is nearer */
} victim_t;

static int by_nearness(const void* a, const void* b) {
  const victim_t* x = a;
  const victim_t* y = b;
  if (x->depth != y->depth)
    return y->depth - x->depth;
  return (int)x->worker - (int)y->worker;
}

int weft__topology_plan(weft__plan_t* plan, unsigned n) {
  hwloc_obj_t* units = NULL;
  victim_t* v = NULL;
  unsigned nunits;
  unsigned i;
  unsigned j;
  unsigned k;
  hwloc_obj_type_t type;
  int err;

  plan->nworkers = n;
  plan->pu_os_index = calloc(n, sizeof(*plan->pu_os_index));
  plan->near = calloc(n * (n > 1 ? n - 1 : 1), sizeof(*plan->near));
  plan->near_group = calloc(n * (n > 1 ? n - 1 : 1), sizeof(*plan->near));
  plan->ngroups = calloc(n, sizeof(*plan->ngroups));
  units = calloc(n, sizeof(*units));
  v = calloc(n, sizeof(*v));
  if (plan->pu_os_index == NULL || plan->near == NULL ||
      plan->near_group == NULL || plan->ngroups == NULL || units == NULL ||
      v == NULL) {
    err = -ENOMEM;
    goto fail;
  }

  err = topo_get();
  type = unit_type();
  nunits = err == 0 ? (unsigned)hwloc_get_nbobjs_by_type(topo, type) : 0;
  for (i = 0; i < n; i++) {
    units[i] =
        nunits > 0 ? hwloc_get_obj_by_type(topo, type, i % nunits) : NULL;
    plan->pu_os_index[i] = -1;
    if (units[i] != NULL) {
      hwloc_obj_t pu = hwloc_get_obj_inside_cpuset_by_type(
          topo, units[i]->cpuset, HWLOC_OBJ_PU, 0);
      if (pu != NULL)
        plan->pu_os_index[i] = (int)pu->os_index;
    }
  }

  for (i = 0; i < n; i++) {
    unsigned* near = plan->near + (size_t)i * (n - 1);
    unsigned* grp = plan->near_group + (size_t)i * (n - 1);
    k = 0;
    for (j = 0; j < n; j++) {
      if (j == i)
        continue;
      v[k].worker = j;
      v[k].depth = 0;
      if (units[i] != NULL && units[j] != NULL) {
        hwloc_obj_t a = units[i] == units[j] ? units[i]
                                             : hwloc_get_common_ancestor_obj(
                                                   topo, units[i], units[j]);
        v[k].depth = a != NULL ? a->depth : 0;
      }
      k++;
    }
    qsort(v, k, sizeof(*v), by_nearness);
    plan->ngroups[i] = 0;
    for (j = 0; j < k; j++) {
      near[j] = v[j].worker;
      if (j + 1 == k || v[j + 1].depth != v[j].depth)
        grp[plan->ngroups[i]++] = j + 1;
    }
  }
  free(units);
  free(v);
  return 0;

fail:
  free(units);
  free(v);
  weft__topology_plan_free(plan);
  return err;
}

void weft__topology_plan_free(weft__plan_t* plan) {
  free(plan->pu_os_index);
  free(plan->near);
  free(plan->near_group);
  free(plan->ngroups);
  plan->pu_os_index = NULL;
  plan->near = NULL;
  plan->near_group = NULL;
  plan->ngroups = NULL;
}

int weft__topology_pin_self(const weft__plan_t* plan, unsigned worker) {
  hwloc_obj_t pu;
  if (plan->pu_os_index == NULL || plan->pu_os_index[worker] < 0)
    return -EINVAL;
  if (topo_get() != 0)
    return topo_err;
  pu = hwloc_get_pu_obj_by_os_index(topo, (unsigned)plan->pu_os_index[worker]);
  if (pu == NULL)
    return -EINVAL;
  if (hwloc_set_cpubind(topo, pu->cpuset, HWLOC_CPUBIND_THREAD) != 0)
    return -errno;
  return 0;
}
