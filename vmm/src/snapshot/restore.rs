//! A VM from a loaded snapshot, and where its pages go.
//!
//! **Page placement** ([`Prefault`]), measured on PVM (README "Design
//! notes", `ci/probe-page-cost.py`): a guest's first touch of a 4 KiB page
//! costs ~25 µs unless the host page is present and writable (~4 µs); a
//! 2 MiB host mapping, of anonymous memory or of a file's page-cache folio,
//! costs one fault for all of it. So by default a resume maps the regions
//! the first answer only reads as shared 2 MiB folios of the memory file,
//! and copies the pages it touches in regions it writes into private memory
//! before the guest runs.
//!
//! docs/ARCHITECTURE.md §5.

use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use kvm_bindings::kvm_clock_data;
use kvm_ioctls::Cap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::load::{Loaded, load};
use super::{
    ConsolePrefix, Expect, MEMORY_FILE, Manifest, PAGE, Prefault, SnapshotError, VerifyReport,
    WorkingSetHow, WorkingSetUse, io_err, record_beside,
};
use crate::devices::Devices;
use crate::devices::hypercall::Hypercall;
use crate::devices::uart::Uart;
use crate::kvm::{self, Machine};
use crate::timeline::Timeline;
use crate::vm::{self, Parts, VcpuThread, Vm};
use crate::workingset::{self, Learner, WorkingSet};
use crate::{Console, RunOutcome, VmConfig, VmmError};

/// A VM restored from a snapshot, not yet running, with what the restore
/// found; [`Restored::run`] runs it.
pub struct Restored {
    pub vm: Vm,
    pub manifest: Manifest,
    pub verify: VerifyReport,
    pub working_set: WorkingSetUse,
    /// This resume learns the working set: finished after the run.
    learning: Option<(Learner, File, std::path::PathBuf)>,
}

/// A resumed run.
pub struct Resumed {
    pub outcome: RunOutcome,
    pub manifest: Manifest,
    pub verify: VerifyReport,
    pub working_set: WorkingSetUse,
}

impl Restored {
    /// Runs the restored guest like [`Vm::run`], then keeps the working set
    /// a learning resume recorded.
    pub fn run(self) -> Result<Resumed, SnapshotError> {
        let Restored {
            vm,
            manifest,
            verify,
            mut working_set,
            learning,
        } = self;
        let outcome = vm.run();
        // The guest no longer runs: nothing can fault any more.
        if let Some((learner, memory, dir)) = learning {
            match learner.finish() {
                Some(ws) => {
                    working_set.pages = ws.pages.len();
                    record_beside(&dir, workingset::FILE, &ws.to_json());
                }
                None => working_set.how = WorkingSetHow::None,
            }
            // Filling pages read the file through small page-cache folios;
            // dropped, they come back as 2 MiB folios for the next resume.
            kvm::drop_cache(&memory);
        }
        Ok(Resumed {
            outcome: outcome?,
            manifest,
            verify,
            working_set,
        })
    }
}

/// Loads, restores and runs snapshot `dir` (see [`restore`]).
pub fn resume(dir: &Path, cfg: &VmConfig, expect: &Expect) -> Result<Resumed, SnapshotError> {
    restore(load(dir, expect)?, cfg, expect)?.run()
}

