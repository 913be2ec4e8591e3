//! A PostgreSQL image's data volume over its life (issue 13): the host
//! directory `--volume DIR` names, taken for one runner, initialized on
//! first use, checked against the image at every later one. The runner's
//! device (vmm's virtio-9p) serves whatever directory this hands it.
//!
//! - DIR missing or empty: the image's pre-initialized cluster is unpacked
//!   beside it and renamed into place ([`init`]); an image without one
//!   (`cluster.preinit: false`) gets an empty data directory it initializes
//!   at its first boot.
//! - DIR in use by another runner: refused ([`lock`]), before anything is
//!   read or written.
//! - Otherwise DIR must hold a cluster (`PG_VERSION`) of the image's major
//!   and, when the image carries a cluster, that cluster (the same system
//!   identifier: a rebuild of the image with the same cluster is fine).
//!   What the volume belongs to is recorded in it ([`record`]); a cluster
//!   without a record (made before records were) is adopted.
//!
//! Program images have no cluster: their directory is taken (locked) and
//! served as it is.
//!
//! docs/ARCHITECTURE.md §4 "Volume life cycle".

pub mod control;
pub mod init;
pub mod lock;
pub mod record;
pub mod source;

use crate::image::Image;
use control::{ControlError, ControlHead, PgMajor, SystemId, VERSION_FILE};
use init::{Committed, InitError, Staging};
use lock::{Holder, LockError, VolumeLock};
use record::{Origin, RECORD_FILE, RECORD_FORMAT, Record, RecordError};
use source::{Source, SourceError};
use std::path::{Path, PathBuf};

/// What the first-boot starter of a `cluster.preinit: false` image leaves
/// in the data directory until its cluster is complete.
const FIRST_BOOT_MARKER: &str = "pgkraft-first-boot.incomplete";

const EMPTY_FIX: &str = "a new empty directory (pgkraft initializes it)";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "volume {} is in use by pgkraft ({holder})\n  fix: stop that runner first, or give \
         another directory",
        dir.display()
    )]
    InUse { dir: PathBuf, holder: Holder },
    #[error("cannot take the lock of volume {}: {source}", dir.display())]
    Lock {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read volume {}: {source}\n  fix: give a directory this user can read and write", dir.display())]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("volume {}: not a directory\n  fix: give a directory, or {EMPTY_FIX}", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "volume {}: the directory is not empty and holds no PostgreSQL cluster (no {VERSION_FILE}; \
         it holds {sample}); pgkraft writes into no directory it did not make\n  fix: give {EMPTY_FIX}, \
         or a volume a pgkraft image made",
        dir.display()
    )]
    NotACluster { dir: PathBuf, sample: String },
    #[error(
        "volume {} holds a PostgreSQL {found} cluster, and image {} is PostgreSQL {wanted}\n  \
         fix: use a volume made by an image of PostgreSQL {wanted}, or {EMPTY_FIX}",
        dir.display(),
        image.display()
    )]
    MajorMismatch {
        dir: PathBuf,
        found: PgMajor,
        image: PathBuf,
        wanted: PgMajor,
    },
    #[error(
        "volume {} holds another cluster than image {}: system identifier {found} in its \
         global/pg_control, {wanted} in the image's\n  fix: use the volume with the image that \
         made it (or a rebuild of it with the same cluster), or {EMPTY_FIX}",
        dir.display(),
        image.display()
    )]
    ClusterMismatch {
        dir: PathBuf,
        found: SystemId,
        image: PathBuf,
        wanted: SystemId,
    },
    #[error(
        "volume {} awaits its first boot by an image that initializes its cluster then \
         (PostgreSQL {major}, `cluster.preinit: false`), and image {} carries a pre-initialized \
         cluster\n  fix: boot the volume with an image built with `cluster.preinit: false`, or \
         give this image {EMPTY_FIX}",
        dir.display(),
        image.display()
    )]
    AwaitsFirstBoot {
        dir: PathBuf,
        major: PgMajor,
        image: PathBuf,
    },
    #[error(
        "volume {}: its record {RECORD_FILE} is unreadable: {source}\n  fix: restore the file, or \
         remove it to have pgkraft check and adopt the cluster as it is",
        dir.display()
    )]
    Record { dir: PathBuf, source: RecordError },
    #[error(
        "volume {}: its record {RECORD_FILE} names {recorded}, and the directory holds {found}\n  \
         fix: remove {RECORD_FILE} to have pgkraft check and adopt the cluster as it is, or \
         give {EMPTY_FIX}",
        dir.display()
    )]
    RecordMismatch {
        dir: PathBuf,
        recorded: String,
        found: String,
    },
    #[error(
        "volume {}: {file} is unreadable ({source})\n  fix: restore the cluster from a backup, \
         or give {EMPTY_FIX}",
        dir.display()
    )]
    ClusterFile {
        dir: PathBuf,
        file: &'static str,
        source: ControlError,
    },
    #[error("volume {}: cannot write its record: {source}", dir.display())]
    WriteRecord {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Init(#[from] InitError),
}

impl VolumeError {
    /// A refusal of what was given (exit 2), not a failure on the way
    /// (a write that failed: exit 1).
    pub fn is_refusal(&self) -> bool {
        let given = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            )
        };
        match self {
            VolumeError::Lock { source, .. }
            | VolumeError::Read { source, .. }
            | VolumeError::WriteRecord { source, .. } => given(source),
            VolumeError::Init(InitError::Io { source, .. }) => given(source),
            VolumeError::Source(SourceError::Write { .. }) => false,
            _ => true,
        }
    }
}

