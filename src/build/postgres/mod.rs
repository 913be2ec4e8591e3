//! PostgreSQL from pinned source (docs/ARCHITECTURE.md §1: prepare, compile,
//! host link, initdb).
//!
//! Data flows one way through typed stages, each cached under the sha256 of
//! its inputs:
//!
//! ```text
//! VerifiedSource --prepare--> Prepared (patched source tree)
//!   --compile--> Compiled (objects of the server, every supported module,
//!                 the install tree of each; one per configuration)
//!   --link-----> PgBuild (the chosen modules renamed and tabled, the host
//!                 postgres, the install tree with only the chosen extensions)
//!   --initdb---> data directory
//! ```
//!
//! The extension list enters only at `link`, so changing it relinks in
//! seconds instead of recompiling the server.

pub mod compile;
mod control;
pub mod extensions;
pub mod first_boot;
pub mod initdb;
pub mod left_out;
pub mod link;
pub mod modules;
pub mod prepare;
pub mod scram;
pub mod user;

use std::path::{Path, PathBuf};

use super::cache::{Cache, CacheError, StageKey};
use super::exec::StageFailure;
use super::fetch::VerifiedSource;
use super::musl::MuslSysroot;
use crate::catalog::test_modules::{self, TestModule};

pub use crate::catalog::{PgPin, SUPPORTED_MAJORS, pin};
pub use extensions::supported_extensions;
pub use initdb::{Auth, ClusterSpec, initdb, single_user};

/// The installation prefix compiled into PostgreSQL. Its programs find
/// their files relative to their own location (`bin/../share`), so the
/// prefix matters only as the layout under it: `bin/`, `share/` (no
/// `postgresql/` level: PostgreSQL adds none under a prefix naming pgsql),
/// `lib/` (empty: modules are linked in).
pub const PREFIX: &str = "/usr/local/pgsql";

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct PgSpec<'a> {
    pub major: u32,
    pub source: &'a VerifiedSource,
    /// The optimization flag, e.g. `-O2` (one of -O0 -O1 -O2 -O3 -Os -Og -Oz).
    pub optimize: &'a str,
    /// Extensions as `CREATE EXTENSION` names; plpgsql is always built
    /// (initdb installs it). Those an extension requires are added.
    pub extensions: &'a [String],
    /// Extra `configure` arguments, passed after pgkraft's own.
    pub configure_extra: &'a [String],
    /// Test modules to link in (`catalog::test_modules` names).
    pub test_modules: &'a [String],
    /// `cluster.text_search`: without it the snowball stemmers
    /// ([`extensions::TEXT_SEARCH_MODULE`]) are left out.
    pub text_search: bool,
}

/// A built PostgreSQL: host programs, runtime files, and the objects of the
/// server for the image.
#[derive(Clone, Debug)]
pub struct PgBuild {
    pub major: u32,
    /// The release, e.g. "17.11".
    pub version: String,
    /// The installation, laid out as under [`PREFIX`]: `bin/postgres`,
    /// `bin/initdb`, `bin/pg_ctl` (static, stock musl: they run on this
    /// host), `share/` (postgres.bki, timezone/, timezonesets/, tsearch_data/,
    /// extension/ with the chosen extensions' control and SQL files).
    pub install: PathBuf,
    /// The postgres server with its linked-in modules and their table, in
    /// link order, to be linked with the patched musl and the libOS (the
    /// same files `install/bin/postgres` was linked from with stock musl).
    pub image_objects: Vec<PathBuf>,
    /// The modules linked in (library names, e.g. "plpgsql"), sorted;
    /// test modules included.
    pub modules: Vec<String>,
    /// Built-in modules linked as their stand-ins (left_out), sorted.
    pub left_out_modules: Vec<String>,
    /// The extensions whose files are installed (`CREATE EXTENSION` names),
    /// sorted; includes those added as requirements.
    pub extensions: Vec<String>,
    /// This build's cache key: it covers every input above.
    pub key: StageKey,
}

