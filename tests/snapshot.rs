//! `pgkraft snapshot` / `pgkraft resume` end to end: the real binary, real
//! KVM, the counter program (test-vms/apps/counter.c). Never asserts times.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn counter_vm() -> PathBuf {
    repo().join("test-vms/counter.yaml")
}

fn snapshot_into(out: &Path) -> std::process::Output {
    run(pgkraft()
        .arg("snapshot")
        .arg(image("counter"))
        .arg("--vm")
        .arg(counter_vm())
        .arg("--out")
        .arg(out)
        .arg("--json"))
}

/// One snapshot of the counter per test process; tests that damage a
/// snapshot work on copies.
fn snap() -> PathBuf {
    static SNAP: OnceLock<PathBuf> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir = out_dir().join("counter.snap");
        let o = snapshot_into(&dir);
        assert!(o.status.success(), "pgkraft snapshot failed");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert_eq!(v["console"], "counter ready\ncounter=5\ncounter=7\n");
        dir
    })
    .clone()
}

fn copy_of(name: &str) -> PathBuf {
    let to = out_dir().join(name);
    let _ = std::fs::remove_dir_all(&to);
    let st = Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(snap())
        .arg(&to)
        .status()
        .unwrap();
    assert!(st.success());
    to
}

/// `pgkraft resume DIR --json` with `input` on stdin.
fn resume_with(dir: &Path, input: &str, extra: &[&str]) -> std::process::Output {
    run_with_input(
        pgkraft().arg("resume").arg(dir).args(extra).arg("--json"),
        input.as_bytes(),
    )
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("--json prints one JSON object")
}

#[test]
fn resumed_guest_continues_and_passes_the_test_vm_checks() {
    if !kvm_available() {
        return;
    }
    let o = run(pgkraft()
        .arg("resume")
        .arg(snap())
        .arg("--vm")
        .arg(counter_vm())
        .arg("--json"));
    assert!(o.status.success(), "resume --vm failed: {}", stdout(&o));
    let v = json(&o);
    assert_eq!(v["smoke"]["ok"], true, "{v:#}");
    // The same expectations hold for a cold boot of the same test VM.
    let cold = run(pgkraft()
        .arg("smoke")
        .arg(image("counter"))
        .arg("--vm")
        .arg(counter_vm())
        .arg("--json"));
    assert!(cold.status.success());
    assert_eq!(json(&cold)["console"], v["smoke"]["console"]);
    // Resume figures are reported (never asserted as times).
    for key in ["restored_ms", "resume_ms", "first_answer_ms"] {
        assert!(v[key].is_f64(), "{key} missing: {v:#}");
    }
    // The first sign of life is the guest's own report that it runs again,
    // after the state was restored and before it answered.
    let phases = &v["smoke"]["phases"];
    assert_eq!(v["resume_ms"], phases["resumed"], "{v:#}");
    let at = |k: &str| phases[k].as_f64().unwrap();
    assert!(at("vmm_ready") <= at("resumed") && at("resumed") <= at("first_answer"));
    assert_eq!(v["verify"]["hashed"], serde_json::json!([]), "{v:#}");
}

#[test]
fn two_resumes_of_one_snapshot_are_independent() {
    if !kvm_available() {
        return;
    }
    let a = resume_with(&snap(), "add 10\nget\ntime\n", &[]);
    let b = resume_with(&snap(), "add 100\nget\ntime\n", &[]);
    for (o, want) in [(&a, "counter=17"), (&b, "counter=107")] {
        assert!(o.status.success());
        let v = json(o);
        let console = v["console"].as_str().unwrap();
        assert_eq!(
            console,
            format!(
                "counter ready\ncounter=5\ncounter=7\n{want}\n{want} commands=4 table=OK\nmonotonic forward: yes, realtime forward: \
                 yes\nbye {want}\n"
            )
        );
        assert_eq!(v["exit"], "status 0");
        // The console holds the whole session: what the guest printed
        // before the snapshot, then after the resume.
    }
    // The snapshot itself is unchanged by either.
    let c = resume_with(&snap(), "get\n", &[]);
    assert_eq!(
        json(&c)["console"],
        "counter ready\ncounter=5\ncounter=7\ncounter=7 commands=3 table=OK\nbye counter=7\n"
    );
}

