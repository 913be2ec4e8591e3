//! Runs the host's initdb with a recorder in place of `postgres`: a shell
//! script that writes down each invocation's arguments and, for the
//! bootstrap and single-user runs, their input and the data directory
//! before and after, then runs the real server. initdb itself reaches
//! `postgres` through popen and system, so a script it finds at its own
//! `bin/postgres` sees exactly what the server would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::super::compile::note;
use super::super::initdb::{self, ClusterSpec, Scratch};
use super::super::{PgBuild, PgError, io_err};
use super::FirstBootError;
use crate::build::exec;

/// One run of `postgres` that made the cluster (bootstrap or single-user).
pub(super) struct RecordedRun {
    /// Its arguments, without argv[0].
    pub args: Vec<String>,
    /// What initdb wrote to its stdin.
    pub stdin: PathBuf,
    /// The data directory as it was when the run started, and ended.
    pub before: PathBuf,
    pub after: PathBuf,
}

/// What initdb did, in order, and the cluster it left (with the recipe's
/// settings added, as the pre-initialized cluster has them).
pub(super) struct Recording {
    pub runs: Vec<RecordedRun>,
    pub finished: PathBuf,
    /// The installation's share directory as initdb named it in its SQL.
    pub share: PathBuf,
    /// Places of this build machine that must not reach the image.
    pub scratch_paths: Vec<PathBuf>,
    // Holds the files above until the recording is dropped.
    _scratch: Scratch,
}

/// The invocations initdb makes that leave nothing in the cluster: the
/// version check and the probes for max_connections and shared_buffers
/// (their answer is in postgresql.conf).
const PROBES: &[&str] = &["-V", "--check"];
const RUNS: &[&str] = &["--boot", "--single"];

fn recorder_script(record: &Path, real: &Path) -> String {
    format!(
        r#"#!/bin/sh
# pgkraft: records what initdb asks of postgres (build/postgres/first_boot/record.rs).
rec='{record}'
n=$(($(cat "$rec/count") + 1))
echo "$n" > "$rec/count"
for a in "$@"; do printf '%s\n' "$a"; done > "$rec/$n.args"
case "$1" in
--boot|--single)
  cp -R "$PGDATA" "$rec/$n.before" || exit 1
  cat > "$rec/$n.stdin" || exit 1
  '{real}' "$@" < "$rec/$n.stdin"
  status=$?
  cp -R "$PGDATA" "$rec/$n.after" || exit 1
  exit $status;;
esac
exec '{real}' "$@"
"#,
        record = record.display(),
        real = real.display()
    )
}

pub(super) fn record(
    pg: &PgBuild,
    cluster: &ClusterSpec,
    secret: Option<&str>,
    log: &Path,
) -> Result<Recording, PgError> {
    let stage = "postgres first boot (recording initdb)";
    let scratch = Scratch::new(pg)?;
    let record = scratch.run().join("record");
    fs::create_dir(&record).map_err(io_err(stage, "cannot create", &record))?;
    fs::write(record.join("count"), "0\n").map_err(io_err(stage, "cannot write", &record))?;
    initdb::chown_tree(&record, scratch.who)?;
    for p in [&record, &scratch.run()] {
        if p.to_string_lossy().contains(['\'', '\n']) {
            return Err(FirstBootError::Unusable {
                what: "the scratch directory's path",
                value: p.display().to_string(),
                why: "it holds a quote or a newline, which the recorder script cannot name",
            }
            .into());
        }
    }
    let server = scratch.bin("postgres");
    let real = scratch.bin("postgres.real");
    fs::rename(&server, &real).map_err(io_err(stage, "cannot rename", &server))?;
    fs::write(&server, recorder_script(&record, &real)).map_err(io_err(
        stage,
        "cannot write",
        &server,
    ))?;
    fs::set_permissions(&server, fs::Permissions::from_mode(0o755)).map_err(io_err(
        stage,
        "cannot chmod",
        &server,
    ))?;

    let data = scratch.run().join("data");
    let args = initdb::initdb_args(&scratch, &data, cluster, secret)?;
    note(log, &format!("initdb (recorded) {}", args.join(" ")));
    let mut cmd = initdb::as_user(scratch.who, &scratch.bin("initdb"), &args);
    exec::run(&mut cmd, stage, log).map_err(|f| {
        PgError::stage(
            f,
            "the log shows initdb's complaint; the same recipe with `cluster.preinit: true` \
             runs initdb the same way without the recorder",
        )
    })?;
    initdb::configure(&data, cluster)?;

    let count =
        fs::read_to_string(record.join("count")).map_err(io_err(stage, "cannot read", &record))?;
    let count: usize = count.trim().parse().unwrap_or(0);
    let mut runs = Vec::new();
    for n in 1..=count {
        let args_file = record.join(format!("{n}.args"));
        let text =
            fs::read_to_string(&args_file).map_err(io_err(stage, "cannot read", &args_file))?;
        let args: Vec<String> = text.lines().map(str::to_owned).collect();
        let first = args.first().map(String::as_str).unwrap_or("");
        if PROBES.contains(&first) {
            continue;
        }
        if !RUNS.contains(&first) {
            return Err(FirstBootError::UnknownInvocation {
                args: args.join(" "),
                log: log.to_path_buf(),
            }
            .into());
        }
        runs.push(RecordedRun {
            args,
            stdin: record.join(format!("{n}.stdin")),
            before: record.join(format!("{n}.before")),
            after: record.join(format!("{n}.after")),
        });
    }
    if runs.is_empty() {
        return Err(FirstBootError::NothingRecorded {
            log: log.to_path_buf(),
        }
        .into());
    }
    Ok(Recording {
        runs,
        finished: data,
        share: scratch.share(),
        scratch_paths: scratch.roots(),
        _scratch: scratch,
    })
}
