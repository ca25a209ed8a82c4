/* test_uv_extra.c: UDP, DNS, child processes and signals: success and
 * error paths, deadlines, cancellation, closing under a blocked fiber, the
 * bridge stopping under blocked fibers, bad arguments and contexts.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <string.h>

#include "test_util.h"
#include "weft_uv.h"

/* Runs `fn(arg)` as one job on a fresh runtime and bridge, then tears
 * down; the job CHECKs. */
static void run_job(weft_job_cb fn, void* arg) {
  weft_runtime_t* rt = test_runtime(2);
  weft_uv_t* b;
  weft_counter_t c;

  assert_int_equal(weft_uv_start(rt, &b), 0);
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, fn, arg, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* A job that reports its name, then blocks in some bridge call. */
typedef struct {
  weft_uv_job_t self;
  atomic_int ready;
  atomic_int done;
  int rc;
  int pid;
  void* arg;
} blocked_t;

static void blocked_begin(blocked_t* t) {
  t->self = weft_uv_job_self();
  atomic_store(&t->ready, 1);
}

static void blocked_end(blocked_t* t, int rc) {
  t->rc = rc;
  atomic_store(&t->done, 1);
}

static void wait_ready(blocked_t* t) {
  while (!atomic_load(&t->ready))
    test_sleep_ms(1);
  test_sleep_ms(20); /* let it block (cancel_until_done retries anyway) */
}

/* weft_uv_cancel is a no-op for a job not (yet) blocked: retry until the
 * job is done, so the test never depends on how fast it blocks. */
static void cancel_until_done(weft_uv_t* b, blocked_t* t) {
  wait_ready(t);
  while (!atomic_load(&t->done)) {
    assert_int_equal(weft_uv_cancel(b, t->self), 0);
    test_sleep_ms(5);
  }
}

static struct sockaddr_in loopback4(int port) {
  struct sockaddr_in a;
  assert_int_equal(uv_ip4_addr("127.0.0.1", port, &a), 0);
  return a;
}

/* ---- signals ----------------------------------------------------------------
 */

static void signal_waiter(void* arg) {
  blocked_t* t = arg;
  blocked_begin(t);
  blocked_end(t, weft_uv_signal_wait(SIGUSR1, WEFT_UV_FOREVER));
}

/* Raises SIGUSR1 once libuv's handler is installed: with the default
 * disposition the signal would end the test. */
static void signal_raiser(void* arg) {
  struct sigaction sa;
  (void)arg;
  for (;;) {
    CHECK(sigaction(SIGUSR1, NULL, &sa) == 0);
    if (sa.sa_handler != SIG_DFL)
      break;
    CHECK(weft_uv_sleep(1, WEFT_UV_FOREVER) == 0);
  }
  CHECK(raise(SIGUSR1) == 0);
}

/* One waiter: with two, the raise could come after the first had its
 * signal (and libuv restored SIG_DFL) but before the second installed its
 * handler. */
static void signal_one(void* arg) {
  blocked_t waiter;
  weft_counter_t c;
  (void)arg;

  memset(&waiter, 0, sizeof(waiter));
  weft_counter_init(&c, 0);
  CHECK(weft_spawn(weft_runtime_self(), signal_waiter, &waiter, &c) == 0);
  signal_raiser(NULL);
  CHECK(weft_counter_wait(&c, 0) == 0);
  CHECK(waiter.rc == 0);
}

static void signal_wait_raise(void** state) {
  (void)state;
  run_job(signal_one, NULL);
}

static void signal_errors_job(void* arg) {
  (void)arg;
  CHECK(weft_uv_signal_wait(SIGUSR2, weft_uv_deadline_in(20)) == UV_ETIMEDOUT);
  CHECK(weft_uv_signal_wait(0, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_signal_wait(-1, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_signal_wait(100000, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_signal_wait(SIGKILL, WEFT_UV_FOREVER) == UV_EINVAL);
}

static void signal_wait_errors(void** state) {
  (void)state;
  run_job(signal_errors_job, NULL);
}

/* ---- DNS --------------------------------------------------------------------
 */

static int is_eai(int rc) {
  return rc <= UV_EAI_ADDRFAMILY && rc >= UV_EAI_PROTOCOL;
}

static void dns_job(void* arg) {
  struct addrinfo hints;
  struct addrinfo* res = (struct addrinfo*)&hints;
  struct addrinfo* ai;
  int loopback = 0;
  int rc;
  (void)arg;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  CHECK(weft_uv_getaddrinfo("localhost", "80", &hints, &res, WEFT_UV_FOREVER) ==
        0);
  CHECK(res != NULL);
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    struct sockaddr_in* in = (struct sockaddr_in*)ai->ai_addr;
    CHECK(ai->ai_family == AF_INET);
    CHECK(ntohs(in->sin_port) == 80);
    if (in->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
      loopback = 1;
  }
  CHECK(loopback);
  weft_uv_freeaddrinfo(res);
  /* No hints, no service. */
  CHECK(weft_uv_getaddrinfo("localhost", NULL, NULL, &res, WEFT_UV_FOREVER) ==
        0);
  CHECK(res != NULL);
  weft_uv_freeaddrinfo(res);
  /* There is no network here: only /etc/hosts answers. */
  rc = weft_uv_getaddrinfo("no-such-host.invalid", NULL, NULL, &res,
                           WEFT_UV_FOREVER);
  CHECK(is_eai(rc));
  CHECK(res == NULL);
  /* A deadline already past: never started. */
  CHECK(weft_uv_getaddrinfo("localhost", NULL, NULL, &res,
                            weft_uv_deadline_in(0)) == UV_ETIMEDOUT);
  CHECK(res == NULL);
  CHECK(weft_uv_getaddrinfo(NULL, NULL, NULL, &res, WEFT_UV_FOREVER) ==
        UV_EINVAL);
  CHECK(weft_uv_getaddrinfo("localhost", NULL, NULL, NULL, WEFT_UV_FOREVER) ==
        UV_EINVAL);
}

static void dns_getaddrinfo(void** state) {
  (void)state;
  run_job(dns_job, NULL);
}

static void nameinfo_job(void* arg) {
  struct sockaddr_in a = loopback4(80);
  struct sockaddr_un {
    sa_family_t family;
    char path[108];
  } unix_addr = {AF_UNIX, "/tmp/x"};
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  char tiny[2];
  (void)arg;

  CHECK(weft_uv_getnameinfo((struct sockaddr*)&a,
                            NI_NUMERICHOST | NI_NUMERICSERV, host, sizeof(host),
                            serv, sizeof(serv), WEFT_UV_FOREVER) == 0);
  CHECK(strcmp(host, "127.0.0.1") == 0);
  CHECK(strcmp(serv, "80") == 0);
  /* A name from /etc/hosts; the service alone. */
  CHECK(weft_uv_getnameinfo((struct sockaddr*)&a, NI_NAMEREQD, host,
                            sizeof(host), NULL, 0, WEFT_UV_FOREVER) == 0);
  CHECK(host[0] != '\0');
  CHECK(weft_uv_getnameinfo((struct sockaddr*)&a, NI_NUMERICSERV, NULL, 0, serv,
                            sizeof(serv), WEFT_UV_FOREVER) == 0);
  CHECK(strcmp(serv, "80") == 0);
  CHECK(weft_uv_getnameinfo((struct sockaddr*)&a, NI_NUMERICHOST, tiny,
                            sizeof(tiny), NULL, 0,
                            WEFT_UV_FOREVER) == UV_ENOSPC);
  CHECK(weft_uv_getnameinfo(NULL, 0, host, sizeof(host), NULL, 0,
                            WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_getnameinfo((struct sockaddr*)&unix_addr, 0, host, sizeof(host),
                            NULL, 0, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_getnameinfo((struct sockaddr*)&a, 0, NULL, 0, NULL, 0,
                            WEFT_UV_FOREVER) == UV_EINVAL);
}

static void dns_getnameinfo(void** state) {
  (void)state;
  run_job(nameinfo_job, NULL);
}

/* ---- UDP --------------------------------------------------------------------
 */

static int port_of(const struct sockaddr_storage* ss) {
  if (ss->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6*)ss)->sin6_port);
  return ntohs(((const struct sockaddr_in*)ss)->sin_port);
}

/* Two sockets on `bind_addr` exchange a datagram each way. */
static void udp_exchange(const struct sockaddr* bind_addr) {
  weft_uv_udp_t* a;
  weft_uv_udp_t* b;
  struct sockaddr_storage a_name;
  struct sockaddr_storage b_name;
  struct sockaddr_storage from;
  char buf[64];

  CHECK(weft_uv_udp_bind(bind_addr, 0, &a) == 0);
  CHECK(weft_uv_udp_bind(bind_addr, 0, &b) == 0);
  CHECK(weft_uv_udp_sockname(a, &a_name) == 0);
  CHECK(weft_uv_udp_sockname(b, &b_name) == 0);
  CHECK(a_name.ss_family == bind_addr->sa_family);
  CHECK(port_of(&a_name) != 0 && port_of(&a_name) != port_of(&b_name));
  CHECK(weft_uv_udp_send(a, "ping", 4, (struct sockaddr*)&b_name,
                         WEFT_UV_FOREVER) == 4);
  CHECK(weft_uv_udp_recv(b, buf, sizeof(buf), &from, WEFT_UV_FOREVER) == 4);
  CHECK(memcmp(buf, "ping", 4) == 0);
  CHECK(from.ss_family == bind_addr->sa_family);
  CHECK(port_of(&from) == port_of(&a_name));
  /* A datagram longer than the buffer is truncated. */
  CHECK(weft_uv_udp_send(b, "pong!", 5, (struct sockaddr*)&from,
                         WEFT_UV_FOREVER) == 5);
  CHECK(weft_uv_udp_recv(a, buf, 3, NULL, WEFT_UV_FOREVER) == 3);
  CHECK(memcmp(buf, "pon", 3) == 0);
  /* Empty datagrams are datagrams too. */
  CHECK(weft_uv_udp_send(b, NULL, 0, (struct sockaddr*)&a_name,
                         WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_udp_recv(a, buf, sizeof(buf), NULL, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_udp_recv(a, buf, sizeof(buf), NULL, weft_uv_deadline_in(20)) ==
        UV_ETIMEDOUT);
  CHECK(weft_uv_udp_dropped(a) == 0);
  CHECK(weft_uv_udp_close(a) == 0);
  CHECK(weft_uv_udp_close(b) == 0);
}

static void udp4_job(void* arg) {
  struct sockaddr_in any = loopback4(0);
  (void)arg;
  udp_exchange((struct sockaddr*)&any);
}

static void udp_loopback_ipv4(void** state) {
  (void)state;
  run_job(udp4_job, NULL);
}

static void udp6_job(void* arg) {
  struct sockaddr_in6 any;
  weft_uv_udp_t* probe;
  (void)arg;
  CHECK(uv_ip6_addr("::1", 0, &any) == 0);
  if (weft_uv_udp_bind((struct sockaddr*)&any, 0, &probe) != 0) {
    fprintf(stderr, "udp_loopback_ipv6: no ::1 here; skipped\n");
    return;
  }
  CHECK(weft_uv_udp_close(probe) == 0);
  udp_exchange((struct sockaddr*)&any);
}

static void udp_loopback_ipv6(void** state) {
  (void)state;
  run_job(udp6_job, NULL);
}

/* Datagrams nobody waits for fill the backlog; beyond it the oldest go. */
static void udp_backlog_job(void* arg) {
  enum { EXTRA = 5, N = WEFT_UV_UDP_BACKLOG + EXTRA };
  struct sockaddr_in any = loopback4(0);
  struct sockaddr_storage name;
  weft_uv_udp_t* tx;
  weft_uv_udp_t* rx;
  int i;
  int tries;
  (void)arg;

  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, &tx) == 0);
  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, &rx) == 0);
  CHECK(weft_uv_udp_sockname(rx, &name) == 0);
  for (i = 0; i < N; i++)
    CHECK(weft_uv_udp_send(tx, &i, sizeof(i), (struct sockaddr*)&name,
                           WEFT_UV_FOREVER) == (int)sizeof(i));
  /* Loopback delivers every datagram; wait until the loop has read them
   * all (not a timing assertion: only how long to poll). */
  for (tries = 0; tries < 10000 && weft_uv_udp_dropped(rx) < EXTRA; tries++)
    CHECK(weft_uv_sleep(1, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_udp_dropped(rx) == EXTRA);
  for (i = EXTRA; i < N; i++) {
    int got = -1;
    CHECK(weft_uv_udp_recv(rx, &got, sizeof(got), NULL, WEFT_UV_FOREVER) ==
          (int)sizeof(got));
    CHECK(got == i);
  }
  CHECK(weft_uv_udp_recv(rx, &i, sizeof(i), NULL, weft_uv_deadline_in(10)) ==
        UV_ETIMEDOUT);
  CHECK(weft_uv_udp_close(tx) == 0);
  CHECK(weft_uv_udp_close(rx) == 0);
}

static void udp_backlog_drops_oldest(void** state) {
  (void)state;
  run_job(udp_backlog_job, NULL);
}

static void udp_errors_job(void* arg) {
  struct sockaddr_in any = loopback4(0);
  struct sockaddr_storage name;
  struct sockaddr unix_addr;
  weft_uv_udp_t* u;
  weft_uv_udp_t* twin = NULL;
  char buf[4];
  (void)arg;

  memset(&unix_addr, 0, sizeof(unix_addr));
  unix_addr.sa_family = AF_UNIX;
  CHECK(weft_uv_udp_bind(NULL, 0, &u) == UV_EINVAL);
  CHECK(weft_uv_udp_bind(&unix_addr, 0, &u) == UV_EINVAL);
  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, NULL) == UV_EINVAL);
  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, &u) == 0);
  CHECK(weft_uv_udp_sockname(u, &name) == 0);
  /* The port is taken. */
  CHECK(weft_uv_udp_bind((struct sockaddr*)&name, 0, &twin) == UV_EADDRINUSE);
  CHECK(twin == NULL);
  CHECK(weft_uv_udp_send(u, "x", 1, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_udp_send(u, NULL, 1, (struct sockaddr*)&name,
                         WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_udp_send(NULL, "x", 1, (struct sockaddr*)&name,
                         WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_udp_recv(u, NULL, 1, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_udp_recv(NULL, buf, 1, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_udp_sockname(NULL, &name) == UV_EINVAL);
  CHECK(weft_uv_udp_sockname(u, NULL) == UV_EINVAL);
  CHECK(weft_uv_udp_close(NULL) == UV_EINVAL);
  CHECK(weft_uv_udp_close(u) == 0);
}

static void udp_errors(void** state) {
  (void)state;
  run_job(udp_errors_job, NULL);
}

/* A blocked recv: cancelled, or woken by a close from another fiber. */
static void udp_recv_blocked(void* arg) {
  blocked_t* t = arg;
  char buf[8];
  blocked_begin(t);
  blocked_end(
      t, weft_uv_udp_recv(t->arg, buf, sizeof(buf), NULL, WEFT_UV_FOREVER));
}

static void udp_bind_job(void* arg) {
  struct sockaddr_in any = loopback4(0);
  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, arg) == 0);
}

static void udp_close_job(void* arg) {
  CHECK(weft_uv_udp_close(arg) == 0);
}

/* Runs one job to completion on rt. */
static void run_on(weft_runtime_t* rt, weft_job_cb fn, void* arg) {
  weft_counter_t c;
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, fn, arg, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
}

/* One worker: once the receiver is running, the closer cannot run before
 * the receiver suspends, i.e. has posted its recv, which the loop then
 * starts before the close (posts start in order). */
static void udp_recv_cancel_and_close(void** state) {
  weft_runtime_t* rt = test_runtime(1);
  weft_uv_t* b;
  weft_uv_udp_t* u = NULL;
  blocked_t t;
  weft_counter_t c;
  (void)state;

  assert_int_equal(weft_uv_start(rt, &b), 0);
  run_on(rt, udp_bind_job, &u);
  assert_non_null(u);
  /* Cancelled. */
  memset(&t, 0, sizeof(t));
  t.arg = u;
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, udp_recv_blocked, &t, &c), 0);
  cancel_until_done(b, &t);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(t.rc, UV_ECANCELED);
  /* Woken by a close. */
  memset(&t, 0, sizeof(t));
  t.arg = u;
  assert_int_equal(weft_spawn(rt, udp_recv_blocked, &t, &c), 0);
  wait_ready(&t);
  run_on(rt, udp_close_job, u);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(t.rc, UV_ECANCELED);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- child processes --------------------------------------------------------
 */

/* Reads a stream to its end; returns the bytes read or an error. */
static int64_t read_all(weft_uv_stream_t* s, char* buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    int64_t r = weft_uv_stream_read(s, buf + n, cap - 1 - n, WEFT_UV_FOREVER);
    if (r < 0)
      return r;
    if (r == 0)
      break;
    n += (size_t)r;
    if (n == cap - 1)
      break;
  }
  buf[n] = '\0';
  return (int64_t)n;
}

