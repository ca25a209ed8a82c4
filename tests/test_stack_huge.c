/* test_stack_huge.c: huge-page fiber stacks (hugetlb, else THP, else normal
 * pages, as the stats and /proc/self/smaps show), their overflow guard, the
 * NUMA binding of stacks (/proc/self/numa_maps) and the prefault modes. As
 * root the tests reserve huge pages through /proc/sys/vm/nr_hugepages and
 * always put the original value back. Fallbacks the machine does not show
 * by itself are made in a child: THP off with PR_SET_THP_DISABLE, a kernel
 * without MADV_GUARD_INSTALL or MADV_POPULATE_WRITE with a seccomp filter.
 */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"
#define TOUCH_BYTES (64 * 1024)
/* The advices weft uses where the kernel has them (uapi values). */
#define MADV_GUARD_INSTALL_ADVICE 102
#define MADV_POPULATE_WRITE_ADVICE 23

static long saved_nr_hugepages = -1;

static long read_long(const char* path) {
  FILE* f = fopen(path, "r");
  long v = -1;
  if (f == NULL)
    return -1;
  if (fscanf(f, "%ld", &v) != 1)
    v = -1;
  fclose(f);
  return v;
}

static int write_long(const char* path, long v) {
  FILE* f = fopen(path, "w");
  int ok;
  if (f == NULL)
    return -1;
  ok = fprintf(f, "%ld\n", v) > 0;
  ok = (fclose(f) == 0) && ok;
  return ok ? 0 : -1;
}

/* A /proc/meminfo figure ("HugePages_Free"), or -1. */
static long meminfo(const char* key) {
  FILE* f = fopen("/proc/meminfo", "r");
  char line[256];
  size_t n = strlen(key);
  long v = -1;
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, key, n) == 0 && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static void restore_nr_hugepages(void) {
  if (saved_nr_hugepages >= 0 &&
      read_long(NR_HUGEPAGES) != saved_nr_hugepages &&
      write_long(NR_HUGEPAGES, saved_nr_hugepages) != 0)
    fprintf(stderr, "test_stack_huge: could not restore %s to %ld\n",
            NR_HUGEPAGES, saved_nr_hugepages);
}

/* As root, sets the number of free huge pages to `n` on top of those in
 * use; returns false (the caller skips) when that cannot be done. */
static bool reserve_hugepages(long n) {
  long total;
  long free_pages;
  if (geteuid() != 0 || saved_nr_hugepages < 0)
    return false;
  total = read_long(NR_HUGEPAGES);
  free_pages = meminfo("HugePages_Free");
  if (total < 0 || free_pages < 0 ||
      write_long(NR_HUGEPAGES, total - free_pages + n) != 0)
    return false;
  return meminfo("HugePages_Free") == n;
}

static int group_setup(void** state) {
  (void)state;
  saved_nr_hugepages = read_long(NR_HUGEPAGES);
  /* A failed assertion longjmps past the test's teardown only when the
   * process dies; the exit handler covers an exit. */
  atexit(restore_nr_hugepages);
  return 0;
}

static int restore_teardown(void** state) {
  (void)state;
  restore_nr_hugepages();
  unsetenv("WEFT_HUGE_STACKS");
  unsetenv("WEFT_STACK_PREFAULT");
  return 0;
}

/* Whether THP gives madvised mappings huge pages. */
static bool thp_expected(void) {
  char buf[128] = "";
  FILE* f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (f == NULL)
    return false;
  if (fgets(buf, sizeof(buf), f) == NULL)
    buf[0] = '\0';
  fclose(f);
  return strstr(buf, "[always]") != NULL || strstr(buf, "[madvise]") != NULL;
}

/* A /proc/self/smaps field (kB) of the mapping holding addr, or -1; its
 * start address goes to *start. */
