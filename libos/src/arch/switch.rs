//! Switching between processes: all of them live in one address space and
//! run at CPL3, so a switch is what a green-thread switch is: save the
//! callee-saved registers on the current stack, swap stack pointers, pop
//! the other's. No page table or privilege changes, so no trap: ~tens of
//! ns (the alternative, one page-table root per process, pays a CPL0 trap
//! per switch, 12-17 µs on this PVM host; docs/ARCHITECTURE.md §3).
//!
//! A context that never ran (a clone child) starts in a stub below, which
//! takes what it needs from the registers the switch pops.

use core::arch::global_asm;

global_asm!(
    r#"
    .text
    .globl pgkraft_switch
# pgkraft_switch(save: *mut u64 (rdi), load: u64 (rsi)): SysV callee-saved
# registers pushed (with MXCSR's and the x87 control word, which the ABI
# also keeps across calls: one process's rounding mode is not another's),
# rsp saved to *save, then the other context's popped.
pgkraft_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

# The child of clone(CLONE_VM|CLONE_VFORK): as the kernel resumes it after
# the syscall instruction. musl's __clone (libos/musl/patches) needs rax = 0,
# rsp = the stack it passed (r14), r9 = its function (r13), at the return
# address of its call (r12).
pgkraft_start_clone_child:
    movq %r14, %rsp
    movq %r13, %r9
    xorl %eax, %eax
    jmpq *%r12
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn pgkraft_switch(save: *mut u64, load: u64);
    fn pgkraft_start_clone_child();
}

/// Save the running context (its stack pointer into `save`) and resume the
/// one saved at `load`. Returns when something switches back to `save`.
///
/// The caller guarantees that `load` is a stack pointer saved by this
/// function, or made by [`frame`], whose stack is still allocated, and
/// that it holds no lock another context may take.
pub fn switch(save: &core::sync::atomic::AtomicU64, load: u64) {
    // SAFETY: see above; `save` is a valid place for the pointer, and the
    // asm saves and restores every register the SysV ABI lets a callee
    // keep, so to the caller this is an ordinary call.
    unsafe { pgkraft_switch(save.as_ptr(), load) }
}

/// How a context that never ran starts.
pub enum Start {
    /// A clone child returning from musl's `__clone` system call.
    CloneChild { ret: u64, sp: u64, r9: u64 },
}

/// Lay out, just below `top` (16-byte aligned, in memory the context will
/// own), what [`switch`] pops, and return the stack pointer to load.
pub fn frame(top: u64, start: Start) -> u64 {
    let (stub, r12, r13, r14) = match start {
        Start::CloneChild { ret, sp, r9 } => {
            (pgkraft_start_clone_child as *const () as u64, ret, r9, sp)
        }
    };
    // MXCSR and x87 control word at their defaults (0x1f80, 0x37f), r15,
    // r14, r13, r12, rbx, rbp, return address.
    let words = [0x037f_0000_1f80, 0, r14, r13, r12, 0, 0, stub];
    let at = (top & !15) - 8 * words.len() as u64 - 8;
    for (i, w) in words.iter().enumerate() {
        // SAFETY: the caller hands over [at, top) for this context's stack
        // (RAM the libOS allocated); nothing else uses it yet.
        unsafe { ((at + 8 * i as u64) as *mut u64).write(*w) };
    }
    at
}
