//! `pgkraft serve`: boot a PostgreSQL image as a server on published ports,
//! say where it listens once it accepts connections, and shut it down
//! cleanly on SIGINT or SIGTERM.
//!
//! Readiness is asked of the server itself, as a client would
//! ([`crate::ready`]): a StartupMessage to the published port, answered
//! with an authentication request. A port the runner has bound but the
//! guest does not yet listen on closes the connection instead.
//!
//! Shutdown: the first SIGINT/SIGTERM becomes SIGINT for the postmaster
//! (PostgreSQL's fast shutdown: sessions end, a shutdown checkpoint is
//! written, the server exits 0 and so does the VM); a second one becomes
//! SIGQUIT (immediate shutdown, crash recovery at the next start).

use crate::image::Image;
use crate::vmm;
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

const SIGINT: u8 = 2;
const SIGQUIT: u8 = 3;

pub struct ServeOptions {
    pub publish: Vec<vmm::PublishRule>,
    pub mem: Option<u32>,
    pub json: bool,
    pub log: Option<PathBuf>,
    /// Serve with the host-linked server of the image's build on a copy of
    /// the image's files instead of booting it (the benchmarks' reference).
    pub native: bool,
    /// The data directory on this volume (taken for this run: held until
    /// the server stops).
    pub volume: Option<crate::volume::Volume>,
    /// Hibernate when idle ([`hibernate_config`]).
    pub hibernate: Option<vmm::HibernateConfig>,
    /// The host CPU the guest's vCPU has to itself (`vmm::VmConfig::vcpu_cpu`).
    pub vcpu_cpu: Option<usize>,
}

/// `--idle-timeout` needs a place for the RAM: `--hibernate-dir`, or
/// `VOLUME.hibernate` beside the volume.
pub fn hibernate_config(
    after: std::time::Duration,
    policy: vmm::IdlePolicy,
    dir: Option<PathBuf>,
    volume: Option<&std::path::Path>,
) -> Result<vmm::HibernateConfig, ServeError> {
    let dir = match (dir, volume) {
        (Some(d), _) => d,
        (None, Some(v)) => {
            let mut name = v
                .file_name()
                .map(|n| n.to_os_string())
                .ok_or(ServeError::NoHibernateDir)?;
            name.push(".hibernate");
            v.with_file_name(name)
        }
        (None, None) => return Err(ServeError::NoHibernateDir),
    };
    Ok(vmm::HibernateConfig { after, dir, policy })
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--publish: give at least one port, e.g. --publish 5432:5432")]
    NoPort,
    #[error(
        "--idle-timeout: a hibernated VM's RAM goes to a directory; give --hibernate-dir DIR, \
         or a --volume DIR (then DIR.hibernate beside it)"
    )]
    NoHibernateDir,
    #[error("cannot open the log file {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
    #[error("the server stopped with status {0} (its log says why)")]
    Status(u8),
    #[error("the guest died:\n{0}")]
    Died(String),
    #[error(transparent)]
    Native(#[from] crate::smoke::native::NativeError),
    #[error("the native server: {0}")]
    NativeWait(std::io::Error),
}

#[derive(Serialize)]
struct Ready {
    event: &'static str,
    image: String,
    listen: Vec<String>,
    ready_ms: f64,
}

#[derive(Serialize)]
struct Stopped<'a> {
    event: &'a str,
    status: u8,
    /// VM exits over the whole run (none for --native).
    #[serde(skip_serializing_if = "Option::is_none")]
    vm_exits: Option<u64>,
}

/// The address a client uses for `rule`: its host address (the wildcard
/// means loopback will do) and port.
pub(crate) fn client_addr(rule: &vmm::PublishRule) -> SocketAddr {
    let ip = match rule.host.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, rule.host.port())
}

