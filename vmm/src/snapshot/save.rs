//! Writing a VM stopped at its ready point ([`Paused`]) to a snapshot
//! directory, atomically: everything goes into `.NAME.partial-XXXX` next to
//! the target, fsynced, the manifest last, then renamed into place.
//!
//! docs/ARCHITECTURE.md §5.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::format::{VcpuState, encode_clock};
use super::verify::{Verified, sha256_file};
use super::{
    ClockInfo, DEVICES_FILE, DeviceStates, FORMAT, FileEntry, ImageRef, MANIFEST, MEMORY_FILE,
    Manifest, MemoryInfo, PAGE, PARTIAL, Shape, SnapshotError, VCPU_FILE, VERIFIED_FILE, VM_FILE,
    io_err, ms, refused,
};
use crate::console::{ConsoleIn, ConsoleState};
use crate::vm::{Paused, Ready};
use crate::{BootImage, GuestExit, VmConfig, VmmError, boot, kvm};

/// What a snapshot did.
#[derive(Debug, Serialize)]
pub struct SnapshotReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The console output up to the ready point.
    pub console: String,
}

/// Boots `image` with `cfg` (its console must be `Capture`: the input fed
/// before the ready point), runs it to its ready point and saves it to
/// snapshot directory `out`.
pub fn take(
    image: &BootImage,
    cfg: &VmConfig,
    out: &Path,
) -> Result<SnapshotReport, SnapshotError> {
    if !matches!(cfg.console, crate::Console::Capture { .. }) {
        return Err(refused(
            out,
            "a snapshot needs captured console input",
            "use Console::Capture",
        ));
    }
    check_out(out)?;
    match boot(image, cfg)?.run_to_ready()? {
        Ready::Paused(paused) => save(*paused, image, out),
        Ready::Ended(outcome) => {
            let how = match &outcome.exit {
                GuestExit::Status(s) => format!("exited with status {s}"),
                GuestExit::Timeout => "ran into the timeout".into(),
                GuestExit::Shutdown { regs } => {
                    format!("died ({})", regs.lines().next().unwrap_or(""))
                }
            };
            let console = String::from_utf8_lossy(&outcome.console);
            Err(SnapshotError::NotReady {
                how,
                console: if console.is_empty() {
                    String::new()
                } else {
                    format!("\nconsole output:\n{console}")
                },
            })
        }
    }
}

/// Refuses an output path that is no place for a snapshot.
fn check_out(out: &Path) -> Result<(String, PathBuf), SnapshotError> {
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
    Ok((name, parent))
}

/// Saves `paused`, booted from `image`, as snapshot directory `out`
/// (replacing an older snapshot there, never anything else).
pub fn save(
    mut paused: Paused,
    image: &BootImage,
    out: &Path,
) -> Result<SnapshotReport, SnapshotError> {
    let (name, parent) = check_out(out)?;
    if paused.image != Some(image.id()) {
        return Err(refused(
            image.path(),
            "is not the image this VM booted (a resumed VM cannot be snapshotted again)",
            "save the VM with the image it was booted from",
        ));
    }
    std::fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{PARTIAL}"))
        .tempdir_in(&parent)
        .map_err(io_err("create a temporary directory in", &parent))?;
    let dir = tmp.path();
    let image_path = image.path();
    let image_sha =
        sha256_file(image.file(), image.file_bytes()).map_err(io_err("read image", image_path))?;
    let image_meta = image
        .file()
        .metadata()
        .map_err(io_err("read image", image_path))?;

    let (msr_index, xsave2) = super::format::vcpu_shape()?;
    // Timed from here: hashing the image and asking KVM which MSRs exist
    // are not part of saving the VM.
    let t_save = std::time::Instant::now();

    let hypercall = paused
        .devices
        .hypercall
        .state()
        .expect("a paused VM stopped in a console read");
    let vcpu_state = VcpuState::capture(paused.machine.vcpu(), msr_index, *xsave2)?;
    let clock = paused
        .machine
        .vm()
        .get_clock()
        .map_err(VmmError::ioctl("KVM_GET_CLOCK"))?;
    let console = String::from_utf8_lossy(paused.console()).into_owned();
    let input_before = match &paused.devices.console.input {
        ConsoleIn::Buffer { data, .. } => data.clone(),
        ConsoleIn::Stdin { .. } => Vec::new(),
    };
    let states = DeviceStates {
        hypercall,
        uart: paused.devices.uart.state(),
        console: ConsoleState {
            version: ConsoleState::VERSION,
            output: console.clone(),
            input_before: String::from_utf8_lossy(&input_before).into_owned(),
            output_before_input: paused
                .devices
                .hypercall
                .watch
                .console_at_input
                .unwrap_or(console.len()),
        },
    };
    let mut files = BTreeMap::new();
    for (name, bytes) in [
        (VCPU_FILE, vcpu_state.encode()),
        (VM_FILE, encode_clock(&clock)),
        (
            DEVICES_FILE,
            serde_json::to_vec_pretty(&states).expect("json"),
        ),
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
    let (memory, mem_sha) = write_memory(
        paused.machine.mem(),
        paused.mem_bytes,
        &dir.join(MEMORY_FILE),
        Keep::Durable,
    )?;
    let mem_sha = mem_sha.expect("a durable memory file is hashed");
    files.insert(
        MEMORY_FILE.to_string(),
        FileEntry {
            bytes: memory.bytes,
            sha256: mem_sha.clone(),
        },
    );
    let save_took = t_save.elapsed();

    let manifest = Manifest {
        format: FORMAT,
        pgkraft_version: env!("CARGO_PKG_VERSION").into(),
        image: ImageRef {
            path: std::fs::canonicalize(image_path).map_err(io_err("resolve", image_path))?,
            sha256: image_sha.clone(),
            bytes: image.file_bytes(),
        },
        vm: Shape {
            memory_mib: (paused.mem_bytes >> 20) as u32,
            vcpus: 1,
            cmdline: std::mem::take(&mut paused.cmdline),
        },
        ready_point: "the guest's first console read with no input left (CONSOLE_READ hypercall)"
            .into(),
        input_before_bytes: input_before.len() as u64,
        irqchip: "none: this runner has no in-kernel interrupt controller, LAPIC or PIT (the \
                  guest polls), so there is no such state to save"
            .into(),
        clock: ClockInfo {
            kvmclock_ns: clock.clock,
            policy: "KVM clock restored to this value (monotonic continues, time asleep not \
                     counted); wall clock re-read from the host at resume"
                .into(),
        },
        memory,
        files,
        taken_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        boot_to_ready_ms: ms(paused.ready_at),
        save_ms: ms(save_took),
    };
    // The guest is saved: tear it down before the file work below.
    drop(paused);
    // Identity records first (the files' inodes survive the rename), the
    // manifest last: a directory without one is never a snapshot.
    let mut verified = Verified::default();
    if let Ok(meta) = std::fs::metadata(dir.join(MEMORY_FILE)) {
        verified.record(MEMORY_FILE.into(), &meta, &mem_sha);
    }
    verified.record(manifest.image.path.clone(), &image_meta, &image_sha);
    write_synced(
        &dir.join(VERIFIED_FILE),
        &serde_json::to_vec_pretty(&verified).expect("json"),
    )?;
    write_synced(
        &dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&manifest).expect("json"),
    )?;
    if std::env::var_os("PGKRAFT_TEST_CRASH_SNAPSHOT").is_some() {
        // For the tests: die the way a crash would, before the rename.
        std::process::abort();
    }
    sync_dir(dir)?;
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
        console,
    })
}

