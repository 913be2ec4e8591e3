//! What pgkraft can build, as plain data: where a source comes from
//! ([`SourceSpec`]), the supported PostgreSQL major versions with their
//! pinned sources, the extension catalogue ([`extensions`]) and the
//! test modules of PostgreSQL's own test suites ([`test_modules`]).
//!
//! Both the recipe (which checks a recipe against these facts) and the
//! build (which acts on them) read them from here; this module imports
//! neither, so neither depends on the other for them.
//!
//! docs/ARCHITECTURE.md §0.

pub mod extensions;
pub mod test_modules;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use extensions::supported_extensions;

/// Where a recipe says a source comes from. At most one of `url` and `path`;
/// with neither, the file is looked up by `sha256` in the local stores.
/// A relative `path` is taken as is (relative to the working directory):
/// the recipe loader resolves it against the recipe's directory first.
/// `build::fetch` checks it (`SourceSpec::validate`) and fetches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub sha256: String,
}

/// The major versions pgkraft builds: each has a patch series in
/// `postgres-patches/<major>/` and a default pin.
pub const SUPPORTED_MAJORS: &[u32] = &[15, 17, 18];

/// A default PostgreSQL source per major version, as `ci/fetch-sources.sh`
/// puts it into `sources/` (Debian's .orig tarball is the upstream release
/// tarball).
#[derive(Clone, Copy, Debug)]
pub struct PgPin {
    pub major: u32,
    pub version: &'static str,
    /// Debian's name for the tarball; also the name hint for fetching.
    pub file_name: &'static str,
    pub sha256: &'static str,
    /// Where the file can be downloaded when it is not in a local store.
    pub url: &'static str,
}

impl PgPin {
    pub fn spec(&self) -> SourceSpec {
        SourceSpec {
            url: Some(self.url.to_string()),
            path: None,
            sha256: self.sha256.to_string(),
        }
    }
}

const PINS: &[PgPin] = &[
    PgPin {
        major: 15,
        version: "15.18",
        file_name: "postgresql-15_15.18.orig.tar.bz2",
        sha256: "11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4",
        url: "http://deb.debian.org/debian/pool/main/p/postgresql-15/postgresql-15_15.18.orig.tar.bz2",
    },
    // trixie's index names 17.12, whose tarball the mirrors did not serve
    // when this was pinned; ci/fetch-sources.sh falls back to 17.11 from
    // the pool, checked against the sha256 in its .dsc.
    PgPin {
        major: 17,
        version: "17.11",
        file_name: "postgresql-17_17.11.orig.tar.bz2",
        sha256: "dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979",
        url: "http://deb.debian.org/debian/pool/main/p/postgresql-17/postgresql-17_17.11.orig.tar.bz2",
    },
    // Debian unstable (sid) carries 18.x; ci/fetch-sources.sh fetches it
    // through a deb-src entry for sid.
    PgPin {
        major: 18,
        version: "18.6",
        file_name: "postgresql-18_18.6.orig.tar.bz2",
        sha256: "555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f",
        url: "http://deb.debian.org/debian/pool/main/p/postgresql-18/postgresql-18_18.6.orig.tar.bz2",
    },
];

/// The default source of a major version, if pgkraft supports it.
pub fn pin(major: u32) -> Option<&'static PgPin> {
    PINS.iter().find(|p| p.major == major)
}
