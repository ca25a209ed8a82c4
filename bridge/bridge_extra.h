/* bridge_extra.h: machinery shared by the UDP and process families (udp.c,
 * process.c): loop-side objects with reference counts, operations that hold
 * a reference to one, and FIFO queues of operations waiting on an object.
 *
 * An object (a socket, a child process) is referenced by its user until
 * the user closes it, by its libuv handles until their close callbacks run,
 * and by every operation on it until the loop side is done with that
 * operation; the last reference frees it, on whichever thread drops it.
 */
#ifndef WEFT_BRIDGE_EXTRA_H_
#define WEFT_BRIDGE_EXTRA_H_

#include <string.h>

#include "bridge.h"

typedef struct weft__uv_obj_s {
  atomic_int refs;
  weft_uv_t* bridge;
  weft__uv_resource_t res; /* registered while open */
  /* Loop thread: wakes the waiters and closes the handles; idempotent.
   * Called by weft__uv_obj_close or the bridge stopping. */
  void (*shutdown)(struct weft__uv_obj_s* obj);
  void (*free)(struct weft__uv_obj_s* obj);
} weft__uv_obj_t;

/* One reference: the user's. Fiber side. */
static inline void weft__uv_obj_init(weft__uv_obj_t* obj, weft_uv_t* b,
                                     void (*shutdown)(weft__uv_obj_t*),
                                     void (*free_fn)(weft__uv_obj_t*)) {
  atomic_init(&obj->refs, 1);
  obj->bridge = b;
  obj->shutdown = shutdown;
  obj->free = free_fn;
}

/* Relaxed: the caller already holds a reference, which orders this
 * increment before any release of it. */
static inline void weft__uv_obj_ref(weft__uv_obj_t* obj) {
  atomic_fetch_add_explicit(&obj->refs, 1, memory_order_relaxed);
}

/* acq_rel pairs with itself: whoever frees sees every write the other
 * owners made before letting go. */
static inline void weft__uv_obj_unref(weft__uv_obj_t* obj) {
  if (atomic_fetch_sub_explicit(&obj->refs, 1, memory_order_acq_rel) == 1)
    obj->free(obj);
}

static inline void weft__uv_obj_res_close(weft__uv_resource_t* res) {
  weft__uv_obj_t* obj =
      (weft__uv_obj_t*)((char*)res - offsetof(weft__uv_obj_t, res));
  obj->shutdown(obj);
}

/* The object is open: the bridge stopping shuts it down. Loop thread. */
static inline void weft__uv_obj_publish(weft__uv_obj_t* obj) {
  obj->res.close = weft__uv_obj_res_close;
  weft__uv_resource_add(obj->bridge, &obj->res);
}

/* The start of a shutdown: no longer the bridge's to close. */
static inline void weft__uv_obj_unpublish(weft__uv_obj_t* obj) {
  weft__uv_resource_remove(obj->bridge, &obj->res);
}

typedef struct weft__uv_objop_s weft__uv_objop_t;

/* Operations waiting on an object, oldest first. Loop thread only. */
typedef struct weft__uv_waitq_s {
  weft__uv_objop_t* head;
  weft__uv_objop_t* tail;
} weft__uv_waitq_t;

/* An operation on an object. Its reference to the object is dropped along
 * with the loop's reference to the operation; if the loop never started
 * the operation (bridge stopped, deadline already past), the fiber drops
 * it instead, which `started` tells it. */
struct weft__uv_objop_s {
  weft__uv_op_t op;
  weft__uv_obj_t* obj;
  int* started;        /* the fiber's flag: set by the loop side's start */
  weft__uv_waitq_t* q; /* the queue it waits in, or NULL */
  weft__uv_objop_t* prev;
  weft__uv_objop_t* next;
};

/* A zeroed operation of `size` bytes (the objop first) holding a reference
 * to `obj`, or NULL. Fiber side. */
static inline void* weft__uv_objop_new(weft_uv_t* b, weft__uv_obj_t* obj,
                                       size_t size, const weft__uv_ops_t* ops) {
  weft__uv_objop_t* o = weft__uv_op_new(b, size, ops);
  if (o == NULL)
    return NULL;
  o->obj = obj;
  weft__uv_obj_ref(obj);
  return o;
}

/* weft__uv_op_await for an objop. Fiber side. */
static inline int64_t weft__uv_objop_await(weft__uv_objop_t* o,
                                           uint64_t deadline) {
  weft__uv_obj_t* obj = o->obj;
  int started = 0;
  int64_t r;

  o->started = &started;
  r = weft__uv_op_await(&o->op, deadline);
  /* Written before the result was delivered, which the wait acquired. */
  if (!started)
    weft__uv_obj_unref(obj);
  return r;
}

/* First thing in every start: the loop side now owns the reference. The
 * fiber is still waiting (nothing finished the op yet), so its flag is
 * alive. */
static inline void weft__uv_objop_begin(weft__uv_objop_t* o) {
  *o->started = 1;
  o->started = NULL;
}

/* The loop side is done with the operation. */
static inline void weft__uv_objop_done(weft__uv_objop_t* o) {
  weft__uv_obj_t* obj = o->obj;
  weft__uv_op_release(&o->op);
  weft__uv_obj_unref(obj);
}

