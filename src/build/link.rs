//! Link the image, with --gc-sections: the program objects + patched musl
//! into a static PIE (the libOS loads it once per process, each at its own
//! base), then boot stub + libOS into one static ELF at 1 MiB that carries
//! that program, the rootfs and the baked-in arguments as sections; and the
//! native twin of a program (the same objects with stock musl) for
//! differential tests. docs/ARCHITECTURE.md §1-§3.

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
    /// The rootfs archive, placed in the loaded section `.pgkraft.rootfs`
    /// between `__pgkraft_rootfs_start` and `__pgkraft_rootfs_end`; its
    /// index (build::rootfs_index, at build::rootfs::index_path) goes into
    /// `.pgkraft.rootfs_index`.
    pub rootfs: Option<&'a Path>,
    /// JSON describing the build (recipe, inputs), kept in the non-loaded
    /// section `.pgkraft.manifest` for `pgkraft inspect` and `pgkraft run`.
    pub build_info: &'a [u8],
    /// Where the symbols go ([`split_symbols`]; the caller renames it into
    /// place with the image).
    pub debug_out: &'a Path,
}

use crate::image::format::{
    ARGV_SYMBOL, ENVP_SYMBOL, MANIFEST_SECTION, PROGRAM_SECTION, PROGRAM_SYMBOLS_SECTION,
    ROOTFS_INDEX_SECTION, ROOTFS_SECTION,
};

/// What the linker did, for the manifest.
pub struct LinkReport {
    /// Input sections --gc-sections dropped, and their bytes.
    pub dropped_sections: usize,
    pub dropped_bytes: u64,
    /// Bytes each input object contributes to the image, largest first.
    pub objects: Vec<ObjectBytes>,
    /// Bytes --gc-sections removed from each input object, largest first.
    pub dropped_objects: Vec<ObjectBytes>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ObjectBytes {
    /// The object, or `archive.a(member.o)`.
    pub object: String,
    pub bytes: u64,
}

/// Per-object sizes from an ld map file: the input sections listed under
/// "Linker script and memory map", as ` .name addr size file` (the name on
/// a line of its own when it is long). Discarded sections come before that
/// heading and do not count.
pub fn object_sizes(map: &str) -> Vec<ObjectBytes> {
    use std::collections::HashMap;
    let Some((_, body)) = map.split_once("Linker script and memory map") else {
        return Vec::new();
    };
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    let mut pending = false;
    // Whether the current output section takes room in the file (.bss and
    // .tbss do not).
    let mut in_file = true;
    for line in body.lines() {
        if line.starts_with('.') {
            let name = line.split_whitespace().next().unwrap_or("");
            in_file = !matches!(name, ".bss" | ".tbss");
            continue;
        }
        if !in_file {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let input_section = line.starts_with(" .") || line.starts_with(" COMMON");
        let triple = match (input_section, tokens.len(), pending) {
            (true, 4, _) => Some((tokens[1], tokens[2], tokens[3])),
            (true, 1, _) => {
                pending = true;
                continue;
            }
            (false, 3, true) if line.starts_with("  ") => Some((tokens[0], tokens[1], tokens[2])),
            _ => None,
        };
        pending = false;
        if let Some((addr, size, file)) = triple
            && addr.starts_with("0x")
            && let Ok(size) = u64::from_str_radix(size.trim_start_matches("0x"), 16)
            && size > 0
        {
            *sizes.entry(file).or_default() += size;
        }
    }
    let mut v: Vec<ObjectBytes> = sizes
        .into_iter()
        .map(|(o, b)| ObjectBytes {
            object: o.to_string(),
            bytes: b,
        })
        .collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.object.cmp(&b.object)));
    v
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
    program: &[u8],
    rootfs: Option<&[u8]>,
    rootfs_index: Option<&[u8]>,
) -> Result<Vec<u8>, object::write::Error> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    // Page aligned: the libOS maps the program's read-only segments
    // straight out of this section into every process's address range.
    let prog = obj.add_section(
        Vec::new(),
        PROGRAM_SECTION.as_bytes().to_vec(),
        object::SectionKind::ReadOnlyData,
    );
    obj.append_section_data(prog, program, 4096);
    if let Some(bytes) = rootfs {
        // Page aligned so the archive starts a page of its own: a cold boot
        // copies the image into RAM (vmm::memory), but a resumed snapshot
        // maps the image pages the guest never touched straight from the
        // file (vmm::snapshot), and those are shared between instances.
        let fs = obj.add_section(
            Vec::new(),
            ROOTFS_SECTION.as_bytes().to_vec(),
            object::SectionKind::ReadOnlyData,
        );
        obj.append_section_data(fs, bytes, 4096);
    }
    if let Some(index) = rootfs_index {
        let ix = obj.add_section(
            Vec::new(),
            ROOTFS_INDEX_SECTION.as_bytes().to_vec(),
            object::SectionKind::ReadOnlyData,
        );
        obj.append_section_data(ix, index, 8);
    }
    let info = obj.add_section(
        Vec::new(),
        MANIFEST_SECTION.as_bytes().to_vec(),
        object::SectionKind::Metadata,
    );
    obj.append_section_data(info, build_info, 1);
    let section = obj.section_id(StandardSection::ReadOnlyData);
    for (name, strings) in [(ARGV_SYMBOL, argv), (ENVP_SYMBOL, env)] {
        let mut blob = Vec::new();
        for s in strings {
            blob.extend_from_slice(s.as_bytes());
            blob.push(0);
        }
        blob.push(0);
        let offset = obj.append_section_data(section, &blob, 1);
        global_symbol(
            &mut obj,
            name,
            section,
            offset,
            blob.len(),
            SymbolKind::Data,
        );
    }
    obj.write()
}