/// What the volume was found as, or made into, by [`Volume::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Made now from the image's pre-initialized cluster.
    Initialized,
    /// Made now, empty, for the image to initialize at its first boot.
    AwaitsFirstBoot,
    /// Still awaiting the image's first boot (one before did not finish it).
    StillAwaitsFirstBoot,
    /// A cluster without a record, checked and recorded now.
    Adopted,
    /// A recorded cluster of this image.
    Existing,
    /// A program image's directory, served as it is.
    Plain,
}

impl State {
    /// What a runner says of a volume in this state on stderr, if anything.
    pub fn said(self) -> Option<&'static str> {
        match self {
            State::Initialized => Some("initialized from the image's cluster"),
            State::AwaitsFirstBoot => {
                Some("created empty: the image initializes its cluster at its first boot")
            }
            State::Adopted => Some("holds a cluster of this image, recorded now"),
            State::StillAwaitsFirstBoot => Some("still awaits its first boot's initialization"),
            State::Existing | State::Plain => None,
        }
    }
}

/// A volume taken for one runner: the lock is held while this lives.
#[derive(Debug)]
pub struct Volume {
    dir: PathBuf,
    state: State,
    _lock: VolumeLock,
}

impl Volume {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the runner serves.
    pub fn config(&self) -> crate::vmm::VolumeConfig {
        crate::vmm::VolumeConfig::new(&self.dir)
    }

    /// Takes `dir` as `image`'s volume: locks it, initializes it if it is
    /// missing or empty, checks it against the image otherwise.
    pub fn open(image: &Image, dir: &Path) -> Result<Volume, VolumeError> {
        let Some(source) = Source::of(image)? else {
            return plain(dir);
        };
        // Twice at most: an initialization that finds the place taken
        // (another runner was quicker) looks again at what is there now.
        for _ in 0..2 {
            match place(dir)? {
                Place::Vacant => {
                    if let Some(volume) = initialize(&source, dir)? {
                        return Ok(volume);
                    }
                }
                Place::Taken => return existing(&source, dir),
            }
        }
        existing(&source, dir)
    }
}

enum Place {
    /// Missing or empty: to be initialized.
    Vacant,
    /// Holds a cluster, or a volume's own files.
    Taken,
}

