//! What identifies a PostgreSQL cluster: its `PG_VERSION` file (the major
//! version) and the head of `global/pg_control` (the system identifier
//! initdb drew, then the control file's and the catalog's layout
//! versions). The head's layout has been the same in every release since
//! 8.x, so it is read without knowing the major; the CRC at the end of the
//! file is the server's to check.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A PostgreSQL major version (`17`), as `PG_VERSION` and a recipe name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PgMajor(pub u32);

impl fmt::Display for PgMajor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PgMajor {
    /// The major of a release or major string: `17`, `17.11`, `17devel`.
    pub fn parse(text: &str) -> Option<PgMajor> {
        let digits: String = text
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|&m| m > 0).map(PgMajor)
    }
}

/// initdb's random cluster identity (`pg_controldata`'s "Database system
/// identifier"). Kept as a decimal string in JSON: readers that parse
/// numbers as doubles would round a u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SystemId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for SystemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SystemId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(SystemId)
            .map_err(|_| serde::de::Error::custom(format!("not a decimal u64: {text:?}")))
    }
}

/// The head of `global/pg_control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlHead {
    pub system_identifier: SystemId,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
}

/// Where the control file lives in a data directory.
pub const CONTROL_FILE: &str = "global/pg_control";
/// The major version's file in a data directory.
pub const VERSION_FILE: &str = "PG_VERSION";

/// Why a cluster file could not be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{bytes} bytes, shorter than the 16-byte head of a control file")]
    Short { bytes: usize },
    #[error("pg_control_version is 0: not a control file")]
    NotControl,
    #[error("{text:?} is not a PostgreSQL major version")]
    NotMajor { text: String },
}

impl ControlHead {
    /// Parses the head of a control file's bytes (at least its first 16).
    pub fn parse(bytes: &[u8]) -> Result<ControlHead, ControlError> {
        let head: &[u8; 16] = bytes
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or(ControlError::Short { bytes: bytes.len() })?;
        let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        let pg_control_version = u32_at(8);
        if pg_control_version == 0 {
            return Err(ControlError::NotControl);
        }
        Ok(ControlHead {
            system_identifier: SystemId(u64::from_le_bytes(head[..8].try_into().expect("8 bytes"))),
            pg_control_version,
            catalog_version_no: u32_at(12),
        })
    }

    /// Reads `data_dir`'s control file.
    pub fn read(data_dir: &Path) -> Result<ControlHead, ControlError> {
        use std::io::Read;
        let mut head = Vec::with_capacity(16);
        std::fs::File::open(data_dir.join(CONTROL_FILE))?
            .take(16)
            .read_to_end(&mut head)?;
        ControlHead::parse(&head)
    }
}

/// `data_dir`'s major version, from its `PG_VERSION`.
pub fn read_major(data_dir: &Path) -> Result<PgMajor, ControlError> {
    let text = std::fs::read_to_string(data_dir.join(VERSION_FILE))?;
    PgMajor::parse(&text)
        .filter(|m| text.trim() == m.to_string())
        .ok_or(ControlError::NotMajor { text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_read_little_endian() {
        let mut bytes = 0x0123_4567_89ab_cdef_u64.to_le_bytes().to_vec();
        bytes.extend(1700u32.to_le_bytes());
        bytes.extend(202406281u32.to_le_bytes());
        bytes.extend([0; 200]);
        let head = ControlHead::parse(&bytes).unwrap();
        assert_eq!(head.system_identifier, SystemId(0x0123_4567_89ab_cdef));
        assert_eq!(head.pg_control_version, 1700);
        assert_eq!(head.catalog_version_no, 202406281);
        assert!(matches!(
            ControlHead::parse(&bytes[..10]),
            Err(ControlError::Short { bytes: 10 })
        ));
        assert!(matches!(
            ControlHead::parse(&[0; 16]),
            Err(ControlError::NotControl)
        ));
    }

    #[test]
    fn majors_from_releases_and_pg_version() {
        assert_eq!(PgMajor::parse("17.11"), Some(PgMajor(17)));
        assert_eq!(PgMajor::parse("15\n"), Some(PgMajor(15)));
        assert_eq!(PgMajor::parse("x15"), None);
        assert_eq!(PgMajor::parse("0"), None);
    }

    #[test]
    fn a_system_id_is_a_string_in_json() {
        let id = SystemId(u64::MAX);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"18446744073709551615\"");
        assert_eq!(serde_json::from_str::<SystemId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SystemId>("\"12a\"").is_err());
    }
}
