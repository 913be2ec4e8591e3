//! A resume's working set: the guest pages touched from the moment the
//! resumed guest runs until its first answer. It is learned on a snapshot's
//! first resume and kept beside it in `workingset.json`, which is advisory
//! (not in the manifest, not hashed): it only decides where pages are put
//! at resume, never what they hold, which always comes from the verified
//! memory file.
//!
//! Why (measured on this PVM host, README "Design notes"): a guest's first
//! touch of a 4 KiB page costs ~25 µs unless the host page is present and
//! writable (~4 µs), while a 2 MiB host mapping of a file page-cache folio
//! costs one fault for all of it. So pages only read go on shared huge
//! mappings of the memory file, and the pages of regions the guest writes
//! (a write splits a huge mapping) are copied into private memory ahead of
//! the guest, only those it will touch.
//!
//! docs/ARCHITECTURE.md §4.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::uffd::Uffd;

pub(crate) const FILE: &str = "workingset.json";
const FORMAT: u32 = 1;
const PAGE: u64 = 4096;
/// A huge page: the unit the host maps file folios and THP in.
pub(crate) const REGION: u64 = 2 << 20;
/// KVM maps the present, writable neighbours of a faulting page in the same
/// aligned group of 8 along with it (its PTE prefetch): a fault costs the
/// same ~25 µs for one page or eight, so private copies are made by group
/// where a group has more than one touched page.
const GROUP: u64 = 8 * PAGE;

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkingSet {
    format: u32,
    /// The memory file this was learned against (a new snapshot in the same
    /// directory makes it stale).
    memory_sha256: String,
    /// Pages touched before the first answer, by guest-physical address.
    pub pages: Vec<u64>,
    /// Those of them the guest wrote (they differ from the snapshot then).
    pub written: Vec<u64>,
}

/// Where a resume puts its pages, from a [`WorkingSet`].
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Regions touched only by reads: mapped from the memory file with huge
    /// pages and faulted in whole, shared by every instance.
    pub shared_regions: Vec<u64>,
    /// Regions the guest writes: 4 KiB mappings.
    pub written_regions: Vec<u64>,
    /// The touched pages of written regions (whole [`GROUP`]s where more
    /// than one page of a group is touched), as `[gpa, len]` runs: copied
    /// into private memory before the guest needs them.
    pub private_runs: Vec<[u64; 2]>,
}

impl WorkingSet {
    /// The working set recorded in snapshot `dir`, if there is one that fits
    /// this memory file; anything else is ignored (it is only advice).
    pub(crate) fn read(dir: &Path, memory_sha256: &str, mem_bytes: u64) -> Option<WorkingSet> {
        let bytes = std::fs::read(dir.join(FILE)).ok()?;
        let ws: WorkingSet = match serde_json::from_slice(&bytes) {
            Ok(ws) => ws,
            Err(e) => {
                log::debug!("workingset: {} ignored: {e}", dir.join(FILE).display());
                return None;
            }
        };
        let fits = |v: &[u64]| {
            v.iter().all(|&p| p % PAGE == 0 && p < mem_bytes) && v.is_sorted_by(|a, b| a < b)
        };
        (ws.format == FORMAT
            && ws.memory_sha256 == memory_sha256
            && fits(&ws.pages)
            && fits(&ws.written))
        .then_some(ws)
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("json")
    }

    pub(crate) fn plan(&self) -> Plan {
        let region = |p: u64| p & !(REGION - 1);
        let group = |p: u64| p & !(GROUP - 1);
        let mut written_regions: Vec<u64> = self.written.iter().map(|&p| region(p)).collect();
        written_regions.dedup();
        let written = |p: &u64| written_regions.binary_search(&region(*p)).is_ok();
        let mut plan = Plan::default();
        for &p in self.pages.iter().filter(|p| !written(p)) {
            if plan.shared_regions.last() != Some(&region(p)) {
                plan.shared_regions.push(region(p));
            }
        }
        let private: Vec<u64> = self.pages.iter().copied().filter(written).collect();
        for touched in private.chunk_by(|&a, &b| group(a) == group(b)) {
            // A whole group when it saves faults (two touched pages or
            // more), else the page alone: each copy costs ~3 µs here.
            let (start, len) = match touched {
                [one] => (*one, PAGE),
                _ => (group(touched[0]), GROUP),
            };
            match plan.private_runs.last_mut() {
                Some([s, l]) if *s + *l == start => *l += len,
                _ => plan.private_runs.push([start, len]),
            }
        }
        plan.written_regions = written_regions;
        plan
    }
}

