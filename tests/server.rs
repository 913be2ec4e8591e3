//! The PostgreSQL image as a server: `pgkraft serve` on a loopback port,
//! used by real clients (psql, pgbench, the Rust `postgres` crate), and
//! stopped with SIGINT (PostgreSQL's fast shutdown, exit 0).

mod common;
use common::*;
use postgres::fallible_iterator::FallibleIterator;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "test-password";

struct Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// `pgkraft serve` on a free loopback port; returns once it says it
    /// accepts connections.
    fn start(image: &Path) -> Server {
        Server::start_with(image, &[])
    }

    /// The host-linked server of the image's build on a copy of its files.
    fn start_native(image: &Path) -> Server {
        Server::start_with(image, &["--native"])
    }

    fn start_with(image: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let log = out_dir().join(format!("serve-{port}.log"));
        let mut child = pgkraft()
            .arg("serve")
            .args(extra)
            .arg(image)
            .arg("--publish")
            .arg(format!("127.0.0.1:{port}:5432"))
            .arg("--json")
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "pgkraft serve did not become ready; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "ready", "{line}");
        assert_eq!(v["listen"][0], format!("127.0.0.1:{port}"));
        Server {
            child: Some(child),
            port,
            log,
        }
    }

    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres password={PASSWORD}",
            self.port
        )
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls).unwrap()
    }

    /// A client program (psql, pgbench, pg_dump) pointed at this server
    /// as the superuser with the right password.
    fn client_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20");
        c
    }

    fn psql(&self, password: &str, sql: &str) -> std::process::Output {
        run(self
            .client_cmd("psql")
            .args(["-d", "postgres", "-X", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", password))
    }

    /// A wrong password gets PostgreSQL's own refusal.
    fn refuses_a_wrong_password(&self) {
        let o = self.psql("wrong", "SELECT 1");
        assert!(!o.status.success());
        has(
            &stderr(&o),
            &["password authentication failed for user \"postgres\""],
        );
    }

    /// The postmaster's helper processes as `backend_type:count,...`
    /// (sorted), once they include every one of `wanted` (they start one
    /// after the other; 20 s at most).
    fn helpers(&self, wanted: &[&str]) -> String {
        let mut helpers = String::new();
        assert!(
            eventually(Duration::from_secs(20), || {
                helpers = stdout(&self.psql(
                    PASSWORD,
                    "SELECT string_agg(backend_type || ':' || n, ',' ORDER BY backend_type) \
                     FROM (SELECT backend_type, count(*) AS n FROM pg_stat_activity \
                     WHERE backend_type <> 'client backend' GROUP BY backend_type) s",
                ));
                wanted.iter().all(|h| helpers.contains(h))
            }),
            "helper processes in pg_stat_activity: {helpers}"
        );
        helpers
    }

    /// SIGINT, as Ctrl-C: the server shuts down and serve exits.
    fn stop(self) -> (std::process::ExitStatus, String) {
        self.stop_with("-INT")
    }

    /// `kill SIGNAL` (e.g. `-TERM`, as a service manager stops it).
    fn stop_with(mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let o = run(Command::new("kill").args([signal, &child.id().to_string()]));
        assert!(o.status.success());
        let status = wait_timeout(&mut child, Duration::from_secs(60))
            .expect("pgkraft serve did not exit within 60 s of SIGINT");
        (
            status,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether `cond` holds within `limit`, asked every 50 ms.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    if !eventually(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
    }
    status
}

#[test]
fn psql_is_answered_a_wrong_password_refused_and_sigterm_stops_it_cleanly() {
    if !kvm_available() {
        return;
    }
    let server = Server::start(&postgres_image("17"));
    let o = server.psql(PASSWORD, "SELECT 40 + 2");
    assert!(o.status.success(), "psql failed: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");
    server.refuses_a_wrong_password();
    let o = server.psql(PASSWORD, "SELECT version()");
    has(&stdout(&o), &["PostgreSQL 17"]);
    // The postmaster's helper processes run, each a process of its own.
    server.helpers(&[
        "autovacuum launcher:1",
        "background writer:1",
        "checkpointer:1",
        "walwriter:1",
    ]);
    // A client in another encoding (psql in a LATIN1 terminal) gets its
    // bytes converted by the linked conversion module.
    let o = run(server
        .client_cmd("psql")
        .args(["-d", "postgres", "-X", "-A", "-t", "-c", "SELECT chr(233)"])
        .env("PGCLIENTENCODING", "LATIN1"));
    assert_eq!(o.stdout, b"\xe9\n", "{}", stderr(&o));
    // An IPv4 client is the IPv4 listener's (PostgreSQL's `::` one has
    // IPV6_V6ONLY), as on Linux: its address is not IPv4-mapped.
    let o = server.psql(PASSWORD, "SELECT family(inet_client_addr())");
    assert_eq!(stdout(&o).trim(), "4", "{}", stderr(&o));
    // A second serve on the same port fails before it says it is ready
    // (the answers there are the first one's), and the first lives on.
    let o = run(pgkraft()
        .arg("serve")
        .arg(postgres_image("17"))
        .arg("--publish")
        .arg(format!("127.0.0.1:{}:5432", server.port))
        .arg("--json"));
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("ready"), "{}", stdout(&o));
    has(&stderr(&o), &["cannot publish", "Address already in use"]);
    assert_eq!(stdout(&server.psql(PASSWORD, "SELECT 7")).trim(), "7");
    // Clients send their own zone (psql: PGTZ); the image has them all.
    let o = run(server
        .client_cmd("psql")
        .args(["-d", "postgres", "-X", "-A", "-t", "-c"])
        .arg("SELECT current_setting('TimeZone'), to_char('2026-07-01 12:00+00'::timestamptz, 'HH24 TZ')")
        .env("PGTZ", "America/New_York"));
    assert_eq!(
        stdout(&o).trim(),
        "America/New_York|08 EDT",
        "{}",
        stderr(&o)
    );
    // SIGTERM (a service manager's stop) is a clean, fast shutdown too.
    let (status, log) = server.stop_with("-TERM");
    assert!(status.success(), "serve exited with {status}; log:\n{log}");
    has(
        &log,
        &[
            "received fast shutdown request",
            "database system is shut down",
        ],
    );
}

/// PostgreSQL 18 serves psql as 17 does. Its recipe sets `io_method =
/// sync`; 18's own default, `worker`, runs too (the same recipe without
/// that line): the I/O workers are processes of their own beside the other
/// helpers. Either way a table larger than shared_buffers (16 MB), read
/// back after a checkpoint, gives its rows.
#[test]
fn postgres_18_serves_psql_with_sync_io_and_with_io_workers() {
    if !kvm_available() {
        return;
    }
    let stock = postgres_image("18");
    let recipe = stock_recipe_as("18", "postgres-18-io-worker");
    assert!(recipe.contains("    io_method: sync\n"), "{recipe}");
    let dir = out_dir().join("io-worker");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("postgres-18-io-worker.yaml");
    std::fs::write(&path, recipe.replace("    io_method: sync\n", "")).unwrap();
    let o = run(pgkraft()
        .env("PGKRAFT_PASSWORD", PASSWORD)
        .arg("build")
        .arg(&path)
        .arg("--out")
        .arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let worker = dir.join("postgres-18-io-worker.img");

    for (image, io_method, io_workers) in [(&stock, "sync", 0), (&worker, "worker", 3)] {
        let server = Server::start(image);
        let o = server.psql(PASSWORD, "SELECT version()");
        assert!(o.status.success(), "psql failed: {}", stderr(&o));
        has(&stdout(&o), &["PostgreSQL 18."]);
        server.refuses_a_wrong_password();
        let o = server.psql(PASSWORD, "SHOW io_method");
        assert_eq!(stdout(&o).trim(), io_method, "{}", stderr(&o));
        let helpers = server.helpers(&["checkpointer:1", "walwriter:1"]);
        if io_workers > 0 {
            has(&helpers, &[&format!("io worker:{io_workers}")]);
        } else {
            assert!(!helpers.contains("io worker"), "{helpers}");
        }
        // ~40 MB of table: after the checkpoint a sequential scan reads
        // most of it from the data files again.
        let o = server.psql(
            PASSWORD,
            "CREATE TABLE big AS SELECT g AS id, repeat('x', 300) AS pad \
             FROM generate_series(1, 120000) g",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = server.psql(PASSWORD, "CHECKPOINT");
        assert!(o.status.success(), "{}", stderr(&o));
        let o = server.psql(
            PASSWORD,
            "SELECT pg_relation_size('big') > 32 * 1024 * 1024, count(*), sum(id), \
             sum(length(pad)) FROM big",
        );
        assert_eq!(
            stdout(&o).trim(),
            "t|120000|7200060000|36000000",
            "{io_method}: {}",
            stderr(&o)
        );
        let (status, log) = server.stop();
        assert!(status.success(), "serve exited with {status}; log:\n{log}");
        has(&log, &["database system is shut down"]);
    }
}

#[test]
fn the_rust_client_reads_rows_errors_prepared_statements_copy_and_notify() {
    if !kvm_available() {
        return;
    }
    let server = Server::start(&postgres_image("17"));
    let mut c = server.client();
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let row = c
        .query_one("SELECT count(*), max(name) FROM t", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1000);
    assert_eq!(row.get::<_, String>(1), "row 999");

    // An error ends the statement, not the session.
    let e = c.query("SELECT 1/0", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&postgres::error::SqlState::DIVISION_BY_ZERO));
    let e = c
        .execute("INSERT INTO t VALUES (1, 'again')", &[])
        .unwrap_err();
    assert_eq!(e.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));

    let stmt = c.prepare("SELECT name FROM t WHERE id = $1").unwrap();
    for id in [1, 500, 1000] {
        let name: String = c.query_one(&stmt, &[&id]).unwrap().get(0);
        assert_eq!(name, format!("row {id}"));
    }

    // COPY in and out.
    let mut w = c.copy_in("COPY t FROM STDIN").unwrap();
    use std::io::Write;
    for id in 1001..=1100 {
        writeln!(w, "{id}\tcopied {id}").unwrap();
    }
    assert_eq!(w.finish().unwrap(), 100);
    let mut out = String::new();
    use std::io::Read;
    c.copy_out("COPY (SELECT id, name FROM t WHERE id > 1095 ORDER BY id) TO STDOUT")
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(
        out,
        (1096..=1100)
            .map(|i| format!("{i}\tcopied {i}\n"))
            .collect::<String>()
    );

    // LISTEN/NOTIFY between two sessions.
    let mut listener = server.client();
    listener.batch_execute("LISTEN ch").unwrap();
    c.batch_execute("NOTIFY ch, 'hello'").unwrap();
    let mut n = listener.notifications();
    let note = n
        .timeout_iter(Duration::from_secs(20))
        .next()
        .unwrap()
        .expect("a notification within 20 s");
    drop(n);
    assert_eq!((note.channel(), note.payload()), ("ch", "hello"));
    drop(listener);

    // A transaction left open by one client blocks another's write of the
    // same row until it ends.
    let mut a = server.client();
    let mut ta = a.transaction().unwrap();
    ta.execute("UPDATE t SET name = 'held' WHERE id = 1", &[])
        .unwrap();
    let conninfo = server.conninfo();
    let blocked = std::thread::spawn(move || {
        let mut b = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
        b.execute("UPDATE t SET name = 'second' WHERE id = 1", &[])
            .unwrap();
    });
    // The server itself says the second writer waits for the row's lock.
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE t SET name = ''second''%'";
    assert!(
        eventually(Duration::from_secs(20), || {
            c.query_one(waiting, &[]).unwrap().get::<_, i64>(0) == 1
        }),
        "the second writer never waited for the lock"
    );
    assert!(
        !blocked.is_finished(),
        "the second writer finished while the lock was held"
    );
    ta.commit().unwrap();
    blocked.join().unwrap();
    let name: String = c
        .query_one("SELECT name FROM t WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "second");

    // Several clients at once.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let conninfo = server.conninfo();
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&conninfo, postgres::NoTls).unwrap();
                let mut sum = 0i64;
                for i in 0..50 {
                    let v: i32 = c
                        .query_one("SELECT $1::int + 1", &[&(w * 1000 + i)])
                        .unwrap()
                        .get(0);
                    sum += v as i64;
                }
                sum
            })
        })
        .collect();
    for (w, h) in workers.into_iter().enumerate() {
        let expect: i64 = (0..50).map(|i| (w as i64) * 1000 + i + 1).sum();
        assert_eq!(h.join().unwrap(), expect);
    }
    drop(c);
    let (status, log) = server.stop();
    assert!(status.success(), "serve exited with {status}; log:\n{log}");
}

