//! A built image as one value: the file opened and parsed once — its boot
//! headers (what the runner needs, [`BootImage`]), the build info
//! build::link embedded — and its baked-in argv read from that same open
//! file when asked (it walks the symbol table, which only single-user mode
//! needs). `smoke`, `bench` and `run` take this value and do not re-open
//! the path to boot it (`--native` runs still read the file once more, for
//! their own copy of its rootfs).
//!
//! docs/ARCHITECTURE.md §2.

pub mod format;

use std::cell::OnceCell;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};
use pgkraft_vmm::{BootImage, VmmError};

use format::{ARGV_SYMBOL, BuildInfo};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not readable, not an ELF, not a pgkraft image: the runner's words.
    #[error(transparent)]
    NotImage(#[from] VmmError),
    #[error("{}: {detail}", path.display())]
    Elf {
        path: std::path::PathBuf,
        detail: String,
    },
}

pub struct Image {
    boot: BootImage,
    build: Option<BuildInfo>,
    /// [`format::native_index_key`] of the build info section.
    native_key: Option<String>,
    argv: OnceCell<Vec<String>>,
}

impl Image {
    /// Opens and parses `path`; refuses what the runner would refuse.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let boot = BootImage::open(path)?;
        let cache = object::ReadCache::new(boot.file());
        let elf = object::File::parse(&cache).map_err(|e| elf_err(path, e))?;
        let section = format::build_info_section(&elf);
        let build = section.and_then(|s| serde_json::from_slice(s).ok());
        let native_key = section.map(format::native_index_key);
        drop(elf);
        drop(cache);
        Ok(Image {
            boot,
            build,
            native_key,
            argv: OnceCell::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.boot.path()
    }

    /// What the runner boots.
    pub fn boot(&self) -> &BootImage {
        &self.boot
    }

    pub fn file_bytes(&self) -> u64 {
        self.boot.file_bytes()
    }

    /// The build info build::link embedded (none in foreign images).
    pub fn build(&self) -> Option<&BuildInfo> {
        self.build.as_ref()
    }

    /// Where the cache records this build's host-linked server
    /// ([`format::native_index_key`]); none in foreign images.
    pub fn native_key(&self) -> Option<&str> {
        self.native_key.as_deref()
    }

    /// The cluster's superuser (postgres images; `postgres` otherwise).
    pub fn superuser(&self) -> &str {
        self.build
            .as_ref()
            .and_then(|b| b.postgres.as_ref())
            .map_or("postgres", |p| p.superuser.as_str())
    }

    /// Guest memory: `wanted`, else the recipe's (embedded), else 64 MiB.
    pub fn memory_mib(&self, wanted: Option<u32>) -> u32 {
        wanted
            .or(self.build.as_ref().map(|b| b.memory_mib))
            .unwrap_or(64)
    }

    /// The image's baked-in argv, argv[0] first.
    pub fn argv(&self) -> Result<&[String], ImageError> {
        if let Some(v) = self.argv.get() {
            return Ok(v);
        }
        let v = self.read_argv()?;
        Ok(self.argv.get_or_init(|| v))
    }

    fn read_argv(&self) -> Result<Vec<String>, ImageError> {
        let path = self.path();
        let cache = object::ReadCache::new(self.boot.file());
        let elf = object::File::parse(&cache).map_err(|e| elf_err(path, e))?;
        let sym = elf
            .symbols()
            .find(|s| s.name() == Ok(ARGV_SYMBOL))
            .ok_or_else(|| {
                elf_err(
                    path,
                    format!("no symbol {ARGV_SYMBOL} (not a pgkraft image?)"),
                )
            })?;
        let section = sym
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
            .ok_or_else(|| elf_err(path, format!("{ARGV_SYMBOL} is in no section")))?;
        let bytes = section
            .data_range(sym.address(), sym.size())
            .ok()
            .flatten()
            .ok_or_else(|| elf_err(path, format!("{ARGV_SYMBOL} lies outside its section")))?;
        Ok(bytes
            .split(|b| *b == 0)
            .take_while(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }
}

fn elf_err(path: &Path, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Elf {
        path: path.into(),
        detail: detail.to_string(),
    }
}
