//! When things happened in one run: the boot phases the runner and the guest
//! report, and when console output arrived (so a caller can tell when a
//! given answer came). All times count from the run's start, which the
//! caller sets before the VM is even created.
//!
//! docs/ARCHITECTURE.md §4.

use std::time::{Duration, Instant};

use crate::{OutputMark, PhaseMark};

/// Bounds the marks' memory for guests that write a lot; later writes are
/// not marked.
pub const MAX_OUTPUT_MARKS: usize = 1 << 16;

pub(crate) struct Timeline {
    t0: Instant,
    pub phases: Vec<PhaseMark>,
    pub output_marks: Vec<OutputMark>,
}

impl Timeline {
    pub(crate) fn new(t0: Instant) -> Timeline {
        Timeline {
            t0,
            phases: Vec::with_capacity(8),
            output_marks: Vec::new(),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    pub(crate) fn mark(&mut self, name: &'static str) {
        let at = self.elapsed();
        self.phases.push(PhaseMark { name, at });
    }

    /// Console output reached `bytes` captured bytes now.
    pub(crate) fn output(&mut self, bytes: usize) {
        if self.output_marks.len() < MAX_OUTPUT_MARKS {
            let at = self.elapsed();
            self.output_marks.push(OutputMark { at, bytes });
        }
    }
}
