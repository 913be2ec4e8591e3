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
const MAX_RANGES: usize = 2048;

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

    fn free_bytes(&self) -> u64 {
        (0..self.nfree).map(|i| self.free[i].len).sum()
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
