//! The console as a kind of open file (see crate::fd): what fds 0, 1 and 2
//! are at start. Bytes go through crate::platform (one hypercall per write
//! under our runner); the terminal ioctls answer as described at `ioctl`.

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::fs::inode::{Attr, S_IFCHR};
use crate::platform;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Blocks until at least one byte is available; 0 means end of input.
pub fn read(buf: &mut [u8]) -> usize {
    platform::console_read(buf)
}

pub fn write(buf: &[u8]) -> usize {
    platform::console_write(buf)
}

pub fn attr() -> Attr {
    Attr {
        ino: 1,
        mode: S_IFCHR | 0o620,
        nlink: 1,
        uid: super::ids::UID as u32,
        gid: super::ids::GID as u32,
        rdev: 136 << 8, // like /dev/pts/0
        blksize: 1024,
        ..Attr::default()
    }
}

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;

/// The kernel's `struct termios` (not musl's larger one): 36 bytes.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
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
pub fn ioctl(req: u64, arg: u64) -> Result {
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
