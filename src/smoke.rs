//! `pgkraft smoke`: boot an image with a test VM definition, check what it
//! does, and report size, boot time and the boot phases.

use crate::image_info;
use crate::vmm::{self, GuestExit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A test VM definition (`test-vms/*.yaml`), program mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestVm {
    /// `program`: run the image's program once and check how it ends.
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
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Program,
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
            expect: Expect::default(),
        }
    }
}

impl TestVm {
    pub fn load(path: &Path) -> Result<TestVm, crate::recipe::RecipeError> {
        crate::recipe::load_yaml(path, "test VM definition")
    }
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SmokeReport {
    pub ok: bool,
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
    pub checks: Vec<Check>,
    pub console: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error(transparent)]
    Image(#[from] image_info::InspectError),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
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

pub fn run(image: &Path, spec: &TestVm) -> Result<SmokeReport, SmokeError> {
    let info = image_info::read(image)?;
    let mem_mib = spec
        .memory_mib
        .or(info.build.as_ref().map(|b| b.memory_mib))
        .unwrap_or(64);
    let cfg = vmm::VmConfig {
        mem_mib,
        cmdline: spec.args.as_deref().map(quote_args).unwrap_or_default(),
        timeout: Some(Duration::from_secs_f64(spec.timeout_secs)),
        console: vmm::Console::Capture {
            input: spec.stdin.as_bytes().to_vec(),
        },
    };
    let outcome = vmm::run(image, &cfg)?;
    let console = String::from_utf8_lossy(&outcome.console).into_owned();
    let phases: BTreeMap<String, f64> = outcome
        .phases
        .iter()
        .map(|p| (p.name.to_string(), ms(p.at)))
        .collect();
    let boot_ms = outcome
        .phases
        .iter()
        .find(|p| p.name == "exit")
        .map(|p| ms(p.at))
        .unwrap_or(0.0);
    let (exit, exit_status) = match &outcome.exit {
        GuestExit::Status(s) => (format!("status {s}"), Some(*s)),
        GuestExit::Timeout => ("timeout".to_string(), None),
        GuestExit::Shutdown { regs } => (format!("died: {regs}"), None),
    };

    let mut checks = vec![Check {
        name: "exit status".into(),
        ok: exit_status == Some(spec.expect.status),
        expected: Some(format!("status {}", spec.expect.status)),
        actual: Some(exit.clone()),
    }];
    if let Some(want) = &spec.expect.output {
        checks.push(Check {
            name: "output".into(),
            ok: &console == want,
            expected: Some(want.clone()),
            actual: Some(console.clone()),
        });
    }
    for want in &spec.expect.output_contains {
        checks.push(Check {
            name: format!("output contains {want:?}"),
            ok: console.contains(want.as_str()),
            expected: Some(want.clone()),
            actual: None,
        });
    }
    Ok(SmokeReport {
        ok: checks.iter().all(|c| c.ok),
        image: image.to_path_buf(),
        image_bytes: info.file_bytes,
        boot_ms,
        phases,
        exit,
        exit_status,
        vm_exits: outcome.exits,
        checks,
        console,
    })
}

impl SmokeReport {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} {} ({} bytes): {} in {:.3} ms, {} VM exits\n",
            if self.ok { "ok" } else { "FAILED" },
            self.image.display(),
            self.image_bytes,
            self.exit,
            self.boot_ms,
            self.vm_exits
        );
        let mut phases: Vec<_> = self.phases.iter().collect();
        phases.sort_by(|a, b| a.1.total_cmp(b.1));
        for (name, at) in phases {
            s += &format!("  {at:>9.3} ms  {name}\n");
        }
        for c in &self.checks {
            s += &format!("  [{}] {}\n", if c.ok { "ok" } else { "FAIL" }, c.name);
            if !c.ok {
                if let Some(e) = &c.expected {
                    s += &format!("        expected: {e:?}\n");
                }
                if let Some(a) = &c.actual {
                    s += &format!("        actual:   {a:?}\n");
                }
            }
        }
        s
    }
}
