/* timer.c: weft_uv_sleep, and weft_uv_call, the escape hatch for any other
 * libuv operation. A sleep is an operation with no libuv request at all:
 * its wake-up time is its deadline in the bridge's one timer heap.
 */
#include "bridge.h"

typedef struct {
  weft__uv_op_t op;
} sleep_op_t;

static void sleep_start(weft__uv_op_t* op, uv_loop_t* loop) {
  (void)op;
  (void)loop;
  /* Nothing to start: the deadline heap ends it. */
}

static void sleep_abort(weft__uv_op_t* op) {
  /* No libuv request holds the loop's reference: drop it here. */
  weft__uv_op_release(op);
}

static const weft__uv_ops_t sleep_ops = {.start = sleep_start,
                                         .abort = sleep_abort};

int weft_uv_sleep(uint64_t ms, uint64_t deadline) {
  weft_uv_t* b;
  sleep_op_t* s;
  uint64_t wake = weft_uv_deadline_in(ms);
  int64_t r;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  s = weft__uv_op_new(b, sizeof(*s), &sleep_ops);
  if (s == NULL)
    return UV_ENOMEM;
  if (deadline != WEFT_UV_FOREVER && deadline < wake) {
    r = weft__uv_op_await(&s->op, deadline);
    return (int)r;
  }
  r = weft__uv_op_await(&s->op, wake);
  /* Our own wake-up time passing is the sleep's success. */
  return r == UV_ETIMEDOUT ? 0 : (int)r;
}

/* ---- weft_uv_call
 * ------------------------------------------------------------ */

typedef struct {
  weft__uv_op_t op;
  weft_uv_start_cb start;
  weft_uv_abort_cb abort_cb;
  void* arg;
} call_op_t;

static void call_start(weft__uv_op_t* op, uv_loop_t* loop) {
  call_op_t* c = (call_op_t*)op;
  int err = c->start(loop, (weft_uv_req_t*)c, c->arg);
  if (err < 0) {
    weft__uv_op_finish(op, err);
    weft__uv_op_release(op);
  }
}

static void call_abort(weft__uv_op_t* op) {
  call_op_t* c = (call_op_t*)op;
  if (c->abort_cb != NULL)
    c->abort_cb((weft_uv_req_t*)c, c->arg);
}

static const weft__uv_ops_t call_ops = {.start = call_start,
                                        .abort = call_abort};

int64_t weft_uv_call(weft_uv_start_cb start, weft_uv_abort_cb abort_cb,
                     void* arg, uint64_t deadline) {
  weft_uv_t* b;
  call_op_t* c;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (start == NULL)
    return UV_EINVAL;
  c = weft__uv_op_new(b, sizeof(*c), &call_ops);
  if (c == NULL)
    return UV_ENOMEM;
  c->start = start;
  c->abort_cb = abort_cb;
  c->arg = arg;
  return weft__uv_op_await(&c->op, deadline);
}

void weft_uv_complete(weft_uv_req_t* req, int64_t result) {
  weft__uv_op_t* op = (weft__uv_op_t*)req;
  weft__uv_op_finish(op, result);
  weft__uv_op_release(op);
}
