//! An image's bytes on disk by part: the library OS's sections, the
//! program, the rootfs by top directory (the cluster is `/data`), the
//! symbols, and the rest. `pgkraft inspect` prints it and `bench report`
//! charts it, from this one function, so the two always agree.

use super::{RootfsInfo, SectionInfo};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SizePart {
    /// What the bytes are, e.g. `.text (library OS code)` or
    /// `rootfs /data (the cluster)`.
    pub part: String,
    pub bytes: u64,
}

/// The sections named by what they hold; the rest of the file falls under
/// "other".
const NAMED: &[(&str, &str)] = &[
    (".text", ".text (library OS code)"),
    (".rodata", ".rodata"),
    (".data", ".data"),
    (
        crate::image::format::PROGRAM_SECTION,
        "the program (.pgkraft.program)",
    ),
];
const SYMBOL_SECTIONS: &[&str] = &[".symtab", ".strtab"];

/// The image's `file_bytes` split into parts that add up to it exactly.
/// The rootfs archive's (compressed) bytes are apportioned to its top
/// directories by their files' sizes, as `file_bytes_without_cluster` is.
pub fn size_by_part(
    file_bytes: u64,
    sections: &[SectionInfo],
    rootfs: Option<&RootfsInfo>,
) -> Vec<SizePart> {
    let section = |name: &str| {
        sections
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.bytes)
            .sum::<u64>()
    };
    let mut parts: Vec<SizePart> = NAMED
        .iter()
        .map(|(name, part)| SizePart {
            part: part.to_string(),
            bytes: section(name),
        })
        .collect();
    if let Some(r) = rootfs {
        parts.extend(rootfs_by_directory(r));
    }
    parts.push(SizePart {
        part: "rootfs index (.pgkraft.rootfs_index)".into(),
        bytes: section(crate::image::format::ROOTFS_INDEX_SECTION),
    });
    parts.push(SizePart {
        part: "symbols (.symtab, .strtab)".into(),
        bytes: SYMBOL_SECTIONS.iter().map(|s| section(s)).sum(),
    });
    parts.retain(|p| p.bytes > 0);
    let counted: u64 = parts.iter().map(|p| p.bytes).sum();
    parts.push(SizePart {
        part: "other (headers, notes, build info, alignment)".into(),
        bytes: file_bytes.saturating_sub(counted),
    });
    parts
}

/// The archive's bytes by top directory. A top directory that holds only
/// a chain of single directories (an install prefix such as
/// `/usr/local/pgsql`) is split one level below the chain, so that `share`
/// and `bin` show apart.
fn rootfs_by_directory(r: &RootfsInfo) -> Vec<SizePart> {
    let paths: Vec<Vec<&str>> = r
        .files
        .iter()
        .map(|f| f.path.split('/').filter(|c| !c.is_empty()).collect())
        .collect();
    // Each directory's entries, from the files' paths.
    let mut entries: BTreeMap<String, BTreeSet<(&str, bool)>> = BTreeMap::new();
    for p in &paths {
        for i in 0..p.len() {
            let dir = format!("/{}", p[..i].join("/"));
            entries
                .entry(dir)
                .or_default()
                .insert((p[i], i + 1 < p.len()));
        }
    }
    let only_dir = |dir: &str| -> Option<&str> {
        match entries.get(dir).map(|e| e.iter().collect::<Vec<_>>()) {
            Some(e) if e.len() == 1 && e[0].1 => Some(e[0].0),
            _ => None,
        }
    };
    let mut by_dir: BTreeMap<String, u64> = BTreeMap::new();
    for (p, f) in paths.iter().zip(&r.files) {
        let key = match p.len() {
            0 | 1 => "/".to_string(),
            // The cluster is all of /data, however it is laid out.
            _ if p[0] == "data" => "/data".to_string(),
            _ => {
                let mut depth = 1;
                while depth + 1 < p.len()
                    && only_dir(&format!("/{}", p[..depth].join("/"))).is_some()
                {
                    depth += 1;
                }
                // Past a chain, one more level: its end's entries.
                if depth > 1 && depth + 1 < p.len() {
                    depth += 1;
                }
                format!("/{}", p[..depth].join("/"))
            }
        };
        *by_dir.entry(key).or_default() += f.bytes;
    }
    let total: u64 = by_dir.values().sum();
    if total == 0 {
        return vec![SizePart {
            part: "rootfs".into(),
            bytes: r.bytes,
        }];
    }
    let mut parts: Vec<SizePart> = by_dir
        .iter()
        .map(|(dir, &b)| SizePart {
            part: if dir == "/data" {
                "rootfs /data (the cluster)".into()
            } else {
                format!("rootfs {dir}")
            },
            bytes: (r.bytes as u128 * b as u128 / total as u128) as u64,
        })
        .collect();
    // Rounding down leaves a few bytes: the largest part takes them, so
    // the parts add up to the archive.
    let rest = r.bytes - parts.iter().map(|p| p.bytes).sum::<u64>();
    if let Some(big) = parts.iter_mut().max_by_key(|p| p.bytes) {
        big.bytes += rest;
    }
    parts.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.part.cmp(&b.part)));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_info::RootfsEntry;

    fn sec(name: &str, bytes: u64) -> SectionInfo {
        SectionInfo {
            name: name.into(),
            address: 0,
            bytes,
            loaded: true,
        }
    }

    #[test]
    fn parts_add_up_and_an_install_prefix_splits_below_itself() {
        let file = |path: &str, bytes| RootfsEntry {
            path: path.into(),
            bytes,
        };
        let rootfs = RootfsInfo {
            bytes: 1000,
            compression: "zstd",
            files: vec![
                file("/data/base/1/1255", 600),
                file("/data/global/1262", 200),
                file("/usr/local/pgsql/share/timezone/UTC", 150),
                file("/usr/local/pgsql/bin/postgres", 0),
                file("/etc/passwd", 40),
                file("/etc/group", 10),
            ],
            cluster_file_bytes: 800,
            other_file_bytes: 200,
        };
        let sections = [
            sec(".text", 300),
            sec(".rodata", 50),
            sec(".pgkraft.program", 5000),
            sec(".pgkraft.rootfs", 1000),
            sec(".bss", 99999),
            sec(".symtab", 20),
        ];
        let parts = size_by_part(7000, &sections, Some(&rootfs));
        let get = |name: &str| parts.iter().find(|p| p.part == name).map(|p| p.bytes);
        assert_eq!(get(".text (library OS code)"), Some(300));
        assert_eq!(get("the program (.pgkraft.program)"), Some(5000));
        assert_eq!(get("rootfs /data (the cluster)"), Some(800));
        assert_eq!(get("rootfs /usr/local/pgsql/share"), Some(150));
        assert_eq!(get("rootfs /etc"), Some(50));
        // An empty part (.data, bin) is left out; .bss takes no file bytes.
        assert_eq!(get(".data"), None);
        assert_eq!(get("rootfs /usr/local/pgsql/bin"), None);
        assert_eq!(parts.iter().map(|p| p.bytes).sum::<u64>(), 7000);
        assert_eq!(
            get("other (headers, notes, build info, alignment)"),
            Some(630)
        );
    }
}
