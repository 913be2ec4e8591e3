//! `pgkraft smoke`: boot an image with a test VM definition, check what it
//! does, and report size, boot time and the boot phases.
//!
//! Two modes: `program` runs the image's program once and checks its exit
//! status and output; `single-user` sends SQL checks to the image's
//! `postgres --single` (see [`crate::pgsingle`]) and checks each answer,
//! either in the guest ([`run`]) or with the host-linked server on a copy of
//! the image's files ([`native`]).
//!
//! A run is two halves the caller may drive apart: [`plan`] says how to
//! boot the image for a test VM (memory, arguments, console input) and
//! [`check`] judges what the guest did. [`run`] cold-boots between them;
//! `pgkraft resume --vm` and the benchmarks restore a snapshot or time the
//! run instead, with the same checks.
//!
//! docs/ARCHITECTURE.md §6.

mod single_user;

pub mod native;
pub mod server;

use crate::image::{Image, ImageError};
use crate::recipe::{Diagnostic, RecipeError};
use crate::vmm::{self, GuestExit, snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest timeout of a run, a test VM's `timeout_secs` or `--timeout`:
/// a week, well inside what a Duration holds.
pub const MAX_TIMEOUT_SECS: f64 = 604_800.0;

/// A test VM definition (`test-vms/*.yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestVm {
    /// What the guest runs and how it is checked.
    #[serde(default)]
    pub mode: Mode,
    /// Guest memory; default: the recipe's, embedded in the image.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Stop the guest (and fail) after this many seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Arguments replacing the recipe's `args`.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Console input, then end of input.
    #[serde(default)]
    pub stdin: String,
    /// Console input `pgkraft snapshot` feeds before it snapshots the guest
    /// (at its first read with no input left); `stdin` then goes to the
    /// resumed guest. In program mode a cold boot gets both, in that order,
    /// so the same expectations hold for a cold boot and a resume; in
    /// single-user mode it is set-up SQL a cold boot does not run.
    #[serde(default)]
    pub snapshot_after: String,
    #[serde(default)]
    pub expect: Expect,
    /// Single-user mode: the SQL checks, in order, all in one session.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Run the image's program once; check its exit status and output.
    #[default]
    Program,
    /// Send `checks` to the image's `postgres --single`; check each answer.
    SingleUser,
    /// Serve the image on a loopback port and run `checks` through a real
    /// PostgreSQL client, as the cluster's superuser ([`server`]).
    Server,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Program => "program",
            Mode::SingleUser => "single-user",
            Mode::Server => "server",
        }
    }
}

/// Rows as a check writes them: each row a list of column values as text,
/// `None` (YAML `null`) for NULL.
pub type Rows = Vec<Vec<Option<String>>>;

/// One SQL check of a single-user or server test VM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: String,
    /// One or more statements; the check's result is the last result set.
    /// (Server mode: may be left out when the check only awaits
    /// `notifications`.)
    #[serde(default)]
    pub sql: String,
    /// The last result set's rows, exactly.
    #[serde(default)]
    pub expect: Option<Rows>,
    /// Text that must appear in some value of the last result set.
    #[serde(default)]
    pub contains: Vec<String>,
    /// The SQL must fail with an ERROR whose message contains this.
    #[serde(default)]
    pub error: Option<String>,
    /// Server mode: the client connection that runs the check, opened at
    /// its first use (default `main`). Checks of one session run in order
    /// on one connection; sessions are how a check sees another's
    /// transaction, notification or lock.
    #[serde(default)]
    pub session: Option<String>,
    /// Server mode: `sql` is one statement, prepared and run with these
    /// parameters (sent as text: cast them in the SQL, e.g. `$1::int`).
    #[serde(default)]
    pub params: Option<Vec<String>>,
    /// Server mode: `sql` is a `COPY ... FROM STDIN`, fed this text.
    #[serde(default)]
    pub copy_in: Option<String>,
    /// Server mode: `sql` is a `COPY ... TO STDOUT`, whose whole output
    /// must be this text.
    #[serde(default)]
    pub copy_out: Option<String>,
    /// Server mode: after `sql` (if any), the session must receive these
    /// notifications (from its `LISTEN`), in this order.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// Server mode: run the check on this many new connections at once
    /// (all connected before any runs it); each must answer as expected.
    #[serde(default)]
    pub clients: Option<u32>,
    /// Server mode: the statement must wait for a lock another session
    /// holds (the server reports it waiting); it is awaited, and its
    /// answer judged, before its session's next check (or at the end).
    #[serde(default)]
    pub blocks: bool,
}

