//! Recipe v1: the declarative YAML file that says what goes into an image.
//! The reference for users is README.md; keep it in step with this file.
//!
//! Loading happens in two passes: serde maps the YAML onto `Raw*` structs
//! (which keep source positions and reject unknown keys), then [`load`]
//! checks values and resolves paths into the public [`Recipe`].

// YAML crate: serde-saphyr — actively maintained, pure safe Rust (no libyaml
// port), and its errors carry line:column for syntax, unknown-key and type
// errors; serde_yaml is deprecated and its forks still sit on unsafe-libyaml.

mod error;
pub mod host_files;
pub mod kconfig;
pub mod postgres;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub(crate) use error::closest;
pub use error::{Diagnostic, RecipeError};
pub use host_files::HostFile;
pub use kconfig::{KEYS, KernelConfig, KeyKind, KeySpec};
pub use postgres::{
    Auth, ClusterSpec, Compression, ConfigureSpec, DEFAULT_POSTGRES_MEMORY_MIB, Optimize, PgPin,
    PostgresSpec, RootfsSpec, SUPPORTED_MAJORS, postgres_pin, supported_extensions,
};

/// Values of `kind` this version understands.
pub const SUPPORTED_KINDS: &[&str] = &["program", "postgres"];
/// `vm.memory_mib` of a program image when the recipe does not say (see
/// [`DEFAULT_POSTGRES_MEMORY_MIB`] for postgres images).
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Accepted `vm.memory_mib`.
pub const MEMORY_MIB_RANGE: RangeInclusive<u32> = 16..=65536;
/// Longest accepted `name`.
pub const NAME_MAX_LEN: usize = 64;

/// A loaded, checked recipe. Every path in it is canonical.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipe {
    /// Canonical path of the recipe file.
    pub file: PathBuf,
    /// Image name; the image is written as `<out>/<name>.img` and the
    /// program sees it as `argv[0]`.
    pub name: String,
    pub kind: Kind,
    /// `argv[1..]` baked into the image.
    pub args: Vec<String>,
    /// Environment baked into the image; the program sees it in key order.
    pub env: BTreeMap<String, String>,
    pub libos: LibosSpec,
    pub vm: VmSpec,
    /// The recipe exactly as read, for the manifest.
    pub source_text: String,
}

impl Recipe {
    /// The program's full argument vector: the name, then `args`.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.name.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A C program linked with the library OS.
    Program(ProgramSpec),
    /// The PostgreSQL server linked with the library OS, with its cluster
    /// and runtime files in a rootfs archive. Boxed: it is several times
    /// the size of a program's spec.
    Postgres(Box<PostgresSpec>),
}

