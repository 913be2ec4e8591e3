//! prepare: the PostgreSQL tarball unpacked and patched (cache stage
//! `pg-prepare`). The tree is never built in: compile does VPATH builds in
//! scratch directories, so one prepared tree serves every configuration.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use bzip2::read::BzDecoder;

use super::{PatchFailure, PgError, io_err, with_umask_022};
use crate::build::cache::{Cache, KeyHasher, StageKey};
use crate::build::exec;
use crate::build::fetch::VerifiedSource;

pub const CACHE_STAGE: &str = "pg-prepare";

/// Bumped when how the tree is prepared changes in a way the inputs do not
/// show.
const PREPARE_RECIPE: &str = "pg-prepare-v2";

/// A patched source tree.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub major: u32,
    /// e.g. "15.18", from the tarball's top-level directory.
    pub version: String,
    /// The source root (configure, src/, contrib/).
    pub src: PathBuf,
    pub key: StageKey,
}

/// The patches of `<patch_dir>/series`, in order. Blank lines and lines
/// starting with `#` are ignored.
pub fn series(patch_dir: &Path) -> Result<Vec<PathBuf>, PgError> {
    let series = patch_dir.join("series");
    let text = fs::read_to_string(&series).map_err(io_err(
        "postgres prepare",
        "cannot read patch series",
        &series,
    ))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let p = patch_dir.join(name);
        if !p.is_file() {
            return Err(PgError::Spec(format!(
                "{}:{}: patch `{name}` does not exist in {}; fix: add the file or remove the line",
                series.display(),
                n + 1,
                patch_dir.display()
            )));
        }
        out.push(p);
    }
    Ok(out)
}

/// Unpacks `source` and applies the series in `patch_dir` (or finds the
/// result in the cache). Tool output is appended to `log`.
pub fn prepare(
    source: &VerifiedSource,
    major: u32,
    patch_dir: &Path,
    cache: &Cache,
    log: &Path,
) -> Result<Prepared, PgError> {
    super::log_dir_for(log)?;
    let patches = series(patch_dir)?;
    let mut key = KeyHasher::new();
    key.str("stage", CACHE_STAGE)
        .str("recipe", PREPARE_RECIPE)
        .str("major", &major.to_string())
        .str("source-sha256", &source.sha256)
        .file("series", &patch_dir.join("series"))?;
    for p in &patches {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        key.file(&format!("patch {name}"), p)?;
    }
    let key = key.finish();

    let dir = cache
        .get_or_build(CACHE_STAGE, &key, |out| {
            let started = std::time::Instant::now();
            let r = prepare_into(source, major, patch_dir, &patches, out, log);
            super::compile::note(
                log,
                &format!(
                    "postgres prepare finished in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            );
            r
        })
        .map_err(PgError::from_cache)?;
    let version = fs::read_to_string(dir.join("VERSION")).map_err(io_err(
        "postgres prepare",
        "cannot read",
        &dir.join("VERSION"),
    ))?;
    Ok(Prepared {
        major,
        version: version.trim().to_string(),
        src: dir.join("src"),
        key,
    })
}

fn prepare_into(
    source: &VerifiedSource,
    major: u32,
    patch_dir: &Path,
    patches: &[PathBuf],
    out: &Path,
    log: &Path,
) -> Result<(), PgError> {
    let top = unpack(&source.path, out)?;
    let dir_name = top.file_name().unwrap_or_default().to_string_lossy();
    let version = dir_name
        .strip_prefix("postgresql-")
        .filter(|v| v.split('.').next() == Some(&major.to_string()))
        .ok_or_else(|| {
            PgError::Spec(format!(
                "{} unpacks to {dir_name}/, not postgresql-{major}.<minor>/; fix: point the \
                 recipe at a PostgreSQL {major} release tarball",
                source.path.display()
            ))
        })?
        .to_string();
    let src = out.join("src");
    fs::rename(&top, &src).map_err(io_err("postgres prepare", "cannot rename", &top))?;
    for p in patches {
        let mut cmd = with_umask_022("patch");
        cmd.args(exec::PATCH_ARGS)
            .arg(p)
            .current_dir(&src)
            .env("LC_ALL", "C");
        exec::run(&mut cmd, "postgres prepare", log).map_err(|f| {
            PgError::Patch(Box::new(PatchFailure {
                patch: p.clone(),
                series: patch_dir.join("series"),
                version: version.clone(),
                what: f.what,
                log: f.log,
                tail: f.tail,
            }))
        })?;
    }
    fs::write(out.join("VERSION"), format!("{version}\n")).map_err(io_err(
        "postgres prepare",
        "cannot write",
        &out.join("VERSION"),
    ))
}

/// Unpacks a .tar.bz2 into `dest` and returns its single top-level
/// directory. In-process (the bzip2 and tar crates) rather than tar(1): the
/// tar crate refuses entries that would land outside `dest`, keeps the
/// mtimes make relies on (a tarball's generated parsers must stay newer
/// than their grammars), and the result does not depend on which tar and
/// bzip2 the host has.
fn unpack(tarball: &Path, dest: &Path) -> Result<PathBuf, PgError> {
    let f = File::open(tarball).map_err(io_err("postgres prepare", "cannot open", tarball))?;
    let mut archive = tar::Archive::new(BzDecoder::new(io::BufReader::new(f)));
    archive.set_preserve_mtime(true);
    archive.set_preserve_permissions(true);
    archive
        .unpack(dest)
        .map_err(io_err("postgres prepare", "cannot unpack", tarball))?;
    let mut dirs = fs::read_dir(dest)
        .map_err(io_err("postgres prepare", "cannot read", dest))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(PgError::Spec(format!(
            "{} does not unpack to a single directory; fix: point the recipe at a \
             PostgreSQL release tarball",
            tarball.display()
        ))),
    }
}
