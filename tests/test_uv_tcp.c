/* test_uv_tcp.c: the stream family: TCP over IPv4 and IPv6, Unix domain
 * sockets and wrapped descriptors; echo byte for byte over many
 * connections, connection errors (refused, reset, broken pipe),
 * backpressure with a bounded read-ahead, deadlines and cancellation at
 * every kind of wait, closing a stream under its waiters, stopping the
 * bridge under many blocked readers, EMFILE at accept, bad arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_util.h"
#include "weft_uv.h"

/* ---- harness ---------------------------------------------------------------
 */

static weft_uv_t* bridge;

/* Runs fn(arg) as a job on a runtime with a bridge, then stops both. */
static void run_job(unsigned workers, weft_job_cb fn, void* arg) {
  weft_runtime_t* rt = test_runtime(workers);
  weft_counter_t c;

  atomic_store(&test_failures, 0); /* each test reports its own */
  assert_int_equal(weft_uv_start(rt, &bridge), 0);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, fn, arg, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_uv_stop(bridge), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static uint64_t in_ms(uint64_t ms) {
  return weft_uv_deadline_in(ms);
}

/* Listens on the loopback address of `family`, port 0; *addr is where. */
static int listen_local(int family, weft_uv_stream_t** l,
                        struct sockaddr_storage* addr) {
  struct sockaddr_storage any;
  int len = 0;
  int err;

  memset(&any, 0, sizeof(any));
  if (family == AF_INET6)
    uv_ip6_addr("::1", 0, (struct sockaddr_in6*)&any);
  else
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in*)&any);
  err = weft_uv_tcp_listen((struct sockaddr*)&any, 4096, l);
  if (err != 0)
    return err;
  err = weft_uv_stream_sockname(*l, addr, &len);
  CHECK(err == 0);
  CHECK(len == (family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                   : (int)sizeof(struct sockaddr_in)));
  CHECK(addr->ss_family == family);
  return err;
}

/* A connected pair over `l`: connect (the kernel completes it from the
 * backlog), then accept. */
static void tcp_pair(weft_uv_stream_t* l, struct sockaddr_storage* addr,
                     weft_uv_stream_t** client, weft_uv_stream_t** server) {
  CHECK(weft_uv_tcp_connect((struct sockaddr*)addr, client, in_ms(10000)) == 0);
  CHECK(weft_uv_tcp_accept(l, server, in_ms(10000)) == 0);
}

/* Reads exactly n bytes unless the stream ends or fails first. */
static int64_t read_full(weft_uv_stream_t* s, void* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    int64_t r =
        weft_uv_stream_read(s, (char*)buf + got, n - got, WEFT_UV_FOREVER);
    if (r <= 0)
      return r;
    got += (size_t)r;
  }
  return (int64_t)got;
}

