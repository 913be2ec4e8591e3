//! Scale to zero (issue 14): `pgkraft serve --idle-timeout` hibernates a
//! server no client is connected to, and the next connection wakes it and
//! is served, its data intact. Real KVM, a real image on a real volume,
//! real clients; waits are bounded, nothing is timed.

mod common;
use common::serve::Serve;
use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

const EVENT_LIMIT: Duration = Duration::from_secs(60);

fn start(image: &Path, volume: &Path, idle: &str) -> Serve {
    Serve::start(
        image,
        &[
            OsStr::new("--volume"),
            volume.as_os_str(),
            OsStr::new("--idle-timeout"),
            OsStr::new(idle),
        ],
    )
}

fn value(c: &mut postgres::Client) -> i32 {
    c.query_one("SELECT sum(x)::int FROM kept", &[])
        .unwrap()
        .get(0)
}

#[test]
fn hibernate_an_idle_server_frees_its_memory_and_wakes_for_the_next_client() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("db");
    let server = start(&image, &volume, "500ms");
    let pid = server.pid();
    let mut c = server.client();
    c.batch_execute("CREATE TABLE kept(x int); INSERT INTO kept VALUES (40)")
        .unwrap();
    let running_kib = rss_kib(pid);
    drop(c);

    for round in 0..2 {
        let (h, _) = server.next_event("hibernated", EVENT_LIMIT);
        let hibernated_kib = rss_kib(pid);
        assert!(
            hibernated_kib * 3 < running_kib,
            "round {round}: hibernated, the serve process should hold a small fraction of its \
             running memory: {running_kib} KiB running, {hibernated_kib} KiB hibernated ({h})"
        );
        let file = h["memory_file"].as_str().unwrap();
        assert!(
            Path::new(file).starts_with(dir.path().join("db.hibernate")),
            "the RAM goes beside the volume: {h}"
        );
        // The wake: the connection is held while the VM comes back, then
        // served, with what was written before.
        let mut c = server.client();
        assert_eq!(value(&mut c), 40 + round);
        c.batch_execute("INSERT INTO kept VALUES (1)").unwrap();
        drop(c);
        let (w, _) = server.next_event("woke", EVENT_LIMIT);
        assert_eq!(w["cause"], "connection", "{w}");
        assert!(w["first_answer_ms"].as_f64().is_some(), "{w}");
    }

    // Stopped while hibernated: the VM wakes to shut PostgreSQL down cleanly.
    server.next_event("hibernated", EVENT_LIMIT);
    let log = server.stop();
    assert!(
        log.contains("database system is shut down"),
        "a clean shutdown after the wake; its log:\n{log}"
    );
    // A cold boot on the volume sees every commit, with no crash recovery.
    let again = Serve::start(&image, &[OsStr::new("--volume"), volume.as_os_str()]);
    assert_eq!(value(&mut again.client()), 42);
    let log = again.stop();
    assert!(
        !log.contains("database system was not properly shut down"),
        "{log}"
    );
}

#[test]
fn hibernate_waits_while_a_client_is_connected_even_through_a_long_query() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&image, &dir.path().join("db"), "300ms");
    let mut c = server.client();
    // Far longer than the idle timeout, with no bytes moving meanwhile.
    let slept: i32 = c
        .query_one("SELECT 7 FROM pg_sleep(2)", &[])
        .unwrap()
        .get(0);
    assert_eq!(slept, 7);
    // Idle in a session, still connected.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        c.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0),
        1,
        "the session survived"
    );
    let early: Vec<String> = server
        .events_so_far()
        .into_iter()
        .filter(|e| e.contains("\"hibernated\""))
        .collect();
    assert!(
        early.is_empty(),
        "hibernated with a client connected: {early:?}"
    );
    drop(c);
    // Once the client is gone, the idle timer runs out.
    server.next_event("hibernated", EVENT_LIMIT);
    server.stop();
}

