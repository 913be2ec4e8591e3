//! The bytes of a regular file, in 4 KiB pages.
//!
//! Pages keep growth cheap (nothing is copied when a file gets longer) and
//! let three kinds of page coexist in one file:
//! - a hole (`None`, or past the end of the page vector) reads as zeros and
//!   takes no memory;
//! - a borrowed page is a slice of the image's rootfs archive, shared by
//!   every instance booted from the image, until the first write copies it;
//! - an owned page is ours;
//! - a mapped page lives inside a MAP_SHARED mapping of the file, so reads,
//!   writes and the mapping see one set of bytes (one address space: the
//!   mapping's memory *is* the page cache). munmap turns it back into an
//!   owned page.

use crate::arch::uaccess;
use crate::syscall::Errno;
use alloc::boxed::Box;
use alloc::vec::Vec;

pub const PAGE: usize = 4096;

/// Linux's limit for a file offset (MAX_LFS_FILESIZE).
pub const MAX_SIZE: u64 = i64::MAX as u64;

enum Page {
    /// At most PAGE bytes; bytes past its end read as zero (the last page of
    /// a seeded file, or one shortened by a truncate).
    Borrowed(&'static [u8]),
    Owned(Box<[u8; PAGE]>),
    /// Guest address of a page of a shared mapping.
    Mapped(u64),
}

/// One zstd frame of a packed rootfs file and how many of the file's
/// bytes it holds (every chunk but the last holds CHUNK bytes).
#[derive(Clone)]
pub struct Chunk {
    pub frame: &'static [u8],
    pub holds: u32,
}

/// Bytes of file per chunk, as the host cut them.
const CHUNK: usize = pgkraft_abi::ROOTFS_ZSTD_CHUNK;

#[derive(Default)]
pub struct FileData {
    pages: Vec<Option<Page>>,
    size: u64,
    /// Pages holding data (borrowed or owned), for st_blocks.
    resident: u64,
    /// Chunks of a packed rootfs file not inflated yet, by chunk number:
    /// their pages are `None` until `unpack` fills them. Empty for any
    /// other file.
    packed: Vec<Option<Chunk>>,
}

/// The decoder and its output buffer, reused for every chunk (one vCPU:
/// never contended).
static INFLATE: spin::Mutex<Option<(ruzstd::decoding::FrameDecoder, Vec<u8>)>> =
    spin::Mutex::new(None);

/// A zeroed page, or ENOSPC when the heap is exhausted: running out of
/// memory must fail the write, not the whole libOS.
fn zero_page() -> Result<Box<[u8; PAGE]>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(PAGE).map_err(|_| Errno::ENOSPC)?;
    v.resize(PAGE, 0u8);
    v.into_boxed_slice().try_into().map_err(|_| Errno::ENOSPC)
}

impl FileData {
    /// A file whose contents are `bytes` from the image, copied on write.
    pub fn borrowed(bytes: &'static [u8]) -> FileData {
        let pages: Vec<Option<Page>> = bytes
            .chunks(PAGE)
            .map(|c| Some(Page::Borrowed(c)))
            .collect();
        FileData {
            resident: pages.len() as u64,
            pages,
            size: bytes.len() as u64,
            packed: Vec::new(),
        }
    }

    /// A rootfs file stored as zstd chunks, inflated on first use.
    pub fn packed(size: u64, chunks: Vec<Chunk>) -> Result<FileData, Errno> {
        let mut d = FileData::default();
        d.reserve_pages(size)?;
        d.size = size;
        d.packed = chunks.into_iter().map(Some).collect();
        Ok(d)
    }

