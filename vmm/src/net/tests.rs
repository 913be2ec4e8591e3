//! The user-mode backend driven through its link by a second smoltcp
//! interface acting as the guest (a real TCP stack on both ends), with
//! real host clients on 127.0.0.1. Loops end on what happened (counters,
//! bytes), each guarded by a generous round limit, never by a clock.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use pgkraft_abi::{NET_GUEST_IP, NET_PREFIX_LEN};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::link::{HARD_LIMIT, Link, MAX_FRAME};
use super::user::{RING, UserNet};
use super::{NetBackend, PublishRule};
use crate::virtio::net::GUEST_MAC;

const GUEST_PORT: u16 = 7;
/// Rounds a test may take before it is judged stuck.
const ROUNDS: usize = 200_000;

/// The guest: a smoltcp interface at NET_GUEST_IP. Its `Link` is used the
/// other way round: `from_guest` holds frames arriving at it, `to_guest`
/// frames it sends.
struct Guest {
    iface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    epoch: std::time::Instant,
}

impl Guest {
    fn new() -> Guest {
        let mut link = Link::default();
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        let mut iface = Interface::new(config, &mut link, NetInstant::from_micros(0));
        iface.update_ip_addrs(|a| {
            let [w, x, y, z] = NET_GUEST_IP;
            let ip = IpAddress::Ipv4(Ipv4Address::new(w, x, y, z));
            a.push(IpCidr::new(ip, NET_PREFIX_LEN)).unwrap();
        });
        Guest {
            iface,
            link,
            sockets: SocketSet::new(Vec::new()),
            epoch: std::time::Instant::now(),
        }
    }

    fn listen(&mut self, n: usize) -> Vec<SocketHandle> {
        (0..n)
            .map(|_| {
                let mut s = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 64 << 10]),
                    tcp::SocketBuffer::new(vec![0; 64 << 10]),
                );
                s.listen(GUEST_PORT).unwrap();
                self.sockets.add(s)
            })
            .collect()
    }

    fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Echoes what each socket received; closes once the peer closed and
    /// everything went back.
    fn echo(&mut self, handles: &[SocketHandle]) {
        for &h in handles {
            let s = self.sock(h);
            let room = s.send_capacity() - s.send_queue();
            if s.can_recv() && room > 0 {
                let mut buf = vec![0; room];
                let n = s.recv_slice(&mut buf).unwrap();
                assert_eq!(s.send_slice(&buf[..n]).unwrap(), n);
            }
            if !s.may_recv() && s.recv_queue() == 0 && s.may_send() {
                s.close();
            }
        }
    }
}

fn net() -> UserNet {
    let rule: PublishRule = "127.0.0.1:1:7".parse().unwrap();
    let rule = PublishRule {
        host: "127.0.0.1:0".parse().unwrap(),
        ..rule
    };
    UserNet::new(&[rule], None).unwrap()
}

/// Moves frames between the runner's stack and the guest's; true if any moved.
fn shuttle(net: &mut UserNet, g: &mut Guest) -> bool {
    let mut moved = net.poll();
    while let Some(f) = net.recv() {
        g.link.from_guest.push_back(f);
        moved = true;
    }
    let now = NetInstant::from_micros(g.epoch.elapsed().as_micros() as i64);
    g.iface.poll(now, &mut g.link, &mut g.sockets);
    while let Some(f) = g.link.to_guest.pop_front() {
        assert!(net.can_send());
        assert!(net.send(&f));
        moved = true;
        if !net.can_send() {
            net.poll();
        }
    }
    moved
}

/// Runs the link (and `each`, the guest's program) until `done`.
fn run_until(
    net: &mut UserNet,
    g: &mut Guest,
    mut each: impl FnMut(&mut Guest),
    mut done: impl FnMut(&mut UserNet) -> bool,
) {
    for _ in 0..ROUNDS {
        if done(net) {
            return;
        }
        let moved = shuttle(net, g);
        each(g);
        if !moved {
            thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    panic!("stuck after {ROUNDS} rounds");
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + seed * 13) % 251) as u8)
        .collect()
}

/// A host client: sends `data`, half-closes, returns all it read back.
fn client(addr: std::net::SocketAddr, data: Vec<u8>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        (&s).read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        back
    })
}

