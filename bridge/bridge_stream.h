/* bridge_stream.h: the stream family's private declarations, shared by
 * stream.c (connections, listeners, reads, writes), tcp.c, pipe.c and the
 * process family, which wraps a child's stdio pipes in streams.
 *
 * A weft_uv_stream_t is a loop-side record owning one libuv stream handle
 * (or, for a listener, a uv_poll_t on a socket weft accepts from itself, so
 * it can back off when out of descriptors). It is reference counted: one
 * reference per open libuv handle (dropped in the close callback), one for
 * the caller until weft_uv_stream_close, and one per fiber call in flight,
 * so a record is freed only when libuv, the caller and every waiter are done
 * with it, whichever thread lets go last.
 */
#ifndef WEFT_BRIDGE_STREAM_H_
#define WEFT_BRIDGE_STREAM_H_

#include "bridge.h"

enum { WEFT__STREAM_TCP = 1, WEFT__STREAM_PIPE = 2 };

/* Loop-thread state bits (weft_uv_stream_t.flags). */
enum {
  WEFT__STREAM_READING = 1u,     /* uv_read_start is in effect */
  WEFT__STREAM_CLOSING = 2u,     /* uv_close called: no new requests */
  WEFT__STREAM_PUBLISHED = 4u,   /* the caller owns it; a bridge resource */
  WEFT__STREAM_POLLING = 8u,     /* listener: uv_poll_start in effect */
  WEFT__STREAM_BACKING_OFF = 16u /* listener: accept failed, timer armed */
};

enum { WEFT__WS_FIBER = 1u, WEFT__WS_CLOSED = 2u, WEFT__WS_PENDING = 4u };

typedef struct weft__uv_sop_s weft__uv_sop_t;

/* A FIFO of stream operations waiting on one stream (loop thread only). */
typedef struct weft__uv_sop_queue_s {
  weft__uv_sop_t* head;
  weft__uv_sop_t* tail;
} weft__uv_sop_queue_t;

struct weft_uv_stream_s {
  weft__uv_resource_t res; /* closed by weft_uv_stop */
  weft_uv_t* bridge;
  atomic_int refs;
  /* Set before the caller first sees the stream, then never written:
   * fibers may read them. */
  int kind;     /* WEFT__STREAM_TCP or _PIPE */
  int listener; /* 1 for a listener */
  int fileno_;  /* the descriptor, or -1 */
  int fd_sock;  /* 1 if fileno_ is a socket (send(2) works on it) */
  /* Writes from fibers (see weft_uv_stream_write): WEFT__WS_FIBER while
   * one fiber writes to the descriptor itself or hands the rest of its
   * bytes to the loop, WEFT__WS_CLOSED once the loop closes the stream,
   * and WEFT__WS_PENDING for each write op not yet freed. A fiber writes
   * to the descriptor only when the whole word is 0. */
  atomic_uint wstate;
  /* Everything below: loop thread only. */
  unsigned flags;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_poll_t poll; /* listener */
  } h;
  /* Listener: the socket, the back-off timer, waiting acceptors, and the
   * path to unlink (pipes). */
  uv_timer_t backoff;
  int fd;
  char* path;
  weft__uv_sop_queue_t acceptors;
  /* Connection: the read-ahead ring, its first byte and length; what ends
   * the stream once the ring is drained (UV_EOF or an error); waiting
   * readers and writers. Pending readers only exist while the ring is
   * empty. */
  char* ra;
  size_t ra_head;
  size_t ra_len;
  int read_err;
  weft__uv_sop_t* alloc_reader; /* the reader on_alloc lent its buffer */
  weft__uv_sop_queue_t readers;
  weft__uv_sop_queue_t writers;
};