static long smaps_field(uintptr_t addr, const char* field, uintptr_t* start) {
  FILE* f = fopen("/proc/self/smaps", "r");
  char line[512];
  size_t n = strlen(field);
  bool in = false;
  long v = -1;
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL) {
    unsigned long lo;
    unsigned long hi;
    /* A mapping's header ("7f..-7f.. rw-p ..."); fields start with a
     * name, which no "%lx-" reads in full. */
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
      in = addr >= lo && addr < hi;
      if (in && start != NULL)
        *start = lo;
      continue;
    }
    if (in && strncmp(line, field, n) == 0 && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

/* The memory policy /proc/self/numa_maps gives the mapping holding addr
 * ("default", "prefer (many):0", "bind:0"), or "" if not found. */
static void numa_policy(uintptr_t addr, char* out, size_t len) {
  uintptr_t start = 0;
  char line[1024];
  FILE* f;
  out[0] = '\0';
  if (smaps_field(addr, "Rss", &start) < 0)
    return;
  f = fopen("/proc/self/numa_maps", "r");
  if (f == NULL)
    return;
  /* "start policy ...", the start zero-padded to 8 digits. */
  while (fgets(line, sizeof(line), f) != NULL) {
    char* rest;
    if (strtoul(line, &rest, 16) == start && *rest == ' ') {
      snprintf(out, len, "%s", rest + 1);
      break;
    }
  }
  fclose(f);
}

/* Whether the kernel lets this process set a memory policy (mbind may be
 * filtered in containers): then weft must have bound every stack. */

/* ---- a run: fibers waiting at once, and a job that touches its stack ---- */

typedef struct {
  weft_counter_t* gate;
  _Atomic uintptr_t addr; /* an address in the job's stack */
} waiter_t;

typedef struct {
  uintptr_t addr;
  int ok;
} touch_t;

/* Fills TOUCH_BYTES of its stack and checks them: the stack is usable
 * whatever backs it. */
static void touch_job(void* arg) {
  touch_t* t = arg;
  volatile unsigned char buf[TOUCH_BYTES];
  size_t i;
  int ok = 1;
  for (i = 0; i < sizeof(buf); i++)
    buf[i] = (unsigned char)(i * 7 + 1);
  for (i = 0; i < sizeof(buf); i++)
    if (buf[i] != (unsigned char)(i * 7 + 1))
      ok = 0;
  t->addr = (uintptr_t)&buf[sizeof(buf) / 2];
  t->ok = ok;
}

static void waiter_job(void* arg) {
  waiter_t* wt = arg;
  volatile char here = 0;
  atomic_store(&wt->addr, (uintptr_t)&here);
  weft_counter_wait(wt->gate, 0);
}

#define NWAITERS 3

typedef struct {
  weft_stats_t s;
  touch_t touch;
  waiter_t waiters[NWAITERS];
  long rss_kb;        /* Rss of the touch job's stack mapping */
  long waiter_rss_kb; /* of the first waiter's */
  long kpage_kb;      /* KernelPageSize there */
  long anon_huge_kb;  /* AnonHugePages there */
  char policy[256];   /* its NUMA policy */
} run_t;

/* Runs NWAITERS jobs that wait at once (each holds a fiber) and a touch
 * job, then reads the stats and the touch job's stack mapping while the
 * runtime (and so the stack) is alive. */
static void nop_job(void* arg) {
  (void)arg;
}

static void run(const weft_config_t* cfg, run_t* r) {
  weft_runtime_t* rt;
  weft_counter_t gate;
  weft_counter_t all;
  weft_counter_t done;
  int i;

  memset(r, 0, sizeof(*r));
  assert_int_equal(weft_runtime_create(&rt, cfg), 0);
  /* Started, and placed: the process's first runtime is placed a little
   * after its start (weft_stats_t.placing), and its stacks bound then. */
  weft_counter_init(&done, 0);
  assert_int_equal(weft_spawn(rt, nop_job, NULL, &done), 0);
  assert_int_equal(weft_counter_wait(&done, 0), 0);
  for (i = 0; i < 5000; i++) {
    assert_true(weft_stats(rt, &r->s) >= 0);
    if (!r->s.placing)
      break;
    test_sleep_ms(1);
  }
  assert_false(r->s.placing);
  weft_counter_init(&gate, 1);
  weft_counter_init(&all, 0);
  weft_counter_init(&done, 0);
  for (i = 0; i < NWAITERS; i++) {
    r->waiters[i].gate = &gate;
    assert_int_equal(weft_spawn(rt, waiter_job, &r->waiters[i], &all), 0);
  }
  assert_int_equal(weft_spawn(rt, touch_job, &r->touch, &done), 0);
  assert_int_equal(weft_counter_wait(&done, 0), 0);
  assert_true(r->touch.ok);
  /* Every waiter is suspended once each has stored its address and its
   * worker has moved on; the stats are read after that. */
  for (i = 0; i < 10000; i++) {
    int k;
    for (k = 0; k < NWAITERS; k++)
      if (atomic_load(&r->waiters[k].addr) == 0)
        break;
    if (k == NWAITERS)
      break;
    test_sleep_ms(1);
  }
  r->rss_kb = smaps_field(r->touch.addr, "Rss", NULL);
  r->waiter_rss_kb = smaps_field(atomic_load(&r->waiters[0].addr), "Rss", NULL);
  r->kpage_kb = smaps_field(r->touch.addr, "KernelPageSize", NULL);
  r->anon_huge_kb = smaps_field(r->touch.addr, "AnonHugePages", NULL);
  numa_policy(r->touch.addr, r->policy, sizeof(r->policy));
  weft_counter_add(&gate, -1);
  assert_int_equal(weft_counter_wait(&all, 0), 0);
  /* Fibers are made by the workers: poll until the counts agree. */
  for (i = 0; i < 1000; i++) {
    assert_true(weft_stats(rt, &r->s) > 0);
    if (r->s.stacks_hugetlb + r->s.stacks_thp + r->s.stacks_normal ==
        r->s.fibers_created)
      break;
    test_sleep_ms(1);
  }
  assert_int_equal(weft_runtime_destroy(rt), 0);
  assert_int_equal(r->s.stacks_hugetlb + r->s.stacks_thp + r->s.stacks_normal,
                   r->s.fibers_created);
  /* Each waiter held a fiber, the touch job ran on one. */
  assert_true(r->s.fibers_created >= NWAITERS);
}

static void config(weft_config_t* cfg, unsigned workers, int huge) {
  assert_int_equal(weft_config_init(cfg), 0);
  cfg->workers = workers;
  cfg->huge_stacks = huge;
}

/* ---- backings ------------------------------------------------------------ */

static void huge_off_normal(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  config(&cfg, 2, 0);
  assert_int_equal(cfg.huge_stacks, 0);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_hugetlb, 0);
  assert_int_equal(r.s.stacks_thp, 0);
  assert_int_equal(r.s.stacks_normal, r.s.fibers_created);
  assert_int_equal(r.kpage_kb, 4);
  assert_int_equal(r.anon_huge_kb, 0);
}

