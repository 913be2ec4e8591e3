//! build::musl from the real pinned tarball, both flavors, in the real
//! default cache (so the first run builds, later runs reuse).
//!
//! The C commands here are the ones the pipeline uses: compile with
//! `MuslSysroot::compile_flags`, link with `MuslSysroot::static_link_args`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use pgkraft::build::cache::Cache;
use pgkraft::build::fetch::{SourceSpec, VerifiedSource, fetch};
use pgkraft::build::musl::{CC, MUSL_PIN, MuslError, MuslFlavor, MuslSysroot, build_musl};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned tarball from the local stores only: a missing tarball must fail
/// loudly with the fix, not turn into a download attempt or a skip.
fn musl_source(cache: &Cache) -> VerifiedSource {
    let local_only = SourceSpec {
        url: None,
        path: None,
        sha256: MUSL_PIN.sha256.to_string(),
    };
    match fetch(&local_only, MUSL_PIN.file_name, cache) {
        Ok(v) => v,
        Err(e) => panic!(
            "the musl {} tarball is not available locally; run ci/fetch-sources.sh \
             (or put {} into sources/). Details: {e}",
            MUSL_PIN.version, MUSL_PIN.file_name
        ),
    }
}

fn log_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    dir.join("musl-build.log")
}

/// Each flavor is built once per test process even though tests run in
/// parallel: `OnceLock` makes the other tests wait for the first.
fn sysroot(flavor: MuslFlavor) -> &'static MuslSysroot {
    static PATCHED: OnceLock<MuslSysroot> = OnceLock::new();
    static STOCK: OnceLock<MuslSysroot> = OnceLock::new();
    let cell = match flavor {
        MuslFlavor::Patched => &PATCHED,
        MuslFlavor::Stock => &STOCK,
    };
    cell.get_or_init(|| {
        let cache = Cache::from_env().unwrap();
        let src = musl_source(&cache);
        let start = Instant::now();
        let s = build_musl(&src, flavor, &cache, &log_path()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "musl {} ready in {:.1?} at {}",
            flavor.as_str(),
            start.elapsed(),
            s.root.display()
        );
        s
    })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compiles C sources and links them statically with `musl` (plus `extra`
/// objects, e.g. the host shim), the way the pipeline does.
fn build_program(musl: &MuslSysroot, sources: &[PathBuf], extra: &[PathBuf], out: &Path) {
    let dir = out.parent().unwrap();
    let mut objects = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let obj = dir.join(format!("{i}.o"));
        run(Command::new(CC)
            .args([
                "-std=gnu11",
                "-O2",
                "-Wall",
                "-Werror",
                "-ffunction-sections",
                "-fdata-sections",
            ])
            .args(musl.compile_flags().unwrap())
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj));
        objects.push(obj);
    }
    objects.extend(extra.iter().cloned());
    let args: Vec<OsString> = musl.static_link_args(&objects).unwrap();
    run(Command::new(CC)
        .args(&args)
        .arg("-Wl,--gc-sections")
        .arg("-o")
        .arg(out));
}

fn objdump(path: &Path) -> String {
    let out = run(Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(path));
    String::from_utf8(out.stdout).unwrap()
}

fn syscall_lines(disassembly: &str) -> Vec<&str> {
    disassembly
        .lines()
        .filter(|l| l.split('\t').nth(1).is_some_and(|i| i.trim() == "syscall"))
        .collect()
}

#[test]
fn patched_libc_makes_no_system_calls_itself() {
    let musl = sysroot(MuslFlavor::Patched);
    for f in [musl.libc_a(), musl.crt1_o(), musl.crti_o(), musl.crtn_o()] {
        let asm = objdump(&f);
        // An empty disassembly would pass the check below vacuously.
        assert!(asm.contains("Disassembly of section"), "{f:?}: {asm}");
        let left = syscall_lines(&asm);
        assert!(
            left.is_empty(),
            "{f:?} still has syscall instructions: {left:?}"
        );
    }
    let nm = run(Command::new("nm").arg("-A").arg(musl.libc_a()));
    let nm = String::from_utf8(nm.stdout).unwrap();
    for sym in ["__pgkraft_syscall", "__pgkraft_syscall_asm"] {
        assert!(
            nm.lines().any(|l| l.ends_with(&format!(" U {sym}"))),
            "libc.a does not reference {sym}"
        );
    }
}

