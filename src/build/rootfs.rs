//! The rootfs archive (docs/ARCHITECTURE.md §1, `rootfs`): the selected files as
//! one deterministic tar, optionally zstd-compressed (one frame per 64 KiB
//! chunk of each file, see [`compress`]), which the link stage puts into
//! the image with an index (build::rootfs_index) and the library OS seeds
//! its in-memory file system from at boot.
//!
//! Deterministic: the bytes depend only on the selection (paths, contents,
//! modes, link targets), the compression and the timestamp, never on the
//! machine, the user, the umask, file times or directory order. Entries are
//! sorted by path, with every parent directory written explicitly before its
//! children; owners are uid/gid 0 with empty names; every mtime is
//! `SOURCE_DATE_EPOCH` (or 0).
//!
//! Format: GNU tar. Plain ustar splits a long path into a 155-byte prefix
//! and a 100-byte name and cannot store a link target over 100 bytes, so a
//! long prefix or a deep extension directory would make archiving fail;
//! GNU's `././@LongLink` records have no such limits, and GNU tar, bsdtar
//! and the `tar` crate all read them. PAX is avoided: its extended headers
//! would carry per-file timestamps. Only regular files, directories and
//! symlinks are written, and hard-link entries for copies:
//!
//! A file whose bytes and mode equal an earlier file's is written as a
//! hard-link entry to that file ([`COPY_MIN_BYTES`] and up): the cluster's
//! three databases are mostly the same files (23.5 MB of data, 9.1 MB
//! distinct), and zstd cannot find a copy across 64 KiB frames; stored
//! once, the default image's rootfs fell from 2.68 MB to about 1 MB. Such
//! an entry means "a copy of", not "the same inode": the index gives it the
//! first file's data (build::rootfs_index), the library OS makes it a file
//! of its own, and pgkraft's own unpacking ([`crate::image::format::unpack_rootfs`])
//! writes a copy. A plain `tar -x` makes hard links; a server must not run
//! on such a tree (a write to one database's file would change the others).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::{self, Cache, CacheError, KeyHasher};
use super::rootfs_index::Frame;
use super::select::Selected;
pub use crate::recipe::Compression;

/// The reproducible-builds variable that fixes every timestamp.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Latest mtime tar can write in octal (11 digits, year 2242); later ones
/// need the base-256 extension, which not every reader has.
pub const MAX_MTIME: u64 = 0o777_7777_7777;
/// Mode of the parent directories the archive adds itself.
pub const PARENT_DIR_MODE: u32 = 0o755;
/// Symlinks carry no permissions of their own on Linux; write the value
/// Linux reports so it does not depend on how the link was made.
const SYMLINK_MODE: u32 = 0o777;
/// The cache stage of [`build_cached`].
pub const CACHE_STAGE: &str = "rootfs";
/// Bumped when the archive's layout changes for equal inputs, or the shape
/// of the cached [`Rootfs`] (an older pgkraft sharing the cache must not
/// find an entry it cannot decode: v4 dropped `index`; v7 is the varint
/// index).
const FORMAT: &str = "pgkraft-rootfs-v7";
const METADATA_FILE: &str = "rootfs.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootfsOptions {
    pub compression: Compression,
    /// Every entry's mtime, seconds since the epoch; at most [`MAX_MTIME`].
    pub mtime: u64,
}

