//! The user-mode backend: the runner's own TCP/IP stack (smoltcp) at
//! [`NET_HOST_IP`] on the link, with its own MAC, answering ARP, and the
//! published ports. For each publish rule a nonblocking listener is bound
//! on the host address when the VM is set up (so a port in use fails
//! before the guest runs); each accepted host connection becomes a
//! [`Relay`] to `NET_GUEST_IP:GUEST_PORT`.
//!
//! Bounded everywhere: the link's queues (`link`), two rings per
//! connection ([`RING`] bytes each), at most [`MAX_CONNECTIONS`]
//! connections (more are accepted and closed at once). One epoll set
//! holds the listeners and the host sockets with the interest each needs
//! now; the network's worker thread blocks on it ([`NetBackend::wait_fd`],
//! `virtio/worker.rs`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use pgkraft_abi::{NET_GUEST_IP, NET_HOST_IP, NET_PREFIX_LEN};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::link::Link;
use super::relay::Relay;
use super::{NetBackend, NetError, PublishRule};

/// The runner's MAC on the link (QEMU's user-mode network uses the same).
pub(crate) const HOST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x35, 0x02];
/// Relayed connections at once; further host connections are closed.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// Each direction's smoltcp ring per connection.
pub(crate) const RING: usize = 32 << 10;
/// Local ports the runner's stack connects from.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// epoll tokens: listeners count from 0, relays from here.
const RELAY_TOKEN: u64 = 1 << 32;
/// Rounds of one poll at most (each moves what it can).
const ROUNDS: usize = 16;
/// Handshakes with the guest under way at once at most ([`UserNet::start_connects`]).
const MAX_CONNECTING: usize = 16;
/// Accepts per listener per round at most.
const ACCEPTS: usize = 64;
/// epoll events taken per round.
const EVENTS: usize = 256;

/// One round's readiness ([`UserNet::ready`]).
#[derive(Default)]
struct Ready {
    listeners: Vec<usize>,
    hosts: HashMap<u64, EventSet>,
    /// Every ready fd was reported (fewer than [`EVENTS`]); otherwise
    /// relays not named are tried anyway.
    all: bool,
}

/// A listener with the largest backlog the host allows (std's is 128): the
/// runner accepts in batches between its other work, and a burst of
/// connects meanwhile must queue in the kernel, not have SYNs dropped
/// (each costs the client a 1 s resend; measured when the runner accepted
/// only while the vCPU thread was out of the guest).
fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, bind, listen, socket_with, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // As std does: a port in TIME_WAIT from an earlier run can be bound.
    sockopt::set_socket_reuseaddr(&fd, true)?;
    bind(&fd, &addr)?;
    listen(&fd, -1)?;
    Ok(TcpListener::from(fd))
}

struct Listener {
    sock: TcpListener,
    guest_port: u16,
}

/// Counters, for tests and debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub accepted: u64,
    /// Host connections closed at once: [`MAX_CONNECTIONS`] reached.
    pub over_cap: u64,
    pub finished: u64,
}

pub(crate) struct UserNet {
    link: Link,
    iface: Interface,
    sockets: SocketSet<'static>,
    listeners: Vec<Listener>,
    relays: HashMap<u64, (Relay, SocketHandle)>,
    /// epoll's answer, reused by every [`Self::ready`].
    events: Vec<EpollEvent>,
    /// Accepted clients whose connection to the guest has not started.
    waiting: VecDeque<(TcpStream, u16)>,
    next_token: u64,
    next_port: u16,
    epoll: Epoll,
    epoch: std::time::Instant,
    pub stats: Stats,
    /// Told after every poll, for a hibernating VM's idle timer.
    activity: Option<super::Activity>,
    /// A relay's bytes reached its client in this poll.
    answered: bool,
    /// A relay moved bytes, or a connection came, in this poll.
    traffic: bool,
}

