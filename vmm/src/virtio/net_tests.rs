//! virtio-net behind its virtio-mmio transport, driven as a guest driver
//! would: registers, rings and buffers in guest RAM, with an in-memory
//! backend on the other side.
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Duration;

use virtio_bindings::virtio_mmio as reg;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::bus::Poll;
use crate::virtio::mmio::{CONFIG, MmioTransport};
use crate::virtio::test_guest::{F_NEXT, F_WRITE, Guest, Ring};
use crate::virtio::{F_VERSION_1, STATUS_DRIVER_OK};

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

/// (descriptor table, available ring, used ring) of RX and TX.
const RINGS: &[Ring] = &[
    Ring {
        desc: 0x1000,
        avail: 0x2000,
        used: 0x3000,
    },
    Ring {
        desc: 0x4000,
        avail: 0x5000,
        used: 0x6000,
    },
];
const BUFS: u64 = 0x8000;

type Driver = Guest<VirtioNet<Fake>>;

impl Driver {
    fn new(room: usize) -> Driver {
        let fake = Fake {
            room,
            ..Fake::default()
        };
        let t = MmioTransport::new(VirtioNet::new(fake, GUEST_MAC)).unwrap();
        Guest::attach(t, 0x20000, RINGS)
    }

    fn backend(&mut self) -> &mut Fake {
        self.t.device_mut().backend()
    }

    /// The whole init sequence: MAC and VERSION_1, both queues, DRIVER_OK.
    fn init(&mut self) {
        self.write(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let offered = self.read(reg::VIRTIO_MMIO_DEVICE_FEATURES);
        assert_eq!(u64::from(offered), 1 << VIRTIO_NET_F_MAC);
        assert!(self.negotiate((1u64 << VIRTIO_NET_F_MAC) | F_VERSION_1));
        for q in 0..RINGS.len() {
            self.setup_queue(q);
        }
        self.add_status(STATUS_DRIVER_OK);
        assert!(self.t.active());
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
fn frames_wait_for_a_driver_and_a_buffer_too_short_drops_the_frame() {
    let mut d = Driver::new(8);
    let mem = d.mem.clone();
    // No driver yet (a guest still booting): the frame waits for one.
    d.backend().to_guest.push_back(frame(1, 60));
    assert!(!Poll::poll(&mut d.t, &mem));
    assert_eq!(d.t.device().stats.rx_dropped, 0);
    assert_eq!(d.backend().to_guest.len(), 1);
    d.init();
    d.desc(RX, 0, BUFS, 2048, F_WRITE, 0);
    d.make_available(RX, 0);
    d.notify(RX as u32);
    assert_eq!(d.used(RX, 0), (0, (HDR + 60) as u32));
    assert_eq!(d.bytes(BUFS + HDR as u64, 60), frame(1, 60));
    d.backend().to_guest.push_back(frame(2, 200));
    d.desc(RX, 1, BUFS + 0x1000, 100, F_WRITE, 0);
    d.make_available(RX, 1);
    d.notify(RX as u32);
    assert_eq!(d.used(RX, 1), (1, 0));
    assert_eq!(d.t.device().stats.rx_dropped, 1);
    assert!(d.backend().to_guest.is_empty());
}