/// Probes `addr` until the server answers (or `done`), then says so on
/// stdout: `ready` as a JSON line, or a sentence.
fn announce_when_ready(
    addr: SocketAddr,
    mut ready: Ready,
    user: &str,
    json: bool,
    t0: Instant,
    done: &AtomicBool,
) {
    if !crate::ready::wait_until_accepting(addr, user, || done.load(Ordering::SeqCst)) {
        return;
    }
    ready.ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if json {
        println!("{}", serde_json::to_string(&ready).expect("serializes"));
    } else {
        println!(
            "pgkraft: {} accepts connections on {} ({:.0} ms); Ctrl-C stops it",
            ready.image,
            ready.listen.join(", "),
            ready.ready_ms
        );
    }
    let _ = std::io::stdout().flush();
}

/// Where the server runs.
enum Backend {
    Guest(vmm::GuestSignals, Box<vmm::Vm>),
    Native(std::process::Child),
}

impl Backend {
    /// Passes a host signal on: the first as SIGINT (fast shutdown), any
    /// later one as SIGQUIT (immediate shutdown).
    fn forward(&self) -> Box<dyn Fn(usize) + Send> {
        match self {
            Backend::Guest(s, _) => {
                let s = s.clone();
                Box::new(move |n| s.send(if n == 0 { SIGINT } else { SIGQUIT }))
            }
            Backend::Native(child) => {
                let pid = rustix::process::Pid::from_raw(child.id() as i32);
                Box::new(move |n| {
                    let sig = if n == 0 {
                        rustix::process::Signal::INT
                    } else {
                        rustix::process::Signal::QUIT
                    };
                    if let Some(pid) = pid {
                        let _ = rustix::process::kill_process(pid, sig);
                    }
                })
            }
        }
    }
}

/// `hibernated`: what a hibernation cost and left on disk.
#[derive(Serialize)]
pub struct HibernatedEvent {
    event: &'static str,
    pub save_ms: f64,
    pub memory_file: String,
    pub memory_bytes: u64,
    pub data_bytes: u64,
    /// This process's resident memory once hibernated.
    pub rss_bytes: Option<u64>,
}

impl HibernatedEvent {
    pub fn of(r: &vmm::HibernateReport) -> HibernatedEvent {
        HibernatedEvent {
            event: "hibernated",
            save_ms: r.save_ms,
            memory_file: r.memory_file.display().to_string(),
            memory_bytes: r.memory_bytes,
            data_bytes: r.data_bytes,
            rss_bytes: rss_bytes(),
        }
    }

    pub fn human(&self) -> String {
        format!(
            "idle: hibernated ({:.1} MB of RAM to {}, {:.0} ms)",
            self.data_bytes as f64 / 1e6,
            self.memory_file,
            self.save_ms
        )
    }
}

/// `woke`: what a wake cost, once the guest answered (or gave up on).
#[derive(Serialize)]
pub struct WokeEvent {
    event: &'static str,
    pub cause: &'static str,
    /// From the wake's cause (the client's connection seen) to the VM
    /// restored, to the guest running, and to its first bytes to a client.
    pub restore_ms: f64,
    pub resumed_ms: Option<f64>,
    pub first_answer_ms: Option<f64>,
}

impl WokeEvent {
    pub fn human(&self) -> String {
        let answer = match (self.cause, self.first_answer_ms) {
            // Woken to stop: no client waits for an answer.
            ("signal", _) => String::new(),
            (_, Some(ms)) => format!(", first answer after {ms:.1} ms"),
            (_, None) => ", no answer yet".into(),
        };
        format!(
            "woke for a {}: restored in {:.1} ms{answer}",
            self.cause, self.restore_ms
        )
    }
}

