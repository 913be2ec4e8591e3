//! Process system calls: clone (as posix_spawn uses it), execve, exit,
//! wait4, getpid and friends. The work is in proc/.

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::proc;
use alloc::vec::Vec;

/// argv and envp hold at most this many pointers (Linux: MAX_ARG_STRINGS).
const MAX_ARGS: usize = 0x7fff_ffff / 8;
/// Each string at most this long (Linux: MAX_ARG_STRLEN).
const MAX_ARG_LEN: u64 = 32 * 4096;

/// A NULL-terminated vector of string pointers, copied in.
fn strings(at: u64) -> core::result::Result<Vec<Vec<u8>>, Errno> {
    let mut out = Vec::new();
    if at == 0 {
        return Ok(out);
    }
    for i in 0..MAX_ARGS {
        let p: u64 = uaccess::read(at + 8 * i as u64)?;
        if p == 0 {
            return Ok(out);
        }
        out.push(uaccess::c_str(p, MAX_ARG_LEN).map_err(|e| match e {
            Errno::ENAMETOOLONG => Errno::E2BIG,
            e => e,
        })?);
    }
    Err(Errno::E2BIG)
}

/// execve(2). The image carries one program, so only its own executable
/// (the image's argv[0]) can be executed; another existing file is
/// ENOEXEC, as for a file in a format the kernel does not know.
pub fn execve(path: u64, argv: u64, envp: u64) -> Result {
    let path = uaccess::c_str(path, 4096)?;
    let own = crate::start::executable();
    // The image's argv[0] names the program even where no file stands in
    // for it (a program image without a rootfs).
    let same = path == own || {
        let file = crate::fs::namei::resolve(&crate::fs::cwd(), &path, true)?;
        crate::fs::namei::resolve(&crate::fs::root(), own, true)
            .is_ok_and(|o| alloc::sync::Arc::ptr_eq(&file, &o))
    };
    if !same {
        crate::log!(
            "libos: execve of {}: the image can only run its own program ({}): ENOEXEC",
            core::str::from_utf8(&path).unwrap_or("(not UTF-8)"),
            core::str::from_utf8(own).unwrap_or("(not UTF-8)")
        );
        return Err(Errno::ENOEXEC);
    }
    let (argv, envp) = (strings(argv)?, strings(envp)?);
    proc::exec(&argv, &envp)
}

pub fn wait4(pid: u64, status: u64, options: u64, rusage: u64) -> Result {
    const WNOHANG: u64 = 1;
    const WUNTRACED: u64 = 2;
    const WCONTINUED: u64 = 8;
    const WALL: u64 = 0x4000_0000;
    const WCLONE: u64 = 0x8000_0000;
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WALL | WCLONE) != 0 {
        return Err(Errno::EINVAL);
    }
    proc::wait4(pid as i32 as i64, status, options, rusage)
}

/// struct rusage (144 bytes) for `cpu_ns` of CPU time: all of it user
/// time (the libOS's work for a process is function calls in it, not a
/// kernel's); the other counters are not kept.
pub fn rusage(cpu_ns: u64) -> [u64; 18] {
    let mut r = [0u64; 18];
    r[0] = cpu_ns / 1_000_000_000;
    r[1] = cpu_ns % 1_000_000_000 / 1000;
    r
}

/// getrusage(2): RUSAGE_SELF and RUSAGE_THREAD (a process has one
/// thread), RUSAGE_CHILDREN.
pub fn getrusage(who: u64, usage: u64) -> Result {
    const RUSAGE_SELF: i32 = 0;
    const RUSAGE_CHILDREN: i32 = -1;
    const RUSAGE_THREAD: i32 = 1;
    let cpu = match who as i32 {
        RUSAGE_SELF | RUSAGE_THREAD => proc::cpu_ns(false),
        RUSAGE_CHILDREN => proc::cpu_ns(true),
        _ => return Err(Errno::EINVAL),
    };
    uaccess::write(usage, &rusage(cpu))?;
    Ok(0)
}

/// musl's __clone reaches this through __pgkraft_syscall_asm (boot.s),
/// which passes the caller's return address and r9 (see proc::clone).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn __pgkraft_clone(flags: u64, stack: u64, ret: u64, r9: u64) -> i64 {
    proc::on_syscall();
    let r = proc::clone(flags, stack, ret, r9);
    super::signal::deliver_pending();
    match r {
        Ok(v) => v,
        Err(e) => -e.0,
    }
}

/// brk(2): the first process has the program break (mem); the others
/// have none, which musl's malloc takes in its stride (it maps instead).
pub fn brk(want: u64) -> Result {
    if proc::is_first() {
        Ok(crate::mem::brk(want) as i64)
    } else {
        Ok(0)
    }
}
