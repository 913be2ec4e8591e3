//! An OCI image layout (image-spec v1.1, image-layout.md) holding one
//! artifact manifest per tag: `oci-layout`, `index.json` and content-
//! addressed `blobs/sha256/<hex>`.
//!
//! Plain serde structs rather than the `oci-spec` crate: a layout needs
//! four small documents, and writing them ourselves keeps the field order
//! and the bytes (hence the digests) under our control and stable across
//! crate upgrades.
//!
//! Written so a reader never sees a half-made layout: every file goes to a
//! temporary name in its directory and is renamed into place; blobs first,
//! `index.json` (which makes a tag point at them) last.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::build::cache::{sha256_hex, write_atomic_mode};

/// Layout files are for others to read (a registry push, a file server):
/// readable by all, whatever the umask, like a release download.
const MODE: u32 = 0o644;

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, MODE)
}

pub const LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const LAYOUT_VERSION: &str = "1.0.0";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// image-spec 1.1's empty config for artifacts: the blob `{}`.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_BLOB: &[u8] = b"{}";
/// The annotation that names a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A blob as manifests point at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub artifact_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    /// Kept as found when adding to a layout another tool made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    image_layout_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "{}: not a directory: give --oci a new or empty directory, or an OCI image layout",
        path.display()
    )]
    NotDir { path: PathBuf },
    #[error(
        "{}: not empty and not an OCI image layout (it has no `oci-layout` file): give --oci a \
         new or empty directory, or an existing OCI image layout to add the tag to",
        path.display()
    )]
    NotLayout { path: PathBuf },
    #[error(
        "{}: {what}: give --oci a new or empty directory, or a valid OCI image layout (version \
         {LAYOUT_VERSION})",
        path.display()
    )]
    BadLayout { path: PathBuf, what: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl OciError {
    /// The user's to fix (exit 2), rather than the machine's.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            OciError::NotDir { .. } | OciError::NotLayout { .. } | OciError::BadLayout { .. }
        )
    }
}

/// What [`write`] put where.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    /// The manifest's descriptor, as `index.json` lists it.
    pub manifest: Descriptor,
    /// Tags in the layout besides this one (it was an existing layout).
    pub other_tags: Vec<String>,
}

/// Adds `manifest` (whose config and layers are `blobs`) to the layout in
/// `dir` under `tag`, making the layout if `dir` is missing or empty. A
/// manifest already under `tag` is replaced; other tags are kept.
pub fn write(
    dir: &Path,
    tag: &str,
    manifest: &Manifest,
    blobs: &[&[u8]],
) -> Result<Written, OciError> {
    let mut index = open_or_create(dir)?;
    let manifest_json = serde_json::to_vec(manifest).expect("OCI manifest serializes");
    let blob_dir = dir.join("blobs").join("sha256");
    mkdir(&blob_dir)?;
    for bytes in blobs.iter().copied().chain([manifest_json.as_slice()]) {
        put_blob(&blob_dir, bytes)?;
    }
    let mut descriptor = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest_json);
    descriptor.artifact_type = Some(manifest.artifact_type.clone());
    descriptor
        .annotations
        .insert(REF_NAME.into(), tag.to_string());
    index
        .manifests
        .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    let other_tags = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).cloned())
        .collect();
    index.manifests.push(descriptor.clone());
    let path = dir.join(INDEX_FILE);
    let json = serde_json::to_vec_pretty(&index).expect("OCI index serializes");
    write_atomic(&path, &json).map_err(|source| OciError::Write { path, source })?;
    Ok(Written {
        manifest: descriptor,
        other_tags,
    })
}

/// The index of the layout in `dir`, or a new empty one after writing
/// `oci-layout` into a missing or empty `dir`.
fn open_or_create(dir: &Path) -> Result<Index, OciError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| OciError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(OciError::NotDir {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {
            let layout_path = dir.join(LAYOUT_FILE);
            if layout_path.exists() {
                let bad = |what: String| OciError::BadLayout {
                    path: layout_path.clone(),
                    what,
                };
                let layout: Layout = serde_json::from_slice(&read(&layout_path)?)
                    .map_err(|e| bad(format!("not an OCI layout file ({e})")))?;
                if layout.image_layout_version != LAYOUT_VERSION {
                    return Err(bad(format!(
                        "imageLayoutVersion {:?}, not {LAYOUT_VERSION:?}",
                        layout.image_layout_version
                    )));
                }
                let index_path = dir.join(INDEX_FILE);
                return serde_json::from_slice(&read(&index_path)?).map_err(|e| {
                    OciError::BadLayout {
                        path: index_path,
                        what: format!("not an OCI image index ({e})"),
                    }
                });
            }
            let mut entries = std::fs::read_dir(dir).map_err(|source| OciError::Read {
                path: dir.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(OciError::NotLayout {
                    path: dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => mkdir(dir)?,
        Err(source) => {
            return Err(OciError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let layout = Layout {
        image_layout_version: LAYOUT_VERSION.into(),
    };
    let path = dir.join(LAYOUT_FILE);
    let json = serde_json::to_vec(&layout).expect("layout serializes");
    write_atomic(&path, &json).map_err(|source| OciError::Write { path, source })?;
    Ok(Index {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.into()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    })
}

fn mkdir(dir: &Path) -> Result<(), OciError> {
    std::fs::create_dir_all(dir).map_err(|source| OciError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` as `blob_dir/<sha256 hex>` unless a blob with those
/// exact bytes is there already (the name is the content's hash; one that
/// does not hash to its name is replaced).
fn put_blob(blob_dir: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let hex = sha256_hex(bytes);
    let path = blob_dir.join(&hex);
    if let Ok(existing) = std::fs::read(&path)
        && sha256_hex(&existing) == hex
    {
        return Ok(());
    }
    write_atomic(&path, bytes).map_err(|source| OciError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_digest_is_the_specs() {
        // image-spec 1.1, manifest.md "Guidance for an Empty Descriptor".
        assert_eq!(
            digest(EMPTY_BLOB),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
