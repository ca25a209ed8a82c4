/* echo_server.c: a TCP echo server with a fiber per connection, written as
 * plain blocking code: accept, then read and write back until the client
 * hangs up. Each call suspends only its own fiber; one libuv loop thread
 * does the I/O for all of them.
 *
 *   echo_server PORT [WORKERS]   (PORT 0: any free port; WORKERS 0: one per
 *                                 core) -- runs until killed
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "weft_uv.h"

static void serve(void* arg) {
  weft_uv_stream_t* conn = arg;
  char buf[64 * 1024];
  int64_t n;

  weft_uv_tcp_nodelay(conn, 1);
  while ((n = weft_uv_stream_read(conn, buf, sizeof(buf), WEFT_UV_FOREVER)) >
         0) {
    if (weft_uv_stream_write(conn, buf, (size_t)n, WEFT_UV_FOREVER) != n)
      break;
  }
  weft_uv_stream_close(conn);
}

static void listen_and_accept(void* arg) {
  int port = *(int*)arg;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  weft_uv_stream_t* listener;
  weft_uv_stream_t* conn;
  int len;
  int err;

  uv_ip4_addr("127.0.0.1", port, &addr);
  err = weft_uv_tcp_listen((const struct sockaddr*)&addr, 1024, &listener);
  if (err == 0)
    err = weft_uv_stream_sockname(listener, &bound, &len);
  if (err != 0) {
    fprintf(stderr, "echo_server: listen: %s\n", uv_strerror(err));
    exit(1);
  }
  printf("echo_server: listening on 127.0.0.1:%d\n",
         ntohs(((struct sockaddr_in*)&bound)->sin_port));
  fflush(stdout);
  for (;;) {
    err = weft_uv_tcp_accept(listener, &conn, WEFT_UV_FOREVER);
    if (err == UV_ECANCELED)
      break;
    if (err == 0 && weft_spawn(NULL, serve, conn, NULL) != 0)
      weft_uv_stream_close(conn);
  }
  weft_uv_stream_close(listener);
}

int main(int argc, char** argv) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_uv_t* bridge;
  weft_counter_t done;
  int port;

  if (argc < 2) {
    fprintf(stderr, "usage: echo_server PORT [WORKERS]\n");
    return 2;
  }
  port = atoi(argv[1]);
  weft_config_init(&cfg);
  if (argc > 2)
    cfg.workers = (unsigned)atoi(argv[2]);
  if (weft_runtime_create(&rt, &cfg) != 0 || weft_uv_start(rt, &bridge) != 0) {
    fprintf(stderr, "echo_server: cannot start\n");
    return 1;
  }
  weft_counter_init(&done, 0);
  weft_spawn(rt, listen_and_accept, &port, &done);
  weft_counter_wait(&done, 0); /* forever, or until the listener fails */
  weft_uv_stop(bridge);
  weft_runtime_destroy(rt);
  return 0;
}
