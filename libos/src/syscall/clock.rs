//! clock_gettime and friends, from kvmclock (see crate::time).

use super::{Errno, Result};
use crate::arch::uaccess;
use crate::time;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;
const TIMER_ABSTIME: u64 = 1;

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

impl Timespec {
    fn from_ns(ns: u64) -> Timespec {
        Timespec {
            sec: (ns / 1_000_000_000) as i64,
            nsec: (ns % 1_000_000_000) as i64,
        }
    }
    pub fn to_ns(self) -> core::result::Result<u64, Errno> {
        if self.sec < 0 || !(0..1_000_000_000).contains(&self.nsec) {
            return Err(Errno::EINVAL);
        }
        Ok((self.sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(self.nsec as u64))
    }
}

/// The kernel's `struct timeval` (gettimeofday, setitimer, select).
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
pub struct Timeval {
    pub sec: i64,
    pub usec: i64,
}

impl Timeval {
    pub fn from_ns(ns: u64) -> Timeval {
        Timeval {
            sec: (ns / 1_000_000_000) as i64,
            usec: ((ns % 1_000_000_000) / 1000) as i64,
        }
    }

    pub fn to_ns(self) -> core::result::Result<u64, Errno> {
        if self.sec < 0 || !(0..1_000_000).contains(&self.usec) {
            return Err(Errno::EINVAL);
        }
        Ok((self.sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(self.usec as u64 * 1000))
    }
}

/// A process's CPU clocks are its own CPU time (proc::cpu_ns: one vCPU
/// runs one process at a time; a process has one thread).
fn now(clock: u64) -> core::result::Result<u64, Errno> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Ok(time::realtime_ns()),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
            Ok(time::monotonic_ns())
        }
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Ok(crate::proc::cpu_ns(false)),
        _ => Err(Errno::EINVAL),
    }
}

pub fn clock_gettime(clock: u64, ts: u64) -> Result {
    uaccess::write(ts, &Timespec::from_ns(now(clock)?))?;
    Ok(0)
}

pub fn clock_getres(clock: u64, ts: u64) -> Result {
    now(clock)?;
    if ts != 0 {
        uaccess::write(ts, &Timespec { sec: 0, nsec: 1 })?;
    }
    Ok(0)
}

pub fn gettimeofday(tv: u64) -> Result {
    if tv != 0 {
        uaccess::write(tv, &Timeval::from_ns(time::realtime_ns()))?;
    }
    Ok(0)
}

pub fn time(t: u64) -> Result {
    let secs = (time::realtime_ns() / 1_000_000_000) as i64;
    if t != 0 {
        uaccess::write(t, &secs)?;
    }
    Ok(secs)
}

pub fn nanosleep(req: u64, rem: u64) -> Result {
    clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem)
}

pub fn clock_nanosleep(clock: u64, flags: u64, req: u64, rem: u64) -> Result {
    // A sleep is wall time; a CPU-time deadline is refused, as Linux does
    // for the thread's clock (the process's would need its CPU to run).
    if matches!(clock, CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID) {
        return Err(Errno::EINVAL);
    }
    let want = uaccess::read::<Timespec>(req)?.to_ns()?;
    let start = now(clock)?;
    let deadline = if flags & TIMER_ABSTIME != 0 {
        want
    } else {
        start.saturating_add(want)
    };
    // Nothing this process does can end the sleep early except a signal
    // (the interval timer): the same wait as poll() with nothing to poll.
    let r = super::poll::wait_for(Some(deadline.saturating_sub(start)), || Ok(0));
    if rem != 0 && flags & TIMER_ABSTIME == 0 {
        let left = match r {
            Err(_) => deadline.saturating_sub(now(clock)?),
            Ok(_) => 0,
        };
        uaccess::write(rem, &Timespec::from_ns(left))?;
    }
    r.map(|_| 0)
}
