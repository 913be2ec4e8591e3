//! Single-user test VMs (`mode: single-user`): the definition's schema and
//! its errors, `test-vms/single-user.yaml` run natively with the host-linked
//! postgres on a copy of each postgres image's files, and the differential
//! check that the guest gives the same rows.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn definition(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("vm.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

/// `pgkraft smoke` with a definition that must be refused before any image
/// is read: exit status 2 and the message.
fn refused(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let vm = definition(dir.path(), body);
    let o = run(pgkraft()
        .arg("smoke")
        .arg("/nonexistent.img")
        .arg("--vm")
        .arg(&vm));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn a_misspelt_key_is_refused_with_its_place_and_the_fix() {
    let err = refused(
        "mode: single-user\nchecks:\n  - name: one\n    sql: SELECT 1\n    expekt: [[\"1\"]]\n",
    );
    has(&err, &["vm.yaml:5:5", "expekt", "did you mean `expect`"]);

    let err = refused("mode: single-user\ncheks: []\n");
    has(&err, &["vm.yaml:2:1", "cheks", "`checks`"]);
}

#[test]
fn an_unknown_mode_names_the_allowed_ones() {
    let err = refused("mode: server-mode\n");
    has(
        &err,
        &["vm.yaml:1", "server-mode", "program", "single-user"],
    );
}

#[test]
fn keys_of_the_other_mode_and_unusable_checks_are_refused() {
    let err = refused("mode: single-user\nargs: [x]\nchecks:\n  - name: a\n    sql: SELECT 1\n");
    has(&err, &["vm.yaml:2:1", "args", "mode: program", "fix:"]);

    let err = refused("checks:\n  - name: a\n    sql: SELECT 1\n");
    has(&err, &["vm.yaml:1:1", "checks", "mode: single-user"]);

    let err = refused("mode: single-user\n");
    has(&err, &["at least one", "checks", "fix:"]);

    let err = refused(
        "mode: single-user\nchecks:\n  - name: a\n    sql: SELECT 1\n  - name: a\n    sql: SELECT 2\n",
    );
    has(
        &err,
        &["vm.yaml:5:5", "checks[1].name", "two checks are named `a`"],
    );

    let err = refused(
        "mode: single-user\nchecks:\n  - name: a\n    sql: SELECT 1/0\n    error: division\n    expect: [[\"1\"]]\n",
    );
    has(&err, &["vm.yaml:5:5", "checks[0].error", "not both"]);

    let err = refused("mode: single-user\nchecks:\n  - name: a\n    sql: \" ; \"\n");
    has(&err, &["vm.yaml:4:5", "checks[0].sql", "no SQL"]);

    let err = refused("mode: single-user\ntimeout_secs: 0\nchecks:\n  - name: a\n    sql: x\n");
    has(&err, &["vm.yaml:2:1", "timeout_secs"]);
    let err = refused("mode: single-user\ntimeout_secs: 1e30\nchecks:\n  - name: a\n    sql: x\n");
    has(&err, &["vm.yaml:2:1", "timeout_secs", "604800"]);
}

fn failed_checks(report: &Value) -> Vec<&Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .collect()
}

fn native_passes(major: &str) {
    let img = postgres_image(major);
    let vm = repo().join("test-vms/single-user.yaml");
    let (report, code) = smoke_json(&img, &vm, &["--native"], &[]);
    assert_eq!(
        report["ok"],
        true,
        "failed checks: {:#?}\nconsole:\n{}",
        failed_checks(&report),
        report["console"].as_str().unwrap_or("")
    );
    assert_eq!(code, Some(0));
    assert_eq!(report["runner"], "native");
    assert_eq!(report["mode"], "single-user");
    assert!(report["first_answer_ms"].as_f64().is_some(), "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"sort spills to temporary files"),
        "{names:?}"
    );
}

#[test]
fn postgres_17_passes_the_single_user_checks_natively() {
    native_passes("17");
}

#[test]
fn postgres_15_passes_the_single_user_checks_natively() {
    native_passes("15");
}

#[test]
fn postgres_18_passes_the_single_user_checks_natively() {
    native_passes("18");
}

