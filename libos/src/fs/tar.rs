//! A reader for the rootfs archive, with no dependency on the rest of the
//! libOS: it only slices the archive bytes.
//!
//! Handled: POSIX ustar (magic "ustar\0", the `prefix` field joined to the
//! name), GNU tar (magic "ustar  \0"; 'L' long name and 'K' long link name
//! records; base-256 numbers), pax ('x' extended headers: `path`,
//! `linkpath`, `size`, `mtime`; 'g' global headers are skipped) and old
//! v7 headers (no magic; a name ending in '/' is a directory). Entry types:
//! regular files ('0', '\0', and '7' contiguous), hard links ('1'),
//! symlinks ('2') and directories ('5'). Devices, FIFOs, GNU sparse files
//! and volume labels come back as `Other` for the caller to skip. Every
//! header's checksum is verified; the archive ends at a zero block or at the
//! end of the bytes.

use alloc::vec::Vec;

const BLOCK: usize = 512;

pub struct Entry<'a> {
    pub path: Vec<u8>,
    /// Permission bits (07777).
    pub mode: u32,
    pub mtime: i64,
    pub kind: EntryKind<'a>,
}

pub enum EntryKind<'a> {
    File(&'a [u8]),
    /// A file whose data is zstd frames (the rootfs index's zstd form):
    /// `size` bytes, chunk by chunk.
    Packed {
        size: u64,
        chunks: Vec<super::data::Chunk>,
    },
    Dir,
    Symlink(Vec<u8>),
    /// A second name for an earlier entry of the archive (its path).
    HardLink(Vec<u8>),
    /// A type this file system does not hold (the type flag).
    Other(u8),
}

#[derive(Debug)]
pub enum Error {
    /// A header or its data runs past the end of the archive.
    Truncated {
        at: usize,
    },
    BadChecksum {
        at: usize,
    },
    BadNumber {
        at: usize,
        field: &'static str,
    },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Error::Truncated { at } => write!(f, "the entry at byte {at} is cut short"),
            Error::BadChecksum { at } => write!(f, "bad header checksum at byte {at}"),
            Error::BadNumber { at, field } => write!(f, "bad {field} in the header at byte {at}"),
        }
    }
}

pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            at: 0,
            done: data.is_empty(),
        }
    }
}

/// A NUL-terminated field (or one that fills its whole width).
fn field(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

/// An octal number field (leading blanks allowed, ended by a blank or NUL),
/// or GNU's base-256 form (top bit of the first byte set; negative values
/// are refused).
fn number(bytes: &[u8]) -> Option<u64> {
    let first = *bytes.first()?;
    if first & 0x80 != 0 {
        if first & 0x40 != 0 {
            return None;
        }
        let mut v = (first & 0x3f) as u64;
        for &b in &bytes[1..] {
            if v >> 56 != 0 {
                return None;
            }
            v = (v << 8) | b as u64;
        }
        return Some(v);
    }
    let mut v: u64 = 0;
    let mut digits = false;
    for &b in bytes {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
                digits = true;
            }
            b' ' | 0 if !digits => {}
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

/// The stored checksum matches the header summed with its checksum field
/// read as blanks (unsigned, or signed as some old tars computed it).
fn checksum_ok(header: &[u8]) -> bool {
    let Some(stored) = number(&header[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    stored == unsigned || stored as i64 == signed
}

/// Overrides a pax extended header sets for the next entry.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
}

fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &b| {
        b.is_ascii_digit()
            .then(|| v.checked_mul(10)?.checked_add((b - b'0') as u64))?
    })
}

/// Records are "<length> <key>=<value>\n", the length counting the whole
/// record.
fn parse_pax(mut body: &[u8], pax: &mut Pax) -> Option<()> {
    while !body.is_empty() && body[0] != 0 {
        let space = body.iter().position(|&b| b == b' ')?;
        let len = decimal(&body[..space])? as usize;
        if len <= space + 1 || len > body.len() {
            return None;
        }
        let record = &body[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let eq = record.iter().position(|&b| b == b'=')?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(decimal(value)?),
            b"mtime" => {
                let whole = value.split(|&b| b == b'.').next().unwrap_or(value);
                let (neg, digits) = match whole.strip_prefix(b"-") {
                    Some(d) => (true, d),
                    None => (false, whole),
                };
                let v = decimal(digits)? as i64;
                pax.mtime = Some(if neg { -v } else { v });
            }
            _ => {}
        }
        body = &body[len..];
    }
    Some(())
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_entry();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl<'a> Reader<'a> {
    fn next_entry(&mut self) -> Option<Result<Entry<'a>, Error>> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        loop {
            let at = self.at;
            if at >= self.data.len() {
                return None;
            }
            let Some(header) = self.data.get(at..at + BLOCK) else {
                return Some(Err(Error::Truncated { at }));
            };
            if header.iter().all(|&b| b == 0) {
                return None;
            }
            if !checksum_ok(header) {
                return Some(Err(Error::BadChecksum { at }));
            }
            let size = match pax.size.take() {
                Some(s) => s,
                None => match number(&header[124..136]) {
                    Some(s) => s,
                    None => return Some(Err(Error::BadNumber { at, field: "size" })),
                },
            };
            let start = at + BLOCK;
            let Some(body) = usize::try_from(size)
                .ok()
                .and_then(|s| self.data.get(start..start.checked_add(s)?))
            else {
                return Some(Err(Error::Truncated { at }));
            };
            self.at = (start + body.len())
                .div_ceil(BLOCK)
                .saturating_mul(BLOCK)
                .min(self.data.len());
            let typeflag = header[156];
            match typeflag {
                b'L' => {
                    long_name = Some(field(body).to_vec());
                    continue;
                }
                b'K' => {
                    long_link = Some(field(body).to_vec());
                    continue;
                }
                b'x' => {
                    if parse_pax(body, &mut pax).is_none() {
                        return Some(Err(Error::BadNumber {
                            at,
                            field: "pax record",
                        }));
                    }
                    continue;
                }
                b'g' => continue,
                _ => {}
            }
            let Some(mode) = number(&header[100..108]) else {
                return Some(Err(Error::BadNumber { at, field: "mode" }));
            };
            let mtime = match pax.mtime {
                Some(t) => t,
                None => number(&header[136..148]).unwrap_or(0) as i64,
            };
            let posix = &header[257..263] == b"ustar\0";
            let path = pax.path.take().or(long_name.take()).unwrap_or_else(|| {
                let name = field(&header[0..100]);
                let prefix = if posix { field(&header[345..500]) } else { &[] };
                let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
                if !prefix.is_empty() {
                    p.extend_from_slice(prefix);
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            });
            let link = || {
                pax.linkpath
                    .clone()
                    .or(long_link.clone())
                    .unwrap_or_else(|| field(&header[157..257]).to_vec())
            };
            let kind = match typeflag {
                b'0' | 0 | b'7' if path.ends_with(b"/") => EntryKind::Dir,
                b'0' | 0 | b'7' => EntryKind::File(body),
                b'1' => EntryKind::HardLink(link()),
                b'2' => EntryKind::Symlink(link()),
                b'5' => EntryKind::Dir,
                other => EntryKind::Other(other),
            };
            return Some(Ok(Entry {
                path,
                mode: (mode & 0o7777) as u32,
                mtime,
                kind,
            }));
        }
    }
}
