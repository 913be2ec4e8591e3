//! Virtio devices (virtio 1.x) for the guest, over the virtio-mmio
//! transport: the small, PCI-less transport that QEMU's `microvm`,
//! Firecracker and Cloud Hypervisor give minimal guests. A device is a
//! [`VirtioDevice`] backend (what it is, what it offers, what it does with
//! buffers); [`mmio::MmioTransport`] puts it on the bus and does the rest:
//! the register block, feature negotiation, the status protocol, and the
//! queues themselves (rust-vmm's `virtio_queue::Queue`), which it keeps
//! and saves in its versioned snapshot state.
//!
//! **Polled, no interrupts.** The runner has no interrupt controller. A
//! device that puts buffers in a used ring says so
//! ([`VirtioCtx::signal_used`]) and the transport records it in its
//! InterruptStatus register, which a driver may read and acknowledge;
//! nothing is injected into the guest. The guest's driver polls its used
//! rings (and, after a configuration change, ConfigGeneration).
//!
//! docs/ARCHITECTURE.md §4.

// The transports' snapshot state (`MmioState`) and config-change path
// wait for a device whose state a snapshot saves; virtio-net's is not yet.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod mmio;
pub(crate) mod net;
pub(crate) mod p9;
#[cfg(test)]
pub(crate) mod test_guest;
pub(crate) mod worker;

use std::os::fd::RawFd;
use std::time::Duration;

use virtio_bindings::virtio_config;
use virtio_bindings::virtio_ring;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Device status bits (virtio 1.2, 2.1), as the driver writes them to the
/// Status register.
pub(crate) const STATUS_ACKNOWLEDGE: u32 = virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
pub(crate) const STATUS_DRIVER: u32 = virtio_config::VIRTIO_CONFIG_S_DRIVER;
pub(crate) const STATUS_FEATURES_OK: u32 = virtio_config::VIRTIO_CONFIG_S_FEATURES_OK;
pub(crate) const STATUS_DRIVER_OK: u32 = virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;
/// Set by the device: it hit an error only a reset clears.
pub(crate) const STATUS_NEEDS_RESET: u32 = virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
pub(crate) const STATUS_FAILED: u32 = virtio_config::VIRTIO_CONFIG_S_FAILED;

/// Feature bits, as masks of the 64-bit feature word. The transport
/// always offers [`F_VERSION_1`] (and refuses drivers that do not take it:
/// no legacy interface).
pub(crate) const F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
/// `used_event`/`avail_event` notification suppression. A device that
/// offers it should ask `Queue::needs_notification` before
/// [`VirtioCtx::signal_used`]; the transport tells the queues whether the
/// driver took it.
pub(crate) const F_RING_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// A virtio device's own half: the transport calls it, never the guest.
///
/// Order of calls: `device_type`, `features`, `queue_max_sizes` and the
/// config-space accessors at any time; `activate` once the driver sets
/// DRIVER_OK (and again when an active transport is restored from a
/// snapshot); `notify` only between `activate` and the next `reset`;
/// `reset` whenever the driver writes 0 to Status (active or not).
pub(crate) trait VirtioDevice {
    /// The virtio device ID (`virtio_bindings::virtio_ids`, e.g. 1 for net, 2 for block).
    fn device_type(&self) -> u32;

    /// Device-specific feature bits offered to the driver. The transport
    /// adds [`F_VERSION_1`] itself.
    fn features(&self) -> u64;

    /// One entry per virtqueue: its maximum size, a power of two no larger
    /// than 32768. Must not change over the device's life.
    fn queue_max_sizes(&self) -> &[u16];

    /// A driver read of the device-specific configuration space at
    /// `offset` (from the start of that space), `data.len()` bytes wide.
    /// Bytes past the end of the space read as 0 (see [`read_config_bytes`]).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to the configuration space; ignore what is read-only.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// The driver set DRIVER_OK having accepted `features` (a subset of
    /// what was offered, [`F_VERSION_1`] included). `ctx.queues` holds
    /// every queue, in order; those the driver set up are `ready()` and
    /// lie in guest RAM (the transport checked), the others must be left
    /// alone. Buffers the driver made available before DRIVER_OK may be
    /// served here. An error makes the transport set DEVICE_NEEDS_RESET.
    fn activate(&mut self, ctx: &mut VirtioCtx, features: u64) -> Result<(), DeviceError>;

