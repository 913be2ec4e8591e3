//! initdb at build time (cache stage `pg-initdb`): a pre-initialized
//! cluster for the image, made reproducible.
//!
//! PostgreSQL refuses to run as root, so when pgkraft runs as root initdb
//! runs as `nobody` (setpriv drops the user, group and supplementary groups;
//! a shell sets the umask so the modes do not depend on the caller's). It
//! works in a scratch directory under the system temporary directory, on a
//! copy of the installation, because the cache usually lives under a home
//! directory `nobody` cannot enter. The finished data directory is copied
//! into the cache, owned by whoever runs pgkraft.
//!
//! What differs between two initdb runs with the same inputs, and how it is
//! pinned:
//! - the system identifier (time of day and pid) in pg_control and in every
//!   WAL page header that starts a segment, and the mock-authentication
//!   nonce in pg_control (random): pg_control gets values derived from the
//!   cluster's description and the PostgreSQL version (its CRC is
//!   recomputed, control.rs), then the WAL is rewritten from pg_control
//!   (next item);
//! - the WAL: besides timestamps, its records carry uninitialized padding
//!   bytes, and with address-space randomization those differ from run to
//!   run (with ASLR off and the same paths they did not: measured). The
//!   cluster is shut down cleanly, so its WAL holds nothing that is not in
//!   the data files: `pg_resetwal` replaces it with one segment holding a
//!   single checkpoint record, built in a zeroed buffer;
//! - timestamps in pg_control, that checkpoint record and the statistics
//!   file: every host program is linked with a clock that reports a fixed
//!   wall-clock time when PGKRAFT_FIXED_TIME is set (compile.rs; the
//!   monotonic clock keeps running, so timeouts still work);
//! - the superuser's SCRAM secret (random salt): pgkraft computes the
//!   secret itself with a salt derived from the user and password
//!   (scram::reproducible_salt), and hands initdb the secret, which
//!   PostgreSQL stores as given;
//! - the time zone initdb writes into postgresql.conf comes from the
//!   environment: TZ=UTC is set.
//!
//! Not pinned: initdb sizes max_connections and shared_buffers by probing
//! what the host allows (the same values on any ordinary host; a recipe can
//! set both), and file modification times (the rootfs stage normalizes
//! them). Every image built from the same inputs shares one system
//! identifier, as clones of a cluster do.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::compile::note;
use super::user::{self, RunAs};
use super::{PgBuild, PgError, control, io_err, link::copy_tree, scram};
use crate::build::cache::{Cache, KeyHasher};
use crate::build::exec::{self, StageFailure};

pub const CACHE_STAGE: &str = "pg-initdb";

/// Bumped when the steps below change in a way the key's inputs do not
/// show.
const INITDB_RECIPE: &str = "pg-initdb-v1";

/// The wall-clock time the host postgres reports during initdb: 2000-01-01
/// 00:00:00 UTC, PostgreSQL's own epoch.
pub const FIXED_TIME: u64 = 946_684_800;

/// How clients authenticate (pg_hba.conf, for local and TCP connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Auth {
    /// Password authentication with a SCRAM-SHA-256 secret.
    #[default]
    ScramSha256,
    /// No authentication at all: only when a recipe asks for it.
    Trust,
}

impl Auth {
    pub fn method(self) -> &'static str {
        match self {
            Auth::ScramSha256 => "scram-sha-256",
            Auth::Trust => "trust",
        }
    }
}

/// The cluster initdb creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Server encoding, e.g. "UTF8".
    pub encoding: String,
    /// "C" or "POSIX": musl has no collation beyond byte order, and the
    /// build has no ICU, so no other locale would sort correctly.
    pub locale: String,
    /// WAL segment size, a power of two from 1 to 1024.
    pub wal_segsize_mib: u32,
    pub superuser: String,
    pub auth: Auth,
    /// The superuser's password; required for [`Auth::ScramSha256`].
    pub password: Option<String>,
    /// Appended to postgresql.conf as `name = 'value'`, after initdb's own
    /// lines (the last setting of a name wins).
    pub settings: BTreeMap<String, String>,
    /// Appended to pg_hba.conf as they are, after initdb's lines (which
    /// admit only local and loopback connections); e.g.
    /// `host all all 0.0.0.0/0 scram-sha-256` to admit the network.
    pub hba: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            encoding: "UTF8".into(),
            locale: "C".into(),
            wal_segsize_mib: 16,
            superuser: "postgres".into(),
            auth: Auth::ScramSha256,
            password: None,
            settings: BTreeMap::new(),
            hba: Vec::new(),
        }
    }
}

