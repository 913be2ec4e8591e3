//! The command line's numeric flags: a value that is not a number, not
//! finite, out of range or zero is refused while the arguments are parsed
//! (exit 2, a message naming the flag and what would do), never a panic.
//! No image is read and no VM is booted, so these need no KVM.

mod common;
use common::*;

/// Runs pgkraft with `args` and checks the refusal: exit 2, `needles` in
/// stderr, no panic.
fn refused(args: &[&str], needles: &[&str]) {
    let out = run(pgkraft().args(args));
    assert!(
        !stderr(&out).contains("panicked"),
        "{args:?}: {}",
        stderr(&out)
    );
    common::refused(&out, needles);
}

const TIMEOUT_FIX: &str = "--timeout must be a finite number of seconds > 0";

#[test]
fn bad_timeouts_are_refused_with_the_fix() {
    for bad in [
        "inf", "-inf", "nan", "NaN", "-1", "0", "-0", "1e400", "1e300", "1e-300", "604801", "abc",
        "",
    ] {
        let flag = format!("--timeout={bad}");
        refused(&["run", "no-such.img", &flag], &[TIMEOUT_FIX, "such as 30"]);
        refused(&["resume", "no-such-dir", &flag], &[TIMEOUT_FIX]);
    }
    // A negative value as a separate word reaches the check too.
    refused(&["run", "no-such.img", "--timeout", "-1"], &[TIMEOUT_FIX]);
}

#[test]
fn good_timeouts_pass_the_parser() {
    // Past the parser the image is read, and its absence is the error.
    for good in ["30", "0.5", " 2 ", "1e-3", "604800"] {
        let out = run(pgkraft().args(["run", "no-such.img", "--timeout", good]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{good}: {stderr}");
        assert!(stderr.contains("no-such.img"), "{good}: {stderr}");
        assert!(!stderr.contains("--timeout"), "{good}: {stderr}");
    }
}

#[test]
fn bad_memory_sizes_are_refused_with_the_fix() {
    for bad in ["0", "15", "65537", "-64", "4294967296", "1.5", "64M", "inf"] {
        refused(
            &["run", "no-such.img", &format!("--mem={bad}")],
            &[
                "--mem must be a whole number of MiB from 16 to 65536",
                "such as 64",
            ],
        );
    }
}

#[test]
fn bad_counts_are_refused_with_the_fix() {
    for bad in [
        "0",
        "-1",
        "1.5",
        "inf",
        "nan",
        "18446744073709551616",
        "ten",
    ] {
        for sub in [
            &["bench", "boot", "no-such.img"][..],
            &["bench", "resume", "no-such.img"],
            &["bench", "first-answer", "no-such.img"],
        ] {
            let mut args = sub.to_vec();
            let flag = format!("--runs={bad}");
            args.push(&flag);
            refused(&args, &["--runs must be a whole number of at least 1"]);
        }
        refused(
            &[
                "bench",
                "density",
                "no-such-dir",
                &format!("--instances={bad}"),
            ],
            &["--instances must be a whole number of at least 1"],
        );
    }
}

const PUBLISH_FIX: &str =
    "--publish takes [HOST_IP:]HOST_PORT:GUEST_PORT, such as 127.0.0.1:15432:5432";

#[test]
fn bad_publish_values_are_refused_with_the_fix() {
    for bad in [
        "5432",
        "0:5432",
        "5432:0",
        "65536:5432",
        "a:b",
        "localhost:1:2",
        "::1:5432:5432",
        "[::1]5432:5432",
        "1:2:3:4",
        "",
    ] {
        refused(
            &["run", "no-such.img", &format!("--publish={bad}")],
            &[PUBLISH_FIX],
        );
    }
}

#[test]
fn good_publish_values_pass_the_parser() {
    for good in ["15432:5432", "127.0.0.1:15432:5432", "[::1]:15432:5432"] {
        let out = run(pgkraft().args(["run", "no-such.img", "--publish", good]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{good}: {stderr}");
        assert!(stderr.contains("no-such.img"), "{good}: {stderr}");
        assert!(!stderr.contains("--publish takes"), "{good}: {stderr}");
    }
}

/// A published port already in use fails the boot before the guest runs.
#[test]
fn a_host_port_in_use_exits_2_naming_it() {
    let img = image("hello");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run(pgkraft().arg("run").arg(&img).args([
        "--timeout",
        "20",
        "--publish",
        &format!("{addr}:5432"),
    ]));
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    has(
        &stderr,
        &[&format!("cannot publish {addr}"), "pick a free HOST_PORT"],
    );
    assert!(out.stdout.is_empty(), "the guest ran: {:?}", stdout(&out));
}
