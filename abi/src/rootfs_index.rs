//! The rootfs index's wire format: the host's build::rootfs_index writes
//! it, the library OS reads it with [`Decoder`] (the host's tests read it
//! the same way). Why an index at all: see build::rootfs_index.
//!
//! Why this shape: the first format spent 36 fixed bytes per entry and
//! 16 per zstd chunk, and repeated every path whole: 134 KB for the default
//! image's 1,629 entries, 1.5% of the image. Nearly every field is small or
//! repeats the entry before it, so the entries are LEB128 varints, paths
//! share their prefix with the previous path, mtimes are deltas, and a
//! chunk's frame offset is a delta from where the previous chunk's frame
//! ended (0 for the frames of a file stored in order). The same facts take
//! about a quarter of the bytes, and so the pages the libOS touches at
//! boot to seed its file system (each first touch costs a host fault).
//!
//! Layout: [`MAGIC`], entry count (u32 LE), reserved (u32, 0); then per
//! entry, in archive order, varints unless marked:
//! - kind byte: [`KIND_FILE`], [`KIND_DIR`], [`KIND_SYMLINK`] or
//!   [`KIND_HARD_LINK`], plus [`PACKED`] for a file whose data are zstd
//!   chunks;
//! - bytes shared with the previous entry's path, the rest's length, the
//!   rest;
//! - link length, link bytes (symlink target or hard-link name);
//! - mode; mtime minus the previous entry's (zigzag; the first from 0);
//! - size; a plain file's data offset in the archive (absent when packed);
//! - packed: chunk count, then per chunk its frame's offset minus where the
//!   previous chunk's frame ended (zigzag; the index's first from 0), the
//!   frame's length and how many bytes of the file it holds.

use alloc::vec::Vec;

/// The index starts with this.
pub const MAGIC: &[u8; 8] = b"PGKRIDX3";
/// Magic, entry count, reserved.
pub const HEADER: usize = 16;

pub const KIND_FILE: u8 = 0;
pub const KIND_DIR: u8 = 1;
pub const KIND_SYMLINK: u8 = 2;
/// A hard link whose target is not an earlier file of the index (pgkraft's
/// own archives index their copies as files instead).
pub const KIND_HARD_LINK: u8 = 3;
/// Or'ed into a file's kind byte: its data are zstd chunks.
pub const PACKED: u8 = 0x10;

/// A varint's longest encoding.
pub const VARINT_MAX: usize = 10;

/// `v` as a LEB128 varint, written at the start of `buf`; returns its
/// length.
pub fn put_varint(mut v: u64, buf: &mut [u8; VARINT_MAX]) -> usize {
    let mut n = 0;
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = low;
            return n + 1;
        }
        buf[n] = low | 0x80;
        n += 1;
    }
}

/// A signed value as an unsigned one, small magnitudes small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The index is damaged (or cut short) at this byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub at: usize,
}

/// Reads fields from a byte slice; every read names where it failed.
#[derive(Clone, Copy, Debug)]
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn damaged(&self) -> Damaged {
        Damaged { at: self.at }
    }

    fn byte(&mut self) -> Result<u8, Damaged> {
        let b = *self.buf.get(self.at).ok_or(self.damaged())?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Damaged> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged { at: start })
    }

    fn usize(&mut self) -> Result<usize, Damaged> {
        let at = self.at;
        usize::try_from(self.varint()?).map_err(|_| Damaged { at })
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let b = self
            .at
            .checked_add(n)
            .and_then(|end| self.buf.get(self.at..end))
            .ok_or(self.damaged())?;
        self.at += n;
        Ok(b)
    }
}

/// One entry as the index holds it.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    /// One of the `KIND_*` values (without [`PACKED`]).
    pub kind: u8,
    /// Whole: the decoder puts back the prefix it shares with the previous
    /// entry's.
    pub path: Vec<u8>,
    pub link: &'a [u8],
    pub mode: u32,
    pub mtime: i64,
    pub size: u64,
    /// A plain file's data offset in the archive (0 when packed).
    pub offset: u64,
    /// A packed file's chunks.
    pub chunks: Option<Chunks<'a>>,
}

/// One zstd frame of a packed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Where the frame lies in the archive.
    pub offset: u64,
    pub len: u64,
    /// Bytes of the file it holds.
    pub holds: u64,
}

/// A packed file's chunk list (checked when its record was read).
#[derive(Clone, Copy, Debug)]
pub struct Chunks<'a> {
    cursor: Cursor<'a>,
    left: usize,
    /// Where the previous chunk's frame ended.
    end: u64,
}