impl PgBuild {
    pub fn bin(&self, program: &str) -> PathBuf {
        self.install.join("bin").join(program)
    }
    pub fn share_dir(&self) -> PathBuf {
        self.install.join("share")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL {major} is not supported; supported major versions: {}",
        SUPPORTED_MAJORS.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
    )]
    UnsupportedMajor { major: u32 },

    #[error(
        "extension `{name}` is not available for PostgreSQL {major}.\n  \
         The extensions pgkraft can link in (no dlopen in an image, and no \
         external libraries) are: {}\n  \
         fix: remove `{name}` from the recipe's extensions, or choose one of these",
        supported.join(", ")
    )]
    UnknownExtension {
        name: String,
        major: u32,
        supported: Vec<&'static str>,
    },

    #[error("{0}")]
    Spec(String),

    #[error(transparent)]
    Patch(Box<PatchFailure>),

    #[error("{failure}\n  fix: {fix}")]
    Stage {
        failure: Box<StageFailure>,
        fix: String,
    },

    #[error("{stage}: {program} is needed but was not found ({detail}).\n  fix: {fix}")]
    MissingTool {
        stage: &'static str,
        program: String,
        detail: String,
        fix: String,
    },

    #[error("{stage}: {what} {}: {source}", path.display())]
    Io {
        stage: &'static str,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("postgres link: module {module} ({}): {reason}", path.display())]
    Module {
        module: String,
        path: PathBuf,
        reason: String,
    },

    #[error("postgres: {0}")]
    Cache(#[from] CacheError),

    #[error(transparent)]
    FirstBoot(Box<first_boot::FirstBootError>),
}

impl PgError {
    /// Bad input (the recipe's to fix) is 2; a failing tool or machine is 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            PgError::UnsupportedMajor { .. }
            | PgError::UnknownExtension { .. }
            | PgError::Spec(_)
            | PgError::Patch(_) => 2,
            _ => 1,
        }
    }

    pub(crate) fn stage(failure: StageFailure, fix: impl Into<String>) -> PgError {
        PgError::Stage {
            failure: Box::new(failure),
            fix: fix.into(),
        }
    }

    /// Unwraps a stage's own error from the cache's wrapper.
    pub(crate) fn from_cache(e: CacheError) -> PgError {
        match e.into_build_error::<PgError>() {
            Ok(pe) => pe,
            Err(ce) => PgError::Cache(ce),
        }
    }
}

/// A command that runs `program` with umask 022, so that the modes of
/// what it creates (directories made by `mkdir -p`, files made by patch)
/// do not depend on the umask pgkraft was started with. Arguments are
/// added to the returned command as usual.
pub(crate) fn with_umask_022(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(program);
    cmd
}

/// Creates the directory a log goes into, so tools can append to it.
pub(crate) fn log_dir_for(log: &Path) -> Result<(), PgError> {
    match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => {
            std::fs::create_dir_all(d).map_err(io_err("postgres", "cannot create log directory", d))
        }
        _ => Ok(()),
    }
}

/// A patch of the series that does not apply.
#[derive(Debug, thiserror::Error)]
#[error(
    "postgres prepare: patch {} does not apply to PostgreSQL {version} ({what}).\n  \
     log: {}\n--- last lines of the log ---\n{tail}\n  \
     fix: rebase the patch onto PostgreSQL {version} (the log shows the hunks that \
     failed), or remove it from {}",
    patch.display(), log.display(), series.display()
)]
pub struct PatchFailure {
    pub patch: PathBuf,
    pub series: PathBuf,
    pub version: String,
    pub what: String,
    pub log: PathBuf,
    pub tail: String,
}

