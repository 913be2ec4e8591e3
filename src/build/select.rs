//! The runtime file closure (docs/ARCHITECTURE.md §1, `select`): out of a
//! PostgreSQL install tree and the cluster initdb made, the files the running
//! server reads given the recipe's choices, each with the reason it is in the
//! image, and nothing else.
//!
//! What a running server reads, and so what is selected:
//! - the cluster (its data directory);
//! - `share/timezone/`: the whole time zone database (clients send their
//!   own `TimeZone`: psql's PGTZ, JDBC the JVM's zone), or with
//!   `cluster.timezones` the zones listed, and always the one for
//!   `timezone` and `log_timezone`;
//! - `share/timezonesets/<set>` and the sets it `@INCLUDE`s: loaded at every
//!   start for `timezone_abbreviations`;
//! - each extension's control file and scripts: `CREATE EXTENSION`,
//!   `ALTER EXTENSION ... UPDATE` and `pg_available_extensions` read them;
//! - `share/tsearch_data/` when text search is wanted: dictionaries and stop
//!   words, read when a text search configuration is first used;
//! - without a cluster made at build time: the file initdb's SQL reads at
//!   first boot (its other inputs are in the first-boot plan, added by the
//!   build).
//!
//! Not selected: programs and libraries (the server is linked into the
//! image), headers, documentation, and initdb's inputs when initdb ran at
//! build time. With `cluster.timezones`, `pg_timezone_names` lists only the
//! shipped zones, and `SET timezone` to another zone fails.
//!
//! Extensions follow their control files' `requires` (as the build does), and
//! plpgsql is added when initdb runs at first boot (initdb creates it).
//!
//! Image layout: the share directory sits at the path configure compiled
//! into the server (its `PGSHAREDIR`, under the prefix; see
//! [`Layout::share_dir`]), so the server finds it without being told; the
//! cluster sits at [`Layout::data_dir`] (`/data` by default).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::recipe::PostgresSpec;

/// The prefix the postgres build configures (PostgreSQL's own default); the
/// image mirrors whichever prefix is used.
pub const DEFAULT_PREFIX: &str = super::postgres::PREFIX;
/// Where the cluster goes in the image.
pub const DEFAULT_DATA_DIR: &str = "/data";
/// Mode of every share file in the image. The server only reads them, and
/// the install tree's modes depend on the installing user's umask (zic
/// creates the time zone files with plain `fopen`), which must not leak into
/// the image.
pub const SHARE_FILE_MODE: u32 = 0o644;

/// Data-directory files that never go into an image: left behind by a
/// server run at build time, and a stale `postmaster.pid` whose PID is alive
/// in the guest (PID 1, say) stops the server from starting.
const DATA_DIR_SKIP: &[&str] = &["postmaster.pid", "postmaster.opts"];

/// Files a cluster made at first boot reads from the share directory:
/// (name, required). The rest of initdb's inputs (postgres.bki, the system
/// SQL scripts, the .sample files) went into the first-boot plan at build
/// time (build::postgres::first_boot); initdb's SQL still copies the SQL
/// features table from its file, by path.
const INITDB_INPUTS: &[(&str, bool)] = &[("sql_features.txt", true)];

/// The extension initdb always creates.
const PLPGSQL: &str = "plpgsql";

/// PostgreSQL refuses an abbreviation file nested deeper than this.
const ABBREV_MAX_DEPTH: usize = 3;

/// Where things go in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// configure's `--prefix`: absolute.
    pub prefix: PathBuf,
    /// The cluster's directory: absolute.
    pub data_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            prefix: PathBuf::from(DEFAULT_PREFIX),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

impl Layout {
    /// Where `make install DESTDIR=<destdir>` puts the installation: the
    /// prefix, re-rooted at `destdir`.
    pub fn installed_under(&self, destdir: &Path) -> PathBuf {
        under(destdir, &self.prefix)
    }

    /// The share directory PostgreSQL's makefiles derive from the prefix:
    /// `<prefix>/share`, plus `/postgresql` when the path mentions neither
    /// "pgsql" nor "postgres" (src/Makefile.global).
    pub fn share_dir(&self) -> PathBuf {
        let share = self.prefix.join("share");
        let s = share.to_string_lossy();
        if s.contains("pgsql") || s.contains("postgres") {
            share
        } else {
            share.join("postgresql")
        }
    }
}

