/* Tests for src/context.c: values handed across switches, per-context
 * floating-point control state, register preservation, many contexts, exit
 * and stack reuse, and the abort when an entry function returns. Fibers never
 * call cmocka's assertions (a failure would longjmp across stacks): they
 * record what they saw and the main context asserts. */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context.h"

#define STACK_SIZE (64 * 1024)

static weft__ctx_t main_ctx;

static void* stack_alloc(void) {
  void* p;

  p = malloc(STACK_SIZE);
  assert_non_null(p);
  return p;
}

/* ---- ping-pong ---------------------------------------------------------- */

#define PP_ROUNDS 1000

static weft__ctx_t pp_ctx;
static uintptr_t pp_log[PP_ROUNDS + 2];
static size_t pp_n;

static void pp_entry(void* arg) {
  uintptr_t v;

  v = (uintptr_t)arg;
  for (;;) {
    pp_log[pp_n++] = v;
    if (v == 0)
      weft__ctx_exit(&pp_ctx, &main_ctx, (void*)(uintptr_t)999);
    v = (uintptr_t)weft__ctx_switch(&pp_ctx, &main_ctx, (void*)(v * 2 + 1));
  }
}

static void ctx_pingpong_values(void** state) {
  void* stack;
  uintptr_t i;
  void* r;

  (void)state;
  weft__ctx_init_thread(&main_ctx);
  stack = stack_alloc();
  pp_n = 0;
  assert_int_equal(weft__ctx_init(&pp_ctx, stack, STACK_SIZE, pp_entry), 0);

  for (i = 1; i <= PP_ROUNDS; i++) {
    r = weft__ctx_switch(&main_ctx, &pp_ctx, (void*)i);
    assert_int_equal((uintptr_t)r, i * 2 + 1);
  }
  r = weft__ctx_switch(&main_ctx, &pp_ctx, NULL);
  assert_int_equal((uintptr_t)r, 999);

  assert_int_equal(pp_n, PP_ROUNDS + 1);
  for (i = 0; i < PP_ROUNDS; i++)
    assert_int_equal(pp_log[i], i + 1);
  assert_int_equal(pp_log[PP_ROUNDS], 0);

  weft__ctx_destroy(&pp_ctx);
  free(stack);
}

/* ---- floating-point control state --------------------------------------- */

/* What is checked: x86-64 the MXCSR and x87 control word, AArch64 FPCR. The
 * rounding-mode fields are used because Valgrind models them; it ignores
 * flush-to-zero, which is checked only when not running under it. */
typedef struct {
  uint32_t sse; /* MXCSR or FPCR */
  uint32_t x87; /* x87 control word, 0 on AArch64 */
} fpctl_t;

#if defined(__x86_64__)
#define FP_SUPPORTED 1
#define MXCSR_RC_DOWN 0x2000u
#define MXCSR_RC_UP 0x4000u
#define MXCSR_RC_ZERO 0x6000u
#define MXCSR_FTZ 0x8000u
#define MXCSR_MASKS 0x1f80u
#define X87_RC_DOWN 0x0400u
#define X87_RC_UP 0x0800u
#define X87_RC_ZERO 0x0c00u
#define X87_DEFAULT 0x037fu

static fpctl_t fpctl_get(void) {
  fpctl_t f;
  uint16_t cw;

  __asm__ volatile("stmxcsr %0" : "=m"(f.sse));
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  f.x87 = cw;
  return f;
}

static void fpctl_set(fpctl_t f) {
  uint16_t cw;

  cw = (uint16_t)f.x87;
  __asm__ volatile("ldmxcsr %0" : : "m"(f.sse));
  __asm__ volatile("fldcw %0" : : "m"(cw));
}

static const fpctl_t fp_creator = {MXCSR_MASKS | MXCSR_RC_UP | MXCSR_FTZ,
                                   X87_DEFAULT | X87_RC_DOWN};
static const fpctl_t fp_main = {MXCSR_MASKS | MXCSR_RC_DOWN,
                                X87_DEFAULT | X87_RC_UP};
static const fpctl_t fp_fiber = {MXCSR_MASKS | MXCSR_RC_ZERO | MXCSR_FTZ,
                                 X87_DEFAULT | X87_RC_ZERO};

static fpctl_t fpctl_mask(void) {
  fpctl_t m = {MXCSR_RC_ZERO | MXCSR_FTZ, X87_RC_ZERO};

#if WEFT_USE_VALGRIND
  if (RUNNING_ON_VALGRIND)
    m.sse &= ~MXCSR_FTZ;
#endif
  return m;
}
#elif defined(__aarch64__)
#define FP_SUPPORTED 1
#define FPCR_RMODE_UP (1u << 22)
#define FPCR_RMODE_DOWN (2u << 22)
#define FPCR_RMODE_ZERO (3u << 22)
#define FPCR_FZ (1u << 24)

