//! AF_UNIX stream sockets: a byte queue each way between two ends, and
//! listeners found by a name in the in-memory file system (or an abstract
//! name). Everything happens inside the libOS, so connect completes at once
//! (as Linux's does) and only the listener's backlog can make it wait.

use super::addr::SockAddr;
use crate::fd::{POLLERR, POLLHUP, POLLIN, POLLOUT};
use crate::syscall::Errno;
use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use spin::Mutex;

use super::tcp::POLLRDHUP;

/// Bytes one direction holds (Linux's default socket send buffer).
pub const CAPACITY: usize = 212_992;

/// One direction of a connection.
pub struct Chan {
    q: Mutex<VecDeque<u8>>,
    writer: AtomicBool,
    reader: AtomicBool,
}

impl Chan {
    fn new() -> Arc<Chan> {
        Arc::new(Chan {
            q: Mutex::new(VecDeque::new()),
            writer: AtomicBool::new(true),
            reader: AtomicBool::new(true),
        })
    }

    pub fn len(&self) -> usize {
        self.q.lock().len()
    }

    /// Read up to `buf.len()`: Some(0) at end of stream, None when empty.
    pub fn read(&self, buf: &mut [u8], peek: bool) -> Option<usize> {
        let mut q = self.q.lock();
        if q.is_empty() {
            return (!self.writer.load(Ordering::Relaxed)).then_some(0);
        }
        let n = buf.len().min(q.len());
        for (d, s) in buf[..n].iter_mut().zip(q.iter()) {
            *d = *s;
        }
        if !peek {
            q.drain(..n);
        }
        Some(n)
    }

    /// Queue what fits: Err(EPIPE) with no reader, None when full.
    pub fn write(&self, data: &[u8]) -> Result<Option<usize>, Errno> {
        if !self.reader.load(Ordering::Relaxed) || !self.writer.load(Ordering::Relaxed) {
            return Err(Errno::EPIPE);
        }
        let mut q = self.q.lock();
        let room = CAPACITY.saturating_sub(q.len());
        if room == 0 && !data.is_empty() {
            return Ok(None);
        }
        let n = room.min(data.len());
        q.try_reserve(n).map_err(|_| Errno::ENOMEM)?;
        q.extend(&data[..n]);
        Ok(Some(n))
    }
}

/// A connected end: what it reads, what it writes, and the peer's name.
pub struct Conn {
    rx: Arc<Chan>,
    tx: Arc<Chan>,
    peer: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.tx.writer.store(false, Ordering::Relaxed);
        self.rx.reader.store(false, Ordering::Relaxed);
    }
}

/// Two connected ends (socketpair, or connect's two halves).
pub fn pair(a_name: Vec<u8>, b_name: Vec<u8>) -> (Conn, Conn) {
    let (ab, ba) = (Chan::new(), Chan::new());
    (
        Conn {
            rx: ba.clone(),
            tx: ab.clone(),
            peer: b_name,
        },
        Conn {
            rx: ab,
            tx: ba,
            peer: a_name,
        },
    )
}

/// Where connections for a bound name wait to be accepted.
pub struct Listener {
    name: Vec<u8>,
    listening: AtomicBool,
    backlog: AtomicUsize,
    queue: Mutex<VecDeque<Conn>>,
}

#[derive(Clone, PartialEq, Eq)]
enum Key {
    Ino(u64),
    Abstract(Vec<u8>),
}

/// Bound names: file-system names by inode, abstract names by bytes.
static NAMES: Mutex<Vec<(Key, Weak<Listener>)>> = Mutex::new(Vec::new());

enum St {
    Idle,
    Listening,
    Conn(Conn),
}

pub struct UnixSock {
    st: Mutex<St>,
    bound: Mutex<Option<Arc<Listener>>>,
    shut: Mutex<(bool, bool)>,
    pub opts: Mutex<super::opts::Opts>,
}

impl UnixSock {
    fn with(st: St) -> UnixSock {
        UnixSock {
            st: Mutex::new(st),
            bound: Mutex::new(None),
            shut: Mutex::new((false, false)),
            opts: Mutex::new(super::opts::Opts::new(true)),
        }
    }

    pub fn new() -> UnixSock {
        UnixSock::with(St::Idle)
    }

    pub fn pair() -> (UnixSock, UnixSock) {
        let (a, b) = pair(Vec::new(), Vec::new());
        (UnixSock::with(St::Conn(a)), UnixSock::with(St::Conn(b)))
    }

    fn name(&self) -> Vec<u8> {
        self.bound
            .lock()
            .as_ref()
            .map(|l| l.name.clone())
            .unwrap_or_default()
    }

    pub fn listening(&self) -> bool {
        matches!(*self.st.lock(), St::Listening)
    }

