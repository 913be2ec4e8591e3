//! virtio-net behind its virtio-mmio transport, driven as a guest driver
//! would: registers, rings and buffers in guest RAM, with an in-memory
//! backend on the other side.
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_mmio as reg;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::bus::{Action, BusDevice, Ctx, Poll};
use crate::console::{Console, ConsoleIn, ConsoleOut};
use crate::timeline::Timeline;
use crate::virtio::mmio::{CONFIG, MmioTransport};
use crate::virtio::{
    F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};

/// Frames in both directions, held in memory; takes `room` frames at most.
#[derive(Default)]
struct Fake {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
    room: usize,
}

impl NetBackend for Fake {
    fn can_send(&self) -> bool {
        self.from_guest.len() < self.room
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        self.from_guest.push(frame.to_vec());
        true
    }
    fn can_recv(&self) -> bool {
        !self.to_guest.is_empty()
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.to_guest.pop_front()
    }
    fn poll(&mut self) -> bool {
        false
    }
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
    fn poll_delay(&mut self) -> Option<Duration> {
        None
    }
}

const QSIZE: u16 = 8;
/// (descriptor table, available ring, used ring) of RX and TX.
const RINGS: [(u64, u64, u64); 2] = [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];
const BUFS: u64 = 0x8000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

struct Driver {
    mem: GuestMemoryMmap,
    console: Console,
    timeline: Timeline,
    t: MmioTransport<VirtioNet<Fake>>,
}

impl Driver {
    fn new(room: usize) -> Driver {
        let fake = Fake {
            room,
            ..Fake::default()
        };
        Driver {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap(),
            console: Console {
                out: ConsoleOut::Capture(Vec::new()),
                input: ConsoleIn::Buffer {
                    data: Vec::new(),
                    pos: 0,
                },
            },
            timeline: Timeline::new(Instant::now()),
            t: MmioTransport::new(VirtioNet::new(fake, GUEST_MAC)).unwrap(),
        }
    }

    fn read(&mut self, offset: u32) -> u32 {
        let mut w = [0u8; 4];
        let mut ctx = Ctx {
            mem: &self.mem,
            console: &mut self.console,
            timeline: &mut self.timeline,
        };
        self.t.read(&mut ctx, u64::from(offset), &mut w);
        u32::from_le_bytes(w)
    }

    fn write(&mut self, offset: u32, value: u32) {
        let mut ctx = Ctx {
            mem: &self.mem,
            console: &mut self.console,
            timeline: &mut self.timeline,
        };
        let a = self
            .t
            .write(&mut ctx, u64::from(offset), &value.to_le_bytes());
        assert_eq!(a, Action::Continue);
    }

    fn backend(&mut self) -> &mut Fake {
        self.t.device_mut().backend()
    }

