//! The rootfs index (see the host's build::rootfs_index for why, and
//! pgkraft_abi::rootfs_index for the format): the archive's entries
//! without touching one page per tar header. Yields the same entries as
//! `tar::Reader`, with file data lent from the archive.

use super::data::Chunk;
use super::tar::{Entry, EntryKind, Error};
use alloc::vec::Vec;
use pgkraft_abi::rootfs_index::{self as wire, Decoder, Record};

pub struct Reader<'a> {
    records: Decoder<'a>,
    archive: &'a [u8],
    /// An entry was damaged: nothing after it can be trusted.
    done: bool,
}

impl<'a> Reader<'a> {
    /// None: `index` is not an index (the caller walks the tar instead).
    pub fn new(index: &'a [u8], archive: &'a [u8]) -> Option<Reader<'a>> {
        Some(Reader {
            records: Decoder::new(index)?,
            archive,
            done: false,
        })
    }
}

impl Reader<'static> {
    /// `len` bytes of the archive at `offset`.
    fn lend(&self, offset: u64, len: u64) -> Option<&'static [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.archive.get(start..end)
    }

    fn entry(&self, r: Record<'static>) -> Result<Entry<'static>, Error> {
        let at = self.records.position();
        let kind = match r.kind {
            wire::KIND_FILE => match r.chunks {
                Some(list) => EntryKind::Packed {
                    size: r.size,
                    chunks: list
                        .map(|c| {
                            Some(Chunk {
                                frame: self.lend(c.offset, c.len)?,
                                holds: u32::try_from(c.holds).ok()?,
                            })
                        })
                        .collect::<Option<Vec<Chunk>>>()
                        .ok_or(Error::Truncated { at })?,
                },
                None if r.size == 0 => EntryKind::File(&[]),
                None => EntryKind::File(self.lend(r.offset, r.size).ok_or(Error::Truncated {
                    at: r.offset as usize,
                })?),
            },
            wire::KIND_DIR => EntryKind::Dir,
            wire::KIND_SYMLINK => EntryKind::Symlink(r.link.to_vec()),
            wire::KIND_HARD_LINK => EntryKind::HardLink(r.link.to_vec()),
            other => EntryKind::Other(other),
        };
        Ok(Entry {
            path: r.path,
            mode: r.mode & 0o7777,
            mtime: r.mtime,
            kind,
        })
    }
}

impl Iterator for Reader<'static> {
    type Item = Result<Entry<'static>, Error>;

    /// After an error, the end: the records after a damaged one cannot be
    /// found, and their paths build on the ones before.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.records.next()? {
            Ok(r) => self.entry(r),
            Err(d) => Err(Error::Truncated { at: d.at }),
        };
        self.done = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, v: u64) {
        let mut buf = [0; wire::VARINT_MAX];
        let n = wire::put_varint(v, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }

    /// A plain record: kind, bytes shared with the previous path, the rest
    /// of the path, link, offset, size.
    type Plain = (u8, u64, &'static [u8], &'static [u8], u64, u64);

    /// An index of `records` announcing `count` entries; every mode
    /// 0o100644, every mtime 1234 (a delta from 0 in the first, then 0).
    fn index(records: &[Plain], count: u32) -> &'static [u8] {
        let mut v = wire::MAGIC.to_vec();
        v.extend(count.to_le_bytes());
        v.extend([0; 4]);
        for (i, &(kind, shared, rest, link, offset, size)) in records.iter().enumerate() {
            v.push(kind);
            varint(&mut v, shared);
            varint(&mut v, rest.len() as u64);
            v.extend(rest);
            varint(&mut v, link.len() as u64);
            v.extend(link);
            varint(&mut v, 0o100644);
            varint(&mut v, wire::zigzag(if i == 0 { 1234 } else { 0 }));
            varint(&mut v, size);
            varint(&mut v, offset);
        }
        Vec::leak(v)
    }

    #[test]
    fn entries_lend_their_bytes_from_the_archive() {
        let archive: &'static [u8] = b"....hello world....";
        let ix = index(
            &[
                (wire::KIND_DIR, 0, b"d", b"", 0, 0),
                (wire::KIND_FILE, 1, b"/f", b"", 4, 11),
                (wire::KIND_SYMLINK, 2, b"l", b"f", 0, 0),
                (wire::KIND_HARD_LINK, 2, b"h", b"d/f", 0, 0),
                (wire::KIND_FILE, 0, b"empty", b"", 0, 0),
            ],
            5,
        );
        let e: Vec<Entry> = Reader::new(ix, archive)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let paths: Vec<&[u8]> = e.iter().map(|e| &e.path[..]).collect();
        assert_eq!(paths, [&b"d"[..], b"d/f", b"d/l", b"d/h", b"empty"]);
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
        assert!(Reader::new(b"PGKRIDX2\x01\0\0\0\0\0\0\0", b"").is_none());
        // Data past the archive's end.
        let ix = index(&[(wire::KIND_FILE, 0, b"f", b"", 10, 100)], 1);
        let e: Vec<_> = Reader::new(ix, b"short").unwrap().collect();
        assert!(matches!(e[..], [Err(Error::Truncated { at: 10 })]));
        // More entries announced than present: one error, then the end.
        let ix = index(&[(wire::KIND_DIR, 0, b"d", b"", 0, 0)], 3);
        let e: Vec<_> = Reader::new(ix, b"").unwrap().collect();
        assert_eq!(e.len(), 2);
        assert!(e[0].is_ok() && e[1].is_err());
        // A path sharing more than the previous path has: the end.
        let ix = index(
            &[
                (wire::KIND_DIR, 0, b"d", b"", 0, 0),
                (wire::KIND_DIR, 5, b"x", b"", 0, 0),
                (wire::KIND_DIR, 0, b"e", b"", 0, 0),
            ],
            3,
        );
        let e: Vec<_> = Reader::new(ix, b"").unwrap().collect();
        assert_eq!(e.len(), 2);
        assert!(e[0].is_ok() && e[1].is_err());
    }
}
