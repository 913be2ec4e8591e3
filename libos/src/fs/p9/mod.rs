//! The data volume: a host directory served by virtio-9p (9P2000.L),
//! mounted at [`MOUNT_POINT`] when the VM has a 9p device whose mount tag
//! is [`TAG`], hiding the image's in-memory `/data` (the host side puts the
//! cluster there). Without such a device nothing changes.
//!
//! Its files are inodes of the one tree (`Body::Remote`), so path
//! resolution, the working directory and open files work as for memory
//! files; namei and the inode methods hand each operation on a volume
//! inode to this module. An inode holds a fid walked to its file; an open
//! file description holds a fid of its own opened with Tlopen
//! ([`Handle`]), clunked when the last descriptor closes. One inode per
//! host file (by qid path) while anything uses it, so hard links and
//! rename checks see one identity.
//!
//! What is remembered so that it costs no round trip to the device: the
//! lookups (`names`), a file's size, and its data (`cache`: write-through
//! blocks in free RAM). The guest is the volume's only writer (the host
//! locks it, issue 13), which makes that correct. An fsync goes out while
//! the other processes run (`client::fsync`); everything else keeps the
//! CPU until its answer ([`requests`] counts them).

mod attr;
mod cache;
mod client;
mod device;
mod dirent;
mod flags;
mod names;

use super::inode::{Attr, EmitEntry, Inode, Kind, NAME_MAX, Time};
use crate::syscall::Errno;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use client::{Client, P9Error};
use pgkraft_abi::p9;
use spin::Mutex;

/// The mount tag the volume's device carries (our runner's and QEMU's).
pub const TAG: &[u8] = pgkraft_abi::VOLUME_TAG.as_bytes();
/// Where it is mounted: PostgreSQL's data directory (`postgres -D /data`).
pub const MOUNT_POINT: &[u8] = b"data";
/// Bytes of the device's large request slot: the msize we ask for, so
/// that one Tread or Twrite moves 128 KiB (four cache blocks) after its
/// header.
const MSIZE: usize = 128 * 1024 + p9::IOHDRSZ as usize;

/// The volume's part of an inode.
pub struct Remote {
    /// Walked to the file, never opened (opens clone it: [`Handle`]).
    pub fid: u32,
    /// The host's identity of the file (its inode).
    qid_path: u64,
    /// The directory it was found in (a directory's `..`).
    pub parent: Option<Weak<Inode>>,
    /// Its name there (getcwd: a directory's path is found upwards).
    pub name: Box<[u8]>,
    /// Unlinked, or replaced by a rename: no longer reachable by name.
    pub removed: bool,
    /// The open fid Tlcreate made of a file just created by open(2), for
    /// that open to take ([`Handle::open`]) instead of opening anew.
    fresh: Option<Handle>,
    /// A file's size as this guest last saw or made it ([`size`]).
    size: Option<u64>,
}

