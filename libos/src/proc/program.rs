//! The program the image carries: a static-PIE ELF (build::link), read from
//! its bytes in the image. Pure parsing; proc/slot.rs maps what it finds.

use alloc::vec::Vec;
use zerocopy::FromBytes;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PF_W: u32 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
pub const PAGE: u64 = 4096;

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Ehdr {
    ident: [u8; 16],
    kind: u16,
    machine: u16,
    version: u32,
    entry: u64,
    phoff: u64,
    shoff: u64,
    flags: u32,
    ehsize: u16,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

#[derive(FromBytes, Clone, Copy)]
#[cfg_attr(test, derive(zerocopy::IntoBytes, zerocopy::Immutable))]
#[repr(C)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// A loadable segment, in page units relative to the program's base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First page's offset from the base (page aligned).
    pub page_va: u64,
    /// Pages the segment spans in memory.
    pub pages: u64,
    pub writable: bool,
    /// Where its bytes start in the file and in memory, and how many come
    /// from the file (the rest of `memsz` is zero: .bss).
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

#[derive(Debug)]
pub struct Program {
    pub entry: u64,
    /// The program headers' address relative to the base, their size and
    /// count (AT_PHDR, AT_PHENT, AT_PHNUM).
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    pub segments: Vec<Segment>,
    /// Bytes from the base to the end of the last segment, page aligned.
    pub span: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ProgramError {
    NotElf,
    NotStaticPie,
    /// A segment whose file offset and address disagree modulo the page
    /// size, or two segments on one page: it cannot be mapped page by page.
    Layout,
    Truncated,
}

impl core::fmt::Display for ProgramError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ProgramError::NotElf => "not an x86-64 ELF file",
            ProgramError::NotStaticPie => "not a static PIE (ET_DYN with PT_DYNAMIC)",
            ProgramError::Layout => "segments cannot be mapped page by page",
            ProgramError::Truncated => "segments reach past the end of the file",
        })
    }
}

impl Program {
    pub fn parse(file: &[u8]) -> Result<Program, ProgramError> {
        let (eh, _) = Ehdr::read_from_prefix(file).map_err(|_| ProgramError::NotElf)?;
        if &eh.ident[..4] != b"\x7fELF" || eh.ident[4] != 2 || eh.machine != EM_X86_64 {
            return Err(ProgramError::NotElf);
        }
        if eh.kind != ET_DYN || eh.phentsize as usize != core::mem::size_of::<Phdr>() {
            return Err(ProgramError::NotStaticPie);
        }
        let mut phdrs = Vec::new();
        for i in 0..eh.phnum as u64 {
            let at = eh.phoff + i * eh.phentsize as u64;
            let bytes = file.get(at as usize..).ok_or(ProgramError::Truncated)?;
            let (ph, _) = Phdr::read_from_prefix(bytes).map_err(|_| ProgramError::Truncated)?;
            phdrs.push(ph);
        }
        if !phdrs.iter().any(|p| p.kind == PT_DYNAMIC) {
            return Err(ProgramError::NotStaticPie);
        }
        let mut segments: Vec<Segment> = Vec::new();
        let mut phdr_va = None;
        for p in phdrs.iter().filter(|p| p.kind == PT_LOAD && p.memsz > 0) {
            if p.offset % PAGE != p.vaddr % PAGE || p.filesz > p.memsz {
                return Err(ProgramError::Layout);
            }
            if p.offset.saturating_add(p.filesz) > file.len() as u64 {
                return Err(ProgramError::Truncated);
            }
            let page_va = p.vaddr & !(PAGE - 1);
            let end = (p.vaddr + p.memsz).div_ceil(PAGE) * PAGE;
            if segments
                .last()
                .is_some_and(|s| s.page_va + s.pages * PAGE > page_va)
            {
                return Err(ProgramError::Layout);
            }
            if (p.offset..p.offset + p.filesz).contains(&eh.phoff) {
                phdr_va = Some(p.vaddr + (eh.phoff - p.offset));
            }
            segments.push(Segment {
                page_va,
                pages: (end - page_va) / PAGE,
                writable: p.flags & PF_W != 0,
                offset: p.offset,
                vaddr: p.vaddr,
                filesz: p.filesz,
            });
        }
        let last = segments.last().ok_or(ProgramError::NotStaticPie)?;
        Ok(Program {
            entry: eh.entry,
            // musl finds PT_DYNAMIC and PT_TLS through these, so they must
            // be loaded (they are, with the first segment, as ld lays out a
            // static PIE).
            phdr: phdr_va.ok_or(ProgramError::Layout)?,
            phent: eh.phentsize as u64,
            phnum: eh.phnum as u64,
            span: last.page_va + last.pages * PAGE,
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn elf(kind: u16, phdrs: &[Phdr], len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[16..18].copy_from_slice(&kind.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&0x1234u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            f[64 + i * 56..64 + (i + 1) * 56].copy_from_slice(p.as_bytes());
        }
        f
    }

    fn ph(kind: u32, flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Phdr {
        Phdr {
            kind,
            flags,
            offset,
            vaddr,
            paddr: vaddr,
            filesz,
            memsz,
            align: 4096,
        }
    }

    #[test]
    fn a_static_pie_as_ld_lays_it_out() {
        let f = elf(
            ET_DYN,
            &[
                ph(PT_LOAD, 4, 0, 0, 0x2a8, 0x2a8),
                ph(PT_LOAD, 5, 0x1000, 0x1000, 0x4065, 0x4065),
                ph(PT_LOAD, 6, 0x6eb0, 0x7eb0, 0x25c, 0x900),
                ph(PT_DYNAMIC, 6, 0x6eb0, 0x7eb0, 0x130, 0x130),
            ],
            0x8000,
        );
        let p = Program::parse(&f).unwrap();
        assert_eq!(p.entry, 0x1234);
        assert_eq!((p.phdr, p.phent, p.phnum), (64, 56, 4));
        assert_eq!(p.span, 0x9000);
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segments[1].pages, 5);
        let rw = p.segments[2];
        assert!(rw.writable);
        assert_eq!(
            (rw.page_va, rw.pages, rw.vaddr, rw.filesz),
            (0x7000, 2, 0x7eb0, 0x25c)
        );
    }

    #[test]
    fn what_cannot_be_mapped_is_refused() {
        let dynamic = ph(PT_DYNAMIC, 6, 0, 0, 0, 0);
        let exec = elf(2, &[ph(PT_LOAD, 5, 0, 0, 0x100, 0x100)], 0x1000);
        assert_eq!(
            Program::parse(&exec).unwrap_err(),
            ProgramError::NotStaticPie
        );
        let skewed = elf(
            ET_DYN,
            &[
                ph(PT_LOAD, 5, 0, 0, 0x100, 0x100),
                ph(PT_LOAD, 6, 0x200, 0x1100, 8, 8),
                dynamic,
            ],
            0x1000,
        );
        assert_eq!(Program::parse(&skewed).unwrap_err(), ProgramError::Layout);
        let short = elf(
            ET_DYN,
            &[
                ph(PT_LOAD, 5, 0, 0, 0x2000, 0x2000),
                ph(PT_DYNAMIC, 6, 0, 0, 0, 0),
            ],
            0x1000,
        );
        assert_eq!(Program::parse(&short).unwrap_err(), ProgramError::Truncated);
        assert_eq!(Program::parse(b"nope").unwrap_err(), ProgramError::NotElf);
    }
}
