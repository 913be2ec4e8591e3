//! Tfsync on threads of their own, so that the device answers other
//! requests (and the guest runs other processes) while the host's disk
//! syncs a file. Why: a sync waits for the disk, 0.1–100 ms on this host
//! when it is busy; served in line, one backend's WAL fdatasync or the
//! checkpointer's fsync held every request behind it, and with it every
//! process of the guest (issue 13's TPC-B, docs/ARCHITECTURE.md §4
//! "Volume"). The guest's driver sends fsyncs in slots of their own and
//! the device answers them out of order (virtio allows any order).
//!
//! A few threads take jobs from one queue; each job carries a `ticket`
//! (the device's note of where the answer goes) and its own fd (a dup,
//! so a Tclunk meanwhile does not close it under the sync). Finished
//! jobs wait in a list until the device takes them; [`Syncer::event`]
//! is readable then (the worker thread and `hc::WAIT` wait on it).

use crate::placement::Placement;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::io::Errno;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Syncs at once: PostgreSQL's WAL flush and the checkpointer's file
/// syncs, with room for a few backends' own.
const THREADS: usize = 4;

struct Job<T> {
    fd: OwnedFd,
    datasync: bool,
    ticket: T,
}

type Finished<T> = Arc<Mutex<Vec<(T, Result<(), Errno>)>>>;

pub(crate) struct Syncer<T: Send + 'static> {
    jobs: Option<Sender<Job<T>>>,
    finished: Finished<T>,
    event: Arc<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Syncer<T> {
    pub(crate) fn new(placement: &Placement) -> std::io::Result<Syncer<T>> {
        let (tx, rx) = channel::<Job<T>>();
        let rx = Arc::new(Mutex::new(rx));
        let finished: Finished<T> = Arc::new(Mutex::new(Vec::new()));
        let event = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let threads = (0..THREADS)
            .map(|i| {
                let (rx, finished, event) = (rx.clone(), finished.clone(), event.clone());
                let placement = placement.clone();
                std::thread::Builder::new()
                    .name(format!("p9-sync-{i}"))
                    .spawn(move || {
                        placement.enter_helper();
                        run(&rx, &finished, &event)
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Syncer {
            jobs: Some(tx),
            finished,
            event,
            threads,
        })
    }

    /// Syncs `fd`; its result comes back with `ticket` from [`Self::take`].
    pub(crate) fn submit(&self, fd: OwnedFd, datasync: bool, ticket: T) {
        let job = Job {
            fd,
            datasync,
            ticket,
        };
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        if let Some(Err(e)) = sent {
            // Every thread is gone (one panicked): sync here rather than lose it.
            let job = e.0;
            let r = super::sync(&job.fd, job.datasync);
            finish(&self.finished, &self.event, job.ticket, r);
        }
    }

    /// The syncs that finished since last asked.
    pub(crate) fn take(&self) -> Vec<(T, Result<(), Errno>)> {
        let _ = self.event.read();
        std::mem::take(&mut *lock(&self.finished))
    }

    /// Readable while finished syncs wait to be taken.
    pub(crate) fn event(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

impl<T: Send + 'static> Drop for Syncer<T> {
    /// The threads end once the queue is empty: syncs already asked for
    /// still reach the disk.
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run<T>(jobs: &Mutex<Receiver<Job<T>>>, finished: &Finished<T>, event: &EventFd) {
    loop {
        let job = match lock(jobs).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let r = super::sync(&job.fd, job.datasync);
        finish(finished, event, job.ticket, r);
    }
}

fn finish<T>(finished: &Finished<T>, event: &EventFd, ticket: T, r: Result<(), Errno>) {
    lock(finished).push((ticket, r));
    let _ = event.write(1);
}