/// The recipe's choices that decide the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choices {
    /// Checked against the cluster's PG_VERSION.
    pub major: u32,
    pub timezone: String,
    /// The zones shipped besides `timezone`; `None`: all of them.
    pub timezones: Option<Vec<String>>,
    /// The abbreviation set loaded at start (`Default` unless set).
    pub timezone_abbreviations: String,
    pub extensions: Vec<String>,
    pub text_search: bool,
    /// A cluster made at build time is shipped; otherwise initdb's inputs are.
    pub preinit: bool,
}

impl Choices {
    pub fn from_spec(spec: &PostgresSpec) -> Choices {
        Choices {
            major: spec.major,
            timezone: spec.cluster.timezone.clone(),
            timezones: spec.cluster.timezones.clone(),
            timezone_abbreviations: spec.timezone_abbreviations().to_owned(),
            extensions: spec.extensions.clone(),
            text_search: spec.cluster.text_search,
            preinit: spec.cluster.preinit,
        }
    }
}

pub struct SelectInput<'a> {
    /// The installation as laid out under the prefix (`bin/`, `share/`...):
    /// `build::postgres::PgBuild::install`, or [`Layout::installed_under`]
    /// the `DESTDIR` of `make install`.
    pub install: &'a Path,
    /// The cluster initdb made at build time; required exactly when
    /// `choices.preinit`.
    pub data_dir: Option<&'a Path>,
    pub layout: &'a Layout,
    pub choices: &'a Choices,
}

