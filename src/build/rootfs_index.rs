//! The rootfs index: every entry of the rootfs archive (path, kind, mode,
//! mtime, and where its data lies in the archive as the image carries it),
//! packed in one small blob that build::link places next to the archive.
//!
//! Why: the library OS seeds its file system at boot. Walking the tar
//! itself reads one 512-byte header per file, each on its own page of the
//! image, and on PVM every first touch of an image page is a host fault
//! (~40 µs measured: ~45 ms for PostgreSQL's ~1000 files). The index puts
//! the same facts on a handful of pages. A plain tar's file data is lent
//! straight out of the archive; a zstd archive (build::rootfs::compress:
//! one frame per 64 KiB of each file) is listed frame by frame, so the
//! libOS inflates a chunk only when the server first touches it.
//!
//! Format: pgkraft_abi::rootfs_index (varints, shared path prefixes,
//! delta offsets; about a quarter of the fixed-width first format).
//! libos/src/fs/index.rs reads it.
//!
//! A hard-link entry of the archive is a copy of an earlier file
//! (build::rootfs stores repeated files once): it is indexed as a file
//! with that file's data, so the library OS gives it an inode of its own
//! over the same bytes of the image. KIND_HARD_LINK stays for archives
//! whose links name no earlier file in the index (not made by pgkraft).

use std::io;

use pgkraft_abi::rootfs_index::{self as wire, ChunkRef};

pub const MAGIC: &[u8; 8] = wire::MAGIC;

/// One zstd frame of a rootfs archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Where the frame lies in the archive.
    pub offset: u64,
    pub len: u64,
    /// Where its content lies in the decompressed tar.
    pub tar_offset: u64,
    pub tar_len: u64,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The frames of a zstd archive, in order.
fn frames(archive: &[u8]) -> io::Result<Vec<Frame>> {
    let mut out = Vec::new();
    let (mut at, mut tar_at) = (0usize, 0u64);
    while at < archive.len() {
        let rest = &archive[at..];
        let len = zstd::zstd_safe::find_frame_compressed_size(rest).map_err(|_| {
            bad(format!(
                "damaged zstd frame at byte {at} of the rootfs archive"
            ))
        })?;
        let content = zstd::zstd_safe::get_frame_content_size(&rest[..len])
            .ok()
            .flatten()
            .ok_or_else(|| {
                bad(format!(
                    "the zstd frame at byte {at} of the rootfs archive does not record its size"
                ))
            })?;
        out.push(Frame {
            offset: at as u64,
            len: len as u64,
            tar_offset: tar_at,
            tar_len: content,
        });
        at += len;
        tar_at += content;
    }
    Ok(out)
}

/// The index of `archive` as an image carries it: a plain tar, or a zstd
/// one made by the rootfs stage (its frames must start where file data
/// starts). The rootfs stage itself has the tar and the frames at hand and
/// calls [`of_tar`].
pub fn build(archive: &[u8]) -> io::Result<Vec<u8>> {
    let tar = crate::image::format::rootfs_tar(archive)
        .ok_or_else(|| bad("the rootfs archive is not valid zstd"))?;
    let frames = if archive.starts_with(&zstd::zstd_safe::MAGICNUMBER.to_le_bytes()) {
        Some(frames(archive)?)
    } else {
        None
    };
    of_tar(&tar, frames.as_deref())
}

