//! Page-table edits for the program's per-process address ranges.
//!
//! Guest RAM stays identity mapped (boot.s, 0..4 GiB). Above it, from
//! [`WINDOW_BASE`] (512 GiB, the second PML4 entry), the libOS maps each
//! process's copy of the program (proc/slot.rs): its read-only pages point
//! at the one copy in the image, its writable pages at RAM of its own.
//!
//! Every edit here makes a not-present entry present and nothing is ever
//! unmapped or remapped, so no TLB entry can be stale and no flush (a CPL0
//! trap, ~13 µs on PVM) is needed: the MMU (or PVM's shadow MMU, on the
//! first touch) walks the tables afresh. The tables are ordinary RAM the
//! libOS writes at CPL3 (every page is U/S=1 and writable there).

use crate::syscall::Errno;

/// Where the program windows start: PML4 entry 1.
pub const WINDOW_BASE: u64 = 1 << 39;
/// How far they may reach: the rest of PML4 entry 1 (512 GiB).
pub const WINDOW_END: u64 = 2 << 39;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const HUGE: u64 = 0x80;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

unsafe extern "C" {
    static mut pml4: [u64; 512];
}

/// The table `entry` points to, made (zeroed, from `new_table`) if absent.
fn next_table(
    table: u64,
    index: u64,
    new_table: &mut dyn FnMut() -> Result<u64, Errno>,
) -> Result<u64, Errno> {
    let slot = (table + index * 8) as *mut u64;
    // SAFETY: `table` is a page-table page in identity-mapped RAM (pml4 or
    // one this module made from `new_table`), `index` < 512.
    let entry = unsafe { slot.read_volatile() };
    if entry & PRESENT != 0 {
        if entry & HUGE != 0 {
            return Err(Errno::EINVAL);
        }
        return Ok(entry & ADDR);
    }
    let page = new_table()?;
    // SAFETY: `page` is a fresh 4 KiB page of RAM the caller handed over for
    // good; zeroed before it becomes reachable from the tables.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };
    // SAFETY: as above; not-present -> present needs no flush.
    unsafe { slot.write_volatile(page | PRESENT | WRITABLE | USER) };
    Ok(page)
}

/// Map the 4 KiB page at `va` (in the window, not mapped yet) to RAM page
/// `pa`. `new_table` hands out zero-filled pages for missing tables.
pub fn map(
    va: u64,
    pa: u64,
    writable: bool,
    new_table: &mut dyn FnMut() -> Result<u64, Errno>,
) -> Result<(), Errno> {
    if !(WINDOW_BASE..WINDOW_END).contains(&va)
        || !va.is_multiple_of(4096)
        || !pa.is_multiple_of(4096)
    {
        return Err(Errno::EINVAL);
    }
    let root = core::ptr::addr_of_mut!(pml4) as u64;
    let pdpt = next_table(root, (va >> 39) & 511, new_table)?;
    let pd = next_table(pdpt, (va >> 30) & 511, new_table)?;
    let pt = next_table(pd, (va >> 21) & 511, new_table)?;
    let slot = (pt + ((va >> 12) & 511) * 8) as *mut u64;
    let flags = PRESENT | USER | if writable { WRITABLE } else { 0 };
    // SAFETY: `pt` is a page table reached above; the entry is ours alone.
    unsafe {
        if slot.read_volatile() & PRESENT != 0 {
            return Err(Errno::EEXIST);
        }
        slot.write_volatile(pa | flags);
    }
    Ok(())
}
