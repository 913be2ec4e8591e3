//! The build manifest: sha256 and size of every input and output, the
//! recipe itself, and what the linker dropped. `BuildInfo` (everything but
//! the image's own hash) is also embedded in the image.

use crate::image::format::BUILD_INFO_FORMAT;
pub use crate::image::format::{BuildInfo, FileEntry, Inputs, RootfsFacts};
use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

impl BuildInfo {
    pub fn new(recipe: &Recipe, inputs: &Inputs, payload: &super::payload::Payload) -> BuildInfo {
        BuildInfo {
            format: BUILD_INFO_FORMAT,
            pgkraft_version: env!("CARGO_PKG_VERSION").into(),
            name: recipe.name.clone(),
            recipe_file: recipe
                .file
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default(),
            recipe_sha256: super::cache::sha256_hex(recipe.source_text.as_bytes()),
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

impl LinkFacts {
    /// The link report with every object named without host paths (see
    /// [`portable_object_name`]), so two builds of one recipe write the same
    /// manifest whatever their cache and temporary directories.
    pub fn new(report: &super::link::LinkReport, cache_root: &Path) -> LinkFacts {
        // Sorted again by the portable names: ties in bytes were ordered by
        // host paths.
        let portable = |objects: &[super::link::ObjectBytes]| {
            let mut v: Vec<super::link::ObjectBytes> = objects
                .iter()
                .map(|o| super::link::ObjectBytes {
                    object: portable_object_name(&o.object, cache_root),
                    bytes: o.bytes,
                })
                .collect();
            v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.object.cmp(&b.object)));
            v
        };
        let mut largest_objects = portable(&report.objects);
        largest_objects.truncate(40);
        LinkFacts {
            dropped_sections: report.dropped_sections,
            dropped_bytes: report.dropped_bytes,
            largest_objects,
            dropped_objects: portable(&report.dropped_objects),
        }
    }
}

/// The manifest's file name for an image named `name` (next to the image).
pub fn file_name(name: &str) -> String {
    format!("{name}.manifest.json")
}

/// An input object as the manifest names it: under the cache,
/// `<stage>/<path inside the stage's entry>` (the entry's key is dropped:
/// keys of stages whose inputs are cached paths differ between caches);
/// elsewhere (a temporary directory), the file name. An archive member
/// keeps its `(member.o)` suffix.
pub fn portable_object_name(object: &str, cache_root: &Path) -> String {
    let (file, member) = match object.find('(') {
        Some(i) if object.ends_with(')') => object.split_at(i),
        _ => (object, ""),
    };
    let path = Path::new(file);
    if let Ok(rel) = path.strip_prefix(cache_root) {
        let mut parts = rel.components();
        if let (Some(stage), Some(_key)) = (parts.next(), parts.next()) {
            let rest = parts.as_path();
            return format!(
                "{}/{}{member}",
                stage.as_os_str().to_string_lossy(),
                rest.display()
            );
        }
    }
    if path.is_absolute() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return format!("{}{member}", name.unwrap_or_default());
    }
    object.to_string()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub build: BuildInfo,
    pub image: FileEntry,
    /// The symbols split off the image (`<name>.debug`, build::link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<FileEntry>,
    pub link: LinkFacts,
    /// Every file in the rootfs with its size and why it is there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rootfs_files: Vec<super::rootfs::RootfsFile>,
}

#[cfg(test)]
mod tests {
    use super::portable_object_name;
    use std::path::Path;

    #[test]
    fn object_names_lose_host_paths() {
        let root = Path::new("/home/u/.cache/pgkraft");
        let n = |o: &str| portable_object_name(o, root);
        assert_eq!(
            n("/home/u/.cache/pgkraft/pg-compile/abc123/server/src/backend/parser/gram.o"),
            "pg-compile/server/src/backend/parser/gram.o"
        );
        assert_eq!(
            n("/home/u/.cache/pgkraft/musl/def/lib/libc.a(vfprintf.lo)"),
            "musl/lib/libc.a(vfprintf.lo)"
        );
        assert_eq!(
            n("/tmp/.tmpXy12/pgkraft-entry-stubs.o"),
            "pgkraft-entry-stubs.o"
        );
        assert_eq!(n("relative/thing.o"), "relative/thing.o");
    }
}