static uint64_t xorshift(uint64_t* x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void fill_random(char* buf, size_t n, uint64_t seed) {
  uint64_t x = seed * 2654435761u + 1;
  size_t i;
  for (i = 0; i < n; i++)
    buf[i] = (char)(xorshift(&x) >> 24);
}

/* Echoes until end of stream, then closes. */
static void echo_conn(void* arg) {
  weft_uv_stream_t* s = arg;
  char buf[4096];
  int64_t n;

  while ((n = weft_uv_stream_read(s, buf, sizeof(buf), WEFT_UV_FOREVER)) > 0)
    CHECK(weft_uv_stream_write(s, buf, (size_t)n, WEFT_UV_FOREVER) == n);
  CHECK(n == 0);
  CHECK(weft_uv_stream_close(s) == 0);
}

/* ---- echo over one connection, IPv4 and IPv6 -------------------------------
 */

typedef struct {
  int family;
  int skipped;
} family_t;

static void echo_one(void* arg) {
  family_t* f = arg;
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  struct sockaddr_storage addr;
  struct sockaddr_storage name;
  weft_counter_t done;
  char out[10000];
  char in[10000];
  int len;
  uv_os_fd_t fd;
  int err = listen_local(f->family, &l, &addr);

  if (f->family == AF_INET6 &&
      (err == UV_EADDRNOTAVAIL || err == UV_EAFNOSUPPORT)) {
    f->skipped = 1;
    return;
  }
  CHECK(err == 0);
  if (err != 0)
    return;
  tcp_pair(l, &addr, &c, &s);
  weft_counter_init(&done, 0);
  CHECK(weft_spawn(NULL, echo_conn, s, &done) == 0);

  CHECK(weft_uv_tcp_nodelay(c, 1) == 0);
  CHECK(weft_uv_tcp_nodelay(c, 0) == 0);
  CHECK(weft_uv_tcp_keepalive(c, 1, 30) == 0);
  CHECK(weft_uv_tcp_keepalive(c, 0, 0) == 0);
  CHECK(weft_uv_stream_fileno(c, &fd) == 0 && fd >= 0);
  /* The client's peer is the listener's address. */
  CHECK(weft_uv_stream_peername(c, &name, &len) == 0);
  CHECK(name.ss_family == f->family);
  if (f->family == AF_INET)
    CHECK(((struct sockaddr_in*)&name)->sin_port ==
          ((struct sockaddr_in*)&addr)->sin_port);
  else
    CHECK(((struct sockaddr_in6*)&name)->sin6_port ==
          ((struct sockaddr_in6*)&addr)->sin6_port);
  CHECK(weft_uv_stream_sockname(c, &name, &len) == 0);

  fill_random(out, sizeof(out), 7);
  CHECK(weft_uv_stream_write(c, out, sizeof(out), in_ms(10000)) ==
        (int64_t)sizeof(out));
  CHECK(weft_uv_stream_write(c, out, 0, in_ms(10000)) == 0);
  CHECK(read_full(c, in, sizeof(in)) == (int64_t)sizeof(in));
  CHECK(memcmp(in, out, sizeof(in)) == 0);
  /* Half-close: the echo side reads end of stream and closes; we then
   * read end of stream, again and again. */
  CHECK(weft_uv_stream_shutdown(c, in_ms(10000)) == 0);
  CHECK(weft_uv_stream_read(c, in, sizeof(in), in_ms(10000)) == 0);
  CHECK(weft_uv_stream_read(c, in, sizeof(in), in_ms(10000)) == 0);
  weft_counter_wait(&done, 0);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
}

static void tcp_echo_ipv4(void** state) {
  family_t f = {AF_INET, 0};
  (void)state;
  run_job(2, echo_one, &f);
}

static void tcp_echo_ipv6(void** state) {
  family_t f = {AF_INET6, 0};
  (void)state;
  run_job(2, echo_one, &f);
  if (f.skipped)
    skip();
}

/* ---- connection errors -----------------------------------------------------
 */

static void errors_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  struct sockaddr_storage addr;
  struct linger lg = {1, 0};
  uv_os_fd_t fd;
  char buf[256];
  int64_t r;
  int i;
  int saw_epipe = 0;
  (void)arg;

  memset(buf, 'p', sizeof(buf));

  /* Refused: a port nobody listens on any more. */
  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  CHECK(weft_uv_sleep(10, WEFT_UV_FOREVER) == 0); /* closed on the loop */
  CHECK(weft_uv_tcp_connect((struct sockaddr*)&addr, &c, in_ms(10000)) ==
        UV_ECONNREFUSED);

  /* Reset: the peer closes with SO_LINGER 0. The reader gets the bytes
   * sent before the reset, then UV_ECONNRESET. */
  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  tcp_pair(l, &addr, &c, &s);
  CHECK(weft_uv_stream_read(c, buf, 0, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_stream_write(s, "ab", 2, in_ms(10000)) == 2);
  CHECK(read_full(c, buf, 2) == 2 && memcmp(buf, "ab", 2) == 0);
  CHECK(weft_uv_stream_fileno(s, &fd) == 0);
  CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
  CHECK(weft_uv_stream_close(s) == 0);
  CHECK(weft_uv_stream_read(c, buf, sizeof(buf), in_ms(10000)) ==
        UV_ECONNRESET);
  /* The error sticks. */
  CHECK(weft_uv_stream_read(c, buf, sizeof(buf), in_ms(10000)) ==
        UV_ECONNRESET);
  CHECK(weft_uv_stream_close(c) == 0);

  /* Broken pipe: the peer closed; the first write draws a reset, later
   * ones fail with UV_EPIPE, and SIGPIPE does not kill us. */
  tcp_pair(l, &addr, &c, &s);
  CHECK(weft_uv_stream_close(s) == 0);
  CHECK(weft_uv_stream_read(c, buf, sizeof(buf), in_ms(10000)) == 0);
  for (i = 0; i < 200 && !saw_epipe; i++) {
    r = weft_uv_stream_write(c, buf, sizeof(buf), in_ms(10000));
    CHECK(r == (int64_t)sizeof(buf) || r == UV_EPIPE || r == UV_ECONNRESET);
    saw_epipe = r == UV_EPIPE;
    if (!saw_epipe)
      weft_uv_sleep(5, WEFT_UV_FOREVER);
  }
  CHECK(saw_epipe);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
}

static void tcp_connection_errors(void** state) {
  (void)state;
  run_job(2, errors_job, NULL);
}

/* ---- many concurrent echo connections --------------------------------------
 */

typedef struct {
  struct sockaddr_storage addr;
  weft_uv_stream_t* l;
  int n;
  atomic_int ok;
} many_t;

static void many_acceptor(void* arg) {
  many_t* m = arg;
  weft_counter_t conns;
  int i;

  weft_counter_init(&conns, 0);
  for (i = 0; i < m->n; i++) {
    weft_uv_stream_t* s;
    int err = weft_uv_tcp_accept(m->l, &s, in_ms(60000));
    CHECK(err == 0);
    if (err != 0)
      break;
    CHECK(weft_spawn(NULL, echo_conn, s, &conns) == 0);
  }
  weft_counter_wait(&conns, 0);
}

typedef struct {
  many_t* m;
  uint64_t seed;
} client_t;

/* Writes random chunks of random sizes and checks the echo of each. */
static void many_client(void* arg) {
  client_t* cl = arg;
  weft_uv_stream_t* c;
  char out[3000];
  char in[3000];
  uint64_t x = cl->seed;
  int round;
  int err;

  err = weft_uv_tcp_connect((struct sockaddr*)&cl->m->addr, &c, in_ms(60000));
  CHECK(err == 0);
  if (err != 0)
    return;
  for (round = 0; round < 4; round++) {
    size_t n = 1 + (size_t)(xorshift(&x) % sizeof(out));
    fill_random(out, n, xorshift(&x));
    CHECK(weft_uv_stream_write(c, out, n, in_ms(60000)) == (int64_t)n);
    CHECK(read_full(c, in, n) == (int64_t)n);
    CHECK(memcmp(in, out, n) == 0);
  }
  CHECK(weft_uv_stream_shutdown(c, in_ms(60000)) == 0);
  CHECK(weft_uv_stream_read(c, in, sizeof(in), in_ms(60000)) == 0);
  CHECK(weft_uv_stream_close(c) == 0);
  atomic_fetch_add(&cl->m->ok, 1);
}

static void many_job(void* arg) {
  many_t* m = arg;
  client_t* cls = calloc((size_t)m->n, sizeof(*cls));
  weft_counter_t c;
  int i;

  CHECK(listen_local(AF_INET, &m->l, &m->addr) == 0);
  weft_counter_init(&c, 0);
  CHECK(weft_spawn(NULL, many_acceptor, m, &c) == 0);
  for (i = 0; i < m->n; i++) {
    cls[i].m = m;
    cls[i].seed = (uint64_t)i + 1;
    CHECK(weft_spawn(NULL, many_client, &cls[i], &c) == 0);
  }
  weft_counter_wait(&c, 0);
  CHECK(weft_uv_stream_close(m->l) == 0);
  free(cls);
}

static void tcp_echo_many(void** state) {
  many_t m;
  (void)state;
  raise_nofile();
  memset(&m, 0, sizeof(m));
  m.n = (int)test_size(1000);
  run_job(4, many_job, &m);
  assert_int_equal(atomic_load(&m.ok), m.n);
}

/* ---- backpressure ----------------------------------------------------------
 */

#define BP_BYTES ((size_t)4 << 20)

typedef struct {
  weft_uv_stream_t* w;
  char* data;
  atomic_int written; /* 1 once the write returned */
  int64_t rc;
} bp_writer_t;

static void bp_write(void* arg) {
  bp_writer_t* bw = arg;
  bw->rc = weft_uv_stream_write(bw->w, bw->data, BP_BYTES, in_ms(60000));
  atomic_store(&bw->written, 1);
}

static void small_buffers(weft_uv_stream_t* s) {
  int size = 128 * 1024; /* above loopback's 64 KiB MSS, or TCP stalls */
  uv_os_fd_t fd;
  CHECK(weft_uv_stream_fileno(s, &fd) == 0);
  CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) == 0);
  CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) == 0);
}

