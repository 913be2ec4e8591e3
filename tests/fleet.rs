//! `pgkraft fleet`: one supervisor, many databases, each its own VM on its
//! own port, hibernating when idle and woken by its clients (real KVM,
//! the real postgres-17 image, the `postgres` client). Every wait is
//! bounded; no test asserts a time.

mod common;

use common::serve::{PASSWORD, free_port, unique, wait_for};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Booting a handful of servers on a shared 2-core host, hibernating
/// them, or stopping them all.
const FLEET_PATIENCE: Duration = Duration::from_secs(300);
/// One client's whole conversation with one database.
const CLIENT_PATIENCE: Duration = Duration::from_secs(90);

/// `pgkraft fleet run FILE --json` as a child, its stdout lines kept.
struct Supervisor {
    child: Option<Child>,
    file: PathBuf,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Supervisor {
    /// Starts it and waits for `fleet_started`.
    fn start(file: &Path) -> Supervisor {
        let mut child = pgkraft()
            .args(["fleet", "run"])
            .arg(file)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Passed on as it comes, so a failure shows what the supervisor said.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("supervisor: {line}");
            }
        });
        let mut s = Supervisor {
            child: Some(child),
            file: file.to_path_buf(),
            lines,
            seen: Vec::new(),
        };
        s.event_where(Duration::from_secs(120), |v| v["event"] == "fleet_started");
        s
    }

    /// The first event (from the start) that `pred` accepts.
    fn event_where(&mut self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self
            .seen
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| pred(v))
        {
            return v;
        }
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "no such event within {limit:?}; the supervisor said:\n{}",
                    self.seen.join("\n")
                );
            };
            self.seen.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if pred(&v) {
                return v;
            }
        }
    }

    fn status(&self) -> Value {
        // Asked often: not echoed as `run` would.
        let o = pgkraft()
            .args(["fleet", "status"])
            .arg(&self.file)
            .arg("--json")
            .output()
            .unwrap();
        assert!(o.status.success(), "fleet status: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("one JSON document")
    }

    /// Asks `fleet status` until `pred` holds for it; returns that status.
    fn status_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            // A bound on the wait, not a figure: the state never came.
            if start.elapsed() >= FLEET_PATIENCE {
                panic!("never {what} (waited {FLEET_PATIENCE:?}):\n{s:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `signal` and waits (bounded) for the supervisor to exit.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let o =
            run(std::process::Command::new("kill")
                .args([format!("-{signal}"), child.id().to_string()]));
        assert!(o.status.success());
        let status = wait_for(&mut child, FLEET_PATIENCE)
            .unwrap_or_else(|| panic!("the supervisor did not stop within {FLEET_PATIENCE:?}"));
        // What it said up to its end.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        status
    }

    fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn database<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status:#}"))
}

fn all_in(status: &Value, state: &str) -> bool {
    status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["state"] == state)
}

/// Runs `talk` with a client of the database on `port`, on a thread of
/// its own: a database that never answers fails the test instead of
/// hanging it.
fn with_client<T: Send + 'static>(
    port: u16,
    talk: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let conninfo = format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres password={PASSWORD} \
             connect_timeout=60"
        );
        let mut client = postgres::Client::connect(&conninfo, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
        let _ = tx.send(talk(&mut client));
    });
    rx.recv_timeout(CLIENT_PATIENCE).unwrap_or_else(|_| {
        panic!("the database on port {port} did not answer (or the client failed)")
    })
}

/// A shuffled 0..n, and the seed to say which.
fn shuffled(n: usize) -> (Vec<usize>, u64) {
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1;
    let mut x = seed;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    (order, seed)
}

