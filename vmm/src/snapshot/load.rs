//! Reading a snapshot directory and checking everything a resume would
//! refuse — format, VM shape, image, every file's size and hash, every
//! device state's version — before a VM exists.
//!
//! docs/ARCHITECTURE.md §5.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_clock_data;
use sha2::{Digest, Sha256};

use super::format::{VcpuState, decode_clock};
use super::verify::{Verified, sha256_file};
use super::{
    DEVICES_FILE, DeviceStates, Expect, FORMAT, MANIFEST, MEMORY_FILE, Manifest, PAGE, PARTIAL,
    SnapshotError, VCPU_FILE, VERIFIED_FILE, VM_FILE, VerifyReport, io_err, ms, record_beside,
    refused,
};
use crate::MIB;
use crate::devices::hypercall::Hypercall;
use crate::devices::uart::Uart;
use crate::kvm;

/// A snapshot checked and read, ready to restore.
pub struct Loaded {
    /// How long checking it took: part of a resume's time.
    pub(crate) took: Duration,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub verify: VerifyReport,
    /// The image the snapshot was taken from.
    pub image_path: PathBuf,
    /// The memory file, as checked.
    pub(crate) memory: File,
    pub(crate) vcpu: VcpuState,
    pub(crate) clock: kvm_clock_data,
    pub(crate) devices: DeviceStates,
}

impl Loaded {
    /// The console input the snapshot's guest was fed before its ready
    /// point: a caller that replays a whole session (that input, then the
    /// rest) gives a resumed guest only the rest.
    pub fn input_before(&self) -> &[u8] {
        self.devices.console.input_before.as_bytes()
    }
}

/// Reads and checks snapshot `dir` against `expect`: everything a resume
/// refuses is found here, before a VM exists.
pub fn load(dir: &Path, expect: &Expect) -> Result<Loaded, SnapshotError> {
    // The previous VM of this process must be gone before a resume's clock
    // starts (see `vm::settle`), and a resume's clock starts here.
    crate::vm::settle();
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
    let not_manifest = |e: serde_json::Error| {
        refused(
            &mpath,
            format!("is not a valid snapshot manifest ({e})"),
            "take the snapshot again",
        )
    };
    // The format first: an older manifest may lack fields this one has.
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    let format = serde_json::from_slice::<Format>(&text)
        .map_err(not_manifest)?
        .format;
    if format != FORMAT {
        return Err(refused(
            &mpath,
            format!("is snapshot format {format}, this pgkraft reads format {FORMAT}"),
            "take the snapshot again with this pgkraft",
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(not_manifest)?;
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
    check_ranges(&manifest.memory.data_ranges, manifest.memory.bytes)
        .map_err(|e| refused(&mpath, format!("has bad memory data ranges: {e}"), again))?;
    let bad = |name: &str, e: String| refused(&dir.join(name), format!("is damaged: {e}"), again);
    let vcpu = VcpuState::decode(&small[VCPU_FILE]).map_err(|e| bad(VCPU_FILE, e))?;
    let clock = decode_clock(&small[VM_FILE]).map_err(|e| bad(VM_FILE, e))?;
    let devices: DeviceStates = serde_json::from_slice(&small[DEVICES_FILE])
        .map_err(|e| bad(DEVICES_FILE, e.to_string()))?;
    Uart::check(&devices.uart)
        .and(Hypercall::check(&devices.hypercall))
        .and(devices.console.check())
        .map_err(|e| bad(DEVICES_FILE, e))?;
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

/// The data ranges a restore maps and copies: page-aligned, in order, not
/// overlapping, inside guest RAM.
fn check_ranges(ranges: &[[u64; 2]], mem_bytes: u64) -> Result<(), String> {
    let mut end = 0;
    for &[gpa, len] in ranges {
        if gpa % PAGE != 0 || len % PAGE != 0 || len == 0 {
            return Err(format!("[{gpa:#x}, +{len:#x}) is not whole pages"));
        }
        if gpa < end || gpa.checked_add(len).is_none_or(|e| e > mem_bytes) {
            return Err(format!(
                "[{gpa:#x}, +{len:#x}) overlaps the one before it or lies outside guest RAM"
            ));
        }
        end = gpa + len;
    }
    Ok(())
}