#[test]
fn pgbench_runs_and_faults_leave_the_server_serving() {
    if !kvm_available() {
        return;
    }
    let server = Server::start(&postgres_image("17"));
    let pgbench = |args: &[&str]| run(server.client_cmd("pgbench").args(args).arg("postgres"));
    let o = pgbench(&["-i", "-q", "-s", "1"]);
    assert!(o.status.success(), "pgbench -i: {}", stderr(&o));
    let o = pgbench(&["-S", "-c", "4", "-j", "2", "-t", "200"]);
    assert!(o.status.success(), "pgbench -S: {}", stderr(&o));
    has(
        &stdout(&o),
        &[
            "number of transactions actually processed: 800/800",
            "failed transactions: 0",
        ],
    );

    // More clients than max_connections (20 in the default recipe): the
    // extra ones get PostgreSQL's error, and the server lives on.
    let mut held = Vec::new();
    let refused = loop {
        match postgres::Client::connect(&server.conninfo(), postgres::NoTls) {
            Ok(c) if held.len() < 40 => held.push(c),
            Ok(_) => panic!("more than 40 connections accepted with max_connections 20"),
            Err(e) => break e,
        }
    };
    assert!(
        held.len() >= 15,
        "refused after only {} connections: {refused}",
        held.len()
    );
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "{refused:?}"
    );
    let v: i32 = held[0].query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(v, 1);
    drop(held);

    // A client killed (kill -9) mid-query: its backend notices (it checks
    // the connection every 100 ms while the query runs) and exits.
    let mut psql = server
        .client_cmd("psql")
        .args(["-X", "-d", "postgres", "-c"])
        .arg("SET client_connection_check_interval = '100ms'; SELECT pg_sleep(60)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut watcher = server.client();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)' \
                    AND pid <> pg_backend_pid()";
    let count = |w: &mut postgres::Client| -> i64 { w.query_one(sleeping, &[]).unwrap().get(0) };
    assert!(
        eventually(Duration::from_secs(10), || count(&mut watcher) == 1),
        "psql's query never showed up in pg_stat_activity"
    );
    psql.kill().unwrap(); // SIGKILL
    let _ = psql.wait();
    assert!(
        eventually(Duration::from_secs(10), || count(&mut watcher) == 0),
        "the killed client's backend is still there after 10 s"
    );
    let v: i32 = watcher.query_one("SELECT 7", &[]).unwrap().get(0);
    assert_eq!(v, 7);
    drop(watcher);
    let (status, log) = server.stop();
    assert!(status.success(), "serve exited with {status}; log:\n{log}");
}