/// The index of the archive that is `tar` as it stands (`frames: None`),
/// or `tar` cut into `frames` (in order, covering it end to end).
pub fn of_tar(tar: &[u8], frames: Option<&[Frame]>) -> io::Result<Vec<u8>> {
    let mut put = Writer::new();
    let mut next_frame = 0usize;
    // path -> (tar data offset, size, chunks) of every regular file so far,
    // for the copies that follow it.
    type Data = (u64, u64, Option<Vec<ChunkRef>>);
    let mut files: std::collections::HashMap<Vec<u8>, Data> = std::collections::HashMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let entry = entry?;
        let h = entry.header();
        let copy_of = match h.entry_type() {
            tar::EntryType::Link => entry
                .link_name_bytes()
                .and_then(|l| files.get(l.as_ref()).cloned()),
            _ => None,
        };
        let kind: u8 = match h.entry_type() {
            _ if copy_of.is_some() => wire::KIND_FILE,
            tar::EntryType::Regular | tar::EntryType::Continuous => wire::KIND_FILE,
            tar::EntryType::Directory => wire::KIND_DIR,
            tar::EntryType::Symlink => wire::KIND_SYMLINK,
            tar::EntryType::Link => wire::KIND_HARD_LINK,
            // Metadata entries (pax, GNU long names) are folded into the
            // entries they describe by the tar crate; nothing else is
            // something the rootfs stage writes.
            other => {
                return Err(bad(format!(
                    "rootfs entry of type {other:?} cannot be indexed"
                )));
            }
        };
        let path = entry.path_bytes().into_owned();
        let (link, data, size, chunks) = match copy_of {
            Some((data, size, chunks)) => (Vec::new(), data, size, chunks),
            None => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let (data, size) = (entry.raw_file_position(), entry.size());
                let chunks = match frames {
                    Some(frames) if kind == wire::KIND_FILE && size > 0 => {
                        Some(chunks_of(frames, &mut next_frame, data, size, &path)?)
                    }
                    _ => None,
                };
                if kind == wire::KIND_FILE {
                    files.insert(path.clone(), (data, size, chunks.clone()));
                }
                (link, data, size, chunks)
            }
        };
        let mode = h.mode()?;
        let mtime = h.mtime()? as i64;
        put.entry(&Entry {
            kind,
            path: &path,
            link: &link,
            mode,
            mtime,
            size,
            // Only a plain archive's file has its data at a tar offset (a
            // zstd archive's files are their chunks).
            offset: if frames.is_some() || kind != wire::KIND_FILE {
                0
            } else {
                data
            },
            chunks: chunks.as_deref(),
        });
    }
    Ok(put.finish())
}

/// One entry as [`Writer`] takes it.
struct Entry<'a> {
    kind: u8,
    path: &'a [u8],
    link: &'a [u8],
    mode: u32,
    mtime: i64,
    size: u64,
    /// A plain file's data offset (ignored when it has chunks).
    offset: u64,
    /// A zstd file's frames.
    chunks: Option<&'a [ChunkRef]>,
}

/// The index being written: the header, then each entry encoded against
/// the one before (pgkraft_abi::rootfs_index).
struct Writer {
    out: Vec<u8>,
    count: u32,
    path: Vec<u8>,
    mtime: i64,
    chunk_end: u64,
}

impl Writer {
    fn new() -> Writer {
        let mut out = Vec::from(&MAGIC[..]);
        out.resize(wire::HEADER, 0);
        Writer {
            out,
            count: 0,
            path: Vec::new(),
            mtime: 0,
            chunk_end: 0,
        }
    }

    /// The index, its entry count in the header.
    fn finish(mut self) -> Vec<u8> {
        self.out[8..12].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }

    fn varint(&mut self, v: u64) {
        let mut buf = [0; wire::VARINT_MAX];
        let n = wire::put_varint(v, &mut buf);
        self.out.extend_from_slice(&buf[..n]);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    fn entry(&mut self, e: &Entry) {
        self.count += 1;
        let packed = if e.chunks.is_some() { wire::PACKED } else { 0 };
        self.out.push(e.kind | packed);
        let shared = self
            .path
            .iter()
            .zip(e.path)
            .take_while(|(a, b)| a == b)
            .count();
        self.varint(shared as u64);
        self.bytes(&e.path[shared..]);
        self.path = e.path.to_vec();
        self.bytes(e.link);
        self.varint(e.mode.into());
        self.varint(wire::zigzag(e.mtime.wrapping_sub(self.mtime)));
        self.mtime = e.mtime;
        self.varint(e.size);
        match e.chunks {
            None => self.varint(e.offset),
            Some(chunks) => {
                self.varint(chunks.len() as u64);
                for c in chunks {
                    self.varint(wire::zigzag(c.offset.wrapping_sub(self.chunk_end) as i64));
                    self.varint(c.len);
                    self.varint(c.holds);
                    self.chunk_end = c.offset + c.len;
                }
            }
        }
    }
}

/// The frames holding a file's `size` bytes at tar offset `data`.
fn chunks_of(
    frames: &[Frame],
    next: &mut usize,
    data: u64,
    size: u64,
    path: &[u8],
) -> io::Result<Vec<ChunkRef>> {
    let misaligned = || {
        bad(format!(
            "the rootfs archive's zstd frames do not start where {}'s data starts; \
             the archive was not made by pgkraft's rootfs stage",
            String::from_utf8_lossy(path)
        ))
    };
    while *next < frames.len() && frames[*next].tar_offset < data {
        *next += 1;
    }
    let mut out = Vec::new();
    let mut covered = 0u64;
    while covered < size {
        let f = frames.get(*next).ok_or_else(misaligned)?;
        if f.tar_offset != data + covered {
            return Err(misaligned());
        }
        out.push(ChunkRef {
            offset: f.offset,
            len: f.len,
            holds: f.tar_len.min(size - covered),
        });
        covered += f.tar_len;
        *next += 1;
    }
    Ok(out)
}
