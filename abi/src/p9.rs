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

/// A file's identity for the server: type, version, and a unique path
/// (the server uses the host inode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qid {
    pub kind: u8,
    pub version: u32,
    pub path: u64,
}

/// Rgetattr's body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    pub valid: u64,
    pub qid: Qid,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime_sec: u64,
    pub atime_nsec: u64,
    pub mtime_sec: u64,
    pub mtime_nsec: u64,
    pub ctime_sec: u64,
    pub ctime_nsec: u64,
    pub btime_sec: u64,
    pub btime_nsec: u64,
    pub gen_: u64,
    pub data_version: u64,
}

/// Tsetattr's body after the fid: which fields ([`setattr`]) and their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub valid: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_sec: u64,
    pub atime_nsec: u64,
    pub mtime_sec: u64,
    pub mtime_nsec: u64,
}

/// Rstatfs's body (`statfs(2)`'s fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    pub kind: u32,
    pub bsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub fsid: u64,
    pub namelen: u32,
}

/// Twalk's names: as they lie on the wire (decoded) or a caller's list
/// (to encode). Compared by content.
#[derive(Clone, Copy, Debug)]
pub enum Names<'a> {
    Wire { count: u16, bytes: &'a [u8] },
    List(&'a [&'a [u8]]),
}

impl<'a> Names<'a> {
    pub fn len(&self) -> usize {
        match self {
            Names::Wire { count, .. } => *count as usize,
            Names::List(l) => l.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> NamesIter<'a> {
        match *self {
            Names::Wire { count, bytes } => NamesIter::Wire(Reader::new(bytes), count),
            Names::List(l) => NamesIter::List(l.iter()),
        }
    }
}

impl PartialEq for Names<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

pub enum NamesIter<'a> {
    Wire(Reader<'a>, u16),
    List(core::slice::Iter<'a, &'a [u8]>),
}

impl<'a> Iterator for NamesIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            // Decoding checked every string, so this cannot fail.
            NamesIter::Wire(r, left) if *left > 0 => {
                *left -= 1;
                r.string().ok()
            }
            NamesIter::Wire(..) => None,
            NamesIter::List(it) => it.next().copied(),
        }
    }
}

/// Rwalk's qids, the same way as [`Names`].
#[derive(Clone, Copy, Debug)]
pub enum Qids<'a> {
    Wire { count: u16, bytes: &'a [u8] },
    List(&'a [Qid]),
}

impl<'a> Qids<'a> {
    pub fn len(&self) -> usize {
        match self {
            Qids::Wire { count, .. } => *count as usize,
            Qids::List(l) => l.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, i: usize) -> Option<Qid> {
        match *self {
            Qids::Wire { count, bytes } if i < count as usize => {
                Reader::new(bytes.get(i * 13..)?).qid().ok()
            }
            Qids::Wire { .. } => None,
            Qids::List(l) => l.get(i).copied(),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = Qid> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl PartialEq for Qids<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// One directory entry of Rreaddir's data: `qid[13] offset[8] type[1] name[s]`.
/// `offset` is what the next Treaddir passes to continue after this entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent<'a> {
    pub qid: Qid,
    pub offset: u64,
    /// `d_type` (DT_DIR, DT_REG, ...).
    pub kind: u8,
    pub name: &'a [u8],
}

impl Dirent<'_> {
    pub fn wire_len(&self) -> usize {
        13 + 8 + 1 + 2 + self.name.len()
    }
}

/// Iterates over Rreaddir's data; a malformed entry ends it with an error.
pub struct Dirents<'a> {
    r: Reader<'a>,
}

impl<'a> Dirents<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Dirents {
            r: Reader::new(data),
        }
    }
}

impl<'a> Iterator for Dirents<'a> {
    type Item = Result<Dirent<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        let d = (|| {
            Ok(Dirent {
                qid: self.r.qid()?,
                offset: self.r.u64()?,
                kind: self.r.u8()?,
                name: self.r.string()?,
            })
        })();
        if d.is_err() {
            // Stop after the first error.
            self.r = Reader::new(&[]);
        }
        Some(d)
    }
}

