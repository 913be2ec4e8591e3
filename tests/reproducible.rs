//! Builds are reproducible anywhere: the same recipe built from a copy of
//! the checkout at another path, with its own empty cache, another umask,
//! time zone, locale and user, gives bit-identical outputs (image, debug
//! file, manifest, SBOM) and names no host path (ci/reproducible.sh, which
//! also runs on the PostgreSQL recipe as a check).

mod common;
use common::*;

#[test]
fn two_checkouts_with_separate_caches_build_identical_outputs() {
    let out = run(std::process::Command::new("bash")
        .arg(repo().join("ci/reproducible.sh"))
        .arg("recipes/hello.yaml")
        .env("PGKRAFT", env!("CARGO_BIN_EXE_pgkraft")));
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the builds differ:\n{text}\n{}",
        stderr(&out)
    );
    for file in [
        "hello.img",
        "hello.debug",
        "hello.manifest.json",
        "hello.spdx.json",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("same") && l.contains(&format!(" {file} "))),
            "{file} was not compared:\n{text}"
        );
    }
    assert!(!text.contains("DIFFERS"), "{text}");
}
