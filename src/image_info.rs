//! `pgkraft inspect`: everything about a built image without booting it —
//! sections, symbols, the rootfs by file, the build info, and the largest
//! input objects from the build manifest next to it.
//!
//! docs/ARCHITECTURE.md §2.

pub mod parts;

use crate::image::format::{self, BuildInfo, ROOTFS_SECTION};
use object::{Object, ObjectSection, ObjectSegment};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct SectionInfo {
    pub name: String,
    pub address: u64,
    pub bytes: u64,
    /// Occupies memory when loaded (false for the build info, symbols...).
    pub loaded: bool,
}

#[derive(Debug, Serialize)]
pub struct SymbolInfo {
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct RootfsEntry {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct RootfsInfo {
    /// Bytes of the archive in the image (compressed, if it is).
    pub bytes: u64,
    pub compression: &'static str,
    /// Regular files, largest first.
    pub files: Vec<RootfsEntry>,
    /// Bytes of file data under /data (the pre-initialized cluster).
    pub cluster_file_bytes: u64,
    pub other_file_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub file_bytes: u64,
    /// Bytes of guest memory the image's segments span (text, data and bss).
    pub memory_bytes: u64,
    pub entry64: u64,
    pub pvh_entry: bool,
    pub sections: Vec<SectionInfo>,
    /// The largest symbols (functions and data), largest first.
    pub largest_symbols: Vec<SymbolInfo>,
    /// The input objects contributing most, from the manifest next to the
    /// image (`<name>.manifest.json`) when it is there.
    pub largest_objects: Vec<crate::build::link::ObjectBytes>,
    pub rootfs: Option<RootfsInfo>,
    /// The image's size without the pre-initialized cluster: what an image
    /// that runs initdb at first boot would weigh, roughly (the archive's
    /// compressed bytes are apportioned by file size).
    pub file_bytes_without_cluster: u64,
    /// `file_bytes` by part ([`parts::size_by_part`]): what `bench report`
    /// charts.
    pub size_by_part: Vec<parts::SizePart>,
    pub build: Option<BuildInfo>,
}

/// The symbols that take the most room, largest first.
fn symbols_of(elf: &object::File) -> impl Iterator<Item = SymbolInfo> {
    use object::ObjectSymbol;
    elf.symbols()
        .filter(|s| s.size() > 0 && s.is_definition())
        .map(|s| SymbolInfo {
            name: format!("{:#}", rustc_demangle::demangle(s.name().unwrap_or("?"))),
            bytes: s.size(),
        })
}

/// The `n` largest symbols of the image: from its debug file
/// (`<name>.debug` next to it: the libOS's symbols, and the program's in
/// their own section) when it is there, else from the image, which keeps
/// only the two it needs at run time.
fn largest_symbols(path: &Path, elf: &object::File, n: usize) -> Vec<SymbolInfo> {
    let debug = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".img"))
        .map(|stem| path.with_file_name(format::debug_file_name(stem)))
        .and_then(|p| std::fs::read(p).ok());
    let debug_elf = debug.as_deref().and_then(|d| object::File::parse(d).ok());
    let mut v: Vec<SymbolInfo> = match &debug_elf {
        Some(d) => {
            let program = d
                .section_by_name(format::PROGRAM_SYMBOLS_SECTION)
                .and_then(|s| s.data().ok())
                .and_then(|data| object::File::parse(data).ok());
            symbols_of(d)
                .chain(program.iter().flat_map(symbols_of))
                .collect()
        }
        None => symbols_of(elf).collect(),
    };
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    v.truncate(n);
    v
}

fn rootfs_info(data: &[u8]) -> Option<RootfsInfo> {
    let compression = format::rootfs_compression(data);
    let tar = format::rootfs_tar(data)?;
    let mut archive = tar::Archive::new(&*tar);
    // Stored files only: a link entry is a copy of an earlier file, stored
    // once (build::rootfs), so it adds no bytes to the archive to share out.
    let mut files = Vec::new();
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let path = entry.path().ok()?.display().to_string();
            files.push(RootfsEntry {
                path: format!("/{}", path.trim_start_matches('/')),
                bytes: entry.size(),
            });
        }
    }
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    let cluster_file_bytes = files
        .iter()
        .filter(|f| f.path.starts_with("/data/"))
        .map(|f| f.bytes)
        .sum();
    let other_file_bytes = files
        .iter()
        .filter(|f| !f.path.starts_with("/data/"))
        .map(|f| f.bytes)
        .sum();
    Some(RootfsInfo {
        bytes: data.len() as u64,
        compression,
        files,
        cluster_file_bytes,
        other_file_bytes,
    })
}

fn sibling_manifest_objects(path: &Path) -> Vec<crate::build::link::ObjectBytes> {
    let Some(stem) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".img"))
    else {
        return Vec::new();
    };
    let m = path.with_file_name(crate::build::manifest::file_name(stem));
    std::fs::read(m)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::build::manifest::Manifest>(&b).ok())
        .map(|m| m.link.largest_objects)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    NotImage(#[from] crate::vmm::VmmError),
    #[error("{}: {detail}", path.display())]
    Elf {
        path: std::path::PathBuf,
        detail: String,
    },
}

pub fn read(path: &Path) -> Result<ImageInfo, InspectError> {
    let data = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.into(),
        source,
    })?;
    let note = crate::vmm::read_boot_note(&data).map_err(|e| e.with_path(path))?;
    let elf = object::File::parse(&*data).map_err(|e| InspectError::Elf {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let mut sections = Vec::new();
    let mut pvh_entry = false;
    let mut rootfs = None;
    for s in elf.sections() {
        let name = s.name().unwrap_or("?").to_string();
        if name.is_empty() {
            continue;
        }
        if name == ROOTFS_SECTION {
            rootfs = s.data().ok().and_then(rootfs_info);
        }
        if name == ".note" {
            pvh_entry = s
                .data()
                .map(|d| d.windows(4).any(|w| w == b"Xen\0"))
                .unwrap_or(false);
        }
        let loaded = matches!(
            s.flags(),
            object::SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & object::elf::SHF_ALLOC.0 != 0
        );
        sections.push(SectionInfo {
            name,
            address: s.address(),
            bytes: s.size(),
            loaded,
        });
    }
    let (lo, hi) = elf.segments().fold((u64::MAX, 0), |(lo, hi), seg| {
        (lo.min(seg.address()), hi.max(seg.address() + seg.size()))
    });
    let file_bytes_without_cluster = match &rootfs {
        Some(r) if r.cluster_file_bytes + r.other_file_bytes > 0 => {
            let share =
                r.cluster_file_bytes as f64 / (r.cluster_file_bytes + r.other_file_bytes) as f64;
            data.len() as u64 - (r.bytes as f64 * share) as u64
        }
        _ => data.len() as u64,
    };
    Ok(ImageInfo {
        size_by_part: parts::size_by_part(data.len() as u64, &sections, rootfs.as_ref()),
        build: format::build_info(&elf),
        largest_symbols: largest_symbols(path, &elf, 25),
        largest_objects: sibling_manifest_objects(path),
        rootfs,
        file_bytes_without_cluster,
        file_bytes: data.len() as u64,
        memory_bytes: hi.saturating_sub(lo),
        entry64: note.entry64,
        pvh_entry,
        sections,
    })
}