/// Fills Rreaddir's data in place (from [`DATA_REPLY_OFFSET`] of the reply
/// buffer) until the next entry does not fit.
pub struct DirentWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> DirentWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        DirentWriter { buf, pos: 0 }
    }
    /// False (and nothing written) when the entry does not fit.
    pub fn push(&mut self, d: &Dirent<'_>) -> bool {
        if d.name.len() > u16::MAX as usize || self.pos + d.wire_len() > self.buf.len() {
            return false;
        }
        let mut w = Writer {
            buf: &mut self.buf[self.pos..],
            pos: 0,
        };
        // Cannot fail: the length was checked above.
        let ok = w
            .qid(&d.qid)
            .and(w.u64(d.offset))
            .and(w.u8(d.kind))
            .and(w.string(d.name));
        debug_assert!(ok.is_ok());
        self.pos += w.pos;
        true
    }
    pub fn len(&self) -> usize {
        self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

/// Every message this codec knows, T and R. Names and data borrow from the
/// decoded buffer (or, to encode, from the caller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Msg<'a> {
    Tversion {
        msize: u32,
        version: &'a [u8],
    },
    Rversion {
        msize: u32,
        version: &'a [u8],
    },
    Tattach {
        fid: u32,
        afid: u32,
        uname: &'a [u8],
        aname: &'a [u8],
        n_uname: u32,
    },
    Rattach {
        qid: Qid,
    },
    Rlerror {
        ecode: u32,
    },
    Tflush {
        oldtag: u16,
    },
    Rflush,
    Twalk {
        fid: u32,
        newfid: u32,
        names: Names<'a>,
    },
    Rwalk {
        qids: Qids<'a>,
    },
    Tgetattr {
        fid: u32,
        request_mask: u64,
    },
    Rgetattr {
        attr: Attr,
    },
    Tsetattr {
        fid: u32,
        attr: SetAttr,
    },
    Rsetattr,
    Tlopen {
        fid: u32,
        flags: u32,
    },
    Rlopen {
        qid: Qid,
        iounit: u32,
    },
    Tlcreate {
        fid: u32,
        name: &'a [u8],
        flags: u32,
        mode: u32,
        gid: u32,
    },
    Rlcreate {
        qid: Qid,
        iounit: u32,
    },
    Tsymlink {
        fid: u32,
        name: &'a [u8],
        target: &'a [u8],
        gid: u32,
    },
    Rsymlink {
        qid: Qid,
    },
    Tmknod {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    },
    Rmknod {
        qid: Qid,
    },
    Treadlink {
        fid: u32,
    },
    Rreadlink {
        target: &'a [u8],
    },
    Tread {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Rread {
        data: &'a [u8],
    },
    Twrite {
        fid: u32,
        offset: u64,
        data: &'a [u8],
    },
    Rwrite {
        count: u32,
    },
    Tclunk {
        fid: u32,
    },
    Rclunk,
    Tremove {
        fid: u32,
    },
    Rremove,
    Tunlinkat {
        dfid: u32,
        name: &'a [u8],
        flags: u32,
    },
    Runlinkat,
    Trenameat {
        olddfid: u32,
        oldname: &'a [u8],
        newdfid: u32,
        newname: &'a [u8],
    },
    Rrenameat,
    Tmkdir {
        dfid: u32,
        name: &'a [u8],
        mode: u32,
        gid: u32,
    },
    Rmkdir {
        qid: Qid,
    },
    /// `count`: at most this many bytes of dirents.
    Treaddir {
        fid: u32,
        offset: u64,
        count: u32,
    },
    /// The dirents; iterate with [`Dirents`].
    Rreaddir {
        data: &'a [u8],
    },
    /// `datasync` nonzero: `fdatasync`, else `fsync`.
    Tfsync {
        fid: u32,
        datasync: u32,
    },
    Rfsync,
    Tstatfs {
        fid: u32,
    },
    Rstatfs {
        statfs: StatFs,
    },
    Tlink {
        dfid: u32,
        fid: u32,
        name: &'a [u8],
    },
    Rlink,
}

impl Msg<'_> {
    /// The type number on the wire.
    pub fn kind(&self) -> u8 {
        use msg::*;
        match self {
            Msg::Tversion { .. } => TVERSION,
            Msg::Rversion { .. } => RVERSION,
            Msg::Tattach { .. } => TATTACH,
            Msg::Rattach { .. } => RATTACH,
            Msg::Rlerror { .. } => RLERROR,
            Msg::Tflush { .. } => TFLUSH,
            Msg::Rflush => RFLUSH,
            Msg::Twalk { .. } => TWALK,
            Msg::Rwalk { .. } => RWALK,
            Msg::Tgetattr { .. } => TGETATTR,
            Msg::Rgetattr { .. } => RGETATTR,
            Msg::Tsetattr { .. } => TSETATTR,
            Msg::Rsetattr => RSETATTR,
            Msg::Tlopen { .. } => TLOPEN,
            Msg::Rlopen { .. } => RLOPEN,
            Msg::Tlcreate { .. } => TLCREATE,
            Msg::Rlcreate { .. } => RLCREATE,
            Msg::Tsymlink { .. } => TSYMLINK,
            Msg::Rsymlink { .. } => RSYMLINK,
            Msg::Tmknod { .. } => TMKNOD,
            Msg::Rmknod { .. } => RMKNOD,
            Msg::Treadlink { .. } => TREADLINK,
            Msg::Rreadlink { .. } => RREADLINK,
            Msg::Tread { .. } => TREAD,
            Msg::Rread { .. } => RREAD,
            Msg::Twrite { .. } => TWRITE,
            Msg::Rwrite { .. } => RWRITE,
            Msg::Tclunk { .. } => TCLUNK,
            Msg::Rclunk => RCLUNK,
            Msg::Tremove { .. } => TREMOVE,
            Msg::Rremove => RREMOVE,
            Msg::Tunlinkat { .. } => TUNLINKAT,
            Msg::Runlinkat => RUNLINKAT,
            Msg::Trenameat { .. } => TRENAMEAT,
            Msg::Rrenameat => RRENAMEAT,
            Msg::Tmkdir { .. } => TMKDIR,
            Msg::Rmkdir { .. } => RMKDIR,
            Msg::Treaddir { .. } => TREADDIR,
            Msg::Rreaddir { .. } => RREADDIR,
            Msg::Tfsync { .. } => TFSYNC,
            Msg::Rfsync => RFSYNC,
            Msg::Tstatfs { .. } => TSTATFS,
            Msg::Rstatfs { .. } => RSTATFS,
            Msg::Tlink { .. } => TLINK,
            Msg::Rlink => RLINK,
        }
    }
}

