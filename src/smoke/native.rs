//! Single-user mode natively: the host-linked postgres of the image's build
//! (same objects, stock musl) on a fresh copy of the image's own files, fed
//! the same input and parsed the same way as the guest. This is the
//! reference the guest is compared with, and what a benchmark times against
//! the image (native start to first answer vs boot to first answer).
//!
//! The copy is the image's rootfs unpacked into a scratch directory, with
//! the server at `usr/local/pgsql/bin/postgres` inside it: PostgreSQL finds
//! its share directory relative to its own executable, so it reads the
//! image's time zone, extension and cluster files and nothing of the host's.
//! PostgreSQL refuses to run as root; as root the server runs as `nobody`
//! (setpriv), as build::postgres::initdb does.

use super::single_user::{self, Outcome};
use super::{SmokeReport, TestVm};
use crate::build::postgres::user::{RunAs, run_as};
use crate::build::select::{DEFAULT_DATA_DIR, DEFAULT_PREFIX};
use crate::pgsingle;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the image has no rootfs section (not a postgres image)", image.display())]
    NoRootfs { image: PathBuf },
    #[error(
        "{}: no host-linked postgres for this image: {detail}\n  fix: rebuild the image with \
         `pgkraft build RECIPE` (that puts its host-linked server in the cache again), or pass \
         --postgres PATH (the host-linked postgres of the image's build)",
        image.display()
    )]
    NoHostPostgres { image: PathBuf, detail: String },
    #[error(
        "--native runs single-user and server checks only\n  fix: give a test VM definition \
         with `mode: single-user` or `mode: server` (e.g. --vm test-vms/server.yaml)"
    )]
    NotSingleUser,
    #[error(transparent)]
    Credentials(#[from] super::server::CredentialsError),
    #[error(
        "{}: the image makes its cluster at first boot (`cluster.preinit: false`), and the \
         host-linked server cannot replay that\n  fix: compare with an image of the same \
         recipe with `cluster.preinit: true`",
        image.display()
    )]
    NoCluster { image: PathBuf },
    #[error(
        "running as root, and /etc/passwd has no `nobody` to run postgres as\n  fix: add a `nobody` user, or run pgkraft as an ordinary user"
    )]
    NoNobody,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NativeError {
    let path = path.to_path_buf();
    move |source| NativeError::Io { what, path, source }
}

/// The host-linked postgres of the build that made `image`: where the
/// cache records it for the image's build info, if it is still there;
/// else (an image from before that was recorded, or a cache cleaned
/// since) the recipe the image embeds is checked again, its relative
/// paths taken from pgkraft's own recipes/ directory, and every build
/// stage up to the host link is looked up in the cache (built, if
/// missing). No recipe file is needed.
pub fn host_postgres(image: &Path) -> Result<PathBuf, NativeError> {
    let missing = |detail: String| NativeError::NoHostPostgres {
        image: image.to_path_buf(),
        detail,
    };
    let info = crate::image::Image::open(image).map_err(|e| missing(e.to_string()))?;
    let build = info
        .build()
        .cloned()
        .ok_or_else(|| missing("it carries no build info".into()))?;
    if let Some(server) = recorded_server(&info) {
        return Ok(server);
    }
    let shown = image.with_file_name(format!(
        "{} (recipe {} embedded)",
        image.file_name().unwrap_or_default().to_string_lossy(),
        build.recipe_file.display()
    ));
    let recipe =
        crate::recipe::load_text(&shown, &build.recipe, &crate::paths::home().join("recipes"))
            .map_err(|e| missing(e.to_string()))?;
    let crate::recipe::Kind::Postgres(spec) = &recipe.kind else {
        return Err(missing("its recipe is not a postgres recipe".into()));
    };
    let cache = crate::build::cache::Cache::from_env().map_err(|e| missing(e.to_string()))?;
    let logs = cache.root().join("logs").join("native");
    std::fs::create_dir_all(&logs).map_err(io("cannot create", &logs))?;
    crate::build::postgres::host_server(spec, &cache, &logs).map_err(missing)
}