/// A global symbol `name` for `len` bytes at `offset` in `section`.
fn global_symbol(
    obj: &mut Object,
    name: &str,
    section: object::write::SectionId,
    offset: u64,
    len: usize,
    kind: SymbolKind,
) {
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: offset,
        size: len as u64,
        kind,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
}

fn libgcc() -> Result<String, std::io::Error> {
    exec::output_line(Command::new("cc").arg("-print-libgcc-file-name"))
}

/// The program's two ways into the libOS as an object file: stubs named
/// `__pgkraft_syscall` and `__pgkraft_syscall_asm` that jump through the
/// libOS's entry table at its fixed address ([`SYSCALL_ENTRY_TABLE`]). The
/// program is a static PIE loaded at a base of its own per process, so it
/// cannot be linked against the libOS; an absolute memory operand needs no
/// relocation, and a jump keeps the caller's registers and stack as they
/// were, which both entry points' contracts rely on.
fn entry_stubs_object() -> Result<Vec<u8>, object::write::Error> {
    use pgkraft_abi::SYSCALL_ENTRY_TABLE;
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    for (i, name) in ["__pgkraft_syscall", "__pgkraft_syscall_asm"]
        .into_iter()
        .enumerate()
    {
        let slot = u32::try_from(SYSCALL_ENTRY_TABLE + 8 * i as u64).expect("below 2 GiB");
        // jmp *disp32 (ModRM 0x24, SIB 0x25: no base, no index).
        let mut code = vec![0xff, 0x24, 0x25];
        code.extend_from_slice(&slot.to_le_bytes());
        let offset = obj.append_section_data(text, &code, 16);
        global_symbol(&mut obj, name, text, offset, code.len(), SymbolKind::Text);
    }
    obj.write()
}

/// One `ld` run whose dropped sections (--print-gc-sections) and map are
/// kept for the report; the command and any errors go to `log`.
struct LdRun {
    dropped: Vec<String>,
    map: String,
}

fn run_ld(mut cmd: Command, tmp: &Path, tag: &str, log: &Path) -> Result<LdRun, StageFailure> {
    let gc_list = tmp.join(format!("{tag}-gc-sections.txt"));
    let map = tmp.join(format!("{tag}.map"));
    cmd.arg(format!("-Map={}", map.display()));
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
        return Err(failure(format!("ld ({tag}) exited with {status}"), log));
    }
    Ok(LdRun {
        dropped: dropped.into_iter().map(String::from).collect(),
        map: std::fs::read_to_string(&map).unwrap_or_default(),
    })
}

