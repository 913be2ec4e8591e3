//! The in-memory file system: one tree of inodes rooted at `/`, seeded at
//! boot from the rootfs archive in the image (see `tar`), with `/tmp` and
//! `/dev` (null, zero, urandom) always present.
//!
//! Everything runs as one user, so access is decided by how a file was
//! opened (O_RDONLY / O_WRONLY / O_RDWR), never by its mode bits, which are
//! only stored and reported.

pub mod data;
pub mod index;
pub mod inode;
pub mod namei;
pub mod p9;
pub mod pipe;
pub mod procfs;
pub mod tar;

use crate::syscall::Errno;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};
use data::FileData;
use inode::{Device, Inode, Time};
use spin::Mutex;

static ROOT: spin::Once<Arc<Inode>> = spin::Once::new();
/// The running process's working directory and umask (proc swaps them at a
/// process switch).
static CWD: Mutex<Option<Arc<Inode>>> = Mutex::new(None);
static UMASK: AtomicU32 = AtomicU32::new(0o022);

pub fn root() -> Arc<Inode> {
    ROOT.get().expect("fs used before fs::init").clone()
}

pub fn cwd() -> Arc<Inode> {
    CWD.lock().clone().unwrap_or_else(root)
}

pub fn set_cwd(dir: Arc<Inode>) {
    let old = CWD.lock().replace(dir);
    drop(old);
}

/// The running process's working directory and umask trade places with
/// `cwd` and `umask` (proc: a process switch).
pub fn swap_current(cwd: &mut Option<Arc<Inode>>, umask: &mut u32) {
    core::mem::swap(&mut *CWD.lock(), cwd);
    *umask = UMASK.swap(*umask, Ordering::Relaxed);
}

pub fn umask() -> u32 {
    UMASK.load(Ordering::Relaxed)
}

/// Sets the umask, returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    UMASK.swap(mask & 0o777, Ordering::Relaxed)
}

#[cfg(not(test))]
pub fn init() {
    init_tree();
    seed(
        &root(),
        crate::arch::image::rootfs(),
        crate::arch::image::rootfs_index(),
    );
    p9::mount(&root());
}

/// `/` with `/tmp`, `/dev` and its devices.
fn init_tree() {
    let root = ROOT.call_once(|| Inode::new_dir(0o755, None)).clone();
    root.lock().nlink = 2;
    let mkdir = |parent: &Arc<Inode>, name: &[u8], perm: u32| -> Arc<Inode> {
        let dir = Inode::new_dir(perm, Some(parent));
        let _ = namei::link_into(parent, name, &dir);
        dir
    };
    mkdir(&root, b"tmp", 0o1777);
    let dev = mkdir(&root, b"dev", 0o755);
    // POSIX shared memory (shm_open) lives here.
    mkdir(&dev, b"shm", 0o1777);
    for (name, device) in [
        (&b"null"[..], Device::Null),
        (b"zero", Device::Zero),
        (b"urandom", Device::Urandom),
        (b"random", Device::Urandom),
    ] {
        let _ = namei::link_into(&dev, name, &Inode::new_device(device, 0o666));
    }
    procfs::populate(&root);
}

/// Unit tests share one file system tree, made once (without a rootfs).
#[cfg(test)]
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(init_tree);
}

/// Create the archive's entries. Errors skip an entry (or, for a damaged
/// archive, the rest of it) with a diagnostic; they never stop the boot.
fn seed(root: &Arc<Inode>, archive: &'static [u8], index: &'static [u8]) {
    // A zstd archive is read through its index (chunks inflated on first
    // use); without one it would have to be inflated whole.
    let index = index::Reader::new(index, archive);
    if index.is_none() && archive.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        crate::log!(
            "libos: the rootfs archive is zstd-compressed and the image has no rootfs index; it is not seeded"
        );
        return;
    }
    let entries: &mut dyn Iterator<Item = Result<tar::Entry<'static>, tar::Error>> = match index {
        Some(ix) => &mut { ix },
        None => &mut tar::Reader::new(archive),
    };
    for entry in entries {
        match entry {
            Ok(e) => {
                if let Err(err) = seed_entry(root, &e) {
                    crate::log!(
                        "libos: rootfs: {}: {err:?}; entry skipped",
                        core::str::from_utf8(&e.path).unwrap_or("(not UTF-8)")
                    );
                }
            }
            Err(err) => {
                crate::log!("libos: rootfs archive: {err}; the rest of it is ignored");
                break;
            }
        }
    }
}

