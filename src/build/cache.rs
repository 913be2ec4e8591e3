//! Content-addressed stage cache (docs/ARCHITECTURE.md §1: every stage is cached
//! under a key = sha256 of its inputs).
//!
//! Layout: `<root>/<stage>/<key>/` holds one finished stage output. Outputs
//! are built in a temporary directory next to their final place and renamed
//! into it, so a reader either sees a complete output or none at all, even
//! across crashes and concurrent builds.

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bumped when the meaning of a key changes, so old entries stop matching
/// instead of being reused with a different interpretation.
const KEY_FORMAT: &str = "pgkraft-stage-key-v1";

/// Errors of the cache itself, plus the error of a failed build step.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot locate the pgkraft cache: none of PGKRAFT_CACHE, XDG_CACHE_HOME, HOME is set")]
    NoRoot,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0:?} is not a valid cache key (expected 64 lowercase hex digits)")]
    BadKey(String),
    /// The build step failed; nothing was stored.
    #[error(transparent)]
    Build(Box<dyn StdError + Send + Sync + 'static>),
}

impl CacheError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
        let path = path.to_path_buf();
        move |source| CacheError::Io { what, path, source }
    }

    /// Recovers the build step's own error type, so a stage can hand its
    /// callers its typed error instead of a cache error wrapping it.
    pub fn into_build_error<E: StdError + 'static>(self) -> Result<E, CacheError> {
        match self {
            CacheError::Build(b) => match b.downcast::<E>() {
                Ok(e) => Ok(*e),
                Err(b) => Err(CacheError::Build(b)),
            },
            other => Err(other),
        }
    }
}

/// The sha256 of a stage's inputs, as 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageKey(String);

