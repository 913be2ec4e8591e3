//! Pipes: a byte queue between a read end and a write end.
//!
//! There is one process and nothing runs while it waits, so a pipe can
//! never be drained or filled by someone else during a call. Hence:
//! - a read of an empty pipe whose write end is still open answers EAGAIN,
//!   blocking or not (blocking would be a hang: no writer can ever run),
//!   and says so once on the log channel;
//! - a blocking write never waits for room: the queue grows past the pipe's
//!   capacity (a full pipe would be a hang for the same reason). Non-blocking
//!   writes honour the capacity exactly as Linux does (EAGAIN, PIPE_BUF
//!   atomicity), which is what self-pipe wakeups rely on.
//!
//! When processes arrive (fork), both cases become a wait for another one.

use crate::syscall::Errno;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::Mutex;

/// Linux's default pipe capacity and atomic write size.
pub const DEFAULT_CAPACITY: usize = 65536;
const PIPE_BUF: usize = 4096;

pub struct Pipe {
    pub ino: u64,
    queue: Mutex<VecDeque<u8>>,
    capacity: AtomicUsize,
    readers: AtomicUsize,
    writers: AtomicUsize,
}

/// One end of a pipe, held by an open file description. Dropping the last
/// description of an end closes that end.
pub struct PipeEnd {
    pub pipe: Arc<Pipe>,
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let count = if self.write {
            &self.pipe.writers
        } else {
            &self.pipe.readers
        };
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn new() -> (PipeEnd, PipeEnd) {
    let pipe = Arc::new(Pipe {
        ino: super::inode::next_ino(),
        queue: Mutex::new(VecDeque::new()),
        capacity: AtomicUsize::new(DEFAULT_CAPACITY),
        readers: AtomicUsize::new(1),
        writers: AtomicUsize::new(1),
    });
    (
        PipeEnd {
            pipe: pipe.clone(),
            write: false,
        },
        PipeEnd { pipe, write: true },
    )
}

impl Pipe {
    pub fn available(&self) -> usize {
        self.queue.lock().len()
    }

