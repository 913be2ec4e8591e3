//! What the user asks of the network (`--publish`): which host addresses
//! forward to which guest ports. Parsed here, beside the runner that
//! binds them, so that the syntax has one definition and unit tests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// A VM's network: one virtio-net device on the user-mode link, with
/// these guest ports published on the host, or (`tap`) on a tap device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub publish: Vec<PublishRule>,
    /// The tap device the guest's link is (existing or created); then
    /// `publish` must be empty.
    pub tap: Option<String>,
}

/// Connections to `host` are relayed to the guest's `guest_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRule {
    pub host: SocketAddr,
    pub guest_port: u16,
}

impl PublishRule {
    /// The syntax, for messages.
    pub const SYNTAX: &str = "[HOST_IP:]HOST_PORT:GUEST_PORT";
    pub const EXAMPLE: &str = "127.0.0.1:15432:5432";
}

/// Why a `--publish` value was refused; the caller names the flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPublish(pub &'static str);

impl FromStr for PublishRule {
    type Err = BadPublish;

    /// `[HOST_IP:]HOST_PORT:GUEST_PORT`, HOST_IP 127.0.0.1 when left out,
    /// an IPv6 HOST_IP in brackets (`[::1]:5432:5432`); ports 1-65535.
    fn from_str(text: &str) -> Result<PublishRule, BadPublish> {
        let text = text.trim();
        let (ip, rest) = if let Some(v6) = text.strip_prefix('[') {
            let (ip, rest) = v6.split_once("]:").ok_or(BadPublish(
                "an IPv6 HOST_IP in brackets is followed by :HOST_PORT",
            ))?;
            let ip = ip
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| BadPublish("HOST_IP in brackets is not an IPv6 address"))?;
            (IpAddr::V6(ip), rest)
        } else {
            match text.matches(':').count() {
                1 => (IpAddr::V4(Ipv4Addr::LOCALHOST), text),
                2 => {
                    let (ip, rest) = text.split_once(':').unwrap_or_default();
                    let ip = ip.parse::<Ipv4Addr>().map_err(|_| {
                        BadPublish("HOST_IP is not an IPv4 address (put an IPv6 one in brackets)")
                    })?;
                    (IpAddr::V4(ip), rest)
                }
                _ => return Err(BadPublish("it needs HOST_PORT:GUEST_PORT")),
            }
        };
        let (host_port, guest_port) = rest
            .split_once(':')
            .ok_or(BadPublish("it needs HOST_PORT:GUEST_PORT"))?;
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(BadPublish("ports are whole numbers from 1 to 65535"))
        };
        Ok(PublishRule {
            host: SocketAddr::new(ip, port(host_port)?),
            guest_port: port(guest_port)?,
        })
    }
}

impl fmt::Display for PublishRule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.guest_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Result<PublishRule, BadPublish> {
        text.parse()
    }

    #[test]
    fn parses_the_three_forms() {
        let r = rule("15432:5432").unwrap();
        assert_eq!(r.host, "127.0.0.1:15432".parse().unwrap());
        assert_eq!(r.guest_port, 5432);
        let r = rule("0.0.0.0:80:8080").unwrap();
        assert_eq!(r.host, "0.0.0.0:80".parse().unwrap());
        assert_eq!(r.guest_port, 8080);
        let r = rule("[::1]:5432:5432").unwrap();
        assert_eq!(r.host, "[::1]:5432".parse().unwrap());
        assert_eq!(r.to_string(), "[::1]:5432:5432");
        assert_eq!(rule(PublishRule::EXAMPLE).unwrap().guest_port, 5432);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "5432",
            "0:5432",
            "5432:0",
            "65536:1",
            "a:b",
            "1.2.3:1:2",
            "::1:5432:5432",
            "[::1]5432:5432",
            "[x]:1:2",
            "1:2:3:4",
            "127.0.0.1:5432",
            "-1:5",
            ":5432",
            "5432:",
        ] {
            assert!(rule(bad).is_err(), "{bad:?} accepted");
        }
    }
}