#[test]
fn bytes_reach_the_guest_and_come_back_exact() {
    let mut net = net();
    let addr = net.listen_addrs()[0];
    let mut g = Guest::new();
    let socks = g.listen(1);
    let data = pattern(1, 300 << 10);
    let c = client(addr, data.clone());
    run_until(&mut net, &mut g, |g| g.echo(&socks), |_| c.is_finished());
    assert!(c.join().unwrap() == data, "echoed bytes differ");
    run_until(
        &mut net,
        &mut g,
        |g| g.echo(&socks),
        |n| n.connections() == 0,
    );
    assert_eq!(net.sockets(), 0);
    assert_eq!(net.stats.accepted, 1);
}

#[test]
fn fifty_clients_at_once() {
    let mut net = net();
    let addr = net.listen_addrs()[0];
    let mut g = Guest::new();
    let socks = g.listen(50);
    let clients: Vec<_> = (0..50)
        .map(|i| (i, client(addr, pattern(i, 20 << 10))))
        .collect();
    run_until(
        &mut net,
        &mut g,
        |g| g.echo(&socks),
        |_| clients.iter().all(|(_, c)| c.is_finished()),
    );
    for (i, c) in clients {
        assert!(c.join().unwrap() == pattern(i, 20 << 10), "client {i}");
    }
    run_until(
        &mut net,
        &mut g,
        |g| g.echo(&socks),
        |n| n.connections() == 0,
    );
    assert_eq!(net.stats.accepted, 50);
    assert_eq!(net.sockets(), 0);
}

#[test]
fn a_guest_port_nobody_listens_on_closes_the_host_connection() {
    let mut net = net();
    let addr = net.listen_addrs()[0];
    let mut g = Guest::new();
    let c = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = [0u8; 16];
        // Closed: end of stream, or a reset.
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    });
    run_until(&mut net, &mut g, |_| {}, |_| c.is_finished());
    assert!(c.join().unwrap());
    assert_eq!(net.connections(), 0);
    assert_eq!(net.sockets(), 0);
}

#[test]
fn a_vanished_client_frees_its_socket() {
    let mut net = net();
    let addr = net.listen_addrs()[0];
    let mut g = Guest::new();
    let socks = g.listen(1);
    let mut host = TcpStream::connect(addr).unwrap();
    // The guest streams to the client, which reads a little and vanishes
    // with data unread (its kernel answers with a reset).
    let stream = |g: &mut Guest| {
        let s = g.sock(socks[0]);
        if s.can_send() {
            let _ = s.send_slice(&pattern(3, 4096));
        }
    };
    let mut got = [0u8; 1000];
    host.set_nonblocking(true).unwrap();
    let mut read = 0;
    run_until(&mut net, &mut g, stream, |_| {
        if let Ok(n) = host.read(&mut got) {
            read += n;
        }
        read > 0
    });
    drop(host);
    run_until(&mut net, &mut g, stream, |n| n.sockets() == 0);
    assert_eq!(net.connections(), 0);
    assert_eq!(net.stats.finished, 1);
}

#[test]
fn a_flood_into_a_guest_that_does_not_read_stays_bounded() {
    let mut net = net();
    let addr = net.listen_addrs()[0];
    let mut g = Guest::new();
    let _socks = g.listen(1);
    let mut host = TcpStream::connect(addr).unwrap();
    host.set_nonblocking(true).unwrap();
    let chunk = vec![0x5a; 64 << 10];
    let (mut sent, mut blocked_rounds, mut peak) = (0usize, 0, 0);
    // Until the client cannot write any more and the link is still.
    run_until(
        &mut net,
        &mut g,
        |_| {},
        |n| {
            peak = peak.max(n.buffered());
            match host.write(&chunk) {
                Ok(k) => {
                    sent += k;
                    blocked_rounds = 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => blocked_rounds += 1,
                Err(e) => panic!("host write: {e}"),
            }
            blocked_rounds > 200
        },
    );
    // Two rings per connection and the link's queues, whatever was sent.
    let bound = 2 * RING + 2 * HARD_LIMIT * MAX_FRAME;
    assert!(peak <= bound, "runner held {peak} bytes (bound {bound})");
    assert!(
        sent > peak,
        "the client got {sent} bytes in before it blocked"
    );
    assert_eq!(net.connections(), 1);
}