/* No huge pages reserved: THP where the kernel gives madvised mappings
 * huge pages, else normal pages. */
static void huge_thp_when_none_reserved(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  if (meminfo("HugePages_Free") > 0 && !reserve_hugepages(0))
    skip(); /* free huge pages this test may not take away */
  config(&cfg, 2, 1);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_hugetlb, 0);
  if (thp_expected()) {
    assert_int_equal(r.s.stacks_thp, r.s.fibers_created);
    assert_int_equal(r.s.stacks_normal, 0);
    /* The touched stack really is huge: the 2 MiB-aligned stack faults in
     * a huge page (defrag permitting, which a test machine's free memory
     * does). */
    assert_true(r.anon_huge_kb >= 2048);
  } else {
    assert_int_equal(r.s.stacks_thp, 0);
    assert_int_equal(r.s.stacks_normal, r.s.fibers_created);
  }
}

static void huge_hugetlb_when_reserved(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  if (!reserve_hugepages(16))
    skip();
  config(&cfg, 2, 1);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_hugetlb, r.s.fibers_created);
  assert_int_equal(r.kpage_kb, 2048);
  /* Pages go back to the pool when the runtime unmaps its stacks. */
  assert_int_equal(meminfo("HugePages_Free"), 16);
}

/* One free huge page: the first stack takes it, the others fall back. */
static void huge_hugetlb_exhausted_falls_back(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  if (!reserve_hugepages(1))
    skip();
  config(&cfg, 1, 1);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_hugetlb, 1);
  if (thp_expected())
    assert_int_equal(r.s.stacks_thp, r.s.fibers_created - 1);
  else
    assert_int_equal(r.s.stacks_normal, r.s.fibers_created - 1);
}

