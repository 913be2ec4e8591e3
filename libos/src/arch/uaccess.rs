//! The program's memory, as the system calls see it.
//!
//! Program and libOS share one identity-mapped address space, so a pointer a
//! program passes is a guest physical address. This module is the one place
//! that turns such an address into something Rust can use, after checking
//! it lies in RAM and not in the unmapped first page:
//!
//! - [`read`] and [`write`] copy one value in or out. The type says what may
//!   cross: `read` only makes types for which any bytes are a valid value
//!   (zerocopy's `FromBytes`: integers and structs/arrays of them, never a
//!   `bool`, an enum or a reference), and `write` only copies types whose
//!   every byte is initialised (`IntoBytes`, so no padding leaks libOS
//!   memory) and that have no interior mutability (`Immutable`). Both copy
//!   through raw pointers, unaligned, and never make a reference into the
//!   program's memory.
//! - [`slice`] and [`slice_mut`] lend a buffer (read(2) fills the program's
//!   buffer in place; write(2) sends it). A reference into guest memory is
//!   only sound while no other reference to the same bytes is live, and
//!   the program decides the addresses: it may pass overlapping buffers, or
//!   a buffer inside a MAP_SHARED mapping of the very file the call reads
//!   (whose pages fs::data borrows from here too). So a loan is a guard
//!   ([`UserRef`], [`UserMut`]) that derefs to the bytes for its own
//!   lifetime only, and every live loan is recorded: a loan that would
//!   overlap a live exclusive one, or an exclusive loan that would overlap
//!   any live one, fails with EFAULT instead of aliasing (RefCell's rule,
//!   by address range). Guards are dropped by the end of each system call.
//!
//! What this cannot cover: the program itself writing its memory while a
//! loan is live. It can only run inside a system call through a signal
//! handler, and handlers run after the call's guards are gone.

use crate::syscall::Errno;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use zerocopy::{FromBytes, Immutable, IntoBytes};

static RAM_END: AtomicU64 = AtomicU64::new(0);

/// The end of the program slots mapped so far (proc/slot.rs), from
/// `paging::WINDOW_BASE`; 0 before the first.
static WINDOW_END: AtomicU64 = AtomicU64::new(0);

pub fn set_ram_end(end: u64) {
    RAM_END.store(end, Ordering::Relaxed);
}

/// Slots are only ever added, so the end only grows.
pub fn set_window_end(end: u64) {
    WINDOW_END.fetch_max(end, Ordering::Relaxed);
}

/// Whether `[addr, addr+len)` may be touched, with RAM ending at `ram_end`
/// and the program slots at `[WINDOW_BASE, window_end)`.
fn check_in(addr: u64, len: u64, ram_end: u64, window_end: u64) -> Result<(), Errno> {
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    if len == 0 {
        return Ok(());
    }
    let in_ram = addr >= 4096 && end <= ram_end;
    let in_window = addr >= WINDOW_BASE && end <= window_end;
    if !in_ram && !in_window {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

fn check(addr: u64, len: u64) -> Result<(), Errno> {
    check_in(
        addr,
        len,
        RAM_END.load(Ordering::Relaxed),
        WINDOW_END.load(Ordering::Relaxed),
    )
}

/// Where the program slots start (arch::paging::WINDOW_BASE; repeated here
/// because that module only exists in the image).
const WINDOW_BASE: u64 = 1 << 39;

/// Live loans: (start, end, exclusive). Few at a time (a system call holds
/// one or two, fs::data one more), so a small array.
pub struct Loans {
    live: [(u64, u64, bool); MAX_LOANS],
    n: usize,
}

const MAX_LOANS: usize = 16;

static LOANS: spin::Mutex<Loans> = spin::Mutex::new(Loans {
    live: [(0, 0, false); MAX_LOANS],
    n: 0,
});

impl Loans {
    pub const fn new() -> Loans {
        Loans {
            live: [(0, 0, false); MAX_LOANS],
            n: 0,
        }
    }

    fn take(&mut self, start: u64, end: u64, exclusive: bool) -> Result<(), Errno> {
        let clash = self.live[..self.n]
            .iter()
            .any(|&(s, e, x)| s < end && start < e && (x || exclusive));
        if clash {
            return Err(Errno::EFAULT);
        }
        // More live loans than any system call makes: a libOS bug.
        assert!(self.n < MAX_LOANS, "uaccess: too many live loans");
        self.live[self.n] = (start, end, exclusive);
        self.n += 1;
        Ok(())
    }

    fn give_back(&mut self, start: u64, end: u64, exclusive: bool) {
        if let Some(i) = self.live[..self.n]
            .iter()
            .position(|&l| l == (start, end, exclusive))
        {
            self.live[i] = self.live[self.n - 1];
            self.n -= 1;
        }
    }
}

/// Loans belong to the process whose system call took them, and a process
/// may switch away while it holds some (a read waiting for data): each
/// process keeps its own table (proc: a process switch swaps them).
pub fn swap_loans(other: &mut Loans) {
    core::mem::swap(&mut *LOANS.lock(), other);
}

/// A checked, recorded range of guest memory (empty ranges are not recorded).
struct Loan {
    addr: u64,
    len: u64,
    exclusive: bool,
}

impl Loan {
    fn new(addr: u64, len: u64, exclusive: bool) -> Result<Loan, Errno> {
        check(addr, len)?;
        if len != 0 {
            LOANS.lock().take(addr, addr + len, exclusive)?;
        }
        Ok(Loan {
            addr,
            len,
            exclusive,
        })
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if self.len != 0 {
            LOANS
                .lock()
                .give_back(self.addr, self.addr + self.len, self.exclusive);
        }
    }
}

/// The program's bytes, lent for reading (see the module doc).
pub struct UserRef(Loan);

/// The program's bytes, lent for writing (see the module doc).
pub struct UserMut(Loan);

impl core::ops::Deref for UserRef {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.0.len == 0 {
            return &[];
        }
        // SAFETY: checked to lie inside guest RAM, which is identity mapped
        // and never unmapped; the loan table guarantees no exclusive loan
        // overlaps it while this guard (which bounds the reference) lives.
        unsafe { core::slice::from_raw_parts(self.0.addr as *const u8, self.0.len as usize) }
    }
}

impl core::ops::Deref for UserMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.0.len == 0 {
            return &[];
        }
        // SAFETY: as UserRef.
        unsafe { core::slice::from_raw_parts(self.0.addr as *const u8, self.0.len as usize) }
    }
}