/// Why a file is in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The cluster made at build time.
    DataDirectory,
    /// The zone file for `timezone`/`log_timezone`; `link_to` when the name
    /// is a link in the tz tree (UTC -> Etc/UTC): the target's bytes are
    /// shipped under the name the server opens.
    TimeZone {
        zone: String,
        link_to: Option<String>,
    },
    /// An abbreviation set; `included_by` when another set `@INCLUDE`s it.
    TimeZoneAbbreviations {
        set: String,
        included_by: Option<String>,
    },
    /// One of an extension's files. `needed_by`: what brought in an
    /// extension the recipe does not list itself (the extension whose
    /// control file `requires` it, or initdb).
    Extension {
        extension: String,
        file: String,
        role: ExtensionFile,
        needed_by: Option<String>,
    },
    /// A file under `tsearch_data/`.
    TextSearch { file: String },
    /// A file the cluster's first boot reads from the share directory.
    Initdb { file: String },
    /// A file of the first-boot plan (build::postgres::first_boot).
    FirstBoot { file: String },
    /// /etc/passwd or /etc/group: the server looks its own user up
    /// (getpwuid) and refuses to start without an entry.
    Identity { file: String },
    /// An empty stand-in for the server binary (the image is the binary):
    /// PostgreSQL checks its own path exists and derives the share
    /// directory from it.
    Executable { file: String },
    /// An empty directory the postmaster checks exists at start (its
    /// library directory: modules are linked in, nothing is loaded from it).
    ServerDirectory { dir: String },
    /// Brought by the recipe's `rootfs.files` item `field`; `file` is its
    /// path inside the item (empty for the item itself).
    RecipeFile { field: String, file: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DataDirectory => f.write_str("cluster: data directory"),
            Reason::RecipeFile { field, file } if file.is_empty() => f.write_str(field),
            Reason::RecipeFile { field, file } => write!(f, "{field}: {file}"),
            Reason::ServerDirectory { dir } => {
                write!(f, "{dir} (the postmaster checks it exists at start)")
            }
            Reason::TimeZone {
                zone,
                link_to: None,
            } => write!(f, "timezone {zone}"),
            Reason::TimeZone {
                zone,
                link_to: Some(t),
            } => write!(f, "timezone {zone} (link to {t})"),
            Reason::TimeZoneAbbreviations {
                set,
                included_by: None,
            } => write!(
                f,
                "timezonesets/{set} (timezone_abbreviations, loaded at start)"
            ),
            Reason::TimeZoneAbbreviations {
                set,
                included_by: Some(by),
            } => write!(f, "timezonesets/{set} (included by timezonesets/{by})"),
            Reason::Extension {
                extension,
                file,
                role,
                needed_by,
            } => {
                write!(f, "extension {extension}")?;
                if let Some(n) = needed_by {
                    write!(f, " (required by {n})")?;
                }
                let role = match role {
                    ExtensionFile::Control => "control file",
                    ExtensionFile::InstallScript => "install script",
                    ExtensionFile::UpdateScript => "update script",
                };
                write!(f, ": {role} {file}")
            }
            Reason::TextSearch { file } => write!(f, "text search: tsearch_data/{file}"),
            Reason::Initdb { file } => write!(f, "initdb at first boot: {file}"),
            Reason::FirstBoot { file } => {
                write!(
                    f,
                    "first boot: {file} (initdb's steps, recorded at build time)"
                )
            }
            Reason::Identity { file } => {
                write!(
                    f,
                    "identity: {file} names the server's user (getpwuid at start)"
                )
            }
            Reason::Executable { file } => write!(
                f,
                "executable: {file} stands for the image (the server locates itself)"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionFile {
    /// `<name>.control`, or an auxiliary `<name>--<version>.control`.
    Control,
    /// `<name>--<version>.sql`.
    InstallScript,
    /// `<name>--<from>--<to>.sql`.
    UpdateScript,
}

/// One path in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Absolute path in the image.
    pub path: PathBuf,
    /// Where its contents (or, for a directory, its mode) come from. Never a
    /// symlink unless the image gets a symlink.
    pub source: PathBuf,
    /// The mode in the image; `None` keeps the source's.
    pub mode: Option<u32>,
    pub reason: Reason,
}

/// The closure, sorted by image path, each path once. Directories appear
/// only where they matter (the cluster's, which the server checks and which
/// may be empty); the archive adds the other parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The share directory's path in the image.
    pub share_dir: PathBuf,
    /// The cluster's path in the image, when one is shipped.
    pub data_dir: Option<PathBuf>,
    pub entries: Vec<Selected>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("layout: {0}")]
    Layout(String),
    #[error(
        "no PostgreSQL share directory in the installation {}: looked for {}\n  \
         is this the installation as laid out under the prefix {} (after `make install \
         DESTDIR=d`: d{}), and is that the prefix configure was given?",
        install.display(),
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "),
        prefix.display(),
        prefix.display()
    )]
    NoShareDir {
        install: PathBuf,
        prefix: PathBuf,
        looked: Vec<PathBuf>,
    },
    #[error(
        "time zone `{zone}` is not in {}{}",
        dir.display(),
        suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    TimeZoneNotFound {
        zone: String,
        dir: PathBuf,
        suggestion: Option<String>,
    },
    #[error("time zone `{zone}` names a directory of zones ({}), not a zone; e.g. `{example}`", path.display())]
    TimeZoneIsDirectory {
        zone: String,
        path: PathBuf,
        example: String,
    },
    #[error("time zone `{zone}`: {} is not a compiled zone file (no TZif header)", path.display())]
    NotTzif { zone: String, path: PathBuf },
    #[error(
        "abbreviation set `{set}`{} is not in {}",
        included_by.as_ref().map(|b| format!(" (included by `{b}`)")).unwrap_or_default(),
        dir.display()
    )]
    AbbreviationsNotFound {
        set: String,
        included_by: Option<String>,
        dir: PathBuf,
    },
    #[error("abbreviation set `{set}` (in {}): {why}", file.display())]
    BadAbbreviations {
        set: String,
        file: PathBuf,
        why: String,
    },
    #[error(
        "extension `{extension}` is not installed: {} does not exist \
         (was it built and installed with the server?)",
        control.display()
    )]
    ExtensionNotInstalled { extension: String, control: PathBuf },
    #[error(
        "extension `{extension}` has no install script ({extension}--<version>.sql) in {}",
        dir.display()
    )]
    ExtensionNoInstallScript { extension: String, dir: PathBuf },
    #[error("extension `{extension}`: {} has a bad line {line}: {text:?}", control.display())]
    BadControlFile {
        extension: String,
        control: PathBuf,
        line: usize,
        text: String,
    },
    #[error("text search files were asked for, but {} does not exist", dir.display())]
    NoTextSearch { dir: PathBuf },
    #[error(
        "initdb at first boot needs {}, which the install tree lacks",
        path.display()
    )]
    MissingInitdbInput { path: PathBuf },
    #[error("cluster.preinit is true, but no data directory was given to ship")]
    NoDataDir,
    #[error(
        "a data directory ({}) was given, but cluster.preinit is false: initdb runs at first boot",
        dir.display()
    )]
    UnexpectedDataDir { dir: PathBuf },
    #[error("{} is not a PostgreSQL data directory: {why}", dir.display())]
    NotADataDir { dir: PathBuf, why: String },
    #[error(
        "symlink {} points to {}, outside the data directory; the image would carry a dangling link",
        link.display(),
        target.display()
    )]
    SymlinkEscapes { link: PathBuf, target: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SelectError {
    let path = path.to_path_buf();
    move |source| SelectError::Io { what, path, source }
}

/// The share directory, on disk and in the image.
struct Share {
    disk: PathBuf,
    image: PathBuf,
}

/// Entries by image path; the first reason for a path wins.
#[derive(Default)]
struct Collector {
    entries: BTreeMap<PathBuf, Selected>,
}

impl Collector {
    fn add(&mut self, path: PathBuf, source: PathBuf, mode: Option<u32>, reason: Reason) {
        self.entries.entry(path.clone()).or_insert(Selected {
            path,
            source,
            mode,
            reason,
        });
    }

    fn share_file(&mut self, image: PathBuf, disk: PathBuf, reason: Reason) {
        self.add(image, disk, Some(SHARE_FILE_MODE), reason);
    }
}

/// Computes the closure. Everything it names exists now; the archive
/// re-checks kinds when it reads them.
pub fn select(input: &SelectInput<'_>) -> Result<Selection, SelectError> {
    let layout = input.layout;
    check_layout(layout)?;
    let choices = input.choices;
    let share = find_share(input.install, layout)?;
    if share.image.starts_with(&layout.data_dir) || layout.data_dir.starts_with(&share.image) {
        return Err(SelectError::Layout(format!(
            "the data directory {} and the share directory {} overlap",
            layout.data_dir.display(),
            share.image.display()
        )));
    }
    let mut out = Collector::default();

    timezone(&share, &choices.timezone, &mut out)?;
    match &choices.timezones {
        Some(list) => {
            for zone in list {
                timezone(&share, zone, &mut out)?;
            }
        }
        None => {
            let mut all = Vec::new();
            zone_names(&share.disk.join("timezone"), "", &mut all);
            for zone in all {
                // The tree may hold other files (tables, not zones). The
                // names are the tree's own: no lookup by name needed.
                match ship_zone(&share, &zone, Path::new(&zone), &mut out) {
                    Ok(()) | Err(SelectError::NotTzif { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    abbreviations(&share, &choices.timezone_abbreviations, &mut out)?;
    // Each extension with what brought it in; the recipe's own come first
    // so that an extension both listed and required is reported as listed.
    let mut todo: Vec<(String, Option<String>)> = choices
        .extensions
        .iter()
        .rev()
        .map(|e| (e.clone(), None))
        .collect();
    if !choices.preinit && !choices.extensions.iter().any(|e| e == PLPGSQL) {
        todo.insert(0, (PLPGSQL.to_owned(), Some("initdb".to_owned())));
    }
    let mut done = BTreeSet::new();
    while let Some((ext, needed_by)) = todo.pop() {
        if !done.insert(ext.clone()) {
            continue;
        }
        let requires = extension(&share, input.install, layout, &ext, needed_by, &mut out)?;
        for r in requires.into_iter().rev() {
            if !choices.extensions.contains(&r) {
                todo.push((r, Some(ext.clone())));
            }
        }
    }
    if choices.text_search {
        text_search(&share, &mut out)?;
    }
    if !choices.preinit {
        initdb_inputs(&share, &mut out)?;
    }

    let data_dir = match (choices.preinit, input.data_dir) {
        (true, None) => return Err(SelectError::NoDataDir),
        (false, Some(d)) => {
            return Err(SelectError::UnexpectedDataDir {
                dir: d.to_path_buf(),
            });
        }
        (false, None) => None,
        (true, Some(d)) => {
            data_directory(d, &layout.data_dir, choices.major, &mut out)?;
            Some(layout.data_dir.clone())
        }
    };

    Ok(Selection {
        share_dir: share.image,
        data_dir,
        entries: out.entries.into_values().collect(),
    })
}

fn is_clean_absolute(p: &Path) -> bool {
    let mut c = p.components();
    c.next() == Some(Component::RootDir)
        && c.clone().next().is_some()
        && c.all(|c| matches!(c, Component::Normal(_)))
}

fn check_layout(layout: &Layout) -> Result<(), SelectError> {
    for (what, p) in [
        ("prefix", &layout.prefix),
        ("data directory", &layout.data_dir),
    ] {
        if !is_clean_absolute(p) {
            return Err(SelectError::Layout(format!(
                "the {what} {} must be an absolute path below / without `.` or `..`",
                p.display()
            )));
        }
    }
    Ok(())
}

/// `image` (absolute) as a path under `root`.
fn under(root: &Path, image: &Path) -> PathBuf {
    root.join(image.strip_prefix("/").unwrap_or(image))
}

fn find_share(install: &Path, layout: &Layout) -> Result<Share, SelectError> {
    let expected = layout.share_dir();
    // The other convention too: a tree installed by another tool (or with
    // an explicit --datadir) may use it, and the server then looks there.
    let other = if expected.ends_with("postgresql") {
        layout.prefix.join("share")
    } else {
        expected.join("postgresql")
    };
    let mut looked = Vec::new();
    for image in [expected, other] {
        let rel = image.strip_prefix(&layout.prefix).unwrap_or(&image);
        let disk = install.join(rel);
        // timezonesets is installed by every version and every build.
        if disk.join("timezonesets").is_dir() {
            return Ok(Share { disk, image });
        }
        looked.push(disk);
    }
    Err(SelectError::NoShareDir {
        install: install.to_path_buf(),
        prefix: layout.prefix.clone(),
        looked,
    })
}

/// Sorted names in `dir`.
fn names(dir: &Path) -> Result<Vec<String>, SelectError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("cannot read directory", dir))? {
        let e = e.map_err(io_err("cannot read directory", dir))?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

/// Zone names under the tz tree, for suggestions.
fn zone_names(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(list) = names(dir) else { return };
    for n in list {
        let rel = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        let p = dir.join(&n);
        if p.is_dir() {
            zone_names(&p, &rel, out);
        } else {
            out.push(rel);
        }
    }
}

fn timezone(share: &Share, zone: &str, out: &mut Collector) -> Result<(), SelectError> {
    let tzdir = share.disk.join("timezone");
    let not_found = || {
        let mut all = Vec::new();
        zone_names(&tzdir, "", &mut all);
        SelectError::TimeZoneNotFound {
            zone: zone.to_owned(),
            dir: tzdir.clone(),
            suggestion: crate::recipe::closest(zone, all.iter().map(String::as_str))
                .map(str::to_owned),
        }
    };
    // The server matches each part of the name without regard to case
    // (pg_open_tzfile), so the image must hold the name as the tree spells
    // it; an exact match wins over a case-insensitive one.
    let mut rel = PathBuf::new();
    let mut dir = tzdir.clone();
    for part in zone.split('/') {
        let list = names(&dir).map_err(|_| not_found())?;
        let found = list
            .iter()
            .find(|n| *n == part)
            .or_else(|| list.iter().find(|n| n.eq_ignore_ascii_case(part)))
            .ok_or_else(not_found)?;
        rel.push(found);
        dir = dir.join(found);
    }
    ship_zone(share, zone, &rel, out)
}

/// Ships the zone file at `rel` in the tz tree (as the tree spells it),
/// which the recipe named `zone`: a TZif file, under its own name even
/// when it is a link.
fn ship_zone(
    share: &Share,
    zone: &str,
    rel: &Path,
    out: &mut Collector,
) -> Result<(), SelectError> {
    let tzdir = share.disk.join("timezone");
    let named = tzdir.join(rel);
    let meta = fs::metadata(&named).map_err(io_err("cannot read", &named))?;
    if meta.is_dir() {
        let mut inside = Vec::new();
        zone_names(&named, &rel.to_string_lossy(), &mut inside);
        return Err(SelectError::TimeZoneIsDirectory {
            zone: zone.to_owned(),
            path: named,
            example: inside.into_iter().next().unwrap_or_default(),
        });
    }
    let real = named
        .canonicalize()
        .map_err(io_err("cannot resolve", &named))?;
    let mut magic = [0u8; 4];
    let read_magic = fs::File::open(&real).and_then(|mut f| f.read_exact(&mut magic));
    if read_magic.is_err() || &magic != b"TZif" {
        return Err(SelectError::NotTzif {
            zone: zone.to_owned(),
            path: real,
        });
    }
    // Any symlink on the way (the name itself, or a linked directory)
    // makes the resolved path differ from the name's.
    let canon_tzdir = tzdir.canonicalize().unwrap_or(tzdir);
    let link_to = (real != canon_tzdir.join(rel)).then(|| match real.strip_prefix(&canon_tzdir) {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => real.display().to_string(),
    });
    out.share_file(
        share.image.join("timezone").join(rel),
        real,
        Reason::TimeZone {
            zone: rel.to_string_lossy().into_owned(),
            link_to,
        },
    );
    Ok(())
}

fn abbreviations(share: &Share, set: &str, out: &mut Collector) -> Result<(), SelectError> {
    let dir = share.disk.join("timezonesets");
    let mut seen = BTreeSet::new();
    abbreviation_set(share, &dir, set, None, 0, &mut seen, out)
}

fn abbreviation_set(
    share: &Share,
    dir: &Path,
    set: &str,
    included_by: Option<&str>,
    depth: usize,
    seen: &mut BTreeSet<String>,
    out: &mut Collector,
) -> Result<(), SelectError> {
    let file = dir.join(set);
    let bad = |why: String| SelectError::BadAbbreviations {
        set: set.to_owned(),
        file: file.clone(),
        why,
    };
    // Same rule as the server's: letters only, so no name leaves the directory.
    if set.is_empty() || !set.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(bad("set names are letters only".into()));
    }
    if !seen.insert(set.to_owned()) {
        // Already selected (a diamond, or a loop the server would reject by depth).
        return Ok(());
    }
    if depth > ABBREV_MAX_DEPTH {
        return Err(bad(format!(
            "@INCLUDEs nest deeper than the server allows ({ABBREV_MAX_DEPTH})"
        )));
    }
    if !file.is_file() {
        return Err(SelectError::AbbreviationsNotFound {
            set: set.to_owned(),
            included_by: included_by.map(str::to_owned),
            dir: dir.to_path_buf(),
        });
    }
    let text = fs::read(&file).map_err(io_err("cannot read", &file))?;
    let text = String::from_utf8_lossy(&text);
    out.share_file(
        share.image.join("timezonesets").join(set),
        file.clone(),
        Reason::TimeZoneAbbreviations {
            set: set.to_owned(),
            included_by: included_by.map(str::to_owned),
        },
    );
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("@INCLUDE"))
        {
            let Some(inc) = words.next() else {
                return Err(bad("an @INCLUDE line names no file".into()));
            };
            abbreviation_set(share, dir, inc, Some(set), depth + 1, seen, out)?;
        }
    }
    Ok(())
}

/// `name = value` lines of an extension control file (the server parses
/// them like postgresql.conf): the keys this stage needs, unquoted.
fn control_values(
    extension: &str,
    control: &Path,
) -> Result<BTreeMap<String, String>, SelectError> {
    let text = fs::read_to_string(control).map_err(io_err("cannot read", control))?;
    let mut values = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || SelectError::BadControlFile {
            extension: extension.to_owned(),
            control: control.to_path_buf(),
            line: i + 1,
            text: raw.to_owned(),
        };
        let split = line.find(['=', ' ', '\t']).ok_or_else(bad)?;
        let key = line[..split].trim().to_ascii_lowercase();
        let rest = line[split..].trim_start().trim_start_matches('=').trim();
        let value = if let Some(q) = rest.strip_prefix('\'') {
            let mut v = String::new();
            let mut chars = q.chars().peekable();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        v.push('\'');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    v.push(c);
                }
            }
            if !closed {
                return Err(bad());
            }
            v
        } else {
            rest.split('#').next().unwrap_or("").trim().to_owned()
        };
        values.insert(key, value);
    }
    Ok(values)
}

/// Selects one extension's files; returns the extensions it `requires`.
fn extension(
    share: &Share,
    install: &Path,
    layout: &Layout,
    name: &str,
    needed_by: Option<String>,
    out: &mut Collector,
) -> Result<Vec<String>, SelectError> {
    let reason = |file: &str, role| Reason::Extension {
        extension: name.to_owned(),
        file: file.to_owned(),
        role,
        needed_by: needed_by.clone(),
    };
    let ext_dir = share.disk.join("extension");
    let control_name = format!("{name}.control");
    let control = ext_dir.join(&control_name);
    if !control.is_file() {
        return Err(SelectError::ExtensionNotInstalled {
            extension: name.to_owned(),
            control,
        });
    }
    let values = control_values(name, &control)?;
    out.share_file(
        share.image.join("extension").join(&control_name),
        control.clone(),
        reason(&control_name, ExtensionFile::Control),
    );
    let requires: Vec<String> = values
        .get("requires")
        .map(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    // `directory` moves the scripts: relative to the share directory, or
    // absolute, which can be found only under the prefix (the image
    // mirrors the prefix, nothing else of the build machine).
    let (script_disk, script_image) = match values.get("directory").filter(|d| !d.is_empty()) {
        None => (ext_dir, share.image.join("extension")),
        Some(d) => {
            let d = Path::new(d);
            match (d.is_absolute(), d.strip_prefix(&layout.prefix)) {
                (false, _) => (share.disk.join(d), share.image.join(d)),
                (true, Ok(rel)) => (install.join(rel), d.to_path_buf()),
                (true, Err(_)) => {
                    return Err(SelectError::ExtensionNoInstallScript {
                        extension: name.to_owned(),
                        dir: d.to_path_buf(),
                    });
                }
            }
        }
    };
    let prefix = format!("{name}--");
    let mut installs = 0;
    for file in names(&script_disk)? {
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let role = if let Some(version) = rest.strip_suffix(".sql") {
            if version.contains("--") {
                ExtensionFile::UpdateScript
            } else {
                installs += 1;
                ExtensionFile::InstallScript
            }
        } else if rest.ends_with(".control") {
            ExtensionFile::Control
        } else {
            continue;
        };
        out.share_file(
            script_image.join(&file),
            script_disk.join(&file),
            reason(&file, role),
        );
    }
    if installs == 0 {
        return Err(SelectError::ExtensionNoInstallScript {
            extension: name.to_owned(),
            dir: script_disk,
        });
    }
    Ok(requires)
}

fn text_search(share: &Share, out: &mut Collector) -> Result<(), SelectError> {
    let dir = share.disk.join("tsearch_data");
    if !dir.is_dir() {
        return Err(SelectError::NoTextSearch { dir });
    }
    let mut files = Vec::new();
    walk(&dir, Path::new(""), &mut files)?;
    for (rel, is_dir) in files {
        if is_dir {
            continue;
        }
        out.share_file(
            share.image.join("tsearch_data").join(&rel),
            dir.join(&rel),
            Reason::TextSearch {
                file: rel.to_string_lossy().into_owned(),
            },
        );
    }
    Ok(())
}

fn initdb_inputs(share: &Share, out: &mut Collector) -> Result<(), SelectError> {
    for (file, required) in INITDB_INPUTS {
        let disk = share.disk.join(file);
        if !disk.is_file() {
            if *required {
                return Err(SelectError::MissingInitdbInput { path: disk });
            }
            continue;
        }
        out.share_file(
            share.image.join(file),
            disk,
            Reason::Initdb {
                file: (*file).to_owned(),
            },
        );
    }
    Ok(())
}

/// Every entry under `dir` (relative, sorted, parents first), with whether
/// it is a directory; symlinks are not followed.
fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<(), SelectError> {
    let here = dir.join(rel);
    for n in names(&here)? {
        let child = rel.join(&n);
        let meta = fs::symlink_metadata(dir.join(&child))
            .map_err(io_err("cannot read", &dir.join(&child)))?;
        let is_dir = meta.is_dir();
        out.push((child.clone(), is_dir));
        if is_dir {
            walk(dir, &child, out)?;
        }
    }
    Ok(())
}

fn data_directory(
    dir: &Path,
    image: &Path,
    major: u32,
    out: &mut Collector,
) -> Result<(), SelectError> {
    let not_data = |why: String| SelectError::NotADataDir {
        dir: dir.to_path_buf(),
        why,
    };
    if !dir.is_dir() {
        return Err(not_data("it is not a directory".into()));
    }
    let version_file = dir.join("PG_VERSION");
    let version = fs::read_to_string(&version_file)
        .map_err(|e| not_data(format!("cannot read PG_VERSION: {e}")))?;
    if version.trim() != major.to_string() {
        return Err(not_data(format!(
            "it was made by PostgreSQL {}, and the recipe builds {major}",
            version.trim()
        )));
    }

    out.add(
        image.to_path_buf(),
        dir.to_path_buf(),
        None,
        Reason::DataDirectory,
    );
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries)?;
    for (rel, _) in entries {
        if rel.components().count() == 1 && DATA_DIR_SKIP.iter().any(|s| rel.as_os_str() == *s) {
            continue;
        }
        let disk = dir.join(&rel);
        let meta = fs::symlink_metadata(&disk).map_err(io_err("cannot read", &disk))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&disk).map_err(io_err("cannot read link", &disk))?;
            if !link_stays_inside(&rel, &target) {
                return Err(SelectError::SymlinkEscapes { link: disk, target });
            }
        }
        out.add(image.join(&rel), disk, None, Reason::DataDirectory);
    }
    Ok(())
}

