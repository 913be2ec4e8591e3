//! What an image brings to a volume: its PostgreSQL major, whether it
//! carries a pre-initialized cluster and that cluster's identity (the head
//! of `data/global/pg_control` in its rootfs archive), and the cluster's
//! files to unpack. The archive is streamed: finding the control file or
//! unpacking `data/` never holds the whole tar in memory.

use super::control::{CONTROL_FILE, ControlHead, PgMajor};
use crate::build::select::DEFAULT_DATA_DIR;
use crate::image::Image;
use crate::image::format::{rootfs_compression, rootfs_section, stays_inside, write_copy};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why an image cannot initialize or check a volume.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: {detail}\n  fix: rebuild the image with this pgkraft (`pgkraft build RECIPE`)",
        path.display()
    )]
    Broken { path: PathBuf, detail: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A postgres image as a volume's source.
pub struct Source {
    pub path: PathBuf,
    pub major: PgMajor,
    /// The pre-initialized cluster's control head; none for an image that
    /// initializes its cluster at first boot (`cluster.preinit: false`).
    pub cluster: Option<ControlHead>,
}

/// The cluster's directory inside the rootfs archive (`data`).
fn data_prefix() -> &'static str {
    DEFAULT_DATA_DIR.trim_start_matches('/')
}

impl Source {
    /// The facts of `image`; `None` for an image that is not a postgres
    /// image (its volume has no cluster life cycle).
    pub fn of(image: &Image) -> Result<Option<Source>, SourceError> {
        let Some(pg) = image.build().and_then(|b| b.postgres.as_ref()) else {
            return Ok(None);
        };
        let path = image.path().to_path_buf();
        let broken = |detail: String| SourceError::Broken {
            path: path.clone(),
            detail,
        };
        let major = PgMajor::parse(&pg.version).ok_or_else(|| {
            broken(format!(
                "its build info names PostgreSQL {:?}, not a release",
                pg.version
            ))
        })?;
        let cluster = match pg.preinit {
            false => None,
            true => {
                let want = Path::new(data_prefix()).join(CONTROL_FILE);
                let mut head = None;
                for_each_entry(&path, |entry, rel| {
                    if rel == want {
                        let mut bytes = Vec::new();
                        entry.take(16).read_to_end(&mut bytes).map_err(|source| {
                            SourceError::Read {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        head = Some(ControlHead::parse(&bytes).map_err(|e| e.to_string()));
                        return Ok(false);
                    }
                    Ok(true)
                })?;
                match head {
                    Some(Ok(h)) => Some(h),
                    Some(Err(e)) => return Err(broken(format!("its {}: {e}", want.display()))),
                    None => {
                        return Err(broken(format!(
                            "its build info says it carries a cluster, and its rootfs has no {}",
                            want.display()
                        )));
                    }
                }
            }
        };
        Ok(Some(Source {
            path,
            major,
            cluster,
        }))
    }

    /// Unpacks the image's cluster (the archive's `data/`, modes kept,
    /// owner the caller) into `dest`, which exists.
    pub fn unpack_cluster(&self, dest: &Path) -> Result<(), SourceError> {
        let prefix = Path::new(data_prefix());
        for_each_entry(&self.path, |mut entry, rel| {
            if let Ok(inner) = rel.strip_prefix(prefix)
                && !inner.as_os_str().is_empty()
            {
                if !stays_inside(inner) {
                    return Err(SourceError::Broken {
                        path: self.path.clone(),
                        detail: format!("its rootfs holds {}, outside data/", rel.display()),
                    });
                }
                let to = dest.join(inner);
                let write = |source| SourceError::Write {
                    path: to.clone(),
                    source,
                };
                if entry.header().entry_type() != tar::EntryType::Link {
                    entry.set_preserve_permissions(true);
                    return entry.unpack(&to).map(|_| true).map_err(write);
                }
                // A copy of an earlier file of the cluster: the volume gets
                // a file of its own.
                let target = entry.link_name().ok().flatten();
                match target.as_deref().and_then(|l| l.strip_prefix(prefix).ok()) {
                    Some(from) if stays_inside(from) => {
                        write_copy(entry.header(), &dest.join(from), &to).map_err(write)?
                    }
                    _ => {
                        return Err(SourceError::Broken {
                            path: self.path.clone(),
                            detail: format!(
                                "its rootfs's {} is a copy of a file outside data/",
                                rel.display()
                            ),
                        });
                    }
                }
            }
            Ok(true)
        })
    }

    /// The image file's sha256 (hex).
    pub fn sha256(&self) -> Result<String, SourceError> {
        crate::build::cache::sha256_file(&self.path).map_err(|source| SourceError::Read {
            path: self.path.clone(),
            source,
        })
    }
}

/// Calls `each` with every entry of the image's rootfs archive and its
/// path (no leading `./`) until it answers false.
fn for_each_entry(
    image: &Path,
    mut each: impl FnMut(tar::Entry<'_, &mut dyn Read>, &Path) -> Result<bool, SourceError>,
) -> Result<(), SourceError> {
    let read = |source| SourceError::Read {
        path: image.to_path_buf(),
        source,
    };
    let broken = |detail: String| SourceError::Broken {
        path: image.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(image).map_err(read)?;
    let section = rootfs_section(&bytes).ok_or_else(|| broken("it has no rootfs".into()))?;
    let mut reader: Box<dyn Read> = match rootfs_compression(section) {
        "zstd" => Box::new(zstd::Decoder::new(section).map_err(read)?),
        _ => Box::new(section),
    };
    let reader: &mut dyn Read = &mut reader;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(read)? {
        let entry = entry.map_err(|e| broken(format!("its rootfs archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| broken(format!("its rootfs archive: {e}")))?
            .into_owned();
        let rel = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
        if !each(entry, &rel)? {
            break;
        }
    }
    Ok(())
}