/// A database dumped from the image (pg_dump, Debian's client: PostgreSQL
/// 15, so the 15 image) restores into the host-linked server of the same
/// build with the same rows.
#[test]
fn pg_dump_of_the_image_restores_natively_with_the_same_rows() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("15");
    let guest = Server::start(&image);
    let o = guest.psql(
        PASSWORD,
        "CREATE TABLE kv (k int PRIMARY KEY, v text, t timestamptz DEFAULT '2026-01-02 03:04:05+00');
         INSERT INTO kv (k, v) SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let fingerprint =
        "SELECT count(*), md5(string_agg(k || ':' || v || ':' || t, ',' ORDER BY k)) FROM kv";
    let in_guest = stdout(&guest.psql(PASSWORD, fingerprint));
    let dump = out_dir().join("kv.sql");
    let o = run(guest
        .client_cmd("pg_dump")
        .args(["-d", "postgres", "-t", "kv", "-f"])
        .arg(&dump));
    assert!(o.status.success(), "pg_dump: {}", stderr(&o));
    let (status, log) = guest.stop();
    assert!(status.success(), "{log}");

    let native = Server::start_native(&image);
    let o = run(native
        .client_cmd("psql")
        .args(["-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&dump));
    assert!(o.status.success(), "restore: {}", stderr(&o));
    let natively = stdout(&native.psql(PASSWORD, fingerprint));
    assert!(in_guest.starts_with("5000|"), "{in_guest}");
    assert_eq!(natively, in_guest);
    let (status, log) = native.stop();
    assert!(status.success(), "{log}");
}

/// Guest memory runs out before max_connections (each server process
/// reserves its stack): the connection that does not fit gets PostgreSQL's
/// fork-failure answer at once, not a hang, and the server goes on.
#[test]
fn guest_memory_exhaustion_refuses_a_connection_and_the_server_lives_on() {
    if !kvm_available() {
        return;
    }
    let server = Server::start_with(&postgres_image("17"), &["--mem", "160"]);
    let mut held = Vec::new();
    // A hang would show as a connect timeout, not a refusal.
    let conninfo = format!("{} connect_timeout=30", server.conninfo());
    let refused = loop {
        match postgres::Client::connect(&conninfo, postgres::NoTls) {
            Ok(c) if held.len() < 40 => held.push(c),
            Ok(_) => panic!("40 connections fit in a 160 MiB guest: the test needs less memory"),
            Err(e) => break e,
        }
    };
    assert!(
        !refused.to_string().contains("timed out")
            && refused
                .as_db_error()
                .is_none_or(|e| { e.code() != &postgres::error::SqlState::TOO_MANY_CONNECTIONS }),
        "not refused for memory: {refused}"
    );
    assert!(!held.is_empty(), "no connection at all: {refused}");
    drop(held);
    // Once the held backends have exited there is room again.
    let mut answer = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            answer = postgres::Client::connect(&conninfo, postgres::NoTls)
                .and_then(|mut c| c.query_one("SELECT 41 + 1", &[]))
                .ok()
                .map(|r| r.get::<_, i32>(0));
            answer.is_some()
        }),
        "the server did not answer again"
    );
    assert_eq!(answer, Some(42));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    has(
        &log,
        &["could not fork new process for connection: Out of memory"],
    );
}

