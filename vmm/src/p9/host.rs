//! The host side of the 9P server: files beneath the volume's root, as fds.
//!
//! **Never leaving the root.** A walk goes one name at a time from a fid's
//! own fd, each step `openat2(.., RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! with `O_NOFOLLOW`: the guest's client resolves symlinks itself (it reads
//! them with Treadlink), so the server never follows one as the last
//! component, and the kernel refuses any step (an absolute symlink in the
//! middle, a `..`) that would leave the directory it starts from. `..` is
//! done here: at the root it stays at the root, elsewhere it is the parent
//! of a directory that lies beneath the root. Names the guest hands in
//! (create, mkdir, rename, unlink) must be one component.
//!
//! Walked fids hold `O_PATH` fds; what needs a real open file (open for
//! I/O, truncate, chmod, times, a hard link) reopens that inode through
//! `/proc/self/fd/N`, which names the inode itself and not a path, so a
//! rename in between cannot redirect it.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use pgkraft_abi::p9::{Attr, Dirent, DirentWriter, Qid, StatFs, getattr, open, qid_type};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Every openat2 beneath a directory fd: the kernel refuses to leave it.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// A Linux errno for Rlerror.
pub(crate) fn errno(e: Errno) -> u32 {
    e.raw_os_error() as u32
}

/// A name the guest hands in for one directory entry: one component, not
/// `.` or `..`, no NUL.
pub(crate) fn check_name(name: &[u8]) -> Result<CString, Errno> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    CString::new(name).map_err(|_| Errno::INVAL)
}

/// The volume's root directory, opened once.
pub(crate) fn open_root(dir: &std::path::Path) -> Result<OwnedFd, Errno> {
    rfs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `O_PATH` of `name` in `dir`, the name itself if it is a symlink.
pub(crate) fn walk_one(root: &Stat, dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match name {
        b"." | b"" => rfs::openat2(dir, c".", flags, Mode::empty(), BENEATH),
        b".." => {
            let here = rfs::fstat(dir)?;
            if same_file(&here, root) {
                rfs::openat2(dir, c".", flags, Mode::empty(), BENEATH)
            } else {
                // `dir` lies beneath the root and is not it: its parent is
                // the root or beneath it. Not BENEATH: that refuses any `..`.
                rfs::openat(dir, c"..", flags | OFlags::DIRECTORY, Mode::empty())
            }
        }
        _ => {
            let name = check_name(name)?;
            rfs::openat2(dir, name.as_c_str(), flags, Mode::empty(), BENEATH)
        }
    }
}

/// The host file's identity, to recognise the root.
pub(crate) type Stat = rfs::Stat;

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// A new open file description for the inode behind `fd` (an `O_PATH` fd
/// included) through `/proc/self/fd`: only a regular file or a directory
/// (see [`regular_or_dir`]).
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
    let fd = rfs::open(
        proc_path(fd),
        flags | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    regular_or_dir(fd)
}

/// Opens happen on the vCPU thread with `O_NONBLOCK` (so a FIFO cannot
/// stop the VM waiting for a writer; it changes nothing for regular files
/// and directories), and only regular files and directories are kept: a
/// device node in the volume must not become a way to the host's devices.
fn regular_or_dir(fd: OwnedFd) -> Result<OwnedFd, Errno> {
    match FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode) {
        FileType::RegularFile | FileType::Directory => Ok(fd),
        _ => Err(Errno::OPNOTSUPP),
    }
}

fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Tlopen/Tlcreate's Linux flags as the host's: access mode, truncate,
/// append, the sync flags and O_DIRECTORY are honoured; O_DIRECT is
/// dropped (the device's bounce buffers are not aligned for it), as are
/// O_NOATIME (refused unless the runner owns the file), O_NONBLOCK, O_NOCTTY
/// and the creation flags (Tlcreate adds its own).
pub(crate) fn host_open_flags(flags: u32) -> OFlags {
    let mut o = match flags & open::ACCMODE {
        open::WRONLY => OFlags::WRONLY,
        open::RDWR => OFlags::RDWR,
        _ => OFlags::RDONLY,
    };
    for (bit, host) in [
        (open::TRUNC, OFlags::TRUNC),
        (open::APPEND, OFlags::APPEND),
        (open::DSYNC, OFlags::DSYNC),
        // Linux's O_SYNC is __O_SYNC|O_DSYNC; the bit alone is __O_SYNC.
        (open::SYNC, OFlags::SYNC),
        (open::DIRECTORY, OFlags::DIRECTORY),
    ] {
        if flags & bit != 0 {
            o |= host;
        }
    }
    o | OFlags::CLOEXEC
}

/// Creates `name` in `dir` (exclusive if the guest says so), never through
/// a symlink.
pub(crate) fn create(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: u32,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let name = check_name(name)?;
    let mut o = host_open_flags(flags) | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    if flags & open::EXCL != 0 {
        o |= OFlags::EXCL;
    }
    let mode = Mode::from_raw_mode(mode & 0o7777);
    regular_or_dir(rfs::openat2(dir, name.as_c_str(), o, mode, BENEATH)?)
}

