//! Socket system calls: argument checks and user memory, then net::Socket.
//!
//! Stream sockets only (TCP and AF_UNIX). Vectored calls (readv/writev on
//! a socket, sendmsg/recvmsg) gather into or scatter from one libOS buffer
//! so that a socket is read or written once per call: looping over the
//! buffers would block on the second one after the first took all there
//! was.

use super::iovec::Iovec;
use super::{Errno, Result};
use crate::arch::uaccess;
use crate::fd::{self, FileKind, MAX_RW, O_CLOEXEC, O_NONBLOCK, O_RDWR, OpenFile};
use crate::net::addr::{self, AF_INET, AF_INET6, AF_UNIX, SockAddr};
use crate::net::opts::{self, Get, Live, Value};
use crate::net::{Socket, tcp::TcpSock, unix::UnixSock};
use alloc::sync::Arc;
use alloc::vec::Vec;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const SOCK_STREAM: u64 = 1;
const SOCK_TYPE_MASK: u64 = 0xf;
const IPPROTO_TCP: u64 = 6;

const MSG_OOB: u64 = 0x1;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_WAITALL: u64 = 0x100;
const MSG_NOSIGNAL: u64 = 0x4000;

/// The largest sockaddr a program may pass (sizeof(sockaddr_storage)).
const SOCKADDR_MAX: u64 = 128;
/// A vectored socket call moves at most this much at once.
const VEC_MAX: u64 = 1 << 20;

/// The kernel's `struct msghdr` on x86-64.
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: i32,
    _pad2: u32,
}

fn socket_file(fd: u64) -> core::result::Result<Arc<OpenFile>, Errno> {
    let f = fd::get(fd)?;
    match f.kind {
        FileKind::Socket(_) => Ok(f),
        _ => Err(Errno::ENOTSOCK),
    }
}

fn sock(f: &OpenFile) -> &Socket {
    match &f.kind {
        FileKind::Socket(s) => s,
        _ => unreachable!("checked by socket_file"),
    }
}

fn install(s: Socket, flags: u64) -> Result {
    let status = O_RDWR | (flags as u32 & O_NONBLOCK);
    let file = OpenFile::new(FileKind::Socket(s), status);
    Ok(fd::install(file, flags & O_CLOEXEC as u64 != 0)? as i64)
}

fn type_flags(ty: u64) -> core::result::Result<u64, Errno> {
    let flags = ty & !SOCK_TYPE_MASK;
    if flags & !((O_NONBLOCK | O_CLOEXEC) as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(flags)
}

pub fn socket(domain: u64, ty: u64, protocol: u64) -> Result {
    let flags = type_flags(ty)?;
    let kind = ty & SOCK_TYPE_MASK;
    let s = match domain as u16 {
        AF_INET | AF_INET6 => {
            if kind != SOCK_STREAM {
                return Err(Errno::ESOCKTNOSUPPORT);
            }
            if protocol != 0 && protocol != IPPROTO_TCP {
                return Err(Errno::EPROTONOSUPPORT);
            }
            if fd::free_count(1) == 0 {
                return Err(Errno::EMFILE);
            }
            Socket::Tcp(TcpSock::new(domain as u16 == AF_INET6))
        }
        AF_UNIX => {
            if kind != SOCK_STREAM {
                return Err(Errno::ESOCKTNOSUPPORT);
            }
            if protocol != 0 {
                return Err(Errno::EPROTONOSUPPORT);
            }
            Socket::Unix(UnixSock::new())
        }
        _ => return Err(Errno::EAFNOSUPPORT),
    };
    install(s, flags)
}

pub fn socketpair(domain: u64, ty: u64, protocol: u64, sv: u64) -> Result {
    let flags = type_flags(ty)?;
    match domain as u16 {
        AF_UNIX => {}
        AF_INET | AF_INET6 => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno::EAFNOSUPPORT),
    }
    if ty & SOCK_TYPE_MASK != SOCK_STREAM {
        return Err(Errno::ESOCKTNOSUPPORT);
    }
    if protocol != 0 {
        return Err(Errno::EPROTONOSUPPORT);
    }
    // The array must be writable before anything is made.
    drop(uaccess::slice_mut(sv, 8)?);
    if fd::free_count(2) < 2 {
        return Err(Errno::EMFILE);
    }
    let (a, b) = UnixSock::pair();
    let fa = install(Socket::Unix(a), flags)? as i32;
    let fb = install(Socket::Unix(b), flags)? as i32;
    uaccess::write(sv, &[fa, fb])?;
    Ok(0)
}

