//! File descriptors: a table of numbers naming shared open file
//! descriptions.
//!
//! As on Linux, dup() and friends make a second number for the same
//! description, so the file offset and the status flags (O_APPEND,
//! O_NONBLOCK) are shared, while FD_CLOEXEC belongs to the number. The table
//! holds `Arc`s, so fork can later copy it by cloning them.

use crate::config::MAX_FDS;
use crate::fs::inode::{Attr, Device, Inode, Kind, S_IFIFO};
use crate::fs::p9::Handle;
use crate::fs::pipe::PipeEnd;
use crate::fs::procfs::Generated;
use crate::syscall::{Errno, console};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

pub const O_ACCMODE: u32 = 0o3;
pub const O_RDONLY: u32 = 0o0;
pub const O_WRONLY: u32 = 0o1;
pub const O_RDWR: u32 = 0o2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_NOCTTY: u32 = 0o400;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_ASYNC: u32 = 0o20000;
pub const O_DIRECT: u32 = 0o40000;
pub const O_LARGEFILE: u32 = 0o100000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_NOFOLLOW: u32 = 0o400000;
pub const O_NOATIME: u32 = 0o1000000;
pub const O_CLOEXEC: u32 = 0o2000000;
pub const O_PATH: u32 = 0o10000000;

/// The status flags F_SETFL may change (Linux's SETFL_MASK).
const SETFL_MASK: u32 = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;

/// Linux's MAX_RW_COUNT: one read or write moves at most this much.
pub const MAX_RW: u64 = 0x7fff_f000;

pub const SEEK_SET: u64 = 0;
pub const SEEK_CUR: u64 = 1;
pub const SEEK_END: u64 = 2;
pub const SEEK_DATA: u64 = 3;
pub const SEEK_HOLE: u64 = 4;

const SIGPIPE: u64 = 13;

/// poll(2) event bits (the same values as EPOLLIN and friends).
pub const POLLIN: u32 = 0x001;
pub const POLLOUT: u32 = 0x004;
pub const POLLERR: u32 = 0x008;
pub const POLLHUP: u32 = 0x010;
/// The fd is not open.
pub const POLLNVAL: u32 = 0x020;
pub const POLLRDNORM: u32 = 0x040;
pub const POLLWRNORM: u32 = 0x100;

pub enum FileKind {
    /// The VM's console (fds 0, 1 and 2 at start).
    Console,
    /// A file, directory, device or (with O_PATH) symlink.
    Node(Arc<Inode>),
    Pipe(PipeEnd),
    /// signalfd(2): reads the pending signals of its mask.
    SignalFd(AtomicU64),
    /// eventfd(2): a counter.
    EventFd {
        count: AtomicU64,
        semaphore: bool,
    },
    /// epoll_create(2): the interest list.
    Epoll(crate::syscall::poll::Interest),
    /// socket(2), socketpair(2), accept(2).
    Socket(crate::net::Socket),
    /// A proc file (/proc/meminfo): its text is made when read.
    Generated(Generated),
}

/// An open file description.
pub struct OpenFile {
    pub kind: FileKind,
    /// A file or directory on the volume: its own open fid there, through
    /// which it is read, written, listed and synced.
    remote: Option<Handle>,
    /// The access mode and status flags, as F_GETFL reports them.
    flags: AtomicU32,
    /// The file offset; for a directory, the position of the next entry.
    pos: AtomicU64,
}

