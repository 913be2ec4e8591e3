//! The volume's record of what it belongs to: `.pgkraft-volume.json` at the
//! top of the data directory (PostgreSQL ignores files it does not know
//! there). Written whole or not at all: a temporary file beside it, synced,
//! renamed over it, and the directory synced.

use super::control::{ControlHead, PgMajor};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The record's file name in the volume.
pub const RECORD_FILE: &str = ".pgkraft-volume.json";
/// The layout written now; a record of another layout is refused.
pub const RECORD_FORMAT: u32 = 1;

/// How the volume's cluster came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Unpacked from the image's pre-initialized cluster.
    Unpacked,
    /// Left empty for an image without a cluster to initialize at its first boot.
    FirstBoot,
    /// A cluster found there (made before volumes were recorded), taken over.
    Adopted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    pub postgres_major: PgMajor,
    /// The cluster's control file head; none while the volume awaits its
    /// first boot.
    pub cluster: Option<ControlHead>,
    /// The image that initialized (or adopted) the volume.
    pub image_sha256: String,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a volume record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("format {found}, and this pgkraft reads format {RECORD_FORMAT}")]
    Format { found: u32 },
}

impl Record {
    /// The record in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Record>, RecordError> {
        let bytes = match std::fs::read(dir.join(RECORD_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let record: Record = serde_json::from_slice(&bytes)?;
        if record.format != RECORD_FORMAT {
            return Err(RecordError::Format {
                found: record.format,
            });
        }
        Ok(Some(record))
    }

    /// Replaces `dir`'s record with this one, durably.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        let mut text = serde_json::to_vec_pretty(self).expect("a record serializes");
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(RECORD_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::control::SystemId;

    fn record() -> Record {
        Record {
            format: RECORD_FORMAT,
            postgres_major: PgMajor(17),
            cluster: Some(ControlHead {
                system_identifier: SystemId(7_000_000_000_000_000_001),
                pg_control_version: 1700,
                catalog_version_no: 202406281,
            }),
            image_sha256: "ab".repeat(32),
            origin: Origin::Unpacked,
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_nothing_else_is_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Record::read(dir.path()).unwrap(), None);
        record().write(dir.path()).unwrap();
        assert_eq!(Record::read(dir.path()).unwrap(), Some(record()));
        assert!(!dir.path().join(format!("{RECORD_FILE}.tmp")).exists());

        let mut other = serde_json::to_value(record()).unwrap();
        other["format"] = 2.into();
        std::fs::write(dir.path().join(RECORD_FILE), other.to_string()).unwrap();
        assert!(matches!(
            Record::read(dir.path()),
            Err(RecordError::Format { found: 2 })
        ));
        std::fs::write(dir.path().join(RECORD_FILE), "{\"format\": 1").unwrap();
        assert!(matches!(
            Record::read(dir.path()),
            Err(RecordError::Json(_))
        ));
    }
}
