//! `kind: postgres`: the server's version, source and build options, its
//! settings, the cluster made at build time and the rootfs archive that
//! carries the files the running server reads. README.md documents every
//! field; keep it in step with this file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde_saphyr::Spanned;

use super::host_files::{HostFile, RawHostFile};
use super::{Checker, Diagnostic, RecipeError, error, is_env_name};
use crate::catalog::SourceSpec;

// ---------------------------------------------------------------------------
// What pgkraft can build: the catalogue (crate::catalog, below both the
// recipe and the build) holds these facts. The recipe asks them only here.

pub use crate::catalog::{PgPin, SUPPORTED_MAJORS};

/// The pinned source of a supported major version: used when a recipe
/// gives no `postgres.source`.
pub fn postgres_pin(major: u32) -> Option<&'static PgPin> {
    crate::catalog::pin(major)
}

/// Extensions that can be linked into the server of `major` (there is no
/// dlopen in the image, so an extension is usable only if it was linked in).
pub fn supported_extensions(major: u32) -> &'static [&'static str] {
    crate::catalog::supported_extensions(major)
}

/// Extensions PostgreSQL ships that an image cannot have, with why: each
/// needs a library the image does not carry, or a language runtime.
const UNLINKABLE_EXTENSIONS: &[(&str, &str)] = &[
    ("pgcrypto", "it needs OpenSSL"),
    ("sslinfo", "it needs OpenSSL"),
    (
        "uuid-ossp",
        "it needs libuuid (gen_random_uuid() is built in)",
    ),
    ("xml2", "it needs libxml2 and libxslt"),
    ("dblink", "it needs libpq"),
    ("postgres_fdw", "it needs libpq"),
    ("plperl", "it needs Perl"),
    ("plpython3u", "it needs Python"),
    ("pltcl", "it needs Tcl"),
];

// ---------------------------------------------------------------------------
// Defaults and limits.

/// `vm.memory_mib` of a postgres image when the recipe does not say.
pub const DEFAULT_POSTGRES_MEMORY_MIB: u32 = 256;
pub const DEFAULT_EXTENSIONS: &[&str] = &["plpgsql"];
pub const DEFAULT_ENCODING: &str = "UTF8";
pub const DEFAULT_LOCALE: &str = "C";
pub const DEFAULT_WAL_SEGSIZE_MIB: u32 = 1;
pub const WAL_SEGSIZE_MIB_RANGE: RangeInclusive<u32> = 1..=1024;
pub const DEFAULT_SUPERUSER: &str = "postgres";
pub const DEFAULT_PASSWORD_ENV: &str = "PGKRAFT_PASSWORD";
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// The abbreviation set PostgreSQL loads when `timezone_abbreviations` is not set.
pub const DEFAULT_TIMEZONE_ABBREVIATIONS: &str = "Default";
pub const DEFAULT_ZSTD_LEVEL: u32 = 19;
pub const ZSTD_LEVEL_RANGE: RangeInclusive<u32> = 1..=22;
/// Longest role name PostgreSQL keeps (NAMEDATALEN - 1).
const ROLE_NAME_MAX: usize = 63;

/// Server settings pgkraft writes itself, with what to use instead.
const RESERVED_SETTINGS: &[(&str, &str)] = &[
    (
        "timezone",
        "set `cluster.timezone` instead: it also picks the one time zone file the image carries",
    ),
    (
        "log_timezone",
        "set `cluster.timezone` instead: the server logs in the zone the image carries",
    ),
    (
        "data_directory",
        "pgkraft places the cluster (see the rootfs layout in README.md)",
    ),
    (
        "config_file",
        "pgkraft places the cluster's configuration inside it",
    ),
    ("hba_file", "pgkraft writes pg_hba.conf from `cluster.auth`"),
    (
        "ident_file",
        "pgkraft places the cluster's configuration inside it",
    ),
];

/// configure options that would move files away from where the image
/// expects them, with why.
const RESERVED_CONFIGURE: &[(&str, &str)] = &[
    (
        "--prefix",
        "pgkraft chooses the prefix: the image mirrors it (see the rootfs layout in README.md)",
    ),
    (
        "--exec-prefix",
        "pgkraft chooses the prefix: the image mirrors it",
    ),
    (
        "--datadir",
        "the share directory must be where the image puts it",
    ),
    (
        "--datarootdir",
        "the share directory must be where the image puts it",
    ),
    (
        "--with-system-tzdata",
        "the image carries PostgreSQL's own time zone files; there is no system tzdata in it",
    ),
];

/// Server encodings (those initdb accepts), in PostgreSQL's spelling.
const SERVER_ENCODINGS: &[&str] = &[
    "UTF8",
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN866",
    "WIN874",
    "WIN1250",
    "WIN1251",
    "WIN1252",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1256",
    "WIN1257",
    "WIN1258",
    "KOI8R",
    "KOI8U",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
];

/// Locales the image can honour: musl implements no others, and the image
/// carries no locale data.
pub const SUPPORTED_LOCALES: &[&str] = &["C", "POSIX", "C.UTF-8"];

