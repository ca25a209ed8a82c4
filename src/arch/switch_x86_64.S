/* x86-64 System V context switch for src/context.c: saves the callee-saved
 * registers, MXCSR and the x87 control word in a frame on the current stack,
 * stores the stack pointer, and resumes another such frame. The frame layout
 * and what is NOT preserved are documented in context_offsets.h. */
#if defined(__x86_64__) && defined(__ELF__)

#include "context_offsets.h"

  .text

/* void* weft__ctx_jump(void** save_sp, void* to_sp, void* arg)
 *   rdi = where to store our stack pointer, rsi = the stack to resume,
 *   rdx = arg, handed over in rax as the return value of the weft__ctx_jump
 *   call the resumed context is suspended in (or to the trampoline).
 *
 * Both stacks hold the same frame shape at every instruction, so one set of
 * CFI rules describes the frame before and after rsp changes hands.
 *
 * It leaves with an indirect jump, not ret: a ret here would always miss in
 * the return-stack predictor (which expects our own caller, not the resumed
 * context's), costing about twice the whole switch, while the indirect
 * predictor learns switch patterns. The target is loaded first so that a
 * misprediction resolves early. boost.context's fcontext does the same. */
  .globl weft__ctx_jump
  .hidden weft__ctx_jump
  .type weft__ctx_jump, @function
  .p2align 4
weft__ctx_jump:
  .cfi_startproc
  leaq -WEFT__CTX_X64_SAVE(%rsp), %rsp
  .cfi_adjust_cfa_offset WEFT__CTX_X64_SAVE
  stmxcsr WEFT__CTX_X64_MXCSR(%rsp)
  fnstcw WEFT__CTX_X64_FPUCW(%rsp)
  movq %r15, WEFT__CTX_X64_R15(%rsp)
  .cfi_rel_offset %r15, WEFT__CTX_X64_R15
  movq %r14, WEFT__CTX_X64_R14(%rsp)
  .cfi_rel_offset %r14, WEFT__CTX_X64_R14
  movq %r13, WEFT__CTX_X64_R13(%rsp)
  .cfi_rel_offset %r13, WEFT__CTX_X64_R13
  movq %r12, WEFT__CTX_X64_R12(%rsp)
  .cfi_rel_offset %r12, WEFT__CTX_X64_R12
  movq %rbx, WEFT__CTX_X64_RBX(%rsp)
  .cfi_rel_offset %rbx, WEFT__CTX_X64_RBX
  movq %rbp, WEFT__CTX_X64_RBP(%rsp)
  .cfi_rel_offset %rbp, WEFT__CTX_X64_RBP

  movq %rsp, (%rdi)
  movq %rsi, %rsp

  movq WEFT__CTX_X64_RIP(%rsp), %rcx
  /* Unconditional loads: on the machines measured, comparing first and
   * skipping them was slower than ldmxcsr/fldcw themselves. */
  ldmxcsr WEFT__CTX_X64_MXCSR(%rsp)
  fldcw WEFT__CTX_X64_FPUCW(%rsp)
  movq WEFT__CTX_X64_R15(%rsp), %r15
  movq WEFT__CTX_X64_R14(%rsp), %r14
  movq WEFT__CTX_X64_R13(%rsp), %r13
  movq WEFT__CTX_X64_R12(%rsp), %r12
  movq WEFT__CTX_X64_RBX(%rsp), %rbx
  movq WEFT__CTX_X64_RBP(%rsp), %rbp
  leaq WEFT__CTX_X64_FRAME(%rsp), %rsp
  .cfi_adjust_cfa_offset -WEFT__CTX_X64_FRAME
  .cfi_register %rip, %rcx
  movq %rdx, %rax
  jmp *%rcx
  .cfi_endproc
  .size weft__ctx_jump, .-weft__ctx_jump

/* First code a new context runs, entered from weft__ctx_jump's final jump
 * with the registers context.c put in the initial frame:
 *   rax = arg, rbx = self, r12 = start function, r13 = entry, rbp = 0,
 *   rsp 16-byte aligned.
 * It calls start(arg, self, entry), which never returns. The undefined
 * return address marks this as the outermost frame for debuggers. */
  .globl weft__ctx_trampoline
  .hidden weft__ctx_trampoline
  .type weft__ctx_trampoline, @function
  .p2align 4
weft__ctx_trampoline:
  .cfi_startproc
  .cfi_undefined %rip
  movq %rax, %rdi
  movq %rbx, %rsi
  movq %r13, %rdx
  call *%r12
  ud2
  .cfi_endproc
  .size weft__ctx_trampoline, .-weft__ctx_trampoline

#endif /* __x86_64__ && __ELF__ */

/* No executable stack, whatever the architecture this file is built for. */
#if defined(__ELF__)
  .section .note.GNU-stack, "", %progbits
#endif
