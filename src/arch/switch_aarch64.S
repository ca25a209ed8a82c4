/* AArch64 (AAPCS64) context switch for src/context.c: saves x19-x30, d8-d15
 * and FPCR in a frame on the current stack, stores sp, and resumes another
 * such frame. The frame layout and what is NOT preserved are documented in
 * context_offsets.h. */
#if defined(__aarch64__) && defined(__ELF__)

#include "context_offsets.h"

  .text

/* void* weft__ctx_jump(void** save_sp, void* to_sp, void* arg)
 *   x0 = where to store our sp, x1 = the stack to resume, x2 = arg, handed
 *   over in x0 as the return value of the weft__ctx_jump call the resumed
 *   context is suspended in (or to the trampoline).
 *
 * Both stacks hold the same frame shape at every instruction, so one set of
 * CFI rules describes the frame before and after sp changes hands. Returning
 * with ret (not br) keeps BTI-enabled callers happy: their return sites have
 * no landing pads. */
  .globl weft__ctx_jump
  .hidden weft__ctx_jump
  .type weft__ctx_jump, %function
  .p2align 4
weft__ctx_jump:
  .cfi_startproc
  sub sp, sp, #WEFT__CTX_A64_FRAME
  .cfi_def_cfa_offset WEFT__CTX_A64_FRAME
  stp x19, x20, [sp, #WEFT__CTX_A64_X19]
  stp x21, x22, [sp, #WEFT__CTX_A64_X21]
  stp x23, x24, [sp, #WEFT__CTX_A64_X23]
  stp x25, x26, [sp, #WEFT__CTX_A64_X25]
  stp x27, x28, [sp, #WEFT__CTX_A64_X27]
  stp x29, x30, [sp, #WEFT__CTX_A64_X29]
  .cfi_rel_offset x19, WEFT__CTX_A64_X19
  .cfi_rel_offset x20, WEFT__CTX_A64_X19 + 8
  .cfi_rel_offset x21, WEFT__CTX_A64_X21
  .cfi_rel_offset x22, WEFT__CTX_A64_X21 + 8
  .cfi_rel_offset x23, WEFT__CTX_A64_X23
  .cfi_rel_offset x24, WEFT__CTX_A64_X23 + 8
  .cfi_rel_offset x25, WEFT__CTX_A64_X25
  .cfi_rel_offset x26, WEFT__CTX_A64_X25 + 8
  .cfi_rel_offset x27, WEFT__CTX_A64_X27
  .cfi_rel_offset x28, WEFT__CTX_A64_X27 + 8
  .cfi_rel_offset x29, WEFT__CTX_A64_X29
  .cfi_rel_offset x30, WEFT__CTX_A64_X29 + 8
  stp d8, d9, [sp, #WEFT__CTX_A64_D8]
  stp d10, d11, [sp, #WEFT__CTX_A64_D10]
  stp d12, d13, [sp, #WEFT__CTX_A64_D12]
  stp d14, d15, [sp, #WEFT__CTX_A64_D14]
  mrs x9, fpcr
  str x9, [sp, #WEFT__CTX_A64_FPCR]

  mov x10, sp
  str x10, [x0]
  mov sp, x1

  /* Writing FPCR can be slow on some cores and is rarely needed: skip it
   * when both contexts use the same control state. */
  ldr x10, [sp, #WEFT__CTX_A64_FPCR]
  cmp x9, x10
  b.eq 1f
  msr fpcr, x10
1:
  ldp d8, d9, [sp, #WEFT__CTX_A64_D8]
  ldp d10, d11, [sp, #WEFT__CTX_A64_D10]
  ldp d12, d13, [sp, #WEFT__CTX_A64_D12]
  ldp d14, d15, [sp, #WEFT__CTX_A64_D14]
  ldp x19, x20, [sp, #WEFT__CTX_A64_X19]
  ldp x21, x22, [sp, #WEFT__CTX_A64_X21]
  ldp x23, x24, [sp, #WEFT__CTX_A64_X23]
  ldp x25, x26, [sp, #WEFT__CTX_A64_X25]
  ldp x27, x28, [sp, #WEFT__CTX_A64_X27]
  ldp x29, x30, [sp, #WEFT__CTX_A64_X29]
  add sp, sp, #WEFT__CTX_A64_FRAME
  .cfi_def_cfa_offset 0
  mov x0, x2
  ret
  .cfi_endproc
  .size weft__ctx_jump, .-weft__ctx_jump

/* First code a new context runs, entered from weft__ctx_jump's ret with the
 * registers context.c put in the initial frame:
 *   x0 = arg, x19 = start function, x20 = self, x21 = entry, x29 = 0,
 *   sp 16-byte aligned.
 * It calls start(arg, self, entry), which never returns. The undefined
 * return address marks this as the outermost frame for debuggers. */
  .globl weft__ctx_trampoline
  .hidden weft__ctx_trampoline
  .type weft__ctx_trampoline, %function
  .p2align 4
weft__ctx_trampoline:
  .cfi_startproc
  .cfi_undefined x30
  mov x1, x20
  mov x2, x21
  blr x19
  brk #0x3e8
  .cfi_endproc
  .size weft__ctx_trampoline, .-weft__ctx_trampoline

#endif /* __aarch64__ && __ELF__ */

/* No executable stack, whatever the architecture this file is built for. */
#if defined(__ELF__)
  .section .note.GNU-stack, "", %progbits
#endif
