//! One published connection: a host TCP stream accepted on a publish
//! address, and the runner's smoltcp socket connected to the guest's
//! port. Bytes go straight between the host socket and the smoltcp
//! socket's ring buffers (no buffer of the relay's own), so the runner
//! holds at most those two rings per connection: when the guest does not
//! read, the ring toward it fills and the host socket is not read any
//! more (its own kernel buffers then push back on the client).
//!
//! Endings: the guest refuses (RST) or never answers the SYN within
//! [`SYN_TIMEOUT`]: the host connection is closed. The guest closes its
//! side: once its data is written to the host, the host socket's write
//! side is shut down (the other direction goes on). The host client
//! closes its side: the smoltcp socket closes its send side. The host
//! client vanishes (a reset, a failed write): the smoltcp socket is
//! aborted (RST to the guest).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use smoltcp::socket::tcp::{self, State};
use vmm_sys_util::epoll::EventSet;

/// How long the guest has to answer a connection attempt. The client is
/// already connected (to us), so this only bounds a guest that never
/// answers; a busy one (a full backlog drops SYNs, smoltcp resends them
/// after 0.7 s, 1.4 s, ...) must have time to catch up.
pub(crate) const SYN_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) struct Relay {
    /// `None` once both of its directions are finished.
    pub host: Option<TcpStream>,
    pub local_port: u16,
    pub started: Instant,
    open: bool,
    /// The host client sent its FIN (and the smoltcp socket was closed).
    host_eof: bool,
    /// The guest's FIN was passed on (host write side shut down).
    host_shut: bool,
    /// The last write to the host would have blocked.
    blocked_out: bool,
    /// The epoll interest registered for `host`.
    pub interest: EventSet,
    /// `host` is in the epoll set (taken out while a hang-up cannot be
    /// acted on: `UserNet::step_relays`).
    pub registered: bool,
    /// The guest's bytes went out to the host since the owner last looked
    /// (taken by `UserNet::step_relays`: the idle timer's "answered").
    pub answered: bool,
}

/// What [`Relay::step`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// Bytes moved or state changed.
    pub progress: bool,
    /// The connection is over: remove the socket and the relay.
    pub done: bool,
}

impl Relay {
    pub(crate) fn new(host: TcpStream, local_port: u16, now: Instant) -> Relay {
        Relay {
            host: Some(host),
            local_port,
            started: now,
            open: false,
            host_eof: false,
            host_shut: false,
            blocked_out: false,
            interest: EventSet::empty(),
            registered: true,
            answered: false,
        }
    }

    /// Still waiting for the guest to accept: the SYN deadline, if so.
    pub(crate) fn syn_deadline(&self) -> Option<Instant> {
        (!self.open).then(|| self.started + SYN_TIMEOUT)
    }

    /// Moves what can be moved now. `events`: what epoll reported for the
    /// host socket; it is read, written or peeked only when they say it
    /// has something (no system call for an idle connection).
    pub(crate) fn step(&mut self, sock: &mut tcp::Socket, now: Instant, events: EventSet) -> Step {
        let mut progress = false;
        let hangup = events.intersects(EventSet::ERROR | EventSet::HANG_UP);
        if hangup && self.host_failed() {
            sock.abort();
            return Step {
                progress: true,
                done: true,
            };
        }
        if !self.open {
            match sock.state() {
                State::SynSent | State::SynReceived => {
                    let gone = !events.is_empty() && self.host_gone_while_connecting();
                    if gone || now >= self.started + SYN_TIMEOUT {
                        sock.abort();
                        return Step {
                            progress: true,
                            done: true,
                        };
                    }
                    return Step {
                        progress: false,
                        done: false,
                    };
                }
                // Refused (RST) or aborted.
                State::Closed | State::TimeWait | State::Listen => {
                    return Step {
                        progress: true,
                        done: true,
                    };
                }
                _ => {
                    self.open = true;
                    progress = true;
                }
            }
        }
        if !self.blocked_out || events.contains(EventSet::OUT) {
            match self.guest_to_host(sock) {
                Ok(p) => progress |= p,
                Err(()) => return self.abort(sock),
            }
        }
        // Just opened: the client may have sent before the guest answered.
        if progress || events.intersects(EventSet::IN | EventSet::READ_HANG_UP) {
            match self.host_to_guest(sock) {
                Ok(p) => progress |= p,
                Err(()) => return self.abort(sock),
            }
        }
        if self.host_eof && self.host_shut && self.host.is_some() {
            // Both host directions finished: its fd is of no more use
            // (and would report a hang-up for ever).
            self.host = None;
            progress = true;
        }
        let done = matches!(sock.state(), State::Closed | State::TimeWait);
        Step {
            progress: progress || done,
            done,
        }
    }

