//! pgkraft's library OS: runs one Linux x86-64 program (linked against our
//! patched musl) in a VM, with the program and the libOS both at CPL3 and
//! system calls as plain function calls. See docs/ARCHITECTURE.md §3.
//!
//! Unit tests (`cargo test` in libos/) build this crate as an ordinary host
//! test binary, with std: `cfg(test)` leaves out what only exists inside
//! the VM (boot code, the image's linker symbols, the panic handler, the
//! heap on guest RAM, the entry points) and swaps the platform layer for a
//! host stand-in (`platform_host.rs`). The staticlib is unchanged.
#![cfg_attr(not(test), no_std)]
// `unsafe` lives in arch/ (and the `no_mangle` entry points, marked one by one).
#![deny(unsafe_code)]
// Without the entry points nothing is reachable in a test build.
#![cfg_attr(test, allow(dead_code))]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
mod cmdline;
#[cfg(not(test))]
mod fault;
mod fd;
mod fs;
#[macro_use]
mod log;
mod mem;
mod meminfo;
mod net;
#[cfg_attr(test, path = "platform_host.rs")]
mod platform;
mod proc;
#[cfg(not(test))]
mod start;
mod syscall;
mod time;

mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

#[cfg(not(test))]
use pgkraft_abi::Phase;

/// Both boot paths land here at CPL3: `info` is the BootInfo (kind 0, our
/// runner) or the PVH start info (kind 1).
#[cfg(not(test))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn libos_main(info: u64, kind: u64) -> ! {
    arch::image::fill_idt();
    let p = platform::init(info, kind);
    if !arch::image::entry_table_in_place() {
        log!(
            "libos: the system-call entry table is not at pgkraft_abi::SYSCALL_ENTRY_TABLE (link.ld)"
        );
        platform::exit(EXIT_LIBOS);
    }
    if p.mem_bytes == 0 {
        platform::exit(crate::EXIT_LIBOS);
    }
    arch::uaccess::set_ram_end(p.mem_bytes);
    if !arch::cpu::has_fsgsbase() {
        log!("libos: this CPU lacks FSGSBASE, which pgkraft needs for thread-local storage");
        platform::exit(EXIT_LIBOS);
    }
    mem::init(arch::image::image_end(), p.mem_bytes);
    // A long command line sits in free RAM (past the image): keep the
    // allocator off it until argv has been built from it.
    let at = p.cmdline.as_ptr() as u64;
    if !p.cmdline.is_empty() && at >= arch::image::image_end() {
        let start = at & !(mem::PAGE - 1);
        let _ = mem::alloc_fixed(start, at + p.cmdline.len() as u64 + 1 - start);
    }
    fs::init();
    fd::init();
    platform::phase(Phase::LibosReady);
    let argv = start::argv(p.cmdline);
    start::run_program(&argv)
}

/// Exit status when the libOS itself cannot go on (not the program's).
pub const EXIT_LIBOS: u8 = 1;

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log!("libos: panic: {info}");
    platform::exit(EXIT_LIBOS)
}

/// The prebuilt `alloc` was compiled for unwinding and names this symbol in
/// its unwind tables; with panic = "abort" nothing ever calls it, and the
/// link script discards those tables. It only has to exist.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
