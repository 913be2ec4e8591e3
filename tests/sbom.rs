//! The SBOM `pgkraft build` writes next to every image (`<name>.spdx.json`):
//! valid SPDX 2.3 by a real validator (PyPI's spdx-tools, which
//! ci/bootstrap.sh installs), naming what went into the image with the
//! hashes the build checked, and the same bytes for the same build.

mod common;
use common::*;
use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `pyspdxtools`: from the venv ci/bootstrap.sh makes, else on PATH.
fn validator() -> PathBuf {
    let venv = std::env::var_os("PGKRAFT_SPDX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".local/share/pgkraft/spdx-venv")
        });
    let in_venv = venv.join("bin/pyspdxtools");
    if in_venv.is_file() {
        return in_venv;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v pyspdxtools"])
        .output()
        .expect("sh");
    let found = String::from_utf8_lossy(&on_path.stdout).trim().to_string();
    assert!(
        !found.is_empty(),
        "pyspdxtools (PyPI spdx-tools) is neither in {} nor on PATH: run ci/bootstrap.sh",
        venv.display()
    );
    PathBuf::from(found)
}

/// Runs the SPDX validator on `sbom`; panics with its findings if invalid.
fn validate(sbom: &Path) {
    let o = run(Command::new(validator()).arg("-i").arg(sbom));
    assert!(
        o.status.success(),
        "pyspdxtools finds {} invalid:\n{}{}",
        sbom.display(),
        stdout(&o),
        stderr(&o)
    );
}

fn sbom_of(image: &Path, name: &str) -> (PathBuf, Value) {
    let path = image.with_file_name(format!("{name}.spdx.json"));
    let doc = serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, doc)
}

fn sha256_file(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn package<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["SPDXID"] == id)
        .unwrap_or_else(|| panic!("no package {id} in the SBOM"))
}

fn sha256_of(p: &Value) -> &str {
    let c = p["checksums"].as_array().unwrap();
    let c = c.iter().find(|c| c["algorithm"] == "SHA256").unwrap();
    c["checksumValue"].as_str().unwrap()
}

fn related(doc: &Value, a: &str, kind: &str, b: &str) -> bool {
    doc["relationships"].as_array().unwrap().iter().any(|r| {
        r["spdxElementId"] == a && r["relationshipType"] == kind && r["relatedSpdxElement"] == b
    })
}

/// The crate package named `name` (any version).
fn krate<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-crate-"))
        .unwrap_or_else(|| panic!("no crate {name} in the SBOM"))
}

