//! Server mode: the image serves on a loopback port (or the host-linked
//! server of its build serves a copy of its files, `--native`) and the
//! checks run through a real PostgreSQL client, the `postgres` crate, as
//! the cluster's superuser with its password, over TCP: what an
//! application does, including what needs more than one connection
//! (notifications, locks, many clients at once).
//!
//! A run: start the server, wait until it accepts connections
//! ([`crate::ready`], as `pgkraft serve` does), run the checks in order,
//! then stop it with SIGINT (fast shutdown) and check that it shut down
//! cleanly. The checks are bounded by the definition's `timeout_secs`
//! (the server is stopped then, which ends whatever a check waits for);
//! the shutdown has [`SHUTDOWN_GRACE`] more.

use super::native::{NativeError, NativeServer};
use super::{Check, CheckSpec, Mode, Rows, SmokeError, SmokeReport, TestVm, judge, ms};
use crate::image::Image;
use crate::vmm;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;
use postgres::{Client, SimpleQueryMessage};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIGINT: u8 = 2;
/// The session of checks that name none.
const MAIN_SESSION: &str = "main";
/// How long a check may take to see what another session caused (a lock
/// wait, a notification), within the run's own timeout.
const OBSERVE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "{}: the image carries no PostgreSQL build facts (not a postgres image, or built by \
         an older pgkraft)\n  fix: rebuild it with `pgkraft build RECIPE`",
        image.display()
    )]
    NotPostgres { image: PathBuf },
    #[error(
        "{}: server-mode checks log in as the superuser `{user}` with the password the image \
         was built with, from {var}, which is not set (or empty)\n  fix: set {var} to that \
         password (the recipe's cluster.password_env)",
        image.display()
    )]
    NoPassword {
        image: PathBuf,
        user: String,
        var: String,
    },
    #[error(
        "{}: its build generated the superuser's password into {}, which is missing or empty\n  \
         fix: keep the password file next to the image, or rebuild with the recipe's \
         cluster.password_env set",
        image.display(),
        file.display()
    )]
    NoPasswordFile { image: PathBuf, file: PathBuf },
    #[error(transparent)]
    Image(crate::image::ImageError),
}

/// Who the checks log in as.
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
}

impl Credentials {
    /// A client's settings for the server at `addr`, logging in as these.
    pub fn client_config(&self, addr: SocketAddr, timeout: Duration) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host(&addr.ip().to_string())
            .port(addr.port())
            .user(&self.user)
            .dbname("postgres")
            .connect_timeout(timeout);
        if let Some(p) = &self.password {
            config.password(p);
        }
        config
    }
}

/// The cluster's superuser and its password: the generated password file
/// the build wrote next to the image, if it generated one; else the
/// environment variable the recipe names (as at build time). `auth:
/// trust` needs none.
pub fn credentials(info: &Image) -> Result<Credentials, CredentialsError> {
    let image = info.path();
    let not_postgres = || CredentialsError::NotPostgres {
        image: image.to_path_buf(),
    };
    let build = info.build().ok_or_else(not_postgres)?;
    let facts = build.postgres.as_ref().ok_or_else(not_postgres)?;
    let user = facts.superuser.clone();
    let Some(var) = facts.password_env.clone() else {
        return Ok(Credentials {
            user,
            password: None,
        });
    };
    let password = match &facts.password_file {
        Some(name) => {
            let file = image.with_file_name(name);
            std::fs::read_to_string(&file)
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .ok_or(CredentialsError::NoPasswordFile {
                    image: image.to_path_buf(),
                    file,
                })?
        }
        None => std::env::var(&var).ok().filter(|p| !p.is_empty()).ok_or(
            CredentialsError::NoPassword {
                image: image.to_path_buf(),
                user: user.clone(),
                var,
            },
        )?,
    };
    Ok(Credentials {
        user,
        password: Some(password),
    })
}

/// A free TCP port on 127.0.0.1 for the server to be published on.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What a run's server did, whichever runs it.
struct Ended {
    exit: String,
    exit_status: Option<u8>,
    log: String,
    vm_exits: u64,
    guest_memory: Option<vmm::MemoryUse>,
}

