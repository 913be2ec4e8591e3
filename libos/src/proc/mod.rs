//! Processes: the program loaded once per process, each copy at a base of
//! its own in one address space (docs/ARCHITECTURE.md §3, processes).

pub mod owned;
#[cfg(not(test))]
mod process;
pub mod program;
#[cfg(not(test))]
pub mod slot;

#[cfg(not(test))]
pub use process::*;

/// Host unit tests run one "process": the table's operations reduce to
/// what a lone process sees.
#[cfg(test)]
mod lone {
    use crate::syscall::{Errno, Result};
    pub fn own(_: u64, _: u64) {}
    pub fn disown(_: u64, _: u64) {}
    pub fn pid() -> u32 {
        1
    }
    pub fn alone() -> bool {
        true
    }
    pub fn idle(until: u64) {
        crate::net::stack::idle_until(until)
    }
    pub fn kill(pid: i64, sig: u64) -> Result {
        if pid != 1 && pid != 0 && pid != -1 {
            return Err(Errno::ESRCH);
        }
        if sig != 0 {
            crate::syscall::signal::raise(sig);
        }
        Ok(0)
    }
    pub fn set_pdeath_signal(_: u64) {}
    pub struct ClientWait;
    pub fn client_wait(_: bool, _: bool) -> ClientWait {
        ClientWait
    }
    pub fn busy_sessions() -> u32 {
        0
    }
    pub fn host_signals(_: u32) {}
    pub fn pdeath_signal() -> u64 {
        0
    }
    pub fn exit_by_signal(sig: u64) -> ! {
        panic!("terminated by signal {sig}")
    }
    /// A lone process has had the CPU all along.
    pub fn cpu_ns(_children: bool) -> u64 {
        crate::time::monotonic_ns()
    }
}
#[cfg(test)]
pub use lone::*;
