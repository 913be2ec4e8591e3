//! A virtio-mmio device served by a thread of its own while the guest
//! runs, so the guest can wait for it without a VM exit.
//!
//! Why: on PVM a VM exit costs ~31 µs, and with the device served only on
//! the vCPU thread a request/response round trip cost one exit at least
//! (the guest's `hc::WAIT`). Here the worker thread does the device's host
//! side (sockets, the stack) and fills the guest's rings while the guest
//! keeps running, polling its receive ring for a while before it waits
//! (libOS net/stack.rs `idle_until`); after it delivered frames the worker
//! looks at the transmit ring for a while too, so the answer goes out with
//! no exit either. Both spins are adaptive and end soon when nothing
//! comes: an idle VM has a blocked worker and a guest in `hc::WAIT`.
//!
//! The transport is shared behind a mutex: the vCPU thread takes it for
//! register accesses (set-up, a notify) and for `hc::WAIT` (which flushes
//! the transmit ring), then nudges the worker (what it did may have moved
//! the device's timers); the worker does everything else. The worker signals
//! [`Worked::wait_fd`] when it gave the guest something, which is what
//! `hc::WAIT` blocks on.
//!
//! The volume (virtio-9p) is served the same way: after a request the
//! worker looks at its ring for [`SPIN`] while the device tells the driver
//! not to notify (VRING_USED_F_NO_NOTIFY); when the worker stops looking,
//! [`VirtioDevice::settle`] turns notifications back on and reports what
//! came in between, and the worker looks on.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::VirtioDevice;
use super::mmio::MmioTransport;
use crate::bus::{Action, BusDevice, Ctx, Poll};
use crate::placement::Placement;

/// How long the worker keeps looking at the rings after it moved frames:
/// an answer computed within this goes out without the thread sleeping.
const SPIN: Duration = Duration::from_micros(200);
/// A device timer due sooner still sleeps this long (no spinning on "now").
const MIN_DELAY: Duration = Duration::from_millis(1);
const STOP: u64 = 0;
const DEVICE: u64 = 1;
const NUDGE: u64 = 2;

pub(crate) struct Worked<D: VirtioDevice + Send + 'static> {
    shared: Arc<Mutex<MmioTransport<D>>>,
    /// Readable when the worker gave the guest frames.
    ready: Arc<EventFd>,
    /// Written after the vCPU thread pumped: the device's timers may have
    /// changed, so the worker works out its sleep again.
    nudge: EventFd,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    name: String,
    placement: Placement,
}

fn lock<D: VirtioDevice>(m: &Mutex<MmioTransport<D>>) -> MutexGuard<'_, MmioTransport<D>> {
    // A panic while holding it ends the worker; the state is still the
    // device's, so go on with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: VirtioDevice + Send + 'static> Worked<D> {
    /// Serves `t` on a thread called `name`, run where `placement` puts
    /// helpers.
    pub(crate) fn start(
        t: MmioTransport<D>,
        mem: GuestMemoryMmap,
        name: &str,
        placement: &Placement,
    ) -> std::io::Result<Worked<D>> {
        let mut w = Worked {
            shared: Arc::new(Mutex::new(t)),
            ready: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            nudge: EventFd::new(EFD_NONBLOCK)?,
            stop: EventFd::new(EFD_NONBLOCK)?,
            thread: None,
            name: name.into(),
            placement: placement.clone(),
        };
        w.spawn(mem)?;
        Ok(w)
    }

    /// The worker thread, serving guest RAM `mem`.
    fn spawn(&mut self, mem: GuestMemoryMmap) -> std::io::Result<()> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            self.stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            self.nudge.as_raw_fd(),
            EpollEvent::new(EventSet::IN, NUDGE),
        )?;
        if let Some(fd) = lock(&self.shared).wait_fd() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, DEVICE),
            )?;
        }
        let worker = Worker {
            shared: self.shared.clone(),
            mem,
            ready: self.ready.clone(),
            nudge: self.nudge.try_clone()?,
            epoll,
        };
        let placement = self.placement.clone();
        self.thread = Some(std::thread::Builder::new().name(self.name.clone()).spawn(
            move || {
                placement.enter_helper();
                worker.run()
            },
        )?);
        Ok(())
    }

    /// Ends the worker thread (and with it its hold on guest RAM).
    fn halt(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = t.join();
            // Read back, so that a later worker does not stop at once.
            let _ = self.stop.read();
        }
    }
}

