/* stream.c: what TCP connections, pipes and Unix domain sockets share: the
 * stream record and its references, the bounded read-ahead buffer with
 * backpressure, the reader and writer queues, shutdown, close, and
 * listeners that accept(2) for themselves so they can back off on EMFILE.
 * tcp.c and pipe.c only create the sockets; see bridge_stream.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bridge_stream.h"

/* How long a listener waits before retrying accept(2) after running out of
 * descriptors or memory. */
#define BACKOFF_MS 10

/* ---- references and lifetime ---------------------------------------------
 */

void weft__uv_stream_ref(weft_uv_stream_t* s) {
  /* Relaxed: a reference is only ever taken from one already held. */
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void weft__uv_stream_unref(weft_uv_stream_t* s) {
  /* acq_rel pairs with itself: whoever frees sees every other owner's
   * writes (the loop's ring, a fiber's last use) made before its unref. */
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
    free(s->ra);
    free(s->path);
    free(s);
  }
}

static void on_handle_closed(uv_handle_t* h) {
  weft__uv_stream_unref(h->data);
}

static weft_uv_stream_t* stream_alloc(weft_uv_t* b, int kind) {
  weft_uv_stream_t* s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->bridge = b;
  s->kind = kind;
  s->fd = -1;
  s->fileno_ = -1;
  atomic_init(&s->refs, 0);
  atomic_init(&s->wstate, 0);
  return s;
}

int weft__uv_stream_new(weft_uv_t* b, int kind, weft_uv_stream_t** out) {
  weft_uv_stream_t* s;

  if (b->closing)
    return UV_ECANCELED;
  s = stream_alloc(b, kind);
  if (s == NULL)
    return UV_ENOMEM;
  /* Neither init can fail for these arguments on Unix. */
  if (kind == WEFT__STREAM_TCP)
    uv_tcp_init(b->loop, &s->h.tcp);
  else
    uv_pipe_init(b->loop, &s->h.pipe, 0);
  s->h.handle.data = s;
  atomic_store_explicit(&s->refs, 1, memory_order_relaxed);
  *out = s;
  return 0;
}

static void stream_res_close(weft__uv_resource_t* res);

void weft__uv_stream_publish(weft_uv_stream_t* s) {
  uv_os_fd_t fd;

  if (!s->listener && uv_fileno(&s->h.handle, &fd) == 0) {
    int type;
    socklen_t n = sizeof(type);
    s->fileno_ = fd;
    s->fd_sock = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) == 0;
  }
  s->flags |= WEFT__STREAM_PUBLISHED;
  s->res.close = stream_res_close;
  weft__uv_resource_add(s->bridge, &s->res);
  weft__uv_stream_ref(s); /* the caller's */
}

void weft__uv_stream_discard(weft_uv_stream_t* s) {
  if (s->flags & WEFT__STREAM_CLOSING)
    return;
  s->flags |= WEFT__STREAM_CLOSING;
  uv_close(&s->h.handle, on_handle_closed);
}

/* ---- stream ops and their queues ------------------------------------------
 */

static void queue_push(weft__uv_sop_queue_t* q, weft__uv_sop_t* r) {
  r->queue = q;
  r->next = NULL;
  r->prev = q->tail;
  if (q->tail != NULL)
    q->tail->next = r;
  else
    q->head = r;
  q->tail = r;
}

static void queue_remove(weft__uv_sop_t* r) {
  weft__uv_sop_queue_t* q = r->queue;
  if (q == NULL)
    return;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    q->head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  else
    q->tail = r->prev;
  r->next = NULL;
  r->prev = NULL;
  r->queue = NULL;
}

weft__uv_sop_t* weft__uv_sop_new(weft_uv_t* b, const weft__uv_ops_t* ops) {
  return weft__uv_op_new(b, sizeof(weft__uv_sop_t), ops);
}

int64_t weft__uv_sop_await(weft__uv_sop_t* r, weft_uv_stream_t* s,
                           uint64_t deadline) {
  int64_t result;

  /* Our reference keeps the record alive until the loop has started the
   * op, even if another fiber closes the stream meanwhile. */
  if (s != NULL)
    weft__uv_stream_ref(s);
  r->s = s;
  result = weft__uv_op_await(&r->op, deadline);
  if (s != NULL)
    weft__uv_stream_unref(s);
  return result;
}