static void backpressure_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  struct sockaddr_storage addr;
  bp_writer_t bw;
  weft_counter_t done;
  char* got = malloc(BP_BYTES);
  int64_t buffered = 0;
  int i;
  (void)arg;

  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  tcp_pair(l, &addr, &c, &s);
  small_buffers(c);
  small_buffers(s);
  memset(&bw, 0, sizeof(bw));
  bw.w = c;
  bw.data = malloc(BP_BYTES);
  fill_random(bw.data, BP_BYTES, 99);
  weft_counter_init(&done, 0);
  /* One read starts the server side's read-ahead. */
  CHECK(weft_spawn(NULL, bp_write, &bw, &done) == 0);
  CHECK(weft_uv_stream_read(s, got, 1, in_ms(10000)) == 1);
  /* The reader sleeps: the read-ahead fills to its bound and no further,
   * and the writer stays blocked. */
  for (i = 0; i < 500 && buffered < WEFT_UV_READ_AHEAD; i++) {
    weft_uv_sleep(10, WEFT_UV_FOREVER);
    buffered = weft_uv_stream_buffered(s);
    CHECK(buffered >= 0 && buffered <= WEFT_UV_READ_AHEAD);
  }
  CHECK(buffered == WEFT_UV_READ_AHEAD);
  weft_uv_sleep(50, WEFT_UV_FOREVER);
  CHECK(weft_uv_stream_buffered(s) == WEFT_UV_READ_AHEAD);
  CHECK(atomic_load(&bw.written) == 0);
  /* Drain: every byte arrives, in order. */
  CHECK(read_full(s, got + 1, BP_BYTES - 1) == (int64_t)(BP_BYTES - 1));
  weft_counter_wait(&done, 0);
  CHECK(bw.rc == (int64_t)BP_BYTES);
  CHECK(memcmp(got, bw.data, BP_BYTES) == 0);
  CHECK(weft_uv_stream_buffered(s) == 0);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(s) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  free(bw.data);
  free(got);
}

static void tcp_backpressure(void** state) {
  (void)state;
  run_job(2, backpressure_job, NULL);
}

/* ---- many fibers writing to one stream -------------------------------------
 */

/* Writes go to the descriptor from the fiber while nothing else is queued,
 * and through the loop once the kernel's buffer is full; with several
 * writers on one stream, each write's bytes must still arrive whole, and a
 * writer's messages in order. Small socket buffers force the hand-over. */
#define CW_WRITERS 8
#define CW_MAX (64 * 1024)

typedef struct {
  weft_uv_stream_t* s;
  int id;
  int msgs;
} cw_writer_t;

static void cw_fill(char* p, uint32_t id, uint32_t seq, uint32_t len) {
  uint32_t i;
  memcpy(p, &id, 4);
  memcpy(p + 4, &seq, 4);
  memcpy(p + 8, &len, 4);
  for (i = 12; i < len; i++)
    p[i] = (char)(id * 31 + seq * 7 + i);
}