/// A notification a server-mode check waits for.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub channel: String,
    #[serde(default)]
    pub payload: String,
}

impl CheckSpec {
    /// The server-mode keys this check uses, by name.
    fn server_keys(&self) -> Vec<&'static str> {
        [
            ("session", self.session.is_some()),
            ("params", self.params.is_some()),
            ("copy_in", self.copy_in.is_some()),
            ("copy_out", self.copy_out.is_some()),
            ("notifications", !self.notifications.is_empty()),
            ("clients", self.clients.is_some()),
            ("blocks", self.blocks),
        ]
        .into_iter()
        .filter_map(|(k, used)| used.then_some(k))
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exit status (default 0).
    #[serde(default)]
    pub status: u8,
    /// The whole console output, exactly.
    #[serde(default)]
    pub output: Option<String>,
    /// Strings the console output must contain.
    #[serde(default)]
    pub output_contains: Vec<String>,
}

fn default_timeout() -> f64 {
    30.0
}

impl Default for TestVm {
    fn default() -> TestVm {
        TestVm {
            mode: Mode::Program,
            memory_mib: None,
            timeout_secs: default_timeout(),
            args: None,
            stdin: String::new(),
            snapshot_after: String::new(),
            expect: Expect::default(),
            checks: Vec::new(),
        }
    }
}

const WHAT: &str = "test VM definition";

impl TestVm {
    /// A single-user definition with one check, `sql`, that only has to run
    /// without ERROR: what a benchmark of start-to-first-answer needs.
    pub fn single_query(sql: &str, timeout_secs: f64) -> TestVm {
        TestVm {
            mode: Mode::SingleUser,
            timeout_secs,
            checks: vec![CheckSpec {
                name: "query".into(),
                sql: sql.into(),
                expect: None,
                contains: Vec::new(),
                error: None,
                session: None,
                params: None,
                copy_in: None,
                copy_out: None,
                notifications: Vec::new(),
                clients: None,
                blocks: false,
            }],
            ..TestVm::default()
        }
    }

    /// Reads and checks a test VM definition; every error names the file,
    /// line, field and fix.
    pub fn load(path: &Path) -> Result<TestVm, RecipeError> {
        let (text, _) = crate::recipe::read(path, WHAT)?;
        let vm: TestVm = crate::recipe::parse_yaml(path, &text, WHAT, &[]).map_err(|mut e| {
            if let RecipeError::Parse(d) = &mut e
                && d.field.as_deref() == Some("mode")
                && d.fix.is_none()
            {
                d.fix = Some(
                    "use `mode: single-user` for SQL checks against a postgres image, or \
                     `mode: program` to run a program image once"
                        .into(),
                );
            }
            e
        })?;
        vm.validate(path, &text)?;
        Ok(vm)
    }

