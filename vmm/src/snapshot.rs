//! Snapshots of a running guest and resuming from them (ARCHITECTURE.md §4).
//!
//! **Ready point.** `snapshot` boots the image, feeds it the input it is
//! given, and stops it the first time it asks for console input that is not
//! there (a CONSOLE_READ hypercall with the input used up): a program that
//! has done its setup and waits for a query. That is program-agnostic and
//! needs nothing from the guest. The vCPU is then inside an I/O exit; a
//! KVM_RUN with `immediate_exit` set lets KVM finish the instruction (on
//! some paths KVM advances RIP only on re-entry) without running guest code,
//! so the saved registers are those right after the `out`. The read itself
//! stays pending: the resumed runner answers it (with the new instance's
//! input) and writes its `ret` before the guest runs again.
//!
//! **What is saved.** vCPU: regs, sregs, FPU, XSAVE, XCRs, debug registers,
//! every MSR KVM lists and lets us read (TSC and the kvmclock MSRs among
//! them), pending events, MP state, and the CPUID the guest was given. VM:
//! the KVM clock. Devices: the UART's registers, the pending console read,
//! and the console output so far (so a resumed run's output reads as the
//! whole session). There is no in-kernel interrupt controller or timer in
//! this runner (the guest polls), so there is no LAPIC/IOAPIC/PIT state; the
//! manifest says so. Guest memory: one sparse file of guest-physical RAM;
//! zero pages are holes, and the interior pages of image segments that the
//! guest left untouched are holes too, mapped from the image at resume
//! (their bytes are the image's, verified by its sha256).
//!
//! **Clock.** KVM_SET_CLOCK restores the KVM clock to its saved value, so
//! CLOCK_MONOTONIC continues where it stopped (a hibernated guest does not
//! see the time it slept, like a suspended laptop's monotonic clock), and
//! the kvmclock wall-clock MSR is written after that, so CLOCK_REALTIME is
//! the host's real time again: both move forward.
//!
//! **Integrity.** The manifest holds the sha256 and size of every state file
//! and of the image. Small files are hashed at every resume (microseconds).
//! The memory file and the image are hashed once, and the result is kept in
//! `verified.json` against each file's identity (device, inode, size,
//! mtime and ctime; ctime cannot be set back by users, so an in-place edit
//! always invalidates it). `snapshot` records its own files there as it
//! writes them; a copied snapshot is verified on first use. Sizes are
//! checked at every resume, so a truncated file never reaches `mmap`.
//!
//! **Atomicity.** Everything is written into `.NAME.partial-XXXX` next to
//! the target, fsynced, the manifest last, then renamed into place.
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, VcpuFd};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

use super::console::{ConsoleIn, ConsoleOut, NoIrq, Uart};
use super::kvm::{self, Machine};
use super::workingset::{self, Learner, WorkingSet};
use super::{
    Console, Devices, GuestExit, HC_RESUMED_OFFSET, HC_RET_OFFSET, MIB, RunOutcome, VcpuThread,
    VmConfig, VmmError,
};

pub const MANIFEST: &str = "manifest.json";
const VCPU_FILE: &str = "vcpu0.state";
const VM_FILE: &str = "vm.state";
const DEVICES_FILE: &str = "devices.json";
const MEMORY_FILE: &str = "memory.raw";
const VERIFIED_FILE: &str = "verified.json";

const FORMAT: u32 = 2;
const PAGE: u64 = 4096;
const PARTIAL: &str = ".partial-";

// ---------------------------------------------------------------------------
// Hooks into the runner's exit loop (called from `Devices` in mod.rs).

/// A CONSOLE_READ the guest is blocked in: `block` is its hypercall block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PendingRead {
    pub block: u64,
    pub buf: u64,
    pub cap: u64,
}

/// Per-run snapshot state of the exit loop.
#[derive(Default)]
pub(super) struct Idle {
    /// Stop at the first console read that finds the input used up.
    stop_when_idle: bool,
    /// Set when stopped there.
    pending: Option<PendingRead>,
    /// Resume: the read to answer before the guest runs.
    resume_read: Option<PendingRead>,
    /// Mark `input` and `first_answer` phases.
    track: bool,
    resumed: bool,
    got_input: bool,
    answered: bool,
    seen_exit: bool,
    /// Snapshot: console bytes written before the guest first read input.
    console_at_input: Option<usize>,
    /// Resume: runs at the first answer (learning the working set).
    on_answer: Option<workingset::OnAnswer>,
}

impl Idle {
    pub(super) fn stopped(&self) -> bool {
        self.pending.is_some()
    }
}

/// Runs on the vCPU thread when the guest reached the ready point.
pub(super) type OnReady =
    Box<dyn FnOnce(&mut Machine, &mut Devices) -> Result<(), VmmError> + Send>;

/// How a run is set up for snapshot or resume; the default is a plain run.
#[derive(Default)]
pub(super) struct Hooks {
    idle: Idle,
    console_prefix: Vec<u8>,
    uart: Option<vm_superio::serial::SerialState>,
    on_ready: Option<OnReady>,
}

impl Hooks {
    pub(super) fn install(self, d: &mut Devices) -> Option<OnReady> {
        d.idle = self.idle;
        if let Some(state) = self.uart {
            let fresh = Uart::new(NoIrq, ConsoleOut::Capture(Vec::new()));
            let out = std::mem::replace(&mut d.uart, fresh).into_writer();
            // Checked when the snapshot was loaded, so this cannot fail.
            match Uart::from_state(&state, NoIrq, vm_superio::serial::NoEvents, out) {
                Ok(u) => d.uart = u,
                Err(e) => log::warn!("vmm: UART state not restored: {e:?}"),
            }
        }
        if let ConsoleOut::Capture(v) = d.uart.writer_mut() {
            v.extend_from_slice(&self.console_prefix);
        }
        self.on_ready
    }
}

/// After the exit loop: at the ready point, hand the stopped VM to `on_ready`.
pub(super) fn after_run(
    result: Result<GuestExit, VmmError>,
    machine: &mut Machine,
    devices: &mut Devices,
    on_ready: Option<OnReady>,
) -> Result<GuestExit, VmmError> {
    match (result, on_ready) {
        (Ok(exit), Some(save)) if devices.idle.stopped() => save(machine, devices).map(|()| exit),
        (r, _) => r,
    }
}

impl Devices {
    /// At the ready point: remember the read instead of answering it.
    pub(super) fn stop_at_ready_point(&mut self, block: u64, buf: u64, cap: u64) -> bool {
        let used_up = matches!(&self.input, ConsoleIn::Buffer { data, pos } if *pos >= data.len());
        if !(self.idle.stop_when_idle && used_up && cap > 0) {
            return false;
        }
        self.idle.pending = Some(PendingRead { block, buf, cap });
        self.mark("ready");
        true
    }

    /// Resume: answer the read the guest was snapshotted in, before it runs,
    /// and tell the guest so (it reports [`pgkraft_abi::Phase::Resumed`]
    /// when it runs).
    pub(super) fn answer_resumed_read(&mut self, mem: &GuestMemoryMmap) {
        if let Some(p) = self.idle.resume_read.take() {
            let ret = self.console_read(mem, p.buf, p.cap);
            let _ = mem.write_slice(&ret.to_le_bytes(), GuestAddress(p.block + HC_RET_OFFSET));
            let _ = mem.write_slice(
                &pgkraft_abi::hc::CONSOLE_READ_RESUMED.to_le_bytes(),
                GuestAddress(p.block + HC_RESUMED_OFFSET),
            );
        }
    }

    pub(super) fn note_exit(&mut self) {
        if self.idle.resumed && !self.idle.seen_exit {
            self.idle.seen_exit = true;
            self.mark("first_exit");
        }
    }

    pub(super) fn note_input(&mut self, n: usize) {
        if self.idle.stop_when_idle && n > 0 && self.idle.console_at_input.is_none() {
            self.idle.console_at_input = self.uart.writer_mut().captured_len();
        }
        if self.idle.track && n > 0 && !self.idle.got_input {
            self.idle.got_input = true;
            self.mark("input");
        }
    }

