//! The rootfs index (see the host's build::rootfs_index for why and for
//! the format): the archive's entries without touching one page per tar
//! header. Yields the same entries as `tar::Reader`, with file data lent
//! from the archive.

use super::data::Chunk;
use super::tar::{Entry, EntryKind, Error};
use alloc::vec::Vec;

const MAGIC: &[u8; 8] = pgkraft_abi::ROOTFS_INDEX_MAGIC;
const CHUNK_RECORD: usize = 16;
const HEADER: usize = 16;
const FIXED: usize = 36;

pub struct Reader<'a> {
    index: &'a [u8],
    archive: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Reader<'a> {
    /// None: `index` is not an index (the caller walks the tar instead).
    pub fn new(index: &'a [u8], archive: &'a [u8]) -> Option<Reader<'a>> {
        if index.len() < HEADER || &index[..8] != MAGIC {
            return None;
        }
        let left = u32::from_le_bytes(index[8..12].try_into().ok()?);
        Some(Reader {
            index,
            archive,
            at: HEADER,
            left,
        })
    }
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

impl Reader<'static> {
    /// The chunk list of a zstd file, at `at` in the index.
    fn chunks(&mut self, at: usize) -> Option<Vec<Chunk>> {
        let n = u32::from_le_bytes(le(self.index.get(at..at + 4)?)) as usize;
        let records = self
            .index
            .get(at + 4..at + 4 + n.checked_mul(CHUNK_RECORD)?)?;
        self.at = at + 4 + records.len();
        records
            .chunks(CHUNK_RECORD)
            .map(|r| {
                let off = u64::from_le_bytes(le(&r[0..])) as usize;
                let len = u32::from_le_bytes(le(&r[8..])) as usize;
                let holds = u32::from_le_bytes(le(&r[12..]));
                Some(Chunk {
                    frame: self.archive.get(off..off.checked_add(len)?)?,
                    holds,
                })
            })
            .collect()
    }
}

impl Iterator for Reader<'static> {
    type Item = Result<Entry<'static>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.at;
        let bad = || Some(Err(Error::Truncated { at }));
        let Some(fixed) = self.index.get(at..at + FIXED) else {
            self.left = 0;
            return bad();
        };
        let kind = fixed[0];
        let path_len = u16::from_le_bytes(le(&fixed[2..])) as usize;
        let link_len = u16::from_le_bytes(le(&fixed[4..])) as usize;
        let mode = u32::from_le_bytes(le(&fixed[8..]));
        let mtime = i64::from_le_bytes(le(&fixed[12..]));
        let offset = u64::from_le_bytes(le(&fixed[20..])) as usize;
        let size = u64::from_le_bytes(le(&fixed[28..])) as usize;
        let names = at + FIXED;
        let (Some(path), Some(link)) = (
            self.index.get(names..names + path_len),
            self.index
                .get(names + path_len..names + path_len + link_len),
        ) else {
            self.left = 0;
            return bad();
        };
        self.at = names + path_len + link_len;
        let packed = fixed[1] == 1;
        let kind = match kind {
            0 if packed => match self.chunks(self.at) {
                Some(chunks) => EntryKind::Packed {
                    size: size as u64,
                    chunks,
                },
                None => {
                    self.left = 0;
                    return bad();
                }
            },
            0 if size == 0 => EntryKind::File(&[]),
            0 => match offset
                .checked_add(size)
                .and_then(|end| self.archive.get(offset..end))
            {
                Some(body) => EntryKind::File(body),
                None => {
                    self.left = 0;
                    return Some(Err(Error::Truncated { at: offset }));
                }
            },
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink(link.to_vec()),
            3 => EntryKind::HardLink(link.to_vec()),
            other => EntryKind::Other(other),
        };
        Some(Ok(Entry {
            path: Vec::from(path),
            mode: mode & 0o7777,
            mtime,
            kind,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One index record: kind, packed, path, link, mode, mtime, offset, size.
    fn record(kind: u8, path: &[u8], link: &[u8], offset: u64, size: u64) -> Vec<u8> {
        let mut r = vec![kind, 0];
        r.extend((path.len() as u16).to_le_bytes());
        r.extend((link.len() as u16).to_le_bytes());
        r.extend([0, 0]);
        r.extend(0o100644u32.to_le_bytes());
        r.extend(1234i64.to_le_bytes());
        r.extend(offset.to_le_bytes());
        r.extend(size.to_le_bytes());
        assert_eq!(r.len(), FIXED);
        r.extend(path);
        r.extend(link);
        r
    }

    fn index(records: &[Vec<u8>], count: u32) -> &'static [u8] {
        let mut v = MAGIC.to_vec();
        v.extend(count.to_le_bytes());
        v.extend([0; 4]);
        for r in records {
            v.extend(r);
        }
        Vec::leak(v)
    }

    #[test]
    fn entries_lend_their_bytes_from_the_archive() {
        let archive: &'static [u8] = b"....hello world....";
        let ix = index(
            &[
                record(1, b"d", b"", 0, 0),
                record(0, b"d/f", b"", 4, 11),
                record(2, b"d/l", b"f", 0, 0),
                record(3, b"d/h", b"d/f", 0, 0),
                record(0, b"empty", b"", 0, 0),
            ],
            5,
        );
        let e: Vec<Entry> = Reader::new(ix, archive)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(e.len(), 5);
        assert!(matches!(e[0].kind, EntryKind::Dir));
        assert!(matches!(e[1].kind, EntryKind::File(b"hello world")));
        // The type bits are dropped: only permissions.
        assert_eq!((e[1].mode, e[1].mtime), (0o644, 1234));
        assert!(matches!(&e[2].kind, EntryKind::Symlink(t) if t == b"f"));
        assert!(matches!(&e[3].kind, EntryKind::HardLink(t) if t == b"d/f"));
        assert!(matches!(e[4].kind, EntryKind::File(b"")));
    }

    #[test]
    fn not_an_index_and_damaged_indexes() {
        assert!(Reader::new(b"", b"").is_none());
        assert!(Reader::new(b"PGKRIDX1\x01\0\0\0\0\0\0\0", b"").is_none());
        // Data past the archive's end.
        let ix = index(&[record(0, b"f", b"", 10, 100)], 1);
        let e: Vec<_> = Reader::new(ix, b"short").unwrap().collect();
        assert!(matches!(e[..], [Err(Error::Truncated { at: 10 })]));
        // More entries announced than present: one error, then the end.
        let ix = index(&[record(1, b"d", b"", 0, 0)], 3);
        let e: Vec<_> = Reader::new(ix, b"").unwrap().collect();
        assert_eq!(e.len(), 2);
        assert!(e[0].is_ok() && e[1].is_err());
    }
}
