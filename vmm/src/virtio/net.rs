//! virtio-net (device type 1) over a [`NetBackend`]: queue 0 receives,
//! queue 1 transmits. Offered: VIRTIO_NET_F_MAC (the transport adds
//! VERSION_1); no offloads, no mergeable RX buffers, no control queue. So
//! every frame, both ways, is preceded by the 12-byte `virtio_net_hdr_v1`,
//! all zeros except `num_buffers` = 1 on receive, and one RX chain holds
//! one whole frame.
//!
//! **When frames move.** No interrupts: on a notify of either queue,
//! whenever the VM waits ([`VirtioDevice::poll`]: so `hc::WAIT` also
//! stands for a notify of the transmit queue, which the libOS relies on to
//! send without an exit of its own), and whenever its worker thread
//! (`worker.rs`) finds host work or looks at the rings, the device pumps:
//! guest TX chains to the backend (while it takes them;
//! otherwise they stay in the ring and the guest sees them pending), the
//! backend's host-side work, then the backend's frames into posted RX
//! chains. A frame waits in the backend's bounded queue while the guest
//! has no RX chain posted, and while no driver has the device (a guest
//! still booting: a client's SYN sent then is delivered once its driver is
//! up, instead of waiting for smoltcp's resend 0.7 s later, which made
//! `serve` ready ~0.7 s after PostgreSQL was); one too long for the chain
//! it gets is dropped (counted). The
//! receive queue's notifications are suppressed (VRING_USED_F_NO_NOTIFY)
//! but while frames wait for buffers: its ring is looked at on every pump
//! anyway.
//!
//! docs/ARCHITECTURE.md §4.

use std::os::fd::RawFd;
use std::time::Duration;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{DeviceError, VirtioCtx, VirtioDevice, read_config_bytes};
use crate::net::NetBackend;

pub(crate) const RX: usize = 0;
pub(crate) const TX: usize = 1;
/// `virtio_net_hdr_v1`'s size (VERSION_1 always has `num_buffers`).
pub(crate) const HDR: usize = 12;
/// `num_buffers`' offset in the header.
const NUM_BUFFERS: usize = 10;
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// A TX chain longer than this (header included) is dropped unread.
const MAX_TX: usize = HDR + (64 << 10);
/// Pump rounds per call at most (more only while the backend is full).
const ROUNDS: usize = 8;
/// The guest's MAC, as QEMU gives its first NIC.
pub(crate) const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Frame counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames for the guest dropped: chain too short.
    pub rx_dropped: u64,
    /// Guest chains dropped: too long, or shorter than the header.
    pub tx_dropped: u64,
}

/// What one [`VirtioNet::tx`] did.
#[derive(Default)]
struct Tx {
    /// Chains were taken.
    taken: bool,
    /// It stopped because the backend was full.
    stalled: bool,
}

pub(crate) struct VirtioNet<B> {
    backend: B,
    mac: [u8; 6],
    active: bool,
    /// Frames or host data moved since [`VirtioDevice::take_moved`].
    moved: bool,
    /// The receive queue's notifications are on (only while starved).
    rx_notify: bool,
    pub stats: NetStats,
}