impl Kind {
    /// The `kind:` value that selects this variant.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Program(_) => "program",
            Kind::Postgres(_) => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramSpec {
    /// C files, canonical, in recipe order.
    pub sources: Vec<PathBuf>,
    /// Extra compiler flags, in recipe order.
    pub cflags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LibosSpec {
    /// The fragments the recipe names, canonical, in order. Empty when the
    /// recipe names none: `config` is then kernel-config/default.config as
    /// compiled into pgkraft ([`kconfig::DEFAULT_FRAGMENT`]).
    pub fragments: Vec<PathBuf>,
    /// The fragments applied over the defaults.
    pub config: KernelConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmSpec {
    /// Guest RAM in MiB.
    pub memory_mib: u32,
}

// ---------------------------------------------------------------------------
// The YAML shape. Spanned values remember where they were written so that
// checks made after parsing can still point at a line and column.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    program: Option<RawProgram>,
    #[serde(default)]
    postgres: Option<postgres::RawPostgres>,
    #[serde(default)]
    cluster: Option<postgres::RawCluster>,
    #[serde(default)]
    rootfs: Option<postgres::RawRootfs>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    libos: Option<RawLibos>,
    #[serde(default)]
    vm: Option<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    cflags: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibos {
    #[serde(default)]
    config: Option<Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    #[serde(default)]
    memory_mib: Option<Spanned<u32>>,
}

/// `config: a.config` or `config: [a.config, b.config]`. Hand-written rather
/// than `#[serde(untagged)]` so a wrong type says what is expected instead of
/// "data did not match any variant".
enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or a list of paths")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// What each field takes, for messages about wrong types and missing keys.
// Paths use `[]` for any list index and `*` for any mapping key.

pub(crate) struct FieldInfo {
    path: &'static str,
    expected: &'static str,
    example: &'static str,
}

impl FieldInfo {
    /// For other YAML files read with [`parse_yaml`] (a fleet file).
    pub(crate) const fn new(
        path: &'static str,
        expected: &'static str,
        example: &'static str,
    ) -> FieldInfo {
        FieldInfo {
            path,
            expected,
            example,
        }
    }
}

const FIELDS: &[FieldInfo] = &[
    FieldInfo {
        path: "",
        expected: "a mapping with at least `name` and `kind`",
        example: "name: hello\nkind: program\nprogram:\n  sources: [hello.c]",
    },
    FieldInfo {
        path: "name",
        expected: "a string of lowercase letters, digits and '-'",
        example: "name: hello",
    },
    FieldInfo {
        path: "kind",
        expected: "a string naming the kind of image (supported: program, postgres)",
        example: "kind: program",
    },
    FieldInfo {
        path: "program",
        expected: "a mapping with `sources` and optionally `cflags`",
        example: "program:\n  sources: [hello.c]",
    },
    FieldInfo {
        path: "program.sources",
        expected: "a list of C file paths",
        example: "sources: [main.c, util.c]",
    },
    FieldInfo {
        path: "program.sources[]",
        expected: "a file path (a string)",
        example: "sources: [main.c, util.c]",
    },
    FieldInfo {
        path: "program.cflags",
        expected: "a list of compiler flags",
        example: "cflags: [-O2, -DNDEBUG]",
    },
    FieldInfo {
        path: "program.cflags[]",
        expected: "a compiler flag (a string)",
        example: "cflags: [-O2, -DNDEBUG]",
    },
    FieldInfo {
        path: "postgres",
        expected: "a mapping with `version` and optionally `source`, `configure`, `extensions`, `test_modules`, `settings`",
        example: "postgres:\n  version: \"17\"",
    },
    FieldInfo {
        path: "postgres.version",
        expected: "a PostgreSQL major version (15, 17 or 18)",
        example: "version: \"17\"",
    },
    FieldInfo {
        path: "postgres.source",
        expected: "a mapping with `sha256` and `path` or `url`",
        example: "source:\n  path: ../sources/postgresql-17_17.11.orig.tar.bz2\n  sha256: \"<sha256sum of the file>\"",
    },
    FieldInfo {
        path: "postgres.source.path",
        expected: "a file path (a string)",
        example: "path: ../sources/postgresql-17_17.11.orig.tar.bz2",
    },
    FieldInfo {
        path: "postgres.source.url",
        expected: "an http:// or https:// URL (a string)",
        example: "url: https://ftp.postgresql.org/pub/source/v17.11/postgresql-17.11.tar.bz2",
    },
    FieldInfo {
        path: "postgres.source.sha256",
        expected: "64 hex digits (a string)",
        example: "sha256: \"11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4\"",
    },
    FieldInfo {
        path: "postgres.configure",
        expected: "a mapping with `optimize` and `extra`",
        example: "configure:\n  optimize: -O2\n  extra: []",
    },
    FieldInfo {
        path: "postgres.configure.optimize",
        expected: "one of -O0, -O1, -O2, -O3, -Os, -Og",
        example: "optimize: -O2",
    },
    FieldInfo {
        path: "postgres.configure.extra",
        expected: "a list of ./configure arguments",
        example: "extra: [--enable-debug]",
    },
    FieldInfo {
        path: "postgres.configure.extra[]",
        expected: "a ./configure argument (a string)",
        example: "extra: [--enable-debug]",
    },
    FieldInfo {
        path: "postgres.extensions",
        expected: "a list of extension names",
        example: "extensions: [plpgsql]",
    },
    FieldInfo {
        path: "postgres.extensions[]",
        expected: "an extension name (a string)",
        example: "extensions: [plpgsql]",
    },
    FieldInfo {
        path: "postgres.test_modules",
        expected: "a list of test module names (regress, autoinc, refint, insert_username, moddatetime)",
        example: "test_modules: [regress, autoinc, refint]",
    },
    FieldInfo {
        path: "postgres.test_modules[]",
        expected: "a test module name (a string)",
        example: "test_modules: [regress, autoinc, refint]",
    },
    FieldInfo {
        path: "postgres.settings",
        expected: "a mapping of setting: value, as in postgresql.conf",
        example: "settings:\n  shared_buffers: 16MB\n  max_connections: 20",
    },
    FieldInfo {
        path: "postgres.settings.*",
        expected: "a string, number or boolean (quote values YAML would read otherwise, such as '*')",
        example: "listen_addresses: \"*\"",
    },
    FieldInfo {
        path: "cluster",
        expected: "a mapping of cluster options (preinit, encoding, locale, wal_segsize_mib, superuser, auth, password_env, timezone, text_search)",
        example: "cluster:\n  timezone: UTC",
    },
    FieldInfo {
        path: "cluster.preinit",
        expected: "true or false",
        example: "preinit: true",
    },
    FieldInfo {
        path: "cluster.encoding",
        expected: "a server encoding name (a string)",
        example: "encoding: UTF8",
    },
    FieldInfo {
        path: "cluster.locale",
        expected: "C, POSIX or C.UTF-8",
        example: "locale: C",
    },
    FieldInfo {
        path: "cluster.wal_segsize_mib",
        expected: "a power of two from 1 to 1024",
        example: "wal_segsize_mib: 1",
    },
    FieldInfo {
        path: "cluster.superuser",
        expected: "a role name (a string)",
        example: "superuser: postgres",
    },
    FieldInfo {
        path: "cluster.auth",
        expected: "scram-sha-256 or trust",
        example: "auth: scram-sha-256",
    },
    FieldInfo {
        path: "cluster.password_env",
        expected: "an environment variable name (a string)",
        example: "password_env: PGKRAFT_PASSWORD",
    },
    FieldInfo {
        path: "cluster.timezone",
        expected: "a time zone name (a string)",
        example: "timezone: Europe/Paris",
    },
    FieldInfo {
        path: "cluster.text_search",
        expected: "true or false",
        example: "text_search: false",
    },
    FieldInfo {
        path: "rootfs",
        expected: "a mapping with `compression`, `zstd_level` and `files`",
        example: "rootfs:\n  compression: zstd\n  zstd_level: 19",
    },
    FieldInfo {
        path: "rootfs.files",
        expected: "a list of mappings with `from` (a host path) and `to` (an absolute path in the image)",
        example: "files:\n  - from: data/\n    to: /srv/data",
    },
    FieldInfo {
        path: "rootfs.files[]",
        expected: "a mapping with `from` and `to`",
        example: "- from: data/\n  to: /srv/data",
    },
    FieldInfo {
        path: "rootfs.files[].from",
        expected: "a host file or directory, relative to the recipe (a string)",
        example: "from: data/",
    },
    FieldInfo {
        path: "rootfs.files[].to",
        expected: "an absolute path in the image (a string)",
        example: "to: /srv/data",
    },
    FieldInfo {
        path: "rootfs.compression",
        expected: "zstd or none",
        example: "compression: zstd",
    },
    FieldInfo {
        path: "rootfs.zstd_level",
        expected: "a whole number from 1 to 22",
        example: "zstd_level: 19",
    },
    FieldInfo {
        path: "args",
        expected: "a list of strings",
        example: "args: [hello, world]",
    },
    FieldInfo {
        path: "args[]",
        expected: "a string",
        example: "args: [hello, \"two words\"]",
    },
    FieldInfo {
        path: "env",
        expected: "a mapping of NAME: value",
        example: "env:\n  GREETING: hi",
    },
    FieldInfo {
        path: "env.*",
        expected: "a string (quote it if it looks like something else)",
        example: "GREETING: \"hi there\"",
    },
    FieldInfo {
        path: "libos",
        expected: "a mapping with `config`",
        example: "libos:\n  config: ../kernel-config/default.config",
    },
    FieldInfo {
        path: "libos.config",
        expected: "a path or a list of paths to kernel-config fragments",
        example: "config: [../kernel-config/default.config, ../kernel-config/debug.config]",
    },
    FieldInfo {
        path: "libos.config[]",
        expected: "a path (a string)",
        example: "config: [../kernel-config/default.config, ../kernel-config/debug.config]",
    },
    FieldInfo {
        path: "vm",
        expected: "a mapping with `memory_mib`",
        example: "vm:\n  memory_mib: 64",
    },
    FieldInfo {
        path: "vm.memory_mib",
        expected: "a whole number of MiB from 16 to 65536",
        example: "memory_mib: 64",
    },
];

fn field_info<'f>(fields: &'f [FieldInfo], path: &str) -> Option<&'f FieldInfo> {
    let mut norm = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                norm.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => norm.push(c),
        }
    }
    if norm.starts_with("env.") {
        norm = "env.*".to_owned();
    }
    if norm.starts_with("postgres.settings.") {
        norm = "postgres.settings.*".to_owned();
    }
    fields.iter().find(|f| f.path == norm)
}

