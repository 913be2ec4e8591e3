//! Guest RAM `[0, mem)` and the image in it.
//!
//! Image segments whose file offset and guest address agree modulo the page
//! size are not copied: their pages are the image file itself, mapped
//! `MAP_PRIVATE` over that part of the one anonymous RAM mapping. Nothing is read at boot, the guest faults in only the pages
//! it touches, clean pages stay shared with the page cache (and with every
//! other VM running the same image), and a write copies just that page.
//! Copying instead costs ~0.75 ms per MiB here (a 40 MiB image: 30 ms).
//! The rest of RAM is anonymous `MAP_NORESERVE` memory: free until touched.
//!
//! The image file must not be truncated or rewritten in place while a VM
//! runs from it (replace it with a rename, as builds do).

use std::fs::File;
use std::io::{Seek, SeekFrom};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::image::Image;
use super::{VmmError, kvm};

const PAGE: u64 = 4096;

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn page_up(x: u64) -> u64 {
    x.next_multiple_of(PAGE)
}

/// One file-backed stretch of guest RAM: guest `[start, end)` is file
/// `[file_start, file_start + end - start)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapped {
    start: u64,
    end: u64,
    file_start: u64,
    /// The segment's own bytes inside it; the rest of its first and last
    /// page holds unrelated file bytes and is zeroed after mapping.
    seg_start: u64,
    seg_end: u64,
}

/// Which segments can be mapped from the file (the others are copied):
/// page-congruent, inside RAM, and not sharing a page with another segment.
fn plan(img: &Image, mem: u64) -> (Vec<Mapped>, Vec<usize>) {
    let pages = |i: usize| {
        let s = &img.segments[i];
        (page_down(s.paddr), page_up(s.paddr + s.memsz))
    };
    let mut mapped = Vec::new();
    let mut copied = Vec::new();
    for (i, s) in img.segments.iter().enumerate() {
        if s.filesz == 0 {
            continue;
        }
        let start = page_down(s.paddr);
        let end = page_up(s.paddr + s.filesz);
        let alone = (0..img.segments.len()).all(|j| {
            let (a, b) = pages(j);
            j == i || b <= start || a >= end
        });
        if s.paddr % PAGE == s.offset % PAGE && end <= mem && alone {
            mapped.push(Mapped {
                start,
                end,
                file_start: page_down(s.offset),
                seg_start: s.paddr,
                seg_end: s.paddr + s.filesz,
            });
        } else {
            copied.push(i);
        }
    }
    mapped.sort_by_key(|m| m.start);
    (mapped, copied)
}

/// Builds guest RAM with the image in it (see the module docs).
pub(crate) fn build(
    file: &File,
    img: &Image,
    mem: u64,
    mem_mib: u32,
) -> Result<GuestMemoryMmap, VmmError> {
    let seg_err = |paddr: u64, e: &dyn std::fmt::Display| VmmError::BadImage {
        path: None,
        detail: format!("the segment for {paddr:#x} could not be loaded: {e}"),
    };
    // One anonymous MAP_NORESERVE mapping (vm-memory's default for ranges).
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem as usize)]).map_err(|e| {
        VmmError::Memory {
            mem_mib,
            detail: e.to_string(),
        }
    })?;
    let (mapped, copied) = plan(img, mem);
    for m in &mapped {
        kvm::map_file_into(&ram, m.start, m.end - m.start, file, m.file_start)
            .map_err(|e| seg_err(m.seg_start, &e))?;
        let zero = |from: u64, to: u64| {
            ram.write_slice(&vec![0u8; (to - from) as usize], GuestAddress(from))
                .map_err(|e| seg_err(m.seg_start, &e))
        };
        zero(m.start, m.seg_start)?;
        zero(m.seg_end, m.end)?;
    }
    let mut f = file;
    for &i in &copied {
        let s = &img.segments[i];
        f.seek(SeekFrom::Start(s.offset))
            .map_err(|e| seg_err(s.paddr, &e))?;
        ram.read_exact_volatile_from(GuestAddress(s.paddr), &mut f, s.filesz as usize)
            .map_err(|e| seg_err(s.paddr, &e))?;
    }
    log::debug!(
        "vmm: {} segment(s) mapped from the image file, {} copied",
        mapped.len(),
        copied.len(),
    );
    Ok(ram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::image::Segment;

    fn img(segs: &[(u64, u64, u64, u64)]) -> Image {
        Image {
            note: Default::default(),
            segments: segs
                .iter()
                .map(|&(paddr, memsz, offset, filesz)| Segment {
                    paddr,
                    memsz,
                    offset,
                    filesz,
                })
                .collect(),
        }
    }

    #[test]
    fn congruent_lone_segments_are_mapped() {
        let (m, c) = plan(
            &img(&[
                (0x10_0000, 0x5000, 0x1000, 0x40f3),
                (0x20_0000, 0x10, 0x6000, 0),
            ]),
            64 << 20,
        );
        assert!(c.is_empty());
        assert_eq!(
            m,
            [Mapped {
                start: 0x10_0000,
                end: 0x10_5000,
                file_start: 0x1000,
                seg_start: 0x10_0000,
                seg_end: 0x10_40f3,
            }]
        );
    }

    #[test]
    fn misaligned_or_page_sharing_segments_are_copied() {
        // Offset not congruent with the address.
        let (m, c) = plan(&img(&[(0x10_0000, 0x100, 0x1010, 0x100)]), 64 << 20);
        assert!(m.is_empty());
        assert_eq!(c, [0]);
        // Two segments on one page: neither may be mapped over the other.
        let (m, c) = plan(
            &img(&[
                (0x10_0000, 0x800, 0x1000, 0x800),
                (0x10_0800, 0x800, 0x1800, 0x800),
            ]),
            64 << 20,
        );
        assert!(m.is_empty());
        assert_eq!(c, [0, 1]);
    }
}
