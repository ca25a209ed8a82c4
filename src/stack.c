/* stack.c: fiber stacks and the stack-overflow reporter.
 *
 * A stack is one anonymous mapping whose lowest pages are a guard. Where the
 * kernel has MADV_GUARD_INSTALL (Linux 6.13) the guard costs no extra
 * mapping; otherwise it is mprotect(PROT_NONE), which splits the mapping in
 * two (vm.max_map_count is 65530, hence stacks are pooled, never mapped per
 * job). Huge stacks are whole huge pages, 2 MiB-aligned, backed by hugetlb
 * or THP; stacks can be bound to a NUMA node and prefaulted. A fault in a
 * guard is reported by a SIGSEGV handler running on an alternate signal
 * stack, since the faulting stack itself is exhausted.
 */
#include <hwloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

#define WEFT__GUARD_PAGES 4
/* Larger huge pages (arm64 with 64 KiB base pages has 512 MiB ones) would
 * make every stack that big: such machines get normal stacks. */
#define WEFT__HUGE_MAX (32u << 20)

/* Not cached in a plain static, which workers making stacks at once would
 * race on: glibc answers from a value it holds anyway. */
static size_t page_size(void) {
  return (size_t)sysconf(_SC_PAGESIZE);
}

size_t weft__stack_guard_size(void) {
  return WEFT__GUARD_PAGES * page_size();
}

/* 0: unknown, 1: MADV_GUARD_INSTALL works, -1: it does not. Relaxed: every
 * thread computes the same answer, so a race only repeats the probe. */
static atomic_int guard_madvise;

/* Makes [map, map + guard) a guard in a read-write mapping. */
static int guard_install(char* map, size_t guard) {
  int mode = atomic_load_explicit(&guard_madvise, memory_order_relaxed);
  if (mode >= 0 && madvise(map, guard, MADV_GUARD_INSTALL) == 0) {
    if (mode == 0)
      atomic_store_explicit(&guard_madvise, 1, memory_order_relaxed);
    return 0;
  }
  if (mode == 0)
    atomic_store_explicit(&guard_madvise, -1, memory_order_relaxed);
  return mprotect(map, guard, PROT_NONE) == 0 ? 0 : -ENOMEM;
}

/* ---- huge pages ---------------------------------------------------------- */

/* Written once under huge_once, read only after it by the threads that
 * made huge stacks (or were created after one was). */
static pthread_once_t huge_once = PTHREAD_ONCE_INIT;
static size_t huge_size; /* the PMD huge page size, or 0: no huge stacks */
static int huge_shift;   /* log2(huge_size), for MAP_HUGE_* */
static bool thp_on;      /* madvised mappings get PMD-sized THP */

/* Reads a sysfs file's first line into buf; returns false if it can't. */
static bool read_line(const char* path, char* buf, size_t len) {
  FILE* f = fopen(path, "re");
  bool ok;
  if (f == NULL)
    return false;
  ok = fgets(buf, (int)len, f) != NULL;
  fclose(f);
  return ok;
}

/* The mode a THP "enabled" file selects, its bracketed word ("always
 * [madvise] never"): 1 for always or madvise, 0 for never, -1 for inherit
 * or no such file. */
static int thp_mode(const char* path) {
  char buf[128];
  if (!read_line(path, buf, sizeof(buf)))
    return -1;
  if (strstr(buf, "[always]") != NULL || strstr(buf, "[madvise]") != NULL)
    return 1;
  return strstr(buf, "[inherit]") != NULL ? -1 : 0;
}

/* Once per process: THP settings changed later are not seen. */
static void huge_probe(void) {
  char buf[128];
  char path[96];
  size_t hp = 0;
  int mode;

  if (read_line("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf,
                sizeof(buf)))
    hp = (size_t)strtoull(buf, NULL, 10);
  /* Without THP's file, hugetlb alone may still be there: its x86-64 and
   * arm64 (4 KiB base pages) size. */
  if (hp == 0 && page_size() == 4096)
    hp = 2u << 20;
  if (hp <= page_size() || hp > WEFT__HUGE_MAX || (hp & (hp - 1)) != 0)
    return;
  huge_size = hp;
  while (((size_t)1 << huge_shift) < hp)
    huge_shift++;
  /* With "never" MADV_HUGEPAGE succeeds and does nothing, so the mode must
   * be read. Since Linux 6.8 each size has its own mode, which wins over
   * the global one unless it is "inherit". */
  snprintf(path, sizeof(path),
           "/sys/kernel/mm/transparent_hugepage/hugepages-%zukB/enabled",
           hp >> 10);
  mode = thp_mode(path);
  if (mode < 0)
    mode = thp_mode("/sys/kernel/mm/transparent_hugepage/enabled");
  /* PR_SET_THP_DISABLE (inherited across fork and exec) also lets
   * MADV_HUGEPAGE succeed and do nothing. 1 means disabled; Linux 6.18's 3
   * means disabled except where madvised, which is all weft asks for. */
  thp_on = mode > 0 && prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1;
}

