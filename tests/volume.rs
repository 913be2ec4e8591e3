//! PostgreSQL's data directory on a volume (issue 13): a host directory
//! served by virtio-9p, mounted by the libOS at /data over the image's own
//! cluster. Single-user PostgreSQL writes to it under our runner, a later
//! boot reads it back, and QEMU boots the same image on the same directory
//! and reads what our runner wrote (and the other way round). Through the
//! CLI, `--volume DIR` initializes, locks and checks DIR.

mod common;
use common::serve::{PASSWORD, Serve};
use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// The image's pre-initialized cluster, unpacked into `dest` (mode 0700,
/// as PostgreSQL wants its data directory), with no volume record: a
/// cluster as one made before `--volume` kept records (the runner's API
/// below the CLI serves it as it is).
fn cluster_copy(image: &Path, dest: &Path) {
    let data = std::fs::read(image).unwrap();
    let section = pgkraft::image::format::rootfs_section(&data).expect("a rootfs section");
    let tar = pgkraft::image::format::rootfs_tar(section).expect("a rootfs archive");
    let scratch = tempfile::tempdir().unwrap();
    pgkraft::image::format::unpack_rootfs(&tar, scratch.path()).unwrap();
    let _ = std::fs::remove_dir_all(dest);
    std::fs::rename(scratch.path().join("data"), dest).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).unwrap();
}

const SINGLE: &str = "'--single' '-j' '-D' '/data' 'postgres'";

/// Single-user PostgreSQL under our runner on `volume`: its console.
fn runner(image: &Path, volume: &Path, sql: &str) -> String {
    let cfg = pgkraft::vmm::VmConfig {
        mem_mib: 256,
        cmdline: SINGLE.into(),
        timeout: Some(std::time::Duration::from_secs(120)),
        console: pgkraft::vmm::Console::Capture {
            input: sql.as_bytes().to_vec(),
        },
        net: None,
        signals: None,
        volume: Some(pgkraft::vmm::VolumeConfig::new(volume)),
        hibernate: None,
        vcpu_cpu: None,
    };
    let guest = pgkraft::vmm::run_file(image, &cfg).unwrap();
    let console = String::from_utf8_lossy(&guest.console).into_owned();
    assert_eq!(
        guest.exit,
        pgkraft::vmm::GuestExit::Status(0),
        "our runner: {console}"
    );
    console
}

/// The same under QEMU microvm, the volume served by QEMU's virtio-9p.
fn qemu(image: &Path, volume: &Path, sql: &str) -> String {
    let mut fsdev = std::ffi::OsString::from("local,id=vol,security_model=none,path=");
    fsdev.push(volume);
    let mut cmd = pgkraft::bench::qemu_command(image, 256);
    cmd.args(["-append", SINGLE])
        .args(["-global", "virtio-mmio.force-legacy=false", "-fsdev"])
        .arg(fsdev)
        .args([
            "-device",
            "virtio-9p-device,fsdev=vol,mount_tag=pgkraft-data",
        ]);
    // Ctrl-D ends single-user mode's input on the UART.
    let input = format!("{sql}\x04");
    let out = run_with_input(&mut cmd, input.as_bytes());
    let console = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    // isa-debug-exit: (status << 1) | 1.
    assert_eq!(out.status.code(), Some(1), "QEMU: {console}");
    console
}

