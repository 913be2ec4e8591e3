//! The virtio-9p device (virtio 1.2 §5.11) on virtio-mmio: found by
//! probing every slot for device type 9 whose mount tag is ours, then
//! driven synchronously: one request at a time, a two-descriptor chain
//! (the T-message the device reads, then a buffer of `msize` bytes it
//! writes the R-message into), one notify, and the guest polls the used
//! ring until the answer is there. Our runner injects no interrupts; QEMU
//! raises one, which the libOS never enables and so never sees.
//!
//! So each request costs exactly one VM exit (the notify) under our
//! runner and under QEMU; [`Device::requests`] counts them.
//!
//! No `unsafe` here: `VirtQueue::add_notify_wait_pop` keeps the buffers
//! borrowed until the device gave them back, and the transport and DMA
//! contract live in `arch::virtio`.

use crate::arch::virtio::{IdentityHal, is_device, transport};
use alloc::vec;
use alloc::vec::Vec;
use pgkraft_abi::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS, VOLUME_MMIO_SLOT};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

const DEVICE_9P: u32 = 9;
const F_MOUNT_TAG: u64 = 1 << 0;
const F_VERSION_1: u64 = 1 << 32;
/// The request queue.
const QUEUE_IDX: u16 = 0;
/// Descriptors: one request of two buffers is ever in flight.
const QUEUE_SIZE: usize = 4;

/// Why the device could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// The device offers no VERSION_1 or no mount tag.
    Features,
    /// It refused the features we accepted.
    FeaturesRefused,
    /// The request queue could not be set up (too small, or in use).
    Queue,
    /// The device gave back a chain we did not give it, or none.
    Protocol,
    /// A reply longer than our buffer.
    TooLong,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(match self {
            DeviceError::Features => "the device offers no VERSION_1 or no mount tag",
            DeviceError::FeaturesRefused => "the device refused our features",
            DeviceError::Queue => "cannot set up the request queue",
            DeviceError::Protocol => "the device broke the queue protocol",
            DeviceError::TooLong => "a reply longer than the buffer",
        })
    }
}

pub struct Device {
    transport: MmioTransport<'static>,
    queue: VirtQueue<IdentityHal, QUEUE_SIZE>,
    /// The T-message being built.
    tx: Vec<u8>,
    /// Where the device writes the R-message.
    rx: Vec<u8>,
    requests: u64,
}

/// The slots that may hold the volume: our runner puts it in
/// `VOLUME_MMIO_SLOT`, so a boot there costs one register read (an exit)
/// without a volume; under another VMM (QEMU microvm fills slots from the
/// top) every slot is looked at, one read each (24 exits).
fn slots() -> core::ops::Range<u64> {
    match crate::platform::host() {
        crate::platform::Host::Runner => VOLUME_MMIO_SLOT..VOLUME_MMIO_SLOT + 1,
        _ => 0..VIRTIO_MMIO_SLOTS,
    }
}

/// The device with mount tag `tag`, if the VM has one.
pub fn probe(tag: &[u8], buf_bytes: usize) -> Option<Device> {
    for slot in slots() {
        let base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
        if !is_device(base, DEVICE_9P) {
            continue;
        }
        let Some(t) = transport(base, VIRTIO_MMIO_SLOT_SIZE) else {
            continue;
        };
        if !tag_is(&t, tag) {
            continue;
        }
        match Device::new(t, buf_bytes) {
            Ok(d) => return Some(d),
            Err(e) => crate::log!("libos: virtio-9p in slot {slot}: {e}"),
        }
    }
    None
}

/// Whether the device's config space says `tag`: the length, then the
/// bytes, as few reads (exits) as the config space allows. QEMU answers a
/// read that runs past the config space's end (2 + tag length bytes) with
/// all ones, so the tail is read in halves and bytes.
fn tag_is(t: &MmioTransport<'static>, tag: &[u8]) -> bool {
    let len = t.read_config_space::<u16>(0).unwrap_or(u16::MAX) as usize;
    if len != tag.len() {
        return false;
    }
    let end = 2 + len;
    let mut bytes: Vec<u8> = Vec::with_capacity(len);
    let mut off = 2;
    while off < end {
        let read = if off % 4 == 0 && off + 4 <= end {
            t.read_config_space::<u32>(off)
                .map(|w| w.to_le_bytes().to_vec())
        } else if off % 2 == 0 && off + 2 <= end {
            t.read_config_space::<u16>(off)
                .map(|w| w.to_le_bytes().to_vec())
        } else {
            t.read_config_space::<u8>(off).map(|b| alloc::vec![b])
        };
        let Ok(b) = read else {
            return false;
        };
        off += b.len();
        bytes.extend_from_slice(&b);
    }
    bytes == tag
}

impl Device {
    /// Device initialization (virtio 1.2 §3.1.1): features, the queue,
    /// DRIVER_OK. The buffers are `buf_bytes` each: the msize we ask for.
    fn new(mut t: MmioTransport<'static>, buf_bytes: usize) -> Result<Device, DeviceError> {
        t.set_status(DeviceStatus::empty());
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = t.read_device_features();
        if offered & F_VERSION_1 == 0 || offered & F_MOUNT_TAG == 0 {
            t.set_status(DeviceStatus::FAILED);
            return Err(DeviceError::Features);
        }
        t.write_driver_features(F_VERSION_1 | F_MOUNT_TAG);
        let ok = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        t.set_status(ok);
        if !t.get_status().contains(DeviceStatus::FEATURES_OK) {
            t.set_status(DeviceStatus::FAILED);
            return Err(DeviceError::FeaturesRefused);
        }
        let queue = match VirtQueue::new(&mut t, QUEUE_IDX, false, false) {
            Ok(q) => q,
            Err(_) => {
                t.set_status(DeviceStatus::FAILED);
                return Err(DeviceError::Queue);
            }
        };
        t.finish_init();
        Ok(Device {
            transport: t,
            queue,
            tx: vec![0; buf_bytes],
            rx: vec![0; buf_bytes],
            requests: 0,
        })
    }

    /// The buffer size (an upper bound for msize).
    pub fn buf_bytes(&self) -> usize {
        self.tx.len()
    }

    /// The buffer the next T-message is written into.
    pub fn tx(&mut self) -> &mut [u8] {
        &mut self.tx
    }

    /// Sends the first `len` bytes of [`Self::tx`] and waits for the
    /// answer: the R-message's bytes (as long as the device says it wrote).
    pub fn call(&mut self, len: usize) -> Result<&[u8], DeviceError> {
        let len = len.min(self.tx.len());
        self.requests += 1;
        let used = {
            let inputs: [&[u8]; 1] = [&self.tx[..len]];
            let mut outputs: [&mut [u8]; 1] = [&mut self.rx[..]];
            self.queue
                .add_notify_wait_pop(&inputs, &mut outputs, &mut self.transport)
                .map_err(|_| DeviceError::Protocol)? as usize
        };
        if used > self.rx.len() {
            return Err(DeviceError::TooLong);
        }
        Ok(&self.rx[..used])
    }

    /// Requests sent so far: each was one notify, one VM exit.
    // Reported at the exit with CONFIG_TRACE_SYSCALLS (platform::exit).
    #[cfg_attr(not(feature = "trace-syscalls"), allow(dead_code))]
    pub fn requests(&self) -> u64 {
        self.requests
    }
}
