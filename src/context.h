/* Execution contexts: a stack plus the registers needed to resume it, and the
 * switch between two of them. This is the only layer that knows about
 * assembly (src/arch/switch_<arch>.S, layout in arch/context_offsets.h),
 * ucontext (the fallback elsewhere) and the sanitizers' fiber hooks; fibers
 * and workers build on it. Nothing here allocates stacks or knows threads. */
#ifndef WEFT_CONTEXT_H_
#define WEFT_CONTEXT_H_

#include <stddef.h>

#include "sanitizer.h"

/* WEFT__CTX_UCONTEXT: 1 when switches go through swapcontext() (one
 * sigprocmask system call each), for architectures without a switch_*.S or
 * when built with -DWEFT_FORCE_UCONTEXT to test that path. */
#if !defined(WEFT_FORCE_UCONTEXT) && defined(__ELF__) && \
    (defined(__x86_64__) || defined(__aarch64__))
#define WEFT__CTX_UCONTEXT 0
#else
#define WEFT__CTX_UCONTEXT 1
#include <ucontext.h>
#endif

/* Smallest stack weft__ctx_init accepts; real fibers want far more. */
#define WEFT__CTX_STACK_MIN 1024

typedef struct weft__ctx_s weft__ctx_t;

/* Defined here so it can be embedded in a fiber. The fields after sp exist
 * in every build so that translation units built with and without a
 * sanitizer agree on the layout; only context.c touches them. */
struct weft__ctx_s {
  void* sp;                 /* saved stack pointer (assembly paths) */
  weft__ctx_t* prev;        /* who switched to us last (ASan bookkeeping) */
  void* asan_fake_stack;    /* our ASan fake stack while suspended */
  const void* stack_bottom; /* lowest stack address, NULL until known */
  size_t stack_size;        /* 0 until known (native stack: first switch) */
  void* tsan_fiber;         /* TSan fiber handle */
  unsigned valgrind_id;     /* Valgrind stack id, 0 if none */
  int owns_stack_state;     /* 1 if made by weft__ctx_init */
#if WEFT__CTX_UCONTEXT
  void (*entry)(void* arg);
  void* xfer; /* arg handed to this context when resumed */
  ucontext_t uc;
#endif
};

/* weft__ctx_init_thread: makes `c` represent the calling thread's own
 * (native) stack, so it can be switched away from and back to. Call it on the
 * native stack, before the thread's first switch. Never fails. */
void weft__ctx_init_thread(weft__ctx_t* c);

/* weft__ctx_init: prepares `c` to run on [stack_lo, stack_lo+size); the first
 * weft__ctx_switch(from, c, arg) calls entry(arg). entry must never return
 * (it ends with weft__ctx_exit); if it does, weft prints a message and
 * aborts. The new context starts with the calling thread's MXCSR and x87
 * control word (x86-64) or FPCR (AArch64), never zeroed ones. Registers the
 * stack with Valgrind and creates the TSan fiber. The caller keeps owning the
 * stack, and must not free it before weft__ctx_destroy(c).
 * Returns 0, -EINVAL (NULL stack or entry, size < WEFT__CTX_STACK_MIN) or
 * -ENOMEM (TSan or ucontext setup failed). */
int weft__ctx_init(weft__ctx_t* c, void* stack_lo, size_t size,
                   void (*entry)(void* arg));

/* weft__ctx_destroy: releases the Valgrind and TSan state of a context made
 * by weft__ctx_init, which must not be running. No-op for a context made by
 * weft__ctx_init_thread. */
void weft__ctx_destroy(weft__ctx_t* c);

/* Out-of-line switch, used when the inline one below cannot be: sanitizer
 * builds and the ucontext fallback. `exiting` is nonzero for weft__ctx_exit.
 * Callers use weft__ctx_switch / weft__ctx_exit. */
void* weft__ctx_switch_slow(weft__ctx_t* from, weft__ctx_t* to, void* arg,
                            int exiting);

/* Called if a context that left with weft__ctx_exit is resumed: aborts. */
_Noreturn void weft__ctx_exit_resumed(void);

#if !WEFT__CTX_UCONTEXT
/* The switch itself (switch_<arch>.S): saves the callee-saved registers and
 * the floating-point control state on the current stack, stores the stack
 * pointer in *save_sp, loads to_sp and resumes that context, handing it arg.
 * Returns the arg given by whoever resumes us. Hidden so calls stay direct in
 * a shared library. */
__attribute__((visibility("hidden"))) void* weft__ctx_jump(void** save_sp,
                                                           void* to_sp,
                                                           void* arg);
#endif

/* weft__ctx_switch: saves the running state into `from` (which must be the
 * running context), resumes `to` and passes it `arg`: `to` sees it as the
 * return value of its own weft__ctx_switch, or as entry's argument on first
 * entry. Returns the arg of whoever later switches back into `from`.
 * `from` must not be resumed by another thread before the switch is
 * complete, i.e. until code running on `to` hands it over. */
static inline void* weft__ctx_switch(weft__ctx_t* from, weft__ctx_t* to,
                                     void* arg) {
#if WEFT__CTX_UCONTEXT || WEFT__SANITIZE_FIBERS
  return weft__ctx_switch_slow(from, to, arg, 0);
#else
  return weft__ctx_jump(&from->sp, to->sp, arg);
#endif
}

/* weft__ctx_exit: like weft__ctx_switch, but `from` is finished for good and
 * is never resumed (ASan drops its fake stack); its stack may be freed once
 * `to` runs, after weft__ctx_destroy(from). */
_Noreturn static inline void weft__ctx_exit(weft__ctx_t* from, weft__ctx_t* to,
                                            void* arg) {
#if WEFT__CTX_UCONTEXT || WEFT__SANITIZE_FIBERS
  weft__ctx_switch_slow(from, to, arg, 1);
#else
  weft__ctx_jump(&from->sp, to->sp, arg);
#endif
  weft__ctx_exit_resumed();
}

#endif /* WEFT_CONTEXT_H_ */
