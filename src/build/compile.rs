//! Compile C sources against a musl sysroot, the same way for the image
//! (patched musl) and for the native twin (stock musl) the differential
//! tests run.

use super::cache::{Cache, KeyHasher};
use super::exec::{self, StageFailure};
use super::musl::MuslSysroot;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Objects {
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The program's own sources did not compile: the user's to fix.
    #[error("{0}\nfix the C source (or the recipe's `program.cflags`) and build again")]
    Source(StageFailure),
    #[error("compile: {0}")]
    Cache(#[from] super::cache::CacheError),
    #[error("compile: cannot ask the C compiler for {what}: {source}")]
    Tool {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Flags every object in an image is built with: sections per function and
/// datum so the link can drop what nothing uses; no stack protector (musl is
/// built without one); position-independent, because the program is a
/// static PIE the libOS loads once per process, each at its own base
/// (docs/ARCHITECTURE.md §3, processes).
pub const BASE_CFLAGS: &[&str] = &[
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-stack-protector",
    "-fPIE",
    "-fno-asynchronous-unwind-tables",
];

pub fn compile(
    sources: &[PathBuf],
    cflags: &[String],
    musl: &MuslSysroot,
    cache: &Cache,
    log: &Path,
) -> Result<Objects, CompileError> {
    let tool = |what| move |source| CompileError::Tool { what, source };
    let cc_version =
        exec::output_line(Command::new("cc").arg("--version")).map_err(tool("its version"))?;
    let gcc_include = exec::output_line(Command::new("cc").arg("-print-file-name=include"))
        .map_err(tool("its include directory"))?;
    let mut key = KeyHasher::new();
    key.str("cc", &cc_version)
        .str("musl", &musl.root.display().to_string());
    for f in BASE_CFLAGS {
        key.str("base cflag", f);
    }
    for f in cflags {
        key.str("cflag", f);
    }
    key.str("file prefix map", "source directory=.");
    for (i, s) in sources.iter().enumerate() {
        key.file(&format!("source{i}"), s)?;
    }
    let key = key.finish();
    let names: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{i}-{}.o",
                s.file_stem().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    let dir = cache.get_or_build("compile", &key, |out: &Path| -> Result<(), StageFailure> {
        for (src, name) in sources.iter().zip(&names) {
            // __FILE__ (assert, a program's own messages) names the source
            // by its file name, not by where the checkout is.
            let prefix_map = src
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| format!("-ffile-prefix-map={}=.", d.display()));
            let mut cmd = Command::new("cc");
            cmd.args(prefix_map)
                .arg("-c")
                .arg("-O2")
                .arg("-nostdinc")
                .arg("-isystem")
                .arg(musl.include_dir())
                .arg("-isystem")
                .arg(&gcc_include)
                .args(BASE_CFLAGS)
                .args(cflags)
                .arg("-o")
                .arg(out.join(name))
                .arg(src);
            exec::run(&mut cmd, "compile", log)?;
        }
        Ok(())
    });
    let dir = match dir {
        Ok(d) => d,
        Err(e) => return Err(CompileError::Source(e.into_build_error::<StageFailure>()?)),
    };
    Ok(Objects {
        files: names.iter().map(|n| dir.join(n)).collect(),
    })
}
