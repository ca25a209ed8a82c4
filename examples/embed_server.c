/* embed_server.c: a plain libuv server that offloads work to weft.
 *
 * The server is ordinary libuv code on its own loop and thread. Each request
 * line "N" asks for fib(N); the server hands it to weft with
 * weft_uv_submit, where a job computes it with a job per call (so the work
 * spreads over every worker), and answers "fib(N) = X" from the after
 * callback, back on the loop thread. weft_uv_attach installs the bridge in
 * the server's loop without taking it over.
 *
 *   embed_server PORT      (0 picks a free port; the port is printed)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft_uv.h"

typedef struct conn_s {
  uv_tcp_t tcp;
  char line[64];
  size_t len;
  int busy;   /* requests in flight */
  int closed; /* close asked; freed once nothing is in flight */
} conn_t;

typedef struct {
  conn_t* conn;
  int n;
  long result;
  char out[96];
  uv_write_t write;
} request_t;

static weft_uv_t* bridge;
static weft_runtime_t* rt;

/* ---- the weft side: fib with a job per call -------------------------------
 */

typedef struct {
  int n;
  long r;
} fib_t;

static void fib_job(void* arg) {
  fib_t* f = arg;
  fib_t a;
  fib_t b;
  weft_counter_t done;
  if (f->n < 2) {
    f->r = f->n;
    return;
  }
  a.n = f->n - 1;
  b.n = f->n - 2;
  weft_counter_init(&done, 0);
  weft_spawn(NULL, fib_job, &a, &done);
  weft_spawn(NULL, fib_job, &b, &done);
  weft_counter_wait(&done, 0);
  f->r = a.r + b.r;
}

static void compute(void* arg) {
  request_t* req = arg;
  fib_t f = {req->n, 0};
  fib_job(&f);
  req->result = f.r;
}

/* ---- the libuv side --------------------------------------------------------
 */

static void conn_closed(uv_handle_t* h) {
  free(h->data);
}

static void conn_close(conn_t* c) {
  c->closed = 1;
  if (c->busy == 0 && !uv_is_closing((uv_handle_t*)&c->tcp))
    uv_close((uv_handle_t*)&c->tcp, conn_closed);
}

static void written(uv_write_t* w, int status) {
  request_t* req = w->data;
  conn_t* c = req->conn;
  (void)status;
  c->busy--;
  if (c->closed)
    conn_close(c);
  free(req);
}

static void answered(void* arg, int status) {
  request_t* req = arg;
  conn_t* c = req->conn;
  uv_buf_t buf;
  int len;

  if (status != 0 || c->closed) {
    c->busy--;
    if (c->closed)
      conn_close(c);
    free(req);
    return;
  }
  len = snprintf(req->out, sizeof(req->out), "fib(%d) = %ld\n", req->n,
                 req->result);
  buf = uv_buf_init(req->out, (unsigned)len);
  req->write.data = req;
  if (uv_write(&req->write, (uv_stream_t*)&c->tcp, &buf, 1, written) != 0)
    written(&req->write, -1);
}

static void handle_line(conn_t* c) {
  request_t* req;
  char* end;
  long n = strtol(c->line, &end, 10);

  if (end == c->line || n < 0 || n > 40) {
    static char bad[] = "error: send a number from 0 to 40\n";
    uv_buf_t buf = uv_buf_init(bad, sizeof(bad) - 1);
    uv_try_write((uv_stream_t*)&c->tcp, &buf, 1);
    return;
  }
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return;
  req->conn = c;
  req->n = (int)n;
  c->busy++;
  if (weft_uv_submit(bridge, compute, req, answered) != 0) {
    c->busy--;
    free(req);
  }
}

static void on_alloc(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  static char slab[4096];
  (void)h;
  buf->base = slab;
  buf->len = size < sizeof(slab) ? size : sizeof(slab);
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  conn_t* c = s->data;
  ssize_t i;

  if (n < 0) {
    conn_close(c);
    return;
  }
  for (i = 0; i < n; i++) {
    char ch = buf->base[i];
    if (ch == '\n') {
      c->line[c->len] = '\0';
      handle_line(c);
      c->len = 0;
    } else if (c->len + 1 < sizeof(c->line)) {
      c->line[c->len++] = ch;
    }
  }
}

static void on_connection(uv_stream_t* server, int status) {
  conn_t* c;
  if (status < 0)
    return;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t*)&c->tcp) != 0) {
    uv_close((uv_handle_t*)&c->tcp, conn_closed);
    return;
  }
  uv_read_start((uv_stream_t*)&c->tcp, on_alloc, on_read);
}

static uv_tcp_t server;
static uv_signal_t sigint;
static uv_signal_t sigterm;

static void on_signal(uv_signal_t* s, int signum) {
  (void)signum;
  (void)s;
  /* Detach weft, then let the loop run dry. */
  weft_uv_stop(bridge);
  uv_close((uv_handle_t*)&server, NULL);
  uv_close((uv_handle_t*)&sigint, NULL);
  uv_close((uv_handle_t*)&sigterm, NULL);
}

int main(int argc, char** argv) {
  uv_loop_t* loop = uv_default_loop();
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  int err;

  if (argc < 2) {
    fprintf(stderr, "usage: embed_server PORT\n");
    return 2;
  }
  err = weft_runtime_create(&rt, NULL);
  if (err == 0)
    err = weft_uv_attach(rt, loop, &bridge);
  if (err != 0) {
    fprintf(stderr, "embed_server: %s\n", uv_strerror(err));
    return 1;
  }
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  uv_tcp_init(loop, &server);
  err = uv_tcp_bind(&server, (const struct sockaddr*)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t*)&server, 128, on_connection);
  if (err != 0) {
    fprintf(stderr, "embed_server: listen: %s\n", uv_strerror(err));
    return 1;
  }
  uv_tcp_getsockname(&server, (struct sockaddr*)&bound, &len);
  printf("embed_server: listening on 127.0.0.1:%d\n",
         ntohs(((struct sockaddr_in*)&bound)->sin_port));
  fflush(stdout);
  uv_signal_init(loop, &sigint);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  weft_runtime_destroy(rt);
  printf("embed_server: stopped\n");
  return 0;
}
