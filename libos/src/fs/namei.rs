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
    /// open(2)'s flags as given: a file created on the volume is opened
    /// with them by the same request (fs::p9::create).
    pub flags: u32,
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
                Err(Errno::ENOENT) if how.create && p.dir.is_remote() => {
                    let opened = Some(how.flags);
                    (
                        super::p9::create(&p.dir, name, how.mode & !umask(), opened)?,
                        true,
                    )
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
        Kind::File if how.trunc && !created && node.is_remote() => node.truncate(0)?,
        // Proc files are read-only (0444); PostgreSQL runs unprivileged,
        // and Linux refuses it a writer with EACCES.
        Kind::Proc(_) if how.write || how.trunc => return Err(Errno::EACCES),
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

/// Puts `dir` (the volume's root) in place of `name` in `parent`; what
/// had that name stays alive only for those who hold it (the image's
/// in-memory `/data` when the volume is mounted over it).
pub fn mount_over(parent: &Arc<Inode>, name: &[u8], dir: Arc<Inode>) -> Result<(), Errno> {
    let hidden = {
        let mut guard = parent.lock();
        let node = &mut *guard;
        let Body::Dir(d) = &mut node.body else {
            return Err(Errno::ENOTDIR);
        };
        let hidden = d.insert(name, dir);
        if hidden.as_ref().is_none_or(|h| !h.is_dir()) {
            node.nlink += 1;
        }
        hidden
    };
    drop(hidden);
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
    if p.dir.is_remote() {
        return super::p9::mkdir(&p.dir, name, mode & 0o1777 & !umask());
    }
    let dir = Inode::new_dir(mode & 0o1777 & !umask(), Some(&p.dir));
    link_into(&p.dir, name, &dir)
}

/// mknod of a regular file (the only kind this file system makes that way).
pub fn mknod_file(base: &Arc<Inode>, path: &[u8], mode: u32) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    if p.dir.is_remote() {
        return super::p9::create(&p.dir, name, mode & !umask(), None).map(drop);
    }
    let file = Inode::new_file(mode & !umask(), FileData::default());
    link_into(&p.dir, name, &file)
}

/// An AF_UNIX socket's name (bind): EADDRINUSE if the name exists.
pub fn mknod_socket(base: &Arc<Inode>, path: &[u8], mode: u32) -> Result<Arc<Inode>, Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false).map_err(|e| {
        if e == Errno::EEXIST {
            Errno::EADDRINUSE
        } else {
            e
        }
    })?;
    if p.dir.is_remote() {
        // A socket's name on the volume would be a host socket file
        // nobody serves; PostgreSQL keeps its sockets in /tmp.
        return Err(Errno::EOPNOTSUPP);
    }
    let sock = Inode::new_socket(mode & !umask());
    link_into(&p.dir, name, &sock)?;
    Ok(sock)
}

pub fn symlink(target: &[u8], base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    if p.dir.is_remote() {
        return super::p9::symlink(&p.dir, name, target);
    }
    link_into(&p.dir, name, &Inode::new_symlink(target))
}