/// A backend that dies abnormally (here a segmentation fault: an internal
/// function called with an integer where it reads a pointer) makes the
/// postmaster end every other server process, reinitialize shared memory
/// and run crash recovery, as PostgreSQL does; committed rows are there
/// afterwards and the server takes writes again. The other client's
/// session ends with the server's crash notice.
#[test]
fn a_crashed_backend_makes_the_postmaster_reinitialize_and_serve_again() {
    if !kvm_available() {
        return;
    }
    let server = Server::start(&postgres_image("17"));
    let mut setup = server.client();
    setup
        .batch_execute(
            "CREATE TABLE kept(v int); INSERT INTO kept SELECT generate_series(1, 100);
             CREATE FUNCTION crash_backend(bigint) RETURNS cstring
               AS 'textout' LANGUAGE internal STRICT;",
        )
        .unwrap();
    let mut bystander = server.client();
    let e = setup
        .query_one("SELECT crash_backend(16)", &[])
        .expect_err("a backend reading address 16 does not answer");
    assert!(e.is_closed() || e.as_db_error().is_none(), "{e:?}");
    // The postmaster ends the other sessions (SIGQUIT) before it
    // reinitializes.
    assert!(
        eventually(Duration::from_secs(20), || bystander
            .query_one("SELECT 1", &[])
            .is_err()),
        "the other session lived through the crash"
    );
    let mut rows = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            rows = postgres::Client::connect(&server.conninfo(), postgres::NoTls)
                .and_then(|mut c| {
                    c.execute("INSERT INTO kept VALUES (101)", &[])?;
                    c.query_one("SELECT count(*), sum(v) FROM kept", &[])
                })
                .ok()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
            rows.is_some()
        }),
        "the server did not answer after the crash"
    );
    assert_eq!(rows, Some((101, 5151)));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    has(
        &log,
        &[
            "was terminated by signal 11: Segmentation fault",
            "terminating any other active server processes",
            "all server processes terminated; reinitializing",
            "automatic recovery in progress",
        ],
    );
}

