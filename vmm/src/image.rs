//! Reading a pgkraft image: the ELF segments to load and the boot note that
//! says how to enter it. Pure parsing, no KVM, so `pgkraft inspect` can use it.
//!
//! docs/ARCHITECTURE.md §4.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, ReadRef};
use pgkraft_abi::{BOOT_NOTE_VERSION, BootNote, NOTE_NAME, NOTE_TYPE};

use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::VmmError;

const MIB: u64 = 1 << 20;
const BOOT_NOTE_SIZE: usize = std::mem::size_of::<BootNote>();

/// One PT_LOAD segment: `filesz` bytes from file offset `offset` go at guest
/// physical `paddr`; the rest of `memsz` is bss. Bss is never written: fresh
/// guest RAM is already zero and writing it would fault in pages the guest
/// may never use.
pub(crate) struct Segment {
    pub paddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
}

pub(crate) struct Image {
    pub note: BootNote,
    pub segments: Vec<Segment>,
}

/// An image file, opened and its headers and boot note parsed once: what
/// booting it needs. Segment bytes are read only when guest RAM is built.
///
/// Loading reads the file through its position, so a `BootImage` is used
/// by one thread at a time (it is not `Sync`).
pub struct BootImage {
    path: PathBuf,
    file: File,
    bytes: u64,
    id: ImageId,
    /// What opening and parsing took: a boot's clock counts it as if it
    /// had just happened, as a run of the file would pay it.
    pub(crate) opened_in: Duration,
    pub(crate) parsed: Image,
    _one_thread: PhantomData<std::cell::Cell<()>>,
}

/// Which file an image is (device, inode, size), to tell it from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ImageId(u64, u64, u64);

