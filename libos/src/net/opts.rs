//! Socket options: what setsockopt stores and getsockopt reports.
//!
//! Linux accepts many options whose effect does not matter inside one VM
//! (buffer sizes, keepalive timing); they are remembered and reported back
//! the way Linux reports them (SO_RCVBUF doubled, keepalive bounds checked)
//! so programs that read their settings back see what they expect. Pure
//! values; the few with an effect (TCP_NODELAY, SO_KEEPALIVE) are applied
//! by the TCP layer.

use crate::syscall::Errno;

pub const SOL_SOCKET: i32 = 1;
pub const IPPROTO_IP: i32 = 0;
pub const IPPROTO_TCP: i32 = 6;
pub const IPPROTO_IPV6: i32 = 41;

pub const SO_REUSEADDR: i32 = 2;
pub const SO_TYPE: i32 = 3;
pub const SO_ERROR: i32 = 4;
pub const SO_SNDBUF: i32 = 7;
pub const SO_RCVBUF: i32 = 8;
pub const SO_KEEPALIVE: i32 = 9;
pub const SO_LINGER: i32 = 13;
pub const SO_REUSEPORT: i32 = 15;
pub const SO_RCVTIMEO: i32 = 20;
pub const SO_SNDTIMEO: i32 = 21;
pub const SO_ACCEPTCONN: i32 = 30;
pub const SO_PROTOCOL: i32 = 38;
pub const SO_DOMAIN: i32 = 39;

pub const TCP_NODELAY: i32 = 1;
pub const TCP_KEEPIDLE: i32 = 4;
pub const TCP_KEEPINTVL: i32 = 5;
pub const TCP_KEEPCNT: i32 = 6;
pub const IPV6_V6ONLY: i32 = 26;

/// Linux's net.core.{r,w}mem_max (the cap on SO_RCVBUF/SO_SNDBUF).
const MEM_MAX: i32 = 212_992;
const SOCK_MIN_SNDBUF: i32 = 4608;
const SOCK_MIN_RCVBUF: i32 = 2304;
const MAX_TCP_KEEPIDLE: i32 = 32767;
const MAX_TCP_KEEPINTVL: i32 = 32767;
const MAX_TCP_KEEPCNT: i32 = 127;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub keepidle: i32,
    pub keepintvl: i32,
    pub keepcnt: i32,
    pub sndbuf: i32,
    pub rcvbuf: i32,
    pub v6only: bool,
    /// struct linger { l_onoff, l_linger }.
    pub linger: [i32; 2],
    /// struct timeval, as given (not applied).
    pub rcvtimeo: [i64; 2],
    pub sndtimeo: [i64; 2],
}

impl Opts {
    /// A new socket's options (TCP defaults of tcp_{r,w}mem; AF_UNIX's
    /// wmem_default).
    pub fn new(unix: bool) -> Opts {
        Opts {
            reuseaddr: false,
            reuseport: false,
            keepalive: false,
            nodelay: false,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            sndbuf: if unix { MEM_MAX } else { 16384 },
            rcvbuf: if unix { MEM_MAX } else { 131_072 },
            v6only: false,
            linger: [0, 0],
            rcvtimeo: [0, 0],
            sndtimeo: [0, 0],
        }
    }
}

/// What a stored option reads back as: an int or raw bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    Int(i32),
    Linger([i32; 2]),
    Timeval([i64; 2]),
}

/// Options answered from the socket itself rather than from `Opts`.
#[derive(Debug, PartialEq, Eq)]
pub enum Live {
    Error,
    Type,
    AcceptConn,
    Protocol,
    Domain,
}

pub enum Get {
    Stored(Value),
    Live(Live),
}

fn int(v: &[u8]) -> Result<i32, Errno> {
    // Linux takes an int, and shorter values only for a few booleans; a
    // value shorter than an int is EINVAL.
    let b: [u8; 4] = v
        .get(..4)
        .ok_or(Errno::EINVAL)?
        .try_into()
        .unwrap_or([0; 4]);
    Ok(i32::from_ne_bytes(b))
}

fn clamp_buf(v: i32, min: i32) -> i32 {
    (v.clamp(0, MEM_MAX).saturating_mul(2)).max(min)
}