fn spec_err(msg: String) -> PgError {
    PgError::Spec(msg)
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<(), PgError> {
        if !matches!(self.locale.as_str(), "C" | "POSIX") {
            return Err(spec_err(format!(
                "cluster locale `{}` is not supported: use C or POSIX (musl collates by \
                 byte order only and the build has no ICU, so other locales would sort wrongly)",
                self.locale
            )));
        }
        if !self
            .encoding
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || self.encoding.is_empty()
        {
            return Err(spec_err(format!(
                "cluster encoding `{}` is not an encoding name (e.g. UTF8, SQL_ASCII, LATIN1)",
                self.encoding
            )));
        }
        let w = self.wal_segsize_mib;
        if !(1..=1024).contains(&w) || !w.is_power_of_two() {
            return Err(spec_err(format!(
                "WAL segment size {w} MiB is not a power of two from 1 to 1024"
            )));
        }
        if self.superuser.is_empty()
            || self.superuser.len() > 63
            || self.superuser.starts_with("pg_")
            || self.superuser.contains(['\0', '\n', '"'])
        {
            return Err(spec_err(format!(
                "superuser name `{}` is not usable: 1 to 63 characters, no quotes or \
                 newlines, not starting with pg_",
                self.superuser
            )));
        }
        match (&self.auth, &self.password) {
            (Auth::ScramSha256, None) => {
                return Err(spec_err(
                    "scram-sha-256 authentication needs a superuser password; give one, \
                     or ask for `trust` authentication explicitly"
                        .into(),
                ));
            }
            (_, Some(p)) if p.is_empty() || p.contains(['\n', '\r', '\0']) => {
                return Err(spec_err(
                    "the superuser password must be non-empty and on one line".into(),
                ));
            }
            _ => {}
        }
        for (k, v) in &self.settings {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                return Err(spec_err(format!(
                    "setting name `{k}` is not a PostgreSQL parameter name"
                )));
            }
            if v.contains(['\n', '\r', '\0']) {
                return Err(spec_err(format!(
                    "setting `{k}`: value must be on one line"
                )));
            }
        }
        if let Some(l) = self.hba.iter().find(|l| l.contains(['\n', '\r', '\0'])) {
            return Err(spec_err(format!("pg_hba line `{l}` must be one line")));
        }
        Ok(())
    }
}

/// Ours, unless we are root (see [`super::user`]).
fn run_as(probe_dir: &Path) -> Result<RunAs, PgError> {
    user::run_as(probe_dir)
        .map_err(io_err("postgres initdb", "cannot stat", probe_dir))?
        .ok_or_else(|| PgError::MissingTool {
            stage: "postgres initdb",
            program: "user nobody".into(),
            detail: "running as root, and /etc/passwd has no `nobody` to run initdb as".into(),
            fix: "add a `nobody` user, or run pgkraft as an ordinary user".into(),
        })
}

/// A command that runs `program args` as `who` with umask 077.
pub(super) fn as_user(who: RunAs, program: &Path, args: &[String]) -> Command {
    let mut cmd = who.command(Path::new("/bin/sh"));
    cmd.arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("PGKRAFT_FIXED_TIME", FIXED_TIME.to_string());
    cmd
}

pub(super) fn chown_tree(path: &Path, who: RunAs) -> Result<(), PgError> {
    who.chown_tree(path)
        .map_err(|(p, e)| io_err("postgres initdb", "cannot chown", &p)(e))
}

