//! Images built with `cluster.preinit: false` make their cluster at first
//! boot (issue 13, item 5): the image replays the initdb pgkraft recorded
//! at build time. Without a volume it does so in memory at every boot; on
//! an empty volume once (under QEMU's virtio-9p too), and later boots use
//! what is there. Either way the result is a real cluster: extensions are
//! created, the superuser logs in with its SCRAM-SHA-256 password, and the
//! image carries no cluster and no plain-text password.

mod common;
use common::serve::{PASSWORD, Serve};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
const INITIALIZING: &str = "pgkraft first boot: initializing a cluster in /data";
const READY: &str = "pgkraft first boot: cluster ready";

/// recipes/postgres-17.yaml without a pre-made cluster, with the
/// extensions a new user tried; built once per test process.
fn image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| build("17")).clone()
}

/// recipes/postgres-<major>.yaml with `preinit: false` and hstore and
/// pg_trgm.
fn build(major: &str) -> PathBuf {
    let name = format!("first-boot-{major}");
    let recipe = stock_recipe_as(major, &name)
        .replace(
            "extensions: [plpgsql]",
            "extensions: [plpgsql, hstore, pg_trgm]",
        )
        .replace("preinit: true", "preinit: false");
    assert_eq!(recipe.matches(&name).count(), 1);
    assert!(recipe.contains("hstore") && recipe.contains("preinit: false"));
    let dir = out_dir().join("first-boot");
    std::fs::create_dir_all(&dir).unwrap();
    let recipe_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&recipe_path, recipe).unwrap();
    let o = run(pgkraft()
        .arg("build")
        .arg(&recipe_path)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--json")
        .env("PGKRAFT_PASSWORD", PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    PathBuf::from(v["image"].as_str().unwrap())
}

/// The image's rootfs files: (path, contents).
fn rootfs_files(image: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let data = std::fs::read(image).unwrap();
    let section = pgkraft::image::format::rootfs_section(&data).expect("a rootfs section");
    let tar = pgkraft::image::format::rootfs_tar(section).expect("a rootfs archive");
    let mut archive = tar::Archive::new(&*tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = format!("/{}", e.path().unwrap().display());
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (path.trim_end_matches('/').to_string(), bytes)
        })
        .collect()
}

fn one(c: &mut postgres::Client, sql: &str) -> String {
    c.query_one(sql, &[]).unwrap().get::<_, String>(0)
}