static fpctl_t fpctl_get(void) {
  fpctl_t f;
  uint64_t v;

  __asm__ volatile("mrs %0, fpcr" : "=r"(v));
  f.sse = (uint32_t)v;
  f.x87 = 0;
  return f;
}

static void fpctl_set(fpctl_t f) {
  uint64_t v;

  v = f.sse;
  __asm__ volatile("msr fpcr, %0" : : "r"(v));
}

static const fpctl_t fp_creator = {FPCR_RMODE_UP | FPCR_FZ, 0};
static const fpctl_t fp_main = {FPCR_RMODE_DOWN, 0};
static const fpctl_t fp_fiber = {FPCR_RMODE_ZERO | FPCR_FZ, 0};

static fpctl_t fpctl_mask(void) {
  fpctl_t m = {FPCR_RMODE_ZERO | FPCR_FZ, 0};

  return m;
}
#else
#define FP_SUPPORTED 0
#endif

#if FP_SUPPORTED
static weft__ctx_t fp_ctx;
static fpctl_t fp_seen_first;
static fpctl_t fp_seen_again;

static void fp_entry(void* arg) {
  (void)arg;
  fp_seen_first = fpctl_get();
  fpctl_set(fp_fiber);
  weft__ctx_switch(&fp_ctx, &main_ctx, NULL);
  fp_seen_again = fpctl_get();
  weft__ctx_exit(&fp_ctx, &main_ctx, NULL);
}

static void assert_fpctl(fpctl_t got, fpctl_t want) {
  fpctl_t m;

  m = fpctl_mask();
  assert_int_equal(got.sse & m.sse, want.sse & m.sse);
  assert_int_equal(got.x87 & m.x87, want.x87 & m.x87);
}
#endif

static void ctx_fp_control_per_context(void** state) {
#if FP_SUPPORTED
  fpctl_t saved;
  void* stack;
  int rc;

  (void)state;
  weft__ctx_init_thread(&main_ctx);
  stack = stack_alloc();
  saved = fpctl_get();

  /* The new context must start with its creator's state... */
  fpctl_set(fp_creator);
  rc = weft__ctx_init(&fp_ctx, stack, STACK_SIZE, fp_entry);
  /* ...not with whatever the switching context has at first switch. */
  fpctl_set(fp_main);
  if (rc == 0)
    weft__ctx_switch(&main_ctx, &fp_ctx, NULL);
  {
    fpctl_t after_first;

    after_first = fpctl_get();
    if (rc == 0)
      weft__ctx_switch(&main_ctx, &fp_ctx, NULL);
    fpctl_set(saved);
    assert_int_equal(rc, 0);
    assert_fpctl(after_first, fp_main);
  }
  assert_fpctl(fp_seen_first, fp_creator);
  assert_fpctl(fp_seen_again, fp_fiber);

  weft__ctx_destroy(&fp_ctx);
  free(stack);
#else
  (void)state;
  skip();
#endif
}

/* ---- registers survive a switch ----------------------------------------- */

/* Both sides run live_values(): twelve integers and eight doubles held in
 * registers right up to each switch and read back right after it, with
 * different contents on each side. At -O2 the compiler keeps them in
 * callee-saved registers (rbx, rbp, r12-r15; x19-x28, d8-d15) or spills them,
 * which is all the ABI promises across a call: SysV x86-64 has no
 * callee-saved vector registers, so there the doubles must come back from the
 * stack intact. */
#if defined(__x86_64__)
#define FPREG "+x"
#elif defined(__aarch64__)
#define FPREG "+w"
#else
#define FPREG "+m"
#endif

#define LIVE_ROUNDS 200

static weft__ctx_t live_ctx;
static int live_fiber_errors;

