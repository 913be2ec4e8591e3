//! What happens when the program (or the libOS) faults: boot.s saves the
//! state at CPL0 and comes back up to `libos_fault` at CPL3, which reports
//! it. A fault in the program's code in a process other than the first ends
//! that process as the matching signal would on Linux (its parent sees it
//! in wait4: PostgreSQL's postmaster then reinitializes); any other fault
//! (the first process, or the libOS itself) ends the run with status 1.

/// Layout pushed by `exc_common` in boot.s, lowest address first.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FaultFrame {
    cr2: u64,
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV",
    "#VC",
    "#SX security",
    "reserved",
];

#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn libos_fault(frame: &FaultFrame) -> ! {
    // Copy first: the frame sits on the CPL0 stack, which the next exception
    // (even the #GP a port write takes under QEMU) reuses.
    let f = *frame;
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    crate::log!(
        "libos: guest fault: vector {} ({name}), error code {:#x}, address (cr2) {:#x}",
        f.vector,
        f.error,
        f.cr2
    );
    crate::log!(
        "  rip {:#018x} rsp {:#018x} rflags {:#x} cs {:#x} ss {:#x}",
        f.rip,
        f.rsp,
        f.rflags,
        f.cs,
        f.ss
    );
    crate::log!(
        "  rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    crate::log!(
        "  rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}",
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8
    );
    crate::log!(
        "  r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}",
        f.r9,
        f.r10,
        f.r11,
        f.r12
    );
    crate::log!(
        "  r13 {:#018x} r14 {:#018x} r15 {:#018x}",
        f.r13,
        f.r14,
        f.r15
    );
    // The program's code runs in a slot; the libOS's below 4 GiB. A vfork
    // child runs in its parent's slot and has none of its own (base 0).
    if f.rip >= crate::arch::paging::WINDOW_BASE {
        let base = crate::proc::slot_base();
        crate::log!(
            "  in process {} at program offset {:#x}",
            crate::proc::pid(),
            f.rip.wrapping_sub(base)
        );
        if !crate::proc::is_first() {
            crate::proc::exit_by_signal(match f.vector {
                0 | 16 | 19 => SIGFPE,
                6 => SIGILL,
                3 => SIGTRAP,
                _ => SIGSEGV,
            });
        }
    }
    crate::platform::exit(1)
}

const SIGILL: u64 = 4;
const SIGTRAP: u64 = 5;
const SIGFPE: u64 = 8;
const SIGSEGV: u64 = 11;
