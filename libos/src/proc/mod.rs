//! Processes: the program loaded once per process, each copy at a base of
//! its own in one address space (docs/ARCHITECTURE.md §3, processes).

pub mod program;
#[cfg(not(test))]
pub mod slot;
