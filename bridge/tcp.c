/* tcp.c: TCP listeners and connections for fibers. Listening sockets are
 * made here with plain socket(2)/bind(2)/listen(2) and handed to stream.c,
 * which accepts from them itself; connections are libuv uv_tcp_t handles
 * inside weft_uv_stream_t records (see bridge_stream.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bridge_stream.h"

static socklen_t addr_len(const struct sockaddr* addr) {
  if (addr == NULL)
    return 0;
  if (addr->sa_family == AF_INET)
    return sizeof(struct sockaddr_in);
  if (addr->sa_family == AF_INET6)
    return sizeof(struct sockaddr_in6);
  return 0;
}

/* ---- listening -------------------------------------------------------------
 */

static int listen_fn(weft__uv_sop_t* r) {
  const struct sockaddr* addr = (const struct sockaddr*)&r->addr;
  int on = 1;
  int fd;
  int err;

  if (r->op.bridge->closing)
    return UV_ECANCELED;
  fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  /* As uv_tcp_bind does: a restarted server can rebind at once. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
      bind(fd, addr, addr_len(addr)) != 0 ||
      listen(fd, r->backlog > 0 ? r->backlog : SOMAXCONN) != 0) {
    err = uv_translate_sys_error(errno);
    close(fd);
    return err;
  }
  return weft__uv_listener_new(r->op.bridge, WEFT__STREAM_TCP, fd, NULL,
                               r->out);
}

int weft_uv_tcp_listen(const struct sockaddr* addr, int backlog,
                       weft_uv_stream_t** out) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  socklen_t len = addr_len(addr);
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (len == 0 || out == NULL)
    return UV_EINVAL;
  r = weft__uv_sop_new(b, &weft__uv_sync_ops);
  if (r == NULL)
    return UV_ENOMEM;
  memcpy(&r->addr, addr, len);
  r->backlog = backlog;
  r->out = out;
  r->fn = listen_fn;
  return weft__uv_sop_call(r, NULL);
}

int weft_uv_tcp_accept(weft_uv_stream_t* listener, weft_uv_stream_t** out,
                       uint64_t deadline) {
  return weft__uv_stream_accept(listener, WEFT__STREAM_TCP, out, deadline);
}

/* ---- connecting ------------------------------------------------------------
 */

static void connect_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  int err;
  (void)loop;

  err = weft__uv_stream_new(op->bridge, WEFT__STREAM_TCP, &r->s);
  if (err != 0) {
    weft__uv_sop_done(r, err);
    return;
  }
  err = uv_tcp_connect(&r->req.connect, &r->s->h.tcp,
                       (const struct sockaddr*)&r->addr,
                       weft__uv_stream_on_connect);
  if (err != 0) {
    weft__uv_stream_discard(r->s);
    weft__uv_sop_done(r, err);
  }
}

static const weft__uv_ops_t connect_ops = {
    .start = connect_start, .abort = weft__uv_stream_connect_abort};

int weft_uv_tcp_connect(const struct sockaddr* addr, weft_uv_stream_t** out,
                        uint64_t deadline) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  socklen_t len = addr_len(addr);
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (len == 0 || out == NULL)
    return UV_EINVAL;
  r = weft__uv_sop_new(b, &connect_ops);
  if (r == NULL)
    return UV_ENOMEM;
  memcpy(&r->addr, addr, len);
  r->out = out;
  return (int)weft__uv_sop_await(r, NULL, deadline);
}

/* ---- options ---------------------------------------------------------------
 */

static int nodelay_fn(weft__uv_sop_t* r) {
  return uv_tcp_nodelay(&r->s->h.tcp, r->arg);
}

static int keepalive_fn(weft__uv_sop_t* r) {
  return uv_tcp_keepalive(&r->s->h.tcp, r->arg, r->delay);
}

static int option(weft_uv_stream_t* s, int (*fn)(weft__uv_sop_t* r), int on,
                  unsigned delay) {
  weft_uv_t* b;
  weft__uv_sop_t* r;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (s == NULL || s->listener || s->kind != WEFT__STREAM_TCP)
    return UV_EINVAL;
  r = weft__uv_sop_new(s->bridge, &weft__uv_sync_ops);
  if (r == NULL)
    return UV_ENOMEM;
  r->fn = fn;
  r->arg = on != 0;
  r->delay = delay;
  return weft__uv_sop_call(r, s);
}

int weft_uv_tcp_nodelay(weft_uv_stream_t* s, int on) {
  return option(s, nodelay_fn, on, 0);
}

int weft_uv_tcp_keepalive(weft_uv_stream_t* s, int on, unsigned delay) {
  return option(s, keepalive_fn, on, delay);
}