/// How a memory file is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// A snapshot: hashed, synced to disk, its page cache dropped.
    Durable,
    /// A hibernation's: read back by this process only, so neither hashed
    /// nor synced (a host crash loses the VM with the process anyway).
    ForThisProcess,
}

/// Guest RAM into a sparse file, each page at its guest address: zero
/// pages are holes. Returns its description and (`Keep::Durable`) the
/// sha256 of its logical content.
pub(crate) fn write_memory(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    path: &Path,
    keep: Keep,
) -> Result<(MemoryInfo, Option<String>), SnapshotError> {
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
    // A hibernation skips what the guest never touched: reading it would
    // fault in a zero page each (512 MiB of mostly untouched RAM took
    // ~0.7 s to save that way).
    let in_use = match keep {
        Keep::Durable => None,
        Keep::ForThisProcess => {
            Some(pages_in_use(mem).map_err(io_err("read the page map for", path))?)
        }
    };
    let mut gpa = 0u64;
    while gpa < mem_bytes {
        let n = ((mem_bytes - gpa) as usize).min(CHUNK);
        if let Some(used) = &in_use {
            let pages = (gpa / PAGE) as usize..((gpa + n as u64) / PAGE) as usize;
            if !used.get(pages).is_some_and(|p| p.iter().any(|&u| u)) {
                gpa += n as u64;
                continue;
            }
        }
        let buf = &mut g[..n];
        read_guest(buf, gpa)?;
        if keep == Keep::Durable {
            hasher.update(&*buf);
        }
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
    if keep == Keep::Durable {
        file.sync_all().map_err(io_err("sync", path))?;
        // The page cache now holds what the writes made (small folios);
        // dropped, it is refilled by resumes' huge-page mappings in 2 MiB
        // folios.
        kvm::drop_cache(&file);
    }
    Ok((
        MemoryInfo {
            file: MEMORY_FILE.into(),
            bytes: mem_bytes,
            data_bytes,
            data_ranges,
        },
        (keep == Keep::Durable).then(|| hex::encode(hasher.finalize())),
    ))
}

/// For each 4 KiB page of guest RAM (one anonymous mapping from guest
/// address 0), whether it may hold data: present or swapped out in this
/// process's page table (`/proc/self/pagemap` bits 63 and 62). An
/// anonymous page that is neither reads as zeros.
fn pages_in_use(mem: &GuestMemoryMmap) -> io::Result<Vec<bool>> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut used = Vec::new();
    for region in mem.iter() {
        if region.start_addr().0 != used.len() as u64 * PAGE {
            return Err(io::Error::other("guest RAM is not one range from 0"));
        }
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| io::Error::other(e.to_string()))? as u64;
        let pages = (region.len() / PAGE) as usize;
        let mut entries = vec![0u8; pages * 8];
        pagemap.read_exact_at(&mut entries, host / PAGE * 8)?;
        used.extend(entries.chunks_exact(8).map(|e| {
            let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            e & (3 << 62) != 0
        }));
    }
    Ok(used)
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