    /// What serde cannot say: which keys belong to which mode, and that
    /// checks are usable.
    fn validate(&self, path: &Path, text: &str) -> Result<(), RecipeError> {
        let invalid = |field: &str, key: &str, nth: usize, message: String, fix: String| {
            let d = Diagnostic::new(path, message);
            let d = match key_line(text, key, nth) {
                Some((line, col)) => d.at(text, line, Some(col)),
                None => d,
            };
            RecipeError::Invalid(Box::new(d.field(field).fix(fix)))
        };
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= MAX_TIMEOUT_SECS) {
            return Err(invalid(
                "timeout_secs",
                "timeout_secs",
                0,
                format!(
                    "timeout_secs must be a number of seconds above 0 and at most 604800 \
                     (a week), not {}",
                    self.timeout_secs
                ),
                "write e.g. `timeout_secs: 60`".into(),
            ));
        }
        match self.mode {
            Mode::Program => {
                if !self.checks.is_empty() {
                    return Err(invalid(
                        "checks",
                        "checks",
                        0,
                        "`checks` are SQL checks, for `mode: single-user` or `mode: server`; \
                         this definition is in program mode"
                            .into(),
                        "add `mode: single-user` (or `mode: server`), or use `expect` for a \
                         program"
                            .into(),
                    ));
                }
            }
            Mode::SingleUser | Mode::Server => {
                let mode = self.mode.name();
                for (key, given) in [
                    ("args", self.args.is_some()),
                    ("stdin", !self.stdin.is_empty()),
                    // `expect` has a default, so only the text tells
                    // whether it was written.
                    ("expect", key_line(text, "expect", 0).is_some()),
                    (
                        "snapshot_after",
                        self.mode == Mode::Server && !self.snapshot_after.is_empty(),
                    ),
                ] {
                    if given {
                        return Err(invalid(
                            key,
                            key,
                            0,
                            format!(
                                "`{key}` is for `mode: program`; in {mode} mode pgkraft \
                                 builds the server's arguments and input from `checks`"
                            ),
                            format!("remove `{key}`, and put SQL and expected rows in `checks`"),
                        ));
                    }
                }
                if self.checks.is_empty() {
                    return Err(invalid(
                        "checks",
                        "mode",
                        0,
                        format!("{mode} mode needs at least one entry in `checks`"),
                        "add e.g.\nchecks:\n  - name: arithmetic\n    sql: \"SELECT 1 + 1\"\n    expect: [[\"2\"]]".into(),
                    ));
                }
                let mut seen = std::collections::BTreeSet::new();
                for (i, c) in self.checks.iter().enumerate() {
                    let at = |key: &str, message: String, fix: &str| {
                        let nth = nth_with(&self.checks, i, |o| check_has(o, key));
                        invalid(&format!("checks[{i}].{key}"), key, nth, message, fix.into())
                    };
                    if c.name.trim().is_empty() {
                        return Err(at(
                            "name",
                            "a check's name is empty".into(),
                            "give the check a name that says what it proves",
                        ));
                    }
                    if !seen.insert(c.name.as_str()) {
                        return Err(at(
                            "name",
                            format!("two checks are named `{}`", c.name),
                            "give each check its own name (the report names checks)",
                        ));
                    }
                    let no_sql = c.sql.trim().trim_end_matches(';').trim().is_empty();
                    if no_sql && (self.mode == Mode::SingleUser || c.notifications.is_empty()) {
                        // Its `sql` line if written, else its `name` line.
                        let (key, nth) = match c.sql.is_empty() {
                            true => ("name", i),
                            false => ("sql", nth_with(&self.checks, i, |o| !o.sql.is_empty())),
                        };
                        return Err(invalid(
                            &format!("checks[{i}].sql"),
                            key,
                            nth,
                            format!("check `{}` has no SQL", c.name),
                            "write the statement(s) to run under `sql:`".into(),
                        ));
                    }
                    if c.error.is_some() && (c.expect.is_some() || !c.contains.is_empty()) {
                        return Err(at(
                            "error",
                            format!(
                                "check `{}` expects an ERROR and rows at once; a failing \
                                 statement returns no rows",
                                c.name
                            ),
                            "keep `error`, or keep `expect`/`contains`, not both",
                        ));
                    }
                    match self.mode {
                        Mode::SingleUser => {
                            if let Some(key) = c.server_keys().first() {
                                return Err(at(
                                    key,
                                    format!(
                                        "`{key}` (check `{}`) needs a client connection: it is \
                                         for `mode: server`",
                                        c.name
                                    ),
                                    "use `mode: server`, or remove the key",
                                ));
                            }
                        }
                        _ => {
                            if let Some(e) = server_check_problem(c) {
                                return Err(at(e.key, e.message, e.fix));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The most connections a server-mode check opens at once (a thread
/// each), well above any recipe's max_connections.
const MAX_CLIENTS: u32 = 1000;

/// What is wrong with a server-mode check's combination of keys, if
/// anything.
struct KeyProblem {
    key: &'static str,
    message: String,
    fix: &'static str,
}

fn server_check_problem(c: &CheckSpec) -> Option<KeyProblem> {
    let problem = |key, message: String, fix| Some(KeyProblem { key, message, fix });
    let name = &c.name;
    let modes = [
        ("params", c.params.is_some()),
        ("copy_in", c.copy_in.is_some()),
        ("copy_out", c.copy_out.is_some()),
    ];
    let used: Vec<&str> = modes.iter().filter(|m| m.1).map(|m| m.0).collect();
    if used.len() > 1 {
        return problem(
            used[1],
            format!(
                "check `{name}` has both `{}` and `{}`: a check runs one statement one way",
                used[0], used[1]
            ),
            "split it into two checks",
        );
    }
    let rows = c.expect.is_some() || !c.contains.is_empty();
    for (key, used, what) in [
        (
            "copy_out",
            c.copy_out.is_some(),
            "COPY TO STDOUT returns its text, not rows",
        ),
        (
            "copy_in",
            c.copy_in.is_some(),
            "COPY FROM STDIN returns no rows",
        ),
        (
            "notifications",
            !c.notifications.is_empty() && c.sql.trim().is_empty(),
            "a check without SQL has no rows",
        ),
    ] {
        if used && rows {
            return problem(
                key,
                format!("check `{name}` has `{key}` and expects rows: {what}"),
                "keep one of them: `expect`/`contains` belong to a query",
            );
        }
    }
    if c.clients == Some(0) || c.clients.is_some_and(|n| n > MAX_CLIENTS) {
        return problem(
            "clients",
            format!(
                "check `{name}` runs on {} clients; from 1 to {MAX_CLIENTS} run at once",
                c.clients.unwrap_or_default()
            ),
            "write e.g. `clients: 8`, or remove `clients` (one client)",
        );
    }
    if c.clients.is_some() {
        for (key, used) in [
            ("session", c.session.is_some()),
            ("blocks", c.blocks),
            ("notifications", !c.notifications.is_empty()),
        ] {
            if used {
                return problem(
                    key,
                    format!(
                        "check `{name}` has `clients` and `{key}`: it runs on new \
                         connections of its own, not on a session"
                    ),
                    "remove one of them",
                );
            }
        }
    }
    if c.blocks && !c.notifications.is_empty() {
        return problem(
            "notifications",
            format!("check `{name}` blocks and awaits notifications at once"),
            "await the notifications in a later check of the session",
        );
    }
    if c.session.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return problem(
            "session",
            format!("check `{name}` names an empty session"),
            "name the session, e.g. `session: holder`, or remove it (`main`)",
        );
    }
    None
}

/// Whether check `c` has `key` written (for finding its line).
fn check_has(c: &CheckSpec, key: &str) -> bool {
    match key {
        "name" => true,
        "error" => c.error.is_some(),
        k => c.server_keys().contains(&k),
    }
}

/// How many checks before `i` also have the key that `has` tests: which
/// occurrence of that key in the text is check `i`'s.
fn nth_with(checks: &[CheckSpec], i: usize, has: impl Fn(&CheckSpec) -> bool) -> usize {
    checks[..i].iter().filter(|c| has(c)).count()
}

/// 1-based line and column of the `nth` (from 0) line whose key is `key`,
/// as a plain mapping entry or the first entry of a list item.
/// Top-level keys are looked for at the start of a line only (`expect` is
/// also a check's key).
fn key_line(text: &str, key: &str, nth: usize) -> Option<(u64, u64)> {
    const TOP: [&str; 7] = [
        "mode",
        "memory_mib",
        "timeout_secs",
        "args",
        "stdin",
        "expect",
        "checks",
    ];
    let top = TOP.contains(&key);
    text.lines()
        .enumerate()
        .filter(|(_, l)| !top || !l.starts_with([' ', '\t', '-']))
        .filter_map(|(i, l)| {
            let body = l.trim_start();
            let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
            let col = l.len() - body.len() + 1;
            body.strip_prefix(key)
                .filter(|r| r.trim_start().starts_with(':'))
                .map(|_| (i as u64 + 1, col as u64))
        })
        .nth(nth)
}

/// A check judged on its answer: the server's ERROR lines (an expected
/// error passes, any other fails) and the last result set.
fn judge(
    c: &CheckSpec,
    errors: Vec<String>,
    rows: Option<Rows>,
    answered_ms: Option<f64>,
) -> Check {
    let (ok, actual) = if let Some(want) = &c.error {
        let ok = errors.iter().any(|e| e.contains(want.as_str()));
        let actual = if errors.is_empty() {
            "no ERROR".to_string()
        } else {
            errors.join("\n")
        };
        (ok, actual)
    } else if !errors.is_empty() {
        (false, errors.join("\n"))
    } else {
        let actual = rows.as_ref().map_or_else(
            || "no rows (no statement returned a result set)".into(),
            rows_text,
        );
        let rows_ok = c
            .expect
            .as_ref()
            .is_none_or(|want| rows.as_ref() == Some(want));
        let contains_ok = c.contains.iter().all(|needle| {
            rows.iter()
                .flatten()
                .flatten()
                .flatten()
                .any(|v| v.contains(needle.as_str()))
        });
        (rows_ok && contains_ok, actual)
    };
    Check {
        name: c.name.clone(),
        ok,
        expected: (!ok).then(|| expected_text(c)),
        actual: (!ok).then_some(actual),
        rows,
        errors,
        answered_ms,
    }
}

fn expected_text(c: &CheckSpec) -> String {
    if let Some(e) = &c.error {
        return format!("an ERROR containing {e:?}");
    }
    let mut parts = Vec::new();
    if let Some(rows) = &c.expect {
        parts.push(format!("rows {}", rows_text(rows)));
    }
    for needle in &c.contains {
        parts.push(format!("a value containing {needle:?}"));
    }
    if parts.is_empty() {
        "no ERROR".into()
    } else {
        format!("no ERROR, {}", parts.join(", "))
    }
}

fn rows_text(rows: &Rows) -> String {
    serde_json::to_string(rows).unwrap_or_default()
}

#[derive(Debug, Default, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// Single-user checks: the last result set's rows, as compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Rows>,
    /// Single-user checks: the server's ERROR/FATAL/PANIC lines for this SQL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Single-user checks: milliseconds since runner start at which the
    /// answer was complete (from the console stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SmokeReport {
    pub ok: bool,
    /// `program` or `single-user`.
    pub mode: Mode,
    /// `kvm` (the image under our runner) or `native` (the host-linked
    /// server on a copy of the image's files).
    pub runner: &'static str,
    pub image: PathBuf,
    pub image_bytes: u64,
    /// Runner start to guest exit.
    pub boot_ms: f64,
    /// Milliseconds since runner start at which each boot phase was reached.
    pub phases: BTreeMap<String, f64>,
    /// `status N`, `timeout` or `died`.
    pub exit: String,
    pub exit_status: Option<u8>,
    pub vm_exits: u64,
    /// Guest RAM when the guest stopped (not for `--native` runs): host
    /// memory behind it and pages holding data, both high-water marks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_memory: Option<vmm::MemoryUse>,
    /// Single-user mode: milliseconds since runner start at which the first
    /// check's answer was complete on the console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_answer_ms: Option<f64>,
    pub checks: Vec<Check>,
    /// FATAL and PANIC lines from the server, wherever they came.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_messages: Vec<String>,
    pub console: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
    #[error(transparent)]
    Snapshot(#[from] vmm::snapshot::SnapshotError),
    /// Single-user mode on an image that does not run `postgres --single`.
    #[error(
        "{}: single-user mode needs an image whose program is `postgres --single`, but its \
         arguments are {args:?}\n  fix: build a postgres recipe (e.g. recipes/postgres-17.yaml) \
         and smoke that image, or use `mode: program`",
        image.display()
    )]
    NotSingleUser { image: PathBuf, args: Vec<String> },
    /// A server-mode definition where a run is snapshotted, resumed or
    /// timed from the console: those need console checks.
    #[error(
        "a `mode: server` test VM runs only with `pgkraft smoke` (its checks go over the \
         network, not the console)\n  fix: give a `mode: single-user` definition here"
    )]
    ServerModeHere,
    #[error(transparent)]
    Credentials(#[from] server::CredentialsError),
    #[error("cannot set up the guest's signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot find a free port on 127.0.0.1 to serve the image on: {0}")]
    Port(std::io::Error),
}

/// Quote arguments for the boot command line (see libos::cmdline).
pub fn quote_args(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Boots `image` under our runner and checks it as `spec` says; with
/// `volume`, its data directory is that host directory (one
/// [`crate::volume::Volume`] the caller holds).
pub fn run(
    image: &Image,
    spec: &TestVm,
    volume: Option<vmm::VolumeConfig>,
) -> Result<SmokeReport, SmokeError> {
    if spec.mode == Mode::Server {
        return server::run_guest(image, spec, volume);
    }
    let mut cfg = plan(image, spec)?;
    cfg.volume = volume;
    let outcome = vmm::run(image.boot(), &cfg)?;
    Ok(check(image, spec, &outcome))
}

/// How to boot `image` for `spec`: memory, arguments (single-user mode
/// adds `-j` to the image's own), timeout, and the whole console input.
pub fn plan(image: &Image, spec: &TestVm) -> Result<vmm::VmConfig, SmokeError> {
    let (cmdline, input) = match spec.mode {
        Mode::Program => (
            spec.args.as_deref().map(quote_args).unwrap_or_default(),
            [spec.snapshot_after.as_bytes(), spec.stdin.as_bytes()].concat(),
        ),
        Mode::SingleUser => (
            quote_args(&single_user::guest_args(image)?),
            single_user::stdin_for(spec).into_bytes(),
        ),
        Mode::Server => return Err(SmokeError::ServerModeHere),
    };
    Ok(vmm::VmConfig {
        mem_mib: image.memory_mib(spec.memory_mib),
        cmdline,
        timeout: Some(Duration::from_secs_f64(spec.timeout_secs)),
        console: vmm::Console::Capture { input },
        net: None,
        signals: None,
        volume: None,
        hibernate: None,
        vcpu_cpu: None,
    })
}

/// [`run`], with the `input` and `first_answer` phases marked: the
/// cold-boot side of the resume benchmark.
pub fn run_tracked(image: &Image, spec: &TestVm) -> Result<SmokeReport, SmokeError> {
    let mut vm = vmm::boot(image.boot(), &plan(image, spec)?)?;
    vm.track_answers();
    Ok(check(image, spec, &vm.run()?))
}

/// Boots `image` as [`plan`] says for `spec`, but fed `input_before`, and
/// snapshots it at its ready point into `out`.
pub fn snapshot(
    image: &Image,
    spec: &TestVm,
    input_before: &[u8],
    out: &Path,
) -> Result<snapshot::SnapshotReport, SmokeError> {
    let mut cfg = plan(image, spec)?;
    cfg.console = vmm::Console::Capture {
        input: input_before.to_vec(),
    };
    Ok(snapshot::take(image.boot(), &cfg, out)?)
}

/// Runs `spec`'s checks against snapshot `loaded` (of `image`, checked
/// against `expect`) resumed instead of booted. The plan's console input
/// starts with what the snapshot was fed before its ready point; the
/// resumed guest gets only the rest, as a cold boot would have by then.
pub fn resume(
    image: &Image,
    spec: &TestVm,
    loaded: snapshot::Loaded,
    expect: &snapshot::Expect,
) -> Result<(SmokeReport, snapshot::Resumed), SmokeError> {
    let mut cfg = plan(image, spec)?;
    if let vmm::Console::Capture { input } = &mut cfg.console
        && let Some(rest) = input.strip_prefix(loaded.input_before())
    {
        *input = rest.to_vec();
    }
    let resumed = snapshot::restore(loaded, &cfg, expect)?.run()?;
    Ok((check(image, spec, &resumed.outcome), resumed))
}

/// Judges what the guest did in a run of `image` planned for `spec`.
pub fn check(image: &Image, spec: &TestVm, outcome: &vmm::RunOutcome) -> SmokeReport {
    match spec.mode {
        Mode::Program => check_program(image, spec, outcome),
        Mode::SingleUser => single_user::check_guest(image, spec, outcome),
        Mode::Server => unreachable!("plan() refuses server mode: its checks are not console's"),
    }
}

/// Whether the image's program is `postgres --single`, which single-user
/// mode drives.
pub fn runs_single_user(image: &Image) -> bool {
    single_user::guest_args(image).is_ok()
}

fn phase_map(phases: &[vmm::PhaseMark]) -> BTreeMap<String, f64> {
    phases
        .iter()
        .map(|p| (p.name.to_string(), ms(p.at)))
        .collect()
}

/// How a guest's run ended, in words, and its exit status if it had one.
pub fn exit_text(exit: &GuestExit) -> (String, Option<u8>) {
    match exit {
        GuestExit::Status(s) => (format!("status {s}"), Some(*s)),
        GuestExit::Timeout => ("timeout".to_string(), None),
        GuestExit::Shutdown { regs } => (format!("died: {regs}"), None),
    }
}

fn check_program(image: &Image, spec: &TestVm, outcome: &vmm::RunOutcome) -> SmokeReport {
    let console = String::from_utf8_lossy(&outcome.console).into_owned();
    let phases = phase_map(&outcome.phases);
    let boot_ms = outcome
        .phases
        .iter()
        .find(|p| p.name == "exit")
        .map(|p| ms(p.at))
        .unwrap_or(0.0);
    let (exit, exit_status) = exit_text(&outcome.exit);

    let mut checks = vec![Check {
        name: "exit status".into(),
        ok: exit_status == Some(spec.expect.status),
        expected: Some(format!("status {}", spec.expect.status)),
        actual: Some(exit.clone()),
        ..Check::default()
    }];
    if let Some(want) = &spec.expect.output {
        checks.push(Check {
            name: "output".into(),
            ok: &console == want,
            expected: Some(want.clone()),
            actual: Some(console.clone()),
            ..Check::default()
        });
    }
    for want in &spec.expect.output_contains {
        checks.push(Check {
            name: format!("output contains {want:?}"),
            ok: console.contains(want.as_str()),
            expected: Some(want.clone()),
            ..Check::default()
        });
    }
    SmokeReport {
        ok: checks.iter().all(|c| c.ok),
        mode: Mode::Program,
        runner: "kvm",
        image: image.path().to_path_buf(),
        image_bytes: image.file_bytes(),
        boot_ms,
        phases,
        exit,
        exit_status,
        vm_exits: outcome.exits,
        guest_memory: outcome.memory,
        first_answer_ms: None,
        checks,
        server_messages: Vec::new(),
        console,
    }
}
impl SmokeReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} {} ({} bytes, {} mode, {}): {} in {:.3} ms, {} VM exits\n",
            if self.ok { "ok" } else { "FAILED" },
            self.image.display(),
            self.image_bytes,
            self.mode.name(),
            self.runner,
            self.exit,
            self.boot_ms,
            self.vm_exits
        );
        if let Some(ms) = self.first_answer_ms {
            s += &format!("  first answer at {ms:.3} ms\n");
        }
        if let Some(m) = self.guest_memory {
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            s += &format!(
                "  guest memory: {:.1} MiB holding data, {:.1} MiB of host memory behind guest RAM\n",
                mib(m.data_bytes),
                mib(m.resident_bytes)
            );
        }
        let mut phases: Vec<_> = self.phases.iter().collect();
        phases.sort_by(|a, b| a.1.total_cmp(b.1));
        for (name, at) in phases {
            s += &format!("  {at:>9.3} ms  {name}\n");
        }
        // Program output is quoted so whitespace shows; SQL checks already
        // say rows in JSON, which quoting again would only obscure.
        let quote = |t: &str| {
            if self.mode == Mode::Program {
                format!("{t:?}")
            } else {
                t.replace('\n', "\n                  ")
            }
        };
        for c in &self.checks {
            s += &format!("  [{}] {}\n", if c.ok { "ok" } else { "FAIL" }, c.name);
            if !c.ok {
                if let Some(e) = &c.expected {
                    s += &format!("        expected: {}\n", quote(e));
                }
                if let Some(a) = &c.actual {
                    s += &format!("        actual:   {}\n", quote(a));
                }
                for e in &c.errors {
                    s += &format!("        server:   {e}\n");
                }
            }
        }
        if !self.ok {
            for m in &self.server_messages {
                s += &format!("  server: {m}\n");
            }
            if self.mode != Mode::Program || self.exit == "timeout" {
                s += "  console tail:\n";
                for l in crate::build::exec::tail_text(&self.console, 20).lines() {
                    s += &format!("    | {l}\n");
                }
            }
        }
        s
    }
}
