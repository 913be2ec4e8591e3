# pgkraft libOS: boot paths, static descriptor tables and the CPL0 stubs.
#
# Everything that must run at CPL0 lives in this file and is kept short,
# because on PVM every CPL0 instruction is emulated (~1-2 us each).
# Selectors, control-register values and the note layout are the contract in
# abi/src/lib.rs; keep the two in step.

    .set KERNEL_CS, 0x08
    .set KERNEL_DS, 0x10
    .set USER_DS,   0x1b
    .set USER_CS,   0x23
    .set TSS_SEL,   0x28
    .set USER_RFLAGS, 0x3002
    .set PORT_PHASE, 0xf5

# ---------------------------------------------------------------------------
# ELF notes: Xen PVH entry (QEMU -kernel, Firecracker, Cloud Hypervisor) and
# the pgkraft boot note (our runner's direct CPL3 entry).
# ---------------------------------------------------------------------------
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                     # namesz
    .long 4                     # descsz
    .long 18                    # XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .long pvh_entry32

    .section .note.pgkraft, "a", @note
    .p2align 2
    .long 8                     # namesz
    .long pgkraft_note_end - pgkraft_note_desc
    .long 0x50474b01            # abi::NOTE_TYPE
    .asciz "pgkraft"
pgkraft_note_desc:
    .long 1                     # version
    .long 0
    .quad _pgkraft_entry64
    .quad boot_stack_top
    .quad pml4
    .quad gdt
    .quad gdt_end - gdt - 1
    .quad idt
    .quad tss
    .quad boot_info_page
    .quad pvclock_page
    .quad pvclock_page + 64     # wall clock struct, same page
    .quad __image_end
    .quad TSS_LIMIT
pgkraft_note_end:

# ---------------------------------------------------------------------------
# Static identity map of 0..4 GiB. The first 2 MiB use 4 KiB pages so that
# page 0 is absent (NULL dereferences fault); the rest are 2 MiB pages.
# Every page is U/S=1: the program and the libOS both run at CPL3.
# ---------------------------------------------------------------------------
    .section .data.pagetables, "aw"
    .p2align 12
    .globl pml4
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd0 + 0x7
    .quad pd1 + 0x7
    .quad pd2 + 0x7
    .quad pd3 + 0x7
    .fill 508, 8, 0
pd0:
    .quad pt0 + 0x7
    .set i, 1
    .rept 511
    .quad (i << 21) | 0x87
    .set i, i + 1
    .endr
pd1:
    .rept 512
    .quad (i << 21) | 0x87
    .set i, i + 1
    .endr
pd2:
    .rept 512
    .quad (i << 21) | 0x87
    .set i, i + 1
    .endr
pd3:
    .rept 512
    .quad (i << 21) | 0x87
    .set i, i + 1
    .endr
pt0:
    .quad 0
    .set i, 1
    .rept 511
    .quad (i << 12) | 0x7
    .set i, i + 1
    .endr

# GDT: null, kernel code, kernel data, user data, user code, TSS (16 bytes).
# The TSS descriptor's base is split across fields the linker cannot compute,
# so whoever loads TR fills it (pvh_entry64 here; our runner sets TR's hidden
# base directly and the libOS fills the descriptor at CPL3 for consistency).
    .section .data.gdt, "aw"
    .p2align 4
    .globl gdt
gdt:
    .quad 0
    .quad 0x00209a0000000000
    .quad 0x0000920000000000
    .quad 0x0000f20000000000
    .quad 0x0020fa0000000000
    .globl gdt_tss
gdt_tss:
    .quad 0
    .quad 0
gdt_end:
gdt_ptr32:
    .word gdt_end - gdt - 1
    .long gdt
    .p2align 4
gdt_ptr64:
    .word gdt_end - gdt - 1
    .quad gdt
idt_ptr:
    .word 256 * 16 - 1
    .quad idt

    .p2align 4
    .globl tss
tss:
    .long 0
    .quad cpl0_stack_top        # rsp0: exceptions from CPL3 land on this stack
    .fill 88, 1, 0
    .word 0
    .word tss_iomap - tss       # I/O permission bitmap right after the TSS
# PVM ignores RFLAGS.IOPL for CPL3 (so does QEMU on PVM, where even iretq
# cannot set it): CPL3 port I/O is allowed by this bitmap instead. All zero
# bits: ports 0x000-0x3ff are open (exit, phase, hypercall, COM1); ports
# past the TSS limit stay closed. The trailing 0xff byte is required.
tss_iomap:
    .fill 128, 1, 0
    .byte 0xff