void weft__uv_sop_done(weft__uv_sop_t* r, int64_t result) {
  weft__uv_op_finish(&r->op, result);
  weft__uv_op_release(&r->op);
}

static void sync_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  (void)loop;
  if (r->s != NULL && (r->s->flags & WEFT__STREAM_CLOSING))
    weft__uv_sop_done(r, UV_ECANCELED);
  else
    weft__uv_sop_done(r, r->fn(r));
}

const weft__uv_ops_t weft__uv_sync_ops = {.start = sync_start};

int weft__uv_sop_call(weft__uv_sop_t* r, weft_uv_stream_t* s) {
  return (int)weft__uv_sop_await(r, s, WEFT_UV_FOREVER);
}

/* Fiber side: the bridge to post to, or UV_EPERM / UV_EINVAL. */
static int stream_bridge(weft_uv_stream_t* s, weft_uv_t** b) {
  int err = weft__uv_current(b);
  if (err != 0)
    return err;
  if (s == NULL)
    return UV_EINVAL;
  *b = s->bridge;
  return 0;
}

/* The common start of a call on a stream: the bridge (UV_EPERM off a
 * fiber, UV_EINVAL for a NULL stream), then UV_EINVAL for `bad` arguments
 * or for a listener where a connection is needed, then a new op. */
static int stream_op(weft_uv_stream_t* s, bool bad, bool conn_only,
                     const weft__uv_ops_t* ops, weft__uv_sop_t** out) {
  weft_uv_t* b;
  int err = stream_bridge(s, &b);

  if (err != 0)
    return err;
  if (bad || (conn_only && s->listener))
    return UV_EINVAL;
  *out = weft__uv_sop_new(b, ops);
  return *out == NULL ? UV_ENOMEM : 0;
}

/* ---- closing ---------------------------------------------------------------
 */

static void on_listener_closed(uv_handle_t* h) {
  weft_uv_stream_t* s = h->data;
  close(s->fd);
  if (s->path != NULL)
    unlink(s->path);
  weft__uv_stream_unref(s);
}

/* Fails every waiter with `err`. A write whose chunk libuv still holds
 * keeps the loop's reference until its callback. */
static void stream_fail_all(weft_uv_stream_t* s, int err) {
  weft__uv_sop_t* r;

  while ((r = s->readers.head) != NULL) {
    queue_remove(r);
    weft__uv_sop_done(r, err);
  }
  while ((r = s->acceptors.head) != NULL) {
    queue_remove(r);
    weft__uv_sop_done(r, err);
  }
  while ((r = s->writers.head) != NULL) {
    queue_remove(r);
    weft__uv_op_finish(&r->op, err);
    if (r->inflight == 0) {
      free(r->bounce);
      weft__uv_op_release(&r->op);
    }
  }
}

/* Loop thread: closes a published stream (caller's close or bridge stop). */
static void stream_close(weft_uv_stream_t* s) {
  if (s->flags & WEFT__STREAM_CLOSING)
    return;
  s->flags |= WEFT__STREAM_CLOSING;
  weft__uv_resource_remove(s->bridge, &s->res);
  stream_fail_all(s, UV_ECANCELED);
  if (!s->listener) {
    /* Keep fibers off the descriptor from now on (their writes take the
     * loop's path and get UV_ECANCELED), and wait out a fiber caught
     * inside its send(2), which cannot block, before uv_close closes the
     * descriptor under it. Acquire pairs with the writer's release. */
    unsigned st = atomic_fetch_or_explicit(&s->wstate, WEFT__WS_CLOSED,
                                           memory_order_acquire);
    while (st & WEFT__WS_FIBER) {
      uv_sleep(0);
      st = atomic_load_explicit(&s->wstate, memory_order_acquire);
    }
  }
  if (s->listener) {
    uv_close((uv_handle_t*)&s->backoff, on_handle_closed);
    uv_close(&s->h.handle, on_listener_closed);
  } else {
    uv_close(&s->h.handle, on_handle_closed);
  }
}

