//! Path resolution and the operations on names (create, link, unlink,
//! rename), with the checks in the order Linux makes them, so that a failing
//! call reports the errno Linux would.
//!
//! A walk resolves every component but the last, following symlinks, and
//! hands the last one to the operation (`Parent`): each operation decides
//! whether to follow a final symlink and what `.`, `..` or a trailing slash
//! mean for it.

use super::data::FileData;
use super::inode::{Body, Inode, Kind, NAME_MAX, Time};
use super::{cwd, root, umask};
use crate::syscall::Errno;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Symlinks followed in one resolution before ELOOP (Linux's MAXSYMLINKS).
const MAX_LINKS: u32 = 40;

/// The last component of a path.
#[derive(Clone, Copy)]
pub enum Last<'p> {
    Name(&'p [u8]),
    Dot,
    DotDot,
    /// The path was only slashes.
    Root,
}

/// A walked path: the directory holding the last component, and whether a
/// slash followed it (which asks for a directory).
pub struct Parent<'p> {
    pub dir: Arc<Inode>,
    pub last: Last<'p>,
    pub slash: bool,
}

/// Walk all but the last component of `path`, relative to `base` unless it
/// is absolute. `base` must be a directory.
pub fn walk<'p>(base: &Arc<Inode>, path: &'p [u8], links: &mut u32) -> Result<Parent<'p>, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let mut dir = if path[0] == b'/' {
        root()
    } else {
        base.clone()
    };
    let mut rest = path;
    loop {
        let slashes = rest.iter().take_while(|&&b| b == b'/').count();
        rest = &rest[slashes..];
        if rest.is_empty() {
            return Ok(Parent {
                dir: root(),
                last: Last::Root,
                slash: false,
            });
        }
        let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        let (comp, after) = rest.split_at(end);
        if comp.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if after.iter().all(|&b| b == b'/') {
            let last = match comp {
                b"." => Last::Dot,
                b".." => Last::DotDot,
                name => Last::Name(name),
            };
            return Ok(Parent {
                dir,
                last,
                slash: !after.is_empty(),
            });
        }
        dir = step(&dir, comp, links)?;
        rest = after;
    }
}

/// One intermediate component: it must end up (through symlinks) a directory.
fn step(dir: &Arc<Inode>, comp: &[u8], links: &mut u32) -> Result<Arc<Inode>, Errno> {
    let mut next = match comp {
        b"." => return Ok(dir.clone()),
        b".." => return dir.parent(),
        name => dir.lookup(name)?,
    };
    if let Kind::Symlink(target) = &next.kind {
        let to = follow_link(dir, target, links)?;
        next = to;
    }
    if next.is_dir() {
        Ok(next)
    } else {
        Err(Errno::ENOTDIR)
    }
}

/// A symlink's target resolves relative to the directory holding the link.
fn follow_link(dir: &Arc<Inode>, target: &[u8], links: &mut u32) -> Result<Arc<Inode>, Errno> {
    *links += 1;
    if *links > MAX_LINKS {
        return Err(Errno::ELOOP);
    }
    resolve_with(dir, target, true, links)
}

fn resolve_with(
    base: &Arc<Inode>,
    path: &[u8],
    follow: bool,
    links: &mut u32,
) -> Result<Arc<Inode>, Errno> {
    let p = walk(base, path, links)?;
    finish(p, follow, links)
}

/// Resolve the last component; a trailing slash follows a final symlink
/// even when the caller would not, and asks for a directory.
fn finish(p: Parent, follow: bool, links: &mut u32) -> Result<Arc<Inode>, Errno> {
    let mut node = match p.last {
        Last::Root | Last::Dot => p.dir.clone(),
        Last::DotDot => p.dir.parent()?,
        Last::Name(n) => p.dir.lookup(n)?,
    };
    if let Kind::Symlink(target) = &node.kind
        && (follow || p.slash)
    {
        let to = follow_link(&p.dir, target, links)?;
        node = to;
    }
    if p.slash && !node.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    Ok(node)
}

/// The inode `path` names; `follow` says whether a final symlink is followed.
pub fn resolve(base: &Arc<Inode>, path: &[u8], follow: bool) -> Result<Arc<Inode>, Errno> {
    resolve_with(base, path, follow, &mut 0)
}

/// What open(2) asks for, already reduced to what matters here.
#[derive(Clone, Copy, Default)]
pub struct OpenHow {
    pub create: bool,
    pub excl: bool,
    pub trunc: bool,
    pub directory: bool,
    pub nofollow: bool,
    /// O_PATH: no access checks, the inode itself (even a symlink).
    pub path_only: bool,
    pub write: bool,
    /// Mode for a created file, before the umask.
    pub mode: u32,
}

