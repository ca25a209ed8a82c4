/* pipe.c: Unix domain socket listeners and connections, and pipes wrapped
 * around existing descriptors, for fibers. Connections are libuv uv_pipe_t
 * handles (ipc off) inside weft_uv_stream_t records; listening sockets are
 * made here and accepted from by stream.c (see bridge_stream.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bridge_stream.h"

static int name_ok(const char* name) {
  struct sockaddr_un sun;
  if (name == NULL || name[0] == '\0')
    return UV_EINVAL;
  if (strlen(name) >= sizeof(sun.sun_path))
    return UV_ENAMETOOLONG;
  return 0;
}

/* ---- listening -------------------------------------------------------------
 */

static int listen_fn(weft__uv_sop_t* r) {
  struct sockaddr_un sun;
  char* path;
  int fd;
  int err;

  if (r->op.bridge->closing)
    return UV_ECANCELED;
  /* r->name is the fiber's, which waits while we run. */
  path = strdup(r->name);
  if (path == NULL)
    return UV_ENOMEM;
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    free(path);
    return uv_translate_sys_error(errno);
  }
  if (bind(fd, (struct sockaddr*)&sun, sizeof(sun)) != 0) {
    err = uv_translate_sys_error(errno);
    close(fd);
    free(path); /* not ours to unlink: it existed */
    return err;
  }
  if (listen(fd, r->backlog > 0 ? r->backlog : SOMAXCONN) != 0) {
    err = uv_translate_sys_error(errno);
    close(fd);
    unlink(path);
    free(path);
    return err;
  }
  return weft__uv_listener_new(r->op.bridge, WEFT__STREAM_PIPE, fd, path,
                               r->out);
}

int weft_uv_pipe_listen(const char* name, int backlog, weft_uv_stream_t** out) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (out == NULL)
    return UV_EINVAL;
  err = name_ok(name);
  if (err != 0)
    return err;
  r = weft__uv_sop_new(b, &weft__uv_sync_ops);
  if (r == NULL)
    return UV_ENOMEM;
  r->name = name;
  r->backlog = backlog;
  r->out = out;
  r->fn = listen_fn;
  return weft__uv_sop_call(r, NULL);
}

int weft_uv_pipe_accept(weft_uv_stream_t* listener, weft_uv_stream_t** out,
                        uint64_t deadline) {
  return weft__uv_stream_accept(listener, WEFT__STREAM_PIPE, out, deadline);
}

/* ---- connecting ------------------------------------------------------------
 */

static void connect_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  int err;
  (void)loop;

  err = weft__uv_stream_new(op->bridge, WEFT__STREAM_PIPE, &r->s);
  if (err != 0) {
    weft__uv_sop_done(r, err);
    return;
  }
  /* Errors arrive through the callback; libuv copies the name. */
  uv_pipe_connect(&r->req.connect, &r->s->h.pipe, r->name,
                  weft__uv_stream_on_connect);
}

static const weft__uv_ops_t connect_ops = {
    .start = connect_start, .abort = weft__uv_stream_connect_abort};

int weft_uv_pipe_connect(const char* name, weft_uv_stream_t** out,
                         uint64_t deadline) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (out == NULL)
    return UV_EINVAL;
  err = name_ok(name);
  if (err != 0)
    return err;
  r = weft__uv_sop_new(b, &connect_ops);
  if (r == NULL)
    return UV_ENOMEM;
  r->name = name;
  r->out = out;
  return (int)weft__uv_sop_await(r, NULL, deadline);
}

/* ---- wrapping a descriptor -------------------------------------------------
 */

static int open_fn(weft__uv_sop_t* r) {
  weft_uv_stream_t* s;
  int err = weft__uv_stream_new(r->op.bridge, WEFT__STREAM_PIPE, &s);

  if (err != 0)
    return err;
  err = uv_pipe_open(&s->h.pipe, r->fd);
  if (err != 0) {
    weft__uv_stream_discard(s);
    return err;
  }
  weft__uv_stream_publish(s);
  *r->out = s;
  return 0;
}

int weft_uv_pipe_open(uv_file fd, weft_uv_stream_t** out) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (fd < 0 || out == NULL)
    return UV_EINVAL;
  r = weft__uv_sop_new(b, &weft__uv_sync_ops);
  if (r == NULL)
    return UV_ENOMEM;
  r->fd = fd;
  r->out = out;
  r->fn = open_fn;
  return weft__uv_sop_call(r, NULL);
}