/// Boots `image` as a server (on `volume`, if given) and runs `spec`'s
/// checks against it.
pub fn run_guest(
    image: &Image,
    spec: &TestVm,
    volume: Option<vmm::VolumeConfig>,
) -> Result<SmokeReport, SmokeError> {
    let creds = credentials(image)?;
    let port = free_port().map_err(SmokeError::Port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let signals = vmm::GuestSignals::new().map_err(SmokeError::Signals)?;
    let cfg = vmm::VmConfig {
        mem_mib: image.memory_mib(spec.memory_mib),
        // The image's own arguments: the postmaster.
        cmdline: String::new(),
        // The checks end at timeout_secs; the shutdown gets its grace.
        timeout: Some(Duration::from_secs_f64(spec.timeout_secs) + SHUTDOWN_GRACE),
        console: vmm::Console::Capture { input: Vec::new() },
        net: Some(vmm::NetConfig {
            publish: vec![vmm::PublishRule {
                host: addr,
                guest_port: 5432,
            }],
            tap: None,
        }),
        signals: Some(signals.clone()),
        volume,
        hibernate: None,
        vcpu_cpu: None,
    };
    let t0 = Instant::now();
    // The runner keeps this thread (a booted image is not shared between
    // threads); the client side runs beside it and stops the server when
    // it is done.
    let vm_ended = std::sync::atomic::AtomicBool::new(false);
    let (session, outcome) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let session = drive(addr, &creds, spec, t0, || {
                vm_ended.load(std::sync::atomic::Ordering::SeqCst)
            });
            signals.send(SIGINT);
            session
        });
        let outcome = vmm::run(image.boot(), &cfg);
        vm_ended.store(true, std::sync::atomic::Ordering::SeqCst);
        let session = client.join().expect("the client thread does not panic");
        (session, outcome)
    });
    let outcome = outcome?;
    let (exit, exit_status) = super::exit_text(&outcome.exit);
    let ended = Ended {
        exit,
        exit_status,
        log: String::from_utf8_lossy(&outcome.console).into_owned(),
        vm_exits: outcome.exits,
        guest_memory: outcome.memory,
    };
    Ok(report(
        image.path(),
        image.file_bytes(),
        "kvm",
        session,
        ended,
        t0,
    ))
}

