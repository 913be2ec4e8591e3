//! The guest console: one output sink and one input source, shared by the
//! CONSOLE_* hypercalls and the emulated COM1.
//!
//! docs/ARCHITECTURE.md §4.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use vm_superio::Trigger;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Where guest output goes.
pub(crate) enum ConsoleOut {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File(std::fs::File),
    Capture(Vec<u8>),
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ConsoleOut::Stdout(s) => s.write(buf),
            ConsoleOut::Stderr(s) => s.write(buf),
            ConsoleOut::File(f) => f.write(buf),
            ConsoleOut::Capture(v) => {
                v.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConsoleOut::Stdout(s) => s.flush(),
            ConsoleOut::Stderr(s) => s.flush(),
            ConsoleOut::File(f) => f.flush(),
            ConsoleOut::Capture(_) => Ok(()),
        }
    }
}

impl ConsoleOut {
    pub(crate) fn into_captured(self) -> Vec<u8> {
        match self {
            ConsoleOut::Stdout(_) | ConsoleOut::Stderr(_) | ConsoleOut::File(_) => Vec::new(),
            ConsoleOut::Capture(v) => v,
        }
    }
}

/// The guest's console: where its output goes and its input comes from,
/// whichever device (COM1 or the CONSOLE_* hypercalls) carries the bytes.
pub(crate) struct Console {
    pub out: ConsoleOut,
    pub input: ConsoleIn,
}

impl Console {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    pub(crate) fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Output captured so far; `None` when output is not captured.
    pub(crate) fn captured(&self) -> Option<&[u8]> {
        match &self.out {
            ConsoleOut::Capture(v) => Some(v),
            _ => None,
        }
    }
}

/// The runner has no interrupt controller yet: the guest polls the UART's
/// line status register, so raising its interrupt line is a no-op.
pub(crate) struct NoIrq;

impl Trigger for NoIrq {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a blocking read gave up without data.
pub(crate) struct Stopped;

const STDIN_TOKEN: u64 = 0;
const STOP_TOKEN: u64 = 1;

/// Where guest input comes from.
pub(crate) enum ConsoleIn {
    Buffer {
        data: Vec<u8>,
        pos: usize,
    },
    Stdin {
        /// A dup of fd 0, read without std's buffering so that epoll
        /// readiness and what `read` returns agree.
        file: Option<File>,
        /// Waits on stdin and on the stop event together. `None` when stdin
        /// cannot be polled (a regular file, which never blocks anyway).
        epoll: Option<Epoll>,
        eof: bool,
    },
}

impl ConsoleIn {
    pub(crate) fn stdin(stop: &EventFd) -> ConsoleIn {
        let file = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .ok();
        let epoll = file.as_ref().and_then(|f| {
            let ep = Epoll::new().ok()?;
            ep.ctl(
                ControlOperation::Add,
                f.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STDIN_TOKEN),
            )
            .ok()?;
            ep.ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STOP_TOKEN),
            )
            .ok()?;
            Some(ep)
        });
        ConsoleIn::Stdin {
            eof: file.is_none(),
            file,
            epoll,
        }
    }

    /// Up to `buf.len()` bytes that are available right now; 0 if none (or
    /// at end of input).
    pub(crate) fn read_now(&mut self, buf: &mut [u8]) -> usize {
        match self {
            ConsoleIn::Buffer { data, pos } => {
                let n = buf.len().min(data.len() - *pos);
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                n
            }
            ConsoleIn::Stdin { .. } => match self.wait(Some(Duration::ZERO)) {
                Ok(true) => self.read_stdin(buf),
                _ => 0,
            },
        }
    }

    /// At least one byte, or 0 at end of input; `Err(Stopped)` if the run is
    /// being stopped while it waits.
    pub(crate) fn read_blocking(&mut self, buf: &mut [u8]) -> Result<usize, Stopped> {
        match self {
            ConsoleIn::Buffer { .. } => Ok(self.read_now(buf)),
            ConsoleIn::Stdin { .. } => {
                if self.wait(None)? {
                    Ok(self.read_stdin(buf))
                } else {
                    Ok(0)
                }
            }
        }
    }

    /// Whether stdin is readable (or at EOF/error, which a read reports);
    /// false if it cannot be read at all.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Stopped> {
        let ConsoleIn::Stdin { file, epoll, eof } = self else {
            return Ok(true);
        };
        if *eof || file.is_none() {
            return Ok(false);
        }
        let Some(ep) = epoll else {
            return Ok(true);
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut events = [EpollEvent::default(); 2];
        loop {
            match ep.wait(ms, &mut events) {
                Ok(n) => {
                    let ready = &events[..n];
                    if ready.iter().any(|e| e.data() == STOP_TOKEN) {
                        return Err(Stopped);
                    }
                    return Ok(!ready.is_empty());
                }
                // The vCPU kick signal lands here too; the stop eventfd (not
                // the signal) says whether to give up.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if ms == 0 {
                        return Ok(false);
                    }
                }
                Err(_) => return Ok(true),
            }
        }
    }

    fn read_stdin(&mut self, buf: &mut [u8]) -> usize {
        let ConsoleIn::Stdin {
            file: Some(f), eof, ..
        } = self
        else {
            return 0;
        };
        loop {
            match f.read(buf) {
                Ok(0) => {
                    *eof = true;
                    return 0;
                }
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("console: reading stdin failed ({e}); treating it as end of input");
                    *eof = true;
                    return 0;
                }
            }
        }
    }
}

/// What a snapshot keeps of the console: the session so far, so a resumed
/// run's captured output can read as the whole session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConsoleState {
    pub version: u32,
    /// Console output before the snapshot.
    pub output: String,
    /// Console input fed before the snapshot.
    pub input_before: String,
    /// How much of `output` the guest had printed before it read that
    /// input (all of it if there was none).
    pub output_before_input: usize,
}

impl ConsoleState {
    pub(crate) const VERSION: u32 = 1;

    pub(crate) fn check(&self) -> Result<(), String> {
        crate::devices::check_version("console", self.version, Self::VERSION)
    }
}