static void huge_env_override(void** state) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t c;
  run_t r;
  (void)state;
  if (meminfo("HugePages_Free") > 0 && !reserve_hugepages(0))
    skip();
  /* WEFT_HUGE_STACKS=1 turns huge stacks on... */
  assert_int_equal(setenv("WEFT_HUGE_STACKS", "1", 1), 0);
  config(&cfg, 1, 0);
  run(&cfg, &r);
  if (thp_expected())
    assert_int_equal(r.s.stacks_thp, r.s.fibers_created);
  else
    assert_int_equal(r.s.stacks_normal, r.s.fibers_created);
  /* ...and =0 off. */
  assert_int_equal(setenv("WEFT_HUGE_STACKS", "0", 1), 0);
  config(&cfg, 1, 1);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_normal, r.s.fibers_created);
  /* Anything else fails the start. */
  assert_int_equal(setenv("WEFT_HUGE_STACKS", "yes", 1), 0);
  assert_int_equal(weft_runtime_create(&rt, &cfg), 0);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, touch_job, &r.touch, &c), -EBADMSG);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  unsetenv("WEFT_HUGE_STACKS");
  assert_int_equal(setenv("WEFT_STACK_PREFAULT", "most", 1), 0);
  assert_int_equal(weft_runtime_create(&rt, &cfg), 0);
  assert_int_equal(weft_spawn(rt, touch_job, &r.touch, &c), -EBADMSG);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

static void huge_config_checked(void** state) {
  weft_config_t cfg;
  weft_runtime_t* rt = NULL;
  (void)state;
  assert_int_equal(weft_config_init(&cfg), 0);
  assert_int_equal(cfg.stack_prefault, WEFT_STACK_PREFAULT_NONE);
  cfg.stack_prefault = (weft_stack_prefault_t)3;
  assert_int_equal(weft_runtime_create(&rt, &cfg), -EINVAL);
  assert_null(rt);
}

/* ---- overflow with huge stacks ------------------------------------------ */

static volatile int depth_limit = 1 << 30;

static int recurse(int n) {
  volatile char frame[4096];
  frame[0] = (char)n;
  frame[4095] = (char)n;
  if (n >= depth_limit)
    return 0;
  return recurse(n + 1) + frame[0] + frame[4095];
}

static void overflow_job(void* arg) {
  (void)arg;
  recurse(0);
}

static void noop(void* arg) {
  (void)arg;
}

#if defined(__x86_64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_AARCH64
#endif

/* In a child: makes madvise(..., advice) fail with EINVAL, as on a kernel
 * that lacks the advice (MADV_GUARD_INSTALL before 6.13, as on Debian 12;
 * MADV_POPULATE_WRITE before 5.14). Returns false if seccomp is missing. */
static bool deny_madvise(int advice) {
#ifdef AUDIT_ARCH_HERE
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_HERE, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 0, 3),
      /* The advice's low 32 bits (both architectures are little-endian). */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
               offsetof(struct seccomp_data, args[2])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)advice, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof(f) / sizeof(f[0]), f};
  void* probe;
  bool denied;

  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
    return false;
  /* The filter must really be in the way (not, say, emulated away). */
  probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
               -1, 0);
  if (probe == MAP_FAILED)
    return false;
  denied = madvise(probe, 4096, advice) != 0 && errno == EINVAL;
  munmap(probe, 4096);
  return denied;
#else
  (void)advice;
  return false;
#endif
}

enum { WANT_HUGETLB, WANT_THP, WANT_NORMAL };

/* Child exit codes; an overflow ends it with SIGABRT instead. */
enum {
  CHILD_NO_RUNTIME = 3,
  CHILD_NOT_REACHED = 4,
  CHILD_WRONG_BACKING = 5,
  CHILD_NOT_HUGE = 6,
  CHILD_CANNOT_SET_UP = 7,
  CHILD_NOT_PREFAULTED = 8
};

typedef struct {
  int want;              /* the backing the stacks must get: WANT_* */
  int huge;              /* huge_stacks */
  bool thp_disable;      /* PR_SET_THP_DISABLE first: THP is unavailable */
  bool no_guard_madvise; /* no MADV_GUARD_INSTALL: the mprotect guard */
  const char* size;      /* in the report: the usable size */
} overflow_case_t;

/* In the child: checks the stacks got the backing wanted (and that a THP
 * stack really is huge), then overflows one; the guard must turn that into
 * a report. */
