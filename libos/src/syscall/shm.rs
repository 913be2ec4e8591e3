//! System V shared memory: shmget, shmat, shmdt, shmctl.
//!
//! PostgreSQL keeps a small System V segment as an interlock against two
//! servers on one data directory, and checks its attach count at start. With
//! one address space every segment lives at one place: shmat hands out the
//! same pages every time, and a segment's memory goes back to the allocator
//! when it is both removed (IPC_RMID) and detached everywhere, as on Linux.
//! Attachments are counted per process, so a process's exit detaches what
//! it left attached.

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::fs::inode::Time;
use crate::mem;
use alloc::vec::Vec;
use spin::Mutex;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const IPC_PRIVATE: i64 = 0;
const IPC_CREAT: u64 = 0o1000;
const IPC_EXCL: u64 = 0o2000;
const IPC_RMID: u64 = 0;
const IPC_SET: u64 = 1;
const IPC_STAT: u64 = 2;
const IPC_INFO: u64 = 3;
/// musl sets this bit on every shmctl command (the 64-bit layout).
const IPC_64: u64 = 0x100;
const SHM_STAT: u64 = 13;
/// Linux reports a removed segment still attached with this mode bit.
const SHM_DEST: u32 = 0o1000;
/// Linux's SHMMIN and a generous SHMMAX.
const SHMMIN: u64 = 1;
const SHMMAX: u64 = 1 << 40;

struct Segment {
    id: i32,
    key: i32,
    size: u64,
    addr: u64,
    mode: u32,
    /// One pid per attachment (a process may attach twice): the attach
    /// count, and what a process's exit detaches.
    attached: Vec<u32>,
    removed: bool,
    atime: i64,
    dtime: i64,
    ctime: i64,
    cpid: u32,
    lpid: u32,
}

struct Table {
    segs: Vec<Segment>,
    next_id: i32,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    segs: Vec::new(),
    next_id: 0,
});

/// Bytes of RAM the segments hold (meminfo).
pub fn segment_bytes() -> u64 {
    TABLE
        .lock()
        .segs
        .iter()
        .map(|s| crate::mem::page_up(s.size))
        .sum()
}

/// The kernel's `struct shmid64_ds` (x86-64).
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct ShmidDs {
    key: i32,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
    mode: u32,
    seq: u16,
    _pad: [u16; 3],
    _unused: [u64; 2],
    segsz: u64,
    atime: i64,
    dtime: i64,
    ctime: i64,
    cpid: i32,
    lpid: i32,
    nattch: u64,
    _unused2: [u64; 2],
}

pub fn shmget(key: u64, size: u64, flags: u64) -> Result {
    let key = key as i32;
    let mut t = TABLE.lock();
    if key as i64 != IPC_PRIVATE
        && let Some(s) = t.segs.iter().find(|s| s.key == key && !s.removed)
    {
        if flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0 {
            return Err(Errno::EEXIST);
        }
        if size > s.size {
            return Err(Errno::EINVAL);
        }
        return Ok(s.id as i64);
    }
    if key as i64 != IPC_PRIVATE && flags & IPC_CREAT == 0 {
        return Err(Errno::ENOENT);
    }
    if !(SHMMIN..=SHMMAX).contains(&size) {
        return Err(Errno::EINVAL);
    }
    // Fresh pages read as zero, as a new segment must.
    let addr = mem::alloc_top_or_reclaim(mem::page_up(size))?;
    let id = t.next_id;
    t.next_id += 1;
    t.segs.push(Segment {
        id,
        key,
        size,
        addr,
        mode: (flags & 0o777) as u32,
        attached: Vec::new(),
        removed: false,
        atime: 0,
        dtime: 0,
        ctime: Time::now().sec,
        cpid: crate::proc::pid(),
        lpid: 0,
    });
    Ok(id as i64)
}

/// SHM_RDONLY and SHM_RND change nothing: memory is not protected per
/// page, and a segment can only be at its one address anyway.
pub fn shmat(id: u64, want: u64, _flags: u64) -> Result {
    let mut t = TABLE.lock();
    let s = t
        .segs
        .iter_mut()
        .find(|s| s.id == id as i32)
        .ok_or(Errno::EINVAL)?;
    // One address space: a segment can only be where it already is.
    if want != 0 && want != s.addr {
        return Err(Errno::EINVAL);
    }
    let pid = crate::proc::pid();
    s.attached.push(pid);
    s.atime = Time::now().sec;
    s.lpid = pid;
    Ok(s.addr as i64)
}

