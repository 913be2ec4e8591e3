//! `pgkraft package IMAGE --oci DIR`: the OCI image layout read by a real
//! OCI tool (Debian's skopeo) and round-tripped through a real registry
//! (Debian's docker-registry, started here on 127.0.0.1 only), keeping the
//! digest; and its refusals of bad input.

mod common;
use common::*;
use pgkraft::build::cache::sha256_hex;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn package(image: &Path, dir: &Path, extra: &[&str]) -> Value {
    let o = run(pgkraft()
        .arg("package")
        .arg(image)
        .arg("--oci")
        .arg(dir)
        .arg("--json")
        .args(extra));
    assert!(o.status.success(), "pgkraft package failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let o = run(Command::new("skopeo").args(args));
    assert!(
        o.status.success(),
        "skopeo {args:?} failed (is skopeo installed? ci/bootstrap.sh): {}",
        stderr(&o)
    );
    o.stdout
}

/// The single manifest descriptor `tag` names in the layout's index.json.
fn indexed(dir: &Path, tag: &str) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let found: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{index}");
    found[0].clone()
}

fn blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
}

/// Debian's docker-registry as a child process, killed (by its pid) when
/// dropped, also when the test panics.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        // An ephemeral port the kernel hands out, given back for the
        // registry to take (nothing else here binds loopback ports).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: pgkraft-test\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "start /usr/bin/docker-registry (apt package docker-registry; ci/bootstrap.sh)",
            );
        let mut r = Registry {
            child,
            port,
            _dir: dir,
        };
        r.wait_listening();
        r
    }

    /// Waits until the registry accepts connections; panics with its log
    /// if it exits first, or never listens (a bound on the wait, not a
    /// figure under test).
    fn wait_listening(&mut self) {
        let log = |dir: &Path| std::fs::read_to_string(dir.join("registry.log"));
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "docker-registry exited ({status}) before listening: {:?}",
                    log(self._dir.path())
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "docker-registry runs but does not listen on 127.0.0.1:{}: {:?}",
            self.port,
            log(self._dir.path())
        );
    }

    /// The addresses the registry listens on (its sockets in /proc/net/tcp{,6}).
    fn listening_addresses(&self) -> Vec<String> {
        let pid = self.child.id();
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let mut found = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state (0A: LISTEN), inode.
                if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                    found.push(f[1].to_string());
                }
            }
        }
        found
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_postgres_artifact_is_read_by_skopeo_and_round_trips_through_a_registry() {
    let image = postgres_image("17");
    let image_bytes = std::fs::read(&image).unwrap();
    let image_sha = sha256_hex(&image_bytes);
    let manifest_file = image.with_file_name("postgres-17.manifest.json");
    let recipe_sha = {
        let m: Value = serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
        m["build"]["recipe_sha256"].as_str().unwrap().to_string()
    };
    let work = tempfile::tempdir_in(out_dir()).unwrap();
    let layout = work.path().join("layout");
    let out = package(&image, &layout, &[]);
    let tag = pgkraft::catalog::pin(17).unwrap().version;
    assert_eq!(out["tag"], tag, "the default tag is the PostgreSQL version");
    let digest = out["digest"].as_str().unwrap().to_string();
    assert_eq!(indexed(&layout, tag)["digest"], digest.as_str());

    // Deterministic: the same image packaged again gives the same bytes.
    let again = work.path().join("again");
    assert_eq!(package(&image, &again, &[])["digest"], digest.as_str());
    for f in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(layout.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }

    // skopeo reads the layout. (Its plain `inspect` parses an image's
    // config and refuses artifacts; --raw shows the manifest itself.)
    let oci_ref = format!("oci:{}:{tag}", layout.display());
    let raw = skopeo(&["inspect", "--raw", &oci_ref]);
    assert_eq!(format!("sha256:{}", sha256_hex(&raw)), digest);
    // Without a tag too: the layout's one manifest.
    let untagged = skopeo(&["inspect", "--raw", &format!("oci:{}", layout.display())]);
    assert_eq!(untagged, raw);
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.pgkraft.image.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let a = &m["annotations"];
    assert_eq!(a["org.opencontainers.image.version"], tag);
    assert_eq!(a["dev.pgkraft.postgres.version"], tag);
    assert_eq!(a["dev.pgkraft.image.sha256"], image_sha.as_str());
    assert_eq!(a["dev.pgkraft.recipe.sha256"], recipe_sha.as_str());
    assert_eq!(
        a["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    let layers = m["layers"].as_array().unwrap();
    let titled = |t: &str| {
        layers
            .iter()
            .find(|l| l["annotations"]["org.opencontainers.image.title"] == t)
            .unwrap_or_else(|| panic!("no layer titled {t}: {m}"))
    };
    assert_eq!(
        titled("postgres-17.img")["digest"],
        format!("sha256:{image_sha}")
    );
    assert_eq!(
        titled("postgres-17.manifest.json")["digest"],
        format!(
            "sha256:{}",
            sha256_hex(&std::fs::read(&manifest_file).unwrap())
        )
    );
    assert_eq!(
        titled("postgres-17.spdx.json")["mediaType"],
        "application/spdx+json"
    );

    // Through a registry on loopback and back into another layout.
    let registry = Registry::start();
    let listening = registry.listening_addresses();
    assert!(!listening.is_empty(), "the registry listens");
    for addr in &listening {
        // 127.0.0.1 in /proc/net/tcp's little-endian hex.
        assert!(
            addr.starts_with("0100007F:"),
            "the registry listens beyond loopback: {addr}"
        );
    }
    let remote = format!(
        "docker://127.0.0.1:{}/pgkraft/postgres-17:{tag}",
        registry.port
    );
    skopeo(&["copy", "--dest-tls-verify=false", &oci_ref, &remote]);
    let remote_raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote]);
    assert_eq!(format!("sha256:{}", sha256_hex(&remote_raw)), digest);
    let back = work.path().join("back");
    let back_ref = format!("oci:{}:{tag}", back.display());
    skopeo(&["copy", "--src-tls-verify=false", &remote, &back_ref]);
    drop(registry);

    let entry = indexed(&back, tag);
    assert_eq!(
        entry["digest"],
        digest.as_str(),
        "the round trip keeps the digest"
    );
    let back_manifest: Value = serde_json::from_slice(&blob(&back, &digest)).unwrap();
    let image_layer = back_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.pgkraft.image.v1.elf")
        .unwrap();
    let pulled = blob(&back, image_layer["digest"].as_str().unwrap());
    assert_eq!(sha256_hex(&pulled), image_sha, "the image comes back whole");
}

