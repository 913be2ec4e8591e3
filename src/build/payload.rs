//! What goes into an image besides the libOS and musl, per recipe kind: the
//! program's objects and argv, or PostgreSQL's server objects, argv and the
//! rootfs with the cluster.

use super::cache::Cache;
use super::manifest::Inputs;
use super::musl::{self, MuslSysroot};
use super::rootfs::{self, Rootfs};
use super::{BuildError, Logs, compile, fetch, host_files, postgres, select};
use crate::progress::Progress;
use crate::recipe::{PostgresSpec, ProgramSpec, Recipe};

use std::path::{Path, PathBuf};

/// The kind-specific part of an image.
pub use crate::image::format::PostgresFacts;

pub struct Payload {
    pub objects: Vec<PathBuf>,
    /// argv[0] first.
    pub argv: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    pub rootfs: Option<Rootfs>,
    pub postgres: Option<PostgresFacts>,
    /// The host-linked build of the same objects (postgres images), in
    /// the cache: recorded there for `smoke --native` (build/mod.rs).
    pub host_install: Option<PathBuf>,
    /// Files written next to the image (e.g. a generated password).
    pub extra_outputs: Vec<PathBuf>,
}

fn env_of(recipe: &Recipe) -> Vec<String> {
    recipe.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The server's environment: the recipe's, plus PATH naming the server's
/// bin directory (unless the recipe sets PATH): each child the postmaster
/// spawns is started as plain `postgres` and looks itself up there.
fn server_env(recipe: &Recipe, layout: &select::Layout) -> Vec<String> {
    let mut env = env_of(recipe);
    if !recipe.env.contains_key("PATH") {
        env.push(format!("PATH={}", layout.prefix.join("bin").display()));
    }
    env
}

pub fn program(
    recipe: &Recipe,
    program: &ProgramSpec,
    musl: &MuslSysroot,
    cache: &Cache,
    logs: &Logs,
    inputs: &mut Inputs,
    progress: &Progress,
) -> Result<Payload, BuildError> {
    let stage = progress.stage("compile");
    let objects = compile::compile(
        &program.sources,
        &program.cflags,
        musl,
        cache,
        &logs.stage("compile"),
    )?;
    for s in &program.sources {
        inputs.path("program source", s);
    }
    stage.finish(&format!("{} source file(s)", program.sources.len()));
    Ok(Payload {
        objects: objects.files,
        argv: recipe.argv(),
        env: env_of(recipe),
        rootfs: None,
        postgres: None,
        host_install: None,
        extra_outputs: Vec::new(),
    })
}

/// The superuser's password: from the recipe's `password_env` when set at
/// build time, else generated and written 0600 next to the image.
fn password(
    spec: &PostgresSpec,
    out: &Path,
    name: &str,
) -> Result<(Option<String>, String, Option<PathBuf>), BuildError> {
    let Some(var) = spec.cluster.auth.password_env() else {
        return Ok((None, "none (auth: trust)".into(), None));
    };
    if let Ok(p) = std::env::var(var)
        && !p.is_empty()
    {
        return Ok((Some(p), format!("environment variable {var}"), None));
    }
    let mut bytes = [0u8; 18];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| BuildError::Output {
            path: "/dev/urandom".into(),
            source,
        })?;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let pw: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let path = out.join(format!("{name}.password"));
    write_secret(&path, &pw).map_err(|source| BuildError::Output {
        path: path.clone(),
        source,
    })?;
    Ok((
        Some(pw),
        format!("generated into {name}.password next to the image ({var} was not set)"),
        Some(path),
    ))
}

