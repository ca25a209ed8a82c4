/* udp.c: UDP sockets for fibers. The socket's uv_udp_t reads all the time;
 * each datagram goes to the oldest waiting weft_uv_udp_recv, or, when no
 * fiber waits, into a bounded backlog that drops its oldest datagram when
 * full (counted, see weft_uv_udp_dropped). Sends copy their datagram.
 */
#include <stdlib.h>
#include <string.h>

#include "bridge_extra.h"

enum { UDP_NEW = 0, UDP_OPEN, UDP_CLOSED };

/* A datagram kept while no fiber waits. */
typedef struct {
  size_t len;
  struct sockaddr_storage from;
  char data[];
} dgram_t;

struct weft_uv_udp_s {
  weft__uv_obj_t obj; /* first; refs: the user, the handle, each op */
  uv_udp_t handle;
  int state;                     /* loop thread only */
  struct sockaddr_storage local; /* set before bind's result */
  weft__uv_waitq_t readers;
  dgram_t* backlog[WEFT_UV_UDP_BACKLOG]; /* a ring, oldest at first */
  unsigned first;
  unsigned count;
  /* Written by the loop, read by any thread: a statistic, so relaxed. */
  atomic_uint_least64_t dropped;
  char rbuf[64 * 1024]; /* libuv reads each datagram here */
};

typedef struct {
  weft__uv_objop_t o;
  struct sockaddr_storage addr;
  unsigned flags;
} bind_op_t;

typedef struct {
  weft__uv_objop_t o;
  uv_udp_send_t req;
  struct sockaddr_storage to;
  size_t len;
  char data[];
} send_op_t;

typedef struct {
  weft__uv_objop_t o;
  char* buf; /* the fiber's, written only while it waits */
  size_t len;
  struct sockaddr_storage* from;
} recv_op_t;

static weft_uv_udp_t* udp_of(weft__uv_objop_t* o) {
  return (weft_uv_udp_t*)o->obj;
}

static void udp_free(weft__uv_obj_t* obj) {
  free(obj);
}

/* ---- the loop side: receiving ----------------------------------------------
 */

static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) {
  weft_uv_udp_t* u = handle->data;
  (void)suggested;
  *buf = uv_buf_init(u->rbuf, sizeof(u->rbuf));
}

/* Hands a datagram to a waiting fiber (truncated to its buffer). */
static void recv_deliver(recv_op_t* r, const char* data, size_t len,
                         const struct sockaddr* from) {
  size_t n = len < r->len ? len : r->len;

  if (n > 0)
    memcpy(r->buf, data, n);
  if (r->from != NULL) {
    memset(r->from, 0, sizeof(*r->from));
    memcpy(r->from, from, weft__uv_sockaddr_len(from));
  }
  weft__uv_objop_complete(&r->o, (int64_t)n);
}

static void backlog_push(weft_uv_udp_t* u, const char* data, size_t len,
                         const struct sockaddr* from) {
  dgram_t* d = malloc(sizeof(*d) + len);

  if (d == NULL) {
    atomic_fetch_add_explicit(&u->dropped, 1, memory_order_relaxed);
    return;
  }
  d->len = len;
  memset(&d->from, 0, sizeof(d->from));
  memcpy(&d->from, from, weft__uv_sockaddr_len(from));
  memcpy(d->data, data, len);
  if (u->count == WEFT_UV_UDP_BACKLOG) {
    free(u->backlog[u->first]);
    u->first = (u->first + 1) % WEFT_UV_UDP_BACKLOG;
    u->count--;
    atomic_fetch_add_explicit(&u->dropped, 1, memory_order_relaxed);
  }
  u->backlog[(u->first + u->count++) % WEFT_UV_UDP_BACKLOG] = d;
}

static dgram_t* backlog_shift(weft_uv_udp_t* u) {
  dgram_t* d;
  if (u->count == 0)
    return NULL;
  d = u->backlog[u->first];
  u->first = (u->first + 1) % WEFT_UV_UDP_BACKLOG;
  u->count--;
  return d;
}