/* Maps guard + usable bytes with the usable part huge-page-aligned: maps
 * a huge page more and trims it off both ends. Returns the usable part's
 * start, or NULL. No MAP_STACK, here or below: since Linux 6.7 it sets
 * VM_NOHUGEPAGE. */
static char* map_aligned(size_t guard, size_t usable, int prot) {
  size_t span = guard + usable + huge_size;
  char* r;
  char* lo;
  char* end;

  r = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
           0);
  if (r == MAP_FAILED)
    return NULL;
  lo = (char*)(((uintptr_t)r + guard + huge_size - 1) &
               ~(uintptr_t)(huge_size - 1));
  end = lo + usable;
  if (lo - guard > r)
    munmap(r, (size_t)(lo - guard - r));
  if (r + span > end)
    munmap(end, (size_t)(r + span - end));
  return lo;
}

static void stack_set(weft__stack_t* s, char* lo, size_t guard, size_t usable,
                      int backing) {
  s->map = lo - guard;
  s->map_size = guard + usable;
  s->lo = lo;
  s->size = usable;
  s->backing = (uint8_t)backing;
  s->bound = false;
}

/* Huge stacks: the stack [lo, lo + usable) is huge-page-aligned and a whole
 * number of huge pages, and the guard is the `guard` bytes just below lo, in
 * the huge page below, of which nothing else is mapped. A guard inside the
 * stack's lowest huge page would keep that page from ever being huge
 * (hugetlb cannot protect less than a huge page; THP cannot map a huge page
 * over a guard or a protection change), and with the default 512 KiB
 * rounded up to one huge page the whole stack would lose. Below lo it
 * costs nothing: hugetlb's guard is a small-page PROT_NONE mapping of its
 * own; THP's stack and guard are one mapping (MADV_GUARD_INSTALL) whose
 * first huge-page-sized block is incomplete, so only the stack's blocks can
 * be huge, or, with mprotect, two mappings, the stack's still aligned.
 *
 * hugetlb: returns 0, or 1 when no huge page is free (or the kernel has no
 * hugetlb of that size, or the address space ran short). */
static int alloc_hugetlb(weft__stack_t* s, size_t guard, size_t usable) {
  int tries;

  /* Another thread may map into the hole made below between the munmap
   * and the mmap: then try again elsewhere, a few times. */
  for (tries = 0; tries < 4; tries++) {
    char* lo = map_aligned(guard, usable, PROT_NONE);
    char* p;
    int err;

    if (lo == NULL)
      return 1;
    /* The guard stays reserved; the stack's range becomes a hole that only
     * a NOREPLACE mapping fills: a failed MAP_FIXED mmap may already have
     * unmapped what it was to replace (Linux does, at least before
     * 6.12), after which another thread may own the range. The mmap reserves
     * the huge pages: ENOMEM when too few are free. */
    munmap(lo, usable);
    p = mmap(lo, usable, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_HUGETLB |
                 (huge_shift << MAP_HUGE_SHIFT),
             -1, 0);
    if (p == lo) {
      stack_set(s, lo, guard, usable, WEFT__STACK_HUGETLB);
      return 0;
    }
    err = p == MAP_FAILED ? errno : 0;
    /* A kernel before 4.17 takes NOREPLACE as a hint, and may map
     * elsewhere. */
    if (p != MAP_FAILED)
      munmap(p, usable);
    munmap(lo - guard, guard);
    if (err != EEXIST)
      return 1;
  }
  return 1;
}

