//! Source tarballs, pinned by sha256 (docs/ARCHITECTURE.md §1, `fetch`).
//!
//! A recipe names a source by its sha256 and, optionally, where to get it.
//! Whatever the origin, nothing reaches a later stage without its hash being
//! checked, and the verified file is kept in the cache under
//! `sources/<sha256>/<file name>` so later builds find it without the
//! network or a rescan of the source directories.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::{self, Cache, CacheError, StageKey};

/// The cache stage that holds verified source files.
pub const SOURCES_STAGE: &str = "sources";

/// Colon-separated directories searched for tarballs by hash.
pub const SOURCES_ENV: &str = "PGKRAFT_SOURCES";

const FETCH_SCRIPT: &str = "ci/fetch-sources.sh";

pub use crate::catalog::SourceSpec;

impl SourceSpec {
    /// Checks what serde cannot: at most one origin, and a well-formed hash.
    pub fn validate(&self) -> Result<(), FetchError> {
        if self.url.is_some() && self.path.is_some() {
            return Err(FetchError::Spec(format!(
                "source with sha256 {} gives both `url` and `path`; give one of them \
                 (or neither, to look the file up by its sha256)",
                self.sha256
            )));
        }
        normalized_sha256(&self.sha256).map(|_| ())
    }
}

/// A source file whose contents were checked against the recipe's sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSource {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid source in recipe: {0}")]
    Spec(String),

    #[error(
        "source file {} (the recipe's `path`) does not exist.\n  \
         Fix the `path`, or remove it to look the tarball up by its sha256 ({sha256}) \
         in the source directories (run {FETCH_SCRIPT} to fill them).",
        path.display()
    )]
    MissingPath { path: PathBuf, sha256: String },

    #[error(
        "sha256 mismatch for {what}\n  expected (recipe): {expected}\n  actual:            {actual}\n  \
         If this is the file you want, set `sha256: {actual}` in the recipe; \
         otherwise point the recipe at the right file."
    )]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error(
        "no source file with sha256 {sha256} ({name_hint}) in {}, and the recipe gives no `url`.\n  \
         Put the tarball into one of these directories (on a machine without internet: \
         run {FETCH_SCRIPT}), name a directory holding it in ${SOURCES_ENV}, \
         or give a `url` or `path` in the recipe.",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        sha256: String,
        name_hint: String,
        searched: Vec<PathBuf>,
    },

    #[error(
        "cannot download {url}: {reason}\n  \
         The file (sha256 {sha256}) was not in the local source directories either. \
         If this machine has no internet access, run {FETCH_SCRIPT} (it needs only the \
         Debian archive), or copy the tarball into {} or a directory named in ${SOURCES_ENV}.",
        repo_sources_dir().display()
    )]
    Download {
        url: String,
        sha256: String,
        reason: String,
    },

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

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError {
    let path = path.to_path_buf();
    move |source| FetchError::Io { what, path, source }
}

fn normalized_sha256(s: &str) -> Result<String, FetchError> {
    let lower = s.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(FetchError::Spec(format!(
            "`sha256: {s}` is not a sha256 (expected 64 hex digits, as printed by sha256sum)"
        )))
    }
}

/// `<repo>/sources/`, where ci/fetch-sources.sh puts tarballs.
pub fn repo_sources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sources")
}

/// The local source stores, in search order: `$PGKRAFT_SOURCES`, then the
/// repository's `sources/`.
pub fn default_source_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(SOURCES_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    dirs.push(repo_sources_dir());
    dirs
}

/// Finds, verifies and caches the source `spec` names. `name_hint` (e.g.
/// "musl") only makes messages and file names readable.
pub fn fetch(
    spec: &SourceSpec,
    name_hint: &str,
    cache: &Cache,
) -> Result<VerifiedSource, FetchError> {
    fetch_from(spec, name_hint, cache, &default_source_dirs())
}

