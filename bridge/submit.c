/* submit.c: weft_uv_submit, a work-stealing replacement for uv_queue_work
 * whose work may itself spawn jobs and await I/O. The job runs on the
 * workers; when it returns it posts a completion record to the bridge's
 * queue, and the loop thread calls after_cb. Records still outstanding when
 * the bridge stops get their after_cb with UV_ECANCELED at once; the job
 * finishes later and only frees its half.
 */
#include <stdlib.h>

#include "bridge.h"

typedef struct submit_s {
  weft__uv_op_t op;        /* the completion posted back to the loop */
  weft__job_t job;         /* the job itself: no allocation of its own */
  weft__uv_resource_t res; /* registered while outstanding */
  weft_job_cb fn;
  void* arg;
  weft_uv_after_cb after_cb;
  int called;
} submit_t;

static void submit_done(weft__uv_op_t* op, uv_loop_t* loop) {
  submit_t* s = (submit_t*)op;
  (void)loop;
  if (!s->called) {
    weft__uv_resource_remove(op->bridge, &s->res);
    s->called = 1;
    s->after_cb(s->arg, 0);
    weft__uv_op_release(op); /* the loop's */
  }
  /* Else the bridge stopped first: submit_cancel reported it and dropped
   * the loop's reference. */
  weft__uv_op_release(op); /* the job's, which came with the post */
}

static const weft__uv_ops_t submit_ops = {submit_done, NULL};

/* Bridge stopping with the job still running: report, keep the memory
 * (the job's half) until the job posts or gives up. */
static void submit_cancel(weft__uv_resource_t* res) {
  submit_t* s = (submit_t*)((char*)res - offsetof(submit_t, res));
  s->called = 1;
  s->after_cb(s->arg, UV_ECANCELED);
  weft__uv_op_release(&s->op); /* the loop's reference */
}

static void submit_job(void* arg) {
  submit_t* s = arg;
  s->fn(s->arg);
  /* The job's reference travels with the post; a stopped bridge refuses
   * it, and then the loop's reference is already gone too. */
  if (!weft__uv_op_post(s->op.bridge, &s->op))
    weft__uv_op_release(&s->op);
}

int weft_uv_submit(weft_uv_t* b, weft_job_cb fn, void* arg,
                   weft_uv_after_cb after_cb) {
  submit_t* s;
  int err;

  if (b == NULL || fn == NULL || after_cb == NULL)
    return UV_EINVAL;
  if (b->closing)
    return UV_ECANCELED;
  s = (submit_t*)weft__uv_op_new(b, sizeof(*s), &submit_ops);
  if (s == NULL)
    return UV_ENOMEM;
  s->fn = fn;
  s->arg = arg;
  s->after_cb = after_cb;
  s->res.close = submit_cancel;
  /* Submissions made in one loop iteration go out in one batch. */
  if (b->batch.rt == NULL)
    weft__batch_open(&b->batch, b->rt);
  err = weft__spawn_embedded(b->rt, &s->job, submit_job, s);
  if (err != 0) {
    free(s);
    return err == -ENOMEM ? UV_ENOMEM : UV_ECANCELED;
  }
  weft__uv_resource_add(b, &s->res);
  return 0;
}
