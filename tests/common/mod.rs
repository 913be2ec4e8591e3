//! Shared helpers for the end-to-end tests: they drive the real `pgkraft`
//! binary, real KVM and the real toolchain.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

pub mod serve;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn pgkraft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgkraft"))
}

/// The environment variable that says where to record skipped tests.
pub const SKIPPED_FILE_ENV: &str = "PGKRAFT_SKIPPED_FILE";

/// Whether /dev/kvm can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Tests that boot VMs need /dev/kvm. Without it they fail with a clear
/// message, unless PGKRAFT_ALLOW_NO_KVM=1 says skipping is fine: then the
/// test is recorded as skipped ([`skipped`]) and false tells it to return.
pub fn kvm_available() -> bool {
    if kvm_usable() {
        return true;
    }
    if std::env::var("PGKRAFT_ALLOW_NO_KVM").as_deref() == Ok("1") {
        skipped("/dev/kvm is not usable and PGKRAFT_ALLOW_NO_KVM=1");
        return false;
    }
    panic!(
        "/dev/kvm is missing or not writable: these tests boot real VMs (set PGKRAFT_ALLOW_NO_KVM=1 to skip them)"
    );
}

/// Records that the calling test skips its work, for `reason`, before it
/// returns early: libtest would count it as passed, so ci/test.sh counts
/// the lines this appends (`SKIPPED: <binary>::<test>: <reason>`) to the
/// file named by $PGKRAFT_SKIPPED_FILE as skipped instead. Also says so on
/// stderr (shown with --nocapture).
pub fn skipped(reason: &str) {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unknown test");
    let line = format!("SKIPPED: {}::{test}: {reason}\n", env!("CARGO_CRATE_NAME"));
    eprint!("{line}");
    if let Some(path) = std::env::var_os(SKIPPED_FILE_ENV) {
        // One short append per line: concurrent test binaries do not
        // interleave within it.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "cannot record the skip in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run pgkraft");
    eprintln!(
        "$ {cmd:?}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run`] with `input` on stdin, which is then closed; stdout and stderr
/// are captured.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // From a thread of its own: a child that prints more than a pipe holds
    // before reading all its input would otherwise wait on us as we wait
    // on it. One that exits without reading it all is the test's to judge
    // from the output, not a failure to write.
    let writer = std::thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    });
    let out = child.wait_with_output().expect("wait for the child");
    writer
        .join()
        .expect("stdin writer")
        .expect("write the child's stdin");
    eprintln!(
        "$ {cmd:?}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Build `recipes/<name>.yaml` once per test process; returns the image
/// path. A fixed password (program recipes ignore it) keeps postgres builds
/// sharing the cache's initdb with the other tests.
pub fn image(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let out = out_dir().join(name);
    let o = run(pgkraft()
        .arg("build")
        .arg(repo().join(format!("recipes/{name}.yaml")))
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .env("PGKRAFT_PASSWORD", "test-password"));
    assert!(o.status.success(), "pgkraft build {name} failed");
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("build --json prints one JSON object");
    let img = PathBuf::from(v["image"].as_str().expect("image path"));
    map.insert(name.to_string(), img.clone());
    img
}

/// A per-process scratch directory under the cargo target directory.
pub fn out_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Assert that an error message carries every one of `needles`.
pub fn has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}:\n{msg}");
    }
}

/// Build `recipes/postgres-<major>.yaml` once per test process (see
/// [`image`]); returns the image path.
pub fn postgres_image(major: &str) -> PathBuf {
    image(&format!("postgres-{major}"))
}

/// A command refused as bad input: exit 2, nothing on stdout (nothing
/// ran), and stderr saying each of `needles`.
pub fn refused(o: &Output, needles: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2 (bad input): {}",
        stderr(o)
    );
    assert!(o.stdout.is_empty(), "nothing may run: {}", stdout(o));
    has(&stderr(o), needles);
}

/// The report of `pgkraft smoke IMAGE --vm FILE --json [extra...]` (with
/// `env` set), and its exit status.
pub fn smoke_json(
    image: &Path,
    vm: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (serde_json::Value, Option<i32>) {
    let mut cmd = pgkraft();
    cmd.arg("smoke")
        .arg(image)
        .arg("--vm")
        .arg(vm)
        .arg("--json")
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = run(&mut cmd);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {}", stderr(&o)));
    (v, o.status.code())
}

/// recipes/postgres-<major>.yaml named `name`, with its kernel config's
/// path made absolute, so the recipe can be written anywhere.
pub fn stock_recipe_as(major: &str, name: &str) -> String {
    let stock =
        std::fs::read_to_string(repo().join(format!("recipes/postgres-{major}.yaml"))).unwrap();
    let recipe = stock
        .replace(&format!("name: postgres-{major}"), &format!("name: {name}"))
        .replace(
            "../kernel-config/default.config",
            &repo()
                .join("kernel-config/default.config")
                .display()
                .to_string(),
        );
    assert!(recipe.contains(&format!("name: {name}")) && !recipe.contains("../kernel-config"));
    recipe
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
