//! The libOS's own heap (for `alloc`), kept apart from the program's malloc,
//! which sits on brk/mmap. It grows in chunks taken from the top of RAM.
//!
//! Blocks of [`PAGES_FROM`] bytes and more (a socket's buffers, a file's
//! data) are whole pages straight from `mem`, as a large malloc is an
//! mmap: pages never used before read as zero without being written, so
//! such a block costs nothing until it is used. A TCP socket's 128 KiB of
//! buffers, zeroed through the general heap, touched 32 fresh pages (~1 ms
//! on PVM) and kept them: 1,000 idle connections held 128 MiB.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use talc::{TalcLock, base::Talc, source::Source};

#[derive(Debug)]
pub struct FromRam;

const CHUNK: u64 = 256 * 1024;

/// Bytes of RAM the heap holds now: small-block chunks (never given back)
/// and live page blocks (meminfo's LibosHeap).
static HELD: AtomicU64 = AtomicU64::new(0);

pub fn held_bytes() -> u64 {
    HELD.load(Ordering::Relaxed)
}

// SAFETY (trait contract): `acquire` only ever claims fresh, page-aligned
// ranges that mem::alloc_top handed out exclusively to the heap and that are
// never given back.
unsafe impl Source for FromRam {
    fn acquire<B: talc::base::binning::Binning>(
        talc: &mut Talc<Self, B>,
        layout: Layout,
    ) -> Result<(), ()> {
        let want = (layout.size() as u64 + layout.align() as u64 + 4096).max(CHUNK);
        let len = crate::mem::page_up(want);
        let at = crate::mem::alloc_top(len).map_err(|_| ())?;
        HELD.fetch_add(len, Ordering::Relaxed);
        // SAFETY: [at, at+len) is RAM nobody else owns (see above).
        unsafe { talc.claim(at as *mut u8, len as usize) }
            .map(|_| ())
            .ok_or(())
    }
}

static SMALL: TalcLock<spin::Mutex<()>, FromRam> = TalcLock::new(FromRam);

/// From this size up a block is pages of its own.
const PAGES_FROM: usize = 32 * 1024;
const PAGE: usize = 4096;

struct Heap;

static LEAK_SAID: AtomicBool = AtomicBool::new(false);

fn whole_pages(layout: Layout) -> bool {
    layout.size() >= PAGES_FROM && layout.align() <= PAGE
}

// SAFETY (trait contract): small blocks are talc's, which upholds it; a
// large block is a page range `mem` gave to us alone until `dealloc` gives
// it back (`mem::alloc_top` zeroes ranges used before, so every large
// block is zeroed, as `alloc_zeroed` needs), page aligned, so any
// alignment up to a page holds.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if whole_pages(layout) {
            let len = crate::mem::page_up(layout.size() as u64);
            // No heap lock is held here: the volume's page cache may give
            // way (it does nothing while the volume is busy, as it is
            // when the cache itself allocates).
            return crate::mem::alloc_top_or_reclaim(len).map_or(core::ptr::null_mut(), |at| {
                HELD.fetch_add(len, Ordering::Relaxed);
                at as *mut u8
            });
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { SMALL.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if whole_pages(layout) {
            // SAFETY: as above; large blocks come zeroed.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { SMALL.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if whole_pages(layout) {
            // Cannot fail for a range alloc_top gave, but for mem's list
            // of free ranges being full: then the pages stay taken, said
            // once (log writes into a stack buffer: no allocation here).
            let len = crate::mem::page_up(layout.size() as u64);
            if crate::mem::free(ptr as u64, len).is_ok() {
                HELD.fetch_sub(len, Ordering::Relaxed);
            } else if !LEAK_SAID.swap(true, Ordering::Relaxed) {
                crate::log!(
                    "libos: heap: could not give {} bytes back (too many free ranges); kept",
                    layout.size()
                );
            }
            return;
        }
        // SAFETY: a small block talc gave (same layout, caller's contract).
        unsafe { SMALL.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees hold for the new layout too.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !whole_pages(layout) && !whole_pages(new) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { SMALL.realloc(ptr, layout, new_size) };
        }
        // Across the two kinds (or between page blocks): move.
        // SAFETY: `new` has a non-zero size (new_size >= the old size's
        // kind threshold, or the caller's non-zero new_size).
        let to = unsafe { self.alloc(new) };
        if !to.is_null() {
            // SAFETY: both blocks are live and distinct; the copy stays
            // within the smaller of the two.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        to
    }
}

#[global_allocator]
static HEAP: Heap = Heap;
