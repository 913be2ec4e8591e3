//! `pgkraft bench`: figures measured side by side in one run, because this
//! machine is noisy and only ratios taken together mean anything.
//!
//! `bench boot` boots one image many times, alternating our runner and QEMU
//! microvm, each as a fresh process (spawn to exit, what a user waits for),
//! and also records our runner's own in-process figure (runner start to
//! guest exit, as `smoke` reports it).
//!
//! `bench wake` (`wake.rs`) times a hibernated server's wake against the
//! same server running and a cold boot.
//!
//! docs/ARCHITECTURE.md §6.

pub mod report;
pub mod wake;

use crate::image::Image;
use serde::Serialize;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Series {
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Every run's figure, in milliseconds, smallest first: what `bench
    /// report` charts as a distribution. Left out of the commands' JSON,
    /// which reports the summary only.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

impl Series {
    /// Samples given in milliseconds (as smoke reports them).
    pub fn from_ms(samples: &[f64]) -> Series {
        Series::of(
            samples
                .iter()
                .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3))
                .collect(),
        )
    }

    pub(crate) fn of(mut samples: Vec<Duration>) -> Series {
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
            samples_ms: samples.iter().map(|&d| ms(d)).collect(),
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
    /// Each in-runner boot's phases (milliseconds since runner start), for
    /// `bench report`'s timeline; not in the command's JSON.
    #[serde(skip)]
    pub runner_phases: Vec<Phases>,
}

/// One run's boot phases: name and milliseconds since runner start, in the
/// order reached.
pub type Phases = Vec<(String, f64)>;

