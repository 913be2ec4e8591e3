//! The files under /proc whose text is made when read, as Linux's procfs
//! makes them: `/proc/meminfo` (crate::meminfo).
//!
//! Linux's single-record proc files (seq_file `single_open`) report size 0
//! in stat and refuse a seek from the end. Their text is made by a read
//! at offset 0 or at any offset other than where the last read ended (a
//! seek or a pread elsewhere: the new text is then skipped to it); a read
//! that goes on where the last one ended continues that text. So a reader
//! taking it in several reads sees one moment, and one that seeks back to
//! 0 and reads again (procps' `free -s`, `top`) sees a new one. The same
//! holds here: the text lives in the open file description
//! (`Generated`), never in the inode, so two openers never share one.

use super::inode::{Inode, Kind};
use crate::syscall::Errno;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// What a proc file shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProcFile {
    MemInfo,
}

impl ProcFile {
    fn text(self) -> Vec<u8> {
        match self {
            ProcFile::MemInfo => crate::meminfo::now().render().into_bytes(),
        }
    }
}

/// `/proc` and its files, in the tree under `root`.
pub fn populate(root: &Arc<Inode>) {
    let proc = Inode::new_dir(0o555, Some(root));
    let _ = super::namei::link_into(root, b"proc", &proc);
    let _ = super::namei::link_into(
        &proc,
        b"meminfo",
        &Inode::new_proc(ProcFile::MemInfo, 0o444),
    );
}

/// An open proc file: its inode and the text its reads go through.
pub struct Generated {
    pub inode: Arc<Inode>,
    file: ProcFile,
    text: Mutex<Text>,
}

#[derive(Default)]
struct Text {
    bytes: Vec<u8>,
    /// Where the last read ended; None before the first.
    end: Option<u64>,
}

impl Generated {
    /// None if `inode` is not a proc file.
    pub fn open(inode: Arc<Inode>) -> Option<Generated> {
        let Kind::Proc(file) = inode.kind else {
            return None;
        };
        Some(Generated {
            inode,
            file,
            text: Mutex::new(Text::default()),
        })
    }

    /// Bytes at `off`: the text goes on where the last read ended, and is
    /// made anew at 0 or anywhere else.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        let goes_on = off != 0 && self.text.lock().end == Some(off);
        if !goes_on {
            // Made before the lock is taken: making it takes other locks
            // and allocates.
            let fresh = self.file.text();
            self.text.lock().bytes = fresh;
        }
        let mut text = self.text.lock();
        let from = off.min(text.bytes.len() as u64) as usize;
        let n = buf.len().min(text.bytes.len() - from);
        buf[..n].copy_from_slice(&text.bytes[from..from + n]);
        text.end = Some(off + n as u64);
        n
    }

    /// lseek: from the start or the current offset only (seq_lseek).
    pub fn seek(&self, pos: u64, off: i64, whence: u64) -> Result<u64, Errno> {
        let new = match whence {
            crate::fd::SEEK_SET => off,
            crate::fd::SEEK_CUR => (pos as i64).checked_add(off).ok_or(Errno::EINVAL)?,
            _ => return Err(Errno::EINVAL),
        };
        u64::try_from(new).map_err(|_| Errno::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::{SEEK_CUR, SEEK_END, SEEK_SET};

    fn meminfo() -> Generated {
        Generated::open(Inode::new_proc(ProcFile::MemInfo, 0o444)).unwrap()
    }

    #[test]
    fn stat_says_an_empty_regular_file_and_a_read_gives_the_text() {
        let g = meminfo();
        let a = g.inode.attr();
        assert_eq!(a.mode, super::super::inode::S_IFREG | 0o444);
        assert_eq!((a.size, a.blocks), (0, 0));
        let mut buf = [0u8; 4096];
        let n = g.read_at(0, &mut buf);
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("MemTotal:"), "{text}");
        assert!(text.contains("\nMemFree:"));
        assert_eq!(g.read_at(n as u64, &mut buf), 0, "then end of file");
    }

    #[test]
    fn a_read_where_the_last_ended_goes_on_and_any_other_makes_it_anew() {
        let g = meminfo();
        let mut all = [0u8; 4096];
        let n = g.read_at(0, &mut all);
        let made = &all[..n];
        // Another text is kept: a read where the last ended goes on in it.
        g.text.lock().bytes = b"abcdefgh".to_vec();
        g.text.lock().end = Some(2);
        let mut part = [0u8; 4];
        assert_eq!(g.read_at(2, &mut part), 4);
        assert_eq!(&part, b"cdef");
        assert_eq!(g.read_at(6, &mut part), 2);
        assert_eq!(&part[..2], b"gh");
        // Elsewhere (a pread, a seek) it is made anew and skipped to.
        assert_eq!(g.read_at(3, &mut part), 4);
        assert_eq!(&part, &made[3..7]);
        // And at 0.
        let mut again = [0u8; 4096];
        assert_eq!(g.read_at(0, &mut again), n);
        // A first read past 0 has a text too (Linux's pg_read_file(path,
        // offset, length) is a seek and a read).
        let fresh = meminfo();
        assert_eq!(fresh.read_at(10, &mut part), 4);
        assert_eq!(&part, &made[10..14]);
    }

    #[test]
    fn seeks_from_the_end_are_refused_as_by_seq_lseek() {
        let g = meminfo();
        assert_eq!(g.seek(5, 3, SEEK_CUR), Ok(8));
        assert_eq!(g.seek(5, 0, SEEK_SET), Ok(0));
        assert_eq!(g.seek(5, -6, SEEK_CUR), Err(Errno::EINVAL));
        assert_eq!(g.seek(0, 0, SEEK_END), Err(Errno::EINVAL));
    }

    #[test]
    fn other_inodes_are_not_proc_files() {
        assert!(Generated::open(Inode::new_dir(0o755, None)).is_none());
    }
}
