//! Link the image: boot stub + libOS + program objects + patched musl into
//! one static ELF at 1 MiB, with --gc-sections; and the native twin of a
//! program (the same objects with stock musl) for differential tests.

use super::exec::{self, StageFailure};
use super::libos::LibosBuild;
use super::musl::MuslSysroot;
use object::write::{Object, StandardSection, Symbol, SymbolSection};
use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ImageLink<'a> {
    pub objects: &'a [PathBuf],
    pub musl: &'a MuslSysroot,
    pub libos: &'a LibosBuild,
    /// argv[0] first, then the baked-in arguments.
    pub argv: &'a [String],
    /// `KEY=value` strings.
    pub env: &'a [String],
    /// JSON describing the build (recipe, inputs), kept in the non-loaded
    /// section `.pgkraft.manifest` for `pgkraft inspect` and `pgkraft run`.
    pub build_info: &'a [u8],
}

/// The non-allocated ELF section holding the build info.
pub const MANIFEST_SECTION: &str = ".pgkraft.manifest";

/// What the linker did, for the manifest.
pub struct LinkReport {
    /// Input sections --gc-sections dropped, and their bytes.
    pub dropped_sections: usize,
    pub dropped_bytes: u64,
}

fn failure(what: String, log: &Path) -> StageFailure {
    StageFailure {
        stage: "link".into(),
        what,
        log: log.to_path_buf(),
        tail: exec::tail(log, exec::TAIL_LINES),
    }
}

/// The baked-in argv and environment as an object file: two symbols naming
/// blobs of NUL-terminated strings, each ended by an empty string.
fn args_object(
    argv: &[String],
    env: &[String],
    build_info: &[u8],
) -> Result<Vec<u8>, object::write::Error> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let info = obj.add_section(
        Vec::new(),
        MANIFEST_SECTION.as_bytes().to_vec(),
        object::SectionKind::Metadata,
    );
    obj.append_section_data(info, build_info, 1);
    let section = obj.section_id(StandardSection::ReadOnlyData);
    for (name, strings) in [("__pgkraft_argv_blob", argv), ("__pgkraft_envp_blob", env)] {
        let mut blob = Vec::new();
        for s in strings {
            blob.extend_from_slice(s.as_bytes());
            blob.push(0);
        }
        blob.push(0);
        let offset = obj.append_section_data(section, &blob, 1);
        obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: offset,
            size: blob.len() as u64,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    }
    obj.write()
}

fn libgcc() -> Result<String, std::io::Error> {
    exec::output_line(Command::new("cc").arg("-print-libgcc-file-name"))
}