fn read_addr(f: &OpenFile, at: u64, len: u64) -> core::result::Result<SockAddr, Errno> {
    if len as i32 as i64 > SOCKADDR_MAX as i64 || (len as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let bytes = uaccess::slice(at, len as u32 as u64)?.to_vec();
    addr::parse(sock(f).family(), &bytes)
}

/// Write a name back: as much as the program's length allows, and the
/// real length.
fn write_addr(at: u64, lenp: u64, family: u16, a: &SockAddr) -> core::result::Result<(), Errno> {
    if at == 0 && lenp == 0 {
        return Ok(());
    }
    let len: i32 = uaccess::read(lenp)?;
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let bytes = addr::encode(family, a);
    let n = bytes.len().min(len as usize);
    uaccess::slice_mut(at, n as u64)?.copy_from_slice(&bytes[..n]);
    uaccess::write(lenp, &(bytes.len() as i32))
}

pub fn bind(fd: u64, at: u64, len: u64) -> Result {
    let f = socket_file(fd)?;
    let a = read_addr(&f, at, len)?;
    sock(&f).bind(&a)?;
    Ok(0)
}

pub fn listen(fd: u64, backlog: u64) -> Result {
    let f = socket_file(fd)?;
    sock(&f).listen(backlog as i32)?;
    Ok(0)
}

pub fn accept4(fd: u64, at: u64, lenp: u64, flags: u64) -> Result {
    if flags & !((O_NONBLOCK | O_CLOEXEC) as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let f = socket_file(fd)?;
    let s = sock(&f);
    if !s.listening() {
        return Err(Errno::EINVAL);
    }
    if fd::free_count(1) == 0 {
        return Err(Errno::EMFILE);
    }
    let (new, peer) = s.accept(f.nonblocking())?;
    let family = s.family();
    let nfd = install(new, flags)?;
    if at != 0 {
        write_addr(at, lenp, family, &peer)?;
    }
    Ok(nfd)
}

pub fn connect(fd: u64, at: u64, len: u64) -> Result {
    let f = socket_file(fd)?;
    let a = read_addr(&f, at, len)?;
    sock(&f).connect(&a, f.nonblocking())?;
    Ok(0)
}

pub fn shutdown(fd: u64, how: u64) -> Result {
    let f = socket_file(fd)?;
    sock(&f).shutdown(how)?;
    Ok(0)
}

pub fn getsockname(fd: u64, at: u64, lenp: u64) -> Result {
    let f = socket_file(fd)?;
    let s = sock(&f);
    write_addr(at, lenp, s.family(), &s.local_name())?;
    Ok(0)
}

pub fn getpeername(fd: u64, at: u64, lenp: u64) -> Result {
    let f = socket_file(fd)?;
    let s = sock(&f);
    let peer = s.peer_name()?;
    write_addr(at, lenp, s.family(), &peer)?;
    Ok(0)
}

fn send_flags(flags: u64) -> core::result::Result<(), Errno> {
    if flags & MSG_OOB != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

fn send_bytes(f: &OpenFile, data: &[u8], flags: u64) -> Result {
    send_flags(flags)?;
    let nonblock = f.nonblocking() || flags & MSG_DONTWAIT != 0;
    Ok(sock(f).send(data, nonblock, flags & MSG_NOSIGNAL != 0)? as i64)
}

fn recv_bytes(f: &OpenFile, buf: &mut [u8], flags: u64) -> core::result::Result<usize, Errno> {
    if flags & MSG_OOB != 0 {
        return Err(Errno::EINVAL);
    }
    let s = sock(f);
    let nonblock = f.nonblocking() || flags & MSG_DONTWAIT != 0;
    let peek = flags & MSG_PEEK != 0;
    let mut n = s.recv(buf, peek, nonblock)?;
    // MSG_WAITALL: keep reading until full, end of stream, or an error.
    if flags & MSG_WAITALL != 0 && !peek && !nonblock {
        while n < buf.len() {
            match s.recv(&mut buf[n..], false, false) {
                Ok(0) | Err(_) => break,
                Ok(m) => n += m,
            }
        }
    }
    Ok(n)
}

pub fn sendto(fd: u64, buf: u64, len: u64, flags: u64, _to: u64, _tolen: u64) -> Result {
    let f = socket_file(fd)?;
    // A stream socket ignores a destination (Linux: TCP does).
    let data = uaccess::slice(buf, len.min(MAX_RW))?;
    send_bytes(&f, &data, flags)
}

pub fn recvfrom(fd: u64, buf: u64, len: u64, flags: u64, at: u64, lenp: u64) -> Result {
    let f = socket_file(fd)?;
    let mut dst = uaccess::slice_mut(buf, len.min(MAX_RW))?;
    let n = recv_bytes(&f, &mut dst, flags)?;
    drop(dst);
    if at != 0 && lenp != 0 {
        // TCP reports no source address on a stream (length 0).
        uaccess::write(lenp, &0i32)?;
    }
    Ok(n as i64)
}

fn gather(v: &[Iovec]) -> core::result::Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    for e in v {
        let take = e.len.min(VEC_MAX - out.len() as u64);
        out.extend_from_slice(&uaccess::slice(e.base, take)?);
        if out.len() as u64 == VEC_MAX {
            break;
        }
    }
    Ok(out)
}

fn scatter(v: &[Iovec], data: &[u8]) -> core::result::Result<(), Errno> {
    let mut at = 0;
    for e in v {
        if at == data.len() {
            break;
        }
        let n = (e.len as usize).min(data.len() - at);
        uaccess::slice_mut(e.base, n as u64)?.copy_from_slice(&data[at..at + n]);
        at += n;
    }
    Ok(())
}

fn room(v: &[Iovec]) -> usize {
    v.iter().map(|e| e.len).sum::<u64>().min(VEC_MAX) as usize
}

/// readv(2) on a socket (fs::readv hands sockets here).
pub fn readv(f: &OpenFile, iov: u64, count: u64) -> Result {
    let v = super::iovec::read(iov, count)?;
    let mut buf = alloc::vec![0u8; room(&v)];
    let n = recv_bytes(f, &mut buf, 0)?;
    scatter(&v, &buf[..n])?;
    Ok(n as i64)
}

/// writev(2) on a socket.
pub fn writev(f: &OpenFile, iov: u64, count: u64) -> Result {
    let v = super::iovec::read(iov, count)?;
    let data = gather(&v)?;
    send_bytes(f, &data, 0)
}

pub fn sendmsg(fd: u64, msg: u64, flags: u64) -> Result {
    let f = socket_file(fd)?;
    let m: MsgHdr = uaccess::read(msg)?;
    let v = super::iovec::read(m.iov, m.iovlen)?;
    let data = gather(&v)?;
    send_bytes(&f, &data, flags)
}

pub fn recvmsg(fd: u64, msg: u64, flags: u64) -> Result {
    let f = socket_file(fd)?;
    let mut m: MsgHdr = uaccess::read(msg)?;
    let v = super::iovec::read(m.iov, m.iovlen)?;
    let mut buf = alloc::vec![0u8; room(&v)];
    let n = recv_bytes(&f, &mut buf, flags)?;
    scatter(&v, &buf[..n])?;
    // No source address on a stream, no control messages.
    m.namelen = 0;
    m.controllen = 0;
    m.flags = 0;
    uaccess::write(msg, &m)?;
    Ok(n as i64)
}

pub fn setsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> Result {
    let f = socket_file(fd)?;
    let s = sock(&f);
    if (len as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let bytes = uaccess::slice(val, (len as u32 as u64).min(256))?.to_vec();
    let tcp = matches!(s, Socket::Tcp(_));
    let inet6 = s.family() == AF_INET6;
    s.opts(|o| opts::set(o, level as i32, name as i32, &bytes, tcp, inet6))?;
    Ok(0)
}

pub fn getsockopt(fd: u64, level: u64, name: u64, val: u64, lenp: u64) -> Result {
    let f = socket_file(fd)?;
    let s = sock(&f);
    let len: i32 = uaccess::read(lenp)?;
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let tcp = matches!(s, Socket::Tcp(_));
    let inet6 = s.family() == AF_INET6;
    let got = s.opts(|o| opts::get(o, level as i32, name as i32, tcp, inet6))?;
    let value = match got {
        Get::Stored(v) => v,
        Get::Live(l) => Value::Int(match l {
            Live::Error => s.take_error().map_or(0, |e| e.0 as i32),
            Live::Type => SOCK_STREAM as i32,
            Live::AcceptConn => s.listening() as i32,
            Live::Protocol => {
                if tcp {
                    IPPROTO_TCP as i32
                } else {
                    0
                }
            }
            Live::Domain => s.family() as i32,
        }),
    };
    let bytes: Vec<u8> = match value {
        Value::Int(v) => v.to_ne_bytes().to_vec(),
        Value::Linger(l) => l.as_bytes().to_vec(),
        Value::Timeval(t) => t.as_bytes().to_vec(),
    };
    let n = bytes.len().min(len as usize);
    uaccess::slice_mut(val, n as u64)?.copy_from_slice(&bytes[..n]);
    uaccess::write(lenp, &(n as i32))?;
    Ok(0)
}