/// What is at `dir`, read without writing anything.
fn place(dir: &Path) -> Result<Place, VolumeError> {
    let not_dir = || VolumeError::NotADirectory {
        dir: dir.to_path_buf(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Place::Vacant),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(not_dir()),
        Err(source) => {
            return Err(VolumeError::Read {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(Place::Vacant);
    }
    let ours = [VERSION_FILE, RECORD_FILE, lock::LOCK_FILE];
    if names.iter().any(|n| ours.contains(&n.as_str())) {
        return Ok(Place::Taken);
    }
    Err(VolumeError::NotACluster {
        dir: dir.to_path_buf(),
        sample: sample(names),
    })
}

/// A few of `names`, for a message.
fn sample(mut names: Vec<String>) -> String {
    names.sort();
    let more = names.len().saturating_sub(3);
    names.truncate(3);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

fn take_lock(dir: &Path) -> Result<VolumeLock, VolumeError> {
    VolumeLock::take(dir).map_err(|e| match e {
        LockError::Held(holder) => VolumeError::InUse {
            dir: dir.to_path_buf(),
            holder,
        },
        LockError::Io(source) => VolumeError::Lock {
            dir: dir.to_path_buf(),
            source,
        },
    })
}

fn plain(dir: &Path) -> Result<Volume, VolumeError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(VolumeError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(VolumeError::Read {
                dir: dir.to_path_buf(),
                source,
            });
        }
    }
    Ok(Volume {
        _lock: take_lock(dir)?,
        dir: dir.to_path_buf(),
        state: State::Plain,
    })
}

/// Builds the volume beside `dir` (locked from the start: the lock file
/// moves with it) and renames it into place; `None` if `dir` was taken
/// meanwhile.
fn initialize(source: &Source, dir: &Path) -> Result<Option<Volume>, VolumeError> {
    init::sweep(dir);
    let staging = Staging::beside(dir)?;
    let lock = take_lock(staging.path())?;
    let (cluster, origin, state) = match source.cluster {
        Some(head) => {
            source.unpack_cluster(staging.path())?;
            (Some(head), Origin::Unpacked, State::Initialized)
        }
        None => (None, Origin::FirstBoot, State::AwaitsFirstBoot),
    };
    let record = Record {
        format: RECORD_FORMAT,
        postgres_major: source.major,
        cluster,
        image_sha256: source.sha256()?,
        origin,
    };
    record
        .write(staging.path())
        .map_err(|source| VolumeError::WriteRecord {
            dir: dir.to_path_buf(),
            source,
        })?;
    Ok(match staging.commit(dir)? {
        Committed::Done => Some(Volume {
            dir: dir.to_path_buf(),
            state,
            _lock: lock,
        }),
        Committed::Occupied => None,
    })
}

/// Takes and checks a volume that holds something.
fn existing(source: &Source, dir: &Path) -> Result<Volume, VolumeError> {
    let lock = take_lock(dir)?;
    let record = Record::read(dir).map_err(|source| VolumeError::Record {
        dir: dir.to_path_buf(),
        source,
    })?;
    let volume = |state| Volume {
        dir: dir.to_path_buf(),
        state,
        _lock: lock,
    };
    // A volume left for the image's first boot stays the image's to
    // initialize until that boot has finished (PG_VERSION there, the
    // starter's marker gone): an interrupted one is the image's to report.
    if let Some(r) = record.as_ref().filter(|r| r.cluster.is_none())
        && (!dir.join(VERSION_FILE).exists() || dir.join(FIRST_BOOT_MARKER).exists())
    {
        if r.postgres_major != source.major {
            return Err(major_mismatch(source, dir, r.postgres_major));
        }
        if source.cluster.is_some() {
            return Err(VolumeError::AwaitsFirstBoot {
                dir: dir.to_path_buf(),
                major: r.postgres_major,
                image: source.path.clone(),
            });
        }
        return Ok(volume(State::StillAwaitsFirstBoot));
    }
    if !dir.join(VERSION_FILE).exists() {
        let names = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        return Err(VolumeError::NotACluster {
            dir: dir.to_path_buf(),
            sample: sample(names),
        });
    }
    let unreadable = |file| {
        move |source| VolumeError::ClusterFile {
            dir: dir.to_path_buf(),
            file,
            source,
        }
    };
    let major = control::read_major(dir).map_err(unreadable(VERSION_FILE))?;
    if major != source.major {
        return Err(major_mismatch(source, dir, major));
    }
    let head = ControlHead::read(dir).map_err(unreadable(control::CONTROL_FILE))?;
    if let Some(wanted) = source.cluster
        && wanted.system_identifier != head.system_identifier
    {
        return Err(VolumeError::ClusterMismatch {
            dir: dir.to_path_buf(),
            found: head.system_identifier,
            image: source.path.clone(),
            wanted: wanted.system_identifier,
        });
    }
    let write = |record: Record| {
        record
            .write(dir)
            .map_err(|source| VolumeError::WriteRecord {
                dir: dir.to_path_buf(),
                source,
            })
    };
    let state = match record {
        None => {
            write(Record {
                format: RECORD_FORMAT,
                postgres_major: major,
                cluster: Some(head),
                image_sha256: source.sha256()?,
                origin: Origin::Adopted,
            })?;
            State::Adopted
        }
        // The first boot made the cluster: recorded now.
        Some(r) if r.cluster.is_none() && r.postgres_major == major => {
            write(Record {
                cluster: Some(head),
                ..r
            })?;
            State::Existing
        }
        Some(r) if r.cluster == Some(head) && r.postgres_major == major => State::Existing,
        Some(r) => {
            return Err(VolumeError::RecordMismatch {
                dir: dir.to_path_buf(),
                recorded: describe(r.postgres_major, r.cluster.map(|c| c.system_identifier)),
                found: describe(major, Some(head.system_identifier)),
            });
        }
    };
    Ok(volume(state))
}

fn describe(major: PgMajor, id: Option<SystemId>) -> String {
    match id {
        Some(id) => format!("a PostgreSQL {major} cluster with system identifier {id}"),
        None => format!("a PostgreSQL {major} volume awaiting its first boot"),
    }
}

fn major_mismatch(source: &Source, dir: &Path, found: PgMajor) -> VolumeError {
    VolumeError::MajorMismatch {
        dir: dir.to_path_buf(),
        found,
        image: source.path.clone(),
        wanted: source.major,
    }
}
