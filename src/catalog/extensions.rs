//! The extension catalogue: which extensions can be linked into an image,
//! and where their sources are.
//!
//! Only modules that need no library outside PostgreSQL and libc qualify:
//! an image has no dynamic loader and no other libraries. pgcrypto and
//! sslinfo (OpenSSL), uuid-ossp (libuuid), xml2 (libxml2), dblink and
//! postgres_fdw (libpq and outbound connections) are therefore left out.

use super::SUPPORTED_MAJORS;

/// One extension: its `CREATE EXTENSION` name, the source directory that
/// builds it (relative to the source root), and the extensions its control
/// file `requires`.
#[derive(Clone, Copy, Debug)]
pub struct Extension {
    pub name: &'static str,
    pub dir: &'static str,
    pub requires: &'static [&'static str],
}

const fn contrib(name: &'static str, dir: &'static str) -> Extension {
    Extension {
        name,
        dir,
        requires: &[],
    }
}

/// Built into every PostgreSQL: initdb runs `CREATE EXTENSION plpgsql`.
pub const PLPGSQL: &str = "plpgsql";

/// The same set for 15, 17 and 18: every entry exists, unchanged in kind, in
/// all three.
const EXTENSIONS: &[Extension] = &[
    contrib("plpgsql", "src/pl/plpgsql"),
    contrib("amcheck", "contrib/amcheck"),
    contrib("bloom", "contrib/bloom"),
    contrib("btree_gin", "contrib/btree_gin"),
    contrib("btree_gist", "contrib/btree_gist"),
    contrib("citext", "contrib/citext"),
    contrib("cube", "contrib/cube"),
    contrib("dict_int", "contrib/dict_int"),
    Extension {
        name: "earthdistance",
        dir: "contrib/earthdistance",
        requires: &["cube"],
    },
    contrib("fuzzystrmatch", "contrib/fuzzystrmatch"),
    contrib("hstore", "contrib/hstore"),
    contrib("intarray", "contrib/intarray"),
    contrib("isn", "contrib/isn"),
    contrib("lo", "contrib/lo"),
    contrib("ltree", "contrib/ltree"),
    contrib("pageinspect", "contrib/pageinspect"),
    contrib("pg_buffercache", "contrib/pg_buffercache"),
    contrib("pg_freespacemap", "contrib/pg_freespacemap"),
    contrib("pg_prewarm", "contrib/pg_prewarm"),
    contrib("pg_stat_statements", "contrib/pg_stat_statements"),
    contrib("pg_trgm", "contrib/pg_trgm"),
    contrib("pg_visibility", "contrib/pg_visibility"),
    contrib("pg_walinspect", "contrib/pg_walinspect"),
    contrib("pgrowlocks", "contrib/pgrowlocks"),
    contrib("pgstattuple", "contrib/pgstattuple"),
    contrib("seg", "contrib/seg"),
    contrib("tablefunc", "contrib/tablefunc"),
    contrib("tcn", "contrib/tcn"),
    contrib("tsm_system_rows", "contrib/tsm_system_rows"),
    contrib("tsm_system_time", "contrib/tsm_system_time"),
    contrib("unaccent", "contrib/unaccent"),
];

const NAMES: &[&str] = &[
    "plpgsql",
    "amcheck",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dict_int",
    "earthdistance",
    "fuzzystrmatch",
    "hstore",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgrowlocks",
    "pgstattuple",
    "seg",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
];

/// The extensions pgkraft can link into PostgreSQL `major` (empty for an
/// unsupported major).
pub fn supported_extensions(major: u32) -> &'static [&'static str] {
    if SUPPORTED_MAJORS.contains(&major) {
        NAMES
    } else {
        &[]
    }
}

/// Every extension of `major`, for the compile stage (which builds them
/// all so that choosing others only relinks).
pub fn all(major: u32) -> &'static [Extension] {
    if SUPPORTED_MAJORS.contains(&major) {
        EXTENSIONS
    } else {
        &[]
    }
}

pub fn find(major: u32, name: &str) -> Option<&'static Extension> {
    all(major).iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_table() {
        let table: Vec<&str> = EXTENSIONS.iter().map(|e| e.name).collect();
        assert_eq!(table, NAMES);
    }
}
