/* process.c: child processes for fibers. A weft_uv_process_t owns the
 * loop-side uv_process_t; its exit wakes every fiber in
 * weft_uv_process_wait. Stdio pipes are the stream family's connections
 * (bridge_stream.h): created before uv_spawn, handed to the caller as
 * weft_uv_stream_t once the child runs, and closed by the caller.
 */
#include <stdlib.h>
#include <string.h>

#include "bridge_extra.h"
#include "bridge_stream.h"

enum { PROC_NEW = 0, PROC_OPEN, PROC_CLOSED };

struct weft_uv_process_s {
  weft__uv_obj_t obj; /* first; refs: the user, the handle, each op */
  uv_process_t handle;
  int state; /* loop thread only, like everything below but pid, pipes */
  int exited;
  int64_t exit_status;
  int term_signal;
  weft__uv_waitq_t waiters;
  int pid;                    /* set before spawn's result */
  weft_uv_stream_t* pipes[3]; /* set before spawn's result */
};

typedef struct {
  weft__uv_objop_t o;
  const char* file;
  const char* cwd;
  char** args;
  char** env; /* NULL: the parent's */
  weft_uv_stdio_t stdio[3];
  char* ptrs[]; /* args and env, each NULL-terminated; then the strings */
} spawn_op_t;

typedef struct {
  weft__uv_objop_t o;
  int64_t* exit_status; /* the fiber's, written only while it waits */
  int* term_signal;
} wait_op_t;

typedef struct {
  weft__uv_objop_t o;
  int signum;
} kill_op_t;

static weft_uv_process_t* proc_of(weft__uv_objop_t* o) {
  return (weft_uv_process_t*)o->obj;
}

static void proc_free(weft__uv_obj_t* obj) {
  free(obj);
}

/* ---- the loop side ----------------------------------------------------------
 */

static void wait_deliver(wait_op_t* w) {
  weft_uv_process_t* p = proc_of(&w->o);
  if (w->exit_status != NULL)
    *w->exit_status = p->exit_status;
  if (w->term_signal != NULL)
    *w->term_signal = p->term_signal;
  weft__uv_objop_complete(&w->o, 0);
}

static void on_child_exit(uv_process_t* handle, int64_t exit_status,
                          int term_signal) {
  weft_uv_process_t* p = handle->data;
  weft__uv_objop_t* o;

  p->exited = 1;
  p->exit_status = exit_status;
  p->term_signal = term_signal;
  while ((o = weft__uv_waitq_shift(&p->waiters)) != NULL)
    wait_deliver((wait_op_t*)o);
}

static void proc_closed(uv_handle_t* handle) {
  weft_uv_process_t* p = handle->data;
  weft__uv_obj_unref(&p->obj);
}

/* Wakes the waiters and closes the handle. A child still running keeps
 * running, and libuv no longer reaps it. */
static void proc_shutdown(weft__uv_obj_t* obj) {
  weft_uv_process_t* p = (weft_uv_process_t*)obj;

  if (p->state != PROC_OPEN)
    return;
  p->state = PROC_CLOSED;
  weft__uv_obj_unpublish(obj);
  weft__uv_waitq_complete_all(&p->waiters, UV_ECANCELED);
  uv_close((uv_handle_t*)&p->handle, proc_closed);
}

/* Fills libuv's description of fd `i`, making the pipe if asked. */
static int stdio_prepare(weft_uv_process_t* p, weft_uv_stdio_t how, int i,
                         uv_stdio_container_t* c) {
  int err;

  memset(c, 0, sizeof(*c));
  if (how == WEFT_UV_STDIO_INHERIT) {
    c->flags = UV_INHERIT_FD;
    c->data.fd = i;
    return 0;
  }
  if (how == WEFT_UV_STDIO_IGNORE) {
    c->flags = UV_IGNORE;
    return 0;
  }
  err = weft__uv_stream_new(p->obj.bridge, WEFT__STREAM_PIPE, &p->pipes[i]);
  if (err != 0)
    return err;
  /* Readable and writable from the child's side. */
  c->flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
  c->data.stream = &p->pipes[i]->h.stream;
  return 0;
}

