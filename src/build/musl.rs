//! musl from pinned source (docs/ARCHITECTURE.md §1 `compile`, §3 ABI).
//!
//! Two flavors from one tarball: `Stock`, for programs that run on the
//! build host (the host-linked postgres, differential tests), and `Patched`,
//! whose system calls are calls into the library OS
//! (`libos/musl/patches/`), for the image. Both are plain static
//! sysroots (`include/`, `lib/`) cached under stage `musl`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::read::GzDecoder;

use super::cache::{Cache, CacheError, KeyHasher};
use super::fetch::{SourceSpec, VerifiedSource};

/// The musl release pgkraft builds when a recipe does not choose one.
/// (`SourceSpec` owns `String`s, so the pin is `&'static str`s and
/// [`MuslPin::spec`] turns it into a spec.)
#[derive(Clone, Copy, Debug)]
pub struct MuslPin {
    pub version: &'static str,
    /// The upstream file name, also the name hint for [`super::fetch::fetch`].
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub url: &'static str,
}

impl MuslPin {
    pub fn spec(&self) -> SourceSpec {
        SourceSpec {
            url: Some(self.url.to_string()),
            path: None,
            sha256: self.sha256.to_string(),
        }
    }
}

/// Debian's `musl_1.2.3.orig.tar.gz` is this same file, which is how
/// `ci/fetch-sources.sh` provides it on machines without internet.
pub const MUSL_PIN: MuslPin = MuslPin {
    version: "1.2.3",
    file_name: "musl-1.2.3.tar.gz",
    sha256: "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4",
    url: "https://musl.libc.org/releases/musl-1.2.3.tar.gz",
};

/// The compiler driver used for musl and for everything compiled against it.
pub const CC: &str = "cc";

/// `-ffunction-sections -fdata-sections` let the final link drop unused
/// libc code per function. No stack protector, whatever the compiler's
/// default: its canary is read through the thread pointer (%fs:0x28), which
/// would make every protected libc function depend on TLS being set up, and
/// it is not early in startup. No -fPIC/-fno-pie: the compiler default (PIE
/// on Debian; musl then adds -fPIC itself) yields PC-relative references that
/// link into the static non-PIE image at 1 MiB as well as into a host
/// executable, and measured against -fno-pie it costs nothing (libc.a text
/// 606.5 kB vs 608.9 kB; a static hello 17.6 kB vs 17.7 kB).
pub const MUSL_CFLAGS: &str = "-O2 -ffunction-sections -fdata-sections -fno-stack-protector";

/// Bumped whenever how musl is built changes in a way its inputs do not
/// show (configure arguments, steps, checks), so stale sysroots are rebuilt.
const BUILD_RECIPE: &str = "musl-build-v1";

pub const CACHE_STAGE: &str = "musl";

const LOG_TAIL_LINES: usize = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MuslFlavor {
    /// System calls are calls to `__pgkraft_syscall` / `__pgkraft_syscall_asm`.
    Patched,
    /// Upstream musl: runs on Linux.
    Stock,
}

impl MuslFlavor {
    pub fn as_str(self) -> &'static str {
        match self {
            MuslFlavor::Patched => "patched",
            MuslFlavor::Stock => "stock",
        }
    }
}

/// An installed musl: `include/` and `lib/` under `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuslSysroot {
    pub root: PathBuf,
}

