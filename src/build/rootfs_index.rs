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
//! Format (little endian): magic `PGKRIDX2`, entry count (u32), reserved
//! (u32); then per entry: kind (u8: 0 file, 1 directory, 2 symlink, 3 hard
//! link), data encoding (u8: 0 plain, 1 zstd chunks), path length (u16),
//! link length (u16), reserved (u16), mode (u32), mtime (i64), data offset
//! in the archive (u64; plain files), size (u64), the path bytes, the link
//! bytes; for a zstd file then its chunk count (u32) and per chunk the
//! frame's offset in the archive (u64), its length (u32) and how many bytes
//! of the file it holds (u32). libos/src/fs/index.rs reads it.
//!
//! A hard-link entry of the archive is a copy of an earlier file
//! (build::rootfs stores repeated files once): it is indexed as a file
//! (kind 0) with that file's data, so the library OS gives it an inode of
//! its own over the same bytes of the image. Kind 3 stays for archives
//! whose links name no earlier file in the index (not made by pgkraft).

use std::io;

pub const MAGIC: &[u8; 8] = pgkraft_abi::ROOTFS_INDEX_MAGIC;

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
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let mut count: u32 = 0;
    let mut next_frame = 0usize;
    // path -> (tar data offset, size, chunks) of every regular file so far,
    // for the copies that follow it.
    type Data = (u64, u64, Option<Vec<(u64, u32, u32)>>);
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
            _ if copy_of.is_some() => 0,
            tar::EntryType::Regular | tar::EntryType::Continuous => 0,
            tar::EntryType::Directory => 1,
            tar::EntryType::Symlink => 2,
            tar::EntryType::Link => 3,
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
                    Some(frames) if kind == 0 && size > 0 => {
                        Some(chunks_of(frames, &mut next_frame, data, size, &path)?)
                    }
                    _ => None,
                };
                if kind == 0 {
                    files.insert(path.clone(), (data, size, chunks.clone()));
                }
                (link, data, size, chunks)
            }
        };
        let too_long = |what: &str| bad(format!("rootfs {what} longer than 65535 bytes"));
        out.push(kind);
        out.push(u8::from(chunks.is_some()));
        out.extend_from_slice(
            &u16::try_from(path.len())
                .map_err(|_| too_long("path"))?
                .to_le_bytes(),
        );
        out.extend_from_slice(
            &u16::try_from(link.len())
                .map_err(|_| too_long("link"))?
                .to_le_bytes(),
        );
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&h.mode()?.to_le_bytes());
        out.extend_from_slice(&(h.mtime()? as i64).to_le_bytes());
        // Offsets into a zstd archive are the chunks'; a tar offset there
        // would point at nothing.
        let plain_offset = if frames.is_some() { 0 } else { data };
        out.extend_from_slice(&plain_offset.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&path);
        out.extend_from_slice(&link);
        if let Some(chunks) = chunks {
            out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            for (offset, len, holds) in chunks {
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&holds.to_le_bytes());
            }
        }
        count += 1;
    }
    out[8..12].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}

/// The frames holding a file's `size` bytes at tar offset `data`: (frame
/// offset, frame length, bytes of the file it holds).
fn chunks_of(
    frames: &[Frame],
    next: &mut usize,
    data: u64,
    size: u64,
    path: &[u8],
) -> io::Result<Vec<(u64, u32, u32)>> {
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
        let holds = f.tar_len.min(size - covered);
        let len = u32::try_from(f.len).map_err(|_| misaligned())?;
        out.push((f.offset, len, holds as u32));
        covered += f.tar_len;
        *next += 1;
    }
    Ok(out)
}