    /// Inflate the chunks that hold bytes of `[off, off + len)`. Pages that
    /// come out all zero stay holes (no memory).
    fn unpack(&mut self, off: u64, len: u64) -> Result<(), Errno> {
        if self.packed.is_empty() || len == 0 {
            return Ok(());
        }
        let first = (off / CHUNK as u64) as usize;
        let last = (off.saturating_add(len - 1) / CHUNK as u64) as usize;
        for c in first..=last.min(self.packed.len() - 1) {
            let Some(chunk) = self.packed[c].take() else {
                continue;
            };
            let mut slot = INFLATE.lock();
            let (dec, buf) = slot.get_or_insert_with(|| {
                (
                    ruzstd::decoding::FrameDecoder::new(),
                    alloc::vec![0u8; CHUNK + 512],
                )
            });
            let n = match dec.decode_all(chunk.frame, buf) {
                Ok(n) => n.min(chunk.holds as usize),
                Err(_) => {
                    crate::log!("libos: rootfs: a zstd chunk does not inflate (damaged image?)");
                    return Err(Errno::EIO);
                }
            };
            for (i, bytes) in buf[..n].chunks(PAGE).enumerate() {
                if bytes.iter().all(|&b| b == 0) {
                    continue;
                }
                let mut p = zero_page()?;
                p[..bytes.len()].copy_from_slice(bytes);
                self.pages[c * (CHUNK / PAGE) + i] = Some(Page::Owned(p));
                self.resident += 1;
            }
        }
        if self.packed.iter().all(Option::is_none) {
            self.packed = Vec::new();
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// 512-byte blocks holding data, as st_blocks counts them.
    pub fn blocks(&self) -> u64 {
        self.resident * (PAGE as u64 / 512)
    }

    pub fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        if off >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - off) as usize;
        self.unpack(off, n as u64)?;
        let mut done = 0;
        while done < n {
            let pos = off + done as u64;
            let (idx, inner) = ((pos / PAGE as u64) as usize, (pos % PAGE as u64) as usize);
            let chunk = (PAGE - inner).min(n - done);
            let dst = &mut buf[done..done + chunk];
            match self.pages.get(idx) {
                Some(Some(Page::Owned(p))) => dst.copy_from_slice(&p[inner..inner + chunk]),
                Some(Some(Page::Mapped(a))) => {
                    dst.copy_from_slice(&uaccess::slice(*a + inner as u64, chunk as u64)?)
                }
                Some(Some(Page::Borrowed(s))) => {
                    // `inner` may lie past a short page's end (the file grew).
                    let have = s.len().saturating_sub(inner).min(chunk);
                    if have > 0 {
                        dst[..have].copy_from_slice(&s[inner..inner + have]);
                    }
                    dst[have..].fill(0);
                }
                _ => dst.fill(0),
            }
            done += chunk;
        }
        Ok(n)
    }

    /// Run `f` on the page at `idx`, ours to write: a hole becomes a
    /// zeroed page, a borrowed one is copied; a mapped one is lent by
    /// uaccess (EFAULT if the caller's own buffer overlaps it).
    fn with_page_mut(&mut self, idx: usize, f: impl FnOnce(&mut [u8])) -> Result<(), Errno> {
        let slot = &mut self.pages[idx];
        let fresh = match slot {
            Some(Page::Owned(_)) => None,
            Some(Page::Mapped(a)) => {
                f(&mut uaccess::slice_mut(*a, PAGE as u64)?);
                return Ok(());
            }
            Some(Page::Borrowed(s)) => {
                let mut p = zero_page()?;
                p[..s.len()].copy_from_slice(s);
                Some(p)
            }
            None => {
                let p = zero_page()?;
                self.resident += 1;
                Some(p)
            }
        };
        if let Some(p) = fresh {
            *slot = Some(Page::Owned(p));
        }
        match slot {
            Some(Page::Owned(p)) => {
                f(&mut p[..]);
                Ok(())
            }
            _ => unreachable!("the slot was just made an owned page"),
        }
    }

    /// Make room in the page vector for `end` bytes; holes are `None`.
    fn reserve_pages(&mut self, end: u64) -> Result<(), Errno> {
        let want = end.div_ceil(PAGE as u64);
        let want = usize::try_from(want).map_err(|_| Errno::EFBIG)?;
        if want > self.pages.len() {
            self.pages
                .try_reserve(want - self.pages.len())
                .map_err(|_| Errno::ENOSPC)?;
            self.pages.resize_with(want, || None);
        }
        Ok(())
    }

    pub fn write_at(&mut self, off: u64, data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        self.unpack(off, data.len() as u64)?;
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_SIZE)
            .ok_or(Errno::EFBIG)?;
        self.reserve_pages(end)?;
        let mut done = 0;
        while done < data.len() {
            let pos = off + done as u64;
            let (idx, inner) = ((pos / PAGE as u64) as usize, (pos % PAGE as u64) as usize);
            let chunk = (PAGE - inner).min(data.len() - done);
            let src = &data[done..done + chunk];
            match self.with_page_mut(idx, |page| page[inner..inner + chunk].copy_from_slice(src)) {
                Ok(()) => {}
                // A short write is what Linux reports when space runs out
                // part way; only a write that did nothing is an error.
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
            done += chunk;
        }
        self.size = self.size.max(off + done as u64);
        Ok(done)
    }

    pub fn truncate(&mut self, len: u64) -> Result<(), Errno> {
        if len > MAX_SIZE {
            return Err(Errno::EFBIG);
        }
        // The last kept chunk must be real before its tail is cleared, and
        // chunks past the new end must not come back if the file grows.
        if len < self.size {
            self.unpack(len, 1)?;
            let keep_chunks = len.div_ceil(CHUNK as u64) as usize;
            if keep_chunks < self.packed.len() {
                self.packed.truncate(keep_chunks);
            }
            let keep = len.div_ceil(PAGE as u64) as usize;
            if keep < self.pages.len() {
                self.resident -= self.pages[keep..].iter().filter(|p| p.is_some()).count() as u64;
                self.pages.truncate(keep);
                if self.pages.capacity() > 2 * keep + 16 {
                    self.pages.shrink_to_fit();
                }
            }
            // What lies past the new end in the last page must read as zero
            // if the file grows again.
            let inner = (len % PAGE as u64) as usize;
            if inner != 0
                && let Some(Some(page)) = self.pages.get_mut(keep - 1)
            {
                match page {
                    Page::Owned(p) => p[inner..].fill(0),
                    Page::Mapped(a) => {
                        uaccess::slice_mut(*a + inner as u64, (PAGE - inner) as u64)?.fill(0)
                    }
                    Page::Borrowed(s) => *s = &s[..inner.min(s.len())],
                }
            }
        }
        // Growing only moves the end: the new range is a hole.
        self.size = len;
        Ok(())
    }

    /// Drop whole pages inside [off, off+len) and zero the partial ends
    /// (FALLOC_FL_PUNCH_HOLE); the size does not change.
    pub fn punch_hole(&mut self, off: u64, len: u64) -> Result<(), Errno> {
        self.unpack(off, len.min(self.size.saturating_sub(off)))?;
        let page = PAGE as u64;
        // Past the page vector everything is a hole already.
        let end = off
            .saturating_add(len)
            .min(self.size)
            .min(self.pages.len() as u64 * page);
        let mut at = off;
        while at < end {
            let idx = at / page;
            let stop = end.min((idx + 1) * page);
            if !self.is_hole(idx) {
                let is_mapped = matches!(self.pages[idx as usize], Some(Page::Mapped(_)));
                // A mapped page stays (the mapping still shows it): zero it.
                if at == idx * page && stop == (idx + 1) * page && !is_mapped {
                    self.pages[idx as usize] = None;
                    self.resident -= 1;
                } else {
                    let range = (at - idx * page) as usize..(stop - idx * page) as usize;
                    self.with_page_mut(idx as usize, |p| p[range].fill(0))?;
                }
            }
            at = stop;
        }
        Ok(())
    }

    /// MAP_SHARED: page `first + i` of the file now lives at `addr + i *
    /// PAGE` for each of `count` pages inside the file's size; their bytes
    /// are copied there first. Pages already in another mapping make this
    /// EBUSY: one address space cannot show one page at two addresses.
    pub fn map_shared(&mut self, first: usize, count: usize, addr: u64) -> Result<(), Errno> {
        self.unpack((first * PAGE) as u64, (count * PAGE) as u64)?;
        let in_file = (self.size.div_ceil(PAGE as u64) as usize).saturating_sub(first);
        let count = count.min(in_file);
        if (first..first + count).any(|i| matches!(self.pages.get(i), Some(Some(Page::Mapped(_)))))
        {
            return Err(Errno::EBUSY);
        }
        self.reserve_pages(((first + count) * PAGE) as u64)?;
        for i in 0..count {
            let at = addr + (i * PAGE) as u64;
            let mut dst = uaccess::slice_mut(at, PAGE as u64)?;
            match self.pages[first + i].take() {
                Some(Page::Owned(p)) => dst.copy_from_slice(&p[..]),
                Some(Page::Borrowed(b)) => dst[..b.len()].copy_from_slice(b),
                _ => self.resident += 1,
            }
            self.pages[first + i] = Some(Page::Mapped(at));
        }
        Ok(())
    }

    /// munmap of `[addr, addr + count * PAGE)`: any of this file's pages
    /// living there become owned pages again, with the mapping's bytes.
    pub fn unmap_shared(&mut self, addr: u64, count: usize) -> Result<(), Errno> {
        let end = addr + (count * PAGE) as u64;
        for slot in self.pages.iter_mut() {
            if let Some(Page::Mapped(a)) = *slot
                && (addr..end).contains(&a)
            {
                let mut p = zero_page()?;
                p.copy_from_slice(&uaccess::slice(a, PAGE as u64)?);
                *slot = Some(Page::Owned(p));
            }
        }
        Ok(())
    }

    fn is_hole(&self, idx: u64) -> bool {
        !matches!(self.pages.get(idx as usize), Some(Some(_)))
    }

    /// SEEK_DATA / SEEK_HOLE, at page granularity (as tmpfs answers them).
    /// ENXIO when `off` is at or past the end, or no data follows it.
    pub fn seek_data(&mut self, off: u64, want_hole: bool) -> Result<u64, Errno> {
        if off >= self.size {
            return Err(Errno::ENXIO);
        }
        // Where the holes are is only known once the chunks are inflated;
        // nothing before `off` matters.
        self.unpack(off, self.size - off)?;
        let page = PAGE as u64;
        let mut idx = off / page;
        let last = (self.size - 1) / page;
        while idx <= last {
            if self.is_hole(idx) == want_hole {
                return Ok((idx * page).max(off));
            }
            idx += 1;
        }
        // Past the last page of data there is the implicit hole at EOF.
        want_hole.then_some(self.size).ok_or(Errno::ENXIO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(d: &mut FileData, off: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0xaa; n];
        let got = d.read_at(off, &mut buf).unwrap();
        buf.truncate(got);
        buf
    }

    #[test]
    fn writing_past_the_end_leaves_a_hole_of_zeros() {
        let mut d = FileData::default();
        assert_eq!(d.write_at(3 * PAGE as u64 + 10, b"end"), Ok(3));
        assert_eq!(d.size(), 3 * PAGE as u64 + 13);
        assert_eq!(read(&mut d, 5, 4), [0, 0, 0, 0]);
        assert_eq!(read(&mut d, 3 * PAGE as u64 + 10, 100), b"end");
        // Only the page written takes memory (st_blocks counts 512s).
        assert_eq!(d.blocks(), 8);
        let size = d.size();
        assert_eq!(read(&mut d, size, 10), b"");
    }

    #[test]
    fn shrinking_then_growing_reads_zeros_not_old_bytes() {
        let mut d = FileData::default();
        d.write_at(0, &[7u8; 5000]).unwrap();
        d.truncate(10).unwrap();
        d.truncate(5000).unwrap();
        let back = read(&mut d, 0, 5000);
        assert_eq!(&back[..10], &[7u8; 10]);
        assert!(back[10..].iter().all(|&b| b == 0));
        assert_eq!(d.truncate(MAX_SIZE + 1), Err(Errno::EFBIG));
        assert_eq!(d.write_at(MAX_SIZE, b"x"), Err(Errno::EFBIG));
    }

    #[test]
    fn borrowed_bytes_are_copied_on_write() {
        let image: &'static [u8] = Vec::leak(vec![1u8; PAGE + 100]);
        let mut d = FileData::borrowed(image);
        d.write_at(PAGE as u64 + 1, b"\x02").unwrap();
        assert_eq!(read(&mut d, PAGE as u64, 3), [1, 2, 1]);
        // The image itself is untouched.
        assert!(image.iter().all(|&b| b == 1));
        // A short borrowed last page that grows reads zeros past its end.
        d.truncate(PAGE as u64 + 50).unwrap();
        d.truncate(PAGE as u64 + 200).unwrap();
        assert_eq!(read(&mut d, PAGE as u64 + 49, 2), [1, 0]);
    }

    #[test]
    fn seek_data_and_hole_and_punch_hole() {
        let mut d = FileData::default();
        d.write_at(2 * PAGE as u64, &[9u8; PAGE]).unwrap();
        d.truncate(5 * PAGE as u64).unwrap();
        assert_eq!(d.seek_data(0, false), Ok(2 * PAGE as u64));
        assert_eq!(d.seek_data(0, true), Ok(0));
        assert_eq!(d.seek_data(2 * PAGE as u64 + 5, true), Ok(3 * PAGE as u64));
        assert_eq!(d.seek_data(3 * PAGE as u64, false), Err(Errno::ENXIO));
        assert_eq!(d.seek_data(5 * PAGE as u64, true), Err(Errno::ENXIO));
        // Punching part of the page zeroes it; the whole page frees it.
        d.punch_hole(2 * PAGE as u64 + 10, 10).unwrap();
        assert_eq!(
            read(&mut d, 2 * PAGE as u64 + 9, 12)[..],
            [9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        d.punch_hole(2 * PAGE as u64, PAGE as u64).unwrap();
        assert_eq!((d.blocks(), d.size()), (0, 5 * PAGE as u64));
        assert_eq!(d.seek_data(0, false), Err(Errno::ENXIO));
    }
}