// ---------------------------------------------------------------------------
// The checked recipe.

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PostgresSpec {
    /// Major version: one of [`SUPPORTED_MAJORS`].
    pub major: u32,
    /// The source tarball; a `path` in it is canonical.
    pub source: SourceSpec,
    /// True when `source` is the built-in pin rather than the recipe's.
    pub source_pinned: bool,
    pub configure: ConfigureSpec,
    /// Extensions linked into the server, sorted, each once.
    pub extensions: Vec<String>,
    /// Test modules (`catalog::test_modules`) linked into the server,
    /// sorted, each once; empty unless the recipe lists some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_modules: Vec<String>,
    /// `postgresql.conf` settings from the recipe: names lowercased (the
    /// server ignores case), values in canonical text (booleans `on`/`off`,
    /// numbers in decimal), unquoted. See [`PostgresSpec::server_settings`]
    /// for everything pgkraft writes.
    pub settings: BTreeMap<String, String>,
    pub cluster: ClusterSpec,
    pub rootfs: RootfsSpec,
}

impl PostgresSpec {
    /// Every setting pgkraft writes into the cluster's configuration: the
    /// recipe's, the time zone from `cluster.timezone`, and without
    /// `cluster.text_search` a default text search configuration that needs
    /// no files (initdb picks `english` for the C locale, whose stop words
    /// live in the tsearch_data the image then lacks).
    pub fn server_settings(&self) -> BTreeMap<String, String> {
        let mut s = self.settings.clone();
        s.insert("timezone".into(), self.cluster.timezone.clone());
        s.insert("log_timezone".into(), self.cluster.timezone.clone());
        if !self.cluster.text_search {
            s.entry("default_text_search_config".into())
                .or_insert_with(|| "pg_catalog.simple".into());
        }
        // Dynamic shared memory as System V segments: every process of the
        // image attaches one at the same address (one address space), where
        // a POSIX segment is a shared file mapping the libOS gives one
        // process at a time.
        s.entry("dynamic_shared_memory_type".into())
            .or_insert_with(|| "sysv".into());
        s
    }

    /// [`server_settings`](Self::server_settings) as `postgresql.conf`
    /// lines, sorted by name. Every value is quoted: the configuration
    /// parser accepts a quoted value for every type, so no value needs to
    /// be classified.
    pub fn postgresql_conf(&self) -> String {
        self.server_settings()
            .iter()
            .map(|(k, v)| format!("{k} = {}\n", quote_conf_value(v)))
            .collect()
    }

    /// The abbreviation set the server loads at start (a file under
    /// `share/timezonesets/`).
    pub fn timezone_abbreviations(&self) -> &str {
        self.settings
            .get("timezone_abbreviations")
            .map_or(DEFAULT_TIMEZONE_ABBREVIATIONS, String::as_str)
    }
}

/// A value in `postgresql.conf` syntax: single quotes, with quotes doubled
/// and backslashes escaped (the parser reads backslash escapes in quotes).
pub fn quote_conf_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigureSpec {
    pub optimize: Optimize,
    /// Extra `./configure` arguments, in recipe order.
    pub extra: Vec<String>,
}

/// The compiler's optimization level for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Optimize {
    #[serde(rename = "-O0")]
    O0,
    #[serde(rename = "-O1")]
    O1,
    #[serde(rename = "-O2")]
    O2,
    #[serde(rename = "-O3")]
    O3,
    #[serde(rename = "-Os")]
    Os,
    #[serde(rename = "-Og")]
    Og,
}

impl Optimize {
    pub const ALL: [Optimize; 6] = [
        Optimize::O0,
        Optimize::O1,
        Optimize::O2,
        Optimize::O3,
        Optimize::Os,
        Optimize::Og,
    ];

