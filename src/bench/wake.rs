//! `pgkraft bench wake`: what a client waits for when it connects to a
//! hibernated server, against the same server running and a cold boot of
//! the same image, measured side by side in one run.
//!
//! Every figure is a client's: a real PostgreSQL client (the `postgres`
//! crate, with the image's SCRAM password) timed from the start of its
//! connect to the answer of `SELECT 1`. The server is `pgkraft serve` as a
//! user runs it (a child process, its data on a fresh volume, hibernating
//! after `--idle-timeout`); rounds alternate a hibernated connect (after
//! the server said `hibernated`) with a running one (right after). Cold
//! boots spawn `pgkraft serve` without a volume and connect until it
//! answers. The runner's own view of each wake (its `woke` event: restore,
//! guest running, first bytes out) and the serving process's memory
//! running and hibernated come along.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, KibSeries, Series, own_exe, rollup, run_err, spawn_err};
use crate::image::Image;
use crate::smoke::server::{Credentials, credentials};

/// How long a client or the server may take before the run is failed.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize)]
pub struct WakeBench {
    pub image: PathBuf,
    pub runs: usize,
    pub idle_timeout_ms: f64,
    /// Client connect -> answer, the server running.
    pub running_ms: Series,
    /// Client connect -> answer, the server hibernated.
    pub hibernated_ms: Series,
    /// `pgkraft serve` spawned -> a client's answer.
    pub cold_boot_ms: Series,
    /// Median hibernated minus median running.
    pub wake_cost_ms: f64,
    /// The runner's `woke` events: from the connection seen to the VM
    /// restored, to the guest running, to its first bytes out.
    pub restore_ms: Series,
    pub resumed_ms: Series,
    pub first_bytes_ms: Series,
    /// The runner's `hibernated` events: the save itself.
    pub save_ms: Series,
    /// The serving process (PSS, private, RSS; KiB), idle-running after a
    /// query and hibernated.
    pub running_memory: ProcessMemory,
    pub hibernated_memory: ProcessMemory,
    /// The hibernation's memory file: bytes of data, and blocks on disk.
    pub memory_file_data_bytes: u64,
    pub memory_file_disk_bytes: u64,
}

/// A process's memory from `/proc/PID/smaps_rollup`, over the rounds.
#[derive(Debug, Serialize)]
pub struct ProcessMemory {
    pub pss_kib: KibSeries,
    pub private_kib: KibSeries,
    pub rss_kib: KibSeries,
}

impl ProcessMemory {
    fn of(samples: &[(u64, u64, u64)]) -> ProcessMemory {
        ProcessMemory {
            pss_kib: KibSeries::of(samples.iter().map(|s| s.0).collect()),
            private_kib: KibSeries::of(samples.iter().map(|s| s.1).collect()),
            rss_kib: KibSeries::of(samples.iter().map(|s| s.2).collect()),
        }
    }
}

/// A free port on loopback (bound, then released for the server to take).
fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(spawn_err("find a free port"))?;
    Ok(l.local_addr()
        .map_err(spawn_err("find a free port"))?
        .port())
}

/// Connect, authenticate, `SELECT 1`: how long it took.
fn answer(addr: SocketAddr, creds: &Credentials) -> Result<Duration, postgres::Error> {
    let config = creds.client_config(addr, PATIENCE);
    let t = Instant::now();
    let mut client = config.connect(postgres::NoTls)?;
    client.simple_query("SELECT 1")?;
    let took = t.elapsed();
    drop(client);
    Ok(took)
}

/// A `pgkraft serve --json` child and its events.
struct Server {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
}

impl Server {
    fn spawn(args: &[&str], what: &str) -> Result<Server, BenchError> {
        let mut child = Command::new(own_exe()?)
            .arg("serve")
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_err(format!("start {what}")))?;
        let out = child.stdout.take().expect("piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Ok(Server { child, events })
    }

