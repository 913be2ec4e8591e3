//! The program's memory, as the system calls see it.
//!
//! Program and libOS share one identity-mapped address space, so a pointer a
//! program passes is a guest physical address. These functions are the one
//! place that turns such an address into a Rust slice, after checking it lies
//! in RAM and not in the unmapped first page.

use crate::syscall::Errno;
use core::sync::atomic::{AtomicU64, Ordering};

static RAM_END: AtomicU64 = AtomicU64::new(0);

pub fn set_ram_end(end: u64) {
    RAM_END.store(end, Ordering::Relaxed);
}

fn check(addr: u64, len: u64) -> Result<(), Errno> {
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    if len == 0 {
        return Ok(());
    }
    if addr < 4096 || end > RAM_END.load(Ordering::Relaxed) {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

pub fn slice(addr: u64, len: u64) -> Result<&'static [u8], Errno> {
    check(addr, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: checked to lie inside guest RAM, which is identity mapped and
    // never unmapped. The program may change it concurrently only from a
    // signal handler we call ourselves, i.e. not while this slice is used.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

pub fn slice_mut(addr: u64, len: u64) -> Result<&'static mut [u8], Errno> {
    check(addr, len)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as `slice`; the caller holds the only Rust reference to this
    // program buffer for the duration of the system call.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
}

/// A NUL-terminated string the program passes (a path): its bytes without
/// the NUL. No NUL within `max` bytes is ENAMETOOLONG, as Linux reports for
/// a path of PATH_MAX bytes or more.
pub fn c_str(addr: u64, max: u64) -> Result<&'static [u8], Errno> {
    let ram_end = RAM_END.load(Ordering::Relaxed);
    if addr < 4096 || addr >= ram_end {
        return Err(Errno::EFAULT);
    }
    let avail = (ram_end - addr).min(max);
    let bytes = slice(addr, avail)?;
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => Ok(&bytes[..n]),
        None if avail == max => Err(Errno::ENAMETOOLONG),
        None => Err(Errno::EFAULT),
    }
}

/// Copy a plain-data value out to the program.
pub fn write<T: Copy>(addr: u64, value: &T) -> Result<(), Errno> {
    let bytes = slice_mut(addr, core::mem::size_of::<T>() as u64)?;
    // SAFETY: T is Copy plain data (the kernel ABI structs we define); we
    // copy its bytes verbatim, exactly as the kernel would.
    let src = unsafe {
        core::slice::from_raw_parts(value as *const T as *const u8, core::mem::size_of::<T>())
    };
    bytes.copy_from_slice(src);
    Ok(())
}

/// Copy a plain-data value in from the program.
pub fn read<T: Copy + Default>(addr: u64) -> Result<T, Errno> {
    let bytes = slice(addr, core::mem::size_of::<T>() as u64)?;
    let mut value = T::default();
    // SAFETY: as `write`, in the other direction; every T we use accepts any
    // bit pattern (integers only).
    unsafe {
        core::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            &mut value as *mut T as *mut u8,
            core::mem::size_of::<T>(),
        )
    };
    Ok(value)
}

/// Zero a range of memory the allocator is handing out again.
pub fn zero(addr: u64, len: u64) {
    if let Ok(s) = slice_mut(addr, len) {
        s.fill(0);
    }
}

/// Move bytes within guest memory (mremap), ranges may overlap.
pub fn copy_within(src: u64, dst: u64, len: u64) -> Result<(), Errno> {
    check(src, len)?;
    check(dst, len)?;
    // SAFETY: both ranges checked to lie in guest RAM; `copy` handles overlap.
    unsafe { core::ptr::copy(src as *const u8, dst as *mut u8, len as usize) };
    Ok(())
}

/// A page of RAM the libOS owns on behalf of a file (a MAP_SHARED
/// mapping's page, see fs::data). Panics on an address outside RAM: the
/// libOS made the mapping, so that would be its bug.
pub fn page_mut(addr: u64) -> &'static mut [u8; 4096] {
    let s = slice_mut(addr, 4096).expect("mapped file page outside RAM");
    s.try_into().expect("4096-byte slice")
}