static void stream_res_close(weft__uv_resource_t* res) {
  stream_close(
      (weft_uv_stream_t*)((char*)res - offsetof(weft_uv_stream_t, res)));
}

static void close_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  weft_uv_stream_t* s = r->s;
  (void)loop;
  stream_close(s);
  weft__uv_stream_unref(s); /* the op's */
  weft__uv_sop_done(r, 0);
}

static const weft__uv_ops_t close_ops = {.start = close_start};

int weft_uv_stream_close(weft_uv_stream_t* s) {
  weft__uv_sop_t* r;

  if (s == NULL)
    return UV_EINVAL;
  r = weft__uv_sop_new(s->bridge, &close_ops);
  if (r == NULL)
    return UV_ENOMEM;
  /* Nobody waits: one op reference (the loop's), and the op holds a
   * stream reference until the loop has closed it. */
  atomic_store_explicit(&r->op.refs, 1, memory_order_relaxed);
  weft__uv_stream_ref(s);
  r->s = s;
  if (!weft__uv_op_post(s->bridge, &r->op)) {
    /* Stopped: the bridge closed the handle already. */
    weft__uv_stream_unref(s);
    free(r);
  }
  weft__uv_stream_unref(s); /* the caller's */
  return 0;
}

/* ---- reading ---------------------------------------------------------------
 */

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
static void on_read(uv_stream_t* h, ssize_t n, const uv_buf_t* buf);

static void reading_start(weft_uv_stream_t* s) {
  int err;
  if (s->flags & (WEFT__STREAM_READING | WEFT__STREAM_CLOSING))
    return;
  if (s->read_err != 0 || s->ra_len == WEFT_UV_READ_AHEAD)
    return;
  err = uv_read_start(&s->h.stream, on_alloc, on_read);
  if (err != 0)
    s->read_err = err;
  else
    s->flags |= WEFT__STREAM_READING;
}

static void reading_stop(weft_uv_stream_t* s) {
  if (s->flags & WEFT__STREAM_READING) {
    uv_read_stop(&s->h.stream);
    s->flags &= ~WEFT__STREAM_READING;
  }
}

/* Copies up to len buffered bytes out of the ring. */
static size_t ra_take(weft_uv_stream_t* s, char* dst, size_t len) {
  size_t n = len < s->ra_len ? len : s->ra_len;
  size_t first = WEFT_UV_READ_AHEAD - s->ra_head;

  if (first > n)
    first = n;
  memcpy(dst, s->ra + s->ra_head, first);
  memcpy(dst + first, s->ra, n - first);
  s->ra_head = (s->ra_head + n) % WEFT_UV_READ_AHEAD;
  s->ra_len -= n;
  if (s->ra_len == 0)
    s->ra_head = 0; /* one contiguous free run for the next read */
  return n;
}

static int64_t read_end_result(weft_uv_stream_t* s) {
  return s->read_err == UV_EOF ? 0 : s->read_err;
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  weft_uv_stream_t* s = h->data;
  weft__uv_sop_t* r = s->readers.head;
  size_t tail;
  (void)suggested;

  if (r != NULL) {
    /* A fiber waits (so the ring is empty): read straight into its
     * buffer. It cannot give up before on_read, which runs next. */
    s->alloc_reader = r;
    buf->base = r->buf;
    buf->len = r->len;
    return;
  }
  s->alloc_reader = NULL;
  if (s->ra == NULL) {
    s->ra = malloc(WEFT_UV_READ_AHEAD);
    if (s->ra == NULL) {
      *buf = uv_buf_init(NULL, 0); /* on_read gets UV_ENOBUFS */
      return;
    }
  }
  tail = (s->ra_head + s->ra_len) % WEFT_UV_READ_AHEAD;
  buf->base = s->ra + tail;
  buf->len = tail < s->ra_head || (tail == s->ra_head && s->ra_len != 0)
                 ? s->ra_head - tail
                 : WEFT_UV_READ_AHEAD - tail;
}