/// A message's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The whole message's length, header included.
    pub size: u32,
    pub kind: u8,
    pub tag: u16,
}

/// Reads the header and checks the size against the input, without
/// decoding the body: a server answers an unknown type with the tag.
pub fn decode_header(buf: &[u8]) -> Result<Header, Error> {
    let mut r = Reader::new(buf);
    let size = r.u32()?;
    let kind = r.u8()?;
    let tag = r.u16()?;
    if (size as usize) < HEADER_LEN || size as usize > buf.len() {
        return Err(Error::BadSize);
    }
    Ok(Header { size, kind, tag })
}

/// Decodes one message from the start of `buf` (bytes after its size are
/// ignored). Returns its tag and body.
pub fn decode(buf: &[u8]) -> Result<(u16, Msg<'_>), Error> {
    let h = decode_header(buf)?;
    let mut r = Reader::new(&buf[HEADER_LEN..h.size as usize]);
    let m = decode_body(h.kind, &mut r)?;
    if !r.is_empty() {
        return Err(Error::Trailing);
    }
    Ok((h.tag, m))
}

fn decode_body<'a>(kind: u8, r: &mut Reader<'a>) -> Result<Msg<'a>, Error> {
    use msg::*;
    Ok(match kind {
        TVERSION => Msg::Tversion {
            msize: r.u32()?,
            version: r.string()?,
        },
        RVERSION => Msg::Rversion {
            msize: r.u32()?,
            version: r.string()?,
        },
        TATTACH => Msg::Tattach {
            fid: r.u32()?,
            afid: r.u32()?,
            uname: r.string()?,
            aname: r.string()?,
            n_uname: r.u32()?,
        },
        RATTACH => Msg::Rattach { qid: r.qid()? },
        RLERROR => Msg::Rlerror { ecode: r.u32()? },
        TFLUSH => Msg::Tflush { oldtag: r.u16()? },
        RFLUSH => Msg::Rflush,
        TWALK => {
            let fid = r.u32()?;
            let newfid = r.u32()?;
            let count = r.u16()?;
            if count as usize > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            let start = r.rest();
            for _ in 0..count {
                r.string()?;
            }
            let bytes = &start[..start.len() - r.rest().len()];
            Msg::Twalk {
                fid,
                newfid,
                names: Names::Wire { count, bytes },
            }
        }
        RWALK => {
            let count = r.u16()?;
            if count as usize > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            let bytes = r.take(count as usize * 13)?;
            Msg::Rwalk {
                qids: Qids::Wire { count, bytes },
            }
        }
        TGETATTR => Msg::Tgetattr {
            fid: r.u32()?,
            request_mask: r.u64()?,
        },
        RGETATTR => Msg::Rgetattr {
            attr: Attr {
                valid: r.u64()?,
                qid: r.qid()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                nlink: r.u64()?,
                rdev: r.u64()?,
                size: r.u64()?,
                blksize: r.u64()?,
                blocks: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
                ctime_sec: r.u64()?,
                ctime_nsec: r.u64()?,
                btime_sec: r.u64()?,
                btime_nsec: r.u64()?,
                gen_: r.u64()?,
                data_version: r.u64()?,
            },
        },
        TSETATTR => Msg::Tsetattr {
            fid: r.u32()?,
            attr: SetAttr {
                valid: r.u32()?,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                size: r.u64()?,
                atime_sec: r.u64()?,
                atime_nsec: r.u64()?,
                mtime_sec: r.u64()?,
                mtime_nsec: r.u64()?,
            },
        },
        RSETATTR => Msg::Rsetattr,
        TLOPEN => Msg::Tlopen {
            fid: r.u32()?,
            flags: r.u32()?,
        },
        RLOPEN => Msg::Rlopen {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TLCREATE => Msg::Tlcreate {
            fid: r.u32()?,
            name: r.string()?,
            flags: r.u32()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RLCREATE => Msg::Rlcreate {
            qid: r.qid()?,
            iounit: r.u32()?,
        },
        TSYMLINK => Msg::Tsymlink {
            fid: r.u32()?,
            name: r.string()?,
            target: r.string()?,
            gid: r.u32()?,
        },
        RSYMLINK => Msg::Rsymlink { qid: r.qid()? },
        TMKNOD => Msg::Tmknod {
            dfid: r.u32()?,
            name: r.string()?,
            mode: r.u32()?,
            major: r.u32()?,
            minor: r.u32()?,
            gid: r.u32()?,
        },
        RMKNOD => Msg::Rmknod { qid: r.qid()? },
        TREADLINK => Msg::Treadlink { fid: r.u32()? },
        RREADLINK => Msg::Rreadlink {
            target: r.string()?,
        },
        TREAD => Msg::Tread {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREAD => {
            let n = r.u32()?;
            Msg::Rread {
                data: r.take(n as usize)?,
            }
        }
        TWRITE => {
            let fid = r.u32()?;
            let offset = r.u64()?;
            let n = r.u32()?;
            Msg::Twrite {
                fid,
                offset,
                data: r.take(n as usize)?,
            }
        }
        RWRITE => Msg::Rwrite { count: r.u32()? },
        TCLUNK => Msg::Tclunk { fid: r.u32()? },
        RCLUNK => Msg::Rclunk,
        TREMOVE => Msg::Tremove { fid: r.u32()? },
        RREMOVE => Msg::Rremove,
        TUNLINKAT => Msg::Tunlinkat {
            dfid: r.u32()?,
            name: r.string()?,
            flags: r.u32()?,
        },
        RUNLINKAT => Msg::Runlinkat,
        TRENAMEAT => Msg::Trenameat {
            olddfid: r.u32()?,
            oldname: r.string()?,
            newdfid: r.u32()?,
            newname: r.string()?,
        },
        RRENAMEAT => Msg::Rrenameat,
        TMKDIR => Msg::Tmkdir {
            dfid: r.u32()?,
            name: r.string()?,
            mode: r.u32()?,
            gid: r.u32()?,
        },
        RMKDIR => Msg::Rmkdir { qid: r.qid()? },
        TREADDIR => Msg::Treaddir {
            fid: r.u32()?,
            offset: r.u64()?,
            count: r.u32()?,
        },
        RREADDIR => {
            let n = r.u32()?;
            Msg::Rreaddir {
                data: r.take(n as usize)?,
            }
        }
        TFSYNC => Msg::Tfsync {
            fid: r.u32()?,
            datasync: r.u32()?,
        },
        RFSYNC => Msg::Rfsync,
        TSTATFS => Msg::Tstatfs { fid: r.u32()? },
        RSTATFS => Msg::Rstatfs {
            statfs: StatFs {
                kind: r.u32()?,
                bsize: r.u32()?,
                blocks: r.u64()?,
                bfree: r.u64()?,
                bavail: r.u64()?,
                files: r.u64()?,
                ffree: r.u64()?,
                fsid: r.u64()?,
                namelen: r.u32()?,
            },
        },
        TLINK => Msg::Tlink {
            dfid: r.u32()?,
            fid: r.u32()?,
            name: r.string()?,
        },
        RLINK => Msg::Rlink,
        other => return Err(Error::UnknownType(other)),
    })
}

/// Encodes `m` with `tag` at the start of `buf`; returns its length.
pub fn encode(tag: u16, m: &Msg<'_>, buf: &mut [u8]) -> Result<usize, Error> {
    let mut w = Writer { buf, pos: 0 };
    w.u32(0)?;
    w.u8(m.kind())?;
    w.u16(tag)?;
    encode_body(m, &mut w)?;
    let len = w.pos;
    let size = u32::try_from(len).map_err(|_| Error::NoSpace)?;
    buf[..4].copy_from_slice(&size.to_le_bytes());
    Ok(len)
}

fn encode_body(m: &Msg<'_>, w: &mut Writer<'_>) -> Result<(), Error> {
    match *m {
        Msg::Tversion { msize, version } | Msg::Rversion { msize, version } => {
            w.u32(msize)?;
            w.string(version)
        }
        Msg::Tattach {
            fid,
            afid,
            uname,
            aname,
            n_uname,
        } => {
            w.u32(fid)?;
            w.u32(afid)?;
            w.string(uname)?;
            w.string(aname)?;
            w.u32(n_uname)
        }
        Msg::Rattach { qid }
        | Msg::Rsymlink { qid }
        | Msg::Rmknod { qid }
        | Msg::Rmkdir { qid } => w.qid(&qid),
        Msg::Rlerror { ecode } => w.u32(ecode),
        Msg::Tflush { oldtag } => w.u16(oldtag),
        Msg::Rflush
        | Msg::Rsetattr
        | Msg::Rclunk
        | Msg::Rremove
        | Msg::Runlinkat
        | Msg::Rrenameat
        | Msg::Rfsync
        | Msg::Rlink => Ok(()),
        Msg::Twalk { fid, newfid, names } => {
            if names.len() > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            w.u32(fid)?;
            w.u32(newfid)?;
            w.u16(names.len() as u16)?;
            for n in names.iter() {
                w.string(n)?;
            }
            Ok(())
        }
        Msg::Rwalk { qids } => {
            if qids.len() > MAXWELEM {
                return Err(Error::TooManyElements);
            }
            w.u16(qids.len() as u16)?;
            for q in qids.iter() {
                w.qid(&q)?;
            }
            Ok(())
        }
        Msg::Tgetattr { fid, request_mask } => {
            w.u32(fid)?;
            w.u64(request_mask)
        }
        Msg::Rgetattr { attr: a } => {
            w.u64(a.valid)?;
            w.qid(&a.qid)?;
            w.u32(a.mode)?;
            w.u32(a.uid)?;
            w.u32(a.gid)?;
            for v in [
                a.nlink,
                a.rdev,
                a.size,
                a.blksize,
                a.blocks,
                a.atime_sec,
                a.atime_nsec,
                a.mtime_sec,
                a.mtime_nsec,
                a.ctime_sec,
                a.ctime_nsec,
                a.btime_sec,
                a.btime_nsec,
                a.gen_,
                a.data_version,
            ] {
                w.u64(v)?;
            }
            Ok(())
        }
        Msg::Tsetattr { fid, attr: a } => {
            for v in [fid, a.valid, a.mode, a.uid, a.gid] {
                w.u32(v)?;
            }
            for v in [a.size, a.atime_sec, a.atime_nsec, a.mtime_sec, a.mtime_nsec] {
                w.u64(v)?;
            }
            Ok(())
        }
        Msg::Tlopen { fid, flags } => {
            w.u32(fid)?;
            w.u32(flags)
        }
        Msg::Rlopen { qid, iounit } | Msg::Rlcreate { qid, iounit } => {
            w.qid(&qid)?;
            w.u32(iounit)
        }
        Msg::Tlcreate {
            fid,
            name,
            flags,
            mode,
            gid,
        } => {
            w.u32(fid)?;
            w.string(name)?;
            w.u32(flags)?;
            w.u32(mode)?;
            w.u32(gid)
        }
        Msg::Tsymlink {
            fid,
            name,
            target,
            gid,
        } => {
            w.u32(fid)?;
            w.string(name)?;
            w.string(target)?;
            w.u32(gid)
        }
        Msg::Tmknod {
            dfid,
            name,
            mode,
            major,
            minor,
            gid,
        } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(mode)?;
            w.u32(major)?;
            w.u32(minor)?;
            w.u32(gid)
        }
        Msg::Treadlink { fid }
        | Msg::Tclunk { fid }
        | Msg::Tremove { fid }
        | Msg::Tstatfs { fid } => w.u32(fid),
        Msg::Rreadlink { target } => w.string(target),
        Msg::Tread { fid, offset, count } | Msg::Treaddir { fid, offset, count } => {
            w.u32(fid)?;
            w.u64(offset)?;
            w.u32(count)
        }
        Msg::Rread { data } | Msg::Rreaddir { data } => {
            w.u32(u32::try_from(data.len()).map_err(|_| Error::NoSpace)?)?;
            w.bytes(data)
        }
        Msg::Twrite { fid, offset, data } => {
            w.u32(fid)?;
            w.u64(offset)?;
            w.u32(u32::try_from(data.len()).map_err(|_| Error::NoSpace)?)?;
            w.bytes(data)
        }
        Msg::Rwrite { count } => w.u32(count),
        Msg::Tunlinkat { dfid, name, flags } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(flags)
        }
        Msg::Trenameat {
            olddfid,
            oldname,
            newdfid,
            newname,
        } => {
            w.u32(olddfid)?;
            w.string(oldname)?;
            w.u32(newdfid)?;
            w.string(newname)
        }
        Msg::Tmkdir {
            dfid,
            name,
            mode,
            gid,
        } => {
            w.u32(dfid)?;
            w.string(name)?;
            w.u32(mode)?;
            w.u32(gid)
        }
        Msg::Tfsync { fid, datasync } => {
            w.u32(fid)?;
            w.u32(datasync)
        }
        Msg::Rstatfs { statfs: s } => {
            w.u32(s.kind)?;
            w.u32(s.bsize)?;
            for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.fsid] {
                w.u64(v)?;
            }
            w.u32(s.namelen)
        }
        Msg::Tlink { dfid, fid, name } => {
            w.u32(dfid)?;
            w.u32(fid)?;
            w.string(name)
        }
    }
}

