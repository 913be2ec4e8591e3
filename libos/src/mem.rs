//! Guest RAM bookkeeping: which page ranges are free, and the program break.
//!
//! RAM is identity mapped, so "allocating address space" and "allocating
//! memory" are the same thing. `mmap` takes ranges from the top of RAM down,
//! `brk` grows up from the end of the image; they meet in the middle.
//!
//! Pages the guest never touched cost nothing on the host, and a fresh page
//! reads as zero. So free ranges remember whether they are `dirty` (were
//! handed out before): only those are zeroed when handed out again, and we
//! never touch memory just to clear it.

use crate::syscall::Errno;
use spin::Mutex;

pub const PAGE: u64 = 4096;
/// Free ranges tracked at most (24 bytes each, in .bss: untouched until
/// used). The libOS's large heap blocks come from here too (arch/heap.rs),
/// so thousands of sockets closed in any order can leave one gap each.
const MAX_RANGES: usize = 16384;

#[derive(Clone, Copy, Default)]
struct Range {
    start: u64,
    len: u64,
    dirty: bool,
}

pub struct Ram {
    /// Free ranges, sorted by start, never overlapping.
    free: [Range; MAX_RANGES],
    nfree: usize,
    brk_start: u64,
    brk: u64,
    ram_end: u64,
}

static RAM: Mutex<Ram> = Mutex::new(Ram::new());

pub fn page_up(x: u64) -> u64 {
    (x + PAGE - 1) & !(PAGE - 1)
}

/// Everything from the end of the image to the end of RAM is free.
pub fn init(image_end: u64, ram_end: u64) {
    RAM.lock().init(image_end, ram_end);
}

/// Take `len` bytes (page multiple) from the highest free range that fits.
pub fn alloc_top(len: u64) -> Result<u64, Errno> {
    let (at, dirty) = RAM.lock().alloc_top(len)?;
    if dirty {
        crate::arch::uaccess::zero(at, page_up(len));
    }
    Ok(at)
}

/// [`alloc_top`] for a program's memory (mmap, a process's slot): when
/// RAM is short, the volume's page cache gives way first. Not for the
/// libOS heap, which may be called with the volume's lock held.
pub fn alloc_top_or_reclaim(len: u64) -> Result<u64, Errno> {
    match alloc_top(len) {
        // All of it: scattered blocks rarely make one long free range.
        Err(Errno::ENOMEM) if crate::fs::p9::shrink_cache(usize::MAX) > 0 => alloc_top(len),
        r => r,
    }
}

/// Take exactly `[at, at+len)`, which must be free (MAP_FIXED after unmap, brk).
pub fn alloc_fixed(at: u64, len: u64) -> Result<(), Errno> {
    let dirty = RAM.lock().alloc_fixed(at, len)?;
    if dirty {
        crate::arch::uaccess::zero(at, page_up(len));
    }
    Ok(())
}

/// Give `[at, at+len)` back. Parts already free are left as they are, so a
/// munmap of a range that is partly unmapped works as on Linux.
pub fn free(at: u64, len: u64) -> Result<(), Errno> {
    RAM.lock().free(at, len)
}

/// Whether `[at, at+len)` is entirely free.
pub fn is_free(at: u64, len: u64) -> bool {
    RAM.lock().is_free(at, len)
}

/// brk(2): 0 or an address below the current break answers the current one.
pub fn brk(want: u64) -> u64 {
    let (brk, zero) = RAM.lock().brk(want);
    if let Some((at, len)) = zero {
        crate::arch::uaccess::zero(at, len);
    }
    brk
}

/// Bytes of RAM not handed out (for sysinfo and diagnostics).
pub fn free_bytes() -> u64 {
    RAM.lock().free_bytes()
}

/// Bytes of RAM this allocator manages: from the page after the image to
/// the end of RAM (meminfo's MemTotal).
pub fn total_bytes() -> u64 {
    RAM.lock().total_bytes()
}