pub fn open(base: &Arc<Inode>, path: &[u8], how: &OpenHow) -> Result<Arc<Inode>, Errno> {
    open_with(base, path, how, &mut 0)
}

fn open_with(
    base: &Arc<Inode>,
    path: &[u8],
    how: &OpenHow,
    links: &mut u32,
) -> Result<Arc<Inode>, Errno> {
    let p = walk(base, path, links)?;
    let slash = p.slash;
    let (node, created) = match p.last {
        Last::Name(name) => {
            if how.create && slash {
                return Err(Errno::EISDIR);
            }
            match p.dir.lookup(name) {
                Ok(node) => {
                    // O_CREAT|O_EXCL never follows; a trailing slash always does.
                    let follow = slash || !(how.nofollow || (how.create && how.excl));
                    if let Kind::Symlink(target) = &node.kind
                        && follow
                    {
                        *links += 1;
                        if *links > MAX_LINKS {
                            return Err(Errno::ELOOP);
                        }
                        let how = OpenHow {
                            directory: how.directory || slash,
                            ..*how
                        };
                        return open_with(&p.dir, target, &how, links);
                    }
                    (node, false)
                }
                Err(Errno::ENOENT) if how.create => {
                    let node = Inode::new_file(how.mode & !umask(), FileData::default());
                    link_into(&p.dir, name, &node)?;
                    (node, true)
                }
                Err(e) => return Err(e),
            }
        }
        _ => (finish(p, true, links)?, false),
    };
    if how.create && how.excl && !created {
        return Err(Errno::EEXIST);
    }
    if how.create && node.is_dir() {
        return Err(Errno::EISDIR);
    }
    if (how.directory || slash) && !node.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if how.path_only {
        return Ok(node);
    }
    match node.kind {
        Kind::Symlink(_) => return Err(Errno::ELOOP),
        Kind::Dir if how.write || how.trunc => return Err(Errno::EISDIR),
        Kind::File if how.trunc && !created => {
            let mut n = node.lock();
            if let Body::File(f) = &mut n.body
                && f.size() != 0
            {
                f.truncate(0)?;
            }
            let now = Time::now();
            n.mtime = now;
            n.ctime = now;
        }
        _ => {}
    }
    Ok(node)
}

/// Link `child` into `dir` under `name`, which must be free, keeping link
/// counts as Linux does (a directory counts its `.` and each child's `..`).
pub fn link_into(dir: &Arc<Inode>, name: &[u8], child: &Arc<Inode>) -> Result<(), Errno> {
    let now = Time::now();
    let child_is_dir = child.is_dir();
    {
        let mut guard = dir.lock();
        let node = &mut *guard;
        let Body::Dir(d) = &mut node.body else {
            return Err(Errno::ENOTDIR);
        };
        if d.removed {
            return Err(Errno::ENOENT);
        }
        if d.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        d.insert(name, child.clone());
        if child_is_dir {
            node.nlink += 1;
        }
        node.mtime = now;
        node.ctime = now;
    }
    let mut guard = child.lock();
    let node = &mut *guard;
    if let Body::Dir(d) = &mut node.body {
        d.parent = Some(Arc::downgrade(dir));
        node.nlink = 2;
    } else {
        node.nlink += 1;
    }
    node.ctime = now;
    Ok(())
}

/// Remove `name` from `dir` and drop one link of what it named; a
/// directory dies (it can no longer gain entries).
fn unlink_from(dir: &Arc<Inode>, name: &[u8]) -> Option<Arc<Inode>> {
    let now = Time::now();
    let child = {
        let mut guard = dir.lock();
        let node = &mut *guard;
        let Body::Dir(d) = &mut node.body else {
            return None;
        };
        let child = d.remove(name)?;
        if child.is_dir() {
            node.nlink -= 1;
        }
        node.mtime = now;
        node.ctime = now;
        child
    };
    drop_link(&child, now);
    Some(child)
}

fn drop_link(child: &Arc<Inode>, now: Time) {
    let mut guard = child.lock();
    let node = &mut *guard;
    if let Body::Dir(d) = &mut node.body {
        d.removed = true;
        node.nlink = 0;
    } else {
        node.nlink = node.nlink.saturating_sub(1);
    }
    node.ctime = now;
}

