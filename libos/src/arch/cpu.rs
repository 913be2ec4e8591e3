//! CPU instructions usable at CPL3 (IOPL=3 lets us use ports; CR4.FSGSBASE
//! lets us set the TLS base without a trip to CPL0).

use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; IOPL=3 makes it
    // legal at CPL3. Not `nomem`: a hypercall port write asks the runner to
    // read and write guest memory, so the compiler must not cache across it.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) }
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as outb.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    }
}

pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as outb.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nostack, preserves_flags)) }
    v
}

pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub fn cpuid(leaf: u32, sub: u32) -> Cpuid {
    // SAFETY: cpuid is always available in long mode and only reads.
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// A hardware random number, or None if the CPU has no RDRAND or it failed.
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0).ecx & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let mut v = 0u64;
        // SAFETY: feature checked above; writes only `v`.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut v) } == 1 {
            return Some(v);
        }
    }
    None
}

pub fn set_fs_base(base: u64) {
    // SAFETY: both boot paths set CR4.FSGSBASE (the runner and the PVH stub
    // only leave it off on CPUs without the feature, which pgkraft refuses at
    // boot: see check_features). Changing FS only affects TLS addressing.
    unsafe { asm!("wrfsbase {}", in(reg) base, options(nostack, preserves_flags)) }
}

pub fn fs_base() -> u64 {
    let v: u64;
    // SAFETY: as set_fs_base.
    unsafe { asm!("rdfsbase {}", out(reg) v, options(nostack, preserves_flags)) }
    v
}

/// Whether this CPU lets CPL3 code use wrfsbase (CPUID.7.EBX[0]).
pub fn has_fsgsbase() -> bool {
    cpuid(7, 0).ebx & 1 != 0
}

pub fn pause() {
    core::hint::spin_loop();
}

/// Switch to the program's initial stack and jump to its `_start`, as the
/// Linux kernel does after exec: %rsp points at argc, registers are clear.
pub fn enter_program(entry: u64, stack: u64) -> ! {
    // SAFETY: `stack` holds a complete argc/argv/envp/auxv block built by
    // start.rs inside memory the allocator reserved for the main stack, and
    // `entry` is the linked program's `_start`. Nothing returns here.
    unsafe {
        asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "xor edx, edx",
            "jmp {entry}",
            stack = in(reg) stack,
            entry = in(reg) entry,
            options(noreturn)
        )
    }
}

/// Call a program's signal handler, as the kernel would on return to user
/// space, but synchronously from inside kill(). SA_SIGINFO handlers get a
/// siginfo_t (signal number and SI_TKILL) and an empty ucontext.
pub fn call_signal_handler(handler: u64, sig: u64, siginfo: bool) {
    let mut info = [0u32; 32];
    info[0] = sig as u32;
    info[2] = (-6i32) as u32; // si_code = SI_TKILL
    info[4] = crate::proc::pid();
    info[5] = super::super::syscall::ids::UID as u32;
    let mut ucontext = [0u64; 128];
    let _ = siginfo; // the extra arguments are harmless for a one-argument handler
    // SAFETY: `handler` is the address the program registered with
    // rt_sigaction for this signal (not SIG_DFL/SIG_IGN); calling it with the
    // SysV ABI and these three arguments is what the kernel's signal frame
    // amounts to. The buffers outlive the call.
    unsafe {
        let f: extern "C" fn(i32, *mut u32, *mut u64) = core::mem::transmute(handler as usize);
        f(sig as i32, info.as_mut_ptr(), ucontext.as_mut_ptr());
    }
}