static __attribute__((noinline)) int live_values(uint64_t seed,
                                                 weft__ctx_t* self,
                                                 weft__ctx_t* other) {
  volatile uint64_t vseed;
  uint64_t a, b, c, d, e, f, g, h, i, j, k, l;
  double fa, fb, fc, fd, fe, ff, fg, fh;
  int errors;
  int round;

  vseed = seed;
  a = vseed * 3;
  b = vseed * 5;
  c = vseed * 7;
  d = vseed * 11;
  e = vseed * 13;
  f = vseed * 17;
  g = vseed * 19;
  h = vseed * 23;
  i = vseed * 29;
  j = vseed * 31;
  k = vseed * 37;
  l = vseed * 41;
  fa = (double)vseed * 0.5;
  fb = (double)vseed * 0.25;
  fc = (double)vseed * 1.5;
  fd = (double)vseed * 2.5;
  fe = (double)vseed * 3.5;
  ff = (double)vseed * 4.5;
  fg = (double)vseed * 5.5;
  fh = (double)vseed * 6.5;
  errors = 0;

  for (round = 0; round < LIVE_ROUNDS; round++) {
    __asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(f));
    __asm__ volatile("" : "+r"(g), "+r"(h), "+r"(i), "+r"(j), "+r"(k), "+r"(l));
    __asm__ volatile("" : FPREG(fa), FPREG(fb), FPREG(fc), FPREG(fd));
    __asm__ volatile("" : FPREG(fe), FPREG(ff), FPREG(fg), FPREG(fh));
    weft__ctx_switch(self, other, NULL);
    __asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(f));
    __asm__ volatile("" : "+r"(g), "+r"(h), "+r"(i), "+r"(j), "+r"(k), "+r"(l));
    __asm__ volatile("" : FPREG(fa), FPREG(fb), FPREG(fc), FPREG(fd));
    __asm__ volatile("" : FPREG(fe), FPREG(ff), FPREG(fg), FPREG(fh));
    errors += a != seed * 3;
    errors += b != seed * 5;
    errors += c != seed * 7;
    errors += d != seed * 11;
    errors += e != seed * 13;
    errors += f != seed * 17;
    errors += g != seed * 19;
    errors += h != seed * 23;
    errors += i != seed * 29;
    errors += j != seed * 31;
    errors += k != seed * 37;
    errors += l != seed * 41;
    errors += fa != (double)seed * 0.5;
    errors += fb != (double)seed * 0.25;
    errors += fc != (double)seed * 1.5;
    errors += fd != (double)seed * 2.5;
    errors += fe != (double)seed * 3.5;
    errors += ff != (double)seed * 4.5;
    errors += fg != (double)seed * 5.5;
    errors += fh != (double)seed * 6.5;
  }
  return errors;
}

static void live_entry(void* arg) {
  (void)arg;
  live_fiber_errors = live_values(0x5a5a5a5a12345ull, &live_ctx, &main_ctx);
  weft__ctx_exit(&live_ctx, &main_ctx, NULL);
}

static void ctx_registers_survive(void** state) {
  void* stack;
  int errors;

  (void)state;
  weft__ctx_init_thread(&main_ctx);
  stack = stack_alloc();
  live_fiber_errors = -1;
  assert_int_equal(weft__ctx_init(&live_ctx, stack, STACK_SIZE, live_entry), 0);
  /* Starts the fiber, which switches back at once; then both run
   * live_values() against each other, the fiber one switch behind. */
  weft__ctx_switch(&main_ctx, &live_ctx, NULL);
  errors = live_values(0x0123456789abcull, &main_ctx, &live_ctx);
  assert_int_equal(errors, 0);
  assert_int_equal(live_fiber_errors, 0);
  weft__ctx_destroy(&live_ctx);
  free(stack);
}

/* ---- many contexts, round robin ----------------------------------------- */

#define RR_N 100
#define RR_ROUNDS 20
#define RR_STOP ((uintptr_t)-1)

static weft__ctx_t rr_ctx[RR_N];
static int rr_errors;
static int rr_exits;

/* Context i expects token round * RR_N + i and passes token + 1 to the next;
 * the last one hands back to main. RR_STOP makes each exit in turn. */
static void rr_entry(void* arg) {
  uintptr_t token;
  size_t idx;
  weft__ctx_t* next;

  token = (uintptr_t)arg;
  idx = token % RR_N;
  next = idx + 1 < RR_N ? &rr_ctx[idx + 1] : &main_ctx;
  for (;;) {
    if (token == RR_STOP) {
      rr_exits++;
      weft__ctx_exit(&rr_ctx[idx], next, arg);
    }
    rr_errors += token % RR_N != idx;
    token = (uintptr_t)weft__ctx_switch(&rr_ctx[idx], next, (void*)(token + 1));
    arg = (void*)token;
  }
}

static void ctx_round_robin_many(void** state) {
  void* stacks[RR_N];
  uintptr_t r;
  void* back;
  int i;

  (void)state;
  weft__ctx_init_thread(&main_ctx);
  rr_errors = 0;
  rr_exits = 0;
  for (i = 0; i < RR_N; i++) {
    stacks[i] = stack_alloc();
    assert_int_equal(
        weft__ctx_init(&rr_ctx[i], stacks[i], STACK_SIZE, rr_entry), 0);
  }

  /* Round 0 starts each context in turn: context i first receives token i
   * from i - 1, so main starts only the first. */
  for (r = 0; r < RR_ROUNDS; r++) {
    back = weft__ctx_switch(&main_ctx, &rr_ctx[0], (void*)(r * RR_N));
    assert_int_equal((uintptr_t)back, (r + 1) * RR_N);
  }
  back = weft__ctx_switch(&main_ctx, &rr_ctx[0], (void*)RR_STOP);
  assert_int_equal((uintptr_t)back, RR_STOP);
  assert_int_equal(rr_exits, RR_N);
  assert_int_equal(rr_errors, 0);

  for (i = 0; i < RR_N; i++) {
    weft__ctx_destroy(&rr_ctx[i]);
    free(stacks[i]);
  }
}

