//! Signals: dispositions, the mask, pending signals, the real-time interval
//! timer (setitimer/alarm) and signalfd.
//!
//! Each process has its own (proc swaps the running one's in and out at a
//! process switch, and raises signals in one that is not running with
//! `Signals::raise`). There is no preemption, so a signal is delivered where
//! the kernel would deliver it on its way back to user space: when the
//! program makes a system call (`deliver_pending`, called after each one).
//! A signal the program sends itself, or that a system call raises (SIGPIPE),
//! is thus handled as that call returns, as Linux does for synchronous
//! signals. A blocked signal stays pending until it is unblocked or read
//! from a signalfd.

use super::clock::Timeval;
use super::{Errno, Result};
use crate::arch::{cpu, uaccess};
use spin::Mutex;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const NSIG: usize = 65;
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SA_SIGINFO: u64 = 4;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SIGKILL: u64 = 9;
const SIGALRM: u64 = 14;
const SIGSTOP: u64 = 19;
const ITIMER_REAL: u64 = 0;

/// The kernel's `struct k_sigaction`.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct KSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

pub struct Signals {
    actions: [KSigaction; NSIG],
    mask: u64,
    pending: u64,
    /// ITIMER_REAL: when it next fires (monotonic ns; 0 = disarmed) and
    /// its interval.
    alarm_at: u64,
    alarm_every: u64,
}

static SIGNALS: Mutex<Signals> = Mutex::new(Signals::new());

impl Signals {
    pub const fn new() -> Signals {
        Signals {
            actions: [KSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            }; NSIG],
            mask: 0,
            pending: 0,
            alarm_at: 0,
            alarm_every: 0,
        }
    }

    /// rt_sigaction's change: SIGKILL and SIGSTOP keep theirs.
    fn set_action(&mut self, sig: u64, a: KSigaction) -> core::result::Result<(), Errno> {
        let s = valid(sig)?;
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(Errno::EINVAL);
        }
        self.actions[s] = a;
        // Setting a signal to be ignored discards it if pending (POSIX).
        if discards(&a, sig) {
            self.pending &= !bit(sig);
        }
        Ok(())
    }

    /// rt_sigprocmask's change (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK).
    fn change_mask(&mut self, how: u64, v: u64) -> core::result::Result<(), Errno> {
        self.mask = match how {
            0 => self.mask | v,
            1 => self.mask & !v,
            2 => v,
            _ => return Err(Errno::EINVAL),
        } & !UNBLOCKABLE;
        Ok(())
    }

    /// What a new process starts with (clone): the same dispositions and
    /// mask, nothing pending, no timer.
    pub fn for_child(&self) -> Signals {
        Signals {
            actions: self.actions,
            mask: self.mask,
            ..Signals::new()
        }
    }

    /// Whether exited children are reaped at once (SIGCHLD ignored, or
    /// SA_NOCLDWAIT): nobody will wait for them.
    pub fn ignores_children(&self) -> bool {
        const SA_NOCLDWAIT: u64 = 2;
        let a = self.actions[17];
        a.handler == SIG_IGN || a.flags & SA_NOCLDWAIT != 0
    }

    /// See `raise`.
    pub fn raise(&mut self, sig: u64) {
        let a = self.actions[sig as usize];
        let blocked = self.mask & bit(sig) != 0;
        if !blocked && discards(&a, sig) {
            return;
        }
        self.pending |= bit(sig);
    }
}

fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// SIGKILL and SIGSTOP: never blocked, caught or read from a signalfd.
pub const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

fn valid(sig: u64) -> core::result::Result<usize, Errno> {
    if (1..NSIG as u64).contains(&sig) {
        Ok(sig as usize)
    } else {
        Err(Errno::EINVAL)
    }
}

