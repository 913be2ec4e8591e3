//! A guest driver's view of a virtio-mmio transport, for the tests of the
//! transport (mmio_tests.rs) and of each device (net_tests.rs): guest RAM,
//! register accesses, and split rings at fixed guest addresses.

use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::MmioTransport;
use super::{STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, VirtioDevice};
use crate::bus::{Action, BusDevice, Ctx};
use crate::console::{Console, ConsoleIn, ConsoleOut};
use crate::timeline::Timeline;
use virtio_bindings::virtio_mmio as reg;

/// Entries of every ring the tests set up.
pub(crate) const QSIZE: u16 = 8;
pub(crate) const F_NEXT: u16 = 1;
pub(crate) const F_WRITE: u16 = 2;

/// A split virtqueue's three parts in guest RAM.
#[derive(Clone, Copy)]
pub(crate) struct Ring {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// Guest RAM, the transport, and the rings of its queues, in queue order.
pub(crate) struct Guest<D> {
    pub mem: GuestMemoryMmap,
    pub console: Console,
    pub timeline: Timeline,
    pub t: MmioTransport<D>,
    pub rings: &'static [Ring],
}

impl<D: VirtioDevice> Guest<D> {
    pub fn attach(t: MmioTransport<D>, mem_size: usize, rings: &'static [Ring]) -> Guest<D> {
        Guest {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap(),
            console: Console {
                out: ConsoleOut::Capture(Vec::new()),
                input: ConsoleIn::Buffer {
                    data: Vec::new(),
                    pos: 0,
                },
            },
            timeline: Timeline::new(Instant::now()),
            t,
            rings,
        }
    }

    /// A register access; writes must answer Continue.
    pub fn access(&mut self, offset: u64, data: &mut [u8], write: bool) {
        let mut ctx = Ctx {
            mem: &self.mem,
            console: &mut self.console,
            timeline: &mut self.timeline,
        };
        if write {
            assert_eq!(self.t.write(&mut ctx, offset, data), Action::Continue);
        } else {
            self.t.read(&mut ctx, offset, data);
        }
    }

    pub fn read(&mut self, offset: impl Into<u64>) -> u32 {
        let mut data = [0xaa; 4];
        self.access(offset.into(), &mut data, false);
        u32::from_le_bytes(data)
    }

    pub fn write(&mut self, offset: impl Into<u64>, value: u32) {
        self.access(offset.into(), &mut value.to_le_bytes(), true);
    }

    pub fn add_status(&mut self, bit: u32) {
        let s = self.read(reg::VIRTIO_MMIO_STATUS);
        self.write(reg::VIRTIO_MMIO_STATUS, s | bit);
    }

    pub fn write_features(&mut self, features: u64) {
        for sel in 0..2 {
            self.write(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.write(
                reg::VIRTIO_MMIO_DRIVER_FEATURES,
                (features >> (32 * sel)) as u32,
            );
        }
    }

    pub fn device_features(&mut self) -> u64 {
        self.write(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let low = self.read(reg::VIRTIO_MMIO_DEVICE_FEATURES);
        self.write(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        u64::from(self.read(reg::VIRTIO_MMIO_DEVICE_FEATURES)) << 32 | u64::from(low)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, `features` (VERSION_1 is the caller's
    /// to add), FEATURES_OK; whether the device kept FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.write(reg::VIRTIO_MMIO_STATUS, 0);
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        self.write_features(features);
        self.add_status(STATUS_FEATURES_OK);
        self.read(reg::VIRTIO_MMIO_STATUS) & STATUS_FEATURES_OK != 0
    }

    /// Queue `q` at its ring with [`QSIZE`] entries, then ready.
    pub fn setup_queue(&mut self, q: usize) {
        let r = self.rings[q];
        self.write(reg::VIRTIO_MMIO_QUEUE_SEL, q as u32);
        self.write(reg::VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
        for (low, high, addr) in [
            (
                reg::VIRTIO_MMIO_QUEUE_DESC_LOW,
                reg::VIRTIO_MMIO_QUEUE_DESC_HIGH,
                r.desc,
            ),
            (
                reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
                r.avail,
            ),
            (
                reg::VIRTIO_MMIO_QUEUE_USED_LOW,
                reg::VIRTIO_MMIO_QUEUE_USED_HIGH,
                r.used,
            ),
        ] {
            self.write(low, addr as u32);
            self.write(high, (addr >> 32) as u32);
        }
        self.write(reg::VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(self.read(reg::VIRTIO_MMIO_QUEUE_READY), 1);
    }

    pub fn notify(&mut self, q: u32) {
        self.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, q);
    }

    pub fn desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.rings[q].desc + 16 * u64::from(index);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Makes the chain at `head` available on queue `q`, as a driver does.
    pub fn make_available(&self, q: usize, head: u16) {
        let avail = self.rings[q].avail;
        let idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let slot = avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
            .unwrap();
    }

    pub fn used_flags(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(self.rings[q].used)).unwrap()
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.rings[q].used + 2))
            .unwrap()
    }

    /// Queue `q`'s used ring entry `i`: (head, length written).
    pub fn used(&self, q: usize, i: u16) -> (u32, u32) {
        let at = self.rings[q].used + 4 + 8 * u64::from(i % QSIZE);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn put(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }
}
