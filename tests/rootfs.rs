//! build::rootfs: determinism (umask, file times), SOURCE_DATE_EPOCH, modes,
//! refused file kinds, long names, zstd.
//!
//! The umask and the environment belong to the whole process, and changing
//! them in a test would race with the others; the tests that need them run
//! this test binary again as a child with the umask or variable set
//! (`sh -c 'umask 077; exec ...'`), selecting one `child_*` test, which does
//! nothing unless it finds its marker variable.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use pgkraft::build::cache::{self, Cache};
use pgkraft::build::rootfs::{self, Compression, RootfsError, RootfsOptions};
use pgkraft::build::rootfs_index;
use pgkraft::build::select::{Reason, Selected};
use pgkraft_abi::rootfs_index::ChunkRef;

const CHILD_DIR: &str = "PGKRAFT_ROOTFS_TEST_CHILD_DIR";
const CHILD_MTIME: &str = "PGKRAFT_ROOTFS_TEST_CHILD_MTIME";

fn entry(path: &str, source: &Path, mode: Option<u32>) -> Selected {
    Selected {
        path: PathBuf::from(path),
        source: source.to_path_buf(),
        mode,
        reason: Reason::DataDirectory,
    }
}

/// A small tree: share-like files written plainly (their modes follow the
/// umask, as `zic` output does) but given an image mode, and a cluster-like
/// directory with explicit modes (as initdb sets them), a symlink, a long
/// path and a long link target. Every file's mtime is `mtime`.
fn make_input(root: &Path, mtime: SystemTime) -> Vec<Selected> {
    let share = root.join("share");
    let data = root.join("data");
    let long_dir = data.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&share).unwrap();
    fs::create_dir_all(&long_dir).unwrap();
    fs::create_dir_all(data.join("empty")).unwrap();
    fs::write(share.join("UTC"), b"TZif2 zone").unwrap();
    fs::write(share.join("Default"), b"UTC 0\n".repeat(100)).unwrap();
    fs::write(data.join("PG_VERSION"), b"17\n").unwrap();
    fs::write(data.join("pg_control"), vec![7u8; 9000]).unwrap();
    fs::write(long_dir.join("f".repeat(80)), b"deep").unwrap();
    let long_target = format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(80));
    symlink(&long_target, data.join("long_link")).unwrap();
    symlink("PG_VERSION", data.join("short_link")).unwrap();
    let d = format!("data/{}", "d".repeat(60));
    let e = format!("{d}/{}", "e".repeat(60));
    let f = format!("{e}/{}", "f".repeat(80));
    for (p, mode) in [
        ("data", 0o700),
        ("data/empty", 0o750),
        ("data/PG_VERSION", 0o600),
        ("data/pg_control", 0o640),
        (&d, 0o700),
        (&e, 0o700),
        (&f, 0o600),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    for p in [
        "share/UTC",
        "share/Default",
        "data/PG_VERSION",
        "data/pg_control",
    ] {
        let f = fs::File::options().write(true).open(root.join(p)).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let long_rel = format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(80));
    vec![
        entry(
            "/usr/local/pgsql/share/timezone/UTC",
            &share.join("UTC"),
            Some(0o644),
        ),
        entry(
            "/usr/local/pgsql/share/timezonesets/Default",
            &share.join("Default"),
            Some(0o644),
        ),
        entry("/data", &data, None),
        entry("/data/PG_VERSION", &data.join("PG_VERSION"), None),
        entry("/data/pg_control", &data.join("pg_control"), None),
        entry("/data/empty", &data.join("empty"), None),
        entry("/data/long_link", &data.join("long_link"), None),
        entry("/data/short_link", &data.join("short_link"), None),
        entry(
            &format!("/data/{}", "d".repeat(60)),
            &data.join("d".repeat(60)),
            None,
        ),
        entry(
            &format!("/data/{}/{}", "d".repeat(60), "e".repeat(60)),
            &long_dir,
            None,
        ),
        entry(&format!("/data/{long_rel}"), &data.join(&long_rel), None),
    ]
}

/// One entry of a rootfs index, read the way the libOS reads it
/// (pgkraft_abi::rootfs_index::Decoder, as libos/src/fs/index.rs does).
#[derive(Debug)]
struct IndexEntry {
    kind: u8,
    path: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
    mtime: i64,
    offset: u64,
    size: u64,
    /// For a zstd file: its frames.
    chunks: Option<Vec<ChunkRef>>,
}

