//! Recipe errors, written for the person who has to fix the recipe: where
//! (file:line:column and field path), what was expected, and what to change.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading a recipe and its kernel-config
/// fragments. Each variant's `Display` is a complete, multi-line message.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe (or other YAML file, see `what`) is not there.
    #[error(
        "{what} {} does not exist\n  fix: check the path{}",
        path.display(),
        if what == "recipe" { "; the example recipes are in recipes/ (e.g. recipes/hello.yaml)" } else { "" }
    )]
    NotFound { path: PathBuf, what: String },
    /// The file exists but could not be read (permissions, not UTF-8, a directory…).
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML could not be parsed, or does not have the recipe's shape
    /// (unknown key, wrong type, missing key).
    #[error("{0}")]
    Parse(Box<Diagnostic>),
    /// The recipe parsed but a value is not acceptable (bad name, missing
    /// source file, value out of range…).
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// A kernel-config fragment is missing or has a bad line.
    #[error("{0}")]
    KernelConfig(Box<Diagnostic>),
}

impl RecipeError {
    /// The structured diagnostic, for callers that want to present it their own way.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            RecipeError::Parse(d) | RecipeError::Invalid(d) | RecipeError::KernelConfig(d) => {
                Some(d)
            }
            RecipeError::NotFound { .. } | RecipeError::Read { .. } => None,
        }
    }
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in (the recipe as the user named it, or a
    /// kernel-config fragment).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column (in characters), when known.
    pub column: Option<u64>,
    /// Where in the document: a recipe field path such as `program.sources[1]`,
    /// or a kernel-config key.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
    /// What to change.
    pub fix: Option<String>,
    /// Extra context, e.g. which recipe field named a bad fragment.
    pub note: Option<String>,
    /// The offending source line, shown under the message with a caret.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
            fix: None,
            note: None,
            source_line: None,
        }
    }

    /// Points at `line:column` of `text` and keeps that line for the snippet.
    pub(crate) fn at(mut self, text: &str, line: u64, column: Option<u64>) -> Diagnostic {
        if line == 0 {
            return self;
        }
        self.line = Some(line);
        self.column = column.filter(|&c| c > 0);
        self.source_line = usize::try_from(line - 1)
            .ok()
            .and_then(|i| text.lines().nth(i))
            .map(str::to_owned);
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Diagnostic {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Diagnostic {
        self.fix = Some(fix.into());
        self
    }

    pub(crate) fn fix_opt(mut self, fix: Option<String>) -> Diagnostic {
        self.fix = fix;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(line), Some(src)) = (self.line, &self.source_line) {
            // Tabs would make the caret land in the wrong place.
            let src = src.replace('\t', " ");
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            write!(f, "\n  {pad} |\n  {gutter} | {src}")?;
            if let Some(column) = self.column {
                let indent = " ".repeat(usize::try_from(column.saturating_sub(1)).unwrap_or(0));
                write!(f, "\n  {pad} | {indent}^")?;
            }
        }
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {}", fix.replace('\n', "\n       "))?;
        }
        if let Some(note) = &self.note {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

/// The known word closest to `typed`, if one is close enough to be what the
/// user meant. Catches typos (`nmae`), abbreviations (`srcs`, `mem`) and case
/// slips (`Name`).
pub(crate) fn closest<'a>(
    typed: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let t = typed.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for k in known {
        let kl = k.to_ascii_lowercase();
        let d = edit_distance(&t, &kl);
        let close = d <= (kl.chars().count() / 3).max(1)
            || (t.len() >= 3 && is_subsequence(&t, &kl))
            || (kl.len() >= 3 && is_subsequence(&kl, &t));
        if close && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

fn is_subsequence(needle: &str, hay: &str) -> bool {
    let mut hay = hay.chars();
    needle.chars().all(|c| hay.any(|h| h == c))
}

/// Edit distance counting a swap of two neighbours as one edit (`nmae`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["sources", "cflags"];
        assert_eq!(closest("srcs", keys), Some("sources"));
        assert_eq!(closest("source", keys), Some("sources"));
        assert_eq!(closest("flags", keys), Some("cflags"));
        assert_eq!(closest("zzz", keys), None);
        let top = ["name", "kind", "program", "args", "env", "libos", "vm"];
        assert_eq!(closest("nmae", top), Some("name"));
        assert_eq!(closest("Name", top), Some("name"));
        assert_eq!(closest("argv", top), Some("args"));
        assert_eq!(closest("environment", top), Some("env"));
        assert_eq!(closest("memory", top), None);
        assert_eq!(
            closest("CONFIG_MAX_FD", ["CONFIG_MAX_FDS", "CONFIG_MAIN_STACK_KIB"]),
            Some("CONFIG_MAX_FDS")
        );
    }

    #[test]
    fn display_has_position_snippet_and_fix() {
        let d = Diagnostic::new(Path::new("r.yaml"), "unknown key `srcs`")
            .at("a: 1\n  srcs: [x]\n", 2, Some(3))
            .field("program.srcs")
            .fix("did you mean `sources`?");
        let s = d.to_string();
        assert!(
            s.starts_with("r.yaml:2:3: program.srcs: unknown key `srcs`"),
            "{s}"
        );
        assert!(s.contains("  2 |   srcs: [x]\n    |   ^"), "{s}");
        assert!(s.ends_with("fix: did you mean `sources`?"), "{s}");
    }
}