/// Guest RAM given back to the host in pieces of this size and alignment
/// (a transparent huge page of the host's).
const GIVE_BACK_CHUNK: u64 = 2 << 20;
/// Given back only when at least this much could go at once, and at most
/// once per [`GIVE_BACK_EVERY_NS`]: memory freed and soon used again
/// (a backend's sort) is not worth the host's faults of bringing it back
/// (~25 µs per 4 KiB page first touched on PVM).
const GIVE_BACK_MIN: u64 = 16 << 20;
const GIVE_BACK_EVERY_NS: u64 = 1_000_000_000;
static GIVE_BACK_LAST: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static GIVE_BACK_OFF: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The VM has nothing to run: free RAM that was used (dirty) goes back
/// to the host (`hc::DISCARD`), so a long-running server's host memory
/// follows what it uses, not its high-water mark. Given-back pages read
/// as zeroes, so they are free and clean again: handed out later without
/// being zeroed. Our runner only; off for good once it says it cannot
/// (a resumed VM).
pub fn give_back_when_idle() {
    use core::sync::atomic::Ordering::Relaxed;
    if GIVE_BACK_OFF.load(Relaxed) || crate::platform::host() != crate::platform::Host::Runner {
        return;
    }
    let now = crate::time::monotonic_ns();
    if now.saturating_sub(GIVE_BACK_LAST.load(Relaxed)) < GIVE_BACK_EVERY_NS {
        return;
    }
    GIVE_BACK_LAST.store(now, Relaxed);
    let mut chunks = [(0u64, 0u64); 64];
    let n = RAM.lock().dirty_chunks(GIVE_BACK_CHUNK, &mut chunks);
    if chunks[..n].iter().map(|c| c.1).sum::<u64>() < GIVE_BACK_MIN {
        return;
    }
    // Nothing allocates between the listing and the marking: one vCPU,
    // no process switch in here, and the hypercall allocates nothing.
    for &(at, len) in &chunks[..n] {
        match crate::platform::discard(at, len) {
            Ok(()) => {
                let _ = RAM.lock().mark_clean(at, len);
            }
            Err(Errno::EOPNOTSUPP) => {
                GIVE_BACK_OFF.store(true, Relaxed);
                return;
            }
            Err(_) => {}
        }
    }
}

/// The whole pages the program break holds, as [start, end).
pub fn brk_range() -> (u64, u64) {
    RAM.lock().brk_range()
}

/// The bookkeeping itself, without touching memory: the functions above
/// wrap the one `RAM` and zero what these methods report as dirty.
impl Ram {
    const fn new() -> Ram {
        Ram {
            free: [Range {
                start: 0,
                len: 0,
                dirty: false,
            }; MAX_RANGES],
            nfree: 0,
            brk_start: 0,
            brk: 0,
            ram_end: 0,
        }
    }

    fn init(&mut self, image_end: u64, ram_end: u64) {
        let start = page_up(image_end);
        self.free[0] = Range {
            start,
            len: ram_end.saturating_sub(start),
            dirty: false,
        };
        self.nfree = 1;
        self.brk_start = start;
        self.brk = start;
        self.ram_end = ram_end;
    }

    /// The address taken, and whether its pages were handed out before
    /// (so must be zeroed).
    fn alloc_top(&mut self, len: u64) -> Result<(u64, bool), Errno> {
        let len = page_up(len);
        let brk = self.brk;
        let i = (0..self.nfree)
            .rev()
            .find(|&i| {
                let r = self.free[i];
                r.len >= len && r.start + r.len - len >= brk
            })
            .ok_or(Errno::ENOMEM)?;
        let r = self.free[i];
        let at = r.start + r.len - len;
        self.take(i, at, len)?;
        Ok((at, r.dirty))
    }

    /// Whether the pages taken must be zeroed.
    fn alloc_fixed(&mut self, at: u64, len: u64) -> Result<bool, Errno> {
        let len = page_up(len);
        let i = (0..self.nfree)
            .find(|&i| {
                let r = self.free[i];
                r.start <= at && at + len <= r.start + r.len
            })
            .ok_or(Errno::ENOMEM)?;
        let dirty = self.free[i].dirty;
        self.take(i, at, len)?;
        Ok(dirty)
    }

    fn free(&mut self, at: u64, len: u64) -> Result<(), Errno> {
        let len = page_up(len);
        if at < self.brk_start || at + len > self.ram_end {
            return Err(Errno::EINVAL);
        }
        // Walk the gaps between free ranges that intersect [at, at+len).
        let mut cursor = at;
        let end = at + len;
        while cursor < end {
            let next_free = (0..self.nfree)
                .map(|i| self.free[i])
                .find(|r| r.start + r.len > cursor);
            match next_free {
                Some(r) if r.start <= cursor => cursor = r.start + r.len,
                Some(r) => {
                    let stop = r.start.min(end);
                    self.insert(Range {
                        start: cursor,
                        len: stop - cursor,
                        dirty: true,
                    })?;
                    cursor = stop;
                }
                None => {
                    self.insert(Range {
                        start: cursor,
                        len: end - cursor,
                        dirty: true,
                    })?;
                    cursor = end;
                }
            }
        }
        Ok(())
    }

