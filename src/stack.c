/* stack.c: fiber stacks and the stack-overflow reporter.
 *
 * A stack is one anonymous mapping whose lowest pages are a guard. Where the
 * kernel has MADV_GUARD_INSTALL (Linux 6.13) the guard costs no extra
 * mapping; otherwise it is mprotect(PROT_NONE), which splits the mapping in
 * two (vm.max_map_count is 65530, hence stacks are pooled, never mapped per
 * job). A fault in a guard is reported by a SIGSEGV handler running on an
 * alternate signal stack, since the faulting stack itself is exhausted.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define WEFT__GUARD_PAGES 4

static size_t page_size(void) {
  static size_t cached;
  if (cached == 0)
    cached = (size_t)sysconf(_SC_PAGESIZE);
  return cached;
}

size_t weft__stack_guard_size(void) {
  return WEFT__GUARD_PAGES * page_size();
}

/* 0: unknown, 1: MADV_GUARD_INSTALL works, -1: it does not. Relaxed: every
 * thread computes the same answer, so a race only repeats the probe. */
static atomic_int guard_madvise;

int weft__stack_alloc(weft__stack_t* s, size_t size) {
  size_t pg = page_size();
  size_t guard = weft__stack_guard_size();
  size_t usable = (size + pg - 1) & ~(pg - 1);
  char* map;
  int mode;

  map = mmap(NULL, usable + guard, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return -ENOMEM;

  mode = atomic_load_explicit(&guard_madvise, memory_order_relaxed);
  if (mode >= 0 && madvise(map, guard, MADV_GUARD_INSTALL) == 0) {
    if (mode == 0)
      atomic_store_explicit(&guard_madvise, 1, memory_order_relaxed);
  } else {
    if (mode == 0)
      atomic_store_explicit(&guard_madvise, -1, memory_order_relaxed);
    if (mprotect(map, guard, PROT_NONE) != 0) {
      munmap(map, usable + guard);
      return -ENOMEM;
    }
  }
  s->map = map;
  s->map_size = usable + guard;
  s->lo = map + guard;
  s->size = usable;
  return 0;
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
