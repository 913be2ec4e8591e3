//! The TCP/IP stack: smoltcp interfaces (loopback, and virtio-net when the
//! VM has one), one socket set per interface, listeners with their backlog,
//! port claims, and closed sockets finishing their goodbyes.
//!
//! Why a socket set per interface: smoltcp sends every socket's segments
//! through whichever interface is being polled, so a 127.0.0.1 connection
//! must never sit in the set the device interface polls.
//!
//! Nothing runs in the background: every socket call (and every wait in
//! poll/select/epoll) polls the stack first, and a caller that has to wait
//! idles until smoltcp's next timer, its own deadline or a device event.

use super::addr::Ip;
use super::loopback::Loopback;
use crate::syscall::Errno;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use spin::Mutex;

/// Each TCP socket's receive and send buffers (Linux's defaults are of this
/// order; bounded so a busy peer cannot grow the libOS's heap).
pub const RX_BUF: usize = 64 * 1024;
pub const TX_BUF: usize = 64 * 1024;
/// At most this many not-yet-connected sockets wait on one listener and
/// interface; further SYNs wait (are dropped) as for a full backlog. A
/// listening socket's buffers are untouched pages (arch/heap.rs), so
/// this costs little; too few made a burst of 1,000 connects wait for
/// SYN retransmissions (0.7 s and more each).
const ARM_MAX: usize = 16;
/// Linux's net.core.somaxconn.
pub const SOMAXCONN: usize = 4096;
/// Linux's ip_local_port_range.
const EPHEMERAL: core::ops::RangeInclusive<u16> = 32768..=60999;
/// A closed connection whose peer never finishes is dropped after this.
const ORPHAN_NS: u64 = 60_000_000_000;
/// Ingress/egress rounds per poll (loopback answers come back at once).
const ROUNDS: usize = 64;

pub const LO: usize = 0;

pub enum Dev {
    Loop(Loopback),
    #[cfg(not(test))]
    Virtio(alloc::boxed::Box<super::virtio::VirtioNet>),
}

impl Dev {
    fn ingress(
        &mut self,
        iface: &mut Interface,
        sockets: &mut SocketSet<'static>,
        ts: Instant,
        full: &[super::filter::Full],
    ) -> PollIngressSingleResult {
        match self {
            Dev::Loop(d) => {
                d.full.clear();
                d.full.extend_from_slice(full);
                iface.poll_ingress_single(ts, d, sockets)
            }
            #[cfg(not(test))]
            Dev::Virtio(d) => {
                d.full.clear();
                d.full.extend_from_slice(full);
                iface.poll_ingress_single(ts, &mut **d, sockets)
            }
        }
    }

    fn egress(&mut self, iface: &mut Interface, sockets: &mut SocketSet<'static>, ts: Instant) {
        match self {
            Dev::Loop(d) => {
                iface.poll_egress(ts, d, sockets);
            }
            #[cfg(not(test))]
            Dev::Virtio(d) => {
                iface.poll_egress(ts, &mut **d, sockets);
            }
        }
    }

    fn pending(&self) -> bool {
        match self {
            Dev::Loop(d) => d.pending(),
            #[cfg(not(test))]
            Dev::Virtio(d) => d.pending(),
        }
    }

    /// Tells the device what this poll queued (net/virtio.rs).
    fn flush(&mut self) {
        match self {
            Dev::Loop(_) => {}
            #[cfg(not(test))]
            Dev::Virtio(d) => d.flush(),
        }
    }

    /// Tells the device about every queued frame now; with `drain`, also
    /// waits (bounded) until it took them.
    fn kick(&mut self, drain: bool) {
        match self {
            Dev::Loop(_) => {}
            #[cfg(not(test))]
            Dev::Virtio(d) => {
                if drain {
                    d.drain_tx()
                } else {
                    d.kick_tx()
                }
            }
        }
        // Host tests have no device: nothing to drain.
        #[cfg(test)]
        let _ = drain;
    }

    /// Whether the device still holds frames to send.
    fn tx_unsent(&mut self) -> bool {
        match self {
            Dev::Loop(_) => false,
            #[cfg(not(test))]
            Dev::Virtio(d) => d.tx_unsent(),
        }
    }
}

pub struct NetIf {
    iface: Interface,
    dev: Dev,
    pub sockets: SocketSet<'static>,
}