impl<B: NetBackend> VirtioNet<B> {
    pub(crate) fn new(backend: B, mac: [u8; 6]) -> VirtioNet<B> {
        VirtioNet {
            backend,
            mac,
            active: false,
            moved: false,
            rx_notify: false,
            stats: NetStats::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Moves frames both ways: every guest chain the backend takes, the
    /// backend's own work, then its frames into the guest's buffers. The
    /// guest does not run meanwhile, so once more only helps when the
    /// backend was full while chains waited (up to [`ROUNDS`]). True if
    /// the guest got frames.
    fn pump(&mut self, ctx: &mut VirtioCtx, active: bool) -> Result<bool, DeviceError> {
        let mut sent = false;
        let mut received = false;
        for _ in 0..ROUNDS {
            let tx = if active { self.tx(ctx)? } else { Tx::default() };
            self.moved |= self.backend.poll() | tx.taken;
            let rx = active && self.rx(ctx)?;
            sent |= active && tx.taken;
            received |= active && rx;
            self.moved |= rx;
            if !(tx.taken && tx.stalled) {
                break;
            }
        }
        if sent || received {
            ctx.signal_used();
        }
        Ok(received)
    }

    /// Guest chains to the backend while it takes them.
    fn tx(&mut self, ctx: &mut VirtioCtx) -> Result<Tx, DeviceError> {
        let mem = ctx.mem;
        let q = &mut ctx.queues[TX];
        let mut out = Tx::default();
        loop {
            if !self.backend.can_send() {
                out.stalled = true;
                break;
            }
            let Some(chain) = q.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            let mut frame = Vec::new();
            let mut ok = true;
            for desc in chain.readable() {
                let len = desc.len() as usize;
                if frame.len() + len > MAX_TX {
                    ok = false;
                    break;
                }
                let start = frame.len();
                frame.resize(start + len, 0);
                mem.read_slice(&mut frame[start..], desc.addr())?;
            }
            if ok && frame.len() >= HDR && self.backend.send(&frame[HDR..]) {
                self.stats.tx_frames += 1;
            } else {
                self.stats.tx_dropped += 1;
            }
            q.add_used(mem, head, 0)?;
            out.taken = true;
        }
        Ok(out)
    }

    /// The backend's frames into posted RX chains.
    fn rx(&mut self, ctx: &mut VirtioCtx) -> Result<bool, DeviceError> {
        let mem = ctx.mem;
        let q = &mut ctx.queues[RX];
        let mut any = false;
        while self.backend.can_recv() {
            let Some(chain) = q.iter(mem)?.next() else {
                // Starved: frames wait for buffers. Ask the guest to tell
                // us when it gives some back (else only its next wait
                // would); buffers that came meanwhile are taken now.
                if !self.rx_notify {
                    self.rx_notify = true;
                    if q.enable_notification(mem)? {
                        continue;
                    }
                }
                break;
            };
            let head = chain.head_index();
            let Some(frame) = self.backend.recv() else {
                q.go_to_previous_position();
                break;
            };
            let bufs: Vec<(GuestAddress, usize)> = chain
                .writable()
                .map(|d| (d.addr(), d.len() as usize))
                .collect();
            let total = HDR + frame.len();
            if bufs.iter().map(|b| b.1).sum::<usize>() < total {
                self.stats.rx_dropped += 1;
                q.add_used(mem, head, 0)?;
                any = true;
                continue;
            }
            let mut hdr = [0u8; HDR];
            hdr[NUM_BUFFERS..].copy_from_slice(&1u16.to_le_bytes());
            let mut src = hdr.iter().chain(frame.iter()).copied();
            let mut left = total;
            for (addr, len) in bufs {
                if left == 0 {
                    break;
                }
                let n = len.min(left);
                let piece: Vec<u8> = src.by_ref().take(n).collect();
                mem.write_slice(&piece, addr)?;
                left -= n;
            }
            q.add_used(mem, head, total as u32)?;
            self.stats.rx_frames += 1;
            any = true;
        }
        if self.rx_notify && !self.backend.can_recv() {
            self.rx_notify = false;
            q.disable_notification(mem)?;
        }
        Ok(any)
    }
}

impl<B: NetBackend> VirtioDevice for VirtioNet<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// `struct virtio_net_config`: only `mac` is offered.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac, offset, data);
    }

    fn write_config(&mut self, _: u64, _: &[u8]) {}

    fn activate(&mut self, ctx: &mut VirtioCtx, _features: u64) -> Result<(), DeviceError> {
        if !ctx.queues.iter().all(|q| q.ready()) {
            return Err(DeviceError::Other(
                "virtio-net needs both its RX and TX queues set up".into(),
            ));
        }
        // The guest need not tell us of receive buffers it gives back: we
        // look at the ring whenever we have a frame (every pump), and
        // frames only ever arrive in a pump. Saves an exit per frame.
        ctx.queues[RX].disable_notification(ctx.mem)?;
        self.rx_notify = false;
        self.active = true;
        self.pump(ctx, true).map(|_| ())
    }

    fn notify(&mut self, ctx: &mut VirtioCtx, _queue: usize) -> Result<(), DeviceError> {
        self.pump(ctx, self.active).map(|_| ())
    }

    fn reset(&mut self) {
        self.active = false;
    }

    fn poll(&mut self, ctx: &mut VirtioCtx, active: bool) -> Result<bool, DeviceError> {
        self.pump(ctx, active && self.active)
    }

    fn wait_fd(&self) -> Option<RawFd> {
        self.backend.wait_fd()
    }

    fn poll_delay(&mut self) -> Option<Duration> {
        self.backend.poll_delay()
    }

    fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    fn unsaved_state(&self) -> Option<&'static str> {
        Some("the network (its connections and the link's frames)")
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
