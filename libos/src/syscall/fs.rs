//! File and descriptor system calls: argument decoding, the kernel ABI
//! structures, and the checks Linux makes before the file system is
//! involved (bad flags, bad descriptors, in Linux's order).

use super::clock::{Timespec, Timeval};
use super::{Errno, Result};
use crate::arch::uaccess;
use crate::fd::{self, FileKind, OpenFile};
use crate::fd::{
    MAX_RW, O_ACCMODE, O_CLOEXEC, O_CREAT, O_DIRECT, O_DIRECTORY, O_EXCL, O_LARGEFILE, O_NOCTTY,
    O_NOFOLLOW, O_NONBLOCK, O_PATH, O_RDWR, O_TRUNC, O_WRONLY,
};
use crate::fs::inode::{Attr, DEV, Inode, Kind, S_IFREG, Time};
use crate::fs::namei::{self, OpenHow};
use crate::fs::procfs::Generated;
use crate::fs::{self, pipe};
use alloc::sync::Arc;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// PATH_MAX, counting the NUL.
const PATH_MAX: u64 = 4096;
const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EACCESS: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_NO_AUTOMOUNT: u64 = 0x800;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;
/// O_TMPFILE without its O_DIRECTORY part.
const O_TMPFILE_BIT: u32 = 0o20000000;

fn path_arg(addr: u64) -> core::result::Result<alloc::vec::Vec<u8>, Errno> {
    uaccess::c_str(addr, PATH_MAX)
}

/// The directory a relative `path` starts from: the working directory or
/// `dirfd`. Linux only looks at `dirfd` when the path is relative, and an
/// empty path fails before anything else.
fn base(dirfd: u64, path: &[u8]) -> core::result::Result<Arc<Inode>, Errno> {
    match path.first() {
        None => Err(Errno::ENOENT),
        Some(b'/') => Ok(fs::root()),
        Some(_) => dir_fd(dirfd),
    }
}

fn dir_fd(dirfd: u64) -> core::result::Result<Arc<Inode>, Errno> {
    if dirfd as i32 == AT_FDCWD {
        return Ok(fs::cwd());
    }
    match fd::get(dirfd)?.inode() {
        Some(i) if i.is_dir() => Ok(i.clone()),
        _ => Err(Errno::ENOTDIR),
    }
}

/// What a *at call with AT_EMPTY_PATH may act on: an inode, or an open
/// file that has none (console, pipe).
enum Target {
    Inode(Arc<Inode>),
    File(Arc<OpenFile>),
}

impl Target {
    /// stat: an inode on the volume asks the host, which can fail.
    fn attr(&self) -> core::result::Result<Attr, Errno> {
        match self {
            Target::Inode(i) => i.stat(),
            Target::File(f) => f.stat(),
        }
    }
}

fn target(
    dirfd: u64,
    path: &[u8],
    flags: u64,
    follow: bool,
) -> core::result::Result<Target, Errno> {
    if path.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::ENOENT);
        }
        if dirfd as i32 == AT_FDCWD {
            return Ok(Target::Inode(fs::cwd()));
        }
        let f = fd::get(dirfd)?;
        // An open file on the volume answers through its own fid.
        return Ok(match f.inode() {
            Some(i) if f.remote().is_none() => Target::Inode(i.clone()),
            _ => Target::File(f),
        });
    }
    let inode = namei::resolve(&base(dirfd, path)?, path, follow)?;
    Ok(Target::Inode(inode))
}

fn inode_at(dirfd: u64, path: &[u8], follow: bool) -> core::result::Result<Arc<Inode>, Errno> {
    namei::resolve(&base(dirfd, path)?, path, follow)
}

// ---- open, close, dup ----

pub fn open(path: u64, flags: u64, mode: u64) -> Result {
    openat(AT_FDCWD as u64, path, flags, mode)
}

pub fn creat(path: u64, mode: u64) -> Result {
    openat(
        AT_FDCWD as u64,
        path,
        (O_CREAT | O_WRONLY | O_TRUNC) as u64,
        mode,
    )
}

pub fn openat(dirfd: u64, path: u64, flags: u64, mode: u64) -> Result {
    let path = &path_arg(path)?;
    let mut flags = flags as u32;
    if flags & O_TMPFILE_BIT != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let path_only = flags & O_PATH != 0;
    if path_only {
        flags &= O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC;
    }
    if flags & (O_CREAT | O_DIRECTORY) == O_CREAT | O_DIRECTORY {
        return Err(Errno::EINVAL);
    }
    if fd::free_count(1) == 0 {
        return Err(Errno::EMFILE);
    }
    let how = OpenHow {
        create: flags & O_CREAT != 0,
        excl: flags & O_EXCL != 0,
        trunc: flags & O_TRUNC != 0,
        directory: flags & O_DIRECTORY != 0,
        nofollow: flags & O_NOFOLLOW != 0,
        path_only,
        write: matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR),
        mode: mode as u32 & 0o7777,
        flags,
    };
    let inode = namei::open(&base(dirfd, path)?, path, &how)?;
    // A socket's name cannot be opened (Linux: ENXIO), only connected to.
    if matches!(inode.kind, crate::fs::inode::Kind::Socket) && !path_only {
        return Err(Errno::ENXIO);
    }
    // What F_GETFL will say: creation flags and O_CLOEXEC are not kept,
    // and 64-bit Linux always adds O_LARGEFILE.
    let status = (flags & !(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC)) | O_LARGEFILE;
    let file = if inode.is_remote() && !path_only {
        // A file on the volume is read and written through a fid of its
        // own description.
        let handle = fs::p9::Handle::open(&inode, flags)?;
        OpenFile::new_remote(inode, handle, status)
    } else {
        // A proc file's text belongs to its open file description.
        let kind = match Generated::open(inode.clone()) {
            Some(g) if !path_only => FileKind::Generated(g),
            _ => FileKind::Node(inode),
        };
        OpenFile::new(kind, status)
    };
    Ok(fd::install(file, flags & O_CLOEXEC != 0)? as i64)
}