/// How long [`when_answered`] waits for a woken guest's first answer.
const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Calls `then` on a thread of its own once the woken guest sent its first
/// bytes to a client (or after [`FIRST_ANSWER_WAIT`] without; at once for
/// a wake no client asked for). [`vmm::WakeTimes::first_answer_ms`] is the
/// time of the latest answer since the wake, so it is read as soon as there
/// is one.
pub fn when_answered(
    wake: vmm::Wake,
    times: vmm::WakeTimes,
    then: impl FnOnce(WokeEvent) + Send + 'static,
) {
    std::thread::spawn(move || {
        let t = Instant::now();
        while times.first_answer_ms().is_none()
            && wake.cause == vmm::WakeCause::Connection
            && t.elapsed() < FIRST_ANSWER_WAIT
        {
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        then(WokeEvent {
            event: "woke",
            cause: match wake.cause {
                vmm::WakeCause::Connection => "connection",
                vmm::WakeCause::Signal => "signal",
            },
            restore_ms: times.restore_ms(),
            resumed_ms: times.resumed_ms(),
            first_answer_ms: times.first_answer_ms(),
        });
    });
}

/// This process's resident memory (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// What [`serve_guest`] says as it goes: `pgkraft serve` prints it, a
/// fleet's supervisor keeps it for each of its databases.
pub trait ServeEvents {
    /// The guest is about to run: booted, or woken.
    fn running(&mut self, _vm: &vmm::Vm) {}
    fn hibernated(&mut self, report: &vmm::HibernateReport);
    /// Woken by `wake`; `times` fill in as the guest runs
    /// ([`when_answered`]).
    fn woke(&mut self, wake: vmm::Wake, times: vmm::WakeTimes);
    /// Whether the guest has been asked to stop (a signal sent).
    fn stopping(&self) -> bool;
}

/// Runs the VM until it ends, hibernating it whenever it is idle and
/// waking it at the next connection (or signal).
pub fn serve_guest(
    mut vm: vmm::Vm,
    events: &mut dyn ServeEvents,
) -> Result<vmm::RunOutcome, ServeError> {
    loop {
        events.running(&vm);
        let h = match vm.serve()? {
            vmm::Served::Ended(outcome) => return Ok(outcome),
            vmm::Served::Hibernated(h) => h,
        };
        events.hibernated(&h.report);
        // A guest asked to stop may still wait in its shutdown (on an
        // fsync, say) past its idle timeout and hibernate: it would then
        // sleep until a client came. It wakes at once to finish instead.
        let wake = match events.stopping() {
            true => vmm::Wake {
                cause: vmm::WakeCause::Signal,
                at: Instant::now(),
            },
            false => h.wait_for_wake()?,
        };
        let (woken, times) = h.wake(wake)?;
        vm = woken;
        events.woke(wake, times);
    }
}

/// `pgkraft serve`'s events: JSON lines on stdout, or sentences on stderr.
struct Say {
    json: bool,
    /// Set once a host signal was passed on.
    stopping: Arc<AtomicBool>,
}

impl Say {
    fn say(json: bool, event: &impl Serialize, human: String) {
        if json {
            println!("{}", serde_json::to_string(event).expect("serializes"));
        } else {
            eprintln!("pgkraft: {human}");
        }
        let _ = std::io::stdout().flush();
    }
}

impl ServeEvents for Say {
    fn hibernated(&mut self, report: &vmm::HibernateReport) {
        let e = HibernatedEvent::of(report);
        Say::say(self.json, &e, e.human());
    }

    fn woke(&mut self, wake: vmm::Wake, times: vmm::WakeTimes) {
        let json = self.json;
        when_answered(wake, times, move |e| Say::say(json, &e, e.human()));
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Serves until the server exits; Ok on a clean stop.
pub fn serve(image: &Image, opts: ServeOptions) -> Result<(), ServeError> {
    if opts.publish.is_empty() {
        return Err(ServeError::NoPort);
    }
    let log = match &opts.log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ServeError::Log {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let probe_rule = *opts
        .publish
        .iter()
        .find(|r| r.guest_port == 5432)
        .unwrap_or(&opts.publish[0]);
    // Handlers first: a Ctrl-C from here on reaches the server (once there
    // is one) instead of killing pgkraft and leaving it running.
    let mut host_signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(ServeError::Signals)?;
    // The native server needs its copy first; its start is the clock's.
    let native = match opts.native {
        true => {
            let postgres = crate::smoke::native::host_postgres(image.path())?;
            Some(crate::smoke::native::NativeServer::prepare(
                image.path(),
                &postgres,
            )?)
        }
        false => None,
    };
    let t0 = Instant::now();
    let backend = match &native {
        Some(n) => {
            let out = match &log {
                Some(f) => {
                    std::process::Stdio::from(f.try_clone().map_err(|source| ServeError::Log {
                        path: opts.log.clone().unwrap_or_default(),
                        source,
                    })?)
                }
                None => std::process::Stdio::inherit(),
            };
            Backend::Native(n.spawn_server(client_addr(&probe_rule), out)?)
        }
        None => {
            // Booted (its published ports bound) before the readiness
            // probe starts: a port someone else holds is this run's error,
            // and that someone's answers are never taken for ours.
            let signals = vmm::GuestSignals::new().map_err(ServeError::Signals)?;
            let cfg = vmm::VmConfig {
                mem_mib: image.memory_mib(opts.mem),
                cmdline: String::new(),
                timeout: None,
                console: vmm::Console::Log(log),
                net: Some(vmm::NetConfig {
                    publish: opts.publish.clone(),
                    tap: None,
                }),
                signals: Some(signals.clone()),
                volume: opts.volume.as_ref().map(crate::volume::Volume::config),
                hibernate: opts.hibernate.clone(),
                vcpu_cpu: opts.vcpu_cpu,
            };
            Backend::Guest(signals, Box::new(vmm::boot(image.boot(), &cfg)?))
        }
    };
    let handle = host_signals.handle();
    let forward = backend.forward();
    let stopping = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let stopping = stopping.clone();
        std::thread::spawn(move || {
            for (n, _) in host_signals.forever().enumerate() {
                stopping.store(true, Ordering::SeqCst);
                forward(n);
            }
        })
    };

    let done = Arc::new(AtomicBool::new(false));
    let probe = {
        let done = done.clone();
        let addr = client_addr(&probe_rule);
        let listen: Vec<String> = match &native {
            Some(_) => vec![addr.to_string()],
            None => opts
                .publish
                .iter()
                .map(|r| client_addr(r).to_string())
                .collect(),
        };
        let ready = Ready {
            event: "ready",
            image: image.path().display().to_string(),
            listen,
            ready_ms: 0.0,
        };
        let json = opts.json;
        let user = image.superuser().to_string();
        std::thread::spawn(move || announce_when_ready(addr, ready, &user, json, t0, &done))
    };

    let outcome = match backend {
        Backend::Guest(_, vm) => serve_guest(
            *vm,
            &mut Say {
                json: opts.json,
                stopping,
            },
        )
        .and_then(|o| match o.exit {
            vmm::GuestExit::Status(s) => Ok((s, Some(o.exits))),
            vmm::GuestExit::Timeout => unreachable!("serve sets no timeout"),
            vmm::GuestExit::Shutdown { regs } => Err(ServeError::Died(regs)),
        }),
        Backend::Native(mut child) => child
            .wait()
            .map(|st| {
                use std::os::unix::process::ExitStatusExt;
                let code = st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(128);
                (code as u8, None)
            })
            .map_err(ServeError::NativeWait),
    };
    done.store(true, Ordering::SeqCst);
    handle.close();
    let _ = forwarder.join();
    let _ = probe.join();
    let (status, vm_exits) = outcome?;
    if opts.json {
        let s = Stopped {
            event: "stopped",
            status,
            vm_exits,
        };
        println!("{}", serde_json::to_string(&s).expect("serializes"));
    }
    match status {
        0 => Ok(()),
        s => Err(ServeError::Status(s)),
    }
}
