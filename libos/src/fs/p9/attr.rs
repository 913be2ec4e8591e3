//! Rgetattr to what stat(2) reports.

use crate::fs::inode::{Attr, Time};
use pgkraft_abi::p9;

/// st_dev of every file on the volume: not the in-memory file system's
/// (`inode::DEV`), so a program that compares devices sees two.
pub const DEV: u64 = 0x2f;

/// The host's attributes, with the libOS's one user as the owner: the
/// host's uid is the runner's (or QEMU's), which means nothing inside,
/// and PostgreSQL refuses a data directory its own uid does not own.
pub fn from_p9(a: &p9::Attr) -> Attr {
    let t = |sec: u64, nsec: u64| Time {
        sec: sec as i64,
        nsec: nsec as u32,
    };
    Attr {
        dev: DEV,
        ino: a.qid.path,
        mode: a.mode,
        nlink: a.nlink,
        uid: crate::syscall::ids::UID as u32,
        gid: crate::syscall::ids::GID as u32,
        rdev: a.rdev,
        size: a.size,
        blksize: a.blksize,
        blocks: a.blocks,
        atime: t(a.atime_sec, a.atime_nsec),
        mtime: t(a.mtime_sec, a.mtime_nsec),
        ctime: t(a.ctime_sec, a.ctime_nsec),
    }
}

/// Tsetattr for utimensat: None leaves a time alone.
pub fn set_times(atime: Option<Time>, mtime: Option<Time>) -> p9::SetAttr {
    let mut s = p9::SetAttr::default();
    if let Some(t) = atime {
        s.valid |= p9::setattr::ATIME | p9::setattr::ATIME_SET;
        s.atime_sec = t.sec as u64;
        s.atime_nsec = t.nsec as u64;
    }
    if let Some(t) = mtime {
        s.valid |= p9::setattr::MTIME | p9::setattr::MTIME_SET;
        s.mtime_sec = t.sec as u64;
        s.mtime_nsec = t.nsec as u64;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_takes_the_hosts_attributes_and_our_owner() {
        let a = p9::Attr {
            qid: p9::Qid {
                kind: 0,
                version: 0,
                path: 4242,
            },
            mode: 0o100600,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 8192,
            blksize: 4096,
            blocks: 16,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 5,
            ..p9::Attr::default()
        };
        let s = from_p9(&a);
        assert_eq!((s.dev, s.ino, s.mode, s.nlink), (DEV, 4242, 0o100600, 1));
        assert_eq!((s.size, s.blksize, s.blocks), (8192, 4096, 16));
        assert_eq!(
            (s.uid as u64, s.gid as u64),
            (crate::syscall::ids::UID, crate::syscall::ids::GID)
        );
        assert_eq!(
            s.mtime,
            Time {
                sec: 1_700_000_000,
                nsec: 5
            }
        );
    }

    #[test]
    fn set_times_asks_only_for_what_is_given() {
        let t = Time { sec: 7, nsec: 9 };
        let s = set_times(None, Some(t));
        assert_eq!(s.valid, p9::setattr::MTIME | p9::setattr::MTIME_SET);
        assert_eq!((s.mtime_sec, s.mtime_nsec), (7, 9));
        assert_eq!(set_times(None, None).valid, 0);
    }
}