    /// poll(2) readiness of one end: POLLIN/POLLOUT/POLLHUP/POLLERR bits.
    pub fn poll_events(&self, write_end: bool) -> u32 {
        let queued = self.available();
        if write_end {
            if self.readers.load(Ordering::Relaxed) == 0 {
                return crate::fd::POLLOUT | crate::fd::POLLERR;
            }
            if queued < self.capacity() {
                crate::fd::POLLOUT
            } else {
                0
            }
        } else {
            let mut ev = if queued > 0 { crate::fd::POLLIN } else { 0 };
            if self.writers.load(Ordering::Relaxed) == 0 {
                ev |= crate::fd::POLLHUP;
            }
            ev
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// F_SETPIPE_SZ: at least `want` bytes, a power-of-two number of pages;
    /// EBUSY if what is queued would not fit.
    pub fn set_capacity(&self, want: u64) -> Result<usize, Errno> {
        if want > 1 << 20 {
            return Err(Errno::EPERM);
        }
        let size = (want.max(PIPE_BUF as u64) as usize).next_power_of_two();
        if self.available() > size {
            return Err(Errno::EBUSY);
        }
        self.capacity.store(size, Ordering::Relaxed);
        Ok(size)
    }
}

static WARNED_EMPTY_READ: AtomicBool = AtomicBool::new(false);

impl PipeEnd {
    pub fn read(&self, buf: &mut [u8], nonblocking: bool) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut q = self.pipe.queue.lock();
        if q.is_empty() {
            if self.pipe.writers.load(Ordering::Relaxed) == 0 {
                return Ok(0);
            }
            drop(q);
            if !nonblocking && !WARNED_EMPTY_READ.swap(true, Ordering::Relaxed) {
                crate::log!(
                    "libos: read of an empty pipe whose writer is this process: returning EAGAIN (waiting would never end)"
                );
            }
            return Err(Errno::EAGAIN);
        }
        let n = buf.len().min(q.len());
        let (a, b) = q.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        q.drain(..n);
        Ok(n)
    }

    /// Err(EPIPE) when no read end is open; the caller raises SIGPIPE.
    pub fn write(&self, data: &[u8], nonblocking: bool) -> Result<usize, Errno> {
        if self.pipe.readers.load(Ordering::Relaxed) == 0 {
            return Err(Errno::EPIPE);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let mut q = self.pipe.queue.lock();
        let n = if nonblocking {
            let room = self.pipe.capacity().saturating_sub(q.len());
            if room == 0 || (data.len() <= PIPE_BUF && room < data.len()) {
                return Err(Errno::EAGAIN);
            }
            room.min(data.len())
        } else {
            data.len()
        };
        q.try_reserve(n).map_err(|_| Errno::ENOMEM)?;
        q.extend(&data[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fd::{POLLERR, POLLHUP, POLLIN, POLLOUT};

    #[test]
    fn bytes_come_out_in_order_across_partial_reads() {
        let (r, w) = new();
        assert_eq!(w.write(b"hello, ", false), Ok(7));
        assert_eq!(w.write(b"world", false), Ok(5));
        let mut buf = [0u8; 5];
        assert_eq!(r.read(&mut buf, false), Ok(5));
        assert_eq!(&buf, b"hello");
        let mut rest = [0u8; 64];
        assert_eq!(r.read(&mut rest, false), Ok(7));
        assert_eq!(&rest[..7], b", world");
        assert_eq!(r.pipe.available(), 0);
    }

    #[test]
    fn reads_across_the_queue_wrapping_around() {
        let (r, w) = new();
        let data: Vec<u8> = (0..80_000u32).map(|i| (i % 251) as u8).collect();
        w.write(&data[..60_000], false).unwrap();
        let mut out = vec![0u8; 80_000];
        assert_eq!(r.read(&mut out[..50_000], false), Ok(50_000));
        w.write(&data[60_000..], false).unwrap();
        assert_eq!(r.read(&mut out[50_000..], false), Ok(30_000));
        assert_eq!(out, data);
    }

    #[test]
    fn empty_pipe_is_eagain_while_a_writer_exists_then_end_of_file() {
        let (r, w) = new();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf, true), Err(Errno::EAGAIN));
        // A zero-length read succeeds at once, as on Linux.
        assert_eq!(r.read(&mut [], true), Ok(0));
        w.write(b"x", false).unwrap();
        drop(w);
        // Data written before the close is still read, then EOF.
        assert_eq!(r.read(&mut buf, true), Ok(1));
        assert_eq!(r.read(&mut buf, true), Ok(0));
    }

    #[test]
    fn writing_with_no_reader_is_epipe() {
        let (r, w) = new();
        drop(r);
        assert_eq!(w.write(b"x", false), Err(Errno::EPIPE));
        // Even an empty write, as Linux checks readers first.
        assert_eq!(w.write(b"", true), Err(Errno::EPIPE));
    }

    #[test]
    fn nonblocking_writes_honour_capacity_and_pipe_buf_atomicity() {
        let (_r, w) = new();
        let big = vec![7u8; DEFAULT_CAPACITY - 100];
        assert_eq!(w.write(&big, true), Ok(DEFAULT_CAPACITY - 100));
        // 100 bytes of room: a write of up to PIPE_BUF is all or nothing...
        assert_eq!(w.write(&[1u8; 200], true), Err(Errno::EAGAIN));
        // ...a larger one is partial.
        assert_eq!(w.write(&[1u8; PIPE_BUF + 1], true), Ok(100));
        // Full: EAGAIN.
        assert_eq!(w.write(&[1u8; PIPE_BUF + 1], true), Err(Errno::EAGAIN));
        assert_eq!(w.pipe.poll_events(true), 0);
    }

    #[test]
    fn poll_readiness_of_both_ends() {
        let (r, w) = new();
        assert_eq!(w.pipe.poll_events(true), POLLOUT);
        assert_eq!(r.pipe.poll_events(false), 0);
        w.write(b"abc", false).unwrap();
        assert_eq!(r.pipe.poll_events(false), POLLIN);
        let p = r.pipe.clone();
        drop(w);
        // Writer gone: POLLHUP, with POLLIN while data is left.
        assert_eq!(p.poll_events(false), POLLIN | POLLHUP);
        let (r2, w2) = new();
        drop(r2);
        // Reader gone: the write end reports POLLERR (and is writable: the
        // write fails at once).
        assert_eq!(w2.pipe.poll_events(true), POLLOUT | POLLERR);
    }

    #[test]
    fn set_pipe_size_rounds_up_and_checks_like_linux() {
        let (_r, w) = new();
        assert_eq!(w.pipe.capacity(), 65536);
        // At least a page, a power of two.
        assert_eq!(w.pipe.set_capacity(1), Ok(4096));
        assert_eq!(w.pipe.set_capacity(5000), Ok(8192));
        assert_eq!(w.pipe.capacity(), 8192);
        // Over /proc/sys/fs/pipe-max-size (1 MiB) unprivileged: EPERM.
        assert_eq!(w.pipe.set_capacity((1 << 20) + 1), Err(Errno::EPERM));
        // Shrinking below what is queued: EBUSY.
        w.write(&[0u8; 6000], false).unwrap();
        assert_eq!(w.pipe.set_capacity(4096), Err(Errno::EBUSY));
    }
}