static void cw_write(void* arg) {
  cw_writer_t* w = arg;
  char* buf = malloc(CW_MAX);
  uint64_t x = (uint64_t)w->id + 1;
  int i;

  for (i = 0; i < w->msgs; i++) {
    /* Mostly small, now and then large enough to fill the buffer. */
    uint32_t len =
        (uint32_t)(12 + xorshift(&x) % (i % 8 == 0 ? CW_MAX - 12 : 500));
    cw_fill(buf, (uint32_t)w->id, (uint32_t)i, len);
    CHECK(weft_uv_stream_write(w->s, buf, len, in_ms(60000)) == (int64_t)len);
  }
  free(buf);
}

static void writers_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  struct sockaddr_storage addr;
  cw_writer_t w[CW_WRITERS];
  weft_counter_t done;
  uint32_t next[CW_WRITERS] = {0};
  char* got = malloc(CW_MAX);
  char* want = malloc(CW_MAX);
  int msgs = (int)test_size(300);
  long total = 0;
  int i;
  (void)arg;

  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  tcp_pair(l, &addr, &c, &s);
  small_buffers(c);
  small_buffers(s);
  weft_counter_init(&done, 0);
  for (i = 0; i < CW_WRITERS; i++) {
    w[i].s = c;
    w[i].id = i;
    w[i].msgs = msgs;
    CHECK(weft_spawn(NULL, cw_write, &w[i], &done) == 0);
  }
  while (total < (long)CW_WRITERS * msgs) {
    uint32_t id;
    uint32_t seq;
    uint32_t len;
    if (read_full(s, got, 12) != 12)
      break;
    memcpy(&id, got, 4);
    memcpy(&seq, got + 4, 4);
    memcpy(&len, got + 8, 4);
    CHECK(id < CW_WRITERS && len >= 12 && len <= CW_MAX);
    if (id >= CW_WRITERS || len < 12 || len > CW_MAX)
      break;
    CHECK(seq == next[id]);
    next[id] = seq + 1;
    CHECK(read_full(s, got + 12, len - 12) == (int64_t)(len - 12));
    cw_fill(want, id, seq, len);
    CHECK(memcmp(got, want, len) == 0);
    /* Now and then a pause: the buffers fill and writers queue up. */
    if (++total % 128 == 0)
      weft_uv_sleep(2, WEFT_UV_FOREVER);
  }
  CHECK(total == (long)CW_WRITERS * msgs);
  weft_counter_wait(&done, 0);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(s) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  free(got);
  free(want);
}

static void tcp_concurrent_writers(void** state) {
  (void)state;
  run_job(4, writers_job, NULL);
}

/* ---- deadlines and cancellation at each wait -------------------------------
 */

enum { WAIT_ACCEPT, WAIT_CONNECT, WAIT_READ, WAIT_WRITE, WAIT_KINDS };

typedef struct {
  int kind;
  int use_cancel;
  weft_uv_stream_t* l;
  weft_uv_stream_t* s; /* read: a quiet connection; write: a full one */
  struct sockaddr_storage* full; /* a listener whose backlog is full */
  char* big;
  weft_uv_job_t self;
  atomic_int started;
  atomic_int finished;
  int64_t rc;
} waiter_t;

static void waiter(void* arg) {
  waiter_t* w = arg;
  weft_uv_stream_t* out = NULL;
  char buf[64];
  uint64_t deadline = w->use_cancel ? WEFT_UV_FOREVER : in_ms(50);

  w->self = weft_uv_job_self();
  atomic_store(&w->started, 1);
  switch (w->kind) {
    case WAIT_ACCEPT:
      w->rc = weft_uv_tcp_accept(w->l, &out, deadline);
      break;
    case WAIT_CONNECT:
      /* The kernel drops SYNs to a listener whose accept queue is full. */
      w->rc = weft_uv_tcp_connect((struct sockaddr*)w->full, &out, deadline);
      break;
    case WAIT_READ:
      w->rc = weft_uv_stream_read(w->s, buf, sizeof(buf), deadline);
      break;
    default:
      w->rc = weft_uv_stream_write(w->s, w->big, BP_BYTES, deadline);
      break;
  }
  if (w->rc == 0 && out != NULL)
    weft_uv_stream_close(out);
  atomic_store(&w->finished, 1);
}