/// The name a create-type call (mkdir, symlink, link, mknod) makes: `.`,
/// `..` and `/` exist already; a trailing slash is only for mkdir.
fn new_name<'p>(p: &Parent<'p>, dir_ok: bool) -> Result<&'p [u8], Errno> {
    let Last::Name(name) = p.last else {
        return Err(Errno::EEXIST);
    };
    match p.dir.lookup(name) {
        Ok(_) => Err(Errno::EEXIST),
        Err(Errno::ENOENT) if p.slash && !dir_ok => Err(Errno::ENOENT),
        Err(Errno::ENOENT) => Ok(name),
        Err(e) => Err(e),
    }
}

pub fn mkdir(base: &Arc<Inode>, path: &[u8], mode: u32) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, true)?;
    let dir = Inode::new_dir(mode & 0o1777 & !umask(), Some(&p.dir));
    link_into(&p.dir, name, &dir)
}

/// mknod of a regular file (the only kind this file system makes that way).
pub fn mknod_file(base: &Arc<Inode>, path: &[u8], mode: u32) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    let file = Inode::new_file(mode & !umask(), FileData::default());
    link_into(&p.dir, name, &file)
}

pub fn symlink(target: &[u8], base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    link_into(&p.dir, name, &Inode::new_symlink(target))
}

/// A new name for `old` (already resolved by the caller).
pub fn link(old: &Arc<Inode>, base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    if old.is_dir() {
        return Err(Errno::EPERM);
    }
    if old.lock().nlink == 0 {
        return Err(Errno::ENOENT);
    }
    link_into(&p.dir, name, old)
}

pub fn unlink(base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let Last::Name(name) = p.last else {
        return Err(Errno::EISDIR);
    };
    let node = p.dir.lookup(name)?;
    if node.is_dir() {
        return Err(Errno::EISDIR);
    }
    if p.slash {
        return Err(Errno::ENOTDIR);
    }
    unlink_from(&p.dir, name);
    Ok(())
}

pub fn rmdir(base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = match p.last {
        Last::Name(n) => n,
        Last::Dot => return Err(Errno::EINVAL),
        Last::DotDot => return Err(Errno::ENOTEMPTY),
        Last::Root => return Err(Errno::EBUSY),
    };
    let node = p.dir.lookup(name)?;
    if !node.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if !dir_is_empty(&node) {
        return Err(Errno::ENOTEMPTY);
    }
    unlink_from(&p.dir, name);
    Ok(())
}

fn dir_is_empty(dir: &Inode) -> bool {
    matches!(&dir.lock().body, Body::Dir(d) if d.is_empty())
}

/// Whether `a` is `d` or one of its ancestors.
fn is_ancestor(a: &Arc<Inode>, d: &Arc<Inode>) -> bool {
    let mut cur = d.clone();
    loop {
        if Arc::ptr_eq(&cur, a) {
            return true;
        }
        if cur.is_root() {
            return false;
        }
        match cur.parent() {
            Ok(p) => cur = p,
            Err(_) => return false,
        }
    }
}

pub const RENAME_NOREPLACE: u64 = 1;
pub const RENAME_EXCHANGE: u64 = 2;
pub const RENAME_WHITEOUT: u64 = 4;

