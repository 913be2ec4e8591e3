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

/// Whether the virtio-mmio slot at `base` holds a modern (version 2)
/// device of type `id`. The device id is read first: an empty slot (0
/// under both our runner and QEMU) then costs one read, one VM exit.
pub fn is_device(base: u64, id: u32) -> bool {
    const MAGIC: u32 = 0x7472_6976; // "virt"
    const VERSION: u32 = 2;
    const REG_MAGIC: u64 = 0x000;
    const REG_VERSION: u64 = 0x004;
    const REG_DEVICE_ID: u64 = 0x008;
    mmio_read32(base + REG_DEVICE_ID) == id
        && mmio_read32(base + REG_MAGIC) == MAGIC
        && mmio_read32(base + REG_VERSION) == VERSION
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

/// Bytes of each buffer a [`Ring`] owns: a whole Ethernet frame (1514)
/// with its 12-byte virtio-net header fits.
pub const BUF: usize = 2048;

/// A virtqueue of `virtio-drivers` with buffers of its own, one descriptor
/// per buffer: the unsafe contract of `VirtQueue::add` (a buffer stays put
/// and untouched while the device holds it) is kept here, so the driver
/// above (net/virtio.rs) is safe code. The buffers are never freed (the
/// stack is never torn down), and each is reached only through a slice of
/// its own, never through one over all of them: the device writes the
/// buffers it holds while the guest runs.
pub struct Ring<const SIZE: usize> {
    queue: virtio_drivers::queue::VirtQueue<IdentityHal, SIZE>,
    /// Device writes the buffers (receive) or reads them (transmit).
    writable: bool,
    /// SIZE buffers of BUF bytes, leaked.
    base: NonNull<u8>,
    /// Per token (chain head) the device holds: its buffer and length.
    held: [Option<(u16, u16)>; SIZE],
    /// Buffers the device does not hold.
    free: alloc::vec::Vec<u16>,
}

// SAFETY: `base` is memory only this Ring refers to (leaked for it); the
// libOS runs on one vCPU, and the Ring moves with the stack that owns it.
unsafe impl<const SIZE: usize> Send for Ring<SIZE> {}

impl<const SIZE: usize> Ring<SIZE> {
    pub fn new(
        t: &mut MmioTransport<'static>,
        idx: u16,
        writable: bool,
    ) -> Result<Self, virtio_drivers::Error> {
        let store: &'static mut [u8] = alloc::vec![0u8; SIZE * BUF].leak();
        Ok(Ring {
            queue: virtio_drivers::queue::VirtQueue::new(t, idx, false, false)?,
            writable,
            base: NonNull::from(store).cast(),
            held: [None; SIZE],
            free: (0..SIZE as u16).collect(),
        })
    }

    /// Buffer `b`'s first `len` bytes.
    ///
    /// # Safety
    /// Only while the device does not hold buffer `b` (off the free list
    /// for `offer`, or just popped in `take_used`) and no other slice of
    /// it lives.
    unsafe fn slot<'a>(&self, b: u16, len: usize) -> &'a mut [u8] {
        debug_assert!((b as usize) < SIZE && len <= BUF);
        // SAFETY: buffer `b` lies inside the leaked SIZE * BUF bytes, which
        // are never freed; uniqueness is the caller's.
        unsafe { core::slice::from_raw_parts_mut(self.base.as_ptr().add(b as usize * BUF), len) }
    }

    /// Whether the device wants to hear of new buffers (it may say no:
    /// notification suppression).
    pub fn should_notify(&self) -> bool {
        self.queue.should_notify()
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// The device holds no buffer (all it was given came back).
    pub fn all_free(&self) -> bool {
        self.free.len() == SIZE
    }

    /// Whether the device gave a buffer back ([`Self::take_used`] has one).
    pub fn has_used(&self) -> bool {
        self.queue.can_pop()
    }

    /// Offers a free buffer for the device to fill (a receive ring);
    /// `len` bytes of it, the whole buffer for receiving, what `fill`
    /// wrote for sending. False when every buffer is held.
    pub fn offer(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if len == 0 || len > BUF {
            return false;
        }
        let Some(b) = self.free.pop() else {
            return false;
        };
        let writable = self.writable;
        // SAFETY: `b` just came off the free list: the device does not hold
        // it and no slice of it lives.
        let buf = unsafe { self.slot(b, len) };
        fill(buf);
        // SAFETY: the buffer came off the free list, so the device does
        // not hold it and nothing else refers to it; it goes back on only
        // after `pop_used` returned it (take_used), which is when the
        // device is done with it; the memory is never freed.
        let token = if writable {
            unsafe { self.queue.add(&[], &mut [buf]) }
        } else {
            unsafe { self.queue.add(&[buf], &mut []) }
        };
        match token {
            Ok(t) => {
                self.held[t as usize] = Some((b, len as u16));
                true
            }
            Err(_) => {
                self.free.push(b);
                false
            }
        }
    }

    /// The next buffer the device gave back: `f` sees the bytes it wrote
    /// (a receive ring) or nothing (a transmit ring), then the buffer is
    /// free again. A token we never gave out ends nothing (and is `None`).
    pub fn take_used<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let token = self.queue.peek_used()?;
        let (b, len) = self.held.get(token as usize).copied().flatten()?;
        let writable = self.writable;
        // SAFETY: the device is done with `b` (its chain is the next used
        // one) and we hold no slice of it.
        let buf = unsafe { self.slot(b, len as usize) };
        // SAFETY: `token` is the next used chain, and `buf` is exactly the
        // one buffer `offer` added under that token, in the same direction.
        let used = if writable {
            unsafe { self.queue.pop_used(token, &[], &mut [buf]) }
        } else {
            unsafe { self.queue.pop_used(token, &[buf], &mut []) }
        };
        let used = used.ok()? as usize;
        self.held[token as usize] = None;
        self.free.push(b);
        let data: &[u8] = if writable {
            // SAFETY: `b` is free and the earlier slice is no longer used;
            // nothing offers it again before `f` returns.
            unsafe { self.slot(b, used.min(len as usize)) }
        } else {
            &[]
        };
        Some(f(data))
    }
}

/// A request/answer virtqueue (virtio-9p's) with buffers of its own: each
/// slot is one chain of two descriptors, the request the device reads and
/// room for the answer it writes. Several slots can be in flight at once
/// and the device may answer them in any order (the runner syncs files on
/// threads of its own), so answers are matched to slots by token. The
/// unsafe contract of `VirtQueue::add` (a buffer stays put and untouched
/// while the device holds it) is kept here, as [`Ring`] keeps it for the
/// network: a slot's buffers are reached only while the device does not
/// hold them, each through a slice of its own, and never freed.
pub struct Calls<const SIZE: usize> {
    queue: virtio_drivers::queue::VirtQueue<IdentityHal, SIZE>,
    slots: alloc::vec::Vec<CallSlot>,
}

struct CallSlot {
    /// The request's buffer and the answer's, `cap` bytes each, leaked.
    tx: NonNull<u8>,
    rx: NonNull<u8>,
    cap: usize,
    state: CallState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CallState {
    Free,
    /// Taken by [`Calls::claim`]; the request is being written.
    Claimed,
    /// The device holds it: chain `token`, a request of `len` bytes.
    Held {
        token: u16,
        len: usize,
    },
    /// The device gave it back with an answer of this many bytes.
    Answered(usize),
}

// SAFETY: the slots' buffers are memory only this Calls refers to (leaked
// for it); the libOS runs on one vCPU.
unsafe impl<const SIZE: usize> Send for Calls<SIZE> {}

impl<const SIZE: usize> Calls<SIZE> {
    /// One slot per entry of `caps`, with buffers of that many bytes; a
    /// queue of SIZE descriptors holds SIZE / 2 chains.
    pub fn new(
        t: &mut MmioTransport<'static>,
        idx: u16,
        caps: &[usize],
    ) -> Result<Self, virtio_drivers::Error> {
        if caps.len() * 2 > SIZE {
            return Err(virtio_drivers::Error::InvalidParam);
        }
        let leak = |n: usize| NonNull::from(alloc::vec![0u8; n].leak()).cast::<u8>();
        let slots = caps
            .iter()
            .map(|&cap| CallSlot {
                tx: leak(cap),
                rx: leak(cap),
                cap,
                state: CallState::Free,
            })
            .collect();
        Ok(Calls {
            queue: virtio_drivers::queue::VirtQueue::new(t, idx, false, false)?,
            slots,
        })
    }

    /// A free slot whose buffers hold at least `bytes` and at most
    /// `at_most`, the smallest such (the large ones stay for the requests
    /// that need them).
    pub fn claim(&mut self, bytes: usize, at_most: usize) -> Option<usize> {
        let i = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.state == CallState::Free && s.cap >= bytes && s.cap <= at_most
            })
            .min_by_key(|&i| self.slots[i].cap)?;
        self.slots[i].state = CallState::Claimed;
        Some(i)
    }

    /// How many free slots hold at least `bytes`.
    pub fn free_holding(&self, bytes: usize) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == CallState::Free && s.cap >= bytes)
            .count()
    }

    /// The request buffer of slot `i`, which [`Self::claim`] gave out.
    pub fn request(&mut self, i: usize) -> &mut [u8] {
        let s = &self.slots[i];
        assert!(s.state == CallState::Claimed, "slot {i} is not claimed");
        // SAFETY: a claimed slot is not held by the device, and the slice
        // borrows `self` mutably, so no other slice of it lives.
        unsafe { core::slice::from_raw_parts_mut(s.tx.as_ptr(), s.cap) }
    }

    /// Gives back a claimed slot whose request was not sent.
    pub fn unclaim(&mut self, i: usize) {
        if self.slots[i].state == CallState::Claimed {
            self.slots[i].state = CallState::Free;
        }
    }

    /// Hands the first `len` bytes of slot `i`'s request to the device,
    /// with its whole answer buffer; notifies unless the device said it
    /// is looking at the ring anyway.
    pub fn send(
        &mut self,
        i: usize,
        len: usize,
        t: &mut MmioTransport<'static>,
        idx: u16,
    ) -> Result<(), virtio_drivers::Error> {
        let s = &self.slots[i];
        assert!(s.state == CallState::Claimed, "slot {i} is not claimed");
        let len = len.min(s.cap);
        // SAFETY: the slot is claimed (the device does not hold it) and no
        // slice of it lives (`request`'s borrow ended); both buffers stay
        // put and are reached by nobody until `reap` pops the chain, which
        // is when the device is done with them; the memory is never freed.
        let token = unsafe {
            let tx = core::slice::from_raw_parts(s.tx.as_ptr(), len);
            let rx = core::slice::from_raw_parts_mut(s.rx.as_ptr(), s.cap);
            self.queue.add(&[tx], &mut [rx])?
        };
        self.slots[i].state = CallState::Held { token, len };
        if self.queue.should_notify() {
            virtio_drivers::transport::Transport::notify(t, idx);
        }
        Ok(())
    }

    /// Takes every chain the device gave back; false if one was not ours
    /// (the device broke the protocol).
    pub fn reap(&mut self) -> bool {
        while let Some(token) = self.queue.peek_used() {
            let Some(i) = self
                .slots
                .iter()
                .position(|s| matches!(s.state, CallState::Held { token: t, .. } if t == token))
            else {
                return false;
            };
            let CallState::Held { len, .. } = self.slots[i].state else {
                unreachable!()
            };
            let s = &self.slots[i];
            // SAFETY: `token` is the next used chain, and these are exactly
            // the two buffers `send` added under it; the device is done.
            let used = unsafe {
                let tx = core::slice::from_raw_parts(s.tx.as_ptr(), len);
                let rx = core::slice::from_raw_parts_mut(s.rx.as_ptr(), s.cap);
                self.queue.pop_used(token, &[tx], &mut [rx])
            };
            match used {
                Ok(n) => self.slots[i].state = CallState::Answered(n as usize),
                Err(_) => return false,
            }
        }
        true
    }

    /// Whether the device gave back a chain of a request in flight that
    /// [`Self::reap`] has not taken yet: an answer is there. A chain that
    /// is not ours (the device broke the protocol) is none: it would never
    /// be taken.
    pub fn has_answer(&self) -> bool {
        self.queue.peek_used().is_some_and(|token| {
            self.slots
                .iter()
                .any(|s| matches!(s.state, CallState::Held { token: t, .. } if t == token))
        })
    }

    /// Whether any request is with the device.
    pub fn in_flight(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.state, CallState::Held { .. }))
    }

    /// `f` reads slot `i`'s answer (as many bytes as the device said it
    /// wrote, at most the buffer); then the slot is free. None if it has
    /// no answer yet.
    pub fn take<R>(&mut self, i: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let s = &self.slots[i];
        let CallState::Answered(n) = s.state else {
            return None;
        };
        // SAFETY: the device gave the chain back (reap), so it no longer
        // writes the buffer; the slice lives only during `f`, and the slot
        // is not handed out again before it ends.
        let answer = unsafe { core::slice::from_raw_parts(s.rx.as_ptr(), n.min(s.cap)) };
        let r = f(answer);
        self.slots[i].state = CallState::Free;
        Some(r)
    }
}
