//! The values inside messages: qids, attributes, walk names and qids, directory entries.

use super::*;

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
