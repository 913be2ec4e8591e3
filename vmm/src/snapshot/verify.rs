//! The integrity cache: the memory file and the image are hashed once, and
//! the result is kept in `verified.json` against each file's identity
//! (device, inode, size, mtime and ctime; ctime cannot be set back by users,
//! so an in-place edit always invalidates it).
//!
//! docs/ARCHITECTURE.md §5.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Verified {
    entries: Vec<VerifiedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VerifiedEntry {
    /// Relative to the snapshot directory, or absolute (the image).
    path: PathBuf,
    identity: Identity,
    sha256: String,
}

impl Verified {
    pub(crate) fn record(&mut self, path: PathBuf, meta: &std::fs::Metadata, sha256: &str) {
        self.entries.retain(|e| e.path != path);
        self.entries.push(VerifiedEntry {
            path,
            identity: Identity::of(meta),
            sha256: sha256.into(),
        });
    }
    pub(crate) fn knows(&self, path: &Path, meta: &std::fs::Metadata, sha256: &str) -> bool {
        let id = Identity::of(meta);
        self.entries
            .iter()
            .any(|e| e.path == path && e.identity == id && e.sha256 == sha256)
    }
}

pub(crate) fn sha256_file(f: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}
