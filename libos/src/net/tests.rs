//! The socket layer end to end over the loopback interface, on the host.
//! One test function: the stack is one global, and test threads would
//! otherwise meet on its lock.

use super::addr::{Ip, SockAddr};
use super::tcp::{POLLRDHUP, TcpSock};
use super::{Socket, stack};
use crate::fd::{POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::syscall::Errno;

fn lo(port: u16) -> SockAddr {
    SockAddr::Inet {
        ip: Ip::V4([127, 0, 0, 1]),
        port,
    }
}

fn port_of(a: &SockAddr) -> u16 {
    match a {
        SockAddr::Inet { port, .. } => *port,
        _ => panic!("not inet"),
    }
}

#[test]
fn tcp_over_loopback() {
    // A listener with backlog 1 on an ephemeral port.
    let l = Socket::Tcp(TcpSock::new(false));
    l.bind(&lo(0)).unwrap();
    l.listen(1).unwrap();
    let port = port_of(&l.local_name());
    assert!(port >= 32768);
    assert_eq!(l.poll_events(), 0);

    // Non-blocking connect: EINPROGRESS, then writable with no error.
    let c = Socket::Tcp(TcpSock::new(false));
    assert_eq!(c.connect(&lo(port), true), Err(Errno::EINPROGRESS));
    stack::poll();
    assert_eq!(c.poll_events() & (POLLOUT | POLLERR), POLLOUT);
    assert_eq!(c.take_error(), None);
    assert_eq!(l.poll_events(), POLLIN);
    let (s, peer) = l.accept(true).unwrap();
    assert_eq!(peer, c.local_name());
    assert_eq!(c.peer_name().unwrap(), lo(port));

    // Bytes both ways, peek first.
    assert_eq!(c.send(b"hello", false, false), Ok(5));
    let mut buf = [0u8; 16];
    assert_eq!(s.recv(&mut buf[..3], true, true), Ok(3));
    assert_eq!(s.recv(&mut buf, false, true), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(s.recv(&mut buf, false, true), Err(Errno::EAGAIN));

    // Half-close: the server reads EOF and can still answer.
    c.shutdown(1).unwrap();
    stack::poll();
    assert_eq!(s.poll_events() & (POLLIN | POLLRDHUP), POLLIN | POLLRDHUP);
    assert_eq!(s.recv(&mut buf, false, true), Ok(0));
    assert_eq!(s.send(b"bye", false, true), Ok(3));
    assert_eq!(c.recv(&mut buf, false, false), Ok(3));

    // The server closes: the client sees EOF, then its writes fail.
    drop(s);
    stack::poll();
    assert_eq!(c.recv(&mut buf, false, true), Ok(0));

    // Nobody listens: refused.
    let r = Socket::Tcp(TcpSock::new(false));
    assert_eq!(r.connect(&lo(1), false), Err(Errno::ECONNREFUSED));
    let r2 = Socket::Tcp(TcpSock::new(false));
    assert_eq!(r2.connect(&lo(1), true), Err(Errno::EINPROGRESS));
    stack::poll();
    assert_eq!(r2.poll_events() & (POLLERR | POLLHUP), POLLERR | POLLHUP);
    assert_eq!(r2.take_error(), Some(Errno::ECONNREFUSED));

    // Peer gone mid-stream: the first write may go out, then EPIPE.
    let c2 = Socket::Tcp(TcpSock::new(false));
    c2.connect(&lo(port), false).unwrap();
    let (s2, _) = l.accept(true).unwrap();
    drop(s2);
    stack::poll();
    assert_eq!(c2.recv(&mut buf, false, true), Ok(0));
    let mut err = None;
    for _ in 0..4 {
        match c2.send(b"x", true, true) {
            Ok(_) => stack::poll(),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(Errno::EPIPE));

    // Backlog 1 holds two; a third waits (its SYN is dropped, not refused).
    let a = Socket::Tcp(TcpSock::new(false));
    let b = Socket::Tcp(TcpSock::new(false));
    let x = Socket::Tcp(TcpSock::new(false));
    for k in [&a, &b, &x] {
        assert_eq!(k.connect(&lo(port), true), Err(Errno::EINPROGRESS));
    }
    stack::poll();
    assert_eq!(a.poll_events() & POLLOUT, POLLOUT);
    assert_eq!(b.poll_events() & POLLOUT, POLLOUT);
    assert_eq!(x.poll_events() & (POLLOUT | POLLERR), 0);
    let _sa = l.accept(true).unwrap();
    let _sb = l.accept(true).unwrap();
    assert!(l.accept(true).is_err());

    // A second bind to the listener's port: EADDRINUSE.
    let d = Socket::Tcp(TcpSock::new(false));
    assert_eq!(d.bind(&lo(port)), Err(Errno::EADDRINUSE));

    // PostgreSQL's pair of listeners on one port, `::` with IPV6_V6ONLY
    // (first) and `0.0.0.0`: an IPv4 client is the IPv4 socket's, though
    // smoltcp's wildcard listen let the IPv6 one take the SYN.
    let any6 = |port| SockAddr::Inet {
        ip: Ip::V6([0; 16]),
        port,
    };
    let l6 = Socket::Tcp(TcpSock::new(true));
    l6.opts(|o| o.v6only = true);
    l6.bind(&any6(0)).unwrap();
    let port = port_of(&l6.local_name());
    let l4 = Socket::Tcp(TcpSock::new(false));
    l4.bind(&SockAddr::Inet {
        ip: Ip::V4([0; 4]),
        port,
    })
    .unwrap();
    l6.listen(8).unwrap();
    l4.listen(8).unwrap();
    let c4 = Socket::Tcp(TcpSock::new(false));
    c4.connect(&lo(port), false).unwrap();
    stack::poll();
    assert_eq!(
        l6.poll_events(),
        0,
        "the IPv6-only listener has no IPv4 client"
    );
    assert_eq!(l4.poll_events(), POLLIN);
    let (_s4, peer) = l4.accept(true).unwrap();
    assert_eq!(peer, c4.local_name());
}