pub fn rt_sigaction(sig: u64, act: u64, old: u64, size: u64) -> Result {
    let s = valid(sig)?;
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if act != 0 {
        Some(uaccess::read::<KSigaction>(act)?)
    } else {
        None
    };
    if new.is_some() && (sig == SIGKILL || sig == SIGSTOP) {
        return Err(Errno::EINVAL);
    }
    let mut st = SIGNALS.lock();
    if old != 0 {
        uaccess::write(old, &st.actions[s])?;
    }
    if let Some(a) = new {
        st.set_action(sig, a)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(how: u64, set: u64, old: u64, size: u64) -> Result {
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let mut st = SIGNALS.lock();
    if old != 0 {
        uaccess::write(old, &st.mask)?;
    }
    if set != 0 {
        let v = uaccess::read::<u64>(set)?;
        st.change_mask(how, v)?;
    }
    // Whatever became unblocked is delivered on the way out (see mod.rs).
    Ok(0)
}

/// Install `mask` (ppoll and friends), returning the one it replaces.
pub fn swap_mask(mask: u64) -> u64 {
    let mut st = SIGNALS.lock();
    core::mem::replace(&mut st.mask, mask & !UNBLOCKABLE)
}

pub fn rt_sigpending(set: u64, size: u64) -> Result {
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let st = SIGNALS.lock();
    uaccess::write(set, &(st.pending & st.mask))?;
    Ok(0)
}

/// Signals whose default action is to do nothing.
fn ignored_by_default(sig: u64) -> bool {
    matches!(sig, 17 | 23 | 28) // SIGCHLD, SIGURG, SIGWINCH
}

/// Whether action `a` throws `sig` away instead of acting on it.
fn discards(a: &KSigaction, sig: u64) -> bool {
    a.handler == SIG_IGN || (a.handler == SIG_DFL && ignored_by_default(sig))
}

/// The running process's signal state and another's trade places (proc: a
/// process switch).
pub fn swap_current(other: &mut Signals) {
    core::mem::swap(&mut *SIGNALS.lock(), other);
}

/// A new process's signal state (clone), from the running process's.
pub fn for_child() -> Signals {
    SIGNALS.lock().for_child()
}

/// execve: caught signals go back to their default action (ignored ones
/// stay ignored); the mask and what is pending stay, as on Linux.
pub fn reset_for_exec() {
    let mut st = SIGNALS.lock();
    for a in st.actions.iter_mut() {
        if a.handler > SIG_IGN {
            *a = KSigaction::default();
        }
    }
    st.alarm_at = 0;
    st.alarm_every = 0;
}

/// Send `sig` to ourselves. It only becomes pending: a handler must not run
/// in the middle of the system call that raised it (a handler may make
/// system calls of its own), so it is acted on as that call returns.
pub fn raise(sig: u64) {
    SIGNALS.lock().raise(sig);
}

pub fn kill(pid: i64, sig: u64) -> Result {
    if sig != 0 {
        valid(sig)?;
    }
    crate::proc::kill(pid, sig)
}

/// The signal state, with an expired interval timer already turned into a
/// pending SIGALRM: one lock for both.
fn current() -> spin::MutexGuard<'static, Signals> {
    let mut st = SIGNALS.lock();
    fire_alarm(&mut st);
    st
}

/// The lowest pending signal in `set`, taken off the pending set.
fn take_lowest(st: &mut Signals, set: u64) -> Option<u64> {
    let ready = st.pending & set;
    if ready == 0 {
        return None;
    }
    let sig = ready.trailing_zeros() as u64 + 1;
    st.pending &= !bit(sig);
    Some(sig)
}

/// The lowest pending, unblocked signal, taken off the pending set, with
/// its action and the mask to restore after its handler.
fn take_deliverable(st: &mut Signals) -> Option<(u64, KSigaction, u64)> {
    let unblocked = !st.mask;
    let sig = take_lowest(st, unblocked)?;
    let a = st.actions[sig as usize];
    if a.flags & SA_RESETHAND != 0 {
        st.actions[sig as usize].handler = SIG_DFL;
    }
    let saved = st.mask;
    if a.handler > SIG_IGN {
        let own = if a.flags & SA_NODEFER != 0 {
            0
        } else {
            bit(sig)
        };
        st.mask |= (a.mask | own) & !UNBLOCKABLE;
    }
    Some((sig, a, saved))
}

/// Fire the interval timer if due, then run every deliverable signal.
/// This runs after every system call, so the common case (nothing pending
/// or due) costs one lock.
pub fn deliver_pending() {
    let mut st = current();
    while let Some((sig, action, saved_mask)) = take_deliverable(&mut st) {
        match action.handler {
            _ if discards(&action, sig) => {}
            SIG_DFL => {
                drop(st);
                crate::proc::exit_by_signal(sig)
            }
            handler => {
                // The handler may make system calls, which take the lock.
                drop(st);
                cpu::call_signal_handler(handler, sig, action.flags & SA_SIGINFO != 0);
                st = SIGNALS.lock();
                // sigreturn restores the mask the handler interrupted.
                st.mask = saved_mask;
            }
        }
    }
}

/// ITIMER_REAL expired: SIGALRM becomes pending, the timer re-arms.
fn fire_alarm(st: &mut Signals) {
    if st.alarm_at != 0 && crate::time::monotonic_ns() >= st.alarm_at {
        st.alarm_at = match st.alarm_every {
            0 => 0,
            every => crate::time::monotonic_ns().saturating_add(every),
        };
        st.pending |= bit(SIGALRM);
    }
}

/// When the interval timer next fires (monotonic ns), if armed: sleeps
/// must not outlast it.
pub fn next_alarm() -> Option<u64> {
    let st = SIGNALS.lock();
    (st.alarm_at != 0).then_some(st.alarm_at)
}

/// Whether a signal is waiting to be handled (a sleep ends early, EINTR).
pub fn interrupt_pending() -> bool {
    let st = current();
    st.pending & !st.mask != 0
}

#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct Itimerval {
    interval: Timeval,
    value: Timeval,
}

