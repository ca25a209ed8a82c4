/* Execution contexts (see context.h): builds the first frame of a new context
 * for the assembly switch, or a ucontext where there is none, and wraps each
 * switch in the ASan/TSan fiber protocol when a sanitizer is on:
 *   start_switch_fiber -> tsan switch -> jump -> (on the other stack)
 *   finish_switch_fiber, which also reports the stack we came from. */
#include "context.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !WEFT__CTX_UCONTEXT
#include "arch/context_offsets.h"

/* First code of every new context (switch_<arch>.S). */
__attribute__((visibility("hidden"))) void weft__ctx_trampoline(void);
#endif

/* Runs on `self` right after a switch into it: tells ASan the switch is over
 * and, the first time a thread's native context is left, records its stack
 * bounds, which ASan knows and weft does not (this is the only way to learn
 * them that is exact for the main thread too). */
static void ctx_finish_switch(weft__ctx_t* self, void* fake_stack) {
  weft__ctx_t* prev;
  const void* bottom;
  size_t size;

  prev = self->prev;
  weft__asan_finish_switch(fake_stack, &bottom, &size);
  if (prev != NULL && prev->stack_size == 0) {
    prev->stack_bottom = bottom;
    prev->stack_size = size;
  }
}

/* Every context made by weft__ctx_init starts here, on its own stack. */
_Noreturn static void ctx_start(void* arg, weft__ctx_t* self,
                                void (*entry)(void* arg)) {
  /* A fresh fiber has no fake stack to restore. */
  ctx_finish_switch(self, NULL);
  entry(arg);
  fprintf(stderr,
          "weft: a context's entry function returned; it must leave with "
          "weft__ctx_exit\n");
  abort();
}

#if WEFT__CTX_UCONTEXT
/* makecontext passes int arguments only, so the context pointer comes in two
 * halves. */
static void ctx_uc_start(unsigned hi, unsigned lo) {
  weft__ctx_t* self;

  self = (weft__ctx_t*)(uintptr_t)(((uint64_t)hi << 32) | lo);
  ctx_start(self->xfer, self, self->entry);
}
#endif

void weft__ctx_init_thread(weft__ctx_t* c) {
  memset(c, 0, sizeof(*c));
  /* stack_size stays 0 until ctx_finish_switch learns the bounds. */
  c->tsan_fiber = weft__tsan_current();
}

int weft__ctx_init(weft__ctx_t* c, void* stack_lo, size_t size,
                   void (*entry)(void* arg)) {
  if (stack_lo == NULL || entry == NULL || size < WEFT__CTX_STACK_MIN)
    return -EINVAL;

  memset(c, 0, sizeof(*c));
  c->stack_bottom = stack_lo;
  c->stack_size = size;

  /* A reused stack may still carry the poisoned redzones of frames that
   * never returned; the frame written below would trip over them. */
  weft__asan_unpoison(stack_lo, size);

#if WEFT__CTX_UCONTEXT
  {
    uint64_t p;

    /* getcontext also captures the creator's floating-point environment
     * (MXCSR and x87 control word, or FPCR), which the first switch loads. */
    if (getcontext(&c->uc) != 0)
      return -ENOMEM;
    c->uc.uc_stack.ss_sp = stack_lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    c->entry = entry;
    p = (uint64_t)(uintptr_t)c;
    makecontext(&c->uc, (void (*)(void))ctx_uc_start, 2, (unsigned)(p >> 32),
                (unsigned)p);
  }
#else
  {
    uintptr_t top;

    /* Leave 16 zeroed bytes above the frame, so that the trampoline's rsp
     * (x86-64) or sp (AArch64) points at a 16-byte-aligned null word and
     * frame-pointer walkers stop there. */
    top = ((uintptr_t)stack_lo + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    {
      weft__ctx_frame_x64_t* f;
      uint32_t mxcsr;
      uint16_t fpucw;

      f = (weft__ctx_frame_x64_t*)(top - 16 - sizeof(*f));
      memset(f, 0, sizeof(*f) + 16);
      /* The creator's control state, never zeros: a zero MXCSR unmasks
       * every SSE exception and a zero x87 control word selects single
       * precision with all exceptions unmasked. */
      __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
      __asm__ volatile("fnstcw %0" : "=m"(fpucw));
      f->mxcsr = mxcsr;
      f->fpucw = fpucw;
      f->rbp = 0;
      f->rip = (uintptr_t)weft__ctx_trampoline;
      /* Loaded like callee-saved registers, then read by the trampoline
       * (context_offsets.h). */
      f->r12 = (uintptr_t)ctx_start;
      f->rbx = (uintptr_t)c;
      f->r13 = (uintptr_t)entry;
      /* Once the switch leaves the frame, rsp = top - 16: aligned, as the
       * trampoline's call needs. */
      c->sp = f;
    }
#elif defined(__aarch64__)
    {
      weft__ctx_frame_a64_t* f;
      uint64_t fpcr;

      f = (weft__ctx_frame_a64_t*)(top - 16 - sizeof(*f));
      memset(f, 0, sizeof(*f) + 16);
      __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
      f->fpcr = fpcr;
      /* x19..x21 as the trampoline expects (context_offsets.h). */
      f->x[0] = (uintptr_t)ctx_start;
      f->x[1] = (uintptr_t)c;
      f->x[2] = (uintptr_t)entry;
      f->x[29 - 19] = 0;                               /* fp */
      f->x[30 - 19] = (uintptr_t)weft__ctx_trampoline; /* lr */
      c->sp = f;
    }
#endif
  }
#endif

  c->tsan_fiber = weft__tsan_create();
  if (c->tsan_fiber == NULL)
    return -ENOMEM;
  c->valgrind_id = weft__valgrind_stack_register(stack_lo, size);
  c->owns_stack_state = 1;
  return 0;
}

void weft__ctx_destroy(weft__ctx_t* c) {
  if (!c->owns_stack_state)
    return;
  weft__valgrind_stack_deregister(c->valgrind_id);
  weft__tsan_destroy(c->tsan_fiber);
  c->valgrind_id = 0;
  c->tsan_fiber = NULL;
  c->owns_stack_state = 0;
}

void* weft__ctx_switch_slow(weft__ctx_t* from, weft__ctx_t* to, void* arg,
                            int exiting) {
  /* `to` reads this on arrival to learn whose stack it left behind. */
  to->prev = from;
  /* to->stack_size is known here: a native context switches away (and
   * learns its bounds) before anything can switch back to it. A NULL save
   * slot tells ASan the current fiber is finished and frees its fake stack. */
  weft__asan_start_switch(exiting ? NULL : &from->asan_fake_stack,
                          to->stack_bottom, to->stack_size);
#if WEFT__CTX_UCONTEXT
  to->xfer = arg;
  weft__tsan_switch(to->tsan_fiber);
  if (swapcontext(&from->uc, &to->uc) != 0) {
    fprintf(stderr, "weft: swapcontext failed\n");
    abort();
  }
  arg = from->xfer;
#else
  {
    void* to_sp;

    to_sp = to->sp;
    weft__tsan_switch(to->tsan_fiber);
    arg = weft__ctx_jump(&from->sp, to_sp, arg);
  }
#endif
  ctx_finish_switch(from, from->asan_fake_stack);
  return arg;
}

void weft__ctx_exit_resumed(void) {
  fprintf(stderr, "weft: a context that left with weft__ctx_exit resumed\n");
  abort();
}