fn answer(console: &str, column: &str) -> String {
    let needle = format!("{column} = \"");
    let at = console
        .rfind(&needle)
        .unwrap_or_else(|| panic!("no {column} in: {console}"));
    let rest = &console[at + needle.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn postgres_keeps_its_data_on_a_volume_across_boots_and_vmms() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    cluster_copy(&image, &volume);

    let console = runner(
        &image,
        &volume,
        "CREATE TABLE t (x int, s text);\n\n\
         INSERT INTO t SELECT g, repeat('v', 100) FROM generate_series(1, 20000) g;\n\n\
         SELECT count(*) AS n, sum(x) AS total FROM t;\n\n",
    );
    assert_eq!(answer(&console, "n"), "20000", "{console}");
    // The table is a file of the host directory now, not guest memory.
    let base: u64 = std::fs::read_dir(volume.join("base"))
        .unwrap()
        .flat_map(|db| std::fs::read_dir(db.unwrap().path()).unwrap())
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(base > 2_000_000, "the host's base/ holds {base} bytes");

    // A second boot finds it; so does QEMU, which adds a row.
    let console = runner(
        &image,
        &volume,
        "SELECT count(*) AS n, sum(x) AS total FROM t;\n\n",
    );
    assert_eq!(answer(&console, "total"), "200010000", "{console}");
    let console = qemu(
        &image,
        &volume,
        "SELECT count(*) AS n FROM t;\n\nINSERT INTO t VALUES (0, 'from qemu');\n\n",
    );
    assert_eq!(answer(&console, "n"), "20000", "{console}");
    let console = runner(
        &image,
        &volume,
        "SELECT count(*) AS n FROM t WHERE s = 'from qemu';\n\n",
    );
    assert_eq!(answer(&console, "n"), "1", "{console}");
}

// The volume's life cycle through the real CLI: `--volume DIR` initializes
// a missing or empty DIR from the image, takes it for one runner, and
// refuses what does not belong to the image before anything boots.

/// The volume record pgkraft keeps in DIR.
fn record(volume: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(volume.join(".pgkraft-volume.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The system identifier at the head of `volume`'s global/pg_control.
fn system_id(volume: &Path) -> u64 {
    let bytes = std::fs::read(volume.join("global/pg_control")).unwrap();
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `pgkraft run IMAGE --volume DIR` refused before the guest runs.
fn run_refused(image: &Path, volume: &Path, needles: &[&str]) {
    let o = run(pgkraft()
        .arg("run")
        .arg(image)
        .arg("--volume")
        .arg(volume)
        .arg("--timeout")
        .arg("60"));
    refused(&o, needles);
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A volume made by `image` without booting it (the CLI does the same
/// before it boots), released at once.
fn initialized(image: &Path, volume: &Path) {
    let image = pgkraft::image::Image::open(image).unwrap();
    let v = pgkraft::volume::Volume::open(&image, volume).unwrap();
    assert_eq!(v.state(), pgkraft::volume::State::Initialized);
}

#[test]
fn first_use_initializes_the_volume_and_its_rows_outlive_the_server() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    // Missing: made, beside it and renamed into place.
    let volume = dir.path().join("missing/data");
    std::fs::create_dir(dir.path().join("missing")).unwrap();
    let vol = volume.as_os_str();
    let server = Serve::start(&image, &[OsStr::new("--volume"), vol]);
    let mut c = server.client();
    c.batch_execute(
        "CREATE TABLE kept (id int PRIMARY KEY, v text);
         INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    drop(c);
    server.stop();

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&volume).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let r = record(&volume);
    assert_eq!(r["format"], 1, "{r}");
    assert_eq!(r["postgres_major"], 17, "{r}");
    assert_eq!(r["origin"], "unpacked", "{r}");
    assert_eq!(r["image_sha256"], sha256_of(&image), "{r}");
    assert_eq!(
        r["cluster"]["system_identifier"],
        system_id(&volume).to_string(),
        "{r}"
    );
    // Nothing is left beside the volume.
    assert_eq!(listing(&dir.path().join("missing")), ["data"]);

    // A later run uses what is there (psql this time).
    let server = Serve::start(&image, &[OsStr::new("--volume"), vol]);
    let o = run(Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-c"])
        .arg("SELECT count(*), sum(id) FROM kept")
        .env("PGPASSWORD", PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "1000|500500");
    server.stop();
    assert_eq!(record(&volume), r, "the record is the first run's");
}

#[test]
fn a_second_runner_on_a_volume_in_use_is_refused_naming_the_first() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    let server = Serve::start(&image, &[OsStr::new("--volume"), volume.as_os_str()]);
    let holder = format!(
        "volume {} is in use by pgkraft (pid {})",
        volume.display(),
        server.pid()
    );
    run_refused(&image, &volume, &[&holder]);
    let o = run(pgkraft()
        .arg("smoke")
        .arg(&image)
        .arg("--vm")
        .arg(repo().join("test-vms/server.yaml"))
        .arg("--volume")
        .arg(&volume)
        .arg("--json"));
    refused(&o, &[&holder]);
    let o = run(pgkraft()
        .arg("serve")
        .arg(&image)
        .arg("--publish")
        .arg(format!("127.0.0.1:{}:5432", common::serve::free_port()))
        .arg("--volume")
        .arg(&volume));
    refused(&o, &[&holder]);
    // The first one did not notice.
    let mut c = server.client();
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    drop(c);
    server.stop();
}

#[test]
fn volumes_of_another_major_or_cluster_or_no_cluster_are_refused_untouched() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let fix = "fix: use a volume made by an image of PostgreSQL 17, or a new empty directory";

    // A volume a PostgreSQL 15 image made.
    let v15 = dir.path().join("v15");
    initialized(&postgres_image("15"), &v15);
    let before = listing(&v15);
    let holds = format!("volume {} holds a PostgreSQL 15 cluster", v15.display());
    let is17 = format!("image {} is PostgreSQL 17", image.display());
    run_refused(&image, &v15, &[&holds, &is17, fix]);
    assert_eq!(listing(&v15), before);

    // The same with PG_VERSION doctored, and no record to go by.
    let doctored = dir.path().join("doctored");
    initialized(&image, &doctored);
    std::fs::remove_file(doctored.join(".pgkraft-volume.json")).unwrap();
    std::fs::write(doctored.join("PG_VERSION"), "16\n").unwrap();
    let holds = format!(
        "volume {} holds a PostgreSQL 16 cluster",
        doctored.display()
    );
    run_refused(&image, &doctored, &[&holds, &is17, fix]);
    assert!(!doctored.join(".pgkraft-volume.json").exists());

    // Another cluster of the same major: its system identifier differs.
    let other = dir.path().join("other");
    initialized(&image, &other);
    let theirs = system_id(&other);
    let mut control = std::fs::read(other.join("global/pg_control")).unwrap();
    control[..8].copy_from_slice(&(theirs ^ 1).to_le_bytes());
    std::fs::write(other.join("global/pg_control"), control).unwrap();
    std::fs::remove_file(other.join(".pgkraft-volume.json")).unwrap();
    let found = format!(
        "volume {} holds another cluster than image {}: system identifier {} in its \
         global/pg_control, {theirs} in the image's",
        other.display(),
        image.display(),
        theirs ^ 1
    );
    run_refused(&image, &other, &[&found, "a new empty directory"]);

    // A user's directory with no cluster: nothing written into it.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "mine").unwrap();
    let none = format!(
        "volume {}: the directory is not empty and holds no PostgreSQL cluster (no PG_VERSION; \
         it holds todo.txt)",
        notes.display()
    );
    run_refused(&image, &notes, &[&none, "a new empty directory"]);
    assert_eq!(listing(&notes), ["todo.txt"]);

    // A record that cannot be read.
    let garbled = dir.path().join("garbled");
    initialized(&image, &garbled);
    std::fs::write(garbled.join(".pgkraft-volume.json"), "{\"format\": 1,").unwrap();
    let bad = format!(
        "volume {}: its record .pgkraft-volume.json is unreadable",
        garbled.display()
    );
    run_refused(
        &image,
        &garbled,
        &[&bad, "fix: restore the file, or remove it"],
    );
}

/// A cluster made before volumes were recorded (a copy of the image's, as
/// `cluster_copy` makes) is checked and adopted; `smoke --volume` runs its
/// checks on it.
#[test]
fn a_cluster_without_a_record_is_adopted_and_smoked_on() {
    if !kvm_available() {
        return;
    }
    let image = postgres_image("17");
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("data");
    cluster_copy(&image, &volume);
    let (report, status) = smoke_json(
        &image,
        &repo().join("test-vms/server.yaml"),
        &["--volume", volume.to_str().unwrap()],
        &[("PGKRAFT_PASSWORD", PASSWORD)],
    );
    assert_eq!(status, Some(0), "{report}");
    let r = record(&volume);
    assert_eq!(r["origin"], "adopted", "{r}");
    assert_eq!(
        r["cluster"]["system_identifier"],
        system_id(&volume).to_string()
    );
    // The checks' table is in the volume now: single-user mode sees it.
    let console = runner(&image, &volume, "SELECT count(*) AS n FROM items;\n\n");
    assert!(
        answer(&console, "n").parse::<u32>().unwrap() >= 3,
        "{console}"
    );
}
