//! The Rust crates in an image and in the tool that built it: versions
//! from the lock files, licenses from the table ci/sbom-licenses.py
//! generates (crates.tsv, embedded at compile time).
//!
//! Two lock files: pgkraft's own (embedded: it describes this very binary,
//! the build tool) and the libOS's (read from the libOS sources the build
//! used, whose contents the libOS build's cache key covers: what is linked
//! into the image).

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// pgkraft's Cargo.lock, as this binary was built with it.
pub const HOST_LOCK: &str = include_str!("../../../Cargo.lock");

/// name, version -> (declared license, kind); see ci/sbom-licenses.py.
const TABLE: &str = include_str!("crates.tsv");

#[derive(Debug, thiserror::Error)]
pub enum CratesError {
    #[error("{file}: not a Cargo.lock: {source}")]
    Lock {
        file: String,
        source: Box<toml::de::Error>,
    },
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    /// `registry+https://...` for crates.io; absent for path crates.
    #[serde(default)]
    source: Option<String>,
    /// sha256 of the `.crate` file, for registry crates.
    #[serde(default)]
    checksum: Option<String>,
    /// `name`, or `name version` where the lock holds several versions.
    #[serde(default)]
    dependencies: Vec<String>,
}

/// One crate of a lock file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// From crates.io (else a path crate of the workspace).
    pub registry: bool,
    /// sha256 of the downloaded `.crate` file (registry crates).
    pub checksum: Option<String>,
    /// As declared in its Cargo.toml; empty when the table lacks it.
    pub license: String,
    pub proc_macro: bool,
    /// In the table (ci/sbom-licenses.py has seen it).
    pub known: bool,
}

/// A lock file's crates, and which of them `root` depends on how.
#[derive(Debug, Default)]
pub struct Closure {
    /// Compiled into `root` (its normal dependency closure, without
    /// proc-macros). From Cargo.lock, which also lists optional
    /// dependencies no feature turns on (smoltcp's defmt): this errs on
    /// the side of naming too much.
    pub linked: BTreeSet<Crate>,
    /// Only run while compiling `root`: proc-macros and what they use.
    pub build_only: BTreeSet<Crate>,
}

struct Table {
    rows: BTreeMap<(String, String), (String, bool)>,
}

impl Table {
    fn embedded() -> Table {
        let rows = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (name, version, license, kind) = (f.next()?, f.next()?, f.next()?, f.next()?);
                Some((
                    (name.to_string(), version.to_string()),
                    (license.to_string(), kind == "proc-macro"),
                ))
            })
            .collect();
        Table { rows }
    }
}

/// Every crate `file` (a Cargo.lock's text, named `file_name` in errors)
/// locks, with what the license table says of it.
pub fn crates(file_name: &str, text: &str) -> Result<Vec<Crate>, CratesError> {
    Ok(parse(file_name, text)?
        .into_iter()
        .map(|(c, _)| c)
        .collect())
}

fn parse(file_name: &str, text: &str) -> Result<Vec<(Crate, Vec<String>)>, CratesError> {
    let lock: Lock = toml::from_str(text).map_err(|source| CratesError::Lock {
        file: file_name.into(),
        source: Box::new(source),
    })?;
    let table = Table::embedded();
    Ok(lock
        .package
        .into_iter()
        .map(|p| {
            let row = table.rows.get(&(p.name.clone(), p.version.clone()));
            let c = Crate {
                registry: p.source.is_some(),
                checksum: p.checksum,
                license: row.map(|r| r.0.clone()).unwrap_or_default(),
                proc_macro: row.is_some_and(|r| r.1),
                known: row.is_some(),
                name: p.name,
                version: p.version,
            };
            (c, p.dependencies)
        })
        .collect())
}

/// What `root` (a package of the lock) pulls in, split into what is
/// linked and what only runs at compile time.
pub fn closure(file_name: &str, text: &str, root: &str) -> Result<Closure, CratesError> {
    let all = parse(file_name, text)?;
    // A dependency is `name` when the lock holds one version of it, else
    // `name version` (or `name version (source)`).
    let find = |dep: &str| -> Option<usize> {
        let mut words = dep.split(' ');
        let name = words.next()?;
        let version = words.next();
        all.iter()
            .position(|(c, _)| c.name == name && version.is_none_or(|v| c.version == v))
    };
    let Some(root) = all.iter().position(|(c, _)| c.name == root) else {
        return Ok(Closure::default());
    };
    // Walk from the root; below a proc-macro everything is build-only,
    // unless also reached on a linked path.
    let mut linked = BTreeSet::new();
    let mut build = BTreeSet::new();
    let mut todo = vec![(root, false)];
    while let Some((i, build_side)) = todo.pop() {
        let (c, deps) = &all[i];
        let build_side = build_side || c.proc_macro;
        let seen = if build_side { &mut build } else { &mut linked };
        if !seen.insert(i) {
            continue;
        }
        todo.extend(deps.iter().filter_map(|d| find(d)).map(|j| (j, build_side)));
    }
    linked.remove(&root);
    let pick = |set: &BTreeSet<usize>| -> BTreeSet<Crate> {
        set.iter().map(|&i| all[i].0.clone()).collect()
    };
    let build_only = build.difference(&linked).copied().collect();
    Ok(Closure {
        linked: pick(&linked),
        build_only: pick(&build_only),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lock_parses_and_every_crate_is_in_the_table() {
        let all = crates("Cargo.lock", HOST_LOCK).unwrap();
        assert!(all.iter().any(|c| c.name == "serde" && c.known));
        let unknown: Vec<_> = all.iter().filter(|c| !c.known).collect();
        assert!(
            unknown.is_empty(),
            "not in src/build/sbom/crates.tsv (run python3 ci/sbom-licenses.py): {unknown:?}"
        );
    }

    #[test]
    fn proc_macros_are_build_only() {
        let lock = r#"
version = 4
[[package]]
name = "app"
version = "0.1.0"
dependencies = ["zerocopy", "log 0.4.35"]
[[package]]
name = "zerocopy"
version = "0.8.64"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = ["zerocopy-derive"]
[[package]]
name = "zerocopy-derive"
version = "0.8.64"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = ["syn 2.0.119"]
[[package]]
name = "syn"
version = "2.0.119"
source = "registry+https://github.com/rust-lang/crates.io-index"
[[package]]
name = "log"
version = "0.4.35"
source = "registry+https://github.com/rust-lang/crates.io-index"
[[package]]
name = "log"
version = "0.3.9"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;
        let c = closure("test.lock", lock, "app").unwrap();
        let names = |s: &BTreeSet<Crate>| {
            s.iter()
                .map(|c| format!("{}@{}", c.name, c.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.linked), ["log@0.4.35", "zerocopy@0.8.64"]);
        assert_eq!(
            names(&c.build_only),
            ["syn@2.0.119", "zerocopy-derive@0.8.64"]
        );
    }
}
