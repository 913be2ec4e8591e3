//! The libOS's hardware layer: the only module with `unsafe`.
//!
//! Everything above it (system calls, memory bookkeeping, time, console) is
//! safe Rust that goes through the small functions here: port I/O, CPU
//! instructions, the boot structures defined in `boot.s`, and access to the
//! program's memory through raw addresses it hands us.

pub mod cpu;
#[cfg(not(test))]
pub mod heap;
#[cfg(not(test))]
pub mod image;
#[cfg(not(test))]
pub mod paging;
#[cfg(not(test))]
pub mod switch;
pub mod uaccess;
// Built for tests too: fs::p9's driver is compiled there (never run).
pub mod virtio;

// Host unit tests (see lib.rs) have no boot code, no image linker symbols
// and std's allocator: `heap` and `image` are left out; `cpu` and
// `uaccess` build as they are (the tests never run the privileged parts).
#[cfg(not(test))]
core::arch::global_asm!(include_str!("boot.s"), options(att_syntax));
