//! A cluster made at first boot (`cluster.preinit: false`; docs/
//! ARCHITECTURE.md §3, "First boot"): initdb recorded at build time and
//! replayed by the image.
//!
//! ```text
//! PgBuild + ClusterSpec --record--> Recording (initdb's runs of postgres)
//!   --plan--> plan directory (cache stage `pg-first-boot`)
//! first_boot.c --compile--> starter object (cache stage `pg-first-boot-starter`)
//! ```
//!
//! The image carries the plan in its share directory and links the
//! starter, which carries it out when the data directory is empty.

mod plan;
mod record;

use std::path::{Path, PathBuf};

use super::initdb::{self, ClusterSpec};
use super::{PgBuild, PgError, io_err};
use crate::build::cache::{Cache, KeyHasher};
use crate::build::exec;
use crate::build::musl::MuslSysroot;
use crate::build::select::{Reason, SHARE_FILE_MODE, Selected};

pub use plan::Target;

pub const PLAN_STAGE: &str = "pg-first-boot";
pub const STARTER_STAGE: &str = "pg-first-boot-starter";

/// Bumped when the recording or the plan's format changes in a way the
/// keys' inputs do not show.
const PLAN_RECIPE: &str = "pg-first-boot-v1";

/// The environment variable naming the plan's directory in the image
/// (first_boot.c reads it).
pub const PLAN_ENV: &str = "PGKRAFT_FIRST_BOOT";

/// The plan's directory under the image's share directory.
pub const PLAN_DIR: &str = "pgkraft-first-boot";

const STARTER_SOURCE: &str = include_str!("first_boot.c");

#[derive(Debug, thiserror::Error)]
pub enum FirstBootError {
    #[error(
        "initdb ran `postgres {args}`, which the first-boot recorder does not know \
         (neither a probe nor the bootstrap or single-user run).\n  log: {}\n  \
         fix: teach build/postgres/first_boot/record.rs this invocation, or build with \
         `cluster.preinit: true`", log.display()
    )]
    UnknownInvocation { args: String, log: PathBuf },
    #[error(
        "initdb ran no bootstrap or single-user postgres under the recorder.\n  log: {}\n  \
         fix: the log shows what initdb did; build with `cluster.preinit: true` meanwhile",
        log.display()
    )]
    NothingRecorded { log: PathBuf },
    #[error(
        "initdb's SQL for this PostgreSQL lacks {expected}, which the first-boot plan \
         rewrites.\n  fix: adapt build/postgres/first_boot/plan.rs to this release, or build \
         with `cluster.preinit: true`"
    )]
    SqlChanged { expected: String },
    #[error(
        "{what} `{value}` cannot go into the first-boot plan: {why}.\n  fix: build with \
         `cluster.preinit: true`, or report this with the recipe"
    )]
    Unusable {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "the first-boot plan would set a password that is not the superuser's SCRAM secret \
         ({}): an image must never carry a plain-text password.\n  fix: this is a pgkraft \
         bug; build with `cluster.preinit: true` meanwhile", file.display()
    )]
    PasswordInPlan { file: PathBuf },
    #[error(
        "the first-boot plan file {} names {}, a place on this build machine: the image \
         would not be reproducible, nor work.\n  fix: adapt build/postgres/first_boot/plan.rs \
         to what initdb wrote there", file.display(), path.display()
    )]
    BuildPathInPlan { file: PathBuf, path: PathBuf },
    #[error("first boot plan: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FirstBootError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FirstBootError {
        let path = path.to_path_buf();
        move |source| FirstBootError::Io { what, path, source }
    }
}

impl From<FirstBootError> for PgError {
    fn from(e: FirstBootError) -> PgError {
        PgError::FirstBoot(Box::new(e))
    }
}

/// What an image needs to make its cluster at first boot.
#[derive(Clone, Debug)]
pub struct FirstBoot {
    /// The plan's directory (in the cache).
    pub plan: PathBuf,
    /// Its place in the image.
    pub plan_in_image: PathBuf,
    /// The starter object, linked into the image's program.
    pub starter: PathBuf,
}