    /// The next event named `name` (others before it are dropped).
    fn next(&self, name: &str) -> Result<serde_json::Value, BenchError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return Ok(v),
                Ok(_) => {}
                Err(_) => {
                    return Err(run_err(
                        "pgkraft serve",
                        format!("no `{name}` event within {}s", PATIENCE.as_secs()),
                    ));
                }
            }
        }
    }

    /// SIGTERM (a clean shutdown), then wait for the exit.
    fn stop(mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field_ms(v: &serde_json::Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

pub fn wake(image: &Image, runs: usize, idle_timeout: Duration) -> Result<WakeBench, BenchError> {
    let runs = runs.max(1);
    let creds = credentials(image)?;
    let work = tempfile::tempdir().map_err(spawn_err("create a temporary directory"))?;
    let volume = work.path().join("volume");
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let img = image.path().to_string_lossy().into_owned();
    let publish = format!("127.0.0.1:{port}:5432");
    let idle = format!("{}ms", idle_timeout.as_millis().max(1));
    let server = Server::spawn(
        &[
            &img,
            "--publish",
            &publish,
            "--volume",
            &volume.to_string_lossy(),
            "--idle-timeout",
            &idle,
        ],
        "the server",
    )?;
    server.next("ready")?;
    let client = |what: &str| answer(addr, &creds).map_err(|e| run_err(what, e.to_string()));
    let (mut running, mut hibernated) = (Vec::new(), Vec::new());
    let (mut restore, mut resumed, mut first, mut save) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut mem_running, mut mem_hibernated) = (Vec::new(), Vec::new());
    let mut file = None;
    let pid = server.child.id();
    // One connect first: the server's own first connection pays for pages
    // no later one touches.
    client("the first connection")?;
    for _ in 0..runs {
        let h = server.next("hibernated")?;
        save.extend(field_ms(&h, "save_ms"));
        file = h["memory_file"].as_str().map(PathBuf::from).or(file);
        mem_hibernated.push(rollup(pid)?);
        hibernated.push(client("a connection to the hibernated server")?);
        let w = server.next("woke")?;
        restore.extend(field_ms(&w, "restore_ms"));
        resumed.extend(field_ms(&w, "resumed_ms"));
        first.extend(field_ms(&w, "first_answer_ms"));
        running.push(client("a connection to the running server")?);
        mem_running.push(rollup(pid)?);
    }
    let (data, disk) = file.as_deref().map_or((0, 0), file_sizes);
    server.stop();

    let mut cold = Vec::new();
    for _ in 0..runs {
        cold.push(cold_boot(image.path(), &creds)?);
    }
    let running_ms = Series::of(running);
    let hibernated_ms = Series::of(hibernated);
    Ok(WakeBench {
        image: image.path().to_path_buf(),
        runs,
        idle_timeout_ms: idle_timeout.as_secs_f64() * 1e3,
        wake_cost_ms: ((hibernated_ms.median_ms - running_ms.median_ms) * 1e3).round() / 1e3,
        running_ms,
        hibernated_ms,
        cold_boot_ms: Series::of(cold),
        restore_ms: Series::from_ms(&restore),
        resumed_ms: Series::from_ms(&resumed),
        first_bytes_ms: Series::from_ms(&first),
        save_ms: Series::from_ms(&save),
        running_memory: ProcessMemory::of(&mem_running),
        hibernated_memory: ProcessMemory::of(&mem_hibernated),
        memory_file_data_bytes: data,
        memory_file_disk_bytes: disk,
    })
}

/// Logical data (the file's size less its holes is not asked: the size of
/// the data the runner wrote is what `hibernated` said) and blocks on disk.
fn file_sizes(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.len(), m.blocks() * 512))
}

/// `pgkraft serve` spawned (the image's own cluster, in memory) until a
/// client's `SELECT 1` is answered.
fn cold_boot(image: &Path, creds: &Credentials) -> Result<Duration, BenchError> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t = Instant::now();
    let server = Server::spawn(
        &[
            &image.to_string_lossy(),
            "--publish",
            &format!("127.0.0.1:{port}:5432"),
        ],
        "a cold boot",
    )?;
    loop {
        if answer(addr, creds).is_ok() {
            let took = t.elapsed();
            server.stop();
            return Ok(took);
        }
        if t.elapsed() > PATIENCE {
            return Err(run_err(
                "a cold boot",
                format!("no answer within {}s", PATIENCE.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl WakeBench {
    pub fn human(&self) -> String {
        let s = |x: &Series| {
            format!(
                "{:.1} ms (min {:.1}, max {:.1})",
                x.median_ms, x.min_ms, x.max_ms
            )
        };
        let m = |k: &ProcessMemory| {
            format!(
                "PSS {:.1} MiB, private {:.1} MiB, RSS {:.1} MiB",
                k.pss_kib.median as f64 / 1024.0,
                k.private_kib.median as f64 / 1024.0,
                k.rss_kib.median as f64 / 1024.0
            )
        };
        format!(
            "{}: {} rounds, idle timeout {:.0} ms (medians; a client's connect, SCRAM login and SELECT 1)\n\
             \x20 running server:     {}\n\
             \x20 hibernated server:  {}\n\
             \x20 cold boot:          {}\n\
             \x20 wake costs {:+.1} ms over running (target: at most +25 ms)\n\
             \x20 runner's view of a wake: restored {:.1} ms, guest running {:.1} ms, first bytes out {:.1} ms\n\
             \x20 hibernating took {:.1} ms\n\
             \x20 serving process idle-running: {}\n\
             \x20 serving process hibernated:   {}\n\
             \x20 memory file: {:.1} MB of data, {:.1} MB on disk\n",
            self.image.display(),
            self.runs,
            self.idle_timeout_ms,
            s(&self.running_ms),
            s(&self.hibernated_ms),
            s(&self.cold_boot_ms),
            self.wake_cost_ms,
            self.restore_ms.median_ms,
            self.resumed_ms.median_ms,
            self.first_bytes_ms.median_ms,
            self.save_ms.median_ms,
            m(&self.running_memory),
            m(&self.hibernated_memory),
            self.memory_file_data_bytes as f64 / 1e6,
            self.memory_file_disk_bytes as f64 / 1e6,
        )
    }
}
