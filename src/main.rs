//! The `pgkraft` command line.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgkraft::vmm::snapshot;
use pgkraft::{
    bench, build, first_answer, fleet, image_info, progress::Progress, recipe, smoke, vmm, volume,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Build PostgreSQL unikernel images from a recipe and run them under an
/// embedded KVM runner.
///
/// Exit status: 0 success, 1 the guest or a check failed, 2 bad input or usage.
#[derive(Parser)]
#[command(name = "pgkraft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image a recipe describes: writes DIR/<name>.img, its symbols DIR/<name>.debug,
    /// DIR/<name>.manifest.json and DIR/<name>.spdx.json (an SPDX 2.3 SBOM; times from
    /// SOURCE_DATE_EPOCH, 0 if unset).
    Build {
        /// The recipe (YAML); see the README's recipe reference.
        recipe: PathBuf,
        /// Output directory (created if missing); stage logs go to DIR/logs/.
        #[arg(long, default_value = "out", value_name = "DIR")]
        out: PathBuf,
        /// Print one JSON object describing the result on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image with the console on this terminal; exits with the guest program's status.
    Run {
        image: PathBuf,
        /// Guest memory in MiB (default: the recipe's vm.memory_mib, embedded in the image).
        #[arg(long, value_name = "MIB", value_parser = parse_mem, allow_negative_numbers = true)]
        mem: Option<u32>,
        /// Stop the guest after this many seconds (exit status 1).
        #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_negative_numbers = true)]
        timeout: Option<Duration>,
        /// Publish a guest TCP port on the host: connections to
        /// HOST_IP:HOST_PORT (HOST_IP 127.0.0.1 if left out; IPv6 in
        /// brackets) reach the guest's GUEST_PORT. Repeatable; gives the
        /// guest a virtio-net device.
        #[arg(long, value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT", value_parser = parse_publish)]
        publish: Vec<vmm::PublishRule>,
        /// Attach the guest's virtio-net device to the Linux tap device
        /// NAME (created if missing; needs CAP_NET_ADMIN unless it exists
        /// and belongs to this user). Frames pass through unchanged; the
        /// guest is 10.0.2.15/24 (give the host's end 10.0.2.2/24).
        #[arg(long, value_name = "NAME", value_parser = parse_tap, conflicts_with = "publish")]
        tap: Option<String>,
        /// Serve the host directory DIR to the guest as its data volume
        /// (virtio-9p, 9P2000.L, mount tag `pgkraft-data`), locked for this
        /// run. A postgres image initializes a missing or empty DIR from
        /// its cluster and refuses one of another PostgreSQL major or
        /// cluster (exit 2).
        #[arg(long, value_name = "DIR")]
        volume: Option<PathBuf>,
        /// Arguments for the program; they replace the recipe's `args`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Serve a PostgreSQL image on published ports until SIGINT/SIGTERM,
    /// then shut PostgreSQL down cleanly (a shutdown checkpoint) and exit 0.
    Serve {
        image: PathBuf,
        /// Publish the server's port on the host, e.g. `5432:5432` or
        /// `127.0.0.1:15432:5432` (HOST_IP 127.0.0.1 if left out; IPv6 in
        /// brackets). Repeatable; at least one.
        #[arg(long, required = true, value_name = "[HOST_IP:]HOST_PORT:5432", value_parser = parse_publish)]
        publish: Vec<vmm::PublishRule>,
        /// Guest memory in MiB (default: the recipe's vm.memory_mib, embedded in the image).
        #[arg(long, value_name = "MIB", value_parser = parse_mem, allow_negative_numbers = true)]
        mem: Option<u32>,
        /// Print JSON lines on stdout: {"event":"ready",...} once the
        /// server accepts connections, {"event":"stopped",...} at the end.
        #[arg(long)]
        json: bool,
        /// Append the server's log to FILE instead of stderr.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Serve with the host-linked server of the image's build on a copy
        /// of the image's files (listening on HOST_IP:HOST_PORT itself)
        /// instead of booting the image: the benchmarks' reference.
        #[arg(long)]
        native: bool,
        /// Keep the data directory in the host directory DIR (virtio-9p,
        /// mount tag `pgkraft-data`), locked for this run: a missing or
        /// empty DIR is initialized from the image's cluster, later runs
        /// use what is there; one of another PostgreSQL major or cluster is
        /// refused (exit 2).
        #[arg(long, value_name = "DIR", conflicts_with = "native")]
        volume: Option<PathBuf>,
        /// Hibernate the VM when no client has been connected for DURATION
        /// (`500ms`, `30s`, `5m`): its RAM goes to a file and is freed, the
        /// published ports stay open, and the next connection wakes it
        /// and is served. The RAM goes to DIR.hibernate next to the
        /// --volume, or to --hibernate-dir.
        #[arg(long, value_name = "DURATION", value_parser = pgkraft::duration::parse, conflicts_with = "native")]
        idle_timeout: Option<std::time::Duration>,
        /// Where a hibernated VM's RAM goes (default: next to the volume,
        /// DIR.hibernate).
        #[arg(long, value_name = "DIR", requires = "idle_timeout")]
        hibernate_dir: Option<PathBuf>,
        /// What idle means for --idle-timeout: `connections` (no client
        /// connected) or `idle` (also with clients connected, when none
        /// sends or is sent anything and no query runs: each session
        /// waits for its client's input).
        #[arg(long, value_name = "POLICY", value_parser = parse_idle_policy, default_value = "connections", requires = "idle_timeout")]
        idle_policy: vmm::IdlePolicy,
        /// Give the guest's vCPU host CPU N to itself: its thread runs
        /// there only, and the runner's device threads run on the other
        /// CPUs this process may use. For a host that dedicates a CPU to
        /// the database (a preempted vCPU is costly on PVM: README
        /// "Placing the vCPU"); leave it out when VMs share CPUs.
        #[arg(long, value_name = "N", conflicts_with = "native")]
        vcpu_cpu: Option<usize>,
    },
    /// Serve many PostgreSQL databases from one supervisor process, each
    /// its own VM on its own port, hibernating when idle and waking at its
    /// next connection: `pgkraft fleet [run] FILE`, `pgkraft fleet status FILE`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Fleet {
        #[command(subcommand)]
        what: Option<FleetCommand>,
        #[command(flatten)]
        run: Option<FleetRunArgs>,
    },
    /// Boot an image, run its checks, report size, boot time and boot phases.
    Smoke {
        image: PathBuf,
        /// A test VM definition (test-vms/*.yaml): checks, input, memory, timeout.
        #[arg(long, value_name = "FILE")]
        vm: Option<PathBuf>,
        /// Print one JSON object with the report on stdout, nothing else there.
        #[arg(long)]
        json: bool,
        /// Single-user and server modes: run the checks with the host-linked
        /// postgres of the image's build on a copy of the image's files, not
        /// in the guest.
        #[arg(long)]
        native: bool,
        /// With --native: the host-linked postgres (default: the one the
        /// cache records for the image's build, else a build of the recipe
        /// the image embeds).
        #[arg(long, value_name = "PATH", requires = "native")]
        postgres: Option<PathBuf>,
        /// Run the checks on the data directory in the host directory DIR,
        /// as `serve --volume` keeps it (initialized if missing or empty).
        #[arg(long, value_name = "DIR", conflicts_with = "native")]
        volume: Option<PathBuf>,
    },
    /// Measure, side by side in one run (prints medians and ratios).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Package a built image with its manifest and SBOM as an OCI artifact in an OCI image
    /// layout, for `skopeo copy oci:DIR:TAG docker://REGISTRY/NAME:TAG` or `oras`.
    ///
    /// The layout gets the artifact under TAG in DIR/index.json; the same image gives the
    /// same digests (the creation time is SOURCE_DATE_EPOCH's, 0 if unset). DIR is made if
    /// missing; an existing OCI layout keeps its other tags; any other non-empty DIR is
    /// refused (exit 2).
    Package {
        /// The image `pgkraft build` wrote; its .manifest.json and .spdx.json must be next to it.
        image: PathBuf,
        /// Write an OCI image layout to DIR.
        #[arg(long, value_name = "DIR", required = true)]
        oci: PathBuf,
        /// The tag in the layout (default: the PostgreSQL version, else the image's name).
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// Print one JSON object describing the result on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's sections, sizes and embedded build manifest.
    Inspect {
        image: PathBuf,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image until it first waits for console input, then save it as a snapshot directory.
    Snapshot {
        image: PathBuf,
        /// A test VM definition: memory, args, timeout, and `snapshot_after` (input fed first).
        #[arg(long, value_name = "FILE")]
        vm: Option<PathBuf>,
        /// The snapshot directory (written whole or not at all).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Resume a snapshot: console on this terminal, or a test VM's checks with --vm.
    Resume {
        dir: PathBuf,
        /// Run this test VM's checks against the resumed guest (its `stdin` is the input).
        #[arg(long, value_name = "FILE")]
        vm: Option<PathBuf>,
        /// The snapshot's image, if it is no longer where the snapshot was taken from.
        #[arg(long, value_name = "IMAGE")]
        image: Option<PathBuf>,
        /// Stop the guest after this many seconds (exit status 1); without --vm.
        #[arg(long, value_name = "SECS", value_parser = parse_timeout, allow_negative_numbers = true)]
        timeout: Option<Duration>,
        /// Where pages go before the guest runs: `learned` (by the working set
        /// the snapshot's first resume records in workingset.json: pages only
        /// read stay shared on huge pages, touched pages of written regions
        /// are copied private), `copy` (all data into private huge pages),
        /// `write` (all data, private 4 KiB copies), `read` (all data mapped
        /// shared) or `none` (every page on first touch).
        #[arg(long, default_value = "learned", value_name = "HOW")]
        prefault: snapshot::Prefault,
        /// Print one JSON object on stdout (without --vm: stdin is read to its end first).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Run the fleet FILE describes until SIGINT/SIGTERM (or until every
    /// database has ended), then stop every database cleanly (a hibernated
    /// one wakes for it) and exit 0 if all stopped cleanly, 1 if not. One
    /// database failing leaves the others running. A bad FILE exits 2
    /// before any database starts.
    Run(FleetRunArgs),
    /// Ask a running fleet's supervisor for each database's state (booting,
    /// running, hibernated, stopped, failed), memory and last wake.
    Status {
        /// The fleet file (its `control:` socket is asked).
        #[arg(required_unless_present = "control")]
        file: Option<PathBuf>,
        /// Ask this control socket instead of the fleet file's.
        #[arg(long, value_name = "SOCK", conflicts_with = "file")]
        control: Option<PathBuf>,
        /// Print one JSON document on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct FleetRunArgs {
    /// The fleet file (YAML): `databases:` each with `name`, `image`,
    /// `port` (or `listen`), and optionally `volume`, `hibernate_dir`,
    /// `memory_mib`, `idle_timeout`; `defaults:` for all of them;
    /// `control:` (the status socket, default FILE with .sock) and `logs:`
    /// (default FILE with .logs). Relative paths start at FILE's directory.
    /// See README "Fleets".
    file: PathBuf,
    /// Print JSON lines on stdout: each database's events (`ready`,
    /// `hibernated`, `woke`, `stopped`, `failed`, with `database`), and
    /// `fleet_started` / `fleet_stopped`.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Boot an image repeatedly under our runner and under QEMU microvm, alternating.
    Boot {
        image: PathBuf,
        /// Boots per VMM.
        #[arg(long, default_value = "20", value_parser = parse_runs, allow_negative_numbers = true)]
        runs: usize,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Cold boot to first answer vs snapshot resume to first answer, and QEMU's own resume.
    Resume {
        image: PathBuf,
        /// Test VM (memory, args, snapshot_after); its first `stdin` line is the query.
        #[arg(long, value_name = "FILE")]
        vm: Option<PathBuf>,
        /// Runs per measurement.
        #[arg(long, default_value = "10", value_parser = parse_runs, allow_negative_numbers = true)]
        runs: usize,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Client connect -> answer for a hibernated server (`serve
    /// --idle-timeout`), the same server running, and a cold boot.
    Wake {
        image: PathBuf,
        /// Rounds (each: one hibernated and one running connect, one cold boot).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// The server's --idle-timeout.
        #[arg(long, value_name = "DURATION", value_parser = pgkraft::duration::parse, default_value = "300ms")]
        idle_timeout: std::time::Duration,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Resume N instances of one snapshot at once, keep them idle, report memory per instance.
    Density {
        dir: PathBuf,
        /// How many instances run at once.
        #[arg(long, default_value = "50", value_parser = parse_instances, allow_negative_numbers = true)]
        instances: usize,
        /// A line each instance answers before it idles (default: `get`).
        #[arg(long, default_value = "get")]
        query: String,
        /// Passed to each `pgkraft resume` (learned, copy, write, read, none).
        #[arg(long, default_value = "learned", value_name = "HOW")]
        prefault: snapshot::Prefault,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// A postgres image booted to its first SQL answer vs native `postgres --single`, alternating.
    FirstAnswer {
        image: PathBuf,
        /// Runs per side.
        #[arg(long, default_value = "10", value_parser = parse_runs, allow_negative_numbers = true)]
        runs: usize,
        /// The query both answer.
        #[arg(long, default_value = "SELECT 1")]
        query: String,
        /// The host-linked postgres of the image's build (default: the one the cache records for it, else from its recipe).
        #[arg(long, value_name = "PATH")]
        postgres: Option<PathBuf>,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmarks that apply to an image and write DIR/index.html
    /// (SVG charts: size by part, boot timeline, first-answer and resume
    /// distributions against native postgres and QEMU, density) and
    /// DIR/report.json (every figure). Those that do not apply are left
    /// out with a note saying why.
    Report {
        image: PathBuf,
        /// The report's directory (created if missing; index.html and
        /// report.json are replaced whole).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Runs per measurement.
        #[arg(long, default_value = "5", value_parser = parse_runs, allow_negative_numbers = true)]
        runs: usize,
        /// Instances resumed at once for the density figure.
        #[arg(long, default_value = "10", value_parser = parse_instances, allow_negative_numbers = true)]
        instances: usize,
        /// The query first-answer and resume time (postgres images).
        #[arg(long, default_value = "SELECT 1")]
        query: String,
        /// The host-linked postgres of the image's build, first-answer's
        /// native counterpart (default: the one the cache records for it,
        /// else from its recipe).
        #[arg(long, value_name = "PATH")]
        postgres: Option<PathBuf>,
    },
}

/// An error with the exit status it deserves.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn input(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
    fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("PGKRAFT_LOG", "warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("pgkraft: error: {}", describe(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// The error and its causes, each once: many of our error messages already
/// quote their cause, and printing it again would only repeat it.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("report serializes")
    );
}

/// A benchmark's report: JSON on stdout, or its human form there.
fn print_report(json: bool, report: &impl serde::Serialize, human: impl FnOnce() -> String) -> u8 {
    if json {
        print_json(report);
    } else {
        print!("{}", human());
    }
    0
}

// Numeric flags are checked as clap parses them: a bad value exits 2 with
// clap's usage error, which names the flag, and our text, which says what
// would do. Nothing later has to guard against them (no panics on `inf`).

use smoke::MAX_TIMEOUT_SECS;

/// `--timeout SECS`: a finite number of seconds above 0, at most a week.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let fix = || {
        format!(
            "--timeout must be a finite number of seconds > 0 and at most {MAX_TIMEOUT_SECS} (a \
             week), such as 30 or 0.5"
        )
    };
    let secs: f64 = text.trim().parse().map_err(|_| fix())?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(fix());
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(fix()),
    }
}

/// `--idle-policy`.
fn parse_idle_policy(text: &str) -> Result<vmm::IdlePolicy, String> {
    match text {
        "connections" => Ok(vmm::IdlePolicy::Connections),
        "idle" => Ok(vmm::IdlePolicy::Idle),
        _ => Err(format!("{text:?}: give `connections` or `idle`")),
    }
}

/// `--mem MIB`: whole MiB in the range a recipe's `vm.memory_mib` accepts.
fn parse_mem(text: &str) -> Result<u32, String> {
    let range = recipe::MEMORY_MIB_RANGE;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|m| range.contains(m))
        .ok_or_else(|| {
            format!(
                "--mem must be a whole number of MiB from {} to {}, such as 64",
                range.start(),
                range.end()
            )
        })
}

/// `--tap NAME`: a name Linux takes for a network interface.
fn parse_tap(text: &str) -> Result<String, String> {
    vmm::net::tap::check_name(text)
        .map(|()| text.to_string())
        .map_err(|e| e.to_string())
}

/// `--publish [HOST_IP:]HOST_PORT:GUEST_PORT`.
fn parse_publish(text: &str) -> Result<vmm::PublishRule, String> {
    text.parse::<vmm::PublishRule>().map_err(|why| {
        format!(
            "--publish takes {}, such as {} ({why})",
            vmm::PublishRule::SYNTAX,
            vmm::PublishRule::EXAMPLE
        )
    })
}

/// A count of at least 1, for `flag`.
fn parse_count(text: &str, flag: &str, example: usize) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{flag} must be a whole number of at least 1, such as {example}"))
}

fn parse_runs(text: &str) -> Result<usize, String> {
    parse_count(text, "--runs", 10)
}

fn parse_instances(text: &str) -> Result<usize, String> {
    parse_count(text, "--instances", 50)
}

/// vmm errors are bad input (not an image, no KVM) unless KVM itself failed.
fn vmm_failure(e: vmm::VmmError) -> Failure {
    use vmm::VmmError as E;
    match e {
        E::KvmMissing
        | E::KvmPermission { .. }
        | E::ReadImage { .. }
        | E::NotElf { .. }
        | E::NotX86_64 { .. }
        | E::NoBootNote { .. }
        | E::BadImage { .. }
        | E::TooBig { .. }
        | E::Memory { .. }
        | E::Placement { .. }
        | E::Net(
            vmm::net::NetError::Bind { .. }
            | vmm::net::NetError::TapName { .. }
            | vmm::net::NetError::TapNoDevice { .. }
            | vmm::net::NetError::TapPermission { .. }
            | vmm::net::NetError::TapBusy { .. }
            | vmm::net::NetError::TapNotTap { .. }
            | vmm::net::NetError::Tap { .. }
            | vmm::net::NetError::TapWithPublish,
        )
        | E::NotSnapshottable { .. }
        | E::NetOnResume
        | E::Volume(vmm::VolumeError::Open { .. } | vmm::VolumeError::Tag { .. })
        | E::VolumeOnResume => Failure::input(e),
        _ => Failure::failed(e),
    }
}

fn dispatch(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Build { recipe, out, json } => {
            let recipe = recipe::load(&recipe).map_err(Failure::input)?;
            let progress = Progress::new(false);
            let output = build::build(&recipe, &out, &progress).map_err(|e| {
                let code = e.exit_code() as u8;
                Failure {
                    code,
                    error: anyhow::Error::new(e)
                        .context(format!("building {}", recipe.file.display())),
                }
            })?;
            if json {
                print_json(&output);
            } else {
                eprintln!(
                    "pgkraft: built {} ({} bytes, sha256 {})",
                    output.image.display(),
                    output.image_bytes,
                    output.image_sha256
                );
            }
            Ok(0)
        }
        Command::Run {
            image,
            mem,
            timeout,
            publish,
            tap,
            volume,
            args,
        } => {
            let image = open_image(&image)?;
            let volume = open_volume(&image, volume)?;
            let cfg = vmm::VmConfig {
                mem_mib: image.memory_mib(mem),
                cmdline: smoke::quote_args(&args),
                timeout,
                console: vmm::Console::Stdio,
                net: (!publish.is_empty() || tap.is_some())
                    .then_some(vmm::NetConfig { publish, tap }),
                signals: None,
                volume: volume.as_ref().map(volume::Volume::config),
                hibernate: None,
                vcpu_cpu: None,
            };
            let outcome = vmm::run(image.boot(), &cfg).map_err(vmm_failure)?;
            match outcome.exit {
                vmm::GuestExit::Status(s) => Ok(s),
                vmm::GuestExit::Timeout => Err(Failure::failed(anyhow::anyhow!(
                    "the guest did not exit within {}s (--timeout)",
                    timeout.unwrap_or_default().as_secs_f64()
                ))),
                vmm::GuestExit::Shutdown { regs } => {
                    Err(Failure::failed(anyhow::anyhow!("the guest died:\n{regs}")))
                }
            }
        }
        Command::Serve {
            image,
            publish,
            mem,
            json,
            log,
            native,
            volume,
            idle_timeout,
            hibernate_dir,
            idle_policy,
            vcpu_cpu,
        } => {
            // Before the volume is opened (which may initialize it).
            if let Some(cpu) = vcpu_cpu {
                vmm::check_vcpu_cpu(cpu)
                    .map_err(|e| Failure::input(anyhow::Error::new(e).context("--vcpu-cpu")))?;
            }
            let image = open_image(&image)?;
            let hibernate = idle_timeout
                .map(|after| {
                    pgkraft::serve::hibernate_config(
                        after,
                        idle_policy,
                        hibernate_dir,
                        volume.as_deref(),
                    )
                })
                .transpose()
                .map_err(Failure::input)?;
            let volume = open_volume(&image, volume)?;
            let opts = pgkraft::serve::ServeOptions {
                publish,
                mem,
                json,
                log,
                native,
                volume,
                hibernate,
                vcpu_cpu,
            };
            match pgkraft::serve::serve(&image, opts) {
                Ok(()) => Ok(0),
                Err(pgkraft::serve::ServeError::Vmm(e)) => Err(vmm_failure(e)),
                Err(
                    e @ (pgkraft::serve::ServeError::NoPort
                    | pgkraft::serve::ServeError::Log { .. }
                    | pgkraft::serve::ServeError::Native(_)),
                ) => Err(Failure::input(e)),
                Err(e) => Err(Failure::failed(anyhow::Error::new(e))),
            }
        }
        Command::Smoke {
            image,
            vm,
            json,
            native,
            postgres,
            volume,
        } => {
            let spec = load_spec(vm.as_deref())?;
            let report = if native {
                smoke::native::run_cli(&image, &spec, postgres.as_deref())
                    .map_err(Failure::input)?
            } else {
                let image = open_image(&image)?;
                let volume = open_volume(&image, volume)?;
                smoke::run(&image, &spec, volume.as_ref().map(volume::Volume::config))
                    .map_err(smoke_failure)?
            };
            if json {
                print_json(&report);
            } else {
                eprint!("{}", report.human());
            }
            Ok(if report.ok { 0 } else { 1 })
        }
        Command::Bench {
            what: BenchCommand::Boot { image, runs, json },
        } => {
            let report = bench::boot(&open_image(&image)?, runs).map_err(bench_failure)?;
            Ok(print_report(json, &report, || report.human()))
        }
        Command::Bench {
            what:
                BenchCommand::FirstAnswer {
                    image,
                    runs,
                    query,
                    postgres,
                    json,
                },
        } => {
            let postgres = match postgres {
                Some(p) => p,
                None => smoke::native::host_postgres(&image).map_err(Failure::input)?,
            };
            let image = open_image(&image)?;
            let report =
                first_answer::bench(&image, &query, runs, &postgres).map_err(|e| match e {
                    first_answer::FirstAnswerError::Smoke(e) => smoke_failure(e),
                    first_answer::FirstAnswerError::Native(e) => Failure::input(e),
                    e => Failure::failed(e),
                })?;
            Ok(print_report(json, &report, || report.human()))
        }
        Command::Snapshot {
            image,
            vm,
            out,
            json,
        } => snapshot_cmd(&image, vm.as_deref(), &out, json),
        Command::Resume {
            dir,
            vm,
            image,
            timeout,
            prefault,
            json,
        } => resume_cmd(&dir, vm.as_deref(), image, timeout, prefault, json),
        Command::Bench {
            what:
                BenchCommand::Resume {
                    image,
                    vm,
                    runs,
                    json,
                },
        } => {
            let spec = load_spec(vm.as_deref())?;
            let report = bench::resume(&open_image(&image)?, &spec, runs).map_err(bench_failure)?;
            Ok(print_report(json, &report, || report.human()))
        }
        Command::Bench {
            what:
                BenchCommand::Wake {
                    image,
                    runs,
                    idle_timeout,
                    json,
                },
        } => {
            let image = open_image(&image)?;
            let report = bench::wake::wake(&image, runs, idle_timeout).map_err(bench_failure)?;
            Ok(print_report(json, &report, || report.human()))
        }
        Command::Bench {
            what:
                BenchCommand::Density {
                    dir,
                    instances,
                    query,
                    prefault,
                    json,
                },
        } => {
            let report =
                bench::density(&dir, instances, &query, prefault).map_err(bench_failure)?;
            Ok(print_report(json, &report, || report.human()))
        }
        Command::Bench {
            what:
                BenchCommand::Report {
                    image,
                    out,
                    runs,
                    instances,
                    query,
                    postgres,
                },
        } => {
            // A bad --out is refused before the image is even opened.
            bench::report::prepare_out(&out).map_err(Failure::input)?;
            let opts = bench::report::Options {
                runs,
                instances,
                query,
                postgres,
            };
            bench::report::run(&open_image(&image)?, &opts, &out).map_err(report_failure)?;
            eprintln!(
                "pgkraft: bench report: wrote {} and {}",
                out.join("index.html").display(),
                out.join("report.json").display()
            );
            Ok(0)
        }
        Command::Fleet { what, run } => match (what, run) {
            (Some(FleetCommand::Run(args)), _) | (None, Some(args)) => {
                fleet_run(&args.file, args.json)
            }
            (
                Some(FleetCommand::Status {
                    file,
                    control,
                    json,
                }),
                _,
            ) => fleet_status(file.as_deref(), control.as_deref(), json),
            (None, None) => Err(Failure::input(anyhow::anyhow!(
                "fleet: give a fleet file (`pgkraft fleet run FILE`) or ask one \
                 (`pgkraft fleet status FILE`)"
            ))),
        },
        Command::Package {
            image,
            oci,
            tag,
            json,
        } => {
            let out =
                pgkraft::package::package(&image, &oci, tag.as_deref()).map_err(|e| Failure {
                    code: if e.is_input() { 2 } else { 1 },
                    error: anyhow::Error::new(e).context(format!("packaging {}", image.display())),
                })?;
            if json {
                print_json(&out);
            } else {
                eprintln!(
                    "pgkraft: packaged {} as oci:{}:{} (manifest {})",
                    image.display(),
                    out.layout.display(),
                    out.tag,
                    out.digest
                );
            }
            Ok(0)
        }
        Command::Inspect { image, json } => {
            let info = image_info::read(&image)
                .with_context(|| format!("inspecting {}", image.display()))
                .map_err(Failure::input)?;
            if json {
                print_json(&info);
            } else {
                print!("{}", pgkraft::inspect::human(&info));
            }
            Ok(0)
        }
    }
}

fn fleet_failure(e: fleet::FleetError) -> Failure {
    match e.is_bad_input() {
        true => Failure::input(e),
        false => Failure::failed(e),
    }
}

fn fleet_run(file: &std::path::Path, json: bool) -> Result<u8, Failure> {
    let summary = fleet::run(file, json).map_err(fleet_failure)?;
    match summary.failed {
        0 => Ok(0),
        n => Err(Failure::failed(anyhow::anyhow!(
            "{n} of {} databases did not stop cleanly (`failed` above says why; their logs have \
             the rest)",
            summary.databases
        ))),
    }
}

fn fleet_status(
    file: Option<&std::path::Path>,
    control: Option<&std::path::Path>,
    json: bool,
) -> Result<u8, Failure> {
    let ask = match (control, file) {
        (Some(sock), _) => fleet::Ask::Socket(sock),
        (None, Some(file)) => fleet::Ask::File(file),
        (None, None) => unreachable!("clap requires one"),
    };
    let status = fleet::status(ask).map_err(fleet_failure)?;
    if json {
        print_json(&status);
    } else {
        print!("{}", fleet::status::table(&status));
    }
    Ok(0)
}

fn snapshot_failure(e: snapshot::SnapshotError) -> Failure {
    match e {
        snapshot::SnapshotError::Vmm(e) => vmm_failure(e),
        e if e.is_bad_input() => Failure::input(e),
        e => Failure::failed(e),
    }
}

/// A smoke run's errors: the runner's as [`vmm_failure`] says, the rest
/// are the test VM's or the image's (bad input).
fn smoke_failure(e: smoke::SmokeError) -> Failure {
    match e {
        smoke::SmokeError::Vmm(e) => vmm_failure(e),
        smoke::SmokeError::Snapshot(e) => snapshot_failure(e),
        e => Failure::input(e),
    }
}

fn bench_failure(e: bench::BenchError) -> Failure {
    match e {
        bench::BenchError::Image(e) => Failure::input(e),
        bench::BenchError::Vmm(e) => vmm_failure(e),
        bench::BenchError::Snapshot(e) => snapshot_failure(e),
        e => Failure::failed(e),
    }
}

fn report_failure(e: bench::report::ReportError) -> Failure {
    use bench::report::ReportError as E;
    match e {
        E::Out { .. } | E::Inspect(_) => Failure::input(e),
        E::Bench(e) => bench_failure(e),
        E::Smoke(e) => smoke_failure(e),
        E::FirstAnswer(first_answer::FirstAnswerError::Smoke(e)) => smoke_failure(e),
        E::FirstAnswer(first_answer::FirstAnswerError::Native(e)) => Failure::input(e),
        e => Failure::failed(e),
    }
}

/// An image opened once for a command; what the runner would refuse is
/// bad input.
fn open_image(path: &std::path::Path) -> Result<pgkraft::image::Image, Failure> {
    pgkraft::image::Image::open(path).map_err(|e| match e {
        pgkraft::image::ImageError::NotImage(e) => vmm_failure(e),
        e => Failure::input(e),
    })
}

/// Takes `dir` as `image`'s volume for this run (the lock is held while
/// the value lives) and says on stderr what it made of it.
fn open_volume(
    image: &pgkraft::image::Image,
    dir: Option<PathBuf>,
) -> Result<Option<volume::Volume>, Failure> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let taken = volume::Volume::open(image, &dir).map_err(|e| Failure {
        code: if e.is_refusal() { 2 } else { 1 },
        error: anyhow::Error::new(e).context("--volume"),
    })?;
    if let Some(said) = taken.state().said() {
        eprintln!("pgkraft: volume {}: {said}", dir.display());
    }
    Ok(Some(taken))
}

fn load_spec(vm: Option<&std::path::Path>) -> Result<smoke::TestVm, Failure> {
    match vm {
        Some(path) => smoke::TestVm::load(path).map_err(Failure::input),
        None => Ok(smoke::TestVm::default()),
    }
}

fn snapshot_cmd(
    image: &std::path::Path,
    vm: Option<&std::path::Path>,
    out: &std::path::Path,
    json: bool,
) -> Result<u8, Failure> {
    let spec = load_spec(vm)?;
    // Booted as the smoke checks plan it for this test VM (memory,
    // arguments, the mode's own), fed the snapshot's input.
    let input_before = bench::snapshot_input(&spec);
    let report =
        smoke::snapshot(&open_image(image)?, &spec, &input_before, out).map_err(smoke_failure)?;
    if json {
        print_json(&report);
    } else {
        let m = &report.manifest;
        eprintln!(
            "pgkraft: snapshot {} of {}: ready {:.3} ms after boot, saved in {:.3} ms; {} MiB of \
             guest memory, {} KiB written",
            report.dir.display(),
            image.display(),
            m.boot_to_ready_ms,
            m.save_ms,
            m.vm.memory_mib,
            m.memory.data_bytes / 1024,
        );
    }
    Ok(0)
}

#[derive(serde::Serialize)]
struct ResumeReport {
    dir: PathBuf,
    #[serde(flatten)]
    times: snapshot::ResumeTimes,
    verify: Option<snapshot::VerifyReport>,
    working_set: Option<snapshot::WorkingSetUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    console: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    smoke: Option<smoke::SmokeReport>,
}

fn resume_cmd(
    dir: &std::path::Path,
    vm: Option<&std::path::Path>,
    image: Option<PathBuf>,
    timeout: Option<Duration>,
    prefault: snapshot::Prefault,
    json: bool,
) -> Result<u8, Failure> {
    let Some(vm) = vm else {
        let expect = snapshot::Expect {
            image,
            prefault,
            ..Default::default()
        };
        let console = if json {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(|e| Failure::input(anyhow::anyhow!("reading stdin: {e}")))?;
            vmm::Console::Capture { input }
        } else {
            vmm::Console::Stdio
        };
        let cfg = vmm::VmConfig {
            mem_mib: 0,
            cmdline: String::new(),
            timeout,
            console,
            net: None,
            signals: None,
            volume: None,
            hibernate: None,
            vcpu_cpu: None,
        };
        let r = snapshot::resume(dir, &cfg, &expect).map_err(snapshot_failure)?;
        let times = snapshot::ResumeTimes::of(&r.outcome.phases);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} ms"));
        let (exit, status) = smoke::exit_text(&r.outcome.exit);
        let code = status.unwrap_or(1);
        if json {
            print_json(&ResumeReport {
                dir: dir.to_path_buf(),
                times,
                verify: Some(r.verify),
                working_set: Some(r.working_set.clone()),
                exit: Some(exit),
                console: Some(String::from_utf8_lossy(&r.outcome.console).into_owned()),
                smoke: None,
            });
        } else {
            eprintln!(
                "pgkraft: resumed {}: restored {}, first sign of life {}, first answer {}; \
                 integrity check {:.3} ms{}; working set {}; guest {exit}",
                dir.display(),
                fmt(times.restored_ms),
                fmt(times.resume_ms),
                fmt(times.first_answer_ms),
                r.verify.ms,
                if r.verify.hashed.is_empty() {
                    " (cached)".to_string()
                } else {
                    format!(" (hashed {})", r.verify.hashed.join(", "))
                },
                r.working_set.human(),
            );
        }
        return Ok(code);
    };
    let spec = smoke::TestVm::load(vm).map_err(Failure::input)?;
    let expect = snapshot::Expect {
        image,
        memory_mib: spec.memory_mib,
        cmdline: spec.args.as_deref().map(smoke::quote_args),
        prefault,
        console: bench::console_prefix(&spec),
    };
    // Every refusal happens here, before anything runs.
    let loaded = snapshot::load(dir, &expect).map_err(snapshot_failure)?;
    let image = open_image(&loaded.image_path)?;
    let (report, resumed) = smoke::resume(&image, &spec, loaded, &expect).map_err(smoke_failure)?;
    let times = snapshot::ResumeTimes::by(|name| report.phases.get(name).copied());
    let ok = report.ok;
    if json {
        print_json(&ResumeReport {
            dir: dir.to_path_buf(),
            times,
            working_set: Some(resumed.working_set),
            verify: Some(resumed.verify),
            exit: None,
            console: None,
            smoke: Some(report),
        });
    } else {
        eprint!("{}", report.human());
    }
    Ok(if ok { 0 } else { 1 })
}
