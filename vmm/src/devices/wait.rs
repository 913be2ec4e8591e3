//! `hc::WAIT`: the guest has nothing to run and waits for its devices.
//! The devices have no interrupts, so a waiting guest learns of their work
//! here: every MMIO device is polled ([`crate::bus::Poll`]; for virtio-net
//! that also takes the frames the guest queued without a notify); if none
//! gave the guest anything, the vCPU thread blocks in one epoll set
//! holding the devices' own fds (a worker thread's "delivered" event,
//! `virtio/worker.rs`) and the VM's stop event, until one is ready, a
//! device's timer is due, or the guest's time is up; then it polls again. The result is 1 once a
//! device gave the guest something, 0 when the time passed (or the VM is
//! being stopped). With no such device it is a sleep that a stop ends.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::Devices;

/// A device timer due in less than this still waits this long: a device
/// that keeps asking for "now" without anything to do cannot spin the
/// vCPU thread.
const MIN_DEVICE_DELAY: Duration = Duration::from_millis(1);
const STOP_TOKEN: u64 = 0;

pub(crate) struct Waiter {
    epoll: Epoll,
    stop: Arc<AtomicBool>,
    /// Our own handle on the stop event, registered in `epoll`.
    _stop_evt: EventFd,
    devices: u64,
    /// Signals for the guest (registered in `epoll` too).
    pub(super) signals: Option<crate::GuestSignals>,
}

impl Waiter {
    pub(crate) fn new(stop: Arc<AtomicBool>, stop_evt: &EventFd) -> io::Result<Waiter> {
        let epoll = Epoll::new()?;
        let evt = stop_evt.try_clone()?;
        epoll.ctl(
            ControlOperation::Add,
            evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        Ok(Waiter {
            epoll,
            stop,
            _stop_evt: evt,
            devices: 0,
            signals: None,
        })
    }

    /// A wait also ends when the host sends the guest a signal.
    pub(crate) fn listen(&mut self, signals: crate::GuestSignals) -> io::Result<()> {
        self.add(signals.fd())?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Also wake when `fd` is readable.
    pub(crate) fn add(&mut self, fd: RawFd) -> io::Result<()> {
        self.devices += 1;
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, self.devices),
        )
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Blocks until something is ready or `wait` passes (`None`: no
    /// limit). An interruption (the stop kick) just returns.
    fn block(&self, wait: Option<Duration>) {
        // Rounded up: waking before the deadline would only wait again.
        let ms = wait.map_or(-1, |d| {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as i32
        });
        let mut events = [EpollEvent::default(); 8];
        let _ = self.epoll.wait(ms, &mut events);
    }
}

/// What ended a wait.
enum Waited {
    /// The result for the guest.
    Ret(i64),
    /// The VM's idle timer ran out: it hibernates here.
    Hibernate,
}

impl Devices {
    /// Serves `hc::WAIT` (see the module doc) and writes its result to
    /// guest address `ret_at`. True if the VM is to hibernate instead: its
    /// idle timer (`crate::snapshot::hibernate`) ran out. The guest then
    /// finds 0 (its time passed) when it runs again.
    pub(crate) fn wait(
        &mut self,
        mem: &GuestMemoryMmap,
        timeout: Option<Duration>,
        ret_at: u64,
        sessions: Option<u32>,
    ) -> bool {
        let (ret, hibernate) = match self.wait_for_work(mem, timeout, sessions) {
            Waited::Ret(r) => (r, false),
            Waited::Hibernate => (0, true),
        };
        let _ = mem.write_slice(&ret.to_le_bytes(), GuestAddress(ret_at));
        hibernate
    }

    fn wait_for_work(
        &mut self,
        mem: &GuestMemoryMmap,
        timeout: Option<Duration>,
        sessions: Option<u32>,
    ) -> Waited {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.waiter.stopping() {
                return Waited::Ret(0);
            }
            let signals = self.waiter.signals.as_ref().map_or(0, |s| s.take());
            if signals != 0 {
                return Waited::Ret((signals as i64) << pgkraft_abi::hc::WAIT_SIGNALS_SHIFT);
            }
            let mut work = false;
            for dev in &mut self.mmio_devices {
                work |= dev.poll(mem);
            }
            if work {
                return Waited::Ret(1);
            }
            let idle = self.idle.as_ref().map(|c| c.due_in(sessions));
            if idle == Some(Some(Duration::ZERO)) {
                return Waited::Hibernate;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return Waited::Ret(0),
                Some(d) => Some(d - now),
                None => None,
            };
            // Look at the idle timer again when it runs out, and while
            // connections are open at least every second (the last one's
            // end need not wake the guest).
            let left = match idle {
                Some(due) => {
                    let due = due.unwrap_or(crate::snapshot::hibernate::LOOK_AGAIN);
                    Some(left.map_or(due, |l| l.min(due)))
                }
                None => left,
            };
            let device = self
                .mmio_devices
                .iter_mut()
                .filter_map(|d| d.poll_delay())
                .min()
                .map(|d| d.max(MIN_DEVICE_DELAY));
            let wait = match (left, device) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.waiter.block(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::tests::test_devices;

    #[test]
    fn without_devices_it_sleeps_and_answers_zero() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut d = test_devices(Arc::new(AtomicBool::new(false)), &evt);
        mem.write_obj(7i64, GuestAddress(0x100)).unwrap();
        d.wait(&mem, Some(Duration::from_millis(2)), 0x100, None);
        assert_eq!(mem.read_obj::<i64>(GuestAddress(0x100)).unwrap(), 0);
    }

    #[test]
    fn a_stop_ends_an_endless_wait() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut d = test_devices(stop.clone(), &evt);
        let kick = evt.try_clone().unwrap();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::SeqCst);
            kick.write(1).unwrap();
        });
        // No timeout: only the stop can end it (the test would hang otherwise).
        d.wait(&mem, None, 0x100, None);
        assert_eq!(mem.read_obj::<i64>(GuestAddress(0x100)).unwrap(), 0);
        stopper.join().unwrap();
    }
}
