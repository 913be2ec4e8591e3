//! The libOS's own heap (for `alloc`), kept apart from the program's malloc,
//! which sits on brk/mmap. It grows in chunks taken from the top of RAM.

use core::alloc::Layout;
use talc::{TalcLock, base::Talc, source::Source};

#[derive(Debug)]
pub struct FromRam;

const CHUNK: u64 = 256 * 1024;

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
        // SAFETY: [at, at+len) is RAM nobody else owns (see above).
        unsafe { talc.claim(at as *mut u8, len as usize) }
            .map(|_| ())
            .ok_or(())
    }
}

#[global_allocator]
static HEAP: TalcLock<spin::Mutex<()>, FromRam> = TalcLock::new(FromRam);