impl StageKey {
    /// For keys that are already a sha256, such as a source tarball's.
    pub fn from_hex(hex: &str) -> Result<StageKey, CacheError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(StageKey(hex.to_string()))
        } else {
            Err(CacheError::BadKey(hex.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a [`StageKey`] from named inputs.
///
/// Every input is written as a kind tag, its length-prefixed name and its
/// length-prefixed value (file contents enter as their own sha256), so no two
/// different input lists produce the same byte stream.
pub struct KeyHasher {
    h: Sha256,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyHasher {
    pub fn new() -> KeyHasher {
        let mut k = KeyHasher { h: Sha256::new() };
        k.field(b'v', b"format", KEY_FORMAT.as_bytes());
        k
    }

    fn lp(&mut self, bytes: &[u8]) {
        self.h.update((bytes.len() as u64).to_le_bytes());
        self.h.update(bytes);
    }

    fn field(&mut self, tag: u8, name: &[u8], value: &[u8]) {
        self.h.update([tag]);
        self.lp(name);
        self.lp(value);
    }

    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(b's', name.as_bytes(), value.as_bytes());
        self
    }

    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.field(b'b', name.as_bytes(), value);
        self
    }

    /// Hashes the file's contents (streamed), not its name or metadata.
    pub fn file(&mut self, name: &str, path: &Path) -> Result<&mut Self, CacheError> {
        let digest = sha256_file(path).map_err(CacheError::io("cannot hash", path))?;
        self.field(b'f', name.as_bytes(), digest.as_bytes());
        Ok(self)
    }

    /// Hashes a directory tree: every entry's path relative to `path` (in
    /// sorted order), its kind, for files the executable bit and contents,
    /// for symlinks the target. Timestamps, owners and other permission bits
    /// are ignored: they differ between checkouts without changing meaning.
    pub fn dir(&mut self, name: &str, path: &Path) -> Result<&mut Self, CacheError> {
        self.dir_except(name, path, &[])
    }

    /// [`Self::dir`] without the top-level entries named in `skip` (a
    /// cargo `target/` left by a developer's own build, say).
    pub fn dir_except(
        &mut self,
        name: &str,
        path: &Path,
        skip: &[&str],
    ) -> Result<&mut Self, CacheError> {
        let mut entries = Vec::new();
        walk_sorted(path, PathBuf::new(), skip, &mut entries)
            .map_err(CacheError::io("cannot read directory", path))?;
        let mut tree = Sha256::new();
        let mut put = |bytes: &[u8]| {
            tree.update((bytes.len() as u64).to_le_bytes());
            tree.update(bytes);
        };
        for (rel, kind) in &entries {
            let full = path.join(rel);
            put(rel.as_os_str().as_bytes());
            match kind {
                EntryKind::Dir => put(b"d"),
                EntryKind::File { exec } => {
                    put(if *exec { b"x" } else { b"f" });
                    let digest =
                        sha256_file(&full).map_err(CacheError::io("cannot hash", &full))?;
                    put(digest.as_bytes());
                }
                EntryKind::Symlink => {
                    put(b"l");
                    let target =
                        fs::read_link(&full).map_err(CacheError::io("cannot read link", &full))?;
                    put(target.as_os_str().as_bytes());
                }
            }
        }
        let digest = hex::encode(tree.finalize());
        self.field(b'd', name.as_bytes(), digest.as_bytes());
        Ok(self)
    }

    pub fn finish(&self) -> StageKey {
        StageKey(hex::encode(self.h.clone().finalize()))
    }
}

enum EntryKind {
    Dir,
    File { exec: bool },
    Symlink,
}

/// `skip`: names left out of this directory only; the recursion passes
/// none, so they count at the top level alone.
fn walk_sorted(
    root: &Path,
    rel: PathBuf,
    skip: &[&str],
    out: &mut Vec<(PathBuf, EntryKind)>,
) -> io::Result<()> {
    let mut names: Vec<OsString> = fs::read_dir(root.join(&rel))?
        .map(|e| e.map(|e| e.file_name()))
        .filter(|n| {
            !n.as_ref()
                .is_ok_and(|n| skip.iter().any(|s| n.as_os_str() == *s))
        })
        .collect::<io::Result<_>>()?;
    // Byte order, not locale order: the key must not depend on the host.
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let child = rel.join(&name);
        let meta = fs::symlink_metadata(root.join(&child))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            out.push((child, EntryKind::Symlink));
        } else if ft.is_dir() {
            out.push((child.clone(), EntryKind::Dir));
            walk_sorted(root, child, &[], out)?;
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push((child, EntryKind::File { exec }));
        } else {
            return Err(io::Error::other(format!(
                "{}: neither file, directory nor symlink",
                root.join(&child).display()
            )));
        }
    }
    Ok(())
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of a file's contents as lowercase hex, reading it in chunks so
/// large tarballs never sit in memory.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    sha256_reader(&mut f)
}