impl Remote {
    /// `fid` walked to host inode `qid_path`, found as `name` in `parent`.
    fn new(fid: u32, qid_path: u64, parent: &Arc<Inode>, name: &[u8]) -> Remote {
        Remote {
            fid,
            qid_path,
            parent: Some(Arc::downgrade(parent)),
            name: name.into(),
            removed: false,
            fresh: None,
            size: None,
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        release(self.fid, Some(self.qid_path));
    }
}

struct Volume {
    client: Client,
    /// Pages of its files (write-through, `cache.rs`).
    cache: cache::PageCache,
    /// Where a read that missed the cache lands first.
    scratch: Vec<u8>,
    /// Host inode -> the one Inode for it, while something holds it.
    inodes: BTreeMap<u64, Weak<Inode>>,
    /// (directory, name) -> Inode: lookups that need no walk.
    names: names::Names<Inode>,
}

static VOLUME: Mutex<Option<Volume>> = Mutex::new(None);
/// Fids whose inode or open file died: clunked before the next request
/// (a drop can happen anywhere, also while the volume is busy).
static RELEASED: Mutex<Vec<(u32, Option<u64>)>> = Mutex::new(Vec::new());

fn release(fid: u32, qid_path: Option<u64>) {
    RELEASED.lock().push((fid, qid_path));
}

/// Runs `f` on the volume, after clunking what was released.
fn with<T>(f: impl FnOnce(&mut Volume) -> Result<T, P9Error>) -> Result<T, Errno> {
    let mut guard = VOLUME
        .try_lock()
        .expect("the 9p volume was entered twice (a libOS bug)");
    let v = guard.as_mut().ok_or(Errno::ENODEV)?;
    let released = core::mem::take(&mut *RELEASED.lock());
    for (fid, qid_path) in released {
        v.client.clunk(fid);
        // The last reference to a host file went (unlinked or replaced
        // ones left `inodes` already): its cached blocks go too, before
        // the host can give its inode number to another file.
        if let Some(q) = qid_path
            && v.inodes.get(&q).is_none_or(|w| w.strong_count() == 0)
        {
            v.inodes.remove(&q);
            v.cache.forget(q);
        }
    }
    f(v).map_err(P9Error::errno)
}

/// Round trips to the device so far (each one VM exit); 0 without a volume.
// Reported at the exit with CONFIG_TRACE_SYSCALLS (platform::exit).
#[cfg_attr(not(feature = "trace-syscalls"), allow(dead_code))]
pub fn requests() -> u64 {
    device::requests()
}

/// Whether a request is with the device: an idle wait must then be one
/// its answer ends (net::stack::idle_until).
pub fn in_flight() -> bool {
    device::in_flight()
}

/// Whether an answer has come that a waiting process may be waiting for
/// (an idle spin ends on it: net::stack::spin_for_device_work).
pub fn answered() -> bool {
    device::answered()
}

/// Finds the device and mounts the volume at `/data` (boot). Probing
/// costs one register read per empty virtio-mmio slot.
#[cfg(not(test))]
pub fn mount(root: &Arc<Inode>) {
    let Some(dev) = device::probe(TAG, MSIZE) else {
        return;
    };
    device::install(dev);
    let mounted = Client::new().and_then(|mut client| {
        let fid = client.alloc_fid();
        let qid = client.attach(fid, crate::syscall::ids::UID as u32)?;
        Ok((client, fid, qid))
    });
    let (client, fid, qid) = match mounted {
        Ok(m) => m,
        Err(e) => {
            crate::log!("libos: the 9p volume {:?} cannot be mounted: {e:?}", TAG);
            return;
        }
    };
    if qid.kind & p9::qid_type::DIR == 0 {
        crate::log!("libos: the 9p volume's root is not a directory; not mounted");
        return;
    }
    let dir = Inode::new_remote(Kind::Dir, Remote::new(fid, qid.path, root, MOUNT_POINT));
    let mut inodes = BTreeMap::new();
    inodes.insert(qid.path, Arc::downgrade(&dir));
    *VOLUME.lock() = Some(Volume {
        client,
        cache: cache::PageCache::new(),
        scratch: Vec::new(),
        inodes,
        names: names::Names::new(),
    });
    if let Err(e) = super::namei::mount_over(root, MOUNT_POINT, dir) {
        crate::log!("libos: cannot mount the 9p volume at /data: {e:?}");
    }
}

/// An inode's fid, whether it was removed, and its host inode number.
fn remote_of(inode: &Inode) -> Result<(u32, bool, u64), Errno> {
    match &inode.lock().body {
        super::inode::Body::Remote(r) => Ok((r.fid, r.removed, r.qid_path)),
        _ => Err(Errno::EXDEV),
    }
}

/// The fid and host inode of a directory that may still gain or lose
/// entries.
fn live_dir(dir: &Inode) -> Result<(u32, u64), Errno> {
    match remote_of(dir)? {
        (_, true, _) => Err(Errno::ENOENT),
        (fid, false, q) => Ok((fid, q)),
    }
}

/// The one inode for what `fid` (just walked from `dir` by `name`) names:
/// the living one if there is one (and `fid` is clunked), else a new one.
fn inode_for(
    v: &mut Volume,
    dir: &Arc<Inode>,
    name: &[u8],
    fid: u32,
    qid: p9::Qid,
) -> Result<Arc<Inode>, P9Error> {
    if let Some(existing) = v.inodes.get(&qid.path).and_then(Weak::upgrade) {
        v.client.clunk(fid);
        return Ok(existing);
    }
    let kind = if qid.kind & p9::qid_type::DIR != 0 {
        Kind::Dir
    } else if qid.kind & p9::qid_type::SYMLINK != 0 {
        match v.client.readlink(fid) {
            Ok(t) => Kind::Symlink(t.into()),
            Err(e) => {
                v.client.clunk(fid);
                return Err(e);
            }
        }
    } else {
        Kind::File
    };
    let inode = Inode::new_remote(kind, Remote::new(fid, qid.path, dir, name));
    v.inodes.insert(qid.path, Arc::downgrade(&inode));
    Ok(inode)
}

/// Walks `name` from `dfid` to a new fid (freed again if the walk fails).
fn walk_new(v: &mut Volume, dfid: u32, name: Option<&[u8]>) -> Result<(u32, p9::Qid), P9Error> {
    let fid = v.client.alloc_fid();
    match v.client.walk(dfid, fid, name) {
        Ok(q) => Ok((fid, q.unwrap_or_default())),
        Err(e) => {
            v.client.forget_fid(fid);
            Err(e)
        }
    }
}

pub fn lookup(dir: &Arc<Inode>, name: &[u8]) -> Result<Arc<Inode>, Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let (dfid, dq) = live_dir(dir)?;
    with(|v| {
        if let Some(known) = v.names.get(dq, name) {
            return Ok(known);
        }
        let (fid, qid) = walk_new(v, dfid, Some(name))?;
        let inode = inode_for(v, dir, name, fid, qid)?;
        v.names.insert(dq, name, &inode, inode.is_dir());
        Ok(inode)
    })
}