/// A scratch directory the unprivileged user can reach, holding a copy of
/// the installation under `pg/` and an empty directory `run/` it owns.
pub(super) struct Scratch {
    dir: tempfile::TempDir,
    pub(super) who: RunAs,
}

/// Directories 0755, files 0755 if anyone may execute them else 0644;
/// symlinks untouched.
fn open_modes(dir: &Path) -> Result<(), PgError> {
    let stage = "postgres initdb";
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(
        stage,
        "cannot chmod",
        dir,
    ))?;
    for entry in fs::read_dir(dir).map_err(io_err(stage, "cannot read", dir))? {
        let entry = entry.map_err(io_err(stage, "cannot read", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(stage, "cannot stat", &path))?;
        if meta.is_dir() {
            open_modes(&path)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(
                stage,
                "cannot chmod",
                &path,
            ))?;
        }
    }
    Ok(())
}

impl Scratch {
    pub(super) fn new(pg: &PgBuild) -> Result<Scratch, PgError> {
        let dir = tempfile::Builder::new()
            .prefix("pgkraft-initdb-")
            .tempdir()
            .map_err(io_err(
                "postgres initdb",
                "cannot create in",
                &std::env::temp_dir(),
            ))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).map_err(io_err(
            "postgres initdb",
            "cannot chmod",
            dir.path(),
        ))?;
        let who = run_as(dir.path())?;
        copy_tree(&pg.install, &dir.path().join("pg"))?;
        // The cached install keeps the modes of whoever built it, under
        // their umask (077 leaves nothing for `nobody`): open it up.
        open_modes(&dir.path().join("pg"))?;
        let run = dir.path().join("run");
        fs::create_dir(&run).map_err(io_err("postgres initdb", "cannot create", &run))?;
        fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).map_err(io_err(
            "postgres initdb",
            "cannot chmod",
            &run,
        ))?;
        chown_tree(&run, who)?;
        Ok(Scratch { dir, who })
    }
    pub(super) fn bin(&self, program: &str) -> PathBuf {
        self.dir.path().join("pg/bin").join(program)
    }
    /// The installation's share directory, as initdb finds it (from its
    /// own executable, symlinks resolved).
    pub(super) fn share(&self) -> PathBuf {
        let pg = self.dir.path().join("pg");
        pg.canonicalize().unwrap_or(pg).join("share")
    }
    /// The scratch directory itself, as named and with symlinks resolved.
    pub(super) fn roots(&self) -> Vec<PathBuf> {
        let root = self.dir.path().to_path_buf();
        let canon = root.canonicalize().unwrap_or_else(|_| root.clone());
        vec![root, canon]
    }
    pub(super) fn run(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

/// Creates the cluster (or finds it in the cache) and returns its data
/// directory. Tool output is appended to `log`.
pub fn initdb(
    pg: &PgBuild,
    cluster: &ClusterSpec,
    cache: &Cache,
    log: &Path,
) -> Result<PathBuf, PgError> {
    super::log_dir_for(log)?;
    cluster.validate()?;
    // The key names the secret, not the password: keys are not secret, and
    // the secret is as expensive to guess from as the image is.
    let secret = superuser_secret(cluster)?;
    let identity = cluster_identity(pg, cluster, secret.as_deref());
    let key = KeyHasher::new()
        .str("stage", CACHE_STAGE)
        .str("recipe", INITDB_RECIPE)
        .str("postgres", pg.key.as_str())
        .str("cluster", identity.as_str())
        .finish();
    let dir = cache
        .get_or_build(CACHE_STAGE, &key, |out| {
            run_initdb(pg, cluster, secret.as_deref(), identity.as_str(), out, log)
        })
        .map_err(PgError::from_cache)?;
    Ok(dir.join("data"))
}

/// What describes a cluster: the PostgreSQL release and every initdb
/// option, the password only through its secret. The cluster's identity
/// (system identifier, nonce) derives from it, and not from the stage key:
/// that covers cache paths (through the musl sysroot), which differ between
/// machines building the same recipe.
pub(super) fn cluster_identity(
    pg: &PgBuild,
    cluster: &ClusterSpec,
    secret: Option<&str>,
) -> crate::build::cache::StageKey {
    let mut identity = KeyHasher::new();
    identity
        .str("what", "pgkraft cluster identity")
        .str("version", &pg.version)
        .str("encoding", &cluster.encoding)
        .str("locale", &cluster.locale)
        .str("wal-segsize", &cluster.wal_segsize_mib.to_string())
        .str("superuser", &cluster.superuser)
        .str("auth", cluster.auth.method())
        .str("secret", secret.unwrap_or(""))
        .str("has-password", if secret.is_some() { "y" } else { "n" });
    for (k, v) in &cluster.settings {
        identity.str("setting", &format!("{k}={v}"));
    }
    for l in &cluster.hba {
        identity.str("hba", l);
    }
    identity.finish()
}

/// A value derived from the cluster's identity.
fn derived(identity: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pgkraft initdb\0");
    h.update(what.as_bytes());
    h.update(b"\0");
    h.update(identity.as_bytes());
    h.finalize().into()
}

/// Quotes a postgresql.conf value.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// The superuser's SCRAM secret, if there is a password.
pub(super) fn superuser_secret(cluster: &ClusterSpec) -> Result<Option<String>, PgError> {
    let Some(password) = &cluster.password else {
        return Ok(None);
    };
    let salt = scram::reproducible_salt(&cluster.superuser, password);
    scram::secret(password, &salt, scram::ITERATIONS)
        .map(Some)
        .map_err(PgError::Spec)
}

fn run_initdb(
    pg: &PgBuild,
    cluster: &ClusterSpec,
    secret: Option<&str>,
    identity: &str,
    out: &Path,
    log: &Path,
) -> Result<(), PgError> {
    let stage = "postgres initdb";
    let scratch = Scratch::new(pg)?;
    let data = scratch.run().join("data");
    let args = initdb_args(&scratch, &data, cluster, secret)?;
    note(log, &format!("initdb {}", args.join(" ")));
    let mut cmd = as_user(scratch.who, &scratch.bin("initdb"), &args);
    exec::run(&mut cmd, stage, log).map_err(|f| {
        PgError::stage(
            f,
            "the log shows initdb's complaint; a bad encoding or setting in the recipe is \
             the usual cause",
        )
    })?;

    configure(&data, cluster)?;
    normalize(&data, identity)?;
    let args = vec!["--pgdata".to_string(), data.display().to_string()];
    let mut cmd = as_user(scratch.who, &scratch.bin("pg_resetwal"), &args);
    exec::run(&mut cmd, "postgres initdb (pg_resetwal)", log).map_err(|f| {
        PgError::stage(
            f,
            "pg_resetwal refuses a cluster that was not shut down cleanly; the initdb \
             output above it in the log says why",
        )
    })?;
    copy_tree(&data, &out.join("data"))?;
    Ok(())
}

/// initdb's arguments for `cluster` in `data`; the secret, if any, goes
/// into a password file in the scratch directory.
pub(super) fn initdb_args(
    scratch: &Scratch,
    data: &Path,
    cluster: &ClusterSpec,
    secret: Option<&str>,
) -> Result<Vec<String>, PgError> {
    let stage = "postgres initdb";
    let mut args = vec![
        format!("--pgdata={}", data.display()),
        format!("--username={}", cluster.superuser),
        format!("--encoding={}", cluster.encoding),
        format!("--locale={}", cluster.locale),
        format!("--wal-segsize={}", cluster.wal_segsize_mib),
        format!("--auth-local={}", cluster.auth.method()),
        format!("--auth-host={}", cluster.auth.method()),
        // The cache syncs the finished entry; syncing twice only costs time.
        "--no-sync".to_string(),
        "--no-instructions".to_string(),
    ];
    if let Some(secret) = secret {
        let pwfile = scratch.run().join("pwfile");
        fs::write(&pwfile, format!("{secret}\n")).map_err(io_err(
            stage,
            "cannot write",
            &pwfile,
        ))?;
        chown_tree(&pwfile, scratch.who)?;
        args.push(format!("--pwfile={}", pwfile.display()));
    }
    Ok(args)
}

fn append(path: &Path, text: &str) -> Result<(), PgError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err("postgres initdb", "cannot open", path))?;
    f.write_all(text.as_bytes())
        .map_err(io_err("postgres initdb", "cannot write", path))
}