    pub fn bind(&self, addr: &SockAddr) -> Result<(), Errno> {
        let SockAddr::Unix(name) = addr else {
            return Err(Errno::EINVAL);
        };
        let mut bound = self.bound.lock();
        if bound.is_some() {
            return Err(Errno::EINVAL);
        }
        if name.is_empty() {
            // Autobind to an abstract name is not offered.
            return Err(Errno::EOPNOTSUPP);
        }
        let key = if name[0] == 0 {
            let k = Key::Abstract(name.clone());
            let names = NAMES.lock();
            if names.iter().any(|(n, l)| *n == k && l.strong_count() > 0) {
                return Err(Errno::EADDRINUSE);
            }
            k
        } else {
            let base = crate::syscall::fs::path_base(-100i64 as u64, name)?;
            let inode = crate::fs::namei::mknod_socket(&base, name, 0o777)?;
            Key::Ino(inode.ino)
        };
        let l = Arc::new(Listener {
            name: name.clone(),
            listening: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        });
        let mut names = NAMES.lock();
        names.retain(|(_, l)| l.strong_count() > 0);
        names.push((key, Arc::downgrade(&l)));
        *bound = Some(l);
        Ok(())
    }

    pub fn listen(&self, backlog: i32) -> Result<(), Errno> {
        let bound = self.bound.lock();
        let Some(l) = bound.as_ref() else {
            return Err(Errno::EINVAL);
        };
        let mut st = self.st.lock();
        if matches!(*st, St::Conn(_)) {
            return Err(Errno::EINVAL);
        }
        let backlog = (backlog as u32 as usize).min(super::stack::SOMAXCONN);
        l.backlog.store(backlog, Ordering::Relaxed);
        l.listening.store(true, Ordering::Relaxed);
        *st = St::Listening;
        Ok(())
    }