/// serde_path_to_error's path, tidied for people: the root is empty, and the
/// `value` step that [`Spanned`] adds (no recipe field is called `value`;
/// only an env variable could be) and the `?` of unknown positions are dropped.
fn tidy_path(path: &str, spanned: bool) -> String {
    let segs: Vec<&str> = path
        .split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect();
    let in_env = segs.first() == Some(&"env");
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        // In `env`, step 1 is the variable's name, which may well be `value`.
        let spanned_step =
            spanned && (*seg == "value" || seg.starts_with("value[")) && !(in_env && i == 1);
        let seg = if spanned_step {
            &seg["value".len()..]
        } else {
            seg
        };
        if seg.is_empty() {
            continue;
        }
        if !out.is_empty() && !seg.starts_with('[') {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Turns a YAML/serde error into a diagnostic that says what to change.
fn yaml_diagnostic(
    file: &Path,
    text: &str,
    path: Option<&str>,
    err: &serde_saphyr::Error,
    what: &str,
    fields: &[FieldInfo],
) -> Diagnostic {
    use serde_saphyr::{Error as E, MessageFormatter, UserMessageFormatter};

    let err = err.without_snippet();
    // Only the recipe's own types use Spanned (whose `value` step is noise).
    let path = tidy_path(path.unwrap_or(""), !fields.is_empty());
    let (line, column) = err
        .location()
        .map_or((0, None), |l| (l.line(), Some(l.column())));
    let library_says: String = UserMessageFormatter
        .format_message(err)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let d = Diagnostic::new(file, String::new()).at(text, line, column);

    match err {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let parent = path
                .strip_suffix(field.as_str())
                .map(|p| p.trim_end_matches('.'))
                .unwrap_or("")
                .to_owned();
            let listed = expected
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let here = if parent.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("under `{parent}`")
            };
            let see_docs = if fields.is_empty() {
                ""
            } else {
                " (see README.md)"
            };
            let fix = if let Some(k) = error::closest(field, expected.iter().copied()) {
                format!("did you mean `{k}`? rename `{field}` to `{k}`")
            } else if let Some(elsewhere) = key_elsewhere(fields, field) {
                let (parent, leaf) = elsewhere.rsplit_once('.').unwrap_or(("", elsewhere));
                format!("did you mean `{leaf}` under `{parent}:`?{see_docs}")
            } else {
                format!("remove `{field}`, or use one of the keys listed{see_docs}")
            };
            Diagnostic {
                message: format!("unknown key `{field}`; the keys {here} are {listed}"),
                ..d
            }
            .field(join(&parent, field))
            .fix(fix)
        }
        E::SerdeMissingField { field, .. } => {
            let full = join(&path, field);
            let fix = field_info(fields, &full).map(|f| {
                let where_ = if path.is_empty() {
                    "at the top level".to_owned()
                } else {
                    format!("under `{path}`")
                };
                format!("add {where_}:\n{}", f.example)
            });
            // At the top level the library's position is just wherever the
            // mapping ended, which would point at an unrelated line.
            let d = if path.is_empty() {
                Diagnostic::new(file, "")
            } else {
                d
            };
            Diagnostic {
                message: format!("missing required key `{field}`"),
                ..d
            }
            .field(full)
            .fix_opt(fix)
        }
        E::DuplicateMappingKey { key, .. } => Diagnostic {
            message: match key {
                Some(k) => format!("key `{k}` appears twice in the same mapping"),
                None => "a key appears twice in the same mapping".to_owned(),
            },
            ..d
        }
        .fix("keep only one of them"),
        E::MultipleDocuments { .. } => Diagnostic {
            message: format!("a {what} is a single YAML document, but a second one starts here"),
            ..d
        }
        .fix(format!(
            "remove the `---` line (and anything after it that is not part of this {what})"
        )),
        E::ExternalMessage { .. } | E::Eof { .. } | E::IndentationError { .. } => {
            if text
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                return Diagnostic {
                    message: format!("the {what} is empty"),
                    ..Diagnostic::new(file, "")
                }
                .fix_opt(
                    field_info(fields, "").map(|f| format!("start from this:\n{}", f.example)),
                );
            }
            Diagnostic {
                message: format!("YAML syntax error: {library_says}"),
                ..d
            }
            .field(path)
            .fix(
                "check this line and the one before it: indent with spaces (not tabs), put `: ` \
                 after each key, and close every bracket and quote",
            )
        }
        E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. }
        | E::SerdeInvalidLength { .. }
        | E::Unexpected { .. }
        | E::InvalidScalar { .. }
        | E::NullIntoString { .. }
        | E::InvalidBooleanStrict { .. } => match field_info(fields, &path) {
            // A value of the wrong type for a known field: say what the
            // field takes, in recipe terms rather than Rust ones.
            Some(info) => Diagnostic {
                message: format!(
                    "expected {}, found {}",
                    info.expected,
                    found_at(text, line, past_key(text, line, column.unwrap_or(0), &path))
                ),
                ..d
            }
            .field(path)
            .fix(format!("write it like this:\n{}", info.example)),
            None => Diagnostic {
                message: library_says,
                ..d
            }
            .field(path),
        },
        _ => Diagnostic {
            message: library_says,
            ..d
        }
        .field(path),
    }
}