/// A new empty regular file `name` in `dir` (which has no such name).
/// With `open` (open(2)'s flags), the fid Tlcreate opened is kept for the
/// open that follows (saving a clone, a Tlopen and a clunk per created
/// file); without, it is let go.
pub fn create(
    dir: &Arc<Inode>,
    name: &[u8],
    perm: u32,
    open: Option<u32>,
) -> Result<Arc<Inode>, Errno> {
    let (dfid, dq) = live_dir(dir)?;
    with(|v| {
        // Tlcreate turns the fid it is given into the new file, open:
        // give it a clone of the directory's.
        let (ofid, _) = walk_new(v, dfid, None)?;
        let lflags = open.map_or(p9::open::RDONLY, flags::lopen_flags) | p9::open::EXCL;
        let made = v.client.lcreate(
            ofid,
            name,
            lflags,
            perm & 0o7777,
            crate::syscall::ids::GID as u32,
        );
        let made = match made {
            Ok(q) => q,
            Err(e) => {
                v.client.clunk(ofid);
                return Err(e);
            }
        };
        // A new file has no bytes: blocks kept under its inode number
        // were an earlier file's that the host numbered the same.
        v.cache.forget(made.path);
        let fresh = match open {
            Some(_) => Some(Handle {
                fid: ofid,
                file: made.path,
            }),
            None => {
                v.client.clunk(ofid);
                None
            }
        };
        let (fid, qid) = walk_new(v, dfid, Some(name))?;
        let inode = inode_for(v, dir, name, fid, qid)?;
        if let super::inode::Body::Remote(r) = &mut inode.lock().body {
            r.fresh = fresh;
            r.size = Some(0);
        }
        v.names.insert(dq, name, &inode, false);
        Ok(inode)
    })
}