    fn find(name: &[u8]) -> Result<Arc<Listener>, Errno> {
        let key = if name.first() == Some(&0) {
            Key::Abstract(name.to_vec())
        } else {
            let base = crate::syscall::fs::path_base(-100i64 as u64, name)?;
            let inode = crate::fs::namei::resolve(&base, name, true)?;
            if !matches!(inode.kind, crate::fs::inode::Kind::Socket) {
                return Err(Errno::ECONNREFUSED);
            }
            Key::Ino(inode.ino)
        };
        NAMES
            .lock()
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, l)| l.upgrade())
            .ok_or(Errno::ECONNREFUSED)
    }

    /// Connect: Ok(None) while the listener's backlog is full.
    pub fn connect(&self, addr: &SockAddr) -> Result<Option<()>, Errno> {
        let SockAddr::Unix(name) = addr else {
            return Err(Errno::EINVAL);
        };
        if name.is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut st = self.st.lock();
        match *st {
            St::Conn(_) => return Err(Errno::EISCONN),
            St::Listening => return Err(Errno::EINVAL),
            St::Idle => {}
        }
        let l = Self::find(name)?;
        if !l.listening.load(Ordering::Relaxed) {
            return Err(Errno::ECONNREFUSED);
        }
        let mut q = l.queue.lock();
        if q.len() > l.backlog.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (mine, theirs) = pair(self.name(), l.name.clone());
        q.push_back(theirs);
        *st = St::Conn(mine);
        Ok(Some(()))
    }

    /// accept: Ok(None) while nobody has connected.
    pub fn accept(&self) -> Result<Option<(UnixSock, SockAddr)>, Errno> {
        if !self.listening() {
            return Err(Errno::EINVAL);
        }
        let bound = self.bound.lock();
        let Some(l) = bound.as_ref() else {
            return Err(Errno::EINVAL);
        };
        let Some(conn) = l.queue.lock().pop_front() else {
            return Ok(None);
        };
        let peer = SockAddr::Unix(conn.peer.clone());
        let s = UnixSock::with(St::Conn(conn));
        *s.bound.lock() = Some(Arc::new(Listener {
            name: l.name.clone(),
            listening: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }));
        Ok(Some((s, peer)))
    }

    pub fn recv(&self, buf: &mut [u8], peek: bool) -> Result<Option<usize>, Errno> {
        let st = self.st.lock();
        let St::Conn(c) = &*st else {
            return Err(Errno::EINVAL);
        };
        if buf.is_empty() {
            return Ok(Some(0));
        }
        match c.rx.read(buf, peek) {
            None if self.shut.lock().0 => Ok(Some(0)),
            r => Ok(r),
        }
    }

    pub fn send(&self, data: &[u8]) -> Result<Option<usize>, Errno> {
        let st = self.st.lock();
        let St::Conn(c) = &*st else {
            return Err(Errno::ENOTCONN);
        };
        if self.shut.lock().1 {
            return Err(Errno::EPIPE);
        }
        c.tx.write(data)
    }

    pub fn shutdown(&self, rd: bool, wr: bool) -> Result<(), Errno> {
        let st = self.st.lock();
        let St::Conn(c) = &*st else {
            return Err(Errno::ENOTCONN);
        };
        let mut shut = self.shut.lock();
        if rd {
            shut.0 = true;
            c.rx.reader.store(false, Ordering::Relaxed);
        }
        if wr {
            shut.1 = true;
            c.tx.writer.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn local_name(&self) -> SockAddr {
        SockAddr::Unix(self.name())
    }

    pub fn peer_name(&self) -> Result<SockAddr, Errno> {
        match &*self.st.lock() {
            St::Conn(c) => Ok(SockAddr::Unix(c.peer.clone())),
            _ => Err(Errno::ENOTCONN),
        }
    }

    pub fn readable_bytes(&self) -> usize {
        match &*self.st.lock() {
            St::Conn(c) => c.rx.len(),
            _ => 0,
        }
    }

    /// Linux's unix_poll for stream sockets.
    pub fn poll_events(&self) -> u32 {
        match &*self.st.lock() {
            St::Idle => POLLOUT | POLLHUP,
            St::Listening => {
                let b = self.bound.lock();
                if b.as_ref().is_some_and(|l| !l.queue.lock().is_empty()) {
                    POLLIN
                } else {
                    0
                }
            }
            St::Conn(c) => {
                let shut = *self.shut.lock();
                let rcv_sd = shut.0 || !c.rx.writer.load(Ordering::Relaxed);
                let snd_sd = shut.1 || !c.tx.reader.load(Ordering::Relaxed);
                let mut m = 0;
                if rcv_sd && snd_sd {
                    m |= POLLHUP;
                }
                if rcv_sd || c.rx.len() > 0 {
                    m |= POLLIN;
                }
                if rcv_sd {
                    m |= POLLRDHUP;
                }
                if c.tx.len() < CAPACITY {
                    m |= POLLOUT;
                }
                let _ = POLLERR;
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_carries_bytes_both_ways_in_order() {
        let (a, b) = UnixSock::pair();
        assert_eq!(a.send(b"ping"), Ok(Some(4)));
        assert_eq!(b.send(b"pong!"), Ok(Some(5)));
        let mut buf = [0u8; 8];
        assert_eq!(b.recv(&mut buf[..2], true), Ok(Some(2)));
        assert_eq!(b.recv(&mut buf, false), Ok(Some(4)));
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(a.recv(&mut buf, false), Ok(Some(5)));
        // Empty: would block.
        assert_eq!(a.recv(&mut buf, false), Ok(None));
        assert_eq!(a.poll_events(), POLLOUT);
    }

    #[test]
    fn half_close_then_close() {
        let (a, b) = UnixSock::pair();
        a.send(b"x").unwrap();
        a.shutdown(false, true).unwrap();
        // b reads the data, then end of stream; it can still send.
        let mut buf = [0u8; 4];
        assert_eq!(b.poll_events(), POLLIN | POLLRDHUP | POLLOUT);
        assert_eq!(b.recv(&mut buf, false), Ok(Some(1)));
        assert_eq!(b.recv(&mut buf, false), Ok(Some(0)));
        assert_eq!(b.send(b"back"), Ok(Some(4)));
        assert_eq!(a.send(b"y"), Err(Errno::EPIPE));
        assert_eq!(a.recv(&mut buf, false), Ok(Some(4)));
        drop(a);
        // The peer is gone: EPIPE, and hangup.
        assert_eq!(b.send(b"z"), Err(Errno::EPIPE));
        assert_eq!(b.poll_events() & POLLHUP, POLLHUP);
    }

    #[test]
    fn a_full_direction_takes_what_fits() {
        let (a, _b) = UnixSock::pair();
        let big = vec![1u8; CAPACITY - 10];
        assert_eq!(a.send(&big), Ok(Some(CAPACITY - 10)));
        assert_eq!(a.send(&[2u8; 100]), Ok(Some(10)));
        assert_eq!(a.send(&[3u8; 1]), Ok(None));
        assert_eq!(a.poll_events() & POLLOUT, 0);
    }

    #[test]
    fn abstract_names_are_unique_and_connectable() {
        let l = UnixSock::new();
        let name = SockAddr::Unix(b"\0pgkraft-test".to_vec());
        l.bind(&name).unwrap();
        assert_eq!(UnixSock::new().bind(&name), Err(Errno::EADDRINUSE));
        let c = UnixSock::new();
        // Not listening yet: refused.
        assert_eq!(c.connect(&name), Err(Errno::ECONNREFUSED));
        l.listen(0).unwrap();
        assert_eq!(c.connect(&name), Ok(Some(())));
        // Backlog 0 holds one; the second waits.
        assert_eq!(UnixSock::new().connect(&name), Ok(None));
        let (s, peer) = l.accept().unwrap().unwrap();
        assert_eq!(peer, SockAddr::Unix(Vec::new()));
        assert_eq!(c.peer_name(), Ok(name.clone()));
        assert_eq!(s.local_name(), name);
        assert!(l.accept().unwrap().is_none());
    }
}