#[test]
fn snapshot_from_another_image_is_refused() {
    if !kvm_available() {
        return;
    }
    let hello = image("hello");
    let o = resume_with(&snap(), "get\n", &["--image", hello.to_str().unwrap()]);
    refused(
        &o,
        &[
            hello.to_str().unwrap(),
            "is not the image this snapshot was taken from",
            "fix:",
        ],
    );
    // The same through --vm.
    let o = run(pgkraft()
        .arg("resume")
        .arg(snap())
        .arg("--vm")
        .arg(counter_vm())
        .arg("--image")
        .arg(&hello));
    refused(&o, &["is not the image this snapshot was taken from"]);
}

#[test]
fn truncated_files_are_refused() {
    if !kvm_available() {
        return;
    }
    for file in ["memory.raw", "vcpu0.state", "devices.json"] {
        let dir = copy_of(&format!("truncated-{file}"));
        let path = dir.join(file);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 1).unwrap();
        let o = resume_with(&dir, "get\n", &[]);
        refused(
            &o,
            &[path.to_str().unwrap(), "truncated", "pgkraft snapshot"],
        );
    }
}

#[test]
fn altered_files_are_refused() {
    if !kvm_available() {
        return;
    }
    for (file, at) in [
        ("vcpu0.state", 100u64),
        ("vm.state", 20),
        ("memory.raw", 0x10_0000),
    ] {
        let dir = copy_of(&format!("altered-{file}"));
        let path = dir.join(file);
        // A first resume verifies the copy and records its files'
        // identities, so the edit below must invalidate that record.
        assert!(resume_with(&dir, "get\n", &[]).status.success());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x55;
        f.write_all_at(&b, at).unwrap();
        drop(f);
        // An in-place edit (same inode, new mtime/ctime) is re-hashed.
        let o = resume_with(&dir, "get\n", &[]);
        refused(&o, &[path.to_str().unwrap(), "has been altered"]);
    }
}

/// Rewrites `file` of snapshot `dir` with `edit` applied to its JSON, and
/// the manifest's record of it to match, so only the edit itself differs.
fn edit_json(dir: &Path, file: &str, edit: &dyn Fn(&mut serde_json::Value)) {
    use sha2::Digest;
    let path = dir.join(file);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    if file != "manifest.json" {
        edit_json(dir, "manifest.json", &|m| {
            m["files"][file] = serde_json::json!({
                "bytes": bytes.len(),
                "sha256": hex::encode(sha2::Sha256::digest(&bytes)),
            });
        });
    }
}

