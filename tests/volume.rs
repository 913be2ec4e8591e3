//! PostgreSQL's data directory on a volume (issue 13): a host directory
//! served by virtio-9p, mounted by the libOS at /data over the image's own
//! cluster. Single-user PostgreSQL writes to it under our runner, a later
//! boot reads it back, and QEMU boots the same image on the same directory
//! and reads what our runner wrote (and the other way round).

mod common;
use common::*;
use std::path::Path;

/// The image's pre-initialized cluster, unpacked into `dest` (mode 0700,
/// as PostgreSQL wants its data directory). The host side that
/// initializes a volume from the image is `--volume`'s job; this stands in
/// for it.
fn cluster_copy(image: &Path, dest: &Path) {
    let data = std::fs::read(image).unwrap();
    let section = pgkraft::image::format::rootfs_section(&data).expect("a rootfs section");
    let tar = pgkraft::image::format::rootfs_tar(section).expect("a rootfs archive");
    let scratch = tempfile::tempdir().unwrap();
    tar::Archive::new(&*tar).unpack(scratch.path()).unwrap();
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
