//! pgkraft's KVM runner (docs/ARCHITECTURE.md §4): boots a
//! pgkraft image through its direct 64-bit entry, serves its devices, stops
//! it at its ready point, snapshots and restores it. It knows nothing of
//! recipes or PostgreSQL; the contract with the guest is `pgkraft_abi`.
//!
//! The caller drives a VM through two entry points that both give it a
//! [`Vm`]: [`boot`] (a cold boot of a [`BootImage`]) and
//! [`snapshot::restore`] (a snapshot [`snapshot::load`]ed and checked; its
//! [`snapshot::Restored`] holds the `Vm` and runs it).
//! [`Vm::run`] runs it to its end; [`Vm::run_to_ready`] stops it where it
//! first waits for console input, and [`snapshot::save`] writes that
//! stopped VM to disk.
//!
//! Layout: `boot` (cold boot), `vm` (the VM, its vCPU thread and exit
//! loop), `bus` and `devices/` (one file per device), `console`,
//! `timeline`, `image` (ELF and boot note), `memory` and `kvm` (guest RAM
//! and the ioctl wrappers), `vcpu` (long-mode setup), `virtio/` (the
//! virtio-mmio transport, virtio-net and virtio-9p), `net/` (the network
//! backends and port publishing), `p9/` (the volume's 9P2000.L server on a
//! host directory), `snapshot/` (format,
//! save, verify, load, restore), `workingset` and `uffd` (learning which
//! pages a resume touches).
#![deny(unsafe_code)]

mod boot;
mod bus;
mod console;
mod devices;
mod error;
mod image;
mod kvm;
mod memory;
pub mod net;
mod p9;
mod placement;
pub mod snapshot;
mod timeline;
mod uffd;
mod vcpu;
mod virtio;
mod vm;
mod workingset;

use std::time::Duration;

use pgkraft_abi::BootNote;

pub use boot::boot;
pub use error::VmmError;
pub use image::BootImage;
pub use net::{NetConfig, PublishRule};
pub use p9::VolumeError;
pub use snapshot::hibernate::{
    HibernateConfig, HibernateReport, Hibernated, IdlePolicy, Served, Wake, WakeCause, WakeTimes,
};
pub use timeline::MAX_OUTPUT_MARKS;
pub use vm::{Paused, Ready, Vm};

pub(crate) const MIB: u64 = 1 << 20;

/// Signals for the guest's first process, sent from any host thread. The
/// guest learns of them at its next `hc::WAIT` (an idle guest is in one):
/// the wait ends at once and its result carries them (`pgkraft_abi::hc`).
#[derive(Clone)]
pub struct GuestSignals {
    pending: std::sync::Arc<std::sync::atomic::AtomicU32>,
    evt: std::sync::Arc<vmm_sys_util::eventfd::EventFd>,
}

impl GuestSignals {
    pub fn new() -> std::io::Result<GuestSignals> {
        Ok(GuestSignals {
            pending: Default::default(),
            evt: std::sync::Arc::new(vmm_sys_util::eventfd::EventFd::new(
                libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
            )?),
        })
    }

    /// Ask for `sig` (1..=31) to be delivered.
    pub fn send(&self, sig: u8) {
        if (1..=31).contains(&sig) {
            self.pending
                .fetch_or(1 << sig, std::sync::atomic::Ordering::SeqCst);
            let _ = self.evt.write(1);
        }
    }

    /// The signals asked for since the last take (bit n = signal n).
    pub(crate) fn take(&self) -> u32 {
        let _ = self.evt.read();
        self.pending.swap(0, std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.evt.as_raw_fd()
    }
}

pub struct VmConfig {
    pub mem_mib: u32,
    /// Signals the host sends the guest's first process while it runs
    /// (`pgkraft serve`: SIGINT, PostgreSQL's fast shutdown); `None`: none.
    pub signals: Option<GuestSignals>,
    /// Shell-quoted program arguments passed via BootInfo.cmdline; empty = the image's baked-in args.
    pub cmdline: String,
    pub timeout: Option<Duration>,
    pub console: Console,
    /// One virtio-net device on the user-mode link with these ports
    /// published, or on a tap device; `None`: no network device.
    pub net: Option<NetConfig>,
    /// The data volume: a host directory served to the guest with
    /// virtio-9p in virtio-mmio slot [`pgkraft_abi::VOLUME_MMIO_SLOT`];
    /// `None`: no volume.
    pub volume: Option<VolumeConfig>,
    /// Hibernate when no client has been connected to the published ports
    /// for a while ([`Vm::serve`]); needs `net` with published ports.
    pub hibernate: Option<HibernateConfig>,
    /// The host CPU the vCPU thread has to itself; the VM's other threads
    /// keep to the process's other CPUs (`placement.rs`). `None`: wherever
    /// the host's scheduler puts them.
    pub vcpu_cpu: Option<usize>,
}

/// A host directory the guest mounts at file level (9P2000.L over
/// virtio-9p, docs/ARCHITECTURE.md §4 "Volume").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeConfig {
    pub dir: std::path::PathBuf,
    /// The mount tag the guest looks for ([`pgkraft_abi::VOLUME_TAG`]).
    pub tag: String,
}

