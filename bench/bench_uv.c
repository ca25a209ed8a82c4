/* bench_uv.c: the bridge's benchmarks, in the peers' format.
 *   offload_small  1M small items (each sums 100 integers, as the peers'
 *                  uv_queue_work program does) through weft_uv_submit from a
 *                  plain uv_run loop (embedded mode), completions counted on
 *                  the loop thread (items/s)
 * THREADS (workers, default 2); ITEMS (1000000).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "weft_uv.h"

static long env_long(const char* name, long dflt) {
  const char* s = getenv(name);
  return (s != NULL && *s != '\0') ? strtol(s, NULL, 10) : dflt;
}

typedef struct {
  long v;
} item_t;

static long done;
static long total;
static uv_timer_t keepalive;
static weft_uv_t* bridge;

static void work(void* arg) {
  item_t* it = arg;
  long s = 0;
  for (int i = 0; i < 100; i++)
    s += i ^ it->v;
  it->v = s;
}

static void after(void* arg, int status) {
  (void)arg;
  if (status == 0)
    done++;
  if (done == total) {
    weft_uv_stop(bridge);
    uv_close((uv_handle_t*)&keepalive, NULL);
  }
}

static void tick(uv_timer_t* t) {
  (void)t;
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  uv_loop_t loop;
  item_t* items;
  struct timespec t0;
  struct timespec t1;
  double s;
  double submit_s;
  long i;

  total = env_long("ITEMS", 1000000);
  weft_config_init(&cfg);
  cfg.workers = (unsigned)env_long("THREADS", 2);
  cfg.pin = (int)env_long("WEFT_PIN", 1);
  if (weft_runtime_create(&rt, &cfg) != 0 || uv_loop_init(&loop) != 0)
    return 1;
  if (weft_uv_attach(rt, &loop, &bridge) != 0)
    return 1;
  items = calloc((size_t)total, sizeof(*items));
  uv_timer_init(&loop, &keepalive);
  uv_timer_start(&keepalive, tick, 1000, 1000);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (i = 0; i < total; i++) {
    items[i].v = i;
    if (weft_uv_submit(bridge, work, &items[i], after) != 0)
      return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  submit_s =
      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  uv_run(&loop, UV_RUN_DEFAULT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (done != total)
    return 1;
  printf("BENCH name=offload_small impl=weft value=%.3f unit=items/s\n",
         (double)total / s);
  if (env_long("BENCH_STATS", 0) != 0) {
    weft_stats_t st;
    weft_stats(rt, &st);
    fprintf(stderr,
            "stats: submit loop %.1f ms of %.1f; jobs %llu steals %llu "
            "parks %llu switches %llu\n",
            submit_s * 1e3, s * 1e3, (unsigned long long)st.jobs_run,
            (unsigned long long)st.steals, (unsigned long long)st.parks,
            (unsigned long long)st.fiber_switches);
  }
  uv_loop_close(&loop);
  weft_runtime_destroy(rt);
  free(items);
  return 0;
}
