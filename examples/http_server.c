/* http_server.c: an HTTP/1.1 keep-alive server with a fiber per connection.
 *
 * Each connection is a job that reads requests with weft_uv_stream_read and
 * answers them in straight-line code. Routes:
 *   GET /          "Hello, World!" (the peers' http_hello workload)
 *   GET /fib/N     fib(N), computed with a job per call: CPU work fanned
 *                  out over every worker while the connection's fiber waits
 *   anything else  404
 * Requests may be pipelined; bodies announced by Content-Length are skipped.
 *
 *   http_server PORT      (0 picks a free port; the port is printed)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weft_uv.h"

#define BUF_SIZE 16384
#define IDLE_MS 60000

static const char HELLO[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: keep-alive\r\n\r\nHello, World!";

/* ---- CPU work for /fib/N: a job per call -----------------------------------
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
  if (f->n < 16) { /* small enough: no jobs below this */
    a.n = f->n - 1;
    b.n = f->n - 2;
    fib_job(&a);
    fib_job(&b);
    f->r = a.r + b.r;
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

/* ---- one connection ---------------------------------------------------------
 */

typedef struct {
  weft_uv_stream_t* s;
  char in[BUF_SIZE];
  size_t len;
  char out[512];
} conn_t;

static int send_all(conn_t* c, const char* p, size_t n) {
  return weft_uv_stream_write(c->s, p, n, weft_uv_deadline_in(IDLE_MS)) < 0 ? -1
                                                                            : 0;
}

static int respond(conn_t* c, const char* path, int keep_alive) {
  const char* conn = keep_alive ? "keep-alive" : "close";
  char body[128];
  int blen;
  int n;

  if (strcmp(path, "/") == 0 && keep_alive)
    return send_all(c, HELLO, sizeof(HELLO) - 1);
  if (strncmp(path, "/fib/", 5) == 0) {
    char* end;
    long v = strtol(path + 5, &end, 10);
    if (*end == '\0' && end != path + 5 && v >= 0 && v <= 45) {
      fib_t f = {(int)v, 0};
      fib_job(&f);
      blen = snprintf(body, sizeof(body), "fib(%ld) = %ld\n", v, f.r);
      n = snprintf(c->out, sizeof(c->out),
                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %d\r\nConnection: %s\r\n\r\n%s",
                   blen, conn, body);
      return send_all(c, c->out, (size_t)n);
    }
  }
  if (strcmp(path, "/") == 0) {
    snprintf(body, sizeof(body), "Hello, World!");
  } else {
    snprintf(body, sizeof(body), "not found\n");
  }
  blen = (int)strlen(body);
  n = snprintf(c->out, sizeof(c->out),
               "HTTP/1.1 %s\r\nContent-Type: text/plain\r\n"
               "Content-Length: %d\r\nConnection: %s\r\n\r\n%s",
               strcmp(path, "/") == 0 ? "200 OK" : "404 Not Found", blen, conn,
               body);
  return send_all(c, c->out, (size_t)n);
}

/* Handles every complete request in the buffer. Returns the bytes used, or
 * -1 to close the connection. */
