//! The hypercall port: the guest writes the guest-physical address of a
//! [`pgkraft_abi::Hypercall`] block to [`pgkraft_abi::PORT_HYPERCALL`]; the
//! runner serves it (console write and read, log line, sleep; a wait for
//! the devices goes to `Devices::wait`, see `devices/wait.rs`) and writes
//! its `ret` before the guest runs on. One exit per call, whatever its size:
//! on PVM an exit costs ~10-30 µs, a UART byte one exit each.
//!
//! It is also where a run stops at its **ready point** for a snapshot (the
//! first console read that finds no input left: a program that set itself
//! up and waits for a query) and where a resumed guest's pending read is
//! answered, and it marks when input arrived and the first answer after it
//! (the `input` and `first_answer` phases the benchmarks time).
//!
//! docs/ARCHITECTURE.md §4.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgkraft_abi::hc;
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::bus::{Action, BusDevice, Ctx};
use crate::console::{ConsoleIn, Stopped};
use crate::workingset::OnAnswer;

const HC_SIZE: usize = std::mem::size_of::<pgkraft_abi::Hypercall>();
const HC_RET_OFFSET: u64 = std::mem::offset_of!(pgkraft_abi::Hypercall, ret) as u64;
/// `args[3]` of the block: where a resumed read is flagged.
const HC_RESUMED_OFFSET: u64 = std::mem::offset_of!(pgkraft_abi::Hypercall, args) as u64 + 3 * 8;
/// Largest chunk copied between guest RAM and the console per step.
const CHUNK: usize = 64 << 10;

/// A CONSOLE_READ the guest is blocked in: `block` is its hypercall block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingRead {
    pub block: u64,
    pub buf: u64,
    pub cap: u64,
}

/// What a snapshot keeps of the device: the read the guest waits in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HypercallState {
    pub version: u32,
    pub pending_read: PendingRead,
}

impl HypercallState {
    pub(crate) const VERSION: u32 = 1;
}

/// Which moments of the run to mark (see the module doc).
#[derive(Default)]
pub(crate) struct Watch {
    /// Mark `input` and `first_answer`.
    pub track: bool,
    /// A resumed guest: its first output is an answer even without input.
    pub resumed: bool,
    got_input: bool,
    answered: bool,
    /// Console bytes written before the guest first read input.
    pub console_at_input: Option<usize>,
    /// Runs at the first answer (a resume learning its working set).
    pub on_answer: Option<OnAnswer>,
}

pub(crate) struct Hypercall {
    stop: Arc<AtomicBool>,
    /// Stop at the first console read that finds the input used up.
    pub stop_when_idle: bool,
    /// Set when stopped there.
    pub pending: Option<PendingRead>,
    pub watch: Watch,
    /// Whether `hc::DISCARD` leaves zeroes: true for a cold-booted VM's
    /// anonymous RAM, false for a resumed one (its pages are its
    /// snapshot's, filled again from it at the next touch).
    pub discard: bool,
}

impl Hypercall {
    pub(crate) fn new(stop: Arc<AtomicBool>) -> Hypercall {
        Hypercall {
            stop,
            stop_when_idle: false,
            pending: None,
            watch: Watch::default(),
            discard: true,
        }
    }

    /// The run's stop flag (set when it must stop).
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub(crate) fn check(state: &HypercallState) -> Result<(), String> {
        super::check_version("hypercall device", state.version, HypercallState::VERSION)
    }

    /// At the ready point: the state to save.
    pub(crate) fn state(&self) -> Option<HypercallState> {
        self.pending.map(|pending_read| HypercallState {
            version: HypercallState::VERSION,
            pending_read,
        })
    }