    fn is_free(&self, at: u64, len: u64) -> bool {
        (0..self.nfree).any(|i| {
            let r = self.free[i];
            r.start <= at && at + len <= r.start + r.len
        })
    }

    /// The break after the call, and a range to zero (pages the break
    /// grew into that were used before).
    fn brk(&mut self, want: u64) -> (u64, Option<(u64, u64)>) {
        let (start, cur) = (self.brk_start, self.brk);
        if want < start {
            return (cur, None);
        }
        let (old_top, new_top) = (page_up(cur), page_up(want));
        let mut zero = None;
        if new_top > old_top {
            match self.alloc_fixed(old_top, new_top - old_top) {
                Err(_) => return (cur, None),
                Ok(true) => zero = Some((old_top, new_top - old_top)),
                Ok(false) => {}
            }
        } else if new_top < old_top {
            let _ = self.free(new_top, old_top - new_top);
        }
        self.brk = want;
        (want, zero)
    }

    /// The `chunk`-aligned parts, at least `chunk` long, of free ranges
    /// that were used before, into `out`; how many.
    fn dirty_chunks(&self, chunk: u64, out: &mut [(u64, u64)]) -> usize {
        let mut n = 0;
        for r in self.free[..self.nfree].iter().filter(|r| r.dirty) {
            let a = r.start.next_multiple_of(chunk);
            let b = (r.start + r.len) / chunk * chunk;
            if b > a && n < out.len() {
                out[n] = (a, b - a);
                n += 1;
            }
        }
        n
    }

    /// `[at, at+len)`, inside one dirty free range, reads as zeroes now.
    fn mark_clean(&mut self, at: u64, len: u64) -> Result<(), Errno> {
        let i = (0..self.nfree)
            .find(|&i| {
                let r = self.free[i];
                r.dirty && r.start <= at && at + len <= r.start + r.len
            })
            .ok_or(Errno::EINVAL)?;
        let r = self.free[i];
        let pieces = [
            Range {
                start: r.start,
                len: at - r.start,
                dirty: true,
            },
            Range {
                start: at,
                len,
                dirty: false,
            },
            Range {
                start: at + len,
                len: r.start + r.len - (at + len),
                dirty: true,
            },
        ];
        let kept = pieces.iter().filter(|p| p.len > 0).count();
        if self.nfree - 1 + kept > MAX_RANGES {
            return Err(Errno::ENOMEM);
        }
        self.free.copy_within(i + 1..self.nfree, i + kept);
        for (k, p) in pieces.iter().filter(|p| p.len > 0).enumerate() {
            self.free[i + k] = *p;
        }
        self.nfree = self.nfree - 1 + kept;
        Ok(())
    }

    fn free_bytes(&self) -> u64 {
        (0..self.nfree).map(|i| self.free[i].len).sum()
    }

    fn total_bytes(&self) -> u64 {
        self.ram_end.saturating_sub(self.brk_start)
    }

    fn brk_range(&self) -> (u64, u64) {
        (self.brk_start, page_up(self.brk))
    }

    /// Remove `[at, at+len)` from free range `i`, which contains it.
    fn take(&mut self, i: usize, at: u64, len: u64) -> Result<(), Errno> {
        let r = self.free[i];
        let before = Range {
            start: r.start,
            len: at - r.start,
            dirty: r.dirty,
        };
        let after = Range {
            start: at + len,
            len: r.start + r.len - (at + len),
            dirty: r.dirty,
        };
        match (before.len > 0, after.len > 0) {
            (false, false) => self.remove(i),
            (true, false) => self.free[i] = before,
            (false, true) => self.free[i] = after,
            (true, true) => {
                if self.nfree == MAX_RANGES {
                    return Err(Errno::ENOMEM);
                }
                self.free[i] = before;
                self.free.copy_within(i + 1..self.nfree, i + 2);
                self.free[i + 1] = after;
                self.nfree += 1;
            }
        }
        Ok(())
    }

