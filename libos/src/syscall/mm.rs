//! Memory mappings: mmap, munmap, mremap, mprotect, madvise.
//!
//! All memory is readable, writable and executable (one identity map, no
//! per-page protection yet), so mprotect only validates its arguments.
//! A private file mapping is a copy of the file. A shared one lends its
//! pages to the file (fs::data's mapped pages), so writes through either
//! side are seen by the other; munmap takes them back.

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::fd::{self, FileKind};
use crate::fs::inode::{Device, Inode, Kind};
use crate::mem::{self, PAGE};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

const PROT_WRITE: u64 = 0x2;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MADV_DONTNEED: u64 = 4;

fn aligned(addr: u64) -> core::result::Result<(), Errno> {
    if addr.is_multiple_of(PAGE) {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: i64, offset: u64) -> Result {
    if len == 0 || len > (1 << 46) || flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(Errno::EINVAL);
    }
    let len = mem::page_up(len);
    if flags & MAP_ANONYMOUS == 0 {
        return map_file(addr, len, prot, flags, fd, offset);
    }
    place(addr, len, flags)
}

/// Find room for a mapping: where MAP_FIXED says, or from the top of RAM.
fn place(addr: u64, len: u64, flags: u64) -> Result {
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        aligned(addr)?;
        if flags & MAP_FIXED_NOREPLACE != 0 && !mem::is_free(addr, len) {
            return Err(Errno::EEXIST);
        }
        release(addr, len).map_err(|_| Errno::ENOMEM)?;
        mem::alloc_fixed(addr, len)?;
        crate::proc::own(addr, len);
        return Ok(addr as i64);
    }
    let at = mem::alloc_top_or_reclaim(len)?;
    crate::proc::own(at, len);
    Ok(at as i64)
}

/// A shared file mapping: its file, to give pages back to at munmap.
struct SharedMap {
    addr: u64,
    len: u64,
    inode: Arc<Inode>,
}

static SHARED: Mutex<Vec<SharedMap>> = Mutex::new(Vec::new());

fn map_file(addr: u64, len: u64, prot: u64, flags: u64, fd: i64, offset: u64) -> Result {
    aligned(offset)?;
    let file = fd::get(fd as u64)?;
    let inode = match &file.kind {
        FileKind::Node(i) => i.clone(),
        _ => return Err(Errno::ENODEV),
    };
    match inode.kind {
        // /dev/zero maps as anonymous memory.
        Kind::Dev(Device::Zero) => return place(addr, len, flags),
        Kind::File => {}
        _ => return Err(Errno::ENODEV),
    }
    // MAP_SHARED_VALIDATE is MAP_SHARED | MAP_PRIVATE and is shared.
    let shared = flags & MAP_SHARED != 0;
    // As Linux: a file mapping needs read access, and a shared one that
    // may be written needs write access too.
    if !file.readable() || (shared && prot & PROT_WRITE != 0 && !file.writable()) {
        return Err(Errno::EACCES);
    }
    let at = place(addr, len, flags)? as u64;
    let pages = (len / PAGE) as usize;
    let result = if shared {
        inode
            .map_shared((offset / PAGE) as usize, pages, at)
            .map(|()| {
                SHARED.lock().push(SharedMap {
                    addr: at,
                    len,
                    inode: inode.clone(),
                })
            })
    } else {
        uaccess::slice_mut(at, len).and_then(|mut dst| inode.read_at(offset, &mut dst).map(|_| ()))
    };
    if let Err(e) = result {
        let _ = release(at, len);
        if e == Errno::EBUSY {
            crate::log!(
                "libos: a file page is already in another shared mapping: refused (one address space)"
            );
        }
        return Err(e);
    }
    Ok(at as i64)
}

pub fn munmap(addr: u64, len: u64) -> Result {
    aligned(addr)?;
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    release(addr, len)?;
    Ok(0)
}

