//! AF_INET/AF_INET6 stream sockets over smoltcp: Linux's socket states and
//! errors on top of smoltcp's TCP state machine.
//!
//! smoltcp says what state a connection is in, not why it got there, so
//! each socket remembers the last state it saw: a connection that drops to
//! CLOSED from SYN-SENT was refused (ECONNREFUSED), from CLOSE-WAIT reset
//! after the peer's FIN (EPIPE, as Linux reports it), from anywhere else
//! reset (ECONNRESET). That error is pending (SO_ERROR, the next read or
//! write reports and clears it) as Linux's `sk_err` is.

use super::addr::{Ip, SockAddr};
use super::opts::Opts;
use super::stack::{self, Listener, SOMAXCONN, Stack};
use crate::fd::{POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::syscall::Errno;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use spin::Mutex;

pub const POLLRDHUP: u32 = 0x2000;

enum St {
    /// Not connected, perhaps bound.
    Idle,
    Listening(usize),
    Conn {
        ifx: usize,
        h: SocketHandle,
    },
}

struct Inner {
    opts: Opts,
    /// The bound name (after bind, listen's autobind or connect).
    local: Option<(Ip, u16)>,
    claim: Option<u64>,
    st: St,
    err: Option<Errno>,
    shut_rd: bool,
    shut_wr: bool,
    /// The connection ended by a reset or refusal: writes fail (EPIPE).
    dead: bool,
    last: State,
    /// A non-blocking connect has not been reported yet: the next
    /// connect(2) answers its outcome (0 once connected), as on Linux.
    unreported: bool,
}

pub struct TcpSock {
    pub v6: bool,
    inner: Mutex<Inner>,
}

/// What the last observed state change means (see the module doc).
pub fn ended_by(last: State) -> Errno {
    match last {
        State::SynSent => Errno::ECONNREFUSED,
        State::CloseWait => Errno::EPIPE,
        _ => Errno::ECONNRESET,
    }
}

/// Whether `from -> Closed` is a connection ending abnormally.
fn abnormal(from: State) -> bool {
    !matches!(
        from,
        State::Closed | State::LastAck | State::TimeWait | State::Listen
    )
}

/// Linux's tcp_poll, from what the socket knows.
pub fn poll_mask(
    state: State,
    err: bool,
    shut_rd: bool,
    shut_wr: bool,
    readable: bool,
    room: bool,
) -> u32 {
    let mut m = 0;
    if err {
        m |= POLLERR;
    }
    let peer_fin = matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    );
    let rcv_sd = shut_rd || peer_fin;
    let snd_sd = shut_wr || state == State::Closed;
    if (rcv_sd && snd_sd) || state == State::Closed {
        m |= POLLHUP;
    }
    if rcv_sd {
        m |= POLLIN | POLLRDHUP;
    }
    if !matches!(state, State::SynSent | State::SynReceived) {
        if readable {
            m |= POLLIN;
        }
        if snd_sd || room {
            m |= POLLOUT;
        }
    }
    m
}

impl Inner {
    fn observe(&mut self, s: &tcp::Socket) -> State {
        let now = s.state();
        if now == State::Closed && abnormal(self.last) && !self.dead {
            self.err = Some(ended_by(self.last));
            self.dead = true;
        }
        self.last = now;
        now
    }

    fn release(&mut self, s: &mut Stack) {
        if let Some(c) = self.claim.take() {
            s.release(c);
        }
    }
}

impl TcpSock {
    pub fn new(v6: bool) -> TcpSock {
        stack::with(|_| {});
        TcpSock {
            v6,
            inner: Mutex::new(Inner {
                opts: Opts::new(false),
                local: None,
                claim: None,
                st: St::Idle,
                err: None,
                shut_rd: false,
                shut_wr: false,
                dead: false,
                last: State::Closed,
                unreported: false,
            }),
        }
    }

