//! The virtio-mmio transport, virtio 1.x register layout ("version 2",
//! virtio 1.2 section 4.2.2), as QEMU's `microvm` and Firecracker present
//! it: one register block per device, config space at 0x100. No legacy
//! (version 1) registers, no shared-memory regions, and no interrupt
//! line: InterruptStatus only records what a device signalled (see the
//! module docs of `virtio`).
//!
//! Guest mistakes (a register accessed with the wrong width, an unknown
//! offset, a status change out of order) are ignored, reads giving 0, and
//! logged once each at debug level; none can make the runner fail.
//!
//! docs/ARCHITECTURE.md §4.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_mmio as reg;
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{
    DeviceError, F_RING_EVENT_IDX, F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER,
    STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK, STATUS_NEEDS_RESET, VirtioCtx,
    VirtioDevice,
};
use crate::bus::{Action, BusDevice, Ctx, Poll};

/// "virt", little endian.
pub(crate) const MAGIC: u32 = 0x7472_6976;
/// The virtio 1.x register layout (1 is the legacy one).
pub(crate) const VERSION: u32 = 2;
/// No vendor: drivers match on the device ID alone.
pub(crate) const VENDOR_ID: u32 = 0;
/// InterruptStatus bit: a device put buffers in a used ring.
pub(crate) const INT_USED_RING: u32 = reg::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the configuration (or DEVICE_NEEDS_RESET) changed.
pub(crate) const INT_CONFIG: u32 = reg::VIRTIO_MMIO_INT_CONFIG;

/// Snapshot format of [`MmioState`]; bump it when its meaning changes.
pub(crate) const MMIO_STATE_VERSION: u32 = 1;

const MAGIC_VALUE: u64 = reg::VIRTIO_MMIO_MAGIC_VALUE as u64;
const VERSION_REG: u64 = reg::VIRTIO_MMIO_VERSION as u64;
const DEVICE_ID: u64 = reg::VIRTIO_MMIO_DEVICE_ID as u64;
const VENDOR_ID_REG: u64 = reg::VIRTIO_MMIO_VENDOR_ID as u64;
const DEVICE_FEATURES: u64 = reg::VIRTIO_MMIO_DEVICE_FEATURES as u64;
const DEVICE_FEATURES_SEL: u64 = reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
const DRIVER_FEATURES: u64 = reg::VIRTIO_MMIO_DRIVER_FEATURES as u64;
const DRIVER_FEATURES_SEL: u64 = reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
const QUEUE_SEL: u64 = reg::VIRTIO_MMIO_QUEUE_SEL as u64;
const QUEUE_NUM_MAX: u64 = reg::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
const QUEUE_NUM: u64 = reg::VIRTIO_MMIO_QUEUE_NUM as u64;
const QUEUE_READY: u64 = reg::VIRTIO_MMIO_QUEUE_READY as u64;
const QUEUE_NOTIFY: u64 = reg::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
const INTERRUPT_STATUS: u64 = reg::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
const INTERRUPT_ACK: u64 = reg::VIRTIO_MMIO_INTERRUPT_ACK as u64;
const STATUS: u64 = reg::VIRTIO_MMIO_STATUS as u64;
const QUEUE_DESC_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
const QUEUE_DESC_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
/// The available ring ("driver area").
const QUEUE_DRIVER_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
const QUEUE_DRIVER_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
/// The used ring ("device area").
const QUEUE_DEVICE_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
const QUEUE_DEVICE_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
const CONFIG_GENERATION: u64 = reg::VIRTIO_MMIO_CONFIG_GENERATION as u64;
/// Start of the device-specific configuration space.
pub(crate) const CONFIG: u64 = reg::VIRTIO_MMIO_CONFIG as u64;

/// A [`VirtioDevice`] behind the virtio-mmio register block. It owns the
/// device's queues: the device borrows them for each call
/// ([`VirtioCtx`]), so the queues' whole state is here for [`Self::state`].
pub(crate) struct MmioTransport<D> {
    device: D,
    queues: Vec<Queue>,
    /// Device status as the driver built it, plus DEVICE_NEEDS_RESET.
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    /// What the driver wrote so far; final once FEATURES_OK is accepted.
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Guest mistakes already logged (offset or queue, what), so a buggy
    /// polling driver does not flood the log.
    logged: HashSet<(u64, &'static str)>,
}

/// [`MmioTransport`]'s snapshot state. The device's own state is the
/// device's business; the queues (ring addresses and positions) are here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MmioState {
    /// [`MMIO_STATE_VERSION`] when saved.
    pub version: u32,
    /// The device it was saved from, checked on restore.
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSnapshot>,
}

