//! One writer per volume: an advisory lock (flock, exclusive, never
//! waited for) on `.pgkraft-volume.lock` in the volume, with the holder's
//! pid written into it for the refusal to name. The kernel drops the lock
//! when its holder exits, however it exits (kill -9 included), so a stale
//! file never blocks anyone: only a live holder does.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file's name in the volume.
pub const LOCK_FILE: &str = ".pgkraft-volume.lock";

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct VolumeLock {
    _file: File,
}

/// Who holds a volume: the pid in the lock file, if it wrote one yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid not yet written"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("held by {0}")]
    Held(Holder),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl VolumeLock {
    /// Takes the lock of the volume at `dir` (creating its file), or says
    /// who holds it.
    pub fn take(dir: &Path) -> Result<VolumeLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held(holder(&mut file))),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(VolumeLock { _file: file })
    }
}

fn holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    Holder(text.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = VolumeLock::take(dir.path()).unwrap();
        match VolumeLock::take(dir.path()) {
            Err(LockError::Held(Holder(Some(pid)))) => assert_eq!(pid, std::process::id()),
            other => panic!("taken twice: {other:?}"),
        }
        drop(first);
        VolumeLock::take(dir.path()).unwrap();
    }
}