fn current_timer(st: &Signals) -> Itimerval {
    let left = if st.alarm_at == 0 {
        0
    } else {
        // An armed timer never reads as zero left (that means disarmed).
        st.alarm_at
            .saturating_sub(crate::time::monotonic_ns())
            .max(1000)
    };
    Itimerval {
        interval: Timeval::from_ns(st.alarm_every),
        value: Timeval::from_ns(left),
    }
}

pub fn getitimer(which: u64, cur: u64) -> Result {
    if which != ITIMER_REAL {
        return Err(Errno::EINVAL);
    }
    let v = current_timer(&current());
    uaccess::write(cur, &v)?;
    Ok(0)
}

pub fn setitimer(which: u64, new: u64, old: u64) -> Result {
    if which != ITIMER_REAL {
        // ITIMER_VIRTUAL / ITIMER_PROF measure CPU time, which nothing here
        // accounts; refusing beats a timer that silently never fires.
        return Err(Errno::EINVAL);
    }
    let v: Itimerval = if new != 0 {
        uaccess::read(new)?
    } else {
        Itimerval::default()
    };
    let (value, every) = (v.value.to_ns()?, v.interval.to_ns()?);
    // A timer already due has fired (SIGALRM pending) before it is replaced,
    // as the kernel's would have.
    let mut st = current();
    if old != 0 {
        uaccess::write(old, &current_timer(&st))?;
    }
    // A value too large to add stays armed for ever rather than wrapping
    // into the past and firing at once.
    st.alarm_at = if value == 0 {
        0
    } else {
        crate::time::monotonic_ns().saturating_add(value)
    };
    st.alarm_every = every;
    Ok(0)
}

pub fn alarm(secs: u64) -> Result {
    // The argument is an unsigned int: the kernel never sees the high bits.
    let secs = u64::from(secs as u32);
    let mut st = current();
    let was_armed = st.alarm_at != 0;
    let left = current_timer(&st).value;
    st.alarm_at = if secs == 0 {
        0
    } else {
        crate::time::monotonic_ns().saturating_add(secs * 1_000_000_000)
    };
    st.alarm_every = 0;
    Ok(alarm_left(was_armed, left))
}