impl FirstBoot {
    /// The plan's files as rootfs entries.
    pub fn entries(&self) -> Result<Vec<Selected>, PgError> {
        let mut out = Vec::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = self.plan.join(&rel);
            for e in std::fs::read_dir(&dir).map_err(io_err(
                "postgres first boot",
                "cannot read",
                &dir,
            ))? {
                let e = e.map_err(io_err("postgres first boot", "cannot read", &dir))?;
                let rel = rel.join(e.file_name());
                if e.path().is_dir() {
                    todo.push(rel);
                    continue;
                }
                out.push(Selected {
                    path: self.plan_in_image.join(&rel),
                    source: e.path(),
                    mode: Some(SHARE_FILE_MODE),
                    reason: Reason::FirstBoot {
                        file: rel.display().to_string(),
                    },
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// `KEY=value` for the image's environment.
    pub fn env(&self) -> String {
        format!("{PLAN_ENV}={}", self.plan_in_image.display())
    }
}

/// Records initdb for `cluster` and writes the plan (or finds it in the
/// cache), and compiles the starter.
pub fn prepare(
    pg: &PgBuild,
    cluster: &ClusterSpec,
    target: &Target<'_>,
    musl: &MuslSysroot,
    cache: &Cache,
    log: &Path,
) -> Result<FirstBoot, PgError> {
    super::log_dir_for(log)?;
    cluster.validate()?;
    let secret = initdb::superuser_secret(cluster)?;
    let identity = initdb::cluster_identity(pg, cluster, secret.as_deref());
    let key = KeyHasher::new()
        .str("stage", PLAN_STAGE)
        .str("recipe", PLAN_RECIPE)
        .str("postgres", pg.key.as_str())
        .str("cluster", identity.as_str())
        .str("exec", &target.exec.display().to_string())
        .str("data", &target.data_dir.display().to_string())
        .str("share", &target.share_dir.display().to_string())
        .finish();
    let plan = cache
        .get_or_build(PLAN_STAGE, &key, |out| -> Result<(), PgError> {
            let rec = record::record(pg, cluster, secret.as_deref(), log)?;
            let secrets = plan::Secrets {
                secret: secret.as_deref(),
            };
            plan::write(&rec, target, &secrets, out)?;
            Ok(())
        })
        .map_err(PgError::from_cache)?;
    Ok(FirstBoot {
        plan,
        plan_in_image: target.share_dir.join(PLAN_DIR),
        starter: starter(musl, cache, log)?,
    })
}

/// first_boot.c compiled as the server's objects are.
fn starter(musl: &MuslSysroot, cache: &Cache, log: &Path) -> Result<PathBuf, PgError> {
    let stage = "postgres first boot (starter)";
    let flags = musl.compile_flags().map_err(|e| PgError::MissingTool {
        stage,
        program: "cc".into(),
        detail: e.to_string(),
        fix: "install gcc (ci/bootstrap.sh does)".into(),
    })?;
    let mut key = KeyHasher::new();
    key.str("stage", STARTER_STAGE)
        .str("source", STARTER_SOURCE)
        .str("musl", &musl.root.display().to_string());
    for f in &flags {
        key.str("flag", &f.to_string_lossy());
    }
    let dir = cache
        .get_or_build(STARTER_STAGE, &key.finish(), |out| -> Result<(), PgError> {
            let c = out.join("first_boot.c");
            std::fs::write(&c, STARTER_SOURCE).map_err(io_err(stage, "cannot write", &c))?;
            let mut cc = super::musl_cc(musl, stage)?;
            // A relative name: the object's file symbol must not name the
            // cache's temporary directory (the image keeps its symbols).
            cc.arg("-Wall")
                .arg("-Werror")
                .arg("-o")
                .arg("first_boot.o")
                .arg("first_boot.c")
                .current_dir(out)
                .env("LC_ALL", "C");
            exec::run(&mut cc, stage, log)
                .map_err(|f| PgError::stage(f, "first_boot.c does not compile with musl"))
        })
        .map_err(PgError::from_cache)?;
    Ok(dir.join("first_boot.o"))
}