/* One record for every kind of stream operation; fields by kind. */
struct weft__uv_sop_s {
  weft__uv_op_t op; /* first: the bridge's operation */
  weft_uv_stream_t* s;
  weft__uv_sop_t* next; /* in a stream's queue */
  weft__uv_sop_t* prev;
  weft__uv_sop_queue_t* queue; /* the queue it is in, or NULL */
  /* Set by the fiber before posting; pointers into its memory are used
   * only while the op is live (weft__uv_op_live). */
  weft_uv_stream_t** out;
  char* buf;
  size_t len;
  int (*fn)(weft__uv_sop_t* r); /* sync ops: runs on the loop */
  int arg;
  unsigned delay;
  int backlog;
  uv_file fd;
  const char* name;
  int* addrlen;
  struct sockaddr_storage* addr_out;
  struct sockaddr_storage addr;
  /* Loop side. A write hands the kernel what it takes at once from `buf`;
   * the rest goes in chunks copied to `bounce`, so an abandoned write never
   * leaves libuv pointing into the fiber's memory. */
  size_t done;
  size_t inflight; /* bytes of a uv_write in flight, 0 if none */
  char* bounce;
  size_t bounce_cap;
  union {
    uv_write_t write;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
  } req;
};

/* ---- stream.c ------------------------------------------------------------
 */

/* References (any thread). The last unref frees the record. */
void weft__uv_stream_ref(weft_uv_stream_t* s);
void weft__uv_stream_unref(weft_uv_stream_t* s);

/* weft__uv_stream_new: a connection record of `kind` with its handle
 * uv_tcp_init'ed / uv_pipe_init'ed (ipc 0) on b's loop and holding the
 * handle's reference only: not yet published, not a bridge resource.
 * Returns 0 and *out, or UV_ENOMEM, UV_ECANCELED (the bridge is closing).
 * Loop thread. The process family calls it for each stdio pipe and passes
 * &s->h.pipe to uv_spawn (UV_CREATE_PIPE); then either
 * weft__uv_stream_publish() once the child runs, or
 * weft__uv_stream_discard() if uv_spawn failed. */
int weft__uv_stream_new(weft_uv_t* b, int kind, weft_uv_stream_t** out);

/* weft__uv_stream_publish: hands a connection to a fiber: adds the
 * caller's reference (released by weft_uv_stream_close), registers it as a
 * bridge resource so weft_uv_stop closes its handle, and records its
 * descriptor for weft_uv_stream_fileno. Loop thread; before the fiber sees
 * the pointer (e.g. before weft__uv_op_finish). */
void weft__uv_stream_publish(weft_uv_stream_t* s);

/* weft__uv_stream_discard: closes an unpublished stream's handle; the
 * record is freed by the close callback. Idempotent. Loop thread. */
void weft__uv_stream_discard(weft_uv_stream_t* s);

/* weft__uv_listener_new: wraps a bound, listening, non-blocking socket
 * `fd` (which it then owns) in a published listener whose connections are
 * of `kind`. `path` (may be NULL) is unlinked when the listener closes and
 * is freed then. Returns 0 and *out, or UV_ENOMEM, UV_ECANCELED; on error
 * `fd` is closed and `path` freed. Loop thread. */
int weft__uv_listener_new(weft_uv_t* b, int kind, int fd, char* path,
                          weft_uv_stream_t** out);

/* A stream op of `size` bytes for the ops table; NULL when out of memory.
 * Fiber side. */
weft__uv_sop_t* weft__uv_sop_new(weft_uv_t* b, const weft__uv_ops_t* ops);
/* Posts r and waits for it with a reference on `s` (may be NULL) held
 * meanwhile. Fiber side. */
int64_t weft__uv_sop_await(weft__uv_sop_t* r, weft_uv_stream_t* s,
                           uint64_t deadline);
/* Runs r->fn on the loop thread and returns its result (deadline
 * WEFT_UV_FOREVER). For short synchronous loop-side work. Fiber side. */
int weft__uv_sop_call(weft__uv_sop_t* r, weft_uv_stream_t* s);
/* The ops table of weft__uv_sop_call. */
extern const weft__uv_ops_t weft__uv_sync_ops;
/* Delivers `result` and drops the loop's reference. Loop thread. */
void weft__uv_sop_done(weft__uv_sop_t* r, int64_t result);

/* The connect callback shared by TCP and pipes: publishes r->s into
 * *r->out on success, discards it otherwise. Loop thread. */
void weft__uv_stream_on_connect(uv_connect_t* req, int status);
/* Connect ops' abort: closes the half-made connection. */
void weft__uv_stream_connect_abort(weft__uv_op_t* op);

/* Fiber-side accept for a listener of `kind`. */
int weft__uv_stream_accept(weft_uv_stream_t* l, int kind,
                           weft_uv_stream_t** out, uint64_t deadline);

#endif /* WEFT_BRIDGE_STREAM_H_ */