pub struct Listener {
    pub ip: Option<Ip>,
    pub port: u16,
    pub backlog: usize,
    pub armed: Vec<(usize, SocketHandle)>,
    pub queue: VecDeque<(usize, SocketHandle)>,
    /// Applied to every connection it accepts (inherited options).
    pub nodelay: bool,
    pub keepalive: Option<u64>,
    /// An IPv6 socket with IPV6_V6ONLY: IPv4 clients are not its.
    pub v6only: bool,
}

impl Listener {
    /// Whether a client from `remote` is this listener's to accept: an
    /// IPv4 socket takes IPv4 clients, an IPv6 one IPv6 clients and, unless
    /// IPV6_V6ONLY, IPv4 ones (as mapped addresses).
    fn takes(&self, remote: Option<smoltcp::wire::IpAddress>) -> bool {
        let v4 = matches!(remote, Some(smoltcp::wire::IpAddress::Ipv4(_)));
        match self.ip {
            Some(Ip::V4(_)) => v4,
            Some(Ip::V6(_)) => !(v4 && self.v6only),
            None => true,
        }
    }
}

struct Claim {
    id: u64,
    ip: Ip,
    port: u16,
    reuse: bool,
    listening: bool,
    /// An IPv6 socket with IPV6_V6ONLY: its wildcard leaves IPv4 free.
    v6only: bool,
}

pub struct Stack {
    pub ifs: Vec<NetIf>,
    listeners: Vec<Option<Listener>>,
    claims: Vec<Claim>,
    next_claim: u64,
    next_port: u16,
    orphans: Vec<(usize, SocketHandle, u64)>,
}

static STACK: Mutex<Option<Stack>> = Mutex::new(None);
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub fn now() -> Instant {
    Instant::from_micros((crate::time::monotonic_ns() / 1000) as i64)
}

/// Run `f` on the stack if it exists and nobody is using it (a hook that
/// may run from anywhere: a system call's entry, before blocking).
pub fn try_with(f: impl FnOnce(&mut Stack)) {
    if active()
        && let Some(mut g) = STACK.try_lock()
        && let Some(s) = g.as_mut()
    {
        f(s)
    }
}

/// Run `f` on the stack, bringing it up on first use.
pub fn with<R>(f: impl FnOnce(&mut Stack) -> R) -> R {
    let mut g = STACK.try_lock().expect("net stack locked twice");
    let s = g.get_or_insert_with(|| {
        ACTIVE.store(true, Ordering::Relaxed);
        Stack::new()
    });
    f(s)
}

/// Whether any socket has ever been made (nothing to poll before that).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

fn to_addr(ip: Ip) -> IpAddress {
    match ip.unmapped() {
        Ip::V4(a) => IpAddress::v4(a[0], a[1], a[2], a[3]),
        Ip::V6(a) => IpAddress::Ipv6(a.into()),
    }
}

pub fn from_addr(a: IpAddress) -> Ip {
    match a {
        IpAddress::Ipv4(v) => Ip::V4(v.octets()),
        IpAddress::Ipv6(v) => Ip::V6(v.octets()).unmapped(),
    }
}

pub fn endpoint(ip: Ip, port: u16) -> smoltcp::wire::IpEndpoint {
    smoltcp::wire::IpEndpoint::new(to_addr(ip), port)
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    crate::syscall::misc::fill_random(&mut b);
    u64::from_ne_bytes(b)
}

fn overlap(a: Ip, a_v6only: bool, b: Ip, b_v6only: bool) -> bool {
    let v4 = |ip: Ip| matches!(ip.unmapped(), Ip::V4(_));
    // IPV6_V6ONLY: an IPv6 wildcard does not take IPv4's port (PostgreSQL
    // binds `::` with it, then 0.0.0.0). Which listener an incoming IPv4
    // connection reaches is not kept apart by family (smoltcp listens on
    // "any address"): either accepts it.
    if (a_v6only && v4(b)) || (b_v6only && v4(a)) {
        return false;
    }
    a.is_unspecified() || b.is_unspecified() || a.unmapped() == b.unmapped()
}