impl VolumeConfig {
    /// `dir` under the standard tag.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> VolumeConfig {
        VolumeConfig {
            dir: dir.into(),
            tag: pgkraft_abi::VOLUME_TAG.into(),
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_mib: 128,
            cmdline: String::new(),
            timeout: None,
            console: Console::Stdio,
            net: None,
            volume: None,
            signals: None,
            hibernate: None,
            vcpu_cpu: None,
        }
    }
}

pub enum Console {
    /// Guest output streamed to our stdout as it comes; guest input read from our stdin.
    Stdio,
    /// Guest output captured (returned in RunOutcome.console); guest input served from this buffer, then EOF.
    Capture { input: Vec<u8> },
    /// Guest output is a log: to our stderr, or appended to this file;
    /// no input (end of file). `pgkraft serve`.
    Log(Option<std::fs::File>),
}

#[derive(Debug)]
pub struct RunOutcome {
    pub exit: GuestExit,
    /// Captured output (empty with [`Console::Stdio`]).
    pub console: Vec<u8>,
    /// In order: "vmm_ready", then each guest [`Phase`] by name, then "exit".
    pub phases: Vec<PhaseMark>,
    /// Number of VM exits, for the benchmarks.
    pub exits: u64,
    /// With [`Console::Capture`]: after each console write, when it came and
    /// how many bytes had been captured by then (at most [`MAX_OUTPUT_MARKS`]),
    /// so a caller can tell when a given piece of output arrived.
    pub output_marks: Vec<OutputMark>,
    /// Guest RAM when the guest stopped; only with [`Console::Capture`] (the
    /// runs that report), as it means a pass over resident RAM.
    pub memory: Option<MemoryUse>,
}

/// Guest RAM as the host sees it when the guest stops. The libOS never
/// gives pages back, so both are high-water marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryUse {
    /// Host memory behind guest RAM: pages the guest (or the copied image)
    /// made the host allocate, huge pages counted whole. For a resumed
    /// guest, pages mapped from the snapshot count when they are in the
    /// host's page cache, shared or not.
    pub resident_bytes: u64,
    /// Of those, 4 KiB pages holding anything but zeros: what the guest
    /// actually used, image included.
    pub data_bytes: u64,
}

/// See [`RunOutcome::output_marks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputMark {
    /// Since `run()` was called.
    pub at: Duration,
    /// Bytes of console output captured up to and including this write.
    pub bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseMark {
    pub name: &'static str,
    /// Since `run()` was called.
    pub at: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest wrote this byte to `PORT_EXIT`.
    Status(u8),
    /// `VmConfig::timeout` passed first.
    Timeout,
    /// The guest died (triple fault, or `hlt` with interrupts off). `regs`
    /// starts with a line saying which, then a register dump.
    Shutdown { regs: String },
}

/// Whether the vCPU could have host CPU `cpu` to itself
/// ([`VmConfig::vcpu_cpu`]): checked by every boot, and by a caller that
/// wants the answer before it prepares anything else.
pub fn check_vcpu_cpu(cpu: usize) -> Result<(), VmmError> {
    placement::Placement::new(Some(cpu)).map(|_| ())
}

/// The boot note of an image, without booting it (`pgkraft inspect`).
pub fn read_boot_note(elf_bytes: &[u8]) -> Result<BootNote, VmmError> {
    Ok(image::parse(elf_bytes)?.note)
}

/// Boots `image` and runs it until it exits, dies, or `cfg.timeout` passes.
pub fn run(image: &BootImage, cfg: &VmConfig) -> Result<RunOutcome, VmmError> {
    boot(image, cfg)?.run()
}

/// [`run`] for the image file at `path`.
pub fn run_file(path: &std::path::Path, cfg: &VmConfig) -> Result<RunOutcome, VmmError> {
    run(&BootImage::open(path)?, cfg)
}
