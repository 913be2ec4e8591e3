//! The supervisor's control socket: a unix socket beside the fleet file
//! where `pgkraft fleet status` asks with one line (`status`) and gets one
//! JSON document back, then the connection closes. A line protocol leaves
//! room for other requests later.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long either side waits for the other.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another fleet supervisor answers on {} (stop it first, or give this fleet another \
         `control:` path)",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket: move it away or give another `control:` path", path.display())]
    NotSocket { path: PathBuf },
    #[error("cannot listen on the control socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no fleet supervisor answers on {} ({source}): is `pgkraft fleet run` running for this file?",
        path.display()
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the supervisor on {} did not answer: {source}", path.display())]
    Talk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the supervisor on {} answered {answer:?}, not a status document: {source}", path.display())]
    Answer {
        path: PathBuf,
        answer: String,
        source: serde_json::Error,
    },
}

/// The bound control socket; the file goes when this does.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Control {
    /// Listens on `path`. A socket file no one answers on (a supervisor
    /// killed with -9) is replaced; one someone answers on is refused.
    pub fn bind(path: &Path) -> Result<Control, ControlError> {
        let bind_err = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ControlError::NotSocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(_) => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answers requests on a thread of its own for as long as the process
    /// lives: `answer` makes the status document's JSON.
    pub fn serve(&self, answer: impl Fn() -> String + Send + 'static) -> std::io::Result<()> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("fleet-control".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    // A client that says nothing holds the socket only as
                    // long as the timeout.
                    let _ = stream.set_read_timeout(Some(PATIENCE));
                    let _ = stream.set_write_timeout(Some(PATIENCE));
                    let _ = answer_one(stream, &answer);
                }
            })?;
        Ok(())
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer_one(stream: UnixStream, answer: &impl Fn() -> String) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => answer(),
        other => serde_json::json!({ "error": format!("unknown request {other:?}; ask `status`") })
            .to_string(),
    };
    let mut stream = stream;
    stream.write_all(reply.as_bytes())?;
    stream.write_all(b"\n")
}

/// Asks the supervisor on `path` for its status document.
pub fn status(path: &Path) -> Result<super::status::Status, ControlError> {
    let talk = |source| ControlError::Talk {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(PATIENCE)).map_err(talk)?;
    stream.set_write_timeout(Some(PATIENCE)).map_err(talk)?;
    stream.write_all(b"status\n").map_err(talk)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(talk)?;
    serde_json::from_str(&answer).map_err(|source| ControlError::Answer {
        path: path.to_path_buf(),
        answer: answer.trim().chars().take(200).collect(),
        source,
    })
}