/// `pgkraft smoke --vm FILE --json [extra]` with the superuser's password
/// in the environment: the report and the exit status.
fn smoke_server(
    image: &Path,
    vm: &Path,
    password: &str,
    extra: &[&str],
) -> (serde_json::Value, i32) {
    let (v, code) = smoke_json(image, vm, extra, &[("PGKRAFT_PASSWORD", password)]);
    (v, code.unwrap_or(-1))
}

/// test-vms/server.yaml, through the Rust client: in the guest and with
/// the host-linked server of the same build on a copy of its files.
#[test]
fn server_mode_test_vms_pass_in_the_guest_and_natively() {
    if !kvm_available() {
        return;
    }
    let vm = repo().join("test-vms/server.yaml");
    for major in ["17", "15", "18"] {
        let image = postgres_image(major);
        for (extra, runner) in [(&[][..], "kvm"), (&["--native"][..], "native")] {
            let (report, code) = smoke_server(&image, &vm, PASSWORD, extra);
            let failed: Vec<_> = report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["ok"] != true)
                .collect();
            assert!(
                failed.is_empty(),
                "{major} {runner}: {failed:#?}\n{}",
                report["console"]
            );
            assert_eq!(code, 0);
            assert_eq!(report["mode"], "server");
            assert_eq!(report["runner"], runner);
            // Every check of the file, then the clean shutdown.
            let checks = pgkraft::smoke::TestVm::load(&vm).unwrap().checks.len();
            assert_eq!(
                report["checks"].as_array().unwrap().len(),
                checks + 1,
                "{report}"
            );
        }
    }
}

