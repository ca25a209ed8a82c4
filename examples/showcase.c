/* showcase.c: weft end to end, run by `make demo`.
 *
 * 1. Fibers write a generated set of files with the bridge's file calls.
 * 2. A server fiber serves that directory over HTTP/1.1, a fiber per
 *    connection, reading each file with weft_uv_fs_read.
 * 3. Client fibers fetch every file concurrently over keep-alive
 *    connections.
 * 4. Each body is checked, byte for byte, against what was written, by
 *    parallel jobs (weft_parallel_for over 16 KiB chunks).
 * Then it prints a short summary. Exits non-zero on any mismatch.
 *
 *   showcase [files] [clients]      (defaults 48 and 8)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft_uv.h"

#define MAX_FILES 256

typedef struct {
  char name[32];
  size_t size;
  unsigned char* data; /* what was written, kept to verify against */
} file_t;

typedef struct {
  char dir[64];
  int nfiles;
  int nclients;
  file_t files[MAX_FILES];
  int port;
  weft_uv_stream_t* listener;
  weft_counter_t written;
  weft_counter_t fetched;
  atomic_long bytes;
  atomic_int verified;
  atomic_int errors;
  weft_uv_job_t acceptor;
} demo_t;

static void fail(demo_t* d, const char* what, int64_t err) {
  fprintf(stderr, "showcase: %s: %s\n", what, uv_strerror((int)err));
  atomic_fetch_add(&d->errors, 1);
}

/* ---- 1. generate
 * ------------------------------------------------------------- */

typedef struct {
  demo_t* d;
  int i;
} ref_t;

static void write_file(void* arg) {
  ref_t* r = arg;
  file_t* f = &r->d->files[r->i];
  char path[128];
  uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(r->i + 1);
  int64_t n;
  size_t k;
  int fd;

  f->size = (size_t)(r->i % 8) * 37000 + (size_t)r->i * 513 + 1;
  f->data = malloc(f->size);
  for (k = 0; k < f->size; k++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->data[k] = (unsigned char)x;
  }
  snprintf(f->name, sizeof(f->name), "file%03d.bin", r->i);
  snprintf(path, sizeof(path), "%s/%s", r->d->dir, f->name);
  fd = weft_uv_fs_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644,
                       WEFT_UV_FOREVER);
  if (fd < 0) {
    fail(r->d, "open", fd);
    return;
  }
  n = weft_uv_fs_write(fd, f->data, f->size, 0, WEFT_UV_FOREVER);
  if (n != (int64_t)f->size)
    fail(r->d, "write", n < 0 ? n : UV_EIO);
  weft_uv_fs_close(fd, WEFT_UV_FOREVER);
}

/* ---- 2. serve
 * ------------------------------------------------------------------ */

typedef struct {
  demo_t* d;
  weft_uv_stream_t* s;
} conn_t;

static int serve_one(conn_t* c, const char* name) {
  char path[128];
  char head[128];
  char buf[65536];
  uv_stat_t st;
  int64_t off = 0;
  int64_t n;
  int fd;

  snprintf(path, sizeof(path), "%s/%s", c->d->dir, name);
  fd = weft_uv_fs_open(path, O_RDONLY, 0, WEFT_UV_FOREVER);
  if (fd < 0 || weft_uv_fs_fstat(fd, &st, WEFT_UV_FOREVER) != 0) {
    static const char nf[] =
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    if (fd >= 0)
      weft_uv_fs_close(fd, WEFT_UV_FOREVER);
    return weft_uv_stream_write(c->s, nf, sizeof(nf) - 1, WEFT_UV_FOREVER) < 0
               ? -1
               : 0;
  }
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
               (unsigned long long)st.st_size);
  if (weft_uv_stream_write(c->s, head, (size_t)n, WEFT_UV_FOREVER) < 0)
    off = -1;
  while (off >= 0 && (n = weft_uv_fs_read(fd, buf, sizeof(buf), off,
                                          WEFT_UV_FOREVER)) > 0) {
    if (weft_uv_stream_write(c->s, buf, (size_t)n, WEFT_UV_FOREVER) < 0)
      off = -1;
    else
      off += n;
  }
  weft_uv_fs_close(fd, WEFT_UV_FOREVER);
  return off < 0 ? -1 : 0;
}