/// How the value at `line:column` looks, for "expected X, found Y". A rough
/// reading of the YAML text is enough here: it only decorates a message
/// whose position already comes from the parser.
fn found_at(text: &str, line: u64, column: u64) -> String {
    let Some(src) = usize::try_from(line.saturating_sub(1))
        .ok()
        .and_then(|i| text.lines().nth(i))
    else {
        return "something else".to_owned();
    };
    let rest: String = src
        .chars()
        .skip(usize::try_from(column.saturating_sub(1)).unwrap_or(0))
        .collect();
    let rest = rest.trim_end();
    let plain_end = rest
        .find([',', ']', '}'])
        .into_iter()
        .chain(rest.find(" #"))
        .min()
        .unwrap_or(rest.len());
    let plain = rest[..plain_end].trim();
    // A null right after `key:` is reported at the colon.
    if rest.trim_start_matches(':').trim().is_empty() {
        "nothing (null)".to_owned()
    } else if rest.starts_with('[') || rest.starts_with("- ") || rest == "-" {
        "a list".to_owned()
    } else if rest.starts_with('{') || plain.contains(": ") || plain.ends_with(':') {
        "a mapping".to_owned()
    } else if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = rest[1..].find(q).map_or(rest.len(), |i| i + 2);
        format!("the string {}", &rest[..end])
    } else if plain.is_empty() || plain == "~" || plain == "null" {
        "nothing (null)".to_owned()
    } else {
        format!("`{plain}`")
    }
}

