//! The files under /proc whose text is made when read, as Linux's procfs
//! makes them: `/proc/meminfo` (crate::meminfo).
//!
//! Linux's single-record proc files (seq_file `single_open`) report size 0
//! in stat, refuse a seek from the end, and make their text when a read
//! starts at offset 0; reads further on continue that text, so a reader
//! taking it in several reads sees one moment, and one that seeks back to
//! 0 and reads again (procps' `free -s`, `top`) sees a new one. The same
//! holds here: the text lives in the open file description (`Generated`),
//! never in the inode, so two openers never see each other's moment.

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

/// An open proc file: its inode and the text of its last read at 0.
pub struct Generated {
    pub inode: Arc<Inode>,
    file: ProcFile,
    text: Mutex<Vec<u8>>,
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
            text: Mutex::new(Vec::new()),
        })
    }

    /// Bytes at `off`: a new text at 0, the last one further on.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        if off == 0 {
            // Made before the lock is taken: making it takes other locks
            // and allocates.
            let fresh = self.file.text();
            *self.text.lock() = fresh;
        }
        let text = self.text.lock();
        let from = (off.min(text.len() as u64)) as usize;
        let n = buf.len().min(text.len() - from);
        buf[..n].copy_from_slice(&text[from..from + n]);
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
    fn reads_past_zero_continue_the_same_text() {
        let g = meminfo();
        let mut all = [0u8; 4096];
        let n = g.read_at(0, &mut all);
        // Another text is kept; a read further on shows the kept one.
        *g.text.lock() = b"abcdef".to_vec();
        let mut part = [0u8; 4];
        assert_eq!(g.read_at(2, &mut part), 4);
        assert_eq!(&part, b"cdef");
        // A read at 0 makes it anew.
        let mut again = [0u8; 4096];
        assert_eq!(g.read_at(0, &mut again), n);
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
