//! Kernel-config fragments (`kernel-config/*.config`): the library OS's build
//! options, in the familiar Kconfig `CONFIG_NAME=value` form.
//!
//! [`KEYS`] is the single list of what exists; the parser, the defaults, the
//! canonical rendering and README.md all follow it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::{Diagnostic, RecipeError, closest};

/// What a key controls and which values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `y` or `n`; `y` turns on the library OS cargo feature `feature`.
    Bool {
        feature: &'static str,
        default: bool,
    },
    /// A decimal integer in `min..=max`; becomes the library OS constant
    /// `constant` (a `u64`).
    Int {
        constant: &'static str,
        min: u64,
        max: u64,
        default: u64,
    },
}

/// One known kernel-config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: KeyKind,
    /// One sentence for error messages and the reference.
    pub doc: &'static str,
}

impl KeySpec {
    /// The allowed values, as a user would write them.
    pub fn allowed(&self) -> String {
        match self.kind {
            KeyKind::Bool { .. } => "y or n".to_owned(),
            KeyKind::Int { min, max, .. } => format!("a decimal integer from {min} to {max}"),
        }
    }

    /// The default value, as it would be written in a fragment.
    pub fn default_text(&self) -> String {
        match self.kind {
            KeyKind::Bool { default, .. } => yn(default).to_owned(),
            KeyKind::Int { default, .. } => default.to_string(),
        }
    }
}

/// Every key a fragment may set, sorted by name.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "CONFIG_MAIN_STACK_KIB",
        kind: KeyKind::Int {
            constant: "MAIN_STACK_KIB",
            min: 64,
            max: 1_048_576,
            default: 8192,
        },
        doc: "size of the main thread's stack, in KiB",
    },
    KeySpec {
        name: "CONFIG_MAX_FDS",
        kind: KeyKind::Int {
            constant: "MAX_FDS",
            min: 16,
            max: 65_536,
            default: 1024,
        },
        doc: "size of the file-descriptor table (the highest usable fd is this minus one)",
    },
    KeySpec {
        name: "CONFIG_TRACE_SYSCALLS",
        kind: KeyKind::Bool {
            feature: "trace-syscalls",
            default: false,
        },
        doc: "log every system call (name, arguments, result) on the console",
    },
];

/// The fragment used when a recipe names none: kernel-config/default.config,
/// compiled in so an installed pgkraft does not need the source tree.
pub const DEFAULT_FRAGMENT: &str = include_str!("../../kernel-config/default.config");
/// How [`DEFAULT_FRAGMENT`] is named in messages.
pub const DEFAULT_FRAGMENT_NAME: &str = "kernel-config/default.config (built in)";

/// The resolved library OS configuration: every key has a value (a fragment's
/// or its default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelConfig {
    /// Cargo features to enable when building the library OS.
    pub features: BTreeSet<String>,
    /// Constants for the library OS build, by constant name (e.g. `MAX_FDS`).
    pub consts: BTreeMap<String, u64>,
}

impl Default for KernelConfig {
    /// Every key at its default (the same as kernel-config/default.config).
    fn default() -> KernelConfig {
        KernelConfig::from_values(&BTreeMap::new())
    }
}