/// As Linux: what was left, to the nearest second but never 0 while the
/// old alarm was armed (0 means there was none).
fn alarm_left(was_armed: bool, left: Timeval) -> i64 {
    if was_armed {
        (left.sec + i64::from(left.usec >= 500_000)).max(1)
    } else {
        0
    }
}

/// Signals in `mask` that are pending: what a signalfd would read.
pub fn signalfd_ready(mask: u64) -> u64 {
    current().pending & mask
}

/// Take the lowest signal a signalfd with `mask` may read.
pub fn signalfd_take(mask: u64) -> Option<u64> {
    take_lowest(&mut current(), mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGINT: u64 = 2;
    const SIGUSR1: u64 = 10;
    const SIGTERM: u64 = 15;
    const SIGCHLD: u64 = 17;

    fn handler(h: u64, flags: u64, mask: u64) -> KSigaction {
        KSigaction {
            handler: h,
            flags,
            restorer: 0,
            mask,
        }
    }

    #[test]
    fn sigprocmask_block_unblock_setmask_and_the_unblockable() {
        let mut st = Signals::new();
        st.change_mask(0, bit(SIGINT) | bit(SIGKILL) | bit(SIGSTOP))
            .unwrap();
        // SIGKILL and SIGSTOP are silently left out, as Linux does.
        assert_eq!(st.mask, bit(SIGINT));
        st.change_mask(0, bit(SIGTERM)).unwrap();
        st.change_mask(1, bit(SIGINT)).unwrap();
        assert_eq!(st.mask, bit(SIGTERM));
        st.change_mask(2, bit(SIGUSR1)).unwrap();
        assert_eq!(st.mask, bit(SIGUSR1));
        assert_eq!(st.change_mask(3, 0), Err(Errno::EINVAL));
        assert_eq!(st.mask, bit(SIGUSR1));
    }

    #[test]
    fn signal_numbers_are_1_to_64() {
        assert_eq!(valid(0), Err(Errno::EINVAL));
        assert_eq!(valid(1), Ok(1));
        assert_eq!(valid(64), Ok(64));
        assert_eq!(valid(65), Err(Errno::EINVAL));
        assert_eq!(bit(1), 1);
        assert_eq!(bit(64), 1 << 63);
    }

    #[test]
    fn sigkill_and_sigstop_cannot_be_caught() {
        let mut st = Signals::new();
        assert_eq!(
            st.set_action(SIGKILL, handler(SIG_IGN, 0, 0)),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            st.set_action(SIGSTOP, handler(0x1000, 0, 0)),
            Err(Errno::EINVAL)
        );
        assert_eq!(st.set_action(0, handler(SIG_IGN, 0, 0)), Err(Errno::EINVAL));
        assert_eq!(st.actions[SIGKILL as usize].handler, SIG_DFL);
    }

    #[test]
    fn ignored_signals_are_discarded_unless_blocked() {
        let mut st = Signals::new();
        // SIGCHLD's default action is to ignore it.
        st.raise(SIGCHLD);
        assert_eq!(st.pending, 0);
        st.set_action(SIGUSR1, handler(SIG_IGN, 0, 0)).unwrap();
        st.raise(SIGUSR1);
        assert_eq!(st.pending, 0);
        // Blocked, it stays pending: the action may change before it is
        // unblocked (Linux's sig_ignored).
        st.change_mask(0, bit(SIGUSR1)).unwrap();
        st.raise(SIGUSR1);
        assert_eq!(st.pending, bit(SIGUSR1));
        // Setting SIG_IGN discards a pending signal (POSIX).
        st.set_action(SIGUSR1, handler(SIG_IGN, 0, 0)).unwrap();
        assert_eq!(st.pending, 0);
    }

    #[test]
    fn delivery_takes_the_lowest_unblocked_signal_first() {
        let mut st = Signals::new();
        st.raise(SIGTERM);
        st.raise(SIGINT);
        st.raise(SIGUSR1);
        st.change_mask(0, bit(SIGINT)).unwrap();
        let (sig, a, _) = take_deliverable(&mut st).unwrap();
        assert_eq!((sig, a.handler), (SIGUSR1, SIG_DFL));
        assert_eq!(take_deliverable(&mut st).unwrap().0, SIGTERM);
        // SIGINT is blocked: it waits.
        assert!(take_deliverable(&mut st).is_none());
        assert_eq!(st.pending, bit(SIGINT));
        // A signalfd for SIGINT reads it although it is blocked.
        assert_eq!(take_lowest(&mut st, bit(SIGINT)), Some(SIGINT));
        assert_eq!(st.pending, 0);
    }

    #[test]
    fn a_handler_runs_with_its_mask_and_its_own_signal_blocked() {
        let mut st = Signals::new();
        st.change_mask(2, bit(SIGCHLD)).unwrap();
        st.set_action(SIGUSR1, handler(0x1000, 0, bit(SIGTERM) | bit(SIGKILL)))
            .unwrap();
        st.raise(SIGUSR1);
        let (sig, _, saved) = take_deliverable(&mut st).unwrap();
        assert_eq!(sig, SIGUSR1);
        // Restored after the handler (sigreturn).
        assert_eq!(saved, bit(SIGCHLD));
        // sa_mask and the signal itself, never SIGKILL.
        assert_eq!(st.mask, bit(SIGCHLD) | bit(SIGTERM) | bit(SIGUSR1));
    }

    #[test]
    fn sa_nodefer_and_sa_resethand() {
        let mut st = Signals::new();
        st.set_action(SIGUSR1, handler(0x1000, SA_NODEFER | SA_RESETHAND, 0))
            .unwrap();
        st.raise(SIGUSR1);
        let (_, a, _) = take_deliverable(&mut st).unwrap();
        // This delivery still uses the handler...
        assert_eq!(a.handler, 0x1000);
        // ...without blocking its own signal, and the next one gets SIG_DFL.
        assert_eq!(st.mask, 0);
        assert_eq!(st.actions[SIGUSR1 as usize].handler, SIG_DFL);
    }

    #[test]
    fn an_expired_interval_timer_makes_sigalrm_pending_and_rearms() {
        let mut st = Signals::new();
        st.alarm_at = 1; // long past
        st.alarm_every = 5_000_000_000;
        fire_alarm(&mut st);
        assert_eq!(st.pending, bit(SIGALRM));
        assert!(st.alarm_at > crate::time::monotonic_ns());
        // One-shot: disarmed after firing.
        let mut st = Signals::new();
        st.alarm_at = 1;
        fire_alarm(&mut st);
        assert_eq!((st.pending, st.alarm_at), (bit(SIGALRM), 0));
        // Not due yet: nothing.
        let mut st = Signals::new();
        st.alarm_at = u64::MAX;
        fire_alarm(&mut st);
        assert_eq!(st.pending, 0);
    }

    #[test]
    fn getitimer_of_an_armed_timer_never_reads_zero() {
        let mut st = Signals::new();
        assert_eq!(current_timer(&st).value.usec, 0);
        st.alarm_at = 1;
        let t = current_timer(&st);
        assert_eq!((t.value.sec, t.value.usec), (0, 1));
        st.alarm_at = crate::time::monotonic_ns() + 2_500_000_000;
        st.alarm_every = 1_500_000;
        let t = current_timer(&st);
        assert_eq!(t.value.sec, 2);
        assert_eq!((t.interval.sec, t.interval.usec), (0, 1_500));
    }

    #[test]
    fn alarm_returns_the_seconds_left_rounded_like_linux() {
        let tv = |sec, usec| Timeval { sec, usec };
        assert_eq!(alarm_left(false, tv(0, 0)), 0);
        assert_eq!(alarm_left(true, tv(2, 499_999)), 2);
        assert_eq!(alarm_left(true, tv(2, 500_000)), 3);
        // Armed with less than a second left: 1, never 0.
        assert_eq!(alarm_left(true, tv(0, 1)), 1);
    }
}