impl core::ops::DerefMut for UserMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.0.len == 0 {
            return &mut [];
        }
        // SAFETY: in RAM as above; the loan table guarantees no other loan
        // overlaps this one, and `&mut self` that no other reference from
        // this guard is live.
        unsafe { core::slice::from_raw_parts_mut(self.0.addr as *mut u8, self.0.len as usize) }
    }
}

/// Lend `[addr, addr+len)` for reading: EFAULT outside RAM or while part of
/// it is lent for writing.
pub fn slice(addr: u64, len: u64) -> Result<UserRef, Errno> {
    Loan::new(addr, len, false).map(UserRef)
}

/// Lend `[addr, addr+len)` for writing: EFAULT outside RAM or while part of
/// it is lent at all.
pub fn slice_mut(addr: u64, len: u64) -> Result<UserMut, Errno> {
    Loan::new(addr, len, true).map(UserMut)
}

/// Boot data the host left in RAM (the runner's command line), which lives
/// as long as the libOS and which the allocator keeps off (libos_main).
/// Not for anything the program hands us.
pub fn boot_bytes(addr: u64, len: u64) -> Result<&'static [u8], Errno> {
    check(addr, len)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: in RAM (checked); nothing writes it: it is read before the
    // program starts, and its pages are never handed out.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// A NUL-terminated string the program passes (a path), copied in without
/// the NUL, as Linux's getname does. No NUL within `max` bytes is
/// ENAMETOOLONG, as Linux reports for a path of PATH_MAX bytes or more.
pub fn c_str(addr: u64, max: u64) -> Result<Vec<u8>, Errno> {
    let ram_end = RAM_END.load(Ordering::Relaxed);
    let window_end = WINDOW_END.load(Ordering::Relaxed);
    let region_end = if (4096..ram_end).contains(&addr) {
        ram_end
    } else if (WINDOW_BASE..window_end).contains(&addr) {
        window_end
    } else {
        return Err(Errno::EFAULT);
    };
    let avail = (region_end - addr).min(max);
    let bytes = slice(addr, avail)?;
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => Ok(bytes[..n].to_vec()),
        None if avail == max => Err(Errno::ENAMETOOLONG),
        None => Err(Errno::EFAULT),
    }
}

/// Copy a value out to the program: a type with no padding (IntoBytes),
/// copied byte for byte as the kernel would.
pub fn write<T: IntoBytes + Immutable + ?Sized>(addr: u64, value: &T) -> Result<(), Errno> {
    let src = value.as_bytes();
    // A live loan of the destination would be aliased by the copy.
    let _dst = slice_mut(addr, src.len() as u64)?;
    // SAFETY: the destination is in RAM (checked) and lent to nobody else
    // (the exclusive loan above); `src` is the libOS's own value.
    unsafe { core::ptr::copy(src.as_ptr(), addr as *mut u8, src.len()) };
    Ok(())
}

