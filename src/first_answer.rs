//! `pgkraft bench first-answer`: a postgres image booted in our runner to
//! its first SQL answer, against the host-linked postgres of the same build
//! started natively on a copy of the same files, alternating in one run so
//! both see the same machine.
//!
//! docs/ARCHITECTURE.md §6.

use crate::bench::Series;
use crate::smoke::{self, TestVm, native};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct FirstAnswerBench {
    pub image: PathBuf,
    pub image_bytes: u64,
    pub query: String,
    pub runs: usize,
    /// Runner start to the first answer on the guest console.
    pub guest_ms: Series,
    /// Of those, runner start to the program's `main`.
    pub guest_main_ms: Series,
    /// `postgres --single` spawned to its first answer on stdout.
    pub native_ms: Series,
    /// median guest / median native.
    pub ratio: f64,
    /// Guest RAM when each guest exited (after answering the query and
    /// shutting down), the run with the median data bytes.
    pub guest_memory: crate::vmm::MemoryUse,
    /// Each guest run's boot phases, for `bench report`'s timeline; not in
    /// the command's JSON.
    #[serde(skip)]
    pub guest_phases: Vec<crate::bench::Phases>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirstAnswerError {
    #[error(transparent)]
    Smoke(#[from] smoke::SmokeError),
    #[error(transparent)]
    Native(#[from] native::NativeError),
    #[error("run {run} ({runner}) did not answer: {why}")]
    NoAnswer {
        run: usize,
        runner: &'static str,
        why: String,
    },
    #[error("run {run} ({runner}) reported no {what}")]
    NotMeasured {
        run: usize,
        runner: &'static str,
        what: &'static str,
    },
}

fn first_answer(report: &smoke::SmokeReport, run: usize) -> Result<f64, FirstAnswerError> {
    match (report.ok, report.first_answer_ms) {
        (true, Some(ms)) => Ok(ms),
        _ => Err(FirstAnswerError::NoAnswer {
            run,
            runner: report.runner,
            why: format!(
                "{}; console tail: {}",
                report.exit,
                crate::build::exec::tail_text(&report.console, 5).replace('\n', " | ")
            ),
        }),
    }
}

pub fn bench(
    image: &crate::image::Image,
    query: &str,
    runs: usize,
    postgres: &Path,
) -> Result<FirstAnswerBench, FirstAnswerError> {
    let spec = TestVm::single_query(query, 60.0);
    let (mut guest, mut main, mut native, mut memory) = (vec![], vec![], vec![], vec![]);
    let mut guest_phases = Vec::new();
    let mut image_bytes = 0;
    for run in 0..runs {
        // Alternate which goes first, so neither always meets a warm cache.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for in_guest in order {
            if in_guest {
                let r = smoke::run(image, &spec, None)?;
                guest.push(first_answer(&r, run)?);
                // A missing phase fails the run rather than counting as 0.
                main.push(r.phases.get("main_entered").copied().ok_or_else(|| {
                    FirstAnswerError::NoAnswer {
                        run,
                        runner: r.runner,
                        why: "the guest never reported entering main".into(),
                    }
                })?);
                memory.push(r.guest_memory.ok_or(FirstAnswerError::NotMeasured {
                    run,
                    runner: r.runner,
                    what: "guest memory figure",
                })?);
                image_bytes = r.image_bytes;
                guest_phases.push(crate::bench::phases_in_order(&r.phases));
            } else {
                // Copying the files is not part of what is timed.
                let server = native::NativeServer::prepare(image.path(), postgres)?;
                native.push(first_answer(&server.run(&spec)?, run)?);
            }
        }
    }
    let (guest_ms, native_ms) = (Series::from_ms(&guest), Series::from_ms(&native));
    memory.sort_by_key(|m| m.data_bytes);
    Ok(FirstAnswerBench {
        image: image.path().to_path_buf(),
        image_bytes,
        query: query.to_string(),
        runs,
        ratio: guest_ms.median_ms / native_ms.median_ms,
        guest_ms,
        guest_main_ms: Series::from_ms(&main),
        native_ms,
        guest_memory: memory[memory.len() / 2],
        guest_phases,
    })
}

impl FirstAnswerBench {
    pub fn human(&self) -> String {
        let mut s = format!(
            "first answer to {:?}, {} runs each, alternating ({}, {} bytes):\n",
            self.query,
            self.runs,
            self.image.display(),
            self.image_bytes
        );
        s += &format!(
            "  pgkraft runner, boot to first answer:  median {:8.3} ms  (min {:.3}, max {:.3}; main entered at {:.3} ms)\n",
            self.guest_ms.median_ms,
            self.guest_ms.min_ms,
            self.guest_ms.max_ms,
            self.guest_main_ms.median_ms
        );
        s += &format!(
            "  native postgres --single, spawn to first answer: median {:8.3} ms  (min {:.3}, max {:.3})\n",
            self.native_ms.median_ms, self.native_ms.min_ms, self.native_ms.max_ms
        );
        s += &format!("  ratio guest/native: {:.2}x\n", self.ratio);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        s += &format!(
            "  guest memory at exit: {:.1} MiB holding data (image included), {:.1} MiB of host memory behind guest RAM\n",
            mib(self.guest_memory.data_bytes),
            mib(self.guest_memory.resident_bytes)
        );
        s
    }
}