impl RootfsOptions {
    /// `compression`, and the mtime from `SOURCE_DATE_EPOCH` (0 when unset).
    pub fn from_env(compression: Compression) -> Result<RootfsOptions, RootfsError> {
        Ok(RootfsOptions {
            compression,
            mtime: source_date_epoch()?,
        })
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, checked; 0 when unset.
pub fn source_date_epoch() -> Result<u64, RootfsError> {
    parse_source_date_epoch(std::env::var_os(SOURCE_DATE_EPOCH).as_deref())
}

/// Checks a `SOURCE_DATE_EPOCH` value. A malformed one is an error rather
/// than ignored: a build that asked for a fixed time and silently did not
/// get one would look reproducible and not be.
pub fn parse_source_date_epoch(value: Option<&OsStr>) -> Result<u64, RootfsError> {
    let Some(value) = value else { return Ok(0) };
    let bad = |why: &str| RootfsError::SourceDateEpoch {
        value: value.to_string_lossy().into_owned(),
        why: why.to_owned(),
    };
    let s = value.to_str().ok_or_else(|| bad("is not text"))?;
    if s.is_empty() {
        return Err(bad("is set but empty"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "is not a whole, non-negative number of seconds since 1970-01-01 UTC",
        ));
    }
    match s.parse::<u64>() {
        Ok(t) if t <= MAX_MTIME => Ok(t),
        _ => Err(bad(
            "is later than tar can store (8589934591, in the year 2242)",
        )),
    }
}

/// What [`write`] produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    pub path: PathBuf,
    pub sha256: String,
    /// Size of the archive file (compressed, if it is).
    pub bytes: u64,
    /// Size of the tar stream before compression: what the library OS
    /// unpacks, and the buffer a one-shot decompression needs.
    pub tar_bytes: u64,
    pub compression: Compression,
    /// Entries in the archive, added parent directories included.
    pub entries: usize,
    /// Regular files, largest first (then by path): for `pgkraft inspect`.
    pub files: Vec<RootfsFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsFile {
    /// Absolute path in the image.
    pub path: PathBuf,
    pub bytes: u64,
    /// Why select put it there.
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(
        "{SOURCE_DATE_EPOCH}={value:?} {why}\n  \
         fix: set it to a Unix time in seconds (e.g. `git log -1 --format=%ct`), or unset it for mtime 0"
    )]
    SourceDateEpoch { value: String, why: String },
    #[error(
        "{} (for {} in the image) is a {kind}: only regular files, directories and symlinks \
         can go into the rootfs",
        from.display(),
        path.display()
    )]
    Unsupported {
        path: PathBuf,
        from: PathBuf,
        kind: &'static str,
    },
    #[error("rootfs path {}: {why}", path.display())]
    BadPath { path: PathBuf, why: String },
    #[error("{} changed while it was being archived (its size is not what it was); build again", file.display())]
    Changed { file: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

/// One archive entry, decided before anything is written.
#[derive(Clone, Debug)]
struct Planned {
    path: PathBuf,
    /// `None` for parent directories the archive adds.
    source: Option<PathBuf>,
    mode: u32,
    kind: EntryKind,
    reason: String,
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO (named pipe)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// The entries in archive order, parents added, every source's kind checked.
fn plan(entries: &[Selected]) -> Result<Vec<Planned>, RootfsError> {
    let mut by_path: BTreeMap<PathBuf, Planned> = BTreeMap::new();
    for e in entries {
        let bad = |why: &str| RootfsError::BadPath {
            path: e.path.clone(),
            why: why.to_owned(),
        };
        let mut comps = e.path.components();
        if comps.next() != Some(Component::RootDir)
            || comps.clone().next().is_none()
            || !comps.all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad("expected an absolute path below / without `.` or `..`"));
        }
        // components() quietly drops `.` parts and doubled or trailing
        // slashes; such a path means its producer went wrong somewhere.
        let normal: PathBuf = e.path.components().collect();
        if normal.as_os_str() != e.path.as_os_str() {
            return Err(bad(&format!(
                "not in normal form (expected {})",
                normal.display()
            )));
        }
        let meta = fs::symlink_metadata(&e.source).map_err(io_err("cannot read", &e.source))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File { size: meta.len() }
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(&e.source).map_err(io_err("cannot read link", &e.source))?,
            }
        } else {
            return Err(RootfsError::Unsupported {
                path: e.path.clone(),
                from: e.source.clone(),
                kind: kind_name(&ft),
            });
        };
        let mode = match kind {
            EntryKind::Symlink { .. } => SYMLINK_MODE,
            _ => e.mode.unwrap_or(meta.permissions().mode()) & 0o7777,
        };
        let planned = Planned {
            path: e.path.clone(),
            source: Some(e.source.clone()),
            mode,
            kind,
            reason: e.reason.to_string(),
        };
        if by_path.insert(e.path.clone(), planned).is_some() {
            return Err(bad("selected twice"));
        }
    }
    let mut parents = Vec::new();
    for p in by_path.keys() {
        for a in p.ancestors().skip(1) {
            if a == Path::new("/") {
                break;
            }
            match by_path.get(a) {
                Some(Planned {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(_) => {
                    return Err(RootfsError::BadPath {
                        path: p.clone(),
                        why: format!("its parent {} is not a directory", a.display()),
                    });
                }
                None => parents.push(a.to_path_buf()),
            }
        }
    }
    for a in parents {
        by_path.entry(a.clone()).or_insert(Planned {
            path: a,
            source: None,
            mode: PARENT_DIR_MODE,
            kind: EntryKind::Dir,
            reason: "parent directory".to_owned(),
        });
    }
    // BTreeMap order is component-wise, so a directory precedes everything
    // under it, as an unpacker needs.
    Ok(by_path.into_values().collect())
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Files at least this big are stored once when their bytes and mode
/// repeat; a smaller one costs less than the link entry that would replace
/// it (one 512-byte header, and a long-name record when the target's path
/// is long).
pub const COPY_MIN_BYTES: u64 = 1024;

fn write_tar(plan: &[Planned], mtime: u64, out: &mut impl Write) -> Result<(), RootfsError> {
    let mut b = tar::Builder::new(out);
    // (top directory, content hash, mode) -> the first such file's archive
    // name: a copy never names a file outside its own top directory (the
    // cluster's copies stay in data/, which a volume unpacks alone).
    let mut first: HashMap<(&OsStr, [u8; 32], u32), &Path> = HashMap::new();
    for e in plan {
        let name = e.path.strip_prefix("/").unwrap_or(&e.path);
        let wrote =
            |r: io::Result<()>| r.map_err(io_err("cannot write the archive entry for", &e.path));
        match &e.kind {
            EntryKind::Dir => {
                let mut h = header(tar::EntryType::Directory, e.mode, 0, mtime);
                wrote(b.append_data(&mut h, name, io::empty()))?;
            }
            EntryKind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, e.mode, 0, mtime);
                wrote(b.append_link(&mut h, name, target))?;
            }
            EntryKind::File { size } => {
                // Read once, whole (the archive is made in memory anyway):
                // the bytes hashed to find a copy are the bytes written.
                let src = e.source.as_deref().unwrap_or(&e.path);
                let bytes = fs::read(src).map_err(io_err("cannot read", src))?;
                if bytes.len() as u64 != *size {
                    return Err(RootfsError::Changed {
                        file: src.to_path_buf(),
                    });
                }
                if *size >= COPY_MIN_BYTES {
                    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
                    let top = name.iter().next().unwrap_or_default();
                    match first.entry((top, sha256, e.mode)) {
                        Entry::Occupied(o) => {
                            let mut h = header(tar::EntryType::Link, e.mode, 0, mtime);
                            wrote(b.append_link(&mut h, name, o.get()))?;
                            continue;
                        }
                        Entry::Vacant(v) => {
                            v.insert(name);
                        }
                    }
                }
                let mut h = header(tar::EntryType::Regular, e.mode, *size, mtime);
                wrote(b.append_data(&mut h, name, &bytes[..]))?;
            }
        }
    }
    b.into_inner()
        .map_err(io_err("cannot finish the archive", Path::new("rootfs")))?;
    Ok(())
}

