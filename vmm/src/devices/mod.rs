//! The devices of one VM and the two buses that reach them (port I/O and
//! MMIO). Each device lives in its own file, owns its state and implements
//! [`BusDevice`]; the ones a snapshot keeps have a versioned state type.
//! The console and the run's timeline are not on the bus: every device that
//! carries console bytes or reports a moment shares them through [`Ctx`].
//!
//! docs/ARCHITECTURE.md §4.

pub(crate) mod exit_port;
pub(crate) mod hypercall;
pub(crate) mod uart;
mod wait;

use std::collections::HashSet;

use pgkraft_abi::{
    PORT_COM1, PORT_HYPERCALL, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS,
};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Action, Bus, BusDevice, Ctx, MmioDevice};
use crate::console::Console;
use crate::timeline::Timeline;
use exit_port::ExitPort;
use hypercall::Hypercall;
use uart::Uart;

/// Refuses a saved device state of another version than this runner's.
pub(crate) fn check_version(what: &str, got: u32, reads: u32) -> Result<(), String> {
    if got == reads {
        Ok(())
    } else {
        Err(format!(
            "{what} state version {got} (this runner reads version {reads})"
        ))
    }
}

/// Which device a bus range belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceId {
    Uart,
    ExitPort,
    Hypercall,
    /// The n-th device attached to the MMIO bus (virtio-mmio transports).
    Mmio(usize),
}

pub(crate) struct Devices {
    pio: Bus<DeviceId>,
    mmio: Bus<DeviceId>,
    pub uart: Uart,
    pub exit_port: ExitPort,
    pub hypercall: Hypercall,
    pub console: Console,
    pub timeline: Timeline,
    /// MMIO devices, in the order attached ([`DeviceId::Mmio`]).
    mmio_devices: Vec<Box<dyn MmioDevice>>,
    /// Where `hc::WAIT` blocks: the stop event and the devices' fds.
    waiter: wait::Waiter,
    /// Unhandled addresses already logged, so a polling guest does not
    /// flood the log.
    quiet: HashSet<(bool, u64)>,
    /// A serving VM's idle timer: an `hc::WAIT` after it ran out
    /// hibernates the VM.
    pub idle: Option<crate::snapshot::hibernate::IdleClock>,
    /// A woken VM's times, told of its first exit.
    pub woke: Option<crate::snapshot::hibernate::WakeTimes>,
    /// Where the vCPU thread runs (each vCPU thread this VM gets enters it).
    pub placement: crate::placement::Placement,
}

impl Devices {
    pub(crate) fn new(
        uart: Uart,
        hypercall: Hypercall,
        console: Console,
        timeline: Timeline,
        stop_evt: &EventFd,
    ) -> Result<Devices, std::io::Error> {
        let mut pio = Bus::new();
        let fixed = [
            (PORT_COM1 as u64..PORT_COM1 as u64 + 8, DeviceId::Uart),
            (exit_port::RANGE, DeviceId::ExitPort),
            (
                PORT_HYPERCALL as u64..PORT_HYPERCALL as u64 + 1,
                DeviceId::Hypercall,
            ),
        ];
        for (range, id) in fixed {
            pio.insert(range, id)
                .expect("the fixed port ranges do not overlap");
        }
        let waiter = wait::Waiter::new(hypercall.stop_flag(), stop_evt)?;
        Ok(Devices {
            pio,
            mmio: Bus::new(),
            uart,
            exit_port: ExitPort,
            hypercall,
            console,
            timeline,
            mmio_devices: Vec::new(),
            waiter,
            quiet: HashSet::new(),
            idle: None,
            woke: None,
            placement: crate::placement::Placement::default(),
        })
    }

    /// Puts `dev` on the MMIO bus at `range` (a virtio-mmio transport).
    pub(crate) fn attach_mmio(
        &mut self,
        range: std::ops::Range<u64>,
        dev: Box<dyn MmioDevice>,
    ) -> Result<(), AttachError> {
        self.mmio
            .insert(range.clone(), DeviceId::Mmio(self.mmio_devices.len()))?;
        if let Some(fd) = dev.wait_fd()
            && let Err(source) = self.waiter.add(fd)
        {
            self.mmio.remove(range.start);
            return Err(AttachError::Wait(source));
        }
        self.mmio_devices.push(dev);
        Ok(())
    }