tss_end:
    .set TSS_LIMIT, tss_end - tss - 1

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .globl idt
idt:
    .fill 256 * 16, 1, 0
    .globl boot_info_page
boot_info_page:
    .fill 4096, 1, 0
    .globl pvclock_page
pvclock_page:
    .fill 4096, 1, 0
    .p2align 4
cpl0_stack:
    .fill 16384, 1, 0
cpl0_stack_top:
fault_stack:
    .fill 65536, 1, 0
    .globl fault_stack_top
fault_stack_top:
boot_stack:
    .fill 65536, 1, 0
boot_stack_top:
    .globl pvh_start_info_ptr
pvh_start_info_ptr:
    .quad 0

# ---------------------------------------------------------------------------
# PVH entry: 32-bit protected mode, paging off, CPL0, %ebx = hvm_start_info.
# ---------------------------------------------------------------------------
    .section .text.boot, "ax"
    .code32
    .globl pvh_entry32
pvh_entry32:
    cli
    movl %ebx, pvh_start_info_ptr
    lgdt gdt_ptr32
    # CR4: PAE | OSFXSR | OSXMMEXCPT, plus FSGSBASE and OSXSAVE when CPUID has them.
    movl $7, %eax
    xorl %ecx, %ecx
    cpuid
    movl $0x620, %edi
    testl $1, %ebx
    jz 1f
    orl $0x10000, %edi
1:  movl $1, %eax
    cpuid
    testl $(1 << 26), %ecx
    jz 2f
    orl $0x40000, %edi
2:  movl %edi, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl $0x80010033, %eax
    movl %eax, %cr0
    ljmp $KERNEL_CS, $pvh_entry64

    .code64
pvh_entry64:
    leaq cpl0_stack_top(%rip), %rsp
    movl $KERNEL_DS, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    lgdt gdt_ptr64
    # XCR0 = x87 | SSE | AVX (as far as CPUID leaf 0xd allows) when OSXSAVE is on.
    movq %cr4, %rax
    testl $0x40000, %eax
    jz 1f
    movl $0xd, %eax
    xorl %ecx, %ecx
    cpuid
    andl $7, %eax
    xorl %edx, %edx
    xorl %ecx, %ecx
    xsetbv
1:  leaq tss(%rip), %rax
    call fill_tss_descriptor
    movw $TSS_SEL, %ax
    ltr %ax
    lidt idt_ptr(%rip)
    # kvmclock, when the hypervisor offers it (leaf 0x40000001 EAX bit 3).
    movl $0x40000000, %eax
    cpuid
    cmpl $0x4b4d564b, %ebx      # "KVMK"
    jne 2f
    movl $0x40000001, %eax
    cpuid
    testl $(1 << 3), %eax
    jz 2f
    movl $0x4b564d01, %ecx
    leaq pvclock_page+1(%rip), %rax
    xorl %edx, %edx
    wrmsr
    movl $0x4b564d00, %ecx
    leaq pvclock_page+64(%rip), %rax
    wrmsr
2:  movq pvh_start_info_ptr(%rip), %rdi
    movq $1, %rsi               # boot kind: PVH
    pushq $USER_DS
    leaq boot_stack_top(%rip), %rax
    pushq %rax
    pushq $USER_RFLAGS
    pushq $USER_CS
    leaq entry_common(%rip), %rax
    pushq %rax
    iretq

# %rax = TSS address; writes the 16-byte available-64-bit-TSS descriptor.
# Runs at CPL0 on the PVH path and at CPL3 (called from Rust) on ours.
    .globl fill_tss_descriptor
fill_tss_descriptor:
    leaq gdt_tss(%rip), %rdx
    movq $TSS_LIMIT, %rcx       # limit
    movq %rax, %r8
    andq $0xffffff, %r8
    shlq $16, %r8
    orq %r8, %rcx               # base 23:0
    movq $0x89, %r8
    shlq $40, %r8
    orq %r8, %rcx               # present, type 9
    movq %rax, %r8
    shrq $24, %r8
    andq $0xff, %r8
    shlq $56, %r8
    orq %r8, %rcx               # base 31:24
    movq %rcx, (%rdx)
    movq %rax, %r8
    shrq $32, %r8
    movq %r8, 8(%rdx)           # base 63:32
    ret

# ---------------------------------------------------------------------------
# Our runner enters here at CPL3 with the vCPU already in long mode:
# %rdi = BootInfo, %rsp = boot_stack_top.
# ---------------------------------------------------------------------------
    .text
    .globl _pgkraft_entry64