fn decode_index(ix: &[u8]) -> Vec<IndexEntry> {
    let mut records = pgkraft_abi::rootfs_index::Decoder::new(ix).expect("no index magic");
    assert_eq!(&ix[12..16], [0; 4], "reserved");
    let mut out = Vec::new();
    for r in records.by_ref() {
        let r = r.expect("a damaged index record");
        out.push(IndexEntry {
            kind: r.kind,
            path: r.path,
            link: r.link.to_vec(),
            mode: r.mode,
            mtime: r.mtime,
            offset: r.offset,
            size: r.size,
            chunks: r.chunks.map(Iterator::collect),
        });
    }
    assert_eq!(records.position(), ix.len(), "bytes after the last entry");
    out
}

/// Decodes `index` and checks it against `archive` (plain or zstd) entry by
/// entry: every fact the tar header holds, and each file's bytes as the
/// libOS would get them, lent from the plain archive or inflated chunk by
/// chunk from the zstd one.
fn check_index(index: &[u8], archive: &[u8]) {
    let zstd = archive.starts_with(&zstd::zstd_safe::MAGICNUMBER.to_le_bytes());
    let tar_bytes = if zstd {
        zstd::decode_all(archive).unwrap()
    } else {
        archive.to_vec()
    };
    let decoded = decode_index(index);
    let mut tar = tar::Archive::new(&tar_bytes[..]);
    let mut n = 0;
    // Every regular file's bytes so far: a link entry is a copy of one.
    let mut contents: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
    for (e, ix) in tar.entries().unwrap().zip(&decoded) {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&ix.path).into_owned();
        assert_eq!(&*e.path_bytes(), &ix.path[..]);
        let link = e
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let (kind, want) = match e.header().entry_type() {
            tar::EntryType::Regular => {
                let mut want = Vec::new();
                e.read_to_end(&mut want).unwrap();
                contents.insert(ix.path.clone(), want.clone());
                (0, want)
            }
            tar::EntryType::Directory => (1, Vec::new()),
            tar::EntryType::Symlink => (2, Vec::new()),
            // A copy: indexed as a file over the first one's data.
            tar::EntryType::Link => {
                let want = contents
                    .get(&link)
                    .unwrap_or_else(|| panic!("{name}: a copy of no earlier file"))
                    .clone();
                (0, want)
            }
            other => panic!("{name}: unexpected {other:?}"),
        };
        assert_eq!(ix.kind, kind, "{name}");
        let copy = e.header().entry_type() == tar::EntryType::Link;
        assert_eq!(if copy { Vec::new() } else { link }, ix.link, "{name}");
        assert_eq!(ix.mode, e.header().mode().unwrap(), "{name}");
        assert_eq!(ix.mtime, e.header().mtime().unwrap() as i64, "{name}");
        assert_eq!(ix.size, want.len() as u64, "{name}");
        let got = match &ix.chunks {
            None if zstd && kind == 0 && ix.size > 0 => panic!("{name}: zstd file without chunks"),
            None => {
                if zstd {
                    assert_eq!(ix.offset, 0, "{name}: no plain offset in a zstd archive");
                }
                let at = ix.offset as usize;
                archive[at..at + ix.size as usize].to_vec()
            }
            Some(chunks) => {
                assert!(zstd, "{name}: chunks in a plain archive");
                let mut got = Vec::new();
                for c in chunks {
                    let frame = &archive[c.offset as usize..][..c.len as usize];
                    let inflated =
                        zstd::bulk::decompress(frame, pgkraft_abi::ROOTFS_ZSTD_CHUNK).unwrap();
                    assert!(c.holds as usize <= inflated.len(), "{name}");
                    got.extend_from_slice(&inflated[..c.holds as usize]);
                }
                got
            }
        };
        assert!(got == want, "{name}: the index's data is not the file's");
        n += 1;
    }
    assert_eq!(n, decoded.len(), "one index entry per archive entry");
}

fn opts(compression: Compression, mtime: u64) -> RootfsOptions {
    RootfsOptions { compression, mtime }
}

/// Runs one `child_*` test of this binary with `umask` and extra variables.
fn run_child(test: &str, umask: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child {test} (umask {umask}) failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "child {test} did not run:\n{stdout}"
    );
}

