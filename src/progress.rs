//! Stage progress: a spinner per stage on a terminal, plain lines on stderr
//! otherwise (CI logs), never anything on stdout (that is for --json).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    tty: bool,
    quiet: bool,
}

pub struct Stage {
    name: String,
    bar: Option<ProgressBar>,
    started: Instant,
    quiet: bool,
    done: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    pub fn stage(&self, name: &str) -> Stage {
        let bar = (self.tty && !self.quiet).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            b.set_message(name.to_string());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Stage {
            name: name.to_string(),
            bar,
            started: Instant::now(),
            quiet: self.quiet,
            done: false,
        }
    }
}

impl Stage {
    /// Mark the stage finished, with a short note (e.g. "cached").
    pub fn finish(mut self, note: &str) {
        self.done = true;
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!("{:<10} {note} ({secs:.1}s)", self.name);
        match self.bar.take() {
            Some(b) => {
                b.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
                b.finish_with_message(line)
            }
            None if !self.quiet => eprintln!("pgkraft: {line}"),
            None => {}
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take()
            && !self.done
        {
            b.abandon_with_message(format!("{:<10} failed", self.name));
        }
    }
}
