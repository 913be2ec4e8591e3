//! The image is not tied to our runner: QEMU's microvm boots the same file
//! through its PVH entry note and it prints the same output.

mod common;
use common::*;

/// Boot `image` under QEMU microvm; returns (console output, exit status).
pub fn qemu(image: &std::path::Path, append: &str) -> (String, u8) {
    let out = pgkraft::bench::qemu_command(image, 128)
        .args(["-append", append])
        .output()
        .expect("qemu-system-x86_64 runs (ci/bootstrap.sh installs it)");
    // isa-debug-exit: QEMU exits with (status << 1) | 1.
    let code = out.status.code().expect("qemu exit code");
    assert_eq!(
        code & 1,
        1,
        "QEMU did not exit through isa-debug-exit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A UART console turns \n into \r\n, as a terminal needs.
    let console = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (console, (code >> 1) as u8)
}

#[test]
fn qemu_microvm_boots_the_same_image_with_the_same_output() {
    if !kvm_available() {
        return;
    }
    let img = image("hello");
    let ours = run(pgkraft().arg("run").arg(&img));
    assert_eq!(ours.status.code(), Some(0));
    let (console, status) = qemu(&img, "");
    assert_eq!(console, stdout(&ours));
    assert_eq!(status, 0);

    // Arguments on the kernel command line, quoted the way `pgkraft run -- ...` quotes them.
    let ours = run(pgkraft()
        .arg("run")
        .arg(&img)
        .arg("--")
        .arg("two words")
        .arg("x"));
    let (console, _) = qemu(&img, "'two words' x");
    assert_eq!(console, stdout(&ours));
}

#[test]
fn qemu_reports_the_programs_exit_status() {
    if !kvm_available() {
        return;
    }
    let (console, status) = qemu(&image("errno"), "");
    assert_eq!(status, 3);
    assert!(console.contains("exiting with status 3"), "{console}");
}

/// PostgreSQL itself, not only our test programs: the default recipe's
/// image answers SQL under QEMU too (console input over the UART, Ctrl-D
/// for end of input).
#[test]
fn qemu_microvm_runs_postgres_single_user() {
    use std::io::Write;
    use std::process::Stdio;
    if !kvm_available() {
        return;
    }
    let img = postgres_image("17");
    let mut child = pgkraft::bench::qemu_command(&img, 256)
        .args(["-append", "'--single' '-j' '-D' '/data' 'postgres'"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 runs (ci/bootstrap.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 40 + 2;\n\n\x04")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains(r#"?column? = "42""#),
        "no answer under QEMU: {console}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status 0 through isa-debug-exit: {console}"
    );
}