fn seed_entry(root: &Arc<Inode>, e: &tar::Entry<'static>) -> Result<(), Errno> {
    use tar::EntryKind;
    let mut comps = e
        .path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".");
    let mut dir = root.clone();
    let mut name = match comps.next() {
        Some(n) => n,
        None => {
            // The archive's own root ("./"): its mode applies to `/`.
            if matches!(e.kind, EntryKind::Dir) {
                set_seeded(root, e.mode, e.mtime);
            }
            return Ok(());
        }
    };
    for next in comps {
        if name == b".." || name.len() > inode::NAME_MAX {
            return Err(Errno::EINVAL);
        }
        dir = match dir.lookup(name) {
            Ok(d) if d.is_dir() => d,
            Ok(_) => namei::resolve(&dir, name, true).and_then(|d| {
                if d.is_dir() {
                    Ok(d)
                } else {
                    Err(Errno::ENOTDIR)
                }
            })?,
            Err(Errno::ENOENT) => {
                let d = Inode::new_dir(0o755, Some(&dir));
                namei::link_into(&dir, name, &d)?;
                d
            }
            Err(err) => return Err(err),
        };
        name = next;
    }
    if name == b".." || name.len() > inode::NAME_MAX {
        return Err(Errno::EINVAL);
    }
    let existing = dir.lookup(name).ok();
    let node = match &e.kind {
        EntryKind::Dir => match existing {
            Some(d) if d.is_dir() => {
                set_seeded(&d, e.mode, e.mtime);
                return Ok(());
            }
            _ => Inode::new_dir(e.mode, Some(&dir)),
        },
        EntryKind::File(bytes) => Inode::new_file(e.mode, FileData::borrowed(bytes)),
        EntryKind::Packed { size, chunks } => {
            Inode::new_file(e.mode, FileData::packed(*size, chunks.clone())?)
        }
        EntryKind::Symlink(target) if target.is_empty() => return Err(Errno::ENOENT),
        EntryKind::Symlink(target) => Inode::new_symlink(target),
        EntryKind::HardLink(target) => {
            let t = namei::resolve(root, target, false)?;
            if t.is_dir() {
                return Err(Errno::EPERM);
            }
            if let Some(ex) = &existing
                && Arc::ptr_eq(ex, &t)
            {
                return Ok(());
            }
            t
        }
        EntryKind::Other(t) => {
            crate::log!(
                "libos: rootfs: {}: entry type {:?} is not supported; skipped",
                core::str::from_utf8(&e.path).unwrap_or("(not UTF-8)"),
                *t as char
            );
            return Ok(());
        }
    };
    if let Some(ex) = existing {
        // A later entry replaces an earlier one, as extraction would.
        if ex.is_dir() {
            namei::rmdir(&dir, name)?;
        } else {
            namei::unlink(&dir, name)?;
        }
    }
    namei::link_into(&dir, name, &node)?;
    if !matches!(e.kind, EntryKind::HardLink(_)) {
        set_seeded(&node, e.mode, e.mtime);
    }
    Ok(())
}

fn set_seeded(inode: &Inode, perm: u32, mtime: i64) {
    let mut node = inode.lock();
    let t = Time {
        sec: mtime,
        nsec: 0,
    };
    node.perm = perm & 0o7777;
    node.atime = t;
    node.mtime = t;
    node.ctime = t;
}

#[cfg(test)]
mod tests {
    use super::tar::testing::{end, entry};
    use super::*;

    fn seeded(archive: &'static [u8]) -> Arc<Inode> {
        let root = Inode::new_dir(0o755, None);
        seed(&root, archive, &[]);
        root
    }

    #[test]
    fn seeding_makes_the_tree_with_modes_times_and_hard_links() {
        let mut v = entry(b"./", b'5', b"", b"");
        v.extend(entry(b"usr/lib/libx.so", b'0', b"ELF", b""));
        v.extend(entry(b"usr/lib/liby.so", b'1', b"", b"usr/lib/libx.so"));
        v.extend(entry(b"usr/lib/libz.so", b'2', b"", b"libx.so"));
        let root = seeded(end(v));
        // Intermediate directories are made on the way.
        let lib = namei::resolve(&root, b"usr/lib", true).unwrap();
        assert!(lib.is_dir());
        let x = namei::resolve(&root, b"usr/lib/libx.so", true).unwrap();
        let a = x.attr();
        assert_eq!((a.mode, a.size, a.nlink), (inode::S_IFREG | 0o644, 3, 2));
        assert_eq!(a.mtime.sec, 0o1750);
        let y = namei::resolve(&root, b"usr/lib/liby.so", true).unwrap();
        assert!(Arc::ptr_eq(&x, &y));
        let z = namei::resolve(&root, b"usr/lib/libz.so", true).unwrap();
        assert!(Arc::ptr_eq(&x, &z));
        let mut buf = [0u8; 8];
        assert_eq!(x.read_at(0, &mut buf), Ok(3));
        assert_eq!(&buf[..3], b"ELF");
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one_and_dot_dot_is_refused() {
        let mut v = entry(b"f", b'0', b"old", b"");
        v.extend(entry(b"f", b'0', b"newer", b""));
        v.extend(entry(b"../escape", b'0', b"x", b""));
        v.extend(entry(b"a/../b", b'0', b"x", b""));
        let root = seeded(end(v));
        assert_eq!(namei::resolve(&root, b"f", true).unwrap().size(), 5);
        assert_eq!(root.lookup(b"escape").err(), Some(Errno::ENOENT));
        assert_eq!(root.lookup(b"b").err(), Some(Errno::ENOENT));
        assert_eq!(root.lookup(b"..").err(), Some(Errno::ENOENT));
    }
}