/// Child side of `same_input_same_bytes_whatever_the_umask_and_file_times`
/// (ignored, so that it is not counted as a test of its own).
#[test]
#[ignore = "run by same_input_same_bytes_whatever_the_umask_and_file_times in a child process"]
fn child_archive() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let secs: u64 = std::env::var(CHILD_MTIME).unwrap().parse().unwrap();
    let input = make_input(
        &dir.join("in"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    );
    for (name, c) in [
        ("rootfs.tar", Compression::None),
        ("rootfs.tar.zst", Compression::Zstd { level: 3 }),
    ] {
        rootfs::write(&input, &opts(c, 0), &dir.join(name)).unwrap();
    }
}

#[test]
fn same_input_same_bytes_whatever_the_umask_and_file_times() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pa = a.path().to_str().unwrap();
    let pb = b.path().to_str().unwrap();
    run_child(
        "child_archive",
        "022",
        &[(CHILD_DIR, pa), (CHILD_MTIME, "1000000000")],
    );
    run_child(
        "child_archive",
        "077",
        &[(CHILD_DIR, pb), (CHILD_MTIME, "1600000000")],
    );
    // The inputs really differ on disk.
    let mode = |d: &Path| {
        fs::metadata(d.join("in/share/UTC"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_ne!(mode(a.path()), mode(b.path()));
    for name in ["rootfs.tar", "rootfs.tar.zst"] {
        let x = fs::read(a.path().join(name)).unwrap();
        let y = fs::read(b.path().join(name)).unwrap();
        assert!(x == y, "{name} differs between the two builds");
    }
}

/// Child side of `source_date_epoch_is_honoured` (ignored, so that it is
/// not counted as a test of its own).
#[test]
#[ignore = "run by source_date_epoch_is_honoured in a child process"]
fn child_source_date_epoch() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let input = make_input(&dir.join("in"), SystemTime::now());
    let sde = std::env::var(rootfs::SOURCE_DATE_EPOCH).unwrap();
    match RootfsOptions::from_env(Compression::None) {
        Ok(o) => {
            assert_eq!(o.mtime.to_string(), sde);
            let made = rootfs::write(&input, &o, &dir.join("rootfs.tar")).unwrap();
            let mut ar = tar::Archive::new(fs::File::open(&made.path).unwrap());
            for e in ar.entries().unwrap() {
                assert_eq!(e.unwrap().header().mtime().unwrap(), o.mtime);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(sde, "yesterday", "unexpected error: {msg}");
            assert!(
                msg.starts_with("SOURCE_DATE_EPOCH=\"yesterday\" is not a whole"),
                "{msg}"
            );
        }
    }
}

#[test]
fn source_date_epoch_is_honoured() {
    for value in ["1700000000", "0", "yesterday"] {
        let d = tempfile::tempdir().unwrap();
        run_child(
            "child_source_date_epoch",
            "022",
            &[
                (CHILD_DIR, d.path().to_str().unwrap()),
                (rootfs::SOURCE_DATE_EPOCH, value),
            ],
        );
    }
}

/// (path, type, mode, contents, link target) of one archive entry.
type Entry = (String, tar::EntryType, u32, Vec<u8>, Option<PathBuf>);

fn read_entries(path: &Path) -> Vec<Entry> {
    let mut ar = tar::Archive::new(fs::File::open(path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            assert!(h.as_gnu().is_some(), "GNU headers");
            let link = e.link_name().unwrap().map(|l| l.into_owned());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                h.mode().unwrap(),
                data,
                link,
            )
        })
        .collect()
}

#[test]
fn archive_layout_modes_and_long_names() {
    let d = tempfile::tempdir().unwrap();
    let input = make_input(&d.path().join("in"), SystemTime::now());
    let out = d.path().join("rootfs.tar");
    let made = rootfs::write(&input, &opts(Compression::None, 42), &out).unwrap();
    let got = read_entries(&out);

    let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    let mut sorted: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
    sorted.sort();
    assert_eq!(
        names,
        sorted
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>(),
        "sorted by path"
    );
    for (i, n) in names.iter().enumerate() {
        if let Some(parent) = Path::new(n).parent().filter(|p| !p.as_os_str().is_empty()) {
            let at = names.iter().position(|m| Path::new(m) == parent);
            assert!(at.is_some_and(|j| j < i), "{n}: parent not before it");
        }
    }
    let find = |n: &str| {
        got.iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    use tar::EntryType as T;
    assert_eq!((find("usr").1, find("usr").2), (T::Directory, 0o755));
    assert_eq!(find("usr/local/pgsql/share/timezone").2, 0o755);
    assert_eq!(find("usr/local/pgsql/share/timezone/UTC").2, 0o644);
    assert_eq!(find("usr/local/pgsql/share/timezone/UTC").3, b"TZif2 zone");
    assert_eq!((find("data").1, find("data").2), (T::Directory, 0o700));
    assert_eq!(find("data/empty").2, 0o750);
    assert_eq!(find("data/PG_VERSION").2, 0o600);
    assert_eq!(find("data/pg_control").2, 0o640);
    assert_eq!(find("data/pg_control").3, vec![7u8; 9000]);
    let short = find("data/short_link");
    assert_eq!((short.1, short.2), (T::Symlink, 0o777));
    assert_eq!(short.4.as_deref(), Some(Path::new("PG_VERSION")));
    let long_rel = format!("{}/{}/{}", "d".repeat(60), "e".repeat(60), "f".repeat(80));
    assert_eq!(find(&format!("data/{long_rel}")).3, b"deep");
    assert_eq!(
        find("data/long_link").4.as_deref(),
        Some(Path::new(&long_rel))
    );

    assert_eq!(made.entries, got.len());
    assert_eq!(made.bytes, fs::metadata(&out).unwrap().len());
    assert_eq!(made.tar_bytes, made.bytes);
    assert_eq!(made.sha256, cache::sha256_file(&out).unwrap());
    assert_eq!(made.compression, Compression::None);
    let sizes: Vec<(String, u64)> = made
        .files
        .iter()
        .map(|f| (f.path.display().to_string(), f.bytes))
        .collect();
    assert_eq!(
        sizes,
        [
            ("/data/pg_control".to_owned(), 9000),
            (
                "/usr/local/pgsql/share/timezonesets/Default".to_owned(),
                600
            ),
            ("/usr/local/pgsql/share/timezone/UTC".to_owned(), 10),
            (format!("/data/{long_rel}"), 4),
            ("/data/PG_VERSION".to_owned(), 3),
        ]
    );
    assert_eq!(made.files[0].reason, "cluster: data directory");
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn zstd_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let mut input = make_input(&d.path().join("in"), SystemTime::now());
    // Several chunks, the last a short one, of bytes that differ chunk to
    // chunk: a chunk listed twice or out of order shows.
    let big = d.path().join("in/data/big");
    let chunk = rootfs::ZSTD_CHUNK as usize;
    fs::write(
        &big,
        (0..2 * chunk + 1000)
            .map(|i| (i / 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    input.push(entry("/data/big", &big, Some(0o600)));
    let plain =
        rootfs::write(&input, &opts(Compression::None, 7), &d.path().join("r.tar")).unwrap();
    let z = rootfs::write(
        &input,
        &opts(Compression::Zstd { level: 19 }, 7),
        &d.path().join("r.tar.zst"),
    )
    .unwrap();
    let compressed = fs::read(&z.path).unwrap();
    let tar_bytes = fs::read(&plain.path).unwrap();
    assert!(compressed.len() < tar_bytes.len());
    assert_eq!(z.bytes, compressed.len() as u64);
    assert_eq!(z.tar_bytes, tar_bytes.len() as u64);
    assert_eq!(z.compression, Compression::Zstd { level: 19 });
    assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), tar_bytes);
    // A run of frames, each recording its size, none holding more than one
    // chunk of file data: the guest inflates only the chunks it touches.
    let (mut at, mut total, mut frames) = (0, 0, 0);
    while at < compressed.len() {
        let len = zstd::zstd_safe::find_frame_compressed_size(&compressed[at..]).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&compressed[at..at + len])
            .unwrap()
            .expect("every frame records its size");
        assert!(size <= rootfs::ZSTD_CHUNK, "frame of {size} bytes");
        (at, total, frames) = (at + len, total + size, frames + 1);
    }
    assert_eq!(total, tar_bytes.len() as u64);
    assert!(frames > 1, "one frame per file chunk, not one for all");
    // Both forms index; the zstd index lists chunks, so it is the longer.
    let plain_index = rootfs_index::build(&tar_bytes).unwrap();
    let zstd_index = rootfs_index::build(&compressed).unwrap();
    assert!(plain_index.starts_with(rootfs_index::MAGIC));
    assert!(zstd_index.starts_with(rootfs_index::MAGIC));
    assert_eq!(plain_index[8..12], zstd_index[8..12], "same entry count");
    assert!(zstd_index.len() > plain_index.len());
    // What the libOS would read matches the archive, and the stage wrote
    // the index it gets from the archive alone.
    check_index(&plain_index, &tar_bytes);
    check_index(&zstd_index, &compressed);
    assert_eq!(
        fs::read(rootfs::index_path(&plain.path)).unwrap(),
        plain_index
    );
    assert_eq!(fs::read(rootfs::index_path(&z.path)).unwrap(), zstd_index);
    let big_entry = decode_index(&zstd_index)
        .into_iter()
        .find(|e| e.path == b"data/big")
        .expect("data/big is indexed");
    assert_eq!(big_entry.chunks.map(|c| c.len()), Some(3));
    // One frame over everything (not made by pgkraft) cannot be indexed.
    // (bulk: a streamed frame this large would not record its size, and
    // fail for that first).
    let one_frame = zstd::bulk::compress(&tar_bytes[..], 3).unwrap();
    let err = rootfs_index::build(&one_frame).unwrap_err().to_string();
    assert!(err.contains("not made by pgkraft"), "{err}");
    assert_eq!(z.files, plain.files);
}

#[test]
fn special_files_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("pipe");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    fs::write(d.path().join("file"), b"x").unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let e = rootfs::write(
        &[
            entry("/data/file", &d.path().join("file"), None),
            entry("/data/pipe", &fifo, None),
        ],
        &opts(Compression::None, 0),
        &out_dir.join("rootfs.tar"),
    )
    .unwrap_err();
    assert!(matches!(e, RootfsError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&fifo.display().to_string()), "{msg}");
    assert!(msg.contains("/data/pipe"), "{msg}");
    assert!(msg.contains("FIFO"), "{msg}");
    assert!(
        fs::read_dir(&out_dir).unwrap().next().is_none(),
        "a failed write leaves nothing behind"
    );
}

#[test]
fn bad_paths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    fs::write(&f, b"x").unwrap();
    let out = d.path().join("r.tar");
    let o = opts(Compression::None, 0);
    for bad in ["relative/f", "/", "/a/../f", "/a/./f", "/a//f", "/a/"] {
        let e = rootfs::write(&[entry(bad, &f, None)], &o, &out).unwrap_err();
        assert!(matches!(e, RootfsError::BadPath { .. }), "{bad}: {e}");
    }
    let e = rootfs::write(&[entry("/a", &f, None), entry("/a", &f, None)], &o, &out).unwrap_err();
    assert!(e.to_string().contains("selected twice"), "{e}");
    let e = rootfs::write(&[entry("/a", &f, None), entry("/a/b", &f, None)], &o, &out).unwrap_err();
    assert!(
        e.to_string().contains("its parent /a is not a directory"),
        "{e}"
    );
    let e = rootfs::write(&[entry("/a", &d.path().join("gone"), None)], &o, &out).unwrap_err();
    assert!(e.to_string().contains("gone"), "{e}");
    let e = rootfs::write(
        &[entry("/a", &f, None)],
        &opts(Compression::None, rootfs::MAX_MTIME + 1),
        &out,
    )
    .unwrap_err();
    assert!(matches!(e, RootfsError::SourceDateEpoch { .. }), "{e}");
}

