//! File descriptors 0, 1 and 2: the console. (Files come with the in-memory
//! file system; until then every other descriptor is EBADF.)

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::platform;
use core::sync::atomic::{AtomicU8, Ordering};

/// Bit n set = fd n closed.
static CLOSED: AtomicU8 = AtomicU8::new(0);

fn console_fd(fd: u64) -> core::result::Result<(), Errno> {
    if fd < 3 && CLOSED.load(Ordering::Relaxed) & (1 << fd) == 0 {
        Ok(())
    } else {
        Err(Errno::EBADF)
    }
}

pub fn read(fd: u64, buf: u64, len: u64) -> Result {
    console_fd(fd)?;
    let dst = uaccess::slice_mut(buf, len)?;
    Ok(platform::console_read(dst) as i64)
}

pub fn write(fd: u64, buf: u64, len: u64) -> Result {
    console_fd(fd)?;
    let src = uaccess::slice(buf, len)?;
    Ok(platform::console_write(src) as i64)
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Iovec {
    base: u64,
    len: u64,
}

fn iovecs(iov: u64, count: u64) -> core::result::Result<impl Iterator<Item = Iovec>, Errno> {
    if count > 1024 {
        return Err(Errno::EINVAL);
    }
    uaccess::slice(iov, count * 16)?;
    Ok((0..count).filter_map(move |i| uaccess::read::<Iovec>(iov + i * 16).ok()))
}

pub fn writev(fd: u64, iov: u64, count: u64) -> Result {
    console_fd(fd)?;
    let mut total = 0;
    for v in iovecs(iov, count)? {
        let n = platform::console_write(uaccess::slice(v.base, v.len)?);
        total += n as i64;
        if n < v.len as usize {
            break;
        }
    }
    Ok(total)
}

/// Like Linux on a terminal, one readv returns what one read would: it stops
/// after the first buffer that was not filled.
pub fn readv(fd: u64, iov: u64, count: u64) -> Result {
    console_fd(fd)?;
    let mut total = 0;
    for v in iovecs(iov, count)? {
        if v.len == 0 {
            continue;
        }
        let n = platform::console_read(uaccess::slice_mut(v.base, v.len)?);
        total += n as i64;
        if n < v.len as usize {
            break;
        }
    }
    Ok(total)
}

pub fn close(fd: u64) -> Result {
    console_fd(fd)?;
    CLOSED.fetch_or(1 << fd, Ordering::Relaxed);
    Ok(0)
}

pub fn lseek(fd: u64) -> Result {
    console_fd(fd)?;
    Err(Errno::ESPIPE)
}

/// `struct stat` of the x86-64 kernel ABI.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Stat {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    _pad0: u32,
    rdev: u64,
    size: i64,
    blksize: i64,
    blocks: i64,
    times: [u64; 6],
    _unused: [i64; 3],
}

pub fn fstat(fd: u64, buf: u64) -> Result {
    console_fd(fd)?;
    let st = Stat {
        ino: fd + 1,
        nlink: 1,
        mode: 0o020620, // character device, rw--w----
        uid: super::ids::UID as u32,
        gid: super::ids::GID as u32,
        rdev: 136 << 8, // like /dev/pts/0
        blksize: 1024,
        ..Stat::default()
    };
    uaccess::write(buf, &st)?;
    Ok(0)
}

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;

/// The kernel's `struct termios` (not musl's larger one): 36 bytes.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
}

/// Terminal ioctls answer only when the runner said the console is a
/// terminal on the host side, so isatty() inside matches isatty() outside
/// (and stdout is line buffered exactly when it would be natively).
pub fn ioctl(fd: u64, req: u64, arg: u64) -> Result {
    console_fd(fd)?;
    if !platform::get().console_tty {
        return Err(Errno::ENOTTY);
    }
    match req {
        TCGETS => {
            let mut cc = [0u8; 19];
            cc[..7].copy_from_slice(&[3, 28, 127, 21, 4, 0, 1]); // INTR QUIT ERASE KILL EOF TIME MIN
            let t = Termios {
                iflag: 0x500,
                oflag: 0x5,
                cflag: 0xbf,
                lflag: 0x8a3b,
                line: 0,
                cc,
            };
            uaccess::write(arg, &t)?;
            Ok(0)
        }
        TCSETS | TCSETSW | TCSETSF | TIOCSWINSZ => Ok(0),
        TIOCGWINSZ => {
            uaccess::write(arg, &[24u16, 80, 0, 0])?;
            Ok(0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const O_RDWR: i64 = 2;

pub fn fcntl(fd: u64, cmd: u64, _arg: u64) -> Result {
    console_fd(fd)?;
    match cmd {
        F_GETFD | F_SETFD | F_SETFL => Ok(0),
        F_GETFL => Ok(O_RDWR),
        F_DUPFD => Err(Errno::EINVAL),
        _ => Err(Errno::EINVAL),
    }
}