/// The server the build of `image` recorded in the cache, if it is still
/// there (build::record_native).
fn recorded_server(image: &crate::image::Image) -> Option<PathBuf> {
    let cache = crate::build::cache::Cache::from_env().ok()?;
    let record = cache
        .root()
        .join(crate::build::NATIVE_INDEX)
        .join(image.native_key()?);
    let rel = std::fs::read_to_string(record).ok()?;
    let server = cache.root().join(rel).join("bin").join("postgres");
    server.is_file().then_some(server)
}

/// A fresh copy of an image's files with the host-linked server in it,
/// ready for one session. Removed when dropped.
pub struct NativeServer {
    root: tempfile::TempDir,
    who: RunAs,
    image: PathBuf,
    image_bytes: u64,
}

impl NativeServer {
    /// Unpacks `image`'s rootfs and puts `postgres` (the host-linked server)
    /// in it. Not timed: a benchmark times [`NativeServer::run`] only.
    pub fn prepare(image: &Path, postgres: &Path) -> Result<NativeServer, NativeError> {
        let data = std::fs::read(image).map_err(io("cannot read", image))?;
        let root = tempfile::Builder::new()
            .prefix("pgkraft-native-")
            .tempdir()
            .map_err(io("cannot create in", &std::env::temp_dir()))?;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot chmod", root.path()))?;
        let tar = crate::image::format::rootfs_section(&data)
            .and_then(crate::image::format::rootfs_tar)
            .ok_or_else(|| NativeError::NoRootfs {
                image: image.to_path_buf(),
            })?;
        crate::image::format::unpack_rootfs(&tar, root.path())
            .map_err(io("cannot unpack the rootfs into", root.path()))?;
        let bin = root.path().join(prefix_rel()).join("bin");
        std::fs::create_dir_all(&bin).map_err(io("cannot create", &bin))?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot chmod", &bin))?;
        let server = bin.join("postgres");
        std::fs::copy(postgres, &server).map_err(io("cannot copy", postgres))?;
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot chmod", &server))?;
        if !root.path().join(data_rel()).is_dir() {
            return Err(NativeError::NoCluster {
                image: image.to_path_buf(),
            });
        }
        let who = run_as(root.path())
            .map_err(io("cannot stat", root.path()))?
            .ok_or(NativeError::NoNobody)?;
        // The server checks that it owns its data directory.
        who.chown_tree(&root.path().join(data_rel()))
            .map_err(|(p, e)| io("cannot chown", &p)(e))?;
        Ok(NativeServer {
            who,
            image: image.to_path_buf(),
            image_bytes: data.len() as u64,
            root,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join(data_rel())
    }

    /// Starts the postmaster on the copy, listening on `listen` only (no
    /// Unix socket), its log to `log`. The caller stops it (SIGINT).
    pub fn spawn_server(
        &self,
        listen: std::net::SocketAddr,
        log: Stdio,
    ) -> Result<std::process::Child, NativeError> {
        let server = self.root.path().join(prefix_rel()).join("bin/postgres");
        let mut cmd = self.who.command(&server);
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(listen.port().to_string())
            .arg("-c")
            .arg(format!("listen_addresses={}", listen.ip()))
            .arg("-c")
            .arg("unix_socket_directories=")
            .env_clear()
            // The server's bin directory first (its children look themselves
            // up there); the rest for setpriv, which Command looks up in it.
            .env(
                "PATH",
                format!(
                    "{}:/usr/bin:/bin",
                    self.root.path().join(prefix_rel()).join("bin").display()
                ),
            )
            .env("LC_ALL", "C")
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd.spawn().map_err(io("cannot run", &server))
    }

    /// Runs one single-user session with `spec`'s checks and reports as the
    /// guest run does. Timing starts when the server is spawned; the phases
    /// are `started` (spawned), `first_answer` and `exit`.
    pub fn run(self, spec: &TestVm) -> Result<SmokeReport, NativeError> {
        let server = self.root.path().join(prefix_rel()).join("bin/postgres");
        let args = pgsingle::native_args(&self.data_dir().display().to_string(), "postgres");
        let (reader, writer) = std::io::pipe().map_err(io("cannot make a pipe for", &server))?;
        let writer2 = writer
            .try_clone()
            .map_err(io("cannot make a pipe for", &server))?;
        let mut cmd = self.who.command(&server);
        cmd.args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir(self.root.path())
            .stdin(Stdio::piped())
            // One pipe for both, as the guest's console is one stream: the
            // order of messages and rows is then the guest's.
            .stdout(writer)
            .stderr(writer2);
        let t0 = Instant::now();
        let mut child = cmd.spawn().map_err(io("cannot run", &server))?;
        let started = t0.elapsed();
        drop(cmd);

        let output = Arc::new(Mutex::new((Vec::<u8>::new(), Vec::<(f64, usize)>::new())));
        let sink = output.clone();
        let read_thread = std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let at = super::ms(t0.elapsed());
                        let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
                        g.0.extend_from_slice(&buf[..n]);
                        let len = g.0.len();
                        g.1.push((at, len));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        let input = single_user::stdin_for(spec);
        let mut stdin = child.stdin.take();
        let write_thread = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(input.as_bytes());
            }
        });

