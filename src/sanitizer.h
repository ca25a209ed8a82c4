/* The ASan, TSan and Valgrind hooks weft needs to run code on stacks it made
 * itself, in one place (like mimalloc's track.h). Each hook is a static
 * inline function that compiles to nothing when its tool is off; see
 * context.c for the protocol they implement around a switch. */
#ifndef WEFT_SANITIZER_H_
#define WEFT_SANITIZER_H_

#include <stddef.h>

/* WEFT__ASAN / WEFT__TSAN: 1 when this translation unit is instrumented.
 * gcc says so with __SANITIZE_*__, clang with __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT__TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(WEFT__ASAN)
#define WEFT__ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(WEFT__TSAN)
#define WEFT__TSAN 1
#endif
#endif
#ifndef WEFT__ASAN
#define WEFT__ASAN 0
#endif
#ifndef WEFT__TSAN
#define WEFT__TSAN 0
#endif

/* 1 when a context switch must call into a sanitizer runtime, which rules out
 * the inline fast path in context.h. */
#define WEFT__SANITIZE_FIBERS (WEFT__ASAN || WEFT__TSAN)

/* Valgrind needs no special build: its client requests are a few no-op
 * instructions natively, so they are on whenever the header exists, unless
 * the build says -DWEFT_USE_VALGRIND=0. They only run when a stack is made or
 * released, never on a switch. */
#ifndef WEFT_USE_VALGRIND
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#define WEFT_USE_VALGRIND 1
#endif
#endif
#endif
#ifndef WEFT_USE_VALGRIND
#define WEFT_USE_VALGRIND 0
#endif

#if WEFT_USE_VALGRIND
#include <valgrind/valgrind.h>
#endif

/* The runtimes' own headers are not used: tsan_interface.h declares
 * functions with empty parameter lists, which -Wstrict-prototypes rejects.
 * These signatures are the stable ABI of both gcc's and clang's runtimes. */
#if WEFT__ASAN
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save,
                                     const void** bottom_old, size_t* size_old);
void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
void __asan_poison_memory_region(void const volatile* addr, size_t size);
#endif
#if WEFT__TSAN
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
#endif

/* ASan: about to leave the current stack for [bottom, bottom+size).
 * fake_stack_save receives the current fiber's fake stack (for
 * detect_stack_use_after_return) or is NULL when the current fiber is
 * finished, which frees it. */
static inline void weft__asan_start_switch(void** fake_stack_save,
                                           const void* bottom, size_t size) {
#if WEFT__ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save;
  (void)bottom;
  (void)size;
#endif
}

/* ASan: now running on the stack we switched to; restores its fake stack
 * (NULL on a fiber's first entry) and reports the bounds of the stack we came
 * from, which is how a thread's native stack bounds are learned. Reports
 * {NULL, 0} when ASan is off. */
static inline void weft__asan_finish_switch(void* fake_stack_save,
                                            const void** bottom_old,
                                            size_t* size_old) {
#if WEFT__ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save;
  *bottom_old = NULL;
  *size_old = 0;
#endif
}

/* ASan: clears the poisoning that frames which never returned left in a
 * reused stack (their redzones stay poisoned when a fiber exits mid-stack). */
static inline void weft__asan_unpoison(const void* p, size_t size) {
#if WEFT__ASAN
  __asan_unpoison_memory_region(p, size);
#else
  (void)p;
  (void)size;
#endif
}

/* ASan: marks memory weft keeps for reuse (a pooled job block) as not to
 * be touched until it is handed out again (weft__asan_unpoison). */
static inline void weft__asan_poison(const void* p, size_t size) {
#if WEFT__ASAN
  __asan_poison_memory_region(p, size);
#else
  (void)p;
  (void)size;
#endif
}

/* TSan: the fiber handle of the running thread or fiber; NULL when off. */
static inline void* weft__tsan_current(void) {
#if WEFT__TSAN
  return __tsan_get_current_fiber();
#else
  return NULL;
#endif
}

/* TSan: a new fiber handle, NULL on failure. When TSan is off, returns a
 * non-NULL dummy so callers need not tell "off" from "failed". */
static inline void* weft__tsan_create(void) {
#if WEFT__TSAN
  return __tsan_create_fiber(0);
#else
  static char dummy;
  return &dummy;
#endif
}

static inline void weft__tsan_destroy(void* fiber) {
#if WEFT__TSAN
  __tsan_destroy_fiber(fiber);
#else
  (void)fiber;
#endif
}

/* TSan: must come immediately before the stack switch. Flags 0: the switch
 * is a happens-before edge, as it is for the program (one thread hands the
 * CPU to the next fiber). */
static inline void weft__tsan_switch(void* fiber) {
#if WEFT__TSAN
  __tsan_switch_to_fiber(fiber, 0);
#else
  (void)fiber;
#endif
}

/* Valgrind: registers [lo, lo+size) as a stack so that moving sp into it is
 * seen as a stack switch, not a huge frame. Returns the id to deregister. */
static inline unsigned weft__valgrind_stack_register(void* lo, size_t size) {
#if WEFT_USE_VALGRIND
  /* The upper bound is the last addressable byte, as valgrind.h specifies. */
  return VALGRIND_STACK_REGISTER(lo, (char*)lo + size - 1);
#else
  (void)lo;
  (void)size;
  return 0;
#endif
}

static inline void weft__valgrind_stack_deregister(unsigned id) {
#if WEFT_USE_VALGRIND
  VALGRIND_STACK_DEREGISTER(id);
#else
  (void)id;
#endif
}

#endif /* WEFT_SANITIZER_H_ */
