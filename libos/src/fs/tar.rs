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

/// Builds archives for the tests (here and in `index`, `fs`).
#[cfg(test)]
pub mod testing {
    use super::BLOCK;

    /// A ustar header block (checksum filled in).
    pub fn header(name: &[u8], typeflag: u8, size: usize, link: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000001750\0");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    pub fn seal(h: &mut [u8]) {
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// An entry: header plus its data padded to whole blocks.
    pub fn entry(name: &[u8], typeflag: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
        let mut v = header(name, typeflag, data.len(), link);
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(BLOCK), 0);
        v
    }

    pub fn end(mut v: Vec<u8>) -> &'static [u8] {
        v.extend_from_slice(&[0u8; 2 * BLOCK]);
        Vec::leak(v)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn all(data: &[u8]) -> Vec<Result<Entry<'_>, Error>> {
        Reader::new(data).collect()
    }

    #[test]
    fn files_dirs_and_links() {
        let mut v = entry(b"etc/", b'5', b"", b"");
        v.extend(entry(b"etc/hosts", b'0', b"127.0.0.1 localhost\n", b""));
        v.extend(entry(b"etc/h2", b'1', b"", b"etc/hosts"));
        v.extend(entry(b"etc/l", b'2', b"", b"hosts"));
        v.extend(entry(b"dev/null", b'3', b"", b""));
        let e = all(end(v));
        assert_eq!(e.len(), 5);
        let e: Vec<Entry> = e.into_iter().map(Result::unwrap).collect();
        assert!(matches!(e[0].kind, EntryKind::Dir));
        assert!(matches!(
            e[1].kind,
            EntryKind::File(b"127.0.0.1 localhost\n")
        ));
        assert_eq!((e[1].mode, e[1].mtime), (0o644, 0o1750));
        assert!(matches!(&e[2].kind, EntryKind::HardLink(t) if t == b"etc/hosts"));
        assert!(matches!(&e[3].kind, EntryKind::Symlink(t) if t == b"hosts"));
        // A character device is for the caller to skip.
        assert!(matches!(e[4].kind, EntryKind::Other(b'3')));
    }

    #[test]
    fn a_bad_checksum_or_a_cut_short_body_stops_the_walk() {
        let mut v = entry(b"a", b'0', b"x", b"");
        v[0] = b'b'; // changed after the checksum was made
        let e = all(end(v));
        assert!(matches!(e[..], [Err(Error::BadChecksum { at: 0 })]));
        let mut v = entry(b"ok", b'0', b"", b"");
        v.extend(header(b"big", b'0', 10_000, b""));
        let e = all(Vec::leak(v));
        assert!(e[0].is_ok());
        assert!(matches!(e[1], Err(Error::Truncated { at: 512 })));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn long_names_gnu_pax_and_ustar_prefix() {
        let long = [b'n'; 150];
        let mut v = entry(b"././@LongLink", b'L', &long, b"");
        v.extend(entry(b"short", b'0', b"", b""));
        let mut pax = b"17 path=pax/name\n".to_vec();
        pax.extend(b"12 mtime=-5\n");
        v.extend(entry(b"PaxHeaders/x", b'x', &pax, b""));
        v.extend(entry(b"ignored", b'0', b"", b""));
        let mut h = header(b"file", b'0', 0, b"");
        h[345..348].copy_from_slice(b"dir");
        seal(&mut h);
        v.extend(h);
        let e: Vec<Entry> = all(end(v)).into_iter().map(Result::unwrap).collect();
        assert_eq!(e[0].path, long);
        assert_eq!((&e[1].path[..], e[1].mtime), (&b"pax/name"[..], -5));
        assert_eq!(e[2].path, b"dir/file");
    }

    #[test]
    fn numbers_octal_and_base_256() {
        assert_eq!(number(b"  0755 \0"), Some(0o755));
        assert_eq!(number(b"0000000\0"), Some(0));
        assert_eq!(number(b"12x"), None);
        // GNU base-256: top bit set, big-endian.
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        // Negative base-256 values are refused.
        assert_eq!(number(&[0xff, 0xff]), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"42"), Some(42));
    }

    #[test]
    fn old_v7_directories_end_in_a_slash() {
        let mut h = header(b"olddir/", 0, 0, b"");
        h[257..265].fill(0);
        seal(&mut h);
        let e = all(end(h));
        assert!(matches!(e[0].as_ref().unwrap().kind, EntryKind::Dir));
        assert!(all(&[]).is_empty());
    }
}
