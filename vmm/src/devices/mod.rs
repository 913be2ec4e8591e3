//! The devices of one VM and the two buses that reach them (port I/O and
//! MMIO). Each device lives in its own file, owns its state and implements
//! [`BusDevice`]; the ones a snapshot keeps have a versioned state type.
//! The console and the run's timeline are not on the bus: every device that
//! carries console bytes or reports a moment shares them through [`Ctx`].

pub(crate) mod exit_port;
pub(crate) mod hypercall;
pub(crate) mod uart;

use std::collections::HashSet;

use pgkraft_abi::{PORT_COM1, PORT_HYPERCALL};
use vm_memory::GuestMemoryMmap;

use crate::bus::{Action, Bus, BusDevice, Ctx};
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
}

pub(crate) struct Devices {
    pio: Bus<DeviceId>,
    mmio: Bus<DeviceId>,
    pub uart: Uart,
    pub exit_port: ExitPort,
    pub hypercall: Hypercall,
    pub console: Console,
    pub timeline: Timeline,
    /// Unhandled addresses already logged, so a polling guest does not
    /// flood the log.
    quiet: HashSet<(bool, u64)>,
}

impl Devices {
    pub(crate) fn new(
        uart: Uart,
        hypercall: Hypercall,
        console: Console,
        timeline: Timeline,
    ) -> Devices {
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
        Devices {
            pio,
            mmio: Bus::new(),
            uart,
            exit_port: ExitPort,
            hypercall,
            console,
            timeline,
            quiet: HashSet::new(),
        }
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
    /// reports a stray access).
    pub(crate) fn mmio_read(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: u64,
        data: &mut [u8],
    ) -> Option<()> {
        let (id, offset) = self.mmio.find(addr)?;
        let (dev, mut ctx) = self.split(id, mem);
        dev.read(&mut ctx, offset, data);
        Some(())
    }

    /// A guest MMIO write; `None` if no device is there.
    pub(crate) fn mmio_write(
        &mut self,
        mem: &GuestMemoryMmap,
        addr: u64,
        data: &[u8],
    ) -> Option<Action> {
        let (id, offset) = self.mmio.find(addr)?;
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