    /// Let `hc::WAIT` carry the host's signals to the guest.
    pub(crate) fn listen_signals(&mut self, s: crate::GuestSignals) -> std::io::Result<()> {
        self.waiter.listen(s)
    }

    /// Every MMIO device stops touching guest RAM (the VM hibernates).
    pub(crate) fn park(&mut self) {
        self.mmio_devices.iter_mut().for_each(|d| d.park());
    }

    /// Every MMIO device serves guest RAM `mem` (the woken VM's).
    pub(crate) fn unpark(&mut self, mem: &GuestMemoryMmap) -> std::io::Result<()> {
        self.mmio_devices.iter_mut().try_for_each(|d| d.unpark(mem))
    }

    /// The host's signals for the guest, if it listens for any.
    pub(crate) fn signals(&self) -> Option<&crate::GuestSignals> {
        self.waiter.signals.as_ref()
    }

    /// What a snapshot could not save, if any device holds such state.
    pub(crate) fn unsaved_state(&self) -> Option<&'static str> {
        self.mmio_devices.iter().find_map(|d| d.unsaved_state())
    }

    /// The device and the context it works in, both borrowed from `self`.
    fn split<'a>(
        &'a mut self,
        id: DeviceId,
        mem: &'a GuestMemoryMmap,
    ) -> (&'a mut dyn BusDevice, Ctx<'a>) {
        let dev: &mut dyn BusDevice = match id {
            DeviceId::Uart => &mut self.uart,
            DeviceId::ExitPort => &mut self.exit_port,
            DeviceId::Hypercall => &mut self.hypercall,
            DeviceId::Mmio(i) => self.mmio_devices[i].as_mut(),
        };
        let ctx = Ctx {
            mem,
            console: &mut self.console,
            timeline: &mut self.timeline,
        };
        (dev, ctx)
    }

    /// A guest `in`; ports with no device read as all ones, as on a PC.
    pub(crate) fn pio_read(&mut self, mem: &GuestMemoryMmap, port: u16, data: &mut [u8]) {
        match self.pio.find(port.into()) {
            Some((id, offset)) => {
                let (dev, mut ctx) = self.split(id, mem);
                dev.read(&mut ctx, offset, data);
            }
            None => {
                data.fill(0xff);
                self.unhandled(false, port.into(), "read from port");
            }
        }
    }

    /// A guest `out`; writes to ports with no device are dropped.
    pub(crate) fn pio_write(&mut self, mem: &GuestMemoryMmap, port: u16, data: &[u8]) -> Action {
        match self.pio.find(port.into()) {
            Some((id, offset)) => {
                let (dev, mut ctx) = self.split(id, mem);
                dev.write(&mut ctx, offset, data)
            }
            None => {
                self.unhandled(false, port.into(), "write to port");
                Action::Continue
            }
        }
    }

    /// A guest MMIO read; `None` if no device is there (nor RAM: the caller
    /// reports a stray access). Empty virtio-mmio slots read as zeros.
    pub(crate) fn mmio_read(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: u64,
        data: &mut [u8],
    ) -> Option<()> {
        let Some((id, offset)) = self.mmio.find(addr) else {
            in_virtio_window(addr).then(|| data.fill(0))?;
            return Some(());
        };
        let (dev, mut ctx) = self.split(id, mem);
        dev.read(&mut ctx, offset, data);
        Some(())
    }

    /// A guest MMIO write; `None` if no device is there. Writes to empty
    /// virtio-mmio slots are ignored.
    pub(crate) fn mmio_write(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: u64,
        data: &[u8],
    ) -> Option<Action> {
        let Some((id, offset)) = self.mmio.find(addr) else {
            return in_virtio_window(addr).then_some(Action::Continue);
        };
        let (dev, mut ctx) = self.split(id, mem);
        Some(dev.write(&mut ctx, offset, data))
    }

    fn unhandled(&mut self, mmio: bool, addr: u64, what: &str) {
        if self.quiet.insert((mmio, addr)) {
            log::debug!("vmm: guest {what} {addr:#x}: no device there (reads give all ones)");
        }
    }

    /// The context devices work in, outside an exit (a resume answering
    /// the pending read before the guest runs).
    pub(crate) fn hypercall_ctx<'a>(
        &'a mut self,
        mem: &'a GuestMemoryMmap,
    ) -> (&'a mut Hypercall, Ctx<'a>) {
        (
            &mut self.hypercall,
            Ctx {
                mem,
                console: &mut self.console,
                timeline: &mut self.timeline,
            },
        )
    }
}