pub fn shmdt(addr: u64) -> Result {
    let pid = crate::proc::pid();
    let freed = {
        let mut t = TABLE.lock();
        let i = t
            .segs
            .iter()
            .position(|s| s.addr == addr && s.attached.contains(&pid))
            .ok_or(Errno::EINVAL)?;
        let s = &mut t.segs[i];
        let a = s
            .attached
            .iter()
            .position(|&p| p == pid)
            .expect("found above");
        s.attached.swap_remove(a);
        s.dtime = Time::now().sec;
        s.lpid = pid;
        release_if_done(&mut t, i)
    };
    free(freed)
}

/// A process is gone (exit, execve): what it left attached is detached.
pub fn detach_all_of(pid: u32) {
    let mut freed = Vec::new();
    {
        let mut t = TABLE.lock();
        let mut i = 0;
        while i < t.segs.len() {
            let s = &mut t.segs[i];
            let before = s.attached.len();
            s.attached.retain(|&p| p != pid);
            if s.attached.len() < before {
                s.dtime = Time::now().sec;
                s.lpid = pid;
            }
            match release_if_done(&mut t, i) {
                Some(range) => freed.push(range),
                None => i += 1,
            }
        }
    }
    for range in freed {
        let _ = free(Some(range));
    }
}

/// Take segment `i` out of the table if nothing keeps it; its memory is
/// given back by the caller, outside the table lock.
fn release_if_done(t: &mut Table, i: usize) -> Option<(u64, u64)> {
    let s = &t.segs[i];
    if s.removed && s.attached.is_empty() {
        let s = t.segs.remove(i);
        Some((s.addr, mem::page_up(s.size)))
    } else {
        None
    }
}

fn free(range: Option<(u64, u64)>) -> Result {
    if let Some((addr, len)) = range {
        mem::free(addr, len)?;
    }
    Ok(0)
}

pub fn shmctl(id: u64, cmd: u64, buf: u64) -> Result {
    let cmd = cmd & !IPC_64;
    if cmd == IPC_INFO {
        return Err(Errno::EINVAL);
    }
    let freed = {
        let mut t = TABLE.lock();
        // SHM_STAT takes an index into the table instead of an id.
        let i = if cmd == SHM_STAT {
            ((id as usize) < t.segs.len())
                .then_some(id as usize)
                .ok_or(Errno::EINVAL)?
        } else {
            t.segs
                .iter()
                .position(|s| s.id == id as i32)
                .ok_or(Errno::EINVAL)?
        };
        match cmd {
            IPC_STAT | SHM_STAT => {
                let s = &t.segs[i];
                let ds = ShmidDs {
                    key: if s.removed { 0 } else { s.key },
                    uid: super::ids::UID as u32,
                    gid: super::ids::GID as u32,
                    cuid: super::ids::UID as u32,
                    cgid: super::ids::GID as u32,
                    mode: s.mode | if s.removed { SHM_DEST } else { 0 },
                    segsz: s.size,
                    atime: s.atime,
                    dtime: s.dtime,
                    ctime: s.ctime,
                    cpid: s.cpid as i32,
                    lpid: s.lpid as i32,
                    nattch: s.attached.len() as u64,
                    ..ShmidDs::default()
                };
                uaccess::write(buf, &ds)?;
                return Ok(if cmd == SHM_STAT { s.id as i64 } else { 0 });
            }
            IPC_SET => {
                let ds: ShmidDs = uaccess::read(buf)?;
                let s = &mut t.segs[i];
                s.mode = (s.mode & !0o777) | (ds.mode & 0o777);
                s.ctime = Time::now().sec;
                return Ok(0);
            }
            IPC_RMID => {
                t.segs[i].removed = true;
                release_if_done(&mut t, i)
            }
            // SHM_LOCK / SHM_UNLOCK: memory here is never swapped anyway.
            11 | 12 => None,
            _ => return Err(Errno::EINVAL),
        }
    };
    free(freed)
}