fn temp_in(dir: &Path, name: &OsStr) -> Result<tempfile::NamedTempFile, RootfsError> {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(dir)
        .map_err(io_err("cannot create a temporary file in", dir))
}

/// Writes the archive of `entries` to `out` (replacing it atomically: a
/// temporary file in the same directory, renamed when complete).
pub fn write(
    entries: &[Selected],
    options: &RootfsOptions,
    out: &Path,
) -> Result<Rootfs, RootfsError> {
    if options.mtime > MAX_MTIME {
        return Err(RootfsError::SourceDateEpoch {
            value: options.mtime.to_string(),
            why: "is later than tar can store (8589934591, in the year 2242)".into(),
        });
    }
    if let Compression::Zstd { level } = options.compression
        && !(1..=22).contains(&level)
    {
        return Err(RootfsError::BadPath {
            path: out.to_path_buf(),
            why: format!("zstd level {level} is outside 1..=22"),
        });
    }
    let plan = plan(entries)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = out.file_name().ok_or_else(|| RootfsError::BadPath {
        path: out.to_path_buf(),
        why: "not a file path".into(),
    })?;

    let mut tar = Vec::new();
    write_tar(&plan, options.mtime, &mut tar)?;
    let tar_bytes = tar.len() as u64;
    let (archive, frames) = match options.compression {
        Compression::None => (None, None),
        Compression::Zstd { level } => {
            let (archive, frames) =
                compress(&tar, level).map_err(io_err("cannot compress into", out))?;
            (Some(archive), Some(frames))
        }
    };
    // Made here, once per archive (and cached with it), not at every link.
    let index_bytes = super::rootfs_index::of_tar(&tar, frames.as_deref())
        .map_err(io_err("cannot index the archive", out))?;
    let archive = archive.unwrap_or(tar);
    let sha256 = cache::sha256_hex(&archive);
    let bytes = archive.len() as u64;

    // The archive is complete on disk before the index replaces the old
    // one, and renamed last: a failure leaves the old pair, not a new index
    // beside an old archive (short of the final rename failing).
    let mut done = temp_in(dir, name)?;
    done.write_all(&archive)
        .and_then(|()| done.as_file().sync_all())
        // Readable like any build output, whatever the umask said.
        .and_then(|()| {
            done.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))
        })
        .map_err(io_err("cannot write", out))?;
    let index = index_path(out);
    cache::write_atomic_mode(&index, &index_bytes, 0o644)
        .map_err(io_err("cannot write", &index))?;
    done.persist(out)
        .map_err(|e| io_err("cannot rename the finished archive to", out)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", dir))?;

    let mut files: Vec<RootfsFile> = plan
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File { size } => Some(RootfsFile {
                path: e.path.clone(),
                bytes: size,
                reason: e.reason.clone(),
            }),
            _ => None,
        })
        .collect();
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));

    Ok(Rootfs {
        path: out.to_path_buf(),
        sha256,
        bytes,
        tar_bytes,
        compression: options.compression,
        entries: plan.len(),
        files,
    })
}

