//! The virtio-9p device (virtio 1.2 §5.11) on virtio-mmio: found by
//! probing every slot for device type 9 whose mount tag is ours. Each
//! request is a two-descriptor chain (the T-message the device reads,
//! then a buffer it writes the R-message into) in a slot of
//! `arch::virtio::Calls`; several can be in flight and the device answers
//! them in any order. Our runner injects no interrupts; QEMU raises one,
//! which the libOS never enables and so never sees: answers are found by
//! looking at the used ring.
//!
//! Two ways to wait for an answer ([`Wait`]): the caller keeps the CPU and
//! polls the used ring (a read of the host's page cache is answered in
//! tens of microseconds by the runner's worker thread, less than a VM
//! exit), or it lets the other processes run meanwhile: an fsync waits
//! for the host's disk, often milliseconds (stopping the whole VM for it
//! held every other backend; issue 13's TPC-B measured that,
//! docs/ARCHITECTURE.md §4 "Volume"), and under our runner a write
//! (PostgreSQL's WAL and evicted pages: two or more per TPC-B
//! transaction, each a round trip the vCPU would otherwise spend polling).
//!
//! Slots: a large one (the msize) for the requests made under the
//! volume's lock, one at a time; a second large one for a write that lets
//! others run (a large request that lets others run never takes the last
//! free large slot, so the locked requests always find one); small ones
//! for the fsyncs.
//!
//! A request costs at most one VM exit (the notify), none while the
//! runner's worker is looking at the ring; [`requests`] counts them.
//!
//! No `unsafe` here: `arch::virtio::Calls` keeps the buffers' contract.

use crate::arch::virtio::{Calls, is_device, transport};
use alloc::vec;
use alloc::vec::Vec;
use pgkraft_abi::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS, VOLUME_MMIO_SLOT};
use spin::Mutex;
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

const DEVICE_9P: u32 = 9;
const F_MOUNT_TAG: u64 = 1 << 0;
const F_VERSION_1: u64 = 1 << 32;
/// The request queue.
const QUEUE_IDX: u16 = 0;
/// Descriptors: two per slot.
const QUEUE_SIZE: usize = 16;
/// Large slots, of the msize: one for the requests made under the
/// volume's lock, one for a write that lets others run.
const LARGE_SLOTS: usize = 2;
/// Bytes of a small slot: Tfsync and its answer, or an Rlerror, with room.
const SMALL: usize = 256;
/// Small slots: requests that let other processes run while they wait
/// (one per process that fsyncs at the same moment; more wait for a slot).
const SMALL_SLOTS: usize = QUEUE_SIZE / 2 - LARGE_SLOTS;

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
    /// The volume has no device (it was never mounted).
    Missing,
    /// Every slot is out while the volume's lock is held (a libOS bug).
    Busy,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(match self {
            DeviceError::Features => "the device offers no VERSION_1 or no mount tag",
            DeviceError::FeaturesRefused => "the device refused our features",
            DeviceError::Queue => "cannot set up the request queue",
            DeviceError::Protocol => "the device broke the queue protocol",
            DeviceError::Missing => "no volume device",
            DeviceError::Busy => "every request slot is in use",
        })
    }
}

pub struct Device {
    transport: MmioTransport<'static>,
    calls: Calls<QUEUE_SIZE>,
    /// The large slot's bytes: the msize asked for.
    buf_bytes: usize,
    requests: u64,
}

/// The volume's device, once mounted: outside the volume's own lock, so
/// that a process waiting for an answer ([`Wait::LetOthersRun`]) holds no
/// lock while the others use the volume.
static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

/// How long a request made under the volume's lock polls for its answer
/// before it asks the runner to serve it in a VM exit (ns).
const POLL_NS: u64 = 100_000;

/// How the caller waits for its answer (module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Poll the used ring, keeping the CPU: the volume's lock may be held.
    Poll,
    /// Let other processes run until the answer is there: no lock held.
    LetOthersRun,
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
    /// DRIVER_OK. One large slot of `buf_bytes` (the msize we ask for)
    /// for the requests that hold the volume's lock, and small ones.
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
        let mut caps = vec![buf_bytes; LARGE_SLOTS];
        caps.extend([SMALL; SMALL_SLOTS]);
        let calls = match Calls::new(&mut t, QUEUE_IDX, &caps) {
            Ok(q) => q,
            Err(_) => {
                t.set_status(DeviceStatus::FAILED);
                return Err(DeviceError::Queue);
            }
        };
        t.finish_init();
        Ok(Device {
            transport: t,
            calls,
            buf_bytes,
            requests: 0,
        })
    }

    /// Claims a slot for `bytes`; None if no slot is free to `wait`'s kind.
    fn claim(&mut self, bytes: usize, wait: Wait) -> Option<usize> {
        // A request that lets others run holds its slot for as long as the
        // host takes (an fsync: milliseconds): never the last free large
        // one, which the requests made under the volume's lock count on.
        let at_most = match wait {
            Wait::Poll => usize::MAX,
            Wait::LetOthersRun if bytes <= SMALL => SMALL,
            Wait::LetOthersRun if self.calls.free_holding(bytes) >= 2 => usize::MAX,
            Wait::LetOthersRun => return None,
        };
        self.calls.claim(bytes, at_most)
    }

    /// Has `fill` write the request into claimed slot `slot` (given the
    /// slot's tag) and sends it; the caller unclaims the slot on an error.
    fn send<E: From<DeviceError>>(
        &mut self,
        slot: usize,
        fill: impl FnOnce(u16, &mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        let len = fill(tag(slot), self.calls.request(slot))?;
        self.calls
            .send(slot, len, &mut self.transport, QUEUE_IDX)
            .map_err(|_| DeviceError::Protocol)?;
        self.requests += 1;
        Ok(())
    }

    /// Slot `slot`'s answer through `read`, once the device gave it.
    fn finish<T, E: From<DeviceError>>(
        &mut self,
        slot: usize,
        read: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        if !self.calls.reap() {
            return Some(Err(DeviceError::Protocol.into()));
        }
        self.calls.take(slot, read)
    }
}