static weft_uv_process_t* spawn_sh(const char* script, const char** env,
                                   const char* cwd) {
  const char* args[] = {"sh", "-c", script, NULL};
  weft_uv_process_options_t opts;
  weft_uv_process_t* p = NULL;

  memset(&opts, 0, sizeof(opts));
  opts.file = "/bin/sh";
  opts.args = args;
  opts.env = env;
  opts.cwd = cwd;
  opts.stdio[0] = WEFT_UV_STDIO_IGNORE;
  opts.stdio[1] = WEFT_UV_STDIO_PIPE;
  opts.stdio[2] = WEFT_UV_STDIO_INHERIT;
  CHECK(weft_uv_spawn(&opts, &p) == 0);
  return p;
}

/* Reads the child's stdout, waits for it, closes both; returns the exit
 * status. */
static int64_t finish_sh(weft_uv_process_t* p, char* out, size_t cap) {
  int64_t status = -1;
  int sig = -1;

  CHECK(weft_uv_process_stdio(p, 0) == NULL);
  CHECK(weft_uv_process_stdio(p, 2) == NULL);
  CHECK(read_all(weft_uv_process_stdio(p, 1), out, cap) >= 0);
  CHECK(weft_uv_process_wait(p, &status, &sig, WEFT_UV_FOREVER) == 0);
  CHECK(sig == 0);
  /* Waiting again returns the same at once. */
  CHECK(weft_uv_process_wait(p, NULL, NULL, WEFT_UV_FOREVER) == 0);
  CHECK(weft_uv_stream_close(weft_uv_process_stdio(p, 1)) == 0);
  CHECK(weft_uv_process_close(p) == 0);
  return status;
}