/// Whether a relative link at `link` (relative to the tree's root) resolves,
/// lexically, to somewhere inside the tree.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = link.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

const IDENTITY_FILES: [&str; 2] = ["passwd", "group"];

/// Write `/etc/passwd` and `/etc/group` naming `user` with the image's uid
/// and gid (`pgkraft_abi::identity`) into `dir`.
pub fn write_identity_files(dir: &Path, user: &str) -> std::io::Result<()> {
    use pgkraft_abi::identity::{GID, UID};
    let texts = [
        format!("{user}:x:{UID}:{GID}:PostgreSQL server:/data:/sbin/nologin\n"),
        format!("{user}:x:{GID}:\n"),
    ];
    for (name, text) in IDENTITY_FILES.iter().zip(texts) {
        fs::write(dir.join(name), text)?;
    }
    fs::write(dir.join(EXECUTABLE_STAND_IN), "")?;
    fs::create_dir_all(dir.join(LIB_STAND_IN))?;
    Ok(())
}

/// The empty directory [`write_identity_files`] makes for `lib/`.
const LIB_STAND_IN: &str = "lib";

/// The selection entry for the server's library directory: PostmasterMain
/// opens it at start (and refuses to start without it).
pub fn lib_dir_entry(dir: &Path, layout: &Layout) -> Selected {
    let path = layout.prefix.join("lib");
    Selected {
        reason: Reason::ServerDirectory {
            dir: path.display().to_string(),
        },
        path,
        source: dir.join(LIB_STAND_IN),
        mode: Some(0o755),
    }
}

