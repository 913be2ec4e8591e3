//! `pgkraft package IMAGE --oci DIR`: a built image, its manifest and its
//! SBOM as one OCI artifact in an OCI image layout, which `skopeo copy` or
//! `oras` push to any registry (README, "Publishing an image").
//!
//! The artifact (image-spec 1.1): `artifactType`
//! [`ARTIFACT_TYPE`], the empty config, and three layers, the image's
//! three files byte for byte, each titled with its file name (what `oras
//! pull` names them). Annotations say what it is: PostgreSQL version,
//! recipe and image sha256, and the creation time from SOURCE_DATE_EPOCH,
//! so the same image packaged twice gives the same digests.
//! docs/ARCHITECTURE.md, "Release artifacts".

pub mod oci;

use crate::build::manifest::Manifest as BuildManifest;
use crate::build::sbom::{self, spdx};
use crate::image::format::BuildInfo;
use oci::Descriptor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the artifact is, for registries and tools that sort artifacts.
pub const ARTIFACT_TYPE: &str = "application/vnd.pgkraft.image.v1";
/// The image: a bootable ELF (no compression: the rootfs inside already is).
pub const IMAGE_MEDIA_TYPE: &str = "application/vnd.pgkraft.image.v1.elf";
/// `<name>.manifest.json`.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.pgkraft.manifest.v1+json";
/// `<name>.spdx.json`: SPDX's registered media type, which SBOM tools
/// look for.
pub const SBOM_MEDIA_TYPE: &str = "application/spdx+json";

pub const TITLE: &str = "org.opencontainers.image.title";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const POSTGRES_VERSION: &str = "dev.pgkraft.postgres.version";
pub const RECIPE_SHA256: &str = "dev.pgkraft.recipe.sha256";
pub const IMAGE_SHA256: &str = "dev.pgkraft.image.sha256";
pub const PGKRAFT_VERSION: &str = "dev.pgkraft.version";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(
        "cannot read {}: {source}: give the image `pgkraft build` wrote (DIR/<name>.img)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: no build manifest in it: package an image `pgkraft build` made",
        path.display()
    )]
    NoBuildInfo { path: PathBuf },
    #[error(
        "{} is missing: `pgkraft build` writes it next to {}; rebuild the image, or keep the \
         image and its .manifest.json and .spdx.json together",
        missing.display(),
        image.display()
    )]
    Missing { missing: PathBuf, image: PathBuf },
    #[error("{}: not a{what} ({detail}): rebuild the image with `pgkraft build`", path.display())]
    Unreadable {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "{} describes an image with sha256 {said}, but {} has sha256 {actual}: they are from \
         different builds; rebuild, or package the image the file was written with",
        path.display(),
        image.display()
    )]
    Stale {
        path: PathBuf,
        image: PathBuf,
        said: String,
        actual: String,
    },
    #[error(
        "--tag {tag:?}: a tag is 1 to 128 letters, digits, `_`, `.` and `-`, not starting with \
         `.` or `-` (OCI distribution spec), such as 17.11"
    )]
    Tag { tag: String },
    #[error(transparent)]
    SourceDate(#[from] crate::build::rootfs::RootfsError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
}

impl PackageError {
    /// Bad input (exit 2) rather than a failing machine (exit 1).
    pub fn is_input(&self) -> bool {
        match self {
            PackageError::Oci(e) => e.is_input(),
            // Every file read is one the user named, or next to it.
            _ => true,
        }
    }
}

/// What `pgkraft package` made (its `--json`).
#[derive(Debug, Serialize)]
pub struct Packaged {
    pub layout: PathBuf,
    pub tag: String,
    /// The artifact manifest's digest: what a registry will call it.
    pub digest: String,
    pub artifact_type: String,
    pub image_sha256: String,
    pub annotations: BTreeMap<String, String>,
    pub layers: Vec<Descriptor>,
    pub other_tags: Vec<String>,
}

