//! Running the external tools of a stage (cc, ld, cargo, make) with their
//! output in the stage's log, and failing with the log's tail.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `patch` arguments for applying one of our patch files (`-i FILE` comes
/// last): exact context only, never reversed, no backup files left behind.
/// A patch that needs fuzz is a patch that needs rebasing.
pub const PATCH_ARGS: &[&str] = &[
    "-p1",
    "--batch",
    "--forward",
    "--fuzz=0",
    "--no-backup-if-mismatch",
    "-i",
];

/// How many log lines a failure shows.
pub const TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
#[error("{stage} failed: {what}\n  log: {}\n--- last lines of the log ---\n{tail}", log.display())]
pub struct StageFailure {
    pub stage: String,
    pub what: String,
    pub log: PathBuf,
    pub tail: String,
}

/// Run `cmd` with stdout and stderr appended to `log`.
pub fn run(cmd: &mut Command, stage: &str, log: &Path) -> Result<(), StageFailure> {
    let fail = |what: String| StageFailure {
        stage: stage.to_string(),
        what,
        log: log.to_path_buf(),
        tail: tail(log, TAIL_LINES),
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| fail(format!("cannot open its log: {e}")))?;
    let err = file
        .try_clone()
        .map_err(|e| fail(format!("cannot open its log: {e}")))?;
    {
        use std::io::Write;
        let mut f = &file;
        let _ = writeln!(f, "$ {cmd:?}");
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(|e| fail(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{:?} exited with {status}",
            cmd.get_program()
        )))
    }
}

/// The last `n` lines of a log file (empty if unreadable).
pub fn tail(log: &Path, n: usize) -> String {
    tail_text(&std::fs::read_to_string(log).unwrap_or_default(), n)
}

/// The last `n` lines of `text`.
pub fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One line of a tool's stdout (e.g. `cc -print-libgcc-file-name`).
pub fn output_line(cmd: &mut Command) -> std::io::Result<String> {
    let out = cmd.stderr(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{cmd:?} exited with {}",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
