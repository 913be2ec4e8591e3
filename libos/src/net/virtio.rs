//! The virtio-net device: found by probing the virtio-mmio slots
//! (pgkraft_abi::VIRTIO_MMIO_*) the first time a socket is made, never at
//! boot, so images without sockets pay nothing. Empty slots cost one read
//! (the magic) under our runner, three under QEMU microvm.
//!
//! A small driver of our own on `virtio-drivers`' transport and queues
//! (arch::virtio::Ring), not its `VirtIONet`, because that one decides
//! when the device is told about a frame (a notify for every frame, and
//! `send` spins until the device took it), and on PVM each notify is a VM
//! exit of ~34 µs (`python3 ../shared/tools/kvm-probe.py`, "port
//! writes"): three of them per request/response made a round trip through
//! `--publish` cost ~230 µs.
//!
//! **When the device hears of frames.** Receive buffers are handed back
//! at once and the device is told only if it asks (our runner never does:
//! it fills the ring whenever it runs). Frames to send are put in the
//! transmit ring, and under our runner the notify is deferred: the
//! runner's network thread takes them while it looks at the rings after
//! traffic, and its `hc::WAIT` takes every queued frame before it blocks,
//! so a server that answers and then waits (stack.rs spins on the receive
//! ring first) costs no exit per round trip. A deferred frame is never
//! held long: the device is
//! notified when the ring is full, before the libOS blocks any other way
//! (sleep, console read) or exits, and at the next system call once it
//! has waited [`TX_DEFER_NS`]. Under another VMM (QEMU) each stack poll
//! notifies once for all it queued.

use super::filter::{self, Full};
use crate::arch::virtio::{BUF, Ring, is_device, transport};
use crate::platform::{self, Host};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use pgkraft_abi::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

const DEVICE_NET: u32 = 1;
const F_MAC: u64 = 1 << 5;
const F_VERSION_1: u64 = 1 << 32;
const RX: u16 = 0;
const TX: u16 = 1;
/// `virtio_net_hdr_v1` (VERSION_1 always has `num_buffers`).
const HDR: usize = 12;
/// Ring sizes (power of two): a burst of this many frames costs one exit.
const QUEUE: usize = 64;
/// Ethernet MTU 1500 + header.
const FRAME: usize = 1514;
/// The longest a queued frame waits for its notify while the program
/// runs without blocking (checked at each system call).
pub const TX_DEFER_NS: u64 = 100_000;

/// How long the VM's end waits for the device to take the last frames.
const DRAIN_NS: u64 = 10_000_000;

/// When the oldest unannounced frame was queued (monotonic ns), 0 if none:
/// read at every system call, so it lives outside the stack's lock.
static TX_PENDING_SINCE: AtomicU64 = AtomicU64::new(0);

pub struct VirtioNet {
    transport: MmioTransport<'static>,
    mac: [u8; 6],
    rx: Ring<QUEUE>,
    tx: Ring<QUEUE>,
    /// Receive buffers handed back since the device was last told.
    rx_offered: bool,
    pub full: Vec<Full>,
}

/// The first virtio-net device, if the VM has one.
pub fn probe() -> Option<VirtioNet> {
    for slot in 0..VIRTIO_MMIO_SLOTS {
        let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
        if !is_device(base, DEVICE_NET) {
            continue;
        }
        let Some(t) = transport(base, VIRTIO_MMIO_SLOT_SIZE) else {
            continue;
        };
        match VirtioNet::new(t) {
            Ok(net) => return Some(net),
            Err(e) => crate::log!("libos: virtio-net in slot {slot}: {e}"),
        }
    }
    None
}