impl KernelConfig {
    /// Reads and applies fragment files in order; later values override earlier ones.
    pub fn from_files(paths: &[PathBuf]) -> Result<KernelConfig, RecipeError> {
        let mut texts = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    "kernel-config fragment does not exist".to_owned()
                } else {
                    format!("cannot read kernel-config fragment: {e}")
                };
                RecipeError::KernelConfig(Box::new(
                    Diagnostic::new(path, what)
                        .fix("check the path; the stock fragments are in kernel-config/"),
                ))
            })?;
            texts.push(text);
        }
        KernelConfig::parse(
            paths
                .iter()
                .map(PathBuf::as_path)
                .zip(texts.iter().map(String::as_str)),
        )
    }

    /// Applies fragments given as (name for messages, text), in order.
    pub fn parse<'a>(
        fragments: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<KernelConfig, RecipeError> {
        let mut values = BTreeMap::new();
        for (path, text) in fragments {
            apply_fragment(path, text, &mut values).map_err(RecipeError::KernelConfig)?;
        }
        Ok(KernelConfig::from_values(&values))
    }

    /// kernel-config/default.config as compiled into pgkraft.
    pub fn builtin_default() -> Result<KernelConfig, RecipeError> {
        KernelConfig::parse([(Path::new(DEFAULT_FRAGMENT_NAME), DEFAULT_FRAGMENT)])
    }

    fn from_values(values: &BTreeMap<&'static str, u64>) -> KernelConfig {
        let mut cfg = KernelConfig {
            features: BTreeSet::new(),
            consts: BTreeMap::new(),
        };
        for spec in KEYS {
            match spec.kind {
                KeyKind::Bool { feature, default } => {
                    let on = values.get(spec.name).map_or(default, |&v| v != 0);
                    if on {
                        cfg.features.insert(feature.to_owned());
                    }
                }
                KeyKind::Int {
                    constant, default, ..
                } => {
                    let v = values.get(spec.name).copied().unwrap_or(default);
                    cfg.consts.insert(constant.to_owned(), v);
                }
            }
        }
        cfg
    }

    /// Whether the feature behind a bool key is on.
    pub fn enabled(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// The canonical text of this configuration: a complete fragment with
    /// every known key, sorted, no comments. Equal configurations render to
    /// equal bytes however their fragments were written, so this is what goes
    /// into the build cache key. Features or constants that no key produces
    /// (only possible if the struct was built by hand) are appended as
    /// comment lines so they still change the key.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut known_features = BTreeSet::new();
        let mut known_consts = BTreeSet::new();
        for spec in KEYS {
            let value = match spec.kind {
                KeyKind::Bool { feature, .. } => {
                    known_features.insert(feature);
                    yn(self.features.contains(feature)).to_owned()
                }
                KeyKind::Int {
                    constant, default, ..
                } => {
                    known_consts.insert(constant);
                    self.consts
                        .get(constant)
                        .copied()
                        .unwrap_or(default)
                        .to_string()
                }
            };
            out.push_str(&format!("{}={value}\n", spec.name));
        }
        for f in self
            .features
            .iter()
            .filter(|f| !known_features.contains(f.as_str()))
        {
            out.push_str(&format!("# feature {f}\n"));
        }
        for (k, v) in self
            .consts
            .iter()
            .filter(|(k, _)| !known_consts.contains(k.as_str()))
        {
            out.push_str(&format!("# const {k}={v}\n"));
        }
        out
    }
}

fn yn(b: bool) -> &'static str {
    if b { "y" } else { "n" }
}

fn known_keys_list() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

