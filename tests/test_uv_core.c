/* test_uv_core.c: the bridge itself: owned and embedded loops, sleeps and
 * deadlines, cancellation, stopping with fibers blocked, the escape hatch,
 * weft_uv_submit driven by a plain uv_run, and bad arguments.
 */
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "weft_uv.h"

static weft_runtime_t* rt_with_bridge(unsigned workers, weft_uv_t** b) {
  weft_runtime_t* rt = test_runtime(workers);
  assert_int_equal(weft_uv_start(rt, b), 0);
  return rt;
}

/* ---- sleep and deadlines ----------------------------------------------------
 */

typedef struct {
  int rc;
  uint64_t elapsed_ms;
  uint64_t ms;
  uint64_t deadline_ms; /* 0: none */
} sleep_t;

static void sleeper(void* arg) {
  sleep_t* s = arg;
  uint64_t t0 = uv_hrtime();
  s->rc =
      weft_uv_sleep(s->ms, s->deadline_ms ? weft_uv_deadline_in(s->deadline_ms)
                                          : WEFT_UV_FOREVER);
  s->elapsed_ms = (uv_hrtime() - t0) / 1000000;
}

static void uv_sleep_and_deadline(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  sleep_t s[3] = {{-1, 0, 30, 0}, {-1, 0, 10000, 20}, {-1, 0, 1, 0}};
  weft_counter_t c;
  int i;
  (void)state;

  weft_counter_init(&c, 0);
  for (i = 0; i < 3; i++)
    assert_int_equal(weft_spawn(rt, sleeper, &s[i], &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(s[0].rc, 0);
  assert_true(s[0].elapsed_ms >= 29);
  assert_int_equal(s[1].rc, UV_ETIMEDOUT);
  assert_true(s[1].elapsed_ms >= 19 && s[1].elapsed_ms < 5000);
  assert_int_equal(s[2].rc, 0);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

/* Many sleepers share the one timer heap: each wakes at its own deadline,
 * never before it. */
typedef struct {
  uint64_t deadline;
  uint64_t woke;
  int rc;
} timed_t;

static void deadline_sleeper(void* arg) {
  timed_t* t = arg;
  t->rc = weft_uv_sleep(3600 * 1000, t->deadline);
  t->woke = uv_hrtime();
}

static void uv_many_sleepers(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(4, &b);
  enum { N = 200 };
  timed_t t[N];
  weft_counter_t c;
  uint64_t base = weft_uv_deadline_in(5);
  int i;
  (void)state;

  weft_counter_init(&c, 0);
  for (i = 0; i < N; i++) {
    t[i].deadline = base + (uint64_t)((i * 7919) % N) * 500000; /* shuffled */
    assert_int_equal(weft_spawn(rt, deadline_sleeper, &t[i], &c), 0);
  }
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  for (i = 0; i < N; i++) {
    assert_int_equal(t[i].rc, UV_ETIMEDOUT);
    assert_true(t[i].woke >= t[i].deadline);
  }
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

/* ---- cancellation
 * ------------------------------------------------------------ */

typedef struct {
  weft_uv_job_t self;
  atomic_int ready;
  int rc;
} victim_t;

static void victim(void* arg) {
  victim_t* v = arg;
  v->self = weft_uv_job_self();
  atomic_store(&v->ready, 1);
  v->rc = weft_uv_sleep(60000, WEFT_UV_FOREVER);
}

static void uv_cancel_blocked(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  victim_t v;
  weft_counter_t c;
  weft_uv_job_t none = {NULL, 0};
  (void)state;

  memset(&v, 0, sizeof(v));
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, victim, &v, &c), 0);
  while (!atomic_load(&v.ready))
    test_sleep_ms(1);
  test_sleep_ms(20); /* let it block */
  assert_int_equal(weft_uv_cancel(b, v.self), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(v.rc, UV_ECANCELED);
  /* A job that has finished is left alone; a null name is an error. */
  assert_int_equal(weft_uv_cancel(b, v.self), 0);
  assert_int_equal(weft_uv_cancel(b, none), UV_EINVAL);
  assert_int_equal(weft_uv_cancel(NULL, v.self), UV_EINVAL);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

/* A job's name is never given to a later job, even when a waiting job ran
 * a nested one on its own fiber (help): a cancel aimed at a finished job
 * must not hit the next job on that fiber. */
typedef struct {
  weft_uv_job_t outer;
  weft_uv_job_t inner;
} names_t;

static void inner_named(void* arg) {
  names_t* n = arg;
  n->inner = weft_uv_job_self();
}

static void outer_named(void* arg) {
  names_t* n = arg;
  weft_counter_t c;
  n->outer = weft_uv_job_self();
  weft_counter_init(&c, 0);
  CHECK(weft_spawn(NULL, inner_named, n, &c) == 0);
  CHECK(weft_counter_wait(&c, 0) == 0);
  /* Our name is still ours after running the inner job. */
  CHECK(weft_uv_job_self().gen_ == n->outer.gen_);
}

static void uv_cancel_names_not_reused(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(1, &b);
  names_t n;
  victim_t v;
  weft_counter_t c;
  weft_stats_t st;
  (void)state;

  memset(&n, 0, sizeof(n));
  memset(&v, 0, sizeof(v));
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, outer_named, &n, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  /* One worker, no switch: the inner job ran on the outer job's fiber. */
  assert_true(weft_stats(rt, &st) >= 0);
  assert_int_equal(st.fiber_switches, 0);
  assert_ptr_equal(n.inner.fiber_, n.outer.fiber_);
  assert_true(n.inner.gen_ != n.outer.gen_);
  /* The next job on that fiber, blocked, is not the finished inner one. */
  assert_int_equal(weft_spawn(rt, victim, &v, &c), 0);
  while (!atomic_load(&v.ready))
    test_sleep_ms(1);
  assert_ptr_equal(v.self.fiber_, n.inner.fiber_);
  assert_true(v.self.gen_ != n.inner.gen_);
  assert_true(v.self.gen_ != n.outer.gen_);
  test_sleep_ms(20); /* let it block */
  assert_int_equal(weft_uv_cancel(b, n.inner), 0);
  assert_int_equal(weft_uv_cancel(b, n.outer), 0);
  test_sleep_ms(50);
  assert_int_equal(weft_counter_value(&c), 1); /* still asleep */
  assert_int_equal(weft_uv_cancel(b, v.self), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(v.rc, UV_ECANCELED);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- stop with many fibers blocked -----------------------------------------
 */

static atomic_int cancelled;

static void blocked_forever(void* arg) {
  (void)arg;
  if (weft_uv_sleep(3600 * 1000, WEFT_UV_FOREVER) == UV_ECANCELED)
    atomic_fetch_add(&cancelled, 1);
}

static void uv_stop_cancels_all(void** state) {
  size_t k;
  (void)state;
  for (k = 0; k < TEST_NWORKER_COUNTS; k++) {
    weft_uv_t* b;
    weft_runtime_t* rt = rt_with_bridge(test_worker_counts[k], &b);
    weft_counter_t c;
    weft_stats_t s;
    int n = (int)test_size(1000);
    int i;
    atomic_store(&cancelled, 0);
    weft_counter_init(&c, 0);
    for (i = 0; i < n; i++)
      assert_int_equal(weft_spawn(rt, blocked_forever, NULL, &c), 0);
    /* All n suspended: each holds a fiber. */
    for (i = 0; i < 5000; i++) {
      weft_stats(rt, &s);
      if (s.fibers_created >= (uint64_t)n)
        break;
      test_sleep_ms(1);
    }
    test_sleep_ms(10);
    assert_int_equal(weft_uv_stop(b), 0);
    assert_int_equal(weft_counter_wait(&c, 0), 0);
    assert_int_equal(atomic_load(&cancelled), n);
    assert_int_equal(weft_runtime_destroy(rt), 0);
  }
}

/* Destroying the runtime stops its bridge and cancels what waits. */
static void uv_destroy_stops_bridge(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  int i;
  (void)state;
  atomic_store(&cancelled, 0);
  for (i = 0; i < 100; i++)
    assert_int_equal(weft_spawn(rt, blocked_forever, NULL, NULL), 0);
  test_sleep_ms(20);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  assert_int_equal(atomic_load(&cancelled), 100);
}

/* ---- the escape hatch
 * -------------------------------------------------------- */

typedef struct {
  uv_timer_t timer;
  weft_uv_req_t* req;
  uint64_t ms;
  int aborted;
} hatch_t;

static void hatch_closed(uv_handle_t* h) {
  hatch_t* t = h->data;
  weft_uv_complete(t->req, t->aborted ? UV_ECANCELED : 42);
  free(t);
}

static void hatch_fired(uv_timer_t* timer) {
  uv_close((uv_handle_t*)timer, hatch_closed);
}

static int hatch_start(uv_loop_t* loop, weft_uv_req_t* req, void* arg) {
  hatch_t* t = arg;
  t->req = req;
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  return uv_timer_start(&t->timer, hatch_fired, t->ms, 0);
}

static void hatch_abort(weft_uv_req_t* req, void* arg) {
  hatch_t* t = arg;
  (void)req;
  t->aborted = 1;
  uv_timer_stop(&t->timer);
  uv_close((uv_handle_t*)&t->timer, hatch_closed);
}

static int hatch_fail(uv_loop_t* loop, weft_uv_req_t* req, void* arg) {
  (void)loop;
  (void)req;
  (void)arg;
  return UV_EBUSY;
}

static void hatch_job(void* arg) {
  hatch_t* quick = calloc(1, sizeof(*quick));
  hatch_t* slow = calloc(1, sizeof(*slow));
  (void)arg;
  quick->ms = 5;
  slow->ms = 60000;
  CHECK(weft_uv_call(hatch_start, hatch_abort, quick, WEFT_UV_FOREVER) == 42);
  /* The deadline passes first: abort closes the timer, and complete's
   * result is dropped. */
  CHECK(weft_uv_call(hatch_start, hatch_abort, slow, weft_uv_deadline_in(10)) ==
        UV_ETIMEDOUT);
  CHECK(weft_uv_call(hatch_fail, NULL, NULL, WEFT_UV_FOREVER) == UV_EBUSY);
  CHECK(weft_uv_call(NULL, NULL, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
}

static void uv_escape_hatch(void** state) {
  weft_uv_t* b;
  weft_runtime_t* rt = rt_with_bridge(2, &b);
  weft_counter_t c;
  (void)state;
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, hatch_job, NULL, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- embedded: a plain uv_run on the test's thread ------------------------
 */

typedef struct {
  weft_uv_t* b;
  uv_loop_t* loop;
  uv_timer_t keepalive; /* the host server's own work keeps its loop up */
  int submitted;
  atomic_int ran_on_worker;
  int after_calls;
  int after_errors;
  atomic_int slept;
} embed_t;

static void offloaded(void* arg) {
  embed_t* e = arg;
  if (weft_worker_id() >= 0)
    atomic_fetch_add(&e->ran_on_worker, 1);
  /* Offloaded work may itself await I/O on the host's loop. */
  if (atomic_load(&e->ran_on_worker) % 100 == 0 &&
      weft_uv_sleep(1, WEFT_UV_FOREVER) == 0)
    atomic_fetch_add(&e->slept, 1);
}

static void after(void* arg, int status) {
  embed_t* e = arg;
  e->after_calls++;
  if (status != 0)
    e->after_errors++;
  if (e->after_calls == e->submitted) {
    /* On the loop thread, inside a callback: detach. */
    CHECK(weft_uv_stop(e->b) == 0);
    uv_close((uv_handle_t*)&e->keepalive, NULL);
  }
}

static void keepalive_cb(uv_timer_t* t) {
  (void)t;
}

static void uv_embedded_submit(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  uv_loop_t loop;
  embed_t e;
  int i;
  (void)state;

  memset(&e, 0, sizeof(e));
  assert_int_equal(uv_loop_init(&loop), 0);
  e.loop = &loop;
  assert_int_equal(weft_uv_attach(rt, &loop, &e.b), 0);
  assert_int_equal(weft_uv_attach(rt, &loop, &e.b), UV_EINVAL);
  e.submitted = test_size(10000);
  for (i = 0; i < e.submitted; i++)
    assert_int_equal(weft_uv_submit(e.b, offloaded, &e, after), 0);
  /* The bridge's handles are unref'd: the host's own timer keeps the loop
   * running until the last after_cb closes it. */
  uv_timer_init(&loop, &e.keepalive);
  uv_timer_start(&e.keepalive, keepalive_cb, 1000, 1000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(e.after_calls, e.submitted);
  assert_int_equal(e.after_errors, 0);
  assert_int_equal(atomic_load(&e.ran_on_worker), e.submitted);
  assert_true(atomic_load(&e.slept) > 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* Stopping with submissions outstanding: each after_cb runs exactly once,
 * the finished ones with 0, the rest with UV_ECANCELED at the stop (which an
 * after_cb makes here, inside the bridge's own drain); every job still runs
 * once, and nothing leaks (ASan, Valgrind). */
typedef struct {
  weft_uv_t* b;
  uv_timer_t keepalive;
  weft_counter_t gate; /* the slow half waits on it */
  int n;
  int fast;
  atomic_int ran;
  int ok;
  int cancelled;
  int resubmits; /* the chain test: after_cb submits again */
} held_t;

static void held_job(void* arg) {
  held_t* h = arg;
  /* The first `fast` jobs to start return at once, the rest wait. */
  if (atomic_fetch_add(&h->ran, 1) >= h->fast)
    CHECK(weft_counter_wait(&h->gate, 0) == 0);
}

static void held_after(void* arg, int status) {
  held_t* h = arg;
  if (status == 0)
    h->ok++;
  else if (status == UV_ECANCELED)
    h->cancelled++;
  else
    CHECK(0);
  if (status == 0 && h->ok == h->fast) {
    CHECK(weft_uv_stop(h->b) == 0);
    /* Stop reported the rest before returning. */
    CHECK(h->ok + h->cancelled == h->n);
    CHECK(weft_uv_submit(h->b, held_job, h, held_after) == UV_ECANCELED);
    weft_counter_add(&h->gate, -1); /* let the slow half finish */
    uv_close((uv_handle_t*)&h->keepalive, NULL);
  }
}

static void uv_submit_stop_outstanding(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  uv_loop_t loop;
  held_t h;
  int i;
  (void)state;

  memset(&h, 0, sizeof(h));
  h.n = test_size(2000);
  h.fast = h.n / 2;
  weft_counter_init(&h.gate, 1);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(weft_uv_attach(rt, &loop, &h.b), 0);
  for (i = 0; i < h.n; i++)
    assert_int_equal(weft_uv_submit(h.b, held_job, &h, held_after), 0);
  uv_timer_init(&loop, &h.keepalive);
  uv_timer_start(&h.keepalive, keepalive_cb, 1000, 1000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(h.ok, h.fast);
  assert_int_equal(h.cancelled, h.n - h.fast);
  /* Destroy waits for the released jobs; their records go with it. */
  assert_int_equal(weft_runtime_destroy(rt), 0);
  assert_int_equal(atomic_load(&h.ran), h.n);
  ASSERT_NO_CHECK_FAILED();
}

/* An after_cb that submits again reuses the finished record at once; a
 * long chain must neither lose a link nor grow memory. */
static void chain_job(void* arg) {
  held_t* h = arg;
  atomic_fetch_add(&h->ran, 1);
}

static void chain_after(void* arg, int status) {
  held_t* h = arg;
  CHECK(status == 0);
  h->ok++;
  if (h->resubmits < h->n) {
    h->resubmits++;
    CHECK(weft_uv_submit(h->b, chain_job, h, chain_after) == 0);
    return;
  }
  if (h->ok == h->n + h->fast) {
    CHECK(weft_uv_stop(h->b) == 0);
    uv_close((uv_handle_t*)&h->keepalive, NULL);
  }
}

static void uv_submit_chain(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  uv_loop_t loop;
  held_t h;
  int i;
  (void)state;

  memset(&h, 0, sizeof(h));
  h.n = test_size(20000); /* resubmissions */
  h.fast = 8;             /* chains running side by side */
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(weft_uv_attach(rt, &loop, &h.b), 0);
  for (i = 0; i < h.fast; i++)
    assert_int_equal(weft_uv_submit(h.b, chain_job, &h, chain_after), 0);
  uv_timer_init(&loop, &h.keepalive);
  uv_timer_start(&h.keepalive, keepalive_cb, 1000, 1000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(h.ok, h.n + h.fast);
  assert_int_equal(atomic_load(&h.ran), h.n + h.fast);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* A burst that outruns the pool takes back finished records before it
 * grows the pool, keeping their after_cb in a log until the next drain.
 * Here one burst (from main, before uv_run, as a host may) comes in phases
 * of 256 submissions, the size at which the loop publishes a burst without
 * waiting for the callback to end, each run to the end before the next:
 * later phases reuse the records of earlier ones. Each after_cb must still
 * run exactly once, with its own arg, whether a drain reports the log or a
 * stop does. */
typedef struct {
  atomic_int ran;
  int after;
  int status;
} burst_item_t;

static struct {
  weft_uv_t* b;
  uv_timer_t keepalive;
  int n;
  int reported;
  int stop_when_done; /* the last after_cb stops the bridge */
} burst;

static void burst_job(void* arg) {
  burst_item_t* it = arg;
  atomic_fetch_add(&it->ran, 1);
}

static void burst_after(void* arg, int status) {
  burst_item_t* it = arg;
  it->after++;
  it->status = status;
  if (++burst.reported == burst.n && burst.stop_when_done) {
    CHECK(weft_uv_stop(burst.b) == 0);
    uv_close((uv_handle_t*)&burst.keepalive, NULL);
  }
}

static void uv_submit_reclaim(void** state) {
  enum { PHASE = 256, PHASES = 16 };
  int stop_first;
  (void)state;

  for (stop_first = 0; stop_first <= 1; stop_first++) {
    weft_runtime_t* rt = test_runtime(2);
    burst_item_t* items = calloc(PHASE * PHASES, sizeof(*items));
    uv_loop_t loop;
    int p;
    int i;

    assert_non_null(items);
    memset(&burst, 0, sizeof(burst));
    burst.n = PHASE * PHASES;
    burst.stop_when_done = !stop_first;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(weft_uv_attach(rt, &loop, &burst.b), 0);
    uv_timer_init(&loop, &burst.keepalive);
    uv_timer_start(&burst.keepalive, keepalive_cb, 1000, 1000);
    for (p = 0; p < PHASES; p++) {
      for (i = p * PHASE; i < (p + 1) * PHASE; i++)
        assert_int_equal(
            weft_uv_submit(burst.b, burst_job, &items[i], burst_after), 0);
      /* Let the phase finish (and its records reach the outboxes). */
      for (i = p * PHASE; i < (p + 1) * PHASE; i++)
        while (atomic_load(&items[i].ran) == 0)
          usleep(100);
      usleep(1000);
    }
    assert_int_equal(burst.reported, 0); /* nothing reported inside submit */
    if (stop_first) {
      /* The stop reports the log: every job has run, so all with 0. */
      assert_int_equal(weft_uv_stop(burst.b), 0);
      assert_int_equal(burst.reported, burst.n);
      uv_close((uv_handle_t*)&burst.keepalive, NULL);
    }
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(weft_runtime_destroy(rt), 0);
    for (i = 0; i < burst.n; i++) {
      assert_int_equal(atomic_load(&items[i].ran), 1);
      assert_int_equal(items[i].after, 1);
      assert_int_equal(items[i].status, 0);
    }
    free(items);
  }
  ASSERT_NO_CHECK_FAILED();
}

/* A host's prepare callback runs after the bridge's own (libuv runs the
 * most recently started first), just before the loop blocks in poll: work
 * it submits must still start and report, not wait for the next event.
 * The host's only other handle is a timer that fails the test if it fires
 * first. */
static struct {
  weft_uv_t* b;
  uv_prepare_t prepare;
  uv_timer_t timeout;
  atomic_int ran;
  int after;
} late;

static void late_job(void* arg) {
  (void)arg;
  atomic_fetch_add(&late.ran, 1);
}

static void late_after(void* arg, int status) {
  (void)arg;
  CHECK(status == 0);
  late.after++;
  CHECK(weft_uv_stop(late.b) == 0);
  uv_close((uv_handle_t*)&late.prepare, NULL);
  uv_close((uv_handle_t*)&late.timeout, NULL);
}

static void late_prepare(uv_prepare_t* p) {
  CHECK(weft_uv_submit(late.b, late_job, NULL, late_after) == 0);
  uv_prepare_stop(p);
}

static void late_timeout(uv_timer_t* t) {
  (void)t;
  CHECK(0 && "the loop slept in poll with a submission unpublished");
  CHECK(weft_uv_stop(late.b) == 0); /* late_after closes the handles */
}

static void uv_submit_from_late_prepare(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  uv_loop_t loop;
  (void)state;

  memset(&late, 0, sizeof(late));
  assert_int_equal(uv_loop_init(&loop), 0);
  /* Started before the bridge's, so it runs after it. */
  uv_prepare_init(&loop, &late.prepare);
  uv_prepare_start(&late.prepare, late_prepare);
  assert_int_equal(weft_uv_attach(rt, &loop, &late.b), 0);
  uv_timer_init(&loop, &late.timeout);
  uv_timer_start(&late.timeout, late_timeout, 5000, 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(late.after, 1);
  assert_int_equal(atomic_load(&late.ran), 1);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- bad arguments and contexts
 * ----------------------------------------------- */

static void no_bridge_job(void* arg) {
  int* rc = arg;
  *rc = weft_uv_sleep(1, WEFT_UV_FOREVER);
}

static void uv_bad_args(void** state) {
  weft_runtime_t* rt = test_runtime(1);
  weft_uv_t* b;
  weft_counter_t c;
  int rc = 0;
  (void)state;

  /* Off a fiber. */
  assert_int_equal(weft_uv_sleep(1, WEFT_UV_FOREVER), UV_EPERM);
  assert_int_equal(weft_uv_call(hatch_fail, NULL, NULL, 0), UV_EPERM);
  assert_null(weft_uv_self());
  /* A fiber, but no bridge. */
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, no_bridge_job, &rc, &c), 0);
  weft_counter_wait(&c, 0);
  assert_int_equal(rc, UV_EINVAL);
  assert_int_equal(weft_uv_start(NULL, &b), UV_EINVAL);
  assert_int_equal(weft_uv_start(rt, NULL), UV_EINVAL);
  assert_int_equal(weft_uv_attach(rt, NULL, &b), UV_EINVAL);
  assert_int_equal(weft_uv_stop(NULL), UV_EINVAL);
  assert_int_equal(weft_uv_start(rt, &b), 0);
  assert_int_equal(weft_uv_start(rt, &b), UV_EINVAL); /* one per runtime */
  assert_int_equal(weft_uv_submit(b, NULL, NULL, NULL), UV_EINVAL);
  /* Not the loop thread (owned mode: it is the bridge's own). */
  assert_int_equal(weft_uv_submit(b, chain_job, NULL, chain_after), UV_EPERM);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_uv_stop(b), 0); /* idempotent */
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(uv_sleep_and_deadline),
      cmocka_unit_test(uv_many_sleepers),
      cmocka_unit_test(uv_cancel_blocked),
      cmocka_unit_test(uv_cancel_names_not_reused),
      cmocka_unit_test(uv_stop_cancels_all),
      cmocka_unit_test(uv_destroy_stops_bridge),
      cmocka_unit_test(uv_escape_hatch),
      cmocka_unit_test(uv_embedded_submit),
      cmocka_unit_test(uv_submit_stop_outstanding),
      cmocka_unit_test(uv_submit_chain),
      cmocka_unit_test(uv_submit_reclaim),
      cmocka_unit_test(uv_submit_from_late_prepare),
      cmocka_unit_test(uv_bad_args),
  };
  return cmocka_run_group_tests_name("uv_core", tests, NULL, NULL);
}
