//! What a volume keeps (issue 13): every commit a client saw acknowledged
//! survives a kill -9 of the runner (PostgreSQL's crash recovery runs at
//! the next start), and a table several times larger than the guest's
//! memory lives on the volume.

mod common;
use common::serve::Serve;
use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Clients committing at once in a crash trial.
const CLIENTS: i64 = 4;
/// Commits acknowledged before the kill is timed (so a trial always has
/// some to lose).
const ACKED_BEFORE_KILL: usize = 40;

/// Taken by each test for its whole run: beside the 400 MB table's writes
/// on the same host disk, the crash trials' restarts (PostgreSQL's crash
/// recovery fsyncs every file of the data directory first, ~1,000 of
/// them) took 20-36 s each instead of ~1 s; one after the other both
/// tests take well under a minute.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random number: std's hash keys are drawn from the OS per process and
/// differ in every `RandomState`.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

fn start(image: &Path, volume: &Path, extra: &[&str]) -> Serve {
    let mut args = vec![OsStr::new("--volume"), volume.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    Serve::start(image, &args)
}

/// One client: inserts ids `first`, `first + 1`, ... each in its own
/// transaction (synchronous_commit on, the default), recording an id only
/// once its COMMIT returned; stops at the first error (the server died).
fn commit_until_killed(conninfo: String, first: i64, acked: Arc<Mutex<Vec<i64>>>) {
    let Ok(mut c) = postgres::Client::connect(&conninfo, postgres::NoTls) else {
        return;
    };
    for id in first.. {
        match c.execute("INSERT INTO acks (id) VALUES ($1)", &[&id]) {
            Ok(1) => acked.lock().unwrap().push(id),
            Ok(n) => panic!("INSERT of one row inserted {n}"),
            Err(_) => return,
        }
    }
}

/// What one trial saw.
struct Trial {
    acknowledged: usize,
    lost: Vec<i64>,
}

/// Starts serve on `volume`, has [`CLIENTS`] clients commit, kill -9s
/// serve at a random moment, restarts it and checks that PostgreSQL
/// recovered and that every acknowledged id is there.
fn crash_trial(image: &Path, volume: &Path, n: i64) -> Trial {
    let server = start(image, volume, &[]);
    server
        .client()
        .batch_execute("CREATE TABLE IF NOT EXISTS acks (id bigint PRIMARY KEY)")
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let base = n * 1_000_000_000_000;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (conninfo, acked) = (server.conninfo(), acked.clone());
            std::thread::spawn(move || {
                commit_until_killed(conninfo, base + c * 1_000_000_000, acked)
            })
        })
        .collect();
    while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
        // A client ends at its first error: all ended means the server
        // stopped answering before the kill.
        assert!(
            !clients.iter().all(|c| c.is_finished()),
            "the clients stopped before {ACKED_BEFORE_KILL} commits; the log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(random() % 1000));
    server.kill9();
    for c in clients {
        c.join().expect("a client thread does not panic");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    let server = start(image, volume, &[]);
    let log = server.log_text();
    assert!(
        log.contains("database system was interrupted")
            && log.contains("automatic recovery in progress")
            && (log.contains("redo starts at") || log.contains("redo is not required")),
        "no crash recovery in the restarted server's log:\n{log}"
    );
    let present: std::collections::HashSet<i64> = server
        .client()
        .query(
            "SELECT id FROM acks WHERE id >= $1 AND id < $2",
            &[&base, &(base + 1_000_000_000_000)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    server.stop();
    let lost = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    Trial {
        acknowledged: acked.len(),
        lost,
    }
}

#[test]
fn acknowledged_commits_survive_kill_9_of_the_runner() {
    if !kvm_available() {
        return;
    }
    let _disk = one_at_a_time();
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    let trials: i64 = 3;
    let mut acknowledged = 0;
    for n in 0..trials {
        let t = crash_trial(&image, &volume, n);
        eprintln!(
            "trial {n}: {} acknowledged, {} lost",
            t.acknowledged,
            t.lost.len()
        );
        assert!(t.lost.is_empty(), "trial {n} lost {:?}", t.lost);
        acknowledged += t.acknowledged;
    }
    eprintln!("trials: {trials}, acknowledged commits: {acknowledged}, lost: 0");
}

/// 400 MB of rows in a 256 MiB guest, written, read back, and read again
/// after a restart.
#[test]
fn a_table_larger_than_guest_memory_lives_on_the_volume() {
    if !kvm_available() {
        return;
    }
    let _disk = one_at_a_time();
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    let server = start(&image, &volume, &["--mem", "256"]);
    let mut c = server.client();
    c.batch_execute("CREATE TABLE big (g int, pad text)")
        .unwrap();
    // In batches: each a transaction of ~50 MB.
    for k in 0..8 {
        c.execute(
            "INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series($1::int, $2::int) g",
            &[&(k * 50_000 + 1), &((k + 1) * 50_000)],
        )
        .unwrap_or_else(|e| panic!("batch {k}: {e}; the log:\n{}", server.log_text()));
    }
    let bytes: i64 = c
        .query_one("SELECT pg_total_relation_size('big')", &[])
        .unwrap()
        .get(0);
    assert!(bytes > 400_000_000, "big is {bytes} bytes");
    let read_back = |c: &mut postgres::Client| -> (i64, i64) {
        let row = c
            .query_one("SELECT count(*), sum(g)::bigint FROM big", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(read_back(&mut c), (400_000, 80_000_200_000));
    drop(c);
    server.stop();

    // On the host's disk, not in guest memory.
    let on_disk: u64 = walk(&volume.join("base"));
    assert!(on_disk > 400_000_000, "base/ holds {on_disk} bytes");

    let server = start(&image, &volume, &["--mem", "256"]);
    assert_eq!(read_back(&mut server.client()), (400_000, 80_000_200_000));
    server.stop();
}

/// Bytes of the regular files under `dir`.
fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() { walk(&e.path()) } else { m.len() }
        })
        .sum()
}