/* ---- exit from deep frames, then reuse the stack ------------------------ */

#if WEFT__ASAN
void* __asan_region_is_poisoned(void* p, size_t size);
#endif

static weft__ctx_t deep_ctx;
static int deep_result;
static int deep_abandon;

/* Frames with address-taken buffers (ASan redzones) that never return: the
 * context exits from the bottom of the recursion, or is suspended there and
 * abandoned. (The n < 0 return is never taken; it keeps the function from
 * looking infinitely recursive.) */
static __attribute__((noinline)) int deep(int n, volatile char* prev) {
  volatile char buf[64];

  if (n < 0)
    return -1;
  memset((char*)buf, n, sizeof(buf));
  if (n == 0) {
    deep_result = prev[0] + buf[1];
    if (deep_abandon)
      weft__ctx_switch(&deep_ctx, &main_ctx, (void*)(uintptr_t)78);
    weft__ctx_exit(&deep_ctx, &main_ctx, (void*)(uintptr_t)77);
  }
  return deep(n - 1, buf) + buf[n % 64];
}

static void deep_entry(void* arg) {
  volatile char top[16];

  top[0] = 1;
  deep((int)(uintptr_t)arg, top);
}

/* A stack is reused after its context exited from deep frames or was
 * abandoned while suspended in them; under ASan the new context must find
 * it free of the old frames' poisoned redzones. */
static void ctx_exit_reuse_stack(void** state) {
  void* stack;
  void* r;
  int pass;

  (void)state;
  weft__ctx_init_thread(&main_ctx);
  stack = stack_alloc();
  for (pass = 0; pass < 4; pass++) {
    deep_result = -1;
    deep_abandon = pass % 2;
    assert_int_equal(weft__ctx_init(&deep_ctx, stack, STACK_SIZE, deep_entry),
                     0);
#if WEFT__ASAN
    assert_null(__asan_region_is_poisoned(stack, STACK_SIZE));
#endif
    r = weft__ctx_switch(&main_ctx, &deep_ctx, (void*)(uintptr_t)100);
    assert_int_equal((uintptr_t)r, deep_abandon ? 78 : 77);
    assert_int_equal(deep_result, 1);
    weft__ctx_destroy(&deep_ctx);
  }
  free(stack);
}

/* ---- errors ------------------------------------------------------------- */

static void ctx_init_einval(void** state) {
  weft__ctx_t c;
  char small[64];
  void* stack;

  (void)state;
  stack = stack_alloc();
  assert_int_equal(weft__ctx_init(&c, NULL, STACK_SIZE, pp_entry), -EINVAL);
  assert_int_equal(weft__ctx_init(&c, stack, STACK_SIZE, NULL), -EINVAL);
  assert_int_equal(weft__ctx_init(&c, small, sizeof(small), pp_entry), -EINVAL);
  free(stack);
}

static weft__ctx_t ret_ctx;

#define ABORTED_EXIT 42

static void returning_entry(void* arg) {
  (void)arg;
}

/* abort() raises SIGABRT first: turn that into a recognizable exit code,
 * which also spares the child a core dump and Valgrind's report of it. */
static void on_abort(int sig) {
  (void)sig;
  _exit(ABORTED_EXIT);
}

static void ctx_entry_return_aborts(void** state) {
  struct sigaction sa;
  int status;
  pid_t pid;

  (void)state;
  /* For emulators whose fork is broken (qemu-user 7.2 hangs in the child). */
  if (getenv("WEFT_TEST_NO_FORK") != NULL)
    skip();
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    void* stack;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_abort;
    sigaction(SIGABRT, &sa, NULL);
    /* Quiet the expected message. */
    fd = open("/dev/null", O_WRONLY);
    if (fd >= 0)
      dup2(fd, STDERR_FILENO);
    weft__ctx_init_thread(&main_ctx);
    stack = malloc(STACK_SIZE);
    if (stack == NULL ||
        weft__ctx_init(&ret_ctx, stack, STACK_SIZE, returning_entry) != 0)
      _exit(3);
    weft__ctx_switch(&main_ctx, &ret_ctx, NULL);
    _exit(4);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), ABORTED_EXIT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ctx_pingpong_values),
      cmocka_unit_test(ctx_fp_control_per_context),
      cmocka_unit_test(ctx_registers_survive),
      cmocka_unit_test(ctx_round_robin_many),
      cmocka_unit_test(ctx_exit_reuse_stack),
      cmocka_unit_test(ctx_init_einval),
      cmocka_unit_test(ctx_entry_return_aborts),
  };

  return cmocka_run_group_tests_name("context", tests, NULL, NULL);
}