static void process_sh_job(void* arg) {
  const char* env[] = {"WEFT_X=42", "PATH=/usr/bin:/bin", NULL};
  weft_uv_process_t* p;
  char out[256];
  (void)arg;

  p = spawn_sh("echo hello; exit 3", NULL, NULL);
  CHECK(weft_uv_process_pid(p) > 0);
  CHECK(finish_sh(p, out, sizeof(out)) == 3);
  CHECK(strcmp(out, "hello\n") == 0);
  /* The environment and the working directory are the options'. */
  p = spawn_sh("echo $WEFT_X; pwd", env, "/");
  CHECK(finish_sh(p, out, sizeof(out)) == 0);
  CHECK(strcmp(out, "42\n/\n") == 0);
}

static void process_exit_and_output(void** state) {
  (void)state;
  run_job(process_sh_job, NULL);
}

static void process_cat_job(void* arg) {
  const char* args[] = {"cat", NULL};
  weft_uv_process_options_t opts;
  weft_uv_process_t* p;
  weft_uv_stream_t* in;
  char out[256];
  int64_t status = -1;
  (void)arg;

  memset(&opts, 0, sizeof(opts));
  opts.file = "cat";
  opts.args = args;
  opts.stdio[0] = WEFT_UV_STDIO_PIPE;
  opts.stdio[1] = WEFT_UV_STDIO_PIPE;
  opts.stdio[2] = WEFT_UV_STDIO_INHERIT;
  CHECK(weft_uv_spawn(&opts, &p) == 0);
  in = weft_uv_process_stdio(p, 0);
  CHECK(in != NULL);
  CHECK(weft_uv_stream_write(in, "weft ", 5, WEFT_UV_FOREVER) == 5);
  CHECK(weft_uv_stream_write(in, "says hi\n", 8, WEFT_UV_FOREVER) == 8);
  /* End of input: cat sees it and exits. */
  CHECK(weft_uv_stream_shutdown(in, WEFT_UV_FOREVER) == 0);
  CHECK(read_all(weft_uv_process_stdio(p, 1), out, sizeof(out)) == 13);
  CHECK(strcmp(out, "weft says hi\n") == 0);
  CHECK(weft_uv_process_wait(p, &status, NULL, WEFT_UV_FOREVER) == 0);
  CHECK(status == 0);
  CHECK(weft_uv_stream_close(in) == 0);
  CHECK(weft_uv_stream_close(weft_uv_process_stdio(p, 1)) == 0);
  CHECK(weft_uv_process_close(p) == 0);
}

