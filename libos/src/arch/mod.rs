//! The libOS's hardware layer: the only module with `unsafe`.
//!
//! Everything above it (system calls, memory bookkeeping, time, console) is
//! safe Rust that goes through the small functions here: port I/O, CPU
//! instructions, the boot structures defined in `boot.s`, and access to the
//! program's memory through raw addresses it hands us.

pub mod cpu;
pub mod heap;
pub mod image;
pub mod uaccess;

core::arch::global_asm!(include_str!("boot.s"), options(att_syntax));
