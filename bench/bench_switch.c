/* Context-switch cost: ping-pong between the main context and one fiber,
 * measured exactly as the boost.context peer does
 * (/work/shared/peers/c/ctx_boost.cpp): SWITCHES round trips (=10M), best of
 * 5 runs, nanoseconds per switch = elapsed / (2 * round trips). */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "context.h"

#define STACK_SIZE (64 * 1024)
#define RUNS 5

static weft__ctx_t main_ctx;
static weft__ctx_t fiber_ctx;

static uint64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long env_long(const char* name, long dflt) {
  const char* s;

  s = getenv(name);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 10) : dflt;
}

static void fiber_entry(void* arg) {
  for (;;)
    arg = weft__ctx_switch(&fiber_ctx, &main_ctx, arg);
}

int main(void) {
  void* stack;
  double best;
  double ns;
  uint64_t t0;
  long n;
  long i;
  int run;

  n = env_long("SWITCHES", 10000000);
  if (n <= 0) {
    fprintf(stderr, "bench_switch: SWITCHES must be positive\n");
    return 1;
  }
  stack = malloc(STACK_SIZE);
  if (stack == NULL) {
    fprintf(stderr, "bench_switch: out of memory\n");
    return 1;
  }
  weft__ctx_init_thread(&main_ctx);
  if (weft__ctx_init(&fiber_ctx, stack, STACK_SIZE, fiber_entry) != 0) {
    fprintf(stderr, "bench_switch: weft__ctx_init failed\n");
    return 1;
  }

  best = 1e18;
  for (run = 0; run < RUNS; run++) {
    t0 = now_ns();
    for (i = 0; i < n; i++)
      weft__ctx_switch(&main_ctx, &fiber_ctx, NULL);
    ns = (double)(now_ns() - t0) / (2.0 * (double)n);
    if (ns < best)
      best = ns;
  }
  printf("BENCH name=ctxswitch impl=weft value=%.3f unit=ns\n", best);
  fflush(stdout);

  /* The fiber is suspended for good; its stack is released with it. */
  weft__ctx_destroy(&fiber_ctx);
  free(stack);
  return 0;
}
