//! A recording of initdb turned into the plan an image carries out at first
//! boot (first_boot.c reads it): the files initdb wrote before, between and
//! after the server's runs, and the runs with their input, rewritten for the
//! image and checked to carry nothing of this build machine and no
//! password but the superuser's SCRAM secret.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::FirstBootError;
use super::record::Recording;

/// The plan's own file, beside the files it names.
pub const PLAN_FILE: &str = "plan";

/// initdb's SQL asks the server to import the collations `locale -a`
/// lists. An image has no shell to run it (the statement would fail and
/// end the single-user run) and musl has no locales but C ones, which the
/// catalog has anyway: the statement is left out.
const IMPORT_COLLATIONS: &str = "SELECT pg_import_system_collations('pg_catalog');\n\n";

/// Where the plan points in the image.
pub struct Target<'a> {
    /// The image's program (its argv[0]): what each run spawns.
    pub exec: &'a Path,
    pub data_dir: &'a Path,
    /// The share directory in the image: initdb's SQL copies a file from it.
    pub share_dir: &'a Path,
}

/// The secret that stands for the superuser's password, if it has one.
pub struct Secrets<'a> {
    pub secret: Option<&'a str>,
}

/// A path in the data directory, as the plan names it.
fn rel_name(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// Every directory and file under `root`, by path relative to it.
fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Option<Vec<u8>>>, FirstBootError> {
    fn walk(
        root: &Path,
        rel: &Path,
        out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>,
    ) -> Result<(), FirstBootError> {
        let dir = root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(FirstBootError::io("cannot read", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(FirstBootError::io("cannot read", &dir))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let meta =
                fs::symlink_metadata(&path).map_err(FirstBootError::io("cannot stat", &path))?;
            if meta.is_dir() {
                out.insert(rel.clone(), None);
                walk(root, &rel, out)?;
            } else if meta.is_file() {
                let bytes = fs::read(&path).map_err(FirstBootError::io("cannot read", &path))?;
                out.insert(rel, Some(bytes));
            } else {
                return Err(FirstBootError::Unusable {
                    what: "a file initdb left in the data directory",
                    value: path.display().to_string(),
                    why: "it is neither a directory nor a regular file",
                });
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

/// The plan under construction: its lines and the files they name.
struct Writer<'a> {
    out: &'a Path,
    lines: Vec<String>,
    files: Vec<PathBuf>,
}

impl Writer<'_> {
    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), FirstBootError> {
        let path = self.out.join(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(FirstBootError::io("cannot create", dir))?;
        }
        fs::write(&path, bytes).map_err(FirstBootError::io("cannot write", &path))?;
        self.files.push(path);
        Ok(())
    }

    fn line(&mut self, fields: &[&str]) -> Result<(), FirstBootError> {
        if let Some(f) = fields
            .iter()
            .find(|f| f.is_empty() || f.contains([' ', '\n', '\0']))
        {
            return Err(FirstBootError::Unusable {
                what: "a plan field",
                value: (*f).to_owned(),
                why: "plan fields are separated by spaces, one line per step",
            });
        }
        self.lines.push(fields.join(" "));
        Ok(())
    }

    /// What initdb changed in the data directory between `from` (None:
    /// before it began) and `to`, as plan steps; the files go under `tag`.
    fn changes(&mut self, from: Option<&Path>, to: &Path, tag: &str) -> Result<(), FirstBootError> {
        let old = match from {
            Some(d) => tree(d)?,
            None => BTreeMap::new(),
        };
        let new = tree(to)?;
        if let Some(gone) = old.keys().find(|p| !new.contains_key(*p)) {
            return Err(FirstBootError::Unusable {
                what: "a path initdb removed between the server's runs",
                value: gone.display().to_string(),
                why: "the plan creates and writes files, it never removes one",
            });
        }
        for (rel, body) in &new {
            let name = rel_name(rel);
            match (body, old.get(rel)) {
                (None, Some(None)) => {}
                (None, _) => self.line(&["mkdir", &name])?,
                (Some(bytes), Some(Some(before))) if before == bytes => {}
                (Some(bytes), _) => {
                    let file = format!("files/{tag}/{name}");
                    self.file(&file, bytes)?;
                    self.line(&["write", &name, &file])?;
                }
            }
        }
        Ok(())
    }
}

/// The single-user run's SQL for the image: the share directory's path
/// as the image has it, and no collation import.
fn single_user_sql(
    sql: &[u8],
    build_share: &Path,
    image_share: &Path,
) -> Result<Vec<u8>, FirstBootError> {
    let sql = String::from_utf8(sql.to_vec()).map_err(|_| FirstBootError::Unusable {
        what: "initdb's single-user SQL",
        value: String::new(),
        why: "it is not UTF-8",
    })?;
    if sql.matches(IMPORT_COLLATIONS).count() != 1 {
        return Err(FirstBootError::SqlChanged {
            expected: IMPORT_COLLATIONS.trim().to_owned(),
        });
    }
    let sql = sql.replacen(IMPORT_COLLATIONS, "", 1);
    let from = format!("E'{}/", build_share.display());
    let to = format!("E'{}/", image_share.display());
    if !sql.contains(&from) {
        return Err(FirstBootError::SqlChanged {
            expected: format!("a file read from {from}..."),
        });
    }
    Ok(sql.replace(&from, &to).into_bytes())
}

/// Writes the plan into `out` and returns the files it wrote (the plan
/// first).
pub(super) fn write(
    rec: &Recording,
    target: &Target<'_>,
    secrets: &Secrets<'_>,
    out: &Path,
) -> Result<Vec<PathBuf>, FirstBootError> {
    let mut w = Writer {
        out,
        lines: Vec::new(),
        files: Vec::new(),
    };
    w.line(&["exec", &target.exec.display().to_string()])?;
    w.line(&["data", &target.data_dir.display().to_string()])?;
    let mut previous: Option<&Path> = None;
    for (i, run) in rec.runs.iter().enumerate() {
        let tag = (i + 1).to_string();
        w.changes(previous, &run.before, &format!("before-{tag}"))?;
        let mut input =
            fs::read(&run.stdin).map_err(FirstBootError::io("cannot read", &run.stdin))?;
        if run.args.first().map(String::as_str) == Some("--single") {
            input = single_user_sql(&input, &rec.share, target.share_dir)?;
        }
        let file = format!("input-{tag}");
        w.file(&file, &input)?;
        let mut fields = vec!["run", file.as_str()];
        fields.extend(run.args.iter().map(String::as_str));
        w.line(&fields)?;
        previous = Some(&run.after);
    }
    w.changes(previous, &rec.finished, "after")?;

    let mut text = w.lines.join("\n");
    text.push('\n');
    let plan = out.join(PLAN_FILE);
    fs::write(&plan, &text).map_err(FirstBootError::io("cannot write", &plan))?;
    let mut files = vec![plan];
    files.append(&mut w.files);
    check(&files, &rec.scratch_paths, secrets)?;
    Ok(files)
}

/// Where `needle` starts in `bytes`.
fn positions(bytes: &[u8], needle: &[u8]) -> Vec<usize> {
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect()
}

/// initdb sets the superuser's password with this, followed by the
/// password as initdb was given it: pgkraft gives it the secret.
const SET_PASSWORD: &[u8] = b"PASSWORD E'";

/// Nothing of the build machine in the plan, and every password it sets is
/// the superuser's SCRAM secret: never a plain-text password (a password
/// may be any word, so the plan is not searched for it, which could find
/// it by chance; what sets one is checked).
fn check(
    files: &[PathBuf],
    build_paths: &[PathBuf],
    secrets: &Secrets<'_>,
) -> Result<(), FirstBootError> {
    let mut secret_found = false;
    for f in files {
        let bytes = fs::read(f).map_err(FirstBootError::io("cannot read", f))?;
        for at in positions(&bytes, SET_PASSWORD) {
            let value = &bytes[at + SET_PASSWORD.len()..];
            match secrets.secret {
                Some(s) if value.starts_with(s.as_bytes()) => secret_found = true,
                _ => return Err(FirstBootError::PasswordInPlan { file: f.clone() }),
            }
        }
        if let Some(p) = build_paths
            .iter()
            .find(|p| !positions(&bytes, p.as_os_str().as_encoded_bytes()).is_empty())
        {
            return Err(FirstBootError::BuildPathInPlan {
                file: f.clone(),
                path: p.clone(),
            });
        }
    }
    if secrets.secret.is_some() && !secret_found {
        return Err(FirstBootError::SqlChanged {
            expected: "the superuser's SCRAM secret (ALTER USER ... PASSWORD)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(out: &Path) -> Writer<'_> {
        Writer {
            out,
            lines: Vec::new(),
            files: Vec::new(),
        }
    }

    #[test]
    fn changes_are_new_directories_and_new_or_changed_files() {
        let d = tempfile::tempdir().unwrap();
        let (old, new, out) = (
            d.path().join("old"),
            d.path().join("new"),
            d.path().join("out"),
        );
        for t in [&old, &new] {
            fs::create_dir_all(t.join("base/1")).unwrap();
            fs::write(t.join("PG_VERSION"), "17\n").unwrap();
            fs::write(t.join("postgresql.conf"), "a = 1\n").unwrap();
        }
        fs::create_dir(new.join("global")).unwrap();
        fs::write(new.join("base/1/PG_VERSION"), "17\n").unwrap();
        fs::write(new.join("postgresql.conf"), "a = 2\n").unwrap();
        let mut w = writer(&out);
        w.changes(Some(&old), &new, "after").unwrap();
        assert_eq!(
            w.lines,
            [
                "write base/1/PG_VERSION files/after/base/1/PG_VERSION",
                "mkdir global",
                "write postgresql.conf files/after/postgresql.conf",
            ]
        );
        assert_eq!(
            fs::read_to_string(out.join("files/after/postgresql.conf")).unwrap(),
            "a = 2\n"
        );

        // From nothing: every directory, parents first, and every file.
        let mut w = writer(&out);
        w.changes(None, &old, "before-1").unwrap();
        assert_eq!(
            w.lines,
            [
                "write PG_VERSION files/before-1/PG_VERSION",
                "mkdir base",
                "mkdir base/1",
                "write postgresql.conf files/before-1/postgresql.conf",
            ]
        );

        // A removal cannot be replayed.
        let mut w = writer(&out);
        let e = w.changes(Some(&new), &old, "x").unwrap_err().to_string();
        assert!(e.contains("removed"), "{e}");
    }

    #[test]
    fn fields_with_spaces_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut w = writer(d.path());
        assert!(w.line(&["mkdir", "a b"]).is_err());
        assert!(w.line(&["mkdir", ""]).is_err());
        w.line(&["mkdir", "pg_wal"]).unwrap();
    }

    #[test]
    fn single_user_sql_reads_the_images_share_and_imports_no_collations() {
        let sql = format!(
            "SELECT 1;\n\n{IMPORT_COLLATIONS}COPY f FROM E'/tmp/pgkraft-initdb-x/pg/share/sql_features.txt';\n\n"
        );
        let out = single_user_sql(
            sql.as_bytes(),
            Path::new("/tmp/pgkraft-initdb-x/pg/share"),
            Path::new("/usr/local/pgsql/share"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SELECT 1;\n\nCOPY f FROM E'/usr/local/pgsql/share/sql_features.txt';\n\n"
        );
        // initdb's SQL without what the plan rewrites: refused.
        let e = single_user_sql(b"SELECT 1;", Path::new("/x"), Path::new("/y"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg_import_system_collations"), "{e}");
    }

    #[test]
    fn only_the_secret_may_be_set_as_a_password_and_no_build_path_may_stay() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("input-2");
        let secret = "SCRAM-SHA-256$4096:c2FsdA==$a:b";
        let with = Secrets {
            secret: Some(secret),
        };
        fs::write(
            &f,
            format!("ALTER USER \"postgres\" WITH PASSWORD E'{secret}';\n"),
        )
        .unwrap();
        check(
            std::slice::from_ref(&f),
            &[PathBuf::from("/tmp/scratch")],
            &with,
        )
        .unwrap();

        fs::write(&f, "ALTER USER \"postgres\" WITH PASSWORD E'hunter2';\n").unwrap();
        let e = check(std::slice::from_ref(&f), &[], &with).unwrap_err();
        assert!(matches!(e, FirstBootError::PasswordInPlan { .. }), "{e}");
        let e = check(std::slice::from_ref(&f), &[], &Secrets { secret: None }).unwrap_err();
        assert!(matches!(e, FirstBootError::PasswordInPlan { .. }), "{e}");

        fs::write(&f, "COPY f FROM E'/tmp/scratch/pg/share/x';\n").unwrap();
        let e = check(
            std::slice::from_ref(&f),
            &[PathBuf::from("/tmp/scratch")],
            &Secrets { secret: None },
        )
        .unwrap_err();
        assert!(matches!(e, FirstBootError::BuildPathInPlan { .. }), "{e}");
        // A secret that the SQL never sets: initdb's SQL changed.
        let e = check(&[f], &[], &with).unwrap_err().to_string();
        assert!(e.contains("SCRAM secret"), "{e}");
    }
}