/// Copy a value in from the program: a type every byte pattern is a valid
/// value of (FromBytes), read unaligned.
pub fn read<T: FromBytes>(addr: u64) -> Result<T, Errno> {
    let _src = slice(addr, core::mem::size_of::<T>() as u64)?;
    // SAFETY: the source is in RAM (checked) and not lent for writing (the
    // shared loan above); any bytes are a valid T (FromBytes).
    Ok(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Zero a range of memory the allocator is handing out again (free memory:
/// nothing may hold a loan of it, so none is taken).
pub fn zero(addr: u64, len: u64) {
    if check(addr, len).is_ok() {
        // SAFETY: in RAM (checked); no reference is made.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len as usize) };
    }
}

/// Move bytes within guest memory (mremap), ranges may overlap.
pub fn copy_within(src: u64, dst: u64, len: u64) -> Result<(), Errno> {
    check(src, len)?;
    check(dst, len)?;
    // SAFETY: both ranges checked to lie in guest RAM; `copy` handles
    // overlap and no reference to either range is made.
    unsafe { core::ptr::copy(src as *const u8, dst as *mut u8, len as usize) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host addresses stand for guest ones: RAM is "everything".
    fn host_ram() {
        set_ram_end(u64::MAX);
    }

    fn addr<T>(v: &T) -> u64 {
        v as *const T as u64
    }

    #[test]
    fn the_first_page_and_past_ram_are_efault() {
        assert_eq!(check_in(0, 1, 1 << 30, 0), Err(Errno::EFAULT));
        assert_eq!(check_in(4095, 1, 1 << 30, 0), Err(Errno::EFAULT));
        assert_eq!(check_in(4096, 1, 1 << 30, 0), Ok(()));
        assert_eq!(check_in((1 << 30) - 8, 8, 1 << 30, 0), Ok(()));
        assert_eq!(check_in((1 << 30) - 8, 9, 1 << 30, 0), Err(Errno::EFAULT));
        // Wrapping around the address space.
        assert_eq!(check_in(u64::MAX, 2, u64::MAX, 0), Err(Errno::EFAULT));
        // An empty range anywhere (even NULL) is fine, as on Linux.
        assert_eq!(check_in(0, 0, 1 << 30, 0), Ok(()));
    }

    #[test]
    fn the_program_slots_mapped_so_far_are_user_memory() {
        let end = WINDOW_BASE + (4 << 20);
        assert_eq!(check_in(WINDOW_BASE, 8, 1 << 30, end), Ok(()));
        assert_eq!(check_in(end - 8, 8, 1 << 30, end), Ok(()));
        assert_eq!(check_in(end - 8, 9, 1 << 30, end), Err(Errno::EFAULT));
        assert_eq!(check_in(WINDOW_BASE, 8, 1 << 30, 0), Err(Errno::EFAULT));
        // Not both at once: RAM's end to the window is a hole.
        assert_eq!(
            check_in((1 << 30) - 8, 16, 1 << 30, end),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn read_and_write_copy_plain_data_unaligned() {
        host_ram();
        let mut buf = vec![0u8; 16];
        let at = buf.as_mut_ptr() as u64;
        write(at + 1, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(read::<u64>(at + 1), Ok(0x1122_3344_5566_7788));
        write(at + 9, &[1i16, -1]).unwrap();
        assert_eq!(read::<[i16; 2]>(at + 9), Ok([1, -1]));
        assert_eq!(&buf[..4], &[0, 0x88, 0x77, 0x66]);
        assert_eq!(&buf[9..13], &[1, 0, 0xff, 0xff]);
        assert_eq!(read::<u32>(100), Err(Errno::EFAULT));
        assert_eq!(write(8, &1u8), Err(Errno::EFAULT));
    }

    #[test]
    fn overlapping_loans_follow_refcell_rules() {
        host_ram();
        let mut buf = vec![0u8; 64];
        let a = buf.as_mut_ptr() as u64;
        {
            let _r1 = slice(a, 32).unwrap();
            let _r2 = slice(a + 16, 32).unwrap();
            // Writing while read-lent: refused, not aliased.
            assert!(slice_mut(a + 8, 4).is_err());
            assert_eq!(write(a + 20, &1u32), Err(Errno::EFAULT));
            // Disjoint memory is fine.
            let _w = slice_mut(a + 48, 16).unwrap();
            assert!(slice(a + 50, 1).is_err());
        }
        // Every guard dropped: everything can be lent again.
        let mut w = slice_mut(a, 64).unwrap();
        w[63] = 9;
        drop(w);
        assert_eq!(read::<u8>(a + 63), Ok(9));
        assert_eq!(buf[63], 9);
    }

    #[test]
    fn paths_are_copied_and_bounded_by_path_max() {
        host_ram();
        let s = *b"/tmp/x\0junk";
        assert_eq!(c_str(addr(&s), 4096).unwrap(), b"/tmp/x");
        let long = [b'a'; 64];
        assert_eq!(c_str(addr(&long), 64), Err(Errno::ENAMETOOLONG));
        assert_eq!(c_str(0, 4096), Err(Errno::EFAULT));
    }
}
