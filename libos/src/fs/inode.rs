//! Inodes: files, directories, symbolic links and device nodes.
//!
//! An inode is shared (`Arc`) by the directory entries naming it, the open
//! file descriptions using it and the working directory, so a file unlinked
//! while open lives on until its last user lets go, as on Linux. What never
//! changes (number, type, a symlink's target) sits outside the lock.

use super::data::FileData;
use crate::syscall::Errno;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, MutexGuard};

pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

pub const DT_CHR: u8 = 2;
pub const DT_SOCK: u8 = 12;
pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;

/// Linux's NAME_MAX.
pub const NAME_MAX: usize = 255;

/// st_dev of every inode: one file system.
pub const DEV: u64 = 0x2e;

static NEXT_INO: AtomicU64 = AtomicU64::new(2);

pub fn next_ino() -> u64 {
    NEXT_INO.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    pub fn now() -> Time {
        let ns = crate::time::realtime_ns();
        Time {
            sec: (ns / 1_000_000_000) as i64,
            nsec: (ns % 1_000_000_000) as u32,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Device {
    Null,
    Zero,
    Urandom,
}

impl Device {
    /// st_rdev as Linux encodes it (major 1, "mem" devices).
    fn rdev(self) -> u64 {
        let minor = match self {
            Device::Null => 3,
            Device::Zero => 5,
            Device::Urandom => 9,
        };
        (1 << 8) | minor
    }
}

pub enum Kind {
    File,
    Dir,
    Symlink(Box<[u8]>),
    Dev(Device),
    /// An AF_UNIX socket's name (bind); net::unix finds the listener by
    /// the inode number.
    Socket,
    /// A file whose text is made when read (/proc/meminfo).
    Proc(super::procfs::ProcFile),
}

impl Kind {
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::File | Kind::Proc(_) => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink(_) => S_IFLNK,
            Kind::Dev(_) => S_IFCHR,
            Kind::Socket => S_IFSOCK,
        }
    }

    pub fn dtype(&self) -> u8 {
        match self {
            Kind::File | Kind::Proc(_) => DT_REG,
            Kind::Dir => DT_DIR,
            Kind::Symlink(_) => DT_LNK,
            Kind::Dev(_) => DT_CHR,
            Kind::Socket => DT_SOCK,
        }
    }
}

pub struct Inode {
    pub ino: u64,
    pub kind: Kind,
    node: Mutex<Node>,
}

/// The mutable part of an inode.
pub struct Node {
    /// Permission bits (07777); the type is `Inode::kind`.
    pub perm: u32,
    pub nlink: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub body: Body,
}

pub enum Body {
    File(FileData),
    Dir(Dir),
    /// A file, directory or symlink on the 9p volume (fs::p9): its data
    /// and names live on the host; the kind says which.
    Remote(super::p9::Remote),
    None,
}

/// What stat reports, whatever the kind of open file.
#[derive(Clone, Copy, Default)]
pub struct Attr {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

impl Inode {
    fn new(kind: Kind, perm: u32, body: Body) -> Arc<Inode> {
        let now = Time::now();
        Arc::new(Inode {
            ino: next_ino(),
            kind,
            node: Mutex::new(Node {
                perm: perm & 0o7777,
                nlink: 0,
                atime: now,
                mtime: now,
                ctime: now,
                body,
            }),
        })
    }

    pub fn new_file(perm: u32, data: FileData) -> Arc<Inode> {
        Inode::new(Kind::File, perm, Body::File(data))
    }

    /// `parent` None makes a root (its `..` is itself).
    pub fn new_dir(perm: u32, parent: Option<&Arc<Inode>>) -> Arc<Inode> {
        Inode::new(
            Kind::Dir,
            perm,
            Body::Dir(Dir {
                entries: BTreeMap::new(),
                order: BTreeMap::new(),
                next_cookie: FIRST_COOKIE,
                parent: parent.map(Arc::downgrade),
                removed: false,
            }),
        )
    }

    pub fn new_symlink(target: &[u8]) -> Arc<Inode> {
        Inode::new(Kind::Symlink(target.into()), 0o777, Body::None)
    }

    pub fn new_device(dev: Device, perm: u32) -> Arc<Inode> {
        Inode::new(Kind::Dev(dev), perm, Body::None)
    }

    pub fn new_proc(file: super::procfs::ProcFile, perm: u32) -> Arc<Inode> {
        Inode::new(Kind::Proc(file), perm, Body::None)
    }

    pub fn new_socket(perm: u32) -> Arc<Inode> {
        Inode::new(Kind::Socket, perm, Body::None)
    }

    /// A file, directory or symlink of the 9p volume (`kind` from its qid).
    pub fn new_remote(kind: Kind, remote: super::p9::Remote) -> Arc<Inode> {
        Inode::new(kind, 0, Body::Remote(remote))
    }

    /// Whether this inode lives on the 9p volume.
    pub fn is_remote(&self) -> bool {
        matches!(self.lock().body, Body::Remote(_))
    }

    /// One vCPU and no preemption: the lock can only be held here if the
    /// libOS re-entered it, a bug that would otherwise spin forever.
    pub fn lock(&self) -> MutexGuard<'_, Node> {
        self.node
            .try_lock()
            .unwrap_or_else(|| panic!("fs: inode {} locked twice", self.ino))
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }

    /// stat(2) of this inode: on the volume a round trip that can fail.
    pub fn stat(&self) -> Result<Attr, Errno> {
        if self.is_remote() {
            return super::p9::attr(self);
        }
        Ok(self.attr())
    }

    /// What stat reports; on the volume an inode it cannot reach reports
    /// only its type (use [`Self::stat`] where the error matters).
    pub fn attr(&self) -> Attr {
        if self.is_remote() {
            return super::p9::attr(self).unwrap_or(Attr {
                ino: self.ino,
                mode: self.kind.type_bits(),
                ..Attr::default()
            });
        }
        let node = self.lock();
        let (size, blocks) = match (&self.kind, &node.body) {
            (_, Body::File(f)) => (f.size(), f.blocks()),
            // tmpfs's convention: 20 bytes per entry, `.` and `..` included.
            (_, Body::Dir(d)) => (20 * (d.entries.len() as u64 + 2), 0),
            (Kind::Symlink(t), _) => (t.len() as u64, 0),
            _ => (0, 0),
        };
        Attr {
            dev: DEV,
            ino: self.ino,
            mode: self.kind.type_bits() | node.perm,
            nlink: node.nlink as u64,
            uid: crate::syscall::ids::UID as u32,
            gid: crate::syscall::ids::GID as u32,
            rdev: match self.kind {
                Kind::Dev(d) => d.rdev(),
                _ => 0,
            },
            size,
            blksize: super::data::PAGE as u64,
            blocks,
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
        }
    }

    /// Look a name up in this directory. A directory that was removed has
    /// no entries, and nothing can be created in it (ENOENT, as Linux says).
    pub fn lookup(self: &Arc<Self>, name: &[u8]) -> Result<Arc<Inode>, Errno> {
        let node = self.lock();
        match &node.body {
            Body::Dir(d) => d.get(name).cloned().ok_or(Errno::ENOENT),
            Body::Remote(_) if self.is_dir() => {
                drop(node);
                super::p9::lookup(self, name)
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    /// This directory's `..`: itself for the root; ENOENT for a removed
    /// directory whose parent is gone too.
    pub fn parent(self: &Arc<Inode>) -> Result<Arc<Inode>, Errno> {
        let node = self.lock();
        let parent = match &node.body {
            Body::Dir(d) => &d.parent,
            Body::Remote(r) if self.is_dir() => &r.parent,
            _ => return Err(Errno::ENOTDIR),
        };
        match parent {
            None => Ok(self.clone()),
            Some(w) => w.upgrade().ok_or(Errno::ENOENT),
        }
    }

    pub fn is_root(&self) -> bool {
        matches!(&self.lock().body, Body::Dir(d) if d.parent.is_none())
    }
}

/// Directory positions (the file offset of an open directory): 0 is `.`,
/// 1 is `..`, then every entry gets the next cookie when it is linked, so
/// iteration order is the order of creation and a reader resumes correctly
/// however many entries were removed or added meanwhile.
const FIRST_COOKIE: u64 = 2;

pub struct Dir {
    entries: BTreeMap<Box<[u8]>, Entry>,
    order: BTreeMap<u64, Box<[u8]>>,
    next_cookie: u64,
    pub parent: Option<Weak<Inode>>,
    pub removed: bool,
}

struct Entry {
    inode: Arc<Inode>,
    cookie: u64,
}

impl Dir {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Inode>> {
        if self.removed {
            return None;
        }
        self.entries.get(name).map(|e| &e.inode)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add or replace an entry; returns the inode it replaced.
    pub fn insert(&mut self, name: &[u8], inode: Arc<Inode>) -> Option<Arc<Inode>> {
        let old = self.remove(name);
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.order.insert(cookie, name.into());
        self.entries.insert(name.into(), Entry { inode, cookie });
        old
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Inode>> {
        let e = self.entries.remove(name)?;
        self.order.remove(&e.cookie);
        Some(e.inode)
    }

    /// Entries from position `pos` on: (position of the next entry, name,
    /// inode). Positions 0 and 1 (`.` and `..`) are the caller's.
    pub fn iter_from(&self, pos: u64) -> impl Iterator<Item = (u64, &[u8], &Arc<Inode>)> {
        self.order
            .range(pos.max(FIRST_COOKIE)..)
            .filter_map(|(&cookie, name)| {
                let e = self.entries.get(name)?;
                Some((cookie + 1, &name[..], &e.inode))
            })
    }

    /// The name under which `child` is linked here (getcwd; directories
    /// have exactly one name).
    pub fn name_of(&self, child: &Arc<Inode>) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(_, e)| Arc::ptr_eq(&e.inode, child))
            .map(|(n, _)| &n[..])
    }
}

/// read_dir's consumer: (inode number, position after the entry, d_type,
/// name) -> whether it had room.
pub type EmitEntry<'a> = dyn FnMut(u64, u64, u8, &[u8]) -> bool + 'a;

/// Regular-file and directory operations for open files.
impl Inode {
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match &mut self.lock().body {
            Body::File(f) => f.read_at(off, buf),
            Body::Dir(_) => Err(Errno::EISDIR),
            // Read through the open file's fid (fd::OpenFile).
            Body::Remote(_) | Body::None => Err(Errno::EINVAL),
        }
    }

    /// Write at `off`, or at the end when `off` is None (O_APPEND: the end
    /// is read under the same lock as the write). Returns (bytes, offset
    /// after them).
    pub fn write_at(&self, off: Option<u64>, data: &[u8]) -> Result<(usize, u64), Errno> {
        let mut guard = self.lock();
        let node = &mut *guard;
        let Body::File(f) = &mut node.body else {
            return Err(Errno::EINVAL);
        };
        let at = off.unwrap_or(f.size());
        let n = f.write_at(at, data)?;
        if n > 0 {
            let now = Time::now();
            node.mtime = now;
            node.ctime = now;
        }
        Ok((n, at + n as u64))
    }

    pub fn truncate(&self, len: u64) -> Result<(), Errno> {
        if self.is_remote() {
            return super::p9::truncate(self, len);
        }
        let mut guard = self.lock();
        let node = &mut *guard;
        match &mut node.body {
            Body::File(f) => f.truncate(len)?,
            Body::Dir(_) => return Err(Errno::EISDIR),
            Body::Remote(_) | Body::None => return Err(Errno::EINVAL),
        }
        let now = Time::now();
        node.mtime = now;
        node.ctime = now;
        Ok(())
    }

    /// See FileData::map_shared.
    pub fn map_shared(&self, first: usize, count: usize, addr: u64) -> Result<(), Errno> {
        match &mut self.lock().body {
            Body::File(d) => d.map_shared(first, count, addr),
            _ => Err(Errno::ENODEV),
        }
    }

    /// See FileData::unmap_shared.
    pub fn unmap_shared(&self, addr: u64, count: usize) -> Result<(), Errno> {
        match &mut self.lock().body {
            Body::File(d) => d.unmap_shared(addr, count),
            _ => Ok(()),
        }
    }

    pub fn size(&self) -> u64 {
        match &self.lock().body {
            Body::File(f) => return f.size(),
            Body::Remote(_) => {}
            _ => return 0,
        }
        super::p9::size(self, None).unwrap_or(0)
    }

    /// fallocate: mode 0 extends the file (the new range is a hole, which
    /// reads as the zeros Linux promises); KEEP_SIZE alone has nothing to
    /// reserve; PUNCH_HOLE|KEEP_SIZE frees the range.
    pub fn fallocate(&self, mode: u64, off: u64, len: u64) -> Result<(), Errno> {
        const KEEP_SIZE: u64 = 1;
        const PUNCH_HOLE: u64 = 2;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= super::data::MAX_SIZE)
            .ok_or(Errno::EFBIG)?;
        let mut guard = self.lock();
        let node = &mut *guard;
        let f = match &mut node.body {
            Body::File(f) => f,
            // 9P2000.L has no fallocate; PostgreSQL then writes zeros.
            Body::Remote(_) => return Err(Errno::EOPNOTSUPP),
            _ => return Err(Errno::ENODEV),
        };
        match mode {
            0 => {
                if end > f.size() {
                    f.truncate(end)?;
                    node.ctime = Time::now();
                }
            }
            KEEP_SIZE => {}
            m if m == PUNCH_HOLE | KEEP_SIZE => {
                f.punch_hole(off, len)?;
                let now = Time::now();
                node.mtime = now;
                node.ctime = now;
            }
            _ => return Err(Errno::EOPNOTSUPP),
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn seek_data(&self, off: u64, hole: bool) -> Result<u64, Errno> {
        match &mut self.lock().body {
            Body::File(f) => return f.seek_data(off, hole),
            Body::Remote(_) => {}
            _ => return Err(Errno::EINVAL),
        }
        // The volume's files are all data (9P2000.L cannot tell holes).
        let size = self.stat()?.size;
        match (off < size, hole) {
            (false, _) => Err(Errno::ENXIO),
            (true, false) => Ok(off),
            (true, true) => Ok(size),
        }
    }

    pub fn set_perm(&self, perm: u32) -> Result<(), Errno> {
        if self.is_remote() {
            return super::p9::set_perm(self, perm & 0o7777);
        }
        let mut node = self.lock();
        node.perm = perm & 0o7777;
        node.ctime = Time::now();
        Ok(())
    }

    /// utimensat: None leaves a time as it is.
    pub fn set_times(&self, atime: Option<Time>, mtime: Option<Time>) -> Result<(), Errno> {
        if self.is_remote() {
            return super::p9::set_times(self, atime, mtime);
        }
        let mut node = self.lock();
        if let Some(t) = atime {
            node.atime = t;
        }
        if let Some(t) = mtime {
            node.mtime = t;
        }
        node.ctime = Time::now();
        Ok(())
    }

    /// Directory entries from position `pos`, `.` and `..` first; `emit`
    /// gets (inode number, position after the entry, d_type, name) and
    /// answers false when it has no room. Returns the position reached.
    pub fn read_dir(&self, pos: u64, emit: &mut EmitEntry) -> Result<u64, Errno> {
        let node = self.lock();
        let Body::Dir(d) = &node.body else {
            return Err(Errno::ENOTDIR);
        };
        if d.removed {
            return Err(Errno::ENOENT);
        }
        let mut pos = pos;
        if pos == 0 {
            if !emit(self.ino, 1, DT_DIR, b".") {
                return Ok(pos);
            }
            pos = 1;
        }
        if pos == 1 {
            let parent_ino = match &d.parent {
                Some(w) => w.upgrade().map_or(self.ino, |p| p.ino),
                None => self.ino,
            };
            if !emit(parent_ino, FIRST_COOKIE, DT_DIR, b"..") {
                return Ok(pos);
            }
            pos = FIRST_COOKIE;
        }
        for (next, name, child) in d.iter_from(pos) {
            if !emit(child.ino, next, child.kind.dtype(), name) {
                break;
            }
            pos = next;
        }
        Ok(pos)
    }
}