/* THP: returns 0, or 1 when THP is off or the mapping failed. */
static int alloc_thp(weft__stack_t* s, size_t guard, size_t usable) {
  char* lo;

  if (!thp_on)
    return 1;
  lo = map_aligned(guard, usable, PROT_READ | PROT_WRITE);
  if (lo == NULL)
    return 1;
  if (madvise(lo - guard, guard + usable, MADV_HUGEPAGE) != 0 ||
      guard_install(lo - guard, guard) != 0) {
    munmap(lo - guard, guard + usable);
    return 1;
  }
  stack_set(s, lo, guard, usable, WEFT__STACK_THP);
  return 0;
}

int weft__stack_alloc(weft__stack_t* s, size_t size, int huge) {
  size_t pg = page_size();
  size_t guard = weft__stack_guard_size();
  size_t usable = (size + pg - 1) & ~(pg - 1);
  char* map;

  if (huge) {
    pthread_once(&huge_once, huge_probe);
    /* Any failure falls back: a huge stack's mapping is larger (a huge
     * page of alignment slack) than a normal one, which may still fit. */
    if (huge_size != 0) {
      size_t hp_usable = (size + huge_size - 1) & ~(huge_size - 1);
      if (alloc_hugetlb(s, guard, hp_usable) == 0 ||
          alloc_thp(s, guard, hp_usable) == 0)
        return 0;
    }
  }
  map = mmap(NULL, usable + guard, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return -ENOMEM;
  if (guard_install(map, guard) != 0) {
    munmap(map, usable + guard);
    return -ENOMEM;
  }
  stack_set(s, map + guard, guard, usable, WEFT__STACK_NORMAL);
  return 0;
}

int weft__stack_bind(weft__stack_t* s, int pu) {
  hwloc_topology_t topo = weft__topology_handle();
  const struct hwloc_topology_support* sup;
  hwloc_obj_t obj;
  int flags = HWLOC_MEMBIND_BYNODESET;

  if (topo == NULL || pu < 0)
    return 0;
  sup = hwloc_topology_get_support(topo);
  if (!sup->membind->set_area_membind || !sup->membind->bind_membind)
    return 0;
  /* NUMA nodes are memory children in hwloc 2, not ancestors: the PU's
   * nodeset names its local ones. */
  obj = hwloc_get_pu_obj_by_os_index(topo, (unsigned)pu);
  if (obj == NULL || obj->nodeset == NULL || hwloc_bitmap_iszero(obj->nodeset))
    return 0;
  /* Stacks are bound before the context set-up writes their top page, but
   * a bind that failed then is retried once the worker runs on the stack
   * (fiber.c): its touched pages must move. */
  if (sup->membind->migrate_membind)
    flags |= HWLOC_MEMBIND_MIGRATE;
  /* The whole mapping, guard included: binding part of it would split it.
   * Not HWLOC_MEMBIND_STRICT: hwloc then asks Linux for a preferred policy,
   * so a node out of memory (or of free huge pages) falls back to another
   * node instead of failing a stack fault, which has no way to report it
   * but SIGBUS. hwloc_alloc_membind would do the same mmap and mbind, but
   * without the huge pages, the alignment and the guard. */
  if (hwloc_set_area_membind(topo, s->map, s->map_size, obj->nodeset,
                             HWLOC_MEMBIND_BIND, flags) != 0)
    return errno != 0 ? -errno : -ENOSYS;
  s->bound = true;
  return 1;
}

/* The fallback of MADV_POPULATE_WRITE (Linux 5.14): a write of what is
 * there to each page. Not instrumented: on a worker's first stack it runs
 * across the live frames' redzones. */
__attribute__((no_sanitize_address)) static void touch_pages(char* from,
                                                             char* to,
                                                             size_t pg) {
  for (; from < to; from += pg) {
    volatile char* p = from;
    *p = *p;
  }
}

void weft__stack_prefault(weft__stack_t* s, int mode) {
  size_t unit = s->backing == WEFT__STACK_NORMAL ? page_size() : huge_size;
  char* hi = s->lo + s->size;
  char* from;

  if (mode == WEFT_STACK_PREFAULT_PAGE)
    from = hi - unit;
  else if (mode == WEFT_STACK_PREFAULT_ALL)
    from = s->lo;
  else
    return;
  /* Keeps the contents: the stack may hold a context's first frame. Only
   * a kernel without MADV_POPULATE_WRITE (EINVAL) gets the writes: after
   * ENOMEM or EFAULT (no memory, or no free huge page on the node), the
   * writes would bring the OOM killer or a SIGBUS, and a prefault is only
   * an optimisation. */
  if (madvise(from, (size_t)(hi - from), MADV_POPULATE_WRITE) != 0 &&
      errno == EINVAL)
    touch_pages(from, hi, page_size());
}

void weft__stack_free(weft__stack_t* s) {
  if (s->map != NULL)
    munmap(s->map, s->map_size);
  s->map = NULL;
}

/* ---- overflow reporting ------------------------------------------------ */

static struct sigaction old_segv;
static struct sigaction old_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_err;

/* Formats an unsigned number into buf (async-signal-safe). */
static size_t fmt_num(char* buf, uintptr_t v, unsigned base) {
  char tmp[32];
  size_t n = 0;
  size_t i;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0);
  for (i = 0; i < n; i++)
    buf[i] = tmp[n - 1 - i];
  return n;
}

