//! `rootfs.files` and `postgres.test_modules` in a built image: the host
//! files are in the image at their guest paths (inspect, and the server
//! reads them with pg_read_file in single-user mode), enter the image by
//! content and not by host path, and a test module's C functions are found
//! by the name the regression SQL loads them under.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A PostgreSQL 17 recipe with `test_modules: [regress]` that adds
/// `from_dir` at /srv/in and `from_dir/one.txt` at /srv/one.txt.
fn recipe(dir: &Path, from_dir: &Path) -> PathBuf {
    let text = format!(
        "name: files\nkind: postgres\npostgres:\n  version: \"17\"\n  test_modules: [regress]\n\
         cluster:\n  auth: trust\nrootfs:\n  zstd_level: 1\n  files:\n\
         \x20   - from: {d}\n      to: /srv/in\n\
         \x20   - from: {d}/one.txt\n      to: /srv/one.txt\n",
        d = from_dir.display()
    );
    let p = dir.join("files.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn build(recipe: &Path, out: &Path) -> serde_json::Value {
    let o = run(pgkraft()
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .arg("--json"));
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

fn fill(dir: &Path, csv: &str) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("one.txt"), "one line\n").unwrap();
    std::fs::write(dir.join("sub/a.csv"), csv).unwrap();
}

fn rootfs_sha(info: &serde_json::Value) -> String {
    info["build"]["rootfs"]["sha256"]
        .as_str()
        .expect("rootfs sha256 in the build info")
        .to_string()
}

fn inspect(img: &Path) -> serde_json::Value {
    let o = run(pgkraft().arg("inspect").arg(img).arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn host_files_are_in_the_image_by_content() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fill(&a, "1,2\n");
    fill(&b, "1,2\n");

    let va = build(&recipe(t.path(), &a), &t.path().join("out-a"));
    let img = PathBuf::from(va["image"].as_str().unwrap());
    let info = inspect(&img);
    let files = info["rootfs"]["files"].as_array().unwrap();
    for p in ["/srv/one.txt", "/srv/in/one.txt", "/srv/in/sub/a.csv"] {
        assert!(files.iter().any(|f| f["path"] == p), "{p} in {files:#?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(va["manifest"].as_str().unwrap()).unwrap()).unwrap();
    let reason = manifest["rootfs_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/srv/in/sub/a.csv")
        .map(|f| f["reason"].as_str().unwrap().to_string());
    assert_eq!(reason.as_deref(), Some("rootfs.files[0]: sub/a.csv"));

    // The same contents from another host directory: the same archive.
    let vb = build(&recipe(t.path(), &b), &t.path().join("out-b"));
    let img_b = PathBuf::from(vb["image"].as_str().unwrap());
    assert_eq!(rootfs_sha(&info), rootfs_sha(&inspect(&img_b)));
    // Other contents: another archive.
    std::fs::write(b.join("sub/a.csv"), "3,4\n").unwrap();
    let vc = build(&recipe(t.path(), &b), &t.path().join("out-c"));
    let img_c = PathBuf::from(vc["image"].as_str().unwrap());
    assert_ne!(rootfs_sha(&info), rootfs_sha(&inspect(&img_c)));

    if !kvm_available() {
        return;
    }
    // The server reads the files where the recipe put them, and finds the
    // regress module's functions under the name the regression SQL uses
    // (any directory: the module table is looked up by base name).
    let vm = t.path().join("vm.yaml");
    std::fs::write(
        &vm,
        "mode: single-user\nmemory_mib: 256\ntimeout_secs: 60\nchecks:\n\
         \x20 - name: file\n    sql: \"SELECT btrim(pg_read_file('/srv/one.txt'), chr(10))\"\n    expect: [[\"one line\"]]\n\
         \x20 - name: directory\n    sql: \"SELECT btrim(pg_read_file('/srv/in/sub/a.csv'), chr(10))\"\n    expect: [[\"1,2\"]]\n\
         \x20 - name: regress module\n    sql: |\n\
         \x20     CREATE FUNCTION canon(text) RETURNS text AS '/nowhere/regress.so', 'test_canonicalize_path' LANGUAGE C STRICT;\n\
         \x20     SELECT canon('/a/./b/../c');\n    expect: [[\"/a/c\"]]\n",
    )
    .unwrap();
    let o = run(pgkraft()
        .arg("smoke")
        .arg(&img)
        .arg("--vm")
        .arg(&vm)
        .arg("--json"));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("one JSON object ({e}): {}", stdout(&o)));
    assert_eq!(report["ok"], true, "{report:#}");
}

#[test]
fn a_host_file_at_the_clusters_place_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("x"), "x").unwrap();
    let p = t.path().join("r.yaml");
    std::fs::write(
        &p,
        "name: bad\nkind: postgres\npostgres:\n  version: \"17\"\nrootfs:\n  files:\n    - from: x\n      to: /data/x\n",
    )
    .unwrap();
    let o = run(pgkraft()
        .arg("build")
        .arg(&p)
        .arg("--out")
        .arg(t.path().join("out")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    has(
        &stderr(&o),
        &[
            "rootfs.files[0].to: /data/x is also the cluster's data directory",
            "fix: choose a path outside it",
        ],
    );
    assert!(!t.path().join("out/bad.img").exists());
}