/// A VM from snapshot `loaded`, as [`load`] checked it against `expect`:
/// `cfg`'s console and timeout apply; its memory and command line are the
/// snapshot's. The run's clock counts the load and its integrity check as
/// if they had just happened: a resume's figures include them. Phases, in
/// ms since then:
/// `vmm_ready` (state restored), `input` (the pending read answered),
/// `resumed` (the guest runs and says so: its
/// first sign of life), `first_exit` (its first VM exit), `first_answer`
/// (its first console output), `exit`.
pub fn restore(loaded: Loaded, cfg: &VmConfig, expect: &Expect) -> Result<Restored, SnapshotError> {
    vm::settle();
    let now = Instant::now();
    let t0 = now.checked_sub(loaded.took).unwrap_or(now);
    let placement = crate::placement::Placement::new(cfg.vcpu_cpu)?;
    let thread = VcpuThread::spawn()?;
    let t = Instant::now();
    let shell = kvm::VmShell::create(&crate::boot::open_kvm()?)?;
    let t_vm = t.elapsed();
    let RestoredMachine {
        machine,
        learner,
        working_set,
    } = restore_machine(shell, &loaded, expect.prefault)?;
    log::debug!(
        "snapshot: resume setup {:?}: VM and vCPU {t_vm:?}, load+verify {:.3} ms",
        t0.elapsed(),
        loaded.verify.ms,
    );
    if cfg.net.is_some() {
        return Err(VmmError::NetOnResume.into());
    }
    if cfg.volume.is_some() {
        return Err(VmmError::VolumeOnResume.into());
    }
    let vm::Controls { stop, stop_evt } = vm::Controls::new()?;
    let mut console = vm::console(&cfg.console, &stop_evt);
    if matches!(cfg.console, Console::Capture { .. }) {
        let saved = &loaded.devices.console;
        let prefix = match expect.console {
            ConsolePrefix::All => saved.output.as_bytes(),
            ConsolePrefix::BeforeInput => {
                let b = saved.output.as_bytes();
                &b[..saved.output_before_input.min(b.len())]
            }
        };
        console
            .write(prefix)
            .map_err(io_err("replay the console of", &loaded.dir))?;
    }
    let uart = Uart::restore(&loaded.devices.uart).map_err(|e| {
        super::refused(
            &loaded.dir,
            format!("has a damaged device state: {e}"),
            "take the snapshot again",
        )
    })?;
    let mut hypercall = Hypercall::new(stop.clone());
    hypercall.watch.track = true;
    hypercall.watch.resumed = true;
    hypercall.discard = false;
    hypercall.watch.on_answer = learner.as_ref().map(Learner::at_answer);
    let mut devices = Devices::new(uart, hypercall, console, Timeline::new(t0), &stop_evt)
        .map_err(|source| VmmError::Thread { source })?;
    devices.placement = placement;
    let vm = Vm::new(Parts {
        machine,
        devices,
        thread,
        stop,
        stop_evt,
        timeout: cfg.timeout,
        t0,
        mem_bytes: loaded.manifest.memory.bytes,
        cmdline: loaded.manifest.vm.cmdline.clone(),
        image: None,
        io_bitmap: true,
        resume_read: Some(loaded.devices.hypercall.clone()),
    });
    let Loaded {
        dir,
        manifest,
        verify,
        memory,
        ..
    } = loaded;
    Ok(Restored {
        vm,
        manifest,
        verify,
        working_set,
        learning: learner.map(|l| (l, memory, dir)),
    })
}

/// Restored state and memory, and the working-set learner when this resume
/// learns.
struct RestoredMachine {
    machine: Machine,
    learner: Option<Learner>,
    working_set: WorkingSetUse,
}

fn restore_machine(
    vm: kvm::VmShell,
    l: &Loaded,
    prefault: Prefault,
) -> Result<RestoredMachine, SnapshotError> {
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
            copy_data(&mem, &l.manifest.memory, memfile).map_err(io_err("read", &mpath))?
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
    Ok(RestoredMachine {
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
    map_file_regions(mem, &l.manifest.memory, memfile).map_err(io_err("map", mpath))
}

/// Everything private, on huge pages: what a cold boot does with the image
/// (memory.rs), here with all the data of the memory file `info`
/// describes. Guest RAM stays anonymous memory. More than a few MiB are
/// copied on two threads, each with its own open file: the copy is
/// page-cache reads and fresh huge pages' zeroing, which scale with cores
/// (a wake's 24 MB: 12 ms on one thread).
pub(crate) fn copy_data(
    mem: &GuestMemoryMmap,
    info: &super::MemoryInfo,
    memfile: &File,
) -> io::Result<()> {
    kvm::use_huge_pages(mem);
    let total: u64 = info.data_ranges.iter().map(|[_, l]| l).sum();
    if total < 8 << 20 {
        return copy_ranges(mem, &info.data_ranges, memfile);
    }
    // Two halves by bytes, cut at a 2 MiB boundary so no huge page is
    // filled from both threads.
    let mut cut = total / 2;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for &[gpa, len] in &info.data_ranges {
        if cut == 0 {
            second.push([gpa, len]);
            continue;
        }
        let end = (gpa + cut.min(len)).next_multiple_of(workingset::REGION);
        let take = (end - gpa).min(len);
        first.push([gpa, take]);
        if take < len {
            second.push([gpa + take, len - take]);
        }
        cut = cut.saturating_sub(take);
    }
    let own = File::open(format!("/proc/self/fd/{}", memfile.as_raw_fd()))?;
    std::thread::scope(|s| {
        let helper = s.spawn(|| copy_ranges(mem, &first, &own));
        copy_ranges(mem, &second, memfile)?;
        helper
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("copy thread panicked")))
    })
}

/// Reads `ranges` of `file` into guest RAM at the same addresses.
fn copy_ranges(mem: &GuestMemoryMmap, ranges: &[[u64; 2]], mut file: &File) -> io::Result<()> {
    for &[gpa, len] in ranges {
        file.seek(io::SeekFrom::Start(gpa))?;
        mem.read_exact_volatile_from(GuestAddress(gpa), &mut file, len as usize)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// [`map_data`] for a memory file described by `info`.
pub(crate) fn map_file_regions(
    mem: &GuestMemoryMmap,
    info: &super::MemoryInfo,
    memfile: &File,
) -> io::Result<()> {
    let mem_bytes = info.bytes;
    let mut regions: Vec<[u64; 2]> = Vec::new();
    for &[gpa, len] in &info.data_ranges {
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
        kvm::map_file_into(mem, start, end - start, memfile, start)?;
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