static void overflow_child(const overflow_case_t* oc) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t c;
  weft_stats_t s;
  touch_t t;
  uint64_t got;

  if (oc->thp_disable && prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0)
    _exit(CHILD_CANNOT_SET_UP);
  if (oc->no_guard_madvise && !deny_madvise(MADV_GUARD_INSTALL_ADVICE))
    _exit(CHILD_CANNOT_SET_UP);
  weft_config_init(&cfg);
  cfg.workers = 1;
  cfg.stack_size = 64 * 1024;
  cfg.huge_stacks = oc->huge;
  if (weft_runtime_create(&rt, &cfg) != 0)
    _exit(CHILD_NO_RUNTIME);
  weft_counter_init(&c, 0);
  memset(&t, 0, sizeof(t));
  weft_spawn(rt, noop, NULL, &c);
  weft_spawn(rt, touch_job, &t, &c);
  weft_counter_wait(&c, 0);
  weft_stats(rt, &s);
  got = oc->want == WANT_HUGETLB ? s.stacks_hugetlb
        : oc->want == WANT_THP   ? s.stacks_thp
                                 : s.stacks_normal;
  if (!t.ok || got == 0 || got != s.fibers_created)
    _exit(CHILD_WRONG_BACKING);
  /* The guard below a THP stack, whichever way it is made, leaves the
   * stack's huge page whole. */
  if (oc->want == WANT_THP && smaps_field(t.addr, "AnonHugePages", NULL) < 2048)
    _exit(CHILD_NOT_HUGE);
  weft_spawn(rt, overflow_job, NULL, &c);
  weft_counter_wait(&c, 0);
  _exit(CHILD_NOT_REACHED); /* the overflow aborts */
}

/* Runs child(arg) in a fork with stderr captured into buf; returns its
 * wait status. Exit CHILD_CANNOT_SET_UP skips the test. */
static int in_child(void (*child)(const void* arg), const void* arg, char* buf,
                    size_t len) {
  int fds[2];
  size_t got = 0;
  ssize_t r;
  pid_t pid;
  int status;

  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    child(arg);
    _exit(0);
  }
  close(fds[1]);
  while (got < len - 1 && (r = read(fds[0], buf + got, len - 1 - got)) > 0)
    got += (size_t)r;
  buf[got] = '\0';
  close(fds[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_CANNOT_SET_UP)
    skip();
  return status;
}

static void overflow_child_cb(const void* arg) {
  overflow_child(arg);
}

static void expect_overflow_report(const overflow_case_t* oc) {
  char buf[4096];
  int status = in_child(overflow_child_cb, oc, buf, sizeof(buf));

  if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_WRONG_BACKING)
    fail_msg("the child's stacks did not get the backing wanted");
  if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_NOT_HUGE)
    fail_msg("the child's THP stack got no huge page");
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  if (strstr(buf, "weft: fiber stack overflow: worker ") == NULL)
    fail_msg("no overflow report; child printed:\n%s", buf);
  assert_non_null(strstr(buf, oc->size));
}

/* No free hugetlb pages (taken away as root), or skips. */
static void need_no_free_hugepages(void) {
  if (meminfo("HugePages_Free") > 0 && !reserve_hugepages(0))
    skip();
}

/* 64 KiB rounded up to whole huge pages, or 64 KiB as it is. */
static void huge_overflow_reported_thp(void** state) {
  overflow_case_t oc = {WANT_THP, 1, false, false, "of 2048 KiB"};
  (void)state;
  need_no_free_hugepages();
  if (!thp_expected()) {
    oc.want = WANT_NORMAL;
    oc.size = "of 64 KiB";
  }
  expect_overflow_report(&oc);
}

static void huge_overflow_reported_hugetlb(void** state) {
  overflow_case_t oc = {WANT_HUGETLB, 1, false, false, "of 2048 KiB"};
  (void)state;
  if (!reserve_hugepages(4))
    skip();
  expect_overflow_report(&oc);
}

/* The last fallback on any machine: no hugetlb, THP off for the process.
 * The stacks are normal, and keep their guard. */
static void huge_overflow_reported_thp_disabled(void** state) {
  overflow_case_t oc = {WANT_NORMAL, 1, true, false, "of 64 KiB"};
  (void)state;
  need_no_free_hugepages();
  expect_overflow_report(&oc);
}

/* The guard made with mprotect, as on kernels before 6.13: below a THP
 * stack (which stays huge) and below a normal one. */