/// Checks that do not hold fail, each saying why: a wrong password, a
/// "blocking" statement nothing blocks, rows that differ.
#[test]
fn server_mode_checks_that_do_not_hold_fail_and_say_why() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vm.yaml");
    std::fs::write(
        &vm,
        "mode: server\ntimeout_secs: 60\nchecks:\n  - name: nothing holds a lock\n    \
         sql: SELECT 1\n    blocks: true\n  - name: wrong rows\n    sql: SELECT 2\n    \
         expect: [[\"3\"]]\n  - name: an error in the middle of COPY output\n    \
         sql: COPY (SELECT 1 / (g - 2) FROM generate_series(1, 3) g) TO STDOUT\n    \
         copy_out: \"never\"\n    error: division by zero\n",
    )
    .unwrap();
    let (report, code) = smoke_server(&image, &vm, PASSWORD, &["--native"]);
    assert_eq!(code, 1, "{report}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks[0]["ok"], false);
    has(
        checks[0]["actual"].as_str().unwrap(),
        &["without waiting for a lock"],
    );
    assert_eq!(checks[1]["ok"], false);
    assert_eq!(checks[1]["actual"], "[[\"2\"]]");
    assert_eq!(
        checks[2]["ok"], true,
        "the server's COPY error: {}",
        checks[2]
    );
    assert_eq!(checks[3]["ok"], true, "the server still shuts down cleanly");

    // A statement that outlives timeout_secs: the server is stopped at the
    // limit, which ends the check (natively too, where no VM timeout
    // drops the connections).
    let slow = dir.path().join("slow.yaml");
    std::fs::write(
        &slow,
        "mode: server\ntimeout_secs: 5\nchecks:\n  - name: sleeps past the limit\n    \
         sql: SELECT pg_sleep(600)\n",
    )
    .unwrap();
    let (report, code) = smoke_server(&image, &slow, PASSWORD, &["--native"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["checks"][0]["ok"], false, "{report}");

    let (report, code) = smoke_server(&image, &vm, "not-the-password", &[]);
    assert_eq!(code, 1, "{report}");
    has(
        report["checks"][1]["actual"].as_str().unwrap(),
        &["password authentication failed"],
    );
}

/// An image built from a user's recipe outside pgkraft's recipes/ (under
/// another name) is served natively through what the cache recorded for
/// it, and, once that record is gone, through the recipe the image embeds:
/// no recipe file is looked up.
#[test]
fn native_finds_the_server_of_an_image_built_from_a_recipe_elsewhere() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let recipe = stock_recipe_as("17", "users-own-postgres");
    assert!(recipe.contains("name: users-own-postgres"));
    let recipe_path = dir.path().join("mine.yaml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let o = run(pgkraft()
        .arg("build")
        .arg(&recipe_path)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--json")
        .env("PGKRAFT_PASSWORD", PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let image = PathBuf::from(v["image"].as_str().unwrap());
    let vm = repo().join("test-vms/server.yaml");

    let (report, code) = smoke_server(&image, &vm, PASSWORD, &["--native"]);
    assert_eq!(code, 0, "{report}");

    let key = pgkraft::image::Image::open(&image)
        .unwrap()
        .native_key()
        .unwrap()
        .to_string();
    let cache = pgkraft::build::cache::Cache::from_env().unwrap();
    let record = cache.root().join(pgkraft::build::NATIVE_INDEX).join(key);
    std::fs::remove_file(&record).unwrap();
    let (report, code) = smoke_server(&image, &vm, PASSWORD, &["--native"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["runner"], "native");
}

/// One /proc/meminfo as Linux lays it out: `Name:` padded to 16 columns,
/// the value right-aligned in 8 (wider values push on), then ` kB`, or no
/// unit (Linux's HugePages_ counts). Returns (name, value, unit) per line;
/// panics naming the line that is not so.
fn parse_meminfo(text: &str) -> Vec<(String, u64, Option<String>)> {
    assert!(text.ends_with('\n'), "no final newline: {text:?}");
    text.lines()
        .map(|line| {
            let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("{line:?}"));
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_()".contains(&b)),
                "{line:?}"
            );
            let mut words = rest.split_whitespace();
            let value: u64 = words
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no decimal value: {line:?}"));
            let unit = words.next().map(str::to_owned);
            assert!(words.next().is_none(), "{line:?}");
            assert!(unit.is_none() || unit.as_deref() == Some("kB"), "{line:?}");
            if unit.is_some() && value < 100_000_000 {
                // fs/proc/meminfo.c: "%-16s" name, "%8lu" value, " kB".
                assert_eq!(line.len(), 16 + 8 + 3, "not in Linux's columns: {line:?}");
            }
            (name.to_owned(), value, unit)
        })
        .collect()
}

/// The guest's /proc/meminfo read through SQL, in kB by name (every line
/// with a unit: the guest's file has only kB lines).
fn guest_meminfo(c: &mut postgres::Client) -> std::collections::BTreeMap<String, u64> {
    let text: String = c
        .query_one("SELECT pg_read_file('/proc/meminfo')", &[])
        .unwrap()
        .get(0);
    let mut m = std::collections::BTreeMap::new();
    for (name, value, unit) in parse_meminfo(&text) {
        assert_eq!(unit.as_deref(), Some("kB"), "{name} in {text}");
        assert!(m.insert(name.clone(), value).is_none(), "{name} twice");
    }
    for name in ["MemTotal", "MemFree", "MemAvailable"] {
        assert!(m.contains_key(name), "no {name} in\n{text}");
    }
    m
}

/// The lines of the guest's meminfo that say who holds the used memory.
const HOLDERS: [&str; 7] = [
    "ProcStacks",
    "ProcMapped",
    "SlotsInUse",
    "SlotsKept",
    "PageTables",
    "SysVShm",
    "LibosHeap",
];

/// Used memory that no holder counts: a long command line's pages and
/// exited processes' memory not yet reaped (freed at the next system
/// call, so none by the time a read runs); never a whole stack or slot.
const UNHELD_KB_MAX: u64 = 64;

fn check_holders_add_up(m: &std::collections::BTreeMap<String, u64>) {
    let used = m["MemTotal"] - m["MemFree"];
    let held: u64 = HOLDERS.iter().map(|h| m[*h]).sum();
    // Every figure is whole pages, so exact in kB: nothing may be held
    // twice.
    assert!(
        held <= used && used - held <= UNHELD_KB_MAX,
        "used {used} kB, held {held} kB: {m:?}"
    );
}

/// The host's own /proc/meminfo parses with the same parser: the guest's
/// file is read the way Linux's is.
#[test]
fn the_hosts_meminfo_parses_as_the_guests_is_parsed() {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let lines = parse_meminfo(&text);
    assert!(lines.iter().any(|(n, _, u)| n == "MemTotal" && u.is_some()));
    assert!(
        lines
            .iter()
            .any(|(n, _, u)| n == "MemAvailable" && u.is_some())
    );
}

/// /proc/meminfo in the guest is the allocator's truth: MemTotal is the
/// guest's RAM less the image, idle connections take MemFree (each its
/// own stack and slot), and their memory comes back when they close, but
/// for what is kept by design (slots for the next process, their page
/// tables, the libOS heap's chunks).
#[test]
fn guest_meminfo_follows_idle_connections_and_comes_back_when_they_close() {
    if !kvm_available() {
        return;
    }
    const MEM_MIB: u64 = 256;
    const K: u64 = 4;
    let image = postgres_image("17");
    let server = Server::start_with(&image, &["--mem", &MEM_MIB.to_string()]);
    let mut c = server.client();
    // No autovacuum worker may come and go between the readings.
    c.batch_execute("ALTER SYSTEM SET autovacuum = off")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let clients = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let m0 = guest_meminfo(&mut c);
    // The image is loaded at 1 MiB; what follows it is the allocator's:
    // at most its file's bytes plus the libOS's .bss (its page tables and
    // free-range list, < 4 MiB) lie between.
    let mem_kb = MEM_MIB * 1024;
    let image_kb = std::fs::metadata(&image).unwrap().len() / 1024;
    assert!(
        m0["MemTotal"] < mem_kb - 1024 && m0["MemTotal"] > mem_kb - 1024 - image_kb - 4096,
        "MemTotal {} kB with --mem {MEM_MIB} and a {image_kb} kB image",
        m0["MemTotal"]
    );
    assert!(m0["MemFree"] < m0["MemTotal"]);
    assert_eq!(m0["MemAvailable"], m0["MemFree"]);
    check_holders_add_up(&m0);
    // As Linux's procfs file: size 0 in stat, a read after a seek gets the
    // text from there, and nobody may write it.
    let row = c
        .query_one("SELECT size, isdir FROM pg_stat_file('/proc/meminfo')", &[])
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (0, false));
    let total: String = c
        .query_one("SELECT pg_read_file('/proc/meminfo', 16, 8)", &[])
        .unwrap()
        .get(0);
    assert_eq!(total.trim(), m0["MemTotal"].to_string());
    let e = c
        .batch_execute("COPY (SELECT 1) TO '/proc/meminfo'")
        .unwrap_err();
    let said = e.as_db_error().map(|d| d.message().to_owned());
    assert!(
        said.as_deref()
            .is_some_and(|m| m.ends_with("Permission denied")),
        "{e:?}"
    );

    let mut idle: Vec<postgres::Client> = (0..K).map(|_| server.client()).collect();
    for i in &mut idle {
        i.batch_execute("SELECT 1").unwrap();
    }
    let m1 = guest_meminfo(&mut c);
    check_holders_add_up(&m1);
    let grew = |h: &str| m1[h] as i64 - m0[h] as i64;
    // K more processes: K more stacks and K more slots in use, the same
    // amount each.
    for h in ["ProcStacks", "SlotsInUse"] {
        assert!(
            grew(h) > 0 && grew(h) % K as i64 == 0,
            "{h}: {m0:?} -> {m1:?}"
        );
    }
    let taken = m0["MemFree"] - m1["MemFree"];
    assert!(
        taken >= (grew("ProcStacks") + grew("SlotsInUse")) as u64,
        "MemFree fell by {taken} kB: {m0:?} -> {m1:?}"
    );

    drop(idle);
    assert!(
        eventually(Duration::from_secs(20), || clients(&mut c) == 1),
        "the closed connections' backends are still there after 20 s"
    );
    // A backend leaves pg_stat_activity before its exit gives its memory
    // back: wait for that too.
    let mut m2 = guest_meminfo(&mut c);
    assert!(
        eventually(Duration::from_secs(20), || {
            m2 = guest_meminfo(&mut c);
            m2["ProcStacks"] == m0["ProcStacks"]
        }),
        "stacks not given back: {m0:?} -> {m2:?}"
    );
    check_holders_add_up(&m2);
    assert_eq!(m2["SlotsInUse"], m0["SlotsInUse"], "{m0:?} -> {m2:?}");
    // What stays taken is what is kept by design: the K slots, now kept
    // for the next processes (no more: a slot is never kept twice), the
    // page tables made for them, and the libOS heap's growth (its chunks
    // are never given back); besides, the live processes' own mappings
    // may have moved either way.
    let delta = |h: &str| m2[h] as i64 - m0[h] as i64;
    assert!(
        delta("SlotsKept") <= grew("SlotsInUse"),
        "more slots kept than the closed connections had: {m0:?} -> {m2:?}"
    );
    let by_design = delta("SlotsKept") + delta("PageTables") + delta("LibosHeap");
    let live = delta("ProcMapped") + delta("SysVShm");
    let not_back = m0["MemFree"] as i64 - m2["MemFree"] as i64;
    assert!(
        (not_back - by_design - live).abs() <= UNHELD_KB_MAX as i64,
        "MemFree {} kB before, {} kB after the connections closed; kept by design \
         {by_design} kB, live processes' change {live} kB: {m0:?} -> {m2:?}",
        m0["MemFree"],
        m2["MemFree"]
    );
    assert!(m2["MemFree"] > m1["MemFree"], "{m1:?} -> {m2:?}");
    drop(c);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// The CPUs a `/proc/.../status` text says its thread may run on.
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc status")
        .trim();
    list.split(',')
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![r.parse().unwrap()],
        })
        .collect()
}

