//! `pgkraft serve`: boot a PostgreSQL image as a server on published ports,
//! say where it listens once it accepts connections, and shut it down
//! cleanly on SIGINT or SIGTERM.
//!
//! Readiness is asked of the server itself, as a client would: a TCP
//! connection to the published port that sends PostgreSQL's SSLRequest and
//! gets its one-byte answer. A port the runner has bound but the guest does
//! not yet listen on closes the connection instead.
//!
//! Shutdown: the first SIGINT/SIGTERM becomes SIGINT for the postmaster
//! (PostgreSQL's fast shutdown: sessions end, a shutdown checkpoint is
//! written, the server exits 0 and so does the VM); a second one becomes
//! SIGQUIT (immediate shutdown, crash recovery at the next start).

use crate::image::Image;
use crate::vmm;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SIGINT: u8 = 2;
const SIGQUIT: u8 = 3;
/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub struct ServeOptions {
    pub publish: Vec<vmm::PublishRule>,
    pub mem: Option<u32>,
    pub json: bool,
    pub log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--publish: give at least one port, e.g. --publish 5432:5432")]
    NoPort,
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
}

#[derive(Serialize)]
struct Ready<'a> {
    event: &'a str,
    image: String,
    listen: Vec<String>,
    ready_ms: f64,
}

#[derive(Serialize)]
struct Stopped<'a> {
    event: &'a str,
    status: u8,
}

/// The address a client uses for `rule`: its host address (the wildcard
/// means loopback will do) and port.
fn client_addr(rule: &vmm::PublishRule) -> SocketAddr {
    let ip = match rule.host.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, rule.host.port())
}

/// Whether a PostgreSQL server answers an SSLRequest at `addr`.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = [0u8; 1];
    s.write_all(&SSL_REQUEST).is_ok() && s.read_exact(&mut b).is_ok() && matches!(b[0], b'N' | b'S')
}

/// Boots the image and serves until the guest exits; Ok on a clean stop.
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
    let signals = vmm::GuestSignals::new().map_err(ServeError::Signals)?;
    let mut host_signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .map_err(ServeError::Signals)?;
    let handle = host_signals.handle();
    let to_guest = signals.clone();
    let forwarder = std::thread::spawn(move || {
        for (n, _) in host_signals.forever().enumerate() {
            to_guest.send(if n == 0 { SIGINT } else { SIGQUIT });
        }
    });

    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let probe = {
        let done = done.clone();
        let addr = client_addr(
            opts.publish
                .iter()
                .find(|r| r.guest_port == 5432)
                .unwrap_or(&opts.publish[0]),
        );
        let listen: Vec<String> = opts.publish.iter().map(|r| client_addr(r).to_string()).collect();
        let (json, name) = (opts.json, image.path().display().to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if answers(addr) {
                    let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    if json {
                        let r = Ready {
                            event: "ready",
                            image: name,
                            listen,
                            ready_ms,
                        };
                        println!("{}", serde_json::to_string(&r).expect("serializes"));
                    } else {
                        println!(
                            "pgkraft: {name} accepts connections on {} ({ready_ms:.0} ms); Ctrl-C stops it",
                            listen.join(", ")
                        );
                    }
                    let _ = std::io::stdout().flush();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let cfg = vmm::VmConfig {
        mem_mib: image.memory_mib(opts.mem),
        cmdline: String::new(),
        timeout: None,
        console: vmm::Console::Log(log),
        net: Some(vmm::NetConfig {
            publish: opts.publish,
            tap: None,
        }),
        signals: Some(signals),
    };
    let outcome = vmm::run(image.boot(), &cfg);
    done.store(true, Ordering::SeqCst);
    handle.close();
    let _ = forwarder.join();
    let _ = probe.join();
    let status = match outcome?.exit {
        vmm::GuestExit::Status(s) => s,
        vmm::GuestExit::Timeout => unreachable!("serve sets no timeout"),
        vmm::GuestExit::Shutdown { regs } => return Err(ServeError::Died(regs)),
    };
    if opts.json {
        let s = Stopped {
            event: "stopped",
            status,
        };
        println!("{}", serde_json::to_string(&s).expect("serializes"));
    }
    match status {
        0 => Ok(()),
        s => Err(ServeError::Status(s)),
    }
}
