//! `pgkraft serve` as a child process on a free loopback port, for tests
//! that stop, kill and restart it (the volume and durability tests).

use super::*;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "test-password";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Serve {
    child: Option<Child>,
    pub port: u16,
    /// The server's log (`--log`), one file per start.
    pub log: PathBuf,
    /// Its `--json` lines after `ready`.
    events: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    /// `pgkraft serve IMAGE --publish 127.0.0.1:PORT:5432 --json --log
    /// FILE EXTRA...`; returns once it says it is ready, or panics with
    /// its log and stderr.
    pub fn start(image: &Path, extra: &[&std::ffi::OsStr]) -> Serve {
        let port = free_port();
        let log = out_dir().join(format!("serve-{port}-{}.log", unique()));
        let mut child = pgkraft()
            .arg("serve")
            .arg(image)
            .arg("--publish")
            .arg(format!("127.0.0.1:{port}:5432"))
            .arg("--json")
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(180)) else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "pgkraft serve did not become ready ({}); stderr:\n{}\nits log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "ready", "{line}");
        Serve {
            child: Some(child),
            port,
            log,
            events: rx,
        }
    }

    /// The next `--json` event named `name` within `limit` (others before
    /// it are returned too, in order), or a panic naming what came.
    pub fn next_event(&self, name: &str, limit: Duration) -> (serde_json::Value, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if v["event"] == name {
                        return (v, before);
                    }
                    before.push(line);
                }
                Err(_) => panic!(
                    "no `{name}` event from serve within {limit:?}; came before: {before:?}; its log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// The `--json` events that came so far, without waiting.
    pub fn events_so_far(&self) -> Vec<String> {
        self.events.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn conninfo(&self) -> String {
        self.conninfo_as(PASSWORD)
    }

    fn conninfo_as(&self, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres password={password} \
             connect_timeout=30",
            self.port
        )
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls).unwrap()
    }

    /// The superuser logging in with `password` (right or wrong).
    pub fn client_as(&self, password: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.conninfo_as(password), postgres::NoTls)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT (PostgreSQL's fast shutdown); panics unless serve exits 0
    /// within 120 s.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let o = run(Command::new("kill").args(["-INT", &child.id().to_string()]));
        assert!(o.status.success());
        let status = wait_for(&mut child, Duration::from_secs(120));
        let log = self.log_text();
        assert!(
            status.is_some_and(|s| s.success()),
            "serve did not stop cleanly ({status:?}); its log:\n{log}"
        );
        log
    }

    /// SIGKILL to the serve process (the runner and the guest are in it).
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The child's status once it exits within `limit` (else it is killed
/// and `None`).
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A number no other call in this process returns.
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}