    /// A resumed guest: answers the read it was snapshotted in, before it
    /// runs, and tells it so (it reports [`pgkraft_abi::Phase::Resumed`]
    /// when it runs).
    pub(crate) fn answer_resumed(&mut self, ctx: &mut Ctx, state: &HypercallState) {
        let p = state.pending_read;
        let ret = self.console_read(ctx, p.buf, p.cap);
        let _ = ctx
            .mem
            .write_slice(&ret.to_le_bytes(), GuestAddress(p.block + HC_RET_OFFSET));
        let _ = ctx.mem.write_slice(
            &hc::CONSOLE_READ_RESUMED.to_le_bytes(),
            GuestAddress(p.block + HC_RESUMED_OFFSET),
        );
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Serves the block at `gpa` and writes its `ret`.
    fn call(&mut self, ctx: &mut Ctx, gpa: u64) -> Action {
        let mut block = [0u8; HC_SIZE];
        if ctx.mem.read_slice(&mut block, GuestAddress(gpa)).is_err() {
            log::warn!("vmm: hypercall block at {gpa:#x} is outside guest RAM; ignored");
            return Action::Continue;
        }
        let op = u32::from_le_bytes(block[0..4].try_into().unwrap());
        let arg = |i: usize| u64::from_le_bytes(block[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let ret = match op {
            hc::CONSOLE_WRITE => self.console_write(ctx, arg(0), arg(1)),
            hc::CONSOLE_READ if self.at_ready_point(ctx, gpa, arg(0), arg(1)) => {
                return Action::Pause;
            }
            hc::CONSOLE_READ => self.console_read(ctx, arg(0), arg(1)),
            hc::LOG => log(ctx.mem, arg(0), arg(1)),
            hc::SLEEP_NS => {
                self.sleep(Duration::from_nanos(arg(0)));
                0
            }
            hc::DISCARD => self.discard(ctx, arg(0), arg(1)),
            hc::WAIT => {
                return Action::Wait {
                    timeout: (arg(0) != u64::MAX).then(|| Duration::from_nanos(arg(0))),
                    ret_at: gpa + HC_RET_OFFSET,
                    sessions: (arg(1) & hc::WAIT_SESSIONS != 0).then_some(arg(1) as u32),
                };
            }
            _ => -i64::from(libc::ENOSYS),
        };
        let _ = ctx
            .mem
            .write_slice(&ret.to_le_bytes(), GuestAddress(gpa + HC_RET_OFFSET));
        Action::Continue
    }

    /// `hc::DISCARD`: the host's pages behind guest RAM the guest gave up.
    fn discard(&mut self, ctx: &mut Ctx, gpa: u64, len: u64) -> i64 {
        const PAGE: u64 = 4096;
        if !self.discard {
            return -i64::from(libc::EOPNOTSUPP);
        }
        if !gpa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || !in_ram(ctx.mem, gpa, len) {
            return -i64::from(libc::EINVAL);
        }
        match crate::kvm::discard(ctx.mem, gpa, len) {
            Ok(()) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => -i64::from(libc::EOPNOTSUPP),
            Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EINVAL)),
        }
    }

    /// At the ready point: remember the read instead of answering it.
    fn at_ready_point(&mut self, ctx: &mut Ctx, block: u64, buf: u64, cap: u64) -> bool {
        let used_up =
            matches!(&ctx.console.input, ConsoleIn::Buffer { data, pos } if *pos >= data.len());
        if !(self.stop_when_idle && used_up && cap > 0) {
            return false;
        }
        self.pending = Some(PendingRead { block, buf, cap });
        ctx.timeline.mark("ready");
        true
    }

    fn console_write(&mut self, ctx: &mut Ctx, gpa: u64, len: u64) -> i64 {
        if !in_ram(ctx.mem, gpa, len) {
            return -i64::from(libc::EFAULT);
        }
        let mut buf = vec![0u8; (len as usize).min(CHUNK)];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(CHUNK);
            if ctx
                .mem
                .read_slice(&mut buf[..n], GuestAddress(gpa + done))
                .is_err()
            {
                return -i64::from(libc::EFAULT);
            }
            if ctx.console.write(&buf[..n]).is_err() {
                return -i64::from(libc::EIO);
            }
            done += n as u64;
        }
        ctx.console.flush();
        let w = &mut self.watch;
        if w.track && (w.got_input || w.resumed) && !w.answered {
            w.answered = true;
            ctx.timeline.mark("first_answer");
            if let Some(hook) = w.on_answer.take() {
                hook(ctx.mem);
            }
        }
        if let Some(bytes) = ctx.console.captured().map(<[u8]>::len) {
            ctx.timeline.output(bytes);
        }
        len as i64
    }

    fn console_read(&mut self, ctx: &mut Ctx, gpa: u64, cap: u64) -> i64 {
        if cap == 0 {
            return 0;
        }
        if !in_ram(ctx.mem, gpa, cap) {
            return -i64::from(libc::EFAULT);
        }
        // A prompt the guest wrote must be visible before we wait for the answer.
        ctx.console.flush();
        let mut buf = vec![0u8; (cap as usize).min(CHUNK)];
        match ctx.console.input.read_blocking(&mut buf) {
            Ok(n) => {
                if ctx.mem.write_slice(&buf[..n], GuestAddress(gpa)).is_err() {
                    return -i64::from(libc::EFAULT);
                }
                if n > 0 {
                    let w = &mut self.watch;
                    if self.stop_when_idle && w.console_at_input.is_none() {
                        w.console_at_input = ctx.console.captured().map(<[u8]>::len);
                    }
                    if w.track && !w.got_input {
                        w.got_input = true;
                        ctx.timeline.mark("input");
                    }
                }
                n as i64
            }
            Err(Stopped) => -i64::from(libc::EINTR),
        }
    }

    /// Sleeps, but wakes within a few milliseconds of a stop request.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end || self.stopping() {
                return;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(5)));
        }
    }
}

/// libOS diagnostics go to our stderr, never into the guest's console.
fn log(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> i64 {
    use std::io::Write;
    const MAX: u64 = 64 << 10;
    if !in_ram(mem, gpa, len) {
        return -i64::from(libc::EFAULT);
    }
    let mut buf = vec![0u8; len.min(MAX) as usize];
    if mem.read_slice(&mut buf, GuestAddress(gpa)).is_err() {
        return -i64::from(libc::EFAULT);
    }
    if !buf.ends_with(b"\n") {
        buf.push(b'\n');
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"guest: ").and_then(|()| err.write_all(&buf));
    len as i64
}

fn in_ram(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> bool {
    usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(gpa), len))
}

impl BusDevice for Hypercall {
    fn read(&mut self, _: &mut Ctx, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, ctx: &mut Ctx, _: u64, data: &[u8]) -> Action {
        match <[u8; 4]>::try_from(data) {
            Ok(gpa) => self.call(ctx, u64::from(u32::from_le_bytes(gpa))),
            Err(_) => {
                log::warn!(
                    "vmm: {}-byte write to the hypercall port ignored; it takes a 32-bit gpa",
                    data.len()
                );
                Action::Continue
            }
        }
    }
}