fn apply_fragment(
    path: &Path,
    text: &str,
    values: &mut BTreeMap<&'static str, u64>,
) -> Result<(), Box<Diagnostic>> {
    // Setting a key twice in one file is almost always an editing mistake;
    // overriding is what separate fragments are for.
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let here = |msg: String| Diagnostic::new(path, msg).at(text, lineno as u64, None);
        let Some((name, value)) = line.split_once('=') else {
            return Err(Box::new(
                here(format!(
                    "malformed line `{line}`: expected CONFIG_NAME=value"
                ))
                .fix(format!(
                    "write one CONFIG_NAME=value per line (comments start with #); known keys: {}",
                    known_keys_list()
                )),
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        let Some(spec) = KEYS.iter().find(|k| k.name == name) else {
            let guess = closest(name, KEYS.iter().map(|k| k.name)).or_else(|| {
                KEYS.iter()
                    .map(|k| k.name)
                    .find(|k| k.strip_prefix("CONFIG_") == Some(name))
            });
            let fix = match guess {
                Some(g) => format!("did you mean {g}? known keys: {}", known_keys_list()),
                None => format!("use one of the known keys: {}", known_keys_list()),
            };
            return Err(Box::new(
                here(format!("unknown kernel-config key `{name}`"))
                    .field(name)
                    .fix(fix),
            ));
        };
        if let Some(first) = seen.insert(spec.name, lineno) {
            return Err(Box::new(
                here(format!(
                    "{} is already set on line {first} of this fragment",
                    spec.name
                ))
                .field(spec.name)
                .fix("keep one of the two lines; to override a value, put it in a later fragment"),
            ));
        }
        let bad_value = |why: &str| {
            here(format!("{why} `{value}`: expected {}", spec.allowed()))
                .field(spec.name)
                .fix(format!(
                    "write {}=<{}> ({}; default {})",
                    spec.name,
                    spec.allowed(),
                    spec.doc,
                    spec.default_text()
                ))
        };
        let v = match spec.kind {
            KeyKind::Bool { .. } => match value {
                "y" => 1,
                "n" => 0,
                _ => return Err(Box::new(bad_value("invalid value"))),
            },
            KeyKind::Int { min, max, .. } => {
                let n = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse::<u64>().ok()
                } else {
                    None
                };
                match n {
                    None => return Err(Box::new(bad_value("invalid value"))),
                    Some(n) if !(min..=max).contains(&n) => {
                        return Err(Box::new(bad_value("value out of range")));
                    }
                    Some(n) => n,
                }
            }
        };
        values.insert(spec.name, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KernelConfig, RecipeError> {
        KernelConfig::parse([(Path::new("t.config"), text)])
    }

    #[test]
    fn keys_sorted_and_defaults_in_range() {
        assert!(KEYS.windows(2).all(|w| w[0].name < w[1].name));
        for k in KEYS {
            if let KeyKind::Int {
                min, max, default, ..
            } = k.kind
            {
                assert!((min..=max).contains(&default), "{}", k.name);
            }
        }
    }

    #[test]
    fn builtin_default_is_every_key_at_its_default() {
        assert_eq!(
            KernelConfig::builtin_default().unwrap(),
            KernelConfig::default()
        );
        for k in KEYS {
            let line = format!("\n{}={}\n", k.name, k.default_text());
            assert!(
                DEFAULT_FRAGMENT.contains(&line),
                "default.config lacks {}",
                line.trim()
            );
        }
    }

    #[test]
    fn later_fragments_override() {
        let cfg = KernelConfig::parse([
            (
                Path::new("a"),
                "CONFIG_MAX_FDS=64\nCONFIG_TRACE_SYSCALLS=y\n",
            ),
            (Path::new("b"), "# c\n\n  CONFIG_MAX_FDS = 128  \n"),
        ])
        .unwrap();
        assert_eq!(cfg.consts["MAX_FDS"], 128);
        assert_eq!(cfg.consts["MAIN_STACK_KIB"], 8192);
        assert!(cfg.enabled("trace-syscalls"));
    }

    #[test]
    fn render_is_canonical() {
        let a = parse("CONFIG_TRACE_SYSCALLS=n\nCONFIG_MAX_FDS=1024\n").unwrap();
        assert_eq!(a.render(), KernelConfig::default().render());
        assert_eq!(
            KernelConfig::default().render(),
            "CONFIG_MAIN_STACK_KIB=8192\nCONFIG_MAX_FDS=1024\nCONFIG_TRACE_SYSCALLS=n\n"
        );
        assert_eq!(parse(&a.render()).unwrap(), a);
    }

    #[test]
    fn errors_name_line_and_fix() {
        let e = parse("# x\nCONFIG_MAX_FD=3\n").unwrap_err().to_string();
        assert!(e.starts_with("t.config:2: CONFIG_MAX_FD: unknown"), "{e}");
        assert!(e.contains("did you mean CONFIG_MAX_FDS?"), "{e}");
        let e = parse("MAX_FDS=32\n").unwrap_err().to_string();
        assert!(e.contains("did you mean CONFIG_MAX_FDS?"), "{e}");
        let e = parse("CONFIG_MAX_FDS=8\n").unwrap_err().to_string();
        assert!(
            e.contains("out of range `8`") && e.contains("from 16 to 65536"),
            "{e}"
        );
        let e = parse("CONFIG_MAX_FDS=0x40\n").unwrap_err().to_string();
        assert!(e.contains("invalid value `0x40`"), "{e}");
        let e = parse("CONFIG_TRACE_SYSCALLS=yes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected y or n"), "{e}");
        let e = parse("CONFIG_TRACE_SYSCALLS\n").unwrap_err().to_string();
        assert!(e.starts_with("t.config:1: malformed line"), "{e}");
        let e = parse("CONFIG_MAX_FDS=32\nCONFIG_MAX_FDS=64\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already set on line 1"), "{e}");
    }
}