impl MuslSysroot {
    pub fn include_dir(&self) -> PathBuf {
        self.root.join("include")
    }
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }
    pub fn libc_a(&self) -> PathBuf {
        self.lib_dir().join("libc.a")
    }
    pub fn crt1_o(&self) -> PathBuf {
        self.lib_dir().join("crt1.o")
    }
    /// The start file of a static PIE (musl relocates the program itself).
    pub fn rcrt1_o(&self) -> PathBuf {
        self.lib_dir().join("rcrt1.o")
    }
    pub fn crti_o(&self) -> PathBuf {
        self.lib_dir().join("crti.o")
    }
    pub fn crtn_o(&self) -> PathBuf {
        self.lib_dir().join("crtn.o")
    }

    /// Compiler flags that replace the host libc's headers with musl's. The
    /// compiler's own header directory stays (after musl's) for intrinsics
    /// and the few headers musl leaves to the compiler.
    pub fn compile_flags(&self) -> Result<Vec<OsString>, MuslError> {
        Ok(vec![
            "-nostdinc".into(),
            "-isystem".into(),
            self.include_dir().into(),
            "-isystem".into(),
            compiler_include_dir()?.into(),
        ])
    }

    /// Driver arguments for a static, non-PIE executable from `objects` and
    /// this musl, for `cc <these> -o <out> [more flags]`. libgcc supplies
    /// compiler helpers (e.g. 128-bit division); the group resolves
    /// references between it and libc in either direction.
    pub fn static_link_args(&self, objects: &[PathBuf]) -> Result<Vec<OsString>, MuslError> {
        let mut args: Vec<OsString> = vec![
            "-static".into(),
            "-nostdlib".into(),
            "-no-pie".into(),
            self.crt1_o().into(),
            self.crti_o().into(),
        ];
        args.extend(objects.iter().map(|o| o.clone().into_os_string()));
        args.push("-Wl,--start-group".into());
        args.push(self.libc_a().into());
        args.push(libgcc_a()?.into());
        args.push("-Wl,--end-group".into());
        args.push(self.crtn_o().into());
        Ok(args)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MuslError {
    #[error(
        "{step} failed ({status}); full log: {}\n--- last {LOG_TAIL_LINES} lines of the log ---\n{tail}",
        log.display()
    )]
    Step {
        step: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{step}: cannot run {program}: {source} (is it installed? ci/bootstrap.sh installs it)"
    )]
    Spawn {
        step: &'static str,
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "musl check: the patched libc still issues system calls directly, which cannot work \
         under the libOS; extend libos/musl/patches/ to cover:\n{0}"
    )]
    DirectSyscalls(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MuslError {
    let path = path.to_path_buf();
    move |source| MuslError::Io { what, path, source }
}

/// `libos/musl/patches/` in this repository.
pub fn patch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("libos/musl/patches")
}