    /// The whole init sequence: MAC and VERSION_1, both queues, DRIVER_OK.
    fn init(&mut self) {
        self.write(reg::VIRTIO_MMIO_STATUS, 0);
        self.write(reg::VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE);
        self.write(reg::VIRTIO_MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.write(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let offered = self.read(reg::VIRTIO_MMIO_DEVICE_FEATURES);
        assert_eq!(u64::from(offered), 1 << VIRTIO_NET_F_MAC);
        let features = (1u64 << VIRTIO_NET_F_MAC) | F_VERSION_1;
        for sel in 0..2 {
            self.write(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.write(
                reg::VIRTIO_MMIO_DRIVER_FEATURES,
                (features >> (32 * sel)) as u32,
            );
        }
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        self.write(reg::VIRTIO_MMIO_STATUS, s);
        assert_eq!(self.read(reg::VIRTIO_MMIO_STATUS), s);
        for (q, (desc, avail, used)) in RINGS.iter().enumerate() {
            self.write(reg::VIRTIO_MMIO_QUEUE_SEL, q as u32);
            self.write(reg::VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
            self.write(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, *desc as u32);
            self.write(reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, *avail as u32);
            self.write(reg::VIRTIO_MMIO_QUEUE_USED_LOW, *used as u32);
            self.write(reg::VIRTIO_MMIO_QUEUE_READY, 1);
        }
        self.write(reg::VIRTIO_MMIO_STATUS, s | STATUS_DRIVER_OK);
        assert!(self.t.active());
    }

    fn desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = RINGS[q].0 + 16 * u64::from(index);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    fn make_available(&self, q: usize, head: u16) {
        let avail = RINGS[q].1;
        let idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let slot = avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(avail + 2))
            .unwrap();
    }

    fn used_flags(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(RINGS[q].2)).unwrap()
    }

    fn used_idx(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(RINGS[q].2 + 2)).unwrap()
    }

    /// The used ring's entry `i`: (head, length written).
    fn used(&self, q: usize, i: u16) -> (u32, u32) {
        let at = RINGS[q].2 + 4 + 8 * u64::from(i % QSIZE);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn notify(&mut self, q: u32) {
        self.write(reg::VIRTIO_MMIO_QUEUE_NOTIFY, q);
    }
}

fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
fn config_space_holds_the_mac() {
    let mut d = Driver::new(8);
    assert_eq!(d.read(reg::VIRTIO_MMIO_DEVICE_ID), 1);
    let low = d.read(CONFIG as u32).to_le_bytes();
    let high = d.read(CONFIG as u32 + 4).to_le_bytes();
    assert_eq!([&low[..], &high[..2]].concat(), GUEST_MAC);
    assert_eq!(&high[2..], [0, 0]);
}

#[test]
fn tx_strips_the_header_and_hands_the_frame_over() {
    let mut d = Driver::new(8);
    d.init();
    let f = frame(1, 60);
    // Header and frame in separate descriptors, as drivers often do.
    d.mem.write_slice(&[0u8; HDR], GuestAddress(BUFS)).unwrap();
    d.mem.write_slice(&f, GuestAddress(BUFS + 0x100)).unwrap();
    d.desc(TX, 0, BUFS, HDR as u32, F_NEXT, 1);
    d.desc(TX, 1, BUFS + 0x100, f.len() as u32, 0, 0);
    d.make_available(TX, 0);
    d.notify(TX as u32);
    assert_eq!(d.backend().from_guest, vec![f]);
    assert_eq!(d.used_idx(TX), 1);
    assert_eq!(d.used(TX, 0), (0, 0));
    assert_eq!(d.read(reg::VIRTIO_MMIO_INTERRUPT_STATUS) & 1, 1);
    assert_eq!(d.t.device().stats.tx_frames, 1);
}

#[test]
fn receive_buffers_need_no_notify_and_transmit_ones_do() {
    let mut d = Driver::new(1);
    d.init();
    // VRING_USED_F_NO_NOTIFY: the ring is looked at whenever a frame comes.
    assert_eq!(d.used_flags(RX) & 1, 1);
    assert_eq!(d.used_flags(TX) & 1, 0);
}

#[test]
fn tx_waits_while_the_backend_is_full() {
    let mut d = Driver::new(1);
    d.init();
    for i in 0..2u16 {
        let at = BUFS + 0x800 * u64::from(i);
        d.mem.write_slice(&[0u8; HDR], GuestAddress(at)).unwrap();
        d.desc(TX, i, at, (HDR + 20) as u32, 0, 0);
        d.make_available(TX, i);
    }
    d.notify(TX as u32);
    // One taken; the other stays in the ring until the backend has room.
    assert_eq!(d.used_idx(TX), 1);
    d.backend().room = 2;
    // Taken while the guest waits; a frame sent is nothing to wake it for.
    assert!(!Poll::poll(&mut d.t, &d.mem.clone()));
    assert_eq!(d.used_idx(TX), 2);
    assert_eq!(d.backend().from_guest.len(), 2);
}

#[test]
fn rx_fills_posted_buffers_and_keeps_the_rest() {
    let mut d = Driver::new(8);
    d.init();
    let frames = [frame(10, 1514), frame(20, 60), frame(30, 100)];
    d.backend().to_guest.extend(frames.iter().cloned());
    // Buffer 0: one 2 KiB descriptor. Buffer 1: the header alone, then the rest.
    d.desc(RX, 0, BUFS, 2048, F_WRITE, 0);
    d.desc(RX, 1, BUFS + 0x1000, HDR as u32, F_WRITE | F_NEXT, 2);
    d.desc(RX, 2, BUFS + 0x2000, 2048, F_WRITE, 0);
    d.make_available(RX, 0);
    d.make_available(RX, 1);
    d.notify(RX as u32);
    assert_eq!(d.used_idx(RX), 2);
    assert_eq!(d.used(RX, 0), (0, (HDR + 1514) as u32));
    assert_eq!(d.used(RX, 1), (1, (HDR + 60) as u32));
    let mut hdr = [0u8; HDR];
    hdr[10] = 1; // num_buffers
    assert_eq!(d.bytes(BUFS, HDR), hdr);
    assert_eq!(d.bytes(BUFS + HDR as u64, 1514), frames[0]);
    assert_eq!(d.bytes(BUFS + 0x1000, HDR), hdr);
    assert_eq!(d.bytes(BUFS + 0x2000, 60), frames[1]);
    // No buffer for the third: it waits in the backend, not dropped, and
    // the device now wants to hear of new buffers.
    assert_eq!(d.backend().to_guest.len(), 1);
    assert_eq!(d.used_flags(RX) & 1, 0, "starved: notifications on");
    let mem = d.mem.clone();
    assert!(!Poll::poll(&mut d.t, &mem));
    d.desc(RX, 3, BUFS + 0x3000, 2048, F_WRITE, 0);
    d.make_available(RX, 3);
    assert!(Poll::poll(&mut d.t, &mem), "a wait delivers it");
    assert_eq!(d.used_flags(RX) & 1, 1, "fed: notifications off again");
    assert_eq!(d.used(RX, 2), (3, (HDR + 100) as u32));
    assert_eq!(d.bytes(BUFS + 0x3000 + HDR as u64, 100), frames[2]);
    assert_eq!(d.t.device().stats.rx_frames, 3);
    assert_eq!(d.t.device().stats.rx_dropped, 0);
}

#[test]
fn a_buffer_too_short_drops_the_frame_and_no_driver_drops_all() {
    let mut d = Driver::new(8);
    let mem = d.mem.clone();
    // No driver yet: frames have nowhere to go.
    d.backend().to_guest.push_back(frame(1, 60));
    assert!(!Poll::poll(&mut d.t, &mem));
    assert_eq!(d.t.device().stats.rx_dropped, 1);
    d.init();
    d.backend().to_guest.push_back(frame(2, 200));
    d.desc(RX, 0, BUFS, 100, F_WRITE, 0);
    d.make_available(RX, 0);
    d.notify(RX as u32);
    assert_eq!(d.used(RX, 0), (0, 0));
    assert_eq!(d.t.device().stats.rx_dropped, 2);
    assert!(d.backend().to_guest.is_empty());
}
