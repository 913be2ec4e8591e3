//! The Linux x86-64 system-call ABI, reached by a function call from musl.
//!
//! Each handler takes the raw argument registers and returns
//! `Result<i64, Errno>`; the entry point turns errors into `-errno` as the
//! kernel does. An unimplemented call answers ENOSYS and is reported once.

pub mod clock;
pub mod console;
pub mod ids;
pub mod misc;
pub mod mm;
mod names;
pub mod signal;

use core::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    pub const ESRCH: Errno = Errno(3);
    pub const EBADF: Errno = Errno(9);
    pub const ENOMEM: Errno = Errno(12);
    pub const EFAULT: Errno = Errno(14);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOTTY: Errno = Errno(25);
    pub const ESPIPE: Errno = Errno(29);
    pub const ENOSYS: Errno = Errno(38);
    pub const ENODEV: Errno = Errno(19);
    pub const EEXIST: Errno = Errno(17);
}

pub type Result = core::result::Result<i64, Errno>;

/// Linux system-call numbers we implement (x86-64).
mod nr {
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const FSTAT: i64 = 5;
    pub const LSEEK: i64 = 8;
    pub const MMAP: i64 = 9;
    pub const MPROTECT: i64 = 10;
    pub const MUNMAP: i64 = 11;
    pub const BRK: i64 = 12;
    pub const RT_SIGACTION: i64 = 13;
    pub const RT_SIGPROCMASK: i64 = 14;
    pub const IOCTL: i64 = 16;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const SCHED_YIELD: i64 = 24;
    pub const MREMAP: i64 = 25;
    pub const MADVISE: i64 = 28;
    pub const NANOSLEEP: i64 = 35;
    pub const GETPID: i64 = 39;
    pub const EXIT: i64 = 60;
    pub const KILL: i64 = 62;
    pub const UNAME: i64 = 63;
    pub const FCNTL: i64 = 72;
    pub const GETTIMEOFDAY: i64 = 96;
    pub const GETRLIMIT: i64 = 97;
    pub const SYSINFO: i64 = 99;
    pub const GETUID: i64 = 102;
    pub const GETGID: i64 = 104;
    pub const GETEUID: i64 = 107;
    pub const GETEGID: i64 = 108;
    pub const GETPPID: i64 = 110;
    pub const SIGALTSTACK: i64 = 131;
    pub const ARCH_PRCTL: i64 = 158;
    pub const GETTID: i64 = 186;
    pub const TIME: i64 = 201;
    pub const SET_TID_ADDRESS: i64 = 218;
    pub const CLOCK_GETTIME: i64 = 228;
    pub const CLOCK_GETRES: i64 = 229;
    pub const CLOCK_NANOSLEEP: i64 = 230;
    pub const EXIT_GROUP: i64 = 231;
    pub const TGKILL: i64 = 234;
    pub const TKILL: i64 = 200;
    pub const SET_ROBUST_LIST: i64 = 273;
    pub const PRLIMIT64: i64 = 302;
    pub const GETRANDOM: i64 = 318;
}