/// The tag of a request in `slot` (NOTAG, 0xffff, is never one).
fn tag(slot: usize) -> u16 {
    slot as u16 + 1
}

/// Makes `dev` the volume's device.
pub fn install(dev: Device) {
    *DEVICE.lock() = Some(dev);
}

/// The large slot's size (an upper bound for msize); 0 without a device.
pub fn buf_bytes() -> usize {
    DEVICE.lock().as_ref().map_or(0, |d| d.buf_bytes)
}

/// One request: `fill` writes the T-message for the tag it is given into
/// a buffer of at least `bytes`, `read` decodes the R-message. `wait` says
/// whether other processes run meanwhile. `before` runs once a slot is
/// the caller's, right before `fill` and with no wait in between: what
/// `before` does (a write into the page cache) and what `fill` copies see
/// the same memory, even when the caller waited for a slot while other
/// processes ran. Device calls from `before` find a slot of their own.
pub fn call<T, E: From<DeviceError>>(
    bytes: usize,
    wait: Wait,
    before: impl FnOnce() -> Result<(), E>,
    fill: impl FnOnce(u16, &mut [u8]) -> Result<usize, E>,
    read: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, E> {
    let slot = loop {
        let claimed = {
            let mut d = DEVICE.lock();
            let d = d.as_mut().ok_or(DeviceError::Missing)?;
            d.claim(bytes, wait)
        };
        match claimed {
            Some(slot) => break slot,
            // Every slot is out: with the lock held (Poll) nobody else can
            // have one, so this is the LetOthersRun case.
            None if wait == Wait::LetOthersRun => crate::proc::idle(u64::MAX),
            None => return Err(DeviceError::Busy.into()),
        }
    };
    let started = before().and_then(|()| {
        let mut d = DEVICE.lock();
        let d = d.as_mut().ok_or(DeviceError::Missing)?;
        d.send(slot, fill)
    });
    if let Err(e) = started {
        if let Some(d) = DEVICE.lock().as_mut() {
            d.calls.unclaim(slot);
        }
        return Err(e);
    }
    let mut read = Some(read);
    let sent = crate::time::monotonic_ns();
    loop {
        {
            let mut d = DEVICE.lock();
            let d = d.as_mut().ok_or(DeviceError::Missing)?;
            if let Some(r) = d.finish(slot, |a| (read.take().expect("read once"))(a)) {
                return r;
            }
        }
        match wait {
            // The runner's worker answers within tens of microseconds
            // when it has a core of its own; when it has none (the host's
            // cores busy, or the runner pinned to one), polling longer
            // only keeps it from running: `hc::WAIT` then has the vCPU
            // thread serve the ring itself (one exit).
            Wait::Poll if crate::time::monotonic_ns().saturating_sub(sent) > POLL_NS => {
                crate::platform::wait_devices(POLL_NS)
            }
            Wait::Poll => core::hint::spin_loop(),
            Wait::LetOthersRun => crate::proc::idle(u64::MAX),
        }
    }
}

/// Whether a request is with the device (an idle wait must then be one
/// that the device's answer ends).
pub fn in_flight() -> bool {
    DEVICE.lock().as_ref().is_some_and(|d| d.calls.in_flight())
}

/// Whether the device has answered a request nobody has read yet: a
/// process waiting for it can go on.
pub fn answered() -> bool {
    DEVICE.lock().as_ref().is_some_and(|d| d.calls.has_answer())
}

/// Requests sent so far (each at most one VM exit).
// Reported at the exit with CONFIG_TRACE_SYSCALLS (platform::exit).
#[cfg_attr(not(feature = "trace-syscalls"), allow(dead_code))]
pub fn requests() -> u64 {
    DEVICE.lock().as_ref().map_or(0, |d| d.requests)
}
