/* fib_jobs.c: weft's job system at work. Computes fib(n) with a job per
 * call (every call waits for its two children on a counter, so fibers
 * suspend and resume all over the workers), then sorts ten million numbers
 * with a parallel quicksort, and prints what it did and how fast.
 *
 *   fib_jobs [n] [count]     (defaults: 30 and 10000000)
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "weft.h"

typedef struct {
  int n;
  long result;
} fib_t;

static void fib_job(void* arg) {
  fib_t* f = arg;
  fib_t a;
  fib_t b;
  weft_counter_t done;

  if (f->n < 2) {
    f->result = f->n;
    return;
  }
  a.n = f->n - 1;
  b.n = f->n - 2;
  weft_counter_init(&done, 0);
  weft_spawn(NULL, fib_job, &a, &done);
  weft_spawn(NULL, fib_job, &b, &done);
  weft_counter_wait(&done, 0); /* suspends this fiber, not the worker */
  f->result = a.result + b.result;
}

typedef struct {
  unsigned* v;
  size_t n;
} sort_t;

static int cmp_unsigned(const void* a, const void* b) {
  unsigned x = *(const unsigned*)a;
  unsigned y = *(const unsigned*)b;
  return (x > y) - (x < y);
}

static void sort_job(void* arg) {
  sort_t* s = arg;
  unsigned* v = s->v;
  size_t n = s->n;
  size_t i = 0;
  size_t j;
  unsigned pivot;
  sort_t lo;
  sort_t hi;
  weft_counter_t done;

  if (n <= 4096) {
    qsort(v, n, sizeof(*v), cmp_unsigned);
    return;
  }
  /* Median of three, then Hoare's partition. */
  {
    unsigned a = v[0];
    unsigned b = v[n / 2];
    unsigned c = v[n - 1];
    pivot =
        a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
  }
  j = n - 1;
  for (;;) {
    while (v[i] < pivot)
      i++;
    while (v[j] > pivot)
      j--;
    if (i >= j)
      break;
    unsigned t = v[i];
    v[i] = v[j];
    v[j] = t;
    i++;
    j--;
  }
  lo.v = v;
  lo.n = j + 1;
  hi.v = v + j + 1;
  hi.n = n - j - 1;
  weft_counter_init(&done, 0);
  weft_spawn(NULL, sort_job, &hi, &done);
  sort_job(&lo);
  weft_counter_wait(&done, 0);
}

typedef struct {
  int fib_n;
  size_t count;
  double fib_ms;
  double sort_ms;
  long fib;
  int sorted;
} demo_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void demo_main(void* arg) {
  demo_t* d = arg;
  fib_t f = {d->fib_n, 0};
  sort_t s;
  weft_counter_t done;
  double t0;
  size_t i;
  uint64_t x = 88172645463325252ull;

  weft_counter_init(&done, 0);
  t0 = now_ms();
  weft_spawn(NULL, fib_job, &f, &done);
  weft_counter_wait(&done, 0);
  d->fib_ms = now_ms() - t0;
  d->fib = f.result;

  s.n = d->count;
  s.v = malloc(s.n * sizeof(*s.v));
  if (s.v == NULL)
    return;
  for (i = 0; i < s.n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.v[i] = (unsigned)x;
  }
  t0 = now_ms();
  weft_spawn(NULL, sort_job, &s, &done);
  weft_counter_wait(&done, 0);
  d->sort_ms = now_ms() - t0;
  d->sorted = 1;
  for (i = 1; i < s.n; i++)
    if (s.v[i - 1] > s.v[i])
      d->sorted = 0;
  free(s.v);
}

int main(int argc, char** argv) {
  demo_t d = {30, 10000000, 0, 0, 0, 0};
  long calls;
  int err;

  if (argc > 1)
    d.fib_n = atoi(argv[1]);
  if (argc > 2)
    d.count = (size_t)strtoul(argv[2], NULL, 10);
  if (d.fib_n < 0 || d.fib_n > 40) {
    fprintf(stderr, "usage: fib_jobs [n (0..40)] [count]\n");
    return 2;
  }
  err = weft_run(NULL, demo_main, &d);
  if (err != 0) {
    fprintf(stderr, "weft_run: %s\n", weft_strerror(err));
    return 1;
  }
  {
    long a = 1;
    long b = 1;
    for (int i = 1; i < d.fib_n; i++) {
      long t = a + b + 1;
      a = b;
      b = t;
    }
    calls = d.fib_n < 1 ? 1 : b;
  }
  printf("fib(%d) = %ld with a job per call (%ld jobs): %.1f ms\n", d.fib_n,
         d.fib, calls, d.fib_ms);
  printf("parallel quicksort of %zu numbers: %.1f ms, %s\n", d.count, d.sort_ms,
         d.sorted ? "sorted" : "NOT SORTED");
  return d.sorted ? 0 : 1;
}