    fn lock(&self) -> spin::MutexGuard<'_, Inner> {
        self.inner.try_lock().expect("socket locked twice")
    }

    pub fn opts<R>(&self, f: impl FnOnce(&mut Opts) -> R) -> R {
        let mut i = self.lock();
        let r = f(&mut i.opts);
        // TCP_NODELAY and SO_KEEPALIVE reach the connection at once.
        let (nodelay, ka) = (i.opts.nodelay, keepalive(&i.opts));
        if let St::Conn { ifx, h } = i.st {
            stack::with(|s| {
                let t = s.tcp(ifx, h);
                t.set_nagle_enabled(!nodelay);
                t.set_keep_alive(ka.map(smoltcp::time::Duration::from_secs));
            });
        }
        r
    }

    pub fn take_error(&self) -> Option<Errno> {
        let mut i = self.lock();
        stack::with(|s| {
            if let St::Conn { ifx, h } = i.st {
                let t = s.tcp(ifx, h);
                i.observe(t);
            }
        });
        i.err.take()
    }

    pub fn listening(&self) -> bool {
        matches!(self.lock().st, St::Listening(_))
    }

    /// A connection (made or accepted), not a listener or an unconnected
    /// socket.
    pub fn connection(&self) -> bool {
        matches!(self.lock().st, St::Conn { .. })
    }

    fn check_family(&self, ip: Ip) -> Result<(), Errno> {
        match (self.v6, ip) {
            (false, Ip::V6(_)) => Err(Errno::EAFNOSUPPORT),
            _ => Ok(()),
        }
    }

    pub fn bind(&self, addr: &SockAddr) -> Result<(), Errno> {
        let SockAddr::Inet { ip, port } = *addr else {
            return Err(Errno::EINVAL);
        };
        self.check_family(ip)?;
        let mut i = self.lock();
        if i.local.is_some() || !matches!(i.st, St::Idle) {
            return Err(Errno::EINVAL);
        }
        let reuse = i.opts.reuseaddr;
        let v6only = self.v6 && i.opts.v6only;
        let (claim, port) = stack::with(|s| {
            if !s.is_local(ip) {
                return Err(Errno::EADDRNOTAVAIL);
            }
            s.claim(ip.unmapped(), port, reuse, v6only)
        })?;
        i.claim = Some(claim);
        i.local = Some((ip.unmapped(), port));
        Ok(())
    }

    fn any(&self) -> Ip {
        if self.v6 {
            Ip::V6([0; 16])
        } else {
            Ip::V4([0; 4])
        }
    }

    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        let backlog = (backlog as u32 as usize).min(SOMAXCONN);
        let mut i = self.lock();
        match i.st {
            St::Listening(id) => {
                stack::with(|s| s.listener(id).backlog = backlog);
                return Ok(());
            }
            St::Conn { .. } => return Err(Errno::EINVAL),
            St::Idle => {}
        }
        let any = self.any();
        let reuse = i.opts.reuseaddr;
        let nodelay = i.opts.nodelay;
        let ka = keepalive(&i.opts);
        let v6only = self.v6 && i.opts.v6only;
        let local = i.local;
        let id = stack::with(|s| {
            let (claim, ip, port) = match (local, i.claim) {
                (Some((ip, port)), Some(c)) => (c, ip, port),
                _ => {
                    let (c, p) = s.claim(any, 0, reuse, false)?;
                    (c, any, p)
                }
            };
            i.claim = Some(claim);
            i.local = Some((ip, port));
            s.listen(
                claim,
                Listener {
                    ip: Some(ip),
                    port,
                    backlog,
                    armed: alloc::vec::Vec::new(),
                    queue: alloc::collections::VecDeque::new(),
                    nodelay,
                    keepalive: ka,
                    v6only,
                },
            )
        })?;
        i.st = St::Listening(id);
        Ok(())
    }

    /// One finished connection, or None (would block).
    pub fn accept(&self) -> Result<Option<(TcpSock, SockAddr)>, Errno> {
        let i = self.lock();
        let St::Listening(id) = i.st else {
            return Err(Errno::EINVAL);
        };
        let opts = i.opts.clone();
        drop(i);
        let Some((ifx, h, local, remote, state)) = stack::with(|s| {
            let (ifx, h) = s.take_accepted(id)?;
            let t = s.tcp(ifx, h);
            Some((ifx, h, t.local_endpoint(), t.remote_endpoint(), t.state()))
        }) else {
            return Ok(None);
        };
        let local = local.map(|e| (stack::from_addr(e.addr), e.port));
        let peer = remote.map_or(
            SockAddr::Inet {
                ip: self.any(),
                port: 0,
            },
            |e| SockAddr::Inet {
                ip: stack::from_addr(e.addr),
                port: e.port,
            },
        );
        let sock = TcpSock::new(self.v6);
        {
            let mut n = sock.lock();
            n.opts = opts;
            n.local = local;
            n.st = St::Conn { ifx, h };
            n.last = if state == State::Closed {
                State::Established
            } else {
                state
            };
        }
        Ok(Some((sock, peer)))
    }

    /// Start connecting; Ok(true) once connected, Ok(false) while the
    /// handshake is under way.
    pub fn connect(&self, addr: &SockAddr, started: bool) -> Result<bool, Errno> {
        let SockAddr::Inet { ip, port } = *addr else {
            return Err(Errno::EINVAL);
        };
        self.check_family(ip)?;
        let mut i = self.lock();
        if let St::Conn { ifx, h } = i.st {
            return stack::with(|s| {
                let t = s.tcp(ifx, h);
                match i.observe(t) {
                    State::SynSent | State::SynReceived => {
                        if started {
                            Ok(false)
                        } else {
                            Err(Errno::EALREADY)
                        }
                    }
                    State::Closed => match i.err.take() {
                        Some(e) => {
                            i.unreported = false;
                            Err(e)
                        }
                        None if started => Err(Errno::ECONNREFUSED),
                        None => Err(Errno::EISCONN),
                    },
                    _ if started || i.unreported => {
                        i.unreported = false;
                        Ok(true)
                    }
                    _ => Err(Errno::EISCONN),
                }
            });
        }
        if matches!(i.st, St::Listening(_)) {
            return Err(Errno::EISCONN);
        }
        if port == 0 {
            return Err(Errno::ECONNREFUSED);
        }
        let remote = if ip.is_unspecified() {
            // Linux connects "any" to the loopback address.
            match ip {
                Ip::V4(_) => Ip::V4([127, 0, 0, 1]),
                Ip::V6(_) => Ip::V6(core::net::Ipv6Addr::LOCALHOST.octets()),
            }
        } else {
            ip.unmapped()
        };
        let reuse = i.opts.reuseaddr;
        let nodelay = i.opts.nodelay;
        let ka = keepalive(&i.opts);
        let local = i.local;
        let prior = i.claim;
        let (ifx, h, claim, lport) = stack::with(|s| {
            let ifx = s.route(remote)?;
            let (claim, lip, lport) = match (local, prior) {
                (Some((ip, p)), Some(c)) => (c, ip, p),
                _ => {
                    let any = if matches!(remote, Ip::V4(_)) {
                        Ip::V4([0; 4])
                    } else {
                        Ip::V6([0; 16])
                    };
                    let (c, p) = s.claim(any, 0, reuse, false)?;
                    (c, any, p)
                }
            };
            let h = s.new_socket(ifx);
            let lep = smoltcp::wire::IpListenEndpoint {
                addr: (!lip.is_unspecified()).then(|| stack::endpoint(lip, 0).addr),
                port: lport,
            };
            let (sockets, cx) = s.parts(ifx);
            let t = sockets.get_mut::<tcp::Socket>(h);
            t.set_nagle_enabled(!nodelay);
            t.set_keep_alive(ka.map(smoltcp::time::Duration::from_secs));
            if t.connect(cx, stack::endpoint(remote, port), lep).is_err() {
                sockets.remove(h);
                if prior.is_none() {
                    s.release(claim);
                }
                return Err(Errno::ENETUNREACH);
            }
            Ok((ifx, h, claim, lport))
        })?;
        i.claim = Some(claim);
        if i.local.is_none() {
            i.local = Some((self.any(), lport));
        }
        i.st = St::Conn { ifx, h };
        i.last = State::SynSent;
        i.err = None;
        i.dead = false;
        i.unreported = true;
        Ok(false)
    }

    /// `f` on a connection's state and its smoltcp socket, its state
    /// observed first; `unconnected` when the socket has no connection.
    fn on_conn<R>(
        &self,
        unconnected: Errno,
        f: impl FnOnce(&mut Inner, &mut tcp::Socket<'static>, State) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let mut i = self.lock();
        let St::Conn { ifx, h } = i.st else {
            return Err(unconnected);
        };
        stack::with(|s| {
            let t = s.tcp(ifx, h);
            let state = i.observe(t);
            f(&mut i, t, state)
        })
    }

    /// Read what is there; None when the caller should wait.
    pub fn recv(&self, buf: &mut [u8], peek: bool) -> Result<Option<usize>, Errno> {
        self.on_conn(Errno::ENOTCONN, |i, t, state| {
            if matches!(state, State::SynSent | State::SynReceived) {
                return Ok(None);
            }
            if buf.is_empty() {
                return Ok(Some(0));
            }
            if t.recv_queue() > 0 && !i.shut_rd {
                let n = if peek {
                    t.peek_slice(buf)
                } else {
                    t.recv_slice(buf)
                };
                return Ok(Some(n.unwrap_or(0)));
            }
            if let Some(e) = i.err.take() {
                return Err(e);
            }
            let eof = i.shut_rd
                || matches!(
                    state,
                    State::CloseWait
                        | State::LastAck
                        | State::Closing
                        | State::TimeWait
                        | State::Closed
                );
            Ok(eof.then_some(0))
        })
    }

    /// Queue what fits; None when nothing fits now. Err(EPIPE) means the
    /// caller raises SIGPIPE unless MSG_NOSIGNAL.
    pub fn send(&self, buf: &[u8]) -> Result<Option<usize>, Errno> {
        self.on_conn(Errno::EPIPE, |i, t, state| {
            if let Some(e) = i.err.take() {
                return Err(e);
            }
            if matches!(state, State::SynSent | State::SynReceived) {
                return Ok(None);
            }
            if i.shut_wr || i.dead || !t.may_send() {
                return Err(Errno::EPIPE);
            }
            if buf.is_empty() {
                return Ok(Some(0));
            }
            match t.send_slice(buf) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(Errno::EPIPE),
            }
        })
    }

    pub fn shutdown(&self, rd: bool, wr: bool) -> Result<(), Errno> {
        let mut i = self.lock();
        match i.st {
            St::Conn { ifx, h } => {
                stack::with(|s| {
                    let t = s.tcp(ifx, h);
                    let state = i.observe(t);
                    if matches!(state, State::SynSent) || (state == State::Closed && !i.dead) {
                        return Err(Errno::ENOTCONN);
                    }
                    if wr && !i.shut_wr {
                        t.close();
                    }
                    Ok(())
                })?;
                i.shut_rd |= rd;
                i.shut_wr |= wr;
                Ok(())
            }
            St::Listening(_) => Ok(()),
            St::Idle => Err(Errno::ENOTCONN),
        }
    }

    pub fn local_name(&self) -> SockAddr {
        let i = self.lock();
        if let St::Conn { ifx, h } = i.st
            && let Some(e) = stack::with(|s| s.tcp(ifx, h).local_endpoint())
        {
            return SockAddr::Inet {
                ip: stack::from_addr(e.addr),
                port: e.port,
            };
        }
        let (ip, port) = i.local.unwrap_or((self.any(), 0));
        SockAddr::Inet { ip, port }
    }

    pub fn peer_name(&self) -> Result<SockAddr, Errno> {
        self.on_conn(Errno::ENOTCONN, |_, t, state| {
            match (state, t.remote_endpoint()) {
                (State::SynSent | State::Closed | State::Listen, _) | (_, None) => {
                    Err(Errno::ENOTCONN)
                }
                (_, Some(e)) => Ok(SockAddr::Inet {
                    ip: stack::from_addr(e.addr),
                    port: e.port,
                }),
            }
        })
    }

    pub fn poll_events(&self) -> u32 {
        let mut i = self.lock();
        match i.st {
            St::Idle => POLLOUT | POLLHUP,
            St::Listening(id) => {
                if stack::with(|s| s.acceptable(id)) {
                    POLLIN
                } else {
                    0
                }
            }
            St::Conn { ifx, h } => stack::with(|s| {
                let t = s.tcp(ifx, h);
                let state = i.observe(t);
                let room = t.send_capacity() > t.send_queue();
                poll_mask(
                    state,
                    i.err.is_some(),
                    i.shut_rd,
                    i.shut_wr || i.dead,
                    t.recv_queue() > 0,
                    room,
                )
            }),
        }
    }

    /// FIONREAD / SIOCINQ.
    pub fn readable_bytes(&self) -> usize {
        let i = self.lock();
        match i.st {
            St::Conn { ifx, h } => stack::with(|s| s.tcp(ifx, h).recv_queue()),
            _ => 0,
        }
    }
}

