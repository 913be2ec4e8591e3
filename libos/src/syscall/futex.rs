//! futex(2) across processes in one address space: a waiter looks at its
//! futex word again whenever the scheduler lets it look (after any other
//! process's system call, or its timeout), so a change made by another
//! process (PostgreSQL's semaphores live in shared memory: sem_post in one
//! backend, sem_wait in another) ends the wait without a wake list; a wake
//! therefore has nobody to count and returns 0. The word check keeps
//! lost-wakeup races correct: a word already changed never waits.

use super::{Errno, Result};
use crate::arch::uaccess;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_CLOCK_REALTIME: u64 = 256;

pub fn futex(addr: u64, op: u64, val: u64, timeout: u64) -> Result {
    if !addr.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    match op & FUTEX_CMD_MASK {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let word: u32 = uaccess::read(addr)?;
            if word != val as u32 {
                return Err(Errno::EAGAIN);
            }
            let ts = if timeout == 0 {
                None
            } else {
                Some(uaccess::read::<super::clock::Timespec>(timeout)?.to_ns()?)
            };
            // FUTEX_WAIT's timeout is relative; WAIT_BITSET's is absolute.
            let rel = match (op & FUTEX_CMD_MASK, ts) {
                (FUTEX_WAIT_BITSET, Some(abs)) => {
                    let now = if op & FUTEX_CLOCK_REALTIME != 0 {
                        crate::time::realtime_ns()
                    } else {
                        crate::time::monotonic_ns()
                    };
                    Some(abs.saturating_sub(now))
                }
                (_, t) => t,
            };
            match super::poll::wait_for(rel, || {
                let now: u32 = uaccess::read(addr)?;
                Ok(i64::from(now != val as u32))
            }) {
                Ok(0) => Err(Errno::ETIMEDOUT),
                Ok(_) => Ok(0),
                Err(e) => Err(e),
            }
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_REQUEUE | FUTEX_CMP_REQUEUE | FUTEX_WAKE_OP => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}