static void pipes_discard(weft_uv_process_t* p) {
  int i;
  for (i = 0; i < 3; i++) {
    if (p->pipes[i] != NULL)
      weft__uv_stream_discard(p->pipes[i]);
    p->pipes[i] = NULL;
  }
}

static int proc_spawn(weft_uv_process_t* p, uv_loop_t* loop, spawn_op_t* s) {
  uv_process_options_t opt;
  uv_stdio_container_t stdio[3];
  int err = 0;
  int i;

  for (i = 0; i < 3 && err == 0; i++)
    err = stdio_prepare(p, s->stdio[i], i, &stdio[i]);
  if (err != 0) {
    pipes_discard(p);
    return err;
  }
  memset(&opt, 0, sizeof(opt));
  opt.exit_cb = on_child_exit;
  opt.file = s->file;
  opt.args = s->args;
  opt.env = s->env;
  opt.cwd = s->cwd;
  opt.stdio_count = 3;
  opt.stdio = stdio;
  err = uv_spawn(loop, &p->handle, &opt);
  /* uv_spawn initialises the handle even when it fails: close it. */
  weft__uv_obj_ref(&p->obj); /* the handle's, until proc_closed */
  weft__uv_handle_adopt(p->obj.bridge, (uv_handle_t*)&p->handle, p);
  if (err != 0) {
    uv_close((uv_handle_t*)&p->handle, proc_closed);
    pipes_discard(p);
    return err;
  }
  p->state = PROC_OPEN;
  p->pid = p->handle.pid;
  for (i = 0; i < 3; i++) {
    if (p->pipes[i] != NULL)
      weft__uv_stream_publish(p->pipes[i]);
  }
  weft__uv_obj_publish(&p->obj);
  return 0;
}

static void spawn_start(weft__uv_op_t* op, uv_loop_t* loop) {
  spawn_op_t* s = (spawn_op_t*)op;
  weft__uv_objop_begin(&s->o);
  weft__uv_objop_complete(&s->o, proc_spawn(proc_of(&s->o), loop, s));
}

static void wait_start(weft__uv_op_t* op, uv_loop_t* loop) {
  wait_op_t* w = (wait_op_t*)op;
  weft_uv_process_t* p = proc_of(&w->o);
  (void)loop;

  weft__uv_objop_begin(&w->o);
  if (p->exited)
    wait_deliver(w);
  else if (p->state != PROC_OPEN)
    weft__uv_objop_complete(&w->o, UV_EBADF);
  else
    weft__uv_waitq_push(&p->waiters, &w->o);
}

static void kill_start(weft__uv_op_t* op, uv_loop_t* loop) {
  kill_op_t* k = (kill_op_t*)op;
  weft_uv_process_t* p = proc_of(&k->o);
  int err = UV_ESRCH;
  (void)loop;

  weft__uv_objop_begin(&k->o);
  /* Never signal a pid that may have been reused. */
  if (p->state == PROC_OPEN && !p->exited)
    err = uv_process_kill(&p->handle, k->signum);
  weft__uv_objop_complete(&k->o, err);
}

static const weft__uv_ops_t spawn_ops = {.start = spawn_start};
static const weft__uv_ops_t wait_ops = {.start = wait_start,
                                        .abort = weft__uv_objop_abort_wait};
static const weft__uv_ops_t kill_ops = {.start = kill_start};

/* ---- the fiber side ---------------------------------------------------------
 */

/* The number of strings in a NULL-terminated vector (NULL: none), and
 * their bytes with terminators added to *bytes. */
static size_t vec_size(const char** v, size_t* bytes) {
  size_t n = 0;
  for (; v != NULL && v[n] != NULL; n++)
    *bytes += strlen(v[n]) + 1;
  return n;
}

static char** vec_copy(char** dst, const char** v, size_t n, char** at) {
  size_t i;
  for (i = 0; i < n; i++)
    dst[i] = weft__uv_strcpy_at(at, v[i]);
  dst[n] = NULL;
  return dst;
}

