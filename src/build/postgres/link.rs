//! link: the chosen modules made linkable side by side, their table, the
//! host postgres, and the install tree with only the chosen extensions
//! (cache stage `pg-link`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::compile::{Compiled, note};
use super::extensions::{Builtin, Extension};
use super::{PREFIX, PgBuild, PgError, io_err, modules};
use crate::build::cache::{Cache, KeyHasher};
use crate::build::exec;
use crate::build::musl::MuslSysroot;
use crate::catalog::test_modules::TestModule;

pub const CACHE_STAGE: &str = "pg-link";

/// Bumped when the steps below change in a way the key's inputs do not
/// show.
const LINK_RECIPE: &str = "pg-link-v4";

const TABLE: &str = "pgkraft_static_modules";

/// What the link entry holds (`link.json`), relative to the entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LinkManifest {
    /// Linked whole.
    modules: Vec<String>,
    /// Linked as their stand-ins.
    #[serde(default)]
    left_out: Vec<String>,
    extensions: Vec<String>,
    /// Renamed module objects and the table object, in link order.
    objects: Vec<PathBuf>,
}

/// Links the built-in modules `builtin` (extensions::builtin_modules), the
/// modules of `chosen` and the test modules `tests` with the server, or
/// finds the result in the cache. Tool output is appended to `log`.
pub fn link(
    compiled: &Compiled,
    builtin: &[Builtin],
    chosen: &[&Extension],
    tests: &[&TestModule],
    musl: &MuslSysroot,
    cache: &Cache,
    log: &Path,
) -> Result<PgBuild, PgError> {
    super::log_dir_for(log)?;
    let mut key = KeyHasher::new();
    key.str("stage", CACHE_STAGE)
        .str("recipe", LINK_RECIPE)
        .str("compiled", compiled.key.as_str())
        .str("musl", &musl.root.to_string_lossy());
    for m in builtin {
        match m {
            Builtin::Whole(n) => key.str("builtin module", n),
            Builtin::LeftOut(n) => key.str("left-out module", n),
        };
    }
    for e in chosen {
        key.str("extension", e.name);
    }
    for t in tests {
        key.str("test-module", t.name);
    }
    let key = key.finish();

    let dir = cache
        .get_or_build(CACHE_STAGE, &key, |out| {
            link_into(compiled, builtin, chosen, tests, musl, out, log)
        })
        .map_err(PgError::from_cache)?;
    let mpath = dir.join("link.json");
    let text = fs::read(&mpath).map_err(io_err("postgres link", "cannot read", &mpath))?;
    let m: LinkManifest = serde_json::from_slice(&text).map_err(|e| PgError::Io {
        stage: "postgres link",
        what: "damaged cache entry",
        path: mpath.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok(PgBuild {
        major: compiled.major,
        version: compiled.manifest.version.clone(),
        install: dir.join("install"),
        image_objects: image_objects(compiled, &dir, &m.objects),
        modules: m.modules,
        left_out_modules: m.left_out,
        extensions: m.extensions,
        key,
    })
}

/// Link order: the server's objects, the modules and their table, then
/// the server's archives, so that archive members the modules alone need
/// are pulled in too.
fn image_objects(compiled: &Compiled, link_dir: &Path, own: &[PathBuf]) -> Vec<PathBuf> {
    let m = &compiled.manifest;
    m.server_objects
        .iter()
        .map(|p| compiled.path(p))
        .chain(own.iter().map(|p| link_dir.join(p)))
        .chain(m.server_archives.iter().map(|p| compiled.path(p)))
        .collect()
}

fn link_into(
    compiled: &Compiled,
    builtin: &[Builtin],
    chosen: &[&Extension],
    tests: &[&TestModule],
    musl: &MuslSysroot,
    out: &Path,
    log: &Path,
) -> Result<(), PgError> {
    let stage = "postgres link";
    let cm = &compiled.manifest;

    // The modules: built-in ones first, then the extensions' in name order,
    // then the test modules.
    let mut names: Vec<String> = builtin.iter().map(|b| b.name().to_string()).collect();
    for e in chosen {
        let ce = cm.extensions.get(e.name).ok_or_else(|| PgError::Module {
            module: e.name.to_string(),
            path: compiled.root.clone(),
            reason: "the compile stage did not build this extension".into(),
        })?;
        names.extend(ce.modules.iter().cloned());
    }
    // Test modules have no install files: only their objects.
    for t in tests {
        if !cm.test_modules.iter().any(|m| m == t.name) {
            return Err(PgError::Module {
                module: t.name.to_string(),
                path: compiled.root.clone(),
                reason: "the compile stage did not build this test module".into(),
            });
        }
        names.push(t.name.to_string());
    }
    let mods_dir = out.join("modules");
    fs::create_dir_all(&mods_dir).map_err(io_err(stage, "cannot create", &mods_dir))?;
    let mut table = Vec::new();
    let mut objects = Vec::new();
    for name in &names {
        let left_out = builtin
            .iter()
            .any(|b| matches!(b, Builtin::LeftOut(n) if n == name));
        let objects_of = if left_out { &cm.left_out } else { &cm.modules };
        let src = objects_of
            .get(name)
            .map(|p| compiled.path(p))
            .ok_or_else(|| PgError::Module {
                module: name.clone(),
                path: compiled.root.clone(),
                reason: "no object for this module in the compile stage".into(),
            })?;
        let rel = Path::new("modules").join(format!("{name}.o"));
        let functions = modules::rename_file(&src, name, &out.join(&rel)).map_err(|reason| {
            PgError::Module {
                module: name.clone(),
                path: src.clone(),
                reason,
            }
        })?;
        note(
            log,
            &format!("module {name}: {} functions in the table", functions.len()),
        );
        table.push((name.clone(), functions));
        objects.push(rel);
    }

    let source = modules::table_source(&table).map_err(|reason| PgError::Module {
        module: TABLE.into(),
        path: out.to_path_buf(),
        reason,
    })?;
    let c = out.join(format!("{TABLE}.c"));
    let o = PathBuf::from(format!("{TABLE}.o"));
    fs::write(&c, source).map_err(io_err(stage, "cannot write", &c))?;
    let mut cc = super::musl_cc(musl, stage)?;
    cc.arg("-I")
        .arg(compiled.path(&cm.include))
        .arg("-o")
        .arg(out.join(&o))
        .arg(&c)
        .env("LC_ALL", "C");
    exec::run(&mut cc, "postgres link (module table)", log).map_err(|f| {
        PgError::stage(
            f,
            "the generated table does not compile: its declarations and \
             pgkraft_static_modules.h (postgres-patches/) disagree",
        )
    })?;
    objects.push(o);

    // The install tree: the server's, plus each chosen extension's share/.
    let prefix_rel = PREFIX.trim_start_matches('/');
    let install = out.join("install");
    copy_tree(&compiled.path(&cm.install).join(prefix_rel), &install)?;
    let mut ext_names = Vec::new();
    for e in chosen {
        let ce = &cm.extensions[e.name];
        let share = compiled.path(&ce.destdir).join(prefix_rel).join("share");
        if share.is_dir() {
            copy_tree(&share, &install.join("share"))?;
        }
        ext_names.push(e.name.to_string());
    }

    // The host postgres: the image's objects with stock musl, and the
    // host clock (compile.rs).
    let clock_o = compiled.path(&cm.host_clock);
    let mut all: Vec<PathBuf> = vec![clock_o];
    all.extend(image_objects(compiled, out, &objects));
    let postgres = install.join("bin/postgres");
    let _ = fs::remove_file(&postgres);
    let args = musl
        .static_link_args(&all)
        .map_err(|e| PgError::MissingTool {
            stage,
            program: "cc".into(),
            detail: e.to_string(),
            fix: "install gcc (ci/bootstrap.sh does)".into(),
        })?;
    let mut ld = Command::new(crate::build::musl::CC);
    ld.args(&args)
        .arg("-Wl,--gc-sections")
        .arg("-Wl,--build-id=none")
        .arg("-o")
        .arg(&postgres)
        .env("LC_ALL", "C");
    exec::run(&mut ld, "postgres link (host postgres)", log).map_err(|f| {
        PgError::stage(
            f,
            "an undefined symbol usually means a module needs a library the server \
             does not link; a duplicate one, a module symbol the renaming missed",
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&postgres, fs::Permissions::from_mode(0o755)).map_err(io_err(
            stage,
            "cannot chmod",
            &postgres,
        ))?;
    }

    let (mut left_out, mut whole): (Vec<String>, Vec<String>) =
        names.iter().cloned().partition(|n| {
            builtin
                .iter()
                .any(|b| matches!(b, Builtin::LeftOut(l) if l == n))
        });
    whole.sort();
    left_out.sort();
    let m = LinkManifest {
        modules: whole,
        left_out,
        extensions: ext_names,
        objects,
    };
    let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
    let mpath = out.join("link.json");
    fs::write(&mpath, json).map_err(io_err(stage, "cannot write", &mpath))
}

/// Copies a directory tree (files and directories with their permission
/// bits, symlinks as symlinks), merging into `to` if it exists.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), PgError> {
    let stage = "postgres link";
    fs::create_dir_all(to).map_err(io_err(stage, "cannot create", to))?;
    let perms = fs::metadata(from)
        .map_err(io_err(stage, "cannot stat", from))?
        .permissions();
    let rd = fs::read_dir(from).map_err(io_err(stage, "cannot read", from))?;
    for entry in rd {
        let entry = entry.map_err(io_err(stage, "cannot read", from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(io_err(stage, "cannot stat", &src))?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(io_err(stage, "cannot read link", &src))?;
            let _ = fs::remove_file(&dst);
            std::os::unix::fs::symlink(&target, &dst).map_err(io_err(
                stage,
                "cannot create link",
                &dst,
            ))?;
        } else {
            fs::copy(&src, &dst).map_err(io_err(stage, "cannot copy", &src))?;
        }
    }
    // Last, so a read-only directory is still filled first. (PostgreSQL
    // insists on 0700 or 0750 for a data directory.)
    fs::set_permissions(to, perms).map_err(io_err(stage, "cannot chmod", to))
}
