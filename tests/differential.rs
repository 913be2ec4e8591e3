//! Differential tests for the library OS: each C test program is compiled
//! once per libc flavour and run twice, natively on Linux (stock musl) and
//! inside its image on our runner (patched musl + libOS). Console output and
//! exit status must match byte for byte.

mod common;
use common::*;
use pgkraft::build::{self, cache::Cache, compile, fetch, link, musl};
use pgkraft::recipe::{self, Kind};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Console input each program gets on both sides.
fn stdin_for(name: &str) -> &'static [u8] {
    match name {
        "console" => b"one line\nSecond Line, with 123 digits\n\nlast line without newline",
        _ => b"",
    }
}

fn native_binary(name: &str) -> std::path::PathBuf {
    let recipe = recipe::load(&repo().join(format!("recipes/{name}.yaml"))).unwrap();
    let Kind::Program(program) = &recipe.kind else {
        panic!("recipes/{name}.yaml is not a program recipe");
    };
    let cache = Cache::from_env().unwrap();
    let log = out_dir().join(format!("native-{name}.log"));
    let src = fetch::fetch(&musl::MUSL_PIN.spec(), musl::MUSL_PIN.file_name, &cache).unwrap();
    let stock = musl::build_musl(&src, musl::MuslFlavor::Stock, &cache, &log).unwrap();
    let objects =
        compile::compile(&program.sources, &program.cflags, &stock, &cache, &log).unwrap();
    let exe = out_dir().join(format!("{name}.native"));
    link::link_native(&objects.files, &stock, &exe, &log).unwrap();
    exe
}

fn differential(name: &str) {
    if !kvm_available() {
        return;
    }
    let recipe = recipe::load(&repo().join(format!("recipes/{name}.yaml"))).unwrap();
    let input = stdin_for(name);

    let native = run_with_input(
        Command::new(native_binary(name))
            .arg0(&recipe.name)
            .args(&recipe.args)
            .env_clear()
            .envs(&recipe.env),
        input,
    );

    let image = image(name);
    let cfg = pgkraft::vmm::VmConfig {
        mem_mib: recipe.vm.memory_mib,
        cmdline: String::new(),
        timeout: Some(std::time::Duration::from_secs(60)),
        console: pgkraft::vmm::Console::Capture {
            input: input.to_vec(),
        },
        net: None,
        signals: None,
        volume: None,
        hibernate: None,
        vcpu_cpu: None,
    };
    let guest = pgkraft::vmm::run_file(&image, &cfg).unwrap();

    assert_eq!(
        String::from_utf8_lossy(&guest.console),
        String::from_utf8_lossy(&native.stdout),
        "{name}: console output differs (left: in the image, right: native)"
    );
    assert_eq!(
        guest.exit,
        pgkraft::vmm::GuestExit::Status(native.status.code().expect("native exit code") as u8),
        "{name}: exit status differs"
    );
}

#[test]
fn hello() {
    differential("hello");
}

#[test]
fn memory() {
    differential("memory");
}

#[test]
fn timekeeping() {
    differential("timekeeping");
}

#[test]
fn tls() {
    differential("tls");
}

#[test]
fn console() {
    differential("console");
}

#[test]
fn errno() {
    differential("errno");
}

#[test]
fn files() {
    differential("files");
}

#[test]
fn procs() {
    differential("procs");
}

#[test]
fn ipc() {
    differential("ipc");
}

#[test]
fn net_sockets() {
    differential("sockets");
}

/// The build itself is reproducible: the same recipe twice, the same bytes.
#[test]
fn two_builds_are_bit_identical() {
    let r = recipe::load(&repo().join("recipes/hello.yaml")).unwrap();
    let progress = pgkraft::progress::Progress::new(true);
    let a = build::build(&r, &out_dir().join("repro-a"), &progress).unwrap();
    let b = build::build(&r, &out_dir().join("repro-b"), &progress).unwrap();
    assert_eq!(a.image_sha256, b.image_sha256);
}

