//! uname, getrandom, the TLS base, resource limits, sysinfo.

use super::{Errno, Result};
use crate::arch::{cpu, uaccess};
use crate::{config, mem, time};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;

pub fn arch_prctl(code: u64, addr: u64) -> Result {
    match code {
        ARCH_SET_FS => {
            cpu::set_fs_base(addr);
            Ok(0)
        }
        ARCH_GET_FS => {
            uaccess::write(addr, &cpu::fs_base())?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Programs (and PostgreSQL's configure-time assumptions) expect Linux; the
/// version string says what this really is.
pub fn uname(buf: u64) -> Result {
    let mut u = [[0u8; 65]; 6];
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"pgkraft",
        b"6.1.0-pgkraft",
        b"#1 pgkraft libOS",
        b"x86_64",
        b"(none)",
    ];
    for (dst, src) in u.iter_mut().zip(fields) {
        dst[..src.len()].copy_from_slice(src);
    }
    uaccess::write(buf, &u)?;
    Ok(0)
}

/// RDRAND where the CPU has it, else a splitmix64 stream seeded from the TSC
/// and the clock (good enough for hash seeds; not for keys, and we say so in
/// the README).
pub fn fill_random(buf: &mut [u8]) {
    static STATE: spin::Mutex<u64> = spin::Mutex::new(0);
    for chunk in buf.chunks_mut(8) {
        let v = cpu::rdrand().unwrap_or_else(|| {
            let mut s = STATE.lock();
            if *s == 0 {
                *s = cpu::rdtsc() ^ time::realtime_ns().rotate_left(32);
            }
            *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        });
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

pub fn getrandom(buf: u64, len: u64, _flags: u64) -> Result {
    let mut dst = uaccess::slice_mut(buf, len.min(1 << 25))?;
    fill_random(&mut dst);
    Ok(dst.len() as i64)
}

const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

pub fn prlimit(pid: u64, resource: u64, new: u64, old: u64) -> Result {
    if pid != 0 && pid != crate::proc::pid() as u64 {
        return Err(Errno::ESRCH);
    }
    if resource > 15 {
        return Err(Errno::EINVAL);
    }
    let limit = match resource {
        RLIMIT_STACK => [config::MAIN_STACK_KIB * 1024; 2],
        RLIMIT_NOFILE => [config::MAX_FDS; 2],
        _ => [RLIM_INFINITY; 2],
    };
    if old != 0 {
        uaccess::write(old, &limit)?;
    }
    // Limits cannot be raised past what the image was built with; lowering
    // them is accepted and not enforced.
    if new != 0 {
        let _ = uaccess::read::<[u64; 2]>(new)?;
    }
    Ok(0)
}

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Sysinfo {
    uptime: i64,
    loads: [u64; 3],
    totalram: u64,
    freeram: u64,
    sharedram: u64,
    bufferram: u64,
    totalswap: u64,
    freeswap: u64,
    procs: u16,
    /// Explicit (the kernel's struct has 2 bytes here, then 4 of padding
    /// that must not leak libOS memory).
    _pad: [u16; 3],
    totalhigh: u64,
    freehigh: u64,
    mem_unit: u32,
    _f: [u8; 4],
}

pub fn sysinfo(buf: u64) -> Result {
    let info = Sysinfo {
        uptime: (time::monotonic_ns() / 1_000_000_000) as i64,
        // As on Linux, sysinfo and /proc/meminfo agree (MemTotal, MemFree).
        totalram: mem::total_bytes(),
        freeram: mem::free_bytes(),
        procs: 1,
        mem_unit: 1,
        ..Sysinfo::default()
    };
    uaccess::write(buf, &info)?;
    Ok(0)
}

const PR_SET_PDEATHSIG: u64 = 1;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;

/// prctl(2): the few options a server sets on itself. There is no parent
/// to die and no process list to show a name in, so they are accepted and
/// change nothing visible.
pub fn prctl(option: u64, arg: u64) -> Result {
    match option {
        PR_SET_NAME => Ok(0),
        PR_SET_PDEATHSIG => {
            if arg > 64 {
                return Err(Errno::EINVAL);
            }
            crate::proc::set_pdeath_signal(arg);
            Ok(0)
        }
        PR_GET_PDEATHSIG => {
            uaccess::write(arg, &(crate::proc::pdeath_signal() as i32))?;
            Ok(0)
        }
        PR_GET_NAME => {
            uaccess::write(arg, b"postgres\0\0\0\0\0\0\0\0")?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}