#[test]
fn the_postgres_17_sbom_is_valid_and_names_what_went_in() {
    let image = postgres_image("17");
    let (path, doc) = sbom_of(&image, "postgres-17");
    validate(&path);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let image_sha = sha256_file(&image);
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(&image_sha)
    );
    assert!(related(
        &doc,
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        "SPDXRef-image"
    ));
    assert_eq!(sha256_of(package(&doc, "SPDXRef-image")), image_sha);

    // PostgreSQL (17.11 today) with the sha256 of the source tarball
    // pgkraft pins.
    let pin = pgkraft::catalog::pin(17).unwrap();
    let pg = package(&doc, "SPDXRef-postgresql");
    assert_eq!(pg["name"], "PostgreSQL");
    assert_eq!(pg["versionInfo"], pin.version);
    assert_eq!(sha256_of(pg), pin.sha256);
    assert_eq!(pg["downloadLocation"], pin.url);
    assert_eq!(pg["licenseDeclared"], "PostgreSQL");
    assert!(related(
        &doc,
        "SPDXRef-image",
        "CONTAINS",
        "SPDXRef-postgresql"
    ));

    // Every patch in postgres-patches/17, with its sha256, applied.
    let patches = std::fs::read_dir(repo().join("postgres-patches/17")).unwrap();
    let mut n = 0;
    for p in patches.map(|e| e.unwrap().path()) {
        if p.extension().is_none_or(|e| e != "patch") {
            continue;
        }
        let name = p.file_name().unwrap().to_str().unwrap();
        let id = format!("SPDXRef-patch-{name}");
        assert_eq!(sha256_of(package(&doc, &id)), sha256_file(&p), "{name}");
        assert!(related(&doc, &id, "PATCH_APPLIED", "SPDXRef-postgresql"));
        n += 1;
    }
    assert!(n >= 2, "postgres-patches/17 has its patches");

    // musl (1.2.3 today) with its tarball's sha256.
    let musl = package(&doc, "SPDXRef-musl");
    let musl_pin = pgkraft::build::musl::MUSL_PIN;
    assert_eq!(musl["versionInfo"], musl_pin.version);
    assert_eq!(sha256_of(musl), musl_pin.sha256);
    assert_eq!(musl["licenseDeclared"], "MIT");

    // Each module and extension the manifest lists, linked into the server.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(image.with_file_name("postgres-17.manifest.json")).unwrap(),
    )
    .unwrap();
    let facts = &manifest["build"]["postgres"];
    let names = facts["modules"]
        .as_array()
        .unwrap()
        .iter()
        .chain(facts["extensions"].as_array().unwrap());
    for m in names {
        let id = format!(
            "SPDXRef-postgresql-{}",
            m.as_str().unwrap().replace('_', "-")
        );
        assert_eq!(package(&doc, &id)["versionInfo"], pin.version);
        assert!(
            related(&doc, "SPDXRef-postgresql", "STATIC_LINK", &id),
            "{id}"
        );
    }
    assert!(
        facts["extensions"]
            .as_array()
            .unwrap()
            .contains(&"plpgsql".into())
    );

    // The libOS, in the image, and the crates linked into it, with the
    // versions libos/Cargo.lock pins and declared licenses.
    let libos = krate(&doc, "pgkraft-libos");
    let libos_id = libos["SPDXID"].as_str().unwrap();
    assert!(related(&doc, "SPDXRef-image", "CONTAINS", libos_id));
    let lock = std::fs::read_to_string(repo().join("libos/Cargo.lock")).unwrap();
    for name in [
        "talc",
        "spin",
        "ruzstd",
        "zerocopy",
        "smoltcp",
        "virtio-drivers",
    ] {
        let c = krate(&doc, name);
        let version = c["versionInfo"].as_str().unwrap();
        assert!(
            lock.contains(&format!("name = \"{name}\"\nversion = \"{version}\"")),
            "{name} {version} is what libos/Cargo.lock pins"
        );
        assert_ne!(c["licenseDeclared"], "NOASSERTION", "{name} has a license");
        assert!(
            lock.contains(&format!("checksum = \"{}\"", sha256_of(c))),
            "{name}: the .crate's sha256 from libos/Cargo.lock"
        );
        let id = c["SPDXID"].as_str().unwrap();
        assert!(related(&doc, libos_id, "STATIC_LINK", id), "{name}");
    }
    // A proc-macro runs in the compiler: a build dependency, not linked.
    let derive = krate(&doc, "zerocopy-derive")["SPDXID"].as_str().unwrap();
    assert!(related(&doc, derive, "BUILD_DEPENDENCY_OF", libos_id));
    assert!(!related(&doc, libos_id, "STATIC_LINK", derive));

    // pgkraft and its crates built the image; they are not in it.
    let tool = krate(&doc, "pgkraft");
    let tool_id = tool["SPDXID"].as_str().unwrap();
    assert_eq!(tool["versionInfo"], env!("CARGO_PKG_VERSION"));
    assert!(related(&doc, tool_id, "BUILD_TOOL_OF", "SPDXRef-image"));
    let clap = krate(&doc, "clap")["SPDXID"].as_str().unwrap();
    assert!(related(&doc, tool_id, "DEPENDS_ON", clap));
}

/// A program image's SBOM: valid, its time SOURCE_DATE_EPOCH's, the same
/// bytes from two builds, and no host path in it; a bad SOURCE_DATE_EPOCH
/// is refused before any work.
#[test]
fn a_program_sbom_is_reproducible_and_dated_by_source_date_epoch() {
    let recipe = repo().join("recipes/hello.yaml");
    let build = |out: &Path| {
        let o = run(pgkraft()
            .arg("build")
            .arg(&recipe)
            .arg("--out")
            .arg(out)
            .arg("--json")
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        assert!(o.status.success(), "build failed: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        PathBuf::from(v["sbom"].as_str().expect("--json names the SBOM"))
    };
    let a = build(&out_dir().join("sbom-a"));
    let b = build(&out_dir().join("sbom-b"));
    validate(&a);
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap(), "two builds, one SBOM");
    let text = String::from_utf8(bytes).unwrap();
    for host_path in [repo(), out_dir()] {
        assert!(
            !text.contains(host_path.to_str().unwrap()),
            "a host path in the SBOM: {}",
            host_path.display()
        );
    }
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        sha256_of(package(&doc, "SPDXRef-image")),
        sha256_file(&a.with_file_name("hello.img"))
    );
    // The program's source is an input the image was made from.
    let source = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello.c")
        .expect("hello.c is in the SBOM");
    assert_eq!(
        sha256_of(source),
        sha256_file(&repo().join("test-vms/apps/hello.c"))
    );

    let out = out_dir().join("sbom-bad-time");
    let o = run(pgkraft()
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "yesterday"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    has(&stderr(&o), &["SOURCE_DATE_EPOCH", "yesterday"]);
    assert!(!out.join("hello.img").exists() && !out.join("hello.spdx.json").exists());
}