static void waits_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* quiet_c; /* nobody writes to quiet_s: reads wait */
  weft_uv_stream_t* quiet_s;
  weft_uv_stream_t* full_c; /* full_s never reads: writes wait */
  weft_uv_stream_t* full_s;
  struct sockaddr_storage addr;
  struct sockaddr_storage full;
  struct sockaddr_storage any;
  weft_uv_stream_t* full_l;
  weft_uv_stream_t* queued[16];
  int nqueued = 0;
  char* big = calloc(1, BP_BYTES);
  int kind;
  int cancel;
  int err = 0;
  int len;
  (void)arg;

  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  /* Backlog 1, nobody accepting: a few connects complete from the accept
   * queue, then one waits until its deadline. */
  uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in*)&any);
  CHECK(weft_uv_tcp_listen((struct sockaddr*)&any, 1, &full_l) == 0);
  CHECK(weft_uv_stream_sockname(full_l, &full, &len) == 0);
  while (nqueued < 16) {
    err = weft_uv_tcp_connect((struct sockaddr*)&full, &queued[nqueued],
                              in_ms(200));
    if (err != 0)
      break;
    nqueued++;
  }
  CHECK(err == UV_ETIMEDOUT);
  tcp_pair(l, &addr, &quiet_c, &quiet_s);
  tcp_pair(l, &addr, &full_c, &full_s);
  small_buffers(full_c);
  small_buffers(full_s);
  for (cancel = 0; cancel < 2; cancel++) {
    for (kind = 0; kind < WAIT_KINDS; kind++) {
      waiter_t w;
      weft_counter_t done;

      memset(&w, 0, sizeof(w));
      w.kind = kind;
      w.use_cancel = cancel;
      w.l = l;
      w.s = kind == WAIT_READ ? quiet_s : full_c;
      w.big = big;
      w.full = &full;
      weft_counter_init(&done, 0);
      CHECK(weft_spawn(NULL, waiter, &w, &done) == 0);
      if (cancel) {
        /* A cancel that arrives before the wait began is ignored: repeat
         * until the waiter returns. */
        while (!atomic_load(&w.started))
          weft_uv_sleep(1, WEFT_UV_FOREVER);
        while (!atomic_load(&w.finished)) {
          weft_uv_sleep(5, WEFT_UV_FOREVER);
          CHECK(weft_uv_cancel(bridge, w.self) == 0);
        }
      }
      weft_counter_wait(&done, 0);
      CHECK(w.rc == (cancel ? UV_ECANCELED : UV_ETIMEDOUT));
    }
  }
  /* A cut-short read leaves the connection usable. */
  CHECK(weft_uv_stream_write(quiet_c, "ok", 2, in_ms(10000)) == 2);
  {
    char buf[2];
    CHECK(read_full(quiet_s, buf, 2) == 2 && memcmp(buf, "ok", 2) == 0);
  }
  CHECK(weft_uv_stream_close(quiet_c) == 0);
  CHECK(weft_uv_stream_close(quiet_s) == 0);
  CHECK(weft_uv_stream_close(full_c) == 0);
  CHECK(weft_uv_stream_close(full_s) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  while (nqueued > 0)
    CHECK(weft_uv_stream_close(queued[--nqueued]) == 0);
  CHECK(weft_uv_stream_close(full_l) == 0);
  free(big);
}

static void tcp_deadlines_and_cancel(void** state) {
  (void)state;
  run_job(2, waits_job, NULL);
}

/* ---- closing a stream wakes its waiters ------------------------------------
 */

static void close_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  struct sockaddr_storage addr;
  waiter_t r;
  waiter_t w;
  waiter_t a;
  weft_counter_t done;
  char* big = calloc(1, BP_BYTES);
  (void)arg;

  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  tcp_pair(l, &addr, &c, &s);
  small_buffers(c);
  memset(&r, 0, sizeof(r));
  memset(&w, 0, sizeof(w));
  memset(&a, 0, sizeof(a));
  r.kind = WAIT_READ;
  r.s = c;
  w.kind = WAIT_WRITE;
  w.s = c;
  w.big = big;
  a.kind = WAIT_ACCEPT;
  a.l = l;
  r.use_cancel = w.use_cancel = a.use_cancel = 1; /* no deadline */
  weft_counter_init(&done, 0);
  CHECK(weft_spawn(NULL, waiter, &r, &done) == 0);
  CHECK(weft_spawn(NULL, waiter, &w, &done) == 0);
  CHECK(weft_spawn(NULL, waiter, &a, &done) == 0);
  while (!atomic_load(&r.started) || !atomic_load(&w.started) ||
         !atomic_load(&a.started))
    weft_uv_sleep(1, WEFT_UV_FOREVER);
  /* Let them block (the calls must be made before the close). */
  weft_uv_sleep(100, WEFT_UV_FOREVER);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  weft_counter_wait(&done, 0);
  CHECK(r.rc == UV_ECANCELED);
  CHECK(w.rc == UV_ECANCELED);
  CHECK(a.rc == UV_ECANCELED);
  /* The peer sees the connection end. */
  {
    char buf[4096];
    int64_t n;
    while ((n = weft_uv_stream_read(s, buf, sizeof(buf), in_ms(10000))) > 0) {
    }
    CHECK(n == 0 || n == UV_ECONNRESET);
  }
  CHECK(weft_uv_stream_close(s) == 0);
  free(big);
}

static void tcp_close_wakes_waiters(void** state) {
  (void)state;
  run_job(2, close_job, NULL);
}

/* ---- stopping the bridge under many blocked readers ------------------------
 */

typedef struct {
  struct sockaddr_storage addr;
  weft_uv_stream_t* l;
  weft_uv_stream_t** servers;
  int n;
  atomic_int connected;
  atomic_int cancelled;
  atomic_int accepted;
} stop_t;

static void stop_reader(void* arg) {
  stop_t* st = arg;
  weft_uv_stream_t* c;
  char buf[16];

  if (weft_uv_tcp_connect((struct sockaddr*)&st->addr, &c, in_ms(60000)) != 0) {
    CHECK(0);
    return;
  }
  atomic_fetch_add(&st->connected, 1);
  if (weft_uv_stream_read(c, buf, sizeof(buf), WEFT_UV_FOREVER) == UV_ECANCELED)
    atomic_fetch_add(&st->cancelled, 1);
  /* After the stop: only the memory is left to free. */
  CHECK(weft_uv_stream_close(c) == 0);
}