pub fn mkdir(dir: &Arc<Inode>, name: &[u8], perm: u32) -> Result<(), Errno> {
    let (dfid, _) = live_dir(dir)?;
    with(|v| {
        v.client
            .mkdir(dfid, name, perm & 0o7777, crate::syscall::ids::GID as u32)
            .map(drop)
    })
}

pub fn symlink(dir: &Arc<Inode>, name: &[u8], target: &[u8]) -> Result<(), Errno> {
    let (dfid, _) = live_dir(dir)?;
    with(|v| {
        v.client
            .symlink(dfid, name, target, crate::syscall::ids::GID as u32)
            .map(drop)
    })
}

pub fn link(old: &Arc<Inode>, dir: &Arc<Inode>, name: &[u8]) -> Result<(), Errno> {
    let (fid, removed, _) = remote_of(old)?;
    if removed {
        return Err(Errno::ENOENT);
    }
    let (dfid, _) = live_dir(dir)?;
    with(|v| v.client.link(dfid, fid, name))
}

/// The inode no longer has this name: later lookups of the name must not
/// find it (another file may take the name), nor names in it if it is a
/// directory (its host inode number may come back).
fn forget(v: &mut Volume, node: &Arc<Inode>) {
    let mut n = node.lock();
    if let super::inode::Body::Remote(r) = &mut n.body {
        r.removed = true;
        if node.is_dir() {
            let gone = v.names.forget_dir(r.qid_path);
            drop(gone);
        }
        if v.inodes
            .get(&r.qid_path)
            .is_some_and(|w| core::ptr::eq(w.as_ptr(), Arc::as_ptr(node)))
        {
            v.inodes.remove(&r.qid_path);
        }
    }
}

/// unlink or rmdir of `name` (which is `node`) in `dir`.
pub fn unlink(dir: &Arc<Inode>, name: &[u8], node: &Arc<Inode>) -> Result<(), Errno> {
    let (dfid, dq) = live_dir(dir)?;
    let flags = if node.is_dir() { p9::AT_REMOVEDIR } else { 0 };
    with(|v| {
        v.client.unlinkat(dfid, name, flags)?;
        let named = v.names.remove(dq, name);
        drop(named);
        forget(v, node);
        Ok(())
    })
}

pub fn rename(
    odir: &Arc<Inode>,
    oname: &[u8],
    ndir: &Arc<Inode>,
    nname: &[u8],
    old: &Arc<Inode>,
    replaced: Option<&Arc<Inode>>,
) -> Result<(), Errno> {
    let (ofid, oq) = live_dir(odir)?;
    let (nfid, nq) = live_dir(ndir)?;
    with(|v| {
        v.client.renameat(ofid, oname, nfid, nname)?;
        let named = (v.names.remove(oq, oname), v.names.remove(nq, nname));
        drop(named);
        if let Some(r) = replaced {
            forget(v, r);
        }
        v.names.insert(nq, nname, old, old.is_dir());
        // The server moves the fids under the old name along (QEMU fixes
        // their paths); the inode's own idea of where it is follows.
        if let super::inode::Body::Remote(r) = &mut old.lock().body {
            r.parent = Some(Arc::downgrade(ndir));
            r.name = nname.into();
        }
        Ok(())
    })
}

/// stat through the inode's fid (an open file's own fid: [`Handle::attr`]).
pub fn attr(inode: &Inode) -> Result<Attr, Errno> {
    let fid = remote_of(inode)?.0;
    let a = with(|v| v.client.getattr(fid)).map(|a| attr::from_p9(&a))?;
    set_size(inode, |_| Some(a.size));
    Ok(a)
}

pub fn truncate(inode: &Inode, len: u64) -> Result<(), Errno> {
    let (fid, _, file) = remote_of(inode)?;
    truncate_fid(fid, file, len)?;
    set_size(inode, |_| Some(len));
    Ok(())
}