/// Starts the host-linked `postgres` on a copy of `image`'s files and runs
/// `spec`'s checks against it.
pub fn run_native(
    image: &Path,
    spec: &TestVm,
    postgres: &Path,
) -> Result<SmokeReport, NativeError> {
    let creds = credentials(&Image::open(image).map_err(CredentialsError::Image)?)?;
    let server = NativeServer::prepare(image, postgres)?;
    let port = free_port().map_err(|source| NativeError::Io {
        what: "cannot find a free port on",
        path: "127.0.0.1".into(),
        source,
    })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    let mut child = server.spawn_server(addr, std::process::Stdio::piped())?;
    let mut stderr = child.stderr.take().expect("piped");
    let log_reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stderr.read_to_end(&mut log);
        log
    });
    let child = std::sync::Mutex::new(child);
    let lock = || child.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = t0 + Duration::from_secs_f64(spec.timeout_secs);
    let checks_done = std::sync::atomic::AtomicBool::new(false);
    let exited = std::thread::scope(|s| {
        // The time limit, whatever the checks wait for (a statement that
        // never ends, a lock never released): killing the server ends
        // every connection, and with them every check's wait.
        s.spawn(|| {
            while !checks_done.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    // std's kill never signals a child already reaped.
                    let _ = lock().kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let session = drive(addr, &creds, spec, t0, || {
            matches!(lock().try_wait(), Ok(Some(_)))
        });
        checks_done.store(true, std::sync::atomic::Ordering::SeqCst);
        (session, stop_native(&mut lock()))
    });
    let (session, exited) = exited;
    let log = log_reader.join().unwrap_or_default();
    let (exit, exit_status) = super::native::exit_text(exited);
    let ended = Ended {
        exit,
        exit_status,
        log: String::from_utf8_lossy(&log).into_owned(),
        vm_exits: 0,
        guest_memory: None,
    };
    let bytes = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
    Ok(report(image, bytes, "native", session, ended, t0))
}

/// How long a server has to shut down after the checks, beyond
/// `timeout_secs` (which the checks may have used up).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Asks a native server to shut down (SIGINT, fast shutdown) and waits
/// [`SHUTDOWN_GRACE`] for it, then kills it: its exit status, None if it
/// had to be killed.
fn stop_native(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    // Not reaped yet, so the pid is still the server's.
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let limit = Instant::now() + SHUTDOWN_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// What the client side of a run saw.
struct Session {
    ready_ms: Option<f64>,
    checks: Vec<Check>,
}

/// Waits for the server at `addr` (until `ended()` or the timeout), then
/// runs every check.
fn drive(
    addr: SocketAddr,
    creds: &Credentials,
    spec: &TestVm,
    t0: Instant,
    mut ended: impl FnMut() -> bool,
) -> Session {
    let deadline = t0 + Duration::from_secs_f64(spec.timeout_secs);
    let ready = crate::ready::wait_until_accepting(addr, &creds.user, || {
        ended() || Instant::now() >= deadline
    });
    if !ready {
        let why = if Instant::now() >= deadline {
            format!(
                "the server did not accept connections within timeout_secs ({}s)",
                spec.timeout_secs
            )
        } else {
            "the server ended before it accepted connections".to_string()
        };
        return Session {
            ready_ms: None,
            checks: not_reached(&spec.checks, &why),
        };
    }
    let ready_ms = Some(ms(t0.elapsed()));
    let mut config = creds.client_config(addr, Duration::from_secs(20));
    config.application_name("pgkraft smoke");
    let mut run = Runner {
        config,
        sessions: BTreeMap::new(),
        observer: None,
        checks: Vec::new(),
        t0,
        deadline,
    };
    for c in &spec.checks {
        if Instant::now() >= deadline {
            let why = format!("not reached within timeout_secs ({}s)", spec.timeout_secs);
            let done = run.checks.len();
            run.finish_all();
            run.checks.extend(not_reached(&spec.checks[done..], &why));
            break;
        }
        run.check(c);
    }
    run.finish_all();
    Session {
        ready_ms,
        checks: run.checks,
    }
}

fn not_reached(checks: &[CheckSpec], why: &str) -> Vec<Check> {
    checks
        .iter()
        .map(|c| Check {
            name: c.name.clone(),
            ok: false,
            actual: Some(why.to_string()),
            ..Check::default()
        })
        .collect()
}

/// A named client connection.
enum Conn {
    Idle {
        client: Box<Client>,
        pid: i32,
    },
    /// Running a `blocks` check (its index in the report) on a thread.
    Busy {
        pid: i32,
        check: usize,
        spec: Box<CheckSpec>,
        blocked: Result<(), String>,
        thread: std::thread::JoinHandle<(Client, Answer)>,
    },
}

/// A statement's answer as the checks judge it.
#[derive(Default)]
struct Answer {
    errors: Vec<String>,
    rows: Option<Rows>,
    copy_out: Option<String>,
    notifications: Vec<(String, String)>,
    at_ms: f64,
}

struct Runner {
    config: postgres::Config,
    sessions: BTreeMap<String, Conn>,
    /// A connection of its own that watches pg_stat_activity.
    observer: Option<Client>,
    checks: Vec<Check>,
    t0: Instant,
    deadline: Instant,
}

impl Runner {
    fn check(&mut self, c: &CheckSpec) {
        if let Some(n) = c.clients {
            let check = self.many_clients(c, n);
            self.checks.push(check);
            return;
        }
        let name = c.session.as_deref().unwrap_or(MAIN_SESSION);
        let (mut client, pid) = match self.idle(name) {
            Ok(v) => v,
            Err(e) => {
                self.checks
                    .push(failed(c, format!("cannot connect: {}", error_text(&e))));
                return;
            }
        };
        if !c.blocks {
            let answer = execute(&mut client, c, self.t0);
            let client = Box::new(client);
            self.sessions
                .insert(name.to_string(), Conn::Idle { client, pid });
            self.checks.push(judge_answer(c, answer));
            return;
        }
        let index = self.checks.len();
        self.checks.push(failed(c, "not finished".into()));
        let spec = Box::new(c.clone());
        let t0 = self.t0;
        let thread = {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let answer = execute(&mut client, &spec, t0);
                (client, answer)
            })
        };
        let blocked = self.await_lock_wait(pid, &thread);
        self.sessions.insert(
            name.to_string(),
            Conn::Busy {
                pid,
                check: index,
                spec,
                blocked,
                thread,
            },
        );
    }

    /// Session `name`'s connection, free: opened at first use; a statement
    /// still running on it is awaited and judged first.
    fn idle(&mut self, name: &str) -> Result<(Client, i32), postgres::Error> {
        match self.sessions.remove(name) {
            Some(Conn::Idle { client, pid }) => Ok((*client, pid)),
            Some(busy @ Conn::Busy { pid, .. }) => {
                let client = self.finish(busy);
                Ok((client, pid))
            }
            None => {
                let mut client = self.config.connect(postgres::NoTls)?;
                let pid = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
                Ok((client, pid))
            }
        }
    }

    /// Awaits a `blocks` statement and judges it.
    fn finish(&mut self, conn: Conn) -> Client {
        let Conn::Busy {
            check,
            spec,
            blocked,
            thread,
            ..
        } = conn
        else {
            unreachable!("only a busy session is finished")
        };
        let (client, answer) = thread.join().expect("a check thread does not panic");
        self.checks[check] = match blocked {
            Ok(()) => judge_answer(&spec, answer),
            Err(why) => Check {
                name: spec.name.clone(),
                ok: false,
                expected: Some("waits for a lock another session holds".into()),
                actual: Some(why),
                ..Check::default()
            },
        };
        client
    }

    /// Awaits every `blocks` statement still running (at the end of the
    /// checks, or when the time is up).
    fn finish_all(&mut self) {
        // Other sessions' open transactions may be what a busy one waits
        // for: they end first.
        self.sessions.retain(|_, c| matches!(c, Conn::Busy { .. }));
        self.observer = None;
        let busy: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Busy { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in busy {
            if let Some(conn) = self.sessions.remove(&name) {
                self.finish(conn);
            }
        }
    }

    /// Whether backend `pid` comes to wait on a lock (as the server
    /// reports in pg_stat_activity) before its statement ends.
    fn await_lock_wait(
        &mut self,
        pid: i32,
        thread: &std::thread::JoinHandle<(Client, Answer)>,
    ) -> Result<(), String> {
        let limit = (Instant::now() + OBSERVE_LIMIT).min(self.deadline);
        loop {
            if thread.is_finished() {
                return Err("it finished without waiting for a lock".into());
            }
            let observer = match &mut self.observer {
                Some(o) => o,
                None => {
                    let o = self
                        .config
                        .connect(postgres::NoTls)
                        .map_err(|e| format!("cannot connect an observer: {}", error_text(&e)))?;
                    self.observer.insert(o)
                }
            };
            let wait: Option<String> = observer
                .query_opt(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .map_err(|e| format!("cannot read pg_stat_activity: {}", error_text(&e)))?
                .and_then(|r| r.get(0));
            if wait.as_deref() == Some("Lock") {
                return Ok(());
            }
            if Instant::now() >= limit {
                return Err(format!(
                    "it did not wait for a lock within {} s",
                    OBSERVE_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Check `c` on `n` new connections at once: all connect, then all run
    /// it; the check passes if every one answers as expected.
    fn many_clients(&self, c: &CheckSpec, n: u32) -> Check {
        let barrier = std::sync::Barrier::new(n as usize);
        let (config, t0) = (&self.config, self.t0);
        let answers: Vec<Result<Answer, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let client = config.connect(postgres::NoTls);
                        // Everyone waits here, connected or not, so nobody
                        // waits for a client that failed.
                        barrier.wait();
                        let mut client =
                            client.map_err(|e| format!("cannot connect: {}", error_text(&e)))?;
                        Ok(execute(&mut client, c, t0))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a client thread does not panic"))
                .collect()
        });
        let mut last = None;
        for (i, a) in answers.into_iter().enumerate() {
            let check = match a {
                Ok(a) => judge_answer(c, a),
                Err(e) => failed(c, e),
            };
            if !check.ok {
                let mut check = check;
                check.actual = Some(format!(
                    "client {} of {n}: {}",
                    i + 1,
                    check.actual.unwrap_or_default()
                ));
                return check;
            }
            last = Some(check);
        }
        last.unwrap_or_else(|| failed(c, "no client ran".into()))
    }
}

fn failed(c: &CheckSpec, why: String) -> Check {
    Check {
        name: c.name.clone(),
        ok: false,
        expected: Some(super::expected_text(c)),
        actual: Some(why),
        ..Check::default()
    }
}

/// Runs check `c`'s statement on `client` the way its keys say.
fn execute(client: &mut Client, c: &CheckSpec, t0: Instant) -> Answer {
    let mut answer = Answer::default();
    let result = if c.sql.trim().is_empty() {
        Ok(())
    } else if let Some(data) = &c.copy_in {
        copy_in(client, &c.sql, data)
    } else if c.copy_out.is_some() {
        match copy_out(client, &c.sql) {
            Ok(text) => {
                answer.copy_out = Some(text);
                Ok(())
            }
            Err(CopyOutError::Pg(e)) => Err(e),
            Err(CopyOutError::Io(e)) => {
                answer.errors.push(format!("reading the COPY output: {e}"));
                Ok(())
            }
        }
    } else if let Some(params) = &c.params {
        prepared(client, &c.sql, params).map(|rows| answer.rows = Some(rows))
    } else {
        simple(client, &c.sql).map(|rows| answer.rows = rows)
    };
    if let Err(e) = result {
        answer.errors.push(error_text(&e));
    } else if !c.notifications.is_empty() {
        answer.notifications = notifications(client, c.notifications.len());
    }
    answer.at_ms = ms(t0.elapsed());
    answer
}

/// An error as the server said it (`ERROR:  message`), or the client's
/// words for what went wrong on the connection.
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}:  {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Runs `sql` (one or more statements) in the simple protocol; the last
/// result set, values as the server's text.
fn simple(client: &mut Client, sql: &str) -> Result<Option<Rows>, postgres::Error> {
    let mut last = None;
    let mut current: Option<Rows> = None;
    for m in client.simple_query(sql)? {
        match m {
            SimpleQueryMessage::RowDescription(_) => current = Some(Vec::new()),
            SimpleQueryMessage::Row(r) => current
                .get_or_insert_with(Vec::new)
                .push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            SimpleQueryMessage::CommandComplete(_) => {
                if let Some(rows) = current.take() {
                    last = Some(rows);
                }
            }
            _ => {}
        }
    }
    Ok(last)
}

/// Prepares `sql` with text parameters and runs it: the extended protocol,
/// as drivers run statements.
fn prepared(client: &mut Client, sql: &str, params: &[String]) -> Result<Rows, postgres::Error> {
    let types = vec![Type::TEXT; params.len()];
    let statement = client.prepare_typed(sql, &types)?;
    let args: Vec<&(dyn postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let rows = client.query(&statement, &args)?;
    Ok(rows
        .iter()
        .map(|r| (0..r.len()).map(|i| value_text(r, i)).collect())
        .collect())
}

/// A column of a binary result row as PostgreSQL would print it, for the
/// types a check compares; anything else says to cast it to text.
fn value_text(row: &postgres::Row, i: usize) -> Option<String> {
    fn get<'a, T: postgres::types::FromSql<'a> + ToString>(
        row: &'a postgres::Row,
        i: usize,
    ) -> Option<String> {
        row.try_get::<_, Option<T>>(i)
            .ok()
            .flatten()
            .map(|v| v.to_string())
    }
    match *row.columns()[i].type_() {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .ok()
            .flatten()
            .map(|b| if b { "t" } else { "f" }.to_string()),
        Type::INT2 => get::<i16>(row, i),
        Type::INT4 => get::<i32>(row, i),
        Type::INT8 => get::<i64>(row, i),
        Type::OID => get::<u32>(row, i),
        Type::FLOAT4 => get::<f32>(row, i),
        Type::FLOAT8 => get::<f64>(row, i),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get::<String>(row, i)
        }
        ref other => Some(format!(
            "<a {other} value: cast the column to text in the check's SQL>"
        )),
    }
}

fn copy_in(client: &mut Client, sql: &str, data: &str) -> Result<(), postgres::Error> {
    let mut w = client.copy_in(sql)?;
    // A write error is the server's: finish() reports it.
    let _ = w.write_all(data.as_bytes());
    w.finish().map(|_| ())
}

/// The whole output of a `COPY ... TO STDOUT`, or the error that ended it
/// (the server's, when it fails mid-stream, comes as the reader's I/O
/// error wrapping a `postgres::Error`).
fn copy_out(client: &mut Client, sql: &str) -> Result<String, CopyOutError> {
    let mut r = client.copy_out(sql).map_err(CopyOutError::Pg)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<postgres::Error>())
        {
            Some(_) => match e.into_inner().map(|b| b.downcast::<postgres::Error>()) {
                Some(Ok(pg)) => CopyOutError::Pg(*pg),
                _ => CopyOutError::Io(std::io::Error::other("COPY output ended")),
            },
            None => CopyOutError::Io(e),
        }
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

enum CopyOutError {
    Pg(postgres::Error),
    Io(std::io::Error),
}

/// The notifications the session has received, waiting (up to
/// OBSERVE_LIMIT) until there are `want` of them.
fn notifications(client: &mut Client, want: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let limit = Instant::now() + OBSERVE_LIMIT;
    while got.len() < want {
        let left = limit.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut n = client.notifications();
        match n.timeout_iter(left).next() {
            Ok(Some(n)) => got.push((n.channel().to_string(), n.payload().to_string())),
            _ => break,
        }
    }
    got
}

/// Judges an answer: as every check ([`judge`]), then its COPY output
/// and notifications.
fn judge_answer(c: &CheckSpec, a: Answer) -> Check {
    let mut check = judge(c, a.errors.clone(), a.rows.clone(), Some(a.at_ms));
    if !check.ok || !a.errors.is_empty() {
        return check;
    }
    if let Some(want) = &c.copy_out {
        let got = a.copy_out.clone().unwrap_or_default();
        if &got != want {
            check.ok = false;
            check.expected = Some(format!("COPY output {want:?}"));
            check.actual = Some(format!("{got:?}"));
        }
    }
    if !c.notifications.is_empty() {
        let want: Vec<(String, String)> = c
            .notifications
            .iter()
            .map(|n| (n.channel.clone(), n.payload.clone()))
            .collect();
        if a.notifications != want {
            check.ok = false;
            check.expected = Some(format!("notifications {want:?}"));
            check.actual = Some(format!(
                "{:?} within {} s",
                a.notifications,
                OBSERVE_LIMIT.as_secs()
            ));
        }
    }
    check
}

/// The report of a server-mode run: the checks, then whether the server
/// shut down cleanly when asked.
fn report(
    image: &Path,
    image_bytes: u64,
    runner: &'static str,
    session: Session,
    ended: Ended,
    t0: Instant,
) -> SmokeReport {
    let mut checks = session.checks;
    let first_answer_ms = checks.first().and_then(|c| c.answered_ms);
    let shut_down = ended.log.contains("database system is shut down");
    checks.push(Check {
        name: "server shuts down cleanly on SIGINT".into(),
        ok: ended.exit_status == Some(0) && shut_down,
        expected: Some("status 0 after \"database system is shut down\"".into()),
        actual: Some(format!(
            "{}{}",
            ended.exit,
            if shut_down {
                ""
            } else {
                ", and the log does not say it shut down"
            }
        )),
        ..Check::default()
    });
    let mut phases = BTreeMap::new();
    if let Some(r) = session.ready_ms {
        phases.insert("ready".to_string(), r);
    }
    if let Some(f) = first_answer_ms {
        phases.insert("first_answer".to_string(), f);
    }
    let end = ms(t0.elapsed());
    phases.insert("exit".to_string(), end);
    let server_messages = ended
        .log
        .lines()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        // The readiness probe's answers while the server started.
        .filter(|l| !l.contains("the database system is starting up"))
        .map(str::to_string)
        .collect();
    SmokeReport {
        ok: checks.iter().all(|c| c.ok),
        mode: Mode::Server,
        runner,
        image: image.to_path_buf(),
        image_bytes,
        boot_ms: end,
        phases,
        exit: ended.exit,
        exit_status: ended.exit_status,
        vm_exits: ended.vm_exits,
        guest_memory: ended.guest_memory,
        first_answer_ms,
        checks,
        server_messages,
        console: ended.log,
    }
}