/// What a new user does first: the extensions and a table, through a
/// client that authenticated with the superuser's password by SCRAM.
fn use_the_cluster(server: &Serve) {
    let mut c = server.client();
    c.batch_execute(
        "CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm;
         CREATE TABLE kept (id int PRIMARY KEY, h hstore);
         INSERT INTO kept SELECT g, hstore('k', g::text) FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    assert_eq!(one(&mut c, "SELECT (h -> 'k') FROM kept WHERE id = 7"), "7");
    assert_eq!(
        one(
            &mut c,
            "SELECT similarity('first boot', 'first boat')::text"
        ),
        "0.5714286"
    );
    assert_eq!(
        one(
            &mut c,
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        "postgres,template0,template1"
    );
    // The verifier the image's plan set: SCRAM, with the build's salt.
    let verifier = one(
        &mut c,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'",
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(
        server.client_as("wrong-password").is_err(),
        "a wrong password must be refused"
    );
}

fn system_identifier(server: &Serve) -> String {
    let mut c = server.client();
    one(
        &mut c,
        "SELECT system_identifier::text FROM pg_control_system()",
    )
}

#[test]
fn the_image_carries_the_recorded_initdb_and_neither_a_cluster_nor_the_password() {
    let files = rootfs_files(&image());
    assert!(
        !files.iter().any(|(p, _)| p.starts_with("/data")),
        "no cluster in the image"
    );
    let plan: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with("/usr/local/pgsql/share/pgkraft-first-boot/"))
        .collect();
    assert!(!plan.is_empty(), "the plan is in the image");
    for (path, bytes) in &files {
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "{path} holds the plain-text password"
        );
    }
    let text = |name: &str| {
        let (_, b) = plan
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in the plan"));
        String::from_utf8_lossy(b).into_owned()
    };
    let steps = text("/plan");
    assert!(steps.starts_with("exec /usr/local/pgsql/bin/postgres\ndata /data\n"));
    assert!(steps.contains("mkdir global\n"), "{steps}");
    assert!(steps.contains("write PG_VERSION "), "{steps}");
    assert!(steps.contains("write base/1/PG_VERSION "), "{steps}");
    assert!(steps.contains(" --boot "), "{steps}");
    assert!(steps.contains(" --single "), "{steps}");
    let sql = text("/input-2");
    assert!(sql.contains("PASSWORD E'SCRAM-SHA-256$4096:"));
    assert!(sql.contains("FROM E'/usr/local/pgsql/share/sql_features.txt'"));
    assert!(!sql.contains("pg_import_system_collations"));
    // initdb's bootstrap input and SQL scripts are in the plan, not in
    // the share directory.
    assert!(
        !files
            .iter()
            .any(|(p, _)| p.ends_with("/postgres.bki") || p.ends_with("/system_views.sql"))
    );
}

#[test]
fn without_a_volume_every_boot_makes_its_cluster_in_memory() {
    if !kvm_available() {
        return;
    }
    let image = image();
    let server = Serve::start(&image, &[]);
    use_the_cluster(&server);
    let first = system_identifier(&server);
    let log = server.stop();
    assert!(log.contains(INITIALIZING) && log.contains(READY), "{log}");

    // A new boot, a new cluster: what the last one held is gone.
    let server = Serve::start(&image, &[]);
    let mut c = server.client();
    let n = c
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'kept'", &[])
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(n, 0);
    drop(c);
    assert_ne!(system_identifier(&server), first, "each cluster is new");
    let log = server.stop();
    assert!(log.contains(INITIALIZING), "{log}");
}

#[test]
fn an_empty_volume_is_initialized_at_first_boot_and_used_after() {
    if !kvm_available() {
        return;
    }
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    std::fs::create_dir(&volume).unwrap();
    // As a user might make it: the first boot makes it the owner's alone.
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755)).unwrap();

    let server = Serve::start(&image, &["--volume".as_ref(), volume.as_os_str()]);
    use_the_cluster(&server);
    let id = system_identifier(&server);
    let log = server.stop();
    assert!(log.contains(INITIALIZING) && log.contains(READY), "{log}");
    let mode = std::fs::metadata(&volume).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory's mode");
    assert_eq!(
        std::fs::read_to_string(volume.join("PG_VERSION")).unwrap(),
        "17\n"
    );
    assert!(volume.join("base/1/PG_VERSION").is_file());
    assert!(!volume.join("pgkraft-first-boot.incomplete").exists());

    // The second boot uses the cluster as it is.
    let server = Serve::start(&image, &["--volume".as_ref(), volume.as_os_str()]);
    let mut c = server.client();
    assert_eq!(one(&mut c, "SELECT sum(id)::text FROM kept"), "500500");
    assert_eq!(one(&mut c, "SELECT (h -> 'k') FROM kept WHERE id = 9"), "9");
    drop(c);
    assert_eq!(system_identifier(&server), id, "the same cluster");
    let log = server.stop();
    assert!(!log.contains(INITIALIZING), "initialized again: {log}");
}