impl Stack {
    fn new() -> Stack {
        let mut lo = Loopback::default();
        let mut iface = Interface::new(
            {
                let mut c = Config::new(HardwareAddress::Ip);
                c.random_seed = seed();
                c
            },
            &mut lo,
            now(),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = a.push(IpCidr::new(
                IpAddress::Ipv6(core::net::Ipv6Addr::LOCALHOST),
                128,
            ));
        });
        #[cfg_attr(test, allow(unused_mut))]
        let mut ifs = alloc::vec![NetIf {
            iface,
            dev: Dev::Loop(lo),
            sockets: SocketSet::new(Vec::new()),
        }];
        #[cfg(not(test))]
        if let Some(d) = super::virtio::probe() {
            ifs.push(ethernet(d));
        }
        Stack {
            ifs,
            listeners: Vec::new(),
            claims: Vec::new(),
            next_claim: 1,
            next_port: *EPHEMERAL.start(),
            orphans: Vec::new(),
        }
    }

    /// Which interface reaches `ip`.
    pub fn route(&self, ip: Ip) -> Result<usize, Errno> {
        if ip.is_loopback() {
            Ok(LO)
        } else if self.ifs.len() > 1 {
            Ok(1)
        } else {
            Err(Errno::ENETUNREACH)
        }
    }

    /// Whether `ip` is one of ours (bind's check).
    pub fn is_local(&self, ip: Ip) -> bool {
        ip.is_unspecified()
            || ip.is_loopback()
            || self.ifs.iter().skip(1).any(|n| {
                n.iface
                    .ip_addrs()
                    .iter()
                    .any(|c| from_addr(c.address()) == ip.unmapped())
            })
    }

    pub fn tcp(&mut self, ifx: usize, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.ifs[ifx].sockets.get_mut::<tcp::Socket>(h)
    }

    pub fn new_socket(&mut self, ifx: usize) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(alloc::vec![0u8; RX_BUF]),
            tcp::SocketBuffer::new(alloc::vec![0u8; TX_BUF]),
        );
        // ACKs at once on loopback, where a delayed ACK only adds latency
        // (both ends are ours, with Nagle on by default). On the device
        // smoltcp's delayed ACK (10 ms, at once past one MSS) lets the ACK
        // ride on the answer: one frame less per request.
        if ifx == LO {
            s.set_ack_delay(None);
        }
        self.ifs[ifx].sockets.add(s)
    }

    /// An interface's socket set and its context (for connect).
    pub fn parts(&mut self, ifx: usize) -> (&mut SocketSet<'static>, &mut smoltcp::iface::Context) {
        let n = &mut self.ifs[ifx];
        (&mut n.sockets, n.iface.context())
    }

    /// Claim (ip, port) for a socket; port 0 picks an ephemeral one.
    pub fn claim(
        &mut self,
        ip: Ip,
        port: u16,
        reuse: bool,
        v6only: bool,
    ) -> Result<(u64, u16), Errno> {
        let port = if port == 0 {
            self.ephemeral(ip)?
        } else {
            let clash = self.claims.iter().any(|c| {
                c.port == port
                    && overlap(c.ip, c.v6only, ip, v6only)
                    && !(reuse && c.reuse && !c.listening)
            });
            if clash {
                return Err(Errno::EADDRINUSE);
            }
            port
        };
        let id = self.next_claim;
        self.next_claim += 1;
        self.claims.push(Claim {
            id,
            ip,
            port,
            reuse,
            listening: false,
            v6only,
        });
        Ok((id, port))
    }

    fn ephemeral(&mut self, ip: Ip) -> Result<u16, Errno> {
        let span = (EPHEMERAL.end() - EPHEMERAL.start()) as usize + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            let claimed = self
                .claims
                .iter()
                .any(|c| c.port == p && overlap(c.ip, c.v6only, ip, false));
            let lingering = self.orphans.iter().any(|&(i, h, _)| {
                self.ifs[i]
                    .sockets
                    .get::<tcp::Socket>(h)
                    .local_endpoint()
                    .is_some_and(|e| e.port == p)
            });
            if !claimed && !lingering {
                return Ok(p);
            }
        }
        Err(Errno::EADDRNOTAVAIL)
    }

    pub fn release(&mut self, id: u64) {
        self.claims.retain(|c| c.id != id);
    }

    /// A claimed port starts listening: nobody may share it from now on.
    pub fn listen(&mut self, claim: u64, l: Listener) -> Result<usize, Errno> {
        if let Some(c) = self.claims.iter_mut().find(|c| c.id == claim) {
            c.listening = true;
        }
        let id = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        self.listeners[id] = Some(l);
        self.rearm();
        Ok(id)
    }

    pub fn listener(&mut self, id: usize) -> &mut Listener {
        self.listeners[id].as_mut().expect("listener id")
    }

    /// A connection that finished its handshake, for accept.
    pub fn take_accepted(&mut self, id: usize) -> Option<(usize, SocketHandle)> {
        let Stack { listeners, ifs, .. } = self;
        let l = listeners[id].as_mut()?;
        let at = l.queue.iter().position(|&(i, h)| {
            !matches!(
                ifs[i].sockets.get::<tcp::Socket>(h).state(),
                tcp::State::SynReceived | tcp::State::Listen
            )
        })?;
        let got = l.queue.remove(at);
        self.rearm();
        got
    }

    pub fn acceptable(&self, id: usize) -> bool {
        let Some(l) = self.listeners[id].as_ref() else {
            return false;
        };
        l.queue.iter().any(|&(i, h)| {
            !matches!(
                self.ifs[i].sockets.get::<tcp::Socket>(h).state(),
                tcp::State::SynReceived | tcp::State::Listen
            )
        })
    }

    /// Close a listener: connections nobody accepted are reset, as on Linux.
    pub fn close_listener(&mut self, id: usize) {
        let Some(l) = self.listeners[id].take() else {
            return;
        };
        for (i, h) in l.armed.into_iter().chain(l.queue) {
            self.ifs[i].sockets.get_mut::<tcp::Socket>(h).abort();
            self.orphan(i, h);
        }
    }

    /// A closed socket stays in its set until its connection is over.
    pub fn orphan(&mut self, ifx: usize, h: SocketHandle) {
        self.orphans.push((ifx, h, crate::time::monotonic_ns()));
    }

    fn applies(l: &Listener, ifx: usize) -> bool {
        match l.ip {
            None => true,
            Some(ip) if ip.is_unspecified() => true,
            Some(ip) => (ifx == LO) == ip.is_loopback(),
        }
    }

    /// Move listening sockets that took a SYN into the accept queue and
    /// arm new ones while the backlog has room.
    fn rearm(&mut self) {
        let mut elsewhere = Vec::new();
        for id in 0..self.listeners.len() {
            let Some(mut l) = self.listeners[id].take() else {
                continue;
            };
            let mut still = Vec::new();
            for (i, h) in core::mem::take(&mut l.armed) {
                let s = self.ifs[i].sockets.get_mut::<tcp::Socket>(h);
                match s.state() {
                    tcp::State::Listen => still.push((i, h)),
                    tcp::State::Closed => {
                        let _ = s.listen(listen_ep(l.ip, l.port));
                        still.push((i, h));
                    }
                    _ if !l.takes(s.remote_endpoint().map(|e| e.addr)) => {
                        // smoltcp's wildcard listen takes both families; a
                        // sibling of the right family on this port gets it.
                        let remote = s.remote_endpoint().map(|e| e.addr);
                        elsewhere.push((id, l.port, remote, i, h));
                    }
                    _ => {
                        s.set_nagle_enabled(!l.nodelay);
                        s.set_keep_alive(l.keepalive.map(smoltcp::time::Duration::from_secs));
                        l.queue.push_back((i, h))
                    }
                }
            }
            l.armed = still;
            // A SYN_RECEIVED socket that took a reset listens again.
            let mut q = VecDeque::new();
            for (i, h) in core::mem::take(&mut l.queue) {
                if self.ifs[i].sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen {
                    l.armed.push((i, h));
                } else {
                    q.push_back((i, h));
                }
            }
            l.queue = q;
            for ifx in 0..self.ifs.len() {
                if !Self::applies(&l, ifx) {
                    continue;
                }
                loop {
                    let on = l.armed.iter().filter(|a| a.0 == ifx).count();
                    if on >= ARM_MAX || on + l.queue.len() > l.backlog {
                        break;
                    }
                    let h = self.new_socket(ifx);
                    if self.tcp(ifx, h).listen(listen_ep(l.ip, l.port)).is_err() {
                        self.ifs[ifx].sockets.remove(h);
                        break;
                    }
                    l.armed.push((ifx, h));
                }
            }
            self.listeners[id] = Some(l);
        }
        for (from, port, remote, i, h) in elsewhere {
            let to = self
                .listeners
                .iter()
                .position(|o| {
                    o.as_ref()
                        .is_some_and(|o| o.port == port && Self::applies(o, i) && o.takes(remote))
                })
                // No listener of its family (Linux would have refused the
                // SYN): the one that took it keeps it.
                .unwrap_or(from);
            let l = self.listeners[to].as_mut().expect("a listener");
            let s = self.ifs[i].sockets.get_mut::<tcp::Socket>(h);
            s.set_nagle_enabled(!l.nodelay);
            s.set_keep_alive(l.keepalive.map(smoltcp::time::Duration::from_secs));
            l.queue.push_back((i, h));
        }
    }

    /// Listeners with no armed socket on `ifx`: their SYNs are dropped.
    fn full_on(&self, ifx: usize) -> Vec<super::filter::Full> {
        self.listeners
            .iter()
            .flatten()
            .filter(|l| Self::applies(l, ifx) && !l.armed.iter().any(|a| a.0 == ifx))
            .map(|l| (l.ip.filter(|ip| !ip.is_unspecified()), l.port))
            .collect()
    }

    /// Let every interface take in and send out what it can.
    pub fn poll(&mut self) {
        let ts = now();
        for ifx in 0..self.ifs.len() {
            for _ in 0..ROUNDS {
                let mut moved = false;
                loop {
                    // After every frame: it may have filled a listener's
                    // armed sockets (or rearm freed some).
                    let full = self.full_on(ifx);
                    let n = &mut self.ifs[ifx];
                    let r = n.dev.ingress(&mut n.iface, &mut n.sockets, ts, &full);
                    if r == PollIngressSingleResult::None {
                        break;
                    }
                    moved = true;
                    self.rearm();
                }
                self.reset_orphans_with_data();
                let n = &mut self.ifs[ifx];
                n.dev.egress(&mut n.iface, &mut n.sockets, ts);
                if !n.dev.pending() && !moved {
                    break;
                }
            }
            self.ifs[ifx].dev.flush();
        }
        self.reap();
    }

    /// Every device told about every queued frame now (`drain`: and
    /// waits, bounded, until each took them).
    pub fn kick(&mut self, drain: bool) {
        for n in &mut self.ifs {
            n.dev.kick(drain);
        }
    }

    /// Data for a socket the program closed has nobody to read it: Linux
    /// answers with a reset (the writer's EPIPE/ECONNRESET), and so do we.
    fn reset_orphans_with_data(&mut self) {
        let Stack { orphans, ifs, .. } = self;
        for &(i, h, _) in orphans.iter() {
            let s = ifs[i].sockets.get_mut::<tcp::Socket>(h);
            if s.recv_queue() > 0 && s.state() != tcp::State::Closed {
                s.abort();
            }
        }
    }

    /// Closed sockets whose connection has ended leave their set (an
    /// aborted one once its reset has gone out: smoltcp then forgets the
    /// peer).
    fn reap(&mut self) {
        let now = crate::time::monotonic_ns();
        let Stack { orphans, ifs, .. } = self;
        orphans.retain(|&(i, h, since)| {
            let s = ifs[i].sockets.get_mut::<tcp::Socket>(h);
            let done = match s.state() {
                tcp::State::Closed => s.remote_endpoint().is_none(),
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done || now.saturating_sub(since) > ORPHAN_NS {
                ifs[i].sockets.remove(h);
                false
            } else {
                true
            }
        });
    }

    /// When smoltcp next needs polling (a retransmission, a keepalive).
    pub fn poll_delay_ns(&mut self) -> Option<u64> {
        let ts = now();
        self.ifs
            .iter_mut()
            .filter_map(|n| n.iface.poll_delay(ts, &n.sockets))
            .map(|d| d.total_micros() * 1000)
            .min()
    }

    pub fn has_device(&self) -> bool {
        self.ifs.len() > 1
    }
}