/// A volume file's size without a round trip when the guest knows it: the
/// guest is the volume's one writer, so only its own writes and truncates
/// change it, and they keep it here. PostgreSQL asks for a relation's size
/// (`lseek(SEEK_END)`) about nine times per TPC-B transaction; each was a
/// Tgetattr. Asked through `handle`'s fid when there is one (an unlinked
/// file still answers).
pub fn size(inode: &Inode, handle: Option<&Handle>) -> Result<u64, Errno> {
    if let super::inode::Body::Remote(r) = &inode.lock().body
        && let Some(s) = r.size
    {
        return Ok(s);
    }
    let fid = match handle {
        Some(h) => h.fid,
        None => remote_of(inode)?.0,
    };
    let s = with(|v| v.client.getattr(fid))?.size;
    set_size(inode, |_| Some(s));
    Ok(s)
}

/// Updates the size the guest knows of a file (not of a directory: the
/// host's directory sizes change with what is in them).
fn set_size(inode: &Inode, f: impl FnOnce(Option<u64>) -> Option<u64>) {
    if matches!(inode.kind, Kind::File)
        && let super::inode::Body::Remote(r) = &mut inode.lock().body
    {
        r.size = f(r.size);
    }
}

pub fn set_perm(inode: &Inode, perm: u32) -> Result<(), Errno> {
    let fid = remote_of(inode)?.0;
    let s = p9::SetAttr {
        valid: p9::setattr::MODE,
        mode: perm,
        ..p9::SetAttr::default()
    };
    with(|v| v.client.setattr(fid, s))
}

pub fn set_times(inode: &Inode, atime: Option<Time>, mtime: Option<Time>) -> Result<(), Errno> {
    let fid = remote_of(inode)?.0;
    let s = attr::set_times(atime, mtime);
    with(|v| v.client.setattr(fid, s))
}

/// statfs(2) of the host's file system holding the volume.
pub fn statfs(inode: &Inode) -> Result<p9::StatFs, Errno> {
    let fid = remote_of(inode)?.0;
    with(|v| v.client.statfs(fid))
}

/// An open file description's own fid on the volume: opened with the
/// open(2) flags that matter to the host (flags::lopen_flags), clunked
/// when the description goes.
pub struct Handle {
    fid: u32,
    /// The host inode (qid path): the page cache's key.
    file: u64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        release(self.fid, None);
    }
}

impl Handle {
    /// A fid for `inode` opened with `flags` (open(2)'s): the one its
    /// creation by this same open(2) left, else a clone opened now.
    pub fn open(inode: &Inode, flags: u32) -> Result<Handle, Errno> {
        if let super::inode::Body::Remote(r) = &mut inode.lock().body
            && let Some(h) = r.fresh.take()
        {
            return Ok(h);
        }
        let (ifid, _, file) = remote_of(inode)?;
        with(|v| {
            let (fid, _) = walk_new(v, ifid, None)?;
            if let Err(e) = v.client.lopen(fid, flags::lopen_flags(flags)) {
                v.client.clunk(fid);
                return Err(e);
            }
            Ok(Handle { fid, file })
        })
    }