fn patches() -> Result<Vec<PathBuf>, MuslError> {
    let dir = patch_dir();
    let mut list: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err("cannot read patch directory", &dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    list.sort();
    Ok(list)
}

fn output_of(step: &'static str, program: &str, args: &[&str]) -> Result<String, MuslError> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| MuslError::Spawn {
            step,
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(MuslError::Spawn {
            step,
            program: format!("{program} {}", args.join(" ")),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The compiler's private header directory (stddef.h, intrinsics).
pub fn compiler_include_dir() -> Result<PathBuf, MuslError> {
    let s = output_of("compiler query", CC, &["-print-file-name=include"])?;
    Ok(PathBuf::from(s.trim()))
}

/// The compiler's libgcc.a.
pub fn libgcc_a() -> Result<PathBuf, MuslError> {
    let s = output_of("compiler query", CC, &["-print-libgcc-file-name"])?;
    Ok(PathBuf::from(s.trim()))
}

/// Builds (or finds in the cache) musl from `src` in the given flavor.
/// Tool output is appended to `log`.
pub fn build_musl(
    src: &VerifiedSource,
    flavor: MuslFlavor,
    cache: &Cache,
    log: &Path,
) -> Result<MuslSysroot, MuslError> {
    let cc_version = output_of("musl key", CC, &["--version"])?;
    // musl's assembly files go through the assembler directly, and its
    // version changes their objects just as the compiler's changes the rest.
    let as_version = output_of("musl key", "as", &["--version"])?;
    let patches = match flavor {
        MuslFlavor::Patched => patches()?,
        MuslFlavor::Stock => Vec::new(),
    };

    let mut key = KeyHasher::new();
    key.str("stage", CACHE_STAGE)
        .str("build-recipe", BUILD_RECIPE)
        .str("source-sha256", &src.sha256)
        .str("flavor", flavor.as_str())
        .str("cflags", MUSL_CFLAGS)
        .str("cc --version", &cc_version)
        .str("as --version", &as_version);
    // Only the patched flavor depends on the patches; editing them must not
    // rebuild the stock one.
    if flavor == MuslFlavor::Patched {
        key.dir("patches", &patch_dir())?;
    }
    let key = key.finish();

    if let Some(dir) = cache.lookup(CACHE_STAGE, &key) {
        log::debug!("musl ({}): cached at {}", flavor.as_str(), dir.display());
        return Ok(MuslSysroot { root: dir });
    }
    log::info!("building musl {} ({})", MUSL_PIN.version, flavor.as_str());
    let root = cache
        .get_or_build(CACHE_STAGE, &key, |out| {
            build_into(src, flavor, &patches, out, log)
        })
        .map_err(|e| match e.into_build_error::<MuslError>() {
            Ok(me) => me,
            Err(ce) => MuslError::Cache(ce),
        })?;
    Ok(MuslSysroot { root })
}

fn build_into(
    src: &VerifiedSource,
    flavor: MuslFlavor,
    patches: &[PathBuf],
    out: &Path,
    log: &Path,
) -> Result<(), MuslError> {
    let mut logf = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err("cannot open log", log))?;
    let mut note = |s: String| {
        let _ = writeln!(logf, "==> {s}");
    };
    note(format!(
        "musl {} ({}) from {} into {}",
        MUSL_PIN.version,
        flavor.as_str(),
        src.path.display(),
        out.display()
    ));

    // The source tree is scratch; the finished sysroot is all that is kept.
    let work = tempfile::Builder::new()
        .prefix("pgkraft-musl-")
        .tempdir()
        .map_err(io_err(
            "cannot create temporary directory in",
            &std::env::temp_dir(),
        ))?;
    let srcdir = unpack(&src.path, work.path())?;

    for p in patches {
        run_step(
            "musl patch",
            Command::new("patch")
                .args(super::exec::PATCH_ARGS)
                .arg(p)
                .current_dir(&srcdir),
            log,
        )?;
    }

    let mut prefix = OsString::from("--prefix=");
    prefix.push(out);
    run_step(
        "musl configure",
        Command::new("sh")
            .arg("./configure")
            .arg(prefix)
            // Static only: the image and the host link are both static.
            .arg("--disable-shared")
            // The musl-gcc wrapper would record the temporary prefix.
            .arg("--disable-wrapper")
            // --target pins the architecture; an equal --build says this is
            // not a cross build, or configure would look for x86_64-gcc.
            .arg("--target=x86_64")
            .arg("--build=x86_64")
            .arg(format!("CC={CC}"))
            .arg(format!("CFLAGS={MUSL_CFLAGS}"))
            .current_dir(&srcdir),
        log,
    )?;

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_step(
        "musl make",
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .current_dir(&srcdir),
        log,
    )?;
    run_step(
        "musl make install",
        Command::new("make").arg("install").current_dir(&srcdir),
        log,
    )?;

    let sysroot = MuslSysroot {
        root: out.to_path_buf(),
    };
    for f in [
        sysroot.libc_a(),
        sysroot.crt1_o(),
        sysroot.crti_o(),
        sysroot.crtn_o(),
        sysroot.include_dir().join("stdio.h"),
    ] {
        if !f.is_file() {
            return Err(MuslError::Step {
                step: "musl make install",
                status: format!("{} was not installed", f.display()),
                log: log.to_path_buf(),
                tail: log_tail(log),
            });
        }
    }
    if flavor == MuslFlavor::Patched {
        check_no_direct_syscalls(&sysroot, log)?;
    }
    Ok(())
}

/// Unpacks a .tar.gz into `dest` and returns its single top-level directory.
fn unpack(tarball: &Path, dest: &Path) -> Result<PathBuf, MuslError> {
    let f = File::open(tarball).map_err(io_err("cannot open", tarball))?;
    let mut archive = tar::Archive::new(GzDecoder::new(io::BufReader::new(f)));
    // `unpack` refuses entries that would land outside `dest`.
    archive
        .unpack(dest)
        .map_err(io_err("musl unpack: cannot unpack", tarball))?;
    let mut dirs = fs::read_dir(dest)
        .map_err(io_err("cannot read", dest))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path());
    match (dirs.next(), dirs.next()) {
        (Some(d), None) => Ok(d),
        _ => Err(io_err(
            "musl unpack: expected one top-level directory in",
            tarball,
        )(io::Error::from(io::ErrorKind::InvalidData))),
    }
}

/// Runs one build step with its output appended to `log`, in an
/// environment that cannot leak the caller's build settings into musl's.
fn run_step(step: &'static str, cmd: &mut Command, log: &Path) -> Result<(), MuslError> {
    let mut logf = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err("cannot open log", log))?;
    let _ = writeln!(logf, "==> {step}: {cmd:?}");
    let stdout = logf.try_clone().map_err(io_err("cannot open log", log))?;
    for var in [
        "CFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
        "CC",
        "CROSS_COMPILE",
        "LIBCC",
        "AR",
        "RANLIB",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "MAKEFILES",
        "GNUMAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(logf)
        .status()
        .map_err(|source| MuslError::Spawn {
            step,
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(MuslError::Step {
            step,
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log),
        })
    }
}

/// The last lines of the log, reading only its end: logs are appended to
/// across builds and can grow large.
fn log_tail(log: &Path) -> String {
    let Ok(mut f) = File::open(log) else {
        return String::from("(log unreadable)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Disassembles the patched libc and start files and refuses the build if
/// any instruction that enters the kernel directly is left, naming where.
fn check_no_direct_syscalls(sysroot: &MuslSysroot, log: &Path) -> Result<(), MuslError> {
    let step = "musl check";
    let mut child = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(sysroot.libc_a())
        .arg(sysroot.crt1_o())
        .arg(sysroot.crti_o())
        .arg(sysroot.crtn_o())
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| MuslError::Spawn {
            step,
            program: "objdump".into(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let found = find_direct_syscalls(BufReader::new(stdout))
        .map_err(io_err("cannot read objdump output for", &sysroot.libc_a()))?;
    let status = child
        .wait()
        .map_err(io_err("objdump failed on", &sysroot.libc_a()))?;
    if !status.success() {
        return Err(MuslError::Step {
            step,
            status: format!("objdump: {status}"),
            log: log.to_path_buf(),
            tail: log_tail(log),
        });
    }
    if found.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let mut list = found[..found.len().min(SHOWN)].join("\n");
    if found.len() > SHOWN {
        list.push_str(&format!("\n... and {} more", found.len() - SHOWN));
    }
    Err(MuslError::DirectSyscalls(list))
}

/// Scans `objdump -d` output for `syscall`, `sysenter` and `int $0x80`,
/// returning "object: function: instruction" for each.
pub fn find_direct_syscalls(r: impl BufRead) -> io::Result<Vec<String>> {
    let mut object = String::new();
    let mut function = String::new();
    let mut found = Vec::new();
    for line in r.lines() {
        let line = line?;
        if let Some(obj) = line.split_once(":     file format").map(|(o, _)| o) {
            object = obj.to_string();
        } else if line.ends_with(">:") {
            function = line.to_string();
        } else if let Some((_, insn)) = line.split_once(":\t") {
            let insn = insn.trim();
            let mnemonic = insn.split_whitespace().next().unwrap_or("");
            if mnemonic == "syscall"
                || mnemonic == "sysenter"
                || (mnemonic == "int" && insn.ends_with("$0x80"))
            {
                found.push(format!("{object}: {function} {insn}"));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_syscalls_in_objdump_output() {
        let text = "\
In archive libc.a:

restore.lo:     file format elf64-x86-64


Disassembly of section .text:

0000000000000001 <__restore_rt>:
   1:\tmov    $0xf,%rax
   8:\tsyscall
   a:\tcall   f <x>
  10:\tint    $0x80
  12:\tint3
";
        let found = find_direct_syscalls(text.as_bytes()).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("restore.lo") && found[0].contains("__restore_rt"));
    }
}