static int options_valid(const weft_uv_process_options_t* opts) {
  int i;
  if (opts == NULL || opts->file == NULL)
    return 0;
  for (i = 0; i < 3; i++) {
    if (opts->stdio[i] != WEFT_UV_STDIO_INHERIT &&
        opts->stdio[i] != WEFT_UV_STDIO_IGNORE &&
        opts->stdio[i] != WEFT_UV_STDIO_PIPE)
      return 0;
  }
  return 1;
}

/* A spawn operation holding a deep copy of opts. */
static spawn_op_t* spawn_op_new(weft_uv_t* b, weft_uv_process_t* p,
                                const weft_uv_process_options_t* opts) {
  const char* def_args[2] = {opts->file, NULL};
  const char** args = opts->args != NULL ? opts->args : def_args;
  size_t bytes = strlen(opts->file) + 1;
  size_t nargs = vec_size(args, &bytes);
  size_t nenv = vec_size(opts->env, &bytes);
  size_t nptrs = nargs + 1 + (opts->env != NULL ? nenv + 1 : 0);
  spawn_op_t* s;
  char* at;

  bytes += opts->cwd != NULL ? strlen(opts->cwd) + 1 : 0;
  s = weft__uv_objop_new(b, &p->obj, sizeof(*s) + nptrs * sizeof(char*) + bytes,
                         &spawn_ops);
  if (s == NULL)
    return NULL;
  at = (char*)(s->ptrs + nptrs);
  s->file = weft__uv_strcpy_at(&at, opts->file);
  s->cwd = weft__uv_strcpy_at(&at, opts->cwd);
  s->args = vec_copy(s->ptrs, args, nargs, &at);
  if (opts->env != NULL)
    s->env = vec_copy(s->ptrs + nargs + 1, opts->env, nenv, &at);
  memcpy(s->stdio, opts->stdio, sizeof(s->stdio));
  return s;
}

int weft_uv_spawn(const weft_uv_process_options_t* opts,
                  weft_uv_process_t** out) {
  weft_uv_t* b;
  weft_uv_process_t* p;
  spawn_op_t* s;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (!options_valid(opts) || out == NULL)
    return UV_EINVAL;
  *out = NULL;
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return UV_ENOMEM;
  weft__uv_obj_init(&p->obj, b, proc_shutdown, proc_free);
  s = spawn_op_new(b, p, opts);
  err =
      s != NULL ? (int)weft__uv_objop_await(&s->o, WEFT_UV_FOREVER) : UV_ENOMEM;
  if (err != 0) {
    weft__uv_obj_unref(&p->obj);
    return err;
  }
  *out = p;
  return 0;
}

/* The common start of the calls on a spawned process. */
static int proc_op_new(weft_uv_process_t* p, size_t size,
                       const weft__uv_ops_t* ops, void** out) {
  return weft__uv_objop_prepare((weft__uv_obj_t*)p, size, ops, out);
}

int weft_uv_process_wait(weft_uv_process_t* p, int64_t* exit_status,
                         int* term_signal, uint64_t deadline) {
  wait_op_t* w;
  int err = proc_op_new(p, sizeof(*w), &wait_ops, (void**)&w);

  if (err != 0)
    return err;
  w->exit_status = exit_status;
  w->term_signal = term_signal;
  return (int)weft__uv_objop_await(&w->o, deadline);
}

int weft_uv_process_kill(weft_uv_process_t* p, int signum) {
  kill_op_t* k;
  int err = proc_op_new(p, sizeof(*k), &kill_ops, (void**)&k);

  if (err != 0)
    return err;
  k->signum = signum;
  return (int)weft__uv_objop_await(&k->o, WEFT_UV_FOREVER);
}

int weft_uv_process_pid(const weft_uv_process_t* p) {
  return p != NULL ? p->pid : UV_EINVAL;
}

weft_uv_stream_t* weft_uv_process_stdio(const weft_uv_process_t* p, int fd) {
  if (p == NULL || fd < 0 || fd > 2)
    return NULL;
  return p->pipes[fd];
}

int weft_uv_process_close(weft_uv_process_t* p) {
  return weft__uv_obj_close((weft__uv_obj_t*)p);
}
