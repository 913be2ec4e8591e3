//! `pgkraft bench report IMAGE --out DIR`: runs the benchmarks that apply
//! to the image, by calling the same functions as `bench boot`,
//! `first-answer`, `resume` and `density`, and writes what they measured
//! as `DIR/report.json` (every figure, units in the field names) and
//! `DIR/index.html` (the same figures as SVG charts and tables, inlined:
//! the page needs no other file and fetches nothing).
//!
//! A benchmark that does not apply is left out and the page says why:
//! `bench boot` times boot to exit, which a postgres image never reaches
//! under QEMU (its serial console has no end of input); `first-answer`,
//! `resume` and `density` need `postgres --single` (a snapshot's ready
//! point and its query come from the SQL session).
//!
//! docs/ARCHITECTURE.md §6.

pub mod charts;
pub mod html;

use crate::bench::{self, BenchError, Phases, Series};
use crate::first_answer::{self, FirstAnswerError};
use crate::image::Image;
use crate::image_info::{self, InspectError, parts::SizePart};
use crate::smoke::{self, SmokeError, TestVm};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Options {
    /// Runs per measurement.
    pub runs: usize,
    /// Instances for the density measurement.
    pub instances: usize,
    /// The query first-answer and resume time.
    pub query: String,
    /// The host-linked postgres (default: the one the cache records).
    pub postgres: Option<PathBuf>,
}

