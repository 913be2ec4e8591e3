//! The time release artifacts say they were made, as RFC 3339: from
//! `$SOURCE_DATE_EPOCH` (https://reproducible-builds.org/specs/source-date-epoch/),
//! 1970-01-01T00:00:00Z if unset. Never the clock: two builds of one recipe
//! must give the same bytes, and the SBOM and the OCI manifest carry a
//! creation time. The variable is read and checked where the rootfs's
//! mtimes come from ([`crate::build::rootfs::source_date_epoch`]), so every
//! artifact of a build agrees on it and refuses the same bad values.

use crate::build::rootfs::{self, RootfsError};

/// `$SOURCE_DATE_EPOCH` as an RFC 3339 UTC time.
pub fn from_env() -> Result<String, RootfsError> {
    Ok(rfc3339(rootfs::source_date_epoch()?))
}

/// Seconds since the epoch as an RFC 3339 UTC time with whole seconds.
pub fn rfc3339(secs: u64) -> String {
    // source_date_epoch() caps it at the year 2242, well inside jiff's range.
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(secs) {
        // jiff prints whole seconds without a fraction, and `Z` for UTC.
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::MAX.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(rootfs::MAX_MTIME), "2242-03-16T12:56:31Z");
    }
}
