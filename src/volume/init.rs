//! A new volume is built beside its final place and renamed into it: a
//! staging directory (`.<name>.pgkraft-init-XXXXXX` in the same parent,
//! so the rename stays on one file system), its files and directories
//! synced, then one rename(2) onto the missing or empty directory and a
//! sync of the parent. An interrupted initialization therefore leaves the
//! volume as it was (missing or empty) and, at worst, a staging directory
//! beside it, never a half-written cluster under the volume's name. Such
//! leftovers are removed by the next initialization: a staging directory
//! holds the volume's lock file, locked while its runner lives, so one
//! whose lock can be taken has no runner any more.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The volume-to-be, removed if dropped before it is committed.
pub struct Staging {
    root: tempfile::TempDir,
}

/// What became of the rename onto the volume's place.
pub enum Committed {
    Done,
    /// Something is there now (another runner initialized it first, or
    /// someone put files there): nothing was replaced.
    Occupied,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot rename a new cluster onto {}: it is a mount point\n  fix: give a directory \
         beneath the mount point (say {}/data)",
        dir.display(),
        dir.display()
    )]
    MountPoint { dir: PathBuf },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io { what, path, source }
}

/// The name prefix of `dir`'s staging directories.
fn staging_prefix(dir: &Path) -> String {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.pgkraft-init-")
}

/// Removes what interrupted initializations of `dir` left beside it (those
/// whose lock no runner holds); best effort, as they are only clutter.
pub fn sweep(dir: &Path) {
    let prefix = staging_prefix(dir);
    let Ok(entries) = std::fs::read_dir(parent_of(dir)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        // Only one that has its lock file: a runner locks it right after
        // making the directory, and one without is not known to be dead.
        let ours = entry.file_name().to_string_lossy().starts_with(&prefix)
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && path.join(super::lock::LOCK_FILE).is_file();
        if ours && super::lock::VolumeLock::take(&path).is_ok() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl Staging {
    /// An empty staging directory (mode 0700, as PostgreSQL wants its data
    /// directory) beside `dir`.
    pub fn beside(dir: &Path) -> Result<Staging, InitError> {
        let parent = parent_of(dir);
        let root = tempfile::Builder::new()
            .prefix(&staging_prefix(dir))
            .tempdir_in(&parent)
            .map_err(io("create a staging directory in", &parent))?;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", root.path()))?;
        Ok(Staging { root })
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Syncs every file and directory, then renames the staging directory
    /// onto `dir` (missing or empty) and syncs `dir`'s parent.
    pub fn commit(self, dir: &Path) -> Result<Committed, InitError> {
        sync_tree(self.root.path())?;
        let staged = self.root.keep();
        match std::fs::rename(&staged, dir) {
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                return match e.raw_os_error() {
                    Some(libc::ENOTEMPTY | libc::EEXIST) => Ok(Committed::Occupied),
                    Some(libc::EBUSY) => Err(InitError::MountPoint {
                        dir: dir.to_path_buf(),
                    }),
                    _ => Err(io("rename a new cluster onto", dir)(e)),
                };
            }
        }
        let parent = parent_of(dir);
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &parent))?;
        Ok(Committed::Done)
    }
}

/// `dir`'s parent directory (`.` for a bare name).
fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// fsync of every regular file and directory under `root`, `root` last, so
/// what a directory names is on disk before the directory is.
fn sync_tree(root: &Path) -> Result<(), InitError> {
    for entry in std::fs::read_dir(root).map_err(io("list", root))? {
        let entry = entry.map_err(io("list", root))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io("stat", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io("sync", &path))?;
        }
    }
    std::fs::File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_tree_lands_on_a_missing_or_empty_place_and_never_on_files() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("vol");
        for _ in 0..2 {
            let s = Staging::beside(&dir).unwrap();
            std::fs::create_dir(s.path().join("global")).unwrap();
            std::fs::write(s.path().join("global/f"), "x").unwrap();
            assert!(matches!(s.commit(&dir).unwrap(), Committed::Done));
            assert_eq!(std::fs::read_to_string(dir.join("global/f")).unwrap(), "x");
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
            // Emptied: the next round renames onto an empty directory.
            std::fs::remove_dir_all(dir.join("global")).unwrap();
        }
        std::fs::write(dir.join("mine"), "y").unwrap();
        let s = Staging::beside(&dir).unwrap();
        assert!(matches!(s.commit(&dir).unwrap(), Committed::Occupied));
        assert_eq!(std::fs::read_to_string(dir.join("mine")).unwrap(), "y");
        // No staging directory is left behind.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_dead_runners_are_swept_and_a_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("vol");
        let dead = Staging::beside(&dir).unwrap().root.keep();
        drop(crate::volume::lock::VolumeLock::take(&dead).unwrap());
        std::fs::write(dead.join("PG_VERSION"), "17\n").unwrap();
        let live = Staging::beside(&dir).unwrap();
        let _held = crate::volume::lock::VolumeLock::take(live.path()).unwrap();
        let unrelated = parent.path().join(".other.pgkraft-init-x");
        std::fs::create_dir(&unrelated).unwrap();
        sweep(&dir);
        assert!(!dead.exists());
        assert!(live.path().exists());
        assert!(unrelated.exists());
    }
}
