//! The memory a process owns (its stack, its anonymous and private
//! mappings): what its exit gives back. All processes share one address
//! space and one page allocator (mem), so ownership is bookkeeping only.

use alloc::vec::Vec;

/// Disjoint, sorted `[start, end)` ranges.
#[derive(Default, Debug)]
pub struct Owned {
    ranges: Vec<(u64, u64)>,
}

impl Owned {
    pub fn add(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = start + len;
        let i = self.ranges.partition_point(|r| r.1 < start);
        let mut j = i;
        let (mut lo, mut hi) = (start, end);
        while j < self.ranges.len() && self.ranges[j].0 <= end {
            lo = lo.min(self.ranges[j].0);
            hi = hi.max(self.ranges[j].1);
            j += 1;
        }
        self.ranges.splice(i..j, [(lo, hi)]);
    }

    /// Forget `[start, start+len)`, whatever part of it is owned.
    pub fn remove(&mut self, start: u64, len: u64) {
        let end = start + len;
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.ranges = out;
    }

    /// How many bytes are owned.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.1 - r.0).sum()
    }

    /// How many bytes of `[start, end)` are owned.
    pub fn bytes_within(&self, start: u64, end: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// Everything owned, as (start, len), leaving nothing.
    pub fn take_all(&mut self) -> Vec<(u64, u64)> {
        core::mem::take(&mut self.ranges)
            .into_iter()
            .map(|(s, e)| (s, e - s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_split_like_mappings() {
        let mut o = Owned::default();
        o.add(0x1000, 0x1000);
        o.add(0x3000, 0x1000);
        o.add(0x2000, 0x1000);
        assert_eq!(o.ranges, vec![(0x1000, 0x4000)]);
        o.remove(0x2000, 0x1000);
        assert_eq!(o.ranges, vec![(0x1000, 0x2000), (0x3000, 0x4000)]);
        assert_eq!(o.bytes(), 0x2000);
        assert_eq!(o.bytes_within(0x1800, 0x3800), 0x1000);
        assert_eq!(o.bytes_within(0x4000, 0x9000), 0);
        o.remove(0x0, 0x1800);
        o.add(0x10000, 0x2000);
        assert_eq!(
            o.take_all(),
            vec![(0x1800, 0x800), (0x3000, 0x1000), (0x10000, 0x2000)]
        );
        assert!(o.take_all().is_empty());
        assert_eq!(o.bytes(), 0);
    }
}
