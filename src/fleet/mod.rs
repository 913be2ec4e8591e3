//! `pgkraft fleet`: many serving databases from one supervisor process,
//! each its own VM on its own port, each hibernating when idle and waking
//! at its next connection (docs/ARCHITECTURE.md §4 "Fleets").
//!
//! `spec` reads the fleet file; `supervisor` refuses what would not run,
//! starts every database and stops them all; `database` is one database's
//! thread (`serve`'s hibernate/wake loop with its events kept); `status`
//! is what `fleet status` shows; `control` is the unix socket it asks on.

pub mod control;
pub mod database;
pub mod spec;
pub mod status;
pub mod supervisor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use spec::Fleet;
pub use status::Status;
pub use supervisor::Summary;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Spec(#[from] crate::recipe::RecipeError),
    #[error("database `{database}`: cannot use the image {}: {source}", path.display())]
    Image {
        database: String,
        path: PathBuf,
        source: crate::image::ImageError,
    },
    #[error(
        "database `{database}`: {} is not a PostgreSQL image (no cluster in its build info); \
         build one with `pgkraft build recipes/postgres-17.yaml`",
        path.display()
    )]
    NotPostgres { database: String, path: PathBuf },
    #[error(
        "database `{database}`: cannot listen on {listen}: {source} (another program holds the \
         port? give the database another `port:`)"
    )]
    Port {
        database: String,
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("database `{database}`: volume {}: {source}", dir.display())]
    Volume {
        database: String,
        dir: PathBuf,
        source: crate::volume::VolumeError,
    },
    #[error("database `{database}`: cannot make the directory {}: {source}", path.display())]
    Dir {
        database: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

impl FleetError {
    /// Bad input (exit 2): the file, what it names, or a port or socket
    /// someone else holds; nothing was started.
    pub fn is_bad_input(&self) -> bool {
        use control::ControlError as C;
        match self {
            FleetError::Spec(_)
            | FleetError::Image { .. }
            | FleetError::NotPostgres { .. }
            | FleetError::Port { .. }
            | FleetError::Dir { .. }
            | FleetError::Log { .. } => true,
            FleetError::Volume { source, .. } => source.is_refusal(),
            FleetError::Control(c) => matches!(c, C::InUse { .. } | C::NotSocket { .. }),
            FleetError::Signals(_) | FleetError::Thread(_) => false,
        }
    }
}

/// Runs the fleet `file` describes until every database has ended.
pub fn run(file: &Path, json: bool) -> Result<Summary, FleetError> {
    let fleet = spec::load(file)?;
    supervisor::run(&fleet, json)
}

/// Where to ask a running fleet: its file's control socket, or the socket
/// itself.
pub enum Ask<'a> {
    File(&'a Path),
    Socket(&'a Path),
}

/// The status document of the running fleet.
pub fn status(ask: Ask) -> Result<Status, FleetError> {
    let socket = match ask {
        Ask::File(file) => spec::control_socket(file)?,
        Ask::Socket(s) => s.to_path_buf(),
    };
    Ok(control::status(&socket)?)
}

/// An error and its causes, each once (many messages quote their cause).
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}