static void on_read(uv_stream_t* h, ssize_t n, const uv_buf_t* buf) {
  weft_uv_stream_t* s = h->data;
  weft__uv_sop_t* r = s->alloc_reader;
  (void)buf;

  s->alloc_reader = NULL;
  if (n > 0) {
    if (r != NULL) {
      queue_remove(r);
      weft__uv_sop_done(r, n);
      return;
    }
    s->ra_len += (size_t)n;
    if (s->ra_len == WEFT_UV_READ_AHEAD)
      reading_stop(s); /* backpressure: the kernel buffers the rest */
    return;
  }
  if (n == 0)
    return; /* EAGAIN */
  s->read_err = (int)n;
  reading_stop(s);
  while ((r = s->readers.head) != NULL) {
    queue_remove(r);
    weft__uv_sop_done(r, read_end_result(s));
  }
}

static void read_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  weft_uv_stream_t* s = r->s;
  (void)loop;

  if (s->flags & WEFT__STREAM_CLOSING) {
    weft__uv_sop_done(r, UV_ECANCELED);
    return;
  }
  if (s->ra_len > 0) {
    size_t n = ra_take(s, r->buf, r->len);
    reading_start(s); /* there is room again */
    weft__uv_sop_done(r, (int64_t)n);
    return;
  }
  if (s->read_err != 0) {
    weft__uv_sop_done(r, read_end_result(s));
    return;
  }
  queue_push(&s->readers, r);
  reading_start(s);
  if (s->read_err != 0) { /* uv_read_start failed */
    queue_remove(r);
    weft__uv_sop_done(r, s->read_err);
  }
}

static void read_abort(weft__uv_op_t* op) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  queue_remove(r);
  weft__uv_op_release(op);
}

static const weft__uv_ops_t read_ops = {.start = read_start,
                                        .abort = read_abort};

int64_t weft_uv_stream_read(weft_uv_stream_t* s, void* buf, size_t len,
                            uint64_t deadline) {
  weft__uv_sop_t* r;
  int err = stream_op(s, buf == NULL || len == 0, true, &read_ops, &r);

  if (err != 0)
    return err;
  r->buf = buf;
  r->len = len;
  return weft__uv_sop_await(r, s, deadline);
}

/* ---- writing ---------------------------------------------------------------
 */

static void write_pump(weft__uv_sop_t* w);

static void write_next(weft_uv_stream_t* s) {
  weft__uv_sop_t* w = s->writers.head;
  if (w != NULL && w->inflight == 0 && !s->bridge->closing)
    write_pump(w);
}

/* The head writer is done (live): deliver, then start the next. */
static void write_end(weft__uv_sop_t* w, int64_t result) {
  weft_uv_stream_t* s = w->s;
  queue_remove(w);
  free(w->bounce);
  w->bounce = NULL;
  weft__uv_sop_done(w, result);
  write_next(s);
}

static void on_write(uv_write_t* req, int status) {
  weft__uv_sop_t* w =
      (weft__uv_sop_t*)((char*)req - offsetof(weft__uv_sop_t, req.write));

  if (status == 0)
    w->done += w->inflight;
  w->inflight = 0;
  if (!weft__uv_op_live(&w->op)) {
    /* Abandoned (and already out of the queue): only memory is left. */
    free(w->bounce);
    weft__uv_op_release(&w->op);
    return;
  }
  if (status < 0)
    write_end(w, status);
  else
    write_pump(w);
}

/* Loop thread, w live at the head of its queue with nothing in flight:
 * give the kernel what it takes now, queue one copied chunk otherwise. */
static void write_pump(weft__uv_sop_t* w) {
  weft_uv_stream_t* s = w->s;
  uv_buf_t b;
  size_t chunk;
  int r;

  while (w->done < w->len) {
    chunk = w->len - w->done;
    if (chunk > (size_t)1 << 30)
      chunk = (size_t)1 << 30;
    b = uv_buf_init(w->buf + w->done, (unsigned)chunk);
    r = uv_try_write(&s->h.stream, &b, 1);
    if (r > 0) {
      w->done += (size_t)r;
      continue;
    }
    if (r != UV_EAGAIN && r != UV_ENOSYS) {
      write_end(w, r);
      return;
    }
    break;
  }
  if (w->done == w->len) {
    write_end(w, (int64_t)w->len);
    return;
  }
  chunk = w->len - w->done;
  if (chunk > WEFT_UV_WRITE_CHUNK)
    chunk = WEFT_UV_WRITE_CHUNK;
  if (w->bounce == NULL) {
    w->bounce = malloc(chunk);
    if (w->bounce == NULL) {
      write_end(w, UV_ENOMEM);
      return;
    }
    w->bounce_cap = chunk;
  }
  if (chunk > w->bounce_cap)
    chunk = w->bounce_cap; /* the remainder only shrinks; never reached */
  memcpy(w->bounce, w->buf + w->done, chunk);
  b = uv_buf_init(w->bounce, (unsigned)chunk);
  r = uv_write(&w->req.write, &s->h.stream, &b, 1, on_write);
  if (r != 0) {
    write_end(w, r);
    return;
  }
  w->inflight = chunk;
}