/// Link the image into `out` (the caller renames it into place).
pub fn link_image(input: &ImageLink, out: &Path, log: &Path) -> Result<LinkReport, StageFailure> {
    if input.argv.iter().chain(input.env).any(|s| s.contains('\0')) {
        return Err(failure(
            "an argument or environment value contains a NUL byte".into(),
            log,
        ));
    }
    let tmp = tempfile::tempdir()
        .map_err(|e| failure(format!("cannot create a temporary directory: {e}"), log))?;
    let args_o = tmp.path().join("pgkraft-args.o");
    let bytes = args_object(input.argv, input.env, input.build_info)
        .map_err(|e| failure(format!("cannot write {}: {e}", args_o.display()), log))?;
    std::fs::write(&args_o, bytes)
        .map_err(|e| failure(format!("cannot write {}: {e}", args_o.display()), log))?;
    let libgcc = libgcc().map_err(|e| failure(format!("cannot find libgcc: {e}"), log))?;
    let gc_list = tmp.path().join("gc-sections.txt");

    let mut cmd = Command::new("ld");
    cmd.arg("-static")
        .arg("-nostdlib")
        .arg("-T")
        .arg(&input.libos.linker_script)
        .arg("--gc-sections")
        .arg("--print-gc-sections")
        // Debug info is for developers with the objects at hand; the image
        // keeps its symbol table (pgkraft inspect, fault reports).
        .arg("--strip-debug")
        .arg("-z")
        .arg("max-page-size=4096")
        .arg("-z")
        .arg("noexecstack")
        .arg("--build-id=none")
        .arg("-o")
        .arg(out)
        .arg(input.musl.crt1_o())
        .arg(input.musl.crti_o())
        .args(input.objects)
        .arg(&args_o)
        .arg("--start-group")
        .arg(input.musl.libc_a())
        .arg(&input.libos.staticlib)
        .arg(&libgcc)
        .arg("--end-group")
        .arg(input.musl.crtn_o());
    // --print-gc-sections writes to stderr; keep it apart from the log so the
    // report can count it and a failure's tail stays readable.
    let gc = std::fs::File::create(&gc_list)
        .map_err(|e| failure(format!("cannot create {}: {e}", gc_list.display()), log))?;
    cmd.stderr(gc);
    let status = cmd
        .status()
        .map_err(|e| failure(format!("cannot run ld: {e}"), log))?;
    let gc_text = std::fs::read_to_string(&gc_list).unwrap_or_default();
    let (dropped, errors): (Vec<&str>, Vec<&str>) = gc_text
        .lines()
        .partition(|l| l.contains("removing unused section"));
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "$ {cmd:?}");
            for l in &errors {
                let _ = writeln!(f, "{l}");
            }
            let _ = writeln!(f, "({} unused input sections removed)", dropped.len());
        }
    }
    if !status.success() {
        return Err(failure(format!("ld exited with {status}"), log));
    }
    let dropped_bytes = dropped_section_bytes(&dropped);
    Ok(LinkReport {
        dropped_sections: dropped.len(),
        dropped_bytes,
    })
}

/// Sum the sizes of the sections ld reported removing ("removing unused
/// section '.text.foo' in file 'x.o'"), reading each input object once.
fn dropped_section_bytes(lines: &[&str]) -> u64 {
    use object::{Object as _, ObjectSection as _};
    use std::collections::HashMap;
    let mut by_file: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in lines {
        let mut parts = l.split('\'');
        if let (Some(_), Some(section), Some(_), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            by_file.entry(file).or_default().push(section);
        }
    }
    let mut total = 0;
    for (file, sections) in by_file {
        // Archive members are reported as "lib.a(member.o)".
        let (path, member) = match file.split_once('(') {
            Some((a, m)) => (a, Some(m.trim_end_matches(')'))),
            None => (file, None),
        };
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        let mut sizes = |bytes: &[u8]| {
            if let Ok(obj) = object::File::parse(bytes) {
                for s in obj.sections() {
                    if s.name().is_ok_and(|name| sections.contains(&name)) {
                        total += s.size();
                    }
                }
            }
        };
        match member {
            None => sizes(&data),
            Some(m) => {
                if let Ok(archive) = object::read::archive::ArchiveFile::parse(&*data) {
                    for member in archive.members().flatten() {
                        if member.name() == m.as_bytes()
                            && let Ok(bytes) = member.data(&*data)
                        {
                            sizes(bytes);
                        }
                    }
                }
            }
        }
    }
    total
}

/// The same objects linked with stock musl into a program for this host.
pub fn link_native(
    objects: &[PathBuf],
    musl: &MuslSysroot,
    out: &Path,
    log: &Path,
) -> Result<(), StageFailure> {
    let libgcc = libgcc().map_err(|e| failure(format!("cannot find libgcc: {e}"), log))?;
    let mut cmd = Command::new("ld");
    cmd.arg("-static")
        .arg("-nostdlib")
        .arg("--gc-sections")
        .arg("-o")
        .arg(out)
        .arg(musl.crt1_o())
        .arg(musl.crti_o())
        .args(objects)
        .arg("--start-group")
        .arg(musl.libc_a())
        .arg(&libgcc)
        .arg("--end-group")
        .arg(musl.crtn_o());
    exec::run(&mut cmd, "native link", log)
}
