//! Guest RAM `[0, mem)` and the image in it.
//!
//! RAM is one anonymous `MAP_NORESERVE` mapping backed by transparent huge
//! pages where the host has them (kvm::use_huge_pages), and a cold boot
//! copies every loadable segment of the image into it.
//!
//! Why copy rather than map the file: on PVM every first guest touch of a
//! 4 KiB page is a VM exit, and it costs ~25 µs for a page of a file
//! mapping whether or not the host has it cached (`MADV_POPULATE_READ`
//! does not help), while inside 2 MiB huge pages the shadow MMU maps 2 MiB
//! at a time. PostgreSQL touches over a thousand image pages (text, rodata,
//! the rootfs) before its first answer: copying the 12 MiB default image
//! costs ~3 ms and took the first answer from 36 to 25 ms (`pgkraft bench
//! first-answer`; README "Design notes"). Sharing clean image pages between
//! instances is what resuming a snapshot does (vmm::snapshot maps its
//! memory file and the image `MAP_PRIVATE`).
//!
//! docs/ARCHITECTURE.md §4.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::image::Image;
use super::{VmmError, kvm};

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
    kvm::use_huge_pages(&ram);
    let mut f = file;
    for s in img.segments.iter().filter(|s| s.filesz > 0) {
        if s.paddr + s.filesz > mem {
            return Err(seg_err(s.paddr, &"it does not fit in guest RAM"));
        }
        f.seek(SeekFrom::Start(s.offset))
            .map_err(|e| seg_err(s.paddr, &e))?;
        ram.read_exact_volatile_from(GuestAddress(s.paddr), &mut f, s.filesz as usize)
            .map_err(|e| seg_err(s.paddr, &e))?;
    }
    Ok(ram)
}
