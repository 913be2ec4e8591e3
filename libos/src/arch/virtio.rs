//! Device access for net/virtio.rs: reading a virtio-mmio register, and
//! what the `virtio-drivers` crate needs from us (its `Hal`, and the
//! transport over a slot's registers), which are `unsafe` by contract.
//!
//! The whole 0..4 GiB is identity mapped, so a guest physical address is
//! the address we dereference, and DMA buffers are libOS heap memory whose
//! address the device uses as is.

use core::ptr::NonNull;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Read the 32-bit device register at `addr` (a virtio-mmio slot register:
/// each read is a VM exit that the VMM answers).
pub fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: callers pass addresses inside the virtio-mmio window
    // (pgkraft_abi::VIRTIO_MMIO_BASE..+SLOTS*SLOT_SIZE), which is identity
    // mapped and is device memory, not RAM: a volatile read has no effect
    // beyond the device's, and no reference is made.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// The virtio-mmio transport of the slot at `base`, which the caller has
/// found to hold a device (magic, version 2, a device id).
pub fn transport(base: u64, size: u64) -> Option<MmioTransport<'static>> {
    let header = NonNull::new(base as *mut VirtIOHeader)?;
    // SAFETY: `base` is a slot of the virtio-mmio window (identity mapped
    // device memory, valid for the libOS's lifetime); `size` is the slot's
    // size, so the config space after the header lies inside it. Each slot
    // gets one transport, made once (net::virtio::probe).
    unsafe { MmioTransport::new(header, size as usize) }.ok()
}

/// DMA for virtio-drivers: zeroed page-aligned heap memory, identity mapped.
pub struct IdentityHal;

const PAGE: usize = 4096;

// SAFETY (trait contract): dma_alloc returns zeroed, page-aligned memory
// owned by nobody else until dma_dealloc; addresses are physical because
// the map is the identity; share/unshare need no copies (no IOMMU, no
// bounce buffers: the device reads guest RAM directly).
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = core::alloc::Layout::from_size_align(pages * PAGE, PAGE).expect("dma layout");
        // SAFETY: the layout has a non-zero size (pages >= 1 by contract).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let p = NonNull::new(p).unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout));
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = core::alloc::Layout::from_size_align(pages * PAGE, PAGE).expect("dma layout");
        // SAFETY: allocated by dma_alloc with this layout (caller's contract).
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("mmio address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}