    fn remove(&mut self, i: usize) {
        self.free.copy_within(i + 1..self.nfree, i);
        self.nfree -= 1;
    }

    /// Insert a free range that overlaps none, merging with equal neighbours.
    fn insert(&mut self, r: Range) -> Result<(), Errno> {
        let i = (0..self.nfree)
            .find(|&i| self.free[i].start > r.start)
            .unwrap_or(self.nfree);
        let merges_prev = i > 0 && {
            let p = self.free[i - 1];
            p.start + p.len == r.start && p.dirty == r.dirty
        };
        let merges_next = i < self.nfree
            && self.free[i].start == r.start + r.len
            && self.free[i].dirty == r.dirty;
        match (merges_prev, merges_next) {
            (true, true) => {
                self.free[i - 1].len += r.len + self.free[i].len;
                self.remove(i);
            }
            (true, false) => self.free[i - 1].len += r.len,
            (false, true) => {
                self.free[i].start = r.start;
                self.free[i].len += r.len;
            }
            (false, false) => {
                if self.nfree == MAX_RANGES {
                    return Err(Errno::ENOMEM);
                }
                self.free.copy_within(i..self.nfree, i + 1);
                self.free[i] = r;
                self.nfree += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_back_chunks_become_clean_and_their_edges_stay_dirty() {
        let mut r = ram();
        let mb2 = 2 << 20;
        // Use and free 8 MiB in the middle: dirty.
        let (at, _) = r.alloc_top(8 << 20).unwrap();
        r.free(at, 8 << 20).unwrap();
        let mut out = [(0, 0); 4];
        let n = r.dirty_chunks(mb2, &mut out);
        assert_eq!(n, 1);
        let (a, len) = out[0];
        assert!(a % mb2 == 0 && len % mb2 == 0 && a >= at && a + len <= at + (8 << 20));
        assert!(len >= 6 << 20);
        r.mark_clean(a, len).unwrap();
        assert_eq!(r.dirty_chunks(mb2, &mut out), 0, "nothing left to give");
        // Taken again, the clean part needs no zeroing, a dirty edge does.
        let (top, dirty) = r.alloc_top(4096).unwrap();
        assert_eq!(
            dirty,
            top >= a + len,
            "the top edge is dirty unless aligned"
        );
        assert_eq!(r.mark_clean(a, len), Err(Errno::EINVAL), "clean already");
        assert_eq!(r.free_bytes() + 4096, RAM_END - page_up(IMAGE_END));
    }

    const IMAGE_END: u64 = 0x20_0800;
    const RAM_END: u64 = 0x100_0000; // 16 MiB

    fn ram() -> Box<Ram> {
        let mut r = Box::new(Ram::new());
        r.init(IMAGE_END, RAM_END);
        r
    }

    #[test]
    fn mmap_takes_page_rounded_ranges_from_the_top() {
        let mut r = ram();
        assert_eq!(r.alloc_top(1), Ok((RAM_END - PAGE, false)));
        assert_eq!(r.alloc_top(PAGE + 1), Ok((RAM_END - 3 * PAGE, false)));
        assert_eq!(r.free_bytes(), RAM_END - page_up(IMAGE_END) - 3 * PAGE);
        assert!(!r.is_free(RAM_END - PAGE, PAGE));
    }

    #[test]
    fn memory_given_back_is_dirty_and_fresh_memory_is_not() {
        let mut r = ram();
        let (a, _) = r.alloc_top(4 * PAGE).unwrap();
        r.free(a, 4 * PAGE).unwrap();
        // Handed out again: it must be zeroed (the caller does).
        assert_eq!(r.alloc_top(2 * PAGE), Ok((a + 2 * PAGE, true)));
        // Below it nothing was ever used.
        assert_eq!(r.alloc_fixed(page_up(IMAGE_END), PAGE), Ok(false));
    }

    #[test]
    fn freed_neighbours_merge_into_one_range() {
        let mut r = ram();
        let (a, _) = r.alloc_top(PAGE).unwrap();
        let (b, _) = r.alloc_top(PAGE).unwrap();
        let (c, _) = r.alloc_top(PAGE).unwrap();
        assert_eq!((b, c), (a - PAGE, a - 2 * PAGE));
        r.free(a, PAGE).unwrap();
        r.free(c, PAGE).unwrap();
        assert_eq!(r.nfree, 3);
        r.free(b, PAGE).unwrap();
        // c..a+PAGE is one dirty range next to the clean one below it.
        assert_eq!(r.nfree, 2);
        assert!(r.is_free(c, 3 * PAGE));
    }

    #[test]
    fn munmap_of_a_partly_unmapped_range_works_as_on_linux() {
        let mut r = ram();
        let (a, _) = r.alloc_top(8 * PAGE).unwrap();
        r.free(a + 2 * PAGE, 2 * PAGE).unwrap();
        // Overlaps the hole and what is still mapped around it.
        r.free(a + PAGE, 4 * PAGE).unwrap();
        assert!(r.is_free(a + PAGE, 4 * PAGE));
        assert!(!r.is_free(a, PAGE));
        assert!(!r.is_free(a + 5 * PAGE, PAGE));
        // Freeing free memory again changes nothing.
        let before = r.free_bytes();
        r.free(a + PAGE, 4 * PAGE).unwrap();
        assert_eq!(r.free_bytes(), before);
    }

    #[test]
    fn free_outside_the_heap_is_einval_and_fixed_on_used_memory_enomem() {
        let mut r = ram();
        assert_eq!(r.free(0x1000, PAGE), Err(Errno::EINVAL));
        assert_eq!(r.free(RAM_END - PAGE, 2 * PAGE), Err(Errno::EINVAL));
        let (a, _) = r.alloc_top(PAGE).unwrap();
        assert_eq!(r.alloc_fixed(a, PAGE), Err(Errno::ENOMEM));
        assert_eq!(r.alloc_top(RAM_END), Err(Errno::ENOMEM));
    }

    #[test]
    fn brk_grows_shrinks_and_reports_the_old_break_on_failure() {
        let mut r = ram();
        let start = page_up(IMAGE_END);
        // brk(0) and a value below the start answer the current break.
        assert_eq!(r.brk(0), (start, None));
        assert_eq!(r.brk(start - 1), (start, None));
        // Not page aligned: the break is exact, the pages rounded up.
        assert_eq!(r.brk(start + 10), (start + 10, None));
        assert!(!r.is_free(start, PAGE));
        assert_eq!(r.brk(start + 3 * PAGE).0, start + 3 * PAGE);
        // Shrinking gives whole pages back.
        assert_eq!(r.brk(start + PAGE).0, start + PAGE);
        assert!(r.is_free(start + PAGE, 2 * PAGE));
        // Growing again into those pages: they must be zeroed.
        assert_eq!(
            r.brk(start + 2 * PAGE),
            (start + 2 * PAGE, Some((start + PAGE, PAGE)))
        );
        // A mapping in the way: Linux's brk fails by returning the old break.
        r.alloc_fixed(start + 4 * PAGE, PAGE).unwrap();
        assert_eq!(r.brk(start + 6 * PAGE), (start + 2 * PAGE, None));
    }

    #[test]
    fn mmap_never_takes_memory_below_the_break() {
        let mut r = ram();
        let start = page_up(IMAGE_END);
        let top = RAM_END - start;
        r.brk(start + top / 2);
        assert_eq!(r.alloc_top(top / 2 + PAGE), Err(Errno::ENOMEM));
        assert!(r.alloc_top(top / 2 - PAGE).is_ok());
    }

    #[test]
    fn total_is_what_follows_the_image_and_used_plus_free_adds_up_to_it() {
        let mut r = ram();
        let total = RAM_END - page_up(IMAGE_END);
        assert_eq!(r.total_bytes(), total);
        assert_eq!(r.free_bytes(), total);
        let (a, _) = r.alloc_top(5 * PAGE).unwrap();
        let start = page_up(IMAGE_END);
        r.brk(start + 10);
        assert_eq!(r.brk_range(), (start, start + PAGE));
        assert_eq!(r.free_bytes(), total - 6 * PAGE);
        r.free(a, 5 * PAGE).unwrap();
        r.brk(0x1000);
        assert_eq!(r.free_bytes(), total - PAGE);
        assert_eq!(r.total_bytes(), total);
    }

    #[test]
    fn page_up_rounds_to_4k() {
        assert_eq!(page_up(0), 0);
        assert_eq!(page_up(1), PAGE);
        assert_eq!(page_up(PAGE), PAGE);
        assert_eq!(page_up(PAGE + 1), 2 * PAGE);
    }
}