impl OpenFile {
    pub fn new(kind: FileKind, flags: u32) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            kind,
            remote: None,
            flags: AtomicU32::new(flags),
            pos: AtomicU64::new(0),
        })
    }

    /// A file or directory of the volume, open through `handle`.
    pub fn new_remote(inode: Arc<Inode>, handle: Handle, flags: u32) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            kind: FileKind::Node(inode),
            remote: Some(handle),
            flags: AtomicU32::new(flags),
            pos: AtomicU64::new(0),
        })
    }

    /// The volume's open fid of this description, if it has one.
    pub fn remote(&self) -> Option<&Handle> {
        self.remote.as_ref()
    }

    fn node_read_at(&self, inode: &Inode, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match &self.remote {
            Some(h) => h.read_at(off, buf),
            None => inode.read_at(off, buf),
        }
    }

    /// `explicit`: `off` is the caller's (pwrite), not this description's.
    fn node_write_at(
        &self,
        inode: &Inode,
        off: Option<u64>,
        data: &[u8],
        explicit: bool,
    ) -> Result<(usize, u64), Errno> {
        match &self.remote {
            Some(h) => h.write_at(inode, off, data, explicit),
            None => inode.write_at(off, data),
        }
    }

    fn size_of(&self, inode: &Inode) -> Result<u64, Errno> {
        match &self.remote {
            Some(h) => crate::fs::p9::size(inode, Some(h)),
            None => Ok(inode.size()),
        }
    }

    /// fstat: on the volume a round trip, which can fail.
    pub fn stat(&self) -> Result<Attr, Errno> {
        match (&self.remote, &self.kind) {
            (Some(h), FileKind::Node(inode)) => h.attr(inode),
            _ => Ok(self.attr()),
        }
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// F_SETFL: the access mode and creation flags stay as they are.
    pub fn set_status_flags(&self, new: u32) {
        let old = self.flags();
        self.flags
            .store((old & !SETFL_MASK) | (new & SETFL_MASK), Ordering::Relaxed);
    }

    pub fn is_path(&self) -> bool {
        self.flags() & O_PATH != 0
    }

    pub fn readable(&self) -> bool {
        !self.is_path() && matches!(self.flags() & O_ACCMODE, O_RDONLY | O_RDWR)
    }

    pub fn writable(&self) -> bool {
        !self.is_path() && matches!(self.flags() & O_ACCMODE, O_WRONLY | O_RDWR)
    }

    pub fn nonblocking(&self) -> bool {
        self.flags() & O_NONBLOCK != 0
    }

    pub fn inode(&self) -> Option<&Arc<Inode>> {
        match &self.kind {
            FileKind::Node(i) => Some(i),
            FileKind::Generated(g) => Some(&g.inode),
            _ => None,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }

    pub fn set_pos(&self, pos: u64) {
        self.pos.store(pos, Ordering::Relaxed)
    }

    pub fn check_read(&self) -> Result<(), Errno> {
        if self.readable() {
            Ok(())
        } else {
            Err(Errno::EBADF)
        }
    }

    pub fn check_write(&self) -> Result<(), Errno> {
        if self.writable() {
            Ok(())
        } else {
            Err(Errno::EBADF)
        }
    }

    /// read(2) at the file offset.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.check_read()?;
        match &self.kind {
            FileKind::Console => Ok(console::read(buf)),
            FileKind::Pipe(end) => read_pipe(end, buf, self.nonblocking()),
            FileKind::SignalFd(mask) => {
                crate::syscall::poll::read_signalfd(mask.load(Ordering::Relaxed), buf)
            }
            FileKind::EventFd { count, semaphore } => {
                crate::syscall::poll::read_eventfd(count, *semaphore, buf)
            }
            FileKind::Epoll(_) => Err(Errno::EINVAL),
            FileKind::Socket(s) => s.recv(buf, false, self.nonblocking()),
            FileKind::Generated(g) => {
                let pos = self.pos();
                let n = g.read_at(pos, buf);
                self.set_pos(pos + n as u64);
                Ok(n)
            }
            FileKind::Node(inode) => match inode.kind {
                Kind::Dev(dev) => Ok(read_device(dev, buf)),
                _ => {
                    let pos = self.pos();
                    let n = self.node_read_at(inode, pos, buf)?;
                    self.set_pos(pos + n as u64);
                    Ok(n)
                }
            },
        }
    }

    /// write(2) at the file offset (at the end with O_APPEND).
    pub fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        self.check_write()?;
        match &self.kind {
            FileKind::Console => Ok(console::write(buf)),
            FileKind::Pipe(end) => pipe_write(end, buf, self.nonblocking()),
            FileKind::EventFd { count, .. } => crate::syscall::poll::write_eventfd(count, buf),
            FileKind::SignalFd(_) | FileKind::Epoll(_) => Err(Errno::EINVAL),
            // Never opened for writing (openat refuses it).
            FileKind::Generated(_) => Err(Errno::EBADF),
            FileKind::Socket(s) => s.send(buf, self.nonblocking(), false),
            FileKind::Node(inode) => match inode.kind {
                Kind::Dev(_) => Ok(buf.len()),
                _ => {
                    let at = (self.flags() & O_APPEND == 0).then(|| self.pos());
                    let (n, end) = self.node_write_at(inode, at, buf, false)?;
                    self.set_pos(end);
                    Ok(n)
                }
            },
        }
    }

    /// pread(2): at `off`, leaving the file offset alone.
    pub fn pread(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        self.check_read()?;
        match &self.kind {
            FileKind::Node(inode) => match inode.kind {
                Kind::Dev(dev) => Ok(read_device(dev, buf)),
                _ => self.node_read_at(inode, off, buf),
            },
            FileKind::Generated(g) => Ok(g.read_at(off, buf)),
            _ => Err(Errno::ESPIPE),
        }
    }

    /// pwrite(2). With O_APPEND Linux appends whatever the offset says.
    pub fn pwrite(&self, buf: &[u8], off: u64) -> Result<usize, Errno> {
        self.check_write()?;
        match &self.kind {
            FileKind::Node(inode) => match inode.kind {
                Kind::Dev(_) => Ok(buf.len()),
                _ => {
                    let at = (self.flags() & O_APPEND == 0).then_some(off);
                    Ok(self.node_write_at(inode, at, buf, true)?.0)
                }
            },
            _ => Err(Errno::ESPIPE),
        }
    }

    pub fn seek(&self, off: i64, whence: u64) -> Result<u64, Errno> {
        let inode = match &self.kind {
            FileKind::Node(i) => i,
            FileKind::Generated(g) => {
                let new = g.seek(self.pos(), off, whence)?;
                self.set_pos(new);
                return Ok(new);
            }
            _ => return Err(Errno::ESPIPE),
        };
        if whence > SEEK_HOLE {
            return Err(Errno::EINVAL);
        }
        let new = match inode.kind {
            // Linux's null and zero devices always answer 0.
            Kind::Dev(_) => 0,
            Kind::Dir => match whence {
                SEEK_SET => off,
                SEEK_CUR => (self.pos() as i64).checked_add(off).ok_or(Errno::EINVAL)?,
                _ => return Err(Errno::EINVAL),
            },
            _ => match whence {
                SEEK_SET => off,
                SEEK_CUR => (self.pos() as i64).checked_add(off).ok_or(Errno::EINVAL)?,
                SEEK_END => (self.size_of(inode)? as i64)
                    .checked_add(off)
                    .ok_or(Errno::EINVAL)?,
                SEEK_DATA | SEEK_HOLE => {
                    if off < 0 {
                        return Err(Errno::ENXIO);
                    }
                    inode.seek_data(off as u64, whence == SEEK_HOLE)? as i64
                }
                _ => return Err(Errno::EINVAL),
            },
        };
        if new < 0 {
            return Err(Errno::EINVAL);
        }
        self.set_pos(new as u64);
        Ok(new as u64)
    }

    pub fn attr(&self) -> Attr {
        match &self.kind {
            FileKind::Console => console::attr(),
            FileKind::Node(inode) => match &self.remote {
                Some(h) => h.attr(inode).unwrap_or_else(|_| inode.attr()),
                None => inode.attr(),
            },
            FileKind::Generated(g) => g.inode.attr(),
            FileKind::Pipe(end) => Attr {
                dev: crate::fs::inode::DEV,
                ino: end.pipe.ino,
                mode: S_IFIFO | 0o600,
                nlink: 1,
                uid: crate::syscall::ids::UID as u32,
                gid: crate::syscall::ids::GID as u32,
                blksize: 4096,
                ..Attr::default()
            },
            FileKind::Socket(_) => Attr {
                dev: crate::fs::inode::DEV,
                ino: self as *const OpenFile as u64 & 0xffff_ffff,
                mode: crate::fs::inode::S_IFSOCK | 0o777,
                nlink: 1,
                uid: crate::syscall::ids::UID as u32,
                gid: crate::syscall::ids::GID as u32,
                blksize: 4096,
                ..Attr::default()
            },
            // Linux's anonymous inodes: mode 0600, no type bits.
            FileKind::SignalFd(_) | FileKind::EventFd { .. } | FileKind::Epoll(_) => Attr {
                dev: crate::fs::inode::DEV,
                ino: 0,
                mode: 0o600,
                nlink: 1,
                uid: crate::syscall::ids::UID as u32,
                gid: crate::syscall::ids::GID as u32,
                blksize: 4096,
                ..Attr::default()
            },
        }
    }

    /// What poll(2) would report for this description now.
    /// A TCP connection: a client's session, for the runner's idle timer
    /// (`proc::client_wait`).
    pub fn is_tcp_connection(&self) -> bool {
        matches!(&self.kind, FileKind::Socket(crate::net::Socket::Tcp(t)) if t.connection())
    }

    pub fn poll_events(&self) -> u32 {
        match &self.kind {
            // A console read blocks in the runner until input or EOF.
            FileKind::Console | FileKind::Node(_) | FileKind::Generated(_) => POLLIN | POLLOUT,
            FileKind::Pipe(end) => end.pipe.poll_events(end.write),
            FileKind::SignalFd(mask) => {
                if crate::syscall::signal::signalfd_ready(mask.load(Ordering::Relaxed)) != 0 {
                    POLLIN
                } else {
                    0
                }
            }
            FileKind::EventFd { count, .. } => {
                let c = count.load(Ordering::Relaxed);
                (if c > 0 { POLLIN } else { 0 }) | (if c < u64::MAX - 1 { POLLOUT } else { 0 })
            }
            FileKind::Socket(s) => s.poll_events(),
            FileKind::Epoll(set) => {
                if set.any_ready() {
                    POLLIN
                } else {
                    0
                }
            }
        }
    }
}