static void on_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                    const struct sockaddr* addr, unsigned flags) {
  weft_uv_udp_t* u = handle->data;
  weft__uv_objop_t* o;
  (void)flags;

  if (nread == 0 && addr == NULL)
    return; /* the socket is drained */
  o = weft__uv_waitq_shift(&u->readers);
  if (nread < 0) {
    /* A socket error (an ICMP report): the oldest waiter hears it. */
    if (o != NULL)
      weft__uv_objop_complete(o, nread);
    return;
  }
  if (o != NULL)
    recv_deliver((recv_op_t*)o, buf->base, (size_t)nread, addr);
  else
    backlog_push(u, buf->base, (size_t)nread, addr);
}

/* ---- the loop side: opening and closing -------------------------------------
 */

static void udp_closed(uv_handle_t* handle) {
  weft_uv_udp_t* u = handle->data;
  weft__uv_obj_unref(&u->obj);
}

/* Wakes the waiters and closes the handle; the backlog goes with it. */
static void udp_shutdown(weft__uv_obj_t* obj) {
  weft_uv_udp_t* u = (weft_uv_udp_t*)obj;
  dgram_t* d;

  if (u->state != UDP_OPEN)
    return;
  u->state = UDP_CLOSED;
  weft__uv_obj_unpublish(obj);
  weft__uv_waitq_complete_all(&u->readers, UV_ECANCELED);
  while ((d = backlog_shift(u)) != NULL)
    free(d);
  uv_close((uv_handle_t*)&u->handle, udp_closed);
}

static int udp_open(weft_uv_udp_t* u, uv_loop_t* loop,
                    const struct sockaddr* addr, unsigned flags) {
  int n = (int)sizeof(u->local);
  int err = uv_udp_init_ex(loop, &u->handle, addr->sa_family);

  if (err != 0)
    return err;
  weft__uv_obj_ref(&u->obj); /* the handle's, until udp_closed */
  weft__uv_handle_adopt(u->obj.bridge, (uv_handle_t*)&u->handle, u);
  u->state = UDP_OPEN;
  err = uv_udp_bind(&u->handle, addr, flags);
  if (err == 0)
    err = uv_udp_getsockname(&u->handle, (struct sockaddr*)&u->local, &n);
  if (err == 0)
    err = uv_udp_recv_start(&u->handle, on_alloc, on_recv);
  if (err != 0) {
    udp_shutdown(&u->obj);
    return err;
  }
  weft__uv_obj_publish(&u->obj);
  return 0;
}

static void bind_start(weft__uv_op_t* op, uv_loop_t* loop) {
  bind_op_t* bo = (bind_op_t*)op;
  weft__uv_objop_begin(&bo->o);
  weft__uv_objop_complete(
      &bo->o,
      udp_open(udp_of(&bo->o), loop, (struct sockaddr*)&bo->addr, bo->flags));
}

/* ---- the loop side: send and recv -------------------------------------------
 */

static void on_sent(uv_udp_send_t* req, int status) {
  send_op_t* s = req->data;
  weft__uv_objop_complete(&s->o, status == 0 ? (int64_t)s->len : status);
}

static void send_start(weft__uv_op_t* op, uv_loop_t* loop) {
  send_op_t* s = (send_op_t*)op;
  weft_uv_udp_t* u = udp_of(&s->o);
  uv_buf_t buf = uv_buf_init(s->data, (unsigned)s->len);
  int err = UV_EBADF;
  (void)loop;

  weft__uv_objop_begin(&s->o);
  s->req.data = s;
  if (u->state == UDP_OPEN)
    err = uv_udp_send(&s->req, &u->handle, &buf, 1,
                      (const struct sockaddr*)&s->to, on_sent);
  if (err != 0)
    weft__uv_objop_complete(&s->o, err);
}