    pub(super) fn note_output(&mut self, mem: &GuestMemoryMmap) {
        if self.idle.track && (self.idle.got_input || self.idle.resumed) && !self.idle.answered {
            self.idle.answered = true;
            self.mark("first_answer");
            if let Some(hook) = self.idle.on_answer.take() {
                hook(mem);
            }
        }
    }
}

/// Runs `image` with `input` as console input and "input" / "first_answer"
/// phases marked: the cold-boot side of the resume benchmark.
pub fn run_tracked(image: &Path, cfg: &VmConfig) -> Result<RunOutcome, VmmError> {
    super::run_with(
        image,
        cfg,
        Hooks {
            idle: Idle {
                track: true,
                ..Idle::default()
            },
            ..Hooks::default()
        },
    )
}

// ---------------------------------------------------------------------------
// Errors and the manifest.

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Vmm(#[from] VmmError),
    /// Bad input, found before anything ran.
    #[error("{}: {problem}\n  fix: {fix}", path.display())]
    Refused {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the guest {how} before it waited for console input, so there is no ready point to \
         snapshot at (the program must read stdin once set up; check the test VM's \
         snapshot_after input){console}"
    )]
    NotReady { how: String, console: String },
}

impl SnapshotError {
    /// Exit status 2 (bad input) rather than 1.
    pub fn is_bad_input(&self) -> bool {
        match self {
            SnapshotError::Refused { .. } => true,
            SnapshotError::Vmm(e) => !matches!(
                e,
                VmmError::Ioctl { .. } | VmmError::Guest { .. } | VmmError::Thread { .. }
            ),
            _ => false,
        }
    }
}