    /// The driver notified (kicked) the ready queue `ctx.queues[queue]`.
    /// An error makes the transport set DEVICE_NEEDS_RESET; the device is
    /// not called again before a reset.
    fn notify(&mut self, ctx: &mut VirtioCtx, queue: usize) -> Result<(), DeviceError>;

    /// Back to the state before `activate`: forget the negotiated features
    /// and any in-flight work. The transport resets the queues itself.
    fn reset(&mut self);

    /// Work of the device's own, outside any guest access (the host side
    /// of a network), done while the guest waits (`hc::WAIT`). `ctx.queues`
    /// may be used only when `active` (between `activate` and `reset`,
    /// and not broken). True if it gave the guest something to act on
    /// (a buffer it filled; a buffer it only consumed, such as a sent
    /// frame, need not count: the guest is not waiting for that).
    fn poll(&mut self, _ctx: &mut VirtioCtx, _active: bool) -> Result<bool, DeviceError> {
        Ok(false)
    }

    /// The worker thread (`worker.rs`) stopped looking at the rings: a
    /// device that suppressed the guest's notifications while it looked
    /// turns them on again. True if buffers came in meanwhile (a driver
    /// that saw them suppressed did not notify): the worker looks on.
    fn settle(&mut self, _ctx: &mut VirtioCtx, _active: bool) -> Result<bool, DeviceError> {
        Ok(false)
    }

    /// Readable when [`Self::poll`] has work; owned by the device.
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    /// Whether anything moved (either way) since last asked: a worker
    /// thread (`worker.rs`) keeps looking while it does.
    fn take_moved(&mut self) -> bool {
        false
    }

    /// When [`Self::poll`] must run again at the latest, if ever.
    fn poll_delay(&mut self) -> Option<Duration> {
        None
    }

    /// `Some(what)` if the device holds state a snapshot cannot save yet.
    fn unsaved_state(&self) -> Option<&'static str> {
        None
    }
}

/// What a device gets while it serves its queues: guest RAM, the queues
/// (owned by the transport, lent for the call) and the interrupt record.
pub(crate) struct VirtioCtx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub queues: &'a mut [Queue],
    interrupt_status: &'a mut u32,
}

impl<'a> VirtioCtx<'a> {
    fn new(
        mem: &'a GuestMemoryMmap,
        queues: &'a mut [Queue],
        interrupt_status: &'a mut u32,
    ) -> VirtioCtx<'a> {
        VirtioCtx {
            mem,
            queues,
            interrupt_status,
        }
    }

    /// The device put buffers in a used ring: sets the used-buffer bit of
    /// InterruptStatus (recorded only; the guest polls).
    pub fn signal_used(&mut self) {
        *self.interrupt_status |= mmio::INT_USED_RING;
    }
}

/// Why a device could not go on; the transport logs it and sets
/// DEVICE_NEEDS_RESET, as a driver error is not the runner's failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("{0}")]
    Other(String),
}

/// [`VirtioDevice::read_config`] for a device whose configuration space
/// is a byte image: bytes past its end read as 0.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A device of type `kind` with queues of these maximum sizes that
    /// does nothing with them: for tests of the transport and the bus.
    pub(crate) struct Inert {
        pub kind: u32,
        pub queues: &'static [u16],
    }

    impl VirtioDevice for Inert {
        fn device_type(&self) -> u32 {
            self.kind
        }
        fn features(&self) -> u64 {
            0
        }
        fn queue_max_sizes(&self) -> &[u16] {
            self.queues
        }
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: &mut VirtioCtx, _: u64) -> Result<(), DeviceError> {
            Ok(())
        }
        fn notify(&mut self, _: &mut VirtioCtx, _: usize) -> Result<(), DeviceError> {
            Ok(())
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn config_bytes_past_the_end_read_as_zero() {
        let config = [1u8, 2, 3, 4, 5];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 3, &mut data);
        assert_eq!(data, [4, 5, 0, 0]);
        read_config_bytes(&config, 9, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