pub fn rename(
    obase: &Arc<Inode>,
    opath: &[u8],
    nbase: &Arc<Inode>,
    npath: &[u8],
    flags: u64,
) -> Result<(), Errno> {
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
        || flags & RENAME_WHITEOUT != 0
        || flags & (RENAME_NOREPLACE | RENAME_EXCHANGE) == RENAME_NOREPLACE | RENAME_EXCHANGE
    {
        return Err(Errno::EINVAL);
    }
    let exchange = flags & RENAME_EXCHANGE != 0;
    let op = walk(obase, opath, &mut 0)?;
    let np = walk(nbase, npath, &mut 0)?;
    let Last::Name(oname) = op.last else {
        return Err(Errno::EBUSY);
    };
    let Last::Name(nname) = np.last else {
        return Err(if flags & RENAME_NOREPLACE != 0 {
            Errno::EEXIST
        } else {
            Errno::EBUSY
        });
    };
    let old = op.dir.lookup(oname)?;
    let new = match np.dir.lookup(nname) {
        Ok(n) => Some(n),
        Err(Errno::ENOENT) => None,
        Err(e) => return Err(e),
    };
    if flags & RENAME_NOREPLACE != 0 && new.is_some() {
        return Err(Errno::EEXIST);
    }
    if exchange && new.is_none() {
        return Err(Errno::ENOENT);
    }
    if exchange && np.slash && new.as_ref().is_some_and(|n| !n.is_dir()) {
        return Err(Errno::ENOTDIR);
    }
    if !old.is_dir() && (op.slash || (!exchange && np.slash)) {
        return Err(Errno::ENOTDIR);
    }
    if old.is_dir() && is_ancestor(&old, &np.dir) {
        return Err(Errno::EINVAL);
    }
    if let Some(new) = &new
        && new.is_dir()
        && is_ancestor(new, &op.dir)
    {
        return Err(if exchange {
            Errno::EINVAL
        } else {
            Errno::ENOTEMPTY
        });
    }
    if let Some(new) = &new {
        if Arc::ptr_eq(&old, new) {
            return Ok(());
        }
        if !exchange {
            match (old.is_dir(), new.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !dir_is_empty(new) => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
    }
    if matches!(&np.dir.lock().body, Body::Dir(d) if d.removed) {
        return Err(Errno::ENOENT);
    }
    let now = Time::now();
    // Nothing else runs between these steps (one vCPU, no preemption), so
    // the rename is atomic for the program.
    let moved = take_entry(&op.dir, oname, now);
    match (exchange, new) {
        (true, Some(new)) => {
            let other = take_entry(&np.dir, nname, now);
            put_entry(&np.dir, nname, moved, now);
            put_entry(&op.dir, oname, other, now);
            touch_ctime(&new, now);
        }
        (_, replaced) => {
            if replaced.is_some() {
                unlink_from(&np.dir, nname);
            }
            put_entry(&np.dir, nname, moved, now);
        }
    }
    touch_ctime(&old, now);
    Ok(())
}

/// Remove an entry without dropping a link (it is about to be put back
/// elsewhere by rename).
fn take_entry(dir: &Arc<Inode>, name: &[u8], now: Time) -> Arc<Inode> {
    let mut guard = dir.lock();
    let node = &mut *guard;
    let Body::Dir(d) = &mut node.body else {
        unreachable!("rename's parents are directories");
    };
    let child = d.remove(name).expect("rename looked the entry up");
    if child.is_dir() {
        node.nlink -= 1;
    }
    node.mtime = now;
    node.ctime = now;
    child
}

fn put_entry(dir: &Arc<Inode>, name: &[u8], child: Arc<Inode>, now: Time) {
    {
        let mut guard = dir.lock();
        let node = &mut *guard;
        let Body::Dir(d) = &mut node.body else {
            unreachable!("rename's parents are directories");
        };
        if child.is_dir() {
            node.nlink += 1;
        }
        d.insert(name, child.clone());
        node.mtime = now;
        node.ctime = now;
    }
    if let Body::Dir(d) = &mut child.lock().body {
        d.parent = Some(Arc::downgrade(dir));
    }
}

fn touch_ctime(inode: &Inode, now: Time) {
    inode.lock().ctime = now;
}

/// The working directory's absolute path; ENOENT once it was removed.
pub fn getcwd() -> Result<Vec<u8>, Errno> {
    dir_path(cwd())
}

/// An absolute path naming `inode` (what /proc/self/fd/N links to). A
/// directory has one name, found upwards; a file is looked for from the
/// root, and an unlinked one has none (ENOENT).
pub fn path_of(inode: &Arc<Inode>) -> Result<Vec<u8>, Errno> {
    if inode.is_dir() {
        return dir_path(inode.clone());
    }
    fn find(dir: &Arc<Inode>, want: &Arc<Inode>, path: &mut Vec<u8>) -> bool {
        let children: Vec<(Vec<u8>, Arc<Inode>)> = match &dir.lock().body {
            Body::Dir(d) => d
                .iter_from(0)
                .map(|(_, n, i)| (n.to_vec(), i.clone()))
                .collect(),
            _ => return false,
        };
        for (name, child) in children {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&name);
            if Arc::ptr_eq(&child, want) || (child.is_dir() && find(&child, want, path)) {
                return true;
            }
            path.truncate(len);
        }
        false
    }
    let mut path = Vec::new();
    if find(&super::root(), inode, &mut path) {
        Ok(path)
    } else {
        Err(Errno::ENOENT)
    }
}

fn dir_path(start: Arc<Inode>) -> Result<Vec<u8>, Errno> {
    let mut cur = start;
    let mut names: Vec<Vec<u8>> = Vec::new();
    loop {
        let parent = {
            let node = cur.lock();
            let Body::Dir(d) = &node.body else {
                return Err(Errno::ENOTDIR);
            };
            if d.removed {
                return Err(Errno::ENOENT);
            }
            match &d.parent {
                None => break,
                Some(w) => w.upgrade().ok_or(Errno::ENOENT)?,
            }
        };
        let name = match &parent.lock().body {
            Body::Dir(d) => d.name_of(&cur).ok_or(Errno::ENOENT)?.to_vec(),
            _ => return Err(Errno::ENOENT),
        };
        names.push(name);
        cur = parent;
    }
    let mut path = Vec::new();
    for name in names.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    Ok(path)
}