/// Bytes of file data per zstd frame (a multiple of the page size).
pub const ZSTD_CHUNK: u64 = pgkraft_abi::ROOTFS_ZSTD_CHUNK as u64;

/// The tar as a run of independent zstd frames, cut at every file's data
/// and every [`ZSTD_CHUNK`] inside it, and those frames. Decompressed end
/// to end it is the tar byte for byte (zstd concatenates frames), but the
/// library OS can inflate one chunk of one file when the server first
/// touches it instead of the whole archive at boot (see
/// build::rootfs_index). Each frame records its content size; no checksum
/// (the image's sha256 covers it). Single-threaded: the output must not
/// depend on the machine.
fn compress(tar: &[u8], level: u32) -> io::Result<(Vec<u8>, Vec<Frame>)> {
    let level = i32::try_from(level).map_err(io::Error::other)?;
    let mut cuts = vec![0u64, tar.len() as u64];
    for entry in tar::Archive::new(tar).entries()? {
        let entry = entry?;
        let (start, size) = (entry.raw_file_position(), entry.size());
        if size == 0 {
            continue;
        }
        let end = start + size.div_ceil(512) * 512;
        cuts.extend((start..end).step_by(ZSTD_CHUNK as usize));
        cuts.push(end);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut enc = zstd::bulk::Compressor::new(level)?;
    enc.include_checksum(false)?;
    enc.include_contentsize(true)?;
    let mut out = Vec::new();
    let mut frames = Vec::with_capacity(cuts.len() - 1);
    for pair in cuts.windows(2) {
        let frame = enc.compress(&tar[pair[0] as usize..pair[1] as usize])?;
        frames.push(Frame {
            offset: out.len() as u64,
            len: frame.len() as u64,
            tar_offset: pair[0],
            tar_len: pair[1] - pair[0],
        });
        out.extend_from_slice(&frame);
    }
    Ok((out, frames))
}

/// Where the index of the archive at `archive` is written (next to it).
pub fn index_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".index");
    archive.with_file_name(name)
}

