//! Resolving the requested extensions against the catalogue
//! ([`crate::catalog::extensions`], re-exported here), and the modules
//! every server links whatever the recipe asks.

pub use crate::catalog::extensions::{Extension, PLPGSQL, all, find, supported_extensions};

use super::PgError;

/// Modules that are not extensions but that every server needs:
/// initdb creates the snowball text-search dictionaries with
/// `LANGUAGE C` functions in `$libdir/dict_snowball`; a client whose
/// encoding is not the server's (psql in a LATIN1 terminal,
/// `PGCLIENTENCODING`, `SET client_encoding`) needs the conversion
/// functions in `$libdir/utf8_and_*`. The single-byte encodings' four
/// modules cost ~66 KB; the CJK ones (big5, euc_*, gb18030, gbk, johab,
/// sjis, uhc: ~1.8 MB of tables) are left out, and such a client is
/// refused with `could not access file "$libdir/utf8_and_..."`.
pub const BUILTIN_MODULE_DIRS: &[&str] = &[
    "src/backend/snowball",
    "src/backend/utils/mb/conversion_procs/utf8_and_iso8859_1",
    "src/backend/utils/mb/conversion_procs/utf8_and_iso8859",
    "src/backend/utils/mb/conversion_procs/utf8_and_win",
    "src/backend/utils/mb/conversion_procs/utf8_and_cyrillic",
];

/// The module with the snowball stemmers (`english`, `french`, ... text
/// search dictionaries): 0.5 MB of the server's 9 MB. Those dictionaries
/// also read stop-word files from `tsearch_data`, which the image ships only
/// with `cluster.text_search`, so without it they fail either way; the
/// `simple` configuration (core code) still works.
pub const TEXT_SEARCH_MODULE: &str = "dict_snowball";

/// A built-in module as an image links it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// The module itself.
    Whole(String),
    /// Its stand-in (build::postgres::left_out), under its name.
    LeftOut(String),
}

impl Builtin {
    pub fn name(&self) -> &str {
        match self {
            Builtin::Whole(n) | Builtin::LeftOut(n) => n,
        }
    }
}

/// The built-in modules an image links: all of them, but the stemmers
/// only with text search (else their stand-in).
pub fn builtin_modules(compiled: &[String], text_search: bool) -> Vec<Builtin> {
    compiled
        .iter()
        .map(|m| {
            if !text_search && m == TEXT_SEARCH_MODULE {
                Builtin::LeftOut(m.clone())
            } else {
                Builtin::Whole(m.clone())
            }
        })
        .collect()
}

/// The requested extensions plus plpgsql and everything they require,
/// sorted and without duplicates.
pub fn resolve(major: u32, requested: &[String]) -> Result<Vec<&'static Extension>, PgError> {
    let mut out: Vec<&'static Extension> = Vec::new();
    let mut todo: Vec<String> = vec![PLPGSQL.to_string()];
    todo.extend(requested.iter().cloned());
    while let Some(name) = todo.pop() {
        if out.iter().any(|e| e.name == name) {
            continue;
        }
        let ext = find(major, &name).ok_or_else(|| PgError::UnknownExtension {
            name: name.clone(),
            major,
            supported: supported_extensions(major).to_vec(),
        })?;
        todo.extend(ext.requires.iter().map(|r| r.to_string()));
        out.push(ext);
    }
    out.sort_by_key(|e| e.name);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_adds_plpgsql_and_requirements() {
        let got = resolve(15, &["earthdistance".into(), "cube".into()]).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name).collect();
        assert_eq!(names, ["cube", "earthdistance", "plpgsql"]);
    }

    #[test]
    fn stemmers_only_with_text_search() {
        let all = vec!["dict_snowball".to_string(), "utf8_and_win".to_string()];
        let whole = |n: &str| Builtin::Whole(n.into());
        assert_eq!(
            builtin_modules(&all, true),
            [whole("dict_snowball"), whole("utf8_and_win")]
        );
        assert_eq!(
            builtin_modules(&all, false),
            [
                Builtin::LeftOut("dict_snowball".into()),
                whole("utf8_and_win")
            ]
        );
    }

    #[test]
    fn unknown_extension_lists_supported() {
        let err = resolve(17, &["pgcrypto".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`pgcrypto`"), "{msg}");
        assert!(msg.contains("pg_trgm") && msg.contains("hstore"), "{msg}");
    }
}
