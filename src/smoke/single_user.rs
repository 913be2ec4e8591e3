//! Single-user mode in the guest: the image's `postgres --single` gets every
//! check's SQL on its console, and its output is checked answer by answer.

use super::{Check, Mode, SmokeError, SmokeReport, TestVm, exit_text, ms, phase_map};
use crate::image::Image;
use crate::pgsingle::{self, Transcript};

use crate::vmm;
use std::path::Path;

/// The guest's arguments (argv[1..]) for `-j` mode, from the image's own.
pub(crate) fn guest_args(image: &Image) -> Result<Vec<String>, SmokeError> {
    let argv = image.argv()?;
    let rest = argv.get(1..).unwrap_or_default();
    pgsingle::args_with_j(rest).ok_or_else(|| SmokeError::NotSingleUser {
        image: image.path().to_path_buf(),
        args: rest.to_vec(),
    })
}

/// The server's input for a definition's checks.
pub(crate) fn stdin_for(spec: &TestVm) -> String {
    pgsingle::stdin_for(spec.checks.iter().map(|c| c.sql.as_str()))
}

pub(crate) fn check_guest(image: &Image, spec: &TestVm, outcome: &vmm::RunOutcome) -> SmokeReport {
    let marks: Vec<(f64, usize)> = outcome
        .output_marks
        .iter()
        .map(|m| (ms(m.at), m.bytes))
        .collect();
    let (exit, exit_status) = exit_text(&outcome.exit);
    let phases = phase_map(&outcome.phases);
    report(
        Outcome {
            runner: "kvm",
            image: image.path(),
            image_bytes: image.file_bytes(),
            console: &outcome.console,
            marks: &marks,
            exit,
            exit_status,
            phases,
            vm_exits: outcome.exits,
            guest_memory: outcome.memory,
        },
        spec,
    )
}

/// What a run produced, whichever runner ran it.
pub(crate) struct Outcome<'a> {
    pub runner: &'static str,
    pub image: &'a Path,
    pub image_bytes: u64,
    pub console: &'a [u8],
    /// (ms since runner start, bytes of output by then), in order.
    pub marks: &'a [(f64, usize)],
    pub exit: String,
    pub exit_status: Option<u8>,
    pub phases: std::collections::BTreeMap<String, f64>,
    pub vm_exits: u64,
    pub guest_memory: Option<crate::vmm::MemoryUse>,
}

/// When the output had grown to `end` bytes.
fn arrived(marks: &[(f64, usize)], end: usize) -> Option<f64> {
    marks.iter().find(|(_, b)| *b >= end).map(|(t, _)| *t)
}

/// Checks each answer against its check and builds the report.
pub(crate) fn report(o: Outcome, spec: &TestVm) -> SmokeReport {
    let console = String::from_utf8_lossy(o.console).into_owned();
    let transcript = pgsingle::parse(&console);
    let why = if o.exit == "timeout" {
        format!(
            "no answer within timeout_secs ({}s); the server was stopped",
            spec.timeout_secs
        )
    } else {
        format!("no answer: the server ended ({}) first", o.exit)
    };
    let mut checks = evaluate(&transcript, spec, o.marks, &why);
    let first_answer_ms = checks.first().and_then(|c| c.answered_ms);
    checks.push(Check {
        name: "server exits cleanly at end of input".into(),
        ok: o.exit_status == Some(0),
        expected: Some("status 0".into()),
        actual: Some(o.exit.clone()),
        ..Check::default()
    });
    let mut phases = o.phases;
    if let Some(ms) = first_answer_ms {
        phases.insert("first_answer".into(), ms);
    }
    SmokeReport {
        ok: checks.iter().all(|c| c.ok),
        mode: Mode::SingleUser,
        runner: o.runner,
        image: o.image.to_path_buf(),
        image_bytes: o.image_bytes,
        // Runner start to the end of the run, whichever runner.
        boot_ms: phases.get("exit").copied().unwrap_or(0.0),
        phases,
        exit: o.exit,
        exit_status: o.exit_status,
        vm_exits: o.vm_exits,
        guest_memory: o.guest_memory,
        first_answer_ms,
        checks,
        server_messages: transcript
            .fatal_lines()
            .into_iter()
            .map(str::to_string)
            .collect(),
        console,
    }
}

/// One result per check, in order. A check without an answer (the server
/// stopped, or the time ran out first) fails with `why`, and what the
/// server printed after its last complete answer.
fn evaluate(t: &Transcript, spec: &TestVm, marks: &[(f64, usize)], why: &str) -> Vec<Check> {
    let mut unanswered_shown = false;
    spec.checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let expected = super::expected_text(c);
            let Some(answer) = t.answers.get(i) else {
                if unanswered_shown {
                    return Check {
                        name: c.name.clone(),
                        actual: Some("not reached: the session ended earlier".into()),
                        ..Check::default()
                    };
                }
                unanswered_shown = true;
                let partial = t.after_last.trim();
                let actual = if partial.is_empty() {
                    format!("{why} (see the console tail)")
                } else {
                    format!("{why}; after its last answer the server printed: {partial}")
                };
                return Check {
                    name: c.name.clone(),
                    ok: false,
                    expected: Some(expected),
                    actual: Some(actual),
                    ..Check::default()
                };
            };
            let errors: Vec<String> = answer.errors().into_iter().map(str::to_string).collect();
            let rows = answer.last().map(|r| r.rows.clone());
            super::judge(c, errors, rows, arrived(marks, answer.end))
        })
        .collect()
}