/// The stand-in's file name in the directory [`write_identity_files`] fills.
const EXECUTABLE_STAND_IN: &str = "postgres";

/// Where the server binary would be installed: the image's argv[0].
pub fn executable_path(layout: &Layout) -> PathBuf {
    layout.prefix.join("bin").join("postgres")
}

/// The selection entry for the server binary's stand-in (mode 0755).
pub fn executable_entry(dir: &Path, layout: &Layout) -> Selected {
    let path = executable_path(layout);
    Selected {
        reason: Reason::Executable {
            file: path.display().to_string(),
        },
        path,
        source: dir.join(EXECUTABLE_STAND_IN),
        mode: Some(0o755),
    }
}

/// The selection entries for the files [`write_identity_files`] wrote.
pub fn identity_entries(dir: &Path) -> Vec<Selected> {
    IDENTITY_FILES
        .iter()
        .map(|name| Selected {
            path: PathBuf::from("/etc").join(name),
            source: dir.join(name),
            mode: Some(0o644),
            reason: Reason::Identity {
                file: format!("/etc/{name}"),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_dir_follows_the_makefiles() {
        let l = |p: &str| Layout {
            prefix: PathBuf::from(p),
            data_dir: PathBuf::from("/data"),
        };
        assert_eq!(
            l("/usr/local/pgsql").share_dir(),
            Path::new("/usr/local/pgsql/share")
        );
        assert_eq!(
            l("/opt/postgres-17").share_dir(),
            Path::new("/opt/postgres-17/share")
        );
        assert_eq!(l("/usr").share_dir(), Path::new("/usr/share/postgresql"));
    }

    #[test]
    fn links_inside_and_out() {
        assert!(link_stays_inside(Path::new("pg_wal"), Path::new("sub/wal")));
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/mnt/wal")));
    }

    #[test]
    fn clean_absolute_paths() {
        assert!(is_clean_absolute(Path::new("/data")));
        assert!(is_clean_absolute(Path::new("/usr/local/pgsql")));
        assert!(!is_clean_absolute(Path::new("/")));
        assert!(!is_clean_absolute(Path::new("data")));
        assert!(!is_clean_absolute(Path::new("/a/../b")));
    }

    #[test]
    fn reasons_read_well() {
        let r = Reason::TimeZone {
            zone: "UTC".into(),
            link_to: Some("Etc/UTC".into()),
        };
        assert_eq!(r.to_string(), "timezone UTC (link to Etc/UTC)");
        let r = Reason::Extension {
            extension: "plpgsql".into(),
            file: "plpgsql--1.0.sql".into(),
            role: ExtensionFile::InstallScript,
            needed_by: None,
        };
        assert_eq!(
            r.to_string(),
            "extension plpgsql: install script plpgsql--1.0.sql"
        );
        let r = Reason::Extension {
            extension: "cube".into(),
            file: "cube.control".into(),
            role: ExtensionFile::Control,
            needed_by: Some("earthdistance".into()),
        };
        assert_eq!(
            r.to_string(),
            "extension cube (required by earthdistance): control file cube.control"
        );
        assert_eq!(Reason::DataDirectory.to_string(), "cluster: data directory");
    }
}