/// Learns a resume's working set: guest RAM starts empty and every page is
/// filled from the memory file on its first touch, through a userfaultfd,
/// which lists the touches exactly (huge file mappings would not: one touch
/// maps a whole folio).
pub(crate) struct Learner {
    stop: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
    touched: Arc<Mutex<Vec<u64>>>,
    recording: Arc<AtomicBool>,
    learned: Arc<Mutex<Option<WorkingSet>>>,
    memfile: Arc<File>,
    memory_sha256: String,
}

/// Runs on the vCPU thread at the guest's first answer.
pub(crate) type OnAnswer = Box<dyn FnOnce(&GuestMemoryMmap) + Send>;

impl Learner {
    /// Registers `mem` (nothing mapped into it yet) and starts serving its
    /// faults from `memfile`, which holds every page at its guest address.
    pub(crate) fn start(
        mem: &GuestMemoryMmap,
        memfile: &File,
        memory_sha256: &str,
    ) -> io::Result<Learner> {
        let uffd = Uffd::register(mem)?;
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let stop_rx = stop.try_clone()?;
        let memfile = Arc::new(memfile.try_clone()?);
        let touched = Arc::new(Mutex::new(Vec::<u64>::new()));
        let recording = Arc::new(AtomicBool::new(true));
        let (file, list, rec) = (memfile.clone(), touched.clone(), recording.clone());
        // The clone keeps guest RAM mapped for as long as this thread fills it.
        let mem = mem.clone();
        let thread = std::thread::Builder::new()
            .name("pgkraft-learn".into())
            .spawn(move || {
                let _keep = mem;
                let mut faults: Vec<u64> = Vec::new();
                let mut page = [0u8; PAGE as usize];
                loop {
                    faults.clear();
                    match uffd.wait(&stop_rx, &mut faults) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            log::warn!("workingset: userfaultfd failed: {e}");
                            break;
                        }
                    }
                    for &gpa in &faults {
                        let filled = match file.read_exact_at(&mut page, gpa) {
                            Ok(()) if page.iter().any(|&b| b != 0) => uffd.fill(gpa, &page),
                            Ok(()) => uffd.zero(gpa),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = filled {
                            log::warn!("workingset: page {gpa:#x} not filled: {e}");
                        }
                        if rec.load(Ordering::Relaxed) {
                            list.lock().expect("learner list").push(gpa);
                        }
                    }
                }
            })?;
        Ok(Learner {
            stop,
            thread: Some(thread),
            touched,
            recording,
            learned: Arc::new(Mutex::new(None)),
            memfile,
            memory_sha256: memory_sha256.to_string(),
        })
    }

    /// The first-answer hook: stops listing touches and tells the pages the
    /// guest wrote from those it only read by comparing them with the file.
    pub(crate) fn at_answer(&self) -> OnAnswer {
        let (touched, recording, learned) = (
            self.touched.clone(),
            self.recording.clone(),
            self.learned.clone(),
        );
        let (file, sha) = (self.memfile.clone(), self.memory_sha256.clone());
        Box::new(move |mem: &GuestMemoryMmap| {
            recording.store(false, Ordering::Relaxed);
            let mut pages = std::mem::take(&mut *touched.lock().expect("learner list"));
            pages.sort_unstable();
            pages.dedup();
            let (mut guest, mut saved) = ([0u8; PAGE as usize], [0u8; PAGE as usize]);
            let written = pages
                .iter()
                .copied()
                .filter(|&p| {
                    // Touched pages are present: reading them faults nothing.
                    mem.read_slice(&mut guest, GuestAddress(p)).is_err()
                        || file.read_exact_at(&mut saved, p).is_err()
                        || guest != saved
                })
                .collect();
            *learned.lock().expect("learned") = Some(WorkingSet {
                format: FORMAT,
                memory_sha256: sha,
                pages,
                written,
            });
        })
    }

    /// Stops serving faults (call once the guest no longer runs) and returns
    /// what was learned, if the guest answered.
    pub(crate) fn finish(mut self) -> Option<WorkingSet> {
        self.stop_thread();
        self.learned.lock().expect("learned").take()
    }

    fn stop_thread(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Learner {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