/// Streams `r` to its end and returns the sha256 of what was read.
pub fn sha256_reader(r: &mut impl Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The stage cache rooted at one directory.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$PGKRAFT_CACHE`, else `$XDG_CACHE_HOME/pgkraft`, else
    /// `~/.cache/pgkraft`. Empty variables count as unset, as XDG asks.
    pub fn from_env() -> Result<Cache, CacheError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(root) = var("PGKRAFT_CACHE") {
            return Ok(Cache::new(root));
        }
        if let Some(xdg) = var("XDG_CACHE_HOME") {
            return Ok(Cache::new(PathBuf::from(xdg).join("pgkraft")));
        }
        if let Some(home) = var("HOME") {
            return Ok(Cache::new(
                PathBuf::from(home).join(".cache").join("pgkraft"),
            ));
        }
        Err(CacheError::NoRoot)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// Where the output for `key` lives once built (it may not exist yet).
    pub fn entry_path(&self, stage: &str, key: &StageKey) -> PathBuf {
        self.stage_dir(stage).join(key.as_str())
    }

    /// The finished output for `key`, if there is one.
    pub fn lookup(&self, stage: &str, key: &StageKey) -> Option<PathBuf> {
        let p = self.entry_path(stage, key);
        p.is_dir().then_some(p)
    }

    /// Removes a finished entry, e.g. one found to be damaged. Other
    /// processes that already hold its path are not protected from this.
    pub fn evict(&self, stage: &str, key: &StageKey) -> Result<(), CacheError> {
        let p = self.entry_path(stage, key);
        // Rename first so no reader can observe a half-deleted entry.
        let doomed = tempfile::Builder::new()
            .prefix(".evict-")
            .tempdir_in(self.stage_dir(stage))
            .map_err(CacheError::io("cannot create temporary directory in", &p))?;
        let target = doomed.path().join("entry");
        match fs::rename(&p, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("cannot evict", &p)(e)),
        }
    }

    /// Returns the output directory for `key`, running `build` to fill it
    /// only when it does not exist yet.
    ///
    /// `build` gets an empty directory on the same file system as the final
    /// place; whatever it leaves there becomes the entry. If it fails, its
    /// directory is deleted and its error is returned as
    /// [`CacheError::Build`]. If another process finishes the same key first,
    /// its output wins and ours is discarded: equal keys mean equal inputs.
    pub fn get_or_build<E>(
        &self,
        stage: &str,
        key: &StageKey,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, CacheError>
    where
        E: Into<Box<dyn StdError + Send + Sync + 'static>>,
    {
        let final_path = self.entry_path(stage, key);
        if final_path.is_dir() {
            return Ok(final_path);
        }
        let stage_dir = self.stage_dir(stage);
        fs::create_dir_all(&stage_dir)
            .map_err(CacheError::io("cannot create cache directory", &stage_dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", &key.as_str()[..16]))
            .tempdir_in(&stage_dir)
            .map_err(CacheError::io(
                "cannot create temporary directory in",
                &stage_dir,
            ))?;
        // On error `tmp` is dropped here, which deletes the partial output.
        build(tmp.path()).map_err(|e| CacheError::Build(e.into()))?;
        // Data first, then the rename: after a crash the entry is either
        // absent or complete, never present with unwritten blocks.
        sync_tree(tmp.path()).map_err(CacheError::io("cannot sync", tmp.path()))?;
        match fs::rename(tmp.path(), &final_path) {
            Ok(()) => {
                // The directory now lives at its final name; keep `tmp`
                // from deleting what is left at its old one (nothing).
                let _ = tmp.keep();
                sync_dir(&stage_dir).map_err(CacheError::io("cannot sync", &stage_dir))?;
                Ok(final_path)
            }
            // A non-empty directory already sits there: someone else won.
            Err(_) if final_path.is_dir() => Ok(final_path),
            Err(e) => Err(CacheError::io(
                "cannot move finished output to",
                &final_path,
            )(e)),
        }
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn sync_tree(path: &Path) -> io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            sync_tree(&entry.path())?;
        } else if ft.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(path)
}

/// Replaces `path` with `bytes` atomically: readers see the old contents or
/// the new ones, never a mix, and after a crash the file is one or the other.
/// The file is private to its owner (mode 0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, None)
}

/// [`write_atomic`], the file getting `mode` whatever the umask says.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, bytes, Some(mode))
}

fn write_atomic_with(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_do_not_collide_by_concatenation() {
        let a = KeyHasher::new().str("x", "ab").str("y", "c").finish();
        let b = KeyHasher::new().str("x", "a").str("y", "bc").finish();
        let c = KeyHasher::new().str("xa", "b").str("y", "c").finish();
        let d = KeyHasher::new().bytes("x", b"ab").str("y", "c").finish();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a, KeyHasher::new().str("x", "ab").str("y", "c").finish());
    }

    #[test]
    fn dir_key_can_skip_a_top_level_entry() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::write(d.join("a"), "1").unwrap();
        let key = || {
            KeyHasher::new()
                .dir_except("d", d, &["target"])
                .unwrap()
                .finish()
        };
        let k0 = key();
        fs::create_dir(d.join("target")).unwrap();
        fs::write(d.join("target/x"), "build output").unwrap();
        assert_eq!(k0, key(), "a top-level target/ does not count");
        fs::create_dir(d.join("src")).unwrap();
        fs::create_dir(d.join("src/target")).unwrap();
        assert_ne!(k0, key(), "only at the top level");
    }

    #[test]
    fn dir_key_sees_contents_names_and_exec_bit() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/a"), "1").unwrap();
        fs::write(d.join("b"), "2").unwrap();
        let key = || KeyHasher::new().dir("d", d).unwrap().finish();
        let k0 = key();
        assert_eq!(k0, key());

        fs::write(d.join("b"), "3").unwrap();
        let k1 = key();
        assert_ne!(k0, k1);

        fs::set_permissions(d.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        let k2 = key();
        assert_ne!(k1, k2);

        fs::rename(d.join("sub/a"), d.join("sub/c")).unwrap();
        assert_ne!(k2, key());
    }

    #[test]
    fn stage_key_from_hex_validates() {
        assert!(StageKey::from_hex(&"a".repeat(64)).is_ok());
        assert!(StageKey::from_hex(&"A".repeat(64)).is_err());
        assert!(StageKey::from_hex("abc").is_err());
        assert!(StageKey::from_hex(&"../".repeat(21)).is_err());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let key = KeyHasher::new().str("x", "1").finish();
        let err = cache
            .get_or_build("st", &key, |dir| {
                fs::write(dir.join("half"), "written")?;
                Err::<(), _>(io::Error::other("compiler exploded"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("compiler exploded"), "{err}");
        assert!(cache.lookup("st", &key).is_none());
        assert!(
            entries(&cache.stage_dir("st")).is_empty(),
            "{:?}",
            entries(&cache.stage_dir("st"))
        );
        let back: io::Error = err.into_build_error().unwrap();
        assert_eq!(back.to_string(), "compiler exploded");
    }

    #[test]
    fn second_get_or_build_reuses_the_output() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let key = KeyHasher::new().str("x", "2").finish();
        let mut calls = 0;
        for _ in 0..3 {
            let p = cache
                .get_or_build("st", &key, |dir| {
                    calls += 1;
                    fs::write(dir.join("out"), "result")
                })
                .unwrap();
            assert_eq!(p, cache.entry_path("st", &key));
            assert_eq!(fs::read_to_string(p.join("out")).unwrap(), "result");
        }
        assert_eq!(calls, 1);
        assert_eq!(entries(&cache.stage_dir("st")), vec![key.to_string()]);
    }

    #[test]
    fn losing_a_race_keeps_the_winner() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let key = KeyHasher::new().str("x", "3").finish();
        let p = cache
            .get_or_build("st", &key, |dir| {
                // Another process finishes first, while we are still building.
                let other = cache.entry_path("st", &key);
                fs::create_dir_all(&other)?;
                fs::write(other.join("out"), "theirs")?;
                fs::write(dir.join("out"), "ours")
            })
            .unwrap();
        assert_eq!(fs::read_to_string(p.join("out")).unwrap(), "theirs");
        assert_eq!(entries(&cache.stage_dir("st")), vec![key.to_string()]);
    }

    #[test]
    fn evict_removes_entry() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let key = KeyHasher::new().str("x", "4").finish();
        cache
            .get_or_build("st", &key, |dir| fs::write(dir.join("o"), "1"))
            .unwrap();
        cache.evict("st", &key).unwrap();
        assert!(cache.lookup("st", &key).is_none());
        assert!(entries(&cache.stage_dir("st")).is_empty());
        cache.evict("st", &key).unwrap();
    }

    #[test]
    fn write_atomic_replaces() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic_mode(&p, b"three", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
