/* bench_prodcons.c: producer-consumer through a fiber-friendly bounded
 * queue (issue 4, item 7). Half the workers (at least one) run producer
 * jobs, the others (at least one) consumer jobs, each job pinned to its
 * worker with weft_spawn_ex; with THREADS=1 both kinds share worker 0. One
 * BENCH line each (impl=weft):
 *   prodcons_1   one producer job per producer worker, one consumer job per
 *                consumer worker (items/s)
 *   prodcons_8   8 producer jobs per producer worker and 8 consumer jobs per
 *                consumer worker, so a worker whose job waits switches to
 *                another fiber (items/s)
 * items/s = ITEMS / the time from the first spawn to the last job's end,
 * best of 3. Every item is a distinct number; the consumers' sum and count
 * are checked, and the program exits 1 on a mismatch.
 * THREADS (workers, default 2); BENCH_ONLY=name prefix; ITEMS (default
 * 1,000,000); QCAP (queue slots, a power of two, default 1024).
 *
 * The queue. weft's public API has counters and a wait for "value <=
 * target", but no semaphore, condition variable or "wait while empty"; a
 * fiber-friendly queue is built here from those. It is a bounded ticket
 * queue (Vyukov's array queue, with a weft counter for each slot's sequence
 * number): a producer takes ticket t (one fetch_add), and slot t % cap is
 * its turn once the slot's sequence reaches t; it stores the item and sets
 * the sequence to t + 1. A consumer takes ticket h, waits for sequence
 * h + 1, takes the item and sets the sequence to h + cap, the next round's
 * producer turn. A counter's wait is "value <= target", so the counter
 * holds minus the sequence: "sequence >= s" is weft_counter_wait(c, -s).
 * A producer on a full queue or a consumer on an empty one therefore
 * suspends its fiber in weft_counter_wait (never spins, never blocks the
 * worker thread), and it is woken by exactly the one weft_counter_add that
 * makes its slot ready: no thundering herd, no retry loop.
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "bench_kernels.h"
#include "weft.h"

typedef struct {
  weft_counter_t seq; /* minus the slot's sequence number */
  uint64_t value;
} slot_t;

typedef struct {
  size_t cap; /* a power of two */
  slot_t* slots;
  _Alignas(64) atomic_uint_fast64_t tail; /* producers' next ticket */
  _Alignas(64) atomic_uint_fast64_t head; /* consumers' next ticket */
} fq_t;

static void fq_init(fq_t* q, size_t cap) {
  size_t i;
  q->cap = cap;
  q->slots = bk_alloc(cap * sizeof(slot_t));
  for (i = 0; i < cap; i++)
    weft_counter_init(&q->slots[i].seq, -(int64_t)i);
  atomic_init(&q->tail, 0);
  atomic_init(&q->head, 0);
}

/* fq_push: fiber only; suspends while the slot of its ticket is full. */
static void fq_push(fq_t* q, uint64_t value) {
  uint64_t t = atomic_fetch_add_explicit(&q->tail, 1, memory_order_relaxed);
  slot_t* s = &q->slots[t & (q->cap - 1)];
  /* The wait's acquire pairs with the consumer's seq_cst add: the previous
   * round's read of `value` is done before we overwrite it. */
  weft_counter_wait(&s->seq, -(int64_t)t);
  s->value = value;
  /* seq_cst (release) publishes `value` to the consumer of ticket t. */
  weft_counter_add(&s->seq, -1);
}

/* fq_pop: fiber only; suspends while the slot of its ticket is empty. */
static uint64_t fq_pop(fq_t* q) {
  uint64_t h = atomic_fetch_add_explicit(&q->head, 1, memory_order_relaxed);
  slot_t* s = &q->slots[h & (q->cap - 1)];
  uint64_t v;
  weft_counter_wait(&s->seq, -(int64_t)(h + 1));
  v = s->value;
  weft_counter_add(&s->seq, -(int64_t)(q->cap - 1));
  return v;
}

typedef struct {
  fq_t* q;
  uint64_t first; /* producers: values first + 1 .. first + n */
  uint64_t n;
  uint64_t sum; /* consumers: what they took */
} role_t;

