//! Who the host-linked PostgreSQL tools run as: PostgreSQL refuses to run
//! as root, so a root pgkraft drops to `nobody` (initdb at build time, the
//! native server of `smoke --native`); anyone else runs them as themselves.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Whether to switch users (we are root) or stay as we are.
    pub drop: bool,
}

/// Who to run as, judged by the owner of `probe`, a file we just created
/// (our effective uid, without asking libc or spawning `id`). `None`: we
/// are root and /etc/passwd has no `nobody` (the tools look their user up
/// in the password database, so it must be there, as it is on Debian).
pub fn run_as(probe: &Path) -> io::Result<Option<RunAs>> {
    let meta = std::fs::metadata(probe)?;
    if meta.uid() != 0 {
        return Ok(Some(RunAs {
            uid: meta.uid(),
            gid: meta.gid(),
            drop: false,
        }));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Ok(passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "nobody").then(|| {
            Some(RunAs {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                drop: true,
            })
        })?
    }))
}

impl RunAs {
    /// A command running `program` as this user (through setpriv when
    /// dropping root); arguments and environment are the caller's.
    pub fn command(&self, program: &Path) -> Command {
        if self.drop {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Give `path` (recursively, links themselves) to this user, when
    /// dropping root; `Err` names the path it failed on.
    pub fn chown_tree(&self, path: &Path) -> Result<(), (std::path::PathBuf, io::Error)> {
        if !self.drop {
            return Ok(());
        }
        let at = |e| (path.to_path_buf(), e);
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).map_err(at)?;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            for e in std::fs::read_dir(path).map_err(at)? {
                self.chown_tree(&e.map_err(at)?.path())?;
            }
        }
        Ok(())
    }
}