/// The column of the value when `line:column` points at the key of the
/// field `path` (`key: value`), as for values read through
/// `deserialize_any` (postgres.settings); otherwise `column` itself.
fn past_key(text: &str, line: u64, column: u64, path: &str) -> u64 {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let Some(src) = usize::try_from(line.saturating_sub(1))
        .ok()
        .and_then(|i| text.lines().nth(i))
    else {
        return column;
    };
    let start = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
    let rest: String = src.chars().skip(start).collect();
    match rest.strip_prefix(leaf).and_then(|r| r.strip_prefix(':')) {
        Some(after) if !leaf.is_empty() => {
            let spaces = after.chars().take_while(|c| *c == ' ').count();
            column + (leaf.chars().count() + 1 + spaces) as u64
        }
        _ => column,
    }
}

/// A recipe key named like `typed` that lives at some other level, e.g.
/// `memory_mib` written at the top level.
fn key_elsewhere<'f>(fields: &'f [FieldInfo], typed: &str) -> Option<&'f str> {
    let candidates = fields
        .iter()
        .map(|f| f.path)
        .filter(|p| !p.is_empty() && !p.contains(['[', '*']));
    let leaves: Vec<(&str, &str)> = candidates
        .map(|p| (p.rsplit('.').next().unwrap_or(p), p))
        .collect();
    let leaf = error::closest(typed, leaves.iter().map(|(l, _)| *l))?;
    leaves.iter().find(|(l, _)| *l == leaf).map(|(_, p)| *p)
}

// ---------------------------------------------------------------------------

/// Reads, parses and checks the recipe at `path`, resolves every path in it
/// relative to the recipe's directory, and loads its kernel-config fragments.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let (text, file) = read(path, "recipe")?;
    let raw: RawRecipe = parse_yaml(path, &text, "recipe", FIELDS)?;
    Checker {
        shown: path,
        dir: file.parent().unwrap_or(Path::new("/")).to_path_buf(),
        text: &text,
    }
    .check(raw, file.clone())
}

/// Checks a recipe's text as if it were the file `shown` in directory
/// `dir` (where its relative paths lead): the recipe an image embeds.
pub fn load_text(shown: &Path, text: &str, dir: &Path) -> Result<Recipe, RecipeError> {
    let raw: RawRecipe = parse_yaml(shown, text, "recipe", FIELDS)?;
    Checker {
        shown,
        dir: dir.to_path_buf(),
        text,
    }
    .check(raw, shown.to_path_buf())
}

/// Loads any other YAML file pgkraft reads (test VM definitions, …) into `T`
/// with the recipe's error reporting: file:line:column, field path, the
/// closest known key for a misspelt one. `what` names the kind of file in
/// messages ("test VM definition"). Give `T` `#[serde(deny_unknown_fields)]`
/// for unknown keys to be caught.
pub fn load_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<T, RecipeError> {
    let (text, _) = read(path, what)?;
    parse_yaml(path, &text, what, &[])
}

/// The file's text and its canonical path.
pub(crate) fn read(path: &Path, what: &str) -> Result<(String, PathBuf), RecipeError> {
    let read_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            RecipeError::NotFound {
                path: path.to_path_buf(),
                what: what.to_owned(),
            }
        } else {
            RecipeError::Read {
                path: path.to_path_buf(),
                what: what.to_owned(),
                source,
            }
        }
    };
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let file = path.canonicalize().map_err(read_err)?;
    Ok((text, file))
}

pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    shown: &Path,
    text: &str,
    what: &str,
    fields: &[FieldInfo],
) -> Result<T, RecipeError> {
    let mut err_path: Option<String> = None;
    // The path must be taken out through the closure: returning an error
    // value as Ok would make the library go on reading and report the
    // unread rest of the document as a second document.
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            err_path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        RecipeError::Parse(Box::new(yaml_diagnostic(
            shown,
            text,
            err_path.as_deref(),
            &e,
            what,
            fields,
        )))
    })
}

/// Semantic checks, with what is needed to point at the recipe.
struct Checker<'a> {
    /// The recipe path as the user gave it (messages use this).
    shown: &'a Path,
    /// Canonical directory of the recipe (relative paths start here).
    dir: PathBuf,
    text: &'a str,
}