    /// The compiler flag.
    pub fn flag(self) -> &'static str {
        match self {
            Optimize::O0 => "-O0",
            Optimize::O1 => "-O1",
            Optimize::O2 => "-O2",
            Optimize::O3 => "-O3",
            Optimize::Os => "-Os",
            Optimize::Og => "-Og",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterSpec {
    /// Run initdb at build time (the image then boots straight into a
    /// ready cluster); otherwise initdb runs at first boot.
    pub preinit: bool,
    /// Server encoding, in PostgreSQL's spelling (`UTF8`).
    pub encoding: String,
    /// `C`, `POSIX` or `C.UTF-8`.
    pub locale: String,
    /// WAL segment size in MiB: a power of two.
    pub wal_segsize_mib: u32,
    pub superuser: String,
    pub auth: Auth,
    /// Time zone name, as in the tz database (`UTC`, `Europe/Paris`).
    pub timezone: String,
    /// `cluster.timezones`: the zones the image carries besides `timezone`;
    /// `None`: the whole tz database.
    pub timezones: Option<Vec<String>>,
    /// Ship `share/tsearch_data` (dictionaries and stop words).
    pub text_search: bool,
}

/// How clients authenticate (`pg_hba.conf`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "method")]
pub enum Auth {
    /// Password authentication. The superuser's password is read at build
    /// time from the environment variable `password_env`; when that is not
    /// set, the build generates one and writes it next to the image (0600).
    #[serde(rename = "scram-sha-256")]
    ScramSha256 { password_env: String },
    /// No authentication at all.
    #[serde(rename = "trust")]
    Trust,
}

impl Auth {
    /// The method's name in `pg_hba.conf` (and in the recipe).
    pub fn as_str(&self) -> &'static str {
        match self {
            Auth::ScramSha256 { .. } => "scram-sha-256",
            Auth::Trust => "trust",
        }
    }

    pub fn password_env(&self) -> Option<&str> {
        match self {
            Auth::ScramSha256 { password_env } => Some(password_env),
            Auth::Trust => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootfsSpec {
    pub compression: Compression,
    /// Host files and directories added to the image (`rootfs.files`), in
    /// recipe order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<HostFile>,
}

/// How the rootfs archive is stored in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd { level: u32 },
}

impl Compression {
    /// The archive's file name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Zstd { .. } => "tar.zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level } => write!(f, "zstd level {level}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The YAML shape.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    version: Spanned<RawVersion>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    configure: Option<RawConfigure>,
    #[serde(default)]
    extensions: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    test_modules: Vec<Spanned<String>>,
    #[serde(default)]
    settings: BTreeMap<String, Spanned<SettingValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    sha256: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigure {
    #[serde(default)]
    optimize: Option<Spanned<String>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default)]
    preinit: Option<Spanned<bool>>,
    #[serde(default)]
    encoding: Option<Spanned<String>>,
    #[serde(default)]
    locale: Option<Spanned<String>>,
    #[serde(default)]
    wal_segsize_mib: Option<Spanned<u32>>,
    #[serde(default)]
    superuser: Option<Spanned<String>>,
    #[serde(default)]
    auth: Option<Spanned<String>>,
    #[serde(default)]
    password_env: Option<Spanned<String>>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    timezones: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    text_search: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRootfs {
    #[serde(default)]
    compression: Option<Spanned<String>>,
    #[serde(default)]
    zstd_level: Option<Spanned<u32>>,
    #[serde(default)]
    files: Vec<RawHostFile>,
}

/// `version: 17` and `version: "17"` both mean major 17; anything else is
/// kept as written for the message.
enum RawVersion {
    Major(u32),
    Other(String),
}

impl<'de> Deserialize<'de> for RawVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawVersion, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a major version such as \"17\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawVersion, E> {
                Ok(u32::try_from(v)
                    .map_or_else(|_| RawVersion::Other(v.to_string()), RawVersion::Major))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawVersion, E> {
                Ok(RawVersion::Other(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawVersion, E> {
                Ok(RawVersion::Other(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawVersion, E> {
                let t = s.trim();
                Ok(match t.parse::<u32>() {
                    Ok(n) if t.bytes().all(|b| b.is_ascii_digit()) => RawVersion::Major(n),
                    _ => RawVersion::Other(s.to_owned()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A setting's value in canonical text. YAML gives strings, numbers and
/// booleans; each is turned into the text the server would read, so that
/// `on`, `yes` and `true` all become `on`.
struct SettingValue(String);

impl<'de> Deserialize<'de> for SettingValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SettingValue, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SettingValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SettingValue, E> {
                Ok(SettingValue(if v { "on" } else { "off" }.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SettingValue, E> {
                Ok(SettingValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SettingValue, E> {
                render_float(v)
                    .map(SettingValue)
                    .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SettingValue, E> {
                Ok(SettingValue(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decimal text the server's strtod reads back to the same value; the
/// exponent form only where plain decimals would run long.
fn render_float(v: f64) -> Option<String> {
    if !v.is_finite() {
        return None;
    }
    let plain = format!("{v}");
    Some(if plain.len() > 24 {
        format!("{v:e}")
    } else {
        plain
    })
}

// ---------------------------------------------------------------------------
// Checks.

/// Whether `name` is a server setting name: identifiers, with dots for
/// extension-defined settings (`plpgsql.variable_conflict`).
fn is_setting_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut c = part.chars();
            c.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

/// A time zone name as the tz database spells them: relative path of
/// letters, digits and `_+-`; no empty, `.` or `..` parts.
fn timezone_problem(tz: &str) -> Option<&'static str> {
    if tz.is_empty() {
        return Some("it is empty");
    }
    if tz.len() > 255 {
        return Some("it is longer than 255 characters");
    }
    if tz.starts_with('/') {
        return Some(
            "it is an absolute path; give a name from the tz database such as `Europe/Paris`",
        );
    }
    for part in tz.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Some("it has an empty, `.` or `..` part");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
        {
            return Some("only letters, digits, `_`, `+`, `-` and `/` appear in time zone names");
        }
    }
    None
}

/// Lowercase letters and digits only, as PostgreSQL compares encoding names.
fn clean_encoding(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn canonical_encoding(s: &str) -> Option<&'static str> {
    let c = clean_encoding(s);
    if c == "unicode" {
        return Some("UTF8");
    }
    SERVER_ENCODINGS
        .iter()
        .copied()
        .find(|e| clean_encoding(e) == c)
}

fn canonical_locale(s: &str) -> Option<&'static str> {
    match s {
        "C" | "POSIX" => SUPPORTED_LOCALES.iter().copied().find(|l| *l == s),
        _ if s.len() > 2 && s[..2].eq_ignore_ascii_case("c.") => {
            matches!(clean_encoding(&s[2..]).as_str(), "utf8").then_some("C.UTF-8")
        }
        _ => None,
    }
}

fn superuser_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > ROLE_NAME_MAX {
        Some("it is longer than 63 bytes (PostgreSQL would truncate it)")
    } else if name.starts_with("pg_") {
        Some("names starting with `pg_` are reserved for PostgreSQL's own roles")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some(
            "use lowercase letters, digits and `_`, starting with a letter (other names need quoting in every SQL statement)",
        )
    } else {
        None
    }
}

/// The major version a PostgreSQL tarball's file name announces
/// (`postgresql-15_15.18.orig.tar.bz2`, `postgresql-17.11.tar.bz2`).
fn major_in_file_name(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("postgresql-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn list(items: impl IntoIterator<Item = impl fmt::Display>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Checker<'_> {
    /// Points at where a `Spanned` came from.
    fn at_value<T>(
        &self,
        at: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> RecipeError {
        RecipeError::Invalid(Box::new(self.invalid(at, field, msg)))
    }

    pub(super) fn postgres(
        &self,
        raw: RawPostgres,
        cluster: Option<RawCluster>,
        rootfs: Option<RawRootfs>,
    ) -> Result<PostgresSpec, RecipeError> {
        let major = self.major(&raw.version)?;
        let (source, source_pinned) = self.postgres_source(major, &raw.version, raw.source)?;
        let configure = self.configure(raw.configure)?;
        let extensions = self.extensions(major, raw.extensions)?;
        let test_modules = self.test_modules(major, &raw.test_modules)?;
        let settings = self.settings(raw.settings)?;
        let cluster = self.cluster(cluster)?;
        let rootfs = self.rootfs(rootfs)?;
        Ok(PostgresSpec {
            major,
            source,
            source_pinned,
            configure,
            extensions,
            test_modules,
            settings,
            cluster,
            rootfs,
        })
    }

    fn major(&self, v: &Spanned<RawVersion>) -> Result<u32, RecipeError> {
        let supported = list(SUPPORTED_MAJORS);
        let latest = SUPPORTED_MAJORS.last().copied().unwrap_or(17);
        let written = match &v.value {
            RawVersion::Major(m) if SUPPORTED_MAJORS.contains(m) => return Ok(*m),
            RawVersion::Major(m) => m.to_string(),
            RawVersion::Other(s) => s.clone(),
        };
        let looks_minor = written
            .split_once('.')
            .and_then(|(m, _)| m.trim_matches('"').parse::<u32>().ok());
        let d = match looks_minor {
            Some(m) => self
                .invalid(
                    v,
                    "postgres.version",
                    format!(
                        "`{written}` is a release, but `version` takes the major version only \
                         (supported: {supported})"
                    ),
                )
                .fix(format!(
                    "write `version: \"{m}\"`; the release within it comes from `postgres.source`"
                )),
            None => self
                .invalid(
                    v,
                    "postgres.version",
                    format!(
                        "PostgreSQL `{written}` is not supported; supported major versions: {supported}"
                    ),
                )
                .fix(format!("use one of them, e.g. `version: \"{latest}\"`")),
        };
        Err(RecipeError::Invalid(Box::new(d)))
    }

    fn postgres_source(
        &self,
        major: u32,
        version: &Spanned<RawVersion>,
        raw: Option<RawSource>,
    ) -> Result<(SourceSpec, bool), RecipeError> {
        let Some(raw) = raw else {
            // Every supported major has a pin; `major` was checked against
            // the same list.
            return match postgres_pin(major) {
                Some(pin) => Ok((pin.spec(), true)),
                None => Err(self.at_value(
                    version,
                    "postgres.source",
                    format!("this pgkraft has no pinned source for PostgreSQL {major}; name one"),
                )),
            };
        };

        let sha = raw.sha256.value.trim().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RecipeError::Invalid(Box::new(
                self.invalid(
                    &raw.sha256,
                    "postgres.source.sha256",
                    format!(
                        "`{}` is not a sha256: expected 64 hex digits",
                        raw.sha256.value
                    ),
                )
                .fix("write the tarball's hash as `sha256sum` prints it, in quotes"),
            )));
        }
        if let (Some(_), Some(path)) = (&raw.url, &raw.path) {
            return Err(RecipeError::Invalid(Box::new(
                self.invalid(path, "postgres.source.path", "give `path` or `url`, not both")
                    .fix("keep `path` for a local file or `url` to download it; the sha256 pins it either way"),
            )));
        }
        if let Some(url) = &raw.url {
            let u = url.value.trim();
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(self.at_value(
                    url,
                    "postgres.source.url",
                    format!("`{u}` is not an http:// or https:// URL"),
                ));
            }
        }
        let path = match &raw.path {
            None => None,
            Some(p) => {
                let resolved = self.resolve(&p.value);
                let missing = |what: String| {
                    RecipeError::Invalid(Box::new(
                        self.invalid(
                            p,
                            "postgres.source.path",
                            format!("source tarball `{}` {what} (looked for {})", p.value, resolved.display()),
                        )
                        .fix(format!(
                            "paths are relative to the recipe's directory ({}); `ci/fetch-sources.sh` puts the pinned tarballs into sources/",
                            self.dir.display()
                        )),
                    ))
                };
                if !resolved.is_file() {
                    let what = if resolved.exists() {
                        "is not a regular file"
                    } else {
                        "does not exist"
                    };
                    return Err(missing(what.to_owned()));
                }
                let canon = resolved
                    .canonicalize()
                    .map_err(|e| missing(format!("cannot be opened: {e}")))?;
                if let Some(m) = major_in_file_name(&canon).filter(|m| *m != major) {
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            p,
                            "postgres.source.path",
                            format!("`{}` is a PostgreSQL {m} tarball, but `postgres.version` is {major}", p.value),
                        )
                        .fix(format!("point `path` at a PostgreSQL {major} tarball, or set `version: \"{m}\"`")),
                    )));
                }
                Some(canon)
            }
        };
        if let Some(url) = &raw.url
            && let Some(m) = major_in_file_name(Path::new(url.value.trim())).filter(|m| *m != major)
        {
            return Err(self.at_value(
                url,
                "postgres.source.url",
                format!(
                    "`{}` names a PostgreSQL {m} tarball, but `postgres.version` is {major}",
                    url.value
                ),
            ));
        }
        Ok((
            SourceSpec {
                url: raw.url.map(|u| u.value.trim().to_owned()),
                path,
                sha256: sha,
            },
            false,
        ))
    }

    fn configure(&self, raw: Option<RawConfigure>) -> Result<ConfigureSpec, RecipeError> {
        let Some(raw) = raw else {
            return Ok(ConfigureSpec {
                optimize: Optimize::O2,
                extra: Vec::new(),
            });
        };
        let optimize = match &raw.optimize {
            None => Optimize::O2,
            Some(o) => {
                let t = o.value.trim();
                match Optimize::ALL.into_iter().find(|x| x.flag() == t) {
                    Some(x) => x,
                    None => {
                        let flags: Vec<&str> = Optimize::ALL.iter().map(|x| x.flag()).collect();
                        let dashed = format!("-{}", t.trim_start_matches('-'));
                        let fix = match flags.iter().find(|f| f.eq_ignore_ascii_case(&dashed)) {
                            Some(f) => format!("did you mean `optimize: {f}`?"),
                            None => "use one of the flags listed; `-O2` is the default".to_owned(),
                        };
                        return Err(RecipeError::Invalid(Box::new(
                            self.invalid(
                                o,
                                "postgres.configure.optimize",
                                format!(
                                    "unknown optimization level `{t}`; expected one of {}",
                                    flags.join(", ")
                                ),
                            )
                            .fix(fix),
                        )));
                    }
                }
            }
        };
        let mut extra = Vec::with_capacity(raw.extra.len());
        for (i, a) in raw.extra.iter().enumerate() {
            let field = format!("postgres.configure.extra[{i}]");
            let v = a.value.as_str();
            if v.trim().is_empty() || v.contains(['\0', '\n']) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        a,
                        field,
                        "empty configure argument (or one with a NUL or newline)",
                    )
                    .fix("remove it; each list item is one argument such as --with-openssl"),
                )));
            }
            let opt = v.split_once('=').map_or(v, |(k, _)| k);
            if let Some((_, why)) = RESERVED_CONFIGURE.iter().find(|(k, _)| *k == opt) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(a, field, format!("`{opt}` cannot be set here: {why}"))
                        .fix("remove it"),
                )));
            }
            extra.push(v.to_owned());
        }
        Ok(ConfigureSpec { optimize, extra })
    }

    fn extensions(
        &self,
        major: u32,
        raw: Option<Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, RecipeError> {
        let Some(raw) = raw else {
            return Ok(DEFAULT_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect());
        };
        let supported = supported_extensions(major);
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for (i, e) in raw.iter().enumerate() {
            let field = format!("postgres.extensions[{i}]");
            let name = e.value.trim();
            if let Some((_, why)) = UNLINKABLE_EXTENSIONS.iter().find(|(n, _)| *n == name) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        e,
                        field,
                        format!(
                            "extension `{name}` cannot be linked into an image: {why}, \
                             and an image loads no libraries"
                        ),
                    )
                    .fix(format!("remove `{name}`")),
                )));
            }
            if !supported.contains(&name) {
                let fix = match error::closest(name, supported.iter().copied()) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("remove it; this pgkraft can link: {}", supported.join(", ")),
                };
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        e,
                        field,
                        format!(
                            "unknown extension `{name}`: the image can only use extensions linked into it, \
                             and for PostgreSQL {major} those are: {}",
                            supported.join(", ")
                        ),
                    )
                    .fix(fix),
                )));
            }
            if let Some(j) = raw[..i].iter().position(|p| p.value.trim() == name) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        e,
                        field,
                        format!("`{name}` is listed twice (also postgres.extensions[{j}])"),
                    )
                    .fix("list each extension once"),
                )));
            }
            out.push(name.to_owned());
        }
        out.sort();
        Ok(out)
    }

    fn test_modules(
        &self,
        major: u32,
        raw: &[Spanned<String>],
    ) -> Result<Vec<String>, RecipeError> {
        let known = crate::catalog::test_modules::names(major);
        let mut out: Vec<String> = Vec::with_capacity(raw.len());
        for (i, m) in raw.iter().enumerate() {
            let field = format!("postgres.test_modules[{i}]");
            let name = m.value.trim();
            if !known.contains(&name) {
                // `regress.so` is how the SQL names it; the table knows the
                // base name.
                let base = name.strip_suffix(".so").unwrap_or(name);
                let fix = match error::closest(base, known.iter().copied()) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("remove it, or use one of: {}", known.join(", ")),
                };
                let what = if supported_extensions(major).contains(&name) {
                    format!(
                        "`{name}` is an extension, not a test module: list it in \
                         postgres.extensions"
                    )
                } else {
                    format!(
                        "unknown test module `{name}`: the test modules of PostgreSQL {major} \
                         pgkraft can link in are: {}",
                        known.join(", ")
                    )
                };
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(m, field, what).fix(fix),
                )));
            }
            if let Some(j) = raw[..i].iter().position(|p| p.value.trim() == name) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        m,
                        field,
                        format!("`{name}` is listed twice (also postgres.test_modules[{j}])"),
                    )
                    .fix("list each test module once"),
                )));
            }
            out.push(name.to_owned());
        }
        out.sort();
        Ok(out)
    }

    fn settings(
        &self,
        raw: BTreeMap<String, Spanned<SettingValue>>,
    ) -> Result<BTreeMap<String, String>, RecipeError> {
        let mut out = BTreeMap::new();
        // Names as written, to report which two collide after lowercasing.
        let mut written: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in raw {
            let field = format!("postgres.settings.{k}");
            let name = k.to_ascii_lowercase();
            let key_error = |msg: String, fix: &str| {
                let l = v.referenced;
                // The key sits on its value's line; find it there for the caret.
                let col = self
                    .text
                    .lines()
                    .nth(usize::try_from(l.line()).unwrap_or(1).saturating_sub(1))
                    .and_then(|s| s.find(k.as_str()))
                    .map(|byte| byte as u64 + 1);
                RecipeError::Invalid(Box::new(
                    Diagnostic::new(self.shown, msg)
                        .at(self.text, l.line(), col.or(Some(l.column())))
                        .field(field.clone())
                        .fix(fix),
                ))
            };
            if !is_setting_name(&k) {
                return Err(key_error(
                    format!("`{k}` is not a setting name"),
                    "setting names are letters, digits and `_` (extension settings: `prefix.name`), as in postgresql.conf",
                ));
            }
            if let Some((_, why)) = RESERVED_SETTINGS.iter().find(|(r, _)| *r == name) {
                return Err(key_error(
                    format!("`{k}` cannot be set in postgres.settings"),
                    why,
                ));
            }
            if let Some(first) = written.get(&name) {
                return Err(key_error(
                    format!("`{k}` and `{first}` are the same setting (names ignore case)"),
                    "keep only one of them",
                ));
            }
            let value = v.value.0.clone();
            if value.contains(['\0', '\n', '\r']) {
                return Err(self.at_value(
                    &v,
                    field,
                    "a setting's value cannot contain a NUL or a line break",
                ));
            }
            if name == "timezone_abbreviations" && !value.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        &v,
                        field,
                        format!("`{value}` is not an abbreviation set: their names are letters only"),
                    )
                    .fix("use a file name from share/timezonesets such as `Default`, `Australia` or `India`"),
                )));
            }
            written.insert(name.clone(), k);
            out.insert(name, value);
        }
        Ok(out)
    }

    fn cluster(&self, raw: Option<RawCluster>) -> Result<ClusterSpec, RecipeError> {
        let raw = raw.unwrap_or(RawCluster {
            preinit: None,
            encoding: None,
            locale: None,
            wal_segsize_mib: None,
            superuser: None,
            auth: None,
            password_env: None,
            timezone: None,
            timezones: None,
            text_search: None,
        });

        let preinit = raw.preinit.as_ref().is_none_or(|p| p.value);

        let locale = match &raw.locale {
            None => DEFAULT_LOCALE.to_owned(),
            Some(l) => match canonical_locale(l.value.trim()) {
                Some(c) => c.to_owned(),
                None => {
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            l,
                            "cluster.locale",
                            format!(
                                "locale `{}` is not available in the image: musl implements only {} \
                                 and the image carries no locale data",
                                l.value,
                                SUPPORTED_LOCALES.join(", ")
                            ),
                        )
                        .fix("use `C` (the default: byte-order sorting) or `C.UTF-8`"),
                    )));
                }
            },
        };

        let encoding = match &raw.encoding {
            None => DEFAULT_ENCODING.to_owned(),
            Some(e) => match canonical_encoding(&e.value) {
                Some(c) => c.to_owned(),
                None => {
                    let fix = match error::closest(&e.value, SERVER_ENCODINGS.iter().copied()) {
                        Some(k) => format!("did you mean `encoding: {k}`?"),
                        None => "use `UTF8` (the default)".to_owned(),
                    };
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            e,
                            "cluster.encoding",
                            format!(
                                "`{}` is not a server encoding; PostgreSQL's are {}",
                                e.value,
                                SERVER_ENCODINGS.join(", ")
                            ),
                        )
                        .fix(fix),
                    )));
                }
            },
        };
        if locale == "C.UTF-8" && encoding != "UTF8" {
            let at = raw.encoding.as_ref().or(raw.locale.as_ref());
            if let Some(at) = at {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        at,
                        "cluster.encoding",
                        format!("locale C.UTF-8 needs encoding UTF8, not {encoding}"),
                    )
                    .fix("use `encoding: UTF8`, or `locale: C` (which works with every encoding)"),
                )));
            }
        }

        let wal_segsize_mib = match &raw.wal_segsize_mib {
            None => DEFAULT_WAL_SEGSIZE_MIB,
            Some(w) if WAL_SEGSIZE_MIB_RANGE.contains(&w.value) && w.value.is_power_of_two() => {
                w.value
            }
            Some(w) => {
                let v = w.value;
                let lower = if v > *WAL_SEGSIZE_MIB_RANGE.end() {
                    *WAL_SEGSIZE_MIB_RANGE.end()
                } else {
                    (v.max(1).next_power_of_two() / 2).max(1)
                };
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        w,
                        "cluster.wal_segsize_mib",
                        format!("{v} MiB is not a WAL segment size: expected a power of two from 1 to 1024"),
                    )
                    .fix(format!("use e.g. `wal_segsize_mib: {lower}`; 1 (the default) keeps the cluster small")),
                )));
            }
        };

        let superuser = match &raw.superuser {
            None => DEFAULT_SUPERUSER.to_owned(),
            Some(s) => match superuser_problem(&s.value) {
                None => s.value.clone(),
                Some(why) => {
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            s,
                            "cluster.superuser",
                            format!("invalid role name `{}`: {why}", s.value),
                        )
                        .fix("e.g. `superuser: postgres` (the default)"),
                    )));
                }
            },
        };

        let is_trust = match &raw.auth {
            None => false,
            Some(a) => match a.value.trim() {
                "scram-sha-256" => false,
                "trust" => true,
                other => {
                    let methods = ["scram-sha-256", "trust"];
                    let fix = match error::closest(other, methods) {
                        Some(k) => format!("did you mean `auth: {k}`?"),
                        None if other.eq_ignore_ascii_case("md5") || other == "password" => {
                            "use `auth: scram-sha-256`: it replaces md5 and plain passwords"
                                .to_owned()
                        }
                        None => "use `auth: scram-sha-256` (the default)".to_owned(),
                    };
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            a,
                            "cluster.auth",
                            format!("unknown authentication method `{other}`; expected scram-sha-256 or trust"),
                        )
                        .fix(fix),
                    )));
                }
            },
        };
        let auth = if is_trust {
            if let Some(p) = &raw.password_env {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        p,
                        "cluster.password_env",
                        "`auth: trust` uses no password, so `password_env` has no effect",
                    )
                    .fix("remove `password_env`, or use `auth: scram-sha-256`"),
                )));
            }
            Auth::Trust
        } else {
            let password_env = match &raw.password_env {
                None => DEFAULT_PASSWORD_ENV.to_owned(),
                Some(p) if is_env_name(&p.value) => p.value.clone(),
                Some(p) => {
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            p,
                            "cluster.password_env",
                            format!("`{}` is not an environment variable name: expected [A-Za-z_][A-Za-z0-9_]*", p.value),
                        )
                        .fix(format!("e.g. `password_env: {DEFAULT_PASSWORD_ENV}` (the default)")),
                    )));
                }
            };
            Auth::ScramSha256 { password_env }
        };

        let timezone = match &raw.timezone {
            None => DEFAULT_TIMEZONE.to_owned(),
            Some(t) => {
                match timezone_problem(t.value.trim()) {
                    None => t.value.trim().to_owned(),
                    Some(why) => {
                        return Err(RecipeError::Invalid(Box::new(
                        self.invalid(t, "cluster.timezone", format!("invalid time zone `{}`: {why}", t.value))
                            .fix("use a tz database name such as `UTC` (the default) or `Europe/Paris`"),
                    )));
                    }
                }
            }
        };

        let timezones = match &raw.timezones {
            None => None,
            Some(list) => {
                let mut zones = Vec::new();
                for t in list {
                    if let Some(why) = timezone_problem(t.value.trim()) {
                        return Err(RecipeError::Invalid(Box::new(
                            self.invalid(
                                t,
                                "cluster.timezones",
                                format!("invalid time zone `{}`: {why}", t.value),
                            )
                            .fix("list tz database names such as `UTC` or `Europe/Paris`, or leave the key out for all of them"),
                        )));
                    }
                    zones.push(t.value.trim().to_owned());
                }
                Some(zones)
            }
        };

        Ok(ClusterSpec {
            preinit,
            encoding,
            locale,
            wal_segsize_mib,
            superuser,
            auth,
            timezone,
            timezones,
            text_search: raw.text_search.unwrap_or(false),
        })
    }

    fn rootfs(&self, raw: Option<RawRootfs>) -> Result<RootfsSpec, RecipeError> {
        let default = RootfsSpec {
            compression: Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            },
            files: Vec::new(),
        };
        let Some(raw) = raw else {
            return Ok(default);
        };
        let zstd = match &raw.compression {
            None => true,
            Some(c) => match c.value.trim() {
                "zstd" => true,
                "none" => false,
                other => {
                    let fix = match error::closest(other, ["zstd", "none"]) {
                        Some(k) => format!("did you mean `compression: {k}`?"),
                        None => "use `zstd` (the default) or `none`".to_owned(),
                    };
                    return Err(RecipeError::Invalid(Box::new(
                        self.invalid(
                            c,
                            "rootfs.compression",
                            format!("unknown compression `{other}`; expected zstd or none"),
                        )
                        .fix(fix),
                    )));
                }
            },
        };
        let level = match &raw.zstd_level {
            None => DEFAULT_ZSTD_LEVEL,
            Some(l) if !zstd => {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        l,
                        "rootfs.zstd_level",
                        "`zstd_level` has no effect with `compression: none`",
                    )
                    .fix("remove `zstd_level`, or use `compression: zstd`"),
                )));
            }
            Some(l) if ZSTD_LEVEL_RANGE.contains(&l.value) => l.value,
            Some(l) => {
                return Err(RecipeError::Invalid(Box::new(
                    self.invalid(
                        l,
                        "rootfs.zstd_level",
                        format!("zstd level {} is out of range: expected 1 to 22", l.value),
                    )
                    .fix(format!(
                        "use e.g. `zstd_level: {DEFAULT_ZSTD_LEVEL}` (the default)"
                    )),
                )));
            }
        };
        let files = self.host_files(&raw.files)?;
        Ok(RootfsSpec {
            compression: if zstd {
                Compression::Zstd { level }
            } else {
                Compression::None
            },
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names() {
        assert!(is_setting_name("shared_buffers"));
        assert!(is_setting_name("plpgsql.variable_conflict"));
        assert!(is_setting_name("_x"));
        assert!(!is_setting_name(""));
        assert!(!is_setting_name("1x"));
        assert!(!is_setting_name("a..b"));
        assert!(!is_setting_name("a-b"));
        assert!(!is_setting_name("a b"));
    }

    #[test]
    fn timezones() {
        assert_eq!(timezone_problem("UTC"), None);
        assert_eq!(timezone_problem("America/Argentina/Buenos_Aires"), None);
        assert_eq!(timezone_problem("Etc/GMT+3"), None);
        assert_eq!(timezone_problem("America/Port-au-Prince"), None);
        assert!(timezone_problem("").is_some());
        assert!(timezone_problem("/etc/localtime").is_some());
        assert!(timezone_problem("../x").is_some());
        assert!(timezone_problem("Europe//Paris").is_some());
        assert!(timezone_problem("Europe/Paris ").is_some());
    }

    #[test]
    fn encodings_and_locales() {
        assert_eq!(canonical_encoding("UTF8"), Some("UTF8"));
        assert_eq!(canonical_encoding("utf-8"), Some("UTF8"));
        assert_eq!(canonical_encoding("Unicode"), Some("UTF8"));
        assert_eq!(canonical_encoding("latin1"), Some("LATIN1"));
        assert_eq!(canonical_encoding("iso-8859-5"), Some("ISO_8859_5"));
        assert_eq!(canonical_encoding("utf16"), None);
        assert_eq!(canonical_locale("C"), Some("C"));
        assert_eq!(canonical_locale("POSIX"), Some("POSIX"));
        assert_eq!(canonical_locale("C.utf8"), Some("C.UTF-8"));
        assert_eq!(canonical_locale("c.UTF-8"), Some("C.UTF-8"));
        assert_eq!(canonical_locale("en_US.UTF-8"), None);
        assert_eq!(canonical_locale("C.latin1"), None);
    }

    #[test]
    fn roles() {
        assert_eq!(superuser_problem("postgres"), None);
        assert_eq!(superuser_problem("app_admin2"), None);
        assert!(superuser_problem("pg_admin").is_some());
        assert!(superuser_problem("Admin").is_some());
        assert!(superuser_problem("1x").is_some());
        assert!(superuser_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn conf_quoting_and_floats() {
        assert_eq!(quote_conf_value("16MB"), "'16MB'");
        assert_eq!(quote_conf_value("it's"), "'it''s'");
        assert_eq!(quote_conf_value("a\\b"), "'a\\\\b'");
        assert_eq!(render_float(1.1).as_deref(), Some("1.1"));
        assert_eq!(render_float(0.5).as_deref(), Some("0.5"));
        assert_eq!(render_float(1e300).as_deref(), Some("1e300"));
        assert_eq!(render_float(f64::NAN), None);
    }

    #[test]
    fn tarball_majors() {
        assert_eq!(
            major_in_file_name(Path::new("/s/postgresql-15_15.18.orig.tar.bz2")),
            Some(15)
        );
        assert_eq!(
            major_in_file_name(Path::new("postgresql-17.11.tar.bz2")),
            Some(17)
        );
        assert_eq!(major_in_file_name(Path::new("pg.tar.bz2")), None);
    }

    #[test]
    fn pins_cover_supported_majors() {
        for m in SUPPORTED_MAJORS {
            let p = postgres_pin(*m).expect("every supported major has a pin entry");
            assert_eq!(major_in_file_name(Path::new(p.file_name)), Some(*m));
            assert!(p.sha256.len() == 64 && p.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