    /// The interest the host socket should be registered with now: while
    /// the guest has not answered, only the client going away (once: edge
    /// triggered, so a half-closed client does not wake the VM for ever).
    pub(crate) fn wanted(&self, sock: &tcp::Socket) -> EventSet {
        if !self.open {
            return Self::CONNECTING;
        }
        let mut e = EventSet::empty();
        if self.open && !self.host_eof && sock.can_send() {
            e |= EventSet::IN;
        }
        if self.blocked_out {
            e |= EventSet::OUT;
        }
        e
    }

    /// [`Self::wanted`] before the guest answered.
    pub(crate) const CONNECTING: EventSet = EventSet::READ_HANG_UP.union(EventSet::EDGE_TRIGGERED);

    fn abort(&mut self, sock: &mut tcp::Socket) -> Step {
        sock.abort();
        self.host = None;
        Step {
            progress: true,
            done: true,
        }
    }

    fn host_failed(&self) -> bool {
        self.host
            .as_ref()
            .is_some_and(|h| !matches!(h.take_error(), Ok(None)))
    }

    /// Before the guest answered: a reset or a closed client means nobody
    /// waits for this connection any more.
    fn host_gone_while_connecting(&self) -> bool {
        let Some(h) = &self.host else { return true };
        match h.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// Guest -> host: the socket's received bytes written to the host.
    fn guest_to_host(&mut self, sock: &mut tcp::Socket) -> Result<bool, ()> {
        let mut progress = false;
        self.blocked_out = false;
        let Some(host) = &self.host else {
            return Ok(false);
        };
        while sock.can_recv() && !self.host_shut {
            let r = sock.recv(|buf| match (&*host).write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => return Err(()),
                Ok(Ok(_)) => {
                    progress = true;
                    self.answered = true;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked_out = true;
                    break;
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Err(()),
                Err(_) => break,
            }
        }
        if !sock.may_recv() && !sock.can_recv() && !self.host_shut {
            // The guest closed its side and all it sent is written.
            let _ = host.shutdown(Shutdown::Write);
            self.host_shut = true;
            progress = true;
        }
        Ok(progress)
    }

    /// Host -> guest: the host's bytes read straight into the socket's
    /// send ring, only while it has room.
    fn host_to_guest(&mut self, sock: &mut tcp::Socket) -> Result<bool, ()> {
        let mut progress = false;
        let Some(host) = &self.host else {
            return Ok(false);
        };
        while !self.host_eof && sock.can_send() {
            let r = sock.send(|buf| match (&*host).read(buf) {
                Ok(n) => (n, Ok((n, n < buf.len()))),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok((0, _))) => {
                    self.host_eof = true;
                    sock.close();
                    progress = true;
                }
                // A short read took all there was: epoll says when more
                // comes (saves a failing read per message).
                Ok(Ok((_, true))) => {
                    progress = true;
                    break;
                }
                Ok(Ok(_)) => progress = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return Err(()),
                Err(_) => break,
            }
        }
        Ok(progress)
    }
}
