//! The 9P2000.L wire format, both directions of every message the volume
//! uses (docs/ARCHITECTURE.md §4, "Volume"). The runner's server decodes
//! T-messages and encodes R-messages; the libOS's client does the opposite,
//! with the same definitions, so a field layout lives in one place.
//!
//! Zero-copy and allocation-free: [`decode`] borrows names and data from the
//! input, [`encode`] writes into a caller's buffer and fails with
//! [`Error::NoSpace`] instead of growing it. Names are bytes, not `str`:
//! Linux file names need not be UTF-8.
//!
//! Wire layout: every message is `size[4] type[1] tag[2] body`, all integers
//! little-endian, strings `len[2] bytes`, a qid `type[1] version[4] path[8]`.
//! Layouts follow the 9P2000.L protocol as Linux's client (`net/9p`) and
//! QEMU's server (`hw/9pfs`) speak it.

use core::fmt;

/// The protocol version string both sides must agree on.
pub const VERSION_9P2000_L: &[u8] = b"9P2000.L";
/// The tag of Tversion/Rversion (no other message may be in flight).
pub const NOTAG: u16 = 0xffff;
/// "No fid" (Tattach's `afid` without authentication).
pub const NOFID: u32 = 0xffff_ffff;
/// `size[4] type[1] tag[2]`.
pub const HEADER_LEN: usize = 7;
/// What a Tread/Twrite/Rread costs around its data, as Linux's client
/// reserves it: a read or write moves at most `msize - IOHDRSZ` bytes.
pub const IOHDRSZ: u32 = 24;
/// Offset of the data of an Rread or Rreaddir (`header count[4]`), for a
/// server that reads straight into its reply buffer ([`finish_data_reply`]).
pub const DATA_REPLY_OFFSET: usize = HEADER_LEN + 4;
/// At most this many names in one Twalk (and qids in one Rwalk).
pub const MAXWELEM: usize = 16;

/// Message type numbers.
pub mod msg {
    pub const RLERROR: u8 = 7;
    pub const TSTATFS: u8 = 8;
    pub const RSTATFS: u8 = 9;
    pub const TLOPEN: u8 = 12;
    pub const RLOPEN: u8 = 13;
    pub const TLCREATE: u8 = 14;
    pub const RLCREATE: u8 = 15;
    pub const TSYMLINK: u8 = 16;
    pub const RSYMLINK: u8 = 17;
    pub const TMKNOD: u8 = 18;
    pub const RMKNOD: u8 = 19;
    pub const TRENAME: u8 = 20;
    pub const TREADLINK: u8 = 22;
    pub const RREADLINK: u8 = 23;
    pub const TGETATTR: u8 = 24;
    pub const RGETATTR: u8 = 25;
    pub const TSETATTR: u8 = 26;
    pub const RSETATTR: u8 = 27;
    pub const TXATTRWALK: u8 = 30;
    pub const TXATTRCREATE: u8 = 32;
    pub const TREADDIR: u8 = 40;
    pub const RREADDIR: u8 = 41;
    pub const TFSYNC: u8 = 50;
    pub const RFSYNC: u8 = 51;
    pub const TLOCK: u8 = 52;
    pub const TGETLOCK: u8 = 54;
    pub const TLINK: u8 = 70;
    pub const RLINK: u8 = 71;
    pub const TMKDIR: u8 = 72;
    pub const RMKDIR: u8 = 73;
    pub const TRENAMEAT: u8 = 74;
    pub const RRENAMEAT: u8 = 75;
    pub const TUNLINKAT: u8 = 76;
    pub const RUNLINKAT: u8 = 77;
    pub const TVERSION: u8 = 100;
    pub const RVERSION: u8 = 101;
    pub const TAUTH: u8 = 102;
    pub const TATTACH: u8 = 104;
    pub const RATTACH: u8 = 105;
    pub const TFLUSH: u8 = 108;
    pub const RFLUSH: u8 = 109;
    pub const TWALK: u8 = 110;
    pub const RWALK: u8 = 111;
    pub const TREAD: u8 = 116;
    pub const RREAD: u8 = 117;
    pub const TWRITE: u8 = 118;
    pub const RWRITE: u8 = 119;
    pub const TCLUNK: u8 = 120;
    pub const RCLUNK: u8 = 121;
    pub const TREMOVE: u8 = 122;
    pub const RREMOVE: u8 = 123;
}

/// Qid types (the high bits of a file's mode, as 9P reports them).
pub mod qid_type {
    pub const DIR: u8 = 0x80;
    pub const APPEND: u8 = 0x40;
    pub const EXCL: u8 = 0x20;
    pub const MOUNT: u8 = 0x10;
    pub const AUTH: u8 = 0x08;
    pub const TMP: u8 = 0x04;
    pub const SYMLINK: u8 = 0x02;
    pub const LINK: u8 = 0x01;
    pub const FILE: u8 = 0x00;
}

