//! The `pgkraft` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgkraft::{bench, build, image_info, progress::Progress, recipe, smoke, vmm};
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
    /// Build the image a recipe describes: writes DIR/<name>.img and DIR/<name>.manifest.json.
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
        #[arg(long, value_name = "MIB")]
        mem: Option<u32>,
        /// Stop the guest after this many seconds (exit status 1).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// Arguments for the program; they replace the recipe's `args`.
        #[arg(last = true)]
        args: Vec<String>,
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
        /// Single-user mode: run the checks with the host-linked postgres of
        /// the image's build on a copy of the image's files, not in the guest.
        #[arg(long)]
        native: bool,
        /// With --native: the host-linked postgres (default: the one the
        /// image's recipe builds, from the cache).
        #[arg(long, value_name = "PATH", requires = "native")]
        postgres: Option<PathBuf>,
    },
    /// Measure, side by side in one run (prints medians and ratios).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Show an image's sections, sizes and embedded build manifest.
    Inspect {
        image: PathBuf,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Boot an image repeatedly under our runner and under QEMU microvm, alternating.
    Boot {
        image: PathBuf,
        /// Boots per VMM.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Print one JSON object on stdout, nothing else there.
        #[arg(long)]
        json: bool,
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
        | E::Memory { .. } => Failure::input(e),
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
            args,
        } => {
            let info = image_info::read(&image).map_err(Failure::input)?;
            let mem_mib = mem
                .or(info.build.as_ref().map(|b| b.memory_mib))
                .unwrap_or(64);
            let cfg = vmm::VmConfig {
                mem_mib,
                cmdline: smoke::quote_args(&args),
                timeout: timeout.map(Duration::from_secs_f64),
                console: vmm::Console::Stdio,
            };
            let outcome = vmm::run(&image, &cfg).map_err(vmm_failure)?;
            match outcome.exit {
                vmm::GuestExit::Status(s) => Ok(s),
                vmm::GuestExit::Timeout => Err(Failure::failed(anyhow::anyhow!(
                    "the guest did not exit within {}s (--timeout)",
                    timeout.unwrap_or_default()
                ))),
                vmm::GuestExit::Shutdown { regs } => {
                    Err(Failure::failed(anyhow::anyhow!("the guest died:\n{regs}")))
                }
            }
        }
        Command::Smoke {
            image,
            vm,
            json,
            native,
            postgres,
        } => {
            let spec = match vm {
                Some(path) => smoke::TestVm::load(&path).map_err(Failure::input)?,
                None => smoke::TestVm::default(),
            };
            let report = if native {
                smoke::native::run_cli(&image, &spec, postgres.as_deref())
                    .map_err(Failure::input)?
            } else {
                smoke::run(&image, &spec).map_err(|e| match e {
                    smoke::SmokeError::Vmm(e) => vmm_failure(e),
                    e => Failure::input(e),
                })?
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
            if runs == 0 {
                return Err(Failure::input(anyhow::anyhow!("--runs must be at least 1")));
            }
            let report = bench::boot(&image, runs).map_err(|e| match e {
                bench::BenchError::Image(e) => Failure::input(e),
                bench::BenchError::Vmm(e) => vmm_failure(e),
                e => Failure::failed(e),
            })?;
            if json {
                print_json(&report);
            } else {
                print!("{}", report.human());
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
