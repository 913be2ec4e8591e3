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
use crate::bus::{Action, BusDevice, Ctx};

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
mod tests {
    use std::time::Instant;

    use virtio_queue::QueueOwnedT;
    use vm_memory::{Address, Bytes, GuestAddress};

    use super::*;
    use crate::console::{Console, ConsoleIn, ConsoleOut};
    use crate::timeline::Timeline;
    use crate::virtio::read_config_bytes;

    const ECHO_TYPE: u32 = 42;
    /// Device-specific features the echo device offers.
    const ECHO_F_A: u64 = 1 << 0;
    const ECHO_F_B: u64 = 1 << 5;
    const MAX_SIZES: [u16; 2] = [8, 4];

    /// A real backend: copies each chain's readable bytes into its
    /// writable buffers and reports how many it wrote.
    #[derive(Debug, Default)]
    struct Echo {
        config: [u8; 8],
        activated: Option<u64>,
        resets: u32,
        notified: Vec<usize>,
    }

    impl VirtioDevice for Echo {
        fn device_type(&self) -> u32 {
            ECHO_TYPE
        }
        fn features(&self) -> u64 {
            ECHO_F_A | ECHO_F_B
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &MAX_SIZES
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            read_config_bytes(&self.config, offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                if let Some(slot) = self.config.get_mut(offset as usize + i) {
                    *slot = b;
                }
            }
        }
        fn activate(&mut self, _ctx: &mut VirtioCtx, features: u64) -> Result<(), DeviceError> {
            self.activated = Some(features);
            Ok(())
        }
        fn notify(&mut self, ctx: &mut VirtioCtx, queue: usize) -> Result<(), DeviceError> {
            self.notified.push(queue);
            let mem = ctx.mem;
            let q = &mut ctx.queues[queue];
            let chains: Vec<_> = q.iter(mem)?.collect();
            if chains.is_empty() {
                return Ok(());
            }
            for chain in chains {
                let head = chain.head_index();
                let (mut input, mut out) = (Vec::new(), Vec::new());
                for desc in chain {
                    if desc.is_write_only() {
                        out.push(desc);
                    } else {
                        let mut buf = vec![0; desc.len() as usize];
                        mem.read_slice(&mut buf, desc.addr())?;
                        input.extend(buf);
                    }
                }
                let mut written = 0;
                for desc in out {
                    let n = (desc.len() as usize).min(input.len() - written);
                    mem.write_slice(&input[written..written + n], desc.addr())?;
                    written += n;
                }
                q.add_used(mem, head, written as u32)?;
            }
            ctx.signal_used();
            Ok(())
        }
        fn reset(&mut self) {
            self.activated = None;
            self.resets += 1;
        }
    }

    const MEM_SIZE: usize = 0x10000;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const BUFS: u64 = 0x4000;
    const QSIZE: u16 = 8;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    /// Guest RAM, the transport, and a driver's view of both.
    struct Guest {
        mem: GuestMemoryMmap,
        console: Console,
        timeline: Timeline,
        t: MmioTransport<Echo>,
    }

    impl Guest {
        fn new() -> Guest {
            Guest::with(MmioTransport::new(Echo::default()).unwrap())
        }

        fn with(t: MmioTransport<Echo>) -> Guest {
            Guest {
                mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
                console: Console {
                    out: ConsoleOut::Capture(Vec::new()),
                    input: ConsoleIn::Buffer {
                        data: Vec::new(),
                        pos: 0,
                    },
                },
                timeline: Timeline::new(Instant::now()),
                t,
            }
        }

        fn access(&mut self, offset: u64, data: &mut [u8], write: bool) {
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

        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0xaa; 4];
            self.access(offset, &mut data, false);
            u32::from_le_bytes(data)
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.access(offset, &mut value.to_le_bytes(), true);
        }

        fn add_status(&mut self, bit: u32) {
            let s = self.read(STATUS);
            self.write(STATUS, s | bit);
        }

        fn write_features(&mut self, features: u64) {
            self.write(DRIVER_FEATURES_SEL, 0);
            self.write(DRIVER_FEATURES, features as u32);
            self.write(DRIVER_FEATURES_SEL, 1);
            self.write(DRIVER_FEATURES, (features >> 32) as u32);
        }

