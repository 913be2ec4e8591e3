//! Signal dispositions and masks, and signals a process sends itself.
//!
//! There is one process and no preemption yet, so a signal is delivered
//! synchronously: kill(getpid(), sig) calls the handler before returning.

use super::{Errno, Result};
use crate::arch::{cpu, uaccess};
use spin::Mutex;

const NSIG: usize = 65;
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SA_SIGINFO: u64 = 4;
const SA_RESETHAND: u64 = 0x8000_0000;
const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;

/// The kernel's `struct k_sigaction`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct KSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

struct Signals {
    actions: [KSigaction; NSIG],
    mask: u64,
}

static SIGNALS: Mutex<Signals> = Mutex::new(Signals {
    actions: [KSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; NSIG],
    mask: 0,
});

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
        st.actions[s] = a;
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
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        st.mask = match how {
            0 => st.mask | v,
            1 => st.mask & !v,
            2 => v,
            _ => return Err(Errno::EINVAL),
        } & !unblockable;
    }
    Ok(0)
}

/// Signals whose default action is to do nothing.
fn ignored_by_default(sig: u64) -> bool {
    matches!(sig, 17 | 23 | 28) // SIGCHLD, SIGURG, SIGWINCH
}

pub fn kill(pid: i64, sig: u64) -> Result {
    if pid != super::ids::PID as i64 && pid != 0 && pid != -1 {
        return Err(Errno::ESRCH);
    }
    if sig == 0 {
        return Ok(0);
    }
    let s = valid(sig)?;
    let action = {
        let mut st = SIGNALS.lock();
        if st.mask & (1 << (s - 1)) != 0 && sig != SIGKILL {
            // Blocked: a pending-signal set comes with asynchronous delivery.
            return Ok(0);
        }
        let a = st.actions[s];
        if a.flags & SA_RESETHAND != 0 {
            st.actions[s].handler = SIG_DFL;
        }
        a
    };
    match action.handler {
        SIG_IGN => Ok(0),
        SIG_DFL if ignored_by_default(sig) => Ok(0),
        SIG_DFL => {
            crate::log!("libos: terminated by signal {sig}");
            crate::platform::exit(128 + sig as u8)
        }
        handler => {
            cpu::call_signal_handler(handler, sig, action.flags & SA_SIGINFO != 0);
            Ok(0)
        }
    }
}