/// The keepalive interval smoltcp should use, in seconds.
fn keepalive(o: &Opts) -> Option<u64> {
    o.keepalive.then_some(o.keepidle as u64)
}

impl Drop for TcpSock {
    fn drop(&mut self) {
        let i = self.inner.get_mut();
        let st = core::mem::replace(&mut i.st, St::Idle);
        stack::with(|s| {
            match st {
                St::Listening(id) => s.close_listener(id),
                St::Conn { ifx, h } => {
                    let t = s.tcp(ifx, h);
                    // Unread data: Linux resets instead of closing.
                    if t.recv_queue() > 0 {
                        t.abort();
                    } else {
                        t.close();
                    }
                    s.orphan(ifx, h);
                }
                St::Idle => {}
            }
            i.release(s);
            s.poll();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_mask_follows_tcp_poll() {
        // Connected, idle: writable only.
        assert_eq!(
            poll_mask(State::Established, false, false, false, false, true),
            POLLOUT
        );
        // Data waiting.
        assert_eq!(
            poll_mask(State::Established, false, false, false, true, true),
            POLLIN | POLLOUT
        );
        // Peer's FIN: readable (EOF) and RDHUP, still writable.
        assert_eq!(
            poll_mask(State::CloseWait, false, false, false, false, true),
            POLLIN | POLLRDHUP | POLLOUT
        );
        // Handshake under way: nothing.
        assert_eq!(
            poll_mask(State::SynSent, false, false, false, false, true),
            0
        );
        // Refused: everything, with the error.
        assert_eq!(
            poll_mask(State::Closed, true, false, false, false, false),
            POLLERR | POLLHUP | POLLIN | POLLRDHUP | POLLOUT
        );
        // Our own SHUT_WR alone is no hangup.
        assert_eq!(
            poll_mask(State::FinWait2, false, false, true, false, false),
            POLLOUT
        );
    }

    #[test]
    fn how_a_connection_ended() {
        assert_eq!(ended_by(State::SynSent), Errno::ECONNREFUSED);
        assert_eq!(ended_by(State::CloseWait), Errno::EPIPE);
        assert_eq!(ended_by(State::Established), Errno::ECONNRESET);
        assert!(!abnormal(State::LastAck));
        assert!(!abnormal(State::TimeWait));
        assert!(abnormal(State::FinWait2));
    }
}
