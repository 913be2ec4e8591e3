//! The exit and boot-phase ports: the guest ends the run with a status byte
//! on [`PORT_EXIT`], and says how far it got on [`PORT_PHASE`]. The same
//! exit port is QEMU's `isa-debug-exit` under QEMU, so one image ends the
//! same way under both; the phase port is ours alone, and the libOS writes
//! it only when our runner booted it.
//!
//! docs/ARCHITECTURE.md §4.

use pgkraft_abi::{PORT_EXIT, PORT_PHASE, Phase};

use crate::bus::{Action, BusDevice, Ctx};

/// The port range: exit, then phase.
pub(crate) const RANGE: std::ops::Range<u64> = PORT_EXIT as u64..PORT_PHASE as u64 + 1;

pub(crate) struct ExitPort;

impl BusDevice for ExitPort {
    fn read(&mut self, _: &mut Ctx, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, ctx: &mut Ctx, offset: u64, data: &[u8]) -> Action {
        let byte = data.first().copied().unwrap_or(0);
        match offset + PORT_EXIT as u64 {
            p if p == PORT_EXIT as u64 => Action::Exit(byte),
            _ => {
                match Phase::from_u8(byte) {
                    Some(p) => ctx.timeline.mark(p.name()),
                    None => log::debug!("vmm: guest reported unknown phase {byte}"),
                }
                Action::Continue
            }
        }
    }
}
