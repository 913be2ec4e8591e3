//! Whether a PostgreSQL server accepts connections, asked as a client
//! would, the way `pg_isready` decides: send a StartupMessage and read the
//! first answer. An authentication request, or any error but SQLSTATE
//! 57P03 (`cannot_connect_now`: starting up, shutting down, in recovery),
//! means it accepts connections. An SSLRequest alone is not enough: the
//! postmaster answers it while the startup process still runs, and the
//! connection after it is refused with "the database system is starting
//! up" (seen with the host-linked server, which listens ~40 ms before it
//! is ready).
//!
//! The probe closes the connection at the authentication request; the
//! server ends that backend without a log line. A probe made while the
//! server still starts up is logged by it as `FATAL: the database system
//! is starting up` (one line per probe, every 20 ms), as `pg_isready`'s
//! are; smoke's report leaves those out of its server messages.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Protocol 3.0.
const PROTOCOL: u32 = 3 << 16;
/// PostgreSQL's SQLSTATE for "the database system is starting up" and
/// its kin.
const CANNOT_CONNECT_NOW: &str = "57P03";

/// Whether the server at `addr` accepts connections for `user`.
pub fn accepts_connections(addr: SocketAddr, user: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(&startup_message(user)).is_err() {
        return false;
    }
    // The first message: type, length, then up to 1 KiB of its body (an
    // error's fields come first).
    let mut head = [0u8; 5];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4).min(1024)];
    if s.read_exact(&mut body).is_err() {
        return false;
    }
    judge(head[0], &body)
}

/// Asks the server at `addr` every 20 ms until it accepts connections
/// (true), or until `give_up()` (false): what a client of a starting
/// server waits for.
pub fn wait_until_accepting(
    addr: SocketAddr,
    user: &str,
    mut give_up: impl FnMut() -> bool,
) -> bool {
    while !give_up() {
        if accepts_connections(addr, user) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A StartupMessage for `user` on database `postgres`.
fn startup_message(user: &str) -> Vec<u8> {
    let mut body = PROTOCOL.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Whether a server whose first answer is message `kind` with `body`
/// accepts connections.
fn judge(kind: u8, body: &[u8]) -> bool {
    match kind {
        // AuthenticationRequest (of any method, or Ok under trust).
        b'R' => true,
        b'E' => sqlstate(body).is_some_and(|code| code != CANNOT_CONNECT_NOW),
        _ => false,
    }
}

/// The `C` (SQLSTATE) field of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> Option<&str> {
    let mut fields = body.split(|b| *b == 0);
    // Each field is a type byte followed by its text.
    fields.find_map(|f| match f.split_first() {
        Some((b'C', code)) => std::str::from_utf8(code).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in fields {
            b.push(*t);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn starting_up_is_not_ready_an_auth_request_or_other_error_is() {
        let starting = error(&[(b'S', "FATAL"), (b'C', "57P03"), (b'M', "starting up")]);
        assert!(!judge(b'E', &starting));
        let no_role = error(&[(b'S', "FATAL"), (b'C', "28000"), (b'M', "role")]);
        assert!(judge(b'E', &no_role));
        assert!(judge(b'R', &[0, 0, 0, 10]));
        assert!(!judge(b'N', &[]));
        assert!(!judge(b'E', &error(&[(b'M', "no code")])));
    }

    #[test]
    fn the_startup_message_is_length_prefixed_and_ends_with_an_empty_name() {
        let m = startup_message("postgres");
        assert_eq!(
            u32::from_be_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(&m[4..8], &PROTOCOL.to_be_bytes());
        assert!(m.ends_with(b"postgres\0\0"));
    }
}