static void process_cat_roundtrip(void** state) {
  (void)state;
  run_job(process_cat_job, NULL);
}

static weft_uv_process_t* spawn_sleep(void) {
  const char* args[] = {"sleep", "100", NULL};
  weft_uv_process_options_t opts;
  weft_uv_process_t* p = NULL;

  memset(&opts, 0, sizeof(opts));
  opts.file = "sleep";
  opts.args = args;
  opts.stdio[0] = WEFT_UV_STDIO_IGNORE;
  opts.stdio[1] = WEFT_UV_STDIO_IGNORE;
  opts.stdio[2] = WEFT_UV_STDIO_IGNORE;
  CHECK(weft_uv_spawn(&opts, &p) == 0);
  return p;
}

static void process_kill_job(void* arg) {
  weft_uv_process_t* p = spawn_sleep();
  int64_t status = -1;
  int sig = -1;
  (void)arg;

  CHECK(weft_uv_process_stdio(p, 1) == NULL);
  CHECK(weft_uv_process_wait(p, &status, &sig, weft_uv_deadline_in(20)) ==
        UV_ETIMEDOUT);
  CHECK(weft_uv_process_kill(p, SIGTERM) == 0);
  CHECK(weft_uv_process_wait(p, &status, &sig, WEFT_UV_FOREVER) == 0);
  CHECK(sig == SIGTERM);
  /* Exited: its pid is never signalled again. */
  CHECK(weft_uv_process_kill(p, SIGTERM) == UV_ESRCH);
  CHECK(weft_uv_process_close(p) == 0);
}