static void connection(void* arg) {
  conn_t* c = arg;
  char req[1024];
  size_t len = 0;
  int64_t n;

  for (;;) {
    char* end = memmem(req, len, "\r\n\r\n", 4);
    char name[64];
    if (end != NULL) {
      size_t used = (size_t)(end - req) + 4;
      *end = '\0';
      if (sscanf(req, "GET /%63s", name) != 1 || serve_one(c, name) != 0)
        break;
      memmove(req, req + used, len - used);
      len -= used;
      continue;
    }
    n = weft_uv_stream_read(c->s, req + len, sizeof(req) - len - 1,
                            WEFT_UV_FOREVER);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  weft_uv_stream_close(c->s);
  free(c);
}

static void server(void* arg) {
  demo_t* d = arg;
  d->acceptor = weft_uv_job_self();
  for (;;) {
    conn_t* c = malloc(sizeof(*c));
    c->d = d;
    if (weft_uv_tcp_accept(d->listener, &c->s, WEFT_UV_FOREVER) != 0) {
      free(c);
      break;
    }
    weft_spawn(NULL, connection, c, NULL);
  }
}

/* ---- 3. fetch and 4. verify
 * ------------------------------------------------------ */

typedef struct {
  const unsigned char* got;
  const unsigned char* want;
  atomic_int* mismatches;
} cmp_t;

static void compare_chunk(size_t begin, size_t end, void* arg) {
  cmp_t* c = arg;
  if (memcmp(c->got + begin, c->want + begin, end - begin) != 0)
    atomic_fetch_add(c->mismatches, 1);
}

static int fetch(demo_t* d, weft_uv_stream_t* s, int i) {
  file_t* f = &d->files[i];
  char req[96];
  char head[256];
  size_t hlen = 0;
  size_t body_len;
  size_t got = 0;
  unsigned char* body;
  char* end;
  int64_t n;
  atomic_int mismatches = 0;
  cmp_t cmp;

  n = snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: demo\r\n\r\n",
               f->name);
  if (weft_uv_stream_write(s, req, (size_t)n, WEFT_UV_FOREVER) < 0)
    return -1;
  /* Read until the blank line; what follows it is the body's start. */
  while ((end = memmem(head, hlen, "\r\n\r\n", 4)) == NULL) {
    if (hlen == sizeof(head) - 1)
      return -1; /* a head this long is not ours */
    n = weft_uv_stream_read(s, head + hlen, sizeof(head) - 1 - hlen,
                            WEFT_UV_FOREVER);
    if (n <= 0)
      return -1;
    hlen += (size_t)n;
  }
  *end = '\0';
  if (sscanf(head, "HTTP/1.1 200 OK\r\nContent-Length: %zu", &body_len) != 1)
    return -1;
  body = malloc(body_len + 1);
  got = hlen - (size_t)(end + 4 - head);
  if (got > body_len) {
    free(body);
    return -1;
  }
  memcpy(body, end + 4, got);
  while (got < body_len) {
    n = weft_uv_stream_read(s, body + got, body_len - got, WEFT_UV_FOREVER);
    if (n <= 0) {
      free(body);
      return -1;
    }
    got += (size_t)n;
  }
  atomic_fetch_add(&d->bytes, (long)body_len);
  /* Verify in parallel: 16 KiB chunks spread over the workers. */
  cmp.got = body;
  cmp.want = f->data;
  cmp.mismatches = &mismatches;
  if (body_len != f->size ||
      weft_parallel_for(NULL, 0, body_len, 16384, compare_chunk, &cmp) != 0 ||
      atomic_load(&mismatches) != 0)
    atomic_fetch_add(&d->errors, 1);
  else
    atomic_fetch_add(&d->verified, 1);
  free(body);
  return 0;
}

typedef struct {
  demo_t* d;
  int first;
} client_t;