static void recv_start(weft__uv_op_t* op, uv_loop_t* loop) {
  recv_op_t* r = (recv_op_t*)op;
  weft_uv_udp_t* u = udp_of(&r->o);
  dgram_t* d;
  (void)loop;

  weft__uv_objop_begin(&r->o);
  if (u->state != UDP_OPEN) {
    weft__uv_objop_complete(&r->o, UV_EBADF);
    return;
  }
  d = backlog_shift(u);
  if (d == NULL) {
    weft__uv_waitq_push(&u->readers, &r->o);
    return;
  }
  recv_deliver(r, d->data, d->len, (struct sockaddr*)&d->from);
  free(d);
}

/* A send ends by itself (or when the handle closes): no abort. */
static const weft__uv_ops_t bind_ops = {.start = bind_start};
static const weft__uv_ops_t send_ops = {.start = send_start};
static const weft__uv_ops_t recv_ops = {.start = recv_start,
                                        .abort = weft__uv_objop_abort_wait};

/* ---- the fiber side ---------------------------------------------------------
 */

/* The common start of the calls on an open socket. */
static int udp_op_new(weft_uv_udp_t* u, size_t size, const weft__uv_ops_t* ops,
                      void** out) {
  return weft__uv_objop_prepare((weft__uv_obj_t*)u, size, ops, out);
}

int weft_uv_udp_bind(const struct sockaddr* addr, unsigned flags,
                     weft_uv_udp_t** out) {
  weft_uv_t* b;
  weft_uv_udp_t* u;
  bind_op_t* bo;
  size_t addrlen = weft__uv_sockaddr_len(addr);
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (addrlen == 0 || out == NULL)
    return UV_EINVAL;
  u = calloc(1, sizeof(*u));
  if (u == NULL)
    return UV_ENOMEM;
  weft__uv_obj_init(&u->obj, b, udp_shutdown, udp_free);
  atomic_init(&u->dropped, 0);
  err = udp_op_new(u, sizeof(*bo), &bind_ops, (void**)&bo);
  if (err == 0) {
    memcpy(&bo->addr, addr, addrlen);
    bo->flags = flags;
    err = (int)weft__uv_objop_await(&bo->o, WEFT_UV_FOREVER);
  }
  if (err != 0) {
    weft__uv_obj_unref(&u->obj);
    return err;
  }
  *out = u;
  return 0;
}

int weft_uv_udp_send(weft_uv_udp_t* u, const void* buf, size_t len,
                     const struct sockaddr* to, uint64_t deadline) {
  send_op_t* s;
  size_t tolen = weft__uv_sockaddr_len(to);
  int err;

  if (tolen == 0 || (buf == NULL && len > 0) || len > INT32_MAX)
    return weft__uv_einval();
  err = udp_op_new(u, sizeof(*s) + len, &send_ops, (void**)&s);
  if (err != 0)
    return err;
  memcpy(&s->to, to, tolen);
  if (len > 0)
    memcpy(s->data, buf, len);
  s->len = len;
  return (int)weft__uv_objop_await(&s->o, deadline);
}

int weft_uv_udp_recv(weft_uv_udp_t* u, void* buf, size_t len,
                     struct sockaddr_storage* from, uint64_t deadline) {
  recv_op_t* r;
  int err;

  if ((buf == NULL && len > 0) || len > INT32_MAX)
    return weft__uv_einval();
  err = udp_op_new(u, sizeof(*r), &recv_ops, (void**)&r);
  if (err != 0)
    return err;
  r->buf = buf;
  r->len = len;
  r->from = from;
  return (int)weft__uv_objop_await(&r->o, deadline);
}

int weft_uv_udp_sockname(const weft_uv_udp_t* u,
                         struct sockaddr_storage* name) {
  if (u == NULL || name == NULL)
    return UV_EINVAL;
  memcpy(name, &u->local, sizeof(*name));
  return 0;
}

uint64_t weft_uv_udp_dropped(const weft_uv_udp_t* u) {
  if (u == NULL)
    return 0;
  return atomic_load_explicit(&u->dropped, memory_order_relaxed);
}

int weft_uv_udp_close(weft_uv_udp_t* u) {
  return weft__uv_obj_close((weft__uv_obj_t*)u);
}