static void process_kill_sigterm(void** state) {
  (void)state;
  run_job(process_kill_job, NULL);
}

static void process_errors_job(void* arg) {
  const char* args[] = {"weft-no-such-program", NULL};
  weft_uv_process_options_t opts;
  weft_uv_process_t* p = (weft_uv_process_t*)&opts;
  (void)arg;

  memset(&opts, 0, sizeof(opts));
  opts.file = "/nonexistent/weft-no-such-program";
  opts.args = args;
  opts.stdio[1] = WEFT_UV_STDIO_PIPE; /* made, then discarded */
  CHECK(weft_uv_spawn(&opts, &p) == UV_ENOENT);
  CHECK(p == NULL);
  CHECK(weft_uv_spawn(NULL, &p) == UV_EINVAL);
  CHECK(weft_uv_spawn(&opts, NULL) == UV_EINVAL);
  opts.stdio[2] = (weft_uv_stdio_t)7;
  CHECK(weft_uv_spawn(&opts, &p) == UV_EINVAL);
  opts.stdio[2] = WEFT_UV_STDIO_INHERIT;
  opts.file = NULL;
  CHECK(weft_uv_spawn(&opts, &p) == UV_EINVAL);
  CHECK(weft_uv_process_wait(NULL, NULL, NULL, WEFT_UV_FOREVER) == UV_EINVAL);
  CHECK(weft_uv_process_kill(NULL, SIGTERM) == UV_EINVAL);
  CHECK(weft_uv_process_close(NULL) == UV_EINVAL);
  CHECK(weft_uv_process_pid(NULL) == UV_EINVAL);
  CHECK(weft_uv_process_stdio(NULL, 1) == NULL);
}

