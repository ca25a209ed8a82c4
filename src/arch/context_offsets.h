/* Layout of the frame weft__ctx_jump leaves on a suspended stack, shared by
 * src/arch/switch_<arch>.S and src/context.c (which builds the first frame of
 * a new context), in the manner of marl's osfiber_asm_x64.h. A suspended
 * context is nothing but a stack pointer to one of these frames.
 *
 * What a switch preserves is exactly what the ABI says a call preserves, plus
 * the floating-point control state:
 *   x86-64 (SysV):   rbx, rbp, r12-r15, rsp, MXCSR, x87 control word.
 *   AArch64 (AAPCS64): x19-x28, x29 (fp), x30 (lr), sp, d8-d15, FPCR.
 * It does NOT preserve, because the compiler already treats them as clobbered
 * by the call to weft__ctx_jump:
 *   - caller-saved integer registers (x86-64: rax, rcx, rdx, rsi, rdi,
 *     r8-r11; AArch64: x0-x18) and all of xmm0-15/ymm/zmm (SysV has no
 *     callee-saved vector registers), the upper 64 bits of v8-v15 and all of
 *     v0-v7, v16-v31 on AArch64;
 *   - the status flags: rflags, the MXCSR and FPSR exception flags (sticky
 *     flags travel with the MXCSR image on x86-64 but FPSR is not saved on
 *     AArch64), the x87 status word, tag word and register stack (the ABI
 *     requires it empty at a call);
 *   - the signal mask (unlike swapcontext: no system call per switch),
 *     sigaltstack, errno and every other thread-local variable: a context
 *     resumed on another thread sees that thread's TLS;
 *   - CET shadow stacks and AArch64 pointer-authentication keys: objects built
 *     from these files carry no GNU property note claiming SHSTK/IBT/BTI
 *     support, so the linker turns those features off for the binary.
 */
#ifndef WEFT_ARCH_CONTEXT_OFFSETS_H_
#define WEFT_ARCH_CONTEXT_OFFSETS_H_

/* x86-64: the frame sits below the return address pushed by the call to
 * weft__ctx_jump, so WEFT__CTX_X64_RIP is that return address and the frame
 * holds WEFT__CTX_X64_SAVE bytes the switch allocates itself. */
#define WEFT__CTX_X64_MXCSR 0x00 /* 32 bits */
#define WEFT__CTX_X64_FPUCW 0x04 /* 16 bits, then 16 bits of padding */
#define WEFT__CTX_X64_R15 0x08
#define WEFT__CTX_X64_R14 0x10
#define WEFT__CTX_X64_R13 0x18
#define WEFT__CTX_X64_R12 0x20
#define WEFT__CTX_X64_RBX 0x28
#define WEFT__CTX_X64_RBP 0x30
#define WEFT__CTX_X64_RIP 0x38
#define WEFT__CTX_X64_SAVE 0x38
#define WEFT__CTX_X64_FRAME 0x40

/* AArch64: the whole frame is allocated by the switch (lr is a register).
 * Its size stays a multiple of 16 because sp must always be 16-aligned. */
#define WEFT__CTX_A64_X19 0x00
#define WEFT__CTX_A64_X21 0x10
#define WEFT__CTX_A64_X23 0x20
#define WEFT__CTX_A64_X25 0x30
#define WEFT__CTX_A64_X27 0x40
#define WEFT__CTX_A64_X29 0x50 /* x29, then x30 at +8 */
#define WEFT__CTX_A64_D8 0x60
#define WEFT__CTX_A64_D10 0x70
#define WEFT__CTX_A64_D12 0x80
#define WEFT__CTX_A64_D14 0x90
#define WEFT__CTX_A64_FPCR 0xa0
#define WEFT__CTX_A64_FRAME 0xb0

/* The first frame of a new context (built by context.c) hands its start-up
 * values to weft__ctx_trampoline in callee-saved register slots, which the
 * switch loads like any others; the trampoline then calls
 * start(arg, self, entry) with arg from the switch's return-value register:
 *   x86-64:  r12 = start, rbx = self, r13 = entry, rbp = 0.
 *   AArch64: x19 = start, x20 = self, x21 = entry, x29 = 0, x30 = trampoline.
 */

#ifndef __ASSEMBLER__

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint32_t mxcsr;
  uint16_t fpucw;
  uint16_t pad;
  uint64_t r15;
  uint64_t r14;
  uint64_t r13;
  uint64_t r12;
  uint64_t rbx;
  uint64_t rbp;
  uint64_t rip;
} weft__ctx_frame_x64_t;

typedef struct {
  uint64_t x[12]; /* x19..x30: x29 is fp, x30 is lr (where we return to) */
  uint64_t d[8];  /* d8..d15 */
  uint64_t fpcr;
  uint64_t pad;
} weft__ctx_frame_a64_t;

#define WEFT__CTX_CHECK(type, field, off) \
  _Static_assert(offsetof(type, field) == (off), #type "." #field)

WEFT__CTX_CHECK(weft__ctx_frame_x64_t, mxcsr, WEFT__CTX_X64_MXCSR);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, fpucw, WEFT__CTX_X64_FPUCW);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, r15, WEFT__CTX_X64_R15);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, r14, WEFT__CTX_X64_R14);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, r13, WEFT__CTX_X64_R13);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, r12, WEFT__CTX_X64_R12);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, rbx, WEFT__CTX_X64_RBX);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, rbp, WEFT__CTX_X64_RBP);
WEFT__CTX_CHECK(weft__ctx_frame_x64_t, rip, WEFT__CTX_X64_RIP);
_Static_assert(sizeof(weft__ctx_frame_x64_t) == WEFT__CTX_X64_FRAME,
               "x86-64 frame size");
_Static_assert(WEFT__CTX_X64_FRAME % 16 == 0, "x86-64 frame keeps alignment");

WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[0], WEFT__CTX_A64_X19);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[2], WEFT__CTX_A64_X21);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[4], WEFT__CTX_A64_X23);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[6], WEFT__CTX_A64_X25);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[8], WEFT__CTX_A64_X27);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, x[10], WEFT__CTX_A64_X29);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, d[0], WEFT__CTX_A64_D8);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, d[2], WEFT__CTX_A64_D10);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, d[4], WEFT__CTX_A64_D12);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, d[6], WEFT__CTX_A64_D14);
WEFT__CTX_CHECK(weft__ctx_frame_a64_t, fpcr, WEFT__CTX_A64_FPCR);
_Static_assert(sizeof(weft__ctx_frame_a64_t) == WEFT__CTX_A64_FRAME,
               "AArch64 frame size");
_Static_assert(WEFT__CTX_A64_FRAME % 16 == 0, "AArch64 sp stays aligned");

#undef WEFT__CTX_CHECK

#endif /* !__ASSEMBLER__ */

#endif /* WEFT_ARCH_CONTEXT_OFFSETS_H_ */
