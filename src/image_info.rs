//! Reading a built image without booting it: its sections and the build
//! info embedded by build::link (`pgkraft inspect`, and `pgkraft run`'s
//! default memory size).

use crate::build::link::MANIFEST_SECTION;
use crate::build::manifest::BuildInfo;
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
pub struct ImageInfo {
    pub file_bytes: u64,
    /// Bytes of guest memory the image's segments span (text, data and bss).
    pub memory_bytes: u64,
    pub entry64: u64,
    pub pvh_entry: bool,
    pub sections: Vec<SectionInfo>,
    pub build: Option<BuildInfo>,
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
    let mut build = None;
    let mut pvh_entry = false;
    for s in elf.sections() {
        let name = s.name().unwrap_or("?").to_string();
        if name.is_empty() {
            continue;
        }
        if name == MANIFEST_SECTION {
            build = s.data().ok().and_then(|d| serde_json::from_slice(d).ok());
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
    Ok(ImageInfo {
        file_bytes: data.len() as u64,
        memory_bytes: hi.saturating_sub(lo),
        entry64: note.entry64,
        pvh_entry,
        sections,
        build,
    })
}
