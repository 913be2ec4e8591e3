//! Build the library OS staticlib for a recipe's kernel configuration.
//!
//! The libOS is a `no_std` crate built with `panic = "abort"` for the host
//! target (x86_64-unknown-linux-gnu: its prebuilt `core`/`alloc` are all this
//! toolchain offers), with the kernel-config features and constants. Cached
//! by the libOS and ABI sources, the configuration and the compiler version.
//!
//! The same sources give the same bytes from any checkout, cargo home and
//! target directory:
//! - cargo hashes a path dependency *outside* the crate's workspace by its
//!   absolute path into `-C metadata`, and so into every symbol name. The
//!   ABI crate therefore reaches the libOS through the symlink `libos/abi`
//!   (-> `../abi`), inside the libOS's workspace, where cargo hashes the
//!   path relative to the workspace root. Cargo does not resolve the link,
//!   so the host workspace still sees `abi/` as its own member.
//! - panic locations name registry crates by absolute path (under the cargo
//!   home) and generated files by the target directory: both prefixes are
//!   remapped. `RUSTFLAGS` do not enter `-C metadata` (checked: two builds
//!   with different remap flags were bit-identical), so the host-specific
//!   flags do not change symbol names.

use super::cache::{Cache, KeyHasher};
use super::exec::{self, StageFailure};
use crate::paths;
use crate::recipe::KernelConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LibosBuild {
    /// libpgkraft_libos.a
    pub staticlib: PathBuf,
    /// The image linker script that goes with this libOS.
    pub linker_script: PathBuf,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LibosError {
    #[error(transparent)]
    Failed(#[from] StageFailure),
    #[error("libOS build: {0}")]
    Cache(#[from] super::cache::CacheError),
    #[error("libOS build: cannot run `rustc --version`: {0}")]
    Rustc(std::io::Error),
}

/// `--remap-path-prefix` for the host paths that reach the libOS's panic
/// locations: the cargo home's registry sources and the target directory
/// (build-script output). `\x1f` separates flags in CARGO_ENCODED_RUSTFLAGS.
fn remap_flags(target: &Path) -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut flags = vec![format!(
        "--remap-path-prefix={}=/pgkraft-target",
        target.display()
    )];
    if let Some(home) = cargo_home {
        flags.push(format!(
            "--remap-path-prefix={}=/cargo/registry/src",
            home.join("registry/src").display()
        ));
        flags.push(format!(
            "--remap-path-prefix={}=/cargo/git/checkouts",
            home.join("git/checkouts").display()
        ));
    }
    flags.join("\x1f")
}

pub fn build(config: &KernelConfig, cache: &Cache, log: &Path) -> Result<LibosBuild, LibosError> {
    let src = paths::libos_dir();
    let rustc =
        exec::output_line(Command::new("rustc").arg("--version")).map_err(LibosError::Rustc)?;
    let mut key = KeyHasher::new();
    key.dir_except("libos", &src, &["target"])?
        .dir("abi", &paths::abi_dir())?
        .str("rustc", &rustc);
    for f in &config.features {
        key.str("feature", f);
    }
    for (k, v) in &config.consts {
        key.str(k, &v.to_string());
    }
    let key = key.finish();
    let dir = cache.get_or_build("libos", &key, |out: &Path| -> Result<(), StageFailure> {
        let target = tempfile::tempdir_in(out).map_err(|e| StageFailure {
            stage: "libOS build".into(),
            what: format!("cannot create a target directory: {e}"),
            log: log.to_path_buf(),
            tail: String::new(),
        })?;
        let mut cmd = Command::new("cargo");
        cmd.arg("build")
            .arg("--release")
            .arg("--locked")
            .arg("--manifest-path")
            .arg(src.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target.path());
        if !config.features.is_empty() {
            cmd.arg("--features").arg(
                config
                    .features
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        for (k, v) in &config.consts {
            cmd.env(
                format!("PGKRAFT_CONFIG_{}", k.trim_start_matches("CONFIG_")),
                v.to_string(),
            );
        }
        // A cargo invoked from `cargo test` must not inherit the outer build's
        // settings; the only flags are the path remaps (module doc).
        cmd.env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env("CARGO_ENCODED_RUSTFLAGS", remap_flags(target.path()));
        exec::run(&mut cmd, "libOS build", log)?;
        let copy = |from: PathBuf, to: &str| {
            std::fs::copy(&from, out.join(to))
                .map(|_| ())
                .map_err(|e| StageFailure {
                    stage: "libOS build".into(),
                    what: format!("cannot copy {}: {e}", from.display()),
                    log: log.to_path_buf(),
                    tail: String::new(),
                })
        };
        copy(
            target.path().join("release/libpgkraft_libos.a"),
            "libpgkraft_libos.a",
        )?;
        copy(src.join("link.ld"), "link.ld")
    });
    let dir = match dir {
        Ok(d) => d,
        Err(e) => return Err(e.into_build_error::<StageFailure>()?.into()),
    };
    Ok(LibosBuild {
        staticlib: dir.join("libpgkraft_libos.a"),
        linker_script: dir.join("link.ld"),
        key: key.as_str().to_string(),
    })
}