fn read_device(dev: Device, buf: &mut [u8]) -> usize {
    match dev {
        Device::Null => 0,
        Device::Zero => {
            buf.fill(0);
            buf.len()
        }
        Device::Urandom => {
            crate::syscall::misc::fill_random(buf);
            buf.len()
        }
    }
}

/// A blocking read of an empty pipe waits for another process to write or
/// close; a lone process would wait for ever, so it gets EAGAIN (pipe.rs).
fn read_pipe(end: &PipeEnd, buf: &mut [u8], nonblocking: bool) -> Result<usize, Errno> {
    if nonblocking || crate::proc::alone() {
        return end.read(buf, nonblocking);
    }
    crate::syscall::poll::wait_for(None, || {
        Ok((end.pipe.poll_events(false) & (POLLIN | POLLHUP) != 0) as i64)
    })?;
    end.read(buf, true)
}

/// Writing to a pipe nobody reads raises SIGPIPE, then fails with EPIPE.
fn pipe_write(end: &PipeEnd, buf: &[u8], nonblocking: bool) -> Result<usize, Errno> {
    let r = end.write(buf, nonblocking);
    if r == Err(Errno::EPIPE) {
        crate::syscall::signal::raise(SIGPIPE);
    }
    r
}

#[derive(Clone)]
pub struct Slot {
    file: Arc<OpenFile>,
    cloexec: bool,
}

