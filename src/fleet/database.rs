//! One database of a fleet, on a thread of its own: wait for a turn to
//! boot, boot, serve it through `serve`'s hibernate/wake loop
//! ([`crate::serve::serve_guest`]) with its events kept in its
//! [`Record`], and say how it ended. Whatever happens to it stays with it:
//! an error ends its thread as `failed`, not the fleet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::spec;
use super::status::{LastWake, Record, State, unix_ms};
use crate::image::Image;
use crate::serve::{HibernatedEvent, ServeEvents, WokeEvent};
use crate::vmm;

const SIGINT: u8 = 2;
const SIGQUIT: u8 = 3;

/// A booting database holds its turn this long at most: one that never
/// comes up does not keep the rest from booting.
const BOOT_PATIENCE: Duration = Duration::from_secs(120);

/// What every database's thread shares with the supervisor.
pub struct Shared {
    pub records: Vec<Mutex<Record>>,
    /// Set once the supervisor passed a stop signal on.
    pub stopping: AtomicBool,
    /// JSON lines on stdout, or sentences on stderr.
    pub json: bool,
    pub gate: Arc<Gate>,
}

impl Shared {
    pub fn record(&self, i: usize) -> MutexGuard<'_, Record> {
        // A thread that panicked holding it left a record still worth
        // reading.
        self.records[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says `event` of database `name`: as a JSON line with its name, or
    /// as a sentence.
    pub fn say(&self, name: &str, event: impl Serialize, human: impl FnOnce() -> String) {
        say(self.json, name, event, human);
    }
}

#[derive(Serialize)]
struct Tagged<'a, E: Serialize> {
    database: &'a str,
    #[serde(flatten)]
    event: E,
}

fn say(json: bool, name: &str, event: impl Serialize, human: impl FnOnce() -> String) {
    if json {
        let line = Tagged {
            database: name,
            event,
        };
        println!("{}", serde_json::to_string(&line).expect("serializes"));
    } else {
        eprintln!("pgkraft: {name}: {}", human());
    }
}

/// How many databases boot at once: a few at a time come up sooner, one
/// by one, than all of them fighting for the host's cores.
pub struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A turn to boot, given back when dropped.
pub struct Turn(Arc<Gate>);

