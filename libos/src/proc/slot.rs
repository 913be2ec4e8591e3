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
    let file = image::program_file();
    let file_at = file.as_ptr() as u64;
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
        });
        (index, base)
    };
    let mut new_table = || mem::alloc_top(PAGE);
    let mut private = Vec::new();
    for seg in &p.segments {
        let first = if seg.writable {
            let pa = mem::alloc_top(seg.pages * PAGE)?;
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
    let mut pool = POOL.lock();
    pool.made[index].private = private;
    let end = base + pool.span;
    drop(pool);
    uaccess::set_window_end(end);
    Ok(index)
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