/// A fresh, empty directory for one side of a volume test.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let d = out_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What test-vms/apps/volume.c leaves behind, read on the host.
fn assert_volume_left(dir: &std::path::Path) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["keepdir", "kept.txt"], "{}", dir.display());
    let mut kept = b"durable\n".to_vec();
    kept.extend_from_slice(&[b'p'; 8192]);
    assert!(
        std::fs::read(dir.join("kept.txt")).unwrap() == kept,
        "kept.txt"
    );
    assert_eq!(
        std::fs::read(dir.join("keepdir/inner")).unwrap(),
        b"inner\n"
    );
}

/// test-vms/apps/volume.c natively on a fresh directory: its output.
fn volume_natively(dir: &str) -> std::process::Output {
    // Linked once: the two volume tests run at once, and relinking a
    // binary the other one runs fails (ETXTBSY).
    static NATIVE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let exe = NATIVE.get_or_init(|| native_binary("volume"));
    let native_dir = fresh_dir(dir);
    let native = run_with_input(
        Command::new(exe)
            .arg0("volume")
            .arg(&native_dir)
            .env_clear(),
        b"",
    );
    assert_eq!(native.status.code(), Some(0), "{}", stdout(&native));
    assert_volume_left(&native_dir);
    native
}

/// The same under our runner, the volume served by its own virtio-9p
/// device (`VmConfig::volume`, `pgkraft run --volume`).
#[test]
fn volume_on_our_runners_virtio_9p_directory() {
    if !kvm_available() {
        return;
    }
    let native = volume_natively("volume-native-r");
    let guest_dir = fresh_dir("volume-runner");
    let cfg = pgkraft::vmm::VmConfig {
        mem_mib: 64,
        cmdline: String::new(),
        timeout: Some(std::time::Duration::from_secs(60)),
        console: pgkraft::vmm::Console::Capture { input: Vec::new() },
        net: None,
        signals: None,
        volume: Some(pgkraft::vmm::VolumeConfig::new(&guest_dir)),
        hibernate: None,
        vcpu_cpu: None,
    };
    let guest = pgkraft::vmm::run_file(&image("volume"), &cfg).unwrap();
    // Each volume request is one notify, one VM exit (a figure, not a check).
    eprintln!("volume.c under our runner: {} VM exits", guest.exits);
    assert_eq!(
        String::from_utf8_lossy(&guest.console),
        stdout(&native),
        "volume: console output differs (left: in the image under our runner, right: native)"
    );
    assert_eq!(guest.exit, pgkraft::vmm::GuestExit::Status(0));
    assert_volume_left(&guest_dir);
}

/// The data volume's file operations: natively on a directory, and in the
/// image on a host directory QEMU serves as a virtio-9p device with the
/// mount tag the libOS mounts at /data. Same output, same exit status, and
/// what the guest left is on the host afterwards.
#[test]
fn volume_on_a_qemu_virtio_9p_directory() {
    if !kvm_available() {
        return;
    }
    let native = volume_natively("volume-native-q");

    let guest_dir = fresh_dir("volume-guest");
    let mut fsdev = std::ffi::OsString::from("local,id=vol,security_model=none,path=");
    fsdev.push(&guest_dir);
    let mut cmd = pgkraft::bench::qemu_command(&image("volume"), 64);
    cmd.args(["-global", "virtio-mmio.force-legacy=false", "-fsdev"])
        .arg(fsdev)
        .args([
            "-device",
            "virtio-9p-device,fsdev=vol,mount_tag=pgkraft-data",
        ]);
    let guest = run_with_input(&mut cmd, b"");
    let console = String::from_utf8_lossy(&guest.stdout).replace("\r\n", "\n");
    assert_eq!(
        console,
        stdout(&native),
        "volume: console output differs (left: in the image under QEMU, right: native)"
    );
    // isa-debug-exit: (status << 1) | 1.
    assert_eq!(guest.status.code(), Some(1), "exit status 0 under QEMU");
    assert_volume_left(&guest_dir);
}
