//! `rootfs.files` at build time: each item's host file, or every entry
//! under its host directory, as rootfs entries at the item's guest path.
//!
//! What enters the image (and the rootfs stage's cache key) is each
//! entry's guest path, kind, mode and contents, never the host path, so
//! two checkouts of one recipe give the same archive. Modes are
//! normalized (0644, or 0755 for a file with an execute bit, and 0755 for
//! directories) because the host's depend on the copying user's umask.

use std::fs;
use std::path::{Path, PathBuf};

use super::select::{Reason, Selected};
use crate::recipe::HostFile;

#[derive(Debug, thiserror::Error)]
pub enum HostFilesError {
    #[error(
        "rootfs.files[{item}]: {} (to {}) is {what}; only regular files, directories and \
         symlinks can go into the image\n  fix: remove it from {}, or name another `from`",
        path.display(), to.display(), from.display()
    )]
    Unsupported {
        item: usize,
        path: PathBuf,
        to: PathBuf,
        from: PathBuf,
        what: &'static str,
    },
    #[error(
        "rootfs.files[{item}].to: {} is also {}, which pgkraft places itself\n  \
         fix: choose a path outside it (e.g. under /srv)",
        to.display(), owner
    )]
    Reserved {
        item: usize,
        to: PathBuf,
        owner: String,
    },
    #[error("rootfs.files[{item}]: cannot read {}: {source}", path.display())]
    Io {
        item: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HostFilesError {
    /// Bad input (the recipe's to fix) is 2; an unreadable file is 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostFilesError::Io { .. } => 1,
            _ => 2,
        }
    }
}

/// The rootfs entries of `files`. `reserved`: the image's own paths (the
/// prefix, the cluster, /etc/passwd...), with what they are; an item at,
/// inside or around one is refused.
pub fn entries(
    files: &[HostFile],
    reserved: &[(PathBuf, String)],
) -> Result<Vec<Selected>, HostFilesError> {
    let mut out = Vec::new();
    for (item, f) in files.iter().enumerate() {
        if let Some((_, owner)) = reserved
            .iter()
            .find(|(r, _)| f.to.starts_with(r) || r.starts_with(&f.to))
        {
            return Err(HostFilesError::Reserved {
                item,
                to: f.to.clone(),
                owner: owner.clone(),
            });
        }
        walk(item, f, &f.from, &f.to, &mut out)?;
    }
    Ok(out)
}

fn walk(
    item: usize,
    f: &HostFile,
    host: &Path,
    guest: &Path,
    out: &mut Vec<Selected>,
) -> Result<(), HostFilesError> {
    let io = |source| HostFilesError::Io {
        item,
        path: host.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(host).map_err(io)?;
    let ft = meta.file_type();
    let inside = guest.strip_prefix(&f.to).unwrap_or(Path::new(""));
    let reason = Reason::RecipeFile {
        field: format!("rootfs.files[{item}]"),
        file: inside.display().to_string(),
    };
    let file_mode = || {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        }
    };
    if ft.is_dir() {
        out.push(Selected {
            path: guest.to_path_buf(),
            source: host.to_path_buf(),
            mode: Some(0o755),
            reason,
        });
        let mut names: Vec<_> = fs::read_dir(host)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|source| HostFilesError::Io {
                item,
                path: host.to_path_buf(),
                source,
            })?;
        names.sort();
        for n in names {
            walk(item, f, &host.join(&n), &guest.join(&n), out)?;
        }
    } else if ft.is_file() || ft.is_symlink() {
        out.push(Selected {
            path: guest.to_path_buf(),
            source: host.to_path_buf(),
            mode: ft.is_file().then(file_mode),
            reason,
        });
    } else {
        return Err(HostFilesError::Unsupported {
            item,
            path: host.to_path_buf(),
            to: guest.to_path_buf(),
            from: f.from.clone(),
            what: "a special file (FIFO, socket or device)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_brings_its_tree_with_normalized_modes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub/empty")).unwrap();
        fs::write(src.join("a.data"), "a").unwrap();
        fs::write(src.join("sub/run.sh"), "#!/bin/sh").unwrap();
        fs::set_permissions(src.join("sub/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(src.join("a.data"), fs::Permissions::from_mode(0o600)).unwrap();
        let files = [HostFile {
            from: src.clone(),
            to: PathBuf::from("/srv/in"),
        }];
        let got = entries(&files, &[]).unwrap();
        let shape: Vec<(String, Option<u32>, String)> = got
            .iter()
            .map(|s| (s.path.display().to_string(), s.mode, s.reason.to_string()))
            .collect();
        assert_eq!(
            shape,
            [
                ("/srv/in".into(), Some(0o755), "rootfs.files[0]".into()),
                (
                    "/srv/in/a.data".into(),
                    Some(0o644),
                    "rootfs.files[0]: a.data".into()
                ),
                (
                    "/srv/in/sub".into(),
                    Some(0o755),
                    "rootfs.files[0]: sub".into()
                ),
                (
                    "/srv/in/sub/empty".into(),
                    Some(0o755),
                    "rootfs.files[0]: sub/empty".into()
                ),
                (
                    "/srv/in/sub/run.sh".into(),
                    Some(0o755),
                    "rootfs.files[0]: sub/run.sh".into()
                ),
            ]
        );
    }

    #[test]
    fn reserved_paths_are_refused_both_ways() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, "x").unwrap();
        let reserved = [(PathBuf::from("/data"), "the cluster".to_string())];
        for to in ["/data/x", "/data", "/"] {
            let files = [HostFile {
                from: f.clone(),
                to: PathBuf::from(to),
            }];
            let e = entries(&files, &reserved).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{to}");
            assert!(e.to_string().contains("the cluster"), "{e}");
        }
        let ok = [HostFile {
            from: f,
            to: PathBuf::from("/database"),
        }];
        assert_eq!(entries(&ok, &reserved).unwrap().len(), 1);
    }
}