impl VirtioNet {
    /// Device initialization (virtio 1.2 §3.1.1): features, queues, then
    /// every receive buffer offered.
    fn new(mut t: MmioTransport<'static>) -> Result<VirtioNet, &'static str> {
        t.set_status(DeviceStatus::empty());
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = t.read_device_features();
        if offered & F_VERSION_1 == 0 || offered & F_MAC == 0 {
            t.set_status(DeviceStatus::FAILED);
            return Err("the device offers no VERSION_1 or no MAC");
        }
        t.write_driver_features(F_VERSION_1 | F_MAC);
        let ok = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        t.set_status(ok);
        if !t.get_status().contains(DeviceStatus::FEATURES_OK) {
            t.set_status(DeviceStatus::FAILED);
            return Err("the device refused our features");
        }
        let mac = t
            .read_config_space::<[u8; 6]>(0)
            .map_err(|_| "cannot read the MAC")?;
        let rx = Ring::new(&mut t, RX, true).map_err(|_| "cannot set up the receive queue")?;
        let tx = Ring::new(&mut t, TX, false).map_err(|_| "cannot set up the transmit queue")?;
        t.finish_init();
        let mut net = VirtioNet {
            transport: t,
            mac,
            rx,
            tx,
            rx_offered: false,
            full: Vec::new(),
        };
        while net.rx.offer(BUF, |_| {}) {
            net.rx_offered = true;
        }
        net.flush();
        Ok(net)
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether a received frame waits to be read.
    pub fn pending(&self) -> bool {
        self.rx.has_used()
    }

    /// Tells the device about what this poll queued: receive buffers if it
    /// asks to hear of them; frames to send now (another VMM), or under
    /// our runner only when the ring is full (else the next `hc::WAIT`,
    /// or [`tx_deadline`], carries them).
    pub fn flush(&mut self) {
        if self.rx_offered {
            self.rx_offered = false;
            if self.rx.should_notify() {
                self.transport.notify(RX);
            }
        }
        if TX_PENDING_SINCE.load(Ordering::Relaxed) != 0
            && (platform::host() != Host::Runner || !self.tx.has_free())
        {
            self.kick_tx();
        }
    }

    /// Tells the device about every queued frame now, unless it took
    /// them all already (the runner's network thread does, after traffic).
    pub fn kick_tx(&mut self) {
        if !self.tx_unsent() {
            return;
        }
        TX_PENDING_SINCE.store(0, Ordering::Relaxed);
        if self.tx.should_notify() {
            self.transport.notify(TX);
        }
        self.reclaim_tx();
    }

    /// Whether the device still holds frames to send (after taking back
    /// what it is done with; none held clears the deferral clock).
    pub fn tx_unsent(&mut self) -> bool {
        self.reclaim_tx();
        if self.tx.all_free() {
            TX_PENDING_SINCE.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// [`Self::kick_tx`], then waits (bounded) until the device has taken
    /// every frame: before the VM ends, under a VMM that sends later (QEMU
    /// sends from a deferred task; its exit device ends the VM at once).
    pub fn drain_tx(&mut self) {
        self.kick_tx();
        let until = crate::time::monotonic_ns().saturating_add(DRAIN_NS);
        while self.tx_unsent() && crate::time::monotonic_ns() < until {
            crate::arch::cpu::pause();
        }
    }

    fn reclaim_tx(&mut self) {
        while self.tx.take_used(|_| ()).is_some() {}
    }
}

/// The runner takes every queued frame when the guest waits: nothing is
/// pending after it (called just before `hc::WAIT`).
pub fn wait_takes_tx() {
    TX_PENDING_SINCE.store(0, Ordering::Relaxed);
}

/// Whether frames wait for their notify.
pub fn tx_pending() -> bool {
    TX_PENDING_SINCE.load(Ordering::Relaxed) != 0
}

/// Whether the oldest deferred frame has waited [`TX_DEFER_NS`].
pub fn tx_overdue(now_ns: u64) -> bool {
    let since = TX_PENDING_SINCE.load(Ordering::Relaxed);
    since != 0 && now_ns.saturating_sub(since) >= TX_DEFER_NS
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VirtioNet);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let net = self.0;
        let mut r = None;
        let mut f = Some(f);
        // `transmit` made sure a buffer is free.
        let queued = net.tx.offer(HDR + len, |buf| {
            buf[..HDR].fill(0);
            r = f.take().map(|f| f(&mut buf[HDR..]));
        });
        if queued {
            if TX_PENDING_SINCE.load(Ordering::Relaxed) == 0 {
                TX_PENDING_SINCE.store(crate::time::monotonic_ns().max(1), Ordering::Relaxed);
            }
        } else if HDR + len > BUF {
            crate::log!("libos: virtio-net: a {len}-byte frame is longer than a buffer; dropped");
        }
        // Else the ring was full (`transmit` found no room): dropped, as a
        // full device queue drops; TCP sends it again.
        match (r, f) {
            (Some(r), _) => r,
            // Not queued (too long): smoltcp still needs its answer; the
            // frame is lost as on a full device queue.
            (None, Some(f)) => f(&mut alloc::vec![0u8; len]),
            (None, None) => unreachable!("fill ran without an answer"),
        }
    }
}

impl Device for VirtioNet {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = FRAME;
        c.max_burst_size = Some(QUEUE);
        c
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        loop {
            let frame = self
                .rx
                .take_used(|data| data.get(HDR..).map(<[u8]>::to_vec))?;
            // Handed straight back: the ring stays full.
            if self.rx.offer(BUF, |_| {}) {
                self.rx_offered = true;
            }
            let Some(frame) = frame else { continue };
            if filter::drop_syn(filter::ip_of_ethernet(&frame), &self.full) {
                continue;
            }
            // smoltcp may answer it at once (an ACK, a reset).
            self.tx_room();
            return Some((Rx(frame), Tx(self)));
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        self.tx_room().then_some(Tx(self))
    }
}

impl VirtioNet {
    /// A free transmit buffer, reclaiming (and if need be notifying) first.
    fn tx_room(&mut self) -> bool {
        if !self.tx.has_free() {
            self.reclaim_tx();
        }
        if !self.tx.has_free() && tx_pending() {
            // Full of deferred frames: the device takes them now (our
            // runner synchronously, on the notify's exit).
            self.kick_tx();
        }
        self.tx.has_free()
    }
}