/// Tmknod: a FIFO, a socket or an empty regular file; device nodes are
/// refused (EPERM), as they would reach the host's devices.
pub(crate) fn mknod(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<Stat, Errno> {
    let name = check_name(name)?;
    let kind = FileType::from_raw_mode(mode);
    match kind {
        FileType::Fifo | FileType::Socket | FileType::RegularFile => {}
        _ => return Err(Errno::PERM),
    }
    let perm = Mode::from_raw_mode(mode & 0o7777);
    rfs::mknodat(dir, name.as_c_str(), kind, perm, 0)?;
    rfs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
}

pub(crate) fn qid_of(st: &Stat) -> Qid {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => qid_type::DIR,
        FileType::Symlink => qid_type::SYMLINK,
        _ => qid_type::FILE,
    };
    // One host file system is assumed below the root: the inode is unique.
    Qid {
        kind,
        version: 0,
        path: st.st_ino,
    }
}

pub(crate) fn qid(fd: BorrowedFd<'_>) -> Result<Qid, Errno> {
    Ok(qid_of(&rfs::fstat(fd)?))
}

/// Rgetattr from the host's `fstat` (what `stat(2)` gives: [`getattr::BASIC`]).
pub(crate) fn attr(fd: BorrowedFd<'_>) -> Result<Attr, Errno> {
    let st = rfs::fstat(fd)?;
    Ok(Attr {
        valid: getattr::BASIC,
        qid: qid_of(&st),
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
        atime_sec: st.st_atime as u64,
        atime_nsec: st.st_atime_nsec,
        mtime_sec: st.st_mtime as u64,
        mtime_nsec: st.st_mtime_nsec,
        ctime_sec: st.st_ctime as u64,
        ctime_nsec: st.st_ctime_nsec,
        ..Attr::default()
    })
}

/// Tsetattr: mode, size and times; ownership changes are ignored, as
/// QEMU's `security_model=none` does (the runner is not root).
pub(crate) fn set_attr(fd: BorrowedFd<'_>, a: &pgkraft_abi::p9::SetAttr) -> Result<(), Errno> {
    use pgkraft_abi::p9::setattr as s;
    let path = proc_path(fd);
    if a.valid & s::MODE != 0 {
        rfs::chmodat(
            rfs::CWD,
            &path,
            Mode::from_raw_mode(a.mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    if a.valid & s::SIZE != 0 {
        let f = reopen(fd, OFlags::WRONLY)?;
        rfs::ftruncate(&f, a.size)?;
    }
    if a.valid & (s::ATIME | s::MTIME) != 0 {
        let time = |set: u32, given: u32, sec: u64, nsec: u64| rfs::Timespec {
            tv_sec: sec as i64,
            tv_nsec: if a.valid & set == 0 {
                rfs::UTIME_OMIT
            } else if a.valid & given == 0 {
                rfs::UTIME_NOW
            } else {
                nsec as _
            },
        };
        let times = rfs::Timestamps {
            last_access: time(s::ATIME, s::ATIME_SET, a.atime_sec, a.atime_nsec),
            last_modification: time(s::MTIME, s::MTIME_SET, a.mtime_sec, a.mtime_nsec),
        };
        rfs::utimensat(rfs::CWD, &path, &times, AtFlags::empty())?;
    }
    Ok(())
}

pub(crate) fn statfs(fd: BorrowedFd<'_>) -> Result<StatFs, Errno> {
    let s = rfs::fstatfs(fd)?;
    Ok(StatFs {
        kind: s.f_type as u32,
        bsize: s.f_bsize as u32,
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
        // rustix keeps `f_fsid` private; the device number names the file
        // system as well.
        fsid: rfs::fstat(fd)?.st_dev,
        namelen: s.f_namelen as u32,
    })
}

/// A hard link `name` in `dir` to the inode behind `fd`.
pub(crate) fn link(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let name = check_name(name)?;
    // AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH; /proc does not.
    rfs::linkat(
        rfs::CWD,
        proc_path(fd),
        dir,
        name.as_c_str(),
        AtFlags::SYMLINK_FOLLOW,
    )
}

/// The target of the symlink behind an `O_PATH` fd.
pub(crate) fn readlink(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    Ok(rfs::readlinkat(fd, c"", Vec::new())?.into_bytes())
}

/// Rreaddir's entries from host offset `offset` (0: the start; else a
/// cookie an entry of an earlier answer gave) into `out`, as many as fit.
/// The cookies are the host file system's own `d_off`, stable while the
/// directory is open, so no state is kept between calls; `.` and `..`
/// come as the host lists them.
pub(crate) fn read_dir(dir: &OwnedFd, offset: u64, out: &mut [u8]) -> Result<usize, Errno> {
    rfs::seek(dir, rfs::SeekFrom::Start(offset))?;
    let mut w = DirentWriter::new(out);
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 16 << 10];
    let mut raw = rfs::RawDir::new(dir.as_fd(), &mut buf);
    while let Some(entry) = raw.next() {
        let entry = entry?;
        let kind = match entry.file_type() {
            FileType::Directory => 4,
            FileType::RegularFile => 8,
            FileType::Symlink => 10,
            FileType::Fifo => 1,
            FileType::CharacterDevice => 2,
            FileType::BlockDevice => 6,
            FileType::Socket => 12,
            FileType::Unknown => 0,
        };
        let d = Dirent {
            qid: Qid {
                kind: match kind {
                    4 => qid_type::DIR,
                    10 => qid_type::SYMLINK,
                    _ => qid_type::FILE,
                },
                version: 0,
                path: entry.ino(),
            },
            offset: entry.next_entry_cookie(),
            kind,
            name: entry.file_name().to_bytes(),
        };
        if !w.push(&d) {
            // As getdents: a buffer too small for even one entry is an error,
            // not the directory's end.
            if w.is_empty() {
                return Err(Errno::INVAL);
            }
            break;
        }
    }
    Ok(w.len())
}
