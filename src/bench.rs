//! `pgkraft bench`: figures measured side by side in one run, because this
//! machine is noisy and only ratios taken together mean anything.
//!
//! `bench boot` boots one image many times, alternating our runner and QEMU
//! microvm, each as a fresh process (spawn to exit, what a user waits for),
//! and also records our runner's own in-process figure (runner start to
//! guest exit, as `smoke` reports it).

use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Series {
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Series {
    fn of(mut samples: Vec<Duration>) -> Series {
        samples.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let n = samples.len();
        let median = if n % 2 == 1 {
            ms(samples[n / 2])
        } else {
            (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
        };
        Series {
            runs: n,
            median_ms: median,
            min_ms: ms(samples[0]),
            max_ms: ms(samples[n - 1]),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BootBench {
    pub image: std::path::PathBuf,
    pub image_bytes: u64,
    /// `pgkraft run` as a process: spawn to exit.
    pub pgkraft_process: Series,
    /// Inside our runner: runner start to guest exit.
    pub pgkraft_runner: Series,
    /// `qemu-system-x86_64 -M microvm` as a process: spawn to exit.
    pub qemu_microvm_process: Series,
    /// qemu_microvm_process median / pgkraft_process median.
    pub qemu_over_pgkraft: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not run cleanly: {detail}")]
    Run { what: String, detail: String },
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
    #[error(transparent)]
    Image(#[from] crate::image_info::InspectError),
}

/// The QEMU command line that boots a pgkraft image (PVH entry, exit device).
pub fn qemu_command(image: &Path, mem_mib: u32) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,rtc=off",
        "-enable-kvm",
        "-cpu",
        "host",
    ])
    .args(["-m", &mem_mib.to_string()])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"])
    .arg("-kernel")
    .arg(image);
    cmd
}

fn time_process(
    mut cmd: Command,
    what: &str,
    ok: impl Fn(i32) -> bool,
) -> Result<Duration, BenchError> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| BenchError::Spawn {
            what: what.into(),
            source,
        })?;
    let dt = t.elapsed();
    match out.status.code() {
        Some(c) if ok(c) => Ok(dt),
        _ => Err(BenchError::Run {
            what: what.into(),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

pub fn boot(image: &Path, runs: usize) -> Result<BootBench, BenchError> {
    let info = crate::image_info::read(image)?;
    let mem_mib = info.build.as_ref().map(|b| b.memory_mib).unwrap_or(64);
    let me = std::env::current_exe().map_err(|source| BenchError::Spawn {
        what: "own path".into(),
        source,
    })?;
    let (mut ours, mut inside, mut qemu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut run = Command::new(&me);
        run.arg("run").arg(image);
        ours.push(time_process(run, "pgkraft run", |c| c == 0)?);
        // isa-debug-exit: status 0 leaves QEMU with exit code 1.
        qemu.push(time_process(
            qemu_command(image, mem_mib),
            "qemu-system-x86_64",
            |c| c == 1,
        )?);
        let cfg = crate::vmm::VmConfig {
            mem_mib,
            cmdline: String::new(),
            timeout: Some(Duration::from_secs(30)),
            console: crate::vmm::Console::Capture { input: Vec::new() },
        };
        let outcome = crate::vmm::run(image, &cfg)?;
        let exit = outcome
            .phases
            .iter()
            .find(|p| p.name == "exit")
            .map(|p| p.at);
        inside.push(exit.ok_or_else(|| BenchError::Run {
            what: "the runner".into(),
            detail: format!("guest did not exit: {:?}", outcome.exit),
        })?);
    }
    let (ours, qemu) = (Series::of(ours), Series::of(qemu));
    Ok(BootBench {
        image: image.to_path_buf(),
        image_bytes: info.file_bytes,
        qemu_over_pgkraft: (qemu.median_ms / ours.median_ms * 100.0).round() / 100.0,
        pgkraft_process: ours,
        pgkraft_runner: Series::of(inside),
        qemu_microvm_process: qemu,
    })
}

impl BootBench {
    pub fn human(&self) -> String {
        let line = |name: &str, s: &Series| {
            format!(
                "  {name:<34} median {:>8.3} ms  (min {:.3}, max {:.3}, {} runs)\n",
                s.median_ms, s.min_ms, s.max_ms, s.runs
            )
        };
        format!(
            "boot to exit, {} ({} bytes):\n{}{}{}  QEMU microvm / pgkraft: {:.2}x\n",
            self.image.display(),
            self.image_bytes,
            line("pgkraft run (process)", &self.pgkraft_process),
            line("pgkraft runner start -> exit", &self.pgkraft_runner),
            line("qemu microvm (process)", &self.qemu_microvm_process),
            self.qemu_over_pgkraft
        )
    }
}