#[test]
fn snapshots_of_another_format_or_device_state_version_are_refused() {
    if !kvm_available() {
        return;
    }
    // A format-2 directory (per-device states came with format 3), and an
    // older manifest still, without fields this one has: both are refused
    // by their format number, before anything else is read.
    let dir = copy_of("format-2");
    edit_json(&dir, "manifest.json", &|m| m["format"] = 2.into());
    refused(
        &resume_with(&dir, "get\n", &[]),
        &["is snapshot format 2, this pgkraft reads format 3", "fix:"],
    );
    let dir = copy_of("format-1");
    std::fs::write(dir.join("manifest.json"), r#"{"format": 1, "image": {}}"#).unwrap();
    refused(
        &resume_with(&dir, "get\n", &[]),
        &["is snapshot format 1, this pgkraft reads format 3"],
    );
    // One device's state of a version this runner does not read.
    let dir = copy_of("uart-v99");
    edit_json(&dir, "devices.json", &|d| d["uart"]["version"] = 99.into());
    refused(
        &resume_with(&dir, "get\n", &[]),
        &[
            "devices.json",
            "UART state version 99 (this runner reads version 1)",
        ],
    );
    // Memory data ranges outside guest RAM never reach a mapping.
    let dir = copy_of("ranges");
    edit_json(&dir, "manifest.json", &|m| {
        m["memory"]["data_ranges"] = serde_json::json!([[0, 4096], [1u64 << 40, 4096]]);
    });
    refused(
        &resume_with(&dir, "get\n", &[]),
        &["bad memory data ranges", "outside guest RAM"],
    );
}

#[test]
fn vm_shape_mismatch_is_refused() {
    if !kvm_available() {
        return;
    }
    let text = std::fs::read_to_string(counter_vm()).unwrap();
    let vm = out_dir().join("counter-128.yaml");
    std::fs::write(&vm, format!("{text}memory_mib: 128\n")).unwrap();
    let o = run(pgkraft().arg("resume").arg(snap()).arg("--vm").arg(&vm));
    refused(&o, &["VM shape mismatch", "64 MiB", "128 MiB", "fix:"]);

    let vm = out_dir().join("counter-args.yaml");
    std::fs::write(&vm, format!("{text}args: [other]\n")).unwrap();
    let o = run(pgkraft().arg("resume").arg(snap()).arg("--vm").arg(&vm));
    refused(&o, &["VM shape mismatch", "arguments"]);
}

#[test]
fn a_crash_mid_snapshot_leaves_nothing_that_resumes() {
    if !kvm_available() {
        return;
    }
    let parent = out_dir().join("crash");
    std::fs::create_dir_all(&parent).unwrap();
    let out = parent.join("snap");
    let o = run(pgkraft()
        .env("PGKRAFT_TEST_CRASH_SNAPSHOT", "1")
        .arg("snapshot")
        .arg(image("counter"))
        .arg("--vm")
        .arg(counter_vm())
        .arg("--out")
        .arg(&out));
    assert!(!o.status.success(), "the crash hook did not fire");
    assert!(!out.exists(), "a crashed snapshot must not appear at --out");
    let partial: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(".partial-")
        })
        .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    let o = resume_with(&partial[0], "get\n", &[]);
    refused(&o, &["did not finish", "take the snapshot again"]);

    // A directory that lacks the manifest (written last) is no snapshot.
    let dir = copy_of("no-manifest");
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let o = resume_with(&dir, "get\n", &[]);
    refused(&o, &["is not a pgkraft snapshot", "manifest.json"]);
}