/// setsockopt: `tcp` says whether TCP options apply, `inet6` IPv6 ones.
pub fn set(
    o: &mut Opts,
    level: i32,
    name: i32,
    v: &[u8],
    tcp: bool,
    inet6: bool,
) -> Result<(), Errno> {
    match (level, name) {
        (SOL_SOCKET, SO_REUSEADDR) => o.reuseaddr = int(v)? != 0,
        (SOL_SOCKET, SO_REUSEPORT) => o.reuseport = int(v)? != 0,
        (SOL_SOCKET, SO_KEEPALIVE) => o.keepalive = int(v)? != 0,
        (SOL_SOCKET, SO_SNDBUF) => o.sndbuf = clamp_buf(int(v)?, SOCK_MIN_SNDBUF),
        (SOL_SOCKET, SO_RCVBUF) => o.rcvbuf = clamp_buf(int(v)?, SOCK_MIN_RCVBUF),
        (SOL_SOCKET, SO_LINGER) => {
            let b: [u8; 8] = v
                .get(..8)
                .ok_or(Errno::EINVAL)?
                .try_into()
                .unwrap_or([0; 8]);
            o.linger = [
                (i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) != 0) as i32,
                i32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            ];
        }
        (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) => {
            let b: [u8; 16] = v
                .get(..16)
                .ok_or(Errno::EINVAL)?
                .try_into()
                .unwrap_or([0; 16]);
            let tv = [
                i64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])),
                i64::from_ne_bytes(b[8..].try_into().unwrap_or([0; 8])),
            ];
            if !(0..1_000_000).contains(&tv[1]) {
                return Err(Errno::EDOM);
            }
            if name == SO_RCVTIMEO {
                o.rcvtimeo = tv;
            } else {
                o.sndtimeo = tv;
            }
        }
        (SOL_SOCKET, SO_TYPE | SO_ERROR | SO_ACCEPTCONN | SO_PROTOCOL | SO_DOMAIN) => {
            return Err(Errno::ENOPROTOOPT);
        }
        (SOL_SOCKET, _) => {
            int(v)?;
        }
        (IPPROTO_TCP, _) if !tcp => return Err(Errno::EOPNOTSUPP),
        (IPPROTO_TCP, TCP_NODELAY) => o.nodelay = int(v)? != 0,
        (IPPROTO_TCP, TCP_KEEPIDLE) => {
            let x = int(v)?;
            if !(1..=MAX_TCP_KEEPIDLE).contains(&x) {
                return Err(Errno::EINVAL);
            }
            o.keepidle = x;
        }
        (IPPROTO_TCP, TCP_KEEPINTVL) => {
            let x = int(v)?;
            if !(1..=MAX_TCP_KEEPINTVL).contains(&x) {
                return Err(Errno::EINVAL);
            }
            o.keepintvl = x;
        }
        (IPPROTO_TCP, TCP_KEEPCNT) => {
            let x = int(v)?;
            if !(1..=MAX_TCP_KEEPCNT).contains(&x) {
                return Err(Errno::EINVAL);
            }
            o.keepcnt = x;
        }
        (IPPROTO_TCP, _) => {
            int(v)?;
        }
        (IPPROTO_IPV6, IPV6_V6ONLY) if inet6 => o.v6only = int(v)? != 0,
        (IPPROTO_IP | IPPROTO_IPV6, _) if tcp => {
            int(v)?;
        }
        _ => return Err(Errno::ENOPROTOOPT),
    }
    Ok(())
}