/// [`fetch`] with an explicit list of source directories instead of the
/// environment's.
pub fn fetch_from(
    spec: &SourceSpec,
    name_hint: &str,
    cache: &Cache,
    source_dirs: &[PathBuf],
) -> Result<VerifiedSource, FetchError> {
    spec.validate()?;
    let want = normalized_sha256(&spec.sha256)?;

    if let Some(path) = &spec.path {
        return verify_local(path, &want);
    }
    if let Some(found) = from_cache(cache, &want)? {
        return Ok(found);
    }
    if let Some(found) = from_stores(cache, &want, name_hint, source_dirs)? {
        return Ok(found);
    }
    match &spec.url {
        Some(url) => download_into_cache(cache, url, &want, name_hint),
        None => {
            let mut searched = vec![cache.stage_dir(SOURCES_STAGE)];
            searched.extend(source_dirs.iter().cloned());
            Err(FetchError::NotFound {
                sha256: want,
                name_hint: name_hint.to_string(),
                searched,
            })
        }
    }
}

fn verify_local(path: &Path, want: &str) -> Result<VerifiedSource, FetchError> {
    if !path.exists() {
        return Err(FetchError::MissingPath {
            path: path.to_path_buf(),
            sha256: want.to_string(),
        });
    }
    let actual = cache::sha256_file(path).map_err(io_err("cannot read", path))?;
    if actual != want {
        return Err(FetchError::Mismatch {
            what: path.display().to_string(),
            expected: want.to_string(),
            actual,
        });
    }
    Ok(VerifiedSource {
        path: path.to_path_buf(),
        sha256: actual,
    })
}

/// The single regular file inside a cache entry.
fn entry_file(dir: &Path) -> Option<PathBuf> {
    let mut files = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path());
    let first = files.next()?;
    files.next().is_none().then_some(first)
}

fn from_cache(cache: &Cache, want: &str) -> Result<Option<VerifiedSource>, FetchError> {
    let key = StageKey::from_hex(want)?;
    let Some(dir) = cache.lookup(SOURCES_STAGE, &key) else {
        return Ok(None);
    };
    // Re-hashing costs a fraction of a second and catches a damaged cache,
    // which would otherwise poison every later stage silently.
    if let Some(file) = entry_file(&dir)
        && cache::sha256_file(&file).ok().as_deref() == Some(want)
    {
        return Ok(Some(VerifiedSource {
            path: file,
            sha256: want.to_string(),
        }));
    }
    log::warn!("{}: damaged cache entry, discarding it", dir.display());
    cache.evict(SOURCES_STAGE, &key)?;
    Ok(None)
}

const TARBALL_SUFFIXES: &[&str] = &[
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar.zst",
    ".tzst",
    ".tar.lz",
    ".tar.lzma",
    ".zip",
];

fn looks_like_tarball(name: &str) -> bool {
    TARBALL_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn from_stores(
    cache: &Cache,
    want: &str,
    name_hint: &str,
    dirs: &[PathBuf],
) -> Result<Option<VerifiedSource>, FetchError> {
    for dir in dirs {
        let Ok(rd) = fs::read_dir(dir) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_type()
                    .map(|t| t.is_file() || t.is_symlink())
                    .unwrap_or(false)
            })
            .filter(|e| looks_like_tarball(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        // Likely matches first, so the usual case hashes one file per store.
        // The hint's leading word ("musl" of "musl-1.2.3.tar.gz") also
        // matches Debian's "musl_1.2.3.orig.tar.gz".
        let word = name_hint.split(['-', '_', '.']).next().unwrap_or(name_hint);
        candidates.sort_by_key(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (!name.starts_with(word), name)
        });
        for file in candidates {
            let Ok(actual) = cache::sha256_file(&file) else {
                continue;
            };
            if actual == want {
                return import(cache, &file, want).map(Some);
            }
        }
    }
    Ok(None)
}

/// Copies a verified file into the cache, re-checking the bytes as they are
/// copied since the original may change between the scan and the copy.
fn import(cache: &Cache, file: &Path, want: &str) -> Result<VerifiedSource, FetchError> {
    let key = StageKey::from_hex(want)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".to_string());
    let dir = cache
        .get_or_build(SOURCES_STAGE, &key, |tmp| -> Result<(), FetchError> {
            let mut src = File::open(file).map_err(io_err("cannot read", file))?;
            let dest = tmp.join(&name);
            let actual = copy_hashing(&mut src, &dest).map_err(io_err("cannot copy", file))?;
            check(&file.display().to_string(), want, actual)
        })
        .map_err(from_cache_error)?;
    cached_source(&dir, want)
}

