//! Rreaddir entries to the directory-reading interface of the file system
//! (`inode::EmitEntry`, which syscall::fs turns into `linux_dirent64`).
//!
//! A directory's position on the volume is the host's cookie for the
//! entry after the last one read (Rreaddir's `offset`), 0 at the start;
//! the host's own `.` and `..` come through as it lists them.

use crate::fs::inode::EmitEntry;
use pgkraft_abi::p9;

/// Where a listing stands after one Rreaddir.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// The position after the last entry `emit` took.
    pub pos: u64,
    /// `emit` refused an entry (no room): stop asking the host.
    pub full: bool,
}

/// Feeds one Rreaddir's entries to `emit` (inode number = the qid's path,
/// next position = the entry's offset, d_type as the host gave it).
pub fn take(
    entries: &mut dyn Iterator<Item = p9::Dirent>,
    pos: u64,
    emit: &mut EmitEntry,
) -> Taken {
    let mut pos = pos;
    for d in entries {
        if !emit(d.qid.path, d.offset, d.kind, d.name) {
            return Taken { pos, full: true };
        }
        pos = d.offset;
    }
    Taken { pos, full: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn entry(name: &'static [u8], ino: u64, offset: u64, kind: u8) -> p9::Dirent<'static> {
        p9::Dirent {
            qid: p9::Qid {
                kind: 0,
                version: 0,
                path: ino,
            },
            offset,
            kind,
            name,
        }
    }

    /// The wire bytes of `entries` (as an Rreaddir's data).
    fn wire(entries: &[p9::Dirent]) -> Vec<u8> {
        let mut buf = alloc::vec![0u8; 1024];
        let mut w = p9::DirentWriter::new(&mut buf);
        for e in entries {
            assert!(w.push(e));
        }
        let n = w.len();
        buf.truncate(n);
        buf
    }

    #[test]
    fn entries_reach_emit_with_the_hosts_cookies_and_stop_when_full() {
        let data = wire(&[
            entry(b".", 10, 100, 4),
            entry(b"..", 2, 200, 4),
            entry(b"file", 11, 300, 8),
        ]);
        let mut seen = Vec::new();
        let mut room = 2;
        let mut it = p9::Dirents::new(&data).map_while(Result::ok);
        let t = take(&mut it, 0, &mut |ino, next, kind, name| {
            if room == 0 {
                return false;
            }
            room -= 1;
            seen.push((ino, next, kind, name.to_vec()));
            true
        });
        // `file` did not fit: the position is after `..`, where the next
        // getdents64 resumes.
        assert_eq!(
            t,
            Taken {
                pos: 200,
                full: true
            }
        );
        assert_eq!(seen[1], (2, 200, 4, b"..".to_vec()));
        let mut it = p9::Dirents::new(&data).skip(2).map_while(Result::ok);
        let t = take(&mut it, 200, &mut |_, _, _, _| true);
        assert_eq!(
            t,
            Taken {
                pos: 300,
                full: false
            }
        );
    }

    #[test]
    fn a_linux_dirent64_record_holds_what_emit_got() {
        // The getdents64 encoder (syscall::fs) after `take`: one record.
        let data = wire(&[entry(b"pg_wal", 77, 5, 4)]);
        let mut out = [0xffu8; 64];
        let mut len = 0;
        let mut it = p9::Dirents::new(&data).map_while(Result::ok);
        take(&mut it, 0, &mut |ino, next, kind, name| {
            len = crate::syscall::fs::put_dirent(&mut out, true, ino, next, kind, name).unwrap();
            true
        });
        assert_eq!(len, 32);
        let rec = &out[..len];
        assert_eq!(u64::from_le_bytes(rec[0..8].try_into().unwrap()), 77);
        assert_eq!(u64::from_le_bytes(rec[8..16].try_into().unwrap()), 5);
        assert_eq!(u16::from_le_bytes(rec[16..18].try_into().unwrap()), 32);
        assert_eq!(rec[18], 4);
        assert_eq!(&rec[19..26], b"pg_wal\0");
    }
}
