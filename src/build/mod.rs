//! The build pipeline (docs/ARCHITECTURE.md §1): recipe -> image + manifest.
//!
//! Each stage is a function from typed inputs to typed outputs, cached by
//! the sha256 of its inputs (build::cache). The image and manifest are
//! written under temporary names in the output directory and renamed at the
//! end, so a failed build leaves nothing that looks like a result.

pub mod cache;
pub mod compile;
pub mod exec;
pub mod fetch;
pub mod host_files;
pub mod libos;
pub mod link;
pub mod manifest;
pub mod musl;
pub mod payload;
pub mod postgres;
pub mod rootfs;
pub mod rootfs_index;
pub mod sbom;
pub mod select;

use crate::progress::Progress;
use crate::recipe::{Kind, Recipe};
use cache::Cache;
use std::path::{Path, PathBuf};

/// What `pgkraft build` produced.
#[derive(Debug, serde::Serialize)]
pub struct BuildOutput {
    pub name: String,
    pub image: PathBuf,
    pub manifest: PathBuf,
    /// The image's symbols (`<name>.debug`): nothing at run time needs them.
    pub debug: PathBuf,
    /// The SPDX 2.3 SBOM, `<name>.spdx.json`.
    pub sbom: PathBuf,
    /// Other files written next to the image (e.g. a generated password).
    pub extra_outputs: Vec<PathBuf>,
    pub image_bytes: u64,
    pub image_sha256: String,
    pub dropped_sections: usize,
    pub dropped_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(transparent)]
    Musl(#[from] musl::MuslError),
    #[error(transparent)]
    Libos(#[from] libos::LibosError),
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    #[error(transparent)]
    Link(exec::StageFailure),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    // Boxed: these carry log tails and paths, and every stage returns
    // BuildError, so its size is paid on every Ok path too.
    #[error(transparent)]
    Postgres(Box<postgres::PgError>),
    #[error(transparent)]
    Select(Box<select::SelectError>),
    #[error(transparent)]
    Rootfs(Box<rootfs::RootfsError>),
    #[error(transparent)]
    HostFiles(Box<host_files::HostFilesError>),
    #[error(transparent)]
    Sbom(Box<sbom::SbomError>),
    #[error("cannot read {}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<postgres::PgError> for BuildError {
    fn from(e: postgres::PgError) -> Self {
        BuildError::Postgres(Box::new(e))
    }
}
impl From<sbom::SbomError> for BuildError {
    fn from(e: sbom::SbomError) -> Self {
        BuildError::Sbom(Box::new(e))
    }
}
impl From<select::SelectError> for BuildError {
    fn from(e: select::SelectError) -> Self {
        BuildError::Select(Box::new(e))
    }
}
impl From<host_files::HostFilesError> for BuildError {
    fn from(e: host_files::HostFilesError) -> Self {
        BuildError::HostFiles(Box::new(e))
    }
}
impl From<rootfs::RootfsError> for BuildError {
    fn from(e: rootfs::RootfsError) -> Self {
        BuildError::Rootfs(Box::new(e))
    }
}

impl BuildError {
    /// Bad input (the user's to fix) is 2; a failing tool or machine is 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::Fetch(fetch::FetchError::Spec(_))
            | BuildError::Fetch(fetch::FetchError::MissingPath { .. })
            | BuildError::Fetch(fetch::FetchError::Mismatch { .. })
            | BuildError::Fetch(fetch::FetchError::NotFound { .. })
            | BuildError::Compile(compile::CompileError::Source(_)) => 2,
            BuildError::Rootfs(e) if matches!(**e, rootfs::RootfsError::SourceDateEpoch { .. }) => {
                2
            }
            BuildError::Postgres(e) => e.exit_code(),
            BuildError::HostFiles(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Where a build's stage logs go: `<out>/logs/<stage>.log`, fresh each build.
pub struct Logs {
    pub dir: PathBuf,
}

impl Logs {
    fn new(out: &Path) -> Result<Logs, BuildError> {
        let dir = out.join("logs");
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::Output {
            path: dir.clone(),
            source,
        })?;
        Ok(Logs { dir })
    }
    pub fn stage(&self, name: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&p);
        p
    }
}

pub fn build(recipe: &Recipe, out: &Path, progress: &Progress) -> Result<BuildOutput, BuildError> {
    let cache = Cache::from_env()?;
    // Read first: a bad SOURCE_DATE_EPOCH is refused before any work.
    let created = crate::source_date::from_env()?;
    std::fs::create_dir_all(out).map_err(|source| BuildError::Output {
        path: out.to_path_buf(),
        source,
    })?;
    let logs = Logs::new(out)?;
    let mut inputs = manifest::Inputs::default();

    let stage = progress.stage("fetch");
    let musl_src = fetch::fetch(&musl::MUSL_PIN.spec(), musl::MUSL_PIN.file_name, &cache)?;
    inputs.file("musl source", &musl_src.path, &musl_src.sha256);
    stage.finish(&format!("musl {}", musl::MUSL_PIN.version));

    let stage = progress.stage("musl");
    let musl = musl::build_musl(
        &musl_src,
        musl::MuslFlavor::Patched,
        &cache,
        &logs.stage("musl"),
    )?;
    stage.finish("patched: system calls are function calls");

    let stage = progress.stage("libos");
    let libos = libos::build(&recipe.libos.config, &cache, &logs.stage("libos"))?;
    inputs.hashed("libOS", &libos.key);
    for f in &recipe.libos.fragments {
        inputs.path("kernel config", f);
    }
    stage.finish("done");

    let payload = match &recipe.kind {
        Kind::Program(p) => {
            payload::program(recipe, p, &musl, &cache, &logs, &mut inputs, progress)?
        }
        Kind::Postgres(pg) => payload::postgres(
            recipe,
            pg,
            &musl_src,
            out,
            &cache,
            &logs,
            &mut inputs,
            progress,
        )?,
    };

    let stage = progress.stage("link");
    let info = manifest::BuildInfo::new(recipe, &inputs, &payload);
    let info_json = serde_json::to_vec(&info).expect("build info serializes");
    let image = out.join(format!("{}.img", recipe.name));
    let tmp_image = out.join(format!(".{}.img.tmp", recipe.name));
    let debug = out.join(crate::image::format::debug_file_name(&recipe.name));
    let tmp_debug = out.join(format!(".{}.debug.tmp", recipe.name));
    let link_input = link::ImageLink {
        objects: &payload.objects,
        musl: &musl,
        libos: &libos,
        argv: &payload.argv,
        env: &payload.env,
        rootfs: payload.rootfs.as_ref().map(|r| r.path.as_path()),
        build_info: &info_json,
        debug_out: &tmp_debug,
    };
    let remove_tmp = || {
        let _ = std::fs::remove_file(&tmp_image);
        let _ = std::fs::remove_file(&tmp_debug);
    };
    let report = link::link_image(&link_input, &tmp_image, &logs.stage("link")).map_err(|e| {
        remove_tmp();
        BuildError::Link(e)
    })?;
    stage.finish(&format!(
        "{} unused sections dropped",
        report.dropped_sections
    ));
    if let Some(install) = &payload.host_install {
        record_native(&cache, &info_json, install).inspect_err(|_| remove_tmp())?;
    }

    let stage = progress.stage("manifest");
    // An output as the manifest lists it: its final name, the written
    // file's sha256 and size.
    let entry = |role: &str, tmp: &Path, last: &Path| -> Result<manifest::FileEntry, BuildError> {
        let err = |source| BuildError::Output {
            path: tmp.to_path_buf(),
            source,
        };
        Ok(manifest::FileEntry {
            role: role.into(),
            path: last.file_name().map(PathBuf::from).unwrap_or_default(),
            sha256: cache::sha256_file(tmp).map_err(err)?,
            bytes: std::fs::metadata(tmp).map_err(err)?.len(),
        })
    };
    let image_entry = entry("image", &tmp_image, &image).inspect_err(|_| remove_tmp())?;
    let debug_entry = entry("debug symbols", &tmp_debug, &debug).inspect_err(|_| remove_tmp())?;
    let (image_sha256, image_bytes) = (image_entry.sha256.clone(), image_entry.bytes);
    let manifest_path = out.join(manifest::file_name(&recipe.name));
    let manifest = manifest::Manifest {
        build: info,
        image: image_entry,
        debug: Some(debug_entry),
        link: manifest::LinkFacts::new(&report, cache.root()),
        rootfs_files: payload
            .rootfs
            .as_ref()
            .map(|r| r.files.clone())
            .unwrap_or_default(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    let sbom_json = sbom_json(recipe, &manifest, &created).inspect_err(|_| remove_tmp())?;
    let sbom_path = out.join(sbom::file_name(&recipe.name));
    let finish = || -> std::io::Result<()> {
        std::fs::rename(&tmp_debug, &debug)?;
        std::fs::rename(&tmp_image, &image)?;
        cache::write_atomic(&manifest_path, &json)?;
        cache::write_atomic(&sbom_path, &sbom_json)
    };
    finish().map_err(|source| {
        remove_tmp();
        BuildError::Output {
            path: image.clone(),
            source,
        }
    })?;
    stage.finish(&format!("{} bytes", image_bytes));

    Ok(BuildOutput {
        name: recipe.name.clone(),
        image,
        manifest: manifest_path,
        debug,
        sbom: sbom_path,
        extra_outputs: payload.extra_outputs,
        image_bytes,
        image_sha256,
        dropped_sections: report.dropped_sections,
        dropped_bytes: report.dropped_bytes,
    })
}

/// The SBOM of the image `manifest` describes, as file bytes.
fn sbom_json(
    recipe: &Recipe,
    manifest: &manifest::Manifest,
    created: &str,
) -> Result<Vec<u8>, BuildError> {
    // The lock file of the libOS sources this build compiled (build::libos).
    let lock_path = crate::paths::libos_dir().join("Cargo.lock");
    let libos_lock = std::fs::read_to_string(&lock_path).map_err(|source| BuildError::Input {
        path: lock_path.clone(),
        source,
    })?;
    let postgres_url = match &recipe.kind {
        Kind::Postgres(pg) => pg.source.url.as_deref(),
        Kind::Program(_) => None,
    };
    let doc = sbom::document(&sbom::SbomInput {
        manifest,
        postgres_url,
        libos_lock: &libos_lock,
        host_lock: sbom::crates::HOST_LOCK,
        created,
    })?;
    Ok(sbom::to_json(&doc))
}

/// Records in the cache where the image's host-linked build is, under the
/// image's build info ([`crate::image::format::native_index_key`]), so
/// `smoke --native` finds it from the image alone. The path is relative to
/// the cache root, so a moved cache still answers.
fn record_native(cache: &Cache, info_json: &[u8], install: &Path) -> Result<(), BuildError> {
    let dir = cache.root().join(NATIVE_INDEX);
    let file = dir.join(crate::image::format::native_index_key(info_json));
    let rel = install.strip_prefix(cache.root()).unwrap_or(install);
    let out = |source| BuildError::Output {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(out)?;
    cache::write_atomic(&file, rel.as_os_str().as_encoded_bytes()).map_err(out)
}

/// The cache's directory of [`record_native`] records.
pub const NATIVE_INDEX: &str = "native-index";