impl Chunks<'_> {
    pub fn len(&self) -> usize {
        self.left
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl Iterator for Chunks<'_> {
    type Item = ChunkRef;

    fn next(&mut self) -> Option<ChunkRef> {
        if self.left == 0 {
            return None;
        }
        // Decoder::next read these same bytes without error.
        let chunk = read_chunk(&mut self.cursor, self.end).ok()?;
        self.end = chunk.offset + chunk.len;
        self.left -= 1;
        Some(chunk)
    }
}

/// Deltas wrap, as the writer's subtraction does, so every offset and
/// mtime round-trips; only a frame running past 2^64 is damage.
fn read_chunk(c: &mut Cursor, end: u64) -> Result<ChunkRef, Damaged> {
    let at = c.at;
    let offset = end.wrapping_add_signed(unzigzag(c.varint()?));
    let len = c.varint()?;
    let holds = c.varint()?;
    offset.checked_add(len).ok_or(Damaged { at })?;
    Ok(ChunkRef { offset, len, holds })
}

/// The index's records in order.
pub struct Decoder<'a> {
    cursor: Cursor<'a>,
    left: u32,
    /// The previous record's path, mtime and chunk end: what the next one's
    /// fields are relative to.
    path: Vec<u8>,
    mtime: i64,
    chunk_end: u64,
}

impl<'a> Decoder<'a> {
    /// None: `index` does not start with [`MAGIC`].
    pub fn new(index: &'a [u8]) -> Option<Decoder<'a>> {
        if index.len() < HEADER || &index[..8] != MAGIC {
            return None;
        }
        let mut count = [0u8; 4];
        count.copy_from_slice(&index[8..12]);
        Some(Decoder {
            cursor: Cursor {
                buf: index,
                at: HEADER,
            },
            left: u32::from_le_bytes(count),
            path: Vec::new(),
            mtime: 0,
            chunk_end: 0,
        })
    }

    /// Bytes read so far (the index's length once every entry is read).
    pub fn position(&self) -> usize {
        self.cursor.at
    }

    fn record(&mut self) -> Result<Record<'a>, Damaged> {
        let c = &mut self.cursor;
        let start = c.at;
        let kind_byte = c.byte()?;
        let kind = kind_byte & !PACKED;
        let packed = kind_byte & PACKED != 0;
        if kind > KIND_HARD_LINK || (packed && kind != KIND_FILE) {
            return Err(Damaged { at: start });
        }
        let at = c.at;
        let shared = c.usize()?;
        if shared > self.path.len() {
            return Err(Damaged { at });
        }
        let rest_len = c.usize()?;
        let rest = c.bytes(rest_len)?;
        let link_len = c.usize()?;
        let link = c.bytes(link_len)?;
        let at = c.at;
        let mode = u32::try_from(c.varint()?).map_err(|_| Damaged { at })?;
        let mtime = self.mtime.wrapping_add(unzigzag(c.varint()?));
        let size = c.varint()?;
        let (offset, chunks) = if packed {
            let count = c.usize()?;
            let list = Chunks {
                cursor: *c,
                left: count,
                end: self.chunk_end,
            };
            let mut end = self.chunk_end;
            for _ in 0..count {
                let chunk = read_chunk(c, end)?;
                end = chunk.offset + chunk.len;
            }
            self.chunk_end = end;
            (0, Some(list))
        } else {
            (c.varint()?, None)
        };
        self.mtime = mtime;
        self.path.truncate(shared);
        self.path.extend_from_slice(rest);
        Ok(Record {
            kind,
            path: self.path.clone(),
            link,
            mode,
            mtime,
            size,
            offset,
            chunks,
        })
    }
}

impl<'a> Iterator for Decoder<'a> {
    type Item = Result<Record<'a>, Damaged>;