    /// pread: from the page cache what it has, the rest from the host in
    /// whole pages (as many round trips as that needs), which the cache
    /// keeps; a short answer is the end of the file (the host's pread of
    /// a regular file is short only there).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        with(|v| {
            let mut done = 0;
            while done < buf.len() {
                let pos = off + done as u64;
                let n = v.cache.read(self.file, pos, &mut buf[done..]);
                if n > 0 {
                    done += n;
                    continue;
                }
                let (n, end) = fill_from_host(v, self.fid, self.file, pos, buf.len() - done)?;
                let from = (pos - page_start(pos)) as usize;
                let take = n.saturating_sub(from).min(buf.len() - done);
                buf[done..done + take].copy_from_slice(&v.scratch[from..from + take]);
                done += take;
                if end {
                    break;
                }
            }
            Ok(done)
        })
    }

    /// pwrite at `off`, or at the end (O_APPEND: the host opened the file
    /// with O_APPEND too) of `inode`, this description's file. Returns
    /// (bytes, offset after them).
    /// `explicit`: the offset is the caller's own (pwrite), not the
    /// description's, which another process sharing it may move.
    pub fn write_at(
        &self,
        inode: &Inode,
        off: Option<u64>,
        data: &[u8],
        explicit: bool,
    ) -> Result<(usize, u64), Errno> {
        let at = match off {
            Some(o) => o,
            None => size(inode, Some(self))?,
        };
        // Only a pwrite over bytes the file already has lets others run:
        // the file's size and the description's offset stay as they are
        // meanwhile, and the host has the room (an extension, which can
        // meet a full disk, fails before anyone reads its bytes from the
        // cache). PostgreSQL's WAL goes into segments made whole first,
        // and its evicted pages over blocks it extended the file with. A
        // size the guest does not know yet (a file it opened and never
        // wrote or sized: a recycled WAL segment) is asked for once.
        let runner = crate::platform::host() == crate::platform::Host::Runner;
        let overwrite =
            || size(inode, Some(self)).is_ok_and(|s| at.saturating_add(data.len() as u64) <= s);
        let written = if runner && explicit && off.is_some() && overwrite() {
            self.write_letting_others_run(at, data)?
        } else {
            self.write_holding_the_volume(at, data)?
        };
        let end = at + written as u64;
        set_size(inode, |s| s.map(|s| s.max(end)));
        Ok((written, end))
    }

    /// The write as requests made under the volume's lock, each polled
    /// for its answer: all but a pwrite over the file's bytes under our
    /// runner ([`Self::write_at`]; another VMM may answer out of order).
    fn write_holding_the_volume(&self, at: u64, data: &[u8]) -> Result<usize, Errno> {
        with(|v| {
            let mut done = 0;
            while done < data.len() {
                let asked = (data.len() - done).min(v.client.io_max());
                let n = v.client.write(self.fid, at + done as u64, &data[done..])?;
                v.cache
                    .write(self.file, at + done as u64, &data[done..done + n]);
                done += n;
                if n < asked {
                    // A full disk or a file size limit: report what went.
                    break;
                }
            }
            Ok(done)
        })
    }

    /// The write with no lock held while the host does it, the other
    /// processes running meanwhile (p9::device). The cached pages take the
    /// bytes right before the request is filled, with no process switch
    /// in between, so both hold the same bytes (PostgreSQL writes pages
    /// from shared memory, which others may change while this one
    /// waits); what did not reach the host (an I/O error) leaves the
    /// cache when this process runs again. Correct because our runner
    /// answers a queue's requests in order: a read made meanwhile sees
    /// this write.
    fn write_letting_others_run(&self, at: u64, data: &[u8]) -> Result<usize, Errno> {
        let io_max = with(|v| Ok(v.client.io_max()))?;
        let mut done = 0;
        while done < data.len() {
            let chunk = &data[done..data.len().min(done + io_max)];
            let pos = at + done as u64;
            let sent = client::write_letting_others_run(self.fid, pos, chunk, io_max, |bytes| {
                with(|v| {
                    v.cache.write(self.file, pos, bytes);
                    Ok(())
                })
                // Our own errno (no volume) goes back as the host's would.
                .map_err(|e| P9Error::Remote(e.0 as u32))
            });
            match sent {
                Ok(n) if n == chunk.len() => done += n,
                // An error, or a file size limit: the bytes that did not
                // go leave the cache; report what went.
                sent => {
                    let n = *sent.as_ref().unwrap_or(&0);
                    let lost = (chunk.len() - n) as u64;
                    with(|v| {
                        v.cache.forget_range(self.file, pos + n as u64, lost);
                        Ok(())
                    })?;
                    done += sent.map_err(P9Error::errno)?;
                    break;
                }
            }
        }
        Ok(done)
    }

    /// fstat of `inode`, this description's file, through its fid.
    pub fn attr(&self, inode: &Inode) -> Result<Attr, Errno> {
        let a = with(|v| v.client.getattr(self.fid)).map(|a| attr::from_p9(&a))?;
        set_size(inode, |_| Some(a.size));
        Ok(a)
    }

    pub fn truncate(&self, inode: &Inode, len: u64) -> Result<(), Errno> {
        truncate_fid(self.fid, self.file, len)?;
        set_size(inode, |_| Some(len));
        Ok(())
    }

    /// fsync / fdatasync: the host's fsync or fdatasync of this file (or
    /// directory) before the answer. The other processes run meanwhile
    /// (the volume's lock is not held): the caller's open file keeps the
    /// fid.
    pub fn fsync(&self, datasync: bool) -> Result<(), Errno> {
        client::fsync(self.fid, datasync).map_err(P9Error::errno)
    }

    /// getdents from position `pos` (0 or a host cookie): one Treaddir
    /// (the caller calls again until it gets nothing, as for any file
    /// system), asking for about as many bytes as the caller has room for.
    pub fn read_dir(&self, pos: u64, room: usize, emit: &mut EmitEntry) -> Result<u64, Errno> {
        with(|v| {
            let mut t = dirent::Taken { pos, full: false };
            // Rreaddir's entries are 24 bytes plus the name, linux_dirent64's
            // 19 plus the name, padded to 8: a bit more room is asked for.
            let count = room.saturating_add(room / 2).min(u32::MAX as usize) as u32;
            v.client.readdir(self.fid, pos, count, &mut |d| {
                t = dirent::take(&mut core::iter::once(*d), t.pos, emit);
                !t.full
            })?;
            Ok(t.pos)
        })
    }
}