#[test]
fn rewriting_replaces_atomically() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    fs::write(&f, b"one").unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("rootfs.tar");
    let first = rootfs::write(&[entry("/f", &f, None)], &opts(Compression::None, 0), &out).unwrap();
    fs::write(&f, b"two!").unwrap();
    let second =
        rootfs::write(&[entry("/f", &f, None)], &opts(Compression::None, 0), &out).unwrap();
    assert_ne!(first.sha256, second.sha256);
    assert_eq!(cache::sha256_file(&out).unwrap(), second.sha256);
    let mut names: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    // The archive and its index (build::rootfs_index), no temporary left.
    assert_eq!(names, ["rootfs.tar", "rootfs.tar.index"]);
    let index = fs::read(rootfs::index_path(&out)).unwrap();
    assert_eq!(
        index,
        pgkraft::build::rootfs_index::build(&fs::read(&out).unwrap()).unwrap(),
        "the index is the second archive's"
    );
    check_index(&index, &fs::read(&out).unwrap());
    assert_eq!(
        fs::metadata(rootfs::index_path(&out))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

#[test]
fn cached_build_reuses_the_archive() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::new(d.path().join("cache"));
    let input = make_input(&d.path().join("in"), SystemTime::now());
    let o = opts(Compression::Zstd { level: 3 }, 0);
    let a = rootfs::build_cached(&cache, &input, &o).unwrap();
    assert_eq!(a.path.file_name().unwrap(), "rootfs.tar.zst");
    assert!(a.path.starts_with(cache.stage_dir(rootfs::CACHE_STAGE)));
    let written = fs::metadata(&a.path).unwrap().modified().unwrap();
    let b = rootfs::build_cached(&cache, &input, &o).unwrap();
    assert_eq!(a, b);
    assert_eq!(fs::metadata(&b.path).unwrap().modified().unwrap(), written);
    assert_eq!(cache::sha256_file(&b.path).unwrap(), a.sha256);
    // Other contents, other key, other archive; the same as an uncached write.
    fs::write(d.path().join("in/data/PG_VERSION"), b"15\n").unwrap();
    let c = rootfs::build_cached(&cache, &input, &o).unwrap();
    assert_ne!(c.sha256, a.sha256);
    let direct = rootfs::write(&input, &o, &d.path().join("direct.tar.zst")).unwrap();
    assert_eq!(direct.sha256, c.sha256);
}