pub fn close(fd: u64) -> Result {
    fd::close(fd)?;
    Ok(0)
}

const CLOSE_RANGE_UNSHARE: u64 = 2;
const CLOSE_RANGE_CLOEXEC: u64 = 4;

pub fn close_range(first: u64, last: u64, flags: u64) -> Result {
    if flags & !(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) != 0 || first > last {
        return Err(Errno::EINVAL);
    }
    let (first, last) = (first as u32 as u64, last as u32 as u64);
    fd::close_range(first, last, flags & CLOSE_RANGE_CLOEXEC != 0);
    Ok(0)
}

pub fn dup(old: u64) -> Result {
    let f = fd::get(old)?;
    Ok(fd::install(f, false)? as i64)
}

pub fn dup2(old: u64, new: u64) -> Result {
    let f = fd::get(old)?;
    if old as u32 == new as u32 {
        return Ok(new as u32 as i64);
    }
    Ok(fd::install_at(new as u32 as u64, f, false)? as i64)
}

pub fn dup3(old: u64, new: u64, flags: u64) -> Result {
    if flags & !(O_CLOEXEC as u64) != 0 || old as u32 == new as u32 {
        return Err(Errno::EINVAL);
    }
    let f = fd::get(old)?;
    Ok(fd::install_at(new as u32 as u64, f, flags != 0)? as i64)
}

pub fn pipe(fds: u64) -> Result {
    pipe2(fds, 0)
}

pub fn pipe2(fds: u64, flags: u64) -> Result {
    let flags = flags as u32;
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    // Check the result array and the table before creating anything.
    uaccess::slice_mut(fds, 8)?;
    if fd::free_count(2) < 2 {
        return Err(Errno::EMFILE);
    }
    let (r, w) = pipe::new();
    let status = (flags & (O_NONBLOCK | O_DIRECT)) | O_LARGEFILE;
    let cloexec = flags & O_CLOEXEC != 0;
    let rfd = fd::install(OpenFile::new(FileKind::Pipe(r), status), cloexec)?;
    let wfd = fd::install(OpenFile::new(FileKind::Pipe(w), status | O_WRONLY), cloexec)?;
    uaccess::write(fds, &[rfd as i32, wfd as i32])?;
    Ok(0)
}

// ---- reading and writing ----

pub fn read(fd: u64, buf: u64, len: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_read()?;
    let mut dst = uaccess::slice_mut(buf, len.min(MAX_RW))?;
    Ok(f.read(&mut dst)? as i64)
}

pub fn write(fd: u64, buf: u64, len: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_write()?;
    let src = uaccess::slice(buf, len.min(MAX_RW))?;
    Ok(f.write(&src)? as i64)
}

fn offset(off: u64) -> core::result::Result<u64, Errno> {
    if (off as i64) < 0 {
        Err(Errno::EINVAL)
    } else {
        Ok(off)
    }
}

pub fn pread64(fd: u64, buf: u64, len: u64, off: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_read()?;
    let off = offset(off)?;
    let mut dst = uaccess::slice_mut(buf, len.min(MAX_RW))?;
    Ok(f.pread(&mut dst, off)? as i64)
}

pub fn pwrite64(fd: u64, buf: u64, len: u64, off: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_write()?;
    let off = offset(off)?;
    let src = uaccess::slice(buf, len.min(MAX_RW))?;
    Ok(f.pwrite(&src, off)? as i64)
}

