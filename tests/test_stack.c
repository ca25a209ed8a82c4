/* test_stack.c: a fiber that overflows its stack is reported (worker, fiber,
 * stack bounds) by the guard-page handler, in a child process, instead of
 * silently corrupting memory; stacks are pooled, not mapped per job.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static volatile int depth_limit = 1 << 30;

/* Recurses (practically) forever; the volatile limit keeps the compiler
 * from proving it infinite. */
static int recurse(int n) {
  volatile char frame[4096];
  frame[0] = (char)n;
  frame[4095] = (char)n;
  if (n >= depth_limit)
    return 0;
  return recurse(n + 1) + frame[0] + frame[4095];
}

static void overflow_job(void* arg) {
  (void)arg;
  recurse(0);
}

static void child(void) {
  weft_config_t cfg;
  weft_runtime_t* rt;
  weft_counter_t c;
  weft_config_init(&cfg);
  cfg.workers = 2;
  cfg.stack_size = 64 * 1024;
  if (weft_runtime_create(&rt, &cfg) != 0)
    _exit(3);
  weft_counter_init(&c, 0);
  weft_spawn(rt, overflow_job, NULL, &c);
  weft_counter_wait(&c, 0);
  _exit(4); /* not reached: the overflow aborts */
}

static void stack_overflow_reported(void** state) {
  int fds[2];
  char buf[4096];
  size_t got = 0;
  ssize_t r;
  pid_t pid;
  int status;
  (void)state;

  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    child();
  }
  close(fds[1]);
  while (got < sizeof(buf) - 1 &&
         (r = read(fds[0], buf + got, sizeof(buf) - 1 - got)) > 0)
    got += (size_t)r;
  buf[got] = '\0';
  close(fds[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  if (strstr(buf, "weft: fiber stack overflow: worker ") == NULL)
    fail_msg("no overflow report; child printed:\n%s", buf);
  assert_non_null(strstr(buf, ", fiber "));
  assert_non_null(strstr(buf, "stack [0x"));
  assert_non_null(strstr(buf, "64 KiB"));
}

static void noop(void* arg) {
  (void)arg;
}

static void stack_pooled(void** state) {
  weft_runtime_t* rt = test_runtime(2);
  weft_counter_t c;
  weft_stats_t s;
  int i;
  (void)state;
  weft_counter_init(&c, 0);
  for (i = 0; i < 100000; i++)
    assert_int_equal(weft_spawn(rt, noop, NULL, &c), 0);
  assert_int_equal(weft_counter_wait(&c, 0), 0);
  assert_int_equal(weft_stats(rt, &s), 2);
  /* Jobs that never wait need no new fiber: one per worker. */
  assert_true(s.fibers_created <= 4);
  assert_int_equal(weft_runtime_destroy(rt), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(stack_overflow_reported),
      cmocka_unit_test(stack_pooled),
  };
  return cmocka_run_group_tests_name("stack", tests, NULL, NULL);
}