fn scratch(what: &str) -> PathBuf {
    let dir = out_dir().join(format!("{what}-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_fleet_hibernates_and_each_database_wakes_for_its_own_client() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = scratch("fleet");
    // Even ones keep their data in a volume, odd ones in memory.
    let dbs: Vec<(String, u16, bool)> = (0..6)
        .map(|i| (format!("db{i}"), free_port(), i % 2 == 0))
        .collect();
    let mut yaml = format!(
        "defaults: {{ image: {}, memory_mib: 128, idle_timeout: 500ms }}\ndatabases:\n",
        image.display()
    );
    for (name, port, volume) in &dbs {
        let place = match volume {
            true => format!("volume: vols/{name}"),
            false => format!("hibernate_dir: hib/{name}"),
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    port: {port}\n    {place}\n"
        ));
    }
    let file = dir.join("fleet.yaml");
    std::fs::write(&file, &yaml).unwrap();

    let mut fleet = Supervisor::start(&file);
    fleet.status_until("all hibernated", |s| all_in(s, "hibernated"));
    for (name, _, volume) in &dbs {
        let hib = match volume {
            true => dir.join(format!("vols/{name}.hibernate/memory.raw")),
            false => dir.join(format!("hib/{name}/memory.raw")),
        };
        assert!(hib.is_file(), "{name}: no memory file {}", hib.display());
        assert!(dir.join(format!("fleet.logs/{name}.log")).is_file());
    }
    let asleep = fleet.status();
    for (name, _, _) in &dbs {
        let d = database(&asleep, name);
        assert_eq!(d["memory"]["guest_resident_bytes"], 0, "{d:#}");
        assert!(
            d["memory"]["memory_file_bytes"].as_u64().unwrap() > 0,
            "{d:#}"
        );
        assert!(d["hibernations"].as_u64().unwrap() >= 1, "{d:#}");
    }

    let (order, seed) = shuffled(dbs.len());
    eprintln!("waking in the order {order:?} (seed {seed})");
    for &i in &order {
        let (name, port, _) = dbs[i].clone();
        let wakes_before = database(&fleet.status(), &name)["wakes"].as_u64().unwrap();
        let who = name.clone();
        let back: String = with_client(port, move |c| {
            c.batch_execute("CREATE TABLE IF NOT EXISTS t (who text)")
                .unwrap();
            c.execute("INSERT INTO t VALUES ($1)", &[&who]).unwrap();
            c.query_one("SELECT string_agg(who, ',') FROM t", &[])
                .unwrap()
                .get(0)
        });
        assert_eq!(back, name, "{name} answered with another database's rows");
        let s = fleet.status_until(&format!("{name} woken and answered"), |s| {
            let d = database(s, &name);
            d["wakes"].as_u64().unwrap() > wakes_before
                && d["last_wake"]["first_answer_ms"].is_number()
        });
        let d = database(&s, &name);
        assert_eq!(d["last_wake"]["cause"], "connection", "{d:#}");
        assert!(d["last_wake"]["at_unix_ms"].as_u64().unwrap() > 0, "{d:#}");
        assert_eq!(d["port"], port);
    }

    // Asleep again, each still has what its client wrote.
    fleet.status_until("all hibernated again", |s| all_in(s, "hibernated"));
    for (name, port, _) in dbs.clone() {
        let back: String = with_client(port, |c| {
            c.query_one("SELECT string_agg(who, ',') FROM t", &[])
                .unwrap()
                .get(0)
        });
        assert_eq!(back, name);
    }
    let awake = fleet.status();
    for (name, _, _) in &dbs {
        let d = database(&awake, name);
        assert!(d["wakes"].as_u64().unwrap() >= 2, "{d:#}");
    }

    let status = fleet.stop("INT");
    assert!(status.success(), "the fleet did not stop cleanly: {status}");
    let events = fleet.events();
    for (name, _, _) in &dbs {
        assert!(
            events.iter().any(|e| e["database"] == name.as_str()
                && e["event"] == "stopped"
                && e["status"] == 0),
            "{name} did not stop cleanly: {events:#?}"
        );
    }
    let end = events.last().unwrap();
    assert_eq!(end["event"], "fleet_stopped");
    assert_eq!(end["failed"], 0);
    assert!(!dir.join("fleet.sock").exists(), "the control socket stays");
}

#[test]
fn one_database_failing_leaves_the_others_serving() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = scratch("fleet-fail");
    let (good, bad) = (free_port(), free_port());
    // 32 MiB is too little for the server: it stops with status 1 soon
    // after it boots.
    let yaml = format!(
        "defaults: {{ image: {} }}\ndatabases:\n\
         \x20 - name: good\n    port: {good}\n    memory_mib: 128\n    idle_timeout: 500ms\n    \
         hibernate_dir: hib/good\n\
         \x20 - name: starved\n    port: {bad}\n    memory_mib: 32\n",
        image.display()
    );
    let file = dir.join("fleet.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let mut fleet = Supervisor::start(&file);
    let s = fleet.status_until("starved failed, good hibernated", |s| {
        database(s, "starved")["state"] == "failed" && database(s, "good")["state"] == "hibernated"
    });
    let starved = database(&s, "starved");
    assert!(
        starved["error"].as_str().unwrap().contains("starved.log"),
        "{starved:#}"
    );
    let one: i32 = with_client(good, |c| c.query_one("SELECT 1", &[]).unwrap().get(0));
    assert_eq!(one, 1);
    fleet.status_until("good woken", |s| {
        database(s, "good")["wakes"].as_u64().unwrap() >= 1
    });
    let status = fleet.stop("TERM");
    assert_eq!(status.code(), Some(1), "one database failed: exit 1");
    let events = fleet.events();
    assert!(
        events
            .iter()
            .any(|e| e["database"] == "good" && e["event"] == "stopped" && e["status"] == 0),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["database"] == "starved" && e["event"] == "failed"),
        "{events:#?}"
    );
}