static void huge_overflow_reported_mprotect_guard(void** state) {
  overflow_case_t oc = {WANT_THP, 1, false, true, "of 2048 KiB"};
  overflow_case_t normal = {WANT_NORMAL, 0, false, true, "of 64 KiB"};
  (void)state;
  need_no_free_hugepages();
  if (!thp_expected()) {
    oc.want = WANT_NORMAL;
    oc.size = "of 64 KiB";
  }
  expect_overflow_report(&oc);
  expect_overflow_report(&normal);
}

/* ---- NUMA binding and prefaulting --------------------------------------- */

/* Pinned workers bind their stacks to their node: on a one-node machine
 * the policy is trivially local, but it must be set and harmless. */
static void stack_bound_to_node(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  config(&cfg, 2, 0);
  run(&cfg, &r);
  if (test_mbind_works()) {
    assert_int_equal(r.s.stacks_bound, r.s.fibers_created);
    if (strncmp(r.policy, "prefer", 6) != 0 &&
        strncmp(r.policy, "bind", 4) != 0)
      fail_msg("stack policy \"%s\", expected prefer or bind", r.policy);
  } else {
    assert_int_equal(r.s.stacks_bound, 0);
  }
  /* Unpinned workers have no node: nothing is bound. */
  config(&cfg, 2, 0);
  cfg.pin = 0;
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_bound, 0);
  assert_int_equal(strncmp(r.policy, "default", 7), 0);
}

/* Huge stacks are bound too (hugetlb's preferred policy must not make a
 * fault fail). */
static void stack_bound_huge(void** state) {
  weft_config_t cfg;
  run_t r;
  (void)state;
  if (!test_mbind_works())
    skip();
  reserve_hugepages(16); /* hugetlb if root, else THP: both are bound */
  config(&cfg, 2, 1);
  run(&cfg, &r);
  assert_int_equal(r.s.stacks_bound, r.s.fibers_created);
}

static void prefault_run(weft_stack_prefault_t mode, int huge,
                         size_t stack_size, run_t* r) {
  weft_config_t cfg;
  config(&cfg, 1, huge);
  cfg.stack_size = stack_size;
  cfg.stack_prefault = mode;
  run(&cfg, r);
}

static void stack_prefault_modes(void** state) {
  long stack_kb = 512; /* the default stack_size */
  run_t r;
  (void)state;
  /* none and page: the stack holds what was touched (the 64 KiB the job
   * wrote plus frames), not all of it. page faults the top page, which the
   * context set-up writes anyway as the fiber is made: the two fault the
   * same pages (docs/topology.md). */
  prefault_run(WEFT_STACK_PREFAULT_NONE, 0, 512 * 1024, &r);
  assert_true(r.rss_kb >= TOUCH_BYTES / 1024);
  assert_true(r.rss_kb < stack_kb);
  assert_true(r.waiter_rss_kb < stack_kb);
  prefault_run(WEFT_STACK_PREFAULT_PAGE, 0, 512 * 1024, &r);
  assert_true(r.rss_kb >= TOUCH_BYTES / 1024);
  assert_true(r.rss_kb < stack_kb);
  assert_true(r.waiter_rss_kb < stack_kb);
  /* all: the whole stack, both on fibers the worker made and on the first
   * one, made by the starting thread and prefaulted when the worker starts
   * (one of the two jobs ran on it). */
  prefault_run(WEFT_STACK_PREFAULT_ALL, 0, 512 * 1024, &r);
  assert_true(r.rss_kb >= stack_kb);
  assert_true(r.waiter_rss_kb >= stack_kb);
  /* The environment overrides the config. */
  assert_int_equal(setenv("WEFT_STACK_PREFAULT", "all", 1), 0);
  prefault_run(WEFT_STACK_PREFAULT_NONE, 0, 512 * 1024, &r);
  assert_true(r.rss_kb >= stack_kb);
  unsetenv("WEFT_STACK_PREFAULT");
  /* Huge stacks of two huge pages: page is the whole top one (written page
   * by page should THP give no huge page), all both. */
  if (thp_expected() &&
      (meminfo("HugePages_Free") <= 0 || reserve_hugepages(0))) {
    prefault_run(WEFT_STACK_PREFAULT_PAGE, 1, 4 << 20, &r);
    assert_int_equal(r.s.stacks_thp, r.s.fibers_created);
    assert_true(r.rss_kb >= 2048);
    assert_true(r.rss_kb < 4096);
    prefault_run(WEFT_STACK_PREFAULT_ALL, 1, 4 << 20, &r);
    assert_int_equal(r.s.stacks_thp, r.s.fibers_created);
    assert_true(r.rss_kb >= 4096);
    assert_true(r.waiter_rss_kb >= 4096);
  }
}

