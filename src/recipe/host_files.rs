//! `rootfs.files`: host files and directories a postgres recipe adds to
//! the image's file system, each at an absolute path of the guest's
//! choosing (the regression schedule's data files at the path the server
//! is told to COPY them from, say). README.md documents the key.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Checker, RecipeError};

/// One item: `from` on the host (canonical), `to` in the image (absolute,
/// in normal form). A directory brings everything under it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostFile {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHostFile {
    from: Spanned<String>,
    to: Spanned<String>,
}

/// Why `to` is not a usable image path, if it is not.
fn guest_path_problem(to: &str) -> Option<&'static str> {
    let p = Path::new(to);
    if !p.is_absolute() {
        return Some("it is not absolute");
    }
    if p.components().all(|c| c == Component::RootDir) {
        return Some("it is the root directory itself");
    }
    if !p
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Some("it has `.` or `..` parts");
    }
    let normal: PathBuf = p.components().collect();
    if normal.as_os_str() != p.as_os_str() {
        return Some("it has doubled or trailing slashes");
    }
    None
}

impl Checker<'_> {
    pub(super) fn host_files(&self, raw: &[RawHostFile]) -> Result<Vec<HostFile>, RecipeError> {
        let bad = |d| RecipeError::Invalid(Box::new(d));
        let mut out: Vec<HostFile> = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let to = item.to.value.trim();
            if let Some(why) = guest_path_problem(to) {
                return Err(bad(self
                    .invalid(
                        &item.to,
                        format!("rootfs.files[{i}].to"),
                        format!("`{to}` is not a path the image can carry: {why}"),
                    )
                    .fix(
                        "write the absolute path in the guest, e.g. `to: /srv/data/file.csv`",
                    )));
            }
            let resolved = self.resolve(&item.from.value);
            let meta = std::fs::metadata(&resolved);
            let kind_ok = meta
                .as_ref()
                .map(|m| m.is_file() || m.is_dir())
                .unwrap_or(false);
            if !kind_ok {
                let what = match meta {
                    Err(_) => "does not exist",
                    Ok(_) => "is neither a regular file nor a directory",
                };
                return Err(bad(self
                    .invalid(
                        &item.from,
                        format!("rootfs.files[{i}].from"),
                        format!(
                            "`{}` {what} (looked for {})",
                            item.from.value,
                            resolved.display()
                        ),
                    )
                    .fix(format!(
                        "paths are relative to the recipe's directory ({}); name an existing \
                         file or directory",
                        self.dir.display()
                    ))));
            }
            let from = resolved.canonicalize().map_err(|e| {
                bad(self.invalid(
                    &item.from,
                    format!("rootfs.files[{i}].from"),
                    format!("cannot resolve {}: {e}", resolved.display()),
                ))
            })?;
            let to = PathBuf::from(to);
            // Two items for one path, or one inside the other, would make
            // the image's contents depend on which one wins.
            if let Some(j) = out
                .iter()
                .position(|o| o.to.starts_with(&to) || to.starts_with(&o.to))
            {
                return Err(bad(self
                    .invalid(
                        &item.to,
                        format!("rootfs.files[{i}].to"),
                        format!(
                            "`{}` overlaps rootfs.files[{j}].to (`{}`): one is the other or \
                             lies inside it",
                            to.display(),
                            out[j].to.display()
                        ),
                    )
                    .fix(
                        "give each item its own place; to add files into a directory an \
                          item brings, put them into that host directory",
                    )));
            }
            out.push(HostFile { from, to });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::guest_path_problem;

    #[test]
    fn guest_paths() {
        assert_eq!(guest_path_problem("/srv/x"), None);
        assert_eq!(guest_path_problem("/srv/x.d/y"), None);
        for bad in [
            "srv/x",
            "/",
            "//",
            "/srv/../x",
            "/srv/./x",
            "/srv//x",
            "/srv/x/",
        ] {
            assert!(guest_path_problem(bad).is_some(), "{bad}");
        }
    }
}
