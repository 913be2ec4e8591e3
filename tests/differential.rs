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