/// Moves `elf`'s symbol tables (and any debug sections) into `debug`, an
/// ELF with the same section headers and no contents (`objcopy
/// --only-keep-debug`: gdb, addr2line and `pgkraft inspect` read it), and
/// strips `elf` in place but for the symbols in `keep`. Nothing loaded
/// reads symbols (the libOS loads the program by its program headers; its
/// start code, the patched rcrt1.o, relocates it from `.dynamic`), and they
/// were 1.4 MB of the default PostgreSQL image's 14.2 MB.
fn split_symbols(elf: &Path, debug: &Path, keep: &[&str], log: &Path) -> Result<(), StageFailure> {
    let mut only_debug = Command::new("objcopy");
    only_debug.arg("--only-keep-debug").arg(elf).arg(debug);
    exec::run(&mut only_debug, "link (debug file)", log)?;
    let mut strip = Command::new("objcopy");
    strip.arg("--strip-all");
    for k in keep {
        strip.arg(format!("--keep-symbol={k}"));
    }
    strip.arg(elf);
    exec::run(&mut strip, "link (strip)", log)
}

/// Flags both links share.
fn ld_base() -> Command {
    let mut cmd = Command::new("ld");
    cmd.arg("-static")
        .arg("-nostdlib")
        .arg("--gc-sections")
        .arg("--print-gc-sections")
        // Debug info is for developers with the objects at hand; the
        // symbol tables go to the debug file (split_symbols).
        .arg("--strip-debug")
        .arg("-z")
        .arg("max-page-size=4096")
        .arg("-z")
        .arg("noexecstack")
        .arg("--build-id=none");
    cmd
}

/// Link the image into `out` (the caller renames it into place), in two
/// steps: the program (objects, patched musl, entry stubs) as a static PIE,
/// then the libOS image at 1 MiB holding that program, the rootfs and the
/// baked-in arguments as sections.
pub fn link_image(input: &ImageLink, out: &Path, log: &Path) -> Result<LinkReport, StageFailure> {
    if input.argv.iter().chain(input.env).any(|s| s.contains('\0')) {
        return Err(failure(
            "an argument or environment value contains a NUL byte".into(),
            log,
        ));
    }
    let tmp = tempfile::tempdir()
        .map_err(|e| failure(format!("cannot create a temporary directory: {e}"), log))?;
    let write = |name: &str, bytes: Result<Vec<u8>, object::write::Error>| {
        let path = tmp.path().join(name);
        bytes
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&path, b).map_err(|e| e.to_string()))
            .map_err(|e| failure(format!("cannot write {}: {e}", path.display()), log))?;
        Ok::<PathBuf, StageFailure>(path)
    };
    let libgcc = libgcc().map_err(|e| failure(format!("cannot find libgcc: {e}"), log))?;

    // The program. No dynamic linker and no text relocations: musl's
    // rcrt1.o applies the program's own relative relocations at start.
    let stubs_o = write("pgkraft-entry-stubs.o", entry_stubs_object())?;
    let program = tmp.path().join("program.elf");
    let mut cmd = ld_base();
    cmd.arg("-pie")
        .arg("--no-dynamic-linker")
        .arg("-z")
        .arg("text")
        // Relative relocations as RELR (applied by the patched rcrt1.o,
        // libos/musl/patches/0002-dt-relr.patch): 561 KB of RELA entries
        // in the default PostgreSQL image become a few KB.
        .arg("-z")
        .arg("pack-relative-relocs")
        .arg("-o")
        .arg(&program)
        .arg(input.musl.rcrt1_o())
        .arg(input.musl.crti_o())
        .args(input.objects)
        .arg(&stubs_o)
        .arg("--start-group")
        .arg(input.musl.libc_a())
        .arg(&libgcc)
        .arg("--end-group")
        .arg(input.musl.crtn_o());
    let program_run = run_ld(cmd, tmp.path(), "program", log)?;
    let program_symbols = tmp.path().join("program.debug");
    split_symbols(&program, &program_symbols, &[], log)?;

    let read = |p: Option<&Path>| -> Result<Option<Vec<u8>>, StageFailure> {
        p.map(|p| {
            std::fs::read(p).map_err(|e| failure(format!("cannot read {}: {e}", p.display()), log))
        })
        .transpose()
    };
    let index = input.rootfs.map(super::rootfs::index_path);
    let (rootfs, index) = (read(input.rootfs)?, read(index.as_deref())?);
    let program_bytes = read(Some(&program))?.unwrap_or_default();
    let args_o = write(
        "pgkraft-args.o",
        args_object(
            input.argv,
            input.env,
            input.build_info,
            &program_bytes,
            rootfs.as_deref(),
            index.as_deref(),
        ),
    )?;
    let args_name = args_o.display().to_string();

    // The libOS image. libc.a supplies only the string functions the
    // libOS's Rust code calls (memcpy and friends).
    let mut cmd = ld_base();
    cmd.arg("-T")
        .arg(&input.libos.linker_script)
        .arg("-o")
        .arg(out)
        .arg(&args_o)
        .arg("--start-group")
        .arg(&input.libos.staticlib)
        .arg(input.musl.libc_a())
        .arg(&libgcc)
        .arg("--end-group");
    let image_run = run_ld(cmd, tmp.path(), "image", log)?;
    // The image keeps the two symbols `pgkraft run` reads the baked-in
    // arguments by (image::Image::baked_argv); the debug file carries the
    // program's symbols too, as a section of their own.
    split_symbols(out, input.debug_out, &[ARGV_SYMBOL, ENVP_SYMBOL], log)?;
    let mut add = Command::new("objcopy");
    add.arg("--add-section")
        .arg(format!(
            "{PROGRAM_SYMBOLS_SECTION}={}",
            program_symbols.display()
        ))
        .arg(input.debug_out);
    exec::run(&mut add, "link (debug file)", log)?;

    let dropped: Vec<&str> = program_run
        .dropped
        .iter()
        .chain(&image_run.dropped)
        .map(String::as_str)
        .collect();
    let dropped_objects = dropped_by_object(&dropped);
    let dropped_bytes = dropped_objects.iter().map(|o| o.bytes).sum();
    let mut objects = object_sizes(&program_run.map);
    objects.extend(
        object_sizes(&image_run.map)
            .into_iter()
            .filter(|o| o.object != args_name),
    );
    objects.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.object.cmp(&b.object)));
    for o in &mut objects {
        if o.object == stubs_o.display().to_string() {
            o.object = "(generated) system-call entry stubs".into();
        }
    }
    Ok(LinkReport {
        dropped_sections: dropped.len(),
        dropped_bytes,
        dropped_objects,
        objects,
    })
}