/* Delivers `result` (unless the waiter gave up) and ends the operation. */
static inline void weft__uv_objop_complete(weft__uv_objop_t* o,
                                           int64_t result) {
  weft__uv_op_finish(&o->op, result);
  weft__uv_objop_done(o);
}

static inline void weft__uv_waitq_push(weft__uv_waitq_t* q,
                                       weft__uv_objop_t* o) {
  o->q = q;
  o->next = NULL;
  o->prev = q->tail;
  if (q->tail != NULL)
    q->tail->next = o;
  else
    q->head = o;
  q->tail = o;
}

static inline void weft__uv_waitq_remove(weft__uv_objop_t* o) {
  weft__uv_waitq_t* q = o->q;
  if (q == NULL)
    return;
  if (o->prev != NULL)
    o->prev->next = o->next;
  else
    q->head = o->next;
  if (o->next != NULL)
    o->next->prev = o->prev;
  else
    q->tail = o->prev;
  o->q = NULL;
  o->prev = NULL;
  o->next = NULL;
}

/* The oldest waiter, taken off the queue, or NULL. */
static inline weft__uv_objop_t* weft__uv_waitq_shift(weft__uv_waitq_t* q) {
  weft__uv_objop_t* o = q->head;
  if (o != NULL)
    weft__uv_waitq_remove(o);
  return o;
}

/* Completes every waiter with `result` (the object closed, or its event
 * happened for all). */
static inline void weft__uv_waitq_complete_all(weft__uv_waitq_t* q,
                                               int64_t result) {
  weft__uv_objop_t* o;
  while ((o = weft__uv_waitq_shift(q)) != NULL)
    weft__uv_objop_complete(o, result);
}

/* A bad argument: UV_EINVAL, unless the context is wrong to begin with
 * (UV_EPERM off a fiber). */
static inline int weft__uv_einval(void) {
  weft_uv_t* b;
  int err = weft__uv_current(&b);
  return err != 0 ? err : UV_EINVAL;
}

/* The common start of a call on an object (`obj` NULL: UV_EINVAL): a new
 * operation on it in *out. Returns 0, UV_EPERM, UV_EINVAL, UV_ENOMEM. Fiber
 * side. */
static inline int weft__uv_objop_prepare(weft__uv_obj_t* obj, size_t size,
                                         const weft__uv_ops_t* ops,
                                         void** out) {
  weft_uv_t* b;
  int err = weft__uv_current(&b);

  if (err != 0)
    return err;
  if (obj == NULL)
    return UV_EINVAL;
  *out = weft__uv_objop_new(b, obj, size, ops);
  return *out != NULL ? 0 : UV_ENOMEM;
}

static inline void weft__uv_obj_close_start(weft__uv_op_t* op,
                                            uv_loop_t* loop) {
  weft__uv_objop_t* o = (weft__uv_objop_t*)op;
  (void)loop;
  weft__uv_objop_begin(o);
  o->obj->shutdown(o->obj);
  weft__uv_objop_complete(o, 0);
}

/* Shuts the object down on the loop thread and drops the user's
 * reference. Returns 0 (also when the bridge stopped and shut it down
 * already), or UV_EPERM, UV_EINVAL, UV_ENOMEM, which leave it open. Fiber
 * side. */
static inline int weft__uv_obj_close(weft__uv_obj_t* obj) {
  static const weft__uv_ops_t close_ops = {.start = weft__uv_obj_close_start};
  weft__uv_objop_t* o;
  int err = weft__uv_objop_prepare(obj, sizeof(*o), &close_ops, (void**)&o);

  if (err != 0)
    return err;
  err = (int)weft__uv_objop_await(o, WEFT_UV_FOREVER);
  weft__uv_obj_unref(obj);
  return err == UV_ECANCELED ? 0 : err;
}

/* The abort of an operation that only waits in a queue: no libuv request
 * holds it, so leave the queue and end it here. */
static inline void weft__uv_objop_abort_wait(weft__uv_op_t* op) {
  weft__uv_objop_t* o = (weft__uv_objop_t*)op;
  weft__uv_waitq_remove(o);
  weft__uv_objop_done(o);
}

/* Prepares a handle the bridge opened for a family: its data pointer, and
 * in embedded mode no reference on the host's loop (weft_uv_attach's
 * promise). Loop thread. */
static inline void weft__uv_handle_adopt(weft_uv_t* b, uv_handle_t* h,
                                         void* data) {
  h->data = data;
  if (!b->owned)
    uv_unref(h);
}

/* The size of a socket address of a family weft handles, or 0. */
static inline size_t weft__uv_sockaddr_len(const struct sockaddr* sa) {
  if (sa == NULL)
    return 0;
  if (sa->sa_family == AF_INET)
    return sizeof(struct sockaddr_in);
  if (sa->sa_family == AF_INET6)
    return sizeof(struct sockaddr_in6);
  return 0;
}

/* Copies the string `s` (NULL: none) to *at, the free part of an
 * operation's trailing string area, and advances *at; returns the copy.
 * Operations own what the loop side reads: it may outlive the waiter. */
static inline char* weft__uv_strcpy_at(char** at, const char* s) {
  char* copy = *at;
  size_t n;
  if (s == NULL)
    return NULL;
  n = strlen(s) + 1;
  memcpy(copy, s, n);
  *at += n;
  return copy;
}

#endif /* WEFT_BRIDGE_EXTRA_H_ */
