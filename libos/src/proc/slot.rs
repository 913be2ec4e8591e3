//! Address ranges ("slots") that each hold one process's copy of the
//! program, side by side in the window above RAM (arch::paging).
//!
//! All processes share one address space, so a switch between them is a
//! jump, never a page-table change (a CPL0 trap on PVM). What keeps them
//! apart is that each runs the program at a base of its own: the read-only
//! segments of every slot map the one copy in the image, the writable ones
//! (.data, .got, .bss) map RAM of the slot's own. A slot outlives its
//! process and is handed to the next one with its tables and pages in
//! place: on PVM the first touch of a page through a new mapping costs
//! ~25-36 µs, so a reused slot starts a process without those.

use super::program::{PAGE, Program};
use crate::arch::{image, paging, uaccess};
use crate::mem;
use crate::syscall::Errno;
use alloc::vec::Vec;
use spin::Mutex;

/// Slots are this far apart: 2 MiB multiples, so no page table is shared
/// between two of them.
const ALIGN: u64 = 2 << 20;

struct Made {
    base: u64,
    /// The slot's writable pages: (RAM address, pages) per writable segment.
    private: Vec<(u64, u64)>,
    /// Page-table pages made for its mappings.
    tables: u64,
}

impl Made {
    fn private_bytes(&self) -> u64 {
        self.private.iter().map(|&(_, pages)| pages * PAGE).sum()
    }
}

/// RAM the slots hold, in bytes (meminfo).
pub struct Usage {
    /// Writable pages of slots not on the free list: running a process (or
    /// lost to a mapping that failed half way).
    pub in_use: u64,
    /// Writable pages of slots kept for the next process.
    pub kept: u64,
    /// Page tables of all slots.
    pub page_tables: u64,
}

pub fn usage() -> Usage {
    let pool = POOL.lock();
    let all: u64 = pool.made.iter().map(Made::private_bytes).sum();
    let kept: u64 = pool
        .free
        .iter()
        .map(|&i| pool.made[i].private_bytes())
        .sum();
    Usage {
        in_use: all - kept,
        kept,
        page_tables: pool.made.iter().map(|m| m.tables * PAGE).sum(),
    }
}

struct Pool {
    span: u64,
    made: Vec<Made>,
    free: Vec<usize>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    span: 0,
    made: Vec::new(),
    free: Vec::new(),
});

/// The program in the image, parsed once.
pub fn program() -> &'static Program {
    static PROGRAM: spin::Once<Program> = spin::Once::new();
    PROGRAM.call_once(|| match Program::parse(image::program_file()) {
        Ok(p) => p,
        Err(e) => {
            crate::log!("libos: the image's program: {e}");
            crate::platform::exit(crate::EXIT_LIBOS)
        }
    })
}

/// A slot ready to run a fresh copy of the program: writable segments as in
/// the file, .bss zero. Returns its index and base.
pub fn take() -> Result<(usize, u64), Errno> {
    let p = program();
    let reused = POOL.lock().free.pop();
    let index = match reused {
        Some(i) => i,
        None => make(p)?,
    };
    let pool = POOL.lock();
    let made = &pool.made[index];
    for (seg, &(pa, pages)) in p.segments.iter().filter(|s| s.writable).zip(&made.private) {
        fill(seg, pa, pages);
    }
    Ok((index, made.base))
}

/// Where slot `index` starts.
pub fn base(index: usize) -> u64 {
    POOL.lock().made[index].base
}

/// The slot's process is gone: the next one may have it.
pub fn give_back(index: usize) {
    POOL.lock().free.push(index);
}

fn make(p: &Program) -> Result<usize, Errno> {
    let (index, base) = {
        let mut pool = POOL.lock();
        if pool.span == 0 {
            pool.span = p.span.div_ceil(ALIGN) * ALIGN;
        }
        let index = pool.made.len();
        let base = paging::WINDOW_BASE + index as u64 * pool.span;
        if base + pool.span > paging::WINDOW_END {
            return Err(Errno::EAGAIN);
        }
        // Claimed before mapping: a mapping that fails half way (no
        // memory) leaves its entries in place, so this range is never
        // offered again (it is not on the free list).
        pool.made.push(Made {
            base,
            private: Vec::new(),
            tables: 0,
        });
        (index, base)
    };
    let mut private = Vec::new();
    let mut tables = 0;
    let mapped = map_segments(p, base, &mut private, &mut tables);
    let mut pool = POOL.lock();
    // Recorded even if mapping failed half way: what it took stays taken.
    pool.made[index].private = private;
    pool.made[index].tables = tables;
    let end = base + pool.span;
    drop(pool);
    mapped?;
    uaccess::set_window_end(end);
    Ok(index)
}

/// Map the program's segments at `base`: read-only ones to the image,
/// writable ones to fresh RAM, recorded in `private`; `tables` counts the
/// page-table pages made.
fn map_segments(
    p: &Program,
    base: u64,
    private: &mut Vec<(u64, u64)>,
    tables: &mut u64,
) -> Result<(), Errno> {
    let file = image::program_file();
    let file_at = file.as_ptr() as u64;
    let mut new_table = || {
        let page = mem::alloc_top(PAGE)?;
        *tables += 1;
        Ok(page)
    };
    for seg in &p.segments {
        let first = if seg.writable {
            let pa = mem::alloc_top_or_reclaim(seg.pages * PAGE)?;
            private.push((pa, seg.pages));
            pa
        } else {
            // Page-congruent (program.rs checked): page i of the segment is
            // page i from the file page holding its first byte.
            let first = file_at + (seg.offset & !(PAGE - 1));
            if first + (seg.pages - 1) * PAGE >= file_at + file.len() as u64 {
                return Err(Errno::ENOEXEC);
            }
            first
        };
        for i in 0..seg.pages {
            let va = base + seg.page_va + i * PAGE;
            paging::map(va, first + i * PAGE, seg.writable, &mut new_table)?;
        }
    }
    Ok(())
}

/// A writable segment as the file has it: its bytes, then zeros.
fn fill(seg: &super::program::Segment, pa: u64, pages: u64) {
    uaccess::zero(pa, pages * PAGE);
    let file = image::program_file();
    let bytes = &file[seg.offset as usize..(seg.offset + seg.filesz) as usize];
    let at = pa + (seg.vaddr - seg.page_va);
    if let Ok(mut dst) = uaccess::slice_mut(at, bytes.len() as u64) {
        dst.copy_from_slice(bytes);
    }
}
