//! What the published ports are doing, as the idle timer of a hibernating
//! VM needs it (`crate::hibernate`): how many client connections are open,
//! since when none is, and when the guest last sent a client bytes. The
//! user-mode backend updates it at the end of every poll, on whichever
//! thread runs it; readers on other threads see plain atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(crate) struct Activity(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    /// Accepted client connections not yet finished (relayed or waiting).
    connections: AtomicUsize,
    /// Since `epoch`, in µs: the last moment a connection was open.
    last_open_us: AtomicU64,
    /// Since `epoch`, in µs: the last time the guest's bytes went out to a
    /// client (0: never).
    last_answer_us: AtomicU64,
    /// Since `epoch`, in µs: the last time bytes moved either way, or a
    /// connection came or went.
    last_traffic_us: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity(Arc::new(Inner {
            epoch: Instant::now(),
            connections: AtomicUsize::new(0),
            last_open_us: AtomicU64::new(0),
            last_answer_us: AtomicU64::new(0),
            last_traffic_us: AtomicU64::new(0),
        }))
    }

    fn now_us(&self) -> u64 {
        self.0.epoch.elapsed().as_micros() as u64
    }

    fn at(&self, us: u64) -> Instant {
        self.0.epoch + Duration::from_micros(us)
    }

    /// `open` connections now; `answered`: the guest's bytes reached a
    /// client in this poll; `traffic`: bytes moved either way, or a
    /// connection was accepted or ended.
    pub(crate) fn update(&self, open: usize, answered: bool, traffic: bool) {
        let was = self.0.connections.swap(open, Ordering::SeqCst);
        let now = self.now_us();
        if open > 0 || was > 0 {
            self.0.last_open_us.store(now, Ordering::SeqCst);
        }
        if answered {
            self.0.last_answer_us.store(now, Ordering::SeqCst);
        }
        if traffic || answered || open != was {
            self.0.last_traffic_us.store(now, Ordering::SeqCst);
        }
    }

    /// How long no byte has moved and no connection came or went.
    pub(crate) fn quiet_for(&self) -> Duration {
        self.quiet_since().elapsed()
    }

    /// Since when no byte has moved and no connection came or went.
    fn quiet_since(&self) -> Instant {
        self.at(self.0.last_traffic_us.load(Ordering::SeqCst))
    }

    pub(crate) fn connections(&self) -> usize {
        self.0.connections.load(Ordering::SeqCst)
    }

    /// How long no connection has been open; `None` while one is.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        self.idle_since().map(|t| t.elapsed())
    }

    /// Since when no connection has been open; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        (self.connections() == 0).then(|| self.at(self.0.last_open_us.load(Ordering::SeqCst)))
    }

    /// The start of the idle time afresh (a VM that just woke is not idle
    /// for the time it slept).
    pub(crate) fn touch(&self) {
        let now = self.now_us();
        self.0.last_open_us.store(now, Ordering::SeqCst);
        self.0.last_traffic_us.store(now, Ordering::SeqCst);
    }

    /// The last time the guest's bytes reached a client, if ever.
    pub(crate) fn last_answer(&self) -> Option<Instant> {
        match self.0.last_answer_us.load(Ordering::SeqCst) {
            0 => None,
            us => Some(self.at(us)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_starts_when_the_last_connection_ends() {
        let a = Activity::new();
        let first = a.idle_since().expect("idle with no connection");
        a.update(2, false, true);
        assert_eq!(a.idle_since(), None, "a connection is open");
        // Apart by more than the microseconds the times are kept in.
        std::thread::sleep(Duration::from_millis(2));
        a.update(0, true, false);
        let closed = a.idle_since().unwrap();
        assert!(closed > first, "idle from the close, not from before");
        assert!(a.last_answer().is_some());
        a.update(0, false, false);
        assert_eq!(a.idle_since(), Some(closed), "an idle poll keeps the start");
        let quiet = a.quiet_since();
        a.update(0, false, false);
        assert_eq!(a.quiet_since(), quiet, "nothing moved");
        std::thread::sleep(Duration::from_millis(2));
        a.update(1, false, false);
        assert!(a.quiet_since() > quiet, "a connection came");
    }
}