/// The virtio-mmio slots' window, where a probing guest may read any slot.
fn in_virtio_window(addr: u64) -> bool {
    (VIRTIO_MMIO_BASE..VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_SLOT_SIZE).contains(&addr)
}

/// Why a device could not be attached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttachError {
    #[error(transparent)]
    Overlap(#[from] crate::bus::Overlap),
    #[error("cannot wait on the device: {0}")]
    Wait(std::io::Error),
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::console::{ConsoleIn, ConsoleOut};
    use crate::virtio::mmio::MmioTransport;
    use crate::virtio::tests::Inert;

    /// A device with one queue that does nothing with it (an entropy
    /// source by its type).
    const IDLE: Inert = Inert {
        kind: 4,
        queues: &[8],
    };

    /// A VM's devices with a captured console and no input, stopped by
    /// `stop` and `evt` (the tests of this module and of `wait`).
    pub(crate) fn test_devices(stop: Arc<AtomicBool>, evt: &EventFd) -> Devices {
        Devices::new(
            Uart::new(),
            Hypercall::new(stop),
            Console {
                out: ConsoleOut::Capture(Vec::new()),
                input: ConsoleIn::Buffer {
                    data: Vec::new(),
                    pos: 0,
                },
            },
            Timeline::new(Instant::now()),
            evt,
        )
        .unwrap()
    }

    fn devices() -> Devices {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        test_devices(Arc::new(AtomicBool::new(false)), &evt)
    }

    #[test]
    fn mmio_accesses_reach_the_attached_transport() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut d = devices();
        let base = 0xd000_0000;
        let transport = MmioTransport::new(IDLE).unwrap();
        d.attach_mmio(base..base + 0x200, Box::new(transport))
            .unwrap();
        let mut word = [0u8; 4];
        d.mmio_read(&mem, base, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0x7472_6976, "MagicValue");
        d.mmio_read(&mem, base + 8, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), 4, "DeviceID");
        assert!(d.mmio_read(&mem, base + 0x200, &mut word).is_none());
        assert!(d.mmio_write(&mem, base - 4, &word).is_none());
        // An empty virtio-mmio slot reads as zeros and ignores writes.
        let slot = VIRTIO_MMIO_BASE + 3 * VIRTIO_MMIO_SLOT_SIZE;
        word = [0xff; 4];
        d.mmio_read(&mem, slot, &mut word).unwrap();
        assert_eq!(word, [0; 4]);
        assert_eq!(d.mmio_write(&mem, slot, &word), Some(Action::Continue));
        let past = VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_SLOT_SIZE;
        assert!(d.mmio_read(&mem, past, &mut word).is_none());
        let again = MmioTransport::new(IDLE).unwrap();
        assert!(
            d.attach_mmio(base + 0x100..base + 0x300, Box::new(again))
                .is_err()
        );
    }

    #[test]
    fn ports_without_a_device_read_all_ones_and_the_exit_port_exits() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut d = devices();
        let mut b = [0u8; 1];
        d.pio_read(&mem, 0x80, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(d.pio_write(&mem, 0x80, &[1]), Action::Continue);
        assert_eq!(
            d.pio_write(&mem, pgkraft_abi::PORT_EXIT, &[7]),
            Action::Exit(7)
        );
        assert_eq!(
            d.pio_write(
                &mem,
                pgkraft_abi::PORT_PHASE,
                &[pgkraft_abi::Phase::MainEntered as u8]
            ),
            Action::Continue
        );
        assert_eq!(d.timeline.phases.len(), 1);
        // COM1's transmit register reaches the console.
        assert_eq!(
            d.pio_write(&mem, pgkraft_abi::PORT_COM1, b"A"),
            Action::Continue
        );
        assert_eq!(d.console.captured(), Some(&b"A"[..]));
    }
}