/// A distribution of per-run figures in milliseconds.
#[derive(Debug, Serialize)]
pub struct Runs {
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl From<&Series> for Runs {
    fn from(s: &Series) -> Runs {
        Runs {
            runs: s.runs,
            median_ms: s.median_ms,
            min_ms: s.min_ms,
            max_ms: s.max_ms,
            samples_ms: s.samples_ms.clone(),
        }
    }
}

/// A distribution of per-instance figures in KiB.
#[derive(Debug, Serialize)]
pub struct InstancesKib {
    pub median_kib: u64,
    pub min_kib: u64,
    pub max_kib: u64,
    pub total_kib: u64,
    pub per_instance_kib: Vec<u64>,
}

impl InstancesKib {
    fn of(v: &[u64]) -> InstancesKib {
        let s = bench::KibSeries::of(v.to_vec());
        InstancesKib {
            median_kib: s.median,
            min_kib: s.min,
            max_kib: s.max,
            total_kib: v.iter().sum(),
            per_instance_kib: v.to_vec(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseSpan {
    pub phase: String,
    /// Median of the previous phase (0: runner start).
    pub start_ms: f64,
    /// Median, over the runs, of when this phase was reached.
    pub end_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Timeline {
    /// Which runs the phases come from.
    pub source: String,
    pub runs: usize,
    pub phases: Vec<PhaseSpan>,
}

#[derive(Debug, Serialize)]
pub struct BootFigures {
    pub pgkraft_run_process: Runs,
    pub pgkraft_runner_start_to_exit: Runs,
    pub qemu_microvm_process: Runs,
    pub qemu_over_pgkraft_ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct FirstAnswerFigures {
    pub query: String,
    pub guest_boot_to_first_answer: Runs,
    pub guest_boot_to_main: Runs,
    pub native_spawn_to_first_answer: Runs,
    pub guest_over_native_ratio: f64,
    pub guest_memory_data_bytes: u64,
    pub guest_memory_resident_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ResumeFigures {
    pub query: String,
    pub snapshot_data_bytes: u64,
    pub cold_boot_to_first_answer: Runs,
    pub resume_to_first_sign_of_life: Runs,
    pub resume_to_first_answer: Runs,
    pub resume_to_first_answer_prefault_read: Runs,
    pub learning_resume_to_first_answer_ms: f64,
    pub cold_over_resume_ratio: f64,
    pub pgkraft_resume_process_to_answer: Runs,
    /// None when QEMU could not save or resume the image (`qemu_note`).
    pub qemu_incoming_process_to_answer: Option<Runs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_over_pgkraft_resume_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_note: Option<String>,
    pub qemu_state_bytes: Option<u64>,
    pub verify_first_use_ms: f64,
    pub verify_cached_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct DensityFigures {
    pub instances: usize,
    pub prefault: String,
    pub memory_mib: u32,
    pub snapshot_data_kib: u64,
    pub pss: InstancesKib,
    pub private: InstancesKib,
    pub rss: InstancesKib,
    pub mem_available_drop_per_instance_kib: i64,
    pub start_all_ms: f64,
    pub stopped_cleanly: usize,
}

/// A benchmark the report left out, and why.
#[derive(Debug, Serialize)]
pub struct Omitted {
    pub benchmark: &'static str,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub pgkraft_version: &'static str,
    pub image: PathBuf,
    pub image_bytes: u64,
    pub runs: usize,
    pub size_by_part: Vec<SizePart>,
    pub timeline: Option<Timeline>,
    pub boot: Option<BootFigures>,
    pub first_answer: Option<FirstAnswerFigures>,
    pub resume: Option<ResumeFigures>,
    pub density: Option<DensityFigures>,
    pub omitted: Vec<Omitted>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--out {}: {why}\n  fix: give a directory that can be created or written to", path.display())]
    Out { path: PathBuf, why: String },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    FirstAnswer(#[from] FirstAnswerError),
    #[error(transparent)]
    Smoke(#[from] SmokeError),
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
}

/// Makes `dir` (if missing) and proves it writable, before minutes of
/// benchmarks are spent on a report that could not be written.
pub fn prepare_out(dir: &Path) -> Result<(), ReportError> {
    let out = |why: String| ReportError::Out {
        path: dir.to_path_buf(),
        why,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(out("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| out(format!("cannot create it: {e}")))?;
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| out(format!("cannot write in it: {e}")))
}

/// Writes `bytes` to `dir/name` whole or not at all: a temporary file in
/// `dir`, renamed over the old one.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let err = |source| ReportError::Write {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
}

/// Runs what applies to `image`, reporting progress on stderr, and
/// writes `out/report.json` and `out/index.html`.
pub fn run(image: &Image, opts: &Options, out: &Path) -> Result<Report, ReportError> {
    prepare_out(out)?;
    let report = measure(image, opts)?;
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    let page = html::page(&report)?;
    write_atomically(out, "report.json", json.as_bytes())?;
    write_atomically(out, "index.html", page.as_bytes())?;
    Ok(report)
}

fn say(what: &str) {
    eprintln!("pgkraft: bench report: {what}");
}

fn measure(image: &Image, opts: &Options) -> Result<Report, ReportError> {
    let info = image_info::read(image.path())?;
    let single_user = smoke::runs_single_user(image);
    let mut omitted = Vec::new();
    let mut omit = |benchmark, why: String| omitted.push(Omitted { benchmark, why });
    let not_single_user = "needs an image whose program is `postgres --single` (its ready \
                           point and query are an SQL session's)";

    let boot = if single_user {
        omit(
            "boot",
            "times boot to exit, and a postgres image waits for console input that QEMU's \
             serial never ends; its boot phases are charted from the first-answer runs"
                .into(),
        );
        None
    } else if !on_path("qemu-system-x86_64") {
        omit("boot", "qemu-system-x86_64 is not installed".into());
        None
    } else {
        say(&format!("bench boot, {} runs each", opts.runs));
        Some(bench::boot(image, opts.runs)?)
    };

    let first_answer = if !single_user {
        omit("first-answer", not_single_user.into());
        None
    } else {
        let postgres = match &opts.postgres {
            Some(p) => Ok(p.clone()),
            None => smoke::native::host_postgres(image.path()),
        };
        match postgres {
            Ok(postgres) => {
                say(&format!("bench first-answer, {} runs each", opts.runs));
                Some(first_answer::bench(
                    image,
                    &opts.query,
                    opts.runs,
                    &postgres,
                )?)
            }
            Err(e) => {
                omit("first-answer", format!("no native counterpart: {e}"));
                None
            }
        }
    };

    let spec = TestVm::single_query(&opts.query, 60.0);
    let resume = if single_user {
        say(&format!("bench resume, {} runs each", opts.runs));
        Some(bench::resume(image, &spec, opts.runs)?)
    } else {
        omit("resume", not_single_user.into());
        None
    };
    let density = if single_user {
        say(&format!("bench density, {} instances", opts.instances));
        let tmp = tempfile::tempdir().map_err(|source| ReportError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let snap = tmp.path().join("snap");
        smoke::snapshot(image, &spec, &bench::snapshot_input(&spec), &snap)?;
        // The query as a single-user session reads it (ending in an empty
        // line), but for the last newline, which density adds.
        let query = crate::pgsingle::encode_query(&opts.query);
        Some(bench::density(
            &snap,
            opts.instances,
            query.strip_suffix('\n').unwrap_or(&query),
            crate::vmm::snapshot::Prefault::Learned,
        )?)
    } else {
        omit("density", not_single_user.into());
        None
    };

    let timeline = match (&first_answer, &boot) {
        (Some(f), _) => timeline("bench first-answer: guest runs", &f.guest_phases),
        (None, Some(b)) => timeline("bench boot: runs inside the runner", &b.runner_phases),
        _ => None,
    };
    if timeline.is_none() {
        omit(
            "timeline",
            "no benchmark that applies here boots the image in the runner".into(),
        );
    }
    Ok(Report {
        pgkraft_version: env!("CARGO_PKG_VERSION"),
        image: image.path().to_path_buf(),
        image_bytes: info.file_bytes,
        runs: opts.runs,
        size_by_part: info.size_by_part,
        timeline,
        boot: boot.map(|b| BootFigures {
            pgkraft_run_process: (&b.pgkraft_process).into(),
            pgkraft_runner_start_to_exit: (&b.pgkraft_runner).into(),
            qemu_microvm_process: (&b.qemu_microvm_process).into(),
            qemu_over_pgkraft_ratio: b.qemu_over_pgkraft,
        }),
        first_answer: first_answer.map(|f| FirstAnswerFigures {
            query: f.query.clone(),
            guest_boot_to_first_answer: (&f.guest_ms).into(),
            guest_boot_to_main: (&f.guest_main_ms).into(),
            native_spawn_to_first_answer: (&f.native_ms).into(),
            guest_over_native_ratio: round2(f.ratio),
            guest_memory_data_bytes: f.guest_memory.data_bytes,
            guest_memory_resident_bytes: f.guest_memory.resident_bytes,
        }),
        resume: resume.map(|r| ResumeFigures {
            query: opts.query.clone(),
            snapshot_data_bytes: r.snapshot_data_bytes,
            cold_boot_to_first_answer: (&r.cold_first_answer).into(),
            resume_to_first_sign_of_life: (&r.resume).into(),
            resume_to_first_answer: (&r.resume_first_answer).into(),
            resume_to_first_answer_prefault_read: (&r.resume_first_answer_shared).into(),
            learning_resume_to_first_answer_ms: r.learning_resume_first_answer_ms,
            cold_over_resume_ratio: r.cold_over_resume,
            pgkraft_resume_process_to_answer: (&r.pgkraft_resume_process).into(),
            qemu_over_pgkraft_resume_ratio: r
                .qemu_resume_process
                .as_ref()
                .map(|q| round2(q.median_ms / r.pgkraft_resume_process.median_ms)),
            qemu_incoming_process_to_answer: r.qemu_resume_process.as_ref().map(Runs::from),
            qemu_note: r.qemu_note,
            qemu_state_bytes: r.qemu_state_bytes,
            verify_first_use_ms: r.verify_first_use_ms,
            verify_cached_ms: r.verify_cached_ms,
        }),
        density: density.map(|d| DensityFigures {
            instances: d.instances,
            prefault: d.prefault.as_str().to_string(),
            memory_mib: d.memory_mib,
            snapshot_data_kib: d.snapshot_data_kib,
            pss: InstancesKib::of(&d.per_instance.pss),
            private: InstancesKib::of(&d.per_instance.private),
            rss: InstancesKib::of(&d.per_instance.rss),
            mem_available_drop_per_instance_kib: d.mem_available_drop_per_instance_kib,
            start_all_ms: d.start_all_ms,
            stopped_cleanly: d.stopped_cleanly,
        }),
        omitted,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The phases every run reached, each at its median over the runs, in
/// the order reached; each span starts where the one before ended.
fn timeline(source: &str, runs: &[Phases]) -> Option<Timeline> {
    let first = runs.first()?;
    let mut medians: Vec<(String, f64)> = first
        .iter()
        .filter_map(|(name, _)| {
            let mut at: Vec<f64> = runs
                .iter()
                .map(|r| r.iter().find(|(n, _)| n == name).map(|p| p.1))
                .collect::<Option<_>>()?;
            at.sort_by(f64::total_cmp);
            let n = at.len();
            let median = if n % 2 == 1 {
                at[n / 2]
            } else {
                (at[n / 2 - 1] + at[n / 2]) / 2.0
            };
            Some((name.clone(), (median * 1e3).round() / 1e3))
        })
        .collect();
    medians.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut start = 0.0;
    let phases = medians
        .into_iter()
        .map(|(phase, end)| {
            let span = PhaseSpan {
                phase,
                start_ms: start,
                end_ms: end,
            };
            start = end;
            span
        })
        .collect();
    Some(Timeline {
        source: source.into(),
        runs: runs.len(),
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_takes_medians_of_phases_every_run_reached() {
        let run = |a: f64, b: f64, extra: bool| {
            let mut v = vec![("vmm_ready".to_string(), a), ("exit".to_string(), b)];
            if extra {
                v.push(("ready".to_string(), 1.0));
            }
            v
        };
        let t = timeline(
            "x",
            &[
                run(1.0, 10.0, true),
                run(3.0, 30.0, false),
                run(2.0, 20.0, false),
            ],
        )
        .unwrap();
        let got: Vec<_> = t
            .phases
            .iter()
            .map(|p| (p.phase.as_str(), p.start_ms, p.end_ms))
            .collect();
        assert_eq!(got, [("vmm_ready", 0.0, 2.0), ("exit", 2.0, 20.0)]);
        assert_eq!(t.runs, 3);
    }

    #[test]
    fn a_file_is_no_output_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = prepare_out(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        prepare_out(&tmp.path().join("new/dir")).unwrap();
    }
}
