//! The rootfs index (see the host's build::rootfs_index for why and for
//! the format): the archive's entries without touching one page per tar
//! header. Yields the same entries as `tar::Reader`, with file data lent
//! from the archive.

use super::tar::{Entry, EntryKind, Error};
use alloc::vec::Vec;

const MAGIC: &[u8; 8] = b"PGKRIDX1";
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

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, Error>;

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
        let kind = match kind {
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
