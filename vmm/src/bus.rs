//! The runner's device bus: every device the guest reaches through port I/O
//! or MMIO sits behind [`BusDevice`], at a range of one address space. The
//! exit loop looks the address up and hands the access to the device with
//! what it may touch ([`Ctx`]); the device answers with what the loop does
//! next ([`Action`]).
//!
//! Devices are kept by their owner as typed values (a snapshot saves each
//! one's own versioned state), so the bus maps ranges to a small id, not to
//! trait objects: the owner turns the id back into the device.
//!
//! docs/ARCHITECTURE.md §4.

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::console::Console;
use crate::timeline::Timeline;

/// What a device access may use besides the device's own state.
pub(crate) struct Ctx<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub console: &'a mut Console,
    pub timeline: &'a mut Timeline,
}

/// What the exit loop does after a device access.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Enter the guest again.
    Continue,
    /// The guest asked to end with this status.
    Exit(u8),
    /// The guest is at its ready point: stop and hand the VM to the caller
    /// (it is waiting for console input that is not there).
    Pause,
    /// The guest waits for its devices (`hc::WAIT`) at most `timeout`
    /// (`None`: no limit): `Devices::wait` does it and writes the
    /// hypercall's result to guest address `ret_at`.
    Wait {
        timeout: Option<Duration>,
        ret_at: u64,
        /// The guest's busy client sessions, if it reports them
        /// (`pgkraft_abi::hc::WAIT_SESSIONS`).
        sessions: Option<u32>,
    },
}

/// One device on the bus. `offset` counts from the start of the device's
/// range; `data.len()` is the access width (1, 2, 4 or 8 bytes; more for
/// none of today's devices).
pub(crate) trait BusDevice {
    fn read(&mut self, ctx: &mut Ctx, offset: u64, data: &mut [u8]);
    fn write(&mut self, ctx: &mut Ctx, offset: u64, data: &[u8]) -> Action;
}

/// What an MMIO device does besides answering accesses: work of its own
/// (a network's host side) that the VM's wait (`hc::WAIT`, see
/// `devices/wait.rs`) runs and blocks on. No interrupts exist, so this is
/// how such work reaches a polling guest.
pub(crate) trait Poll {
    /// Does the pending work; true if the guest has something new (buffers
    /// in a used ring).
    fn poll(&mut self, mem: &GuestMemoryMmap) -> bool;
    /// Readable when [`Self::poll`] has work; owned by the device.
    fn wait_fd(&self) -> Option<RawFd>;
    /// When [`Self::poll`] must run again at the latest, if ever.
    fn poll_delay(&mut self) -> Option<Duration>;
    /// `Some(what)` if it holds state a snapshot cannot save yet.
    fn unsaved_state(&self) -> Option<&'static str>;
    /// Stop touching guest RAM (and drop every reference to it) until
    /// [`Self::unpark`]: the VM hibernates (`crate::hibernate`). The
    /// device keeps its state, rings' positions included.
    fn park(&mut self) {}
    /// Serve again, in guest RAM `mem` (the woken VM's).
    fn unpark(&mut self, _mem: &GuestMemoryMmap) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device of the MMIO bus.
pub(crate) trait MmioDevice: BusDevice + Poll + Send {}
impl<T: BusDevice + Poll + Send> MmioDevice for T {}

/// Address ranges of one space (ports or MMIO), each owned by one device id.
pub(crate) struct Bus<Id> {
    /// Sorted by start, never overlapping.
    ranges: Vec<(Range<u64>, Id)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bus range {new:#x?} overlaps {old:#x?}")]
pub struct Overlap {
    pub new: Range<u64>,
    pub old: Range<u64>,
}

impl<Id: Copy> Bus<Id> {
    pub(crate) fn new() -> Bus<Id> {
        Bus { ranges: Vec::new() }
    }

    pub(crate) fn insert(&mut self, range: Range<u64>, id: Id) -> Result<(), Overlap> {
        let at = self.ranges.partition_point(|(r, _)| r.start < range.start);
        for (old, _) in [at.checked_sub(1), Some(at)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.ranges.get(i))
        {
            if old.start < range.end && range.start < old.end {
                return Err(Overlap {
                    new: range,
                    old: old.clone(),
                });
            }
        }
        self.ranges.insert(at, (range, id));
        Ok(())
    }

    /// Takes the range starting at `start` out again.
    pub(crate) fn remove(&mut self, start: u64) {
        self.ranges.retain(|(r, _)| r.start != start);
    }

    /// The device whose range holds `addr`, and `addr`'s offset in it.
    pub(crate) fn find(&self, addr: u64) -> Option<(Id, u64)> {
        let at = self.ranges.partition_point(|(r, _)| r.start <= addr);
        let (range, id) = self.ranges.get(at.checked_sub(1)?)?;
        range.contains(&addr).then(|| (*id, addr - range.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_device_and_offset() {
        let mut bus = Bus::new();
        bus.insert(0x3f8..0x400, 'u').unwrap();
        bus.insert(0xf4..0xf6, 'x').unwrap();
        assert_eq!(bus.find(0x3f8), Some(('u', 0)));
        assert_eq!(bus.find(0x3fd), Some(('u', 5)));
        assert_eq!(bus.find(0x400), None);
        assert_eq!(bus.find(0xf5), Some(('x', 1)));
        assert_eq!(bus.find(0xf3), None);
        assert_eq!(bus.find(0), None);
    }

    #[test]
    fn refuses_overlaps() {
        let mut bus = Bus::new();
        bus.insert(0x1000..0x2000, 1).unwrap();
        assert!(bus.insert(0x1fff..0x3000, 2).is_err());
        assert!(bus.insert(0x0800..0x1001, 2).is_err());
        assert!(bus.insert(0x1100..0x1200, 2).is_err());
        bus.insert(0x2000..0x3000, 2).unwrap();
        bus.insert(0x0800..0x1000, 3).unwrap();
        assert_eq!(bus.find(0x0fff), Some((3, 0x7ff)));
        assert_eq!(bus.find(0x2000), Some((2, 0)));
    }
}