static size_t put(char* buf, size_t at, const char* s) {
  size_t n = strlen(s);
  memcpy(buf + at, s, n);
  return at + n;
}

static void report_overflow(weft__worker_t* w, weft__fiber_t* f, void* addr) {
  char msg[512];
  size_t n = 0;
  ssize_t rc;

  n = put(msg, n, "weft: fiber stack overflow: worker ");
  n += fmt_num(msg + n, w->index, 10);
  n = put(msg, n, ", fiber ");
  n += fmt_num(msg + n, f->id, 10);
  n = put(msg, n, ", stack [0x");
  n += fmt_num(msg + n, (uintptr_t)f->stack.lo, 16);
  n = put(msg, n, ", 0x");
  n += fmt_num(msg + n, (uintptr_t)(f->stack.lo + f->stack.size), 16);
  n = put(msg, n, ") of ");
  n += fmt_num(msg + n, f->stack.size / 1024, 10);
  n = put(msg, n, " KiB, fault at 0x");
  n += fmt_num(msg + n, (uintptr_t)addr, 16);
  n = put(msg, n, " in the guard; raise weft_config_t.stack_size\n");
  rc = write(STDERR_FILENO, msg, n);
  (void)rc;
}

static void chain(int sig, siginfo_t* info, void* uctx) {
  struct sigaction* old = sig == SIGBUS ? &old_bus : &old_segv;
  if (old->sa_flags & SA_SIGINFO) {
    old->sa_sigaction(sig, info, uctx);
  } else if (old->sa_handler == SIG_IGN) {
    return;
  } else if (old->sa_handler != SIG_DFL) {
    old->sa_handler(sig);
  } else {
    /* Restore the default and return: the faulting instruction runs again
     * and the default action (a core dump) takes place. */
    signal(sig, SIG_DFL);
  }
}

static void on_segv(int sig, siginfo_t* info, void* uctx) {
  weft__worker_t* w = weft__worker_current();
  char* addr = info->si_addr;

  if (w != NULL && w->current != NULL) {
    weft__fiber_t* f = w->current;
    if (addr >= f->stack.map && addr < f->stack.lo) {
      report_overflow(w, f, addr);
      signal(SIGABRT, SIG_DFL);
      abort();
    }
  }
  chain(sig, info, uctx);
}

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &old_segv) != 0 ||
      sigaction(SIGBUS, &sa, &old_bus) != 0)
    handler_err = -errno;
}

int weft__stack_install_handler(void) {
  pthread_once(&handler_once, install_handler);
  return handler_err;
}

int weft__stack_thread_init(weft__altstack_t* a) {
  stack_t ss;
  stack_t old;

  a->installed = 0;
  a->mem = NULL;
  /* Keep an alternate stack the thread already has (the host's choice). */
  if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE))
    return 0;
  a->size = 64 * 1024;
  a->mem = mmap(NULL, a->size, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a->mem == MAP_FAILED) {
    a->mem = NULL;
    return -ENOMEM;
  }
  ss.ss_sp = a->mem;
  ss.ss_size = a->size;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(a->mem, a->size);
    a->mem = NULL;
    return -errno;
  }
  a->installed = 1;
  return 0;
}

void weft__stack_thread_exit(weft__altstack_t* a) {
  stack_t ss;
  if (!a->installed)
    return;
  memset(&ss, 0, sizeof(ss));
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, NULL);
  munmap(a->mem, a->size);
  a->mem = NULL;
  a->installed = 0;
}
