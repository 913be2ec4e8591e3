//! End to end: `pgkraft build` a C program recipe, then run, smoke and
//! inspect the image on real KVM; and the errors a new user runs into.

mod common;
use common::*;

const HELLO_OUT: &str = "argc: 3\nargv[0]: hello\nargv[1]: hello\nargv[2]: world\nargv[argc] is NULL: yes\nenv[0]: GREETING=hi\nenv count: 1\ngetenv(GREETING): hi\nhello, world\n";

#[test]
fn run_prints_the_programs_output_and_exits_with_its_status() {
    if !kvm_available() {
        return;
    }
    let img = image("hello");
    let o = run(pgkraft().arg("run").arg(&img));
    assert_eq!(o.status.code(), Some(0), "stdout: {}", stdout(&o));
    assert_eq!(stdout(&o), HELLO_OUT);

    // Arguments after `--` replace the recipe's.
    let o = run(pgkraft()
        .arg("run")
        .arg(&img)
        .arg("--")
        .arg("one arg")
        .arg("it's"));
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).starts_with("argc: 3\nargv[0]: hello\nargv[1]: one arg\nargv[2]: it's\n"),
        "{}",
        stdout(&o)
    );

    // The program's exit status is pgkraft run's.
    let o = run(pgkraft().arg("run").arg(image("errno")));
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn smoke_reports_size_boot_time_and_phases() {
    if !kvm_available() {
        return;
    }
    let img = image("hello");
    let o = run(pgkraft().arg("smoke").arg(&img).arg("--json"));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("exactly one JSON object on stdout");
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["image_bytes"].as_u64(),
        Some(std::fs::metadata(&img).unwrap().len())
    );
    assert!(v["boot_ms"].as_f64().unwrap() > 0.0);
    let phases = v["phases"].as_object().unwrap();
    let order = [
        "vmm_ready",
        "first_guest_instruction",
        "libos_ready",
        "main_entered",
        "exit",
    ];
    let times: Vec<f64> = order
        .iter()
        .map(|p| {
            phases
                .get(*p)
                .and_then(|t| t.as_f64())
                .unwrap_or_else(|| panic!("phase {p} missing in {v}"))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {times:?}"
    );
    assert_eq!(v["console"].as_str(), Some(HELLO_OUT));
}

#[test]
fn smoke_with_a_test_vm_checks_output_and_status() {
    if !kvm_available() {
        return;
    }
    let o = run(pgkraft()
        .arg("smoke")
        .arg(image("console"))
        .arg("--vm")
        .arg(repo().join("test-vms/console.yaml"))
        .arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(o.status.code(), Some(0));

    // A check that fails makes smoke exit 1 and say what was expected.
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("wrong.yaml");
    std::fs::write(
        &vm,
        "mode: program\nexpect:\n  status: 0\n  output_contains: [\"no such text\"]\n",
    )
    .unwrap();
    let o = run(pgkraft()
        .arg("smoke")
        .arg(image("hello"))
        .arg("--vm")
        .arg(&vm)
        .arg("--json"));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["ok"] == false && c["expected"] == "no such text")
    );
}

#[test]
fn a_faulting_guest_is_reported_and_exits_1() {
    if !kvm_available() {
        return;
    }
    let o = run(pgkraft().arg("run").arg(image("fail")));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("page fault") && err.contains("cr2") && err.contains("rip"),
        "{err}"
    );
}

#[test]
fn inspect_shows_sections_and_the_embedded_manifest() {
    if !kvm_available() {
        return;
    }
    let img = image("hello");
    let o = run(pgkraft().arg("inspect").arg(&img).arg("--json"));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["sections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == ".text")
    );
    assert_eq!(v["pvh_entry"], true);
    assert_eq!(v["build"]["name"], "hello");
    assert!(
        v["build"]["recipe"]
            .as_str()
            .unwrap()
            .contains("kind: program")
    );
    // The manifest next to the image lists the image's own hash.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.with_file_name("hello.manifest.json")).unwrap())
            .unwrap();
    let sha = manifest["image"]["sha256"].as_str().unwrap();
    assert_eq!(sha, pgkraft::build::cache::sha256_file(&img).unwrap());
}

#[test]
fn hello_image_is_under_one_mib() {
    if !kvm_available() {
        return;
    }
    let bytes = std::fs::metadata(image("hello")).unwrap().len();
    assert!(bytes < 1 << 20, "hello image is {bytes} bytes");
}

// ---- bad input, as a new user would produce it -------------------------

fn build_in(dir: &std::path::Path, recipe: &std::path::Path) -> std::process::Output {
    run(pgkraft()
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(dir.join("out")))
}

fn no_outputs(dir: &std::path::Path) {
    let out = dir.join("out");
    if let Ok(entries) = std::fs::read_dir(&out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name == "logs",
                "unexpected {name} left in {}",
                out.display()
            );
        }
    }
}

#[test]
fn missing_recipe_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = build_in(dir.path(), &dir.path().join("nope.yaml"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.yaml"), "{}", stderr(&o));
    no_outputs(dir.path());
}

#[test]
fn yaml_typo_and_unknown_key_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.yaml");
    std::fs::write(&r, "name: x\nkind: program\nprogram:\n  sources: [a.c\n").unwrap();
    let o = build_in(dir.path(), &r);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("r.yaml:"), "{}", stderr(&o));

    std::fs::write(dir.path().join("a.c"), "int main(void){return 0;}\n").unwrap();
    std::fs::write(
        &r,
        "name: x\nkind: program\nprogram:\n  sources: [a.c]\nmemroy: 3\n",
    )
    .unwrap();
    let o = build_in(dir.path(), &r);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("r.yaml:5") && err.contains("memroy"), "{err}");
    no_outputs(dir.path());
}

#[test]
fn a_c_compile_error_is_exit_2_with_the_compiler_message_and_no_image() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.c"),
        "int main(void) { return undeclared_thing; }\n",
    )
    .unwrap();
    let r = dir.path().join("bad.yaml");
    std::fs::write(
        &r,
        "name: bad\nkind: program\nprogram:\n  sources: [bad.c]\n",
    )
    .unwrap();
    let o = build_in(dir.path(), &r);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("undeclared_thing") && err.contains("compile"),
        "{err}"
    );
    no_outputs(dir.path());
}

#[test]
fn run_refuses_a_file_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    std::fs::write(&f, "hello").unwrap();
    let o = run(pgkraft().arg("run").arg(&f));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an ELF"), "{}", stderr(&o));
    let o = run(pgkraft().arg("run").arg("/bin/true"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pgkraft build"), "{}", stderr(&o));
}