        fn device_features(&mut self) -> u64 {
            self.write(DEVICE_FEATURES_SEL, 0);
            let low = self.read(DEVICE_FEATURES);
            self.write(DEVICE_FEATURES_SEL, 1);
            u64::from(self.read(DEVICE_FEATURES)) << 32 | u64::from(low)
        }

        /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (read back).
        fn negotiate(&mut self, features: u64) -> bool {
            self.write(STATUS, 0);
            self.add_status(STATUS_ACKNOWLEDGE);
            self.add_status(STATUS_DRIVER);
            self.write_features(features);
            self.add_status(STATUS_FEATURES_OK);
            self.read(STATUS) & STATUS_FEATURES_OK != 0
        }

        /// Queue 0 at DESC/AVAIL/USED with QSIZE entries.
        fn setup_queue0(&mut self) {
            self.write(QUEUE_SEL, 0);
            assert_eq!(self.read(QUEUE_READY), 0);
            assert_eq!(self.read(QUEUE_NUM_MAX), 8);
            self.write(QUEUE_NUM, u32::from(QSIZE));
            for (low, high, addr) in [
                (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, DESC),
                (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, AVAIL),
                (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, USED),
            ] {
                self.write(low, addr as u32);
                self.write(high, (addr >> 32) as u32);
            }
            self.write(QUEUE_READY, 1);
            assert_eq!(self.read(QUEUE_READY), 1);
        }

        /// The whole init sequence, with features A and VERSION_1.
        fn init(&mut self) {
            assert!(self.negotiate(ECHO_F_A | F_VERSION_1));
            self.setup_queue0();
            self.add_status(STATUS_DRIVER_OK);
            assert!(self.t.active());
        }