fn refused(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> SnapshotError {
    SnapshotError::Refused {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub pgkraft_version: String,
    pub image: ImageRef,
    pub vm: Shape,
    /// Where the guest was stopped.
    pub ready_point: String,
    /// Console input fed before the ready point.
    pub input_before_bytes: u64,
    pub irqchip: String,
    pub clock: ClockInfo,
    pub memory: MemoryInfo,
    /// Every state file: its size and sha256.
    pub files: BTreeMap<String, FileEntry>,
    pub taken_unix_ms: u64,
    /// Runner start to the ready point, and the save itself.
    pub boot_to_ready_ms: f64,
    pub save_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRef {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// What the guest was built for; a resume must match it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shape {
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The program's arguments as passed on the boot command line ("" = the
    /// image's own); they live in guest memory now.
    pub cmdline: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClockInfo {
    /// KVM clock (guest CLOCK_MONOTONIC base) at the snapshot.
    pub kvmclock_ns: u64,
    pub policy: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub file: String,
    /// Logical size: all of guest RAM.
    pub bytes: u64,
    /// Bytes actually written (the rest are holes). The image's own pages
    /// are data too: every page sits at its guest address, so the file can
    /// be mapped with huge pages (the image's offsets are not 2 MiB
    /// congruent with its load addresses).
    pub data_bytes: u64,
    /// Where the data is (`[gpa, len]`, small holes merged in).
    pub data_ranges: Vec<[u64; 2]>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// devices.json
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeviceState {
    pending_read: PendingRead,
    uart: UartState,
    /// Console output before the snapshot.
    console: String,
    /// Console input fed before the snapshot.
    input_before: String,
    /// How much of `console` the guest had printed before it read that
    /// input (all of it if there was none).
    console_before_input: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct UartState {
    baud_divisor_low: u8,
    baud_divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    in_buffer: Vec<u8>,
}

impl UartState {
    fn of(s: vm_superio::serial::SerialState) -> UartState {
        UartState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
    fn to_state(&self) -> vm_superio::serial::SerialState {
        vm_superio::serial::SerialState {
            baud_divisor_low: self.baud_divisor_low,
            baud_divisor_high: self.baud_divisor_high,
            interrupt_enable: self.interrupt_enable,
            interrupt_identification: self.interrupt_identification,
            line_control: self.line_control,
            line_status: self.line_status,
            modem_control: self.modem_control,
            modem_status: self.modem_status,
            scratch: self.scratch,
            in_buffer: self.in_buffer.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// vCPU and VM state: a small binary format of named sections, each the raw
// bytes of one KVM structure (`#[repr(C)]`, converted with zerocopy).

const VCPU_MAGIC: &[u8; 8] = b"PGKVCPU1";
const VM_MAGIC: &[u8; 8] = b"PGKVM001";

struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    cpuid: Vec<kvm_cpuid_entry2>,
    msrs: Vec<kvm_msr_entry>,
}

fn fpu_bytes(f: &kvm_fpu) -> Vec<u8> {
    let mut v = Vec::with_capacity(416);
    for r in &f.fpr {
        v.extend_from_slice(r);
    }
    v.extend_from_slice(&f.fcw.to_le_bytes());
    v.extend_from_slice(&f.fsw.to_le_bytes());
    v.push(f.ftwx);
    v.extend_from_slice(&f.last_opcode.to_le_bytes());
    v.extend_from_slice(&f.last_ip.to_le_bytes());
    v.extend_from_slice(&f.last_dp.to_le_bytes());
    for r in &f.xmm {
        v.extend_from_slice(r);
    }
    v.extend_from_slice(&f.mxcsr.to_le_bytes());
    v
}

fn fpu_from(b: &[u8]) -> Option<kvm_fpu> {
    if b.len() != 8 * 16 + 2 + 2 + 1 + 2 + 8 + 8 + 16 * 16 + 4 {
        return None;
    }
    let mut f = kvm_fpu::default();
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &b[at..at + n];
        at += n;
        s
    };
    for r in &mut f.fpr {
        r.copy_from_slice(take(16));
    }
    f.fcw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.fsw = u16::from_le_bytes(take(2).try_into().ok()?);
    f.ftwx = take(1)[0];
    f.last_opcode = u16::from_le_bytes(take(2).try_into().ok()?);
    f.last_ip = u64::from_le_bytes(take(8).try_into().ok()?);
    f.last_dp = u64::from_le_bytes(take(8).try_into().ok()?);
    for r in &mut f.xmm {
        r.copy_from_slice(take(16));
    }
    f.mxcsr = u32::from_le_bytes(take(4).try_into().ok()?);
    Some(f)
}

struct Sections(Vec<u8>);

impl Sections {
    fn new(magic: &[u8; 8]) -> Sections {
        Sections(magic.to_vec())
    }
    fn put(&mut self, name: &str, bytes: &[u8]) {
        let mut tag = [0u8; 8];
        tag[..name.len()].copy_from_slice(name.as_bytes());
        self.0.extend_from_slice(&tag);
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

/// Sections by name; `None` if the framing is broken.
fn parse_sections<'a>(magic: &[u8; 8], b: &'a [u8]) -> Option<BTreeMap<String, &'a [u8]>> {
    let mut rest = b.strip_prefix(magic.as_slice())?;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        if rest.len() < 16 {
            return None;
        }
        let name =
            String::from_utf8(rest[..8].iter().copied().filter(|&c| c != 0).collect()).ok()?;
        let len = usize::try_from(u64::from_le_bytes(rest[8..16].try_into().ok()?)).ok()?;
        rest = &rest[16..];
        if rest.len() < len {
            return None;
        }
        out.insert(name, &rest[..len]);
        rest = &rest[len..];
    }
    Some(out)
}

fn one<T: FromBytes>(s: &BTreeMap<String, &[u8]>, name: &str) -> Result<T, String> {
    let b = s
        .get(name)
        .ok_or_else(|| format!("section `{name}` is missing"))?;
    T::read_from_bytes(b).map_err(|_| {
        format!(
            "section `{name}` has {} bytes, expected {}",
            b.len(),
            std::mem::size_of::<T>()
        )
    })
}

fn many<T: FromBytes + zerocopy::Immutable>(
    s: &BTreeMap<String, &[u8]>,
    name: &str,
) -> Result<Vec<T>, String> {
    let b = s
        .get(name)
        .ok_or_else(|| format!("section `{name}` is missing"))?;
    let size = std::mem::size_of::<T>();
    if b.len() % size != 0 {
        return Err(format!("section `{name}` is not a whole number of entries"));
    }
    Ok(b.chunks_exact(size)
        .map(|c| T::read_from_bytes(c).expect("exact size"))
        .collect())
}

impl VcpuState {
    fn capture(vcpu: &VcpuFd, msr_index: &[u32], xsave2: usize) -> Result<VcpuState, VmmError> {
        if xsave2 > std::mem::size_of::<kvm_xsave>() {
            return Err(VmmError::Ioctl {
                ioctl: "KVM_GET_XSAVE",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            });
        }
        Ok(VcpuState {
            regs: vcpu.get_regs().map_err(VmmError::ioctl("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(VmmError::ioctl("KVM_GET_SREGS"))?,
            fpu: vcpu.get_fpu().map_err(VmmError::ioctl("KVM_GET_FPU"))?,
            xsave: vcpu.get_xsave().map_err(VmmError::ioctl("KVM_GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(VmmError::ioctl("KVM_GET_XCRS"))?,
            debugregs: vcpu
                .get_debug_regs()
                .map_err(VmmError::ioctl("KVM_GET_DEBUGREGS"))?,
            events: vcpu
                .get_vcpu_events()
                .map_err(VmmError::ioctl("KVM_GET_VCPU_EVENTS"))?,
            mp_state: vcpu
                .get_mp_state()
                .map_err(VmmError::ioctl("KVM_GET_MP_STATE"))?,
            cpuid: vcpu
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(VmmError::ioctl("KVM_GET_CPUID2"))?
                .as_slice()
                .to_vec(),
            msrs: read_msrs(vcpu, msr_index)?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut s = Sections::new(VCPU_MAGIC);
        s.put("regs", self.regs.as_bytes());
        s.put("sregs", self.sregs.as_bytes());
        s.put("fpu", &fpu_bytes(&self.fpu));
        s.put("xsave", self.xsave.as_bytes());
        s.put("xcrs", self.xcrs.as_bytes());
        s.put("debug", self.debugregs.as_bytes());
        s.put("events", self.events.as_bytes());
        s.put("mpstate", self.mp_state.as_bytes());
        s.put("cpuid", self.cpuid.as_slice().as_bytes());
        s.put("msrs", self.msrs.as_slice().as_bytes());
        s.0
    }

    fn decode(b: &[u8]) -> Result<VcpuState, String> {
        let s = parse_sections(VCPU_MAGIC, b).ok_or("not a pgkraft vCPU state file")?;
        Ok(VcpuState {
            regs: one(&s, "regs")?,
            sregs: one(&s, "sregs")?,
            fpu: fpu_from(s.get("fpu").ok_or("section `fpu` is missing")?)
                .ok_or("section `fpu` has the wrong size")?,
            xsave: one(&s, "xsave")?,
            xcrs: one(&s, "xcrs")?,
            debugregs: one(&s, "debug")?,
            events: one(&s, "events")?,
            mp_state: one(&s, "mpstate")?,
            cpuid: many(&s, "cpuid")?,
            msrs: many(&s, "msrs")?,
        })
    }

    fn apply(&self, machine: &Machine, xsave2: usize) -> Result<(), VmmError> {
        let vcpu = machine.vcpu();
        // CPUID first: KVM checks CR4 and XCR0 bits against it.
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| VmmError::Ioctl {
            ioctl: "KVM_SET_CPUID2",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(VmmError::ioctl("KVM_SET_CPUID2"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(VmmError::ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&self.regs)
            .map_err(VmmError::ioctl("KVM_SET_REGS"))?;
        vcpu.set_xcrs(&self.xcrs)
            .map_err(VmmError::ioctl("KVM_SET_XCRS"))?;
        vcpu.set_fpu(&self.fpu)
            .map_err(VmmError::ioctl("KVM_SET_FPU"))?;
        machine.set_xsave(&self.xsave, xsave2)?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(VmmError::ioctl("KVM_SET_DEBUGREGS"))?;
        let n = super::vcpu::set_msrs(vcpu, &self.msrs)?;
        if n != self.msrs.len() {
            return Err(VmmError::Ioctl {
                ioctl: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            })
            .inspect_err(|_| {
                log::error!(
                    "KVM refused MSR {:#x} ({} of {} restored)",
                    self.msrs[n].index,
                    n,
                    self.msrs.len()
                )
            });
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(VmmError::ioctl("KVM_SET_VCPU_EVENTS"))?;
        vcpu.set_mp_state(self.mp_state)
            .map_err(VmmError::ioctl("KVM_SET_MP_STATE"))?;
        Ok(())
    }
}

/// Every listed MSR KVM lets us read. KVM_GET_MSRS stops at the first one
/// it cannot read, so those are dropped one by one (snapshot time only).
fn read_msrs(vcpu: &VcpuFd, index: &[u32]) -> Result<Vec<kvm_msr_entry>, VmmError> {
    let mut want: Vec<u32> = index.to_vec();
    loop {
        let entries: Vec<kvm_msr_entry> = want
            .iter()
            .map(|&i| kvm_msr_entry {
                index: i,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VmmError::Ioctl {
            ioctl: "KVM_GET_MSRS",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let n = vcpu
            .get_msrs(&mut msrs)
            .map_err(VmmError::ioctl("KVM_GET_MSRS"))?;
        if n == want.len() {
            return settable(vcpu, msrs.as_slice().to_vec());
        }
        log::debug!("vmm: MSR {:#x} is not readable; not saved", want[n]);
        want.remove(n);
    }
}

/// The MSRs KVM accepts back, found by writing them to the stopped vCPU
/// (same values, so nothing changes): KVM lists some it then refuses to
/// set (on PVM, e.g. MSR_KVM_ASYNC_PF_INT). A refused MSR at its reset
/// value 0 is dropped, since a fresh vCPU has it anyway; any other refusal
/// is an error, so resume can restore the list in one KVM_SET_MSRS.
fn settable(vcpu: &VcpuFd, mut list: Vec<kvm_msr_entry>) -> Result<Vec<kvm_msr_entry>, VmmError> {
    let mut from = 0;
    while from < list.len() {
        let n = super::vcpu::set_msrs(vcpu, &list[from..])?;
        let at = from + n;
        if at == list.len() {
            break;
        }
        if list[at].data != 0 {
            log::error!(
                "KVM does not accept MSR {:#x} = {:#x} back; the snapshot could not be restored",
                list[at].index,
                list[at].data
            );
            return Err(VmmError::Ioctl {
                ioctl: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        log::debug!(
            "vmm: MSR {:#x} (0) cannot be set; not saved",
            list[at].index
        );
        list.remove(at);
        from = at;
    }
    Ok(list)
}

fn encode_clock(c: &kvm_clock_data) -> Vec<u8> {
    let mut s = Sections::new(VM_MAGIC);
    s.put("clock", c.as_bytes());
    s.0
}

fn decode_clock(b: &[u8]) -> Result<kvm_clock_data, String> {
    let s = parse_sections(VM_MAGIC, b).ok_or("not a pgkraft VM state file")?;
    one(&s, "clock")
}

// ---------------------------------------------------------------------------
// Taking a snapshot.

/// What `snapshot` did.
#[derive(Debug, Serialize)]
pub struct SnapshotReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The console output up to the ready point.
    pub console: String,
}

/// What the vCPU thread saved at the ready point.
struct Saved {
    clock_ns: u64,
    memory: MemoryInfo,
    files: BTreeMap<String, FileEntry>,
    ready_at: Duration,
    save: Duration,
    console: String,
}

/// Boots `image` with `cfg` (its console must be `Capture`: the input fed
/// before the ready point), stops it at the ready point and writes a
/// snapshot directory `out`.
pub fn snapshot(image: &Path, cfg: &VmConfig, out: &Path) -> Result<SnapshotReport, SnapshotError> {
    let Console::Capture { input } = &cfg.console else {
        return Err(refused(
            out,
            "a snapshot needs captured console input",
            "use Console::Capture",
        ));
    };
    let input_len = input.len() as u64;
    let name = out
        .file_name()
        .ok_or_else(|| {
            refused(
                out,
                "is not a directory name",
                "name the snapshot directory, e.g. --out snap/counter",
            )
        })?
        .to_string_lossy()
        .into_owned();
    if out.exists() && !out.join(MANIFEST).is_file() {
        return Err(refused(
            out,
            "exists and is not a pgkraft snapshot, so it will not be replaced",
            "choose another --out, or remove it",
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{PARTIAL}"))
        .tempdir_in(&parent)
        .map_err(io_err("create a temporary directory in", &parent))?;

    let image_file = File::open(image).map_err(io_err("read image", image))?;
    let image_meta = image_file.metadata().map_err(io_err("read image", image))?;
    let image_sha =
        sha256_file(&image_file, image_meta.len()).map_err(io_err("read image", image))?;
    let kvm = super::open_kvm()?;
    let msr_index = kvm
        .get_msr_index_list()
        .map_err(VmmError::ioctl("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec();
    let xsave2 = kvm.check_extension_int(Cap::Xsave2).max(0) as usize;

    let (saved_tx, saved_rx) = mpsc::channel::<Result<Saved, SnapshotError>>();
    let dir = tmp.path().to_path_buf();
    let t0 = Instant::now();
    let ctx = SaveCtx {
        dir,
        msr_index,
        xsave2,
        input_before: input.clone(),
    };
    let on_ready: OnReady = Box::new(move |machine: &mut Machine, devices: &mut Devices| {
        let ready_at = t0.elapsed();
        let r = save(machine, devices, &ctx).map(|mut s| {
            s.ready_at = ready_at;
            s.save = t0.elapsed() - ready_at;
            s
        });
        let _ = saved_tx.send(r);
        Ok(())
    });
    let hooks = Hooks {
        idle: Idle {
            stop_when_idle: true,
            ..Idle::default()
        },
        on_ready: Some(on_ready),
        ..Hooks::default()
    };
    let outcome = super::run_with(image, cfg, hooks)?;
    let saved = match saved_rx.try_recv() {
        Ok(s) => s?,
        Err(_) => {
            let how = match &outcome.exit {
                GuestExit::Status(s) => format!("exited with status {s}"),
                GuestExit::Timeout => "ran into the timeout".into(),
                GuestExit::Shutdown { regs } => {
                    format!("died ({})", regs.lines().next().unwrap_or(""))
                }
            };
            let console = String::from_utf8_lossy(&outcome.console);
            return Err(SnapshotError::NotReady {
                how,
                console: if console.is_empty() {
                    String::new()
                } else {
                    format!("\nconsole output:\n{console}")
                },
            });
        }
    };

    let manifest = Manifest {
        format: FORMAT,
        pgkraft_version: env!("CARGO_PKG_VERSION").into(),
        image: ImageRef {
            path: std::fs::canonicalize(image).map_err(io_err("resolve", image))?,
            sha256: image_sha.clone(),
            bytes: image_meta.len(),
        },
        vm: Shape {
            memory_mib: cfg.mem_mib,
            vcpus: 1,
            cmdline: cfg.cmdline.clone(),
        },
        ready_point: "the guest's first console read with no input left (CONSOLE_READ hypercall)"
            .into(),
        input_before_bytes: input_len,
        irqchip: "none: this runner has no in-kernel interrupt controller, LAPIC or PIT (the \
                  guest polls), so there is no such state to save"
            .into(),
        clock: ClockInfo {
            kvmclock_ns: saved.clock_ns,
            policy: "KVM clock restored to this value (monotonic continues, time asleep not \
                     counted); wall clock re-read from the host at resume"
                .into(),
        },
        memory: saved.memory.clone(),
        files: saved.files.clone(),
        taken_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        boot_to_ready_ms: ms(saved.ready_at),
        save_ms: ms(saved.save),
    };
    // Identity records first (the files' inodes survive the rename), the
    // manifest last: a directory without one is never a snapshot.
    let mut verified = Verified::default();
    let mem_path = tmp.path().join(MEMORY_FILE);
    if let Ok(meta) = std::fs::metadata(&mem_path) {
        verified.record(MEMORY_FILE.into(), &meta, &saved.files[MEMORY_FILE].sha256);
    }
    verified.record(manifest.image.path.clone(), &image_meta, &image_sha);
    write_synced(
        &tmp.path().join(VERIFIED_FILE),
        &serde_json::to_vec_pretty(&verified).expect("json"),
    )?;
    write_synced(
        &tmp.path().join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest).expect("json"),
    )?;
    if std::env::var_os("PGKRAFT_TEST_CRASH_SNAPSHOT").is_some() {
        // For the tests: die the way a crash would, before the rename.
        std::process::abort();
    }
    sync_dir(tmp.path())?;
    let tmp = tmp.keep();
    if out.exists() {
        // Replace an older snapshot: move it aside first so that `out` is
        // always either the old or the new snapshot, never a mix.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(io_err("move aside", out))?;
        std::fs::rename(&tmp, out).map_err(io_err("rename into place", out))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, out).map_err(io_err("rename into place", out))?;
    }
    sync_dir(&parent)?;
    Ok(SnapshotReport {
        dir: out.to_path_buf(),
        manifest,
        console: saved.console,
    })
}

/// What `save` needs besides the stopped VM.
struct SaveCtx {
    /// The temporary snapshot directory.
    dir: PathBuf,
    msr_index: Vec<u32>,
    /// KVM_CAP_XSAVE2's size (0 without it).
    xsave2: usize,
    input_before: Vec<u8>,
}

/// On the vCPU thread, at the ready point.
fn save(
    machine: &mut Machine,
    devices: &mut Devices,
    ctx: &SaveCtx,
) -> Result<Saved, SnapshotError> {
    let SaveCtx {
        dir,
        msr_index,
        xsave2,
        input_before,
    } = ctx;
    let xsave2 = *xsave2;
    let pending = devices.idle.pending.expect("stopped at the ready point");
    {
        // Let KVM finish the `out` the guest is in without running it.
        let (vcpu, _) = machine.parts();
        vcpu.set_kvm_immediate_exit(1);
        let r = vcpu.run().map(|_| ());
        vcpu.set_kvm_immediate_exit(0);
        match r {
            Err(e) if e.errno() == libc::EINTR => {}
            Ok(()) => {
                return Err(VmmError::Ioctl {
                    ioctl: "KVM_RUN (immediate_exit)",
                    source: kvm_ioctls::Error::new(libc::EBUSY),
                }
                .into());
            }
            Err(source) => {
                return Err(VmmError::Ioctl {
                    ioctl: "KVM_RUN (immediate_exit)",
                    source,
                }
                .into());
            }
        }
    }
    let vcpu_state = VcpuState::capture(machine.vcpu(), msr_index, xsave2)?;
    let clock = machine
        .vm()
        .get_clock()
        .map_err(VmmError::ioctl("KVM_GET_CLOCK"))?;
    let console = match devices.uart.writer_mut() {
        ConsoleOut::Capture(v) => String::from_utf8_lossy(v).into_owned(),
        ConsoleOut::Stdout(_) => String::new(),
    };
    let dev = DeviceState {
        pending_read: pending,
        uart: UartState::of(devices.uart.state()),
        console: console.clone(),
        input_before: String::from_utf8_lossy(input_before).into_owned(),
        console_before_input: devices.idle.console_at_input.unwrap_or(console.len()),
    };
    let mut files = BTreeMap::new();
    for (name, bytes) in [
        (VCPU_FILE, vcpu_state.encode()),
        (VM_FILE, encode_clock(&clock)),
        (DEVICES_FILE, serde_json::to_vec_pretty(&dev).expect("json")),
    ] {
        write_synced(&dir.join(name), &bytes)?;
        files.insert(
            name.to_string(),
            FileEntry {
                bytes: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
        );
    }
    let (memory, sha) = write_memory(machine.mem(), devices.mem_bytes, &dir.join(MEMORY_FILE))?;
    files.insert(
        MEMORY_FILE.to_string(),
        FileEntry {
            bytes: memory.bytes,
            sha256: sha,
        },
    );
    Ok(Saved {
        clock_ns: clock.clock,
        memory,
        files,
        ready_at: Duration::ZERO,
        save: Duration::ZERO,
        console,
    })
}

/// Guest RAM into a sparse file, each page at its guest address: zero
/// pages are holes. Returns its description and the sha256 of its logical
/// content.
fn write_memory(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    path: &Path,
) -> Result<(MemoryInfo, String), SnapshotError> {
    let read_guest = |buf: &mut [u8], gpa: u64| {
        mem.read_slice(buf, GuestAddress(gpa))
            .map_err(|e| SnapshotError::Io {
                what: "read guest memory for",
                path: path.to_path_buf(),
                source: io::Error::other(e.to_string()),
            })
    };
    const CHUNK: usize = 1 << 20;
    let mut g = vec![0u8; CHUNK];
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    file.set_len(mem_bytes).map_err(io_err("size", path))?;
    let mut hasher = Sha256::new();
    let mut data_bytes = 0u64;
    let mut data_ranges: Vec<[u64; 2]> = Vec::new();
    // Holes this small are cheaper to prefault along than to split on.
    const MERGE_GAP: u64 = 8 * PAGE;
    let mut gpa = 0u64;
    while gpa < mem_bytes {
        let n = ((mem_bytes - gpa) as usize).min(CHUNK);
        let buf = &mut g[..n];
        read_guest(buf, gpa)?;
        hasher.update(&*buf);
        // Runs of non-zero pages, one write each.
        let mut page = 0;
        let pages = n / PAGE as usize;
        while page < pages {
            let nonzero = |p: usize| {
                buf[p * PAGE as usize..(p + 1) * PAGE as usize]
                    .iter()
                    .fold(0u8, |a, &b| a | b)
                    != 0
            };
            if !nonzero(page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < pages && nonzero(page) {
                page += 1;
            }
            let bytes = &buf[first * PAGE as usize..page * PAGE as usize];
            let at = gpa + (first as u64) * PAGE;
            file.write_all_at(bytes, at)
                .map_err(io_err("write", path))?;
            data_bytes += bytes.len() as u64;
            match data_ranges.last_mut() {
                Some([s, l]) if at - (*s + *l) <= MERGE_GAP => *l = at + bytes.len() as u64 - *s,
                _ => data_ranges.push([at, bytes.len() as u64]),
            }
        }
        gpa += n as u64;
    }
    file.sync_all().map_err(io_err("sync", path))?;
    // The page cache now holds what the writes made (small folios); dropped,
    // it is refilled by resumes' huge-page mappings in 2 MiB folios.
    kvm::drop_cache(&file);
    Ok((
        MemoryInfo {
            file: MEMORY_FILE.into(),
            bytes: mem_bytes,
            data_bytes,
            data_ranges,
        },
        hex::encode(hasher.finalize()),
    ))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut f = File::create(path).map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

fn sha256_file(f: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

// ---------------------------------------------------------------------------
// Verification cache.

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Verified {
    entries: Vec<VerifiedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VerifiedEntry {
    /// Relative to the snapshot directory, or absolute (the image).
    path: PathBuf,
    identity: Identity,
    sha256: String,
}

impl Verified {
    fn record(&mut self, path: PathBuf, meta: &std::fs::Metadata, sha256: &str) {
        self.entries.retain(|e| e.path != path);
        self.entries.push(VerifiedEntry {
            path,
            identity: Identity::of(meta),
            sha256: sha256.into(),
        });
    }
    fn knows(&self, path: &Path, meta: &std::fs::Metadata, sha256: &str) -> bool {
        let id = Identity::of(meta);
        self.entries
            .iter()
            .any(|e| e.path == path && e.identity == id && e.sha256 == sha256)
    }
}

// ---------------------------------------------------------------------------
// Resuming.

/// What the caller expects of the snapshot (from `--vm`), checked before
/// anything runs.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// Resume from this image instead of the one the manifest names.
    pub image: Option<PathBuf>,
    pub memory_mib: Option<u32>,
    pub cmdline: Option<String>,
    /// How the snapshot's data pages are faulted in at resume.
    pub prefault: Prefault,
    /// Which console output of the snapshot's guest a captured resume
    /// starts with.
    pub console: ConsolePrefix,
}

/// See [`Expect::console`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsolePrefix {
    /// Everything it printed: the session reads as one cold run that was
    /// also fed the snapshot's input (program test VMs).
    #[default]
    All,
    /// What it printed before it read the snapshot's input: that input was
    /// set-up or warm-up outside the session being checked (single-user
    /// test VMs, whose checks are the session from the first prompt).
    BeforeInput,
}

/// Where a resume puts the snapshot's pages before the guest runs.
///
/// Measured on PVM (README "Design notes"): a guest's first touch of a
/// 4 KiB page costs ~25 µs unless the host page is present and writable
/// (~4 µs); a 2 MiB host mapping, of anonymous memory or of a file's
/// page-cache folio, costs one fault for all of it. A write to a page of a
/// huge file mapping splits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefault {
    /// By the working set (`workingset.json`): regions the first answer only
    /// reads are shared huge mappings of the memory file, faulted in whole;
    /// the pages it touches in regions it writes are copied into private
    /// memory before the guest runs. The first resume of a snapshot learns
    /// the working set (slower, once).
    #[default]
    Learned,
    /// Every data page copied into private memory on huge pages, as a cold
    /// boot loads the image: fast guest, slow resume, no sharing.
    Copy,
    /// Every data page copied into private 4 KiB pages.
    Write,
    /// Every data page mapped read-only (shared) ahead of use.
    Read,
    /// Nothing ahead: every page on first touch.
    None,
}

impl Prefault {
    const ALL: [Prefault; 5] = [
        Prefault::Learned,
        Prefault::Copy,
        Prefault::Write,
        Prefault::Read,
        Prefault::None,
    ];

    /// Its `--prefault` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefault::Learned => "learned",
            Prefault::Copy => "copy",
            Prefault::Write => "write",
            Prefault::Read => "read",
            Prefault::None => "none",
        }
    }
}

impl std::str::FromStr for Prefault {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefault, String> {
        Prefault::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}`: expected learned, copy, write, read or none"))
    }
}

/// What a resume did with the working set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkingSetHow {
    /// None was used or learned (another `--prefault`, no userfaultfd, or
    /// the guest never answered).
    #[default]
    None,
    /// This resume recorded it.
    Learned,
    /// This resume placed pages by it.
    Used,
}

/// What a resume did with the working set.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkingSetUse {
    pub how: WorkingSetHow,
    /// Pages touched before the first answer.
    pub pages: usize,
    /// Of those, copied into private memory ahead of the guest.
    pub private_pages: usize,
    /// 2 MiB regions mapped shared and whole.
    pub shared_regions: usize,
}

impl WorkingSetUse {
    pub fn human(&self) -> String {
        match self.how {
            WorkingSetHow::Used => format!(
                "used ({} pages: {} private copies, {} shared 2 MiB regions)",
                self.pages, self.private_pages, self.shared_regions
            ),
            WorkingSetHow::Learned => format!(
                "learned now ({} pages, kept in {})",
                self.pages,
                workingset::FILE
            ),
            WorkingSetHow::None => "none".into(),
        }
    }
}

/// How the integrity check went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub ms: f64,
    /// Files hashed in full this time (not found in verified.json).
    pub hashed: Vec<String>,
    pub hashed_bytes: u64,
}

/// A snapshot checked and read, ready to restore.
pub struct Loaded {
    /// How long checking it took: part of a resume's time.
    took: Duration,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub verify: VerifyReport,
    /// The image the snapshot was taken from.
    pub image_path: PathBuf,
    /// The memory file, as checked.
    memory: File,
    vcpu: VcpuState,
    clock: kvm_clock_data,
    devices: DeviceState,
}

/// Reads and checks snapshot `dir` against `expect`: everything a resume
/// refuses is found here, before a VM exists.
pub fn load(dir: &Path, expect: &Expect) -> Result<Loaded, SnapshotError> {
    let t0 = Instant::now();
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mpath = dir.join(MANIFEST);
    if dir_name.contains(PARTIAL) {
        return Err(refused(
            dir,
            "is the temporary directory of a `pgkraft snapshot` that did not finish (it crashed \
             or was killed), not a snapshot",
            "remove it and take the snapshot again",
        ));
    }
    let text = match std::fs::read(&mpath) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refused(
                dir,
                format!("is not a pgkraft snapshot: it has no {MANIFEST}"),
                "take one with `pgkraft snapshot IMAGE --out DIR`",
            ));
        }
        Err(e) => return Err(io_err("read", &mpath)(e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        refused(
            &mpath,
            format!("is not a valid snapshot manifest ({e})"),
            "take the snapshot again",
        )
    })?;
    if manifest.format != FORMAT {
        return Err(refused(
            &mpath,
            format!(
                "is snapshot format {}, this pgkraft reads format {FORMAT}",
                manifest.format
            ),
            "take the snapshot again with this pgkraft",
        ));
    }
    let again = "take the snapshot again with `pgkraft snapshot`";

    // VM shape.
    if let Some(m) = expect.memory_mib
        && m != manifest.vm.memory_mib
    {
        return Err(refused(
            dir,
            format!(
                "VM shape mismatch: the snapshot's guest has {} MiB of memory, the test VM asks \
                 for {m} MiB (guest memory cannot change across a resume)",
                manifest.vm.memory_mib
            ),
            format!(
                "set memory_mib: {} in the test VM, or snapshot with memory_mib: {m}",
                manifest.vm.memory_mib
            ),
        ));
    }
    if let Some(c) = &expect.cmdline
        && *c != manifest.vm.cmdline
    {
        return Err(refused(
            dir,
            format!(
                "VM shape mismatch: the snapshot's program was started with arguments {:?}, the \
                 test VM gives {c:?} (they are in guest memory already)",
                manifest.vm.cmdline
            ),
            "use the same args in the test VM, or snapshot with the new ones",
        ));
    }

    let mut verified: Verified = std::fs::read(dir.join(VERIFIED_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut report = VerifyReport::default();
    let mut learned = false;

    // The image.
    let image_path = expect
        .image
        .clone()
        .unwrap_or_else(|| manifest.image.path.clone());
    let image_meta = std::fs::metadata(&image_path).map_err(|e| {
        refused(
            &image_path,
            format!("the snapshot's image cannot be read ({e})"),
            "restore the image, or pass its new location with --image",
        )
    })?;
    let image_canon = std::fs::canonicalize(&image_path).unwrap_or(image_path.clone());
    if !verified.knows(&image_canon, &image_meta, &manifest.image.sha256) {
        let f = File::open(&image_path).map_err(io_err("read image", &image_path))?;
        let sha = sha256_file(&f, image_meta.len()).map_err(io_err("read image", &image_path))?;
        report.hashed.push(image_path.display().to_string());
        report.hashed_bytes += image_meta.len();
        if sha != manifest.image.sha256 {
            return Err(refused(
                &image_path,
                format!(
                    "is not the image this snapshot was taken from: its sha256 is {sha}, the \
                     snapshot {} was taken from an image with sha256 {}",
                    dir.display(),
                    manifest.image.sha256
                ),
                format!(
                    "resume with the original image, or snapshot this one: `pgkraft snapshot {} --out DIR`",
                    image_path.display()
                ),
            ));
        }
        verified.record(image_canon, &image_meta, &sha);
        learned = true;
    }

    // State files, memory last.
    let mut small = BTreeMap::new();
    let mut memory = None;
    for name in [VCPU_FILE, VM_FILE, DEVICES_FILE, MEMORY_FILE] {
        let entry = manifest
            .files
            .get(name)
            .ok_or_else(|| refused(&mpath, format!("lists no `{name}`"), again))?;
        let path = dir.join(name);
        // Opened once: what is checked is what the resume uses.
        let mut file = File::open(&path)
            .map_err(|e| refused(&path, format!("is missing or unreadable ({e})"), again))?;
        let meta = file.metadata().map_err(io_err("read", &path))?;
        if meta.len() != entry.bytes {
            return Err(refused(
                &path,
                format!(
                    "is {} bytes, the manifest says {} (truncated or replaced)",
                    meta.len(),
                    entry.bytes
                ),
                again,
            ));
        }
        let altered = || {
            refused(
                &path,
                format!(
                    "has been altered: its sha256 does not match the manifest's {}",
                    entry.sha256
                ),
                again,
            )
        };
        if name == MEMORY_FILE {
            if !verified.knows(Path::new(name), &meta, &entry.sha256) {
                let sha = sha256_file(&file, meta.len()).map_err(io_err("read", &path))?;
                report.hashed.push(name.into());
                report.hashed_bytes += meta.len();
                if sha != entry.sha256 {
                    return Err(altered());
                }
                verified.record(name.into(), &meta, &sha);
                learned = true;
                // Hashing read it into small page-cache folios; resumes map
                // it best from 2 MiB ones, which a mapping's faults read.
                kvm::drop_cache(&file);
            }
            memory = Some(file);
        } else {
            let mut bytes = Vec::with_capacity(entry.bytes as usize);
            file.read_to_end(&mut bytes)
                .map_err(io_err("read", &path))?;
            if hex::encode(Sha256::digest(&bytes)) != entry.sha256 {
                return Err(altered());
            }
            small.insert(name, bytes);
        }
    }
    if manifest.memory.bytes != u64::from(manifest.vm.memory_mib) * MIB
        || manifest.files[MEMORY_FILE].bytes != manifest.memory.bytes
    {
        return Err(refused(&mpath, "memory size and VM shape disagree", again));
    }
    let bad = |name: &str, e: String| refused(&dir.join(name), format!("is damaged: {e}"), again);
    let vcpu = VcpuState::decode(&small[VCPU_FILE]).map_err(|e| bad(VCPU_FILE, e))?;
    let clock = decode_clock(&small[VM_FILE]).map_err(|e| bad(VM_FILE, e))?;
    let devices: DeviceState = serde_json::from_slice(&small[DEVICES_FILE])
        .map_err(|e| bad(DEVICES_FILE, e.to_string()))?;
    if devices.uart.in_buffer.len() > 64 {
        return Err(bad(
            DEVICES_FILE,
            "the UART input buffer is longer than its FIFO".into(),
        ));
    }
    if learned {
        // A read-only snapshot is simply verified every time.
        record_beside(
            dir,
            VERIFIED_FILE,
            &serde_json::to_vec_pretty(&verified).expect("json"),
        );
    }
    report.ms = ms(t0.elapsed());
    Ok(Loaded {
        took: t0.elapsed(),
        dir: dir.to_path_buf(),
        manifest,
        verify: report,
        image_path,
        memory: memory.expect("the memory file is checked above"),
        vcpu,
        clock,
        devices,
    })
}

/// What a resume through [`with_resume`] reports besides its run.
pub struct ResumeInfo {
    pub manifest: Manifest,
    pub verify: VerifyReport,
    pub working_set: WorkingSetUse,
}

/// Writes `name` into snapshot `dir`, best effort: records that only save
/// work later (verified.json, workingset.json) and are simply made again
/// when they cannot be written. Temporary file, then rename.
fn record_beside(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let ok = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = ok {
        let _ = std::fs::remove_file(&tmp);
        log::debug!("snapshot: {name} not recorded in {}: {e}", dir.display());
    }
}

/// A resumed run.
pub struct Resumed {
    pub outcome: RunOutcome,
    pub manifest: Manifest,
    pub verify: VerifyReport,
    pub working_set: WorkingSetUse,
}

/// Resumes snapshot `dir` and runs it like [`super::run`]: `cfg`'s console
/// and timeout apply; its memory and command line are the snapshot's.
/// Phases, in ms since this call: `vmm_ready` (state restored), `input`
/// (the pending read answered), `resumed` (the guest runs and says so: its
/// first sign of life), `first_exit` (its first VM exit), `first_answer`
/// (its first console output), `exit`.
pub fn resume(dir: &Path, cfg: &VmConfig, expect: &Expect) -> Result<Resumed, SnapshotError> {
    resume_inner(dir, cfg, expect, false, None)
}

/// `skip_input_before`: a captured console input that starts with what the
/// snapshot was fed before its ready point gets the rest only (a test VM's
/// `snapshot_after` + `stdin`, as a cold boot gets it).
fn resume_inner(
    dir: &Path,
    cfg: &VmConfig,
    expect: &Expect,
    skip_input_before: bool,
    preloaded: Option<Loaded>,
) -> Result<Resumed, SnapshotError> {
    super::settle();
    // A snapshot checked beforehand (to refuse it before anything else
    // ran): its check counts as if it had just happened.
    let now = Instant::now();
    let t0 = preloaded
        .as_ref()
        .and_then(|l| now.checked_sub(l.took))
        .unwrap_or(now);
    let vcpu_thread = VcpuThread::spawn()?;
    // Made before the snapshot is read: a refused snapshot just drops it.
    // (Creating it on another thread while the snapshot is read was
    // measured no faster on this 2-core host: the thread starts late.)
    let t = Instant::now();
    let vm = kvm::Vm::create(&super::open_kvm()?)?;
    let t_vm = t.elapsed();
    let loaded = match preloaded {
        Some(l) => l,
        None => load(dir, expect)?,
    };
    let t_load = loaded.verify.ms;
    let stripped;
    let cfg = match &cfg.console {
        Console::Capture { input } if skip_input_before => {
            let before = loaded.devices.input_before.as_bytes();
            stripped = VmConfig {
                mem_mib: cfg.mem_mib,
                cmdline: cfg.cmdline.clone(),
                timeout: cfg.timeout,
                console: Console::Capture {
                    input: input.strip_prefix(before).unwrap_or(input).to_vec(),
                },
            };
            &stripped
        }
        _ => cfg,
    };
    let Restored {
        machine,
        learner,
        mut working_set,
    } = restore(vm, &loaded, expect.prefault)?;
    log::debug!(
        "snapshot: resume setup {:?}: VM and vCPU {t_vm:?}, load+verify {t_load:.3} ms",
        t0.elapsed(),
    );
    let capture = matches!(cfg.console, Console::Capture { .. });
    let hooks = Hooks {
        idle: Idle {
            resume_read: Some(loaded.devices.pending_read),
            track: true,
            resumed: true,
            on_answer: learner.as_ref().map(Learner::at_answer),
            ..Idle::default()
        },
        console_prefix: match (capture, expect.console) {
            (false, _) => Vec::new(),
            (true, ConsolePrefix::All) => loaded.devices.console.clone().into_bytes(),
            (true, ConsolePrefix::BeforeInput) => {
                let b = loaded.devices.console.as_bytes();
                b[..loaded.devices.console_before_input.min(b.len())].to_vec()
            }
        },
        uart: Some(loaded.devices.uart.to_state()),
        on_ready: None,
    };
    let mem_bytes = loaded.manifest.memory.bytes;
    let outcome = vcpu_thread.run(machine, cfg, mem_bytes, true, t0, hooks);
    // The guest no longer runs: nothing can fault any more.
    if let Some(learner) = learner {
        match learner.finish() {
            Some(ws) => {
                working_set.pages = ws.pages.len();
                record_beside(dir, workingset::FILE, &ws.to_json());
            }
            None => working_set.how = WorkingSetHow::None,
        }
        // Filling pages read the file through small page-cache folios;
        // dropped, they come back as 2 MiB folios for the next resume.
        kvm::drop_cache(&loaded.memory);
    }
    Ok(Resumed {
        outcome: outcome?,
        manifest: loaded.manifest,
        verify: loaded.verify,
        working_set,
    })
}

/// A restored VM, and the working-set learner when this resume learns.
struct Restored {
    machine: Machine,
    learner: Option<Learner>,
    working_set: WorkingSetUse,
}

fn restore(vm: kvm::Vm, l: &Loaded, prefault: Prefault) -> Result<Restored, SnapshotError> {
    let t0 = Instant::now();
    let mem_bytes = l.manifest.memory.bytes;
    let mem_mib = l.manifest.vm.memory_mib;
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_bytes as usize)]).map_err(|e| {
            VmmError::Memory {
                mem_mib,
                detail: e.to_string(),
            }
        })?;
    let mpath = l.dir.join(MEMORY_FILE);
    let memfile = &l.memory;
    let mut learner = None;
    let mut working_set = WorkingSetUse::default();
    match prefault {
        Prefault::Copy => {
            // Everything private, on huge pages: what a cold boot does with
            // the image (memory.rs), here with all the data.
            kvm::use_huge_pages(&mem);
            let mut f = memfile;
            for &[gpa, len] in &l.manifest.memory.data_ranges {
                f.seek(io::SeekFrom::Start(gpa))
                    .map_err(io_err("read", &mpath))?;
                mem.read_exact_volatile_from(GuestAddress(gpa), &mut f, len as usize)
                    .map_err(|e| SnapshotError::Io {
                        what: "read",
                        path: mpath.clone(),
                        source: io::Error::other(e.to_string()),
                    })?;
            }
        }
        Prefault::Learned => {
            let sha = &l.manifest.files[MEMORY_FILE].sha256;
            match WorkingSet::read(&l.dir, sha, mem_bytes) {
                Some(ws) => {
                    let t = Instant::now();
                    map_data(&mem, l, memfile, &mpath)?;
                    let t_map = t.elapsed();
                    working_set =
                        place(&mem, mem_bytes, &ws).map_err(io_err("prefault", &mpath))?;
                    log::debug!(
                        "snapshot: working set: map {t_map:?}, place {:?}",
                        t.elapsed() - t_map
                    );
                }
                None => match Learner::start(&mem, memfile, sha) {
                    Ok(found) => {
                        learner = Some(found);
                        working_set.how = WorkingSetHow::Learned;
                    }
                    Err(e) => {
                        log::debug!("snapshot: working set not learned (userfaultfd: {e})");
                        map_data(&mem, l, memfile, &mpath)?;
                    }
                },
            }
        }
        Prefault::Write | Prefault::Read | Prefault::None => {
            map_data(&mem, l, memfile, &mpath)?;
            if prefault != Prefault::None {
                for &[gpa, len] in &l.manifest.memory.data_ranges {
                    kvm::populate(&mem, gpa, len, prefault == Prefault::Write)
                        .map_err(io_err("prefault", &mpath))?;
                }
            }
        }
    }
    let t_mem = t0.elapsed();
    let xsave2 = vm.vm().check_extension_int(Cap::Xsave2).max(0) as usize;
    let machine = Machine::new(vm, mem)?;
    let t_vcpu = t0.elapsed();
    // The clock before the MSRs: writing the kvmclock wall-clock MSR makes
    // KVM publish (host real time - KVM clock), which must use the restored
    // KVM clock. flags = 0: continue from the saved value, do not advance
    // it by the real time that passed (KVM_CLOCK_REALTIME would).
    let clock = kvm_clock_data {
        clock: l.clock.clock,
        flags: 0,
        ..Default::default()
    };
    machine
        .vm()
        .set_clock(&clock)
        .map_err(VmmError::ioctl("KVM_SET_CLOCK"))?;
    l.vcpu.apply(&machine, xsave2)?;
    log::debug!(
        "snapshot: restore: map memory {t_mem:?}, memslot {:?}, clock+vcpu \
         state {:?}",
        t_vcpu - t_mem,
        t0.elapsed() - t_vcpu
    );
    Ok(Restored {
        machine,
        learner,
        working_set,
    })
}

/// Maps the memory file `MAP_PRIVATE` over every 2 MiB region of guest RAM
/// that holds data (whole regions, so the host can map them with huge
/// pages; the file's holes read as zeros). Regions without data stay
/// anonymous memory.
fn map_data(
    mem: &GuestMemoryMmap,
    l: &Loaded,
    memfile: &File,
    mpath: &Path,
) -> Result<(), SnapshotError> {
    let mem_bytes = l.manifest.memory.bytes;
    let mut regions: Vec<[u64; 2]> = Vec::new();
    for &[gpa, len] in &l.manifest.memory.data_ranges {
        let start = gpa & !(workingset::REGION - 1);
        let end = (gpa + len)
            .next_multiple_of(workingset::REGION)
            .min(mem_bytes);
        match regions.last_mut() {
            Some([_, e]) if *e >= start => *e = (*e).max(end),
            _ => regions.push([start, end]),
        }
    }
    for [start, end] in regions {
        kvm::map_file_into(mem, start, end - start, memfile, start)
            .map_err(io_err("map", mpath))?;
    }
    Ok(())
}

fn populate_all(mem: &GuestMemoryMmap, runs: &[[u64; 2]]) -> io::Result<()> {
    runs.iter()
        .try_for_each(|&[gpa, len]| kvm::populate(mem, gpa, len, true))
}

/// Places pages as the working set says (see [`Prefault::Learned`]).
fn place(mem: &GuestMemoryMmap, mem_bytes: u64, ws: &WorkingSet) -> io::Result<WorkingSetUse> {
    let plan = ws.plan();
    let whole = |r: u64| workingset::REGION.min(mem_bytes - r);
    // Shared regions first: their page-cache folios must be read as 2 MiB
    // ones, before readahead for the written regions' pages around them can
    // fill the cache with small ones.
    for &r in &plan.shared_regions {
        kvm::advise_huge(mem, r, whole(r), true)?;
        kvm::populate(mem, r, whole(r), false)?;
    }
    for &r in &plan.written_regions {
        kvm::advise_huge(mem, r, whole(r), false)?;
    }
    // The private copies before the guest runs, on both cores. (Copying
    // while the guest already runs was slower: each copy invalidates KVM's
    // mappings, and while invalidations are in flight KVM neither maps a
    // faulting page's neighbours nor finishes the fault.)
    let runs = &plan.private_runs;
    let private_pages: u64 = runs.iter().map(|[_, l]| l / PAGE).sum();
    // A second thread pays off only for more than a few hundred pages.
    if private_pages < 256 {
        populate_all(mem, runs)?;
    } else {
        let (first, second) = runs.split_at(runs.len() / 2);
        std::thread::scope(|s| {
            let helper = s.spawn(|| populate_all(mem, first));
            populate_all(mem, second)?;
            helper
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("prefault thread panicked")))
        })?;
    }
    Ok(WorkingSetUse {
        how: WorkingSetHow::Used,
        pages: ws.pages.len(),
        private_pages: plan
            .private_runs
            .iter()
            .map(|[_, l]| (l / PAGE) as usize)
            .sum(),
        shared_regions: plan.shared_regions.len(),
    })
}

// ---------------------------------------------------------------------------
// Running other code (the smoke checks) against a resumed guest.

thread_local! {
    static REDIRECT: std::cell::RefCell<Option<Redirect>> = const { std::cell::RefCell::new(None) };
}

enum Redirect {
    Resume {
        dir: PathBuf,
        expect: Expect,
        /// Checked already: used by the first resume instead of loading.
        loaded: Option<Box<Loaded>>,
        resumed: Option<ResumeInfo>,
    },
    Snapshot {
        out: PathBuf,
        input_before: Vec<u8>,
        taken: Option<Result<SnapshotReport, SnapshotError>>,
    },
    Track,
}

/// Runs `f` with every [`super::run`] on this thread marking the `input`
/// and `first_answer` phases (see [`run_tracked`]): cold-boot figures for
/// code that boots through `run`, such as the smoke checks.
pub fn with_tracking<T>(f: impl FnOnce() -> T) -> T {
    with_redirect(Redirect::Track, f).0
}

/// Runs `f` with `redirect` in force for this thread's [`super::run`]
/// calls; returns what `f` returned and the redirect as `f` left it.
fn with_redirect<T>(redirect: Redirect, f: impl FnOnce() -> T) -> (T, Option<Redirect>) {
    REDIRECT.with(|r| *r.borrow_mut() = Some(redirect));
    let value = f();
    (value, REDIRECT.with(|r| r.borrow_mut().take()))
}

/// Runs `f` with the first [`super::run`] on this thread taking snapshot
/// `out` instead of running to the end: with the VM that run was given
/// (memory, arguments, timeout; code such as the smoke checks knows how to
/// boot its image), but `input_before` as the console input. Returns what
/// `f` returned (meaningless: the guest was stopped) and the snapshot.
pub fn with_snapshot<T>(
    out: &Path,
    input_before: &[u8],
    f: impl FnOnce() -> T,
) -> (T, Option<Result<SnapshotReport, SnapshotError>>) {
    let redirect = Redirect::Snapshot {
        out: out.to_path_buf(),
        input_before: input_before.to_vec(),
        taken: None,
    };
    match with_redirect(redirect, f) {
        (value, Some(Redirect::Snapshot { taken, .. })) => (value, taken),
        (value, _) => (value, None),
    }
}

/// Runs `f` with every [`super::run`] on this thread resuming snapshot `dir`
/// instead of booting its image, so code written against a booted guest
/// (the smoke checks, whatever mode) runs unchanged against a resumed one.
/// The run's console and timeout apply; memory and arguments are the
/// snapshot's (check them with [`load`] first, and pass what it returned as
/// `loaded`: the first resume then uses it instead of loading again). Also
/// returns the manifest, integrity-check report and working-set use of the
/// last resume.
pub fn with_resume<T>(
    dir: &Path,
    expect: &Expect,
    loaded: Option<Loaded>,
    f: impl FnOnce() -> T,
) -> (T, Option<ResumeInfo>) {
    let redirect = Redirect::Resume {
        dir: dir.to_path_buf(),
        expect: expect.clone(),
        loaded: loaded.map(Box::new),
        resumed: None,
    };
    match with_redirect(redirect, f) {
        (value, Some(Redirect::Resume { resumed, .. })) => (value, resumed),
        (value, _) => (value, None),
    }
}

/// Called by [`super::run`]: `Some` when a [`with_resume`] or
/// [`with_snapshot`] is active.
pub(super) fn redirected(image: &Path, cfg: &VmConfig) -> Option<Result<RunOutcome, VmmError>> {
    enum What {
        Resume(PathBuf, Expect, Option<Box<Loaded>>),
        Snapshot(PathBuf, Vec<u8>),
        Track,
    }
    let what = REDIRECT.with(|r| match r.borrow_mut().as_mut()? {
        Redirect::Resume {
            dir,
            expect,
            loaded,
            ..
        } => Some(What::Resume(dir.clone(), expect.clone(), loaded.take())),
        Redirect::Snapshot {
            out,
            input_before,
            taken: None,
            ..
        } => Some(What::Snapshot(out.clone(), input_before.clone())),
        Redirect::Snapshot { .. } => None,
        Redirect::Track => Some(What::Track),
    })?;
    Some(match what {
        What::Track => run_tracked(image, cfg),
        What::Resume(dir, expect, loaded) => {
            match resume_inner(&dir, cfg, &expect, true, loaded.map(|l| *l)) {
                Ok(r) => {
                    REDIRECT.with(|x| {
                        if let Some(Redirect::Resume { resumed, .. }) = x.borrow_mut().as_mut() {
                            *resumed = Some(ResumeInfo {
                                manifest: r.manifest,
                                verify: r.verify,
                                working_set: r.working_set,
                            });
                        }
                    });
                    Ok(r.outcome)
                }
                Err(SnapshotError::Vmm(e)) => Err(e),
                Err(e) => Err(VmmError::BadImage {
                    path: Some(dir),
                    detail: e.to_string(),
                }),
            }
        }
        What::Snapshot(out, input_before) => {
            let cfg = VmConfig {
                mem_mib: cfg.mem_mib,
                cmdline: cfg.cmdline.clone(),
                timeout: cfg.timeout,
                console: Console::Capture {
                    input: input_before,
                },
            };
            let taken = snapshot(image, &cfg, &out);
            let console = match &taken {
                Ok(r) => r.console.clone().into_bytes(),
                Err(_) => Vec::new(),
            };
            REDIRECT.with(|x| {
                if let Some(Redirect::Snapshot { taken: t, .. }) = x.borrow_mut().as_mut() {
                    *t = Some(taken);
                }
            });
            // The caller's run ends here (an error, so that nothing takes
            // the stopped guest for a finished one); `with_snapshot`
            // returns the snapshot.
            Err(VmmError::Guest {
                reason: "stopped at its ready point for `pgkraft snapshot`".into(),
                regs: String::new(),
                console,
            })
        }
    })
}

/// The resume figures of a run, in ms since the resume started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResumeTimes {
    /// State restored, the vCPU about to run.
    pub restored_ms: Option<f64>,
    /// The guest's first sign of life: its libOS reports that it runs
    /// again (phase `resumed`; an image whose libOS predates that phase:
    /// its first VM exit).
    pub resume_ms: Option<f64>,
    /// Its first console output: the answer to the first input.
    pub first_answer_ms: Option<f64>,
}

impl ResumeTimes {
    pub fn of(phases: &[super::PhaseMark]) -> ResumeTimes {
        ResumeTimes::by(|name| phases.iter().find(|p| p.name == name).map(|p| ms(p.at)))
    }

    /// From a lookup of phase name to ms.
    pub fn by(at: impl Fn(&str) -> Option<f64>) -> ResumeTimes {
        ResumeTimes {
            restored_ms: at("vmm_ready"),
            resume_ms: at("resumed").or_else(|| at("first_exit")),
            first_answer_ms: at("first_answer"),
        }
    }
}
