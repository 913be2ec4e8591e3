//! The build manifest: sha256 and size of every input and output, the
//! recipe itself, and what the linker dropped. `BuildInfo` (everything but
//! the image's own hash) is also embedded in the image.

use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub role: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Inputs {
    pub files: Vec<FileEntry>,
}

impl Inputs {
    /// An input whose hash a stage already computed. Only the file name is
    /// kept: the hash identifies the content, and a directory (a cache, a
    /// checkout) would make two builds of one recipe differ.
    pub fn file(&mut self, role: &str, path: &Path, sha256: &str) {
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        self.files.push(FileEntry {
            role: role.into(),
            path: name,
            sha256: sha256.into(),
            bytes,
        });
    }
    /// An input file to hash now.
    pub fn path(&mut self, role: &str, path: &Path) {
        let sha256 = super::cache::sha256_file(path).unwrap_or_default();
        self.file(role, path, &sha256);
    }
    /// A derived input identified by its stage key (e.g. the libOS build).
    pub fn hashed(&mut self, role: &str, key: &str) {
        self.files.push(FileEntry {
            role: role.into(),
            path: PathBuf::new(),
            sha256: key.into(),
            bytes: 0,
        });
    }
}

/// What the image is and how it was made; embedded in the image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildInfo {
    pub pgkraft_version: String,
    pub name: String,
    pub recipe_file: PathBuf,
    pub recipe_sha256: String,
    pub recipe: String,
    pub memory_mib: u32,
    pub inputs: Inputs,
    /// The rootfs archive in the image (postgres images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<super::payload::PostgresFacts>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RootfsFacts {
    pub sha256: String,
    pub bytes: u64,
    pub tar_bytes: u64,
    pub compression: String,
    pub entries: usize,
}

impl BuildInfo {
    pub fn new(recipe: &Recipe, inputs: &Inputs, payload: &super::payload::Payload) -> BuildInfo {
        use sha2::Digest;
        BuildInfo {
            pgkraft_version: env!("CARGO_PKG_VERSION").into(),
            name: recipe.name.clone(),
            recipe_file: recipe
                .file
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default(),
            recipe_sha256: hex::encode(sha2::Sha256::digest(recipe.source_text.as_bytes())),
            recipe: recipe.source_text.clone(),
            memory_mib: recipe.vm.memory_mib,
            inputs: inputs.clone(),
            rootfs: payload.rootfs.as_ref().map(|r| RootfsFacts {
                sha256: r.sha256.clone(),
                bytes: r.bytes,
                tar_bytes: r.tar_bytes,
                compression: r.compression.extension().to_string(),
                entries: r.entries,
            }),
            postgres: payload.postgres.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkFacts {
    pub dropped_sections: usize,
    pub dropped_bytes: u64,
    /// The input objects that contribute most to the image, largest first.
    #[serde(default)]
    pub largest_objects: Vec<super::link::ObjectBytes>,
    /// What --gc-sections removed, per input object, largest first.
    #[serde(default)]
    pub dropped_objects: Vec<super::link::ObjectBytes>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub build: BuildInfo,
    pub image: FileEntry,
    pub link: LinkFacts,
    /// Every file in the rootfs with its size and why it is there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootfs_files: Vec<super::rootfs::RootfsFile>,
}