/// Phases from a smoke report's map, in the order reached.
pub fn phases_in_order(map: &std::collections::BTreeMap<String, f64>) -> Phases {
    let mut v: Phases = map.iter().map(|(k, &at)| (k.clone(), at)).collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    v
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
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Snapshot(#[from] crate::vmm::snapshot::SnapshotError),
    #[error(transparent)]
    Credentials(#[from] crate::smoke::server::CredentialsError),
}

/// The QEMU command line that boots a pgkraft image (PVH entry, exit device).
pub fn qemu_command(image: &Path, mem_mib: u32) -> Command {
    qemu_command_with_exit_ports(image, mem_mib, 1)
}

/// [`qemu_command`] with QEMU's exit device `ports` wide at 0xf4.
pub fn qemu_command_with_exit_ports(image: &Path, mem_mib: u32, ports: u8) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,rtc=off",
        "-enable-kvm",
        "-cpu",
        // The host's CPU without IA32_ARCH_CAPABILITIES: QEMU 7.2 aborts
        // at start ("failed to set MSR 0x10a") on KVM hosts (PVM) that
        // report the feature but refuse the MSR; the image never reads it.
        "host,-arch-capabilities",
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
    .args([
        "-device",
        &format!("isa-debug-exit,iobase=0xf4,iosize={ports:#04x}"),
    ])
    .arg("-kernel")
    .arg(image);
    cmd
}

/// [`qemu_command`] passing the guest `cmdline` as our runner would (an
/// empty one is left out, as our runner gives the guest none).
fn qemu_command_with(image: &Path, mem_mib: u32, cmdline: &str) -> Command {
    let mut cmd = qemu_command(image, mem_mib);
    if !cmdline.is_empty() {
        cmd.arg("-append").arg(cmdline);
    }
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
        .map_err(spawn_err(what))?;
    let dt = t.elapsed();
    match out.status.code() {
        Some(c) if ok(c) => Ok(dt),
        _ => Err(BenchError::Run {
            what: what.into(),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

pub fn boot(image: &Image, runs: usize) -> Result<BootBench, BenchError> {
    let mem_mib = image.memory_mib(None);
    let path = image.path();
    let me = own_exe()?;
    let (mut ours, mut inside, mut qemu) = (Vec::new(), Vec::new(), Vec::new());
    let mut runner_phases = Vec::new();
    for _ in 0..runs {
        let mut run = Command::new(&me);
        run.arg("run").arg(path);
        ours.push(time_process(run, "pgkraft run", |c| c == 0)?);
        // isa-debug-exit: status 0 leaves QEMU with exit code 1.
        qemu.push(time_process(
            qemu_command(path, mem_mib),
            "qemu-system-x86_64",
            |c| c == 1,
        )?);
        let cfg = crate::vmm::VmConfig {
            mem_mib,
            cmdline: String::new(),
            timeout: Some(Duration::from_secs(30)),
            console: crate::vmm::Console::Capture { input: Vec::new() },
            net: None,
            signals: None,
            volume: None,
            hibernate: None,
            vcpu_cpu: None,
        };
        let outcome = crate::vmm::run(image.boot(), &cfg)?;
        let exit = outcome
            .phases
            .iter()
            .find(|p| p.name == "exit")
            .map(|p| p.at);
        inside.push(exit.ok_or_else(|| BenchError::Run {
            what: "the runner".into(),
            detail: format!("guest did not exit: {:?}", outcome.exit),
        })?);
        runner_phases.push(
            outcome
                .phases
                .iter()
                .map(|p| (p.name.to_string(), p.at.as_secs_f64() * 1e3))
                .collect(),
        );
    }
    let (ours, qemu) = (Series::of(ours), Series::of(qemu));
    Ok(BootBench {
        image: path.to_path_buf(),
        image_bytes: image.file_bytes(),
        qemu_over_pgkraft: (qemu.median_ms / ours.median_ms * 100.0).round() / 100.0,
        pgkraft_process: ours,
        pgkraft_runner: Series::of(inside),
        qemu_microvm_process: qemu,
        runner_phases,
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

// ---------------------------------------------------------------------------
// `bench resume`: cold boot to first answer vs resume to first answer, and
// QEMU resuming the same image from its own migration file as the anchor.

#[derive(Debug, Serialize)]
pub struct ResumeBench {
    pub image: std::path::PathBuf,
    pub snapshot: std::path::PathBuf,
    pub memory_mib: u32,
    /// Snapshot memory file: bytes with data (the rest are holes).
    pub snapshot_data_bytes: u64,
    /// In our runner: runner start to the first answer after the first input.
    pub cold_first_answer: Series,
    /// In our runner: resume start to the guest's first sign of life
    /// (`resume_ms`: its libOS reports it runs again).
    pub resume: Series,
    /// In our runner: resume start to the first answer (`--prefault
    /// learned`, the default; the working set was learned by one untimed
    /// resume first).
    pub resume_first_answer: Series,
    /// The learning resume itself: resume start to its first answer.
    pub learning_resume_first_answer_ms: f64,
    /// The same with `--prefault read`: data pages stay shared (density),
    /// the guest pays for its first touch of each.
    pub resume_first_answer_shared: Series,
    /// cold_first_answer median / resume_first_answer median.
    pub cold_over_resume: f64,
    /// `pgkraft resume` as a process: spawn to the answer on its stdout.
    pub pgkraft_resume_process: Series,
    /// QEMU microvm `-incoming exec:cat FILE` as a process: spawn to the answer.
    pub qemu_resume_process: Option<Series>,
    /// Why there is no QEMU figure, if there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_note: Option<String>,
    /// QEMU's saved state file size.
    pub qemu_state_bytes: Option<u64>,
    /// First resume of a copied snapshot: the integrity check hashes the memory file and image once.
    pub verify_first_use_ms: f64,
    /// Later resumes: identity lookup in verified.json.
    pub verify_cached_ms: f64,
}

fn run_err(what: &str, detail: impl Into<String>) -> BenchError {
    BenchError::Run {
        what: what.into(),
        detail: detail.into(),
    }
}

/// For `.map_err`: `what` could not be started or set up.
fn spawn_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Spawn { what, source }
}

/// This very executable, to time `pgkraft run`/`resume` as processes.
pub(crate) fn own_exe() -> Result<std::path::PathBuf, BenchError> {
    std::env::current_exe().map_err(spawn_err("own path"))
}

/// What a snapshot of `spec` is fed before its ready point: `snapshot_after`
/// as written, or in single-user mode as one `-j` query (set-up or warm-up
/// SQL).
pub fn snapshot_input(spec: &crate::smoke::TestVm) -> Vec<u8> {
    match spec.mode {
        crate::smoke::Mode::SingleUser if !spec.snapshot_after.trim().is_empty() => {
            crate::pgsingle::encode_query(&spec.snapshot_after).into_bytes()
        }
        _ => spec.snapshot_after.as_bytes().to_vec(),
    }
}

/// A single-user test VM's checks are the session from the first prompt,
/// so its snapshot's set-up answers are left out of the resumed console.
pub fn console_prefix(spec: &crate::smoke::TestVm) -> crate::vmm::snapshot::ConsolePrefix {
    match spec.mode {
        crate::smoke::Mode::SingleUser => crate::vmm::snapshot::ConsolePrefix::BeforeInput,
        // Server mode is never snapshotted (smoke::plan refuses it).
        crate::smoke::Mode::Program | crate::smoke::Mode::Server => {
            crate::vmm::snapshot::ConsolePrefix::All
        }
    }
}

pub fn resume(
    image: &Image,
    spec: &crate::smoke::TestVm,
    runs: usize,
) -> Result<ResumeBench, BenchError> {
    use crate::smoke::{self, Mode};
    use crate::vmm::snapshot;
    let tmp = tempfile::tempdir().map_err(spawn_err("a temporary directory"))?;
    let snap = tmp.path().join("snap");
    // Every run boots (or restores) the image as the smoke checks plan it
    // for this test VM (its memory, arguments and input).
    let smoke_err = |e: smoke::SmokeError| match e {
        smoke::SmokeError::Vmm(e) => BenchError::Vmm(e),
        smoke::SmokeError::Snapshot(e) => BenchError::Snapshot(e),
        e => run_err("the smoke run", e.to_string()),
    };
    let taken = smoke::snapshot(image, spec, &snapshot_input(spec), &snap).map_err(smoke_err)?;
    let mem_mib = taken.manifest.vm.memory_mib;
    let cmdline = taken.manifest.vm.cmdline.clone();
    // The query a process-level resume answers: the test VM's first input.
    let query: Vec<u8> = match spec.mode {
        Mode::SingleUser => {
            crate::pgsingle::stdin_for(spec.checks.iter().take(1).map(|c| c.sql.as_str()))
                .into_bytes()
        }
        Mode::Program if spec.stdin.is_empty() => b"get\n".to_vec(),
        Mode::Program => spec
            .stdin
            .lines()
            .next()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default()
            .into_bytes(),
        Mode::Server => unreachable!("smoke::snapshot refuses server mode"),
    };

    // The integrity check's two costs: a copy has new inodes, so its first
    // resume hashes; the second finds its record.
    let copy = tmp.path().join("copy");
    let cp = Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(&snap)
        .arg(&copy)
        .status()
        .map_err(spawn_err("cp"))?;
    if !cp.success() {
        return Err(run_err("cp", "could not copy the snapshot"));
    }
    let _ = std::fs::remove_file(copy.join("verified.json"));
    let first = snapshot::load(&copy, &snapshot::Expect::default())?;
    let again = snapshot::load(&copy, &snapshot::Expect::default())?;

    let me = own_exe()?;
    let (qemu_state, qemu_note) = match qemu_save(
        image.path(),
        mem_mib,
        &cmdline,
        spec,
        &taken.console,
        tmp.path(),
    ) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e.to_string())),
    };

    // In milliseconds, as smoke reports phases.
    let phase = |r: &smoke::SmokeReport, name: &str| -> Result<f64, BenchError> {
        if !r.ok {
            return Err(run_err("the smoke checks", r.human()));
        }
        r.phases
            .get(name)
            .copied()
            .ok_or_else(|| run_err("the runner", format!("no `{name}` phase: {:?}", r.phases)))
    };
    let (mut cold, mut res, mut res_answer, mut res_shared, mut proc_, mut qemu) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let resume_with = |prefault| {
        let expect = snapshot::Expect {
            prefault,
            console: console_prefix(spec),
            ..Default::default()
        };
        let loaded = snapshot::load(&snap, &expect)?;
        Ok::<_, BenchError>(
            smoke::resume(image, spec, loaded, &expect)
                .map_err(smoke_err)?
                .0,
        )
    };
    // The snapshot's first resume learns its working set.
    let learning = resume_with(snapshot::Prefault::Learned)?;
    let learning_ms = phase(&learning, "first_answer")?;
    for _ in 0..runs {
        let r = smoke::run_tracked(image, spec).map_err(smoke_err)?;
        cold.push(phase(&r, "first_answer")?);

        let r = resume_with(snapshot::Prefault::Learned)?;
        let times = snapshot::ResumeTimes::by(|name| r.phases.get(name).copied());
        res.push(
            times
                .resume_ms
                .ok_or_else(|| run_err("the runner", "no resume phase"))?,
        );
        res_answer.push(phase(&r, "first_answer")?);
        let r = resume_with(snapshot::Prefault::Read)?;
        res_shared.push(phase(&r, "first_answer")?);

        let mut cmd = Command::new(&me);
        cmd.arg("resume").arg(&snap);
        proc_.push(time_to_output(cmd, &query, "pgkraft resume")?);

        if let Some(state) = &qemu_state {
            let mut cmd = qemu_command_with(image.path(), mem_mib, &cmdline);
            cmd.arg("-incoming")
                .arg(format!("exec:cat {}", state.display()));
            qemu.push(time_to_output(cmd, &query, "qemu-system-x86_64 -incoming")?);
        }
    }
    let (cold, res_answer) = (Series::from_ms(&cold), Series::from_ms(&res_answer));
    Ok(ResumeBench {
        image: image.path().to_path_buf(),
        snapshot: snap.clone(),
        memory_mib: mem_mib,
        snapshot_data_bytes: taken.manifest.memory.data_bytes,
        cold_over_resume: (cold.median_ms / res_answer.median_ms * 100.0).round() / 100.0,
        cold_first_answer: cold,
        resume: Series::from_ms(&res),
        resume_first_answer: res_answer,
        learning_resume_first_answer_ms: (learning_ms * 1e3).round() / 1e3,
        resume_first_answer_shared: Series::from_ms(&res_shared),
        pgkraft_resume_process: Series::of(proc_),
        qemu_state_bytes: qemu_state
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len()),
        qemu_resume_process: (!qemu.is_empty()).then(|| Series::of(qemu)),
        qemu_note,
        verify_first_use_ms: first.verify.ms,
        verify_cached_ms: again.verify.ms,
    })
}

/// Spawns `cmd` with `input` on its stdin and times spawn to its first
/// byte of output (the answer: neither runner replays older output), then
/// kills it.
fn time_to_output(mut cmd: Command, input: &[u8], what: &str) -> Result<Duration, BenchError> {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_err(what))?;
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(input);
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 256];
        let got = loop {
            match out.read(&mut b) {
                Ok(0) => break None,
                // QEMU's serial may send a lone carriage return first.
                Ok(n) if b[..n].iter().any(|c| c.is_ascii_alphanumeric()) => {
                    break Some(t.elapsed());
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    got.ok_or_else(|| run_err(what, "ended without printing an answer"))
}

/// Boots the image under QEMU, feeds `snapshot_after`, waits until it has
/// printed what our snapshot's guest printed by its ready point, and saves
/// its state with QMP `migrate "exec:cat > FILE"`. Returns FILE.
fn qemu_save(
    image: &Path,
    mem_mib: u32,
    cmdline: &str,
    spec: &crate::smoke::TestVm,
    console: &str,
    dir: &Path,
) -> Result<std::path::PathBuf, BenchError> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    let sock = dir.join("qmp.sock");
    let state_file = dir.join("qemu.state");
    let mut cmd = qemu_command_with(image, mem_mib, cmdline);
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_err("qemu-system-x86_64"))?;
    let result = (|| {
        let mut stdin = child.stdin.take().expect("piped");
        let want: String = console.chars().filter(|&c| c != '\r').collect();
        let mut out = child.stdout.take().expect("piped");
        // 1 = first output, 2 = the snapshot's console reached.
        let (tx, rx) = std::sync::mpsc::channel::<u8>();
        let seen_all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen_out = seen_all.clone();
        let wanted = want.clone();
        std::thread::spawn(move || {
            let mut seen = String::new();
            let mut b = [0u8; 4096];
            loop {
                let n = match out.read(&mut b) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::debug!("bench: reading QEMU's output: {e}");
                        break;
                    }
                };
                seen.extend(
                    String::from_utf8_lossy(&b[..n])
                        .chars()
                        .filter(|&c| c != '\r'),
                );
                *seen_out.lock().unwrap_or_else(|e| e.into_inner()) = seen.clone();
                let _ = tx.send(if seen.contains(&wanted) { 2 } else { 1 });
            }
        });
        let limit = Instant::now() + Duration::from_secs_f64(spec.timeout_secs);
        // Input only once the guest is up: its UART set-up would drop
        // bytes that arrived earlier. A guest that prints nothing first
        // gets it after a second. The UART path has no end of input.
        let first = rx.recv_timeout(Duration::from_secs(1)).unwrap_or(0);
        log::debug!("bench: QEMU first output state {first}");
        // What our runner's snapshot was fed (single-user SQL as a query).
        stdin
            .write_all(&snapshot_input(spec))
            .map_err(|e| run_err("qemu", e.to_string()))?;
        let mut state = first;
        while state != 2 {
            state = rx
                .recv_timeout(limit.saturating_duration_since(Instant::now()))
                .map_err(|_| {
                    run_err(
                        "qemu",
                        format!(
                            "did not print {want:?} (the snapshot's console) in time; it printed \
                             {:?}",
                            seen_all.lock().unwrap_or_else(|e| e.into_inner())
                        ),
                    )
                })?;
        }
        // Let it settle into its input poll loop.
        std::thread::sleep(Duration::from_millis(100));
        let mut qmp = None;
        for _ in 0..100 {
            if let Ok(s) = UnixStream::connect(&sock) {
                qmp = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let qmp = qmp.ok_or_else(|| run_err("qemu", "QMP socket did not appear"))?;
        let mut r = BufReader::new(qmp.try_clone().map_err(|e| run_err("qmp", e.to_string()))?);
        let mut w = qmp;
        let mut line = String::new();
        // One QMP command: its `return` value, or its `error` as an error.
        // Lines in between (the greeting, asynchronous events) are skipped.
        let mut call = |execute: &str,
                        arguments: Option<serde_json::Value>|
         -> Result<serde_json::Value, BenchError> {
            let mut cmd = serde_json::json!({ "execute": execute });
            if let Some(arguments) = arguments {
                cmd["arguments"] = arguments;
            }
            w.write_all(cmd.to_string().as_bytes())
                .map_err(|e| run_err("qmp", e.to_string()))?;
            loop {
                line.clear();
                r.read_line(&mut line)
                    .map_err(|e| run_err("qmp", e.to_string()))?;
                if line.is_empty() {
                    return Err(run_err("qmp", "connection closed"));
                }
                match qmp_reply(&line)? {
                    Some(Ok(value)) => return Ok(value),
                    Some(Err(error)) => return Err(run_err(&format!("qemu {execute}"), error)),
                    None => continue,
                }
            }
        };
        call("qmp_capabilities", None)?;
        // No `stop` first: the stream records the run state, and a VM
        // saved paused would stay paused on `-incoming`. Migration stops
        // the VM itself once the last pages are sent.
        let uri = format!("exec:cat > {}", state_file.display());
        call("migrate", Some(serde_json::json!({ "uri": uri })))?;
        for _ in 0..600 {
            let info = call("query-migrate", None)?;
            match info.get("status").and_then(|s| s.as_str()) {
                Some("completed") => {
                    let _ = call("quit", None);
                    drop(stdin);
                    return Ok(state_file.clone());
                }
                Some("failed") => return Err(run_err("qemu migrate", info.to_string())),
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(run_err("qemu migrate", "did not complete"))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// One line from QMP: `Some(Ok(return value))`, `Some(Err(error text))`
/// for a command's reply, `None` for anything else (the `QMP` greeting, an
/// `event`). A line that is not a JSON object is an error.
fn qmp_reply(line: &str) -> Result<Option<Result<serde_json::Value, String>>, BenchError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| run_err("qmp", format!("not JSON ({e}): {line:?}")))?;
    let Some(obj) = v.as_object() else {
        return Err(run_err("qmp", format!("not a JSON object: {line:?}")));
    };
    if let Some(value) = obj.get("return") {
        return Ok(Some(Ok(value.clone())));
    }
    if let Some(error) = obj.get("error") {
        let class = error.get("class").and_then(|c| c.as_str()).unwrap_or("?");
        let desc = error.get("desc").and_then(|d| d.as_str()).unwrap_or("");
        return Ok(Some(Err(format!("{class}: {desc}"))));
    }
    if obj.contains_key("event") || obj.contains_key("QMP") {
        return Ok(None);
    }
    Err(run_err("qmp", format!("unexpected message: {line:?}")))
}

impl ResumeBench {
    pub fn human(&self) -> String {
        let line = |name: &str, s: &Series| {
            format!(
                "  {name:<46} median {:>8.3} ms  (min {:.3}, max {:.3}, {} runs)\n",
                s.median_ms, s.min_ms, s.max_ms, s.runs
            )
        };
        let mut s = format!(
            "resume vs cold boot, {} ({} MiB guest; snapshot memory file {} KiB of data):\n",
            self.image.display(),
            self.memory_mib,
            self.snapshot_data_bytes / 1024
        );
        s += &line(
            "cold boot -> first answer (runner)",
            &self.cold_first_answer,
        );
        s += &line("resume -> first sign of life (runner)", &self.resume);
        s += &line("resume -> first answer (runner)", &self.resume_first_answer);
        s += &format!(
            "  (the first resume, which learned the working set: {:.3} ms)\n",
            self.learning_resume_first_answer_ms
        );
        s += &line(
            "resume -> first answer, --prefault read",
            &self.resume_first_answer_shared,
        );
        s += &format!(
            "  cold / resume (first answer): {:.2}x\n",
            self.cold_over_resume
        );
        s += &line(
            "pgkraft resume process -> answer",
            &self.pgkraft_resume_process,
        );
        match (&self.qemu_resume_process, &self.qemu_note) {
            (Some(q), _) => {
                s += &line("qemu -incoming process -> answer", q);
                s += &format!(
                    "  qemu / pgkraft (resume process to answer): {:.2}x\n",
                    q.median_ms / self.pgkraft_resume_process.median_ms
                );
            }
            (None, Some(n)) => s += &format!("  qemu: not measured: {n}\n"),
            _ => {}
        }
        s += &format!(
            "  integrity check: first use {:.3} ms (hashes memory file and image), cached {:.3} ms\n",
            self.verify_first_use_ms, self.verify_cached_ms
        );
        s
    }
}

// ---------------------------------------------------------------------------
// `bench density`: N resumed instances of one snapshot, idle, side by side.

#[derive(Debug, Serialize)]
pub struct DensityBench {
    pub snapshot: std::path::PathBuf,
    pub instances: usize,
    pub memory_mib: u32,
    pub prefault: crate::vmm::snapshot::Prefault,
    /// The snapshot's data (non-hole) bytes: what `--prefault write` copies.
    pub snapshot_data_kib: u64,
    /// Per instance, from /proc/PID/smaps_rollup, in KiB.
    pub pss_kib: KibSeries,
    pub private_kib: KibSeries,
    pub rss_kib: KibSeries,
    pub total_pss_kib: u64,
    pub total_private_kib: u64,
    /// Drop of MemAvailable while all instances idled, per instance (counts
    /// kernel memory too: KVM's structures, page tables).
    pub mem_available_drop_per_instance_kib: i64,
    /// Wall time to start all of them and have each answer `query`.
    pub start_all_ms: f64,
    pub stopped_cleanly: usize,
    /// Every instance's figures, in KiB: what `bench report` charts; the
    /// command's JSON has the summaries above.
    #[serde(skip)]
    pub per_instance: PerInstanceKib,
}

#[derive(Debug, Default)]
pub struct PerInstanceKib {
    pub pss: Vec<u64>,
    pub private: Vec<u64>,
    pub rss: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct KibSeries {
    pub median: u64,
    pub min: u64,
    pub max: u64,
}

impl KibSeries {
    pub(crate) fn of(mut v: Vec<u64>) -> KibSeries {
        v.sort_unstable();
        KibSeries {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// The number after `key` in a /proc file of `key: N kB` lines.
fn proc_kib<T: std::str::FromStr>(file: &str, text: &str, key: &str) -> Result<T, BenchError> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| run_err("density", format!("{file} has no readable `{key}` figure")))
}

fn read_proc(file: &str) -> Result<String, BenchError> {
    std::fs::read_to_string(file).map_err(|e| run_err("density", format!("reading {file}: {e}")))
}

fn mem_available_kib() -> Result<i64, BenchError> {
    const FILE: &str = "/proc/meminfo";
    proc_kib(FILE, &read_proc(FILE)?, "MemAvailable:")
}

/// (PSS, private, RSS) of a process, in KiB.
pub(crate) fn rollup(pid: u32) -> Result<(u64, u64, u64), BenchError> {
    let file = format!("/proc/{pid}/smaps_rollup");
    let text = read_proc(&file)?;
    let get = |k: &str| proc_kib::<u64>(&file, &text, k);
    Ok((
        get("Pss:")?,
        get("Private_Clean:")? + get("Private_Dirty:")?,
        get("Rss:")?,
    ))
}

pub fn density(
    dir: &Path,
    n: usize,
    query: &str,
    prefault: crate::vmm::snapshot::Prefault,
) -> Result<DensityBench, BenchError> {
    use std::io::{BufRead, BufReader, Write};
    // Also refuses a snapshot `pgkraft resume` would refuse, before
    // anything runs.
    let manifest = crate::vmm::snapshot::load(dir, &Default::default())?.manifest;
    let me = own_exe()?;
    let instance = || {
        Command::new(&me)
            .arg("resume")
            .arg(dir)
            .arg("--prefault")
            .arg(prefault.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    if prefault == crate::vmm::snapshot::Prefault::Learned {
        // One resume to the end first, so that the instances use a learned
        // working set instead of each learning it.
        let warm = instance()
            .and_then(|mut c| {
                if let Some(mut s) = c.stdin.take() {
                    s.write_all(format!("{query}\n").as_bytes())?;
                }
                c.wait_with_output()
            })
            .map_err(spawn_err("the learning resume"))?;
        if !warm.status.success() {
            return Err(run_err("the learning resume", format!("{}", warm.status)));
        }
    }
    let before = mem_available_kib()?;
    let t = Instant::now();
    let mut children = Vec::with_capacity(n);
    let stop_all =
        |children: &mut Vec<(std::process::Child, Option<std::process::ChildStdin>, _)>| {
            for (c, _, _) in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        };
    for i in 0..n {
        let spawned = instance();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                stop_all(&mut children);
                return Err(spawn_err(format!("instance {i}"))(source));
            }
        };
        let mut stdin = child.stdin.take();
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(format!("{query}\n").as_bytes());
        }
        let out = BufReader::new(child.stdout.take().expect("piped"));
        children.push((child, stdin, out));
    }
    for (i, (_, _, out)) in children.iter_mut().enumerate() {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            stop_all(&mut children);
            return Err(run_err(&format!("instance {i}"), "did not answer"));
        }
    }
    let start_all = t.elapsed();
    // Let every instance settle into its blocked read.
    std::thread::sleep(Duration::from_millis(300));
    // Every instance counts: a figure missing for one would make the
    // report describe fewer instances than it claims.
    let measured = (|| {
        let after = mem_available_kib()?;
        let (mut pss, mut private, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for (c, _, _) in &children {
            let (p, pr, r) = rollup(c.id())?;
            pss.push(p);
            private.push(pr);
            rss.push(r);
        }
        Ok((after, pss, private, rss))
    })();
    let (after, pss, private, rss) = match measured {
        Ok(m) => m,
        Err(e) => {
            stop_all(&mut children);
            return Err(e);
        }
    };
    // Clean stop: end of input, the guest sees EOF and exits.
    let mut stopped = 0;
    for (_, stdin, _) in children.iter_mut() {
        drop(stdin.take());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (c, _, _) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    if st.success() {
                        stopped += 1;
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    Ok(DensityBench {
        snapshot: dir.to_path_buf(),
        instances: n,
        memory_mib: manifest.vm.memory_mib,
        prefault,
        snapshot_data_kib: manifest.memory.data_bytes / 1024,
        total_pss_kib: pss.iter().sum(),
        total_private_kib: private.iter().sum(),
        pss_kib: KibSeries::of(pss.clone()),
        private_kib: KibSeries::of(private.clone()),
        rss_kib: KibSeries::of(rss.clone()),
        per_instance: PerInstanceKib { pss, private, rss },
        mem_available_drop_per_instance_kib: (before - after) / n as i64,
        start_all_ms: (start_all.as_secs_f64() * 1e6).round() / 1e3,
        stopped_cleanly: stopped,
    })
}

impl DensityBench {
    pub fn human(&self) -> String {
        format!(
            "density, {} instances of {} ({} MiB guests, {} KiB of snapshot data, --prefault \
             {}), idle after one answer each:\n  \
             PSS per instance     median {} KiB (min {}, max {}); total {} KiB\n  \
             private per instance median {} KiB (min {}, max {}); total {} KiB\n  \
             RSS per instance     median {} KiB\n  \
             MemAvailable drop per instance: {} KiB (includes kernel/KVM memory)\n  \
             started and answered in {:.1} ms; {} of {} stopped cleanly (EOF -> guest exit 0)\n",
            self.instances,
            self.snapshot.display(),
            self.memory_mib,
            self.snapshot_data_kib,
            self.prefault.as_str(),
            self.pss_kib.median,
            self.pss_kib.min,
            self.pss_kib.max,
            self.total_pss_kib,
            self.private_kib.median,
            self.private_kib.min,
            self.private_kib.max,
            self.total_private_kib,
            self.rss_kib.median,
            self.mem_available_drop_per_instance_kib,
            self.start_all_ms,
            self.stopped_cleanly,
            self.instances
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_replies_are_told_apart_by_their_keys() {
        let greeting = r#"{"QMP": {"version": {"qemu": {"major": 9}}, "capabilities": []}}"#;
        assert!(qmp_reply(greeting).unwrap().is_none());
        // An event that mentions "error" and "return" is still an event.
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION",
            "data": {"status": "error", "return": 1}}"#;
        assert!(qmp_reply(&event.replace('\n', " ")).unwrap().is_none());
        let ok = qmp_reply(r#"{"return": {"status": "completed"}}"#).unwrap();
        assert_eq!(ok.unwrap().unwrap()["status"], "completed");
        let err = qmp_reply(r#"{"error": {"class": "GenericError", "desc": "no"}}"#).unwrap();
        assert_eq!(err.unwrap().unwrap_err(), "GenericError: no");
        assert!(qmp_reply("not json").is_err());
        assert!(qmp_reply("[1]").is_err());
        assert!(qmp_reply(r#"{"other": 1}"#).is_err());
    }
}