fn cached_source(dir: &Path, want: &str) -> Result<VerifiedSource, FetchError> {
    let path = entry_file(dir).ok_or_else(|| {
        io_err("cache entry holds no single file:", dir)(io::Error::from(io::ErrorKind::NotFound))
    })?;
    Ok(VerifiedSource {
        path,
        sha256: want.to_string(),
    })
}

fn check(what: &str, want: &str, actual: String) -> Result<(), FetchError> {
    if actual == want {
        Ok(())
    } else {
        Err(FetchError::Mismatch {
            what: what.to_string(),
            expected: want.to_string(),
            actual,
        })
    }
}

fn from_cache_error(e: CacheError) -> FetchError {
    match e.into_build_error::<FetchError>() {
        Ok(fe) => fe,
        Err(ce) => FetchError::Cache(ce),
    }
}

/// Writes `src` to a new file at `dest`, returning the sha256 of the bytes.
fn copy_hashing(src: &mut impl Read, dest: &Path) -> io::Result<String> {
    let mut out = File::create(dest)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    Ok(hex::encode(h.finalize()))
}

/// A file name for a download: the URL's last path segment, restricted to
/// characters that are harmless in a path.
fn file_name_for(url: &str, name_hint: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        format!("{name_hint}.download")
    } else {
        clean
    }
}

fn download_into_cache(
    cache: &Cache,
    url: &str,
    want: &str,
    name_hint: &str,
) -> Result<VerifiedSource, FetchError> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(FetchError::Spec(format!(
            "url {url}: only http:// and https:// are supported; use `path` for a local file"
        )));
    }
    let key = StageKey::from_hex(want)?;
    let name = file_name_for(url, name_hint);
    log::info!("downloading {url}");
    let dir = cache
        .get_or_build(SOURCES_STAGE, &key, |tmp| -> Result<(), FetchError> {
            let dest = tmp.join(&name);
            let actual = download(url, &dest).map_err(|reason| FetchError::Download {
                url: url.to_string(),
                sha256: want.to_string(),
                reason,
            })?;
            check(url, want, actual)
        })
        .map_err(from_cache_error)?;
    cached_source(&dir, want)
}

fn download(url: &str, dest: &Path) -> Result<String, String> {
    // Generous overall limit for slow mirrors, short limits where a dead
    // host would otherwise hang the build.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_global(Some(Duration::from_secs(30 * 60)))
        .user_agent(concat!("pgkraft/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut body = response.into_body().into_reader();
    copy_hashing(&mut body, dest).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(
            file_name_for("https://musl.libc.org/releases/musl-1.2.3.tar.gz", "musl"),
            "musl-1.2.3.tar.gz"
        );
        assert_eq!(
            file_name_for("https://x/a%2bb.tar.gz?x=1#f", "m"),
            "a_2bb.tar.gz"
        );
        assert_eq!(file_name_for("https://x/", "musl"), "musl.download");
        assert_eq!(file_name_for("https://x/..", "musl"), "musl.download");
    }

    #[test]
    fn spec_validation() {
        let ok = SourceSpec {
            url: None,
            path: None,
            sha256: "AB".repeat(32),
        };
        assert!(ok.validate().is_ok());
        let both = SourceSpec {
            url: Some("https://x/y.tar.gz".into()),
            path: Some("y.tar.gz".into()),
            ..ok.clone()
        };
        assert!(matches!(both.validate(), Err(FetchError::Spec(_))));
        let short = SourceSpec {
            sha256: "abc".into(),
            ..ok
        };
        assert!(matches!(short.validate(), Err(FetchError::Spec(_))));
    }

    #[test]
    fn tarball_names() {
        assert!(looks_like_tarball("postgresql-17_17.12.orig.tar.bz2"));
        assert!(looks_like_tarball("musl_1.2.3.orig.tar.gz"));
        assert!(!looks_like_tarball("musl_1.2.3-1.dsc"));
        assert!(!looks_like_tarball("musl_1.2.3.orig.tar.gz.asc"));
    }
}
