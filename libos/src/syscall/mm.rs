//! Anonymous memory: mmap, munmap, mremap, mprotect, madvise.
//!
//! All memory is readable, writable and executable (one identity map, no
//! per-page protection yet), so mprotect only validates its arguments.

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::mem::{self, PAGE};

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

pub fn mmap(addr: u64, len: u64, _prot: u64, flags: u64, fd: i64, offset: u64) -> Result {
    if len == 0 || len > (1 << 46) || flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        // File mappings arrive with the file system.
        let _ = (fd, offset);
        return Err(Errno::ENODEV);
    }
    let len = mem::page_up(len);
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        aligned(addr)?;
        if flags & MAP_FIXED_NOREPLACE != 0 && !mem::is_free(addr, len) {
            return Err(Errno::EEXIST);
        }
        mem::free(addr, len).map_err(|_| Errno::ENOMEM)?;
        mem::alloc_fixed(addr, len)?;
        return Ok(addr as i64);
    }
    Ok(mem::alloc_top(len)? as i64)
}

pub fn munmap(addr: u64, len: u64) -> Result {
    aligned(addr)?;
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    mem::free(addr, len)?;
    Ok(0)
}

pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, _new_addr: u64) -> Result {
    aligned(old)?;
    if new_len == 0 || flags & MREMAP_FIXED != 0 {
        return Err(Errno::EINVAL);
    }
    let (old_len, new_len) = (mem::page_up(old_len), mem::page_up(new_len));
    if new_len <= old_len {
        if new_len < old_len {
            mem::free(old + new_len, old_len - new_len)?;
        }
        return Ok(old as i64);
    }
    let grow = new_len - old_len;
    if mem::is_free(old + old_len, grow) {
        mem::alloc_fixed(old + old_len, grow)?;
        return Ok(old as i64);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::ENOMEM);
    }
    let new = mem::alloc_top(new_len)?;
    uaccess::copy_within(old, new, old_len)?;
    mem::free(old, old_len)?;
    Ok(new as i64)
}

/// mprotect and madvise. MADV_DONTNEED must leave zeroes behind, as Linux
/// does for private anonymous memory; the other advice changes nothing here.
pub fn madvise(addr: u64, len: u64, advice: u64) -> Result {
    aligned(addr)?;
    if advice == MADV_DONTNEED {
        uaccess::zero(addr, mem::page_up(len));
    }
    Ok(0)
}

pub fn mprotect(addr: u64) -> Result {
    aligned(addr)?;
    Ok(0)
}