/// Tgetattr `request_mask` / Rgetattr `valid` bits.
pub mod getattr {
    pub const MODE: u64 = 0x0000_0001;
    pub const NLINK: u64 = 0x0000_0002;
    pub const UID: u64 = 0x0000_0004;
    pub const GID: u64 = 0x0000_0008;
    pub const RDEV: u64 = 0x0000_0010;
    pub const ATIME: u64 = 0x0000_0020;
    pub const MTIME: u64 = 0x0000_0040;
    pub const CTIME: u64 = 0x0000_0080;
    pub const INO: u64 = 0x0000_0100;
    pub const SIZE: u64 = 0x0000_0200;
    pub const BLOCKS: u64 = 0x0000_0400;
    pub const BTIME: u64 = 0x0000_0800;
    pub const GEN: u64 = 0x0000_1000;
    pub const DATA_VERSION: u64 = 0x0000_2000;
    /// What `stat(2)` needs.
    pub const BASIC: u64 = 0x0000_07ff;
    pub const ALL: u64 = 0x0000_3fff;
}

/// Tsetattr `valid` bits.
pub mod setattr {
    pub const MODE: u32 = 0x0000_0001;
    pub const UID: u32 = 0x0000_0002;
    pub const GID: u32 = 0x0000_0004;
    pub const SIZE: u32 = 0x0000_0008;
    pub const ATIME: u32 = 0x0000_0010;
    pub const MTIME: u32 = 0x0000_0020;
    pub const CTIME: u32 = 0x0000_0040;
    /// With ATIME: take `atime_*` from the message (else: now).
    pub const ATIME_SET: u32 = 0x0000_0080;
    /// With MTIME: take `mtime_*` from the message (else: now).
    pub const MTIME_SET: u32 = 0x0000_0100;
}

/// Tlopen/Tlcreate flags: Linux x86-64's `open(2)` flags, as the Linux
/// client sends them (its `P9_DOTL_*` values are these numbers).
pub mod open {
    pub const RDONLY: u32 = 0o0;
    pub const WRONLY: u32 = 0o1;
    pub const RDWR: u32 = 0o2;
    pub const ACCMODE: u32 = 0o3;
    pub const CREAT: u32 = 0o100;
    pub const EXCL: u32 = 0o200;
    pub const NOCTTY: u32 = 0o400;
    pub const TRUNC: u32 = 0o1000;
    pub const APPEND: u32 = 0o2000;
    pub const NONBLOCK: u32 = 0o4000;
    pub const DSYNC: u32 = 0o10000;
    pub const DIRECT: u32 = 0o40000;
    pub const LARGEFILE: u32 = 0o100000;
    pub const DIRECTORY: u32 = 0o200000;
    pub const NOFOLLOW: u32 = 0o400000;
    pub const NOATIME: u32 = 0o1000000;
    pub const CLOEXEC: u32 = 0o2000000;
    /// Linux's `O_SYNC` is this bit plus [`DSYNC`].
    pub const SYNC: u32 = 0o4000000;
}

/// Tunlinkat `flags`.
pub const AT_REMOVEDIR: u32 = 0x200;

/// Why a buffer is not a message, or a message does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input ends inside the message.
    Truncated,
    /// The output buffer is too small.
    NoSpace,
    /// The size field is below the header or above the input.
    BadSize,
    /// Bytes left after the message's last field (within its size).
    Trailing,
    /// A message type this codec does not know (the server answers it with
    /// Rlerror(EOPNOTSUPP), the header's tag intact).
    UnknownType(u8),
    /// More than [`MAXWELEM`] walk names or qids.
    TooManyElements,
    /// A string longer than 65535 bytes (encode) .
    StringTooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("9p message truncated"),
            Error::NoSpace => f.write_str("9p message does not fit the buffer"),
            Error::BadSize => f.write_str("9p size field out of range"),
            Error::Trailing => f.write_str("9p message has trailing bytes"),
            Error::UnknownType(t) => write!(f, "unknown 9p message type {t}"),
            Error::TooManyElements => f.write_str("more than 16 walk elements"),
            Error::StringTooLong => f.write_str("9p string longer than 65535 bytes"),
        }
    }
}

mod cursor;
mod decode;
mod encode;
mod message;
mod types;

pub use cursor::Reader;
use cursor::Writer;
pub use decode::{Header, decode, decode_header};
pub use encode::{encode, finish_data_reply};
pub use message::Msg;
pub use types::*;

#[cfg(test)]
mod tests;