#[test]
fn hibernate_needs_a_place_for_the_ram_and_a_valid_timeout() {
    let image = postgres_image("17");
    let no_dir = run(pgkraft().args([
        "serve".as_ref(),
        image.as_os_str(),
        "--publish".as_ref(),
        "127.0.0.1:1:5432".as_ref(),
        "--idle-timeout".as_ref(),
        "1s".as_ref(),
    ]));
    refused(&no_dir, &["--idle-timeout", "--hibernate-dir"]);
    for bad in ["0s", "soon", "5 parsecs"] {
        let o = run(pgkraft().args([
            "serve".as_ref(),
            image.as_os_str(),
            "--publish".as_ref(),
            "127.0.0.1:1:5432".as_ref(),
            "--hibernate-dir".as_ref(),
            "/tmp".as_ref(),
            "--idle-timeout".as_ref(),
            OsStr::new(bad),
        ]));
        refused(&o, &["--idle-timeout", "30s"]);
    }
}

#[test]
fn hibernate_left_by_a_killed_process_is_not_resumed_and_nothing_is_lost() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("db");
    let server = start(&image, &volume, "300ms");
    let mut c = server.client();
    c.batch_execute("CREATE TABLE kept(x int); INSERT INTO kept VALUES (5)")
        .unwrap();
    drop(c);
    let (h, _) = server.next_event("hibernated", EVENT_LIMIT);
    let file = std::path::PathBuf::from(h["memory_file"].as_str().unwrap());
    assert!(file.exists());
    server.kill9();
    // The new process boots cold (the old one's open files and sockets are
    // gone), drops the stale RAM, and PostgreSQL recovers every commit.
    let again = start(&image, &volume, "1h");
    assert!(!file.exists(), "the stale hibernation was removed");
    assert_eq!(value(&mut again.client()), 5);
    let log = again.stop();
    assert!(
        log.contains("database system was not properly shut down"),
        "crash recovery, said in the log:\n{log}"
    );
}

#[test]
fn hibernate_with_idle_policy_sleeps_under_idle_sessions_but_never_mid_query() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("db");
    let server = Serve::start(
        &image,
        &[
            OsStr::new("--volume"),
            volume.as_os_str(),
            OsStr::new("--idle-timeout"),
            OsStr::new("500ms"),
            OsStr::new("--idle-policy"),
            OsStr::new("idle"),
        ],
    );
    let mut c = server.client();
    c.batch_execute("CREATE TABLE kept(x int); INSERT INTO kept VALUES (9)")
        .unwrap();
    // The session stays connected, idle: the VM hibernates under it, and
    // its next query wakes it.
    server.next_event("hibernated", EVENT_LIMIT);
    assert_eq!(value(&mut c), 9);
    let (w, _) = server.next_event("woke", EVENT_LIMIT);
    assert_eq!(w["cause"], "connection", "{w}");
    // A query four times the timeout, with no byte moving meanwhile: a
    // hibernation during it would freeze it for good (nothing would wake
    // the VM), so it must come back.
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let v: i32 = c
            .query_one("SELECT 3 FROM pg_sleep(2)", &[])
            .unwrap()
            .get(0);
        tx.send(v).unwrap();
        c
    });
    assert_eq!(
        rx.recv_timeout(EVENT_LIMIT),
        Ok(3),
        "the query was frozen; its log:\n{}",
        server.log_text()
    );
    let mut c = worker.join().unwrap();
    assert_eq!(value(&mut c), 9);
    drop(c);
    server.next_event("hibernated", EVENT_LIMIT);
    server.stop();
}

#[test]
fn hibernate_that_cannot_be_saved_leaves_the_server_serving() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    // The RAM's directory cannot be made: a file stands where its parent
    // would be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let server = Serve::start(
        &image,
        &[
            OsStr::new("--idle-timeout"),
            OsStr::new("200ms"),
            OsStr::new("--hibernate-dir"),
            blocker.join("ram").as_os_str(),
        ],
    );
    let mut c = server.client();
    c.batch_execute("CREATE TABLE kept(x int); INSERT INTO kept VALUES (3)")
        .unwrap();
    drop(c);
    // Several idle periods: each try fails, and the server stays up.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(value(&mut server.client()), 3);
    let hibernated: Vec<String> = server
        .events_so_far()
        .into_iter()
        .filter(|e| e.contains("\"hibernated\""))
        .collect();
    assert!(hibernated.is_empty(), "{hibernated:?}");
    server.stop();
}