/// Bytes of the sections ld reported removing ("removing unused section
/// '.text.foo' in file 'x.o'"), per input object, largest first. Each file
/// (or archive) is read once.
fn dropped_by_object(lines: &[&str]) -> Vec<ObjectBytes> {
    use object::{Object as _, ObjectSection as _};
    use std::collections::HashMap;
    // path -> member (None for a plain object) -> dropped section names
    let mut by_path: HashMap<&str, HashMap<Option<&str>, Vec<&str>>> = HashMap::new();
    for l in lines {
        let mut parts = l.split('\'');
        if let (Some(_), Some(section), Some(_), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            // Archive members are reported as "lib.a(member.o)".
            let (path, member) = match file.split_once('(') {
                Some((a, m)) => (a, Some(m.trim_end_matches(')'))),
                None => (file, None),
            };
            by_path
                .entry(path)
                .or_default()
                .entry(member)
                .or_default()
                .push(section);
        }
    }
    let size_of = |bytes: &[u8], sections: &[&str]| -> u64 {
        object::File::parse(bytes)
            .map(|obj| {
                obj.sections()
                    .filter(|s| s.name().is_ok_and(|name| sections.contains(&name)))
                    .map(|s| s.size())
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for (path, members) in by_path {
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        match object::read::archive::ArchiveFile::parse(&*data) {
            Ok(archive) => {
                for member in archive.members().flatten() {
                    let name = String::from_utf8_lossy(member.name()).into_owned();
                    if let (Some(sections), Ok(bytes)) =
                        (members.get(&Some(name.as_str())), member.data(&*data))
                    {
                        out.push(ObjectBytes {
                            object: format!("{path}({name})"),
                            bytes: size_of(bytes, sections),
                        });
                    }
                }
            }
            Err(_) => {
                if let Some(sections) = members.get(&None) {
                    out.push(ObjectBytes {
                        object: path.to_string(),
                        bytes: size_of(&data, sections),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.object.cmp(&b.object)));
    out
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