/// The host CPUs each thread of process `pid` may run on, by thread name.
fn thread_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut threads = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue; // ended meanwhile
        };
        threads.push((name.trim().to_string(), cpus_allowed(&status)));
    }
    threads
}

#[test]
fn a_pinned_vcpu_has_its_cpu_alone_and_serves_from_a_volume() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    let pinned_to = |cpu: &str| {
        run(pgkraft()
            .args(["serve", "--publish", "127.0.0.1:1:5432", "--vcpu-cpu", cpu])
            .arg("--volume")
            .arg(&volume)
            .arg(&image))
    };
    // A CPU this process may not use is refused before anything runs:
    // the new volume is not made.
    refused(
        &pinned_to("100000"),
        &[
            "--vcpu-cpu",
            "cannot pin the vCPU to CPU 100000",
            "give one of them",
        ],
    );
    assert!(!volume.exists(), "the refused run made its volume");
    let allowed = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let cpu = allowed[0];
    if allowed.len() < 2 {
        // One CPU: the vCPU cannot have it alone, and pgkraft says so.
        refused(&pinned_to(&cpu.to_string()), &["leave the vCPU unpinned"]);
        return;
    }
    let server = Server::start_with(
        &image,
        &[
            "--vcpu-cpu",
            &cpu.to_string(),
            "--volume",
            volume.to_str().unwrap(),
        ],
    );
    // Served from the pinned VM's volume.
    let o = server.psql(PASSWORD, "CREATE TABLE t AS SELECT 1 AS x");
    assert!(o.status.success(), "{}", stderr(&o));
    let threads = thread_cpus(server.child.as_ref().unwrap().id());
    let of = |name: &str| -> Vec<&Vec<usize>> {
        threads
            .iter()
            .filter(|(n, _)| n.starts_with(name))
            .map(|(_, c)| c)
            .collect()
    };
    assert_eq!(of("pgkraft-vcpu"), [&vec![cpu]], "{threads:?}");
    let helpers: Vec<&Vec<usize>> = ["pgkraft-net", "pgkraft-9p", "p9-sync-"]
        .iter()
        .flat_map(|n| of(n))
        .collect();
    assert!(
        helpers.len() >= 3,
        "the runner's helper threads: {threads:?}"
    );
    for cpus in helpers {
        assert!(!cpus.is_empty() && !cpus.contains(&cpu), "{threads:?}");
    }
    let pgbench = |args: &[&str]| run(server.client_cmd("pgbench").args(args).arg("postgres"));
    let o = pgbench(&["-i", "-q", "-s", "1"]);
    assert!(o.status.success(), "pgbench -i: {}", stderr(&o));
    let o = pgbench(&["-c", "2", "-j", "2", "-t", "50"]);
    assert!(o.status.success(), "pgbench: {}", stderr(&o));
    has(
        &stdout(&o),
        &["number of transactions actually processed: 100/100"],
    );
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
