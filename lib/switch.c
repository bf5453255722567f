/* SPDX-License-Identifier: MIT */
/* lib/switch.c: the context switch under fibers (lib/fiber.h). x86-64 and
 * aarch64 have a small routine of their own that saves and restores only
 * what the calling convention says a call preserves; elsewhere (or with
 * WEFT_FIBER_UCONTEXT) it is ucontext's swapcontext. */
#define _GNU_SOURCE
#include "fiber.h"

#include <stdlib.h>
#include <string.h>

#if WEFT__SWITCH_ASM && defined(__x86_64__)

/* weft__switch_asm(void **save_sp, void *load_sp): push the callee-saved
 * registers and the SSE/x87 control words, store the stack pointer in
 * *save_sp, load load_sp and pop the same frame from there. It leaves by
 * an indirect jump to the popped address, not by ret: a ret there always
 * misses the return predictor (the call it matches was made on the other
 * stack), while the jump's target is predicted. A new context's frame
 * "returns" into boot, which calls entry(arg) held in r13/r12. */
__asm__(".pushsection .text\n"
        ".globl weft__switch_asm\n"
        ".hidden weft__switch_asm\n"
        ".type weft__switch_asm,@function\n"
        ".p2align 4\n"
        "weft__switch_asm:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  popq %r8\n"
        "  xorl %eax, %eax\n"
        "  jmpq *%r8\n"
        ".size weft__switch_asm, .-weft__switch_asm\n"
        ".type weft__switch_boot,@function\n"
        "weft__switch_boot:\n"
        "  movq %r12, %rdi\n"
        "  callq *%r13\n"
        "  ud2\n"
        ".size weft__switch_boot, .-weft__switch_boot\n"
        ".popsection\n");

void weft__switch_boot(void);

void weft__ctx_make(weft__ctx_t *c, void *lo, size_t size,
                    void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
  /* 8 bytes of control words, six registers, the return address: 64 bytes,
   * placed so that boot starts with rsp 16-aligned as a call expects. */
  uint64_t *sp = (uint64_t *)(top - 16 - 64);
  uint32_t mxcsr;
  uint16_t fpucw;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(fpucw));
  memset(sp, 0, 64);
  memcpy(&sp[0], &mxcsr, 4);
  memcpy((char *)&sp[0] + 4, &fpucw, 2);
  sp[1] = 0;                                      /* r15 */
  sp[2] = 0;                                      /* r14 */
  sp[3] = (uint64_t)(uintptr_t)entry;             /* r13 */
  sp[4] = (uint64_t)(uintptr_t)arg;               /* r12 */
  sp[5] = 0;                                      /* rbx */
  sp[6] = 0;                                      /* rbp */
  sp[7] = (uint64_t)(uintptr_t)weft__switch_boot; /* return address */
  c->sp = sp;
}

#elif WEFT__SWITCH_ASM && defined(__aarch64__)

/* weft__switch_asm(void **save_sp, void *load_sp): store x19-x30 and
 * d8-d15 (what AAPCS64 says a call preserves; FPCR is process-global there)
 * in a 160-byte frame on the stack, store sp in *save_sp, load load_sp and
 * restore the same frame from there; ret goes to the restored x30. (Not
 * br as on x86-64: with branch protection a br must land on a "bti j",
 * which a call's return address is not.) A new context's frame has
 * x30 = boot, which calls entry(arg) held in x19/x20. */
__asm__(".pushsection .text\n"
        ".globl weft__switch_asm\n"
        ".hidden weft__switch_asm\n"
        ".type weft__switch_asm,%function\n"
        ".p2align 4\n"
        "weft__switch_asm:\n"
        "  sub sp, sp, #160\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mov x9, sp\n"
        "  str x9, [x0]\n"
        "  mov sp, x1\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  add sp, sp, #160\n"
        "  mov w0, #0\n"
        "  ret\n"
        ".size weft__switch_asm, .-weft__switch_asm\n"
        ".globl weft__switch_boot\n"
        ".hidden weft__switch_boot\n"
        ".type weft__switch_boot,%function\n"
        "weft__switch_boot:\n"
        "  mov x0, x20\n"
        "  blr x19\n"
        "  brk #0\n"
        ".size weft__switch_boot, .-weft__switch_boot\n"
        ".popsection\n");

/* Hidden (as switch_asm is in fiber.h), so boot's address is taken
 * PC-relative: through the GOT the assembler would refer to it as .text
 * plus an offset, and the linker drops the offset from a GOT entry (boot
 * would be switch_asm). */
WEFT__HIDDEN void weft__switch_boot(void);

void weft__ctx_make(weft__ctx_t *c, void *lo, size_t size,
                    void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
  /* The frame switch_asm pops: x19..x30 then d8..d15, 160 bytes; boot
   * starts with sp = top (16-aligned) and x29 = 0 ending the frame chain. */
  uint64_t *sp = (uint64_t *)(top - 160);
  memset(sp, 0, 160);
  sp[0] = (uint64_t)(uintptr_t)entry;              /* x19 */
  sp[1] = (uint64_t)(uintptr_t)arg;                /* x20 */
  sp[11] = (uint64_t)(uintptr_t)weft__switch_boot; /* x30 */
  c->sp = sp;
}

#else

/* The portable switch: makecontext passes int arguments only, so the
 * entry and its argument travel as halves of 64-bit values. */
static void boot_uc(unsigned e_hi, unsigned e_lo, unsigned a_hi,
                    unsigned a_lo) {
  void (*entry)(void *) = (void (*)(void *))(
      (uintptr_t)(((uint64_t)e_hi << 32) | e_lo));
  void *arg = (void *)(uintptr_t)(((uint64_t)a_hi << 32) | a_lo);
  entry(arg);
  abort(); /* entry never returns */
}

void weft__ctx_make(weft__ctx_t *c, void *lo, size_t size,
                    void (*entry)(void *), void *arg) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = lo;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = NULL;
  uint64_t e = (uint64_t)(uintptr_t)entry, a = (uint64_t)(uintptr_t)arg;
  makecontext(&c->uc, (void (*)(void))boot_uc, 4, (unsigned)(e >> 32),
              (unsigned)e, (unsigned)(a >> 32), (unsigned)a);
}

void weft__ctx_swap(weft__ctx_t *from, const weft__ctx_t *to) {
  swapcontext(&from->uc, &to->uc);
}
#endif