/// A new name for `old` (already resolved by the caller).
pub fn link(old: &Arc<Inode>, base: &Arc<Inode>, path: &[u8]) -> Result<(), Errno> {
    let p = walk(base, path, &mut 0)?;
    let name = new_name(&p, false)?;
    if old.is_dir() {
        return Err(Errno::EPERM);
    }
    match (old.is_remote(), p.dir.is_remote()) {
        (true, true) => return super::p9::link(old, &p.dir, name),
        (false, false) => {}
        _ => return Err(Errno::EXDEV),
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
    if p.dir.is_remote() {
        return super::p9::unlink(&p.dir, name, &node);
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
    if p.dir.is_remote() {
        // The host says ENOTEMPTY.
        return super::p9::unlink(&p.dir, name, &node);
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
                (true, true) if !new.is_remote() && !dir_is_empty(new) => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
        }
    }
    if matches!(&np.dir.lock().body, Body::Dir(d) if d.removed) {
        return Err(Errno::ENOENT);
    }
    match (op.dir.is_remote(), np.dir.is_remote()) {
        // 9P2000.L's renameat takes no flags: an exchange cannot be
        // asked for (NOREPLACE was checked above; the guest is the
        // volume's one writer).
        (true, true) if exchange => return Err(Errno::EINVAL),
        (true, true) => {
            return super::p9::rename(&op.dir, oname, &np.dir, nname, &old, new.as_ref());
        }
        (false, false) => {}
        _ => return Err(Errno::EXDEV),
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
    // A file on the volume knows the directory it was found in and its
    // name there (the tree below the mount point is not in memory).
    let found = match &inode.lock().body {
        Body::Remote(r) if r.removed => return Err(Errno::ENOENT),
        Body::Remote(r) => Some((r.parent.clone(), r.name.to_vec())),
        _ => None,
    };
    if let Some((parent, name)) = found {
        let dir = parent.and_then(|w| w.upgrade()).ok_or(Errno::ENOENT)?;
        let mut path = dir_path(dir)?;
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        return Ok(path);
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
        // A directory on the volume knows its own name (9p has no way
        // back up); one in memory is found in its parent.
        let (parent, own_name) = {
            let node = cur.lock();
            match &node.body {
                Body::Dir(d) if d.removed => return Err(Errno::ENOENT),
                Body::Dir(d) => match &d.parent {
                    None => break,
                    Some(w) => (w.upgrade().ok_or(Errno::ENOENT)?, None),
                },
                Body::Remote(r) if r.removed => return Err(Errno::ENOENT),
                Body::Remote(r) => match &r.parent {
                    None => break,
                    Some(w) => (w.upgrade().ok_or(Errno::ENOENT)?, Some(r.name.to_vec())),
                },
                _ => return Err(Errno::ENOTDIR),
            }
        };
        let name = match (own_name, &parent.lock().body) {
            (Some(n), _) => n,
            (None, Body::Dir(d)) => d.name_of(&cur).ok_or(Errno::ENOENT)?.to_vec(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::S_IFREG;

    /// A private tree: its root's `..` is itself, as `/`'s is.
    fn tree() -> Arc<Inode> {
        let root = Inode::new_dir(0o755, None);
        root.lock().nlink = 2;
        mkdir(&root, b"a", 0o755).unwrap();
        mkdir(&root, b"a/b", 0o755).unwrap();
        create(&root, b"a/f");
        root
    }

    fn create(base: &Arc<Inode>, path: &[u8]) -> Arc<Inode> {
        let how = OpenHow {
            create: true,
            write: true,
            mode: 0o666,
            ..OpenHow::default()
        };
        open(base, path, &how).unwrap()
    }

    fn err(r: Result<Arc<Inode>, Errno>) -> Errno {
        r.err().expect("an error")
    }

    fn nlink(i: &Inode) -> u32 {
        i.lock().nlink
    }

    #[test]
    fn lookup_errors_enoent_enotdir_enametoolong() {
        let root = tree();
        assert!(resolve(&root, b"a/b", true).unwrap().is_dir());
        assert_eq!(err(resolve(&root, b"a/nope", true)), Errno::ENOENT);
        assert_eq!(err(resolve(&root, b"a/nope/x", true)), Errno::ENOENT);
        // A file used as a directory.
        assert_eq!(err(resolve(&root, b"a/f/x", true)), Errno::ENOTDIR);
        assert_eq!(err(resolve(&root, b"a/f/", true)), Errno::ENOTDIR);
        assert_eq!(err(resolve(&root, b"", true)), Errno::ENOENT);
        let long = [b'n'; 256];
        assert_eq!(err(resolve(&root, &long, true)), Errno::ENAMETOOLONG);
        // 255 is allowed (and simply absent).
        assert_eq!(err(resolve(&root, &long[..255], true)), Errno::ENOENT);
    }

    #[test]
    fn dot_dot_goes_up_and_stops_at_the_root() {
        let root = tree();
        let b = resolve(&root, b"a/b", true).unwrap();
        let a = resolve(&root, b"a", true).unwrap();
        assert!(Arc::ptr_eq(&resolve(&b, b"..", true).unwrap(), &a));
        assert!(Arc::ptr_eq(
            &resolve(&root, b"a/b/../b/.", true).unwrap(),
            &b
        ));
        assert!(Arc::ptr_eq(
            &resolve(&b, b"../../../../a", true).unwrap(),
            &a
        ));
        assert!(Arc::ptr_eq(&resolve(&root, b"..", true).unwrap(), &root));
        // Slashes repeat freely.
        assert!(Arc::ptr_eq(&resolve(&root, b"a//b///", true).unwrap(), &b));
    }

    #[test]
    fn symlinks_resolve_relative_to_their_directory() {
        let root = tree();
        symlink(b"b", &root, b"a/l").unwrap();
        symlink(b"../f", &root, b"a/b/up").unwrap();
        let b = resolve(&root, b"a/b", true).unwrap();
        assert!(Arc::ptr_eq(&resolve(&root, b"a/l", true).unwrap(), &b));
        assert!(Arc::ptr_eq(
            &resolve(&root, b"a/l/up", true).unwrap(),
            &resolve(&root, b"a/f", true).unwrap()
        ));
        // lstat sees the link itself...
        assert!(matches!(
            resolve(&root, b"a/l", false).unwrap().kind,
            Kind::Symlink(_)
        ));
        // ...but a trailing slash follows it all the same.
        assert!(Arc::ptr_eq(&resolve(&root, b"a/l/", false).unwrap(), &b));
        // A link to a file with a trailing slash: ENOTDIR.
        assert_eq!(err(resolve(&root, b"a/b/up/", true)), Errno::ENOTDIR);
    }

    #[test]
    fn dangling_and_looping_symlinks() {
        let root = tree();
        symlink(b"missing", &root, b"dangling").unwrap();
        assert_eq!(err(resolve(&root, b"dangling", true)), Errno::ENOENT);
        assert!(resolve(&root, b"dangling", false).is_ok());
        symlink(b"l2", &root, b"l1").unwrap();
        symlink(b"l1", &root, b"l2").unwrap();
        assert_eq!(err(resolve(&root, b"l1", true)), Errno::ELOOP);
        assert_eq!(err(resolve(&root, b"l1/x", true)), Errno::ELOOP);
    }

    #[test]
    fn forty_symlinks_in_a_chain_resolve_and_forty_one_are_eloop() {
        let root = tree();
        // c0 -> a, c1 -> c0, ..., c40 -> c39.
        symlink(b"a", &root, b"c0").unwrap();
        for i in 1..=40 {
            let (name, to) = (format!("c{i}"), format!("c{}", i - 1));
            symlink(to.as_bytes(), &root, name.as_bytes()).unwrap();
        }
        // c39 takes 40 links to reach `a`: Linux's MAXSYMLINKS.
        assert!(resolve(&root, b"c39", true).unwrap().is_dir());
        assert_eq!(err(resolve(&root, b"c40", true)), Errno::ELOOP);
    }

    #[test]
    fn open_flags_follow_linux() {
        let root = tree();
        let excl = OpenHow {
            create: true,
            excl: true,
            mode: 0o600,
            ..OpenHow::default()
        };
        assert_eq!(err(open(&root, b"a/f", &excl)), Errno::EEXIST);
        // O_CREAT|O_EXCL never follows a symlink, even a dangling one.
        symlink(b"target", &root, b"a/dl").unwrap();
        assert_eq!(err(open(&root, b"a/dl", &excl)), Errno::EEXIST);
        // Without O_EXCL, O_CREAT through a dangling link creates its target.
        create(&root, b"a/dl");
        assert!(resolve(&root, b"a/target", false).is_ok());
        // O_NOFOLLOW on a symlink: ELOOP.
        let nofollow = OpenHow {
            nofollow: true,
            ..OpenHow::default()
        };
        assert_eq!(err(open(&root, b"a/dl", &nofollow)), Errno::ELOOP);
        let dir = OpenHow {
            directory: true,
            ..OpenHow::default()
        };
        assert_eq!(err(open(&root, b"a/f", &dir)), Errno::ENOTDIR);
        let write = OpenHow {
            write: true,
            ..OpenHow::default()
        };
        assert_eq!(err(open(&root, b"a", &write)), Errno::EISDIR);
        // O_CREAT of a name with a trailing slash: EISDIR.
        assert_eq!(err(open(&root, b"a/new/", &excl)), Errno::EISDIR);
    }

    #[test]
    fn created_files_get_the_mode_under_the_umask_and_o_trunc_empties() {
        let root = tree();
        let f = create(&root, b"a/g");
        // The default umask, 022.
        assert_eq!(f.attr().mode, S_IFREG | 0o644);
        f.write_at(Some(0), b"data").unwrap();
        let trunc = OpenHow {
            trunc: true,
            write: true,
            ..OpenHow::default()
        };
        open(&root, b"a/g", &trunc).unwrap();
        assert_eq!(f.size(), 0);
    }

    #[test]
    fn mkdir_rmdir_unlink_errors() {
        let root = tree();
        assert_eq!(mkdir(&root, b"a", 0o755), Err(Errno::EEXIST));
        assert_eq!(mkdir(&root, b".", 0o755), Err(Errno::EEXIST));
        assert_eq!(mkdir(&root, b"a/c/", 0o755), Ok(()));
        assert_eq!(mkdir(&root, b"x/y", 0o755), Err(Errno::ENOENT));
        assert_eq!(rmdir(&root, b"a"), Err(Errno::ENOTEMPTY));
        assert_eq!(rmdir(&root, b"a/b/."), Err(Errno::EINVAL));
        assert_eq!(rmdir(&root, b"a/b/.."), Err(Errno::ENOTEMPTY));
        assert_eq!(rmdir(&root, b"a/f"), Err(Errno::ENOTDIR));
        assert_eq!(unlink(&root, b"a/b"), Err(Errno::EISDIR));
        assert_eq!(unlink(&root, b"a/f/"), Err(Errno::ENOTDIR));
        assert_eq!(unlink(&root, b"a/f"), Ok(()));
        assert_eq!(unlink(&root, b"a/f"), Err(Errno::ENOENT));
        assert_eq!(rmdir(&root, b"a/b"), Ok(()));
    }

    #[test]
    fn link_counts_as_linux_keeps_them() {
        let root = tree();
        let a = resolve(&root, b"a", true).unwrap();
        // `.`, the entry in the parent, and b's `..`; c adds one more.
        assert_eq!(nlink(&a), 3);
        mkdir(&root, b"a/c", 0o755).unwrap();
        assert_eq!(nlink(&a), 4);
        assert_eq!(nlink(&root), 3);
        let f = resolve(&root, b"a/f", true).unwrap();
        assert_eq!(nlink(&f), 1);
        link(&f, &root, b"hard").unwrap();
        assert_eq!(nlink(&f), 2);
        assert_eq!(link(&a, &root, b"dirlink"), Err(Errno::EPERM));
        unlink(&root, b"a/f").unwrap();
        // The other name still reaches the same inode.
        assert_eq!(nlink(&f), 1);
        assert!(Arc::ptr_eq(&resolve(&root, b"hard", true).unwrap(), &f));
        rmdir(&root, b"a/c").unwrap();
        assert_eq!(nlink(&a), 3);
    }

    #[test]
    fn a_removed_directory_takes_no_new_entries() {
        let root = tree();
        let b = resolve(&root, b"a/b", true).unwrap();
        rmdir(&root, b"a/b").unwrap();
        // As in a deleted working directory: ENOENT.
        assert_eq!(mkdir(&b, b"x", 0o755), Err(Errno::ENOENT));
        let how = OpenHow {
            create: true,
            ..OpenHow::default()
        };
        assert_eq!(err(open(&b, b"x", &how)), Errno::ENOENT);
        assert_eq!(nlink(&b), 0);
    }

    #[test]
    fn rename_replaces_checks_and_exchanges() {
        let root = tree();
        let f = resolve(&root, b"a/f", true).unwrap();
        create(&root, b"g");
        rename(&root, b"a/f", &root, b"g", 0).unwrap();
        assert!(Arc::ptr_eq(&resolve(&root, b"g", true).unwrap(), &f));
        assert_eq!(err(resolve(&root, b"a/f", true)), Errno::ENOENT);
        // A directory into its own subtree.
        assert_eq!(rename(&root, b"a", &root, b"a/b/a", 0), Err(Errno::EINVAL));
        // File over directory and back.
        assert_eq!(rename(&root, b"g", &root, b"a/b", 0), Err(Errno::EISDIR));
        assert_eq!(rename(&root, b"a/b", &root, b"g", 0), Err(Errno::ENOTDIR));
        // Over a non-empty directory.
        mkdir(&root, b"d", 0o755).unwrap();
        assert_eq!(rename(&root, b"d", &root, b"a", 0), Err(Errno::ENOTEMPTY));
        // ...but over an empty one it replaces it.
        rename(&root, b"a", &root, b"d", 0).unwrap();
        assert!(resolve(&root, b"d/b", true).is_ok());
        assert_eq!(
            rename(&root, b"g", &root, b"d", RENAME_NOREPLACE),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            rename(&root, b"g", &root, b"d", RENAME_NOREPLACE | RENAME_EXCHANGE),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            rename(&root, b"g", &root, b"none", RENAME_EXCHANGE),
            Err(Errno::ENOENT)
        );
        let d = resolve(&root, b"d", true).unwrap();
        rename(&root, b"g", &root, b"d", RENAME_EXCHANGE).unwrap();
        assert!(Arc::ptr_eq(&resolve(&root, b"g", true).unwrap(), &d));
        assert!(Arc::ptr_eq(&resolve(&root, b"d", true).unwrap(), &f));
        // Two names of one inode: nothing happens, both stay.
        link(&f, &root, b"f2").unwrap();
        rename(&root, b"d", &root, b"f2", 0).unwrap();
        assert!(resolve(&root, b"d", true).is_ok() && resolve(&root, b"f2", true).is_ok());
    }

    #[test]
    fn directory_positions_survive_removals() {
        let root = Inode::new_dir(0o755, None);
        for n in [&b"x"[..], b"y", b"z"] {
            create(&root, n);
        }
        let list = |pos| {
            let mut names = Vec::new();
            let end = root
                .read_dir(pos, &mut |_, _, _, name| {
                    names.push(name.to_vec());
                    true
                })
                .unwrap();
            (names, end)
        };
        let (names, end) = list(0);
        assert_eq!(names, [&b"."[..], b"..", b"x", b"y", b"z"]);
        // Stop after `y` (position 4 = after x, y: cookies 2, 3 then +1).
        unlink(&root, b"x").unwrap();
        create(&root, b"w");
        let (names, _) = list(4);
        // Resumed after y: z, then the new entry; x's removal moved nothing.
        assert_eq!(names, [&b"z"[..], b"w"]);
        assert_eq!(list(end).0, [&b"w"[..]]);
    }

    #[test]
    fn a_directory_path_is_found_upwards() {
        let root = tree();
        let b = resolve(&root, b"a/b", true).unwrap();
        assert_eq!(dir_path(b.clone()).unwrap(), b"/a/b");
        assert_eq!(dir_path(root.clone()).unwrap(), b"/");
        rmdir(&root, b"a/b").unwrap();
        assert_eq!(dir_path(b), Err(Errno::ENOENT));
    }

    #[test]
    fn absolute_paths_start_at_the_global_root() {
        crate::fs::init_for_tests();
        let root = crate::fs::root();
        let elsewhere = tree();
        // /tmp and /dev/null exist; an absolute symlink target is absolute
        // wherever the link is.
        assert!(resolve(&elsewhere, b"/tmp", true).unwrap().is_dir());
        symlink(b"/dev/null", &elsewhere, b"null").unwrap();
        let null = resolve(&elsewhere, b"null", true).unwrap();
        assert!(matches!(null.kind, Kind::Dev(_)));
        assert!(Arc::ptr_eq(&resolve(&root, b"/..", true).unwrap(), &root));
    }
}