/* In the child: prefault all without MADV_POPULATE_WRITE, so by writing to
 * every page, on the first fiber (whose frames are live) and on one the
 * worker makes. */
static void prefault_child(const void* arg) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t gate;
  weft_counter_t c;
  weft_counter_t touched;
  waiter_t wt;
  touch_t t;
  int i;

  (void)arg;
  if (!deny_madvise(MADV_POPULATE_WRITE_ADVICE))
    _exit(CHILD_CANNOT_SET_UP);
  weft_config_init(&cfg);
  cfg.workers = 1;
  cfg.stack_prefault = WEFT_STACK_PREFAULT_ALL;
  if (weft_runtime_create(&rt, &cfg) != 0)
    _exit(CHILD_NO_RUNTIME);
  weft_counter_init(&gate, 1);
  weft_counter_init(&c, 0);
  weft_counter_init(&touched, 0);
  memset(&wt, 0, sizeof(wt));
  memset(&t, 0, sizeof(t));
  wt.gate = &gate;
  weft_spawn(rt, waiter_job, &wt, &c);
  /* The touch job then runs on a fiber the worker makes. */
  for (i = 0; i < 10000 && atomic_load(&wt.addr) == 0; i++)
    test_sleep_ms(1);
  weft_spawn(rt, touch_job, &t, &touched);
  weft_counter_wait(&touched, 0);
  if (!t.ok || smaps_field(t.addr, "Rss", NULL) < 512 ||
      smaps_field(atomic_load(&wt.addr), "Rss", NULL) < 512)
    _exit(CHILD_NOT_PREFAULTED);
  weft_counter_add(&gate, -1);
  weft_counter_wait(&c, 0);
  weft_runtime_destroy(rt);
  _exit(0);
}

static void stack_prefault_without_populate(void** state) {
  char buf[4096];
  int status;
  (void)state;
  status = in_child(prefault_child, NULL, buf, sizeof(buf));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("child status %#x; it printed:\n%s", (unsigned)status, buf);
}

int main(void) {
  /* The tests that fork come first: weft installs its SIGSEGV reporter once
   * per process, at the first runtime start, and cmocka installs its own
   * (not on the alternate stack) around every test, so only a child whose
   * parent never started a runtime installs weft's last; and weft reads
   * the THP settings once per process, at its first huge stack, which
   * must be the child's for PR_SET_THP_DISABLE to be seen. */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(huge_overflow_reported_thp, restore_teardown),
      cmocka_unit_test_teardown(huge_overflow_reported_hugetlb,
                                restore_teardown),
      cmocka_unit_test_teardown(huge_overflow_reported_thp_disabled,
                                restore_teardown),
      cmocka_unit_test_teardown(huge_overflow_reported_mprotect_guard,
                                restore_teardown),
      cmocka_unit_test_teardown(stack_prefault_without_populate,
                                restore_teardown),
      cmocka_unit_test_teardown(huge_off_normal, restore_teardown),
      cmocka_unit_test_teardown(huge_thp_when_none_reserved, restore_teardown),
      cmocka_unit_test_teardown(huge_hugetlb_when_reserved, restore_teardown),
      cmocka_unit_test_teardown(huge_hugetlb_exhausted_falls_back,
                                restore_teardown),
      cmocka_unit_test_teardown(huge_env_override, restore_teardown),
      cmocka_unit_test_teardown(huge_config_checked, restore_teardown),
      cmocka_unit_test_teardown(stack_bound_to_node, restore_teardown),
      cmocka_unit_test_teardown(stack_bound_huge, restore_teardown),
      cmocka_unit_test_teardown(stack_prefault_modes, restore_teardown),
  };
  /* The settings these tests make must not come in from outside. */
  unsetenv("WEFT_HUGE_STACKS");
  unsetenv("WEFT_STACK_PREFAULT");
  unsetenv("WEFT_PLACEMENT");
  unsetenv("WEFT_TOPOLOGY");
  return cmocka_run_group_tests_name("stack_huge", tests, group_setup,
                                     restore_teardown);
}