/// The device's interface: NET_GUEST_IP/NET_PREFIX_LEN with its MAC, and
/// the runner's end of the link as the default route.
#[cfg(not(test))]
fn ethernet(mut d: super::virtio::VirtioNet) -> NetIf {
    use pgkraft_abi::{NET_GUEST_IP, NET_HOST_IP, NET_PREFIX_LEN};
    use smoltcp::wire::EthernetAddress;
    let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(d.mac())));
    c.random_seed = seed();
    let mut iface = Interface::new(c, &mut d, now());
    let [a, b, cc, dd] = NET_GUEST_IP;
    iface.update_ip_addrs(|ips| {
        let _ = ips.push(IpCidr::new(IpAddress::v4(a, b, cc, dd), NET_PREFIX_LEN));
    });
    let [a, b, cc, dd] = NET_HOST_IP;
    let _ = iface
        .routes_mut()
        .add_default_ipv4_route(smoltcp::wire::Ipv4Address::new(a, b, cc, dd));
    crate::log!(
        "libos: virtio-net {:02x?} at {}.{}.{}.{}/{}",
        d.mac(),
        NET_GUEST_IP[0],
        NET_GUEST_IP[1],
        NET_GUEST_IP[2],
        NET_GUEST_IP[3],
        NET_PREFIX_LEN
    );
    NetIf {
        iface,
        dev: Dev::Virtio(alloc::boxed::Box::new(d)),
        sockets: SocketSet::new(Vec::new()),
    }
}