/// `--native` finds the host-linked server from what the image records and
/// the cache alone: no recipe anywhere pgkraft looks (an image built from a
/// user's recipe elsewhere is the same case), and the image moved.
#[test]
fn native_needs_no_recipe_only_the_image_and_the_cache() {
    let img = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let moved = dir.path().join("somebodys-db.img");
    std::fs::copy(&img, &moved).unwrap();
    let empty_home = dir.path().join("home");
    std::fs::create_dir(&empty_home).unwrap();
    let o = run(pgkraft()
        .env("PGKRAFT_HOME", &empty_home)
        .arg("smoke")
        .arg(&moved)
        .arg("--vm")
        .arg(repo().join("test-vms/single-user.yaml"))
        .arg("--native")
        .arg("--json"));
    let report: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {}", stdout(&o)));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(report["runner"], "native");
}

/// A failing check shows what was expected, what came, and the server's
/// ERROR; the other checks still run in the same session.
#[test]
fn a_failing_check_shows_the_servers_error() {
    let img = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let vm = definition(
        dir.path(),
        "mode: single-user\nchecks:\n  - name: divide\n    sql: SELECT 1/0\n    expect: [[\"1\"]]\n  - name: wrong rows\n    sql: SELECT 2\n    expect: [[\"3\"]]\n  - name: after\n    sql: |\n      SELECT 'multi\n\n      line';\n    expect: [[\"multi\\nline\"]]\n",
    );
    let (report, code) = smoke_json(&img, &vm, &["--native"], &[]);
    assert_eq!(code, Some(1));
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks[0]["ok"], false);
    assert!(
        checks[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("ERROR:  division by zero"),
        "{report}"
    );
    assert_eq!(checks[1]["ok"], false);
    assert_eq!(checks[1]["actual"], "[[\"2\"]]");
    // Blank lines inside a check's SQL are dropped (they would end the
    // query early in -j mode).
    assert_eq!(checks[2]["ok"], true, "{report}");
}

/// A server that does not answer within the definition's timeout is
/// stopped; the report says `timeout` and keeps what it printed. (The first
/// check needs an answer within the timeout: 10 s is ample for `SELECT 1`.)
fn stopped_at_the_timeout(image: &Path, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let vm = definition(
        dir.path(),
        "mode: single-user\ntimeout_secs: 10\nchecks:\n  - name: quick\n    sql: SELECT 1\n  - name: slow\n    sql: SELECT pg_sleep(600)\n  - name: never\n    sql: SELECT 2\n",
    );
    let (report, code) = smoke_json(image, &vm, extra, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(report["exit"], "timeout");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks[0]["ok"], true, "{report}");
    let slow = checks[1]["actual"].as_str().unwrap();
    assert!(
        slow.contains("no answer within timeout_secs (10s)"),
        "{slow}"
    );
    assert!(
        checks[2]["actual"]
            .as_str()
            .unwrap()
            .contains("not reached")
    );
    assert!(
        report["console"]
            .as_str()
            .unwrap()
            .contains("stand-alone backend")
    );
}

#[test]
fn a_native_server_that_never_answers_is_stopped_at_the_timeout() {
    stopped_at_the_timeout(&postgres_image("17"), &["--native"]);
}

#[test]
fn a_guest_that_never_answers_is_stopped_at_the_timeout() {
    if !kvm_available() {
        return;
    }
    stopped_at_the_timeout(&postgres_image("17"), &[]);
}

#[test]
fn single_user_mode_needs_a_postgres_image() {
    if !kvm_available() {
        return;
    }
    let img = image("hello");
    let vm = repo().join("test-vms/single-user.yaml");
    let o = run(pgkraft().arg("smoke").arg(&img).arg("--vm").arg(&vm));
    assert_eq!(o.status.code(), Some(2));
    has(&stderr(&o), &["postgres --single", "fix:"]);
}

