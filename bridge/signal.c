/* signal.c: weft_uv_signal_wait. Each waiting fiber gets a one-shot
 * uv_signal_t of its own inside its operation, so waits on one signal
 * number need no shared table: libuv delivers a signal to every handle
 * watching its number, and closing the handle ends an abandoned wait.
 */
#include <signal.h>

#include "bridge_extra.h"

typedef struct {
  weft__uv_op_t op;
  uv_signal_t handle;
  int signum;
} signal_op_t;

static void signal_closed(uv_handle_t* handle) {
  signal_op_t* s = handle->data;
  weft__uv_op_release(&s->op);
}

static void signal_end(signal_op_t* s, int result) {
  weft__uv_op_finish(&s->op, result);
  if (!uv_is_closing((uv_handle_t*)&s->handle))
    uv_close((uv_handle_t*)&s->handle, signal_closed);
}

static void on_signal(uv_signal_t* handle, int signum) {
  (void)signum;
  signal_end(handle->data, 0);
}

static void signal_start(weft__uv_op_t* op, uv_loop_t* loop) {
  signal_op_t* s = (signal_op_t*)op;
  int err = uv_signal_init(loop, &s->handle);

  if (err != 0) {
    weft__uv_op_finish(op, err);
    weft__uv_op_release(op);
    return;
  }
  weft__uv_handle_adopt(op->bridge, (uv_handle_t*)&s->handle, s);
  err = uv_signal_start_oneshot(&s->handle, on_signal, s->signum);
  if (err != 0)
    signal_end(s, err);
}

static void signal_abort(weft__uv_op_t* op) {
  signal_end((signal_op_t*)op, UV_ECANCELED);
}

static const weft__uv_ops_t signal_ops = {.start = signal_start,
                                          .abort = signal_abort};

int weft_uv_signal_wait(int signum, uint64_t deadline) {
  weft_uv_t* b;
  signal_op_t* s;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (signum <= 0 || signum >= NSIG)
    return UV_EINVAL;
  s = weft__uv_op_new(b, sizeof(*s), &signal_ops);
  if (s == NULL)
    return UV_ENOMEM;
  s->signum = signum;
  return (int)weft__uv_op_await(&s->op, deadline);
}