#[test]
fn a_bad_fleet_file_is_refused_before_anything_starts() {
    let image = postgres_image("17");
    let dir = scratch("fleet-bad");
    let write = |yaml: String| {
        let file = dir.join(format!("bad-{}.yaml", unique()));
        std::fs::write(&file, yaml).unwrap();
        file
    };
    let head = format!(
        "defaults: {{ image: {}, idle_timeout: 1s }}\ndatabases:\n",
        image.display()
    );
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(
                "{head}  - name: a\n    port: 7\n    hibernate_dir: h/a\n  - name: b\n    port: 7\n    hibernate_dir: h/b\n"
            ),
            vec!["databases[1].port", "database `b`", "fix:"],
        ),
        (
            format!(
                "{head}  - name: a\n    port: 7\n    hibernate_dir: h/a\n  - name: a\n    port: 8\n    hibernate_dir: h/b\n"
            ),
            vec!["databases[1].name", "named twice", "fix:"],
        ),
        (
            format!(
                "{head}  - name: a\n    port: 7\n    image: missing.img\n    hibernate_dir: h/a\n"
            ),
            vec!["databases[0].image", "missing.img does not exist", "fix:"],
        ),
        (
            format!("{head}  - name: a\n    port: 7\n"),
            vec!["databases[0].hibernate_dir", "database `a`", "fix:"],
        ),
        (
            format!("{head}  - name: a\n    port: 7\n    hibernate_dir: h/a\n    memroy_mib: 64\n"),
            vec!["databases[0].memroy_mib", "did you mean `memory_mib`"],
        ),
    ];
    for (yaml, needles) in cases {
        let file = write(yaml);
        for cmd in [&["fleet", "run"][..], &["fleet"][..]] {
            let o = run(pgkraft().args(cmd).arg(&file).arg("--json"));
            let mut needles = needles.clone();
            let name = file.file_name().unwrap().to_str().unwrap();
            needles.push(name);
            refused(&o, &needles);
        }
        assert!(!file.with_extension("sock").exists());
        assert!(!file.with_extension("logs").exists());
    }
    assert!(
        !dir.join("h").exists(),
        "nothing may be made for a refused fleet"
    );

    // A fleet that is not running is not there to ask.
    let file = write(format!(
        "{head}  - name: a\n    port: 7\n    hibernate_dir: h/a\n"
    ));
    let o = run(pgkraft().args(["fleet", "status"]).arg(&file));
    assert_eq!(o.status.code(), Some(1));
    has(&stderr(&o), &["no fleet supervisor answers", "fleet run"]);
}