/// A file whose bytes and mode repeat an earlier one's is stored once: a
/// link entry the index lists as a file over the first one's data, and
/// pgkraft unpacks as a file of its own (a server writes each copy apart).
#[test]
fn repeated_files_are_stored_once_and_unpack_as_copies() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let inp = d.path().join("in");
    fs::create_dir_all(&inp).unwrap();
    let page: Vec<u8> = (0..3 * rootfs::ZSTD_CHUNK as usize + 100)
        .map(|i| (i / 5 % 241) as u8)
        .collect();
    let small = vec![7u8; rootfs::COPY_MIN_BYTES as usize - 1];
    for (name, bytes) in [("a", &page), ("b", &page), ("s1", &small), ("s2", &small)] {
        fs::write(inp.join(name), bytes).unwrap();
    }
    fs::write(inp.join("other-mode"), &page).unwrap();
    let input = vec![
        entry("/data/1/rel", &inp.join("a"), Some(0o600)),
        entry("/data/2/rel", &inp.join("b"), Some(0o600)),
        entry("/data/3/rel", &inp.join("other-mode"), Some(0o644)),
        entry("/data/s1", &inp.join("s1"), Some(0o600)),
        entry("/data/s2", &inp.join("s2"), Some(0o600)),
    ];
    for (compression, name) in [
        (Compression::None, "r.tar"),
        (Compression::Zstd { level: 3 }, "r.tar.zst"),
    ] {
        let made = rootfs::write(&input, &opts(compression, 0), &d.path().join(name)).unwrap();
        let archive = fs::read(&made.path).unwrap();
        check_index(&fs::read(rootfs::index_path(&made.path)).unwrap(), &archive);
        let tar_bytes = pgkraft::image::format::rootfs_tar(&archive).unwrap();
        let kinds: Vec<(String, tar::EntryType)> = tar::Archive::new(&*tar_bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        let kind = |p: &str| kinds.iter().find(|(n, _)| n == p).unwrap().1;
        assert_eq!(kind("data/1/rel"), tar::EntryType::Regular);
        assert_eq!(kind("data/2/rel"), tar::EntryType::Link, "{kinds:?}");
        assert_eq!(kind("data/3/rel"), tar::EntryType::Regular, "another mode");
        assert_eq!(
            kind("data/s2"),
            tar::EntryType::Regular,
            "too small to share"
        );
        assert!(
            made.tar_bytes < 3 * page.len() as u64,
            "stored twice, not thrice"
        );

        let out = d.path().join(format!("out-{name}"));
        pgkraft::image::format::unpack_rootfs(&tar_bytes, &out).unwrap();
        let (one, two) = (out.join("data/1/rel"), out.join("data/2/rel"));
        assert_eq!(fs::read(&two).unwrap(), page);
        assert_ne!(
            fs::metadata(&one).unwrap().ino(),
            fs::metadata(&two).unwrap().ino(),
            "a copy, not a second name"
        );
        assert_eq!(fs::metadata(&two).unwrap().mode() & 0o777, 0o600);
        fs::write(&two, b"changed").unwrap();
        assert_eq!(
            fs::read(&one).unwrap(),
            page,
            "writing the copy left the first"
        );
    }
}