/// The archive's file name for `compression`.
pub fn file_name(compression: Compression) -> String {
    format!("rootfs.{}", compression.extension())
}

/// The cache key of the archive [`write`] would make: its format, the zstd
/// library version (its output may change between versions), the options,
/// and every entry's path, kind, mode and contents.
pub fn cache_key(
    entries: &[Selected],
    options: &RootfsOptions,
) -> Result<cache::StageKey, RootfsError> {
    let plan = plan(entries)?;
    let mut k = KeyHasher::new();
    k.str("stage", CACHE_STAGE)
        .str("format", FORMAT)
        .str("compression", &options.compression.to_string())
        .str("zstd", &zstd::zstd_safe::version_number().to_string())
        .str("zstd_chunk", &ZSTD_CHUNK.to_string())
        .str("mtime", &options.mtime.to_string());
    for e in &plan {
        k.bytes("path", e.path.as_os_str().as_encoded_bytes())
            .str("mode", &format!("{:o}", e.mode))
            .str("reason", &e.reason);
        match &e.kind {
            EntryKind::Dir => {
                k.str("kind", "dir");
            }
            EntryKind::Symlink { target } => {
                k.bytes("symlink", target.as_os_str().as_encoded_bytes());
            }
            EntryKind::File { .. } => {
                let src = e.source.as_deref().unwrap_or(&e.path);
                k.file("file", src)?;
            }
        }
    }
    Ok(k.finish())
}

/// [`write`] through the stage cache: an unchanged selection costs one
/// hashing pass instead of a recompression.
pub fn build_cached(
    cache: &Cache,
    entries: &[Selected],
    options: &RootfsOptions,
) -> Result<Rootfs, RootfsError> {
    let key = cache_key(entries, options)?;
    let name = file_name(options.compression);
    let dir = cache
        .get_or_build(CACHE_STAGE, &key, |tmp| -> Result<(), RootfsError> {
            let made = write(entries, options, &tmp.join(&name))?;
            let json = serde_json::to_vec_pretty(&made)
                .map_err(|e| io_err("cannot encode", tmp)(e.into()))?;
            fs::write(tmp.join(METADATA_FILE), json).map_err(io_err("cannot write", tmp))
        })
        .map_err(|e| match e.into_build_error::<RootfsError>() {
            Ok(re) => re,
            Err(ce) => RootfsError::Cache(ce),
        })?;
    let meta = dir.join(METADATA_FILE);
    let text = fs::read(&meta).map_err(io_err("cannot read", &meta))?;
    let mut made: Rootfs =
        serde_json::from_slice(&text).map_err(|e| io_err("cannot decode", &meta)(e.into()))?;
    made.path = dir.join(&name);
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn source_date_epoch_values() {
        let p = |s: &str| parse_source_date_epoch(Some(&OsString::from(s)));
        assert_eq!(parse_source_date_epoch(None).unwrap(), 0);
        assert_eq!(p("0").unwrap(), 0);
        assert_eq!(p("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(p("8589934591").unwrap(), MAX_MTIME);
        for bad in [
            "",
            " 1",
            "1.5",
            "-1",
            "0x10",
            "1e9",
            "8589934592",
            "99999999999999999999999",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.starts_with("SOURCE_DATE_EPOCH="), "{e}");
            assert!(e.contains("fix:"), "{e}");
        }
    }
}