/// A descriptor table: slot n is fd n; it grows on demand up to `max`.
/// What a method takes out of the table it hands back, so that the caller
/// drops it after letting go of the table's lock.
#[derive(Clone)]
pub struct Table {
    slots: Vec<Option<Slot>>,
    max: usize,
}

static TABLE: Mutex<Table> = Mutex::new(Table::new(MAX_FDS as usize));

fn table() -> spin::MutexGuard<'static, Table> {
    // As with inodes: held here means re-entered, a libOS bug.
    TABLE.try_lock().expect("fd table locked twice")
}

/// The kernel takes an `unsigned int`: only the low 32 bits count.
fn index(fd: u64) -> usize {
    fd as u32 as usize
}

impl Table {
    const fn new(max: usize) -> Table {
        Table {
            slots: Vec::new(),
            max,
        }
    }

    /// fds 0, 1 and 2 name `console`; everything else is closed.
    fn reset(&mut self, console: Arc<OpenFile>) -> Vec<Option<Slot>> {
        let old = core::mem::take(&mut self.slots);
        for _ in 0..3 {
            self.slots.push(Some(Slot {
                file: console.clone(),
                cloexec: false,
            }));
        }
        old
    }

    fn get(&self, fd: u64) -> Result<Arc<OpenFile>, Errno> {
        match self.slots.get(index(fd)) {
            Some(Some(s)) => Ok(s.file.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    fn lowest_free(&self, min: usize) -> Result<usize, Errno> {
        let found = self
            .slots
            .iter()
            .enumerate()
            .skip(min)
            .find(|(_, s)| s.is_none())
            .map(|(i, _)| i)
            .unwrap_or(self.slots.len().max(min));
        if found >= self.max {
            return Err(Errno::EMFILE);
        }
        Ok(found)
    }

    fn put(&mut self, at: usize, slot: Slot) -> Option<Slot> {
        if at >= self.slots.len() {
            self.slots.resize(at + 1, None);
        }
        self.slots[at].replace(slot)
    }

    fn free_count(&self, want: usize) -> usize {
        let holes = self.slots.iter().filter(|s| s.is_none()).count();
        let tail = self.max.saturating_sub(self.slots.len());
        (holes + tail).min(want)
    }

    fn install_from(&mut self, min: u64, file: Arc<OpenFile>, cloexec: bool) -> Result<u64, Errno> {
        if min >= self.max as u64 {
            return Err(Errno::EINVAL);
        }
        let at = self.lowest_free(min as usize)?;
        self.put(at, Slot { file, cloexec });
        Ok(at as u64)
    }

    fn install_at(
        &mut self,
        fd: u64,
        file: Arc<OpenFile>,
        cloexec: bool,
    ) -> Result<Option<Slot>, Errno> {
        if fd >= self.max as u64 {
            return Err(Errno::EBADF);
        }
        Ok(self.put(fd as usize, Slot { file, cloexec }))
    }

    fn close(&mut self, fd: u64) -> Result<Slot, Errno> {
        self.slots
            .get_mut(index(fd))
            .and_then(|s| s.take())
            .ok_or(Errno::EBADF)
    }

    fn close_range(&mut self, first: u64, last: u64, cloexec_only: bool) -> Vec<Slot> {
        let mut closed = Vec::new();
        let end = (self.slots.len() as u64).min(last.saturating_add(1)) as usize;
        for slot in self.slots.iter_mut().take(end).skip(first as usize) {
            if cloexec_only {
                if let Some(s) = slot {
                    s.cloexec = true;
                }
            } else if let Some(s) = slot.take() {
                closed.push(s);
            }
        }
        closed
    }

    fn cloexec(&self, fd: u64) -> Result<bool, Errno> {
        match self.slots.get(index(fd)) {
            Some(Some(s)) => Ok(s.cloexec),
            _ => Err(Errno::EBADF),
        }
    }

    fn set_cloexec(&mut self, fd: u64, on: bool) -> Result<(), Errno> {
        match self.slots.get_mut(index(fd)) {
            Some(Some(s)) => {
                s.cloexec = on;
                Ok(())
            }
            _ => Err(Errno::EBADF),
        }
    }
}

/// The running process's table and another's trade places (proc: a
/// process switch). What the other held it now finds in `other`.
pub fn swap_current(other: &mut Table) {
    core::mem::swap(&mut *table(), other);
}

/// A copy of the running process's table for a new process (clone): the
/// same open files, with their close-on-exec flags.
pub fn copy_current() -> Table {
    table().clone()
}

/// An empty table (a process that has exited holds one).
pub fn empty() -> Table {
    Table::new(MAX_FDS as usize)
}

/// execve: close what is marked close-on-exec; the caller drops what comes
/// back after the table's lock is gone.
pub fn close_on_exec() -> Vec<Slot> {
    let mut t = table();
    let mut closed = Vec::new();
    for slot in t.slots.iter_mut() {
        if slot.as_ref().is_some_and(|s| s.cloexec) {
            closed.extend(slot.take());
        }
    }
    closed
}

/// fds 0, 1 and 2: one console description, as a terminal login has.
pub fn init() {
    let console = OpenFile::new(FileKind::Console, O_RDWR | O_LARGEFILE);
    let old = table().reset(console);
    drop(old);
}

pub fn get(fd: u64) -> Result<Arc<OpenFile>, Errno> {
    table().get(fd)
}

/// How many more descriptors can be installed, up to `want` (open checks
/// first, as Linux reserves the number before it creates anything).
pub fn free_count(want: usize) -> usize {
    table().free_count(want)
}

/// Install at the lowest free number at or above `min`.
pub fn install_from(min: u64, file: Arc<OpenFile>, cloexec: bool) -> Result<u64, Errno> {
    table().install_from(min, file, cloexec)
}

pub fn install(file: Arc<OpenFile>, cloexec: bool) -> Result<u64, Errno> {
    install_from(0, file, cloexec)
}

/// dup2/dup3: `fd` now names `file`; what it named before is closed.
pub fn install_at(fd: u64, file: Arc<OpenFile>, cloexec: bool) -> Result<u64, Errno> {
    let old = table().install_at(fd, file, cloexec)?;
    // Dropped outside the table lock: closing a pipe end or the last name
    // of an unlinked file must not run under it.
    drop(old);
    Ok(fd)
}

pub fn close(fd: u64) -> Result<(), Errno> {
    let old = table().close(fd)?;
    drop(old);
    Ok(())
}

/// close_range: close (or with `cloexec_only`, mark close-on-exec) every
/// open fd in [first, last].
pub fn close_range(first: u64, last: u64, cloexec_only: bool) {
    let closed = table().close_range(first, last, cloexec_only);
    drop(closed);
}

pub fn cloexec(fd: u64) -> Result<bool, Errno> {
    table().cloexec(fd)
}

pub fn set_cloexec(fd: u64, on: bool) -> Result<(), Errno> {
    table().set_cloexec(fd, on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::data::FileData;
    use crate::fs::pipe;

    fn console() -> Arc<OpenFile> {
        OpenFile::new(FileKind::Console, O_RDWR)
    }

    fn table(max: usize) -> Table {
        let mut t = Table::new(max);
        t.reset(console());
        t
    }

    fn file(bytes: &[u8], flags: u32) -> Arc<OpenFile> {
        let data = FileData::borrowed(Vec::leak(bytes.to_vec()));
        OpenFile::new(FileKind::Node(Inode::new_file(0o644, data)), flags)
    }

    #[test]
    fn new_descriptors_take_the_lowest_free_number() {
        let mut t = table(16);
        assert_eq!(t.install_from(0, console(), false), Ok(3));
        t.close(1).unwrap();
        assert_eq!(t.install_from(0, console(), false), Ok(1));
        assert_eq!(t.install_from(0, console(), false), Ok(4));
    }

    #[test]
    fn f_dupfd_starts_at_its_argument() {
        let mut t = table(16);
        assert_eq!(t.install_from(10, console(), false), Ok(10));
        assert_eq!(t.install_from(10, console(), false), Ok(11));
        // The gap below is still free for plain dup.
        assert_eq!(t.install_from(0, console(), false), Ok(3));
        // At or past RLIMIT_NOFILE: EINVAL.
        assert_eq!(t.install_from(16, console(), false), Err(Errno::EINVAL));
    }

    #[test]
    fn a_full_table_is_emfile() {
        let mut t = table(5);
        assert_eq!(t.free_count(10), 2);
        t.install_from(0, console(), false).unwrap();
        t.install_from(0, console(), false).unwrap();
        assert_eq!(t.free_count(10), 0);
        assert_eq!(t.install_from(0, console(), false), Err(Errno::EMFILE));
        assert_eq!(t.install_from(4, console(), false), Err(Errno::EMFILE));
    }

    #[test]
    fn dup2_replaces_and_hands_back_the_old_description() {
        let mut t = table(16);
        let f = file(b"x", O_RDONLY);
        let old = t.install_at(1, f.clone(), true).unwrap();
        assert!(matches!(
            old.as_ref().map(|s| &s.file.kind),
            Some(FileKind::Console)
        ));
        assert!(Arc::ptr_eq(&t.get(1).unwrap(), &f));
        // Past the table: EBADF (dup2's newfd check).
        assert_eq!(t.install_at(16, f, false).err(), Some(Errno::EBADF));
        // dup2 onto a number past the end grows the table.
        assert!(t.install_at(9, console(), false).unwrap().is_none());
        assert_eq!(t.install_from(0, console(), false), Ok(3));
    }

    #[test]
    fn close_twice_is_ebadf_and_only_the_low_32_bits_name_the_fd() {
        let mut t = table(16);
        assert!(t.get((1 << 32) | 2).is_ok());
        assert!(t.close((7 << 32) | 2).is_ok());
        assert_eq!(t.close(2).err(), Some(Errno::EBADF));
        assert_eq!(t.get(2).err(), Some(Errno::EBADF));
        assert_eq!(t.get(u64::MAX).err(), Some(Errno::EBADF));
    }

    #[test]
    fn cloexec_belongs_to_the_number_not_the_description() {
        let mut t = table(16);
        let f = file(b"", O_RDONLY);
        let a = t.install_from(0, f.clone(), true).unwrap();
        let b = t.install_from(0, f, false).unwrap();
        assert_eq!(t.cloexec(a), Ok(true));
        assert_eq!(t.cloexec(b), Ok(false));
        t.set_cloexec(b, true).unwrap();
        assert_eq!(t.cloexec(b), Ok(true));
        assert_eq!(t.set_cloexec(12, true), Err(Errno::EBADF));
    }

    #[test]
    fn close_range_closes_or_marks_what_is_open() {
        let mut t = table(16);
        for _ in 0..5 {
            t.install_from(0, console(), false).unwrap();
        }
        // fds 0..=7 open; mark 6..=MAX close-on-exec.
        assert!(t.close_range(6, u64::MAX, true).is_empty());
        assert_eq!(t.cloexec(6), Ok(true));
        assert_eq!(t.cloexec(5), Ok(false));
        let closed = t.close_range(3, u32::MAX as u64, false);
        assert_eq!(closed.len(), 5);
        assert!(t.get(2).is_ok());
        assert!(t.get(3).is_err() && t.get(7).is_err());
    }

    #[test]
    fn f_setfl_changes_only_the_status_flags() {
        let f = file(b"", O_RDONLY | O_LARGEFILE);
        f.set_status_flags(O_RDWR | O_APPEND | O_NONBLOCK | O_CREAT | O_TRUNC);
        // The access mode and creation flags are not F_SETFL's to change.
        assert_eq!(f.flags(), O_RDONLY | O_LARGEFILE | O_APPEND | O_NONBLOCK);
        assert!(f.readable() && !f.writable());
        f.set_status_flags(0);
        assert_eq!(f.flags(), O_RDONLY | O_LARGEFILE);
    }

    #[test]
    fn access_mode_decides_read_and_write() {
        let ro = file(b"abc", O_RDONLY);
        let wo = file(b"abc", O_WRONLY);
        let path = file(b"abc", O_PATH | O_RDWR);
        let mut buf = [0u8; 3];
        assert_eq!(wo.read(&mut buf), Err(Errno::EBADF));
        assert_eq!(ro.write(b"x"), Err(Errno::EBADF));
        assert_eq!(path.read(&mut buf), Err(Errno::EBADF));
        assert_eq!(path.write(b"x"), Err(Errno::EBADF));
        assert_eq!(ro.read(&mut buf), Ok(3));
        assert_eq!(&buf, b"abc");
    }

    #[test]
    fn dup_shares_the_offset() {
        let f = file(b"0123456789", O_RDWR);
        let dup = f.clone();
        let mut buf = [0u8; 4];
        f.read(&mut buf).unwrap();
        assert_eq!(dup.pos(), 4);
        dup.read(&mut buf).unwrap();
        assert_eq!(&buf, b"4567");
        // pread leaves the offset alone.
        assert_eq!(f.pread(&mut buf, 0), Ok(4));
        assert_eq!(f.pos(), 8);
    }

    #[test]
    fn o_append_writes_at_the_end_whatever_the_offset() {
        let f = file(b"abc", O_RDWR | O_APPEND);
        f.set_pos(0);
        assert_eq!(f.write(b"de"), Ok(2));
        assert_eq!(f.pos(), 5);
        // pwrite with O_APPEND appends too (a Linux quirk).
        assert_eq!(f.pwrite(b"f", 0), Ok(1));
        let mut buf = [0u8; 8];
        assert_eq!(f.pread(&mut buf, 0), Ok(6));
        assert_eq!(&buf[..6], b"abcdef");
    }

    #[test]
    fn lseek_follows_linux() {
        let f = file(b"0123456789", O_RDONLY);
        assert_eq!(f.seek(-3, SEEK_END), Ok(7));
        assert_eq!(f.seek(2, SEEK_CUR), Ok(9));
        // Past the end is allowed; before the start is EINVAL and the
        // offset stays.
        assert_eq!(f.seek(100, SEEK_SET), Ok(100));
        assert_eq!(f.seek(-1, SEEK_SET), Err(Errno::EINVAL));
        assert_eq!(f.pos(), 100);
        assert_eq!(f.seek(0, 5), Err(Errno::EINVAL));
        // SEEK_DATA at or past the end: ENXIO.
        assert_eq!(f.seek(10, SEEK_DATA), Err(Errno::ENXIO));
        assert_eq!(f.seek(3, SEEK_DATA), Ok(3));
        assert_eq!(f.seek(3, SEEK_HOLE), Ok(10));
        // A pipe cannot seek.
        let (r, _w) = pipe::new();
        let p = OpenFile::new(FileKind::Pipe(r), O_RDONLY);
        assert_eq!(p.seek(0, SEEK_SET), Err(Errno::ESPIPE));
        assert_eq!(p.pread(&mut [0u8; 1], 0), Err(Errno::ESPIPE));
    }

    #[test]
    fn eventfd_readiness() {
        let ev = |c: u64| {
            OpenFile::new(
                FileKind::EventFd {
                    count: AtomicU64::new(c),
                    semaphore: false,
                },
                O_RDWR,
            )
            .poll_events()
        };
        assert_eq!(ev(0), POLLOUT);
        assert_eq!(ev(1), POLLIN | POLLOUT);
        // Writable while another 1 still fits under the maximum.
        assert_eq!(ev(u64::MAX - 2), POLLIN | POLLOUT);
        assert_eq!(ev(u64::MAX - 1), POLLIN);
    }
}
