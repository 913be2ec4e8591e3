//! What a built image holds and where, as both the builder (which writes
//! it) and every reader of an image (smoke, bench, inspect) see it: section
//! and symbol names, the build info embedded in the image with its format
//! version, and the rootfs archive's encoding. Below `build`, which writes
//! these, and below every reader: it imports neither.
//!
//! docs/ARCHITECTURE.md §2.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The section holding the [`BuildInfo`] (JSON); not loaded.
pub const MANIFEST_SECTION: &str = ".pgkraft.manifest";
/// The rootfs archive (plain tar, or zstd frames of one); loaded.
pub const ROOTFS_SECTION: &str = ".pgkraft.rootfs";
/// The rootfs index (layout in `pgkraft_abi`, which the libOS reads too).
pub const ROOTFS_INDEX_SECTION: &str = ".pgkraft.rootfs_index";
/// The program: a static-PIE ELF the libOS loads for each process; loaded.
pub const PROGRAM_SECTION: &str = ".pgkraft.program";
/// In the debug file next to the image (`<name>.debug`, build::link): the
/// program's own symbols, as an ELF holding only its section headers and
/// symbol tables (addresses relative to the program's load base).
pub const PROGRAM_SYMBOLS_SECTION: &str = ".pgkraft.program_symbols";
/// The debug file's name for an image named `<name>.img`.
pub fn debug_file_name(image_stem: &str) -> String {
    format!("{image_stem}.debug")
}
/// The baked-in argv: NUL-terminated strings, then an empty one.
pub const ARGV_SYMBOL: &str = "__pgkraft_argv_blob";
/// The baked-in environment, `KEY=value` strings laid out as argv.
pub const ENVP_SYMBOL: &str = "__pgkraft_envp_blob";
/// The [`BuildInfo`] layout written now.
pub const BUILD_INFO_FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub role: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Inputs {
    pub files: Vec<FileEntry>,
}

/// What the image is and how it was made; embedded in the image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildInfo {
    /// [`BUILD_INFO_FORMAT`] when built; 0 for images from before it was
    /// recorded.
    #[serde(default)]
    pub format: u32,
    pub pgkraft_version: String,
    pub name: String,
    pub recipe_file: PathBuf,
    pub recipe_sha256: String,
    pub recipe: String,
    pub memory_mib: u32,
    pub inputs: Inputs,
    /// The rootfs archive in the image (postgres images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresFacts>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RootfsFacts {
    pub sha256: String,
    pub bytes: u64,
    pub tar_bytes: u64,
    pub compression: String,
    pub entries: usize,
}

/// What the manifest says about a PostgreSQL build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostgresFacts {
    pub version: String,
    pub modules: Vec<String>,
    /// Built-in modules linked as a stand-in that raises an error when used
    /// (build::postgres::left_out), e.g. dict_snowball without text search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out_modules: Vec<String>,
    pub extensions: Vec<String>,
    pub preinit: bool,
    /// Where the superuser's password came from.
    pub password: String,
    /// The cluster's superuser (what server-mode checks log in as).
    #[serde(default = "default_superuser")]
    pub superuser: String,
    /// The environment variable holding the superuser's password at build
    /// time; none with `auth: trust`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The file (next to the image) the build wrote a generated password
    /// to, when `password_env` was not set.
    #[serde(default)]
    pub password_file: Option<String>,
}

fn default_superuser() -> String {
    "postgres".into()
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a rootfs archive is stored: `zstd` or `none`.
pub fn rootfs_compression(archive: &[u8]) -> &'static str {
    if archive.starts_with(&ZSTD_MAGIC) {
        "zstd"
    } else {
        "none"
    }
}

/// A rootfs archive as the plain tar it is (build::rootfs writes a plain
/// tar or zstd frames of one).
pub fn rootfs_tar(archive: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if archive.starts_with(&ZSTD_MAGIC) {
        Some(zstd::decode_all(archive).ok()?.into())
    } else {
        Some(archive.into())
    }
}

/// Whether `p` is a relative path that stays below the directory it is
/// joined to (no root, `.` or `..`): what an archive entry may name.
pub fn stays_inside(p: &std::path::Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Writes the file a rootfs link entry with `header` stands for: a copy of
/// `from` (build::rootfs stores repeated files once) at `to`, with the
/// entry's mode. A file of its own, never a second name for the first: a
/// server writes each database's files separately.
pub fn write_copy(
    header: &tar::Header,
    from: &std::path::Path,
    to: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(header.mode()? & 0o7777))
}

/// Unpacks a rootfs tar ([`rootfs_tar`]) into `dest`, modes kept; a link
/// entry becomes a copy ([`write_copy`]).
pub fn unpack_rootfs(tar: &[u8], dest: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Link {
            entry.unpack_in(dest)?;
            continue;
        }
        let path = entry.path()?.into_owned();
        match entry.link_name()? {
            Some(target) if stays_inside(&target) && stays_inside(&path) => {
                write_copy(entry.header(), &dest.join(target), &dest.join(path))?
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: a copy of a file outside the archive", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// The build info section build::link embedded in `elf`, as written.
pub fn build_info_section<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
) -> Option<&'d [u8]> {
    use object::{Object, ObjectSection};
    elf.section_by_name(MANIFEST_SECTION)?.data().ok()
}

/// The build info build::link embedded in `elf`, if any.
pub fn build_info<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<BuildInfo> {
    serde_json::from_slice(build_info_section(elf)?).ok()
}

/// The name under which the pgkraft cache records where an image's
/// host-linked build is: the sha256 of the image's embedded build info
/// section ([`build_info_section`]).
/// Kept in the cache, not the image, so the image's bytes do not depend
/// on where the cache is (cold and cached builds are bit-identical).
pub fn native_index_key(build_info: &[u8]) -> String {
    crate::build::cache::sha256_hex(build_info)
}

/// The rootfs section of an image's bytes, if it has one.
pub fn rootfs_section(elf_bytes: &[u8]) -> Option<&[u8]> {
    use object::{Object, ObjectSection};
    let elf = object::File::parse(elf_bytes).ok()?;
    elf.section_by_name(ROOTFS_SECTION)?.data().ok()
}