        let deadline = Duration::from_secs_f64(spec.timeout_secs);
        let status = loop {
            match child.try_wait().map_err(io("cannot wait for", &server))? {
                Some(st) => break Some(st),
                None if t0.elapsed() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let exit_at = t0.elapsed();
        let _ = write_thread.join();
        let _ = read_thread.join();
        let (console, marks) =
            std::mem::take(&mut *output.lock().unwrap_or_else(|e| e.into_inner()));

        let (exit, exit_status) = exit_text(status);
        let mut phases = BTreeMap::new();
        phases.insert("started".to_string(), super::ms(started));
        phases.insert("exit".to_string(), super::ms(exit_at));
        Ok(single_user::report(
            Outcome {
                runner: "native",
                image: &self.image,
                image_bytes: self.image_bytes,
                console: &console,
                marks: &marks,
                exit,
                exit_status,
                phases,
                vm_exits: 0,
                guest_memory: None,
            },
            spec,
        ))
    }
}

/// Prepares a fresh copy of `image`'s files and runs `spec` on it with the
/// host-linked `postgres`.
pub fn run(image: &Path, spec: &TestVm, postgres: &Path) -> Result<SmokeReport, NativeError> {
    NativeServer::prepare(image, postgres)?.run(spec)
}

/// How a native server's run ended, in words (`None`: it was stopped at
/// the timeout), and its exit status if it had one.
pub(crate) fn exit_text(status: Option<std::process::ExitStatus>) -> (String, Option<u8>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => ("timeout".to_string(), None),
        Some(st) => match (st.code(), st.signal()) {
            (Some(c), _) => (format!("status {c}"), u8::try_from(c).ok()),
            (None, Some(sig)) => (format!("died: signal {sig}"), None),
            _ => (format!("died: {st}"), None),
        },
    }
}

fn prefix_rel() -> PathBuf {
    PathBuf::from(DEFAULT_PREFIX.trim_start_matches('/'))
}

fn data_rel() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR.trim_start_matches('/'))
}

/// `pgkraft smoke --native`: every error here is the caller's to fix
/// (a program-mode definition, no host postgres, an image without files).
pub fn run_cli(
    image: &Path,
    spec: &TestVm,
    postgres: Option<&Path>,
) -> Result<SmokeReport, NativeError> {
    let postgres = || match postgres {
        Some(p) => Ok(p.to_path_buf()),
        None => host_postgres(image),
    };
    match spec.mode {
        super::Mode::Program => Err(NativeError::NotSingleUser),
        super::Mode::SingleUser => run(image, spec, &postgres()?),
        super::Mode::Server => super::server::run_native(image, spec, &postgres()?),
    }
}