static void stop_acceptor(void* arg) {
  stop_t* st = arg;
  int i;
  for (i = 0; i < st->n; i++) {
    if (weft_uv_tcp_accept(st->l, &st->servers[i], in_ms(60000)) != 0) {
      CHECK(0);
      break;
    }
    atomic_fetch_add(&st->accepted, 1);
  }
}

static void stop_setup(void* arg) {
  stop_t* st = arg;
  CHECK(listen_local(AF_INET, &st->l, &st->addr) == 0);
}

static void uv_stop_cancels_reads(void** state) {
  weft_runtime_t* rt = test_runtime(4);
  stop_t st;
  weft_counter_t c;
  weft_counter_t readers;
  int i;
  (void)state;

  raise_nofile();
  memset(&st, 0, sizeof(st));
  st.n = (int)test_size(1000);
  st.servers = calloc((size_t)st.n, sizeof(*st.servers));
  assert_int_equal(weft_uv_start(rt, &bridge), 0);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, stop_setup, &st, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_spawn(rt, stop_acceptor, &st, &c), 0);
  weft_counter_init(&readers, 0);
  for (i = 0; i < st.n; i++)
    assert_int_equal(weft_spawn(rt, stop_reader, &st, &readers), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  while (atomic_load(&st.connected) < st.n)
    test_sleep_ms(1);
  test_sleep_ms(50); /* most are blocked; any still posting are refused */
  assert_int_equal(weft_uv_stop(bridge), 0);
  assert_int_equal(weft_counter_wait(&readers, 0), 0);
  assert_int_equal(atomic_load(&st.cancelled), st.n);
  /* Streams outlive the bridge until their owner closes them; closing
   * works from any thread. */
  for (i = 0; i < st.n; i++)
    assert_int_equal(weft_uv_stream_close(st.servers[i]), 0);
  assert_int_equal(weft_uv_stream_close(st.l), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  free(st.servers);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- EMFILE at accept ------------------------------------------------------
 */

typedef struct {
  int skipped;
} emfile_t;

static void emfile_job(void* arg) {
  emfile_t* e = arg;
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s = NULL;
  struct sockaddr_storage addr;
  struct rlimit old;
  struct rlimit low;
  int fillers[256];
  int nfill = 0;
  int probe;
  int nul;
  char buf[4];

  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  /* Queued in the kernel: nobody accepts yet. */
  CHECK(weft_uv_tcp_connect((struct sockaddr*)&addr, &c, in_ms(10000)) == 0);
  /* Use up every descriptor under a low limit. */
  nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(nul >= 0);
  probe = dup(nul);
  CHECK(probe >= 0);
  close(probe);
  getrlimit(RLIMIT_NOFILE, &old);
  low = old;
  low.rlim_cur = (rlim_t)probe + 32;
  if (setrlimit(RLIMIT_NOFILE, &low) != 0) {
    e->skipped = 1; /* e.g. under Valgrind */
    close(nul);
    weft_uv_stream_close(c);
    weft_uv_stream_close(l);
    return;
  }
  while (nfill < 256) {
    int fd = dup(nul);
    if (fd < 0)
      break;
    fillers[nfill++] = fd;
  }
  CHECK(errno == EMFILE);
  /* accept(2) fails with EMFILE: the listener backs off, the caller keeps
   * waiting until its deadline. */
  CHECK(weft_uv_tcp_accept(l, &s, in_ms(100)) == UV_ETIMEDOUT);
  while (nfill > 0)
    close(fillers[--nfill]);
  setrlimit(RLIMIT_NOFILE, &old);
  close(nul);
  /* Descriptors again: the queued connection is served. */
  CHECK(weft_uv_tcp_accept(l, &s, in_ms(10000)) == 0);
  if (s != NULL) {
    CHECK(weft_uv_stream_write(s, "emf", 3, in_ms(10000)) == 3);
    CHECK(read_full(c, buf, 3) == 3 && memcmp(buf, "emf", 3) == 0);
    CHECK(weft_uv_stream_close(s) == 0);
  }
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
}

static void tcp_accept_emfile(void** state) {
  emfile_t e = {0};
  const char* vg = getenv("WEFT_VALGRIND");
  (void)state;
  /* Valgrind treats descriptors above a lowered limit as invalid. */
  if (vg != NULL && *vg == '1')
    skip();
  run_job(2, emfile_job, &e);
  if (e.skipped)
    skip();
}

/* ---- pipes and Unix domain sockets -----------------------------------------
 */

static void pipe_echo_check(weft_uv_stream_t* c, size_t n) {
  char* out = malloc(n);
  char* in = malloc(n);
  fill_random(out, n, n);
  CHECK(weft_uv_stream_write(c, out, n, in_ms(10000)) == (int64_t)n);
  CHECK(read_full(c, in, n) == (int64_t)n);
  CHECK(memcmp(in, out, n) == 0);
  free(out);
  free(in);
}

static void pipes_job(void* arg) {
  char name[64];
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  weft_uv_stream_t* other;
  weft_uv_stream_t* a;
  weft_uv_stream_t* z;
  struct sockaddr_storage addr;
  weft_counter_t done;
  int len;
  int sv[2];
  int fds[2];
  char buf[8];
  (void)arg;

  snprintf(name, sizeof(name), "/tmp/weft-test-%d.sock", (int)getpid());
  unlink(name);
  CHECK(weft_uv_pipe_listen(name, 16, &l) == 0);
  CHECK(weft_uv_pipe_listen(name, 16, &other) == UV_EADDRINUSE);
  CHECK(weft_uv_stream_sockname(l, &addr, &len) == 0);
  CHECK(addr.ss_family == AF_UNIX);
  CHECK(weft_uv_tcp_accept(l, &s, in_ms(10)) == UV_EINVAL); /* wrong kind */
  CHECK(weft_uv_pipe_connect(name, &c, in_ms(10000)) == 0);
  CHECK(weft_uv_pipe_accept(l, &s, in_ms(10000)) == 0);
  CHECK(weft_uv_tcp_nodelay(c, 1) == UV_EINVAL);
  weft_counter_init(&done, 0);
  CHECK(weft_spawn(NULL, echo_conn, s, &done) == 0);
  pipe_echo_check(c, 1);
  pipe_echo_check(c, 300000);
  CHECK(weft_uv_stream_shutdown(c, in_ms(10000)) == 0);
  CHECK(weft_uv_stream_read(c, buf, sizeof(buf), in_ms(10000)) == 0);
  weft_counter_wait(&done, 0);
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
  /* The listener unlinks its path once closed. */
  for (len = 0; len < 1000 && access(name, F_OK) == 0; len++)
    weft_uv_sleep(5, WEFT_UV_FOREVER);
  CHECK(access(name, F_OK) != 0);
  CHECK(weft_uv_pipe_connect(name, &c, in_ms(10000)) == UV_ENOENT);

  /* Wrapped descriptors: a socketpair, then a plain pipe. */
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK(weft_uv_pipe_open(sv[0], &a) == 0);
  CHECK(weft_uv_pipe_open(sv[1], &z) == 0);
  weft_counter_init(&done, 0);
  CHECK(weft_spawn(NULL, echo_conn, z, &done) == 0);
  pipe_echo_check(a, 100000);
  CHECK(weft_uv_stream_shutdown(a, in_ms(10000)) == 0);
  weft_counter_wait(&done, 0);
  CHECK(weft_uv_stream_close(a) == 0);

  CHECK(pipe(fds) == 0);
  CHECK(weft_uv_pipe_open(fds[0], &a) == 0);
  CHECK(weft_uv_pipe_open(fds[1], &z) == 0);
  CHECK(weft_uv_stream_write(z, "pipe", 4, in_ms(10000)) == 4);
  CHECK(weft_uv_stream_close(z) == 0);
  CHECK(read_full(a, buf, 4) == 4 && memcmp(buf, "pipe", 4) == 0);
  CHECK(weft_uv_stream_read(a, buf, sizeof(buf), in_ms(10000)) == 0);
  CHECK(weft_uv_stream_close(a) == 0);
}

static void pipe_echo(void** state) {
  (void)state;
  run_job(2, pipes_job, NULL);
}

/* ---- bad arguments and contexts --------------------------------------------
 */

static void bad_args_job(void* arg) {
  weft_uv_stream_t* l;
  weft_uv_stream_t* c;
  weft_uv_stream_t* s;
  weft_uv_stream_t* out;
  struct sockaddr_storage addr;
  struct sockaddr_storage unix_addr;
  char longname[200];
  char buf[4];
  int len;
  (void)arg;

  memset(&unix_addr, 0, sizeof(unix_addr));
  unix_addr.ss_family = AF_UNIX;
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  CHECK(listen_local(AF_INET, &l, &addr) == 0);
  CHECK(weft_uv_tcp_listen(NULL, 1, &out) == UV_EINVAL);
  CHECK(weft_uv_tcp_listen((struct sockaddr*)&addr, 1, NULL) == UV_EINVAL);
  CHECK(weft_uv_tcp_listen((struct sockaddr*)&unix_addr, 1, &out) == UV_EINVAL);
  CHECK(weft_uv_tcp_listen((struct sockaddr*)&addr, 1, &out) == UV_EADDRINUSE);
  CHECK(weft_uv_tcp_connect(NULL, &out, 0) == UV_EINVAL);
  CHECK(weft_uv_tcp_connect((struct sockaddr*)&addr, NULL, 0) == UV_EINVAL);
  CHECK(weft_uv_tcp_accept(NULL, &out, 0) == UV_EINVAL);
  CHECK(weft_uv_tcp_accept(l, NULL, 0) == UV_EINVAL);
  CHECK(weft_uv_pipe_accept(l, &out, 0) == UV_EINVAL);
  CHECK(weft_uv_pipe_listen(NULL, 1, &out) == UV_EINVAL);
  CHECK(weft_uv_pipe_listen("", 1, &out) == UV_EINVAL);
  CHECK(weft_uv_pipe_listen(longname, 1, &out) == UV_ENAMETOOLONG);
  CHECK(weft_uv_pipe_connect(longname, &out, 0) == UV_ENAMETOOLONG);
  CHECK(weft_uv_pipe_connect("/tmp", NULL, 0) == UV_EINVAL);
  CHECK(weft_uv_pipe_open(-1, &out) == UV_EINVAL);
  CHECK(weft_uv_stream_read(NULL, buf, 1, 0) == UV_EINVAL);
  CHECK(weft_uv_stream_read(l, buf, 1, 0) == UV_EINVAL); /* a listener */
  CHECK(weft_uv_stream_write(NULL, buf, 1, 0) == UV_EINVAL);
  CHECK(weft_uv_stream_write(l, buf, 1, 0) == UV_EINVAL);
  CHECK(weft_uv_stream_shutdown(NULL, 0) == UV_EINVAL);
  CHECK(weft_uv_stream_shutdown(l, 0) == UV_EINVAL);
  CHECK(weft_uv_stream_sockname(NULL, &addr, &len) == UV_EINVAL);
  CHECK(weft_uv_stream_sockname(l, NULL, &len) == UV_EINVAL);
  CHECK(weft_uv_stream_peername(l, &addr, &len) == UV_EINVAL);
  CHECK(weft_uv_stream_buffered(NULL) == UV_EINVAL);
  CHECK(weft_uv_stream_buffered(l) == UV_EINVAL);
  CHECK(weft_uv_tcp_nodelay(NULL, 1) == UV_EINVAL);
  CHECK(weft_uv_tcp_nodelay(l, 1) == UV_EINVAL);
  CHECK(weft_uv_tcp_keepalive(l, 1, 1) == UV_EINVAL);
  CHECK(weft_uv_stream_close(NULL) == UV_EINVAL);
  CHECK(weft_uv_stream_fileno(NULL, NULL) == UV_EINVAL);
  /* A deadline already passed never starts the operation. */
  tcp_pair(l, &addr, &c, &s);
  CHECK(weft_uv_stream_read(c, buf, 1, uv_hrtime() - 1) == UV_ETIMEDOUT);
  CHECK(weft_uv_stream_write(c, "x", 1, in_ms(10000)) == 1);
  CHECK(read_full(s, buf, 1) == 1 && buf[0] == 'x');
  CHECK(weft_uv_stream_close(c) == 0);
  CHECK(weft_uv_stream_close(s) == 0);
  CHECK(weft_uv_stream_close(l) == 0);
}

static void no_bridge_job(void* arg) {
  int* rc = arg;
  weft_uv_stream_t* out;
  *rc = weft_uv_pipe_listen("/tmp/x", 1, &out);
}

static void stream_bad_args(void** state) {
  weft_uv_stream_t* out = NULL;
  struct sockaddr_in addr;
  char buf[4];
  int len;
  struct sockaddr_storage ss;
  weft_runtime_t* rt;
  weft_counter_t c;
  int rc = 0;
  (void)state;

  uv_ip4_addr("127.0.0.1", 1, &addr);
  /* Off a fiber. */
  assert_int_equal(weft_uv_tcp_listen((struct sockaddr*)&addr, 1, &out),
                   UV_EPERM);
  assert_int_equal(weft_uv_tcp_connect((struct sockaddr*)&addr, &out, 0),
                   UV_EPERM);
  assert_int_equal(weft_uv_tcp_accept(out, &out, 0), UV_EPERM);
  assert_int_equal(weft_uv_pipe_listen("/tmp/x", 1, &out), UV_EPERM);
  assert_int_equal(weft_uv_pipe_accept(out, &out, 0), UV_EPERM);
  assert_int_equal(weft_uv_pipe_connect("/tmp/x", &out, 0), UV_EPERM);
  assert_int_equal(weft_uv_pipe_open(0, &out), UV_EPERM);
  assert_int_equal(weft_uv_stream_read(out, buf, 1, 0), UV_EPERM);
  assert_int_equal(weft_uv_stream_write(out, buf, 1, 0), UV_EPERM);
  assert_int_equal(weft_uv_stream_shutdown(out, 0), UV_EPERM);
  assert_int_equal(weft_uv_stream_sockname(out, &ss, &len), UV_EPERM);
  assert_int_equal(weft_uv_stream_peername(out, &ss, &len), UV_EPERM);
  assert_int_equal(weft_uv_stream_buffered(out), UV_EPERM);
  assert_int_equal(weft_uv_tcp_nodelay(out, 1), UV_EPERM);
  assert_int_equal(weft_uv_tcp_keepalive(out, 1, 1), UV_EPERM);
  assert_int_equal(weft_uv_stream_close(NULL), UV_EINVAL);
  /* A fiber, but no bridge. */
  rt = test_runtime(1);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, no_bridge_job, &rc, &c), 0);
  weft_counter_wait(&c, 0);
  assert_int_equal(rc, UV_EINVAL);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  /* On a fiber. */
  run_job(2, bad_args_job, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tcp_echo_ipv4),
      cmocka_unit_test(tcp_echo_ipv6),
      cmocka_unit_test(tcp_connection_errors),
      cmocka_unit_test(tcp_echo_many),
      cmocka_unit_test(tcp_backpressure),
      cmocka_unit_test(tcp_concurrent_writers),
      cmocka_unit_test(tcp_deadlines_and_cancel),
      cmocka_unit_test(tcp_close_wakes_waiters),
      cmocka_unit_test(uv_stop_cancels_reads),
      cmocka_unit_test(tcp_accept_emfile),
      cmocka_unit_test(pipe_echo),
      cmocka_unit_test(stream_bad_args),
  };
  return cmocka_run_group_tests_name("uv_tcp", tests, NULL, NULL);
}