static void producer_job(void* arg) {
  role_t* r = arg;
  uint64_t i;
  for (i = 1; i <= r->n; i++)
    fq_push(r->q, r->first + i);
}

static void consumer_job(void* arg) {
  role_t* r = arg;
  uint64_t sum = 0;
  uint64_t i;
  for (i = 0; i < r->n; i++)
    sum += fq_pop(r->q);
  r->sum = sum;
}

static void spawn_pinned(weft_runtime_t* rt, weft_job_cb fn, role_t* r,
                         int worker, weft_counter_t* done) {
  weft_spawn_opts_t opts = {WEFT_PRIORITY_NORMAL, worker};
  int err = weft_spawn_ex(rt, fn, r, done, &opts);
  if (err != 0) {
    fprintf(stderr, "weft_spawn_ex: %s\n", weft_strerror(err));
    exit(1);
  }
}

static void bench_prodcons(weft_runtime_t* rt, const char* name,
                           unsigned workers, unsigned per_worker,
                           uint64_t items, size_t cap) {
  unsigned pw = workers / 2 > 0 ? workers / 2 : 1;
  unsigned cw = workers > pw ? workers - pw : 1;
  unsigned np = pw * per_worker;
  unsigned nc = cw * per_worker;
  role_t* prod = bk_alloc(np * sizeof(role_t));
  role_t* cons = bk_alloc(nc * sizeof(role_t));
  double best = 1e18;
  int rep;
  unsigned i;

  for (rep = 0; rep < 3; rep++) {
    fq_t q;
    weft_counter_t done;
    uint64_t given = 0;
    uint64_t sum = 0;
    uint64_t t0;
    double s;

    fq_init(&q, cap);
    weft_counter_init(&done, 0);
    t0 = bk_now_ns();
    for (i = 0; i < np; i++) {
      prod[i].q = &q;
      prod[i].first = given;
      prod[i].n = items / np + (i < items % np);
      given += prod[i].n;
      spawn_pinned(rt, producer_job, &prod[i], workers == 1 ? 0 : (int)(i % pw),
                   &done);
    }
    for (i = 0; i < nc; i++) {
      cons[i].q = &q;
      cons[i].n = items / nc + (i < items % nc);
      cons[i].sum = 0;
      spawn_pinned(rt, consumer_job, &cons[i],
                   workers == 1 ? 0 : (int)(pw + i % cw), &done);
    }
    weft_counter_wait(&done, 0);
    s = (double)(bk_now_ns() - t0) / 1e9;
    for (i = 0; i < nc; i++)
      sum += cons[i].sum;
    /* Items are 1..items, each consumed once. */
    if (given != items || sum != items * (items + 1) / 2 ||
        atomic_load(&q.head) != items || atomic_load(&q.tail) != items) {
      fprintf(stderr, "%s: consumed sum %llu, want %llu\n", name,
              (unsigned long long)sum,
              (unsigned long long)(items * (items + 1) / 2));
      exit(1);
    }
    free(q.slots);
    if (s < best)
      best = s;
  }
  bk_line(name, "weft", (double)items / best, "items/s");
  free(prod);
  free(cons);
}

int main(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  long items = bk_env_long("ITEMS", 1000000);
  long cap = bk_env_long("QCAP", 1024);

  weft_config_init(&cfg);
  cfg.workers = (unsigned)bk_env_long("THREADS", 2);
  if (cfg.workers < 1 || items < 1 || cap < 2 || (cap & (cap - 1)) != 0) {
    fprintf(stderr, "THREADS >= 1, ITEMS >= 1, QCAP a power of two >= 2\n");
    return 1;
  }
  if (weft_runtime_create(&rt, &cfg) != 0)
    return 1;
  if (bk_wanted("prodcons_1"))
    bench_prodcons(rt, "prodcons_1", cfg.workers, 1, (uint64_t)items,
                   (size_t)cap);
  if (bk_wanted("prodcons_8"))
    bench_prodcons(rt, "prodcons_8", cfg.workers, 8, (uint64_t)items,
                   (size_t)cap);
  weft_runtime_destroy(rt);
  return 0;
}