impl BootImage {
    /// Opens `path` and parses its ELF headers and boot note; refuses what
    /// is not a pgkraft image.
    pub fn open(path: &Path) -> Result<BootImage, VmmError> {
        let t0 = Instant::now();
        let read_err = |source| VmmError::ReadImage {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        let parsed = parse(&object::ReadCache::new(&file)).map_err(|e| e.with_path(path))?;
        Ok(BootImage {
            path: path.to_path_buf(),
            file,
            bytes: meta.len(),
            id: ImageId(meta.dev(), meta.ino(), meta.len()),
            opened_in: t0.elapsed(),
            parsed,
            _one_thread: PhantomData,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn id(&self) -> ImageId {
        self.id
    }

    pub fn file_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn note(&self) -> &BootNote {
        &self.parsed.note
    }
}

fn bad(detail: impl Into<String>) -> VmmError {
    VmmError::BadImage {
        path: None,
        detail: detail.into(),
    }
}

/// Parses headers and notes only; `data` may be a lazily read file
/// (`object::ReadCache`), so segment contents are never read here.
pub(crate) fn parse<'a, R: ReadRef<'a>>(data: R) -> Result<Image, VmmError> {
    let ident = data.read_bytes_at(0, 5).unwrap_or(&[]);
    if ident.len() < 4 || ident[..4] != elf::ELFMAG {
        return Err(VmmError::NotElf { path: None });
    }
    if ident.len() > 4 && ident[4] != elf::ELFCLASS64.0 {
        return Err(VmmError::NotX86_64 {
            path: None,
            detail: "a 32-bit ELF".into(),
        });
    }
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|e| bad(format!("unreadable ELF header ({e})")))?;
    let endian = header
        .endian()
        .map_err(|e| bad(format!("unreadable ELF header ({e})")))?;
    let machine = header.e_machine(endian);
    if endian != Endianness::Little || machine != elf::EM_X86_64 {
        return Err(VmmError::NotX86_64 {
            path: None,
            detail: format!("machine type {}", machine.0),
        });
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad(format!("unreadable program headers ({e})")))?;

    let mut note = None;
    let mut segments = Vec::new();
    for ph in phdrs {
        let p_type = ph.p_type(endian);
        if p_type == elf::PT_LOAD {
            let memsz = ph.p_memsz(endian);
            let (offset, filesz) = ph.file_range(endian);
            if filesz > memsz {
                return Err(bad("a PT_LOAD segment has p_filesz > p_memsz"));
            }
            if memsz > 0 {
                segments.push(Segment {
                    paddr: ph.p_paddr(endian),
                    memsz,
                    offset,
                    filesz,
                });
            }
        } else if p_type == elf::PT_NOTE && note.is_none() {
            let notes = ph
                .notes(endian, data)
                .map_err(|e| bad(format!("unreadable PT_NOTE segment ({e})")))?;
            if let Some(mut notes) = notes {
                note = find_note(&mut notes, endian)?;
            }
        }
    }
    // A linker script without PHDRS may leave the note out of every PT_NOTE;
    // the section table still has it.
    if note.is_none()
        && let Ok(sections) = header.sections(endian, data)
    {
        for sh in sections.iter() {
            if let Ok(Some(mut notes)) = sh.notes(endian, data) {
                note = find_note(&mut notes, endian)?;
                if note.is_some() {
                    break;
                }
            }
        }
    }
    let note = note.ok_or(VmmError::NoBootNote { path: None })?;
    if segments.is_empty() {
        return Err(bad("no PT_LOAD segments"));
    }
    Ok(Image { note, segments })
}

fn find_note(
    notes: &mut object::read::elf::NoteIterator<'_, elf::FileHeader64<Endianness>>,
    endian: Endianness,
) -> Result<Option<BootNote>, VmmError> {
    while let Some(n) = notes
        .next()
        .map_err(|e| bad(format!("unreadable ELF note ({e})")))?
    {
        if n.name() == NOTE_NAME && n.n_type(endian) == elf::NoteType(NOTE_TYPE) {
            return decode_note(n.desc()).map(Some);
        }
    }
    Ok(None)
}

fn decode_note(desc: &[u8]) -> Result<BootNote, VmmError> {
    if desc.len() < BOOT_NOTE_SIZE {
        return Err(bad(format!(
            "the pgkraft note descriptor has {} bytes, expected {BOOT_NOTE_SIZE}",
            desc.len()
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes(desc[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(desc[o..o + 8].try_into().unwrap());
    let version = u32_at(0);
    if version != BOOT_NOTE_VERSION {
        return Err(bad(format!(
            "boot note version {version}, this runner understands version {BOOT_NOTE_VERSION}"
        )));
    }
    // Field order is the #[repr(C)] order of abi::BootNote; the size check
    // below catches a field being added without this list following.
    let f = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96].map(u64_at);
    const _: () = assert!(BOOT_NOTE_SIZE == 104);
    if !(103..=0xffff).contains(&f[11]) {
        return Err(bad(format!(
            "TSS limit {} is not between 103 and 0xffff",
            f[11]
        )));
    }
    Ok(BootNote {
        version,
        _pad: 0,
        entry64: f[0],
        stack_top: f[1],
        pml4: f[2],
        gdt: f[3],
        gdt_limit: f[4],
        idt: f[5],
        tss: f[6],
        boot_info: f[7],
        pvclock: f[8],
        wall_clock: f[9],
        image_end: f[10],
        tss_limit: f[11],
    })
}

impl Image {
    /// Checks that every segment and every structure the boot note names lies
    /// inside guest RAM `[0, mem)`, so loading and vCPU setup cannot fail
    /// halfway with an address error.
    pub(crate) fn check_fits(&self, mem_mib: u32) -> Result<(), VmmError> {
        let n = &self.note;
        let mut spans: Vec<(String, u64, u64)> = self
            .segments
            .iter()
            .map(|s| (format!("a segment at {:#x}", s.paddr), s.paddr, s.memsz))
            .collect();
        spans.extend([
            ("the BootInfo page".into(), n.boot_info, 4096),
            ("the page-table root".into(), n.pml4, 4096),
            ("the GDT".into(), n.gdt, n.gdt_limit.saturating_add(1)),
            ("the IDT".into(), n.idt, 4096),
            ("the TSS".into(), n.tss, n.tss_limit + 1),
            ("the pvclock area".into(), n.pvclock, 32),
            ("the wall-clock area".into(), n.wall_clock, 12),
            ("the initial stack".into(), n.stack_top.saturating_sub(8), 8),
            ("the entry point".into(), n.entry64, 1),
            ("the image end".into(), n.image_end, 0),
        ]);
        let mem = u64::from(mem_mib) * MIB;
        // The furthest-reaching one decides, so one rerun with the named
        // --mem is enough.
        let (what, end) = spans
            .into_iter()
            .map(|(what, start, len)| (what, start.saturating_add(len)))
            .max_by_key(|&(_, end)| end)
            .expect("spans is never empty");
        if end > mem {
            return Err(VmmError::TooBig {
                mem_mib,
                needed_mib: end.div_ceil(MIB) + 1,
                what,
                end,
            });
        }
        Ok(())
    }
}

pub(crate) const BOOT_INFO_SIZE: u64 = std::mem::size_of::<pgkraft_abi::BootInfo>() as u64;

/// The little-endian bytes of a `BootInfo`, field by field in #[repr(C)] order.
pub(crate) fn encode_boot_info(info: &pgkraft_abi::BootInfo) -> [u8; BOOT_INFO_SIZE as usize] {
    let mut out = [0u8; BOOT_INFO_SIZE as usize];
    out[0..8].copy_from_slice(&info.magic.to_le_bytes());
    out[8..12].copy_from_slice(&info.version.to_le_bytes());
    out[12..16].copy_from_slice(&info.flags.to_le_bytes());
    out[16..24].copy_from_slice(&info.mem_bytes.to_le_bytes());
    out[24..32].copy_from_slice(&info.cmdline_gpa.to_le_bytes());
    out[32..40].copy_from_slice(&info.cmdline_len.to_le_bytes());
    out
}

/// Where the command line goes (see `run` docs): right after the BootInfo on
/// its page if it fits there, else in the last pages of RAM below 4 GiB (the
/// image's identity map covers only that) and above the image.
pub(crate) fn place_cmdline(note: &BootNote, len: u64, mem: u64) -> Option<u64> {
    // +1: a NUL after the text, not counted in cmdline_len, so a C-string
    // reader works too.
    let need = len + 1;
    let after = (note.boot_info + BOOT_INFO_SIZE).next_multiple_of(8);
    let page_end = (note.boot_info & !0xfff) + 0x1000;
    if after + need <= page_end {
        return Some(after);
    }
    let top = mem.min(4 << 30);
    let gpa = top.checked_sub(need)? & !0xfff;
    (gpa >= note.image_end).then_some(gpa)
}