#[test]
fn stock_libc_does_make_system_calls() {
    // Guards the check above: the same scan must find them in stock musl.
    let musl = sysroot(MuslFlavor::Stock);
    assert!(syscall_lines(&objdump(&musl.libc_a())).len() > 5);
}

#[test]
fn stock_hello_runs_natively() {
    let musl = sysroot(MuslFlavor::Stock);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
         \tprintf(\"hello from musl: %s\\n\", argc > 1 ? argv[1] : \"-\");\n\
         \treturn 3;\n}\n",
    )
    .unwrap();
    let exe = t.path().join("hello");
    build_program(musl, &[src], &[], &exe);

    let out = Command::new(&exe).arg("pgkraft").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from musl: pgkraft\n"
    );
    assert_eq!(out.status.code(), Some(3));
    // Static and not PIE: what the image link needs, too.
    let header = run(Command::new("readelf").arg("-h").arg(&exe));
    let header = String::from_utf8(header.stdout).unwrap();
    assert!(header.contains("EXEC (Executable file)"), "{header}");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&exe));
    assert!(String::from_utf8_lossy(&dynamic.stdout).contains("no dynamic section"));
}

const SMOKE_EXPECTED: &str = "\
hello from musl
open missing: -1 No such file or directory
clock_gettime: 1
malloc 8 MiB: 1
signal handled: 1
fork child exit: 7
vfork child exit: 8
posix_spawn: 0 exit 5
thread result: 42
detached threads: done, last 4
cancelled: 1
read: 1 x
";

/// The same program with stock musl on Linux and with patched musl on the
/// host shim (libos/musl/host-shim/): every path the patch changes must
/// behave the same through the call contract as through the kernel.
#[test]
fn patched_libc_behaves_like_stock_through_the_host_shim() {
    let smoke = repo().join("libos/musl/tests/libc-smoke.c");
    let t = tempfile::tempdir().unwrap();

    let stock_dir = t.path().join("stock");
    std::fs::create_dir(&stock_dir).unwrap();
    let stock_exe = stock_dir.join("smoke");
    build_program(
        sysroot(MuslFlavor::Stock),
        std::slice::from_ref(&smoke),
        &[],
        &stock_exe,
    );

    let patched_dir = t.path().join("patched");
    std::fs::create_dir(&patched_dir).unwrap();
    let shim = patched_dir.join("shim.o");
    run(Command::new(CC)
        .arg("-c")
        .arg(repo().join("libos/musl/host-shim/syscall-host.s"))
        .arg("-o")
        .arg(&shim));
    let patched_exe = patched_dir.join("smoke");
    build_program(
        sysroot(MuslFlavor::Patched),
        &[smoke],
        &[shim],
        &patched_exe,
    );

    for exe in [&stock_exe, &patched_exe] {
        let out = Command::new(exe).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            SMOKE_EXPECTED,
            "{exe:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "{exe:?}");
    }
}

/// A failing step is named, with the log's path and its last lines, and
/// leaves nothing in the cache.
#[test]
fn failing_build_names_the_step_and_the_log() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("musl-broken");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(
        tree.join("configure"),
        "echo 'checking for a working libc... no' >&2\nexit 1\n",
    )
    .unwrap();
    let tarball = t.path().join("musl-broken.tar.gz");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&tarball).unwrap(),
        flate2::Compression::fast(),
    ));
    builder.append_dir_all("musl-broken", &tree).unwrap();
    builder.into_inner().unwrap().finish().unwrap();

    let src = VerifiedSource {
        sha256: pgkraft::build::cache::sha256_file(&tarball).unwrap(),
        path: tarball,
    };
    let cache = Cache::new(t.path().join("cache"));
    let log = t.path().join("musl.log");
    let err = build_musl(&src, MuslFlavor::Stock, &cache, &log).unwrap_err();
    assert!(
        matches!(
            err,
            MuslError::Step {
                step: "musl configure",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("musl configure"), "{msg}");
    assert!(msg.contains(&log.display().to_string()), "{msg}");
    assert!(msg.contains("checking for a working libc... no"), "{msg}");
    let stage = cache.stage_dir("musl");
    let left: Vec<_> = std::fs::read_dir(&stage).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