impl UserNet {
    /// Binds every rule's host address; the first one in use fails.
    pub(crate) fn new(
        rules: &[PublishRule],
        activity: Option<super::Activity>,
    ) -> Result<UserNet, NetError> {
        let epoll = Epoll::new().map_err(NetError::Setup)?;
        let mut listeners = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let bind = |addr| {
                let l = listen(addr)?;
                l.set_nonblocking(true)?;
                Ok::<_, io::Error>(l)
            };
            let sock = bind(rule.host).map_err(|source| NetError::Bind {
                addr: rule.host,
                source,
            })?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    sock.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, i as u64),
                )
                .map_err(NetError::Setup)?;
            listeners.push(Listener {
                sock,
                guest_port: rule.guest_port,
            });
        }
        let mut link = Link::default();
        let epoch = std::time::Instant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(HOST_MAC)));
        config.random_seed = u64::from(std::process::id()) ^ epoch.elapsed().as_nanos() as u64;
        let mut iface = Interface::new(config, &mut link, NetInstant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            let [a, b, c, d] = NET_HOST_IP;
            let _ = addrs.push(IpCidr::new(
                IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)),
                NET_PREFIX_LEN,
            ));
        });
        Ok(UserNet {
            link,
            iface,
            sockets: SocketSet::new(Vec::new()),
            listeners,
            relays: HashMap::new(),
            waiting: VecDeque::new(),
            events: vec![EpollEvent::default(); EVENTS],
            next_token: RELAY_TOKEN,
            next_port: *EPHEMERAL.start(),
            epoll,
            epoch,
            stats: Stats::default(),
            activity,
            answered: false,
            traffic: false,
        })
    }

    /// An epoll set readable when a client connects or a connected
    /// client's socket has something (a hibernated VM's wake): it holds
    /// this backend's own set, which holds the listeners and the relays'
    /// host sockets with the interest each needs (the backend outlives
    /// it: both belong to the VM's devices).
    pub(crate) fn wake_set(&self) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            self.epoll.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )?;
        Ok(epoll)
    }

    /// The bound addresses, in rule order (port 0 in a rule gets one here).
    #[cfg(test)]
    pub(crate) fn listen_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .map(|l| l.sock.local_addr().expect("a bound listener"))
            .collect()
    }

    /// Connections being relayed.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.relays.len()
    }

    /// smoltcp sockets alive (one per connection).
    #[cfg(test)]
    pub(crate) fn sockets(&self) -> usize {
        self.sockets.iter().count()
    }

    /// Bytes the runner holds for the link and every connection.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.link.buffered()
            + self
                .relays
                .values()
                .map(|(_, h)| {
                    let s = self.sockets.get::<tcp::Socket>(*h);
                    s.send_queue() + s.recv_queue()
                })
                .sum::<usize>()
    }

    fn now(&self) -> NetInstant {
        NetInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// What epoll reports ready now (one nonblocking call): listeners
    /// that have connections, and relays' host sockets by token.
    fn ready(&mut self) -> Ready {
        let mut ready = Ready::default();
        let Ok(n) = self.epoll.wait(0, &mut self.events) else {
            return ready;
        };
        ready.all = n < EVENTS;
        for e in &self.events[..n] {
            if e.data() < RELAY_TOKEN {
                ready.listeners.push(e.data() as usize);
            } else {
                ready.hosts.insert(e.data(), e.event_set());
            }
        }
        ready
    }

    fn local_port(&mut self) -> u16 {
        loop {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.relays.values().any(|(r, _)| r.local_port == p) {
                return p;
            }
        }
    }

    fn accept(&mut self, ready: &Ready) -> bool {
        let mut progress = false;
        for i in 0..self.listeners.len() {
            if ready.all && !ready.listeners.contains(&i) {
                continue;
            }
            for _ in 0..ACCEPTS {
                let (stream, _) = match self.listeners[i].sock.accept() {
                    Ok(s) => s,
                    Err(_) => break,
                };
                progress = true;
                self.stats.accepted += 1;
                if self.relays.len() + self.waiting.len() >= MAX_CONNECTIONS {
                    self.stats.over_cap += 1;
                    log::warn!(
                        "vmm: net: {MAX_CONNECTIONS} published connections already; one more closed"
                    );
                    continue;
                }
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                self.waiting
                    .push_back((stream, self.listeners[i].guest_port));
            }
        }
        progress
    }

    /// Starts connections to the guest for accepted clients, at most
    /// [`MAX_CONNECTING`] handshakes at a time: a burst of SYNs beyond the
    /// guest's armed sockets is dropped there, and smoltcp's resends back
    /// off (0.7 s, 1.4 s, ...): 1,000 connects at once took 10-18 s to
    /// be accepted that way, ~1 s paced.
    fn start_connects(&mut self) -> bool {
        let mut connecting = self
            .relays
            .values()
            .filter(|(r, _)| r.syn_deadline().is_some())
            .count();
        let mut progress = false;
        while connecting < MAX_CONNECTING {
            let Some((stream, guest_port)) = self.waiting.pop_front() else {
                break;
            };
            progress = true;
            let local_port = self.local_port();
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RING]),
                tcp::SocketBuffer::new(vec![0; RING]),
            );
            // A relay adds no delay of its own: the client's kernel
            // already coalesced what it sent.
            sock.set_nagle_enabled(false);
            let [a, b, c, d] = NET_GUEST_IP;
            let remote = (IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)), guest_port);
            if let Err(e) = sock.connect(self.iface.context(), remote, local_port) {
                log::debug!("vmm: net: connect to guest port {guest_port}: {e}");
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if self
                .epoll
                .ctl(
                    ControlOperation::Add,
                    stream.as_raw_fd(),
                    EpollEvent::new(Relay::CONNECTING, token),
                )
                .is_err()
            {
                continue;
            }
            let handle = self.sockets.add(sock);
            let mut relay = Relay::new(stream, local_port, std::time::Instant::now());
            relay.interest = Relay::CONNECTING;
            self.relays.insert(token, (relay, handle));
            connecting += 1;
        }
        progress
    }

    /// Every relay one step; finished ones removed. A relay touches its
    /// host socket only when epoll said so (or may have left some out).
    fn step_relays(&mut self, ready: &Ready) -> bool {
        let now = std::time::Instant::now();
        let mut progress = false;
        let mut done = Vec::new();
        for (&token, (relay, handle)) in &mut self.relays {
            let sock = self.sockets.get_mut::<tcp::Socket>(*handle);
            let events = match ready.hosts.get(&token) {
                Some(e) => *e,
                None if ready.all => EventSet::empty(),
                None => relay.interest,
            };
            let step = relay.step(sock, now, events);
            progress |= step.progress;
            self.answered |= std::mem::take(&mut relay.answered);
            self.traffic |= step.progress;
            if step.done {
                done.push(token);
                continue;
            }
            let wanted = relay.wanted(sock);
            let Some(host) = &relay.host else { continue };
            let fd = host.as_raw_fd();
            // A hang-up is reported whatever the interest: one this step
            // could not act on (the ring toward the guest is full, so the
            // last bytes and the FIN cannot be read yet) would wake the
            // network thread for ever. Out of the set until there is room.
            let stuck = events.contains(EventSet::HANG_UP) && !step.progress;
            if stuck && relay.registered {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                relay.registered = false;
            } else if !relay.registered && !stuck && wanted.contains(EventSet::IN) {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Add, fd, EpollEvent::new(wanted, token));
                relay.registered = true;
                relay.interest = wanted;
            } else if relay.registered && wanted != relay.interest {
                let _ =
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(wanted, token));
                relay.interest = wanted;
            }
        }
        for token in done {
            if let Some((relay, handle)) = self.relays.remove(&token) {
                if let Some(host) = relay.host.as_ref().filter(|_| relay.registered) {
                    let _ = self.epoll.ctl(
                        ControlOperation::Delete,
                        host.as_raw_fd(),
                        EpollEvent::default(),
                    );
                }
                self.sockets.remove(handle);
                self.stats.finished += 1;
            }
        }
        progress
    }

    fn poll_stack(&mut self) -> bool {
        let before = (self.link.from_guest.len(), self.link.to_guest.len());
        let now = self.now();
        let changed = self.iface.poll(now, &mut self.link, &mut self.sockets);
        matches!(changed, smoltcp::iface::PollResult::SocketStateChanged)
            || before != (self.link.from_guest.len(), self.link.to_guest.len())
    }
}

