//! Which host we booted under, and the few services that differ: console,
//! diagnostics, sleeping and exiting.
//!
//! Under our runner every console write is one hypercall (one VM exit for the
//! whole buffer). Under a plain PVH VMM (QEMU) we fall back to the 16550 UART
//! at COM1, one exit per byte, and to spinning on the clock for sleeps.

use crate::arch::{cpu, image};
use crate::time;
use pgkraft_abi::{Hypercall, Phase, hc};
use spin::Mutex;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Runner,
    Pvh,
}

#[derive(Clone, Copy)]
pub struct Platform {
    pub host: Host,
    pub mem_bytes: u64,
    pub cmdline: &'static [u8],
    pub console_tty: bool,
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();
/// The one hypercall block: one vCPU, and system calls never nest.
static HYPERCALL: Mutex<Hypercall> = Mutex::new(Hypercall {
    op: 0,
    _pad: 0,
    args: [0; 4],
    ret: 0,
});

/// `info` is %rdi at entry: a BootInfo (kind 0) or a PVH start info (kind 1).
pub fn init(info: u64, kind: u64) -> &'static Platform {
    PLATFORM.call_once(|| {
        if kind == 0 {
            let bi = image::boot_info(info).unwrap_or_default();
            let cmdline = if bi.cmdline_len > 0 {
                crate::arch::uaccess::set_ram_end(bi.mem_bytes);
                crate::arch::uaccess::boot_bytes(bi.cmdline_gpa, bi.cmdline_len).unwrap_or(&[])
            } else {
                &[]
            };
            Platform {
                host: Host::Runner,
                mem_bytes: bi.mem_bytes,
                cmdline,
                console_tty: bi.flags & pgkraft_abi::BOOT_FLAG_CONSOLE_TTY != 0,
            }
        } else {
            let pvh = image::pvh_info(info);
            let (mem_bytes, cmdline) = match pvh {
                Some(p) => (p.mem_bytes, image::c_string(p.cmdline_gpa)),
                None => (0, &[][..]),
            };
            Platform {
                host: Host::Pvh,
                mem_bytes,
                cmdline,
                console_tty: true,
            }
        }
    })
}

pub fn get() -> &'static Platform {
    PLATFORM.get().expect("platform used before init")
}

pub fn host() -> Host {
    PLATFORM.get().map(|p| p.host).unwrap_or(Host::Pvh)
}

fn call(op: u32, args: [u64; 4]) -> i64 {
    call_block(op, args).0
}

/// A hypercall, with the block's `args` as the runner left them.
fn call_block(op: u32, args: [u64; 4]) -> (i64, [u64; 4]) {
    let mut block = HYPERCALL.lock();
    block.op = op;
    block.args = args;
    block.ret = 0;
    let ret = image::hypercall(&mut block);
    (ret, image::hypercall_args(&block))
}

/// Reports a boot phase to our runner. Under another VMM the phase port
/// may be someone else's: QEMU's `isa-debug-exit` at 0xf4 with its default
/// or a 4-byte size covers 0xf5, and a phase byte there ended the image
/// with status 2.
pub fn phase(p: Phase) {
    if host() == Host::Runner {
        cpu::outb(pgkraft_abi::PORT_PHASE, p as u8);
    }
}

/// Whether the runner can read `bytes` at their address: it takes guest
/// physical addresses, and RAM is identity mapped, but the program's own
/// static data lives in its slot above RAM (proc/slot.rs).
fn runner_reachable(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as u64).saturating_add(bytes.len() as u64) <= 1 << 32
}

pub fn console_write(bytes: &[u8]) -> usize {
    if !runner_reachable(bytes) && host() == Host::Runner {
        // A copy in the libOS's heap (RAM) for the runner to read.
        let bounce = alloc::vec::Vec::from(bytes);
        return console_write(&bounce);
    }
    match host() {
        Host::Runner => {
            let r = call(
                hc::CONSOLE_WRITE,
                [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0],
            );
            if r < 0 { 0 } else { r as usize }
        }
        Host::Pvh => {
            for &b in bytes {
                if b == b'\n' {
                    uart_put(b'\r');
                }
                uart_put(b);
            }
            bytes.len()
        }
    }
}