impl Checker<'_> {
    fn invalid<T>(
        &self,
        at: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Diagnostic {
        let l = at.referenced;
        Diagnostic::new(self.shown, msg)
            .at(self.text, l.line(), Some(l.column()))
            .field(field)
    }

    fn check(&self, raw: RawRecipe, file: PathBuf) -> Result<Recipe, RecipeError> {
        let bad = |d: Diagnostic| RecipeError::Invalid(Box::new(d));

        let name = raw.name.value.clone();
        if let Some(why) = name_problem(&name) {
            let suggestion = suggest_name(&name);
            let fix = if suggestion.is_empty() {
                "use lowercase letters, digits and '-', starting with a letter or digit, e.g. `name: hello`".to_owned()
            } else {
                format!("use lowercase letters, digits and '-', e.g. `name: {suggestion}`")
            };
            return Err(bad(self
                .invalid(
                    &raw.name,
                    "name",
                    format!("invalid image name `{name}`: {why}"),
                )
                .fix(fix)));
        }

        let kind_str = raw.kind.value.as_str();
        if !SUPPORTED_KINDS.contains(&kind_str) {
            let fix = match error::closest(kind_str, SUPPORTED_KINDS.iter().copied()) {
                Some(k) => format!("did you mean `kind: {k}`?"),
                None => format!(
                    "use `kind: program` or `kind: postgres` (supported: {})",
                    SUPPORTED_KINDS.join(", ")
                ),
            };
            return Err(bad(self
                .invalid(
                    &raw.kind,
                    "kind",
                    format!(
                        "unknown kind `{kind_str}`; supported kinds: {}",
                        SUPPORTED_KINDS.join(", ")
                    ),
                )
                .fix(fix)));
        }

        // A section of the other kind is refused rather than ignored: it
        // would otherwise look as if it had an effect.
        let other_kind_section = |section: &str, kind: &str| {
            let (line, column) = top_level_key_location(self.text, section);
            bad(Diagnostic::new(
                self.shown,
                format!("`{section}` belongs to `kind: {kind}` recipes, and this one is `kind: {kind_str}`"),
            )
            .at(self.text, line, column)
            .field(section)
            .fix(format!("remove the `{section}` section, or set `kind: {kind}`")))
        };
        let kind = if kind_str == "postgres" {
            if raw.program.is_some() {
                return Err(other_kind_section("program", "program"));
            }
            if let Some(a) = raw.args.first() {
                return Err(bad(self
                    .invalid(
                        a,
                        "args",
                        "`args` are a program's arguments; a postgres image is configured through `postgres.settings`",
                    )
                    .fix("remove `args`; put server settings under `postgres.settings`")));
            }
            let Some(pg) = raw.postgres else {
                return Err(bad(self
                    .invalid(
                        &raw.kind,
                        "postgres",
                        "`kind: postgres` needs a `postgres` section, and there is none",
                    )
                    .fix("add at the top level:\npostgres:\n  version: \"17\"")));
            };
            Kind::Postgres(Box::new(self.postgres(pg, raw.cluster, raw.rootfs)?))
        } else {
            for (section, present) in [
                ("postgres", raw.postgres.is_some()),
                ("cluster", raw.cluster.is_some()),
                ("rootfs", raw.rootfs.is_some()),
            ] {
                if present {
                    return Err(other_kind_section(section, "postgres"));
                }
            }
            let Some(program) = raw.program else {
                return Err(bad(self
                    .invalid(
                        &raw.kind,
                        "program",
                        "`kind: program` needs a `program` section, and there is none",
                    )
                    .fix("add at the top level:\nprogram:\n  sources: [main.c]")));
            };
            Kind::Program(self.program(program)?)
        };

        let mut args = Vec::with_capacity(raw.args.len());
        for (i, a) in raw.args.iter().enumerate() {
            if a.value.contains('\0') {
                return Err(bad(self
                    .invalid(
                        a,
                        format!("args[{i}]"),
                        "arguments cannot contain a NUL character",
                    )
                    .fix("remove the \\0 from the argument")));
            }
            args.push(a.value.clone());
        }

        let mut env = BTreeMap::new();
        for (k, v) in &raw.env {
            if !is_env_name(k) {
                let l = v.referenced;
                // The key sits on the value's line; find it there for the caret.
                let col = self
                    .text
                    .lines()
                    .nth(usize::try_from(l.line()).unwrap_or(1).saturating_sub(1))
                    .and_then(|s| s.find(k.as_str()))
                    .map(|byte| byte as u64 + 1);
                return Err(bad(Diagnostic::new(
                    self.shown,
                    format!(
                        "invalid environment variable name `{k}`: expected [A-Za-z_][A-Za-z0-9_]*"
                    ),
                )
                .at(self.text, l.line(), col.or(Some(l.column())))
                .field(format!("env.{k}"))
                .fix(
                    "use letters, digits and '_', not starting with a digit, e.g. `MY_VAR: value`",
                )));
            }
            if v.value.contains('\0') {
                return Err(bad(self
                    .invalid(
                        v,
                        format!("env.{k}"),
                        "environment values cannot contain a NUL character",
                    )
                    .fix("remove the \\0 from the value")));
            }
            env.insert(k.clone(), v.value.clone());
        }

        let libos = self.libos(raw.libos)?;

        let default_memory_mib = match kind {
            Kind::Program(_) => DEFAULT_MEMORY_MIB,
            Kind::Postgres(_) => DEFAULT_POSTGRES_MEMORY_MIB,
        };
        let memory_mib = match raw.vm.and_then(|vm| vm.memory_mib) {
            None => default_memory_mib,
            Some(m) if MEMORY_MIB_RANGE.contains(&m.value) => m.value,
            Some(m) => {
                return Err(bad(self
                    .invalid(
                        &m,
                        "vm.memory_mib",
                        format!(
                            "{} MiB is out of range: expected {} to {} MiB",
                            m.value,
                            MEMORY_MIB_RANGE.start(),
                            MEMORY_MIB_RANGE.end()
                        ),
                    )
                    .fix(format!(
                        "pick a value in range, e.g. `memory_mib: {default_memory_mib}` (the default)"
                    ))));
            }
        };

        Ok(Recipe {
            file,
            name,
            kind,
            args,
            env,
            libos,
            vm: VmSpec { memory_mib },
            source_text: self.text.to_owned(),
        })
    }

    fn program(&self, raw: RawProgram) -> Result<ProgramSpec, RecipeError> {
        let bad = |d: Diagnostic| RecipeError::Invalid(Box::new(d));
        if raw.sources.is_empty() {
            let l = raw_sources_location(self.text);
            return Err(bad(Diagnostic::new(
                self.shown,
                "no source files: at least one is needed",
            )
            .at(self.text, l.0, l.1)
            .field("program.sources")
            .fix("list the program's C files, e.g. `sources: [main.c]`")));
        }
        let mut sources: Vec<PathBuf> = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.iter().enumerate() {
            let field = format!("program.sources[{i}]");
            let resolved = self.resolve(&s.value);
            let missing = |what: &str| {
                let mut fix = format!(
                    "paths are relative to the recipe's directory ({}); check the spelling",
                    self.dir.display()
                );
                if s.value.starts_with('~') {
                    fix.push_str("; `~` is not expanded");
                }
                self.invalid(
                    s,
                    &field,
                    format!(
                        "source file `{}` {what} (looked for {})",
                        s.value,
                        resolved.display()
                    ),
                )
                .fix(fix)
            };
            if !resolved.exists() {
                return Err(bad(missing("does not exist")));
            }
            if !resolved.is_file() {
                return Err(bad(missing("is not a regular file")));
            }
            if resolved.extension().is_none_or(|e| e != "c") {
                return Err(bad(self
                    .invalid(
                        s,
                        &field,
                        format!("`{}` is not a C source file (expected a .c file)", s.value),
                    )
                    .fix(
                        "list only .c files here; headers are found through `cflags: [-Idir]`",
                    )));
            }
            let canon = resolved
                .canonicalize()
                .map_err(|e| bad(missing(&format!("cannot be opened: {e}"))))?;
            if let Some(j) = sources.iter().position(|p| *p == canon) {
                return Err(bad(self
                    .invalid(
                        s,
                        &field,
                        format!("`{}` is the same file as program.sources[{j}]", s.value),
                    )
                    .fix(
                        "list each source file once (twice would define every symbol twice)",
                    )));
            }
            sources.push(canon);
        }
        let mut cflags = Vec::with_capacity(raw.cflags.len());
        for (i, c) in raw.cflags.iter().enumerate() {
            if c.value.trim().is_empty() || c.value.contains('\0') {
                return Err(bad(self
                    .invalid(
                        c,
                        format!("program.cflags[{i}]"),
                        "empty compiler flag (or one with a NUL)",
                    )
                    .fix("remove it; each list item is one flag such as -O2")));
            }
            cflags.push(c.value.clone());
        }
        Ok(ProgramSpec { sources, cflags })
    }

    fn libos(&self, raw: Option<RawLibos>) -> Result<LibosSpec, RecipeError> {
        let bad = |d: Diagnostic| RecipeError::Invalid(Box::new(d));
        let Some(config) = raw.and_then(|l| l.config) else {
            return Ok(LibosSpec {
                fragments: Vec::new(),
                config: KernelConfig::builtin_default()?,
            });
        };
        // (written path, where it was written, field path)
        let entries: Vec<(String, serde_saphyr::Location, String)> = match config.value {
            OneOrMany::One(p) => vec![(p, config.referenced, "libos.config".to_owned())],
            OneOrMany::Many(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s.value, s.referenced, format!("libos.config[{i}]")))
                .collect(),
        };
        if entries.is_empty() {
            return Err(bad(Diagnostic::new(self.shown, "empty list of kernel-config fragments")
                .at(self.text, config.referenced.line(), Some(config.referenced.column()))
                .field("libos.config")
                .fix("list at least one fragment, or remove `config` to use kernel-config/default.config")));
        }
        let mut fragments = Vec::with_capacity(entries.len());
        for (written, at, field) in &entries {
            let resolved = self.resolve(written);
            let canon = match resolved.canonicalize() {
                Ok(c) if c.is_file() => c,
                _ => {
                    return Err(bad(Diagnostic::new(
                        self.shown,
                        format!(
                            "kernel-config fragment `{written}` does not exist (looked for {})",
                            resolved.display()
                        ),
                    )
                    .at(self.text, at.line(), Some(at.column()))
                    .field(field.as_str())
                    .fix(format!(
                        "paths are relative to the recipe's directory ({}); the stock fragments are in kernel-config/",
                        self.dir.display()
                    ))));
                }
            };
            fragments.push(canon);
        }
        let config = KernelConfig::from_files(&fragments).map_err(|e| match e {
            RecipeError::KernelConfig(mut d) => {
                if let Some((_, at, field)) = fragments
                    .iter()
                    .position(|f| *f == d.file)
                    .and_then(|i| entries.get(i))
                {
                    d.note = Some(format!(
                        "this fragment is {field} of {}:{}:{}",
                        self.shown.display(),
                        at.line(),
                        at.column()
                    ));
                }
                RecipeError::KernelConfig(d)
            }
            other => other,
        })?;
        Ok(LibosSpec { fragments, config })
    }

    /// `p` relative to the recipe's directory, with `.` and `..` folded so the
    /// path in a message is readable.
    fn resolve(&self, p: &str) -> PathBuf {
        let mut out = PathBuf::new();
        for c in self.dir.join(p).components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    }
}