impl Gate {
    pub fn new(at_once: usize) -> Arc<Gate> {
        Arc::new(Gate {
            free: Mutex::new(at_once.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Waits for a turn; none if `give_up()` first.
    fn enter(self: &Arc<Gate>, give_up: impl Fn() -> bool) -> Option<Turn> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if give_up() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Turn(self.clone()));
            }
            // Woken by a turn given back; a stop is seen within this.
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// What a database's thread is started with.
pub struct Launch {
    pub index: usize,
    pub spec: spec::Database,
    /// Shared by the databases of one image; locked while one boots (a
    /// boot reads the file through its position).
    pub image: Arc<Mutex<Image>>,
    pub superuser: String,
    pub memory_mib: u32,
    /// Held (locked) until the VM has ended.
    pub volume: Option<crate::volume::Volume>,
    pub log: std::fs::File,
    pub log_path: std::path::PathBuf,
    pub signals: vmm::GuestSignals,
}

#[derive(Serialize)]
struct Ready {
    event: &'static str,
    listen: String,
    /// From the database's turn to boot to its first accepted connection.
    ready_ms: f64,
}

#[derive(Serialize)]
struct Ended<'a> {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The database's thread: runs it to its end and records how it ended.
pub fn run(launch: Launch, shared: Arc<Shared>) {
    let Launch {
        index,
        spec,
        image,
        superuser,
        memory_mib,
        volume,
        log,
        log_path,
        signals,
    } = launch;
    let name = spec.name.clone();
    let ended = boot_and_serve(
        index,
        &spec,
        &image,
        &superuser,
        memory_mib,
        volume.as_ref(),
        log,
        signals,
        &shared,
    );
    let (state, status, error) = match ended {
        Ok(vmm::GuestExit::Status(0)) => (State::Stopped, Some(0), None),
        Ok(vmm::GuestExit::Status(s)) => (
            State::Failed,
            Some(s),
            Some(format!(
                "the server stopped with status {s} (its log {} says why)",
                log_path.display()
            )),
        ),
        Ok(vmm::GuestExit::Shutdown { regs }) => {
            let first = regs.lines().next().unwrap_or_default().to_string();
            // The register dump is for whoever reads the log.
            append(&log_path, &format!("pgkraft: the guest died:\n{regs}\n"));
            (
                State::Failed,
                None,
                Some(format!(
                    "the guest died: {first} (its log {} has the registers)",
                    log_path.display()
                )),
            )
        }
        Ok(vmm::GuestExit::Timeout) => (
            State::Failed,
            None,
            Some("the guest timed out, which a fleet never asks for".into()),
        ),
        Err(Stop::Early) => (State::Stopped, None, None),
        Err(Stop::Failed(e)) => (State::Failed, None, Some(e)),
    };
    {
        let mut r = shared.record(index);
        r.state = state;
        r.ram.clear();
        r.error = error.clone();
    }
    drop(volume);
    let event = Ended {
        event: if state == State::Stopped {
            "stopped"
        } else {
            "failed"
        },
        status,
        error: error.as_deref(),
    };
    shared.say(&name, &event, || match &error {
        Some(e) => format!("failed: {e}"),
        None => "stopped".into(),
    });
}

/// Why a database ended without its guest's exit.
enum Stop {
    /// The fleet stopped before its turn to boot.
    Early,
    Failed(String),
}

#[allow(clippy::too_many_arguments)]
fn boot_and_serve(
    index: usize,
    spec: &spec::Database,
    image: &Mutex<Image>,
    superuser: &str,
    memory_mib: u32,
    volume: Option<&crate::volume::Volume>,
    log: std::fs::File,
    signals: vmm::GuestSignals,
    shared: &Arc<Shared>,
) -> Result<vmm::GuestExit, Stop> {
    let turn = shared
        .gate
        .enter(|| shared.stopping.load(Ordering::SeqCst))
        .ok_or(Stop::Early)?;
    let t0 = Instant::now();
    let cfg = vmm::VmConfig {
        mem_mib: memory_mib,
        cmdline: String::new(),
        timeout: None,
        console: vmm::Console::Log(Some(log)),
        net: Some(vmm::NetConfig {
            publish: vec![spec.publish()],
            tap: None,
        }),
        signals: Some(signals),
        volume: volume.map(crate::volume::Volume::config),
        hibernate: spec.hibernate.clone(),
        vcpu_cpu: None,
    };
    let vm = {
        let image = image.lock().unwrap_or_else(|e| e.into_inner());
        vmm::boot(image.boot(), &cfg)
    }
    .map_err(|e| Stop::Failed(super::describe(&e)))?;
    watch_until_ready(index, spec, superuser, shared.clone(), turn, t0);
    let mut sink = Sink {
        index,
        name: spec.name.clone(),
        shared: shared.clone(),
    };
    crate::serve::serve_guest(vm, &mut sink)
        .map(|outcome| outcome.exit)
        .map_err(|e| Stop::Failed(super::describe(&e)))
}

/// Asks the booted database as a client would until it accepts
/// connections (it is then `running`), on a thread of its own that holds
/// `turn` meanwhile. Gives up when it is no longer booting (it hibernated
/// first, or ended).
fn watch_until_ready(
    index: usize,
    spec: &spec::Database,
    superuser: &str,
    shared: Arc<Shared>,
    turn: Turn,
    t0: Instant,
) {
    let addr = crate::serve::client_addr(&spec.publish());
    let user = superuser.to_string();
    let name = spec.name.clone();
    std::thread::spawn(move || {
        let mut turn = Some(turn);
        loop {
            if shared.record(index).state != State::Booting {
                return;
            }
            if crate::ready::accepts_connections(addr, &user) {
                break;
            }
            if t0.elapsed() > BOOT_PATIENCE {
                turn = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(turn);
        {
            let mut r = shared.record(index);
            if r.state != State::Booting {
                return;
            }
            r.state = State::Running;
        }
        let ready = Ready {
            event: "ready",
            listen: addr.to_string(),
            ready_ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        shared.say(&name, &ready, || {
            format!(
                "accepts connections on {} ({:.0} ms)",
                ready.listen, ready.ready_ms
            )
        });
    });
}

/// The serve loop's events, kept in the database's record and said.
struct Sink {
    index: usize,
    name: String,
    shared: Arc<Shared>,
}

impl ServeEvents for Sink {
    fn running(&mut self, vm: &vmm::Vm) {
        self.shared.record(self.index).ram = vm.ram_host_ranges();
    }

    fn hibernated(&mut self, report: &vmm::HibernateReport) {
        {
            let mut r = self.shared.record(self.index);
            r.state = State::Hibernated;
            r.ram.clear();
            r.memory_file_bytes = Some(report.data_bytes);
            r.hibernations += 1;
        }
        let e = HibernatedEvent::of(report);
        self.shared.say(&self.name, &e, || e.human());
    }

    fn woke(&mut self, wake: vmm::Wake, times: vmm::WakeTimes) {
        let nth = {
            let mut r = self.shared.record(self.index);
            r.state = State::Running;
            r.wakes += 1;
            r.last_wake = Some(LastWake {
                at_unix_ms: unix_ms(wake.at),
                cause: match wake.cause {
                    vmm::WakeCause::Connection => "connection",
                    vmm::WakeCause::Signal => "signal",
                }
                .into(),
                restore_ms: times.restore_ms(),
                first_answer_ms: None,
            });
            r.wakes
        };
        let shared = self.shared.clone();
        let (index, name) = (self.index, self.name.clone());
        crate::serve::when_answered(wake, times, move |e: WokeEvent| {
            {
                let mut r = shared.record(index);
                // Unless it has slept and woken again since.
                if r.wakes == nth
                    && let Some(w) = r.last_wake.as_mut()
                {
                    w.first_answer_ms = e.first_answer_ms;
                }
            }
            shared.say(&name, &e, || e.human());
        });
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

/// Passes a host stop signal on to every database: the first as SIGINT
/// (PostgreSQL's fast shutdown), any later one as SIGQUIT.
pub fn signal_all(shared: &Shared, signals: &[vmm::GuestSignals], nth: usize) {
    shared.stopping.store(true, Ordering::SeqCst);
    let sig = if nth == 0 { SIGINT } else { SIGQUIT };
    for s in signals {
        s.send(sig);
    }
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}