/// A second tag goes into an existing layout next to the first; the same
/// tag again replaces its entry.
#[test]
fn an_existing_layout_keeps_its_other_tags() {
    let image = image("hello");
    let work = tempfile::tempdir_in(out_dir()).unwrap();
    let layout = work.path().join("layout");
    let first = package(&image, &layout, &[]);
    assert_eq!(first["tag"], "hello", "no PostgreSQL: the image's name");
    let second = package(&image, &layout, &["--tag", "v1"]);
    assert_eq!(second["other_tags"], serde_json::json!(["hello"]));
    let again = package(&image, &layout, &["--tag", "v1"]);
    assert_eq!(again["digest"], second["digest"]);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", layout.display())]);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&raw)),
        second["digest"].as_str().unwrap()
    );
}

#[test]
fn bad_input_is_refused_naming_the_path_and_the_fix() {
    let image = image("hello");
    let work = tempfile::tempdir_in(out_dir()).unwrap();
    let cmd = |image: &Path, dir: &Path, extra: &[&str]| {
        run(pgkraft()
            .arg("package")
            .arg(image)
            .arg("--oci")
            .arg(dir)
            .args(extra))
    };
    let layout = work.path().join("layout");

    // A directory with other things in it is not taken over.
    let busy = work.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    refused(
        &cmd(&image, &busy, &[]),
        &[
            busy.to_str().unwrap(),
            "not an OCI image layout",
            "new or empty directory",
        ],
    );
    assert_eq!(
        std::fs::read_dir(&busy).unwrap().count(),
        1,
        "busy untouched"
    );

    // A file is not a directory.
    let file = busy.join("notes.txt");
    refused(
        &cmd(&image, &file, &[]),
        &[file.to_str().unwrap(), "not a directory"],
    );

    // Not an image.
    refused(
        &cmd(&file, &layout, &[]),
        &[file.to_str().unwrap(), "not an ELF image"],
    );
    let missing = work.path().join("missing.img");
    refused(
        &cmd(&missing, &layout, &[]),
        &["missing.img", "pgkraft build"],
    );

    // A bad tag.
    refused(
        &cmd(&image, &layout, &["--tag", "a/b"]),
        &["--tag", "a/b", "such as"],
    );

    // An image without its SBOM next to it, and one whose manifest is
    // another build's.
    let lone = work.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    let lone_img = lone.join("hello.img");
    std::fs::copy(&image, &lone_img).unwrap();
    std::fs::copy(
        image.with_file_name("hello.manifest.json"),
        lone.join("hello.manifest.json"),
    )
    .unwrap();
    refused(
        &cmd(&lone_img, &layout, &[]),
        &["hello.spdx.json", "is missing", "pgkraft build"],
    );
    let mut stale: Value = serde_json::from_slice(
        &std::fs::read(image.with_file_name("hello.manifest.json")).unwrap(),
    )
    .unwrap();
    stale["image"]["sha256"] = "0".repeat(64).into();
    std::fs::write(
        lone.join("hello.manifest.json"),
        serde_json::to_vec(&stale).unwrap(),
    )
    .unwrap();
    refused(
        &cmd(&lone_img, &layout, &[]),
        &["hello.manifest.json", "different builds"],
    );

    // A bad SOURCE_DATE_EPOCH.
    let o = run(pgkraft()
        .arg("package")
        .arg(&image)
        .arg("--oci")
        .arg(&layout)
        .env("SOURCE_DATE_EPOCH", "soon"));
    refused(&o, &["SOURCE_DATE_EPOCH", "soon"]);
    assert!(!layout.exists(), "nothing written for refused input");
}
