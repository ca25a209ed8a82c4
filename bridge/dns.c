/* dns.c: weft_uv_getaddrinfo and weft_uv_getnameinfo, libuv's threadpool
 * resolvers awaited from a fiber. An abandoned lookup is uv_cancel'd if it
 * is still queued; one already running finishes on the threadpool and its
 * result is dropped (and freed).
 */
#include <stdlib.h>
#include <string.h>

#include "bridge_extra.h"

/* What both lookups share: the request to cancel when the waiter gives
 * up. */
typedef struct {
  weft__uv_op_t op;
  uv_req_t* req;
} dns_op_t;

static void dns_abort(weft__uv_op_t* op) {
  /* Fails harmlessly once the lookup runs; its callback still comes. */
  uv_cancel(((dns_op_t*)op)->req);
}

static void dns_end(dns_op_t* d, int result) {
  weft__uv_op_finish(&d->op, result);
  weft__uv_op_release(&d->op);
}

/* ---- getaddrinfo ---------------------------------------------------------
 */

typedef struct {
  dns_op_t base;
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  int has_hints;
  struct addrinfo** res; /* the fiber's, written only while it waits */
  const char* node;      /* NULL, or into strings */
  const char* service;
  char strings[];
} gai_op_t;

static void on_getaddrinfo(uv_getaddrinfo_t* req, int status,
                           struct addrinfo* res) {
  gai_op_t* g = req->data;

  if (status == 0 && weft__uv_op_live(&g->base.op))
    *g->res = res;
  else if (res != NULL)
    uv_freeaddrinfo(res);
  dns_end(&g->base, status);
}

static void gai_start(weft__uv_op_t* op, uv_loop_t* loop) {
  gai_op_t* g = (gai_op_t*)op;
  int err;

  g->req.data = g;
  g->base.req = (uv_req_t*)&g->req;
  err = uv_getaddrinfo(loop, &g->req, on_getaddrinfo, g->node, g->service,
                       g->has_hints ? &g->hints : NULL);
  if (err != 0)
    dns_end(&g->base, err);
}

static const weft__uv_ops_t gai_ops = {.start = gai_start, .abort = dns_abort};

int weft_uv_getaddrinfo(const char* node, const char* service,
                        const struct addrinfo* hints, struct addrinfo** res,
                        uint64_t deadline) {
  weft_uv_t* b;
  gai_op_t* g;
  char* at;
  size_t n = 0;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (res == NULL || (node == NULL && service == NULL))
    return UV_EINVAL;
  *res = NULL;
  n += node != NULL ? strlen(node) + 1 : 0;
  n += service != NULL ? strlen(service) + 1 : 0;
  g = weft__uv_op_new(b, sizeof(*g) + n, &gai_ops);
  if (g == NULL)
    return UV_ENOMEM;
  at = g->strings;
  g->node = weft__uv_strcpy_at(&at, node);
  g->service = weft__uv_strcpy_at(&at, service);
  g->res = res;
  if (hints != NULL) {
    /* Only the four fields getaddrinfo reads from hints. */
    g->has_hints = 1;
    g->hints.ai_flags = hints->ai_flags;
    g->hints.ai_family = hints->ai_family;
    g->hints.ai_socktype = hints->ai_socktype;
    g->hints.ai_protocol = hints->ai_protocol;
  }
  return (int)weft__uv_op_await(&g->base.op, deadline);
}

void weft_uv_freeaddrinfo(struct addrinfo* ai) {
  uv_freeaddrinfo(ai);
}

/* ---- getnameinfo ---------------------------------------------------------
 */

typedef struct {
  dns_op_t base;
  uv_getnameinfo_t req;
  struct sockaddr_storage addr;
  int flags;
  char* host; /* the fiber's buffers, written only while it waits */
  size_t hostlen;
  char* service;
  size_t servlen;
} gni_op_t;

/* Copies a result string into a caller's buffer (NULL: not wanted). */
static int copy_out(char* dst, size_t cap, const char* src) {
  size_t n;
  if (dst == NULL)
    return 0;
  n = strlen(src) + 1;
  if (n > cap)
    return UV_ENOSPC;
  memcpy(dst, src, n);
  return 0;
}

static void on_getnameinfo(uv_getnameinfo_t* req, int status,
                           const char* hostname, const char* service) {
  gni_op_t* g = req->data;

  if (status == 0 && weft__uv_op_live(&g->base.op)) {
    status = copy_out(g->host, g->hostlen, hostname);
    if (status == 0)
      status = copy_out(g->service, g->servlen, service);
  }
  dns_end(&g->base, status);
}

static void gni_start(weft__uv_op_t* op, uv_loop_t* loop) {
  gni_op_t* g = (gni_op_t*)op;
  int err;

  g->req.data = g;
  g->base.req = (uv_req_t*)&g->req;
  err = uv_getnameinfo(loop, &g->req, on_getnameinfo,
                       (const struct sockaddr*)&g->addr, g->flags);
  if (err != 0)
    dns_end(&g->base, err);
}

static const weft__uv_ops_t gni_ops = {.start = gni_start, .abort = dns_abort};

int weft_uv_getnameinfo(const struct sockaddr* addr, int flags, char* host,
                        size_t hostlen, char* service, size_t servlen,
                        uint64_t deadline) {
  weft_uv_t* b;
  gni_op_t* g;
  size_t addrlen = weft__uv_sockaddr_len(addr);
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (addrlen == 0 || (host == NULL && service == NULL) ||
      (host != NULL && hostlen == 0) || (service != NULL && servlen == 0))
    return UV_EINVAL;
  g = weft__uv_op_new(b, sizeof(*g), &gni_ops);
  if (g == NULL)
    return UV_ENOMEM;
  memcpy(&g->addr, addr, addrlen);
  g->flags = flags;
  g->host = host;
  g->hostlen = hostlen;
  g->service = service;
  g->servlen = servlen;
  return (int)weft__uv_op_await(&g->base.op, deadline);
}