        fn desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = GuestAddress(DESC + 16 * u64::from(index));
            self.mem.write_obj(addr.to_le(), at).unwrap();
            self.mem
                .write_obj(len.to_le(), at.unchecked_add(8))
                .unwrap();
            self.mem
                .write_obj(flags.to_le(), at.unchecked_add(12))
                .unwrap();
            self.mem
                .write_obj(next.to_le(), at.unchecked_add(14))
                .unwrap();
        }

        /// Makes the chain at `head` available, as a driver does.
        fn make_available(&self, head: u16) {
            let idx: u16 = self.mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
            let slot = AVAIL + 4 + 2 * u64::from(idx % QSIZE);
            self.mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.mem
                .write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
                .unwrap();
        }

        fn used_idx(&self) -> u16 {
            self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
        }

        /// The used ring's entry `i`: (head, length written).
        fn used(&self, i: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(i % QSIZE);
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

        fn put(&self, addr: u64, bytes: &[u8]) {
            self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        }
    }

    #[test]
    fn identification_registers() {
        let mut g = Guest::new();
        assert_eq!(g.read(MAGIC_VALUE), 0x7472_6976);
        assert_eq!(g.read(MAGIC_VALUE).to_le_bytes(), *b"virt");
        assert_eq!(g.read(VERSION_REG), 2);
        assert_eq!(g.read(DEVICE_ID), ECHO_TYPE);
        assert_eq!(g.read(VENDOR_ID_REG), VENDOR_ID);
        assert_eq!(g.device_features(), ECHO_F_A | ECHO_F_B | F_VERSION_1);
        g.write(DEVICE_FEATURES_SEL, 2);
        assert_eq!(g.read(DEVICE_FEATURES), 0);
        for (sel, max) in [(0, 8), (1, 4), (2, 0), (u32::MAX, 0)] {
            g.write(QUEUE_SEL, sel);
            assert_eq!(g.read(QUEUE_NUM_MAX), max, "QueueSel {sel}");
            assert_eq!(g.read(QUEUE_READY), 0);
        }
        assert_eq!(g.read(STATUS), 0);
        assert_eq!(g.read(INTERRUPT_STATUS), 0);
        assert_eq!(g.read(CONFIG_GENERATION), 0);
    }

    #[test]
    fn init_sequence_activates_the_device() {
        let mut g = Guest::new();
        g.write(STATUS, 0);
        assert_eq!(g.read(STATUS), 0);
        g.add_status(STATUS_ACKNOWLEDGE);
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE);
        g.add_status(STATUS_DRIVER);
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let offered = g.device_features();
        let wanted = ECHO_F_A | F_VERSION_1;
        assert_eq!(offered & wanted, wanted);
        g.write_features(wanted);
        g.add_status(STATUS_FEATURES_OK);
        assert_eq!(
            g.read(STATUS),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
        );
        // Features are fixed from here on.
        g.write_features(offered);
        assert_eq!(g.t.state().driver_features, wanted);

        g.setup_queue0();
        assert_eq!(g.t.device().activated, None);
        g.add_status(STATUS_DRIVER_OK);
        assert_eq!(g.read(STATUS) & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
        assert!(g.t.active());
        assert_eq!(g.t.device().activated, Some(wanted));
        let state = g.t.state();
        let q0 = state.queues[0];
        assert_eq!(
            (
                q0.ready,
                q0.size,
                q0.desc_table,
                q0.avail_ring,
                q0.used_ring
            ),
            (true, QSIZE, DESC, AVAIL, USED)
        );
        assert!(!q0.event_idx_enabled);
        assert!(!state.queues[1].ready);
        // Queue registers are frozen once the device runs.
        g.write(QUEUE_NUM, 4);
        assert_eq!(g.t.state().queues[0].size, QSIZE);
    }

    #[test]
    fn feature_sets_the_device_does_not_offer_are_refused() {
        let mut g = Guest::new();
        // A bit the device does not offer.
        assert!(!g.negotiate(ECHO_F_A | F_VERSION_1 | 1 << 7));
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        // A legacy driver: no VERSION_1.
        assert!(!g.negotiate(ECHO_F_A));
        // Without FEATURES_OK neither queues nor DRIVER_OK are taken.
        g.write(QUEUE_NUM, 4);
        assert_eq!(g.t.state().queues[0].size, 8);
        g.add_status(STATUS_DRIVER_OK);
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        assert_eq!(g.t.device().activated, None);
        // After a reset, an acceptable set goes through.
        assert!(g.negotiate(ECHO_F_B | F_VERSION_1));
        assert_eq!(g.t.state().driver_features, ECHO_F_B | F_VERSION_1);
    }

    #[test]
    fn status_changes_out_of_order_are_ignored() {
        let mut g = Guest::new();
        g.write(STATUS, STATUS_DRIVER);
        assert_eq!(g.read(STATUS), 0);
        g.write(
            STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
        // ACKNOWLEDGE and DRIVER in order; DRIVER_OK needs FEATURES_OK.
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        // Clearing a bit takes a reset.
        g.write(STATUS, STATUS_ACKNOWLEDGE);
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        // DriverFeatures before DRIVER is ignored.
        g.write(STATUS, 0);
        g.write(DRIVER_FEATURES, 0xffff_ffff);
        assert_eq!(g.t.state().driver_features, 0);
        // FAILED sticks until a reset.
        g.add_status(STATUS_ACKNOWLEDGE);
        g.add_status(STATUS_FAILED);
        g.add_status(STATUS_DRIVER);
        assert_eq!(g.read(STATUS), STATUS_ACKNOWLEDGE | STATUS_FAILED);
        g.write(STATUS, 0);
        assert_eq!(g.read(STATUS), 0);
        // Invalid queue sizes are refused.
        assert!(g.negotiate(F_VERSION_1));
        g.write(QUEUE_NUM, 3);
        g.write(QUEUE_NUM, 16);
        g.write(QUEUE_NUM, 0x1_0004);
        assert_eq!(g.t.state().queues[0].size, 8);
        g.write(QUEUE_NUM, 2);
        assert_eq!(g.t.state().queues[0].size, 2);
        // Misaligned ring addresses are refused; the halves combine.
        g.write(QUEUE_DESC_LOW, 0x1008);
        g.write(QUEUE_DRIVER_LOW, 0x2001);
        g.write(QUEUE_DEVICE_LOW, 0x3002);
        g.write(QUEUE_DEVICE_HIGH, 0x5);
        let q = g.t.state().queues[0];
        assert_eq!((q.desc_table, q.avail_ring), (0, 0));
        assert_eq!(q.used_ring, 0x5_0000_0000);
        g.write(QUEUE_DESC_LOW, 0x1010);
        g.write(QUEUE_DESC_HIGH, 0x1);
        assert_eq!(g.t.state().queues[0].desc_table, 0x1_0000_1010);
        // QueueNotify before DRIVER_OK does not reach the device.
        g.write(QUEUE_READY, 1);
        g.write(QUEUE_NOTIFY, 0);
        assert!(g.t.device().notified.is_empty());
    }

    #[test]
    fn echo_round_trip_through_the_rings() {
        let mut g = Guest::new();
        g.init();
        // Chain 0: two readable buffers, one writable one.
        g.put(BUFS, b"hello, ");
        g.put(BUFS + 0x100, b"virtio");
        g.desc(0, BUFS, 7, F_NEXT, 1);
        g.desc(1, BUFS + 0x100, 6, F_NEXT, 2);
        g.desc(2, BUFS + 0x200, 64, F_WRITE, 0);
        // Chain 3: one readable buffer, its echo split over two writable ones.
        g.put(BUFS + 0x300, b"0123456789");
        g.desc(3, BUFS + 0x300, 10, F_NEXT, 5);
        g.desc(5, BUFS + 0x400, 4, F_NEXT | F_WRITE, 6);
        g.desc(6, BUFS + 0x500, 16, F_WRITE, 0);
        g.make_available(0);
        g.make_available(3);
        g.write(QUEUE_NOTIFY, 0);

        assert_eq!(g.t.device().notified, [0]);
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.used(0), (0, 13));
        assert_eq!(g.used(1), (3, 10));
        assert_eq!(g.bytes(BUFS + 0x200, 14), b"hello, virtio\0");
        assert_eq!(g.bytes(BUFS + 0x400, 4), b"0123");
        assert_eq!(g.bytes(BUFS + 0x500, 7), b"456789\0");
        assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);
        g.write(INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(g.read(INTERRUPT_STATUS), 0);

        // A kick with nothing new uses nothing; kicks of queues not set
        // up, or not there, do not reach the device.
        g.write(QUEUE_NOTIFY, 0);
        g.write(QUEUE_NOTIFY, 1);
        g.write(QUEUE_NOTIFY, 7);
        assert_eq!(g.t.device().notified, [0, 0]);
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.read(INTERRUPT_STATUS), 0);
    }

    #[test]
    fn reset_clears_everything() {
        let mut g = Guest::new();
        g.init();
        g.put(BUFS, b"x");
        g.desc(0, BUFS, 1, F_NEXT, 1);
        g.desc(1, BUFS + 0x100, 1, F_WRITE, 0);
        g.make_available(0);
        g.write(QUEUE_NOTIFY, 0);
        g.write(QUEUE_SEL, 1);
        g.write(DEVICE_FEATURES_SEL, 1);
        assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);
        let resets = g.t.device().resets;

        g.write(STATUS, 0);
        assert_eq!(g.read(STATUS), 0);
        assert_eq!(g.read(INTERRUPT_STATUS), 0);
        assert!(!g.t.active());
        assert_eq!(g.t.device().activated, None);
        assert_eq!(g.t.device().resets, resets + 1);
        let fresh = MmioTransport::new(Echo::default()).unwrap().state();
        assert_eq!(g.t.state(), fresh);
        g.write(QUEUE_SEL, 0);
        assert_eq!(g.read(QUEUE_READY), 0);
        assert_eq!(g.read(QUEUE_NUM_MAX), 8);
        // The device is not reached until set up again.
        g.write(QUEUE_NOTIFY, 0);
        assert_eq!(g.t.device().notified, [0]);
    }

    #[test]
    fn bad_accesses_are_ignored() {
        let mut g = Guest::new();
        for (offset, len) in [(MAGIC_VALUE, 1), (MAGIC_VALUE, 2), (MAGIC_VALUE, 8), (2, 4)] {
            let mut data = vec![0xaa; len];
            g.access(offset, &mut data, false);
            assert_eq!(data, vec![0; len], "{len} bytes at {offset:#x}");
        }
        // Unknown, legacy (QueuePFN) and write-only registers read 0.
        for offset in [
            0x0c0,
            0x040,
            QUEUE_NUM,
            QUEUE_DESC_LOW,
            QUEUE_NOTIFY,
            0xfc - 4,
        ] {
            assert_eq!(g.read(offset), 0, "offset {offset:#x}");
        }
        // Writes to read-only or unknown registers, or not 32 bits wide,
        // change nothing.
        g.write(MAGIC_VALUE, 0);
        g.write(0x040, 1);
        g.access(STATUS, &mut [STATUS_ACKNOWLEDGE as u8], true);
        g.access(
            STATUS,
            &mut [STATUS_ACKNOWLEDGE as u8, 0, 0, 0, 0, 0, 0, 0],
            true,
        );
        g.access(STATUS + 1, &mut [STATUS_ACKNOWLEDGE as u8, 0, 0, 0], true);
        assert_eq!(g.read(MAGIC_VALUE), MAGIC);
        assert_eq!(g.read(STATUS), 0);
        assert_eq!(
            g.t.state(),
            MmioTransport::new(Echo::default()).unwrap().state()
        );
        // Each is logged once: the set of logged mistakes stays small.
        let logged = g.t.logged.len();
        for _ in 0..3 {
            g.read(0x0c0);
            g.write(0x040, 1);
        }
        assert_eq!(g.t.logged.len(), logged);
    }

    #[test]
    fn config_space_any_width_and_generation() {
        let mut g = Guest::new();
        g.t.device_mut().config = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut b = [0u8; 1];
        g.access(CONFIG + 2, &mut b, false);
        assert_eq!(b, [3]);
        let mut w = [0u8; 2];
        g.access(CONFIG + 6, &mut w, false);
        assert_eq!(w, [7, 8]);
        assert_eq!(g.read(CONFIG + 4), u32::from_le_bytes([5, 6, 7, 8]));
        assert_eq!(g.read(CONFIG + 8), 0);
        g.access(CONFIG + 1, &mut [0xee, 0xff], true);
        assert_eq!(g.t.device().config, [1, 0xee, 0xff, 4, 5, 6, 7, 8]);

        // A change before DRIVER_OK bumps the generation only; after, it
        // also records the configuration interrupt.
        g.t.config_changed();
        assert_eq!(g.read(CONFIG_GENERATION), 1);
        assert_eq!(g.read(INTERRUPT_STATUS), 0);
        g.init();
        g.t.config_changed();
        assert_eq!(g.read(CONFIG_GENERATION), 2);
        assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
    }

    #[test]
    fn a_queue_outside_ram_makes_the_device_need_a_reset() {
        let mut g = Guest::new();
        assert!(g.negotiate(F_VERSION_1));
        g.setup_queue0();
        g.write(QUEUE_READY, 0);
        g.write(QUEUE_DEVICE_LOW, 0);
        g.write(QUEUE_DEVICE_HIGH, 1); // 4 GiB: past guest RAM.
        g.write(QUEUE_READY, 1);
        g.add_status(STATUS_DRIVER_OK);
        let status = g.read(STATUS);
        assert_eq!(status & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
        assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
        assert!(!g.t.active());
        assert_eq!(g.t.device().activated, None);
        g.write(QUEUE_NOTIFY, 0);
        assert!(g.t.device().notified.is_empty());
        // The driver's usual write-back of Status (with NEEDS_RESET) is fine,
        // and a reset recovers.
        g.write(STATUS, status);
        g.init();
        assert_eq!(g.read(STATUS) & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn a_broken_ring_makes_the_device_need_a_reset() {
        let mut g = Guest::new();
        g.init();
        // The driver claims more new entries than the queue holds.
        g.mem.write_obj(QSIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
        g.write(QUEUE_NOTIFY, 0);
        assert_eq!(g.read(STATUS) & STATUS_NEEDS_RESET, STATUS_NEEDS_RESET);
        assert_eq!(g.read(INTERRUPT_STATUS), INT_CONFIG);
        g.write(QUEUE_NOTIFY, 0);
        assert_eq!(g.t.device().notified, [0]);
    }

    #[test]
    fn restored_state_continues_the_queue() {
        let mut g = Guest::new();
        g.init();
        g.put(BUFS, b"before");
        g.desc(0, BUFS, 6, F_NEXT, 1);
        g.desc(1, BUFS + 0x100, 16, F_WRITE, 0);
        g.make_available(0);
        g.write(QUEUE_NOTIFY, 0);
        assert_eq!(g.used_idx(), 1);

        let json = serde_json::to_string(&g.t.state()).unwrap();
        let state: MmioState = serde_json::from_str(&json).unwrap();
        assert_eq!(state, g.t.state());
        assert_eq!(state.version, MMIO_STATE_VERSION);
        let t = MmioTransport::restore(Echo::default(), state, &g.mem).unwrap();
        let Guest { mem, .. } = std::mem::replace(&mut g, Guest::with(t));
        g.mem = mem; // The same guest RAM, as a snapshot restores it.
        assert_eq!(g.t.device().activated, Some(ECHO_F_A | F_VERSION_1));
        assert!(g.t.active());
        assert_eq!(
            g.read(STATUS),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
        );
        assert_eq!(g.read(INTERRUPT_STATUS), INT_USED_RING);

        // The restored device serves only what is new, into the next used slot.
        g.put(BUFS + 0x200, b"after");
        g.desc(2, BUFS + 0x200, 5, F_NEXT, 3);
        g.desc(3, BUFS + 0x300, 16, F_WRITE, 0);
        g.make_available(2);
        g.write(QUEUE_NOTIFY, 0);
        assert_eq!(g.t.device().notified, [0]);
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.used(0), (0, 6));
        assert_eq!(g.used(1), (2, 5));
        assert_eq!(g.bytes(BUFS + 0x300, 5), b"after");

        // A transport that was not active is restored without activating.
        let idle = MmioTransport::new(Echo::default()).unwrap().state();
        let t = MmioTransport::restore(Echo::default(), idle, &g.mem).unwrap();
        assert_eq!(t.device().activated, None);
    }

    #[test]
    fn restore_refuses_foreign_states() {
        let mut g = Guest::new();
        g.init();
        let good = g.t.state();

        let mut other = good.clone();
        other.version = MMIO_STATE_VERSION + 1;
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(matches!(
            err,
            TransportError::Version {
                found: 2,
                expected: 1
            }
        ));
        let text = err.to_string();
        assert!(
            text.contains("version 2") && text.contains("version 1"),
            "{text}"
        );

        let mut other = good.clone();
        other.device_type = 1;
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(matches!(
            err,
            TransportError::DeviceType {
                found: 1,
                expected: ECHO_TYPE
            }
        ));

        let mut other = good.clone();
        other.queues.pop();
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(matches!(
            err,
            TransportError::QueueCount {
                found: 1,
                expected: 2
            }
        ));

        let mut other = good.clone();
        other.queues[0].size = 3;
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(
            matches!(err, TransportError::Queue { index: 0, .. }),
            "{err}"
        );

        let mut other = good.clone();
        other.driver_features |= 1 << 9;
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(matches!(err, TransportError::Features { .. }), "{err}");

        let mut other = good;
        other.queues[0].used_ring = 1 << 32;
        let err = MmioTransport::restore(Echo::default(), other, &g.mem).unwrap_err();
        assert!(
            matches!(err, TransportError::Queue { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn queue_sizes_must_be_powers_of_two() {
        struct Odd;
        impl VirtioDevice for Odd {
            fn device_type(&self) -> u32 {
                9
            }
            fn features(&self) -> u64 {
                0
            }
            fn queue_max_sizes(&self) -> &[u16] {
                &[16, 12]
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
        let err = MmioTransport::new(Odd).unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::QueueMax {
                    index: 1,
                    max: 12,
                    ..
                }
            ),
            "{err}"
        );
    }
}