fn listen_ep(ip: Option<Ip>, port: u16) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: ip.filter(|i| !i.is_unspecified()).map(to_addr),
        port,
    }
}

/// Poll the stack if it exists (every wait does this first).
pub fn poll() {
    if active() {
        with(|s| s.poll());
    }
}

/// Nothing can progress now: wait until `until` (monotonic ns), the stack's
/// next timer, or (with a device) the device may have work.
pub fn idle_until(until: u64) {
    crate::mem::give_back_when_idle();
    let now = crate::time::monotonic_ns();
    let (delay, device) = if active() {
        with(|s| (s.poll_delay_ns(), s.has_device()))
    } else {
        (None, false)
    };
    let until = delay.map_or(until, |d| until.min(now.saturating_add(d)));
    let ns = until.saturating_sub(now).max(1000);
    if device {
        #[cfg(not(test))]
        {
            if spin_for_device_work(until) {
                return;
            }
            super::virtio::wait_takes_tx();
        }
        let t = crate::time::monotonic_ns();
        crate::platform::wait_devices(ns);
        learn_spin(crate::time::monotonic_ns().saturating_sub(t) < MAX_SPIN_NS);
    } else if crate::fs::p9::in_flight() {
        // A volume request's answer ends the wait (the runner's worker
        // signals it as it does a frame).
        crate::platform::wait_devices(ns);
    } else {
        crate::platform::sleep_ns(ns);
    }
}

