//! Snapshots of a running guest and resuming from them (docs/ARCHITECTURE.md
//! §5).
//!
//! **Ready point.** [`take`] boots the image, feeds it the input it is
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
//! **Device state.** `devices.json` holds each device's own state type,
//! each with its version (the UART's registers, the hypercall device's
//! pending read, the console so far); a state of another version is
//! refused by name. The manifest's `format` covers the layout of the whole
//! directory: a snapshot of another format is refused before anything runs,
//! with both format numbers in the error.
//!
//! Files: `format` (the binary vCPU/VM state codec), `save` (writing a
//! stopped VM), `verify` (the integrity cache), `load` (reading and checking
//! everything before a VM exists), `restore` (a VM from a loaded snapshot,
//! and where its pages go).
//!
//! **What is saved.** vCPU: regs, sregs, FPU, XSAVE, XCRs, debug registers,
//! every MSR KVM lists and lets us read (TSC and the kvmclock MSRs among
//! them), pending events, MP state, and the CPUID the guest was given. VM:
//! the KVM clock. Devices: the UART's registers, the pending console read,
//! and the console output so far (so a resumed run's output reads as the
//! whole session). There is no in-kernel interrupt controller or timer in
//! this runner (the guest polls), so there is no LAPIC/IOAPIC/PIT state; the
//! manifest says so. Guest memory: one sparse file of guest-physical RAM,
//! every page at its guest address (the image's pages too); zero pages are
//! holes.
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

mod format;
pub(crate) mod hibernate;
mod load;
mod restore;
mod save;
mod verify;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::VmmError;
use crate::console::ConsoleState;
use crate::devices::hypercall::HypercallState;
use crate::devices::uart::UartState;
use crate::workingset;

pub use load::{Loaded, load};
pub use restore::{Restored, Resumed, restore, resume};
pub use save::{SnapshotReport, save, take};

pub const MANIFEST: &str = "manifest.json";
pub(crate) const VCPU_FILE: &str = "vcpu0.state";
pub(crate) const VM_FILE: &str = "vm.state";
pub(crate) const DEVICES_FILE: &str = "devices.json";
pub(crate) const MEMORY_FILE: &str = "memory.raw";
pub(crate) const VERIFIED_FILE: &str = "verified.json";

/// 3: devices.json holds one versioned state per device.
pub const FORMAT: u32 = 3;
pub(crate) const PAGE: u64 = 4096;
pub(crate) const PARTIAL: &str = ".partial-";

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

/// devices.json: each device's own versioned state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeviceStates {
    pub hypercall: HypercallState,
    pub uart: UartState,
    pub console: ConsoleState,
}

pub(crate) fn refused(
    path: &Path,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> SnapshotError {
    SnapshotError::Refused {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Writes `name` into snapshot `dir`, best effort: records that only save
/// work later (verified.json, workingset.json) and are simply made again
/// when they cannot be written. Temporary file, then rename.
pub(crate) fn record_beside(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let ok = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = ok {
        let _ = std::fs::remove_file(&tmp);
        log::debug!("snapshot: {name} not recorded in {}: {e}", dir.display());
    }
}

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
    pub fn of(phases: &[crate::PhaseMark]) -> ResumeTimes {
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