/// The recipe's settings and pg_hba lines, after initdb's own.
pub(super) fn configure(data: &Path, cluster: &ClusterSpec) -> Result<(), PgError> {
    if !cluster.settings.is_empty() {
        let mut text = String::from("\n# Added by pgkraft from the recipe.\n");
        for (k, v) in &cluster.settings {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        append(&data.join("postgresql.conf"), &text)?;
    }
    if !cluster.hba.is_empty() {
        let mut text = String::from("\n# Added by pgkraft from the recipe.\n");
        for l in &cluster.hba {
            text.push_str(l);
            text.push('\n');
        }
        append(&data.join("pg_hba.conf"), &text)?;
    }
    Ok(())
}

/// Pins pg_control's identity (see the module comment); pg_resetwal then
/// carries it into the WAL.
fn normalize(data: &Path, identity: &str) -> Result<(), PgError> {
    let stage = "postgres initdb";
    let id_bytes = derived(identity, "system identifier");
    // Non-zero, like every identifier PostgreSQL makes.
    let sysid = u64::from_le_bytes(id_bytes[..8].try_into().expect("8 bytes")) | 1;
    let nonce = derived(identity, "mock authentication nonce");

    let pg_control = data.join("global/pg_control");
    let mut bytes = fs::read(&pg_control).map_err(io_err(stage, "cannot read", &pg_control))?;
    control::rewrite(&mut bytes, sysid, &nonce).map_err(|reason| PgError::Module {
        module: "pg_control".into(),
        path: pg_control.clone(),
        reason,
    })?;
    fs::write(&pg_control, &bytes).map_err(io_err(stage, "cannot write", &pg_control))
}

/// What a single-user postgres printed.
#[derive(Clone, Debug)]
pub struct SingleUserOutput {
    /// Query results.
    pub stdout: String,
    /// Server messages (NOTICEs, errors).
    pub stderr: String,
}

/// Runs `sql` (one statement per line) through `postgres --single` on a
/// copy of `data` (which is left untouched), connected to `database`; any
/// error stops it and fails. For smoke tests of a host build.
pub fn single_user(
    pg: &PgBuild,
    data: &Path,
    database: &str,
    sql: &str,
    log: &Path,
) -> Result<SingleUserOutput, PgError> {
    let stage = "postgres single-user";
    super::log_dir_for(log)?;
    let scratch = Scratch::new(pg)?;
    let copy = scratch.run().join("data");
    copy_tree(data, &copy)?;
    chown_tree(&copy, scratch.who)?;
    let args = vec![
        "--single".to_string(),
        "-D".to_string(),
        copy.display().to_string(),
        "-c".to_string(),
        "exit_on_error=on".to_string(),
        database.to_string(),
    ];
    let mut cmd = as_user(scratch.who, &scratch.bin("postgres"), &args);
    cmd.env_remove("PGKRAFT_FIXED_TIME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(stage, "cannot run", &scratch.bin("postgres")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(sql.as_bytes());
    }
    let out =
        child
            .wait_with_output()
            .map_err(io_err(stage, "cannot run", &scratch.bin("postgres")))?;
    let result = SingleUserOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(stage, "cannot open", log))?;
        let _ = writeln!(
            f,
            "$ postgres {}\n<<< {sql}\n--- stdout ---\n{}--- stderr ---\n{}",
            args.join(" "),
            result.stdout,
            result.stderr
        );
    }
    if !out.status.success() {
        return Err(PgError::stage(
            StageFailure {
                stage: stage.into(),
                what: format!("postgres --single exited with {}", out.status),
                log: log.to_path_buf(),
                tail: exec::tail(log, exec::TAIL_LINES),
            },
            "the log shows the statement and the server's error",
        ));
    }
    Ok(result)
}