static void write_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* w = (weft__uv_sop_t*)op;
  weft_uv_stream_t* s = w->s;
  (void)loop;

  if (s->flags & WEFT__STREAM_CLOSING) {
    weft__uv_sop_done(w, UV_ECANCELED);
    return;
  }
  queue_push(&s->writers, w);
  if (s->writers.head == w)
    write_pump(w);
}

static void write_abort(weft__uv_op_t* op) {
  weft__uv_sop_t* w = (weft__uv_sop_t*)op;
  weft_uv_stream_t* s = w->s;
  int was_head = s->writers.head == w;

  queue_remove(w);
  if (w->inflight == 0) {
    free(w->bounce);
    weft__uv_op_release(op);
  }
  /* The next writer's bytes queue behind any chunk still in flight. */
  if (was_head)
    write_next(s);
}

/* A write op is freed once both the fiber and libuv are done with it: only
 * then may a fiber write to the descriptor itself again. */
static void write_free(weft__uv_op_t* op) {
  weft__uv_sop_t* w = (weft__uv_sop_t*)op;
  /* Release pairs with the acquire CAS in weft_uv_stream_write: a fiber
   * that writes next comes after every byte libuv wrote for us. */
  atomic_fetch_sub_explicit(&w->s->wstate, WEFT__WS_PENDING,
                            memory_order_release);
  free(op);
}

static const weft__uv_ops_t write_ops = {
    .start = write_start, .abort = write_abort, .free = write_free};

/* Fiber side, holding WEFT__WS_FIBER: write(2) without blocking. Returns the
 * bytes written, 0 if the kernel's buffer is full, or a negative error. */