static long handle_requests(conn_t* c) {
  size_t used = 0;

  for (;;) {
    char* start = c->in + used;
    char* head_end = memmem(start, c->len - used, "\r\n\r\n", 4);
    char path[256] = "";
    char method[16] = "";
    size_t head_len;
    long body = 0;
    int keep_alive = 1;
    char* line;

    if (head_end == NULL)
      return (long)used;
    *head_end = '\0';
    head_len = (size_t)(head_end - start) + 4;
    if (sscanf(start, "%15s %255s", method, path) != 2)
      return -1;
    for (line = strstr(start, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
      if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
        body = strtol(line + 17, NULL, 10);
      else if (strncasecmp(line + 2, "Connection: close", 17) == 0)
        keep_alive = 0;
    }
    if (strstr(start, "HTTP/1.0") != NULL &&
        strcasestr(start, "Connection: keep-alive") == NULL)
      keep_alive = 0;
    if (body < 0 || head_len + (size_t)body > c->len - used)
      return body < 0 || head_len + (size_t)body > BUF_SIZE ? -1 : (long)used;
    used += head_len + (size_t)body;
    if (respond(c, path, keep_alive) != 0 || !keep_alive)
      return -1;
  }
}

static void connection(void* arg) {
  conn_t* c = arg;
  int64_t n;
  long used;

  weft_uv_tcp_nodelay(c->s, 1);
  for (;;) {
    n = weft_uv_stream_read(c->s, c->in + c->len, BUF_SIZE - c->len,
                            weft_uv_deadline_in(IDLE_MS));
    if (n <= 0)
      break;
    c->len += (size_t)n;
    used = handle_requests(c);
    if (used < 0)
      break;
    memmove(c->in, c->in + used, c->len - (size_t)used);
    c->len -= (size_t)used;
    if (c->len == BUF_SIZE)
      break; /* a header larger than the buffer */
  }
  weft_uv_stream_close(c->s);
  free(c);
}

/* ---- the accept loop
 * ---------------------------------------------------------- */

typedef struct {
  int port;
  int err;
  weft_uv_job_t acceptor; /* the accept loop, for the signal jobs */
  int signum;             /* set by a signal job's copy */
} server_t;

typedef struct {
  server_t* srv;
  int signum;
} sigwait_t;

/* SIGINT or SIGTERM: cancel the accept loop, which then stops the bridge,
 * which cancels every connection's read: weft_run returns. */
static void wait_signal(void* arg) {
  sigwait_t* w = arg;
  weft_uv_t* b = weft_uv_self();
  if (weft_uv_signal_wait(w->signum, WEFT_UV_FOREVER) == 0) {
    w->srv->signum = w->signum;
    weft_uv_cancel(b, w->srv->acceptor);
  }
}

static void serve(void* arg) {
  server_t* srv = arg;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  weft_uv_stream_t* listener;
  weft_uv_t* b;

  srv->err = weft_uv_start(weft_runtime_self(), &b);
  if (srv->err != 0)
    return;
  uv_ip4_addr("127.0.0.1", srv->port, &addr);
  srv->err = weft_uv_tcp_listen((const struct sockaddr*)&addr, 1024, &listener);
  if (srv->err != 0) {
    weft_uv_stop(b);
    return;
  }
  srv->acceptor = weft_uv_job_self();
  {
    static sigwait_t waits[2];
    waits[0].srv = srv;
    waits[0].signum = SIGINT;
    waits[1].srv = srv;
    waits[1].signum = SIGTERM;
    weft_spawn(NULL, wait_signal, &waits[0], NULL);
    weft_spawn(NULL, wait_signal, &waits[1], NULL);
  }
  weft_uv_stream_sockname(listener, &bound, &len);
  printf("http_server: listening on 127.0.0.1:%d\n",
         ntohs(((struct sockaddr_in*)&bound)->sin_port));
  fflush(stdout);
  for (;;) {
    conn_t* c = malloc(sizeof(*c));
    if (c == NULL)
      break;
    c->len = 0;
    if (weft_uv_tcp_accept(listener, &c->s, WEFT_UV_FOREVER) != 0) {
      free(c);
      break;
    }
    if (weft_spawn(NULL, connection, c, NULL) != 0) {
      weft_uv_stream_close(c->s);
      free(c);
    }
  }
  weft_uv_stream_close(listener);
  /* Cancels what is still waiting: idle connections, the other signal. */
  weft_uv_stop(b);
}

int main(int argc, char** argv) {
  server_t srv;
  int err;

  if (argc < 2) {
    fprintf(stderr, "usage: http_server PORT\n");
    return 2;
  }
  memset(&srv, 0, sizeof(srv));
  srv.port = atoi(argv[1]);
  err = weft_run(NULL, serve, &srv);
  if (err == 0)
    err = srv.err;
  if (err != 0) {
    fprintf(stderr, "http_server: %s\n", uv_strerror(err));
    return 1;
  }
  printf("http_server: stopped (signal %d)\n", srv.signum);
  return 0;
}