/// The differential check: the image answers every check as the host-linked
/// server does on a copy of the same files, row for row.
fn guest_matches_native(major: &str) {
    if !kvm_available() {
        return;
    }
    let vm = repo().join("test-vms/single-user.yaml");
    let img = postgres_image(major);
    let (native, _) = smoke_json(&img, &vm, &["--native"], &[]);
    assert_eq!(native["ok"], true, "the native run is the reference");
    let (guest, code) = smoke_json(&img, &vm, &[], &[]);
    assert_eq!(guest["runner"], "kvm");
    let n = native["checks"].as_array().unwrap();
    let g = guest["checks"].as_array().unwrap();
    assert_eq!(n.len(), g.len());
    for (a, b) in n.iter().zip(g) {
        assert_eq!(
            a["rows"],
            b["rows"],
            "check {:?}: native rows vs guest rows (guest check: {b:#})\nconsole tail:\n{}",
            a["name"],
            tail(guest["console"].as_str().unwrap_or(""))
        );
        assert_eq!(
            error_messages(a),
            error_messages(b),
            "check {:?}: native vs guest errors",
            a["name"]
        );
    }
    assert_eq!(guest["ok"], true, "{:#?}", failed_checks(&guest));
    assert_eq!(code, Some(0));
    assert!(guest["first_answer_ms"].as_f64().is_some());
}

/// A check's ERROR messages without the log line prefix (time, pid).
fn error_messages(check: &Value) -> Vec<String> {
    check["errors"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|e| {
                    e.as_str()?
                        .split_once("ERROR:  ")
                        .map(|(_, m)| m.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn postgres_17_in_the_guest_gives_the_native_rows() {
    guest_matches_native("17");
}

#[test]
fn postgres_15_in_the_guest_gives_the_native_rows() {
    guest_matches_native("15");
}

#[test]
fn postgres_18_in_the_guest_gives_the_native_rows() {
    guest_matches_native("18");
}

/// What a benchmark times: the native server prepared apart, then one query
/// from spawn to first answer.
#[test]
fn the_native_run_is_usable_as_a_library() {
    use pgkraft::smoke::{TestVm, native};
    let img = postgres_image("17");
    let postgres = native::host_postgres(&img).unwrap();
    let server = native::NativeServer::prepare(&img, &postgres).unwrap();
    assert!(server.data_dir().join("PG_VERSION").exists());
    let report = server
        .run(&TestVm::single_query("SELECT version()", 60.0))
        .unwrap();
    assert!(report.ok, "{}", report.human());
    let answered = report.first_answer_ms.unwrap();
    assert!(answered <= report.boot_ms);
    let rows = report.checks[0].rows.as_ref().unwrap();
    assert!(rows[0][0].as_deref().unwrap().starts_with("PostgreSQL 17."));
}

#[test]
fn server_keys_outside_server_mode_and_contradictory_server_checks_are_refused() {
    let err = refused(
        "mode: single-user\nchecks:\n  - name: a\n    sql: SELECT $1::int\n    params: [\"1\"]\n",
    );
    has(&err, &["vm.yaml:5:5", "checks[0].params", "mode: server"]);

    let err = refused("mode: server\nchecks:\n  - name: a\n    sql: SELECT 1\n    clients: 0\n");
    has(&err, &["vm.yaml:5:5", "checks[0].clients", "0 clients"]);
    let err = refused(
        "mode: server\nchecks:\n  - name: a\n    sql: COPY t FROM STDIN\n    copy_in: \"1\\n\"\n    expect: [[\"1\"]]\n",
    );
    has(&err, &["checks[0].copy_in", "expects rows"]);

    let err = refused(
        "mode: server\nchecks:\n  - name: a\n    sql: COPY t TO STDOUT\n    copy_out: \"x\"\n    expect: [[\"1\"]]\n",
    );
    has(&err, &["checks[0].copy_out", "expects rows"]);

    let err = refused(
        "mode: server\nchecks:\n  - name: a\n    sql: SELECT 1\n    clients: 4\n    session: other\n",
    );
    has(&err, &["checks[0].session", "`clients` and `session`"]);

    let err = refused("mode: server\nchecks:\n  - name: a\n");
    has(&err, &["checks[0].sql", "no SQL"]);

    let err = refused("mode: server\nsnapshot_after: x\nchecks:\n  - name: a\n    sql: SELECT 1\n");
    has(&err, &["vm.yaml:2:1", "snapshot_after"]);
}
