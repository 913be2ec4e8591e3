//! `pgkraft bench report`: the report of the default postgres image,
//! loaded in a real headless browser (Debian's chromium, which
//! ci/bootstrap.sh installs), has each chart drawn, and its report.json
//! carries every figure. Never asserts a time.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The headless browser; missing is a failure, not a skip: CI installs it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed: this test loads the report in a real headless \
                 browser (run ci/bootstrap.sh, or `apt-get install chromium`)"
            )
        })
}

/// The page's DOM after chromium loaded and rendered it.
fn dump_dom(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = run(Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display())));
    assert!(o.status.success(), "chromium failed: {}", stderr(&o));
    stdout(&o)
}

/// The `<svg id="ID" ...>...</svg>` element in the DOM, with its text on
/// one line (plotters puts each text between newlines).
fn svg(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("the page has no chart {id}"));
    let start = dom[..at].rfind("<svg").expect("the id is on an <svg>");
    let end = at + dom[at..].find("</svg>").expect("the <svg> is closed");
    dom[start..end].replace('\n', "")
}

fn count(svg: &str, tag: &str) -> usize {
    svg.matches(&format!("<{tag}")).count()
}

fn samples(v: &Value) -> usize {
    v["samples_ms"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples_ms in {v}"))
        .len()
}

#[test]
fn the_report_of_the_default_image_renders_every_chart_in_a_browser() {
    if !kvm_available() {
        return;
    }
    let browser = chromium();
    let img = postgres_image("17");
    let out = out_dir().join("report");
    let o = run(pgkraft()
        .args(["bench", "report"])
        .arg(&img)
        .arg("--out")
        .arg(&out)
        .args(["--runs", "2", "--instances", "3"]));
    assert!(o.status.success(), "bench report failed: {}", stderr(&o));

    // report.json: every figure the page shows.
    let v: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap())
        .expect("report.json parses");
    let parts = v["size_by_part"].as_array().unwrap();
    let sum: u64 = parts.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sum, v["image_bytes"].as_u64().unwrap(), "parts add up");
    assert_eq!(sum, std::fs::metadata(&img).unwrap().len());
    let names: Vec<&str> = parts.iter().map(|p| p["part"].as_str().unwrap()).collect();
    for want in [
        ".text (library OS code)",
        "the program (.pgkraft.program)",
        "rootfs /data (the cluster)",
        "rootfs /usr/local/pgsql/share",
    ] {
        assert!(names.contains(&want), "no part {want:?} in {names:?}");
    }
    // `inspect` splits the image the same way.
    let inspect = run(pgkraft().arg("inspect").arg(&img).arg("--json"));
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["size_by_part"], v["size_by_part"]);

    let phases: Vec<&str> = v["timeline"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    for want in ["libos_ready", "main_entered", "first_answer"] {
        assert!(phases.contains(&want), "no phase {want} in {phases:?}");
    }
    let fa = &v["first_answer"];
    assert_eq!(samples(&fa["guest_boot_to_first_answer"]), 2);
    assert_eq!(samples(&fa["native_spawn_to_first_answer"]), 2);
    assert!(fa["guest_over_native_ratio"].as_f64().unwrap() > 0.0);
    let r = &v["resume"];
    for k in [
        "cold_boot_to_first_answer",
        "resume_to_first_sign_of_life",
        "resume_to_first_answer",
        "resume_to_first_answer_prefault_read",
        "pgkraft_resume_process_to_answer",
    ] {
        assert_eq!(samples(&r[k]), 2, "{k}");
    }
    // QEMU resumes the same image here (qemu is a test dependency).
    assert_eq!(
        samples(&r["qemu_incoming_process_to_answer"]),
        2,
        "QEMU's resume: {}",
        r["qemu_note"]
    );
    let d = &v["density"];
    assert_eq!(d["instances"], 3);
    for k in ["pss", "private", "rss"] {
        assert_eq!(d[k]["per_instance_kib"].as_array().unwrap().len(), 3, "{k}");
    }
    assert_eq!(d["stopped_cleanly"], 3);
    // bench boot does not apply to a postgres image, and says why.
    assert!(v["boot"].is_null());
    let omitted = v["omitted"].as_array().unwrap();
    assert!(
        omitted
            .iter()
            .any(|o| o["benchmark"] == "boot" && o["why"].as_str().unwrap().contains("QEMU")),
        "{omitted:?}"
    );

    // The page, as a browser renders it.
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: no file beside it, nothing fetched.
    for refers in ["<script", "<link", "<img", "src=", "href=", "url("] {
        assert!(!html.contains(refers), "the page has {refers}");
    }
    eprintln!("browser: {}", browser.display());
    let dom = dump_dom(&page);
    let size = svg(&dom, "chart-size");
    assert!(size.contains("<title>Image size by part</title>"));
    assert!(
        count(&size, "rect") > parts.len(),
        "a bar per part:\n{size}"
    );
    for name in &names {
        assert!(
            size.contains(&format!(">{name}<")),
            "no label {name}:\n{size}"
        );
    }
    let timeline = svg(&dom, "chart-timeline");
    assert!(count(&timeline, "rect") > phases.len(), "{timeline}");
    assert!(timeline.contains(">first_answer<"), "{timeline}");
    // Distributions: a dot per run and per instance, and a box each.
    let first = svg(&dom, "chart-first-answer");
    assert!(count(&first, "circle") >= 3 * 2, "{first}");
    assert!(first.contains("native postgres --single"), "{first}");
    let resume = svg(&dom, "chart-resume");
    assert!(count(&resume, "circle") >= 6 * 2, "{resume}");
    assert!(resume.contains("qemu -incoming"), "{resume}");
    let density = svg(&dom, "chart-density");
    assert!(count(&density, "circle") >= 3 * 3, "{density}");
    for chart in [&size, &timeline, &first, &resume, &density] {
        assert!(chart.contains("<title>"), "{chart}");
        assert!(
            count(chart, "line") + count(chart, "polyline") > 0,
            "axes drawn"
        );
    }
    assert!(
        dom.contains("Not measured for this image"),
        "the note on boot"
    );
}

#[test]
fn a_bad_out_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    // The image need not exist: --out is checked first.
    let o = run(pgkraft()
        .args(["bench", "report", "/nonexistent.img", "--out"])
        .arg(&file));
    refused(&o, &["--out", "not a directory"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
