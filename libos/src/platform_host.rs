//! The host stand-in for `platform.rs` in unit tests (`cargo test`, see
//! lib.rs): the same functions, on std instead of hypercalls and ports.

use std::io::Write;

#[derive(Clone, Copy)]
pub struct Platform {
    pub mem_bytes: u64,
    pub console_tty: bool,
}

pub fn get() -> &'static Platform {
    static P: Platform = Platform {
        mem_bytes: 1 << 30,
        console_tty: false,
    };
    &P
}

pub fn console_write(bytes: &[u8]) -> usize {
    let _ = std::io::stdout().write_all(bytes);
    bytes.len()
}

/// No console input in a test: end of input.
pub fn console_read(_buf: &mut [u8]) -> usize {
    0
}

pub fn log(bytes: &[u8]) {
    let _ = std::io::stderr().write_all(bytes);
}

pub fn sleep_ns(ns: u64) {
    std::thread::sleep(std::time::Duration::from_nanos(ns));
}

pub fn wait_devices(ns: u64) {
    sleep_ns(ns)
}

/// The VM would stop; a test must not go on either.
pub fn exit(status: u8) -> ! {
    panic!("libos exit({status})")
}

/// Which VMM booted us; host tests stand for "another VMM".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Host {
    Runner,
    Pvh,
}

pub fn host() -> Host {
    Host::Pvh
}

/// No host to give memory back to in the host-side unit tests.
pub fn discard(_at: u64, _len: u64) -> Result<(), crate::syscall::Errno> {
    Err(crate::syscall::Errno::EOPNOTSUPP)
}