static ssize_t fd_write(weft_uv_stream_t* s, const char* buf, size_t len) {
  ssize_t n;

  do {
    if (s->fd_sock)
      n = send(s->fileno_, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    else
      n = write(s->fileno_, buf, len); /* libuv made it non-blocking */
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  return n;
}

/* Posts a write op for buf (holding one WEFT__WS_PENDING, which the op's
 * free drops) and waits for it; WEFT__WS_FIBER, if held, is dropped once
 * the op is in the queue, so whoever writes next queues behind it. */
static int64_t write_op(weft_uv_stream_t* s, const char* buf, size_t len,
                        uint64_t deadline, bool fiber) {
  weft__uv_sop_t* w = weft__uv_sop_new(s->bridge, &write_ops);
  int64_t result;
  int err;

  if (w == NULL) {
    atomic_fetch_sub_explicit(&s->wstate,
                              WEFT__WS_PENDING | (fiber ? WEFT__WS_FIBER : 0),
                              memory_order_release);
    return UV_ENOMEM;
  }
  w->buf = (char*)buf; /* only read */
  w->len = len;
  w->s = s;
  weft__uv_stream_ref(s); /* the record outlives our wait if abandoned */
  err = weft__uv_op_await_begin(&w->op, deadline);
  if (fiber)
    atomic_fetch_and_explicit(&s->wstate, ~WEFT__WS_FIBER,
                              memory_order_release);
  result = err != 0 ? err : weft__uv_op_await_end(&w->op);
  weft__uv_stream_unref(s);
  return result;
}

int64_t weft_uv_stream_write(weft_uv_stream_t* s, const void* buf, size_t len,
                             uint64_t deadline) {
  weft_uv_t* b;
  const char* p = buf;
  size_t done = 0;
  unsigned st;
  int64_t r;
  int err = stream_bridge(s, &b);

  if (err != 0)
    return err;
  if ((buf == NULL && len != 0) || s->listener)
    return UV_EINVAL;
  if (len == 0)
    return 0;
  if (deadline != WEFT_UV_FOREVER && deadline <= uv_hrtime())
    return UV_ETIMEDOUT;
  /* With no write op outstanding and no other fiber writing, write to the
   * descriptor here: a round trip through the loop thread saved. Otherwise
   * queue behind them on the loop. */
  st = atomic_load_explicit(&s->wstate, memory_order_relaxed);
  for (;;) {
    if (st & WEFT__WS_FIBER) {
      /* Another fiber is inside its write or handing over its rest, which
       * is short and never suspends: our bytes must not come between. */
      weft_yield();
      st = atomic_load_explicit(&s->wstate, memory_order_relaxed);
      continue;
    }
    if (st == 0 && s->fileno_ >= 0) {
      /* Acquire pairs with write_free and with the last fiber writer's
       * release: our bytes follow theirs. */
      if (atomic_compare_exchange_weak_explicit(&s->wstate, &st, WEFT__WS_FIBER,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        break;
      continue;
    }
    /* Relaxed: the total order of RMWs on wstate is what keeps a later
     * fiber writer out; the op itself is published by its post. */
    if (atomic_compare_exchange_weak_explicit(
            &s->wstate, &st, st + WEFT__WS_PENDING, memory_order_relaxed,
            memory_order_relaxed))
      return write_op(s, p, len, deadline, false);
  }
  while (done < len) {
    ssize_t n = fd_write(s, p + done, len - done);
    if (n < 0) {
      atomic_fetch_and_explicit(&s->wstate, ~WEFT__WS_FIBER,
                                memory_order_release);
      return n;
    }
    if (n == 0)
      break;
    done += (size_t)n;
  }
  if (done == len) {
    /* Release pairs with the acquire of the next writer or the loop's
     * close. */
    atomic_fetch_and_explicit(&s->wstate, ~WEFT__WS_FIBER,
                              memory_order_release);
    return (int64_t)len;
  }
  /* The kernel's buffer is full: the loop waits for room and writes the
   * rest. */
  atomic_fetch_add_explicit(&s->wstate, WEFT__WS_PENDING, memory_order_relaxed);
  r = write_op(s, p + done, len - done, deadline, true);
  return r < 0 ? r : (int64_t)len;
}

/* ---- shutdown --------------------------------------------------------------
 */

static void on_shutdown(uv_shutdown_t* req, int status) {
  weft__uv_sop_t* r =
      (weft__uv_sop_t*)((char*)req - offsetof(weft__uv_sop_t, req.shutdown));
  weft__uv_sop_done(r, status);
}

static void shutdown_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* r = (weft__uv_sop_t*)op;
  int err;
  (void)loop;

  if (r->s->flags & WEFT__STREAM_CLOSING) {
    weft__uv_sop_done(r, UV_ECANCELED);
    return;
  }
  err = uv_shutdown(&r->req.shutdown, &r->s->h.stream, on_shutdown);
  if (err != 0)
    weft__uv_sop_done(r, err);
}

/* No abort: the request ends by itself, at the latest when the stream
 * closes (libuv then calls it back with UV_ECANCELED). */
static const weft__uv_ops_t shutdown_ops = {.start = shutdown_start};

int weft_uv_stream_shutdown(weft_uv_stream_t* s, uint64_t deadline) {
  weft__uv_sop_t* r;
  int err = stream_op(s, false, true, &shutdown_ops, &r);

  if (err != 0)
    return err;
  return (int)weft__uv_sop_await(r, s, deadline);
}

/* ---- small synchronous queries ---------------------------------------------
 */

static int names_fn(weft__uv_sop_t* r) {
  weft_uv_stream_t* s = r->s;
  socklen_t len = sizeof(*r->addr_out);
  int fd = s->listener ? s->fd : s->fileno_;
  int rc;

  if (fd < 0)
    return UV_EBADF;
  /* r->addr_out is the fiber's: it waits while we run. */
  memset(r->addr_out, 0, sizeof(*r->addr_out));
  if (r->arg)
    rc = getpeername(fd, (struct sockaddr*)r->addr_out, &len);
  else
    rc = getsockname(fd, (struct sockaddr*)r->addr_out, &len);
  if (rc != 0)
    return uv_translate_sys_error(errno);
  *r->addrlen = (int)len;
  return 0;
}

static int names(weft_uv_stream_t* s, struct sockaddr_storage* addr, int* len,
                 int peer) {
  weft__uv_sop_t* r;
  int err = stream_op(s, addr == NULL || len == NULL, peer != 0,
                      &weft__uv_sync_ops, &r);

  if (err != 0)
    return err;
  r->fn = names_fn;
  r->arg = peer;
  r->addr_out = addr;
  r->addrlen = len;
  return weft__uv_sop_call(r, s);
}

int weft_uv_stream_sockname(weft_uv_stream_t* s, struct sockaddr_storage* addr,
                            int* len) {
  return names(s, addr, len, 0);
}

int weft_uv_stream_peername(weft_uv_stream_t* s, struct sockaddr_storage* addr,
                            int* len) {
  return names(s, addr, len, 1);
}

int weft_uv_stream_fileno(weft_uv_stream_t* s, uv_os_fd_t* fd) {
  if (s == NULL || fd == NULL)
    return UV_EINVAL;
  *fd = s->listener ? s->fd : s->fileno_;
  return *fd >= 0 ? 0 : UV_EINVAL;
}

static int buffered_fn(weft__uv_sop_t* r) {
  return (int)r->s->ra_len;
}

int64_t weft_uv_stream_buffered(weft_uv_stream_t* s) {
  weft__uv_sop_t* r;
  int err = stream_op(s, false, true, &weft__uv_sync_ops, &r);

  if (err != 0)
    return err;
  r->fn = buffered_fn;
  return weft__uv_sop_call(r, s);
}

/* ---- connecting ------------------------------------------------------------
 */

void weft__uv_stream_on_connect(uv_connect_t* req, int status) {
  weft__uv_sop_t* r =
      (weft__uv_sop_t*)((char*)req - offsetof(weft__uv_sop_t, req.connect));
  weft_uv_stream_t* s = r->s;

  if (status == 0 && weft__uv_op_live(&r->op)) {
    weft__uv_stream_publish(s);
    *r->out = s;
  } else {
    weft__uv_stream_discard(s);
  }
  weft__uv_sop_done(r, status);
}

void weft__uv_stream_connect_abort(weft__uv_op_t* op) {
  /* Closing cancels the connect request; on_connect discards. */
  weft__uv_stream_discard(((weft__uv_sop_t*)op)->s);
}

/* ---- listeners -------------------------------------------------------------
 */

static void listener_serve(weft_uv_stream_t* l);

static void on_poll(uv_poll_t* h, int status, int events) {
  weft_uv_stream_t* l = h->data;
  (void)status; /* an error shows again in accept(2) */
  (void)events;
  listener_serve(l);
}

static void on_backoff(uv_timer_t* t) {
  weft_uv_stream_t* l = t->data;
  l->flags &= ~WEFT__STREAM_BACKING_OFF;
  listener_serve(l);
}

static void polling(weft_uv_stream_t* l, int on) {
  if (on && !(l->flags & WEFT__STREAM_POLLING)) {
    if (uv_poll_start(&l->h.poll, UV_READABLE, on_poll) == 0)
      l->flags |= WEFT__STREAM_POLLING;
  } else if (!on && (l->flags & WEFT__STREAM_POLLING)) {
    uv_poll_stop(&l->h.poll);
    l->flags &= ~WEFT__STREAM_POLLING;
  }
}

/* A connection for the accepted socket `fd` (which it then owns). */
static int conn_from_fd(weft_uv_stream_t* l, int fd, weft_uv_stream_t** out) {
  weft_uv_stream_t* s;
  int err = weft__uv_stream_new(l->bridge, l->kind, &s);

  if (err != 0) {
    close(fd);
    return err;
  }
  if (l->kind == WEFT__STREAM_TCP)
    err = uv_tcp_open(&s->h.tcp, fd);
  else
    err = uv_pipe_open(&s->h.pipe, fd);
  if (err != 0) {
    close(fd);
    weft__uv_stream_discard(s);
    return err;
  }
  *out = s;
  return 0;
}

/* Loop thread: accept(2) for as long as fibers wait and connections are
 * queued; poll while fibers wait and the queue is empty; while accept(2)
 * fails for want of descriptors or memory, stop polling and retry after
 * BACKOFF_MS (the connection waits in the kernel's backlog meanwhile). */
static void listener_serve(weft_uv_stream_t* l) {
  weft__uv_sop_t* a;
  weft_uv_stream_t* c;
  int fd;
  int err;

  while ((a = l->acceptors.head) != NULL &&
         !(l->flags & (WEFT__STREAM_BACKING_OFF | WEFT__STREAM_CLOSING))) {
    fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      err = errno;
      if (err == EINTR || err == ECONNABORTED)
        continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        polling(l, 1);
        return;
      }
      goto back_off; /* EMFILE, ENFILE, ENOBUFS, ENOMEM, ... */
    }
    if (conn_from_fd(l, fd, &c) != 0)
      goto back_off; /* that connection is lost; keep serving */
    queue_remove(a);
    weft__uv_stream_publish(c);
    *a->out = c; /* a is live: it was still queued */
    weft__uv_sop_done(a, 0);
  }
  if (l->acceptors.head == NULL)
    polling(l, 0); /* leave connections in the kernel's backlog */
  return;

back_off:
  polling(l, 0);
  l->flags |= WEFT__STREAM_BACKING_OFF;
  uv_timer_start(&l->backoff, on_backoff, BACKOFF_MS, 0);
}

int weft__uv_listener_new(weft_uv_t* b, int kind, int fd, char* path,
                          weft_uv_stream_t** out) {
  weft_uv_stream_t* l;
  int err;

  if (b->closing) {
    err = UV_ECANCELED;
    goto fail;
  }
  l = stream_alloc(b, kind);
  if (l == NULL) {
    err = UV_ENOMEM;
    goto fail;
  }
  err = uv_poll_init_socket(b->loop, &l->h.poll, fd);
  if (err != 0) {
    free(l);
    goto fail;
  }
  uv_timer_init(b->loop, &l->backoff);
  l->h.handle.data = l;
  l->backoff.data = l;
  l->listener = 1;
  l->fd = fd;
  l->path = path;
  atomic_store_explicit(&l->refs, 2, memory_order_relaxed); /* 2 handles */
  weft__uv_stream_publish(l);
  *out = l;
  return 0;

fail:
  close(fd);
  if (path != NULL)
    unlink(path);
  free(path);
  return err;
}

static void accept_start(weft__uv_op_t* op, uv_loop_t* loop) {
  weft__uv_sop_t* a = (weft__uv_sop_t*)op;
  weft_uv_stream_t* l = a->s;
  (void)loop;

  if (l->flags & WEFT__STREAM_CLOSING) {
    weft__uv_sop_done(a, UV_ECANCELED);
    return;
  }
  queue_push(&l->acceptors, a);
  listener_serve(l);
}

static void accept_abort(weft__uv_op_t* op) {
  weft__uv_sop_t* a = (weft__uv_sop_t*)op;
  weft_uv_stream_t* l = a->s;

  queue_remove(a);
  weft__uv_op_release(op);
  if (l->acceptors.head == NULL)
    polling(l, 0);
}

static const weft__uv_ops_t accept_ops = {.start = accept_start,
                                          .abort = accept_abort};

int weft__uv_stream_accept(weft_uv_stream_t* l, int kind,
                           weft_uv_stream_t** out, uint64_t deadline) {
  weft_uv_t* b;
  weft__uv_sop_t* a;
  int err = stream_bridge(l, &b);

  if (err != 0)
    return err;
  if (out == NULL || !l->listener || l->kind != kind)
    return UV_EINVAL;
  a = weft__uv_sop_new(b, &accept_ops);
  if (a == NULL)
    return UV_ENOMEM;
  a->out = out;
  return (int)weft__uv_sop_await(a, l, deadline);
}