fn page_start(pos: u64) -> u64 {
    pos & !(cache::BLOCK as u64 - 1)
}

/// Reads whole pages of `file` through `fid` from the page holding `pos`,
/// enough for `want` bytes from `pos` (at most one request's worth), into
/// `v.scratch`, and keeps them in the cache. Returns the bytes read and
/// whether that was the file's end.
fn fill_from_host(
    v: &mut Volume,
    fid: u32,
    file: u64,
    pos: u64,
    want: usize,
) -> Result<(usize, bool), P9Error> {
    let start = page_start(pos);
    let span = (pos - start) as usize + want;
    let io = v.client.io_max() / cache::BLOCK * cache::BLOCK;
    if io == 0 {
        // A server whose messages hold less than a block: no caching (a
        // short answer would not mean the file's end).
        let from = (pos - start) as usize;
        let len = want.min(v.client.io_max());
        if v.scratch.len() < from + len {
            v.scratch.resize(from + len, 0);
        }
        let n = v.client.read(fid, pos, &mut v.scratch[from..from + len])?;
        return Ok((from + n, n < len));
    }
    let len = span
        .div_ceil(cache::BLOCK)
        .saturating_mul(cache::BLOCK)
        .min(io);
    if v.scratch.len() < len {
        v.scratch.resize(len, 0);
    }
    let n = v.client.read(fid, start, &mut v.scratch[..len])?;
    let limit = cache_limit(v.cache.bytes());
    v.cache.insert(file, start, &v.scratch[..n], limit);
    Ok((n, n < len))
}

/// How many bytes the page cache may hold: what it holds plus the free
/// RAM, less a reserve left free for the programs (a quarter of RAM, at
/// least 32 MiB): once they have eaten into the reserve the next miss
/// evicts down to it.
fn cache_limit(held: usize) -> usize {
    let total = crate::mem::total_bytes() as usize;
    let reserve = (total / 4).max(32 << 20);
    (held + crate::mem::free_bytes() as usize).saturating_sub(reserve)
}