#[test]
fn a_guest_that_never_waits_for_input_cannot_be_snapshotted() {
    if !kvm_available() {
        return;
    }
    let out = out_dir().join("hello.snap");
    let o = run(pgkraft()
        .arg("snapshot")
        .arg(image("hello"))
        .arg("--out")
        .arg(&out));
    assert_eq!(o.status.code(), Some(1));
    has(
        &stderr(&o),
        &["exited with status 0 before it waited for console input"],
    );
    assert!(!out.exists());
    // And its temporary directory is gone.
    let left: Vec<_> = std::fs::read_dir(out_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hello.snap"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn snapshot_replaces_an_older_snapshot_but_nothing_else() {
    if !kvm_available() {
        return;
    }
    let out = out_dir().join("replace.snap");
    assert!(snapshot_into(&out).status.success());
    assert!(snapshot_into(&out).status.success());
    assert!(out.join("manifest.json").is_file());
    let other = out_dir().join("not-a-snapshot");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious"), "x").unwrap();
    let o = snapshot_into(&other);
    assert_eq!(o.status.code(), Some(2));
    has(
        &stderr(&o),
        &["is not a pgkraft snapshot", "choose another --out"],
    );
    assert!(other.join("precious").is_file());
}

/// PostgreSQL single-user: rows written before the snapshot are there after
/// resume, the clock moved forward, and two resumes of one snapshot do not
/// see each other's writes (each adds row 3 and counts 3 rows).
#[test]
fn postgres_single_user_resumes_with_its_rows() {
    if !kvm_available() {
        return;
    }
    let img = postgres_image("17");
    let vm = repo().join("test-vms/single-user-snapshot.yaml");
    let dir = out_dir().join("pg17.snap");
    let o = run(pgkraft()
        .arg("snapshot")
        .arg(&img)
        .arg("--vm")
        .arg(&vm)
        .arg("--out")
        .arg(&dir)
        .arg("--json"));
    assert!(o.status.success(), "pgkraft snapshot of postgres failed");
    // The first resume learns the working set, the second places pages by it.
    for how in ["learned", "used"] {
        let o = run(pgkraft()
            .arg("resume")
            .arg(&dir)
            .arg("--vm")
            .arg(&vm)
            .arg("--json"));
        let v = json(&o);
        assert_eq!(v["smoke"]["ok"], true, "{v:#}");
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(v["working_set"]["how"], how, "{v:#}");
    }
    // The ordinary single-user checks, against a snapshot taken at the
    // server's first prompt, pass as they do on a cold boot.
    let plain = repo().join("test-vms/single-user.yaml");
    let dir = out_dir().join("pg17-plain.snap");
    let o = run(pgkraft()
        .arg("snapshot")
        .arg(&img)
        .arg("--vm")
        .arg(&plain)
        .arg("--out")
        .arg(&dir));
    assert!(o.status.success());
    let o = run(pgkraft()
        .arg("resume")
        .arg(&dir)
        .arg("--vm")
        .arg(&plain)
        .arg("--json"));
    let v = json(&o);
    assert_eq!(v["smoke"]["ok"], true, "{v:#}");
}

/// Prefaulting changes where pages live, never what they hold.
#[test]
fn every_prefault_mode_resumes_the_same_guest() {
    if !kvm_available() {
        return;
    }
    for how in ["learned", "copy", "write", "read", "none"] {
        let o = resume_with(&snap(), "add 1\nget\n", &["--prefault", how]);
        assert!(o.status.success(), "--prefault {how}");
        assert_eq!(
            json(&o)["console"],
            COUNTER_AFTER_ADD_1_GET,
            "--prefault {how}"
        );
    }
}

const COUNTER_AFTER_ADD_1_GET: &str = "counter ready\ncounter=5\ncounter=7\ncounter=8\ncounter=8 commands=4 table=OK\nbye counter=8\n";

/// The first resume learns which pages the guest touches up to its first
/// answer (workingset.json); later resumes place pages by it. Neither
/// changes what the guest sees, and a damaged record is only advice: it is
/// ignored and learned again.
#[test]
fn the_working_set_is_learned_once_then_used() {
    if !kvm_available() {
        return;
    }
    let dir = copy_of("ws.snap");
    let ws = dir.join("workingset.json");
    let _ = std::fs::remove_file(&ws);
    let first = resume_with(&dir, "add 1\nget\n", &[]);
    assert!(first.status.success());
    let v = json(&first);
    assert_eq!(v["console"], COUNTER_AFTER_ADD_1_GET, "{v:#}");
    assert_eq!(v["working_set"]["how"], "learned", "{v:#}");
    assert!(v["working_set"]["pages"].as_u64().unwrap() > 0, "{v:#}");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&ws).unwrap()).unwrap();
    let pages = record["pages"].as_array().unwrap();
    assert_eq!(
        pages.len() as u64,
        v["working_set"]["pages"].as_u64().unwrap()
    );
    // The counter's first answer writes memory, so some pages are written
    // ones, and every written page is a touched page.
    let written = record["written"].as_array().unwrap();
    assert!(!written.is_empty());
    assert!(written.iter().all(|w| pages.contains(w)));

    let second = resume_with(&dir, "add 1\nget\n", &[]);
    assert!(second.status.success());
    let v = json(&second);
    assert_eq!(v["console"], COUNTER_AFTER_ADD_1_GET, "{v:#}");
    assert_eq!(v["working_set"]["how"], "used", "{v:#}");
    assert!(
        v["working_set"]["private_pages"].as_u64().unwrap() > 0,
        "{v:#}"
    );

    for damage in [
        "not json".to_string(),
        // Pages outside the guest's 64 MiB, and not page aligned.
        record
            .to_string()
            .replace("\"pages\":[", "\"pages\":[1,9999999999999,"),
    ] {
        std::fs::write(&ws, damage).unwrap();
        let o = resume_with(&dir, "add 1\nget\n", &[]);
        assert!(o.status.success());
        let v = json(&o);
        assert_eq!(v["console"], COUNTER_AFTER_ADD_1_GET, "{v:#}");
        assert_eq!(v["working_set"]["how"], "learned", "{v:#}");
    }
}