/// getsockopt: a stored value, or which live fact to report.
pub fn get(o: &Opts, level: i32, name: i32, tcp: bool, inet6: bool) -> Result<Get, Errno> {
    let b = |x: bool| Get::Stored(Value::Int(x as i32));
    let i = |x: i32| Get::Stored(Value::Int(x));
    Ok(match (level, name) {
        (SOL_SOCKET, SO_REUSEADDR) => b(o.reuseaddr),
        (SOL_SOCKET, SO_REUSEPORT) => b(o.reuseport),
        (SOL_SOCKET, SO_KEEPALIVE) => b(o.keepalive),
        (SOL_SOCKET, SO_SNDBUF) => i(o.sndbuf),
        (SOL_SOCKET, SO_RCVBUF) => i(o.rcvbuf),
        (SOL_SOCKET, SO_LINGER) => Get::Stored(Value::Linger(o.linger)),
        (SOL_SOCKET, SO_RCVTIMEO) => Get::Stored(Value::Timeval(o.rcvtimeo)),
        (SOL_SOCKET, SO_SNDTIMEO) => Get::Stored(Value::Timeval(o.sndtimeo)),
        (SOL_SOCKET, SO_ERROR) => Get::Live(Live::Error),
        (SOL_SOCKET, SO_TYPE) => Get::Live(Live::Type),
        (SOL_SOCKET, SO_ACCEPTCONN) => Get::Live(Live::AcceptConn),
        (SOL_SOCKET, SO_PROTOCOL) => Get::Live(Live::Protocol),
        (SOL_SOCKET, SO_DOMAIN) => Get::Live(Live::Domain),
        (IPPROTO_TCP, _) if !tcp => return Err(Errno::EOPNOTSUPP),
        (IPPROTO_TCP, TCP_NODELAY) => b(o.nodelay),
        (IPPROTO_TCP, TCP_KEEPIDLE) => i(o.keepidle),
        (IPPROTO_TCP, TCP_KEEPINTVL) => i(o.keepintvl),
        (IPPROTO_TCP, TCP_KEEPCNT) => i(o.keepcnt),
        (IPPROTO_IPV6, IPV6_V6ONLY) if inet6 => b(o.v6only),
        _ => return Err(Errno::ENOPROTOOPT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_int(o: &mut Opts, level: i32, name: i32, v: i32) -> Result<(), Errno> {
        set(o, level, name, &v.to_ne_bytes(), true, false)
    }

    fn get_int(o: &Opts, level: i32, name: i32) -> i32 {
        match get(o, level, name, true, false) {
            Ok(Get::Stored(Value::Int(v))) => v,
            _ => panic!("not an int"),
        }
    }

    #[test]
    fn buffer_sizes_are_doubled_and_bounded_as_on_linux() {
        let mut o = Opts::new(false);
        set_int(&mut o, SOL_SOCKET, SO_RCVBUF, 65536).unwrap();
        assert_eq!(get_int(&o, SOL_SOCKET, SO_RCVBUF), 131072);
        set_int(&mut o, SOL_SOCKET, SO_SNDBUF, 1).unwrap();
        assert_eq!(get_int(&o, SOL_SOCKET, SO_SNDBUF), SOCK_MIN_SNDBUF);
        set_int(&mut o, SOL_SOCKET, SO_SNDBUF, i32::MAX).unwrap();
        assert_eq!(get_int(&o, SOL_SOCKET, SO_SNDBUF), 2 * MEM_MAX);
    }

    #[test]
    fn booleans_and_keepalive_bounds() {
        let mut o = Opts::new(false);
        set_int(&mut o, IPPROTO_TCP, TCP_NODELAY, 5).unwrap();
        assert_eq!(get_int(&o, IPPROTO_TCP, TCP_NODELAY), 1);
        set_int(&mut o, SOL_SOCKET, SO_REUSEADDR, 1).unwrap();
        assert_eq!(get_int(&o, SOL_SOCKET, SO_REUSEADDR), 1);
        assert_eq!(
            set_int(&mut o, IPPROTO_TCP, TCP_KEEPIDLE, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            set_int(&mut o, IPPROTO_TCP, TCP_KEEPCNT, 128),
            Err(Errno::EINVAL)
        );
        set_int(&mut o, IPPROTO_TCP, TCP_KEEPINTVL, 10).unwrap();
        assert_eq!(get_int(&o, IPPROTO_TCP, TCP_KEEPINTVL), 10);
        // Too short a value: EINVAL.
        assert_eq!(
            set(&mut o, SOL_SOCKET, SO_KEEPALIVE, &[1], true, false),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn read_only_and_foreign_options() {
        let mut o = Opts::new(true);
        assert_eq!(
            set_int(&mut o, SOL_SOCKET, SO_TYPE, 1),
            Err(Errno::ENOPROTOOPT)
        );
        assert!(matches!(
            get(&o, SOL_SOCKET, SO_ERROR, false, false),
            Ok(Get::Live(Live::Error))
        ));
        // TCP options on an AF_UNIX socket.
        assert_eq!(
            set(
                &mut o,
                IPPROTO_TCP,
                TCP_NODELAY,
                &1i32.to_ne_bytes(),
                false,
                false
            ),
            Err(Errno::EOPNOTSUPP)
        );
        assert!(get(&o, 99, 1, true, false).is_err());
    }
}