/// Written 0600 from the start (never world-readable, not even briefly).
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("password.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// PostgreSQL from a recipe's spec, built or found in the cache: its
/// source and the build. Shared by the image build and
/// postgres::host_server, so a native server is the image's own build.
pub(super) fn host_postgres(
    spec: &PostgresSpec,
    musl_src: &fetch::VerifiedSource,
    cache: &Cache,
    logs: &Logs,
    progress: &Progress,
) -> Result<(fetch::VerifiedSource, postgres::PgBuild), BuildError> {
    let stage = progress.stage("fetch");
    let hint = postgres::pin(spec.major)
        .map(|p| p.file_name)
        .unwrap_or("postgresql source");
    let src = fetch::fetch(&spec.source, hint, cache)?;
    stage.finish(&format!("PostgreSQL {}", spec.major));

    // The host programs (initdb, and postgres for the closure check) are
    // linked with stock musl; the image's server with the patched one.
    let stage = progress.stage("musl");
    let stock = musl::build_musl(
        musl_src,
        musl::MuslFlavor::Stock,
        cache,
        &logs.stage("musl-stock"),
    )?;
    stage.finish("stock (host programs)");

    let stage = progress.stage("postgres");
    let pg_spec = postgres::PgSpec {
        major: spec.major,
        source: &src,
        optimize: spec.configure.optimize.flag(),
        extensions: &spec.extensions,
        configure_extra: &spec.configure.extra,
        test_modules: &spec.test_modules,
        text_search: spec.cluster.text_search,
    };
    let pg = postgres::build(
        &pg_spec,
        &stock,
        cache,
        &postgres::PgLogs::in_dir(&logs.dir),
    )?;
    stage.finish(&format!(
        "PostgreSQL {} with {}",
        pg.version,
        pg.modules.join(", ")
    ));
    Ok((src, pg))
}

#[allow(clippy::too_many_arguments)]
pub fn postgres(
    recipe: &Recipe,
    spec: &PostgresSpec,
    musl_src: &fetch::VerifiedSource,
    out: &Path,
    cache: &Cache,
    logs: &Logs,
    inputs: &mut Inputs,
    progress: &Progress,
) -> Result<Payload, BuildError> {
    let (src, pg) = host_postgres(spec, musl_src, cache, logs, progress)?;
    inputs.file("postgres source", &src.path, &src.sha256);
    // Sorted: read_dir's order is the file system's, and the manifest (in
    // the image) and the SBOM must be the same wherever they are built.
    let mut patches: Vec<_> = postgres::default_patch_dir(spec.major)
        .read_dir()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    patches.sort();
    for p in &patches {
        inputs.path("postgres patch", p);
    }

    let (pw, pw_origin, pw_file) = password(spec, out, &recipe.name)?;
    let auth = match spec.cluster.auth {
        crate::recipe::Auth::Trust => postgres::Auth::Trust,
        crate::recipe::Auth::ScramSha256 { .. } => postgres::Auth::ScramSha256,
    };
    let cluster = postgres::ClusterSpec {
        encoding: spec.cluster.encoding.clone(),
        locale: spec.cluster.locale.clone(),
        wal_segsize_mib: spec.cluster.wal_segsize_mib,
        superuser: spec.cluster.superuser.clone(),
        auth,
        password: pw,
        settings: spec.server_settings(),
        hba: network_hba(auth),
    };
    let layout = select::Layout::default();
    let data_dir = if spec.cluster.preinit {
        let stage = progress.stage("initdb");
        let dir = postgres::initdb(&pg, &cluster, cache, &logs.stage("initdb"))?;
        stage.finish("cluster ready");
        Some(dir)
    } else {
        None
    };

    let stage = progress.stage("select");
    let choices = select::Choices {
        extensions: pg.extensions.clone(),
        ..select::Choices::from_spec(spec)
    };
    let mut selection = select::select(&select::SelectInput {
        install: &pg.install,
        data_dir: data_dir.as_deref(),
        layout: &layout,
        choices: &choices,
    })?;
    let mut key = super::cache::KeyHasher::new();
    key.str("user", &spec.cluster.superuser);
    key.str("files", "passwd group postgres-stand-in lib");
    let user = spec.cluster.superuser.clone();
    let etc = cache.get_or_build("identity", &key.finish(), |dir| {
        select::write_identity_files(dir, &user)
    })?;
    selection.entries.extend(select::identity_entries(&etc));
    selection
        .entries
        .push(select::executable_entry(&etc, &layout));
    selection.entries.push(select::lib_dir_entry(&etc, &layout));
    let reserved = reserved_paths(&layout, &selection);
    let added = host_files::entries(&spec.rootfs.files, &reserved)?;
    for e in &added {
        if e.source.is_file() {
            inputs.path(&e.reason.to_string(), &e.source);
        }
    }
    selection.entries.extend(added);
    selection.entries.sort_by(|a, b| a.path.cmp(&b.path));
    stage.finish(&format!("{} files", selection.entries.len()));

    let first_boot = if spec.cluster.preinit {
        None
    } else {
        let stage = progress.stage("first boot");
        let log = logs.stage("first-boot");
        let stock = musl::build_musl(musl_src, musl::MuslFlavor::Stock, cache, &log)?;
        let exec = select::executable_path(&layout);
        let target = postgres::first_boot::Target {
            exec: &exec,
            data_dir: &layout.data_dir,
            share_dir: &selection.share_dir,
        };
        let fb = postgres::first_boot::prepare(&pg, &cluster, &target, &stock, cache, &log)?;
        stage.finish("initdb recorded for first boot");
        Some(fb)
    };

    if let Some(fb) = &first_boot {
        selection.entries.extend(fb.entries()?);
        selection.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }

    let stage = progress.stage("rootfs");
    let options = rootfs::RootfsOptions::from_env(spec.rootfs.compression)?;
    let rootfs = rootfs::build_cached(cache, &selection.entries, &options)?;
    stage.finish(&format!(
        "{} bytes ({} before compression)",
        rootfs.bytes, rootfs.tar_bytes
    ));

    // The server (postmaster) on the baked cluster; single-user mode is
    // the same executable with `--single` (pgsingle::args_with_j).
    // argv[0] is absolute: PostgreSQL finds its share directory from it,
    // and it is the path the postmaster spawns its children from.
    let argv = vec![
        select::executable_path(&layout).display().to_string(),
        "-D".to_string(),
        layout.data_dir.display().to_string(),
    ];
    let mut objects = pg.image_objects.clone();
    let mut env = server_env(recipe, &layout);
    if let Some(fb) = &first_boot {
        objects.push(fb.starter.clone());
        env.push(fb.env());
    }
    Ok(Payload {
        objects,
        argv,
        env,
        rootfs: Some(rootfs),
        postgres: Some(PostgresFacts {
            version: pg.version.clone(),
            modules: pg.modules.clone(),
            left_out_modules: pg.left_out_modules.clone(),
            extensions: pg.extensions.clone(),
            preinit: spec.cluster.preinit,
            password: pw_origin,
            superuser: spec.cluster.superuser.clone(),
            password_env: spec.cluster.auth.password_env().map(str::to_string),
            password_file: pw_file
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        }),
        host_install: Some(pg.install.clone()),
        extra_outputs: pw_file.into_iter().collect(),
    })
}

/// The image's own places, which `rootfs.files` may not touch: the
/// install prefix, the cluster and the identity files.
fn reserved_paths(
    layout: &select::Layout,
    selection: &select::Selection,
) -> Vec<(PathBuf, String)> {
    let mut r = vec![
        (
            layout.prefix.clone(),
            "the PostgreSQL installation's prefix".to_string(),
        ),
        (
            layout.data_dir.clone(),
            "the cluster's data directory".to_string(),
        ),
    ];
    for e in &selection.entries {
        if e.path.starts_with("/etc") {
            r.push((e.path.clone(), e.reason.to_string()));
        }
    }
    r
}

/// pg_hba.conf lines that admit TCP clients from any address with the
/// cluster's method: inside the VM clients arrive from wherever the
/// network puts them (the runner's end of the link with `--publish`, a
/// namespace's address on a tap device), not from loopback, which is all
/// initdb's own lines admit. `trust` only when the recipe says so.
fn network_hba(auth: postgres::Auth) -> Vec<String> {
    let method = auth.method();
    vec![
        format!("host all all 0.0.0.0/0 {method}"),
        format!("host all all ::/0 {method}"),
    ]
}