/// Every way mapped memory goes back to the allocator comes through here,
/// so a shared file mapping always returns its pages to the file first.
fn release(addr: u64, len: u64) -> core::result::Result<(), Errno> {
    unshare(addr, mem::page_up(len))?;
    crate::proc::disown(addr, mem::page_up(len));
    mem::free(addr, len)
}

/// A process is leaving memory it owned (exit, execve): shared file
/// mappings in it give their pages back to their files first, as munmap
/// would; the memory itself is freed later (proc reaps it).
pub fn leave(addr: u64, len: u64) {
    let _ = unshare(addr, len);
}

/// Whether `[addr, addr+len)` holds pages of a shared file mapping.
fn overlaps_shared(addr: u64, len: u64) -> bool {
    SHARED
        .lock()
        .iter()
        .any(|m| m.addr < addr + len && addr < m.addr + m.len)
}

/// Give the pages of shared file mappings inside `[addr, addr+len)` back to
/// their files before the memory is reused.
fn unshare(addr: u64, len: u64) -> core::result::Result<(), Errno> {
    let end = addr + len;
    let mut maps = SHARED.lock();
    let mut i = 0;
    while i < maps.len() {
        let m = &maps[i];
        let (lo, hi) = (m.addr.max(addr), (m.addr + m.len).min(end));
        if lo >= hi {
            i += 1;
            continue;
        }
        m.inode.unmap_shared(lo, ((hi - lo) / PAGE) as usize)?;
        let m = maps.remove(i);
        // What stays mapped on either side is still shared.
        if m.addr < lo {
            maps.push(SharedMap {
                addr: m.addr,
                len: lo - m.addr,
                inode: m.inode.clone(),
            });
        }
        if hi < m.addr + m.len {
            maps.push(SharedMap {
                addr: hi,
                len: m.addr + m.len - hi,
                inode: m.inode,
            });
        }
    }
    Ok(())
}

pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, _new_addr: u64) -> Result {
    aligned(old)?;
    if new_len == 0 || flags & MREMAP_FIXED != 0 {
        return Err(Errno::EINVAL);
    }
    let (old_len, new_len) = (mem::page_up(old_len), mem::page_up(new_len));
    if overlaps_shared(old, old_len) {
        // Its pages are the file's at their addresses: they cannot move.
        crate::log!("libos: mremap of a shared file mapping is not supported (EINVAL)");
        return Err(Errno::EINVAL);
    }
    if new_len <= old_len {
        if new_len < old_len {
            release(old + new_len, old_len - new_len)?;
        }
        return Ok(old as i64);
    }
    let grow = new_len - old_len;
    if mem::is_free(old + old_len, grow) {
        mem::alloc_fixed(old + old_len, grow)?;
        crate::proc::own(old + old_len, grow);
        return Ok(old as i64);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::ENOMEM);
    }
    let new = mem::alloc_top_or_reclaim(new_len)?;
    crate::proc::own(new, new_len);
    uaccess::copy_within(old, new, old_len)?;
    release(old, old_len)?;
    Ok(new as i64)
}

/// mprotect and madvise. MADV_DONTNEED must leave zeroes behind, as Linux
/// does for private anonymous memory; in a shared file mapping Linux shows
/// the file again, which here is the very same memory, so nothing changes.
/// The other advice changes nothing here.
pub fn madvise(addr: u64, len: u64, advice: u64) -> Result {
    aligned(addr)?;
    let len = mem::page_up(len);
    if advice == MADV_DONTNEED {
        if !overlaps_shared(addr, len) {
            uaccess::zero(addr, len);
        } else {
            for page in (addr..addr + len).step_by(PAGE as usize) {
                if !overlaps_shared(page, PAGE) {
                    uaccess::zero(page, PAGE);
                }
            }
        }
    }
    Ok(0)
}

pub fn mprotect(addr: u64) -> Result {
    aligned(addr)?;
    Ok(0)
}