static void client(void* arg) {
  client_t* c = arg;
  demo_t* d = c->d;
  struct sockaddr_in addr;
  weft_uv_stream_t* s;
  int i;
  int err;

  uv_ip4_addr("127.0.0.1", d->port, &addr);
  err = weft_uv_tcp_connect((const struct sockaddr*)&addr, &s,
                            weft_uv_deadline_in(10000));
  if (err != 0) {
    fail(d, "connect", err);
    return;
  }
  for (i = c->first; i < d->nfiles; i += d->nclients)
    if (fetch(d, s, i) != 0)
      fail(d, "fetch", UV_EIO);
  weft_uv_stream_close(s);
}

/* ---- the whole
 * --------------------------------------------------------------- */

static void demo_main(void* arg) {
  demo_t* d = arg;
  ref_t refs[MAX_FILES];
  client_t clients[64];
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  weft_uv_t* b;
  weft_counter_t srv;
  uint64_t t0;
  int i;
  int err = weft_uv_start(weft_runtime_self(), &b);

  if (err != 0) {
    fail(d, "bridge", err);
    return;
  }
  for (i = 0; i < d->nfiles; i++) {
    refs[i].d = d;
    refs[i].i = i;
    weft_spawn(NULL, write_file, &refs[i], &d->written);
  }
  weft_counter_wait(&d->written, 0);

  uv_ip4_addr("127.0.0.1", 0, &addr);
  err = weft_uv_tcp_listen((const struct sockaddr*)&addr, 128, &d->listener);
  if (err != 0) {
    weft_uv_stop(b);
    {
      fail(d, "listen", err);
      return;
    }
  }
  weft_uv_stream_sockname(d->listener, &bound, &len);
  d->port = ntohs(((struct sockaddr_in*)&bound)->sin_port);
  weft_counter_init(&srv, 0);
  weft_spawn(NULL, server, d, &srv);

  t0 = uv_hrtime();
  for (i = 0; i < d->nclients; i++) {
    clients[i].d = d;
    clients[i].first = i;
    weft_spawn(NULL, client, &clients[i], &d->fetched);
  }
  weft_counter_wait(&d->fetched, 0);
  printf(
      "showcase: %d files, %.1f MiB served over HTTP to %d client fibers "
      "in %.1f ms\n",
      d->nfiles, (double)atomic_load(&d->bytes) / (1 << 20), d->nclients,
      (double)(uv_hrtime() - t0) / 1e6);
  weft_uv_cancel(b, d->acceptor); /* the accept loop ends */
  weft_counter_wait(&srv, 0);
  weft_uv_stream_close(d->listener);
  weft_uv_stop(b); /* idle server connections end with UV_ECANCELED */
}

int main(int argc, char** argv) {
  static demo_t d;
  int i;
  int err;

  d.nfiles = argc > 1 ? atoi(argv[1]) : 48;
  d.nclients = argc > 2 ? atoi(argv[2]) : 8;
  if (d.nfiles < 1 || d.nfiles > MAX_FILES || d.nclients < 1 ||
      d.nclients > 64) {
    fprintf(stderr, "usage: showcase [files 1..%d] [clients 1..64]\n",
            MAX_FILES);
    return 2;
  }
  snprintf(d.dir, sizeof(d.dir), "/tmp/weft-showcase-XXXXXX");
  if (mkdtemp(d.dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  weft_counter_init(&d.written, 0);
  weft_counter_init(&d.fetched, 0);
  err = weft_run(NULL, demo_main, &d);
  for (i = 0; i < d.nfiles; i++) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", d.dir, d.files[i].name);
    unlink(path);
    free(d.files[i].data);
  }
  rmdir(d.dir);
  if (err != 0) {
    fprintf(stderr, "weft_run: %s\n", weft_strerror(err));
    return 1;
  }
  printf(
      "showcase: %d of %d files verified byte for byte (compared in "
      "parallel jobs), %d errors\n",
      atomic_load(&d.verified), d.nfiles, atomic_load(&d.errors));
  return atomic_load(&d.verified) == d.nfiles && atomic_load(&d.errors) == 0
             ? 0
             : 1;
}
