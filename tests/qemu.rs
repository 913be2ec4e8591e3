//! The image is not tied to our runner: QEMU's microvm boots the same file
//! through its PVH entry note and it prints the same output.

mod common;
use common::*;

/// Boot `image` under QEMU microvm with `mem_mib` of RAM, the kernel
/// command line `append` and `input` on the console; returns (console
/// output, exit status).
pub fn qemu(image: &std::path::Path, mem_mib: u32, append: &str, input: &[u8]) -> (String, u8) {
    assert!(
        std::process::Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_ok(),
        "qemu-system-x86_64 runs (ci/bootstrap.sh installs it)"
    );
    let out = run_with_input(
        pgkraft::bench::qemu_command(image, mem_mib).args(["-append", append]),
        input,
    );
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
    let (console, status) = qemu(&img, 128, "", b"");
    assert_eq!(console, stdout(&ours));
    assert_eq!(status, 0);

    // Arguments on the kernel command line, quoted the way `pgkraft run -- ...` quotes them.
    let ours = run(pgkraft()
        .arg("run")
        .arg(&img)
        .arg("--")
        .arg("two words")
        .arg("x"));
    let (console, _) = qemu(&img, 128, "'two words' x", b"");
    assert_eq!(console, stdout(&ours));
}

#[test]
fn qemu_reports_the_programs_exit_status() {
    if !kvm_available() {
        return;
    }
    let (console, status) = qemu(&image("errno"), 128, "", b"");
    assert_eq!(status, 3);
    assert!(console.contains("exiting with status 3"), "{console}");
}

/// PostgreSQL itself, not only our test programs: the default recipe's
/// image answers SQL under QEMU too (console input over the UART, Ctrl-D
/// for end of input).
#[test]
fn qemu_microvm_runs_postgres_single_user() {
    if !kvm_available() {
        return;
    }
    let img = postgres_image("17");
    let (console, status) = qemu(
        &img,
        256,
        "'--single' '-j' '-D' '/data' 'postgres'",
        b"SELECT 40 + 2;\n\n\x04",
    );
    assert!(
        console.contains(r#"?column? = "42""#),
        "no answer under QEMU: {console}"
    );
    assert_eq!(status, 0, "exit status 0 through isa-debug-exit: {console}");
}

/// Under another VMM the image writes only to ports that VMM defines: with
/// QEMU's exit device at its common 4-byte size (0xf4-0xf7, which covers
/// our runner's phase port 0xf5), a boot-phase write would end the guest at
/// boot with status 2 instead of running the program.
#[test]
fn qemu_exit_device_of_four_ports_sees_only_the_programs_exit() {
    if !kvm_available() {
        return;
    }
    let img = image("errno");
    let mut cmd = pgkraft::bench::qemu_command_with_exit_ports(&img, 128, 4);
    let out = run_with_input(&mut cmd, b"");
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some((3 << 1) | 1),
        "the program's own exit status 3, not a phase byte: {console}"
    );
    assert!(console.contains("exiting with status 3"), "{console}");
}