impl<D: VirtioDevice + Send + 'static> Drop for Worked<D> {
    fn drop(&mut self) {
        self.halt();
    }
}

impl<D: VirtioDevice + Send + 'static> BusDevice for Worked<D> {
    fn read(&mut self, ctx: &mut Ctx, offset: u64, data: &mut [u8]) {
        lock(&self.shared).read(ctx, offset, data)
    }

    fn write(&mut self, ctx: &mut Ctx, offset: u64, data: &[u8]) -> Action {
        let action = lock(&self.shared).write(ctx, offset, data);
        // A notify pumps here, on the vCPU thread.
        let _ = self.nudge.write(1);
        action
    }
}

impl<D: VirtioDevice + Send + 'static> Poll for Worked<D> {
    /// `hc::WAIT`: a notify of every queue (the guest's deferred frames
    /// go out), and whatever the worker delivered since the last wait.
    fn poll(&mut self, mem: &GuestMemoryMmap) -> bool {
        let delivered = self.ready.read().is_ok();
        let now = lock(&self.shared).poll(mem);
        let _ = self.nudge.write(1);
        now || delivered
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.ready.as_raw_fd())
    }

    /// The worker keeps the device's timers.
    fn poll_delay(&mut self) -> Option<Duration> {
        None
    }

    fn unsaved_state(&self) -> Option<&'static str> {
        lock(&self.shared).unsaved_state()
    }

    /// The worker ends; the transport and its device stay as they are.
    fn park(&mut self) {
        self.halt();
    }

    fn unpark(&mut self, mem: &GuestMemoryMmap) -> std::io::Result<()> {
        if self.thread.is_none() {
            self.spawn(mem.clone())?;
        }
        Ok(())
    }
}

struct Worker<D: VirtioDevice> {
    shared: Arc<Mutex<MmioTransport<D>>>,
    mem: GuestMemoryMmap,
    ready: Arc<EventFd>,
    nudge: EventFd,
    epoll: Epoll,
}

impl<D: VirtioDevice> Worker<D> {
    fn run(self) {
        let mut events = [EpollEvent::default(); 4];
        loop {
            let delay = lock(&self.shared).poll_delay().map(|d| d.max(MIN_DELAY));
            let ms = delay.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
            let n = self.epoll.wait(ms, &mut events).unwrap_or(0);
            if events[..n].iter().any(|e| e.data() == STOP) {
                return;
            }
            if events[..n].iter().any(|e| e.data() == NUDGE) {
                let _ = self.nudge.read();
            }
            if self.serve() {
                self.spin();
                // Requests that came while the device said it was looking
                // (and so were not notified) keep it looking.
                while lock(&self.shared).settle(&self.mem) {
                    self.spin();
                }
            }
        }
    }

    /// One pump; tells a waiting vCPU when the guest got frames. True if
    /// anything moved.
    fn serve(&self) -> bool {
        let mut t = lock(&self.shared);
        let delivered = t.poll(&self.mem);
        let moved = delivered || t.take_moved();
        drop(t);
        if delivered {
            let _ = self.ready.write(1);
        }
        moved
    }

    /// Keeps pumping while frames keep moving, up to [`SPIN`] after the
    /// last that did (yielding the CPU between looks).
    fn spin(&self) {
        let mut last = Instant::now();
        while last.elapsed() < SPIN {
            if self.stop_requested() {
                return;
            }
            std::thread::yield_now();
            if self.serve() {
                last = Instant::now();
            }
        }
    }

    fn stop_requested(&self) -> bool {
        let mut events = [EpollEvent::default(); 4];
        let n = self.epoll.wait(0, &mut events).unwrap_or(0);
        // The stop event stays readable (nobody reads it).
        events[..n].iter().any(|e| e.data() == STOP)
    }
}