static void process_spawn_errors(void** state) {
  (void)state;
  run_job(process_errors_job, NULL);
}

/* ---- stopping the bridge under blocked fibers -------------------------------
 */

static void stop_udp_waiter(void* arg) {
  blocked_t* t = arg;
  struct sockaddr_in any = loopback4(0);
  weft_uv_udp_t* u;
  char buf[8];

  CHECK(weft_uv_udp_bind((struct sockaddr*)&any, 0, &u) == 0);
  blocked_begin(t);
  blocked_end(t, weft_uv_udp_recv(u, buf, sizeof(buf), NULL, WEFT_UV_FOREVER));
  /* The stop closed the socket; close still frees it. */
  CHECK(weft_uv_udp_close(u) == 0);
}

static void stop_signal_waiter(void* arg) {
  blocked_t* t = arg;
  blocked_begin(t);
  blocked_end(t, weft_uv_signal_wait(SIGUSR2, WEFT_UV_FOREVER));
}

/* Leaves the child running: the test kills it by pid. */
static void stop_process_waiter(void* arg) {
  blocked_t* t = arg;
  weft_uv_process_t* p = spawn_sleep();

  t->pid = weft_uv_process_pid(p);
  blocked_begin(t);
  blocked_end(t, weft_uv_process_wait(p, NULL, NULL, WEFT_UV_FOREVER));
  CHECK(weft_uv_process_kill(p, SIGKILL) == UV_ECANCELED);
  CHECK(weft_uv_process_close(p) == 0);
}

