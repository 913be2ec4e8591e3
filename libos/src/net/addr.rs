//! Socket addresses as the program passes them (`struct sockaddr_in`,
//! `sockaddr_in6`, `sockaddr_un`) and as the kernel hands them back.
//!
//! Pure byte work, kept apart from the stack so it can be unit-tested on the
//! host: parsing checks lengths and families exactly as Linux does, and
//! encoding produces the bytes (and length) getsockname/accept report.

use crate::syscall::Errno;
use alloc::vec::Vec;

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `sizeof(struct sockaddr_un)`: the family and a 108-byte path.
pub const UNIX_ADDR_MAX: usize = 110;
const SIN_LEN: usize = 16;
const SIN6_LEN: usize = 28;

/// An IP endpoint: a v4 or v6 address and a port (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    pub fn is_unspecified(&self) -> bool {
        match self {
            Ip::V4(a) => *a == [0; 4],
            Ip::V6(a) => *a == [0; 16],
        }
    }

    /// `::ffff:a.b.c.d` stands for an IPv4 address on an AF_INET6 socket.
    pub fn unmapped(self) -> Ip {
        match self {
            Ip::V6(a) if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff => {
                Ip::V4([a[12], a[13], a[14], a[15]])
            }
            other => other,
        }
    }

    /// How an AF_INET6 socket names an IPv4 peer: v4-mapped.
    pub fn mapped(self) -> Ip {
        match self {
            Ip::V4(a) => {
                let mut m = [0u8; 16];
                m[10] = 0xff;
                m[11] = 0xff;
                m[12..].copy_from_slice(&a);
                Ip::V6(m)
            }
            v6 => v6,
        }
    }

    pub fn is_loopback(&self) -> bool {
        match self.unmapped() {
            Ip::V4(a) => a[0] == 127,
            Ip::V6(a) => a == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    Inet {
        ip: Ip,
        port: u16,
    },
    /// A path (without the NUL), an abstract name (leading NUL kept), or
    /// empty for an unnamed socket.
    Unix(Vec<u8>),
}

/// Parse what the program passed for a socket of `family`.
pub fn parse(family: u16, bytes: &[u8]) -> Result<SockAddr, Errno> {
    if bytes.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let got = u16::from_ne_bytes([bytes[0], bytes[1]]);
    match family {
        AF_INET => {
            if bytes.len() < SIN_LEN {
                return Err(Errno::EINVAL);
            }
            if got != AF_INET {
                return Err(Errno::EAFNOSUPPORT);
            }
            Ok(SockAddr::Inet {
                ip: Ip::V4([bytes[4], bytes[5], bytes[6], bytes[7]]),
                port: u16::from_be_bytes([bytes[2], bytes[3]]),
            })
        }
        AF_INET6 => {
            // An AF_INET6 socket takes an AF_INET address only for... nothing
            // we need (Linux: EAFNOSUPPORT for bind, EINVAL-ish for connect).
            if got != AF_INET6 {
                return Err(if bytes.len() < 24 {
                    Errno::EINVAL
                } else {
                    Errno::EAFNOSUPPORT
                });
            }
            // SIN6_LEN_RFC2133: the scope id is optional.
            if bytes.len() < 24 {
                return Err(Errno::EINVAL);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes[8..24]);
            Ok(SockAddr::Inet {
                ip: Ip::V6(a),
                port: u16::from_be_bytes([bytes[2], bytes[3]]),
            })
        }
        AF_UNIX => {
            if got != AF_UNIX {
                return Err(Errno::EINVAL);
            }
            if bytes.len() > UNIX_ADDR_MAX {
                return Err(Errno::EINVAL);
            }
            let path = &bytes[2..];
            if path.first() == Some(&0) {
                return Ok(SockAddr::Unix(path.to_vec()));
            }
            // A path ends at its first NUL, or at the length given.
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Ok(SockAddr::Unix(path[..end].to_vec()))
        }
        _ => Err(Errno::EAFNOSUPPORT),
    }
}

/// The bytes the kernel writes back for `addr` on a socket of `family`.
pub fn encode(family: u16, addr: &SockAddr) -> Vec<u8> {
    match addr {
        SockAddr::Inet { ip, port } => {
            let ip = if family == AF_INET6 {
                ip.mapped()
            } else {
                ip.unmapped()
            };
            match ip {
                Ip::V4(a) => {
                    let mut b = alloc::vec![0u8; SIN_LEN];
                    b[..2].copy_from_slice(&AF_INET.to_ne_bytes());
                    b[2..4].copy_from_slice(&port.to_be_bytes());
                    b[4..8].copy_from_slice(&a);
                    b
                }
                Ip::V6(a) => {
                    let mut b = alloc::vec![0u8; SIN6_LEN];
                    b[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
                    b[2..4].copy_from_slice(&port.to_be_bytes());
                    b[8..24].copy_from_slice(&a);
                    b
                }
            }
        }
        SockAddr::Unix(path) => {
            let mut b = Vec::with_capacity(2 + path.len() + 1);
            b.extend_from_slice(&AF_UNIX.to_ne_bytes());
            b.extend_from_slice(path);
            // Linux counts the path's NUL in the length (not for abstract
            // names, whose length is exact).
            if path.first().is_some_and(|&c| c != 0) {
                b.push(0);
            }
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sin(port: u16, a: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&a);
        b
    }

    #[test]
    fn inet_round_trips_in_network_order() {
        let b = sin(5432, [127, 0, 0, 1]);
        let a = parse(AF_INET, &b).unwrap();
        assert_eq!(
            a,
            SockAddr::Inet {
                ip: Ip::V4([127, 0, 0, 1]),
                port: 5432
            }
        );
        assert_eq!(encode(AF_INET, &a), b);
        assert_eq!(&b[2..4], &[0x15, 0x38]);
    }

    #[test]
    fn short_or_foreign_addresses_fail_as_on_linux() {
        assert_eq!(parse(AF_INET, &sin(1, [0; 4])[..15]), Err(Errno::EINVAL));
        let mut b = sin(1, [0; 4]);
        b[0] = AF_UNIX as u8;
        assert_eq!(parse(AF_INET, &b), Err(Errno::EAFNOSUPPORT));
        assert_eq!(parse(AF_INET, &[2]), Err(Errno::EINVAL));
    }

    #[test]
    fn v4_on_an_inet6_socket_is_v4_mapped() {
        let a = SockAddr::Inet {
            ip: Ip::V4([127, 0, 0, 1]),
            port: 80,
        };
        let b = encode(AF_INET6, &a);
        assert_eq!(b.len(), 28);
        let back = parse(AF_INET6, &b).unwrap();
        let SockAddr::Inet { ip, port } = back else {
            panic!()
        };
        assert_eq!(port, 80);
        assert_eq!(ip.unmapped(), Ip::V4([127, 0, 0, 1]));
        assert!(ip.is_loopback());
        assert!(Ip::V6([0; 16]).is_unspecified());
    }

    #[test]
    fn unix_paths_stop_at_nul_and_report_it_in_the_length() {
        let mut b = AF_UNIX.to_ne_bytes().to_vec();
        b.extend_from_slice(b"/tmp/s\0garbage");
        let a = parse(AF_UNIX, &b).unwrap();
        assert_eq!(a, SockAddr::Unix(b"/tmp/s".to_vec()));
        assert_eq!(encode(AF_UNIX, &a).len(), 2 + 6 + 1);
        // Unnamed: just the family.
        assert_eq!(encode(AF_UNIX, &SockAddr::Unix(Vec::new())).len(), 2);
        // Abstract names keep their leading NUL and exact length.
        let mut ab = AF_UNIX.to_ne_bytes().to_vec();
        ab.extend_from_slice(b"\0x");
        assert_eq!(
            parse(AF_UNIX, &ab).unwrap(),
            SockAddr::Unix(b"\0x".to_vec())
        );
        assert_eq!(parse(AF_UNIX, &[0u8; 111]), Err(Errno::EINVAL));
    }
}