/// Packages `image` (with the manifest and SBOM next to it) into the OCI
/// layout `dir` under `tag` (default: the PostgreSQL version, else the
/// image's name).
pub fn package(image: &Path, dir: &Path, tag: Option<&str>) -> Result<Packaged, PackageError> {
    // Checked before any reading: a bad time or tag is the quickest fix.
    let created = crate::source_date::from_env()?;
    if let Some(t) = tag {
        check_tag(t)?;
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound if path != image => PackageError::Missing {
                missing: path.to_path_buf(),
                image: image.to_path_buf(),
            },
            _ => PackageError::Read {
                path: path.to_path_buf(),
                source,
            },
        })
    };
    let image_bytes = read(image)?;
    let info = build_info(image, &image_bytes)?;
    let image_sha256 = crate::build::cache::sha256_hex(&image_bytes);

    let sibling = |file: String| image.with_file_name(file);
    let manifest_path = sibling(crate::build::manifest::file_name(&info.name));
    let manifest_bytes = read(&manifest_path)?;
    let manifest: BuildManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| PackageError::Unreadable {
            path: manifest_path.clone(),
            what: " pgkraft build manifest",
            detail: e.to_string(),
        })?;
    same_image(&manifest_path, image, &manifest.image.sha256, &image_sha256)?;

    let sbom_path = sibling(sbom::file_name(&info.name));
    let sbom_bytes = read(&sbom_path)?;
    let doc: spdx::Document =
        serde_json::from_slice(&sbom_bytes).map_err(|e| PackageError::Unreadable {
            path: sbom_path.clone(),
            what: "n SPDX JSON document",
            detail: e.to_string(),
        })?;
    let described = doc
        .packages
        .iter()
        .find(|p| p.spdx_id == crate::build::sbom::IMAGE_ID)
        .and_then(|p| p.checksums.first())
        .map(|c| c.checksum_value.clone())
        .unwrap_or_default();
    same_image(&sbom_path, image, &described, &image_sha256)?;

    let postgres = info.postgres.as_ref().map(|p| p.version.clone());
    let tag = match tag {
        Some(t) => t.to_string(),
        None => postgres.clone().unwrap_or_else(|| info.name.clone()),
    };
    check_tag(&tag)?;

    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let layer = |media_type: &str, bytes: &[u8], title: String| {
        let mut d = Descriptor::of(media_type, bytes);
        d.annotations.insert(TITLE.into(), title);
        d
    };
    let layers = vec![
        // The name the build gave it, whatever the file is called now.
        layer(
            IMAGE_MEDIA_TYPE,
            &image_bytes,
            manifest.image.path.display().to_string(),
        ),
        layer(
            MANIFEST_MEDIA_TYPE,
            &manifest_bytes,
            file_name(&manifest_path),
        ),
        layer(SBOM_MEDIA_TYPE, &sbom_bytes, file_name(&sbom_path)),
    ];
    let mut annotations = BTreeMap::from([
        (CREATED.to_string(), created),
        (TITLE.to_string(), info.name.clone()),
        (RECIPE_SHA256.to_string(), info.recipe_sha256.clone()),
        (IMAGE_SHA256.to_string(), image_sha256.clone()),
        (PGKRAFT_VERSION.to_string(), info.pgkraft_version.clone()),
    ]);
    if let Some(v) = &postgres {
        annotations.insert(VERSION.into(), v.clone());
        annotations.insert(POSTGRES_VERSION.into(), v.clone());
    }
    let artifact = oci::Manifest {
        schema_version: 2,
        media_type: oci::MANIFEST_MEDIA_TYPE.into(),
        artifact_type: ARTIFACT_TYPE.into(),
        config: Descriptor::of(oci::EMPTY_MEDIA_TYPE, oci::EMPTY_BLOB),
        layers: layers.clone(),
        annotations: annotations.clone(),
    };
    let written = oci::write(
        dir,
        &tag,
        &artifact,
        &[oci::EMPTY_BLOB, &image_bytes, &manifest_bytes, &sbom_bytes],
    )?;
    Ok(Packaged {
        layout: dir.to_path_buf(),
        tag,
        digest: written.manifest.digest,
        artifact_type: ARTIFACT_TYPE.into(),
        image_sha256,
        annotations,
        layers,
        other_tags: written.other_tags,
    })
}

fn build_info(image: &Path, bytes: &[u8]) -> Result<BuildInfo, PackageError> {
    let elf = object::File::parse(bytes).map_err(|e| PackageError::Unreadable {
        path: image.to_path_buf(),
        what: "n ELF image",
        detail: e.to_string(),
    })?;
    crate::image::format::build_info(&elf).ok_or_else(|| PackageError::NoBuildInfo {
        path: image.to_path_buf(),
    })
}

fn same_image(path: &Path, image: &Path, said: &str, actual: &str) -> Result<(), PackageError> {
    if said == actual {
        return Ok(());
    }
    Err(PackageError::Stale {
        path: path.to_path_buf(),
        image: image.to_path_buf(),
        said: if said.is_empty() {
            "(none)".into()
        } else {
            said.into()
        },
        actual: actual.into(),
    })
}

/// A tag as the OCI distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), PackageError> {
    let ok_first = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok = |c: u8| ok_first(c) || c == b'.' || c == b'-';
    let b = tag.as_bytes();
    if !b.is_empty() && b.len() <= 128 && ok_first(b[0]) && b.iter().all(|&c| ok(c)) {
        Ok(())
    } else {
        Err(PackageError::Tag { tag: tag.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for good in ["17.11", "latest", "_x", "a-b.c_d"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
