/* bench_machine.c: which phase the machine is in, for the report.
 *
 *   line_roundtrip  two threads, pinned to the first two CPUs this process
 *                 may use, pass one cache line back and forth; the time of
 *                 one round trip (ns, median of 5 batches)
 *
 * On the 2-vCPU VMs weft is developed on, this figure moves between three
 * levels as the host moves the vCPUs, a few minutes apart: ~65-80 ns (the
 * vCPUs seem to share a core: two threads of compute then run no faster
 * than one), ~110-120 ns (one L3) and ~450 ns (two CCXs, where a spawner
 * whose thief reads its lines slows down 4x). report.sh runs it before
 * every program, so each figure can be read with the phase it ran in.
 * Prints nothing with fewer than two CPUs.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 20000
#define BATCHES 5

static _Alignas(64) atomic_long line;
static int cpus[2];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Answers each odd value with the next even one. */
static void* echo(void* arg) {
  long i;
  (void)arg;
  (void)pin(cpus[1]); /* unpinned, it still answers */
  for (i = 0; i < (long)BATCH * BATCHES; i++) {
    /* Acquire/release: each side's store pairs with the other's load. */
    while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 1)
      ;
    atomic_store_explicit(&line, 2 * i + 2, memory_order_release);
  }
  return NULL;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(void) {
  cpu_set_t set;
  double ns[BATCHES];
  pthread_t t;
  int n = 0;
  int c;
  long i;
  int b;

  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return 1;
  for (c = 0; c < CPU_SETSIZE && n < 2; c++)
    if (CPU_ISSET(c, &set))
      cpus[n++] = c;
  if (n < 2)
    return 0;
  (void)pin(cpus[0]);
  if (pthread_create(&t, NULL, echo, NULL) != 0)
    return 1;
  for (b = 0; b < BATCHES; b++) {
    uint64_t t0 = now_ns();
    for (i = (long)b * BATCH; i < (long)(b + 1) * BATCH; i++) {
      atomic_store_explicit(&line, 2 * i + 1, memory_order_release);
      while (atomic_load_explicit(&line, memory_order_acquire) != 2 * i + 2)
        ;
    }
    ns[b] = (double)(now_ns() - t0) / BATCH;
  }
  pthread_join(t, NULL);
  qsort(ns, BATCHES, sizeof(ns[0]), cmp_double);
  printf("BENCH name=line_roundtrip impl=machine value=%.1f unit=ns\n",
         ns[BATCHES / 2]);
  return 0;
}