/// One queue's state: `virtio_queue::QueueState`'s fields, in our own
/// serde type so that the snapshot format does not follow that crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> QueueSnapshot {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> QueueState {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// Why a transport could not be built or restored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error(
        "virtio device type {device_type}: queue {index} cannot have maximum size {max}: {source}"
    )]
    QueueMax {
        device_type: u32,
        index: usize,
        max: u16,
        source: virtio_queue::Error,
    },
    #[error(
        "virtio-mmio state version {found} cannot be restored: this runner reads version {expected}"
    )]
    Version { found: u32, expected: u32 },
    #[error(
        "virtio-mmio state of device type {found} cannot be restored into device type {expected}"
    )]
    DeviceType { found: u32, expected: u32 },
    #[error("virtio-mmio state has {found} queues, the device has {expected}")]
    QueueCount { found: usize, expected: usize },
    #[error("virtio-mmio state's queue {index}: {detail}")]
    Queue { index: usize, detail: String },
    #[error(
        "virtio-mmio state's negotiated features {driver:#x} are not all offered by the device ({offered:#x})"
    )]
    Features { driver: u64, offered: u64 },
    #[error("reactivating the restored virtio device (type {device_type}): {source}")]
    Activate {
        device_type: u32,
        source: DeviceError,
    },
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport in reset state; fails if the device's queue sizes are
    /// not powers of two up to 32768.
    pub(crate) fn new(device: D) -> Result<MmioTransport<D>, TransportError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(index, &max)| {
                Queue::new(max).map_err(|source| TransportError::QueueMax {
                    device_type: device.device_type(),
                    index,
                    max,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            logged: HashSet::new(),
        })
    }

    pub(crate) fn device(&self) -> &D {
        &self.device
    }

    pub(crate) fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device is serving its queues: DRIVER_OK accepted, and no error
    /// (DEVICE_NEEDS_RESET) or driver FAILED since.
    pub(crate) fn active(&self) -> bool {
        self.status & (STATUS_DRIVER_OK | STATUS_NEEDS_RESET | STATUS_FAILED) == STATUS_DRIVER_OK
    }

    /// The device changed its configuration space (its owner calls this
    /// after the change): bumps ConfigGeneration so a driver reading the
    /// space sees it, and records the configuration-change interrupt.
    pub(crate) fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & STATUS_DRIVER_OK != 0 {
            self.interrupt_status |= INT_CONFIG;
        }
    }

    /// What a snapshot keeps of the transport.
    pub(crate) fn state(&self) -> MmioState {
        MmioState {
            version: MMIO_STATE_VERSION,
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    /// The transport `state` was saved from, around `device` (restored from
    /// its own state by the caller). If it was active, the device is
    /// activated again with the saved features and queues, which go on
    /// from where they were; `mem` is the restored guest RAM.
    pub(crate) fn restore(
        device: D,
        state: MmioState,
        mem: &GuestMemoryMmap,
    ) -> Result<MmioTransport<D>, TransportError> {
        if state.version != MMIO_STATE_VERSION {
            return Err(TransportError::Version {
                found: state.version,
                expected: MMIO_STATE_VERSION,
            });
        }
        if state.device_type != device.device_type() {
            return Err(TransportError::DeviceType {
                found: state.device_type,
                expected: device.device_type(),
            });
        }
        let maxes = device.queue_max_sizes();
        if state.queues.len() != maxes.len() {
            return Err(TransportError::QueueCount {
                found: state.queues.len(),
                expected: maxes.len(),
            });
        }
        let mut queues = Vec::with_capacity(maxes.len());
        for (index, (&saved, &max)) in state.queues.iter().zip(maxes).enumerate() {
            let bad = |detail: String| TransportError::Queue { index, detail };
            if saved.max_size != max {
                return Err(bad(format!(
                    "maximum size {} saved, the device's is {max}",
                    saved.max_size
                )));
            }
            queues.push(Queue::try_from(QueueState::from(saved)).map_err(|e| bad(e.to_string()))?);
        }
        let mut t = MmioTransport {
            device,
            queues,
            status: state.status,
            device_features_sel: state.device_features_sel,
            driver_features_sel: state.driver_features_sel,
            driver_features: state.driver_features,
            queue_sel: state.queue_sel,
            interrupt_status: state.interrupt_status,
            config_generation: state.config_generation,
            logged: HashSet::new(),
        };
        if t.status & STATUS_FEATURES_OK != 0 && t.driver_features & !t.device_features() != 0 {
            return Err(TransportError::Features {
                driver: t.driver_features,
                offered: t.device_features(),
            });
        }
        if t.active() {
            if let Some(index) = t.queues.iter().position(|q| q.ready() && !q.is_valid(mem)) {
                return Err(TransportError::Queue {
                    index,
                    detail: "its rings are not in guest RAM".into(),
                });
            }
            let features = t.driver_features;
            let mut ctx = VirtioCtx::new(mem, &mut t.queues, &mut t.interrupt_status);
            t.device
                .activate(&mut ctx, features)
                .map_err(|source| TransportError::Activate {
                    device_type: state.device_type,
                    source,
                })?;
        }
        Ok(t)
    }

    fn device_features(&self) -> u64 {
        self.device.features() | F_VERSION_1
    }

    /// Logs a guest mistake at debug level, the first time only.
    fn debug_once(&mut self, key: u64, what: &'static str, detail: fmt::Arguments) {
        if self.logged.insert((key, what)) {
            log::debug!(
                "virtio-mmio (device type {}): {what}: {detail} (ignored; logged once)",
                self.device.device_type()
            );
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION_REG => VERSION,
            DEVICE_ID => self.device.device_type(),
            VENDOR_ID_REG => VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.interrupt_status,
            STATUS => self.status,
            CONFIG_GENERATION => self.config_generation,
            _ => {
                self.debug_once(
                    offset,
                    "read of an unknown or write-only register",
                    format_args!("offset {offset:#x}"),
                );
                0
            }
        }
    }

    fn write_register(&mut self, mem: &GuestMemoryMmap, offset: u64, value: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = value,
            DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            DRIVER_FEATURES => self.write_driver_features(value),
            QUEUE_SEL => self.queue_sel = value,
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW
            | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                self.write_queue(offset, value)
            }
            QUEUE_NOTIFY => self.queue_notify(mem, value),
            INTERRUPT_ACK => self.interrupt_status &= !value,
            STATUS => self.write_status(mem, value),
            _ => self.debug_once(
                offset,
                "write to an unknown or read-only register",
                format_args!("offset {offset:#x}, value {value:#x}"),
            ),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_FAILED) != STATUS_DRIVER {
            let status = self.status;
            return self.debug_once(
                DRIVER_FEATURES,
                "DriverFeatures written out of order",
                format_args!("status {status:#x}: only after DRIVER, before FEATURES_OK"),
            );
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 => 32,
            sel => {
                return self.debug_once(
                    DRIVER_FEATURES,
                    "DriverFeatures of a missing word",
                    format_args!("DriverFeaturesSel {sel}, value {value:#x}"),
                );
            }
        };
        self.driver_features =
            (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
    }

    /// The queue registers: taken while the driver sets queues up (after
    /// FEATURES_OK, before DRIVER_OK) and the selected queue is not ready
    /// yet, except QueueReady itself.
    fn write_queue(&mut self, offset: u64, value: u32) {
        let status = self.status;
        let setting_up =
            status & (STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED) == STATUS_FEATURES_OK;
        let sel = self.queue_sel;
        let Some(queue) = self.queues.get_mut(sel as usize).filter(|_| setting_up) else {
            return self.debug_once(
                offset,
                "queue register written outside queue setup",
                format_args!(
                    "QueueSel {sel}, status {status:#x}: needs an existing queue, after \
                     FEATURES_OK and before DRIVER_OK"
                ),
            );
        };
        if offset == QUEUE_READY {
            queue.set_ready(value == 1);
            return;
        }
        if queue.ready() {
            return self.debug_once(
                offset,
                "queue register written while the queue is ready",
                format_args!("QueueSel {sel}"),
            );
        }
        // One half of a 64-bit ring address.
        let half = |old: u64, high: bool| {
            let v = u64::from(value);
            GuestAddress(if high {
                (old & 0xffff_ffff) | v << 32
            } else {
                (old & !0xffff_ffff) | v
            })
        };
        // The `try_` setters, unlike QueueT's, do not log: a refused value
        // is a guest mistake, logged once below.
        let result = match offset {
            QUEUE_NUM => queue.try_set_size(u16::try_from(value).unwrap_or(0)),
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH => {
                let addr = half(queue.desc_table(), offset == QUEUE_DESC_HIGH);
                queue.try_set_desc_table_address(addr)
            }
            QUEUE_DRIVER_LOW | QUEUE_DRIVER_HIGH => {
                let addr = half(queue.avail_ring(), offset == QUEUE_DRIVER_HIGH);
                queue.try_set_avail_ring_address(addr)
            }
            QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                let addr = half(queue.used_ring(), offset == QUEUE_DEVICE_HIGH);
                queue.try_set_used_ring_address(addr)
            }
            _ => Ok(()), // Only the registers above come here.
        };
        if let Err(e) = result {
            let max = queue.max_size();
            self.debug_once(
                offset,
                "queue register value refused",
                format_args!("{value:#x} for queue {sel} (maximum size {max}): {e}"),
            );
        }
    }

    fn queue_notify(&mut self, mem: &GuestMemoryMmap, value: u32) {
        let index = value as usize;
        if !self.active() {
            let status = self.status;
            return self.debug_once(
                QUEUE_NOTIFY,
                "QueueNotify while the device is not active",
                format_args!("queue {value}, status {status:#x}"),
            );
        }
        if !self.queues.get(index).is_some_and(|q| q.ready()) {
            return self.debug_once(
                u64::from(value),
                "QueueNotify of a queue not set up",
                format_args!("queue {value}"),
            );
        }
        let mut ctx = VirtioCtx::new(mem, &mut self.queues, &mut self.interrupt_status);
        if let Err(e) = self.device.notify(&mut ctx, index) {
            self.needs_reset(format_args!("serving queue {index}: {e}"));
        }
    }

    /// The device is broken until the driver resets it (virtio 1.2, 2.1.2).
    fn needs_reset(&mut self, why: fmt::Arguments) {
        log::debug!(
            "virtio-mmio (device type {}): {why}; device needs a reset",
            self.device.device_type()
        );
        self.status |= STATUS_NEEDS_RESET;
        if self.status & STATUS_DRIVER_OK != 0 {
            self.interrupt_status |= INT_CONFIG;
        }
    }

    /// The status protocol (virtio 1.2, 3.1.1): 0 resets; otherwise the
    /// driver only adds bits, each once the ones before it are set.
    fn write_status(&mut self, mem: &GuestMemoryMmap, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if value & old != old & !STATUS_NEEDS_RESET {
            return self.debug_once(
                STATUS,
                "Status bits cleared without a reset",
                format_args!("{old:#x} -> {value:#x}"),
            );
        }
        let added = value & !old;
        if added & STATUS_FAILED != 0 {
            self.status |= STATUS_FAILED;
            return;
        }
        if old & STATUS_FAILED != 0 {
            return self.debug_once(
                STATUS,
                "Status written after FAILED",
                format_args!("{old:#x} -> {value:#x}"),
            );
        }
        let steps = [
            (STATUS_ACKNOWLEDGE, 0),
            (STATUS_DRIVER, STATUS_ACKNOWLEDGE),
            (STATUS_FEATURES_OK, STATUS_DRIVER),
            (STATUS_DRIVER_OK, STATUS_FEATURES_OK),
        ];
        for (bit, needs) in steps {
            if added & bit == 0 {
                continue;
            }
            if self.status & needs != needs {
                let status = self.status;
                return self.debug_once(
                    u64::from(bit),
                    "Status bit set out of order",
                    format_args!("{bit:#x} added to {status:#x}"),
                );
            }
            if bit == STATUS_FEATURES_OK && !self.features_acceptable() {
                // Not set: the driver reads Status back and gives up.
                return;
            }
            self.status |= bit;
            if bit == STATUS_DRIVER_OK {
                self.activate(mem);
            }
        }
        let unknown =
            added & !(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        if unknown != 0 {
            self.debug_once(
                STATUS,
                "Status bits the driver does not set",
                format_args!("{unknown:#x}"),
            );
        }
    }

    fn features_acceptable(&mut self) -> bool {
        let (driver, offered) = (self.driver_features, self.device_features());
        if driver & !offered != 0 {
            self.debug_once(
                STATUS,
                "FEATURES_OK refused",
                format_args!("the driver took {driver:#x}, the device offers {offered:#x}"),
            );
            false
        } else if driver & F_VERSION_1 == 0 {
            self.debug_once(
                STATUS,
                "FEATURES_OK refused",
                format_args!("the driver did not take VIRTIO_F_VERSION_1 (a legacy driver)"),
            );
            false
        } else {
            true
        }
    }

    /// DRIVER_OK: hands the set-up queues to the device.
    fn activate(&mut self, mem: &GuestMemoryMmap) {
        if let Some(index) = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(mem))
        {
            let q = self.queues[index].state();
            return self.needs_reset(format_args!(
                "queue {index} is not in guest RAM (size {}, desc {:#x}, driver {:#x}, device {:#x})",
                q.size, q.desc_table, q.avail_ring, q.used_ring
            ));
        }
        let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
        for q in &mut self.queues {
            q.set_event_idx(event_idx);
        }
        let features = self.driver_features;
        let mut ctx = VirtioCtx::new(mem, &mut self.queues, &mut self.interrupt_status);
        if let Err(e) = self.device.activate(&mut ctx, features) {
            self.needs_reset(format_args!("activation failed: {e}"));
        }
    }

    /// Status 0: device and transport back to their state at creation
    /// (ConfigGeneration aside, which tracks the configuration space).
    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, _ctx: &mut Ctx, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.device.read_config(offset - CONFIG, data);
            return;
        }
        data.fill(0);
        let len = data.len();
        match <&mut [u8; 4]>::try_from(data) {
            Ok(word) if offset.is_multiple_of(4) => {
                *word = self.read_register(offset).to_le_bytes()
            }
            _ => self.debug_once(
                offset,
                "register read not 32 bits wide and aligned",
                format_args!("{len} bytes at offset {offset:#x}"),
            ),
        }
    }

    fn write(&mut self, ctx: &mut Ctx, offset: u64, data: &[u8]) -> Action {
        if offset >= CONFIG {
            self.device.write_config(offset - CONFIG, data);
            return Action::Continue;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(word) if offset.is_multiple_of(4) => {
                self.write_register(ctx.mem, offset, u32::from_le_bytes(word))
            }
            _ => self.debug_once(
                offset,
                "register write not 32 bits wide and aligned",
                format_args!("{} bytes at offset {offset:#x}", data.len()),
            ),
        }
        Action::Continue
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// [`VirtioDevice::take_moved`].
    pub(crate) fn take_moved(&mut self) -> bool {
        self.device.take_moved()
    }

    /// [`VirtioDevice::settle`].
    pub(crate) fn settle(&mut self, mem: &GuestMemoryMmap) -> bool {
        let active = self.active();
        let mut ctx = VirtioCtx::new(mem, &mut self.queues, &mut self.interrupt_status);
        match self.device.settle(&mut ctx, active) {
            Ok(pending) => pending,
            Err(e) => {
                self.needs_reset(format_args!("settling: {e}"));
                false
            }
        }
    }
}

impl<D: VirtioDevice> Poll for MmioTransport<D> {
    fn poll(&mut self, mem: &GuestMemoryMmap) -> bool {
        let active = self.active();
        let mut ctx = VirtioCtx::new(mem, &mut self.queues, &mut self.interrupt_status);
        match self.device.poll(&mut ctx, active) {
            Ok(used) => used,
            Err(e) => {
                self.needs_reset(format_args!("polling: {e}"));
                true
            }
        }
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.wait_fd()
    }

    fn poll_delay(&mut self) -> Option<std::time::Duration> {
        self.device.poll_delay()
    }

    fn unsaved_state(&self) -> Option<&'static str> {
        self.device.unsaved_state()
    }
}

impl<D> fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("interrupt_status", &self.interrupt_status)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