static const weft_job_cb stop_waiters[] = {
    stop_udp_waiter,
    stop_signal_waiter,
    stop_process_waiter,
};
#define NSTOP_WAITERS (sizeof(stop_waiters) / sizeof(stop_waiters[0]))

static void stop_cancels_blocked(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  weft_uv_t* b;
  blocked_t t[NSTOP_WAITERS];
  weft_counter_t c;
  size_t i;
  (void)state;

  assert_int_equal(weft_uv_start(rt, &b), 0);
  memset(t, 0, sizeof(t));
  weft_counter_init(&c, 0);
  for (i = 0; i < NSTOP_WAITERS; i++)
    assert_int_equal(weft_spawn(rt, stop_waiters[i], &t[i], &c), 0);
  /* Blocked or not yet: either way a stopped bridge says UV_ECANCELED. */
  for (i = 0; i < NSTOP_WAITERS; i++)
    wait_ready(&t[i]);
  assert_int_equal(weft_uv_stop(b), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  for (i = 0; i < NSTOP_WAITERS; i++) {
    assert_int_equal(t[i].rc, UV_ECANCELED);
    if (t[i].pid > 0) {
      assert_int_equal(kill(t[i].pid, SIGKILL), 0);
      assert_int_equal(waitpid(t[i].pid, NULL, 0), t[i].pid);
    }
  }
  assert_int_equal(weft_runtime_destroy(rt), 0);
  ASSERT_NO_CHECK_FAILED();
}

/* ---- contexts ---------------------------------------------------------------
 */

static void no_bridge_job(void* arg) {
  int* rc = arg;
  *rc = weft_uv_signal_wait(SIGUSR1, WEFT_UV_FOREVER);
}

static void off_fiber_eperm(void** state) {
  struct sockaddr_in a = loopback4(0);
  struct addrinfo* res;
  weft_uv_udp_t* u;
  weft_uv_process_options_t opts;
  weft_uv_process_t* p;
  char host[64];
  weft_runtime_t* rt = test_runtime(1);
  weft_counter_t c;
  int rc = 0;
  (void)state;

  assert_int_equal(weft_uv_signal_wait(SIGUSR1, 0), UV_EPERM);
  assert_int_equal(weft_uv_getaddrinfo("localhost", NULL, NULL, &res, 0),
                   UV_EPERM);
  assert_int_equal(weft_uv_getnameinfo((struct sockaddr*)&a, 0, host,
                                       sizeof(host), NULL, 0, 0),
                   UV_EPERM);
  assert_int_equal(weft_uv_udp_bind((struct sockaddr*)&a, 0, &u), UV_EPERM);
  assert_int_equal(weft_uv_udp_send(NULL, "x", 1, (struct sockaddr*)&a, 0),
                   UV_EPERM);
  assert_int_equal(weft_uv_udp_send(NULL, "x", 1, NULL, 0), UV_EPERM);
  assert_int_equal(weft_uv_udp_recv(NULL, host, 1, NULL, 0), UV_EPERM);
  assert_int_equal(weft_uv_udp_close(NULL), UV_EPERM);
  memset(&opts, 0, sizeof(opts));
  opts.file = "true";
  assert_int_equal(weft_uv_spawn(&opts, &p), UV_EPERM);
  assert_int_equal(weft_uv_process_wait(NULL, NULL, NULL, 0), UV_EPERM);
  assert_int_equal(weft_uv_process_kill(NULL, SIGTERM), UV_EPERM);
  assert_int_equal(weft_uv_process_close(NULL), UV_EPERM);
  /* A fiber, but no bridge. */
  weft_counter_init(&c, 0);
  assert_int_equal(weft_spawn(rt, no_bridge_job, &rc, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(rc, UV_EINVAL);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(signal_wait_raise),
      cmocka_unit_test(signal_wait_errors),
      cmocka_unit_test(dns_getaddrinfo),
      cmocka_unit_test(dns_getnameinfo),
      cmocka_unit_test(udp_loopback_ipv4),
      cmocka_unit_test(udp_loopback_ipv6),
      cmocka_unit_test(udp_backlog_drops_oldest),
      cmocka_unit_test(udp_errors),
      cmocka_unit_test(udp_recv_cancel_and_close),
      cmocka_unit_test(process_exit_and_output),
      cmocka_unit_test(process_cat_roundtrip),
      cmocka_unit_test(process_kill_sigterm),
      cmocka_unit_test(process_spawn_errors),
      cmocka_unit_test(stop_cancels_blocked),
      cmocka_unit_test(off_fiber_eperm),
  };
  return cmocka_run_group_tests_name("uv_extra", tests, NULL, NULL);
}
