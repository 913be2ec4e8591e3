/*
 * A minimal pgkraft guest for the runner's tests (tests/vmm.rs).
 *
 * It carries what a real image carries for the direct entry (the pgkraft
 * boot note, an identity map of the first 1 GiB in 2 MiB U/S pages, a GDT in
 * the abi::sel layout, a TSS, an empty IDT) and nothing else: no CPL0 code at
 * all. The test picks what entry64 does with -DGUEST_<NAME>; -DNO_NOTE drops
 * the boot note to make "not a pgkraft image".
 *
 * Built with `cc -c` (so the C preprocessor runs) and `ld -T mini.ld`.
 */

    .set PORT_EXIT, 0xf4
    .set PORT_PHASE, 0xf5
    .set PORT_HYPERCALL, 0xf6
    .set COM1, 0x3f8
    .set HC_CONSOLE_WRITE, 1
    .set HC_CONSOLE_READ, 2
    .set HC_SLEEP_NS, 3
    .set HC_RET, 40                 /* offsetof(abi::Hypercall, ret) */

#ifndef NO_NOTE
    .section .note.pgkraft, "a", @note
    .p2align 2
    .long 8                         /* namesz */
    .long desc_end - desc           /* descsz = size_of::<abi::BootNote>() */
    .long 0x50474b01                /* abi::NOTE_TYPE */
    .asciz "pgkraft"
desc:
    .long 1                         /* BOOT_NOTE_VERSION */
    .long 0
    .quad entry64
    .quad stack_top
    .quad pml4
    .quad gdt
    .quad gdt_end - gdt - 1
    .quad idt
    .quad tss
    .quad boot_info
    .quad pvclock
    .quad wall_clock
    .quad image_end
#ifdef NO_IOBITMAP
    .quad 103                       /* tss_limit: a bare TSS */
#else
    .quad 104 + 0x400 / 8           /* tss_limit: TSS + I/O bitmap */
#endif
desc_end:
#endif

    .macro exit status
    movb $\status, %al
    outb %al, $PORT_EXIT
    .endm

    .macro phase n
    movb $\n, %al
    outb %al, $PORT_PHASE
    .endm

    .text
    .globl entry64
entry64:
    movq %rdi, %r15                 /* BootInfo */
    phase 1

#if defined(GUEST_HELLO)
    phase 2
    leaq hello(%rip), %rsi
    movq $hello_end - hello, %rdx
    call console_write
    /* Touch the pvclock the runner pointed kvmclock at (version, mul). */
    movl pvclock(%rip), %eax
    movl pvclock+24(%rip), %ebx
    phase 3
    exit 7

#elif defined(GUEST_PVCLOCK)
    /* Sample the TSC, then hand pvclock (32 bytes), wall clock (12) and the
       sample (8) to the test, which does the kvmclock arithmetic. */
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    movq %rax, scratch(%rip)
    leaq pvclock(%rip), %rsi
    movq $32, %rdx
    call console_write
    leaq wall_clock(%rip), %rsi
    movq $12, %rdx
    call console_write
    leaq scratch(%rip), %rsi
    movq $8, %rdx
    call console_write
    exit 0

#elif defined(GUEST_LOOP)
1:  jmp 1b

#elif defined(GUEST_UD2)
    .globl ud2_here
ud2_here:
    ud2
    exit 1

#elif defined(GUEST_ECHO)
    /* Copy console input to console output until end of input. */
1:  movl $HC_CONSOLE_READ, %edi
    leaq buf(%rip), %rsi
    movq $64, %rdx
    call hypercall
    testq %rax, %rax
    jle 2f
    leaq buf(%rip), %rsi
    movq %rax, %rdx
    call console_write
    jmp 1b
2:  exit 0

#elif defined(GUEST_SERIAL)
    /* Polled 16550: print a line, then echo one input byte and a newline. */
    leaq serial_msg(%rip), %rsi
    movq $serial_end - serial_msg, %rcx
1:  movb (%rsi), %bl
    call serial_put
    incq %rsi
    decq %rcx
    jnz 1b
    movw $COM1 + 5, %dx
2:  inb %dx, %al
    testb $1, %al                   /* LSR: data ready */
    jz 2b
    movw $COM1, %dx
    inb %dx, %al
    movb %al, %bl
    call serial_put
    movb $'\n', %bl
    call serial_put
    exit 3

#elif defined(GUEST_MMIO)
    /* Inside the page tables' 1 GiB, outside the test's 64 MiB of RAM. */
    movq $0x10000000, %rax
    movq $0x1234, (%rax)
    exit 0

#elif defined(GUEST_CMDLINE)
    movabsq $0x6f666e69746f6f62, %rax   /* BOOT_INFO_MAGIC */
    cmpq %rax, (%r15)
    jne 1f
    movq 24(%r15), %rsi             /* cmdline_gpa */
    movq 32(%r15), %rdx             /* cmdline_len */
    call console_write
    exit 0
1:  exit 99