    /// After an error, the end: nothing past a damaged record can be found.
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.record();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_deltas_round_trip() {
        for (prev, next) in [
            (-1i64, i64::MAX),
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
        ] {
            assert_eq!(
                prev.wrapping_add(unzigzag(zigzag(next.wrapping_sub(prev)))),
                next
            );
        }
        let (end, offset) = (0u64, 1u64 << 63);
        let d = unzigzag(zigzag(offset.wrapping_sub(end) as i64));
        assert_eq!(end.wrapping_add_signed(d), offset);
        // And through the decoder: mtimes from 0 to i64::MIN to i64::MAX,
        // a chunk from offset 0 (ending at 10) to one at 1 << 63.
        let mut ix = Vec::from(&MAGIC[..]);
        ix.extend_from_slice(&2u32.to_le_bytes());
        ix.extend_from_slice(&[0; 4]);
        for (name, mtime_delta, offset_delta) in [
            (b'a', i64::MIN, 0i64),
            (
                b'b',
                i64::MAX.wrapping_sub(i64::MIN),
                offset.wrapping_sub(10) as i64,
            ),
        ] {
            ix.push(KIND_FILE | PACKED);
            push(&mut ix, 0);
            push(&mut ix, 1);
            ix.push(name);
            for v in [
                0,
                0o644,
                zigzag(mtime_delta),
                1,
                1,
                zigzag(offset_delta),
                10,
                1,
            ] {
                push(&mut ix, v);
            }
        }
        let mut d = Decoder::new(&ix).unwrap();
        let a = d.next().unwrap().unwrap();
        assert_eq!(a.mtime, i64::MIN);
        let a_chunks: Vec<ChunkRef> = a.chunks.unwrap().collect();
        assert_eq!(a_chunks[0].offset, 0);
        let b = d.next().unwrap().unwrap();
        assert_eq!(b.mtime, i64::MAX);
        let b_chunks: Vec<ChunkRef> = b.chunks.unwrap().collect();
        assert_eq!(b_chunks[0].offset, offset);
        assert!(d.next().is_none());
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, 65536, u32::MAX as u64, u64::MAX] {
            let mut buf = [0; VARINT_MAX];
            let n = put_varint(v, &mut buf);
            let mut c = Cursor {
                buf: &buf[..n],
                at: 0,
            };
            assert_eq!(c.varint(), Ok(v));
            assert_eq!(c.at, n);
        }
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        // Eleven continuation bytes are no varint.
        let mut c = Cursor {
            buf: &[0xff; 11],
            at: 0,
        };
        assert_eq!(c.varint(), Err(Damaged { at: 0 }));
    }

    fn push(ix: &mut Vec<u8>, v: u64) {
        let mut buf = [0; VARINT_MAX];
        let n = put_varint(v, &mut buf);
        ix.extend_from_slice(&buf[..n]);
    }

    /// An index of plain directory records: (bytes shared, rest).
    fn dirs(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut ix = Vec::from(&MAGIC[..]);
        ix.extend_from_slice(&(records.len() as u32).to_le_bytes());
        ix.extend_from_slice(&[0; 4]);
        for &(shared, rest) in records {
            ix.push(KIND_DIR);
            push(&mut ix, shared);
            push(&mut ix, rest.len() as u64);
            ix.extend_from_slice(rest);
            for v in [0, 0o755, 0, 0, 0] {
                push(&mut ix, v);
            }
        }
        ix
    }

    #[test]
    fn paths_come_whole_and_share_no_more_than_the_previous_one() {
        let ix = dirs(&[(0, b"data"), (4, b"/base"), (5, b"global")]);
        let paths: Vec<Vec<u8>> = Decoder::new(&ix)
            .unwrap()
            .map(|r| r.unwrap().path)
            .collect();
        assert_eq!(paths, [&b"data"[..], b"data/base", b"data/global"]);
        let ix = dirs(&[(0, b"d"), (2, b"x")]);
        let mut d = Decoder::new(&ix).unwrap();
        assert!(d.next().unwrap().is_ok());
        assert!(d.next().unwrap().is_err());
        assert!(d.next().is_none());
    }

    #[test]
    fn a_packed_record_with_two_chunks() {
        let mut ix = Vec::from(&MAGIC[..]);
        ix.extend_from_slice(&1u32.to_le_bytes());
        ix.extend_from_slice(&[0; 4]);
        // File "ab", packed: shared 0, rest "ab", no link, mode 0o644,
        // mtime 5, size 70000; chunks at 0 (length 100, holds 65536) and
        // right after it (length 9, holds 4464).
        ix.push(KIND_FILE | PACKED);
        push(&mut ix, 0);
        push(&mut ix, 2);
        ix.extend_from_slice(b"ab");
        for v in [0, 0o644, zigzag(5), 70000, 2, 0, 100, 65536, 0, 9, 4464] {
            push(&mut ix, v);
        }
        let mut d = Decoder::new(&ix).unwrap();
        let r = d.next().unwrap().unwrap();
        assert_eq!((r.kind, &r.path[..]), (KIND_FILE, &b"ab"[..]));
        assert_eq!((r.mode, r.mtime, r.size), (0o644, 5, 70000));
        let chunks: Vec<ChunkRef> = r.chunks.unwrap().collect();
        let chunk = |offset, len, holds| ChunkRef { offset, len, holds };
        assert_eq!(chunks, [chunk(0, 100, 65536), chunk(100, 9, 4464)]);
        assert!(d.next().is_none());
        assert_eq!(d.position(), ix.len());
        // Cut anywhere inside, the record is damaged, and that is the end.
        for cut in HEADER..ix.len() {
            let mut d = Decoder::new(&ix[..cut]).unwrap();
            assert!(d.next().unwrap().is_err(), "cut at {cut}");
            assert!(d.next().is_none());
        }
    }
}
