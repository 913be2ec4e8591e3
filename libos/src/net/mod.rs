//! Sockets: TCP over smoltcp (loopback and, when the VM has one,
//! virtio-net) and AF_UNIX streams inside the libOS. See
//! docs/ARCHITECTURE.md §3.
//!
//! A socket is an open file (`FileKind::Socket`) like a pipe: read, write,
//! poll and close work on it through fd.rs. Blocking calls poll the stack,
//! and when nothing can progress wait for smoltcp's next timer, the
//! caller's deadline or a device (stack::idle_until); a pending signal ends
//! the wait with EINTR, as for poll(2).

pub mod addr;
mod filter;
mod loopback;
pub mod opts;
pub mod stack;
pub mod tcp;
#[cfg(test)]
mod tests;
pub mod unix;
#[cfg(not(test))]
mod virtio;

use crate::syscall::{Errno, signal};
use addr::{AF_INET, AF_INET6, AF_UNIX, SockAddr};

/// Frames queued for the device go out now (before the libOS blocks
/// other than in `hc::WAIT`): see net/virtio.rs.
pub fn flush_tx() {
    #[cfg(not(test))]
    if virtio::tx_pending() {
        stack::try_with(|s| s.kick(false));
    }
}

/// Before the VM ends: frames queued for the device go out, and the
/// device has taken them (bounded wait).
pub fn drain_tx() {
    #[cfg(not(test))]
    if virtio::tx_pending() {
        stack::try_with(|s| s.kick(true));
    }
}

/// At a system call's entry: frames deferred for [`virtio::TX_DEFER_NS`]
/// go out now.
pub fn tx_deadline() {
    #[cfg(not(test))]
    if virtio::tx_pending() && virtio::tx_overdue(crate::time::monotonic_ns()) {
        stack::try_with(|s| s.kick(false));
    }
}

pub enum Socket {
    Tcp(tcp::TcpSock),
    Unix(unix::UnixSock),
}

/// Run `step` until it has an answer: polling the stack before each try,
/// EAGAIN when `nonblock`, EINTR when a signal is pending, else idle.
pub fn block<T>(
    nonblock: bool,
    mut step: impl FnMut() -> Result<Option<T>, Errno>,
) -> Result<T, Errno> {
    loop {
        stack::poll();
        if let Some(v) = step()? {
            // What was queued goes out now (loopback peers see it at once).
            stack::poll();
            return Ok(v);
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        if signal::interrupt_pending() {
            return Err(Errno::EINTR);
        }
        let until = signal::next_alarm().unwrap_or(u64::MAX);
        crate::proc::idle(until.min(crate::time::monotonic_ns().saturating_add(1_000_000_000)));
    }
}

impl Socket {
    pub fn family(&self) -> u16 {
        match self {
            Socket::Tcp(t) if t.v6 => AF_INET6,
            Socket::Tcp(_) => AF_INET,
            Socket::Unix(_) => AF_UNIX,
        }
    }

    pub fn bind(&self, a: &SockAddr) -> Result<(), Errno> {
        match self {
            Socket::Tcp(t) => t.bind(a),
            Socket::Unix(u) => u.bind(a),
        }
    }

    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        match self {
            Socket::Tcp(t) => t.listen(backlog),
            Socket::Unix(u) => u.listen(backlog),
        }
    }

    pub fn listening(&self) -> bool {
        match self {
            Socket::Tcp(t) => t.listening(),
            Socket::Unix(u) => u.listening(),
        }
    }

    pub fn accept(&self, nonblock: bool) -> Result<(Socket, SockAddr), Errno> {
        block(nonblock, || match self {
            Socket::Tcp(t) => Ok(t.accept()?.map(|(s, a)| (Socket::Tcp(s), a))),
            Socket::Unix(u) => Ok(u.accept()?.map(|(s, a)| (Socket::Unix(s), a))),
        })
    }

    pub fn connect(&self, a: &SockAddr, nonblock: bool) -> Result<(), Errno> {
        match self {
            Socket::Tcp(t) => {
                // A connect under way (or just finished) answers for itself.
                if t.connect(a, false)? {
                    return Ok(());
                }
                stack::poll();
                if nonblock {
                    return Err(Errno::EINPROGRESS);
                }
                block(false, || Ok(t.connect(a, true)?.then_some(())))
            }
            Socket::Unix(u) => block(nonblock, || u.connect(a)),
        }
    }

    pub fn recv(&self, buf: &mut [u8], peek: bool, nonblock: bool) -> Result<usize, Errno> {
        block(nonblock, || match self {
            Socket::Tcp(t) => t.recv(buf, peek),
            Socket::Unix(u) => u.recv(buf, peek),
        })
    }

    /// Blocking sends move everything (or stop early at a signal or an
    /// error after some bytes); non-blocking ones what fits.
    pub fn send(&self, buf: &[u8], nonblock: bool, nosignal: bool) -> Result<usize, Errno> {
        let mut done = 0;
        let r = loop {
            let r = block(nonblock, || match self {
                Socket::Tcp(t) => t.send(&buf[done..]),
                Socket::Unix(u) => u.send(&buf[done..]),
            });
            match r {
                Ok(n) => {
                    done += n;
                    if nonblock || done == buf.len() {
                        break Ok(done);
                    }
                }
                Err(_) if done > 0 => break Ok(done),
                Err(e) => break Err(e),
            }
        };
        if r == Err(Errno::EPIPE) && !nosignal {
            signal::raise(SIGPIPE);
        }
        r
    }

    pub fn shutdown(&self, how: u64) -> Result<(), Errno> {
        let (rd, wr) = match how {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => return Err(Errno::EINVAL),
        };
        let r = match self {
            Socket::Tcp(t) => t.shutdown(rd, wr),
            Socket::Unix(u) => u.shutdown(rd, wr),
        };
        stack::poll();
        r
    }

    pub fn local_name(&self) -> SockAddr {
        match self {
            Socket::Tcp(t) => t.local_name(),
            Socket::Unix(u) => u.local_name(),
        }
    }

    pub fn peer_name(&self) -> Result<SockAddr, Errno> {
        match self {
            Socket::Tcp(t) => t.peer_name(),
            Socket::Unix(u) => u.peer_name(),
        }
    }

    pub fn poll_events(&self) -> u32 {
        match self {
            Socket::Tcp(t) => t.poll_events(),
            Socket::Unix(u) => u.poll_events(),
        }
    }

    pub fn readable_bytes(&self) -> usize {
        match self {
            Socket::Tcp(t) => t.readable_bytes(),
            Socket::Unix(u) => u.readable_bytes(),
        }
    }

    pub fn take_error(&self) -> Option<Errno> {
        match self {
            Socket::Tcp(t) => t.take_error(),
            Socket::Unix(_) => None,
        }
    }

    pub fn opts<R>(&self, f: impl FnOnce(&mut opts::Opts) -> R) -> R {
        match self {
            Socket::Tcp(t) => t.opts(f),
            Socket::Unix(u) => f(&mut u.opts.lock()),
        }
    }
}

const SIGPIPE: u64 = 13;