_pgkraft_entry64:
    movb $1, %al                # abi::Phase::FirstInstruction
    outb %al, $PORT_PHASE
    xorl %esi, %esi             # boot kind: pgkraft runner
entry_common:
    xorl %ebp, %ebp
    andq $-16, %rsp
    call libos_main
    ud2

# ---------------------------------------------------------------------------
# System calls as calls. musl's assembly files call this with the register
# convention of the `syscall` instruction (rax = number; rdi, rsi, rdx, r10,
# r8, r9; result in rax; only rcx and r11 clobbered) and it forwards to the C
# ABI function __pgkraft_syscall(n, a1, ..., a6).
# ---------------------------------------------------------------------------
# The program is a static PIE and jumps through this table at the fixed
# address pgkraft_abi::SYSCALL_ENTRY_TABLE (link.ld places it).
    .section .pgkraft.entry, "a"
    .globl pgkraft_entry_table
pgkraft_entry_table:
    .quad __pgkraft_syscall
    .quad __pgkraft_syscall_asm
    .text

    .globl __pgkraft_syscall_asm
__pgkraft_syscall_asm:
    pushq %rbx
    pushq %rdi
    pushq %rsi
    pushq %rdx
    pushq %r8
    pushq %r9
    pushq %r10
    # musl's assembly callers leave rsp at no particular alignment; the C
    # ABI wants it 16-byte aligned at each call.
    movq %rsp, %rbx
    andq $-16, %rsp
    cmpq $56, %rax
    je 2f
    subq $8, %rsp
    pushq %r9                   # a6 on the stack
    movq %r8, %r9
    movq %r10, %r8
    movq %rdx, %rcx
    movq %rsi, %rdx
    movq %rdi, %rsi
    movq %rax, %rdi
    call __pgkraft_syscall
    jmp 3f
    # clone: __pgkraft_clone(flags, stack, return address, r9). The child
    # starts at the return address on its own stack (proc::clone).
2:  movq %r9, %rcx
    movq 56(%rbx), %rdx
    call __pgkraft_clone
3:  movq %rbx, %rsp
    popq %r10
    popq %r9
    popq %r8
    popq %rdx
    popq %rsi
    popq %rdi
    popq %rbx
    ret

# ---------------------------------------------------------------------------
# CPL0 exception stubs. They do as little as possible at CPL0: save the
# interrupted state and CR2 on the CPL0 stack, then iretq to the CPL3 handler
# libos_fault(frame) on its own stack. Vectors that push no error code push 0.
# ---------------------------------------------------------------------------
    .macro exc_noerr vec
    .p2align 4
exc_\vec:
    pushq $0
    pushq $\vec
    jmp exc_common
    .endm
    .macro exc_err vec
    .p2align 4
exc_\vec:
    pushq $\vec
    jmp exc_common
    .endm

    .section .text.cpl0, "ax"
    exc_noerr 0
    exc_noerr 1
    exc_noerr 2
    exc_noerr 3
    exc_noerr 4
    exc_noerr 5
    exc_noerr 6
    exc_noerr 7
    exc_err 8
    exc_noerr 9
    exc_err 10
    exc_err 11
    exc_err 12
    exc_err 13
    exc_err 14
    exc_noerr 15
    exc_noerr 16
    exc_err 17
    exc_noerr 18
    exc_noerr 19
    exc_noerr 20
    exc_err 21
    exc_noerr 22
    exc_noerr 23
    exc_noerr 24
    exc_noerr 25
    exc_noerr 26
    exc_noerr 27
    exc_noerr 28
    exc_err 29
    exc_err 30
    exc_noerr 31

# Spurious or unexpected interrupts (vectors 32-255): ignore.
    .p2align 4
    .globl irq_ignore
irq_ignore:
    iretq

exc_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %cr2, %rax
    pushq %rax
    movq %rsp, %rdi             # FaultFrame, readable at CPL3 (U/S=1 everywhere)
    pushq $USER_DS
    # As if called: rsp+8 16-byte aligned at entry (the SysV ABI), since
    # compiled code keeps its SSE spills there with movaps. A fault that
    # ends a process goes on to schedule others on this stack.
    leaq fault_stack_top-8(%rip), %rax
    pushq %rax
    pushq $USER_RFLAGS
    pushq $USER_CS
    leaq libos_fault(%rip), %rax
    pushq %rax
    iretq

    .section .rodata
    .p2align 3
    .globl exception_stubs
exception_stubs:
    .irp v,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_\v
    .endr