/// Bytes the page cache holds (meminfo's MemAvailable counts them); 0
/// while the volume is busy at this moment.
pub fn cached_bytes() -> usize {
    VOLUME
        .try_lock()
        .and_then(|g| g.as_ref().map(|v| v.cache.bytes()))
        .unwrap_or(0)
}

/// Under memory pressure: the page cache gives back at least `bytes`
/// (what it can). Nothing if the volume is busy at this moment.
pub fn shrink_cache(bytes: usize) -> usize {
    match VOLUME.try_lock() {
        Some(mut g) => g.as_mut().map_or(0, |v| v.cache.shrink(bytes)),
        None => 0,
    }
}

/// Tsetattr of the size (truncate, ftruncate, O_TRUNC).
fn truncate_fid(fid: u32, file: u64, len: u64) -> Result<(), Errno> {
    let s = p9::SetAttr {
        valid: p9::setattr::SIZE,
        size: len,
        ..p9::SetAttr::default()
    };
    with(|v| {
        v.client.setattr(fid, s)?;
        v.cache.truncate(file, len);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::namei;

    /// A volume tree without a device: what lookups would have built.
    fn tree() -> (Arc<Inode>, Arc<Inode>, Arc<Inode>) {
        let root = Inode::new_dir(0o755, None);
        let data = Inode::new_remote(Kind::Dir, Remote::new(1, 100, &root, MOUNT_POINT));
        namei::mount_over(&root, MOUNT_POINT, data.clone()).unwrap();
        let base = Inode::new_remote(Kind::Dir, Remote::new(2, 101, &data, b"base"));
        let file = Inode::new_remote(Kind::File, Remote::new(3, 102, &base, b"16384"));
        (root, base, file)
    }

    #[test]
    fn volume_paths_are_found_upwards_through_names_they_keep() {
        let (root, base, file) = tree();
        assert_eq!(namei::path_of(&base).unwrap(), b"/data/base");
        assert_eq!(namei::path_of(&file).unwrap(), b"/data/base/16384");
        // `..` of a volume directory is the directory it was found in; of
        // the volume's root, the directory it is mounted in.
        let data = base.parent().unwrap();
        assert!(Arc::ptr_eq(&data.parent().unwrap(), &root));
        assert!(data.is_remote() && !data.is_root());
        // A rename moves the name the inode keeps; an unlinked file has none.
        if let crate::fs::inode::Body::Remote(r) = &mut file.lock().body {
            r.parent = Some(Arc::downgrade(&data));
            r.name = b"moved".as_slice().into();
        }
        assert_eq!(namei::path_of(&file).unwrap(), b"/data/moved");
        if let crate::fs::inode::Body::Remote(r) = &mut file.lock().body {
            r.removed = true;
        }
        assert_eq!(namei::path_of(&file), Err(Errno::ENOENT));
    }

    #[test]
    fn mounting_hides_the_image_directory_and_counts_one_link() {
        let root = Inode::new_dir(0o755, None);
        root.lock().nlink = 2;
        namei::mkdir(&root, b"data", 0o700).unwrap();
        assert_eq!(root.lock().nlink, 3);
        let image_data = root.lookup(b"data").unwrap();
        let data = Inode::new_remote(Kind::Dir, Remote::new(1, 100, &root, MOUNT_POINT));
        namei::mount_over(&root, MOUNT_POINT, data.clone()).unwrap();
        assert!(Arc::ptr_eq(&root.lookup(b"data").unwrap(), &data));
        assert!(!Arc::ptr_eq(&data, &image_data));
        // A directory replaced a directory: the parent's count stays.
        assert_eq!(root.lock().nlink, 3);
    }

    #[test]
    fn without_a_volume_its_operations_say_enodev() {
        let (_, base, _) = tree();
        assert_eq!(lookup(&base, b"x").err(), Some(Errno::ENODEV));
        assert_eq!(base.stat().err(), Some(Errno::ENODEV));
    }
}
