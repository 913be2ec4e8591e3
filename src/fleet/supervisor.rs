//! `pgkraft fleet run`: one process, many databases. Everything a fleet
//! file could get wrong is refused before any database starts (images,
//! ports, the control socket, logs, volumes); then each database runs on a
//! thread of its own ([`super::database`]), the control socket answers
//! `fleet status`, and the first SIGINT/SIGTERM stops them all (SIGINT to
//! each guest: PostgreSQL's fast shutdown; a hibernated one wakes for it),
//! a second one as SIGQUIT. The supervisor ends when every database has.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::FleetError;
use super::control::Control;
use super::database::{self, Gate, Launch, Shared};
use super::spec::Fleet;
use super::status::{self, Record, State};
use crate::image::Image;
use crate::vmm;

/// How the fleet ended.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub databases: usize,
    pub stopped: usize,
    pub failed: usize,
}

#[derive(Serialize)]
struct Started<'a> {
    event: &'static str,
    databases: usize,
    control: &'a str,
    pid: u32,
}

#[derive(Serialize)]
struct Finished<'a> {
    event: &'static str,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// Runs `fleet` until every database has ended (after a stop signal, or on
/// their own).
pub fn run(fleet: &Fleet, json: bool) -> Result<Summary, FleetError> {
    // Handlers first: a Ctrl-C from here on stops the databases (once
    // there are some) instead of killing the supervisor under them.
    let mut host_signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(FleetError::Signals)?;
    let images = open_images(fleet)?;
    let control = Control::bind(&fleet.control)?;
    check_ports(fleet)?;
    let mut launches = Vec::new();
    let mut records = Vec::new();
    let mut signals = Vec::new();
    std::fs::create_dir_all(&fleet.logs).map_err(|source| FleetError::Log {
        path: fleet.logs.clone(),
        source,
    })?;
    for (index, db) in fleet.databases.iter().enumerate() {
        let image = images[&db.image].clone();
        let (superuser, memory_mib, volume) = {
            let image = image.lock().unwrap_or_else(|e| e.into_inner());
            let volume = match &db.volume {
                Some(dir) => Some(open_volume(&image, &db.name, dir)?),
                None => None,
            };
            (
                image.superuser().to_string(),
                image.memory_mib(db.memory_mib),
                volume,
            )
        };
        let log_path = db.log(fleet);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| FleetError::Log {
                path: log_path.clone(),
                source,
            })?;
        let guest_signals = vmm::GuestSignals::new().map_err(FleetError::Signals)?;
        signals.push(guest_signals.clone());
        records.push(Mutex::new(Record::new(
            db.name.clone(),
            crate::serve::client_addr(&db.publish()),
            memory_mib,
        )));
        launches.push(Launch {
            index,
            spec: db.clone(),
            image,
            superuser,
            memory_mib,
            volume,
            log,
            log_path,
            signals: guest_signals,
        });
    }
    drop(images);

    let boots_at_once = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let shared = Arc::new(Shared {
        records,
        stopping: AtomicBool::new(false),
        json,
        gate: Gate::new(boots_at_once),
    });
    {
        let shared = shared.clone();
        let file = fleet.file.display().to_string();
        control
            .serve(move || {
                let records: Vec<_> = (0..shared.records.len())
                    .map(|i| shared.record(i))
                    .collect();
                let doc = status::document(&file, records.iter().map(|r| &**r));
                drop(records);
                serde_json::to_string(&doc).expect("serializes")
            })
            .map_err(FleetError::Thread)?;
    }
    let mut threads = Vec::new();
    for launch in launches {
        let theirs = shared.clone();
        let name = launch.spec.name.clone();
        let index = launch.index;
        let t = std::thread::Builder::new()
            .name(format!("db-{name}"))
            .spawn(move || database::run(launch, theirs));
        match t {
            Ok(t) => threads.push((index, t)),
            Err(e) => {
                let mut r = shared.record(index);
                r.state = State::Failed;
                r.error = Some(format!("cannot start its thread: {e}"));
            }
        }
    }
    let started = Started {
        event: "fleet_started",
        databases: fleet.databases.len(),
        control: &fleet.control.display().to_string(),
        pid: std::process::id(),
    };
    if json {
        println!("{}", serde_json::to_string(&started).expect("serializes"));
    } else {
        eprintln!(
            "pgkraft: fleet {}: {} databases starting; `pgkraft fleet status {}` shows them; \
             Ctrl-C stops them",
            fleet.file.display(),
            started.databases,
            fleet.file.display()
        );
    }

    let handle = host_signals.handle();
    let forwarder = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for (n, _) in host_signals.forever().enumerate() {
                database::signal_all(&shared, &signals, n);
            }
        })
    };
    for (index, t) in threads {
        if t.join().is_err() {
            let mut r = shared.record(index);
            r.state = State::Failed;
            r.ram.clear();
            r.error =
                Some("its thread panicked (a bug: the supervisor's stderr says where)".into());
        }
    }
    handle.close();
    let _ = forwarder.join();
    let states: Vec<State> = (0..shared.records.len())
        .map(|i| shared.record(i).state)
        .collect();
    let summary = Summary {
        databases: states.len(),
        stopped: states.iter().filter(|s| **s == State::Stopped).count(),
        failed: states.iter().filter(|s| **s != State::Stopped).count(),
    };
    drop(control);
    if json {
        let f = Finished {
            event: "fleet_stopped",
            summary: &summary,
        };
        println!("{}", serde_json::to_string(&f).expect("serializes"));
    }
    Ok(summary)
}

/// Each image once, shared by its databases.
fn open_images(fleet: &Fleet) -> Result<HashMap<PathBuf, Arc<Mutex<Image>>>, FleetError> {
    let mut images = HashMap::new();
    for db in &fleet.databases {
        if images.contains_key(&db.image) {
            continue;
        }
        let image = Image::open(&db.image).map_err(|source| FleetError::Image {
            database: db.name.clone(),
            path: db.image.clone(),
            source,
        })?;
        if image.build().and_then(|b| b.postgres.as_ref()).is_none() {
            return Err(FleetError::NotPostgres {
                database: db.name.clone(),
                path: db.image.clone(),
            });
        }
        images.insert(db.image.clone(), Arc::new(Mutex::new(image)));
    }
    Ok(images)
}

/// Refuses a port another program holds, before anything boots: each is
/// bound once and let go (the database binds it again as it boots).
fn check_ports(fleet: &Fleet) -> Result<(), FleetError> {
    for db in &fleet.databases {
        std::net::TcpListener::bind(db.listen).map_err(|source| FleetError::Port {
            database: db.name.clone(),
            listen: db.listen,
            source,
        })?;
    }
    Ok(())
}

fn open_volume(
    image: &Image,
    name: &str,
    dir: &std::path::Path,
) -> Result<crate::volume::Volume, FleetError> {
    // A fleet file names many volumes under a few directories: those are
    // made here (a volume itself is made by its initialization, whole).
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|source| FleetError::Dir {
            database: name.to_string(),
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let volume = crate::volume::Volume::open(image, dir).map_err(|source| FleetError::Volume {
        database: name.to_string(),
        dir: dir.to_path_buf(),
        source,
    })?;
    if let Some(said) = volume.state().said() {
        eprintln!("pgkraft: {name}: volume {}: {said}", dir.display());
    }
    Ok(volume)
}