/// Blocks until at least one byte is available; 0 means end of input.
pub fn console_read(buf: &mut [u8]) -> usize {
    if buf.is_empty() {
        return 0;
    }
    if !runner_reachable(buf) && host() == Host::Runner {
        let mut bounce = alloc::vec![0u8; buf.len().min(64 * 1024)];
        let n = console_read(&mut bounce);
        buf[..n].copy_from_slice(&bounce[..n]);
        return n;
    }
    match host() {
        Host::Runner => {
            crate::net::flush_tx();
            let (r, args) = call_block(
                hc::CONSOLE_READ,
                [buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0],
            );
            if args[3] == hc::CONSOLE_READ_RESUMED {
                phase(Phase::Resumed);
            }
            if r < 0 { 0 } else { r as usize }
        }
        Host::Pvh => {
            // A UART has no end of input: Ctrl-D (0x04) stands for it.
            while cpu::inb(pgkraft_abi::PORT_COM1 + 5) & 1 == 0 {
                cpu::pause();
            }
            match cpu::inb(pgkraft_abi::PORT_COM1) {
                0x04 => 0,
                b'\r' => {
                    buf[0] = b'\n';
                    1
                }
                b => {
                    buf[0] = b;
                    1
                }
            }
        }
    }
}

/// A libOS diagnostic: the runner's stderr, or the UART under PVH.
pub fn log(bytes: &[u8]) {
    match host() {
        Host::Runner => {
            call(hc::LOG, [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0]);
        }
        Host::Pvh => {
            console_write(bytes);
        }
    }
}

pub fn sleep_ns(ns: u64) {
    match host() {
        Host::Runner => {
            crate::net::flush_tx();
            call(hc::SLEEP_NS, [ns, 0, 0, 0]);
        }
        Host::Pvh => {
            let until = time::monotonic_ns().saturating_add(ns);
            while time::monotonic_ns() < until {
                cpu::pause();
            }
        }
    }
}

/// Wait up to `ns` for a device to have work (a frame, a connection).
/// Under our runner one hypercall (hc::WAIT) that returns early when a
/// device may have work; under another VMM there is no such call, so a
/// short spin, after which the caller polls its devices again. Signals
/// the runner sends with its answer go to the first process.
pub fn wait_devices(ns: u64) {
    match host() {
        Host::Runner => {
            let sessions = hc::WAIT_SESSIONS | u64::from(crate::proc::busy_sessions());
            let r = call(hc::WAIT, [ns, sessions, 0, 0]) as u64;
            let signals = (r >> hc::WAIT_SIGNALS_SHIFT) as u32;
            if signals != 0 {
                crate::proc::host_signals(signals);
            }
        }
        Host::Pvh => {
            let until = time::monotonic_ns().saturating_add(ns.min(DEVICE_SPIN_NS));
            while time::monotonic_ns() < until {
                cpu::pause();
            }
        }
    }
}

/// Gives guest RAM `[at, at+len)` (free, page multiples) back to the
/// host (`hc::DISCARD`): it reads as zeroes afterwards. Our runner only.
pub fn discard(at: u64, len: u64) -> Result<(), crate::syscall::Errno> {
    if host() != Host::Runner {
        return Err(crate::syscall::Errno::EOPNOTSUPP);
    }
    let r = call(hc::DISCARD, [at, len, 0, 0]);
    if r < 0 {
        Err(crate::syscall::Errno(-r))
    } else {
        Ok(())
    }
}

/// How long a PVH guest spins before polling its devices again.
const DEVICE_SPIN_NS: u64 = 50_000;

pub fn exit(status: u8) -> ! {
    crate::net::drain_tx();
    // Each volume request was one notify, one VM exit.
    #[cfg(feature = "trace-syscalls")]
    crate::log!("libos: 9p volume: {} requests", crate::fs::p9::requests());
    cpu::outb(pgkraft_abi::PORT_EXIT, status);
    // No exit device (e.g. a VMM without isa-debug-exit): stay here quietly.
    loop {
        cpu::pause();
    }
}

/// No wait for "transmit holding register empty": virtual UARTs take each
/// byte at once, and every status read would cost a VM exit plus (on PVM) a
/// trip through the #GP stub, since CPL3 `in` is not allowed there.
fn uart_put(b: u8) {
    cpu::outb(pgkraft_abi::PORT_COM1, b);
}