/// Completes an Rread or Rreaddir whose `count` bytes of data the caller
/// already put at `buf[DATA_REPLY_OFFSET..]` (read straight from a file,
/// or by a [`DirentWriter`]): writes the header and count; returns the
/// message's length.
pub fn finish_data_reply(buf: &mut [u8], kind: u8, tag: u16, count: u32) -> Result<usize, Error> {
    let len = DATA_REPLY_OFFSET + count as usize;
    if len > buf.len() {
        return Err(Error::NoSpace);
    }
    let mut w = Writer { buf, pos: 0 };
    w.u32(len as u32)?;
    w.u8(kind)?;
    w.u16(tag)?;
    w.u32(count)?;
    Ok(len)
}

/// A cursor over input; every read checks the length.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn rest(&self) -> &'a [u8] {
        self.buf
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(Error::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u16()?;
        self.take(n as usize)
    }
    fn qid(&mut self) -> Result<Qid, Error> {
        Ok(Qid {
            kind: self.u8()?,
            version: self.u32()?,
            path: self.u64()?,
        })
    }
}

/// A cursor over output; every write checks the space.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.pos.checked_add(b.len()).ok_or(Error::NoSpace)?;
        if end > self.buf.len() {
            return Err(Error::NoSpace);
        }
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    fn string(&mut self, s: &[u8]) -> Result<(), Error> {
        let n = u16::try_from(s.len()).map_err(|_| Error::StringTooLong)?;
        self.u16(n)?;
        self.bytes(s)
    }
    fn qid(&mut self, q: &Qid) -> Result<(), Error> {
        self.u8(q.kind)?;
        self.u32(q.version)?;
        self.u64(q.path)
    }
}

#[cfg(test)]
mod tests;