fn dispatch(n: i64, a: [u64; 6]) -> Result {
    match n {
        nr::READ => console::read(a[0], a[1], a[2]),
        nr::WRITE => console::write(a[0], a[1], a[2]),
        nr::READV => console::readv(a[0], a[1], a[2]),
        nr::WRITEV => console::writev(a[0], a[1], a[2]),
        nr::CLOSE => console::close(a[0]),
        nr::FSTAT => console::fstat(a[0], a[1]),
        nr::LSEEK => console::lseek(a[0]),
        nr::IOCTL => console::ioctl(a[0], a[1], a[2]),
        nr::FCNTL => console::fcntl(a[0], a[1], a[2]),
        nr::MMAP => mm::mmap(a[0], a[1], a[2], a[3], a[4] as i64, a[5]),
        nr::MUNMAP => mm::munmap(a[0], a[1]),
        nr::MREMAP => mm::mremap(a[0], a[1], a[2], a[3], a[4]),
        nr::MPROTECT => mm::mprotect(a[0]),
        nr::MADVISE => mm::madvise(a[0], a[1], a[2]),
        nr::BRK => Ok(crate::mem::brk(a[0]) as i64),
        nr::RT_SIGACTION => signal::rt_sigaction(a[0], a[1], a[2], a[3]),
        nr::RT_SIGPROCMASK => signal::rt_sigprocmask(a[0], a[1], a[2], a[3]),
        nr::SIGALTSTACK => Ok(0),
        nr::KILL => signal::kill(a[0] as i64, a[1]),
        nr::TKILL => signal::kill(ids::PID as i64, a[1]),
        nr::TGKILL => signal::kill(a[0] as i64, a[2]),
        nr::SCHED_YIELD => Ok(0),
        nr::NANOSLEEP => clock::nanosleep(a[0], a[1]),
        nr::CLOCK_NANOSLEEP => clock::clock_nanosleep(a[0], a[1], a[2], a[3]),
        nr::CLOCK_GETTIME => clock::clock_gettime(a[0], a[1]),
        nr::CLOCK_GETRES => clock::clock_getres(a[0], a[1]),
        nr::GETTIMEOFDAY => clock::gettimeofday(a[0]),
        nr::TIME => clock::time(a[0]),
        nr::GETPID => Ok(ids::PID as i64),
        nr::GETTID => Ok(ids::PID as i64),
        nr::GETPPID => Ok(0),
        nr::GETUID | nr::GETEUID => Ok(ids::UID as i64),
        nr::GETGID | nr::GETEGID => Ok(ids::GID as i64),
        nr::SET_TID_ADDRESS => Ok(ids::PID as i64),
        nr::SET_ROBUST_LIST => Ok(0),
        nr::ARCH_PRCTL => misc::arch_prctl(a[0], a[1]),
        nr::UNAME => misc::uname(a[0]),
        nr::GETRANDOM => misc::getrandom(a[0], a[1], a[2]),
        nr::GETRLIMIT => misc::prlimit(0, a[0], 0, a[1]),
        nr::PRLIMIT64 => misc::prlimit(a[0], a[1], a[2], a[3]),
        nr::SYSINFO => misc::sysinfo(a[0]),
        nr::EXIT | nr::EXIT_GROUP => crate::platform::exit(a[0] as u8),
        _ => {
            report_unimplemented(n);
            Err(Errno::ENOSYS)
        }
    }
}

/// One bit per system-call number already reported.
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn report_unimplemented(n: i64) {
    let Ok(idx) = usize::try_from(n) else {
        crate::log!("libos: unimplemented system call {n} (ENOSYS)");
        return;
    };
    let (word, bit) = (idx / 64, 1u64 << (idx % 64));
    if word < REPORTED.len() && REPORTED[word].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return;
    }
    match names::NAMES.get(idx).filter(|s| !s.is_empty()) {
        Some(name) => {
            crate::log!("libos: unimplemented system call {name} ({n}): returning ENOSYS")
        }
        None => crate::log!("libos: unknown system call number {n}: returning ENOSYS"),
    }
}

/// musl's system-call layer calls this (see libos/musl/patches).
#[unsafe(no_mangle)]
pub extern "C" fn __pgkraft_syscall(
    n: i64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
) -> i64 {
    let r = dispatch(n, [a1, a2, a3, a4, a5, a6]);
    #[cfg(feature = "trace-syscalls")]
    {
        let name = usize::try_from(n)
            .ok()
            .and_then(|i| names::NAMES.get(i))
            .copied()
            .unwrap_or("?");
        crate::log!("libos: {name}({a1:#x}, {a2:#x}, {a3:#x}, {a4:#x}) = {r:?}");
    }
    match r {
        Ok(v) => v,
        Err(e) => -e.0,
    }
}