#[test]
fn a_volume_that_is_neither_empty_nor_a_cluster_is_left_alone() {
    if !kvm_available() {
        return;
    }
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let boot = |volume: &Path| {
        run(pgkraft()
            .arg("run")
            .arg(&image)
            .arg("--timeout")
            .arg("60")
            .arg("--volume")
            .arg(volume))
    };

    let someones = dir.path().join("someones");
    std::fs::create_dir(&someones).unwrap();
    std::fs::write(someones.join("notes.txt"), "mine").unwrap();
    // pgkraft refuses it before the guest runs (src/volume); the image's
    // own check ("/data is neither empty nor a cluster") guards it under
    // another VMM.
    let o = boot(&someones);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    has(
        &stderr(&o),
        &["is not empty and holds no PostgreSQL cluster", "notes.txt"],
    );
    assert_eq!(
        std::fs::read_dir(&someones).unwrap().count(),
        1,
        "nothing was added"
    );

    // A first boot that stopped half way left its marker: the volume is
    // still the image's to initialize (its record says so), and the image
    // refuses it. The state is made by a whole first boot (under
    // `postgres --version`) and the marker put back.
    let half = dir.path().join("half");
    std::fs::create_dir(&half).unwrap();
    let o = run(pgkraft()
        .arg("run")
        .arg(&image)
        .args(["--timeout", "120", "--volume"])
        .arg(&half)
        .args(["--", "--version"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(half.join("PG_VERSION").is_file());
    std::fs::write(half.join("pgkraft-first-boot.incomplete"), "").unwrap();
    let o = boot(&half);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    has(
        &format!("{}{}", stdout(&o), stderr(&o)),
        &["first boot stopped before it was complete"],
    );
}

/// PostgreSQL 15's initdb is recorded and replayed the same way; the
/// single-user checks (tables, an index, a sort that spills, plpgsql, the
/// recipe's settings) pass on the cluster its first boot made.
#[test]
fn postgres_15_makes_its_cluster_at_first_boot_too() {
    makes_its_cluster_at_first_boot("15");
}

/// PostgreSQL 18's initdb (data checksums on by default) is recorded and
/// replayed the same way, and the single-user checks pass on its cluster.
#[test]
fn postgres_18_makes_its_cluster_at_first_boot_too() {
    makes_its_cluster_at_first_boot("18");
}

/// The single-user checks pass on the cluster `major`'s first boot made.
fn makes_its_cluster_at_first_boot(major: &str) {
    if !kvm_available() {
        return;
    }
    let image = build(major);
    let (report, code) = smoke_json(&image, &repo().join("test-vms/single-user.yaml"), &[], &[]);
    assert_eq!(code, Some(0), "{report}");
    let console = report["console"].as_str().unwrap();
    assert!(
        console.contains(INITIALIZING) && console.contains(READY),
        "{console}"
    );
}

/// QEMU's own virtio-9p device serves the empty volume: the same image
/// makes its cluster there, and our runner then boots on it as it is.
#[test]
fn qemu_makes_the_cluster_on_a_volume_and_our_runner_uses_it() {
    if !kvm_available() {
        return;
    }
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    std::fs::create_dir(&volume).unwrap();
    let single = "'--single' '-j' '-D' '/data' 'postgres'";

    let mut fsdev = std::ffi::OsString::from("local,id=vol,security_model=none,path=");
    fsdev.push(&volume);
    let mut qemu = pgkraft::bench::qemu_command(&image, 512);
    qemu.args(["-append", single])
        .args(["-global", "virtio-mmio.force-legacy=false", "-fsdev"])
        .arg(fsdev)
        .args([
            "-device",
            "virtio-9p-device,fsdev=vol,mount_tag=pgkraft-data",
        ]);
    // Ctrl-D ends single-user mode's input on the UART.
    let out = run_with_input(
        &mut qemu,
        b"CREATE TABLE made_under_qemu AS SELECT 42 AS x;\n\x04",
    );
    let console = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    // isa-debug-exit: (status << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "QEMU: {console}");
    assert!(
        console.contains(INITIALIZING) && console.contains(READY),
        "{console}"
    );

    let cfg = pgkraft::vmm::VmConfig {
        mem_mib: 512,
        cmdline: single.into(),
        timeout: Some(Duration::from_secs(120)),
        console: pgkraft::vmm::Console::Capture {
            input: b"SELECT x FROM made_under_qemu;\n".to_vec(),
        },
        net: None,
        signals: None,
        volume: Some(pgkraft::vmm::VolumeConfig::new(&volume)),
        hibernate: None,
        vcpu_cpu: None,
    };
    let guest = pgkraft::vmm::run_file(&image, &cfg).unwrap();
    let console = String::from_utf8_lossy(&guest.console).into_owned();
    assert_eq!(guest.exit, pgkraft::vmm::GuestExit::Status(0), "{console}");
    assert!(console.contains("x = \"42\""), "{console}");
    assert!(!console.contains(INITIALIZING), "{console}");
}