pub(crate) fn io_err(
    stage: &'static str,
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> PgError {
    let path = path.to_path_buf();
    move |source| PgError::Io {
        stage,
        what,
        path,
        source,
    }
}

/// `postgres-patches/<major>/` in this repository.
pub fn default_patch_dir(major: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("postgres-patches")
        .join(major.to_string())
}

fn check_optimize(flag: &str) -> Result<(), PgError> {
    const OK: &[&str] = &["-O0", "-O1", "-O2", "-O3", "-Os", "-Og", "-Oz"];
    if OK.contains(&flag) {
        Ok(())
    } else {
        Err(PgError::Spec(format!(
            "optimization `{flag}` is not one of {}; fix: use one of these (e.g. -O2)",
            OK.join(" ")
        )))
    }
}

/// The host-linked `postgres` of a recipe's build, with stock musl: every
/// stage is looked up in the cache (and built if missing), logging into
/// `logs` (a directory). For native runs of an image's server.
pub fn host_server(
    spec: &crate::recipe::PostgresSpec,
    cache: &Cache,
    logs: &Path,
) -> Result<PathBuf, String> {
    use super::{fetch, musl};
    let musl_src = fetch::fetch(&musl::MUSL_PIN.spec(), musl::MUSL_PIN.file_name, cache)
        .map_err(|e| e.to_string())?;
    let logs = super::Logs {
        dir: logs.to_path_buf(),
    };
    let quiet = crate::progress::Progress::new(true);
    let (_, pg) = super::payload::host_postgres(spec, &musl_src, cache, &logs, &quiet)
        .map_err(|e| e.to_string())?;
    Ok(pg.bin("postgres"))
}

/// Builds PostgreSQL (or finds it in the cache): prepare, compile, link.
/// Each stage appends its tool output to its own log in `logs`.
pub fn build(
    spec: &PgSpec,
    stock_musl: &MuslSysroot,
    cache: &Cache,
    logs: &PgLogs,
) -> Result<PgBuild, PgError> {
    if !SUPPORTED_MAJORS.contains(&spec.major) {
        return Err(PgError::UnsupportedMajor { major: spec.major });
    }
    check_optimize(spec.optimize)?;
    let chosen = extensions::resolve(spec.major, spec.extensions)?;
    let tests = resolve_test_modules(spec.major, spec.test_modules)?;
    let prepared = prepare::prepare(
        spec.source,
        spec.major,
        &default_patch_dir(spec.major),
        cache,
        &logs.prepare,
    )?;
    let compiled = compile::compile(
        &prepared,
        &compile::CompileOptions {
            optimize: spec.optimize,
            configure_extra: spec.configure_extra,
        },
        stock_musl,
        cache,
        &logs.compile,
    )?;
    let builtin = extensions::builtin_modules(&compiled.manifest.builtin_modules, spec.text_search);
    link::link(
        &compiled, &builtin, &chosen, &tests, stock_musl, cache, &logs.link,
    )
}

/// The catalogue entries of `names`, sorted, each once. The recipe checks
/// them with their place in the file; this is for other callers.
fn resolve_test_modules(major: u32, names: &[String]) -> Result<Vec<&'static TestModule>, PgError> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let m = test_modules::find(major, n).ok_or_else(|| {
            PgError::Spec(format!(
                "test module `{n}` is not one pgkraft can link into PostgreSQL {major}; \
                 fix: use one of {}",
                test_modules::names(major).join(", ")
            ))
        })?;
        out.push(m);
    }
    out.sort_by_key(|m| m.name);
    out.dedup();
    Ok(out)
}

/// The log file of each stage of [`build`].
#[derive(Clone, Debug)]
pub struct PgLogs {
    pub prepare: PathBuf,
    pub compile: PathBuf,
    pub link: PathBuf,
}

impl PgLogs {
    /// `<dir>/postgres-<stage>.log` for each stage.
    pub fn in_dir(dir: &Path) -> PgLogs {
        PgLogs {
            prepare: dir.join("postgres-prepare.log"),
            compile: dir.join("postgres-compile.log"),
            link: dir.join("postgres-link.log"),
        }
    }
}

/// `cc -c -O2` with the musl sysroot's flags and the image's base flags:
/// how pgkraft compiles the small C files it generates (module table, host
/// clock) so they match the server's objects.
pub(crate) fn musl_cc(
    musl: &MuslSysroot,
    stage: &'static str,
) -> Result<std::process::Command, PgError> {
    let musl_flags = musl.compile_flags().map_err(|e| PgError::MissingTool {
        stage,
        program: "cc".into(),
        detail: e.to_string(),
        fix: "install gcc (ci/bootstrap.sh does)".into(),
    })?;
    let mut cc = std::process::Command::new(super::musl::CC);
    cc.arg("-c")
        .arg("-O2")
        .args(&musl_flags)
        .args(super::compile::BASE_CFLAGS);
    Ok(cc)
}