impl NetBackend for UserNet {
    fn can_send(&self) -> bool {
        self.link.can_send()
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        self.link.push_from_guest(frame)
    }

    fn can_recv(&self) -> bool {
        !self.link.to_guest.is_empty()
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        self.link.recv()
    }

    /// One pass does everything that is ready: guest frames into the stack
    /// (which ACKs free room in the send rings), host sockets into and out
    /// of the rings, the stack's answers out. Another pass only helps when
    /// this one left readiness unread: new connections (accepted up to
    /// [`ACCEPTS`] at a time) or more events than one batch holds.
    fn poll(&mut self) -> bool {
        let mut any = false;
        for _ in 0..ROUNDS {
            let ready = self.ready();
            let accepted = self.accept(&ready);
            self.traffic |= accepted;
            let mut progress = accepted;
            progress |= self.poll_stack();
            progress |= self.step_relays(&ready);
            progress |= self.start_connects();
            progress |= self.poll_stack();
            any |= progress;
            if !accepted && ready.all {
                break;
            }
        }
        if let Some(a) = &self.activity {
            a.update(
                self.relays.len() + self.waiting.len(),
                std::mem::take(&mut self.answered),
                std::mem::take(&mut self.traffic),
            );
        }
        any
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn poll_delay(&mut self) -> Option<Duration> {
        let now = std::time::Instant::now();
        let syn = self
            .relays
            .values()
            .filter_map(|(r, _)| r.syn_deadline())
            .min()
            .map(|d| d.saturating_duration_since(now));
        // Nothing goes out before the guest takes frames: no timer helps.
        let stack = if !self.link.can_fill() {
            None
        } else {
            let t = self.now();
            self.iface
                .poll_delay(t, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
        };
        match (syn, stack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
