//! The rootfs index: every entry of the rootfs tar (path, kind, mode,
//! mtime, where its data lies in the archive), packed in one small blob
//! that build::link places next to the archive.
//!
//! Why: the library OS seeds its file system at boot. Walking the tar
//! itself reads one 512-byte header per file, each on its own page of the
//! image, and on PVM every first touch of an image page is a host fault
//! (~40 µs measured: ~45 ms for PostgreSQL's ~1000 files). The index puts
//! the same facts on a handful of pages; file data is still lent straight
//! out of the archive.
//!
//! Format (little endian): magic `PGKRIDX1`, entry count (u32), reserved
//! (u32); then per entry: kind (u8: 0 file, 1 directory, 2 symlink, 3 hard
//! link), reserved (u8), path length (u16), link length (u16), reserved
//! (u16), mode (u32), mtime (i64), data offset in the archive (u64), size
//! (u64), the path bytes, the link bytes. libos/src/fs/index.rs reads it.

use std::io;

pub const MAGIC: &[u8; 8] = b"PGKRIDX1";

/// The index of the plain tar `archive`.
pub fn build(archive: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let mut count: u32 = 0;
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries()? {
        let entry = entry?;
        let h = entry.header();
        let kind: u8 = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => 0,
            tar::EntryType::Directory => 1,
            tar::EntryType::Symlink => 2,
            tar::EntryType::Link => 3,
            // Metadata entries (pax, GNU long names) are folded into the
            // entries they describe by the tar crate; anything else is not
            // something the rootfs stage writes.
            other => {
                return Err(io::Error::other(format!(
                    "rootfs entry of type {other:?} cannot be indexed"
                )));
            }
        };
        let path = entry.path_bytes().into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let too_long =
            |what: &str| io::Error::other(format!("rootfs {what} longer than 65535 bytes"));
        out.push(kind);
        out.push(0);
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
        out.extend_from_slice(&entry.raw_file_position().to_le_bytes());
        out.extend_from_slice(&entry.size().to_le_bytes());
        out.extend_from_slice(&path);
        out.extend_from_slice(&link);
        count += 1;
    }
    out[8..12].copy_from_slice(&count.to_le_bytes());
    Ok(out)
}