/// How long the next idle wait looks at the device's receive ring before
/// it makes `hc::WAIT` (ns): the runner fills the ring from a thread of its
/// own (vmm virtio/worker.rs), so a frame that comes within this costs no
/// VM exit (~31 µs on PVM). Doubled while the waits after a spin still end
/// soon, 0 once one does not, so an idle guest does not spin.
static SPIN_NS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const MAX_SPIN_NS: u64 = 200_000;
/// How long a spin waits for the runner to take the frames the guest
/// queued before it gives up and makes `hc::WAIT` (which takes them).
const TX_GRACE_NS: u64 = 20_000;
const START_SPIN_NS: u64 = 20_000;

fn learn_spin(soon: bool) {
    let next = if soon {
        (SPIN_NS.load(Ordering::Relaxed) * 2).clamp(START_SPIN_NS, MAX_SPIN_NS)
    } else {
        0
    };
    SPIN_NS.store(next, Ordering::Relaxed);
}

/// Spins (our runner only) until a frame or a volume answer arrives,
/// `until`, or the spin budget ends; true if one came.
#[cfg(not(test))]
fn spin_for_device_work(until: u64) -> bool {
    let budget = SPIN_NS.load(Ordering::Relaxed);
    if budget == 0 || crate::platform::host() != crate::platform::Host::Runner {
        return false;
    }
    let start = crate::time::monotonic_ns();
    let end = until.min(start.saturating_add(budget));
    loop {
        let now = crate::time::monotonic_ns();
        if now >= end {
            break;
        }
        let (frame, unsent) = with(|s| match s.ifs.get_mut(1) {
            Some(n) => (n.dev.pending(), n.dev.tx_unsent()),
            None => (false, false),
        });
        // A volume answer (a commit's fsync, most often) lets its process
        // go on: without this look, the spin ran out its budget first.
        if frame || crate::fs::p9::answered() {
            return true;
        }
        // Our own answer still waits in the ring: the runner's network
        // thread takes it at once after traffic; if it has not within
        // TX_GRACE_NS, it is not looking, and hc::WAIT carries it.
        if unsent && now.saturating_sub(start) >= TX_GRACE_NS {
            break;
        }
        crate::arch::cpu::pause();
    }
    // The wait that follows tells whether a longer spin would have done.
    false
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    #[test]
    fn a_v6only_wildcard_leaves_ipv4_free() {
        let any6 = Ip::V6([0; 16]);
        let any4 = Ip::V4([0; 4]);
        assert!(
            overlap(any6, false, any4, false),
            "dual-stack :: takes IPv4 too"
        );
        assert!(!overlap(any6, true, any4, false));
        assert!(!overlap(any4, false, any6, true));
        assert!(overlap(any6, true, Ip::V6([1; 16]), false));
    }
}