/// Apply `op` to each buffer of an iovec array in turn, stopping after the
/// first one it does not fill (end of file, a console line, a full pipe),
/// as one readv/writev does. An error after some bytes moved is not
/// reported: the count so far is.
fn vectored(
    iov: u64,
    count: u64,
    mut op: impl FnMut(u64, u64, u64) -> core::result::Result<usize, Errno>,
) -> Result {
    let vecs = super::iovec::read(iov, count)?;
    let mut total: u64 = 0;
    for v in vecs {
        let len = v.len.min(MAX_RW - total);
        if len == 0 {
            continue;
        }
        match op(v.base, len, total) {
            Ok(n) => {
                total += n as u64;
                if (n as u64) < len || total == MAX_RW {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total as i64)
}

pub fn readv(fd: u64, iov: u64, count: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_read()?;
    if matches!(f.kind, FileKind::Socket(_)) {
        return super::net::readv(&f, iov, count);
    }
    vectored(iov, count, |base, len, _| {
        f.read(&mut uaccess::slice_mut(base, len)?)
    })
}

pub fn writev(fd: u64, iov: u64, count: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_write()?;
    if matches!(f.kind, FileKind::Socket(_)) {
        return super::net::writev(&f, iov, count);
    }
    vectored(iov, count, |base, len, _| {
        f.write(&uaccess::slice(base, len)?)
    })
}

pub fn preadv(fd: u64, iov: u64, count: u64, pos: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_read()?;
    let pos = offset(pos)?;
    vectored(iov, count, |base, len, done| {
        f.pread(&mut uaccess::slice_mut(base, len)?, pos + done)
    })
}

pub fn pwritev(fd: u64, iov: u64, count: u64, pos: u64) -> Result {
    let f = fd::get(fd)?;
    f.check_write()?;
    let pos = offset(pos)?;
    vectored(iov, count, |base, len, done| {
        f.pwrite(&uaccess::slice(base, len)?, pos + done)
    })
}

/// RWF_HIPRI, RWF_DSYNC, RWF_SYNC and RWF_NOWAIT change nothing here (no
/// cache to bypass, nothing to wait for); RWF_APPEND does.
const RWF_SUPPORTED: u64 = 0x1f;
const RWF_APPEND: u64 = 0x10;

pub fn preadv2(fd: u64, iov: u64, count: u64, pos: u64, flags: u64) -> Result {
    if flags & !RWF_SUPPORTED != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if pos as i64 == -1 {
        readv(fd, iov, count)
    } else {
        preadv(fd, iov, count, pos)
    }
}

pub fn pwritev2(fd: u64, iov: u64, count: u64, pos: u64, flags: u64) -> Result {
    if flags & !RWF_SUPPORTED != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if pos as i64 == -1 || flags & RWF_APPEND != 0 {
        if flags & RWF_APPEND != 0 {
            // One write at the end, whatever the file's own flags say.
            let f = fd::get(fd)?;
            f.check_write()?;
            return vectored(iov, count, |base, len, _| {
                f.pwrite(&uaccess::slice(base, len)?, f.attr().size)
            });
        }
        writev(fd, iov, count)
    } else {
        pwritev(fd, iov, count, pos)
    }
}

pub fn lseek(fd: u64, off: u64, whence: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    Ok(f.seek(off as i64, whence)? as i64)
}

// ---- metadata ----

/// `struct stat` of the x86-64 kernel ABI.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Stat {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    _pad0: u32,
    rdev: u64,
    size: i64,
    blksize: i64,
    blocks: i64,
    atime: [i64; 2],
    mtime: [i64; 2],
    ctime: [i64; 2],
    _unused: [i64; 3],
}

impl From<&Attr> for Stat {
    fn from(a: &Attr) -> Stat {
        let t = |t: Time| [t.sec, t.nsec as i64];
        Stat {
            dev: a.dev,
            ino: a.ino,
            nlink: a.nlink,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            size: a.size as i64,
            blksize: a.blksize as i64,
            blocks: a.blocks as i64,
            atime: t(a.atime),
            mtime: t(a.mtime),
            ctime: t(a.ctime),
            ..Stat::default()
        }
    }
}

fn put_stat(buf: u64, a: &Attr) -> Result {
    uaccess::write(buf, &Stat::from(a))?;
    Ok(0)
}

pub fn fstat(fd: u64, buf: u64) -> Result {
    let f = fd::get(fd)?;
    put_stat(buf, &f.stat()?)
}

pub fn stat(path: u64, buf: u64) -> Result {
    newfstatat(AT_FDCWD as u64, path, buf, 0)
}

pub fn lstat(path: u64, buf: u64) -> Result {
    newfstatat(AT_FDCWD as u64, path, buf, AT_SYMLINK_NOFOLLOW)
}

pub fn newfstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> Result {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    let t = target(dirfd, path, flags, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    put_stat(buf, &t.attr()?)
}

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct StatxTime {
    sec: i64,
    nsec: u32,
    _reserved: i32,
}

/// `struct statx` (256 bytes).
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Statx {
    mask: u32,
    blksize: u32,
    attributes: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u16,
    _spare0: u16,
    ino: u64,
    size: u64,
    blocks: u64,
    attributes_mask: u64,
    atime: StatxTime,
    btime: StatxTime,
    ctime: StatxTime,
    mtime: StatxTime,
    rdev_major: u32,
    rdev_minor: u32,
    dev_major: u32,
    dev_minor: u32,
    mnt_id: u64,
    dio_mem_align: u32,
    dio_offset_align: u32,
    _spare3: [u64; 12],
}

const STATX_BASIC_STATS: u32 = 0x7ff;
const STATX_RESERVED: u64 = 0x8000_0000;

/// Linux's new_decode_dev halves of a device number.
fn major(d: u64) -> u32 {
    ((d >> 8) & 0xfff) as u32
}
fn minor(d: u64) -> u32 {
    ((d & 0xff) | ((d >> 12) & 0xfff00)) as u32
}

pub fn statx(dirfd: u64, path: u64, flags: u64, mask: u64, buf: u64) -> Result {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE) != 0
        || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
        || mask & STATX_RESERVED != 0
    {
        return Err(Errno::EINVAL);
    }
    // Since Linux 6.11 a NULL path with AT_EMPTY_PATH means the fd itself.
    let path = &if path == 0 && flags & AT_EMPTY_PATH != 0 {
        alloc::vec::Vec::new()
    } else {
        path_arg(path)?
    };
    let a = target(dirfd, path, flags, flags & AT_SYMLINK_NOFOLLOW == 0)?.attr()?;
    let t = |t: Time| StatxTime {
        sec: t.sec,
        nsec: t.nsec,
        _reserved: 0,
    };
    let sx = Statx {
        mask: STATX_BASIC_STATS,
        blksize: a.blksize as u32,
        nlink: a.nlink as u32,
        uid: a.uid,
        gid: a.gid,
        mode: a.mode as u16,
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: t(a.atime),
        ctime: t(a.ctime),
        mtime: t(a.mtime),
        rdev_major: major(a.rdev),
        rdev_minor: minor(a.rdev),
        dev_major: major(a.dev),
        dev_minor: minor(a.dev),
        ..Statx::default()
    };
    uaccess::write(buf, &sx)?;
    Ok(0)
}

/// `struct statfs` of the x86-64 kernel ABI.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Statfs {
    ftype: i64,
    bsize: i64,
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
    fsid: [i32; 2],
    namelen: i64,
    frsize: i64,
    flags: i64,
    _spare: [i64; 4],
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const V9FS_MAGIC: i64 = 0x0102_1997;
const ST_VALID: i64 = 0x20;

/// The volume: the host's file system's figures, as Linux's 9p client
/// reports them.
fn put_statfs_remote(buf: u64, inode: &Inode) -> Result {
    let s = fs::p9::statfs(inode)?;
    let sf = Statfs {
        ftype: V9FS_MAGIC,
        bsize: s.bsize as i64,
        blocks: s.blocks,
        bfree: s.bfree,
        bavail: s.bavail,
        files: s.files,
        ffree: s.ffree,
        fsid: [s.fsid as i32, (s.fsid >> 32) as i32],
        namelen: s.namelen as i64,
        frsize: s.bsize as i64,
        flags: ST_VALID,
        ..Statfs::default()
    };
    uaccess::write(buf, &sf)?;
    Ok(0)
}

/// The file system lives in RAM, so its size and free space are RAM's.
fn put_statfs(buf: u64) -> Result {
    let page = crate::mem::PAGE;
    let total = crate::platform::get().mem_bytes / page;
    let free = crate::mem::free_bytes() / page;
    let sf = Statfs {
        ftype: TMPFS_MAGIC,
        bsize: page as i64,
        blocks: total,
        bfree: free,
        bavail: free,
        files: total,
        ffree: free,
        fsid: [DEV as i32, 0],
        namelen: crate::fs::inode::NAME_MAX as i64,
        frsize: page as i64,
        flags: ST_VALID,
        ..Statfs::default()
    };
    uaccess::write(buf, &sf)?;
    Ok(0)
}

pub fn statfs(path: u64, buf: u64) -> Result {
    let path = &path_arg(path)?;
    let inode = inode_at(AT_FDCWD as u64, path, true)?;
    if inode.is_remote() {
        return put_statfs_remote(buf, &inode);
    }
    put_statfs(buf)
}

pub fn fstatfs(fd: u64, buf: u64) -> Result {
    let f = fd::get(fd)?;
    if let Some(i) = f.inode()
        && i.is_remote()
    {
        return put_statfs_remote(buf, i);
    }
    put_statfs(buf)
}

const F_OK: u64 = 0;
const X_OK: u64 = 1;

pub fn access(path: u64, mode: u64) -> Result {
    faccessat2(AT_FDCWD as u64, path, mode, 0)
}

pub fn faccessat(dirfd: u64, path: u64, mode: u64) -> Result {
    faccessat2(dirfd, path, mode, 0)
}

/// Everything runs as the files' owner, so existence is what counts; but
/// as for root on Linux, X_OK on a non-directory needs some execute bit.
pub fn faccessat2(dirfd: u64, path: u64, mode: u64, flags: u64) -> Result {
    if mode & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    let a = target(dirfd, path, flags, flags & AT_SYMLINK_NOFOLLOW == 0)?.attr()?;
    if mode != F_OK && mode & X_OK != 0 && a.mode & 0o170000 != 0o040000 && a.mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    Ok(0)
}

pub fn umask(mask: u64) -> Result {
    Ok(fs::set_umask(mask as u32) as i64)
}

pub fn chmod(path: u64, mode: u64) -> Result {
    fchmodat(AT_FDCWD as u64, path, mode)
}

pub fn fchmodat(dirfd: u64, path: u64, mode: u64) -> Result {
    let path = &path_arg(path)?;
    inode_at(dirfd, path, true)?.set_perm(mode as u32)?;
    Ok(0)
}

pub fn fchmod(fd: u64, mode: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    if let Some(i) = f.inode() {
        i.set_perm(mode as u32)?;
    }
    Ok(0)
}

/// Ownership is accepted and not kept: there is one user.
pub fn chown(path: u64, follow: bool) -> Result {
    let path = &path_arg(path)?;
    inode_at(AT_FDCWD as u64, path, follow)?;
    Ok(0)
}

pub fn fchownat(dirfd: u64, path: u64, flags: u64) -> Result {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    target(dirfd, path, flags, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(0)
}

pub fn fchown(fd: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    Ok(0)
}

const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

fn utime_of(ts: Timespec, now: Time) -> core::result::Result<Option<Time>, Errno> {
    match ts.nsec {
        UTIME_NOW => Ok(Some(now)),
        UTIME_OMIT => Ok(None),
        0..=999_999_999 => Ok(Some(Time {
            sec: ts.sec,
            nsec: ts.nsec as u32,
        })),
        _ => Err(Errno::EINVAL),
    }
}

/// Set times on what `dirfd`/`path` name (or on `dirfd` itself when the
/// path pointer is NULL, as futimens does).
fn set_times(
    dirfd: u64,
    path: u64,
    flags: u64,
    atime: Option<Time>,
    mtime: Option<Time>,
) -> Result {
    if atime.is_none() && mtime.is_none() {
        return Ok(0);
    }
    let t = if path == 0 {
        if dirfd as i32 == AT_FDCWD {
            return Err(Errno::EFAULT);
        }
        let f = fd::get(dirfd)?;
        match f.inode() {
            Some(i) => Target::Inode(i.clone()),
            None => Target::File(f),
        }
    } else {
        target(
            dirfd,
            &path_arg(path)?,
            flags,
            flags & AT_SYMLINK_NOFOLLOW == 0,
        )?
    };
    match t {
        Target::Inode(i) => i.set_times(atime, mtime)?,
        Target::File(f) => {
            if let Some(i) = f.inode() {
                i.set_times(atime, mtime)?;
            }
        }
    }
    Ok(0)
}

pub fn utimensat(dirfd: u64, path: u64, times: u64, flags: u64) -> Result {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let now = Time::now();
    let (a, m) = if times == 0 {
        (Some(now), Some(now))
    } else {
        let ts: [Timespec; 2] = uaccess::read(times)?;
        (utime_of(ts[0], now)?, utime_of(ts[1], now)?)
    };
    set_times(dirfd, path, flags, a, m)
}

/// utimes/futimesat: `struct timeval[2]`, microseconds.
pub fn futimesat(dirfd: u64, path: u64, tv: u64) -> Result {
    let now = Time::now();
    let (a, m) = if tv == 0 {
        (now, now)
    } else {
        let v: [Timeval; 2] = uaccess::read(tv)?;
        // Not Timeval::to_ns: times before 1970 (negative seconds) are valid.
        let conv = |t: Timeval| {
            if !(0..1_000_000).contains(&t.usec) {
                return Err(Errno::EINVAL);
            }
            Ok(Time {
                sec: t.sec,
                nsec: (t.usec * 1000) as u32,
            })
        };
        (conv(v[0])?, conv(v[1])?)
    };
    if path == 0 {
        return Err(Errno::EFAULT);
    }
    set_times(dirfd, path, 0, Some(a), Some(m))
}

/// utime: `struct utimbuf` (actime, modtime) in seconds.
pub fn utime(path: u64, buf: u64) -> Result {
    let now = Time::now();
    let (a, m) = if buf == 0 {
        (now, now)
    } else {
        let v: [i64; 2] = uaccess::read(buf)?;
        let t = |sec| Time { sec, nsec: 0 };
        (t(v[0]), t(v[1]))
    };
    if path == 0 {
        return Err(Errno::EFAULT);
    }
    set_times(AT_FDCWD as u64, path, 0, Some(a), Some(m))
}

// ---- names ----

pub fn mkdir(path: u64, mode: u64) -> Result {
    mkdirat(AT_FDCWD as u64, path, mode)
}

pub fn mkdirat(dirfd: u64, path: u64, mode: u64) -> Result {
    let path = &path_arg(path)?;
    namei::mkdir(&base(dirfd, path)?, path, mode as u32)?;
    Ok(0)
}

const S_IFMT: u32 = 0o170000;

/// The directory a relative path starts from (bind/connect of AF_UNIX).
pub fn path_base(dirfd: u64, path: &[u8]) -> core::result::Result<Arc<Inode>, Errno> {
    base(dirfd, path)
}

pub fn mknodat(dirfd: u64, path: u64, mode: u64) -> Result {
    let path = &path_arg(path)?;
    let mode = mode as u32;
    match mode & S_IFMT {
        0 | S_IFREG => {
            namei::mknod_file(&base(dirfd, path)?, path, mode & 0o7777)?;
            Ok(0)
        }
        // Device nodes need privileges we do not have; FIFOs and sockets
        // are not made by this file system.
        0o020000 | 0o060000 | 0o010000 | 0o140000 => Err(Errno::EPERM),
        _ => Err(Errno::EINVAL),
    }
}

pub fn rmdir(path: u64) -> Result {
    let path = &path_arg(path)?;
    namei::rmdir(&base(AT_FDCWD as u64, path)?, path)?;
    Ok(0)
}

pub fn unlink(path: u64) -> Result {
    unlinkat(AT_FDCWD as u64, path, 0)
}

pub fn unlinkat(dirfd: u64, path: u64, flags: u64) -> Result {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    let base = base(dirfd, path)?;
    if flags & AT_REMOVEDIR != 0 {
        namei::rmdir(&base, path)?;
    } else {
        namei::unlink(&base, path)?;
    }
    Ok(0)
}

pub fn rename(old: u64, new: u64) -> Result {
    renameat2(AT_FDCWD as u64, old, AT_FDCWD as u64, new, 0)
}

pub fn renameat2(olddir: u64, old: u64, newdir: u64, new: u64, flags: u64) -> Result {
    let old = &path_arg(old)?;
    let new = &path_arg(new)?;
    let obase = base(olddir, old)?;
    let nbase = base(newdir, new)?;
    namei::rename(&obase, old, &nbase, new, flags)?;
    Ok(0)
}

pub fn link(old: u64, new: u64) -> Result {
    linkat(AT_FDCWD as u64, old, AT_FDCWD as u64, new, 0)
}

pub fn linkat(olddir: u64, old: u64, newdir: u64, new: u64, flags: u64) -> Result {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let old = &path_arg(old)?;
    let new = &path_arg(new)?;
    let inode = match target(olddir, old, flags, flags & AT_SYMLINK_FOLLOW != 0)? {
        Target::Inode(i) => i,
        Target::File(_) => return Err(Errno::ENOENT),
    };
    namei::link(&inode, &base(newdir, new)?, new)?;
    Ok(0)
}

pub fn symlink(target: u64, path: u64) -> Result {
    symlinkat(target, AT_FDCWD as u64, path)
}

pub fn symlinkat(target: u64, dirfd: u64, path: u64) -> Result {
    let target = &path_arg(target)?;
    let path = &path_arg(path)?;
    if target.is_empty() {
        return Err(Errno::ENOENT);
    }
    namei::symlink(target, &base(dirfd, path)?, path)?;
    Ok(0)
}

pub fn readlink(path: u64, buf: u64, size: u64) -> Result {
    readlinkat(AT_FDCWD as u64, path, buf, size)
}

pub fn readlinkat(dirfd: u64, path: u64, buf: u64, size: u64) -> Result {
    if size as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    if let Some(link) = proc_self_link(path)? {
        let n = link.len().min(size as u32 as usize);
        uaccess::slice_mut(buf, n as u64)?.copy_from_slice(&link[..n]);
        return Ok(n as i64);
    }
    // An empty path reads the symlink an O_PATH descriptor refers to.
    let inode = match target(dirfd, path, AT_EMPTY_PATH, false)? {
        Target::Inode(i) => i,
        Target::File(_) => return Err(Errno::EINVAL),
    };
    let Kind::Symlink(t) = &inode.kind else {
        return Err(if path.is_empty() {
            Errno::ENOENT
        } else {
            Errno::EINVAL
        });
    };
    let n = t.len().min(size as u32 as usize);
    uaccess::slice_mut(buf, n as u64)?.copy_from_slice(&t[..n]);
    Ok(n as i64)
}

/// The one part of /proc there is: the /proc/self/fd/N links, which musl's
/// realpath() reads to name an open file. None: not such a path.
fn proc_self_link(path: &[u8]) -> core::result::Result<Option<alloc::vec::Vec<u8>>, Errno> {
    let Some(num) = path.strip_prefix(b"/proc/self/fd/") else {
        return Ok(None);
    };
    let fd = core::str::from_utf8(num)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(Errno::ENOENT)?;
    let file = fd::get(fd).map_err(|_| Errno::ENOENT)?;
    match &file.kind {
        FileKind::Node(inode) => Ok(Some(namei::path_of(inode)?)),
        FileKind::Generated(g) => Ok(Some(namei::path_of(&g.inode)?)),
        FileKind::Console => Ok(Some(b"/dev/console".to_vec())),
        // Linux names these "anon_inode:[kind]"; the kind is not kept here.
        _ => Ok(Some(b"anon_inode:[pgkraft]".to_vec())),
    }
}

pub fn chdir(path: u64) -> Result {
    let path = &path_arg(path)?;
    let dir = inode_at(AT_FDCWD as u64, path, true)?;
    if !dir.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    fs::set_cwd(dir);
    Ok(0)
}

pub fn fchdir(fd: u64) -> Result {
    let f = fd::get(fd)?;
    match f.inode() {
        Some(i) if i.is_dir() => {
            fs::set_cwd(i.clone());
            Ok(0)
        }
        _ => Err(Errno::ENOTDIR),
    }
}

/// Returns the length including the NUL, as the Linux system call does.
pub fn getcwd(buf: u64, size: u64) -> Result {
    let path = namei::getcwd()?;
    if path.len() as u64 + 1 > size {
        return Err(Errno::ERANGE);
    }
    let mut dst = uaccess::slice_mut(buf, path.len() as u64 + 1)?;
    dst[..path.len()].copy_from_slice(&path);
    dst[path.len()] = 0;
    Ok(path.len() as i64 + 1)
}

pub fn truncate(path: u64, len: u64) -> Result {
    if (len as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let path = &path_arg(path)?;
    let inode = inode_at(AT_FDCWD as u64, path, true)?;
    match inode.kind {
        Kind::Dir => Err(Errno::EISDIR),
        Kind::File => {
            inode.truncate(len)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

pub fn ftruncate(fd: u64, len: u64) -> Result {
    if (len as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    match (f.inode(), f.remote()) {
        (Some(i), Some(h)) if matches!(i.kind, Kind::File) && f.writable() => {
            h.truncate(i, len)?;
            Ok(0)
        }
        (Some(i), None) if matches!(i.kind, Kind::File) && f.writable() => {
            i.truncate(len)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

// ---- directories ----

/// getdents64 (`struct linux_dirent64`) and the older getdents (`struct
/// linux_dirent`, d_type in the record's last byte).
pub fn getdents(fd: u64, buf: u64, count: u64, is64: bool) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    let dir = match f.inode() {
        Some(i) if i.is_dir() => i.clone(),
        _ => return Err(Errno::ENOTDIR),
    };
    let mut out = uaccess::slice_mut(buf, count.min(MAX_RW))?;
    let room = out.len();
    let mut used = 0usize;
    let mut refused = false;
    let mut emit = |ino: u64, next: u64, dtype: u8, name: &[u8]| -> bool {
        let fits = match put_dirent(&mut out[used..], is64, ino, next, dtype, name) {
            Some(n) => {
                used += n;
                true
            }
            None => false,
        };
        refused = !fits;
        fits
    };
    let pos = match f.remote() {
        Some(h) => h.read_dir(f.pos(), room, &mut emit)?,
        None => dir.read_dir(f.pos(), &mut emit)?,
    };
    f.set_pos(pos);
    if used == 0 && refused {
        // Not even the next entry fits.
        return Err(Errno::EINVAL);
    }
    Ok(used as i64)
}

/// One `linux_dirent64` (or, without `is64`, `linux_dirent`: d_type in
/// the record's last byte) at the start of `out`; its length, or None
/// when it does not fit.
pub fn put_dirent(
    out: &mut [u8],
    is64: bool,
    ino: u64,
    next: u64,
    dtype: u8,
    name: &[u8],
) -> Option<usize> {
    let header = if is64 { 19 } else { 18 };
    let trailer = if is64 { 1 } else { 2 };
    let reclen = (header + name.len() + trailer).next_multiple_of(8);
    let rec = out.get_mut(..reclen)?;
    rec.fill(0);
    rec[0..8].copy_from_slice(&ino.to_le_bytes());
    rec[8..16].copy_from_slice(&next.to_le_bytes());
    rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
    if is64 {
        rec[18] = dtype;
        rec[19..19 + name.len()].copy_from_slice(name);
    } else {
        rec[18..18 + name.len()].copy_from_slice(name);
        rec[reclen - 1] = dtype;
    }
    Some(reclen)
}

// ---- synchronisation and advice ----

/// fsync/fdatasync: a file or directory on the volume is synced on the
/// host (its fsync or fdatasync) before this returns; in memory there is
/// nothing to flush. Other kinds of file answer as Linux does (EINVAL).
pub fn fsync(fd: u64, datasync: bool) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    if let Some(h) = f.remote() {
        h.fsync(datasync)?;
        return Ok(0);
    }
    match f.inode().map(|i| &i.kind) {
        Some(Kind::File | Kind::Dir) => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

pub fn syncfs(fd: u64) -> Result {
    fd::get(fd)?;
    Ok(0)
}

const SYNC_FILE_RANGE_ALL: u64 = 7;

pub fn sync_file_range(fd: u64, off: u64, len: u64, flags: u64) -> Result {
    let f = fd::get(fd)?;
    if flags & !SYNC_FILE_RANGE_ALL != 0
        || (off as i64) < 0
        || (len as i64) < 0
        || (off as i64).checked_add(len as i64).is_none()
    {
        return Err(Errno::EINVAL);
    }
    match f.inode().map(|i| &i.kind) {
        Some(Kind::File | Kind::Dir | Kind::Symlink(_)) => Ok(0),
        _ => Err(Errno::ESPIPE),
    }
}

const POSIX_FADV_NOREUSE: u64 = 5;

pub fn fadvise64(fd: u64, _off: u64, len: u64, advice: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    match &f.kind {
        FileKind::Node(_) | FileKind::Generated(_) => {}
        FileKind::Console => return Err(Errno::EINVAL),
        _ => return Err(Errno::ESPIPE),
    }
    if (len as i64) < 0 || advice > POSIX_FADV_NOREUSE {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

const FALLOC_FL_KEEP_SIZE: u64 = 1;
const FALLOC_FL_PUNCH_HOLE: u64 = 2;
/// Every mode bit Linux knows (FALLOC_FL_SUPPORTED_MASK).
const FALLOC_FL_KNOWN: u64 = 0x7f;

pub fn fallocate(fd: u64, mode: u64, off: u64, len: u64) -> Result {
    let f = fd::get(fd)?;
    let (off, len) = (off as i64, len as i64);
    if off < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    if mode & !FALLOC_FL_KNOWN != 0
        || (mode & FALLOC_FL_PUNCH_HOLE != 0 && mode & FALLOC_FL_KEEP_SIZE == 0)
    {
        return Err(Errno::EOPNOTSUPP);
    }
    f.check_write()?;
    let inode = match &f.kind {
        FileKind::Node(i) => i,
        FileKind::Console => return Err(Errno::ENODEV),
        _ => return Err(Errno::ESPIPE),
    };
    match inode.kind {
        Kind::Dir => return Err(Errno::EISDIR),
        Kind::File => {}
        _ => return Err(Errno::ENODEV),
    }
    inode.fallocate(mode, off as u64, len as u64)?;
    Ok(0)
}

// ---- fcntl, flock, ioctl ----

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_GETLK: u64 = 5;
const F_SETLK: u64 = 6;
const F_SETLKW: u64 = 7;
const F_SETOWN: u64 = 8;
const F_GETOWN: u64 = 9;
const F_SETSIG: u64 = 10;
const F_GETSIG: u64 = 11;
const F_OFD_GETLK: u64 = 36;
const F_OFD_SETLK: u64 = 37;
const F_OFD_SETLKW: u64 = 38;
const F_DUPFD_CLOEXEC: u64 = 1030;
const F_SETPIPE_SZ: u64 = 1031;
const F_GETPIPE_SZ: u64 = 1032;
const FD_CLOEXEC: u64 = 1;

pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> Result {
    let f = fd::get(fd)?;
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            Ok(fd::install_from(arg as u32 as u64, f, cmd == F_DUPFD_CLOEXEC)? as i64)
        }
        F_GETFD => Ok(if fd::cloexec(fd)? {
            FD_CLOEXEC as i64
        } else {
            0
        }),
        F_SETFD => {
            fd::set_cloexec(fd, arg & FD_CLOEXEC != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(f.flags() as i64),
        _ if f.is_path() => Err(Errno::EBADF),
        F_SETFL => {
            f.set_status_flags(arg as u32);
            Ok(0)
        }
        F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW => {
            record_lock(&f, cmd, arg)
        }
        F_SETOWN | F_SETSIG => Ok(0),
        F_GETOWN | F_GETSIG => Ok(0),
        F_GETPIPE_SZ | F_SETPIPE_SZ => match &f.kind {
            FileKind::Pipe(end) if cmd == F_GETPIPE_SZ => Ok(end.pipe.capacity() as i64),
            FileKind::Pipe(end) => Ok(end.pipe.set_capacity(arg as u32 as u64)? as i64),
            _ => Err(Errno::EBADF),
        },
        _ => Err(Errno::EINVAL),
    }
}

/// `struct flock`.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Flock {
    ltype: i16,
    whence: i16,
    _pad: u32,
    start: i64,
    len: i64,
    pid: i32,
    _pad2: u32,
}

const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;

/// Record locks. One process cannot conflict with its own locks, so every
/// lock is granted at once and F_GETLK always finds the range free; only
/// the arguments are checked, as Linux checks them. (Conflicts between
/// open file descriptions — OFD locks — and between processes come with
/// fork.)
fn record_lock(f: &OpenFile, cmd: u64, arg: u64) -> Result {
    let mut fl: Flock = uaccess::read(arg)?;
    let ofd = matches!(cmd, F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW);
    if ofd && fl.pid != 0 {
        return Err(Errno::EINVAL);
    }
    let base = match fl.whence {
        0 => 0,
        1 => f.pos() as i64,
        2 => f.attr().size as i64,
        _ => return Err(Errno::EINVAL),
    };
    let start = base.checked_add(fl.start).ok_or(Errno::EOVERFLOW)?;
    if start < 0 || (fl.len < 0 && start.checked_add(fl.len).is_none_or(|s| s < 0)) {
        return Err(Errno::EINVAL);
    }
    match cmd {
        F_GETLK | F_OFD_GETLK => {
            if fl.ltype != F_RDLCK && fl.ltype != F_WRLCK {
                return Err(Errno::EINVAL);
            }
            fl.ltype = F_UNLCK;
            uaccess::write(arg, &fl)?;
            Ok(0)
        }
        _ => match fl.ltype {
            F_RDLCK => f.check_read().map(|_| 0),
            F_WRLCK => f.check_write().map(|_| 0),
            F_UNLCK => Ok(0),
            _ => Err(Errno::EINVAL),
        },
    }
}

const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
const LOCK_UN: u64 = 8;

/// flock: granted at once, as record locks are (see record_lock).
pub fn flock(fd: u64, op: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    match op & !LOCK_NB {
        LOCK_SH | LOCK_EX | LOCK_UN => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

const FIONREAD: u64 = 0x541b;
const FIONBIO: u64 = 0x5421;
const FIONCLEX: u64 = 0x5450;
const FIOCLEX: u64 = 0x5451;
const FIOASYNC: u64 = 0x5452;

pub fn ioctl(fd: u64, req: u64, arg: u64) -> Result {
    let f = fd::get(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    let set_flag = |flag: u32| -> Result {
        let on: i32 = uaccess::read(arg)?;
        let flags = f.flags();
        f.set_status_flags(if on != 0 { flags | flag } else { flags & !flag });
        Ok(0)
    };
    match req {
        FIOCLEX | FIONCLEX => {
            fd::set_cloexec(fd, req == FIOCLEX)?;
            Ok(0)
        }
        FIONBIO => set_flag(O_NONBLOCK),
        FIOASYNC => set_flag(crate::fd::O_ASYNC),
        _ => match &f.kind {
            FileKind::Console => super::console::ioctl(req, arg),
            FileKind::Socket(s) if req == FIONREAD => {
                uaccess::write(arg, &(s.readable_bytes().min(i32::MAX as usize) as i32))?;
                Ok(0)
            }
            FileKind::Pipe(end) if req == FIONREAD => {
                uaccess::write(arg, &(end.pipe.available() as i32))?;
                Ok(0)
            }
            FileKind::Node(i) if req == FIONREAD && matches!(i.kind, Kind::File) => {
                let left = i.size().saturating_sub(f.pos()).min(i32::MAX as u64);
                uaccess::write(arg, &(left as i32))?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        },
    }
}