/// Where a top-level `key:` is written (line, column), for messages about a
/// whole section; (0, None) when it is not written in block style.
fn top_level_key_location(text: &str, key: &str) -> (u64, Option<u64>) {
    let prefix = format!("{key}:");
    text.lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(&prefix))
        .map_or((0, None), |(i, _)| (i as u64 + 1, Some(1)))
}

/// Where `sources:` is written, for the empty-list message (a Spanned list
/// would be the only other way to know).
fn raw_sources_location(text: &str) -> (u64, Option<u64>) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| {
            l.find("sources:")
                .filter(|_| !l.trim_start().starts_with('#'))
                .map(|c| (i as u64 + 1, Some(c as u64 + 1)))
        })
        .unwrap_or((0, None))
}

fn name_problem(name: &str) -> Option<&'static str> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > NAME_MAX_LEN {
        Some("it is longer than 64 characters")
    } else if !first_ok {
        Some("it must start with a lowercase letter or a digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only lowercase letters, digits and '-' are allowed")
    } else {
        None
    }
}

/// A valid name close to what the user wrote (`My_App` → `my-app`), or empty.
fn suggest_name(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-');
    s.chars()
        .take(NAME_MAX_LEN)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_problem("hello"), None);
        assert_eq!(name_problem("pg-16-x"), None);
        assert_eq!(name_problem("9lives"), None);
        assert!(name_problem("").is_some());
        assert!(name_problem("-x").is_some());
        assert!(name_problem("Hello").is_some());
        assert!(name_problem("a_b").is_some());
        assert!(name_problem(&"a".repeat(65)).is_some());
        assert_eq!(name_problem(&"a".repeat(64)), None);
        assert_eq!(suggest_name("My_App!"), "my-app");
        assert_eq!(suggest_name("__"), "");
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("GREETING"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn paths_are_tidied() {
        assert_eq!(tidy_path(".", true), "");
        assert_eq!(tidy_path("vm.memory_mib.value", true), "vm.memory_mib");
        assert_eq!(
            tidy_path("program.sources[1].value", true),
            "program.sources[1]"
        );
        assert_eq!(
            tidy_path("libos.config.value[0].value", true),
            "libos.config[0]"
        );
        assert_eq!(tidy_path("env.A.value", true), "env.A");
        assert_eq!(tidy_path("env.value.value", true), "env.value");
        assert_eq!(tidy_path("program.?", true), "program");
        assert_eq!(tidy_path("vm.valuex", true), "vm.valuex");
        assert_eq!(tidy_path("a.value", false), "a.value");
    }

    #[test]
    fn field_infos_resolve() {
        assert_eq!(
            field_info(FIELDS, "program.sources[3]").unwrap().path,
            "program.sources[]"
        );
        assert_eq!(field_info(FIELDS, "env.FOO").unwrap().path, "env.*");
        assert_eq!(field_info(FIELDS, "").unwrap().path, "");
        assert_eq!(key_elsewhere(FIELDS, "memory_mib"), Some("vm.memory_mib"));
        assert_eq!(key_elsewhere(FIELDS, "sources"), Some("program.sources"));
    }

    #[test]
    fn values_are_found_past_their_key() {
        let t = "s:\n    work_mem: [4MB]\n    jit:\n";
        assert_eq!(past_key(t, 2, 5, "postgres.settings.work_mem"), 15);
        assert_eq!(found_at(t, 2, 15), "a list");
        assert_eq!(
            found_at(t, 3, past_key(t, 3, 5, "postgres.settings.jit")),
            "nothing (null)"
        );
        // Not at the key: unchanged.
        assert_eq!(past_key(t, 2, 15, "postgres.settings.work_mem"), 15);
        assert_eq!(past_key(t, 2, 5, "postgres.settings.other"), 5);
    }

    #[test]
    fn found_values_are_described() {
        let t = "a: \"lots\"\nb: [x]\nc: {x: 1}\nd:\ne: -O2 # c\nf: x, y\n  - z\ng: 'q'\nh: k: v\n";
        assert_eq!(found_at(t, 1, 4), "the string \"lots\"");
        assert_eq!(found_at(t, 2, 4), "a list");
        assert_eq!(found_at(t, 3, 4), "a mapping");
        assert_eq!(found_at(t, 4, 3), "nothing (null)");
        assert_eq!(found_at(t, 4, 2), "nothing (null)");
        assert_eq!(found_at(t, 5, 4), "`-O2`");
        assert_eq!(found_at(t, 6, 4), "`x`");
        assert_eq!(found_at(t, 7, 3), "a list");
        assert_eq!(found_at(t, 8, 4), "the string 'q'");
        assert_eq!(found_at(t, 9, 4), "a mapping");
        assert_eq!(found_at(t, 99, 1), "something else");
    }
}