#elif defined(GUEST_HCERR)
    /* Results of: an unknown op, a write from outside RAM, a 50 ms sleep. */
    movl $99, %edi
    call hypercall
    movq %rax, scratch(%rip)
    movl $HC_CONSOLE_WRITE, %edi
    movabsq $0xffff00000000, %rsi
    movq $16, %rdx
    call hypercall
    movq %rax, scratch+8(%rip)
    movl $HC_SLEEP_NS, %edi
    movq $50000000, %rsi
    call hypercall
    movq %rax, scratch+16(%rip)
    leaq scratch(%rip), %rsi
    movq $24, %rdx
    call console_write
    exit 0

#elif defined(GUEST_CPU)
    /* What CPU the guest sees, and whether AVX and wrfsbase work at CPL3:
       scratch = cpuid(1).ecx, cpuid(7).ebx, xcr0, fs base read back; buf =
       32 bytes stored from %ymm0 (all ones if AVX ran). */
    movl $1, %eax
    xorl %ecx, %ecx
    cpuid
    movl %ecx, scratch(%rip)
    movl $7, %eax
    xorl %ecx, %ecx
    cpuid
    movl %ebx, scratch+4(%rip)
    testl $(1 << 27), scratch(%rip)     /* OSXSAVE */
    jz 1f
    xorl %ecx, %ecx
    xgetbv
    movl %eax, scratch+8(%rip)
    movl %edx, scratch+12(%rip)
    testl $4, %eax                      /* XCR0.AVX */
    jz 1f
    vpcmpeqd %ymm0, %ymm0, %ymm0
    vmovdqu %ymm0, buf(%rip)
1:  testl $1, scratch+4(%rip)           /* FSGSBASE */
    jz 2f
    movabsq $0x123456789000, %rax
    wrfsbase %rax
    rdfsbase %rbx
    movq %rbx, scratch+16(%rip)
2:  leaq scratch(%rip), %rsi
    movq $24, %rdx
    call console_write
    leaq buf(%rip), %rsi
    movq $32, %rdx
    call console_write
    exit 0

#elif defined(GUEST_BSS)
    /* Bss on the page where the file-backed data ends must read as zero,
       not as whatever follows the segment in the file. */
    leaq bss_probe(%rip), %rsi
    movq $64, %rdx
    call console_write
    exit 0

#else
#error "pick a guest: -DGUEST_<NAME>"
#endif

/* rsi = bytes, rdx = length -> rax = hypercall ret */
console_write:
    movl $HC_CONSOLE_WRITE, %edi
/* edi = op, rsi = args[0], rdx = args[1] -> rax = ret. One VM exit. */
hypercall:
    movl %edi, hc(%rip)
    movq %rsi, hc+8(%rip)
    movq %rdx, hc+16(%rip)
    leaq hc(%rip), %rax
    outl %eax, $PORT_HYPERCALL
    movq hc+HC_RET(%rip), %rax
    ret

/* bl = byte; waits for the transmitter to be empty. Keeps rsi/rcx. */
serial_put:
    movw $COM1 + 5, %dx
1:  inb %dx, %al
    testb $0x20, %al                /* LSR: THR empty */
    jz 1b
    movw $COM1, %dx
    movb %bl, %al
    outb %al, %dx
    ret

    .section .rodata
hello:
    .ascii "hello from guest\n"
hello_end:
serial_msg:
    .ascii "serial ok\n"
serial_end:

    .data
    .p2align 12
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x7
    .fill 511, 8, 0
pd:                                 /* 512 x 2 MiB: P | RW | U/S | PS */
    .set i, 0
    .rept 512
    .quad (i << 21) | 0x87
    .set i, i + 1
    .endr

    .p2align 4
gdt:
    .quad 0
    .quad 0x00209a0000000000        /* 0x08 kernel code */
    .quad 0x0000920000000000        /* 0x10 kernel data */
    .quad 0x0000f20000000000        /* 0x18 user data */
    .quad 0x0020fa0000000000        /* 0x20 user code */
    /* 0x28 TSS: left zero, as the libOS leaves it. The runner loads TR
       from the boot note (base `tss`, limit `tss_limit`), never from here. */
    .quad 0
    .quad 0
gdt_end:

    .p2align 4
tss:
    .long 0
    .quad cpl0_stack_top            /* rsp0 */
    .fill 88, 1, 0
    .word 0
    .word 104                       /* I/O map base: right after the TSS */
    /* I/O permission bitmap: ports 0..0x3ff allowed, then the 0xff byte
       that ends the map. Only inside TR's limit without NO_IOBITMAP. */
    .fill 0x400 / 8, 1, 0
    .byte 0xff

    .p2align 3
hc:
    .fill 48, 1, 0

    .section .bss.early, "aw", @nobits
bss_probe:                          /* shares a page with the end of .data */
    .skip 64

    .bss
    .p2align 12
idt:
    .skip 4096                      /* 256 absent gates */
boot_info:
    .skip 4096
pvclock:                            /* own 64 bytes: must not cross a page */
    .skip 64
wall_clock:
    .skip 64
scratch:
    .skip 64
buf:
    .skip 64
    .p2align 12
    .skip 16384
stack_top:
    .skip 4096
cpl0_stack_top:
