//! Pages of the volume's files kept in guest memory, so that a read the
//! guest made before costs a copy instead of a round trip to the runner
//! (a Tread of 8 KiB is ~20–40 µs with the VM stopped while it waits;
//! PostgreSQL reads again whatever falls out of its shared buffers, and
//! natively the host's page cache answers that).
//!
//! **Write-through**: a write goes to the host at once (as before) and
//! updates the pages cached here, so no page is ever dirty: eviction only
//! drops, durability stays the host's (a guest fsync is the host's fsync
//! of what it already has), and a kill -9 of the runner loses nothing the
//! host was given.
//!
//! The unit is a block of [`BLOCK`] bytes (keyed by the host's inode, its
//! qid path, and the block's index), because that is the libOS heap's
//! smallest allocation taken from RAM as pages of its own and given back
//! when freed (arch/heap.rs): an evicted block returns its memory to
//! everyone, where 4 KiB ones would stay in the heap's small-block chunks
//! for good. A block keeps how many of its bytes the file has (`valid`:
//! a file's tail, or a small file, is a short block, kept up to date by
//! the guest's writes and truncations); bytes past that are asked of the
//! host. A file's blocks are forgotten when the guest's last reference
//! to it goes (the host may reuse the inode number after an unlink).
//!
//! **Memory pressure**: the cache never holds more than its caller says
//! fits ([`PageCache::insert`]'s `limit`, from the free RAM left): the
//! least recently used pages go first, and [`PageCache::shrink`] gives
//! back memory on demand. The guest is the volume's only writer (its lock,
//! issue 13), which is what makes caching correct.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

pub const BLOCK: usize = 32 * 1024;

type Key = (u64, u64);

struct Page {
    data: Box<[u8; BLOCK]>,
    /// The file's bytes in this block: BLOCK but at the file's end.
    valid: usize,
    /// Its place in the recency order.
    stamp: u64,
}

#[derive(Default)]
pub struct PageCache {
    pages: BTreeMap<Key, Page>,
    /// stamp -> page: the oldest first.
    order: BTreeMap<u64, Key>,
    next_stamp: u64,
    pub hits: u64,
    pub misses: u64,
}

impl PageCache {
    pub const fn new() -> PageCache {
        PageCache {
            pages: BTreeMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.pages.len() * BLOCK
    }

    fn touch(&mut self, key: Key) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(p) = self.pages.get_mut(&key) {
            self.order.remove(&p.stamp);
            p.stamp = stamp;
            self.order.insert(stamp, key);
        }
    }

    /// Copies what the cache has of file `file` at `off` into `buf`, up to
    /// the end of that page; 0 if it does not have that page.
    pub fn read(&mut self, file: u64, off: u64, buf: &mut [u8]) -> usize {
        let key = (file, off / BLOCK as u64);
        let Some(p) = self.pages.get(&key) else {
            self.misses += 1;
            return 0;
        };
        let at = (off % BLOCK as u64) as usize;
        if at >= p.valid {
            self.misses += 1;
            return 0;
        }
        let n = buf.len().min(p.valid - at);
        buf[..n].copy_from_slice(&p.data[at..at + n]);
        self.hits += 1;
        self.touch(key);
        n
    }

    /// Keeps `data`, which the host holds at `off` (a block boundary) of
    /// file `file` up to its end (a read of whole blocks that came back
    /// short ended at the file's end), as long as the cache stays within
    /// `limit` bytes (older blocks make room).
    pub fn insert(&mut self, file: u64, off: u64, data: &[u8], limit: usize) {
        debug_assert_eq!(off % BLOCK as u64, 0);
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            let key = (file, off / BLOCK as u64 + i as u64);
            if let Some(p) = self.pages.get_mut(&key) {
                p.data[..chunk.len()].copy_from_slice(chunk);
                p.valid = chunk.len();
                self.touch(key);
                continue;
            }
            if !self.make_room(limit) {
                return;
            }
            // A block of its own pages (arch/heap.rs), zeroed.
            let mut page: Box<[u8; BLOCK]> =
                match alloc::vec![0u8; BLOCK].into_boxed_slice().try_into() {
                    Ok(b) => b,
                    Err(_) => return,
                };
            page[..chunk.len()].copy_from_slice(chunk);
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.pages.insert(
                key,
                Page {
                    data: page,
                    valid: chunk.len(),
                    stamp,
                },
            );
            self.order.insert(stamp, key);
        }
    }

    /// Drops the oldest pages until one more fits in `limit`; false if
    /// none can (a limit under one page).
    fn make_room(&mut self, limit: usize) -> bool {
        while self.bytes() + BLOCK > limit {
            if !self.evict_oldest() {
                return false;
            }
        }
        true
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_first() else {
            return false;
        };
        self.pages.remove(&key);
        true
    }

    /// Write-through: the pages cached of `file` over `[off, off+len)`
    /// take the bytes written there (pages not cached stay so).
    pub fn write(&mut self, file: u64, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let first = off / BLOCK as u64;
        let last = (off + data.len() as u64 - 1) / BLOCK as u64;
        for (&(_, index), p) in self.pages.range_mut((file, first)..=(file, last)) {
            let page_start = index * BLOCK as u64;
            let from = off.max(page_start);
            let to = (off + data.len() as u64).min(page_start + BLOCK as u64);
            let (a, b) = ((from - page_start) as usize, (to - page_start) as usize);
            if a > p.valid {
                // Past the file's end in this block: the host has zeroes
                // in between (the block's tail is zero already).
                p.data[p.valid..a].fill(0);
            }
            p.data[a..b].copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            p.valid = p.valid.max(b);
        }
    }

    /// Forgets the pages of `file` that hold any of `[off, off+len)` (a
    /// write that took them did not reach the host whole).
    pub fn forget_range(&mut self, file: u64, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off / BLOCK as u64;
        let last = (off + len - 1) / BLOCK as u64;
        self.drop_range((file, first), (file, last));
    }

    /// The file is `len` bytes now: blocks past it go, the one it ends
    /// in is cut short (an extension reads as zeroes from the host).
    pub fn truncate(&mut self, file: u64, len: u64) {
        let last = len / BLOCK as u64;
        if let Some(p) = self.pages.get_mut(&(file, last)) {
            p.valid = p.valid.min((len % BLOCK as u64) as usize);
            p.data[p.valid..].fill(0);
        }
        self.drop_range((file, last + 1), (file, u64::MAX));
    }

    /// Forgets every page of `file`.
    pub fn forget(&mut self, file: u64) {
        self.drop_range((file, 0), (file, u64::MAX));
    }

    fn drop_range(&mut self, from: Key, to: Key) {
        let gone: alloc::vec::Vec<Key> = self.pages.range(from..=to).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(p) = self.pages.remove(&k) {
                self.order.remove(&p.stamp);
            }
        }
    }

    /// Gives back at least `bytes` (or everything), the oldest pages first.
    pub fn shrink(&mut self, bytes: usize) -> usize {
        let mut freed = 0;
        while freed < bytes && self.evict_oldest() {
            freed += BLOCK;
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const B: u64 = BLOCK as u64;

    fn blocks(n: usize, fill: u8) -> alloc::vec::Vec<u8> {
        vec![fill; n * BLOCK]
    }

    #[test]
    fn reads_hit_what_was_inserted_and_miss_the_rest() {
        let mut c = PageCache::new();
        c.insert(7, B, &blocks(2, 0xaa), usize::MAX);
        let mut b = [0u8; 100];
        assert_eq!(c.read(7, 0, &mut b), 0, "block 0 was never read");
        assert_eq!(c.read(7, B + 10, &mut b), 100);
        assert_eq!(b, [0xaa; 100]);
        // A read stops at the end of its block.
        let mut big = vec![0u8; 3 * BLOCK];
        assert_eq!(c.read(7, 2 * B + 96, &mut big), BLOCK - 96);
        assert_eq!(c.read(8, B, &mut b), 0, "another file");
    }

    #[test]
    fn a_short_tail_is_kept_and_grows_with_writes() {
        let mut c = PageCache::new();
        c.insert(9, 0, &vec![1u8; BLOCK + 10], usize::MAX);
        let mut b = [0u8; 20];
        assert_eq!(c.read(9, B + 5, &mut b), 5, "up to the file's end");
        assert_eq!(c.read(9, B + 10, &mut b), 0, "past it: asked of the host");
        // A write past the end leaves zeroes between, as the host does.
        c.write(9, B + 14, &[7, 7]);
        assert_eq!(c.read(9, B + 8, &mut b), 8);
        assert_eq!(&b[..8], &[1, 1, 0, 0, 0, 0, 7, 7]);
    }

    #[test]
    fn writes_go_into_cached_blocks_across_their_edges() {
        let mut c = PageCache::new();
        c.insert(1, 0, &blocks(2, 0), usize::MAX);
        c.write(1, B - 2, &[1, 2, 3, 4]);
        let mut b = [9u8; 2];
        c.read(1, B - 2, &mut b);
        assert_eq!(b, [1, 2]);
        c.read(1, B, &mut b);
        assert_eq!(b, [3, 4]);
        // A write past the cached blocks adds nothing.
        c.write(1, 10 * B, &[5; 8]);
        assert_eq!(c.bytes(), 2 * BLOCK);
    }

    #[test]
    fn the_least_recently_used_blocks_make_room() {
        let mut c = PageCache::new();
        c.insert(1, 0, &blocks(3, 1), 3 * BLOCK);
        let mut b = [0u8; 1];
        assert_eq!(c.read(1, 0, &mut b), 1, "block 0 is now the newest");
        c.insert(2, 0, &blocks(1, 2), 3 * BLOCK);
        assert_eq!(c.bytes(), 3 * BLOCK);
        assert_eq!(c.read(1, B, &mut b), 0, "block 1 was the oldest");
        assert_eq!(c.read(1, 0, &mut b), 1);
        assert_eq!(c.shrink(BLOCK), BLOCK);
        assert_eq!(c.bytes(), 2 * BLOCK);
        assert_eq!(c.shrink(usize::MAX), 2 * BLOCK);
        c.insert(3, 0, &blocks(1, 3), BLOCK - 1);
        assert_eq!(c.bytes(), 0, "a limit under one block keeps nothing");
    }

    #[test]
    fn truncation_cuts_and_forgetting_drops() {
        let mut c = PageCache::new();
        c.insert(1, 0, &blocks(4, 1), usize::MAX);
        c.insert(2, 0, &blocks(1, 2), usize::MAX);
        c.truncate(1, B + 1);
        let mut b = [0u8; 4];
        assert_eq!(c.read(1, 0, &mut b), 4);
        assert_eq!(c.read(1, B, &mut b), 1, "cut short at the new end");
        assert_eq!(c.read(1, 3 * B, &mut b), 0, "past it: dropped");
        // Extended again by a write: the bytes between read as zeroes.
        c.write(1, B + 3, &[5]);
        assert_eq!(c.read(1, B, &mut b), 4);
        assert_eq!(b, [1, 0, 0, 5]);
        c.forget(1);
        assert_eq!(c.bytes(), BLOCK);
        assert_eq!(c.read(2, 0, &mut b), 4);
    }

    #[test]
    fn forgetting_a_range_drops_the_blocks_it_touches_only() {
        let mut c = PageCache::new();
        c.insert(1, 0, &blocks(4, 1), usize::MAX);
        c.insert(2, 0, &blocks(1, 2), usize::MAX);
        c.forget_range(1, B - 1, 2);
        let mut b = [0u8; 1];
        assert_eq!(c.read(1, 0, &mut b), 0, "block 0 held a byte of it");
        assert_eq!(c.read(1, B, &mut b), 0, "so did block 1");
        assert_eq!(c.read(1, 2 * B, &mut b), 1);
        assert_eq!(c.read(1, 3 * B, &mut b), 1);
        assert_eq!(c.read(2, 0, &mut b), 1, "another file's block stays");
        c.forget_range(1, 3 * B, 0);
        assert_eq!(c.read(1, 3 * B, &mut b), 1, "an empty range drops nothing");
    }
}
